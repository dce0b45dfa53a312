"""Bid-ask spread and liquidity proxies from daily (or bar) OHLCV data.

All functions take time-first arrays `[time, ...]` (trailing axes are assets), are jittable
(window sizes are static Python ints) and causal: the value at row `t` uses bars `<= t` only,
each two-bar estimate pairing bar `t` with bar `t - 1` (never `t + 1`). Outputs are NaN exactly
during the warm-up given by the `*_warmup` helpers and finite afterwards for finite, positive
prices; `amihud_illiquidity` is also NaN where a whole window has no traded volume (documented
there). A NaN bar makes NaN exactly the outputs whose window contains it.

Spreads are proportional (a fraction of the price: 0.001 = 10 bp). Trailing means use the
windowed sums of `trading_jax.features.cross_asset` (direct or two-level summation, no prefix
sums, so float32 accuracy does not degrade with the series length).

References:
    Roll, R. (1984). A simple implicit measure of the effective bid-ask spread in an efficient
        market. Journal of Finance 39(4), 1127-1139.
    Corwin, S. A. & Schultz, P. (2012). A simple way to estimate bid-ask spreads from daily high
        and low prices. Journal of Finance 67(2), 719-760.
    Abdi, F. & Ranaldo, A. (2017). A simple estimation of bid-ask spreads from daily close, high,
        and low prices. Review of Financial Studies 30(12), 4437-4480.
    Amihud, Y. (2002). Illiquidity and stock returns: cross-section and time-series effects.
        Journal of Financial Markets 5(1), 31-56.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from trading_jax.features.rolling import as_float, check_window
from trading_jax.features.tails import centred, comoment, elementwise, pad_warmup, rolling_sum_tail

__all__ = [
    "spread_warmup",
    "roll_spread_warmup",
    "roll_spread",
    "corwin_schultz_warmup",
    "corwin_schultz_spread",
    "abdi_ranaldo_warmup",
    "abdi_ranaldo_spread",
    "amihud_warmup",
    "amihud_illiquidity",
]


def _flatten(*arrays):
    arrays = [as_float(a) for a in arrays]
    shape = arrays[0].shape
    for a in arrays[1:]:
        if a.shape != shape:
            raise ValueError(f"inputs must share one shape, got {[b.shape for b in arrays]}")
    if len(shape) == 0:
        raise ValueError("inputs must be [time, ...]")
    dtype = jnp.result_type(*arrays)
    return [a.reshape(shape[0], -1).astype(dtype) for a in arrays], shape, dtype


def _trailing_mean(x, window: int, n_rows: int):
    """Mean of the last `window` rows of the tail `x`, padded to `n_rows` with the NaN warm-up."""
    if x.shape[0] < window:
        return jnp.full((n_rows,) + x.shape[1:], jnp.nan, x.dtype)
    return pad_warmup(rolling_sum_tail(x, window) / window, n_rows)


def spread_warmup(window: int) -> int:
    """First row from which all four features of this module can be valid for one `window`.

    `window + 1` (Roll's estimator needs one more bar than the others, whose first valid row is
    `window`). `amihud_illiquidity` can still be NaN later, where a window has no traded bar.
    """
    return max(
        roll_spread_warmup(window),
        corwin_schultz_warmup(window),
        abdi_ranaldo_warmup(window),
        amihud_warmup(window),
    )


# ----------------------------------------------------------------------------------------------
# Roll (1984)
# ----------------------------------------------------------------------------------------------


def roll_spread_warmup(window: int) -> int:
    """First valid row of `roll_spread`: `window + 1` (`window` pairs of consecutive returns)."""
    return check_window(window, minimum=2) + 1


@functools.partial(jax.jit, static_argnames=("window",))
def roll_spread(close, window: int = 20):
    """Roll (1984) effective spread from the serial covariance of price changes.

    With log returns `r_t = log(close_t / close_{t-1})`, the bid-ask bounce makes consecutive
    changes negatively correlated: for an efficient random-walk price observed at the bid or the
    ask with probability 1/2, `cov(r_t, r_{t-1}) = -s^2 / 4` for a proportional spread `s`. So

        spread_t = 2 sqrt(max(-cov_t, 0)),

    where `cov_t` is the sample covariance (`ddof = 1`, as `pandas.Series.rolling(w).cov`) of
    the `window` pairs `(r_u, r_{u-1})`, `u = t - window + 1 .. t`. A positive covariance (no
    bounce detectable) gives 0.

    Args:
        close: `[time, ...]` positive prices.
        window: pairs per window (static int, >= 2).

    Returns:
        `[time, ...]` proportional spreads; NaN for `t < window + 1` (`roll_spread_warmup`).
    """
    window = check_window(window, minimum=2)
    (x,), shape, dtype = _flatten(close)
    n_rows = x.shape[0]
    r = jnp.log(x[1:] / x[:-1])  # rows 1..T-1
    now, before = r[1:], r[:-1]  # pairs (r_t, r_{t-1}), rows 2..T-1
    if now.shape[0] < window:
        return jnp.full(shape, jnp.nan, dtype)
    cov = comoment(centred(now, window), centred(before, window), window, elementwise)
    cov = cov / (window - 1)
    spread = 2.0 * jnp.sqrt(jnp.maximum(-cov, 0.0))
    return pad_warmup(spread, n_rows).reshape(shape)


# ----------------------------------------------------------------------------------------------
# Corwin & Schultz (2012)
# ----------------------------------------------------------------------------------------------


def corwin_schultz_warmup(window: int) -> int:
    """First valid row of `corwin_schultz_spread`: `window` (`window` two-bar estimates)."""
    return check_window(window)


def _corwin_schultz_two_bar(high, low, close=None):
    """Two-bar Corwin-Schultz spreads for the pairs `(t - 1, t)`, rows `1..T-1` (a tail).

    `beta = ln(H_t/L_t)^2 + ln(H_{t-1}/L_{t-1})^2`, `gamma = ln(max(H_{t-1}, H_t) /
    min(L_{t-1}, L_t))^2`, `alpha = (sqrt(2 beta) - sqrt(beta)) / (3 - 2 sqrt 2) -
    sqrt(gamma / (3 - 2 sqrt 2))`, `S = 2 (e^alpha - 1) / (1 + e^alpha)`, then `max(S, 0)`
    (eqs. 14 and 18 of the paper; negative two-day estimates set to zero). With `close`, the
    overnight adjustment of section II.C shifts bar `t`'s high and low by the gap to the previous
    close: down by `L_t - C_{t-1}` if `L_t > C_{t-1}`, up by `C_{t-1} - H_t` if `H_t < C_{t-1}`.
    """
    h1, l1, h2, l2 = high[:-1], low[:-1], high[1:], low[1:]
    if close is not None:
        c1 = close[:-1]
        gap = jnp.maximum(c1 - h2, 0.0) + jnp.minimum(c1 - l2, 0.0)
        h2, l2 = h2 + gap, l2 + gap
    beta = jnp.log(h2 / l2) ** 2 + jnp.log(h1 / l1) ** 2
    gamma = jnp.log(jnp.maximum(h1, h2) / jnp.minimum(l1, l2)) ** 2
    k = 3.0 - 2.0 * math.sqrt(2.0)
    alpha = (math.sqrt(2.0) - 1.0) * jnp.sqrt(beta) / k - jnp.sqrt(gamma / k)
    spread = 2.0 * jnp.expm1(alpha) / (1.0 + jnp.exp(alpha))
    return jnp.maximum(spread, 0.0)


@functools.partial(jax.jit, static_argnames=("window",))
def corwin_schultz_spread(high, low, window: int = 20, *, close=None):
    """Corwin & Schultz (2012) high-low spread estimator, averaged over the trailing window.

    Each pair of consecutive bars `(t - 1, t)` gives a two-bar estimate from the single-bar and
    two-bar high/low ranges (the volatility part of a range grows with the interval, the spread
    part does not); negative estimates are set to 0 and the `window` most recent estimates are
    averaged (the paper's "two-day corrected" monthly average). See `_corwin_schultz_two_bar` for
    the formulas.

    Args:
        high: `[time, ...]` bar highs.
        low: `[time, ...]` bar lows (`0 < low <= high`).
        window: two-bar estimates per window (static int).
        close: optional `[time, ...]` closes; when given, the paper's overnight-gap adjustment is
            applied to bar `t`'s high and low (in both beta and gamma).

    Returns:
        `[time, ...]` proportional spreads `>= 0`; NaN for `t < window`
        (`corwin_schultz_warmup(window)`).
    """
    window = check_window(window)
    arrays = (high, low) if close is None else (high, low, close)
    flat, shape, dtype = _flatten(*arrays)
    n_rows = flat[0].shape[0]
    two_bar = _corwin_schultz_two_bar(*flat)
    return _trailing_mean(two_bar, window, n_rows).reshape(shape)


# ----------------------------------------------------------------------------------------------
# Abdi & Ranaldo (2017)
# ----------------------------------------------------------------------------------------------


def abdi_ranaldo_warmup(window: int) -> int:
    """First valid row of `abdi_ranaldo_spread`: `window` (`window` two-bar products)."""
    return check_window(window)


@functools.partial(jax.jit, static_argnames=("window", "two_day"))
def abdi_ranaldo_spread(high, low, close, window: int = 20, two_day: bool = False):
    """Abdi & Ranaldo (2017) close-high-low (CHL) spread estimator.

    With `c_t = ln C_t` and the mid-range `eta_t = (ln H_t + ln L_t) / 2`, the paper's moment
    condition is `s^2 = 4 E[(c_t - eta_t)(c_t - eta_{t+1})]`. Causally, the pair `(t - 1, t)`
    contributes `s2_t = 4 (c_{t-1} - eta_{t-1})(c_{t-1} - eta_t)`, and over the `window` most
    recent pairs

        spread_t = sqrt(max(mean(s2), 0))            (default: the paper's estimator),
        spread_t = mean(sqrt(max(s2, 0)))             (`two_day=True`: "two-day corrected").

    `c - eta` is formed as `(ln(C/H) + ln(C/L)) / 2` (ratios first, full float32 precision).

    Args:
        high: `[time, ...]` bar highs.
        low: `[time, ...]` bar lows.
        close: `[time, ...]` bar closes.
        window: two-bar products per window (static int).
        two_day: average the two-day square roots instead of taking the root of the mean.

    Returns:
        `[time, ...]` proportional spreads `>= 0`; NaN for `t < window`
        (`abdi_ranaldo_warmup(window)`).
    """
    window = check_window(window)
    (h, l, c), shape, dtype = _flatten(high, low, close)
    n_rows = h.shape[0]
    c1 = c[:-1]
    dev_prev = 0.5 * (jnp.log(c1 / h[:-1]) + jnp.log(c1 / l[:-1]))  # c_{t-1} - eta_{t-1}
    dev_next = 0.5 * (jnp.log(c1 / h[1:]) + jnp.log(c1 / l[1:]))  # c_{t-1} - eta_t
    s2 = 4.0 * dev_prev * dev_next  # rows 1..T-1
    if two_day:
        return _trailing_mean(jnp.sqrt(jnp.maximum(s2, 0.0)), window, n_rows).reshape(shape)
    mean = _trailing_mean(s2, window, n_rows)
    return jnp.sqrt(jnp.maximum(mean, 0.0)).reshape(shape)


# ----------------------------------------------------------------------------------------------
# Amihud (2002)
# ----------------------------------------------------------------------------------------------


def amihud_warmup(window: int) -> int:
    """First row of `amihud_illiquidity` that can be valid: `window` (`window` returns)."""
    return check_window(window)


@functools.partial(jax.jit, static_argnames=("window", "scale"))
def amihud_illiquidity(close, volume, window: int = 20, scale: float = 1e6):
    """Amihud (2002) illiquidity: mean absolute return per unit of traded value.

    `illiq_t = scale * mean_{u in W_t, V_u > 0} |r_u| / (C_u V_u)`, with `r_u = ln(C_u / C_{u-1})`,
    dollar volume `C_u V_u` (price times base-unit volume) and `W_t` the `window` most recent
    bars. With the default `scale = 1e6` the unit is "absolute return per million of currency
    traded" (Amihud's convention).

    Bars without volume (`V_u <= 0`) are left out of the mean: their ratio is
    undefined (no trade, so no price impact was measured); the return that follows a no-trade
    run is then attributed to the next traded bar. If no bar of the window traded, the output is
    NaN: with no trade there is no measurement, and a row of NaN inside the series marks a
    window made only of no-trade bars (e.g. a suspension, or a market closed for `window`
    days), not a warm-up.

    Args:
        close: `[time, ...]` positive prices.
        volume: `[time, ...]` traded volume in base units (>= 0).
        window: bars per window (static int).
        scale: multiplier of the ratio (static float).

    Returns:
        `[time, ...]` illiquidity `>= 0`; NaN for `t < window` (`amihud_warmup(window)`),
        where the window holds no traded bar, and where it holds a NaN close or volume (a
        missing bar, as opposed to a bar with zero volume).
    """
    window = check_window(window)
    (c, v), shape, dtype = _flatten(close, volume)
    n_rows = c.shape[0]
    r = jnp.log(c[1:] / c[:-1])  # rows 1..T-1
    c1, v1 = c[1:], v[1:]
    traded = v1 > 0
    ratio = jnp.where(traded, scale * jnp.abs(r) / jnp.where(traded, c1 * v1, 1.0), 0.0)
    ratio = jnp.where(jnp.isnan(v1), jnp.nan, ratio)  # unknown volume: a missing bar
    if r.shape[0] < window:
        return jnp.full(shape, jnp.nan, dtype)
    total = rolling_sum_tail(ratio, window)
    count = rolling_sum_tail(traded.astype(dtype), window)
    illiq = jnp.where(count > 0, total / jnp.maximum(count, 1.0), jnp.nan)
    return pad_warmup(illiq, n_rows).reshape(shape)
