"""Ray Tune's overhead per trial against a bare vmapped sweep of the same trials (for benchmarks/scaling.py).

    from benchmarks._tune_overhead import tune_overhead
    figures = tune_overhead(trials=4, seeds=4)   # {"bare_s", "tune_s", "overhead_per_trial_s", ...}

(a) bare: the `trials` learning rates x `seeds` seeds trained as ONE `trainer.population(trials * seeds)` with a
    `hyperparam_grid` (data built, trainer built and compiled, trained to the end; no checkpoints, no logs);
(b) tune: the same `trials` configs through `trading_jax.runs.tune.run_search` in local mode (FIFO, no early
    stopping), each trial a run folder whose `seeds` train as one vmapped population, with its checkpoints,
    TensorBoard logs and test evaluation, as `trading-jax tune` runs them.

Both are timed end to end `repeats` times (fresh trainers and a fresh search folder each time; the embedded Ray
is started once, before timing, and its start-up is reported apart). Overhead per trial = (tune - bare) / trials
on the medians: what a trial costs beyond its share of the training (worker start, JAX import and compilation
in each trial's process, checkpoints, logs, evaluation, Ray's bookkeeping).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

BASE = """
name = "tune_overhead"
seeds = {seeds}
[data]
synthetic_bars = {bars}
synthetic_assets = 2
window = 16
horizon = 3
[train]
model = "tcn"
preset = "tiny"
task = "regression"
epochs = {epochs}
batch_size = 64
[tune]
metric = "val_loss"
scheduler = "fifo"
max_concurrent = {concurrent}
cpus_per_trial = {cpus_per_trial}
gpus_per_trial = {gpus_per_trial}
[tune.space]
"train.learning_rate" = {{grid = {rates}}}
"""


def _rates(trials: int) -> list[float]:
    return [float(f"{1e-3 * 2 ** (i - trials // 2):.6g}") for i in range(trials)]


def _bare(raw: dict, trials: int, seeds: int) -> float:
    """Seconds of the bare vmapped sweep: data, trainer, one population of trials x seeds, trained to the end."""
    import jax
    import jax.numpy as jnp

    from trading_jax.loop import hyperparam_grid
    from trading_jax.runs.tune import _algorithm_load, apply_overrides
    from trading_jax.training.config import Dataset
    from trading_jax.training.dataset import build_datasets
    from trading_jax.training.train import make_trainer

    start = time.perf_counter()
    experiment = _algorithm_load(apply_overrides(raw, {}), "<tune_overhead>")
    splits, _ = build_datasets(experiment.data, experiment.train.task)
    (x_tr, y_tr), (x_va, y_va) = (splits[k][:2] for k in ("train", "val"))
    data = Dataset(jnp.asarray(x_tr), jax.tree.map(jnp.asarray, y_tr), jnp.asarray(x_va), jax.tree.map(jnp.asarray, y_va))
    trainer = make_trainer(experiment.train, data)
    rates = raw["tune"]["space"]["train.learning_rate"]["grid"]
    grid = hyperparam_grid(trainer.hparams, learning_rate=[lr for lr in rates for _ in range(seeds)])
    keys = jnp.stack([jax.random.key(s) for _ in rates for s in range(seeds)])
    result = trainer.population(trials * seeds).train(keys, grid)
    jax.block_until_ready(result.params)
    return time.perf_counter() - start


def tune_overhead(trials: int = 4, seeds: int = 4, epochs: int = 3, bars: int = 600, repeats: int = 3,
                  num_cpus: int | None = None, concurrent: int = 0, cpus_per_trial: float = 1.0,
                  gpus_per_trial: float = 0.0, workdir: str | Path | None = None) -> dict:
    """Time a bare vmapped sweep and the same trials through Ray Tune (module docstring).

    Args:
        trials: learning rates searched (the grid's size); seeds: seeds per trial (one vmapped population).
        epochs, bars: the tiny supervised config's epochs and synthetic bars per asset.
        repeats: timed runs of each; the medians are reported.
        num_cpus: the embedded Ray's CPUs (default: the machine's). concurrent: Tune's max concurrent trials
            (0: as many as the resources allow). cpus_per_trial, gpus_per_trial: each trial's resources.
        workdir: where the search folders go (default: a temporary folder, removed after).

    Returns:
        `{"bare_s", "tune_s"` (medians), `"bare_runs_s", "tune_runs_s", "overhead_per_trial_s", "ray_start_s",
        "sizes": {...}}`.
    """
    import tomllib

    import ray

    from trading_jax.runs.tune import run_search

    raw = tomllib.loads(BASE.format(seeds=list(range(seeds)), bars=bars, epochs=epochs, rates=_rates(trials),
                                    concurrent=concurrent, cpus_per_trial=cpus_per_trial,
                                    gpus_per_trial=gpus_per_trial))
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="tune-overhead-") if owned else workdir)
    start = time.perf_counter()
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 configure_logging=False)
    ray_start = time.perf_counter() - start
    bare, tuned = [], []
    try:
        for i in range(repeats):
            print(f"tune_overhead: repeat {i + 1}/{repeats} ({trials} trials x {seeds} seeds)", file=sys.stderr,
                  flush=True)
            bare.append(_bare(raw, trials, seeds))
            start = time.perf_counter()
            run_search(raw, root / f"search_{i}", overwrite=True, verbose=0, file="<tune_overhead>")
            tuned.append(time.perf_counter() - start)
    finally:
        if started:
            ray.shutdown()
        if owned:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    bare_s, tune_s = statistics.median(bare), statistics.median(tuned)
    return {"bare_s": bare_s, "tune_s": tune_s, "bare_runs_s": bare, "tune_runs_s": tuned,
            "overhead_per_trial_s": (tune_s - bare_s) / trials, "ray_start_s": ray_start,
            "sizes": {"trials": trials, "seeds": seeds, "epochs": epochs, "bars_per_asset": bars, "assets": 2,
                      "model": "tcn tiny", "repeats": repeats, "num_cpus": num_cpus, "max_concurrent": concurrent,
                      "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial}}
