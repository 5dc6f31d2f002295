"""Input checks shared by every protocol, so that bad features fail the same way everywhere."""

from __future__ import annotations

from typing import Any

import numpy as np

from jepa_eval.core.errors import JepaEvalError


def _to_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, on any device
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def check_features(name: str, features: Any) -> np.ndarray:
    """Return ``features`` as a C-contiguous float32 array [N, D]; reject other shapes and NaN/Inf.

    ``name`` says which split the array is (e.g. 'train') in the error message.
    """
    array = _to_numpy(features)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise JepaEvalError(f"{name} features have the wrong shape",
                            expected="a non-empty 2-D array [samples, dimensions]",
                            found=f"shape {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.number):
        raise JepaEvalError(f"{name} features are not numbers",
                            expected="a float array",
                            found=f"dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise JepaEvalError(f"{name} features contain NaN or infinite values",
                            expected="finite numbers in every row",
                            found=f"{int((~finite).sum())} non-finite values in {bad_rows.size} "
                                  f"of {array.shape[0]} rows (first: row {int(bad_rows[0])})",
                            hint="re-extract the features; a backbone that overflows under bf16 "
                                 "autocast or a diverged checkpoint produces NaN")
    return array


def check_labels(name: str, labels: Any, num_samples: int) -> np.ndarray:
    """Return ``labels`` as int64 [N] non-negative class indices, N = ``num_samples``."""
    array = _to_numpy(labels)
    if array.ndim != 1 or array.shape[0] != num_samples:
        raise JepaEvalError(f"{name} labels do not match the {name} features",
                            expected=f"a 1-D array of {num_samples} labels, one per feature row",
                            found=f"shape {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.integer):
        raise JepaEvalError(f"{name} labels are not integers", expected="integer class indices",
                            found=f"dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise JepaEvalError(f"{name} labels contain negative values",
                            expected="class indices 0, 1, 2 ...",
                            found=f"minimum {int(array.min())}")
    return array.astype(np.int64)


def check_num_classes(num_classes: int | None, *labels: np.ndarray) -> int:
    """The number of classes: ``num_classes`` if given, else one more than the largest label.

    Raises :class:`JepaEvalError` when a label is not below ``num_classes``.
    """
    largest = max(int(y.max()) for y in labels if y.size)
    if num_classes is None:
        return largest + 1
    if largest >= num_classes:
        raise JepaEvalError("a label is out of range for the number of classes",
                            expected=f"labels below num_classes = {num_classes}",
                            found=f"label {largest}")
    return int(num_classes)


def check_split_pair(train_features: Any, train_labels: Any, eval_features: Any, eval_labels: Any = None,
                     eval_name: str = "eval") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Checked (train features [N, D], train labels [N], eval features [M, D], eval labels [M] or
    None): finite float32 features of one width, int64 labels that match them."""
    x_train = check_features("train", train_features)
    x_eval = check_features(eval_name, eval_features)
    if x_train.shape[1] != x_eval.shape[1]:
        raise JepaEvalError(f"train and {eval_name} features have different widths",
                            expected=f"{x_train.shape[1]} dimensions, as the train features",
                            found=f"{x_eval.shape[1]} dimensions")
    y_train = check_labels("train", train_labels, x_train.shape[0])
    y_eval = None if eval_labels is None else check_labels(eval_name, eval_labels, x_eval.shape[0])
    return x_train, y_train, x_eval, y_eval
