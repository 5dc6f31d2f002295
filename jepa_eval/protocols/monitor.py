"""Collapse monitoring across a training run: the one collapse rule, and the run's summary.

The pipeline (:mod:`jepa_eval.pipeline.monitor`) measures every checkpoint with the rank
protocol (and a quick k-NN); :func:`evaluate` turns those per-epoch values into result rows and
the epoch where collapse began. The bundled trainer's live monitor applies the same
:class:`CollapseRule` while it trains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.knn import REFERENCE_K
from jepa_eval.protocols.registry import Evaluation, PlotSpec, Protocol, option, register
from jepa_eval.results.record import Metric


@dataclass(frozen=True)
class CollapseRule:
    """When features count as collapsed, at one measurement of a run.

    Collapsed when RankMe or the feature std is not finite (a diverged run), when RankMe falls
    below ``rankme_fraction`` of the highest RankMe seen so far in the run, when it falls below
    ``rankme_floor`` of its ceiling min(N, D) (``rankme_norm``), or when the feature std is at most
    ``std_floor``. The std is that of L2-normalised rows, so a healthy value is about
    ``1 / sqrt(D)`` (0.028 for D = 1280), far above 1e-3 for any practical width.
    """

    rankme_fraction: float = 0.2
    rankme_floor: float = 0.01
    std_floor: float = 1e-3

    def __post_init__(self) -> None:
        if not 0 < self.rankme_fraction < 1:
            raise JepaEvalError("rankme_fraction is out of range", expected="a number in (0, 1)",
                                found=f"{self.rankme_fraction}")

    def reason(self, rankme: float, rankme_norm: float, feature_std: float, peak: float) -> str | None:
        """Why this measurement counts as collapsed (None when healthy); ``peak`` is the highest
        RankMe of the run up to and including it."""
        if not (math.isfinite(rankme) and math.isfinite(feature_std)):
            return f"RankMe {rankme} or feature std {feature_std} is not finite"
        if rankme < self.rankme_fraction * peak:
            return f"RankMe {rankme:.2f} fell below {self.rankme_fraction:g} of its peak {peak:.2f}"
        if rankme_norm < self.rankme_floor:
            return f"RankMe {rankme:.2f} fell below {self.rankme_floor:g} of min(N, D)"
        if feature_std <= self.std_floor:
            return f"feature std {feature_std:.3g} is at most {self.std_floor:g}"
        return None

    def first_collapse(self, epochs: Sequence[int], history: Sequence[Mapping[str, float]]) -> int | None:
        """The first epoch whose measurement (``rankme``, ``rankme_norm``, ``feature_std``)
        collapsed, or None when the run stayed healthy; ``epochs`` strictly increasing."""
        if len(epochs) != len(history):
            raise JepaEvalError("collapse detection needs one measurement per epoch",
                                expected="as many measurements as epochs",
                                found=f"{len(epochs)} epochs, {len(history)} measurements")
        if any(b <= a for a, b in zip(epochs, epochs[1:])):
            raise JepaEvalError("epochs for collapse detection are not increasing",
                                expected="strictly increasing epoch numbers", found=f"{list(epochs)}")
        peak = -math.inf
        for epoch, values in zip(epochs, history):
            peak = max(peak, values["rankme"])  # a non-finite RankMe is a collapse whatever the peak
            if self.reason(values["rankme"], values["rankme_norm"], values["feature_std"], peak) is not None:
                return int(epoch)
        return None


@dataclass
class MonitorConfig:
    """What to measure per checkpoint (``samples`` seeded training rows for the rank metrics; a
    quick k-NN of ``knn_eval`` seeded evaluation rows against ``knn_train`` training rows), and the
    collapse rule's thresholds."""

    samples: int = option(2000, "Seeded training rows for the rank metrics.")
    seed: int = 0
    ckpt_key: str = option("target_encoder", "Encoder to measure.")
    knn: bool = option(True, f"Also a quick k-NN (k={REFERENCE_K}) on fixed subsets.")
    knn_train: int = 5000
    knn_eval: int = 2000
    knn_k: int = REFERENCE_K
    lidar: bool = option(False, "Also LiDAR (extra forward passes).")
    lidar_images: int = 200
    lidar_views: int = 5
    rankme_fraction: float = option(0.2, "Collapse when RankMe falls below this share of its peak.")
    rankme_floor: float = 0.01
    std_floor: float = 1e-3

    def rule(self) -> CollapseRule:
        return CollapseRule(self.rankme_fraction, self.rankme_floor, self.std_floor)


def evaluate(per_epoch: Mapping[int, Mapping[str, float]], checkpoints: Mapping[int, str],
             config: MonitorConfig) -> Evaluation:
    """Rows ``{name, value, epoch, checkpoint}`` for every measured value of every checkpoint
    (``per_epoch[epoch]``, the file names in ``checkpoints``), and a summary with the collapse
    epoch and the RankMe peak."""
    epochs = sorted(per_epoch)
    if not epochs:
        raise JepaEvalError("a monitor needs at least one checkpoint", found="none")
    rows = [Metric(key, float(value), {"epoch": epoch, "checkpoint": checkpoints[epoch]})
            for epoch in epochs for key, value in per_epoch[epoch].items()]
    rankmes = [per_epoch[e]["rankme"] for e in epochs]
    summary: dict[str, Any] = {
        "checkpoints": len(epochs), "collapse_epoch": config.rule().first_collapse(epochs, [per_epoch[e] for e in epochs]),
        "peak_rankme": max(rankmes), "peak_epoch": epochs[rankmes.index(max(rankmes))], "final_rankme": rankmes[-1]}
    return Evaluation(rows, summary)


PROTOCOL = register(Protocol(
    name="monitor", version="2", label="monitor", config=MonitorConfig, evaluate=evaluate,
    summary="the rank metrics (and a quick k-NN) of every checkpoint of a training run",
    caption=lambda shown: "monitor: last checkpoint", runs_on="run", table_latest="epoch",
    headline=("collapse_epoch",), plots=(PlotSpec("monitor", {"metrics": ("rankme", "alpha_req", "lidar", "knn_top1")}),),
))
