"""The nonlinear filter's hand-written reverse pass (``gaussian.adjoint_filter``, ``gaussian.adjoints``).

``nonlinear_filter`` takes it for a transition with ``value_and_jacobian`` and ``state_vjp``
(``MLPDynamics``) and a linear observation, under every moment rule.  Pinned down here: each
step's adjoint equals autograd through the forward step; the whole filter's values and the
gradients of every input (observations, ``Q``, ``H``, ``R``, the prior, controls, the module's
parameters), with cotangents on every output, equal those of the generic autograd recursion
(float64 to 1e-10, float32 to float32 rounding), with masks, time-varying noise, controls, batch
shapes, deeper residual MLPs and the unscented rule's parameters.
"""

from __future__ import annotations

import pytest
import torch

from ldmfilter.gaussian import nonlinear_filter
from ldmfilter.gaussian.adjoints import (
    cholesky_adjoint,
    condition_adjoint,
    linear_observation_adjoint,
    observation_matrix_adjoint,
    predict_cov_adjoint,
    sigma_moments_adjoint,
    sigma_points_adjoint,
)
from ldmfilter.gaussian.adjoint_filter import supports_adjoint
from ldmfilter.gaussian.linalg import matmul_add
from ldmfilter.gaussian.linalg import symmetrize
from ldmfilter.gaussian.moments import sigma_rule
from ldmfilter.gaussian.steps import predict_cov, whitened_condition
from ldmfilter.nn import MLPDynamics

DT = torch.float64
FIELDS = ["filtered_mean", "filtered_cov", "predicted_mean", "predicted_cov", "log_likelihood"]


def _spd(*shape, n, gen):
    a = torch.randn(*shape, n, n, generator=gen, dtype=DT)
    return a @ a.mT / n + 0.5 * torch.eye(n, dtype=DT)


def _vjp(outputs, inputs, cotangents):
    return torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True, retain_graph=True)


class Generic:
    """The same transition without ``state_vjp``: ``nonlinear_filter`` runs the autograd recursion."""

    def __init__(self, module):
        self.module = module

    def __call__(self, *args):
        return self.module(*args)

    def value_and_jacobian(self, *args):
        return self.module.value_and_jacobian(*args)


def test_only_modules_with_both_methods_take_the_adjoint_path():
    dyn = MLPDynamics(3, 2)
    assert supports_adjoint(dyn)
    assert not supports_adjoint(Generic(dyn))
    assert not supports_adjoint(lambda h: h)


