"""How well can anything recover the noisy-circle position from the frames? Bayes bounds on the probe R².

The noisy-circle path (METHOD.md §5) lives on the unit circle, so the state is one angle: each
step rotates by ``ω = 2π·dt/T_p`` and adds ``N(0, 0.05·I)`` before renormalising.  A frame is the
blob at that angle plus pixel noise of a per-frame variance (zero for 26% of the frames).  On a
grid of angles the two Bayes estimates are exact up to the grid; between them, what the paper's
model class makes of ideal single-frame information:

* the single-frame bound ``E[p_t | frame t]``: prior (the angles of 20,000 reference paths,
  pooled over time) times the frame's Gaussian pixel likelihood;
* an ideal encoder in the LDM model class: a linear Kalman filter (the true
  rotation, ``Q = 0.05·I``) that observes the single-frame posterior mean with its variance as
  an isotropic ``R_t`` (S = L = 2 and an input-dependent ``R_t``, as in the paper's recipe);
* the causal bound ``E[p_t | frames ≤ t]``: a grid filter. The prediction convolves the belief
  with the step's exact angle density, the projected normal
  ``f(φ) = e^{−1/(2σ²)}/(2π) · [1 + u Φ(u)/ϕ(u)]``, ``u = cos(φ − ω)/σ``. The update multiplies
  by the frame's likelihood.

All three know each frame's noise variance (an oracle), so they bound models that must infer it.
A frame with variance 0 is treated as variance 1e-6, which pins the angle to the nearest grid point.
Scored like ``reproduce_paper.py``: a linear probe fitted on 800 training sequences, R² on the
8 test sequences of seed ``10_000 + s``, and on 200 more test sequences for a steadier figure.
Writes ``results/noisy_circle_bounds.md``.

    python benchmarks/noisy_circle_bounds.py [--seeds 0 1 2] [--grid 1440] [--quick] [--no-write]
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
from scipy.special import ndtr

from ldmfilter import metrics
from ldmfilter.gaussian import kalman_filter
from ldmfilter.simulate import make_dotmotion
from ldmfilter.simulate.motions import noisy_circle
from ldmfilter.simulate.render import render_blobs

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers
from bench_common import machine, publish, seed_table  # noqa: E402

OMEGA = 2.0 * math.pi * 0.1 / 2.0  # dt 0.1, T_p 2
STEP_VAR = 0.05
CLEAN_VARIANCE = 1e-6  # stands in for a noise-free frame's zero variance


def angle_grid(size: int) -> np.ndarray:
    """``size`` equally spaced angles ``2πk/size``; shape (size,)."""
    return 2.0 * math.pi * np.arange(size) / size


def step_kernel(size: int, omega: float = OMEGA, step_var: float = STEP_VAR) -> np.ndarray:
    """Probability that one step moves the angle by ``2πk/size``.

    Returns
    -------
    ndarray, shape (size,)
        The projected-normal density of ``angle(R_ω p + ε)`` relative to ``angle(p)``,
        ``ε ~ N(0, step_var·I)``, ``|p| = 1``, at the grid offsets, normalised to sum 1.
    """
    sd = math.sqrt(step_var)
    u = np.cos(angle_grid(size) - omega) / sd
    normal_pdf = np.exp(-0.5 * u**2) / math.sqrt(2.0 * math.pi)
    density = math.exp(-0.5 / step_var) / (2.0 * math.pi) * (1.0 + u * ndtr(u) / normal_pdf)
    return density / density.sum()


def frame_log_likelihood(frames: np.ndarray, variances: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Gaussian pixel log-likelihood of each frame at each grid angle, up to a per-frame constant.

    Parameters
    ----------
    frames : ndarray, shape (M, P)
    variances : ndarray, shape (M,)
        Pixel-noise variance of each frame (0 is replaced by ``CLEAN_VARIANCE``).
    templates : ndarray, shape (G, P)
        The noise-free frame at each grid angle.

    Returns
    -------
    ndarray, shape (M, G)
    """
    frames = frames.astype(np.float64)
    distance = (frames**2).sum(1)[:, None] - 2.0 * frames @ templates.T + (templates**2).sum(1)[None]
    return -0.5 * distance / np.maximum(variances, CLEAN_VARIANCE)[:, None]


