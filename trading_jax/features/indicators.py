"""Technical indicators in pure JAX, with TA-Lib's definitions.

Conventions shared by every function here:

* Inputs are time-first arrays `[time, ...]`; trailing axes are assets/batch, so a
  `[time, asset]` panel is computed in one call (and one compiled program). Integer volumes are
  promoted to the default float dtype; float32 stays float32.
* Outputs have the input's shape and are aligned on time: row `t` uses bars `<= t` only.
* Each docstring states the *first valid index*; for finite input the output is NaN exactly on the
  rows before it and nowhere else (`warmup(name, **params)` returns it, for pipelines).
* NaN input propagates honestly and no value is ever invented for a missing bar: a windowed
  indicator is NaN while its window holds a NaN; a recursive one (EMA, RSI, MACD, ATR, OBV) is NaN
  from the first NaN on, because its running state is unknown after it (TA-Lib behaves the same
  for its recursions, but ignores NaN in some comparisons, e.g. in `OBV` and `TRANGE`).
* All functions are `jax.jit`-compiled with their periods static; call them inside your own
  `jit`/`vmap` freely.

Parity: `momentum`, `roc`, `sma`, `ema`, `rsi`, `macd`, `bollinger`, `stochastic`, `true_range`,
`atr`, `obv` and `volume_roc` reproduce `talib.MOM, ROC, SMA, EMA, RSI, MACD, BBANDS, STOCH,
TRANGE, ATR, OBV` and `ROC(volume)` (float64: to ~1e-12 relative), including warm-up lengths and
seeding. `vwap`, `vwap_deviation` and the volatilities have no TA-Lib equivalent; their
definitions are given below and follow pandas' conventions.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from trading_jax.features.rolling import (
    as_float,
    check_window,
    crop,
    fill_recurrence,
    lag_valid,
    materialise,
    pad_front,
    row,
    seeded_buffer,
    window_moments,
    window_reduce,
)

__all__ = [
    "returns",
    "log_returns",
    "momentum",
    "roc",
    "sma",
    "ema",
    "rsi",
    "macd",
    "bollinger",
    "stochastic",
    "true_range",
    "atr",
    "obv",
    "typical_price",
    "vwap",
    "vwap_deviation",
    "volume_roc",
    "rolling_volatility",
    "realized_volatility",
    "garman_klass_volatility",
    "WARMUP",
    "warmup",
]

_NAN = jnp.nan


def _floats(*arrays):
    """The arrays as floats of one common dtype (integer volumes join the prices' dtype)."""
    arrays = [as_float(a) for a in arrays]
    dtype = jnp.result_type(*arrays)
    return [a.astype(dtype) for a in arrays]


def _pct_change(now, before, scale):
    """`scale * (now / before - 1)`, and 0 where `before == 0` (TA-Lib's `ROC` convention)."""
    zero = before == 0
    value = scale * (now / jnp.where(zero, 1.0, before) - 1.0)
    return jnp.where(zero, jnp.where(jnp.isnan(now), _NAN, 0.0), value)


def _head_mean(x, start: int, count: int):
    """`mean(x[start : start + count])` over time (TA-Lib's SMA seed), `x.shape[1:]`; NaN if short."""
    if start + count > x.shape[0]:
        return jnp.full(x.shape[1:], _NAN, x.dtype)
    return jnp.sum(lax.slice_in_dim(x, start, start + count, axis=0), axis=0) / count


# ----------------------------------------------------------------------------------------------
# Returns and momentum
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("horizon",))
def returns(close, horizon: int = 1):
    """Simple returns over `horizon` bars: `close[t] / close[t - horizon] - 1`.

    Prices must be positive (a zero previous price gives inf, as pandas' `pct_change`).

    Args:
        close: `[time, ...]` prices.
        horizon: look-back in bars (>= 1).

    Returns:
        `[time, ...]`; first valid index `horizon`.
    """
    horizon = check_window(horizon, "horizon")
    (close,) = _floats(close)
    now, before = lag_valid(close, horizon)
    return pad_front(now / before - 1.0, horizon, close.shape[0])


