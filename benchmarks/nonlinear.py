"""The nonlinear Kalman predictor against the linear one: identifiability, forecasts, training cost.

Three parts, each writing its own section of ``benchmarks/results/nonlinear.md``
(``nonlinear_quick.md`` with ``--quick``):

* ``cost``: optimiser-step time of ``LDMFilter``'s model (forward, backward, Adam) with the
  linear transition and with ``dynamics="mlp"`` under each moment rule, on two workloads: the
  paper's figure-8 recipe (10×10 frames, MLP encoder, S=10, L=5, fixed R) and the pendulum
  recipe (24×24 frames, linear encoder, S=16, L=10, input-dependent R).  Medians of
  interleaved rounds (every predictor timed in each round).  ``--cost-observations linear mlp clamp``
  also times every predictor with ``observation="mlp"`` and ``"clamp"``.
* ``wobbly``: the identifiability experiment (METHOD.md §5): Kalman-linear vs Kalman-MLP vs the
  paper's RNN predictor, all with the kNN-entropy objective and the paper's 10×200 encoder;
  linear-probe R² from the filtered state (the RNN: from its latents) to the true 2-D position
  on held-out sequences, and the 90% coverage and NLL of the position beliefs.  The Kalman
  models' beliefs are the exact push-forward of the state belief through a linear read-out
  (``fit_readout``); the RNN predictor has no state belief, so its row uses the linear probe
  with the probe's residual covariance as a constant Gaussian (the best it offers).
  ``--wobbly-noise input`` gives the Kalman models a noise head (input-dependent ``R_t``), which
  can tell frames with the blob clamped to the image border from informative ones, and
  ``--wobbly-noise input_full`` one with a full (correlated) ``R_t``, which can discount one image
  axis however the latents are oriented;
  ``--wobbly-clip C`` clips their gradient norm at ``C``; ``--wobbly-state-dim S`` and
  ``--wobbly-schedule NAME`` set their state dimension (default 4) and learning-rate schedule
  (default the paper's ``"step"``), ``--wobbly-lr-scale F`` their learning rates (``F`` times the
  paper's, every parameter group alike), ``--wobbly-observation mlp|clamp`` their map from state to
  latents (``LDMFilter(observation=...)``: ``z = D h + g_φ(h)``, or each latent clamped between
  learned bounds; both can saturate where the frames pin a latent).
* ``forecast``: ``pendulum_video`` and ``lorenz`` (the suite's data): linear vs nonlinear
  predictors, multi-step forecasts of the targets (sin θ, cos θ for the pendulum; the true
  state for Lorenz-63) from origins inside each test sequence; NLL, CRPS and 90% coverage at
  horizons 1, 5 and 20.  ``--calibrate`` adds, for each model, the same scores after
  ``calibrate_forecast`` on validation sequences (as many as the test set, drawn separately):
  one factor per horizon on the state forecast covariance, fitted to the validation targets by
  maximum likelihood; ``--calibrate likelihood coverage`` scores both that and the factors that
  give the validation targets' 90% intervals 90% coverage (``method="coverage"``), on the same
  models.  ``--multistep K`` trains every model of this part with ``LDMFilter(multistep=K)`` (the
  objective also scores the 2- to K-step predictions); ``--lorenz-levels`` picks the noise levels.

    python benchmarks/nonlinear.py [--quick] [--parts cost wobbly forecast] [--seeds 0 1 2] [--no-write]
                                   [--wobbly-noise fixed|input] [--wobbly-clip C] [--wobbly-state-dim S]
                                   [--wobbly-schedule step|linear|cosine|constant] [--wobbly-lr-scale F]
                                   [--wobbly-observation linear|mlp|clamp] [--cost-observations linear|mlp|clamp ...]
                                   [--calibrate [likelihood] [coverage]] [--multistep K] [--lorenz-levels DB ...]
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import inspect
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ldmfilter import LDMFilter, metrics
from ldmfilter.nn import OBSERVATIONS, RESIDUAL_ACTIVATIONS
from ldmfilter.estimators.forecast_calibration import METHODS as CALIBRATION_METHODS
from ldmfilter.simulate import make_dotmotion, make_pendulum_video
from ldmfilter.training.objectives import ldm_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lorenz as lorenz_benchmark  # noqa: E402  (the suite's Lorenz-63 data and LDMFilter recipe)
import pendulum_video as pendulum_benchmark  # noqa: E402  (its LDMFilter recipe)
from pendulum_video import _fmt  # noqa: E402  (mean ± sd over seeds)

RESULTS = Path(__file__).resolve().parent / "results"
RULES = ("linearize", "unscented", "cubature")
HORIZONS = (1, 5, 20)
COVERAGE_LEVEL = 0.9  # the interval level scored, and the target of calibrate_forecast(method="coverage")
RECALIBRATED = {"likelihood": "recalibrated", "coverage": f"recalibrated to {COVERAGE_LEVEL:.0%} coverage"}
PAPER_WOBBLY_R2 = 0.94  # the paper's RNN predictor, 10,000 sequences, 20 epochs
PAPER_LEARNING_RATE = inspect.signature(LDMFilter).parameters["learning_rate"].default  # the encoder's, batch 8


@dataclass(frozen=True)
class Settings:
    cost_steps: int = 10
    cost_repeats: int = 9
    cost_activations: tuple = ("tanh",)  # residual units of the MLP predictor timed in the cost part
    cost_observations: tuple = ("linear",)  # maps from state to latents timed in the cost part
    wobbly_train: int = 2000
    wobbly_test: int = 100
    wobbly_epochs: int = 5
    wobbly_noise: str = "fixed"  # R of the Kalman models: "fixed" (the paper's), "input" or "input_full" (noise heads)
    wobbly_clip: float | None = None  # gradient-norm clipping of the Kalman models (Lightning's gradient_clip_val)
    wobbly_state_dim: int = 4  # S of the Kalman models
    wobbly_schedule: str = "step"  # learning-rate schedule of the Kalman models
    wobbly_activation: str = "tanh"  # hidden units of the Kalman-MLP's residual (LDMFilter's dynamics_activation)
    wobbly_mlp_readout: bool = False  # also score an MLP read-out (fit_readout(..., "mlp")) of the Kalman models' state
    wobbly_lr_scale: float = 1.0  # the Kalman models' learning rates, as a multiple of the paper's (every group alike)
    wobbly_observation: str = "linear"  # the Kalman models' map from state to latents (LDMFilter's observation)
    wobbly_moments: str = "linearize"  # the Kalman models' moment rule (LDMFilter's moments)
    wobbly_n_init: int = 1  # restarts of every Kalman model (LDMFilter's n_init: loss, then agreement, picks the run)
    pendulum_train: int = 1000
    pendulum_test: int = 300
    pendulum_origins: tuple = (40, 55)
    pendulum_epochs: int | None = None  # None: the suite's recipe (2 epochs)
    forecast_data: tuple = ("pendulum", "lorenz")
    lorenz_levels: tuple = (0.0, 20.0)
    lorenz_origins: tuple = (100, 150)
    lorenz: lorenz_benchmark.Settings = lorenz_benchmark.Settings()  # data sizes and the LDMFilter recipe
    dynamics_hidden: tuple = (64,)
    rules: tuple = RULES  # moment rules of the MLP predictor compared with the linear one
    calibrate: tuple = ()  # calibrate_forecast methods each model is also scored after (on validation sequences)
    multistep: int = 1  # LDMFilter(multistep=...) of every forecast-part model: steps ahead the objective scores


FULL = Settings()
QUICK = replace(FULL, cost_steps=2, cost_repeats=2, wobbly_train=64, wobbly_test=16, wobbly_epochs=1,
                pendulum_train=40, pendulum_test=12, lorenz_levels=(20.0,), lorenz_origins=(50, 80),
                lorenz=lorenz_benchmark.QUICK)


def variants(rules=RULES, activations=("tanh",), observations=("linear",)):
    """(row name, LDMFilter arguments) of the predictors compared: the linear one and the MLP with each rule and
    residual unit, each with every map from state to latents."""
    rows = [("linear", {"dynamics": "linear"})] + [
        (f"MLP, {rule}" + ("" if units == "tanh" else f", {units}"),
         {"dynamics": "mlp", "moments": rule, "dynamics_activation": units})
        for units in activations for rule in rules
    ]
    return [(name + OBSERVATION_LABEL.get(observation, ""),
             dict(extra, observation=observation))
            for observation in observations for name, extra in rows]


# --------------------------------------------------------------------------- cost


def make_step(model: LDMFilter, obs_shape: tuple, batch: int, steps: int):
    """One optimiser step (forward, stop-gradient loss, backward, Adam) of the model ``LDMFilter`` builds, on random frames."""
    net = model._build_model(obs_shape, None)
    x = torch.randn((batch, steps) + obs_shape, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(net.parameters(), 1e-4)

    def step():
        loss = ldm_loss(net(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def run_cost(settings: Settings, log=print) -> dict:
    """Seconds per step of each predictor, timed in interleaved rounds.

    Every round times ``cost_steps`` steps of each predictor in turn (the order rotating from
    round to round), so that a slowdown of a shared host falls on all of them alike; the medians
    over ``cost_repeats`` rounds are reported.
    """
    workloads = {
        "figure-8 recipe (10×10 frames, MLP encoder (100,), S=10, L=5, fixed R, batch 8 × 100 steps)":
            ((10, 10), 8, 100, dict(state_dim=10, latent_dim=5)),
        "pendulum recipe (24×24 frames, linear encoder, S=16, L=10, input-dependent R, batch 8 × 75 steps)":
            ((24, 24), 8, 75, dict(state_dim=16, latent_dim=10, hidden=(), noise="input_absolute")),
    }
    out = {}
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    for workload, (shape, batch, steps, kwargs) in workloads.items():
        stepper = {}
        for name, extra in variants(settings.rules, settings.cost_activations, settings.cost_observations):
            model = LDMFilter(**kwargs, **extra, dynamics_hidden=settings.dynamics_hidden, verbose=False)
            stepper[name] = make_step(model, shape, batch, steps)
            for _ in range(2):  # warm-up
                stepper[name]()
        times = {name: [] for name in stepper}
        names = list(stepper)
        for round_ in range(settings.cost_repeats):
            for name in names[round_ % len(names):] + names[: round_ % len(names)]:
                started = time.perf_counter()
                for _ in range(settings.cost_steps):
                    stepper[name]()
                times[name].append((time.perf_counter() - started) / settings.cost_steps)
        out[workload] = {name: statistics.median(values) for name, values in times.items()}
        for name, seconds in out[workload].items():
            log(f"  {workload[:20]} {name:<20s} {1e3 * seconds:.1f} ms/step")
    return out


def render_cost(out: dict, settings: Settings) -> str:
    lines = [f"Median over {settings.cost_repeats} interleaved rounds of {settings.cost_steps} optimiser steps per "
             "predictor (after 2 warm-up steps; each round times every predictor in turn, in rotating order) of "
             "forward, stop-gradient loss, backward and Adam; float32, 1 intra-op thread. Residual MLP "
             f"g_θ: hidden {settings.dynamics_hidden}.", ""]
    for workload, rows in out.items():
        lines += [f"**{workload}**", "", "| predictor | ms per step | relative to linear |", "| --- | --- | --- |"]
        base = rows["linear"]
        lines += [f"| {name} | {1e3 * s:.1f} | {s / base:.2f}× |" for name, s in rows.items()]
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- wobbly


WOBBLY_PREDICTORS = ("linear", "mlp", "rnn")
OBSERVATION_LABEL = {"mlp": ", MLP observation", "clamp": ", clamp observation"}  # section titles, rows
OBSERVATION_TEXT = {  # the Kalman models' map from state to latents (--wobbly-observation): how the section describes it
    "mlp": "; the map from state to latents `observation='mlp'` (`z = D h + g_φ(h)`, a tanh MLP (64,) that starts at "
           "zero)",
    "clamp": "; the map from state to latents `observation='clamp'` (each latent its state coordinate between two "
             "learned bounds that start at ∓1, flat beyond, corners rounded with β = 10)",
}
WOBBLY_NOISE_TEXT = {  # the Kalman models' observation noise (--wobbly-noise): how the section describes it
    "fixed": "the paper's fixed `R = exp(s)·I`",
    "input": "the noise head `R_t = exp(s)·diag(softplus(g(x_t)) + floor)` (`noise='input'`)",
    "input_full": "the correlated noise head `R_t = exp(s)·(F_t F_tᵀ + floor·(1 + v_t)·I)`, `F_t = I + tril(g(x_t))` "
                  "(`noise='input_full'`)",
}
WOBBLY_NOISE_ROW = {"input": "input-dependent R", "input_full": "input-dependent full R"}  # in row names and titles


def wobbly_models(settings: Settings, seed: int, epochs: int, predictors=WOBBLY_PREDICTORS) -> dict:
    """{row name: unfitted LDMFilter} for the chosen predictors."""
    common = dict(objective="knn", latent_dim=2, hidden=(200,) * 10, max_epochs=epochs, random_state=seed,
                  verbose=False)
    kalman = dict(common, state_dim=settings.wobbly_state_dim, noise=settings.wobbly_noise, schedule=settings.wobbly_schedule,
                  learning_rate=settings.wobbly_lr_scale * PAPER_LEARNING_RATE, observation=settings.wobbly_observation,
                  moments=settings.wobbly_moments, n_init=settings.wobbly_n_init)
    if settings.wobbly_clip is not None:
        kalman["trainer_kwargs"] = {"gradient_clip_val": settings.wobbly_clip}
    noise = settings.wobbly_noise
    r_form = f"S={settings.wobbly_state_dim}" + (f", {WOBBLY_NOISE_ROW[noise]}" if noise in WOBBLY_NOISE_ROW else "") + (
        f", gradients clipped at {settings.wobbly_clip:g}" if settings.wobbly_clip is not None else "") + (
        f", {settings.wobbly_schedule} schedule" if settings.wobbly_schedule != "step" else "") + (
        f", learning rate ×{settings.wobbly_lr_scale:g}" if settings.wobbly_lr_scale != 1 else "") + (
        OBSERVATION_LABEL.get(settings.wobbly_observation, "")) + (
        f", best of {settings.wobbly_n_init} restarts" if settings.wobbly_n_init > 1 else "")
    rule = f", {settings.wobbly_moments} rule" if settings.wobbly_moments != "linearize" else ""  # the MLP row names it anyway
    models = {
        "linear": (f"Kalman, linear ({r_form}{rule})", lambda: LDMFilter(**kalman)),
        "mlp": (f"Kalman, MLP {settings.dynamics_hidden}{_units(settings)} {settings.wobbly_moments} ({r_form})", lambda: LDMFilter(
            dynamics="mlp", dynamics_hidden=settings.dynamics_hidden, dynamics_activation=settings.wobbly_activation,
            **kalman)),
        "rnn": ("RNN predictor (paper)", lambda: LDMFilter(predictor="rnn", **common)),
    }
    return {models[key][0]: models[key][1]() for key in predictors}


def _units(settings: Settings) -> str:
    """The residual's units in a row name, when not the default tanh."""
    return "" if settings.wobbly_activation == "tanh" else f" {settings.wobbly_activation}"


