"""Steps per second and peak memory of our I-JEPA step against a straightforward one.

Both compute the same objective on the same model size, batch and masks:

- ours (:class:`ijepa.model.IJEPA`): index gathers, timm blocks with fused attention
  (``scaled_dot_product_attention``), all target blocks in one predictor batch, bf16 autocast
  on CUDA;
- plain: boolean masks (``x[mask].view(...)``), attention written out (softmax(QKᵀ)V), one
  predictor pass per target block in a Python loop, float32.

Usage: ``python bench/bench_trainer.py [--model vit_base] [--batch 32] [--steps 10] [--img 224]``.
Prints a table (steps/s, peak memory, ratio ours/plain).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ijepa.config import config_from_dict
from ijepa.masks import MultiBlockMasker
from ijepa.model import IJEPA
from ijepa.train import build_model, param_groups


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


def plain_copy(model: IJEPA) -> IJEPA:
    """The same weights with every attention replaced by :class:`PlainAttention`."""
    plain = copy.deepcopy(model)
    for blocks in (plain.encoder.blocks, plain.target_encoder.blocks, plain.predictor.predictor_blocks):
        for block in blocks:
            block.attn = PlainAttention(block.attn)
    return plain


def to_bool(index: torch.Tensor, n: int) -> torch.Tensor:
    """Index mask [B, K] -> boolean mask [B, N]."""
    return torch.zeros(index.shape[0], n, dtype=torch.bool, device=index.device).scatter_(1, index, True)


def plain_loss(model: IJEPA, images: torch.Tensor, enc: list[torch.Tensor], pred: list[torch.Tensor]) -> torch.Tensor:
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


def measure(step: Callable[[], None], steps: int, device: torch.device) -> tuple[float, float]:
    """(steps per second, peak memory in MiB; NaN on CPU) after two warm-up steps."""
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return steps / seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--pred-depth", type=int, default=6)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = config_from_dict({"data": {"crop_size": args.img, "batch_size": args.batch},
                            "mask": {"patch_size": args.patch},
                            "meta": {"model_name": args.model, "pred_depth": args.pred_depth}})
    torch.manual_seed(0)
    ours = build_model(cfg).to(device)
    plain = plain_copy(ours)
    masker = MultiBlockMasker(cfg.mask, args.img, seed=0)
    images = torch.randn(args.batch, 3, args.img, args.img, device=device)
    enc, pred = masker.sample(args.batch)
    enc, pred = [m.to(device) for m in enc], [m.to(device) for m in pred]

    def stepper(model: IJEPA, loss_fn: Callable[[], torch.Tensor], bf16: bool) -> Callable[[], None]:
        opt = torch.optim.AdamW(param_groups(model.encoder, model.predictor), lr=1e-4)

        def step() -> None:
            amp = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with amp:
                loss = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.update_target(0.996)
        return step

    bf16 = device.type == "cuda"
    rows = [("ours", *measure(stepper(ours, lambda: ours(images, enc, pred), bf16), args.steps, device)),
            ("plain", *measure(stepper(plain, lambda: plain_loss(plain, images, enc, pred), False), args.steps, device))]
    print(f"device {device}, {args.model}/{args.patch} at {args.img}px, batch {args.batch}, "
          f"context {enc[0].shape[1]} patches, {len(pred)} targets of {pred[0].shape[1]}")
    print(f"{'step':<8}{'steps/s':>10}{'peak MiB':>12}")
    for name, rate, peak in rows:
        print(f"{name:<8}{rate:>10.2f}{peak:>12.0f}")
    print(f"ratio ours/plain: speed x{rows[0][1] / rows[1][1]:.2f}, memory x{rows[0][2] / rows[1][2]:.2f}")


if __name__ == "__main__":
    main()
