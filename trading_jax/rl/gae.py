"""Generalised advantage estimation (Schulman et al. 2016), bootstrapping through time-limit truncation.

Time-major `[T, B]` arrays. `next_values[t]` is `V(final_observation_t)` when step t ended an episode
(terminated or truncated) and `V(obs_{t+1})` otherwise (`bootstrap_values`), so a time-limit truncation
bootstraps from the value of the state the agent actually reached (not from the reset observation, and
not from 0: the bug of treating truncation as termination, PureJaxRL #20):

    delta_t = r_t + gamma (1 - terminated_t) next_values_t - values_t
    A_t     = delta_t + gamma lambda (1 - done_t) A_{t+1},        A_T = 0,   done = terminated | truncated
    R_t     = A_t + values_t                                       (the value targets)

Hand-worked tests in `tests/test_rl_ppo.py`. The losses are in `trading_jax.rl.losses`, the action
distributions in `trading_jax.rl.distributions`, the normalisers in `trading_jax.rl.normalizers`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["gae", "bootstrap_values"]


def gae(rewards, values, next_values, terminated, done, gamma, lam):
    """Generalised advantage estimation over a time-major rollout, bootstrapping through truncation.

    Args:
        rewards: `[T, B]` rewards r_t.
        values: `[T, B]` V(obs_t).
        next_values: `[T, B]` V(final_observation_t) where step t ended an episode, else V(obs_{t+1}).
        terminated: `[T, B]` bool, the step reached a terminal state (no bootstrap).
        done: `[T, B]` bool, terminated or truncated (the advantage recursion stops there).
        gamma, lam: discount and GAE lambda (scalars, may be traced).

    Returns:
        `(advantages, returns)`, each `[T, B]` float32; `returns = advantages + values`.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    values = jnp.asarray(values, jnp.float32)
    not_term = 1.0 - jnp.asarray(terminated, jnp.float32)
    not_done = 1.0 - jnp.asarray(done, jnp.float32)
    deltas = rewards + gamma * not_term * jnp.asarray(next_values, jnp.float32) - values

    def back(adv_next, xs):
        delta, nd = xs
        adv = delta + gamma * lam * nd * adv_next
        return adv, adv

    _, advantages = jax.lax.scan(back, jnp.zeros_like(deltas[0]), (deltas, not_done), reverse=True)
    return advantages, advantages + values


def bootstrap_values(values, last_value, final_values, done):
    """`next_values` for `gae`: `V(final_observation_t)` where step t ended an episode, else `V(obs_{t+1})`.

    Args:
        values: `[T, B]` V(obs_t) of the rollout.
        last_value: `[B]` V(obs_T), the observation after the last step.
        final_values: `[T, B]` V(info["final_observation"]_t) (used only where `done`).
        done: `[T, B]` bool, terminated or truncated.

    Returns:
        `[T, B]` next values. (Where the step terminated, `gae` multiplies them by 0.)
    """
    following = jnp.concatenate([values[1:], last_value[None]], axis=0)
    return jnp.where(done, final_values, following)
