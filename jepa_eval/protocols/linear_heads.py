"""The SGD grid of the linear probe: H linear heads trained together from the same mini-batches.

The heads differ only in their learning rate, weight decay and input (the features, or the
features through one ``BatchNorm1d(affine=False, eps=1e-6)``, MAE's linprobe head). Gradients of
each head's mean cross-entropy are written out (``X^T (softmax - onehot) / B``, one matmul per
input kind), and the update is SGD with momentum (PyTorch's rule, weight decay on the weights only)
or LARS (MAE's linprobe: the weight step scaled by ``trust x |w| / |g + wd w|`` per head), the
learning rate ``lr x batch / 256`` following a linear warm-up then a cosine to 0, per step. Whoever
feeds the batches decides their order; under torchrun each process feeds its share of every batch
and the gradients are summed (:class:`HeadTrainer`). Counts (hits, losses) are sums too, so a
score over a streamed split is the all-reduce of each process's share.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from jepa_eval.core.devices import rank_and_world
from jepa_eval.core.errors import JepaEvalError

INIT_STD = 0.01
BN_EPS = 1e-6
OPTIMIZERS = ("sgd", "lars")


@dataclass
class Standardizer:
    """``(x - mean) / scale`` per dimension (``mean``, ``scale`` [D]); constant dims keep scale 1."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.scale


def fit_standardizer(train: torch.Tensor) -> Standardizer:
    """The mean and std (ddof 0, as scikit-learn's ``StandardScaler``) of ``train [N, D]``.

    Computed in float64, returned in ``train``'s dtype. A dimension whose std is below
    ``1e-12 x max(1, |mean|)`` (constant up to rounding) keeps scale 1, so it becomes 0 on the
    training rows.
    """
    stats = train.double()
    mean = stats.mean(0)
    std = stats.std(0, correction=0)
    scale = torch.where(std > 1e-12 * mean.abs().clamp(min=1.0), std, torch.ones_like(std))
    return Standardizer(mean.to(train.dtype), scale.to(train.dtype))


