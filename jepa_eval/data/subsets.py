"""Published subset files: the training images a low-shot protocol uses, by file name.

The SimCLR ImageNet 1% / 10% lists (``imagenet_subsets/1percent.txt``, 12,811 lines, and
``10percent.txt``, 128,116 lines) hold one training file name a line, ``<wnid>_<id>.JPEG``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from jepa_eval.core.errors import JepaEvalError


def read_subset_file(path: str | os.PathLike[str], sample_names: Sequence[str]) -> np.ndarray:
    """Indices into ``sample_names`` of the names listed in ``path``, in file order.

    The file holds one training file name a line (``<wnid>_<id>.JPEG``, as the SimCLR
    ImageNet 1% / 10% lists); blank lines are ignored. Names with path separators or
    ``..``, repeated names, and names absent from ``sample_names`` are errors.
    """
    try:
        lines = [line.strip() for line in open(path, encoding="utf-8").read().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise JepaEvalError(f"cannot read the subset file {path}",
                            expected="a text file with one image file name a line",
                            found=str(exc)) from exc
    names = [line for line in lines if line]
    if not names:
        raise JepaEvalError(f"the subset file {path} lists no images",
                            expected="one image file name a line", found="an empty file")
    unsafe = [n for n in names if "/" in n or "\\" in n or ".." in n]
    if unsafe:
        raise JepaEvalError(f"the subset file {path} contains paths, not file names",
                            expected="bare file names such as n01440764_10026.JPEG",
                            found=f"{len(unsafe)} such lines, e.g. {unsafe[:5]}")
    repeated = _repeated(names)
    if repeated:
        raise JepaEvalError(f"the subset file {path} lists images more than once",
                            expected="each file name once",
                            found=f"{len(repeated)} repeats, e.g. {repeated[:5]}")
    position = {name: i for i, name in enumerate(sample_names)}
    missing = [n for n in names if n not in position]
    if missing:
        raise JepaEvalError(f"{len(missing)} of {len(names)} images in the subset file {path} are "
                            "not in the training split",
                            expected="names of files in the dataset's training split",
                            found=f"missing names such as {missing[:5]}",
                            hint="check that the subset file belongs to this dataset and split")
    ambiguous = sorted(set(names) & set(_repeated(sample_names)))
    if ambiguous:
        raise JepaEvalError("some subset names match several training images",
                            expected="file names that are unique in the training split",
                            found=f"{len(ambiguous)} such names, e.g. {ambiguous[:5]}")
    return np.array([position[n] for n in names], dtype=np.int64)


def _repeated(names: Sequence[str]) -> list[str]:
    """Every name that occurs earlier in ``names`` as well, in order."""
    seen: set[str] = set()
    repeated = []
    for name in names:
        if name in seen:
            repeated.append(name)
        seen.add(name)
    return repeated
