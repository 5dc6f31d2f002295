"""Specification of the dataset registry: every on-disk format, roots, transforms and bad input."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers_data import CIFAR10_CLASSES, INAT2018_CATEGORIES, INAT2021_CATEGORIES, PLACES365_CATEGORIES, \
    cifar_pixels, class_color, make_cifar10, make_cifar100, make_imagefolder, make_inat, make_places365, \
    write_image
from jepa_eval.data import IMAGENET_MEAN, IMAGENET_STD, build_dataset, eval_transform, get_spec, \
    list_datasets
from jepa_eval.core.errors import JepaEvalError
from scripts.shared_data import extract_shared_archive

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def raw(image: Image.Image) -> np.ndarray:
    """A transform that keeps the decoded pixels: uint8 [H, W, 3]."""
    return np.asarray(image)


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JEPA_EVAL_DATA", raising=False)


# --- registry ---------------------------------------------------------------------------------

def test_registry_lists_every_named_dataset_with_train_and_eval_splits() -> None:
    assert list_datasets() == sorted(["cifar10", "cifar100", "imagenet", "inat2018", "inat2021", "places365",
                                      "places205", "digits", "flowers102", "pets", "dtd", "aircraft", "cars",
                                      "food101", "sun397", "stl10", "caltech101", "eurosat", "clevr-count",
                                      "clevr-dist"])
    for name in list_datasets():
        spec = get_spec(name)
        assert spec.train_split in spec.splits and spec.eval_split in spec.splits
        assert spec.layout
    assert (get_spec("cifar10").train_split, get_spec("cifar10").eval_split) == ("train", "test")
    assert (get_spec("imagenet").train_split, get_spec("imagenet").eval_split) == ("train", "val")


def test_unknown_dataset_name_lists_the_known_ones() -> None:
    with pytest.raises(JepaEvalError, match="unknown dataset 'cifar11'.*cifar10.*imagefolder:PATH"):
        get_spec("cifar11")


def test_a_split_the_dataset_lacks_is_refused() -> None:
    with pytest.raises(JepaEvalError, match="no split 'val'.*train, test"):
        build_dataset("digits", "val")


# --- transforms -------------------------------------------------------------------------------

def test_standard_eval_transform_resizes_by_256_over_224_then_center_crops() -> None:
    # a 448-px image with a 16-px red frame: resized to 256 the frame is ~9 px, cropping 16 px removes it
    image = np.zeros((448, 448, 3), np.uint8)
    image[:16], image[-16:], image[:, :16], image[:, -16:] = 255, 255, 255, 255
    out = eval_transform(224, "imagenet")(Image.fromarray(image))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    black = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[:, 0, 0], black, atol=1e-5) and torch.allclose(out[:, -1, -1], black, atol=1e-5)


def test_cifar_and_digits_transform_resize_straight_without_cropping() -> None:
    image = np.zeros((32, 64, 3), np.uint8)  # wide image, white on the left quarter
    image[:, :16] = 255
    for name in ("cifar10", "cifar100", "digits"):
        out = eval_transform(48, name)(Image.fromarray(image))
        assert out.shape == (3, 48, 48)
        white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        assert torch.allclose(out[:, 24, 0], white, atol=1e-3)  # the left edge was kept, not cropped


def test_eval_transform_normalises_with_imagenet_mean_and_std() -> None:
    out = eval_transform(32, "imagenet")(Image.new("RGB", (40, 40), (51, 102, 204)))
    expected = (torch.tensor([51, 102, 204]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out.mean(dim=(1, 2)), expected, atol=1e-5)


def test_eval_transform_refuses_a_non_positive_size() -> None:
    with pytest.raises(JepaEvalError, match="positive"):
        eval_transform(0, "imagenet")


# --- digits (embedded) ------------------------------------------------------------------------

def test_digits_is_a_seeded_stratified_split_of_1797_grey_images_as_rgb() -> None:
    train, test = build_dataset("digits", "train", transform=raw), build_dataset("digits", "test", transform=raw)
    assert (len(train), len(test)) == (1437, 360)
    assert set(train.sample_names).isdisjoint(test.sample_names)
    assert np.bincount(test.targets).min() >= 35  # stratified: ~36 of each digit
    image, label = test[0]
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8 and image.max() == 255
    assert (image[..., 0] == image[..., 2]).all()
    assert build_dataset("digits", "test", transform=raw).sample_names == test.sample_names
    tensor, _ = build_dataset("digits", "test", image_size=32)[0]
    assert tensor.shape == (3, 32, 32)


# --- CIFAR ------------------------------------------------------------------------------------

def test_cifar10_pickles_load_with_labels_classes_and_channel_planar_pixels(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path, n_per_class=2)
    train = build_dataset("cifar10", "train", data_root=root, transform=raw)
    test = build_dataset("cifar10", "test", data_root=root, transform=raw)
    assert (len(train), len(test)) == (20, 10) and train.classes == CIFAR10_CLASSES
    assert train.targets == [i % 10 for i in range(20)]
    image, label = train[13]
    assert label == 3 and np.array_equal(image, cifar_pixels(3, 1))  # 4 a batch: 2nd image of data_batch_4
    assert "CIFAR pickles" in train.layout and train.sample_names[:2] == ["0", "1"]
    assert build_dataset("cifar10", "test", data_root=root, image_size=32)[0][0].shape == (3, 32, 32)


def test_cifar100_reads_fine_labels_and_fine_class_names(tmp_path: Path) -> None:
    root = make_cifar100(tmp_path)
    train = build_dataset("cifar100", "train", data_root=root, transform=raw)
    assert len(train) == 100 and len(train.classes) == 100 and train.classes[7] == "fine07"
    assert train.targets[:5] == [0, 1, 2, 3, 4] and train[42][1] == 42


def test_cifar_accepts_an_imagefolder_copy_with_train_and_test(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path, ["airplane", "bird"], 2, splits=("train", "test"), size=32)
    test = build_dataset("cifar10", "test", data_root=root, image_size=32)
    assert test.classes == ["airplane", "bird"] and test.targets == [0, 0, 1, 1]
    assert "ImageFolder" in test.layout and test[0][0].shape == (3, 32, 32)


def test_cifar_file_that_would_run_code_is_refused(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path)
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as handle:
        pickle.dump({"data": os.system}, handle)
    with pytest.raises(JepaEvalError, match="cannot read CIFAR file.*not allowed"):
        build_dataset("cifar10", "test", data_root=root)


def test_cifar_file_of_the_wrong_shape_or_missing_is_named(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path)
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as handle:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, handle)
    with pytest.raises(JepaEvalError, match="test_batch has an unexpected content.*N x 3072"):
        build_dataset("cifar10", "test", data_root=root)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(JepaEvalError, match="data_batch_3 is missing.*cifar-10-batches-py"):
        build_dataset("cifar10", "train", data_root=root)


def test_cifar_download_passes_through_to_torchvision_when_the_folder_is_absent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls = []

    def fake_cifar10(root: str, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        make_cifar10(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    assert len(build_dataset("cifar10", "test", data_root=tmp_path, download=True)) == 10
    assert len(build_dataset("cifar10", "train", data_root=tmp_path, download=True)) == 20
    assert calls == [(str(tmp_path), True, True)]  # fetched once, then read from disk


# --- ImageFolder datasets ---------------------------------------------------------------------

def test_imagenet_folder_labels_follow_sorted_class_folders_and_names_are_file_names(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path, ["n01440764", "n02102040", "n02979186"], 2)
    train = build_dataset("imagenet", "train", data_root=root, transform=raw)
    assert train.classes == ["n01440764", "n02102040", "n02979186"] and train.targets == [0, 0, 1, 1, 2, 2]
    assert train.sample_names[0] == "n01440764_0.JPEG"
    image, label = train[4]
    assert label == 2 and np.abs(image[8, 8].astype(int) - class_color(2)).max() <= 3


def test_eval_split_missing_a_class_keeps_the_training_class_numbering(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path, ["a", "b", "c"], 1, splits=("train",))
    make_imagefolder(tmp_path, ["a", "c"], 1, splits=("val",))
    val = build_dataset("places205", "val", data_root=root)
    assert val.classes == ["a", "b", "c"] and val.targets == [0, 2]


def test_greyscale_jpegs_are_converted_to_rgb(tmp_path: Path) -> None:
    make_imagefolder(tmp_path, ["a"], 1)
    write_image(tmp_path / "val" / "a" / "grey.jpg", (90,), mode="L")
    image, _ = build_dataset("imagenet", "val", data_root=tmp_path, transform=raw)[1]
    assert image.shape == (16, 16, 3) and abs(int(image[0, 0, 1]) - 90) <= 2


def test_imagefolder_path_uses_val_when_present_else_test(tmp_path: Path) -> None:
    with_test = make_imagefolder(tmp_path / "t", ["x", "y"], 1, splits=("train", "test"))
    with_val = make_imagefolder(tmp_path / "v", ["x", "y"], 1, splits=("train", "val"))
    assert get_spec(f"imagefolder:{with_test}").eval_split == "test"
    assert get_spec(f"imagefolder:{with_val}").eval_split == "val"
    ds = build_dataset(f"imagefolder:{with_test}", "test", image_size=32)
    assert len(ds) == 2 and ds[1][0].shape == (3, 32, 32) and ds.root == with_test


# --- iNaturalist and Places365 ----------------------------------------------------------------

def test_inat2021_reads_the_three_torchvision_split_folders(tmp_path: Path) -> None:
    root = make_inat(tmp_path, "2021", n_per_class=2)
    sizes = {split: len(build_dataset("inat2021", split, data_root=root)) for split in ("train", "train_mini", "val")}
    assert sizes == {"train": 6, "train_mini": 3, "val": 3}
    val = build_dataset("inat2021", "val", data_root=root, transform=raw)
    assert val.classes == INAT2021_CATEGORIES and val.targets == [0, 1, 2]
    assert np.abs(val[1][0][4, 4].astype(int) - class_color(1)).max() <= 3


def test_inat2018_splits_come_from_the_competition_json_files(tmp_path: Path) -> None:
    root = make_inat(tmp_path, "2018", n_per_class=2)
    train = build_dataset("inat2018", "train", data_root=root)
    val = build_dataset("inat2018", "val", data_root=root, transform=raw)
    assert (len(train), len(val)) == (6, 3) and train.targets == [0, 0, 1, 1, 2, 2]
    assert val.classes == [name for _, name in INAT2018_CATEGORIES]
    assert val.sample_names[2] == "val20f00d.jpg" and val[2][1] == 2


def test_inat2018_reads_the_official_train_val2018_folder_name_too(tmp_path: Path) -> None:
    root = make_inat(tmp_path, "2018")
    (root / "2018").rename(root / "train_val2018")
    assert len(build_dataset("inat2018", "val", data_root=root)) == 3


def test_places365_reads_category_and_split_lists(tmp_path: Path) -> None:
    root = make_places365(tmp_path, n_per_class=2)
    train = build_dataset("places365", "train", data_root=root, transform=raw)
    val = build_dataset("places365", "val", data_root=root, transform=raw)
    assert train.classes == PLACES365_CATEGORIES and train.targets == [0, 0, 1, 1, 2, 2]
    assert val.targets == [0, 1, 2] and val.sample_names[0] == "Places365_val_00000001.jpg"
    assert np.abs(train[3][0][0, 0].astype(int) - class_color(1)).max() <= 3


# --- roots ------------------------------------------------------------------------------------

def test_jepa_eval_data_names_a_folder_of_standard_dataset_folders(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    make_cifar10(tmp_path / "cifar10")
    make_imagefolder(tmp_path / "imagenet", ["n01", "n02"], 1)
    monkeypatch.setenv("JEPA_EVAL_DATA", str(tmp_path))
    assert build_dataset("cifar10", "test").root == tmp_path / "cifar10"
    assert build_dataset("imagenet", "val").root == tmp_path / "imagenet"


def test_jepa_eval_data_may_itself_hold_the_release_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_cifar10(tmp_path)
    monkeypatch.setenv("JEPA_EVAL_DATA", str(tmp_path))
    assert build_dataset("cifar10", "test").root == tmp_path


def test_data_root_may_be_the_dataset_folder_or_its_parent(tmp_path: Path) -> None:
    make_places365(tmp_path / "places365")
    assert build_dataset("places365", "val", data_root=tmp_path).root == tmp_path / "places365"
    assert build_dataset("places365", "val", data_root=tmp_path / "places365").root == tmp_path / "places365"


# --- malformed datasets: one paragraph naming the expected layout and what was found ----------

def test_no_root_at_all_says_how_to_give_one() -> None:
    with pytest.raises(JepaEvalError, match="no data folder.*JEPA_EVAL_DATA.*cifar-10-batches-py"):
        build_dataset("cifar10", "train")


def test_missing_dataset_names_the_layout_and_what_the_folder_holds(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(JepaEvalError) as info:
        build_dataset("imagenet", "train", data_root=tmp_path)
    message = str(info.value)
    assert "'imagenet' was not found" in message and "<root>/{train,val}/<class>/<image>" in message
    assert "notes.txt" in message and "\n" not in message


def test_missing_split_folder_lists_what_is_there(tmp_path: Path) -> None:
    make_imagefolder(tmp_path, ["a"], 1, splits=("train",))
    with pytest.raises(JepaEvalError, match="split 'val' is missing.*ImageFolder tree.*holds train/"):
        build_dataset("imagenet", "val", data_root=tmp_path)


def test_class_folder_without_images_is_named(tmp_path: Path) -> None:
    make_imagefolder(tmp_path, ["a", "b"], 1)
    (tmp_path / "train" / "c").mkdir()
    (tmp_path / "train" / "c" / "readme.txt").write_text("no images here")
    with pytest.raises(JepaEvalError, match="class folder 'c' .* holds no image.*readme.txt"):
        build_dataset("imagenet", "train", data_root=tmp_path)


def test_unsorted_imagenet_val_asks_for_wnid_folders(tmp_path: Path) -> None:
    make_imagefolder(tmp_path, ["n01"], 1, splits=("train",))
    write_image(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", (1, 2, 3))
    with pytest.raises(JepaEvalError, match="not sorted into one folder per class.*wnid folders"):
        build_dataset("imagenet", "val", data_root=tmp_path)


def test_eval_class_unknown_to_train_is_refused(tmp_path: Path) -> None:
    make_imagefolder(tmp_path, ["a"], 1, splits=("train",))
    make_imagefolder(tmp_path, ["a", "zebra"], 1, splits=("val",))
    with pytest.raises(JepaEvalError, match="class folders that .*train lacks.*zebra"):
        build_dataset("imagenet", "val", data_root=tmp_path)


@pytest.mark.parametrize("content, found", [(b"", "empty file"), (b"\xff\xd8\xff\xe0 not really", "Error")])
def test_corrupt_or_empty_image_fails_on_load_naming_the_file(tmp_path: Path, content: bytes, found: str) -> None:
    make_imagefolder(tmp_path, ["a"], 1)
    (tmp_path / "val" / "a" / "broken.jpg").write_bytes(content)
    ds = build_dataset("imagenet", "val", data_root=tmp_path)
    assert ds.sample_names == ["a_0.JPEG", "broken.jpg"]  # listed, never skipped
    ds[0]
    with pytest.raises(JepaEvalError, match=f"cannot read image .*broken.jpg.*{found}"):
        ds[1]


@pytest.mark.parametrize("entry", ["../../secret.jpg", "/a/../../x.jpg", "//etc/passwd"])
def test_list_file_paths_cannot_escape_the_dataset_folder(tmp_path: Path, entry: str) -> None:
    root = make_places365(tmp_path)
    (root / "places365_val.txt").write_text(f"{entry} 0\n")
    with pytest.raises(JepaEvalError, match="places365_val.txt lists a path outside the dataset folder"):
        build_dataset("places365", "val", data_root=root)


def test_places365_malformed_line_and_missing_image_folder_are_named(tmp_path: Path) -> None:
    root = make_places365(tmp_path)
    (root / "places365_val.txt").write_text("Places365_val_00000001.jpg\n")
    with pytest.raises(JepaEvalError, match="line 1 of .*places365_val.txt is malformed"):
        build_dataset("places365", "val", data_root=root)
    (root / "data_256_standard").rename(root / "elsewhere")
    with pytest.raises(JepaEvalError, match="image folder for split 'train' is missing.*data_256_standard"):
        build_dataset("places365", "train", data_root=root)


def test_inat2021_category_folder_with_a_wrong_name_is_named(tmp_path: Path) -> None:
    root = make_inat(tmp_path, "2021")
    write_image(root / "2021_valid" / "00003_Plantae_Rosa" / "x.jpg", (0, 0, 0))
    with pytest.raises(JepaEvalError, match="category folder '00003_Plantae_Rosa'.*00003_kingdom_phylum"):
        build_dataset("inat2021", "val", data_root=root)


def test_inat2018_without_its_annotation_file_names_the_layout(tmp_path: Path) -> None:
    root = make_inat(tmp_path, "2018")
    (root / "val2018.json").unlink()
    with pytest.raises(JepaEvalError, match="val2018.json is missing.*train2018.json and <root>/val2018.json"):
        build_dataset("inat2018", "val", data_root=root)


# --- shared archives ----------------------------------------------------------------------------

def _tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            source = path.parent / "member"
            source.write_bytes(data)
            tar.add(source, arcname=name)
    return path


def test_shared_archive_is_extracted_once_under_its_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tar(tmp_path / "shared" / "tiny.tar.gz", {"tiny/train/a/x.jpg": b"1", "tiny/val/a/y.jpg": b"2"})
    monkeypatch.setenv("JEPA_EVAL_SHARED", str(tmp_path / "shared"))
    root = extract_shared_archive("tiny", tmp_path / "cache")
    assert root is not None and root.name == "tiny" and (root / "val" / "a" / "y.jpg").read_bytes() == b"2"
    assert len(root.parent.name) == len("tiny-") + 12
    stamp = (root / "train" / "a" / "x.jpg").stat().st_mtime_ns
    assert extract_shared_archive("tiny", tmp_path / "cache") == root
    assert (root / "train" / "a" / "x.jpg").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [root.parent.name]
    assert extract_shared_archive("absent", tmp_path / "cache") is None


def test_shared_archive_with_an_escaping_member_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tar(tmp_path / "shared" / "evil.tar.gz", {"../outside.txt": b"x"})
    monkeypatch.setenv("JEPA_EVAL_SHARED", str(tmp_path / "shared"))
    with pytest.raises(JepaEvalError, match="unsafe member '../outside.txt'"):
        extract_shared_archive("evil", tmp_path / "cache")
    assert not (tmp_path / "outside.txt").exists() and list((tmp_path / "cache").iterdir()) == []


# --- real photographs ---------------------------------------------------------------------------

@pytest.mark.shared_data
def test_real_cifar10_jpegs_load_through_imagefolder(tmp_path: Path) -> None:
    archive = REAL_DATA / "cifar10-jpg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"real photographs not available: {archive} is absent")
    # the archive lists test/ first: take 3 photos of each class from it, 2 for train/ and 1 for test/
    taken: dict[str, int] = {}
    root = tmp_path / "cifar10"
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) > 1 and parts[1] != "test":
                break
            if member.isfile() and taken.get(parts[2], 0) < 3:
                taken[parts[2]] = taken.get(parts[2], 0) + 1
                split = "train" if taken[parts[2]] <= 2 else "test"
                (root / split / parts[2] / parts[3]).parent.mkdir(parents=True, exist_ok=True)
                (root / split / parts[2] / parts[3]).write_bytes(tar.extractfile(member).read())
    name = f"imagefolder:{root}"
    train = build_dataset(name, "train", image_size=32)
    test = build_dataset(name, get_spec(name).eval_split, transform=raw)
    assert train.classes == CIFAR10_CLASSES and (len(train), len(test)) == (20, 10)
    assert test.targets == list(range(10)) and train.sample_names[:2] == ["0000.jpg", "0001.jpg"]
    image, _ = test[0]
    assert image.shape == (32, 32, 3) and image.std() > 10  # a real photograph, not a flat fill
    tensor, label = train[19]
    assert tensor.shape == (3, 32, 32) and label == 9 and torch.isfinite(tensor).all()
    cifar = build_dataset("cifar10", "test", data_root=root, image_size=32)
    assert "ImageFolder" in cifar.layout and len(cifar) == 10
