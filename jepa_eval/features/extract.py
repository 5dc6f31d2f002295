"""Feature modes of a timm ViT, extraction over a dataset, and feature sets on disk.

A *mode* says which tokens of which blocks make one image's feature vector (D = model width):

- ``avgpool``: mean of the last block's patch tokens after the final norm, [D] (I-JEPA);
- ``avgpool4``: the same for each of the last 4 blocks, concatenated in block order, [4·D];
- ``cls``: the CLS token after the final norm, [D];
- ``cls4``: the normed CLS token of each of the last 4 blocks, concatenated, [4·D];
- ``cls+avgpool``: the normed CLS token then the avg-pooled patch tokens, [2·D] (DINO ViT-B);
- ``pixels``: the normalised input pixels themselves, [3·H·W], only from :class:`RawPixels`
  (the "raw pixels as features" baseline).

Prefix tokens (CLS and registers, ``model.num_prefix_tokens``) never enter an average.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from jepa_eval.core.atomic import atomic_path, atomic_write_json
from jepa_eval.core.errors import JepaEvalError

FEATURE_MODES = ("avgpool", "avgpool4", "cls", "cls4", "cls+avgpool", "pixels")
# Bump when embed() or extract_features() changes the numbers they return: it is part of
# every feature-cache key, so old cached features stop matching.
FEATURE_CODE_VERSION = "1"

_BLOCKS_USED = {"avgpool": 1, "avgpool4": 4, "cls": 1, "cls4": 4, "cls+avgpool": 1}
_CLS_MODES = ("cls", "cls4", "cls+avgpool")
_WIDTH_FACTOR = {"avgpool": 1, "avgpool4": 4, "cls": 1, "cls4": 4, "cls+avgpool": 2}
_MAX_BAD_INDICES = 5


class RawPixels(torch.nn.Module):
    """The raw-pixel baseline: an image [B, 3, S, S] becomes its flattened pixels [B, 3·S·S]."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def check_mode(model: VisionTransformer | RawPixels, mode: str) -> None:
    """Raise :class:`JepaEvalError` unless ``mode`` can be computed on ``model``."""
    if mode not in FEATURE_MODES:
        raise JepaEvalError(f"unknown feature mode {mode!r}",
                            expected="one of " + ", ".join(FEATURE_MODES), found=repr(mode))
    if isinstance(model, RawPixels) or mode == "pixels":
        if not (isinstance(model, RawPixels) and mode == "pixels"):
            raise JepaEvalError("the 'pixels' mode and the raw-pixel baseline go together",
                                expected="--ckpt pixels:SIZE with mode pixels",
                                found=f"mode {mode!r} on a {type(model).__name__}")
        return
    if not isinstance(model, VisionTransformer):
        raise JepaEvalError("features can only be taken from a timm VisionTransformer",
                            expected="timm.models.vision_transformer.VisionTransformer",
                            found=type(model).__name__)
    if mode in _CLS_MODES and getattr(model, "cls_token", None) is None:
        raise JepaEvalError(f"feature mode {mode!r} needs a CLS token, and this model has none",
                            expected="a model with a class token (MAE, DINO, DINOv2, most timm ViTs)",
                            found="a model without a class token (such as an I-JEPA encoder)",
                            hint="use --mode avgpool or avgpool4")
    if _BLOCKS_USED[mode] > len(model.blocks):
        raise JepaEvalError(f"feature mode {mode!r} needs the last {_BLOCKS_USED[mode]} blocks",
                            expected=f"a model with at least {_BLOCKS_USED[mode]} blocks",
                            found=f"{len(model.blocks)} blocks")


def feature_dim(model: VisionTransformer, mode: str) -> int:
    """Length D' of one feature vector of ``mode`` on ``model``."""
    check_mode(model, mode)
    if isinstance(model, RawPixels):
        return 3 * model.image_size**2
    return _WIDTH_FACTOR[mode] * int(model.embed_dim)


