"""The execution environment on the message-level order book (`make_execution(book="message")`, issue 15 item 3).

    env, params = make_execution(book="message", message=dict(events_per_step=100))
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

Same task, actions, timing, accounting, reward, info and 18 observation entries as
`trading_jax.envs.execution` (its module docstring is the reference); what changes is the book. Here the
book is `trading_jax.envs.lob`: price-time priority over a window of integer ticks, driven by the
zero-intelligence order flow of Cont, Stoikov and Talreja (2010, "CST"). Our orders are messages in that
book (owner tag `lob.OURS`), so queue position is *simulated* (our order sits behind the orders that were
there first; it moves up only when those trade or cancel), a market order *walks* the displayed ticks, and
prices respond to our orders inside the book: there is no separate square-root impact law
(`settle(..., permanent_impact=False)`; `gamma`, `eta`, `p_fill`, `flow_correlation`, `cancel_rate`,
`resilience`, `tick` ... of `EnvParams` are unused here, the book's own flow replaces them).

**Units.** Prices are integer ticks; `price = tick_size * ticks` with `tick_size = params.mid0 / price0`,
so the book starts near tick `price0` (static, default 2000) and the arrival mid is ~`params.mid0` (100):
one tick is `1 / price0` = 5 bps of the price (a one-cent tick on a $20 stock; SEC Regulation NMS Rule
612 sets the one-cent minimum increment; the $20 is our illustrative choice, made so that the CST
flow's per-step mid volatility and spread land near the other books' defaults, see the numbers below).
`EnvState.arrival = tick_size * m0 / 2` with `m0 = bid + ask` (ticks) at reset; every fill's price is
kept exactly as `dev = (2 cost - n m0) / (n m0)` with `cost = sum fill * tick` (int32, exact) over `n`
lots, i.e. `dev = avg fill price / arrival - 1`.

Sizes are lots of `lot` shares (static, default 25). Our order sizes (the parent's table, in shares) are
rounded to the nearest whole lot, at least one lot for any order, at most the remainder's lots
`ceil(R / lot)` (an order for all of R, the forced completion or the aggressive limit, is exactly those). Fills are lots in the book and `min(n * lot, R)` shares in the accounting, so when `Q`
is not a whole number of lots the last lot carries the remainder (it trades as a full lot in the book and
counts its fraction in shares, at the same price); `executed + remaining == Q` holds exactly (both are
sums of whole-lot multiples until the last fill, which takes exactly `R`).

**Order flow per step.** Each env step is `events_per_step` background CST events (static, default 100;
`run_background`: one `lob.run_events(..., cancel_ours=False)` call, in which the background never cancels
OUR orders: a tick's cancel clock counts only the background orders resting there, each at its CST rate
theta, so the events are exactly CST's flow of the background orders, with ours resting among them until
they trade, we cancel them or the window drops them). With the default sizes (limit and market orders of `1 + Geometric` lots with mean
`limit_size_mean = market_size_mean = 4`, our illustrative choice; CST's unit orders are sizes of mean 1)
and the default `cst_params` intensities, about 7% of the events are market orders (2 mu / R with the
stationary total rate R ~ 27): ~7 market orders a step, measured 32 lots (800 shares) traded per step
(sd 17 lots), ~9 lots (230 shares) at the best ask, ~33 lots (820 shares) on a side in the window, a
spread of 1.4 ticks on average (1 tick 80% of the time: 7 bps), and a per-step mid change of sd 2.2
ticks (11 bps); measured on one book over 200 steps of 100 events after the 500-event burn-in. So the
default `quantity = 3000` shares is 120 lots: ~6% of the horizon's traded volume at H = 60, 13 best-level
depths, 3.7 window sides. These are close to the other books' defaults (`volume` 1000, `depth0` 200,
`spread_mean` 5 bps, `sigma` 10 bps), so the observation's scales stay O(1); set `sigma`, `volume`,
`depth0`, `spread_mean` of `EnvParams` to the measured values for exact normalisation (they only scale
the observation here).

**Our orders** (for a buy; a sell mirrors it, resting on the ask and taking the bids):

* passive (5): `lots(TWAP)` resting at our best quote of t (the best bid; for an empty side the
  reference quote `lob.reference_quotes`), posted at the START of the interval, at the back of the
  queue; it rests through the interval's events and fills when market sells reach it (the LOB's
  owner-1 fills inside `run_events`), at its own price. Wait (0) keeps it as it is. Another passive action
  keeps it as it is if the touch has not moved (same tick), else cancels it and re-posts `lots(TWAP)` at
  the new touch (back of the queue). Any other action cancels it at the start of the interval. If the
  window moves past it (`lob.recentre` drops it) or its tick is full (`REJECT_FULL`), it stops resting.
* iceberg (6): the LOB has no hidden orders. An iceberg is a passive order of `lots(2 TWAP)` that
  re-joins the back of the queue at the touch EVERY step (cancel + re-post, also while waiting): it never
  holds time priority (the price of hiding: its queue ahead is always the whole displayed level).
* market (1-3, 7-9) and the forced completion at t = H - 1: submitted at the END of the interval (after
  the events), so they trade against the book at t+1 as in the other books: `lob.submit_market` walks the
  asks tick by tick, best price and earliest order first; `dev` is the depth-weighted average of the ticks
  walked. `temp` = side * (avg price / mid_{t+1} - 1) - half spread_{t+1} (both before our order).
* aggressive limit (4): a marketable limit at the best ask of t+1 for the remainder, IOC: it takes
  `min(lots(R), lots at the best ask)` at that tick, the rest is cancelled; `temp = 0` as in the other books.

**A market order larger than the window side.** The window holds all the displayed liquidity there is
(orders beyond it were dropped). A market order that empties the opposite side fills what was there; the
rest is not executed (IOC) and stays in `remaining` — except for the forced completion at t = H - 1, whose
unfilled lots are filled at the worst tick it walked plus `overflow_ticks` (static, default 5, our own
illustrative penalty: CST limit orders arrive within 5 ticks of the opposite quote, so a refilled side
would offer its liquidity within about that many ticks); for an empty side the "worst tick walked" is
the reference ask. Those lots do not touch the book. So every episode still ends with `executed == Q`.

**Book at t+1 seen by the agent** (`orderbook.BookState` built from the LOB after the interval and our
market order, if any): `x = log(m / m0)` with `m = bid + ask` (ticks), `z = arctanh(clip(I, -0.999,
0.999))` with the displayed imbalance at the best `I = (b1 - a1) / (b1 + a1)` (0 if both are empty),
`log_spread = log(2 (ask - bid) / m)`, `bid`/`ask` = `lob.depth` at the `n_levels` ticks from the best
outwards (shares), `volume` = lots traded by the background market orders in the interval (fills against
our resting order included, our own market order excluded, as the other books' exogenous volume) in
shares, `vema` its EWMA; `mom`, `var` are updated by `settle` from the observed mid. The market VWAP
uses the mid after our market order of that step (this book has no pre-impact mid to separate).
Observation entries that read the book: 13 (predicted impact) is the walk of a market order for R on the
LOB at t (`market_walk`, beyond the half spread, overflow included) / sigma; 15 `rest_qty / Q`;
16 queue ahead of our resting order (`lob.queue_ahead`, shares) / depth0; 17 the last interval's
trade-flow imbalance `(buys - sells) / (buys + sells)` of the background market orders' traded lots.

**Reset.** The book at reset is a template (`lob.init_book` with the deterministic CST profile and
`burn_in` events from a fixed `seed`, built once per setting), then `reset_events` random events
(static, default 0: every episode starts from the same book and differs through its own flow). gymnax's
`step` computes a reset at every step (auto-reset), so `reset_events` adds to every step's cost.

The CST intensities, size means, window and slot counts are static constructor settings (passed as
`make_execution(book="message", message={...})`), so they are constants of the compiled step, not
`EnvParams` leaves: a population over them needs one env per setting.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.envs import lob
from trading_jax.envs import orderbook as ob
from trading_jax.envs.execution import (
    AGGRESSIVE,
    ICEBERG,
    MARKET,
    NONE,
    PASSIVE,
    EnvParams,
    EnvState,
    ExecutionEnv,
)

Array = jax.Array

__all__ = ["MessageState", "FlowTotals", "MessageExecutionEnv", "run_background", "market_walk", "to_lots",
           "book_view"]

_I32 = jnp.int32


class MessageState(NamedTuple):
    """The message-level part of `EnvState.lob` (one env; a leading batch axis under vmap).

    Attributes:
        book: `lob.LOBState`, the order book at t (after our market order of the last step, if any).
        order_id: int32 id of our resting order (-1 when none rests).
        order_price: int32 absolute tick of our resting order (0 when none).
        arrival2: int32 `m0 = bid + ask` at reset: twice the arrival mid, in ticks.
    """

    book: lob.LOBState
    order_id: Array
    order_price: Array
    arrival2: Array


class FlowTotals(NamedTuple):
    """Totals of one interval of `run_background` (int32).

    Attributes:
        traded: `[2]` lots executed out of each book side (traded[1]: market buys lifting the asks).
        our_filled, our_cost: `[2]` lots of our resting orders executed and their `sum fill * tick`.
    """

    traded: Array
    our_filled: Array
    our_cost: Array


def run_background(book: lob.LOBState, key: Array, params: lob.LOBParams, n_events: int
                   ) -> tuple[lob.LOBState, FlowTotals]:
    """`n_events` background CST events in which the background never cancels OUR orders: one
    `lob.run_events(book, key, params, n_events, cancel_ours=False)` call (uniforms
    `jax.random.uniform(key, (n_events, 4))`, the book kept in the LOB's working layout for all of them).
    The cancel clock of a tick counts only the background orders resting there (each at its rate theta),
    so every event is one of the CST flow of the background orders: none is drawn and thrown away.

    Returns:
        `(book, FlowTotals)`.
    """
    book, stats = lob.run_events(book, key, params, n_events, cancel_ours=False)
    return book, FlowTotals(traded=stats.traded, our_filled=stats.our_filled, our_cost=stats.our_cost)


def to_lots(shares, remaining, lot: float) -> Array:
    """Round an order of `shares` to whole lots: nearest lot, at least 1 for any order > 0, at most
    `ceil(remaining / lot)` (the remainder's lots, the last one possibly partial); an order for the whole
    remainder (the forced completion, the aggressive limit) is exactly those lots. int32 scalar.

    Args:
        shares: float order size (shares, >= 0).  remaining: float shares still to execute.  lot: shares per lot.
    """
    rem_lots = jnp.maximum(jnp.ceil(remaining / lot - 1e-4), (remaining > 0.0).astype(jnp.float32))
    lots = jnp.where(shares >= remaining, rem_lots, jnp.clip(jnp.round(shares / lot), 1.0, rem_lots))
    return jnp.where(shares > 0.0, lots, 0.0).astype(_I32)


def _select(pred, a, b):
    """`a` where the scalar `pred` holds, else `b`, leaf by leaf (a branch-free `cond`)."""
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def _sign(our_side) -> Array:
    """+1 for our buys (we rest on the bid, side 0), -1 for our sells (side 1)."""
    return 1 - 2 * jnp.asarray(our_side, _I32)


def market_walk(book: lob.LOBState, our_side, lots, overflow_ticks: int = 5) -> tuple[Array, Array, Array, Array]:
    """What a market order of `lots` would do on `book`, computed by hand (no state change): it takes the
    opposite side's displayed lots tick by tick from the best (price priority; within a tick the order
    does not matter for the price), and the lots beyond the whole window side are priced at the worst
    tick taken (the reference opposite quote if that side is empty) plus `overflow_ticks` away from us.

    Args:
        book: one `lob.LOBState`.  our_side: 0 for a buy (takes the asks), 1 for a sell (takes the bids).
        lots: int lots to trade (>= 0).  overflow_ticks: static penalty distance for the excess.

    Returns:
        `(filled, cost, short, worst)` int32: lots taken from the book, their `sum fill * tick`, the lots
        the window side could not fill, and the worst tick taken (the reference quote if none).
    """
    t = book.qty.shape[2]
    prices = book.base + jnp.arange(t, dtype=_I32)
    per_tick = jnp.sum(book.qty, 0)                                     # [2, T]
    rb, ra = lob.reference_quotes(book)
    buy = jnp.asarray(our_side, _I32) == lob.BUY
    opp = jnp.where(buy, per_tick[lob.ASK], per_tick[lob.BID])           # lots offered per tick
    order = jnp.where(buy, jnp.arange(t), jnp.arange(t)[::-1])            # best price first
    q_sorted = opp[order]
    before = jnp.cumsum(q_sorted) - q_sorted
    take = jnp.clip(jnp.asarray(lots, _I32) - before, 0, q_sorted)
    filled = jnp.sum(take)
    cost = jnp.sum(take * prices[order])
    worst_sorted = jnp.max(jnp.where(take > 0, jnp.arange(t), -1))
    worst = jnp.where(worst_sorted >= 0, prices[order][jnp.maximum(worst_sorted, 0)], jnp.where(buy, ra, rb))
    short = jnp.asarray(lots, _I32) - filled
    return filled, cost, short, worst.astype(_I32)


def book_view(book: lob.LOBState, arrival2, n_levels: int, lot: float) -> tuple[Array, Array, Array, Array, Array]:
    """`(x, z, log_spread, bid, ask)` of the `orderbook.BookState` seen by the agent (module docstring):
    `bid`/`ask` are `[n_levels]` float32 shares from the best outwards."""
    rb, ra = lob.reference_quotes(book)
    m2 = (rb + ra).astype(jnp.float32)
    arrival2 = jnp.asarray(arrival2, jnp.float32)
    x = jnp.log1p((m2 - arrival2) / arrival2)
    log_spread = jnp.log(2.0 * (ra - rb).astype(jnp.float32) / m2)
    bid = lob.depth(book, lob.BID, n_levels).astype(jnp.float32) * lot
    ask = lob.depth(book, lob.ASK, n_levels).astype(jnp.float32) * lot
    both = bid[0] + ask[0]
    imb = jnp.where(both > 0.0, (bid[0] - ask[0]) / jnp.maximum(both, 1e-9), 0.0)
    z = jnp.arctanh(jnp.clip(imb, -0.999, 0.999))
    return x, z, log_spread, bid, ask


@functools.lru_cache(maxsize=None)
def _template(settings: tuple, n_ticks: int, max_orders: int, burn_in: int, price0: int, seed: int):
    """The reset book (host arrays), built once per setting: CST profile + `burn_in` events."""
    params = _lob_params(settings)
    book = lob.init_book(jax.random.key(seed), params, n_ticks, max_orders, burn_in, price0)
    return jax.tree.map(np.asarray, jax.device_get(book))


def _lob_params(settings: tuple) -> lob.LOBParams:
    flow_levels, limit_rate, cancel_rate, market_rate, limit_size_mean, market_size_mean = settings
    return lob.cst_params(flow_levels, limit_size_mean=limit_size_mean, market_size_mean=market_size_mean,
                          limit_rate=limit_rate, cancel_rate=cancel_rate, market_rate=market_rate)


class MessageExecutionEnv(ExecutionEnv):
    """The execution env on the message-level book `trading_jax.envs.lob` (module docstring).

    Args:
        horizon: H decision steps.  n_levels: L, depth levels per side in the observation.
        lot: shares per lot (> 0).  events_per_step: background CST events per env step (>= 0).
        n_ticks, max_orders: the LOB window (ticks) and order slots per tick and side.
        price0: tick of the initial best ask; one tick is `1 / price0` of the price.
        burn_in: events of the reset template.  reset_events: random events at each reset (>= 0).
        seed: key of the template's burn-in.  overflow_ticks: penalty distance of the forced completion's
            lots beyond the window side.
        flow_levels: CST distances 1..flow_levels of limit-order arrivals.  limit_rate, cancel_rate:
            optional `[flow_levels]` intensities (default CST's, `lob.cst_params`).  market_rate: mu.
        limit_size_mean, market_size_mean: mean order sizes of the background flow, in lots.

    Raises:
        ValueError: a setting of the wrong type or range (one line naming it).
    """

    def __init__(self, horizon: int = 60, n_levels: int = 5, *, lot: float = 25.0, events_per_step: int = 100,
                 n_ticks: int = 64, max_orders: int = 8, price0: int = 2000, burn_in: int = 500,
                 reset_events: int = 0, seed: int = 0, overflow_ticks: int = 5, flow_levels: int = 5,
                 limit_rate=None, cancel_rate=None, market_rate: float = 0.94,
                 limit_size_mean: float = 4.0, market_size_mean: float = 4.0):
        super().__init__(horizon, n_levels, "synthetic", "message")
        for name, value, low in (("events_per_step", events_per_step, 0), ("burn_in", burn_in, 0),
                                 ("reset_events", reset_events, 0), ("overflow_ticks", overflow_ticks, 0),
                                 ("price0", price0, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"message setting {name}={value!r}: need an integer >= {low}")
        if not np.isfinite(lot) or lot <= 0:
            raise ValueError(f"message setting lot={lot!r}: need shares per lot > 0")
        if n_ticks < 2 * flow_levels or price0 < n_ticks:
            raise ValueError(f"message setting n_ticks={n_ticks!r}: need 2 * flow_levels <= n_ticks <= price0 "
                             f"({2 * flow_levels} .. {price0})")
        tup = (lambda v: None if v is None else tuple(float(x) for x in np.ravel(v)))  # noqa: E731
        self._settings = (int(flow_levels), tup(limit_rate), tup(cancel_rate), float(market_rate),
                          float(limit_size_mean), float(market_size_mean))
        self.lob_params = _lob_params(self._settings)     # validates (one-line ValueError)
        self.lot = float(lot)
        self.events_per_step = int(events_per_step)
        self.n_ticks, self.max_orders = int(n_ticks), int(max_orders)
        self.price0, self.burn_in, self.seed = int(price0), int(burn_in), int(seed)
        self.reset_events, self.overflow_ticks = int(reset_events), int(overflow_ticks)
        # built here, outside any trace (cached per setting): a constant of the compiled reset
        self._template_host = _template(self._settings, self.n_ticks, self.max_orders, self.burn_in, self.price0,
                                        self.seed)

    def _key(self) -> tuple:
        return super()._key() + (self._settings, self.lot, self.events_per_step, self.n_ticks, self.max_orders,
                                 self.price0, self.burn_in, self.reset_events, self.seed, self.overflow_ticks)

    @property
    def name(self) -> str:
        return "ExecutionMessage-v0"

    def template(self) -> lob.LOBState:
        """The book every reset starts from (before `reset_events`), as device arrays."""
        return jax.tree.map(jnp.asarray, self._template_host)

    # ------------------------------------------------------------------ observation
    def get_obs(self, state: EnvState, params: EnvParams, key=None) -> Array:
        """The parent's 18 entries; entry 13 (predicted impact) walks the LOB itself (module docstring)."""
        obs = super().get_obs(state, params, key)
        ms: MessageState = state.lob
        our = (jnp.asarray(params.side) < 0).astype(_I32)
        lots = to_lots(state.remaining, state.remaining, self.lot)
        filled, cost, short, worst = market_walk(ms.book, our, lots, self.overflow_ticks)
        sign = _sign(our)
        cost = cost + short * (worst + sign * self.overflow_ticks)
        temp = self._temp(ms.book, our, lots, cost)
        return obs.at[13].set((temp / jnp.maximum(params.sigma, 1e-12)).astype(jnp.float32))

    @staticmethod
    def _temp(book: lob.LOBState, our, lots, cost) -> Array:
        """`side * (avg / mid - 1) - half spread` of `lots` lots costing `cost` ticks on `book` (0 if none)."""
        rb, ra = lob.reference_quotes(book)
        m2 = (rb + ra).astype(jnp.float32)
        n = jnp.maximum(lots, 1).astype(jnp.float32)
        rel = (2.0 * cost.astype(jnp.float32) - n * m2) / (n * m2)
        half = (ra - rb).astype(jnp.float32) / m2
        return jnp.where(lots > 0, _sign(our).astype(jnp.float32) * rel - half, 0.0)

    # ------------------------------------------------------------------ reset / step
    def reset_env(self, key: Array, params: EnvParams) -> tuple[Array, EnvState]:
        """The template book (+ `reset_events` random events); arrival = its mid in price units."""
        book = self.template()
        if self.reset_events:
            book, _ = run_background(book, key, self.lob_params, self.reset_events)
        rb, ra = lob.reference_quotes(book)
        m0 = (rb + ra).astype(_I32)
        x, z, ls, bid, ask = book_view(book, m0, self.n_levels, self.lot)
        f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        view = ob.BookState(x=f32(0.0), z=z, log_spread=ls, bid=bid, ask=ask, volume=f32(params.volume),
                            mom=f32(0.0), var=f32(params.sigma * params.sigma), vema=f32(params.volume))
        state = EnvState(
            time=jnp.zeros((), _I32), book=view, path=jnp.zeros((), _I32), t0=jnp.zeros((), _I32),
            executed=f32(0.0), remaining=f32(params.quantity), cost=f32(0.0),
            arrival=f32(params.mid0 / self.price0 * m0.astype(jnp.float32) / 2.0),
            vwap_num=f32(0.0), vwap_den=f32(0.0), impact_qty=f32(0.0),
            gap=jnp.zeros((self.n_levels,), jnp.float32), rest_qty=f32(0.0), rest_ahead=f32(0.0),
            rest_price=f32(0.0), rest_kind=jnp.asarray(NONE, _I32), flow=f32(0.0),
            lob=MessageState(book=book, order_id=jnp.asarray(-1, _I32), order_price=jnp.asarray(0, _I32),
                             arrival2=m0),
        )
        return self.get_obs(state, params), state

    def step_env(self, key: Array, state: EnvState, action, params: EnvParams):
        """One decision: our passive order at the start, `events_per_step` events drawn from `key`
        (`run_background(book, key, ...)`, the key used as is), our market order at the end, then the
        parent's `settle` without the square-root permanent impact."""
        kind, size = self.order(state, action, params)
        kind, fills = self.fill(key, state, kind, size, params)
        return self.settle(state, action, params, kind, fills, permanent_impact=False)

    def fill(self, key: Array, state: EnvState, kind, size, params: EnvParams):
        """The interval on the message book (module docstring).

        Args:
            key: the events' key.  state: EnvState at t.  kind, size: `order(state, action, params)`.

        Returns:
            `(kind, (book_{t+1}, fill, dev, temp, updates))`: the order kind that worked (a wait with a
            resting order reports the resting kind) and the fills tuple of `ExecutionEnv.settle`.
        """
        ms: MessageState = state.lob
        book = ms.book
        lot = self.lot
        rem = state.remaining
        our = (jnp.asarray(params.side) < 0).astype(_I32)                 # our resting side: 0 bid (buy), 1 ask (sell)
        sign = _sign(our)
        lots = to_lots(size, rem, lot)

        # --- start of the interval: keep, cancel or (re-)post our passive order at the touch of t
        held = lob.resting_qty(book, lob.OURS)
        held = jnp.where(our == lob.BID, held[lob.BID], held[lob.ASK])
        resting = (ms.order_id >= 0) & (held > 0)
        wait = (kind == NONE) & resting
        kind = jnp.where(wait, state.rest_kind, kind).astype(_I32)
        rb, ra = lob.reference_quotes(book)
        touch = jnp.where(our == lob.BID, rb, ra)
        keep = resting & (state.rest_kind == PASSIVE) & (
            wait | ((kind == PASSIVE) & (ms.order_price == touch)))
        book = _select(resting & ~keep, lob.cancel(book, ms.order_id), book)
        post_lots = jnp.where(wait, held, lots)
        post = ((kind == PASSIVE) | (kind == ICEBERG)) & ~keep & (post_lots > 0)
        posted, new_id = lob.submit_limit(book, our, touch, jnp.maximum(post_lots, 1))
        book = _select(post, posted, book)
        order_id = jnp.where(post, new_id, jnp.where(keep, ms.order_id, -1)).astype(_I32)
        order_price = jnp.where(post, touch, ms.order_price).astype(_I32)

        # --- the interval's background events (our resting order fills inside them)
        book, stats = run_background(book, key, self.lob_params, self.events_per_step)
        passive_lots = jnp.where(our == lob.BID, stats.our_filled[lob.BID], stats.our_filled[lob.ASK])
        passive_cost = jnp.where(our == lob.BID, stats.our_cost[lob.BID], stats.our_cost[lob.ASK])
        left = lob.resting_qty(book, lob.OURS)
        left = jnp.where(our == lob.BID, left[lob.BID], left[lob.ASK])
        still = (order_id >= 0) & (left > 0) & ((kind == PASSIVE) | (kind == ICEBERG))
        ahead = jnp.where(still, lob.queue_ahead(book, order_id), 0)

        # --- end of the interval: market order / aggressive IOC limit against the book at t+1
        best_opp = jnp.where(our == lob.BID, lob.depth(book, lob.ASK, 1)[0], lob.depth(book, lob.BID, 1)[0])
        mkt_lots = jnp.where(kind == MARKET, lots, jnp.where(kind == AGGRESSIVE, jnp.minimum(lots, best_opp), 0))
        send = mkt_lots > 0
        _, _, _, worst = market_walk(book, our, mkt_lots, self.overflow_ticks)
        traded, mkt_filled, mkt_cost = lob.submit_market(book, our, jnp.maximum(mkt_lots, 1))
        temp_book = book
        book = _select(send, traded, book)
        mkt_filled = jnp.where(send, mkt_filled, 0)
        mkt_cost = jnp.where(send, mkt_cost, 0)
        forced = (state.time >= self.horizon - 1) & send
        short = jnp.where(forced, mkt_lots - mkt_filled, 0)
        mkt_cost = mkt_cost + short * (worst + sign * self.overflow_ticks)
        mkt_total = mkt_filled + short
        temp = jnp.where(kind == MARKET, self._temp(temp_book, our, mkt_total, mkt_cost), 0.0)

        # --- accounting: lots -> shares (the last lot carries the remainder), exact relative price
        n = passive_lots + mkt_total
        cost = passive_cost + mkt_cost
        fill = jnp.minimum(n.astype(jnp.float32) * lot, rem)
        m0 = ms.arrival2
        dev = jnp.where(n > 0, (2 * cost - n * m0).astype(jnp.float32)
                        / (jnp.maximum(n, 1) * m0).astype(jnp.float32), 0.0)

        # --- the book at t+1 as the agent sees it
        x, z, ls, bid, ask = book_view(book, m0, self.n_levels, lot)
        volume = jnp.sum(stats.traded).astype(jnp.float32) * lot
        lam = params.ewma_decay
        nb = ob.BookState(x=x, z=z, log_spread=ls, bid=bid, ask=ask, volume=volume, mom=state.book.mom,
                          var=state.book.var, vema=lam * state.book.vema + (1.0 - lam) * volume)
        buys, sells = stats.traded[lob.ASK], stats.traded[lob.BID]
        u = jnp.where(buys + sells > 0, (buys - sells) / jnp.maximum(buys + sells, 1), 0).astype(jnp.float32)
        rest_qty = jnp.where(still, jnp.minimum(left.astype(jnp.float32) * lot, rem - fill), 0.0)
        quote_rel = jnp.log1p((2 * order_price - m0).astype(jnp.float32) / m0.astype(jnp.float32))
        updates = dict(
            lob=MessageState(book=book, order_id=jnp.where(still, order_id, -1).astype(_I32),
                             order_price=jnp.where(still, order_price, 0).astype(_I32), arrival2=m0),
            rest_qty=rest_qty,
            rest_ahead=ahead.astype(jnp.float32) * lot,
            rest_price=jnp.where(still, quote_rel, 0.0),
            rest_kind=jnp.where(still, kind, NONE).astype(_I32),
            flow=u,
        )
        return kind, (nb, fill, dev, temp, updates)
