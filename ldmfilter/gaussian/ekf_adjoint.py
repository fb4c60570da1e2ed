"""The first-order (EKF) filter with a linear observation model and a hand-written reverse pass.

For a transition ``f`` that is an ``nn.Module`` with ``value_and_jacobian(h, u)`` and
``state_vjp(h, u, v̄, J̄)`` (as :class:`~ldmfilter.nn.MLPDynamics` has),
:func:`~.nonlinear.nonlinear_filter` runs the first-order rule here:

* forward: the same recursion as the generic loop (:func:`~.steps.predict_cov` with ``J =
  ∂f/∂h`` at the filtered mean, then :func:`~.steps.condition`), without recording a graph;
* backward: the adjoint recursion, step by step from the last (:mod:`.adjoints`); the state's
  cotangent passes through ``f`` and its Jacobian by ``state_vjp``;
* then the gradient of ``f``'s parameters (and of the controls) in one batched autograd call over
  all steps' states.

Autograd would record a few dozen small operations per step, forward and backward, and such a
recursion's cost is their dispatch: this path takes about a third off a training step of
:class:`~ldmfilter.nn.LatentKalmanFilter` with ``MLPDynamics`` (``benchmarks/nonlinear.py``).
The results are the generic loop's (the tests compare values and every input's gradient).  First
derivatives only: the backward is not itself differentiable, and ``torch.func`` transforms
(``vmap``, ``jacrev``) do not apply to it.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .adjoints import (
    cholesky_adjoint,
    condition_adjoint,
    linear_observation_adjoint,
    observation_matrix_adjoint,
    predict_cov_adjoint,
    selection_observation_adjoint_,
)
from .kalman import at_step
from .linalg import matmul_add, symmetrize
from .steps import predict_cov, whitened_condition

__all__ = ["supports_adjoint", "first_order_filter"]


def supports_adjoint(transition_fn) -> bool:
    """Whether the first-order filter can run ``transition_fn`` through the hand-written reverse pass."""
    return (
        isinstance(transition_fn, torch.nn.Module)
        and callable(getattr(transition_fn, "value_and_jacobian", None))
        and callable(getattr(transition_fn, "state_vjp", None))
    )


def first_order_filter(module, dtype, check, obs, Q, H, R, initial_mean, initial_cov, controls=None):
    """Run :class:`_FirstOrderFilter` on batched inputs of any batch shape.

    Parameters
    ----------
    module : nn.Module
        The transition, with ``value_and_jacobian`` and ``state_vjp``.
    dtype : torch.dtype
        The module's dtype: states are cast to it for each call, the results back to the working
        dtype (that of ``obs``).
    check : callable
        ``check(value, jacobian)``, raising on a wrong width or dtype.
    obs : Tensor, shape (*batch, T, L)
        Zero-filled observations in the working dtype.
    Q : Tensor, shape (S, S) or (*batch, T, S, S)
    H : Tensor, shape (L, S) or (*batch, T, L, S)
    R : Tensor, shape (L, L) or (*batch, T, L, L)
    initial_mean : Tensor, shape (S,) or (*batch, S)
    initial_cov : Tensor, shape (S, S) or (*batch, S, S)
    controls : Tensor, shape (*batch, T, U), optional
        In the module's dtype.

    Returns
    -------
    filtered_mean, filtered_cov, predicted_mean, predicted_cov : Tensor
        Shapes (*batch, T, S) and (*batch, T, S, S).
    innovations : Tensor, shape (*batch, T, L)
    innovation_chols : Tensor, shape (*batch, T, L, L)
    """
    batch_shape, steps = obs.shape[:-2], obs.shape[-2]

    def flat(x, core_ndim, per_step=True):  # (*b, [T,] *core) → (N, [T,] *core); shared ones as they are
        if x is None or x.ndim == core_ndim:
            return x
        lead = batch_shape + ((steps,) if per_step else ())
        core = x.shape[-core_ndim:]
        return x.expand(lead + core).reshape((-1,) + lead[len(batch_shape):] + core)

    obs_dim, state_dim = H.shape[-2:]
    selects = H.ndim == 2 and torch.equal(H, torch.eye(obs_dim, state_dim, dtype=H.dtype, device=H.device))
    outputs = _FirstOrderFilter.apply(
        module, dtype, check, selects, obs.reshape((-1,) + obs.shape[-2:]), flat(Q, 2), flat(H, 2), flat(R, 2),
        flat(initial_mean, 1, False), flat(initial_cov, 2, False), flat(controls, 1), *module.parameters(),
    )
    return tuple(x.reshape(batch_shape + x.shape[1:]) for x in outputs)


SETTINGS = ("module", "dtype", "check", "selects")  # _FirstOrderFilter's leading arguments, then its tensors:
INPUTS = ("obs", "Q", "H", "R", "initial_mean", "initial_cov", "controls")  # then the module's parameters


def _step_grad(grads: list, like: torch.Tensor | None, needed: bool):
    """Gradient of a parameter from its per-step gradients ``grads[t]`` (N, *core), or None."""
    if not needed:
        return None
    if like.ndim == grads[0].ndim - 1:  # shared across series and steps
        return torch.stack(grads).sum((0, 1))
    return torch.stack(grads, 1)


class _FirstOrderFilter(torch.autograd.Function):
    """Forward and reverse of the first-order filter over (N, T) series; see the module docstring."""

    @staticmethod
    def forward(ctx, module, dtype, check, selects, obs, Q, H, R, initial_mean, initial_cov, controls, *params):
        num, steps, obs_dim = obs.shape
        state_dim = initial_mean.shape[-1]
        mean = initial_mean.expand(num, state_dim)
        cov = initial_cov.expand(num, state_dim, state_dim)
        fmeans, fcovs, pmeans, pcovs, innovations, chols, whitened, jacobians, states = [], [], [], [], [], [], [], [], []
        for t in range(steps):
            if t:
                states.append(mean.to(dtype))  # f and J at the filtered mean, in the module's dtype
                mean, jacobian = module.value_and_jacobian(states[-1], None if controls is None else controls[:, t])
                check(mean, jacobian)
                mean, jacobian = mean.to(obs.dtype), jacobian.to(obs.dtype)
                cov = predict_cov(cov, jacobian, at_step(Q, t, 2))  # P⁻ = J P Jᵀ + Q
                jacobians.append(jacobian)
            H_t, R_t = at_step(H, t, 2), at_step(R, t, 2)
            if selects:  # H = [I 0]: slices instead of products
                cross_t, innovation, obs_cov = cov[:, :obs_dim], obs[:, t] - mean[:, :obs_dim], cov[:, :obs_dim, :obs_dim] + R_t
            else:
                cross_t = H_t @ cov  # Cov[x, z]ᵀ = H P⁻
                innovation = obs[:, t] - (H_t @ mean.unsqueeze(-1)).squeeze(-1)  # e = z − H m⁻
                obs_cov = matmul_add(R_t, cross_t, H_t.mT)  # Σ_e = H P⁻ Hᵀ + R
            pmeans.append(mean)
            pcovs.append(cov)
            innovations.append(innovation)
            mean, cov, chol, white = whitened_condition(mean, cov, cross_t.mT, obs_cov, innovation)
            fmeans.append(mean)
            fcovs.append(cov)
            chols.append(chol)
            whitened.append(white)
        outputs = tuple(torch.stack(x, 1) for x in (fmeans, fcovs, pmeans, pcovs, innovations, chols))
        ctx.module, ctx.selects = module, selects
        ctx.set_materialize_grads(False)
        steps_after_first = [torch.stack(x, 1) if x else None for x in (states, jacobians)]
        ctx.save_for_backward(*outputs, torch.stack(whitened, 1), *steps_after_first, Q, H, R, initial_mean, initial_cov, controls)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_fmean, grad_fcov, grad_pmean, grad_pcov, grad_innovation, grad_chol):
        fmean, fcov, pmean, pcov, _, chol, whitened, states, jacobians, Q, H, R, m0, P0, controls = ctx.saved_tensors
        needs = dict(zip(INPUTS, ctx.needs_input_grad[len(SETTINGS):]))
        num, steps, state_dim = fmean.shape
        adj_mean = fmean.new_zeros(num, state_dim)  # cotangents of the filtered belief at step t
        adj_cov = fcov.new_zeros(num, state_dim, state_dim)  # kept symmetric (the filtered P is symmetrised)
        grad_fcov = None if grad_fcov is None else symmetrize(grad_fcov)
        grads = {"obs": [], "Q": [], "H": [], "R": []}
        value_grads, jacobian_grads = [], []
        hidden = _hidden_layers(ctx.module, states, controls)
        for t in reversed(range(steps)):
            if grad_fmean is not None:
                adj_mean = adj_mean + grad_fmean[:, t]
            if grad_fcov is not None:
                adj_cov = adj_cov + grad_fcov[:, t]
            g_cross, g_obs_cov, g_innovation = condition_adjoint(chol[:, t], whitened[:, t], adj_mean, adj_cov)
            if grad_chol is not None:
                g_obs_cov = g_obs_cov + cholesky_adjoint(chol[:, t], grad_chol[:, t])
            if grad_innovation is not None:
                g_innovation = g_innovation + grad_innovation[:, t]
            H_t = at_step(H, t, 2)
            if ctx.selects:  # adj_mean and adj_cov are this step's own tensors: add in place
                g_pcov, g_pmean = adj_cov, adj_mean
                selection_observation_adjoint_(g_pcov, g_pmean, g_cross, g_obs_cov, g_innovation)
            else:
                from_obs_cov, from_innovation = linear_observation_adjoint(H_t, g_cross, g_obs_cov, g_innovation)
                g_pcov, g_pmean = adj_cov + from_obs_cov, adj_mean + from_innovation
            if grad_pcov is not None:
                g_pcov = g_pcov + grad_pcov[:, t]
            if grad_pmean is not None:
                g_pmean = g_pmean + grad_pmean[:, t]
            grads["obs"].append(g_innovation)
            grads["R"].append(g_obs_cov)
            if needs["H"]:
                grads["H"].append(observation_matrix_adjoint(H_t, pmean[:, t], pcov[:, t], g_cross, g_obs_cov, g_innovation))
            if t == 0:
                break
            g_jacobian, adj_cov, g_Q = predict_cov_adjoint(jacobians[:, t - 1], fcov[:, t - 1], g_pcov)
            grads["Q"].append(g_Q)
            inputs = None if controls is None else controls[:, t]
            grads_in_model_dtype = (g_pmean.to(states.dtype), g_jacobian.to(states.dtype))
            options = {} if hidden is None else {"hidden": hidden.rows(slice((t - 1) * num, t * num))}
            adj_mean = ctx.module.state_vjp(states[:, t - 1], inputs, *grads_in_model_dtype, **options).to(fmean.dtype)
            value_grads.append(g_pmean)
            jacobian_grads.append(g_jacobian)
        for name in grads:
            grads[name].reverse()
        if Q.ndim > 2:  # Q_0 is never used
            grads["Q"].insert(0, torch.zeros_like(Q[:, 0]))
        out = [
            torch.stack(grads["obs"], 1) if needs["obs"] else None,
            _step_grad(grads["Q"], Q, needs["Q"] and steps > 1) if grads["Q"] else None,
            _step_grad(grads["H"], H, needs["H"]),
            _step_grad(grads["R"], R, needs["R"]),
            g_pmean.sum_to_size(m0.shape) if needs["initial_mean"] else None,
            g_pcov.sum_to_size(P0.shape) if needs["initial_cov"] else None,
        ]
        grad_controls, *grad_params = _transition_grads(ctx, states, controls, value_grads, jacobian_grads)
        return (*(None for _ in SETTINGS), *out, grad_controls, *grad_params)


def _hidden_layers(module, states, controls):
    """``module.hidden_layers`` at every step's states at once (time-major rows), if it has them."""
    if states is None or not callable(getattr(module, "hidden_layers", None)):
        return None
    rows = states.transpose(0, 1).reshape(-1, states.shape[-1])
    inputs = None if controls is None else controls[:, 1:].transpose(0, 1).reshape(-1, controls.shape[-1])
    return module.hidden_layers(rows, inputs)


