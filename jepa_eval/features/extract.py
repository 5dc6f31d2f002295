"""Extraction: the features of every image of a dataset, in dataset order, one batch at a time.

Runs under ``torch.inference_mode`` with bf16 autocast on CUDA; under ``torchrun`` each rank embeds a
strided shard and rank 0 gathers the rows back into dataset order. Features are checked for NaN
and infinities batch by batch.
"""

from __future__ import annotations

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


def extract_features(model: VisionTransformer, dataset: Dataset, mode: str, *, batch_size: int = 64,
                     num_workers: int = 0, device: str | torch.device | None = None,
                     progress: bool = True, desc: str = "") -> FeatureSet:
    """Features of every sample of ``dataset`` (``ds[i] -> (image [3,H,W], label)``) in order.

    Runs under ``torch.inference_mode`` with bf16 autocast on CUDA; rows come back float32.
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
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda", drop_last=False)
    model.to(device)
    start = time.perf_counter()
    features, labels = _embed_batches(model, mode, device, indices,
                                      progress_bar(loader, desc=desc or f"features [{mode}]", unit="batch",
                                                   enabled=progress and rank == 0))
    meta: dict[str, Any] = {
        "mode": mode, "dim": feature_dim(model, mode), "device": str(device),
        "compute_dtype": compute_dtype(device), "feature_code_version": FEATURE_CODE_VERSION,
        "wall_time_s": round(time.perf_counter() - start, 3), "world_size": world,
    }
    if world == 1:
        return FeatureSet(features, labels, {**meta, "rows": len(labels)})
    return _gather_to_rank0(indices, features, labels, total, meta, rank)


def _embed_batches(model: VisionTransformer, mode: str, device: torch.device, indices: np.ndarray,
                   batches: Iterable[tuple[torch.Tensor, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Embed (images, labels) batches whose rows are dataset ``indices`` in turn: rows, labels."""
    dim = feature_dim(model, mode)
    rows: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    done = 0
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for images, targets in batches:
            batch = embed(model, images.to(device, non_blocking=True), mode).float().cpu().numpy()
            _raise_if_not_finite(batch, indices[done:done + len(batch)])
            rows.append(batch)
            labels.append(torch.as_tensor(targets).reshape(-1).numpy().astype(np.int64))
            done += len(batch)
    if not rows:
        return np.zeros((0, dim), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(rows), np.concatenate(labels)


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
