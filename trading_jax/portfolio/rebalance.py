"""Rebalancing rules with proportional transaction costs over a path of asset returns (one `lax.scan`).

**Timing** (no look-ahead). `returns[t]` is the simple return of each asset over period t (close t-1 to
close t). At the close of period t, with information up to t, the rule decides whether to trade the
drifted weights to the target `target_weights[t]`; the post-trade weights `weights[t]` are held over period
t+1 and earn `returns[t+1]`. Between rebalances the weights drift with the returns. Weights are fractions of
equity; whatever is not invested (`1 - sum w`, e.g. under the volatility rule) is cash earning 0. The
portfolio starts in cash (`initial_weights = 0`) unless told otherwise, so the first trade pays its cost.

One step, from the weights `w` held over period t (`w = initial_weights` for t = 0):

    g_t      = w . returns[t]                                    (gross return of period t)
    w~_t     = w * (1 + returns[t]) / (1 + g_t)                  (drifted weights at the close of t)
    weights[t] = target_t if rebalanced[t] else w~_t
    turnover[t] = sum_i |weights[t]_i - w~_t,i|
    costs[t]    = sum_i rate_i |weights[t]_i - w~_t,i|           (`envs.costs.turnover_cost` for a scalar rate)
    returns_net[t] = (1 + g_t) (1 - costs[t]) - 1

The cost is a fraction of the equity at the close of t, charged on the gross turnover (the cost of trading
the cost itself, O(rate^2), is ignored), as in `trading_jax.envs.portfolio`.

**Rules** (frozen dataclasses, static under `jit`):

* `Calendar(every=k)`: trade to the target at t = 0, k, 2k, ...
* `Threshold(band, norm)`: trade when the drift exceeds the band: `norm="max"`: any `|w~_i - target_i| > band`;
  `norm="l1"`: `sum_i |w~_i - target_i| > band`.
* `VolatilityTarget(target_vol, window, max_gross, every, frequency)`: at t = 0, every, 2 every, ..., trade to
  `s_t * target_t` with `s_t = min(target_vol / vol_t, max_gross / sum_i |target_t,i|)`, where
  `vol_t = std(returns[t-window+1 .. t] @ target_t, ddof=1) * sqrt(frequency)` is the trailing realised
  volatility of the target portfolio (the last `window` returns, all known at the close of t). Until `window`
  returns are known (t < window - 1) the scaled target is all cash (`s_t = 0`); a zero volatility gives the
  cap `max_gross / gross`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.portfolio import checks

Array = jax.Array

__all__ = ["Calendar", "RebalanceResult", "Threshold", "VolatilityTarget", "simulate_rebalancing"]


def _positive_int(cls: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{cls}: {name} must be a positive integer; got {value!r}")


def _positive_float(cls: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"{cls}: {name} must be a positive finite number; got {value!r}")


@dataclasses.dataclass(frozen=True)
class Calendar:
    """Rebalance to the target every `every` periods (at t = 0, every, 2 every, ...)."""

    every: int = 1

    def __post_init__(self):
        _positive_int("Calendar", "every", self.every)


@dataclasses.dataclass(frozen=True)
class Threshold:
    """Rebalance when the drifted weights leave a band around the target.

    Attributes:
        band: the tolerated drift (a weight fraction, e.g. 0.05).
        norm: `"max"` (any asset's `|w~_i - target_i| > band`) or `"l1"` (`sum_i |w~_i - target_i| > band`).
    """

    band: float = 0.05
    norm: str = "max"

    def __post_init__(self):
        _positive_float("Threshold", "band", self.band)
        if self.norm not in ("max", "l1"):
            raise ValueError(f"Threshold: norm must be 'max' or 'l1'; got {self.norm!r}")


@dataclasses.dataclass(frozen=True)
class VolatilityTarget:
    """Scale the target by `target_vol / trailing realised vol`, gross exposure capped at `max_gross`.

    Attributes:
        target_vol: annualised volatility aimed at (e.g. 0.10).
        window: number of trailing returns in the realised volatility (>= 2).
        max_gross: cap on the gross exposure `sum |w|` (1: no leverage).
        every: rebalance every `every` periods.
        frequency: periods per year used to annualise (252 for daily returns).
    """

    target_vol: float = 0.10
    window: int = 20
    max_gross: float = 1.0
    every: int = 1
    frequency: float = 252.0

    def __post_init__(self):
        _positive_float("VolatilityTarget", "target_vol", self.target_vol)
        _positive_int("VolatilityTarget", "window", self.window)
        if self.window < 2:
            raise ValueError(f"VolatilityTarget: window must be >= 2 (a sample deviation); got {self.window}")
        _positive_float("VolatilityTarget", "max_gross", self.max_gross)
        _positive_int("VolatilityTarget", "every", self.every)
        _positive_float("VolatilityTarget", "frequency", self.frequency)


Rule = Union[Calendar, Threshold, VolatilityTarget]


class RebalanceResult(NamedTuple):
    """The path of a rebalanced portfolio (see the module docstring for the timing).

    Attributes:
        weights: `[T, N]` weights after the decision at the close of t (held over period t+1).
        returns: `[T]` portfolio return of period t, net of the cost paid at the close of t.
        turnover: `[T]` `sum_i |weights[t] - drifted weights|` traded at the close of t.
        costs: `[T]` the cost of that trade, a fraction of equity.
        rebalanced: `[T]` bool, whether the rule traded at the close of t.
    """

    weights: Array
    returns: Array
    turnover: Array
    costs: Array
    rebalanced: Array


@functools.partial(jax.jit, static_argnames=("rule",))
def _rebalance(target, returns, rule, rate, initial):
    t_len, n = returns.shape
    window = rule.window if isinstance(rule, VolatilityTarget) else 1

    def step(carry, inputs):
        w, buf = carry
        t, r, target_t = inputs
        g = jnp.vdot(w, r)
        grow = 1.0 + g
        drift = jnp.where(grow > 0, w * (1.0 + r) / jnp.where(grow > 0, grow, 1.0), 0.0)
        buf = buf.at[t % window].set(r)
        if isinstance(rule, Calendar):
            trade = t % rule.every == 0
            goal = target_t
        elif isinstance(rule, Threshold):
            dev = jnp.abs(drift - target_t)
            trade = (jnp.max(dev) if rule.norm == "max" else jnp.sum(dev)) > rule.band
            goal = target_t
        else:
            port = buf @ target_t  # the last `window` returns of the target portfolio (order irrelevant)
            vol = jnp.std(port, ddof=1) * math.sqrt(rule.frequency)
            gross = jnp.sum(jnp.abs(target_t))
            cap = rule.max_gross / jnp.where(gross > 0, gross, 1.0)
            scale = jnp.where(vol > 0, jnp.minimum(rule.target_vol / jnp.where(vol > 0, vol, 1.0), cap), cap)
            scale = jnp.where(t >= window - 1, scale, 0.0)
            trade = t % rule.every == 0
            goal = scale * target_t
        new = jnp.where(trade, goal, drift)
        traded = jnp.abs(new - drift)
        turnover = jnp.sum(traded)
        cost = jnp.sum(rate * traded)
        net = grow * (1.0 - cost) - 1.0
        return (new, buf), (new, net, turnover, cost, trade)

    buf0 = jnp.zeros((window, n), returns.dtype)
    ts = jnp.arange(t_len)
    _, out = jax.lax.scan(step, (initial, buf0), (ts, returns, target))
    return RebalanceResult(*out)


def simulate_rebalancing(target_weights, returns, rule: Rule = Calendar(), cost_rate=0.0, initial_weights=None) -> RebalanceResult:
    """Simulate a rebalancing rule with proportional costs; see the module docstring for the exact timing.

    Args:
        target_weights: `[T, N]` target weights decided at the close of each t (information up to t), or a
            constant `[N]`. Long-only targets summing to 1 are usual; any finite weights are accepted (the
            rest is cash).
        returns: `[T, N]` simple asset returns per period (finite).
        rule: `Calendar`, `Threshold` or `VolatilityTarget` (static under `jit`).
        cost_rate: proportional cost per unit of turnover (fraction, e.g. 1e-3 = 10 bps), a scalar or `[N]`.
        initial_weights: `[N]` weights held over period 0; None: all cash.

    Returns:
        `RebalanceResult(weights [T, N], returns [T], turnover [T], costs [T], rebalanced [T])`.

    Raises:
        ValueError: for bad concrete input (shapes, non-finite values, a cost rate outside [0, 0.5), an
            unknown rule).
    """
    fn = "simulate_rebalancing"
    if not isinstance(rule, (Calendar, Threshold, VolatilityTarget)):
        raise ValueError(f"{fn}: rule must be Calendar, Threshold or VolatilityTarget; got {rule!r}")
    shape = np.shape(returns)
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"{fn}: returns must be a [T, N] array of simple returns (time first); got shape {shape}")
    t_len, n = shape
    if np.shape(target_weights) not in ((n,), (t_len, n)):
        raise ValueError(f"{fn}: target_weights must be [{n}] or [{t_len}, {n}] to match returns; "
                         f"got shape {np.shape(target_weights)}")
    if np.shape(cost_rate) not in ((), (n,)):
        raise ValueError(f"{fn}: cost_rate must be a scalar or a ({n},) vector; got shape {np.shape(cost_rate)}")
    if initial_weights is not None:
        checks.check_vector(fn, initial_weights, n, "initial_weights")
    for name, x in (("returns", returns), ("target_weights", target_weights), ("cost_rate", cost_rate)):
        if checks.concrete(x) and not np.all(np.isfinite(np.asarray(x, dtype=np.float64))):
            raise ValueError(f"{fn}: {name} contains NaN or inf")
    if checks.concrete(returns) and np.any(np.asarray(returns) < -1):
        raise ValueError(f"{fn}: returns below -1 are impossible for simple returns (log returns? use expm1)")
    if checks.concrete(cost_rate):
        c = np.asarray(cost_rate, dtype=np.float64)
        if np.any(c < 0) or np.any(c >= 0.5):
            raise ValueError(f"{fn}: cost_rate must be in [0, 0.5) (a fraction per unit of turnover); got {c.tolist()}")
    r = jnp.asarray(returns)
    r = r.astype(jnp.result_type(r.dtype, jnp.float32))
    target = jnp.broadcast_to(jnp.asarray(target_weights, r.dtype), (t_len, n))
    initial = jnp.zeros((n,), r.dtype) if initial_weights is None else jnp.asarray(initial_weights, r.dtype)
    rate = jnp.asarray(cost_rate, r.dtype)
    return _rebalance(target, r, rule, rate, initial)
