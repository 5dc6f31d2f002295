"""Low-shot protocol: exact per-class sampling, subset files, and the shared logistic regression
(tests/test_logreg.py) with C chosen without ever looking at the evaluation labels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.lowshot import (LowShotConfig, evaluate, lowshot_evaluate, sample_fraction, sample_shots,
                                         validation_split)
from jepa_eval.protocols.registry import Inputs, Labelled

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


def test_a_rows_accuracy_is_scikit_learns_at_the_chosen_C_refit_on_the_low_shot_sample(digits):
    x, y = digits
    config = LowShotConfig(shots=(20,), seeds=1, Cs=SMALL_GRID)
    result = lowshot_evaluate(x[:1000], y[:1000], x[1000:], y[1000:], config, progress=False)
    top1 = next(m for m in result.metrics if m.name == "top1")
    sample = sample_shots(y[:1000], 20, seed=0)
    train, val = validation_split(y[:1000][sample], 0.2, seed=0)
    scores = {C: LogisticRegression(C=C).fit(x[sample][train], y[sample][train]).score(x[sample][val], y[sample][val])
              for C in SMALL_GRID}
    C = min(c for c, s in scores.items() if s == max(scores.values()))
    reference = LogisticRegression(C=C).fit(x[sample], y[sample])
    assert top1.coords["C"] == C
    assert top1.value == pytest.approx(100 * reference.score(x[1000:], y[1000:]), abs=0.5)


def test_rows_record_each_fits_iterations_and_convergence_and_the_summary_counts_them(digits):
    x, y = digits
    inputs = Inputs(train=Labelled(x[:1000], y[:1000]), eval=Labelled(x[1000:], y[1000:]), num_classes=10,
                    device="cpu", progress=False)
    capped = evaluate(inputs, LowShotConfig(shots=(5,), seeds=2, Cs=SMALL_GRID, max_iter=1))
    converged = [m for m in capped.metrics if m.name == "converged"]
    assert [m.value for m in converged] == [0.0, 0.0]  # one iteration cannot meet tol 1e-4
    assert [m.value for m in capped.metrics if m.name == "iterations"] == [1.0, 1.0]
    assert capped.summary["solver"] == "lbfgs" and capped.summary["fits_not_converged"] == 2
    loose = evaluate(inputs, LowShotConfig(shots=(5,), seeds=2, Cs=SMALL_GRID))
    assert loose.summary["fits_not_converged"] == 0 and loose.summary["fits"] == 2
    assert 1 <= loose.summary["iterations_max"] < 200


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
    assert {m.name for m in result.summary} == {"top1_mean", "top1_std", "top5_mean", "top5_std"}
    summary = {(m.name, tuple(m.coords.items())): m.value for m in result.summary}
    values = [m.value for m in top1[:3]]
    assert summary[("top1_mean", (("fraction", 0.05),))] == pytest.approx(np.mean(values))
    assert summary[("top1_std", (("fraction", 0.05),))] == pytest.approx(np.std(values, ddof=1))


def test_ten_shot_digits_are_mostly_recognised(digits):
    x, y = digits
    config = LowShotConfig(shots=(10,), seeds=1, Cs=SMALL_GRID, max_iter=FEW_ITERATIONS)
    result = lowshot_evaluate(x[:1000], y[:1000], x[1000:], y[1000:], config, progress=False)
    top1, top5 = result.metrics[:2]
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
        ("top1", "40 images", 0), ("top5", "40 images", 0), ("iterations", "40 images", 0),
        ("converged", "40 images", 0), ("untried_Cs", "40 images", 0)]


def test_top5_is_left_out_with_five_classes_or_fewer(digits):
    x, y = digits
    keep = y < 4
    config = LowShotConfig(shots=(5,), seeds=1, Cs=SMALL_GRID, max_iter=FEW_ITERATIONS)
    result = lowshot_evaluate(x[keep][:400], y[keep][:400], x[keep][400:], y[keep][400:], config,
                              progress=False)
    assert [m.name for m in result.metrics] == ["top1", "iterations", "converged", "untried_Cs"]


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


def test_the_summary_counts_the_draws_whose_choice_of_C_a_loose_tol_left_unresolved(digits):
    """At tol 1e-4 the larger C of a weak-regularisation grid can start at the chosen fit and stay
    there (0 iterations), leaving that draw's choice unresolved; at 1e-8 every fit moves."""
    x, y = digits
    inputs = Inputs(train=Labelled(x[:1000], y[:1000]), eval=Labelled(x[1000:], y[1000:]), num_classes=10,
                    device="cpu", progress=False)
    weak = dict(fractions=(0.5,), seeds=2, Cs=(100.0, 1e3, 1e4, 1e5), max_iter=5000)
    loose = evaluate(inputs, LowShotConfig(**weak, tol=1e-4))
    untried = [m for m in loose.metrics if m.name == "untried_Cs"]
    left = [m for m in untried if m.value > 0]
    assert len(untried) == 2 and loose.summary["choices_unresolved"] == len(left) >= 1
    assert all(m.value == sum(C > m.coords["C"] for C in weak["Cs"]) for m in left)  # a run to the grid's top
    tight = evaluate(inputs, LowShotConfig(**weak, tol=1e-8))
    assert tight.summary["choices_unresolved"] == 0
