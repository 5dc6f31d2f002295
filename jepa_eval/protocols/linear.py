"""Linear probe on frozen features: exact logistic regression, or a grid of SGD heads.

Two solvers of the same task, chosen by ``solver``:

- ``lbfgs``: multinomial logistic regression (scikit-learn's objective, solved exactly by
  :mod:`jepa_eval.protocols.logreg`, the solver ``lowshot`` uses) over the grid ``Cs``; C is
  chosen by top-1 on the held-out split and the model is refitted on all training features at
  that C (DINOv2's log-regression and CLIP-style transfer protocol).
- ``sgd``: a grid of linear heads, learning rate x weight decay x BatchNorm (DINOv2 trains a
  grid of heads from one pass; MAE puts ``BatchNorm1d(affine=False, eps=1e-6)`` before its
  linear layer), the head with the best held-out top-1 chosen and reported as it is.
- ``auto`` (default): ``lbfgs`` when its estimated memory,
  :func:`jepa_eval.protocols.logreg.solver_bytes` = N x min(N, D) x 40 bytes for the N
  training rows (plus the evaluation rows with ``select_on='eval'``), is at most
  ``lbfgs_max_gib``; ``sgd`` otherwise. The record says which ran (``solver_ran``).

Features are standardised by default (``standardize``): every split is mapped with the mean and
std of the training features (all of them, held-out part included; no labels are read), so the
evaluation split never contributes statistics. BatchNorm heads see the same standardised input.

SGD grid: all heads see the same mini-batches in the same order and start from the same
N(0, 0.01) weights (bias 0), so they differ only in their hyper-parameters, and a head trained
in a grid ends exactly where it would end trained alone. Cross-entropy, SGD with momentum
(PyTorch's rule; weight decay on the weights, not the bias), learning rate ``lr x batch / 256``
(DINO's scaling, with the batch actually used; ``lr`` in results is the unscaled grid value)
following a cosine from that value to 0, stepped every iteration. Each epoch is a seeded
permutation cut into full batches (the last incomplete one is dropped; a split smaller than a
batch is one full-data batch). The budget is ``epochs``, raised to whole epochs until at least
``min_steps`` optimizer steps, so small splits still converge. When the chosen head's learning
rate or weight decay is the largest (or smallest) value of an axis with two or more values, the
axis is widened by one value at its own spacing (the ratio of its two outermost values; 10 for
a weight-decay axis with a single non-zero value; a weight decay of 0 is a bottom, not an
edge), the new heads are trained, and the choice is made again over the whole grid, up to
``max_widenings`` times; a choice still at an edge is a warning, recorded in the result.

Selection (``select_on='val'``, the default): a stratified, seeded ``val_fraction`` of the
training features is held out; candidates train on the rest and are chosen by top-1 on the
held-out part (ties: the first head in grid order, the smallest C). The SGD head is reported as
trained; the lbfgs model is refitted on all of train. ``select_on='eval'`` is DINOv2's
behaviour: candidates train on all training features and are chosen by top-1 on the evaluation
split itself (an optimistic number; the result says so in ``selected_on``).
``select_on='none'`` trains one fixed SGD head on all training features and chooses nothing:
for k-shot draws too small to hold anything out (1 image a class).

Features are moved to the device once (CUDA when available); SGD heads train in float32.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from jepa_eval.core.devices import resolve_device
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.progress import progress as progress_bar
from jepa_eval.protocols import logreg
from jepa_eval.protocols.checks import check_num_classes, check_split_pair
from jepa_eval.protocols.registry import (Evaluation, Inputs, Needs, PlotSpec, Protocol, Selection, Shown, Spelling,
                                          TableSpec, option, register)
from jepa_eval.protocols.sampling import shot_seeds_field, shots_field, shots_setting
from jepa_eval.results.record import Metric, ResultRecord

SELECT_ON = ("val", "eval", "none")
SOLVERS = ("auto", "lbfgs", "sgd")
C_SEARCHES = logreg.SEARCHES
INIT_STD = 0.01
BN_EPS = 1e-6
HEAD_VARIANTS = {"plain": (False,), "bn": (True,), "both": (False, True)}
#: Widening step of a weight-decay axis with a single non-zero value.
WD_STEP = 10.0


def _head_variants(text: str) -> tuple[bool, ...]:
    if text not in HEAD_VARIANTS:
        raise JepaEvalError(f"unknown --batchnorm value {text!r}", expected="plain, bn or both")
    return HEAD_VARIANTS[text]


@dataclass
class LinearConfig:
    """Linear-probe settings; the SGD grid is every (lr, wd, batchnorm) combination."""

    learning_rates: tuple[float, ...] = option((1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
                                               "Comma-separated base learning rates (sgd).", flag="--lrs")
    weight_decays: tuple[float, ...] = option((0.0, 1e-4, 1e-3, 1e-2), "Comma-separated weight decays (sgd).",
                                              flag="--wds")
    batchnorm: tuple[bool, ...] = option((False, True), "Head variants: plain, bn, or both (sgd).",
                                         spelling=Spelling(str, _head_variants, "both"))
    epochs: int = option(50, "Epochs over the cached features (sgd; raised to reach --min-steps).")
    min_steps: int = option(2000, "Fewest optimizer steps of the SGD grid, whatever the split's size.")
    max_widenings: int = option(2, "Times the SGD grid may grow past an edge its chosen lr or wd sits at.")
    batch_size: int = 256
    momentum: float = 0.9
    val_fraction: float = option(0.1, "Share of train held out to choose the head or C.")
    seed: int = 0
    # 'val' (held out from train), 'eval' (DINOv2: the reported split) or 'none' (one fixed head)
    select_on: str = option("val", "Choose the head on the evaluation split (DINOv2's behaviour; recorded).",
                            flag="--select-on-eval", spelling=Spelling(bool, lambda on: "eval" if on else "val", False))
    solver: str = option("auto", "lbfgs (exact logistic regression), sgd (the grid of heads), or auto: lbfgs "
                                 "when its memory estimate fits --lbfgs-max-gib.")
    standardize: bool = option(True, "Standardise features with the training split's mean and std.")
    Cs: tuple[float, ...] = option(logreg.DEFAULT_CS, "Comma-separated values of C (lbfgs).", flag="--Cs")
    C_search: str = "grid"
    max_iter: int = 1000
    tol: float = 1e-4
    lbfgs_max_gib: float = option(4.0, "Largest lbfgs memory estimate (GiB) for which auto chooses lbfgs.")
    shots: tuple[int | str, ...] = shots_field()
    shot_seeds: int = shot_seeds_field()

    def grid(self) -> list[dict[str, Any]]:
        """Every SGD head's hyper-parameters: [{'lr', 'wd', 'batchnorm'}, ...].

        Heads without BatchNorm come first, then by learning rate, then by weight decay, in the
        order given; selection ties go to the earliest head in this order.
        """
        return [{"lr": float(lr), "wd": float(wd), "batchnorm": bn} for bn, lr, wd in
                itertools.product(sorted(set(map(bool, self.batchnorm))),
                                  self.learning_rates, self.weight_decays)]


@dataclass
class LinearResult:
    """The chosen classifier's evaluation numbers, the choice, and every candidate's scores.

    ``metrics``: 'top1' and 'top5' of the chosen classifier on the evaluation split, then one
    'val_top1' row per candidate (top-1 on the selection split) and, for SGD heads, one
    'train_loss' row per head (mean cross-entropy on the rows it trained on); coords are
    {'lr', 'wd', 'batchnorm'} (sgd) or {'C'} (lbfgs). ``solver``: the one that ran.
    ``chosen``: the candidate's coords with its 'val_top1' and 'train_loss'; ``grid``: one such
    dict per candidate. ``training``: how the solver ran (sgd: 'steps', 'epochs', 'widenings',
    'edge' (a warning, '' when none), 'learning_rates', 'weight_decays' of the final grid;
    lbfgs: 'iterations', 'converged', 'precision', 'objective' of the final fit).
    ``sizes``: samples fitted ('fit'), chosen on ('select') and reported on ('eval'), and for
    lbfgs the rows of the refit ('refit').
    """

    metrics: list[Metric]
    chosen: dict[str, Any]
    grid: list[dict[str, Any]]
    selected_on: str
    solver: str
    training: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


def _check_config(config: LinearConfig) -> None:
    problems = []
    if not (config.learning_rates and config.weight_decays and config.batchnorm):
        problems.append("an empty grid axis")
    if min(config.learning_rates, default=1.0) <= 0 or min(config.weight_decays, default=0.0) < 0:
        problems.append(f"learning rates {list(config.learning_rates)}, weight decays {list(config.weight_decays)}")
    if config.epochs < 1 or config.batch_size < 1 or config.min_steps < 0 or config.max_widenings < 0:
        problems.append(f"epochs {config.epochs}, batch size {config.batch_size}, min_steps {config.min_steps}, "
                        f"max_widenings {config.max_widenings}")
    if config.select_on not in SELECT_ON:
        problems.append(f"select_on {config.select_on!r}")
    if config.select_on == "val" and not 0.0 < config.val_fraction < 1.0:
        problems.append(f"val_fraction {config.val_fraction}")
    if config.select_on == "none" and (config.solver != "sgd" or len(config.grid()) != 1):
        problems.append(f"select_on 'none' with solver {config.solver!r} and a grid of {len(config.grid())} heads")
    if config.solver not in SOLVERS or config.C_search not in C_SEARCHES:
        problems.append(f"solver {config.solver!r}, C_search {config.C_search!r}")
    if not config.Cs or min(config.Cs) <= 0 or config.max_iter < 1 or config.tol <= 0 or config.lbfgs_max_gib < 0:
        problems.append(f"Cs {list(config.Cs)}, max_iter {config.max_iter}, tol {config.tol}, "
                        f"lbfgs_max_gib {config.lbfgs_max_gib}")
    if problems:
        raise JepaEvalError("invalid linear-probe settings",
                            expected="non-empty lr/wd/batchnorm lists (lr > 0, wd >= 0), epochs and batch size "
                                     f">= 1, min_steps and max_widenings >= 0, select_on in {SELECT_ON} ('none': solver sgd, one head), "
                                     f"0 < val_fraction < 1, solver in {SOLVERS}, C_search in {C_SEARCHES}, "
                                     "positive Cs, max_iter and tol, lbfgs_max_gib >= 0",
                            found="; ".join(problems))


def stratified_split(labels: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit [N - V], held-out [V]) with about ``fraction`` of every class held out.

    Each class holds out round(fraction x its count) samples, chosen by a permutation seeded
    with ``seed``, but always keeps at least one for fitting. Both index arrays are sorted.
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        held.append(members[:min(round(fraction * members.size), members.size - 1)])
    held_out = np.sort(np.concatenate(held))
    if held_out.size == 0:
        raise JepaEvalError("the validation split for choosing a linear head is empty",
                            expected="a class with at least 1 / val_fraction samples to hold out",
                            found=f"val_fraction {fraction} of {labels.size} training samples "
                                  f"in {np.unique(labels).size} classes",
                            hint="raise val_fraction or use select_on='eval'")
    return np.setdiff1d(np.arange(labels.size), held_out), held_out


# ---------------------------------------------------------------------------------------------
# Standardisation


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


# ---------------------------------------------------------------------------------------------
# The SGD grid


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
        statistics and updates the running ones, otherwise the running ones are used."""
        normed = features
        if self.norm is not None:
            self.norm.train(train)
            normed = self.norm(features)
        return [features, normed]

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


