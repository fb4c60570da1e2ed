"""Networks: encoders, noise models, dynamics and the predictive latent models."""

from .dynamics import DYNAMICS, RESIDUAL_ACTIVATIONS, HiddenLayers, LinearDynamics, LocalizedUnit, MLPDynamics, spectral_radius
from .encoders import ConvEncoder, MLPEncoder, make_mlp
from .latent_filter import LatentKalmanFilter, PredictiveOutput
from .noise import NOISE_KINDS, InputDependentNoise, LearnedDiagonalNoise, ScaledIdentityNoise, make_noise
from .observation import OBSERVATIONS, ClampObservation, MLPObservation
from .readout import LinearReadout, MLPReadout, fit_affine, readout_from_spec
from .rnn_predictor import LatentRNNModel, RNNPredictor

__all__ = [
    "LinearDynamics",
    "MLPDynamics",
    "HiddenLayers",
    "LocalizedUnit",
    "DYNAMICS",
    "RESIDUAL_ACTIVATIONS",
    "spectral_radius",
    "MLPEncoder",
    "ConvEncoder",
    "make_mlp",
    "LatentKalmanFilter",
    "PredictiveOutput",
    "ScaledIdentityNoise",
    "LearnedDiagonalNoise",
    "InputDependentNoise",
    "NOISE_KINDS",
    "make_noise",
    "MLPObservation",
    "ClampObservation",
    "OBSERVATIONS",
    "LinearReadout",
    "MLPReadout",
    "readout_from_spec",
    "fit_affine",
    "LatentRNNModel",
    "RNNPredictor",
]
