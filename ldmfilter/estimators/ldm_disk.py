"""``LDMFilter.fit`` on data left on disk: what differs from the in-memory fit.

The input is scanned once (:func:`~ldmfilter.io.disk_input.open_disk`: validation, missing
frames, standardisation statistics), training windows are read when served
(:class:`~ldmfilter.training.disk_windows.DiskWindows`), and the read-outs are fitted on the
filtered states of all the data in slabs of bounded size: one pass to filter (frames are encoded
slab by slab; the filter runs on the latents, a few numbers per frame, series block by series
block), two passes to reduce the least-squares problem of the observation read-out
(:func:`~ldmfilter.nn.affine.reduce_affine_streamed`).  Memory holds a slab of frames and a few
numbers per frame (latents, filtered state means, the read-out's ``Q`` factor), never the data.
"""

from __future__ import annotations

import numpy as np
import torch

from ..io.disk_input import DiskSequences
from ..nn.affine import reduce_affine_streamed
from ..nn.normalization import Standardizer
from ..nn.readout import LinearReadout
from .base import FULL_COVARIANCE_MAX_DIM, READOUTS

__all__ = ["check_disk_options", "check_disk_frames", "disk_normalizer", "fit_disk_readouts"]


def check_disk_options(epoch_data, readout: str, predictor: str) -> None:
    """ValueError for the options of ``fit`` that need the data in memory."""
    if epoch_data is not None:
        raise ValueError(
            "epoch_data needs the training data in memory; it cannot be combined with X left on disk "
            "(an out-of-core DataArray): load X (X.load()) or fit without epoch_data"
        )
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if readout != "linear" and predictor == "kalman":
        raise ValueError(
            f"readout={readout!r} is fitted by stochastic gradients on all frames in memory; with X left on disk "
            "(an out-of-core DataArray) use readout='linear' (fitted block by block), or load X (X.load())"
        )


def check_disk_frames(sequences: DiskSequences, predictor: str) -> None:
    """ValueError for frames with some values missing, which the block-wise read-out cannot take."""
    if sequences.partial_frame is not None and predictor == "kalman":
        series, row = sequences.partial_frame
        raise ValueError(
            f"X has frames with some but not all values missing (first: series {series}, time row {row}); the "
            "observation read-out of X left on disk is fitted block by block, which needs every frame wholly "
            "observed or wholly missing (NaN everywhere): fill those values, mark the frames missing, or load X (X.load())"
        )


def disk_normalizer(sequences: DiskSequences, obs_ndim: int, kind: str, dtype: torch.dtype, dtype_name: str) -> Standardizer:
    """The input standardisation from the scan's statistics; ValueError for values beyond ``dtype``'s range."""
    if sequences.largest > float(torch.finfo(dtype).max):
        raise ValueError(
            f"X has values of magnitude {sequences.largest:.3g}, beyond the range of the model's dtype {dtype_name}; "
            "rescale them or use LDMFilter(dtype='float64')"
        )
    shape = sequences.shape[2:]
    moments = sequences.moments
    mean = torch.as_tensor(moments.means.reshape(shape))
    variance = torch.as_tensor(moments.variance.reshape(shape))
    return Standardizer.from_moments(mean, variance, obs_ndim, kind, dtype, sequences.largest)


def _rows_in_grid(sequences: DiskSequences, series: slice, rows: slice) -> torch.Tensor:
    """Flat indices ``i · T + step`` of a slab's frames in the (n, T) grid, series-major."""
    steps = sequences.shape[1]
    positions = torch.as_tensor(sequences.array.positions[rows])
    return (torch.arange(series.start, series.stop)[:, None] * steps + positions[None, :]).reshape(-1)


def _cov_sum(cov: torch.Tensor, count: int) -> torch.Tensor:
    """Sum of ``count`` covariances (*lead, S, S), float64; broadcast (stride-0) axes are summed once and scaled."""
    base = cov
    while base.ndim > 2 and base.stride(0) == 0:
        base = base[0]
    total = base.to(torch.float64).sum(dim=tuple(range(base.ndim - 2)))
    return total * (count / max(1, base[..., 0, 0].numel()))