def _normalised(log_weight: np.ndarray) -> np.ndarray:
    weight = np.exp(log_weight - log_weight.max(-1, keepdims=True))
    return weight / weight.sum(-1, keepdims=True)


def _mean_position(weight: np.ndarray, grid: np.ndarray) -> np.ndarray:
    return np.stack([weight @ np.cos(grid), weight @ np.sin(grid)], -1)


def single_frame_posterior(frames, variances, grid, prior) -> tuple[np.ndarray, np.ndarray]:
    """Mean and mean per-axis variance of ``p_t | frame t`` on the grid.

    Parameters
    ----------
    frames : ndarray, shape (N, T, P)
    variances : ndarray, shape (N, T)
    grid : ndarray, shape (G,)
    prior : ndarray, shape (G,)
        Probabilities of the grid angles (pooled over time).

    Returns
    -------
    mean : ndarray, shape (N, T, 2)
        ``E[p_t | frame t]``.
    variance : ndarray, shape (N, T)
        Half the trace of the posterior covariance.
    """
    n, T, _ = frames.shape
    templates = render_blobs(np.stack([np.cos(grid), np.sin(grid)], -1)).reshape(len(grid), -1)
    mean, variance = np.empty((n, T, 2)), np.empty((n, T))
    for t in range(T):
        log_posterior = frame_log_likelihood(frames[:, t], variances[:, t], templates) + np.log(np.maximum(prior, 1e-300))
        weight = _normalised(log_posterior)
        mean[:, t] = _mean_position(weight, grid)
        variance[:, t] = 0.5 * (1.0 - (mean[:, t] ** 2).sum(-1))  # E|p|² = 1 on the circle
    return mean, variance


