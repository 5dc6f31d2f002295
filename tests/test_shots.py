"""k-shot draws for the fit-and-score protocols (k-NN, linear): one evaluation per draw of the
training split, rows marked with ``shots`` and ``seed``, only the drawn images extracted, and
paper tables with a column per setting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.features.splits import ExtractOptions, split_features, split_labels
from jepa_eval.pipeline.evaluate import run_protocol
from jepa_eval.pipeline.shots import Draw, evaluate_draws, shot_draws
from jepa_eval.protocols import get_protocol
from jepa_eval.protocols.knn import KNNConfig, knn_evaluate
from jepa_eval.protocols.linear import LinearConfig, linear_probe
from jepa_eval.protocols.registry import Evaluation, Inputs, Labelled, Needs, Protocol
from jepa_eval.protocols.sampling import parse_shots, sample_shots
from jepa_eval.report.tables import paper_table, to_markdown
from jepa_eval.report.tidy import tidy_frame
from jepa_eval.results.record import Metric

LABELS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])


def test_shots_are_spelled_as_numbers_and_all() -> None:
    assert parse_shots("1, 10,all") == (1, 10, "all") and parse_shots("") == ()
    with pytest.raises(JepaEvalError, match="neither a positive number nor 'all'"):
        parse_shots("1,many")


def test_each_k_gets_one_seeded_draw_per_seed_and_all_is_the_whole_split_once() -> None:
    draws = shot_draws(LABELS, Needs(shots=(2, "all"), shot_seeds=3))
    assert [d.coords for d in draws] == [{"shots": 2, "seed": s} for s in range(3)] + [{}]
    assert draws[3].rows is None
    for seed, draw in enumerate(draws[:3]):
        assert np.array_equal(draw.rows, sample_shots(LABELS, 2, seed))
        assert np.bincount(LABELS[draw.rows]).tolist() == [2, 2, 2]
    assert not np.array_equal(draws[0].rows, draws[1].rows)  # 3 choose 2 per class: seeds differ here


@pytest.mark.parametrize("shots, seeds, problem", [((0,), 1, "positive number"), ((1, 1), 1, "repeated"),
                                                   ((1,), 0, "at least one seed"), ((4,), 1, "fewer than 4")])
def test_bad_shot_settings_are_refused(shots: tuple, seeds: int, problem: str) -> None:
    with pytest.raises(JepaEvalError, match=problem):
        shot_draws(LABELS, Needs(shots=shots, shot_seeds=seeds))


def _counting_protocol() -> Protocol:
    """Reports the training rows it saw and the sum of their (one-dimensional) features."""
    def evaluate(inputs: Inputs, config: object) -> Evaluation:
        n, total = len(inputs.train.labels), float(inputs.train.features.sum())
        return Evaluation([Metric("rows", n), Metric("feature_sum", total)], {"rows": n, "feature_sum": total},
                          params={"seen": True})

    return Protocol(name="count", version="1", summary="", config=dict, evaluate=evaluate, label="count",
                    caption=lambda shown: "")


def test_draws_are_evaluated_apart_and_merged_with_their_coordinates() -> None:
    inputs = Inputs(train=Labelled(np.arange(9, dtype=np.float32)[:, None], LABELS))
    draws = [Draw(np.array([0, 3, 6]), {"shots": 1, "seed": 0}), Draw(np.array([1, 4, 8]), {"shots": 1, "seed": 1}),
             Draw(None)]
    result = evaluate_draws(_counting_protocol(), {}, inputs, draws)
    assert [(m.name, m.value, m.coords) for m in result.metrics] == [
        ("rows", 3, {"shots": 1, "seed": 0}), ("feature_sum", 9.0, {"shots": 1, "seed": 0}),  # 0 + 3 + 6
        ("rows", 3, {"shots": 1, "seed": 1}), ("feature_sum", 13.0, {"shots": 1, "seed": 1}),  # 1 + 4 + 8
        ("rows", 9, {}), ("feature_sum", 36.0, {})]
    assert result.summary == {"rows": 9, "feature_sum": 36.0, "rows[shots=1]": 3.0, "feature_sum[shots=1]": 11.0}
    assert result.params == {"seen": True}


def test_knn_caps_k_at_the_training_set_only_when_asked() -> None:
    train, labels = np.eye(3, dtype=np.float32), np.array([0, 1, 2])
    test = np.array([[1, 0.1, 0], [0, 0, 1]], dtype=np.float32)
    rows = knn_evaluate(train, labels, test, np.array([0, 2]), KNNConfig(ks=(1, 5), cap_k=True))
    assert [(m.name, m.value, m.coords) for m in rows] == [
        ("top1", 100.0, {"k": 1}), ("top5", 100.0, {"k": 1}),
        ("top1", 100.0, {"k": 5, "neighbours": 3}), ("top5", 100.0, {"k": 5, "neighbours": 3})]
    with pytest.raises(JepaEvalError, match="more neighbours than there are training samples"):
        knn_evaluate(train, labels, test, np.array([0, 2]), KNNConfig(ks=(1, 5)))


def test_linear_select_on_none_trains_one_fixed_head_on_every_training_row() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)).astype(np.float32), np.repeat([0, 1, 2], 10)
    one = dict(learning_rates=(0.1,), weight_decays=(0.0,), batchnorm=(False,), epochs=3)
    fixed = linear_probe(x, y, x, y, LinearConfig(**one, select_on="none", solver="sgd"), device="cpu", progress=False)
    on_eval = linear_probe(x, y, x, y, LinearConfig(**one, select_on="eval", solver="sgd"), device="cpu", progress=False)
    assert fixed.metrics[0].value == on_eval.metrics[0].value and fixed.sizes["fit"] == 30
    assert [m.name for m in fixed.metrics] == ["top1", "top5", "train_loss"] and fixed.selected_on == "none"
    with pytest.raises(JepaEvalError, match="select_on 'none' with solver 'sgd' and a grid of 16 heads"):
        linear_probe(x, y, x, y, LinearConfig(learning_rates=(0.1, 1.0), select_on="none", solver="sgd"),
                     progress=False)  # 2 lr x 4 wd x 2 head kinds
    with pytest.raises(JepaEvalError, match="select_on 'none' with solver 'auto'"):
        linear_probe(x, y, x, y, LinearConfig(**one, select_on="none"), progress=False)


@pytest.fixture()
def options(tmp_path: Path) -> ExtractOptions:
    return ExtractOptions(device="cpu", cache_dir=str(tmp_path / "cache"), progress=False)


def test_knn_on_k_shot_draws_equals_knn_on_the_drawn_rows(options: ExtractOptions) -> None:
    spec = ModelSpec("pixels:8")
    backbone = spec.load()
    config = KNNConfig(ks=(1, 20), shots=(1, 5), shot_seeds=2, cap_k=True)
    logged: list[str] = []
    record = run_protocol(get_protocol("knn"), config, spec, backbone, "digits", "pixels", options, log=logged.append)
    train = split_features(backbone, "digits", "train", "pixels", options).features
    test = split_features(backbone, "digits", "test", "pixels", options).features
    for shots in (1, 5):
        for seed in (0, 1):
            rows = sample_shots(train.labels, shots, seed)
            expected = knn_evaluate(train.features[rows], train.labels[rows], test.features, test.labels,
                                    KNNConfig(ks=(1, 20), cap_k=True))
            got = [m for m in record.metrics if m.coords.get("shots") == shots and m.coords["seed"] == seed]
            assert [(m.name, m.value) for m in got] == [(m.name, m.value) for m in expected]
    capped = next(m for m in record.metrics if m.coords.get("shots") == 1 and m.coords["k"] == 20)
    assert capped.coords["neighbours"] == 10  # 1 image of each of the 10 digits
    assert record.dataset.n_train == 1437 and record.params["shots"] == (1, 5)
    best = [max(m.value for m in record.metrics if m.name == "top1" and m.coords.get("shots") == 5
                and m.coords["seed"] == seed) for seed in (0, 1)]
    assert record.summary["best_top1[shots=5]"] == pytest.approx(np.mean(best))
    drawn = np.unique(np.concatenate([sample_shots(split_labels("digits", "train", options), s, seed)
                                      for s in (1, 5) for seed in (0, 1)]))
    assert f"{drawn.size} of 1437 rows for the shots 1, 5" in logged[0]  # only the drawn images


def test_paper_tables_show_one_column_per_shot_setting(options: ExtractOptions) -> None:
    spec = ModelSpec("pixels:8", name="pixels")
    config = KNNConfig(ks=(20,), shots=(1, "all"), shot_seeds=3, cap_k=True)
    record = run_protocol(get_protocol("knn"), config, spec, spec.load(), "digits", "pixels", options)
    table = paper_table(tidy_frame([record]))
    one_shot = [m.value for m in record.metrics if m.name == "top1" and m.coords.get("shots") == 1]
    cell = table.cells[("pixels", ("knn", "digits", "1-shot"))]
    assert cell.n == 3 and cell.mean == pytest.approx(np.mean(one_shot))
    assert cell.std == pytest.approx(np.std(one_shot, ddof=1))
    whole = next(m.value for m in record.metrics if m.name == "top1" and "shots" not in m.coords)
    assert table.cells[("pixels", ("knn", "digits", ""))].mean == whole
    assert "| model | k-NN digits 1-shot | k-NN digits |" in to_markdown(table)  # 1, 10, all: as LeJEPA


def test_the_knn_command_takes_shots_and_prints_each_settings_summary(tmp_path: Path) -> None:
    from helpers_faults import run_main

    outcome = run_main("jepa-eval", ["knn", "--ckpt", "pixels:8", "--data", "digits", "--shots", "1,all",
                                     "--shot-seeds", "2", "--cap-k", "--k", "20", "--results-dir", str(tmp_path / "r"),
                                     "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert outcome.code == 0, outcome.stderr
    assert "best_top1[shots=1]: " in outcome.stdout and "\nbest_top1: " in outcome.stdout
    (path,) = (tmp_path / "r").glob("*.json")
    record = json.loads(path.read_text())
    assert record["params"]["shots"] == [1, "all"] and record["params"]["cap_k"] is True
    assert {(m.get("shots"), m.get("seed"), m.get("neighbours")) for m in record["metrics"]} == {
        (1, 0, 10), (1, 1, 10), (None, None, None)}


def test_the_knn_curve_draws_one_line_per_shot_setting(options: ExtractOptions, tmp_path: Path) -> None:
    from jepa_eval.report.plots import plot_curve

    spec = ModelSpec("pixels:8", name="pixels")
    config = KNNConfig(ks=(10, 20), shots=(1, "all"), shot_seeds=2, cap_k=True)
    record = run_protocol(get_protocol("knn"), config, spec, spec.load(), "digits", "pixels", options)
    plot_curve(tidy_frame([record]), tmp_path / "curve", protocol="knn", x="k")
    lines = (tmp_path / "curve.csv").read_text().splitlines()
    by_label = {(row.split(",")[1], row.split(",")[2]): int(row.split(",")[-1]) for row in lines[1:]}
    assert by_label == {("pixels", "10"): 1, ("pixels", "20"): 1, ("pixels (1-shot)", "10"): 2,
                        ("pixels (1-shot)", "20"): 2}  # seeds of a setting, never mixed with another
