"""The nonlinear filter with a linear observation model and a hand-written reverse pass.

For a transition ``f`` that is an ``nn.Module`` with ``value_and_jacobian(h, u)`` and
``state_vjp(h, u, v̄, J̄=None)`` (as :class:`~ldmfilter.nn.MLPDynamics` has),
:func:`~.nonlinear.nonlinear_filter` runs every moment rule here:

* forward: the same recursion as the generic loop (the rule's predict, then
  :func:`~.steps.whitened_condition`), without recording a graph;
* backward: the adjoint recursion, step by step from the last (:mod:`.adjoints`).  The
  state's cotangent passes through ``f`` by ``state_vjp``: with the Jacobian's cotangent for the
  first-order rule (``P⁻ = J P Jᵀ + Q``), with the images' cotangents at the sigma points for the
  unscented and cubature rules;
* then the gradient of ``f``'s parameters (and of the controls) in one batched autograd call over
  all steps (and sigma points).

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
    sigma_moments_adjoint,
    sigma_points_adjoint,
)
from .kalman import at_step
from .linalg import symmetrize
from .moments import sigma_rule
from .steps import is_selection, linear_observation_moments, predict_cov, whitened_condition

__all__ = ["supports_adjoint", "adjoint_filter"]


def supports_adjoint(transition_fn) -> bool:
    """Whether :func:`adjoint_filter` can run ``transition_fn`` (a module with both methods)."""
    return (
        isinstance(transition_fn, torch.nn.Module)
        and callable(getattr(transition_fn, "value_and_jacobian", None))
        and callable(getattr(transition_fn, "state_vjp", None))
    )


def adjoint_filter(module, dtype, check, method, obs, Q, H, R, initial_mean, initial_cov, controls=None, **rule_options):
    """Filter ``obs`` with the hand-written reverse pass, for any batch shape.

    Parameters
    ----------
    module : nn.Module
        The transition, with ``value_and_jacobian`` and ``state_vjp``.
    dtype : torch.dtype
        The module's dtype: states are cast to it for each call, the results back to the working
        dtype (that of ``obs``).
    check : callable
        ``check(value, name)``, raising on a wrong width or dtype of the module's output.
    method : {"linearize", "unscented", "cubature"}
    obs : Tensor, shape (*batch, T, L)
        Zero-filled observations in the working dtype.
    Q : Tensor, shape (S, S) or (*batch, T, S, S)
    H : Tensor, shape (L, S) or (*batch, T, L, S)
    R : Tensor, shape (L, L) or (*batch, T, L, L)
    initial_mean : Tensor, shape (S,) or (*batch, S)
    initial_cov : Tensor, shape (S, S) or (*batch, S, S)
    controls : Tensor, shape (*batch, T, U), optional
        In the module's dtype.
    **rule_options
        ``alpha``, ``beta``, ``kappa`` of the unscented rule.

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
    if method != "unscented" and rule_options:
        raise TypeError(f"the {method!r} rule takes no options, got {sorted(rule_options)}")
    selects = is_selection(H)
    predict = _FirstOrder(module, dtype, check) if method == "linearize" else _SigmaPoints(
        module, dtype, check, sigma_rule(method, state_dim, **rule_options)
    )
    outputs = _AdjointFilter.apply(
        predict, selects, obs.reshape((-1,) + obs.shape[-2:]), flat(Q, 2), flat(H, 2), flat(R, 2),
        flat(initial_mean, 1, False), flat(initial_cov, 2, False), flat(controls, 1), *module.parameters(),
    )
    return tuple(x.reshape(batch_shape + x.shape[1:]) for x in outputs)


class _FirstOrder:
    """Predict ``m⁻ = f(m)``, ``P⁻ = J P Jᵀ + Q`` at the filtered mean, and its reverse."""

    def __init__(self, module, dtype, check):
        self.module, self.dtype, self.check = module, dtype, check

    def forward(self, mean, cov, Q_t, inputs):
        """Returns the predicted belief and what the reverse needs: (state in the module's dtype, J)."""
        state = mean.to(self.dtype)
        value, jacobian = self.module.value_and_jacobian(state, inputs)
        self.check(value, "transition_fn")
        self.check(jacobian, "transition_fn's Jacobian")
        jacobian = jacobian.to(mean.dtype)
        return value.to(mean.dtype), predict_cov(cov, jacobian, Q_t), (state, jacobian)

    def hidden_layers(self, records, controls):
        """``module.hidden_layers`` at every step's state at once (time-major rows), if it has them."""
        states = torch.stack([state for state, _ in records])  # (T − 1, N, S)
        return _hidden_layers(self.module, states, None if controls is None else controls[:, 1:].transpose(0, 1))

    def reverse(self, record, cov, inputs, grad_pred_mean, grad_pred_cov, hidden):
        """Cotangents of the filtered belief one step earlier, of ``Q_t``, and those ``f`` gets (v̄, J̄)."""
        state, jacobian = record
        grad_jacobian, grad_cov, grad_Q = predict_cov_adjoint(jacobian, cov, grad_pred_cov)
        grads = (grad_pred_mean.to(self.dtype), grad_jacobian.to(self.dtype))
        grad_mean = self.module.state_vjp(state, inputs, *grads, **_hidden_option(hidden))
        return grad_mean.to(cov.dtype), grad_cov, grad_Q, grads

    def parameter_pass(self, records, inputs):
        """The module's outputs at every step's rows (time-major, with grad): their gradient with
        the reverse's cotangents, stacked, is the parameters' (and the controls')."""
        states = torch.cat([state for state, _ in records])
        value, jacobian = self.module.value_and_jacobian(states, inputs)
        return value, jacobian