def embed(model: VisionTransformer, images: torch.Tensor, mode: str) -> torch.Tensor:
    """Features of ``images`` [B, 3, H, W] (normalised pixels) in ``mode``: [B, D'].

    One pass through the blocks, keeping the outputs of the last blocks the mode needs, each
    passed through the model's final norm. The model must be in eval mode.
    """
    check_mode(model, mode)
    _check_eval(model)
    if images.ndim != 4 or images.shape[1] != 3:
        raise JepaEvalError("images must be a batch of RGB tensors",
                            expected="a tensor of shape [B, 3, H, W]", found=f"shape {list(images.shape)}")
    if isinstance(model, RawPixels):
        return model(images)
    expected_hw = tuple(model.patch_embed.img_size)
    if not getattr(model, "dynamic_img_size", False) and tuple(images.shape[-2:]) != expected_hw:
        raise JepaEvalError("the image size does not match the model's",
                            expected=f"{expected_hw[0]}x{expected_hw[1]} pixels",
                            found=f"{images.shape[-2]}x{images.shape[-1]} pixels",
                            hint="pass --image-size to match the checkpoint")
    normed = _last_blocks_normed(model, images, _BLOCKS_USED[mode])
    prefix = model.num_prefix_tokens
    if mode in ("avgpool", "avgpool4"):
        return torch.cat([tokens[:, prefix:].mean(dim=1) for tokens in normed], dim=1)
    if mode in ("cls", "cls4"):
        return torch.cat([tokens[:, 0] for tokens in normed], dim=1)
    last = normed[-1]
    return torch.cat([last[:, 0], last[:, prefix:].mean(dim=1)], dim=1)


def _last_blocks_normed(model: VisionTransformer, images: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Tokens [B, T, D] of the last ``count`` blocks, each through ``model.norm``, in block order."""
    x = model.patch_embed(images)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    x = model.norm_pre(x)
    first_kept = len(model.blocks) - count
    kept = []
    for index, block in enumerate(model.blocks):
        x = block(x)
        if index >= first_kept:
            kept.append(model.norm(x))
    return kept


@dataclass
class FeatureSet:
    """Features of a dataset, one row per sample in dataset order.

    ``features``: float32 [N, D']; ``labels``: int64 [N]; ``meta``: JSON-serialisable facts
    about how they were computed (mode, device, compute dtype, timing...).
    """

    features: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.features.ndim != 2 or self.labels.ndim != 1 or len(self.features) != len(self.labels):
            raise JepaEvalError("features and labels do not fit together",
                                expected="features [N, D] and labels [N] with the same N",
                                found=f"features {list(self.features.shape)}, "
                                      f"labels {list(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def save(self, path: str | Path) -> tuple[Path, Path, Path]:
        """Write ``FILE.npy`` (features), ``FILE.labels.npy`` and ``FILE.meta.json`` atomically."""
        feature_path, label_path, meta_path = export_paths(path)
        save_array(feature_path, self.features)
        save_array(label_path, self.labels)
        atomic_write_json(meta_path, self.meta)
        return feature_path, label_path, meta_path

    @classmethod
    def load(cls, path: str | Path) -> FeatureSet:
        """Read a feature set written by :meth:`save` (the meta file is optional)."""
        feature_path, label_path, meta_path = export_paths(path)
        for needed in (feature_path, label_path):
            if not needed.is_file():
                raise JepaEvalError(f"feature file {needed} is missing",
                                    expected=f"{feature_path.name} and {label_path.name} side by side",
                                    found=f"no file {needed}")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return cls(np.load(feature_path), np.load(label_path), meta)


def export_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """The three files of an exported feature set: ``X.npy``, ``X.labels.npy``, ``X.meta.json``."""
    path = Path(path)
    if path.suffix != ".npy" or path.name.endswith(".labels.npy"):
        raise JepaEvalError("a feature file name must end in .npy",
                            expected="a name such as feats.npy (labels go to feats.labels.npy)",
                            found=str(path))
    stem = path.with_suffix("")
    return path, stem.with_name(stem.name + ".labels.npy"), stem.with_name(stem.name + ".meta.json")


def save_array(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as a ``.npy`` file atomically (through a temporary name and a rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    return path


def compute_dtype(device: torch.device) -> str:
    """The dtype features are computed in on ``device``: bf16 autocast on CUDA, else float32."""
    return "bfloat16" if device.type == "cuda" else "float32"


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
    _check_eval(model)
    device = torch.device(device) if device is not None else _default_device()
    rank, world = _rank_and_world()
    total = len(dataset)  # type: ignore[arg-type]
    indices = np.arange(total)[rank::world]
    shard = dataset if world == 1 else Subset(dataset, indices.tolist())
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda", drop_last=False)
    model.to(device)
    start = time.perf_counter()
    features, labels = _embed_batches(model, mode, device, indices,
                                      tqdm(loader, desc=desc or f"features [{mode}]", unit="batch",
                                           file=sys.stderr, disable=not progress or rank != 0))
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


def _check_eval(model: torch.nn.Module) -> None:
    if model.training:
        raise JepaEvalError("the backbone is in training mode while computing features",
                            expected="model.eval() (dropout and drop-path off)",
                            found="model.training == True", hint="call model.eval() first")


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


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
