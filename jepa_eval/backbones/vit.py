"""Building timm Vision Transformers and their fixed 2-D sin-cos position embeddings.

Every backbone jepa-eval evaluates, and the encoder the bundled trainer trains, is a
``timm.models.vision_transformer.VisionTransformer`` built here, so that parameter names are the
timm ones (``patch_embed.proj``, ``blocks.{i}.attn.qkv``, ``norm``...), which are also the
official I-JEPA encoder's names.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from jepa_eval.core.errors import JepaEvalError

class VitSize(NamedTuple):
    """An official ViT size: width D, depth, attention heads and MLP ratio."""

    width: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0


VIT_SIZES: dict[str, VitSize] = {
    "vit_tiny": VitSize(192, 12, 3),
    "vit_small": VitSize(384, 12, 6),
    "vit_base": VitSize(768, 12, 12),
    "vit_large": VitSize(1024, 24, 16),
    "vit_huge": VitSize(1280, 32, 16),
    "vit_giant": VitSize(1408, 40, 16, 48 / 11),
}
"""The official sizes (I-JEPA, MAE, DINO, DINOv2 and timm use the same ones)."""

STANDARD_HEADS: dict[int, int] = {size.width: size.heads for size in VIT_SIZES.values()}
"""Heads of each official width: what a checkpoint's width implies when nothing else says it."""


def _sincos_1d(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    """[len(positions), embed_dim]: sin of positions·ω in the first half, cos in the second.

    ω_k = 10000^(-k / (embed_dim/2)) for k = 0 .. embed_dim/2 - 1.
    """
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_pos_embed_2d(embed_dim: int, grid_size: int | tuple[int, int],
                        cls_token: bool = False) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, [1, H·W (+1), embed_dim], float32.

    ``grid_size`` is the patch grid, an int for a square one or (rows H, columns W). Tokens are
    in raster order (row by row). As in the official I-JEPA / MAE code, the first half of the
    channels encodes the token's column index and the second half its row index, each as 1-D
    sin-cos with base 10000 (their meshgrid puts the width first). A leading zero row is added
    for a CLS token when ``cls_token``.
    """
    if embed_dim % 4:
        raise JepaEvalError("sin-cos position embeddings need a width divisible by 4",
                            expected="embed_dim a multiple of 4", found=f"embed_dim={embed_dim}")
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    row_index, col_index = np.meshgrid(np.arange(rows, dtype=np.float64),
                                       np.arange(cols, dtype=np.float64), indexing="ij")
    emb = np.concatenate([_sincos_1d(embed_dim // 2, col_index),
                          _sincos_1d(embed_dim // 2, row_index)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, embed_dim)), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


def build_vit(embed_dim: int, depth: int, num_heads: int, patch_size: int, img_size: int, *,
              class_token: bool, mlp_ratio: float = 4.0, num_reg_tokens: int = 0,
              init_values: float | None = None, no_embed_class: bool = False,
              fc_norm: bool = False, fixed_sincos: bool = False,
              global_pool: str | None = None) -> VisionTransformer:
    """A headless timm ViT (``num_classes=0``), LayerNorm eps 1e-6, qkv bias, fused attention.

    ``init_values`` (not None) adds layer scale (``ls1.gamma``/``ls2.gamma``, DINOv2).
    ``no_embed_class`` keeps the CLS and register tokens out of ``pos_embed`` ([1, H·W, D]
    instead of [1, 1 + H·W, D]). ``fc_norm`` puts the final LayerNorm after average pooling
    instead of on every token (MAE fine-tuned models). ``fixed_sincos`` fills ``pos_embed``
    with :func:`sincos_pos_embed_2d` and freezes it (the I-JEPA encoder). ``global_pool``
    defaults to 'token' with a CLS token, else 'avg'.
    """
    if embed_dim % num_heads:
        raise JepaEvalError("the number of attention heads must divide the width",
                            expected=f"a divisor of {embed_dim}", found=f"num_heads={num_heads}")
    if img_size % patch_size:
        raise JepaEvalError("the image size must be a multiple of the patch size",
                            expected=f"a multiple of {patch_size}", found=f"image size {img_size}")
    model = VisionTransformer(
        img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
        num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, class_token=class_token,
        reg_tokens=num_reg_tokens, no_embed_class=no_embed_class, init_values=init_values,
        global_pool=global_pool or ("token" if class_token else "avg"), fc_norm=fc_norm,
        num_classes=0, norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )
    if fixed_sincos:
        grid = img_size // patch_size
        with_cls = class_token and not no_embed_class
        model.pos_embed.data.copy_(sincos_pos_embed_2d(embed_dim, grid, cls_token=with_cls))
        model.pos_embed.requires_grad_(False)
    return model


def vit_arch(model: VisionTransformer) -> dict[str, Any]:
    """The shape of ``model`` as :func:`build_vit` keyword arguments (plus nothing else).

    ``init_values`` is 1.0 when the model has layer scale: the loaded gammas replace it.
    """
    first = model.blocks[0]
    return {
        "embed_dim": model.embed_dim,
        "depth": len(model.blocks),
        "num_heads": first.attn.num_heads,
        "patch_size": model.patch_embed.patch_size[0],
        "img_size": model.patch_embed.img_size[0],
        "class_token": model.cls_token is not None,
        "mlp_ratio": first.mlp.fc1.out_features / model.embed_dim,
        "num_reg_tokens": model.num_reg_tokens,
        "init_values": 1.0 if hasattr(first.ls1, "gamma") else None,
        "no_embed_class": model.no_embed_class,
        "fc_norm": not isinstance(model.fc_norm, nn.Identity),
        "global_pool": model.global_pool,
    }
