"""The attentive-vs-linear table and plot of the case study (scripts/case_study_attentive.py)."""

from __future__ import annotations

from pathlib import Path

from jepa_eval.results.record import DatasetInfo, FeatureInfo, ModelInfo, ResultRecord
from scripts import case_study_attentive as script


def record(protocol: str, mode: str, name: str, top1: float, wall: float, probe: float | None = None) -> ResultRecord:
    summary = {"top1": top1, **({} if probe is None else {"probe_seconds": probe})}
    return ResultRecord(protocol=protocol, protocol_version="1",
                        model=ModelInfo(name, "", None, "ijepa", None, {}), dataset=DatasetInfo("cifar10"),
                        features=FeatureInfo(mode), params={}, metrics=[], summary=summary, wall_time_s=wall)


def three_probes(name: str, linear: float, linear4: float, attentive: float) -> list[ResultRecord]:
    return [record("linear", "avgpool", name, linear, 30.0), record("linear", "avgpool4", name, linear4, 40.0),
            record("attentive", "tokens", name, attentive, wall=500.0, probe=420.0)]


def test_rows_give_each_probes_top1_and_seconds_and_the_gain_over_the_better_linear(tmp_path: Path) -> None:
    models = {"random-init": ("random:x", None), "ep2": ("a", 2), "final": ("b", 18), "missing": ("c", 4)}
    records = (three_probes("random-init", 37.0, 38.5, 36.0) + three_probes("ep2", 40.0, 42.0, 45.5)
               + three_probes("final", 46.0, 48.0, 51.25) + three_probes("missing", 1.0, 1.0, 1.0)[:2])
    rows = script.comparison_rows(records, models)
    assert [r["model"] for r in rows] == ["random-init", "ep2", "final"]  # a model without all three is left out
    assert rows[2] == {"model": "final", "epoch": 18, "linear avgpool top-1": 46.0, "linear avgpool s": 30.0,
                       "linear avgpool4 top-1": 48.0, "linear avgpool4 s": 40.0, "attentive top-1": 51.25,
                       "attentive s": 420.0, "token extraction s": 80.0, "attentive - best linear": 3.25}
    assert rows[0]["epoch"] == "-" and rows[0]["attentive - best linear"] == -2.5
    written = script.plot(rows, tmp_path, "feature extraction apart")
    assert {p.name for p in written} == {"attentive_vs_linear.png", "attentive_vs_linear.pdf",
                                         "attentive_vs_linear.csv"}


def test_linear_records_can_come_from_a_suite_folder_without_its_transfer_or_k_shot_entries(tmp_path: Path) -> None:
    from jepa_eval.results.record import write_record

    suite, out = tmp_path / "suite", tmp_path / "attentive"
    transfer = record("linear", "avgpool", "final", 60.0, 5.0)
    transfer.dataset = DatasetInfo("imagefolder:imagenette")
    k_shot = record("linear", "avgpool", "final", 20.0, 5.0)
    k_shot.params = {"shots": [1, 10]}
    for kept in (record("linear", "avgpool", "final", 46.0, 3.0), record("linear", "avgpool4", "final", 48.0, 70.0),
                 record("knn", "avgpool", "final", 35.0, 70.0), transfer, k_shot):
        write_record(kept, suite)
    write_record(record("attentive", "tokens", "final", 51.0, 500.0, probe=420.0), out)
    found = sorted((r.protocol, r.dataset.name, r.features.mode, r.summary["top1"])
                   for r in script.probe_records(out, suite))
    assert found == [("attentive", "cifar10", "tokens", 51.0), ("linear", "cifar10", "avgpool", 46.0),
                     ("linear", "cifar10", "avgpool4", 48.0)]
    assert [r.protocol for r in script.probe_records(out, None)] == ["attentive"]
