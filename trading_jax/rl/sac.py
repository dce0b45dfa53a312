"""Soft Actor-Critic (Haarnoja et al. 2018) end to end under `jit`, on the shared off-policy loop.

    config = SACConfig(env="portfolio", total_timesteps=50_000, network_kwargs={"hidden": [64, 64]})
    result = make_train(config)(jax.random.key(0))                       # OffPolicyResult
    results = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.key(0), 8))   # 8 seeds
    grid = hyperparam_grid(config.hyperparams(), lr=[1e-4, 3e-4, 1e-3])
    results = jax.vmap(make_train(config))(jax.random.split(key, 3), grid)                   # 3 learning rates

The loop (warm-up, env steps, replay, n-step returns, prioritised replay, truncation) is
`trading_jax.rl.offpolicy`'s. One gradient step on a batch `(s, a, r, b, s')` (`b` the bootstrap multiplier:
`gamma^n`, or 0 after a termination), in SB3's order:

1. **Critics** (twin, `critic_ensemble` with 2 heads): `a' ~ pi(.|s')`,
   `y = r + b * (min(Q'1, Q'2)(s', a') - alpha log pi(a'|s'))` with the target critics `Q'`, and
   `L = 0.5 * sum_i mean(w (Q_i(s, a) - y)^2)` (`w`: importance weights). Priorities: `mean_i |Q_i - y|`.
2. **Actor**: `a ~ pi(.|s)` reparameterised, `L = mean(alpha log pi(a|s) - min_i Q_i(s, a))` with the critics
   just updated.
3. **Temperature** (`learn_alpha`): `L(log alpha) = -mean(log alpha * (log pi(a|s) + H))` on the actor step's
   sample `a` (drawn from the actor before its update: SB3 draws the same sample before its critic step and
   uses it for both) with `H = target_entropy` (default `-dim(A)`). Critics and actor use `alpha = exp(log
   alpha)` from BEFORE this step, as SB3.
4. **Targets**: `Q' <- tau Q + (1 - tau) Q'` (Polyak) every `target_update_interval` gradient steps.

Policy: `a = tanh(u)`, `u ~ N(mean(s), std(s))` (`gaussian_actor`, state-dependent log-std clipped to
[-20, 2]), with the log-density's tanh correction (`distributions.tanh_gaussian_log_prob`); the env gets
`low + (a + 1) / 2 * (high - low)`. The deterministic policy is `tanh(mean)`. Adam (lr `hparams.lr`) for
actor, critics and temperature, as SB3.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from trading_jax.loop import hyperparam_grid as _grid
from trading_jax.rl import offpolicy
from trading_jax.rl.distributions import tanh_gaussian_log_prob
from trading_jax.rl.offpolicy import OffPolicyConfig, OffPolicyResult, PolicyParams
from trading_jax.rl.targets import (default_target_entropy, polyak_update, sac_actor_loss, sac_critic_loss,
                                    sac_target, temperature_loss)

__all__ = ["SACConfig", "SACHyperparams", "SACLearner", "OffPolicyResult", "PolicyParams", "hyperparam_grid",
           "make_train", "make_trainer", "make_policy", "as_policy", "make_evaluator", "evaluate",
           "member_policy_fn", "train_agents", "build_agent", "METRIC_NAMES"]

METRIC_NAMES: tuple[str, ...] = ("critic_loss", "actor_loss", "alpha_loss", "alpha", "q_mean", "entropy")


@struct.dataclass
class SACHyperparams:
    """The vmappable hyperparameters (float32 scalars, or `[n]` arrays for a grid under `vmap`)."""

    lr: Any
    gamma: Any
    tau: Any


def hyperparam_grid(base: SACHyperparams, **values) -> SACHyperparams:
    """A grid for `jax.vmap(train)(keys, grid)` (`trading_jax.loop.hyperparam_grid`)."""
    return _grid(base, **values)


@dataclasses.dataclass(frozen=True)
class SACConfig(OffPolicyConfig):
    """SAC settings: `OffPolicyConfig`'s (env, sizes, replay, gamma, tau, ...) and

    Attributes:
        lr: Adam learning rate of the actor, the critics and the temperature (SB3's 3e-4).
        learn_alpha: learn the temperature (SB3's `ent_coef="auto"`); else it stays `init_alpha`.
        init_alpha: the temperature at the start.
        target_entropy: the entropy target `H`; None: `-dim(A)`.
        target_update_interval: gradient steps between Polyak updates of the target critics.
        network: the actor (`"gaussian_actor"`); critic_network: the twin critics (`"critic_ensemble"`).
        Defaults follow SB3's SAC: buffer 1e6 (here 1e5), batch 256, tau 0.005, gamma 0.99, learning_starts
        100 (here 1,000), networks [256, 256] relu.
    """

    lr: float = 3e-4
    learn_alpha: bool = True
    init_alpha: float = 1.0
    target_entropy: float | None = None
    target_update_interval: int = 1
    network: str = "gaussian_actor"
    critic_network: str = "critic_ensemble"

    def hyperparams(self) -> SACHyperparams:
        return SACHyperparams(lr=jnp.float32(self.lr), gamma=jnp.float32(self.gamma), tau=jnp.float32(self.tau))

    def validate(self) -> None:
        super().validate()
        if not (self.lr > 0 and jnp.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not (self.init_alpha > 0 and jnp.isfinite(self.init_alpha)):
            raise ValueError(f"init_alpha must be a finite number > 0, got {self.init_alpha}")
        if self.target_update_interval < 1:
            raise ValueError(f"target_update_interval must be >= 1, got {self.target_update_interval}")


class SACLearner(NamedTuple):
    """SAC's learner state: actor, critics, target critics, log temperature, their Adam states, step count."""

    actor: Any
    critic: Any
    target_critic: Any
    log_alpha: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    steps: jax.Array


def _networks(config: SACConfig, action_dim: int):
    from trading_jax.models import create

    kwargs = dict(config.network_kwargs)
    actor = create(config.network, config.network_preset, action_dim=action_dim, discrete=False, **kwargs)
    critic = create(config.critic_network, config.network_preset, action_dim=action_dim, n_critics=2, **kwargs)
    return actor, critic


def build_agent(config: SACConfig, env, env_params):
    """`(Agent, default SACHyperparams)` for `env` (which must have a bounded Box action space)."""
    low, high, shape = offpolicy.box_bounds(env.action_space(env_params))
    action_dim = int(jnp.prod(jnp.asarray(shape))) if shape else 1
    actor, critic = _networks(config, action_dim)
    target_entropy = (default_target_entropy(action_dim) if config.target_entropy is None
                      else float(config.target_entropy))
    adam = lambda hp: optax.adam(hp.lr)  # noqa: E731

    def sample(actor_params, nobs, key):
        out = actor.apply({"params": actor_params}, nobs)
        u = out["mean"] + jnp.exp(out["log_std"]) * jax.random.normal(key, out["mean"].shape)
        return jnp.tanh(u), tanh_gaussian_log_prob(out["mean"], out["log_std"], u)

    def init(key, obs_size, hp):
        k_actor, k_critic = jax.random.split(key)
        obs = jnp.zeros((1, obs_size), jnp.float32)
        actor_params = actor.init(k_actor, obs)["params"]
        critic_params = critic.init(k_critic, obs, jnp.zeros((1, action_dim), jnp.float32))["params"]
        log_alpha = jnp.log(jnp.float32(config.init_alpha))
        tx = adam(hp)
        return SACLearner(actor_params, critic_params, critic_params, log_alpha, tx.init(actor_params),
                          tx.init(critic_params), tx.init(log_alpha), jnp.zeros((), jnp.int32))

    def explore(learner, nobs, key, hp, progress):
        del hp, progress
        return sample(learner.actor, nobs, key)[0].reshape((-1,) + shape)

    def update(learner: SACLearner, batch, weights, key, hp, progress):
        del progress
        k_next, k_actor = jax.random.split(key)
        tx = adam(hp)
        obs, next_obs = batch.obs, batch.next_obs
        action = batch.action.reshape(obs.shape[0], action_dim)
        alpha = jnp.exp(learner.log_alpha)

        # 1. critics
        next_action, next_logp = sample(learner.actor, next_obs, k_next)
        next_q = critic.apply({"params": learner.target_critic}, next_obs, next_action)
        y = sac_target(batch.reward, batch.bootstrap, next_q[0], next_q[1], next_logp, alpha)

        def critic_loss_fn(params):
            q = critic.apply({"params": params}, obs, action)
            return sac_critic_loss(q[0], q[1], y, weights), q

        (critic_loss, q), grad = jax.value_and_grad(critic_loss_fn, has_aux=True)(learner.critic)
        step, critic_opt = tx.update(grad, learner.critic_opt, learner.critic)
        critic_params = optax.apply_updates(learner.critic, step)

        # 2. actor, against the updated critics
        def actor_loss_fn(params):
            a, logp = sample(params, obs, k_actor)
            q_pi = critic.apply({"params": critic_params}, obs, a)
            return sac_actor_loss(logp, q_pi[0], q_pi[1], alpha), logp

        (actor_loss, logp), grad = jax.value_and_grad(actor_loss_fn, has_aux=True)(learner.actor)
        step, actor_opt = tx.update(grad, learner.actor_opt, learner.actor)
        actor_params = optax.apply_updates(learner.actor, step)

        # 3. temperature, on the actor step's sample (drawn from the actor before its update, as SB3's)
        log_alpha, alpha_opt, alpha_loss = learner.log_alpha, learner.alpha_opt, jnp.zeros((), jnp.float32)
        if config.learn_alpha:
            alpha_loss, grad = jax.value_and_grad(temperature_loss)(learner.log_alpha, logp, target_entropy)
            step, alpha_opt = tx.update(grad, learner.alpha_opt, learner.log_alpha)
            log_alpha = optax.apply_updates(learner.log_alpha, step)

        # 4. Polyak averaging of the target critics
        steps = learner.steps + 1
        tau = jnp.where(steps % config.target_update_interval == 0, hp.tau, 0.0)
        target = polyak_update(learner.target_critic, critic_params, tau)
        new = SACLearner(actor_params, critic_params, target, log_alpha, actor_opt, critic_opt, alpha_opt, steps)
        metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha_loss": alpha_loss, "alpha": alpha,
                   "q_mean": jnp.mean(q), "entropy": -jnp.mean(logp)}
        td_abs = jnp.mean(jnp.abs(q - y[None]), axis=0)
        return new, metrics, td_abs

    def act(actor_params, nobs, key, deterministic):
        if deterministic:
            a = jnp.tanh(actor.apply({"params": actor_params}, nobs)["mean"])
        else:
            a = sample(actor_params, nobs, key)[0]
        return a.reshape((-1,) + shape)

    def to_env(a):
        return low + (a + 1.0) * 0.5 * (high - low)

    def random_action(key, n):
        return jax.random.uniform(key, (n,) + shape, jnp.float32, -1.0, 1.0)

    agent = offpolicy.Agent(init=init, explore=explore, update=update, act=act, acting_params=lambda s: s.actor,
                            to_env=to_env, random_action=random_action, action_shape=shape,
                            action_dtype=jnp.float32, metric_names=METRIC_NAMES, model=actor)
    return agent, config.hyperparams()


(make_trainer, make_train, make_policy, as_policy, make_evaluator, evaluate, member_policy_fn,
 train_agents) = offpolicy.algorithm_functions(build_agent)