class _SigmaPoints:
    """Predict through ``f`` at the sigma points of the filtered belief (a :class:`~.moments.SigmaRule`), and its reverse."""

    def __init__(self, module, dtype, check, rule):
        self.module, self.dtype, self.check, self.rule = module, dtype, check, rule

    def forward(self, mean, cov, Q_t, inputs):
        """Returns the predicted belief and what the reverse needs: (points in the module's dtype, L, images, m⁻)."""
        points, factor, deviations = self.rule.points(mean, cov)
        count, state_dim = points.shape[-2:]
        rows = points.reshape(-1, state_dim).to(self.dtype)
        images = self.module(rows, None if inputs is None else inputs.repeat_interleave(count, 0))
        self.check(images, "transition_fn")
        images = images.to(mean.dtype).reshape(points.shape)
        moments = self.rule.moments(images, deviations)
        return moments.mean, symmetrize(moments.cov + Q_t), (rows, factor, images, moments.mean)  # P⁻ = Cov[f(x)] + Q

    def hidden_layers(self, records, controls):
        """As :meth:`_FirstOrder.hidden_layers`, at every step's sigma points."""
        rows = torch.stack([record[0] for record in records])  # (T − 1, N · n, S)
        count = rows.shape[1] // records[0][1].shape[0]
        inputs = None if controls is None else controls[:, 1:].transpose(0, 1).repeat_interleave(count, 1)
        return _hidden_layers(self.module, rows, inputs, curvatures=False)  # the reverse passes no Jacobian cotangent

    def reverse(self, record, cov, inputs, grad_pred_mean, grad_pred_cov, hidden):
        """As :meth:`_FirstOrder.reverse`; ``f`` gets the images' cotangents (Ȳ)."""
        rows, factor, images, pred_mean = record
        grad_images, grad_Q = sigma_moments_adjoint(self.rule, images, pred_mean, grad_pred_mean, grad_pred_cov)
        grads = (grad_images.reshape(rows.shape).to(self.dtype),)
        count = images.shape[-2]
        grad_points = self.module.state_vjp(
            rows, None if inputs is None else inputs.repeat_interleave(count, 0), *grads, **_hidden_option(hidden)
        )
        grad_mean, grad_cov = sigma_points_adjoint(self.rule, factor, grad_points.to(cov.dtype).reshape(images.shape))
        return grad_mean, grad_cov, grad_Q, grads

    def parameter_pass(self, records, inputs):
        """As :meth:`_FirstOrder.parameter_pass`, at every step's sigma points."""
        points = torch.cat([record[0] for record in records])
        count = points.shape[0] // (len(records) * records[0][1].shape[0])
        return (self.module(points, None if inputs is None else inputs.repeat_interleave(count, 0)),)


def _hidden_layers(module, rows, inputs, **options):
    """``module.hidden_layers`` on (T − 1, M, S) rows (and (T − 1, M, U) inputs) flattened, if it has them."""
    if not callable(getattr(module, "hidden_layers", None)):
        return None
    flat_inputs = None if inputs is None else inputs.reshape(-1, inputs.shape[-1])
    return module.hidden_layers(rows.reshape(-1, rows.shape[-1]), flat_inputs, **options)


def _step_rows(hidden, index: int, count: int):
    """The ``index``-th block of ``count`` rows of ``hidden`` (time-major), or None."""
    return None if hidden is None else hidden.rows(slice(index * count, (index + 1) * count))


def _hidden_option(hidden) -> dict:
    return {} if hidden is None else {"hidden": hidden}


SETTINGS = ("predict", "selects")  # _AdjointFilter's leading arguments, then its tensors:
INPUTS = ("obs", "Q", "H", "R", "initial_mean", "initial_cov", "controls")  # then the module's parameters


