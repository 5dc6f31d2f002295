"""``monitor --follow`` in one process: every checkpoint state measured once as it lands, crash-safe
records, the collapse alert, its command and the exit status, and continuing an earlier record."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import jepa_eval.pipeline.monitor as monitor_module
from helpers_ckpt import make_checkpoint
from jepa_eval.cli.app import app
from jepa_eval.cli.monitor import COLLAPSE_EXIT
from jepa_eval.features.splits import ExtractOptions
from jepa_eval.pipeline.monitor import RunMonitor, follow_run
from jepa_eval.pipeline.watch import CheckpointWatcher
from jepa_eval.protocols.monitor import MonitorConfig
from jepa_eval.results.record import load_records, read_record

CONFIG = MonitorConfig(samples=64, knn_train=200, knn_eval=100)
OFFICIAL_HEADER = "epoch,itr,loss,mask-A,mask-B,time (ms)\n"


def official_bytes(tmp_path: Path, epoch: int, *, collapsed: bool = False) -> bytes:
    """An official I-JEPA training checkpoint of ``epoch`` (tiny ViT, weights seeded by the epoch) as
    its plain torch.save writes it; ``collapsed``: a target encoder that ignores its input."""
    state = torch.load(make_checkpoint("ijepa", tmp_path / f"source-{epoch}.pth.tar", embed_dim=64, seed=epoch), weights_only=True)
    state["epoch"], state["loss"] = epoch, 1.0 / epoch
    if collapsed:
        for key, value in state["target_encoder"].items():
            if "pos_embed" not in key and ("weight" in key or "bias" in key) and "norm" not in key:
                state["target_encoder"][key] = torch.zeros_like(value)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


class Trainer:
    """The official trainer, one action per poll of the monitor: each action writes files into ``run``."""

    def __init__(self, run: Path, actions: list) -> None:
        self.run, self.actions, self.clock = run, list(actions), 0.0

    def now(self) -> float:
        return self.clock

    def sleep(self, seconds: float) -> None:
        self.clock += seconds
        if self.actions:
            self.actions.pop(0)()


def test_follow_measures_every_epoch_once_while_latest_is_rewritten_in_place(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    latest, results = run / "jepa-latest.pth.tar", tmp_path / "results"
    states = {e: official_bytes(tmp_path, e) for e in (1, 2, 3)}
    measured: list[str] = []
    real_measure = monitor_module.measure_checkpoint

    def counting(path: Path, *args, **kwargs):
        measured.append(Path(path).name)
        return real_measure(path, *args, **kwargs)

    monkeypatch.setattr(monitor_module, "measure_checkpoint", counting)

    def log_epochs(*epochs: int) -> None:
        rows = "".join(f"{e},{i},{0.5 / e + 0.1 * i:.5f},150.0,40.0,-1\n" for e in epochs for i in range(2))
        (run / "jepa_r0.csv").write_text(OFFICIAL_HEADER + rows)

    wait = lambda: None  # noqa: E731 - a poll at which the trainer writes nothing
    trainer = Trainer(run, [
        lambda: (log_epochs(1), latest.write_bytes(states[1])), wait,
        lambda: latest.write_bytes(states[2][: len(states[2]) // 3]), wait,  # plain torch.save caught a third of the way
        lambda: latest.write_bytes(states[2][: 2 * len(states[2]) // 3]),
        lambda: (log_epochs(1, 2), latest.write_bytes(states[2])), wait,
        lambda: (run / "jepa-ep2.pth.tar").write_bytes(states[2]), wait,  # the ep file of epoch 2, after latest
        lambda: (log_epochs(1, 2, 3), latest.write_bytes(states[3])), wait,
    ])
    monitor = RunMonitor(run, "digits", CONFIG, ExtractOptions(device="cpu", progress=False), results_dir=results)
    on_disk: list[list[int]] = []
    watcher = CheckpointWatcher(run, tmp_path / "snapshots", settle_s=3600.0, timeout_s=10 * 3600.0, clock=trainer.now)
    stopped = follow_run(monitor, watcher, follow=True, poll_s=3600.0, until_epoch=3, sleep=trainer.sleep,
                         on_added=lambda added: on_disk.append(sorted({m.coords["epoch"] for m in read_record(monitor.path).metrics})))
    assert stopped == "until-epoch"
    assert len(measured) == 3 and all(".tmp-" in name for name in measured)  # snapshots of latest, epochs 1, 2, 3
    # the ep2 file renames epoch 2's point; it is not measured again
    assert on_disk == [[1], [1, 2], [1, 2], [1, 2, 3]]  # the record on disk after each checkpoint (ep2: renamed)
    (record,) = load_records(results)
    rows = {(m.coords["epoch"], m.name): m for m in record.metrics}
    assert rows[(2, "rankme")].coords["checkpoint"] == "jepa-ep2.pth.tar"
    assert rows[(2, "rankme")].coords["measured_as"] == "jepa-latest.pth.tar"
    assert rows[(3, "rankme")].coords["checkpoint"] == "jepa-latest.pth.tar"
    assert rows[(3, "train_loss")].value == pytest.approx(0.5 / 3 + 0.05, abs=1e-5)  # the mean of epoch 3's two logged rows (5 decimals)
    assert record.summary["train_loss_from"] == ["jepa_r0.csv"] and record.summary["collapse_epoch"] is None
    assert not list((tmp_path / "snapshots").iterdir())  # every snapshot of the latest file deleted


def _cli(args: list[str], results: Path, cache: Path) -> object:
    return CliRunner().invoke(app, ["monitor", *args, "--data", "digits", "--samples", "64",
                                    "--results-dir", str(results), "--cache-dir", str(cache), "--quiet", "--device", "cpu"])


def test_collapse_is_flagged_runs_the_on_collapse_command_and_sets_the_exit_status(tmp_path: Path) -> None:
    run, results = tmp_path / "run", tmp_path / "results"
    run.mkdir()
    (run / "jepa-ep1.pth.tar").write_bytes(official_bytes(tmp_path, 1))
    (run / "jepa-ep2.pth.tar").write_bytes(official_bytes(tmp_path, 2, collapsed=True))
    env_file = tmp_path / "alert.txt"
    command = f'echo "$JEPA_EVAL_RUN_DIR|$JEPA_EVAL_EPOCH|$JEPA_EVAL_REASON|$JEPA_EVAL_RESULT" >> {env_file}'
    result = _cli([str(run), "--follow", "--poll", "0.01", "--settle", "0", "--until-epoch", "2",
                   "--on-collapse", command], results, tmp_path / "cache")
    assert result.exit_code == COLLAPSE_EXIT, result.output
    (record,) = load_records(results)
    assert record.summary["collapse_epoch"] == 2 and record.summary["collapse_reason"].startswith("RankMe 1.00 fell below 0.2 of its peak")
    run_dir, epoch, reason, path = env_file.read_text().strip().split("|")
    assert (run_dir, epoch, reason) == (str(run), "2", record.summary["collapse_reason"])
    assert json.loads(Path(path).read_text())["run_id"] == record.run_id
    assert "COLLAPSE flagged at epoch 2" in result.output and "(until-epoch)" in result.output
    assert "epoch 1 (jepa-ep1.pth.tar):" in result.output  # the table as plain lines: stderr is no terminal


def test_a_second_monitor_continues_the_first_ones_record_and_measures_only_new_checkpoints(tmp_path: Path) -> None:
    run, results, cache = tmp_path / "run", tmp_path / "results", tmp_path / "cache"
    run.mkdir()
    (run / "jepa-ep1.pth.tar").write_bytes(official_bytes(tmp_path, 1))
    first = _cli([str(run)], results, cache)
    assert first.exit_code == 0, first.output
    (run / "jepa-ep2.pth.tar").write_bytes(official_bytes(tmp_path, 2))
    second = _cli([str(run)], results, cache)
    assert second.exit_code == 0, second.output
    assert "continuing the" in second.output and "epoch 1 (" not in second.output
    (record,) = load_records(results)  # one result file for the run
    assert sorted({m.coords["epoch"] for m in record.metrics}) == [1, 2]
    again = _cli([str(run), "--follow", "--poll", "0.01", "--until-epoch", "2"], results, cache)
    assert again.exit_code == 0 and "epoch 2 (" not in again.output  # nothing new to measure
    fresh = _cli([str(run), "--fresh"], results, cache)
    assert fresh.exit_code == 0 and len(load_records(results)) == 2
