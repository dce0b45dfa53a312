"""A vectorised backtester: target weights -> fills at the next bar -> PnL with costs, for many strategies at once.

    config = BacktestConfig(fee_rate=1e-3, half_spread=5e-4)
    weights = signals_to_weights(signals, rule="sign")          # [S, T, N] targets decided at each close
    result = backtest(bars, weights, config)                     # bars: Bars (or any .open/.close) [T, N]
    result.net_returns                                           # [S, T]

**Timing (no look-ahead).** `weights[..., t, :]` is the target decided at bar t from bars `<= t`. It is
filled at bar t + 1 (`fill="next_open"`: at `open_{t+1}`; `fill="next_close"`: at `close_{t+1}`,
with `slippage` as the stated price concession), never at the close of t that the decision saw. The
last target (bar T - 1) is never filled. Bar 0 holds cash only.

**Rules.** At every fill the book is rebalanced to the target weights of the equity valued at the
fill price (so a constant target is topped up as prices drift, and a target of 0 closes the
position); cash is what is left, and may be negative (leverage) or above equity (shorts). This is
vectorbt's `Portfolio.from_orders(size=target, size_type="targetpercent", price=fill price, fees=
fee_rate, slippage=half_spread + slippage)` for one asset (or a cash-sharing group with
`call_seq="auto"`) as long as the book stays within its cash (vectorbt does not borrow, and sizes its
shorts differently); `benchmarks/backtest.py` checks the equity curves agree.

**Accounting** of one strategy, per unit of equity. Write `f_t` for the fill price of bar t (its open,
or its close), `c_t` for its close, `w_t` for the target filled at t (`weights[t-1]`, 0 at t = 0),
`E^o_t` for the equity at the fill price just before the trade and `E_t` for the equity at the close:

    y_ti = c_ti / f_ti                                  the filled position's move from fill to close
    x_ti = f_ti / c_{t-1,i}                             the held position's move from the last close to the fill
    p_ti = w_{t-1,i} y_{t-1,i}                          value held at c_{t-1}, per unit of E^o_{t-1}
    D_t  = E^o_t / E^o_{t-1} = A_{t-1} + sum_i p_ti (x_ti - 1)
    h_ti = p_ti x_ti / D_t                              held weights just before the trade (drifted)
    d_ti = w_ti - h_ti                                  trade, as signed notional at f_ti over E^o_t
                                                        (0 where asset i has no price at t)
    m_ti = half_spread + slippage + sqrt_impact(d_ti E^o_t / f_ti, adv_ti, sigma_ti, impact_coefficient)
    exec_ti = f_ti (1 + sign(d_ti) m_ti)                (`costs.fill_price`)
    fee_t = sum_i fee_rate |d_ti| exec_ti / f_ti        (`costs.proportional_fee`)
    cost_t = fee_t + sum_i |d_ti| m_ti                  spread (`costs.turnover_cost`) + slippage + impact
    A_t  = E_t / E^o_t = 1 - cost_t + sum_i w_ti (y_ti - 1)

so `E_t = E_0 * prod_{s<=t} D_s * A_t` and the net return of bar t is `r_t = E_t / E_{t-1} - 1 =
D_t A_t / A_{t-1} - 1`: with fill at the open, the trade earns `open_{t+1} -> close_{t+1}` on its fill
bar, then close-to-close; with fill at the close the fill bar earns nothing (`y = 1`) and every later
bar is close-to-close. The gross return adds the bar's costs back, `g_t = D_t (A_t + cost_t) / A_{t-1}
- 1`, so `g_t - r_t = fees_t + spread_t + slippage_t + impact_t` with each cost a fraction of `E_{t-1}`
(`cost * D_t / A_{t-1} = cost_currency / E_{t-1}`).

The costs of a bar depend on the equity, which depends on the previous bar's costs: `A_t` solves a
recurrence through `D_t`. It is found by fixed-point iteration over the whole path at once, starting
from the cost-free path, until no `A_t` moves by more than a few float roundings (at most
`max_iterations`): each sweep is exact for one more bar and shrinks the remaining error by
`~ (fee_rate + half_spread + slippage + impact) * gross exposure` (about 1e-3 for typical costs, so
2-4 sweeps), which is what lets the whole backtest run as a few vectorised passes instead of a
sequential loop over time.

**Missing prices.** An asset whose fill price or close is NaN at a bar (not listed yet, delisted, a
missing bar) cannot be traded or held there: its target is taken as 0, a position still held leaves
the book at its last close's value, without cost and outside `trades` (its `x` is 1: the value goes
back to cash), and it contributes no PnL, no cost and no NaN. A target standing for an asset that is
not priced yet fills at its first priced bar. Prices are never filled forward.

**Ruin.** If the equity reaches 0 or below, it is 0 from that bar on (the bar's return is -1) and
nothing more is traded.

**Batching.** `prices` are `[..., T, N]` and `weights` `[..., T, N]` whose leading axes broadcast
(`[T, N]` prices with `[S, T, N]` weights runs S strategies on one market; `[U, T, N]` with
`[S, U, T, N]` runs them on U universes); the results carry the broadcast leading shape. `backtest`
is jittable and `jax.vmap` over a leading axis equals the batched call.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.envs import costs
from trading_jax.evaluation.risk import clip_to_limits

Array = jax.Array

__all__ = [
    "BacktestConfig",
    "BacktestResult",
    "backtest",
    "signals_to_weights",
    "walk_forward",
    "FILLS",
    "SIGNAL_RULES",
]

FILLS = ("next_open", "next_close")
SIGNAL_RULES = ("sign", "long_only", "rank", "proportional")


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _is_value(x) -> bool:
    """A number or a concrete array: a config field worth checking (pytree rebuilds pass placeholders and tracers)."""
    return isinstance(x, (numbers.Real, np.ndarray, np.generic, jax.Array)) and _is_concrete(x)


# ----------------------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class BacktestConfig:
    """Costs, fills and limits of a backtest: a frozen dataclass and a JAX pytree.

    The numbers are pytree leaves (a new fee rate does not recompile, and a config built inside a
    `jax.vmap` from traced numbers sweeps them); `fill`, `allow_short`, `max_iterations` and whether a
    limit is None are static.

    Attributes:
        fee_rate: fee as a fraction of the traded value at the execution price (1e-3 = 10 bp), in [0, 1).
        half_spread: half the relative bid-ask spread paid on each trade, in [0, 1).
        slippage: extra relative price concession on each trade (the stated slippage of a fill at
            the close), in [0, 1).
        impact_coefficient: square-root impact coefficient (`costs.sqrt_impact`), >= 0; > 0 needs
            `adv` and `sigma` passed to `backtest`.
        fill: `"next_open"` (default) or `"next_close"`: the price at which a target decided at bar
            t is filled at bar t + 1.
        initial_equity: starting cash (> 0); matters only for the impact model (absolute sizes).
        allow_short: False clips negative targets to 0 (a long-only book).
        max_position: cap on each `|w_i|`, or None; applied to the targets before filling
            (`risk.apply_position_limits`).
        max_gross: cap on `sum_i |w_i|` (the targets are scaled down to it), or None.
        max_iterations: most fixed-point sweeps of the cost recurrence (module docstring), >= 1;
            `backtest` refuses a result whose recurrence had not converged by then.
    """

    fee_rate: float = 0.0
    half_spread: float = 0.0
    slippage: float = 0.0
    impact_coefficient: float = 0.0
    fill: str = "next_open"
    initial_equity: float = 1.0
    allow_short: bool = True
    max_position: float | None = None
    max_gross: float | None = None
    max_iterations: int = 32

    def __post_init__(self):
        if self.fill not in FILLS:
            raise ValueError(f"BacktestConfig: fill must be one of {FILLS}; got {self.fill!r}")
        if not isinstance(self.allow_short, bool):
            raise ValueError(f"BacktestConfig: allow_short must be True or False; got {self.allow_short!r}")
        if isinstance(self.max_iterations, bool) or not isinstance(self.max_iterations, numbers.Integral) \
                or self.max_iterations < 1:
            raise ValueError(f"BacktestConfig: max_iterations must be an integer >= 1; got {self.max_iterations!r}")
        checks = {
            "fee_rate": (0.0, 1.0, "a fraction in [0, 1), e.g. 1e-3 for 10 bp"),
            "half_spread": (0.0, 1.0, "a fraction of the price in [0, 1)"),
            "slippage": (0.0, 1.0, "a fraction of the price in [0, 1)"),
            "impact_coefficient": (0.0, math.inf, "a number >= 0"),
        }
        for name, (low, high, what) in checks.items():
            value = getattr(self, name)
            if _is_value(value) and not np.all((np.asarray(value, float) >= low) & (np.asarray(value, float) < high)):
                raise ValueError(f"BacktestConfig: {name} must be {what}; got {value!r}")
        for name in ("initial_equity", "max_position", "max_gross"):
            value = getattr(self, name)
            if value is None and name != "initial_equity":
                continue
            if value is None or (_is_value(value) and not np.all(
                    (np.asarray(value, float) > 0) & np.isfinite(np.asarray(value, float)))):
                extra = "" if name == "initial_equity" else " or None (no limit)"
                raise ValueError(f"BacktestConfig: {name} must be a positive finite number{extra}; got {value!r}")


jax.tree_util.register_dataclass(
    BacktestConfig,
    data_fields=["fee_rate", "half_spread", "slippage", "impact_coefficient", "initial_equity", "max_position",
                 "max_gross"],
    meta_fields=["fill", "allow_short", "max_iterations"],
)


class BacktestResult(NamedTuple):
    """What `backtest` returns; `[...]` is the broadcast leading shape of prices and weights.

    Costs are fractions of the previous bar's closing equity `E_{t-1}`, so that
    `gross_returns - net_returns == fees + spread + slippage + impact` bar by bar.

    Attributes:
        gross_returns: `[..., T]` bar returns before the bar's costs.
        net_returns: `[..., T]` bar returns after costs, `E_t / E_{t-1} - 1` (0 at t = 0).
        fees: `[..., T]` fees paid at the bar's fill.
        spread: `[..., T]` half-spread paid.
        slippage: `[..., T]` stated slippage paid.
        impact: `[..., T]` square-root market impact paid.
        turnover: `[..., T]` `sum_i |d_ti|`: value traded at the fill, over the equity before the trade.
        trades: `[..., T, N]` `d_ti`, signed value traded over the equity before the trade (0 for an
            asset without a price at t; a position it held left the book at its last close, untraded).
        weights: `[..., T, N]` weights held at the close of t (after the fill, drifted to the close).
        equity: `[..., T]` equity at each close, starting at `initial_equity` at bar 0.
        iterations: `[...]` int32: the fixed-point sweeps each strategy took (module docstring).
    """

    gross_returns: Array
    net_returns: Array
    fees: Array
    spread: Array
    slippage: Array
    impact: Array
    turnover: Array
    trades: Array
    weights: Array
    equity: Array
    iterations: Array


# -------------------------------------------------------------------------------------- the backtest


def _prices(prices, fill: str) -> tuple[Any, Any]:
    """(fill price, close) from a Bars-like object with `.open`/`.close`, or a close array for `next_close`."""
    if hasattr(prices, "close"):
        close = prices.close
        if fill == "next_close":
            return close, close
        if getattr(prices, "open", None) is None:
            raise ValueError("backtest: fill='next_open' needs prices with an `open` field; pass Bars (or any "
                             "object with .open and .close), or use BacktestConfig(fill='next_close')")
        return prices.open, close
    if fill == "next_open":
        raise ValueError("backtest: a plain price array is taken as closes, which needs "
                         "BacktestConfig(fill='next_close'); pass Bars (with .open and .close) to fill at the open")
    return prices, prices


def _check_inputs(fill_price, close, weights, adv, sigma, config: BacktestConfig) -> None:
    """Shapes always; values (finite weights, positive prices, ...) when the arrays are concrete."""
    shapes = {"prices": np.shape(close), "weights": np.shape(weights)}
    for name, shape in shapes.items():
        if len(shape) < 2:
            raise ValueError(f"backtest: {name} must be [..., T, N] (time, then assets; [T, 1] for one asset); "
                             f"got shape {shape}")
    if np.shape(fill_price) != shapes["prices"]:
        raise ValueError(f"backtest: prices.open and prices.close must have the same shape; got "
                         f"{np.shape(fill_price)} and {shapes['prices']}")
    if shapes["weights"][-2:] != shapes["prices"][-2:]:
        raise ValueError(f"backtest: weights {shapes['weights']} and prices {shapes['prices']} must share the last "
                         f"two axes [T, N] (one target per bar and asset)")
    try:
        np.broadcast_shapes(shapes["weights"][:-2], shapes["prices"][:-2])
    except ValueError:
        raise ValueError(f"backtest: the leading (batch) axes of weights {shapes['weights']} and prices "
                         f"{shapes['prices']} do not broadcast") from None
    if shapes["prices"][-2] < 2:
        raise ValueError(f"backtest: need at least 2 bars (a target is filled at the next one); got T = "
                         f"{shapes['prices'][-2]}")
    if _is_concrete(config.impact_coefficient) and np.any(np.asarray(config.impact_coefficient) > 0) \
            and (adv is None or sigma is None):
        raise ValueError("backtest: impact_coefficient > 0 needs adv= and sigma= (average volume in units and the "
                         "return volatility per bar, [..., T, N] or broadcastable)")
    for name, value in (("adv", adv), ("sigma", sigma)):
        if value is None:
            continue
        try:
            np.broadcast_shapes(np.shape(value), shapes["prices"])
        except ValueError:
            raise ValueError(f"backtest: {name} {np.shape(value)} must broadcast to prices {shapes['prices']}") from None
        if _fails(_nonnegative, value):
            raise ValueError(f"backtest: {name} must be finite and >= 0 (0 turns the impact off for that entry)")
    if _fails(_all_finite, weights):
        raise ValueError("backtest: weights contain NaN or infinite values; give every bar and asset a finite "
                         "target (0 for no position), e.g. jnp.nan_to_num(weights)")
    for name, value in (("prices.open", fill_price), ("prices.close", close)):
        if _fails(_prices_ok, value):
            raise ValueError(f"backtest: {name} must be > 0 where known (NaN marks a missing bar; no infinities, "
                             f"zeros or negative prices)")


def _fails(check, x) -> bool:
    """True when the jitted `check` of `x` is concretely False; inside a trace (jit, vmap) nothing is checked."""
    ok = check(x)
    return not isinstance(ok, jax.core.Tracer) and not bool(ok)


@jax.jit
def _nonnegative(x):
    return jnp.all(jnp.isfinite(x) & (x >= 0))


@jax.jit
def _all_finite(x):
    return jnp.all(jnp.isfinite(x))


@jax.jit
def _prices_ok(p):
    return jnp.all(jnp.isnan(p) | (jnp.isfinite(p) & (p > 0)))


def backtest(prices, weights: Array, config: BacktestConfig = BacktestConfig(), *, adv: Array | None = None,
             sigma: Array | None = None) -> BacktestResult:
    """Backtest target weights with fills at the next bar and costs, for any number of strategies at once.

    The rules and the exact accounting are in this module's docstring: a target decided at bar t is
    filled at bar t + 1 (its open, or its close with `config.slippage`), the book is rebalanced to the
    target at every fill, and fees, half-spread, slippage and square-root impact are charged on each
    trade (`trading_jax.envs.costs`). Targets are first made long-only (`allow_short=False`) and
    capped (`max_position`, `max_gross`) as the config says.

    Args:
        prices: `trading_jax.data.Bars` (or any object with `.open` and `.close`), each `[..., T, N]`,
            NaN where an asset has no bar; with `fill="next_close"` a plain `[..., T, N]` array of
            closes will do.
        weights: `[..., T, N]` target weights (position value / equity, negative = short) decided at
            each close; leading axes broadcast with the prices'. Must be finite.
        config: costs, fill and limits.
        adv: average traded volume in units (shares), `[..., T, N]` or broadcastable, for the impact of
            a fill at bar t (compute it from bars before t); needed when `impact_coefficient > 0`.
        sigma: return volatility per bar, likewise.

    Returns:
        `BacktestResult` (returns, costs, turnover, trades, held weights, equity).

    Raises:
        ValueError: on shapes that do not fit, NaN or infinite weights, prices <= 0 or infinite,
            negative `adv`/`sigma`, impact requested without `adv` and `sigma`, or a cost recurrence
            that did not converge in `max_iterations` sweeps (value checks run when the inputs are
            concrete, i.e. outside `jax.jit`/`vmap`; inside, `iterations == max_iterations` tells).
    """
    if not isinstance(config, BacktestConfig):
        raise ValueError(f"backtest: config must be a BacktestConfig; got {type(config).__name__}")
    fill_price, close = _prices(prices, config.fill)
    _check_inputs(fill_price, close, weights, adv, sigma, config)
    result = _backtest(fill_price, close, weights, config, adv, sigma)
    if _is_concrete(result.iterations) and int(jnp.max(result.iterations)) >= config.max_iterations:
        raise ValueError(f"backtest: the cost recurrence did not converge in max_iterations={config.max_iterations} "
                         f"sweeps (costs times gross exposure near 1 or more); raise max_iterations, or lower the "
                         f"leverage or the cost rates")
    return result


def _shift(x, fill_value):
    """`x[..., t-1, :]` at t along the time axis (-2), `fill_value` at t = 0."""
    first = jnp.full_like(x[..., :1, :], fill_value)
    return jnp.concatenate([first, x[..., :-1, :]], axis=-2)


def _shift_t(x, fill_value):
    """`x[..., t-1]` at t along the last axis, `fill_value` at t = 0."""
    return jnp.concatenate([jnp.full_like(x[..., :1], fill_value), x[..., :-1]], axis=-1)


def _cumsum(x, block: int = 64):
    """Cumulative sum along the last axis by blocks: prefix sums inside blocks of `block` bars as one matrix
    product with a triangular matrix of ones, plus the (recursive) prefix of the block totals.

    The same sums as `jnp.cumsum` to float rounding (each output adds at most `block` + T / block partial
    sums), several times faster on XLA:CPU, which lowers `cumsum` to a chain of reduce-windows.
    """
    n = x.shape[-1]
    if n <= block:
        return jnp.matmul(x, jnp.triu(jnp.ones((n, n), x.dtype)), precision=jax.lax.Precision.HIGHEST)
    blocks = -(-n // block)
    padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, blocks * block - n)])
    within = jnp.matmul(padded.reshape(x.shape[:-1] + (blocks, block)),
                        jnp.triu(jnp.ones((block, block), x.dtype)), precision=jax.lax.Precision.HIGHEST)
    totals = within[..., -1]
    before = _cumsum(totals, block) - totals
    return (within + before[..., None]).reshape(x.shape[:-1] + (blocks * block,))[..., :n]


def _cost_parts(trade, equity_open, fill_price, config, adv, sigma):
    """Fees, spread, slippage and impact of a bar's trades, each `[..., T]`, as fractions of `E^o_t`.

    `trade` is `d` (signed notional over `E^o_t`; 0 where the asset has no price).
    """
    if adv is None:
        impact_rate = jnp.zeros((), trade.dtype)
    else:
        price = jnp.where(jnp.isfinite(fill_price), fill_price, 1.0)
        impact_rate = costs.sqrt_impact(trade * equity_open[..., None] / price, adv, sigma, config.impact_coefficient)
    relative_exec = costs.fill_price(1.0, trade, config.half_spread, config.slippage + impact_rate)  # exec / f
    fees = jnp.sum(costs.proportional_fee(trade * relative_exec, config.fee_rate), axis=-1)
    zero = jnp.zeros_like(trade)
    spread = costs.turnover_cost(zero, trade, config.half_spread)
    slippage = costs.turnover_cost(zero, trade, config.slippage)
    impact = jnp.sum(jnp.abs(trade) * impact_rate, axis=-1)
    return fees, spread, slippage, impact


@jax.jit
def _backtest(fill_price, close, weights, config: BacktestConfig, adv, sigma) -> BacktestResult:
    dtype = jnp.result_type(float)
    f = jnp.asarray(fill_price, dtype)
    c = jnp.asarray(close, dtype)
    w = jnp.asarray(weights, dtype)
    if adv is not None:
        adv, sigma = jnp.asarray(adv, dtype), jnp.asarray(sigma, dtype)
    if not config.allow_short:
        w = jnp.maximum(w, 0.0)
    if config.max_position is not None or config.max_gross is not None:
        w = clip_to_limits(w, config.max_position, config.max_gross, None)

    valid = jnp.isfinite(f) & jnp.isfinite(c)  # [P.., T, N]: the asset can be traded and held at bar t
    y = jnp.where(valid, c / jnp.where(valid, f, 1.0), 1.0)  # fill -> close
    close_before = _shift(c, jnp.nan)
    x_ok = valid & jnp.isfinite(close_before)
    x = jnp.where(x_ok, f / jnp.where(x_ok, close_before, 1.0), 1.0)  # last close -> fill
    target = jnp.where(valid, _shift(w, 0.0), 0.0)  # w_t: the target filled at t (weights[t-1])
    held = _shift(target * y, 0.0)  # p_t: value held at c_{t-1} per unit of E^o_{t-1}
    moved = jnp.where(valid, held * x, 0.0)  # p_t x_t; an asset without a price leaves the book at no cost
    overnight = jnp.sum(held * (x - 1.0), axis=-1)  # sum_i p_ti (x_ti - 1)
    intraday = jnp.sum(target * (y - 1.0), axis=-1)  # sum_i w_ti (y_ti - 1)
    log_equity0 = jnp.log(jnp.asarray(config.initial_equity, dtype))

    def solve(a):
        """Given a guess of A (`[..., T]`): D, the trades and their costs, and the next guess of A."""
        d_growth = _shift_t(a, 1.0) + overnight  # D_t
        trade = target - moved / jnp.where(d_growth > 0, d_growth, 1.0)[..., None]  # d_t
        equity_open = None
        if adv is not None:  # E^o_t = E_0 prod_{s<=t} D_s
            equity_open = jnp.exp(log_equity0 + _cumsum(jnp.log(jnp.where(d_growth > 0, d_growth, 1.0))))
        parts = _cost_parts(trade, equity_open, f, config, adv, sigma)
        return 1.0 - sum(parts) + intraday, (d_growth, trade, parts)

    def sweep(state):
        """One sweep for every strategy still moving; a converged strategy is frozen (so a batch gives the
        same numbers as its strategies one by one)."""
        a, done, count, step = state
        new, _ = solve(a)
        change = jnp.max(jnp.abs(new - a), axis=-1)
        active = ~done
        a = jnp.where(active[..., None], new, a)
        return a, done | (change <= tol), count + active.astype(jnp.int32), step + 1

    tol = 8.0 * jnp.finfo(dtype).eps
    a0 = 1.0 + intraday  # the cost-free path
    batch = a0.shape[:-1]
    a, _, iterations, _ = jax.lax.while_loop(
        lambda s: jnp.any(~s[1]) & (s[3] < config.max_iterations), sweep,
        (a0, jnp.zeros(batch, bool), jnp.zeros(batch, jnp.int32), jnp.asarray(0, jnp.int32)))
    a, (d_growth, trade, parts) = solve(a)

    # Ruin: from the first bar whose equity is <= 0, everything is 0 (that bar's return is -1).
    n_time = a.shape[-1]
    broke = (d_growth <= 0) | (a <= 0)
    first_broke = jnp.where(jnp.any(broke, axis=-1), jnp.argmax(broke, axis=-1), n_time)
    bar = jnp.arange(n_time)
    solvent = bar < first_broke[..., None]
    was_solvent = bar <= first_broke[..., None]
    a_safe = jnp.where(solvent, a, 1.0)
    growth = jnp.where(solvent, d_growth, 1.0)
    scale = jnp.where(solvent, growth / _shift_t(a_safe, 1.0), 0.0)  # D_t / A_{t-1} = E^o_t / E_{t-1}
    equity = jnp.where(solvent, jnp.exp(log_equity0 + _cumsum(jnp.log(growth))) * a_safe, 0.0)
    net = jnp.where(solvent, scale * a - 1.0, jnp.where(was_solvent, -1.0, 0.0))
    fees, spread, slippage, impact = (p * scale for p in parts)
    live = solvent[..., None]
    return BacktestResult(
        gross_returns=net + fees + spread + slippage + impact, net_returns=net, fees=fees, spread=spread,
        slippage=slippage, impact=impact, turnover=jnp.where(solvent, jnp.sum(jnp.abs(trade), axis=-1), 0.0),
        trades=jnp.where(live, trade, 0.0), weights=jnp.where(live, target * y / a_safe[..., None], 0.0),
        equity=equity, iterations=iterations)


# ------------------------------------------------------------------------------- signals -> weights


def signals_to_weights(signals: Array, rule: str = "sign", gross: float = 1.0) -> Array:
    """Turn per-asset signals into target weights at each bar, cross-sectionally (ours).

    Rules, at each bar over the assets whose signal is not NaN (a NaN signal, e.g. an indicator's
    warm-up, means no position):

    * `"sign"`: `w_i = gross * sign(s_i) / n`, `n = #{i: s_i != 0}`: long the positive, short the
      negative, equal weights, `sum |w| = gross` (0 when every signal is 0).
    * `"long_only"`: `w_i = gross * 1{s_i > 0} / #{i: s_i > 0}`.
    * `"rank"`: `w_i proportional to rank_i - mean(rank)` (ranks 1..n, ties averaged), scaled to
      `sum |w| = gross`: long the top half, short the bottom half, dollar neutral (0 when all tie).
    * `"proportional"`: `w_i = gross * s_i / sum_j |s_j|`.

    Args:
        signals: `[..., T, N]` signals (bar t's signal uses bars <= t).
        rule: one of `SIGNAL_RULES`.
        gross: the gross exposure of a bar with any position (> 0).

    Returns:
        `[..., T, N]` finite weights (to pass to `backtest`, which fills them at the next bar).

    Raises:
        ValueError: for an unknown rule, a non-positive gross, or signals of fewer than 2 dimensions.
    """
    if rule not in SIGNAL_RULES:
        raise ValueError(f"signals_to_weights: rule must be one of {SIGNAL_RULES}; got {rule!r}")
    if np.ndim(signals) < 2:
        raise ValueError(f"signals_to_weights: signals must be [..., T, N] (time, then assets); got shape "
                         f"{np.shape(signals)}")
    if _is_concrete(gross) and not (0 < float(gross) < math.inf):
        raise ValueError(f"signals_to_weights: gross must be a positive finite number; got {gross!r}")
    return _signals_to_weights(signals, rule, gross)


def _normalise(raw, gross):
    total = jnp.sum(jnp.abs(raw), axis=-1, keepdims=True)
    return jnp.where(total > 0, gross * raw / jnp.where(total > 0, total, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames=("rule",))
def _signals_to_weights(signals, rule: str, gross):
    s = jnp.asarray(signals, jnp.result_type(float))
    known = ~jnp.isnan(s)
    s0 = jnp.where(known, s, 0.0)
    if rule == "sign":
        raw = jnp.sign(s0)
    elif rule == "long_only":
        raw = (s0 > 0).astype(s0.dtype)
    elif rule == "proportional":
        raw = s0
    else:  # rank
        from trading_jax.evaluation.metrics import average_ranks

        flat = s.reshape(-1, s.shape[-1])
        ranks = jax.vmap(average_ranks)(flat).reshape(s.shape)
        count = jnp.sum(known, axis=-1, keepdims=True)
        centre = (count + 1) / 2.0
        raw = jnp.where(known, ranks - centre, 0.0)
    return _normalise(raw, gross)


# ----------------------------------------------------------------------------------- walk-forward


def walk_forward(fit_predict: Callable[[tuple[Any, Any], Any], Any], x, y, folds: Sequence) -> np.ndarray:
    """Out-of-sample predictions over walk-forward folds: fit on each fold's train block, predict its test block.

    For each fold (from `trading_jax.data.walk_forward_folds`), `fit_predict((x[train], y[train]),
    x[test])` is called with the fold's training inputs and labels and only the *inputs* of its test
    block, and must return one prediction per test bar. The predictions are placed at their bars;
    every bar outside the test blocks is NaN. Nothing of a test block's labels reaches `fit_predict`,
    and its train block ends before the test block starts (minus any embargo), so the prediction for
    bar t is fitted on bars before the test block that contains t.

    Args:
        fit_predict: `(train, test_x) -> predictions`: `train = (x_train, y_train)`, arrays of the
            training bars; `test_x` the inputs of the test bars; returns `[len(test), ...]`.
        x: `[T, ...]` inputs (time on axis 0; NumPy or JAX).
        y: `[T, ...]` labels aligned with `x`.
        folds: `Fold`s (each with `.train` and `.test` index ranges), e.g. `walk_forward_folds(T, ...)`.

    Returns:
        `[T, ...]` float64 NumPy array: the out-of-sample predictions, NaN outside the test blocks.

    Raises:
        ValueError: if `x` and `y` differ in length, a fold reaches past `T`, test blocks overlap, or
            `fit_predict` returns the wrong number of predictions.
    """
    n = np.shape(x)[0] if np.ndim(x) else 0
    if np.ndim(x) < 1 or np.ndim(y) < 1 or np.shape(y)[0] != n:
        raise ValueError(f"walk_forward: x and y must share the time axis 0; got shapes {np.shape(x)} and "
                         f"{np.shape(y)}")
    if not folds:
        raise ValueError("walk_forward: folds is empty; build them with trading_jax.data.walk_forward_folds")
    out = None
    tested = np.zeros(n, bool)
    for k, fold in enumerate(folds):
        train, test = fold.train, fold.test
        if train.stop > n or test.stop > n:
            raise ValueError(f"walk_forward: fold {k} reaches bar {max(train.stop, test.stop)} but x has {n} bars; "
                             f"build the folds with walk_forward_folds({n}, ...)")
        if train.stop > test.start:
            raise ValueError(f"walk_forward: fold {k} trains up to bar {train.stop} after its test starts at "
                             f"{test.start}; the train block must come first")
        if tested[test.slice].any():
            raise ValueError(f"walk_forward: fold {k}'s test block overlaps an earlier fold's")
        tested[test.slice] = True
        predictions = np.asarray(fit_predict((x[train.slice], y[train.slice]), x[test.slice]), dtype=np.float64)
        if predictions.ndim < 1 or predictions.shape[0] != len(test):
            raise ValueError(f"walk_forward: fit_predict returned {predictions.shape} for fold {k}; it must return "
                             f"one prediction per test bar ({len(test)} rows)")
        if out is None:
            out = np.full((n,) + predictions.shape[1:], np.nan)
        out[test.slice] = predictions
    return out
