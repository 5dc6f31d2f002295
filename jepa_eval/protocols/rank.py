"""Label-free collapse diagnostics over a feature matrix ``Z`` of shape ``[N, D]``.

Every function is pure: it takes features (a numpy array or a torch tensor, on any device)
and returns plain floats. Linear algebra runs in float64 on the features' device.

- :func:`rankme`: effective rank of the (uncentred) singular-value spectrum (Garrido et al.).
- :func:`alpha_req`: power-law decay ``lambda_i ~ i^-alpha`` of the covariance spectrum
  (Agrawal et al.), with the R^2 of the log-log fit.
- :func:`lidar`: effective rank of the LDA matrix of surrogate classes (Thilak et al.).
- :func:`feature_std`, :func:`mean_cosine`, :func:`uniformity`: spread of the L2-normalised
  features (the VICReg-style std, mean pairwise cosine, Wang & Isola uniformity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.registry import (Evaluation, Inputs, Needs, PlotSpec, Protocol, TableSpec, ViewsNeeded, joined,
                                          option, register)
from jepa_eval.results.record import Metric

ArrayLike = torch.Tensor | np.ndarray

#: Rows per block when forming pairwise similarities, so memory stays O(block x N).
PAIR_BLOCK = 1024
#: Covariance eigenvalues below this fraction of the largest are numerical zeros.
RELATIVE_ZERO = 1e-10


def _as_matrix(Z: ArrayLike, what: str = "features") -> torch.Tensor:
    """``Z`` as a float64 tensor ``[N, D]`` on its own device; rejects other shapes and NaN/inf."""
    tensor = torch.as_tensor(Z)
    if tensor.ndim != 2:
        raise JepaEvalError(f"{what} must be a 2-D matrix", expected="shape [N, D]",
                            found=f"shape {list(tensor.shape)}")
    tensor = tensor.to(torch.float64)
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).any(dim=1).sum())
        raise JepaEvalError(f"{what} contain NaN or infinite values", expected="finite numbers",
                            found=f"{bad} of {tensor.shape[0]} rows with non-finite entries",
                            hint="check the checkpoint and the feature extraction for overflow")
    return tensor


def _require_rows(Z: torch.Tensor, minimum: int, metric: str) -> None:
    if Z.shape[0] < minimum:
        raise JepaEvalError(f"{metric} needs at least {minimum} samples",
                            expected=f"a feature matrix with N >= {minimum} rows",
                            found=f"N = {Z.shape[0]}")


def _normalised(Z: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norm; an all-zero row stays zero."""
    return Z / Z.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _entropy_rank(p: torch.Tensor) -> float:
    """``exp(-sum p log p)`` of a probability vector (terms with p = 0 count as 0)."""
    terms = torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))
    return float(torch.exp(-terms.sum()))


def rankme(Z: ArrayLike, eps: float = 1e-7) -> float:
    """RankMe of ``Z [N, D]``: ``exp(-sum_k p_k log p_k)``, ``p_k = sigma_k / ||sigma||_1 + eps``.

    ``sigma`` are the singular values of ``Z`` itself, not centred (the paper's definition).
    The value lies in ``[~1, min(N, D)]``: ``min(N, D)`` for equal singular values, about 1
    for a rank-one (collapsed) matrix; an all-zero matrix gives about 1 as well.
    """
    matrix = _as_matrix(Z)
    _require_rows(matrix, 1, "RankMe")
    sigma = torch.linalg.svdvals(matrix)
    p = sigma / sigma.sum().clamp_min(torch.finfo(torch.float64).tiny) + eps
    return _entropy_rank(p)


def rankme_norm(Z: ArrayLike, eps: float = 1e-7) -> float:
    """RankMe divided by its maximum ``min(N, D)``: a value in ``(0, 1]``."""
    matrix = _as_matrix(Z)
    return rankme(matrix, eps) / min(matrix.shape)


def covariance_spectrum(Z: ArrayLike) -> torch.Tensor:
    """Eigenvalues ``[D]`` of the sample covariance ``Zc^T Zc / (N - 1)``, descending."""
    matrix = _as_matrix(Z)
    _require_rows(matrix, 2, "a covariance")
    centred = matrix - matrix.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / (matrix.shape[0] - 1)
    return torch.linalg.eigvalsh(cov).flip(0)


