"""MAML experiment files (`algorithm = "maml"`): meta-train, then k-shot adaptation on held-out tasks.

A file has `name`, `seeds`, and:

    [maml]        `trading_jax.meta.MAMLConfig` fields (model, preset, method, inner_steps, inner_lr, ...),
                  with [maml.model_kwargs]
    [tasks]       source = "synthetic" (one on-device synthetic market regime per task,
                  `trading_jax.meta.SyntheticRegimeTasks`; its fields in [tasks.synthetic]) or "assets"
                  (one real asset per task; the bars, window and horizon in [data], a `DataSpec`), and
                  holdout_symbols (assets never meta-trained on) or holdout_fraction (default 0.3, drawn
                  once with a fixed generator, the same for every seed)
    [pretrain]    joint pre-training, the baseline initialisation: epochs, batch_size, learning_rate,
                  tasks (synthetic: training regimes pooled into one dataset)
    [evaluation]  shots (default [5, 20, 100]), query (query samples per synthetic task), tasks (held-out
                  synthetic regimes per seed)

For every seed the run

1. meta-trains the model through `trading_jax.loop.fit` (every seed in one vmapped population, Orbax
   checkpoints, resume, TensorBoard);
2. pre-trains the same model jointly on the training tasks pooled together (supervised, best params by
   validation loss), and draws a from-scratch initialisation;
3. adapts each initialisation to every held-out task with k support samples, k in `shots`, by the SAME
   adaptation rule (`trading_jax.meta.adapt`: the inner optimiser, inner steps and rate of [maml]; a
   Meta-SGD run adapts its MAML initialisation with its learned rates, the others with `inner_lr`), and
   scores the query samples: MSE of the scaled return and direction accuracy (sign of the forecast
   against the sign of the realised return, zero returns left out). Without adaptation (k = 0) the
   MAML and pre-trained initialisations are scored as they are.

Held-out tasks: synthetic regimes drawn from keys no meta-training step uses; real held-out assets are
never meta-trained or pre-trained on, their support is the LAST k samples of their train + val splits
and their query is their test split (after the embargo), so adaptation reads no bar of the query period.
Real assets too short for the largest k (or without a test sample) are never held out. Each real asset's
targets are scaled by the std of its own training-split targets (past data only), as a synthetic task's
are by its support period.
The table gives the mean over seeds of the per-seed mean over held-out tasks, with a 95% t-interval over
seeds, and paired differences (MAML minus each baseline, over seeds).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.logging import get_logger
from trading_jax.runs import schema as S
from trading_jax.runs.folder import RunFolder, file_fingerprints
from trading_jax.runs.results import FAILED, cell, write_results

__all__ = ["MAMLExperiment", "load", "run"]

log = get_logger(__name__)

METHODS = ("zero_forecast", "maml", "pretrain", "scratch")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Where the tasks come from (module docstring)."""

    source: str = "synthetic"
    holdout_symbols: tuple[str, ...] | None = None
    holdout_fraction: float = 0.3


@dataclasses.dataclass(frozen=True)
class PretrainSpec:
    """Joint pre-training of the baseline initialisation."""

    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 1e-3
    tasks: int = 256


@dataclasses.dataclass(frozen=True)
class EvaluationSpec:
    """k-shot evaluation on held-out tasks."""

    shots: tuple[int, ...] = (5, 20, 100)
    query: int = 100
    tasks: int = 64


@dataclasses.dataclass(frozen=True)
class MAMLExperiment:
    """A MAML experiment (module docstring)."""

    name: str
    maml: object
    tasks: TaskSpec
    synthetic: object
    data: object
    pretrain: PretrainSpec
    evaluation: EvaluationSpec
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    every: int = 50
    file: str = "<experiment>"

    algorithm = "maml"


@dataclasses.dataclass(frozen=True)
class _Top:
    name: str
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    every: int = 50


