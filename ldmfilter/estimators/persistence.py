"""Model files: one file with hyper-parameters, weights, input normalisation, read-outs and the
input schema (observation shape, channel names, observation dims, frequency).

Written atomically (a temporary file in the same folder, then a rename) and read with
``torch.load(weights_only=True)``, so a file from a stranger cannot run code.  The file holds a
format tag and a version: a foreign, corrupt, truncated or newer file gives a clear error.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from pathlib import Path

import torch

__all__ = ["FORMAT", "FORMAT_VERSION", "save_model", "load_model"]

FORMAT = "ldmfilter-model"
FORMAT_VERSION = 2  # 1: no read-outs or schema beyond the observation shape


def _hyper_parameters(estimator) -> str:
    """The constructor arguments as JSON (``trainer_kwargs`` only when JSON-serialisable)."""
    names = [p for p in inspect.signature(type(estimator).__init__).parameters if p != "self"]
    params = {name: getattr(estimator, name) for name in names}
    try:
        json.dumps(params.get("trainer_kwargs"))
    except TypeError:  # callbacks and other objects: a training setting, not needed to filter
        params["trainer_kwargs"] = None
    return json.dumps(params)


def save_model(estimator, path) -> Path:
    """Write a fitted estimator to ``path`` atomically; returns the path."""
    estimator._check_fitted()
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "estimator": type(estimator).__name__,
        "params": _hyper_parameters(estimator),
        "obs_shape": list(estimator.schema_.obs_shape),
        "schema": json.dumps(estimator.schema_.to_dict()),
        "state_dict": estimator.model_.state_dict(),
        "readouts": {
            space: {"spec": json.dumps(readout.spec()), "state_dict": readout.state_dict()}
            for space, readout in getattr(estimator, "readouts_", {}).items()
        },
        "target_names": json.dumps(list(getattr(estimator, "target_names_", ())) or None),
    }
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_model(path):
    """Read a model file written by :func:`save_model`.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not an ldmfilter model file (foreign, corrupt or truncated), or written by a newer
        version of ldmfilter, or whose weights do not fit its hyper-parameters.
    """
    from ..io import InputSchema
    from ..nn.readout import readout_from_spec
    from .ldm import LDMFilter

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors all mean "not a model file"
        raise ValueError(f"{path} is not a readable ldmfilter model file ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ldmfilter model file")
    version = payload.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer ldmfilter (file format {version}, this version reads up to "
            f"{FORMAT_VERSION}); upgrade ldmfilter"
        )
    if payload.get("estimator") != "LDMFilter":
        raise ValueError(f"{path} holds an unknown estimator {payload.get('estimator')!r}")
    try:
        estimator = LDMFilter(**json.loads(payload["params"]))
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
    except (KeyError, TypeError, RuntimeError, AttributeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is damaged: {error}") from None
    return estimator
