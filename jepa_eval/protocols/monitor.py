"""Collapse monitoring across a training run: the one collapse rule, and the run's summary.

A run is measured at points along it: each checkpoint of a training folder (the pipeline's
:mod:`jepa_eval.pipeline.monitor`, positioned by ``epoch``) or every so many steps inside a
training loop (:class:`jepa_eval.pipeline.live.LiveMonitor`, positioned by ``step``; the bundled
trainer's live monitor is one). Both measure the same label-free metrics (and a quick k-NN) and
apply the same :class:`CollapseRule`; :func:`evaluate` turns the measurements into result rows
and the point where collapse began.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.knn import REFERENCE_K
from jepa_eval.protocols.registry import Evaluation, PlotSpec, Protocol, option, register
from jepa_eval.results.record import Metric, ResultRecord


@dataclass(frozen=True)
class CollapseRule:
    """When features count as collapsed, at one measurement of a run (given the ones before it).

    Collapsed when RankMe or the feature std is not finite (a diverged run), when RankMe falls
    below ``rankme_fraction`` of the highest RankMe seen so far in the run, when it falls below
    ``rankme_floor`` of its ceiling min(N, D) (``rankme_norm``), when the feature std is at most
    ``std_floor``, or, with ``knn_falls`` > 0, when the quick k-NN top-1 (``knn_top1``, %) fell
    at each of the last ``knn_falls`` measurements in a row, each time by more than
    ``knn_min_drop`` points. The std is that of L2-normalised rows, so a healthy value is about
    ``1 / sqrt(D)`` (0.028 for D = 1280), far above 1e-3 for any practical width.
    """

    rankme_fraction: float = 0.2
    rankme_floor: float = 0.01
    std_floor: float = 1e-3
    knn_falls: int = 0
    knn_min_drop: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.rankme_fraction < 1:
            raise JepaEvalError("rankme_fraction is out of range", expected="a number in (0, 1)",
                                found=f"{self.rankme_fraction}")
        if self.knn_falls < 0 or self.knn_min_drop < 0:
            raise JepaEvalError("the k-NN part of the collapse rule is out of range",
                                expected="knn_falls >= 0 (0 turns it off) and knn_min_drop >= 0 points",
                                found=f"knn_falls {self.knn_falls}, knn_min_drop {self.knn_min_drop}")

    def watch(self) -> CollapseWatch:
        """A fresh :class:`CollapseWatch`: the rule applied one measurement at a time."""
        return CollapseWatch(self)

    def first_collapse(self, epochs: Sequence[int], history: Sequence[Mapping[str, float]]) -> int | None:
        """The first epoch whose measurement (``rankme``, ``rankme_norm``, ``feature_std``, and
        ``knn_top1`` when measured) collapsed, or None when the run stayed healthy; ``epochs``
        strictly increasing."""
        found = self.first_reason(epochs, history)
        return None if found is None else found[0]

    def first_reason(self, positions: Sequence[int], history: Sequence[Mapping[str, float]]) -> tuple[int, str] | None:
        """(position, why) of the first collapsed measurement, or None; ``positions`` (epochs
        or steps) strictly increasing."""
        if len(positions) != len(history):
            raise JepaEvalError("collapse detection needs one measurement per epoch",
                                expected="as many measurements as epochs",
                                found=f"{len(positions)} epochs, {len(history)} measurements")
        if any(b <= a for a, b in zip(positions, positions[1:])):
            raise JepaEvalError("epochs for collapse detection are not increasing",
                                expected="strictly increasing epoch numbers", found=f"{list(positions)}")
        watch = self.watch()
        for position, values in zip(positions, history):
            reason = watch.observe(values)
            if reason is not None:
                return int(position), reason
        return None


@dataclass
class CollapseWatch:
    """:class:`CollapseRule` applied to a run's measurements in order: it keeps the running
    RankMe peak and the current run of k-NN falls."""

    rule: CollapseRule
    peak: float = -math.inf
    last_knn: float | None = None
    falls: list[float] = field(default_factory=list)

    def observe(self, values: Mapping[str, float]) -> str | None:
        """Why this measurement counts as collapsed (None when healthy). ``values`` holds
        ``rankme``, ``rankme_norm``, ``feature_std`` and, when measured, ``knn_top1``."""
        rankme, std = values["rankme"], values["feature_std"]
        self.peak = max(self.peak, rankme)  # a non-finite RankMe is a collapse whatever the peak
        knn_reason = self._knn(values.get("knn_top1"))
        rule = self.rule
        if not (math.isfinite(rankme) and math.isfinite(std)):
            return f"RankMe {rankme} or feature std {std} is not finite"
        if rankme < rule.rankme_fraction * self.peak:
            return f"RankMe {rankme:.2f} fell below {rule.rankme_fraction:g} of its peak {self.peak:.2f}"
        if values["rankme_norm"] < rule.rankme_floor:
            return f"RankMe {rankme:.2f} fell below {rule.rankme_floor:g} of min(N, D)"
        if std <= rule.std_floor:
            return f"feature std {std:.3g} is at most {rule.std_floor:g}"
        return knn_reason

    def _knn(self, knn: float | None) -> str | None:
        """Track the k-NN's falls; the reason once it fell ``knn_falls`` times in a row."""
        if knn is None or not math.isfinite(knn):
            return None
        if self.last_knn is not None and knn < self.last_knn - self.rule.knn_min_drop:
            self.falls = (self.falls or [self.last_knn]) + [knn]
        else:
            self.falls = []
        self.last_knn = knn
        if self.rule.knn_falls and len(self.falls) > self.rule.knn_falls:
            shown = " -> ".join(f"{v:.1f}" for v in self.falls[-self.rule.knn_falls - 1:])
            return f"the quick k-NN top-1 fell {self.rule.knn_falls} times in a row ({shown})"
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
    knn_falls: int = option(0, "Collapse when the quick k-NN falls this many checkpoints in a row (0: off).")
    knn_min_drop: float = option(0.0, "Points a k-NN fall must exceed to count.")

    def rule(self) -> CollapseRule:
        return CollapseRule(self.rankme_fraction, self.rankme_floor, self.std_floor, self.knn_falls, self.knn_min_drop)


