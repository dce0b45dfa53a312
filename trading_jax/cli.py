"""The `trading-jax` command: thin argument parsing over library calls.

Subcommands:
    data validate FILE...   print the validation report; exit 1 when any file has errors.
    data inspect FILE...    summarise what would be loaded (symbols, range, frequency, gaps).
    features                compute the feature tensor of a file (or a built-in synthetic market),
                            fit its normaliser on the training split only, save it as .npz.
    train CONFIG            run an experiment file (experiments/*.toml; supervised, or the algorithm it names:
                            ppo, maml, ensemble, ppo_ensemble, sentiment): train every seed, checkpoint, log to TensorBoard,
                            report held-out metrics against baselines; then export the model to OUT/export.
    tune CONFIG             hyperparameter search on Ray Tune over the file's [tune] table (local Ray by default,
                            --address attaches to a cluster); writes RUN/results.md and RUN/best.toml.
    export RUN_DIR OUT_DIR  export a run for serving (weights, jax.export StableHLO, ONNX, metadata);
                            --mlflow logs it as a registered model version.
    export-pipeline PREDICTOR POLICY OUT_DIR
                            seed 000's inference pipeline (features -> predictor -> signal -> execution
                            plan) as one exported function.
    serve EXPORT_DIR        an HTTP server (FastAPI) over an export.
    analyze RUN_DIR TEXT... score texts with a trained sentiment run (label, P(bullish) - P(bearish),
                            confidence); --file reads a CSV column, --out writes a CSV.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

EXIT_OK, EXIT_DATA_ERRORS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
REPAIRS = ("drop_duplicates", "ffill_gaps", "swap_volume", "all")
# the algorithms whose trainers shard over a multi-process mesh (batch / env axis), tested against 1 process
DISTRIBUTED_ALGORITHMS = ("supervised", "ppo", "sac", "td3", "ddpg", "dqn")


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
    import dataclasses
    from pathlib import Path

    from trading_jax.runs import ConfigError, load_experiment, run_experiment

    distributed = _start_distributed(args)
    experiment = load_experiment(args.config)
    if getattr(args, "distributed", False) and experiment.algorithm not in DISTRIBUTED_ALGORITHMS:
        from trading_jax.distributed import DistributedError

        raise DistributedError(f"{args.config}: algorithm = {experiment.algorithm!r} does not train across processes "
                               f"yet; --distributed runs {', '.join(DISTRIBUTED_ALGORITHMS)} (train this one without it)")
    if args.seeds:
        if len(set(args.seeds)) != len(args.seeds):
            raise ConfigError(f"--seeds {' '.join(map(str, args.seeds))}: expected distinct seeds")
        experiment = dataclasses.replace(experiment, seeds=tuple(args.seeds))
    out = Path(args.out) if args.out else Path("runs") / experiment.name
    try:
        with distributed:
            summary, ok = run_experiment(experiment, out, overwrite=args.overwrite, show_progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"trading-jax: interrupted; rerun the same command to resume {out} from its last checkpoint",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    import jax

    if jax.process_index() != 0:  # a multi-process run: process 0 reports
        return EXIT_OK if ok else EXIT_DATA_ERRORS
    print(summary)
    if ok and not args.no_export and jax.process_count() > 1:
        # exporting traces and runs programs on this process's devices while the others wait in JAX's shutdown
        # barrier (which times out and aborts them): a single process exports the finished run instead
        from trading_jax.export.from_run import BUILDERS

        if experiment.algorithm in BUILDERS:
            print(f"not exported (a multi-process run): export it from one process with `trading-jax export {out} "
                  f"{out / 'export'}`")
    elif ok and not args.no_export:
        _export_after_training(experiment, out)
    return EXIT_OK if ok else EXIT_DATA_ERRORS


def _start_distributed(args: argparse.Namespace):
    """`train --distributed`: join the multi-process run (flags, else the environment: SLURM, Kubernetes, JAX_*,
    TRADING_JAX_*) and return a context that makes the global mesh the active one; without the flag, a context
    that does nothing (and a usage error for the other distributed flags)."""
    import contextlib

    given = [f"--{n.replace('_', '-')}" for n in ("coordinator", "num_processes", "process_id")
             if getattr(args, n, None) is not None]
    if not getattr(args, "distributed", False):
        if given:
            from trading_jax.distributed import DistributedError

            raise DistributedError(f"{', '.join(given)} only apply with --distributed")
        return contextlib.nullcontext()
    from trading_jax import distributed, parallel
    from trading_jax.logging import get_logger

    settings = distributed.initialize(
        distributed.resolve_settings(args.coordinator, args.num_processes, args.process_id),
        timeout_s=args.distributed_timeout)
    mesh = parallel.make_mesh()
    import jax

    get_logger(__name__).info("distributed: %s; global mesh of %d devices (%d here)", settings.describe(),
                              jax.device_count(), jax.local_device_count())
    return parallel.use_mesh(mesh)


def cmd_tune(args: argparse.Namespace) -> int:
    """`trading-jax tune CONFIG`: the file's [tune] search (`trading_jax.runs.tune.run_search`); Ray is imported
    only here."""
    from trading_jax.runs.tune import ClusterError, RayMissingError, SearchInterrupted, run_search

    try:
        summary, best = run_search(args.config, args.out, address=args.address, overwrite=args.overwrite,
                                   num_cpus=args.num_cpus, num_gpus=args.num_gpus, verbose=0 if args.quiet else 1)
    except (RayMissingError, ClusterError) as error:
        print(f"trading-jax: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (SearchInterrupted, KeyboardInterrupt) as error:
        print(f"trading-jax: {error or 'interrupted: rerun the same command to resume the search'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary)
    return EXIT_OK if best is not None else EXIT_DATA_ERRORS


def cmd_backtest(args: argparse.Namespace) -> int:
    from trading_jax.runs import ConfigError, load_experiment

    experiment = load_experiment(args.config)
    if experiment.algorithm != "backtest":
        raise ConfigError(f"{args.config}: algorithm = {experiment.algorithm!r}: `trading-jax backtest` runs "
                          "algorithm = \"backtest\" files (walk-forward comparisons); train this one with "
                          f"`trading-jax train {args.config}`")
    args.no_export = True
    return cmd_train(args)


def _export_after_training(experiment, out) -> None:
    """Export a finished run to OUT/export and say how to load and serve it (algorithms that export)."""
    from trading_jax.export.from_run import BUILDERS, export_run
    from trading_jax.export.runtime import ExportError, describe, load_exported

    if experiment.algorithm not in BUILDERS:
        return
    target = out / "export"
    try:
        export_run(out, target, overwrite=True, onnx=False)  # ONNX needs the [export] extra: `trading-jax export`
    except ExportError as error:
        print(f"trading-jax: the run is trained but was not exported: {error}", file=sys.stderr)
        return
    print(f"exported to {target}:\n{describe(load_exported(target))}")


def _print_mlflow(version: dict) -> None:
    print(f"MLflow: registered model {version['model_name']!r} version {version['version']} "
          f"(run {version['run_id']}) in {version['tracking_uri']}")


def cmd_export(args: argparse.Namespace) -> int:
    from trading_jax.export.from_run import export_run
    from trading_jax.export.runtime import describe, load_exported

    export_run(args.run_dir, args.out_dir, seed=args.seed, precision=args.precision, onnx=not args.no_onnx,
               platforms=tuple(args.platforms.split(",")), overwrite=args.overwrite, name=args.name)
    model = load_exported(args.out_dir)
    print(f"exported {args.run_dir} to {args.out_dir}:\n{describe(model)}")
    _report_checks(model.manifest)
    if args.mlflow is not None:
        from trading_jax.export.versioning import log_export

        try:
            _print_mlflow(log_export(args.out_dir, tracking_uri=args.mlflow or None, model_name=args.name))
        except RuntimeError as error:  # MLflow missing or the tracking server unreachable: the export stands
            print(f"trading-jax: error: the export is written but not logged to MLflow: {error}", file=sys.stderr)
            return EXIT_DATA_ERRORS
    return EXIT_OK


def _report_checks(manifest: dict) -> None:
    checks = manifest.get("checks", {})
    print(f"  checks: StableHLO vs model max abs error {checks.get('stablehlo_max_abs_error', float('nan')):.2e} on "
          f"{checks.get('reference_batch')} reference rows; ONNX: "
          + (f"max abs error {manifest['onnx']['max_abs_error']:.2e}" if "file" in manifest.get("onnx", {})
             else f"not written ({manifest.get('onnx', {}).get('error', 'off')})"))
    scores = checks.get("precision_test_scores")
    if scores:
        precision = manifest["weights"]["precision"]
        print(f"  held-out test score ({scores['samples']} samples): float32 {scores.get('float32')}, "
              f"{precision} {scores.get(precision)}")
    for name, entry in checks.get("precision", {}).items():
        extra = "".join(f", {k} {entry[k]:.4f}" for k in ("argmax_agreement", "correlation") if k in entry)
        print(f"  {manifest['weights']['precision']} vs float32, {name}: max abs diff {entry['max_abs_diff']:.2e}{extra}")


def cmd_export_pipeline(args: argparse.Namespace) -> int:
    from trading_jax.export.pipeline import export_pipeline
    from trading_jax.export.runtime import describe, load_exported

    export_pipeline(args.predictor, args.policy, args.out_dir, lookback=args.lookback, threshold=args.threshold,
                    min_agreement=args.min_agreement, precision=args.precision, overwrite=args.overwrite,
                    name=args.name)
    model = load_exported(args.out_dir)
    print(f"exported the inference pipeline to {args.out_dir}:\n{describe(model)}")
    _report_checks(model.manifest)
    skew = model.manifest["checks"].get("feature_skew", {})
    print(f"  feature skew (last {skew.get('lookback')} bars vs whole history): "
          f"{skew.get('max_abs_diff_normalised', float('nan')):.2e} (normalised units)")
    return EXIT_OK


def cmd_analyze(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trading_jax.runs.sentiment import load_analyzer

    texts = list(args.texts)
    if args.file:
        import pandas as pd

        try:
            frame = pd.read_csv(args.file, dtype={args.column: "string"}, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError) as error:
            raise ValueError(f"{args.file}: cannot be read as CSV: {str(error).splitlines()[0]}") from None
        if args.column not in frame.columns:
            raise ValueError(f"{args.file}: no column {args.column!r}; columns: {', '.join(map(str, frame.columns))} "
                             "(choose one with --column)")
        texts += frame[args.column].tolist()
    if not texts:
        raise ValueError("no texts: give them as arguments or with --file CSV [--column text]")
    analyzer = load_analyzer(args.run_dir, seed=args.seed, dtype=args.dtype)
    out = analyzer.analyze(texts)
    heads = [h for h in analyzer.heads if h in out]
    if args.out:
        import pandas as pd

        table = pd.DataFrame({"text": texts, "label": out["label"], "score": out["score"],
                              **{h: out[h] for h in heads},
                              **{f"p_{c}": out["probs"][:, i] for i, c in enumerate(analyzer.classes)}})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"wrote {len(texts)} rows to {args.out}")
        return EXIT_OK
    for i, text in enumerate(texts):
        extra = "".join(f"  {h} {out[h][i]:.3f}" for h in heads)
        shown = text if len(text) <= 80 else text[:77] + "..."
        print(f"{out['label'][i]:>8}  score {out['score'][i]:+.3f}{extra}  {shown}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from trading_jax.export.server import serve

    try:
        serve(args.export_dir, host=args.host, port=args.port, max_staleness=args.max_staleness, max_gap=args.max_gap)
    except KeyboardInterrupt:
        return EXIT_OK
    except RuntimeError as error:
        print(f"trading-jax: error: {error}", file=sys.stderr)
        return EXIT_USAGE
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
    train.add_argument("--overwrite", action="store_true",
                       help="start fresh in the output folder (delete its checkpoints, logs and results)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    train.add_argument("--no-export", action="store_true", help="do not export the trained model to OUT/export")
    train.add_argument("--distributed", action="store_true",
                       help="multi-process data-parallel training on jax.distributed: run the same command in every "
                            "process (settings from the flags below, else SLURM, Kubernetes, JAX_* or TRADING_JAX_* "
                            "variables); the run folder must be on a file system every process sees")
    train.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address and a free port (--distributed)")
    train.add_argument("--num-processes", type=int, help="processes in the run (--distributed)")
    train.add_argument("--process-id", type=int, help="this process's rank, 0 .. N-1 (--distributed)")
    train.add_argument("--distributed-timeout", type=int, default=120, metavar="S",
                       help="seconds to wait for every process to join (default: %(default)s)")
    train.set_defaults(func=cmd_train)

    tune = commands.add_parser("tune", help="hyperparameter search on Ray Tune ([tune] table; pip install "
                                            "'trading-jax[tune]')")
    tune.add_argument("config", help="experiment TOML file with a [tune] table")
    tune.add_argument("--out", help="output folder (default: runs/NAME_tune); a rerun resumes the search there")
    tune.add_argument("--address", help="Ray cluster address (HOST:PORT, ray://HOST:PORT or auto); default: the "
                                        "file's [tune] address, else an embedded local Ray")
    tune.add_argument("--num-cpus", type=int, help="CPUs of the embedded local Ray (default: all)")
    tune.add_argument("--num-gpus", type=int, help="GPUs of the embedded local Ray (default: all)")
    tune.add_argument("--overwrite", action="store_true", help="start the search fresh in the output folder")
    tune.add_argument("-q", "--quiet", action="store_true", help="no Ray Tune status tables")
    tune.set_defaults(func=cmd_tune)

    backtest = commands.add_parser(
        "backtest", help="walk-forward backtest of models and baselines with costs (algorithm = \"backtest\" files)")
    backtest.add_argument("config", help="experiment TOML file, e.g. experiments/model_comparison.toml")
    backtest.add_argument("--out", help="output folder (default: runs/NAME); interrupted runs resume from it")
    backtest.add_argument("--seeds", type=int, nargs="+", help="override the config's seeds")
    backtest.add_argument("--overwrite", action="store_true", help="start fresh in the output folder")
    backtest.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    backtest.set_defaults(func=cmd_backtest)

    precisions = ("float32", "bfloat16", "int8")
    export = commands.add_parser("export", help="export a trained run for serving (no model code needed to run it)")
    export.add_argument("run_dir", help="the run folder (runs/NAME)")
    export.add_argument("out_dir", help="the export folder to write")
    export.add_argument("--seed", type=int, help="which seed's model (default: chosen on validation, see the docs)")
    export.add_argument("--precision", choices=precisions, default="float32",
                        help="weight precision (bf16/int8: weight-only; the change in outputs is reported)")
    export.add_argument("--no-onnx", action="store_true", help="do not write model.onnx")
    export.add_argument("--platforms", default="cpu,cuda", help="jax.export platforms (default: %(default)s)")
    export.add_argument("--name", help="the model's name (default: the experiment's)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    export.add_argument("--mlflow", nargs="?", const="", metavar="TRACKING_URI",
                        help="also log it as an MLflow registered model version (default store: ./mlruns)")
    export.set_defaults(func=cmd_export)

    pipeline = commands.add_parser("export-pipeline", help="export seed 000's inference pipeline as one function")
    pipeline.add_argument("predictor", help="export folder of a predictor or ensemble (with features.json)")
    pipeline.add_argument("policy", help="export folder of a PPO policy of the execution environment")
    pipeline.add_argument("out_dir", help="the export folder to write")
    pipeline.add_argument("--lookback", type=int, help="bars per request (default: warm-up + window + 256)")
    pipeline.add_argument("--threshold", type=float, default=0.5, help="confidence needed to trade (default 0.5)")
    pipeline.add_argument("--min-agreement", type=float, default=0.5,
                          help="fraction of ensemble members that must agree to trade (default 0.5)")
    pipeline.add_argument("--precision", choices=precisions, default="float32")
    pipeline.add_argument("--name", help="the pipeline's name")
    pipeline.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    pipeline.set_defaults(func=cmd_export_pipeline)

    serve = commands.add_parser("serve", help="serve an export over HTTP (FastAPI; pip install 'trading-jax[serve]')")
    serve.add_argument("export_dir", help="the export folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument("--max-staleness", type=float, help="refuse requests whose last bar is older (seconds)")
    serve.add_argument("--max-gap", type=float, help="refuse bars further apart than this (seconds)")
    serve.set_defaults(func=cmd_serve)

    analyze = commands.add_parser("analyze", help="score texts with a trained sentiment run")
    analyze.add_argument("run_dir", help="a sentiment run folder (runs/NAME of an algorithm = \"sentiment\" file)")
    analyze.add_argument("texts", nargs="*", metavar="TEXT", help="texts to score")
    analyze.add_argument("--file", help="a CSV of texts to score (with --column)")
    analyze.add_argument("--column", default="text", help="the CSV's text column (default: %(default)s)")
    analyze.add_argument("--seed", type=int, help="which seed's model (default: the run's first)")
    analyze.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute precision")
    analyze.add_argument("--out", help="write a CSV (text, label, score, confidence, class probabilities)")
    analyze.set_defaults(func=cmd_analyze)
    return parser


# ------------------------------------------------------------------------------------------------
# Persistent compilation cache: on for every subcommand, so that a second run of the same job
# reads its compiled programs from disk instead of compiling them again.
# ------------------------------------------------------------------------------------------------

COMPILE_CACHE_DIR_ENV = "TRADING_JAX_CACHE_DIR"
COMPILE_CACHE_SWITCH_ENV = "TRADING_JAX_COMPILE_CACHE"
_SWITCHED_OFF = ("0", "false", "no", "off")
_compile_cache_warned = False


def default_compile_cache_dir():
    """`$TRADING_JAX_CACHE_DIR`, else `$XDG_CACHE_HOME/trading-jax/jax`, else `~/.cache/trading-jax/jax`."""
    import os
    from pathlib import Path

    if os.environ.get(COMPILE_CACHE_DIR_ENV):
        return Path(os.environ[COMPILE_CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "trading-jax" / "jax"


def configure_compile_cache(enabled: bool = True, cache_dir=None):
    """Turn on JAX's persistent compilation cache for this process; call it before anything compiles.

    Every compiled program is written to the cache folder (no minimum compile time, no minimum size:
    `jax_persistent_cache_min_compile_time_secs = 0`, `jax_persistent_cache_min_entry_size_bytes = 0`)
    and read back by the next process that compiles the same program with the same JAX version,
    backend and flags. Entries are never stale, only unused; delete the folder to reclaim the space.

    Args:
        enabled: False (the CLI's `--no-compile-cache`) leaves JAX's configuration untouched, and so
            does the environment variable `TRADING_JAX_COMPILE_CACHE=0` (or false/no/off).
        cache_dir: the cache folder; default `default_compile_cache_dir()`.

    Returns:
        The cache folder, or None when the cache is off or the folder cannot be created or written
        (then a warning is logged once per process and the run goes on without the cache).
    """
    import os
    import tempfile
    from pathlib import Path

    global _compile_cache_warned
    if not enabled or os.environ.get(COMPILE_CACHE_SWITCH_ENV, "").strip().lower() in _SWITCHED_OFF:
        return None
    path = Path(cache_dir).expanduser() if cache_dir else default_compile_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        if not _compile_cache_warned:
            from trading_jax.logging import get_logger

            get_logger(__name__).warning(
                "compilation cache off: cannot write to %s (%s); set %s to a writable folder, or %s=0 "
                "to silence this", path, error.strerror or error, COMPILE_CACHE_DIR_ENV, COMPILE_CACHE_SWITCH_ENV)
            _compile_cache_warned = True
        return None

    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def _add_to_every_command(parser: argparse.ArgumentParser, *names: str, root: bool = True, **kwargs) -> None:
    """Add an option to `parser` (unless `root` is False) and to each of its subcommands, so that it is accepted
    before or after the subcommand's name (subcommands default to SUPPRESS so as not to reset a value given
    before)."""
    if root:
        parser.add_argument(*names, **kwargs)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser once
                _add_to_every_command(sub, *names, **dict(kwargs, default=argparse.SUPPRESS))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `trading-jax` console script."""
    from trading_jax.logging import configure, get_logger

    parser = build_parser()
    _add_to_every_command(
        parser, "--no-compile-cache", action="store_true", default=False,
        help=f"do not use the persistent compilation cache (also: {COMPILE_CACHE_SWITCH_ENV}=0; folder: "
             f"${COMPILE_CACHE_DIR_ENV}, else $XDG_CACHE_HOME/trading-jax/jax, else ~/.cache/trading-jax/jax)")
    _add_to_every_command(parser, "-v", "--verbose", root=False, action="count",
                          help="more log output (-v info, -vv debug)")
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) == "analyze" and not any(e.startswith("-") for e in extra):
        args.texts = [*args.texts, *extra]  # texts after options: `analyze RUN --seed 1 "text"`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configure(args.verbose)
    cache = configure_compile_cache(enabled=not args.no_compile_cache)
    get_logger(__name__).debug("persistent compilation cache: %s", cache or "off")
    from trading_jax.distributed import DistributedError

    try:
        return args.func(args)
    except DistributedError as error:  # multi-process settings or start-up: one line naming the setting or address
        print(f"trading-jax: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, ValueError) as error:  # data errors carry a full, actionable message
        print(f"trading-jax: error: {error}", file=sys.stderr)
        return EXIT_DATA_ERRORS
    except KeyError as error:  # unknown names (models, envs, baselines) list the known ones
        print(f"trading-jax: error: {error.args[0] if error.args else error}", file=sys.stderr)
        return EXIT_DATA_ERRORS
    except OSError as error:  # e.g. an unwritable output folder
        where = f" {error.filename}" if error.filename else ""
        print(f"trading-jax: error: cannot use{where}: {error.strerror or error}; check the path and its permissions",
              file=sys.stderr)
        return EXIT_DATA_ERRORS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
