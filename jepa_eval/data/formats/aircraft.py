"""FGVC-Aircraft at variant level (100 classes) in torchvision's layout ``fgvc-aircraft-2013b/data/``."""

from __future__ import annotations

from pathlib import Path

from jepa_eval.data.dataset import Samples
from jepa_eval.data.registry import register_dataset
from jepa_eval.data.releases import (check_every_class, dataset_folder, malformed, release_spec, require,
                                     samples_under, text_lines)

FOLDER = "fgvc-aircraft-2013b"


def read_aircraft(root: Path, split: str, layout: str) -> Samples:
    """``fgvc-aircraft-2013b/data/``: ``variants.txt`` (the variants, in label order),
    ``images_variant_<split>.txt`` (``<image id> <variant>`` lines; variants may hold spaces) and
    ``images/<image id>.jpg``. Label = the variant's line in variants.txt, as torchvision's.
    """
    data = dataset_folder(root, FOLDER, layout) / "data"
    images = require(data / "images", "FGVC-Aircraft image folder", layout, folder=True)
    classes = [line for _, line in text_lines(data / "variants.txt", "FGVC-Aircraft class file", layout)]
    index = {name: i for i, name in enumerate(classes)}
    listing = data / f"images_variant_{split}.txt"
    paths, targets = [], []
    for number, line in text_lines(listing, "FGVC-Aircraft split file", layout):
        image_id, _, variant = line.partition(" ")
        if variant not in index:
            raise malformed(listing, number, line, "<image id> <variant listed in variants.txt>", layout)
        paths.append(images / f"{image_id}.jpg")
        targets.append(index[variant])
    check_every_class(targets, classes, f"FGVC-Aircraft split {split!r}", layout)
    return samples_under(classes, targets, paths, images, "torchvision FGVCAircraft")


register_dataset(release_spec(
    "aircraft", FOLDER, ("train", "val", "trainval", "test"), "trainval", "test",
    "torchvision's FGVCAircraft layout at variant level: <root>/fgvc-aircraft-2013b/data/variants.txt (label "
    "order), images_variant_{train,val,trainval,test}.txt ('<image id> <variant>' lines) and "
    "images/<image id>.jpg (the 20-pixel copyright banner is not cropped); --download uses torchvision",
    read_aircraft, "FGVCAircraft"))