def _transition_grads(ctx, states, controls, value_grads, jacobian_grads) -> list:
    """Gradients of the controls and of the module's parameters, in one batched pass over all steps."""
    param_needs = ctx.needs_input_grad[len(SETTINGS) + len(INPUTS):]
    params = list(ctx.module.parameters())
    wanted = [p for p, need in zip(params, param_needs) if need]
    want_controls = controls is not None and ctx.needs_input_grad[len(SETTINGS) + INPUTS.index("controls")]
    if not value_grads or not (wanted or want_controls):
        return [None] * (1 + len(params))
    value_grads.reverse()
    jacobian_grads.reverse()
    states = states.reshape(-1, states.shape[-1])
    with torch.enable_grad():
        inputs = None
        if controls is not None:
            inputs = controls[:, 1:].reshape(-1, controls.shape[-1]).detach().requires_grad_(want_controls)
        value, jacobian = ctx.module.value_and_jacobian(states, inputs)
        targets = wanted + ([inputs] if want_controls else [])
        found = torch.autograd.grad(
            (value, jacobian), targets,
            (torch.stack(value_grads, 1).reshape(value.shape).to(value.dtype),
             torch.stack(jacobian_grads, 1).reshape(jacobian.shape).to(jacobian.dtype)),
            allow_unused=True,
        )
    found = list(found)
    grad_controls = None
    if want_controls:
        grad_controls = torch.cat([torch.zeros_like(controls[:, :1]), found.pop().reshape(controls[:, 1:].shape)], 1)
    by_param = iter(found)
    return [grad_controls] + [next(by_param) if need else None for need in param_needs]
