"""One function per protocol that turns (model, dataset, feature mode, config) into a result record.

The CLI commands, ``transfer`` and ``suite`` all run protocols through these, so a number means
the same thing whichever command produced it. Records are returned, not written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from jepa_eval.backbones.load import Backbone
from jepa_eval.data import get_spec
from jepa_eval.core.devices import rank
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols import PROTOCOL_VERSIONS
from jepa_eval.results.record import Metric, ResultRecord
from jepa_eval.features.splits import (ExtractOptions, ModelSpec, SplitFeatures, dataset_record, model_record,
                              split_features)


@dataclass
class RankConfig:
    """Label-free diagnostics on ``samples`` seeded rows of a split; LiDAR on ``lidar_images`` x ``lidar_views`` crops."""

    samples: int = 10_000
    seed: int = 0
    lidar_images: int = 1000
    lidar_views: int = 10
    lidar_delta: float = 1e-4
    lidar_eps: float = 1e-8
    lidar: bool = True


def train_eval_features(backbone: Backbone, dataset: str, mode: str, options: ExtractOptions,
                        log: Any = None) -> tuple[SplitFeatures, SplitFeatures]:
    """Features of the dataset's training and evaluation splits (cached).

    Under ``torchrun`` the ranks share the extraction, then every rank but 0 exits: rank 0
    runs the protocol and writes the result.
    """
    spec = get_spec(dataset)
    pair = []
    for split in (spec.train_split, spec.eval_split):
        result = split_features(backbone, dataset, split, mode, options)
        if log is not None:
            where = "reused from the feature cache" if result.cache_hit else "extracted"
            log(f"features {dataset}/{split} ({mode}): {result.size} x "
                f"{result.features.features.shape[1]} ({where})")
        pair.append(result)
    leave_unless_rank0()
    return pair[0], pair[1]


def leave_unless_rank0() -> None:
    """End a helper rank of a ``torchrun`` evaluation once the shared extraction is done."""
    if rank() != 0:
        raise SystemExit(0)


def _record(protocol: str, spec: ModelSpec, backbone: Backbone, dataset: dict[str, Any], mode: str,
            params: dict[str, Any], metrics: list[Metric], summary: dict[str, Any]) -> ResultRecord:
    return ResultRecord(protocol=protocol, protocol_version=PROTOCOL_VERSIONS[protocol],
                        model=model_record(spec, backbone), dataset=dataset,
                        features={"mode": mode, "image_size": backbone.image_size}, params=params,
                        metrics=[m.as_dict() for m in metrics], summary=summary)


def run_knn(spec: ModelSpec, backbone: Backbone, train: SplitFeatures, test: SplitFeatures,
            mode: str, config: Any) -> ResultRecord:
    """Weighted k-NN, top-1/top-5 for every k; the summary gives the best k by top-1."""
    from jepa_eval.protocols.knn import knn_evaluate

    metrics = knn_evaluate(train.features.features, train.features.labels, test.features.features,
                           test.features.labels, config, num_classes=train.num_classes)
    top1 = [m for m in metrics if m.name == "top1"]
    best = max(top1, key=lambda m: m.value)
    summary = {f"top1_k{m.coords['k']}": m.value for m in top1}
    summary.update(best_top1=best.value, best_k=best.coords["k"])
    return _record("knn", spec, backbone, dataset_record(train, test), mode, asdict(config), metrics, summary)


def run_linear(spec: ModelSpec, backbone: Backbone, train: SplitFeatures, test: SplitFeatures,
               mode: str, config: Any, device: str | None = None, progress: bool = True) -> ResultRecord:
    """A grid of linear heads; the chosen head's top-1/top-5 on the evaluation split."""
    from jepa_eval.protocols.linear import linear_probe

    result = linear_probe(train.features.features, train.features.labels, test.features.features,
                          test.features.labels, config, num_classes=train.num_classes,
                          device=None if device in (None, "auto") else device, progress=progress)
    summary = {m.name: m.value for m in result.metrics if m.name in ("top1", "top5")}
    summary.update({f"chosen_{k}": v for k, v in result.chosen.items()})
    return _record("linear", spec, backbone, dataset_record(train, test), mode,
                   {**asdict(config), "selected_on": result.selected_on}, result.metrics, summary)


