"""Training: entropy estimators, LDM objectives, data modules and the LightningModule."""

from .divergence import TrainingDivergedWarning, late_divergence
from .entropy import ENTROPY_ESTIMATORS, entropy, kde_entropy, knn_entropy, logdet_entropy
from .objectives import OBJECTIVES, entropy_bonus_loss, ldm_loss, multistep_loss, stop_gradient_loss
from .probes import fit_linear_probe, linear_probe_r2, predict_linear_probe, r2_score
from .schedules import SCHEDULES, make_schedule

__all__ = [
    "TrainingDivergedWarning",
    "late_divergence",
    "ENTROPY_ESTIMATORS",
    "entropy",
    "kde_entropy",
    "knn_entropy",
    "logdet_entropy",
    "OBJECTIVES",
    "entropy_bonus_loss",
    "ldm_loss",
    "multistep_loss",
    "stop_gradient_loss",
    "fit_linear_probe",
    "linear_probe_r2",
    "predict_linear_probe",
    "r2_score",
    "SCHEDULES",
    "make_schedule",
]
