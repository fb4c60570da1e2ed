"""EM for linear-Gaussian state-space models: exactness, monotonicity, pykalman, recovery, bad input.

The anchors: one ``em_step`` equals an independent dense computation (the whole trajectory and the
missing observation entries conditioned jointly by brute force, then the closed-form M-step written
as augmented least squares), and equals pykalman's ``em`` where the two define the same update.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pykalman import KalmanFilter as PykalmanKF

from ldmfilter.gaussian import (
    LinearGaussianParams,
    em_step,
    fit_em,
    initial_params_from_data,
    kalman_filter,
    linear_gaussian_log_likelihood,
)
from reference import LinearModel, _condition, random_model, random_spd, simulate

F64 = torch.float64


def _tensor(x, dtype=F64):
    return None if x is None else torch.as_tensor(np.asarray(x), dtype=dtype)


def _params(p: dict, dtype=F64) -> LinearGaussianParams:
    """LinearGaussianParams from a reference dict (keys A, Q, H, R, m0, P0, c and optional d)."""
    return LinearGaussianParams(
        A=_tensor(p["A"], dtype), Q=_tensor(p["Q"], dtype), H=_tensor(p["H"], dtype), R=_tensor(p["R"], dtype),
        initial_mean=_tensor(p["m0"], dtype), initial_cov=_tensor(p["P0"], dtype),
        transition_offset=_tensor(p.get("c"), dtype), observation_offset=_tensor(p.get("d"), dtype),
    )


def _model(rng, S, D, offsets=True):
    p = random_model(rng, S, D, offset="static" if offsets else None)
    p["d"] = rng.standard_normal(D) if offsets else None
    return p


def _data(rng, p, N, T):
    z = simulate(rng, p, T, batch=(N,))
    return z if p.get("d") is None else z + p["d"]


def _random_mask(rng, N, T, D, frac=0.3, shared=False):
    """Random per-element missingness plus a few fully missing and fully observed steps."""
    shape = (1 if shared else N, T, D)
    mask = rng.random(shape) > frac
    mask[:, 1::7] = False
    mask[:, 2::5] = True
    return np.broadcast_to(mask, (N, T, D)).copy()


def _with_nan(z, mask):
    out = z.copy()
    out[~mask] = np.nan
    return out


def _perturbed(params: LinearGaussianParams, rng) -> LinearGaussianParams:
    """A start away from the truth (but valid)."""
    S, D = params.state_dim, params.obs_dim
    return params.replace(
        A=0.6 * params.A, Q=params.Q + 0.3 * torch.eye(S, dtype=F64),
        H=params.H + 0.3 * _tensor(rng.standard_normal((D, S))), R=2.0 * params.R,
        initial_mean=torch.zeros(S, dtype=F64), initial_cov=torch.eye(S, dtype=F64),
        transition_offset=None if params.transition_offset is None else torch.zeros(S, dtype=F64),
        observation_offset=None if params.observation_offset is None else torch.zeros(D, dtype=F64),
    )


# ------------------------------------------------------------------------------------------------
# brute-force EM step


def _brute_force_em_step(z: np.ndarray, p: dict) -> dict:
    """One exact EM step by dense conditioning: E[v], E[v vᵀ] of v = (x_{0:T-1}, z_{0:T-1}) given the
    observed entries of z (NaN = missing), then augmented least squares for [A c], [H d]."""
    N, T, D = z.shape
    S = p["m0"].shape[0]
    model = LinearModel.from_params(T, p["A"], p["Q"], p["H"], p["R"], p["m0"], p["P0"], p["c"])
    mean, cov = model.joint()
    mean[T * S:] += np.tile(p["d"], T)
    stats = {k: 0.0 for k in ("Euu_x", "Eyu_x", "Eyy_x", "Euu_z", "Eyu_z", "Eyy_z")}
    x0_means, x0_second = [], []
    for n in range(N):
        flat = z[n].ravel()
        obs_idx = T * S + np.flatnonzero(~np.isnan(flat))
        v_mean, v_cov, _ = _condition(mean, cov, obs_idx, flat[obs_idx - T * S], np.arange(T * (S + D)))
        second = v_cov + np.outer(v_mean, v_mean)  # E[v vᵀ]

        def xs(t):
            return slice(t * S, (t + 1) * S)

        def zs(t):
            return slice(T * S + t * D, T * S + (t + 1) * D)

        def augmented(a, b):  # E[[a; 1][b; 1]ᵀ] for index slices a, b
            return np.block([[second[a, b], v_mean[a][:, None]], [v_mean[b][None, :], np.ones((1, 1))]])

        for t in range(T):
            if t > 0:
                stats["Euu_x"] = stats["Euu_x"] + augmented(xs(t - 1), xs(t - 1))
                stats["Eyu_x"] = stats["Eyu_x"] + np.hstack([second[xs(t), xs(t - 1)], v_mean[xs(t)][:, None]])
                stats["Eyy_x"] = stats["Eyy_x"] + second[xs(t), xs(t)]
            stats["Euu_z"] = stats["Euu_z"] + augmented(xs(t), xs(t))
            stats["Eyu_z"] = stats["Eyu_z"] + np.hstack([second[zs(t), xs(t)], v_mean[zs(t)][:, None]])
            stats["Eyy_z"] = stats["Eyy_z"] + second[zs(t), zs(t)]
        x0_means.append(v_mean[xs(0)])
        x0_second.append(second[xs(0), xs(0)])
    W_x = np.linalg.solve(stats["Euu_x"], stats["Eyu_x"].T).T
    W_z = np.linalg.solve(stats["Euu_z"], stats["Eyu_z"].T).T
    mu0 = np.mean(x0_means, axis=0)
    return dict(
        A=W_x[:, :S], c=W_x[:, S], Q=(stats["Eyy_x"] - W_x @ stats["Eyu_x"].T) / (N * (T - 1)),
        H=W_z[:, :S], d=W_z[:, S], R=(stats["Eyy_z"] - W_z @ stats["Eyu_z"].T) / (N * T),
        m0=mu0, P0=np.mean(x0_second, axis=0) - np.outer(mu0, mu0),
    )


FIELDS = dict(A="A", c="transition_offset", Q="Q", H="H", d="observation_offset", R="R", m0="initial_mean",
              P0="initial_cov")


@pytest.mark.parametrize("pattern", ["per_series", "shared", "full"])
def test_em_step_equals_brute_force_exact_em(pattern):
    """Partly missing steps with a non-diagonal R: the exact (conditional-covariance) M-step."""
    rng = np.random.default_rng(11)
    N, T, S, D = 3, 6, 2, 3
    p = _model(rng, S, D)
    z = _data(rng, p, N, T)
    if pattern != "full":
        z = _with_nan(z, _random_mask(rng, N, T, D, 0.4, shared=pattern == "shared"))
    expected = _brute_force_em_step(z, p)
    new, _ = em_step(_tensor(z), _params(p))
    for key, field in FIELDS.items():
        np.testing.assert_allclose(getattr(new, field).numpy(), expected[key], rtol=1e-9, atol=1e-9, err_msg=key)


def test_mask_argument_equals_nan_pattern():
    rng = np.random.default_rng(12)
    p = _model(rng, 2, 3)
    z = _data(rng, p, 4, 20)
    mask = _random_mask(rng, 4, 20, 3)
    by_nan, ll_nan = em_step(_tensor(_with_nan(z, mask)), _params(p))
    by_mask, ll_mask = em_step(_tensor(z), _params(p), mask=torch.as_tensor(mask))
    torch.testing.assert_close(ll_mask, ll_nan)
    for field in FIELDS.values():
        torch.testing.assert_close(getattr(by_mask, field), getattr(by_nan, field))


# ------------------------------------------------------------------------------------------------
# monotonicity and the returned log-likelihood


CASES = {
    "full": dict(mask=False, kwargs={}),
    "missing": dict(mask=True, kwargs={}),
    "fixed": dict(mask=True, kwargs=dict(fixed={"H", "initial_cov", "observation_offset"})),
    "diagonal": dict(mask=True, kwargs=dict(diagonal_Q=True, diagonal_R=True, fixed={"A"})),
}


@pytest.mark.parametrize("case", list(CASES))
def test_log_likelihood_never_decreases(case):
    rng = np.random.default_rng(21)
    N, T, S, D = 4, 60, 2, 3
    p = _model(rng, S, D)
    z = _data(rng, p, N, T)
    if CASES[case]["mask"]:
        z = _with_nan(z, _random_mask(rng, N, T, D))
    start = _perturbed(_params(p), rng)
    kwargs = CASES[case]["kwargs"]
    params, history = fit_em(_tensor(z), start, num_iters=25, tol=0.0, **kwargs)
    assert len(history) == 26
    steps = np.diff(history)
    assert (steps >= -1e-9 * abs(history[0])).all(), steps
    assert history[-1] > history[0] + 1.0
    for name in kwargs.get("fixed", ()):
        torch.testing.assert_close(getattr(params, name), getattr(start, name))
    if kwargs.get("diagonal_R"):
        assert torch.count_nonzero(params.R - torch.diag_embed(params.R.diagonal())) == 0
        assert torch.count_nonzero(params.Q - torch.diag_embed(params.Q.diagonal())) == 0


@pytest.mark.parametrize("missing", [False, True])
def test_returned_log_likelihood_is_the_filters(missing):
    rng = np.random.default_rng(31)
    N, T, S, D = 3, 25, 2, 3
    p = _model(rng, S, D)
    z = _data(rng, p, N, T)
    if missing:
        z = _with_nan(z, _random_mask(rng, N, T, D))
    params = _params(p)
    _, log_likelihood = em_step(_tensor(z), params)
    out = kalman_filter(
        _tensor(z) - params.observation_offset, params.A, params.Q, params.H, params.R, params.initial_mean,
        params.initial_cov, transition_offset=params.transition_offset,
    )
    torch.testing.assert_close(log_likelihood, out.log_likelihood.sum(), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(linear_gaussian_log_likelihood(_tensor(z), params), out.log_likelihood.sum())


def test_fit_em_history_and_tolerance():
    rng = np.random.default_rng(32)
    p = _model(rng, 2, 3)
    z = _tensor(_data(rng, p, 4, 40))
    start = _perturbed(_params(p), rng)
    params, history = fit_em(z, start, num_iters=50, tol=1e-2)  # a loose tolerance stops early
    assert 2 <= len(history) < 51
    assert history[-1] == pytest.approx(float(linear_gaussian_log_likelihood(z, params)), rel=1e-12)
    assert history[0] == pytest.approx(float(linear_gaussian_log_likelihood(z, start)), rel=1e-12)
    same, only = fit_em(z, start, num_iters=0)
    assert same is start and len(only) == 1


def test_batch_axes_and_pooling():
    """(*batch, T, D) pools over every batch axis; duplicating every series changes nothing."""
    rng = np.random.default_rng(33)
    p = _model(rng, 2, 3)
    z = _tensor(_with_nan(_data(rng, p, 6, 15), _random_mask(rng, 6, 15, 3)))
    params = _params(p)
    flat, ll_flat = em_step(z, params)
    nested, ll_nested = em_step(z.reshape(2, 3, 15, 3), params)
    doubled, ll_doubled = em_step(torch.cat([z, z]), params)
    torch.testing.assert_close(ll_nested, ll_flat)
    torch.testing.assert_close(ll_doubled, 2 * ll_flat)
    for field in FIELDS.values():
        torch.testing.assert_close(getattr(nested, field), getattr(flat, field))
        torch.testing.assert_close(getattr(doubled, field), getattr(flat, field))


# ------------------------------------------------------------------------------------------------
# pykalman


def _pykalman(p: dict) -> PykalmanKF:
    return PykalmanKF(
        transition_matrices=p["A"], observation_matrices=p["H"], transition_covariance=p["Q"],
        observation_covariance=p["R"], transition_offsets=p["c"], observation_offsets=p["d"],
        initial_state_mean=p["m0"], initial_state_covariance=p["P0"],
    )


def test_one_step_equals_pykalman():
    """pykalman updates A and H with the *old* offsets and then the offsets with the new A and H (a
    coordinate step), whereas our M-step maximises over (A, c) and (H, d) jointly; so the offsets are
    held fixed (non-zero) here, and every other parameter is estimated by both.  With offsets fixed the
    two updates coincide (Q and R use the new A and H, Σ_0 the new μ_0, in both)."""
    rng = np.random.default_rng(41)
    T, S, D = 50, 3, 2
    p = _model(rng, S, D)
    z = _data(rng, p, 1, T)
    start = _perturbed(_params(p), rng).replace(transition_offset=_tensor(p["c"]), observation_offset=_tensor(p["d"]))
    p_start = dict(A=start.A.numpy(), Q=start.Q.numpy(), H=start.H.numpy(), R=start.R.numpy(),
                   m0=start.initial_mean.numpy(), P0=start.initial_cov.numpy(), c=p["c"], d=p["d"])
    kf = _pykalman(p_start)
    expected_ll = kf.loglikelihood(z[0])
    kf.em(z[0], n_iter=1, em_vars=["transition_matrices", "observation_matrices", "transition_covariance",
                                   "observation_covariance", "initial_state_mean", "initial_state_covariance"])
    new, ll = em_step(_tensor(z), start, fixed={"transition_offset", "observation_offset"})
    assert float(ll) == pytest.approx(expected_ll, rel=1e-10)
    pairs = dict(A=kf.transition_matrices, Q=kf.transition_covariance, H=kf.observation_matrices,
                 R=kf.observation_covariance, initial_mean=kf.initial_state_mean,
                 initial_cov=kf.initial_state_covariance)
    for field, value in pairs.items():
        np.testing.assert_allclose(getattr(new, field).numpy(), value, rtol=1e-8, atol=1e-8, err_msg=field)


def test_offsets_equal_pykalman_given_matrices():
    """With A, H (and Q, R) fixed, both packages set c = mean(x̂_t − A x̂_{t−1}), d = mean(z_t − H x̂_t)."""
    rng = np.random.default_rng(42)
    T, S, D = 40, 2, 3
    p = _model(rng, S, D)
    z = _data(rng, p, 1, T)
    start = _params(p).replace(transition_offset=torch.zeros(S, dtype=F64), observation_offset=torch.zeros(D, dtype=F64))
    kf = _pykalman({**p, "c": np.zeros(S), "d": np.zeros(D)})
    kf.em(z[0], n_iter=1, em_vars=["transition_offsets", "observation_offsets", "initial_state_mean",
                                   "initial_state_covariance"])
    new, _ = em_step(_tensor(z), start, fixed={"A", "H", "Q", "R"})
    pairs = dict(transition_offset=kf.transition_offsets, observation_offset=kf.observation_offsets,
                 initial_mean=kf.initial_state_mean, initial_cov=kf.initial_state_covariance)
    for field, value in pairs.items():
        np.testing.assert_allclose(getattr(new, field).numpy(), value, rtol=1e-8, atol=1e-8, err_msg=field)


# ------------------------------------------------------------------------------------------------
# recovery of a known model


def _stationary_cov(A, Q):
    S = A.shape[0]
    return np.linalg.solve(np.eye(S * S) - np.kron(A, A), Q.ravel()).reshape(S, S)


def _observation_moments(A, Q, H, R, c, d, lags=3):
    """Stationary mean, covariance and autocovariances (lags 1..3) of z: similarity-invariant."""
    S = A.shape[0]
    sigma = _stationary_cov(A, Q)
    c = np.zeros(S) if c is None else c
    mean = H @ np.linalg.solve(np.eye(S) - A, c) + d
    autocov = [H @ np.linalg.matrix_power(A, k) @ sigma @ H.T for k in range(1, lags + 1)]
    return mean, H @ sigma @ H.T + R, autocov


def test_em_recovers_a_known_model():
    rng = np.random.default_rng(51)
    S, D = 2, 3
    p = dict(A=np.array([[0.8, 0.3], [-0.3, 0.8]]) * 0.95 / np.hypot(0.8, 0.3), Q=0.3 * np.eye(S),
             H=rng.standard_normal((D, S)), R=random_spd(rng, D, 0.3), c=np.array([0.2, -0.1]),
             d=np.array([1.0, -2.0, 0.5]), m0=np.zeros(S))
    p["P0"] = _stationary_cov(p["A"], p["Q"])
    p["m0"] = np.linalg.solve(np.eye(S) - p["A"], p["c"])  # stationary start
    train, test = _tensor(_data(rng, p, 32, 200)), _tensor(_data(rng, p, 16, 200))
    start = initial_params_from_data(train, S)
    params, history = fit_em(train, start, num_iters=150, tol=1e-8)
    true = _params(p)
    held_out, held_out_true = linear_gaussian_log_likelihood(test, params), linear_gaussian_log_likelihood(test, true)
    assert abs(float(held_out - held_out_true)) < 0.01 * abs(float(held_out_true))
    assert history[-1] > float(linear_gaussian_log_likelihood(train, true))  # the MLE beats the truth in-sample

    fitted = {k: None if v is None else v.numpy() for k, v in vars(params).items()}
    got = _observation_moments(fitted["A"], fitted["Q"], fitted["H"], fitted["R"], fitted["transition_offset"],
                               fitted["observation_offset"])
    want = _observation_moments(p["A"], p["Q"], p["H"], p["R"], p["c"], p["d"])
    z = train.numpy()
    centred = z - z.reshape(-1, D).mean(0)
    empirical = [centred[:, k:].reshape(-1, D).T @ centred[:, :200 - k].reshape(-1, D) / (32 * (200 - k))
                 for k in range(4)]
    scale = np.linalg.norm(want[1])
    # the similarity-invariant moments of z: the fit reproduces the sample's closely, and the truth up
    # to the sampling error of 32 × 200 strongly autocorrelated steps (about 8% here)
    np.testing.assert_allclose(got[0], z.reshape(-1, D).mean(0), atol=0.02 * np.sqrt(np.diag(want[1])).max())
    np.testing.assert_allclose(got[0], want[0], atol=0.1 * np.sqrt(np.diag(want[1])).max())
    for k, (g, w) in enumerate(zip([got[1]] + got[2], [want[1]] + want[2])):
        assert np.linalg.norm(g - empirical[k]) < 0.02 * scale, k
        assert np.linalg.norm(g - w) < 0.15 * scale, k
    eig_fit, eig_true = np.sort_complex(np.linalg.eigvals(fitted["A"])), np.sort_complex(np.linalg.eigvals(p["A"]))
    np.testing.assert_allclose(eig_fit, eig_true, atol=0.03)


def test_initial_params_from_data_with_missing_values():
    rng = np.random.default_rng(52)
    N, T, S, D = 8, 50, 2, 4
    p = _model(rng, S, D)
    mask = _random_mask(rng, N, T, D)
    z = _tensor(_with_nan(_data(rng, p, N, T), mask))
    start = initial_params_from_data(z, S)
    assert start.H.shape == (D, S) and start.observation_offset.shape == (D,) and start.transition_offset is None
    torch.testing.assert_close(start.H.mT @ start.H, torch.eye(S, dtype=F64))
    for cov in (start.Q, start.R, start.initial_cov):
        assert torch.linalg.eigvalsh(cov).min() > 0
    assert float(torch.linalg.eigvals(start.A).abs().max()) <= 0.98 + 1e-12
    same = initial_params_from_data(_tensor(_data(rng, p, N, T)), S, mask=torch.as_tensor(mask))
    assert same.H.shape == (D, S)
    params, history = fit_em(z, start, num_iters=10, tol=0.0)
    assert np.isfinite(history).all() and (np.diff(history) >= -1e-9 * abs(history[0])).all()


def test_float32():
    rng = np.random.default_rng(53)
    p = _model(rng, 2, 3)
    z = _with_nan(_data(rng, p, 8, 60), _random_mask(rng, 8, 60, 3))
    z32 = _tensor(z, torch.float32)
    start = initial_params_from_data(z32, 2)
    assert start.A.dtype == torch.float32
    params, history = fit_em(z32, start, num_iters=15, tol=0.0)
    assert params.R.dtype == torch.float32 and np.isfinite(history).all()
    assert (np.diff(history) >= -1e-4 * abs(history[0])).all()
    assert history[-1] > history[0]
    ref, ref_history = fit_em(_tensor(z), initial_params_from_data(_tensor(z), 2), num_iters=15, tol=0.0)
    assert history[-1] == pytest.approx(ref_history[-1], rel=1e-4)


# ------------------------------------------------------------------------------------------------
# bad input


def _valid_params(S=2, D=3):
    return LinearGaussianParams(A=0.5 * torch.eye(S, dtype=F64), Q=torch.eye(S, dtype=F64),
                                H=torch.ones(D, S, dtype=F64), R=torch.eye(D, dtype=F64),
                                initial_mean=torch.zeros(S, dtype=F64), initial_cov=torch.eye(S, dtype=F64))


def test_bad_input_raises_clear_errors():
    params, z = _valid_params(), torch.zeros(2, 10, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"D=4.*\(3, 2\)"):
        em_step(torch.zeros(2, 10, 4, dtype=F64), params)
    with pytest.raises(ValueError, match=r"observations must have shape"):
        em_step(torch.zeros(3, dtype=F64), params)
    with pytest.raises(ValueError, match=r"unknown parameter names \['B'\]"):
        em_step(z, params, fixed={"A", "B"})
    with pytest.raises(ValueError, match=r"unknown parameter names"):
        fit_em(z, params, fixed={"transition_matrix"})
    with pytest.raises(ValueError, match=r"H must have shape \(D, S=2\), got \(3, 3\)"):
        params.replace(H=torch.ones(3, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"R must have shape \(3, 3\).*got \(2, 2\)"):
        params.replace(R=torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match=r"observation_offset must have shape \(3,\)"):
        params.replace(observation_offset=torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match=r"A must have shape \(S, S\)"):
        params.replace(A=torch.ones(2, 3, dtype=F64))
    with pytest.raises(TypeError, match=r"Q has dtype torch.float32"):
        params.replace(Q=torch.eye(2))
    with pytest.raises(ValueError, match=r"mask must have shape"):
        em_step(z, params, mask=torch.ones(2, 9, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"num_iters must be an integer >= 0, got -1"):
        fit_em(z, params, num_iters=-1)
    with pytest.raises(ValueError, match=r"tol must be a number >= 0"):
        fit_em(z, params, tol=-1.0)
    for bad in (0, -1, 4, 1.5):
        with pytest.raises(ValueError, match=rf"state_dim must be an integer with 1 <= state_dim <= D=3.*{bad}"):
            initial_params_from_data(z, bad)
    with pytest.raises(ValueError, match=r"at least 2 time steps"):
        initial_params_from_data(torch.zeros(2, 1, 3, dtype=F64), 1)
    with pytest.raises(ValueError, match=r"at least 2 observed values"):
        initial_params_from_data(torch.full((2, 10, 3), float("nan"), dtype=F64), 1)
