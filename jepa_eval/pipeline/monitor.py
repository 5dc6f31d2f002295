"""Collapse across a training run: the rank metrics (and a quick k-NN) of every checkpoint.

The trainer writes ``{tag}-ep{N}.pth.tar`` and ``{tag}-latest.pth.tar``; each holds its number
of completed epochs in the ``epoch`` field, which is what the x-axis shows (the official
trainer's file names are off by one, the field is not). A :class:`RunMonitor` grows one result
record, a checkpoint at a time, and rewrites it atomically after each; :func:`follow_run` feeds
it the complete checkpoint states a :class:`~jepa_eval.pipeline.watch.CheckpointWatcher` finds,
once (``monitor RUN_DIR``) or as they land (``monitor RUN_DIR --follow``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data import get_spec
from jepa_eval.features.splits import ExtractOptions, resolve_mode, seeded_split_features
from jepa_eval.pipeline.evaluate import Log, run_protocol
from jepa_eval.pipeline.trainlog import run_epoch_losses
from jepa_eval.pipeline.watch import CheckpointState, CheckpointWatcher
from jepa_eval.protocols import get_protocol
from jepa_eval.protocols.knn import KNNConfig
from jepa_eval.protocols.monitor import MonitorConfig, Point, points_of
from jepa_eval.protocols.rank import RankConfig
from jepa_eval.protocols.registry import Inputs, Labelled
from jepa_eval.results.record import DatasetInfo, FeatureInfo, ModelInfo, ResultRecord, read_record, write_record

#: Where a checkpoint's training loss came from when the run has no CSV log row for its epoch.
CHECKPOINT_LOSS = "the checkpoint's 'loss' field"


@dataclass(frozen=True)
class Measured:
    """What one checkpoint measured: ``values`` (rank metrics, ``knn_top1``/``knn_top5``), and
    the backbone's family, architecture, input size and the feature mode used."""

    values: dict[str, float]
    family: str
    arch: dict[str, Any]
    image_size: int
    mode: str


def measure_checkpoint(path: Path, dataset: str, config: MonitorConfig, options: ExtractOptions,
                       mode: str | None = None) -> Measured:
    """The rank protocol on ``config.samples`` seeded training rows of ``dataset`` (LiDAR too
    with ``config.lidar``) and, with ``config.knn``, a quick k-NN of seeded evaluation rows
    against seeded training rows, for the checkpoint file ``path``."""
    rank, knn = get_protocol("rank"), get_protocol("knn")
    spec_data = get_spec(dataset)
    model_spec = ModelSpec(ckpt=str(path), ckpt_key=config.ckpt_key, seed=config.seed)
    backbone = model_spec.load()
    chosen = resolve_mode(backbone, mode)
    rank_config = RankConfig(samples=config.samples, seed=config.seed, lidar=config.lidar,
                             lidar_images=config.lidar_images, lidar_views=config.lidar_views)
    values = {k: float(v) for k, v in run_protocol(rank, rank_config, model_spec, backbone, dataset, chosen, options,
                                                   split=spec_data.train_split).summary.items()}  # type: ignore[union-attr]
    if config.knn:
        train, _ = seeded_split_features(backbone, dataset, spec_data.train_split, chosen, options,
                                         config.knn_train, config.seed)
        test, _ = seeded_split_features(backbone, dataset, spec_data.eval_split, chosen, options,
                                        config.knn_eval, config.seed)
        inputs = Inputs(train=Labelled(train.features.features, train.features.labels),
                        eval=Labelled(test.features.features, test.features.labels), num_classes=train.num_classes)
        values.update({f"knn_{m.name}": m.value for m in knn.evaluate(inputs, KNNConfig(ks=(config.knn_k,))).metrics})
    return Measured(values, backbone.family, backbone.arch, backbone.image_size, chosen)


@dataclass(frozen=True)
class Added:
    """A checkpoint added to a :class:`RunMonitor`: its measurement, (epoch, reason) when it
    made the run count as collapsed for the first time, and whether it only ``renamed`` a
    measured point (an ``ep`` file of a ``latest`` state already measured)."""

    point: Point
    collapse: tuple[int, str] | None
    renamed: bool = False


