"""Linear probe: a grid of linear heads on frozen features, trained at once, one head chosen.

The grid is learning rate x weight decay x BatchNorm (DINOv2 trains a grid of heads from one
pass; MAE puts ``BatchNorm1d(affine=False, eps=1e-6)`` before its linear layer). All heads see
the same mini-batches in the same order and start from the same N(0, 0.01) weights (bias 0),
so they differ only in their hyper-parameters, and a head trained in a grid ends exactly where
it would end trained alone.

Training: cross-entropy, SGD with momentum (PyTorch's rule; weight decay on the weights, not
the bias), learning rate ``lr x batch / 256`` (DINO's scaling, with the batch actually used;
``lr`` in results is the unscaled grid value) following a cosine from that value to 0, stepped
every iteration. Each epoch is a seeded permutation cut into full batches (the last incomplete
one is dropped; a split smaller than a batch is one full-data batch).

Selection (``select_on='val'``, the default): a stratified, seeded ``val_fraction`` of the
training features is held out; the grid trains on the rest; the head with the best top-1 on
the held-out part (the first in ``LinearConfig.grid()`` order on ties) is chosen, and ITS
top-1/top-5 on the evaluation split are reported. It is not retrained on the full training
split, so the reported head is exactly the one selected. ``select_on='eval'`` is DINOv2's
behaviour: the grid trains on all training features and the head is chosen by its top-1 on
the evaluation split itself (an optimistic number; the result says so in ``selected_on``).
``select_on='none'`` trains one fixed head (a grid of one) on all training features and chooses
nothing: for k-shot draws too small to hold anything out (1 image a class).

Features are moved to the device once (CUDA when available); heads train in float32.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jepa_eval.core.devices import resolve_device
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.progress import progress as progress_bar
from jepa_eval.protocols.checks import check_num_classes, check_split_pair
from jepa_eval.protocols.registry import (Evaluation, Inputs, Needs, PlotSpec, Protocol, Selection, Shown, Spelling,
                                          TableSpec, option, register)
from jepa_eval.protocols.sampling import shot_seeds_field, shots_field, shots_setting
from jepa_eval.results.record import Metric, ResultRecord

SELECT_ON = ("val", "eval", "none")
INIT_STD = 0.01
BN_EPS = 1e-6
HEAD_VARIANTS = {"plain": (False,), "bn": (True,), "both": (False, True)}


def _head_variants(text: str) -> tuple[bool, ...]:
    if text not in HEAD_VARIANTS:
        raise JepaEvalError(f"unknown --batchnorm value {text!r}", expected="plain, bn or both")
    return HEAD_VARIANTS[text]


@dataclass
class LinearConfig:
    """Linear-probe hyper-parameters; the grid is every (lr, wd, batchnorm) combination."""

    learning_rates: tuple[float, ...] = option((1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
                                               "Comma-separated base learning rates.", flag="--lrs")
    weight_decays: tuple[float, ...] = option((0.0, 5e-4), "Comma-separated weight decays.", flag="--wds")
    batchnorm: tuple[bool, ...] = option((False, True), "Head variants: plain, bn, or both.",
                                         spelling=Spelling(str, _head_variants, "both"))
    epochs: int = option(50, "Epochs over the cached features.")
    batch_size: int = 256
    momentum: float = 0.9
    val_fraction: float = option(0.1, "Share of train held out to choose the head.")
    seed: int = 0
    # 'val' (held out from train), 'eval' (DINOv2: the reported split) or 'none' (one fixed head)
    select_on: str = option("val", "Choose the head on the evaluation split (DINOv2's behaviour; recorded).",
                            flag="--select-on-eval", spelling=Spelling(bool, lambda on: "eval" if on else "val", False))
    shots: tuple[int | str, ...] = shots_field()
    shot_seeds: int = shot_seeds_field()

    def grid(self) -> list[dict[str, Any]]:
        """Every head's hyper-parameters: [{'lr', 'wd', 'batchnorm'}, ...].

        Heads without BatchNorm come first, then by learning rate, then by weight decay, in the
        order given; selection ties go to the earliest head in this order.
        """
        return [{"lr": float(lr), "wd": float(wd), "batchnorm": bn} for bn, lr, wd in
                itertools.product(sorted(set(map(bool, self.batchnorm))),
                                  self.learning_rates, self.weight_decays)]


@dataclass
class LinearResult:
    """The chosen head's evaluation numbers, the choice, and the whole grid's selection scores.

    ``metrics``: 'top1' and 'top5' of the chosen head on the evaluation split, then one
    'val_top1' row per head (top-1 on the selection split), all with coords
    {'lr', 'wd', 'batchnorm'}.
    ``chosen``: {'lr', 'wd', 'batchnorm', 'val_top1'}. ``grid``: one such dict per head.
    ``sizes``: samples the heads trained on ('fit'), were chosen on ('select') and were
    reported on ('eval').
    """

    metrics: list[Metric]
    chosen: dict[str, Any]
    grid: list[dict[str, Any]]
    selected_on: str
    sizes: dict[str, int] = field(default_factory=dict)


class LinearHeads(nn.Module):
    """H linear classifiers over the same D-dim features: weight [H, D, C], bias [H, C].

    The last ``num_bn`` heads read BatchNorm1d(affine=False, eps=1e-6)-normalised features. One
    norm layer serves all of them: it has no parameters, so its statistics depend only on the
    batches, which every head shares.
    """

    def __init__(self, weight: torch.Tensor, num_bn: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)  # [H, D, C]
        self.bias = nn.Parameter(weight.new_zeros(weight.shape[0], weight.shape[2]))  # [H, C]
        self.num_bn = num_bn
        self.norm = nn.BatchNorm1d(weight.shape[1], eps=BN_EPS, affine=False) if num_bn else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits [H, B, C] for features [B, D]: one matmul per input kind, shared by its heads."""
        plain = self.weight.shape[0] - self.num_bn
        logits = []
        if plain:
            logits.append(torch.einsum("bd,hdc->hbc", features, self.weight[:plain]))
        if self.norm is not None:
            logits.append(torch.einsum("bd,hdc->hbc", self.norm(features), self.weight[plain:]))
        return torch.cat(logits) + self.bias[:, None, :]


