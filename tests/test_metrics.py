"""Scores in ldmfilter.metrics: worked examples, references (scipy) and seeded Monte Carlo."""

from __future__ import annotations

import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate, stats

import ldmfilter
from ldmfilter.metrics import (
    chi2_band,
    consistency,
    crps_gaussian,
    gaussian_interval_coverage,
    gaussian_nll,
    interval_coverage,
    linear_probe_r2,
    mean_correlation_coefficient,
    nees,
    nis,
    rmse,
)

LOG_2PI = math.log(2 * math.pi)


def random_spd(rng, dim, batch=()):
    a = rng.standard_normal(batch + (dim, dim))
    return a @ np.swapaxes(a, -1, -2) + dim * np.eye(dim)


# --------------------------------------------------------------------------- rmse


def test_rmse_worked_example_skips_missing():
    # errors 0, 2, (missing), 3  ->  sqrt((0 + 4 + 9) / 3)
    assert rmse([1.0, 2.0, np.nan, 4.0], [1.0, 0.0, 5.0, 1.0]) == pytest.approx(math.sqrt(13 / 3))


def test_rmse_axis_and_broadcast_prediction():
    y = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, 2.0]])
    out = rmse(y, 0.0, axis=0)  # column 0: sqrt((1 + 9) / 2); column 1: sqrt(4 / 1)
    np.testing.assert_allclose(out, [math.sqrt(5.0), 2.0])
    assert np.isnan(rmse(np.array([[1.0, np.nan]]), 0.0, axis=0)[1])


def test_rmse_bad_inputs():
    with pytest.raises(ValueError, match="no observed"):
        rmse([np.nan, np.nan], [0.0, 0.0])
    with pytest.raises(ValueError, match=r"y_pred has shape \(3,\).*\(4,\)"):
        rmse(np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="y_true contains inf"):
        rmse([1.0, np.inf], [0.0, 0.0])
    with pytest.raises(ValueError, match="y_pred contains NaN"):
        rmse([1.0, 2.0], [0.0, np.nan])
    with pytest.raises(TypeError, match="y_true must be a real numeric array"):
        rmse(["a", "b"], [0.0, 0.0])


# --------------------------------------------------------------------------- Gaussian NLL


def test_gaussian_nll_worked_examples():
    # standard normal at its mean: ½ log 2π
    assert gaussian_nll([0.0], [0.0], var=[1.0]) == pytest.approx(0.5 * LOG_2PI)
    # Σ = [[2, 1], [1, 2]]: |Σ| = 3, Σ⁻¹ = [[2, -1], [-1, 2]] / 3, r = (1, 1): rᵀΣ⁻¹r = 2/3
    expected = 0.5 * (2 * LOG_2PI + math.log(3.0) + 2.0 / 3.0)
    assert gaussian_nll([1.0, 1.0], [0.0, 0.0], cov=[[2.0, 1.0], [1.0, 2.0]]) == pytest.approx(expected)
    # diagonal: var = (1, 4), r = (1, 2): ½[2 log 2π + log 4 + 1 + 1]
    assert gaussian_nll([1.0, 2.0], [0.0, 0.0], var=[1.0, 4.0]) == pytest.approx(0.5 * (2 * LOG_2PI + math.log(4.0) + 2.0))


def test_gaussian_nll_matches_scipy_logpdf_per_step():
    rng = np.random.default_rng(0)
    cov = random_spd(rng, 3, (2, 5))
    mean = rng.standard_normal((2, 5, 3))
    y = rng.standard_normal((2, 5, 3))
    per_step = gaussian_nll(y, mean, cov=cov, reduce=False)
    assert per_step.shape == (2, 5)
    reference = np.array(
        [[-stats.multivariate_normal(mean[b, t], cov[b, t]).logpdf(y[b, t]) for t in range(5)] for b in range(2)]
    )
    np.testing.assert_allclose(per_step, reference, rtol=1e-10)
    assert gaussian_nll(y, mean, cov=cov) == pytest.approx(reference.mean())
    shared = gaussian_nll(y, mean, cov=cov[0, 0], reduce=False)
    np.testing.assert_allclose(shared[1, 2], -stats.multivariate_normal(mean[1, 2], cov[0, 0]).logpdf(y[1, 2]))


