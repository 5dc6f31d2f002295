"""Collapse across a training run: the rank metrics (and a quick k-NN) of every checkpoint.

The trainer writes ``{tag}-ep{N}.pth.tar`` and ``{tag}-latest.pth.tar``; each holds its number
of completed epochs in the ``epoch`` field, which is what the x-axis shows (the official
trainer's file names are off by one, the field is not).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from jepa_eval.pipeline import evaluate as jobs
from jepa_eval.data import get_spec
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols import PROTOCOL_VERSIONS
from jepa_eval.results.record import ResultRecord
from jepa_eval.features.splits import ExtractOptions, ModelSpec, check_mode

CHECKPOINT_PATTERN = re.compile(r"-(ep\d+|latest)\.pth(\.tar)?$")


@dataclass
class MonitorConfig:
    """What to measure per checkpoint; ``rankme_fraction`` and ``std_floor`` flag collapse."""

    samples: int = 2000
    seed: int = 0
    ckpt_key: str = "target_encoder"
    knn: bool = True
    knn_train: int = 5000
    knn_eval: int = 2000
    knn_k: int = 20
    lidar: bool = False
    lidar_images: int = 200
    lidar_views: int = 5
    rankme_fraction: float = 0.2
    std_floor: float = 1e-3


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
                mode: str | None = None, log: Callable[[str], Any] | None = None) -> ResultRecord:
    """One record with a row per (checkpoint, metric) and the epoch where collapse started."""
    from jepa_eval.protocols.knn import KNNConfig, knn_evaluate
    from jepa_eval.protocols.rank import detect_collapse

    spec_data = get_spec(dataset)
    rows: list[dict[str, Any]] = []
    per_epoch: dict[int, dict[str, float]] = {}
    for epoch, path in find_checkpoints(run_dir):
        model_spec = ModelSpec(ckpt=str(path), ckpt_key=config.ckpt_key, seed=config.seed)
        backbone = model_spec.load()
        chosen = check_mode(backbone, mode)
        rank_config = jobs.RankConfig(samples=config.samples, seed=config.seed, lidar=config.lidar,
                                      lidar_images=config.lidar_images, lidar_views=config.lidar_views)
        record = jobs.rank_record(model_spec, backbone, dataset, spec_data.train_split, chosen, rank_config, options)
        values = dict(record.summary)
        if config.knn:
            train, _ = jobs.seeded_split_features(backbone, dataset, spec_data.train_split, chosen, options,
                                                config.knn_train, config.seed)
            test, _ = jobs.seeded_split_features(backbone, dataset, spec_data.eval_split, chosen, options,
                                               config.knn_eval, config.seed)
            knn_rows = knn_evaluate(train.features.features, train.features.labels, test.features.features,
                                    test.features.labels, KNNConfig(ks=(config.knn_k,)), num_classes=train.num_classes)
            values.update({f"knn_{m.name}": m.value for m in knn_rows})
        per_epoch[epoch] = values
        rows += [{"name": key, "value": float(value), "epoch": epoch, "checkpoint": path.name}
                 for key, value in values.items()]
        if log is not None:
            shown = ", ".join(f"{k} {v:.3g}" for k, v in values.items() if k in ("rankme", "feature_std", "knn_top1"))
            log(f"epoch {epoch} ({path.name}): {shown}")
    epochs = sorted(per_epoch)
    collapse = detect_collapse(epochs, [per_epoch[e]["rankme"] for e in epochs],
                               [per_epoch[e]["feature_std"] for e in epochs],
                               rankme_fraction=config.rankme_fraction, std_floor=config.std_floor)
    rankmes = [per_epoch[e]["rankme"] for e in epochs]
    summary = {"checkpoints": len(epochs), "collapse_epoch": collapse, "peak_rankme": max(rankmes),
               "peak_epoch": epochs[rankmes.index(max(rankmes))], "final_rankme": rankmes[-1]}
    model = {"name": run_dir.name, "path": str(run_dir), "sha256": None, "family": backbone.family,
             "ckpt_key": config.ckpt_key, "arch": backbone.arch}
    return ResultRecord(protocol="monitor", protocol_version=PROTOCOL_VERSIONS["monitor"], model=model,
                        dataset={"name": dataset, "train_split": spec_data.train_split, "eval_split": spec_data.eval_split},
                        features={"mode": chosen, "image_size": backbone.image_size}, params=asdict(config),
                        metrics=rows, summary=summary)