@functools.partial(jax.jit, static_argnames=("horizon",))
def log_returns(close, horizon: int = 1):
    """Log returns over `horizon` bars: `ln(close[t] / close[t - horizon])`.

    Args:
        close: `[time, ...]` positive prices.
        horizon: look-back in bars (>= 1).

    Returns:
        `[time, ...]`; first valid index `horizon`.
    """
    horizon = check_window(horizon, "horizon")
    (close,) = _floats(close)
    now, before = lag_valid(close, horizon)
    return pad_front(jnp.log(now / before), horizon, close.shape[0])


@functools.partial(jax.jit, static_argnames=("period",))
def momentum(close, period: int = 10):
    """Momentum `close[t] - close[t - period]` (= `talib.MOM`).

    Args:
        close: `[time, ...]` prices.
        period: look-back in bars (>= 1).

    Returns:
        `[time, ...]`; first valid index `period`.
    """
    period = check_window(period, "period")
    (close,) = _floats(close)
    now, before = lag_valid(close, period)
    return pad_front(now - before, period, close.shape[0])


@functools.partial(jax.jit, static_argnames=("period",))
def roc(close, period: int = 10):
    """Rate of change in percent, `100 * (close[t] / close[t - period] - 1)` (= `talib.ROC`).

    Where `close[t - period] == 0` the value is 0, as in TA-Lib.

    Args:
        close: `[time, ...]` prices.
        period: look-back in bars (>= 1).

    Returns:
        `[time, ...]`; first valid index `period`.
    """
    period = check_window(period, "period")
    (close,) = _floats(close)
    now, before = lag_valid(close, period)
    return pad_front(_pct_change(now, before, 100.0), period, close.shape[0])


# ----------------------------------------------------------------------------------------------
# Moving averages and oscillators
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("period",))
def sma(close, period: int = 30):
    """Simple moving average `mean(close[t - period + 1 .. t])` (= `talib.SMA`).

    Direct window summation (see `trading_jax.features.rolling`): float32-accurate on long series.

    Args:
        close: `[time, ...]` values.
        period: window in bars (>= 1).

    Returns:
        `[time, ...]`; first valid index `period - 1`.
    """
    period = check_window(period, "period")
    (close,) = _floats(close)
    total, span = window_reduce(close, 0, period, lax.add)
    return pad_front(total / period, span, close.shape[0])


@functools.partial(jax.jit, static_argnames=("period",))
def ema(close, period: int = 30):
    """Exponential moving average, TA-Lib's default (= `talib.EMA`).

    Seeded by the simple mean of the first `period` values at index `period - 1`, then
    `ema[t] = ema[t-1] + alpha * (close[t] - ema[t-1])` with `alpha = 2 / (period + 1)`.

    Args:
        close: `[time, ...]` values.
        period: span in bars (>= 1).

    Returns:
        `[time, ...]`; first valid index `period - 1`.
    """
    period = check_window(period, "period")
    (close,) = _floats(close)
    alpha = 2.0 / (period + 1)
    seed = _head_mean(close, 0, period)

    def step(y, t):
        y = y + alpha * (row(close, t) - y)
        return y, y

    out = seeded_buffer(close.shape, close.dtype, period - 1, seed)
    return fill_recurrence(step, seed, out, period)


def _rsi_value(gain, loss):
    """`100 * gain / (gain + loss)`, 0 where both are 0 (TA-Lib), NaN kept."""
    total = gain + loss
    return jnp.where(total == 0, 0.0, 100.0 * gain / jnp.where(total == 0, 1.0, total))


