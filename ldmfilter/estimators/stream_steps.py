"""The lean per-update path of :class:`~ldmfilter.estimators.stream.FilterStream`.

A live stream filters one time step per call, so the fixed cost of each operation dominates:
torch eager spends ~3–10 µs dispatching an operation on a 10 × 10 matrix, a Kalman step is ~25
operations, and numpy with direct LAPACK calls spends ~1 µs.  This module therefore holds

* :class:`StreamModel`, a snapshot of a fitted latent Kalman filter taken once per stream: the
  transition ``A``, ``Q``, the affine offset ``c(u) = c_0 + B u``, ``H = [I 0]``, a constant
  ``R``, the prior, all as float64 numpy arrays, and the dynamics as a float64 copy of the
  module (for MLP dynamics); its :meth:`StreamModel.encode` runs an MLP encoder in numpy (any
  other encoder, and an input-dependent noise head, in torch under ``inference_mode``);
* :func:`predict_cov`, :func:`update_cov_shared` and :func:`correct_shared`, the Kalman
  equations of :mod:`ldmfilter.gaussian.steps` for one covariance shared by every series, in
  numpy float64
  (the same formulas in the same order, Joseph form; tests check them against the engine).

Beliefs with one covariance per series go through the engine's own torch functions (the cost
of an operation is then spread over the series), and so do the encoder and the means of many
series at once, because numpy's BLAS would run them on several threads (see
``BLAS_THREADED_GEMM``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.linalg import lapack
from torch import nn

from ..gaussian.linalg import cholesky as engine_cholesky
from ..nn.encoders import MLPEncoder
from ..nn.normalization import Standardizer

__all__ = [
    "StreamModel",
    "CpuSettings",
    "numpy_mlp",
    "single_threaded",
    "lean",
    "predict_cov",
    "update_cov_shared",
    "correct_shared",
]

NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}

# OpenBLAS (numpy's BLAS) runs a matrix product or a triangular solve on several threads from
# these sizes on: multiply-adds of a matrix-matrix product and elements of a matrix-vector one
# (GEMM_MULTITHREAD_THRESHOLD = 4), and elements of the right-hand sides of a solve (measured
# with OpenBLAS 0.3.31: threaded between 1,000 and 1,500).  On a busy machine a threaded call
# waits for descheduled threads, for milliseconds (a 5 × 1000 solve: 24 ms instead of 36 µs),
# and numpy offers no way to cap them.  Larger problems therefore go through torch, which runs
# on the model's ``num_threads``.
BLAS_THREADED_GEMM = 65536 * 4
BLAS_THREADED_GEMV = 2304 * 4
BLAS_THREADED_SOLVE = 1000


def single_threaded(rows: int, inner: int, cols: int) -> bool:
    """Whether numpy's BLAS multiplies a (rows, inner) by an (inner, cols) matrix on one thread."""
    return inner * cols < BLAS_THREADED_GEMV if rows == 1 else rows * inner * cols < BLAS_THREADED_GEMM


def lean(n_series: int, state_dim: int, latent_dim: int) -> bool:
    """Whether the numpy kernels of this module stay single-threaded for ``n_series`` series.

    Their largest products are (n, S) × (S, S) and (S, S) × (S, S); their solves have ``L × S``
    and ``L × n`` right-hand sides.
    """
    S, L = state_dim, latent_dim
    return single_threaded(max(n_series, S), S, S) and L * max(n_series, S) < BLAS_THREADED_SOLVE


class CpuSettings:
    """The model's torch thread count and flushed denormals for one call, as ``LDMFilter.filter`` runs.

    Extra intra-op threads make the small batched operations of a stream many times slower on a
    busy machine; switching the count around a call costs well under a microsecond.
    """

    __slots__ = ("threads", "previous")

    def __init__(self, threads: int | None):
        self.threads, self.previous = threads, None

    def __enter__(self):
        self.previous = torch.get_num_threads()
        if self.threads is not None and self.threads != self.previous:
            torch.set_num_threads(self.threads)
        torch.set_flush_denormal(True)

    def __exit__(self, *error):
        if torch.get_num_threads() != self.previous:
            torch.set_num_threads(self.previous)
        torch.set_flush_denormal(False)


def _relu(h: np.ndarray) -> np.ndarray:
    return np.maximum(h, 0.0, out=h)


