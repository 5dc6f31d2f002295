"""Independent re-implementations of the official ViT forward passes, for equivalence tests.

Each function reads a state dict in its official layout (the key names the official code
stores, with their prefixes) and computes, in float32, what the official model class outputs
for the same weights. Everything is written out by hand, with no timm and no jepa_eval code:
the patch embedding as a matrix product over pixel patches, LayerNorm (eps 1e-6) from its
formula, attention as softmax(q k^T · head_dim^-1/2) v, exact GELU. These follow the facts in
shared/reference/FACTS.md and the official sources (facebookresearch/ijepa, dino, mae, dinov2):
pre-norm blocks ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``, then a final ``norm``.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor

State = dict[str, Tensor]
EPS = 1e-6


def official_sincos_pos_embed(embed_dim: int, grid: int) -> Tensor:
    """I-JEPA / MAE fixed position embedding for a grid×grid patch grid, [grid², embed_dim].

    Token t = (row r, column c) in raster order. Channels [0, D/2) encode c and [D/2, D)
    encode r, each as [sin(p·ω_k) for k] + [cos(p·ω_k) for k], ω_k = 10000^(-k/(D/4)).
    """
    quarter = embed_dim // 4
    omega = 10000.0 ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    rows = torch.arange(grid, dtype=torch.float64).repeat_interleave(grid)
    cols = torch.arange(grid, dtype=torch.float64).repeat(grid)

    def encode(position: Tensor) -> Tensor:
        angle = position[:, None] * omega[None, :]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


def layer_norm(x: Tensor, state: State, name: str) -> Tensor:
    """LayerNorm over the last dim: (x - mean) / sqrt(biased var + 1e-6) · weight + bias."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * state[f"{name}.weight"] + state[f"{name}.bias"]


def linear(x: Tensor, state: State, name: str) -> Tensor:
    return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]


def patch_embed(images: Tensor, state: State, name: str) -> Tensor:
    """Conv2d(kernel = stride = p) as a product over patches: [B, 3, H, W] -> [B, H/p·W/p, D]."""
    weight = state[f"{name}.weight"]
    dim, channels, p, _ = weight.shape
    b, _, h, w = images.shape
    patches = images.reshape(b, channels, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(b, (h // p) * (w // p), channels * p * p)
    return patches @ weight.reshape(dim, -1).T + state[f"{name}.bias"]


def attention(x: Tensor, state: State, name: str, num_heads: int) -> Tensor:
    b, n, c = x.shape
    head_dim = c // num_heads
    qkv = linear(x, state, f"{name}.qkv").reshape(b, n, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = torch.softmax((q @ k.transpose(-2, -1)) * head_dim**-0.5, dim=-1)
    return linear((weights @ v).transpose(1, 2).reshape(b, n, c), state, f"{name}.proj")


def block(x: Tensor, state: State, name: str, num_heads: int) -> Tensor:
    """Pre-norm block; multiplies by ``ls1.gamma`` / ``ls2.gamma`` when present (DINOv2)."""
    y = attention(layer_norm(x, state, f"{name}.norm1"), state, f"{name}.attn", num_heads)
    if f"{name}.ls1.gamma" in state:
        y = y * state[f"{name}.ls1.gamma"]
    x = x + y
    y = linear(F.gelu(linear(layer_norm(x, state, f"{name}.norm2"), state, f"{name}.mlp.fc1")),
               state, f"{name}.mlp.fc2")
    if f"{name}.ls2.gamma" in state:
        y = y * state[f"{name}.ls2.gamma"]
    return x + y


def block_names(state: State, prefix: str) -> list[str]:
    """Block key prefixes in depth order: ``{prefix}blocks.{i}`` or DINOv2's chunked
    ``{prefix}blocks.{chunk}.{i}`` (i counts over the whole depth)."""
    found = {}
    for key in state:
        match = re.match(rf"({re.escape(prefix)}blocks\.(?:\d+\.)?(\d+))\.norm1\.weight$", key)
        if match:
            found[int(match[2])] = match[1]
    return [found[i] for i in sorted(found)]


def transformer(x: Tensor, state: State, prefix: str, num_heads: int) -> Tensor:
    for name in block_names(state, prefix):
        x = block(x, state, name, num_heads)
    return x


def ijepa_encoder(state: State, images: Tensor, num_heads: int, prefix: str = "module.") -> Tensor:
    """I-JEPA VisionTransformer.forward without masks: final-norm patch tokens [B, N, D]."""
    x = patch_embed(images, state, f"{prefix}patch_embed.proj") + state[f"{prefix}pos_embed"]
    return layer_norm(transformer(x, state, prefix, num_heads), state, f"{prefix}norm")


def dino_vit(state: State, images: Tensor, num_heads: int, prefix: str = "backbone.") -> Tensor:
    """DINO VisionTransformer: [CLS; patches] + pos_embed, blocks, norm -> [B, 1+N, D].

    The official ``forward`` returns token 0 of this.
    """
    x = patch_embed(images, state, f"{prefix}patch_embed.proj")
    x = torch.cat([state[f"{prefix}cls_token"].expand(x.shape[0], -1, -1), x], dim=1)
    x = x + state[f"{prefix}pos_embed"]
    return layer_norm(transformer(x, state, prefix, num_heads), state, f"{prefix}norm")


def mae_encoder(state: State, images: Tensor, num_heads: int, prefix: str = "") -> Tensor:
    """MAE forward_encoder with nothing masked: patches + pos_embed[1:], then the CLS token
    plus pos_embed[0] in front, blocks, norm -> [B, 1+N, D]."""
    pos = state[f"{prefix}pos_embed"]
    x = patch_embed(images, state, f"{prefix}patch_embed.proj") + pos[:, 1:]
    cls = (state[f"{prefix}cls_token"] + pos[:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    return layer_norm(transformer(x, state, prefix, num_heads), state, f"{prefix}norm")


def mae_finetuned_pooled(state: State, images: Tensor, num_heads: int, prefix: str = "") -> Tensor:
    """MAE models_vit with global_pool: mean of the patch tokens (CLS left out), then
    fc_norm -> [B, D] (the features its head reads)."""
    x = patch_embed(images, state, f"{prefix}patch_embed.proj")
    x = torch.cat([state[f"{prefix}cls_token"].expand(x.shape[0], -1, -1), x], dim=1)
    x = transformer(x + state[f"{prefix}pos_embed"], state, prefix, num_heads)
    return layer_norm(x[:, 1:].mean(dim=1), state, f"{prefix}fc_norm")


def dinov2_vit(state: State, images: Tensor, num_heads: int, prefix: str = "backbone.") -> Tensor:
    """DinoVisionTransformer.forward_features: [CLS; patches] + pos_embed, then the register
    tokens (no position) inserted after CLS, layer-scaled blocks, norm -> [B, 1+R+N, D]."""
    x = patch_embed(images, state, f"{prefix}patch_embed.proj")
    x = torch.cat([state[f"{prefix}cls_token"].expand(x.shape[0], -1, -1), x], dim=1)
    x = x + state[f"{prefix}pos_embed"]
    registers = state.get(f"{prefix}register_tokens")
    if registers is not None:
        x = torch.cat([x[:, :1], registers.expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
    return layer_norm(transformer(x, state, prefix, num_heads), state, f"{prefix}norm")
