"""Brute-force reference for linear-Gaussian state-space models (numpy, float64). Not a test file.

The whole trajectory is one big Gaussian: with ``ε = (x_0 − μ_0, w_1, …, w_{T−1})`` the states are
``x = μ + G ε`` (``G[t, s] = A_t A_{t−1} ⋯ A_{s+1}`` for ``s ≤ t``) and the observations are
``z = H x + v``.  Every quantity a Kalman filter or smoother returns is a marginal or a
conditional of this joint, computed here by dense Gaussian conditioning on the observed entries
(any pattern, down to single components).  This is slow (``O((T L)^3)``) but has no recursion in it,
so it checks the recursion independently.

Model, one series, time-varying parameters given with an explicit time axis::

    x_0 ~ N(m0, P0)
    x_t = A[t] x_{t−1} + c[t] + w_t,   w_t ~ N(0, Q[t])      (t ≥ 1; A[0], Q[0], c[0] unused)
    z_t = H[t] x_t + v_t,              v_t ~ N(0, R[t])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "LinearModel",
    "Marginals",
    "brute_force",
    "random_model",
    "random_spd",
    "simulate",
    "forecast_reference",
    "random_transition",
    "series_models",
    "brute_force_batch",
    "FILTER_ARGS",
    "torch_kwargs",
]

LOG_2PI = np.log(2.0 * np.pi)


@dataclass
class LinearModel:
    """One series' model with every parameter carrying a time axis of length T (numpy float64).

    A, Q : (T, S, S); H : (T, L, S); R : (T, L, L); c : (T, S); m0 : (S,); P0 : (S, S).
    """

    A: np.ndarray
    Q: np.ndarray
    H: np.ndarray
    R: np.ndarray
    c: np.ndarray
    m0: np.ndarray
    P0: np.ndarray

    @property
    def num_steps(self) -> int:
        return self.A.shape[0]

    @property
    def state_dim(self) -> int:
        return self.m0.shape[0]

    @property
    def obs_dim(self) -> int:
        return self.H.shape[1]

    @classmethod
    def from_params(cls, T, A, Q, H, R, m0, P0, c=None) -> "LinearModel":
        """Accept static ``(S, S)`` / ``(S,)`` or time-varying ``(T, S, S)`` / ``(T, S)`` arrays."""

        def tv(x, core):
            x = np.asarray(x, dtype=np.float64)
            return np.broadcast_to(x, (T,) + x.shape[-core:]).copy() if x.ndim == core else x.copy()

        S = np.asarray(m0).shape[-1]
        c = np.zeros(S) if c is None else c
        return cls(tv(A, 2), tv(Q, 2), tv(H, 2), tv(R, 2), tv(c, 1), np.asarray(m0, float).copy(),
                   np.asarray(P0, float).copy())

    def joint(self):
        """Mean and covariance of the stacked vector ``(x_0, …, x_{T−1}, z_0, …, z_{T−1})``."""
        T, S, L = self.num_steps, self.state_dim, self.obs_dim
        mu = np.zeros((T, S))
        mu[0] = self.m0
        for t in range(1, T):
            mu[t] = self.A[t] @ mu[t - 1] + self.c[t]
        G = np.zeros((T * S, T * S))
        for s in range(T):
            block = np.eye(S)
            for t in range(s, T):
                if t > s:
                    block = self.A[t] @ block
                G[t * S:(t + 1) * S, s * S:(s + 1) * S] = block
        D = np.zeros((T * S, T * S))
        D[:S, :S] = self.P0
        for t in range(1, T):
            D[t * S:(t + 1) * S, t * S:(t + 1) * S] = self.Q[t]
        Sx = G @ D @ G.T
        Hb = np.zeros((T * L, T * S))
        Rb = np.zeros((T * L, T * L))
        for t in range(T):
            Hb[t * L:(t + 1) * L, t * S:(t + 1) * S] = self.H[t]
            Rb[t * L:(t + 1) * L, t * L:(t + 1) * L] = self.R[t]
        mean = np.concatenate([mu.ravel(), Hb @ mu.ravel()])
        Sxz = Sx @ Hb.T
        cov = np.block([[Sx, Sxz], [Sxz.T, Hb @ Sx @ Hb.T + Rb]])
        return mean, 0.5 * (cov + cov.T)


@dataclass
class Marginals:
    """Brute-force answers for one series.

    filtered_mean (T, S), filtered_cov (T, S, S): ``p(x_t | observed z_{0:t})``;
    predicted_mean, predicted_cov: ``p(x_t | observed z_{0:t−1})``;
    smoothed_mean, smoothed_cov: ``p(x_t | all observed)``;
    lag_one_cov (T−1, S, S): ``Cov(x_{t+1}, x_t | all observed)``;
    log_likelihood (T,): ``log p(observed z_t | observed z_{0:t−1})`` (prefix differences);
    total_log_likelihood: ``log p(all observed entries)``.
    """

    filtered_mean: np.ndarray
    filtered_cov: np.ndarray
    predicted_mean: np.ndarray
    predicted_cov: np.ndarray
    smoothed_mean: np.ndarray
    smoothed_cov: np.ndarray
    lag_one_cov: np.ndarray
    log_likelihood: np.ndarray
    total_log_likelihood: float


def _condition(mean, cov, obs_idx, values, query_idx):
    """Mean and covariance of entries ``query_idx`` given entries ``obs_idx`` equal ``values``,
    and the log-density of those values (0 when nothing is observed)."""
    mq, Cqq = mean[query_idx], cov[np.ix_(query_idx, query_idx)]
    if len(obs_idx) == 0:
        return mq, Cqq, 0.0
    mo, Coo, Cqo = mean[obs_idx], cov[np.ix_(obs_idx, obs_idx)], cov[np.ix_(query_idx, obs_idx)]
    chol = np.linalg.cholesky(Coo)
    resid = values - mo
    white = np.linalg.solve(chol, resid)
    solved_q = np.linalg.solve(chol, Cqo.T)  # C⁻¹ Coq
    cond_mean = mq + solved_q.T @ white
    cond_cov = Cqq - solved_q.T @ solved_q
    logdens = -0.5 * (white @ white + 2.0 * np.log(np.diag(chol)).sum() + len(obs_idx) * LOG_2PI)
    return cond_mean, 0.5 * (cond_cov + cond_cov.T), float(logdens)


def brute_force(model: LinearModel, observations: np.ndarray, observed: np.ndarray | None = None) -> Marginals:
    """Exact marginals of one series by dense conditioning of the joint Gaussian.

    Parameters
    ----------
    model : LinearModel
    observations : (T, L) array; NaN entries are missing.
    observed : (T, L) or (T,) bool array, optional; True = observed (combined with the NaN pattern).
    """
    T, S, L = model.num_steps, model.state_dim, model.obs_dim
    observations = np.asarray(observations, dtype=np.float64)
    seen = ~np.isnan(observations)
    if observed is not None:
        observed = np.asarray(observed, dtype=bool)
        if observed.ndim == 1:
            observed = np.repeat(observed[:, None], L, axis=1)
        seen = seen & observed
    mean, cov = model.joint()
    z_offset = T * S

    def obs_indices(upto):  # observed z entries of steps 0..upto-1, as joint indices
        idx = [z_offset + t * L + j for t in range(upto) for j in range(L) if seen[t, j]]
        return np.array(idx, dtype=int)

    def values(idx):
        flat = observations.ravel()
        return flat[idx - z_offset]

    def state_idx(t):
        return np.arange(t * S, (t + 1) * S)

    fm, fc, pm, pc = (np.zeros((T, S)), np.zeros((T, S, S)), np.zeros((T, S)), np.zeros((T, S, S)))
    prefix = np.zeros(T + 1)
    for t in range(T):
        idx = obs_indices(t)
        pm[t], pc[t], prefix[t] = _condition(mean, cov, idx, values(idx), state_idx(t))
        idx = obs_indices(t + 1)
        fm[t], fc[t], prefix[t + 1] = _condition(mean, cov, idx, values(idx), state_idx(t))

    idx = obs_indices(T)
    all_states = np.arange(T * S)
    sm_flat, sc_flat, total = _condition(mean, cov, idx, values(idx), all_states)
    sm = sm_flat.reshape(T, S)
    sc = np.stack([sc_flat[t * S:(t + 1) * S, t * S:(t + 1) * S] for t in range(T)])
    lag = np.stack([sc_flat[(t + 1) * S:(t + 2) * S, t * S:(t + 1) * S] for t in range(T - 1)]) if T > 1 \
        else np.zeros((0, S, S))
    return Marginals(fm, fc, pm, pc, sm, sc, lag, np.diff(prefix), total)


def forecast_reference(model: LinearModel, observations, horizon: int, A_future, Q_future, c_future=None,
                       observed=None):
    """Marginals of ``x_{T−1+k}``, ``k = 1..horizon``, given all observed data (brute force).

    ``A_future``/``Q_future``/``c_future`` are static ``(S, S)``/``(S,)`` or ``(horizon, …)`` with
    entry ``k`` used for forecast step ``k`` (the transition into step ``T + k``).
    Returns ``(mean (horizon, S), cov (horizon, S, S))``.
    """
    T, S, L = model.num_steps, model.state_dim, model.obs_dim
    ext = LinearModel.from_params(horizon, A_future, Q_future, np.zeros((L, S)), np.eye(L), model.m0,
                                  model.P0, c_future)
    extended = LinearModel(
        np.concatenate([model.A, ext.A]), np.concatenate([model.Q, ext.Q]),
        np.concatenate([model.H, ext.H]), np.concatenate([model.R, ext.R]),
        np.concatenate([model.c, ext.c]), model.m0, model.P0,
    )
    obs = np.concatenate([np.asarray(observations, float), np.full((horizon, L), np.nan)])
    if observed is not None:
        observed = np.asarray(observed, dtype=bool)
        pad = np.zeros((horizon,) + observed.shape[1:], dtype=bool)
        observed = np.concatenate([observed, pad])
    ref = brute_force(extended, obs, observed)
    return ref.smoothed_mean[T:], ref.smoothed_cov[T:]


# --------------------------------------------------------------------------------------------
# random models and data


def random_spd(rng: np.random.Generator, n: int, scale: float = 1.0, floor: float = 0.2, batch=()) -> np.ndarray:
    """A well-conditioned SPD matrix ``scale · (M Mᵀ / n + floor I)``."""
    M = rng.standard_normal(tuple(batch) + (n, n))
    return scale * (M @ np.swapaxes(M, -1, -2) / n + floor * np.eye(n))


def random_transition(rng: np.random.Generator, n: int, radius: float = 0.9, batch=()) -> np.ndarray:
    """A random matrix rescaled to spectral radius ``radius`` (stable, not too contractive)."""
    M = rng.standard_normal(tuple(batch) + (n, n))
    rho = np.abs(np.linalg.eigvals(M)).max(-1)
    return radius * M / np.asarray(rho)[..., None, None]


def random_model(rng: np.random.Generator, state_dim: int, obs_dim: int, steps: int | None = None,
                 time_varying: bool = False, offset: str | None = None, batch=()) -> dict:
    """Random well-conditioned model parameters as a dict of numpy arrays.

    Keys: ``A, Q, H, R, m0, P0`` and ``c`` (None unless ``offset`` is ``"static"`` or
    ``"time_varying"``).  With ``time_varying`` every matrix is ``(*batch, T, …)`` (``steps`` needed);
    otherwise matrices are static ``(S, S)`` etc.  ``batch`` also gives ``m0``/``P0`` batch axes
    when ``time_varying``; static models have unbatched ``m0``/``P0``.
    """
    S, L = state_dim, obs_dim
    lead = (tuple(batch) + (steps,)) if time_varying else ()
    params = dict(
        A=random_transition(rng, S, batch=lead),
        Q=random_spd(rng, S, 0.5, batch=lead),
        H=rng.standard_normal(lead + (L, S)),
        R=random_spd(rng, L, 0.5, batch=lead),
        m0=rng.standard_normal((tuple(batch) if time_varying else ()) + (S,)),
        P0=random_spd(rng, S, 1.0, batch=(tuple(batch) if time_varying else ())),
        c=None,
    )
    if offset == "static":
        params["c"] = rng.standard_normal(S)
    elif offset == "time_varying":
        params["c"] = rng.standard_normal(tuple(batch) + (steps, S))
    return params


def simulate(rng: np.random.Generator, params: dict, steps: int, batch=()) -> np.ndarray:
    """Simulate observations ``(*batch, T, L)`` from ``params`` (as returned by :func:`random_model`,
    parameters broadcast over ``batch``)."""
    models = series_models(params, steps, batch)
    out = np.zeros(tuple(batch) + (steps, np.asarray(params["H"]).shape[-2]))
    for index in np.ndindex(*batch):
        m = models[index]
        x = rng.multivariate_normal(m.m0, m.P0)
        for t in range(steps):
            if t > 0:
                x = m.A[t] @ x + m.c[t] + rng.multivariate_normal(np.zeros(m.state_dim), m.Q[t])
            out[index + (t,)] = m.H[t] @ x + rng.multivariate_normal(np.zeros(m.obs_dim), m.R[t])
    return out


def series_models(params: dict, steps: int, batch=()) -> dict:
    """Per-series :class:`LinearModel` for every index of ``batch``, broadcasting the parameters.

    A matrix parameter with more than two dims has a time axis at -3 (a vector offset with more than
    one dim has it at -2), and its leading axes broadcast against ``batch`` — the same rule as
    :func:`ldmfilter.gaussian.kalman_filter`.
    """
    batch = tuple(batch)

    def per_series(x, core, index, has_time=True):
        if x is None:
            return None
        x = np.asarray(x, dtype=np.float64)
        extra = x.ndim - core - (1 if has_time else 0)
        if extra <= 0:
            return x
        return np.broadcast_to(x, batch + x.shape[extra:])[index]

    out = {}
    for index in np.ndindex(*batch):
        A = per_series(params["A"], 2, index)
        Q = per_series(params["Q"], 2, index)
        H = per_series(params["H"], 2, index)
        R = per_series(params["R"], 2, index)
        c = per_series(params.get("c"), 1, index)
        m0 = per_series(params["m0"], 1, index, has_time=False)
        P0 = per_series(params["P0"], 2, index, has_time=False)
        out[index] = LinearModel.from_params(steps, A, Q, H, R, m0, P0, c)
    return out


def brute_force_batch(params: dict, observations: np.ndarray, observed: np.ndarray | None = None) -> dict:
    """:func:`brute_force` for every series of ``observations (*batch, T, L)``; returns a dict of
    arrays stacked to ``(*batch, …)`` with the :class:`Marginals` field names."""
    observations = np.asarray(observations, dtype=np.float64)
    batch, steps = observations.shape[:-2], observations.shape[-2]
    models = series_models(params, steps, batch)
    if observed is not None:  # (*batch, T) or (*batch, T, L), leading axes broadcast
        observed = np.asarray(observed, dtype=bool)
        per_step = observed.ndim == len(batch) + 1 and observed.shape[-1] == steps
        observed = np.broadcast_to(observed, batch + ((steps,) if per_step else observations.shape[-2:]))
    results = {}
    for index in np.ndindex(*batch):
        mask = None if observed is None else observed[index]
        results[index] = brute_force(models[index], observations[index], mask)
    fields = Marginals.__dataclass_fields__.keys()
    stacked = {}
    for name in fields:
        values = [np.asarray(getattr(results[i], name)) for i in np.ndindex(*batch)]
        stacked[name] = np.stack(values).reshape(batch + values[0].shape)
    return stacked


# --------------------------------------------------------------------------------------------
# torch glue (imported lazily so that the reference itself stays numpy-only)

FILTER_ARGS = {"A": "transition_matrix", "Q": "transition_cov", "H": "observation_matrix",
               "R": "observation_cov", "m0": "initial_mean", "P0": "initial_cov", "c": "transition_offset"}


def torch_kwargs(params: dict, dtype=None) -> dict:
    """Keyword arguments for ``kalman_filter`` from a :func:`random_model` dict (float64 default)."""
    import torch

    dtype = torch.float64 if dtype is None else dtype
    return {FILTER_ARGS[k]: (None if v is None else torch.as_tensor(np.asarray(v), dtype=dtype))
            for k, v in params.items()}
