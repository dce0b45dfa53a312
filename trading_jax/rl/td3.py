"""TD3 (Fujimoto et al. 2018) end to end under `jit`, on the shared off-policy loop.

    config = TD3Config(env="portfolio", total_timesteps=50_000)
    result = make_train(config)(jax.random.key(0))                       # OffPolicyResult
    results = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.key(0), 8))   # 8 seeds

TD3 is DDPG with three fixes, all here (`trading_jax.rl.deterministic` has the learner and its maths):
clipped double-Q learning (twin critics, the target takes their minimum), target policy smoothing (clipped
Gaussian noise on the target action: `target_policy_noise` 0.2, `target_noise_clip` 0.5) and delayed policy
updates (the actor and all targets move every `policy_delay = 2` critic steps). Exploration adds
`action_noise` (0.1) Gaussian noise to the actor's action. Defaults follow SB3's TD3 (lr 1e-3, batch 256,
tau 0.005, networks [400, 300] relu there; [256, 256] here).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from trading_jax.rl import offpolicy
from trading_jax.rl.deterministic import (METRIC_NAMES, DPGHyperparams, DPGLearner, build_dpg_agent,
                                         check_dpg_settings, hyperparam_grid)
from trading_jax.rl.offpolicy import OffPolicyConfig, OffPolicyResult, PolicyParams

__all__ = ["TD3Config", "DPGHyperparams", "DPGLearner", "OffPolicyResult", "PolicyParams", "hyperparam_grid",
           "make_train", "make_trainer", "make_policy", "as_policy", "make_evaluator", "evaluate",
           "member_policy_fn", "train_agents", "build_agent", "METRIC_NAMES"]

@dataclasses.dataclass(frozen=True)
class TD3Config(OffPolicyConfig):
    """TD3 settings: `OffPolicyConfig`'s and

    Attributes:
        lr: Adam learning rate of actor and critics.
        action_noise: std of the Gaussian exploration noise (on actions in [-1, 1]).
        target_policy_noise, target_noise_clip: target policy smoothing.
        policy_delay: critic steps per actor and target update.
        network: the actor ("deterministic_actor"); critic_network: the twin critics ("critic_ensemble").
    """

    lr: float = 1e-3
    action_noise: float = 0.1
    target_policy_noise: float = 0.2
    target_noise_clip: float = 0.5
    policy_delay: int = 2
    network: str = "deterministic_actor"
    critic_network: str = "critic_ensemble"

    def hyperparams(self) -> DPGHyperparams:
        return DPGHyperparams(**{k: jnp.float32(getattr(self, k)) for k in
                                 ("lr", "gamma", "tau", "action_noise", "target_policy_noise", "target_noise_clip")})

    def validate(self) -> None:
        super().validate()
        check_dpg_settings(self)


def build_agent(config: TD3Config, env, env_params):
    """`(Agent, default hyperparameters)`: twin critics, smoothed targets, delayed actor."""
    return build_dpg_agent(config, env, env_params, n_critics=2, smooth_target=True,
                           policy_delay=int(config.policy_delay)), config.hyperparams()


(make_trainer, make_train, make_policy, as_policy, make_evaluator, evaluate, member_policy_fn,
 train_agents) = offpolicy.algorithm_functions(build_agent)
