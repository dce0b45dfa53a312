"""Constraint projections for portfolio weights (pure array maths: imports only jax).

`project_capped_simplex` maps any score vector to long-only weights that sum to 1 and never exceed a cap.
It is used by the portfolio environment (`trading_jax.envs.portfolio`), the portfolio optimisers of this
package and the quantum-inspired portfolio network (`trading_jax.models.portfolio`), which is why this
module depends on nothing else in the package.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["project_capped_simplex"]


def project_capped_simplex(v, upper, n_iter: int = 25, *, unroll: bool = True) -> Array:
    """Euclidean projection of `v` onto `{w : sum w = 1, 0 <= w <= upper}`.

    The solution is `w = clip(v - theta, 0, upper)` for the threshold `theta` at which
    `s(theta) = sum_i clip(v_i - theta, 0, upper_i)` (nonincreasing in theta) equals 1. `theta` is found by
    `n_iter` bisection steps on `[min(v - upper), max(v)]` (where `s = sum(upper) >= 1` and `s = 0`), then
    made exact on the bisection's active set: with `F` the free coordinates (`0 < v_i - theta < upper_i`)
    and `U` the capped ones, `theta = (sum_F v_i - (1 - sum_U upper_i)) / |F|` (computed as a correction of
    the bisection's theta, which keeps float32 digits for large scores). Fixed work, no data-dependent loop:
    jittable and vmappable.

    Args:
        v: `[..., K]` scores.
        upper: upper bounds broadcastable to `v` (a scalar cap or a `[K]` vector); `sum(upper) >= 1`
            (otherwise the set is empty and the result sums to `sum(upper)`).
        n_iter: bisection steps.
        unroll: unroll the bisection loop (faster to run, slower to compile; pass False when the projection
            sits inside another loop, e.g. an iterative solver).

    Returns:
        `[..., K]` weights (float32 for float32 input).
    """
    v = jnp.asarray(v)
    upper = jnp.broadcast_to(jnp.asarray(upper, v.dtype), v.shape)
    lo = jnp.min(v - upper, axis=-1, keepdims=True)  # s(lo) = sum(upper) >= 1
    hi = jnp.max(v, axis=-1, keepdims=True)  # s(hi) = 0 <= 1

    def total(theta):
        return jnp.sum(jnp.clip(v - theta, 0.0, upper), axis=-1, keepdims=True)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = total(mid) > 1.0  # threshold too low
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, n_iter, body, (lo, hi), unroll=unroll)
    theta = 0.5 * (lo + hi)
    # the exact step in coordinates shifted by the bisection's theta: the free coordinates are then within
    # `upper` of 0, so float32 keeps their digits even for scores of order 1e3 (theta = theta0 + delta)
    shifted = v - theta
    free = (shifted > 0) & (shifted < upper)
    capped = shifted >= upper
    n_free = jnp.sum(free, axis=-1, keepdims=True)
    delta = (jnp.sum(jnp.where(free, shifted, 0.0), axis=-1, keepdims=True)
             - (1.0 - jnp.sum(jnp.where(capped, upper, 0.0), axis=-1, keepdims=True))) / jnp.maximum(n_free, 1)
    return jnp.clip(shifted - jnp.where(n_free > 0, delta, 0.0), 0.0, upper)
