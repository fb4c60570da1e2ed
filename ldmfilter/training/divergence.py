"""Tell when a training run's loss blew up, and keep the weights to fall back on.

A run can end with non-finite weights (``after_optimizer_step`` catches them), or with finite
weights that are ruined: on one wobbly seed the filtered state ran away in the last 250 of
5,000 steps, the loss rose from about −100 to 1.7e5, and the probe R² fell from 0.86 to 0.00
(``docs/nonlinear.md``).  :func:`late_divergence` finds the second case in the loss history;
:class:`BestWindowWeights` keeps a copy of the weights at the end of the loss window that the
check compares with, so that ``fit`` can restore them in either case.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["BestWindowWeights", "TrainingDivergedWarning", "late_divergence", "loss_limit", "loss_windows"]

WINDOW_FRACTION, MIN_WINDOW = 0.05, 10


class TrainingDivergedWarning(UserWarning):
    """Training blew up (a NaN transition, or a loss that ended far above its best); the message says
    which weights the fitted model holds."""


def loss_windows(steps: int, window_fraction: float = WINDOW_FRACTION, min_window: int = MIN_WINDOW) -> tuple[int, int, int]:
    """The windows :func:`late_divergence` cuts a run of ``steps`` optimiser steps into.

    Returns
    -------
    width, count, offset : int
        ``count`` windows of ``width = max(min_window, round(window_fraction · steps))`` steps;
        the first ``offset`` steps are left out, so that the last window ends at the last step.
    """
    width = max(int(min_window), int(round(window_fraction * steps)))
    count = steps // width
    return width, count, steps - count * width


def loss_limit(window: np.ndarray, tolerance: float) -> tuple[float, float]:
    """The per-step spread of a window of losses (its median absolute deviation) and the highest
    mean loss within ``tolerance`` spreads above the window's mean (the spread floored at 1e-6 of
    that mean's size, so that a constant window still allows rounding)."""
    mean = float(window.mean())
    spread = float(np.median(np.abs(window - np.median(window))))
    return spread, mean + tolerance * max(spread, 1e-6 * max(1.0, abs(mean)))


def late_divergence(losses, window_fraction: float = WINDOW_FRACTION, min_window: int = MIN_WINDOW,
                    tolerance: float = 20.0) -> str | None:
    """Describe a blow-up of the loss at the end of training, or return None.

    The losses are cut into consecutive windows of ``w = max(min_window, window_fraction · n)``
    steps.  The run has diverged when the mean of the last window exceeds the lowest mean of
    the earlier windows by more than ``tolerance`` times the per-step spread in that best window
    (the median absolute deviation of its losses from their median), or is not finite.  The
    spread of single steps is far wider than the noise of a window's mean, so the ordinary ups
    and downs of a run and a loss that levels off do not count.

    Parameters
    ----------
    losses : sequence of float, shape (n,)
        The loss of every optimiser step, in order (``LDMFilter.loss_history_``).
    window_fraction : float
        Window length as a fraction of the run.
    min_window : int
        Shortest window; runs shorter than four windows are never called diverged.
    tolerance : float
        How many per-step spreads above the best window's mean the last window's mean may lie.

    Returns
    -------
    str or None
        What happened (the windows' means, and the first step of the first window past the
        limit), for a warning; None when the run did not diverge.
    """
    losses = np.asarray(losses, dtype=np.float64)
    width, count, offset = loss_windows(losses.size, window_fraction, min_window)
    if count < 4:
        return None
    windows = losses[offset:].reshape(count, width)
    means = windows.mean(axis=1)
    earlier = np.where(np.isfinite(means[:-1]), means[:-1], np.inf)
    best = int(np.argmin(earlier))
    if not np.isfinite(earlier[best]):
        return None  # no finite window to compare with
    spread, limit = loss_limit(windows[best], tolerance)
    last = means[-1]
    if np.isfinite(last) and last <= limit:
        return None
    above = best + 1 + int(np.argmax(~(means[best + 1:] <= limit)))  # the first window past the limit (NaN counts)
    return (
        f"the training loss blew up and stayed up: its mean over the last {width} optimiser steps is {last:.4g}, "
        f"against {means[best]:.4g} over steps {offset + best * width}–{offset + (best + 1) * width - 1} "
        f"(per-step spread {spread:.3g} there); it first went past {limit:.4g} in the window from step "
        f"{offset + above * width}"
    )


class BestWindowWeights:
    """A copy of the weights at the end of the loss window with the lowest mean so far.

    The windows are those :func:`late_divergence` judges a run of ``planned_steps`` steps by, so
    when a run that ends as planned has diverged, the copy holds the weights at the end of the
    very window the check compared the last one with.  Only windows whose losses are all finite
    count.  The copy lives on the CPU, one model's weights at most.

    Parameters
    ----------
    planned_steps : int or float
        Optimiser steps the run will take (``Trainer.estimated_stepping_batches``); not finite:
        no windows, nothing is kept.
    """

    def __init__(self, planned_steps):
        finite = math.isfinite(planned_steps)
        self.width, self.count, self.offset = loss_windows(int(planned_steps)) if finite else (0, 0, 0)
        self.mean, self.steps, self.weights = math.inf, None, None

    def observe(self, losses: list, module: torch.nn.Module) -> None:
        """After an optimiser step: when ``losses`` (every step's, in order) just closed a window
        with a lower mean than any before, copy ``module``'s weights."""
        done = len(losses) - self.offset
        if self.width == 0 or done <= 0 or done % self.width or done // self.width > self.count:
            return
        window = np.asarray(losses[-self.width:], dtype=np.float64)
        mean = float(window.mean())
        if np.isfinite(window).all() and mean < self.mean:
            self.mean, self.steps = mean, (len(losses) - self.width, len(losses) - 1)
            self.weights = {name: value.detach().to("cpu", copy=True) for name, value in module.state_dict().items()}

    def restore(self, module: torch.nn.Module) -> str:
        """Load the kept weights into ``module``; say which they are."""
        module.load_state_dict(self.weights)
        first, last = self.steps
        return f"the weights after optimiser step {last}, the end of the steps {first}–{last} (mean loss {self.mean:.4g})"

    def state_dict(self) -> dict:
        """For checkpoints: the window grid and the kept copy."""
        return {"grid": [self.width, self.count, self.offset], "mean": self.mean,
                "steps": None if self.steps is None else list(self.steps), "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        """Take over a checkpoint's copy if it was kept on the same window grid (a resumed run
        with more epochs has another grid: it keeps only the windows it closes itself)."""
        if list(state["grid"]) != [self.width, self.count, self.offset]:
            return
        self.mean, self.weights = float(state["mean"]), state["weights"]
        self.steps = None if state["steps"] is None else tuple(state["steps"])
