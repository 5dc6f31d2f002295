"""Reading dataset releases in torchvision's on-disk layouts: the parts the format modules share.

Every reader of :mod:`jepa_eval.data.formats` that follows torchvision takes the folder one gives
torchvision as ``root=`` and finds its dataset under torchvision's own sub-folder of it
(``flowers-102/``, ``dtd/dtd/``...), so one folder can hold them all. Here: that folder, list
files and MATLAB files read with the layout named in every error, the check that each split has
every class, DTD/SUN397 partition numbers, seeded per-class splits for datasets torchvision ships
without one, torchvision downloads, and the :class:`DatasetSpec` of such a release.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.dataset import Samples
from jepa_eval.data.folders import describe_folder
from jepa_eval.data.registry import DatasetSpec, Reader, layouts_at

# the splits made of official parts, for datasets whose "trainval" torchvision does not list itself
SPLIT_PARTS: dict[str, tuple[str, ...]] = {"train": ("train",), "val": ("val",), "test": ("test",),
                                           "trainval": ("train", "val")}
PARTITIONS = range(1, 11)  # DTD and SUN397 each publish ten train/test partitions, numbered 1..10
RELEASE_ROOT_HELP = ("; <root> is the folder given to torchvision as root= (data_root, $JEPA_EVAL_DATA/{name} "
                     "or $JEPA_EVAL_DATA itself)")


def release_spec(name: str, folder: str, splits: tuple[str, ...], train_split: str, eval_split: str,
                 layout: str, read: Reader, download: str | None, *, straight_resize: bool = False) -> DatasetSpec:
    """The spec of a release whose torchvision sub-folder ``folder`` marks its root.

    ``download`` names the torchvision class that fetches it (None: it cannot be downloaded).
    """
    fetch = None if download is None else partial(torchvision_download, download)
    return DatasetSpec(name, splits, train_split, eval_split, name, layout + RELEASE_ROOT_HELP.format(name=name),
                       markers=(folder,), straight_resize=straight_resize, read=read, download=fetch)


def dataset_folder(root: Path, folder: str, layout: str) -> Path:
    """``root / folder``; when absent, the error names the layouts of other datasets found at ``root``."""
    path = root / folder
    if path.is_dir():
        return path
    others = layouts_at(root, exclude=(folder,))
    found = describe_folder(root) + (f" (the layout of {', '.join(others)})" if others else "")
    raise JepaEvalError(f"{root} holds no folder {folder}/", expected=layout, found=found,
                        hint=f"give the folder that holds {folder.split('/')[0]}/, as torchvision's root= is")


def require(path: Path, what: str, layout: str, *, folder: bool = False, hint: str | None = None) -> Path:
    """``path`` when it is an existing file (or folder); otherwise an error naming ``what`` and the layout."""
    if path.is_dir() if folder else path.is_file():
        return path
    raise JepaEvalError(f"{what} {path.name}{'/' if folder else ''} is missing", expected=layout,
                        found=describe_folder(path.parent), hint=hint)


def text_lines(path: Path, what: str, layout: str, hint: str | None = None) -> list[tuple[int, str]]:
    """The stripped, non-blank lines of a text file with their 1-based line numbers."""
    require(path, what, layout, hint=hint)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]


def malformed(path: Path, number: int, line: str, line_format: str, layout: str) -> JepaEvalError:
    """The error for line ``number`` of ``path``, which does not read as ``line_format``."""
    return JepaEvalError(f"line {number} of {path} is malformed",
                         expected=f"lines '{line_format}' in the layout {layout}", found=repr(line))


def samples_under(classes: list[str], targets: list[int], paths: list[Path], images: Path, title: str) -> Samples:
    """Samples named by their paths relative to ``images``; ``title`` names the layout read."""
    names = [path.relative_to(images).as_posix() for path in paths]
    return Samples(classes, targets, names, f"{title} {images}", paths=paths)


def check_every_class(targets: Sequence[int], classes: Sequence[str], where: str, layout: str) -> None:
    """Refuse a split in which a class has no image (each release here has every class in every split)."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise JepaEvalError(f"{where} has no image of {len(empty)} of its {len(classes)} classes",
                            expected=f"images of every class in every split ({layout})",
                            found=f"no image of {', '.join(map(repr, empty[:6]))}")


