"""Entropy estimators against samples of known differential entropy, plus their invariances,
gradients, subsampling and input checks.

Closed forms used (nats): Gaussian ``N(0, Σ)`` in ``d`` dimensions ``H = ½ log((2πe)^d |Σ|)``;
uniform on a box ``H = log volume``.  All accuracy checks use a fixed seed and float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from ldmfilter.training.entropy import (
    ENTROPY_ESTIMATORS,
    entropy,
    kde_entropy,
    knn_entropy,
    log_unit_ball_volume,
    logdet_entropy,
)

N = 4000
DT = torch.float64


def gaussian_samples(d: int, n: int = N, seed: int = 0):
    """Samples of N(0, Σ) with a random SPD Σ, its covariance and its entropy."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=DT)
    cov = a @ a.T / d + 0.5 * torch.eye(d, dtype=DT)
    z = torch.randn(n, d, generator=g, dtype=DT) @ torch.linalg.cholesky(cov).T
    return z, cov, gaussian_entropy(cov)


def gaussian_entropy(cov: torch.Tensor) -> float:
    d = cov.shape[0]
    return 0.5 * (d * math.log(2 * math.pi * math.e) + torch.logdet(cov).item())


def uniform_box(sides, n: int = N, seed: int = 0):
    """Samples uniform on [0, s_1] x ... x [0, s_d] and the box's log-volume."""
    g = torch.Generator().manual_seed(seed)
    sides = torch.tensor(sides, dtype=DT)
    z = torch.rand(n, len(sides), generator=g, dtype=DT) * sides
    return z, sides.log().sum().item()


@pytest.fixture(scope="module")
def gauss2():
    return gaussian_samples(2)


@pytest.fixture(scope="module")
def gauss5():
    return gaussian_samples(5)


@pytest.fixture(scope="module")
def box2():
    return uniform_box([1.0, 2.0])


# ----------------------------------------------------------------------------- known entropies


def test_unit_ball_volume():
    assert log_unit_ball_volume(1) == pytest.approx(math.log(2.0))
    assert log_unit_ball_volume(2) == pytest.approx(math.log(math.pi))
    assert log_unit_ball_volume(3) == pytest.approx(math.log(4.0 / 3.0 * math.pi))


@pytest.fixture(scope="module")
def knn_estimates(gauss2, gauss5, box2):
    """(unclipped, clip 0.9, clip 1.0, true) k = 3 estimates per sample set, computed once."""
    out = {}
    for name, (z, *_, h_true) in {"gauss2": gauss2, "gauss5": gauss5, "box2": box2}.items():
        out[name] = tuple(knn_entropy(z, k=3, clip_quantile=q).item() for q in (None, 0.9, 1.0)) + (h_true,)
    return out


@pytest.mark.parametrize("fixture, tol", [("gauss2", 0.06), ("gauss5", 0.1), ("box2", 0.05)])
def test_knn_unclipped_matches_true_entropy(fixture, tol, knn_estimates):
    unclipped, _, _, h_true = knn_estimates[fixture]
    assert unclipped == pytest.approx(h_true, abs=tol)


@pytest.mark.parametrize("fixture", ["gauss2", "gauss5", "box2"])
def test_knn_clipping_biases_downwards(fixture, knn_estimates):
    """Clipping only shrinks k-NN distances, so the clipped estimate is never above the unclipped
    one; for a Gaussian (long tail of k-NN distances) it is low by about 0.1 nats."""
    unclipped, clipped, clip_one, h_true = knn_estimates[fixture]
    assert clipped <= unclipped
    assert clip_one == pytest.approx(unclipped, abs=1e-12)
    if fixture.startswith("gauss"):
        assert -0.25 < clipped - unclipped < -0.05
        assert clipped < h_true - 0.03
    else:  # bounded support: the k-NN distances have a short tail, the bias is small
        assert -0.1 < clipped - unclipped < 0.0


def test_kde_matches_smoothed_gaussian(gauss2):
    """For large N the resubstitution estimate tends to the cross-entropy −E_p log(p ∗ N(0, h²I)),
    which for a Gaussian lies between H(p) and H(p ∗ N(0, h²I)) = ½ log|2πe(Σ + h²I)|."""
    z, cov, h_true = gauss2
    d, h = 2, 1.0
    smoothed = cov + h**2 * torch.eye(d, dtype=DT)
    h_smoothed = gaussian_entropy(smoothed)
    cross = 0.5 * (
        d * math.log(2 * math.pi)
        + torch.logdet(smoothed).item()
        + torch.trace(torch.linalg.solve(smoothed, cov)).item()
    )
    est = kde_entropy(z, bandwidth=h).item()
    assert est == pytest.approx(cross, abs=0.05)
    assert h_true < est < h_smoothed
    assert est == pytest.approx(h_smoothed, abs=0.6)  # loose: the smoothed entropy itself