@functools.partial(jax.jit, static_argnames=("period",))
def rsi(close, period: int = 14):
    """Relative strength index with Wilder's smoothing and TA-Lib's seeding (= `talib.RSI`).

    With `d[t] = close[t] - close[t-1]`, gains `g = max(d, 0)` and losses `l = max(-d, 0)`:
    `G[period] = mean(g[1..period])`, `L[period] = mean(l[1..period])`, then
    `G[t] = G[t-1] * (period - 1) / period + g[t] / period` (same for `L`), and
    `rsi[t] = 100 * G[t] / (G[t] + L[t])`, or 0 when `G[t] + L[t] == 0` (a flat window; TA-Lib's
    convention). One loop over time.

    Args:
        close: `[time, ...]` prices.
        period: smoothing period (>= 1).

    Returns:
        `[time, ...]` in `[0, 100]`; first valid index `period`.
    """
    period = check_window(period, "period")
    (close,) = _floats(close)
    p = float(period)
    if close.shape[0] <= period:
        return jnp.full_like(close, _NAN)
    d = lax.slice_in_dim(close, 1, period + 1, axis=0) - lax.slice_in_dim(close, 0, period, axis=0)
    gain0 = jnp.sum(jnp.maximum(d, 0.0), axis=0) / p  # jnp.maximum propagates NaN
    loss0 = jnp.sum(jnp.maximum(-d, 0.0), axis=0) / p

    keep, new = (p - 1.0) / p, 1.0 / p  # multiplications only: a division here makes XLA split the body

    def step(carry, t):
        gain, loss = carry
        diff = row(close, t) - row(close, t - 1)
        gain = gain * keep + jnp.maximum(diff, 0.0) * new
        loss = loss * keep + jnp.maximum(-diff, 0.0) * new
        return (gain, loss), _rsi_value(gain, loss)

    out = seeded_buffer(close.shape, close.dtype, period, _rsi_value(gain0, loss0))
    return fill_recurrence(step, (gain0, loss0), out, period + 1)


@functools.partial(jax.jit, static_argnames=("fast", "slow", "signal"))
def macd(close, fast: int = 12, slow: int = 26, signal: int = 9):
    """Moving average convergence/divergence, exactly as `talib.MACD` computes it.

    TA-Lib aligns the two EMAs on the slow one: both are seeded at index `slow - 1`, the slow EMA
    by `mean(close[0 .. slow-1])` and the fast EMA by `mean(close[slow-fast .. slow-1])` (the
    `fast` values ending there), then `ema[t] = ema[t-1] + k * (close[t] - ema[t-1])` with
    `k = 2 / (period + 1)`. `macd = fast_ema - slow_ema` from `slow - 1`; the signal line is the
    EMA (`k_s = 2 / (signal + 1)`) of `macd` seeded by the mean of its first `signal` values;
    `hist = macd - signal`. As in TA-Lib all three outputs start at `slow + signal - 2`
    (`fast`/`slow` are swapped if given in the wrong order).

    Implementation: one loop over time carries the three EMA states and writes only the signal
    line (a loop with one output is several times faster on XLA:CPU than one with three). Since
    `signal[t] - signal[t-1] = k_s * (macd[t] - signal[t-1])`, the histogram follows elementwise
    as `hist[t] = macd[t] - signal[t] = (signal[t] - signal[t-1]) * (1 - k_s) / k_s`, and
    `macd = signal + hist`: the same numbers up to rounding (absolute error
    ~`eps * |signal| / k_s`, i.e. ~1e-15 relative in float64 against TA-Lib).

    Args:
        close: `[time, ...]` prices.
        fast: fast EMA period.
        slow: slow EMA period.
        signal: signal EMA period.

    Returns:
        `(macd, signal, hist)`, each `[time, ...]`; first valid index `max(fast, slow) + signal - 2`.
    """
    fast = check_window(fast, "fast")
    slow = check_window(slow, "slow")
    signal = check_window(signal, "signal")
    if slow < fast:
        fast, slow = slow, fast
    (close,) = _floats(close)
    n = close.shape[0]
    s0 = slow - 1
    first = s0 + signal - 1
    if n <= first:
        nan = jnp.full_like(close, _NAN)
        return nan, nan, nan
    kf, ks, kg = 2.0 / (fast + 1), 2.0 / (slow + 1), 2.0 / (signal + 1)

    # warm-up (rows s0..first, a few rows): EMAs and the macd values that seed the signal line
    def warm(carry, c):
        ef, es = carry
        ef = ef + kf * (c - ef)
        es = es + ks * (c - es)
        return (ef, es), ef - es

    ef0, es0 = _head_mean(close, slow - fast, fast), _head_mean(close, 0, slow)
    (ef, es), macd_warm = lax.scan(warm, (ef0, es0), lax.slice_in_dim(close, s0 + 1, first + 1, axis=0))
    macd_warm = jnp.concatenate([(ef0 - es0)[None], macd_warm], axis=0)  # macd[s0..first]
    sig0 = jnp.sum(macd_warm, axis=0) / signal
    hist0 = macd_warm[-1] - sig0

    def step(carry, t):
        ef, es, sg = carry
        c = row(close, t)
        ef = ef + kf * (c - ef)
        es = es + ks * (c - es)
        sg = sg + kg * ((ef - es) - sg)
        return (ef, es, sg), sg

    sig = fill_recurrence(step, (ef, es, sig0), seeded_buffer(close.shape, close.dtype, first, sig0), first + 1)
    current = lax.slice_in_dim(sig, first, n, axis=0)
    if first >= 1:  # sig[first - 1] is a NaN row of the buffer; is_first replaces its result below
        previous = lax.slice_in_dim(sig, first - 1, n - 1, axis=0)
    else:
        previous = jnp.concatenate([sig0[None], lax.slice_in_dim(sig, 0, n - 1, axis=0)], axis=0)
    is_first = lax.broadcasted_iota(jnp.int32, (n - first,) + (1,) * (close.ndim - 1), 0) == 0
    hist = pad_front(jnp.where(is_first, hist0, (current - previous) * ((1.0 - kg) / kg)), first, n)
    return sig + hist, sig, hist