def run_wobbly_seed(settings: Settings, seed: int, log=print, predictors=WOBBLY_PREDICTORS) -> dict:
    train = make_dotmotion("wobbly", settings.wobbly_train, seed=seed)
    test = make_dotmotion("wobbly", settings.wobbly_test, seed=10_000 + seed)
    probe_n = min(settings.wobbly_train, 800)
    rows = {}
    for name, model in wobbly_models(settings, seed, settings.wobbly_epochs, predictors).items():
        started = time.perf_counter()
        model.fit(train.frames)
        fit_s = time.perf_counter() - started
        if model.predictor == "rnn":
            f_train, f_test = model.transform(train.frames[:probe_n]), model.transform(test.frames)
        else:
            f_train, f_test = model.filter(train.frames[:probe_n]).mean, model.filter(test.frames).mean
        r2 = metrics.linear_probe_r2(f_train, train.target[:probe_n], f_test, test.target)
        r2_mlp = None
        if model.predictor == "rnn":
            mean, cov = probe_gaussian(f_train, train.target[:probe_n], f_test)
        else:
            if settings.wobbly_mlp_readout:  # how much of the position the state holds, affinely or not
                model.fit_readout(train.frames[:probe_n], train.target[:probe_n], "mlp")
                r2_mlp = r2_score(test.target, model.filter(test.frames).targets.mean)
            model.fit_readout(train.frames[:probe_n], train.target[:probe_n])
            belief = model.filter(test.frames).targets
            mean, cov = belief.mean, belief.cov
        std = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
        rows[name] = {
            "r2": r2,
            "r2_mlp": r2_mlp,
            "coverage": metrics.gaussian_interval_coverage(test.target, mean, std, 0.9),
            "nll": metrics.gaussian_nll(test.target, mean, cov=cov),
            "fit_s": fit_s,
            "steps_per_s": len(model.loss_history_) / model.training_seconds_,
        }
        log(f"  seed {seed} {name:<36s} R² {r2:.3f}  coverage {rows[name]['coverage']:.3f}  "
            f"NLL {rows[name]['nll']:.3f}  fit {fit_s:.0f} s")
        if getattr(model, "n_init", 1) > 1:
            log(f"  seed {seed} restarts {model.restart_seeds_}: final loss {np.round(model.restart_losses_, 1).tolist()}, "
                f"agreement {np.round(model.restart_scores_, 4).tolist()}, kept {model.restart_seeds_[model.restart_index_]}")
        if model.predictor == "kalman" and model.observation == "clamp":  # has the map learned where the latents pin?
            observation, latents = model.model_.observation, model.transform(test.frames).reshape(-1, model.latent_dim)
            log(f"  seed {seed} clamp bounds low {np.round(observation.low.tolist(), 3)} high "
                f"{np.round(observation.high.tolist(), 3)}; test latents from {latents.min(0).round(3)} to {latents.max(0).round(3)}")
    return rows


