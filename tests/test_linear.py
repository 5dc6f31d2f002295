"""Linear probe: an exact logistic regression or a grid of SGD heads, on standardised features,
chosen on held-out data and reported on eval; the grid converges (a step floor) and widens past
an edge its choice sits at."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.linear import (LinearConfig, _edges, budget, evaluate, fit_standardizer, head_scores,
                                        linear_probe, stratified_split, train_heads)
from jepa_eval.protocols.registry import Inputs, Labelled

SGD = dict(solver="sgd", min_steps=0)
SMALL = dict(learning_rates=(0.01, 0.1), weight_decays=(0.0,), batchnorm=(False, True), epochs=10, batch_size=32,
             **SGD)
FEW_CS = (1e-3, 1e-1, 10.0)


def blobs(seed: int, per_class: int, num_classes: int = 4, dim: int = 16, spread: float = 1.0,
          offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around far-apart centres (label = centre), shifted by ``offset``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * 4.0
    labels = np.repeat(np.arange(num_classes), per_class)
    points = centres[labels] + spread * rng.normal(size=(labels.size, dim)) + offset
    return points.astype(np.float32), labels


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits: 1,797 x 64 real features, 10 classes."""
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y


def top(result, name: str) -> float:
    return next(m.value for m in result.metrics if m.name == name)


