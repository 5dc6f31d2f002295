"""Extraction: the features of every image of a dataset, in dataset order, one batch at a time.

Runs under ``torch.inference_mode`` with bf16 autocast on CUDA; under ``torchrun`` each rank embeds a
strided shard and rank 0 gathers the rows back into dataset order. Features are checked for NaN
and infinities batch by batch.

Images are decoded by data-loader workers (by default as many as the cores this process may use,
at most :data:`MAX_AUTO_WORKERS`; none for a dataset held in memory or smaller than
:data:`TINY_DATASET`, where starting workers costs more than it saves), into pinned memory on
CUDA, copied without blocking. The progress line says what bounds the run: the time spent waiting
for the next batch (decoding) against the time in the model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader, Dataset, Subset

from jepa_eval.core.devices import compute_dtype, default_device, rank_and_world
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.progress import progress as progress_bar
from jepa_eval.features.featureset import FeatureSet
from jepa_eval.features.modes import check_eval, check_mode, embed, feature_dim

# Bump when embed() or extract_features() changes the numbers they return: it is part of
# every feature-cache key, so old cached features stop matching.
FEATURE_CODE_VERSION = "1"

_MAX_BAD_INDICES = 5
MAX_AUTO_WORKERS = 8
TINY_DATASET = 512  # images: below this, worker start-up outweighs parallel decoding


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a job scheduler's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def auto_workers(dataset: Dataset) -> int:
    """The default data-loader workers for ``dataset``: 0 when its images are in memory (CIFAR,
    STL-10, digits) or it has fewer than :data:`TINY_DATASET`, else the available cores up to
    :data:`MAX_AUTO_WORKERS`."""
    base = dataset
    while isinstance(base, Subset):
        base = base.dataset
    if len(dataset) < TINY_DATASET or getattr(base, "in_memory", False):  # type: ignore[arg-type]
        return 0
    return min(MAX_AUTO_WORKERS, available_cores())


def bound_by(waiting_s: float, model_s: float) -> str:
    """What bounds an extraction: 'decode' when batches took longer to arrive than to embed, else 'model'."""
    return "decode" if waiting_s > model_s else "model"


def extract_features(model: VisionTransformer, dataset: Dataset, mode: str, *, batch_size: int = 64,
                     num_workers: int | None = None, device: str | torch.device | None = None,
                     progress: bool = True, desc: str = "") -> FeatureSet:
    """Features of every sample of ``dataset`` (``ds[i] -> (image [3,H,W], label)``) in order.

    Runs under ``torch.inference_mode`` with bf16 autocast on CUDA; rows come back float32.
    ``num_workers`` None: :func:`auto_workers`. ``meta`` records the workers, the seconds spent
    waiting for batches and in the model, and which of the two bounds the run.
    Under ``torchrun`` (world size > 1) rank r embeds indices r, r+W, r+2W... and rank 0
    gathers all rows back into dataset order; the other ranks return their own shard
    (``meta['gathered']`` is False and ``meta['indices']`` lists its rows).
    A batch with a NaN or infinite feature stops the run with :class:`JepaEvalError`.
    """
    check_mode(model, mode)
    check_eval(model)
    device = torch.device(device) if device is not None else default_device()
    rank, world = rank_and_world()
    total = len(dataset)  # type: ignore[arg-type]
    indices = np.arange(total)[rank::world]
    shard = dataset if world == 1 else Subset(dataset, indices.tolist())
    workers = auto_workers(shard) if num_workers is None else num_workers
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", drop_last=False)
    model.to(device)
    start = time.perf_counter()
    bar = progress_bar(total=len(loader), desc=desc or f"features [{mode}]", unit="batch",
                       enabled=progress and rank == 0)
    features, labels, timing = _embed_batches(model, mode, device, indices, loader, bar)
    meta: dict[str, Any] = {
        "mode": mode, "dim": feature_dim(model, mode), "device": str(device),
        "compute_dtype": compute_dtype(device), "feature_code_version": FEATURE_CODE_VERSION,
        "wall_time_s": round(time.perf_counter() - start, 3), "world_size": world, "workers": workers,
        **timing,
    }
    if world == 1:
        return FeatureSet(features, labels, {**meta, "rows": len(labels)})
    return _gather_to_rank0(indices, features, labels, total, meta, rank)


def _embed_batches(model: VisionTransformer, mode: str, device: torch.device, indices: np.ndarray,
                   batches: Iterable[tuple[torch.Tensor, Any]], bar: Any
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Embed (images, labels) batches whose rows are dataset ``indices`` in turn: rows, labels and
    the timing (seconds waiting for batches, seconds in the model, what bounds the run).

    The model time ends when the features reach the CPU, so on CUDA it includes the GPU's work.
    """
    dim = feature_dim(model, mode)
    rows: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    done, waiting, in_model = 0, 0.0, 0.0
    stream = iter(batches)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        while True:
            asked = time.perf_counter()
            try:
                images, targets = next(stream)
            except StopIteration:
                break
            arrived = time.perf_counter()
            batch = embed(model, images.to(device, non_blocking=True), mode).float().cpu().numpy()
            waiting, in_model = waiting + arrived - asked, in_model + time.perf_counter() - arrived
            _raise_if_not_finite(batch, indices[done:done + len(batch)])
            rows.append(batch)
            labels.append(torch.as_tensor(targets).reshape(-1).numpy().astype(np.int64))
            done += len(batch)
            bar.set_postfix(bound=f"{bound_by(waiting, in_model)} (waiting for images "
                                  f"{100 * waiting / max(waiting + in_model, 1e-9):.0f}% of the time)")
            bar.update(1)
    bar.close()
    timing = {"waiting_s": round(waiting, 3), "model_s": round(in_model, 3), "bound": bound_by(waiting, in_model)}
    if not rows:
        return np.zeros((0, dim), np.float32), np.zeros((0,), np.int64), timing
    return np.concatenate(rows), np.concatenate(labels), timing


def _raise_if_not_finite(batch: np.ndarray, batch_indices: np.ndarray) -> None:
    """Raise if any row of ``batch`` [B, D'] holds a NaN or an infinity."""
    bad = ~np.isfinite(batch).all(axis=1)
    if bad.any():
        first = ", ".join(str(int(i)) for i in batch_indices[bad][:_MAX_BAD_INDICES])
        raise JepaEvalError("the backbone produced NaN or infinite features",
                            expected="finite features for every image",
                            found=f"{int(bad.sum())} of {len(batch)} rows in a batch not finite "
                                  f"(first dataset indices: {first})",
                            hint="check the checkpoint's weights and the input images; "
                                 "on GPU, bf16 overflow is possible in very deep models")


def _gather_to_rank0(indices: np.ndarray, features: np.ndarray, labels: np.ndarray, total: int,
                     meta: dict[str, Any], rank: int) -> FeatureSet:
    """Collect every rank's (indices, features, labels) on rank 0, in dataset order."""
    shards: list[Any] | None = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object((indices, features, labels), shards, dst=0)
    if rank != 0:
        return FeatureSet(features, labels, {**meta, "rows": len(labels), "gathered": False,
                                             "rank": rank, "indices": indices.tolist()})
    out = np.zeros((total, features.shape[1]), np.float32)
    out_labels = np.zeros((total,), np.int64)
    for shard_indices, shard_features, shard_labels in shards:  # type: ignore[union-attr]
        out[shard_indices] = shard_features
        out_labels[shard_indices] = shard_labels
    return FeatureSet(out, out_labels, {**meta, "rows": total, "gathered": True, "rank": 0})
