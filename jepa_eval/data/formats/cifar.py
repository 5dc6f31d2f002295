"""CIFAR-10 and CIFAR-100 in torchvision's python-pickle release (or an ImageFolder copy)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.dataset import Samples
from jepa_eval.data.folders import describe_folder
from jepa_eval.data.formats.imagefolder import read_folder_split
from jepa_eval.data.registry import ROOT_HELP, DatasetSpec, register_dataset

@dataclass(frozen=True)
class CifarFiles:
    """File names and keys of one CIFAR variant's python-pickle release."""

    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    names_key: str
    labels_key: str


CIFAR10_FILES = CifarFiles("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                           ("test_batch",), "batches.meta", "label_names", "labels")


CIFAR100_FILES = CifarFiles("cifar-100-python", ("train",), ("test",), "meta", "fine_label_names", "fine_labels")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays only: a CIFAR file cannot run code."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR file")
        return super().find_class(module, name)


def _read_pickle(path: Path, layout: str) -> dict[str, Any]:
    if not path.is_file():
        raise JepaEvalError(f"CIFAR file {path.name} is missing", expected=layout, found=describe_folder(path.parent))
    try:
        with open(path, "rb") as handle:
            entry = _ArrayUnpickler(handle, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError) as exc:
        raise JepaEvalError(f"cannot read CIFAR file {path}", expected="a python pickle of the CIFAR release",
                            found=f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(entry, dict):
        raise JepaEvalError(f"CIFAR file {path} is not a dict", expected=layout, found=type(entry).__name__)
    return entry


def _cifar_batch(path: Path, files: CifarFiles, num_classes: int, layout: str) -> tuple[np.ndarray, list[int]]:
    """Images [N, 32, 32, 3] uint8 (from channel-planar rows of 3,072 bytes) and labels of one file."""
    entry = _read_pickle(path, layout)
    data, labels = entry.get("data"), entry.get(files.labels_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or labels is None or len(labels) != len(data):
        shape = getattr(data, "shape", None)
        raise JepaEvalError(f"CIFAR file {path} has an unexpected content",
                            expected=f"'data' uint8 N x 3072 and '{files.labels_key}' with N labels",
                            found=f"keys {sorted(entry)}, data shape {shape}")
    labels = [int(v) for v in labels]
    if labels and not 0 <= min(labels) <= max(labels) < num_classes:
        raise JepaEvalError(f"CIFAR file {path} has labels outside 0..{num_classes - 1}",
                            found=f"labels from {min(labels)} to {max(labels)}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar(files: CifarFiles, root: Path, split: str, layout: str) -> Samples:
    """A CIFAR split from ``root/<folder>/`` pickles, or from an ImageFolder ``root/<split>/`` copy."""
    folder = root / files.folder
    if not folder.is_dir():
        return read_folder_split(root, split, train_split="train", layout=layout)
    meta = _read_pickle(folder / files.meta, layout)
    classes = [str(c) for c in meta.get(files.names_key, [])]
    if not classes:
        raise JepaEvalError(f"{folder / files.meta} has no class names", expected=f"a '{files.names_key}' list",
                            found=f"keys {sorted(meta)}")
    parts = [_cifar_batch(folder / name, files, len(classes), layout)
             for name in (files.train if split == "train" else files.test)]
    images = np.concatenate([p[0] for p in parts])
    targets = [label for p in parts for label in p[1]]
    return Samples(classes, targets, [str(i) for i in range(len(targets))], f"CIFAR pickles {folder}",
                   images=np.ascontiguousarray(images))


def _download_cifar(files: CifarFiles, root: Path) -> None:
    """Fetch the CIFAR pickles with torchvision (md5-checked) into ``root/<folder>/``."""
    from torchvision import datasets

    if (root / files.folder).is_dir():
        return
    kind = datasets.CIFAR10 if files is CIFAR10_FILES else datasets.CIFAR100
    try:
        kind(str(root), train=True, download=True)
    except (OSError, RuntimeError) as exc:
        raise JepaEvalError(f"downloading {files.folder} into {root} failed", expected="internet access",
                            found=f"{type(exc).__name__}: {exc}",
                            hint="download it elsewhere and pass its folder as data_root") from exc


def _cifar_spec(name: str, files: CifarFiles) -> DatasetSpec:
    layout = (f"torchvision's release <root>/{files.folder}/{{{', '.join(files.train + files.test)}, "
              f"{files.meta}}} (python pickles), or an ImageFolder copy <root>/{{train,test}}/<class>/<image>; "
              + ROOT_HELP.format(folder=name))
    return DatasetSpec(name, ("train", "test"), "train", "test", name, layout,
                       markers=(files.folder, "train", "test"), straight_resize=True,
                       read=partial(read_cifar, files), download=partial(_download_cifar, files))


register_dataset(_cifar_spec("cifar10", CIFAR10_FILES))
register_dataset(_cifar_spec("cifar100", CIFAR100_FILES))