def _tanh(h: np.ndarray) -> np.ndarray:
    return np.tanh(h, out=h)


_ACTIVATIONS = {nn.ReLU: _relu, nn.Tanh: _tanh}


def _leaves(module: nn.Module):
    """The modules of nested ``nn.Sequential`` containers, in order."""
    if isinstance(module, nn.Sequential):
        for child in module:
            yield from _leaves(child)
    else:
        yield module


def numpy_mlp(module: nn.Module, dtype) -> tuple[list | None, list]:
    """An ``nn.Sequential`` of ``Linear``/``ReLU``/``Tanh`` layers as numpy steps (None for other layers).

    Parameters
    ----------
    module : nn.Module
        Nested ``nn.Sequential`` containers; a leading ``Flatten(1)`` is allowed (the input is
        flattened to rows anyway).
    dtype : numpy dtype
        Of the copied weights (the model's dtype).

    Returns
    -------
    steps : list of callables ``(N, in) → (N, out)``, or None when ``module`` holds any other layer
    widths : list of (in, out) of the linear layers (empty with None)
    """
    steps: list[Callable] = []
    widths: list[tuple[int, int]] = []
    for position, layer in enumerate(_leaves(module)):
        if isinstance(layer, nn.Linear):
            weight = layer.weight.detach().cpu().numpy().astype(dtype).T.copy()
            bias = None if layer.bias is None else layer.bias.detach().cpu().numpy().astype(dtype).copy()
            steps.append(_affine(weight, bias))
            widths.append(weight.shape)
        elif type(layer) in _ACTIVATIONS:
            steps.append(_ACTIVATIONS[type(layer)])
        elif isinstance(layer, nn.Flatten) and position == 0 and layer.start_dim == 1 and layer.end_dim == -1:
            continue
        elif isinstance(layer, nn.Identity):
            continue
        else:
            return None, []
    return steps, widths


def _affine(weight: np.ndarray, bias: np.ndarray | None) -> Callable:
    if bias is None:
        return lambda h: h @ weight
    return lambda h: np.add(h @ weight, bias)


