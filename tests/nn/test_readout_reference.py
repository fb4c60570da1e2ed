"""The linear read-out's reduced fit and blocked marginals against straightforward references.

The reference fit is the direct algorithm: for each penalty, ``lstsq`` on the full stacked
design ``[m_t 1; root(λ n P̄)ᵀ 0]`` (per target column when the NaN patterns differ), then the noise
and the score from the explicit residuals.  The fast fit must choose the same penalty and give
the same weights and noise up to float64 rounding.
"""

import pytest
import torch

from ldmfilter.gaussian import linalg
from ldmfilter.nn import LinearReadout, fit_affine
from ldmfilter.nn import affine
from ldmfilter.nn.readout import MIN_NOISE_FRACTION, PENALTIES

f64 = torch.float64


def _reference_coef(x, y, feature_cov, penalty):
    design = torch.cat([x, torch.ones_like(x[:, :1])], 1)
    present = ~torch.isnan(y)

    def solve(rows, values):
        a, b = design[rows], values[rows]
        if feature_cov is not None:
            root = torch.linalg.cholesky(penalty * a.shape[0] * feature_cov + 1e-12 * torch.eye(x.shape[1], dtype=f64))
            a = torch.cat([a, torch.cat([root.mT, torch.zeros_like(root[:, :1])], 1)])
            b = torch.cat([b, torch.zeros(root.shape[0], b.shape[1], dtype=f64)])
        return torch.linalg.lstsq(a, b, driver="gelsd").solution

    if bool((present == present.any(1, keepdim=True)).all()):
        return solve(present.all(1), y)
    return torch.cat([solve(present[:, d], y[:, d : d + 1]) for d in range(y.shape[1])], 1)


def _reference_fit(means, targets, covs, diagonal):
    """Returns the chosen penalty, weight, bias and noise covariance."""
    x, y = means.reshape(-1, means.shape[-1]), targets.reshape(-1, targets.shape[-1])
    mean_cov = None if covs is None else covs.reshape(-1, *covs.shape[-2:]).mean(0)
    best = None
    for penalty in PENALTIES if covs is not None else (0.0,):
        coef = _reference_coef(x, y, mean_cov, penalty)
        W, b = coef[:-1].mT, coef[-1]
        residual = y - (x @ W.mT + b)
        present = ~torch.isnan(residual)
        filled, counts = residual.nan_to_num(0.0), present.to(f64)
        prop = None if mean_cov is None else W @ mean_cov @ W.mT
        dof = coef.shape[0]
        if diagonal:
            var = (filled**2).sum(0) / (counts.sum(0) - dof).clamp_min(1)
            noise = torch.diag(torch.maximum(var - (0 if prop is None else prop.diagonal()), MIN_NOISE_FRACTION * var))
        else:
            noise = filled.mT @ filled / (counts.mT @ counts - dof).clamp_min(1)
            floor = MIN_NOISE_FRACTION * float(noise.diagonal().min())
            values, vectors = torch.linalg.eigh(noise - (0 if prop is None else prop))
            noise = (vectors * values.clamp_min(floor)) @ vectors.mT
        total = noise if prop is None else prop + noise
        if bool((~present).any()) or y.shape[1] > 64:
            var = total.diagonal()
            score = float(torch.where(present, residual**2 / var + var.log(), 0.0).sum() / present.sum())
        else:
            factor = torch.linalg.cholesky(total)
            whitened = torch.linalg.solve_triangular(factor, residual.mT, upper=False)
            score = float((whitened**2).sum(0).mean() + 2 * factor.diagonal().log().sum())
        if best is None or score < best[0]:
            best = (score, penalty, W, b, noise)
    return best[1:]


def _data(n, T, S, D, seed, missing=None):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, T, S, generator=g, dtype=f64) * torch.logspace(0, -3, S, dtype=f64)  # poorly spread directions
    root = 0.4 * torch.randn(n, T, S, S, generator=g, dtype=f64) / S**0.5
    covs = root @ root.mT + 1e-3 * torch.eye(S, dtype=f64)
    hidden = means + (torch.linalg.cholesky(covs) @ torch.randn(n, T, S, 1, generator=g, dtype=f64)).squeeze(-1)
    targets = 0.5 + hidden @ torch.randn(S, D, generator=g, dtype=f64) + 0.2 * torch.randn(n, T, D, generator=g, dtype=f64)
    if missing == "rows":
        targets[1, 3:6] = float("nan")
        targets[4] = float("nan")
    elif missing == "columns":
        targets[::2, ::3, 1] = float("nan")
        targets[0, :, 2] = float("nan")
        targets[3, 4] = float("nan")
    return means, covs, targets


@pytest.mark.parametrize("missing", [None, "rows", "columns"])
@pytest.mark.parametrize("D,diagonal", [(3, False), (3, True), (70, True), (70, False)])
def test_fit_matches_the_direct_algorithm(missing, D, diagonal):
    means, covs, targets = _data(12, 25, 4, D, seed=D, missing=missing)
    for state_cov in (None, covs):
        fitted = LinearReadout.fit(means, targets, state_cov, diagonal=diagonal)
        penalty, W, b, noise = _reference_fit(means, targets, state_cov, diagonal)
        torch.testing.assert_close(fitted.weight, W, rtol=1e-10, atol=1e-10 * float(W.abs().max()))
        torch.testing.assert_close(fitted.bias, b, rtol=1e-10, atol=1e-10 * float(b.abs().max()))
        torch.testing.assert_close(fitted.noise_cov, noise, rtol=1e-10, atol=1e-10 * float(noise.abs().max()))


