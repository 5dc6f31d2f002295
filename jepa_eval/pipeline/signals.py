"""The inputs of the ``signals`` protocol for one training run, gathered from result records and its log.

Per checkpoint of the run's newest monitor record: its label-free values (RankMe, LiDAR,
alpha-ReQ...), its training loss, and a probe accuracy. The accuracy is the ``top1`` (at the
protocol's table coordinates, e.g. k-NN's k = 20; the mean over seeds) of records of that
checkpoint on its full training split (records of k-shot draws are left out): matched by content hash where the monitor recorded one, else by file path (an
``ep`` file; a ``latest`` path names a different state each epoch, so it needs the hash). The
training loss is the monitor's own ``train_loss`` row; records written before it existed get
it from the CSV log beside the checkpoints, but only while those checkpoints are still the
ones that were evaluated (the sha256 a record names, else not modified since the monitor record
was made): a folder trained again since has a log of another run.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime, timezone
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.hashing import file_sha256
from jepa_eval.pipeline.trainlog import run_epoch_losses
from jepa_eval.protocols import get_protocol
from jepa_eval.protocols.monitor import Point, points_of
from jepa_eval.protocols.signals import MONITOR_KNN, SignalsConfig
from jepa_eval.results.record import DatasetInfo, FeatureInfo, ResultRecord

Log = Callable[[str], Any]


@dataclass
class Gathered:
    """The points of one run (``epoch``, ``checkpoint``, ``accuracy``, signals), the records
    they came from and what could not be used (``notes``)."""

    points: list[dict[str, Any]]
    monitor: ResultRecord
    accuracy_records: list[str]
    dataset: str
    mode: str
    notes: list[str] = field(default_factory=list)


def run_monitor_record(records: list[ResultRecord], run_dir: Path, dataset: str | None) -> ResultRecord:
    """The newest checkpoint monitor record of ``run_dir`` (on ``dataset`` when given)."""
    mine = [r for r in records if r.protocol == "monitor" and r.summary.get("axis", "epoch") == "epoch"
            and Path(r.model.path).resolve() == run_dir.resolve() and (dataset is None or r.dataset.name == dataset)]
    if not mine:
        raise JepaEvalError(f"no monitor record of {run_dir}" + (f" on {dataset}" if dataset else ""),
                            expected="a record written by jepa-eval monitor for this training folder",
                            found=f"{sum(r.protocol == 'monitor' for r in records)} monitor records of other runs",
                            hint=f"run jepa-eval monitor {run_dir} first, with the same --results-dir")
    return max(mine, key=lambda r: r.created)


def _top1(record: ResultRecord) -> float | None:
    """Mean ``top1`` of a record at its protocol's table coordinates (k-NN: k = 20)."""
    fixed = get_protocol(record.protocol).table_coords
    values = [m.value for m in record.metrics if m.name == "top1" and m.value is not None
              and all(m.coords.get(k, v) == v for k, v in fixed.items())]
    return sum(values) / len(values) if values else None


def _accuracy_by_checkpoint(records: list[ResultRecord], config: SignalsConfig, dataset: str,
                            monitor_mode: str) -> tuple[dict[str, list[tuple[ResultRecord, float]]], str]:
    """(checkpoint sha256 or resolved path -> [(record, top-1)], the feature mode used)."""
    candidates = [(r, top1) for r in records if r.protocol == config.accuracy and r.dataset.name == dataset
                  and r.model.path and not r.k_shot and (top1 := _top1(r)) is not None]
    modes = sorted({r.features.mode for r, _ in candidates})
    mode = config.mode or (monitor_mode if monitor_mode in modes or not modes else modes[0] if len(modes) == 1 else None)
    if mode is None:
        raise JepaEvalError(f"the {config.accuracy} records of this run use several feature modes",
                            expected="one mode", found=", ".join(modes), hint="pick one with --mode")
    by: dict[str, list[tuple[ResultRecord, float]]] = defaultdict(list)
    for record, top1 in candidates:
        if record.features.mode == mode:
            if record.model.sha256:
                by[record.model.sha256].append((record, top1))
            by[str(Path(record.model.path).resolve())].append((record, top1))
    return by, mode


