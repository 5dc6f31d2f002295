"""Loading at the speed of the machine: the default data-loader workers, and the progress line and
feature metadata that say whether decoding or the model bounds an extraction."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset

from helpers_data import make_imagefolder
from helpers_features import NumberedImages, tiny_vit
from jepa_eval.data import build_dataset
from jepa_eval.features import extract
from jepa_eval.features.extract import MAX_AUTO_WORKERS, TINY_DATASET, auto_workers, extract_features


class SlowImages(NumberedImages):
    """:class:`NumberedImages` that take ``delay`` seconds each to 'decode'."""

    def __init__(self, n: int, delay: float) -> None:
        super().__init__(n)
        self.delay = delay

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        time.sleep(self.delay)
        return super().__getitem__(index)


class FileBacked(Dataset):
    """A dataset of ``n`` images said to be read from files (no ``in_memory``)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize("cores, expected", [(32, MAX_AUTO_WORKERS), (3, 3), (1, 1)])
def test_files_get_a_worker_per_available_core_up_to_the_cap(monkeypatch: pytest.MonkeyPatch, cores: int,
                                                            expected: int) -> None:
    monkeypatch.setattr(extract.os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert auto_workers(FileBacked(TINY_DATASET)) == expected
    assert auto_workers(Subset(FileBacked(10 * TINY_DATASET), range(TINY_DATASET))) == expected


def test_tiny_or_in_memory_datasets_are_decoded_in_the_main_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert auto_workers(FileBacked(TINY_DATASET - 1)) == 0
    digits = build_dataset("digits", "train")  # 1,437 images held in memory
    assert digits.in_memory and auto_workers(digits) == 0 and auto_workers(Subset(digits, range(600))) == 0


def test_workers_give_the_same_features_in_the_same_order(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "set", ["a", "b", "c"], n_per_class=6)
    data = build_dataset(f"imagefolder:{root}", "train", image_size=32)
    alone = extract_features(tiny_vit(), data, "avgpool", batch_size=4, num_workers=0, progress=False)
    shared = extract_features(tiny_vit(), data, "avgpool", batch_size=4, num_workers=2, progress=False)
    assert np.array_equal(alone.features, shared.features) and np.array_equal(alone.labels, shared.labels)
    assert (alone.meta["workers"], shared.meta["workers"]) == (0, 2)


def test_slow_decoding_is_reported_as_the_bound(capsys: pytest.CaptureFixture) -> None:
    result = extract_features(tiny_vit(), SlowImages(8, delay=0.03), "avgpool", batch_size=4, num_workers=0,
                              device="cpu", desc="slow images")
    assert result.meta["bound"] == "decode" and result.meta["waiting_s"] >= 8 * 0.03
    assert result.meta["waiting_s"] > result.meta["model_s"]
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("slow images: 100% (2/2 batch)") and "bound=decode (waiting for images" in last


def test_a_slow_model_is_reported_as_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = extract.embed

    def slow_embed(*args: object) -> torch.Tensor:
        time.sleep(0.05)
        return plain(*args)

    monkeypatch.setattr(extract, "embed", slow_embed)
    result = extract_features(tiny_vit(), NumberedImages(8), "avgpool", batch_size=4, num_workers=0, device="cpu",
                              progress=False)
    assert result.meta["bound"] == "model" and result.meta["model_s"] >= 2 * 0.05 > result.meta["waiting_s"]
