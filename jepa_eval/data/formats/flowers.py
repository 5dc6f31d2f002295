"""Oxford Flowers-102 in torchvision's layout: ``flowers-102/jpg/``, ``imagelabels.mat``, ``setid.mat``."""

from __future__ import annotations

from pathlib import Path

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.dataset import Samples
from jepa_eval.data.registry import register_dataset
from jepa_eval.data.releases import (SPLIT_PARTS, check_every_class, dataset_folder, integers, load_mat, release_spec,
                                     require, samples_under)

FOLDER = "flowers-102"
SET_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}


def read_flowers102(root: Path, split: str, layout: str) -> Samples:
    """``flowers-102/jpg/image_NNNNN.jpg``, ``imagelabels.mat`` (1-based label of image N at position
    N-1) and ``setid.mat`` (image numbers of trnid/valid/tstid); trainval = train then val.

    Label = imagelabels - 1. Class names are torchvision's 102 (``Flowers102.classes``), the first
    K of them where K is the largest label.
    """
    from torchvision.datasets import Flowers102

    folder = dataset_folder(root, FOLDER, layout)
    images = require(folder / "jpg", "Flowers102 image folder", layout, folder=True)
    labels = integers(load_mat(folder / "imagelabels.mat", ("labels",), layout)["labels"],
                      f"{folder / 'imagelabels.mat'} 'labels'", layout)
    if not labels.size or labels.min() < 1 or labels.max() > len(Flowers102.classes):
        raise JepaEvalError(f"{folder / 'imagelabels.mat'} has labels outside 1..{len(Flowers102.classes)}",
                            expected=layout, found=f"labels {labels.min(initial=0)}..{labels.max(initial=0)}")
    classes = list(Flowers102.classes[:labels.max()])
    sets = load_mat(folder / "setid.mat", tuple(SET_KEYS.values()), layout)
    numbers = [n for part in SPLIT_PARTS[split]
               for n in integers(sets[SET_KEYS[part]], f"setid.mat '{SET_KEYS[part]}'", layout)]
    beyond = [n for n in numbers if not 1 <= n <= labels.size]
    if beyond:
        raise JepaEvalError(f"{folder / 'setid.mat'} names images that imagelabels.mat has no label for",
                            expected=f"image numbers 1..{labels.size} ({layout})", found=f"image {beyond[0]}")
    targets = [int(labels[n - 1]) - 1 for n in numbers]
    check_every_class(targets, classes, f"Flowers102 split {split!r}", layout)
    return samples_under(classes, targets, [images / f"image_{n:05d}.jpg" for n in numbers], images,
                         "torchvision Flowers102")


register_dataset(release_spec(
    "flowers102", FOLDER, ("train", "val", "trainval", "test"), "trainval", "test",
    "torchvision's Flowers102 layout: <root>/flowers-102/jpg/image_NNNNN.jpg, imagelabels.mat (1-based labels; "
    "label = value - 1) and setid.mat (trnid, valid, tstid; trainval = train + val); class names are "
    "torchvision's; --download uses torchvision", read_flowers102, "Flowers102"))
