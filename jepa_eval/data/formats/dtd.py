"""The Describable Textures Dataset in torchvision's layout, with its ten official partitions:
``dtd`` is partition 1, ``dtd:N`` partition N."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.dataset import Samples
from jepa_eval.data.registry import DatasetSpec, register_dataset, register_prefix
from jepa_eval.data.releases import (SPLIT_PARTS, check_every_class, dataset_folder, malformed, partition_of,
                                     release_spec, require, samples_under, text_lines)

FOLDER = "dtd/dtd"


def _entries(path: Path, layout: str) -> list[tuple[str, str]]:
    """(class, file name) of each ``<class>/<image>.jpg`` line."""
    entries = []
    for number, line in text_lines(path, "DTD split file", layout):
        parts = line.split("/")
        if len(parts) != 2 or not all(parts):
            raise malformed(path, number, line, "<class>/<image>.jpg", layout)
        entries.append((parts[0], parts[1]))
    return entries


def read_dtd(root: Path, split: str, layout: str, partition: int = 1) -> Samples:
    """``dtd/dtd/images/<class>/<image>.jpg`` and ``dtd/dtd/labels/{train,val,test}<N>.txt`` for
    partition N (``<class>/<image>.jpg`` lines); trainval = train then val.

    Labels index the sorted class names, as torchvision's; they are read from the train file of
    the partition so that every split numbers classes alike.
    """
    folder = dataset_folder(root, FOLDER, layout)
    images = require(folder / "images", "DTD image folder", layout, folder=True)
    classes = sorted({name for name, _ in _entries(folder / "labels" / f"train{partition}.txt", layout)})
    entries = [entry for part in SPLIT_PARTS[split]
               for entry in _entries(folder / "labels" / f"{part}{partition}.txt", layout)]
    unknown = sorted({name for name, _ in entries} - set(classes))
    if unknown:
        raise JepaEvalError(f"DTD split {split!r} of partition {partition} has classes that train{partition}.txt "
                            "lacks", expected=layout, found=", ".join(unknown[:6]))
    index = {name: i for i, name in enumerate(classes)}
    targets = [index[name] for name, _ in entries]
    check_every_class(targets, classes, f"DTD split {split!r} of partition {partition}", layout)
    return samples_under(classes, targets, [images / name / file for name, file in entries], images,
                         f"torchvision DTD partition {partition}")


def _layout(partition: int) -> str:
    return (f"torchvision's DTD layout, partition {partition}: <root>/dtd/dtd/images/<class>/<image>.jpg and "
            f"<root>/dtd/dtd/labels/{{train,val,test}}{partition}.txt ('<class>/<image>.jpg' lines; trainval = "
            "train + val); labels index the sorted classes; --download uses torchvision")


def dtd_spec(name: str) -> DatasetSpec:
    """The spec of ``dtd`` (partition 1) or ``dtd:N`` (partition N in 1..10)."""
    partition = partition_of(name, "dtd", _layout)
    spec = release_spec("dtd", FOLDER, ("train", "val", "trainval", "test"), "trainval", "test", _layout(partition),
                        partial(read_dtd, partition=partition), "DTD")
    return replace(spec, name=name)  # its folder under $JEPA_EVAL_DATA stays dtd/


register_dataset(dtd_spec("dtd"))
register_prefix("dtd:", dtd_spec, "dtd:N")