class RunMonitor:
    """The monitor record of one training run, grown one checkpoint at a time.

    Each :meth:`add` measures a checkpoint state, adds the run's training loss of that epoch
    (``train_loss``: the mean of the epoch's rows of the CSV log beside the checkpoints, else the
    checkpoint's ``loss`` field), re-applies the collapse rule to the whole run and, with a
    ``results_dir``, rewrites the record there atomically, so a reader never sees a broken
    record and an interrupted run keeps every checkpoint measured so far.
    """

    def __init__(self, run_dir: Path, dataset: str, config: MonitorConfig, options: ExtractOptions,
                 mode: str | None = None, results_dir: Path | None = None,
                 resume: ResultRecord | None = None) -> None:
        self.run_dir, self.dataset, self.config, self.options = run_dir, dataset, config, options
        self.mode, self.results_dir = mode, results_dir
        self.protocol = get_protocol("monitor", runs_on="run")
        self.points: list[Point] = []
        self.loss_sources: set[str] = set()
        self.record: ResultRecord | None = resume
        self.path: Path | None = None
        self.collapse: tuple[int, str] | None = None
        if resume is not None:
            self.points = points_of(resume)
            self.loss_sources = set(resume.summary.get("train_loss_from") or [])
            self.collapse = _collapse(resume.summary)

    def add(self, state: CheckpointState) -> Added:
        """Measure ``state`` (or, for an alias, rename the point it is the permanent file of)."""
        started = time.perf_counter()
        if state.alias:
            point = next(p for p in self.points if p.coords["epoch"] == state.epoch)
            point.coords.update(checkpoint=state.name, ckpt_sha256=state.sha256, measured_as=point.coords["checkpoint"])
            self._build(None, 0.0)
            return Added(point, None, renamed=True)
        measured = measure_checkpoint(state.snapshot, self.dataset, self.config, self.options, self.mode)
        values = dict(measured.values)
        losses = run_epoch_losses(self.run_dir)
        if losses is not None and state.epoch in losses.losses:
            values["train_loss"] = losses.losses[state.epoch]
            self.loss_sources.add(losses.source.name)
        elif "loss" in state.fields:
            values["train_loss"] = state.fields["loss"]
            self.loss_sources.add(CHECKPOINT_LOSS)
        point = Point({"epoch": state.epoch, "checkpoint": state.name, "ckpt_sha256": state.sha256}, values)
        self.points = [p for p in self.points if p.coords["epoch"] != state.epoch] + [point]
        self._build(measured, time.perf_counter() - started)
        found = _collapse(self.record.summary)  # type: ignore[union-attr]
        newly = found if self.collapse is None and found is not None else None
        self.collapse = found
        return Added(point, newly)

    def _build(self, measured: Measured | None, seconds: float) -> None:
        evaluation = self.protocol.evaluate(self.points, self.config)
        summary = {**evaluation.summary, "train_loss_from": sorted(self.loss_sources)}
        spec_data = get_spec(self.dataset)
        if self.record is None and measured is not None:
            model = ModelInfo(name=self.run_dir.name, path=str(self.run_dir.resolve()), sha256=None,
                              family=measured.family, ckpt_key=self.config.ckpt_key, arch=measured.arch)
            self.record = ResultRecord(
                protocol=self.protocol.name, protocol_version=self.protocol.version, model=model,
                dataset=DatasetInfo(name=self.dataset, train_split=spec_data.train_split, eval_split=spec_data.eval_split),
                features=FeatureInfo(mode=measured.mode, image_size=measured.image_size),
                params=asdict(self.config), metrics=[], summary={})
        self.record.metrics, self.record.summary = evaluation.metrics, summary  # type: ignore[union-attr]
        self.record.wall_time_s += seconds  # type: ignore[union-attr]
        if self.results_dir is not None:
            self.path = write_record(self.record, self.results_dir)


