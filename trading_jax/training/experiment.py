"""Supervised experiments from a TOML file: data -> features -> labels -> windows -> train -> held-out report.

An experiment file (see `experiments/*.toml`) has a `name`, `seeds`, a `[data]` table
(`DataSpec`), a `[train]` table (`TrainConfig` fields, with `[train.model_kwargs]`) and an optional
`[checkpoint]` table. `run_experiment` then, for every seed:

1. builds the panel (a file, folder or glob of OHLCV, or the built-in synthetic market) and its
   `FeaturePipeline` tensor; the normaliser is fitted on the training split only;
2. builds labels from t+1 onward (`future_return`, `direction_label`, ...) and the windows of each
   chronological split (embargo = horizon by default), dropping samples whose label crosses a split end;
3. trains with `fit(make_trainer(config, data), key, ...)` (one jitted epoch chunk, reused across
   seeds), saving the whole training state with Orbax after every epoch under
   `checkpoints/seed_N` (the `keep_best` best by validation loss plus the latest; a rerun on the same
   output folder resumes each seed from its latest checkpoint), per-epoch train/val loss scalars to
   TensorBoard under `tensorboard/seed_N` and the best params' histograms at the end;
4. evaluates the best params on the test split next to naive baselines.

Results are the mean over seeds with a 95% Student-t confidence interval, written to
`results.json` and `results.md` in the output folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import tomllib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.logging import get_logger, progress
from trading_jax.training.dataset import DataSpec, build_datasets  # noqa: F401  (moved; this module is being replaced by runs/)

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: data, training configuration and the seeds it is repeated over."""

    name: str
    data: DataSpec
    train: Any  # TrainConfig
    seeds: tuple[int, ...] = (0, 1, 2)
    keep_best: int = 1


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read an experiment TOML file into frozen configs (unknown keys are errors naming the file)."""
    from trading_jax.training.config import TrainConfig

    path = Path(path)
    with path.open("rb") as handle:
        raw = tomllib.load(handle)

    def build(cls, table: dict, where: str):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown} in [{where}]; known keys: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in table.items()})

    train_table = dict(raw.get("train", {}))
    if "model" not in train_table:
        raise ValueError(f"{path}: [train] needs a 'model' (one of trading_jax.models.available())")
    train_table["model_kwargs"] = tuple(sorted(
        (k, tuple(v) if isinstance(v, list) else v) for k, v in train_table.get("model_kwargs", {}).items()))
    unknown_top = sorted(set(raw) - {"name", "seeds", "data", "train", "checkpoint"})
    if unknown_top:
        raise ValueError(f"{path}: unknown top-level key(s) {unknown_top}")
    return ExperimentConfig(
        name=raw.get("name", path.stem),
        data=build(DataSpec, raw.get("data", {}), "data"),
        train=build(TrainConfig, train_table, "train"),
        seeds=tuple(raw.get("seeds", (0, 1, 2))),
        keep_best=int(raw.get("checkpoint", {}).get("keep_best", 1)),
    )


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------


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


def mean_ci(values) -> dict[str, float]:
    """Mean, sample std and the 95% Student-t confidence interval of the mean over seeds."""
    from scipy import stats

    v = np.asarray(values, np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "std": float("nan"), "ci95": [float("nan"), float("nan")], "n": len(v)}
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(v) - 1) * std / math.sqrt(len(v)))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": len(v)}


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------


def claim_run_directory(out: Path, config: dict) -> None:
    """Record `config` in `out/config.json`, or check that a run already there used the same one.

    A rerun on the same folder resumes from its checkpoints, which is only right for the same config
    (the seeds may differ: each seed has its own checkpoint folder).

    Raises:
        ValueError: `out` holds a run of a different config (naming the keys that differ).
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    text = json.dumps(config, indent=2, sort_keys=True, default=str)
    if path.exists():
        before = json.loads(path.read_text())
        now = json.loads(text)
        if before != now:
            keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            raise ValueError(f"{out} holds a run of a different config (differs in {keys}); its checkpoints "
                             "would be resumed. Choose another output folder (--out) or delete this one.")
        return
    path.write_text(text + "\n")