def test_gaussian_nll_var_equals_diagonal_cov():
    rng = np.random.default_rng(1)
    y, mean = rng.standard_normal((2, 4, 3)), rng.standard_normal((4, 3))
    var = rng.uniform(0.5, 2.0, (2, 4, 3))
    cov = var[..., None] * np.eye(3)
    np.testing.assert_allclose(
        gaussian_nll(y, mean, var=var, reduce=False), gaussian_nll(y, mean, cov=cov, reduce=False), rtol=1e-12
    )


def test_gaussian_nll_missing_entries_use_the_marginal():
    rng = np.random.default_rng(2)
    cov = random_spd(rng, 3)
    mean = rng.standard_normal(3)
    y = rng.standard_normal((3, 3))
    y[0, 1] = np.nan  # dims 0 and 2 observed
    y[2, :] = np.nan  # nothing observed
    per_step = gaussian_nll(y, mean, cov=cov, reduce=False)
    keep = [0, 2]
    np.testing.assert_allclose(
        per_step[0], -stats.multivariate_normal(mean[keep], cov[np.ix_(keep, keep)]).logpdf(y[0, keep])
    )
    np.testing.assert_allclose(per_step[1], -stats.multivariate_normal(mean, cov).logpdf(y[1]))
    assert np.isnan(per_step[2])
    assert gaussian_nll(y, mean, cov=cov) == pytest.approx(per_step[:2].mean())
    diag = gaussian_nll(y, mean, var=np.diag(cov), reduce=False)
    np.testing.assert_allclose(diag[0], -stats.norm(mean[keep], np.sqrt(np.diag(cov)[keep])).logpdf(y[0, keep]).sum())


