"""The logistic-regression solver minimises exactly scikit-learn's objective, with its stopping
rule, whichever basis and precision it works in, and chooses C as the full grid would."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.logreg import (RowBasis, _search, fit_logreg, mean_cross_entropy, row_basis, select_C,
                                        solver_bytes, topk_accuracy)
from jepa_eval.protocols.lowshot import validation_split

TIGHT = 1e-9  # our tolerance where a test needs the minimiser itself


# ---------------------------------------------------------------------------------------------
# Independent reference computations (numpy, float64, feature coordinates)


def objective(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray, C: float) -> float:
    """``sum_i CE(x_i W + b, y_i) + ||W||^2 / (2C)``; ``weight [D, K]``."""
    logits = x @ weight + bias
    return float((logsumexp(logits, axis=1) - logits[np.arange(len(y)), y]).sum()
                 + (weight ** 2).sum() / (2 * C))


def max_mean_gradient(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray, C: float) -> float:
    """Largest entry of the gradient of objective / N over W and b (scikit-learn's ``tol`` test)."""
    residual = softmax(x @ weight + bias, axis=1)
    residual[np.arange(len(y)), y] -= 1
    grad_w = (x.T @ residual + weight / C) / len(y)
    return max(np.abs(grad_w).max(), np.abs(residual.sum(0) / len(y)).max())


def sklearn_fit(x: np.ndarray, y: np.ndarray, C: float) -> LogisticRegression:
    return LogisticRegression(C=C, tol=1e-10, max_iter=20_000).fit(x, y)


def fit(x: np.ndarray, y: np.ndarray, C: float, **options):
    return fit_logreg(torch.from_numpy(x), torch.from_numpy(y), C, int(y.max()) + 1, **options)


def ours_objective(model, x: np.ndarray, y: np.ndarray) -> float:
    return objective(model.weight.double().numpy(), model.bias.double().numpy(), x, y, model.C)


# ---------------------------------------------------------------------------------------------
# Problems


def clustered(classes: int, per_class: int, dim: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` Gaussian rows around each of ``classes`` random centres (class-sorted)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    y = np.repeat(np.arange(classes), per_class)
    return centres[y] + spread * rng.standard_normal((y.size, dim)), y


@pytest.fixture(scope="module")
def cifar_pixels(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """60 CIFAR-10 training photos a class as raw pixels in [0, 1], 8x8x3 (192 dims), class-sorted."""
    archive = shared_data / "cifar10-jpg.tar.gz"
    from PIL import Image
    per_class = 60
    rows: dict[str, list[np.ndarray]] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) == 4 and parts[1] == "train" and member.isfile():
                images = rows.setdefault(parts[2], [])
                if len(images) < per_class:
                    pixels = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB"))
                    images.append(pixels[::4, ::4].reshape(-1) / 255.0)
    names = sorted(rows)
    return np.concatenate([np.stack(rows[n]) for n in names]), np.repeat(np.arange(len(names)), per_class)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


def problem(name: str, digits, request) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, x_heldout, y_heldout)`` of a named problem."""
    if name == "digits N>D":  # 600 x 64, 10 classes
        x, y = digits
        return x[:600], y[:600], x[600:1000], y[600:1000]
    if name == "pixels N>D":  # 300 x 192 CIFAR-10 pixels: a full eigenbasis
        x, y = request.getfixturevalue("cifar_pixels")
        train = np.arange(len(y)) % 2 == 0
        return x[train], y[train], x[~train], y[~train]
    if name == "pixels N<D":  # 50 x 192: a rank-49 SVD basis
        x, y = request.getfixturevalue("cifar_pixels")
        train = np.arange(len(y)) % 12 == 0
        return x[train], y[train], x[~train][:200], y[~train][:200]
    if name == "3 classes N<D":
        x, y = clustered(3, 40, 300, 4.0, seed=1)
        return x[::2], y[::2], x[1::2], y[1::2]
    if name == "40 classes":  # 320 x 30
        x, y = clustered(40, 16, 30, 1.0, seed=2)
        return x[::2], y[::2], x[1::2], y[1::2]
    raise ValueError(name)


PROBLEMS = ["digits N>D", "pixels N>D", "pixels N<D", "3 classes N<D", "40 classes"]


# ---------------------------------------------------------------------------------------------
# The objective and its minimiser


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("C", [1e-2, 1.0])
def test_minimum_equals_scikit_learns_and_predictions_agree(name, C, digits, request):
    x, y, x_out, y_out = problem(name, digits, request)
    reference = sklearn_fit(x, y, C)
    ours = fit(x, y, C, tol=TIGHT, max_iter=5000)
    ref_objective = objective(reference.coef_.T, reference.intercept_, x, y, C)
    assert ours.converged
    assert ours_objective(ours, x, y) == pytest.approx(ref_objective, rel=1e-6)
    assert ours.objective == pytest.approx(ours_objective(ours, x, y), rel=1e-12)
    predicted = (x_out @ ours.weight.numpy() + ours.bias.numpy()).argmax(1)
    assert np.mean(predicted == reference.predict(x_out)) >= 0.99


def test_two_classes_solve_scikit_learns_binomial_problem_at_twice_C(digits):
    x, y = digits
    keep = y < 2
    x, y = x[keep][:200], y[keep][:200]
    binomial = LogisticRegression(C=2 * 0.05, tol=1e-10, max_iter=20_000).fit(x, y)
    ours = fit(x, y, 0.05, tol=TIGHT, max_iter=5000)
    direction = ours.weight[:, 1] - ours.weight[:, 0]
    assert np.allclose(direction.numpy(), binomial.coef_[0], rtol=0, atol=1e-5 * np.abs(binomial.coef_).max())


@pytest.mark.parametrize("name", ["digits N>D", "3 classes N<D", "pixels N<D"])
def test_row_space_basis_gives_the_same_minimiser_as_feature_coordinates(name, digits, request):
    x, y, _, _ = problem(name, digits, request)
    xt = torch.from_numpy(x)
    identity = RowBasis(xt.mean(0), torch.eye(x.shape[1], dtype=torch.float64))
    reduced = row_basis(xt)
    assert reduced.vectors.shape[1] == (min(len(y) - 1, x.shape[1]) if name != "digits N>D" else x.shape[1])
    direct = fit(x, y, 0.1, tol=TIGHT, max_iter=20_000, basis=identity, dtype=torch.float64)
    ours = fit(x, y, 0.1, tol=TIGHT, max_iter=5000, basis=reduced)
    assert ours.objective == pytest.approx(direct.objective, rel=1e-9)
    scale = direct.weight.abs().max()
    assert (ours.weight - direct.weight).abs().max() <= 1e-5 * scale
    # The intercept is defined up to one shift shared by all classes.
    assert torch.allclose(ours.bias - ours.bias.mean(), direct.bias - direct.bias.mean(), atol=1e-5 * scale)


def test_a_basis_that_misses_part_of_the_rows_is_an_error():
    x, y = clustered(3, 10, 50, 1.0, seed=0)
    partial = row_basis(torch.from_numpy(x[:10]))
    with pytest.raises(JepaEvalError, match="does not span"):
        fit(x, y, 1.0, basis=partial)


def test_stops_by_scikit_learns_rule_largest_mean_gradient_below_tol(digits):
    x, y, _, _ = problem("digits N>D", digits, None)
    loose = fit(x, y, 1.0, tol=1e-3)
    tight = fit(x, y, 1.0, tol=1e-6)
    assert max_mean_gradient(loose.weight.numpy(), loose.bias.numpy(), x, y, 1.0) < 1e-3
    assert max_mean_gradient(tight.weight.numpy(), tight.bias.numpy(), x, y, 1.0) < 1e-6
    assert loose.iterations < tight.iterations
    capped = fit(x, y, 1.0, tol=1e-12, max_iter=3)
    assert capped.iterations == 3 and not capped.converged


def test_a_warm_start_at_the_solution_needs_no_iteration(digits):
    x, y, _, _ = problem("digits N>D", digits, None)
    first = fit(x, y, 1.0, tol=1e-6)
    again = fit(x, y, 1.0, tol=1e-6, init=first)
    assert again.iterations == 0
    # the same weights; their objective is recomputed after a round trip through the row basis,
    # which moves float64 rounding (measured 1.4e-12 relative with torch 2.14.1's PyPI build)
    assert again.objective == pytest.approx(first.objective, rel=1e-10)


# ---------------------------------------------------------------------------------------------
# float32


@pytest.mark.parametrize("name", ["digits N>D", "pixels N>D", "40 classes"])
@pytest.mark.parametrize("C", [1e-2, 1.0])
def test_float32_result_meets_the_float64_rule_and_objective(name, C, digits, request):
    x, y, _, _ = problem(name, digits, request)
    single = fit(x, y, C, tol=1e-4)
    double = fit(x, y, C, tol=1e-4, dtype=torch.float64)
    assert single.precision == "float32" and single.converged
    assert max_mean_gradient(single.weight.numpy(), single.bias.numpy(), x, y, C) < 1e-4
    assert single.objective == pytest.approx(double.objective, rel=1e-6)


def test_float32_falls_back_to_float64_when_the_tolerance_is_below_its_noise(digits):
    x, y, _, _ = problem("digits N>D", digits, None)
    single = fit(x, y, 1.0, tol=1e-9, max_iter=2000)
    double = fit(x, y, 1.0, tol=1e-9, max_iter=2000, dtype=torch.float64)
    assert single.precision == "float64" and single.converged
    assert single.objective == pytest.approx(double.objective, rel=1e-10)


# ---------------------------------------------------------------------------------------------
# Choosing C


def test_select_C_scores_each_C_on_the_validation_split_and_refits_the_best(digits):
    x, y, _, _ = problem("digits N>D", digits, None)
    grid = (1e-4, 1e-2, 1.0, 100.0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    train, val = validation_split(y, 0.2, seed=3)
    chosen = select_C(xt, yt, 10, grid, split=(train, val))
    assert list(chosen.scores) == list(grid)
    for model, score in zip(chosen.path, chosen.scores.values()):
        predicted = (x[val] @ model.weight.numpy() + model.bias.numpy()).argmax(1)
        assert score == pytest.approx(100 * np.mean(predicted == y[val]))
        assert max_mean_gradient(model.weight.numpy(), model.bias.numpy(), x[train], y[train], model.C) < 1e-4
    best = max(chosen.scores.values())
    assert chosen.C == min(C for C, s in chosen.scores.items() if s == best)
    assert chosen.model.C == chosen.C
    assert max_mean_gradient(chosen.model.weight.numpy(), chosen.model.bias.numpy(), x, y, chosen.C) < 1e-4


def test_ties_go_to_the_smallest_C():
    # Two separated clusters: every C classifies the validation rows perfectly.
    x, y = clustered(2, 20, 5, 0.01, seed=0)
    chosen = select_C(torch.from_numpy(x), torch.from_numpy(y), 2, (0.1, 1.0, 10.0), split=validation_split(y, 0.2, 0))
    assert set(chosen.scores.values()) == {100.0}
    assert chosen.C == 0.1


def test_without_validation_samples_the_fallback_C_is_fitted_on_all_rows():
    x, y = clustered(4, 1, 20, 1.0, seed=0)  # one shot a class
    chosen = select_C(torch.from_numpy(x), torch.from_numpy(y), 4, split=validation_split(y, 0.2, 0), fallback_C=0.5,
                      tol=1e-8)
    direct = fit(x, y, 0.5, tol=1e-8)
    assert chosen.C == 0.5 and chosen.scores == {} and chosen.path == []
    assert chosen.model.objective == pytest.approx(direct.objective, rel=1e-9)


def test_coarse_search_fits_every_other_C_then_the_neighbours_of_the_best():
    peaked = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0]  # best at index 10
    fitted = _search(23, "coarse", lambda i: peaked[i])
    assert list(fitted) == sorted(set(range(0, 23, 2)) | {9, 11})
    assert list(_search(23, "grid", lambda i: peaked[i])) == list(range(23))


@pytest.mark.parametrize("name", PROBLEMS)
def test_coarse_to_fine_search_chooses_the_same_C_as_the_full_grid(name, digits, request):
    """At tol 1e-6. At the default 1e-4 the large-C fits are not pinned down by the objective
    (a fit's warm start decides which point within the tolerance it returns), so the two
    searches, which warm-start differently, can score the same C differently."""
    x, y, _, _ = problem(name, digits, request)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    classes = int(y.max()) + 1
    split = validation_split(y, 0.2, 0)
    full = select_C(xt, yt, classes, split=split, tol=1e-6)
    coarse = select_C(xt, yt, classes, split=split, search="coarse", tol=1e-6)
    assert coarse.C == full.C


def test_without_refit_the_chosen_fit_on_the_fitted_rows_is_returned(digits):
    x, y, _, _ = problem("digits N>D", digits, None)
    split = (np.arange(400), np.arange(400, 600))  # e.g. training rows, then evaluation rows to choose on
    chosen = select_C(torch.from_numpy(x), torch.from_numpy(y), 10, (1e-3, 1e-1, 10.0), split=split, refit=False)
    assert chosen.model is chosen.path[list(chosen.scores).index(chosen.C)]
    assert max_mean_gradient(chosen.model.weight.numpy(), chosen.model.bias.numpy(), x[:400], y[:400],
                             chosen.C) < 1e-4


# ---------------------------------------------------------------------------------------------
# Prediction, loss and memory


def test_top_k_accuracy_and_mean_cross_entropy_are_the_models_on_these_rows(digits):
    x, y, x_out, y_out = problem("digits N>D", digits, None)
    model = fit(x, y, 0.1)
    logits = x_out @ model.weight.numpy() + model.bias.numpy()
    ranked = np.argsort(-logits, axis=1)
    assert topk_accuracy(model, torch.from_numpy(x_out), torch.from_numpy(y_out), 1) == pytest.approx(
        100 * np.mean(ranked[:, 0] == y_out))
    assert topk_accuracy(model, torch.from_numpy(x_out), torch.from_numpy(y_out), 3) == pytest.approx(
        100 * np.mean((ranked[:, :3] == y_out[:, None]).any(1)))
    expected = np.mean(logsumexp(logits, axis=1) - logits[np.arange(y_out.size), y_out])
    assert mean_cross_entropy(model, torch.from_numpy(x_out), torch.from_numpy(y_out)) == pytest.approx(expected)


def test_memory_estimate_counts_rows_times_the_basis_rank():
    assert solver_bytes(50_000, 768) == 50_000 * 768 * 40  # N > D: a full basis of D directions
    assert solver_bytes(1_000, 3_072) == 1_000 * 1_000 * 40  # N < D: at most N directions


# ---------------------------------------------------------------------------------------------
# Input errors


def test_bad_C_and_labels_are_errors():
    x, y = clustered(3, 5, 4, 1.0, seed=0)
    with pytest.raises(JepaEvalError, match="positive"):
        fit(x, y, 0.0)
    with pytest.raises(JepaEvalError, match="out of range"):
        fit_logreg(torch.from_numpy(x), torch.from_numpy(y), 1.0, 2)
    with pytest.raises(JepaEvalError, match="search"):
        select_C(torch.from_numpy(x), torch.from_numpy(y), 3, split=validation_split(y, 0.2, 0), search="bisect")


def test_a_C_path_that_stays_at_W_zero_is_exact_so_no_value_of_C_counts_as_unmoved():
    """Every class holds the same fitted rows, so the gradient at W = 0 vanishes for every C: all
    fits take 0 iterations and none is a warm start left behind (C does not change it)."""
    rows = np.random.default_rng(0).normal(size=(20, 5))
    x = torch.from_numpy(np.tile(rows, (3, 1)))
    y = torch.arange(3).repeat_interleave(20)
    fit = np.concatenate([np.arange(15) + 20 * k for k in range(3)])
    val = np.setdiff1d(np.arange(60), fit)
    chosen = select_C(x, y, 3, (0.1, 1.0, 10.0), split=(fit, val), refit=False)
    assert [m.iterations for m in chosen.path] == [0, 0, 0] and not chosen.model.weight.any()
    assert chosen.unmoved == [] and chosen.untried == []
