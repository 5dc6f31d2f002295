"""Feature modes: which tokens of which blocks of a timm ViT make one image's feature vector.

A *mode* says which tokens of which blocks make one image's feature vector (D = model width):

- ``avgpool``: mean of the last block's patch tokens after the final norm, [D] (I-JEPA);
- ``avgpool4``: the same for each of the last 4 blocks, concatenated in block order, [4·D];
- ``cls``: the CLS token after the final norm, [D];
- ``cls4``: the normed CLS token of each of the last 4 blocks, concatenated, [4·D];
- ``cls+avgpool``: the normed CLS token then the avg-pooled patch tokens, [2·D] (DINO ViT-B);
- ``pixels``: the normalised input pixels themselves, [3·H·W], only from :class:`~jepa_eval.backbones.baselines.RawPixels`
  (the "raw pixels as features" baseline).

Prefix tokens (CLS and registers, ``model.num_prefix_tokens``) never enter an average.

:func:`patch_tokens` keeps the patch tokens themselves, for probes that pool them (attentive).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from jepa_eval.backbones.baselines import RawPixels
from jepa_eval.core.errors import JepaEvalError

FEATURE_MODES = ("avgpool", "avgpool4", "cls", "cls4", "cls+avgpool", "pixels")
TOKEN_POOLING = ("concat", "mean")


_BLOCKS_USED = {"avgpool": 1, "avgpool4": 4, "cls": 1, "cls4": 4, "cls+avgpool": 1}


_CLS_MODES = ("cls", "cls4", "cls+avgpool")


_WIDTH_FACTOR = {"avgpool": 1, "avgpool4": 4, "cls": 1, "cls4": 4, "cls+avgpool": 2}


def check_mode(model: VisionTransformer | RawPixels, mode: str) -> None:
    """Raise :class:`JepaEvalError` unless ``mode`` can be computed on ``model``."""
    if mode not in FEATURE_MODES:
        raise JepaEvalError(f"unknown feature mode {mode!r}",
                            expected="one of " + ", ".join(FEATURE_MODES), found=repr(mode))
    if isinstance(model, RawPixels) or mode == "pixels":
        if not (isinstance(model, RawPixels) and mode == "pixels"):
            raise JepaEvalError("the 'pixels' mode and the raw-pixel baseline go together",
                                expected="--ckpt pixels:SIZE with mode pixels",
                                found=f"mode {mode!r} on a {type(model).__name__}")
        return
    if not isinstance(model, VisionTransformer):
        raise JepaEvalError("features can only be taken from a timm VisionTransformer",
                            expected="timm.models.vision_transformer.VisionTransformer",
                            found=type(model).__name__)
    if mode in _CLS_MODES and getattr(model, "cls_token", None) is None:
        raise JepaEvalError(f"feature mode {mode!r} needs a CLS token, and this model has none",
                            expected="a model with a class token (MAE, DINO, DINOv2, most timm ViTs)",
                            found="a model without a class token (such as an I-JEPA encoder)",
                            hint="use --mode avgpool or avgpool4")
    if _BLOCKS_USED[mode] > len(model.blocks):
        raise JepaEvalError(f"feature mode {mode!r} needs the last {_BLOCKS_USED[mode]} blocks",
                            expected=f"a model with at least {_BLOCKS_USED[mode]} blocks",
                            found=f"{len(model.blocks)} blocks")


def feature_dim(model: VisionTransformer, mode: str) -> int:
    """Length D' of one feature vector of ``mode`` on ``model``."""
    check_mode(model, mode)
    if isinstance(model, RawPixels):
        return 3 * model.image_size**2
    return _WIDTH_FACTOR[mode] * int(model.embed_dim)


def embed(model: VisionTransformer, images: torch.Tensor, mode: str) -> torch.Tensor:
    """Features of ``images`` [B, 3, H, W] (normalised pixels) in ``mode``: [B, D'].

    One pass through the blocks, keeping the outputs of the last blocks the mode needs, each
    passed through the model's final norm. The model must be in eval mode.
    """
    check_mode(model, mode)
    check_eval(model)
    _check_images(model, images)
    if isinstance(model, RawPixels):
        return model(images)
    normed = _last_blocks_normed(model, images, _BLOCKS_USED[mode])
    prefix = model.num_prefix_tokens
    if mode in ("avgpool", "avgpool4"):
        return torch.cat([tokens[:, prefix:].mean(dim=1) for tokens in normed], dim=1)
    if mode in ("cls", "cls4"):
        return torch.cat([tokens[:, 0] for tokens in normed], dim=1)
    last = normed[-1]
    return torch.cat([last[:, 0], last[:, prefix:].mean(dim=1)], dim=1)


