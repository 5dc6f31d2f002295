"""Stanford Cars in torchvision's layout ``stanford_cars/`` (devkit .mat files and the test labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.dataset import Samples
from jepa_eval.data.folders import safe_relative
from jepa_eval.data.registry import register_dataset
from jepa_eval.data.releases import (check_every_class, dataset_folder, integers, load_mat, release_spec, require,
                                     samples_under)

FOLDER = "stanford_cars"
FILES = {"train": ("devkit/cars_train_annos.mat", "cars_train"), "test": ("cars_test_annos_withlabels.mat", "cars_test")}


def read_cars(root: Path, split: str, layout: str) -> Samples:
    """``stanford_cars/``: ``devkit/cars_meta.mat`` (class_names), ``devkit/cars_train_annos.mat`` and
    ``cars_test_annos_withlabels.mat`` (struct arrays 'annotations' with 'fname' and 1-based
    'class'), images in ``cars_train/`` and ``cars_test/``. Label = class - 1, as torchvision's.
    """
    folder = dataset_folder(root, FOLDER, layout)
    annotations_file, images_name = FILES[split]
    images = require(folder / images_name, "Stanford Cars image folder", layout, folder=True)
    meta = load_mat(folder / "devkit" / "cars_meta.mat", ("class_names",), layout)
    classes = [str(name) for name in np.atleast_1d(meta["class_names"])]
    path = require(folder / annotations_file, "Stanford Cars annotation file", layout,
                   hint="the test labels are in cars_test_annos_withlabels.mat, published apart from the devkit "
                        "(whose cars_test_annos.mat has no labels)" if split == "test" else None)
    records = np.atleast_1d(load_mat(path, ("annotations",), layout)["annotations"])
    if records.dtype.names is None or not {"fname", "class"} <= set(records.dtype.names):
        raise JepaEvalError(f"{path} 'annotations' is not a struct array with fields fname and class",
                            expected=layout, found=f"fields {records.dtype.names}")
    targets = [int(label) - 1 for label in integers(list(records["class"]), f"{path} 'class'", layout)]
    if targets and not 0 <= min(targets) <= max(targets) < len(classes):
        raise JepaEvalError(f"{path} has classes outside 1..{len(classes)}", expected=layout,
                            found=f"classes {min(targets) + 1}..{max(targets) + 1}")
    paths = [safe_relative(str(name), images, path) for name in records["fname"]]
    check_every_class(targets, classes, f"Stanford Cars split {split!r}", layout)
    return samples_under(classes, targets, paths, images, "torchvision StanfordCars")


register_dataset(release_spec(
    "cars", FOLDER, ("train", "test"), "train", "test",
    "torchvision's StanfordCars layout: <root>/stanford_cars/devkit/{cars_meta.mat,cars_train_annos.mat}, "
    "<root>/stanford_cars/cars_test_annos_withlabels.mat (label = class - 1), images in stanford_cars/cars_train/ "
    "and cars_test/; torchvision cannot download it (its URL is gone), so --download does not either",
    read_cars, None))
