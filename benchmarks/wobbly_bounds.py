"""How well can anything recover the wobbly position from the frames? Bayes bounds on the probe R².

The wobbly frames (METHOD.md §5) carry no pixel noise, but the renderer clamps the blob centre to
the image: an axis is seen exactly while ``−3 < x < 2.4`` (pixel coordinate ``(x + 3)·10/6`` in
``(0, 9)``) and only as "at or beyond this edge" outside.  The path's step noise has variance
0.1, so many sequences wander out.  Every frame is a function of the clamped position, so:

* no single-frame encoder (the paper's RNN variant is probed from its single-frame latent ``z``)
  can beat the posterior mean ``E[p_t | clamp(p_t)]``, estimated here from 20,000 reference paths
  (exact on seen axes; on a clamped axis the mean over the reference points with the same sides
  and, when the other axis is seen, the same 1/60 bin of it);
* no causal filter (the Kalman models are probed from the filtered ``h_t``) can beat
  ``E[p_t | clamp(p_1..t)]``, computed by a particle filter with the true dynamics and the optimal
  proposal: a seen axis is set to its value and weighted by the step density, a clamped one is
  drawn from the step distribution truncated beyond the edge and weighted by its mass there.

Three more columns say what such a filter needs.  The same particle filter with the wobble left out
of its dynamics (the rotation alone, ``a = 0``) shows what the nonlinear part of the dynamics is
worth.  A linear Kalman filter with that rotation, ``Q = 0.1·I`` and an ideal encoder (it observes
the clamped position itself) shows what a Gaussian filter gets from a fixed ``R`` (the variance
that fits the training sequences best, of a grid) and from a per-frame, per-axis ``R_t`` that
trusts the seen axes and ignores the clamped ones.

Each bound is scored like the models in ``reproduce_paper.py`` and ``nonlinear.py``: a linear
probe fitted on 800 training sequences, R² on the 100 test sequences of seed ``10_000 + s``.
Writes ``results/wobbly_bounds.md``.

    python benchmarks/wobbly_bounds.py [--seeds 0 1 2] [--particles 2000] [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from scipy.special import ndtr, ndtri

from ldmfilter import metrics
from ldmfilter.gaussian import kalman_filter
from ldmfilter.simulate import make_dotmotion
from ldmfilter.simulate.motions import rk4_step, wobbly, wobbly_velocity

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers
from bench_common import machine, publish, seed_table  # noqa: E402

SEEN_LOW, SEEN_HIGH = -3.0, 2.4  # an axis is rendered unclamped strictly between these
STEP_SD = math.sqrt(0.1)
DT = 0.3
BELOW, SEEN, ABOVE = 0, 1, 2


def axis_sides(positions: np.ndarray) -> np.ndarray:
    """Per axis, BELOW / SEEN / ABOVE the rendered window; shape of ``positions``, int."""
    return np.where(positions <= SEEN_LOW, BELOW, np.where(positions >= SEEN_HIGH, ABOVE, SEEN))


def single_frame_posterior_mean(reference: np.ndarray, positions: np.ndarray, bins: int = 60) -> np.ndarray:
    """``E[p | clamp(p)]`` from reference paths.

    Parameters
    ----------
    reference : ndarray, shape (..., 2)
        Positions drawn from the same process, pooled over time.
    positions : ndarray, shape (..., 2)

    Returns
    -------
    ndarray, shape of ``positions``
        Seen axes unchanged; a clamped axis replaced by the reference mean over the points with
        the same sides and (if the other axis is seen) the same bin of the other axis.
    """
    ref, pos = reference.reshape(-1, 2), positions.reshape(-1, 2)
    ref_sides, pos_sides = axis_sides(ref), axis_sides(pos)
    width = (SEEN_HIGH - SEEN_LOW) / bins
    ref_bins = np.clip(((ref - SEEN_LOW) / width).astype(int), 0, bins - 1)
    pos_bins = np.clip(((pos - SEEN_LOW) / width).astype(int), 0, bins - 1)
    estimate = pos.copy()
    for axis in (0, 1):
        other = 1 - axis

        def cell(sides, bin_index):
            return (sides[:, axis] * 3 + sides[:, other]) * bins + np.where(sides[:, other] == SEEN, bin_index[:, other], 0)

        clamped_ref = ref_sides[:, axis] != SEEN
        cells, inverse = np.unique(cell(ref_sides, ref_bins)[clamped_ref], return_inverse=True)
        cell_means = np.bincount(inverse, ref[clamped_ref, axis]) / np.bincount(inverse)
        clamped = np.nonzero(pos_sides[:, axis] != SEEN)[0]
        wanted = cell(pos_sides, pos_bins)[clamped]
        found = np.searchsorted(cells, wanted).clip(0, len(cells) - 1)
        if not np.array_equal(cells[found], wanted):
            raise ValueError("a clamped test point has no reference point in its cell: use more reference paths")
        estimate[clamped, axis] = cell_means[found]
    return estimate.reshape(positions.shape)


def causal_posterior_mean(positions: np.ndarray, n_particles: int, rng: np.random.Generator,
                          velocity=wobbly_velocity) -> np.ndarray:
    """``E[p_t | clamp(p_1..t)]`` by a particle filter with the true wobbly dynamics.

    Parameters
    ----------
    positions : ndarray, shape (N, T, 2)
        True paths; only their clamped values are used after ``t = 0`` (the start, on the unit
        circle, is always seen).
    n_particles : int
    rng : numpy.random.Generator
    velocity : callable
        The filter's vector field (default the true one; :func:`rotation_velocity` leaves the
        wobble out).

    Returns
    -------
    ndarray, shape (N, T, 2)
    """
    n, T, _ = positions.shape
    sides = axis_sides(positions)
    estimate = np.empty_like(positions)
    estimate[:, 0] = positions[:, 0]
    particles = np.repeat(positions[:, :1], n_particles, axis=1)
    row_offset = np.arange(n)[:, None]
    for t in range(1, T):
        predicted = rk4_step(velocity, particles, DT)
        log_weight = np.zeros((n, n_particles))
        for axis in (0, 1):
            side, mean = sides[:, t, axis][:, None], predicted[..., axis]
            seen_value = positions[:, t, axis][:, None]
            mass_below = ndtr((SEEN_LOW - mean) / STEP_SD)
            mass_above = ndtr((mean - SEEN_HIGH) / STEP_SD)
            u = rng.uniform(size=mean.shape)
            below = np.minimum(mean + STEP_SD * ndtri(np.clip(u * mass_below, 1e-300, 1.0)), SEEN_LOW)
            above = np.maximum(mean - STEP_SD * ndtri(np.clip(u * mass_above, 1e-300, 1.0)), SEEN_HIGH)
            particles_axis = np.where(side == SEEN, seen_value, np.where(side == BELOW, below, above))
            predicted[..., axis] = particles_axis
            log_weight += np.where(side == SEEN, -0.5 * ((seen_value - mean) / STEP_SD) ** 2,
                                   np.log(np.maximum(np.where(side == BELOW, mass_below, mass_above), 1e-300)))
        weight = np.exp(log_weight - log_weight.max(1, keepdims=True))
        weight /= weight.sum(1, keepdims=True)
        estimate[:, t] = np.einsum("np,npd->nd", weight, predicted)
        cumulative = np.cumsum(weight, 1)
        cumulative[:, -1] = 1.0
        draws = (rng.uniform(size=(n, 1)) + np.arange(n_particles)) / n_particles  # systematic resampling
        flat_index = np.searchsorted((cumulative + row_offset).ravel(), (draws + row_offset).ravel())
        index = flat_index.reshape(n, n_particles) - row_offset * n_particles
        particles = np.take_along_axis(predicted, index[..., None], 1)
    return estimate


def rotation_velocity(positions: np.ndarray) -> np.ndarray:
    """The wobbly vector field without its wobble (``a = 0``): the unit-rate rotation alone, (..., 2)."""
    return wobbly_velocity(positions, a=0.0)


def ideal_encoder_kalman_mean(positions: np.ndarray, seen_variance: float, clamped_variance: float) -> np.ndarray:
    """Filtered means of a linear Kalman filter that observes the clamped position (an ideal encoder).

    The package's :func:`~ldmfilter.gaussian.kalman_filter` with the rotation's RK4 step as the
    transition (:func:`rotation_velocity`, a linear map) and the path's state noise ``0.1·I``;
    each axis of each frame is observed with variance ``seen_variance`` while the axis is seen and
    ``clamped_variance`` while it is clamped (``inf``: not observed).  It starts at the true start
    (always seen), like :func:`causal_posterior_mean`.

    Parameters
    ----------
    positions : ndarray, shape (N, T, 2)
    seen_variance, clamped_variance : float
        Observation variances; equal values give a fixed ``R``.

    Returns
    -------
    ndarray, shape (N, T, 2)
    """
    transition = rk4_step(rotation_velocity, np.eye(2), DT).T  # the step is linear: its image of the basis
    variance = np.where(axis_sides(positions) == SEEN, seen_variance, clamped_variance)[:, 1:]
    observed = np.isfinite(variance)
    as_tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    A, Q = as_tensor(transition), as_tensor(STEP_SD**2 * np.eye(2))
    result = kalman_filter(
        as_tensor(np.clip(positions[:, 1:], SEEN_LOW, SEEN_HIGH)), A, Q, as_tensor(np.eye(2)),
        torch.diag_embed(as_tensor(np.where(observed, variance, 0.0))),
        as_tensor(positions[:, 0] @ transition.T), Q, mask=torch.as_tensor(observed),  # step 1's prior, from the start
    )
    return np.concatenate([positions[:, :1], result.filtered_mean.numpy()], 1)


FIXED_R_GRID = (1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0)  # fixed observation variances tried by the ideal-encoder filter
IGNORED = math.inf  # the observation variance of a clamped axis when the filter ignores it


def best_fixed_r(y_train: np.ndarray, y_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ideal-encoder filter's means with the fixed ``R`` of :data:`FIXED_R_GRID` whose probe fits the
    training sequences best (in-sample R²; the test sequences play no part in the choice).

    Returns
    -------
    f_train, f_test : ndarray, shapes of ``y_train`` and ``y_test``
    """
    def fit_r2(variance):
        f_train = ideal_encoder_kalman_mean(y_train, variance, variance)
        return metrics.linear_probe_r2(f_train, y_train, f_train, y_train)

    variance = max(FIXED_R_GRID, key=fit_r2)
    return ideal_encoder_kalman_mean(y_train, variance, variance), ideal_encoder_kalman_mean(y_test, variance, variance)


