"""Running feature normaliser as an `(init, update, apply)` triple over a NamedTuple state.

Statistics are merged with Chan et al.'s parallel update, so fitting on the training split in one
call, or streaming it chunk by chunk, gives the same state. NaN entries (indicator warm-up) are
ignored by `update` and stay NaN through `apply`; they are never replaced by a fabricated value.

    state = normalizer_init(n_features)
    state = normalizer_update(state, train_features)     # [..., n_features]; training split only
    z = normalizer_apply(state, features)                # (x - mean) / std, clipped to +-clip
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class NormalizerState(NamedTuple):
    """Per-feature running moments.

    Attributes:
        count: observations seen per feature, `[F]`.
        mean: running mean, `[F]`.
        m2: running sum of squared deviations from the mean, `[F]`.
    """

    count: jnp.ndarray
    mean: jnp.ndarray
    m2: jnp.ndarray

    @property
    def std(self) -> jnp.ndarray:
        """Population standard deviation, `[F]` (NaN where nothing was seen)."""
        return jnp.sqrt(self.m2 / jnp.where(self.count > 0, self.count, jnp.nan))


def normalizer_init(n_features: int, dtype=jnp.float32) -> NormalizerState:
    """An empty state for `n_features` features."""
    zeros = jnp.zeros((n_features,), dtype)
    return NormalizerState(count=zeros, mean=zeros, m2=zeros)


def normalizer_update(state: NormalizerState, x: jnp.ndarray) -> NormalizerState:
    """Merge the finite entries of `x` (`[..., F]`) into the running moments.

    With batch moments (n_b, mean_b, M2_b) and running (n_a, mean_a, M2_a):
    n = n_a + n_b, delta = mean_b - mean_a, mean = mean_a + delta n_b / n,
    M2 = M2_a + M2_b + delta^2 n_a n_b / n.
    """
    x = jnp.asarray(x, state.mean.dtype).reshape(-1, state.mean.shape[0])
    finite = jnp.isfinite(x)
    n_b = finite.sum(axis=0).astype(state.mean.dtype)
    safe_n_b = jnp.maximum(n_b, 1)
    mean_b = jnp.where(finite, x, 0).sum(axis=0) / safe_n_b
    m2_b = jnp.where(finite, (x - mean_b) ** 2, 0).sum(axis=0)
    n = state.count + n_b
    safe_n = jnp.maximum(n, 1)
    delta = mean_b - state.mean
    mean = state.mean + delta * n_b / safe_n
    m2 = state.m2 + m2_b + delta**2 * state.count * n_b / safe_n
    return NormalizerState(count=n, mean=mean, m2=m2)


def normalizer_apply(state: NormalizerState, x: jnp.ndarray, clip: float | None = 5.0, eps: float = 1e-8) -> jnp.ndarray:
    """Standardise `x` (`[..., F]`) with the fitted moments, clipping to `[-clip, clip]`.

    A feature that was constant on the training data (std 0) maps to 0 rather than +-inf.
    NaN inputs stay NaN.
    """
    z = (x - state.mean) / (state.std + eps)
    if clip is not None:
        z = jnp.clip(z, -clip, clip)
    return z
