"""Which label-free signal tracks probe accuracy: Spearman rho across a run's checkpoints, from records and the CSV log."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jepa_eval.cli.app import app
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.pipeline.signals import gather
from jepa_eval.protocols.signals import SignalsConfig, evaluate, spearman
from jepa_eval.results.record import DatasetInfo, FeatureInfo, Metric, ModelInfo, ResultRecord, load_records, write_record

EPOCHS = [2, 4, 6, 8, 10]
ACCURACY = [30.0, 35.0, 38.0, 40.0, 41.0]
RANKME = [5.0, 7.0, 9.0, 11.0, 12.0]  # rises with accuracy: rho 1
LIDAR = [10.0, 12.0, 11.0, 14.0, 15.0]  # one adjacent pair swapped: rho 1 - 6 * 2 / (5 * 24) = 0.9
LOSS = [0.40, 0.30, 0.20, 0.15, 0.10]  # falls as accuracy rises: rho -1
OFFICIAL_HEADER = "epoch,itr,loss,mask-A,mask-B,time (ms)\n"


def test_spearman_of_known_rankings() -> None:
    assert spearman(RANKME, ACCURACY)[0] == pytest.approx(1.0)
    assert spearman(LIDAR, ACCURACY)[0] == pytest.approx(0.9)
    assert spearman(LOSS, ACCURACY)[0] == pytest.approx(-1.0)
    assert all(math.isnan(v) for v in spearman([1.0, 2.0], [3.0, 4.0]))  # fewer than 3 points
    assert all(math.isnan(v) for v in spearman([1.0, 1.0, 1.0], [3.0, 4.0, 5.0]))  # a constant signal


def test_the_best_signal_is_the_largest_absolute_rho_and_ties_are_named() -> None:
    points = [{"epoch": e, "checkpoint": f"jepa-ep{e}.pth.tar", "accuracy": a, "rankme": r, "lidar": d, "train_loss": t}
              for e, a, r, d, t in zip(EPOCHS, ACCURACY, RANKME, LIDAR, LOSS)]
    points[0]["alpha_req"], points[1]["alpha_req"] = 4.0, 3.5  # measured at two checkpoints only
    evaluation = evaluate(points, SignalsConfig())
    summary = evaluation.summary
    assert summary["rho_lidar"] == pytest.approx(0.9) and summary["n_lidar"] == 5
    assert math.isnan(summary["rho_alpha_req"]) and summary["n_alpha_req"] == 2
    assert summary["best_signal"] == "train_loss" and summary["best_rho"] == pytest.approx(-1.0)
    assert summary["tied_with"] == ["rankme"] and summary["best_n"] == 5
    rows = {(m.name, m.coords.get("signal"), m.coords.get("epoch")): m.value for m in evaluation.metrics}
    assert rows[("accuracy", None, 6)] == 38.0 and rows[("points", "lidar", None)] == 5.0


def _record(protocol: str, path: str, sha: str | None, metrics: list[Metric], *, mode: str = "avgpool",
            created: str = "2026-01-01T00:00:00+00:00", summary: dict | None = None) -> ResultRecord:
    return ResultRecord(protocol=protocol, protocol_version="3" if protocol == "monitor" else "1",
                        model=ModelInfo(name=Path(path).name, path=path, sha256=sha, family="ijepa",
                                        ckpt_key="target_encoder", arch={}),
                        dataset=DatasetInfo(name="digits", train_split="train", eval_split="test"),
                        features=FeatureInfo(mode=mode), params={}, metrics=metrics, summary=summary or {},
                        created=created)


@pytest.fixture
def run(tmp_path: Path) -> dict:
    """A run folder with 5 ep files, its official CSV log, a monitor record (without train_loss
    rows, as records written before it existed), and linear records of each checkpoint in two
    feature modes (avgpool4 = avgpool + 5)."""
    folder = tmp_path / "run"
    folder.mkdir()
    shas = {}
    for epoch in EPOCHS:
        data = f"checkpoint {epoch}".encode()
        (folder / f"jepa-ep{epoch}.pth.tar").write_bytes(data)
        shas[epoch] = hashlib.sha256(data).hexdigest()
    rows = "".join(f"{e},{i},{loss:.5f},150.0,40.0,-1\n" for e, loss in zip(EPOCHS, LOSS) for i in range(2))
    (folder / "jepa_r0.csv").write_text(OFFICIAL_HEADER + rows)
    metrics = [Metric(name, value, {"epoch": e, "checkpoint": f"jepa-ep{e}.pth.tar"})
               for e, r, d in zip(EPOCHS, RANKME, LIDAR) for name, value in (("rankme", r), ("lidar", d), ("knn_top1", r * 3))]
    records = tmp_path / "records"
    write_record(_record("monitor", str(folder.resolve()), None, metrics, summary={"axis": "epoch"}), records)
    for epoch, accuracy in zip(EPOCHS, ACCURACY):
        for mode, shift in (("avgpool", 0.0), ("avgpool4", 5.0)):
            write_record(_record("linear", str(folder / f"jepa-ep{epoch}.pth.tar"), shas[epoch],
                                 [Metric("top1", accuracy + shift, {"lr": 0.1})], mode=mode), records)
    return {"folder": folder, "records": records, "shas": shas}


def test_gather_joins_accuracy_by_path_and_takes_the_training_loss_from_the_log(run: dict) -> None:
    gathered = gather(load_records(run["records"]), run["folder"], SignalsConfig(mode="avgpool4"))
    assert [p["epoch"] for p in gathered.points] == EPOCHS
    assert [p["accuracy"] for p in gathered.points] == [a + 5.0 for a in ACCURACY]
    assert [p["train_loss"] for p in gathered.points] == pytest.approx(LOSS)
    assert gathered.notes == ["training loss from jepa_r0.csv"] and len(gathered.accuracy_records) == 5


def test_k_shot_records_of_a_checkpoint_are_not_its_accuracy(run: dict) -> None:
    """A few-shot suite's record of the same checkpoint (top-1 at 1 and 10 shots) is left out."""
    few = _record("linear", str(run["folder"] / "jepa-ep6.pth.tar"), run["shas"][6],
                  [Metric("top1", 11.0, {"shots": 1}), Metric("top1", 21.0, {"shots": 10})])
    few.params["shots"] = [1, 10]
    write_record(few, run["records"])
    gathered = gather(load_records(run["records"]), run["folder"], SignalsConfig())
    assert [p["accuracy"] for p in gathered.points] == ACCURACY and len(gathered.accuracy_records) == 5


