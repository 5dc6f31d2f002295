"""Places365-standard in torchvision's layout (list files + image folders)."""

from __future__ import annotations

from pathlib import Path

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.dataset import Samples
from jepa_eval.data.folders import describe_folder, safe_relative
from jepa_eval.data.registry import ROOT_HELP, DatasetSpec, register_dataset

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


register_dataset(DatasetSpec(
    "places365", ("train", "val"), "train", "val", "places365",
    "torchvision's Places365-standard layout: <root>/categories_places365.txt, "
    "places365_train_standard.txt and places365_val.txt ('<path> <class index>' lines), "
    "images in data_256_standard/ (or data_large_standard/) and val_256/ (or val_large/); "
    + ROOT_HELP.format(folder="places365"),
    markers=("categories_places365.txt",), read=read_places365))
