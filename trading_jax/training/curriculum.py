"""Curriculum learning (seed 002): train on calm samples first, growing the pool towards volatile ones.

Samples are ranked once by a difficulty (by default realised volatility). At epoch e only the calmest
`pool_size(e)` samples are trained on; the pool grows linearly from `start * n` to `n` by epoch
`ramp * epochs` and stays full afterwards. Shapes stay static: every epoch scans `n // batch` steps,
the pool's samples come first in a random order, and steps past the pool are masked (no update).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_volatility(x: jax.Array, feature: int = 0) -> jax.Array:
    """Realised volatility of each window: std over time of `x[:, :, feature]` (a return-like feature).

    Args:
        x: `[n, time, features]`.
    Returns:
        `[n]` float32.
    """
    return jnp.std(jnp.asarray(x[:, :, feature], jnp.float32), axis=1)


def pool_size(epoch, n: int, epochs: int, start: float = 1.0 / 3.0, ramp: float = 0.5) -> jax.Array:
    """Pool size at `epoch`: ceil(n * min(1, start + (1 - start) * epoch / R)), R = max(1, floor(ramp * epochs))."""
    ramp_epochs = max(1, int(ramp * epochs))
    fraction = jnp.minimum(1.0, start + (1.0 - start) * jnp.asarray(epoch, jnp.float32) / ramp_epochs)
    return jnp.clip(jnp.ceil(n * fraction - 1e-6).astype(jnp.int32), 1, n)


def curriculum_permutation(key: jax.Array, order: jax.Array, pool) -> jax.Array:
    """A permutation of all samples with the pool (`order[:pool]`, calmest first) in random order at the front.

    Args:
        key: PRNG key.
        order: `[n]` sample indices sorted by difficulty (calm first), e.g. `argsort(sample_volatility(x))`.
        pool: number of samples in the pool (may be traced).
    Returns:
        `[n]` indices: a shuffle of `order[:pool]` followed by the rest of `order`.
    """
    n = order.shape[0]
    rank = jnp.arange(n)
    score = jnp.where(rank < pool, jax.random.uniform(key, (n,)), 2.0 + rank / n)
    return order[jnp.argsort(score)]
