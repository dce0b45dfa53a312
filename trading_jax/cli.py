"""The `trading-jax` command: thin argument parsing over library calls.

Subcommands:
    data validate FILE...   print the validation report; exit 1 when any file has errors.
    data inspect FILE...    summarise what would be loaded (symbols, range, frequency, gaps).
    features                compute the feature tensor of a file (or a built-in synthetic market),
                            fit its normaliser on the training split only, save it as .npz.
    train CONFIG            run an experiment file (experiments/*.toml; supervised, or PPO when it says
                            algorithm = "ppo"): train every seed, checkpoint, log to TensorBoard,
                            report held-out metrics against baselines.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

EXIT_OK, EXIT_DATA_ERRORS, EXIT_USAGE = 0, 1, 2
REPAIRS = ("drop_duplicates", "ffill_gaps", "swap_volume", "all")


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="FILE", help="CSV/parquet/feather files, directories or globs")
    parser.add_argument("--symbol-column", help="column holding the symbol in a long-format file")
    parser.add_argument("--timestamp-column", help="column holding the timestamps (default: detected)")
    parser.add_argument(
        "--repair", action="append", default=[], choices=REPAIRS,
        help="apply a repair and report it (repeatable); nothing is repaired unless asked",
    )


def _load_kwargs(args: argparse.Namespace) -> dict:
    return dict(symbol_column=args.symbol_column, timestamp_column=args.timestamp_column, repair=tuple(args.repair))


def _paths(args: argparse.Namespace):
    return args.paths if len(args.paths) > 1 else args.paths[0]


def cmd_data_validate(args: argparse.Namespace) -> int:
    from trading_jax.data.loading import validate_files

    report = validate_files(_paths(args), **_load_kwargs(args))
    print(report.format())
    return EXIT_OK if report.ok else EXIT_DATA_ERRORS


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from trading_jax.data.loading import describe, load_ohlcv

    data = load_ohlcv(_paths(args), strict=False, **_load_kwargs(args))
    print(describe(data))
    return EXIT_OK if data.report.ok else EXIT_DATA_ERRORS


def cmd_features(args: argparse.Namespace) -> int:
    from trading_jax.features.pipeline import run_feature_job

    summary = run_feature_job(
        paths=args.paths, out=args.out, synthetic_bars=args.synthetic_bars, synthetic_assets=args.synthetic_assets,
        seed=args.seed, train_fraction=args.train_fraction, repair=tuple(args.repair),
    )
    print(summary)
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    import dataclasses

    from trading_jax.rl.experiment import is_rl_experiment, load_rl_experiment, run_rl_experiment
    from trading_jax.training.experiment import load_experiment, run_experiment

    if is_rl_experiment(args.config):
        experiment, run = load_rl_experiment(args.config), run_rl_experiment
    else:
        experiment, run = load_experiment(args.config), run_experiment
    if args.seeds:
        experiment = dataclasses.replace(experiment, seeds=tuple(args.seeds))
    print(run(experiment, args.out or Path("runs") / experiment.name))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trading-jax", description="Train and evaluate trading models in JAX.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    data = commands.add_parser("data", help="load, validate and inspect OHLCV files")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_commands.required = True
    validate = data_commands.add_parser("validate", help="report every problem in OHLCV files (exit 1 on errors)")
    _add_load_options(validate)
    validate.set_defaults(func=cmd_data_validate)
    inspect = data_commands.add_parser("inspect", help="summarise OHLCV files: symbols, range, frequency, gaps")
    _add_load_options(inspect)
    inspect.set_defaults(func=cmd_data_inspect)

    features = commands.add_parser(
        "features", help="compute the normalised feature tensor of a file or a synthetic market and save it"
    )
    features.add_argument("paths", nargs="*", metavar="FILE", help="OHLCV files (default: a built-in synthetic market)")
    features.add_argument("--out", default="runs/features.npz", help="output .npz (default: %(default)s)")
    features.add_argument("--synthetic-bars", type=int, default=5000, help="bars of the synthetic market")
    features.add_argument("--synthetic-assets", type=int, default=4, help="assets of the synthetic market")
    features.add_argument("--seed", type=int, default=0, help="PRNG seed of the synthetic market")
    features.add_argument("--train-fraction", type=float, default=0.7, help="leading fraction the normaliser is fit on")
    features.add_argument("--repair", action="append", default=[], choices=REPAIRS, help="repairs for loaded files")
    features.set_defaults(func=cmd_features)

    train = commands.add_parser("train", help="run an experiment config (experiments/*.toml): supervised or PPO")
    train.add_argument("config", help="experiment TOML file")
    train.add_argument("--out", help="output folder (default: runs/NAME)")
    train.add_argument("--seeds", type=int, nargs="+", help="override the config's seeds")
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `trading-jax` console script."""
    from trading_jax.logging import configure

    parser = build_parser()
    args = parser.parse_args(argv)
    configure(args.verbose)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as error:  # data errors carry a full, actionable message
        print(f"trading-jax: error: {error}", file=sys.stderr)
        return EXIT_DATA_ERRORS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
