"""On-disk formats: each reader turns a dataset root and a split into :class:`Samples`.

Every reader learns labels, class names and file names from folder names, list files or
annotation files only: no image is decoded until it is accessed.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from jepa_eval.data.folders import describe_folder, is_image_name, read_image_folder, safe_relative, \
    subfolders
from jepa_eval.core.errors import JepaEvalError


@dataclass
class Samples:
    """What a reader found: one entry of ``targets``/``sample_names`` per image.

    Exactly one of ``paths`` (files decoded on access) and ``images`` (uint8 [N, H, W, 3]) is set.
    """

    classes: list[str]
    targets: list[int]
    sample_names: list[str]
    layout: str
    paths: list[Path] | None = None
    images: np.ndarray | None = None


def read_folder_split(root: Path, split: str, *, train_split: str, layout: str) -> Samples:
    """An ImageFolder split ``root/<split>/<class>/<image>``; sample names are file base names."""
    classes, paths, targets = read_image_folder(root, split, class_split=train_split, layout=layout)
    return Samples(classes, targets, [p.name for p in paths], f"ImageFolder {root}/{split}", paths=paths)


# --- CIFAR (torchvision's python pickles) -------------------------------------------------------

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


# --- iNaturalist (torchvision's INaturalist layouts) ---------------------------------------------

INAT2021_FOLDERS = {"train": "2021_train", "train_mini": "2021_train_mini", "val": "2021_valid"}


def read_inat2021(root: Path, split: str, layout: str) -> Samples:
    """``root/<2021_train|2021_train_mini|2021_valid>/<NNNNN_kingdom_..._species>/*.jpg``.

    The label is the category number NNNNN, which must equal the folder's sorted position
    (as torchvision checks), so train and val agree.
    """
    folder = root / INAT2021_FOLDERS[split]
    if not folder.is_dir():
        raise JepaEvalError(f"iNaturalist 2021 split {split!r} is missing", expected=layout,
                            found=describe_folder(root))
    classes = subfolders(folder)
    if not classes:
        raise JepaEvalError(f"{folder} holds no category folder", expected=layout, found=describe_folder(folder))
    paths: list[Path] = []
    targets: list[int] = []
    for index, name in enumerate(classes):
        pieces = name.split("_")
        if len(pieces) != 8 or pieces[0] != f"{index:05d}":
            raise JepaEvalError(f"unexpected iNaturalist 2021 category folder {name!r} in {folder}",
                                expected=f"{index:05d}_kingdom_phylum_class_order_family_genus_species "
                                         f"(8 parts, numbered in sorted order)", found=name)
        files = sorted(p for p in (folder / name).iterdir() if is_image_name(p.name))
        if not files:
            raise JepaEvalError(f"category folder {name!r} of {folder} holds no image", expected=layout,
                                found=describe_folder(folder / name))
        paths.extend(files)
        targets.extend([index] * len(files))
    return Samples(classes, targets, [p.name for p in paths], f"iNaturalist 2021 {folder}", paths=paths)


def _read_json(path: Path, layout: str) -> dict[str, Any]:
    if not path.is_file():
        raise JepaEvalError(f"annotation file {path.name} is missing", expected=layout,
                            found=describe_folder(path.parent))
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise JepaEvalError(f"cannot read {path}", expected="a JSON annotation file",
                            found=f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        found = f"keys {sorted(data)}" if isinstance(data, dict) else type(data).__name__
        raise JepaEvalError(f"{path} is not an iNaturalist annotation file",
                            expected="keys 'images', 'annotations' and 'categories'", found=found)
    return data


def read_inat2018(root: Path, split: str, layout: str) -> Samples:
    """iNaturalist 2018: images in ``root/2018/`` (torchvision) or ``root/train_val2018/`` (official
    archive), each ``<supercategory>/<category id>/<file>.jpg``; ``root/train2018.json`` and
    ``root/val2018.json`` (the competition's annotations) choose the images of each split.

    Labels are the annotations' category ids (0..8141); class names come from ``categories``.
    """
    images_dir = next((root / n for n in ("2018", "train_val2018") if (root / n).is_dir()), None)
    if images_dir is None:
        raise JepaEvalError("iNaturalist 2018 image folder is missing", expected=layout, found=describe_folder(root))
    annotation = root / f"{split}2018.json"
    data = _read_json(annotation, layout)
    try:
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]}
        label_of = {a["image_id"]: int(a["category_id"]) for a in data["annotations"]}
        files = [(img["id"], str(img["file_name"])) for img in data["images"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise JepaEvalError(f"{annotation} has malformed entries", expected="COCO-style images, annotations "
                            "and categories with ids", found=f"{type(exc).__name__}: {exc}") from exc
    if sorted(names) != list(range(len(names))):
        raise JepaEvalError(f"{annotation} has category ids that are not 0..N-1", found=f"{len(names)} categories")
    paths: list[Path] = []
    targets: list[int] = []
    for image_id, file_name in files:
        parts = PurePosixPath(file_name).parts
        relative = "/".join(parts[1:]) if parts and parts[0] == "train_val2018" else file_name
        if image_id not in label_of or label_of[image_id] not in names:
            raise JepaEvalError(f"{annotation} gives no valid category for image {file_name}",
                                found=f"category {label_of.get(image_id)}")
        paths.append(safe_relative(relative, images_dir, annotation))
        targets.append(label_of[image_id])
    classes = [names[i] for i in range(len(names))]
    return Samples(classes, targets, [p.name for p in paths], f"iNaturalist 2018 {images_dir} + {annotation.name}",
                   paths=paths)


# --- Places365 (torchvision's list files) ------------------------------------------------------

PLACES365_LISTS = {"train": "places365_train_standard.txt", "val": "places365_val.txt"}
PLACES365_IMAGES = {"train": ("data_256_standard", "data_large_standard"), "val": ("val_256", "val_large")}


def _pairs(path: Path, layout: str) -> list[tuple[str, int]]:
    """The ``name index`` lines of a Places365 text file."""
    if not path.is_file():
        raise JepaEvalError(f"Places365 file {path.name} is missing", expected=layout, found=describe_folder(path.parent))
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise JepaEvalError(f"line {number} of {path} is malformed", expected="'<path> <class index>'",
                                found=repr(line))
        pairs.append((fields[0], int(fields[1])))
    return pairs


def read_places365(root: Path, split: str, layout: str) -> Samples:
    """Places365-standard: classes from ``categories_places365.txt``, images and labels from
    ``places365_train_standard.txt`` / ``places365_val.txt``, files under ``data_256_standard/``
    (or ``data_large_standard/``) and ``val_256/`` (or ``val_large/``)."""
    categories = _pairs(root / "categories_places365.txt", layout)
    if sorted(i for _, i in categories) != list(range(len(categories))):
        raise JepaEvalError("categories_places365.txt does not number its classes 0..N-1",
                            found=f"{len(categories)} lines")
    classes = [name for name, _ in sorted(categories, key=lambda pair: pair[1])]
    images_dir = next((root / n for n in PLACES365_IMAGES[split] if (root / n).is_dir()), None)
    if images_dir is None:
        raise JepaEvalError(f"Places365 image folder for split {split!r} is missing", expected=layout,
                            found=describe_folder(root))
    listing = root / PLACES365_LISTS[split]
    entries = _pairs(listing, layout)
    bad = [index for _, index in entries if index >= len(classes)]
    if bad:
        raise JepaEvalError(f"{listing} has class indices beyond the {len(classes)} categories",
                            found=f"index {bad[0]}")
    paths = [safe_relative(entry, images_dir, listing) for entry, _ in entries]
    return Samples(classes, [i for _, i in entries], [p.name for p in paths], f"Places365 {images_dir}",
                   paths=paths)


# --- scikit-learn digits (embedded, offline) ---------------------------------------------------

DIGITS_TEST_SIZE = 360


def read_digits(split: str) -> Samples:
    """scikit-learn's 1,797 8x8 digits as uint8 RGB [N, 8, 8, 3] (0..16 scaled to 0..255).

    A stratified split with seed 0: train 1,437, test 360. Sample names are the indices in
    scikit-learn's order.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    order = np.arange(len(digits.target))
    train, test = train_test_split(order, test_size=DIGITS_TEST_SIZE, stratify=digits.target, random_state=0)
    chosen = np.sort(train if split == "train" else test)
    grey = np.rint(digits.images[chosen] * (255.0 / 16.0)).astype(np.uint8)
    images = np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1))
    return Samples([str(d) for d in range(10)], digits.target[chosen].tolist(), [str(i) for i in chosen],
                   "scikit-learn load_digits (bundled)", images=images)
