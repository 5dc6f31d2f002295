"""Feature sets in memory and on disk: features [N, D'] and labels [N] of one split, in dataset order."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jepa_eval.core.atomic import atomic_path, atomic_write_json
from jepa_eval.core.errors import JepaEvalError

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
