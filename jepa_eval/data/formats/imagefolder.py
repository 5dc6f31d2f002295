"""ImageFolder trees ``<root>/<split>/<class>/<image>``: ImageNet, Places205 and any ``imagefolder:PATH``."""

from __future__ import annotations

from pathlib import Path

from jepa_eval.data.dataset import Samples
from jepa_eval.data.folders import read_image_folder
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.registry import ROOT_HELP, DatasetSpec, register_dataset, register_prefix

def read_folder_split(root: Path, split: str, *, train_split: str, layout: str) -> Samples:
    """An ImageFolder split ``root/<split>/<class>/<image>``; sample names are file base names."""
    classes, paths, targets = read_image_folder(root, split, class_split=train_split, layout=layout)
    return Samples(classes, targets, [p.name for p in paths], f"ImageFolder {root}/{split}", paths=paths)


def _read_folder(root: Path, split: str, layout: str) -> Samples:
    """An ImageFolder split whose class numbering follows ``root/train``."""
    return read_folder_split(root, split, train_split="train", layout=layout)


def _folder_spec(name: str, note: str) -> DatasetSpec:
    layout = (f"an ImageFolder tree <root>/{{train,val}}/<class>/<image> ({note}); "
              + ROOT_HELP.format(folder=name))
    return DatasetSpec(name, ("train", "val"), "train", "val", name, layout, markers=("train", "val"),
                       read=_read_folder)


IMAGEFOLDER_PREFIX = "imagefolder:"


def _imagefolder_spec(name: str) -> DatasetSpec:
    raw = name[len(IMAGEFOLDER_PREFIX):]
    if not raw.strip():
        raise JepaEvalError("imagefolder: needs a path", expected="imagefolder:PATH, e.g. imagefolder:~/data/pets",
                            found=repr(name))
    path = Path(raw).expanduser()
    eval_split = "test" if (path / "test").is_dir() and not (path / "val").is_dir() else "val"
    layout = (f"an ImageFolder tree {path}/{{train,val or test}}/<class>/<image>; the evaluation split "
              "is val/ when present, else test/")
    return DatasetSpec(name, ("train", "val", "test"), "train", eval_split, str(path), layout,
                       markers=("train", "val", "test"), read=_read_folder, embedded_root=lambda: path)


register_dataset(_folder_spec("imagenet", "val/ sorted into the 1,000 wnid folders, as for torchvision's ImageFolder"))
register_dataset(_folder_spec("places205", "as VISSL reads it"))
register_prefix(IMAGEFOLDER_PREFIX, _imagefolder_spec, "imagefolder:PATH")
