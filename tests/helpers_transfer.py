"""Tiny copies of the transfer datasets, each in torchvision's exact on-disk layout (reused by
other test files, beside :mod:`helpers_data`).

Every ``make_<name>(root)`` writes under ``root`` (the folder one gives torchvision as ``root=``)
and returns ``root``. Images are 4 x 4 solid JPEGs (PNGs for CLEVR); STL-10 pixels encode
their position (see :func:`stl10_pixels`). The contents are fixed so that tests can state the
expected splits by hand; the module constants hold the names the tests need.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from scipy.io import savemat

from helpers_data import write_image as write_solid_image

FLOWERS_LABELS = [1, 2, 3] * 4  # image_0000k.jpg has label FLOWERS_LABELS[k - 1]
FLOWERS_SETS = {"trnid": [1, 2, 3, 4, 5, 6], "valid": [7, 8, 9], "tstid": [12, 11, 10]}
PET_IMAGES = {  # split -> (image id, class id, species, breed id)
    "trainval": [("Abyssinian_1", 1, 1, 1), ("american_bulldog_10", 2, 2, 1), ("Abyssinian_2", 1, 1, 1),
                 ("american_pit_bull_terrier_3", 3, 2, 2), ("american_bulldog_11", 2, 2, 1)],
    "test": [("american_pit_bull_terrier_4", 3, 2, 2), ("Abyssinian_5", 1, 1, 1), ("american_bulldog_12", 2, 2, 1)],
}
DTD_CLASSES = ["banded", "blotchy", "zigzagged"]
AIRCRAFT_VARIANTS = ["Falcon 2000", "707-320", "F/A-18"]  # label order of variants.txt, not sorted
AIRCRAFT_IMAGES = {"train": [("1000001", 0), ("1000002", 1), ("1000003", 2), ("1000004", 1)],
                   "val": [("1000005", 2), ("1000006", 0), ("1000007", 1)],
                   "test": [("1000008", 1), ("1000009", 0), ("1000010", 2)]}
CARS_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012"]
CARS_IMAGES = {"train": [("00001.jpg", 3), ("00002.jpg", 1), ("00003.jpg", 2), ("00004.jpg", 1)],
               "test": [("00001.jpg", 2), ("00002.jpg", 3), ("00003.jpg", 1)]}  # (fname, 1-based class)
FOOD_IMAGES = {"train": {"waffles": ["waffles/31", "waffles/32"], "apple_pie": ["apple_pie/11", "apple_pie/12"],
                         "baby_back_ribs": ["baby_back_ribs/21"]},
               "test": {"apple_pie": ["apple_pie/13"], "waffles": ["waffles/33"],
                        "baby_back_ribs": ["baby_back_ribs/22"]}}  # JSON key order kept, not sorted
SUN397_CLASSES = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]
STL10_CLASSES = ["airplane", "bird", "car"]
STL10_LABELS = {"train": [1, 2, 3, 3, 1], "test": [2, 3, 1]}  # the 1-based bytes of *_y.bin
CALTECH_COUNTS = {"BACKGROUND_Google": 2, "Faces": 32, "Leopards": 31, "accordion": 33}
EUROSAT_CLASSES = ["AnnualCrop", "Forest", "River"]
# CLEVR scenes: image index -> closest depths of its objects (the count is their number)
CLEVR_SCENES = {"train": [[8.0, 11.0, 12.0], [9.0, 8.25, 13.0, 14.0], [8.5, 9.9, 10.5, 11.0, 12.0],
                          [9.2, 9.3, 9.4, 9.6, 9.7, 9.8], [9.75] * 7, [12.0] * 8, [7.0] * 9, [8.9] * 10],
                "val": [[10.0, 11.0, 12.0], [100.0, 50.0, 60.0, 70.0]]}


def write_image(path: Path) -> Path:
    """A solid 4 x 4 image at ``path`` (JPEG or PNG from the suffix)."""
    return write_solid_image(path, (200, 30, 90), size=4)


def write_lines(path: Path, lines: Iterable[str]) -> Path:
    """A text file of ``lines``, one a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def make_flowers102(root: Path) -> Path:
    """12 images of 3 classes; setid.mat: train 1-6, val 7-9, test 12, 11, 10."""
    folder = root / "flowers-102"
    for number in range(1, len(FLOWERS_LABELS) + 1):
        write_image(folder / "jpg" / f"image_{number:05d}.jpg")
    savemat(folder / "imagelabels.mat", {"labels": np.array([FLOWERS_LABELS], dtype=np.uint8)})
    savemat(folder / "setid.mat", {key: np.array([ids], dtype=np.uint16) for key, ids in FLOWERS_SETS.items()})
    return root


