"""Linear probe on frozen features: exact logistic regression, or a grid of SGD heads.

Two solvers of the same task, chosen by ``solver``:

- ``lbfgs``: multinomial logistic regression (scikit-learn's objective, solved exactly by
  :mod:`jepa_eval.protocols.logreg`, the solver ``lowshot`` uses) over the grid ``Cs``; C is
  chosen by top-1 on the held-out split and the model is refitted on all training features at
  that C (DINOv2's log-regression and CLIP-style transfer protocol). The fits run to ``tol``
  1e-6, not scikit-learn's 1e-4: warm-started along the grid, a weakly regularised fit at 1e-4
  often meets the stopping rule where the previous C ended and stops there (0 iterations), so
  several C score one classifier; such C are recorded (``unmoved_Cs``), with a warning when
  they follow the chosen C (larger C were then not really tried).
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

Augmented recipe (``augment='crop'`` or ``'vjepa'``, SGD only): the papers' linear probes train
on augmented images, so features cannot be cached. The backbone runs in the loop
(:class:`~jepa_eval.features.stream.StreamedFeatures`): every epoch's training batches are
freshly augmented (``crop``: RandomResizedCrop + horizontal flip, as DINOv2, VISSL and MAE) and
the held-out rows and the evaluation split are scored un-augmented. The grid trains once, no
widening. ``optimizer='lars'`` with ``warmup_epochs`` and a BatchNorm head is MAE's linprobe
(LARS, trust coefficient 1e-3, no weight decay or LARS scaling on biases and BatchNorm).
Under torchrun each process streams its shard of every batch, gradients and BatchNorm
statistics are summed over processes, so the heads are those of one process with the whole
batch.

Features are moved to the device once (CUDA when available); SGD heads train in float32.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from jepa_eval.core.devices import rank_and_world, resolve_device
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.progress import progress as progress_bar
from jepa_eval.protocols import logreg
from jepa_eval.protocols.checks import check_num_classes, check_split_pair
from jepa_eval.features.stream import AUGMENTATIONS
from jepa_eval.features.tokens import epoch_batches
from jepa_eval.protocols.linear_heads import (INIT_STD, OPTIMIZERS, Budget, HeadTrainer, LinearHeads, Optimiser,
                                             Standardizer, all_reduce_sum, fit_standardizer, head_counts, head_scores,
                                             plan_steps, scores_of)
from jepa_eval.protocols.registry import (Evaluation, Inputs, Needs, PlotSpec, Protocol, Selection, Shown, Spelling,
                                          TableSpec, option, register)
from jepa_eval.protocols.sampling import shot_seeds_field, shots_field, shots_setting
from jepa_eval.results.record import Metric, ResultRecord

SELECT_ON = ("val", "eval", "none")
SOLVERS = ("auto", "lbfgs", "sgd")
C_SEARCHES = logreg.SEARCHES
HEAD_VARIANTS = {"plain": (False,), "bn": (True,), "both": (False, True)}
#: Widening step of a weight-decay axis with a single non-zero value.
WD_STEP = 10.0
#: Seeded training images whose un-augmented features standardise an augmented run.
STANDARDIZE_ROWS = 10_000


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
    tol: float = option(1e-6, "L-BFGS stopping tolerance on the largest gradient entry (scikit-learn's rule; "
                              "its default 1e-4 leaves weakly regularised fits at their warm start).")
    lbfgs_max_gib: float = option(4.0, "Largest lbfgs memory estimate (GiB) for which auto chooses lbfgs.")
    augment: str = option("none", "Train on augmented images with the backbone in the loop (sgd): none, crop "
                                  "(RandomResizedCrop + flip, as DINOv2, VISSL and MAE), or vjepa.")
    optimizer: str = option("sgd", "The SGD grid's update: sgd (momentum), or lars (MAE's linprobe, with --batchnorm bn).")
    warmup_epochs: int = option(0, "Epochs of linear learning-rate warm-up before the cosine (sgd; MAE: 10).")
    trust_coefficient: float = 1e-3
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
    lbfgs: 'iterations', 'converged', 'precision', 'objective' of the final fit and 'unmoved_Cs',
    the values of C whose fit took no iteration from its warm start, and 'untried_Cs', those of
    them right above the chosen C; lbfgs grid entries also give each fit's 'iterations').
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
    if config.optimizer not in OPTIMIZERS or config.warmup_epochs < 0:
        problems.append(f"optimizer {config.optimizer!r}, warmup_epochs {config.warmup_epochs}")
    if config.augment not in ("none", *AUGMENTATIONS) or (config.augment != "none" and (
            config.solver == "lbfgs" or config.shots)):
        problems.append(f"augment {config.augment!r} with solver {config.solver!r} and shots {list(config.shots)}")
    if config.solver not in SOLVERS or config.C_search not in C_SEARCHES:
        problems.append(f"solver {config.solver!r}, C_search {config.C_search!r}")
    if not config.Cs or min(config.Cs) <= 0 or config.max_iter < 1 or config.tol <= 0 or config.lbfgs_max_gib < 0:
        problems.append(f"Cs {list(config.Cs)}, max_iter {config.max_iter}, tol {config.tol}, "
                        f"lbfgs_max_gib {config.lbfgs_max_gib}")
    if problems:
        raise JepaEvalError("invalid linear-probe settings",
                            expected="non-empty lr/wd/batchnorm lists (lr > 0, wd >= 0), epochs and batch size "
                                     f">= 1, min_steps and max_widenings >= 0, select_on in {SELECT_ON} ('none': solver sgd, one head), "
                                     f"0 < val_fraction < 1, optimizer in {OPTIMIZERS}, warmup_epochs >= 0, augment in "
                                     f"{('none', *AUGMENTATIONS)} (with the sgd or auto solver and no shots), "
                                     f"solver in {SOLVERS}, C_search in {C_SEARCHES}, "
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


# ---------------------------------------------------------------------------------------------
# The SGD grid


def budget(rows: int, config: LinearConfig) -> Budget:
    """The SGD budget of ``config`` on ``rows`` samples (:func:`~jepa_eval.protocols.linear_heads.plan_steps`)."""
    return plan_steps(rows, batch_size=config.batch_size, epochs=config.epochs, min_steps=config.min_steps)


def optimiser_of(config: LinearConfig, steps_per_epoch: int) -> Optimiser:
    """The SGD grid's optimiser as ``config`` sets it (warm-up counted in steps)."""
    return Optimiser(config.optimizer, config.momentum, config.warmup_epochs * steps_per_epoch,
                     config.trust_coefficient)