def r2_score(y: np.ndarray, predicted: np.ndarray) -> float:
    """``mean_d [1 − Σ (y − ŷ)² / Σ (y − ȳ)²]`` over rows (..., D), as ``metrics.linear_probe_r2`` scores."""
    y, predicted = y.reshape(-1, y.shape[-1]), predicted.reshape(-1, y.shape[-1])
    return float(np.mean(1.0 - ((y - predicted) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)))


def probe_gaussian(f_train, y_train, f_test):
    """A least-squares probe's predictions with its training residual covariance (a constant Gaussian)."""
    design = lambda f: np.concatenate([f.reshape(-1, f.shape[-1]), np.ones((f[..., 0].size, 1))], 1)  # noqa: E731
    weights = np.linalg.lstsq(design(f_train), y_train.reshape(-1, y_train.shape[-1]), rcond=None)[0]
    residual = y_train.reshape(-1, y_train.shape[-1]) - design(f_train) @ weights
    mean = (design(f_test) @ weights).reshape(f_test.shape[:-1] + (y_train.shape[-1],))
    return mean, np.broadcast_to(np.cov(residual.T), mean.shape + (mean.shape[-1],))


def render_wobbly(per_seed: dict, settings: Settings) -> str:
    seeds = sorted(per_seed)
    names = list(per_seed[seeds[0]])
    lines = [
        f"Data: `make_dotmotion('wobbly')`, {settings.wobbly_train} training and {settings.wobbly_test} test "
        f"sequences of 100 frames (the paper: 10,000 training sequences, 20 epochs; here {settings.wobbly_epochs} "
        f"epochs); seeds {seeds} (data and models). Every model: kNN-entropy objective (F_MI), L=2, encoder "
        "MLP 10×200, batch 8, the paper's learning rates"
        + (f" (Kalman models: ×{settings.wobbly_lr_scale:g} those, every group alike)" if settings.wobbly_lr_scale != 1 else "")
        + "; Kalman models: "
        + WOBBLY_NOISE_TEXT[settings.wobbly_noise]
        + (f", gradient norm clipped at {settings.wobbly_clip:g} (`trainer_kwargs={{'gradient_clip_val': {settings.wobbly_clip:g}}}`)"
           if settings.wobbly_clip is not None else "")
        + (f", state dimension S = {settings.wobbly_state_dim}" if settings.wobbly_state_dim != 4 else "")
        + (f", `schedule='{settings.wobbly_schedule}'`" if settings.wobbly_schedule != "step" else "")
        + (f"; the Kalman-MLP's residual units `dynamics_activation='{settings.wobbly_activation}'`"
           if settings.wobbly_activation != "tanh" else "")
        + OBSERVATION_TEXT.get(settings.wobbly_observation, "")
        + (f", moment rule `moments='{settings.wobbly_moments}'`"
           if settings.wobbly_moments != "linearize" or settings.wobbly_observation != "linear" else "")
        + (f"; each Kalman model the run that `n_init={settings.wobbly_n_init}` keeps of its restarts (those whose final "
           "loss is clearly worse set aside, then the one that agrees most with the others; its fit time counts every "
           "restart)" if settings.wobbly_n_init > 1 else "")
        + ". Probe: least squares from the filtered state means "
        "(RNN: latents) of the first 800 training sequences to the true position, R² on the test sequences. "
        "Beliefs: Kalman models, `fit_readout` on the same 800 sequences and the exact linear push-forward of "
        "the filtered state belief; RNN, the probe with its residual covariance.",
        "",
    ]
    mlp_column = settings.wobbly_mlp_readout
    if mlp_column:
        lines[0] += (" MLP read-out: `fit_readout(..., 'mlp')` from the Kalman models' filtered states on the same 800 "
                     "sequences, R² of its mean on the test sequences (how much of the position the state holds, "
                     "affinely or not).")
    lines += [
        f"| predictor | probe R² (paper's RNN: {PAPER_WOBBLY_R2}) |" + (" MLP read-out R² |" if mlp_column else "")
        + " 90% coverage | NLL (nats/step) | steps/s | fit s |",
        "| --- " * (6 + mlp_column) + "|",
    ]
    for name in names:
        keys = ("r2", "r2_mlp", "coverage", "nll") if mlp_column else ("r2", "coverage", "nll")
        cells = [_fmt([per_seed[s][name].get(k) for s in seeds]) for k in keys]
        speed = _fmt([per_seed[s][name]["steps_per_s"] for s in seeds], 1)
        fit = _fmt([per_seed[s][name]["fit_s"] for s in seeds], 0)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {speed} | {fit} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- forecasts


