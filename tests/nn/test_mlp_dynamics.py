"""``MLPDynamics`` and the nonlinear ``LatentKalmanFilter``: the linear reduction for every moment
rule, the analytic Jacobian, controls, boundedness and long-sequence stability."""

from __future__ import annotations

import pytest
import torch

from ldmfilter.gaussian import MOMENT_RULES, nonlinear_filter
from ldmfilter.nn import RESIDUAL_ACTIVATIONS, LatentKalmanFilter, LinearDynamics, LocalizedUnit, MLPDynamics, MLPEncoder, make_noise
from ldmfilter.training.objectives import ldm_loss

DT = torch.float64
OBS = (6,)


def pair(state_dim=4, latent_dim=2, control_dim=0, seed=0, hidden=(16,), activation="tanh"):
    """Linear and MLP dynamics with the same linear part (b, q, s, B moved off their initial values)."""
    g = torch.Generator().manual_seed(seed)
    linear = LinearDynamics(state_dim, latent_dim, g, control_dim)
    with torch.no_grad():
        linear.offset.copy_(0.3 * torch.randn(state_dim, generator=g))
        linear.log_process_noise.copy_(0.2 * torch.randn(state_dim, generator=g))
        linear.log_scale.fill_(-0.5)
        if control_dim:
            linear.control.copy_(torch.randn(state_dim, control_dim, generator=g))
    mlp = MLPDynamics(state_dim, latent_dim, torch.Generator().manual_seed(seed + 1), control_dim, hidden, activation)
    mlp.load_state_dict({**mlp.state_dict(), **linear.state_dict()})
    return linear.to(DT), mlp.to(DT)


def randomize_residual(dyn: MLPDynamics, scale=0.5, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in dyn.residual.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def latent_filter(dyn, moments="linearize", noise="fixed"):
    torch.manual_seed(0)
    encoder = MLPEncoder(OBS, dyn.latent_dim, hidden=(8,))
    return LatentKalmanFilter(encoder, dyn, make_noise(noise, OBS, dyn.latent_dim, hidden=(5,)), moments=moments).to(DT)


def test_zero_residual_is_the_linear_transition():
    linear, mlp = pair(control_dim=2)
    h, u = torch.randn(7, 4, dtype=DT), torch.randn(7, 2, dtype=DT)
    expected = h @ linear.transition_matrix().T + linear.transition_offset(u[:, None, :])[:, 0]
    torch.testing.assert_close(mlp(h, u), expected)


@pytest.mark.parametrize("activation", sorted(RESIDUAL_ACTIVATIONS))
@pytest.mark.parametrize("control_dim,hidden", [(0, (16,)), (3, (7, 5))])
def test_value_and_jacobian_matches_autodiff(control_dim, hidden, activation):
    _, mlp = pair(control_dim=control_dim, hidden=hidden, activation=activation)
    randomize_residual(mlp)
    h = torch.randn(5, 4, dtype=DT)
    u = torch.randn(5, control_dim, dtype=DT) if control_dim else None
    value, jac = mlp.value_and_jacobian(h, u)
    single = lambda x, v: mlp(x[None], None if v is None else v[None])[0]  # noqa: E731
    expected = torch.func.vmap(torch.func.jacfwd(single), in_dims=(0, 0 if control_dim else None))(h, u)
    torch.testing.assert_close(value, mlp(h, u))
    torch.testing.assert_close(jac, expected)


@pytest.mark.parametrize("moments", sorted(MOMENT_RULES))
@pytest.mark.parametrize("noise", ["fixed", "input"])
def test_zero_residual_reproduces_the_linear_filter_and_loss(moments, noise):
    linear, mlp = pair(control_dim=2)
    x = torch.randn(3, 9, *OBS, dtype=DT)
    u = torch.randn(3, 9, 2, dtype=DT)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 2:4] = False
    a = latent_filter(linear, noise=noise)(x, mask, controls=u)
    b = latent_filter(mlp, moments, noise=noise)(x, mask, controls=u)
    for name in ("filtered_mean", "filtered_cov", "predicted_mean", "predicted_cov", "log_likelihood"):
        torch.testing.assert_close(getattr(b.filtered, name), getattr(a.filtered, name).expand_as(getattr(b.filtered, name)), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ldm_loss(b), ldm_loss(a), rtol=1e-12, atol=1e-12)


def test_nonlinear_latent_filter_is_the_engine_filter():
    _, mlp = pair()
    randomize_residual(mlp)
    model = latent_filter(mlp, "unscented")
    x = torch.randn(2, 7, *OBS, dtype=DT)
    out = model(x)
    R = model.noise(x, mlp.log_scale)
    m0, P0 = mlp.initial_belief()
    direct = nonlinear_filter(out.latents, mlp, mlp.transition_cov(), mlp.observation_matrix, R, m0, P0, method="unscented")
    torch.testing.assert_close(out.filtered.filtered_mean, direct.filtered_mean)
    torch.testing.assert_close(out.log_likelihood, direct.log_likelihood)


@pytest.mark.parametrize("activation", sorted(RESIDUAL_ACTIVATIONS))
def test_residual_is_bounded_for_any_state(activation):
    _, mlp = pair(activation=activation)
    randomize_residual(mlp, scale=2.0)
    last = mlp.residual[-1]
    bound = last.weight.abs().sum(1) + last.bias.abs()
    h = 1e6 * torch.randn(200, 4, dtype=DT)
    residual = mlp(h) - (h - mlp.offset) @ mlp.transition.T - mlp.offset
    assert (residual.abs() <= bound * (1 + 1e-9)).all()


