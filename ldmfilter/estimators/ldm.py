"""``LDMFilter``: an encoder and a Kalman predictor trained by predictive latent distribution matching."""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ..gaussian import MOMENT_RULES, kalman_forecast, nonlinear_forecast, nonlinear_smoother
from ..gaussian.blocks import any_in_blocks
from ..io import InputSchema, as_sequences, to_sequences
from ..io.controls import control_names_of
from ..io.disk_array import is_out_of_core
from ..io.disk_input import open_disk
from ..nn import (
    DYNAMICS,
    OBSERVATIONS,
    RESIDUAL_ACTIVATIONS,
    ClampObservation,
    ConvEncoder,
    LatentKalmanFilter,
    LatentRNNModel,
    MLPEncoder,
    MLPObservation,
    RNNPredictor,
    make_noise,
)
from ..nn.normalization import Standardizer
from ..training.divergence import TrainingDivergedWarning, late_divergence
from ..training.objectives import OBJECTIVES
from ..training.schedules import DEFAULT_LR_MULTIPLIERS
from .base import StateSpaceEstimator
from .cpu import cpu_settings
from .ldm_disk import check_disk_frames, check_disk_options, disk_normalizer, fit_disk_readouts
from .persistence import save_model
from .restarts import fit_restarts
from .stream import FilterStream

if TYPE_CHECKING:
    from ..training.module import ProbeData

