"""The checkpoint watcher: each complete state of a training folder's files exactly once, half-written ones never."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.pipeline.watch import CheckpointWatcher


class Clock:
    """A monotonic clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def state_bytes(epoch: int, seed: int = 0) -> bytes:
    """What the official trainer's plain ``torch.save`` of one epoch's state writes."""
    buffer = io.BytesIO()
    weights = torch.randn(2000, generator=torch.Generator().manual_seed(seed + 100 * epoch))
    torch.save({"target_encoder": {"module.w": weights}, "epoch": epoch, "loss": 0.1 * epoch}, buffer)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def watched(tmp_path: Path) -> tuple[Path, CheckpointWatcher, Clock]:
    run = tmp_path / "run"
    run.mkdir()
    clock = Clock()
    messages: list[str] = []
    # settle_s far above any file's real age: only the test's clock decides when a file settled
    watcher = CheckpointWatcher(run, tmp_path / "snapshots", settle_s=3600.0, timeout_s=3 * 3600.0, clock=clock,
                                log=messages.append)
    watcher.messages = messages  # type: ignore[attr-defined]
    return run, watcher, clock


def polled(watcher: CheckpointWatcher, clock: Clock, seconds: float = 0.0) -> list[tuple[int, str, str]]:
    """(epoch, file, sha256) of the states one poll hands out after ``seconds``; snapshots released."""
    clock.now += seconds
    states = watcher.poll()
    for state in states:
        assert state.snapshot.read_bytes()[:4] == b"PK\x03\x04"  # a zip, i.e. a complete torch file
        watcher.release(state)
    return [(s.epoch, s.name, s.sha256) for s in states]


def settled(watcher: CheckpointWatcher, clock: Clock) -> list[tuple[int, str, str]]:
    """A poll that sees the folder's files as they are now, then one a settling time later."""
    return polled(watcher, clock) + polled(watcher, clock, seconds=watcher.settle_s)


def test_a_half_written_latest_file_is_waited_for_and_its_complete_state_measured_once(watched) -> None:
    run, watcher, clock = watched
    latest = run / "jepa-latest.pth.tar"
    first, second = state_bytes(1), state_bytes(2)
    latest.write_bytes(first)
    assert settled(watcher, clock) == [(1, "jepa-latest.pth.tar", sha(first))]
    assert settled(watcher, clock) == []  # unchanged: not handed out again
    latest.write_bytes(second[: len(second) // 2])  # the official torch.save, caught half-way
    assert settled(watcher, clock) == [] and settled(watcher, clock) == []
    assert "waiting for jepa-latest.pth.tar: torch.load fails" in watcher.messages[0]
    latest.write_bytes(second)
    assert settled(watcher, clock) == [(2, "jepa-latest.pth.tar", sha(second))]
    assert settled(watcher, clock) == []


def test_a_file_is_read_once_it_stayed_unchanged_for_the_settling_time(watched) -> None:
    run, watcher, clock = watched
    latest = run / "jepa-latest.pth.tar"
    data = state_bytes(1)
    latest.write_bytes(data[:1000])
    assert polled(watcher, clock) == []  # just seen
    latest.write_bytes(data)
    assert polled(watcher, clock, seconds=3000.0) == []  # changed since: the settling time starts again
    assert polled(watcher, clock, seconds=3000.0) == []
    assert polled(watcher, clock, seconds=600.0) == [(1, "jepa-latest.pth.tar", sha(data))]
    assert watcher.messages == []  # a file being written is no trouble to report


def test_a_file_that_stays_broken_is_given_up_after_the_timeout_and_retried_when_it_changes(watched) -> None:
    run, watcher, clock = watched
    broken = run / "jepa-ep4.pth.tar"
    data = state_bytes(4)
    broken.write_bytes(data[:100])
    assert settled(watcher, clock) == []
    assert polled(watcher, clock, seconds=watcher.timeout_s) == []
    assert any("gave up on this state of jepa-ep4.pth.tar" in m for m in watcher.messages)
    assert settled(watcher, clock) == []  # given up: not even read
    broken.write_bytes(data)
    assert settled(watcher, clock) == [(4, "jepa-ep4.pth.tar", sha(data))]


def test_the_ep_file_of_an_epoch_measured_from_latest_is_its_alias_and_the_twin_of_an_ep_file_is_skipped(watched) -> None:
    run, watcher, clock = watched
    state = {"target_encoder": {"module.w": torch.ones(3)}, "epoch": 49, "loss": 0.2}
    torch.save(state, run / "jepa-latest.pth.tar")  # the official trainer: latest first...
    assert [e for e, _, _ in settled(watcher, clock)] == [49]
    torch.save(state, run / "jepa-ep50.pth.tar")  # ...then ep50, holding epoch 49, in other bytes
    assert polled(watcher, clock) == []
    clock.now += watcher.settle_s
    (alias,) = watcher.poll()
    assert alias.alias and alias.epoch == 49 and alias.name == "jepa-ep50.pth.tar" and alias.snapshot == alias.source
    state["epoch"] = 99
    torch.save(state, run / "jepa-ep100.pth.tar")  # an ep file and its latest twin
    torch.save(state, run / "jepa-latest.pth.tar")
    assert [(e, n) for e, n, _ in settled(watcher, clock)] == [(99, "jepa-ep100.pth.tar")]
    assert settled(watcher, clock) == []


def test_a_latest_file_rewound_to_a_measured_epoch_is_skipped_with_a_note(watched) -> None:
    run, watcher, clock = watched
    latest = run / "jepa-latest.pth.tar"
    for data in (state_bytes(1), state_bytes(2)):
        latest.write_bytes(data)
        settled(watcher, clock)
    latest.write_bytes(state_bytes(1, seed=7))  # a run restarted from scratch in the same folder
    assert settled(watcher, clock) == []
    assert "its epoch 1 was already measured" in watcher.messages[-1]


def test_a_restarted_watcher_skips_what_an_earlier_monitor_measured(watched) -> None:
    run, watcher, clock = watched
    data = state_bytes(3)
    (run / "jepa-ep3.pth.tar").write_bytes(data)
    watcher.remember(3, "jepa-ep3.pth.tar", sha(data))
    assert settled(watcher, clock) == []


def test_a_one_off_scan_reports_an_unreadable_file_instead_of_waiting(tmp_path: Path) -> None:
    (tmp_path / "jepa-ep2.pth.tar").write_bytes(b"not a checkpoint")
    watcher = CheckpointWatcher(tmp_path, tmp_path / "snapshots", patient=False)
    with pytest.raises(JepaEvalError, match="cannot read checkpoint"):
        watcher.poll()


def test_a_patient_watcher_waits_for_the_training_folder_to_appear(tmp_path: Path) -> None:
    clock, messages = Clock(), []
    watcher = CheckpointWatcher(tmp_path / "run", tmp_path / "snapshots", settle_s=3600.0, clock=clock,
                                log=messages.append)
    assert settled(watcher, clock) == [] and messages == [f"waiting for the training folder {tmp_path / 'run'} to appear"]
    (tmp_path / "run").mkdir()
    data = state_bytes(1)
    (tmp_path / "run" / "jepa-latest.pth.tar").write_bytes(data)
    assert settled(watcher, clock) == [(1, "jepa-latest.pth.tar", sha(data))]
