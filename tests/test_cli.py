"""The command line end to end: each protocol command leaves one self-describing result file,
prints its numbers, and reuses cached features on a second run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers_ckpt import make_checkpoint
from helpers_data import make_imagefolder
from jepa_eval.cli.app import app
from jepa_eval.results.record import FeatureInfo, load_records

runner = CliRunner()
CLASSES = ["red", "green", "blue", "white"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny I-JEPA checkpoint, a 4-class ImageFolder of solid colours and a shared cache."""
    root = tmp_path_factory.mktemp("cli")
    ckpt = make_checkpoint("ijepa", root / "tiny-ijepa.pth.tar", embed_dim=64, depth=2, num_heads=2,
                           patch_size=8, img_size=32)
    data = make_imagefolder(root / "colours", CLASSES, n_per_class=6, splits=("train", "val"), size=32)
    return {"ckpt": ckpt, "data": data, "cache": root / "cache", "root": root}


def _invoke(args: list[str], workspace: dict[str, Path], results: Path) -> object:
    result = runner.invoke(app, [*args, "--cache-dir", str(workspace["cache"]), "--results-dir", str(results),
                                 "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return result


def test_knn_writes_one_self_describing_result_and_reuses_cached_features(workspace, tmp_path):
    data = f"imagefolder:{workspace['data']}"
    first = _invoke(["knn", "--ckpt", str(workspace["ckpt"]), "--data", data, "--k", "1,3"], workspace, tmp_path)
    assert "extracted" in first.output
    (record,) = load_records(tmp_path)
    assert record.protocol == "knn" and record.model.family == "ijepa"
    assert record.model.ckpt_key == "target_encoder" and len(record.model.sha256) == 64
    assert record.dataset.n_train == 24 and record.dataset.n_eval == 24
    assert record.features == FeatureInfo(mode="avgpool", image_size=32)
    assert {(m.name, m.coords["k"]) for m in record.metrics} == {("top1", 1), ("top5", 1), ("top1", 3), ("top5", 3)}
    assert record.environment["packages"]["torch"].startswith("2.")
    # solid colours: every class is one point, so 1-NN is exact
    assert next(m.value for m in record.metrics if m.name == "top1" and m.coords["k"] == 1) == 100.0
    second = _invoke(["knn", "--ckpt", str(workspace["ckpt"]), "--data", data, "--k", "1,3"], workspace, tmp_path)
    assert second.output.count("reused from the feature cache") == 2
    assert len(load_records(tmp_path)) == 2


def test_json_flag_prints_the_record_on_stdout(workspace, tmp_path):
    result = _invoke(["knn", "--ckpt", str(workspace["ckpt"]), "--data", f"imagefolder:{workspace['data']}",
                      "--k", "1", "--json"], workspace, tmp_path)
    printed = json.loads(result.stdout[result.stdout.index("{"):])
    (record,) = load_records(tmp_path)
    assert printed == record.to_json()


def test_linear_reports_the_head_chosen_on_held_out_train(workspace, tmp_path):
    _invoke(["linear", "--ckpt", str(workspace["ckpt"]), "--data", f"imagefolder:{workspace['data']}",
             "--solver", "sgd", "--epochs", "20", "--lrs", "0.1,1.0", "--wds", "0,5e-4", "--val-fraction", "0.25",
             "--max-widenings", "0"], workspace, tmp_path)
    (record,) = load_records(tmp_path)
    assert record.params["selected_on"] == "val" and record.params["solver_ran"] == "sgd"
    assert record.summary["top1"] == 100.0
    assert {"chosen_lr", "chosen_wd", "chosen_batchnorm", "chosen_train_loss", "steps"} <= set(record.summary)
    grid = [m for m in record.metrics if m.name == "val_top1"]
    assert len(grid) == 2 * 2 * 2  # lrs x weight decays x {plain, BatchNorm}


def test_linear_by_default_runs_the_exact_solver_on_a_split_that_fits_in_memory(workspace, tmp_path):
    _invoke(["linear", "--ckpt", str(workspace["ckpt"]), "--data", f"imagefolder:{workspace['data']}",
             "--Cs", "0.01,1,100", "--val-fraction", "0.25"], workspace, tmp_path)
    (record,) = load_records(tmp_path)
    assert record.params["solver"] == "auto" and record.params["solver_ran"] == "lbfgs"
    assert record.params["standardize"] is True
    assert record.summary["chosen_C"] in (0.01, 1.0, 100.0) and record.summary["converged"] is True
    assert sorted(m.coords["C"] for m in record.metrics if m.name == "val_top1") == [0.01, 1.0, 100.0]


def test_features_exports_rows_in_dataset_order(workspace, tmp_path):
    out = tmp_path / "feats.npy"
    result = runner.invoke(app, ["features", "--ckpt", str(workspace["ckpt"]), "--data",
                                 f"imagefolder:{workspace['data']}", "--split", "train", "--out", str(out),
                                 "--cache-dir", str(workspace["cache"]), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    features, labels = np.load(out), np.load(tmp_path / "feats.labels.npy")
    assert features.shape == (24, 64) and labels.tolist() == sorted(labels.tolist())


def test_cache_list_and_clear(workspace, tmp_path):
    cache = tmp_path / "cache"
    args = ["--cache-dir", str(cache)]
    _invoke(["knn", "--ckpt", str(workspace["ckpt"]), "--data", f"imagefolder:{workspace['data']}", "--k", "1"],
            {**workspace, "cache": cache}, tmp_path / "results")
    listed = runner.invoke(app, ["cache", "list", *args])
    assert listed.exit_code == 0 and "2 entries" in listed.output
    cleared = runner.invoke(app, ["cache", "clear", *args])
    assert "removed 2 cache entries" in cleared.output
    assert "0 entries" in runner.invoke(app, ["cache", "list", *args]).output


def test_a_bad_checkpoint_is_one_paragraph_without_traceback(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    result = runner.invoke(app, ["knn", "--ckpt", str(empty), "--results-dir", str(tmp_path / "r")])
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception) and "empty.pth" in str(result.exception)
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())


def test_raw_pixels_baseline_is_a_model_like_any_other(workspace, tmp_path):
    _invoke(["knn", "--ckpt", "pixels:8", "--data", f"imagefolder:{workspace['data']}", "--k", "1"], workspace, tmp_path)
    (record,) = load_records(tmp_path)
    assert record.model.family == "pixels" and record.features.mode == "pixels"
    assert record.summary["best_top1"] == 100.0  # solid colours are separable in pixel space


def test_random_like_reinitialises_weights_but_keeps_the_architecture(workspace):
    from jepa_eval.backbones.spec import ModelSpec

    trained = ModelSpec(ckpt=str(workspace["ckpt"])).load()
    fresh = ModelSpec(ckpt=f"random:{workspace['ckpt']}").load()
    assert fresh.arch == trained.arch and fresh.sha256.startswith("random-like:")
    assert not np.allclose(fresh.model.blocks[0].attn.qkv.weight.detach(), trained.model.blocks[0].attn.qkv.weight.detach())
    assert np.allclose(fresh.model.pos_embed.detach(), trained.model.pos_embed.detach())  # fixed sin-cos kept
