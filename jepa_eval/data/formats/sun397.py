"""SUN397 in torchvision's layout with the official partition files: ``sun397`` is partition 01,
``sun397:N`` partition N (torchvision reads no split)."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from jepa_eval.data.dataset import Samples
from jepa_eval.data.folders import safe_relative
from jepa_eval.data.registry import DatasetSpec, register_dataset, register_prefix
from jepa_eval.data.releases import (check_every_class, dataset_folder, malformed, partition_of, release_spec,
                                     samples_under, text_lines)

FOLDER = "SUN397"
LISTS = {"train": "Training", "test": "Testing"}
PARTITIONS_HINT = ("unzip Partitions.zip from the SUN397 download page (vision.princeton.edu/projects/2010/SUN) "
                   "into SUN397/")


def _class_of(path: Path, number: int, line: str, layout: str, *, image: bool) -> str:
    """'abbey' from '/a/abbey' (ClassName.txt) or from '/a/abbey/sun_x.jpg' (a partition file)."""
    parts = line.split("/")
    if len(parts) < (4 if image else 3) or parts[0] or len(parts[1]) != 1 or not all(parts[2:]):
        raise malformed(path, number, line, "/<letter>/<class>/sun_<id>.jpg" if image else "/<letter>/<class>",
                        layout)
    return "/".join(parts[2:-1] if image else parts[2:])


def read_sun397(root: Path, split: str, layout: str, partition: int = 1) -> Samples:
    """``SUN397/ClassName.txt`` (``/a/abbey`` lines, label order), images ``SUN397/a/abbey/sun_*.jpg``
    and the official partition files ``SUN397/{Training,Testing}_NN.txt`` (``/a/abbey/sun_*.jpg``
    lines). Labels are torchvision's: the class of the image's folder in ClassName.txt order;
    names are the lines without '/a/'.
    """
    folder = dataset_folder(root, FOLDER, layout)
    names = folder / "ClassName.txt"
    classes = [_class_of(names, n, line, layout, image=False)
               for n, line in text_lines(names, "SUN397 class file", layout)]
    index = {name: i for i, name in enumerate(classes)}
    listing = folder / f"{LISTS[split]}_{partition:02d}.txt"
    paths, targets = [], []
    for number, line in text_lines(listing, "SUN397 partition file", layout, PARTITIONS_HINT):
        name = _class_of(listing, number, line, layout, image=True)
        if name not in index:
            raise malformed(listing, number, line, "/<letter>/<class in ClassName.txt>/sun_<id>.jpg", layout)
        paths.append(safe_relative(line, folder, listing))
        targets.append(index[name])
    check_every_class(targets, classes, f"SUN397 split {split!r} of partition {partition}", layout)
    return samples_under(classes, targets, paths, folder, f"torchvision SUN397 partition {partition}")


def _layout(partition: int) -> str:
    return (f"torchvision's SUN397 layout with the official partition {partition:02d}: <root>/SUN397/ClassName.txt "
            "('/a/abbey' lines, label order), images <root>/SUN397/a/abbey/sun_*.jpg, and "
            f"<root>/SUN397/Training_{partition:02d}.txt and Testing_{partition:02d}.txt ('/a/abbey/sun_*.jpg' "
            "lines, 50 + 50 a class) from Partitions.zip of the SUN database; --download fetches the images "
            "with torchvision, not the partition files")


def sun397_spec(name: str) -> DatasetSpec:
    """The spec of ``sun397`` (partition 1) or ``sun397:N`` (partition N in 1..10)."""
    partition = partition_of(name, "sun397", _layout)
    spec = release_spec("sun397", FOLDER, ("train", "test"), "train", "test", _layout(partition),
                        partial(read_sun397, partition=partition), "SUN397")
    return replace(spec, name=name)  # its folder under $JEPA_EVAL_DATA stays sun397/


register_dataset(sun397_spec("sun397"))
register_prefix("sun397:", sun397_spec, "sun397:N")
