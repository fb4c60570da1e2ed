"""The built-in demo: filter and forecast a video whose single frames are too noisy to read.

A blob traces a figure-8 in 10×10 frames with pixel noise of variance 0.3 (METHOD.md §5's
figure-8 made hard). ``LDMFilter`` is trained on the raw frames without labels. A linear
read-out from its filtered state to the true position is fitted on training sequences and
scored on held-out ones, with closed-form 90% intervals. It is compared with two baselines:
a linear regression on single raw frames, and a classical Kalman filter on PCA features of the
frames. That filter's parameters are fitted by gradient maximum likelihood through
:func:`ldmfilter.gaussian.kalman_filter`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .estimators import LDMFilter
from .gaussian import kalman_filter, kalman_forecast
from .nn.readout import LinearReadout
from .simulate import make_dotmotion, resample_noise
from .training.probes import linear_probe_r2, r2_score

__all__ = ["DemoSettings", "run_demo"]

Z90 = 1.6448536269514722  # standard normal quantile of 0.95


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo; ``quick`` ones finish in seconds (CI)."""

    n_train: int = 800
    n_test: int = 16
    epochs: int = 20
    observed_steps: int = 80
    pca_components: int = 10
    baseline_sequences: int = 100
    baseline_iterations: int = 80

    @classmethod
    def quick(cls) -> "DemoSettings":
        return cls(n_train=48, n_test=8, epochs=2, pca_components=6, baseline_sequences=48, baseline_iterations=20)


def _gaussian_scores(mean, cov, truth) -> dict:
    """NLL per step (nats), 90%-interval coverage and R² of position beliefs."""
    std = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    inside = np.abs(truth - mean) <= Z90 * std
    diff = truth - mean
    nll = 0.5 * (np.einsum("...i,...ij,...j->...", diff, np.linalg.inv(cov), diff)
                 + np.linalg.slogdet(cov)[1] + truth.shape[-1] * math.log(2 * math.pi))
    return {
        "r2": r2_score(torch.as_tensor(mean), torch.as_tensor(truth)),
        "nll": float(nll.mean()),
        "coverage90": float(inside.mean()),
    }


