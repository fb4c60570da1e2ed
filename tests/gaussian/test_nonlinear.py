"""The nonlinear Gaussian filters (EKF / UKF / CKF) of ``nonlinear_filter``.

What is pinned down:

* with an affine transition (and a linear observation, given as a matrix or as a function) every
  method reduces to ``kalman_filter`` to 1e-10, including missing steps, partially missing
  components, masks, batches and time-varying noise; ``transition_inputs`` act like a
  time-varying ``transition_offset``;
* on a pendulum the EKF and the UKF agree with filterpy's ``ExtendedKalmanFilter`` and
  ``UnscentedKalmanFilter`` (the CKF with filterpy's UKF at α=1, β=0, κ=0, which is the cubature
  rule), step by step, to ~1e-8;
* the nonlinear filters track a swinging pendulum far better than a linear KF linearised at 0;
* gradients (gradcheck), argument errors, and symmetric PSD covariances over a long run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldmfilter.gaussian import kalman_filter, nonlinear_filter
from ldmfilter.gaussian.steps import condition, update_covariance, update_mean

DTYPE = torch.float64
METHODS = ["linearize", "unscented", "cubature"]
TOL = dict(rtol=1e-10, atol=1e-10)
FIELDS = ["filtered_mean", "filtered_cov", "predicted_mean", "predicted_cov", "log_likelihood"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _spd(*shape, n: int, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    a = torch.randn(*shape, n, n, generator=gen, dtype=DTYPE)
    return scale * (a @ a.mT / n + 0.3 * torch.eye(n, dtype=DTYPE))


def _assert_results_close(got, want, tol=TOL):
    for name in FIELDS:
        torch.testing.assert_close(getattr(got, name), getattr(want, name), **tol, msg=lambda m: f"{name}: {m}")


# --------------------------------------------------------------------------------------------
# reduction to the linear Kalman filter
# --------------------------------------------------------------------------------------------

S, L, T, B = 3, 2, 8, 4


def _linear_model(seed: int, time_varying_noise: bool = False):
    gen = _gen(seed)
    A = torch.randn(S, S, generator=gen, dtype=DTYPE)
    A = 0.9 * A / torch.linalg.matrix_norm(A, ord=2)
    c = torch.randn(S, generator=gen, dtype=DTYPE)
    H = torch.randn(L, S, generator=gen, dtype=DTYPE)
    if time_varying_noise:
        Q = _spd(B, T, n=S, gen=gen, scale=0.3)
        R = _spd(T, n=L, gen=gen, scale=0.5).unsqueeze(0)  # (1, T, L, L): broadcast over the batch
    else:
        Q = _spd(n=S, gen=gen, scale=0.3)
        R = _spd(n=L, gen=gen, scale=0.5)
    m0 = torch.randn(B, S, generator=gen, dtype=DTYPE)
    P0 = _spd(n=S, gen=gen)
    obs = torch.randn(B, T, L, generator=gen, dtype=DTYPE)
    return A, c, Q, H, R, m0, P0, obs


def _with_missing(obs: torch.Tensor) -> torch.Tensor:
    """Series 0 complete; 1 has whole missing steps (incl. step 0); 2 missing components; 3 both."""
    obs = obs.clone()
    obs[1, [0, 3, 4]] = float("nan")
    obs[2, 1, 0] = float("nan")
    obs[2, 5, 1] = float("nan")
    obs[2, 6, 0] = float("nan")
    obs[3, 2] = float("nan")
    obs[3, 7, 1] = float("nan")
    return obs


MISSING_CASES = ["complete", "nan", "mask_steps", "mask_components"]


def _missing_case(name: str, obs: torch.Tensor):
    if name == "complete":
        return obs, None
    if name == "nan":
        return _with_missing(obs), None
    gen = _gen(99)
    if name == "mask_steps":
        mask = torch.rand(B, T, generator=gen) > 0.3
    else:
        mask = torch.rand(B, T, L, generator=gen) > 0.3
    return _with_missing(obs), mask


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("missing", MISSING_CASES)
@pytest.mark.parametrize("time_varying_noise", [False, True], ids=["static_noise", "tv_noise"])
def test_affine_transition_reduces_to_kalman_filter(method, missing, time_varying_noise):
    """f(x) = A x + c with linear H: every method equals kalman_filter(transition_offset=c) to 1e-10."""
    A, c, Q, H, R, m0, P0, obs = _linear_model(1, time_varying_noise)
    obs, mask = _missing_case(missing, obs)
    want = kalman_filter(obs, A, Q, H, R, m0, P0, transition_offset=c, mask=mask)
    got = nonlinear_filter(obs, lambda x: x @ A.T + c, Q, H, R, m0, P0, method=method, mask=mask)
    _assert_results_close(got, want)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("missing", MISSING_CASES)
def test_linear_observation_fn_reduces_to_kalman_filter(method, missing):
    """observation_fn = x ↦ H x (observation_matrix=None) also equals kalman_filter, missing data included."""
    A, c, Q, H, R, m0, P0, obs = _linear_model(2)
    obs, mask = _missing_case(missing, obs)
    want = kalman_filter(obs, A, Q, H, R, m0, P0, transition_offset=c, mask=mask)
    got = nonlinear_filter(
        obs, lambda x: x @ A.T + c, Q, None, R, m0, P0, method=method, mask=mask, observation_fn=lambda x: x @ H.T
    )
    _assert_results_close(got, want)


@pytest.mark.parametrize("method", METHODS)
def test_unbatched_series_reduces_to_kalman_filter(method):
    """A single (T, L) series with unbatched prior works and matches kalman_filter."""
    A, c, Q, H, R, m0, P0, obs = _linear_model(3)
    obs = _with_missing(obs)[2]
    want = kalman_filter(obs, A, Q, H, R, m0[0], P0, transition_offset=c)
    got = nonlinear_filter(obs, lambda x: x @ A.T + c, Q, H, R, m0[0], P0, method=method)
    assert got.filtered_mean.shape == (T, S)
    _assert_results_close(got, want)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batched_inputs", [True, False], ids=["batched_inputs", "shared_inputs"])
def test_transition_inputs_act_as_time_varying_offset(method, batched_inputs):
    """x_t = A x + B u_t equals kalman_filter with transition_offset u_t Bᵀ; u_0 is never used."""
    A, _, Q, H, R, m0, P0, obs = _linear_model(4)
    obs = _with_missing(obs)
    gen = _gen(5)
    U = 2
    Bu = torch.randn(S, U, generator=gen, dtype=DTYPE)
    u = torch.randn(*((B,) if batched_inputs else ()), T, U, generator=gen, dtype=DTYPE)
    fn = lambda x, v: x @ A.T + v @ Bu.T  # noqa: E731
    want = kalman_filter(obs, A, Q, H, R, m0, P0, transition_offset=(u @ Bu.T).expand(B, T, S))
    got = nonlinear_filter(obs, fn, Q, H, R, m0, P0, method=method, transition_inputs=u)
    _assert_results_close(got, want)
    u_changed = u.clone()
    u_changed[..., 0, :] = 1e3  # entry 0 is unused (no transition into step 0)
    again = nonlinear_filter(obs, fn, Q, H, R, m0, P0, method=method, transition_inputs=u_changed)
    _assert_results_close(again, got, tol=dict(rtol=0, atol=0))


# --------------------------------------------------------------------------------------------
# pendulum model, numpy and torch versions
# --------------------------------------------------------------------------------------------

DT, GRAV = 0.05, 9.81
PEND_Q = 0.5 * np.array([[DT**3 / 3, DT**2 / 2], [DT**2 / 2, DT]])
PEND_M0 = np.array([1.2, -0.3])
PEND_P0 = np.diag([0.2, 0.3])


def pend_f_np(x):
    """Explicit-Euler pendulum (Särkkä's example): θ' = θ + Δ ω, ω' = ω − g Δ sin θ."""
    return np.array([x[0] + DT * x[1], x[1] - GRAV * DT * np.sin(x[0])])


def pend_jac_np(x):
    return np.array([[1.0, DT], [-GRAV * DT * np.cos(x[0]), 1.0]])


def pend_f_torch(x):
    return torch.stack([x[:, 0] + DT * x[:, 1], x[:, 1] - GRAV * DT * torch.sin(x[:, 0])], -1)


OBS_MODELS = {
    # name: (numpy h, numpy Jacobian, torch observation_fn or None, observation matrix or None, R)
    "linear": (lambda x: x[:1].copy(), lambda x: np.array([[1.0, 0.0]]), None, np.array([[1.0, 0.0]]), 0.05**2),
    "sine": (
        lambda x: np.array([np.sin(x[0])]),
        lambda x: np.array([[np.cos(x[0]), 0.0]]),
        lambda x: torch.sin(x[:, :1]),
        None,
        0.1**2,
    ),
}


def _simulate_pendulum(obs_name: str, steps: int, seed: int, missing=()):
    h = OBS_MODELS[obs_name][0]
    rng = np.random.default_rng(seed)
    r = OBS_MODELS[obs_name][4]
    x = rng.multivariate_normal(PEND_M0, PEND_P0)
    zs = []
    for t in range(steps):
        if t > 0:
            x = pend_f_np(x) + rng.multivariate_normal(np.zeros(2), PEND_Q)
        zs.append(h(x) + np.sqrt(r) * rng.standard_normal(1))
    zs = np.array(zs)
    zs[list(missing)] = np.nan
    return zs


def _ours(obs_name, zs, method, **options):
    _, _, h_torch, H, r = OBS_MODELS[obs_name]
    t = lambda a: torch.as_tensor(a, dtype=DTYPE)  # noqa: E731
    return nonlinear_filter(
        t(zs), pend_f_torch, t(PEND_Q), None if H is None else t(H), t([[r]]), t(PEND_M0), t(PEND_P0),
        method=method, observation_fn=h_torch, **options,
    )


def _collect(step_fn, zs):
    """Run a filterpy filter: step 0 update-only, then predict+update; NaN rows are predict-only."""
    pred_m, pred_P, filt_m, filt_P, loglik = [], [], [], [], []
    for t, z in enumerate(zs):
        m, P, fm, fP, ll = step_fn(t, None if np.isnan(z).any() else z)
        pred_m.append(m); pred_P.append(P); filt_m.append(fm); filt_P.append(fP); loglik.append(ll)  # noqa: E702
    return [np.array(a) for a in (pred_m, pred_P, filt_m, filt_P, loglik)]


def _filterpy_ekf(obs_name, zs):
    from filterpy.kalman import ExtendedKalmanFilter

    h, h_jac, _, _, r = OBS_MODELS[obs_name]

    class PendulumEKF(ExtendedKalmanFilter):
        def predict_x(self, u=0):
            self.x = pend_f_np(self.x)

    ekf = PendulumEKF(dim_x=2, dim_z=1)
    ekf.x, ekf.P, ekf.Q, ekf.R = PEND_M0.copy(), PEND_P0.copy(), PEND_Q.copy(), np.array([[r]])

    def step(t, z):
        if t > 0:
            ekf.F = pend_jac_np(ekf.x)  # Jacobian at the filtered mean, before predict_x moves it
            ekf.predict()
        prior = (ekf.x.copy(), ekf.P.copy())
        if z is None:
            return (*prior, ekf.x.copy(), ekf.P.copy(), 0.0)
        ekf.update(z, h_jac, h)
        return (*prior, ekf.x.copy(), ekf.P.copy(), ekf.log_likelihood)

    return _collect(step, zs)


def _filterpy_ukf(obs_name, zs, alpha=1.0, beta=2.0, kappa=0.0):
    from filterpy.kalman import MerweScaledSigmaPoints, UnscentedKalmanFilter

    h, _, _, _, r = OBS_MODELS[obs_name]
    points = MerweScaledSigmaPoints(2, alpha=alpha, beta=beta, kappa=kappa)
    ukf = UnscentedKalmanFilter(dim_x=2, dim_z=1, dt=DT, hx=h, fx=lambda x, dt: pend_f_np(x), points=points)
    ukf.x, ukf.P, ukf.Q, ukf.R = PEND_M0.copy(), PEND_P0.copy(), PEND_Q.copy(), np.array([[r]])

    def step(t, z):
        if t > 0:
            ukf.predict()  # re-draws sigma points from the predicted (x, P) before the update
        else:
            ukf.sigmas_f = points.sigma_points(ukf.x, ukf.P)  # our step 0 is update-only on the prior
        prior = (ukf.x.copy(), ukf.P.copy())
        if z is None:
            return (*prior, ukf.x.copy(), ukf.P.copy(), 0.0)
        ukf.update(z)
        return (*prior, ukf.x.copy(), ukf.P.copy(), ukf.log_likelihood)

    return _collect(step, zs)


FP_TOL = dict(rtol=1e-8, atol=1e-8)
FP_STEPS = 40
# complete data, and data with missing steps.
FP_MISSING = {"complete": (), "missing": (7, 8, 23)}


def _compare_with_filterpy(ours, ref, missing):
    pred_m, pred_P, filt_m, filt_P, loglik = ref
    np.testing.assert_allclose(ours.predicted_mean.detach().numpy(), pred_m, **FP_TOL)
    np.testing.assert_allclose(ours.predicted_cov.detach().numpy(), pred_P, **FP_TOL)
    np.testing.assert_allclose(ours.filtered_mean.detach().numpy(), filt_m, **FP_TOL)
    np.testing.assert_allclose(ours.filtered_cov.detach().numpy(), filt_P, **FP_TOL)
    np.testing.assert_allclose(ours.log_likelihood.detach().numpy(), loglik, **FP_TOL)


@pytest.mark.parametrize("missing", list(FP_MISSING))
@pytest.mark.parametrize("obs_name", list(OBS_MODELS))
def test_ekf_matches_filterpy(obs_name, missing):
    """method='linearize' = filterpy ExtendedKalmanFilter (F = ∂f at the filtered mean), incl. missing steps."""
    zs = _simulate_pendulum(obs_name, FP_STEPS, seed=10, missing=FP_MISSING[missing])
    _compare_with_filterpy(_ours(obs_name, zs, "linearize"), _filterpy_ekf(obs_name, zs), missing)


@pytest.mark.parametrize("missing", list(FP_MISSING))
@pytest.mark.parametrize("obs_name", list(OBS_MODELS))
@pytest.mark.parametrize(
    "method,options,merwe",
    [
        ("unscented", {}, (1.0, 2.0, 0.0)),  # our defaults = MerweScaledSigmaPoints(α=1, β=2, κ=0)
        ("unscented", dict(alpha=0.6, beta=2.0, kappa=1.0), (0.6, 2.0, 1.0)),  # rule_options pass through
        ("cubature", {}, (1.0, 0.0, 0.0)),  # α=1, β=0, κ=0: centre weights 0, points ±√S, weights 1/(2S)
    ],
    ids=["ukf-default", "ukf-custom", "ckf"],
)
def test_sigma_point_filters_match_filterpy_ukf(obs_name, method, options, merwe, missing):
    """UKF (and CKF as its α=1, β=0, κ=0 case) = filterpy UnscentedKalmanFilter with Merwe points.

    (filterpy's own CubatureKalmanFilter is not used: its update re-uses the propagated points,
    ignoring Q in Cov[z] and Cov[x, z], whereas ours re-draws them from the predicted belief.)
    """
    zs = _simulate_pendulum(obs_name, FP_STEPS, seed=11, missing=FP_MISSING[missing])
    _compare_with_filterpy(_ours(obs_name, zs, method, **options), _filterpy_ukf(obs_name, zs, *merwe), missing)


# --------------------------------------------------------------------------------------------
# tracking sanity
# --------------------------------------------------------------------------------------------

def _semi_implicit_pendulum(x):
    """Symplectic Euler step (ω first): its linearisation at 0 is a stable oscillator."""
    w = x[:, 1] - GRAV * DT * torch.sin(x[:, 0])
    return torch.stack([x[:, 0] + DT * w, w], -1)


def test_nonlinear_filters_beat_linear_kf_on_swinging_pendulum():
    """Large swings: EKF/UKF/CKF filtered-mean RMSE well below a KF using the linearisation at 0."""
    gen = _gen(123)
    nb, steps, q, r = 8, 100, 0.01, 0.1
    Q = q * torch.tensor([[DT**3 / 3, DT**2 / 2], [DT**2 / 2, DT]], dtype=DTYPE)
    chol_q = torch.linalg.cholesky(Q)
    x = torch.stack([1.0 + torch.rand(nb, generator=gen, dtype=DTYPE), torch.zeros(nb, dtype=DTYPE)], -1)
    states = []
    for t in range(steps):
        if t > 0:
            x = _semi_implicit_pendulum(x) + torch.randn(nb, 2, generator=gen, dtype=DTYPE) @ chol_q.T
        states.append(x)
    states = torch.stack(states, -2)
    obs = states[..., :1] + r * torch.randn(nb, steps, 1, generator=gen, dtype=DTYPE)
    H = torch.tensor([[1.0, 0.0]], dtype=DTYPE)
    R = torch.tensor([[r * r]], dtype=DTYPE)
    m0 = torch.tensor([1.5, 0.0], dtype=DTYPE)
    P0 = 0.25 * torch.eye(2, dtype=DTYPE)
    A0 = torch.tensor([[1.0 - GRAV * DT**2, DT], [-GRAV * DT, 1.0]], dtype=DTYPE)  # ∂f/∂x at 0
    rmse = lambda m: ((m - states) ** 2).mean().sqrt().item()  # noqa: E731
    linear = rmse(kalman_filter(obs, A0, Q, H, R, m0, P0).filtered_mean)
    for method in METHODS:
        nonlinear = rmse(nonlinear_filter(obs, _semi_implicit_pendulum, Q, H, R, m0, P0, method=method).filtered_mean)
        assert nonlinear < 0.5 * linear, (method, nonlinear, linear)
        assert nonlinear < 2 * r, (method, nonlinear)  # and it actually tracks (θ observed with sd r)


# --------------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("observation", ["matrix", "function"])
def test_gradcheck_transition_parameter_and_Q(method, observation):
    """gradcheck (S=2, L=1, T=3, one missing step) w.r.t. a gravity-like weight of f and a PSD-parametrised Q."""
    gen = _gen(7)
    obs = torch.randn(2, 3, 1, generator=gen, dtype=DTYPE)
    obs[1, 1] = float("nan")
    H = torch.tensor([[1.0, 0.3]], dtype=DTYPE)
    R = torch.tensor([[0.2]], dtype=DTYPE)
    m0 = torch.tensor([0.5, -0.2], dtype=DTYPE)
    P0 = torch.tensor([[0.3, 0.05], [0.05, 0.2]], dtype=DTYPE)
    weight = torch.tensor(2.0, dtype=DTYPE, requires_grad=True)
    raw_q = torch.tensor([[0.3, 0.0], [0.1, 0.2]], dtype=DTYPE, requires_grad=True)

    def run(weight, raw_q):
        Q = raw_q @ raw_q.mT + 0.01 * torch.eye(2, dtype=DTYPE)
        fn = lambda x: torch.stack([x[:, 0] + 0.1 * x[:, 1], x[:, 1] - 0.1 * weight * torch.sin(x[:, 0])], -1)  # noqa: E731
        if observation == "matrix":
            out = nonlinear_filter(obs, fn, Q, H, R, m0, P0, method=method)
        else:
            out = nonlinear_filter(obs, fn, Q, None, R, m0, P0, method=method,
                                   observation_fn=lambda x: torch.tanh(x @ H.T))
        return out.filtered_mean, out.filtered_cov, out.predicted_cov, out.log_likelihood

    assert torch.autograd.gradcheck(run, (weight, raw_q), fast_mode=True)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

def _small():
    A, c, Q, H, R, m0, P0, obs = _linear_model(8)
    return (lambda x: x @ A.T + c), Q, H, R, m0, P0, obs


def test_both_or_neither_observation_model_raises():
    """Exactly one of observation_matrix and observation_fn must be given -> ValueError otherwise."""
    fn, Q, H, R, m0, P0, obs = _small()
    with pytest.raises(ValueError, match="exactly one"):
        nonlinear_filter(obs, fn, Q, H, R, m0, P0, observation_fn=lambda x: x @ H.T)
    with pytest.raises(ValueError, match="exactly one"):
        nonlinear_filter(obs, fn, Q, None, R, m0, P0)


@pytest.mark.parametrize("bad", [None, 3.0, "x @ A.T", torch.eye(S, dtype=DTYPE)], ids=["None", "float", "str", "matrix"])
def test_non_callable_transition_raises_type_error(bad):
    """transition_fn that is not callable (e.g. a matrix passed by mistake) -> TypeError."""
    _, Q, H, R, m0, P0, obs = _small()
    with pytest.raises(TypeError, match="callable"):
        nonlinear_filter(obs, bad, Q, H, R, m0, P0)


def test_unknown_method_raises():
    """method outside {linearize, unscented, cubature} -> ValueError."""
    fn, Q, H, R, m0, P0, obs = _small()
    with pytest.raises(ValueError, match="method"):
        nonlinear_filter(obs, fn, Q, H, R, m0, P0, method="particle")


@pytest.mark.parametrize("shape", [(B, T + 1, 2), (B, T - 1, 2), (T, 2, 1), (2,)], ids=["T+1", "T-1", "swapped", "1d"])
def test_transition_inputs_with_wrong_length_raises(shape):
    """transition_inputs whose time axis is not T -> ValueError."""
    fn, Q, H, R, m0, P0, obs = _small()
    u = torch.zeros(shape, dtype=DTYPE)
    with pytest.raises(ValueError, match="transition_inputs"):
        nonlinear_filter(obs, lambda x, v: fn(x), Q, H, R, m0, P0, transition_inputs=u)


def test_bad_rule_option_is_reported():
    """An unscented setting with S + λ ≤ 0 is rejected by the filter too (ValueError)."""
    fn, Q, H, R, m0, P0, obs = _small()
    with pytest.raises(ValueError, match="unscented"):
        nonlinear_filter(obs, fn, Q, H, R, m0, P0, method="unscented", kappa=-float(S))


# --------------------------------------------------------------------------------------------
# long-run numerical sanity
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("obs_name", list(OBS_MODELS))
def test_covariances_stay_symmetric_psd_over_long_run(method, obs_name):
    """200 pendulum steps with missing stretches: filtered/predicted covariances symmetric PD, all finite."""
    zs = _simulate_pendulum(obs_name, 200, seed=20, missing=tuple(range(60, 75)) + (150,))
    out = _ours(obs_name, zs, method)
    for cov in (out.filtered_cov, out.predicted_cov):
        assert torch.isfinite(cov).all()
        assert torch.equal(cov, cov.mT)
        assert (torch.linalg.eigvalsh(cov)[..., 0] > 0).all()
    assert torch.isfinite(out.filtered_mean).all() and torch.isfinite(out.log_likelihood).all()


# --------------------------------------------------------------------------------------------
# the whitened update and the float64 recursion of float32 inputs
# --------------------------------------------------------------------------------------------

def test_condition_equals_the_joseph_update():
    """steps.condition (m⁻ + Wᵀw, P⁻ − WᵀW) gives the linear filter's Joseph-form update and Cholesky factor."""
    gen = _gen(31)
    P = _spd(B, n=S, gen=gen)
    H = torch.randn(L, S, generator=gen, dtype=DTYPE)
    R = _spd(n=L, gen=gen, scale=0.01)
    m = torch.randn(B, S, generator=gen, dtype=DTYPE)
    z = torch.randn(B, L, generator=gen, dtype=DTYPE)
    want_cov, gain, want_chol = update_covariance(P, H, R)
    want_mean, innovation = update_mean(m, gain, z, H)
    got_mean, got_cov, got_chol = condition(m, P, P @ H.T, H @ P @ H.T + R, innovation)
    torch.testing.assert_close(got_mean, want_mean, **TOL)
    torch.testing.assert_close(got_cov, want_cov, **TOL)
    torch.testing.assert_close(got_chol, want_chol, **TOL)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("obs_name", list(OBS_MODELS))
def test_float32_inputs_call_the_functions_in_float32_and_match_float64(method, obs_name):
    """float32 in (the belief recursion then runs in float64): the functions still see float32 states, the
    result is float32, and it matches the float64 filter within float32 rounding."""
    zs = _simulate_pendulum(obs_name, 60, seed=21, missing=(7, 30))
    want = _ours(obs_name, zs, method)
    _, _, h_torch, H, r = OBS_MODELS[obs_name]
    seen = set()

    def recording(fn):
        def called(x):
            seen.add(x.dtype)
            return fn(x)
        return called

    t32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    got = nonlinear_filter(
        t32(zs), recording(pend_f_torch), t32(PEND_Q), None if H is None else t32(H), t32([[r]]), t32(PEND_M0),
        t32(PEND_P0), method=method, observation_fn=None if h_torch is None else recording(h_torch),
    )
    assert seen == {torch.float32}
    for name in FIELDS:
        value = getattr(got, name)
        assert value.dtype == torch.float32, name
        torch.testing.assert_close(value.double(), getattr(want, name), rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


# --------------------------------------------------------------------------------------------
# regressions of defects found and fixed
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_log_likelihood_constant_is_float64_with_missing_data(method):
    """With one missing entry anywhere, each observed step's log-likelihood is still −½(e²/s + log s + log 2π) in float64."""
    zs = _simulate_pendulum("linear", 10, seed=12, missing=(4,))
    out = _ours("linear", zs, method)
    pred_m, pred_P = out.predicted_mean.detach(), out.predicted_cov.detach()
    r = OBS_MODELS["linear"][4]
    for t in range(10):
        if t == 4:
            assert out.log_likelihood[t].item() == 0.0
            continue
        e, s = zs[t, 0] - pred_m[t, 0].item(), pred_P[t, 0, 0].item() + r
        want = -0.5 * (e * e / s + np.log(s) + np.log(2 * np.pi))
        assert abs(out.log_likelihood[t].item() - want) < 1e-12, (t, out.log_likelihood[t].item() - want)


def test_outputs_do_not_require_grad_without_differentiable_inputs():
    """Like kalman_filter and the sigma-point filters, the EKF returns plain tensors when no input requires grad."""
    zs = _simulate_pendulum("sine", 10, seed=13)
    for method in ("cubature", "unscented"):
        assert not _ours("sine", zs, method).filtered_mean.requires_grad
    out = _ours("sine", zs, "linearize")
    assert not out.filtered_mean.requires_grad and not out.log_likelihood.requires_grad


@pytest.mark.parametrize("method", METHODS)
def test_transition_inputs_with_wrong_batch_raises_value_error(method):
    """transition_inputs whose batch axes do not broadcast to the observations' -> ValueError (like other params)."""
    fn, Q, H, R, m0, P0, obs = _small()
    u = torch.zeros(B - 1, T, 2, dtype=DTYPE)
    with pytest.raises(ValueError, match="transition_inputs"):
        nonlinear_filter(obs, lambda x, v: fn(x) + 0 * v[:, :1], Q, H, R, m0, P0, method=method, transition_inputs=u)
