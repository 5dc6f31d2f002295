"""Feature modes, extraction and exported feature files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from helpers_features import (IMAGE_SIZE, NumberedImages, PhotoFolder, distributed_worker, load_rank,
                              reference_rows, tiny_vit)
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.backbones.baselines import RawPixels
from jepa_eval.core.devices import compute_dtype
from jepa_eval.features.extract import extract_features
from jepa_eval.features.featureset import FeatureSet, export_paths
from jepa_eval.features.modes import FEATURE_MODES, embed, feature_dim

WIDTH = 32


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))


def _normed_blocks(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Every block's tokens through the final norm, from timm's own intermediates API."""
    intermediates = model.forward_intermediates(x, norm=True, output_fmt="NLC", intermediates_only=True,
                                                return_prefix_tokens=True, output_dict=True)
    prefix = intermediates["image_intermediates_prefix"]
    return [torch.cat([p, t], dim=1) for p, t in zip(prefix, intermediates["image_intermediates"])]


@pytest.mark.parametrize("reg_tokens", [0, 4])
def test_avgpool_is_the_mean_of_normed_patch_tokens_without_prefix_tokens(images, reg_tokens):
    model = tiny_vit(reg_tokens=reg_tokens)
    with torch.no_grad():
        expected = model.forward_features(images)[:, model.num_prefix_tokens:].mean(1)
        got = embed(model, images, "avgpool")
    assert got.shape == (3, WIDTH)
    torch.testing.assert_close(got, expected)


def test_avgpool_works_on_a_model_without_cls_token_like_ijepa(images):
    model = tiny_vit(class_token=False)
    with torch.no_grad():
        torch.testing.assert_close(embed(model, images, "avgpool"), model.forward_features(images).mean(1))


def test_cls_is_token_zero_after_the_final_norm(images):
    model = tiny_vit(reg_tokens=2)
    with torch.no_grad():
        torch.testing.assert_close(embed(model, images, "cls"), model.forward_features(images)[:, 0])


def test_cls_plus_avgpool_concatenates_cls_then_patch_mean(images):
    model = tiny_vit()
    with torch.no_grad():
        tokens = model.forward_features(images)
        got = embed(model, images, "cls+avgpool")
    assert got.shape == (3, 2 * WIDTH)
    torch.testing.assert_close(got, torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=1))


def test_four_block_modes_concatenate_the_last_four_normed_blocks_in_order(images):
    model = tiny_vit(depth=5)
    with torch.no_grad():
        blocks = _normed_blocks(model, images)[-4:]
        avg4, cls4 = embed(model, images, "avgpool4"), embed(model, images, "cls4")
    assert avg4.shape == cls4.shape == (3, 4 * WIDTH)
    torch.testing.assert_close(avg4, torch.cat([b[:, 1:].mean(1) for b in blocks], dim=1))
    torch.testing.assert_close(cls4, torch.cat([b[:, 0] for b in blocks], dim=1))
    torch.testing.assert_close(avg4[:, -WIDTH:], embed(model, images, "avgpool"))


def test_multi_block_modes_run_each_block_once(images):
    model = tiny_vit()
    calls = []
    for block in model.blocks:
        block.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        embed(model, images, "avgpool4")
    assert len(calls) == len(model.blocks)


@pytest.mark.parametrize("mode", [m for m in FEATURE_MODES if m != "pixels"])
def test_feature_dim_matches_the_embedded_width(images, mode):
    model = tiny_vit()
    with torch.no_grad():
        assert embed(model, images, mode).shape[1] == feature_dim(model, mode)


def test_raw_pixels_are_the_flattened_input_and_only_in_pixels_mode(images):
    pixels = RawPixels(images.shape[-1]).eval()
    assert torch.equal(embed(pixels, images, "pixels"), images.flatten(1))
    assert feature_dim(pixels, "pixels") == images[0].numel()
    with pytest.raises(JepaEvalError, match="go together"):
        embed(tiny_vit(), images, "pixels")
    with pytest.raises(JepaEvalError, match="go together"):
        embed(pixels, images, "avgpool")


@pytest.mark.parametrize("mode", ["cls", "cls4", "cls+avgpool"])
def test_cls_modes_on_a_model_without_cls_token_are_refused(images, mode):
    with pytest.raises(JepaEvalError, match="needs a CLS token"):
        embed(tiny_vit(class_token=False), images, mode)


def test_bad_mode_too_few_blocks_and_wrong_image_size_are_refused(images):
    with pytest.raises(JepaEvalError, match="unknown feature mode"):
        embed(tiny_vit(), images, "max")
    with pytest.raises(JepaEvalError, match="last 4 blocks"):
        embed(tiny_vit(depth=2), images, "avgpool4")
    with pytest.raises(JepaEvalError, match="image size"):
        embed(tiny_vit(), torch.zeros(1, 3, 64, 64), "avgpool")


