"""Specification of the transfer-dataset readers (flowers102 ... clevr-dist, in torchvision's layouts).

(a) On the same tiny copy, each reader lists the same (file, label) pairs and class names as
torchvision's own dataset class (md5 checks patched out as torchvision's tests do); (b) each
bad input raises one JepaEvalError naming the expected layout; (c) splits whose answer is
written here by hand; plus the registry entries (markers, splits, transforms, downloads).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from scipy.io import savemat

import helpers_transfer as B
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data import build_dataset, get_spec
from jepa_eval.data.dataset import LabeledDataset
from jepa_eval.data.formats.caltech import read_caltech101
from jepa_eval.data.formats.clevr import DEPTH_THRESHOLDS, closest_depth_class
from jepa_eval.data.formats.eurosat import read_eurosat
from jepa_eval.data.formats.sun397 import read_sun397
from jepa_eval.data.registry import resolve_root

BUILDERS: dict[str, Callable[[Path], Path]] = {
    "flowers102": B.make_flowers102, "pets": B.make_pets, "dtd": B.make_dtd, "aircraft": B.make_aircraft,
    "cars": B.make_cars, "food101": B.make_food101, "sun397": B.make_sun397, "stl10": B.make_stl10,
    "caltech101": B.make_caltech101, "eurosat": B.make_eurosat, "clevr-count": B.make_clevr,
    "clevr-dist": B.make_clevr,
}
SPECS = {name: get_spec(name) for name in BUILDERS}
TRANSFER_SPECS = list(SPECS.values())


@pytest.fixture(autouse=True)
def _one_thread_and_no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    for module in ("flowers102", "stl10"):  # the classes that md5-check files when constructed
        monkeypatch.setattr(f"torchvision.datasets.{module}.check_integrity", lambda *args, **kwargs: True)


def read(name: str, root: Path, split: str) -> Any:
    spec = SPECS[name]
    return spec.read(root, split, spec.layout)


def pairs(samples: Any) -> list[tuple[str, int]]:
    return [(str(path), target) for path, target in zip(samples.paths, samples.targets)]


def listed(dataset: Any) -> list[tuple[str, int]]:
    """(path, label) of each item of a torchvision dataset built with ``loader=str``."""
    return [(path, int(label)) for path, label in (dataset[i] for i in range(len(dataset)))]


# --- (a) the same files, labels and classes as torchvision ---------------------------------------

@pytest.mark.parametrize("name, torchvision_class, splits", [
    ("flowers102", tvd.Flowers102, ("train", "val", "test")),
    ("aircraft", tvd.FGVCAircraft, ("train", "val", "trainval", "test")),
    ("cars", tvd.StanfordCars, ("train", "test")),
    ("food101", tvd.Food101, ("train", "test")),
])
def test_official_splits_match_torchvision(tmp_path: Path, name: str, torchvision_class: type,
                                           splits: tuple[str, ...]) -> None:
    root = BUILDERS[name](tmp_path)
    for split in splits:
        ours, theirs = read(name, root, split), torchvision_class(root, split=split, loader=str)
        assert pairs(ours) == listed(theirs)
        assert ours.classes == list(theirs.classes)[:3] and len(ours.classes) == 3


def test_flowers_trainval_is_torchvision_train_then_val_and_classes_are_its_first_names(tmp_path: Path) -> None:
    root = B.make_flowers102(tmp_path)
    train, val = (listed(tvd.Flowers102(root, split=s, loader=str)) for s in ("train", "val"))
    assert pairs(read("flowers102", root, "trainval")) == train + val
    assert read("flowers102", root, "test").classes == ["pink primrose", "hard-leaved pocket orchid",
                                                        "canterbury bells"] == tvd.Flowers102.classes[:3]


def test_pets_match_torchvision_files_labels_and_title_cased_breeds(tmp_path: Path) -> None:
    root = B.make_pets(tmp_path)
    for split in ("trainval", "test"):
        theirs = tvd.OxfordIIITPet(root, split=split)
        ours = read("pets", root, split)
        assert pairs(ours) == [(str(p), label) for p, label in zip(theirs._images, theirs._labels)]
        assert ours.classes == theirs.classes == ["Abyssinian", "American Bulldog", "American Pit Bull Terrier"]


@pytest.mark.parametrize("partition", [1, 2])
def test_dtd_partitions_match_torchvision(tmp_path: Path, partition: int) -> None:
    root = B.make_dtd(tmp_path)
    spec = get_spec(f"dtd:{partition}")
    for split in ("train", "val", "test"):
        theirs = tvd.DTD(root, split=split, partition=partition, loader=str)
        ours = spec.read(root, split, spec.layout)
        assert pairs(ours) == listed(theirs) and ours.classes == theirs.classes == B.DTD_CLASSES


def test_sun397_partition_labels_are_torchvision_labels_and_cover_the_copy(tmp_path: Path) -> None:
    root = B.make_sun397(tmp_path)
    theirs = tvd.SUN397(root, loader=str)
    label_of = dict(listed(theirs))  # torchvision lists in file-system order, so compare as a mapping
    train, test = (pairs(read("sun397", root, split)) for split in ("train", "test"))
    assert all(label_of[path] == label for path, label in train + test)
    assert sorted(train + test) == sorted(label_of.items())
    assert read("sun397", root, "test").classes == theirs.classes == ["abbey", "apartment_building/outdoor",
                                                                      "bakery/shop"]


def test_stl10_pixels_and_labels_match_torchvision_and_load_through_labeled_dataset(tmp_path: Path) -> None:
    root = B.make_stl10(tmp_path)
    for split in ("train", "test"):
        theirs, ours = tvd.STL10(root, split=split), read("stl10", root, split)
        assert ours.classes == theirs.classes == B.STL10_CLASSES
        assert ours.targets == [int(label) for label in theirs.labels]
        for i in range(len(theirs)):
            assert np.array_equal(ours.images[i], np.asarray(theirs[i][0]))
    dataset = LabeledDataset(name="stl10", split="test", root=root, classes=ours.classes, targets=ours.targets,
                             sample_names=ours.sample_names, layout=ours.layout, transform=np.asarray,
                             images=ours.images)
    image, label = dataset[1]
    assert label == 2 and image.shape == (96, 96, 3) and tuple(image[5, 7]) == (10, 14, 31)  # (2 row, 2 col, 10 y + i)


def test_caltech101_splits_partition_torchvision_listing_without_background(tmp_path: Path) -> None:
    root = B.make_caltech101(tmp_path)
    theirs = tvd.Caltech101(root)
    listing = {(str(Path(theirs.root) / "101_ObjectCategories" / theirs.categories[y] / f"image_{k:04d}.jpg"), y)
               for k, y in zip(theirs.index, theirs.y)}
    train, test = (pairs(read("caltech101", root, split)) for split in ("train", "test"))
    assert set(train).isdisjoint(test) and set(train) | set(test) == listing and len(train) + len(test) == 96
    assert read("caltech101", root, "test").classes == theirs.categories == ["Faces", "Leopards", "accordion"]


def test_eurosat_splits_partition_torchvision_image_folder(tmp_path: Path) -> None:
    root = B.make_eurosat(tmp_path)
    theirs = tvd.EuroSAT(root, loader=str)
    parts = {split: pairs(read("eurosat", root, split)) for split in ("train", "val", "trainval", "test")}
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == sorted(theirs.samples)
    assert sorted(parts["trainval"]) == sorted(parts["train"] + parts["val"])
    assert read("eurosat", root, "val").classes == theirs.classes == B.EUROSAT_CLASSES


def test_clevr_count_is_torchvision_count_minus_three_on_the_same_files(tmp_path: Path) -> None:
    root = B.make_clevr(tmp_path)
    for split in ("train", "val"):
        theirs = listed(tvd.CLEVRClassification(root, split=split, loader=str))
        ours = read("clevr-count", root, split)
        assert [(path, label + 3) for path, label in pairs(ours)] == theirs
        assert [str(p) for p in read("clevr-dist", root, split).paths] == [path for path, _ in theirs]


def test_clevr_dist_labels_equal_vtab_formula_on_the_scenes(tmp_path: Path) -> None:
    root = B.make_clevr(tmp_path)
    thresholds = np.array(DEPTH_THRESHOLDS)
    scenes = json.loads((root / "clevr/CLEVR_v1.0/scenes/CLEVR_train_scenes.json").read_text())["scenes"]
    depth = {s["image_filename"]: min(o["pixel_coords"][2] for o in s["objects"]) for s in scenes}
    ours = read("clevr-dist", root, "train")
    # VTAB: label = tf.reduce_max(tf.where((thrs - dist) < 0)), the last threshold below the depth
    assert ours.targets == [int(np.flatnonzero(thresholds - depth[n] < 0).max()) for n in ours.sample_names]


# --- (c) splits whose answer is written by hand ---------------------------------------------------

def test_flowers_labels_are_one_based_mat_values_minus_one_in_setid_order(tmp_path: Path) -> None:
    root = B.make_flowers102(tmp_path)
    test = read("flowers102", root, "test")
    assert test.targets == [2, 1, 0] and test.sample_names == ["image_00012.jpg", "image_00011.jpg",
                                                               "image_00010.jpg"]
    assert [len(read("flowers102", root, s).targets) for s in ("train", "val", "trainval")] == [6, 3, 9]


def test_hand_known_labels_of_the_list_file_datasets(tmp_path: Path) -> None:
    assert read("pets", B.make_pets(tmp_path / "p"), "trainval").targets == [0, 1, 0, 2, 1]
    aircraft = read("aircraft", B.make_aircraft(tmp_path / "a"), "train")
    assert aircraft.classes == ["Falcon 2000", "707-320", "F/A-18"] and aircraft.targets == [0, 1, 2, 1]
    assert read("cars", B.make_cars(tmp_path / "c"), "train").targets == [2, 0, 1, 0]
    food = read("food101", B.make_food101(tmp_path / "f"), "train")
    assert food.targets == [2, 2, 0, 0, 1] and food.sample_names[:3] == ["waffles/31.jpg", "waffles/32.jpg",
                                                                          "apple_pie/11.jpg"]


def test_partition_n_reads_the_files_numbered_n(tmp_path: Path) -> None:
    dtd_root, sun_root = B.make_dtd(tmp_path / "d"), B.make_sun397(tmp_path / "s")
    spec = get_spec("dtd:2")
    assert spec.read(dtd_root, "train", spec.layout).sample_names == [
        "banded/banded_0003.jpg", "blotchy/blotchy_0003.jpg", "zigzagged/zigzagged_0003.jpg"]
    assert spec.read(dtd_root, "trainval", spec.layout).targets == [0, 1, 2, 0, 1, 2]
    assert read_sun397(sun_root, "train", "", partition=2).sample_names[:2] == ["a/abbey/sun_abbey2.jpg",
                                                                                "a/abbey/sun_abbey3.jpg"]
    assert get_spec("dtd").read(dtd_root, "test", "").sample_names[0] == "banded/banded_0003.jpg"
    assert build_dataset("sun397:2", "test", data_root=sun_root).sample_names[0] == "a/abbey/sun_abbey0.jpg"


def test_caltech101_takes_30_a_class_for_train_and_the_seed_0_choice_never_changes(tmp_path: Path) -> None:
    root = B.make_caltech101(tmp_path)
    train, test = (read("caltech101", root, split) for split in ("train", "test"))
    assert np.bincount(train.targets).tolist() == [30, 30, 30] and test.targets == [0, 0, 1, 2, 2, 2]
    assert test.sample_names == ["Faces/image_0012.jpg", "Faces/image_0015.jpg", "Leopards/image_0011.jpg",
                                 "accordion/image_0002.jpg", "accordion/image_0021.jpg", "accordion/image_0022.jpg"]
    assert read_caltech101(root, "test", "", seed=1).sample_names != test.sample_names


def test_a_class_split_does_not_depend_on_the_other_classes(tmp_path: Path) -> None:
    alone = B.make_caltech101(tmp_path / "one", {"accordion": 33})
    assert read("caltech101", alone, "test").sample_names == ["accordion/image_0002.jpg",
                                                              "accordion/image_0021.jpg", "accordion/image_0022.jpg"]
    assert read_caltech101(alone, "train", "", train_per_class=31).targets == [0] * 31


def test_eurosat_gives_each_class_60_20_20_percent_with_seed_0(tmp_path: Path) -> None:
    root = B.make_eurosat(tmp_path, per_class=10)
    sizes = {s: np.bincount(read("eurosat", root, s).targets).tolist() for s in ("train", "val", "trainval", "test")}
    assert sizes == {"train": [6, 6, 6], "val": [2, 2, 2], "trainval": [8, 8, 8], "test": [2, 2, 2]}
    assert read("eurosat", root, "test").sample_names[:2] == ["AnnualCrop/AnnualCrop_2.jpg",
                                                              "AnnualCrop/AnnualCrop_6.jpg"]
    assert read_eurosat(root, "test", "", seed=5).sample_names != read("eurosat", root, "test").sample_names


def test_clevr_hand_known_counts_and_depth_bins(tmp_path: Path) -> None:
    root = B.make_clevr(tmp_path)
    assert read("clevr-count", root, "train").targets == [0, 1, 2, 3, 4, 5, 6, 7]
    assert read("clevr-count", root, "val").classes == ["3", "4", "5", "6", "7", "8", "9", "10"]
    # closest depths 8.0, 8.25, 8.5, 9.2, 9.75, 12, 7, 8.9 and (val) 10, 50; a bin is (t_k, t_k+1]
    assert read("clevr-dist", root, "train").targets == [0, 1, 1, 3, 4, 5, 0, 2]
    assert read("clevr-dist", root, "val").targets == [4, 5]
    assert [closest_depth_class(d) for d in (1e-6, 8.0, 8.0001, 9.5, 9.5001, 100.0)] == [0, 0, 1, 3, 4, 5]


# --- (b) bad input: one JepaEvalError naming the expected layout ----------------------------------

def _remove(relative: str) -> Callable[[Path], None]:
    return lambda root: (root / relative).unlink()


def _lines(relative: str, *lines: str) -> Callable[[Path], None]:
    return lambda root: B.write_lines(root / relative, lines)


def _cars_test(entries: list[tuple[str, int]]) -> Callable[[Path], None]:
    return lambda root: savemat(root / "stanford_cars/cars_test_annos_withlabels.mat",
                                {"annotations": B.car_annotations(entries)})


def _clevr_val(scenes: list[dict[str, Any]]) -> Callable[[Path], None]:
    return lambda root: B.write_lines(root / "clevr/CLEVR_v1.0/scenes/CLEVR_val_scenes.json",
                                      [json.dumps({"scenes": scenes})])


def _truncate(relative: str) -> Callable[[Path], None]:
    return lambda root: (root / relative).write_bytes((root / relative).read_bytes()[:-1])


CLEVR_VAL_NAMES = ["CLEVR_val_000000.png", "CLEVR_val_000001.png"]
BAD_INPUTS = [  # (dataset, split, change to the tiny copy, the problem the message must state)
    ("flowers102", "val", _remove("flowers-102/setid.mat"), "MATLAB file setid.mat is missing"),
    ("pets", "test", _remove("oxford-iiit-pet/annotations/test.txt"), "split file test.txt is missing"),
    ("dtd", "val", _remove("dtd/dtd/labels/val1.txt"), "split file val1.txt is missing"),
    ("aircraft", "val", _remove("fgvc-aircraft-2013b/data/images_variant_val.txt"), "images_variant_val.txt is miss"),
    ("cars", "test", _remove("stanford_cars/cars_test_annos_withlabels.mat"), "withlabels.mat is missing.*published"),
    ("food101", "test", _remove("food-101/meta/test.json"), "split file test.json is missing"),
    ("sun397", "test", _remove("SUN397/Testing_01.txt"), "partition file Testing_01.txt is missing.*Partitions.zip"),
    ("stl10", "test", _remove("stl10_binary/test_y.bin"), "file test_y.bin is missing"),
    ("clevr-dist", "val", _remove("clevr/CLEVR_v1.0/scenes/CLEVR_val_scenes.json"), "CLEVR_val_scenes.json is miss"),
    ("flowers102", "val", lambda root: savemat(root / "flowers-102/setid.mat", {
        "trnid": np.array([[1, 2, 3]]), "valid": np.array([[7, 8]]), "tstid": np.array([[10, 11, 12]])}),
     "split 'val' has no image of 1 of its 3 classes.*'canterbury bells'"),
    ("pets", "test", _lines("oxford-iiit-pet/annotations/test.txt", "Abyssinian_5 1 1 1"),
     "no image of 2 of its 3 classes.*'American Bulldog'"),
    ("dtd", "test", _lines("dtd/dtd/labels/test1.txt", "banded/banded_0003.jpg", "blotchy/blotchy_0003.jpg"),
     "no image of 1 of its 3 classes.*'zigzagged'"),
    ("aircraft", "val", _lines("fgvc-aircraft-2013b/data/images_variant_val.txt", "1000005 F/A-18"),
     "no image of 2 of its 3 classes.*'Falcon 2000'"),
    ("cars", "test", _cars_test([("00001.jpg", 2), ("00002.jpg", 3)]), "no image of 1 .*'AM General Hummer"),
    ("food101", "test", lambda root: (root / "food-101/meta/test.json").write_text(json.dumps(
        {"apple_pie": ["apple_pie/13"], "waffles": [], "baby_back_ribs": ["baby_back_ribs/22"]})),
     "no image of 1 of its 3 classes.*'waffles'"),
    ("sun397", "test", _lines("SUN397/Testing_01.txt", "/b/bakery/shop/sun_bakery2.jpg"), "no image of 2 of its 3"),
    ("stl10", "test", lambda root: np.array([1, 1, 1], np.uint8).tofile(root / "stl10_binary/test_y.bin"),
     "no image of 2 of its 3 classes.*'bird', 'car'"),
    ("caltech101", "train", lambda root: (root / "caltech101/101_ObjectCategories/Leopards/image_0031.jpg").unlink(),
     "class 'Leopards' has 30 images, too few.*more than 30 images a class"),
    ("eurosat", "val", lambda root: (root / "eurosat/2750/Forest/Forest_5.jpg").unlink(),
     "split 'val' has no image of 1 of its 3 classes.*'Forest'"),
    ("pets", "trainval", _lines("oxford-iiit-pet/annotations/trainval.txt", "Abyssinian_1 1 1"),
     "line 1 of .*trainval.txt is malformed.*<class id 1..37>"),
    ("pets", "test", _lines("oxford-iiit-pet/annotations/test.txt", "american_bulldog_12 1 2 1"),
     "class id 1, which trainval.txt gives to 'Abyssinian'"),
    ("dtd", "train", _lines("dtd/dtd/labels/train1.txt", "banded_0001.jpg"), "line 1 of .*train1.txt is malformed"),
    ("aircraft", "test", _lines("fgvc-aircraft-2013b/data/images_variant_test.txt", "1000008"),
     "line 1 of .*images_variant_test.txt is malformed.*variant listed in variants.txt"),
    ("aircraft", "test", _lines("fgvc-aircraft-2013b/data/images_variant_test.txt", "1000008 Boeing 999"),
     "line 1 of .*images_variant_test.txt is malformed"),
    ("sun397", "train", _lines("SUN397/ClassName.txt", "/a/abbey", "bakery"), "line 2 of .*ClassName.txt is malformed"),
    ("sun397", "train", _lines("SUN397/Training_01.txt", "/a/abbey"), "line 1 of .*Training_01.txt is malformed"),
    ("sun397", "train", _lines("SUN397/Training_01.txt", "/c/coast/sun_x.jpg"), "class in ClassName.txt"),
    ("food101", "train", lambda root: (root / "food-101/meta/train.json").write_text("[1, 2]"),
     "train.json is not a Food-101 split file"),
    ("flowers102", "train", lambda root: savemat(root / "flowers-102/imagelabels.mat", {"labels": np.zeros((1, 12))}),
     "imagelabels.mat has labels outside 1..102"),
    ("flowers102", "train", lambda root: savemat(root / "flowers-102/setid.mat", {"trnid": np.array([[1, 13]]),
                                                                                  "valid": [[7]], "tstid": [[9]]}),
     "setid.mat names images that imagelabels.mat has no label for"),
    ("cars", "train", lambda root: savemat(root / "stanford_cars/devkit/cars_train_annos.mat",
                                           {"annotations": {"class": np.array([1, 2], np.uint8)}}),
     "'annotations' is not a struct array with fields fname and class"),
    ("cars", "test", _cars_test([("00001.jpg", 2), ("00002.jpg", 4)]), "has classes outside 1..3"),
    ("stl10", "test", _truncate("stl10_binary/test_X.bin"), "test_X.bin and test_y.bin disagree"),
    ("clevr-count", "val", _clevr_val([{"image_filename": n, "objects": [{}] * 2} for n in CLEVR_VAL_NAMES]),
     "has a scene with 2 objects"),
    ("clevr-dist", "val", _clevr_val([{"image_filename": n, "objects": [{"3d_coords": [0, 0, 0]}] * 3}
                                      for n in CLEVR_VAL_NAMES]), "no object depths for CLEVR_val_000000.png"),
    ("clevr-count", "val", _clevr_val([{"image_filename": CLEVR_VAL_NAMES[0], "objects": [{}] * 3}]),
     "no object list for 1 images.*none for CLEVR_val_000001.png"),
    ("clevr-count", "val", _lines("clevr/CLEVR_v1.0/scenes/CLEVR_val_scenes.json", '{"images": []}'),
     "cannot read the scenes"),
]


def _one_error(call: Callable[[], Any], layout: str) -> str:
    with pytest.raises(JepaEvalError) as info:
        call()
    message = str(info.value)
    assert layout.rstrip(".") in message and "\n" not in message
    return message


@pytest.mark.parametrize("name, split, change, problem", BAD_INPUTS,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(BAD_INPUTS)])
def test_bad_input_is_one_error_naming_the_layout(tmp_path: Path, name: str, split: str,
                                                  change: Callable[[Path], None], problem: str) -> None:
    root = BUILDERS[name](tmp_path)
    change(root)
    assert re.search(problem, _one_error(lambda: read(name, root, split), SPECS[name].layout))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_folder_in_another_layout_is_refused_naming_both(tmp_path: Path, name: str) -> None:
    other = "food101" if name == "pets" else "pets"
    root = BUILDERS[other](tmp_path)
    message = _one_error(lambda: read(name, root, SPECS[name].eval_split), SPECS[name].layout)
    assert f"(the layout of {other})" in message and "as torchvision's root= is" in message
    message = _one_error(lambda: build_dataset(name, SPECS[name].eval_split, data_root=root), SPECS[name].layout)
    assert f"dataset {name!r} was not found" in message and f"(the layout of {other})" in message


@pytest.mark.parametrize("name", ["dtd:0", "dtd:11", "dtd:x", "dtd:", "sun397:11"])
def test_partition_numbers_outside_1_to_10_are_refused(name: str) -> None:
    dataset = name.split(":")[0]
    partition_one = get_spec(dataset).layout.split("; <root>")[0]
    message = _one_error(lambda: get_spec(name), partition_one)
    assert f"{dataset} has no partition" in message and "a partition 1..10" in message


def test_a_partition_number_in_range_but_absent_from_disk_names_its_file(tmp_path: Path) -> None:
    root = B.make_dtd(tmp_path)
    spec = get_spec("dtd:3")
    assert "train3.txt is missing" in _one_error(lambda: spec.read(root, "test", spec.layout), spec.layout)
    assert "train3.txt is missing" in _one_error(lambda: build_dataset("dtd:3", "test", data_root=root), spec.layout)


# --- registry entries ------------------------------------------------------------------------------

def test_each_dataset_has_its_documented_splits_and_transform() -> None:
    table = {spec.name: (spec.splits, spec.train_split, spec.eval_split, spec.straight_resize)
             for spec in TRANSFER_SPECS}
    official3 = ("train", "val", "trainval", "test")
    assert table == {
        "flowers102": (official3, "trainval", "test", False), "pets": (("trainval", "test"), "trainval", "test", False),
        "dtd": (official3, "trainval", "test", False), "aircraft": (official3, "trainval", "test", False),
        "cars": (("train", "test"), "train", "test", False), "food101": (("train", "test"), "train", "test", False),
        "sun397": (("train", "test"), "train", "test", False), "stl10": (("train", "test"), "train", "test", True),
        "caltech101": (("train", "test"), "train", "test", False), "eurosat": (official3, "trainval", "test", True),
        "clevr-count": (("train", "val"), "train", "val", True), "clevr-dist": (("train", "val"), "train", "val", True),
    }
    assert get_spec("dtd:7").splits == official3 and get_spec("sun397:10").eval_split == "test"


@pytest.fixture(scope="module")
def all_copies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("copies")
    return {name: builder(base / name) for name, builder in BUILDERS.items() if name != "clevr-dist"}


def test_markers_recognise_each_layout_and_no_other(all_copies: dict[str, Path]) -> None:
    for spec in TRANSFER_SPECS:
        own = "clevr-count" if spec.name == "clevr-dist" else spec.name
        matching = {name for name, root in all_copies.items() if any((root / m).exists() for m in spec.markers)}
        assert matching == {own}, spec.name
        assert resolve_root(spec, all_copies[own]) == all_copies[own]


def test_one_folder_can_hold_every_dataset_in_torchvision_layouts(tmp_path: Path) -> None:
    for name, builder in BUILDERS.items():
        if name != "clevr-dist":  # clevr-count's copy serves both CLEVR tasks
            builder(tmp_path)
    for spec in TRANSFER_SPECS:
        assert resolve_root(spec, tmp_path) == tmp_path
        assert len(spec.read(tmp_path, spec.eval_split, spec.layout).targets) > 0


TORCHVISION_CLASSES = {"flowers102": "Flowers102", "pets": "OxfordIIITPet", "dtd": "DTD", "aircraft": "FGVCAircraft",
                       "food101": "Food101", "sun397": "SUN397", "stl10": "STL10", "caltech101": "Caltech101",
                       "eurosat": "EuroSAT", "clevr-count": "CLEVRClassification", "clevr-dist": "CLEVRClassification"}


@pytest.mark.parametrize("name", sorted(TORCHVISION_CLASSES))
def test_download_goes_through_torchvision_once_when_the_folder_is_absent(tmp_path: Path, name: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(root: str, download: bool, **options: Any) -> None:
        calls.append((root, download))
        BUILDERS[name](Path(root))

    with monkeypatch.context() as patch:
        patch.setattr(tvd, TORCHVISION_CLASSES[name], fake)
        assert resolve_root(SPECS[name], tmp_path, download=True) == tmp_path
        assert resolve_root(SPECS[name], tmp_path, download=True) == tmp_path
    assert calls == [(str(tmp_path), True)]
    assert read(name, tmp_path, SPECS[name].eval_split).targets


def test_cars_cannot_be_downloaded_and_says_so(tmp_path: Path) -> None:
    assert SPECS["cars"].download is None and "cannot download" in SPECS["cars"].layout
    assert "not found" in _one_error(lambda: resolve_root(SPECS["cars"], tmp_path, download=True), SPECS["cars"].layout)


def test_a_failed_download_is_one_error_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(root: str, download: bool, **options: Any) -> None:
        raise RuntimeError("URLError: no network")

    monkeypatch.setattr(tvd, "Food101", offline)
    with pytest.raises(JepaEvalError, match="downloading Food101 .* failed.*no network.*pass the folder"):
        resolve_root(SPECS["food101"], tmp_path, download=True)
