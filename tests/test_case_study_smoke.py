"""The CIFAR-10 case study's configs, suite file and summary helpers (scripts/case_study.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from ijepa.config import encoder_dims, load_config
from jepa_eval.results import ResultRecord
from jepa_eval.suite import config_for, load_suite

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("case_study", REPO / "scripts" / "case_study.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pixel_ablation_differs_from_the_main_config_only_in_target_and_folder() -> None:
    main = load_config(REPO / "configs" / "cifar10_tiny.yaml").to_dict()
    pixels = load_config(REPO / "configs" / "cifar10_tiny_pixels.yaml").to_dict()
    assert (main["run"]["target"], pixels["run"]["target"]) == ("latent", "pixels")
    assert main["logging"]["folder"] != pixels["logging"]["folder"]
    for section in main:
        differing = {k for k in main[section] if main[section][k] != pixels[section][k]}
        assert differing <= {"target", "folder"}, (section, differing)


def test_the_main_config_is_the_tiny_shape_with_six_to_eight_checkpoints_and_live_rankme() -> None:
    cfg = load_config(REPO / "configs" / "cifar10_tiny.yaml")
    assert encoder_dims(cfg)[:3] == (128, 4, 4) and cfg.mask.patch_size == 4 and cfg.data.crop_size == 32
    assert cfg.data.batch_size == 128 and cfg.mask.num_pred_masks == 4
    assert 6 <= cfg.optimization.epochs // cfg.run.checkpoint_freq <= 8
    assert 0 < cfg.run.monitor_every < cfg.optimization.epochs * (cfg.run.max_iters_per_epoch or 391)


def test_the_case_study_suite_runs_knn_linear_lowshot_and_rank_on_cifar10() -> None:
    suite = load_suite(REPO / "protocols" / "case-study.yaml")
    assert [e.protocol for e in suite.entries] == ["knn", "linear", "lowshot", "rank"]
    assert {e.dataset for e in suite.entries} == {"cifar10"}
    linear, lowshot = config_for(suite.entries[1]), config_for(suite.entries[2])
    assert suite.entries[1].modes == ("avgpool", "avgpool4")
    assert lowshot.fractions == (0.01, 0.1) and lowshot.seeds == 5 and linear.select_on == "val"


def _knn_record(name: str, top1_at: dict[int, float]) -> ResultRecord:
    metrics = [{"name": n, "value": v + (10 if n == "top5" else 0), "k": k}
               for k, v in top1_at.items() for n in ("top1", "top5")]
    return ResultRecord(protocol="knn", protocol_version="1", model={"name": name}, dataset={},
                        features={"mode": "avgpool"}, params={}, metrics=metrics,
                        summary={"best_top1": max(top1_at.values())})


def test_knn_rows_give_top1_and_top5_at_k20_best_model_first(script: ModuleType) -> None:
    rows = script.knn_rows([_knn_record("pixels", {10: 30.0, 20: 31.5}),
                            _knn_record("ijepa", {10: 44.0, 20: 45.25})])
    assert [r["model"] for r in rows] == ["ijepa", "pixels"]
    assert rows[0]["k-NN top-1 (k=20)"] == "45.25" and rows[0]["k-NN top-5 (k=20)"] == "55.25"


def test_tables_are_written_as_csv_and_markdown_with_the_same_rows(script: ModuleType, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(script, "OUT", tmp_path)
    script.table([{"model": "a", "top1": "1.00"}, {"model": "b", "top1": "2.00"}], "t")
    assert (tmp_path / "t.csv").read_text() == "model,top1\na,1.00\nb,2.00\n"
    assert (tmp_path / "t.md").read_text().splitlines() == ["| model | top1 |", "|---|---|",
                                                              "| a | 1.00 |", "| b | 2.00 |"]


def test_the_30_minute_config_is_the_main_recipe_run_longer() -> None:
    main = load_config(REPO / "configs" / "cifar10_tiny.yaml").to_dict()
    long = load_config(REPO / "configs" / "cifar10_tiny_30min.yaml").to_dict()
    changed = {(s, k) for s in main for k in main[s] if main[s][k] != long[s][k]}
    assert changed == {("optimization", "epochs"), ("logging", "folder"), ("data", "num_workers"),
                       ("run", "checkpoint_freq"), ("run", "monitor_every")}
    assert long["optimization"]["epochs"] > main["optimization"]["epochs"]


def test_the_epochs_suite_probes_last_layer_pooling_linearly_on_cifar10() -> None:
    [entry] = load_suite(REPO / "protocols" / "case-study-epochs.yaml").entries
    assert (entry.protocol, entry.dataset, entry.modes) == ("linear", "cifar10", ("avgpool",))


def _curve(values: dict[str, list[float]]) -> list[dict[str, object]]:
    epochs = [2, 6, 10, 14]
    return [{"epoch": e, **{name: str(v[i]) for name, v in values.items()}} for i, e in enumerate(epochs)]


def test_rank_metrics_correlate_plus_one_when_rising_with_accuracy_and_minus_one_when_falling(
        script: ModuleType) -> None:
    curve = _curve({"rankme": [1, 2, 3, 4], "alpha_req": [5, 4, 3, 1], "lidar": [1, 3, 2, 4],
                    "feature_std": [1, 2, 3, 4], "knn_top1": [20, 25, 30, 35]})
    rho = {r["metric"]: r["spearman rho vs k-NN"] for r in script.correlation_rows(curve)}
    assert rho == {"rankme": "1.00", "alpha_req": "-1.00", "lidar": "0.80", "feature_std": "1.00"}
    linear = [ResultRecord(protocol="linear", protocol_version="1", model={"name": f"ep{e}"}, dataset={},
                           features={"mode": "avgpool"}, params={}, metrics=[], summary={"top1": acc})
              for e, acc in ((2, 30.0), (6, 31.0), (10, 33.0), (14, 32.0))]
    rows = {r["metric"]: r for r in script.rank_vs_linear_rows(curve, linear)}
    assert rows["rankme"]["spearman rho vs linear"] == "0.80" and rows["alpha_req"]["spearman rho vs linear"] == "-0.80"
    assert rows["rankme"]["linear top-1"] == "30.00 31.00 33.00 32.00"
