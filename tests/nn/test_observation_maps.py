"""``MLPObservation``, ``ClampObservation`` and the ``LatentKalmanFilter`` with a nonlinear observation
map: the linear reduction for every moment rule, the Jacobians, the clamp's shape, an independent EKF,
the scores and the gradients."""

from __future__ import annotations

import math

import pytest
import torch

from ldmfilter.gaussian import MOMENT_RULES, function_belief_log_likelihood
from ldmfilter.nn import (
    ClampObservation,
    LatentKalmanFilter,
    LinearDynamics,
    MLPDynamics,
    MLPEncoder,
    MLPObservation,
    make_noise,
)
from ldmfilter.training.objectives import ldm_loss

DT = torch.float64
OBS = (6,)
S, L = 4, 2


def dynamics(kind: str, control_dim: int = 0):
    g = torch.Generator().manual_seed(0)
    dyn = (MLPDynamics(S, L, g, control_dim, (8,)) if kind == "mlp" else LinearDynamics(S, L, g, control_dim)).to(DT)
    with torch.no_grad():
        dyn.offset.copy_(0.3 * torch.randn(S, generator=g, dtype=DT))
        dyn.log_scale.fill_(-0.5)
        if control_dim:
            dyn.control.copy_(torch.randn(S, control_dim, generator=g, dtype=DT))
        if kind == "mlp":
            dyn.residual[-1].weight.copy_(0.3 * torch.randn(dyn.residual[-1].weight.shape, generator=g, dtype=DT))
    return dyn


def observation(hidden=(8,), random_output=False):
    obs = MLPObservation(S, L, hidden, torch.Generator().manual_seed(1)).to(DT)
    if random_output:
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for p in obs.residual.parameters():
                p.copy_(0.7 * torch.randn(p.shape, generator=g, dtype=DT))
    return obs


def clamp(low=(-0.4, 0.3), high=(0.5, -0.2), leak=0.05):
    """A clamp with set bounds (by default one band ordered, one crossed)."""
    obs = ClampObservation(S, L, leak=leak).to(DT)
    with torch.no_grad():
        obs.low.copy_(torch.tensor(low, dtype=DT))
        obs.high.copy_(torch.tensor(high, dtype=DT))
    return obs


BENT = {"mlp": lambda: observation(random_output=True), "clamp": clamp}
"""The nonlinear maps, each set away from the identity."""


def latent_filter(dyn, obs=None, moments="linearize", noise="fixed"):
    torch.manual_seed(0)
    encoder = MLPEncoder(OBS, L, hidden=(8,))
    return LatentKalmanFilter(encoder, dyn, make_noise(noise, OBS, L, hidden=(5,)), moments=moments, observation=obs).to(DT)


def test_starts_at_the_linear_map():
    obs = observation()
    h = torch.randn(5, S, dtype=DT)
    value, jac = obs.value_and_jacobian(h)
    torch.testing.assert_close(obs(h), h[:, :L], rtol=0, atol=0)
    torch.testing.assert_close(value, h[:, :L], rtol=0, atol=0)
    torch.testing.assert_close(jac, torch.eye(L, S, dtype=DT).expand(5, L, S), rtol=0, atol=0)


@pytest.mark.parametrize("make", [lambda: observation((8,), True), lambda: observation((7, 5), True), clamp,
                                  lambda: clamp(leak=0.0)], ids=["mlp (8,)", "mlp (7, 5)", "clamp", "clamp, no leak"])
