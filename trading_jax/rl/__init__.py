"""Reinforcement learning in pure JAX: one module per algorithm (`ppo` first) and its pure pieces (`gae`).

    from trading_jax.rl import PPOConfig, make_train
    result = make_train(PPOConfig(env="trading", total_timesteps=2**20))(jax.random.key(0))
"""

from trading_jax._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
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
        "evaluate": "ppo",
        "ppo_loss": "gae",
        "RunningMeanStd": "gae",
    },
)
__all__ = ["PPOConfig", "PPOHyperparams", "PPOResult", "PPOState", "PPOTrainer", "PolicyParams", "hyperparam_grid",
           "make_train", "make_trainer", "make_policy", "evaluate", "ppo_loss", "RunningMeanStd"]