@functools.partial(jax.jit, static_argnames=("period",))
def bollinger(close, period: int = 20, nbdev: float = 2.0):
    """Bollinger bands with the population standard deviation (= `talib.BBANDS`, SMA middle).

    `middle = mean`, `std = sqrt(sum_i (close[t-i] - middle)^2 / period)` over the last `period`
    bars, `upper/lower = middle +/- nbdev * std`. The std comes from centred deviations, so it stays
    accurate in float32 (no `E[x^2] - E[x]^2` cancellation).

    Args:
        close: `[time, ...]` prices.
        period: window in bars (>= 1).
        nbdev: band width in standard deviations (traced: changing it does not recompile).

    Returns:
        `(upper, middle, lower)`, each `[time, ...]`; first valid index `period - 1`.
    """
    period = check_window(period, "period")
    (close,) = _floats(close)
    n = close.shape[0]
    middle, m2, span = window_moments(close, None, 0, 1, period)
    band = jnp.asarray(nbdev, close.dtype) * jnp.sqrt(jnp.maximum(m2, 0.0) / period)
    return pad_front(middle + band, span, n), pad_front(middle, span, n), pad_front(middle - band, span, n)


@functools.partial(jax.jit, static_argnames=("fastk_period", "slowk_period", "slowd_period"))
def stochastic(high, low, close, fastk_period: int = 5, slowk_period: int = 3, slowd_period: int = 3):
    """Slow stochastic oscillator (= `talib.STOCH` with its defaults, SMA smoothing).

    `fastk[t] = 100 * (close[t] - LL) / (HH - LL)` with `HH`/`LL` the highest high / lowest low
    of the last `fastk_period` bars (0 when `HH == LL`, as in TA-Lib); `slowk = SMA(fastk,
    slowk_period)`; `slowd = SMA(slowk, slowd_period)`. As in TA-Lib both outputs start at the
    same index (slowk is computable `slowd_period - 1` bars earlier, but is NaN there).

    Args:
        high: `[time, ...]` highs.
        low: `[time, ...]` lows.
        close: `[time, ...]` closes.
        fastk_period: raw %K window.
        slowk_period: %K smoothing window.
        slowd_period: %D smoothing window.

    Returns:
        `(slowk, slowd)`, each `[time, ...]`; first valid index
        `(fastk_period - 1) + (slowk_period - 1) + (slowd_period - 1)`.
    """
    fk = check_window(fastk_period, "fastk_period")
    sk = check_window(slowk_period, "slowk_period")
    sd = check_window(slowd_period, "slowd_period")
    high, low, close = _floats(high, low, close)
    n = close.shape[0]
    hh, span = window_reduce(high, 0, fk, jnp.maximum)
    ll, _ = window_reduce(low, 0, fk, jnp.minimum)
    c = crop(close, 0, span)
    diff = (hh - ll) / 100.0  # TA-Lib's arithmetic
    flat = diff == 0
    fastk = jnp.where(flat, jnp.where(jnp.isnan(c), _NAN, 0.0), (c - ll) / jnp.where(flat, 1.0, diff))
    # %K is read at slowk_period * slowd_period lags below: compute it once instead of fusing its
    # 2 * fastk_period-term max/min into every read (10x slower at fastk_period 14).
    fastk = materialise(fastk)
    slowk, k_span = window_reduce(fastk, span, sk, lax.add)
    slowk = slowk / sk
    slowd, d_span = window_reduce(slowk, k_span, sd, lax.add)
    return pad_front(crop(slowk, k_span, d_span), d_span, n), pad_front(slowd / sd, d_span, n)


