"""What the classical estimators (``KalmanFilter``, ``ExtendedKalmanFilter``, ``UnscentedKalmanFilter``) share.

Observations on the model's grid are flattened to vectors, optionally mapped through a
projection front end (:mod:`.projection`), and filtered as ``z_t`` of size ``D`` (``K`` with a
projection).  Given parameter values are checked here (names, shapes, symmetry), and the
data-driven starting point of the linear model lives here too.
"""

from __future__ import annotations

from abc import abstractmethod
import copy
from pathlib import Path

import numpy as np
import torch

from ..gaussian import LinearGaussianParams, initial_params_from_data
from ..gaussian.em import PARAMETER_NAMES
from ..gaussian.validation import check_psd
from ..io import InputSchema, to_sequences
from ..nn.readout import LinearReadout
from .base import StateSpaceEstimator
from .persistence import save_model
from .projection import ProjectedReadout, _Projection

__all__ = ["ClassicalStateSpace", "DTYPES", "COVARIANCES", "as_parameter", "check_names", "data_driven_params", "fill_parameters"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
COVARIANCES = ("Q", "R", "initial_cov")


def check_names(value, name: str, allowed) -> tuple[dict, frozenset]:
    """``fixed``/``initial_params`` → (values given, names); names must be in ``allowed``.

    A dict gives values; a collection of names (only where ``name == "fixed"``) gives names only.
    """
    if value is None:
        return {}, frozenset()
    if isinstance(value, dict):
        values = dict(value)
    elif name == "fixed" and not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):
        values = {n: None for n in value}
    elif name == "fixed" and isinstance(value, str):
        values = {value: None}
    else:
        expected = "a dict of parameter values or a collection of names" if name == "fixed" else "a dict of parameter values"
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    unknown = sorted(str(n) for n in values if n not in allowed)
    if unknown:
        raise ValueError(f"{name} has unknown parameter names {unknown}; expected a subset of {sorted(allowed)}")
    given = {n: v for n, v in values.items() if v is not None or name == "initial_params"}
    return given, frozenset(values)


def as_parameter(name: str, value, shape: tuple, dtype: torch.dtype, source: str) -> torch.Tensor:
    """A given parameter value as a tensor of ``shape``; covariances must be symmetric PSD."""
    try:
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, dtype=np.float64)
        array = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{source}[{name!r}] must be an array of numbers, got {type(value).__name__}") from None
    if array.shape != tuple(shape):
        raise ValueError(f"{source}[{name!r}] must have shape {tuple(shape)}, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{source}[{name!r}] contains NaN or inf")
    tensor = torch.as_tensor(array, dtype=dtype)
    if name in COVARIANCES:
        try:
            check_psd(tensor, f"{source}[{name!r}]")
        except ValueError as error:
            raise ValueError(str(error)) from None
    return tensor


def _expected_shapes(S: int, D: int) -> dict:
    return {"A": (S, S), "Q": (S, S), "H": (D, S), "R": (D, D), "initial_mean": (S,), "initial_cov": (S, S),
            "transition_offset": (S,), "observation_offset": (D,)}


