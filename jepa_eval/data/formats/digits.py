"""scikit-learn's bundled 8x8 digits: the embedded default dataset (no files, no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jepa_eval.data.dataset import Samples
from jepa_eval.data.registry import DatasetSpec, register_dataset

DIGITS_TEST_SIZE = 360


def read_digits(split: str) -> Samples:
    """scikit-learn's 1,797 8x8 digits as uint8 RGB [N, 8, 8, 3] (0..16 scaled to 0..255).

    A stratified split with seed 0: train 1,437, test 360. Sample names are the indices in
    scikit-learn's order.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    order = np.arange(len(digits.target))
    train, test = train_test_split(order, test_size=DIGITS_TEST_SIZE, stratify=digits.target, random_state=0)
    chosen = np.sort(train if split == "train" else test)
    grey = np.rint(digits.images[chosen] * (255.0 / 16.0)).astype(np.uint8)
    images = np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1))
    return Samples([str(d) for d in range(10)], digits.target[chosen].tolist(), [str(i) for i in chosen],
                   "scikit-learn load_digits (bundled)", images=images)


def _sklearn_data_root() -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "data"


register_dataset(DatasetSpec(
    "digits", ("train", "test"), "train", "test", "",
    "scikit-learn's bundled 8x8 digits (no files needed): 1,797 images, stratified split "
    "with seed 0 into train 1,437 / test 360", straight_resize=True,
    read=lambda root, split, layout: read_digits(split), embedded_root=_sklearn_data_root))