def train_heads(features: torch.Tensor, labels: torch.Tensor, config: LinearConfig,
                num_classes: int, progress: bool = True) -> LinearHeads:
    """Train every head of ``config.grid()`` on features [N, D] / labels [N] (same device).

    Mini-batch order and initial weights depend only on ``config.seed`` (and N, D, C), never on
    the grid: each epoch is a permutation seeded by (seed, epoch) cut into full batches
    (:func:`~jepa_eval.features.tokens.epoch_batches`, the order a streamed split takes too).
    """
    n, dim = features.shape
    if n < 2:
        raise JepaEvalError("too few samples to train linear heads",
                            expected="at least 2 training samples", found=f"{n}")
    generator = torch.Generator().manual_seed(config.seed)
    init = (torch.randn(dim, num_classes, generator=generator) * INIT_STD).to(features.device)
    plan = budget(n, config)
    trainer = HeadTrainer(config.grid(), init, optimiser_of(config, plan.steps_per_epoch))
    step = 0
    for epoch in progress_bar(range(plan.epochs), desc="linear heads", unit="epoch", enabled=progress, leave=False):
        for rows in epoch_batches(np.arange(n), plan.batch, train=True, seed=config.seed, epoch=epoch):
            idx = torch.from_numpy(rows).to(features.device)
            trainer.update(features[idx], labels[idx], step, plan)
            step += 1
    return trainer.heads


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
    grid = [{"C": fit.C, "val_top1": chosen.scores[fit.C], "iterations": fit.iterations} for fit in chosen.path]
    untried = chosen.untried
    if untried:
        warnings.warn(f"linear probe: at tol {config.tol:g} the fits at C = {', '.join(f'{C:g}' for C in untried)} "
                      f"took no L-BFGS iteration from the chosen C = {chosen.C:g} fit, which already met the "
                      "stopping rule there, so the choice among them is not resolved; lower --tol", stacklevel=3)
    training = {"iterations": model.iterations, "converged": model.converged, "precision": model.precision,
                "objective": model.objective, "unmoved_Cs": chosen.unmoved, "untried_Cs": untried}
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
# The augmented recipe: the backbone in the loop