def test_controls_are_checked():
    _, mlp = pair(control_dim=2)
    h = torch.randn(3, 4, dtype=DT)
    with pytest.raises(ValueError, match="2 control input"):
        mlp(h)
    with pytest.raises(ValueError, match="must end in 2"):
        mlp(h, torch.randn(3, 3, dtype=DT))
    _, plain = pair()
    with pytest.raises(ValueError, match="must end in 0"):
        plain(h, torch.randn(3, 1, dtype=DT))


def test_residual_output_starts_at_zero_and_learns():
    _, mlp = pair()
    model = latent_filter(mlp)
    assert all(float(p.detach().abs().max()) == 0.0 for p in mlp.residual[-1].parameters())
    ldm_loss(model(torch.randn(4, 12, *OBS, dtype=DT))).backward()
    assert float(mlp.residual[-1].weight.grad.abs().max()) > 0.0
    assert "residual.0.weight" in dict(mlp.named_parameters())
    groups = model.parameter_groups()
    assert {id(p) for p in groups["residual"]} == {id(p) for p in mlp.residual.parameters()}
    assert all(all(p is not q for q in groups["residual"]) for p in groups["predictor"])
    assert any(p is mlp.transition for p in groups["predictor"])


@pytest.mark.parametrize("moments", sorted(MOMENT_RULES))
def test_long_float32_sequences_stay_finite_and_psd(moments):
    _, mlp = pair(seed=4)
    randomize_residual(mlp, scale=1.5)
    mlp.clip_spectral_radius_(1.02)
    model = latent_filter(mlp, moments).float()
    x = 3.0 * torch.randn(2, 3000, *OBS)
    with torch.no_grad():
        result = model(x).filtered
    assert torch.isfinite(result.filtered_mean).all() and torch.isfinite(result.log_likelihood).all()
    assert float(torch.linalg.eigvalsh(result.filtered_cov.double()).min()) > -1e-5


@pytest.mark.parametrize("activation", sorted(RESIDUAL_ACTIVATIONS))
@pytest.mark.parametrize("control_dim,hidden", [(0, (16,)), (2, (16,)), (0, (6, 5)), (3, (4, 3, 5))])
def test_state_vjp_matches_autograd_through_value_and_jacobian(control_dim, hidden, activation):
    _, mlp = pair(control_dim=control_dim, hidden=hidden, activation=activation)
    randomize_residual(mlp)
    h = torch.randn(5, 4, dtype=DT, requires_grad=True)
    u = torch.randn(5, control_dim, dtype=DT) if control_dim else None
    value, jac = mlp.value_and_jacobian(h, u)
    grad_value, grad_jac = torch.randn_like(value), torch.randn_like(jac)
    (expected,) = torch.autograd.grad((value, jac), h, (grad_value, grad_jac), retain_graph=True)
    (value_only,) = torch.autograd.grad(value, h, grad_value, retain_graph=True)
    with torch.no_grad():
        got = mlp.state_vjp(h, u, grad_value, grad_jac)
        got_value_only = mlp.state_vjp(h, u, grad_value)
        got_with_hidden = mlp.state_vjp(h, u, grad_value, grad_jac, hidden=mlp.hidden_layers(h, u))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_value_only, value_only, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_with_hidden, expected, rtol=1e-12, atol=1e-12)


def test_localized_unit_and_its_derivatives():
    x = torch.linspace(-6.0, 6.0, 241, dtype=DT, requires_grad=True)
    value = LocalizedUnit()(x)
    (slope,) = torch.autograd.grad(value.sum(), x, create_graph=True)
    (curvature,) = torch.autograd.grad(slope.sum(), x)
    unit = RESIDUAL_ACTIVATIONS["localized"][1]
    got = unit(x.detach(), True)
    for mine, want in zip(got, (value, slope, curvature)):
        torch.testing.assert_close(mine, want.detach(), rtol=1e-12, atol=1e-12)
    assert float(slope[120].detach()) == 1.0 and float(value.detach().abs().max()) <= float(torch.tensor(-0.5).exp()) + 1e-12
    assert unit(x.detach(), False)[2] is None


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be one of"):
        MLPDynamics(4, 2, activation="relu")


def far_state_after(activation: str, steps: int = 4000) -> float:
    """|h| after ``steps`` noiseless steps of ``h ← 0.998 h + 0.05 φ(h)`` (2-D), started at |h| = 20√2."""
    dyn = MLPDynamics(2, 1, hidden=(2,), activation=activation).to(DT)
    with torch.no_grad():
        dyn.transition.copy_(0.998 * torch.eye(2, dtype=DT))
        dyn.offset.zero_()
        dyn.residual[0].weight.copy_(torch.eye(2, dtype=DT))
        dyn.residual[-1].weight.copy_(0.05 * torch.eye(2, dtype=DT))
        h = torch.full((1, 2), 20.0, dtype=DT)
        for _ in range(steps):
            h = dyn(h)
    return float(h.norm())


def test_localized_residual_fades_far_from_the_data_where_tanh_holds_a_runaway():
    # tanh saturates: a constant outward push 0.05 against the pull 0.002 |h| holds the state at 25 per axis
    assert far_state_after("tanh") == pytest.approx(25.0 * 2**0.5, rel=1e-3)
    # the localized units fade: the state returns to the band where they act (0.002 = 0.05 exp(−h²/2), h ≈ 2.54)
    assert far_state_after("localized") == pytest.approx(2.537 * 2**0.5, rel=1e-2)
