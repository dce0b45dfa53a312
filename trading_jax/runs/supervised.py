"""Supervised experiment files (`algorithm = "supervised"`, the default): schema and runner.

A file has `name`, `seeds`, an optional `vmap_seeds` (default true: every seed trains in ONE compiled
call, a population; false: one seed after another), a `[data]` table (`trading_jax.training.dataset.DataSpec`),
a `[train]` table (`TrainConfig` fields, with `[train.model_kwargs]` and `[train.multitask_weights]`) and an
optional `[checkpoint]` table (`keep_best`, `every_epochs`). `run` then

1. takes the run folder (lock; a changed config or data is refused, see `trading_jax.runs.folder`);
2. builds the windows and labels of each chronological split (`build_datasets`: normaliser and target scale
   fitted on the training split only, labels from t+1 on, embargo = horizon by default);
3. trains every seed through `trading_jax.loop.fit` with Orbax checkpoints (best by validation loss + latest;
   a rerun resumes), TensorBoard logs and a progress bar;
4. evaluates each seed's best params on the test split next to naive baselines, and writes `results.json`
   and `results.md`: mean over seeds with a 95% Student-t interval. A seed whose validation loss was NaN in
   every epoch, or whose every step was skipped, makes the run FAILED: its table says so and the command
   exits non-zero;
5. with an `[online]` table (`OnlineSpec`: `every`, `window`, `epochs` = 5, `learning_rate` = 1e-4, `batch_size`),
   walks each seed's best params forward through the test split, one asset at a time
   (`walk_forward_test`, built on `trading_jax.training.online.walk_forward`): every `every` bars from the
   test split's first bar, fine-tune on the `window` most recent samples whose labels are known by then
   (the validation split's samples, then the test split's as they resolve), and predict the next `every`
   bars with the result. The online predictions are scored like the static model on the same test
   samples (row "model_online"), with the paired difference online minus static over seeds;
6. with a `[monitor]` table (`MonitorSpec`: `window`, `accuracy_threshold` = 0.55, `ic_threshold`,
   `ece_threshold`), computes the rolling direction accuracy and IC (and, for classifiers, ECE and Brier)
   of the static model and of the online model over the test split, per asset (`monitor_test`, built on
   `trading_jax.evaluation.monitoring`): every degradation alert is a logged warning and a record in
   `results.json` (per seed) and in a section of `results.md`.

Without these tables nothing of 5-6 runs and the results are those of 1-4.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.logging import get_logger
from trading_jax.runs import schema as S
from trading_jax.runs.folder import FEATURES, RunFolder, file_fingerprints
from trading_jax.runs.results import FAILED, cell, write_results
from trading_jax.training.config import DTYPES, TASKS, TrainConfig
from trading_jax.training.dataset import GENERATED_SOURCES, DataSpec, Samples, build_datasets, feature_state, label_reach

__all__ = ["SupervisedExperiment", "check_task_outputs", "OnlineSpec", "MonitorSpec", "load", "load_top",
           "run", "evaluate", "walk_forward_test",
           "monitor_test"]

log = get_logger(__name__)
REPAIRS = ("drop_duplicates", "ffill_gaps", "swap_volume", "all")


@dataclasses.dataclass(frozen=True)
class OnlineSpec:
    """The `[online]` table: walk-forward fine-tuning over the test split (seed 002, "Online Learning").

    Attributes:
        every: bars between refits.
        window: the most recent labelled samples each refit fine-tunes on (per asset).
        epochs: fine-tuning epochs per refit.
        learning_rate: the fine-tuning learning rate (constant, no warm-up).
        batch_size: the fine-tuning batch (default: `[train] batch_size`, at most `window`).
    """

    every: int
    window: int
    epochs: int = 5
    learning_rate: float = 1e-4
    batch_size: int | None = None


@dataclasses.dataclass(frozen=True)
class MonitorSpec:
    """The `[monitor]` table: rolling forecast quality over the test split and degradation alerts
    (seed 002, "Model Monitoring").

    Attributes:
        window: samples per rolling window (a row's metric needs a full window of resolved samples).
        accuracy_threshold: alert when the rolling direction accuracy falls below it.
        ic_threshold: alert when the rolling information coefficient falls below it (default: not watched).
        ece_threshold: alert when the rolling expected calibration error rises above it (classification and
            multitask only; default: not watched).
    """

    window: int
    accuracy_threshold: float = 0.55
    ic_threshold: float | None = None
    ece_threshold: float | None = None


@dataclasses.dataclass(frozen=True)
class SupervisedExperiment:
    """A supervised experiment (module docstring). `file` is where it was read from (named in errors)."""

    name: str
    data: DataSpec
    train: TrainConfig
    seeds: tuple[int, ...] = (0, 1, 2)
    vmap_seeds: bool = True
    keep_best: int = 1
    every_epochs: int = 1
    online: OnlineSpec | None = None
    monitor: MonitorSpec | None = None
    file: str = "<experiment>"

    algorithm = "supervised"


TRAIN_CHECKS = {
    "task": S.one_of(*TASKS), "epochs": S.at_least(1), "batch_size": S.at_least(1), "learning_rate": S.positive,
    "warmup_steps": S.at_least(0), "final_lr_fraction": S.in_interval(0, 1), "weight_decay": S.non_negative,
    "max_grad_norm": S.positive, "label_smoothing": S.probability, "regression_loss": S.one_of("mse", "huber"),
    "huber_delta": S.positive, "noise_std": S.non_negative, "mixup_alpha": S.non_negative,
    "fgsm_epsilon": S.non_negative, "curriculum_start": S.in_interval(0, 1, low_open=True),
    "curriculum_ramp": S.in_interval(0, 1, low_open=True), "curriculum_feature": S.at_least(0),
    "compute_dtype": S.one_of(*DTYPES), "patience": S.at_least(1), "eval_batch_size": S.at_least(1),
    "pretrain_mask_ratio": S.in_interval(0, 1, low_open=True, high_open=True),
}
DATA_CHECKS = {
    "synthetic_bars": S.at_least(1), "synthetic_assets": S.at_least(1), "synthetic_seed": S.at_least(0),
    "window": S.at_least(2), "horizon": S.at_least(1), "dead_band": S.non_negative,
    "train": S.in_interval(0, 1, low_open=True, high_open=True), "val": S.in_interval(0, 1, high_open=True),
    "test": S.in_interval(0, 1, low_open=True, high_open=True), "embargo": S.at_least(0), "stride": S.at_least(1),
}
MODEL_KWARG_CHECKS = {"dropout": S.probability, "dropout_rate": S.probability, "n_classes": S.at_least(2)}
ONLINE_CHECKS = {"every": S.at_least(1), "window": S.at_least(2), "epochs": S.at_least(1),
                 "learning_rate": S.positive, "batch_size": S.at_least(1)}
MONITOR_CHECKS = {"window": S.at_least(2), "accuracy_threshold": S.in_interval(0, 1),
                  "ic_threshold": S.in_interval(-1, 1), "ece_threshold": S.in_interval(0, 1)}


def check_model(train: dict, file, where: str = "train") -> None:
    """The model name, preset and keyword arguments of table `[where]`, checked by building the module (no params yet)."""
    from trading_jax.models import available, create

    models = available()
    model = train.get("model")
    if not isinstance(model, str):
        raise S.ConfigError(f"{file}: [{where}] needs model = one of {', '.join(sorted(models))}")
    if model not in models:
        S.check_keys({model: None}, models, file, where)  # raises with a did-you-mean
    preset = train.get("preset")
    if preset is not None and preset not in models[model]:
        raise S.ConfigError(f"{file}: [{where}] preset = {preset!r}: model {model!r} has presets "
                            f"{', '.join(models[model]) or '(none)'}")
    kwargs = train.get("model_kwargs", {})
    if not isinstance(kwargs, dict):
        raise S.ConfigError(f"{file}: [{where}] model_kwargs must be a table ([{where}.model_kwargs])")
    module = create(model, preset=preset)
    fields = {f.name: f for f in dataclasses.fields(type(module)) if f.name not in ("parent", "name")}
    S.check_keys(kwargs, fields, file, f"{where}.model_kwargs")
    for key, value in kwargs.items():
        default = getattr(module, key)
        kind = type(default)
        if kind in (int, float, bool, str) and default is not None:
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) if kind in (int, float) \
                else isinstance(value, kind)
            if kind is int and isinstance(value, float):
                ok = False
            if not ok:
                expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]
                raise S.ConfigError(f"{file}: [{where}.model_kwargs] {key} = {value!r}: expected {expected}")
        if isinstance(value, float) and not math.isfinite(value):
            raise S.ConfigError(f"{file}: [{where}.model_kwargs] {key} = {value!r}: expected a finite number")
        if key in MODEL_KWARG_CHECKS:
            problem = MODEL_KWARG_CHECKS[key](value)
            if problem:
                raise S.ConfigError(f"{file}: [{where}.model_kwargs] {key} = {value!r}: {problem}")
    try:
        create(model, preset=preset, **{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
    except (TypeError, ValueError, KeyError) as error:
        raise S.ConfigError(f"{file}: [{where}.model_kwargs] {str(error).strip(chr(39))}") from None


def _multitask_weights(table) -> tuple:
    from trading_jax.training.losses import MULTITASK_TASKS

    if not isinstance(table, dict):
        raise TypeError
    for key, value in table.items():
        if key not in MULTITASK_TASKS or S.non_negative(value):
            raise ValueError
    return tuple((k, float(v)) for k, v in table.items())


def load(raw: dict, file) -> SupervisedExperiment:
    """A `SupervisedExperiment` from a parsed TOML file (every mistake a one-line `ConfigError`)."""
    S.check_keys(raw, {"algorithm", "name", "seeds", "vmap_seeds", "data", "train", "checkpoint", "online", "monitor"},
                 file, "")
    for table in ("data", "train", "checkpoint", "online", "monitor"):
        if table in raw and not isinstance(raw[table], dict):
            raise S.ConfigError(f"{file}: {table} must be a table ([{table}])")
    train = dict(raw.get("train", {}))
    check_model(train, file)
    train.setdefault("model_kwargs", {})
    config = S.build(TrainConfig, train, file, "train", TRAIN_CHECKS,
                     convert={"model_kwargs": S.kwargs_pairs, "multitask_weights": _multitask_weights})
    data_table = dict(raw.get("data", {}))
    repair = data_table.get("repair", ())
    if isinstance(repair, list) and any(r not in REPAIRS for r in repair):
        bad = next(r for r in repair if r not in REPAIRS)
        raise S.ConfigError(f"{file}: [data] repair = {bad!r}: expected one of {', '.join(REPAIRS)}")
    data = S.build(DataSpec, data_table, file, "data", DATA_CHECKS)
    check_task_outputs(config, data, file)
    if data.train + data.val + data.test > 1.0 + 1e-9:
        raise S.ConfigError(f"{file}: [data] train + val + test = {data.train + data.val + data.test:g}: "
                            "expected at most 1")
    if data.source not in GENERATED_SOURCES and not S.source_exists(data.source):
        raise S.ConfigError(f"{file}: [data] source = {data.source!r}: no such file or folder (paths are relative "
                            "to the working directory; use \"synthetic\" for the built-in market)")
    top = load_top(raw, file)
    online = S.build(OnlineSpec, raw["online"], file, "online", ONLINE_CHECKS) if "online" in raw else None
    monitor = S.build(MonitorSpec, raw["monitor"], file, "monitor", MONITOR_CHECKS) if "monitor" in raw else None
    if monitor is not None and monitor.ece_threshold is not None and config.task == "regression":
        raise S.ConfigError(f"{file}: [monitor] ece_threshold = {monitor.ece_threshold!r}: a regression model gives no "
                            "class probabilities to calibrate; use task = \"classification\" or \"multitask\", or "
                            "leave ece_threshold out")
    return SupervisedExperiment(data=data, train=config, file=str(file), online=online, monitor=monitor, **top)


def check_task_outputs(config: TrainConfig, data: DataSpec, file) -> None:
    """A multitask model whose heads are per horizon (the price transformer) must have one head: the labels are
    built for one horizon (`[data] horizon`), and a head without a label would never train."""
    if config.task != "multitask":
        return
    model = config.build_model()
    horizons = getattr(model, "horizons", None)
    if horizons is not None and tuple(horizons) != (data.horizon,):
        raise S.ConfigError(f"{file}: [train.model_kwargs] horizons = {list(horizons)}: task = \"multitask\" trains "
                            f"one head against the labels of [data] horizon = {data.horizon}; set horizons = "
                            f"[{data.horizon}]")
    if horizons is not None and config.uncertainty_weighting:
        raise S.ConfigError(f"{file}: [train] uncertainty_weighting = true needs a model with learned log-variances "
                            f"(model = \"multitask\"); {config.model} has none")


@dataclasses.dataclass(frozen=True)
class _Top:
    name: str
    seeds: tuple[int, ...] = (0, 1, 2)
    vmap_seeds: bool = True
    keep_best: int = 1
    every_epochs: int = 1


def load_top(raw: dict, file) -> dict:
    """The top-level keys (`name`, default the file's stem; `seeds`; `vmap_seeds`) and the `[checkpoint]` table
    (`keep_best`, `every_epochs`) of a file trained through `train_seeds`, checked (one-line `ConfigError`s)."""
    checkpoint = dict(raw.get("checkpoint", {}))
    S.check_keys(checkpoint, {"keep_best", "every_epochs"}, file, "checkpoint")
    top = {k: raw[k] for k in ("name", "seeds", "vmap_seeds") if k in raw}
    top.setdefault("name", Path(str(file)).stem)
    top = S.build(_Top, {**top, **checkpoint}, file, "", {"keep_best": S.at_least(1), "every_epochs": S.at_least(1)})
    S.check_seeds(top.seeds, file)
    return dataclasses.asdict(top)


def indicator_columns(file, cfg: TrainConfig, feature_names) -> TrainConfig:
    """`cfg` with a CNN-LSTM's indicator branch pointed at its named features (`resolve_indicator_columns`);
    a name that is not a feature is a one-line `ConfigError`."""
    from trading_jax.training.dataset import resolve_indicator_columns

    try:
        return resolve_indicator_columns(cfg, feature_names)
    except ValueError as error:
        raise S.ConfigError(f"{file}: [train.model_kwargs] {error}") from None


def check_classes(file, cfg: TrainConfig, model, x) -> None:
    """Refuse a model whose class count differs from the labels' (direction labels: down, flat, up)."""
    task = cfg.task
    if task == "regression":
        return
    shapes = jax.eval_shape(lambda k: model.init_with_output(k, jnp.asarray(x[:1]), train=False)[0],
                            jax.random.key(0))
    name = "logits" if task == "classification" else "direction_logits"
    if name not in shapes:
        raise S.ConfigError(f"{file}: [train] task = {task!r}: model {cfg.model!r} has no "
                            f"{name!r} output as configured (it gives {', '.join(sorted(shapes))}); set n_classes = 3 "
                            "in [train.model_kwargs], or use a model with a classification head")
    n = shapes[name].shape[-1]
    if n != 3:
        raise S.ConfigError(f"{file}: [train.model_kwargs] n_classes = {n} does not match the labels: "
                            "direction labels have 3 classes (down, flat, up); set n_classes = 3")


# ------------------------------------------------------------------------------------------- run


def failed_reason(history: Mapping[str, Any], batch_size: int) -> str | None:
    """Why a supervised run failed, or None: validation loss NaN in every epoch run, or every step skipped.

    Args:
        history: `TrainResult.history` as NumPy/lists: "val_loss", "skipped_steps", "stopped", "pool"
            (samples an epoch trained on: its active steps are `pool // batch_size`).
        batch_size: the minibatch size.
    """
    val = np.asarray(history["val_loss"], np.float64)
    ran = ~np.asarray(history["stopped"], bool)
    if not ran.any():
        return "no epoch ran"
    if not np.isfinite(val[ran]).any():
        return "the validation loss was NaN or inf in every epoch"
    skipped = int(np.asarray(history["skipped_steps"])[ran].sum())
    steps = int((np.asarray(history["pool"])[ran] // int(batch_size)).sum())
    if steps > 0 and skipped >= steps:
        return f"every training step was skipped ({skipped} non-finite losses or gradients)"
    return None


def _config_record(experiment: SupervisedExperiment) -> dict:
    record = dataclasses.asdict(experiment)
    record.pop("file")
    for table in ("online", "monitor"):  # absent tables leave the record (and resumable folders) as before
        if record[table] is None:
            record.pop(table)
    if not experiment.vmap_seeds:  # each seed has its own checkpoints: adding seeds later is fine
        record.pop("seeds")
    return record


def train_seeds(experiment, trainer, out: Path, show_progress: bool):
    """`[(seed, TrainResult of that seed, seconds)]`: one population call, or one call per seed."""
    from trading_jax.checkpoint import CheckpointConfig, Checkpointer
    from trading_jax.logging import TensorBoardWriter
    from trading_jax.loop import fit

    def checkpointer(name):
        return Checkpointer(CheckpointConfig(directory=str((out / "checkpoints" / name).resolve()), save_every_steps=1,
                                             keep_best=experiment.keep_best, best_metric="val_loss", keep_last=1))

    seeds = list(experiment.seeds)
    if experiment.vmap_seeds and len(seeds) > 1:
        start = time.perf_counter()
        keys = jnp.stack([jax.random.key(s) for s in seeds])
        with checkpointer("population") as ckpt, TensorBoardWriter(out / "tensorboard" / "population") as writer:
            result = fit(trainer.population(len(seeds)), keys, checkpointer=ckpt, every=experiment.every_epochs,
                         writer=writer, show_progress=show_progress, desc=f"{experiment.name} seeds {seeds}")
            jax.block_until_ready(result.params)
        seconds = (time.perf_counter() - start) / len(seeds)
        return [(s, jax.tree.map(lambda a, i=i: a[i], result), seconds) for i, s in enumerate(seeds)]
    out_list = []
    for seed in seeds:
        start = time.perf_counter()
        with checkpointer(f"seed_{seed}") as ckpt, TensorBoardWriter(out / "tensorboard" / f"seed_{seed}") as writer:
            result = fit(trainer, jax.random.key(seed), checkpointer=ckpt, every=experiment.every_epochs, writer=writer,
                         show_progress=show_progress, desc=f"{experiment.name} seed {seed}")
            jax.block_until_ready(result.params)
        out_list.append((seed, result, time.perf_counter() - start))
    return out_list


def run(experiment: SupervisedExperiment, out_dir: str | Path, overwrite: bool = False,
        show_progress: bool = True) -> tuple[str, bool]:
    """Train every seed, checkpoint, log, evaluate on the test split (module docstring).

    Returns:
        `(summary line, ok)`: ok is False when a seed FAILED (the table says why).
    """
    from trading_jax.evaluation.stats import paired_difference, summarize
    from trading_jax.training.config import Dataset
    from trading_jax.training.train import make_trainer

    out = Path(out_dir)
    cfg = experiment.train
    with RunFolder(out, overwrite=overwrite) as folder:
        spec = experiment.data
        files = [] if spec.source in GENERATED_SOURCES else file_fingerprints([spec.source])
        splits, info = build_datasets(spec, cfg.task)
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (splits[k][:2] for k in ("train", "val", "test"))
        cfg = indicator_columns(experiment.file, cfg, info["features"])
        experiment = dataclasses.replace(experiment, train=cfg)
        model = cfg.build_model()
        check_classes(experiment.file, cfg, model, x_tr)
        state = folder.claim(_config_record(experiment), {"files": files, "source": info["source"],
                                                          "symbols": info["symbols"], "split": info["split"],
                                                          "samples": info["samples"]})
        if state == "resume":
            log.info("%s: resuming the run in %s", experiment.name, out)
        folder.write_json(FEATURES, feature_state(spec, cfg.task, info))
        data = Dataset(jnp.asarray(x_tr), jax.tree.map(jnp.asarray, y_tr), jnp.asarray(x_va),
                       jax.tree.map(jnp.asarray, y_va))
        trainer = make_trainer(cfg, data)
        log.info("%s: %s samples (train/val/test), window %d, %d features", experiment.name, info["samples"],
                 spec.window, x_tr.shape[-1])
        reach = label_reach(cfg.task, spec.horizon)
        test_bars = tuple(info["split"]["test"])
        timestamps = _timestamps(spec) if experiment.monitor is not None else None
        per_seed = []
        for seed, result, seconds in train_seeds(experiment, trainer, out, show_progress):
            history = {k: np.asarray(v).tolist() for k, v in result.history.items()}
            failure = failed_reason(history, cfg.batch_size)
            test = None
            record = {"seed": seed, "seconds": seconds, "best_epoch": int(result.best_epoch), "history": history,
                      "failed": failure}
            if failure is None:
                static = _predict(model, result.best_params, x_te)
                test = evaluate(cfg.task, static, y_te, y_tr, x_te)
                watched = {"model": static}
                if experiment.online is not None:
                    start = time.perf_counter()
                    online, refits = walk_forward_test(cfg, experiment.online, result.best_params, splits["val"],
                                                       splits["test"], horizon=reach, start=test_bars[0],
                                                       key=jax.random.fold_in(jax.random.key(seed), ONLINE_STREAM))
                    scores = evaluate(cfg.task, online, y_te, y_tr, x_te)
                    test = _with_online(test, scores)
                    watched["model_online"] = online
                    done = sum(r["refit_done"] for r in refits)
                    record["online"] = {"seconds": time.perf_counter() - start, "refits": len(refits),
                                        "refits_done": done, "records": refits}
                    log.info("%s seed %d: online fine-tuning, %d refits (%d done): test %s", experiment.name, seed,
                             len(refits), done, _short(test, cfg.task))
                if experiment.monitor is not None:
                    record["alerts"], record["monitor"] = [], {}
                    for name, outputs in watched.items():
                        alerts, rolling = monitor_test(cfg.task, outputs, splits["test"], horizon=reach,
                                                       spec=experiment.monitor, bars=test_bars, timestamps=timestamps,
                                                       symbols=info["symbols"], context=f"seed {seed}, {name}")
                        record["alerts"] += [{"model": name, **a} for a in alerts]
                        record["monitor"][name] = rolling
            record["test"] = test
            per_seed.append(record)

        failures = [s for s in per_seed if s["failed"]]
        ok_seeds = [s for s in per_seed if not s["failed"]]
        summary, paired = {}, {}
        if ok_seeds:
            first = ok_seeds[0]["test"]
            summary = {name: {metric: summarize([s["test"][name][metric] for s in ok_seeds], f"{metric} values")
                              for metric in first[name]} for name in first}
            for online_row, static_row in (("model_online", "model"), ("model_online_direction", "model_direction")):
                if online_row in first:
                    paired[f"{online_row} - {static_row}"] = {
                        metric: paired_difference([s["test"][online_row][metric] for s in ok_seeds],
                                                  [s["test"][static_row][metric] for s in ok_seeds], f"{metric} values")
                        for metric in first[online_row]}
        status = "ok" if not failures else FAILED
        report = {"experiment": experiment.name, "status": status,
                  "failures": {s["seed"]: s["failed"] for s in failures}, "train_config": dataclasses.asdict(cfg),
                  "data": dataclasses.asdict(spec), "info": info, "seeds": per_seed, "summary": summary}
        if experiment.online is not None:
            report["online"] = dataclasses.asdict(experiment.online)
            report["paired"] = paired
        if experiment.monitor is not None:
            report["monitor"] = dataclasses.asdict(experiment.monitor)
        table = results_table(experiment, info, summary, failures)
        table += online_section(experiment, per_seed, paired) + monitor_section(experiment, per_seed, reach)
        write_results(out, report, table)
    if failures:
        reasons = "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failures)
        return (f"{experiment.name}: {FAILED}: {reasons}. Check the data and the learning rate; the table in "
                f"{out / 'results.md'} says {FAILED}"), False
    key = "macro_f1" if cfg.task == "classification" else "ic"
    head = "model" if "model" in summary else next(iter(summary))
    extra = ""
    if "model_online" in summary:
        extra += (f"; online fine-tuning {key} {cell(summary['model_online'][key])}, online - static "
                  f"{cell(paired['model_online - model'][key])}")
    if experiment.monitor is not None:
        counts = ", ".join(f"{sum(a['model'] == m for s in ok_seeds for a in s['alerts'])} ({m})"
                           for m in ("model", "model_online") if m == "model" or experiment.online is not None)
        extra += f"; degradation alerts: {counts}"
    return (f"{experiment.name}: {cfg.model} on {info['source']} ({info['samples']['train']:,} train / "
            f"{info['samples']['test']:,} test samples, {len(per_seed)} seeds): test {key} {cell(summary[head][key])} "
            f"(mean [95% CI]){extra}; full table in {out / 'results.md'}"), True


def results_table(experiment: SupervisedExperiment, info: dict, summary: dict, failures: list) -> str:
    """A Markdown table: rows = model and baselines, columns = metrics (mean [95% CI] over seeds)."""
    lines = [f"# {experiment.name}", "",
             f"Source: {info['source']}; test split bars {info['split']['test']}; "
             f"{info['samples']['test']:,} test samples; seeds {list(experiment.seeds)}; embargo {info['embargo']} bars.",
             "Mean over seeds with a 95% Student-t confidence interval; baselines are deterministic.", ""]
    if failures:
        lines += [f"**{FAILED}**: " + "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failures)
                  + ". The failed seeds are left out of every row below; do not read them as results.", ""]
    if not summary:
        return "\n".join(lines + ["| predictor | result |", "| --- | --- |", f"| model | {FAILED} |"]) + "\n"
    metrics = sorted({m for row in summary.values() for m in row})
    lines += ["| predictor | " + " | ".join(metrics) + " |", "| --- |" + " --- |" * len(metrics)]
    for name, row in summary.items():
        shown = f"{name} ({FAILED})" if failures and name.startswith("model") else name
        lines.append(f"| {shown} | " + " | ".join(cell(row.get(m)) for m in metrics) + " |")
    return "\n".join(lines) + "\n"


ALERTS_SHOWN = 5  # alerts listed per seed and model in results.md (all are in results.json)


def online_section(experiment: SupervisedExperiment, per_seed: list, paired: dict) -> str:
    """The results.md section of `[online]`: the schedule, refit counts and the paired difference table."""
    spec = experiment.online
    if spec is None:
        return ""
    ok = [s for s in per_seed if not s["failed"]]
    refits = ", ".join(f"seed {s['seed']}: {s['online']['refits_done']} of {s['online']['refits']}" for s in ok)
    lines = ["", "## Online fine-tuning", "",
             f"Walk-forward over the test split, one asset at a time: every {spec.every} bars (from the split's first "
             f"bar) the live params are fine-tuned for {spec.epochs} epochs at learning rate {spec.learning_rate:g} on "
             f"the {spec.window} most recent samples whose labels are known by then (validation samples first, then "
             f"test samples as they resolve), then predict the next {spec.every} bars; each seed starts from its best "
             f"params. Row model_online above scores these predictions on the same test samples as row model. "
             f"Refits done (of scheduled, over assets; a refit is skipped while fewer than {spec.window} labels are "
             f"known): {refits or 'none'}.", ""]
    if paired:
        metrics = sorted({m for row in paired.values() for m in row})
        lines += ["Paired difference over seeds, online minus static (mean [95% CI]; > 0 means fine-tuning raised the "
                  "metric):", "",
                  "| difference | " + " | ".join(metrics) + " |", "| --- |" + " --- |" * len(metrics)]
        lines += [f"| {name} | " + " | ".join(cell(row.get(m)) for m in metrics) + " |" for name, row in paired.items()]
    return "\n".join(lines) + "\n"


def monitor_section(experiment: SupervisedExperiment, per_seed: list, horizon: int) -> str:
    """The results.md section of `[monitor]`: alerts per seed and model, and the first few of each."""
    spec = experiment.monitor
    if spec is None:
        return ""
    watched = [f"direction accuracy < {spec.accuracy_threshold:g}"]
    if spec.ic_threshold is not None:
        watched.append(f"IC < {spec.ic_threshold:g}")
    if spec.ece_threshold is not None:
        watched.append(f"ECE > {spec.ece_threshold:g}")
    lines = ["", "## Monitoring", "",
             f"Rolling metrics over the test split, per asset, on windows of {spec.window} samples whose outcomes are "
             f"known ({horizon} bars after the forecast); alerts when {' or '.join(watched)}. An alert marks a "
             "crossing: a metric that stays on the wrong side of its threshold alerts once. Time is the bar index "
             "(and its timestamp); every alert is also a logged warning and a record in results.json.", "",
             "| seed | predictor | alerts | rolling accuracy mean (min) | first alerts: bar (time) asset metric value |",
             "| --- | --- | --- | --- | --- |"]
    for s in per_seed:
        if s["failed"]:
            lines.append(f"| {s['seed']} | ({FAILED}) | | | |")
            continue
        for name, rolling in s["monitor"].items():
            alerts = [a for a in s["alerts"] if a["model"] == name]
            shown = "; ".join(f"{a['time']}" + (f" ({a['timestamp']})" if a.get("timestamp") else "")
                              + f" {a['asset']} {a['metric']} {a['value']:.3f}" for a in alerts[:ALERTS_SHOWN])
            if len(alerts) > ALERTS_SHOWN:
                shown += f"; ... ({len(alerts) - ALERTS_SHOWN} more)"
            acc = [r["accuracy"] for r in rolling.values()]
            mean = np.nanmean([a["mean"] for a in acc]) if any(math.isfinite(a["mean"]) for a in acc) else float("nan")
            low = np.nanmin([a["min"] for a in acc]) if any(math.isfinite(a["min"]) for a in acc) else float("nan")
            stats = f"{mean:.3f} ({low:.3f})" if math.isfinite(mean) else "n/a (no full window)"
            lines.append(f"| {s['seed']} | {name} | {len(alerts)} | {stats} | {shown or '-'} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- online and monitoring

ONLINE_STREAM = 0x0511  # folded into a seed's key for its online fine-tuning (the training uses the seed's key)


def _short(test: dict, task: str) -> str:
    key = "accuracy" if task == "classification" else "ic"
    return ", ".join(f"{name} {key} {test[name][key]:.4f}" for name in ("model", "model_online") if name in test)


def _with_online(test: dict, online: dict) -> dict:
    """`test` with rows "model_online" (after "model") and "model_online_direction" (after "model_direction")."""
    out = {}
    for name, row in test.items():
        out[name] = row
        if name in ("model", "model_direction"):
            out[name.replace("model", "model_online", 1)] = online[name]
    return out


def _named_outputs(task: str, predictions) -> dict:
    """`trading_jax.training.online.task_outputs` arrays keyed like the model's outputs (what `evaluate` reads)."""
    if task == "regression":
        return {"prediction": predictions}
    if task == "classification":
        return {"logits": predictions}
    return dict(predictions)


def walk_forward_test(config: TrainConfig, spec: OnlineSpec, params, history: Samples, test: Samples, *, horizon: int,
                      start: int, key) -> tuple[dict, list]:
    """Online predictions of every test sample, walking forward through each asset's samples separately.

    For asset a, the samples are its `history` samples (the validation split) then its `test` samples, in
    time order; `trading_jax.training.online.walk_forward` refits at bars `start, start + every, ...` on the
    `spec.window` most recent of them whose labels (`horizon` bars) are known, and predicts the test samples.
    No asset's data reaches another asset's predictions, and no sample's prediction reads data past its bar.

    Args:
        config: the training config (model, task, loss); the fine-tuning uses `spec`'s epochs, rate and batch.
        spec: the `[online]` table.
        params: the params to start from (the seed's best).
        history, test: `Samples` pooled over assets (`Samples.asset`), each asset's in time order.
        horizon: bars a label reads past its sample's bar (`label_reach`).
        start: the first refit bar (the test split's first bar: every test sample is predicted).
        key: PRNG key; asset a fine-tunes with `fold_in(key, a)`.

    Returns:
        `(outputs, records)`: the model's outputs on the test samples (`[n_test, ...]` arrays keyed like
        the model's: "prediction", "logits" or the multitask heads) and the refit records of
        `walk_forward` (without the trained-on indices) with the asset index added.
    """
    from trading_jax.training.online import walk_forward

    n = len(test.t)
    pooled, records = None, []
    for a in np.unique(test.asset):
        old = np.flatnonzero(np.asarray(history.asset) == a)
        new = np.flatnonzero(np.asarray(test.asset) == a)
        x = np.concatenate([np.asarray(history.x)[old], np.asarray(test.x)[new]])
        y = jax.tree.map(lambda h, t: np.concatenate([np.asarray(h)[old], np.asarray(t)[new]]), history.y, test.y)
        times = np.concatenate([np.asarray(history.t)[old], np.asarray(test.t)[new]]).astype(np.int64)
        result = walk_forward(config, params, x, y, times, horizon=horizon, every=spec.every, window=spec.window,
                              key=jax.random.fold_in(key, int(a)), start=int(start), learning_rate=spec.learning_rate,
                              epochs=spec.epochs, batch_size=spec.batch_size)
        if not result.predicted[old.size:].all():
            raise RuntimeError(f"online: asset {int(a)} has test samples before the first refit bar {start}")
        if pooled is None:
            pooled = jax.tree.map(lambda v: np.full((n,) + v.shape[1:], np.nan, np.float32), result.predictions)
        for buf, value in zip(jax.tree.leaves(pooled), jax.tree.leaves(result.predictions)):
            buf[new] = value[old.size:]
        records += [{"asset": int(a), **{k: v for k, v in r.items() if k != "samples"},
                     "n_trained": int(np.size(r["samples"]))} for r in result.records]
    return _named_outputs(config.task, pooled), records


class _Context(logging.LoggerAdapter):
    """Prefix log messages with what they are about (seed, predictor, asset)."""

    def process(self, msg, kwargs):
        return f"{self.extra['context']}: {msg}", kwargs


def _timestamps(spec: DataSpec):
    """The bars' timestamps (for alert times), or None when they cannot be read."""
    from trading_jax.training.dataset import load_panel

    quiet = logging.getLogger("trading_jax.data.loading")  # its report was logged when the data was built
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        stamps = np.asarray(load_panel(spec)[1])
        if np.issubdtype(stamps.dtype, np.datetime64):
            return np.datetime_as_string(stamps, unit="m")
        return stamps.astype(str)
    except Exception as error:  # the timestamps only decorate the alerts: never fail a trained run for them
        log.warning("monitoring: alert times are bar indices only (timestamps unavailable: %s)", error)
        return None
    finally:
        quiet.setLevel(level)


def _monitored(task: str, outputs: dict, y):
    """`(pred, outcome, probs, labels)` of the monitored forecast: the return forecast and its realised value
    (regression, multitask price head), or the predicted and realised direction -1/0/+1 (classification);
    class probabilities and labels for the calibration of classifiers (None for regression)."""
    if task == "regression":
        return np.asarray(outputs["prediction"]).reshape(len(y), -1)[:, 0], np.asarray(y, np.float32), None, None
    if task == "classification":
        logits = np.asarray(outputs["logits"])
        probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), -1))
        calls = np.where(np.isfinite(logits).all(-1), np.argmax(logits, -1) - 1.0, np.nan).astype(np.float32)
        return calls, np.asarray(y, np.float32) - 1, probs, np.asarray(y)
    price = np.asarray(outputs["price"]).reshape(len(y["price"]), -1)[:, 0]
    probs = np.asarray(jax.nn.softmax(jnp.asarray(outputs["direction_logits"]), -1))
    return price, np.asarray(y["price"], np.float32), probs, np.asarray(y["direction"])


def _stats(values) -> dict:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    nan = float("nan")
    return {"mean": float(v.mean()) if v.size else nan, "min": float(v.min()) if v.size else nan,
            "last": float(v[-1]) if v.size else nan, "rows": int(v.size)}


def monitor_test(task: str, outputs: dict, test: Samples, *, horizon: int, spec: MonitorSpec, bars: tuple[int, int],
                 timestamps=None, symbols=None, context: str = "model") -> tuple[list, dict]:
    """Rolling forecast quality of one predictor over the test split, per asset, and its degradation alerts.

    Each asset's test samples are laid on the split's bar grid `bars[0] .. bars[1] - 1` (NaN where a bar
    has no sample), so a rolling row at bar t reads only outcomes known by then
    (`trading_jax.evaluation.monitoring.monitor` with `horizon`); alerts are logged as warnings prefixed
    with `context` and the asset.

    Args:
        task: the training task.
        outputs: the predictor's outputs on the test samples, keyed like the model's.
        test: the test `Samples`.
        horizon: bars until a sample's outcome is known (`label_reach`).
        spec: the `[monitor]` table.
        bars: the test split's `[start, stop)` bar range.
        timestamps: optional timestamps of every bar (alerts then carry a "timestamp").
        symbols: optional asset names (alerts carry "asset": the name, else the index).
        context: what the warnings are about ("seed 0, model").

    Returns:
        `(alerts, rolling)`: alert records `{"time" (bar index), "timestamp", "asset", "metric", "value",
        "threshold", "direction"}` in time order per asset, and per asset the mean, min and last value of each
        rolling metric (`{"mean", "min", "last", "rows"}`, rows = bars with a full window).
    """
    from trading_jax.evaluation.monitoring import degradation_alerts, monitor

    pred, outcome, probs, labels = _monitored(task, outputs, test.y)
    grid = np.arange(int(bars[0]), int(bars[1]), dtype=np.int64)
    alerts, rolling = [], {}
    for a in np.unique(test.asset):
        rows = np.flatnonzero(np.asarray(test.asset) == a)
        at = np.asarray(test.t)[rows] - grid[0]
        name = symbols[int(a)] if symbols is not None else int(a)
        dense_pred = np.full(grid.size, np.nan, np.float32)
        dense_outcome = np.full(grid.size, np.nan, np.float32)
        dense_pred[at], dense_outcome[at] = pred[rows], outcome[rows]
        dense_probs = dense_labels = None
        if probs is not None:
            dense_probs = np.full((grid.size, probs.shape[-1]), np.nan, np.float32)
            dense_labels = np.zeros(grid.size, np.int32)
            dense_probs[at], dense_labels[at] = probs[rows], labels[rows]
        metrics = monitor(dense_pred, dense_outcome, spec.window, horizon, accuracy_threshold=None,
                          probs=dense_probs, labels=dense_labels)
        metrics.pop("alerts")
        ceilings = {"ece": spec.ece_threshold} if "ece" in metrics else None
        # the warnings name the bar and its timestamp; the records keep the bar index as "time"
        names = [f"bar {b}" + (f" ({timestamps[b]})" if timestamps is not None else "") for b in grid]
        bar_of = dict(zip(names, grid.tolist()))
        found = degradation_alerts(metrics, {"accuracy": spec.accuracy_threshold, "ic": spec.ic_threshold},
                                   times=np.asarray(names, object), ceilings=ceilings,
                                   logger=_Context(log, {"context": f"{context}, {name}".replace("%", "%%")}))
        for alert in found:
            bar = bar_of[alert["time"]]
            stamp = {"timestamp": str(timestamps[bar])} if timestamps is not None else {}
            alerts.append({"time": bar, **stamp, "asset": name, **{k: v for k, v in alert.items() if k != "time"}})
        rolling[str(name)] = {k: _stats(v) for k, v in metrics.items()}
    return alerts, rolling


# ------------------------------------------------------------------------------------ evaluation


def _predict(model, params, x, batch: int = 512):
    apply = jax.jit(lambda p, xb: model.apply({"params": p}, xb, train=False))
    outs = [apply(params, jnp.asarray(x[i : i + batch])) for i in range(0, len(x), batch)]
    return jax.tree.map(lambda *o: np.concatenate([np.asarray(v, np.float32) for v in o]), *outs)


def _regression_metrics(pred, target) -> dict[str, float]:
    from trading_jax.evaluation import metrics as m

    pred, target = jnp.asarray(pred).reshape(-1), jnp.asarray(target).reshape(-1)
    return {"mae": float(m.mae(pred, target)), "rmse": float(m.rmse(pred, target)),
            "direction_accuracy": float(m.direction_accuracy(pred, target, ignore_zero_target=True)),
            "ic": float(m.information_coefficient(pred, target)),
            "rank_ic": float(m.rank_information_coefficient(pred, target))}


def _classification_metrics(pred_labels, labels) -> dict[str, float]:
    from trading_jax.evaluation import metrics as m

    p, y = jnp.asarray(pred_labels), jnp.asarray(labels)
    precision, recall, f1 = m.precision_recall_f1(p, y, 3, average="macro")
    return {"accuracy": float(jnp.mean(p == y)), "macro_precision": float(precision),
            "macro_recall": float(recall), "macro_f1": float(f1)}


def evaluate(task: str, outputs, y_test, y_train, x_test) -> dict[str, dict[str, float]]:
    """Test metrics of the model and of naive baselines (computed on the same samples)."""
    if task == "classification":
        majority = int(np.bincount(np.asarray(y_train), minlength=3).argmax())
        return {"model": _classification_metrics(np.argmax(outputs["logits"], -1), y_test),
                "baseline_majority_class": _classification_metrics(np.full_like(y_test, majority), y_test)}
    price_pred = outputs["prediction"] if task == "regression" else outputs["price"]
    price_true = y_test if task == "regression" else y_test["price"]
    result = {"model": _regression_metrics(price_pred, price_true),
              "baseline_zero_return": _regression_metrics(np.zeros_like(price_true), price_true),
              # momentum: the last normalised 1-bar return feature (column 0) as the forecast
              "baseline_last_return": _regression_metrics(x_test[:, -1, 0], price_true)}
    if task == "multitask" and "direction_logits" in outputs:
        result["model_direction"] = _classification_metrics(np.argmax(outputs["direction_logits"], -1), y_test["direction"])
    elif task == "multitask":  # the price transformer: its direction call is the sign of its price forecast
        result["model_direction"] = _classification_metrics(np.where(np.reshape(price_pred, -1) > 0, 2, 0),
                                                            y_test["direction"])
    if task == "multitask" and "confidence" in outputs and "direction_logits" not in outputs:
        result.update(_head_metrics(outputs, y_test, y_train))
    return result


def _head_metrics(outputs, y_test, y_train) -> dict[str, dict[str, float]]:
    """Test metrics of the price transformer's volatility and confidence heads, each with its naive baseline.

    * volatility: RMSE, MAE and IC of the forecast against the realised volatility, against the training mean
      (a constant, so its IC is undefined: NaN);
    * confidence: Brier score of P(the sign is right) on the non-flat labels, against the constant equal to
      the test hit rate (an oracle constant: a confidence head only adds information if it beats it); the
      accuracy of the third most confident calls against that of all calls.
    """
    from trading_jax.evaluation import metrics as m

    vol_pred = np.reshape(outputs["volatility"], -1)
    vol_true = np.asarray(y_test["volatility"], np.float32).reshape(-1)
    constant = np.full_like(vol_true, float(np.mean(y_train["volatility"])))
    vol = {name: {"mae": float(m.mae(p, vol_true)), "rmse": float(m.rmse(p, vol_true)),
                  "ic": float(m.information_coefficient(p, vol_true))}
           for name, p in (("model_volatility", vol_pred), ("baseline_train_mean_volatility", constant))}
    vol["baseline_train_mean_volatility"]["ic"] = float("nan")
    direction = np.asarray(y_test["direction"]).reshape(-1)
    call_up = np.reshape(outputs["price"], -1) > 0
    keep = direction != 1
    right = (call_up & (direction == 2)) | (~call_up & (direction == 0))
    q = np.reshape(outputs["confidence"], -1)[keep]
    if not q.size:
        nan = float("nan")
        return {**vol, "model_confidence": {"brier": nan, "accuracy_all": nan, "accuracy_top_third": nan},
                "baseline_constant_confidence": {"brier": nan}}
    hit = right[keep].astype(np.float64)
    base = float(np.mean(hit))
    top = q >= np.quantile(q, 2 / 3)
    return {**vol, "model_confidence": {"brier": float(np.mean((q - hit) ** 2)), "accuracy_all": base,
                                        "accuracy_top_third": float(np.mean(hit[top]))},
            "baseline_constant_confidence": {"brier": float(np.mean((base - hit) ** 2))}}


