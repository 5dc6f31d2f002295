"""Patch tokens for probes that pool them: which tokens, the float16 token cache and its room
checks, and the backbone in the loop, which gives the cached tokens and numbers on un-augmented
images and augments training batches only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers_ckpt import make_checkpoint
from helpers_features import tiny_vit
from jepa_eval.backbones.backbone import Backbone
from jepa_eval.backbones.baselines import RawPixels
from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data import build_dataset, eval_transform
from jepa_eval.features import token_splits
from jepa_eval.features.cache import FeatureCache
from jepa_eval.features.modes import check_tokens, patch_tokens
from jepa_eval.features.splits import ExtractOptions, split_features
from jepa_eval.features.stream import StreamedTokens, train_transform
from jepa_eval.features.token_splits import split_tokens
from jepa_eval.features.tokens import TokenLayout
from jepa_eval.protocols.attentive import AttentiveConfig, attentive_probe

CPU = torch.device("cpu")
SPLITS = ["train", "test"]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    """An I-JEPA encoder 64 wide, 3 deep, 2 heads, on 16 px digits (patch 4: 16 tokens)."""
    path = make_checkpoint("ijepa", tmp_path_factory.mktemp("ckpt") / "tiny.pth.tar", embed_dim=64, depth=3,
                           num_heads=2, patch_size=4, img_size=16)
    return ModelSpec(ckpt=str(path), num_heads=2).load()


def options(cache: Path | None) -> ExtractOptions:
    return ExtractOptions(device="cpu", cache_dir=str(cache) if cache else None, use_cache=cache is not None,
                          progress=False)


def streamed(backbone: Backbone, split: str, augment) -> StreamedTokens:
    """The backbone in the loop on digits/``split``; ``augment`` transforms its training batches."""
    images = build_dataset("digits", split, transform=lambda image: image)
    return StreamedTokens(backbone, images, np.asarray(images.targets), TokenLayout(),
                          eval_transform(backbone.image_size, "digits"), augment, CPU)


def one_ulp(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal within one float16 step (the extraction's batches differ from the probe's)."""
    torch.testing.assert_close(actual, expected, rtol=2**-10, atol=0)


# -- which tokens ----------------------------------------------------------------------------------

def test_patch_tokens_are_timms_normed_block_outputs_without_cls_and_registers() -> None:
    model = tiny_vit(reg_tokens=2)  # CLS + 2 registers, 16 patches, depth 4
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        last3 = model.forward_intermediates(images, indices=3, norm=True, output_fmt="NLC", intermediates_only=True)
        assert patch_tokens(model, images).shape == (3, 16, 32)
        torch.testing.assert_close(patch_tokens(model, images), last3[-1])
        torch.testing.assert_close(patch_tokens(model, images, 3, "concat"), torch.cat(last3, dim=2))
        torch.testing.assert_close(patch_tokens(model, images, 3, "mean"), torch.stack(last3).mean(dim=0))


def test_a_model_without_patch_tokens_or_with_too_few_blocks_is_refused() -> None:
    with pytest.raises(JepaEvalError, match="no patch tokens.*raw-pixel baseline"):
        check_tokens(RawPixels(32), 1, "concat")
    with pytest.raises(JepaEvalError, match=r"1 <= blocks <= 4.*blocks 5"):
        check_tokens(tiny_vit(), 5, "concat")


# -- the token cache --------------------------------------------------------------------------------

def test_tokens_are_cached_as_float16_memory_maps_under_a_key_that_names_their_layout(
        backbone: Backbone, tmp_path: Path) -> None:
    train, test = split_tokens(backbone, "digits", SPLITS, TokenLayout(), options(tmp_path))
    assert (train.size, test.size, train.cache_hit) == (1437, 360, False)
    tokens = train.source.tokens
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.float16 and tokens.shape == (1437, 16, 64)
    data = build_dataset("digits", "train", image_size=16)
    np.testing.assert_array_equal(train.source.labels, data.targets)
    with torch.no_grad():
        direct = patch_tokens(backbone.model, torch.stack([data[i][0] for i in range(5)])).half()
    one_ulp(torch.from_numpy(tokens[:5].copy()), direct)

    entries = FeatureCache(tmp_path).entries()
    assert sorted((e.rows, e.dim, e.parts["mode"], e.parts["tokens"]["stored"]) for e in entries) == [
        (360, 64, "tokens", "float16"), (1437, 64, "tokens", "float16")]
    again, _ = split_tokens(backbone, "digits", SPLITS, TokenLayout(), options(tmp_path))
    assert again.cache_hit and np.array_equal(again.source.tokens, tokens)

    [mean2] = split_tokens(backbone, "digits", ["test"], TokenLayout(2, "mean"), options(tmp_path))
    [concat2] = split_tokens(backbone, "digits", ["test"], TokenLayout(2, "concat"), options(tmp_path))
    assert not mean2.cache_hit and not concat2.cache_hit and len(FeatureCache(tmp_path).entries()) == 4
    assert mean2.source.shape == (360, 16, 64) and concat2.source.shape == (360, 16, 128)
    last, previous = concat2.source.tokens[..., 64:].astype(np.float32), concat2.source.tokens[..., :64]
    np.testing.assert_array_equal(last, test.source.tokens.astype(np.float32))  # the last block, second
    np.testing.assert_allclose(mean2.source.tokens, (last + previous) / 2, rtol=2**-9, atol=1e-3)

    pooled = split_features(backbone, "digits", "test", "avgpool", options(tmp_path)).features.features
    np.testing.assert_allclose(test.source.tokens.astype(np.float32).mean(axis=1), pooled, atol=2e-3)


