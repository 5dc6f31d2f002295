"""Checkpoint loading: family detection, strict loading, safe unpickling, and features equal
to independent re-implementations of the official forward passes (tests/reference_vits.py)."""

from __future__ import annotations

import argparse
import hashlib
import math
import pathlib
import pickle
import warnings

import pytest
import torch
from helpers_ckpt import make_checkpoint
from reference_vits import (dino_vit, dinov2_vit, ijepa_encoder, mae_encoder, mae_finetuned_pooled,
                            official_sincos_pos_embed)

from jepa_eval.backbones.backbone import Backbone
from jepa_eval.backbones.files import list_families
from jepa_eval.backbones.load import load_backbone
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.backbones.vit import VIT_SIZES, build_vit, sincos_pos_embed_2d

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _images(seed: int = 0, n: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _raw(path: pathlib.Path) -> dict:
    """The file as written (our own test file, so a full unpickle is safe)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def _tokens(backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return backbone.model.forward_features(images)


# --- sin-cos position embeddings and the ViT builder -------------------------------------


def test_sincos_pos_embed_matches_the_official_formula() -> None:
    for dim, grid in [(32, 4), (64, 7)]:
        ours = sincos_pos_embed_2d(dim, grid)
        assert ours.shape == (1, grid * grid, dim)
        torch.testing.assert_close(ours[0], official_sincos_pos_embed(dim, grid), rtol=0, atol=1e-6)


def test_sincos_first_half_encodes_the_column_and_second_half_the_row() -> None:
    emb = sincos_pos_embed_2d(8, 3)[0]  # ω = (1, 1e-2) per half
    row0_col1, row1_col0 = emb[1], emb[3]
    assert row0_col1[0].item() == pytest.approx(math.sin(1.0))  # column 1 in channel 0
    assert row0_col1[4].item() == pytest.approx(0.0)  # row 0 in channel 4 (sin 0)
    assert row1_col0[0].item() == pytest.approx(0.0)
    assert row1_col0[4].item() == pytest.approx(math.sin(1.0))


def test_sincos_with_cls_token_prepends_a_zero_row() -> None:
    emb = sincos_pos_embed_2d(16, 2, cls_token=True)
    assert emb.shape == (1, 5, 16)
    assert torch.equal(emb[0, 0], torch.zeros(16))
    torch.testing.assert_close(emb[0, 1:], sincos_pos_embed_2d(16, 2)[0])


def test_sincos_rejects_a_width_not_divisible_by_four() -> None:
    with pytest.raises(JepaEvalError, match="divisible by 4"):
        sincos_pos_embed_2d(30, 4)


def test_build_vit_makes_a_headless_ijepa_encoder_with_frozen_sincos() -> None:
    model = build_vit(32, 2, 2, 8, 32, class_token=False, fixed_sincos=True)
    assert model.cls_token is None and model.num_classes == 0 and model.global_pool == "avg"
    assert model.norm.eps == 1e-6 and model.blocks[0].attn.qkv.bias is not None
    assert not model.pos_embed.requires_grad
    torch.testing.assert_close(model.pos_embed, sincos_pos_embed_2d(32, 4))
    assert model(_images()).shape == (3, 32)


def test_build_vit_refuses_heads_that_do_not_divide_the_width() -> None:
    with pytest.raises(JepaEvalError, match="divide"):
        build_vit(32, 1, 3, 8, 32, class_token=True)


def test_vit_sizes_are_the_official_width_depth_heads() -> None:
    assert VIT_SIZES["vit_huge"] == (1280, 32, 16, 4.0) and VIT_SIZES["vit_giant"] == (1408, 40, 16, 48 / 11)
    assert all(size.width % size.heads == 0 for size in VIT_SIZES.values())


# --- detection -----------------------------------------------------------------------------


def test_families_are_registered_in_detection_order() -> None:
    assert list_families() == ["ijepa", "dinov2", "dino", "mae", "timm"]


@pytest.mark.parametrize(("family", "layout", "extra", "detected", "key", "cls", "mode"), [
    ("ijepa", "train", {}, "ijepa", "target_encoder", False, "avgpool"),
    ("ijepa", "released", {}, "ijepa", None, False, "avgpool"),
    ("mae", "train", {}, "mae", "model", True, "cls"),
    ("mae", "released", {}, "mae", "model", True, "cls"),
    ("mae", "finetuned", {}, "mae", "model", True, "avgpool"),
    ("dino", "train", {}, "dino", "teacher", True, "cls"),
    ("dino", "released", {}, "timm", None, True, "cls"),
    ("dinov2", "train", {}, "dinov2", "teacher", True, "cls"),
    ("dinov2", "released", {}, "dinov2", None, True, "cls"),
    ("dinov2", "train", {"num_reg_tokens": 4, "chunk_size": 1}, "dinov2", "teacher", True, "cls"),
    ("timm", "train", {}, "timm", None, True, "cls"),
])
def test_each_layout_is_detected_and_loaded_in_eval_mode(tmp_path, family, layout, extra, detected,
                                                         key, cls, mode) -> None:
    path = make_checkpoint(family, tmp_path / "ckpt.pth", layout=layout, **extra)
    backbone = load_backbone(str(path), num_heads=2)
    assert (backbone.family, backbone.ckpt_key, backbone.has_cls) == (detected, key, cls)
    assert backbone.default_mode == mode
    assert backbone.image_size == 32 and backbone.arch["patch_size"] == 8
    assert backbone.arch["embed_dim"] == 32 and backbone.arch["depth"] == 2
    assert backbone.arch["num_reg_tokens"] == extra.get("num_reg_tokens", 0)
    assert not backbone.model.training
    assert all(p.dtype == torch.float32 for p in backbone.model.parameters())
    assert backbone.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert str(path) in backbone.describe()


def test_describe_says_family_entry_and_architecture(tmp_path) -> None:
    path = make_checkpoint("dinov2", tmp_path / "teacher_checkpoint.pth", num_reg_tokens=4)
    text = load_backbone(str(path), num_heads=2).describe()
    for part in ("DINOv2", "['teacher']", "width 32", "depth 2", "2 heads", "patch 8", "4x4 grid",
                 "4 register tokens", "layer scale"):
        assert part in text


def test_ignored_keys_are_heads_decoders_and_mask_tokens_by_name(tmp_path) -> None:
    mae = load_backbone(str(make_checkpoint("mae", tmp_path / "mae.pth")), num_heads=2)
    assert "mask_token" in mae.ignored_keys and "decoder_pred.weight" in mae.ignored_keys
    assert all(k.startswith(("decoder_", "mask_token")) for k in mae.ignored_keys)
    dino = load_backbone(str(make_checkpoint("dino", tmp_path / "dino.pth")), num_heads=2)
    assert sorted(dino.ignored_keys) == sorted(k for k in _raw(tmp_path / "dino.pth")["teacher"]
                                               if k.startswith("head."))
    dinov2 = load_backbone(str(make_checkpoint("dinov2", tmp_path / "v2.pth")), num_heads=2)
    assert "backbone.mask_token" in dinov2.ignored_keys
    assert {k.split(".")[0] for k in dinov2.ignored_keys} == {"backbone", "dino_head", "ibot_head"}


def test_an_unknown_layout_is_refused_with_its_keys(tmp_path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(2)}, "step": 3}, path)
    with pytest.raises(JepaEvalError, match="no checkpoint family") as err:
        load_backbone(str(path))
    assert "state_dict" in str(err.value) and "step" in str(err.value)


# --- equivalence with the official forward passes -----------------------------------------


def test_ijepa_target_encoder_tokens_and_avgpool_equal_the_official_encoder(tmp_path) -> None:
    path = make_checkpoint("ijepa", tmp_path / "jepa-ep50.pth.tar")
    backbone, x = load_backbone(str(path), num_heads=2), _images()
    reference = ijepa_encoder(_raw(path)["target_encoder"], x, num_heads=2)
    torch.testing.assert_close(_tokens(backbone, x), reference, **TOL)
    with torch.no_grad():
        pooled = backbone.model.forward_head(backbone.model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(pooled, reference.mean(dim=1), **TOL)


def test_ijepa_ckpt_key_encoder_selects_the_context_encoder(tmp_path) -> None:
    path = make_checkpoint("ijepa", tmp_path / "jepa-latest.pth.tar")
    backbone, x = load_backbone(str(path), ckpt_key="encoder", num_heads=2), _images()
    raw = _raw(path)
    assert backbone.ckpt_key == "encoder"
    torch.testing.assert_close(_tokens(backbone, x), ijepa_encoder(raw["encoder"], x, 2), **TOL)
    assert not torch.allclose(_tokens(backbone, x), ijepa_encoder(raw["target_encoder"], x, 2))


def test_released_ijepa_encoder_equals_the_official_encoder(tmp_path) -> None:
    path = make_checkpoint("ijepa", tmp_path / "encoder.pth", layout="released")
    x = _images(1)
    torch.testing.assert_close(_tokens(load_backbone(str(path), num_heads=2), x),
                               ijepa_encoder(_raw(path), x, 2, prefix=""), **TOL)


def test_dino_teacher_and_student_equal_the_official_vit(tmp_path) -> None:
    path = make_checkpoint("dino", tmp_path / "checkpoint.pth")
    raw, x = _raw(path), _images(2)
    teacher = load_backbone(str(path), num_heads=2)
    reference = dino_vit(raw["teacher"], x, 2)
    torch.testing.assert_close(_tokens(teacher, x), reference, **TOL)
    with torch.no_grad():
        cls = teacher.model.forward_head(teacher.model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(cls, reference[:, 0], **TOL)
    student = load_backbone(str(path), ckpt_key="student", num_heads=2)
    torch.testing.assert_close(_tokens(student, x), dino_vit(raw["student"], x, 2, prefix="module.backbone."),
                               **TOL)


def test_released_dino_backbone_equals_the_official_vit(tmp_path) -> None:
    path = make_checkpoint("dino", tmp_path / "dino_deitsmall8_pretrain.pth", layout="released")
    x = _images(3)
    torch.testing.assert_close(_tokens(load_backbone(str(path), num_heads=2), x),
                               dino_vit(_raw(path), x, 2, prefix=""), **TOL)


@pytest.mark.parametrize("layout", ["train", "released"])
def test_mae_encoder_equals_the_official_forward_encoder(tmp_path, layout) -> None:
    path = make_checkpoint("mae", tmp_path / "mae.pth", layout=layout)
    x = _images(4)
    torch.testing.assert_close(_tokens(load_backbone(str(path), num_heads=2), x),
                               mae_encoder(_raw(path)["model"], x, 2), **TOL)


def test_mae_finetuned_pooled_features_equal_fc_norm_of_the_mean_patch_token(tmp_path) -> None:
    path = make_checkpoint("mae", tmp_path / "mae-ft.pth", layout="finetuned")
    backbone, x = load_backbone(str(path), num_heads=2), _images(5)
    assert backbone.arch["fc_norm"] and backbone.arch["global_pool"] == "avg"
    with torch.no_grad():
        pooled = backbone.model.forward_head(backbone.model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(pooled, mae_finetuned_pooled(_raw(path)["model"], x, 2), **TOL)


@pytest.mark.parametrize("extra", [{}, {"num_reg_tokens": 4}, {"num_reg_tokens": 2, "chunk_size": 1}])
def test_dinov2_tokens_equal_the_official_forward_features(tmp_path, extra) -> None:
    path = make_checkpoint("dinov2", tmp_path / "teacher_checkpoint.pth", **extra)
    backbone, x = load_backbone(str(path), num_heads=2), _images(6)
    assert backbone.arch["init_values"] is not None
    torch.testing.assert_close(_tokens(backbone, x), dinov2_vit(_raw(path)["teacher"], x, 2), **TOL)


def test_released_dinov2_backbone_equals_the_official_forward_features(tmp_path) -> None:
    path = make_checkpoint("dinov2", tmp_path / "dinov2_vits14_reg4.pth", layout="released",
                           num_reg_tokens=4)
    x = _images(7)
    torch.testing.assert_close(_tokens(load_backbone(str(path), num_heads=2), x),
                               dinov2_vit(_raw(path), x, 2, prefix=""), **TOL)


def test_ijepa_features_of_a_real_photograph_equal_the_official_encoder(tmp_path, shared_data) -> None:
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    photo = sorted((shared_data / "reference-images").rglob("*.JPEG"))[0]
    image = Image.open(photo).convert("RGB").resize((32, 32), Image.BICUBIC)
    x = (pil_to_tensor(image).float() / 255.0 - 0.45)[None] / 0.25
    path = make_checkpoint("ijepa", tmp_path / "jepa.pth.tar")
    torch.testing.assert_close(_tokens(load_backbone(str(path), num_heads=2), x),
                               ijepa_encoder(_raw(path)["target_encoder"], x, 2), **TOL)


# --- strictness and options ----------------------------------------------------------------


def test_a_missing_backbone_weight_is_refused_by_name(tmp_path) -> None:
    raw = _raw(make_checkpoint("ijepa", tmp_path / "a.pth"))
    del raw["target_encoder"]["module.blocks.1.mlp.fc2.bias"]
    torch.save(raw, tmp_path / "b.pth")
    with pytest.raises(JepaEvalError, match="partial load") as err:
        load_backbone(str(tmp_path / "b.pth"), num_heads=2)
    assert "blocks.1.mlp.fc2.bias" in str(err.value)


def test_an_unexpected_weight_is_refused_by_name(tmp_path) -> None:
    raw = _raw(make_checkpoint("dino", tmp_path / "a.pth"))
    raw["teacher"]["backbone.blocks.0.attn.q_norm.weight"] = torch.ones(16)
    torch.save(raw, tmp_path / "b.pth")
    with pytest.raises(JepaEvalError, match="partial load") as err:
        load_backbone(str(tmp_path / "b.pth"), num_heads=2)
    assert "blocks.0.attn.q_norm.weight" in str(err.value)


def test_a_prefix_is_stripped_only_at_the_start_of_keys(tmp_path) -> None:
    raw = _raw(make_checkpoint("dino", tmp_path / "a.pth"))
    raw["teacher"]["backbone.blocks.0.module.backbone.x"] = torch.ones(1)
    torch.save(raw, tmp_path / "b.pth")
    with pytest.raises(JepaEvalError, match="partial load") as err:
        load_backbone(str(tmp_path / "b.pth"), num_heads=2)
    assert "blocks.0.module.backbone.x" in str(err.value)


def test_a_wrong_ckpt_key_lists_the_available_keys(tmp_path) -> None:
    path = make_checkpoint("ijepa", tmp_path / "jepa.pth.tar")
    with pytest.raises(JepaEvalError, match="'teacher'") as err:
        load_backbone(str(path), ckpt_key="teacher", num_heads=2)
    for key in ("encoder", "predictor", "target_encoder"):
        assert f"'{key}'" in str(err.value)


def test_num_heads_must_be_given_for_a_non_standard_width(tmp_path) -> None:
    path = make_checkpoint("ijepa", tmp_path / "jepa.pth.tar")
    with pytest.raises(JepaEvalError, match="num_heads"):
        load_backbone(str(path))


def test_num_heads_must_divide_the_width(tmp_path) -> None:
    path = make_checkpoint("ijepa", tmp_path / "jepa.pth.tar")
    with pytest.raises(JepaEvalError, match="divide") as err:
        load_backbone(str(path), num_heads=3)
    assert "num_heads=3" in str(err.value)


@pytest.mark.parametrize(("width", "heads"), [(192, 3), (128, 2)])
def test_heads_follow_the_standard_widths_or_width_over_64(tmp_path, width, heads) -> None:
    path = make_checkpoint("dino", tmp_path / "d.pth", embed_dim=width, depth=1, num_heads=heads,
                           patch_size=16, layout="released")
    assert load_backbone(str(path)).arch["num_heads"] == heads


def test_num_heads_overrides_the_standard_width(tmp_path) -> None:
    path = make_checkpoint("dino", tmp_path / "d.pth", embed_dim=192, depth=1, patch_size=16,
                           layout="released")
    assert load_backbone(str(path), num_heads=6).arch["num_heads"] == 6


def test_image_size_resamples_the_position_embedding_and_says_so(tmp_path) -> None:
    path = make_checkpoint("dino", tmp_path / "d.pth")
    backbone = load_backbone(str(path), num_heads=2, image_size=48)
    assert backbone.image_size == 48 and backbone.model.pos_embed.shape == (1, 37, 32)
    assert "resampled" in backbone.describe() and "4x4" in backbone.describe()
    with torch.no_grad():
        assert backbone.model.forward_features(_images(size=48)).shape == (3, 37, 32)
    same = load_backbone(str(path), num_heads=2, image_size=32)
    assert same.notes == []


def test_image_size_must_be_a_multiple_of_the_patch(tmp_path) -> None:
    path = make_checkpoint("ijepa", tmp_path / "j.pth")
    with pytest.raises(JepaEvalError, match="multiple of the patch size"):
        load_backbone(str(path), num_heads=2, image_size=36)


# --- reading files safely ------------------------------------------------------------------


class _TouchOnUnpickle:
    """Unpickling this creates ``path``: the stand-in for a malicious checkpoint."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "pwned"
    raw = _raw(make_checkpoint("ijepa", tmp_path / "a.pth"))
    raw["extra"] = _TouchOnUnpickle(marker)
    torch.save(raw, tmp_path / "evil.pth")
    with pytest.raises(JepaEvalError, match="trust") as err:
        load_backbone(str(tmp_path / "evil.pth"), num_heads=2)
    assert "evil.pth" in str(err.value) and "Found a pickled getattr" in str(err.value)
    assert not marker.exists()


def test_trust_checkpoint_is_the_only_way_past_and_warns(tmp_path) -> None:
    marker = tmp_path / "pwned"
    raw = _raw(make_checkpoint("ijepa", tmp_path / "a.pth"))
    raw["extra"] = _TouchOnUnpickle(marker)
    torch.save(raw, tmp_path / "evil.pth")
    with pytest.warns(UserWarning, match="weights_only=False"):
        backbone = load_backbone(str(tmp_path / "evil.pth"), num_heads=2, trust_checkpoint=True)
    assert marker.exists() and backbone.family == "ijepa"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_legacy_pickle_that_runs_code_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    with open(tmp_path / "legacy.pth", "wb") as handle:
        pickle.dump({"model": _TouchOnUnpickle(marker)}, handle)
    with pytest.raises(JepaEvalError, match="trust"):
        load_backbone(str(tmp_path / "legacy.pth"))
    assert not marker.exists()


def test_a_dino_file_with_namespace_args_loads_without_trust(tmp_path) -> None:
    path = make_checkpoint("dino", tmp_path / "checkpoint.pth")
    assert isinstance(_raw(path)["args"], argparse.Namespace)
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only refuses it
        torch.load(path, weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_backbone(str(path), num_heads=2).family == "dino"


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all\n", "truncated"])
def test_empty_truncated_or_foreign_files_are_errors_naming_the_path(tmp_path, content) -> None:
    path = tmp_path / "bad.pth"
    if content == "truncated":
        whole = make_checkpoint("ijepa", tmp_path / "good.pth").read_bytes()
        content = whole[: len(whole) // 2]
    path.write_bytes(content)
    with pytest.raises(JepaEvalError) as err:
        load_backbone(str(path), num_heads=2)
    assert str(path) in str(err.value)


def test_a_missing_file_is_an_error(tmp_path) -> None:
    with pytest.raises(JepaEvalError, match="no such file"):
        load_backbone(str(tmp_path / "absent.pth"))


# --- timm models ---------------------------------------------------------------------------


def test_timm_random_init_is_reproducible_from_the_seed() -> None:
    a = load_backbone("timm:test_vit", image_size=32, seed=1)
    b = load_backbone("timm:test_vit", image_size=32, seed=1)
    c = load_backbone("timm:test_vit", image_size=32, seed=2)
    assert torch.equal(a.model.blocks[0].attn.qkv.weight, b.model.blocks[0].attn.qkv.weight)
    assert not torch.equal(a.model.blocks[0].attn.qkv.weight, c.model.blocks[0].attn.qkv.weight)
    assert a.sha256 == "random:test_vit:seed1" and a.family == "timm"
    assert a.arch["num_heads"] == 2 and a.image_size == 32 and a.has_cls


def test_timm_weights_file_loads_strictly_into_the_named_model(tmp_path) -> None:
    source = load_backbone("timm:test_vit", image_size=32, seed=3).model
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({**state, "module.head.weight": torch.zeros(10, 64)}, tmp_path / "w.pth")
    loaded = load_backbone("timm:test_vit", image_size=32, weights=str(tmp_path / "w.pth"))
    assert loaded.ignored_keys == ["module.head.weight"]
    assert loaded.sha256 == hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()
    x = _images(8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.forward_features(x), source.forward_features(x))


def test_timm_weights_with_missing_keys_are_refused(tmp_path) -> None:
    state = load_backbone("timm:test_vit", image_size=32).model.state_dict()
    del state["norm.weight"]
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(JepaEvalError, match="norm.weight"):
        load_backbone("timm:test_vit", image_size=32, weights=str(tmp_path / "w.pth"))


def test_timm_rejects_unknown_names_non_vits_and_num_heads() -> None:
    with pytest.raises(JepaEvalError, match="cannot build"):
        load_backbone("timm:no_such_model_xyz")
    with pytest.raises(JepaEvalError, match="not a timm VisionTransformer"):
        load_backbone("timm:test_vit_relpos")
    with pytest.raises(JepaEvalError, match="num_heads"):
        load_backbone("timm:test_vit", num_heads=4)


def test_weights_apply_only_to_timm_specs(tmp_path) -> None:
    path = make_checkpoint("ijepa", tmp_path / "j.pth")
    with pytest.raises(JepaEvalError, match="timm:MODEL_NAME"):
        load_backbone(str(path), weights=str(path))