def make_pets(root: Path) -> Path:
    """:data:`PET_IMAGES` in ``oxford-iiit-pet/{images,annotations}``."""
    folder = root / "oxford-iiit-pet"
    for split, entries in PET_IMAGES.items():
        write_lines(folder / "annotations" / f"{split}.txt", (" ".join(map(str, entry)) for entry in entries))
        for image_id, *_ in entries:
            write_image(folder / "images" / f"{image_id}.jpg")
    return root


def make_dtd(root: Path, partitions: Iterable[int] = (1, 2)) -> Path:
    """3 images a class; in partition p image i of each class goes to (train, val, test)[(i + p - 1) % 3]."""
    folder = root / "dtd" / "dtd"
    for name in DTD_CLASSES:
        for i in range(3):
            write_image(folder / "images" / name / f"{name}_{i + 1:04d}.jpg")
    for p in partitions:
        for offset, split in enumerate(("train", "val", "test")):
            write_lines(folder / "labels" / f"{split}{p}.txt",
                        (f"{name}/{name}_{i + 1:04d}.jpg" for name in DTD_CLASSES for i in range(3)
                         if (i + p - 1) % 3 == offset))
    return root


def make_aircraft(root: Path) -> Path:
    """:data:`AIRCRAFT_IMAGES` at variant level; trainval.txt is train.txt then val.txt."""
    data = root / "fgvc-aircraft-2013b" / "data"
    write_lines(data / "variants.txt", AIRCRAFT_VARIANTS)
    splits = {**AIRCRAFT_IMAGES, "trainval": AIRCRAFT_IMAGES["train"] + AIRCRAFT_IMAGES["val"]}
    for split, entries in splits.items():
        write_lines(data / f"images_variant_{split}.txt", (f"{i} {AIRCRAFT_VARIANTS[label]}" for i, label in entries))
        for image_id, _ in entries:
            write_image(data / "images" / f"{image_id}.jpg")
    return root


def car_annotations(entries: list[tuple[str, int]]) -> np.ndarray:
    """A 1 x N MATLAB struct array with the fields of the Stanford Cars annotation files."""
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    records = np.zeros((1, len(entries)), dtype=[(f, object) for f in fields])
    for i, (fname, label) in enumerate(entries):
        records[0, i] = (np.uint16(1), np.uint16(1), np.uint16(3), np.uint16(3), np.uint8(label), fname)
    return records


def make_cars(root: Path) -> Path:
    """:data:`CARS_IMAGES` with the devkit .mat files and the separately published test labels."""
    folder = root / "stanford_cars"
    (folder / "devkit").mkdir(parents=True)
    savemat(folder / "devkit" / "cars_meta.mat", {"class_names": np.array([CARS_CLASSES], dtype=object)})
    savemat(folder / "devkit" / "cars_train_annos.mat", {"annotations": car_annotations(CARS_IMAGES["train"])})
    savemat(folder / "cars_test_annos_withlabels.mat", {"annotations": car_annotations(CARS_IMAGES["test"])})
    for split, entries in CARS_IMAGES.items():
        for fname, _ in entries:
            write_image(folder / f"cars_{split}" / fname)
    return root


def make_food101(root: Path) -> Path:
    """:data:`FOOD_IMAGES` as ``food-101/meta/*.json`` and ``food-101/images/<class>/<id>.jpg``."""
    folder = root / "food-101"
    (folder / "meta").mkdir(parents=True)
    for split, listing in FOOD_IMAGES.items():
        (folder / "meta" / f"{split}.json").write_text(json.dumps(listing))
        for entries in listing.values():
            for entry in entries:
                write_image(folder / "images" / f"{entry}.jpg")
    write_lines(folder / "meta" / "classes.txt", sorted(FOOD_IMAGES["train"]))
    return root