def test_value_and_jacobian_match_autodiff(make):
    obs = make()
    h = torch.randn(6, S, dtype=DT)
    value, jac = obs.value_and_jacobian(h)
    expected = torch.func.vmap(torch.func.jacrev(lambda x: obs(x[None])[0]))(h)
    torch.testing.assert_close(value, obs(h), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(jac, expected, rtol=1e-12, atol=1e-9)  # torch's softplus turns linear at β x > 20
    assert not torch.allclose(jac, torch.eye(L, S, dtype=DT).expand_as(jac))  # the map does bend


@pytest.mark.parametrize("build,match", [(lambda: MLPObservation(S, L, ()), "hidden"),
                                         (lambda: ClampObservation(S, L, sharpness=0.0), "sharpness"),
                                         (lambda: ClampObservation(S, L, leak=1.0), "leak"),
                                         (lambda: ClampObservation(S, L, leak=-0.1), "leak")])
def test_rejects_bad_settings(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_clamp_is_the_identity_inside_its_band_and_flat_beyond():
    obs = clamp(low=(-1.0, -0.5), high=(1.0, 2.0), leak=0.0)
    inside = torch.tensor([[0.3, 0.7, 5.0, -5.0], [-0.5, 1.5, 0.0, 0.0]], dtype=DT)  # the hidden coordinates are not seen
    value, jac = obs.value_and_jacobian(inside)
    torch.testing.assert_close(value, inside[:, :L], rtol=0, atol=1e-3)  # off by exp(−β d)/β at d = 0.5 from a bound
    torch.testing.assert_close(jac, torch.eye(L, S, dtype=DT).expand(2, L, S), rtol=0, atol=1e-2)
    beyond = torch.tensor([[3.0, -4.0, 0.0, 0.0], [-2.5, 9.0, 1.0, 1.0]], dtype=DT)
    value, jac = obs.value_and_jacobian(beyond)
    torch.testing.assert_close(value, torch.tensor([[1.0, -0.5], [-1.0, 2.0]], dtype=DT), rtol=0, atol=1e-6)
    torch.testing.assert_close(jac, torch.zeros(2, L, S, dtype=DT), rtol=0, atol=1e-6)


def test_clamp_leaks_beyond_its_band_and_reflects_between_crossed_bounds():
    leaky = clamp(low=(-1.0, -1.0), high=(1.0, 1.0), leak=0.05)
    h = torch.tensor([[3.0, -4.0, 0.0, 0.0]], dtype=DT)
    value, jac = leaky.value_and_jacobian(h)
    torch.testing.assert_close(value, torch.tensor([[0.95 + 0.15, -0.95 - 0.2]], dtype=DT), rtol=0, atol=1e-6)
    torch.testing.assert_close(jac[0], 0.05 * torch.eye(L, S, dtype=DT), rtol=0, atol=1e-6)
    crossed = clamp(low=(1.0, 1.0), high=(-1.0, -1.0), leak=0.0)
    h = torch.tensor([[0.1, -0.2, 0.0, 0.0]], dtype=DT)
    torch.testing.assert_close(crossed(h), -h[:, :L], rtol=0, atol=1e-4)  # lo + hi − x, rounded as inside a band


def test_clamp_starts_with_the_band_from_minus_one_to_one():
    obs = ClampObservation(S, L)
    assert obs.low.tolist() == [-1.0] * L and obs.high.tolist() == [1.0] * L
    assert (obs.sharpness, obs.leak) == (10.0, 0.0)


@pytest.mark.parametrize("moments", sorted(MOMENT_RULES))
@pytest.mark.parametrize("kind,noise,controls", [("linear", "fixed", False), ("mlp", "fixed", True), ("linear", "input", True),
                                                  ("mlp", "input", False)])
def test_zero_residual_gives_the_linear_models_beliefs_and_scores(kind, noise, controls, moments):
    """With g_φ ≡ 0 the filter, the one-step and stop-gradient scores and the multi-step score are the linear map's."""
    dyn = dynamics(kind, control_dim=2 if controls else 0)
    linear, bent = latent_filter(dyn, None, moments, noise), latent_filter(dyn, observation(), moments, noise)
    x = torch.randn(3, 9, *OBS, dtype=DT)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 4] = mask[2, 0] = False
    u = torch.randn(3, 9, 2, dtype=DT) if controls else None
    a, b = linear(x, mask, u), bent(x, mask, u)
    for name in ("filtered_mean", "filtered_cov", "predicted_mean", "predicted_cov", "log_likelihood"):
        torch.testing.assert_close(getattr(b.filtered, name), getattr(a.filtered, name), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(b.score(b.latents.detach()), a.score(a.latents.detach()), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(b.score_ahead(b.latents, 4), a.score_ahead(a.latents, 4), rtol=1e-10, atol=1e-10)


def reference_ekf(z, dyn, obs, R):
    """A plain extended Kalman filter (autograd Jacobians, inverse-based update) for one series, no mask."""
    Q = dyn.transition_cov()
    m, P = torch.zeros(S, dtype=DT), torch.eye(S, dtype=DT)
    means, logliks = [], []
    for t in range(z.shape[0]):
        if t > 0:
            J = torch.autograd.functional.jacobian(lambda v: dyn(v[None])[0], m)
            m, P = dyn(m[None])[0], J @ P @ J.T + Q
        H = torch.autograd.functional.jacobian(lambda v: obs(v[None])[0], m)
        innovation_cov = H @ P @ H.T + R
        e = z[t] - obs(m[None])[0]
        K = P @ H.T @ torch.linalg.inv(innovation_cov)
        m, P = m + K @ e, (torch.eye(S, dtype=DT) - K @ H) @ P
        logliks.append(-0.5 * (torch.logdet(innovation_cov) + e @ torch.linalg.solve(innovation_cov, e) + L * math.log(2 * math.pi)))
        means.append(m)
    return torch.stack(means), torch.stack(logliks)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("bent", sorted(BENT))
def test_first_order_rule_is_the_extended_kalman_filter(kind, bent):
    dyn, obs = dynamics(kind), BENT[bent]()
    model = latent_filter(dyn, obs)
    x = torch.randn(2, 8, *OBS, dtype=DT)
    with torch.no_grad():
        out = model(x)
        R = out.observation_cov
        for series in range(2):
            means, logliks = reference_ekf(out.latents[series], dyn, obs, R)
            torch.testing.assert_close(out.filtered.filtered_mean[series], means, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(out.log_likelihood[series], logliks, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("moments", sorted(MOMENT_RULES))
@pytest.mark.parametrize("bent", sorted(BENT))
def test_score_of_the_filtered_latents_is_the_filters_log_likelihood(moments, bent):
    model = latent_filter(dynamics("mlp"), BENT[bent](), moments)
    x = torch.randn(3, 7, *OBS, dtype=DT)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 2] = False
    with torch.no_grad():
        out = model(x, mask)
    torch.testing.assert_close(out.score(out.latents), out.log_likelihood, rtol=1e-10, atol=1e-10)
    assert float(out.log_likelihood[0, 2]) == 0.0  # a missing frame is not scored


@pytest.mark.parametrize("objective", ["stopgrad", "knn"])
@pytest.mark.parametrize("bent", sorted(BENT))
def test_gradients_reach_the_observation_map_and_the_encoder(objective, bent):
    obs = BENT[bent]()
    model = latent_filter(dynamics("linear"), obs)
    loss = ldm_loss(model(torch.randn(4, 10, *OBS, dtype=DT)), objective, multistep=3)
    loss.backward()
    groups = model.parameter_groups()
    assert [id(p) for p in groups["observation"]] == [id(p) for p in obs.parameters()]
    grouped = [id(p) for params in groups.values() for p in params]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # every parameter in exactly one group
    for name in ("observation", "encoder", "predictor"):
        grads = [p.grad for p in groups[name]]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(float(g.abs().sum()) > 0 for g in grads), name


def test_function_belief_log_likelihood_checks_shapes():
    mean, cov = torch.zeros(2, 5, S, dtype=DT), torch.eye(S, dtype=DT).expand(2, 5, S, S)
    R = torch.eye(L, dtype=DT)
    with pytest.raises(ValueError, match="must agree"):
        function_belief_log_likelihood(torch.zeros(2, 4, L, dtype=DT), mean, cov, observation(), R)
    with pytest.raises(ValueError, match="observation_fn must map"):
        function_belief_log_likelihood(torch.zeros(2, 5, 3, dtype=DT), mean, cov, observation(), torch.eye(3, dtype=DT))