def _step_grad(grads: list, like: torch.Tensor | None, needed: bool):
    """Gradient of a parameter from its per-step gradients ``grads[t]`` (N, *core), or None."""
    if not needed:
        return None
    if like.ndim == grads[0].ndim - 1:  # shared across series and steps
        return torch.stack(grads).sum((0, 1))
    return torch.stack(grads, 1)


class _AdjointFilter(torch.autograd.Function):
    """Forward and reverse of the filter over (N, T) series; see the module docstring."""

    @staticmethod
    def forward(ctx, predict, selects, obs, Q, H, R, initial_mean, initial_cov, controls, *params):
        num, steps, obs_dim = obs.shape
        state_dim = initial_mean.shape[-1]
        mean = initial_mean.expand(num, state_dim)
        cov = initial_cov.expand(num, state_dim, state_dim)
        fmeans, fcovs, pmeans, pcovs, innovations, chols, whitened, records = [], [], [], [], [], [], [], []
        for t in range(steps):
            if t:
                mean, cov, record = predict.forward(mean, cov, at_step(Q, t, 2), None if controls is None else controls[:, t])
                records.append(record)
            cross, obs_cov, innovation = linear_observation_moments(
                mean, cov, at_step(H, t, 2), at_step(R, t, 2), obs[:, t], selects
            )
            pmeans.append(mean)
            pcovs.append(cov)
            innovations.append(innovation)
            mean, cov, chol, white = whitened_condition(mean, cov, cross, obs_cov, innovation)
            fmeans.append(mean)
            fcovs.append(cov)
            chols.append(chol)
            whitened.append(white)
        outputs = tuple(torch.stack(x, 1) for x in (fmeans, fcovs, pmeans, pcovs, innovations, chols))
        ctx.predict, ctx.selects, ctx.records = predict, selects, records
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*outputs, torch.stack(whitened, 1), Q, H, R, initial_mean, initial_cov, controls)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_fmean, grad_fcov, grad_pmean, grad_pcov, grad_innovation, grad_chol):
        fmean, fcov, pmean, pcov, _, chol, whitened, Q, H, R, m0, P0, controls = ctx.saved_tensors
        predict, records = ctx.predict, ctx.records
        needs = dict(zip(INPUTS, ctx.needs_input_grad[len(SETTINGS):]))
        num, steps, state_dim = fmean.shape
        adj_mean = fmean.new_zeros(num, state_dim)  # cotangents of the filtered belief at step t
        adj_cov = fcov.new_zeros(num, state_dim, state_dim)  # kept symmetric (the filtered P is symmetrised)
        grad_fcov = None if grad_fcov is None else symmetrize(grad_fcov)
        grads = {"obs": [], "Q": [], "H": [], "R": []}
        function_grads = []  # per step, the cotangents of f's outputs (for the parameter pass)
        hidden = predict.hidden_layers(records, controls) if records else None
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
            inputs = None if controls is None else controls[:, t]
            adj_mean, adj_cov, g_Q, g_function = predict.reverse(
                records[t - 1], fcov[:, t - 1], inputs, g_pmean, g_pcov, _step_rows(hidden, t - 1, records[t - 1][0].shape[0])
            )
            grads["Q"].append(g_Q)
            function_grads.append(g_function)
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
        function_grads.reverse()
        grad_controls, *grad_params = _transition_grads(ctx, controls, function_grads)
        return (*(None for _ in SETTINGS), *out, grad_controls, *grad_params)


def _transition_grads(ctx, controls, function_grads) -> list:
    """Gradients of the controls and of the module's parameters, in one batched pass over all steps."""
    param_needs = ctx.needs_input_grad[len(SETTINGS) + len(INPUTS):]
    params = list(ctx.predict.module.parameters())
    wanted = [p for p, need in zip(params, param_needs) if need]
    want_controls = controls is not None and ctx.needs_input_grad[len(SETTINGS) + INPUTS.index("controls")]
    if not function_grads or not (wanted or want_controls):
        return [None] * (1 + len(params))
    with torch.enable_grad():
        inputs = None
        if controls is not None:  # time-major rows, like the records
            inputs = controls[:, 1:].transpose(0, 1).reshape(-1, controls.shape[-1]).detach().requires_grad_(want_controls)
        outputs = ctx.predict.parameter_pass(ctx.records, inputs)
        cotangents = [torch.cat(parts).reshape(out.shape) for parts, out in zip(zip(*function_grads), outputs)]
        targets = wanted + ([inputs] if want_controls else [])
        found = list(torch.autograd.grad(outputs, targets, cotangents, allow_unused=True))
    grad_controls = None
    if want_controls:
        steps_after_first = found.pop().reshape(controls.shape[1] - 1, controls.shape[0], controls.shape[-1]).transpose(0, 1)
        grad_controls = torch.cat([torch.zeros_like(controls[:, :1]), steps_after_first], 1)
    by_param = iter(found)
    return [grad_controls] + [next(by_param) if need else None for need in param_needs]