@torch.no_grad()
def _filtered_states(model, sequences: DiskSequences, controls: torch.Tensor | None, dtype: torch.dtype):
    """Filtered state means (n, T, S) of all series and the average filtered covariance (S, S), float64.

    Frames are encoded slab by slab; missing grid steps get the encoding of a zero (standardised)
    frame, as in the model's forward pass; the filter then runs on each block's latents.
    """
    n, steps = sequences.shape[:2]
    observed = torch.as_tensor(sequences.observed)
    all_observed = bool(observed.all())
    blank = torch.zeros((1, 1) + tuple(sequences.shape[2:]), dtype=dtype)
    blank_z = model.encoder(blank)[0, 0]
    per_frame = getattr(model.noise, "input_dependent", False)
    blank_noise = model.noise(blank, model.dynamics.log_scale)  # (L, L), or (1, 1, L, L) per frame
    blank_R = blank_noise[0, 0] if per_frame else blank_noise
    S = model.dynamics.state_dim
    itemsize = torch.finfo(dtype).bits // 8
    means = torch.empty(n, steps, S, dtype=dtype)
    cov_total = torch.zeros(S, S, dtype=torch.float64)
    block_bytes = 6 * S * S * itemsize  # per frame: covariances, gains and means of the filter
    current, z, R = None, None, None  # the block's series, latents and per-frame noise

    def finish(block: slice):
        mask = None if all_observed else observed[block]
        u = None if controls is None else controls[block]
        result = model.filter_latents(z, R if per_frame else blank_R, mask, u)
        means[block] = result.filtered_mean
        return _cov_sum(result.filtered_cov, (block.stop - block.start) * steps)

    array = sequences.array
    for series, rows, values in array.read_slabs(frame_bytes=max(array.frame_bytes, block_bytes)):
        if series != current:
            if current is not None:
                cov_total += finish(current)
            count = series.stop - series.start
            current = series
            z = blank_z.expand(count, steps, -1).clone()
            if per_frame:
                R = blank_R.expand(count, steps, -1, -1).clone()
        x = torch.as_tensor(values, dtype=dtype)
        place = torch.as_tensor(array.positions[rows])
        mask = None if all_observed else observed[series][:, place]
        head = (lambda inputs: model.noise(inputs, model.dynamics.log_scale)) if per_frame else None
        z[:, place], noise = model.encode_with(x, mask, head)
        if per_frame:
            R[:, place] = noise
    cov_total += finish(current)
    return means, cov_total / (n * steps)


def fit_disk_readouts(estimator, sequences: DiskSequences, controls: torch.Tensor | None, targets) -> None:
    """Fit ``estimator.readouts_`` (linear) on the filtered states of data left on disk.

    The observation read-out reads the data twice more, in slabs; a target read-out uses the
    targets in memory (``targets`` laid out like ``X``, a few numbers per frame).
    """
    dtype = estimator.model_.normalizer.mean.dtype
    means, mean_cov = _filtered_states(estimator.model_, sequences, controls, dtype)
    array = sequences.array
    width = int(np.prod(sequences.shape[2:]))

    def read_targets():
        for series, rows, values in array.read_slabs():
            yield _rows_in_grid(sequences, series, rows), torch.as_tensor(values, dtype=torch.float64).reshape(-1, width)

    diagonal = width > FULL_COVARIANCE_MAX_DIM
    present = torch.as_tensor(sequences.observed)
    problem = reduce_affine_streamed(means, read_targets, width, present, cross=not diagonal)
    estimator.readouts_["observations"] = LinearReadout.from_problem(problem, mean_cov, diagonal)
    if targets is not None:
        values, estimator.target_names_ = estimator._targets(targets, sequences)
        flat = torch.as_tensor(values.reshape(values.shape[:2] + (-1,)), dtype=torch.float64)
        estimator.readouts_["targets"] = LinearReadout.fit(means, flat, mean_cov, diagonal=flat.shape[-1] > FULL_COVARIANCE_MAX_DIM)
