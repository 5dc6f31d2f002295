"""Low-shot protocol: exact per-class sampling, subset files, and a logistic regression that
matches scikit-learn's, with C chosen without ever looking at the evaluation labels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.lowshot import (LowShotConfig, fit_logreg, lowshot_evaluate, sample_fraction, sample_shots, topk_accuracy, validation_split)

SMALL_GRID = (1e-3, 1e-1, 10.0)
#: Protocol tests check behaviour, not convergence: few L-BFGS iterations keep them fast.
FEW_ITERATIONS = 30


def labels_with_sizes(*sizes: int) -> np.ndarray:
    """Class c repeated sizes[c] times, shuffled so classes are interleaved."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    return np.random.default_rng(0).permutation(labels)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1797 x 64 pixels scaled to [0, 1], 10 classes): cheap real features."""
    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


def projected(x: np.ndarray, width: int, seed: int) -> np.ndarray:
    """A Gaussian random projection of ``x`` to ``width`` dimensions."""
    return x @ np.random.default_rng(seed).standard_normal((x.shape[1], width)) / np.sqrt(x.shape[1])


def test_sample_fraction_takes_the_rounded_fraction_of_every_class():
    labels = labels_with_sizes(10, 25, 7)
    picked = sample_fraction(labels, 0.5, seed=0)
    # 5, 12.5 -> 13 and 3.5 -> 4: halves round up.
    assert Counter(labels[picked].tolist()) == {0: 5, 1: 13, 2: 4}
    assert np.all(np.diff(picked) > 0)


def test_sampling_is_seeded():
    labels = labels_with_sizes(30, 30)
    assert np.array_equal(sample_fraction(labels, 0.2, 3), sample_fraction(labels, 0.2, 3))
    assert not np.array_equal(sample_fraction(labels, 0.2, 3), sample_fraction(labels, 0.2, 4))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_outside_zero_one_is_an_error(fraction):
    with pytest.raises(JepaEvalError, match="fraction"):
        sample_fraction(labels_with_sizes(10, 10), fraction, seed=0)


def test_fraction_that_leaves_a_class_empty_names_the_class_and_its_size():
    with pytest.raises(JepaEvalError, match="class 1: 2"):
        sample_fraction(labels_with_sizes(10, 2), 0.2, seed=0)


def test_sample_shots_takes_exactly_k_of_every_class():
    labels = labels_with_sizes(10, 25, 7)
    picked = sample_shots(labels, 5, seed=1)
    assert Counter(labels[picked].tolist()) == {0: 5, 1: 5, 2: 5}


def test_more_shots_than_a_class_has_is_an_error():
    with pytest.raises(JepaEvalError, match="class 2: 7"):
        sample_shots(labels_with_sizes(10, 25, 7), 8, seed=0)
    with pytest.raises(JepaEvalError, match="shots >= 1"):
        sample_shots(labels_with_sizes(10), 0, seed=0)


def test_validation_split_keeps_a_training_sample_in_every_class():
    labels = labels_with_sizes(1, 2, 10)
    train, val = validation_split(labels, 0.2, seed=0)
    assert Counter(labels[val].tolist()) == {1: 1, 2: 2}
    assert Counter(labels[train].tolist()) == {0: 1, 1: 1, 2: 8}
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(labels)


@pytest.mark.parametrize("C", [1e-2, 1.0])
@pytest.mark.parametrize("width", [None, 32])
def test_logistic_regression_matches_scikit_learn(digits, C, width):
    x, y = digits
    if width is not None:
        x = projected(x, width, seed=0)
    train, test = np.arange(0, 1797, 3), np.setdiff1d(np.arange(1797), np.arange(0, 1797, 3))
    reference = LogisticRegression(C=C, tol=1e-10, max_iter=5000).fit(x[train], y[train])
    ours = fit_logreg(torch.tensor(x[train]), torch.tensor(y[train]), C, 10, max_iter=500, tol=1e-8)

    ref_accuracy = 100 * np.mean(reference.predict(x[test]) == y[test])
    assert topk_accuracy(ours, torch.tensor(x[test]), torch.tensor(y[test]), 1) == pytest.approx(
        ref_accuracy, abs=0.5)
    logits = x[train] @ reference.coef_.T + reference.intercept_
    shifted = logits - logits.max(axis=1, keepdims=True)
    cross_entropy = -(shifted[np.arange(len(train)), y[train]] - np.log(np.exp(shifted).sum(1))).sum()
    ref_objective = cross_entropy + (reference.coef_ ** 2).sum() / (2 * C)
    assert ours.objective == pytest.approx(ref_objective, rel=1e-4)
    weight = ours.weight.numpy().T
    assert np.abs(weight - reference.coef_).max() <= 0.02 * np.abs(reference.coef_).max()
    # The intercept is defined up to a shift shared by all classes.
    bias = ours.bias.numpy() - ours.bias.numpy().mean()
    ref_bias = reference.intercept_ - reference.intercept_.mean()
    assert np.abs(bias - ref_bias).max() <= 0.02 * np.abs(ref_bias).max() + 1e-3


@pytest.mark.parametrize("C", [1e-2, 1.0])
def test_at_default_tolerances_accuracy_matches_scikit_learn_within_half_a_point(digits, C):
    x, y = digits
    train, test = np.arange(0, 1797, 3), np.setdiff1d(np.arange(1797), np.arange(0, 1797, 3))
    reference = LogisticRegression(C=C).fit(x[train], y[train])
    ours = fit_logreg(torch.tensor(x[train]), torch.tensor(y[train]), C, 10)
    ref_accuracy = 100 * np.mean(reference.predict(x[test]) == y[test])
    assert topk_accuracy(ours, torch.tensor(x[test]), torch.tensor(y[test]), 1) == pytest.approx(ref_accuracy, abs=0.5)


