"""Tiny datasets written in each exact on-disk format, for tests (reused by other test files).

Every writer returns the dataset root to pass as ``data_root``. Pixel content is chosen so
that a test can check the decoding: CIFAR images carry their row, column and label in their
three channels; folder images are filled with :func:`class_color` of their class.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
INAT2021_CATEGORIES = [
    "00000_Animalia_Chordata_Aves_Passeriformes_Corvidae_Corvus_corax",
    "00001_Animalia_Arthropoda_Insecta_Lepidoptera_Nymphalidae_Danaus_plexippus",
    "00002_Plantae_Tracheophyta_Magnoliopsida_Rosales_Rosaceae_Rosa_canina",
]
# category id -> (supercategory, name) of the fake iNaturalist 2018 set
INAT2018_CATEGORIES = [("Aves", "Corvus corax"), ("Insecta", "Danaus plexippus"), ("Aves", "Pica pica")]
PLACES365_CATEGORIES = ["/a/airfield", "/b/bakery/shop", "/c/coast"]


def class_color(label: int) -> tuple[int, int, int]:
    """A distinct solid colour for class ``label`` (channels differ by at least 40 between classes)."""
    return (40 * label % 256, 255 - 40 * label % 256, 60 + 50 * (label % 4))


def write_image(path: Path, color: Sequence[int], size: int = 16, mode: str = "RGB") -> Path:
    """A solid ``size`` x ``size`` image at ``path`` (format from the suffix); ``mode`` 'L' is greyscale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fill = int(color[0]) if mode == "L" else tuple(int(c) for c in color)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None
    Image.new(mode, (size, size), fill).save(path, format=fmt, quality=95)
    return path


def cifar_pixels(label: int, index: int) -> np.ndarray:
    """uint8 [32, 32, 3]: channel 0 = 8 x row, channel 1 = 8 x column, channel 2 = 7 x label + index."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    third = np.full((32, 32), (7 * label + index) % 256)
    return np.stack([8 * rows, 8 * cols, third], axis=-1).astype(np.uint8)


def _cifar_rows(labels: list[int]) -> np.ndarray:
    """uint8 [N, 3072], channel-planar (all red, then green, then blue), as in the release."""
    images = [cifar_pixels(label, i) for i, label in enumerate(labels)]
    return np.stack([im.transpose(2, 0, 1).reshape(-1) for im in images]).astype(np.uint8)


def _dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)


def make_cifar10(root: Path, n_per_class: int = 2, n_test_per_class: int = 1) -> Path:
    """``root/cifar-10-batches-py/``: train labels 0,1,..,9,0,1,.. spread over data_batch_1..5."""
    folder = Path(root) / "cifar-10-batches-py"
    train = [i % 10 for i in range(10 * n_per_class)]
    for number, labels in enumerate(np.array_split(np.array(train), 5), start=1):
        labels = labels.tolist()
        _dump(folder / f"data_batch_{number}", {"batch_label": f"training batch {number} of 5",
                                                 "labels": labels, "data": _cifar_rows(labels),
                                                 "filenames": [f"img_{number}_{i}.png" for i in range(len(labels))]})
    test = [i % 10 for i in range(10 * n_test_per_class)]
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test, "data": _cifar_rows(test),
                                  "filenames": [f"test_{i}.png" for i in range(len(test))]})
    _dump(folder / "batches.meta", {"num_cases_per_batch": 10000, "label_names": CIFAR10_CLASSES, "num_vis": 3072})
    return Path(root)


def make_cifar100(root: Path, n_per_class: int = 1, n_test_per_class: int = 1) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` with 100 fine classes ``fine00``..``fine99``."""
    folder = Path(root) / "cifar-100-python"
    for name, count in (("train", n_per_class), ("test", n_test_per_class)):
        labels = [i % 100 for i in range(100 * count)]
        _dump(folder / name, {"batch_label": name, "fine_labels": labels, "coarse_labels": [l // 5 for l in labels],
                              "data": _cifar_rows(labels), "filenames": [f"{name}_{i}.png" for i in range(len(labels))]})
    _dump(folder / "meta", {"fine_label_names": [f"fine{i:02d}" for i in range(100)],
                            "coarse_label_names": [f"coarse{i:02d}" for i in range(20)]})
    return Path(root)


def make_imagefolder(root: Path, classes: Sequence[str], n_per_class: int = 2,
                     splits: Sequence[str] = ("train", "val"), size: int = 16) -> Path:
    """``root/<split>/<class>/<class>_<i>.JPEG``, each image filled with ``class_color(class index)``."""
    for split in splits:
        for label, name in enumerate(classes):
            for i in range(n_per_class):
                write_image(Path(root) / split / name / f"{name}_{i}.JPEG", class_color(label), size)
    return Path(root)


def make_inat(root: Path, version: str, n_per_class: int = 2) -> Path:
    """A 3-category iNaturalist copy in torchvision's layout for ``version`` '2021' or '2018'.

    2021: ``2021_train`` (``n_per_class`` a category), ``2021_train_mini`` and ``2021_valid`` (1 each).
    2018: ``2018/<super>/<id>/*.jpg`` with ``train2018.json`` (``n_per_class`` a category) and
    ``val2018.json`` (1 each), whose file names start with ``train_val2018/`` as in the release.
    """
    root = Path(root)
    if version == "2021":
        for folder, count in (("2021_train", n_per_class), ("2021_train_mini", 1), ("2021_valid", 1)):
            for label, name in enumerate(INAT2021_CATEGORIES):
                for i in range(count):
                    write_image(root / folder / name / f"{label:02d}{i:02d}a1b2c3.jpg", class_color(label))
        return root
    if version != "2018":
        raise ValueError(f"version must be '2021' or '2018', not {version!r}")
    categories = [{"id": i, "name": name, "supercategory": sup} for i, (sup, name) in enumerate(INAT2018_CATEGORIES)]
    image_id = 0
    for split, count in (("train", n_per_class), ("val", 1)):
        images, annotations = [], []
        for label, (sup, _) in enumerate(INAT2018_CATEGORIES):
            for i in range(count):
                relative = f"{sup}/{label}/{split}{label}{i}f00d.jpg"
                write_image(root / "2018" / relative, class_color(label))
                images.append({"id": image_id, "file_name": f"train_val2018/{relative}", "width": 16, "height": 16})
                annotations.append({"id": image_id, "image_id": image_id, "category_id": label})
                image_id += 1
        (root / f"{split}2018.json").write_text(json.dumps(
            {"info": {}, "images": images, "annotations": annotations, "categories": categories, "licenses": []}))
    return root


def make_places365(root: Path, n_per_class: int = 2) -> Path:
    """Places365-standard lists and 256-px image folders for the 3 classes of ``PLACES365_CATEGORIES``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "categories_places365.txt").write_text(
        "".join(f"{name} {i}\n" for i, name in enumerate(PLACES365_CATEGORIES)))
    train_lines, val_lines = [], []
    for label, name in enumerate(PLACES365_CATEGORIES):
        for i in range(n_per_class):
            entry = f"{name}/{i + 1:08d}.jpg"
            write_image(root / "data_256_standard" / entry.lstrip("/"), class_color(label))
            train_lines.append(f"{entry} {label}\n")
        val_name = f"Places365_val_{label + 1:08d}.jpg"
        write_image(root / "val_256" / val_name, class_color(label))
        val_lines.append(f"{val_name} {label}\n")
    (root / "places365_train_standard.txt").write_text("".join(train_lines))
    (root / "places365_val.txt").write_text("".join(val_lines))
    return root
