"""Oxford-IIIT Pet in torchvision's layout: ``oxford-iiit-pet/images/`` and ``annotations/{trainval,test}.txt``."""

from __future__ import annotations

from pathlib import Path

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.dataset import Samples
from jepa_eval.data.registry import register_dataset
from jepa_eval.data.releases import (check_every_class, dataset_folder, malformed, release_spec, require,
                                     samples_under, text_lines)

FOLDER = "oxford-iiit-pet"


def _entries(path: Path, layout: str) -> list[tuple[str, int]]:
    """(image id, class id - 1) of each ``<image id> <class id> <species> <breed id>`` line."""
    entries = []
    for number, line in text_lines(path, "Oxford-IIIT Pet split file", layout):
        fields = line.split()
        if len(fields) != 4 or not all(f.isdigit() for f in fields[1:]) or int(fields[1]) < 1:
            raise malformed(path, number, line, "<image id> <class id 1..37> <species> <breed id>", layout)
        entries.append((fields[0], int(fields[1]) - 1))
    return entries


def _breed(image_id: str) -> str:
    """'american_pit_bull_terrier' of 'american_pit_bull_terrier_3'."""
    return image_id.rsplit("_", 1)[0]


def read_pets(root: Path, split: str, layout: str) -> Samples:
    """``oxford-iiit-pet/images/<image id>.jpg`` and ``annotations/{trainval,test}.txt``.

    Label = class id - 1. Class names are torchvision's: the breed part of the image ids
    (``american_pit_bull_terrier``) title-cased word by word ("American Pit Bull Terrier"), ordered
    by label; they are learnt from trainval.txt, whose labels must run 0..K-1.
    """
    folder = dataset_folder(root, FOLDER, layout)
    images = require(folder / "images", "Oxford-IIIT Pet image folder", layout, folder=True)
    annotations = require(folder / "annotations", "Oxford-IIIT Pet annotation folder", layout, folder=True)
    reference = _entries(annotations / "trainval.txt", layout)
    breeds = {label: _breed(image_id) for image_id, label in reference}
    entries = reference if split == "trainval" else _entries(annotations / f"{split}.txt", layout)
    if sorted(breeds) != list(range(len(breeds))):
        raise JepaEvalError(f"{annotations / 'trainval.txt'} does not number its breeds 1..K",
                            expected=f"class ids 1..K, each with images ({layout})",
                            found=f"class ids {sorted(label + 1 for label in breeds)[:8]}")
    clash = next(((i, label) for i, label in reference + entries if breeds.get(label) != _breed(i)), None)
    if clash is not None:
        raise JepaEvalError(f"Oxford-IIIT Pet image {clash[0]} has class id {clash[1] + 1}, which trainval.txt "
                            f"gives to {breeds.get(clash[1])!r}", expected=f"one breed per class id ({layout})",
                            found=f"{_breed(clash[0])!r} with class id {clash[1] + 1}")
    classes = [" ".join(word.title() for word in breeds[label].split("_")) for label in range(len(breeds))]
    targets = [label for _, label in entries]
    check_every_class(targets, classes, f"Oxford-IIIT Pet split {split!r}", layout)
    paths = [images / f"{image_id}.jpg" for image_id, _ in entries]
    return samples_under(classes, targets, paths, images, "torchvision OxfordIIITPet")


register_dataset(release_spec(
    "pets", FOLDER, ("trainval", "test"), "trainval", "test",
    "torchvision's OxfordIIITPet layout: <root>/oxford-iiit-pet/images/<image id>.jpg and "
    "annotations/{trainval,test}.txt ('<image id> <class id> <species> <breed id>' lines; 37 breeds, "
    "label = class id - 1); --download uses torchvision", read_pets, "OxfordIIITPet"))
