"""The estimators never write into the user's arrays.

Stacked numpy input is used as it is, not copied (``io.place_on_grid``), and a float array of the
model's dtype is shared with torch (``torch.as_tensor``).  So an in-place operation anywhere
between the user's array and the model would alter the user's data: every public method must
leave its inputs bit for bit as they were, with missing values (NaN) and without.
"""

from __future__ import annotations

import numpy as np
import pytest

import ldmfilter


def _data(dtype, missing: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 24, 3)).astype(dtype)
    if missing:
        X[1, 4] = np.nan  # a missing frame
        X[2, 7, 1] = np.nan  # a missing value
    Y = rng.normal(size=(5, 24, 2))
    U = rng.normal(size=(5, 24, 1)).astype(dtype)
    return X, Y, U


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


ESTIMATORS = {
    "LDMFilter": lambda dtype: ldmfilter.LDMFilter(state_dim=2, latent_dim=2, max_epochs=1, verbose=False,
                                                   dtype="float64" if dtype == np.float64 else "float32"),
    "LDMFilter-mlp": lambda dtype: ldmfilter.LDMFilter(state_dim=2, latent_dim=2, max_epochs=1, verbose=False,
                                                       dynamics="mlp"),
    "KalmanFilter": lambda dtype: ldmfilter.KalmanFilter(state_dim=2, n_iter=2),
}


@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_methods_leave_their_inputs_unchanged(name, dtype, missing):
    X, Y, U = _data(dtype, missing)
    before = {key: value.copy() for key, value in (("X", X), ("Y", Y), ("U", U))}
    controlled = name != "KalmanFilter"
    model = ESTIMATORS[name](dtype)
    model.fit(X, targets=Y, **({"controls": U} if controlled else {}))
    options = {"controls": U} if controlled else {}
    model.filter(X, **options)
    model.smooth(X, **options)
    model.forecast(X, 3, **({"controls": U, "future_controls": U[:, :3]} if controlled else {}))
    model.score(X, **options)
    model.fit_readout(X, Y, **options)
    if name.startswith("LDMFilter"):
        model.transform(X)
    for key, value in (("X", X), ("Y", Y), ("U", U)):
        assert _same(value, before[key]), f"{name} altered the user's {key}"
