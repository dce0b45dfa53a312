"""Observation and reward normalisers of on-policy RL, on the one running mean / variance
(`trading_jax.features.normalize`), as `(init, update[, apply])` pairs over NamedTuple states.

Both follow SB3's `VecNormalize` (and PureJaxRL's `NormalizeVec*`): the running moments start from a prior
of `eps = 1e-4` pseudo-observations with mean 0 and variance 1 and one count shared by every element, and
merge each batch with Chan et al.'s parallel update (exactly the moments of everything seen, up to
rounding).

**Observations** (`[B, obs]` per step): `z = clip((x - mean) / sqrt(var + 1e-8), -clip, clip)`.

**Rewards** are scaled, not centred, by the spread of the discounted return. Per env,

    G_t = gamma G_{t-1} + r_t,                   (G reset to 0 after a step that ended the episode)
    update Var(G) with the batch {G_t}_envs,
    r'_t = clip(r_t / sqrt(Var(G) + 1e-8), -clip, clip).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from trading_jax.features.normalize import NormalizerState, normalizer_apply, normalizer_init, normalizer_update

Array = jax.Array

__all__ = [
    "COUNT_PRIOR",
    "obs_norm_init",
    "obs_norm_update",
    "obs_norm_apply",
    "RewardNormState",
    "reward_norm_init",
    "reward_norm_update",
]

COUNT_PRIOR = 1e-4
"""The prior's pseudo-count of both normalisers (SB3's `epsilon`)."""


def obs_norm_init(shape, count: float = COUNT_PRIOR) -> NormalizerState:
    """Running moments of observations of shape `shape` (mean 0, variance 1, one scalar count `count`)."""
    return normalizer_init(shape, jnp.float32, count=count, elementwise_count=False)


def obs_norm_update(state: NormalizerState, obs) -> NormalizerState:
    """Merge a batch of observations `[B, *shape]` (every row counts)."""
    return normalizer_update(state, obs, ignore_nan=False)


def obs_norm_apply(state: NormalizerState, obs, clip: float | None = 10.0, eps: float = 1e-8):
    """`clip((obs - mean) / sqrt(var + eps), -clip, clip)` (no clip for None)."""
    return normalizer_apply(state, obs, clip=clip, eps=eps, eps_in="var")


class RewardNormState(NamedTuple):
    """Reward normaliser: the running discounted return `ret` `[B]` of each env and its moments `rms` (scalar)."""

    ret: Array
    rms: NormalizerState


def reward_norm_init(num_envs: int, count: float = COUNT_PRIOR) -> RewardNormState:
    """Returns 0 for `num_envs` envs; the return's moments at the prior."""
    return RewardNormState(jnp.zeros((num_envs,), jnp.float32),
                           normalizer_init((), jnp.float32, count=count, elementwise_count=False))


def reward_norm_update(state: RewardNormState, reward, done, gamma, clip: float | None = 10.0, eps: float = 1e-8):
    """One step of reward normalisation for a batch of envs (module docstring).

        G = gamma G + r;  update Var(G) with the batch of G;  r' = clip(r / sqrt(Var(G) + eps));  G = 0 where done

    Args:
        state: `RewardNormState`.
        reward: `[B]` raw rewards of this step.
        done: `[B]` bool, the step ended the episode (terminated or truncated).
        gamma: discount (may be traced).
        clip: clip of the scaled reward (None: no clip).
        eps: added to the variance.

    Returns:
        `(new_state, normalised_reward [B])`.
    """
    ret = state.ret * gamma + reward
    rms = normalizer_update(state.rms, ret, ignore_nan=False)
    scaled = reward / jnp.sqrt(rms.var + eps)
    if clip is not None:
        scaled = jnp.clip(scaled, -clip, clip)
    return RewardNormState(jnp.where(done, 0.0, ret), rms), scaled