def _check_config(config: LinearConfig) -> None:
    problems = []
    if not (config.learning_rates and config.weight_decays and config.batchnorm):
        problems.append("an empty grid axis")
    if config.epochs < 1 or config.batch_size < 1:
        problems.append(f"epochs {config.epochs}, batch size {config.batch_size}")
    if config.select_on not in SELECT_ON:
        problems.append(f"select_on {config.select_on!r}")
    if config.select_on == "val" and not 0.0 < config.val_fraction < 1.0:
        problems.append(f"val_fraction {config.val_fraction}")
    if config.select_on == "none" and len(config.grid()) != 1:
        problems.append(f"select_on 'none' with a grid of {len(config.grid())} heads")
    if problems:
        raise JepaEvalError("invalid linear-probe settings",
                            expected="non-empty lr/wd/batchnorm lists, positive epochs and batch "
                                     f"size, select_on in {SELECT_ON} (one head for 'none'), 0 < val_fraction < 1",
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


def train_heads(features: torch.Tensor, labels: torch.Tensor, config: LinearConfig,
                num_classes: int, progress: bool = True) -> LinearHeads:
    """Train every head of ``config.grid()`` on features [N, D] / labels [N] (same device).

    Returns the heads in eval mode. Mini-batch order and initial weights depend only on
    ``config.seed`` (and N, D, C), never on the grid.
    """
    grid = config.grid()
    n, dim = features.shape
    if n < 2:
        raise JepaEvalError("too few samples to train linear heads",
                            expected="at least 2 training samples", found=f"{n}")
    device = features.device
    generator = torch.Generator().manual_seed(config.seed)
    init = torch.randn(dim, num_classes, generator=generator) * INIT_STD
    heads = LinearHeads(init.expand(len(grid), -1, -1).clone(), sum(h["batchnorm"] for h in grid))
    heads.to(device).train()
    batch = min(config.batch_size, n)
    steps_per_epoch = n // batch
    total_steps = config.epochs * steps_per_epoch
    base_lr = torch.tensor([h["lr"] for h in grid], device=device) * batch / 256
    weight_decay = torch.tensor([h["wd"] for h in grid], device=device)[:, None, None]
    velocity = [torch.zeros_like(heads.weight), torch.zeros_like(heads.bias)]
    step = 0
    for _ in progress_bar(range(config.epochs), desc="linear heads", unit="epoch", enabled=progress, leave=False):
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, steps_per_epoch * batch, batch):
            idx = order[start:start + batch]
            logits = heads(features[idx])  # [H, B, C]
            loss = F.cross_entropy(logits.reshape(-1, num_classes), labels[idx].repeat(len(grid)),
                                   reduction="sum") / batch  # sum over heads of each head's mean
            grad_w, grad_b = torch.autograd.grad(loss, [heads.weight, heads.bias])
            lr = base_lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
            with torch.no_grad():
                velocity[0].mul_(config.momentum).add_(grad_w + weight_decay * heads.weight)
                velocity[1].mul_(config.momentum).add_(grad_b)
                heads.weight.sub_(lr[:, None, None] * velocity[0])
                heads.bias.sub_(lr[:, None] * velocity[1])
            step += 1
    return heads.eval()