__all__ = ["LDMFilter"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_EPOCHS = 20  # the paper's
MIN_UPDATES = 1000  # optimiser steps that max_epochs=None guarantees
AUTO_WINDOW = 64


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


class LDMFilter(StateSpaceEstimator):
    """Nonlinear Bayesian filter for high-dimensional series, trained without a decoder.

    An encoder maps each observation to a latent ``z_t``; a Gaussian state-space model over a
    state ``h_t`` (``z_t = [I 0] h_t + noise``) filters the latents without sampling.  The pair
    is trained with the predictive LDM objective (METHOD.md §4).  The defaults are the paper's
    figure-8 recipe (a linear transition, filtered in closed form): ``LDMFilter().fit(X)`` on
    such data reproduces it.  ``dynamics="mlp"`` adds a bounded MLP to the transition,
    ``h_t = A (h − b) + b + B u_t + g_θ(h, u_t)``, whose predicted beliefs come from the
    deterministic moment rule ``moments`` (the update stays the exact Kalman update).

    Time steps: an irregular time index is put on its regular grid (see ``fit``); a gap of
    ``k`` grid steps is ``k`` applications of the transition with no update in between (the
    controls holding their last value), so ``Δt`` enters the transition through its number of
    steps and the belief's covariance grows over a gap as it would over ``k`` unobserved steps.

    Parameters
    ----------
    state_dim : int
        ``S``, the dimension of the filter's state.
    latent_dim : int
        ``L ≤ S``, the encoder's output dimension.
    encoder : {"mlp", "conv"}
        MLP on flattened observations (any shape), or a small conv net on ``(H, W)`` /
        ``(C, H, W)`` frames.
    hidden : tuple of int
        Hidden widths of the MLP encoder (and of the noise head).
    noise : {"fixed", "learned", "input", "input_absolute", "input_full"}
        Pseudo-observation noise ``R``: ``exp(s) I``, ``exp(s) diag(exp(r))``, or input-dependent
        ``exp(s) diag(g(x_t))`` (a noise head on the frame; ``s`` is also the scale of ``Q``), or
        the paper's absolute head ``diag(g(x_t))``, or a full (correlated) ``exp(s) R(x_t)`` (see
        :class:`~ldmfilter.nn.InputDependentNoise` for when each did better).
    objective : {"stopgrad", "knn", "kde", "logdet"}
        Stop-gradient predictive loss, or the F_MI form with that entropy estimator.
    predictor : {"kalman", "rnn"}
        The Kalman predictor, or the paper's LSTM Gaussian predictor (identifiability
        experiment; it has no state beliefs, so ``filter``/``forecast`` are unavailable).
    dynamics : {"linear", "mlp"}
        Transition of the Kalman predictor: the paper's linear one, or linear plus a bounded
        tanh-MLP residual ``g_θ`` (output layer initialised at zero, so training starts from
        the linear model; see :class:`~ldmfilter.nn.MLPDynamics`).
    moments : {"linearize", "unscented", "cubature"}
        Moment rule of ``dynamics="mlp"``: first-order (EKF), unscented (2S + 1 points) or
        cubature (2S points).  Filtering, smoothing and forecasting all use it.
    dynamics_hidden : tuple of int
        Hidden widths of ``g_θ``.
    dynamics_activation : {"tanh", "localized"}
        Hidden units of ``g_θ``: tanh, or ``x·exp(−x²/2)``, which fades away from the data, so
        that far from them only the linear part acts (see :class:`~ldmfilter.nn.MLPDynamics`).
    observation : {"linear", "mlp", "clamp"}
        Map ``c(h)`` from the state to the latents: the paper's ``z = D h`` (``D = [I 0]``);
        ``z = D h + g_φ(h)`` with a tanh MLP ``g_φ`` that starts at zero
        (:class:`~ldmfilter.nn.MLPObservation`); or each latent its state coordinate between two
        learned bounds, flat beyond (:class:`~ldmfilter.nn.ClampObservation`).
        Kalman predictor only.  The nonlinear maps are meant for frames that can pin a latent
        while the state moves on (a blob clamped to the image border): the state can then stay an
        affine image of the position.  ``"clamp"`` cannot warp the seen range, ``"mlp"`` can, and
        then a linear probe of the state is no longer assured.  Beyond the clamp's band only the
        transition holds the state, and a transition that pushes far from the data can carry it
        away for good (one wobbly seed in seven with tanh units; ``docs/nonlinear.md``).  The
        update conditions on the moments that ``moments`` gives for ``c(h)`` instead of being the
        exact Kalman update, and training records it with autograd (with ``"mlp"`` a step took
        2.2–2.6× as long as with the linear map and the first-order rule's hand-written reverse
        pass, ``benchmarks/results/nonlinear.md``).  ``stream`` does not support them.
    observation_hidden : tuple of int
        Hidden widths of ``g_φ``.
    max_epochs : int or None
        Passes over the training windows.  None: 20, or more when the data are few, so that
        training makes at least ``MIN_UPDATES`` optimiser steps.
    batch_size : int
        Windows per optimiser step.  Under distributed training it stays the global batch, split
        evenly across the processes (so it must be a multiple of their number), and ``N``
        processes take the same steps as one.
    learning_rate : float
        Encoder learning rate (the paper: 0.005 · 8 / 256); the predictor (and the residual MLP
        of ``dynamics="mlp"``, and a nonlinear ``observation`` map) learns ×100 faster, a noise
        head ×1 (``lr_multipliers`` overrides, by group: ``encoder``, ``predictor``,
        ``residual``, ``noise_head``, ``observation``).
    weight_decay : float
    lr_multipliers : dict, optional
    schedule : {"step", "linear", "cosine", "constant"}
    entropy_weight : float
        ``λ`` of the F_MI form.
    multistep : int
        Steps ahead the objective scores (Kalman predictor only).  1: the paper's one-step
        objective.  ``K > 1`` adds the mean over ``k = 2, …, K`` of the same score for the
        k-step predictions (the transition and its moment rule run from the filtered beliefs
        without updates, as a forecast does), weighted like the one-step term
        (:func:`~ldmfilter.training.objectives.multistep_loss`).  The one-step objective does
        not see how errors of a learned transition add up over several steps, so its long
        forecasts can be overconfident; this term lets training see them.  It can leave the
        intervals too wide instead (one ``Q`` serves every horizon; measured effects in
        ``docs/nonlinear.md``).  Must be below the training window's length.
    window : int, "auto" or None
        Train on windows of this many steps; None: whole sequences; ``"auto"``: whole sequences
        when there are at least ``batch_size`` series, else overlapping windows of
        ``AUTO_WINDOW`` steps (one long DataFrame gives many training windows).
    normalize : {"auto", "feature", "global", "none"}
        Input standardisation, stored with the model.
    dtype : {"float32", "float64"}
    random_state : int
    n_init : int
        Training runs (restarts) ``fit`` makes, with ``random_state + 100·k`` for run ``k``; 1 or
        at least 3.  Runs whose final loss (the mean of their last 5% of steps) lies more than 5
        per-step spreads above the best run's are set aside: they did not learn what the others
        did (:func:`~ldmfilter.estimators.restarts.comparable_runs`).  Of the rest the model
        keeps the run whose filtered state shares the most affine signal with the others' (the
        mean of the ``latent_dim`` largest canonical correlations,
        :func:`~ldmfilter.estimators.restarts.restart_agreement`): a run whose encoder warped
        the signal agrees with no other, while runs that reached the solution the objective
        identifies up to an affine map agree with each other.  With fewer than 3 such runs, the
        lowest final loss.  It costs ``n_init`` fits.  Kalman predictor, in-memory data, no
        checkpoints.  ``restart_seeds_``, ``restart_losses_``, ``restart_scores_`` and
        ``restart_index_`` record the choice.
    num_threads : int or None
        Intra-op threads of torch during ``fit``/``filter`` (restored afterwards).  The filter's
        many tiny matrix operations run fastest on one thread; on a busy machine extra threads
        can make them orders of magnitude slower.  None keeps torch's setting (better for large
        encoders, whose matrix products do use several cores).  Denormal floats are flushed to
        zero during these calls (see ``_cpu_settings``).
    verbose : bool
        Progress bar and model summary.
    on_divergence : {"restore", "keep"}
        What ``fit`` does when training blows up.  ``fit`` keeps a copy of the weights at the end
        of the window of steps (5% of the run) with the lowest mean loss so far.  ``"restore"``:
        when an optimiser step makes the transition NaN or inf, training stops and the model
        takes that copy; when the loss of the last window ends far above its best
        (:func:`~ldmfilter.training.late_divergence`), the model takes it too.  Either way ``fit``
        warns with a :class:`~ldmfilter.training.TrainingDivergedWarning` that says so (with no
        window finished yet, the NaN case raises).  ``"keep"``: NaN or inf raises
        ``FloatingPointError``, and a late blow-up keeps the last weights, with the warning.
        ``loss_history_`` holds every step's loss either way.
    trainer_kwargs : dict, optional
        Merged into the Lightning Trainer's arguments.  ``{"strategy": "ddp", "devices": N,
        "num_nodes": M}`` trains on ``N × M`` processes (gloo on CPU, NCCL on GPU) when every
        process runs the script (``python script.py`` launches the other local processes itself;
        ``torchrun`` or ``srun`` for several nodes): see ``docs/distributed.md``.  Spawned or
        forked strategies (``ddp_spawn``, ``ddp_notebook``) are refused.
    """

    def __init__(
        self,
        state_dim: int = 10,
        latent_dim: int = 5,
        encoder: str = "mlp",
        hidden=(100,),
        noise: str = "fixed",
        objective: str = "stopgrad",
        predictor: str = "kalman",
        dynamics: str = "linear",
        moments: str = "linearize",
        dynamics_hidden=(64,),
        dynamics_activation: str = "tanh",
        observation: str = "linear",
        observation_hidden=(64,),
        max_epochs: int | None = None,
        batch_size: int = 8,
        learning_rate: float = 0.005 * 8 / 256,
        weight_decay: float = 1e-4,
        lr_multipliers: dict | None = None,
        schedule: str = "step",
        entropy_weight: float = 1.0,
        multistep: int = 1,
        window: int | str | None = "auto",
        normalize: str = "auto",
        dtype: str = "float32",
        random_state: int = 0,
        n_init: int = 1,
        num_threads: int | None = 1,
        verbose: bool = True,
        on_divergence: str = "restore",
        trainer_kwargs: dict | None = None,
    ):
        self.state_dim, self.latent_dim, self.encoder, self.hidden = state_dim, latent_dim, encoder, tuple(hidden)
        self.noise, self.objective, self.predictor = noise, objective, predictor
        self.dynamics, self.moments, self.dynamics_hidden = dynamics, moments, tuple(dynamics_hidden)
        self.dynamics_activation = dynamics_activation
        self.observation, self.observation_hidden = observation, tuple(observation_hidden)
        self.max_epochs, self.batch_size, self.learning_rate = max_epochs, batch_size, learning_rate
        self.weight_decay, self.lr_multipliers, self.schedule = weight_decay, lr_multipliers, schedule
        self.entropy_weight, self.window, self.normalize, self.dtype = entropy_weight, window, normalize, dtype
        self.multistep = multistep
        self.random_state, self.n_init, self.num_threads = random_state, n_init, num_threads
        self.verbose, self.on_divergence, self.trainer_kwargs = verbose, on_divergence, trainer_kwargs

    # ------------------------------------------------------------------ construction
    def _check_params(self) -> None:
        for name, options in (
            ("encoder", ("mlp", "conv")), ("objective", tuple(OBJECTIVES)), ("predictor", ("kalman", "rnn")),
            ("dynamics", tuple(sorted(DYNAMICS))), ("moments", tuple(sorted(MOMENT_RULES))), ("dtype", tuple(sorted(DTYPES))),
            ("dynamics_activation", tuple(sorted(RESIDUAL_ACTIVATIONS))), ("observation", OBSERVATIONS),
            ("on_divergence", ("restore", "keep")),
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in options:
                raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
        if not self.dynamics_hidden or not all(_is_int(w) and w >= 1 for w in self.dynamics_hidden):
            raise ValueError(f"dynamics_hidden must be one or more positive integer widths, got {self.dynamics_hidden!r}")
        if not self.observation_hidden or not all(_is_int(w) and w >= 1 for w in self.observation_hidden):
            raise ValueError(f"observation_hidden must be one or more positive integer widths, got {self.observation_hidden!r}")
        if self.observation != "linear" and self.predictor != "kalman":
            raise ValueError(f"observation={self.observation!r} needs the Kalman predictor, got predictor={self.predictor!r}")
        if not all(_is_int(w) and w >= 1 for w in self.hidden):
            raise ValueError(f"hidden must be positive integer widths, got {self.hidden!r}")
        if self.window is not None and self.window != "auto" and not _is_int(self.window):
            raise ValueError(f"window must be an integer, 'auto' or None, got {self.window!r}")
        for name in ("max_epochs", "batch_size", "latent_dim", "state_dim", "multistep", "n_init"):
            value = getattr(self, name)
            if name == "max_epochs" and value is None:
                continue
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_init == 2:
            raise ValueError("n_init must be 1 or at least 3: two runs that disagree leave no majority to pick by")
        if self.n_init > 1 and self.predictor != "kalman":
            raise ValueError(f"n_init > 1 needs the Kalman predictor (a filtered state to compare), got predictor={self.predictor!r}")
        if self.multistep > 1 and self.predictor != "kalman":
            raise ValueError(f"multistep > 1 needs the Kalman predictor (a state belief to forecast), got predictor={self.predictor!r}")
        if self.predictor == "kalman" and self.latent_dim > self.state_dim:
            raise ValueError(f"latent_dim ({self.latent_dim}) cannot exceed state_dim ({self.state_dim})")
        for name in ("learning_rate", "weight_decay", "entropy_weight"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not _is_int(self.random_state):
            raise ValueError(f"random_state must be an integer, got {self.random_state!r}")
        if self.num_threads is not None and (not _is_int(self.num_threads) or self.num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer or None, got {self.num_threads!r}")
        if self.lr_multipliers is not None:
            if not isinstance(self.lr_multipliers, dict):
                raise TypeError(f"lr_multipliers must be a dict of group -> multiplier, got {type(self.lr_multipliers).__name__}")
            unknown = sorted(str(k) for k in self.lr_multipliers if k not in DEFAULT_LR_MULTIPLIERS)
            bad = {k: v for k, v in self.lr_multipliers.items() if not _is_real(v) or not math.isfinite(v) or v < 0}
            if unknown or bad:
                raise ValueError(
                    f"lr_multipliers must map groups {sorted(DEFAULT_LR_MULTIPLIERS)} to finite numbers >= 0; "
                    f"unknown groups {unknown}, bad values {bad}"
                )
        if self.trainer_kwargs is not None and (
            not isinstance(self.trainer_kwargs, dict) or not all(isinstance(k, str) for k in self.trainer_kwargs)
        ):
            raise TypeError(f"trainer_kwargs must be a dict of Lightning Trainer arguments, got {self.trainer_kwargs!r}")

    def _build_model(self, obs_shape: tuple, normalizer: Standardizer, control_dim: int = 0) -> torch.nn.Module:
        if self.encoder == "mlp":
            encoder = MLPEncoder(obs_shape, self.latent_dim, self.hidden)
        else:
            encoder = ConvEncoder(obs_shape, self.latent_dim)
        if self.predictor == "rnn":
            if control_dim:
                raise ValueError("the RNN predictor takes no control inputs; use predictor='kalman'")
            return LatentRNNModel(encoder, RNNPredictor(self.latent_dim), normalizer)
        generator = torch.Generator().manual_seed(self.random_state)
        options = {"hidden": self.dynamics_hidden, "activation": self.dynamics_activation} if self.dynamics == "mlp" else {}
        dynamics = DYNAMICS[self.dynamics](self.state_dim, self.latent_dim, generator, control_dim, **options)
        noise = make_noise(self.noise, obs_shape, self.latent_dim, self.hidden)
        observation = None
        if self.observation == "mlp":
            observation = MLPObservation(self.state_dim, self.latent_dim, self.observation_hidden, generator)
        elif self.observation == "clamp":
            observation = ClampObservation(self.state_dim, self.latent_dim)
        return LatentKalmanFilter(encoder, dynamics, noise, normalizer, moments=self.moments, observation=observation)

    def _training_plan(self, n_series: int, steps: int) -> tuple[int | None, int | None, int]:
        """Window length, stride and number of epochs for data of ``n_series`` × ``steps``."""
        window, stride = self.window, None
        if window == "auto":
            window = None if n_series >= self.batch_size else min(steps, AUTO_WINDOW)
            stride = None if window is None else max(1, window // 4)
        if self.max_epochs is not None:
            return window, stride, int(self.max_epochs)
        windows = n_series * (1 if window is None else len(range(0, steps - window + 1, stride or window)))
        batches = math.ceil(windows / self.batch_size)
        return window, stride, max(DEFAULT_EPOCHS, math.ceil(MIN_UPDATES / batches))

    # ------------------------------------------------------------------ conversion
    def _to_tensor(self, values: np.ndarray, name: str = "X") -> torch.Tensor:
        """``values`` in the model's dtype; ValueError where a finite value does not fit in it."""
        values = np.asarray(values)
        tensor = torch.as_tensor(values, dtype=DTYPES[self.dtype])
        if any_in_blocks(tensor, torch.isinf):  # the input layer refused inf: these overflowed in the cast
            largest = float(np.nanmax(np.abs(values)))
            raise ValueError(
                f"{name} has values of magnitude {largest:.3g}, beyond the range of the model's dtype {self.dtype}; "
                "rescale them or use LDMFilter(dtype='float64')"
            )
        return tensor

    def _tensors(self, values: np.ndarray, observed: np.ndarray):
        """Model-dtype tensor (n, T, *obs_shape) and frame mask (n, T), or None when all frames are present."""
        mask = None if observed.all() else torch.as_tensor(observed)
        return self._to_tensor(values), mask

    def _controls_tensor(self, controls: np.ndarray | None) -> torch.Tensor | None:
        return None if controls is None else self._to_tensor(controls, "controls")

    def _prepare(self, X, name: str = "X"):
        """Validated input on its grid, as tensors: (sequences, x, mask); control columns of ``X`` are dropped."""
        X, _ = self._split_controls(X, None, name)
        sequences = self._sequences(X, name)
        return (sequences, *self._tensors(sequences.values, sequences.observed))

    @property
    def obs_shape_(self) -> tuple:
        """Shape of one observation as the model sees it (video: ``(C, H, W)`` or ``(H, W)``)."""
        self._check_fitted()
        return self.schema_.obs_shape

    def _check_kalman(self, what: str) -> None:
        if self.predictor != "kalman":
            raise ValueError(f"{what} needs predictor='kalman'; the RNN predictor keeps no state beliefs")

    def _restore(self, schema: InputSchema, state_dict: dict, readouts: dict, target_names) -> None:
        """Rebuild the fitted model from a saved state (see :mod:`.persistence`)."""
        self._check_params()
        self.schema_ = schema
        placeholder = Standardizer(torch.zeros(schema.obs_shape), torch.ones(schema.obs_shape))
        control_dim = len(schema.control_names or ())
        self.model_ = self._build_model(schema.obs_shape, placeholder, control_dim).to(DTYPES[self.dtype])
        self.model_.load_state_dict(state_dict, strict=True)
        self.model_.eval()
        self.readouts_ = readouts
        if target_names is not None:
            self.target_names_ = tuple(target_names)

    @staticmethod
    def _upgrade_params(params: dict, version: int) -> dict:
        """Hyper-parameters of a model file of format ``version`` in today's meaning (see :mod:`.persistence`)."""
        if version <= 2 and params.get("noise") == "input":  # the head gave R_t itself, not relative to exp(s)
            params = {**params, "noise": "input_absolute"}
        return params

    def save(self, path) -> Path:
        """Write the fitted model to one file (atomically); read it back with ``ldmfilter.load``."""
        return save_model(self, path)

    # ------------------------------------------------------------------ public API
    @cpu_settings
    def fit(
        self,
        X,
        targets=None,
        epoch_data: Callable[[int], np.ndarray] | None = None,
        probe: tuple | None = None,
        readout: str = "linear",
        controls=None,
        checkpoint_dir=None,
        resume_from=None,
    ) -> "LDMFilter":
        """Train the encoder and the predictor on sequences, then fit the read-outs.

        Parameters
        ----------
        X : array-like, DataFrame(s) or DataArray
            numpy ``(T, D)``, ``(n_series, T, *obs_shape)`` or a list of series; a DataFrame
            (rows = time, columns = channels), a list of them or a long table indexed by
            (series, time); an xarray DataArray with a ``time`` dim.  NaN marks missing values;
            an irregular time index puts the series on its regular grid with missing steps.
            A DataArray whose values are not in memory (dask-backed, e.g. ``xr.open_zarr(path)[name]``,
            or lazily read from a file) is never loaded whole: it is scanned once, training windows
            are read from disk when served, and the read-outs are fitted slab by slab (see
            ``docs/out_of_core.md``; not with ``epoch_data`` or ``readout="mlp"``).
        targets : like ``X``, optional
            Quantities to read out of the state (e.g. positions): a read-out is fitted on the
            detached filtered states, and ``filter``/``smooth``/``forecast`` return their beliefs.
        epoch_data : callable, optional
            ``epoch ↦ array`` shaped like ``X`` on its grid, the training data of each epoch ≥ 1
            (e.g. the same clean frames with fresh noise, as in the paper).  ``X`` is epoch 0 and
            sets the normalisation.
        probe : tuple, optional
            ``(X_train, y_train, X_test, y_test)`` arrays: a linear probe from filtered states to
            targets ``y`` (n, T, D) is scored after every epoch (no gradients); the history is
            kept in ``probe_history_`` as ``(epoch, step, seconds, R²)``.
        readout : {"linear", "mlp"}
            Kind of the read-outs to observations and targets.
        controls : array-like, DataFrame(s), DataArray, or names, optional
            Control inputs ``u_t`` of the transition (Kalman predictor only): laid out like
            ``X`` with ``(T, U)`` per series, or the names of ``X``'s DataFrame columns / channel
            coordinate that are controls (split off the observations).  ``u_t`` drives the
            transition into step ``t`` (row 0 is unused); on an irregular index a control holds
            its last value over missing grid steps.  ``filter``/``smooth``/``forecast`` then take
            controls too, and ``forecast`` the future ones.
        checkpoint_dir : str or Path, optional
            Write a training checkpoint to ``checkpoint_dir/last.ckpt`` at the end of every
            epoch (atomically: an interruption while writing keeps the previous one).  It holds
            the weights, the optimiser and learning-rate schedule, the loss and probe histories,
            the random generators of the shuffling and of the kNN objective, and the training
            plan.  Nothing is written without it.
        resume_from : str or Path, optional
            A checkpoint file, or a ``checkpoint_dir``: continue that interrupted fit from the
            end of its last finished epoch.  Given the same hyper-parameters, ``X`` (and
            ``epoch_data``, ``controls``, ``probe``), the result equals the uninterrupted fit's
            (weights, ``loss_history_``, ``probe_history_``), up to float rounding.  A larger
            ``max_epochs`` continues training (the learning-rate schedule is then the new
            length's from there on).  The checkpoint is read with ``weights_only=True``.  Pass
            ``checkpoint_dir`` too to keep checkpointing the resumed run.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Invalid hyper-parameters or data; a ``resume_from`` checkpoint that is unreadable or
            written by another model, other data or another training plan.
        FileNotFoundError
            No checkpoint at ``resume_from``.
        FloatingPointError
            The transition matrix became NaN or inf during training (the step and its loss are
            named), with ``on_divergence="keep"`` or before the first window of steps finished.

        Warns
        -----
        TrainingDivergedWarning
            Training blew up (see ``on_divergence``): the transition became NaN or inf, or the
            loss of the last steps lies far above its best (``late_divergence``).  The message
            says which weights the model holds.
        """
        # Lightning (175 MiB, seconds to import) is needed to train only: a loaded model filters without it
        import lightning as L

        from ..training.checkpoints import check_resume
        from ..training.data import SequenceDataModule, SequenceWindows
        from ..training.disk_windows import DiskWindows
        from ..training.module import LDMTrainingModule
        from .lightning_run import build_trainer, quiet_lightning

        self._check_params()
        if self.n_init > 1:
            if is_out_of_core(X):
                raise ValueError("n_init > 1 needs data in memory: the restarts are compared on their filtered states")
            return fit_restarts(self, X, controls, dict(targets=targets, epoch_data=epoch_data, probe=probe, readout=readout,
                                                        checkpoint_dir=checkpoint_dir, resume_from=resume_from))
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be a str or os.PathLike, got {type(checkpoint_dir).__name__}")
        if checkpoint_dir is not None and Path(checkpoint_dir).is_file():
            raise ValueError(f"checkpoint_dir {str(checkpoint_dir)!r} is a file; give a folder")
        X, controls = self._split_controls(X, controls)
        on_disk = is_out_of_core(X)
        if on_disk:
            check_disk_options(epoch_data, readout, self.predictor)
            sequences, schema = open_disk(X, "X", min_steps=2, cast=np.dtype(self.dtype))
            check_disk_frames(sequences, self.predictor)
        else:
            sequences, schema = to_sequences(X, "X", None, min_steps=2)
        L.seed_everything(self.random_state, workers=True, verbose=False)
        self.schema_ = schema
        self.readouts_ = {}
        self.__dict__.pop("forecast_scale_", None)  # a calibration of the previous fit
        u = None
        if controls is not None:
            if self.predictor != "kalman":
                raise ValueError("controls need predictor='kalman'; the RNN predictor takes no inputs")
            names = self._control_schema_names(controls, sequences)
            self.schema_ = schema = dataclasses.replace(schema, control_names=names)
            u = self._to_tensor(self._grid_controls(controls, sequences), "controls")
        mask = torch.as_tensor(sequences.observed)
        if on_disk:
            shape = sequences.shape
            normalizer = disk_normalizer(sequences, len(schema.obs_shape), self.normalize, DTYPES[self.dtype], self.dtype)
        else:
            x = self._to_tensor(sequences.values)
            shape = x.shape
            normalizer = Standardizer.fit(x, len(schema.obs_shape), self.normalize, mask)
        control_dim = 0 if u is None else u.shape[-1]
        self.model_ = self._build_model(schema.obs_shape, normalizer, control_dim).to(DTYPES[self.dtype])

        def checked(array) -> tuple:
            vals, obs, _ = as_sequences(array, "epoch_data(epoch)", schema.obs_shape)
            return self._to_tensor(vals, "epoch_data(epoch)"), torch.as_tensor(obs)

        window, stride, epochs = self._training_plan(shape[0], shape[1])
        length = shape[1] if window is None else window
        if self.multistep >= length:
            raise ValueError(f"multistep ({self.multistep}) must be below the training window's length ({length} steps)")
        if on_disk:
            windows = DiskWindows(sequences.array.read_window, mask, window, stride, DTYPES[self.dtype], u)
            data = SequenceDataModule(None, batch_size=self.batch_size, seed=self.random_state, windows=windows)
        else:
            windows = SequenceWindows(x, mask, window, stride)
            data = SequenceDataModule(
                x,
                mask,
                self.batch_size,
                window,
                stride,
                epoch_data=None if epoch_data is None else (lambda epoch: checked(epoch_data(epoch))),
                seed=self.random_state,
                controls=u,
            )
        self.module_ = LDMTrainingModule(
            self.model_,
            objective=self.objective,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            lr_multipliers=self.lr_multipliers,
            schedule=self.schedule,
            entropy_weight=self.entropy_weight,
            multistep=self.multistep,
            probe=self._probe_data(probe, u is not None),
            seed=self.random_state,
            run={"data": list(shape), "windows": len(windows), "window": window,
                 "stride": stride, "batch_size": int(self.batch_size), "seed": int(self.random_state), "epochs": epochs},
            on_divergence="restore" if self.on_divergence == "restore" else "raise",
        )
        resume = None if resume_from is None else check_resume(resume_from, self.module_, self.module_.run)
        with quiet_lightning(self.verbose):
            trainer = build_trainer(self.trainer_kwargs, self.verbose, self.batch_size, epochs, epoch_data is not None, checkpoint_dir)
            options = {}
            if resume is not None:  # check_resume has read it with weights_only=True already (older Lightning lacks the option)
                options = {"ckpt_path": resume}
                if "weights_only" in inspect.signature(trainer.fit).parameters:
                    options["weights_only"] = True
            trainer.fit(self.module_, datamodule=data, **options)
        self.loss_history_ = list(self.module_.loss_history)
        self.training_seconds_ = self.module_.training_seconds
        self._fall_back_if_diverged()
        self.model_ = self.module_.model.cpu().eval()
        self.model_.zero_grad(set_to_none=True)
        self.probe_history_ = [] if probe is None else list(self.module_.probe.history)
        if self.predictor == "kalman" and on_disk:
            fit_disk_readouts(self, sequences, u, targets)
        elif self.predictor == "kalman":
            grid = self._filter_grid(sequences.values, sequences.observed, None if u is None else u.numpy())
            self._fit_readout("observations", grid, sequences.values, readout, {})
            if targets is not None:
                values, self.target_names_ = self._targets(targets, sequences)
                self._fit_readout("targets", grid, values, readout, {})
        return self

    def _fall_back_if_diverged(self) -> None:
        """Warn when training blew up, after loading the best window's weights if ``on_divergence="restore"``."""
        module, advice = self.module_, ("Smaller learning rates (learning_rate, lr_multipliers) or gradient clipping "
                                        "(trainer_kwargs={'gradient_clip_val': 1.0}) may avoid it; loss_history_ holds "
                                        "every step's loss")
        if module.stopped_because is not None:  # a NaN transition; the module has restored the weights already
            message = module.stopped_because
        else:
            diverged = late_divergence(self.loss_history_)
            if diverged is None:
                return
            best = module.best_weights
            if self.on_divergence == "restore" and best is not None and best.weights is not None:
                message = f"{diverged}.  The model holds {best.restore(module.model)}.  {advice}"
            else:
                message = f"{diverged}.  The model holds the weights of the last step.  {advice}"
        warnings.warn(message, TrainingDivergedWarning, stacklevel=4)  # past this, fit and cpu_settings, to the caller

    def _control_schema_names(self, controls, sequences) -> tuple[str, ...]:
        """Names of the controls: given names, the controls' own channel names, or ``control_k``."""
        names = control_names_of(controls)
        if names is None:
            _, names = self._targets(controls, sequences, "controls", prefix="control")
        return tuple(str(n) for n in names)

    def _probe_data(self, probe, with_controls: bool = False) -> ProbeData | None:
        from ..training.module import ProbeData

        if probe is None:
            return None
        if with_controls:
            raise ValueError("probe is not available with controls: score a probe on filter(X, controls=U) after fit")
        train_x, train_y, test_x, test_y = probe
        (_, x_train, mask_train), (_, x_test, mask_test) = self._prepare(train_x, "probe X_train"), self._prepare(test_x, "probe X_test")
        return ProbeData(x_train, torch.tensor(np.asarray(train_y)), x_test, torch.tensor(np.asarray(test_y)), mask_train, mask_test)

    # ------------------------------------------------------------------ state-space hooks
    @cpu_settings
    @torch.no_grad()
    def _filter_grid(self, values: np.ndarray, observed: np.ndarray, controls: np.ndarray | None = None):
        self._check_kalman("filter")
        x, mask = self._tensors(values, observed)
        return self.model_(x, mask, controls=self._controls_tensor(controls)).filtered

    def _transition(self):
        """``A``, ``Q`` and the offset ``c`` (None when the offset depends on control inputs)."""
        dyn = self.model_.dynamics
        if dyn.nonlinear:
            raise ValueError("this model's transition is nonlinear (dynamics='mlp'), not a matrix")
        with torch.no_grad():
            return dyn.transition_matrix(), dyn.transition_cov(), None if dyn.control_dim else dyn.transition_offset()

    @cpu_settings
    @torch.no_grad()
    def _smooth_grid(self, grid, controls: np.ndarray | None = None):
        dyn = self.model_.dynamics
        if not dyn.nonlinear:  # RTS needs A and Q only: offsets and controls are in the stored predictions
            return super()._smooth_grid(grid)
        smoothed = nonlinear_smoother(grid, dyn, dyn.transition_cov(), self.moments, transition_inputs=self._controls_tensor(controls))
        return smoothed.smoothed_mean, smoothed.smoothed_cov

    @cpu_settings
    @torch.no_grad()
    def _forecast_grid(self, mean, cov, horizon: int, controls: np.ndarray | None = None):
        dyn, u = self.model_.dynamics, self._controls_tensor(controls)
        if dyn.nonlinear:
            return nonlinear_forecast(mean, cov, dyn, dyn.transition_cov(), horizon, self.moments, transition_inputs=u)
        A, Q, _ = self._transition()
        return kalman_forecast(mean, cov, A, Q, horizon, dyn.transition_offset(u))

    def calibrate_forecast(self, X, horizon: int, Y=None, controls=None, burn_in: int | None = None, every: int | None = None,
                           method: str = "likelihood", level: float = 0.9):
        """Recalibrate the forecast covariances on data (Kalman predictor only): see
        :meth:`StateSpaceEstimator.calibrate_forecast <ldmfilter.estimators.base.StateSpaceEstimator.calibrate_forecast>`."""
        self._check_fitted()
        self._check_kalman("calibrate_forecast")
        return super().calibrate_forecast(X, horizon, Y, controls, burn_in, every, method, level)

    def stream(self, n_series: int = 1) -> FilterStream:
        """A live filter: one new observation of each series per ``update`` call.

        Parameters
        ----------
        n_series : int
            Number of series filtered together (one row each per update).

        Returns
        -------
        FilterStream
            At the prior.  ``update(x_t, dt=None, controls=None)`` returns the filtered belief
            after ``x_t`` (the same as ``filter`` on the whole sequence, to rounding),
            ``forecast(h)`` the beliefs ``h`` steps ahead, ``save``/``FilterStream.load`` keep
            the state across restarts.  See :class:`~ldmfilter.estimators.FilterStream`.

        Raises
        ------
        ValueError
            For a model with a nonlinear ``observation`` map (the live filter's update is the linear one).
        """
        if self.observation != "linear":
            raise ValueError(f"stream() supports the linear observation map only; this model has observation={self.observation!r}")
        return FilterStream(self, n_series)

    @cpu_settings
    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """Encodings ``z_t`` at every row of ``X``: (…, T, latent_dim); NaN at missing rows."""
        sequences, x, mask = self._prepare(X)
        z = self.model_.encode_observed(x, mask)
        if mask is not None:
            z = torch.where(mask.unsqueeze(-1), z, torch.full_like(z, math.nan))
        return sequences.gather(z.numpy())

    @cpu_settings
    @torch.no_grad()
    def noise_variance(self, X) -> np.ndarray:
        """Pseudo-observation noise variances ``diag(R_t)`` at every row of ``X``: (…, T, latent_dim).

        Constant over time unless the noise is input-dependent (``noise="input"``, ``"input_absolute"``
        or ``"input_full"``), where ``R_t`` tracks how informative each frame is.  With
        ``"input_full"`` these are the diagonal of a full ``R_t``.
        """
        self._check_kalman("noise_variance")
        sequences, x, mask = self._prepare(X)
        R = self.model_.noise(self.model_.prepare_input(x, mask), self.model_.dynamics.log_scale).diagonal(dim1=-2, dim2=-1)
        return sequences.gather(R.expand(x.shape[:2] + R.shape[-1:]).numpy())

    @cpu_settings
    @torch.no_grad()
    def score(self, X, controls=None) -> float:
        """Mean one-step predictive log-likelihood of the latents per observed frame (``controls`` as in ``filter``)."""
        if self.predictor == "rnn":
            sequences, x, mask = self._prepare(X)
            out = self.model_(x, mask)
        else:
            sequences, u = self._inputs(X, controls)
            x, mask = self._tensors(sequences.values, sequences.observed)
            out = self.model_(x, mask, controls=self._controls_tensor(u))
        return float(out.log_likelihood.sum()) / int(sequences.observed.sum())
