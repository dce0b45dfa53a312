"""Running mean and variance (the ONE copy) as an `(init, update, apply)` triple over a NamedTuple state.

Used by the feature pipeline (fit on the training split, NaN warm-up ignored) and by the RL observation
and reward normalisers (`trading_jax.rl.normalizers`, streamed batch by batch inside a `lax.scan`).

    state = normalizer_init(n_features)                   # or a shape: statistics over the trailing axes
    state = normalizer_update(state, train_features)      # [..., *shape]; training split only
    z = normalizer_apply(state, features)                 # (x - mean) / (std + eps), clipped to +-clip

**Moments.** The state holds the running `mean`, the population variance `var` (ddof 0) and the `count`
behind them. It starts from a *prior* of `count0` pseudo-observations with mean 0 and variance 1
(`count0 = 0`: no prior, the statistics are exactly those of the data; `count0 = 1e-4`: SB3's
`RunningMeanStd`, so the first update is, to rounding, the plain batch moments and nothing divides by 0).
A batch of `n_b` rows with mean `m_b` and sum of squared deviations `M2_b` is merged with Chan et al.'s
parallel update, so one call on all the data and any chunking of it give the same state up to float
rounding:

    n = n_a + n_b,   delta = m_b - m_a,
    m' = m_a + delta n_b / n,
    var' = (var_a n_a + M2_b + delta^2 n_a n_b / n) / n.

With `ignore_nan=True` the non-finite entries of a batch are left out of that feature's `n_b`, `m_b` and
`M2_b` (indicator warm-up), so the count is per element (`elementwise_count=True`); they are never
replaced by a fabricated value and stay NaN through `apply`.

**Standardising.** `apply` gives `clip((x - mean) / (std + eps))` (`eps_in="std"`; a feature that was
constant on the training data maps to 0, one never seen to NaN) or `clip((x - mean) / sqrt(var + eps))`
(`eps_in="var"`, SB3 / PureJaxRL's convention).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

__all__ = ["NormalizerState", "normalizer_init", "normalizer_update", "normalizer_apply"]


class NormalizerState(NamedTuple):
    """Running moments over the trailing `shape` axes of the data.

    Attributes:
        mean: running mean, `shape`.
        var: running population variance (ddof 0), `shape`.
        count: observations (plus the prior's pseudo-observations) behind them: `shape` with an
            elementwise count, a scalar otherwise.
    """

    mean: jnp.ndarray
    var: jnp.ndarray
    count: jnp.ndarray

    @property
    def std(self) -> jnp.ndarray:
        """Population standard deviation, `shape` (NaN where nothing was seen)."""
        return jnp.sqrt(jnp.where(self.count > 0, self.var, jnp.nan))


def normalizer_init(shape: int | tuple[int, ...] = (), dtype=jnp.float32, count: float = 0.0,
                    elementwise_count: bool = True) -> NormalizerState:
    """A state for statistics of shape `shape` (an int `F` means `(F,)`): mean 0, variance 1, count `count`.

    Args:
        shape: the trailing shape of the data the statistics describe.
        dtype: dtype of the statistics (the data is cast to it).
        count: the prior's weight `count0` (module docstring): 0 for none, 1e-4 as SB3.
        elementwise_count: one count per element (needed by `ignore_nan`), else one scalar count.
    """
    shape = (int(shape),) if isinstance(shape, int) else tuple(shape)
    count_shape = shape if elementwise_count else ()
    return NormalizerState(mean=jnp.zeros(shape, dtype), var=jnp.ones(shape, dtype),
                           count=jnp.full(count_shape, count, dtype))


def normalizer_update(state: NormalizerState, x, ignore_nan: bool = True) -> NormalizerState:
    """Merge a batch `x` (`[..., *shape]`: every leading axis is a row) into the running moments.

    Args:
        state: the running `NormalizerState`.
        x: the batch; cast to the state's dtype.
        ignore_nan: leave non-finite entries out (per element; needs an elementwise count). With
            `False` every row counts (`n_b` = number of rows) and the batch moments are `jnp.mean` /
            `jnp.var`.

    Returns:
        The merged state (module docstring).

    Raises:
        ValueError: `ignore_nan` with a scalar count.
    """
    dtype = state.mean.dtype
    x = jnp.asarray(x, dtype).reshape((-1,) + state.mean.shape)
    if ignore_nan:
        if state.count.shape != state.mean.shape:
            raise ValueError("normalizer_update: ignore_nan needs a count per element "
                             "(normalizer_init(..., elementwise_count=True))")
        finite = jnp.isfinite(x)
        n_b = finite.sum(axis=0).astype(dtype)
        mean_b = jnp.where(finite, x, 0).sum(axis=0) / jnp.where(n_b > 0, n_b, 1)
        m2_b = jnp.where(finite, (x - mean_b) ** 2, 0).sum(axis=0)
    else:
        n_b = jnp.asarray(x.shape[0], dtype)
        mean_b = jnp.mean(x, axis=0)
        m2_b = jnp.var(x, axis=0) * n_b
    n = state.count + n_b
    safe_n = jnp.where(n > 0, n, 1)
    delta = mean_b - state.mean
    mean = state.mean + delta * n_b / safe_n
    m2 = state.var * state.count + m2_b + delta**2 * state.count * n_b / safe_n
    return NormalizerState(mean=mean, var=m2 / safe_n, count=n)


def normalizer_apply(state: NormalizerState, x, clip: float | None = 5.0, eps: float = 1e-8,
                     eps_in: str = "std") -> jnp.ndarray:
    """Standardise `x` (`[..., *shape]`) with the running moments and clip to `[-clip, clip]` (None: no clip).

    `eps_in="std"`: `(x - mean) / (std + eps)` (a constant feature maps to 0, NaN inputs stay NaN);
    `eps_in="var"`: `(x - mean) / sqrt(var + eps)`.
    """
    if eps_in == "std":
        z = (x - state.mean) / (state.std + eps)
    elif eps_in == "var":
        z = (x - state.mean) / jnp.sqrt(state.var + eps)
    else:
        raise ValueError(f"eps_in must be 'std' or 'var', got {eps_in!r}")
    if clip is not None:
        z = jnp.clip(z, -clip, clip)
    return z
