"""Plain re-implementations of the reference attentive probes, for the tests.

Structured as their sources are (facebookresearch/jepa and vjepa2 ``AttentiveClassifier`` with
``CrossAttentionBlock`` / ``Block``, facebookresearch/capi ``AttnPoolClassifier``,
billpsomas/efficient-probing ``EfficientProbing`` + BatchNorm1d + Linear): standard nn.Linear /
nn.LayerNorm modules that compute the keys and values of every token and an explicit softmax.
Also a plain single-probe training loop with torch.optim.AdamW, clip_grad_norm_ and V-JEPA's
schedulers, and :func:`our_layout`, which views a reference's parameters in our names and shapes.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v per head: q [B, n, D], k and v [B, N, D] -> [B, n, D]."""
    batch, width = q.shape[0], q.shape[2] // heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(batch, x.shape[1], heads, width).permute(0, 2, 1, 3)

    weights = (split(q) @ split(k).transpose(-2, -1) / math.sqrt(width)).softmax(dim=-1)
    return (weights @ split(v)).permute(0, 2, 1, 3).reshape(batch, q.shape[1], heads * width)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(multi_head_attention(q, k, v, self.heads))


class Block(nn.Module):
    """Pre-norm ViT block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, out_proj: bool) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, 2 * dim, bias=True)
        self.proj = nn.Linear(dim, dim) if out_proj else None

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        k, v = self.kv(x).chunk(2, dim=-1)
        out = multi_head_attention(self.q(q), k, v, self.heads)
        return out if self.proj is None else self.proj(out)


class CrossAttentionBlock(nn.Module):
    """LayerNorm on the tokens, cross-attention, residual on the query, LayerNorm + MLP residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, out_proj: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.xattn = CrossAttention(dim, heads, out_proj)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


class VJEPAClassifier(nn.Module):
    """V-JEPA (no self blocks, cross-attention with output projection) or V-JEPA 2 (ViT blocks
    over the tokens first, cross-attention without output projection); one query."""

    def __init__(self, dim: int, num_classes: int, heads: int, mlp_ratio: float = 4.0,
                 self_blocks: int = 0, out_proj: bool = True) -> None:
        super().__init__()
        self.query_tokens = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(self_blocks))
        self.cross_attention_block = CrossAttentionBlock(dim, heads, mlp_ratio, out_proj)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        q = self.cross_attention_block(self.query_tokens.expand(x.shape[0], -1, -1), x)
        return self.linear(q.squeeze(1))