def _check_images(model: VisionTransformer | RawPixels, images: torch.Tensor) -> None:
    """Raise unless ``images`` is an RGB batch [B, 3, H, W] of the size a ViT ``model`` takes."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise JepaEvalError("images must be a batch of RGB tensors",
                            expected="a tensor of shape [B, 3, H, W]", found=f"shape {list(images.shape)}")
    if isinstance(model, RawPixels):
        return
    expected_hw = tuple(model.patch_embed.img_size)
    if not getattr(model, "dynamic_img_size", False) and tuple(images.shape[-2:]) != expected_hw:
        raise JepaEvalError("the image size does not match the model's",
                            expected=f"{expected_hw[0]}x{expected_hw[1]} pixels",
                            found=f"{images.shape[-2]}x{images.shape[-1]} pixels",
                            hint="pass --image-size to match the checkpoint")


def _last_blocks_normed(model: VisionTransformer, images: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Tokens [B, T, D] of the last ``count`` blocks, each through ``model.norm``, in block order."""
    x = model.patch_embed(images)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    x = model.norm_pre(x)
    first_kept = len(model.blocks) - count
    kept = []
    for index, block in enumerate(model.blocks):
        x = block(x)
        if index >= first_kept:
            kept.append(model.norm(x))
    return kept


def check_tokens(model: torch.nn.Module, blocks: int, pooling: str) -> None:
    """Raise :class:`JepaEvalError` unless ``model`` has the patch tokens of its last ``blocks``
    blocks to give, combined by ``pooling`` ('concat' or 'mean')."""
    if not isinstance(model, VisionTransformer):
        pixels = isinstance(model, RawPixels)
        raise JepaEvalError("this model has no patch tokens to pool",
                            expected="a ViT backbone (a checkpoint, timm:NAME or random:PATH)",
                            found="the raw-pixel baseline (pixels:SIZE)" if pixels else f"a {type(model).__name__}",
                            hint="probes that pool patch tokens need a transformer's tokens")
    if pooling not in TOKEN_POOLING or not 1 <= blocks <= len(model.blocks):
        raise JepaEvalError("the patch tokens asked for do not exist in this model",
                            expected=f"1 <= blocks <= {len(model.blocks)} (its depth) and block pooling "
                                     f"in {TOKEN_POOLING}",
                            found=f"blocks {blocks}, pooling {pooling!r}")


def token_width(model: VisionTransformer, blocks: int, pooling: str) -> int:
    """Width D' of one patch token of :func:`patch_tokens`: blocks x D concatenated, else D."""
    check_tokens(model, blocks, pooling)
    return int(model.embed_dim) * (blocks if pooling == "concat" else 1)


def token_count(model: VisionTransformer) -> int:
    """Patch tokens T of one image: the patch grid (prefix tokens excluded)."""
    return int(model.patch_embed.num_patches)


def patch_tokens(model: VisionTransformer, images: torch.Tensor, blocks: int = 1,
                 pooling: str = "concat") -> torch.Tensor:
    """Patch tokens of ``images`` [B, 3, H, W] (normalised pixels) after the final norm: [B, T, D'].

    T = the patch grid (prefix tokens excluded). ``blocks`` = 1: the last block, D' = D. More:
    the last ``blocks`` blocks, each through the final norm, either side by side along the
    channels in block order, earliest first (``pooling='concat'``, D' = blocks x D), or
    averaged (``'mean'``, as AIM averages its last 6 blocks, D' = D). The model must be in eval mode.
    """
    check_tokens(model, blocks, pooling)
    check_eval(model)
    _check_images(model, images)
    prefix = model.num_prefix_tokens
    normed = [tokens[:, prefix:] for tokens in _last_blocks_normed(model, images, blocks)]
    if pooling == "mean":
        return torch.stack(normed).mean(dim=0)
    return torch.cat(normed, dim=2)


def check_eval(model: torch.nn.Module) -> None:
    if model.training:
        raise JepaEvalError("the backbone is in training mode while computing features",
                            expected="model.eval() (dropout and drop-path off)",
                            found="model.training == True", hint="call model.eval() first")
