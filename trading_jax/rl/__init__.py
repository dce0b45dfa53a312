"""Reinforcement learning in pure JAX: one module per algorithm (`ppo` first) and the pieces they share,
each in a module named for what it is: `gae` (advantages), `losses` (policy-gradient losses),
`distributions` (action distributions), `normalizers` (observation / reward normalisers), `evaluation`
(vectorised rollouts and statistics), `baselines`.

    from trading_jax.rl import PPOConfig, make_train
    result = make_train(PPOConfig(env="trading", total_timesteps=2**20))(jax.random.key(0))
"""

from trading_jax._lazy import lazy_exports

_EXPORTS = {
    "PPOConfig": "ppo",
    "PPOHyperparams": "ppo",
    "PPOResult": "ppo",
    "PPOState": "ppo",
    "PPOTrainer": "ppo",
    "PolicyParams": "ppo",
    "hyperparam_grid": "ppo",
    "make_train": "ppo",
    "make_trainer": "ppo",
    "make_policy": "ppo",
    "as_policy": "ppo",
    "evaluate": "ppo",
    "bootstrap_values": "gae",
    "ppo_loss": "losses",
    "explained_variance": "losses",
    "ActionDistribution": "distributions",
    "RewardNormState": "normalizers",
    "reward_norm_init": "normalizers",
    "reward_norm_update": "normalizers",
    "obs_norm_init": "normalizers",
    "obs_norm_update": "normalizers",
    "obs_norm_apply": "normalizers",
    "EpisodeStats": "evaluation",
    "RecurrentPolicy": "evaluation",
    "rollout_episodes": "evaluation",
    "rollout_many": "evaluation",
    "compare": "evaluation",
    "summarize": "evaluation",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
