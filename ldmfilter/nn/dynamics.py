"""Latent dynamics of the Kalman predictor: the paper's linear model (METHOD.md §2) and its
nonlinear extension with a bounded residual MLP.

Both take optional control inputs ``u_t`` (the input acting on the transition into step ``t``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .encoders import init_residual_mlp_, make_mlp

__all__ = ["LinearDynamics", "MLPDynamics", "HiddenLayers", "LocalizedUnit", "DYNAMICS", "RESIDUAL_ACTIVATIONS", "spectral_radius"]


def spectral_radius(matrix: torch.Tensor) -> torch.Tensor:
    """Largest eigenvalue modulus of a square matrix (no gradient)."""
    with torch.no_grad():
        return torch.linalg.eigvals(matrix).abs().max()


class LinearDynamics(nn.Module):
    """``h_t = A (h_{t−1} − b) + b + B u_t + w_t``, ``w_t ~ N(0, Q)``; ``z_t = D h_t + v_t``.

    ``Q = exp(s) · diag(exp(q))`` with a log-scale ``s`` that the noise model shares (``R =
    exp(s) I`` when R is not input-dependent).  ``D = [I_L 0]`` is fixed: the first ``L`` state
    dims are observed through the encoder, the remaining ``S − L`` are hidden.  The initial
    belief is ``N(0, I)``.

    Initialisation (the paper's): ``A = I + 0.1 · randn``, rescaled to spectral radius 1/1.1;
    ``b = 0``, ``q = 0``, ``s = 0``; the control matrix ``B`` (S, U) starts at zero.

    Parameters
    ----------
    state_dim : int
        ``S``.
    latent_dim : int
        ``L ≤ S``.
    generator : torch.Generator, optional
        Source of randomness for ``A``.
    control_dim : int
        ``U``, the number of control inputs (0: none).
    """

    nonlinear = False

    def __init__(self, state_dim: int, latent_dim: int, generator: torch.Generator | None = None, control_dim: int = 0):
        super().__init__()
        if not 1 <= latent_dim <= state_dim:
            raise ValueError(f"need 1 <= latent_dim <= state_dim, got latent_dim={latent_dim}, state_dim={state_dim}")
        if control_dim < 0:
            raise ValueError(f"control_dim must be >= 0, got {control_dim}")
        self.state_dim, self.latent_dim, self.control_dim = int(state_dim), int(latent_dim), int(control_dim)
        A = torch.eye(state_dim) + 0.1 * torch.randn(state_dim, state_dim, generator=generator)
        A = A / (spectral_radius(A) * 1.1)
        self.transition = nn.Parameter(A)
        self.offset = nn.Parameter(torch.zeros(state_dim))
        self.log_process_noise = nn.Parameter(torch.zeros(state_dim))
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.register_buffer("observation_matrix", torch.eye(latent_dim, state_dim))
        if self.control_dim:
            self.control = nn.Parameter(torch.zeros(state_dim, self.control_dim))

    def check_controls(self, controls: torch.Tensor | None) -> None:
        """Raise unless ``controls`` is None exactly when the model has no inputs, and ends in ``U``."""
        if controls is None and self.control_dim:
            raise ValueError(f"these dynamics take {self.control_dim} control input(s) per step; give controls")
        if controls is not None and controls.shape[-1:] != (self.control_dim,):
            raise ValueError(
                f"controls must end in {self.control_dim} input(s) per step, got shape {tuple(controls.shape)}"
            )

    def transition_matrix(self) -> torch.Tensor:
        """``A``, shape (S, S)."""
        return self.transition

    def transition_offset(self, controls: torch.Tensor | None = None) -> torch.Tensor:
        """``c_t = (I − A) b + B u_t``, so that ``A (h − b) + b + B u_t = A h + c_t``.

        Parameters
        ----------
        controls : Tensor, shape (*batch, T, U), optional
            Required when ``control_dim > 0``.

        Returns
        -------
        Tensor, shape (S,), or (*batch, T, S) with controls
        """
        self.check_controls(controls)
        offset = self.offset - self.transition @ self.offset
        return offset if controls is None else offset + controls @ self.control.mT

    def _linear_part(self, states: torch.Tensor, controls: torch.Tensor | None) -> torch.Tensor:
        out = (states - self.offset) @ self.transition.mT + self.offset
        return out if controls is None else out + controls @ self.control.mT

    def forward(self, states: torch.Tensor, controls: torch.Tensor | None = None) -> torch.Tensor:
        """The transition's mean ``A (h − b) + b + B u`` on rows, as a function for the moment rules.

        Parameters
        ----------
        states : Tensor, shape (N, S)
        controls : Tensor, shape (N, U), optional
            Required when ``control_dim > 0``.

        Returns
        -------
        Tensor, shape (N, S)
        """
        self.check_controls(controls)
        return self._linear_part(states, controls)

    def value_and_jacobian(self, states: torch.Tensor, controls: torch.Tensor | None = None):
        """``f(h, u)`` (N, S) and its Jacobian ``A``, broadcast to (N, S, S)."""
        return self(states, controls), self.transition.expand(states.shape[:1] + self.transition.shape)

    def transition_cov(self) -> torch.Tensor:
        """``Q = exp(s) · diag(exp(q))``, shape (S, S)."""
        return torch.diag(torch.exp(self.log_scale + self.log_process_noise))

    def initial_belief(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(0, I)``: mean (S,) and covariance (S, S)."""
        ref = self.transition
        return ref.new_zeros(self.state_dim), torch.eye(self.state_dim, dtype=ref.dtype, device=ref.device)

    @torch.no_grad()
    def clip_spectral_radius_(self, max_radius: float = 1.02) -> bool:
        """Rescale ``A`` in place to spectral radius ``max_radius`` if it exceeds it.

        Returns
        -------
        bool
            Whether ``A`` was rescaled.

        Raises
        ------
        FloatingPointError
            If ``A`` has NaN or inf entries (training diverged); the eigenvalue routine must not
            see them.
        """
        if not bool(torch.isfinite(self.transition).all()):
            raise FloatingPointError("the transition matrix A has NaN or inf entries: training diverged")
        radius = spectral_radius(self.transition)
        if radius > max_radius:
            self.transition.mul_(max_radius / radius)
            return True
        return False


class LocalizedUnit(nn.Module):
    """``φ(x) = x·exp(−x²/2)``: like tanh near 0 (``φ(0) = 0``, ``φ'(0) = 1``, ``|φ| ≤ e^{−1/2}``), but → 0 as ``|x| → ∞``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.exp(-0.5 * x.square())


def _tanh_unit(pre: torch.Tensor, curvature: bool):
    """``tanh`` at pre-activations ``x``: values ``a``, slopes ``1 − a²`` and curvatures ``−2 a (1 − a²)``."""
    value = torch.tanh(pre)
    slope = 1.0 - value.square()
    return value, slope, (-2.0 * value * slope if curvature else None)


def _localized_unit(pre: torch.Tensor, curvature: bool):
    """:class:`LocalizedUnit` at ``x``: values ``x e``, slopes ``(1 − x²) e``, curvatures ``x (x² − 3) e`` (``e = exp(−x²/2)``)."""
    envelope = torch.exp(-0.5 * pre.square())
    value = pre * envelope
    slope = envelope - pre * value
    return value, slope, (value * (pre.square() - 3.0) if curvature else None)


RESIDUAL_ACTIVATIONS = {"tanh": (nn.Tanh, _tanh_unit), "localized": (LocalizedUnit, _localized_unit)}
"""Hidden units of :class:`MLPDynamics`' residual: (module, ``unit(x, curvature) → (φ, φ', φ'' or None)``)."""


class HiddenLayers(NamedTuple):
    """The hidden layers of :class:`MLPDynamics`' residual at a batch of rows (:meth:`MLPDynamics.hidden_layers`).

    Attributes
    ----------
    weights : list of Tensor
        The hidden layers' weights ``W_0 … W_{K−1}``, shapes (H_k, H_{k−1}); the first without its
        control columns, (H_0, S).
    activations, slopes : list of Tensor, shapes (N, H_k)
        ``a_k = φ(x_k)`` and ``s_k = φ'(x_k)`` at the pre-activations ``x_k = W_k a_{k−1} + c_k``.
    curvatures : list of Tensor, shapes (N, H_k), or None
        ``φ''(x_k)``, which the Jacobian's reverse pass needs; None when not asked for.
    """

    weights: list
    activations: list
    slopes: list
    curvatures: list | None = None

    def rows(self, index) -> "HiddenLayers":
        """The same layers at ``rows[index]`` (a slice or index along the batch axis)."""
        curvatures = None if self.curvatures is None else [c[index] for c in self.curvatures]
        return HiddenLayers(self.weights, [a[index] for a in self.activations], [s[index] for s in self.slopes], curvatures)


class MLPDynamics(LinearDynamics):
    """``h_t = A (h_{t−1} − b) + b + B u_t + g_θ(h_{t−1}, u_t) + w_t``: linear plus a bounded residual.

    ``g_θ`` is an MLP with bounded hidden units on ``[h, u]``; its output layer starts at zero, so
    training starts from the linear model (and with ``g ≡ 0`` every moment rule reproduces the
    linear filter exactly).  Because the hidden units lie in (−1, 1), ``|g_θ(h, u)|_∞ ≤
    ‖W_out‖_∞ + ‖b_out‖_∞`` for every ``h``: the residual is bounded, so with the spectral radius
    of ``A`` clipped below ~1 the mean dynamics cannot diverge, however far a belief strays.

    Bounded is not enough when ``A`` has eigenvalues near 1: far from the data tanh units
    saturate, ``g_θ`` becomes a constant push in each direction, and a push ``‖g‖`` against a
    pull ``(1 − |λ|)‖h‖`` can hold a state at ``‖h‖ ≈ ‖g‖ / (1 − |λ|)``, far outside the data,
    where the filter stays confident (``benchmarks/results/nonlinear.md``, wobbly notes).
    ``activation="localized"`` uses ``φ(x) = x·exp(−x²/2)`` (:class:`LocalizedUnit`) instead:
    the same slope 1 at 0, but every unit fades away from its active band, so far from the
    data ``g_θ`` tends to its output bias and only the linear part acts.

    Parameters
    ----------
    state_dim, latent_dim, generator, control_dim
        As in :class:`LinearDynamics`.
    hidden : tuple of int
        Hidden widths of ``g_θ``.
    activation : {"tanh", "localized"}
        Hidden units of ``g_θ`` (:data:`RESIDUAL_ACTIVATIONS`).
    """

    nonlinear = True

    def __init__(
        self,
        state_dim: int,
        latent_dim: int,
        generator: torch.Generator | None = None,
        control_dim: int = 0,
        hidden: tuple = (64,),
        activation: str = "tanh",
    ):
        super().__init__(state_dim, latent_dim, generator, control_dim)
        if not hidden or not all(int(w) >= 1 for w in hidden):
            raise ValueError(f"hidden must be one or more positive widths, got {hidden!r}")
        if activation not in RESIDUAL_ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(RESIDUAL_ACTIVATIONS)}, got {activation!r}")
        unit_module, self._unit = RESIDUAL_ACTIVATIONS[activation]
        residual = make_mlp(self.state_dim + self.control_dim, tuple(int(w) for w in hidden), self.state_dim, unit_module)
        self.residual = init_residual_mlp_(residual, generator)

    def forward(self, states: torch.Tensor, controls: torch.Tensor | None = None) -> torch.Tensor:
        """The transition ``f(h, u) = A (h − b) + b + B u + g_θ(h, u)`` on rows.

        Parameters
        ----------
        states : Tensor, shape (N, S)
        controls : Tensor, shape (N, U), optional
            Required when ``control_dim > 0``.

        Returns
        -------
        Tensor, shape (N, S)
        """
        self.check_controls(controls)
        inputs = states if controls is None else torch.cat([states, controls], -1)
        return self._linear_part(states, controls) + self.residual(inputs)

    def hidden_layers(self, states: torch.Tensor, controls: torch.Tensor | None = None, curvatures: bool = True) -> "HiddenLayers":
        """The residual's hidden layers on ``[h, u]``, written out (no module-call overhead per layer).

        Parameters
        ----------
        states : Tensor, shape (N, S)
        controls : Tensor, shape (N, U), optional
        curvatures : bool
            Also the units' second derivatives (for :meth:`state_vjp` with a Jacobian cotangent).

        Returns
        -------
        HiddenLayers
        """
        activation = states if controls is None else torch.cat([states, controls], -1)
        weights, activations, slopes, second = [], [], [], []
        *hidden_layers, _ = self.residual
        for layer in hidden_layers:
            if isinstance(layer, nn.Linear):
                activation = nn.functional.linear(activation, layer.weight, layer.bias)
                weights.append(layer.weight[:, : self.state_dim] if self.control_dim and not weights else layer.weight)
            else:
                activation, slope, curvature = self._unit(activation, curvatures)
                activations.append(activation)
                slopes.append(slope)
                second.append(curvature)
        return HiddenLayers(weights, activations, slopes, second if curvatures else None)

    def value_and_jacobian(self, states: torch.Tensor, controls: torch.Tensor | None = None):
        """``f(h, u)`` and its Jacobian ``∂f/∂h = A + ∂g_θ/∂h`` in one pass (chain rule through the layers).

        The first-order moment rule (:func:`~ldmfilter.gaussian.linearize`) uses this instead of
        forward-mode autodiff: about ten times fewer operations per filter step.

        Returns
        -------
        value : Tensor, shape (N, S)
        jacobian : Tensor, shape (N, S, S)
        """
        self.check_controls(controls)
        weights, activations, slopes, _ = self.hidden_layers(states, controls, curvatures=False)
        output = self.residual[-1]
        value = self._linear_part(states, controls) + (activations[-1] @ output.weight.mT + output.bias)
        if len(slopes) == 1:
            # one hidden layer: ∂g/∂h = W_1 diag(s) W_0 is linear in s, J_ij = Σ_h s_h (W_1)_ih (W_0)_hj; as
            # one product with the (S², H) outer products its gradient needs no (N, S, H) intermediates
            outer = (output.weight.unsqueeze(-2) * weights[0].mT).reshape(-1, output.weight.shape[-1])
            jacobian = (slopes[0] @ outer.mT).unflatten(-1, (self.state_dim, self.state_dim))
        else:
            jacobian = output.weight  # reverse accumulation: (S, H) → (N, S, H) → … → (N, S, S)
            for slope, weight in zip(reversed(slopes), reversed(weights)):
                jacobian = (jacobian * slope.unsqueeze(-2)) @ weight
        return value, self.transition + jacobian

    def state_vjp(
        self,
        states: torch.Tensor,
        controls: torch.Tensor | None,
        grad_value: torch.Tensor,
        grad_jacobian: torch.Tensor | None = None,
        hidden: "HiddenLayers | None" = None,
    ):
        """Gradient with respect to ``h`` of ``⟨v̄, f(h, u)⟩ + ⟨J̄, ∂f/∂h⟩`` (the reverse pass of :meth:`value_and_jacobian`).

        The filter's hand-written reverse pass (:mod:`ldmfilter.gaussian.adjoint_filter`) calls this
        at every step instead of recording the Jacobian's graph.  With hidden layers ``a_k =
        φ(x_k)``, ``x_k = W_k a_{k−1} + c_k`` (``a_{−1} = [h, u]``), slopes ``s_k = φ'(x_k)`` and
        ``∂g/∂h = W_K D_{K−1} ⋯ D_0 W_0`` (``D_k = diag(s_k)``), the Jacobian term reaches ``s_k``
        as ``s̄_k = diag(L_kᵀ J̄ R_kᵀ)``, with ``L_k = W_K D_{K−1} ⋯ W_{k+1}`` and ``R_k = W_k
        D_{k−1} ⋯ W_0``, and ``x_k`` as ``s̄_k φ''(x_k)``; from there it flows down like the
        value's gradient.

        Parameters
        ----------
        states : Tensor, shape (N, S)
        controls : Tensor, shape (N, U), optional
        grad_value : Tensor, shape (N, S)
            ``v̄``, the cotangent of ``f(h, u)``.
        grad_jacobian : Tensor, shape (N, S, S), optional
            ``J̄``, the cotangent of ``∂f/∂h``; None for the value's gradient alone (the
            sigma-point rules' reverse).
        hidden : HiddenLayers, optional
            :meth:`hidden_layers` at these rows, when already computed (the filter's reverse pass
            computes them for all steps at once); with curvatures when ``grad_jacobian`` is given.

        Returns
        -------
        Tensor, shape (N, S)
        """
        self.check_controls(controls)
        if hidden is None:
            hidden = self.hidden_layers(states, controls, curvatures=grad_jacobian is not None)
        weights, _, slopes, curvatures = hidden
        full_first = self.residual[0].weight  # with its control columns: ā reaches [h, u]
        left = self.residual[-1].weight  # L_k: (S, H_k), then (N, S, H_k)
        rights = [weights[0]]  # R_k (H_k, S), then (N, H_k, S)
        if grad_jacobian is not None:
            for slope, weight in zip(slopes[:-1], weights[1:]):
                rights.append(weight @ (slope.unsqueeze(-1) * rights[-1]))
        grad_activation = grad_value @ left  # ā of the last hidden layer, from the value
        for k in reversed(range(len(slopes))):
            grad_pre = grad_activation * slopes[k]  # da = φ'(x) dx
            if grad_jacobian is not None:
                # s̄_k = diag(L_kᵀ J̄ R_kᵀ), from (J̄ᵀ L_k)ᵀ: one matrix product over the whole batch
                grad_slope = ((grad_jacobian.mT @ left) * rights[k].mT).sum(-2)
                grad_pre = grad_pre.addcmul(grad_slope, curvatures[k])  # ds = φ''(x) dx
                if k:
                    left = (left * slopes[k].unsqueeze(-2)) @ weights[k]
            grad_activation = grad_pre @ (weights[k] if k else full_first)
        return torch.addmm(grad_activation[..., : self.state_dim], grad_value, self.transition)


DYNAMICS = {"linear": LinearDynamics, "mlp": MLPDynamics}
