"""Model files: one file with hyper-parameters, weights, input normalisation, read-outs, the
input schema (observation shape, channel names, observation dims, frequency) and the forecast
calibration (``forecast_scale_``, when ``calibrate_forecast`` was run).

Written atomically (a temporary file in the same folder, then a rename) and read with
``torch.load(weights_only=True)``, so a file from a stranger cannot run code.  The file holds a
format tag, a version and a checksum of its contents (BLAKE2b over every tensor's bytes and every
text field; files written before the checksum load without the check): a foreign, corrupt,
truncated or newer file gives a clear error, and so does one whose bytes changed on disk.

Every estimator class that can be saved is registered under its class name, which the file
records: the package's own in ``BUILTIN_ESTIMATORS`` (imported when first needed), others with
:func:`register_estimator`.  A registered class provides

* ``_state_dict()`` → a flat dict of tensors (its fitted weights and parameters; ``LDMFilter``:
  its network's ``state_dict``), and
* ``_restore(schema, state_dict, readouts, target_names)`` on an instance built from the saved
  hyper-parameters, which rebuilds the fitted model;
* optionally ``_derived_readouts``: read-outs rebuilt by ``_restore`` from the state (not stored);
* optionally ``_upgrade_params(params, version)`` → the hyper-parameters of a file of an older
  format ``version`` in today's meaning (``LDMFilter``: format 2's ``noise="input"``).

Hyper-parameters are stored as JSON; tensors and arrays among them (e.g. given parameter
values) are stored as tensors beside it, and a projection front end by its ``spec()``.  A model
holding user-supplied Python functions cannot be saved (no code goes into a file).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_torch_save, read_torch_file
from ..training.distributed import process_rank

__all__ = ["FORMAT", "FORMAT_VERSION", "checksum", "ESTIMATORS", "BUILTIN_ESTIMATORS", "register_estimator", "estimator_class", "save_model", "load_model"]

FORMAT = "ldmfilter-model"
FORMAT_VERSION = 4  # 1: no read-outs or schema beyond the observation shape; 2: noise="input" meant "input_absolute";
# 3: no forecast calibration

ESTIMATORS: dict[str, type] = {}  # class name → class, filled by ``register_estimator``
BUILTIN_ESTIMATORS = {  # class name → module of this package; imported (and so registered) when first needed
    "LDMFilter": "ldm",
    "KalmanFilter": "kalman",
    "ExtendedKalmanFilter": "nonlinear",
    "UnscentedKalmanFilter": "nonlinear",
}


def register_estimator(cls: type) -> type:
    """Class decorator: make ``cls`` loadable by :func:`load_model` (under its class name)."""
    ESTIMATORS[cls.__name__] = cls
    return cls


def estimator_class(name) -> type | None:
    """The registered class of that name (importing a built-in one on first use), or None."""
    if name not in ESTIMATORS and name in BUILTIN_ESTIMATORS:
        import importlib

        module = importlib.import_module(f"{__package__}.{BUILTIN_ESTIMATORS[name]}")
        ESTIMATORS.setdefault(name, getattr(module, name))
    return ESTIMATORS.get(name)


def _encode(value, tensors: dict, path: str):
    """A hyper-parameter as JSON-able data; tensors and arrays go to ``tensors``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (torch.Tensor, np.ndarray)):
        key = f"t{len(tensors)}"
        tensors[key] = torch.as_tensor(np.asarray(value) if isinstance(value, np.ndarray) else value.detach().cpu()).clone()
        return {"__tensor__": key}
    if isinstance(value, (list, tuple)):
        return [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return sorted(_encode(v, tensors, path) for v in value)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"cannot save hyper-parameter {path}: its dict keys must be strings")
        return {"__dict__": {k: _encode(v, tensors, f"{path}[{k!r}]") for k, v in value.items()}}
    if hasattr(value, "spec") and hasattr(value, "load_state_dict") and not isinstance(value, torch.nn.Module):
        return {"__projection__": value.spec()}
    kind = "a Python function" if callable(value) else f"a {type(value).__name__}"
    raise ValueError(
        f"cannot save hyper-parameter {path}: it is {kind}, and model files hold no code "
        "(give the model as arrays, or use a built-in transition such as transition='mlp')"
    )


