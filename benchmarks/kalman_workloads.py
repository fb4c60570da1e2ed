"""Workloads of the Kalman speed benchmark: settings, a random linear-Gaussian model, data.

W1: 64 series × 500 steps; W2: W1 with 10 % of the observation vectors missing; W3: one series
× 100,000 steps.  S = 10 states, L = 5 observations, float64, time-invariant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
# --------------------------------------------------------------------------------------------
# Settings, model, data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Sizes and repeat counts of one benchmark run.

    Attributes
    ----------
    series, steps : int
        Batch size and length of W1/W2.
    long_steps : int
        Length of the single W3 series.
    slow_series : int
        Series timed for the per-series peers (filterpy, pykalman) on W1/W2.
    slow_long_steps : int
        Leading steps of W3 timed for the per-series peers.
    repeats, long_repeats : int
        Timed repetitions (best is reported) on W1/W2 and on W3.
    seed : int
    """

    series: int = 64
    steps: int = 500
    long_steps: int = 100_000
    slow_series: int = 4
    slow_long_steps: int = 10_000
    repeats: int = 5
    long_repeats: int = 3
    seed: int = 0


FULL = Settings()
QUICK = Settings(series=16, steps=200, long_steps=10_000, slow_series=2, slow_long_steps=1_000,
                 repeats=2, long_repeats=1)


@dataclass(frozen=True)
class LinearModel:
    """Time-invariant linear-Gaussian state-space model (numpy float64 arrays).

    Attributes
    ----------
    A, Q : ndarray, shape (S, S)
    H : ndarray, shape (L, S)
    R : ndarray, shape (L, L)
    initial_mean : ndarray, shape (S,)
    initial_cov : ndarray, shape (S, S)
    """

    A: np.ndarray
    Q: np.ndarray
    H: np.ndarray
    R: np.ndarray
    initial_mean: np.ndarray
    initial_cov: np.ndarray

    def arrays(self):
        """``(A, Q, H, R, initial_mean, initial_cov)`` as numpy arrays."""
        return self.A, self.Q, self.H, self.R, self.initial_mean, self.initial_cov

    def tensors(self):
        """The same, as float64 torch tensors."""
        return tuple(torch.from_numpy(x) for x in self.arrays())


def random_spd(rng, dim, jitter):
    """Random symmetric positive-definite matrix ``M Mᵀ / dim + jitter · I``."""
    M = rng.standard_normal((dim, dim))
    return M @ M.T / dim + jitter * np.eye(dim)


def random_model(rng, state_dim=10, obs_dim=5, spectral_radius=0.95):
    """Random stable model: ``A`` scaled to the given spectral radius, random SPD ``Q`` and ``R``.

    Parameters
    ----------
    rng : numpy.random.Generator
    state_dim, obs_dim : int
    spectral_radius : float

    Returns
    -------
    LinearModel
    """
    A = rng.standard_normal((state_dim, state_dim))
    A *= spectral_radius / np.abs(np.linalg.eigvals(A)).max()
    return LinearModel(
        A=A,
        Q=random_spd(rng, state_dim, 0.1) * 0.1,
        H=rng.standard_normal((obs_dim, state_dim)) / np.sqrt(state_dim),
        R=random_spd(rng, obs_dim, 0.2) * 0.5,
        initial_mean=np.zeros(state_dim),
        initial_cov=np.eye(state_dim),
    )


def simulate(model, series, steps, rng):
    """Draw observations from the model.

    Parameters
    ----------
    model : LinearModel
    series, steps : int
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, shape (series, steps, L)
    """
    S, L = model.A.shape[0], model.H.shape[0]
    state_noise = rng.standard_normal((steps, series, S)) @ np.linalg.cholesky(model.Q).T
    obs_noise = rng.standard_normal((series, steps, L)) @ np.linalg.cholesky(model.R).T
    states = np.empty((series, steps, S))
    x = model.initial_mean + rng.standard_normal((series, S)) @ np.linalg.cholesky(model.initial_cov).T
    for t in range(steps):
        if t > 0:
            x = x @ model.A.T + state_noise[t]
        states[:, t] = x
    return states @ model.H.T + obs_noise


def drop_rows(observations, fraction, rng):
    """Copy with a random ``fraction`` of observation vectors (whole steps, per series) set to NaN."""
    out = observations.copy()
    out[rng.random(out.shape[:2]) < fraction] = np.nan
    return out


@dataclass
class Workload:
    """One benchmark workload.

    Attributes
    ----------
    name, description : str
    model : LinearModel
    observations : ndarray, shape (B, T, L)
    slow_series, slow_steps : int
        Sub-problem timed for the per-series peers (filterpy, pykalman).
    repeats : int
    """

    name: str
    description: str
    model: LinearModel
    observations: np.ndarray
    slow_series: int
    slow_steps: int
    repeats: int

    @property
    def series_steps(self):
        """Number of series × number of steps of the whole workload."""
        return self.observations.shape[0] * self.observations.shape[1]

    def slow_subset(self):
        """Observations of the sub-problem timed for the per-series peers."""
        return self.observations[: self.slow_series, : self.slow_steps]


def build_workloads(settings, names):
    """Model and data of the requested workloads (one model for all, fixed seed).

    Parameters
    ----------
    settings : Settings
    names : list of str
        Subset of ``["W1", "W2", "W3"]``.

    Returns
    -------
    list of Workload
    """
    rng = np.random.default_rng(settings.seed)
    model = random_model(rng)
    batch = simulate(model, settings.series, settings.steps, rng)
    B, T = settings.series, settings.steps
    all_workloads = {
        "W1": lambda: Workload("W1", f"{B} series × {T} steps, no missing", model, batch,
                               settings.slow_series, T, settings.repeats),
        "W2": lambda: Workload("W2", f"{B} series × {T} steps, 10% of steps missing (per series)", model,
                               drop_rows(batch, 0.1, np.random.default_rng(settings.seed + 1)),
                               settings.slow_series, T, settings.repeats),
        "W3": lambda: Workload("W3", f"1 series × {settings.long_steps:,} steps, no missing", model,
                               simulate(model, 1, settings.long_steps,
                                        np.random.default_rng(settings.seed + 2)),
                               1, settings.slow_long_steps, settings.long_repeats),
    }
    return [all_workloads[name]() for name in names]
