"""Categorical distributional Q-learning (C51, Bellemare et al. 2017): the support, the projected target and
its cross-entropy loss.

The return distribution of each action is a categorical over `N` evenly spaced atoms
`z_j = v_min + j dz`, `dz = (v_max - v_min) / (N - 1)`, with probabilities `softmax(logits)`; its Q-value is
the mean `Q(s, a) = sum_j p_j(s, a) z_j`.

**Projection.** The target distribution of `r + bootstrap Z'` (atoms `Tz_i = clip(r + bootstrap z_i,
v_min, v_max)` with probabilities `p_i`) is projected back onto the support (the Cramer projection of
Rowland et al. 2018, equal to the C51 algorithm's `l`/`u` split):

    m_j = sum_i p_i clip(1 - |Tz_i - z_j| / dz, 0, 1)

An atom between `z_l` and `z_{l+1}` gives `(z_{l+1} - Tz) / dz` of its mass to `z_l` and `(Tz - z_l) / dz`
to `z_{l+1}`; an atom landing exactly on a support point gives it all its mass. (The classic
`floor`/`ceil` implementation loses that mass when `l == u`; this triangular-kernel form has no such case.)
Each row of `m` sums to 1. `bootstrap` is `gamma^n` for an n-step return, 0 after a termination, which
puts all the mass at the (clipped) reward.

**Double-Q target** (Rainbow, Hessel et al. 2018): `a* = argmax_a sum_j z_j p_j^online(s', a)`, then the
projection of the target network's `p^target(s', a*)`.

**Loss**: the cross-entropy `-sum_j m_j log softmax(logits(s, a))_j` per item (also Rainbow's priority).

Hand-worked tests in `tests/test_rl_targets.py`; the scalar targets are in `trading_jax.rl.targets`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["atoms", "categorical_projection", "categorical_q_values", "categorical_double_q_target",
           "categorical_loss"]


def atoms(v_min, v_max, n_atoms: int):
    """The support `[n_atoms]` float32: `n_atoms` evenly spaced points from `v_min` to `v_max` (inclusive)."""
    return jnp.linspace(v_min, v_max, n_atoms, dtype=jnp.float32)


def categorical_projection(next_probs, reward, bootstrap, support):
    """Project the distribution of `r + bootstrap * Z'` onto `support` (module docstring).

    Values outside `[v_min, v_max]` are clipped to the end atoms; an atom landing between two support points
    is split linearly between them; one landing exactly on a support point puts all its mass there.

    Args:
        next_probs: `[B, N]` probabilities of `Z'` on `support` (rows sum to 1).
        reward: `[B]` (n-step discounted) rewards.
        bootstrap: `[B]` discount multiplier (`gamma^n`, or 0 after a termination).
        support: `[N]` evenly spaced atoms (see `atoms`), N >= 2.

    Returns:
        `[B, N]` float32 target probabilities (each row sums to 1), under `stop_gradient`.
    """
    support = jnp.asarray(support, jnp.float32)
    n = support.shape[-1]
    if n < 2:
        raise ValueError(f"categorical_projection: the support needs at least 2 atoms, got {n}")
    v_min, v_max = support[0], support[-1]
    dz = (v_max - v_min) / (n - 1)
    shifted = jnp.asarray(reward, jnp.float32)[:, None] + jnp.asarray(bootstrap, jnp.float32)[:, None] * support
    shifted = jnp.clip(shifted, v_min, v_max)                                       # [B, N] Tz_i
    # kernel[b, i, j] = clip(1 - |Tz_bi - z_j| / dz, 0, 1): the share of atom i's mass that goes to z_j
    kernel = jnp.clip(1.0 - jnp.abs(shifted[:, :, None] - support[None, None, :]) / dz, 0.0, 1.0)
    projected = jnp.einsum("bi,bij->bj", jnp.asarray(next_probs, jnp.float32), kernel)
    return jax.lax.stop_gradient(projected)


def categorical_q_values(logits, support):
    """Expected values `Q = sum_j softmax(logits)_j z_j`.

    Args:
        logits: `[B, K, N]` per-action atom logits.
        support: `[N]` atoms.

    Returns:
        `[B, K]` float32 Q-values.
    """
    probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    return jnp.sum(probs * jnp.asarray(support, jnp.float32), axis=-1)


def categorical_double_q_target(reward, bootstrap, next_logits_online, next_logits_target, support):
    """C51 double-Q target: the online net picks `a*` by expected value, the target net's distribution is projected.

    Args:
        reward, bootstrap: `[B]`.
        next_logits_online: `[B, K, N]` online network's logits at `s'`.
        next_logits_target: `[B, K, N]` target network's logits at `s'`.
        support: `[N]` atoms.

    Returns:
        `[B, N]` float32 target probabilities (rows sum to 1, no gradient).
    """
    best = jnp.argmax(categorical_q_values(next_logits_online, support), axis=-1)       # [B]
    chosen = jnp.take_along_axis(jnp.asarray(next_logits_target, jnp.float32), best[:, None, None], axis=1)[:, 0]
    return categorical_projection(jax.nn.softmax(chosen, axis=-1), reward, bootstrap, support)


def categorical_loss(logits, target_probs):
    """Cross-entropy of the predicted distribution against the projected target, per item.

    Args:
        logits: `[B, N]` online logits of the taken actions.
        target_probs: `[B, N]` projected target probabilities (held constant).

    Returns:
        `[B]` float32 losses `-sum_j m_j log softmax(logits)_j`.
    """
    log_p = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    return -jnp.sum(jax.lax.stop_gradient(jnp.asarray(target_probs, jnp.float32)) * log_p, axis=-1)