def horizon_scores(targets: np.ndarray, beliefs: list, origins: tuple) -> dict:
    """NLL / CRPS / coverage per horizon of forecasts from several origins.

    ``beliefs[i]`` is the forecast target belief (n, H, D) from ``origins[i]``; ``targets`` (n, T, D).
    """
    out = {}
    for h in HORIZONS:
        y = np.concatenate([targets[:, t0 + h - 1] for t0 in origins])
        mean = np.concatenate([b.mean[:, h - 1] for b in beliefs])
        cov = np.concatenate([b.cov[:, h - 1] for b in beliefs])
        std = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
        out[h] = {"nll": metrics.gaussian_nll(y, mean, cov=cov), "crps": metrics.crps_gaussian(y, mean, std),
                  "coverage": metrics.gaussian_interval_coverage(y, mean, std, COVERAGE_LEVEL)}
    return out


def forecast_rows(make, train: tuple, test: tuple, origins: tuple, log, label: str, rules=RULES, validation=None,
                  methods=("likelihood",)) -> dict:
    """Forecast scores of every predictor: ``{row name: {"scores", "fit_s"}}``.

    ``train``, ``test`` and ``validation`` are ``(X, targets)`` pairs; with ``validation``, each
    model is also scored after ``calibrate_forecast`` on it with each method of ``methods`` (rows
    ``"<name>, recalibrated"`` for the likelihood, ``"<name>, recalibrated to 90% coverage"``;
    their ``fit_s`` the calibration's seconds).
    """
    rows = {}
    x_test, y_test = test

    def score(name, model, seconds):
        beliefs = [model.forecast(x_test[:, :t0], max(HORIZONS)).targets for t0 in origins]
        rows[name] = {"scores": horizon_scores(y_test, beliefs, origins), "fit_s": seconds}
        cells = "  ".join(f"h{h} NLL {s['nll']:.3f} CRPS {s['crps']:.4f} cov {s['coverage']:.2f}"
                          for h, s in rows[name]["scores"].items())
        log(f"  {label} {name:<18s} {cells}  {seconds:.0f} s")

    for name, extra in variants(rules):
        started = time.perf_counter()
        model = make(extra).fit(train[0], targets=train[1])
        score(name, model, time.perf_counter() - started)
        for method in methods if validation is not None else ():
            started = time.perf_counter()
            model.calibrate_forecast(validation[0], max(HORIZONS), Y=validation[1], method=method, level=COVERAGE_LEVEL)
            factors = np.round(model.forecast_scale_[np.array(HORIZONS) - 1], 2)
            log(f"  {label} {name}: {method} factors at h = {HORIZONS}: {factors}")
            score(f"{name}, {RECALIBRATED[method]}", model, time.perf_counter() - started)
    return rows