def budget(rows: int, config: LinearConfig) -> Budget:
    """The SGD budget on ``rows`` samples: ``config.epochs``, or more whole epochs until at least
    ``config.min_steps`` steps."""
    batch = min(config.batch_size, rows)
    steps_per_epoch = rows // batch
    return Budget(batch, steps_per_epoch, max(config.epochs, math.ceil(config.min_steps / steps_per_epoch)))


@torch.no_grad()
def train_heads(features: torch.Tensor, labels: torch.Tensor, config: LinearConfig,
                num_classes: int, progress: bool = True) -> LinearHeads:
    """Train every head of ``config.grid()`` on features [N, D] / labels [N] (same device).

    Mini-batch order and initial weights depend only on ``config.seed`` (and N, D, C), never on
    the grid. Gradients of the mean cross-entropy are written out (``X^T (softmax - onehot) / B``
    per head, one matmul per group).
    """
    grid = config.grid()
    n, dim = features.shape
    if n < 2:
        raise JepaEvalError("too few samples to train linear heads",
                            expected="at least 2 training samples", found=f"{n}")
    device = features.device
    generator = torch.Generator().manual_seed(config.seed)
    init = (torch.randn(dim, num_classes, generator=generator) * INIT_STD).to(device)
    groups = [[h for h in grid if not h["batchnorm"]], [h for h in grid if h["batchnorm"]]]
    heads = LinearHeads(init, len(groups[0]), len(groups[1]))
    base_lr = [torch.tensor([h["lr"] for h in g], device=device) for g in groups]
    decay = [torch.tensor([h["wd"] for h in g], device=device) for g in groups]
    velocity = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in zip(heads.weights, heads.biases)]
    plan = budget(n, config)
    rows = torch.arange(plan.batch, device=device)
    step = 0
    for _ in progress_bar(range(plan.epochs), desc="linear heads", unit="epoch", enabled=progress, leave=False):
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, plan.steps_per_epoch * plan.batch, plan.batch):
            idx = order[start:start + plan.batch]
            targets = labels[idx]
            schedule = 0.5 * (1.0 + math.cos(math.pi * step / plan.steps))
            for g, inputs in enumerate(heads.inputs(features[idx], train=True)):
                weight, bias = heads.weights[g], heads.biases[g]
                if weight.shape[2] == 0:
                    continue
                residual = torch.softmax(_group_logits(inputs, weight, bias), dim=1)  # [B, C, heads]
                residual[rows, targets] -= 1.0
                residual /= plan.batch
                grad_w = (inputs.T @ residual.view(plan.batch, -1)).view_as(weight)
                buf_w, buf_b = velocity[g]
                buf_w.mul_(config.momentum).add_(grad_w + decay[g] * weight)
                buf_b.mul_(config.momentum).add_(residual.sum(0))
                lr = base_lr[g] * (schedule * plan.batch / 256)
                weight.sub_(lr * buf_w)
                bias.sub_(lr * buf_b)
            step += 1
    return heads