def _decode(value, tensors: dict):
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__projection__" in value:
            from .projection import projection_from_spec

            return projection_from_spec(value["__projection__"])
        items = value["__dict__"] if set(value) == {"__dict__"} else value  # plain dicts: files before the registry
        return {k: _decode(v, tensors) for k, v in items.items()}
    return value


def constructor_params(estimator) -> dict:
    """``{name: value}`` of the estimator's constructor arguments."""
    names = [p for p in inspect.signature(type(estimator).__init__).parameters if p != "self"]
    return {name: getattr(estimator, name) for name in names}


def _hyper_parameters(estimator) -> tuple[str, dict]:
    """The constructor arguments as JSON (``trainer_kwargs`` only when JSON-serialisable), and tensors."""
    params = constructor_params(estimator)
    if "trainer_kwargs" in params:
        try:
            json.dumps(params["trainer_kwargs"])
        except TypeError:  # callbacks and other objects: a training setting, not needed to filter
            params["trainer_kwargs"] = None
    tensors: dict = {}
    encoded = {name: _encode(value, tensors, name) for name, value in params.items()}
    return json.dumps(encoded), tensors


def _digest(value, hasher) -> None:
    """Feed ``value`` (the payload: dicts, lists, tensors, text, numbers) into ``hasher``, canonically."""
    if isinstance(value, dict):
        hasher.update(b"{")
        for key in sorted(value, key=str):
            hasher.update(repr(key).encode())
            _digest(value[key], hasher)
        hasher.update(b"}")
    elif isinstance(value, (list, tuple)):
        hasher.update(b"[")
        for item in value:
            _digest(item, hasher)
        hasher.update(b"]")
    elif isinstance(value, torch.Tensor):
        flat = torch.empty(value.numel(), dtype=value.dtype).copy_(value.detach().reshape(-1))  # stride 1
        hasher.update(f"T{value.dtype}{tuple(value.shape)}".encode())
        hasher.update(flat.view(torch.uint8).numpy().tobytes())
    else:
        hasher.update(repr(value).encode())


def checksum(payload: dict) -> str:
    """Hex BLAKE2b digest of a model file's payload, without its ``checksum`` entry."""
    hasher = hashlib.blake2b(digest_size=32)
    _digest({k: v for k, v in payload.items() if k != "checksum"}, hasher)
    return hasher.hexdigest()


