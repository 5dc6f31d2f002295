"""STL-10 in torchvision's binary layout ``stl10_binary/`` (the labelled train and test images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.dataset import Samples
from jepa_eval.data.registry import register_dataset
from jepa_eval.data.releases import check_every_class, dataset_folder, release_spec, require, text_lines

FOLDER = "stl10_binary"
FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")}
SIDE = 96


def read_stl10(root: Path, split: str, layout: str) -> Samples:
    """``stl10_binary/{train,test}_{X,y}.bin`` and ``class_names.txt`` (unlabeled_X.bin is not read).

    X: uint8, per image 3 channel planes of 96 x 96 stored column by column; y: one uint8 label
    1..10 per image, label = y - 1 as torchvision's. Images come back as a read-only memory map
    [N, 96, 96, 3] (no copy); sample names are image indices.
    """
    folder = dataset_folder(root, FOLDER, layout)
    classes = [line for _, line in text_lines(folder / "class_names.txt", "STL-10 class file", layout)]
    images_path, labels_path = (require(folder / name, "STL-10 file", layout) for name in FILES[split])
    labels = np.fromfile(labels_path, dtype=np.uint8).astype(np.int64)
    image_bytes = 3 * SIDE * SIDE
    size = images_path.stat().st_size
    if not labels.size or size != labels.size * image_bytes:
        raise JepaEvalError(f"{images_path.name} and {labels_path.name} disagree",
                            expected=f"{image_bytes} bytes of {images_path.name} per label byte ({layout})",
                            found=f"{size} bytes and {labels.size} labels")
    if not 1 <= labels.min() <= labels.max() <= len(classes):
        raise JepaEvalError(f"{labels_path} has labels outside 1..{len(classes)}", expected=layout,
                            found=f"labels {labels.min()}..{labels.max()}")
    planes = np.memmap(images_path, dtype=np.uint8, mode="r", shape=(labels.size, 3, SIDE, SIDE))
    targets = (labels - 1).tolist()
    check_every_class(targets, classes, f"STL-10 split {split!r}", layout)
    return Samples(classes, targets, [str(i) for i in range(labels.size)], f"torchvision STL10 binaries {folder}",
                   images=planes.transpose(0, 3, 2, 1))


register_dataset(release_spec(
    "stl10", FOLDER, ("train", "test"), "train", "test",
    "torchvision's STL10 binaries: <root>/stl10_binary/{train,test}_{X,y}.bin and class_names.txt (label = y - 1; "
    "unlabeled_X.bin and the 1,000-image folds are not used); --download uses torchvision", read_stl10, "STL10",
    straight_resize=True))
