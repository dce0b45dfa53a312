"""Moved to `trading_jax.evaluation.rollout` (the rollout harness serves every policy and the ensembles, so it
sits below the algorithms); this module re-exports it so `trading_jax.rl.evaluation` keeps working."""

from trading_jax.evaluation.rollout import (  # noqa: F401
    EpisodeStats,
    RecurrentPolicy,
    rollout,
    rollout_episodes,
    rollout_many,
    summarize,
    paired_difference,
    compare,
    default_max_steps,
)

__all__ = ["EpisodeStats", "RecurrentPolicy", "rollout", "rollout_episodes", "rollout_many", "summarize", "paired_difference", "compare", "default_max_steps"]
