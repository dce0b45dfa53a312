"""A message-level limit order book in pure JAX, driven by Cont-Stoikov-Talreja order flow.

Price-time priority over a fixed price window and a fixed number of order slots per price, so every
array has a static shape and one book is a few small integer arrays that `jax.vmap` batches. After
JAX-LOB (Frey et al. 2023, "JAX-LOB: A GPU-Accelerated limit order book simulator to unlock large scale
reinforcement learning for trading"), which matches LOBSTER messages against fixed-size order tables;
the layout and the matching here are our own (below), and the order flow is the zero-intelligence
model of Cont, Stoikov and Talreja (2010), "A stochastic model for order book dynamics", Operations
Research 58(3), 549-563 ("CST").

**Layout.** `n_ticks = T` integer price ticks (a window `[base, base + T)` of absolute ticks) and
`max_orders = K` slots per tick per side. Side 0 is the bid book (buy orders rest there), side 1 the ask
book (sell orders). `qty[k, s, p]`, `oid[k, s, p]`, `owner[k, s, p]` hold the k-th order in time priority
at window tick p: the slots of a tick are kept *compacted* (orders occupy slots 0..n-1 in arrival order,
empty slots have `qty = 0`, `oid = -1`), so time priority is the slot index and the queue ahead of an
order is a cumulative sum. That is the public state (`LOBState`), the one the tests compare with the
reference.

**How a message is applied** (why it is fast under `vmap`). The matching works on a private layout
(`_Book`; `run_events` converts once per call, `event_step` and `apply_message` once per message):
everything sits on a RING over the ticks, absolute tick P at position `(P - origin) mod T`, so a window
shift moves nothing (the ticks that leave are emptied, and their positions are the ticks that enter):
the slot arrays as `[2 T, K]` rows, one per side and position, plus per-tick totals `cnt[2, T]` orders,
`tot[2, T]` lots and `ours[2, T]` our lots (and, for the `cancel_ours=False` flow only, `ocnt[2, T]` our
orders). A message changes at most ONE row of slots: a limit
remainder rests at its tick, or the one tick a match leaves partly filled is compacted, or the
cancelled order leaves its tick; the ticks a match takes whole only get `cnt = 0` (slots past `cnt` are
stale and never read). So every message is one row gathered, rewritten and scattered back (K values)
plus branch-free arithmetic on the `[2, T]` totals (rotated to window order where price order matters:
a cumulative sum over T by log2(T) shifted adds for the match, the next event's cancel tick picked in
two levels, 16 block sums of 8 rates and then one block), never a pass over all `2 T K` slots. Under
`vmap` every book still does the same work in lock step: no sort, no `while_loop`, no data-dependent
shape. On XLA:CPU the cost is now spread over ~100 small fusions per event; what was measured to matter:
a cumulative sum over the 2T cancel rates (replaced by the two levels), `jnp.stack` of per-book values
(vmap puts the batch axis second, and XLA then fuses a transpose into every consumer), and indexing a
`[T]` vector with `[T]` positions (a gather of single elements; a slice of `[x, x]` is far cheaper).
The previous dense version rewrote every `[K, 2, T]` slot array several times per message (prefix
sums as matmuls, compaction by static shifts, a gather to recentre): ~45 us of CPU time per event per
book at 4096 vmapped books (64 ticks, 8 slots) against ~3 us now (benchmarks/lob_throughput.py).
A table of `(price, time, qty, id)` rows would need an O(M^2) priority comparison or a sort per market
order, and JAX-LOB's matching `while_loop` runs to the largest iteration count in a vmapped batch.

**Messages** (`Message`, `apply_message`): LIMIT, MARKET or CANCEL. A market order of q lots on side s
(0 = buy, taking the asks) walks the opposite book from its best price: the order at window tick p,
slot k of the opposite side has `ahead = sum of opposite qty at better ticks + sum_{j<k} qty[p, j]`
lots in front of it and fills `clip(q - ahead, 0, qty)`; fully filled orders leave their tick (the
survivors shift to the front). A LIMIT order first matches like a market order restricted to prices
at least as good as its limit (a marketable limit), then rests its remainder at the back of its tick.
A CANCEL removes the whole resting order with that id. Costs are in ticks: `cost = sum fill * tick`
over the fills (absolute integer ticks; multiply by the tick size for money).

**Rejections are counted, never silent** (`state.rejected[code - 1]`, codes `REJECT_*`): a limit
remainder arriving at a tick whose K slots are full (REJECT_FULL; any part matched before is kept), a
limit price outside the window (REJECT_WINDOW; nothing happens), a cancel of an id that is not resting
(REJECT_UNKNOWN: already filled, cancelled or never accepted), and a message with `qty <= 0` or a side
other than 0/1 (REJECT_INVALID). Python values are checked when the message is built
(`submit_limit` etc. raise ValueError); traced values cannot be, and are rejected and counted.

**The window follows the mid** (`recentre`): after each background event, when the mid is more than
`T / 4` ticks from the window's centre, the window shifts by the offset (rounded down) so the mid is
central again; resting orders that fall off the window are dropped and their volume is counted in
`state.dropped` (per side) and in the event's `dropped` (our own separately in `our_dropped`).

**Order flow** (CST section 1.2; `event_step`): with best quotes `b < a` (a reference quote replaces an
empty side, see `reference_quotes`), the competing Poisson clocks are, for each side:

    limit buy at tick a - i, limit sell at tick b + i    rate lambda(i), i = 1..L
    market buy, market sell                              rate mu
    cancel of one order resting at tick p                rate theta(d) * n(p), d = distance of p from the
                                                         opposite quote (a - p for bids, p - b for asks),
                                                         d clipped to [1, L], n(p) orders resting at p

The next event is drawn from the embedded jump chain exactly: with total rate `R = 2 sum lambda + 2 mu +
sum theta n`, the event is chosen with probability rate / R (one uniform against the cumulative rates),
the cancelled order uniformly among the n(p) orders at its tick (each order cancels at rate theta
independently, as in CST), and the clock advances by an Exp(R) time. Sizes (lots): limit
`1 + Geometric` with mean `limit_size_mean`, market `1 + Geometric` with mean `market_size_mean`
(`P(size = 1 + j) = (1 - 1/m)^j / m`); CST's model has unit orders, which is the default (m = 1).

Default intensities (`cst_params`): `lambda = (1.85, 1.51, 1.09, 0.88, 0.77)`, `theta = (0.71, 0.81,
0.68, 0.56, 0.47)` for i = 1..5 and `mu = 0.94`, per unit time in units of the average limit order
size: the estimates CST report for their Tokyo Stock Exchange sample (as quoted in public
reimplementations of the model; the paper's table was not re-checked here). For `n_levels > 5`,
`lambda(i) = k / i^alpha` with CST's power-law fit `k = 1.92, alpha = 0.52`, and `theta(i) = theta(5)`
(our own illustrative choice). Orders that drift further than L ticks from the opposite quote cancel at
`theta(L)` (our choice). The window size, the slot count and the burn-in length are our own
illustrative defaults.

**Background cancellations that spare our orders** (`cancel_ours=False` of `event_step` / `run_events`,
used by the execution env): CST's flow cancels every resting order at its rate theta, ours included. With
`cancel_ours=False` the cancel clock of tick p counts only the background (owner 0) orders resting there,
`theta(d) * n0(p)` with `n0(p) = n(p) - (our orders at p)`, and the cancelled order is drawn uniformly
among those n0(p). That is still an exact embedded jump chain: it is the CST flow of the background
orders, with our orders as bystanders that leave only by trading, by our own cancel or off the window
(no event is drawn and thrown away). With no order of ours in the book the two flows are the same, event
for event.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array

__all__ = [
    "BID", "ASK", "BUY", "SELL", "LIMIT", "MARKET", "CANCEL", "OURS",
    "OK", "REJECT_FULL", "REJECT_WINDOW", "REJECT_UNKNOWN", "REJECT_INVALID",
    "LOBParams", "LOBState", "Message", "Outcome", "LOBEvent", "LOBStats",
    "cst_params", "empty_book", "init_book", "apply_message", "recentre", "reference_quotes",
    "event_rates", "event_step", "run_events",
    "submit_limit", "submit_market", "cancel",
    "best_bid", "best_ask", "mid", "depth", "queue_ahead", "resting_qty",
]

BID, ASK = 0, 1          # book sides; an order's side is the side it rests on
BUY, SELL = BID, ASK     # a buy order rests on the bid side and takes from the asks
LIMIT, MARKET, CANCEL = 0, 1, 2
OURS = 1                 # owner tag of our own orders (background flow: 0)
OK, REJECT_FULL, REJECT_WINDOW, REJECT_UNKNOWN, REJECT_INVALID = 0, 1, 2, 3, 4
N_REJECT = 4
MAX_SIZE = 1_000_000     # drawn order sizes are capped here (keeps int32 sums far from overflow)

_CST_LAMBDA = (1.85, 1.51, 1.09, 0.88, 0.77)
_CST_THETA = (0.71, 0.81, 0.68, 0.56, 0.47)
_CST_MU = 0.94
_CST_K, _CST_ALPHA = 1.92, 0.52


@struct.dataclass
class LOBParams:
    """Order-flow intensities of the CST model (float32; vmappable: every field is an array leaf).

    Attributes:
        limit_rate: `[L]` lambda(i), limit orders per unit time on EACH side at distance i = 1..L ticks
            from the opposite best quote.
        cancel_rate: `[L]` theta(i), cancellation rate of EACH order resting at distance i (clipped to
            [1, L]) from the opposite best quote.
        market_rate: `[]` mu, market orders per unit time on each side.
        limit_size_mean: `[]` mean limit-order size in lots (>= 1; 1 = unit orders).
        market_size_mean: `[]` mean market-order size in lots (>= 1).
    """

    limit_rate: Array
    cancel_rate: Array
    market_rate: Array
    limit_size_mean: Array
    market_size_mean: Array


def _static(x):
    """The Python value of `x` if it is concrete and scalar, else None (a tracer or a batch)."""
    try:
        v = float(x) if not isinstance(x, (int, bool)) else int(x)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
        return None
    return int(v) if float(v).is_integer() else v


def cst_params(n_levels: int = 5, limit_size_mean: float = 1.0, market_size_mean: float = 1.0,
               limit_rate=None, cancel_rate=None, market_rate: float = _CST_MU) -> LOBParams:
    """`LOBParams` with CST's estimates (module docstring), or the given intensities.

    Args:
        n_levels: L, the distances 1..L at which limit orders arrive (static: it sets the arrays' shape).
        limit_size_mean, market_size_mean: mean order sizes in lots (>= 1).
        limit_rate, cancel_rate: `[L]` overrides of lambda and theta (default: CST, extended by the
            power law / theta(5) beyond 5 levels).
        market_rate: mu.

    Raises:
        ValueError: for n_levels < 1, a negative or non-finite rate, a size mean below 1, or rate arrays
            of the wrong length.
    """
    if int(n_levels) != n_levels or n_levels < 1:
        raise ValueError(f"n_levels={n_levels!r}: need an integer >= 1 (limit-order distances per side)")
    n_levels = int(n_levels)
    if limit_rate is None:
        limit_rate = [_CST_LAMBDA[i] if i < 5 else _CST_K / (i + 1) ** _CST_ALPHA for i in range(n_levels)]
    if cancel_rate is None:
        cancel_rate = [_CST_THETA[min(i, 4)] for i in range(n_levels)]
    arrays = {"limit_rate": np.asarray(limit_rate, np.float32), "cancel_rate": np.asarray(cancel_rate, np.float32)}
    for name, arr in arrays.items():
        if arr.shape != (n_levels,):
            raise ValueError(f"{name} has shape {arr.shape}: give {n_levels} rates (one per distance 1..{n_levels})")
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{name}={arr.tolist()}: rates must be finite and >= 0")
    if not np.isfinite(market_rate) or market_rate < 0:
        raise ValueError(f"market_rate={market_rate!r}: must be finite and >= 0")
    if arrays["limit_rate"].sum() <= 0:
        raise ValueError("limit_rate is all zero: the book would only drain; give some positive limit rates")
    for name, m in (("limit_size_mean", limit_size_mean), ("market_size_mean", market_size_mean)):
        if not np.isfinite(m) or m < 1:
            raise ValueError(f"{name}={m!r}: sizes are 1 + geometric lots, so the mean must be >= 1")
    return LOBParams(limit_rate=jnp.asarray(arrays["limit_rate"]), cancel_rate=jnp.asarray(arrays["cancel_rate"]),
                     market_rate=jnp.float32(market_rate), limit_size_mean=jnp.float32(limit_size_mean),
                     market_size_mean=jnp.float32(market_size_mean))


class LOBState(NamedTuple):
    """One book (add a leading batch axis with `vmap`). T = n_ticks, K = max_orders.

    Attributes:
        qty: int32 `[K, 2, T]` resting lots of slot k, side s (0 bids, 1 asks), window tick p (absolute
            tick `base + p`); within a tick, slot order is time priority (compacted, empty slots last, qty 0).
        oid: int32 `[K, 2, T]` order ids (-1 for an empty slot).
        owner: int32 `[K, 2, T]` owner tags (`OURS` = 1 for our orders, 0 background).
        base: int32 `[]` absolute tick of window tick 0.
        next_id: int32 `[]` id of the next limit message (every limit message consumes one).
        time: float32 `[]` event clock (sum of the Exp(R) inter-event times of `event_step`).
        rejected: int32 `[4]` rejected messages since the book was made, by code - 1 (FULL, WINDOW,
            UNKNOWN, INVALID).
        dropped: int32 `[2]` lots dropped off the window by `recentre` since the book was made, per side.
    """

    qty: Array
    oid: Array
    owner: Array
    base: Array
    next_id: Array
    time: Array
    rejected: Array
    dropped: Array


class Message(NamedTuple):
    """One order message (int32 scalars, or `[B]` under vmap).

    Attributes:
        kind: LIMIT, MARKET or CANCEL.  side: 0 buy / 1 sell (ignored for CANCEL).
        price: absolute limit tick (LIMIT only).  qty: lots (LIMIT, MARKET).
        owner: owner tag of a new order.  order_id: id to cancel (CANCEL only).
    """

    kind: Array
    side: Array
    price: Array
    qty: Array
    owner: Array
    order_id: Array


class Outcome(NamedTuple):
    """What one message did (int32).

    Attributes:
        status: OK or a REJECT_* code.
        order_id: the id given to a LIMIT message if accepted, the cancelled id for CANCEL, else -1.
        filled: lots the incoming order executed;  cost: `sum fill * tick` of those executions.
        traded: `[2]` lots executed out of each book side (the passive side; `traded[1 - side] == filled`).
        added: `[2]` lots that came to rest;  cancelled: `[2]` lots cancelled, per side.
        our_filled, our_cost: `[2]` lots of OUR resting orders executed, and their `sum fill * tick`, per
            side of our order (bid fills are our buys).
    """

    status: Array
    order_id: Array
    filled: Array
    cost: Array
    traded: Array
    added: Array
    cancelled: Array
    our_filled: Array
    our_cost: Array


class LOBEvent(NamedTuple):
    """One background event of `event_step`: the message, what it did, and the window shift after it.

    Attributes:
        message: the `Message` (order_id: the cancelled order's id for CANCEL).
        outcome: its `Outcome` (for LIMIT, `outcome.order_id` is the new order's id).
        shift: int32, ticks the window moved after the event (`recentre`; usually 0).
        dropped, our_dropped: int32 `[2]` lots dropped off the window by that shift, all / ours.
        rate: float32 total event rate R before the event;  dt: float32 Exp(R) time to the event.
    """

    message: Message
    outcome: Outcome
    shift: Array
    dropped: Array
    our_dropped: Array
    rate: Array
    dt: Array


class LOBStats(NamedTuple):
    """Totals over the events of one `run_events` call (int32 unless stated).

    Attributes:
        events: `[3, 2]` events by kind (LIMIT, MARKET, CANCEL) and side (0 buy/bid, 1 sell/ask).
        traded: `[2]` lots executed out of each book side (traded[1]: market buys lifting asks).
        added, cancelled, dropped: `[2]` lots that came to rest / were cancelled / fell off the window.
        our_filled, our_cost: `[2]` lots of our resting orders executed and their `sum fill * tick`.
        our_dropped: `[2]` lots of our orders that fell off the window.
        rejected: `[4]` rejected messages by code - 1.
        elapsed: float32, event-clock time the events took.
    """

    events: Array
    traded: Array
    added: Array
    cancelled: Array
    dropped: Array
    our_filled: Array
    our_cost: Array
    our_dropped: Array
    rejected: Array
    elapsed: Array


# ----------------------------------------------------------------------------------------------- building
def _check_shape(n_ticks, max_orders) -> tuple[int, int]:
    if isinstance(n_ticks, bool) or int(n_ticks) != n_ticks or n_ticks < 2:
        raise ValueError(f"n_ticks={n_ticks!r}: need an integer >= 2 (price ticks in the window)")
    if isinstance(max_orders, bool) or int(max_orders) != max_orders or max_orders < 1:
        raise ValueError(f"max_orders={max_orders!r}: need an integer >= 1 (order slots per tick per side)")
    return int(n_ticks), int(max_orders)


def empty_book(n_ticks: int = 64, max_orders: int = 8, base: int = 0) -> LOBState:
    """An empty book whose window covers absolute ticks `[base, base + n_ticks)`.

    Raises:
        ValueError: n_ticks < 2 or max_orders < 1.
    """
    t, k = _check_shape(n_ticks, max_orders)
    return LOBState(qty=jnp.zeros((k, 2, t), jnp.int32), oid=jnp.full((k, 2, t), -1, jnp.int32),
                    owner=jnp.zeros((k, 2, t), jnp.int32), base=jnp.asarray(base, jnp.int32),
                    next_id=jnp.int32(0), time=jnp.float32(0.0), rejected=jnp.zeros(N_REJECT, jnp.int32),
                    dropped=jnp.zeros(2, jnp.int32))


def init_book(key: Array, params: LOBParams, n_ticks: int = 64, max_orders: int = 8, burn_in: int = 500,
              price0: int = 1000) -> LOBState:
    """A stationary-ish book: a deterministic profile, then `burn_in` background events.

    The profile puts, at distance i = 1..L from the opposite quote, `clip(round(lambda_i / theta_i), 1, K)`
    unit orders per side (the mean of an M/M/inf queue with arrival lambda_i and per-order cancel rate
    theta_i, ignoring market orders), with best bid `price0 - 1` and best ask `price0` (mid price0 - 0.5,
    the window centred on price0). The event clock is reset to 0 after the burn-in; the rejection and
    drop counters keep what the burn-in did.

    Args:
        key: PRNG key for the burn-in.  params: `LOBParams` (L = len(limit_rate), static).
        n_ticks: T >= 2 L (static).  max_orders: K (static).  burn_in: events (static, >= 0).
        price0: absolute tick of the initial best ask (static).

    Raises:
        ValueError: a shape too small for the flow, or a negative burn_in.
    """
    t, k = _check_shape(n_ticks, max_orders)
    n_levels = params.limit_rate.shape[-1]
    if t < 2 * n_levels:
        raise ValueError(f"n_ticks={t} is too small for {n_levels} limit-order distances per side: "
                         f"use n_ticks >= {2 * n_levels}")
    if int(burn_in) != burn_in or burn_in < 0:
        raise ValueError(f"burn_in={burn_in!r}: need an integer >= 0 (background events before the start)")
    centre = t // 2
    state = empty_book(t, k, int(price0) - centre)
    counts = jnp.clip(jnp.round(params.limit_rate / jnp.maximum(params.cancel_rate, 1e-6)), 1, k).astype(jnp.int32)
    i = jnp.arange(n_levels)
    slot = jnp.arange(k)
    # bids at window ticks centre-1-i, asks at centre+i (i = 0..L-1)
    bid_n = jnp.zeros(t, jnp.int32).at[centre - 1 - i].set(counts)
    ask_n = jnp.zeros(t, jnp.int32).at[centre + i].set(counts)
    n = jnp.stack([bid_n, ask_n])                                         # [2, T]
    present = slot[:, None, None] < n[None]                               # [K, 2, T]
    ids = jnp.cumsum(present.reshape(-1)).reshape(present.shape) - 1
    state = state._replace(qty=present.astype(jnp.int32), oid=jnp.where(present, ids, -1).astype(jnp.int32),
                           next_id=jnp.sum(present).astype(jnp.int32))
    if burn_in:
        state, _ = run_events(state, key, params, int(burn_in))
    return state._replace(time=jnp.float32(0.0))


# ----------------------------------------------------------------------------------------------- the working book
class _Book(NamedTuple):
    """The layout the matching works on (private; `LOBState` is the public one). T = n_ticks, K = max_orders.

    Everything is on a ring over the ticks, so a window shift moves nothing: absolute tick P is at ring
    position `i = (P - origin) mod T` (`origin`: the window's first tick when the state was converted, so
    converting in needs no rotation; window tick p is at `(p + r) mod T`, `r = (base - origin) mod T`).
    The slot arrays are `[2 T, K]`, row `s T + i` the orders of side s at ring position i, slots in time
    priority; only the first `cnt` slots of a row are meaningful (the others hold stale values that
    nothing reads). The per-tick totals `cnt[s, i]`, `tot[s, i]`, `ours[s, i]` are the orders, lots and
    our lots at ring position i. `ocnt[s, i]`, OUR orders at ring position i, is kept only where the flow
    needs it (`cancel_ours=False`); elsewhere it is None (an empty pytree: nothing to compute or carry).
    """

    qty: Array
    oid: Array
    own: Array
    cnt: Array
    tot: Array
    ours: Array
    origin: Array
    base: Array
    next_id: Array
    time: Array
    rejected: Array
    dropped: Array
    ocnt: Array | None = None


def _to_book(state: LOBState, count_ours: bool = False) -> _Book:
    """`LOBState` -> `_Book` (a transpose of the slot arrays: origin = base, the ring starts at the window);
    with `count_ours`, also the per-tick count of our orders `ocnt`."""
    k, _, t = state.qty.shape

    def ring(x):                                   # [K, 2, T] -> [2 T, K], row s T + p
        return jnp.transpose(x, (1, 2, 0)).reshape(2 * t, k)

    live = state.qty > 0
    return _Book(qty=ring(state.qty), oid=ring(state.oid), own=ring(state.owner),
                 cnt=jnp.sum(live, 0).astype(jnp.int32), tot=jnp.sum(state.qty, 0),
                 ours=jnp.sum(jnp.where(state.owner == OURS, state.qty, 0), 0), origin=state.base, base=state.base,
                 next_id=state.next_id, time=state.time, rejected=state.rejected, dropped=state.dropped,
                 ocnt=jnp.sum(live & (state.owner == OURS), 0).astype(jnp.int32) if count_ours else None)


def _from_book(book: _Book) -> LOBState:
    """`_Book` -> `LOBState` (empty slots: qty 0, oid -1, owner 0)."""
    k = book.qty.shape[1]
    t = book.cnt.shape[1]
    r = jnp.remainder(book.base - book.origin, t)
    live = jnp.arange(k, dtype=jnp.int32)[:, None, None] < jnp.roll(book.cnt, -r, axis=1)[None]

    def window(x, fill):
        x = jnp.transpose(jnp.roll(x.reshape(2, t, k), -r, axis=1), (2, 0, 1))
        return jnp.where(live, x, fill)

    return LOBState(qty=window(book.qty, 0), oid=window(book.oid, -1), owner=window(book.own, 0), base=book.base,
                    next_id=book.next_id, time=book.time, rejected=book.rejected, dropped=book.dropped)


def _inclusive_cumsum(x: Array) -> Array:
    """Inclusive prefix sum along the last axis by log2(n) shifted adds (a cumulative sum along a short
    minor axis is slow on XLA:CPU under vmap)."""
    n = x.shape[-1]
    d = 1
    while d < n:
        pad = jnp.zeros(x.shape[:-1] + (d,), x.dtype)
        x = x + jnp.concatenate([pad, x[..., :n - d]], -1)
        d *= 2
    return x


def _blocks(rates: Array, block: int = 8) -> tuple[Array, Array, Array]:
    """float32 `rates[N]` as `[N / block, block]` blocks (zero-padded), their sums and the inclusive
    cumulative sums of those (the first level of `_pick`)."""
    n = rates.shape[-1]
    nb = -(-n // block)
    r = jnp.concatenate([rates, jnp.zeros(nb * block - n, rates.dtype)]).reshape(nb, block)
    bsum = jnp.sum(r, 1)
    return r, bsum, _inclusive_cumsum(bsum)


def _pick(r: Array, bsum: Array, bcum: Array, x: Array) -> Array:
    """The first i with a positive rate whose cumulative rate `sum_{j <= i} rates[j]` exceeds x (the last
    positive one if none does, rounding; 0 if all are 0), from `_blocks(rates)`.

    Two levels, the block then the slot in it, instead of a cumulative sum over all N rates (on XLA:CPU
    under vmap the shifted adds of a cumulative sum over 2 T = 128 rates cost more than all the rest of
    an event)."""
    nb, block = r.shape
    nbs = jnp.arange(nb)
    last_b = jnp.max(jnp.where(bsum > 0, nbs, 0))
    b = jnp.min(jnp.where((bcum > x) & (bsum > 0), nbs, nb))
    b = jnp.where(b < nb, b, last_b)
    row = jnp.sum(jnp.where((nbs == b)[:, None], r, 0), 0)                 # [block]
    x2 = x - jnp.sum(jnp.where(nbs < b, bsum, 0))
    cum = _inclusive_cumsum(row)
    ks = jnp.arange(block)
    last_k = jnp.max(jnp.where(row > 0, ks, 0))
    k = jnp.min(jnp.where((cum > x2) & (row > 0), ks, block))
    return b * block + jnp.where(k < block, k, last_k)


def _ring(book: _Book) -> tuple[Array, Array]:
    """(r, p): the ring position of window tick 0, and int32 `[T]` the window tick at each ring position."""
    t = book.cnt.shape[1]
    r = jnp.remainder(book.base - book.origin, t)
    i = jnp.arange(t, dtype=jnp.int32)
    return r, jnp.where(i >= r, i - r, i - r + t)


def _rotate(x: Array, start: Array) -> Array:
    """`y[..., j] = x[..., (j + start) mod T]` for start in [0, T): a slice of `[x, x]` (under vmap a gather
    of whole rows; indexing with `[T]` positions becomes a gather of single elements, much slower)."""
    t = x.shape[-1]
    return jax.lax.dynamic_slice_in_dim(jnp.concatenate([x, x], -1), start, t, x.ndim - 1)


def _ring_pos(r: Array, p: Array, t: int) -> Array:
    """Ring position of window tick p in [0, T)."""
    return jnp.where(p + r < t, p + r, p + r - t)


def _book_quotes(book: _Book) -> tuple[Array, Array]:
    """`reference_quotes` of a `_Book`."""
    t = book.cnt.shape[1]
    p = _ring(book)[1]
    live = book.cnt > 0
    has_b, has_a = jnp.any(live[0]), jnp.any(live[1])
    bb = book.base + jnp.max(jnp.where(live[0], p, -1))
    ba = book.base + jnp.min(jnp.where(live[1], p, t))
    centre = book.base + t // 2
    rb = jnp.where(has_b, bb, jnp.where(has_a, ba - 1, centre))
    ra = jnp.where(has_a, ba, jnp.where(has_b, bb + 1, centre + 1))
    return rb, ra


def _apply(book: _Book, kind, side, price, q, owner, found, c_side, c_tick, c_slot, target) -> tuple[_Book, Outcome]:
    """`apply_message` on a `_Book`. A CANCEL's order is located by the caller: `found` (bool), its side,
    window tick and slot, and its id `target`.

    At most one row of slots changes: a LIMIT remainder comes to rest at its tick, or the one tick that
    a match leaves partly filled is compacted, or the cancelled order leaves its tick (the ticks a
    match empties only get `cnt = 0`). Everything else is arithmetic on the `[2, T]` totals."""
    k = book.qty.shape[1]
    t = book.cnt.shape[1]
    i32 = jnp.int32
    sides = jnp.arange(2, dtype=i32)
    ticks = jnp.arange(t, dtype=i32)
    slots = jnp.arange(k, dtype=i32)
    prices = book.base + ticks
    r, p_ring = _ring(book)

    is_limit, is_market, is_cancel = kind == LIMIT, kind == MARKET, kind == CANCEL
    side_ok = (side == BID) | (side == ASK)
    valid = is_cancel | ((is_limit | is_market) & side_ok & (q > 0))
    pw = price - book.base
    in_window = (pw >= 0) & (pw < t)
    limit_ok = valid & is_limit & in_window
    do_match = valid & is_market | limit_ok
    s = jnp.clip(side, 0, 1)
    opp = 1 - s
    pw_c = jnp.clip(pw, 0, t - 1)

    # --- match against the opposite side, tick by tick (window order, [T])
    reach = is_market | jnp.where(s == BUY, ticks <= pw, ticks >= pw)
    row = jnp.where(reach & do_match, _rotate(jnp.where(opp == ASK, book.tot[1], book.tot[0]), r), 0)
    incl = _inclusive_cumsum(row)
    ahead = jnp.where(opp == ASK, incl - row, incl[-1] - incl)          # lots at better ticks
    q_match = jnp.where(do_match, q, 0)
    fill_row = jnp.clip(q_match - ahead, 0, row)                          # [T] lots taken at each tick
    emptied = (fill_row == row) & (row > 0)
    partial = (fill_row > 0) & (fill_row < row)                           # at most one tick
    is_partial = jnp.any(partial)
    p_part = jnp.sum(jnp.where(partial, ticks, 0))
    f_part = jnp.sum(jnp.where(partial, fill_row, 0))
    filled = jnp.sum(fill_row)
    cost = jnp.sum(fill_row * prices)
    ours_row = jnp.where(opp == ASK, book.ours[1], book.ours[0])
    emptied_ring = _rotate(emptied, jnp.where(r > 0, t - r, 0))
    ours_emptied = jnp.where(emptied_ring, ours_row, 0)

    # --- where a limit remainder would rest
    rem = q - filled
    cnt_side = jnp.where(s == ASK, book.cnt[1], book.cnt[0])
    n_at = jnp.sum(jnp.where(ticks == _ring_pos(r, pw_c, t), cnt_side, 0))
    rest = limit_ok & (rem > 0)
    room = n_at < k
    insert = rest & room
    cancel_now = is_cancel & found

    # --- the one row that changes
    r_side = jnp.where(cancel_now, c_side, jnp.where(is_partial, opp, s))
    r_tick = jnp.where(cancel_now, c_tick, jnp.where(is_partial, p_part, pw_c))
    r_pos = _ring_pos(r, r_tick, t)
    row_at = (sides == r_side)[:, None] & (ticks == r_pos)[None, :]                               # [2, T] ring
    n = jnp.sum(jnp.where(row_at, book.cnt, 0))
    ridx = r_side * t + r_pos
    cq, co, cw = book.qty[ridx], book.oid[ridx], book.own[ridx]                                   # [K]
    live = slots < n
    cq = jnp.where(live, cq, 0)
    before = _inclusive_cumsum(cq) - cq
    fill = jnp.where(is_partial, jnp.clip(f_part - before, 0, cq), 0)
    n_full = jnp.sum((fill > 0) & (fill == cq))
    gone = cancel_now & (slots == c_slot)
    src = jnp.minimum(slots + n_full + (cancel_now & (slots >= c_slot)).astype(i32), k - 1)
    left = cq - fill
    nq, no, nw = left[src], co[src], cw[src]
    n_new = n - n_full - cancel_now.astype(i32)
    put = insert & (slots == n_new)
    nq = jnp.where(put, rem, nq)
    no = jnp.where(put, book.next_id, no)
    nw = jnp.where(put, owner, nw)
    n_new = n_new + insert.astype(i32)
    live_new = slots < n_new
    row_tot = jnp.sum(jnp.where(live_new, nq, 0))
    row_ours = jnp.sum(jnp.where(live_new & (nw == OURS), nq, 0))
    our_part = jnp.sum(jnp.where(cw == OURS, fill, 0))
    cancelled_lots = jnp.sum(jnp.where(gone, cq, 0))

    emptied2 = (sides == opp)[:, None] & emptied_ring[None, :]                                    # [2, T] ring
    cnt = jnp.where(row_at, n_new, jnp.where(emptied2, 0, book.cnt))
    tot = jnp.where(row_at, row_tot, jnp.where(emptied2, 0, book.tot))
    ours = jnp.where(row_at, row_ours, jnp.where(emptied2, 0, book.ours))
    ocnt = book.ocnt
    if ocnt is not None:
        row_ocnt = jnp.sum(live_new & (nw == OURS)).astype(i32)
        ocnt = jnp.where(row_at, row_ocnt, jnp.where(emptied2, 0, ocnt))

    status = jnp.where(~valid, REJECT_INVALID,
                       jnp.where(is_limit & ~in_window, REJECT_WINDOW,
                                 jnp.where(is_cancel & ~found, REJECT_UNKNOWN,
                                           jnp.where(rest & ~room, REJECT_FULL, OK)))).astype(i32)
    order_id = jnp.where(is_limit & (status == OK), book.next_id, jnp.where(cancel_now, target, -1))
    our_filled = jnp.sum(ours_emptied) + our_part
    our_cost = jnp.sum(ours_emptied * (book.base + p_ring)) + our_part * (book.base + p_part)
    book = book._replace(qty=book.qty.at[ridx].set(nq), oid=book.oid.at[ridx].set(no),
                         own=book.own.at[ridx].set(nw), cnt=cnt, tot=tot, ours=ours, ocnt=ocnt,
                         next_id=book.next_id + is_limit.astype(i32),
                         rejected=book.rejected + (jnp.arange(1, N_REJECT + 1) == status).astype(i32))
    at_opp = (sides == opp).astype(i32)
    out = Outcome(status=status, order_id=order_id.astype(i32), filled=filled, cost=cost, traded=at_opp * filled,
                  added=jnp.where((sides == s) & insert, rem, 0).astype(i32),
                  cancelled=jnp.where(sides == c_side, cancelled_lots, 0).astype(i32),
                  our_filled=at_opp * our_filled, our_cost=at_opp * our_cost)
    return book, out


def _recentre(book: _Book) -> tuple[_Book, Array, Array, Array]:
    """`recentre` on a `_Book`: nothing moves (everything is on the ring); the ticks that leave the window
    are emptied and their ring positions become the ticks that enter."""
    t = book.cnt.shape[1]
    rb, ra = _book_quotes(book)
    off2 = rb + ra - 2 * book.base - t
    d = jnp.where(jnp.abs(off2) * 2 > t, jnp.floor_divide(off2, 2), 0).astype(jnp.int32)
    p = _ring(book)[1]
    leaves = ((p < d) | (p >= t + d))[None, :]        # old window ticks outside the new window, [1, T] ring
    dropped = jnp.sum(jnp.where(leaves, book.tot, 0), 1)
    our_dropped = jnp.sum(jnp.where(leaves, book.ours, 0), 1)
    book = book._replace(cnt=jnp.where(leaves, 0, book.cnt), tot=jnp.where(leaves, 0, book.tot),
                         ours=jnp.where(leaves, 0, book.ours), base=book.base + d, dropped=book.dropped + dropped,
                         ocnt=None if book.ocnt is None else jnp.where(leaves, 0, book.ocnt))
    return book, d, dropped, our_dropped


def _find(state: LOBState, order_id) -> tuple[Array, Array, Array, Array]:
    """(found, side, window tick, slot) of the resting order `order_id` in a `LOBState`."""
    k, _, t = state.qty.shape
    mask = (state.oid == order_id) & (state.qty > 0)
    i32 = jnp.int32

    def pick(a):                                   # ids are unique: at most one slot matches
        return jnp.sum(jnp.where(mask, a, 0)).astype(i32)

    return (jnp.any(mask), pick(jnp.arange(2, dtype=i32)[None, :, None]), pick(jnp.arange(t, dtype=i32)[None, None, :]),
            pick(jnp.arange(k, dtype=i32)[:, None, None]))


# ----------------------------------------------------------------------------------------------- matching
def apply_message(state: LOBState, msg: Message) -> tuple[LOBState, Outcome]:
    """Apply one message with price-time priority (module docstring); jittable, no branches.

    Args:
        state: one book.  msg: one `Message` (int32 scalars).

    Returns:
        `(state, outcome)`; a rejected message changes only `state.rejected` (and `next_id` for LIMIT),
        except a limit whose remainder finds its tick full: its matched part stands.
    """
    kind, side, price, q, owner, target = (jnp.asarray(x, jnp.int32) for x in msg)
    found, c_side, c_tick, c_slot = _find(state, target)
    book, out = _apply(_to_book(state), kind, side, price, q, owner, found & (kind == CANCEL), c_side, c_tick,
                       c_slot, target)
    return _from_book(book), out



def _before_in_tick(qty: Array) -> Array:
    """Exclusive prefix sum along the slot axis 0: lots ahead of each slot within its tick."""
    acc = jnp.zeros_like(qty[0])
    rows = []
    for j in range(qty.shape[0]):
        rows.append(acc)
        acc = acc + qty[j]
    return jnp.stack(rows)


def _best(state: LOBState) -> tuple[Array, Array, Array, Array]:
    """(best bid tick, best ask tick, bid side nonempty, ask side nonempty); base-1 / base+T when empty."""
    t = state.qty.shape[2]
    prices = state.base + jnp.arange(t, dtype=jnp.int32)
    live = jnp.any(state.qty > 0, 0)                                     # [2, T]
    bb = jnp.max(jnp.where(live[0], prices, state.base - 1))
    ba = jnp.min(jnp.where(live[1], prices, state.base + t))
    return bb, ba, jnp.any(live[0]), jnp.any(live[1])


def reference_quotes(state: LOBState) -> tuple[Array, Array]:
    """The quotes the order flow and `mid` use: the best bid and ask, or, for an empty side, one tick
    beyond the other side's best (both empty: bid = centre tick `base + T // 2`, ask = bid + 1). int32."""
    t = state.qty.shape[2]
    bb, ba, has_b, has_a = _best(state)
    centre = state.base + t // 2
    rb = jnp.where(has_b, bb, jnp.where(has_a, ba - 1, centre))
    ra = jnp.where(has_a, ba, jnp.where(has_b, bb + 1, centre + 1))
    return rb, ra




def recentre(state: LOBState) -> tuple[LOBState, Array, Array, Array]:
    """Shift the window when the mid is more than T/4 ticks from its centre.

    With `m2 = rb + ra` (twice the reference mid) and `c2 = 2 base + T` (twice the centre), the shift is
    `d = floor((m2 - c2) / 2)` when `|m2 - c2| > T / 2`, else 0; window tick p then holds old tick p + d.

    Returns:
        `(state, d, dropped[2], our_dropped[2])`: lots that fell off the window, all and ours, per side
        (also added to `state.dropped`).
    """
    book, d, dropped, our_dropped = _recentre(_to_book(state))
    return _from_book(book), d, dropped, our_dropped


# ----------------------------------------------------------------------------------------------- order flow
def _check_cancel_ours(cancel_ours) -> bool:
    if not isinstance(cancel_ours, (bool, np.bool_)):
        raise ValueError(f"cancel_ours={cancel_ours!r}: need a Python bool (static: it selects the compiled flow; "
                         "pass it as a static argument under jit)")
    return bool(cancel_ours)


def event_rates(state: LOBState, params: LOBParams, *, cancel_ours: bool = True) -> Array:
    """The competing Poisson rates of the next event, float32 `[2 L + 2 + 2 T]`:
    `[limit buy at a - i (i = 1..L), limit sell at b + i, market buy, market sell, cancel at bid tick p
    (p = 0..T-1), cancel at ask tick p]` (module docstring). With `cancel_ours=False` the cancel rate of a
    tick counts only its background orders (`theta(d) n0(p)`)."""
    cancel_ours = _check_cancel_ours(cancel_ours)
    book = _to_book(state, not cancel_ours)
    return jnp.concatenate([params.limit_rate, params.limit_rate, jnp.broadcast_to(params.market_rate, (2,)),
                            _cancel_rates(book, params, *_book_quotes(book)).reshape(-1)]).astype(jnp.float32)


def _cancellable(book: _Book) -> Array:
    """int32 `[2, T]` orders the background may cancel at each ring position: all of them, or only the
    background's own (`cnt - ocnt`) when the book counts ours (`cancel_ours=False`)."""
    return book.cnt if book.ocnt is None else book.cnt - book.ocnt


def _cancel_rates(book: _Book, params: LOBParams, rb: Array, ra: Array) -> Array:
    """float32 `[2, T]` cancellation rates theta(d) n(p) at the ring positions (window order right after
    `_to_book`, where the ring starts at the window); n(p) = `_cancellable(book)`."""
    n_levels = params.limit_rate.shape[-1]
    prices = book.base + _ring(book)[1]
    bid = (jnp.arange(2) == BID)[:, None]
    dist = jnp.clip(jnp.where(bid, ra - prices, prices - rb), 1, n_levels)  # [2, T]
    theta = jnp.broadcast_to(params.cancel_rate[n_levels - 1], dist.shape).astype(jnp.float32)
    for i in range(n_levels - 1):                  # L selects instead of a gather with [2, T] indices
        theta = jnp.where(dist == i + 1, params.cancel_rate[i], theta)
    return theta * _cancellable(book).astype(jnp.float32)


def _geometric_size(u: Array, mean: Array) -> Array:
    """1 + Geometric with the given mean >= 1 from a uniform u in [0, 1): `1 + floor(log(1-u) / log(1 - 1/m))`."""
    extra = jnp.floor(jnp.log1p(-u) / jnp.log1p(-1.0 / mean))
    return (1 + jnp.clip(jnp.nan_to_num(extra, nan=0.0), 0, MAX_SIZE - 1)).astype(jnp.int32)


def _event(book: _Book, u: Array, params: LOBParams) -> tuple[_Book, LOBEvent]:
    """`event_step` on a `_Book`; a book that carries `ocnt` runs the `cancel_ours=False` flow (the
    cancelled order is drawn among the background orders of its tick only)."""
    t = book.cnt.shape[1]
    n_levels = params.limit_rate.shape[-1]
    i32 = jnp.int32
    rb, ra = _book_quotes(book)
    flow = jnp.concatenate([params.limit_rate, params.limit_rate,
                            jnp.broadcast_to(params.market_rate, (2,))]).astype(jnp.float32)     # [2 L + 2]
    n_flow = flow.shape[0]
    r, _ = _ring(book)
    cancel = _rotate(_cancel_rates(book, params, rb, ra), r).reshape(-1)            # [2 T] window order
    cum_flow = jnp.cumsum(flow)
    blocks = _blocks(cancel)
    cancel_total = blocks[2][-1]
    total = cum_flow[-1] + cancel_total
    x = u[0] * total
    i_cancel = _pick(*blocks, x - cum_flow[-1])
    # the first event with a positive rate whose cumulative rate exceeds x (embedded jump chain); rounding
    # can put x past the last one, then the last event with a positive rate is taken
    i_flow = jnp.min(jnp.where((cum_flow > x) & (flow > 0), jnp.arange(n_flow), n_flow))
    last_flow = jnp.max(jnp.where(flow > 0, jnp.arange(n_flow), 0))
    idx = jnp.where(i_flow < n_flow, i_flow, jnp.where(cancel_total > 0, n_flow + i_cancel, last_flow)).astype(i32)

    is_limit = idx < 2 * n_levels
    is_market = (idx >= 2 * n_levels) & (idx < n_flow)
    lim_side = (idx >= n_levels).astype(i32)
    dist = jnp.where(lim_side == BID, idx, idx - n_levels) + 1
    lim_price = jnp.where(lim_side == BID, ra - dist, rb + dist)
    c = jnp.maximum(idx - n_flow, 0)
    c_side, c_tick = c // t, c % t
    c_pos = _ring_pos(r, c_tick, t)
    at = (jnp.arange(2)[:, None] == c_side) & (jnp.arange(t)[None, :] == c_pos)
    n_at = jnp.sum(jnp.where(at, _cancellable(book), 0))
    slot = jnp.minimum(jnp.floor(u[1] * n_at).astype(i32), jnp.maximum(n_at - 1, 0))
    c_row = c_side * t + c_pos
    if book.ocnt is not None:            # the slot-th BACKGROUND order of the tick, in time priority
        slots = jnp.arange(book.qty.shape[1], dtype=i32)
        bg = ((slots < jnp.sum(jnp.where(at, book.cnt, 0))) & (book.own[c_row] != OURS)).astype(i32)
        rank = _inclusive_cumsum(bg) - bg
        slot = jnp.sum(jnp.where((bg > 0) & (rank == slot), slots, 0))
    target = book.oid[c_row, slot]

    kind = jnp.where(is_limit, LIMIT, jnp.where(is_market, MARKET, CANCEL)).astype(i32)
    side = jnp.where(is_limit, lim_side, jnp.where(is_market, idx - 2 * n_levels, c_side)).astype(i32)
    size = jnp.where(is_limit, _geometric_size(u[2], params.limit_size_mean),
                     _geometric_size(u[2], params.market_size_mean))
    is_cancel = kind == CANCEL
    msg = Message(kind=kind, side=side, price=jnp.where(is_limit, lim_price, 0).astype(i32),
                  qty=jnp.where(is_cancel, 0, size).astype(i32), owner=i32(0),
                  order_id=jnp.where(is_cancel, target, -1).astype(i32))
    book, out = _apply(book, msg.kind, msg.side, msg.price, msg.qty, msg.owner, is_cancel & (n_at > 0), c_side,
                       c_tick, slot, target)
    book, shift, dropped, our_dropped = _recentre(book)
    dt = -jnp.log1p(-u[3]) / total
    book = book._replace(time=book.time + dt)
    return book, LOBEvent(message=msg, outcome=out, shift=shift, dropped=dropped, our_dropped=our_dropped,
                          rate=total, dt=dt)


def event_step(state: LOBState, u: Array, params: LOBParams, *, cancel_ours: bool = True
               ) -> tuple[LOBState, LOBEvent]:
    """One background event of the CST flow, then `recentre`.

    Args:
        state: one book.  u: float32 `[4]` uniforms on [0, 1): event choice, cancelled slot, size, time.
        params: `LOBParams`.
        cancel_ours: static. True (CST as written): every resting order cancels at its rate theta, ours
            included. False: only background (owner 0) orders do; ours never leave by cancellation (the
            cancelled order is the `floor(u[1] n0)`-th background order of its tick, n0 of them).

    Returns:
        `(state, event)`; replaying `event.message` with `apply_message` and then shifting the window by
        `event.shift` reproduces the step (the NumPy reference does exactly that).
    """
    cancel_ours = _check_cancel_ours(cancel_ours)
    book, ev = _event(_to_book(state, not cancel_ours), u, params)
    return _from_book(book), ev


def _zero_stats() -> LOBStats:
    z2 = jnp.zeros(2, jnp.int32)
    return LOBStats(events=jnp.zeros((3, 2), jnp.int32), traded=z2, added=z2, cancelled=z2, dropped=z2,
                    our_filled=z2, our_cost=z2, our_dropped=z2, rejected=jnp.zeros(N_REJECT, jnp.int32),
                    elapsed=jnp.float32(0.0))


def _accumulate(stats: LOBStats, ev: LOBEvent) -> LOBStats:
    m, o = ev.message, ev.outcome
    onehot = ((jnp.arange(3) == m.kind)[:, None] & (jnp.arange(2) == m.side)[None, :]).astype(jnp.int32)
    return LOBStats(events=stats.events + onehot, traded=stats.traded + o.traded, added=stats.added + o.added,
                    cancelled=stats.cancelled + o.cancelled, dropped=stats.dropped + ev.dropped,
                    our_filled=stats.our_filled + o.our_filled, our_cost=stats.our_cost + o.our_cost,
                    our_dropped=stats.our_dropped + ev.our_dropped,
                    rejected=stats.rejected + (jnp.arange(1, N_REJECT + 1) == o.status).astype(jnp.int32),
                    elapsed=stats.elapsed + ev.dt)


def run_events(state: LOBState, key: Array, params: LOBParams, n_events: int, *, cancel_ours: bool = True
               ) -> tuple[LOBState, LOBStats]:
    """`n_events` background events (a `lax.scan` of `event_step`); jittable, vmap over `(state, key)`.

    Args:
        state: one book.  key: PRNG key (the `[n_events, 4]` uniforms are drawn from it up front).
        params: `LOBParams`.  n_events: static count >= 0.
        cancel_ours: static; False: background cancellations take only background orders (`event_step`).
            With no order of ours in the book both settings give the same events and book, bit for bit.

    Returns:
        `(state, stats)`: `LOBStats` totals over the events.
    """
    if int(n_events) != n_events or n_events < 0:
        raise ValueError(f"n_events={n_events!r}: need an integer >= 0 (a static event count)")
    cancel_ours = _check_cancel_ours(cancel_ours)
    u = jax.random.uniform(key, (int(n_events), 4), jnp.float32)

    def body(carry, u_i):
        bk, stats = carry
        bk, ev = _event(bk, u_i, params)
        return (bk, _accumulate(stats, ev)), None

    (book, stats), _ = jax.lax.scan(body, (_to_book(state, not cancel_ours), _zero_stats()), u)
    return _from_book(book), stats



# ----------------------------------------------------------------------------------------------- agent API
def _check_side(side) -> None:
    s = _static(side)
    if s is not None and s not in (0, 1):
        raise ValueError(f"side={side!r}: use 0 (buy / bid) or 1 (sell / ask)")


def _check_qty(qty) -> None:
    q = _static(qty)
    if q is not None and (q != int(q) or q <= 0):
        raise ValueError(f"qty={qty!r}: need a whole number of lots >= 1")


def submit_limit(state: LOBState, side, price_tick, qty, owner=OURS) -> tuple[LOBState, Array]:
    """Send a limit order: match what crosses (price-time priority), rest the remainder.

    Args:
        state: one book.  side: 0 buy / 1 sell.  price_tick: absolute limit tick (int).
        qty: lots (int >= 1).  owner: owner tag (`OURS` = 1 by default).

    Returns:
        `(state, order_id)`, order_id int32 (-1 if rejected; the id stays valid after the order fills
        or leaves, but then `queue_ahead` returns -1). Use `apply_message` to see the immediate fills.

    Raises:
        ValueError: for a Python (concrete) side not in {0, 1}, qty <= 0, or a price outside the window
            when both it and `state.base` are concrete. Traced values are not checked: the message is
            rejected and counted in `state.rejected`.
    """
    _check_side(side)
    _check_qty(qty)
    p, base = _static(price_tick), _static(state.base)
    if p is not None and base is not None:
        t = state.qty.shape[2]
        if not base <= p < base + t:
            raise ValueError(f"price_tick={price_tick!r} is outside the book's window [{base}, {base + t}): "
                             "quote inside it (the window follows the mid; see recentre)")
    msg = Message(LIMIT, side, price_tick, qty, owner, -1)
    state, out = apply_message(state, msg)
    return state, out.order_id


def submit_market(state: LOBState, side, qty, owner=OURS) -> tuple[LOBState, Array, Array]:
    """Send a market order that walks the opposite book (best price first, earliest order first).

    Returns:
        `(state, filled_qty, cost)`: int32 lots executed (less than qty if the opposite side ran out; the
        rest is dropped, not rested) and `sum fill * tick` (absolute ticks; the average price is
        cost / filled_qty).

    Raises:
        ValueError: a concrete side not in {0, 1} or qty <= 0 (traced: rejected and counted).
    """
    _check_side(side)
    _check_qty(qty)
    state, out = apply_message(state, Message(MARKET, side, 0, qty, owner, -1))
    return state, out.filled, out.cost


def cancel(state: LOBState, order_id) -> LOBState:
    """Cancel the resting order `order_id` (an id that is not resting is counted as REJECT_UNKNOWN)."""
    state, _ = apply_message(state, Message(CANCEL, 0, 0, 0, 0, order_id))
    return state


def best_bid(state: LOBState) -> Array:
    """Best bid tick (int32); `base - 1` when the bid side is empty."""
    return _best(state)[0]


def best_ask(state: LOBState) -> Array:
    """Best ask tick (int32); `base + n_ticks` when the ask side is empty."""
    return _best(state)[1]


def mid(state: LOBState) -> Array:
    """float32 mid in ticks, `(rb + ra) / 2` of `reference_quotes` (the best quotes when both sides rest)."""
    rb, ra = reference_quotes(state)
    return (rb + ra).astype(jnp.float32) / 2


def depth(state: LOBState, side: int, n_levels: int) -> Array:
    """Resting lots at the `n_levels` ticks from a side's best quote outwards (empty ticks count as 0).

    `depth(s, BID, 3) = [lots at bb, bb - 1, bb - 2]`; `depth(s, ASK, 3) = [lots at ba, ba + 1, ba + 2]`;
    zeros when the side is empty or beyond the window. side and n_levels are static. int32 `[n_levels]`.
    """
    _check_side(side)
    if int(n_levels) != n_levels or n_levels < 1:
        raise ValueError(f"n_levels={n_levels!r}: need an integer >= 1")
    t = state.qty.shape[2]
    bb, ba, _, _ = _best(state)
    tot = jnp.sum(state.qty[:, side], 0)
    step = jnp.arange(int(n_levels), dtype=jnp.int32)
    pw = (bb - step if side == BID else ba + step) - state.base
    ok = (pw >= 0) & (pw < t)
    return jnp.where(ok, tot[jnp.clip(pw, 0, t - 1)], 0)


def queue_ahead(state: LOBState, order_id) -> Array:
    """Lots resting ahead of `order_id` at its tick (earlier time priority); -1 if it is not resting."""
    mask = (state.oid == order_id) & (state.qty > 0)
    before = _before_in_tick(state.qty)
    return jnp.where(jnp.any(mask), jnp.sum(jnp.where(mask, before, 0)), -1).astype(jnp.int32)


def resting_qty(state: LOBState, owner=OURS) -> Array:
    """int32 `[2]` lots resting on the bid and ask sides that belong to `owner`."""
    return jnp.sum(jnp.where((state.owner == owner) & (state.qty > 0), state.qty, 0), (0, 2))
