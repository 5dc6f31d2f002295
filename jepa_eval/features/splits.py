"""The features of a dataset split for a backbone, from the cache when it holds them.

Also the seeded subsets a protocol may ask for (rows of a split, LiDAR's augmented views, a
published subset file). The pipeline calls these; protocols never see files or loaders.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepa_eval.backbones.backbone import Backbone
from jepa_eval.backbones.baselines import PixelBackbone
from jepa_eval.core.devices import compute_dtype, init_distributed, resolve_device
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data import build_dataset, eval_transform, get_spec
from jepa_eval.data.transforms import normalize
from jepa_eval.features.cache import FeatureCache, cached_extract, default_cache_root
from jepa_eval.features.extract import extract_features
from jepa_eval.features.featureset import FeatureSet
from jepa_eval.features.modes import FEATURE_MODES


@dataclass
class ExtractOptions:
    """How to run extraction: where the data is, batch size, device, cache."""

    data_root: str | None = None
    download: bool = False
    batch_size: int = 64
    num_workers: int | None = None  # None: the available cores, 0 for in-memory or tiny datasets
    device: str | None = None
    cache_dir: str | None = None
    use_cache: bool = True
    progress: bool = True

    def cache(self) -> FeatureCache | None:
        if not self.use_cache:
            return None
        return FeatureCache(Path(self.cache_dir) if self.cache_dir else default_cache_root())


@dataclass
class SplitFeatures:
    """Features of one dataset split plus what is needed to describe them in a result."""

    features: FeatureSet
    dataset: str
    split: str
    num_classes: int
    cache_hit: bool
    root: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.features.labels.shape[0])


def resolve_mode(backbone: Backbone, mode: str | None) -> str:
    """The feature mode to use: the family default when ``mode`` is None, validated."""
    chosen = mode or backbone.default_mode
    if chosen not in FEATURE_MODES:
        raise JepaEvalError(f"unknown feature mode {chosen!r}", expected=f"one of {', '.join(FEATURE_MODES)}")
    if isinstance(backbone, PixelBackbone) and chosen in ("avgpool", "avgpool4"):
        return "pixels"  # suites ask for pooled features; pixels are the baseline's only kind
    if "cls" in chosen and not backbone.has_cls:
        raise JepaEvalError(f"feature mode {chosen!r} needs a CLS token",
                            expected="a backbone with a CLS token (MAE, DINO, DINOv2, most timm ViTs)",
                            found=f"a {backbone.family} backbone without one",
                            hint="use avgpool or avgpool4")
    return chosen


def split_features(backbone: Backbone, dataset: str, split: str, mode: str,
                   options: ExtractOptions, *, transform: Any = None,
                   subset: np.ndarray | None = None) -> SplitFeatures:
    """Features of ``dataset``/``split`` in ``mode``, from the cache when it holds them.

    ``subset`` (sorted row indices) extracts only those images, in that order.
    """
    spec = get_spec(dataset)
    if split not in spec.splits:
        raise JepaEvalError(f"dataset {dataset!r} has no split {split!r}",
                            expected=f"one of {', '.join(spec.splits)}")
    transform = transform or eval_transform(backbone.image_size, dataset)
    data = build_dataset(dataset, split, data_root=options.data_root, image_size=backbone.image_size,
                         transform=transform, download=options.download)
    num_classes, root = len(data.classes), str(data.root)
    subset_digest = None
    if subset is not None:
        subset_digest = hashlib.sha256(np.asarray(subset, dtype=np.int64).tobytes()).hexdigest()
        data = torch.utils.data.Subset(data, [int(i) for i in subset])
    parts = split_key_parts(backbone, dataset, split, root, len(data), transform, mode, subset_sha256=subset_digest)
    features, hit = _cached_features(backbone, data, mode, parts, options, desc=f"{dataset}/{split}")
    return SplitFeatures(features=features, dataset=dataset, split=split,
                         num_classes=num_classes, cache_hit=hit, root=root)


def split_key_parts(backbone: Backbone, dataset: str, split: str, root: str | Path, num_samples: int,
                    transform: Any, mode: str, **extra: Any) -> dict[str, Any]:
    """The cache-key parts of a split's features (the compute dtype is added at extraction)."""
    return {"checkpoint_sha256": backbone.sha256, "ckpt_key": backbone.ckpt_key, "arch": backbone.arch,
            "dataset": dataset, "root": str(Path(root).resolve()), "split": split, "num_samples": num_samples,
            "transform": repr(transform), "image_size": backbone.image_size, "mode": mode, **extra}