# ---------------------------------------------------------------------------------------------
# Both solvers


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_separable_blobs_are_classified_perfectly(solver: str) -> None:
    x, y = blobs(0, per_class=60)
    x_eval, y_eval = blobs(0, per_class=20)
    result = linear_probe(x, y, x_eval, y_eval, LinearConfig(**{**SMALL, "solver": solver}, Cs=FEW_CS),
                          progress=False)
    assert result.solver == solver
    assert top(result, "top1") == 100.0 and top(result, "top5") == 100.0
    assert result.chosen["val_top1"] == 100.0 and result.selected_on == "val"
    assert result.sizes["fit"] == 216 and result.sizes["select"] == 24  # 10% of each class held out


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_the_choice_never_looks_at_evaluation_labels(solver: str, digits) -> None:
    x, y = digits
    config = LinearConfig(learning_rates=(1e-4, 1e-2, 1.0), weight_decays=(0.0,), batchnorm=(False, True),
                          epochs=2, batch_size=32, solver=solver, min_steps=0, max_widenings=0, Cs=(1e-4, 1e-2, 1.0))
    scrambled_labels = np.random.default_rng(0).permutation(y[600:900])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        honest = linear_probe(x[:600], y[:600], x[600:900], y[600:900], config, progress=False)
        scrambled = linear_probe(x[:600], y[:600], x[600:900], scrambled_labels, config, progress=False)
    assert scrambled.chosen == honest.chosen and scrambled.grid == honest.grid
    assert len({g["val_top1"] for g in honest.grid}) > 1  # the candidates really differ


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_select_on_eval_fits_on_all_of_train_and_chooses_by_the_reported_split(solver: str) -> None:
    x, y = blobs(6, per_class=30, spread=4.0)
    x_eval, y_eval = blobs(7, per_class=10, spread=4.0)
    config = LinearConfig(learning_rates=(1e-4, 1e-2, 1.0), weight_decays=(0.0,), batchnorm=(False,),
                          epochs=2, batch_size=32, select_on="eval", solver=solver, min_steps=0, max_widenings=0,
                          Cs=FEW_CS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = linear_probe(x, y, x_eval, y_eval, config, progress=False)
    assert result.selected_on == "eval"
    assert result.sizes["fit"] == 120 and result.sizes["select"] == 40 and result.sizes["eval"] == 40
    assert top(result, "top1") == result.chosen["val_top1"] == max(g["val_top1"] for g in result.grid)


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_features_are_standardised_with_the_training_splits_statistics(solver: str) -> None:
    x, y = blobs(13, per_class=30, spread=3.0)
    x = x * np.linspace(0.1, 20.0, x.shape[1], dtype=np.float32)  # very different scales
    x_eval, y_eval = blobs(14, per_class=10, spread=3.0, offset=2.0)  # its own mean is not train's
    x_eval = x_eval * np.linspace(0.1, 20.0, x.shape[1], dtype=np.float32)
    config = LinearConfig(**{**SMALL, "solver": solver}, Cs=FEW_CS)
    inside = linear_probe(x, y, x_eval, y_eval, config, progress=False)
    mean, std = x.astype(np.float64).mean(0), x.astype(np.float64).std(0)
    by_hand = linear_probe(((x - mean) / std).astype(np.float32), y, ((x_eval - mean) / std).astype(np.float32),
                           y_eval, replace(config, standardize=False), progress=False)
    assert [(m.name, m.coords) for m in inside.metrics] == [(m.name, m.coords) for m in by_hand.metrics]
    np.testing.assert_allclose([m.value for m in inside.metrics], [m.value for m in by_hand.metrics], atol=1e-3)
    raw = linear_probe(x, y, x_eval, y_eval, replace(config, standardize=False), progress=False)
    assert [m.value for m in raw.metrics] != [m.value for m in inside.metrics]  # standardising changed the fit


def test_the_standardizer_holds_train_statistics_and_maps_constant_dims_to_zero() -> None:
    rng = np.random.default_rng(0)
    train = torch.from_numpy(np.c_[rng.normal(3.0, 2.0, (50, 3)), np.full((50, 1), 7.0)])
    other = torch.from_numpy(np.c_[rng.normal(3.0, 2.0, (5, 3)), np.full((5, 1), 9.0)])
    standardizer = fit_standardizer(train)
    scaled = standardizer(train)
    assert torch.allclose(scaled.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(scaled[:, :3].std(0, correction=0), torch.ones(3, dtype=torch.float64))
    assert torch.all(scaled[:, 3] == 0)
    expected = (other[:, :3] - train[:, :3].mean(0)) / train[:, :3].std(0, correction=0)
    assert torch.allclose(standardizer(other)[:, :3], expected)
    assert torch.all(standardizer(other)[:, 3] == 2.0)


def test_top5_is_at_least_top1_and_covers_all_of_fewer_than_five_classes() -> None:
    x, y = blobs(8, per_class=20, num_classes=8, spread=8.0)
    config = LinearConfig(learning_rates=(1e-3,), weight_decays=(0.0,), batchnorm=(False,),
                          epochs=1, batch_size=32, **SGD)
    many = linear_probe(x, y, x, y, config, progress=False)
    assert top(many, "top5") >= top(many, "top1")
    x3, y3 = blobs(9, per_class=20, num_classes=3, spread=8.0)
    assert top(linear_probe(x3, y3, x3, y3, config, progress=False), "top5") == 100.0


def test_the_same_seed_gives_the_same_result_and_another_seed_another_split() -> None:
    x, y = blobs(11, per_class=30, spread=4.0)
    config = LinearConfig(learning_rates=(1e-2, 1e-1), weight_decays=(0.0,), batchnorm=(False,),
                          epochs=2, batch_size=16, **SGD)
    assert linear_probe(x, y, x, y, config, progress=False) == linear_probe(x, y, x, y, config, progress=False)
    assert not np.array_equal(stratified_split(y, 0.1, 0)[1], stratified_split(y, 0.1, 1)[1])


def test_stratified_split_holds_out_the_fraction_of_every_class() -> None:
    labels = np.repeat(np.arange(5), [20, 20, 10, 30, 1])
    fit, held = stratified_split(labels, 0.1, seed=0)
    assert np.bincount(labels[held], minlength=5).tolist() == [2, 2, 1, 3, 0]
    assert np.intersect1d(fit, held).size == 0
    assert np.union1d(fit, held).tolist() == list(range(labels.size))
    np.testing.assert_array_equal(held, stratified_split(labels, 0.1, seed=0)[1])


# ---------------------------------------------------------------------------------------------
# Exact logistic regression


def test_lbfgs_is_scikit_learns_regression_on_standardised_features_with_C_chosen_on_held_out_train(digits):
    x, y = digits
    train, test = np.arange(0, 1797, 2), np.arange(1, 1797, 2)
    config = LinearConfig(solver="lbfgs", Cs=(1e-3, 1e-2, 1e-1, 1.0), tol=1e-8, max_iter=5000)
    ours = linear_probe(x[train], y[train], x[test], y[test], config, progress=False)
    scaler = StandardScaler().fit(x[train])
    xs, xs_test, ys = scaler.transform(x[train]), scaler.transform(x[test]), y[train]
    fit, held = stratified_split(ys, 0.1, seed=0)
    scores = {C: 100 * LogisticRegression(C=C, tol=1e-10, max_iter=20_000).fit(xs[fit], ys[fit]).score(
        xs[held], ys[held]) for C in config.Cs}
    C = min(c for c, s in scores.items() if s == max(scores.values()))
    reference = LogisticRegression(C=C, tol=1e-10, max_iter=20_000).fit(xs, ys)
    assert ours.chosen["C"] == C
    assert {g["C"]: g["val_top1"] for g in ours.grid} == pytest.approx(scores, abs=1e-9)
    assert top(ours, "top1") == pytest.approx(100 * reference.score(xs_test, y[test]), abs=0.15)  # 1 of 898 images
    assert ours.sizes == {"fit": fit.size, "select": held.size, "eval": test.size, "refit": train.size}
    log_loss = -np.mean(np.log(reference.predict_proba(xs)[np.arange(ys.size), ys]))
    assert ours.chosen["train_loss"] == pytest.approx(log_loss, rel=1e-3)
    assert ours.training["converged"]


def test_lbfgs_records_and_warns_about_the_values_of_C_a_loose_tol_left_at_their_warm_start(digits):
    """At scikit-learn's tol 1e-4 the weakly regularised fits of digits already meet the stopping
    rule where the previous C ended: they take 0 iterations and score the chosen fit, so the
    result lists them and warns that the choice is not resolved. At tol 1e-8 every fit moves."""
    x, y = digits
    train, test = np.arange(0, 1797, 2), np.arange(1, 1797, 2)
    weak = dict(solver="lbfgs", Cs=(100.0, 1e3, 1e4, 1e5), max_iter=5000)
    with pytest.warns(UserWarning, match="from the chosen C = 100 fit"):
        loose = linear_probe(x[train], y[train], x[test], y[test], LinearConfig(**weak, tol=1e-4), progress=False)
    assert loose.chosen["C"] == 100.0 and loose.training["unmoved_Cs"] == [1e3, 1e4, 1e5]
    assert [g["iterations"] == 0 for g in loose.grid] == [False, True, True, True]
    assert len({g["val_top1"] for g in loose.grid}) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tight = linear_probe(x[train], y[train], x[test], y[test], LinearConfig(**weak, tol=1e-8), progress=False)
    assert tight.training["unmoved_Cs"] == [] and all(g["iterations"] > 0 for g in tight.grid)


def test_auto_runs_lbfgs_when_its_memory_estimate_fits_and_the_sgd_grid_otherwise(digits):
    x, y = digits
    inputs = Inputs(train=Labelled(x[:1000], y[:1000]), eval=Labelled(x[1000:], y[1000:]), num_classes=10,
                    device="cpu", progress=False)
    small = evaluate(inputs, LinearConfig(Cs=FEW_CS, lbfgs_max_gib=1000 * 64 * 40 / 2 ** 30))  # exactly fits
    assert small.params["solver_ran"] == "lbfgs" and small.summary["solver"] == "lbfgs"
    assert {"chosen_C", "iterations", "converged", "chosen_train_loss"} <= set(small.summary)
    config = LinearConfig(learning_rates=(0.1,), weight_decays=(0.0,), batchnorm=(False,), epochs=1, min_steps=5,
                          lbfgs_max_gib=(1000 * 64 * 40 - 1) / 2 ** 30)  # one byte short
    large = evaluate(inputs, config)
    assert large.params["solver_ran"] == "sgd" and large.summary["solver"] == "sgd"
    assert large.summary["steps"] == 6 and large.summary["epochs"] == 2  # 900 rows / 256 = 3 steps an epoch


# ---------------------------------------------------------------------------------------------
# The SGD grid


def test_result_lists_every_head_with_its_validation_top1_and_training_loss() -> None:
    x, y = blobs(1, per_class=30)
    config = LinearConfig(learning_rates=(1e-3, 1e-1), weight_decays=(0.0, 5e-4),
                          batchnorm=(True, False), epochs=2, batch_size=32, max_widenings=0, **SGD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = linear_probe(x, y, x, y, config, progress=False)
    expected = [(bn, lr, wd) for bn in (False, True) for lr in (1e-3, 1e-1) for wd in (0.0, 5e-4)]
    assert [(g["batchnorm"], g["lr"], g["wd"]) for g in result.grid] == expected
    for name in ("val_top1", "train_loss"):
        rows = [m for m in result.metrics if m.name == name]
        assert [(m.coords, m.value) for m in rows] == [
            ({k: g[k] for k in ("lr", "wd", "batchnorm")}, g[name]) for g in result.grid]
    assert result.chosen["val_top1"] == max(g["val_top1"] for g in result.grid)


def test_heads_trained_together_end_where_each_would_end_alone() -> None:
    x, y = blobs(2, per_class=25, spread=3.0)
    features, labels = torch.from_numpy(x), torch.from_numpy(y)
    config = LinearConfig(learning_rates=(0.03, 0.3), weight_decays=(0.0, 0.01),
                          batchnorm=(False, True), epochs=3, batch_size=16, min_steps=0)
    together = train_heads(features, labels, config, 4, progress=False)
    assert together.num_heads == 8
    for index, params in enumerate(config.grid()):
        alone_config = replace(config, learning_rates=(params["lr"],), weight_decays=(params["wd"],),
                               batchnorm=(params["batchnorm"],))
        alone = train_heads(features, labels, alone_config, 4, progress=False)
        for mine, single in zip(together.head(index), alone.head(0)):
            torch.testing.assert_close(mine, single, rtol=0, atol=1e-5)


def test_one_head_follows_torch_sgd_with_momentum_and_a_per_step_cosine() -> None:
    x, y = blobs(3, per_class=10, spread=3.0)
    features, labels = torch.from_numpy(x), torch.from_numpy(y)
    config = LinearConfig(learning_rates=(0.2,), weight_decays=(0.01,), batchnorm=(False,),
                          epochs=3, batch_size=8, momentum=0.9, seed=5, min_steps=0)
    trained = train_heads(features, labels, config, 4, progress=False)
    # The same run written with nn.Linear, autograd and torch.optim.SGD (weight decay on the weight only).
    generator = torch.Generator().manual_seed(5)
    layer = torch.nn.Linear(16, 4)
    with torch.no_grad():
        layer.weight.copy_((torch.randn(16, 4, generator=generator) * 0.01).T)
        layer.bias.zero_()
    sgd = torch.optim.SGD([{"params": [layer.weight], "weight_decay": 0.01},
                           {"params": [layer.bias], "weight_decay": 0.0}], lr=0.2 * 8 / 256, momentum=0.9)
    total = 3 * (40 // 8)
    schedule = torch.optim.lr_scheduler.LambdaLR(sgd, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    for epoch in range(3):  # each epoch: a permutation seeded by (seed, epoch), cut into sorted batches
        order = np.random.default_rng((5, epoch)).permutation(40)
        for start in range(0, 40, 8):
            idx = torch.from_numpy(np.sort(order[start:start + 8]))
            sgd.zero_grad()
            torch.nn.functional.cross_entropy(layer(features[idx]), labels[idx]).backward()
            sgd.step()
            schedule.step()
    weight, bias = trained.head(0)
    torch.testing.assert_close(weight, layer.weight.detach().T, rtol=0, atol=1e-5)
    torch.testing.assert_close(bias, layer.bias.detach(), rtol=0, atol=1e-5)


def test_a_step_floor_adds_whole_epochs_to_small_splits() -> None:
    x, y = blobs(3, per_class=10, spread=3.0)  # 40 rows, batch 8: 5 steps an epoch
    features, labels = torch.from_numpy(x), torch.from_numpy(y)
    base = LinearConfig(learning_rates=(0.2,), weight_decays=(0.01,), batchnorm=(False,), batch_size=8)
    assert budget(40, replace(base, epochs=1, min_steps=12)).steps == 15  # 3 whole epochs
    assert budget(40, replace(base, epochs=4, min_steps=12)).steps == 20  # the epochs already reach it
    floored = train_heads(features, labels, replace(base, epochs=1, min_steps=12), 4, progress=False)
    three = train_heads(features, labels, replace(base, epochs=3, min_steps=0), 4, progress=False)
    torch.testing.assert_close(floored.head(0), three.head(0), rtol=0, atol=0)


def test_training_loss_is_the_chosen_heads_mean_cross_entropy_on_the_rows_it_trained_on() -> None:
    x, y = blobs(15, per_class=30, spread=4.0)
    config = LinearConfig(learning_rates=(0.05,), weight_decays=(0.0,), batchnorm=(False,), epochs=5, batch_size=32,
                          standardize=False, **SGD)
    result = linear_probe(x, y, x, y, config, progress=False)
    fit, _ = stratified_split(y, 0.1, seed=0)
    heads = train_heads(torch.from_numpy(x[fit]), torch.from_numpy(y[fit]), config, 4, progress=False)
    weight, bias = heads.head(0)
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(x[fit]) @ weight + bias, torch.from_numpy(y[fit]))
    assert result.chosen["train_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert result.training["steps"] == 5 * (fit.size // 32)


def test_batchnorm_heads_normalise_with_running_statistics_at_evaluation() -> None:
    x, y = blobs(10, per_class=60, offset=50.0)  # far from zero mean
    features, labels = torch.from_numpy(x), torch.from_numpy(y)
    config = LinearConfig(learning_rates=(0.1,), weight_decays=(0.0,), batchnorm=(True,),
                          epochs=10, batch_size=32, min_steps=0)
    heads = train_heads(features, labels, config, 4, progress=False)
    torch.testing.assert_close(heads.norm.running_mean, features.mean(0), rtol=0, atol=1.0)
    top1, top5, _ = head_scores(heads, features, labels)
    assert heads.norm.training is False
    assert top1.tolist() == [100.0] and top5.tolist() == [100.0]


def _edge_data() -> tuple[np.ndarray, np.ndarray]:
    """Blobs on which one epoch underfits: val top-1 rises with the learning rate (16.7, 41.7,
    75.0, 83.3 % at 0.003, 0.009, 0.027, 0.081)."""
    return blobs(16, per_class=30, spread=6.0)


EDGE = dict(learning_rates=(3e-3, 9e-3), weight_decays=(0.0,), batchnorm=(False,), epochs=1, batch_size=32,
            standardize=False, **SGD)


def test_a_choice_at_the_grids_edge_widens_it_to_what_the_wider_grid_trained_at_once_gives() -> None:
    x, y = _edge_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # still at the edge after two widenings
        widened = linear_probe(x, y, x, y, LinearConfig(**EDGE, max_widenings=2), progress=False)
        at_once = linear_probe(x, y, x, y, LinearConfig(**{**EDGE, "learning_rates": (3e-3, 9e-3, 0.027, 0.081)},
                                                        max_widenings=0), progress=False)
    assert widened.training["widenings"] == 2
    assert widened.training["learning_rates"] == [3e-3, 9e-3, 0.027, 0.081]
    assert widened.chosen["lr"] == 0.081
    # the same heads and scores; a training loss is a mean over a differently shaped batch of
    # heads, so it agrees to rounding, not bit for bit
    assert widened.chosen == pytest.approx(at_once.chosen, rel=1e-7)
    assert [h.pop("train_loss") for h in widened.grid] == pytest.approx([h.pop("train_loss") for h in at_once.grid],
                                                                        rel=1e-7)
    assert widened.grid == at_once.grid
    assert [(m.name, m.coords) for m in widened.metrics] == [(m.name, m.coords) for m in at_once.metrics]
    assert [m.value for m in widened.metrics] == pytest.approx([m.value for m in at_once.metrics], rel=1e-7)


def test_a_choice_still_at_the_edge_is_a_warning_recorded_in_the_result() -> None:
    x, y = _edge_data()
    with pytest.warns(UserWarning, match="learning rate 0.009 is the upper edge"):
        result = linear_probe(x, y, x, y, LinearConfig(**EDGE, max_widenings=0), progress=False)
    assert "learning rate 0.009 is the upper edge of the grid after 0 widening(s)" in result.training["edge"]
    inside = linear_probe(x, y, x, y, LinearConfig(**{**EDGE, "learning_rates": (0.09, 0.27, 0.81)},
                                                   max_widenings=0), progress=False)
    assert inside.training["edge"] == "" and inside.chosen["lr"] == 0.27


def test_an_edge_is_where_every_best_head_sits_and_a_weight_decay_of_zero_is_a_bottom() -> None:
    config = LinearConfig(learning_rates=(0.01, 0.1, 1.0), weight_decays=(0.0, 1e-4, 1e-3))
    assert _edges(config, [{"lr": 0.1, "wd": 0.0}]) == {}
    assert _edges(config, [{"lr": 1.0, "wd": 1e-3}]) == {"lr": "upper", "wd": "upper"}
    assert _edges(config, [{"lr": 1.0, "wd": 1e-3}, {"lr": 0.1, "wd": 1e-3}]) == {"wd": "upper"}  # a tie inside
    assert _edges(replace(config, weight_decays=(1e-4, 1e-3)), [{"lr": 0.01, "wd": 1e-4}]) == {"lr": "lower",
                                                                                              "wd": "lower"}
    assert _edges(replace(config, learning_rates=(0.1,)), [{"lr": 0.1, "wd": 1e-4}]) == {}  # one value: pinned


# ---------------------------------------------------------------------------------------------
# Input errors


def test_bad_inputs_and_settings_are_errors() -> None:
    x, y = blobs(12, per_class=10)
    with pytest.raises(JepaEvalError, match="select_on 'test'"):
        linear_probe(x, y, x, y, LinearConfig(select_on="test"), progress=False)
    with pytest.raises(JepaEvalError, match="val_fraction 0.0"):
        linear_probe(x, y, x, y, LinearConfig(val_fraction=0.0), progress=False)
    with pytest.raises(JepaEvalError, match="solver 'adam'"):
        linear_probe(x, y, x, y, LinearConfig(solver="adam"), progress=False)
    with pytest.raises(JepaEvalError, match="validation split .* is empty"):
        linear_probe(x, y, x, y, LinearConfig(val_fraction=0.01), progress=False)
    bad = x.copy()
    bad[3, 0] = np.inf
    with pytest.raises(JepaEvalError, match="eval features contain NaN or infinite"):
        linear_probe(x, y, bad, y, LinearConfig(**SMALL), progress=False)
    with pytest.raises(JepaEvalError, match="different widths"):
        linear_probe(x, y, x[:, :8], y, LinearConfig(**SMALL), progress=False)


def test_the_table_caption_names_the_solver_that_ran() -> None:
    from jepa_eval.protocols.linear import _caption
    from jepa_eval.protocols.registry import Shown

    def caption(*params: dict) -> str:
        return _caption(Shown(params=list(params), values={}))

    assert caption({"selected_on": "val", "solver_ran": "lbfgs"}) == "linear: logistic regression, C chosen on held-out val"
    assert caption({"selected_on": "val", "solver_ran": "sgd"}) == "linear: best head on held-out val"
    assert caption({"selected_on": "eval"}) == "linear: best head on the evaluation split"  # a version-1 record
