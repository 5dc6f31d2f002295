"""Building timm Vision Transformers and their fixed 2-D sin-cos position embeddings.

Every backbone jepa-eval evaluates, and the encoder the bundled trainer trains, is a
``timm.models.vision_transformer.VisionTransformer`` built here, so that parameter names are the
timm ones (``patch_embed.proj``, ``blocks.{i}.attn.qkv``, ``norm``...), which are also the
official I-JEPA encoder's names.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from jepa_eval.errors import JepaEvalError

# name -> (width, depth, heads); the giant model has MLP ratio 48/11.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
    "vit_huge": (1280, 32, 16),
    "vit_giant": (1408, 40, 16),
}
VIT_MLP_RATIOS: dict[str, float] = {"vit_giant": 48 / 11}


def _sincos_1d(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    """[len(positions), embed_dim]: sin of positions·ω in the first half, cos in the second."""
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_pos_embed_2d(embed_dim: int, grid_size: int | tuple[int, int],
                        cls_token: bool = False) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, [1, H·W (+1), embed_dim], float32.

    The first half of the channels encodes the row index, the second half the column index,
    each as 1-D sin-cos with base 10000 (the I-JEPA / MAE formula). Tokens are in raster order.
    A leading zero row is added for a CLS token when ``cls_token``.
    """
    if embed_dim % 4:
        raise JepaEvalError("sin-cos position embeddings need a width divisible by 4",
                            found=f"embed_dim={embed_dim}")
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    grid_r, grid_c = np.meshgrid(np.arange(rows, dtype=np.float64),
                                 np.arange(cols, dtype=np.float64), indexing="ij")
    emb = np.concatenate([_sincos_1d(embed_dim // 2, grid_r), _sincos_1d(embed_dim // 2, grid_c)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, embed_dim)), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


def build_vit(embed_dim: int, depth: int, num_heads: int, patch_size: int, img_size: int, *,
              class_token: bool, mlp_ratio: float = 4.0, num_reg_tokens: int = 0,
              init_values: float | None = None, fixed_sincos: bool = False,
              global_pool: str | None = None) -> VisionTransformer:
    """A headless timm ViT (``num_classes=0``), LayerNorm eps 1e-6, qkv bias, fused attention.

    ``fixed_sincos`` fills ``pos_embed`` with :func:`sincos_pos_embed_2d` and freezes it (the
    I-JEPA encoder). ``global_pool`` defaults to 'token' with a CLS token, else 'avg'.
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
        reg_tokens=num_reg_tokens, no_embed_class=False, init_values=init_values,
        global_pool=global_pool or ("token" if class_token else "avg"), fc_norm=False,
        num_classes=0, norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )
    if fixed_sincos:
        grid = img_size // patch_size
        model.pos_embed.data.copy_(sincos_pos_embed_2d(embed_dim, grid, cls_token=class_token))
        model.pos_embed.requires_grad_(False)
    return model