@dataclass
class StreamModel:
    """Float64 snapshot of a fitted :class:`~ldmfilter.nn.LatentKalmanFilter` for streaming.

    Attributes
    ----------
    obs_shape : tuple of int
    state_dim, latent_dim, control_dim : int
    transition_matrix : ndarray, shape (S, S)
        ``A`` (linear part; the MLP dynamics add their residual).
    transition_cov : ndarray, shape (S, S)
        ``Q``.
    offset : ndarray, shape (S,)
        ``c_0``, the transition offset without inputs.
    control_matrix : ndarray, shape (S, U), or None
        ``B``, with ``c(u) = c_0 + B u`` (read off ``transition_offset``, which is affine in ``u``).
    observation_matrix : ndarray, shape (L, S)
        ``H = [I 0]``.
    observation_cov : ndarray, shape (L, L), or None
        ``R`` when it does not depend on the input (None: input-dependent, from :meth:`encode`).
    initial_mean : ndarray, shape (S,)
    initial_cov : ndarray, shape (S, S)
    dynamics : nn.Module or None
        Float64 copy of nonlinear dynamics (None for linear ones).
    moments : str
        Moment rule of nonlinear dynamics.
    dtype : numpy dtype
        The model's dtype, in which observations are encoded.

    The network itself is kept (not copied) for encoders that run in torch, the noise head and
    the weights' digest; a refit builds new networks, so this snapshot keeps the old ones.
    """

    obs_shape: tuple
    state_dim: int
    latent_dim: int
    control_dim: int
    transition_matrix: np.ndarray
    transition_cov: np.ndarray
    offset: np.ndarray
    control_matrix: np.ndarray | None
    observation_matrix: np.ndarray
    observation_cov: np.ndarray | None
    initial_mean: np.ndarray
    initial_cov: np.ndarray
    dynamics: nn.Module | None
    moments: str
    dtype: type
    _net: nn.Module
    _mean: np.ndarray | None
    _scale: np.ndarray | None
    _layers: list | None
    _widths: list

    @classmethod
    def of(cls, net: nn.Module, obs_shape: tuple) -> "StreamModel":
        """Snapshot ``net`` (a fitted ``LatentKalmanFilter``) for observations of shape ``obs_shape``."""
        dyn = net.dynamics
        dtype = NUMPY_DTYPES[dyn.transition.dtype]
        to_numpy = lambda t: t.detach().cpu().to(torch.float64).numpy().copy()  # noqa: E731
        with torch.no_grad():
            dyn64 = copy.deepcopy(dyn).cpu().to(torch.float64)
            U = dyn64.control_dim
            if U:  # c(u) is affine: c_0 at u = 0, the columns of B at the unit vectors
                basis = torch.cat([torch.zeros(1, U, dtype=torch.float64), torch.eye(U, dtype=torch.float64)])
                offsets = dyn64.transition_offset(basis.unsqueeze(0))[0]
                offset, control = offsets[0], (offsets[1:] - offsets[0]).mT
            else:
                offset, control = dyn64.transition_offset(), None
            m0, P0 = dyn64.initial_belief()
            noise_cov = None
            if not getattr(net.noise, "input_dependent", False):
                dummy = torch.zeros((1,) + tuple(obs_shape), dtype=dyn.transition.dtype)
                noise_cov = to_numpy(net.noise(dummy, dyn.log_scale))
            normalizer = net.normalizer
            mean = scale = None
            if isinstance(normalizer, Standardizer):
                mean, scale = normalizer.mean.detach().cpu().numpy().copy(), normalizer.scale.detach().cpu().numpy().copy()
            elif not isinstance(normalizer, nn.Identity):
                normalizer = None
            layers, widths = None, []
            if type(net.encoder) is MLPEncoder and normalizer is not None:
                layers, widths = numpy_mlp(net.encoder.body, dtype)
            return cls(
                obs_shape=tuple(obs_shape),
                state_dim=dyn64.state_dim,
                latent_dim=dyn64.latent_dim,
                control_dim=U,
                transition_matrix=to_numpy(dyn64.transition_matrix()),
                transition_cov=to_numpy(dyn64.transition_cov()),
                offset=to_numpy(offset),
                control_matrix=None if control is None else to_numpy(control),
                observation_matrix=to_numpy(dyn64.observation_matrix),
                observation_cov=noise_cov,
                initial_mean=to_numpy(m0),
                initial_cov=to_numpy(P0),
                dynamics=dyn64.eval() if dyn64.nonlinear else None,
                moments=net.moments,
                dtype=dtype,
                _net=net,
                _mean=mean,
                _scale=scale,
                _layers=layers,
                _widths=widths,
            )

    def numpy_encoder(self, rows: int = 1) -> bool:
        """Whether :meth:`encode` runs the encoder on ``rows`` observations in numpy rather than torch.

        An MLP encoder runs in numpy while each of its layers stays below the size at which
        numpy's BLAS would use several threads.
        """
        if self._layers is None:
            return False
        inner, cols = max(self._widths, key=lambda shape: shape[0] * shape[1])
        return single_threaded(rows, inner, cols)

    def transition_offset(self, controls: np.ndarray | None) -> np.ndarray:
        """``c(u) = c_0 + B u``: shape (S,) without controls, else (*lead, S) for ``controls`` (*lead, U)."""
        if controls is None:
            return self.offset
        return self.offset + controls @ self.control_matrix.T

    def encode(self, x: np.ndarray, complete: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Latents and, for input-dependent noise, ``R`` of observations with NaN where missing.

        Standardised as in ``prepare_input`` (missing values become zero, the training mean);
        a fully missing frame gets a latent too, which the update ignores.

        Parameters
        ----------
        x : ndarray, shape (N, *obs_shape), of the model's dtype
            Finite or NaN.
        complete : bool
            True when ``x`` holds no NaN (skips filling them).

        Returns
        -------
        z : ndarray, shape (N, L), float64
        R : ndarray, shape (N, L, L), float64, or None
            None when ``R`` is constant (``observation_cov``).
        """
        if not self.numpy_encoder(x.shape[0]):
            with torch.inference_mode():
                prepared = self._net.prepare_input(torch.from_numpy(x))
                z = self._net.encoder(prepared).to(torch.float64).numpy()
                return z, None if self.observation_cov is not None else self._noise(prepared)
        prepared = x if self._mean is None else (x - self._mean) / self._scale
        if not complete:
            prepared = np.where(np.isnan(prepared), prepared.dtype.type(0), prepared)  # missing: the training mean
        h = prepared.reshape(x.shape[0], -1)
        for step in self._layers:
            h = step(h)
        R = None if self.observation_cov is not None else self._noise(torch.from_numpy(prepared))
        return h.astype(np.float64, copy=False), R

    def _noise(self, prepared: torch.Tensor) -> np.ndarray:
        """Input-dependent ``R`` (N, L, L) of standardised observations, by the model's noise head."""
        with torch.inference_mode():
            R = self._net.noise(prepared, self._net.dynamics.log_scale)
        return R.to(torch.float64).numpy()


def predict_cov(cov: np.ndarray, transition_matrix: np.ndarray, transition_cov: np.ndarray) -> np.ndarray:
    """``P⁻ = A P Aᵀ + Q``, symmetrised (:func:`ldmfilter.gaussian.steps.predict_cov` in numpy).

    Parameters
    ----------
    cov : ndarray, shape (S, S)
    transition_matrix, transition_cov : ndarray, shape (S, S)

    Returns
    -------
    ndarray, shape (S, S)
    """
    A = transition_matrix
    pred = transition_cov + (A @ cov) @ A.T  # P⁻ = A P Aᵀ + Q
    return (pred + pred.T) * 0.5


def _cholesky(matrix: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor by LAPACK; the engine's jitter policy (or its error) when that fails."""
    factor, info = lapack.dpotrf(matrix, lower=1, clean=1)
    if info == 0:
        return factor
    return engine_cholesky(torch.from_numpy(matrix), "innovation covariance H P⁻ Hᵀ + R").numpy()


def update_cov_shared(pred_cov: np.ndarray, observation_matrix: np.ndarray, observation_cov: np.ndarray):
    """Covariance half of the Kalman update in Joseph form, for one covariance in numpy.

    :func:`ldmfilter.gaussian.steps.update_covariance`: the same formulas in the same order, in
    float64; the innovation covariance is factorised by LAPACK's ``dpotrf`` (the engine's jitter
    policy applies when that fails).

    Parameters
    ----------
    pred_cov : ndarray, shape (S, S)
        ``P⁻``.
    observation_matrix : ndarray, shape (L, S)
        ``H``.
    observation_cov : ndarray, shape (L, L)
        ``R``.

    Returns
    -------
    cov : ndarray, shape (S, S)
        ``(I − K H) P⁻ (I − K H)ᵀ + K R Kᵀ``, symmetrised.
    gain : ndarray, shape (S, L)
        ``K``.
    chol : ndarray, shape (L, L)
        Lower Cholesky factor of ``Σ_e = H P⁻ Hᵀ + R``.
    logdet : float
        ``log |Σ_e|``.
    """
    H, R, P = observation_matrix, observation_cov, pred_cov
    HP = H @ P
    chol = _cholesky(R + HP @ H.T)  # Σ_e = H P⁻ Hᵀ + R
    solved, _ = lapack.dpotrs(chol, HP, lower=1)
    gain = solved.T  # K = P⁻ Hᵀ Σ_e⁻¹
    residual = np.eye(P.shape[0]) - gain @ H  # I − K H
    cov = (gain @ R) @ gain.T + (residual @ P) @ residual.T  # (I−KH) P⁻ (I−KH)ᵀ + K R Kᵀ
    return (cov + cov.T) * 0.5, gain, chol, 2.0 * float(np.log(np.diagonal(chol)).sum())


def correct_shared(innovation: np.ndarray, gain: np.ndarray, chol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean half of the Kalman update for series sharing one gain, and their Mahalanobis terms.

    Parameters
    ----------
    innovation : ndarray, shape (N, L)
        ``e = z − H m⁻`` of each series.
    gain : ndarray, shape (S, L)
    chol : ndarray, shape (L, L)
        Lower Cholesky factor of ``Σ_e``.

    Returns
    -------
    correction : ndarray, shape (N, S)
        ``K e``, to add to each predicted mean.
    mahalanobis : ndarray, shape (N,)
        ``eᵀ Σ_e⁻¹ e``.
    """
    solved, _ = lapack.dpotrs(chol, innovation.T, lower=1)  # Σ_e⁻¹ eᵀ
    return innovation @ gain.T, (solved.T * innovation).sum(1)