def test_gaussian_nll_bad_inputs():
    y = np.zeros((4, 2))
    with pytest.raises(ValueError, match="exactly one of var="):
        gaussian_nll(y, y, var=np.ones(2), cov=np.eye(2))
    with pytest.raises(ValueError, match="exactly one of var="):
        gaussian_nll(y, y)
    with pytest.raises(ValueError, match=r"cov must have shape \(\.\.\., 2, 2\)"):
        gaussian_nll(y, y, cov=np.eye(3))
    with pytest.raises(ValueError, match="cov must be positive definite"):
        gaussian_nll(y, y, cov=np.diag([1.0, -1.0]))
    with pytest.raises(ValueError, match="cov must be symmetric"):
        gaussian_nll(y, y, cov=[[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match="var must be strictly positive"):
        gaussian_nll(y, y, var=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"mean has shape \(3, 2\)"):
        gaussian_nll(y, np.zeros((3, 2)), var=np.ones(2))
    with pytest.raises(ValueError, match=r"cov has shape \(3, 2, 2\)"):
        gaussian_nll(y, y, cov=np.broadcast_to(np.eye(2), (3, 2, 2)))
    with pytest.raises(ValueError, match="y has no observed"):
        gaussian_nll(np.full((2, 2), np.nan), np.zeros(2), var=np.ones(2))
    with pytest.raises(ValueError, match="var contains inf"):
        gaussian_nll(y, y, var=[1.0, np.inf])


# --------------------------------------------------------------------------- CRPS


def test_crps_worked_examples():
    # z = 0: σ (2 φ(0) − 1/√π) = σ (√2 − 1)/√π
    assert crps_gaussian(3.0, 3.0, 2.0) == pytest.approx(2.0 * (math.sqrt(2) - 1) / math.sqrt(math.pi))
    # z = 1, σ = 1: (2Φ(1) − 1) + 2φ(1) − 1/√π with Φ(1) = 0.8413447460685429, φ(1) = 0.24197072451914337
    expected = (2 * 0.8413447460685429 - 1) + 2 * 0.24197072451914337 - 1 / math.sqrt(math.pi)
    assert crps_gaussian(1.0, 0.0, 1.0) == pytest.approx(expected, rel=1e-12)
    # tiny σ: the absolute error
    assert crps_gaussian(2.5, 1.0, 1e-9) == pytest.approx(1.5, rel=1e-6)


@pytest.mark.parametrize("y, mu, sigma", [(0.3, 0.0, 1.0), (-2.0, 1.0, 0.5), (4.0, 3.5, 3.0)])
def test_crps_matches_numerical_integration(y, mu, sigma):
    cdf = stats.norm(mu, sigma).cdf
    below, _ = integrate.quad(lambda x: cdf(x) ** 2, -np.inf, y)
    above, _ = integrate.quad(lambda x: (cdf(x) - 1.0) ** 2, y, np.inf)
    assert crps_gaussian(y, mu, sigma) == pytest.approx(below + above, rel=1e-7)


def test_crps_mean_over_observed_and_per_entry():
    y = np.array([[0.0, np.nan], [1.0, 0.0]])
    per_entry = crps_gaussian(y, 0.0, 1.0, reduce=False)
    assert np.isnan(per_entry[0, 1])
    assert crps_gaussian(y, 0.0, 1.0) == pytest.approx(np.nanmean(per_entry))
    with pytest.raises(ValueError, match="std must be strictly positive"):
        crps_gaussian(y, 0.0, [1.0, -1.0])
    with pytest.raises(ValueError, match=r"std has shape \(3,\)"):
        crps_gaussian(y, 0.0, np.ones(3))


# --------------------------------------------------------------------------- coverage


def test_interval_coverage_worked_example():
    # y = 0 outside [0.5, 2], y = 1 and y = 2 inside (bounds inclusive), NaN skipped: 2/3
    assert interval_coverage([0.0, 1.0, 2.0, np.nan], 0.5, 2.0) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="lower must not exceed upper"):
        interval_coverage([0.0], 1.0, 0.0)
    with pytest.raises(ValueError, match="y has no observed"):
        interval_coverage([np.nan], 0.0, 1.0)


@pytest.mark.parametrize("coverage", [0.5, 0.9])
def test_gaussian_interval_coverage_on_seeded_samples(coverage):
    rng = np.random.default_rng(3)
    mean, std = rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)
    y = mean + std * rng.standard_normal((5000, 4))
    assert gaussian_interval_coverage(y, mean, std, coverage) == pytest.approx(coverage, abs=0.015)
    assert gaussian_interval_coverage(y, mean, 0.5 * std, coverage) < coverage - 0.1  # overconfident
    with pytest.raises(ValueError, match="coverage must lie strictly between 0 and 1"):
        gaussian_interval_coverage(y, mean, std, 1.0)


# --------------------------------------------------------------------------- NEES / NIS / χ²


def test_nees_nis_worked_examples():
    # e = (1, 2), P = diag(1, 4): 1 + 4/4 = 2
    assert nees([1.0, 2.0], [0.0, 0.0], np.diag([1.0, 4.0])) == pytest.approx(2.0)
    # ν = 3, S = 9: 1
    assert nis([3.0], [[9.0]]) == pytest.approx(1.0)
    # Σ = [[2, 1], [1, 2]], ν = (1, 1): 2/3
    assert nis([1.0, 1.0], [[2.0, 1.0], [1.0, 2.0]]) == pytest.approx(2 / 3)


