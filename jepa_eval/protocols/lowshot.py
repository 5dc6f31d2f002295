"""Low-shot evaluation: L2-regularised logistic regression on few labelled frozen features.

Settings: a fraction of the labels per class (``fractions``), k images per class
(``shots``), or a fixed subset such as ImageNet 1% (``subset_indices``, read with
:func:`read_subset_file`). Each setting is sampled with several seeds.

The classifier minimises scikit-learn's multinomial ``LogisticRegression`` objective,
``sum_i CE_i + ||W||^2 / (2 C)`` with the intercept unpenalised, on the raw features (no
standardisation, as scikit-learn), by full-batch L-BFGS in torch (strong-Wolfe line
search; float64 on CPU, float32 on CUDA). ``C`` is chosen on a seeded stratified
validation split of the low-shot training set (never on the evaluation labels), fitting
the grid from strong to weak regularisation with warm starts, then the model is refit on
the whole low-shot training set at the chosen ``C``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from jepa_eval.core.devices import resolve_device
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.progress import progress as progress_bar
from jepa_eval.protocols.checks import check_num_classes, check_split_pair
from jepa_eval.protocols.registry import (Evaluation, Inputs, Needs, PlotSpec, Protocol, TableSpec, option, register)
from jepa_eval.protocols.sampling import (check_fraction, check_shots, class_members, round_half_up, sample_fraction,
                                          sample_shots)
from jepa_eval.results.record import Metric

#: Every other value of DINOv2's grid 10^linspace(-6, 5, 45): half-decade steps, half the cost.
DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-6, 5, 23))
#: L-BFGS memory; scipy's (and so scikit-learn's) default.
LBFGS_HISTORY = 10
#: Rows scored at once when predicting, so logits stay small in memory.
PREDICT_BLOCK = 8192


@dataclass
class LowShotConfig:
    """Low-shot settings and classifier hyper-parameters (the single source of defaults).

    Settings: label ``fractions`` of each class, ``shots`` images a class, and a published
    ``subset_file`` (one fixed sample, run once with seed 0); with none of them, 1% of the labels.
    ``seeds`` is a count: seeds ``0 .. seeds - 1``. ``val_fraction`` of each class is held out to choose ``C``; a
    class keeps at least one training sample, and a class of one sample gives none. When
    no class can give one (1-shot), ``fallback_C`` (scikit-learn's default) is used.
    ``max_iter`` bounds the L-BFGS iterations of each fit; ``tol`` stops a fit when the largest
    gradient entry of the mean objective falls below it (scikit-learn's lbfgs ``tol``, 1e-4).
    """

    fractions: tuple[float, ...] = option((), "Comma-separated label fractions per class, e.g. 0.01,0.1.",
                                          flag="--fraction")
    shots: tuple[int, ...] = option((), "Comma-separated images per class, e.g. 1,2,5,10.")
    seeds: int = option(5, "Seeds per setting (sampling + validation split).")
    Cs: tuple[float, ...] = DEFAULT_CS
    val_fraction: float = 0.2
    max_iter: int = 200
    tol: float = 1e-4
    fallback_C: float = 1.0
    subset_file: str | None = option(None, "A published subset file (one <wnid>_<id>.JPEG a line), "
                                           "e.g. ImageNet 1percent.txt.")

    def __post_init__(self) -> None:
        if not (self.fractions or self.shots or self.subset_file):
            self.fractions = (0.01,)
        if self.seeds < 1:
            raise JepaEvalError("low-shot needs at least one seed", expected="seeds >= 1",
                                found=f"seeds = {self.seeds}")
        if not self.Cs or min(self.Cs) <= 0 or self.fallback_C <= 0:
            raise JepaEvalError("the C grid of the logistic regression is invalid",
                                expected="a non-empty list of positive numbers",
                                found=f"Cs = {list(self.Cs)}, fallback_C = {self.fallback_C}")
        if not 0 < self.val_fraction < 1:
            raise JepaEvalError("val_fraction is out of range", expected="a number in (0, 1)",
                                found=f"{self.val_fraction}")
        if self.max_iter < 1:
            raise JepaEvalError("max_iter must be positive", found=f"{self.max_iter}")
        for fraction in self.fractions:
            check_fraction(fraction)
        for shots in self.shots:
            check_shots(shots)


@dataclass
class LowShotResult:
    """``metrics``: top1/top5 per (setting, seed) with the chosen C; ``summary``: mean/std over seeds."""

    metrics: list[Metric] = field(default_factory=list)
    summary: list[Metric] = field(default_factory=list)


@dataclass
class LogRegModel:
    """A fitted multinomial logistic regression: ``logits = x @ weight + bias``.

    ``weight [D, K]``, ``bias [K]``; ``objective`` is ``sum_i CE_i + ||W||^2 / (2C)`` at the
    solution (scikit-learn's scale); ``iterations`` counts objective evaluations of L-BFGS.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    C: float
    objective: float
    iterations: int


# ---------------------------------------------------------------------------------------------
# Validation split (the k-shot and fraction samplers are in sampling.py)


def validation_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified ``(train, val)`` positions into ``labels``.

    Class c gives ``min(n_c - 1, max(1, round(val_fraction * n_c)))`` validation samples:
    at least one when it has two or more, none when it has one, so every class keeps a
    training sample. ``val`` is empty when every class has a single sample.
    """
    members = class_members(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in sorted(members):
        idx = rng.permutation(members[c])
        n_val = min(idx.size - 1, max(1, int(round_half_up(np.array(val_fraction * idx.size)))))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


# ---------------------------------------------------------------------------------------------
# Classifier


def fit_logreg(features: torch.Tensor, labels: torch.Tensor, C: float, num_classes: int, *,
               init: LogRegModel | None = None, max_iter: int = 200, tol: float = 1e-4) -> LogRegModel:
    """Minimise ``sum_i CE(x_i W + b, y_i) + ||W||^2 / (2C)`` by full-batch L-BFGS.

    ``features [N, D]`` and ``labels [N]`` (int64) on one device, in the dtype to solve in.
    Internally the objective is divided by N (same minimiser, better-scaled gradients).
    ``init`` warm-starts from another solution (e.g. the previous C of a grid). Stops when
    the largest gradient entry of the mean objective is below ``tol`` (scikit-learn's lbfgs
    rule and default) or after ``max_iter`` iterations.
    """
    n, dim = features.shape
    weight = torch.zeros(dim, num_classes, dtype=features.dtype, device=features.device)
    bias = torch.zeros(num_classes, dtype=features.dtype, device=features.device)
    if init is not None:
        weight, bias = init.weight.clone(), init.bias.clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    penalty = 0.5 / (C * n)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                                  tolerance_change=1e-10, history_size=LBFGS_HISTORY,
                                  line_search_fn="strong_wolfe")
    evaluations = 0

    def mean_objective() -> torch.Tensor:
        return F.cross_entropy(features @ weight + bias, labels) + penalty * weight.square().sum()

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        loss = mean_objective()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        objective = float(mean_objective()) * n
    return LogRegModel(weight.detach(), bias.detach(), C, objective, evaluations)


def predict_topk(model: LogRegModel, features: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` highest-scoring classes ``[N, k]`` of each row of ``features [N, D]``."""
    k = min(k, model.bias.numel())
    return torch.cat([(block @ model.weight + model.bias).topk(k, dim=1).indices
                      for block in features.split(PREDICT_BLOCK)])


def topk_accuracy(model: LogRegModel, features: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percentage (0-100) of rows whose label is among the ``k`` best classes."""
    hits = (predict_topk(model, features, k) == labels[:, None]).any(dim=1)
    return 100.0 * float(hits.double().mean())


def select_C(features: torch.Tensor, labels: torch.Tensor, num_classes: int, config: LowShotConfig,
             seed: int) -> tuple[float, LogRegModel | None]:
    """``(C, fit)``: the grid value with the best validation top-1 (ties: stronger regularisation).

    Fits on a seeded stratified split of the low-shot training set (:func:`validation_split`),
    warm-starting along ``config.Cs`` in ascending order. ``fit`` is the model at that C,
    a warm start for the refit; ``(config.fallback_C, None)`` when no validation sample exists.
    """
    train, val = validation_split(labels.cpu().numpy(), config.val_fraction, seed)
    if val.size == 0:
        return config.fallback_C, None
    train_t = torch.as_tensor(train, device=features.device)
    val_t = torch.as_tensor(val, device=features.device)
    scored: list[tuple[float, LogRegModel]] = []
    model = None
    for C in sorted(config.Cs):
        model = fit_logreg(features[train_t], labels[train_t], C, num_classes, init=model,
                           max_iter=config.max_iter, tol=config.tol)
        scored.append((topk_accuracy(model, features[val_t], labels[val_t], 1), model))
    best = max(scored, key=lambda pair: pair[0])  # the first maximum: the smallest such C
    return best[1].C, best[1]


# ---------------------------------------------------------------------------------------------
# Protocol


def _settings(config: LowShotConfig, train_labels: np.ndarray,
              subset_indices: np.ndarray | None) -> list[tuple[dict[str, object], int, np.ndarray]]:
    """``(coords, seed, indices)`` for every low-shot sample to evaluate."""
    jobs: list[tuple[dict[str, object], int, np.ndarray]] = []
    for fraction in config.fractions:
        jobs += [({"fraction": fraction}, s, sample_fraction(train_labels, fraction, s))
                 for s in range(config.seeds)]
    for shots in config.shots:
        jobs += [({"shots": shots}, s, sample_shots(train_labels, shots, s)) for s in range(config.seeds)]
    if subset_indices is not None:
        indices = np.asarray(subset_indices, dtype=np.int64)
        if indices.size == 0 or indices.min() < 0 or indices.max() >= train_labels.size:
            raise JepaEvalError("subset indices do not address the training split",
                                expected=f"indices in [0, {train_labels.size})",
                                found=f"{indices.size} indices" + (
                                    f" in [{indices.min()}, {indices.max()}]" if indices.size else ""))
        jobs.append(({"subset": f"{indices.size} images"}, 0, indices))
    return jobs


def _summarise(metrics: list[Metric]) -> list[Metric]:
    """Mean and std (ddof 1; 0 for a single seed) over seeds of each setting and metric."""
    groups: dict[tuple[str, tuple[tuple[str, object], ...]], list[float]] = {}
    for m in metrics:
        setting = tuple((k, v) for k, v in m.coords.items() if k not in ("seed", "C"))
        groups.setdefault((m.name, setting), []).append(m.value)
    rows = []
    for (name, setting), values in groups.items():
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        rows += [Metric(f"{name}_mean", float(np.mean(values)), dict(setting)),
                 Metric(f"{name}_std", std, dict(setting))]
    return rows


def lowshot_evaluate(train_features: np.ndarray, train_labels: np.ndarray, eval_features: np.ndarray,
                     eval_labels: np.ndarray, config: LowShotConfig, *,
                     subset_indices: np.ndarray | None = None, num_classes: int | None = None,
                     device: str | torch.device | None = None, progress: bool = True) -> LowShotResult:
    """Low-shot top-1/top-5 (percent) of logistic regression for every setting and seed.

    ``train_features [N, D]`` / ``train_labels [N]`` are the full training split from which
    the low-shot samples are drawn; ``eval_features [M, D]`` / ``eval_labels [M]`` are only
    used to score the final classifiers. ``num_classes`` defaults to the largest label + 1;
    top-5 is reported only when there are more than 5 classes. Metric coordinates:
    ``fraction`` | ``shots`` | ``subset``, ``seed`` and the chosen ``C``.
    """
    train_features, train_labels, eval_features, eval_labels = check_split_pair(
        train_features, train_labels, eval_features, eval_labels)
    num_classes = check_num_classes(num_classes, train_labels, eval_labels)
    jobs = _settings(config, train_labels, subset_indices)
    target = resolve_device(device)
    dtype = torch.float64 if target.type == "cpu" else torch.float32
    x_eval = torch.as_tensor(eval_features, dtype=dtype, device=target)
    y_eval = torch.as_tensor(eval_labels, device=target)
    metrics: list[Metric] = []
    for coords, seed, indices in progress_bar(jobs, desc="low-shot", unit="fit", enabled=progress):
        x = torch.as_tensor(train_features[indices], dtype=dtype, device=target)
        y = torch.as_tensor(train_labels[indices], device=target)
        C, init = select_C(x, y, num_classes, config, seed)
        model = fit_logreg(x, y, C, num_classes, init=init, max_iter=config.max_iter, tol=config.tol)
        point = {**coords, "seed": seed, "C": C}
        metrics.append(Metric("top1", topk_accuracy(model, x_eval, y_eval, 1), point))
        if num_classes > 5:
            metrics.append(Metric("top5", topk_accuracy(model, x_eval, y_eval, 5), point))
    return LowShotResult(metrics=metrics, summary=_summarise(metrics))


def evaluate(inputs: Inputs, config: LowShotConfig) -> Evaluation:
    """:func:`lowshot_evaluate` over every setting and seed; the summary gives mean and std per setting."""
    result = lowshot_evaluate(inputs.train.features, inputs.train.labels, inputs.eval.features, inputs.eval.labels,
                              config, subset_indices=inputs.train_subset, num_classes=inputs.num_classes,
                              device=inputs.device, progress=inputs.progress)
    summary: dict[str, Any] = {_setting_label(m): m.value for m in result.summary}
    return Evaluation(list(result.metrics) + list(result.summary), summary)


def _setting_label(metric: Metric) -> str:
    setting = ",".join(f"{k}={v}" for k, v in metric.coords.items())
    return f"{metric.name}[{setting}]" if setting else metric.name


def table_setting(coords: dict[str, Any]) -> str:
    """The table column of a low-shot row: '5-shot', '1%' or the subset's description."""
    if coords.get("shots") is not None:
        return f"{int(coords['shots'])}-shot"
    if coords.get("fraction") is not None:
        return f"{float(coords['fraction']) * 100:g}%"
    return str(coords["subset"]) if coords.get("subset") is not None else ""


PROTOCOL = register(Protocol(
    name="lowshot", version="1", label="low-shot", config=LowShotConfig, evaluate=evaluate,
    caption=lambda shown: f"low-shot: logistic regression, {len(set(shown.values.get('seed', [])))} seed(s)",
    summary="L-BFGS logistic regression on label fractions, k shots or a subset file, over seeds",
    describe=lambda record: f"low-shot logistic regression on {record.dataset.name} ({record.features.mode})",
    needs=lambda config: Needs(train_subset_file=config.subset_file), headline=("top1_mean",),
    setting=table_setting, tables=(TableSpec("top1", "top1", shared=True),),
    plots=(PlotSpec("bars"), PlotSpec("label_curve")),
))