def run_forecast_seed(settings: Settings, seed: int, log=print) -> dict:
    out = {}
    if "pendulum" in settings.forecast_data:
        recipe = pendulum_benchmark.FULL.ldm_kwargs()
        if settings.pendulum_epochs is not None:
            recipe["max_epochs"] = settings.pendulum_epochs
        train = make_pendulum_video(settings.pendulum_train, 75, 24, seed=seed)
        test = make_pendulum_video(settings.pendulum_test, 75, 24, seed=10_000 + seed)
        validation = None
        if settings.calibrate:
            held_out = make_pendulum_video(settings.pendulum_test, 75, 24, seed=20_000 + seed)
            validation = (held_out.frames, held_out.targets)
        make = lambda extra: LDMFilter(**recipe, **extra, dynamics_hidden=settings.dynamics_hidden,  # noqa: E731
                                       multistep=settings.multistep, random_state=seed, verbose=False)
        out[f"pendulum video, {recipe['max_epochs']} epochs"] = forecast_rows(
            make, (train.frames, train.targets), (test.frames, test.targets), settings.pendulum_origins, log, "pendulum",
            settings.rules, validation, settings.calibrate)
    lorenz_settings = settings.lorenz
    recipe = dict(lorenz_settings.ldm)
    for level in settings.lorenz_levels if "lorenz" in settings.forecast_data else ():
        rng = np.random.default_rng([seed, int(round(level * 10)) + 1000])
        r = 10.0 ** (-level / 20.0)
        x_train = lorenz_benchmark.simulate(lorenz_settings.n_train, lorenz_settings.steps, lorenz_settings, rng)
        x_test = lorenz_benchmark.simulate(lorenz_settings.n_test, lorenz_settings.steps, lorenz_settings, rng)
        y_train = x_train + r * rng.normal(size=x_train.shape)
        y_test = x_test + r * rng.normal(size=x_test.shape)
        validation = None
        if settings.calibrate:  # drawn after the training and test data, which stay as without calibration
            x_val = lorenz_benchmark.simulate(lorenz_settings.n_test, lorenz_settings.steps, lorenz_settings, rng)
            validation = (x_val + r * rng.normal(size=x_val.shape), x_val)
        make = lambda extra: LDMFilter(**recipe, **extra, dynamics_hidden=settings.dynamics_hidden,  # noqa: E731
                                       multistep=settings.multistep, random_state=seed, verbose=False)
        out[f"lorenz, 1/r² = {level:+.0f} dB"] = forecast_rows(make, (y_train, x_train), (y_test, x_test),
                                                               settings.lorenz_origins, log, f"lorenz {level:+.0f} dB",
                                                               settings.rules, validation, settings.calibrate)
    return out