class CAPIClassifier(nn.Module):
    """The query used directly, kv Linear, heads of width 64, no norm, no MLP, then Linear."""

    def __init__(self, dim: int, num_classes: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query_token = nn.Parameter(torch.zeros(dim))
        self.kv = nn.Linear(dim, 2 * dim)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, v = self.kv(x).chunk(2, dim=-1)
        q = self.query_token.expand(x.shape[0], 1, -1)
        return self.linear(multi_head_attention(q, k, v, self.heads).squeeze(1))


class EfficientProbingClassifier(nn.Module):
    """Q queries, no q/k projections, one head; query j reads the j-th D/Q slice of the values."""

    def __init__(self, dim: int, num_classes: int, queries: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, queries, dim))
        self.v = nn.Linear(dim, dim, bias=False)
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        queries = self.cls_token.shape[1]
        weights = (self.cls_token @ x.transpose(1, 2) / math.sqrt(dim)).softmax(dim=-1)  # [B, Q, N]
        values = self.v(x).reshape(batch, length, queries, dim // queries).permute(0, 2, 1, 3)
        pooled = (weights.unsqueeze(2) @ values).reshape(batch, dim)  # [B, Q, 1, D/Q] -> [B, D]
        return self.linear(self.bn(pooled))


def reference_probe(variant: str, dim: int, num_classes: int, heads: int, queries: int = 32,
                    self_blocks: int = 3) -> nn.Module:
    if variant == "vjepa":
        return VJEPAClassifier(dim, num_classes, heads)
    if variant == "vjepa2":
        return VJEPAClassifier(dim, num_classes, heads, self_blocks=self_blocks, out_proj=False)
    if variant == "capi":
        return CAPIClassifier(dim, num_classes, heads)
    return EfficientProbingClassifier(dim, num_classes, queries)


def _linear(name: str, layer: nn.Linear) -> dict[str, torch.Tensor]:
    views = {f"{name}_w": layer.weight.T}
    if layer.bias is not None:
        views[f"{name}_b"] = layer.bias
    return views


def _norm(name: str, layer: nn.LayerNorm) -> dict[str, torch.Tensor]:
    return {f"{name}_w": layer.weight, f"{name}_b": layer.bias}


def _kv(prefix: str, layer: nn.Linear) -> dict[str, torch.Tensor]:
    dim = layer.in_features
    return {f"{prefix}k_w": layer.weight[:dim].T, f"{prefix}k_b": layer.bias[:dim],
            f"{prefix}v_w": layer.weight[dim:].T, f"{prefix}v_b": layer.bias[dim:]}


def _mlp(prefix: str, norm2: nn.LayerNorm, mlp: Mlp) -> dict[str, torch.Tensor]:
    return {**_norm(f"{prefix}norm2", norm2), **_linear(f"{prefix}fc1", mlp.fc1),
            **_linear(f"{prefix}fc2", mlp.fc2)}


def our_layout(variant: str, ref: nn.Module) -> dict[str, torch.Tensor]:
    """Views of ``ref``'s parameters under our names and in our shapes (matrices [in, out]).

    They share storage with ``ref``: copying into them sets the reference's weights.
    """
    if variant == "ep":
        return {"query": ref.cls_token[0], **_linear("v", ref.v), **_linear("head", ref.linear)}
    if variant == "capi":
        return {"query": ref.query_token.view(1, -1), **_kv("", ref.kv), **_linear("head", ref.linear)}
    views = {"query": ref.query_tokens[0]}
    for i, block in enumerate(ref.blocks):
        views.update({**_norm(f"block{i}_norm1", block.norm1), **_linear(f"block{i}_qkv", block.attn.qkv),
                      **_linear(f"block{i}_proj", block.attn.proj),
                      **_mlp(f"block{i}_", block.norm2, block.mlp)})
    cross = ref.cross_attention_block
    views.update({**_norm("cross_norm1", cross.norm1), **_linear("cross_q", cross.xattn.q),
                  **_kv("cross_", cross.xattn.kv), **_mlp("cross_", cross.norm2, cross.mlp)})
    if cross.xattn.proj is not None:
        views.update(_linear("cross_proj", cross.xattn.proj))
    return {**views, **_linear("head", ref.linear)}


class WarmupCosineSchedule:
    """V-JEPA's: step() before each iteration; linear warm-up, then cosine to final_lr."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, start_lr: float,
                 ref_lr: float, final_lr: float, total_steps: int) -> None:
        self.optimizer, self.warmup = optimizer, warmup_steps
        self.start, self.ref, self.final = start_lr, ref_lr, final_lr
        self.cosine_steps = total_steps - warmup_steps
        self.count = 0

    def step(self) -> None:
        self.count += 1
        if self.count < self.warmup:
            lr = self.start + self.count / max(1, self.warmup) * (self.ref - self.start)
        else:
            progress = (self.count - self.warmup) / max(1, self.cosine_steps)
            cosine = 0.5 * (1 + math.cos(math.pi * progress))
            lr = max(self.final, self.final + (self.ref - self.final) * cosine)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


class CosineWDSchedule:
    """V-JEPA's: cosine from ref_wd to final_wd on the groups that are not excluded."""

    def __init__(self, optimizer: torch.optim.Optimizer, ref_wd: float, final_wd: float,
                 total_steps: int) -> None:
        self.optimizer, self.ref, self.final, self.total = optimizer, ref_wd, final_wd, total_steps
        self.count = 0

    def step(self) -> None:
        self.count += 1
        wd = self.final + (self.ref - self.final) * 0.5 * (1 + math.cos(math.pi * self.count / self.total))
        wd = max(self.final, wd) if self.final <= self.ref else min(self.final, wd)
        for group in self.optimizer.param_groups:
            if not group.get("WD_exclude", False):
                group["weight_decay"] = wd


def train_reference(model: nn.Module, batches, epochs: int, *, lr: float, wd: float, start_lr: float,
                    final_lr: float, warmup_steps: int, final_wd: float | None,
                    betas: tuple[float, float], clip: float | None) -> None:
    """V-JEPA's probe loop for one model: AdamW with a decay group (weights and the query) and a
    no-decay group (biases, LayerNorm), schedulers stepped before each iteration, mean
    cross-entropy, clip_grad_norm_, step."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        is_query = name in ("query_tokens", "query_token", "cls_token")
        (decay if is_query or ("bias" not in name and param.dim() > 1) else plain).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                                   {"params": plain, "weight_decay": 0.0, "WD_exclude": True}],
                                  lr=lr, betas=betas)
    total = epochs * len(batches)
    lr_schedule = WarmupCosineSchedule(optimizer, warmup_steps, start_lr, lr, final_lr, total)
    wd_schedule = None if final_wd is None else CosineWDSchedule(optimizer, wd, final_wd, total)
    model.train()
    for epoch in range(epochs):
        for tokens, labels in batches.epoch(epoch):
            lr_schedule.step()
            if wd_schedule is not None:
                wd_schedule.step()
            loss = nn.functional.cross_entropy(model(tokens), labels)
            optimizer.zero_grad()
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