@torch.no_grad()
def head_accuracies(heads: LinearHeads, features: torch.Tensor, labels: torch.Tensor,
                    batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 and top-5 accuracy (percent, float64 [H] each) of every head on features [N, D]."""
    heads.eval()
    hits1 = torch.zeros(heads.weight.shape[0], dtype=torch.int64, device=features.device)
    hits5 = torch.zeros_like(hits1)
    top = min(5, heads.weight.shape[2])
    for start in range(0, features.shape[0], batch_size):
        ranked = heads(features[start:start + batch_size]).topk(top, dim=-1).indices  # [H, B, 5]
        hit = ranked == labels[start:start + batch_size][None, :, None]
        hits1 += hit[..., 0].sum(dim=1)
        hits5 += hit.any(dim=-1).sum(dim=1)
    count = features.shape[0]
    return (100.0 * hits1.cpu().numpy() / count, 100.0 * hits5.cpu().numpy() / count)


def linear_probe(train_features: Any, train_labels: Any, eval_features: Any, eval_labels: Any,
                 config: LinearConfig = LinearConfig(), num_classes: int | None = None,
                 device: str | torch.device | None = None, progress: bool = True) -> LinearResult:
    """Train the grid on train features [N, D], choose a head, report it on eval features [M, D]."""
    _check_config(config)
    x_train, y_train, x_eval, y_eval = check_split_pair(train_features, train_labels, eval_features, eval_labels)
    classes = check_num_classes(num_classes, y_train, y_eval)
    device = resolve_device(device)

    def on_device(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(device)

    if config.select_on == "val":
        fit, held = stratified_split(y_train, config.val_fraction, config.seed)
        fit_x, fit_y = on_device(x_train[fit]), on_device(y_train[fit])
        select_x, select_y = on_device(x_train[held]), on_device(y_train[held])
        eval_x, eval_y = on_device(x_eval), on_device(y_eval)
    elif config.select_on == "none":  # one head: nothing to choose, no selection split
        fit_x, fit_y = on_device(x_train), on_device(y_train)
        eval_x, eval_y = on_device(x_eval), on_device(y_eval)
        select_x, select_y = fit_x[:0], fit_y[:0]
    else:
        fit_x, fit_y = on_device(x_train), on_device(y_train)
        eval_x, eval_y = select_x, select_y = on_device(x_eval), on_device(y_eval)
    heads = train_heads(fit_x, fit_y, config, classes, progress=progress)
    select_top1 = head_accuracies(heads, select_x, select_y)[0] if select_x.shape[0] else np.full(1, np.nan)
    best = int(np.argmax(select_top1))  # first of equals, in grid order
    eval_top1, eval_top5 = head_accuracies(heads, eval_x, eval_y)
    params = config.grid()
    metrics = [Metric("top1", float(eval_top1[best]), dict(params[best])),
               Metric("top5", float(eval_top5[best]), dict(params[best]))]
    if config.select_on != "none":
        metrics += [Metric("val_top1", float(v), p) for p, v in zip(params, select_top1)]
    grid = [{**p, "val_top1": None if np.isnan(v) else float(v)} for p, v in zip(params, select_top1)]
    sizes = {"fit": fit_x.shape[0], "select": select_x.shape[0], "eval": eval_x.shape[0]}
    return LinearResult(metrics=metrics, chosen=grid[best], grid=grid,
                        selected_on=config.select_on, sizes=sizes)


def evaluate(inputs: Inputs, config: LinearConfig) -> Evaluation:
    """:func:`linear_probe` on the training and evaluation splits; the summary gives the chosen
    head's top-1/top-5 and hyper-parameters."""
    result = linear_probe(inputs.train.features, inputs.train.labels, inputs.eval.features, inputs.eval.labels,
                          config, num_classes=inputs.num_classes, device=inputs.device, progress=inputs.progress)
    summary: dict[str, Any] = {m.name: m.value for m in result.metrics if m.name in ("top1", "top5")}
    summary.update({f"chosen_{k}": v for k, v in result.chosen.items()})
    return Evaluation(result.metrics, summary, params={"selected_on": result.selected_on})


SELECTION_WORDS = {"val": "best head on held-out val", "eval": "best head on the evaluation split",
                   "none": "one fixed head"}


def _caption(shown: Shown) -> str:
    on = sorted({p.get("selected_on", p.get("select_on", "val")) for p in shown.params})
    return "linear: " + " or ".join(SELECTION_WORDS[o] for o in on)


def _describe(record: ResultRecord) -> str:
    on = record.params["selected_on"]
    return (f"linear probe on {record.dataset.name} ({record.features.mode}), "
            + ("one fixed head" if on == "none" else f"head chosen on {on}"))


PROTOCOL = register(Protocol(
    name="linear", version="1", label="linear", config=LinearConfig, evaluate=evaluate, caption=_caption,
    summary="grid of linear heads (lr x wd x BatchNorm) trained at once, chosen on held-out data",
    describe=_describe, needs=lambda config: Needs(shots=config.shots, shot_seeds=config.shot_seeds),
    setting=shots_setting, headline=("top1",), tables=(TableSpec("top1", "top1", shared=True),), plots=(PlotSpec("bars"),),
    transfer=Selection(score=lambda summary: summary["chosen_val_top1"], on="val", by="val_top1"),
))
