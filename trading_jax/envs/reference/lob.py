"""Plain-Python reference of ONE message-level order book (`trading_jax.envs.lob`).

Written from the rules in the module docstring of `trading_jax.envs.lob`, with no code shared: each side
is a dict `tick -> list of [order_id, qty, owner]` in arrival order (the list order IS time priority),
market orders walk the ticks one by one, and the order-flow intensities are recomputed with Python
floats. It does not draw random numbers: it replays the messages (and window shifts) that the JAX book
drew, so both must end every event in identical states (`to_arrays`). Used by the tests and as the
NumPy peer of `benchmarks/lob_throughput.py` (`run_events`: the same CST flow with NumPy's generator,
one event at a time).

    ref = LOBReference.from_state(jax_state)          # or LOBReference(n_ticks, max_orders, base)
    out = ref.apply(kind, side, price, qty, owner, order_id)
    ref.shift(d)                                      # the window shift reported by the JAX step
    qty, oid, owner = ref.to_arrays()                 # [K, 2, T] each, like LOBState
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LOBReference"]

LIMIT, MARKET, CANCEL = 0, 1, 2
OK, REJECT_FULL, REJECT_WINDOW, REJECT_UNKNOWN, REJECT_INVALID = 0, 1, 2, 3, 4


class LOBReference:
    """One book with a window of `n_ticks` ticks starting at `base` and `max_orders` orders per tick and side."""

    def __init__(self, n_ticks: int, max_orders: int, base: int = 0, next_id: int = 0):
        self.n_ticks = int(n_ticks)
        self.max_orders = int(max_orders)
        self.base = int(base)
        self.next_id = int(next_id)
        self.books: list[dict[int, list[list[int]]]] = [{}, {}]   # 0 bids, 1 asks
        self.rejected = [0, 0, 0, 0]
        self.dropped = [0, 0]

    @classmethod
    def from_state(cls, state) -> "LOBReference":
        """Copy a single (unbatched) `LOBState`'s orders, window and counters."""
        qty, oid, owner = (np.asarray(a) for a in (state.qty, state.oid, state.owner))
        ref = cls(qty.shape[2], qty.shape[0], int(state.base), int(state.next_id))
        for s in range(2):
            for p in range(qty.shape[2]):
                orders = [[int(oid[j, s, p]), int(qty[j, s, p]), int(owner[j, s, p])]
                          for j in range(qty.shape[0]) if qty[j, s, p] > 0]
                if orders:
                    ref.books[s][ref.base + p] = orders
        ref.rejected = [int(x) for x in np.asarray(state.rejected)]
        ref.dropped = [int(x) for x in np.asarray(state.dropped)]
        return ref

    # ---------------------------------------------------------------- queries
    def best(self, side: int):
        ticks = [p for p, orders in self.books[side].items() if orders]
        if not ticks:
            return None
        return max(ticks) if side == 0 else min(ticks)

    def quotes(self) -> tuple[int, int]:
        """Reference quotes: best bid / ask, one tick beyond the other side if empty, centre if both."""
        b, a = self.best(0), self.best(1)
        centre = self.base + self.n_ticks // 2
        if b is None and a is None:
            return centre, centre + 1
        if b is None:
            return a - 1, a
        if a is None:
            return b, b + 1
        return b, a

    def resting(self, side: int, owner=None) -> int:
        return sum(o[1] for orders in self.books[side].values() for o in orders if owner is None or o[2] == owner)

    def find(self, order_id: int):
        for s in range(2):
            for p, orders in self.books[s].items():
                for j, o in enumerate(orders):
                    if o[0] == order_id:
                        return s, p, j
        return None

    def queue_ahead(self, order_id: int) -> int:
        where = self.find(order_id)
        if where is None:
            return -1
        s, p, j = where
        return sum(o[1] for o in self.books[s][p][:j])

    def orders_ahead(self, order_id: int) -> dict[int, int]:
        """id -> qty of the orders in front of `order_id` at its tick ({} if it is not resting)."""
        where = self.find(order_id)
        if where is None:
            return {}
        s, p, j = where
        return {o[0]: o[1] for o in self.books[s][p][:j]}

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shape = (self.max_orders, 2, self.n_ticks)
        qty, oid, owner = np.zeros(shape, np.int64), np.full(shape, -1, np.int64), np.zeros(shape, np.int64)
        for s in range(2):
            for p, orders in self.books[s].items():
                for j, (i, q, w) in enumerate(orders):
                    qty[j, s, p - self.base], oid[j, s, p - self.base], owner[j, s, p - self.base] = q, i, w
        return qty, oid, owner

    # ---------------------------------------------------------------- messages
    def apply(self, kind: int, side: int, price: int, qty: int, owner: int, order_id: int) -> dict:
        """One message; returns status, order_id, filled, cost, traded[2], added[2], cancelled[2],
        our_filled[2], our_cost[2] like `lob.Outcome`."""
        out = dict(status=OK, order_id=-1, filled=0, cost=0, traded=[0, 0], added=[0, 0], cancelled=[0, 0],
                   our_filled=[0, 0], our_cost=[0, 0])
        if kind == LIMIT:
            new_id = self.next_id
            self.next_id += 1
        if kind == CANCEL:
            where = self.find(order_id)
            if where is None:
                return self._reject(out, REJECT_UNKNOWN)
            s, p, j = where
            out["cancelled"][s] = self.books[s][p][j][1]
            del self.books[s][p][j]
            if not self.books[s][p]:
                del self.books[s][p]
            out["order_id"] = order_id
            return out
        if side not in (0, 1) or qty <= 0 or kind not in (LIMIT, MARKET):
            return self._reject(out, REJECT_INVALID)
        if kind == LIMIT and not (self.base <= price < self.base + self.n_ticks):
            return self._reject(out, REJECT_WINDOW)
        remaining = self._walk(side, qty, price if kind == LIMIT else None, out)
        if kind == MARKET or remaining == 0:
            if kind == LIMIT:
                out["order_id"] = new_id
            return out
        level = self.books[side].setdefault(price, [])
        if len(level) >= self.max_orders:
            if not level:
                del self.books[side][price]
            return self._reject(out, REJECT_FULL)
        level.append([new_id, remaining, owner])
        out["added"][side] = remaining
        out["order_id"] = new_id
        return out

    def _reject(self, out: dict, code: int) -> dict:
        self.rejected[code - 1] += 1
        out["status"] = code
        out["order_id"] = -1
        return out

    def _walk(self, side: int, qty: int, limit, out: dict) -> int:
        """Take up to qty lots from the opposite side, best tick first, earliest order first."""
        opp = 1 - side
        book = self.books[opp]
        while qty > 0 and book:
            tick = min(book) if opp == 1 else max(book)
            if limit is not None and ((side == 0 and tick > limit) or (side == 1 and tick < limit)):
                break
            level = book[tick]
            while qty > 0 and level:
                order = level[0]
                take = min(qty, order[1])
                order[1] -= take
                qty -= take
                out["filled"] += take
                out["cost"] += take * tick
                out["traded"][opp] += take
                if order[2] == 1:
                    out["our_filled"][opp] += take
                    out["our_cost"][opp] += take * tick
                if order[1] == 0:
                    level.pop(0)
            if not level:
                del book[tick]
        return qty

    def shift(self, d: int) -> tuple[list[int], list[int]]:
        """Move the window by d ticks; orders outside the new window are dropped. Returns (dropped[2],
        our_dropped[2]) lots."""
        dropped, ours = [0, 0], [0, 0]
        if d == 0:
            return dropped, ours
        self.base += int(d)
        for s in range(2):
            for p in list(self.books[s]):
                if not self.base <= p < self.base + self.n_ticks:
                    for o in self.books[s][p]:
                        dropped[s] += o[1]
                        ours[s] += o[1] if o[2] == 1 else 0
                    del self.books[s][p]
            self.dropped[s] += dropped[s]
        return dropped, ours

    def recentre_shift(self) -> int:
        """The shift `lob.recentre` should apply now: floor((mid2 - centre2) / 2) when the mid is more than
        n_ticks / 4 from the window's centre, else 0."""
        b, a = self.quotes()
        off2 = b + a - 2 * self.base - self.n_ticks
        return math.floor(off2 / 2) if abs(off2) * 2 > self.n_ticks else 0

    # ---------------------------------------------------------------- order flow (CST)
    def cancellable(self, side: int, tick: int, cancel_ours: bool = True) -> list[list[int]]:
        """The orders at a tick that the background may cancel, in time priority: all of them, or with
        `cancel_ours=False` only the background's own (owner 0; ours, owner 1, never cancel)."""
        return [o for o in self.books[side].get(tick, []) if cancel_ours or o[2] != 1]

    def rates(self, limit_rate, cancel_rate, market_rate, cancel_ours: bool = True) -> list[tuple[tuple, float]]:
        """Every competing event with its rate: (("limit", side, price), r), (("market", side), r),
        (("cancel", side, tick), theta(d) * n_orders), n_orders = len(cancellable(side, tick, cancel_ours))."""
        b, a = self.quotes()
        n_levels = len(limit_rate)
        events = []
        for i in range(1, n_levels + 1):
            events.append((("limit", 0, a - i), float(limit_rate[i - 1])))
        for i in range(1, n_levels + 1):
            events.append((("limit", 1, b + i), float(limit_rate[i - 1])))
        events.append((("market", 0), float(market_rate)))
        events.append((("market", 1), float(market_rate)))
        for s in range(2):
            for p in range(self.base, self.base + self.n_ticks):
                n = len(self.cancellable(s, p, cancel_ours))
                d = a - p if s == 0 else p - b
                d = min(max(d, 1), n_levels)
                events.append((("cancel", s, p), float(cancel_rate[d - 1]) * n))
        return events

    def run_events(self, rng: np.random.Generator, limit_rate, cancel_rate, market_rate: float,
                   limit_size_mean: float = 1.0, market_size_mean: float = 1.0, n_events: int = 1000,
                   cancel_ours: bool = True) -> dict:
        """`n_events` CST events drawn with `rng` (not the JAX draws: same law, other random numbers), each
        followed by the window shift; returns totals {"events", "traded", "time"}. `cancel_ours=False`:
        background cancellations take only background orders (`lob.run_events(..., cancel_ours=False)`)."""
        traded, clock = 0, 0.0
        for _ in range(n_events):
            events = self.rates(limit_rate, cancel_rate, market_rate, cancel_ours)
            weights = np.array([r for _, r in events])
            total = weights.sum()
            event = events[int(np.searchsorted(np.cumsum(weights), rng.random() * total, side="right"))][0]
            clock += rng.exponential(1.0 / total)
            if event[0] == "cancel":
                level = self.cancellable(event[1], event[2], cancel_ours)
                self.apply(CANCEL, event[1], 0, 0, 0, level[int(rng.integers(len(level)))][0])
            else:
                mean = limit_size_mean if event[0] == "limit" else market_size_mean
                size = int(rng.geometric(1.0 / mean))  # 1 + Geometric(0-based), mean `mean`
                if event[0] == "limit":
                    self.apply(LIMIT, event[1], event[2], size, 0, -1)
                else:
                    traded += self.apply(MARKET, event[1], 0, size, 0, -1)["filled"]
            self.shift(self.recentre_shift())
        return {"events": n_events, "traded": traded, "time": clock}
