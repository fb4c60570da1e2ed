"""The ``ldmfilter`` command line: ``demo``, ``fit``, ``filter``, ``smooth``, ``forecast``, ``calibrate``, ``info``.

Data files are CSV/TSV, Parquet, NetCDF or Zarr (see :mod:`ldmfilter.io.files`); results are
written as means, standard deviations and central intervals in the format of the output's
extension.  Bad input ends with ``ldmfilter <command>: error: …`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import warnings
from pathlib import Path

__all__ = ["main", "build_parser"]

SPACES = ("state", "observations", "targets")
USER_ERRORS = (ValueError, TypeError, OSError, RuntimeError, ImportError)


# ---------------------------------------------------------------------------------- helpers
def _int_at_least(least: int, expected: str):
    """An argparse type: an integer >= ``least`` (``expected`` names it in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0.0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _check_output(path: str, what: str) -> Path:
    """Fail before any work when the output's folder does not exist (and, for results, its type is unknown)."""
    out = Path(path)
    if what == "result":
        from .io.files import file_format

        file_format(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder {str(out.parent)!r} for the {what} file does not exist")
    if out.is_dir():
        raise ValueError(f"{path!r} is a folder; give a file name for the {what}")
    return out


def _read(args):
    from .io.files import read_table

    return read_table(args.data, time_col=args.time_col, series_col=args.series_col)


def _check_order(data, path: str) -> None:
    """Every series' timestamps must increase; say where they do not, in the file's terms."""
    import pandas as pd

    if not isinstance(data, pd.DataFrame):
        return
    if isinstance(data.index, pd.MultiIndex):
        parts = [(key, part.index.get_level_values(1)) for key, part in data.groupby(level=0, sort=False)]
    else:
        parts = [(None, data.index)]
    for key, index in parts:
        if index.is_monotonic_increasing or index.hasnans:
            continue  # missing timestamps get their own message from the estimator
        position = int((index[1:] < index[:-1]).argmax()) + 1
        where = "" if key is None else f" in series {key!r}"
        hint = ""
        labels = [str(c) for c in data.columns if not pd.api.types.is_numeric_dtype(data[c])]
        if key is None and labels:
            hint = f"; if it holds several series in long form, name the column of their ids with --series-col (e.g. {labels[0]!r})"
        raise ValueError(
            f"{path}: the time column {index.name!r} is not sorted{where} ({index[position]} comes after "
            f"{index[position - 1]}); sort the file by time{hint}"
        )


def _channel_dim(data) -> str | None:
    """The one observation dim of a DataArray of vectors (None for video or univariate data)."""
    rest = [d for d in data.dims if d not in ("time", "series")]
    return str(rest[0]) if len(rest) == 1 else None


def _names(data) -> list[str]:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return [str(c) for c in data.columns]
    dim = _channel_dim(data)
    return [] if dim is None or dim not in data.coords else [str(v) for v in data[dim].values]


def _select(data, names: list[str]):
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data[names]
    dim = _channel_dim(data)
    return data.sel({dim: names})


def _split(data, path: str, columns: list[str] | None, targets: list[str] | None, controls: list[str] | None = None):
    """Inputs (observations, then controls) and read-out targets (or None) from the columns (channels) of ``data``."""
    if not columns and not targets and not controls:
        return data, None
    available = _names(data)
    if not available:
        raise ValueError(
            f"{path} has no named channels (columns, or a 'feature'-like dim with labels) to choose with "
            "--columns/--targets/--controls"
        )
    for option, chosen in (("--columns", columns), ("--targets", targets), ("--controls", controls)):
        missing = [c for c in chosen or () if c not in available]
        if missing:
            raise ValueError(f"{option} names channels that {path} does not have: {missing}; it has {available[:20]}")
    targets, controls = list(targets or ()), list(controls or ())
    inputs = list(columns) if columns else [c for c in available if c not in targets + controls]
    for (a, name_a), (b, name_b) in [((inputs, "inputs (--columns)"), (targets, "--targets")),
                                     ((inputs, "inputs (--columns)"), (controls, "--controls")),
                                     ((targets, "--targets"), (controls, "--controls"))]:
        overlap = sorted(set(a) & set(b))
        if overlap:
            raise ValueError(f"channels {overlap} are both {name_a} and {name_b}")
    if not inputs:
        raise ValueError(f"no input channels are left in {path} after taking out the targets and controls {targets + controls}")
    return _select(data, inputs + controls), (_select(data, targets) if targets else None)


def _model_inputs(model, data):
    """The channels the model was fitted on (and its controls), when ``data`` holds them all (extra ones, e.g.
    targets, are dropped)."""
    names = getattr(model.schema_, "feature_names", None)
    if not names:
        return data
    names = tuple(names) + tuple(getattr(model.schema_, "control_names", None) or ())
    available = _names(data)
    if available and set(names) <= set(available) and list(names) != available:
        return _select(data, list(names))
    return data


@contextlib.contextmanager
def _training_output(quiet: bool):
    """Lightning's progress bar only: its start-up log lines and data-loader hints are dropped."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in (".*does not have many workers.*", ".*treespec.*", ".*LeafSpec.*", ".*GPU available.*"):
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        logger.setLevel(level)


def _shape(data) -> str:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return f"{data.shape[0]} rows × {data.shape[1]} columns"
    return " × ".join(f"{data.sizes[d]} {d}" for d in data.dims)


def _short(names, limit: int = 8) -> str:
    names = list(names)
    text = ", ".join(names[:limit])
    return text + (f", … ({len(names)} in all)" if len(names) > limit else "")


# ---------------------------------------------------------------------------------- commands
def _demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, verbose=not args.quiet)
    return 0


def _fit(args) -> int:
    from .estimators import LDMFilter
    from .io import to_sequences

    out = _check_output(args.model, "model")
    data = _read(args)
    _check_order(data, args.data)
    inputs, targets = _split(data, args.data, args.columns, args.targets, args.controls)
    observations = _select(inputs, [c for c in _names(inputs) if c not in args.controls]) if args.controls else inputs
    sequences, schema = to_sequences(observations, "DATA", None, min_steps=2)
    options = dict(
        state_dim=args.state_dim,
        latent_dim=args.latent_dim,
        encoder=args.encoder,
        noise=args.noise,
        dynamics=args.dynamics,
        moments=args.moments,
        observation=args.observation,
        multistep=args.multistep,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        window=args.window,
        random_state=args.seed,
        n_init=args.n_init,
        verbose=not args.quiet,
        trainer_kwargs={"enable_model_summary": False} | ({} if args.clip is None else {"gradient_clip_val": args.clip}),
    )
    if args.hidden:
        options["hidden"] = tuple(args.hidden)
    if args.learning_rate is not None:
        options["learning_rate"] = args.learning_rate
    model = LDMFilter(**options)
    with _training_output(args.quiet):
        model.fit(inputs, targets=targets, controls=args.controls)
    model.save(out)

    layout = sequences.layout
    history = model.loss_history_
    per_epoch = max(1, len(history) // max(1, args.epochs))
    final = sum(history[-per_epoch:]) / len(history[-per_epoch:]) if history else float("nan")
    steps = sorted(set(int(n) for n in layout.grid_lengths()))
    missing = 1.0 - float(sequences.observed_fraction.mean())
    channels = schema.feature_names or [f"{schema.obs_shape}"]
    lines = [
        f"data:            {args.data} ({_shape(data)})",
        f"series:          {layout.n_series}",
        f"time steps:      {steps[0] if len(steps) == 1 else f'{steps[0]}–{steps[-1]}'} per series "
        f"({sum(layout.lengths)} rows, {missing:.1%} missing)",
        f"channels:        {int(sequences.values[0, 0].size)} ({_short(channels)})",
        f"frequency:       {schema.frequency or 'none (steps 0, 1, …)'}",
    ]
    if targets is not None:
        lines.append(f"targets:         {_short(model.target_names_)}")
    if args.controls:
        lines.append(f"controls:        {_short(args.controls)}")
    dynamics = model.dynamics if model.dynamics == "linear" else f"{model.dynamics} ({model.moments})"
    lines += [
        f"model:           state_dim={model.state_dim}, latent_dim={model.latent_dim}, encoder={model.encoder}, "
        f"noise={model.noise}, dynamics={dynamics}, observation={model.observation}",
        f"epochs:          {args.epochs} ({len(history)} optimiser step{'' if len(history) == 1 else 's'})",
        f"training time:   {model.training_seconds_:.2f} s",
        f"final loss:      {final:.4g} (mean over the last epoch)",
        *([] if args.n_init == 1 else [_restarts(model)]),
        f"model file:      {out}",
    ]
    print("\n".join(lines))
    return 0


def _restarts(model) -> str:
    """``restarts:  seeds 0, 100, 200; final losses …; agreement …; kept 100`` (the fit summary's line)."""
    scores = ", ".join("not scored" if math.isnan(score) else f"{score:.3f}" for score in model.restart_scores_)
    return (f"restarts:        seeds {', '.join(map(str, model.restart_seeds_))}; final losses "
            f"{', '.join(f'{loss:.4g}' for loss in model.restart_losses_)}; agreement {scores}; "
            f"kept {model.restart_seeds_[model.restart_index_]}")


def _apply(args) -> int:
    from . import load
    from .io.files import read_table, write_result

    out = _check_output(args.out, "result")
    model = load(args.model)
    data = _read(args)
    _check_order(data, args.data)
    data = _model_inputs(model, data)
    if args.command == "forecast":
        future = None
        if args.future_controls is not None:
            future = read_table(args.future_controls, time_col=args.time_col, series_col=args.series_col)
            names = list(getattr(model.schema_, "control_names", None) or ())
            future = _select(future, names) if names and set(names) <= set(_names(future)) else future
        result = model.forecast(data, args.horizon, future_controls=future)
    else:
        result = getattr(model, args.command)(data)
    write_result(result, out, space=args.space, coverage=args.coverage)
    what = f"{args.horizon}-step forecast" if args.command == "forecast" else f"{args.command}ed beliefs"
    space = args.space or ("observations" if result.observations is not None else "state")
    print(f"wrote {what} ({space}, {args.coverage:.0%} intervals) to {out}")
    return 0


def _calibrate(args) -> int:
    from . import load

    out = _check_output(args.out or args.model, "model")
    model = load(args.model)
    data = _read(args)
    _check_order(data, args.data)
    data, targets = _split(data, args.data, None, args.targets)
    model.calibrate_forecast(_model_inputs(model, data), args.horizon, Y=targets, burn_in=args.burn_in, every=args.every,
                             method=args.method, level=args.level)
    model.save(out)
    against = f"targets {_short(args.targets)}" if args.targets else "the observations"
    criterion = "maximum likelihood" if args.method == "likelihood" else f"{args.level:.0%} coverage"
    print(f"calibrated {args.horizon}-step forecasts against {against} ({criterion}); factors on the state covariance:")
    print(_factors(model.forecast_scale_))
    print(f"wrote {out}")
    return 0


def _factors(scale) -> str:
    """``h=1: 1.02, h=2: …`` (at most 10 horizons, then the last)."""
    shown = list(range(min(len(scale), 10))) + ([len(scale) - 1] if len(scale) > 10 else [])
    return ", ".join(f"h={h + 1}: {scale[h]:.3g}" for h in shown)


def _info(args) -> int:
    from . import load

    model = load(args.model)
    print(f"model file: {args.model}")
    print(f"observation shape: {model.obs_shape_}")
    for name in ("state_dim", "latent_dim", "encoder", "noise", "objective", "predictor", "dynamics", "moments", "observation",
                 "multistep", "n_init", "dtype"):
        print(f"{name}: {getattr(model, name)}")
    print(f"parameters: {sum(p.numel() for p in model.model_.parameters())}")
    schema = model.schema_
    if schema.feature_names:
        print(f"channels: {_short(schema.feature_names)}")
    if schema.frequency:
        print(f"frequency: {schema.frequency}")
    if getattr(schema, "control_names", None):
        print(f"controls: {_short(schema.control_names)}")
    readouts = sorted(getattr(model, "readouts_", {}))
    print(f"read-outs: {', '.join(readouts) or 'none'}")
    if getattr(model, "target_names_", None):
        print(f"targets: {_short(model.target_names_)}")
    if getattr(model, "forecast_scale_", None) is not None:
        print(f"forecast calibration: {_factors(model.forecast_scale_)}")
    return 0


# ---------------------------------------------------------------------------------- parser
def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="data file: .csv/.tsv (also .gz …), .parquet/.pq, .nc or .zarr")
    parser.add_argument(
        "--time-col", metavar="NAME",
        help="time column (dim) of DATA; default: the one named time/date/datetime/timestamp, else the first holding dates",
    )
    parser.add_argument(
        "--series-col", metavar="NAME",
        help="column (dim) naming the series of a long table with several series",
    )


def _apply_parser(commands, name: str, help: str, description: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help, description=description)
    _data_options(parser)
    parser.add_argument("--model", "-m", required=True, metavar="FILE", help="model file written by `ldmfilter fit`")
    if name == "forecast":
        parser.add_argument("--horizon", type=_positive_int, required=True, metavar="H", help="steps to forecast after each series' end")
        parser.add_argument(
            "--future-controls", metavar="FILE",
            help="data file with the control columns for the H forecast steps (models fitted with --controls)",
        )
    parser.add_argument(
        "--out", "-o", required=True, metavar="FILE",
        help="result file: .csv/.tsv or .parquet (columns v, v_std, v_lower, v_upper per variable), .nc or .zarr",
    )
    parser.add_argument(
        "--space", choices=SPACES,
        help="beliefs over the state, the observations or the fitted targets (default: observations)",
    )
    parser.add_argument("--coverage", type=_probability, default=0.9, metavar="P", help="probability of the central interval (default 0.9)")
    parser.set_defaults(run=_apply)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldmfilter", description="Bayesian filtering and forecasting of high-dimensional time series."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="train on a noisy video, filter, forecast, compare with baselines")
    demo.add_argument("--quick", action="store_true", help="tiny settings that finish in seconds (CI)")
    demo.add_argument("--out", default="ldmfilter-demo", help="folder for the figures and report.md")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)

    fit = commands.add_parser(
        "fit", help="train a model on a data file and save it",
        description="Train an LDMFilter on DATA (rows = time, columns = channels; NaN = missing) and write a model file.",
    )
    _data_options(fit)
    fit.add_argument("--model", "-m", required=True, metavar="FILE", help="model file to write (e.g. model.ldm)")
    fit.add_argument("--columns", nargs="+", metavar="COL", help="input channels (default: all but the targets)")
    fit.add_argument(
        "--targets", nargs="+", metavar="COL",
        help="channels of DATA to read out of the filter's state rather than use as inputs",
    )
    fit.add_argument("--state-dim", type=_positive_int, default=10, metavar="S", help="dimension S of the filter's state (default 10)")
    fit.add_argument("--latent-dim", type=_positive_int, default=5, metavar="L", help="encoder output dimension L ≤ S (default 5)")
    fit.add_argument("--encoder", choices=("mlp", "conv"), default="mlp", help="mlp (any data) or conv (video frames)")
    fit.add_argument("--hidden", type=_positive_int, nargs="+", metavar="N", help="hidden widths of the MLP encoder (default 100)")
    fit.add_argument("--noise", choices=("fixed", "learned", "input", "input_absolute", "input_full"), default="fixed", help="pseudo-observation noise (default fixed)")
    fit.add_argument("--dynamics", choices=("linear", "mlp"), default="linear", help="transition: linear, or linear + a bounded MLP (default linear)")
    fit.add_argument(
        "--moments", choices=("linearize", "unscented", "cubature"), default="linearize",
        help="moment rule of --dynamics mlp and of a nonlinear --observation (default linearize)",
    )
    fit.add_argument("--observation", choices=("linear", "mlp", "clamp"), default="linear",
                     help="map from state to latents: linear, linear + an MLP, or each latent clamped between learned "
                          "bounds (default linear)")
    fit.add_argument("--controls", nargs="+", metavar="COL", help="channels of DATA that are control inputs of the transition")
    fit.add_argument("--multistep", type=_positive_int, default=1, metavar="K",
                     help="the objective also scores the 2- to K-step predictions (default 1: one step)")
    fit.add_argument("--epochs", type=_positive_int, default=20, metavar="N", help="training epochs (default 20)")
    fit.add_argument("--batch-size", type=_positive_int, default=8, metavar="N", help="sequences (windows) per batch (default 8)")
    fit.add_argument("--window", type=_positive_int, metavar="STEPS", help="train on windows of this many steps (default: whole series)")
    fit.add_argument("--learning-rate", type=float, metavar="LR", help="encoder learning rate (default 0.005·8/256)")
    fit.add_argument("--clip", type=_positive_float, metavar="NORM",
                     help="clip the gradient norm of every optimiser step at NORM (default: no clipping)")
    fit.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    fit.add_argument("--n-init", type=_positive_int, default=1, metavar="K",
                     help="train K runs (seeds SEED + 100·k); of those whose final loss is not clearly worse, keep the one "
                          "the others agree with most; 1 or ≥ 3 (default 1)")
    fit.add_argument("--quiet", "-q", action="store_true", help="no progress bar (the summary is still printed)")
    fit.set_defaults(run=_fit)

    _apply_parser(
        commands, "filter", "filtered beliefs p(h_t | x_≤t) at every row of a data file",
        "Filter DATA with a saved model; write means, standard deviations and central intervals.",
    )
    _apply_parser(
        commands, "smooth", "smoothed beliefs p(h_t | all x) at every row of a data file",
        "Smooth DATA (Rauch–Tung–Striebel) with a saved model; write means, standard deviations and intervals.",
    )
    _apply_parser(
        commands, "forecast", "beliefs over the steps after the end of each series",
        "Forecast H steps past the end of each series of DATA; the time index continues at the series' step.",
    )

    calibrate = commands.add_parser(
        "calibrate", help="recalibrate a saved model's forecast intervals on held-out data",
        description="Forecast H steps from many origins of DATA (series the model was not fitted on), fit one factor per "
        "horizon on the forecast covariance (by maximum likelihood, or so that the intervals of a level cover that "
        "share), and write the model with the factors (LDMFilter.calibrate_forecast).",
    )
    _data_options(calibrate)
    calibrate.add_argument("--model", "-m", required=True, metavar="FILE", help="model file to calibrate")
    calibrate.add_argument("--horizon", type=_positive_int, required=True, metavar="H", help="steps ahead to calibrate")
    calibrate.add_argument(
        "--targets", nargs="+", metavar="COL",
        help="target channels of DATA to calibrate against (the model's targets); default: its observations",
    )
    calibrate.add_argument("--burn-in", type=_non_negative_int, metavar="STEPS",
                           help="first forecast origin of each series (default: a quarter of its steps)")
    calibrate.add_argument("--every", type=_positive_int, metavar="STEPS",
                           help="steps between origins (default: at most 2048 origins)")
    calibrate.add_argument("--method", choices=("likelihood", "coverage"), default="likelihood",
                           help="what the factors optimise (default: likelihood)")
    calibrate.add_argument("--level", type=_probability, default=0.9, metavar="P",
                           help="interval level of --method coverage (default 0.9)")
    calibrate.add_argument("--out", "-o", metavar="FILE", help="model file to write (default: overwrite --model)")
    calibrate.set_defaults(run=_calibrate)

    info = commands.add_parser("info", help="describe a saved model file")
    info.add_argument("model", help="path of a file written by LDMFilter.save or `ldmfilter fit`")
    info.set_defaults(run=_info)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit status (2 on bad input, with a one-line message)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as error:
        message = str(error) or type(error).__name__
        if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
            message = f"{message}: {error.filename}"
        print(f"ldmfilter {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
