"""The case study's configs, suite file and summary helpers (scripts/case_study.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from ijepa.config import TrainConfig, encoder_dims, load_config
from jepa_eval.results.record import DatasetInfo, FeatureInfo, Metric, ModelInfo, ResultRecord
from jepa_eval.pipeline.suite import config_for, load_suite

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("case_study", REPO / "scripts" / "case_study.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _derived_config(base: str, derived: str, changes: set[tuple[str, str]]) -> tuple[TrainConfig, TrainConfig]:
    """Load ``configs/{base}.yaml`` and ``configs/{derived}.yaml`` and check that exactly the
    (section, key) pairs in ``changes`` differ between them."""
    before, after = (load_config(REPO / "configs" / f"{name}.yaml") for name in (base, derived))
    a, b = before.to_dict(), after.to_dict()
    assert {(s, k) for s in a for k in a[s] if a[s][k] != b[s][k]} == changes
    return before, after


def test_the_pixel_ablation_differs_from_the_main_config_only_in_target_and_folder() -> None:
    main, pixels = _derived_config("cifar10_tiny", "cifar10_tiny_pixels", {("run", "target"), ("logging", "folder")})
    assert (main.run.target, pixels.run.target) == ("latent", "pixels")


def test_the_main_config_is_the_tiny_shape_with_six_to_eight_checkpoints_and_live_rankme() -> None:
    cfg = load_config(REPO / "configs" / "cifar10_tiny.yaml")
    assert encoder_dims(cfg)[:3] == (128, 4, 4) and cfg.mask.patch_size == 4 and cfg.data.crop_size == 32
    assert cfg.data.batch_size == 128 and cfg.mask.num_pred_masks == 4
    assert 6 <= cfg.optimization.epochs // cfg.run.checkpoint_freq <= 8
    assert 0 < cfg.run.monitor_every < cfg.optimization.epochs * (cfg.run.max_iters_per_epoch or 391)


def test_the_case_study_suite_runs_knn_linear_lowshot_rank_on_cifar10_then_transfers_to_imagenette() -> None:
    suite = load_suite(REPO / "protocols" / "case-study.yaml")
    assert [e.protocol for e in suite.entries] == ["knn", "linear", "lowshot", "rank", "transfer"]
    assert {e.dataset for e in suite.entries[:4]} == {"cifar10"}
    linear, lowshot = config_for(suite.entries[1]), config_for(suite.entries[2])
    assert suite.entries[1].modes == ("avgpool", "avgpool4")
    assert lowshot.fractions == (0.01, 0.1) and lowshot.seeds == 5 and linear.select_on == "val"
    transfer = suite.entries[4]
    assert transfer.inner == "linear" and transfer.modes == ("avgpool", "avgpool4")
    assert transfer.datasets == ("imagefolder:.cache/case-study/imagenette",)


def model_info(name: str, path: str = "") -> ModelInfo:
    return ModelInfo(name=name, path=path, sha256=None, family="ijepa", ckpt_key="target_encoder", arch={})


def _knn_record(name: str, top1_at: dict[int, float]) -> ResultRecord:
    metrics = [{"name": n, "value": v + (10 if n == "top5" else 0), "k": k}
               for k, v in top1_at.items() for n in ("top1", "top5")]
    return ResultRecord(protocol="knn", protocol_version="1", model=model_info(name), dataset=DatasetInfo("cifar10"),
                        features=FeatureInfo("avgpool"), params={}, metrics=[Metric.from_dict(m) for m in metrics],
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
    main, long = _derived_config("cifar10_tiny", "cifar10_tiny_30min", {
        ("optimization", "epochs"), ("logging", "folder"), ("data", "num_workers"), ("run", "checkpoint_freq"),
        ("run", "monitor_every")})
    assert long.optimization.epochs > main.optimization.epochs


def test_the_batch_64_config_sees_the_30_minute_runs_images_in_twice_the_steps() -> None:
    base, b64 = _derived_config("cifar10_tiny_30min", "cifar10_tiny_30min_b64", {
        ("data", "batch_size"), ("optimization", "epochs"), ("logging", "folder"), ("run", "checkpoint_freq"),
        ("run", "monitor_every")})

    def images(cfg: TrainConfig) -> int:
        return cfg.data.batch_size * cfg.optimization.epochs * cfg.run.max_iters_per_epoch
    assert b64.data.batch_size * 2 == base.data.batch_size
    assert images(b64) == images(base)
    assert b64.optimization.lr == base.optimization.lr


def test_the_imagenette_config_is_the_30_minute_recipe_on_64_px_crops_with_the_same_grid_and_half_the_lr() -> None:
    cifar, imagenette = _derived_config("cifar10_tiny_30min", "imagenette_tiny_30min", {
        ("data", "crop_size"), ("mask", "patch_size"), ("logging", "folder"), ("optimization", "epochs"),
        ("run", "dataset"), ("run", "data_root"), ("run", "checkpoint_freq"), ("run", "max_iters_per_epoch"),
        ("optimization", "lr")})
    assert imagenette.optimization.lr == cifar.optimization.lr / 2
    assert cifar.data.crop_size // cifar.mask.patch_size == imagenette.data.crop_size // imagenette.mask.patch_size
    steps = imagenette.optimization.epochs * (9469 // imagenette.data.batch_size)
    assert abs(steps - cifar.optimization.epochs * cifar.run.max_iters_per_epoch) <= 100


def _record(protocol: str, name: str, summary: dict[str, float], mode: str = "avgpool", *,
            transfer: bool = False, path: str = "") -> ResultRecord:
    return ResultRecord(protocol=protocol, protocol_version="1", model=model_info(name, path),
                        dataset=DatasetInfo("cifar10"), features=FeatureInfo(mode),
                        params={"transfer": transfer} if transfer else {}, metrics=[], summary=summary)


def _trained_model_records(name: str, path: str) -> list[ResultRecord]:
    lowshot = {"top1_mean[fraction=0.01]": 30.0, "top1_std[fraction=0.01]": 1.5,
               "top1_mean[fraction=0.1]": 40.0, "top1_std[fraction=0.1]": 0.25}
    return [_record("knn", name, {"top1_k20": 36.5, "best_top1": 37.0}, path=path),
            _record("linear", name, {"top1": 46.0, "chosen_val_top1": 45.0}, path=path),
            _record("linear", name, {"top1": 48.0, "chosen_val_top1": 47.0}, "avgpool4", path=path),
            _record("lowshot", name, lowshot, path=path),
            _record("rank", name, {"rankme": 16.375}, path=path),
            _record("linear", name, {"top1": 44.0, "chosen_val_top1": 41.0}, transfer=True, path=path),
            _record("linear", name, {"top1": 49.0, "chosen_val_top1": 43.0}, "avgpool4", transfer=True, path=path)]


def test_suite_rows_give_each_protocols_headline_and_a_dash_for_what_a_model_lacks(script: ModuleType) -> None:
    path = str(script.run_dir("ijepa-30min") / "jepa-ep18.pth.tar")
    records = _trained_model_records("ijepa-30min", path)
    records.append(_record("knn", "pixels", {"top1_k20": 45.4, "best_top1": 45.4}, "pixels"))
    first, second = script.suite_rows(records, ["ijepa-30min", "pixels", "absent"])
    assert first == {"model": "ijepa-30min", "trained on": "CIFAR-10", "k-NN k=20": "36.50",
                     "linear avgpool": "46.00", "linear avgpool4": "48.00", "1% low-shot": "30.00 ± 1.50",
                     "10% low-shot": "40.00 ± 0.25", "RankMe": "16.38", "Imagenette linear": "49.00 (avgpool4)"}
    assert second == {**{c: "-" for c in first}, "model": "pixels", "k-NN k=20": "45.40"}


def test_transfer_rows_take_the_pooling_chosen_on_held_out_train_in_each_direction(script: ModuleType) -> None:
    records = _trained_model_records("ijepa-imagenette", str(script.run_dir("ijepa-imagenette") / "jepa-ep24.pth.tar"))
    records[2].summary["chosen_val_top1"] = 44.0  # avgpool (45.0) now wins on CIFAR-10 held-out train
    [row] = script.transfer_rows(records, ["ijepa-imagenette"])
    assert row == {"model": "ijepa-imagenette", "trained on": "Imagenette", "CIFAR-10 linear top-1": "46.00 (avgpool)",
                   "Imagenette linear top-1": "49.00 (avgpool4)"}


def _curve(values: dict[str, list[float]]) -> list[dict[str, object]]:
    epochs = [2, 6, 10, 14]
    return [{"epoch": e, **{name: str(v[i]) for name, v in values.items()}} for i, e in enumerate(epochs)]


def test_rank_metrics_correlate_plus_one_when_rising_with_accuracy_and_minus_one_when_falling(
        script: ModuleType) -> None:
    curve = _curve({"rankme": [1, 2, 3, 4], "alpha_req": [5, 4, 3, 1], "lidar": [1, 3, 2, 4],
                    "feature_std": [1, 2, 3, 4], "knn_top1": [20, 25, 30, 35]})
    rho = {r["metric"]: r["spearman rho vs k-NN"] for r in script.correlation_rows(curve)}
    assert rho == {"rankme": "1.00", "alpha_req": "-1.00", "lidar": "0.80", "feature_std": "1.00"}
    folder = script.run_dir("ijepa-30min")
    linear = [_record("linear", f"ep{e}", {"top1": acc}, path=str(folder / f"jepa-ep{e}.pth.tar"))
              for e, acc in ((2, 30.0), (6, 31.0), (10, 33.0), (14, 32.0))]
    other_run = _record("linear", "ijepa", {"top1": 99.0}, path=str(script.run_dir("ijepa") / "jepa-ep6.pth.tar"))
    rows = {r["metric"]: r for r in script.rank_vs_linear_rows(curve, [*linear, other_run])}
    assert rows["rankme"]["spearman rho vs linear"] == "0.80" and rows["alpha_req"]["spearman rho vs linear"] == "-0.80"
    assert rows["rankme"]["linear top-1"] == "30.00 31.00 33.00 32.00" and rows["rankme"]["linear probe"] == "avgpool"
