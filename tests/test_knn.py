"""Weighted k-NN (DINO's vote): known answers, backend agreement, and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.knn import (KNNConfig, knn_evaluate, knn_predict, knn_predict_torch,
                                     ranked_accuracy)


def clusters(seed: int, per_class: int, num_classes: int = 8, dim: int = 32,
             spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Points around ``num_classes`` far-apart random centres; label = centre index."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * 5.0
    labels = np.repeat(np.arange(num_classes), per_class)
    points = centres[labels] + spread * rng.normal(size=(labels.size, dim))
    return points.astype(np.float32), labels


def unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


# Query (1, 0). Class 0: one point at similarity 1. Class 1: two points at similarity
# cos(0.3) = 0.9553. Class 2: one point at similarity -1.
FOUR_POINTS = np.array([unit(0.0), unit(0.3), unit(-0.3), unit(math.pi)], dtype=np.float32)
FOUR_LABELS = np.array([0, 1, 1, 2])
QUERY = np.array([[1.0, 0.0]], dtype=np.float32)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_four_points_votes_are_weighted_by_exp_similarity_over_temperature(backend: str) -> None:
    # k=3 at T=0.07: class 1 gets 2*exp(0.9553/T), class 0 exp(1/T); exp(0.0447/0.07) = 1.89 < 2.
    warm = knn_predict(FOUR_POINTS, FOUR_LABELS, QUERY, KNNConfig(ks=(1, 3, 4), backend=backend))
    assert warm[1].tolist() == [[0, 1, 2]]  # one neighbour; classes 1 and 2 tie at 0
    assert warm[3].tolist() == [[1, 0, 2]]
    assert warm[4].tolist() == [[1, 0, 2]]  # class 2 adds exp(-1/T) > 0
    # At T=0.02 the nearest point dominates: exp(0.0447/0.02) = 9.3 > 2.
    cold = knn_predict(FOUR_POINTS, FOUR_LABELS, QUERY,
                       KNNConfig(ks=(3,), temperature=0.02, backend=backend))
    assert cold[3].tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_equal_vote_totals_go_to_the_lowest_class_index(backend: str) -> None:
    train = np.array([unit(0.4), unit(-0.4), unit(2.0)], dtype=np.float32)
    labels = np.array([4, 1, 3])  # two classes with exactly equal similarity to the query
    ranked = knn_predict(train, labels, QUERY, KNNConfig(ks=(2,), backend=backend), num_classes=6)
    assert ranked[2].tolist() == [[1, 4, 0, 2, 3]]  # then the zero-vote classes in index order


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faiss_and_torch_give_identical_predictions_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(1000, 32)).astype(np.float32)
    labels = rng.integers(0, 10, size=1000)
    test = rng.normal(size=(300, 32)).astype(np.float32)
    config = KNNConfig(ks=(1, 10, 20, 100, 200), batch_size=128)
    fast = knn_predict(train, labels, test, config)
    reference = knn_predict_torch(train, labels, test, config)
    assert fast.keys() == reference.keys() == {1, 10, 20, 100, 200}
    for k in fast:
        np.testing.assert_array_equal(fast[k], reference[k])


def test_faiss_and_torch_agree_on_separated_clusters_and_classify_them_perfectly() -> None:
    train, labels = clusters(0, per_class=50)
    test, test_labels = clusters(0, per_class=10)
    config = KNNConfig(ks=(10, 20, 100), batch_size=64)
    fast = knn_predict(train, labels, test, config)
    reference = knn_predict_torch(train, labels, test, config)
    for k in fast:
        np.testing.assert_array_equal(fast[k], reference[k])
        assert (fast[k][:, 0] == test_labels).all()


def test_query_chunk_size_does_not_change_predictions() -> None:
    rng = np.random.default_rng(3)
    train, labels = rng.normal(size=(400, 16)), rng.integers(0, 7, size=400)
    test = rng.normal(size=(101, 16))
    one_chunk = knn_predict(train, labels, test, KNNConfig(ks=(5, 50), batch_size=1000))
    many_chunks = knn_predict(train, labels, test, KNNConfig(ks=(5, 50), batch_size=7))
    for k in (5, 50):
        np.testing.assert_array_equal(one_chunk[k], many_chunks[k])


def test_rescaling_feature_rows_changes_nothing_because_features_are_normalised() -> None:
    rng = np.random.default_rng(4)
    train, labels = rng.normal(size=(300, 16)), rng.integers(0, 5, size=300)
    test = rng.normal(size=(50, 16))
    scales = rng.uniform(0.1, 10.0, size=(300, 1))
    config = KNNConfig(ks=(10,))
    np.testing.assert_array_equal(knn_predict(train, labels, test, config)[10],
                                  knn_predict(train * scales, labels, test * 3.0, config)[10])


def test_knn_evaluate_reports_top1_and_top5_percent_for_every_k() -> None:
    train, labels = clusters(1, per_class=30)
    test, test_labels = clusters(1, per_class=5)
    rows = knn_evaluate(torch.from_numpy(train), torch.from_numpy(labels), test, test_labels,
                        KNNConfig(ks=(20, 10)))
    assert [(m.name, m.coords) for m in rows] == [
        ("top1", {"k": 10}), ("top5", {"k": 10}), ("top1", {"k": 20}), ("top5", {"k": 20})]
    assert all(m.value == 100.0 for m in rows)


def test_knn_accuracy_on_wrong_labels_is_counted_in_percent() -> None:
    train, labels = clusters(2, per_class=20, num_classes=4)
    test, test_labels = clusters(2, per_class=5, num_classes=4)
    shifted = (test_labels + 1) % 4  # every prediction is now wrong at top-1
    rows = {m.name: m.value for m in knn_evaluate(train, labels, test, shifted, KNNConfig(ks=(5,)))}
    assert rows["top1"] == 0.0
    assert rows["top5"] == 100.0  # only 4 classes: top-5 covers them all


def test_ranked_accuracy_counts_top1_and_top5_hits() -> None:
    ranked = np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [1, 2, 3, 4, 5], [9, 8, 7, 6, 5]])
    labels = np.array([0, 9, 0, 9])
    assert ranked_accuracy(ranked, labels) == (50.0, 75.0)


def test_k_larger_than_the_training_set_is_an_error_naming_both_numbers() -> None:
    with pytest.raises(JepaEvalError, match=r"at most 4 .*k = 20"):
        knn_evaluate(FOUR_POINTS, FOUR_LABELS, QUERY, np.array([0]), KNNConfig(ks=(1, 20)))


@pytest.mark.parametrize("split", ["train", "test"])
def test_nan_features_are_an_error(split: str) -> None:
    train, test = FOUR_POINTS.copy(), QUERY.copy()
    (train if split == "train" else test)[0, 1] = np.nan
    with pytest.raises(JepaEvalError, match=f"{split} features contain NaN"):
        knn_evaluate(train, FOUR_LABELS, test, np.array([0]), KNNConfig(ks=(1,)))


def test_mismatched_shapes_and_bad_options_are_errors() -> None:
    with pytest.raises(JepaEvalError, match="train labels do not match"):
        knn_predict(FOUR_POINTS, FOUR_LABELS[:3], QUERY, KNNConfig(ks=(1,)))
    with pytest.raises(JepaEvalError, match="different widths"):
        knn_predict(FOUR_POINTS, FOUR_LABELS, np.ones((1, 3)), KNNConfig(ks=(1,)))
    with pytest.raises(JepaEvalError, match="out of range"):
        knn_predict(FOUR_POINTS, FOUR_LABELS, QUERY, KNNConfig(ks=(1,)), num_classes=2)
    with pytest.raises(JepaEvalError, match="unknown k-NN backend"):
        knn_predict(FOUR_POINTS, FOUR_LABELS, QUERY, KNNConfig(ks=(1,), backend="annoy"))
    with pytest.raises(JepaEvalError, match="temperature must be positive"):
        knn_predict(FOUR_POINTS, FOUR_LABELS, QUERY, KNNConfig(ks=(1,), temperature=0.0))