def test_kde_bandwidth_bias(gauss2):
    """A moderate bandwidth approaches H(p); a too-small one is pulled down by the self term
    N(z_i; z_i, h²I) / N of the resubstitution estimate."""
    z, _, h_true = gauss2
    assert kde_entropy(z, bandwidth=0.2).item() == pytest.approx(h_true, abs=0.05)
    assert kde_entropy(z[:1000], bandwidth=0.05).item() < h_true - 0.2


@pytest.mark.parametrize("fixture", ["gauss2", "gauss5"])
def test_logdet_exact_for_gaussian(fixture, request):
    z, _, h_true = request.getfixturevalue(fixture)
    assert logdet_entropy(z).item() == pytest.approx(h_true, abs=0.05)


def test_logdet_overestimates_uniform(box2):
    """The Gaussian maximises entropy at fixed covariance: the LogDet estimate of a uniform box
    is its Gaussian counterpart, ½ d log(2πe/12) ≈ 0.176 d nats above the true log-volume."""
    z, h_true = box2
    est = logdet_entropy(z).item()
    assert est >= h_true + 0.3
    assert est == pytest.approx(h_true + math.log(2 * math.pi * math.e / 12.0), abs=0.03)


# ----------------------------------------------------------------------------- invariances


@pytest.fixture(scope="module")
def small():
    g = torch.Generator().manual_seed(3)
    return torch.randn(300, 3, generator=g, dtype=DT)


@pytest.mark.parametrize("clip", [None, 0.9])
@pytest.mark.parametrize("c", [0.25, 3.0])
def test_knn_scaling_shifts_by_d_log_c(small, c, clip):
    d = small.shape[1]
    diff = knn_entropy(c * small, clip_quantile=clip) - knn_entropy(small, clip_quantile=clip)
    assert diff.item() == pytest.approx(d * math.log(c), abs=1e-9)


def test_logdet_scaling_shifts_by_d_log_c(small):
    d, c = small.shape[1], 3.0
    exact = logdet_entropy(c * small, eps=0.0) - logdet_entropy(small, eps=0.0)
    assert exact.item() == pytest.approx(d * math.log(c), abs=1e-9)
    ridge = logdet_entropy(c * small) - logdet_entropy(small)
    assert ridge.item() == pytest.approx(d * math.log(c), abs=1e-3)


def test_kde_scaling(small):
    d, c = small.shape[1], 2.0
    assert kde_entropy(c * small).item() > kde_entropy(small).item()
    # scaling samples and bandwidth together shifts by exactly d log c
    both = kde_entropy(c * small, bandwidth=c * 0.7) - kde_entropy(small, bandwidth=0.7)
    assert both.item() == pytest.approx(d * math.log(c), abs=1e-9)


@pytest.mark.parametrize("method", sorted(ENTROPY_ESTIMATORS))
def test_translation_and_permutation_invariant(small, method):
    ref = entropy(small, method).item()
    shift = torch.tensor([5.0, -2.0, 1.0], dtype=DT)
    perm = torch.randperm(small.shape[0], generator=torch.Generator().manual_seed(0))
    assert entropy(small + shift, method).item() == pytest.approx(ref, abs=1e-8)
    assert entropy(small[perm], method).item() == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("method", sorted(ENTROPY_ESTIMATORS))
