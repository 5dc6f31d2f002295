"""What a reader finds on disk (:class:`Samples`) and the dataset object built from it (:class:`LabeledDataset`), with image decoding."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from jepa_eval.core.errors import JepaEvalError


def load_image(path: Path) -> Image.Image:
    """Decode ``path`` with PIL and convert it to RGB (greyscale and palette images included).

    A missing, empty, truncated or undecodable file raises :class:`JepaEvalError` naming it:
    images are never skipped silently, since that would change the split.
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        size = path.stat().st_size if path.is_file() else None
        found = "an empty file (0 bytes)" if size == 0 else f"{type(exc).__name__}: {exc}"
        raise JepaEvalError(f"cannot read image {path}", expected="a readable image file (JPEG, PNG...)",
                            found=found, hint="replace or delete the file and rebuild the dataset") from exc


@dataclass
class Samples:
    """What a reader found: one entry of ``targets``/``sample_names`` per image.

    Exactly one of ``paths`` (files decoded on access) and ``images`` (uint8 [N, H, W, 3]) is set.
    """

    classes: list[str]
    targets: list[int]
    sample_names: list[str]
    layout: str
    paths: list[Path] | None = None
    images: np.ndarray | None = None


class LabeledDataset(torch.utils.data.Dataset):
    """A labelled image split: ``ds[i] -> (transform(PIL RGB image), int label)``.

    Images come either from files (``paths``, decoded on access) or from an in-memory uint8
    array ``images`` of shape [N, H, W, 3]. ``targets``, ``classes`` and ``sample_names`` are
    known without decoding any image. ``layout`` says which on-disk layout was read.
    """

    def __init__(self, *, name: str, split: str, root: Path, classes: list[str], targets: Sequence[int],
                 sample_names: list[str], layout: str, transform: Callable[[Image.Image], Any],
                 paths: list[Path] | None = None, images: np.ndarray | None = None) -> None:
        if (paths is None) == (images is None):
            raise ValueError("give exactly one of paths and images")
        count = len(paths) if paths is not None else len(images)  # type: ignore[arg-type]
        if not len(targets) == len(sample_names) == count:
            raise ValueError("targets, sample_names and images differ in length")
        self.name, self.split, self.root, self.layout = name, split, Path(root), layout
        self.classes = list(classes)
        self.targets = [int(t) for t in targets]
        self.sample_names = list(sample_names)
        self.transform = transform
        self.paths, self.images = paths, images

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def in_memory(self) -> bool:
        """Whether the images are an in-memory array (nothing to decode from files)."""
        return self.images is not None

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if self.paths is not None:
            image = load_image(self.paths[index])
        else:
            image = Image.fromarray(self.images[index])  # type: ignore[index]
        return self.transform(image), self.targets[index]

    def __repr__(self) -> str:
        return (f"LabeledDataset({self.name}/{self.split}: {len(self)} images, {len(self.classes)} classes, "
                f"root={self.root}, layout={self.layout!r})")