def test_penalty_choice_is_the_direct_algorithms_and_not_always_the_same():
    """The data are built so that different penalties win; the fast fit must follow each time."""
    chosen = set()
    for seed, spread in ((0, 1.0), (1, 1e-3)):
        g = torch.Generator().manual_seed(seed)
        n = 3000
        signal = torch.randn(n, generator=g, dtype=f64)
        nuisance = spread * torch.randn(n, generator=g, dtype=f64)
        means = torch.stack([signal, nuisance], 1)
        covs = torch.diag(torch.tensor([0.01, 1.0], dtype=f64)).expand(n, 2, 2)
        targets = (2 * signal + 20 * nuisance + 0.3 * torch.randn(n, generator=g, dtype=f64)).unsqueeze(1)
        penalty, W, _, _ = _reference_fit(means, targets, covs, False)
        chosen.add(penalty)
        torch.testing.assert_close(LinearReadout.fit(means, targets, covs).weight, W, rtol=1e-10, atol=0)
    assert len(chosen) == 2


@pytest.mark.parametrize("missing", [None, "rows", "columns"])
def test_fit_affine_matches_the_full_least_squares_in_row_blocks(monkeypatch, missing):
    means, covs, targets = _data(10, 30, 5, 9, seed=2, missing=missing)
    x, y = means.reshape(-1, 5), targets.reshape(-1, 9)
    P = covs.mean((0, 1))
    expected = _reference_coef(x, y, P, 0.3)
    torch.testing.assert_close(fit_affine(means, targets, P, 0.3), expected, rtol=1e-10, atol=1e-12)
    monkeypatch.setattr(affine, "CHUNK_BYTES", 8 * 9 * 7)  # 7 rows of targets at a time
    torch.testing.assert_close(fit_affine(means, targets, P, 0.3), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fit_affine(means, targets), _reference_coef(x, y, None, 0.0), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("missing", [None, "rows", "columns"])
def test_float32_targets_are_reduced_as_their_float64_values_block_by_block(monkeypatch, missing):
    """The targets are converted to float64 one row block at a time (never copied whole): the
    reduced problem equals the one of the same values given in float64."""
    means, _, targets = _data(6, 20, 4, 5, seed=4, missing=missing)
    single = targets.to(torch.float32)
    monkeypatch.setattr(affine, "CHUNK_BYTES", 8 * 5 * 9)  # 9 rows of targets at a time
    ours, reference = affine.reduce_affine(means, single), affine.reduce_affine(means, single.to(f64))
    assert ours.missing == reference.missing and torch.equal(ours.counts, reference.counts)
    for mine, theirs in zip(ours.blocks, reference.blocks, strict=True):
        for name in ("factor", "projected", "residual_ss"):
            assert torch.equal(getattr(mine, name), getattr(theirs, name)), name


@pytest.mark.parametrize("wobble", [0.0, 1e-12])
def test_rank_deficient_features_are_cut_like_the_full_problem(wobble):
    """A constant state (collinear with the intercept) and a near-copy of another.

    With ``wobble=1e-12`` the smallest singular value (~1e-13) lies between gelsd's default
    cut-offs for the full problem (``eps · 160`` rows) and for the reduced one (``eps · 5``):
    only the full problem's ``rcond`` gives the reference's minimum-norm answer (~50, not ~1e13).
    """
    means, _, targets = _data(8, 20, 4, 3, seed=5)
    means[..., 0] = 2.0
    means[..., 1] = 3 * means[..., 2] * (1 + wobble * torch.randn(8, 20, dtype=f64, generator=torch.Generator().manual_seed(0)))
    x, y = means.reshape(-1, 4), targets.reshape(-1, 3)
    expected = _reference_coef(x, y, None, 0.0)
    assert float(expected.abs().max()) < 100
    torch.testing.assert_close(fit_affine(means, targets), expected, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------ marginals


def _readout(D=40, S=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(D, D, generator=g, dtype=f64)
    return LinearReadout(torch.randn(D, S, generator=g, dtype=f64), torch.randn(D, generator=g, dtype=f64), noise @ noise.mT)


def _reference_marginal(readout, mean, cov):
    full_mean, full_cov = readout(mean, cov)
    return full_mean, full_cov.diagonal(dim1=-2, dim2=-1)


def test_marginal_in_small_blocks_equals_the_full_moments(monkeypatch):
    readout = _readout()
    mean = torch.randn(6, 9, 5, dtype=f64)
    root = torch.randn(6, 9, 5, 5, dtype=f64)
    cov = root @ root.mT
    expected = _reference_marginal(readout, mean, cov)
    monkeypatch.setattr(linalg, "QUADRATIC_CHUNK_BYTES", 8 * 25 * 3)  # 3 outputs × 1 row per block
    for got, want in zip(readout.marginal(mean, cov), expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_marginal_with_a_shared_covariance_neither_expands_nor_aliases():
    readout = _readout()
    mean = torch.randn(4, 9, 5, dtype=f64)
    root = torch.randn(9, 5, 5, dtype=f64)
    shared = root @ root.mT
    expected = _reference_marginal(readout, mean, shared.expand(4, 9, 5, 5))
    for cov in (shared.expand(4, 9, 5, 5), shared):  # a broadcast view, or fewer leading axes than the mean
        out_mean, var = readout.marginal(mean, cov)
        torch.testing.assert_close(out_mean, expected[0])
        torch.testing.assert_close(var, expected[1], rtol=1e-12, atol=1e-12)
        assert var.shape == (4, 9, 40) and var.is_contiguous()  # fresh memory: safe to write into