def seed_row(seed: int, reference: np.ndarray, n_train: int, n_test: int, n_particles: int) -> dict:
    """The bounds and baselines for one seed's benchmark data (probe on ``n_train``, R² on ``n_test``)."""
    train = make_dotmotion("wobbly", n_train, seed=seed)
    test = make_dotmotion("wobbly", n_test, seed=10_000 + seed)
    rng = np.random.default_rng(seed)
    y_train, y_test = train.target, test.target

    def probe(f_train, f_test):
        return metrics.linear_probe_r2(f_train, y_train, f_test, y_test)

    flat = lambda d: d.frames.reshape(d.frames.shape[:2] + (-1,))  # noqa: E731
    started = time.perf_counter()
    row = {
        "raw": probe(flat(train), flat(test)),
        "clamped": probe(np.clip(y_train, SEEN_LOW, SEEN_HIGH), np.clip(y_test, SEEN_LOW, SEEN_HIGH)),
        "single": probe(single_frame_posterior_mean(reference, y_train), single_frame_posterior_mean(reference, y_test)),
        "causal": probe(causal_posterior_mean(y_train, n_particles, rng), causal_posterior_mean(y_test, n_particles, rng)),
        "rotation": probe(causal_posterior_mean(y_train, n_particles, rng, rotation_velocity),
                          causal_posterior_mean(y_test, n_particles, rng, rotation_velocity)),
        "kalman_fixed": probe(*best_fixed_r(y_train, y_test)),
        "kalman_per_axis": probe(ideal_encoder_kalman_mean(y_train, 0.0, IGNORED), ideal_encoder_kalman_mean(y_test, 0.0, IGNORED)),
        "outside": float((axis_sides(y_test) != SEEN).any(-1).mean()),
    }
    row["seconds"] = time.perf_counter() - started
    return row


