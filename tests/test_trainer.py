"""The I-JEPA trainer: schedules, optimizer groups, checkpoints, exact resume, NaN stop, CLI.

Runs use a 64-wide, 2-deep encoder on 32 px images (patch 8, a 4 x 4 grid) from an
ImageFolder of random pictures made in a temporary folder.
"""

from __future__ import annotations


import contextlib
import copy
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import ijepa.model
import ijepa.train
from ijepa.checkpoint import OFFICIAL_KEYS, load_checkpoint
from ijepa.config import config_from_dict
from ijepa.schedules import Schedules, cosine_wd, linear_momentum, warmup_cosine_lr
from ijepa.train import CollapseMonitor, build_model, param_groups, train
from jepa_eval.core.errors import JepaEvalError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/imgs/train/<2 classes>/<16 images each> of smooth random 32 x 32 pictures."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for c in range(2):
        folder = root / "imgs" / "train" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(16):
            coarse = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(coarse).resize((32, 32), Image.BILINEAR).save(folder / f"{i}.png")
    return root


def config(images: Path, folder: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {
        "data": {"batch_size": 8, "crop_size": 32, "root_path": str(images), "image_folder": "imgs",
                 "num_workers": 0, "pin_mem": False},
        "logging": {"folder": str(folder), "write_tag": "jepa"},
        "mask": {"patch_size": 8, "min_keep": 1},
        "meta": {"model_name": "vit_tiny", "pred_depth": 1, "pred_emb_dim": 32, "use_bfloat16": False},
        "optimization": {"epochs": 2, "warmup": 1, "lr": 1e-3, "start_lr": 1e-4, "final_lr": 1e-5},
        "run": {"embed_dim": 64, "depth": 2, "num_heads": 4, "device": "cpu", "checkpoint_freq": 1},
    }
    for name, values in sections.items():
        d[name].update(values)
    return d


# ---------------------------------------------------------------------------- schedules


def test_lr_warms_up_linearly_then_follows_a_cosine_to_final_lr() -> None:
    kw = dict(start_lr=0.0, ref_lr=1.0, final_lr=0.1, warmup_steps=10, total_steps=110)
    assert warmup_cosine_lr(5, **kw) == pytest.approx(0.5)
    assert warmup_cosine_lr(10, **kw) == pytest.approx(1.0)
    assert warmup_cosine_lr(60, **kw) == pytest.approx(0.55)  # half way: the mean of 1.0 and 0.1
    assert warmup_cosine_lr(110, **kw) == pytest.approx(0.1)
    assert min(warmup_cosine_lr(s, **kw) for s in range(10, 300)) >= 0.1  # after warmup, never below final_lr


def test_weight_decay_rises_along_a_cosine_and_momentum_linearly() -> None:
    assert cosine_wd(0, ref_wd=0.04, final_wd=0.4, total_steps=100) == pytest.approx(0.04)
    assert cosine_wd(50, ref_wd=0.04, final_wd=0.4, total_steps=100) == pytest.approx(0.22)
    assert cosine_wd(100, ref_wd=0.04, final_wd=0.4, total_steps=100) == pytest.approx(0.4)
    assert linear_momentum(0, start=0.996, end=1.0, total_steps=100) == pytest.approx(0.996)
    assert linear_momentum(25, start=0.996, end=1.0, total_steps=100) == pytest.approx(0.997)


def test_schedules_from_config_count_warmup_in_epochs_and_stretch_by_ipe_scale(images: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(config(images, tmp_path, optimization={"epochs": 10, "warmup": 2, "ipe_scale": 1.5}))
    s = Schedules.from_config(cfg.optimization, iters_per_epoch=4)
    assert (s.warmup_steps, s.total_steps) == (8, 60)
    lr, wd, momentum = s.at(0)  # official: LR and WD one step ahead, momentum at the step
    assert lr == pytest.approx(1e-4 + (1e-3 - 1e-4) / 8)
    assert momentum == pytest.approx(0.996)
    assert wd == pytest.approx(cosine_wd(1, ref_wd=0.04, final_wd=0.4, total_steps=60))


# ---------------------------------------------------------------------------- optimizer


def test_weight_decay_groups_exclude_biases_and_one_dimensional_parameters(images: Path, tmp_path: Path) -> None:
    model = build_model(config_from_dict(config(images, tmp_path)))
    groups = param_groups(model.encoder, model.predictor)
    assert len(groups) == 4 and [bool(g.get("WD_exclude")) for g in groups] == [False, False, True, True]
    decayed = {id(p) for g in groups[:2] for p in g["params"]}
    excluded = {id(p) for g in groups[2:] for p in g["params"]}
    names = dict((id(p), n) for n, p in [*model.encoder.named_parameters(), *model.predictor.named_parameters()])
    # the mask token is 3-D [1, 1, P], so it is decayed, as in the official code
    assert all((names[i].endswith("weight") and "norm" not in names[i]) or names[i] == "mask_token" for i in decayed)
    assert all(names[i].endswith("bias") or "norm" in names[i] for i in excluded)
    assert id(model.encoder.pos_embed) not in decayed | excluded  # frozen
    assert all(g["weight_decay"] == 0.0 for g in groups[2:])


def test_run_init_selects_the_official_or_the_rescaled_initialisation(images: Path, tmp_path: Path) -> None:
    assert config_from_dict(config(images, tmp_path)).run.init == "official"
    built = {}
    for init in ("official", "rescaled"):
        torch.manual_seed(0)
        built[init] = build_model(config_from_dict(config(images, tmp_path, run={"init": init})))
    fc2 = {init: float(model.encoder.blocks[1].mlp.fc2.weight.detach().std()) for init, model in built.items()}
    assert fc2["official"] == pytest.approx(0.02, rel=0.05)  # 16,384 entries: sampling error 0.6%
    assert fc2["rescaled"] == pytest.approx(0.02 / 2, rel=0.05)  # block 2: divided by sqrt(2 * 2)
    patch = {init: model.encoder.patch_embed.proj.weight for init, model in built.items()}
    assert torch.equal(patch["official"], patch["rescaled"])  # drawn before the pass that differs
    with pytest.raises(JepaEvalError, match="run.init"):
        config_from_dict(config(images, tmp_path, run={"init": "xavier"}))


# ---------------------------------------------------------------------------- runs


def test_checkpoints_use_the_official_layout_and_load_with_weights_only(images: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(config(images, tmp_path, optimization={"epochs": 1}))
    result = train(cfg, progress=False)
    assert result.latest == tmp_path / "jepa-latest.pth.tar" and (tmp_path / "jepa-ep1.pth.tar").exists()
    ckpt = torch.load(result.latest, map_location="cpu", weights_only=True)
    assert set(OFFICIAL_KEYS) <= set(ckpt) and {"masker", "rng", "config", "itr"} <= set(ckpt)
    assert (ckpt["epoch"], ckpt["itr"], ckpt["world_size"], ckpt["batch_size"]) == (1, 4, 1, 8)
    assert ckpt["scaler"] is None
    for key in ("encoder", "target_encoder"):
        assert all(k.startswith("module.") for k in ckpt[key])
        assert {"module.pos_embed", "module.patch_embed.proj.weight", "module.blocks.1.attn.qkv.weight",
                "module.norm.bias"} <= set(ckpt[key])
    assert {"module.mask_token", "module.predictor_embed.weight", "module.predictor_pos_embed",
            "module.predictor_blocks.0.mlp.fc1.weight", "module.predictor_norm.weight",
            "module.predictor_proj.weight"} <= set(ckpt["predictor"])
    assert ckpt["config"] == cfg.to_dict()
    log = (tmp_path / "jepa_r0.csv").read_text().splitlines()
    assert log[0] == "epoch,itr,loss,context_patches,target_patches,lr,wd,momentum,time_ms" and len(log) == 5
    assert yaml.safe_load((tmp_path / "params-ijepa.yaml").read_text()) == cfg.to_dict()


def test_one_epoch_on_a_tiny_set_reduces_the_loss(images: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(config(images, tmp_path, data={"batch_size": 4},
                                  optimization={"epochs": 1, "warmup": 0, "lr": 2e-3}))
    losses = train(cfg, progress=False).losses
    assert len(losses) == 8
    assert np.mean(losses[-3:]) < 0.8 * losses[0]


def test_an_interrupted_then_resumed_run_reproduces_the_uninterrupted_losses(
        images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight = train(config_from_dict(config(images, tmp_path / "a")), progress=False).losses

    real_save = ijepa.train.save_checkpoint

    def save_then_crash(path: Path, **entries: Any) -> Path:
        out = real_save(path, **entries)
        if path.name.endswith("latest.pth.tar") and entries["epoch"] == 1:
            raise KeyboardInterrupt
        return out

    interrupted = config(images, tmp_path / "b")
    monkeypatch.setattr(ijepa.train, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(config_from_dict(interrupted), progress=False)
    monkeypatch.undo()
    interrupted["meta"]["load_checkpoint"] = True
    resumed = train(config_from_dict(interrupted), progress=False)
    assert resumed.epochs == 2 and resumed.steps == 8
    np.testing.assert_allclose(resumed.losses, straight[4:], rtol=0, atol=1e-6)
    final_a = torch.load(tmp_path / "a" / "jepa-latest.pth.tar", weights_only=True)["target_encoder"]
    final_b = torch.load(tmp_path / "b" / "jepa-latest.pth.tar", weights_only=True)["target_encoder"]
    assert all(torch.allclose(final_a[k], final_b[k], atol=1e-6) for k in final_a)
    assert len((tmp_path / "b" / "jepa_r0.csv").read_text().splitlines()) == 1 + 8


def test_resuming_from_a_missing_checkpoint_is_an_error_not_a_fresh_start(images: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(config(images, tmp_path, meta={"load_checkpoint": True}))
    with pytest.raises(JepaEvalError, match="does not exist"):
        train(cfg, progress=False)
    assert not (tmp_path / "jepa-latest.pth.tar").exists()


def test_resuming_from_an_unreadable_checkpoint_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "jepa-latest.pth.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(JepaEvalError, match="unreadable"):
        load_checkpoint(tmp_path / "jepa-latest.pth.tar")


def test_a_nan_loss_stops_training_naming_the_step_and_last_good_checkpoint(
        images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_loss = ijepa.model.regression_loss
    calls = {"n": 0}

    def nan_on_sixth(pred: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
        calls["n"] += 1
        loss = real_loss(pred, target, name)
        return loss * math.nan if calls["n"] == 6 else loss

    monkeypatch.setattr(ijepa.model, "regression_loss", nan_on_sixth)
    with pytest.raises(JepaEvalError) as info:
        train(config_from_dict(config(images, tmp_path)), progress=False)
    message = info.value.paragraph()
    assert "step 5 (epoch 2)" in message and str(tmp_path / "jepa-latest.pth.tar") in message
    assert torch.load(tmp_path / "jepa-latest.pth.tar", weights_only=True)["epoch"] == 1


def test_pixel_target_mode_trains_and_saves_a_pixel_head(images: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(config(images, tmp_path, optimization={"epochs": 1},
                                  run={"target": "pixels", "loss": "l2"}))
    result = train(cfg, progress=False)
    assert all(math.isfinite(v) for v in result.losses)
    predictor = torch.load(result.latest, weights_only=True)["predictor"]
    assert predictor["module.pixel_head.weight"].shape == (3 * 8 * 8, 64)


def test_monitor_logs_rankme_of_the_target_encoder(images: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(config(images, tmp_path, optimization={"epochs": 1},
                                  run={"monitor_every": 2, "monitor_samples": 16}))
    result = train(cfg, progress=False)
    assert [row["step"] for row in result.monitor] == [2, 4]
    assert all(1.0 <= row["rankme"] <= 16 for row in result.monitor)
    lines = (tmp_path / "jepa_monitor.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,rankme,feature_std" and len(lines) == 3


def test_monitor_warns_when_rankme_falls_below_a_fifth_of_its_peak(images: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(config(images, tmp_path, run={"monitor_samples": 16}))
    monitor = CollapseMonitor(cfg, tmp_path / "monitor.csv")
    assert monitor.images.shape == (16, 3, 32, 32)
    g = torch.Generator().manual_seed(0)

    def healthy(x: torch.Tensor) -> torch.Tensor:  # independent random tokens: RankMe near N
        return torch.randn(x.shape[0], 16, 64, generator=g)

    def collapsed(x: torch.Tensor) -> torch.Tensor:  # the same feature for every image: RankMe 1
        return torch.ones(x.shape[0], 16, 64)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = monitor(healthy, 1, 1, torch.device("cpu"), contextlib.nullcontext)
    assert first["rankme"] > 10
    with pytest.warns(RuntimeWarning, match="collapse at step 2"):
        second = monitor(collapsed, 2, 1, torch.device("cpu"), contextlib.nullcontext)
    assert second["rankme"] == pytest.approx(1.0, abs=1e-3) and second["feature_std"] == pytest.approx(0.0, abs=1e-6)
    monitor.log.close()


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/colours/{train: 12, val: 4 images a class}/{red, blue}/: noisy 32 x 32 pictures whose
    mean colour is the class (red (200, 30, 30) or blue (30, 30, 200))."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(1)
    for split, count in (("train", 12), ("val", 4)):
        for name, rgb in (("blue", (30, 30, 200)), ("red", (200, 30, 30))):
            folder = root / "colours" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(np.array(rgb) + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def mean_colour_tokens(x: torch.Tensor) -> torch.Tensor:
    """An 'encoder' whose tokens are the pixels [B, H*W, 3]: its average pool is the mean colour."""
    return x.flatten(2).transpose(1, 2)


def test_monitor_knn_scores_held_out_images_against_a_bank_of_training_images(colours: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(config(colours, tmp_path, data={"image_folder": "colours"},
                                  run={"monitor_every": 1, "monitor_samples": 8, "monitor_knn": 10,
                                       "monitor_knn_k": 5}))
    monitor = CollapseMonitor(cfg, tmp_path / "monitor.csv")
    assert monitor.images.shape == (8, 3, 32, 32) and monitor.labels.tolist() == [0] * 4 + [1] * 4
    assert monitor.bank is not None and monitor.bank[0].shape == (10, 3, 32, 32)
    assert sorted(monitor.bank[1].tolist()) == [0] * 5 + [1] * 5  # evenly spaced: both classes
    separable = monitor(mean_colour_tokens, 1, 1, torch.device("cpu"), contextlib.nullcontext)
    assert separable["knn_top1"] == 100.0  # the mean colour is the class
    constant = monitor(lambda x: torch.ones(x.shape[0], 4, 3), 2, 1, torch.device("cpu"), contextlib.nullcontext)
    assert constant["knn_top1"] == 50.0  # every vote ties: one class for all, right for half
    monitor.log.close()
    lines = (tmp_path / "monitor.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,rankme,feature_std,knn_top1" and lines[1].endswith(",100.0")


def test_the_live_monitor_writes_every_metric_to_a_monitor_record_beside_its_csv(colours: Path, tmp_path: Path) -> None:
    from jepa_eval.results.record import read_record

    cfg = config_from_dict(config(colours, tmp_path, data={"image_folder": "colours"},
                                  run={"monitor_every": 1, "monitor_samples": 8, "monitor_knn": 10, "monitor_knn_k": 5}))
    monitor = CollapseMonitor(cfg, tmp_path / "jepa_monitor.csv")
    rows = [monitor(mean_colour_tokens, step, 1, torch.device("cpu"), contextlib.nullcontext) for step in (5, 10)]
    monitor.log.close()
    record = read_record(tmp_path / "jepa_monitor.json")
    values = {(m.coords["step"], m.name): m.value for m in record.metrics}
    assert all(m.coords["epoch"] == 1 for m in record.metrics)
    assert [values[(r["step"], "rankme")] for r in rows] == [r["rankme"] for r in rows]
    assert values[(10, "knn_top1")] == 100.0 and (10, "uniformity") in values  # more than the CSV's columns
    assert record.protocol == "monitor" and record.summary["collapse_step"] is None


def test_monitor_knn_bank_leaves_out_the_held_out_images_when_they_share_a_folder(images: Path, tmp_path: Path) -> None:
    # `images` has no val folder: the monitor's held-out images come from the training folder
    cfg = config_from_dict(config(images, tmp_path, run={"monitor_every": 1, "monitor_samples": 16,
                                                         "monitor_knn": 32, "monitor_knn_k": 5}))
    monitor = CollapseMonitor(cfg, tmp_path / "monitor.csv")
    monitor.log.close()
    assert monitor.bank is not None
    bank = monitor.bank[0].flatten(1)
    assert bank.shape[0] == 16  # 32 images, 16 held out: the bank is the other 16
    assert torch.cdist(monitor.images.flatten(1), bank).min() > 0  # no query is in the bank


def test_training_with_the_knn_monitor_logs_knn_every_time(colours: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(config(colours, tmp_path, data={"image_folder": "colours"}, optimization={"epochs": 1},
                                  run={"monitor_every": 1, "monitor_samples": 8, "monitor_knn": 16, "monitor_knn_k": 5}))
    result = train(cfg, progress=False)
    assert len(result.monitor) == 3  # 24 training images, batch 8
    assert [row["knn_top1"] for row in result.monitor] == [100.0] * 3  # the class is the mean colour
    header = (tmp_path / "jepa_monitor.csv").read_text().splitlines()[0]
    assert header.endswith(",knn_top1")


def test_a_log_with_other_columns_is_never_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "jepa_monitor.csv"
    path.write_text("step,epoch,rankme,feature_std\n2,1,3.5,0.1\n")
    with pytest.raises(JepaEvalError, match="columns differ"):
        ijepa.train.CsvLog(path, ijepa.train.MONITOR_COLUMNS + ("knn_top1",))
    assert path.read_text() == "step,epoch,rankme,feature_std\n2,1,3.5,0.1\n"


def test_missing_training_images_are_an_error(tmp_path: Path) -> None:
    cfg = config_from_dict(config(tmp_path, tmp_path / "logs"))
    with pytest.raises(JepaEvalError, match="training images not found"):
        train(cfg, progress=False)


# ---------------------------------------------------------------------------- CLI and processes


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ijepa", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def test_cli_dry_run_prints_the_resolved_config_with_every_default(images: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"meta": {"model_name": "vit_small"}}))
    out = run_cli("train", "--config", str(path), "--dry-run")
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert resolved["meta"]["model_name"] == "vit_small" and resolved["mask"]["num_pred_masks"] == 4
    assert resolved["run"]["loss"] == "smooth_l1" and not list(tmp_path.glob("*.pth.tar"))


def test_cli_reports_a_bad_config_in_one_paragraph_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"mask": {"pred_mask_scale": [0.2, 1.5]}}))
    out = run_cli("train", "--config", str(path), "--dry-run")
    assert out.returncode == 2 and "mask.pred_mask_scale" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_two_cpu_processes_train_in_step_under_torchrun(images: Path, tmp_path: Path) -> None:
    d = config(images, tmp_path, data={"batch_size": 4}, optimization={"epochs": 1})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(d))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "ijepa", "train", "--config", str(path), "--quiet"],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = torch.load(tmp_path / "jepa-latest.pth.tar", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["itr"] == 4 and len(ckpt["rng"]) == 2  # 32 images / (2 x 4)
    rows = [(tmp_path / f"jepa_r{r}.csv").read_text().splitlines()[1:] for r in (0, 1)]
    assert len(rows[0]) == len(rows[1]) == 4
    # the logged loss is the mean over both processes, hence identical in both logs
    assert [r.split(",")[2] for r in rows[0]] == [r.split(",")[2] for r in rows[1]]


def test_jepa_eval_loads_the_trained_encoder_with_the_trainers_head_count(images: Path, tmp_path: Path) -> None:
    """Width 64 alone would suggest 1 head; the checkpoint's config says 4, and features must
    equal the trainer's own target encoder on the same pixels."""
    from jepa_eval.backbones.load import load_backbone

    cfg = config_from_dict(config(images, tmp_path, optimization={"epochs": 1}))
    result = train(cfg, device="cpu", progress=False)
    backbone = load_backbone(str(result.latest))
    assert backbone.arch["num_heads"] == 4
    state = torch.load(result.latest, weights_only=True)
    reference = build_model(cfg).target_encoder
    reference.load_state_dict({k.removeprefix("module."): v for k, v in state["target_encoder"].items()})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = backbone.model.forward_features(x)
        theirs = reference.eval()(x)
    assert torch.allclose(ours, theirs, atol=1e-5)


# ---------------------------------------------------------------------------- the step

STEP_DIM, STEP_PATCH, STEP_IMG = 32, 8, 32  # a 4 x 4 grid: 16 patches


def step_case() -> tuple[ijepa.model.IJEPA, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """A 32-wide, 2-deep, 4-head encoder and a 16-wide, 2-deep, 2-head predictor whose weights
    come from a seeded generator (so no init scheme enters), 3 images, 2 context masks of 6
    patches and 3 target blocks of 4 patches per image."""
    encoder = ijepa.model.MaskedEncoder(STEP_DIM, 2, 4, STEP_PATCH, STEP_IMG)
    predictor = ijepa.model.Predictor(encoder.grid, STEP_DIM, 16, 2, 2)
    model = ijepa.model.IJEPA(encoder, predictor)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in (model.encoder, model.predictor):
            for name, p in module.named_parameters():
                if not p.requires_grad:
                    continue
                noise = torch.randn(p.shape, generator=g)
                if p.ndim > 1:
                    p.copy_(0.05 * noise)
                elif name.endswith("bias"):
                    p.copy_(0.02 * noise)
                else:  # LayerNorm scales
                    p.copy_(1.0 + 0.1 * noise)
        model.target_encoder.load_state_dict(model.encoder.state_dict())
    images = torch.randn(3, 3, STEP_IMG, STEP_IMG, generator=g)
    enc = [torch.stack([torch.randperm(16, generator=g)[:6].sort().values for _ in range(3)]) for _ in range(2)]
    pred = [torch.stack([torch.randperm(16, generator=g)[:4].sort().values for _ in range(3)]) for _ in range(3)]
    return model, images, enc, pred


def our_steps(model: ijepa.model.IJEPA, images: torch.Tensor, enc: list[torch.Tensor], pred: list[torch.Tensor],
              steps: int = 3) -> tuple[list[float], dict[str, torch.Tensor]]:
    """The trainer's step ``steps`` times (loss, zero_grad, backward, AdamW step at lr 1e-3 and
    weight decay 0.05, EMA at momentum 0.996): the losses and the first step's gradients."""
    optimizer = torch.optim.AdamW(param_groups(model.encoder, model.predictor), lr=1e-3, weight_decay=0.05)
    losses, grads = [], {}
    for _ in range(steps):
        loss = model(images, enc, pred)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not grads:
            grads = {f"{part}.{n}": p.grad.clone() for part in ("encoder", "predictor")
                     for n, p in getattr(model, part).named_parameters() if p.requires_grad}
        optimizer.step()
        model.update_target(0.996)
        losses.append(float(loss.detach()))
    return losses, grads


def trained_weights(model: ijepa.model.IJEPA) -> dict[str, torch.Tensor]:
    """Every parameter of the encoder, predictor and target encoder, by prefixed name."""
    return {f"{part}.{n}": p.detach().clone() for part in ("encoder", "predictor", "target_encoder")
            for n, p in getattr(model, part).named_parameters()}


def fingerprint(tensors: dict[str, torch.Tensor]) -> float:
    """The dot product (float64) of all the tensors, flattened in name order, with a fixed
    random probe: any change of one entry by more than rounding changes it."""
    flat = torch.cat([tensors[n].double().flatten() for n in sorted(tensors)])
    probe = torch.randn(flat.numel(), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return float(flat @ probe)


def test_three_steps_compute_the_numbers_recorded_before_the_step_was_sped_up() -> None:
    """Recorded with the step as it was before its CPU speed work (fused attention, foreach EMA);
    any later change of the step may move them by rounding only (1e-6 relative; the CPU's
    vector width alone moves them by up to 2e-7)."""
    model, images, enc, pred = step_case()
    losses, grads = our_steps(model, images, enc, pred)
    assert losses == pytest.approx([0.4331364631652832, 0.42518478631973267, 0.4175727367401123], rel=1e-6)
    assert fingerprint(grads) == pytest.approx(-0.2728699834608396, rel=1e-6)
    assert fingerprint(trained_weights(model)) == pytest.approx(-14.517153169597266, rel=1e-6)


@pytest.fixture()
def bench_trainer(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import bench_trainer

    return bench_trainer


def test_our_step_computes_what_the_benchmarks_official_step_computes(bench_trainer: Any) -> None:
    """bench/bench_trainer.py re-implements the official step (gathers on repeated indices,
    repeat-and-cat batching, written-out attention, EMA loop over every parameter): from the
    same weights, images and masks, ours gives the same loss, gradients and three steps."""
    ours, images, enc, pred = step_case()
    official, first = copy.deepcopy(ours), copy.deepcopy(ours)
    our_losses, our_grads = our_steps(ours, images, enc, pred)
    bench_trainer.official_loss(first, images, enc, pred).backward()
    official_grads = {f"{part}.{n}": p.grad for part in ("encoder", "predictor")
                      for n, p in getattr(first, part).named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(param_groups(official.encoder, official.predictor), lr=1e-3, weight_decay=0.05)
    official_losses = [float(bench_trainer.official_step(official, optimizer, None, images, enc, pred, 0.996))
                       for _ in range(3)]
    assert our_losses == pytest.approx(official_losses, rel=1e-6)
    assert our_grads.keys() == official_grads.keys()
    assert all(torch.allclose(our_grads[n], official_grads[n], rtol=1e-5, atol=1e-8) for n in our_grads)
    weights, official_weights = trained_weights(ours), trained_weights(official)
    assert all(torch.allclose(weights[n], official_weights[n], rtol=0, atol=1e-6) for n in weights)