def render_forecast(per_seed: dict, settings: Settings) -> str:
    seeds = sorted(per_seed)
    data_names = list(per_seed[seeds[0]])
    described = []
    if any(name.startswith("pendulum") for name in data_names):
        described.append(
            f"Pendulum video: {settings.pendulum_train} training / {settings.pendulum_test} test sequences of 75 "
            "frames, the suite's LDMFilter recipe (`pendulum_video.py`; epochs in the data set's title), forecasts "
            f"from steps {settings.pendulum_origins}; targets (sin θ, cos θ).")
    if any(name.startswith("lorenz") for name in data_names):
        described.append(
            f"Lorenz-63: the suite's data and LDMFilter recipe (`lorenz.py`: {settings.lorenz.n_train} × "
            f"{settings.lorenz.steps} training, {settings.lorenz.n_test} × {settings.lorenz.steps} test steps; "
            f"{dict(settings.lorenz.ldm)}), noise levels {settings.lorenz_levels} dB, forecasts from steps "
            f"{settings.lorenz_origins}; target the true state, read out linearly (`fit(X, targets=true states)`).")
    lines = [
        " ".join(described) + " Each model filters the test sequence up to the origin and forecasts "
        f"{max(HORIZONS)} steps; the target read-out's Gaussian belief is scored. Seeds {seeds}. Residual MLP "
        f"hidden {settings.dynamics_hidden}."
        + (f" Every model trained with `multistep={settings.multistep}` (the objective also scores the 2- to "
           f"{settings.multistep}-step predictions)." if settings.multistep > 1 else "")
        + " NLL in nats per step (joint over target dims), CRPS averaged over dims; "
        "lower is better. Bold: best NLL per data set and horizon."
        + (" Rows “…, recalibrated”: the same model after `calibrate_forecast(X_val, "
           f"{max(HORIZONS)}, Y=targets_val)` on validation sequences drawn separately (as many as the test "
           "sequences): one factor per horizon on the state forecast covariance, by maximum likelihood; rows "
           f"“…, {RECALIBRATED['coverage']}”: `method='coverage'`, the factors whose {COVERAGE_LEVEL:.0%} "
           "intervals cover that share of the validation targets; their last column is the calibration's "
           "seconds." if settings.calibrate else ""),
        "",
    ]
    data_names = list(per_seed[seeds[0]])
    for data in data_names:
        names = list(per_seed[seeds[0]][data])
        lines += [f"**{data}**", "",
                  "| predictor | " + " | ".join(f"NLL h={h} | CRPS h={h} | cov h={h}" for h in HORIZONS) + " | fit s |",
                  "| --- |" + " --- | --- | --- |" * len(HORIZONS) + " --- |"]
        best = {h: min(np.mean([per_seed[s][data][n]["scores"][h]["nll"] for s in seeds]) for n in names) for h in HORIZONS}
        for name in names:
            cells = []
            for h in HORIZONS:
                values = {k: [per_seed[s][data][name]["scores"][h][k] for s in seeds] for k in ("nll", "crps", "coverage")}
                nll = _fmt(values["nll"])
                cells += [f"**{nll}**" if np.mean(values["nll"]) == best[h] else nll, _fmt(values["crps"], 4),
                          _fmt(values["coverage"], 2)]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt([per_seed[s][data][name]['fit_s'] for s in seeds], 0)} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- output


