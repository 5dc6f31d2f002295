"""Every record's ``wall_time_s`` is the protocol's real time, also for records a suite writes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers_ckpt import run_tiny_suite
from jepa_eval.protocols.registry import Evaluation, Inputs, Protocol, option, register, registered
from jepa_eval.results.record import Metric, load_records

PAUSE_S = 0.4


@dataclass
class PauseConfig:
    """A protocol that takes ``seconds`` to evaluate."""

    seconds: float = option(PAUSE_S, "Seconds the evaluation takes.")


def pause_evaluate(inputs: Inputs, config: PauseConfig) -> Evaluation:
    time.sleep(config.seconds)
    return Evaluation([Metric("rows", float(inputs.train.features.shape[0]))], {"rows": inputs.train.features.shape[0]})


@pytest.fixture
def pause() -> Iterator[Protocol]:
    """The toy protocol registered for one test, then removed."""
    protocol = register(Protocol(name="pause", version="1", label="pause", config=PauseConfig,
                                 evaluate=pause_evaluate, caption=lambda shown: "pause", summary="sleeps"))
    yield protocol
    del registered()["pause"]


def test_a_suite_record_says_how_long_its_protocol_took(pause: Protocol, tmp_path: Path) -> None:
    started = time.perf_counter()
    outcome = run_tiny_suite(tmp_path, "  - {protocol: pause, dataset: digits}\n"
                             "  - {protocol: pause, dataset: digits, params: {seconds: 0.0}}\n")
    elapsed = time.perf_counter() - started
    assert outcome.failed == []
    slow, quick = sorted(load_records(tmp_path / "out"), key=lambda r: -r.params["seconds"])
    assert PAUSE_S <= slow.wall_time_s <= elapsed
    assert 0.0 < quick.wall_time_s < slow.wall_time_s - PAUSE_S / 2  # the second entry reuses the cached features