def test_the_monitors_mode_is_the_default_and_a_retrained_folder_gives_no_training_loss(run: dict) -> None:
    (run["folder"] / "jepa-ep4.pth.tar").write_bytes(b"the same name, trained again")
    gathered = gather(load_records(run["records"]), run["folder"], SignalsConfig())
    assert gathered.mode == "avgpool" and [p["accuracy"] for p in gathered.points] == ACCURACY
    assert not any("train_loss" in p for p in gathered.points)
    assert "jepa-ep4.pth.tar" in gathered.notes[0] and "log of another run" in gathered.notes[0]


def test_the_monitors_own_knn_can_be_the_accuracy_and_the_log_counts_if_no_file_is_newer(run: dict) -> None:
    gathered = gather(load_records(run["records"]), run["folder"], SignalsConfig(accuracy="monitor-knn"))
    assert [p["accuracy"] for p in gathered.points] == [r * 3 for r in RANKME]
    # no record names the files' hashes, and they were written after the monitor record's date
    assert not any("train_loss" in p for p in gathered.points) and "changed" in gathered.notes[0]
    (monitor,) = [r for r in load_records(run["records"]) if r.protocol == "monitor"]
    monitor.created, monitor.run_id = "2999-01-01T00:00:00+00:00", "later-monitor"
    write_record(monitor, run["records"])
    gathered = gather(load_records(run["records"]), run["folder"], SignalsConfig(accuracy="monitor-knn"))
    assert [p["train_loss"] for p in gathered.points] == pytest.approx(LOSS)


def test_a_run_without_a_monitor_record_is_an_error_that_says_what_to_run(run: dict, tmp_path: Path) -> None:
    with pytest.raises(JepaEvalError, match="run jepa-eval monitor"):
        gather(load_records(run["records"]), tmp_path / "elsewhere", SignalsConfig())


def test_the_signals_command_writes_a_record_a_table_and_a_plot(run: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["signals", str(run["folder"]), "--records", str(run["records"]),
                                      "--results-dir", str(out), "--mode", "avgpool4"])
    assert result.exit_code == 0, result.output
    (record,) = load_records(out)
    assert record.protocol == "signals" and record.summary["best_signal"] == "train_loss"
    assert record.summary["rho_lidar"] == pytest.approx(0.9)
    table = next(out.glob("*.md")).read_text()
    assert "| LiDAR | 0.90 |" in table and "| training loss | **-1.00** |" in table
    assert "best: training loss, ρ = -1.00 over 5 checkpoints (|ρ| tied with RankMe)" in table
    assert next(out.glob("*.png")).stat().st_size > 0
    assert "best: train_loss, rho = -1.00 over 5 checkpoints" in " ".join(result.output.split())
