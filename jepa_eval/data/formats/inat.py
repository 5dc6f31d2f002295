"""iNaturalist 2018 (images + the competition's JSON annotations) and 2021 (torchvision's folders)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.dataset import Samples
from jepa_eval.data.folders import describe_folder, is_image_name, safe_relative, subfolders
from jepa_eval.data.registry import ROOT_HELP, DatasetSpec, register_dataset

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


register_dataset(DatasetSpec(
    "inat2018", ("train", "val"), "train", "val", "inat2018",
    "iNaturalist 2018: images <root>/2018/<supercategory>/<category id>/<image> (torchvision's "
    "folder name; the official archive's train_val2018/ also works) and the competition "
    "annotations <root>/train2018.json and <root>/val2018.json, which choose each split; "
    + ROOT_HELP.format(folder="inat2018"),
    markers=("2018", "train_val2018", "train2018.json", "val2018.json"), read=read_inat2018))
register_dataset(DatasetSpec(
    "inat2021", ("train", "train_mini", "val"), "train", "val", "inat2021",
    "torchvision's iNaturalist 2021 layout <root>/{2021_train,2021_train_mini,2021_valid}/"
    "<NNNNN_kingdom_phylum_class_order_family_genus_species>/<image> (train, train_mini, val); "
    + ROOT_HELP.format(folder="inat2021"),
    markers=("2021_train", "2021_valid", "2021_train_mini"), read=read_inat2021))
