"""The dataset registry: names, splits, where each dataset lives and how it is read.

Each module of :mod:`jepa_eval.data.formats` registers the datasets of its on-disk layout
(``register_dataset``), and names that carry a parameter after a colon (``imagefolder:PATH``)
through ``register_prefix``.

A dataset's root is found from ``data_root`` (the dataset's own folder, or a folder holding it
under its standard name) or else the ``JEPA_EVAL_DATA`` environment variable (a folder holding
the standard names, e.g. ``$JEPA_EVAL_DATA/imagenet``; the variable's folder itself is tried
second). A root is recognised by the marker entries of its layout.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.dataset import LabeledDataset, Samples
from jepa_eval.data.folders import describe_folder
from jepa_eval.data.transforms import resize_and_crop

DATA_ENV = "JEPA_EVAL_DATA"
ROOT_HELP = "<root> is data_root, or $JEPA_EVAL_DATA/{folder}, or $JEPA_EVAL_DATA itself"

Reader = Callable[[Path, str, str], Samples]


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
    read: Reader = field(repr=False, compare=False, kw_only=True)
    download: Callable[[Path], None] | None = field(default=None, repr=False, compare=False)
    embedded_root: Callable[[], Path] | None = field(default=None, repr=False, compare=False)


_SPECS: dict[str, DatasetSpec] = {}
_PREFIXES: dict[str, tuple[Callable[[str], DatasetSpec], str]] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` under its name (its format module does this once, at import)."""
    if spec.name in _SPECS:
        raise ValueError(f"dataset {spec.name!r} is registered twice")
    _SPECS[spec.name] = spec
    return spec


def register_prefix(prefix: str, make_spec: Callable[[str], DatasetSpec], usage: str) -> None:
    """Names ``PREFIX...`` get ``make_spec(name)``; ``usage`` spells the form (``imagefolder:PATH``)."""
    _PREFIXES[prefix] = (make_spec, usage)


def list_datasets() -> list[str]:
    """The registered dataset names (see :func:`dataset_prefixes` for ``imagefolder:PATH`` and the like)."""
    return sorted(_SPECS)


def dataset_prefixes() -> list[str]:
    """The forms of parametrised dataset names, e.g. ``imagefolder:PATH``."""
    return sorted(usage for _, usage in _PREFIXES.values())


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of a registered name or of ``imagefolder:PATH``."""
    prefix = next((p for p in _PREFIXES if name.startswith(p)), None)
    if prefix is not None:
        return _PREFIXES[prefix][0](name)
    if name not in _SPECS:
        raise JepaEvalError(f"unknown dataset {name!r}", expected=f"one of {', '.join(list_datasets())}, or "
                            + ", ".join(dataset_prefixes()))
    return _SPECS[name]


def layouts_at(folder: Path, *, exclude: tuple[str, ...] = ()) -> list[str]:
    """The registered datasets whose layout ``folder`` holds (one of their markers is there),
    except those marked by ``exclude``: what a folder given for another dataset is."""
    return [name for name, spec in sorted(_SPECS.items())
            if spec.markers and spec.markers != exclude and any((folder / m).exists() for m in spec.markers)]


def eval_transform(image_size: int, dataset: str) -> Callable[[Image.Image], torch.Tensor]:
    """The standard evaluation transform of ``dataset`` at ``image_size`` pixels: PIL RGB -> [3, S, S]
    (:func:`~jepa_eval.data.transforms.resize_and_crop`, straight to S x S for small-image datasets)."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise JepaEvalError("the image size must be a positive number of pixels",
                            expected="an int such as 224", found=repr(image_size))
    return resize_and_crop(image_size, straight_resize=get_spec(dataset).straight_resize)


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
        seen = []
        for folder in dict.fromkeys(candidates):
            others = layouts_at(folder, exclude=spec.markers) if folder.is_dir() else []
            seen.append(describe_folder(folder) + (f" (the layout of {', '.join(others)})" if others else ""))
        raise JepaEvalError(f"dataset {spec.name!r} was not found", expected=spec.layout, found="; ".join(seen),
                            hint=hint)
    return found


def build_dataset(name: str, split: str, *, data_root: str | Path | None = None, image_size: int = 224,
                  transform: Callable | None = None, download: bool = False) -> LabeledDataset:
    """Split ``split`` of dataset ``name`` as a :class:`LabeledDataset`.

    ``transform`` maps a PIL RGB image to what ``ds[i]`` returns; by default the dataset's
    evaluation transform at ``image_size`` (a float tensor [3, image_size, image_size]).
    ``download`` fetches the dataset through torchvision when its folder is absent and
    torchvision can (see each layout).
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
