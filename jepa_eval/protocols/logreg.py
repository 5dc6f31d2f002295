"""Exact multinomial logistic regression, fast: preconditioned L-BFGS in the basis of the rows.

The solver shared by ``lowshot`` and ``linear --solver lbfgs``.

Objective (scikit-learn's ``LogisticRegression(solver='lbfgs')`` for 3+ classes)::

    sum_i CE(x_i W + b, y_i) + ||W||^2 / (2 C)        W [D, K], intercept b [K] unpenalised

Stopping rule (scikit-learn's): the largest entry of the gradient of the *mean* objective
(the one above divided by N), over W and b in the coordinates of the features, is below
``tol``; or an iteration lowers the objective by less than 64 eps relatively (scipy's
``ftol`` as scikit-learn sets it); or ``max_iter`` L-BFGS iterations.

How it is fast and still the same problem:

1. Row basis. With mu the mean row and X - mu = F V^T (V [D, r] orthonormal columns), write
   W = V Z and b = c - W^T mu. The logits do not change, ``||W|| = ||Z||`` because V is
   orthonormal, and any part of W outside span(V) would only add to the penalty, so the
   minimiser is the same (representer theorem; the unpenalised intercept is the free ``c``).
   When N <= D / 2 the basis is the thin SVD of X - mu (r = rank <= N - 1 variables a class:
   the dual-sized problem); otherwise it is the full eigenbasis of (X - mu)^T (X - mu), r = D.
   The basis is computed once (float64) and serves every C and every subset of the rows
   (a validation split and the refit), since their centred rows lie in the same span.
2. Preconditioner. In that basis the data Hessian is nearly diagonal; L-BFGS runs on
   Z / sqrt(h) with h the exact Hessian diagonal at the starting point (per direction and
   class: ``F^2`` against ``p (1 - p)``, plus ``1 / (C N)``), which removes the conditioning
   of raw features (the eigenvalues of a CIFAR-10 pixel Gram matrix span 8 decades).
3. Warm starts along the C grid (each C starts from the nearest smaller C already fitted);
   the first starts from W = 0 and the class log-frequencies, the exact optimum at W = 0.
4. float32 with a float64 certificate. ``dtype=torch.float32`` runs L-BFGS in float32 until
   its own test passes or it stops making progress, then evaluates the gradient in float64
   at that point: if the float64 test passes the fit is returned (it satisfies exactly the
   stopping rule of a float64 solve), otherwise L-BFGS continues in float64 with the
   iterations left. Objectives are always reported in float64. So float32 is used exactly
   where it is safe, fit by fit. Measured on raw CIFAR-10 pixels (4,000 x 3,072, the 23-value
   grid): at tol 1e-4 every fit is certified in float32; at 1e-5 about half fall back to
   float64, at 1e-6 nearly all (float32 gradients are too noisy there).
5. Optional coarse-to-fine C search (``search='coarse'``): every other grid value (12 of 23),
   then the neighbours of the best. It can choose another C than the full grid: validation
   accuracy need not be unimodal, and at tol 1e-4 a weakly regularised fit depends on its
   warm start, which differs between the two searches. ``'grid'`` is the default.

Choosing C (:func:`select_C`): the caller gives the split (rows fitted, rows scored); the
grid is fitted on the first from strong to weak regularisation, scored by top-1 on the second,
and the chosen C is refitted on all rows (or, with ``refit=False``, its fit is kept).

Two classes: the multinomial objective with two weight vectors equals scikit-learn's
binomial one at ``2 C`` (scikit-learn fits the binomial model when K = 2).
Memory: the rows in the basis are kept in float64, and in float32 too for a float32 solve
(N x r x 12 bytes), and for :func:`select_C` the fitted part again, with the squared float32
coordinates the preconditioner reads: :func:`solver_bytes` estimates the whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import takewhile

import numpy as np
import torch
import torch.nn.functional as F

from jepa_eval.core.errors import JepaEvalError

#: Every other value of DINOv2's grid 10^linspace(-6, 5, 45), ascending.
DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-6, 5, 23))
#: L-BFGS memory (scipy's default, so scikit-learn's).
LBFGS_HISTORY = 10
#: Armijo sufficient-decrease constant and the most step halvings of one line search.
ARMIJO = 1e-4
MAX_BACKTRACKS = 30
#: A phase stops when an iteration lowers the objective by less than this fraction of it:
#: scipy's ``ftol`` as scikit-learn sets it (64 eps) in float64; one float32 eps in float32,
#: about the rounding noise of the float32 objective.
FTOL = {torch.float64: 64 * torch.finfo(torch.float64).eps, torch.float32: torch.finfo(torch.float32).eps}
#: Below N <= D / SVD_RATIO rows the basis is a thin SVD (rank-sized); above, a full eigenbasis.
SVD_RATIO = 2
SEARCHES = ("grid", "coarse")
#: Rows scored at once when predicting, so logits stay small in memory.
PREDICT_BLOCK = 8192
#: Bytes a :func:`select_C` solve holds per element of the N x r coordinates (module docstring).
BYTES_PER_COORDINATE = 40


@dataclass
class LogRegModel:
    """A fitted multinomial logistic regression: ``logits = x @ weight + bias``.

    ``weight [D, K]``, ``bias [K]`` in the features' dtype and device. ``objective`` is
    ``sum_i CE_i + ||W||^2 / (2 C)`` at the solution (float64, scikit-learn's scale);
    ``iterations`` counts L-BFGS iterations (scikit-learn's ``n_iter_``), ``evaluations``
    objective-and-gradient evaluations; ``converged`` says the fit stopped by one of scipy's
    rules (as scikit-learn runs it): the gradient test, in float64, or, in float64, a relative
    decrease of the objective below 64 eps; not by ``max_iter`` or a failed line search.
    ``precision`` is the dtype the last iterations ran in.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    C: float
    objective: float
    iterations: int
    evaluations: int
    converged: bool
    precision: str


@dataclass
class Selection:
    """The chosen ``C`` and ``model`` (refit on all rows at ``C``, or its fit on the fitted rows).

    ``scores``: top-1 (percent) on the scored rows of every C fitted, ascending C;
    ``path``: those fits (on the fitted rows), in the same order. Both are empty when no
    row is scored and ``C`` is the fallback.
    """

    C: float
    scores: dict[float, float]
    model: LogRegModel
    path: list[LogRegModel] = field(default_factory=list)

    @property
    def unmoved(self) -> list[float]:
        """The values of C whose warm-started fit took no L-BFGS iteration: the previous C's fit
        already met the stopping rule there, so they hold (and score) that classifier. Fits with
        W = 0 are left out: C does not change their gradient, so they are as exact as before."""
        return [fit.C for fit in self.path[1:] if fit.iterations == 0 and bool(fit.weight.any())]

    @property
    def untried(self) -> list[float]:
        """The run of unmoved values of C right above the chosen one: they hold the chosen fit,
        so whether a larger C scores better was not tested (lower ``tol``). Empty when the next
        C's fit moved."""
        unmoved = set(self.unmoved)
        return list(takewhile(unmoved.__contains__, (fit.C for fit in self.path if fit.C > self.C)))


# ---------------------------------------------------------------------------------------------
# Row basis


@dataclass
class RowBasis:
    """``vectors [D, r]`` (float64, orthonormal columns) spanning the rows of ``X - mean``."""

    mean: torch.Tensor
    vectors: torch.Tensor

    def coordinates(self, features: torch.Tensor) -> torch.Tensor:
        """``(features - mean) @ vectors`` [N, r] in float64."""
        return (features.double() - self.mean) @ self.vectors


def row_basis(features: torch.Tensor) -> RowBasis:
    """An orthonormal basis of the centred rows of ``features [N, D]``, computed in float64.

    N <= D / 2: the right singular vectors of ``X - mean`` whose singular values exceed
    ``s_max x max(N, D) x eps`` (numpy's rank rule); otherwise all D eigenvectors of
    ``(X - mean)^T (X - mean)``, largest eigenvalue first (no truncation: exact whatever the rank).
    """
    x = features.double()
    mean = x.mean(0)
    centred = x - mean
    n, dim = centred.shape
    if n * SVD_RATIO <= dim:
        _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
        limit = singular.max() * max(n, dim) * torch.finfo(torch.float64).eps
        vectors = vh[singular > limit].T
        if vectors.shape[1] == 0:  # all rows equal: one direction keeps the shapes valid
            vectors = torch.eye(dim, 1, dtype=torch.float64, device=x.device)
    else:
        _, eigenvectors = torch.linalg.eigh(centred.T @ centred)
        vectors = eigenvectors.flip(1)
    return RowBasis(mean, vectors.contiguous())


# ---------------------------------------------------------------------------------------------
# The problem in basis coordinates


class _Problem:
    """Rows in basis coordinates (``coords [N, r]``), labels, and the basis to map back."""

    def __init__(self, coords: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 basis: RowBasis, fast_dtype: torch.dtype) -> None:
        self.labels = labels
        self.num_classes = num_classes
        self.basis = basis
        self._coords = {torch.float64: coords}
        self._vectors = {torch.float64: basis.vectors}
        self._mean = {torch.float64: basis.mean}
        self._squares: dict[torch.dtype, torch.Tensor] = {}
        if fast_dtype != torch.float64:
            self._coords[fast_dtype] = coords.to(fast_dtype)
            self._vectors[fast_dtype] = basis.vectors.to(fast_dtype)
            self._mean[fast_dtype] = basis.mean.to(fast_dtype)

    def subset(self, rows: torch.Tensor) -> _Problem:
        sub = _Problem.__new__(_Problem)
        sub.labels, sub.num_classes, sub.basis = self.labels[rows], self.num_classes, self.basis
        sub._coords = {dt: c[rows] for dt, c in self._coords.items()}
        sub._vectors, sub._mean, sub._squares = self._vectors, self._mean, {}
        return sub

    @property
    def size(self) -> int:
        return self.labels.numel()

    def coords(self, dtype: torch.dtype) -> torch.Tensor:
        return self._coords[dtype]

    def zero_start(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``Z = 0`` and ``c`` = log class counts (the optimum at W = 0; an absent class counts 0.5)."""
        coords = self._coords[torch.float64]
        counts = torch.bincount(self.labels, minlength=self.num_classes).double().clamp(min=0.5)
        z = torch.zeros(coords.shape[1], self.num_classes, dtype=torch.float64, device=coords.device)
        return z, counts.log().to(coords.device)

    def loss_grad(self, z: torch.Tensor, c: torch.Tensor, lam: float,
                  dtype: torch.dtype) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Mean objective ``mean CE + lam ||Z||^2 / 2`` and its gradients ``[r, K]``, ``[K]``."""
        coords = self._coords[dtype]
        logits = coords @ z + c
        log_norm = torch.logsumexp(logits, 1)
        picked = logits.gather(1, self.labels[:, None])[:, 0]
        loss = float((log_norm - picked).double().mean()) + 0.5 * lam * float(z.double().square().sum())
        residual = torch.exp(logits - log_norm[:, None])
        residual[torch.arange(self.size, device=residual.device), self.labels] -= 1.0
        residual /= self.size
        return loss, coords.T @ residual + lam * z, residual.sum(0)

    def jacobi(self, z: torch.Tensor, c: torch.Tensor, lam: float,
               dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Diagonal of the mean objective's Hessian at ``(z, c)``: ``[r, K]`` and ``[K]``."""
        coords = self._coords[dtype]
        if dtype not in self._squares:
            self._squares[dtype] = coords.square()
        prob = torch.softmax(coords @ z + c, 1)
        curvature = prob * (1 - prob)
        return (self._squares[dtype].T @ curvature) / self.size + lam, curvature.mean(0).clamp(min=1e-12)

    def max_gradient(self, grad_z: torch.Tensor, grad_c: torch.Tensor, tol: float) -> float:
        """Largest entry of the gradient over ``W`` and ``b`` in feature coordinates.

        ``dW = V grad_z + mean grad_c^T``, ``db = grad_c``. Where a lower bound on it (from
        ``||dW||_F >= ||grad_z||_F - ||mean|| ||grad_c||``) already reaches ``tol``, the bound
        is returned instead, skipping the ``D x r`` product.
        """
        dtype = grad_z.dtype
        mean = self._mean[dtype]
        bias_max = float(grad_c.abs().max())
        dim = mean.numel()
        lower = (float(grad_z.norm()) - float(mean.norm()) * float(grad_c.norm())) / math.sqrt(
            dim * self.num_classes)
        if bias_max >= tol or lower >= tol:
            return max(bias_max, lower)
        grad_w = self._vectors[dtype] @ grad_z + mean[:, None] * grad_c[None, :]
        return max(bias_max, float(grad_w.abs().max()))

    def to_model(self, z: torch.Tensor, c: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, b)`` in feature coordinates, in the dtype of ``like``."""
        weight = self.basis.vectors @ z.double()
        bias = c.double() - self.basis.mean @ weight
        return weight.to(like.dtype), bias.to(like.dtype)


# ---------------------------------------------------------------------------------------------
# L-BFGS


@dataclass
class _Phase:
    z: torch.Tensor
    c: torch.Tensor
    loss: float
    iterations: int
    evaluations: int
    stop: str  # 'gradient', 'ftol', 'max_iter' or 'line search'


def _two_loop(grad: torch.Tensor, history: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """``H grad`` for the L-BFGS inverse-Hessian estimate ``H`` of ``history`` (s, y, 1/y.s)."""
    q = grad.clone()
    alphas = []
    for s, y, rho in reversed(history):
        alpha = rho * float(s @ q)
        alphas.append(alpha)
        q -= alpha * y
    if history:
        s, y, _ = history[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, rho), alpha in zip(history, reversed(alphas)):
        q += (alpha - rho * float(y @ q)) * s
    return q


def _lbfgs(problem: _Problem, lam: float, start: tuple[torch.Tensor, torch.Tensor], max_iter: int,
           tol: float, dtype: torch.dtype) -> _Phase:
    """L-BFGS in ``dtype`` on the Jacobi-preconditioned variables, Armijo backtracking."""
    z0, c0 = (t.to(dtype) for t in start)
    hz, hc = problem.jacobi(z0, c0, lam, dtype)
    scale_z, scale_c = hz.rsqrt(), hc.rsqrt()
    r, k = z0.shape

    def unpack(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:r * k].view(r, k) * scale_z, x[r * k:] * scale_c

    def evaluate(x: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
        loss, gz, gc = problem.loss_grad(*unpack(x), lam, dtype)
        return loss, torch.cat([(gz * scale_z).reshape(-1), gc * scale_c]), gz, gc

    x = torch.cat([(z0 / scale_z).reshape(-1), c0 / scale_c])
    loss, grad, gz, gc = evaluate(x)
    evaluations, iterations = 1, 0
    history: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    stop = "gradient" if problem.max_gradient(gz, gc, tol) < tol else ""
    while not stop:
        if iterations == max_iter:
            stop = "max_iter"
            break
        direction = -_two_loop(grad, history)
        slope = float(grad @ direction)
        if not slope < 0:  # not a descent direction: forget the curvature pairs
            history.clear()
            direction, slope = -grad, -float(grad @ grad)
        step, accepted = 1.0, False
        for _ in range(MAX_BACKTRACKS):
            trial = x + step * direction
            new_loss, new_grad, new_gz, new_gc = evaluate(trial)
            evaluations += 1
            if new_loss <= loss + ARMIJO * step * slope:
                accepted = True
                break
            # Minimiser of the quadratic through loss, slope and new_loss, kept in [0.1, 0.5] x step.
            curvature = new_loss - loss - slope * step
            guess = -slope * step * step / (2 * curvature) if curvature > 0 else 0.5 * step
            step = min(0.5 * step, max(0.1 * step, guess))
        if not accepted:
            stop = "line search"
            break
        iterations += 1
        s, y = trial - x, new_grad - grad
        sy = float(s @ y)
        if sy > 1e-10 * float(y @ y):
            history.append((s, y, 1.0 / sy))
            del history[:-LBFGS_HISTORY]
        stalled = loss - new_loss <= FTOL[dtype] * max(abs(loss), abs(new_loss), 1.0)
        x, loss, grad, gz, gc = trial, new_loss, new_grad, new_gz, new_gc
        if problem.max_gradient(gz, gc, tol) < tol:
            stop = "gradient"
        elif stalled:
            stop = "ftol"
    z, c = unpack(x)
    return _Phase(z, c, loss, iterations, evaluations, stop)


@dataclass
class _Solution:
    z: torch.Tensor
    c: torch.Tensor
    objective: float
    iterations: int
    evaluations: int
    converged: bool
    precision: str


def _solve(problem: _Problem, C: float, start: tuple[torch.Tensor, torch.Tensor], max_iter: int,
           tol: float, dtype: torch.dtype) -> _Solution:
    """Minimise at ``C`` from ``start`` (float64 ``Z``, ``c``); float32 first when asked (rule 4)."""
    lam = 1.0 / (C * problem.size)
    iterations = evaluations = 0
    if dtype != torch.float64:
        phase = _lbfgs(problem, lam, start, max_iter, tol, dtype)
        iterations, evaluations = phase.iterations, phase.evaluations
        start = (phase.z.double(), phase.c.double())
        loss, gz, gc = problem.loss_grad(*start, lam, torch.float64)
        evaluations += 1
        certified = problem.max_gradient(gz, gc, tol) < tol
        if certified or iterations >= max_iter:
            return _Solution(*start, loss * problem.size, iterations, evaluations, certified,
                             str(dtype).removeprefix("torch."))
    phase = _lbfgs(problem, lam, start, max_iter - iterations, tol, torch.float64)
    return _Solution(phase.z, phase.c, phase.loss * problem.size, iterations + phase.iterations,
                     evaluations + phase.evaluations, phase.stop in ("gradient", "ftol"), "float64")


# ---------------------------------------------------------------------------------------------
# Public fitting and selection


def _check_inputs(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if features.ndim != 2 or labels.ndim != 1 or features.shape[0] != labels.shape[0] or labels.numel() == 0:
        raise JepaEvalError("features and labels do not match",
                            expected="features [N, D] and labels [N] with N >= 1",
                            found=f"features {tuple(features.shape)}, labels {tuple(labels.shape)}")
    if not features.is_floating_point() or not bool(torch.isfinite(features).all()):
        raise JepaEvalError("features must be finite floating-point numbers",
                            found=f"dtype {features.dtype}" + (
                                "" if not features.is_floating_point() else ", with NaN or infinite values"))
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise JepaEvalError("labels are out of range", expected=f"integers in [0, {num_classes})",
                            found=f"labels in [{int(labels.min())}, {int(labels.max())}]")


def _check_C(C: float) -> None:
    if not (C > 0 and math.isfinite(C)):
        raise JepaEvalError("the inverse regularisation C must be positive and finite", found=f"C = {C}")


def _fast_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise JepaEvalError("unsupported solver dtype", expected="torch.float32 or torch.float64",
                            found=str(dtype))
    return dtype


def _model(problem: _Problem, solution: _Solution, C: float, like: torch.Tensor) -> LogRegModel:
    weight, bias = problem.to_model(solution.z, solution.c, like)
    return LogRegModel(weight, bias, C, solution.objective, solution.iterations, solution.evaluations,
                       solution.converged, solution.precision)


def _start_from(problem: _Problem, init: LogRegModel | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Basis coordinates of ``init`` (W projected on the basis: same logits, no larger penalty)."""
    if init is None:
        return problem.zero_start()
    weight = init.weight.double().to(problem.basis.vectors.device)
    return problem.basis.vectors.T @ weight, init.bias.double().to(weight.device) + problem.basis.mean @ weight


def fit_logreg(features: torch.Tensor, labels: torch.Tensor, C: float, num_classes: int, *,
               init: LogRegModel | None = None, max_iter: int = 200, tol: float = 1e-4,
               dtype: torch.dtype = torch.float32, basis: RowBasis | None = None) -> LogRegModel:
    """Minimise ``sum_i CE(x_i W + b, y_i) + ||W||^2 / (2C)`` (see the module docstring).

    ``features [N, D]`` (any float dtype; the model comes back in it), ``labels [N]`` int64
    in ``[0, num_classes)``. ``init`` warm-starts from another model; ``basis`` reuses a
    :func:`row_basis` of rows that include these (computed here when None). ``dtype`` is
    the solve precision (float32: float32 iterations with a float64 certificate).
    """
    _check_inputs(features, labels, num_classes)
    _check_C(C)
    basis, coords = _in_basis(features, basis)
    problem = _Problem(coords, labels, num_classes, basis, _fast_dtype(dtype))
    return _model(problem, _solve(problem, C, _start_from(problem, init), max_iter, tol, dtype), C, features)


def _in_basis(features: torch.Tensor, basis: RowBasis | None) -> tuple[RowBasis, torch.Tensor]:
    """``basis`` (computed when None) and the coordinates of ``features`` in it.

    A given basis that misses part of the features' span is an error: the part outside has
    energy ``||X - mean||^2 - ||coords||^2`` (V orthonormal), allowed up to 1e-11 of the
    total (float64 rounding; 3e-6 of the rows' norm).
    """
    if basis is None:
        basis = row_basis(features)
        return basis, basis.coordinates(features)
    coords = basis.coordinates(features)
    energy = float((features.double() - basis.mean).square().sum())
    missing = energy - float(coords.square().sum())
    if missing > 1e-11 * max(energy, 1e-300):
        raise JepaEvalError("the row basis does not span these features",
                            expected="a basis from row_basis() of rows that include these",
                            found=f"{missing / energy:.2e} of their centred energy outside it")
    return basis, coords


def _top1(problem: _Problem, solution: _Solution) -> float:
    coords = problem.coords(torch.float64)
    predicted = (coords @ solution.z + solution.c).argmax(1)
    return 100.0 * float((predicted == problem.labels).double().mean())


def _search(count: int, search: str, score: Callable[[int], float]) -> dict[int, float]:
    """Validation score of each grid index fitted: all (``'grid'``), or every other one and the
    last, then the unfitted neighbours of every index with the best score (``'coarse'``).

    ``score(i)`` fits index ``i`` and returns its score; indices are fitted in ascending order
    within each pass.
    """
    if search == "grid":
        coarse = list(range(count))
    else:
        coarse = sorted(set(range(0, count, 2)) | {count - 1})
    fitted = {i: score(i) for i in coarse}
    if search == "coarse":
        best = max(fitted.values())
        for i in [i for i in coarse if fitted[i] == best]:
            for j in (i - 1, i + 1):
                if 0 <= j < count and j not in fitted:
                    fitted[j] = score(j)
    return dict(sorted(fitted.items()))


def select_C(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
             Cs: Sequence[float] = DEFAULT_CS, *, split: tuple[np.ndarray, np.ndarray],
             fallback_C: float = 1.0, max_iter: int = 200, tol: float = 1e-4,
             dtype: torch.dtype = torch.float32, search: str = "grid", refit: bool = True,
             basis: RowBasis | None = None) -> Selection:
    """Choose ``C`` by the top-1 of fits on rows ``split[0]`` scored on rows ``split[1]``.

    The grid is fitted in ascending order with warm starts (``search='coarse'``: module
    docstring, rule 5); the chosen C has the best score, the smallest such C on ties. With
    ``refit`` the model is then fitted on all rows at that C, starting from the chosen fit;
    without, the chosen fit itself is returned. When ``split[1]`` is empty, ``fallback_C`` is
    fitted on all rows and ``scores`` is empty. ``basis``: a :func:`row_basis` to reuse (a
    full one, ``r = D``, spans any rows); computed here when None.
    """
    _check_inputs(features, labels, num_classes)
    grid = sorted({float(c) for c in Cs})
    for C in [*grid, fallback_C]:
        _check_C(C)
    if not grid or search not in SEARCHES:
        raise JepaEvalError("invalid C search", expected=f"a non-empty grid and search in {SEARCHES}",
                            found=f"{len(grid)} values, search {search!r}")
    basis, coords = _in_basis(features, basis)
    everything = _Problem(coords, labels, num_classes, basis, _fast_dtype(dtype))
    train, val = (np.asarray(rows, dtype=np.int64) for rows in split)
    solutions: dict[int, _Solution] = {}
    if val.size == 0:
        return Selection(fallback_C, {}, _model(everything, _solve(everything, fallback_C, everything.zero_start(),
                                                                    max_iter, tol, dtype), fallback_C, features))
    fit_rows = everything.subset(torch.as_tensor(train, device=labels.device))
    val_rows = everything.subset(torch.as_tensor(val, device=labels.device))

    def score(i: int) -> float:
        smaller = [j for j in solutions if j < i]
        start = (solutions[max(smaller)].z, solutions[max(smaller)].c) if smaller else fit_rows.zero_start()
        solutions[i] = _solve(fit_rows, grid[i], start, max_iter, tol, dtype)
        return _top1(val_rows, solutions[i])

    fitted = _search(len(grid), search, score)
    index = max(fitted, key=lambda i: (fitted[i], -i))  # the best score, then the smallest C
    chosen = grid[index]
    path = [_model(fit_rows, solutions[i], grid[i], features) for i in fitted]
    if refit:
        start = (solutions[index].z, solutions[index].c)
        model = _model(everything, _solve(everything, chosen, start, max_iter, tol, dtype), chosen, features)
    else:
        model = path[list(fitted).index(index)]
    return Selection(chosen, {grid[i]: value for i, value in fitted.items()}, model, path)


def solver_bytes(rows: int, dim: int) -> int:
    """Estimated peak memory of :func:`select_C` on ``rows x dim`` features: the coordinates
    ``N x r`` (r = min(N, D)) held in float64 and float32 for all rows and the fitted part,
    with their squares, at :data:`BYTES_PER_COORDINATE` bytes an element."""
    return rows * min(rows, dim) * BYTES_PER_COORDINATE


# ---------------------------------------------------------------------------------------------
# Prediction


def predict_topk(model: LogRegModel, features: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` highest-scoring classes ``[N, k]`` of each row of ``features [N, D]``."""
    k = min(k, model.bias.numel())
    weight, bias = model.weight.to(features.dtype), model.bias.to(features.dtype)
    return torch.cat([(block @ weight + bias).topk(k, dim=1).indices for block in features.split(PREDICT_BLOCK)])


def topk_accuracy(model: LogRegModel, features: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percentage (0-100) of rows whose label is among the ``k`` best classes."""
    hits = (predict_topk(model, features, k) == labels[:, None]).any(dim=1)
    return 100.0 * float(hits.double().mean())


def mean_cross_entropy(model: LogRegModel, features: torch.Tensor, labels: torch.Tensor) -> float:
    """The mean cross-entropy (nats) of ``model`` on rows ``features [N, D]`` with ``labels [N]``."""
    weight, bias = model.weight.to(features.dtype), model.bias.to(features.dtype)
    total = sum(float(F.cross_entropy(block @ weight + bias, y, reduction="sum"))
                for block, y in zip(features.split(PREDICT_BLOCK), labels.split(PREDICT_BLOCK)))
    return total / labels.numel()