@torch.no_grad()
def data_driven_params(z: torch.Tensor, mask: torch.Tensor, state_dim: int) -> LinearGaussianParams:
    """The PCA / least-squares start of :func:`~ldmfilter.gaussian.initial_params_from_data`.

    With ``state_dim > D`` it runs on delay embeddings ``[z_t; z_{t+1}; …; z_{t+k-1}]`` (``k D ≥
    state_dim``, a subspace-identification start) and keeps the rows of ``H``, ``d`` and ``R``
    that belong to ``z_t``.
    """
    n, T, D = z.shape
    if state_dim <= D:
        return initial_params_from_data(z, state_dim, mask)
    lags = -(-state_dim // D)
    if T - lags + 1 < 2:
        raise ValueError(
            f"state_dim={state_dim} exceeds the observation size {D}: the start needs {lags} delays, so "
            f"series of at least {lags + 1} steps; got {T}"
        )
    observed = z.masked_fill(~mask.unsqueeze(-1), float("nan"))
    embedded = torch.cat([observed[:, k : T - lags + 1 + k] for k in range(lags)], -1)
    start = initial_params_from_data(embedded, state_dim)
    return start.replace(
        H=start.H[:D].contiguous(), R=start.R[:D, :D].contiguous(), observation_offset=start.observation_offset[:D].clone()
    )


class ClassicalStateSpace(StateSpaceEstimator):
    """Input handling, projection front end, observation read-out and files of the classical filters.

    Subclasses set ``state_dim``, ``projection``, ``dtype`` in ``__init__`` and implement
    ``_filter_grid``, ``_observation_model()`` → ``(H, d, R)`` (None for a nonlinear observation
    function), ``_state_dict()`` and ``_restore_model(state_dict)``.
    """

    _derived_readouts = ("observations",)

    # ------------------------------------------------------------------ checks
    def _check_common(self) -> None:
        if isinstance(self.state_dim, bool) or not isinstance(self.state_dim, (int, np.integer)) or self.state_dim < 1:
            raise ValueError(f"state_dim must be a positive integer, got {self.state_dim!r}")
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(f"random_state must be an integer, got {self.random_state!r}")
        if self.projection is not None and not isinstance(self.projection, _Projection):
            raise TypeError(
                f"projection must be a PCAProjection or RandomProjection (or None), got {type(self.projection).__name__}"
            )

    @property
    def _torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    # ------------------------------------------------------------------ data
    def _fit_projection(self, values: np.ndarray, observed: np.ndarray) -> None:
        """Fit a copy of the projection front end on the observed frames (``projection_``)."""
        self.projection_ = None
        if self.projection is not None:
            flat = values.reshape(values.shape[:2] + (-1,))
            self.projection_ = copy.deepcopy(self.projection).fit(flat[observed])

    def _observations(self, values: np.ndarray, observed: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid values (n, T, *obs) → filter inputs ``z`` (n, T, D or K) with NaN, and the step mask (n, T)."""
        flat = torch.as_tensor(values.reshape(values.shape[:2] + (-1,)), dtype=torch.float64)
        if getattr(self, "projection_", None) is not None:
            flat = self.projection_.transform(flat)
        return flat.to(self._torch_dtype), torch.as_tensor(observed, dtype=torch.bool)

    def _fit_data(self, X):
        """Validated training data: (sequences, schema, z, mask), with the projection fitted."""
        self._check_params()
        sequences, schema = to_sequences(X, "X", None, min_steps=2)
        self._fit_projection(sequences.values, sequences.observed)
        z, mask = self._observations(sequences.values, sequences.observed)
        return sequences, schema, z, mask

    def _finish_fit(self, sequences, schema: InputSchema, targets, readout: str) -> None:
        """Observation read-out, targets read-out, schema: the common end of ``fit``."""
        self.readouts_ = {}
        self.__dict__.pop("forecast_scale_", None)  # a calibration of the previous fit
        self._set_observation_readout()
        if targets is not None:
            grid = self._filter_grid(sequences.values, sequences.observed)
            values, self.target_names_ = self._targets(targets, sequences)
            self._fit_readout("targets", grid, values, readout, {})
        self.schema_ = schema

    # ------------------------------------------------------------------ read-outs
    @abstractmethod
    def _observation_model(self):
        """The fitted observation model, for the observation read-out."""

    def _observation_function_readout(self):
        return None

    def _set_observation_readout(self) -> None:
        """``readouts_["observations"]``: the model's own observation equation (exact when linear)."""
        H, d, R = self._observation_model()
        if H is None:
            readout = self._observation_function_readout()
            if readout is not None:
                self.readouts_["observations"] = readout
            return
        d = torch.zeros(H.shape[0], dtype=H.dtype) if d is None else d
        if getattr(self, "projection_", None) is not None:
            p = self.projection_
            readout = ProjectedReadout(p.components_, p.mean_, p.residual_var_, H, d, R)
        else:
            f64 = torch.float64
            readout = LinearReadout(H.detach().to(f64).clone(), d.detach().to(f64).clone(), R.detach().to(f64).clone())
        self.readouts_["observations"] = readout.eval()

    # ------------------------------------------------------------------ scores
    def score(self, X) -> float:
        """Mean one-step predictive log-likelihood per observed step of ``X``.

        With a projection front end this is the likelihood of the projected coordinates.
        """
        sequences = self._sequences(X)
        grid = self._filter_grid(sequences.values, sequences.observed)
        return float(grid.log_likelihood.sum()) / max(int(sequences.observed.sum()), 1)

    # ------------------------------------------------------------------ files
    def save(self, path) -> Path:
        """Write the fitted model to one file (atomically); read it back with ``ldmfilter.load``."""
        return save_model(self, path)

    def _projection_state(self) -> dict:
        if getattr(self, "projection_", None) is None:
            return {}
        return {f"projection.{k}": v for k, v in self.projection_.state_dict().items()}

    def _restore(self, schema: InputSchema, state_dict: dict, readouts: dict, target_names) -> None:
        """Rebuild the fitted model from a saved state (see :mod:`.persistence`)."""
        self._check_params()
        self.projection_ = None
        projection = {k.split(".", 1)[1]: v for k, v in state_dict.items() if k.startswith("projection.")}
        if projection:
            if self.projection is None:
                raise KeyError("projection state without a projection hyper-parameter")
            self.projection_ = copy.deepcopy(self.projection).load_state_dict(projection)
        self._restore_model({k: v for k, v in state_dict.items() if not k.startswith("projection.")})
        self.readouts_ = dict(readouts)
        self._set_observation_readout()
        if target_names is not None:
            self.target_names_ = tuple(target_names)
        self.schema_ = schema

    @abstractmethod
    def _restore_model(self, state_dict: dict) -> None:
        """Rebuild the fitted parameters from a model file's ``state_dict``."""


def fill_parameters(
    start: LinearGaussianParams | None,
    given: dict,
    S: int,
    D: int,
    dtype: torch.dtype,
    source: str,
) -> dict:
    """Checked given values (``source`` names the argument in errors) merged over ``start``'s."""
    shapes = _expected_shapes(S, D)
    values = {}
    if start is not None:
        values = {name: getattr(start, name) for name in PARAMETER_NAMES}
    for name, value in given.items():
        if value is None:
            if name not in ("transition_offset", "observation_offset"):
                raise ValueError(f"{source}[{name!r}] is None; only the offsets may be None (meaning zero)")
            values[name] = None
        else:
            values[name] = as_parameter(name, value, shapes[name], dtype, source)
    return values
