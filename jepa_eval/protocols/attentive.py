"""Attentive probe: a grid of attentive probes on frozen patch tokens, trained at once, one chosen.

The tokens are the patch tokens of the last block after the final norm (``blocks`` > 1: the last
N blocks, concatenated along the channels or averaged), from the token cache or from the backbone
run in the loop with augmentation (``augment``; :mod:`jepa_eval.features.stream`). The probe
architectures are in :mod:`~jepa_eval.protocols.attentive_probes`, the grid training in
:mod:`~jepa_eval.protocols.attentive_training`.

The grid is learning rate x weight decay (:meth:`AttentiveConfig.grid`). Selection
(``select_on='val'``, the default, as CAPI): the probes train on the training split less a
stratified, seeded ``val_fraction``; the one with the best top-1 on that held-out part (the
first in grid order on ties) is chosen and ITS top-1/top-5 on the evaluation split are reported.
The held-out part is never augmented. ``select_on='eval'`` is V-JEPA's behaviour: train on all
of train and choose on the evaluation split itself (optimistic; the record says so in
``selected_on``).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from jepa_eval.core.devices import rank_and_world, resolve_device
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.features.modes import TOKEN_POOLING
from jepa_eval.features.tokens import TokenArray, TokenSource
from jepa_eval.protocols.attentive_probes import VARIANTS, AttentiveProbe, ProbeArch, ProbeGrid, make_arch
from jepa_eval.protocols.attentive_training import Optimisation, probe_accuracies, train_probe_grid
from jepa_eval.protocols.checks import check_labels, check_num_classes
from jepa_eval.protocols.linear import stratified_split
from jepa_eval.protocols.registry import (Evaluation, Inputs, Needs, PlotSpec, Protocol, Selection, Shown, Spelling,
                                          TableSpec, TokensNeeded, joined, option, register)
from jepa_eval.results.record import Metric, ResultRecord

SELECT_ON = ("val", "eval")
AUGMENT = ("none", "crop", "vjepa")


@dataclass
class AttentiveConfig:
    """Attentive-probe hyper-parameters; the grid is every (lr, wd) pair.

    Sources of the defaults:
    - architecture: ``variant`` 'vjepa' (V-JEPA's AttentiveClassifier); ``heads`` None = the
      encoder's (V-JEPA's rule; D // 64 when the tokens do not say; ep has one); ``queries``
      None = 1 (V-JEPA, V-JEPA 2, CAPI) or 32 (ep); ``mlp_ratio`` 4 (V-JEPA);
      ``self_attention_blocks`` 3 for 'vjepa2' (V-JEPA 2's num_probe_blocks 4 = 3 self-attention
      blocks + the cross-attention block).
    - grid: V-JEPA 2's ImageNet grid, lr {5e-4, 1e-3, 1.5e-3, 2e-3} x wd {8e-3, 4e-3, 2e-3, 1e-3,
      5e-4} (without its extra V-JEPA-setting probe); ``start_lr`` 2e-4, ``final_lr`` 0 (V-JEPA 2);
      ``final_weight_decay`` None = constant (V-JEPA 2; V-JEPA uses a cosine 1e-3 -> 1e-6).
    - AdamW ``betas`` (0.9, 0.999), ``eps`` 1e-8 (V-JEPA, V-JEPA 2; CAPI uses (0.9, 0.95));
      ``grad_clip`` 1.0 (V-JEPA; V-JEPA 2's image eval does not clip).
    - schedule, SHORTER THAN THE PAPERS' FOR CPU: ``epochs`` 10 (V-JEPA / V-JEPA 2: 20),
      ``warmup_fraction`` 0.25 of the steps (V-JEPA 2: 5 of 20 epochs); ``batch_size`` 256 (V-JEPA:
      1024 global; the learning rate is not scaled with the batch, as in V-JEPA).
    - selection: ``val_fraction`` 0.1 held out from train (CAPI; ``seed`` also seeds the split,
      the initial weights, the batch order and the augmentations).
    - tokens: ``blocks`` 1 (the last block), ``block_pooling`` 'concat' | 'mean' (AIM averages its
      last 6); ``augment`` 'none' (cached tokens), 'crop' or 'vjepa' (the backbone in the loop).
    """

    variant: str = option("vjepa", "Probe architecture: vjepa (V-JEPA), vjepa2 (V-JEPA 2), capi, ep "
                                   "(efficient probing).")
    heads: int | None = option(None, "Attention heads of the probe (default: the encoder's; ep has one).")
    queries: int | None = option(None, "Learned queries (default: 1; ep 32).")
    mlp_ratio: float = 4.0
    self_attention_blocks: int = 3
    learning_rates: tuple[float, ...] = option((5e-4, 1e-3, 1.5e-3, 2e-3), "Comma-separated learning rates.",
                                               flag="--lrs")
    weight_decays: tuple[float, ...] = option((8e-3, 4e-3, 2e-3, 1e-3, 5e-4), "Comma-separated weight decays.",
                                              flag="--wds")
    start_lr: float = 2e-4
    final_lr: float = 0.0
    warmup_fraction: float = 0.25
    final_weight_decay: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    epochs: int = option(10, "Training epochs.")
    batch_size: int = 256
    val_fraction: float = option(0.1, "Share of train held out to choose the probe.")
    seed: int = 0
    select_on: str = option("val", "Choose the probe on the evaluation split (V-JEPA's behaviour; recorded).",
                            flag="--select-on-eval", spelling=Spelling(bool, lambda on: "eval" if on else "val", False))
    blocks: int = option(1, "Patch tokens of the last N blocks.")
    block_pooling: str = option("concat", "How the N blocks combine: concat (along channels) or mean (AIM).")
    augment: str = option("none", "none: cached tokens; crop (RandomResizedCrop + flip) or vjepa (timm AutoAugment "
                                  "+ random erasing): the backbone in the loop, training batches augmented.")

    def grid(self) -> list[dict[str, float]]:
        """Every probe's hyper-parameters [{'lr', 'wd'}, ...]: by learning rate, then weight decay,
        in the order given; selection ties go to the earliest probe in this order."""
        return [{"lr": float(lr), "wd": float(wd)}
                for lr, wd in itertools.product(self.learning_rates, self.weight_decays)]

    def arch(self, dim: int, num_classes: int, encoder_heads: int | None = None) -> ProbeArch:
        """The checked probe architecture for tokens of width ``dim``; ``heads`` None takes
        ``encoder_heads`` (for every variant but ep, which has one head)."""
        heads = self.heads if self.heads is not None or self.variant == "ep" else encoder_heads
        return make_arch(self.variant, dim, num_classes, heads, self.queries, self.mlp_ratio,
                         self.self_attention_blocks)

    def optimisation(self) -> Optimisation:
        grid = self.grid()
        return Optimisation(lrs=tuple(p["lr"] for p in grid), wds=tuple(p["wd"] for p in grid),
                            start_lr=self.start_lr, final_lr=self.final_lr, final_wd=self.final_weight_decay,
                            betas=self.betas, eps=self.eps, grad_clip=self.grad_clip, epochs=self.epochs,
                            warmup_fraction=self.warmup_fraction)


def check_config(config: AttentiveConfig) -> None:
    """Raise one :class:`JepaEvalError` listing every invalid setting of ``config``."""
    problems = []
    if not (config.learning_rates and config.weight_decays):
        problems.append(f"a grid of zero probes ({len(config.learning_rates)} learning rates x "
                        f"{len(config.weight_decays)} weight decays)")
    if any(lr <= 0 for lr in config.learning_rates) or any(wd < 0 for wd in config.weight_decays):
        problems.append(f"learning rates {config.learning_rates}, weight decays {config.weight_decays}")
    if config.variant not in VARIANTS:
        problems.append(f"variant {config.variant!r}")
    if config.epochs < 1 or config.batch_size < 1 or not 0 <= config.warmup_fraction <= 1:
        problems.append(f"epochs {config.epochs}, batch size {config.batch_size}, warm-up {config.warmup_fraction}")
    if not all(0.0 <= beta < 1.0 for beta in config.betas) or config.eps <= 0:
        problems.append(f"betas {config.betas}, eps {config.eps}")
    if config.grad_clip is not None and config.grad_clip <= 0:
        problems.append(f"grad_clip {config.grad_clip}")
    if config.select_on not in SELECT_ON:
        problems.append(f"select_on {config.select_on!r}")
    if config.select_on == "val" and not 0.0 < config.val_fraction < 1.0:
        problems.append(f"val_fraction {config.val_fraction}")
    if config.blocks < 1 or config.block_pooling not in TOKEN_POOLING or config.augment not in AUGMENT:
        problems.append(f"blocks {config.blocks}, block_pooling {config.block_pooling!r}, augment {config.augment!r}")
    if problems:
        raise JepaEvalError("invalid attentive-probe settings",
                            expected=f"at least one learning rate (> 0) and one weight decay (>= 0), a variant in "
                                     f"{VARIANTS}, positive epochs and batch size, a warm-up fraction in [0, 1], betas in "
                                     f"[0, 1), eps > 0, grad_clip None or > 0, select_on in {SELECT_ON}, 0 < "
                                     f"val_fraction < 1, blocks >= 1, block_pooling in {TOKEN_POOLING}, augment in "
                                     f"{AUGMENT}", found="; ".join(problems))


@dataclass
class AttentiveResult:
    """The chosen probe's evaluation numbers, the choice, and the whole grid's scores.

    ``metrics``: 'top1' and 'top5' of the chosen probe on the evaluation split, then per probe
    'val_top1' (top-1 on the selection split) and 'train_loss' (mean cross-entropy over the last
    epoch), all with coords {'lr', 'wd'}. ``chosen`` / each ``grid`` entry: {'lr', 'wd',
    'val_top1', 'train_loss'}. ``sizes``: samples per training epoch ('fit'), chosen on
    ('select') and reported on ('eval'). ``probe``: the chosen probe, trained (eval mode);
    ``arch`` its architecture; ``seconds``: training and scoring time.
    """

    top1: float
    top5: float
    chosen: dict[str, float]
    grid: list[dict[str, float]]
    selected_on: str
    steps: int
    metrics: list[Metric]
    sizes: dict[str, int]
    probe: AttentiveProbe
    arch: ProbeArch
    seconds: float


def _missing_classes(train_labels: np.ndarray, held_labels: np.ndarray, classes: int) -> None:
    trained, held = np.bincount(train_labels, minlength=classes), np.bincount(held_labels, minlength=classes)
    missing = np.flatnonzero((trained > 0) & (held == 0))
    if missing.size:
        raise JepaEvalError("the held-out split for choosing an attentive probe misses classes of train",
                            expected="at least one held-out sample of every training class (a class needs about "
                                     "1 / val_fraction training samples)",
                            found=f"{missing.size} of {int((trained > 0).sum())} classes with none held out "
                                  f"(first: {missing[:5].tolist()})",
                            hint="raise val_fraction, or use --select-on-eval")


def _selection_rows(labels: np.ndarray, config: AttentiveConfig, classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(rows to train on, held-out rows to choose on; None with select_on='eval')."""
    if config.select_on == "eval":
        return np.arange(labels.size), None
    try:
        fit, held = stratified_split(labels, config.val_fraction, config.seed)
    except JepaEvalError:  # nothing could be held out: reported as missing classes
        fit, held = np.arange(labels.size), np.arange(0)
    _missing_classes(labels, labels[held], classes)
    return fit, held


def attentive_probe(train: TokenSource, evaluation: TokenSource, config: AttentiveConfig = AttentiveConfig(),
                    num_classes: int | None = None, device: str | torch.device | None = None,
                    progress: bool = False) -> AttentiveResult:
    """Train the grid on ``train`` (less the held-out part), choose a probe, report it on ``evaluation``.

    Every check (settings, shapes, labels, the held-out split's classes) runs before any training.
    Under torchrun every process calls this with the same sources and gets the same result.
    """
    started = time.perf_counter()
    check_config(config)
    if train.shape[1:] != evaluation.shape[1:]:
        raise JepaEvalError("the train and eval patch tokens differ in shape",
                            expected=f"{train.shape[1]} tokens of width {train.shape[2]}, as train's",
                            found=f"{evaluation.shape[1]} tokens of width {evaluation.shape[2]}")
    y_train = check_labels("train", train.labels, train.shape[0])
    y_eval = check_labels("eval", evaluation.labels, evaluation.shape[0])
    classes = check_num_classes(num_classes, y_train, y_eval)
    fit_rows, held_rows = _selection_rows(y_train, config, classes)
    arch = config.arch(train.shape[2], classes, train.heads)
    device = resolve_device(device)
    rank, world = rank_and_world()
    if world > min(config.batch_size, fit_rows.size):
        raise JepaEvalError("too few samples a batch for the torchrun processes",
                            expected=f"a training batch of at least {world} samples (one a process)",
                            found=f"batch size {min(config.batch_size, fit_rows.size)}")
    shard = (rank, world)
    fit = train.batches(fit_rows, config.batch_size, train=True, seed=config.seed, shard=shard)
    probes = ProbeGrid(arch, len(config.grid()), config.seed)
    trained = train_probe_grid(probes, fit, config.optimisation(), device, progress)
    eval_top1, eval_top5, eval_count = probe_accuracies(
        trained.probes, evaluation.batches(np.arange(evaluation.shape[0]), config.batch_size, train=False,
                                           shard=shard), device)
    if held_rows is None:
        select_top1, select_count = eval_top1, eval_count
    else:
        select_top1, _, select_count = probe_accuracies(
            trained.probes, train.batches(held_rows, config.batch_size, train=False, shard=shard), device)
    best = int(np.argmax(select_top1))  # first of equals, in grid order
    params = config.grid()
    grid = [{**p, "val_top1": float(v), "train_loss": float(loss)}
            for p, v, loss in zip(params, select_top1, trained.train_loss)]
    metrics = [Metric("top1", float(eval_top1[best]), dict(params[best])),
               Metric("top5", float(eval_top5[best]), dict(params[best]))]
    metrics += [Metric("val_top1", g["val_top1"], dict(p)) for p, g in zip(params, grid)]
    metrics += [Metric("train_loss", g["train_loss"], dict(p)) for p, g in zip(params, grid)]
    return AttentiveResult(top1=float(eval_top1[best]), top5=float(eval_top5[best]), chosen=grid[best], grid=grid,
                           selected_on=config.select_on, steps=trained.steps, metrics=metrics,
                           sizes={"fit": len(fit) * fit.batch_size, "select": select_count, "eval": eval_count},
                           probe=trained.probes.probe(best), arch=arch, seconds=time.perf_counter() - started)


def attentive_probe_arrays(train_tokens: Any, train_labels: Any, eval_tokens: Any, eval_labels: Any,
                           config: AttentiveConfig = AttentiveConfig(), num_classes: int | None = None,
                           device: str | torch.device | None = None, progress: bool = False) -> AttentiveResult:
    """:func:`attentive_probe` on arrays: tokens [N, T, D] / labels [N] and [M, T, D] / [M]
    (numpy, memory maps or torch; read batch by batch)."""
    return attentive_probe(TokenArray(train_tokens, train_labels, name="train tokens"),
                           TokenArray(eval_tokens, eval_labels, name="eval tokens"), config, num_classes, device,
                           progress)


def evaluate(inputs: Inputs, config: AttentiveConfig) -> Evaluation:
    """:func:`attentive_probe` on the training and evaluation splits' token sources."""
    result = attentive_probe(inputs.train.features, inputs.eval.features, config, inputs.num_classes,
                             inputs.device, inputs.progress)
    summary: dict[str, Any] = {"top1": result.top1, "top5": result.top5}
    summary.update({f"chosen_{k}": v for k, v in result.chosen.items()})
    summary.update({"steps": result.steps, "probes": len(result.grid), "probe_seconds": round(result.seconds, 3),
                    "n_fit": result.sizes["fit"], "n_select": result.sizes["select"]})
    arch = result.arch
    params = {"selected_on": result.selected_on, "probe_heads": arch.heads, "probe_queries": arch.queries,
              "tokens": list(inputs.train.features.shape[1:])}
    return Evaluation(result.metrics, summary, params=params)


def _needs(config: AttentiveConfig) -> Needs:
    check_config(config)  # before any extraction
    return Needs(tokens=TokensNeeded(config.blocks, config.block_pooling, config.augment))


def _caption(shown: Shown) -> str:
    variants = joined(p.get("variant", "vjepa") for p in shown.params)
    on = {p.get("selected_on", p.get("select_on", "val")) for p in shown.params}
    where = "held-out val" if on == {"val"} else "the evaluation split" if on == {"eval"} else \
        "held-out val or the evaluation split"
    return f"attentive ({variants}): best probe on {where}"


def _describe(record: ResultRecord) -> str:
    return (f"attentive probe ({record.params['variant']}) on {record.dataset.name} ({record.features.mode}), "
            f"chosen on {record.params['selected_on']}")


PROTOCOL = register(Protocol(
    name="attentive", version="1", label="attentive", config=AttentiveConfig, evaluate=evaluate, caption=_caption,
    summary="grid of attentive probes (lr x wd) on frozen patch tokens, trained at once, chosen on held-out data",
    needs=_needs, describe=_describe, headline=("top1",),
    tables=(TableSpec("top1", "top1", shared=True),), plots=(PlotSpec("bars"),),
    transfer=Selection(score=lambda summary: summary["chosen_val_top1"], on="val", by="val_top1"),
))