def run_lowshot(spec: ModelSpec, backbone: Backbone, train: SplitFeatures, test: SplitFeatures,
                mode: str, config: Any, subset_indices: np.ndarray | None = None,
                subset_file: str | None = None, device: str | None = None,
                progress: bool = True) -> ResultRecord:
    """Logistic regression on label fractions / k shots / a subset file, over seeds."""
    from jepa_eval.protocols.lowshot import lowshot_evaluate

    result = lowshot_evaluate(train.features.features, train.features.labels, test.features.features,
                              test.features.labels, config, subset_indices=subset_indices,
                              num_classes=train.num_classes,
                              device=None if device in (None, "auto") else device, progress=progress)
    summary = {_setting_label(m): m.value for m in result.summary}
    params = {**asdict(config), "subset_file": subset_file}
    return _record("lowshot", spec, backbone, dataset_record(train, test), mode, params,
                   list(result.metrics) + list(result.summary), summary)


def _setting_label(metric: Metric) -> str:
    setting = ",".join(f"{k}={v}" for k, v in metric.coords.items())
    return f"{metric.name}[{setting}]" if setting else metric.name


def run_rank(spec: ModelSpec, backbone: Backbone, features: SplitFeatures, mode: str,
             config: RankConfig, lidar_views: np.ndarray | None = None) -> ResultRecord:
    """RankMe, alpha-ReQ, (LiDAR), std, cosine and uniformity on seeded rows of one split."""
    from jepa_eval.protocols.rank import rank_metrics

    rows = features.features.features
    if rows.shape[0] < 2:
        raise JepaEvalError("rank metrics need at least 2 samples", found=f"{rows.shape[0]}")
    picked = seeded_subset(rows.shape[0], config.samples, config.seed)
    metrics = rank_metrics(rows[picked], lidar_views=lidar_views, lidar_delta=config.lidar_delta,
                           lidar_eps=config.lidar_eps)
    summary = {m.name: m.value for m in metrics}
    dataset = {"name": features.dataset, "root": features.root, "split": features.split,
               "n_split": features.size, "n_used": int(picked.size)}
    return _record("rank", spec, backbone, dataset, mode, asdict(config), metrics, summary)


def seeded_subset(total: int, wanted: int, seed: int) -> np.ndarray:
    """``min(total, wanted)`` distinct sorted row indices, the same for the same seed."""
    if wanted >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=wanted, replace=False))


def rank_record(spec: ModelSpec, backbone: Backbone, dataset: str, split: str | None, mode: str,
                config: RankConfig, options: ExtractOptions, log: Any = None) -> ResultRecord:
    """Extract ``config.samples`` seeded rows (and LiDAR views when asked), then :func:`run_rank`."""
    from jepa_eval.features.splits import augmented_views

    split = split or get_spec(dataset).train_split
    features, total = seeded_split_features(backbone, dataset, split, mode, options, config.samples, config.seed)
    if log is not None:
        where = "reused from the feature cache" if features.cache_hit else "extracted"
        log(f"features {dataset}/{split} ({mode}): {features.size} seeded rows ({where})")
    views = None
    if config.lidar:
        views = augmented_views(backbone, dataset, split, mode, options, images=config.lidar_images,
                                views=config.lidar_views, seed=config.seed)
    record = run_rank(spec, backbone, features, mode, config, lidar_views=views)
    record.dataset["n_split"] = total
    return record


def subset_from_file(dataset: str, subset_file: str, options: ExtractOptions) -> np.ndarray:
    """Training-split row indices named by a published subset file (e.g. ImageNet 1percent.txt)."""
    from jepa_eval.data import build_dataset
    from jepa_eval.protocols.lowshot import read_subset_file

    names = build_dataset(dataset, get_spec(dataset).train_split, data_root=options.data_root,
                          transform=lambda image: image, download=options.download).sample_names
    return read_subset_file(subset_file, names)


def seeded_split_features(backbone: Backbone, dataset: str, split: str, mode: str, options: ExtractOptions,
                          count: int, seed: int) -> tuple[SplitFeatures, int]:
    """Features of ``count`` seeded rows of a split (all rows when it is smaller), and the split's size."""
    from jepa_eval.data import build_dataset

    total = len(build_dataset(dataset, split, data_root=options.data_root, image_size=backbone.image_size,
                              transform=lambda image: image, download=options.download))
    picked = seeded_subset(total, count, seed)
    return split_features(backbone, dataset, split, mode, options, subset=picked), total