def load(raw: dict, file) -> MAMLExperiment:
    """A `MAMLExperiment` from a parsed TOML file (every mistake a one-line `ConfigError`)."""
    from trading_jax.meta import MAMLConfig, SyntheticRegimeTasks
    from trading_jax.runs.supervised import DATA_CHECKS, check_model
    from trading_jax.training.dataset import DataSpec

    S.check_keys(raw, {"algorithm", "name", "seeds", "every", "maml", "tasks", "data", "pretrain", "evaluation"},
                 file, "")
    for table in ("maml", "tasks", "data", "pretrain", "evaluation"):
        if table in raw and not isinstance(raw[table], dict):
            raise S.ConfigError(f"{file}: {table} must be a table ([{table}])")
    maml_table = dict(raw.get("maml", {}))
    check_model(maml_table, file, where="maml")
    maml_table.setdefault("model_kwargs", {})
    maml = S.build(MAMLConfig, maml_table, file, "maml", {
        "inner_steps": S.at_least(1), "inner_lr": S.positive, "meta_lr": S.positive, "meta_batch": S.at_least(1),
        "support": S.at_least(1), "query": S.at_least(1), "meta_steps": S.at_least(1), "max_grad_norm": S.positive,
        "adam_eps_root": S.positive}, convert={"model_kwargs": S.kwargs_pairs})
    if maml.task != "regression":
        raise S.ConfigError(f"{file}: [maml] task = {maml.task!r}: MAML experiments forecast returns; use "
                            "task = \"regression\"")
    tasks_table = dict(raw.get("tasks", {}))
    synthetic_table = tasks_table.pop("synthetic", {})
    tasks = S.build(TaskSpec, tasks_table, file, "tasks", {
        "source": S.one_of("synthetic", "assets"),
        "holdout_fraction": S.in_interval(0, 1, low_open=True, high_open=True)})
    if not isinstance(synthetic_table, dict):
        raise S.ConfigError(f"{file}: [tasks] synthetic must be a table ([tasks.synthetic])")
    synthetic = S.build(SyntheticRegimeTasks, synthetic_table, file, "tasks.synthetic")
    data = S.build(DataSpec, dict(raw.get("data", {})), file, "data", DATA_CHECKS)
    if tasks.source == "assets":
        if "data" not in raw or data.source == "synthetic":
            raise S.ConfigError(f"{file}: [tasks] source = \"assets\" needs [data] source = a folder or glob of "
                                "OHLCV files (one asset per task)")
        if not S.source_exists(data.source):
            raise S.ConfigError(f"{file}: [data] source = {data.source!r}: no such file or folder (paths are "
                                "relative to the working directory)")
    pretrain = S.build(PretrainSpec, dict(raw.get("pretrain", {})), file, "pretrain", {
        "epochs": S.at_least(1), "batch_size": S.at_least(1), "learning_rate": S.positive, "tasks": S.at_least(1)})
    evaluation = S.build(EvaluationSpec, dict(raw.get("evaluation", {})), file, "evaluation", {
        "query": S.at_least(1), "tasks": S.at_least(1)})
    if not evaluation.shots or any(not isinstance(k, int) or k < 1 for k in evaluation.shots):
        raise S.ConfigError(f"{file}: [evaluation] shots = {list(evaluation.shots)}: expected a list of positive "
                            "integers (support samples per held-out task)")
    if tasks.source == "synthetic":  # the periods must hold the windows asked for, before anything trains
        for where, k, q in (("maml] support / query", maml.support, maml.query),
                            ("evaluation] shots / query", max(evaluation.shots), evaluation.query)):
            try:
                synthetic.check(None, k, q)
            except ValueError as error:
                raise S.ConfigError(f"{file}: [{where} = {k} / {q}: {error}; lengthen [tasks.synthetic] "
                                    "support_bars / query_bars or ask for fewer samples") from None
    top = {k: raw[k] for k in ("name", "seeds", "every") if k in raw}
    top.setdefault("name", Path(str(file)).stem)
    top = S.build(_Top, top, file, "", {"every": S.at_least(1)})
    S.check_seeds(top.seeds, file)
    return MAMLExperiment(maml=maml, tasks=tasks, synthetic=synthetic, data=data, pretrain=pretrain,
                          evaluation=evaluation, file=str(file), **dataclasses.asdict(top))


# ------------------------------------------------------------------------------------------- tasks


