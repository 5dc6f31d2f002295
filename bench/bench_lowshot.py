"""Low-shot logistic regression: our torch L-BFGS fit against scikit-learn's, at equal C.

Data: an ImageNet-1%-like low-shot set of clustered random features (exactly 13 shots of
each of C classes, width D) and a larger evaluation set. Both minimise the same objective,
``sum_i CE_i + ||W||^2 / (2C)`` with an unpenalised intercept, on the raw features, in float64,
with at most 200 L-BFGS iterations:

- ours: ``jepa_eval.protocols.lowshot.fit_logreg`` (torch ``LBFGS``, strong-Wolfe line search);
- scikit-learn: ``LogisticRegression(C=C, max_iter=200)`` (scipy's L-BFGS-B, default tol).

Target: ours at least 5x faster with top-1 within 0.5 points of scikit-learn's.

Usage: ``python bench/bench_lowshot.py [--quick] [--repeats R] [--out DIR]``.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from bench_knn import clustered_features
from benchlib import Row, bench_main, interleaved_medians, make_row
from jepa_eval.protocols.lowshot import LowShotConfig, fit_logreg, topk_accuracy

SHOTS = 13
MAX_ITER = 200
FULL = {"classes": 100, "test": 5_000, "dim": 384, "Cs": (0.01, 1.0), "repeats": 3}
QUICK = {"classes": 10, "test": 200, "dim": 32, "Cs": (1.0,), "repeats": 1}


def objective(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray, C: float) -> float:
    """``sum_i CE(x_i W + b, y_i) + ||W||^2 / (2C)`` for ``weight [D, K]``, ``bias [K]``, ``x [N, D]``."""
    logits = x @ weight + bias
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float((log_norm - logits[np.arange(len(y)), y]).sum() + (weight ** 2).sum() / (2 * C))


def bench_C(C: float, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
            num_classes: int, repeats: int) -> Row:
    """Time and top-1 of both fits at inverse regularisation ``C``."""
    xt, yt = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y)
    xt_test, yt_test = torch.from_numpy(x_test.astype(np.float64)), torch.from_numpy(y_test)
    seconds, out = interleaved_medians({
        "ours": lambda: fit_logreg(xt, yt, C, num_classes, max_iter=MAX_ITER),
        "sklearn": lambda: LogisticRegression(C=C, max_iter=MAX_ITER).fit(x.astype(np.float64), y),
    }, repeats)
    ours_top1 = topk_accuracy(out["ours"], xt_test, yt_test, 1)
    sk_top1 = 100.0 * out["sklearn"].score(x_test.astype(np.float64), y_test)
    close = abs(ours_top1 - sk_top1) <= 0.5
    sk = out["sklearn"]
    sk_objective = objective(sk.coef_.T, sk.intercept_, x.astype(np.float64), y, C)
    why = ("accuracy differs by more than 0.5 points" if not close else
           f"ours ran {out['ours'].iterations} objective evaluations (gradient tolerance {LowShotConfig.tol:g}, as sklearn), "
           f"sklearn {int(sk.n_iter_[0])} iterations (tol 1e-4)")
    return make_row("lowshot", f"C={C:g}, {x.shape[0]}x{x.shape[1]}, {num_classes} classes",
                    "fit_logreg (torch L-BFGS)", "sklearn LogisticRegression", "s", seconds["ours"],
                    seconds["sklearn"], seconds["sklearn"] / seconds["ours"], ">= 5", repeats,
                    f"speed-up; top-1 ours {ours_top1:.2f}% vs sklearn {sk_top1:.2f}%; "
                    f"objective ours {out['ours'].objective:.6g} vs sklearn {sk_objective:.6g}",
                    miss_note=why, also_required=close)


def run(quick: bool, repeats: int | None) -> list[Row]:
    size = QUICK if quick else FULL
    reps = repeats or size["repeats"]
    rng = np.random.default_rng(0)
    classes = size["classes"]
    centers = 0.2 * rng.standard_normal((classes, size["dim"]), dtype=np.float32)
    x, y = clustered_features(classes * SHOTS, centers, 1.0, rng, np.repeat(np.arange(classes), SHOTS))
    x_test, y_test = clustered_features(size["test"], centers, 1.0, rng)
    return [bench_C(C, x, y, x_test, y_test, classes, reps) for C in size["Cs"]]


def main(argv: list[str] | None = None) -> list[Row]:
    return bench_main("lowshot", run, __doc__, argv)


if __name__ == "__main__":
    main()
