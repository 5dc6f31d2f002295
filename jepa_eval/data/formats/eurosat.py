"""EuroSAT (RGB) in torchvision's layout ``eurosat/2750/<class>/``, with our seeded 60/20/20 split
(torchvision ships none)."""

from __future__ import annotations

from pathlib import Path

from jepa_eval.data.dataset import Samples
from jepa_eval.data.folders import read_image_folder
from jepa_eval.data.registry import register_dataset
from jepa_eval.data.releases import (SPLIT_PARTS, check_every_class, dataset_folder, release_spec, seeded_parts,
                                     split_samples)

FOLDER = "eurosat/2750"
PARTS = ("train", "val", "test")  # 60% / 20% / the rest of each class
SPLIT_SEED = 0


def read_eurosat(root: Path, split: str, layout: str, *, seed: int = SPLIT_SEED) -> Samples:
    """``eurosat/2750/<class>/<image>.jpg``, read as torchvision's ImageFolder (sorted classes, each
    class's files sorted).

    Split, per class of n images: 3n // 5 images drawn with :func:`seeded_parts` (``seed``) for
    train, the next n // 5 for val, the rest for test (VTAB's 60/20/20, stratified); trainval =
    train + val.
    """
    folder = dataset_folder(root, FOLDER, layout)
    classes, paths, targets = read_image_folder(folder.parent, folder.name, class_split=folder.name, layout=layout)
    files = [[path for path, target in zip(paths, targets) if target == label] for label in range(len(classes))]
    parts = [seeded_parts(len(f), (len(f) * 3 // 5, len(f) // 5), seed, name) for name, f in zip(classes, files)]
    chosen = tuple(PARTS.index(part) for part in SPLIT_PARTS[split])
    samples = split_samples(classes, files, parts, chosen, folder, f"torchvision EuroSAT, split seed {seed}")
    check_every_class(samples.targets, classes, f"EuroSAT split {split!r}", layout)
    return samples


register_dataset(release_spec(
    "eurosat", FOLDER, ("train", "val", "trainval", "test"), "trainval", "test",
    "torchvision's EuroSAT (RGB) layout: <root>/eurosat/2750/<class>/<image>.jpg, 10 sorted classes; split "
    f"(ours, torchvision has none): per class 60% train, 20% val, 20% test drawn with seed {SPLIT_SEED} "
    "(trainval = train + val); --download uses torchvision", read_eurosat, "EuroSAT", straight_resize=True))
