"""Linear probe: a grid of 16 heads trained at once against the same heads one after another,
and against scikit-learn's LogisticRegression over a 16-value C grid.

Data: clustered random float32 features standing for cached ones (N train x D, M eval,
10 classes). Compared, all choosing their best setting on the same held-out 10% of train:

- grid: ``linear_probe`` with 4 learning rates x 2 weight decays x {plain, BatchNorm} = 16 heads;
- one after another: ``linear_probe`` with a 1-head grid, called once per grid point;
  a head trained alone ends exactly where it ends in the grid, so the chosen head's accuracy
  must be the same;
- scikit-learn: ``LogisticRegression`` (lbfgs, warm-started along 16 C values, ascending).

The target compares the grid with ONE head: 16 heads in at most 2x the time of one
(one head's time = the one-after-another total / 16).

Usage: ``python bench/bench_linear.py [--quick] [--repeats R] [--out DIR]``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.linear_model import LogisticRegression

from bench_knn import clustered_features
from benchlib import Row, bench_main, interleaved_medians, make_row
from jepa_eval.protocols.linear import LinearConfig, LinearResult, linear_probe, stratified_split

NUM_CLASSES = 10
SK_CS = tuple(float(c) for c in np.logspace(-4, 3, 16))
FULL = {"train": 5_000, "test": 1_000, "dim": 384, "epochs": 4, "repeats": 3}
QUICK = {"train": 300, "test": 100, "dim": 16, "epochs": 1, "repeats": 1}


def grid_config(epochs: int) -> LinearConfig:
    """The 16-head SGD grid: 4 learning rates x 2 weight decays x {plain, BatchNorm}, ``epochs`` as
    given (no step floor) and never widened, so that each head's run is the same alone."""
    return LinearConfig(learning_rates=(1e-3, 1e-2, 1e-1, 1.0), weight_decays=(0.0, 5e-4),
                        batchnorm=(False, True), epochs=epochs, solver="sgd", min_steps=0, max_widenings=0)


def one_after_another(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
                      config: LinearConfig) -> tuple[float, dict]:
    """Train each head of ``config.grid()`` alone; (eval top-1 of the best on held-out, its setting)."""
    results = []
    for head in config.grid():
        single = dataclasses.replace(config, learning_rates=(head["lr"],), weight_decays=(head["wd"],),
                                     batchnorm=(head["batchnorm"],))
        results.append(linear_probe(x_train, y_train, x_eval, y_eval, single, NUM_CLASSES, progress=False))
    best = max(results, key=lambda r: r.chosen["val_top1"])  # first of equals, in grid order
    return best.metrics[0].value, best.chosen


def sklearn_grid(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
                 config: LinearConfig) -> tuple[float, float]:
    """(eval top-1 %, chosen C) of LogisticRegression over ``SK_CS``, chosen on the same held-out part."""
    fit, held = stratified_split(y_train, config.val_fraction, config.seed)
    model = LogisticRegression(max_iter=200, warm_start=True)
    best_val, best_eval, best_c = -1.0, 0.0, SK_CS[0]
    for c in SK_CS:
        model.set_params(C=c).fit(x_train[fit], y_train[fit])
        val = 100.0 * model.score(x_train[held], y_train[held])
        if val > best_val:
            best_val, best_eval, best_c = val, 100.0 * model.score(x_eval, y_eval), c
    return best_eval, best_c


def run(quick: bool, repeats: int | None) -> list[Row]:
    size = QUICK if quick else FULL
    reps = repeats or size["repeats"]
    rng = np.random.default_rng(0)
    centers = 0.2 * rng.standard_normal((NUM_CLASSES, size["dim"]), dtype=np.float32)
    x_train, y_train = clustered_features(size["train"], centers, 1.0, rng)
    x_eval, y_eval = clustered_features(size["test"], centers, 1.0, rng)
    config = grid_config(size["epochs"])
    warm_config = dataclasses.replace(config, epochs=1)
    data = (x_train, y_train, x_eval, y_eval)

    def grid(cfg: LinearConfig) -> LinearResult:
        return linear_probe(*data, cfg, NUM_CLASSES, progress=False)

    seconds, out = interleaved_medians(
        {"grid": lambda: grid(config), "sequential": lambda: one_after_another(*data, config),
         "sklearn": lambda: sklearn_grid(*data, config)}, reps,
        warmups={"grid": lambda: grid(warm_config),
                 "sequential": lambda: linear_probe(*data, dataclasses.replace(
                     warm_config, learning_rates=(1e-2,), weight_decays=(0.0,), batchnorm=(False,)),
                     NUM_CLASSES, progress=False),
                 "sklearn": lambda: LogisticRegression(max_iter=20).fit(x_train, y_train)})
    grid_top1 = out["grid"].metrics[0].value
    seq_top1, seq_chosen = out["sequential"]
    sk_top1, sk_c = out["sklearn"]
    heads = len(config.grid())
    one_head = seconds["sequential"] / heads
    case = f"{heads} heads, {size['train']}x{size['dim']}, {size['epochs']} epochs"
    same = "same head and accuracy" if seq_chosen == out["grid"].chosen else "DIFFERENT choice"
    return [
        make_row("linear", case, f"grid of {heads} at once", "one head alone", "s", seconds["grid"], one_head,
                 seconds["grid"] / one_head, "<= 2.0", reps,
                 f"cost ratio; grid top-1 {grid_top1:.2f}%",
                 miss_note="on a CPU every head's matmul and update is real arithmetic, so the grid's "
                           "cost grows with the head count (not measured on a GPU here)"),
        make_row("linear", case, f"grid of {heads} at once", f"{heads} heads one after another", "s",
                 seconds["grid"], seconds["sequential"], seconds["sequential"] / seconds["grid"], "", reps,
                 f"speed-up; chosen top-1 grid {grid_top1:.2f}% vs one-by-one {seq_top1:.2f}% ({same})"),
        make_row("linear", case, f"grid of {heads} at once", f"sklearn LogisticRegression, {len(SK_CS)} Cs", "s",
                 seconds["grid"], seconds["sklearn"], seconds["sklearn"] / seconds["grid"], "", reps,
                 f"speed-up; top-1 grid {grid_top1:.2f}% vs sklearn {sk_top1:.2f}% (C={sk_c:.3g})"),
    ]


def main(argv: list[str] | None = None) -> list[Row]:
    return bench_main("linear", run, __doc__, argv)


if __name__ == "__main__":
    main()