def _holdout(symbols: list[str], eligible: np.ndarray, spec: TaskSpec, file, why: str) -> np.ndarray:
    """bool `[assets]`: the held-out assets, named or a fixed-generator draw of `holdout_fraction` among the
    `eligible` ones (those with enough support and test samples; `why` says what an ineligible one lacks)."""
    if spec.holdout_symbols is not None:
        unknown = sorted(set(spec.holdout_symbols) - set(symbols))
        if unknown:
            raise S.ConfigError(f"{file}: [tasks] holdout_symbols {unknown} are not in the data (it has "
                                f"{', '.join(symbols[:12])}{' ...' if len(symbols) > 12 else ''})")
        held = np.isin(symbols, spec.holdout_symbols)
        short = [s for s, h, e in zip(symbols, held, eligible) if h and not e]
        if short:
            raise S.ConfigError(f"{file}: [tasks] holdout_symbols {short}: {why}; hold out other symbols")
    else:
        n = max(1, int(round(spec.holdout_fraction * len(symbols))))
        candidates = np.flatnonzero(eligible)
        held = np.zeros(len(symbols), bool)
        held[np.random.default_rng(0).permutation(candidates)[:n]] = True
    if held.all() or not held.any():
        raise S.ConfigError(f"{file}: [tasks] the held-out assets must leave at least one asset on each side "
                            f"({int(held.sum())} of {len(symbols)} held out; {int((~eligible).sum())} too short to "
                            f"hold out: {why})")
    return held


def _asset_tasks(experiment: MAMLExperiment):
    """Real tasks: meta-training args, the pooled pre-training dataset and the held-out evaluation tasks."""
    from trading_jax.meta import tasks_from_splits
    from trading_jax.training.config import Dataset
    from trading_jax.training.dataset import build_datasets

    splits, info = build_datasets(experiment.data, "regression")
    train, val, test = splits["train"], splits["val"], splits["test"]
    n_assets = len(info["symbols"])
    # one task = one asset: its targets are scaled by its OWN return volatility over its training split
    # (past data only), as a synthetic task's are by its support period; pooled scaling would hand the
    # volatile assets targets of 10-25 standard deviations that blow up a few SGD steps
    scale = np.ones(n_assets, np.float32)
    for a in range(n_assets):
        y_a = train.y[train.asset == a]
        if len(y_a) > 1 and np.std(y_a) > 0:
            scale[a] = np.std(y_a)
    train, val, test = (sp._replace(y=(sp.y / scale[sp.asset]).astype(np.float32)) for sp in (train, val, test))
    pool_size = np.bincount(train.asset, minlength=n_assets) + np.bincount(val.asset, minlength=n_assets)
    test_size = np.bincount(test.asset, minlength=n_assets)
    k_max = max(experiment.evaluation.shots)
    eligible = (pool_size >= k_max) & (test_size > 0)
    held = _holdout(info["symbols"], eligible, experiment.tasks, experiment.file,
                    f"fewer than {k_max} train/val samples (the largest k of [evaluation] shots) or no test sample")
    in_train = ~held[train.asset]
    meta_args = tasks_from_splits(train.x[in_train], train.y[in_train], train.asset[in_train])
    val_in = ~held[val.asset]
    pretrain_data = Dataset(jnp.asarray(train.x[in_train]), jnp.asarray(train.y[in_train]),
                            jnp.asarray(val.x[val_in]), jnp.asarray(val.y[val_in]))
    held_ids = np.flatnonzero(held)
    support_pool, query = [], []
    for a in held_ids:  # support from the asset's train + val samples (time order), query its test samples
        sx = np.concatenate([train.x[train.asset == a], val.x[val.asset == a]])
        sy = np.concatenate([train.y[train.asset == a], val.y[val.asset == a]])
        support_pool.append((sx, sy))
        query.append((test.x[test.asset == a], test.y[test.asset == a]))
    n_query = max(len(q[1]) for q in query)
    qx = np.zeros((len(query), n_query) + query[0][0].shape[1:], np.float32)
    qy = np.zeros((len(query), n_query), np.float32)
    qmask = np.zeros((len(query), n_query), bool)
    for i, (x, y) in enumerate(query):
        qx[i, : len(y)], qy[i, : len(y)], qmask[i, : len(y)] = x, y, True

    def held_out(key, k):  # the same tasks for every key: the last k support samples of each held-out asset
        del key
        sx = np.stack([p[0][-k:] for p in support_pool])
        sy = np.stack([p[1][-k:] for p in support_pool])
        return jnp.asarray(sx), jnp.asarray(sy), jnp.asarray(qx), jnp.asarray(qy), jnp.asarray(qmask)

    info = {**info, "holdout_symbols": [info["symbols"][a] for a in held_ids],
            "meta_train_symbols": [s for s, h in zip(info["symbols"], held) if not h],
            "query_samples": int(qmask.sum())}
    files = file_fingerprints([experiment.data.source])
    return meta_args, pretrain_data, held_out, info, files


