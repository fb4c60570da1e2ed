"""The LightningModule that trains a predictive latent model with the LDM objective."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import lightning as L
import torch

from .distributed import gather_batch
from .divergence import BestWindowWeights
from .objectives import ldm_loss
from .probes import linear_probe_r2
from .schedules import DEFAULT_LR_MULTIPLIERS, make_schedule

__all__ = ["ProbeData", "LDMTrainingModule", "DEFAULT_LR_MULTIPLIERS"]


def _to(mask: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if mask is None else mask.to(device)


@dataclass
class ProbeData:
    """Data for a linear probe, scored at the end of every training epoch (no gradients).

    ``train_x``/``test_x``: (n, T, *obs_shape) tensors; ``train_y``/``test_y``: (n, T, D);
    ``train_mask``/``test_mask``: (n, T) bool (True = observed frame) or None.
    ``history`` collects ``(epoch, global_step, training seconds, R²)``; the seconds count the time
    since the start of ``fit`` without the time spent in the probes themselves.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_mask: torch.Tensor | None = None
    test_mask: torch.Tensor | None = None
    history: list = field(default_factory=list)


class LDMTrainingModule(L.LightningModule):
    """Trains ``model`` (a :class:`~ldmfilter.nn.LatentKalmanFilter` or ``LatentRNNModel``).

    Parameters
    ----------
    model : nn.Module
        Returns a :class:`~ldmfilter.nn.PredictiveOutput`; exposes ``parameter_groups()`` and
        ``after_optimizer_step()``.
    objective : str
        ``"stopgrad"`` or an entropy estimator (``"knn"``, ``"kde"``, ``"logdet"``).
    learning_rate : float
        Encoder learning rate; other groups are scaled by ``lr_multipliers``.
    weight_decay : float
    lr_multipliers : dict, optional
        Per group (``encoder``, ``predictor``, ``residual``, ``noise_head``, ``observation``): the paper's
        ×100 for the predictor; a noise head ×1 (the paper: ×0.03, which leaves it at its
        initialisation, see :class:`~ldmfilter.nn.InputDependentNoise`); the residual MLP of nonlinear
        dynamics and a nonlinear observation map learn like the predictor (×100) by default.
    schedule : str
        See :func:`~ldmfilter.training.schedules.make_schedule`.
    entropy_weight : float
        ``λ`` of the F_MI form.
    multistep : int
        Steps ahead the objective scores (:func:`~ldmfilter.training.objectives.ldm_loss`).
    max_radius : float
        Spectral-radius bound of the transition, enforced after every optimiser step.
    probe : ProbeData, optional
    seed : int
        Seed of the objective's own randomness (kNN subsampling).
    run : dict, optional
        A description of the training run (data size, batches, seed, epochs) stored in
        checkpoints, which a resumed run must match (see :mod:`~ldmfilter.training.checkpoints`).
    on_divergence : {"raise", "restore"}
        When an optimiser step leaves the transition NaN or inf: raise ``FloatingPointError``, or
        load ``best_weights`` (when a window has closed), record why in ``stopped_because`` and
        stop training.

    ``best_weights`` (:class:`~.divergence.BestWindowWeights`) keeps the weights at the end of
    the lowest loss window of :func:`~.divergence.late_divergence`'s grid, for ``fit`` to fall
    back on.

    Under distributed training (Lightning's DDP) each process trains on its slice of every
    global batch; the entropy estimators see the global batch (:func:`~.distributed.gather_batch`,
    all-gathered with gradients), and ``loss_history`` holds the global batch's loss, the same
    on every process.

    Checkpoints hold, besides Lightning's weights, optimiser and scheduler state, the objective's
    generator, the loss and probe histories, the training time so far and ``run``, so that a run
    resumed from the checkpoint of epoch ``k`` continues exactly as the uninterrupted one.
    """

    def __init__(
        self,
        model,
        objective: str = "stopgrad",
        learning_rate: float = 0.005 * 8 / 256,
        weight_decay: float = 1e-4,
        lr_multipliers: dict | None = None,
        schedule: str = "step",
        entropy_weight: float = 1.0,
        multistep: int = 1,
        max_radius: float = 1.02,
        probe: ProbeData | None = None,
        seed: int = 0,
        run: dict | None = None,
        on_divergence: str = "raise",
    ):
        super().__init__()
        self.model = model
        self.objective, self.entropy_weight, self.max_radius = objective, float(entropy_weight), float(max_radius)
        self.multistep = int(multistep)
        self.learning_rate, self.weight_decay, self.schedule = float(learning_rate), float(weight_decay), schedule
        self.lr_multipliers = {**DEFAULT_LR_MULTIPLIERS, **(lr_multipliers or {})}
        self.probe = probe
        self.generator = torch.Generator().manual_seed(int(seed))
        self.loss_history: list[float] = []
        self.run = dict(run or {})
        if on_divergence not in ("raise", "restore"):
            raise ValueError(f"on_divergence must be 'raise' or 'restore', got {on_divergence!r}")
        self.on_divergence, self.stopped_because = on_divergence, None
        self.best_weights, self._checkpoint_best = None, None
        self._started, self._probe_seconds, self._seconds_before = None, 0.0, 0.0

    def configure_optimizers(self):
        groups = [
            {"params": params, "lr": self.learning_rate * self.lr_multipliers[name], "name": name}
            for name, params in self.model.parameter_groups().items()
            if params
        ]
        optimizer = torch.optim.Adam(groups, weight_decay=self.weight_decay)
        total = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, make_schedule(self.schedule, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_start(self) -> None:
        self._started, self._probe_seconds = time.perf_counter(), 0.0
        self.best_weights = BestWindowWeights(self.trainer.estimated_stepping_batches)
        if self._checkpoint_best is not None:  # on_load_checkpoint runs before on_fit_start
            self.best_weights.load_state_dict(self._checkpoint_best)

    @property
    def training_seconds(self) -> float:
        """Seconds since the start of ``fit`` (plus those before a resumed checkpoint), without the probes' own time."""
        return self._seconds_before + time.perf_counter() - self._started - self._probe_seconds

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the run's own state: generator, histories, time so far and the run's description."""
        checkpoint["ldmfilter"] = {
            "generator": self.generator.get_state(),
            "loss_history": list(self.loss_history),
            "probe_history": [] if self.probe is None else [list(entry) for entry in self.probe.history],
            "training_seconds": self.training_seconds if self._started is not None else self._seconds_before,
            "run": dict(self.run),
            "best_weights": None if self.best_weights is None else self.best_weights.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore what :meth:`on_save_checkpoint` stored (Lightning restores weights and optimiser)."""
        state = checkpoint["ldmfilter"]
        self.generator.set_state(state["generator"])
        self.loss_history = [float(v) for v in state["loss_history"]]
        if self.probe is not None:
            self.probe.history = [(int(e), int(s), float(t), float(r)) for e, s, t, r in state["probe_history"]]
        self._seconds_before = float(state["training_seconds"])
        self._checkpoint_best = state.get("best_weights")  # absent from checkpoints before 2026-12-02

    def training_step(self, batch, batch_idx):
        x, mask, *controls = batch  # (x, mask) or (x, mask, u)
        inputs = {"controls": controls[0]} if controls else {}
        output = self.model(x, None if bool(mask.all()) else mask, **inputs)
        distributed = self.trainer.world_size > 1
        loss = ldm_loss(output, self.objective, self.entropy_weight, self.generator, gather_batch if distributed else None,
                        self.multistep)
        # the global batch's loss: the mean over processes of their (equal) slices' losses
        reported = self.trainer.strategy.reduce(loss.detach(), reduce_op="mean") if distributed else loss.detach()
        self.loss_history.append(float(reported))
        self.log("loss", reported, prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        try:
            self.model.after_optimizer_step(self.max_radius)
        except FloatingPointError as error:  # the step, the loss and what to try
            clip = self.trainer.gradient_clip_val
            advice = (f"a smaller clipping value than {clip:g}" if clip else
                      "gradient clipping (trainer_kwargs={'gradient_clip_val': 1.0})")
            message = (f"{error} at optimiser step {self.global_step} (the loss of that step: {self.loss_history[-1]:.4g}); "
                       f"try a smaller learning_rate or lr_multipliers, or {advice}")
            if self.on_divergence == "raise" or self.best_weights is None or self.best_weights.weights is None:
                raise FloatingPointError(message) from error
            self.stopped_because = f"{message}.  Training stopped there, and the model holds {self.best_weights.restore(self.model)}"
            self.trainer.should_stop = True
            return
        if self.best_weights is not None:
            self.best_weights.observe(self.loss_history, self.model)

    def on_train_epoch_end(self) -> None:
        if self.probe is None:
            return
        p, begin = self.probe, time.perf_counter()
        with torch.no_grad():
            train = self.model(p.train_x.to(self.device), _to(p.train_mask, self.device)).features
            test = self.model(p.test_x.to(self.device), _to(p.test_mask, self.device)).features
        r2 = linear_probe_r2(train.cpu(), p.train_y, test.cpu(), p.test_y)
        p.history.append((self.current_epoch, self.global_step, self._seconds_before + begin - self._started - self._probe_seconds, r2))
        self._probe_seconds += time.perf_counter() - begin
        self.log("probe_r2", r2, prog_bar=True, rank_zero_only=True)  # the same on every process