def sun397_image(class_line: str, i: int) -> str:
    """The partition-file line of image ``i`` of a class, e.g. '/a/abbey/sun_abbey1.jpg'."""
    return f"{class_line}/sun_{class_line.split('/')[2]}{i}.jpg"


def make_sun397(root: Path) -> Path:
    """4 images a class; partition 01: images 0, 1 train, 2, 3 test; partition 02 the reverse."""
    folder = root / "SUN397"
    write_lines(folder / "ClassName.txt", SUN397_CLASSES)
    for line in SUN397_CLASSES:
        for i in range(4):
            write_image(folder / sun397_image(line, i).lstrip("/"))
    for partition, train in ((1, (0, 1)), (2, (2, 3))):
        write_lines(folder / f"Training_{partition:02d}.txt",
                    (sun397_image(line, i) for line in SUN397_CLASSES for i in train))
        write_lines(folder / f"Testing_{partition:02d}.txt",
                    (sun397_image(line, i) for line in SUN397_CLASSES for i in range(4) if i not in train))
    return root


def stl10_pixels(label: int, index: int) -> np.ndarray:
    """uint8 [96, 96, 3]: channel 0 = 2 x row, channel 1 = 2 x column, channel 2 = 10 x label + index."""
    rows, cols = np.meshgrid(np.arange(96), np.arange(96), indexing="ij")
    return np.stack([2 * rows, 2 * cols, np.full((96, 96), 10 * label + index)], axis=-1).astype(np.uint8)


def make_stl10(root: Path) -> Path:
    """:data:`STL10_LABELS`; X files store each image's channel planes column by column, as the release."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, labels in STL10_LABELS.items():
        planes = [stl10_pixels(label, i).transpose(2, 1, 0) for i, label in enumerate(labels)]
        np.stack(planes).tofile(folder / f"{split}_X.bin")
        np.array(labels, dtype=np.uint8).tofile(folder / f"{split}_y.bin")
    write_lines(folder / "class_names.txt", STL10_CLASSES)
    return root


def make_caltech101(root: Path, counts: dict[str, int] = CALTECH_COUNTS) -> Path:
    """``caltech101/101_ObjectCategories/<class>/image_0001.jpg ..`` with ``counts`` images a class."""
    folder = root / "caltech101" / "101_ObjectCategories"
    for name, count in counts.items():
        for k in range(1, count + 1):
            write_image(folder / name / f"image_{k:04d}.jpg")
    return root


def make_eurosat(root: Path, per_class: int = 5) -> Path:
    """``eurosat/2750/<class>/<class>_<k>.jpg``, k = 1..per_class."""
    for name in EUROSAT_CLASSES:
        for k in range(1, per_class + 1):
            write_image(root / "eurosat" / "2750" / name / f"{name}_{k}.jpg")
    return root


def make_clevr(root: Path, scenes_of: dict[str, list[list[float]]] = CLEVR_SCENES) -> Path:
    """``scenes_of`` (split -> the depths of each image's objects; by default :data:`CLEVR_SCENES`) for
    train and val, test images without scenes; scenes listed in reverse order."""
    folder = root / "clevr" / "CLEVR_v1.0"
    for split in ("train", "val", "test"):
        depths = scenes_of.get(split, [[]])
        scenes = []
        for index, scene in enumerate(depths):
            name = f"CLEVR_{split}_{index:06d}.png"
            write_image(folder / "images" / split / name)
            scenes.append({"image_index": index, "image_filename": name, "split": split,
                           "objects": [{"pixel_coords": [10, 20, d], "3d_coords": [0.0, 0.0, 0.7]} for d in scene]})
        if split != "test":
            write_lines(folder / "scenes" / f"CLEVR_{split}_scenes.json", [json.dumps({"scenes": scenes[::-1]})])
    return root