def _pca_kalman_baseline(train_frames, test_frames, settings: DemoSettings, observed: int, seed: int):
    """Classical Kalman filter on PCA features; parameters by gradient maximum likelihood.

    Fitted on the first ``settings.baseline_sequences`` training sequences.  Returns the filtered
    state moments of those and of the test sequences, the forecast of the test sequences after
    ``observed`` steps, and the number of training sequences used.
    """
    generator = torch.Generator().manual_seed(seed)
    flat = lambda frames: torch.as_tensor(frames.reshape(frames.shape[:2] + (-1,)), dtype=torch.float64)  # noqa: E731
    train, test = flat(train_frames[: settings.baseline_sequences]), flat(test_frames)
    mean = train.reshape(-1, train.shape[-1]).mean(0)
    _, _, basis = torch.linalg.svd(train.reshape(-1, train.shape[-1]) - mean, full_matrices=False)
    project = lambda x: (x - mean) @ basis[: settings.pca_components].T  # noqa: E731
    y_train, y_test = project(train), project(test)
    dim = settings.pca_components
    A = torch.nn.Parameter(0.9 * torch.eye(dim, dtype=torch.float64))
    H = torch.nn.Parameter(torch.eye(dim, dtype=torch.float64) + 0.01 * torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    log_q = torch.nn.Parameter(torch.full((dim,), -2.0, dtype=torch.float64))
    log_r = torch.nn.Parameter(torch.zeros(dim, dtype=torch.float64))
    optimiser = torch.optim.Adam([A, H, log_q, log_r], lr=0.05)
    m0, P0 = torch.zeros(dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64)

    def run(y):
        return kalman_filter(y, A, torch.diag(log_q.exp()), H, torch.diag(log_r.exp()), m0, P0)

    for _ in range(settings.baseline_iterations):
        optimiser.zero_grad()
        loss = -run(y_train).log_likelihood.mean()
        loss.backward()
        optimiser.step()
        with torch.no_grad():  # keep the transition stable
            radius = torch.linalg.eigvals(A).abs().max()
            if radius > 0.999:
                A.mul_(0.999 / radius)
    with torch.no_grad():
        train_out, test_out = run(y_train), run(y_test[:, :observed])
        forecast = kalman_forecast(
            test_out.filtered_mean[:, -1], test_out.filtered_cov[:, -1], A, torch.diag(log_q.exp()),
            test_frames.shape[1] - observed,
        )
    return train_out, test_out, forecast, settings.baseline_sequences


def _figures(out_dir: Path, test, ldm_pos, ldm_fc, observed: int) -> list[str]:
    """Write the PNG figures; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = []
    steps = np.arange(test.positions.shape[1])
    mean, cov = ldm_pos
    std = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for k, (ax, label) in enumerate(zip(axes, ("x", "y"))):
        ax.plot(steps, test.positions[0, :, k], "k-", lw=1, label="true")
        ax.plot(steps[:observed], mean[0, :observed, k], "C0-", label="filtered (LDMFilter)")
        ax.fill_between(steps[:observed], (mean - Z90 * std)[0, :observed, k], (mean + Z90 * std)[0, :observed, k],
                        color="C0", alpha=0.25, label="90% interval")
        fmean, fcov = ldm_fc
        fstd = np.sqrt(np.diagonal(fcov, axis1=-2, axis2=-1))
        ax.plot(steps[observed:], fmean[0, :, k], "C3-", label="forecast")
        ax.fill_between(steps[observed:], (fmean - Z90 * fstd)[0, :, k], (fmean + Z90 * fstd)[0, :, k], color="C3", alpha=0.2)
        ax.set_ylabel(label)
    axes[0].legend(loc="upper right", fontsize=7, ncol=2)
    axes[-1].set_xlabel("step")
    fig.suptitle("Held-out sequence: true position, filtered belief and forecast fan")
    fig.tight_layout()
    fig.savefig(out_dir / "positions.png", dpi=110)
    plt.close(fig)
    names.append("positions.png")

    fig, axes = plt.subplots(2, 8, figsize=(10, 3))
    for j, t in enumerate(np.linspace(0, observed - 1, 8).astype(int)):
        axes[0, j].imshow(test.frames[0, t], cmap="gray")
        axes[0, j].set_title(f"t={t}", fontsize=8)
        axes[1, j].imshow(test.clean_frames[0, t], cmap="gray")
        for row in axes[:, j]:
            row.set_xticks([])
            row.set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=8)
    axes[1, 0].set_ylabel("clean", fontsize=8)
    fig.suptitle("What the filter sees (top) and the noise-free frames it never sees (bottom)")
    fig.tight_layout()
    fig.savefig(out_dir / "frames.png", dpi=110)
    plt.close(fig)
    names.append("frames.png")
    return names


def run_demo(out_dir="ldmfilter-demo", quick: bool = False, seed: int = 0, verbose: bool = True) -> dict:
    """Train, filter, forecast and compare; write figures and a report into ``out_dir``.

    Returns
    -------
    dict
        The scores of every method (R², NLL, 90% coverage) and timings.
    """
    settings = DemoSettings.quick() if quick else DemoSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train = make_dotmotion("figure8", settings.n_train, seed=seed, noise_variance=0.3)
    test = make_dotmotion("figure8", settings.n_test, seed=seed + 10_000, noise_variance=0.3)
    observed = settings.observed_steps
    horizon = test.frames.shape[1] - observed
    results = {}

    started = time.perf_counter()
    model = LDMFilter(max_epochs=settings.epochs, random_state=seed, verbose=verbose)
    model.fit(train.frames, epoch_data=lambda epoch: resample_noise(train, np.random.default_rng([seed, epoch])))
    fit_seconds = time.perf_counter() - started
    states_train = model.filter(train.frames)
    states_test = model.filter(test.frames[:, :observed])
    readout = LinearReadout.fit(torch.as_tensor(states_train.mean), torch.as_tensor(train.positions),
                                torch.as_tensor(states_train.cov))
    as_numpy = lambda moments: tuple(m.numpy() for m in moments)  # noqa: E731
    ldm_pos = as_numpy(readout(torch.as_tensor(states_test.mean, dtype=torch.float64),
                               torch.as_tensor(states_test.cov, dtype=torch.float64)))
    forecast = model.forecast(test.frames[:, :observed], horizon)
    ldm_fc = as_numpy(readout(torch.as_tensor(forecast.mean, dtype=torch.float64), torch.as_tensor(forecast.cov, dtype=torch.float64)))
    results["LDMFilter"] = {
        "filter": _gaussian_scores(*ldm_pos, test.positions[:, :observed]),
        "forecast": _gaussian_scores(*ldm_fc, test.positions[:, observed:]),
        "seconds": fit_seconds,
    }

    flat = lambda d: torch.as_tensor(d.frames.reshape(d.frames.shape[:2] + (-1,)))  # noqa: E731
    results["raw-frame regression"] = {
        "filter": {"r2": linear_probe_r2(flat(train), torch.as_tensor(train.positions),
                                         flat(test)[:, :observed], torch.as_tensor(test.positions[:, :observed])),
                   "nll": None, "coverage90": None},
        "forecast": None,
        "seconds": None,
    }

    started = time.perf_counter()
    kf_train, kf_test, kf_forecast, used = _pca_kalman_baseline(train.frames, test.frames, settings, observed, seed)
    kf_readout = LinearReadout.fit(kf_train.filtered_mean, torch.as_tensor(train.positions[:used]), kf_train.filtered_cov)
    results["PCA + Kalman filter"] = {
        "filter": _gaussian_scores(*as_numpy(kf_readout(kf_test.filtered_mean, kf_test.filtered_cov)),
                                   test.positions[:, :observed]),
        "forecast": _gaussian_scores(*as_numpy(kf_readout(kf_forecast.mean, kf_forecast.cov)), test.positions[:, observed:]),
        "seconds": time.perf_counter() - started,
    }

    figures = _figures(out_dir, test, ldm_pos, ldm_fc, observed)
    table = _table(results, horizon)
    report = _report(settings, table, figures, quick)
    (out_dir / "report.md").write_text(report)
    print(table)
    print(f"\nFigures and report written to {out_dir.resolve()}")
    return results


def _fmt(value, digits=3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _table(results: dict, horizon: int) -> str:
    lines = [
        f"| method | filter R² | filter NLL | filter 90% coverage | {horizon}-step forecast R² | forecast NLL | "
        "forecast 90% coverage | fit seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in results.items():
        f, fc = row["filter"], row["forecast"] or {}
        lines.append(
            f"| {name} | {_fmt(f['r2'])} | {_fmt(f['nll'], 2)} | {_fmt(f['coverage90'], 2)} | {_fmt(fc.get('r2'))} | "
            f"{_fmt(fc.get('nll'), 2)} | {_fmt(fc.get('coverage90'), 2)} | {_fmt(row['seconds'], 1)} |"
        )
    return "\n".join(lines)


def _report(settings: DemoSettings, table: str, figures: list[str], quick: bool) -> str:
    return "\n".join([
        "# ldmfilter demo: a figure-8 seen through heavy pixel noise",
        "",
        f"Settings: {settings} ({'quick' if quick else 'full'}). Frames: 10×10, pixel-noise variance 0.3 "
        "(the blob's peak is 1). Positions are read out linearly from each model's filtered state; "
        f"intervals are closed-form Gaussian. The first {settings.observed_steps} steps are filtered and the "
        "rest forecast.",
        "",
        table,
        "",
        "NLL: mean Gaussian negative log-likelihood of the true 2-D position per step (nats, lower is better).",
        "",
        *[f"![{name}]({name})" for name in figures],
        "",
    ])