def test_nees_shared_and_per_step_covariances_agree():
    rng = np.random.default_rng(4)
    cov = random_spd(rng, 3)
    x, m = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 3))
    shared = nees(x, m, cov)
    assert shared.shape == (2, 5)
    np.testing.assert_allclose(shared, nees(x, m, np.broadcast_to(cov, (2, 5, 3, 3))), rtol=1e-12)
    e = (x - m)[1, 3]
    assert shared[1, 3] == pytest.approx(e @ np.linalg.solve(cov, e))


def test_nees_monte_carlo_mean_is_dof_and_consistent():
    rng = np.random.default_rng(5)
    dof, runs, steps = 3, 50, 40
    cov = random_spd(rng, dof, (steps,))
    mean = rng.standard_normal((runs, steps, dof))
    x = mean + np.einsum("tij,rtj->rti", np.linalg.cholesky(cov), rng.standard_normal((runs, steps, dof)))
    values = nees(x, mean, cov)
    assert values.mean() == pytest.approx(dof, abs=0.15)  # s.e. sqrt(2·3 / 2000) ≈ 0.055
    pooled = consistency(values, dof)
    assert pooled.consistent and pooled.lower < dof < pooled.upper
    per_step = consistency(values, dof, axis=0)  # Bar-Shalom: average over runs at each step
    assert per_step.mean.shape == (steps,)
    assert per_step.consistent.mean() >= 0.85  # about 95% of steps inside the band
    assert (per_step.lower, per_step.upper) == chi2_band(dof, runs)
    assert not consistency(nees(x, mean, 0.25 * cov), dof).consistent  # overconfident filter


def test_chi2_band_against_scipy_and_tables():
    lo, hi = chi2_band(2, 50)
    assert lo == pytest.approx(stats.chi2.ppf(0.025, 100) / 50)
    assert hi == pytest.approx(stats.chi2.ppf(0.975, 100) / 50)
    # one run of a scalar statistic: the χ²(1) 2.5% and 97.5% points from the tables
    assert chi2_band(1, 1) == pytest.approx((0.000982069, 5.023886), rel=1e-6)
    lo90, hi90 = chi2_band(2, 50, confidence=0.9)
    assert lo < lo90 < 2 < hi90 < hi


def test_consistency_bad_inputs():
    with pytest.raises(ValueError, match="dof must be at least 1"):
        chi2_band(0, 10)
    with pytest.raises(TypeError, match="n_runs must be an int"):
        chi2_band(2, 10.0)
    with pytest.raises(ValueError, match="confidence must lie strictly between 0 and 1"):
        chi2_band(2, 10, confidence=0.0)
    with pytest.raises(ValueError, match="values must be non-negative"):
        consistency([1.0, -1.0], 1)
    with pytest.raises(ValueError, match="x_true contains NaN"):
        nees([np.nan, 1.0], [0.0, 0.0], np.eye(2))
    with pytest.raises(ValueError, match="innov_cov must be positive definite"):
        nis([1.0, 1.0], np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"innov_cov must have shape \(\.\.\., 2, 2\)"):
        nis([1.0, 1.0], np.eye(3))


# --------------------------------------------------------------------------- representations


def test_linear_probe_r2_worked_example():
    # y = (0, 1, 2, 4) on x = (0, 1, 2, 3): Sxy = 6.5, Sxx = 5, Syy = 8.75, R² = Sxy² / (Sxx Syy) = 169/175
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert linear_probe_r2(x, [[0.0], [1.0], [2.0], [4.0]]) == pytest.approx(169 / 175)


