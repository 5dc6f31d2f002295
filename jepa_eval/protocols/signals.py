"""Which label-free signal of a training run tracks probe accuracy: Spearman's rho across its checkpoints.

A training run's checkpoints each have label-free signals (the training loss of that epoch,
RankMe, LiDAR, alpha-ReQ: from the monitor) and a probe accuracy (linear or k-NN records of those
checkpoints, or the monitor's own quick k-NN). For each signal this protocol ranks the
checkpoints by it and by accuracy and reports Spearman's rho (scipy.stats.spearmanr), its
two-sided p-value and the number of checkpoints that have both; the signal with the largest
|rho| tracks accuracy best. The sign is kept: a lower training loss or alpha-ReQ going with a
higher accuracy is a negative rho. This tests claims such as LeJEPA's 0.94 Spearman correlation
between its training loss and linear accuracy on the user's own run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy.stats import spearmanr

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.registry import Evaluation, PlotSpec, Protocol, option, register
from jepa_eval.results.record import Metric

#: The signals correlated by default (monitor metric names; ``train_loss`` from the training log).
SIGNALS = ("train_loss", "rankme", "lidar", "alpha_req")
#: Fewest checkpoints a rho is computed over.
MIN_POINTS = 3
#: |rho| values closer than this tie for the best signal.
TIE = 1e-9
#: What ``accuracy`` names when the monitor's own quick k-NN is the accuracy.
MONITOR_KNN = "monitor-knn"


@dataclass
class SignalsConfig:
    """Which accuracy (``accuracy``: a protocol whose records of the run's checkpoints give a
    ``top1``, or 'monitor-knn'), of which feature ``mode`` (default: the monitor's when the
    records have it, else their only one), and which ``signals`` to correlate with it."""

    accuracy: str = option("linear", "Accuracy: a protocol's top-1 from records of the run's checkpoints "
                                     f"(linear, knn...), or {MONITOR_KNN} (the monitor's quick k-NN).")
    mode: str | None = option(None, "Feature mode of the accuracy records (default: the monitor's, else the only one).")
    signals: tuple[str, ...] = option(SIGNALS, "Signals to correlate, comma-separated.")


def spearman(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(rho, two-sided p) of the pairs; NaN for fewer than :data:`MIN_POINTS` or a constant side."""
    if len(xs) < MIN_POINTS or len(set(xs)) < 2 or len(set(ys)) < 2:
        return math.nan, math.nan
    result = spearmanr(xs, ys)
    return float(result.statistic), float(result.pvalue)


def evaluate(points: Sequence[Mapping[str, Any]], config: SignalsConfig) -> Evaluation:
    """``points``: one mapping per checkpoint with ``epoch``, ``checkpoint``, ``accuracy`` and
    the signals it has. Rows: each point's accuracy and signals (coordinates ``epoch``,
    ``checkpoint``), then ``spearman_rho``, ``spearman_p`` and ``points`` per signal (coordinate
    ``signal``). Summary: rho and n per signal, the best signal by |rho| (``best_signal``,
    ``best_rho``, ``best_n``) and the signals whose |rho| ties with it (``tied_with``)."""
    if not points:
        raise JepaEvalError("no checkpoint has both an accuracy and a label-free signal",
                            expected="monitor rows and accuracy records of the same checkpoints", found="none")
    ordered = sorted(points, key=lambda p: p["epoch"])
    rows: list[Metric] = []
    for point in ordered:
        where = {"epoch": point["epoch"], "checkpoint": point["checkpoint"]}
        rows += [Metric(name, float(point[name]), dict(where)) for name in ("accuracy", *config.signals) if name in point]
    summary: dict[str, Any] = {"accuracy": config.accuracy, "checkpoints": len(ordered)}
    ranked: dict[str, tuple[float, int]] = {}
    for signal in config.signals:
        pairs = [(p[signal], p["accuracy"]) for p in ordered if _finite(p.get(signal))]
        rho, p_value = spearman([x for x, _ in pairs], [y for _, y in pairs])
        rows += [Metric("spearman_rho", rho, {"signal": signal}), Metric("spearman_p", p_value, {"signal": signal}),
                 Metric("points", float(len(pairs)), {"signal": signal})]
        summary[f"rho_{signal}"], summary[f"n_{signal}"] = rho, len(pairs)
        if math.isfinite(rho):
            ranked[signal] = (rho, len(pairs))
    best = max(ranked, key=lambda s: abs(ranked[s][0])) if ranked else None
    tied = [s for s in ranked if s != best and abs(abs(ranked[s][0]) - abs(ranked[best][0])) < TIE]  # type: ignore[index]
    summary.update(best_signal=best, best_rho=ranked[best][0] if best else None, best_n=ranked[best][1] if best else None,
                   tied_with=tied)
    return Evaluation(rows, summary)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


PROTOCOL = register(Protocol(
    name="signals", version="1", label="signals", config=SignalsConfig, evaluate=evaluate,
    summary="Spearman rho of each label-free signal (training loss, RankMe, LiDAR, alpha-ReQ) with probe "
            "accuracy across a run's checkpoints",
    caption=lambda shown: "signals: Spearman rho against accuracy across checkpoints", runs_on="run",
    headline=("best_signal", "best_rho"), plots=(PlotSpec("signals"),),
))