# ----------------------------------------------------------------------------------------------
# Ranges and volume
# ----------------------------------------------------------------------------------------------


def _true_range(high, low, prev_close):
    """TA-Lib's TRANGE arithmetic: `max(H - L, |C_prev - H|, |C_prev - L|)` (NaN-propagating)."""
    return jnp.maximum(jnp.maximum(high - low, jnp.abs(prev_close - high)), jnp.abs(prev_close - low))


@jax.jit
def true_range(high, low, close):
    """True range `max(high, close[t-1]) - min(low, close[t-1])` (= `talib.TRANGE`).

    Computed as TA-Lib does: `max(H - L, |C[t-1] - H|, |C[t-1] - L|)`.

    Args:
        high: `[time, ...]` highs.
        low: `[time, ...]` lows.
        close: `[time, ...]` closes.

    Returns:
        `[time, ...]`; first valid index 1.
    """
    high, low, close = _floats(high, low, close)
    _, prev = lag_valid(close, 1)
    tr = _true_range(crop(high, 0, 1), crop(low, 0, 1), prev)
    return pad_front(tr, 1, close.shape[0])


@functools.partial(jax.jit, static_argnames=("period",))
def atr(high, low, close, period: int = 14):
    """Average true range with Wilder's smoothing (= `talib.ATR`).

    `atr[period] = mean(TR[1..period])`, then `atr[t] = atr[t-1] * (period - 1) / period + TR[t] / period`
    (for `period == 1`, the true range itself). One loop over time.

    Args:
        high: `[time, ...]` highs.
        low: `[time, ...]` lows.
        close: `[time, ...]` closes.
        period: smoothing period (>= 1).

    Returns:
        `[time, ...]`; first valid index `period`.
    """
    period = check_window(period, "period")
    high, low, close = _floats(high, low, close)
    p = float(period)
    if close.shape[0] <= period:
        return jnp.full_like(close, _NAN)
    head = lambda x, a, b: lax.slice_in_dim(x, a, b, axis=0)  # noqa: E731
    tr0 = _true_range(head(high, 1, period + 1), head(low, 1, period + 1), head(close, 0, period))
    atr0 = jnp.sum(tr0, axis=0) / p

    keep, new = (p - 1.0) / p, 1.0 / p

    def step(a, t):
        tr = _true_range(row(high, t), row(low, t), row(close, t - 1))
        a = a * keep + tr * new
        return a, a

    return fill_recurrence(step, atr0, seeded_buffer(close.shape, close.dtype, period, atr0), period + 1)


@jax.jit
def obv(close, volume):
    """On-balance volume (= `talib.OBV`).

    `obv[0] = volume[0]`; then `obv[t] = obv[t-1] + sign(close[t] - close[t-1]) * volume[t]`
    (added on an up bar, subtracted on a down bar, unchanged on a flat one). One loop over time.
    A NaN close or volume makes every later value NaN (the running total is unknown; TA-Lib
    instead treats a NaN comparison as "unchanged"). Float32 note: the running total is a plain
    sequential sum, so its error grows like `eps * sqrt(T)` (measured: 3e-5 of max|OBV| after
    1e6 bars in float32; use float64 for long exact OBV; a Kahan-compensated loop was 3x slower).

    Args:
        close: `[time, ...]` closes.
        volume: `[time, ...]` volumes.

    Returns:
        `[time, ...]`; first valid index 0.
    """
    close, volume = _floats(close, volume)
    if close.shape[0] == 0:
        return close

    def step(total, t):
        total = total + jnp.sign(row(close, t) - row(close, t - 1)) * row(volume, t)
        return total, total

    v0 = volume[0]
    return fill_recurrence(step, v0, seeded_buffer(close.shape, close.dtype, 0, v0), 1)


