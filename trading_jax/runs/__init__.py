"""Experiments: typed experiment files, run folders that cannot silently lie, results tables.

    experiment = load_experiment("experiments/default.toml")   # ConfigError (one line) for any mistake
    summary, ok = run_experiment(experiment, "runs/default")   # resumes; refuses a changed config or data

A file's `algorithm` key picks its schema: "supervised" (the default; `trading_jax.runs.supervised`),
"ppo" (`trading_jax.runs.ppo`), "sac", "td3", "ddpg" and "dqn" (off-policy RL; `trading_jax.runs.rl`, the
schema and runner every RL algorithm, PPO included, shares), "rl_comparison" (several RL algorithms on one env
in one table, with their cross-algorithm Thompson ensemble; `trading_jax.runs.rl`), "maml"
(`trading_jax.runs.maml`), "ensemble" (`trading_jax.runs.ensemble`), "ppo_ensemble"
(`trading_jax.runs.ppo_ensemble`), "sentiment"
(`trading_jax.runs.sentiment`), "portfolio" (`trading_jax.runs.portfolio`) or "backtest"
(`trading_jax.runs.backtest`, walk-forward model comparisons with costs; `trading-jax backtest`). A new
algorithm adds a module with `load(raw, file)` and `run(experiment, out, overwrite, show_progress) -> (summary,
ok)` and one line in `ALGORITHMS`; a new RL algorithm adds an entry to `trading_jax.runs.rl.AGENTS` instead.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from trading_jax.runs.schema import ConfigError, read_toml

__all__ = ["ALGORITHMS", "ConfigError", "load_experiment", "run_experiment"]

ALGORITHMS = {"supervised": "trading_jax.runs.supervised", "ppo": "trading_jax.runs.ppo",
              "sac": "trading_jax.runs.rl", "td3": "trading_jax.runs.rl", "ddpg": "trading_jax.runs.rl",
              "dqn": "trading_jax.runs.rl", "rl_comparison": "trading_jax.runs.rl",
              "maml": "trading_jax.runs.maml", "ensemble": "trading_jax.runs.ensemble",
              "ppo_ensemble": "trading_jax.runs.ppo_ensemble", "sentiment": "trading_jax.runs.sentiment",
              "portfolio": "trading_jax.runs.portfolio", "backtest": "trading_jax.runs.backtest"}


def load_experiment(path: str | Path):
    """Read and check an experiment file; raises `ConfigError` naming the file, table and key."""
    raw = read_toml(path)
    algorithm = raw.get("algorithm", "supervised")
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"{path}: algorithm = {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    raw.pop("tune", None)  # the [tune] table is `trading-jax tune`'s (trading_jax.runs.tune); training ignores it
    return importlib.import_module(ALGORITHMS[algorithm]).load(raw, str(path))


def run_experiment(experiment, out_dir: str | Path, overwrite: bool = False, show_progress: bool = True):
    """Run a loaded experiment into `out_dir`: `(summary line, ok)`; ok is False when the run FAILED."""
    module = importlib.import_module(ALGORITHMS[experiment.algorithm])
    return module.run(experiment, out_dir, overwrite=overwrite, show_progress=show_progress)
