"""The protocol registry: a protocol declared in one module is a command, a suite entry, a transfer
protocol and a report column, without any other file naming it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from helpers_ckpt import make_checkpoint, run_tiny_suite
from jepa_eval.cli.protocols import protocol_command
from jepa_eval.protocols import get_protocol, list_protocols
from jepa_eval.protocols.registry import (Evaluation, Inputs, PlotSpec, Protocol, Selection, TableSpec, option,
                                          register, registered)
from jepa_eval.results.record import Metric, load_records


@dataclass
class CentroidConfig:
    """Nearest class mean of L2-normalised features; ``shrink`` pulls every mean towards the origin."""

    shrink: float = option(0.0, "Share of each class mean removed (0 keeps it).")


def centroid_evaluate(inputs: Inputs, config: CentroidConfig) -> Evaluation:
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    train, test = unit(inputs.train.features), unit(inputs.eval.features)
    classes = np.unique(inputs.train.labels)
    means = np.stack([train[inputs.train.labels == c].mean(0) for c in classes]) * (1 - config.shrink)
    predicted = classes[np.argmax(test @ means.T, axis=1)]
    top1 = 100.0 * float((predicted == inputs.eval.labels).mean())
    return Evaluation([Metric("top1", top1)], {"top1": top1})


CENTROID = Protocol(name="centroid", version="1", label="centroid", config=CentroidConfig,
                    evaluate=centroid_evaluate, caption=lambda shown: "centroid: nearest class mean",
                    summary="nearest class mean", headline=("top1",), tables=(TableSpec("top1", "top1", shared=True),),
                    plots=(PlotSpec("bars"),), transfer=Selection(lambda s: s["top1"], on="eval", by="top1"))


@pytest.fixture
def centroid() -> Iterator[Protocol]:
    """The toy protocol registered for one test, then removed."""
    register(CENTROID)
    yield CENTROID
    del registered()["centroid"]


def test_the_registry_lists_every_protocol_once_in_table_order() -> None:
    assert [p.name for p in list_protocols()] == ["knn", "linear", "attentive", "lowshot", "rank", "monitor",
                                                  "signals"]
    assert [p.name for p in list_protocols("run")] == ["monitor", "signals"]
    assert all(p.version and p.label and p.summary for p in list_protocols())


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register(get_protocol("knn"))


def test_a_new_protocol_is_a_command_with_its_config_options(centroid: Protocol, tmp_path: Path) -> None:
    ckpt = make_checkpoint("ijepa", tmp_path / "tiny.pth.tar", embed_dim=64, depth=4, img_size=16)
    app = typer.Typer()
    app.command()(protocol_command(centroid))
    app.command("unused")(lambda: None)  # two commands: Typer then expects the command's name
    result = CliRunner().invoke(app, ["centroid", "--ckpt", str(ckpt), "--data", "digits", "--shrink", "0.5",
                                      "--results-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    (record,) = load_records(tmp_path / "out")
    assert record.protocol == "centroid" and record.params == {"shrink": 0.5}
    assert record.dataset.n_train == 1437 and record.dataset.n_eval == 360
    assert 0.0 < record.wall_time_s and "centroid on digits (avgpool)" in " ".join(result.stdout.split())


def test_a_new_protocol_runs_in_suites_and_transfer_and_is_reported(centroid: Protocol, tmp_path: Path) -> None:
    from jepa_eval.report.build import write_report

    outcome = run_tiny_suite(tmp_path, "  - {protocol: centroid, dataset: digits}\n"
                             "  - {protocol: transfer, inner: centroid, datasets: [digits], modes: [avgpool, avgpool4]}\n")
    assert outcome.failed == [] and len(outcome.written) == 2
    transfer = next(r for r in load_records(tmp_path / "out") if r.params.get("transfer"))
    assert transfer.summary["selected_on"] == "eval" and transfer.features.candidates == ["avgpool", "avgpool4"]
    written = write_report(tmp_path / "out", tmp_path / "report")
    table = (tmp_path / "report" / "tables" / "top1.md").read_text()
    assert "| model | centroid digits |" in table and "centroid: nearest class mean" in table
    assert tmp_path / "report" / "plots" / "bars_centroid.png" in written