def test_warm_start_reaches_the_same_solution(digits):
    x, y = torch.tensor(digits[0][:300]), torch.tensor(digits[1][:300])
    cold = fit_logreg(x, y, 1e-2, 10, max_iter=300)
    warm = fit_logreg(x, y, 1e-2, 10, init=fit_logreg(x, y, 1e-3, 10, max_iter=300), max_iter=300)
    assert warm.objective == pytest.approx(cold.objective, rel=1e-6)


def test_choice_of_c_never_sees_the_evaluation_labels(digits):
    x, y = digits
    config = LowShotConfig(shots=(5,), seeds=2, Cs=SMALL_GRID, max_iter=FEW_ITERATIONS)
    honest = lowshot_evaluate(x[:1000], y[:1000], x[1000:], y[1000:], config, progress=False)
    scrambled = np.random.default_rng(0).permutation(y[1000:])
    blind = lowshot_evaluate(x[:1000], y[:1000], x[1000:], scrambled, config, progress=False)
    assert [m.coords["C"] for m in honest.metrics] == [m.coords["C"] for m in blind.metrics]
    assert honest.metrics[0].value > blind.metrics[0].value + 30


def test_lowshot_rows_carry_setting_seed_and_c_and_summaries_average_the_seeds(digits):
    x, y = digits
    config = LowShotConfig(fractions=(0.05,), shots=(3,), seeds=3, Cs=SMALL_GRID, max_iter=FEW_ITERATIONS)
    result = lowshot_evaluate(x[:1000], y[:1000], x[1000:], y[1000:], config, progress=False)
    top1 = [m for m in result.metrics if m.name == "top1"]
    assert [(m.coords.get("fraction"), m.coords.get("shots"), m.coords["seed"]) for m in top1] == [
        (0.05, None, 0), (0.05, None, 1), (0.05, None, 2), (None, 3, 0), (None, 3, 1), (None, 3, 2)]
    assert all(m.coords["C"] in SMALL_GRID for m in top1)
    assert len([m for m in result.metrics if m.name == "top5"]) == 6
    summary = {(m.name, tuple(m.coords.items())): m.value for m in result.summary}
    values = [m.value for m in top1[:3]]
    assert summary[("top1_mean", (("fraction", 0.05),))] == pytest.approx(np.mean(values))
    assert summary[("top1_std", (("fraction", 0.05),))] == pytest.approx(np.std(values, ddof=1))


def test_ten_shot_digits_are_mostly_recognised(digits):
    x, y = digits
    config = LowShotConfig(shots=(10,), seeds=1, Cs=SMALL_GRID, max_iter=FEW_ITERATIONS)
    result = lowshot_evaluate(x[:1000], y[:1000], x[1000:], y[1000:], config, progress=False)
    top1, top5 = result.metrics
    assert top1.value > 80 and top5.value > top1.value


def test_one_shot_uses_the_fallback_c(digits):
    x, y = digits
    config = LowShotConfig(shots=(1,), seeds=1, Cs=SMALL_GRID, fallback_C=0.5, max_iter=FEW_ITERATIONS)
    result = lowshot_evaluate(x[:1000], y[:1000], x[1000:], y[1000:], config, progress=False)
    assert result.metrics[0].coords["C"] == 0.5


def test_subset_runs_once_on_exactly_the_given_images(digits):
    x, y = digits
    subset = sample_shots(y[:1000], 4, seed=9)
    config = LowShotConfig(seeds=5, Cs=SMALL_GRID, max_iter=FEW_ITERATIONS, subset_file="4-shot.txt")
    result = lowshot_evaluate(x[:1000], y[:1000], x[1000:], y[1000:], config, subset_indices=subset,
                              progress=False)
    assert [(m.name, m.coords["subset"], m.coords["seed"]) for m in result.metrics] == [
        ("top1", "40 images", 0), ("top5", "40 images", 0)]


def test_top5_is_left_out_with_five_classes_or_fewer(digits):
    x, y = digits
    keep = y < 4
    config = LowShotConfig(shots=(5,), seeds=1, Cs=SMALL_GRID, max_iter=FEW_ITERATIONS)
    result = lowshot_evaluate(x[keep][:400], y[keep][:400], x[keep][400:], y[keep][400:], config,
                              progress=False)
    assert [m.name for m in result.metrics] == ["top1"]


def test_with_no_setting_given_the_protocol_takes_one_percent_of_the_labels():
    assert LowShotConfig().fractions == (0.01,)
    assert LowShotConfig(shots=(5,)).fractions == () and LowShotConfig(subset_file="1percent.txt").fractions == ()


def test_bad_inputs_are_errors(digits):
    x, y = digits
    with pytest.raises(JepaEvalError, match="different widths"):
        lowshot_evaluate(x, y, x[:, :10], y, LowShotConfig(shots=(1,)), progress=False)
    with pytest.raises(JepaEvalError, match="subset indices"):
        lowshot_evaluate(x, y, x, y, LowShotConfig(), subset_indices=np.array([5000]), progress=False)
    with pytest.raises(JepaEvalError, match="val_fraction"):
        LowShotConfig(val_fraction=1.0)