def streamed_standardizer(source: Any, rows: np.ndarray, device: torch.device, shard: tuple[int, int]) -> Standardizer:
    """Mean and std (ddof 0) of the un-augmented features of ``rows`` of a streamed split, summed
    over torchrun's processes in float64 (:func:`fit_standardizer`'s rule for constant dims)."""
    total = sq = None
    for features, _ in source.batches(rows, 4096, train=False, shard=shard).epoch(0):
        part = features.to(device).double()
        total = part.sum(0) if total is None else total + part.sum(0)
        sq = (part * part).sum(0) if sq is None else sq + (part * part).sum(0)
    if total is None:
        total = sq = torch.zeros(source.shape[1], dtype=torch.float64, device=device)
    total, sq = all_reduce_sum(total), all_reduce_sum(sq)
    mean = total / rows.size
    std = (sq / rows.size - mean * mean).clamp_min(0.0).sqrt()
    scale = torch.where(std > 1e-12 * mean.abs().clamp(min=1.0), std, torch.ones_like(std))
    return Standardizer(mean.float(), scale.float())


def augmented_probe(train: Any, report: Any, config: LinearConfig, num_classes: int,
                    device: str | torch.device | None = None, progress: bool = True) -> LinearResult:
    """The SGD grid with the backbone in the loop: ``train`` and ``report`` are streamed feature
    sources (:class:`~jepa_eval.features.stream.StreamedFeatures`) of the training split (its
    training batches augmented) and of the evaluation split (never augmented).

    The grid is trained once (no widening: every pass runs the backbone), on features standardised
    with the statistics of at most :data:`STANDARDIZE_ROWS` seeded un-augmented training images;
    the held-out rows and the evaluation split are scored un-augmented. ``train_loss`` is each
    head's mean cross-entropy over the last epoch's (augmented) batches. Under torchrun every
    process trains and scores its share of every batch; gradients, statistics and counts are summed.
    """
    _check_config(config)
    device = resolve_device(device)
    shard = rank_and_world()
    labels = train.labels
    fit_rows = np.arange(labels.size)
    select = None
    if config.select_on == "val":
        fit_rows, held = stratified_split(labels, config.val_fraction, config.seed)
        select = (train, held)
    elif config.select_on == "eval":
        select = (report, np.arange(report.labels.size))
    standardizer = None
    if config.standardize:
        picked = np.sort(np.random.default_rng(config.seed).permutation(fit_rows)[:STANDARDIZE_ROWS])
        standardizer = streamed_standardizer(train, picked, device, shard)
    plan = budget(fit_rows.size, config)
    generator = torch.Generator().manual_seed(config.seed)
    init = (torch.randn(train.shape[1], num_classes, generator=generator) * INIT_STD).to(device)
    trainer = HeadTrainer(config.grid(), init, optimiser_of(config, plan.steps_per_epoch))
    batches = train.batches(fit_rows, plan.batch, train=True, seed=config.seed, shard=shard)
    step, last_loss = 0, None
    for epoch in progress_bar(range(plan.epochs), desc="linear heads (augmented)", unit="epoch", enabled=progress,
                              leave=False):
        last_loss = None
        for features, targets in batches.epoch(epoch):
            features = features.to(device)
            loss = trainer.update(standardizer(features) if standardizer else features, targets.to(device), step, plan)
            last_loss = loss if last_loss is None else last_loss + loss
            step += 1
    train_loss = (all_reduce_sum(last_loss) / (plan.steps_per_epoch * plan.batch)).cpu().numpy()

    def scores(source: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stream = ((standardizer(x.to(device)) if standardizer else x.to(device), y.to(device))
                  for x, y in source.batches(rows, 4096, train=False, shard=shard).epoch(0))
        return scores_of(*head_counts(trainer.heads, stream))

    params = config.grid()
    val_top1 = scores(*select)[0] if select is not None else np.full(len(params), np.nan)
    best = int(np.nanargmax(val_top1)) if select is not None else 0  # first of equals, in grid order
    top1, top5, _ = scores(report, np.arange(report.labels.size))
    edges = _edges(config, [p for p, v in zip(params, val_top1) if v == val_top1[best]]) if select is not None else {}
    edge = "; ".join(f"the chosen {'learning rate' if axis == 'lr' else 'weight decay'} {params[best][axis]:g} is "
                     f"the {side} edge of the grid" for axis, side in edges.items())
    if edge:
        warnings.warn(f"linear probe (augmented): {edge}; widen the grid (--lrs / --wds)", stacklevel=2)
    metrics = [Metric("top1", float(top1[best]), dict(params[best])), Metric("top5", float(top5[best]), dict(params[best]))]
    if select is not None:
        metrics += [Metric("val_top1", float(v), dict(p)) for p, v in zip(params, val_top1)]
    metrics += [Metric("train_loss", float(v), dict(p)) for p, v in zip(params, train_loss)]
    grid = [{**p, "val_top1": None if np.isnan(v) else float(v), "train_loss": float(loss)}
            for p, v, loss in zip(params, val_top1, train_loss)]
    training = {"steps": plan.steps, "epochs": plan.epochs, "widenings": 0, "edge": edge,
                "learning_rates": list(config.learning_rates), "weight_decays": list(config.weight_decays),
                "augment": config.augment, "optimizer": config.optimizer,
                "standardized_on": int(min(STANDARDIZE_ROWS, fit_rows.size)) if standardizer else 0}
    sizes = {"fit": int(fit_rows.size), "select": 0 if select is None else int(select[1].size),
             "eval": int(report.labels.size)}
    return LinearResult(metrics=metrics, chosen=grid[best], grid=grid, selected_on=config.select_on, solver="sgd",
                        training=training, sizes=sizes)


# ---------------------------------------------------------------------------------------------
# Protocol


def evaluate(inputs: Inputs, config: LinearConfig) -> Evaluation:
    """:func:`linear_probe` on the training and evaluation splits; the summary gives the chosen
    classifier's top-1/top-5, its hyper-parameters and how the solver ran."""
    if config.augment == "none":
        result = linear_probe(inputs.train.features, inputs.train.labels, inputs.eval.features, inputs.eval.labels,
                              config, num_classes=inputs.num_classes, device=inputs.device, progress=inputs.progress)
    else:
        result = augmented_probe(inputs.train.features, inputs.eval.features, config, inputs.num_classes,
                                 device=inputs.device, progress=inputs.progress)
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
    name="linear", version="4", label="linear", config=LinearConfig, evaluate=evaluate, caption=_caption,
    summary="linear probe: exact logistic regression (C chosen on held-out data, refitted) or a grid of SGD "
            "heads (lr x wd x BatchNorm) trained at once, on standardised features",
    describe=_describe, needs=lambda config: Needs(shots=config.shots, shot_seeds=config.shot_seeds,
                                                   stream=None if config.augment == "none" else config.augment),
    setting=shots_setting, headline=("top1",), tables=(TableSpec("top1", "top1", shared=True),), plots=(PlotSpec("bars"),),
    transfer=Selection(score=lambda summary: summary["chosen_val_top1"], on="val", by="val_top1"),
))
