"""Food-101 in torchvision's layout: ``food-101/meta/{train,test}.json`` and ``food-101/images/``."""

from __future__ import annotations

import json
from pathlib import Path

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.dataset import Samples
from jepa_eval.data.folders import safe_relative
from jepa_eval.data.registry import register_dataset
from jepa_eval.data.releases import check_every_class, dataset_folder, release_spec, require, samples_under

FOLDER = "food-101"


def _listing(path: Path, layout: str) -> dict[str, list[str]]:
    """The ``{class: ['<class>/<image id>', ...]}`` object of a split file."""
    require(path, "Food-101 split file", layout)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise JepaEvalError(f"cannot read {path}", expected=f"a JSON split file ({layout})",
                            found=f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(e, str) for e in v)
                                             for v in data.values()):
        raise JepaEvalError(f"{path} is not a Food-101 split file",
                            expected=f"an object {{class: ['<class>/<image id>', ...]}} ({layout})",
                            found=type(data).__name__ if not isinstance(data, dict) else "non-string entries")
    return data


def read_food101(root: Path, split: str, layout: str) -> Samples:
    """``food-101/meta/{train,test}.json`` and ``food-101/images/<class>/<image id>.jpg``. Labels
    index the sorted class names (the keys of train.json, which every split must share), images
    in the JSON's order, as torchvision's.
    """
    folder = dataset_folder(root, FOLDER, layout)
    images = require(folder / "images", "Food-101 image folder", layout, folder=True)
    meta = folder / "meta"
    listing = _listing(meta / f"{split}.json", layout)
    classes = sorted(listing if split == "train" else _listing(meta / "train.json", layout))
    if sorted(listing) != classes:
        raise JepaEvalError(f"{meta / f'{split}.json'} and train.json list different classes",
                            expected=layout, found=f"{len(listing)} and {len(classes)} classes")
    index = {name: i for i, name in enumerate(classes)}
    entries = [(name, entry) for name, values in listing.items() for entry in values]
    paths = [safe_relative(f"{entry}.jpg", images, meta / f"{split}.json") for _, entry in entries]
    targets = [index[name] for name, _ in entries]
    check_every_class(targets, classes, f"Food-101 split {split!r}", layout)
    return samples_under(classes, targets, paths, images, "torchvision Food101")


register_dataset(release_spec(
    "food101", FOLDER, ("train", "test"), "train", "test",
    "torchvision's Food101 layout: <root>/food-101/meta/{train,test}.json ({class: ['<class>/<id>', ...]}; "
    "labels index the sorted classes) and food-101/images/<class>/<id>.jpg; --download uses torchvision",
    read_food101, "Food101"))
