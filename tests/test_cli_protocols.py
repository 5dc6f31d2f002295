"""lowshot, rank, transfer, monitor, suite and report from the command line, on tiny data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from helpers_ckpt import make_checkpoint
from jepa_eval.cli.app import app
from jepa_eval.results.record import load_records

runner = CliRunner()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """4 classes of noisy class-coloured 32 px images (12 train, 6 val each) and a tiny I-JEPA file."""
    root = tmp_path_factory.mktemp("protocols")
    rng = np.random.default_rng(0)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
    for split, count in (("train", 12), ("val", 6)):
        for label, colour in enumerate(colours):
            folder = root / "data" / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{label}_{i}.png")
    ckpt = make_checkpoint("ijepa", root / "tiny.pth.tar", embed_dim=64, depth=4, num_heads=2, patch_size=8, img_size=32)
    return {"root": root, "data": root / "data", "ckpt": ckpt, "cache": root / "cache"}


def _run(args: list[str], ws: dict[str, Path], results: Path, *, cache: bool = True) -> object:
    extra = ["--cache-dir", str(ws["cache"])] if cache else []
    result = runner.invoke(app, [*args, *extra, "--results-dir", str(results), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return result


def test_lowshot_reports_mean_and_std_over_seeds_and_keeps_every_seed(workspace, tmp_path):
    _run(["lowshot", "--ckpt", str(workspace["ckpt"]), "--data", f"imagefolder:{workspace['data']}",
          "--fraction", "0.5", "--shots", "2", "--seeds", "3"], workspace, tmp_path)
    (record,) = load_records(tmp_path)
    per_seed = [m for m in record.metrics if m.name == "top1" and m.coords.get("fraction") == 0.5]
    assert sorted(m.coords["seed"] for m in per_seed) == [0, 1, 2]
    mean = next(m for m in record.metrics if m.name == "top1_mean" and m.coords.get("fraction") == 0.5)
    assert mean.value == pytest.approx(np.mean([m.value for m in per_seed]))
    assert any(m.name == "top1_mean" and m.coords.get("shots") == 2 for m in record.metrics)


def test_lowshot_fraction_that_empties_a_class_is_an_error(workspace, tmp_path):
    result = runner.invoke(app, ["lowshot", "--ckpt", str(workspace["ckpt"]), "--data",
                                 f"imagefolder:{workspace['data']}", "--fraction", "0.01",
                                 "--results-dir", str(tmp_path), "--cache-dir", str(workspace["cache"]), "--quiet"])
    assert result.exit_code != 0 and "class" in str(result.exception)
    assert not list(tmp_path.glob("*.json"))


def test_rank_writes_every_diagnostic_with_the_lidar_constants(workspace, tmp_path):
    _run(["rank", "--ckpt", str(workspace["ckpt"]), "--data", f"imagefolder:{workspace['data']}",
          "--samples", "40", "--lidar-images", "8", "--lidar-views", "3"], workspace, tmp_path)
    (record,) = load_records(tmp_path)
    names = {m.name for m in record.metrics}
    assert {"rankme", "rankme_norm", "alpha_req", "lidar", "feature_std", "mean_cosine", "uniformity"} <= names
    assert record.dataset.n_used == 40 and record.params["lidar_delta"] == 1e-4
    assert record.summary["rankme"] == pytest.approx(40 * record.summary["rankme_norm"])  # min(N, D) = N = 40 rows


def test_transfer_reports_the_winning_mode_per_dataset_for_each_model(workspace, tmp_path):
    data = f"imagefolder:{workspace['data']}"
    result = _run(["transfer", "--ckpt", f"tiny={workspace['ckpt']}", "--ckpt", f"rand=random:{workspace['ckpt']}",
                   "--datasets", data, "--protocol", "linear", "--features", "avgpool,avgpool4", "--epochs", "5"],
                  workspace, tmp_path)
    records = load_records(tmp_path)
    assert sorted(r.model.name for r in records) == ["rand", "tiny"]
    for record in records:
        assert record.params["transfer"] is True and record.summary["selected_on"] == "val"
        assert record.summary["mode"] in ("avgpool", "avgpool4")
        candidates = [m for m in record.metrics if m.name == "candidate_val_top1"]
        assert {m.coords["mode"] for m in candidates} == {"avgpool", "avgpool4"}
    assert "tiny" in result.stdout and "rand" in result.stdout


def test_suite_runs_every_protocol_skips_finished_ones_and_survives_a_failure(workspace, tmp_path):
    data = f"imagefolder:{workspace['data']}"
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump({"suite": "tiny", "protocols": [
        {"protocol": "knn", "dataset": data, "params": {"ks": [1, 5]}},
        {"protocol": "linear", "dataset": data, "params": {"epochs": 5}},
        {"protocol": "knn", "dataset": "imagefolder:/nonexistent/folder"},
    ]}))
    results = tmp_path / "results"
    args = ["suite", str(suite_file), "--ckpt", f"tiny={workspace['ckpt']}", "--cache-dir", str(workspace["cache"]),
            "--results-dir", str(results), "--quiet", "--device", "cpu"]
    first = runner.invoke(app, args)
    assert first.exit_code == 1 and "2 results written, 0 skipped, 1 failed" in first.stdout
    assert "nonexistent" in first.stdout
    second = runner.invoke(app, args)
    assert "0 results written, 2 skipped, 1 failed" in second.stdout
    assert len(load_records(results)) == 2


def test_a_suite_file_with_an_unknown_hyper_parameter_names_its_path(workspace, tmp_path):
    suite_file = tmp_path / "bad.yaml"
    suite_file.write_text("suite: bad\nprotocols:\n  - {protocol: knn, dataset: digits, params: {kk: [1]}}\n")
    result = runner.invoke(app, ["suite", str(suite_file), "--ckpt", str(workspace["ckpt"])])
    assert result.exit_code != 0
    assert "protocols[0].params" in str(result.exception) and "'kk'" in str(result.exception)


def test_report_builds_tables_and_plots_from_result_files(workspace, tmp_path):
    data = f"imagefolder:{workspace['data']}"
    for name, path in (("tiny", str(workspace["ckpt"])), ("rand", f"random:{workspace['ckpt']}")):
        _run(["knn", "--ckpt", path, "--name", name, "--data", data, "--k", "5,20"], workspace, tmp_path / "r")
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(tmp_path / "r"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = (out / "tables" / "top1.md").read_text()
    assert "tiny" in table and "rand" in table and "**" in table
    assert (out / "tidy.csv").exists() and (out / "tidy.parquet").exists()
    assert list((out / "plots").glob("*.png"))


def test_monitor_flags_nothing_on_a_healthy_short_run_and_plots_each_metric(workspace, tmp_path):
    from ijepa.config import config_from_dict
    from ijepa.train import train

    run_dir = tmp_path / "run"
    cfg = config_from_dict({
        "data": {"batch_size": 8, "crop_size": 32, "num_workers": 0, "pin_mem": False},
        "logging": {"folder": str(run_dir), "write_tag": "jepa"},
        "mask": {"patch_size": 8, "min_keep": 1, "num_pred_masks": 2, "pred_mask_scale": [0.2, 0.3]},
        "meta": {"model_name": "vit_tiny", "pred_depth": 1, "pred_emb_dim": 32, "use_bfloat16": False},
        "optimization": {"epochs": 2, "warmup": 1, "lr": 1e-3, "start_lr": 1e-4, "final_lr": 1e-5},
        "run": {"dataset": f"imagefolder:{workspace['data']}", "embed_dim": 64, "depth": 2, "num_heads": 4,
                "device": "cpu", "checkpoint_freq": 1},
    })
    train(cfg, device="cpu", progress=False)
    result = _run(["monitor", str(run_dir), "--data", f"imagefolder:{workspace['data']}", "--samples", "40"],
                  workspace, tmp_path / "r")
    (record,) = load_records(tmp_path / "r")
    assert sorted({m.coords["epoch"] for m in record.metrics}) == [1, 2]
    assert {"rankme", "feature_std", "knn_top1"} <= {m.name for m in record.metrics}
    assert "plot:" in result.output
    assert list((tmp_path / "r").glob("*.png"))


def test_report_selects_models_and_a_suites_results(workspace, tmp_path):
    data = f"imagefolder:{workspace['data']}"
    suite_file = tmp_path / "mine.yaml"
    suite_file.write_text(yaml.safe_dump({"suite": "mine", "protocols": [
        {"protocol": "knn", "dataset": data, "params": {"ks": [5, 20]}}]}))
    results = tmp_path / "r"
    for name, path in (("tiny", str(workspace["ckpt"])), ("rand", f"random:{workspace['ckpt']}")):
        assert runner.invoke(app, ["suite", str(suite_file), "--ckpt", f"{name}={path}", "--results-dir", str(results),
                                   "--cache-dir", str(workspace["cache"]), "--quiet"]).exit_code == 0
    _run(["knn", "--ckpt", "pixels:32", "--data", data, "--k", "5,20"], workspace, results)  # not in the suite
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(results), "--out", str(out), "--suite", str(suite_file),
                                 "--model", "tiny"])
    assert result.exit_code == 0, result.output
    table = (out / "tables" / "top1.md").read_text()
    assert "tiny" in table and "rand" not in table and "pixels" not in table