def test_linear_probe_r2_exact_affine_and_held_out():
    rng = np.random.default_rng(6)
    weights, bias = rng.standard_normal((4, 2)), rng.standard_normal(2)
    feats, test_feats = rng.standard_normal((3, 30, 4)), rng.standard_normal((50, 4))
    assert linear_probe_r2(feats, feats @ weights + bias) == pytest.approx(1.0, abs=1e-10)
    assert linear_probe_r2(feats, feats @ weights + bias, test_feats, test_feats @ weights + bias) == pytest.approx(
        1.0, abs=1e-10
    )
    noisy = linear_probe_r2(feats, feats @ weights + bias, test_feats, rng.standard_normal((50, 2)))
    assert noisy < 0.2
    with pytest.raises(ValueError, match="give both test_features and test_targets"):
        linear_probe_r2(feats, feats, test_feats)
    with pytest.raises(ValueError, match="features and targets must share their leading axes"):
        linear_probe_r2(feats, feats[:, :-1])
    with pytest.raises(ValueError, match="test data must have 4 features"):
        linear_probe_r2(feats, feats, test_feats[:, :3], test_feats)
    with pytest.raises(ValueError, match="targets has constant column"):
        linear_probe_r2(feats, np.ones((3, 30, 1)))


def test_mcc_permuted_sign_flipped_copy_is_one_and_permutation_recovered():
    rng = np.random.default_rng(7)
    z = rng.standard_normal((2, 200, 4))
    perm, signs = np.array([2, 0, 3, 1]), np.array([1.0, -1.0, -1.0, 1.0])
    est = 3.0 * z[..., perm] * signs + 1.0  # est[..., j] = ±3 z[..., perm[j]] + 1
    result = mean_correlation_coefficient(z, est, return_matching=True)
    assert result.score == pytest.approx(1.0)
    np.testing.assert_array_equal(result.est_index, np.argsort(perm))  # true dim i is estimated by column argsort(perm)[i]
    np.testing.assert_array_equal(perm[result.est_index], result.true_index)
    assert mean_correlation_coefficient(z, est, method="spearman") == pytest.approx(1.0)


def test_mcc_dimension_mismatch_and_monotone_maps():
    rng = np.random.default_rng(8)
    z = rng.standard_normal((500, 2))
    est = np.concatenate([rng.standard_normal((500, 1)), np.exp(z[:, ::-1])], axis=1)  # noise column + monotone
    result = mean_correlation_coefficient(z, est, method="spearman", return_matching=True)
    assert result.score == pytest.approx(1.0)
    np.testing.assert_array_equal(result.true_index, [0, 1])
    np.testing.assert_array_equal(result.est_index, [2, 1])
    assert result.abs_correlation.shape == (2, 3)
    assert mean_correlation_coefficient(z, est) < 0.95  # Pearson is not invariant to exp
    assert mean_correlation_coefficient(est, z, method="spearman") == pytest.approx(1.0)  # more true than estimated dims


def test_mcc_independent_noise_is_near_zero():
    rng = np.random.default_rng(9)
    score = mean_correlation_coefficient(rng.standard_normal((2000, 3)), rng.standard_normal((2000, 3)))
    assert 0.0 <= score < 0.08


def test_mcc_bad_inputs():
    z = np.random.default_rng(10).standard_normal((20, 2))
    with pytest.raises(ValueError, match="method must be 'pearson' or 'spearman'"):
        mean_correlation_coefficient(z, z, method="kendall")
    with pytest.raises(ValueError, match="z_true and z_est must share their leading axes"):
        mean_correlation_coefficient(z, z[:10])
    with pytest.raises(ValueError, match=r"z_est has constant column\(s\) \[1\]"):
        mean_correlation_coefficient(z, np.stack([z[:, 0], np.ones(20)], axis=1))
    with pytest.raises(ValueError, match="z_est contains inf"):
        mean_correlation_coefficient(z, np.where(z > 1, np.inf, z))
    with pytest.raises(ValueError, match="at least 2 rows"):
        mean_correlation_coefficient(z[:1], z[:1])


# --------------------------------------------------------------------------- layering


def test_metrics_import_stays_light_and_maths_does_not_import_it():
    code = "import sys, ldmfilter.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    gaussian = pathlib.Path(ldmfilter.__file__).parent / "gaussian"
    assert not [p.name for p in gaussian.glob("*.py") if "metrics" in p.read_text()]