def write_section(path: Path, part: str, text: str) -> None:
    """Replace this part's section of ``path`` (other parts' sections are kept; a file lock serialises writers)."""
    begin, end = f"<!-- {part} -->", f"<!-- /{part} -->"
    path.touch()
    with open(path, "r+") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        current = stream.read() or "# Nonlinear Kalman predictor vs the linear one\n\n"
        block = f"{begin}\n{text}\n{end}"
        if begin in current:
            head, rest = current.split(begin, 1)
            current = head + block + rest.split(end, 1)[1]
        else:
            current = current.rstrip("\n") + "\n\n" + block + "\n"
        stream.seek(0)
        stream.truncate()
        stream.write(current)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", nargs="+", choices=("cost", "wobbly", "forecast"), default=["cost", "wobbly", "forecast"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--wobbly-train", type=int, help="training sequences of the wobbly part (default 2000)")
    parser.add_argument("--wobbly-epochs", type=int, help="epochs of the wobbly part (default 5)")
    parser.add_argument("--wobbly-predictors", nargs="+", choices=WOBBLY_PREDICTORS, default=list(WOBBLY_PREDICTORS))
    parser.add_argument("--wobbly-noise", choices=sorted(WOBBLY_NOISE_TEXT), default="fixed",
                        help="observation noise of the Kalman models in the wobbly part (default: the paper's fixed R)")
    parser.add_argument("--wobbly-clip", type=float, help="clip the Kalman models' gradient norm at this value (default: no clipping)")
    parser.add_argument("--wobbly-state-dim", type=int, default=4, help="state dimension S of the Kalman models (default 4)")
    parser.add_argument("--wobbly-schedule", choices=("step", "linear", "cosine", "constant"), default="step",
                        help="learning-rate schedule of the Kalman models (default: the paper's step decay)")
    parser.add_argument("--wobbly-activation", choices=sorted(RESIDUAL_ACTIVATIONS), default="tanh",
                        help="hidden units of the Kalman-MLP's residual (LDMFilter's dynamics_activation; default tanh)")
    parser.add_argument("--wobbly-mlp-readout", action="store_true",
                        help="wobbly part: also score an MLP read-out of the Kalman models' filtered states")
    parser.add_argument("--wobbly-lr-scale", type=float, default=1.0,
                        help="wobbly part: the Kalman models' learning rates as a multiple of the paper's (default 1)")
    parser.add_argument("--wobbly-observation", choices=OBSERVATIONS, default="linear",
                        help="wobbly part: the Kalman models' map from state to latents (LDMFilter's observation; default linear)")
    parser.add_argument("--wobbly-moments", choices=RULES, default="linearize",
                        help="wobbly part: the Kalman models' moment rule (LDMFilter's moments; default linearize)")
    parser.add_argument("--wobbly-n-init", type=int, default=1,
                        help="wobbly part: restarts of every Kalman model (LDMFilter's n_init; default 1)")
    parser.add_argument("--cost-activations", nargs="+", choices=sorted(RESIDUAL_ACTIVATIONS), default=["tanh"],
                        help="cost part: time the MLP predictor with each of these residual units (default tanh)")
    parser.add_argument("--cost-observations", nargs="+", choices=OBSERVATIONS, default=["linear"],
                        help="cost part: time every predictor with each of these maps from state to latents (default linear)")
    parser.add_argument("--forecast-data", nargs="+", choices=("pendulum", "lorenz"), help="data sets of the forecast part")
    parser.add_argument("--pendulum-epochs", type=int, help="epochs of every pendulum model (default: the recipe's 2)")
    parser.add_argument("--rules", nargs="+", choices=RULES, help="moment rules of the MLP predictor (default: all)")
    parser.add_argument("--lorenz-levels", type=float, nargs="+", help="forecast part: Lorenz noise levels in dB (default 0 20)")
    parser.add_argument("--multistep", type=int, default=1,
                        help="forecast part: train every model with LDMFilter(multistep=K) (default 1, the one-step objective)")
    parser.add_argument("--calibrate", nargs="*", choices=CALIBRATION_METHODS,
                        help="forecast part: also score each model after calibrate_forecast on validation sequences "
                        "with these methods (default: likelihood)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.wobbly_train:
        settings = replace(settings, wobbly_train=args.wobbly_train)
    if args.wobbly_epochs:
        settings = replace(settings, wobbly_epochs=args.wobbly_epochs)
    settings = replace(settings, wobbly_noise=args.wobbly_noise, wobbly_clip=args.wobbly_clip,
                       wobbly_state_dim=args.wobbly_state_dim, wobbly_schedule=args.wobbly_schedule,
                       wobbly_activation=args.wobbly_activation, wobbly_mlp_readout=args.wobbly_mlp_readout,
                       wobbly_lr_scale=args.wobbly_lr_scale, wobbly_observation=args.wobbly_observation,
                       wobbly_moments=args.wobbly_moments, wobbly_n_init=args.wobbly_n_init,
                       cost_activations=tuple(args.cost_activations), cost_observations=tuple(args.cost_observations))
    if args.forecast_data:
        settings = replace(settings, forecast_data=tuple(args.forecast_data))
    if args.pendulum_epochs:
        settings = replace(settings, pendulum_epochs=args.pendulum_epochs)
    if args.rules:
        settings = replace(settings, rules=tuple(args.rules))
    if args.lorenz_levels:
        settings = replace(settings, lorenz_levels=tuple(args.lorenz_levels))
    settings = replace(settings, multistep=args.multistep)
    if args.calibrate is not None:
        settings = replace(settings, calibrate=tuple(dict.fromkeys(args.calibrate or ["likelihood"])))
    torch.set_num_threads(1)
    path = RESULTS / ("nonlinear_quick.md" if args.quick else "nonlinear.md")
    results = {}
    for part in args.parts:
        started = time.perf_counter()
        print(f"{part}:", flush=True)
        title = {
            "cost": "cost" + (f", rules: {', '.join(settings.rules)}" if args.rules else "")
            + (f", residual units: {', '.join(settings.cost_activations)}" if settings.cost_activations != ("tanh",) else "")
            + (f", observation maps: {', '.join(settings.cost_observations)}" if settings.cost_observations != ("linear",) else ""),
            "wobbly": f"wobbly, {settings.wobbly_train} sequences × {settings.wobbly_epochs} epochs"
            + (f", Kalman models with {WOBBLY_NOISE_ROW[settings.wobbly_noise]}" if settings.wobbly_noise in WOBBLY_NOISE_ROW else "")
            + (f", gradients clipped at {settings.wobbly_clip:g}" if settings.wobbly_clip is not None else "")
            + (f", S={settings.wobbly_state_dim}" if settings.wobbly_state_dim != 4 else "")
            + (f", {settings.wobbly_schedule} schedule" if settings.wobbly_schedule != "step" else "")
            + (f", {settings.wobbly_activation} residual units" if settings.wobbly_activation != "tanh" else "")
            + (", MLP read-out" if settings.wobbly_mlp_readout else "")
            + (f", learning rate ×{settings.wobbly_lr_scale:g}" if settings.wobbly_lr_scale != 1 else "")
            + OBSERVATION_LABEL.get(settings.wobbly_observation, "")
            + (f", {settings.wobbly_moments} rule" if settings.wobbly_moments != "linearize" else "")
            + (f", best of {settings.wobbly_n_init} restarts" if settings.wobbly_n_init > 1 else ""),
            "forecast": "forecast" if (args.forecast_data is None and args.pendulum_epochs is None and not args.lorenz_levels
                                       and settings.multistep == 1)
            else f"forecast, {' and '.join(settings.forecast_data)}" + (
                f" (pendulum models at {settings.pendulum_epochs} epochs)" if args.pendulum_epochs else "") + (
                f", rules: {', '.join(settings.rules)}" if args.rules else "")
            + (f", Lorenz at {', '.join(f'{v:+g} dB' for v in settings.lorenz_levels)}" if args.lorenz_levels else "")
            + (f", multistep {settings.multistep}" if settings.multistep > 1 else "")
            + (", recalibrated" if settings.calibrate else "")
            + (" (likelihood and coverage)" if len(settings.calibrate) > 1 else
               " (coverage)" if settings.calibrate == ("coverage",) else ""),
        }[part]

        def write(body: str, seeds_done=None) -> None:
            """This part's section, rewritten after every seed so that a stopped run keeps what it measured."""
            if args.no_write:
                return
            when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
            done = "" if seeds_done is None else f", seeds done: {seeds_done} of {args.seeds}"
            header = (f"## {title} ({'quick' if args.quick else 'full'} settings, run of {when}, "
                      f"{time.perf_counter() - started:.0f} s{done})\n\n"
                      f"Machine: {platform.machine()}, 2 shared CPU cores, torch {torch.__version__}, 1 intra-op thread.\n")
            write_section(path, title, header + "\n" + body)

        if part == "cost":
            results[part] = run_cost(settings)
            write(render_cost(results[part], settings))
            continue
        results[part] = {}
        for seed in args.seeds:
            if part == "wobbly":
                results[part][seed] = run_wobbly_seed(settings, seed, predictors=args.wobbly_predictors)
                write(render_wobbly(results[part], settings), sorted(results[part]))
            else:
                results[part][seed] = run_forecast_seed(settings, seed)
                write(render_forecast(results[part], settings), sorted(results[part]))
    return results


if __name__ == "__main__":
    main()