def gather(records: list[ResultRecord], run_dir: Path, config: SignalsConfig, dataset: str | None = None) -> Gathered:
    """The points of ``run_dir``'s checkpoints that have an accuracy (see the module docstring)."""
    monitor = run_monitor_record(records, run_dir, dataset)
    data = monitor.dataset.name
    points = points_of(monitor)
    notes: list[str] = []
    if config.accuracy == MONITOR_KNN:
        by: dict[str, list[tuple[ResultRecord, float]]] = {}
        mode = monitor.features.mode
    else:
        get_protocol(config.accuracy, runs_on="model")
        by, mode = _accuracy_by_checkpoint(records, config, data, monitor.features.mode)
    used: set[str] = set()
    gathered, evaluated = [], {}
    for point in points:
        accuracy = _accuracy(point, by, run_dir, config, used, evaluated, notes)
        if accuracy is None:
            continue
        values = {k: v for k, v in point.values.items() if k in config.signals}
        gathered.append({"epoch": int(point.coords["epoch"]), "checkpoint": point.coords["checkpoint"],
                         "accuracy": accuracy, **values})
    if config.accuracy != MONITOR_KNN and len(gathered) < len(points):
        notes.append(f"{len(points) - len(gathered)} of {len(points)} checkpoints have no {config.accuracy} "
                     f"record on {data} ({mode})")
    if "train_loss" in config.signals and gathered and not any("train_loss" in p for p in gathered):
        for point in points:  # the monitor's own hash of what it measured, where it has one
            if point.coords.get("ckpt_sha256"):
                evaluated.setdefault(str(point.coords["checkpoint"]), str(point.coords["ckpt_sha256"]))
        notes += _log_losses(gathered, run_dir, evaluated, datetime.fromisoformat(monitor.created))
    return Gathered(gathered, monitor, sorted(used), data, mode, notes)


def _accuracy(point: Point, by: dict[str, list[tuple[ResultRecord, float]]], run_dir: Path, config: SignalsConfig,
              used: set[str], evaluated: dict[str, str], notes: list[str]) -> float | None:
    """The accuracy of one checkpoint: the monitor's k-NN, or the mean top-1 of its records
    (none when a path names records of several contents: which one the monitor saw is unknown)."""
    if config.accuracy == MONITOR_KNN:
        return point.values.get("knn_top1")
    name = str(point.coords["checkpoint"])
    sha = point.coords.get("ckpt_sha256")
    key = sha if sha else (None if "latest" in name else str((run_dir / name).resolve()))
    matches = by.get(key, []) if key is not None else []
    if not matches:
        return None
    if len({r.model.sha256 for r, _ in matches}) > 1:
        notes.append(f"{name}: {config.accuracy} records of several contents of this file; left out")
        return None
    used.update(r.run_id for r, _ in matches)
    if matches[0][0].model.sha256:
        evaluated[name] = str(matches[0][0].model.sha256)
    return sum(v for _, v in matches) / len(matches)


def _log_losses(points: list[dict[str, Any]], run_dir: Path, evaluated: dict[str, str], measured: datetime) -> list[str]:
    """Add ``train_loss`` from the run's CSV log, when the checkpoints are still the evaluated
    ones: the same sha256 where a record names it, else not modified since the monitor
    record was made (``measured``)."""
    losses = run_epoch_losses(run_dir)
    if losses is None:
        return [f"no training loss: the monitor record has none and {run_dir} has no *_r0.csv log"]
    changed = []
    for point in points:
        name = str(point["checkpoint"])
        path = run_dir / name
        if not path.is_file():
            changed.append(name)
        elif name in evaluated:
            if file_sha256(path) != evaluated[name]:
                changed.append(name)
        elif datetime.fromtimestamp(path.stat().st_mtime, timezone.utc) > measured:
            changed.append(name)
    if changed:
        return [f"no training loss: {', '.join(sorted(changed, key=_natural))} in {run_dir} changed (or went) "
                f"since it was evaluated, so {losses.source.name} is the log of another run"]
    for point in points:
        if point["epoch"] in losses.losses:
            point["train_loss"] = losses.losses[point["epoch"]]
    return [f"training loss from {losses.source.name}"]


def _natural(name: str) -> tuple[int, str]:
    """'jepa-ep2' before 'jepa-ep10'."""
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else -1, name)


def signals_record(gathered: Gathered, config: SignalsConfig, started: float | None = None) -> ResultRecord:
    """The ``signals`` record of a run: its rows and summary, the records it read in ``params``."""
    protocol = get_protocol("signals", runs_on="run")
    evaluation = protocol.evaluate(gathered.points, config)
    monitor = gathered.monitor
    return ResultRecord(
        protocol=protocol.name, protocol_version=protocol.version, model=monitor.model,
        dataset=DatasetInfo(name=gathered.dataset, train_split=monitor.dataset.train_split,
                            eval_split=monitor.dataset.eval_split),
        features=FeatureInfo(mode=gathered.mode, image_size=monitor.features.image_size),
        params={**asdict(config), "monitor_record": monitor.run_id, "accuracy_records": gathered.accuracy_records},
        metrics=evaluation.metrics, summary={**evaluation.summary, "notes": gathered.notes},
        wall_time_s=0.0 if started is None else time.perf_counter() - started)
