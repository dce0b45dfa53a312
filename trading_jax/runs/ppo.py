"""PPO experiment files (`algorithm = "ppo"`): train over seeds, evaluate on held-out episodes against
baselines.

The file format, the checks and the runner are those of every RL algorithm (`trading_jax.runs.rl`): an
`[env]` table (with `[env.kwargs]` and an optional `[env.data]`), a `[ppo]` table of `PPOConfig` fields
(num_envs, num_steps, total_timesteps, ...; `[ppo.network_kwargs]`) and an `[evaluation]` table. The
agent's rows are `ppo_seed_<k>`; a seed whose policy loss is NaN in every update, or whose final params are
not finite, makes the run FAILED. This module keeps the PPO names (`PPOExperiment`, `load`, `run`, ...)
that `trading_jax.runs.ppo_ensemble` and callers use.
"""

from __future__ import annotations

from pathlib import Path

from trading_jax.runs.rl import (DATA_CHECKS, EVALUATION_CHECKS, METRICS, PPO_CHECKS, PPOExperiment, build_envs,
                                 check_env_kwargs, results_table)
from trading_jax.runs import rl

__all__ = ["PPOExperiment", "load", "run", "build_envs", "results_table", "check_env_kwargs", "PPO_CHECKS",
           "EVALUATION_CHECKS", "DATA_CHECKS", "METRICS"]


def load(raw: dict, file) -> PPOExperiment:
    """A `PPOExperiment` from a parsed TOML file (every mistake a one-line `ConfigError`)."""
    return rl.load(raw, file, algorithm="ppo")


def run(experiment: PPOExperiment, out_dir: str | Path, overwrite: bool = False,
        show_progress: bool = True) -> tuple[str, bool]:
    """Train PPO for every seed, then evaluate it and the baselines on the same held-out episodes
    (`trading_jax.runs.rl.run`). Returns `(summary line, ok)`."""
    return rl.run(experiment, out_dir, overwrite=overwrite, show_progress=show_progress)
