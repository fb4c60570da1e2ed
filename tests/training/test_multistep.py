"""The multi-step objective: k-step predictions from the filtered beliefs, scored like the one-step ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldmfilter import LDMFilter, load
from ldmfilter.gaussian import nonlinear_filter, propagate
from ldmfilter.nn import LatentKalmanFilter, LinearDynamics, MLPDynamics, MLPEncoder, make_noise
from ldmfilter.nn.latent_filter import ahead_windows
from ldmfilter.training import ldm_loss, multistep_loss, stop_gradient_loss

DT = torch.float64
S, L, OBS, U = 4, 2, 6, 2


def make_model(dynamics="linear", noise="fixed", moments="linearize", control_dim=0, seed=0):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if dynamics == "linear":
        dyn = LinearDynamics(S, L, generator, control_dim)
    else:
        dyn = MLPDynamics(S, L, generator, control_dim, hidden=(5,))
        with torch.no_grad():  # the residual starts at zero: make it matter
            for p in dyn.residual.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=generator))
    encoder = MLPEncoder((OBS,), L, hidden=(8,))
    return LatentKalmanFilter(encoder, dyn, make_noise(noise, (OBS,), L, hidden=(5,)), moments=moments).to(DT)


def data(B=3, T=9, seed=1, controls=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, OBS, generator=g, dtype=DT)
    u = torch.randn(B, T, U, generator=g, dtype=DT) if controls else None
    return x, u


def reference_ahead(model, z, result, R, horizon, mask=None, controls=None):
    """Sums over steps of log N(z_{t+k}; k-step prediction), by explicit loops over series, starts and steps."""
    dyn, D = model.dynamics, model.dynamics.observation_matrix
    B, T, _ = z.shape
    Q = dyn.transition_cov()
    out = torch.zeros(horizon - 1, B, dtype=z.dtype)
    for b in range(B):
        for t in range(T - 2):
            m, P = result.filtered_mean[b, t], result.filtered_cov[b, t]
            for k in range(1, horizon + 1):
                if t + k >= T:
                    break
                u = None if controls is None else controls[b, t + k]
                if dyn.nonlinear:
                    moments = propagate(dyn, m, P, model.moments, None if u is None else u)
                    m, P = moments.mean, moments.cov + Q
                else:
                    c = dyn.transition_offset() if u is None else dyn.transition_offset(u[None, None])[0, 0]
                    A = dyn.transition_matrix()
                    m, P = A @ m + c, A @ P @ A.T + Q
                if k < 2 or (mask is not None and not mask[b, t + k]):
                    continue
                R_k = R if R.ndim == 2 else R[b, t + k]
                cov = D @ P @ D.T + R_k
                out[k - 2, b] += torch.distributions.MultivariateNormal(D @ m, cov).log_prob(z[b, t + k])
    return out


CASES = {
    "linear, fixed R": dict(dynamics="linear"),
    "linear, per-frame R, missing frames": dict(dynamics="linear", noise="input", masked=True),
    "linear, controls": dict(dynamics="linear", controls=True),
    "MLP, first-order rule": dict(dynamics="mlp"),
    "MLP, unscented, controls, missing frames": dict(dynamics="mlp", moments="unscented", controls=True, masked=True),
    "MLP, cubature, per-frame R": dict(dynamics="mlp", moments="cubature", noise="input"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_ahead_log_likelihood_is_the_k_step_forecasts_score(case):
    options = dict(CASES[case])
    masked, controls = options.pop("masked", False), options.pop("controls", False)
    model = make_model(control_dim=U if controls else 0, **options)
    x, u = data(controls=controls)
    mask = None
    if masked:
        mask = torch.ones(x.shape[:2], dtype=torch.bool)
        mask[0, 4] = mask[2, 6] = mask[1, 2] = False
    out = model(x, mask, controls=u)
    got = out.score_ahead(out.latents.detach(), 4)
    want = reference_ahead(model, out.latents.detach(), out.filtered, out.observation_cov, 4, mask, u)
    assert got.shape == (3, x.shape[0])
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("moments", ["linearize", "unscented"])
def test_ahead_gradients_through_the_hand_written_filter_reverse(moments):
    """The MLP filter's hand-written reverse pass gives the k-step term the autograd recursion's gradients."""
    model = make_model("mlp", moments=moments)
    x, _ = data()
    out = model(x)
    loss = -out.score_ahead(out.latents.detach(), 3).sum()
    fast = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)

    dyn = model.dynamics
    z = model.encode(x)
    R = model.noise(model.normalizer(x), dyn.log_scale)
    m0, P0 = dyn.initial_belief()
    plain = lambda h: dyn(h)  # noqa: E731  (not a module: the generic autograd recursion)
    result = nonlinear_filter(z, plain, dyn.transition_cov(), dyn.observation_matrix, R, m0, P0, method=moments)
    reference = -model.ahead_log_likelihood(z.detach(), result, R, 3).sum()
    slow = torch.autograd.grad(reference, list(model.parameters()), allow_unused=True)
    for a, b in zip(fast, slow):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_ahead_windows():
    values = torch.arange(10.0).reshape(1, 5, 2)
    got = ahead_windows(values, 3)
    assert got.shape == (1, 5, 3, 2)
    torch.testing.assert_close(got[0, 0], values[0, 1:4])
    torch.testing.assert_close(got[0, 3], torch.tensor([[8.0, 9.0], [0.0, 0.0], [0.0, 0.0]]))


def test_multistep_one_is_the_one_step_objective():
    out = make_model()(data()[0])
    torch.testing.assert_close(ldm_loss(out, multistep=1), stop_gradient_loss(out))
    torch.testing.assert_close(ldm_loss(out, "logdet", multistep=1), ldm_loss(out, "logdet"))


@pytest.mark.parametrize("objective", ["stopgrad", "kde"])
def test_multistep_loss_value(objective):
    out = make_model("mlp")(data()[0])
    ahead = out.score_ahead(out.latents.detach(), 4)  # (3, B)
    want = ldm_loss(out, objective) - ahead.mean(-1).mean()
    torch.testing.assert_close(ldm_loss(out, objective, multistep=4), want)


def test_multistep_stop_gradient_detaches_the_targets():
    """The last latent is only ever a target of the k-step terms: no gradient when detached, some when not."""
    out = make_model()(data()[0])
    (detached,) = torch.autograd.grad(multistep_loss(out, 3, detach_targets=True), out.latents, retain_graph=True)
    (attached,) = torch.autograd.grad(multistep_loss(out, 3, detach_targets=False), out.latents)
    assert detached[:, -1].abs().max() == 0
    assert attached[:, -1].abs().max() > 0
    assert detached[:, 0].abs().max() > 0  # the first latent feeds every prediction


def test_ahead_horizon_limits():
    out = make_model()(data(T=6)[0])
    for horizon in (1, 6):
        with pytest.raises(ValueError, match="horizon must be at least 2 and below the series length 6"):
            out.score_ahead(out.latents, horizon)


# ------------------------------------------------------------------------------ the estimator


def series(n=8, T=30, seed=0):
    rng = np.random.default_rng(seed)
    return 0.1 * rng.normal(size=(n, T, 3)).cumsum(1)


@pytest.mark.parametrize("value", [0, -2, 2.5, "3", True])
def test_multistep_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match="multistep must be a positive integer"):
        LDMFilter(multistep=value).fit(series())


def test_multistep_needs_the_kalman_predictor():
    with pytest.raises(ValueError, match="multistep > 1 needs the Kalman predictor"):
        LDMFilter(predictor="rnn", multistep=3).fit(series())


def test_multistep_must_be_below_the_window():
    with pytest.raises(ValueError, match=r"multistep \(30\) must be below the training window's length \(30 steps\)"):
        LDMFilter(multistep=30, max_epochs=1, verbose=False).fit(series())
    with pytest.raises(ValueError, match=r"multistep \(12\) must be below the training window's length \(12 steps\)"):
        LDMFilter(multistep=12, window=12, max_epochs=1, verbose=False).fit(series())


@pytest.mark.parametrize("dynamics", ["linear", "mlp"])
def test_fit_with_multistep_trains_and_round_trips(dynamics, tmp_path):
    X = series()
    kwargs = dict(state_dim=4, latent_dim=2, dynamics=dynamics, max_epochs=3, verbose=False)
    one = LDMFilter(**kwargs).fit(X)
    several = LDMFilter(multistep=5, **kwargs).fit(X)
    assert np.isfinite(several.loss_history_).all()
    assert several.loss_history_[0] != one.loss_history_[0]  # the k-step terms are in the loss
    assert several.loss_history_[-1] < several.loss_history_[0]
    loaded = load(several.save(tmp_path / "model.ldm"))
    assert loaded.multistep == 5
    np.testing.assert_allclose(loaded.forecast(X[:2], 4).state.mean, several.forecast(X[:2], 4).state.mean)