def _cached_features(backbone: Backbone, data: Any, mode: str, parts: dict[str, Any],
                     options: ExtractOptions, desc: str) -> tuple[FeatureSet, bool]:
    """Features of ``data`` from the cache under ``parts`` (+ the compute dtype), else extracted.

    Under ``torchrun`` every rank extracts a shard and rank 0 holds the gathered features.
    """
    device = resolve_device(options.device)
    init_distributed(device)

    def compute() -> FeatureSet:
        backbone.model.to(device)
        return extract_features(backbone.model, data, mode, batch_size=options.batch_size,
                                num_workers=options.num_workers, device=device,
                                progress=options.progress, desc=desc)

    return cached_extract(options.cache(), {**parts, "dtype": compute_dtype(device)}, compute)


def decoded(image: Any) -> Any:
    """The transform that keeps the decoded PIL image (a function, so worker processes can pickle it)."""
    return image


class _SeededViews(torch.utils.data.Dataset):
    """``views`` random-resized crops of each picked image; crop ``j`` of item ``i`` is fixed by the seed."""

    def __init__(self, base: Any, picked: list[int], views: int, seed: int, transform: Any) -> None:
        self.base, self.picked, self.views, self.seed, self.transform = base, picked, views, seed, transform

    def __len__(self) -> int:
        return len(self.picked) * self.views

    @property
    def in_memory(self) -> bool:
        return bool(getattr(self.base, "in_memory", False))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image_index = self.picked[index // self.views]
        image, _ = self.base[image_index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + index)
            return self.transform(image), image_index


def augmented_views(backbone: Backbone, dataset: str, split: str, mode: str, options: ExtractOptions, *,
                    images: int, views: int, seed: int, crop_scale: tuple[float, float] = (0.3, 1.0)) -> np.ndarray:
    """Features of ``views`` random-resized crops of ``images`` seeded images: [images, views, D].

    The surrogate classes of LiDAR. Crops use the I-JEPA pretraining augmentation
    (RandomResizedCrop, scale 0.3-1.0, bicubic) then ImageNet normalisation; cached like any split.
    """
    from torchvision import transforms as T

    raw = build_dataset(dataset, split, data_root=options.data_root, image_size=backbone.image_size,
                        transform=decoded, download=options.download)
    rng = np.random.default_rng(seed)
    count = min(images, len(raw))
    picked = sorted(rng.choice(len(raw), size=count, replace=False).tolist())
    crop = T.Compose([T.RandomResizedCrop(backbone.image_size, scale=crop_scale,
                                          interpolation=T.InterpolationMode.BICUBIC),
                      T.ToTensor(), normalize()])
    data = _SeededViews(raw, picked, views, seed, crop)
    parts = {
        "checkpoint_sha256": backbone.sha256, "ckpt_key": backbone.ckpt_key, "arch": backbone.arch,
        "dataset": dataset, "root": str(Path(raw.root).resolve()), "split": split,
        "views": {"images": count, "views": views, "seed": seed, "crop_scale": list(crop_scale)},
        "transform": repr(crop), "image_size": backbone.image_size, "mode": mode,
    }
    features, _ = _cached_features(backbone, data, mode, parts, options, desc=f"{dataset}/{split} views")
    return features.features.reshape(count, views, -1)


def seeded_subset(total: int, wanted: int, seed: int) -> np.ndarray:
    """``min(total, wanted)`` distinct sorted row indices, the same for the same seed."""
    if wanted >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=wanted, replace=False))


def split_labels(dataset: str, split: str, options: ExtractOptions) -> np.ndarray:
    """The labels int64 [N] of a split, read from its files without decoding an image."""
    data = build_dataset(dataset, split, data_root=options.data_root, transform=decoded, download=options.download)
    return np.asarray(data.targets, dtype=np.int64)


def seeded_split_features(backbone: Backbone, dataset: str, split: str, mode: str, options: ExtractOptions,
                          count: int, seed: int) -> tuple[SplitFeatures, int]:
    """Features of ``count`` seeded rows of a split (all rows when it is smaller), and the split's size."""
    total = len(split_labels(dataset, split, options))
    picked = seeded_subset(total, count, seed)
    return split_features(backbone, dataset, split, mode, options, subset=picked), total


def subset_from_file(dataset: str, subset_file: str, options: ExtractOptions) -> np.ndarray:
    """Training-split row indices named by a published subset file (e.g. ImageNet 1percent.txt)."""
    from jepa_eval.data.subsets import read_subset_file

    names = build_dataset(dataset, get_spec(dataset).train_split, data_root=options.data_root,
                          transform=decoded, download=options.download).sample_names
    return read_subset_file(subset_file, names)
