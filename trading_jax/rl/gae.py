"""Pure pieces of PPO: GAE, the clipped losses, policy distributions and running normalisers.

Everything here is a pure function (or an `(init, update)` pair over a NamedTuple state, DESIGN.md
principle 3) with hand-worked tests in `tests/test_rl_ppo.py`.

**GAE with truncation** (time-major `[T, B]`). `next_values[t]` is `V(final_observation_t)` when step t
ended an episode (terminated or truncated) and `V(obs_{t+1})` otherwise, so a time-limit truncation
bootstraps from the value of the state the agent actually reached (not from the reset observation,
and not from 0: the bug of treating truncation as termination, PureJaxRL #20):

    delta_t = r_t + gamma (1 - terminated_t) next_values_t - values_t
    A_t     = delta_t + gamma lambda (1 - done_t) A_{t+1},        A_T = 0,   done = terminated | truncated
    R_t     = A_t + values_t                                       (the value targets)

**Clipped PPO loss** (Schulman et al. 2017), `rho = exp(log_prob - old_log_prob)`:

    L_pi  = -mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A))
    L_v   = 0.5 mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))     (clip_value)
          = 0.5 mean((V - R)^2)                                                        (otherwise)
    L     = L_pi + c1 L_v - c2 mean(entropy)

**Normalisers.** `RunningMeanStd` merges batch moments with Chan et al.'s parallel update (exactly the
mean/variance of all data seen, up to float rounding); rewards are scaled by `1 / sqrt(Var(G) + eps)`
where `G_t = gamma G_{t-1} + r_t` is the running discounted return of each env, reset to 0 at episode
ends (SB3 `VecNormalize`, PureJaxRL `NormalizeVecReward`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = [
    "gae",
    "bootstrap_values",
    "ppo_loss",
    "explained_variance",
    "RunningMeanStd",
    "rms_init",
    "rms_update",
    "rms_normalize",
    "RewardNormState",
    "reward_norm_init",
    "reward_norm_update",
    "categorical_log_prob",
    "categorical_entropy",
    "gaussian_log_prob",
    "gaussian_entropy",
    "tanh_log_det_jacobian",
    "tanh_gaussian_log_prob",
]


# ----------------------------------------------------------------------------------------- GAE


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


# -------------------------------------------------------------------------------------- losses


def ppo_loss(log_prob, old_log_prob, advantages, values, old_values, returns, entropy, clip_eps, vf_coef, ent_coef,
             clip_value: bool = True):
    """The PPO objective (module docstring) and its diagnostics.

    Args:
        log_prob, old_log_prob: `[N]` log-probabilities of the taken actions under the new / rollout policy.
        advantages: `[N]` (already normalised if wanted).
        values, old_values: `[N]` new value predictions and those of the rollout.
        returns: `[N]` value targets.
        entropy: `[N]` policy entropy.
        clip_eps, vf_coef, ent_coef: scalars (may be traced).
        clip_value: clip the value update to `old_values +- clip_eps`.

    Returns:
        `(loss, aux)` with `aux = {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"}`;
        `approx_kl = mean((rho - 1) - log rho)` (Schulman's k3 estimator, >= 0).
    """
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    surrogate = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    policy_loss = -jnp.mean(jnp.minimum(surrogate, clipped))
    value_err = jnp.square(values - returns)
    if clip_value:
        v_clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        value_err = jnp.maximum(value_err, jnp.square(v_clipped - returns))
    value_loss = 0.5 * jnp.mean(value_err)
    ent = jnp.mean(entropy)
    loss = policy_loss + vf_coef * value_loss - ent_coef * ent
    aux = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": ent,
        "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
        "clip_fraction": jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32)),
    }
    return loss, aux


def explained_variance(values, returns):
    """`1 - Var(returns - values) / Var(returns)` over all entries (0 when `Var(returns) == 0`)."""
    var_r = jnp.var(returns)
    return jnp.where(var_r > 0, 1.0 - jnp.var(returns - values) / jnp.where(var_r > 0, var_r, 1.0), 0.0)


# ------------------------------------------------------------------------------- distributions


def categorical_log_prob(logits, action):
    """`log softmax(logits)[action]`; logits `[..., K]`, action `[...]` int."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, jnp.asarray(action, jnp.int32)[..., None], axis=-1)[..., 0]


def categorical_entropy(logits):
    """`-sum_k p_k log p_k` over the last axis."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(mean, log_std, x):
    """Diagonal Gaussian log-density summed over the last axis."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z * z - log_std - _HALF_LOG_2PI, axis=-1)


def gaussian_entropy(log_std):
    """Diagonal Gaussian entropy `sum(log_std + 0.5 log(2 pi e))` over the last axis."""
    return jnp.sum(log_std + _HALF_LOG_2PI + 0.5, axis=-1)


def tanh_log_det_jacobian(u):
    """`sum log(1 - tanh(u)^2) = sum 2 (log 2 - u - softplus(-2u))` over the last axis (stable form)."""
    return jnp.sum(2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)


def tanh_gaussian_log_prob(mean, log_std, u):
    """Log-density of `a = tanh(u)`, `u ~ N(mean, std)`, at the pre-squash sample `u` (change of variables):

        log p(a) = log N(u; mean, std) - sum_i log(1 - tanh(u_i)^2)
    """
    return gaussian_log_prob(mean, log_std, u) - tanh_log_det_jacobian(u)


# --------------------------------------------------------------------------------- normalisers


class RunningMeanStd(NamedTuple):
    """Running mean / variance (population) of everything seen, over the trailing `shape` axes.

    Attributes:
        mean: `shape` float32.
        var: `shape` float32 (population variance, ddof = 0).
        count: float32 scalar (starts at `eps`, as in SB3, so the first update is a plain batch moment).
    """

    mean: Array
    var: Array
    count: Array


def rms_init(shape=(), eps: float = 1e-4) -> RunningMeanStd:
    """Mean 0, variance 1, count `eps`."""
    return RunningMeanStd(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.asarray(eps, jnp.float32))


def rms_update(state: RunningMeanStd, batch) -> RunningMeanStd:
    """Merge a batch `[n, *shape]` (Chan et al. parallel algorithm):

        delta = m_b - m,   N = n_a + n_b,   m' = m + delta n_b / N,
        M2' = var n_a + var_b n_b + delta^2 n_a n_b / N,   var' = M2' / N
    """
    batch = jnp.asarray(batch, jnp.float32)
    n_b = jnp.asarray(batch.shape[0], jnp.float32)
    mean_b = jnp.mean(batch, axis=0)
    var_b = jnp.var(batch, axis=0)
    delta = mean_b - state.mean
    total = state.count + n_b
    mean = state.mean + delta * n_b / total
    m2 = state.var * state.count + var_b * n_b + jnp.square(delta) * state.count * n_b / total
    return RunningMeanStd(mean, m2 / total, total)


def rms_normalize(state: RunningMeanStd, x, clip: float | None = 10.0, eps: float = 1e-8):
    """`clip((x - mean) / sqrt(var + eps), -clip, clip)` (no clip for None)."""
    z = (x - state.mean) / jnp.sqrt(state.var + eps)
    return z if clip is None else jnp.clip(z, -clip, clip)


class RewardNormState(NamedTuple):
    """Reward normaliser: running discounted return `[B]` per env and its `RunningMeanStd` (scalar)."""

    ret: Array
    rms: RunningMeanStd


def reward_norm_init(num_envs: int) -> RewardNormState:
    return RewardNormState(jnp.zeros((num_envs,), jnp.float32), rms_init(()))


def reward_norm_update(state: RewardNormState, reward, done, gamma, clip: float | None = 10.0, eps: float = 1e-8):
    """One step of reward normalisation for a batch of envs.

        G = gamma G + r;  update Var(G) with the batch of G;  r' = clip(r / sqrt(Var(G) + eps));  G = 0 where done

    Args:
        state: `RewardNormState`.
        reward: `[B]` raw rewards of this step.
        done: `[B]` bool, the step ended the episode (terminated or truncated).
        gamma: discount (may be traced).

    Returns:
        `(new_state, normalised_reward [B])`.
    """
    ret = state.ret * gamma + reward
    rms = rms_update(state.rms, ret)
    scaled = reward / jnp.sqrt(rms.var + eps)
    if clip is not None:
        scaled = jnp.clip(scaled, -clip, clip)
    return RewardNormState(jnp.where(done, 0.0, ret), rms), scaled
