"""Collapse across a training run: the rank metrics (and a quick k-NN) of every checkpoint.

The trainer writes ``{tag}-ep{N}.pth.tar`` and ``{tag}-latest.pth.tar``; each holds its number
of completed epochs in the ``epoch`` field, which is what the x-axis shows (the official
trainer's file names are off by one, the field is not).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from pathlib import Path

import torch

from jepa_eval.data import get_spec
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.features.splits import ExtractOptions, resolve_mode, seeded_split_features
from jepa_eval.pipeline.evaluate import Log, run_protocol
from jepa_eval.protocols import get_protocol
from jepa_eval.protocols.knn import KNNConfig
from jepa_eval.protocols.monitor import MonitorConfig
from jepa_eval.protocols.rank import RankConfig
from jepa_eval.protocols.registry import Inputs, Labelled
from jepa_eval.results.record import DatasetInfo, FeatureInfo, ModelInfo, ResultRecord

CHECKPOINT_PATTERN = re.compile(r"-(ep\d+|latest)\.pth(\.tar)?$")


def find_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(completed epochs, file) of every checkpoint in ``run_dir``, by epoch; a ``latest`` file
    that repeats an ``ep`` file's epoch is dropped."""
    if not run_dir.is_dir():
        raise JepaEvalError(f"training folder {run_dir} does not exist",
                            expected="a folder with *-ep{N}.pth.tar / *-latest.pth.tar checkpoints")
    found: dict[int, Path] = {}
    for path in sorted(run_dir.iterdir()):
        if not CHECKPOINT_PATTERN.search(path.name):
            continue
        epoch = _completed_epochs(path)
        if epoch not in found or "latest" in found[epoch].name:
            found[epoch] = path
    if not found:
        raise JepaEvalError(f"no checkpoints in {run_dir}", expected="files named *-ep{N}.pth.tar or *-latest.pth.tar",
                            found=", ".join(p.name for p in sorted(run_dir.iterdir())[:8]) or "an empty folder")
    return sorted(found.items())


def _completed_epochs(path: Path) -> int:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise JepaEvalError(f"cannot read checkpoint {path}", expected="a torch checkpoint written by a trainer",
                            found=f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or "epoch" not in state:
        raise JepaEvalError(f"checkpoint {path} has no 'epoch' field", expected="an I-JEPA training checkpoint")
    return int(state["epoch"])


def monitor_run(run_dir: Path, dataset: str, config: MonitorConfig, options: ExtractOptions,
                mode: str | None = None, log: Log | None = None) -> ResultRecord:
    """One record with a row per (checkpoint, metric) and the epoch where collapse started."""
    started = time.perf_counter()
    rank, knn, monitor = get_protocol("rank"), get_protocol("knn"), get_protocol("monitor", runs_on="run")
    spec_data = get_spec(dataset)
    per_epoch: dict[int, dict[str, float]] = {}
    names: dict[int, str] = {}
    for epoch, path in find_checkpoints(run_dir):
        model_spec = ModelSpec(ckpt=str(path), ckpt_key=config.ckpt_key, seed=config.seed)
        backbone = model_spec.load()
        chosen = resolve_mode(backbone, mode)
        rank_config = RankConfig(samples=config.samples, seed=config.seed, lidar=config.lidar,
                                 lidar_images=config.lidar_images, lidar_views=config.lidar_views)
        values = dict(run_protocol(rank, rank_config, model_spec, backbone, dataset, chosen, options,
                                   split=spec_data.train_split).summary)
        if config.knn:
            train, _ = seeded_split_features(backbone, dataset, spec_data.train_split, chosen, options,
                                             config.knn_train, config.seed)
            test, _ = seeded_split_features(backbone, dataset, spec_data.eval_split, chosen, options,
                                            config.knn_eval, config.seed)
            inputs = Inputs(train=Labelled(train.features.features, train.features.labels),
                            eval=Labelled(test.features.features, test.features.labels), num_classes=train.num_classes)
            values.update({f"knn_{m.name}": m.value for m in knn.evaluate(inputs, KNNConfig(ks=(config.knn_k,))).metrics})
        per_epoch[epoch], names[epoch] = values, path.name
        if log is not None:
            shown = ", ".join(f"{k} {v:.3g}" for k, v in values.items() if k in ("rankme", "feature_std", "knn_top1"))
            log(f"epoch {epoch} ({path.name}): {shown}")
    evaluation = monitor.evaluate(per_epoch, names, config)
    model = ModelInfo(name=run_dir.name, path=str(run_dir), sha256=None, family=backbone.family,
                      ckpt_key=config.ckpt_key, arch=backbone.arch)
    return ResultRecord(protocol=monitor.name, protocol_version=monitor.version, model=model,
                        dataset=DatasetInfo(name=dataset, train_split=spec_data.train_split,
                                            eval_split=spec_data.eval_split),
                        features=FeatureInfo(mode=chosen, image_size=backbone.image_size), params=asdict(config),
                        metrics=evaluation.metrics, summary=evaluation.summary,
                        wall_time_s=time.perf_counter() - started)
