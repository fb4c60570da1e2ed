"""The ``ldmfilter`` command line."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, verbose=not args.quiet)
    return 0


def _info(args) -> int:
    from . import load

    model = load(args.model)
    print(f"model file: {args.model}")
    print(f"observation shape: {model.obs_shape_}")
    for name in ("state_dim", "latent_dim", "encoder", "noise", "objective", "predictor", "dtype"):
        print(f"{name}: {getattr(model, name)}")
    print(f"parameters: {sum(p.numel() for p in model.model_.parameters())}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldmfilter", description="Bayesian filtering and forecasting of high-dimensional time series."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train on a noisy video, filter, forecast, compare with baselines")
    demo.add_argument("--quick", action="store_true", help="tiny settings that finish in seconds (CI)")
    demo.add_argument("--out", default="ldmfilter-demo", help="folder for the figures and report.md")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)
    info = commands.add_parser("info", help="describe a saved model file")
    info.add_argument("model", help="path of a file written by LDMFilter.save")
    info.set_defaults(run=_info)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"ldmfilter {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
