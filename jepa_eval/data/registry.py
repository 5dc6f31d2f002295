"""The dataset registry: names, splits, where each dataset lives and how it is read.

A dataset's root is found from ``data_root`` (the dataset's own folder, or a folder holding it
under its standard name) or else the ``JEPA_EVAL_DATA`` environment variable (a folder holding
the standard names, e.g. ``$JEPA_EVAL_DATA/imagenet``; the variable's folder itself is tried
second). A root is recognised by the marker entries of its layout.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from jepa_eval.data.dataset import LabeledDataset, eval_transform
from jepa_eval.data.folders import describe_folder
from jepa_eval.data.formats import CIFAR10_FILES, CIFAR100_FILES, CifarFiles, Samples, read_cifar, \
    read_digits, read_folder_split, read_inat2018, read_inat2021, read_places365
from jepa_eval.core.errors import JepaEvalError

DATA_ENV = "JEPA_EVAL_DATA"
IMAGEFOLDER_PREFIX = "imagefolder:"
_ROOT_HELP = "<root> is data_root, or $JEPA_EVAL_DATA/{folder}, or $JEPA_EVAL_DATA itself"

Reader = Callable[[Path, str, str], Samples]


def _read_folder(root: Path, split: str, layout: str) -> Samples:
    """An ImageFolder split whose class numbering follows ``root/train``."""
    return read_folder_split(root, split, train_split="train", layout=layout)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its splits, its standard folder name under ``$JEPA_EVAL_DATA`` and its layout.

    ``markers``: entries whose presence under a folder identifies a root of this layout.
    ``straight_resize``: the evaluation transform resizes straight to S x S (small images).
    ``read(root, split, layout) -> Samples`` reads one split; ``download(root)`` fetches it.
    """

    name: str
    splits: tuple[str, ...]
    train_split: str
    eval_split: str
    folder: str
    layout: str
    markers: tuple[str, ...] = field(default=(), repr=False)
    straight_resize: bool = False
    read: Reader = field(default=_read_folder, repr=False, compare=False)
    download: Callable[[Path], None] | None = field(default=None, repr=False, compare=False)
    embedded_root: Callable[[], Path] | None = field(default=None, repr=False, compare=False)


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


def _sklearn_data_root() -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "data"


def _cifar_spec(name: str, files: CifarFiles) -> DatasetSpec:
    layout = (f"torchvision's release <root>/{files.folder}/{{{', '.join(files.train + files.test)}, "
              f"{files.meta}}} (python pickles), or an ImageFolder copy <root>/{{train,test}}/<class>/<image>; "
              + _ROOT_HELP.format(folder=name))
    return DatasetSpec(name, ("train", "test"), "train", "test", name, layout,
                       markers=(files.folder, "train", "test"), straight_resize=True,
                       read=partial(read_cifar, files), download=partial(_download_cifar, files))


def _folder_spec(name: str, note: str) -> DatasetSpec:
    layout = (f"an ImageFolder tree <root>/{{train,val}}/<class>/<image> ({note}); "
              + _ROOT_HELP.format(folder=name))
    return DatasetSpec(name, ("train", "val"), "train", "val", name, layout, markers=("train", "val"),
                       read=_read_folder)


_SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    _cifar_spec("cifar10", CIFAR10_FILES),
    _cifar_spec("cifar100", CIFAR100_FILES),
    _folder_spec("imagenet", "val/ sorted into the 1,000 wnid folders, as for torchvision's ImageFolder"),
    _folder_spec("places205", "as VISSL reads it"),
    DatasetSpec("inat2018", ("train", "val"), "train", "val", "inat2018",
                "iNaturalist 2018: images <root>/2018/<supercategory>/<category id>/<image> (torchvision's "
                "folder name; the official archive's train_val2018/ also works) and the competition "
                "annotations <root>/train2018.json and <root>/val2018.json, which choose each split; "
                + _ROOT_HELP.format(folder="inat2018"),
                markers=("2018", "train_val2018", "train2018.json", "val2018.json"), read=read_inat2018),
    DatasetSpec("inat2021", ("train", "train_mini", "val"), "train", "val", "inat2021",
                "torchvision's iNaturalist 2021 layout <root>/{2021_train,2021_train_mini,2021_valid}/"
                "<NNNNN_kingdom_phylum_class_order_family_genus_species>/<image> (train, train_mini, val); "
                + _ROOT_HELP.format(folder="inat2021"),
                markers=("2021_train", "2021_valid", "2021_train_mini"), read=read_inat2021),
    DatasetSpec("places365", ("train", "val"), "train", "val", "places365",
                "torchvision's Places365-standard layout: <root>/categories_places365.txt, "
                "places365_train_standard.txt and places365_val.txt ('<path> <class index>' lines), "
                "images in data_256_standard/ (or data_large_standard/) and val_256/ (or val_large/); "
                + _ROOT_HELP.format(folder="places365"),
                markers=("categories_places365.txt",), read=read_places365),
    DatasetSpec("digits", ("train", "test"), "train", "test", "",
                "scikit-learn's bundled 8x8 digits (no files needed): 1,797 images, stratified split "
                "with seed 0 into train 1,437 / test 360", straight_resize=True,
                read=lambda root, split, layout: read_digits(split), embedded_root=_sklearn_data_root),
)}


def list_datasets() -> list[str]:
    """The registered dataset names (any ImageFolder tree is also usable as ``imagefolder:PATH``)."""
    return sorted(_SPECS)


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


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of a registered name or of ``imagefolder:PATH``."""
    if name.startswith(IMAGEFOLDER_PREFIX):
        return _imagefolder_spec(name)
    if name not in _SPECS:
        raise JepaEvalError(f"unknown dataset {name!r}",
                            expected=f"one of {', '.join(list_datasets())}, or imagefolder:PATH")
    return _SPECS[name]


def _candidates(spec: DatasetSpec, data_root: str | Path | None) -> list[Path]:
    if spec.embedded_root is not None:
        return [spec.embedded_root()]
    if data_root is not None:
        base = Path(data_root).expanduser()
        return [base, base / spec.folder]
    env = os.environ.get(DATA_ENV)
    if env:
        base = Path(env).expanduser()
        return [base / spec.folder, base]
    raise JepaEvalError(f"no data folder is given for dataset {spec.name!r}",
                        expected=f"data_root (--data-root) or ${DATA_ENV} naming a folder that holds "
                                 f"{spec.folder}/, laid out as {spec.layout}",
                        hint="the 'digits' dataset needs no files")


def resolve_root(spec: DatasetSpec, data_root: str | Path | None = None, *, download: bool = False) -> Path:
    """The folder ``spec`` is read from, downloading it first where asked and possible."""
    candidates = _candidates(spec, data_root)
    if not spec.markers:
        return candidates[0]
    found = next((c for c in candidates if any((c / m).exists() for m in spec.markers)), None)
    if found is None and download and spec.download is not None:
        spec.download(candidates[0])
        found = candidates[0]
    if found is None:
        hint = "pass download=True (--download) to fetch it" if spec.download else None
        raise JepaEvalError(f"dataset {spec.name!r} was not found", expected=spec.layout,
                            found="; ".join(describe_folder(c) for c in dict.fromkeys(candidates)), hint=hint)
    return found


def build_dataset(name: str, split: str, *, data_root: str | Path | None = None, image_size: int = 224,
                  transform: Callable | None = None, download: bool = False) -> LabeledDataset:
    """Split ``split`` of dataset ``name`` as a :class:`LabeledDataset`.

    ``transform`` maps a PIL RGB image to what ``ds[i]`` returns; by default the dataset's
    evaluation transform at ``image_size`` (a float tensor [3, image_size, image_size]).
    ``download`` fetches CIFAR through torchvision when its folder is absent.
    """
    spec = get_spec(name)
    if split not in spec.splits:
        raise JepaEvalError(f"dataset {name!r} has no split {split!r}", expected=f"one of {', '.join(spec.splits)}")
    if transform is None:
        transform = eval_transform(image_size, name)
    root = resolve_root(spec, data_root, download=download)
    samples = spec.read(root, split, spec.layout)
    return LabeledDataset(name=name, split=split, root=root, classes=samples.classes, targets=samples.targets,
                          sample_names=samples.sample_names, layout=samples.layout, transform=transform,
                          paths=samples.paths, images=samples.images)