def test_float32_close_to_float64(small, method):
    est32 = entropy(small.float(), method)
    assert est32.dtype == torch.float32 and est32.shape == ()
    assert est32.item() == pytest.approx(entropy(small, method).item(), abs=1e-3)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "method, options",
    [("knn", {"clip_quantile": None}), ("kde", {"bandwidth": 0.8}), ("logdet", {})],
)
def test_gradcheck(method, options):
    # (not with clipping: the quantile threshold is detached by design, so finite differences,
    # which see it move, disagree with the analytical gradient)
    z = torch.randn(12, 2, generator=torch.Generator().manual_seed(5), dtype=DT).requires_grad_(True)
    assert gradcheck(lambda x: entropy(x, method, **options), (z,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", sorted(ENTROPY_ESTIMATORS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_with_duplicate_points(method, dtype):
    """k + 2 copies of one point make its k-NN distance zero: the estimate and gradient stay finite."""
    g = torch.Generator().manual_seed(7)
    base = torch.randn(50, 2, generator=g, dtype=dtype)
    z = torch.cat([base, base[:1].repeat(5, 1)]).requires_grad_(True)
    options = {"clip_quantile": None} if method == "knn" else {}
    est = entropy(z, method, **options)
    (grad,) = torch.autograd.grad(est, z)
    assert torch.isfinite(est) and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    "method, options",
    [("knn", {"clip_quantile": None}), ("knn", {"clip_quantile": 0.9}), ("kde", {}), ("logdet", {})],
)
def test_gradient_ascent_spreads_points(method, options):
    """A few normalised gradient-ascent steps raise the estimate and the total variance."""
    z = torch.randn(300, 2, generator=torch.Generator().manual_seed(1), dtype=DT)
    start_est = entropy(z, method, **options).item()
    start_spread = torch.cov(z.T).trace().item()
    for _ in range(5):
        z.requires_grad_(True)
        (grad,) = torch.autograd.grad(entropy(z, method, **options), z)
        z = (z + 0.02 * grad / grad.abs().max()).detach()
    assert entropy(z, method, **options).item() > start_est + 0.01
    assert torch.cov(z.T).trace().item() > start_spread


def test_knn_clipped_points_get_no_gradient(small):
    z = small.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(knn_entropy(z, clip_quantile=None), z)
    (grad_clip,) = torch.autograd.grad(knn_entropy(z, clip_quantile=0.5), z)
    # with half the distances frozen, fewer rows take part in the gradient
    assert (grad_clip.abs().sum(1) > 0).sum() < (grad.abs().sum(1) > 0).sum()


# ----------------------------------------------------------------------------- subsampling


def test_subsample_reproducible_with_generator(gauss2):
    z, _, h_true = gauss2
    a = knn_entropy(z, subsample=1000, generator=torch.Generator().manual_seed(11))
    b = knn_entropy(z, subsample=1000, generator=torch.Generator().manual_seed(11))
    c = knn_entropy(z, subsample=1000, generator=torch.Generator().manual_seed(12))
    assert a.item() == b.item()
    assert a.item() != c.item()
    assert a.item() == pytest.approx(h_true, abs=0.2)


def test_subsample_at_least_n_uses_all_rows(small):
    full = knn_entropy(small)
    assert knn_entropy(small, subsample=small.shape[0]).item() == full.item()
    assert knn_entropy(small, subsample=10 * small.shape[0]).item() == full.item()


def test_subsample_gradient_reaches_only_the_subset(small):
    z = small.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(
        knn_entropy(z, subsample=50, clip_quantile=None, generator=torch.Generator().manual_seed(0)), z
    )
    touched = (grad.abs().sum(1) > 0).sum().item()
    assert 0 < touched <= 50


# ----------------------------------------------------------------------------- dispatch & errors


def test_dispatcher(small):
    assert set(ENTROPY_ESTIMATORS) == {"knn", "kde", "logdet"}
    assert entropy(small, "kde", bandwidth=0.5).item() == kde_entropy(small, bandwidth=0.5).item()
    assert entropy(small, "knn", k=4).item() == knn_entropy(small, k=4).item()
    assert entropy(small).item() == knn_entropy(small).item()
    assert entropy(small, "logdet", eps=0.0).item() == logdet_entropy(small, eps=0.0).item()


@pytest.mark.parametrize("method", ["gauss", "KNN", None, ["knn"]])
def test_unknown_method(small, method):
    with pytest.raises(ValueError, match="unknown entropy method"):
        entropy(small, method)


@pytest.mark.parametrize("method", sorted(ENTROPY_ESTIMATORS))
@pytest.mark.parametrize("shape", [(10,), (2, 10, 3), (10, 0)])
def test_shape_errors(method, shape):
    with pytest.raises(ValueError, match=r"shape \(" + ", ".join(str(s) for s in shape)):
        entropy(torch.zeros(shape, dtype=DT), method)


@pytest.mark.parametrize("method, n", [("knn", 3), ("kde", 1), ("logdet", 1)])
def test_too_few_samples(method, n):
    with pytest.raises(ValueError, match=rf"shape \({n}, 2\)"):
        entropy(torch.randn(n, 2, dtype=DT), method)


def test_knn_needs_more_than_k_samples():
    z = torch.randn(6, 2, dtype=DT)
    assert torch.isfinite(knn_entropy(z, k=5))
    with pytest.raises(ValueError, match=r"more than k=6.*shape \(6, 2\)"):
        knn_entropy(z, k=6)


@pytest.mark.parametrize("method", sorted(ENTROPY_ESTIMATORS))
def test_type_and_value_errors(method):
    with pytest.raises(TypeError, match="floating"):
        entropy(torch.ones(10, 2, dtype=torch.int64), method)
    with pytest.raises(TypeError, match="torch.Tensor"):
        entropy([[0.0, 1.0]] * 10, method)
    bad = torch.randn(10, 2, dtype=DT)
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        entropy(bad, method)


@pytest.mark.parametrize(
    "func, options, match",
    [
        (knn_entropy, {"k": 0}, "k must"),
        (knn_entropy, {"k": 2.0}, "k must"),
        (knn_entropy, {"clip_quantile": 0.0}, "clip_quantile"),
        (knn_entropy, {"clip_quantile": 1.5}, "clip_quantile"),
        (knn_entropy, {"subsample": 3}, "subsample"),
        (knn_entropy, {"subsample": 10.0}, "subsample"),
        (kde_entropy, {"bandwidth": 0.0}, "bandwidth"),
        (kde_entropy, {"bandwidth": float("inf")}, "bandwidth"),
        (logdet_entropy, {"eps": -1e-3}, "eps"),
    ],
)
def test_option_errors(func, options, match):
    with pytest.raises(ValueError, match=match):
        func(torch.randn(20, 2, dtype=DT), **options)
