"""DDPG (Lillicrap et al. 2016) end to end under `jit`, on the shared off-policy loop.

    config = DDPGConfig(env="portfolio", total_timesteps=50_000)
    result = make_train(config)(jax.random.key(0))                       # OffPolicyResult

One critic, the target `r + b Q'(s', mu'(s'))` without smoothing, and an actor and target update after every
critic step (`trading_jax.rl.deterministic` has the learner and its maths); exploration adds `action_noise`
(0.1) Gaussian noise. Defaults follow SB3's DDPG (lr 1e-3, batch 256, tau 0.005).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from trading_jax.rl import offpolicy
from trading_jax.rl.deterministic import (METRIC_NAMES, DPGHyperparams, DPGLearner, build_dpg_agent,
                                         check_dpg_settings, hyperparam_grid)
from trading_jax.rl.offpolicy import OffPolicyConfig, OffPolicyResult, PolicyParams

__all__ = ["DDPGConfig", "DPGHyperparams", "DPGLearner", "OffPolicyResult", "PolicyParams", "hyperparam_grid",
           "make_train", "make_trainer", "make_policy", "as_policy", "make_evaluator", "evaluate",
           "member_policy_fn", "train_agents", "build_agent", "METRIC_NAMES"]


@dataclasses.dataclass(frozen=True)
class DDPGConfig(OffPolicyConfig):
    """DDPG settings: `OffPolicyConfig`'s and

    Attributes:
        lr: Adam learning rate of actor and critic.
        action_noise: std of the Gaussian exploration noise (on actions in [-1, 1]).
        network: the actor ("deterministic_actor"); critic_network: the critic ("critic_ensemble", one head).
    """

    lr: float = 1e-3
    action_noise: float = 0.1
    network: str = "deterministic_actor"
    critic_network: str = "critic_ensemble"

    def hyperparams(self) -> DPGHyperparams:
        f = jnp.float32
        return DPGHyperparams(lr=f(self.lr), gamma=f(self.gamma), tau=f(self.tau), action_noise=f(self.action_noise),
                              target_policy_noise=f(0.0), target_noise_clip=f(0.0))

    def validate(self) -> None:
        super().validate()
        check_dpg_settings(self)


def build_agent(config: DDPGConfig, env, env_params):
    """`(Agent, default hyperparameters)`: one critic, no target smoothing, an actor step after every critic step."""
    return build_dpg_agent(config, env, env_params, n_critics=1, smooth_target=False, policy_delay=1), config.hyperparams()


(make_trainer, make_train, make_policy, as_policy, make_evaluator, evaluate, member_policy_fn,
 train_agents) = offpolicy.algorithm_functions(build_agent)
