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
   exits non-zero.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.logging import get_logger
from trading_jax.runs import schema as S
from trading_jax.runs.folder import RunFolder, file_fingerprints
from trading_jax.runs.results import FAILED, cell, write_results
from trading_jax.training.config import DTYPES, TASKS, TrainConfig
from trading_jax.training.dataset import DataSpec, build_datasets

__all__ = ["SupervisedExperiment", "load", "run", "evaluate"]

log = get_logger(__name__)
REPAIRS = ("drop_duplicates", "ffill_gaps", "swap_volume", "all")


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


def _model_kwargs(table) -> tuple:
    if not isinstance(table, dict):
        raise TypeError
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in table.items()))


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
    S.check_keys(raw, {"algorithm", "name", "seeds", "vmap_seeds", "data", "train", "checkpoint"}, file, "")
    for table in ("data", "train", "checkpoint"):
        if table in raw and not isinstance(raw[table], dict):
            raise S.ConfigError(f"{file}: {table} must be a table ([{table}])")
    train = dict(raw.get("train", {}))
    check_model(train, file)
    train.setdefault("model_kwargs", {})
    config = S.build(TrainConfig, train, file, "train", TRAIN_CHECKS,
                     convert={"model_kwargs": _model_kwargs, "multitask_weights": _multitask_weights})
    data_table = dict(raw.get("data", {}))
    repair = data_table.get("repair", ())
    if isinstance(repair, list) and any(r not in REPAIRS for r in repair):
        bad = next(r for r in repair if r not in REPAIRS)
        raise S.ConfigError(f"{file}: [data] repair = {bad!r}: expected one of {', '.join(REPAIRS)}")
    data = S.build(DataSpec, data_table, file, "data", DATA_CHECKS)
    if data.train + data.val + data.test > 1.0 + 1e-9:
        raise S.ConfigError(f"{file}: [data] train + val + test = {data.train + data.val + data.test:g}: "
                            "expected at most 1")
    if data.source != "synthetic" and not any(Path().glob(data.source)) and not Path(data.source).exists():
        raise S.ConfigError(f"{file}: [data] source = {data.source!r}: no such file or folder (paths are relative "
                            "to the working directory; use \"synthetic\" for the built-in market)")
    checkpoint = dict(raw.get("checkpoint", {}))
    S.check_keys(checkpoint, {"keep_best", "every_epochs"}, file, "checkpoint")
    top = {k: raw[k] for k in ("name", "seeds", "vmap_seeds") if k in raw}
    top.setdefault("name", Path(str(file)).stem)
    top = S.build(_Top, {**top, **checkpoint}, file, "", {"keep_best": S.at_least(1), "every_epochs": S.at_least(1)})
    S.check_seeds(top.seeds, file)
    return SupervisedExperiment(data=data, train=config, file=str(file), **dataclasses.asdict(top))


@dataclasses.dataclass(frozen=True)
class _Top:
    name: str
    seeds: tuple[int, ...] = (0, 1, 2)
    vmap_seeds: bool = True
    keep_best: int = 1
    every_epochs: int = 1


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
    if not experiment.vmap_seeds:  # each seed has its own checkpoints: adding seeds later is fine
        record.pop("seeds")
    return record


def _train_all(experiment, trainer, out: Path, show_progress: bool):
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
    from trading_jax.evaluation.stats import summarize
    from trading_jax.training.config import Dataset
    from trading_jax.training.train import make_trainer

    out = Path(out_dir)
    cfg = experiment.train
    with RunFolder(out, overwrite=overwrite) as folder:
        spec = experiment.data
        files = [] if spec.source == "synthetic" else file_fingerprints([spec.source])
        splits, info = build_datasets(spec, cfg.task)
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (splits[k][:2] for k in ("train", "val", "test"))
        model = cfg.build_model()
        check_classes(experiment.file, cfg, model, x_tr)
        state = folder.claim(_config_record(experiment), {"files": files, "source": info["source"],
                                                          "symbols": info["symbols"], "split": info["split"],
                                                          "samples": info["samples"]})
        if state == "resume":
            log.info("%s: resuming the run in %s", experiment.name, out)
        data = Dataset(jnp.asarray(x_tr), jax.tree.map(jnp.asarray, y_tr), jnp.asarray(x_va),
                       jax.tree.map(jnp.asarray, y_va))
        trainer = make_trainer(cfg, data)
        log.info("%s: %s samples (train/val/test), window %d, %d features", experiment.name, info["samples"],
                 spec.window, x_tr.shape[-1])
        per_seed = []
        for seed, result, seconds in _train_all(experiment, trainer, out, show_progress):
            history = {k: np.asarray(v).tolist() for k, v in result.history.items()}
            failure = failed_reason(history, cfg.batch_size)
            test = None
            if failure is None:
                test = evaluate(cfg.task, _predict(model, result.best_params, x_te), y_te, y_tr, x_te)
            per_seed.append({"seed": seed, "seconds": seconds, "best_epoch": int(result.best_epoch),
                             "history": history, "failed": failure, "test": test})

        failures = [s for s in per_seed if s["failed"]]
        ok_seeds = [s for s in per_seed if not s["failed"]]
        summary = {}
        if ok_seeds:
            first = ok_seeds[0]["test"]
            summary = {name: {metric: summarize([s["test"][name][metric] for s in ok_seeds], f"{metric} values")
                              for metric in first[name]} for name in first}
        status = "ok" if not failures else FAILED
        report = {"experiment": experiment.name, "status": status,
                  "failures": {s["seed"]: s["failed"] for s in failures}, "train_config": dataclasses.asdict(cfg),
                  "data": dataclasses.asdict(spec), "info": info, "seeds": per_seed, "summary": summary}
        write_results(out, report, results_table(experiment, info, summary, failures))
    if failures:
        reasons = "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failures)
        return (f"{experiment.name}: {FAILED}: {reasons}. Check the data and the learning rate; the table in "
                f"{out / 'results.md'} says {FAILED}"), False
    key = "macro_f1" if cfg.task == "classification" else "ic"
    head = "model" if "model" in summary else next(iter(summary))
    return (f"{experiment.name}: {cfg.model} on {info['source']} ({info['samples']['train']:,} train / "
            f"{info['samples']['test']:,} test samples, {len(per_seed)} seeds): test {key} {cell(summary[head][key])} "
            f"(mean [95% CI]); full table in {out / 'results.md'}"), True


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
    if task == "multitask":
        result["model_direction"] = _classification_metrics(np.argmax(outputs["direction_logits"], -1), y_test["direction"])
    return result


