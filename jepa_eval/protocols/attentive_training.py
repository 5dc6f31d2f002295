"""Training and scoring a grid of attentive probes from the same mini-batches.

All probes start from the same initial weights (seeded), see the same batches in the same order
and are computed in one pass (:class:`~jepa_eval.protocols.attentive_probes.ProbeGrid`); each has
its own torch.optim.AdamW state and its own gradient-norm clipping (:class:`GridAdamW`), so a
probe trained in a grid ends where it ends trained alone (up to float rounding). Per iteration
the learning rate warms up linearly from ``start_lr`` and then follows a cosine to ``final_lr``
(V-JEPA's ``WarmupCosineSchedule``, counting steps from 1); the weight decay is constant, or a
cosine to ``final_weight_decay`` (V-JEPA's ``CosineWDSchedule``). Weight decay applies to the
weight matrices and the queries, never to biases or LayerNorm parameters (V-JEPA's rule).

Under torchrun each process reads its share of every batch (the token sources' ``shard``) and
the gradients are summed over processes before clipping and the update, so every process holds
the same probes and the numbers are those of one process (up to float rounding). The ``ep``
variant's BatchNorm then uses each process's batch statistics, as DDP without SyncBatchNorm,
and rank 0's running statistics are kept.

On CUDA the forward pass runs under bf16 autocast; parameters, optimiser state and losses stay
float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from jepa_eval.core.devices import autocast, rank_and_world
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.progress import progress as progress_bar
from jepa_eval.features.tokens import Batch, BatchSource
from jepa_eval.protocols.attentive_probes import ProbeGrid

CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6)


@dataclass(frozen=True)
class Optimisation:
    """The grid's optimisation: per-probe base ``lrs`` and ``wds``, the schedules' ends, AdamW's
    ``betas`` and ``eps``, the clipping norm (None: no clipping), the epochs and the share of
    all steps that warm up."""

    lrs: tuple[float, ...]
    wds: tuple[float, ...]
    start_lr: float
    final_lr: float
    final_wd: float | None
    betas: tuple[float, float]
    eps: float
    grad_clip: float | None
    epochs: int
    warmup_fraction: float


def lr_at(step: int, total: int, warmup: int, start_lr: float, lr: torch.Tensor,
          final_lr: float) -> torch.Tensor:
    """V-JEPA's WarmupCosineSchedule at ``step`` (1-based, of ``total``) for base rates ``lr``.

    Linear from ``start_lr`` to ``lr`` while step < warmup, then a cosine from ``lr`` to
    ``final_lr`` over the remaining total - warmup steps (never below ``final_lr``).
    """
    if step < warmup:
        return start_lr + (step / max(1, warmup)) * (lr - start_lr)
    progress = (step - warmup) / max(1, total - warmup)
    return torch.clamp(final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)),
                       min=final_lr)


def wd_at(step: int, total: int, wd: torch.Tensor, final_wd: float | None) -> torch.Tensor:
    """V-JEPA's CosineWDSchedule (cosine from ``wd`` to ``final_wd`` over ``total`` steps,
    clamped at ``final_wd``); constant ``wd`` when ``final_wd`` is None."""
    if final_wd is None:
        return wd
    value = final_wd + (wd - final_wd) * 0.5 * (1.0 + math.cos(math.pi * step / total))
    return torch.where(wd >= final_wd, value.clamp(min=final_wd), value.clamp(max=final_wd))


class GridAdamW:
    """One torch.optim.AdamW per probe, over a :class:`ProbeGrid`'s stacked parameters.

    Probe h's slice [h] of every stacked parameter is wrapped as a leaf Parameter that shares the
    stacked storage, so PyTorch's fused AdamW (two parameter groups a probe, with and without
    weight decay) updates the grid in place while keeping each probe's moments apart. ``step``
    takes the gradients of the stacked parameters (None for one outside the graph: skipped, as
    PyTorch skips parameters without a gradient), clips each probe's gradient norm as
    torch.nn.utils.clip_grad_norm_ does, and sets each group's learning rate and decay.
    """

    def __init__(self, grid: ProbeGrid, betas: tuple[float, float], eps: float) -> None:
        names = [name for name, _ in grid.named_parameters()]
        self.params = [p for _, p in grid.named_parameters()]
        self.slices = [[torch.nn.Parameter(p.detach()[h]) for p in self.params] for h in range(grid.count)]
        groups = []
        for h, slices in enumerate(self.slices):
            for decay in (True, False):
                chosen = [s for s, name in zip(slices, names) if grid.decay[name] == decay]
                if chosen:
                    groups.append({"params": chosen, "probe": h, "decay": decay})
        self.optimizer = torch.optim.AdamW(groups, lr=0.0, betas=betas, eps=eps, weight_decay=0.0, fused=True)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor | None], lr: torch.Tensor, wd: torch.Tensor,
             max_norm: float | None) -> None:
        """One update from ``grads`` (aligned with ``params``) with per-probe ``lr`` and ``wd`` [H]."""
        # contiguous: torch 2.14's fused CPU AdamW misreads non-contiguous gradients (silently)
        grads = [None if g is None else g.contiguous() for g in grads]
        live = [g for g in grads if g is not None]
        if max_norm is not None:
            norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in live])
            scale = (max_norm / (torch.linalg.vector_norm(norms, dim=0) + CLIP_EPS)).clamp(max=1.0)
            for g in live:
                g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
        rates, decays = lr.tolist(), wd.tolist()
        for group in self.optimizer.param_groups:
            group["lr"] = rates[group["probe"]]
            group["weight_decay"] = decays[group["probe"]] if group["decay"] else 0.0
        for h, slices in enumerate(self.slices):
            for piece, grad in zip(slices, grads):
                piece.grad = None if grad is None else grad[h]
        self.optimizer.step()


@dataclass
class TrainedGrid:
    """Trained probes (eval mode), the optimiser steps taken and each probe's mean training loss
    over the last epoch (float64 [H])."""

    probes: ProbeGrid
    steps: int
    train_loss: np.ndarray


def _sum_over_ranks(tensors: list[torch.Tensor]) -> None:
    """Sum ``tensors`` in place over torchrun processes (one all-reduce); nothing alone."""
    if rank_and_world()[1] == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
    dist.all_reduce(flat)
    for tensor, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        tensor.copy_(part.view_as(tensor))


def _on_device(batch: Batch, device: torch.device) -> Batch:
    """A batch's tokens (float32) and labels on ``device``; non-finite tokens are refused."""
    tokens, labels = batch
    tokens = tokens.to(device, torch.float32, non_blocking=True)
    if not torch.isfinite(tokens.sum(dtype=torch.float64)):  # one pass: NaN or inf anywhere shows
        raise JepaEvalError("a batch of patch tokens contains NaN or infinite values", expected="finite numbers",
                            found=f"non-finite values in a batch of shape {tuple(tokens.shape)}",
                            hint="re-extract the tokens; a backbone that overflows under bf16 autocast or a "
                                 "diverged checkpoint produces NaN")
    return tokens, labels.to(device, torch.int64, non_blocking=True)