@dataclass(frozen=True)
class Point:
    """One measurement of a run: where it is (``coords``: ``epoch`` and ``checkpoint`` for a
    checkpoint, ``step`` for a live monitor, plus e.g. ``ckpt_sha256``) and what was measured."""

    coords: dict[str, Any]
    values: dict[str, float]


def points_of(record: ResultRecord, axis: str = "epoch") -> list[Point]:
    """The measurements of a monitor record (its rows grouped by ``coords[axis]``), in order."""
    at: dict[int, Point] = {}
    for metric in record.metrics:
        point = at.setdefault(int(metric.coords[axis]), Point(dict(metric.coords), {}))
        point.values[metric.name] = math.nan if metric.value is None else float(metric.value)
    return [at[position] for position in sorted(at)]


def evaluate(points: Sequence[Point], config: MonitorConfig | CollapseRule, axis: str = "epoch") -> Evaluation:
    """Rows ``{name, value, **coords}`` for every measured value of every point, ordered by
    ``coords[axis]`` (``epoch`` or ``step``), and a summary: ``axis``, the number of points,
    ``collapse_{axis}`` and ``collapse_reason`` (None when healthy), the RankMe peak and where it
    was (``peak_{axis}``), and the last RankMe."""
    if not points:
        raise JepaEvalError("a monitor needs at least one measurement", found="none")
    ordered = sorted(points, key=lambda p: p.coords[axis])
    rule = config.rule() if isinstance(config, MonitorConfig) else config
    found = rule.first_reason([p.coords[axis] for p in ordered], [p.values for p in ordered])
    rows = [Metric(key, float(value), dict(p.coords)) for p in ordered for key, value in p.values.items()]
    rankmes = [p.values["rankme"] for p in ordered]
    peak = max(range(len(ordered)), key=lambda i: rankmes[i] if math.isfinite(rankmes[i]) else -math.inf)
    summary: dict[str, Any] = {
        "axis": axis, "checkpoints" if axis == "epoch" else "measurements": len(ordered),
        f"collapse_{axis}": None if found is None else found[0], "collapse_reason": None if found is None else found[1],
        "peak_rankme": rankmes[peak], f"peak_{axis}": ordered[peak].coords[axis], "final_rankme": rankmes[-1]}
    return Evaluation(rows, summary)


PROTOCOL = register(Protocol(
    name="monitor", version="3", label="monitor", config=MonitorConfig, evaluate=evaluate,
    summary="the rank metrics (and a quick k-NN) of every checkpoint of a training run",
    caption=lambda shown: "monitor: last checkpoint", runs_on="run", table_latest="epoch",
    headline=("collapse_epoch",),
    plots=(PlotSpec("monitor", {"metrics": ("rankme", "alpha_req", "lidar", "knn_top1", "train_loss")}),),
))
