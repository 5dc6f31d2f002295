"""Caltech-101 in torchvision's layout ``caltech101/101_ObjectCategories/``, with our seeded split
(torchvision ships none): 30 images a class for train, the rest for test."""

from __future__ import annotations

from pathlib import Path

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.dataset import Samples
from jepa_eval.data.folders import describe_folder, is_image_name, subfolders
from jepa_eval.data.registry import register_dataset
from jepa_eval.data.releases import dataset_folder, release_spec, seeded_parts, split_samples

FOLDER = "caltech101/101_ObjectCategories"
BACKGROUND = "BACKGROUND_Google"  # torchvision drops this clutter folder: 101 classes remain
TRAIN_PER_CLASS = 30
SPLIT_SEED = 0


def read_caltech101(root: Path, split: str, layout: str, *, train_per_class: int = TRAIN_PER_CLASS,
                    seed: int = SPLIT_SEED) -> Samples:
    """``caltech101/101_ObjectCategories/<class>/image_NNNN.jpg``: classes are the sorted folders
    without BACKGROUND_Google, as torchvision's (``Faces`` sorts before ``accordion``).

    Split: ``train_per_class`` images of each class drawn with :func:`seeded_parts` (``seed``) for
    train, all the others for test; a class needs more than ``train_per_class`` images.
    """
    images = dataset_folder(root, FOLDER, layout)
    classes = [name for name in subfolders(images) if name != BACKGROUND]
    if not classes:
        raise JepaEvalError(f"{images} holds no class folder", expected=layout, found=describe_folder(images))
    files = [sorted(p for p in (images / name).iterdir() if is_image_name(p.name)) for name in classes]
    short = [(name, len(f)) for name, f in zip(classes, files) if len(f) <= train_per_class]
    if short:
        raise JepaEvalError(f"Caltech-101 class {short[0][0]!r} has {short[0][1]} images, too few for the split",
                            expected=f"more than {train_per_class} images a class ({train_per_class} train, "
                                     f"the rest test) in the layout {layout}",
                            found=f"{len(short)} classes with {train_per_class} or fewer")
    parts = [seeded_parts(len(f), (train_per_class,), seed, name) for name, f in zip(classes, files)]
    return split_samples(classes, files, parts, (("train", "test").index(split),), images,
                         f"torchvision Caltech101, split seed {seed}")


register_dataset(release_spec(
    "caltech101", FOLDER, ("train", "test"), "train", "test",
    "torchvision's Caltech101 layout: <root>/caltech101/101_ObjectCategories/<class>/image_NNNN.jpg, 101 sorted "
    f"classes without {BACKGROUND}; split (ours, torchvision has none): {TRAIN_PER_CLASS} images a class drawn "
    f"with seed {SPLIT_SEED} for train, the rest for test; --download uses torchvision", read_caltech101,
    "Caltech101"))
