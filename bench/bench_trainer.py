"""Trainer: steps per second and peak memory of our I-JEPA step against a straightforward one.

Both compute the same objective (smooth-L1 to layer-normalised EMA targets, one context
block, M target blocks) on the same config, weights, images and masks, with AdamW and an EMA
update per step:

- ours (:class:`ijepa.model.IJEPA`): index gathers, timm blocks with fused attention
  (``scaled_dot_product_attention``), all target blocks in one predictor batch, bf16 autocast
  on CUDA;
- plain: boolean masks (``x[mask].view(...)``), attention written out (softmax(QKᵀ)V), one
  predictor pass per target block in a Python loop, float32.

Cases: the shipped CPU recipe (``configs/cifar10_tiny_30min.yaml``: ViT 128 x 4, patch 4 on
32 px, batch 128, predictor 64 x 3) and ViT-S/16 at 96 px, batch 8 (a wider model with longer
rows per patch); ``--quick``: a tiny ViT at batch 2. Speed: seconds per block of steps,
timed in one process, interleaved, median over repeats. Memory: each candidate in a fresh process;
on CPU the growth of its peak resident set (``VmHWM``) over the training steps, on CUDA
``max_memory_allocated`` during them.

Usage: ``python bench/bench_trainer.py [--quick] [--repeats R] [--out DIR]``.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchlib import Row, bench_main, interleaved_medians, make_row, run_child
from bench_memory import peak_rss_bytes

REPO = Path(__file__).resolve().parents[1]
MIB = 2 ** 20
SPEED_TARGET = ">= 1.3"
MEMORY_TARGET = "<= 1.0"


@dataclass(frozen=True)
class Case:
    """A config to time: a shipped YAML file or official-schema overrides, and steps per timing."""

    name: str
    overrides: dict[str, Any]
    steps: int
    config_file: str | None = None


FULL = [Case("shipped CPU recipe: configs/cifar10_tiny_30min.yaml (ViT 128x4, patch 4, 32 px, batch 128)",
             {}, 5, "configs/cifar10_tiny_30min.yaml"),
        Case("ViT-S/16 at 96 px, batch 8, predictor depth 4",
             {"data": {"crop_size": 96, "batch_size": 8}, "mask": {"patch_size": 16},
              "meta": {"model_name": "vit_small", "pred_depth": 4}}, 3)]
QUICK = [Case("ViT-Ti/8 at 32 px, batch 2, predictor depth 1",
              {"data": {"crop_size": 32, "batch_size": 2}, "mask": {"patch_size": 8},
               "meta": {"model_name": "vit_tiny", "pred_depth": 1}}, 1)]


class PlainAttention(nn.Module):
    """Hand-written attention over an existing timm ``Attention`` module's weights."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor, **_: object) -> torch.Tensor:
        a = self.attn
        b, n, c = x.shape
        qkv = a.qkv(x).reshape(b, n, 3, a.num_heads, c // a.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = (q @ k.transpose(-2, -1) * a.scale).softmax(dim=-1)
        return a.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


def plain_copy(model: nn.Module) -> nn.Module:
    """The same weights with every attention replaced by :class:`PlainAttention`."""
    plain = copy.deepcopy(model)
    for blocks in (plain.encoder.blocks, plain.target_encoder.blocks, plain.predictor.predictor_blocks):
        for block in blocks:
            block.attn = PlainAttention(block.attn)
    return plain


def to_bool(index: torch.Tensor, n: int) -> torch.Tensor:
    """Index mask [B, K] -> boolean mask [B, N]."""
    return torch.zeros(index.shape[0], n, dtype=torch.bool, device=index.device).scatter_(1, index, True)


def plain_loss(model: nn.Module, images: torch.Tensor, enc: list[torch.Tensor],
               pred: list[torch.Tensor]) -> torch.Tensor:
    """The I-JEPA loss with boolean masks and a Python loop over target blocks (one context mask)."""
    e, p = model.encoder, model.predictor
    b = images.shape[0]
    n = e.pos_embed.shape[1]
    ctx_mask = to_bool(enc[0], n)
    with torch.no_grad():
        h = model.target_encoder(images)
        h = F.layer_norm(h, (h.shape[-1],))
    x = e.patch_embed(images) + e.pos_embed
    x = x[ctx_mask].view(b, -1, x.shape[-1])
    context = e.norm(e.blocks(x))
    pos = p.predictor_pos_embed.expand(b, -1, -1)
    z = p.predictor_embed(context) + pos[ctx_mask].view(b, -1, pos.shape[-1])
    losses = []
    for block_idx in pred:
        tmask = to_bool(block_idx, n)
        queries = p.mask_token + pos[tmask].view(b, -1, pos.shape[-1])
        y = torch.cat([z, queries], dim=1)
        for blk in p.predictor_blocks:
            y = blk(y)
        out = p.predictor_proj(p.predictor_norm(y)[:, z.shape[1]:])
        losses.append(F.smooth_l1_loss(out, h[tmask].view(b, -1, h.shape[-1])))
    return torch.stack(losses).mean()


def _config(case: Case) -> Any:
    from ijepa.config import config_from_dict, load_config

    if case.config_file:
        return load_config(REPO / case.config_file)
    return config_from_dict(case.overrides)


def make_steps(case: Case, device: torch.device) -> tuple[dict[str, Callable[[], None]], str]:
    """``{"ours": step, "plain": step}`` on one model's weights, images and masks, and a line
    describing the masks. Each call runs ``case.steps`` optimiser steps."""
    from ijepa.masks import MultiBlockMasker
    from ijepa.train import build_model, param_groups

    cfg = _config(case)
    torch.manual_seed(0)
    ours = build_model(cfg).to(device)
    plain = plain_copy(ours)
    batch, size = cfg.data.batch_size, cfg.data.crop_size
    images = torch.randn(batch, 3, size, size, device=device)
    enc, pred = MultiBlockMasker(cfg.mask, size, seed=0).sample(batch)
    enc, pred = [m.to(device) for m in enc], [m.to(device) for m in pred]
    bf16 = device.type == "cuda"

    def stepper(model: nn.Module, loss_fn: Callable[[], torch.Tensor], autocast: bool) -> Callable[[], None]:
        opt = torch.optim.AdamW(param_groups(model.encoder, model.predictor), lr=1e-4)

        def run_steps() -> None:
            for _ in range(case.steps):
                amp = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
                with amp:
                    loss = loss_fn()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                model.update_target(0.996)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run_steps

    steps = {"ours": stepper(ours, lambda: ours(images, enc, pred), bf16),
             "plain": stepper(plain, lambda: plain_loss(plain, images, enc, pred), False)}
    masks = f"context {enc[0].shape[1]} patches, {len(pred)} targets of {pred[0].shape[1]}"
    return steps, masks


def measure_memory_child(case_index: int, quick: bool, which: str) -> None:
    """In a fresh process: print JSON {before, after} peak bytes around one candidate's first
    steps (resident set on CPU, CUDA allocations on a GPU), optimiser state included."""
    device = _device()
    steps, _ = make_steps((QUICK if quick else FULL)[case_index], device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        steps[which]()
        after = torch.cuda.max_memory_allocated()
    else:
        before = peak_rss_bytes()
        steps[which]()
        after = peak_rss_bytes()
    print(json.dumps({"before": before, "after": after}))


def _memory(case_index: int, quick: bool, which: str) -> float:
    """Peak memory growth (MiB) of ``which`` on a case, measured in a fresh process."""
    measured = run_child("bench_trainer", f"measure_memory_child({case_index}, {quick}, {which!r})")
    return (measured["after"] - measured["before"]) / MIB


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run(quick: bool, repeats: int | None) -> list[Row]:
    device = _device()
    precision = "bf16 autocast (ours)" if device.type == "cuda" else "float32"
    rows = []
    for index, case in enumerate(QUICK if quick else FULL):
        steps, masks = make_steps(case, device)
        seconds, _ = interleaved_medians(steps, repeats or 3)
        rate = {name: case.steps / s for name, s in seconds.items()}
        where = f"{device.type} {precision}, {masks}"
        rows.append(make_row("trainer", case.name, "I-JEPA step (ours)", "plain step", "steps/s", rate["ours"],
                             rate["plain"], rate["ours"] / rate["plain"], SPEED_TARGET, repeats or 3,
                             f"speed-up; {where}; {case.steps} steps per timing",
                             miss_note="on CPU in float32 ours gets no bf16 autocast and the fused "
                                       "attention kernel saves little on rows this short"))
        memory = {name: _memory(index, quick, name) for name in ("ours", "plain")}
        rows.append(make_row("trainer", case.name, "I-JEPA step (ours)", "plain step", "MiB", memory["ours"],
                             memory["plain"], memory["ours"] / memory["plain"], MEMORY_TARGET, 1,
                             f"cost ratio of peak memory growth over {case.steps} steps, each in a fresh "
                             f"process ({'CUDA max_memory_allocated' if device.type == 'cuda' else 'VmHWM'})",
                             miss_note="ours keeps all target blocks' activations at once"))
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    return bench_main("trainer", run, __doc__, argv)


if __name__ == "__main__":
    main()