def test_a_model_in_training_mode_is_refused(images):
    model = tiny_vit().train()
    with pytest.raises(JepaEvalError, match="training mode"):
        embed(model, images, "avgpool")
    with pytest.raises(JepaEvalError, match="training mode"):
        extract_features(model, NumberedImages(2), "avgpool", progress=False)


def test_extraction_keeps_dataset_order_and_labels_across_batches():
    model, dataset = tiny_vit(), NumberedImages(11)
    result = extract_features(model, dataset, "cls+avgpool", batch_size=4, device="cpu", progress=False)
    assert result.features.dtype == np.float32 and result.labels.dtype == np.int64
    assert result.features.shape == (11, 2 * WIDTH)
    assert result.labels.tolist() == dataset.targets
    np.testing.assert_allclose(result.features, reference_rows(model, dataset, "cls+avgpool"), atol=1e-5)
    assert result.meta["mode"] == "cls+avgpool" and result.meta["rows"] == 11
    assert result.meta["compute_dtype"] == "float32"


@pytest.mark.shared_data
def test_real_photographs_give_finite_features_in_folder_order(shared_data):
    dataset = PhotoFolder(shared_data / "reference-images")
    assert len(dataset) == 16
    model = tiny_vit(class_token=False)
    result = extract_features(model, dataset, "avgpool4", batch_size=5, device="cpu", progress=False)
    assert result.features.shape == (16, 4 * WIDTH) and np.isfinite(result.features).all()
    assert result.labels.tolist() == dataset.targets
    np.testing.assert_allclose(result.features, reference_rows(model, dataset, "avgpool4"), atol=1e-5)


def test_extraction_runs_without_gradients_and_leaves_the_model_in_eval_mode():
    model = tiny_vit()
    result = extract_features(model, NumberedImages(3), "avgpool", device="cpu", progress=False)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert len(result) == 3


def test_nan_features_stop_extraction_naming_the_rows():
    model = tiny_vit()
    with torch.no_grad():
        model.blocks[0].mlp.fc2.bias.fill_(float("nan"))
    with pytest.raises(JepaEvalError, match=r"3 of 3 rows.*first dataset indices: 0, 1, 2"):
        extract_features(model, NumberedImages(5), "avgpool", batch_size=3, progress=False)


class _OneBadImage(NumberedImages):
    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        return (image * float("inf") if index == 4 else image), label


def test_an_infinite_input_row_is_reported_by_its_dataset_index():
    with pytest.raises(JepaEvalError, match=r"1 of 3 rows.*indices: 4\b"):
        extract_features(tiny_vit(), _OneBadImage(6), "avgpool", batch_size=3, progress=False)


def test_compute_dtype_is_bf16_on_cuda_and_float32_on_cpu():
    assert compute_dtype(torch.device("cuda")) == "bfloat16"
    assert compute_dtype(torch.device("cpu")) == "float32"


def test_featureset_save_and_load_round_trip_as_a_documented_file_pair(tmp_path):
    original = FeatureSet(np.arange(6, dtype=np.float32).reshape(3, 2), np.array([2, 0, 1]), {"mode": "cls"})
    paths = original.save(tmp_path / "feats.npy")
    assert [p.name for p in paths] == ["feats.npy", "feats.labels.npy", "feats.meta.json"]
    np.testing.assert_array_equal(np.load(tmp_path / "feats.labels.npy"), [2, 0, 1])
    loaded = FeatureSet.load(tmp_path / "feats.npy")
    np.testing.assert_array_equal(loaded.features, original.features)
    assert loaded.labels.dtype == np.int64 and loaded.meta == {"mode": "cls"}


def test_featureset_refuses_mismatched_rows_and_bad_file_names(tmp_path):
    with pytest.raises(JepaEvalError, match="do not fit"):
        FeatureSet(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(JepaEvalError, match="end in .npy"):
        export_paths(tmp_path / "feats.pt")
    with pytest.raises(JepaEvalError, match="missing"):
        FeatureSet.load(tmp_path / "absent.npy")


@pytest.mark.slow  # two fresh interpreters importing torch: ~9 s idle, 40-50 s on a busy 2-core machine
def test_two_gloo_ranks_gather_features_in_dataset_order_on_rank_zero(tmp_path):
    n = 7
    mp.spawn(distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path), n), nprocs=2, join=True)
    gathered, shard = load_rank(tmp_path, 0), load_rank(tmp_path, 1)
    single = extract_features(tiny_vit(), NumberedImages(n), "avgpool", device="cpu", progress=False)
    assert gathered.meta["gathered"] and gathered.meta["world_size"] == 2
    np.testing.assert_allclose(gathered.features, single.features, atol=1e-5)
    assert gathered.labels.tolist() == single.labels.tolist()
    assert shard.meta["indices"] == [1, 3, 5] and not shard.meta["gathered"]
    np.testing.assert_allclose(shard.features, single.features[1::2], atol=1e-5)