def kalman_on_single_frames(mean: np.ndarray, variance: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Filtered means of a linear Kalman filter that observes the single-frame posterior.

    The model an LDM filter with S = L = 2 and an input-dependent ``R_t`` could learn with an
    ideal encoder: ``h_t = R_ω h_{t−1} + N(0, 0.05·I)``, ``z_t = h_t + N(0, (variance_t + floor)·I)``
    with ``z_t`` the single-frame mean, from the known start ``(1, 0)``.

    Parameters
    ----------
    mean : ndarray, shape (N, T, 2)
    variance : ndarray, shape (N, T)
    floor : float, default 1e-3

    Returns
    -------
    ndarray, shape (N, T, 2)
    """
    eye = torch.eye(2, dtype=torch.float64)
    rotation = torch.tensor([[math.cos(OMEGA), -math.sin(OMEGA)], [math.sin(OMEGA), math.cos(OMEGA)]], dtype=torch.float64)
    observation_cov = torch.as_tensor(variance + floor)[..., None, None] * eye
    result = kalman_filter(torch.as_tensor(mean), rotation, STEP_VAR * eye, eye, observation_cov,
                           torch.tensor([1.0, 0.0], dtype=torch.float64), 1e-6 * eye)
    return result.filtered_mean.numpy()


def causal_posterior_mean(frames, variances, grid) -> np.ndarray:
    """``E[p_t | frames ≤ t]`` by a grid filter from the known start ``p_0 = (1, 0)``.

    Parameters
    ----------
    frames : ndarray, shape (N, T, P)
    variances : ndarray, shape (N, T)
    grid : ndarray, shape (G,)

    Returns
    -------
    ndarray, shape (N, T, 2)
    """
    n, T, _ = frames.shape
    templates = render_blobs(np.stack([np.cos(grid), np.sin(grid)], -1)).reshape(len(grid), -1)
    kernel_spectrum = np.fft.rfft(step_kernel(len(grid)))
    belief = np.zeros((n, len(grid)))
    belief[:, 0] = 1.0
    estimate = np.empty((n, T, 2))
    estimate[:, 0] = (1.0, 0.0)
    for t in range(1, T):
        predicted = np.maximum(np.fft.irfft(np.fft.rfft(belief, axis=-1) * kernel_spectrum, n=len(grid), axis=-1), 0.0)
        log_posterior = np.log(np.maximum(predicted, 1e-300)) + frame_log_likelihood(frames[:, t], variances[:, t], templates)
        belief = _normalised(log_posterior)
        estimate[:, t] = _mean_position(belief, grid)
    return estimate


def pooled_angle_prior(grid: np.ndarray, n_paths: int, rng) -> np.ndarray:
    """Histogram (probabilities) of the grid-nearest angles of simulated paths, pooled over time."""
    paths = noisy_circle(n_paths, rng=rng)
    angles = np.mod(np.arctan2(paths[..., 1], paths[..., 0]), 2.0 * math.pi)
    index = np.rint(angles / (2.0 * math.pi) * len(grid)).astype(int) % len(grid)
    counts = np.bincount(index.ravel(), minlength=len(grid)) + 1.0  # one pseudo-count keeps every angle possible
    return counts / counts.sum()


def seed_row(seed: int, grid: np.ndarray, prior: np.ndarray, n_train: int, n_test: int, n_extra: int) -> dict:
    """Bounds and the raw-frame regression for one seed (probe on ``n_train``, R² on the test sets)."""
    started = time.perf_counter()
    train = make_dotmotion("noisy_circle", n_train, seed=seed)
    tests = {"test": make_dotmotion("noisy_circle", n_test, seed=10_000 + seed),
             "extra": make_dotmotion("noisy_circle", n_extra, seed=20_000 + seed)}

    def estimates(data) -> dict:
        frames = data.frames.reshape(data.frames.shape[:2] + (-1,))
        mean, variance = single_frame_posterior(frames, data.noise_variance, grid, prior)
        return {"raw": frames, "single": mean, "kalman": kalman_on_single_frames(mean, variance),
                "causal": causal_posterior_mean(frames, data.noise_variance, grid)}

    on_train = estimates(train)
    row = {}
    for test_name, test in tests.items():
        on_test = estimates(test)
        for key in on_train:
            row[f"{key}_{test_name}"] = metrics.linear_probe_r2(on_train[key], train.target, on_test[key], test.target)
    row["seconds"] = time.perf_counter() - started
    return row


COLUMNS = (
    ("raw_test", "linear regression on raw frames"),
    ("single_test", "**single-frame bound** E[p_t \\| frame t]"),
    ("kalman_test", "linear Kalman filter on the single-frame posterior"),
    ("causal_test", "**causal bound** E[p_t \\| frames ≤ t]"),
    ("raw_extra", "raw frames, 200 more test sequences"),
    ("single_extra", "single-frame bound, 200 more"),
    ("kalman_extra", "Kalman on single frames, 200 more"),
    ("causal_extra", "causal bound, 200 more"),
)


def render(rows: dict, args) -> str:
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        "# Noisy circle: Bayes bounds on the probe R²",
        "",
        f"`python benchmarks/noisy_circle_bounds.py{' --quick' if args.quick else ''}`, run of {stamp}. Machine: {machine()}.",
        "",
        f"`make_dotmotion('noisy_circle')`: probe fitted on {args.n_train} training sequences of seed s, R² on "
        f"the {args.n_test} test sequences of seed 10,000 + s (as in `reproduce_paper.py`) and on {args.n_extra} "
        f"more of seed 20,000 + s. Grid of {args.grid} angles; the single-frame prior pools {args.reference} "
        "reference paths. All three estimates know each frame's noise variance. See the script's docstring for the method.",
        "",
        *seed_table(rows, COLUMNS),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--grid", type=int, default=1440, help="angles on the circle (default 1440: 0.25°)")
    parser.add_argument("--quick", action="store_true", help="small sizes, writes results/noisy_circle_bounds_quick.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    args.n_train, args.n_test, args.n_extra, args.reference = (800, 8, 200, 20_000) if not args.quick else (40, 4, 10, 500)
    if args.quick:
        args.grid = min(args.grid, 360)
    grid = angle_grid(args.grid)
    prior = pooled_angle_prior(grid, args.reference, np.random.default_rng(12345))
    rows = {seed: seed_row(seed, grid, prior, args.n_train, args.n_test, args.n_extra) for seed in args.seeds}
    return publish(render(rows, args), "noisy_circle_bounds", args.quick, not args.no_write)


if __name__ == "__main__":
    main()