@jax.jit
def typical_price(high, low, close):
    """Typical price `(high + low + close) / 3`, `[time, ...]`; first valid index 0."""
    high, low, close = _floats(high, low, close)
    return (high + low + close) / 3.0


def _vwap_valid(high, low, close, volume, period):
    """Valid part (and span) of the rolling VWAP with its zero-volume fallback."""
    tp = (high + low + close) / 3.0
    pv, span = window_reduce(tp * volume, 0, period, lax.add)
    vol, _ = window_reduce(volume, 0, period, lax.add)
    tp_sum, _ = window_reduce(tp, 0, period, lax.add)
    no_volume = vol == 0
    return jnp.where(no_volume, tp_sum / period, pv / jnp.where(no_volume, 1.0, vol)), span


@functools.partial(jax.jit, static_argnames=("period",))
def vwap(high, low, close, volume, period: int = 20):
    """Rolling volume-weighted average of the typical price over the last `period` bars.

        vwap[t] = sum_i tp[t-i] * volume[t-i] / sum_i volume[t-i],   tp = (high + low + close) / 3

    (= `ta.volume.VolumeWeightedAveragePrice`). Where the window's volume sums to 0 (real data
    has zero-volume days) the ratio is undefined and the value falls back to the plain mean of
    the typical price over the window, so the output stays finite and inside the window's price
    range. Volumes are assumed non-negative.

    Args:
        high: `[time, ...]` highs.
        low: `[time, ...]` lows.
        close: `[time, ...]` closes.
        volume: `[time, ...]` volumes.
        period: window in bars (>= 1).

    Returns:
        `[time, ...]`; first valid index `period - 1`.
    """
    period = check_window(period, "period")
    high, low, close, volume = _floats(high, low, close, volume)
    value, span = _vwap_valid(high, low, close, volume, period)
    return pad_front(value, span, close.shape[0])


@functools.partial(jax.jit, static_argnames=("period",))
def vwap_deviation(high, low, close, volume, period: int = 20):
    """Relative distance of the close from its rolling VWAP: `close / vwap - 1`.

    See `vwap` for the definition and the zero-volume fallback.

    Returns:
        `[time, ...]`; first valid index `period - 1`.
    """
    period = check_window(period, "period")
    high, low, close, volume = _floats(high, low, close, volume)
    value, span = _vwap_valid(high, low, close, volume, period)
    return pad_front(crop(close, 0, span) / value - 1.0, span, close.shape[0])


@functools.partial(jax.jit, static_argnames=("period",))
def volume_roc(volume, period: int = 10):
    """Volume rate of change in percent, `100 * (volume[t] / volume[t - period] - 1)`.

    Identical to `talib.ROC(volume, period)`, including its zero handling: where
    `volume[t - period] == 0` the change is undefined and the value is 0 (a documented
    convention, not an estimate; mask zero-volume bars yourself if that matters).

    Args:
        volume: `[time, ...]` volumes.
        period: look-back in bars (>= 1).

    Returns:
        `[time, ...]`; first valid index `period`.
    """
    period = check_window(period, "period")
    (volume,) = _floats(volume)
    now, before = lag_valid(volume, period)
    return pad_front(_pct_change(now, before, 100.0), period, volume.shape[0])


# ----------------------------------------------------------------------------------------------
# Volatility (per bar, not annualised: multiply by sqrt(bars per year) to annualise)
# ----------------------------------------------------------------------------------------------


def _log_returns_valid(close):
    now, before = lag_valid(close, 1)
    return jnp.log(now / before)


@functools.partial(jax.jit, static_argnames=("period",))
def rolling_volatility(close, period: int = 20):
    """Rolling standard deviation (ddof=1) of one-bar log returns over the last `period` returns.

    `= np.log(close).diff().rolling(period).std()` in pandas. Computed from centred deviations
    (accurate in float32). Requires `period >= 2`.

    Args:
        close: `[time, ...]` positive prices.
        period: number of returns in the window (>= 2).

    Returns:
        `[time, ...]`; first valid index `period`.
    """
    period = check_window(period, "period")
    if period < 2:
        raise ValueError("rolling_volatility needs period >= 2 (ddof=1)")
    (close,) = _floats(close)
    _, m2, span = window_moments(_log_returns_valid(close), None, 1, 1, period)
    return pad_front(jnp.sqrt(jnp.maximum(m2, 0.0) / (period - 1)), span, close.shape[0])


