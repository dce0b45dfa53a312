"""Reinforcement learning in pure JAX: one module per algorithm and the pieces they share, each in a module
named for what it is.

Algorithms: `ppo` (on-policy), and on the shared off-policy loop `offpolicy`: `sac`, `td3`, `ddpg` and `dqn`
(double, dueling, n-step, prioritised, C51). Each has `make_train(config) -> train(key)`, `make_trainer` (a
`trading_jax.loop.FunctionTrainer`: fit, checkpoints, logs, populations), `make_policy`, `as_policy`,
`evaluate` and `train_agents`.

Shared pieces: `gae` (advantages), `losses` (policy-gradient losses), `distributions` (action distributions),
`normalizers` (observation / reward normalisers), `replay` (flashbax buffers, n-step transitions), `targets`
(Bellman targets, SAC/TD3 losses, Polyak averaging, importance weights), `distributional` (C51),
`deterministic` (the DPG learner of TD3 and DDPG), `evaluation` (vectorised rollouts and statistics), `baselines`.

    from trading_jax.rl import PPOConfig, make_train
    result = make_train(PPOConfig(env="trading", total_timesteps=2**20))(jax.random.key(0))
    from trading_jax.rl import sac
    result = sac.make_train(sac.SACConfig(env="portfolio", total_timesteps=50_000))(jax.random.key(0))
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
    "OffPolicyConfig": "offpolicy",
    "OffPolicyResult": "offpolicy",
    "SACConfig": "sac",
    "TD3Config": "td3",
    "DDPGConfig": "ddpg",
    "DQNConfig": "dqn",
    "Transition": "replay",
    "make_buffer": "replay",
    "polyak_update": "targets",
    "summarize": "evaluation",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