def train_probe_grid(probes: ProbeGrid, batches: BatchSource, opt: Optimisation, device: torch.device,
                     progress: bool = False) -> TrainedGrid:
    """Train every probe of ``probes`` (H of them; ``opt.lrs[h]``, ``opt.wds[h]``) on ``batches``
    for ``opt.epochs`` epochs of ``len(batches)`` batches."""
    per_epoch = len(batches)
    total = opt.epochs * per_epoch
    warmup = round(opt.warmup_fraction * total)
    base_lr = torch.tensor(opt.lrs, dtype=torch.float64)  # schedules: CPU, float64
    base_wd = torch.tensor(opt.wds, dtype=torch.float64)
    count = probes.count
    probes.to(device).train()
    optimizer = GridAdamW(probes, opt.betas, opt.eps)
    step = 0
    loss_sum = torch.zeros(count, dtype=torch.float64, device=device)
    for epoch in progress_bar(range(opt.epochs), desc="attentive probes", unit="epoch", enabled=progress,
                              leave=False):
        loss_sum.zero_()
        for batch in batches.epoch(epoch):
            step += 1
            tokens, labels = _on_device(batch, device)
            rows = torch.tensor([labels.shape[0]], dtype=torch.float64, device=device)
            _sum_over_ranks([rows])
            with autocast(device):
                logits = probes(tokens)  # [H, B, C]
            losses = F.cross_entropy(logits.float().flatten(0, 1), labels.repeat(count),
                                     reduction="none").view(count, -1).sum(dim=1) / rows
            grads = list(torch.autograd.grad(losses.sum(), optimizer.params, allow_unused=True))
            _sum_over_ranks([g for g in grads if g is not None] + [losses.detach()])
            optimizer.step(grads, lr_at(step, total, warmup, opt.start_lr, base_lr, opt.final_lr),
                           wd_at(step, total, base_wd, opt.final_wd), opt.grad_clip)
            loss_sum += losses.detach()
    _share_rank0_buffers(probes)
    return TrainedGrid(probes.eval(), step, (loss_sum / per_epoch).cpu().numpy())


def _share_rank0_buffers(probes: ProbeGrid) -> None:
    """Rank 0's buffers (ep's BatchNorm running statistics) on every torchrun process."""
    if rank_and_world()[1] > 1:
        for buffer in probes.buffers():
            dist.broadcast(buffer, src=0)


@torch.no_grad()
def probe_accuracies(probes: ProbeGrid, batches: Iterable[Batch],
                     device: torch.device) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-1 and top-5 accuracy (percent, float64 [H] each) of every probe over ``batches`` (each
    process its share, summed over processes), and the samples scored. Runs in eval mode."""
    probes.eval()
    classes = probes.arch.num_classes
    counts = torch.zeros(2 * probes.count + 1, dtype=torch.float64, device=device)  # hits@1, hits@5, rows
    for batch in batches:
        tokens, labels = _on_device(batch, device)
        with autocast(device):
            logits = probes(tokens)
        ranked = logits.float().topk(min(5, classes), dim=-1).indices  # [H, B, 5]
        hit = ranked == labels[None, :, None]
        counts[:probes.count] += hit[..., 0].sum(dim=1)
        counts[probes.count:-1] += hit.any(dim=-1).sum(dim=1)
        counts[-1] += labels.shape[0]
    _sum_over_ranks([counts])
    scored = int(counts[-1])
    hits = counts.cpu().numpy()
    return 100.0 * hits[:probes.count] / scored, 100.0 * hits[probes.count:-1] / scored, scored
