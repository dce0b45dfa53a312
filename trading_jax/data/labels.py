"""Supervised targets built from the future: the label of bar t reads bars t+1 .. t+h only.

Market-data rule: an input at bar t uses bars <= t; the *label* of t is what happens after t. Every
function here returns the label of t computed from bar t (known at t, as the reference level) and
bars `t+1 .. t+horizon` (the future being predicted), and nothing else: no bar before t and no bar
after `t+horizon`. The last bar a label reads is therefore `t + horizon`; pass `horizon` to
`trading_jax.data.windows.make_supervised_dataset` so samples whose label would read past the end
of their split are dropped.

Every function takes time-first arrays `[time, ...]` (any trailing axes: assets, batch), is
jittable with `horizon` static, and returns `(values, valid)`:

* `values` `[time, ...]`: the label, with a harmless fill (0, or "flat" for directions) where it
  is not valid, so no NaN or inf ever leaks into a loss;
* `valid` bool `[time, ...]`: False for the last `horizon` bars (their future is not in the data)
  and wherever an input the label reads is non-finite or out of its domain (e.g. a price <= 0).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

DOWN, FLAT, UP = 0, 1, 2
"""Class ids of `direction_label`."""


def _check_horizon(horizon, minimum: int = 1) -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < minimum:
        raise ValueError(f"horizon must be an integer >= {minimum} (it is static); got {horizon!r}")
    return int(horizon)


def _as_float(x) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _time_index(x: jax.Array) -> jax.Array:
    """`t` broadcastable against `x` `[time, ...]`: shape `[time, 1, ..., 1]`."""
    return jnp.arange(x.shape[0]).reshape((x.shape[0],) + (1,) * (x.ndim - 1))


def _ahead(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """`(x[t + k], t + k < time)`: `x` shifted k bars back in time, NaN past the end."""
    n = x.shape[0]
    k_in = min(k, n)
    pad = jnp.full((k_in,) + x.shape[1:], jnp.nan, x.dtype)
    shifted = jnp.concatenate([x[k_in:], pad], axis=0)
    return shifted, jnp.broadcast_to(_time_index(x) + k < n, x.shape)


def _future_block(x: jax.Array, horizon: int) -> tuple[jax.Array, jax.Array]:
    """`(block, in_range)`: `block[t, j] = x[t + 1 + j]` for `j < horizon`, `[time, horizon, ...]`.

    Indices past the end are clipped (the values there are meaningless; `in_range[t]` `[time, ...]`
    is False for them).
    """
    n = x.shape[0]
    idx = jnp.arange(n)[:, None] + 1 + jnp.arange(horizon)[None, :]
    block = jnp.take(x, jnp.clip(idx, 0, max(n - 1, 0)), axis=0)
    return block, jnp.broadcast_to(_time_index(x) + horizon < n, x.shape)


def future_return(close, horizon: int = 1, log: bool = False) -> tuple[jax.Array, jax.Array]:
    """The return from the close of bar t to the close of bar t+h.

    `r[t] = close[t+h] / close[t] - 1`, or `log(close[t+h] / close[t])` with `log=True`.
    Reads bars t and t+h only.

    Args:
        close: close prices `[time, ...]`.
        horizon: h >= 1, in bars (static).
        log: log returns instead of simple returns.

    Returns:
        `(r, valid)`, each `[time, ...]`; `valid[t]` is False for `t >= time - h`, where either
        close is non-finite, where `close[t] <= 0`, and (for log returns) where `close[t+h] <= 0`.
        `r` is 0 where not valid.
    """
    horizon = _check_horizon(horizon)
    c0 = _as_float(close)
    c1, in_range = _ahead(c0, horizon)
    valid = in_range & jnp.isfinite(c0) & jnp.isfinite(c1) & (c0 > 0)
    if log:
        valid = valid & (c1 > 0)
    s0 = jnp.where(valid, c0, 1.0)
    s1 = jnp.where(valid, c1, 1.0)
    r = jnp.log(s1) - jnp.log(s0) if log else s1 / s0 - 1.0
    return jnp.where(valid, r, 0.0), valid


def direction_label(
    close, horizon: int = 1, dead_band=0.0, log: bool = False
) -> tuple[jax.Array, jax.Array]:
    """The direction of the move from bar t to bar t+h, with a dead band around zero.

    With `r = future_return(close, horizon, log)`:

    * `0` (DOWN) if `r < -dead_band`,
    * `1` (FLAT) if `-dead_band <= r <= dead_band` (the boundaries are flat),
    * `2` (UP)   if `r > dead_band`.

    With `dead_band=0` an unchanged price is FLAT. Reads bars t and t+h only.

    Args:
        close: close prices `[time, ...]`.
        horizon: h >= 1, in bars (static).
        dead_band: non-negative half-width of the flat band, in units of the return (e.g. 0.001
            for 10 bp); a scalar or an array broadcastable to `close` (e.g. per asset).
        log: apply the band to log returns instead of simple returns.

    Returns:
        `(label, valid)`, each `[time, ...]`; `label` is int32 and FLAT where not valid (see
        `future_return` for `valid`).
    """
    if isinstance(dead_band, (int, float)) and dead_band < 0:
        raise ValueError(f"dead_band must be >= 0; got {dead_band}")
    r, valid = future_return(close, horizon, log=log)
    label = jnp.where(r > dead_band, UP, jnp.where(r < -dead_band, DOWN, FLAT))
    return jnp.where(valid, label, FLAT).astype(jnp.int32), valid


def future_volatility(close, horizon: int, ddof: int = 0) -> tuple[jax.Array, jax.Array]:
    """The realised volatility of the next h bars: the std of the log returns `r_{t+1} .. r_{t+h}`.

    `r_s = log(close[s] / close[s-1])`, and

        vol[t] = sqrt( sum_{s=t+1}^{t+h} (r_s - mean)^2 / (h - ddof) ),  mean = (1/h) sum r_s

    (population std with the default `ddof=0`; `ddof=1` for the sample std). Per-bar, not
    annualised. Reads bars t .. t+h (`r_{t+1}` uses `close[t]`, known at t).

    Args:
        close: close prices `[time, ...]`.
        horizon: h, in bars (static); h >= 2 (the std of a single return is 0), and h > ddof.
        ddof: delta degrees of freedom, 0 or 1.

    Returns:
        `(vol, valid)`, each `[time, ...]`; `valid[t]` is False for `t >= time - h` and where any
        of `close[t .. t+h]` is non-finite or <= 0. `vol` is 0 where not valid.
    """
    horizon = _check_horizon(horizon, minimum=2)
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1; got {ddof!r}")
    c = _as_float(close)
    logc = jnp.log(jnp.where(jnp.isfinite(c) & (c > 0), c, jnp.nan))
    first = jnp.full((1,) + c.shape[1:], jnp.nan, c.dtype)  # no return into bar 0
    lr = jnp.concatenate([first, jnp.diff(logc, axis=0)], axis=0)  # lr[s] = log c[s] / c[s-1]
    block, in_range = _future_block(lr, horizon)
    valid = in_range & jnp.all(jnp.isfinite(block), axis=1)
    block = jnp.where(valid[:, None], block, 0.0)
    mean = jnp.mean(block, axis=1, keepdims=True)
    var = jnp.sum((block - mean) ** 2, axis=1) / (horizon - ddof)
    return jnp.where(valid, jnp.sqrt(var), 0.0), valid


def future_volume(volume, horizon: int = 1, offset=0.0) -> tuple[jax.Array, jax.Array]:
    """Relative volume of the next h bars: the log of their mean volume over the volume of bar t.

        v[t] = log( (mean(volume[t+1 .. t+h]) + offset) / (volume[t] + offset) )

    Positive when the coming bars trade more than bar t. With `offset=0` a zero volume at t (or
    zero volume over the whole horizon) has no finite label and is marked invalid rather than
    producing inf/NaN; a positive `offset` (in volume units, e.g. one lot) makes zero-volume bars
    valid. Reads bars t .. t+h.

    Args:
        volume: traded volume `[time, ...]` (non-negative).
        horizon: h >= 1, in bars (static).
        offset: non-negative constant added to both volumes (scalar or broadcastable).

    Returns:
        `(v, valid)`, each `[time, ...]`; `valid[t]` is False for `t >= time - h`, where any of
        `volume[t .. t+h]` is non-finite or negative, and where a side of the ratio is <= 0.
        `v` is 0 where not valid.
    """
    horizon = _check_horizon(horizon)
    if isinstance(offset, (int, float)) and offset < 0:
        raise ValueError(f"offset must be >= 0; got {offset}")
    v0 = _as_float(volume)
    block, in_range = _future_block(v0, horizon)
    block_ok = jnp.all(jnp.isfinite(block) & (block >= 0), axis=1)
    num = jnp.mean(jnp.where(block_ok[:, None], block, 0.0), axis=1) + offset
    den = v0 + offset
    valid = in_range & block_ok & jnp.isfinite(v0) & (v0 >= 0) & (num > 0) & (den > 0)
    ratio = jnp.where(valid, num, 1.0) / jnp.where(valid, den, 1.0)
    return jnp.where(valid, jnp.log(ratio), 0.0), valid
