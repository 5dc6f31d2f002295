"""Label-free collapse metrics on matrices whose answer is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.monitor import CollapseRule
from jepa_eval.protocols.rank import (alpha_req, feature_std, lidar, mean_cosine,
                                      rank_metrics, rankme, rankme_norm, uniformity)


def orthonormal(rows: int, cols: int, seed: int) -> np.ndarray:
    """A ``[rows, cols]`` matrix with orthonormal columns."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((rows, cols)))
    return q


def with_covariance_spectrum(eigenvalues: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` centred rows whose sample covariance has exactly ``eigenvalues`` (descending)."""
    d = eigenvalues.size
    left = orthonormal(n, d + 1, seed)
    # Make the columns orthogonal to the all-ones vector so the rows are already centred.
    ones = np.ones((n, 1)) / math.sqrt(n)
    left = left - ones @ (ones.T @ left)
    left, _ = np.linalg.qr(left[:, :d])
    return left * np.sqrt((n - 1) * eigenvalues) @ orthonormal(d, d, seed + 1).T


def test_rankme_of_identity_is_its_size():
    assert rankme(np.eye(64)) == pytest.approx(64, rel=1e-4)
    assert rankme_norm(np.eye(64)) == pytest.approx(1.0, rel=1e-4)


def test_rankme_of_rank_k_matrix_with_equal_singular_values_is_k():
    z = orthonormal(200, 5, seed=0) @ orthonormal(48, 5, seed=1).T * 3.0
    assert rankme(z) == pytest.approx(5, rel=1e-3)
    assert rankme_norm(z) == pytest.approx(5 / 48, rel=1e-3)


def test_rankme_ignores_the_mean_so_a_constant_matrix_has_rank_one():
    z = np.tile(np.random.default_rng(0).standard_normal(32), (100, 1))
    assert rankme(z) == pytest.approx(1.0, abs=1e-3)


def test_rankme_accepts_tensors_and_arrays_alike():
    z = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    assert rankme(torch.from_numpy(z)) == pytest.approx(rankme(z), rel=1e-12)


def test_alpha_req_recovers_an_exact_power_law():
    spectrum = np.arange(1, 129, dtype=np.float64) ** -1.5
    alpha, r2 = alpha_req(with_covariance_spectrum(spectrum, n=300))
    assert alpha == pytest.approx(1.5, abs=1e-6)
    assert r2 == pytest.approx(1.0, abs=1e-9)


def test_alpha_req_recovers_a_sampled_power_law_within_005():
    d, n = 128, 20_000
    rng = np.random.default_rng(0)
    scales = np.arange(1, d + 1, dtype=np.float64) ** -0.75  # variance i^-1.5
    z = rng.standard_normal((n, d)) * scales @ orthonormal(d, d, seed=3).T
    alpha, r2 = alpha_req(z)
    assert alpha == pytest.approx(1.5, abs=0.05)
    assert r2 > 0.99


def test_alpha_req_clips_the_fit_range_to_the_available_eigenvalues():
    spectrum = np.arange(1, 41, dtype=np.float64) ** -2.0
    alpha, _ = alpha_req(with_covariance_spectrum(spectrum, n=100), fit_range=(10, 100))
    assert alpha == pytest.approx(2.0, abs=1e-6)


def test_alpha_req_is_nan_for_collapsed_features():
    alpha, r2 = alpha_req(np.ones((50, 32)))
    assert math.isnan(alpha) and math.isnan(r2)


def test_alpha_req_with_too_few_samples_states_the_minimum():
    with pytest.raises(JepaEvalError, match="N >= 12"):
        alpha_req(np.random.default_rng(0).standard_normal((8, 64)))


def test_lidar_equals_rank_of_well_separated_class_means():
    rank, per_sign, q, d = 4, 5, 10, 24
    rng = np.random.default_rng(0)
    # Class means at +/- 100 e_j (j < rank): their covariance has `rank` equal eigenvalues.
    means = np.concatenate([s * 100.0 * np.eye(d)[:rank] for s in (1, -1)] * per_sign)
    views = means[:, None, :] + 0.1 * rng.standard_normal((means.shape[0], q, d))
    assert lidar(views) == pytest.approx(rank, abs=0.05)


def test_lidar_of_views_without_class_structure_is_near_the_dimension():
    """Independent isotropic views: class means spread like the noise in every direction, so the
    LDA eigenvalues are all alike up to sampling error (40 images) and LiDAR nears D = 8."""
    values = [lidar(np.random.default_rng(seed).standard_normal((40, 10, 8))) for seed in range(3)]
    assert all(6.0 < value < 8.0 for value in values)


def test_lidar_of_fully_collapsed_views_is_the_dimension_as_the_formula_gives():
    # Sigma_b = 0: every lambda is 0, eps makes p uniform. LiDAR must be read with RankMe.
    assert lidar(np.ones((5, 3, 8))) == pytest.approx(8.0, rel=1e-6)


def test_lidar_rejects_a_single_view_per_image():
    with pytest.raises(JepaEvalError, match="q = 1"):
        lidar(np.zeros((10, 1, 4)))


def test_feature_std_of_identity_is_known():
    d = 16
    assert feature_std(np.eye(d)) == pytest.approx(math.sqrt(d - 1) / d, rel=1e-12)


def test_isotropic_features_have_std_near_inverse_sqrt_dim():
    z = np.random.default_rng(0).standard_normal((4000, 64))
    assert feature_std(z) == pytest.approx(1 / 8, rel=0.05)


def test_all_equal_rows_are_collapsed_on_every_metric():
    z = np.tile(np.arange(1.0, 33.0), (40, 1))
    rows = {m.name: m.value for m in rank_metrics(z)}
    assert rows["rankme"] == pytest.approx(1.0, abs=1e-3)
    assert rows["mean_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert rows["feature_std"] == pytest.approx(0.0, abs=1e-12)
    assert rows["uniformity"] == pytest.approx(0.0, abs=1e-6)
    healthy = {"rankme": 30.0, "rankme_norm": 0.5, "feature_std": 0.1}
    assert CollapseRule().first_collapse([1, 2], [healthy, rows]) == 2


def test_mean_cosine_excludes_the_diagonal():
    z = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    # Pairs: (0,1) 0, (0,2) -1, (1,2) 0, each twice -> -2 / 6.
    assert mean_cosine(z) == pytest.approx(-1 / 3, abs=1e-12)


def test_uniformity_of_antipodal_points_is_minus_4t():
    z = np.array([[0.0, 3.0], [0.0, -1.0]])
    assert uniformity(z, t=2) == pytest.approx(-8.0, abs=1e-6)
    assert uniformity(z, t=0.5) == pytest.approx(-2.0, abs=1e-6)


def test_uniformity_in_blocks_matches_the_direct_formula(monkeypatch):
    import jepa_eval.protocols.rank as rank_module

    z = np.random.default_rng(0).standard_normal((37, 5))
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    sq = ((unit[:, None] - unit[None]) ** 2).sum(-1)
    expected = np.log(np.exp(-2 * sq)[~np.eye(37, dtype=bool)].mean())
    monkeypatch.setattr(rank_module, "PAIR_BLOCK", 8)
    assert uniformity(z) == pytest.approx(expected, abs=1e-6)


def test_rank_metrics_returns_every_row_and_lidar_only_with_views():
    z = np.random.default_rng(0).standard_normal((64, 24))
    names = [m.name for m in rank_metrics(z)]
    assert names == ["rankme", "rankme_norm", "alpha_req", "alpha_req_r2", "feature_std",
                     "mean_cosine", "uniformity"]
    views = np.random.default_rng(1).standard_normal((10, 3, 24))
    assert "lidar" in [m.name for m in rank_metrics(z, lidar_views=views)]


def test_rank_metrics_on_one_sample_states_the_minimum():
    with pytest.raises(JepaEvalError, match="at least 2 samples"):
        rank_metrics(np.ones((1, 16)))


def test_non_finite_features_are_rejected():
    z = np.ones((20, 16))
    z[3, 2] = np.nan
    with pytest.raises(JepaEvalError, match="1 of 20 rows"):
        rankme(z)


def history(rankme: list[float], std: list[float], ceiling: float = 200.0) -> list[dict[str, float]]:
    """Measurements of a run whose RankMe ceiling min(N, D) is ``ceiling``."""
    return [{"rankme": r, "rankme_norm": r / ceiling, "feature_std": s} for r, s in zip(rankme, std)]


def test_collapse_is_the_first_epoch_below_a_fifth_of_the_running_peak():
    epochs = [0, 10, 20, 30, 40]
    assert CollapseRule().first_collapse(epochs, history([50.0, 120.0, 90.0, 20.0, 5.0], [0.1] * 5)) == 30


def test_collapse_flags_a_rankme_below_one_percent_of_its_ceiling_even_at_its_peak():
    """A run that never had rank (RankMe 1.5 of 200 possible) is collapsed from its first epoch."""
    assert CollapseRule().first_collapse([1, 2], history([1.5, 1.6], [0.1, 0.1])) == 1


def test_collapse_flags_vanishing_std_and_nan():
    rule = CollapseRule()
    assert rule.first_collapse([1, 2, 3], history([10, 10, 10], [0.1, 5e-4, 0.1])) == 2
    assert rule.first_collapse([1, 2, 3], history([10, float("nan"), 10], [0.1, 0.1, 0.1])) == 2


def test_collapse_is_none_for_a_healthy_run():
    assert CollapseRule().first_collapse([1, 2, 3], history([10.0, 30.0, 25.0], [0.05, 0.05, 0.04])) is None


def test_collapse_detection_rejects_mismatched_lengths_and_unordered_epochs():
    with pytest.raises(JepaEvalError, match="one measurement per epoch"):
        CollapseRule().first_collapse([1, 2], history([1.0], [0.1]))
    with pytest.raises(JepaEvalError, match="not increasing"):
        CollapseRule().first_collapse([2, 1], history([10.0, 10.0], [0.1, 0.1]))


def knn_history(knn: list[float]) -> list[dict[str, float]]:
    """Healthy rank metrics at every point, with the given quick k-NN top-1 (%)."""
    return [{"rankme": 50.0, "rankme_norm": 0.25, "feature_std": 0.05, "knn_top1": k} for k in knn]


def test_the_knn_part_of_the_rule_is_off_by_default():
    assert CollapseRule().first_collapse([1, 2, 3, 4, 5], knn_history([40, 35, 30, 25, 20])) is None


def test_collapse_when_the_quick_knn_falls_n_checkpoints_in_a_row():
    rule = CollapseRule(knn_falls=3)
    # falls at epochs 3 and 4, a rise at 5 restarts the count, then falls at 6, 7, 8
    knn = [40.0, 41.0, 39.0, 38.0, 42.0, 41.0, 40.5, 40.0]
    epoch, reason = rule.first_reason(list(range(1, 9)), knn_history(knn))
    assert epoch == 8
    assert reason == "the quick k-NN top-1 fell 3 times in a row (42.0 -> 41.0 -> 40.5 -> 40.0)"


def test_a_knn_fall_within_the_minimum_drop_does_not_count():
    history = knn_history([40.0, 39.8, 39.0, 38.0])  # falls of 0.2, 0.8, 1.0 points
    assert CollapseRule(knn_falls=2, knn_min_drop=0.5).first_collapse([1, 2, 3, 4], history) == 4
    assert CollapseRule(knn_falls=3, knn_min_drop=0.5).first_collapse([1, 2, 3, 4], history) is None
    assert CollapseRule(knn_falls=3).first_collapse([1, 2, 3, 4], history) == 4


def test_the_rule_refuses_a_negative_knn_setting():
    with pytest.raises(JepaEvalError, match="knn_falls >= 0"):
        CollapseRule(knn_falls=-1)
