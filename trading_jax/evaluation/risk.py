"""Portfolio risk: expected shortfall, exposures, position limits and volatility targeting, in pure JAX.

Weights are fractions of equity (position value / equity, negative = short) with time on the axis
before the assets, `[..., T, N]`, and any leading batch axes (strategies, universes) in front; every
function here is elementwise or reduces over the asset axis only, so it is `jax.jit`-able and
`jax.vmap` over a leading axis gives the same as the batched call. Return-based risk numbers take
`[..., T]` returns and reduce over time, like `trading_jax.evaluation.performance`.

The return-distribution risk measures already live in `trading_jax.evaluation.performance` and are
not repeated here: historical VaR (`value_at_risk`, empyrical.value_at_risk), historical CVaR /
expected shortfall (`conditional_value_at_risk`, empyrical.conditional_value_at_risk), Gaussian VaR
(`parametric_value_at_risk`) and `beta` (empyrical.beta). This module adds the Gaussian expected
shortfall beside them, with the same conventions (a loss is a negative return, `ddof = 1`).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.evaluation.performance import (annualization_factor, as_float, nanmean, nanstd, period_checked_jit,
                                                reduced_nan)

Array = jax.Array

__all__ = [
    "parametric_expected_shortfall",
    "Exposure",
    "exposure",
    "apply_position_limits",
    "LimitBreaches",
    "check_limits",
    "volatility_target",
]


# ------------------------------------------------------------------------------- return risk


def parametric_expected_shortfall(returns: Array, cutoff: float | Array = 0.05) -> Array:
    """Gaussian (parametric) expected shortfall: the mean return in the worst `cutoff` tail of a normal fit.

    For `r ~ N(mu, sigma^2)` the mean below the `cutoff` quantile is

        ES = E[r | r <= VaR] = mu - sigma * phi(z) / cutoff,   z = Phi^{-1}(cutoff)

    with `phi` the standard normal density, `mu = nanmean(r)` and `sigma = nanstd(r, ddof=1)`
    (`z_0.05 = -1.645`, `phi(z_0.05) / 0.05 = 2.063`, so ES_5% = mu - 2.063 sigma, below the VaR
    mu - 1.645 sigma). A loss is a negative number, as in `parametric_value_at_risk` and
    empyrical's VaR/CVaR. Ours (empyrical has only the historical CVaR); it equals
    `scipy.stats.norm.expect(lambda v: v, loc=mu, scale=sigma, ub=norm.ppf(cutoff, mu, sigma)) / cutoff`.

    Args:
        returns: simple returns `[..., T]`; NaN returns are ignored.
        cutoff: tail probability in (0, 1), default 0.05.

    Returns:
        `[...]`; NaN when fewer than 2 returns are not NaN.

    Raises:
        ValueError: if a concrete `cutoff` is not inside (0, 1).
    """
    if not isinstance(cutoff, jax.core.Tracer) and not np.all((np.asarray(cutoff) > 0) & (np.asarray(cutoff) < 1)):
        raise ValueError(f"parametric_expected_shortfall: cutoff must be a tail probability in (0, 1); got {cutoff!r}")
    return _parametric_expected_shortfall(returns, cutoff)


@period_checked_jit()
def _parametric_expected_shortfall(returns: Array, cutoff: float | Array) -> Array:
    returns = as_float(returns)
    if returns.shape[-1] < 2:
        return reduced_nan(returns)
    cutoff = jnp.asarray(cutoff, dtype=returns.dtype)
    z = jax.scipy.special.ndtri(cutoff)
    density = jnp.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return nanmean(returns) - nanstd(returns) * density / cutoff


# ----------------------------------------------------------------------------------- exposures


class Exposure(NamedTuple):
    """Exposures of a book of weights, each `[..., T]`, as fractions of equity.

    Attributes:
        gross: `sum_i |w_i|`.
        net: `sum_i w_i`.
        long: `sum_i max(w_i, 0)`.
        short: `sum_i max(-w_i, 0)` (a positive number; `net = long - short`, `gross = long + short`).
    """

    gross: Array
    net: Array
    long: Array
    short: Array


def _check_weights(fn: str, weights) -> None:
    if np.ndim(weights) < 2:
        raise ValueError(f"{fn}: weights must be [..., T, N] (time, then assets); got shape {np.shape(weights)}")


def exposure(weights: Array) -> Exposure:
    """Gross, net, long and short exposure at each bar (ours).

        gross_t = sum_i |w_ti|,  net_t = sum_i w_ti,  long_t = sum_i max(w_ti, 0),  short_t = sum_i max(-w_ti, 0)

    Args:
        weights: `[..., T, N]` position weights (fractions of equity, negative = short).

    Returns:
        `Exposure` of four `[..., T]` arrays.

    Raises:
        ValueError: if `weights` has fewer than 2 dimensions.
    """
    _check_weights("exposure", weights)
    return _exposure(weights)


@jax.jit
def _exposure(weights: Array) -> Exposure:
    w = as_float(weights)
    long = jnp.sum(jnp.maximum(w, 0.0), axis=-1)
    short = jnp.sum(jnp.maximum(-w, 0.0), axis=-1)
    return Exposure(gross=long + short, net=long - short, long=long, short=short)


# ------------------------------------------------------------------------------ position limits


def _check_limit(fn: str, name: str, value) -> None:
    """A limit is None (no limit) or a positive finite number; traced values are not checked."""
    if value is None or isinstance(value, jax.core.Tracer):
        return
    bad = isinstance(value, bool) or not (isinstance(value, numbers.Real) or np.ndim(value) == 0)
    if bad or not (0 < float(value) < math.inf):
        raise ValueError(f"{fn}: {name} must be a positive finite number or None (no limit); got {value!r}")


def apply_position_limits(weights: Array, max_position: float | None = None, max_gross: float | None = None,
                          max_net: float | None = None) -> Array:
    """Clip each position to `max_position`, then scale the book down to the gross and net limits (ours).

        v_ti = clip(w_ti, -max_position, max_position)
        k_t = min(1, max_gross / sum_i |v_ti|, max_net / |sum_i v_ti|)        (a missing limit is +inf)
        w'_ti = k_t * v_ti

    The scale `k_t <= 1` never levers a book up, keeps each bar's long/short proportions, and (as a
    uniform shrink) cannot break the per-asset cap it follows. A book inside every limit is returned
    unchanged.

    Args:
        weights: `[..., T, N]` target weights.
        max_position: largest `|w_ti|` per asset, or None.
        max_gross: largest `sum_i |w_ti|` per bar, or None.
        max_net: largest `|sum_i w_ti|` per bar, or None.

    Returns:
        `[..., T, N]` weights within the limits.

    Raises:
        ValueError: if `weights` has fewer than 2 dimensions or a limit is not a positive number or None.
    """
    _check_weights("apply_position_limits", weights)
    for name, value in (("max_position", max_position), ("max_gross", max_gross), ("max_net", max_net)):
        _check_limit("apply_position_limits", name, value)
    return clip_to_limits(weights, max_position, max_gross, max_net)


@jax.jit
def clip_to_limits(weights, max_position, max_gross, max_net):
    """`apply_position_limits` without its host-side input checks, for callers already inside `jit`
    (`evaluation.backtest` applies a config's limits with it)."""
    w = as_float(weights)
    if max_position is not None:
        w = jnp.clip(w, -max_position, max_position)
    scale = jnp.ones(w.shape[:-1], w.dtype)
    if max_gross is not None:
        gross = jnp.sum(jnp.abs(w), axis=-1)
        scale = jnp.minimum(scale, max_gross / jnp.maximum(gross, max_gross))
    if max_net is not None:
        net = jnp.abs(jnp.sum(w, axis=-1))
        scale = jnp.minimum(scale, max_net / jnp.maximum(net, max_net))
    return w * scale[..., None]


class LimitBreaches(NamedTuple):
    """Where a book breaks its limits (True = breach); a limit that was not given never breaches.

    Attributes:
        position: `[..., T, N]`: `|w_ti| > max_position + tol`.
        gross: `[..., T]`: `sum_i |w_ti| > max_gross + tol`.
        net: `[..., T]`: `|sum_i w_ti| > max_net + tol`.
        count: `[...]`: the number of breaches of all three kinds together.
    """

    position: Array
    gross: Array
    net: Array
    count: Array


def check_limits(weights: Array, max_position: float | None = None, max_gross: float | None = None,
                 max_net: float | None = None, tol: float = 1e-6) -> LimitBreaches:
    """Report every bar and asset at which a book of weights breaks a position, gross or net limit (ours).

    Args:
        weights: `[..., T, N]` weights.
        max_position: per-asset limit on `|w_ti|`, or None.
        max_gross: per-bar limit on `sum_i |w_ti|`, or None.
        max_net: per-bar limit on `|sum_i w_ti|`, or None.
        tol: slack for float rounding (default 1e-6).

    Returns:
        `LimitBreaches`; `bool(jnp.any(breaches.count))` says whether anything broke. NaN weights
        count as breaches (a NaN is never within a limit).

    Raises:
        ValueError: if `weights` has fewer than 2 dimensions or a limit is not a positive number or None.
    """
    _check_weights("check_limits", weights)
    for name, value in (("max_position", max_position), ("max_gross", max_gross), ("max_net", max_net)):
        _check_limit("check_limits", name, value)
    return _check_limits(weights, max_position, max_gross, max_net, tol)


@jax.jit
def _check_limits(weights, max_position, max_gross, max_net, tol):
    w = as_float(weights)

    def above(value, limit):  # NaN-safe: a NaN is a breach
        return jnp.zeros(value.shape, bool) if limit is None else ~(value <= limit + tol)

    position = above(jnp.abs(w), max_position)
    gross = above(jnp.sum(jnp.abs(w), axis=-1), max_gross)
    net = above(jnp.abs(jnp.sum(w, axis=-1)), max_net)
    count = (jnp.sum(position, axis=(-2, -1)) + jnp.sum(gross, axis=-1) + jnp.sum(net, axis=-1)).astype(jnp.int32)
    return LimitBreaches(position=position, gross=gross, net=net, count=count)


# -------------------------------------------------------------------------- volatility targeting


def volatility_target(returns: Array, target_vol: float, lookback: int = 20, max_leverage: float = 1.0,
                      period: str | float = "daily") -> Array:
    """Volatility-targeting scale factors: size each position so its realised volatility hits a target (ours).

        sigma_t = nanstd(r_{t-L+1..t}, ddof=1) * sqrt(A)          (the last L returns, bars <= t only)
        k_t = min(max_leverage, target_vol / sigma_t)              (0 until L returns are known)

    with `A = annualization_factor(period)`. Multiply a target decided at bar t by `k_t`: both use
    bars `<= t` only (a return `r_t = close_t / close_{t-1} - 1` is known at the close of t), and the
    backtester fills the product at t + 1, so there is no look-ahead. A window holding a NaN return
    (an asset not listed yet, a missing bar) gives `k_t = 0` (no position until L real returns are
    known); a window of constant returns has `sigma_t = 0` and takes the cap `max_leverage`.

    Args:
        returns: `[..., T, N]` simple returns of the assets (or `[..., T, 1]` of one strategy), time on
            the axis before the assets.
        target_vol: annualised volatility target (> 0), e.g. 0.10.
        lookback: `L`, returns in the window (>= 2).
        max_leverage: the cap on `k_t` (> 0).
        period: return frequency name or periods per year (as `performance.annualization_factor`).

    Returns:
        `[..., T, N]` scale factors in `[0, max_leverage]`.

    Raises:
        ValueError: for a `returns` array of fewer than 2 dimensions or an out-of-range argument.
    """
    if np.ndim(returns) < 2:
        raise ValueError(f"volatility_target: returns must be [..., T, N] (use [..., T, 1] for one series); "
                         f"got shape {np.shape(returns)}")
    if isinstance(lookback, bool) or not isinstance(lookback, numbers.Integral) or lookback < 2:
        raise ValueError(f"volatility_target: lookback must be an integer >= 2 (ddof=1); got {lookback!r}")
    for name, value in (("target_vol", target_vol), ("max_leverage", max_leverage)):
        _check_limit("volatility_target", name, value)
        if value is None:
            raise ValueError(f"volatility_target: {name} must be a positive finite number; got None")
    annualization = annualization_factor(period)
    return _volatility_target(returns, target_vol, max_leverage, int(lookback), annualization)


@functools.partial(jax.jit, static_argnames=("lookback", "annualization"))
def _volatility_target(returns, target_vol, max_leverage, lookback: int, annualization: float):
    from trading_jax.features.rolling import rolling_std

    r = jnp.moveaxis(as_float(returns), -2, 0)  # [T, ..., N]: rolling_std runs along axis 0
    sigma = rolling_std(r, lookback, ddof=1) * math.sqrt(annualization)
    scale = jnp.minimum(max_leverage, target_vol / sigma)  # sigma = 0 -> inf -> the cap
    return jnp.moveaxis(jnp.where(jnp.isnan(sigma), 0.0, scale), 0, -2)