def run_experiment(experiment: ExperimentConfig, out_dir: str | Path) -> str:
    """Train every seed, checkpoint, log, evaluate on the test split; returns a short summary."""
    from trading_jax.checkpoint import CheckpointConfig, Checkpointer
    from trading_jax.logging import TensorBoardWriter
    from trading_jax.training.config import Dataset
    from trading_jax.training.train import fit, make_trainer

    out = Path(out_dir)
    claim_run_directory(out, {k: v for k, v in dataclasses.asdict(experiment).items() if k != "seeds"})
    cfg = experiment.train
    splits, info = build_datasets(experiment.data, cfg.task)
    (x_tr, y_tr, _), (x_va, y_va, _), (x_te, y_te, _) = splits["train"], splits["val"], splits["test"]
    data = Dataset(jnp.asarray(x_tr), jax.tree.map(jnp.asarray, y_tr), jnp.asarray(x_va), jax.tree.map(jnp.asarray, y_va))
    trainer = make_trainer(cfg, data)
    model = cfg.build_model()
    log.info("%s: %s samples (train/val/test), window %d, %d features", experiment.name, info["samples"],
             experiment.data.window, x_tr.shape[-1])

    per_seed = []
    for seed in progress(experiment.seeds, total=len(experiment.seeds), desc=f"{experiment.name} seeds"):
        start = time.perf_counter()
        # resumable: a rerun on the same out_dir continues from the latest checkpoint of each seed
        with Checkpointer(CheckpointConfig(directory=str((out / "checkpoints" / f"seed_{seed}").resolve()),
                                           save_every_steps=1, keep_best=experiment.keep_best,
                                           best_metric="val_loss", keep_last=1)) as ckpt, \
                TensorBoardWriter(out / "tensorboard" / f"seed_{seed}") as writer:
            result = fit(trainer, jax.random.key(seed), ckpt, every_epochs=1, writer=writer,
                         desc=f"{experiment.name} seed {seed}")
            jax.block_until_ready(result.params)
            seconds = time.perf_counter() - start
            for path, leaf in jax.tree_util.tree_flatten_with_path(result.best_params)[0]:
                writer.histogram(cfg.epochs, "params/" + "/".join(str(getattr(k, "key", k)) for k in path), np.asarray(leaf))
        history = {k: np.asarray(v).tolist() for k, v in result.history.items()}
        best_epoch = int(result.best_epoch)
        outputs = _predict(model, result.best_params, x_te)
        per_seed.append({"seed": seed, "seconds": seconds, "best_epoch": best_epoch, "history": history,
                         "test": evaluate(cfg.task, outputs, y_te, y_tr, x_te)})

    summary = {name: {metric: mean_ci([s["test"][name][metric] for s in per_seed]) for metric in per_seed[0]["test"][name]}
               for name in per_seed[0]["test"]}
    report = {"experiment": experiment.name, "train_config": dataclasses.asdict(cfg),
              "data": dataclasses.asdict(experiment.data), "info": info, "seeds": per_seed, "summary": summary}
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "results.md").write_text(results_table(experiment, info, summary))
    head = "model" if "model" in summary else next(iter(summary))
    key = "macro_f1" if cfg.task == "classification" else "ic"
    shown = summary[head][key]
    return (f"{experiment.name}: {cfg.model} on {info['source']} ({info['samples']['train']:,} train / "
            f"{info['samples']['test']:,} test samples, {len(per_seed)} seeds): test {key} {shown['mean']:.4f} "
            f"(95% CI {shown['ci95'][0]:.4f} .. {shown['ci95'][1]:.4f}); full table in {out / 'results.md'}")


def results_table(experiment: ExperimentConfig, info: dict, summary: dict) -> str:
    """A Markdown table: rows = model and baselines, columns = metrics (mean [95% CI] over seeds)."""
    metrics = sorted({m for row in summary.values() for m in row})
    lines = [f"# {experiment.name}", "",
             f"Source: {info['source']}; test split bars {info['split']['test']}; "
             f"{info['samples']['test']:,} test samples; seeds {list(experiment.seeds)}; embargo {info['embargo']} bars.",
             "Mean over seeds with a 95% Student-t confidence interval; baselines are deterministic.", "",
             "| predictor | " + " | ".join(metrics) + " |", "| --- |" + " --- |" * len(metrics)]
    for name, row in summary.items():
        cells = [f"{row[m]['mean']:.4f} [{row[m]['ci95'][0]:.4f}, {row[m]['ci95'][1]:.4f}]" if m in row else "" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