def _collapse(summary: dict[str, Any]) -> tuple[int, str] | None:
    epoch = summary.get("collapse_epoch")
    return None if epoch is None else (int(epoch), str(summary.get("collapse_reason")))


def earlier_record(results_dir: Path, run_dir: Path, dataset: str, config: MonitorConfig,
                   mode: str | None) -> ResultRecord | None:
    """The newest monitor record directly in ``results_dir`` (where it is rewritten) of this run,
    dataset, feature mode (when given), monitor version and config: the one a restarted monitor
    continues."""
    if not results_dir.is_dir():
        return None
    version = get_protocol("monitor", runs_on="run").version
    records = []
    for path in results_dir.glob("*.json"):
        try:
            records.append(read_record(path))
        except JepaEvalError:
            continue
    matching = [r for r in records
                if r.protocol == "monitor" and r.protocol_version == version and r.dataset.name == dataset
                and Path(r.model.path).resolve() == run_dir.resolve() and r.params == asdict(config)
                and (mode is None or r.features.mode == mode) and r.metrics]
    return max(matching, key=lambda r: r.created) if matching else None


def follow_run(monitor: RunMonitor, watcher: CheckpointWatcher, *, follow: bool, poll_s: float = 30.0,
               until_epoch: int | None = None, on_added: Callable[[Added], Any] | None = None,
               sleep: Callable[[float], Any] = time.sleep) -> str:
    """Measure every complete checkpoint state ``watcher`` finds: once, or (``follow``) every
    ``poll_s`` seconds until a checkpoint of epoch ``until_epoch`` or later was measured.
    Calls ``on_added`` after each checkpoint; returns why it stopped ('scanned' or 'until-epoch',
    also when an earlier monitor of the record already got that far). An interrupt (Ctrl-C)
    propagates; everything measured before it is in the record."""
    if until_epoch is not None and any(p.coords["epoch"] >= until_epoch for p in monitor.points):
        return "until-epoch"
    while True:
        for state in watcher.poll():
            try:
                added = monitor.add(state)
            finally:
                watcher.release(state)
            if on_added is not None:
                on_added(added)
            if until_epoch is not None and state.epoch >= until_epoch:
                return "until-epoch"
        if not follow:
            return "scanned"
        sleep(poll_s)


def monitor_run(run_dir: Path, dataset: str, config: MonitorConfig, options: ExtractOptions,
                mode: str | None = None, log: Log | None = None) -> ResultRecord:
    """One record with a row per (checkpoint, metric) of every checkpoint in ``run_dir`` now,
    and the epoch where collapse started (not written: the caller writes it)."""
    monitor = RunMonitor(run_dir, dataset, config, options, mode)
    with tempfile.TemporaryDirectory(prefix="jepa-eval-monitor-") as snapshots:
        watcher = CheckpointWatcher(run_dir, Path(snapshots), patient=False)
        follow_run(monitor, watcher, follow=False,
                   on_added=None if log is None else lambda added: added.renamed or log(point_line(added.point)))
    if monitor.record is None:
        raise no_checkpoints(run_dir)
    return monitor.record


def no_checkpoints(run_dir: Path) -> JepaEvalError:
    """The error for a training folder without a checkpoint."""
    return JepaEvalError(f"no checkpoints in {run_dir}", expected="files named *-ep{N}.pth.tar or *-latest.pth.tar",
                         found=", ".join(p.name for p in sorted(run_dir.iterdir())[:8]) or "an empty folder")


#: The values a one-line summary of a checkpoint shows, in order.
SHOWN = ("rankme", "feature_std", "knn_top1", "train_loss")


def point_line(point: Point) -> str:
    """'epoch 4 (jepa-ep4.pth.tar): rankme 12.3, feature_std 0.031, knn_top1 41.2'."""
    shown = ", ".join(f"{k} {point.values[k]:.3g}" for k in SHOWN if k in point.values)
    return f"epoch {point.coords['epoch']} ({point.coords['checkpoint']}): {shown}"