def load_mat(path: Path, keys: Sequence[str], layout: str) -> dict[str, Any]:
    """A .mat file read as torchvision reads it (``scipy.io.loadmat(squeeze_me=True)``), with ``keys`` present."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    require(path, "MATLAB file", layout)
    try:
        content = loadmat(path, squeeze_me=True)
    except (OSError, ValueError, TypeError, MatReadError) as exc:
        raise JepaEvalError(f"cannot read {path}", expected=f"a MATLAB .mat file of the release ({layout})",
                            found=f"{type(exc).__name__}: {exc}") from exc
    missing = [key for key in keys if key not in content]
    if missing:
        raise JepaEvalError(f"{path} lacks the variables {', '.join(missing)}",
                            expected=f"variables {', '.join(keys)} ({layout})",
                            found=f"variables {sorted(k for k in content if not k.startswith('__'))}")
    return content


def integers(values: Any, where: str, layout: str) -> np.ndarray:
    """``values`` as a 1-D int64 array; a non-numeric or fractional entry is an error."""
    array = np.atleast_1d(np.asarray(values))
    if array.dtype.kind not in "iuf" or (array.dtype.kind == "f" and not np.array_equal(array, np.round(array))):
        raise JepaEvalError(f"{where} does not hold whole numbers", expected=layout,
                            found=f"dtype {array.dtype}, first values {array.ravel()[:4].tolist()}")
    return array.astype(np.int64).ravel()


def partition_of(name: str, dataset: str, layout: Callable[[int], str]) -> int:
    """The partition number N of ``dataset:N`` (``dataset`` alone is partition 1), refused outside 1..10."""
    _, colon, number = name.partition(":")
    partition: object = int(number) if number.isdigit() else number if colon else 1
    if partition not in PARTITIONS:
        raise JepaEvalError(f"{dataset} has no partition {partition!r}",
                            expected=f"a partition 1..10 ({dataset}:N; {dataset} alone is partition 1) "
                                     f"in the layout {layout(1)}", found=repr(name))
    return int(partition)  # type: ignore[call-overload]


def seeded_parts(count: int, sizes: Sequence[int], seed: int, class_name: str) -> list[np.ndarray]:
    """Split positions ``0..count-1`` of one class's sorted files into ``len(sizes) + 1`` parts.

    A permutation drawn from ``numpy.random.default_rng([seed, crc32(class_name)])`` gives the
    first ``sizes[0]`` positions to part 0, the next ``sizes[1]`` to part 1, ..., the rest to the
    last part; each part is returned sorted. A class's split depends only on its own file
    count, its name and the seed.
    """
    order = np.random.default_rng([seed, zlib.crc32(class_name.encode())]).permutation(count)
    bounds = np.cumsum([0, *sizes, count - sum(sizes)])
    return [np.sort(order[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])]


def split_samples(classes: list[str], files: list[list[Path]], parts: list[list[np.ndarray]],
                  chosen: tuple[int, ...], images: Path, title: str) -> Samples:
    """The files of parts ``chosen`` of every class (:func:`seeded_parts` positions into each
    class's sorted ``files``), class by class, each class's files in sorted order."""
    paths: list[Path] = []
    targets: list[int] = []
    for label, (class_files, class_parts) in enumerate(zip(files, parts)):
        positions = np.sort(np.concatenate([class_parts[i] for i in chosen]))
        paths.extend(class_files[p] for p in positions)
        targets.extend([label] * len(positions))
    return samples_under(classes, targets, paths, images, title)


def torchvision_download(class_name: str, root: Path, **options: Any) -> None:
    """Fetch a dataset with ``torchvision.datasets.<class_name>(root, download=True, **options)``
    (torchvision checks the archives' checksums)."""
    from torchvision import datasets

    root.mkdir(parents=True, exist_ok=True)
    try:
        getattr(datasets, class_name)(str(root), download=True, **options)
    except (OSError, RuntimeError, ValueError) as exc:
        raise JepaEvalError(f"downloading {class_name} into {root} with torchvision failed",
                            expected="internet access to torchvision's download URL",
                            found=f"{type(exc).__name__}: {exc}",
                            hint="download it elsewhere and pass the folder holding it as data_root") from exc