COLUMNS = (
    ("outside", "test frames with a clamped axis"),
    ("raw", "linear regression on raw frames"),
    ("clamped", "probe on the clamped position"),
    ("single", "**single-frame bound** E[p_t \\| frame t]"),
    ("causal", "**causal bound** E[p_t \\| frames ≤ t]"),
    ("rotation", "causal, the wobble left out of the filter's dynamics"),
    ("kalman_fixed", "linear Kalman filter, ideal encoder, fixed R"),
    ("kalman_per_axis", "linear Kalman filter, ideal encoder, clamped axes ignored"),
)


def render(rows: dict, args) -> str:
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        "# Wobbly: Bayes bounds on the probe R²",
        "",
        f"`python benchmarks/wobbly_bounds.py{' --quick' if args.quick else ''}`, run of {stamp}. Machine: {machine()}.",
        "",
        f"The benchmarks' data (`make_dotmotion('wobbly')`): probe fitted on {args.n_train} training "
        f"sequences of seed s, R² on the {args.n_test} test sequences of seed 10,000 + s (as in "
        f"`reproduce_paper.py` and `nonlinear.py`). Reference paths for the single-frame bound: "
        f"{args.reference} sequences; particles: {args.particles}. See the script's docstring for the method.",
        "",
        *seed_table(rows, COLUMNS),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--particles", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="small sizes, writes results/wobbly_bounds_quick.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    args.n_train, args.n_test, args.reference = (800, 100, 20_000) if not args.quick else (50, 20, 2_000)
    if args.quick:
        args.particles = min(args.particles, 200)
    reference = wobbly(args.reference, rng=np.random.default_rng(12345))
    rows = {seed: seed_row(seed, reference, args.n_train, args.n_test, args.particles) for seed in args.seeds}
    return publish(render(rows, args), "wobbly_bounds", args.quick, not args.no_write)


if __name__ == "__main__":
    main()