def _synthetic_tasks(experiment: MAMLExperiment):
    """Synthetic regimes: meta-training args, a pooled pre-training dataset and held-out regime draws."""
    from trading_jax.training.config import Dataset

    source = experiment.synthetic
    cfg, pre = experiment.maml, experiment.pretrain
    args = source.default_args()

    def pooled(key, n_tasks):
        t = source.sample(key, args, n_tasks, cfg.support, cfg.query)
        x = jnp.concatenate([t.support_x, t.query_x], axis=1)
        y = jnp.concatenate([t.support_y, t.query_y], axis=1)
        return x.reshape((-1,) + x.shape[2:]), y.reshape(-1)

    # pre-training regimes come from their own key stream (fold_in 1), held-out regimes from another (2);
    # meta-training draws from the seed's key through the trainer: no held-out regime is ever trained on
    base = jax.random.key(10_000 + 7)
    x_tr, y_tr = pooled(jax.random.fold_in(base, 1), pre.tasks)
    x_va, y_va = pooled(jax.random.fold_in(base, 3), max(8, pre.tasks // 8))
    pretrain_data = Dataset(x_tr, y_tr, x_va, y_va)

    def held_out(key, k):
        t = source.sample(jax.random.fold_in(key, 2), args, experiment.evaluation.tasks, k, experiment.evaluation.query)
        return t.support_x, t.support_y, t.query_x, t.query_y, jnp.ones(t.query_y.shape, bool)

    info = {"source": "synthetic regimes", "features": int(x_tr.shape[-1]), "pretrain_samples": int(x_tr.shape[0])}
    return args, pretrain_data, held_out, info, []


# -------------------------------------------------------------------------------------- evaluation


def _scores(pred, y, mask):
    """Per-task `(mse [T], direction accuracy [T])` over the masked query samples (zero returns left out)."""
    mask = mask.astype(jnp.float32)
    mse = jnp.sum(mask * (pred - y) ** 2, -1) / jnp.maximum(jnp.sum(mask, -1), 1.0)
    counted = mask * (y != 0)
    hit = counted * (jnp.sign(pred) == jnp.sign(y))
    return mse, jnp.sum(hit, -1) / jnp.maximum(jnp.sum(counted, -1), 1.0)


def _evaluator(cfg, model):
    """`(adapted, zero_shot)`, jitted: per-task `(mse [T], accuracy [T])` after adapting on the support
    set with `trading_jax.meta.adapt` (dropout off), or of the initialisation as it is."""
    from trading_jax.meta import adapt, make_apply

    apply = make_apply(model)

    def predict(params, x):
        return apply(params, x)["prediction"].reshape(x.shape[0])

    @jax.jit
    def adapted(params, inner_lrs, sx, sy, qx, qy, qmask, key):
        def one(sx, sy, qx, qy, qmask, k):
            new = adapt(cfg, apply, params, sx, sy, k, inner_lrs=inner_lrs, train=False)
            mse, acc = _scores(predict(new, qx)[None], qy[None], qmask[None])
            return mse[0], acc[0]

        return jax.vmap(one)(sx, sy, qx, qy, qmask, jax.random.split(key, sx.shape[0]))

    @jax.jit
    def zero_shot(params, qx, qy, qmask):
        return _scores(jax.vmap(lambda x: predict(params, x))(qx), qy, qmask)

    return adapted, zero_shot


def _train_baseline(experiment, model_cfg, data, key):
    """Joint pre-training (supervised, best params by validation loss) of the same model."""
    from trading_jax.training import TrainConfig
    from trading_jax.training.train import make_train

    pre = experiment.pretrain
    config = TrainConfig(model=model_cfg.model, preset=model_cfg.preset, model_kwargs=model_cfg.model_kwargs,
                         task="regression", epochs=pre.epochs, batch_size=pre.batch_size,
                         learning_rate=pre.learning_rate, patience=None)
    result = jax.jit(make_train(config, data))(key)
    return result.best_params, np.asarray(result.history["val_loss"]).tolist()


def run(experiment: MAMLExperiment, out_dir: str | Path, overwrite: bool = False,
        show_progress: bool = True) -> tuple[str, bool]:
    """Meta-train every seed, pre-train and scratch baselines, k-shot evaluation (module docstring)."""
    from trading_jax.checkpoint import CheckpointConfig, Checkpointer
    from trading_jax.evaluation.stats import paired_difference, summarize
    from trading_jax.logging import TensorBoardWriter
    from trading_jax.loop import fit
    from trading_jax.meta import ArrayTasks, make_trainer

    out = Path(out_dir)
    cfg = experiment.maml
    with RunFolder(out, overwrite=overwrite) as folder:
        if experiment.tasks.source == "assets":
            args, pretrain_data, held_out, info, files = _asset_tasks(experiment)
            source = ArrayTasks(embargo=experiment.data.horizon)  # support labels never read query bars
        else:
            args, pretrain_data, held_out, info, files = _synthetic_tasks(experiment)
            source = experiment.synthetic
        record = dataclasses.asdict(experiment)
        record.pop("file")
        state = folder.claim(record, {"files": files, **{k: info[k] for k in info if k not in ("features",)}})
        if state == "resume":
            log.info("%s: resuming the run in %s", experiment.name, out)
        trainer = make_trainer(cfg, source, args)
        model = trainer.model
        seeds = list(experiment.seeds)
        ckpt_config = CheckpointConfig(directory=str((out / "checkpoints" / "meta").resolve()), save_every_steps=1,
                                       keep_best=1, best_metric="meta_loss", keep_last=1)
        start = time.perf_counter()
        keys = jnp.stack([jax.random.key(s) for s in seeds])
        with Checkpointer(ckpt_config) as ckpt, TensorBoardWriter(out / "tensorboard" / "meta") as writer:
            meta = fit(trainer.population(len(seeds)), keys, checkpointer=ckpt, every=experiment.every,
                       writer=writer, show_progress=show_progress, desc=f"{experiment.name} meta-train seeds {seeds}")
            jax.block_until_ready(meta.params)
        meta_seconds = time.perf_counter() - start
        adapted, zero_shot = _evaluator(cfg, model)
        per_seed = []
        for i, seed in enumerate(seeds):
            key = jax.random.fold_in(jax.random.key(seed), 99)
            k_pre, k_scratch, k_eval, k_adapt = jax.random.split(key, 4)
            maml_params = jax.tree.map(lambda a, i=i: a[i], meta.params)
            maml_lrs = None if meta.inner_lrs is None else jax.tree.map(lambda a, i=i: a[i], meta.inner_lrs)
            pre_params, pre_val = _train_baseline(experiment, cfg, pretrain_data, k_pre)
            x0 = pretrain_data.x_train[:1]
            scratch = model.init({"params": k_scratch, "dropout": k_scratch}, x0, train=False)["params"]
            inits = {"maml": (maml_params, maml_lrs), "pretrain": (pre_params, None), "scratch": (scratch, None)}
            scores = {}
            for k in experiment.evaluation.shots:
                sx, sy, qx, qy, qmask = held_out(k_eval, k)
                for method, (params, lrs) in inits.items():
                    mse, acc = adapted(params, lrs, sx, sy, qx, qy, qmask, k_adapt)
                    scores[f"{method}/{k}"] = {"mse": float(jnp.mean(mse)), "direction_accuracy": float(jnp.mean(acc))}
            _, _, qx, qy, qmask = held_out(k_eval, experiment.evaluation.shots[0])
            for method in ("maml", "pretrain"):
                mse, acc = zero_shot(inits[method][0], qx, qy, qmask)
                scores[f"{method}/0"] = {"mse": float(jnp.mean(mse)), "direction_accuracy": float(jnp.mean(acc))}
            # the zero-return forecast: the MSE any forecast must beat (its direction is undefined)
            zero_mse, _ = _scores(jnp.zeros_like(qy), qy, qmask)
            scores["zero_forecast/0"] = {"mse": float(jnp.mean(zero_mse))}
            history = {k: np.asarray(v[i]).tolist() for k, v in meta.history.items()}
            finite = all(np.isfinite(v["mse"]) for v in scores.values())
            per_seed.append({"seed": seed, "scores": scores, "meta_history": history, "pretrain_val_loss": pre_val,
                             "failed": None if finite else "a held-out loss is NaN or inf"})
            log.info("%s seed %d: %s", experiment.name, seed,
                     ", ".join(f"{k} mse {v['mse']:.4g}" for k, v in scores.items() if k.endswith(f"/{max(experiment.evaluation.shots)}")))
        rows = sorted(per_seed[0]["scores"], key=lambda r: (int(r.split("/")[1]), METHODS.index(r.split("/")[0])))
        summary = {r: {m: summarize([s["scores"][r][m] for s in per_seed], f"{r} {m}") for m in per_seed[0]["scores"][r]}
                   for r in rows}
        shots = [0] + list(experiment.evaluation.shots)
        diffs = {}
        for k in shots:
            for base in ("pretrain", "scratch"):
                if f"{base}/{k}" in summary:
                    diffs[f"maml-{base}/{k}"] = {m: paired_difference([s["scores"][f"maml/{k}"][m] for s in per_seed],
                                                                       [s["scores"][f"{base}/{k}"][m] for s in per_seed])
                                                 for m in ("mse", "direction_accuracy")}
        failures = [s for s in per_seed if s["failed"]]
        report = {"experiment": experiment.name, "status": FAILED if failures else "ok", "maml": dataclasses.asdict(cfg),
                  "info": info, "meta_train_seconds": meta_seconds, "seeds": per_seed, "summary": summary,
                  "paired_differences": diffs}
        write_results(out, report, results_table(experiment, info, summary, diffs, failures))
    if failures:
        return f"{experiment.name}: {FAILED}: " + "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failures), False
    k = max(experiment.evaluation.shots)
    return (f"{experiment.name}: held-out MSE at k={k}: MAML {cell(summary[f'maml/{k}']['mse'])}, pre-train "
            f"{cell(summary[f'pretrain/{k}']['mse'])}, scratch {cell(summary[f'scratch/{k}']['mse'])} "
            f"({len(per_seed)} seeds, mean [95% CI]); full table in {out / 'results.md'}"), True


def results_table(experiment: MAMLExperiment, info: dict, summary: dict, diffs: dict, failures: list) -> str:
    """Markdown: rows = initialisation x k, columns = held-out MSE and direction accuracy (mean [95% CI])."""
    cfg = experiment.maml
    lines = [f"# {experiment.name}", "",
             f"MAML ({cfg.method}, {cfg.inner_steps} inner {cfg.inner_optimizer} steps at lr {cfg.inner_lr}, "
             f"{cfg.meta_steps} meta-steps of {cfg.meta_batch} tasks) of `{cfg.model}` on {info['source']}; "
             f"seeds {list(experiment.seeds)}.",
             "Every initialisation adapts to each held-out task with the same rule (k support samples); k = 0 is no "
             "adaptation; zero_forecast predicts a zero return (the MSE to beat). Mean over seeds of the mean over held-out "
             "tasks, 95% Student-t interval over seeds.", ""]
    if "holdout_symbols" in info:
        lines += [f"Held-out assets ({len(info['holdout_symbols'])}): {', '.join(info['holdout_symbols'])}; query = "
                  f"their test split ({info['query_samples']:,} samples), support = their last k train/val samples.", ""]
    else:
        lines += [f"Held-out tasks: {experiment.evaluation.tasks} new synthetic regimes per seed, "
                  f"{experiment.evaluation.query} query samples each.", ""]
    if failures:
        lines += [f"**{FAILED}**: " + "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failures), ""]
    lines += ["| initialisation | k | held-out MSE (scaled return) | direction accuracy |", "| --- | --- | --- | --- |"]
    for row, metrics in summary.items():
        method, k = row.split("/")
        accuracy = cell(metrics["direction_accuracy"]) if "direction_accuracy" in metrics else "(no direction)"
        lines.append(f"| {method} | {k} | {cell(metrics['mse'])} | {accuracy} |")
    lines += ["", "Paired differences over seeds (MAML minus baseline; negative MSE = MAML better):", "",
              "| comparison | k | MSE difference | accuracy difference |", "| --- | --- | --- | --- |"]
    for row, metrics in diffs.items():
        name, k = row.split("/")
        lines.append(f"| {name} | {k} | {cell(metrics['mse'])} | {cell(metrics['direction_accuracy'])} |")
    return "\n".join(lines) + "\n"
