"""The augmented linear recipe: the backbone in the loop gives the cached recipe's numbers on
un-augmented images, LARS scales each head's step by its trust ratio, and the command records it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers_ckpt import make_checkpoint
from helpers_faults import run_main
from jepa_eval.backbones.backbone import Backbone
from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.data import build_dataset, eval_transform
from jepa_eval.features.splits import ExtractOptions, split_features
from jepa_eval.features.stream import StreamedFeatures
from jepa_eval.protocols.linear import LinearConfig, augmented_probe, fit_standardizer, linear_probe, \
    streamed_standardizer
from jepa_eval.protocols.linear_heads import HeadTrainer, Optimiser, plan_steps
from jepa_eval.results.record import load_records

CPU = torch.device("cpu")
GRID = dict(learning_rates=(0.1, 1.0), weight_decays=(0.0, 1e-3), batchnorm=(False, True), epochs=3, batch_size=64,
            min_steps=0, max_widenings=0, solver="sgd", seed=3)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    """An I-JEPA encoder 64 wide, 4 deep, on 16 px digits."""
    path = make_checkpoint("ijepa", tmp_path_factory.mktemp("ckpt") / "tiny.pth.tar", embed_dim=64, depth=4,
                           num_heads=2, patch_size=4, img_size=16)
    return ModelSpec(ckpt=str(path), num_heads=2).load()


def streamed(backbone: Backbone, split: str, mode: str, augment) -> StreamedFeatures:
    """digits/``split`` through the backbone in the loop; ``augment`` transforms training batches."""
    images = build_dataset("digits", split, transform=lambda image: image)
    return StreamedFeatures(backbone, images, np.asarray(images.targets), mode,
                            eval_transform(backbone.image_size, "digits"), augment, CPU)


@pytest.mark.parametrize("mode", ["avgpool", "avgpool4"])
def test_the_backbone_in_the_loop_on_unaugmented_images_gives_the_cached_recipes_numbers(backbone, mode) -> None:
    """With the evaluation transform as the 'augmentation', the streamed SGD grid sees the cached
    features in the same batches from the same start, so it ends with the same numbers."""
    options = ExtractOptions(device="cpu", use_cache=False, progress=False)
    train, test = (split_features(backbone, "digits", split, mode, options).features for split in ("train", "test"))
    config = LinearConfig(**GRID, standardize=False)
    cached = linear_probe(train.features, train.labels, test.features, test.labels, config, device="cpu",
                          progress=False)
    identity = eval_transform(backbone.image_size, "digits")
    loop = augmented_probe(streamed(backbone, "train", mode, identity), streamed(backbone, "test", mode, None),
                           replace(config, augment="crop"), 10, device="cpu", progress=False)
    scored = [(m.name, m.coords, m.value) for m in loop.metrics if m.name != "train_loss"]
    expected = [(m.name, m.coords, m.value) for m in cached.metrics if m.name != "train_loss"]
    assert [(name, coords) for name, coords, _ in scored] == [(name, coords) for name, coords, _ in expected]
    assert [value for *_, value in scored] == pytest.approx([value for *_, value in expected], abs=1e-6)
    assert loop.chosen["lr"] == cached.chosen["lr"] and loop.training["steps"] == cached.training["steps"]


def test_streamed_standardisation_uses_the_statistics_of_the_unaugmented_rows(backbone) -> None:
    options = ExtractOptions(device="cpu", use_cache=False, progress=False)
    train = split_features(backbone, "digits", "train", "avgpool", options).features
    rows = np.arange(0, 1437, 3)
    mine = streamed_standardizer(streamed(backbone, "train", "avgpool", None), rows, CPU, (0, 1))
    reference = fit_standardizer(torch.from_numpy(train.features[rows]))
    torch.testing.assert_close(mine.mean, reference.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mine.scale, reference.scale, rtol=1e-4, atol=1e-5)


def test_lars_scales_each_heads_weight_step_by_its_trust_ratio() -> None:
    """One step of LARS (MAE's linprobe: momentum buffer of the trust-scaled step, biases plain
    SGD), written out by hand with autograd's gradient."""
    torch.manual_seed(0)
    features, targets = torch.randn(8, 3), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    init = torch.randn(3, 2) * 0.5
    grid = [{"lr": 0.4, "wd": 0.05, "batchnorm": False}]
    trainer = HeadTrainer(grid, init.clone(), Optimiser("lars", momentum=0.9, trust_coefficient=1e-3))
    trainer.update(features, targets, 0, plan_steps(8, batch_size=8, epochs=1, min_steps=0))
    weight = init.clone().requires_grad_(True)
    bias = torch.zeros(2, requires_grad=True)
    torch.nn.functional.cross_entropy(features @ weight + bias, targets).backward()
    step = weight.grad + 0.05 * init
    trust = 1e-3 * init.norm() / step.norm()
    lr = 0.4 * 8 / 256  # the schedule is 1 at step 0
    torch.testing.assert_close(trainer.heads.head(0)[0], init - lr * trust * step, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(trainer.heads.head(0)[1], -lr * bias.grad, rtol=1e-5, atol=1e-7)


def test_warmup_rises_linearly_then_the_cosine_falls_to_zero() -> None:
    optimiser = Optimiser(warmup_steps=4)
    assert [optimiser.schedule(s, 12) for s in (0, 2, 4)] == [0.0, 0.5, 1.0]
    assert optimiser.schedule(8, 12) == pytest.approx(0.5) and optimiser.schedule(12, 12) == pytest.approx(0.0)
    assert Optimiser().schedule(3, 12) == pytest.approx(0.5 * (1 + np.cos(np.pi * 3 / 12)))


def command(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["linear", "--ckpt", str(ckpt), "--data", "digits", "--augment", "crop", "--solver", "sgd", "--epochs", "2",
            "--min-steps", "0", "--lrs", "0.1,1", "--wds", "0", "--batchnorm", "bn", "--results-dir", str(out),
            "--quiet", "--device", "cpu", "--no-cache", *extra]


def test_the_command_trains_on_augmented_images_and_records_the_recipe(tmp_path: Path) -> None:
    ckpt = make_checkpoint("ijepa", tmp_path / "tiny.pth.tar", embed_dim=64, depth=2, num_heads=2, img_size=16)
    done = run_main("jepa-eval", command(ckpt, tmp_path / "out", "--optimizer", "lars", "--warmup-epochs", "1"))
    assert done.code == 0, done.message
    assert "the backbone in the loop, training batches augmented (crop)" in done.message
    (record,) = load_records(tmp_path / "out")
    assert record.params["augment"] == "crop" and record.params["optimizer"] == "lars"
    assert record.params["solver_ran"] == "sgd" and record.summary["augment"] == "crop"
    assert record.summary["standardized_on"] == 1295 and record.dataset.n_train == 1437  # 90% of digits/train
    assert record.summary["steps"] == 2 * (1295 // 256)


def test_augmenting_an_exact_solver_or_k_shot_draws_is_refused(tmp_path: Path) -> None:
    ckpt = make_checkpoint("ijepa", tmp_path / "tiny.pth.tar", embed_dim=64, depth=2, num_heads=2, img_size=16)
    refused = run_main("jepa-eval", [*command(ckpt, tmp_path / "out")[:-4], "--solver", "lbfgs", "--quiet"])
    assert refused.code == 2 and "augment 'crop' with solver 'lbfgs'" in refused.message
    assert not (tmp_path / "out").exists() or load_records(tmp_path / "out") == []


@pytest.mark.slow
def test_two_processes_train_the_augmented_grid_to_one_processes_numbers(tmp_path: Path) -> None:
    """Gloo on two CPU processes: each embeds half of every (seeded, augmented) batch and the
    gradients, standardisation statistics and counts are summed."""
    ckpt = make_checkpoint("ijepa", tmp_path / "tiny.pth.tar", embed_dim=64, depth=2, num_heads=2, img_size=16)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    launchers = {"two": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                         "--master_port", "29535", "-m", "jepa_eval"],
                 "one": [sys.executable, "-m", "jepa_eval"]}
    for name, launcher in launchers.items():
        subprocess.run([*launcher, *command(ckpt, tmp_path / name)], check=True, env=env, capture_output=True,
                       timeout=600)
    (two,), (one,) = load_records(tmp_path / "two"), load_records(tmp_path / "one")
    assert [(m.name, m.coords) for m in two.metrics] == [(m.name, m.coords) for m in one.metrics]
    for ours, alone in zip(two.metrics, one.metrics):
        assert ours.value == pytest.approx(alone.value, rel=1e-3, abs=1e-3), ours.name
