"""Per-iteration schedules of learning rate, weight decay and EMA momentum (official I-JEPA).

All three are pure functions of the global iteration index ``itr`` (0-based: the number of
optimizer steps already taken), so a resumed run recomputes them from ``itr`` alone.
Official conventions kept: LR and WD are evaluated one step ahead (the official schedulers
increment their counter before computing), momentum at ``itr`` itself; the run length is
``total = int(ipe_scale · epochs · ipe)`` iterations, ``ipe`` = iterations per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ijepa.config import OptimizationConfig


def warmup_cosine_lr(step: int, *, start_lr: float, ref_lr: float, final_lr: float,
                     warmup_steps: int, total_steps: int) -> float:
    """Linear start_lr -> ref_lr over ``warmup_steps``, then cosine ref_lr -> final_lr at ``total_steps``."""
    if step < warmup_steps:
        return start_lr + (step / max(1, warmup_steps)) * (ref_lr - start_lr)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(final_lr, final_lr + (ref_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def cosine_wd(step: int, *, ref_wd: float, final_wd: float, total_steps: int) -> float:
    """Cosine ref_wd -> final_wd over ``total_steps``, clamped at final_wd (WD usually rises)."""
    wd = final_wd + (ref_wd - final_wd) * 0.5 * (1.0 + math.cos(math.pi * step / max(1, total_steps)))
    return max(final_wd, wd) if final_wd <= ref_wd else min(final_wd, wd)


def linear_momentum(step: int, *, start: float, end: float, total_steps: int) -> float:
    """EMA momentum, linear from ``start`` at step 0 to ``end`` at ``total_steps``."""
    return start + step * (end - start) / max(1, total_steps)


@dataclass(frozen=True)
class Schedules:
    """The three schedules of one run. ``at(itr)`` gives (lr, wd, momentum) for iteration ``itr``."""

    start_lr: float
    lr: float
    final_lr: float
    weight_decay: float
    final_weight_decay: float
    ema: tuple[float, float]
    warmup_steps: int
    total_steps: int

    @classmethod
    def from_config(cls, optimization: OptimizationConfig, iters_per_epoch: int) -> Schedules:
        """From an ``OptimizationConfig`` (warmup in epochs) and the iterations per epoch."""
        o = optimization
        return cls(start_lr=o.start_lr, lr=o.lr, final_lr=o.final_lr, weight_decay=o.weight_decay,
                   final_weight_decay=o.final_weight_decay, ema=(float(o.ema[0]), float(o.ema[1])),
                   warmup_steps=int(o.warmup * iters_per_epoch),
                   total_steps=int(o.ipe_scale * o.epochs * iters_per_epoch))

    def at(self, itr: int) -> tuple[float, float, float]:
        lr = warmup_cosine_lr(itr + 1, start_lr=self.start_lr, ref_lr=self.lr, final_lr=self.final_lr,
                              warmup_steps=self.warmup_steps, total_steps=self.total_steps)
        wd = cosine_wd(itr + 1, ref_wd=self.weight_decay, final_wd=self.final_weight_decay,
                       total_steps=self.total_steps)
        momentum = linear_momentum(itr, start=self.ema[0], end=self.ema[1], total_steps=self.total_steps)
        return lr, wd, momentum