@torch.no_grad()
def head_scores(heads: LinearHeads, features: torch.Tensor, labels: torch.Tensor,
                batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-1 and top-5 accuracy (percent) and mean cross-entropy (nats) of every head on
    features [N, D]: three float64 arrays [H]."""
    count = heads.num_heads
    hits1 = torch.zeros(count, dtype=torch.float64, device=features.device)
    hits5, loss = torch.zeros_like(hits1), torch.zeros_like(hits1)
    for start in range(0, features.shape[0], batch_size):
        logits = heads.logits(features[start:start + batch_size])  # [B, C, H]
        target = labels[start:start + batch_size]
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices  # [B, 5, H]
        hit = ranked == target[:, None, None]
        hits1 += hit[:, 0].sum(0)
        hits5 += hit.any(dim=1).sum(0)
        picked = logits[torch.arange(target.numel(), device=target.device), target]  # [B, H]
        loss += (torch.logsumexp(logits, dim=1) - picked).double().sum(0)
    n = features.shape[0]
    return (100.0 * hits1 / n).cpu().numpy(), (100.0 * hits5 / n).cpu().numpy(), (loss / n).cpu().numpy()


def _key(head: dict[str, Any]) -> tuple[bool, float, float]:
    return head["batchnorm"], head["lr"], head["wd"]


def _edges(config: LinearConfig, best: list[dict[str, Any]]) -> dict[str, str]:
    """The axes at whose end every one of the ``best`` heads (those sharing the best score) sits:
    {'lr' | 'wd': 'upper' | 'lower'}. An axis of one value is pinned, and a weight decay of 0
    is the bottom of its axis, not an edge."""
    edges: dict[str, str] = {}
    for axis, values in (("lr", config.learning_rates), ("wd", config.weight_decays)):
        ordered = sorted(set(values))
        chosen = {head[axis] for head in best}
        if len(ordered) < 2:
            continue
        if chosen == {ordered[-1]}:
            edges[axis] = "upper"
        elif chosen == {ordered[0]} and ordered[0] > 0:
            edges[axis] = "lower"
    return edges


def _beyond(values: tuple[float, ...], side: str) -> float:
    """One value past the ``side`` end of ``values`` at the ratio of its two outermost non-zero
    values (:data:`WD_STEP` above a single non-zero one), to 3 significant digits."""
    ordered = sorted(v for v in set(values) if v > 0)
    if side == "upper":
        step = ordered[-1] / ordered[-2] if len(ordered) > 1 else WD_STEP
        return float(f"{ordered[-1] * step:.3g}")
    return float(f"{ordered[0] * ordered[0] / ordered[1]:.3g}")


def _widened(config: LinearConfig, edges: dict[str, str]) -> LinearConfig:
    """``config`` with one more value past each edge (appended above, prepended below)."""
    lrs, wds = config.learning_rates, config.weight_decays
    if "lr" in edges:
        new = _beyond(lrs, edges["lr"])
        lrs = (*lrs, new) if edges["lr"] == "upper" else (new, *lrs)
    if "wd" in edges:
        new = _beyond(wds, edges["wd"])
        wds = (*wds, new) if edges["wd"] == "upper" else (new, *wds)
    return replace(config, learning_rates=lrs, weight_decays=wds)


def _train_missing(config: LinearConfig, done: dict[tuple[bool, float, float], dict[str, float]],
                   fit: tuple[torch.Tensor, torch.Tensor], select: tuple[torch.Tensor, torch.Tensor],
                   report: tuple[torch.Tensor, torch.Tensor], classes: int, progress: bool) -> None:
    """Train and score every head of ``config.grid()`` not in ``done`` (added to it).

    The missing heads are trained as product sub-grids (learning rates sharing one set of
    missing weight decays); a head ends the same in any grid, so they are the heads the whole
    grid would hold.
    """
    missing: dict[float, list[float]] = {}
    for head in config.grid():
        if _key(head) not in done and head["wd"] not in missing.setdefault(head["lr"], []):
            missing[head["lr"]].append(head["wd"])
    by_decays: dict[tuple[float, ...], list[float]] = {}
    for lr, wds in missing.items():
        if wds:
            by_decays.setdefault(tuple(wds), []).append(lr)
    for wds, lrs in by_decays.items():
        part = replace(config, learning_rates=tuple(lrs), weight_decays=wds)
        heads = train_heads(*fit, part, classes, progress=progress)
        val_top1, _, _ = head_scores(heads, *select)
        top1, top5, _ = head_scores(heads, *report)
        _, _, train_loss = head_scores(heads, *fit)
        for i, head in enumerate(part.grid()):
            done[_key(head)] = {"val_top1": float(val_top1[i]), "top1": float(top1[i]), "top5": float(top5[i]),
                                "train_loss": float(train_loss[i])}


def _sgd_probe(fit: tuple[torch.Tensor, torch.Tensor], select: tuple[torch.Tensor, torch.Tensor],
               report: tuple[torch.Tensor, torch.Tensor], config: LinearConfig, classes: int,
               progress: bool) -> LinearResult:
    """The SGD grid, widened past the edges its choice sits at, chosen on ``select``."""
    done: dict[tuple[bool, float, float], dict[str, float]] = {}
    widenings = 0
    while True:
        _train_missing(config, done, fit, select, report, classes, progress)
        params = config.grid()
        scores = [done[_key(p)] for p in params]
        val_top1 = [s["val_top1"] for s in scores]
        best = int(np.argmax(val_top1))  # first of equals, in grid order
        edges = _edges(config, [p for p, v in zip(params, val_top1) if v == val_top1[best]])
        if not edges or widenings == config.max_widenings:
            break
        config = _widened(config, edges)
        widenings += 1
    edge = "; ".join(f"the chosen {'learning rate' if axis == 'lr' else 'weight decay'} {params[best][axis]:g} is "
                     f"the {side} edge of the grid after {widenings} widening(s)" for axis, side in edges.items())
    if edge:
        warnings.warn(f"linear probe: {edge}; widen the grid (--lrs / --wds) or raise max_widenings", stacklevel=3)
    metrics = [Metric("top1", scores[best]["top1"], dict(params[best])),
               Metric("top5", scores[best]["top5"], dict(params[best]))]
    if select[1].numel():  # nothing to score on for one fixed head
        metrics += [Metric("val_top1", s["val_top1"], dict(p)) for p, s in zip(params, scores)]
    metrics += [Metric("train_loss", s["train_loss"], dict(p)) for p, s in zip(params, scores)]
    grid = [{**p, "val_top1": s["val_top1"], "train_loss": s["train_loss"]} for p, s in zip(params, scores)]
    plan = budget(fit[0].shape[0], config)
    training = {"steps": plan.steps, "epochs": plan.epochs, "widenings": widenings, "edge": edge,
                "learning_rates": list(config.learning_rates), "weight_decays": list(config.weight_decays)}
    sizes = {"fit": fit[0].shape[0], "select": select[0].shape[0], "eval": report[0].shape[0]}
    return LinearResult(metrics=metrics, chosen=grid[best], grid=grid, selected_on=config.select_on, solver="sgd",
                        training=training, sizes=sizes)


# ---------------------------------------------------------------------------------------------
# Exact logistic regression


def _lbfgs_probe(train: tuple[torch.Tensor, torch.Tensor], held: np.ndarray | None,
                 report: tuple[torch.Tensor, torch.Tensor], config: LinearConfig, classes: int) -> LinearResult:
    """Logistic regression over ``config.Cs``: with ``held`` (rows of ``train`` held out) C is
    chosen on them and refitted on all of ``train``; without, fitted on ``train`` and chosen on
    ``report``."""
    features, labels = train
    if held is not None:
        split = (np.setdiff1d(np.arange(labels.numel()), held), held)
        rows, row_labels, refit = features, labels, True
    else:
        n = labels.numel()
        split = (np.arange(n), np.arange(n, n + report[1].numel()))
        rows, row_labels, refit = torch.cat([features, report[0]]), torch.cat([labels, report[1]]), False
    chosen = logreg.select_C(rows, row_labels, classes, config.Cs, split=split, max_iter=config.max_iter,
                             tol=config.tol, search=config.C_search, refit=refit)
    model = chosen.model
    fitted = (features, labels) if refit else (features[split[0]], labels[split[0]])
    train_loss = logreg.mean_cross_entropy(model, *fitted)
    coords = {"C": chosen.C}
    metrics = [Metric("top1", logreg.topk_accuracy(model, *report, 1), coords),
               Metric("top5", logreg.topk_accuracy(model, *report, 5), coords)]
    metrics += [Metric("val_top1", score, {"C": C}) for C, score in chosen.scores.items()]
    grid = [{"C": C, "val_top1": score} for C, score in chosen.scores.items()]
    training = {"iterations": model.iterations, "converged": model.converged, "precision": model.precision,
                "objective": model.objective}
    sizes = {"fit": split[0].size, "select": split[1].size, "eval": report[1].numel(),
             "refit": labels.numel() if refit else split[0].size}
    choice = {**coords, "val_top1": chosen.scores[chosen.C], "train_loss": train_loss}
    return LinearResult(metrics=metrics, chosen=choice, grid=grid, selected_on=config.select_on, solver="lbfgs",
                        training=training, sizes=sizes)


def solver_to_run(config: LinearConfig, rows: int, dim: int) -> str:
    """'lbfgs' or 'sgd': ``config.solver``, or for 'auto' lbfgs when
    :func:`~jepa_eval.protocols.logreg.solver_bytes` of ``rows x dim`` is at most
    ``config.lbfgs_max_gib``."""
    if config.solver != "auto":
        return config.solver
    return "lbfgs" if logreg.solver_bytes(rows, dim) <= config.lbfgs_max_gib * 2 ** 30 else "sgd"


def linear_probe(train_features: Any, train_labels: Any, eval_features: Any, eval_labels: Any,
                 config: LinearConfig = LinearConfig(), num_classes: int | None = None,
                 device: str | torch.device | None = None, progress: bool = True) -> LinearResult:
    """Fit on train features [N, D], choose on held-out train (or eval), report on eval features [M, D]."""
    _check_config(config)
    x_train, y_train, x_eval, y_eval = check_split_pair(train_features, train_labels, eval_features, eval_labels)
    classes = check_num_classes(num_classes, y_train, y_eval)
    device = resolve_device(device)
    train_x, eval_x = torch.from_numpy(x_train).to(device), torch.from_numpy(x_eval).to(device)
    if config.standardize:
        standardizer = fit_standardizer(train_x)
        train_x, eval_x = standardizer(train_x), standardizer(eval_x)
    train = (train_x, torch.from_numpy(y_train).to(device))
    report = (eval_x, torch.from_numpy(y_eval).to(device))
    held = stratified_split(y_train, config.val_fraction, config.seed)[1] if config.select_on == "val" else None
    rows = y_train.size + (y_eval.size if held is None else 0)
    if solver_to_run(config, rows, x_train.shape[1]) == "lbfgs":
        return _lbfgs_probe(train, held, report, config, classes)
    if config.select_on == "none":
        return _sgd_probe(train, (train[0][:0], train[1][:0]), report, config, classes, progress)
    if held is None:
        return _sgd_probe(train, report, report, config, classes, progress)
    fit_rows = torch.from_numpy(np.setdiff1d(np.arange(y_train.size), held)).to(device)
    held_rows = torch.from_numpy(held).to(device)
    return _sgd_probe((train[0][fit_rows], train[1][fit_rows]), (train[0][held_rows], train[1][held_rows]),
                      report, config, classes, progress)


# ---------------------------------------------------------------------------------------------
# Protocol


def evaluate(inputs: Inputs, config: LinearConfig) -> Evaluation:
    """:func:`linear_probe` on the training and evaluation splits; the summary gives the chosen
    classifier's top-1/top-5, its hyper-parameters and how the solver ran."""
    result = linear_probe(inputs.train.features, inputs.train.labels, inputs.eval.features, inputs.eval.labels,
                          config, num_classes=inputs.num_classes, device=inputs.device, progress=inputs.progress)
    summary: dict[str, Any] = {m.name: m.value for m in result.metrics if m.name in ("top1", "top5")}
    summary["solver"] = result.solver
    summary.update({f"chosen_{k}": v for k, v in result.chosen.items()})
    summary.update({k: v for k, v in result.training.items() if k not in ("learning_rates", "weight_decays")})
    params: dict[str, Any] = {"selected_on": result.selected_on, "solver_ran": result.solver}
    if result.solver == "sgd":
        params.update(grid_learning_rates=result.training["learning_rates"],
                      grid_weight_decays=result.training["weight_decays"])
    return Evaluation(result.metrics, summary, params=params)


def _caption(shown: Shown) -> str:
    chosen = [p for p in shown.params if p.get("selected_on", p.get("select_on", "val")) != "none"]
    parts = ["one fixed head"] if len(chosen) < len(shown.params) else []
    if chosen:
        on = {p.get("selected_on", p.get("select_on", "val")) for p in chosen}
        where = ("held-out val" if on == {"val"} else "the evaluation split" if on == {"eval"}
                 else "held-out val or the evaluation split")
        solvers = {p.get("solver_ran", "sgd") for p in chosen}  # records before version 2 ran the grid
        what = {frozenset({"sgd"}): "best head", frozenset({"lbfgs"}): "logistic regression, C chosen"}.get(
            frozenset(solvers), "best head or logistic-regression C")
        parts.append(f"{what} on {where}")
    return "linear: " + " or ".join(parts)


def _describe(record: ResultRecord) -> str:
    kind = "logistic regression" if record.params.get("solver_ran") == "lbfgs" else "SGD heads"
    on = record.params["selected_on"]
    return (f"linear probe ({kind}) on {record.dataset.name} ({record.features.mode}), "
            + ("one fixed head" if on == "none" else f"chosen on {on}"))


PROTOCOL = register(Protocol(
    name="linear", version="2", label="linear", config=LinearConfig, evaluate=evaluate, caption=_caption,
    summary="linear probe: exact logistic regression (C chosen on held-out data, refitted) or a grid of SGD "
            "heads (lr x wd x BatchNorm) trained at once, on standardised features",
    describe=_describe, needs=lambda config: Needs(shots=config.shots, shot_seeds=config.shot_seeds),
    setting=shots_setting, headline=("top1",), tables=(TableSpec("top1", "top1", shared=True),), plots=(PlotSpec("bars"),),
    transfer=Selection(score=lambda summary: summary["chosen_val_top1"], on="val", by="val_top1"),
))