def alpha_req(Z: ArrayLike, fit_range: tuple[int, int] = (10, 100)) -> tuple[float, float]:
    """alpha-ReQ of ``Z [N, D]``: ``(alpha, R^2)`` of the fit ``log lambda_i = c - alpha log i``.

    ``lambda_i`` are the covariance eigenvalues in descending order, indexed from 1; the
    least-squares fit uses the indices ``fit_range[0] .. fit_range[1]`` (inclusive), clipped
    to the ``min(D, N - 1)`` eigenvalues a sample of N rows can have. Eigenvalues that are
    numerically zero (below 1e-10 of the largest) are left out of the fit; when fewer than
    two remain (a collapsed matrix) the power law is undefined and both values are NaN.
    """
    lo, hi = fit_range
    if not 1 <= lo < hi:
        raise JepaEvalError("the alpha-ReQ fit range is not a range of 1-based indices",
                            expected="1 <= start < end, e.g. (10, 100)", found=f"{fit_range}")
    matrix = _as_matrix(Z)
    available = min(matrix.shape[1], matrix.shape[0] - 1)
    if available < lo + 1:
        raise JepaEvalError(
            "too few samples or dimensions for the alpha-ReQ fit",
            expected=f"at least {lo + 1} eigenvalues, i.e. N >= {lo + 2} samples and D >= {lo + 1} "
                     f"dimensions for the fit range {fit_range}",
            found=f"N = {matrix.shape[0]}, D = {matrix.shape[1]}")
    eigenvalues = covariance_spectrum(matrix)
    index = torch.arange(1, eigenvalues.numel() + 1, dtype=torch.float64, device=eigenvalues.device)
    window = slice(lo - 1, min(hi, available))
    lam, idx = eigenvalues[window], index[window]
    keep = lam > RELATIVE_ZERO * eigenvalues[0].clamp_min(0)
    if int(keep.sum()) < 2:
        return math.nan, math.nan
    x, y = torch.log(idx[keep]), torch.log(lam[keep])
    x_c, y_c = x - x.mean(), y - y.mean()
    slope = (x_c * y_c).sum() / (x_c * x_c).sum()
    residual = y_c - slope * x_c
    total = (y_c * y_c).sum()
    r2 = 1.0 - float((residual * residual).sum() / total) if float(total) > 0 else 1.0
    return -float(slope), r2


def lidar(views: ArrayLike, delta: float = 1e-4, eps: float = 1e-8) -> float:
    """LiDAR of ``views [n, q, D]``: n surrogate classes (images), q views (crops) each.

    ``Sigma_b`` is the covariance of the n class means and ``Sigma_w`` the mean of the n
    within-class covariances plus ``delta * I``; both use the unbiased normalisation
    (``1 / (n - 1)`` and ``1 / (q - 1)``). With ``lambda`` the eigenvalues of
    ``Sigma_w^-1/2 Sigma_b Sigma_w^-1/2`` (clamped at 0 against round-off),
    ``p_i = (lambda_i + eps) / sum_j (lambda_j + eps)`` and LiDAR = ``exp(-sum p log p)``,
    a value in ``[~1, D]`` that approaches the rank of the class-mean spread when the
    classes are well separated. Caveat of the formula: fully collapsed views
    (``Sigma_b = 0``) make every ``lambda`` 0 and so give D; read LiDAR beside RankMe.
    """
    tensor = torch.as_tensor(views)
    if tensor.ndim != 3:
        raise JepaEvalError("LiDAR views must be a 3-D array",
                            expected="shape [n images, q views, D]", found=f"shape {list(tensor.shape)}")
    n, q, dim = tensor.shape
    if n < 2 or q < 2:
        raise JepaEvalError("LiDAR needs at least 2 images with at least 2 views each",
                            expected="views of shape [n >= 2, q >= 2, D]", found=f"n = {n}, q = {q}")
    flat = _as_matrix(tensor.reshape(n * q, dim), "LiDAR views")
    grouped = flat.reshape(n, q, dim)
    means = grouped.mean(dim=1)
    between = means - means.mean(dim=0, keepdim=True)
    sigma_b = between.T @ between / (n - 1)
    within = (grouped - means[:, None, :]).reshape(n * q, dim)
    sigma_w = within.T @ within / (n * (q - 1))
    sigma_w = sigma_w + delta * torch.eye(dim, dtype=sigma_w.dtype, device=sigma_w.device)
    w_values, w_vectors = torch.linalg.eigh(sigma_w)
    inv_sqrt = (w_vectors * w_values.clamp_min(torch.finfo(torch.float64).tiny).rsqrt()) @ w_vectors.T
    lda = inv_sqrt @ sigma_b @ inv_sqrt
    lam = torch.linalg.eigvalsh((lda + lda.T) / 2).clamp_min(0)
    p = (lam + eps) / (lam + eps).sum()
    return _entropy_rank(p)


def feature_std(Z: ArrayLike) -> float:
    """Mean over dimensions of the per-dimension std (``ddof = 0``) of L2-normalised rows.

    0 for collapsed features (all rows the same direction); about ``1 / sqrt(D)`` for
    isotropic ones.
    """
    matrix = _as_matrix(Z)
    _require_rows(matrix, 2, "feature std")
    return float(_normalised(matrix).std(dim=0, correction=0).mean())


def mean_cosine(Z: ArrayLike) -> float:
    """Mean cosine similarity over all ordered pairs ``i != j``: 1 when collapsed, ~0 when spread.

    Uses ``sum_{i != j} x_i . x_j = ||sum_i x_i||^2 - sum_i ||x_i||^2``, so it costs O(N D).
    """
    matrix = _as_matrix(Z)
    _require_rows(matrix, 2, "mean cosine")
    unit = _normalised(matrix)
    n = unit.shape[0]
    off_diagonal = unit.sum(dim=0).square().sum() - unit.square().sum()
    return float(off_diagonal / (n * (n - 1)))


