"""The deterministic-policy actor-critic learner (DPG) that TD3 and DDPG share, on the off-policy loop.

A deterministic actor `mu(s)` (`deterministic_actor`, tanh output in [-1, 1]), `n_critics` Q(s, a) critics
(`critic_ensemble`), and target copies of both. One gradient step on a batch `(s, a, r, b, s')` (`b`: the
bootstrap multiplier, `gamma^n` or 0 after a termination; `w`: importance weights):

1. **Critics**: `a' = mu'(s')`, smoothed (TD3) to `clip(a' + clip(sigma' N(0, 1), -c, c), -1, 1)`
   (`targets.smoothed_target_action`; sigma' = `target_policy_noise`, c = `target_noise_clip`; DDPG: none),
   `y = r + b * min_i Q'_i(s', a')` (one critic: DDPG's `r + b Q'(s', a')`), and
   `L = sum_i mean(w (Q_i(s, a) - y)^2)` (SB3 sums the critics' MSEs, and so do we). Priorities: `mean_i |Q_i - y|`.
2. **Actor** every `policy_delay` gradient steps (TD3: 2; DDPG: 1): `L = -mean(Q_1(s, mu(s)))` with the critics
   just updated; then the target actor and critics move by Polyak averaging `theta' <- tau theta + (1 - tau) theta'`
   (on the delayed steps only, as in TD3 and SB3).

Exploration: `clip(mu(s) + sigma N(0, 1), -1, 1)` with sigma = `action_noise` (Gaussian, SB3's `NormalActionNoise`).
The env receives `low + (a + 1) / 2 * (high - low)`. Adam with lr `hparams.lr` for actor and critics.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from trading_jax.loop import hyperparam_grid as _grid
from trading_jax.rl import offpolicy
from trading_jax.rl.targets import ddpg_target, polyak_update, smoothed_target_action, td3_target

__all__ = ["DPGHyperparams", "DPGLearner", "build_dpg_agent", "check_dpg_settings", "hyperparam_grid", "METRIC_NAMES"]

METRIC_NAMES: tuple[str, ...] = ("critic_loss", "actor_loss", "q_mean")


@struct.dataclass
class DPGHyperparams:
    """The vmappable hyperparameters of TD3 / DDPG (float32 scalars, or `[n]` arrays for a grid)."""

    lr: Any
    gamma: Any
    tau: Any
    action_noise: Any
    target_policy_noise: Any
    target_noise_clip: Any


def hyperparam_grid(base: DPGHyperparams, **values) -> DPGHyperparams:
    """A grid for `jax.vmap(train)(keys, grid)` (`trading_jax.loop.hyperparam_grid`)."""
    return _grid(base, **values)


def check_dpg_settings(config) -> None:
    """ValueError for a non-positive or non-finite learning rate, a negative or non-finite noise setting, or a
    policy delay < 1 (the fields a config has among lr, action_noise, target_policy_noise, target_noise_clip,
    policy_delay)."""
    value = float(config.lr)
    if not (0 < value < float("inf")):
        raise ValueError(f"lr must be a finite number > 0, got {value}")
    for name in ("action_noise", "target_policy_noise", "target_noise_clip"):
        if hasattr(config, name):
            value = float(getattr(config, name))
            if not (0 <= value < float("inf")):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if int(getattr(config, "policy_delay", 1)) < 1:
        raise ValueError(f"policy_delay must be >= 1, got {config.policy_delay}")


class DPGLearner(NamedTuple):
    """Actor, critics, their targets, Adam states and the gradient-step count."""

    actor: Any
    critic: Any
    target_actor: Any
    target_critic: Any
    actor_opt: Any
    critic_opt: Any
    steps: jax.Array


def build_dpg_agent(config, env, env_params, n_critics: int, smooth_target: bool, policy_delay: int):
    """`offpolicy.Agent` of a deterministic-policy actor-critic (module docstring).

    Args:
        config: an `OffPolicyConfig` with `network` (the actor), `critic_network`, `network_preset`, `network_kwargs`.
        env, env_params: the environment (a bounded Box action space).
        n_critics: 2 (TD3's clipped double Q) or 1 (DDPG).
        smooth_target: TD3's target policy smoothing.
        policy_delay: gradient steps per actor / target update.
    """
    from trading_jax.models import create

    low, high, shape = offpolicy.box_bounds(env.action_space(env_params))
    action_dim = 1
    for s in shape:
        action_dim *= int(s)
    kwargs = dict(config.network_kwargs)
    actor = create(config.network, config.network_preset, action_dim=action_dim, discrete=False, **kwargs)
    critic = create(config.critic_network, config.network_preset, action_dim=action_dim, n_critics=n_critics, **kwargs)
    adam = lambda hp: optax.adam(hp.lr)  # noqa: E731

    def init(key, obs_size, hp):
        k_actor, k_critic = jax.random.split(key)
        obs = jnp.zeros((1, obs_size), jnp.float32)
        actor_params = actor.init(k_actor, obs)["params"]
        critic_params = critic.init(k_critic, obs, jnp.zeros((1, action_dim), jnp.float32))["params"]
        tx = adam(hp)
        return DPGLearner(actor_params, critic_params, actor_params, critic_params, tx.init(actor_params),
                          tx.init(critic_params), jnp.zeros((), jnp.int32))

    def mu(params, nobs):
        return actor.apply({"params": params}, nobs)

    def explore(learner, nobs, key, hp, progress):
        del progress
        a = mu(learner.actor, nobs)
        a = jnp.clip(a + hp.action_noise * jax.random.normal(key, a.shape), -1.0, 1.0)
        return a.reshape((-1,) + shape)

    def update(learner: DPGLearner, batch, weights, key, hp, progress):
        del progress
        tx = adam(hp)
        obs, next_obs = batch.obs, batch.next_obs
        action = batch.action.reshape(obs.shape[0], action_dim)
        next_action = mu(learner.target_actor, next_obs)
        if smooth_target:
            next_action = smoothed_target_action(next_action, key, hp.target_policy_noise, hp.target_noise_clip)
        next_q = critic.apply({"params": learner.target_critic}, next_obs, next_action)  # [n, B]
        if n_critics == 2:
            y = td3_target(batch.reward, batch.bootstrap, next_q[0], next_q[1])
        else:
            y = ddpg_target(batch.reward, batch.bootstrap, jnp.min(next_q, axis=0))

        def critic_loss_fn(params):
            q = critic.apply({"params": params}, obs, action)
            return jnp.sum(jnp.mean(weights[None] * jnp.square(q - y[None]), axis=1)), q

        (critic_loss, q), grad = jax.value_and_grad(critic_loss_fn, has_aux=True)(learner.critic)
        step, critic_opt = tx.update(grad, learner.critic_opt, learner.critic)
        critic_params = optax.apply_updates(learner.critic, step)

        def actor_loss_fn(params):
            return -jnp.mean(critic.apply({"params": critic_params}, obs, mu(params, obs))[0])

        steps = learner.steps + 1
        delayed = steps % policy_delay == 0

        def actor_step(operand):
            params, opt_state = operand
            loss, grad = jax.value_and_grad(actor_loss_fn)(params)
            step, opt_state = tx.update(grad, opt_state, params)
            return optax.apply_updates(params, step), opt_state, loss

        def no_actor_step(operand):
            return operand[0], operand[1], jnp.float32(jnp.nan)  # no actor loss on this step (logged as a mean: nanmean)

        actor_params, actor_opt, actor_loss = jax.lax.cond(delayed, actor_step, no_actor_step,
                                                           (learner.actor, learner.actor_opt))
        tau = jnp.where(delayed, hp.tau, 0.0)
        new = DPGLearner(actor_params, critic_params, polyak_update(learner.target_actor, actor_params, tau),
                         polyak_update(learner.target_critic, critic_params, tau), actor_opt, critic_opt, steps)
        metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_mean": jnp.mean(q)}
        return new, metrics, jnp.mean(jnp.abs(q - y[None]), axis=0)

    def act(actor_params, nobs, key, deterministic):
        del key, deterministic  # a deterministic policy (exploration noise is for training only)
        return mu(actor_params, nobs).reshape((-1,) + shape)

    def to_env(a):
        return low + (a + 1.0) * 0.5 * (high - low)

    def random_action(key, n):
        return jax.random.uniform(key, (n,) + shape, jnp.float32, -1.0, 1.0)

    return offpolicy.Agent(init=init, explore=explore, update=update, act=act, acting_params=lambda s: s.actor,
                           to_env=to_env, random_action=random_action, action_shape=shape, action_dtype=jnp.float32,
                           metric_names=METRIC_NAMES, model=actor,
                           sparse_metrics=("actor_loss",) if policy_delay > 1 else ())