def _as_path(path, what: str) -> Path:
    """``path`` as a Path; TypeError for anything but a str or os.PathLike."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"the {what} path must be a str or os.PathLike, got {type(path).__name__}")
    if str(path) == "":
        raise ValueError(f"the {what} path is empty")
    return Path(path)


def save_model(estimator, path) -> Path:
    """Write a fitted estimator to ``path`` atomically; returns the path.

    In a distributed run (a torch.distributed process group is running, e.g. after a DDP
    ``fit``) only the process of global rank 0 writes; the others check their arguments the
    same way and return the path without writing (synchronise, e.g. with
    ``torch.distributed.barrier()``, before other processes read the file).

    Raises
    ------
    TypeError
        ``path`` is not a str or os.PathLike, or the estimator's class is not registered.
    ValueError
        ``path`` is empty or an existing folder, or a hyper-parameter cannot be stored.
    FileNotFoundError
        The folder of ``path`` does not exist.
    RuntimeError
        The estimator is not fitted.
    """
    estimator._check_fitted()
    name = type(estimator).__name__
    if estimator_class(name) is not type(estimator):
        raise TypeError(f"{name} is not a registered estimator class; cannot save it")
    path = _as_path(path, "model file")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the path of the model file to write (e.g. {path / 'model.ldm'})")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {str(path.parent)!r} of the model file does not exist")
    params, param_tensors = _hyper_parameters(estimator)
    if process_rank() != 0:
        return path
    derived = set(getattr(estimator, "_derived_readouts", ()))
    state_dict = estimator._state_dict() if hasattr(estimator, "_state_dict") else estimator.model_.state_dict()
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "estimator": name,
        "params": params,
        "param_tensors": param_tensors,
        "obs_shape": list(estimator.schema_.obs_shape),
        "schema": json.dumps(estimator.schema_.to_dict()),
        "state_dict": state_dict,
        "readouts": {
            space: {"spec": json.dumps(readout.spec()), "state_dict": readout.state_dict()}
            for space, readout in getattr(estimator, "readouts_", {}).items()
            if space not in derived
        },
        "target_names": json.dumps(list(getattr(estimator, "target_names_", ())) or None),
    }
    if getattr(estimator, "forecast_scale_", None) is not None:
        payload["forecast_scale"] = torch.as_tensor(np.asarray(estimator.forecast_scale_, dtype=np.float64))
    payload["checksum"] = checksum(payload)
    return atomic_torch_save(payload, path)


def _forecast_scale(stored) -> np.ndarray:
    """A file's forecast calibration factors, checked (TypeError/ValueError when damaged)."""
    scale = stored.numpy() if isinstance(stored, torch.Tensor) else None
    if scale is None or scale.ndim != 1 or len(scale) == 0 or not (np.isfinite(scale).all() and (scale > 0).all()):
        raise TypeError(f"its forecast calibration is not a vector of positive factors: {stored!r}")
    return scale.astype(np.float64)


def load_model(path):
    """Read a model file written by :func:`save_model` (any registered estimator).

    Raises
    ------
    TypeError
        ``path`` is not a str or os.PathLike.
    FileNotFoundError
        No such file.
    ValueError
        Not an ldmfilter model file (foreign, corrupt or truncated), or written by a newer
        version of ldmfilter, or of an unknown estimator, or whose weights do not fit its
        hyper-parameters.
    """
    from ..io import InputSchema
    from ..nn.readout import readout_from_spec

    path = _as_path(path, "model file")
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    payload = read_torch_file(path, "ldmfilter model file")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ldmfilter model file")
    version = payload.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer ldmfilter (file format {version}, this version reads up to "
            f"{FORMAT_VERSION}); upgrade ldmfilter"
        )
    if "checksum" in payload and payload["checksum"] != checksum(payload):
        raise ValueError(f"{path} is damaged: its contents do not match the checksum written with them")
    name = payload.get("estimator")
    cls = estimator_class(name) if isinstance(name, str) else None
    if cls is None:
        known = sorted(set(ESTIMATORS) | set(BUILTIN_ESTIMATORS))
        raise ValueError(f"{path} holds an unknown estimator {name!r}; this version reads {known}")
    try:
        params = _decode({"__dict__": json.loads(payload["params"])}, payload.get("param_tensors", {}))
        if version < FORMAT_VERSION and hasattr(cls, "_upgrade_params"):
            params = cls._upgrade_params(params, version)
        estimator = cls(**params)
        if version == 1:
            schema, readouts, target_names = InputSchema(tuple(payload["obs_shape"])), {}, None
        else:
            schema = InputSchema.from_dict(json.loads(payload["schema"]))
            readouts = {}
            for space, stored in payload["readouts"].items():
                readouts[space] = readout_from_spec(json.loads(stored["spec"]))
                readouts[space].load_state_dict(stored["state_dict"], strict=True)
                readouts[space].eval()
            target_names = json.loads(payload["target_names"])
        estimator._restore(schema, payload["state_dict"], readouts, target_names)
        if "forecast_scale" in payload:
            estimator.forecast_scale_ = _forecast_scale(payload["forecast_scale"])
    except (KeyError, IndexError, TypeError, RuntimeError, AttributeError, OverflowError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is damaged: {error}") from None
    return estimator
