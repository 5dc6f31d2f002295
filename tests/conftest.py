"""Shared pytest set-up: a private feature cache and the optional real-photo folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Test models are tiny: one intra-op thread is as fast, and two threads contending with
    another process on a 2-core machine were measured 15x slower (3.6 s vs 53 s for 22 steps)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own feature cache so that no test reads another's entries."""
    monkeypatch.setenv("JEPA_EVAL_CACHE", str(tmp_path_factory.mktemp("feature-cache")))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real photographs); tests that need it skip where it is absent."""
    if not (SHARED_DATA / "cifar10-jpg.tar.gz").exists():
        pytest.skip(f"real photographs not available: {SHARED_DATA} is absent")
    return SHARED_DATA