@functools.partial(jax.jit, static_argnames=("period",))
def realized_volatility(close, period: int = 20):
    """Realized volatility `sqrt(sum_{i<period} r[t-i]^2)` of one-bar log returns `r`.

    Not demeaned and not divided by `period` (the standard realized-variance estimator).

    Args:
        close: `[time, ...]` positive prices.
        period: number of returns in the window (>= 1).

    Returns:
        `[time, ...]`; first valid index `period`.
    """
    period = check_window(period, "period")
    (close,) = _floats(close)
    r = _log_returns_valid(close)
    total, span = window_reduce(r * r, 1, period, lax.add)
    return pad_front(jnp.sqrt(total), span, close.shape[0])


_GK_C = 2.0 * math.log(2.0) - 1.0


@functools.partial(jax.jit, static_argnames=("period",))
def garman_klass_volatility(open, high, low, close, period: int = 20):  # noqa: A002 (OHLC names)
    """Garman-Klass volatility over the last `period` bars.

        gk[t] = sqrt( mean_{i<period} [ 0.5 * ln(H/L)^2 - (2 ln 2 - 1) * ln(C/O)^2 ][t-i] )

    Uses each bar's own open, so no previous bar is needed. For consistent bars
    (`L <= O, C <= H`) every term is >= 0; inconsistent bars can make the mean negative and the
    value NaN (reported, not clamped).

    Args:
        open: `[time, ...]` opens.
        high: `[time, ...]` highs.
        low: `[time, ...]` lows.
        close: `[time, ...]` closes.
        period: window in bars (>= 1).

    Returns:
        `[time, ...]`; first valid index `period - 1`.
    """
    period = check_window(period, "period")
    o, h, l, c = _floats(open, high, low, close)
    hl = jnp.log(h / l)
    co = jnp.log(c / o)
    total, span = window_reduce(0.5 * hl * hl - _GK_C * co * co, 0, period, lax.add)
    return pad_front(jnp.sqrt(total / period), span, c.shape[0])


# ----------------------------------------------------------------------------------------------
# Warm-up table
# ----------------------------------------------------------------------------------------------

#: First valid index of each indicator as a function of its parameters (same names and defaults
#: as the indicator functions). For finite input, rows before it are NaN and rows from it on are
#: finite.
WARMUP: dict[str, Callable[..., int]] = {
    "returns": lambda horizon=1: horizon,
    "log_returns": lambda horizon=1: horizon,
    "momentum": lambda period=10: period,
    "roc": lambda period=10: period,
    "sma": lambda period=30: period - 1,
    "ema": lambda period=30: period - 1,
    "rsi": lambda period=14: period,
    "macd": lambda fast=12, slow=26, signal=9: max(fast, slow) + signal - 2,
    "bollinger": lambda period=20, nbdev=2.0: period - 1,
    "stochastic": lambda fastk_period=5, slowk_period=3, slowd_period=3: (
        fastk_period + slowk_period + slowd_period - 3
    ),
    "true_range": lambda: 1,
    "atr": lambda period=14: period,
    "obv": lambda: 0,
    "typical_price": lambda: 0,
    "vwap": lambda period=20: period - 1,
    "vwap_deviation": lambda period=20: period - 1,
    "volume_roc": lambda period=10: period,
    "rolling_volatility": lambda period=20: period,
    "realized_volatility": lambda period=20: period,
    "garman_klass_volatility": lambda period=20: period - 1,
}


def warmup(name: str, **params) -> int:
    """First valid index of indicator `name` called with `params` (its defaults otherwise).

    Example: `warmup("macd")` is 33, `warmup("rsi", period=7)` is 7.

    Raises:
        KeyError: for an unknown indicator name.
    """
    if name not in WARMUP:
        raise KeyError(f"unknown indicator {name!r}; known: {sorted(WARMUP)}")
    return int(WARMUP[name](**params))