class LinearHeads:
    """H linear classifiers over the same D-dim features, grouped for one matmul per input kind.

    The first ``num_plain`` heads read the features, the other ones read them through one
    ``BatchNorm1d(affine=False, eps=1e-6)``: it has no parameters, so its statistics depend only
    on the batches, which every head shares. Each group stores its weights as ``[D, C, heads]``
    and biases as ``[C, heads]`` (softmax over classes then runs along a strided axis, much
    faster on a CPU than over a last axis of 10); :meth:`head` gives one head's ``[D, C]``, ``[C]``.
    """

    def __init__(self, init: torch.Tensor, num_plain: int, num_bn: int) -> None:
        """``init [D, C]``: the starting weights of every head."""
        dim, classes = init.shape
        self.weights = [init[:, :, None].expand(dim, classes, n).contiguous() for n in (num_plain, num_bn)]
        self.biases = [init.new_zeros(classes, n) for n in (num_plain, num_bn)]
        self.norm = nn.BatchNorm1d(dim, eps=BN_EPS, affine=False).to(init.device) if num_bn else None
        self.num_plain = num_plain

    @property
    def num_heads(self) -> int:
        return sum(w.shape[2] for w in self.weights)

    def head(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight ``[D, C]`` and bias ``[C]`` of head ``index`` (grid order)."""
        group, at = (0, index) if index < self.num_plain else (1, index - self.num_plain)
        return self.weights[group][:, :, at], self.biases[group][:, at]

    def inputs(self, features: torch.Tensor, train: bool) -> list[torch.Tensor]:
        """The input of each group for ``features [B, D]``; ``train`` normalises with the batch's
        statistics and updates the running ones, otherwise the running ones are used. Under
        torchrun a training batch's statistics are those of the whole batch, every process's rows
        (as SyncBatchNorm), so the heads train as in one process."""
        normed = features
        if self.norm is not None:
            self.norm.train(train)
            if train and rank_and_world()[1] > 1:
                normed = self._synced(features)
            else:
                normed = self.norm(features)
        return [features, normed]

    def _synced(self, features: torch.Tensor) -> torch.Tensor:
        """BatchNorm over every process's rows of the batch: mean and biased variance of the
        whole batch normalise, the running statistics take its unbiased variance."""
        norm = self.norm
        sums = all_reduce_sum(torch.cat([features.double().sum(0), (features.double() ** 2).sum(0),
                                         features.new_tensor([features.shape[0]], dtype=torch.float64)]))
        dim = features.shape[1]
        count = sums[-1]
        mean = sums[:dim] / count
        var = (sums[dim:2 * dim] / count - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            norm.running_mean.mul_(1 - norm.momentum).add_(norm.momentum * mean.to(features.dtype))
            norm.running_var.mul_(1 - norm.momentum).add_(norm.momentum * (var * count / (count - 1)).to(features.dtype))
        return ((features.double() - mean) / torch.sqrt(var + norm.eps)).to(features.dtype)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Evaluation logits ``[B, C, H]`` (BatchNorm with its running statistics)."""
        return torch.cat([_group_logits(x, w, b) for x, w, b in
                          zip(self.inputs(features, train=False), self.weights, self.biases) if w.shape[2]], dim=2)


def _group_logits(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    dim, classes, heads = weight.shape
    return (inputs @ weight.view(dim, classes * heads)).view(-1, classes, heads) + bias


@dataclass(frozen=True)
class Budget:
    """Mini-batch ``batch`` size, ``steps_per_epoch`` and ``epochs`` of an SGD run (``steps`` in all)."""

    batch: int
    steps_per_epoch: int
    epochs: int

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.epochs



def plan_steps(rows: int, *, batch_size: int, epochs: int, min_steps: int) -> Budget:
    """The SGD budget on ``rows`` samples: ``epochs``, or more whole epochs until at least
    ``min_steps`` steps."""
    batch = min(batch_size, rows)
    steps_per_epoch = rows // batch
    return Budget(batch, steps_per_epoch, max(epochs, math.ceil(min_steps / steps_per_epoch)))


@dataclass(frozen=True)
class Optimiser:
    """How heads are updated: ``kind`` 'sgd' or 'lars', ``momentum``, ``warmup_steps`` of linear
    warm-up before the cosine, and LARS's ``trust_coefficient``."""

    kind: str = "sgd"
    momentum: float = 0.9
    warmup_steps: int = 0
    trust_coefficient: float = 1e-3

    def schedule(self, step: int, total: int) -> float:
        """The learning-rate factor at ``step`` of ``total``: linear warm-up, then cosine to 0."""
        if step < self.warmup_steps:
            return step / self.warmup_steps
        return 0.5 * (1.0 + math.cos(math.pi * (step - self.warmup_steps) / max(1, total - self.warmup_steps)))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over torchrun's processes (itself in one process)."""
    if rank_and_world()[1] > 1:
        dist.all_reduce(tensor)
    return tensor


class HeadTrainer:
    """The heads of ``grid`` ([{'lr', 'wd', 'batchnorm'}...], plain heads first) over D-dim features
    and C classes, all starting from ``init [D, C]``, and their optimiser state."""

    def __init__(self, grid: list[dict[str, Any]], init: torch.Tensor, optimiser: Optimiser) -> None:
        if optimiser.kind not in OPTIMIZERS:
            raise JepaEvalError(f"unknown optimizer {optimiser.kind!r}", expected=f"one of {', '.join(OPTIMIZERS)}")
        device = init.device
        groups = [[h for h in grid if not h["batchnorm"]], [h for h in grid if h["batchnorm"]]]
        self.heads = LinearHeads(init, len(groups[0]), len(groups[1]))
        self.base_lr = [torch.tensor([h["lr"] for h in g], device=device) for g in groups]
        self.decay = [torch.tensor([h["wd"] for h in g], device=device) for g in groups]
        self.velocity = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in zip(self.heads.weights, self.heads.biases)]
        self.optimiser = optimiser

    @torch.no_grad()
    def update(self, features: torch.Tensor, targets: torch.Tensor, step: int, plan: Budget) -> torch.Tensor:
        """One step on this process's rows of a batch (features [b, D], targets [b]) of
        ``plan.batch`` rows in all; returns each head's summed cross-entropy on those rows [H]."""
        opt = self.optimiser
        rows = torch.arange(targets.numel(), device=targets.device)
        lr_scale = opt.schedule(step, plan.steps) * plan.batch / 256
        losses = []
        for g, inputs in enumerate(self.heads.inputs(features, train=True)):
            weight, bias = self.heads.weights[g], self.heads.biases[g]
            if weight.shape[2] == 0:
                continue
            logits = _group_logits(inputs, weight, bias)  # [b, C, heads]
            residual = torch.softmax(logits, dim=1)
            losses.append((torch.logsumexp(logits, dim=1) - logits[rows, targets]).double().sum(0))
            residual[rows, targets] -= 1.0
            residual /= plan.batch
            grad_w = all_reduce_sum((inputs.T @ residual.view(targets.numel(), -1)).view_as(weight))
            grad_b = all_reduce_sum(residual.sum(0))
            step_w = grad_w + self.decay[g] * weight
            if opt.kind == "lars":
                w_norm, s_norm = weight.norm(dim=(0, 1)), step_w.norm(dim=(0, 1))
                trust = torch.where((w_norm > 0) & (s_norm > 0), opt.trust_coefficient * w_norm / s_norm,
                                    torch.ones_like(w_norm))
                step_w = step_w * trust
            buf_w, buf_b = self.velocity[g]
            buf_w.mul_(opt.momentum).add_(step_w)
            buf_b.mul_(opt.momentum).add_(grad_b)
            lr = self.base_lr[g] * lr_scale
            weight.sub_(lr * buf_w)
            bias.sub_(lr * buf_b)
        return torch.cat(losses)


@torch.no_grad()
def head_counts(heads: LinearHeads, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Summed over ``batches`` of (features [B, D], labels [B]): every head's top-1 and top-5 hits
    and cross-entropy (float64 [H] each) and the row count, summed over torchrun's processes."""
    count = heads.num_heads
    hits1, hits5, loss = None, None, None
    rows = 0
    for features, labels in batches:
        for start in range(0, features.shape[0], batch_size):
            logits = heads.logits(features[start:start + batch_size])  # [B, C, H]
            target = labels[start:start + batch_size]
            if hits1 is None:
                hits1 = torch.zeros(count, dtype=torch.float64, device=logits.device)
                hits5, loss = torch.zeros_like(hits1), torch.zeros_like(hits1)
            ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices  # [B, 5, H]
            hit = ranked == target[:, None, None]
            hits1 += hit[:, 0].sum(0)
            hits5 += hit.any(dim=1).sum(0)
            picked = logits[torch.arange(target.numel(), device=target.device), target]  # [B, H]
            loss += (torch.logsumexp(logits, dim=1) - picked).double().sum(0)
        rows += features.shape[0]
    if hits1 is None:
        hits1 = torch.zeros(count, dtype=torch.float64)
        hits5, loss = torch.zeros_like(hits1), torch.zeros_like(hits1)
    total = all_reduce_sum(torch.tensor([float(rows)], dtype=torch.float64, device=hits1.device))
    return all_reduce_sum(hits1), all_reduce_sum(hits5), all_reduce_sum(loss), int(total.item())


def head_scores(heads: LinearHeads, features: torch.Tensor, labels: torch.Tensor,
                batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-1 and top-5 accuracy (percent) and mean cross-entropy (nats) of every head on
    features [N, D]: three float64 arrays [H]."""
    return scores_of(*head_counts(heads, [(features, labels)], batch_size))


def scores_of(hits1: torch.Tensor, hits5: torch.Tensor, loss: torch.Tensor,
              rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percent top-1, top-5 and mean cross-entropy from :func:`head_counts`."""
    n = rows if rows else float("nan")  # no rows (one fixed head has nothing held out): NaN scores
    return (100.0 * hits1 / n).cpu().numpy(), (100.0 * hits5 / n).cpu().numpy(), (loss / n).cpu().numpy()