def uniformity(Z: ArrayLike, t: float = 2.0) -> float:
    """``log mean_{i != j} exp(-t ||x_i - x_j||^2)`` over L2-normalised rows (Wang & Isola).

    0 when collapsed (every distance 0); ``-4 t`` at best (antipodal pairs). For unit rows
    ``-t ||x_i - x_j||^2 = 2t (x_i . x_j - 1)``. Pairs are formed in float32 blocks of
    :data:`PAIR_BLOCK` rows (absolute error ~1e-6) and reduced with log-sum-exp, so memory
    is O(block x N) and nothing underflows.
    """
    matrix = _as_matrix(Z)
    _require_rows(matrix, 2, "uniformity")
    unit = _normalised(matrix).to(torch.float32)
    n = unit.shape[0]
    partial = []
    for start in range(0, n, PAIR_BLOCK):
        block = unit[start:start + PAIR_BLOCK]
        logits = (block @ unit.T).sub_(1.0).mul_(2.0 * t)
        rows = torch.arange(block.shape[0], device=unit.device)
        logits[rows, rows + start] = -math.inf
        partial.append(torch.logsumexp(logits, dim=1).double())
    return float(torch.logsumexp(torch.cat(partial), dim=0) - math.log(n * (n - 1)))


def rank_metrics(Z: ArrayLike, *, lidar_views: ArrayLike | None = None, lidar_delta: float = 1e-4,
                 lidar_eps: float = 1e-8) -> list[Metric]:
    """All label-free metrics of ``Z [N, D]`` as result rows (no coordinates).

    Rows: rankme, rankme_norm, alpha_req, alpha_req_r2, lidar (only when ``lidar_views
    [n, q, D]`` is given), feature_std, mean_cosine, uniformity. Needs N >= 12 and D >= 11
    for the default alpha-ReQ fit range.
    """
    matrix = _as_matrix(Z)
    _require_rows(matrix, 2, "rank metrics")
    alpha, r2 = alpha_req(matrix)
    rank = rankme(matrix)
    rows = [Metric("rankme", rank), Metric("rankme_norm", rank / min(matrix.shape)),
            Metric("alpha_req", alpha), Metric("alpha_req_r2", r2)]
    if lidar_views is not None:
        rows.append(Metric("lidar", lidar(lidar_views, delta=lidar_delta, eps=lidar_eps)))
    rows += [Metric("feature_std", feature_std(matrix)), Metric("mean_cosine", mean_cosine(matrix)),
             Metric("uniformity", uniformity(matrix))]
    return rows


@dataclass
class RankConfig:
    """Label-free diagnostics on ``samples`` seeded rows of a split; LiDAR on ``lidar_images`` x ``lidar_views`` crops."""

    samples: int = option(10_000, "Seeded rows used for the metrics.")
    seed: int = 0
    lidar_images: int = option(1000, "LiDAR surrogate classes n.")
    lidar_views: int = option(10, "LiDAR views per class q.")
    lidar_delta: float = 1e-4
    lidar_eps: float = 1e-8
    lidar: bool = option(True, "Also compute LiDAR (needs extra forward passes over augmented views).")


def _needs(config: RankConfig) -> Needs:
    views = ViewsNeeded(config.lidar_images, config.lidar_views, config.seed) if config.lidar else None
    return Needs(rows=config.samples, rows_seed=config.seed, views=views)


def evaluate(inputs: Inputs, config: RankConfig) -> Evaluation:
    """:func:`rank_metrics` of the measured rows (and LiDAR of the views, when extracted)."""
    rows = inputs.train.features
    if rows.shape[0] < 2:
        raise JepaEvalError("rank metrics need at least 2 samples", found=f"{rows.shape[0]}")
    metrics = rank_metrics(rows, lidar_views=inputs.views, lidar_delta=config.lidar_delta, lidar_eps=config.lidar_eps)
    return Evaluation(metrics, {m.name: m.value for m in metrics}, dataset={"n_used": int(rows.shape[0])})


def _describe(record: Any) -> str:
    return f"rank diagnostics on {record.dataset.name}/{record.dataset.split} ({record.features.mode})"


PROTOCOL = register(Protocol(
    name="rank", version="1", label="rank", config=RankConfig, evaluate=evaluate, needs=_needs,
    summary="label-free collapse metrics: RankMe, alpha-ReQ, LiDAR, feature std, cosine, uniformity",
    caption=lambda shown: f"rank: on the {joined(shown.values.get('split', []))} split",
    describe=_describe, splits=("split",), headline=("rankme",), tables=(TableSpec("rank_rankme", "rankme"),),
    plots=(PlotSpec("rank_vs_accuracy", {"metrics": ("rankme", "lidar"), "accuracy": "linear"}),),
))
