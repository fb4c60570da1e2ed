"""Control inputs of the state-space estimators: found in ``X`` or given, put on the grid, checked.

A mixin of :class:`~ldmfilter.estimators.base.StateSpaceEstimator`; it needs ``schema_`` (whose
``control_names`` says whether the model takes inputs), ``_check_fitted``, ``_sequences`` and
``_targets`` from the estimator.
"""

from __future__ import annotations

import numpy as np

from ..io import InputSchema, Sequences, to_sequences
from ..io.controls import control_names_of, has_columns, hold_on_grid, split_control_columns

__all__ = ["ControlInputs"]


class ControlInputs:
    """``controls`` / ``future_controls`` handling shared by ``filter``, ``smooth``, ``forecast`` and ``fit``."""

    @property
    def control_names_(self) -> tuple[str, ...] | None:
        """Names of the control inputs the model was fitted with (None: none)."""
        self._check_fitted()
        return getattr(self.schema_, "control_names", None)

    def _split_controls(self, X, controls, name: str = "X"):
        """``(X, controls)`` with controls named as channels of ``X`` split off it.

        Controls are split off when ``controls`` is a name or a list of names, or when it is
        None, the model was fitted with controls and ``X`` holds channels of those names.
        """
        names = control_names_of(controls)
        fitted = getattr(getattr(self, "schema_", None), "control_names", None)
        if names is None and controls is None and fitted and has_columns(X, fitted):
            names = fitted
        return (X, controls) if names is None else split_control_columns(X, names, name)

    def _grid_controls(self, controls, sequences: Sequences, name: str = "controls") -> np.ndarray | None:
        """Controls on the grid of ``sequences``, (n, T, U) and finite, or None for a model without inputs."""
        expected = self.control_names_
        if expected is None:
            if controls is not None:
                raise ValueError(f"this {type(self).__name__} was fitted without controls; do not pass {name}")
            return None
        if controls is None:
            raise ValueError(
                f"this model was fitted with controls {list(expected)}: pass {name}= (laid out like X, or the "
                "names of X's control columns)"
            )
        values, _ = self._targets(controls, sequences, name, InputSchema((len(expected),), expected, None, self.schema_.frequency))
        return hold_on_grid(values, sequences.layout, name)

    def _inputs(self, X, controls, name: str = "X") -> tuple[Sequences, np.ndarray | None]:
        """Validated observations on their grid and the controls on the same grid."""
        X, controls = self._split_controls(X, controls, name)
        sequences = self._sequences(X, name)
        return sequences, self._grid_controls(controls, sequences)

    def _future_controls(self, future, sequences: Sequences, horizon: int) -> np.ndarray | None:
        """Controls of the ``horizon`` forecast steps, (n, horizon, U), or None for a model without inputs."""
        expected = self.control_names_
        if expected is None:
            if future is not None:
                raise ValueError(f"this {type(self).__name__} was fitted without controls; do not pass future_controls")
            return None
        if future is None:
            raise ValueError(f"this model takes controls {list(expected)}: pass future_controls for the {horizon} forecast steps")
        given, _ = to_sequences(future, "future_controls", InputSchema((len(expected),), expected), 1)
        lengths, n = [int(k) for k in given.layout.lengths], sequences.layout.n_series
        if given.layout.n_series != n or any(k != horizon for k in lengths) or given.values.shape[1] != horizon:
            raise ValueError(
                f"future_controls must give all {len(expected)} controls at each of the {horizon} forecast steps "
                f"of each of the {n} series, got {given.layout.n_series} series of lengths {lengths[:5]}"
            )
        for i, (mine, theirs) in enumerate(zip(sequences.layout.grids, given.layout.grids)):
            if mine is not None and theirs is not None and not theirs.index.equals(mine.future(horizon)):
                raise ValueError(
                    f"future_controls of series {sequences.layout.series[i]!r} must be indexed by the {horizon} "
                    f"steps after X's end ({list(mine.future(horizon))[:3]}...), got {list(theirs.index)[:3]}..."
                )
        values = given.values[:, :horizon]
        if not np.isfinite(values).all():
            raise ValueError("future_controls must be finite (NaN or inf found)")
        return values