def test_step_adjoints_equal_autograd():
    gen = torch.Generator().manual_seed(0)
    n, S, L = 3, 4, 2
    J = torch.randn(n, S, S, generator=gen, dtype=DT).requires_grad_()
    P = _spd(n, n=S, gen=gen).requires_grad_()
    Q = _spd(n=S, gen=gen).requires_grad_()
    H = torch.randn(L, S, generator=gen, dtype=DT).requires_grad_()
    R = _spd(n=L, gen=gen).requires_grad_()
    m = torch.randn(n, S, generator=gen, dtype=DT).requires_grad_()
    z = torch.randn(n, L, generator=gen, dtype=DT).requires_grad_()

    pred_cov = predict_cov(P, J, Q)
    cross_t = H @ pred_cov
    innovation = z - m @ H.T
    mean, cov, chol, whitened = whitened_condition(m, pred_cov, cross_t.mT, matmul_add(R, cross_t, H.mT), innovation)
    g_mean, g_cov, g_chol = (torch.randn(x.shape, generator=gen, dtype=DT) for x in (mean, cov, chol))

    # update, then X = H P⁻, Σ = X Hᵀ + R, e = z − H m⁻; then P⁻ = J P Jᵀ + Q: every leaf against autograd
    g_cross, g_obs_cov, g_innovation = condition_adjoint(chol.detach(), whitened.detach(), g_mean, symmetrize(g_cov))
    g_pcov = symmetrize(g_cov)  # P = sym(P⁻ − Wᵀ W)
    g_obs_cov = g_obs_cov + cholesky_adjoint(chol.detach(), g_chol)
    from_obs, from_innovation = linear_observation_adjoint(H.detach(), g_cross, g_obs_cov, g_innovation)
    full = _vjp((mean, cov, chol), (P, J, Q, H, R, m, z), (g_mean, g_cov, g_chol))
    torch.testing.assert_close(g_innovation, full[6], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_obs_cov.sum(0), full[4], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_mean + from_innovation, full[5], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        observation_matrix_adjoint(H.detach(), m.detach(), pred_cov.detach(), g_cross, g_obs_cov, g_innovation).sum(0),
        full[3], rtol=1e-12, atol=1e-12,
    )
    # predict: P⁻'s whole cotangent back through J P Jᵀ + Q
    g_pred = g_pcov + from_obs
    g_J, g_P, g_Q = predict_cov_adjoint(J.detach(), P.detach(), g_pred)
    torch.testing.assert_close(g_J, full[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_P, full[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_Q.sum(0), full[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method,options", [("cubature", {}), ("unscented", {}), ("unscented", {"alpha": 0.5, "kappa": 1.0})])
def test_sigma_point_adjoints_equal_autograd(method, options):
    gen = torch.Generator().manual_seed(2)
    n, S = 3, 4
    weight = torch.randn(S, S, generator=gen, dtype=DT)
    rule = sigma_rule(method, S, **options)
    m = torch.randn(n, S, generator=gen, dtype=DT).requires_grad_()
    P = _spd(n, n=S, gen=gen).requires_grad_()
    Q = _spd(n=S, gen=gen).requires_grad_()
    points, factor, deviations = rule.points(m, P)
    images = torch.tanh(points @ weight.T) + 0.3 * points
    moments = rule.moments(images, deviations)
    pred_mean, pred_cov = moments.mean, symmetrize(moments.cov + Q)
    g_mean, g_cov = torch.randn(pred_mean.shape, generator=gen, dtype=DT), torch.randn(pred_cov.shape, generator=gen, dtype=DT)
    expected = _vjp((pred_mean, pred_cov), (m, P, Q, images), (g_mean, g_cov))
    g_images, g_Q = sigma_moments_adjoint(rule, images.detach(), moments.mean.detach(), g_mean, g_cov)
    torch.testing.assert_close(g_images, expected[3], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_Q.sum(0), expected[2], rtol=1e-12, atol=1e-12)
    (g_points,) = _vjp(images, points, g_images)
    g_m, g_P = sigma_points_adjoint(rule, factor.detach(), g_points)
    torch.testing.assert_close(g_m, expected[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_P, expected[1], rtol=1e-12, atol=1e-12)


def _problem(dtype, control_dim=0, hidden=(6,), mask=False, time_varying=False, batch=(3,), seed=0, selection=False,
             activation="tanh"):
    gen = torch.Generator().manual_seed(seed)
    S, L, T = 4, 2, 7
    dyn = MLPDynamics(S, L, control_dim=control_dim, hidden=hidden, activation=activation)
    with torch.no_grad():
        for p in dyn.residual.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        dyn.offset.copy_(0.3 * torch.randn(S, generator=gen))
    dyn = dyn.to(dtype)
    args = {
        "observations": torch.randn(*batch, T, L, generator=gen, dtype=DT).to(dtype),
        "transition_cov": (0.1 * _spd(*batch, T, n=S, gen=gen) if time_varying else 0.1 * _spd(n=S, gen=gen)).to(dtype),
        "observation_matrix": (torch.eye(L, S, dtype=DT) if selection else torch.randn(L, S, generator=gen, dtype=DT)).to(dtype),
        "observation_cov": (_spd(*batch, T, n=L, gen=gen) if time_varying else _spd(n=L, gen=gen)).to(dtype),
        "initial_mean": torch.randn(S, generator=gen, dtype=DT).to(dtype),
        "initial_cov": _spd(n=S, gen=gen).to(dtype),
    }
    if control_dim:
        args["transition_inputs"] = torch.randn(*batch, T, control_dim, generator=gen, dtype=DT).to(dtype)
    if mask:
        args["mask"] = torch.rand(*batch, T, L, generator=gen) > 0.3
    for value in args.values():
        if value.is_floating_point():
            value.requires_grad_()
    return dyn, args


def _values_and_grads(transition, dyn, args, method="linearize", **rule_options):
    result = nonlinear_filter(transition_fn=transition, method=method, **args, **rule_options)
    gen = torch.Generator().manual_seed(1)
    values = [getattr(result, name) for name in FIELDS]
    loss = sum((v * torch.randn(v.shape, generator=gen, dtype=DT).to(v.dtype)).sum() for v in values)
    leaves = [v for v in args.values() if v.requires_grad] + list(dyn.parameters())
    return values, torch.autograd.grad(loss, leaves, allow_unused=True)


CASES = [
    {},
    {"mask": True, "time_varying": True},
    {"control_dim": 2},
    {"control_dim": 1, "hidden": (5, 4), "mask": True},
    {"batch": (2, 2), "time_varying": True},
    {"batch": ()},
    {"selection": True},  # H = [I 0]: the update's slices
    {"selection": True, "control_dim": 2, "time_varying": True},
    {"activation": "localized", "control_dim": 1, "hidden": (5, 4), "mask": True},
    {"activation": "localized", "selection": True},
]
RULES = [("linearize", {}), ("unscented", {}), ("cubature", {}), ("unscented", {"alpha": 0.7, "beta": 1.0, "kappa": 1.0})]


@pytest.mark.parametrize("method,rule_options", RULES)
@pytest.mark.parametrize("options", CASES)
def test_filter_values_and_gradients_equal_the_autograd_recursion(options, method, rule_options):
    dyn, args = _problem(DT, **options)
    fast_values, fast_grads = _values_and_grads(dyn, dyn, args, method, **rule_options)
    values, grads = _values_and_grads(Generic(dyn), dyn, args, method, **rule_options)
    for got, want in zip(fast_values, values):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert [g is None for g in fast_grads] == [g is None for g in grads]
    for got, want in zip(fast_grads, grads):
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_rule_options_are_checked_on_the_adjoint_path_too():
    dyn, args = _problem(DT)
    with pytest.raises(TypeError, match="takes no options"):
        nonlinear_filter(transition_fn=dyn, method="cubature", alpha=0.5, **args)
    with pytest.raises(TypeError):
        nonlinear_filter(transition_fn=dyn, method="unscented", gamma=0.5, **args)


@pytest.mark.parametrize("method", ["linearize", "cubature"])
@pytest.mark.parametrize("options", [{"mask": True}, {"selection": True}])
def test_float32_values_and_gradients_match_the_autograd_recursion(options, method):
    dyn, args = _problem(torch.float32, control_dim=2, **options)
    fast_values, fast_grads = _values_and_grads(dyn, dyn, args, method)
    values, grads = _values_and_grads(Generic(dyn), dyn, args, method)
    for got, want in zip(fast_values, values):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want)
    for got, want in zip(fast_grads, grads):
        if want is not None:
            assert got.dtype == want.dtype
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["linearize", "unscented"])
def test_gradcheck_through_the_adjoint_filter(method):
    dyn, args = _problem(DT, control_dim=1, hidden=(3,), batch=(2,))
    args = {k: v.detach() for k, v in args.items()}
    obs = args.pop("observations")[..., :3, :].requires_grad_()
    inputs = args.pop("transition_inputs")[..., :3, :].requires_grad_()
    cov = args.pop("transition_cov").requires_grad_()

    def run(obs, inputs, cov):  # Q is checked symmetric: perturb it symmetrically
        result = nonlinear_filter(obs, dyn, (cov + cov.mT) / 2, method=method, transition_inputs=inputs, **args)
        return result.filtered_mean, result.predicted_cov, result.log_likelihood

    assert torch.autograd.gradcheck(run, (obs, inputs, cov))


def test_a_single_step_has_gradients_for_the_update_only():
    dyn, args = _problem(DT, time_varying=True)
    args = {k: v.detach()[..., :1, :, :] if k in ("transition_cov", "observation_cov") else v for k, v in args.items()}
    args["observations"] = args["observations"].detach()[..., :1, :].requires_grad_()
    values, grads = _values_and_grads(dyn, dyn, args)
    _, expected = _values_and_grads(Generic(dyn), dyn, args)
    assert values[0].shape[-2] == 1
    for got, want in zip(grads, expected):
        assert (got is None) == (want is None)
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_the_reverse_pass_is_first_order_only():
    dyn, args = _problem(DT)
    result = nonlinear_filter(transition_fn=dyn, **args)
    (grad,) = torch.autograd.grad(result.log_likelihood.sum(), args["observations"], create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad.sum(), args["observations"])
