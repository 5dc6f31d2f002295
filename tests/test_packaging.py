"""The installed product: the wheel holds the code, the suite files and the trainer configs, and
its commands run from any folder, with no repository in reach."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from helpers_ckpt import make_checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_the_package_list_names_every_package_of_the_tree() -> None:
    """pyproject.toml lists packages by hand (two are folders outside the code): it must hold
    exactly the folders with an __init__.py under jepa_eval/ and ijepa/, plus those two."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    in_tree = {".".join(p.parent.relative_to(REPO).parts) for top in ("jepa_eval", "ijepa")
               for p in (REPO / top).rglob("__init__.py")}
    assert listed == in_tree | {"jepa_eval.suites", "ijepa.configs"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel from a copy of its sources (what git tracks or would track under
    the packaged folders, so no stale build output) and installed, without dependencies, into a
    fresh folder."""
    work = tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "pyproject.toml",
                             "README.md", "jepa_eval", "ijepa", "protocols", "configs"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout.split()
    for name in listed:
        if (REPO / name).is_file():
            (work / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, work / "src" / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(work / "dist"), str(work / "src")], check=True, capture_output=True)
    wheel = next((work / "dist").glob("jepa_eval-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(work / "site"), str(wheel)], check=True, capture_output=True)
    return work / "site"


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` in ``cwd`` importing the product from ``site`` only (not the repository)."""
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_installed_package_is_the_wheel_not_the_repository(installed: Path, tmp_path: Path) -> None:
    found = run_installed(installed, tmp_path, "-c", "import jepa_eval, ijepa; print(jepa_eval.__file__, ijepa.__file__)")
    assert found.returncode == 0, found.stderr
    assert all(Path(p).is_relative_to(installed) for p in found.stdout.split())


def test_the_shipped_suites_are_listed_from_any_folder(installed: Path, tmp_path: Path) -> None:
    listed = run_installed(installed, tmp_path, "-m", "jepa_eval", "suite", "--list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split(":")[0] for line in listed.stdout.splitlines()] == ["case-study", "case-study-fewshot", "cpu-quick",
                                                                        "fewshot-transfer", "ijepa-lowlevel", "ijepa-paper"]


def test_ijepa_train_dry_run_reads_a_shipped_config_by_name(installed: Path, tmp_path: Path) -> None:
    dry = run_installed(installed, tmp_path, "-m", "ijepa", "train", "--config", "in1k_vith14_ep300.yaml", "--dry-run",
                        "--set", "logging.folder=elsewhere")
    assert dry.returncode == 0, dry.stderr
    assert "model_name: vit_huge" in dry.stdout and "folder: elsewhere" in dry.stdout


def test_the_cpu_quick_suite_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    """Every protocol of the shipped suite runs on a tiny I-JEPA file and leaves one record each."""
    ckpt = make_checkpoint("ijepa", tmp_path / "tiny.pth.tar", embed_dim=64, depth=4, img_size=16)
    done = run_installed(installed, tmp_path, "-m", "jepa_eval", "suite", "cpu-quick", "--ckpt", f"tiny={ckpt}",
                         "--results-dir", "out", "--cache-dir", "cache", "--quiet", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert sorted((r["protocol"], r["features"]["mode"]) for r in records) == [
        ("knn", "avgpool"), ("linear", "avgpool"), ("linear", "avgpool4"), ("lowshot", "avgpool"), ("rank", "avgpool")]