def test_tokens_that_would_not_fit_are_refused_with_the_size_they_need_before_anything_is_written(
        backbone: Backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needed = (1437 + 360) * 16 * 64 * 2 + (1437 + 360) * 8  # float16 tokens and int64 labels
    monkeypatch.setattr(token_splits, "free_disk", lambda folder: 10_000)
    with pytest.raises(JepaEvalError, match="would not fit on the disk") as disk:
        split_tokens(backbone, "digits", SPLITS, TokenLayout(), options(tmp_path / "cache"))
    assert f"{needed:,} bytes" in str(disk.value) and "(10,000 bytes) free" in str(disk.value)
    assert not (tmp_path / "cache").exists()

    monkeypatch.setattr(token_splits, "available_memory", lambda: 10_000)
    with pytest.raises(JepaEvalError, match="would not fit in memory") as memory:
        split_tokens(backbone, "digits", SPLITS, TokenLayout(), options(None))
    assert f"{needed:,} bytes" in str(memory.value) and "cache is off" in str(memory.value)

    monkeypatch.setattr(token_splits, "free_disk", lambda folder: 10**12)
    split_tokens(backbone, "digits", SPLITS, TokenLayout(), options(tmp_path / "cache"))
    monkeypatch.setattr(token_splits, "free_disk", lambda folder: 0)
    hits = split_tokens(backbone, "digits", SPLITS, TokenLayout(), options(tmp_path / "cache"))
    assert all(part.cache_hit for part in hits)  # cached tokens need no room


# -- the backbone in the loop -----------------------------------------------------------------------

def test_the_backbone_in_the_loop_gives_the_cached_batches_and_numbers_on_unaugmented_images(
        backbone: Backbone, tmp_path: Path) -> None:
    cached_train, cached_test = split_tokens(backbone, "digits", SPLITS, TokenLayout(), options(tmp_path))
    loop_train = streamed(backbone, "train", eval_transform(16, "digits"))  # "augmented" by the eval transform
    loop_test = streamed(backbone, "test", None)
    rows = np.arange(1437)
    for (x_loop, y_loop), (x_cache, y_cache) in zip(
            loop_train.batches(rows, 200, train=True, seed=3).epoch(1),
            cached_train.source.batches(rows, 200, train=True, seed=3).epoch(1)):
        assert torch.equal(y_loop, y_cache)
        one_ulp(x_loop, x_cache)
    config = AttentiveConfig(learning_rates=(1e-3, 1e-2), weight_decays=(1e-3,), epochs=2, batch_size=128)
    from_cache = attentive_probe(cached_train.source, cached_test.source, config, device=CPU)
    in_loop = attentive_probe(loop_train, loop_test, config, device=CPU)
    assert in_loop.top1 == from_cache.top1 and in_loop.top5 == from_cache.top5
    assert [p["val_top1"] for p in in_loop.grid] == [p["val_top1"] for p in from_cache.grid]
    assert [p["train_loss"] for p in in_loop.grid] == pytest.approx([p["train_loss"] for p in from_cache.grid],
                                                                    rel=1e-5)
    assert from_cache.top1 > 20.0  # the probes learned: ten digits, chance is 10%


def test_augmentation_changes_training_batches_only_and_repeats_with_the_seed(
        backbone: Backbone, tmp_path: Path) -> None:
    [cached] = split_tokens(backbone, "digits", ["train"], TokenLayout(), options(tmp_path))
    rows = np.arange(300)
    for augment in ("crop", "vjepa"):
        source = streamed(backbone, "train", train_transform(augment, 16))
        first = [x for x, _ in source.batches(rows, 100, train=True, seed=1).epoch(0)]
        again = [x for x, _ in source.batches(rows, 100, train=True, seed=1).epoch(0)]
        later = [x for x, _ in source.batches(rows, 100, train=True, seed=1).epoch(1)]
        plain = [x for x, _ in cached.source.batches(rows, 100, train=True, seed=1).epoch(0)]
        assert all(torch.equal(a, b) for a, b in zip(first, again))
        assert not torch.allclose(first[0], later[0]) and not torch.allclose(first[0], plain[0])
        held_out = [x for x, _ in source.batches(rows, 100, train=False).epoch(0)]
        for x, (unaugmented, _) in zip(held_out, cached.source.batches(rows, 100, train=False).epoch(0)):
            one_ulp(x, unaugmented)
    with pytest.raises(ValueError, match="never augmented"):
        streamed(backbone, "test", None).batches(rows, 100, train=True)


def test_the_augmentations_are_the_papers() -> None:
    crop = [type(t).__name__ for t in train_transform("crop", 32).transforms]
    assert crop == ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    vjepa = train_transform("vjepa", 32).transforms
    names = [type(t).__name__ for t in vjepa]
    assert names[:3] == ["RandomResizedCropAndInterpolation", "RandomHorizontalFlip", "AutoAugment"]
    erasing = vjepa[-1]
    assert type(erasing).__name__ == "RandomErasing" and erasing.probability == 0.25 and erasing.mode == "pixel"
