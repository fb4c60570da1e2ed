"""dynamax Kalman filters (sequential ``lgssm_filter`` and the parallel-in-time one) under
``jax.jit`` + ``jax.vmap`` on the CPU, in float64.

Importing this module enables jax's float64 mode (``jax_enable_x64``) and, unless the
environment already sets it, sets ``PJRT_NPROC=1``: XLA's CPU client then gets a one-thread
intra-op pool (the variable is read when the jax backend is created, at the first jax operation,
so it can still be changed after import).  With the default pool (one thread per core, 2 here)
the jitted, vmapped *parallel* filter deadlocked reproducibly on the 2-core benchmark machine
(jax/jaxlib 0.10.2) on the first call after compilation: both pool workers sit in jaxlib's
batched-LAPACK ``ParallelBatchMap`` waiting for sub-tasks that no free worker can run, and the main
thread waits forever in ``block_until_ready``.  A one-thread pool cannot deadlock that way
(cf. PyAutoLabs/PyAutoFit#1530 for the same pool re-entrancy with FFTs); it costs the sequential
filter ~15 % on W1 (measured separately).  ``--xla_cpu_multi_thread_eigen=false`` does not help.

Missing data: dynamax has no NaN or mask support in ``lgssm_filter``.  When the observations
contain NaN rows, :class:`DynamaxFilter` emulates them the same way as the numpy peer: each
series gets time-varying emission parameters, ``H_t`` with the missing rows zeroed and ``R_t``
with the missing rows/columns zeroed and a unit diagonal, and the missing components of ``y_t``
are set to 0.  Each missing component then adds ``log N(0; 0, 1) = −½ log 2π`` to dynamax's
marginal log-likelihood; :meth:`DynamaxFilter.log_likelihood` removes that constant so the total
is comparable to the other implementations (which sum over observed components only).

Numerics note: dynamax's ``psd_solve`` adds ``1e-9 · I`` to the innovation covariance before
the Cholesky solve that gives the gain, so its filtered means differ from the exact recursion by
roughly ``1e-9`` relative.
"""

from __future__ import annotations

import os

import numpy as np

POOL_ENV = "PJRT_NPROC"  # size of XLA's CPU intra-op thread pool, read at backend creation
os.environ.setdefault(POOL_ENV, "1")

try:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from dynamax.linear_gaussian_ssm import lgssm_filter, parallel_lgssm_filter
    from dynamax.linear_gaussian_ssm.inference import make_lgssm_params

    IMPORT_ERROR = None
except ImportError as error:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = error

__all__ = ["IMPORT_ERROR", "DynamaxFilter", "versions", "xla_threads_note"]

LOG_2PI = float(np.log(2.0 * np.pi))


def versions():
    """Installed jax / jaxlib / dynamax versions, or None when they cannot be imported.

    Returns
    -------
    dict or None
    """
    if IMPORT_ERROR is not None:
        return None
    import importlib.metadata as metadata

    return {name: metadata.version(name) for name in ("jax", "jaxlib", "dynamax")}


def xla_threads_note():
    """How XLA is threaded in this process (from ``PJRT_NPROC``)."""
    pool = os.environ.get(POOL_ENV)
    return f"{pool} (XLA pool, {POOL_ENV}={pool})" if pool else f"XLA default ({os.cpu_count()} cores)"


def _masked_emissions(H, R, observed):
    """Per-series, per-step ``H_t`` and ``R_t`` that decouple the missing components.

    Parameters
    ----------
    H : ndarray, shape (L, S)
    R : ndarray, shape (L, L)
    observed : ndarray of bool, shape (B, T, L)

    Returns
    -------
    H_seq : ndarray, shape (B, T, L, S)
    R_seq : ndarray, shape (B, T, L, L)
    """
    obs = observed.astype(H.dtype)
    H_seq = obs[..., :, None] * H
    R_seq = obs[..., :, None] * R * obs[..., None, :]
    diag = np.arange(R.shape[0])
    R_seq[..., diag, diag] += ~observed
    return H_seq, R_seq


class DynamaxFilter:
    """A jitted, vmapped dynamax filter for one workload.

    Parameters
    ----------
    A, Q, H, R : ndarray
        Model matrices, shapes (S, S), (S, S), (L, S), (L, L).
    initial_mean : ndarray, shape (S,)
    initial_cov : ndarray, shape (S, S)
    observations : ndarray, shape (B, T, L)
        NaN rows are missing (emulated, see the module docstring).
    parallel : bool
        Use ``parallel_lgssm_filter`` (associative scan) instead of ``lgssm_filter``.

    Notes
    -----
    Construction moves the data to jax arrays; :meth:`warm_up` compiles.  :meth:`run` is the
    timed call and blocks until the result is ready.
    """

    def __init__(self, A, Q, H, R, initial_mean, initial_cov, observations, parallel=False):
        if IMPORT_ERROR is not None:
            raise RuntimeError(f"jax/dynamax unavailable: {IMPORT_ERROR}")
        observed = ~np.isnan(observations)
        self.num_missing = int((~observed).sum())
        self._shared = jnp.asarray(A), jnp.asarray(Q), jnp.asarray(initial_mean), jnp.asarray(initial_cov)
        self._y = jnp.asarray(np.where(observed, observations, 0.0))
        if self.num_missing:
            H_seq, R_seq = _masked_emissions(H, R, observed)
            self._emissions = (jnp.asarray(H_seq), jnp.asarray(R_seq))
            emission_axes = (0, 0)
        else:
            self._emissions = (jnp.asarray(H), jnp.asarray(R))
            emission_axes = (None, None)
        single = parallel_lgssm_filter if parallel else lgssm_filter

        def one_series(y, H_t, R_t, A_, Q_, m0, P0):
            params = make_lgssm_params(m0, P0, A_, Q_, H_t, R_t)
            post = single(params, y)
            return post.filtered_means, post.filtered_covariances, post.marginal_loglik

        self._fn = jax.jit(jax.vmap(one_series, in_axes=(0, *emission_axes, None, None, None, None)))

    def run(self):
        """Filter every series once.

        Returns
        -------
        tuple of jax arrays
            Filtered means (B, T, S), filtered covariances (B, T, S, S) and per-series marginal
            log-likelihoods (B,), ready (``block_until_ready``).
        """
        out = self._fn(self._y, *self._emissions, *self._shared)
        return jax.block_until_ready(out)

    def warm_up(self):
        """Compile (and run once), so that timing excludes compilation."""
        self.run()

    def log_likelihood(self, result):
        """Total log-likelihood over observed components, comparable across implementations.

        Parameters
        ----------
        result : tuple
            Output of :meth:`run`.

        Returns
        -------
        float
        """
        return float(np.sum(np.asarray(result[2]))) + 0.5 * LOG_2PI * self.num_missing
