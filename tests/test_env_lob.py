"""The message-level order book (`trading_jax.envs.lob`) against its NumPy reference, with hand-worked fills.

Small books (16 ticks, 3 slots per tick) so that the rare paths happen in a few hundred events: full
ticks, window shifts, empty sides. Each scan is compiled once per module and shared between tests.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.envs import lob
from trading_jax.envs.reference.lob import LOBReference

T, K = 16, 3
N_EVENTS = 300
SEEDS = (0, 1)  # two random flows of 300 events each (plus the explicit-message and sparing-flow seeds)
PARAMS = lob.cst_params(limit_size_mean=2.0, market_size_mean=3.0)


def _scan_events(state, u):
    def body(s, u_i):
        s, ev = lob.event_step(s, u_i, PARAMS)
        return s, (ev, s)

    return jax.lax.scan(body, state, u)[1]


_scan_events_jit = jax.jit(_scan_events)


def _scan_messages(state, msgs):
    def body(s, m):
        s, out = lob.apply_message(s, lob.Message(*m))
        return s, (out, s)

    return jax.lax.scan(body, state, msgs)[1]


_scan_messages_jit = jax.jit(_scan_messages)


@functools.lru_cache(maxsize=None)
def _flow(seed: int):
    """A book with one of OUR orders one tick behind the best bid, then N_EVENTS background events.
    Returns (initial state, our order id, uniforms, events, states after each event) on the host."""
    k_init, k_u = jax.random.split(jax.random.key(seed))
    state = lob.init_book(k_init, PARAMS, n_ticks=T, max_orders=K, burn_in=0)
    state, our_id = lob.submit_limit(state, lob.BUY, int(lob.best_bid(state)) - 1, 2)
    u = jax.random.uniform(k_u, (N_EVENTS, 4), jnp.float32)
    events, states = jax.device_get(_scan_events_jit(state, u))
    return state, int(our_id), np.asarray(u), events, states


def _at(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _outcome_dict(out) -> dict:
    return {f: (np.asarray(getattr(out, f)).tolist()) for f in lob.Outcome._fields}


def _assert_same_book(state, ref: LOBReference, where: str):
    qty, oid, owner = ref.to_arrays()
    np.testing.assert_array_equal(np.asarray(state.qty), qty, err_msg=where)
    np.testing.assert_array_equal(np.asarray(state.oid), oid, err_msg=where)
    np.testing.assert_array_equal(np.asarray(state.owner), owner, err_msg=where)
    assert int(state.base) == ref.base, where
    assert int(state.next_id) == ref.next_id, where
    assert np.asarray(state.rejected).tolist() == ref.rejected, where
    assert np.asarray(state.dropped).tolist() == ref.dropped, where


def _check_drawn_event(ev, ref: LOBReference, rates, u0: float) -> tuple:
    """The drawn event `ev` is the one whose slice of the cumulative `rates` (the reference's, before the
    event) holds `u0 * R` (the embedded jump chain). Returns `(kind, side, message, where)`, `where` the
    reference's `(side, tick)` of a cancelled order (None otherwise)."""
    total = sum(r for _, r in rates)
    assert float(ev.rate) == pytest.approx(total, rel=1e-5)
    m = ev.message
    kind, side = int(m.kind), int(m.side)
    label = {lob.LIMIT: ("limit", side, int(m.price)), lob.MARKET: ("market", side)}.get(kind)
    where = None
    if kind == lob.CANCEL:
        where = ref.find(int(m.order_id))
        assert where is not None and where[0] == side
        label = ("cancel", side, where[1])
    lo = sum(r for _, r in rates[:[e for e, _ in rates].index(label)])
    hi = lo + dict(rates)[label]
    assert dict(rates)[label] > 0 and lo - 1e-4 * total <= u0 * total <= hi + 1e-4 * total
    return kind, side, m, where


def _replay_event(ev, ref: LOBReference, kind: int, side: int, m, where: str) -> tuple[dict, int, list]:
    """Apply the event's message and window shift to the reference and compare outcome and shift:
    returns `(outcome, shift, our_dropped)`."""
    out = ref.apply(kind, side, int(m.price), int(m.qty), int(m.owner), int(m.order_id))
    assert _outcome_dict(ev.outcome) == out, where
    shift = ref.recentre_shift()
    assert int(ev.shift) == shift
    dropped, our_dropped = ref.shift(shift)
    assert np.asarray(ev.dropped).tolist() == dropped and np.asarray(ev.our_dropped).tolist() == our_dropped
    return out, shift, our_dropped


# ----------------------------------------------------------------------------------------------- reference
@pytest.mark.parametrize("seed", SEEDS)
def test_background_flow_matches_the_numpy_reference_after_every_event(seed):
    state0, _, u, events, states = _flow(seed)
    ref = LOBReference.from_state(state0)
    seen = {"shift": 0, "full": 0, "market": 0, "cancel": 0, "our_fill": 0}
    for i in range(N_EVENTS):
        ev = _at(events, i)
        rates = ref.rates(np.asarray(PARAMS.limit_rate), np.asarray(PARAMS.cancel_rate), float(PARAMS.market_rate))
        kind, side, m, _ = _check_drawn_event(ev, ref, rates, float(u[i, 0]))
        assert float(ev.dt) == pytest.approx(-np.log1p(-float(u[i, 3])) / sum(r for _, r in rates), rel=1e-4)
        out, shift, _ = _replay_event(ev, ref, kind, side, m, f"seed {seed} event {i}")
        _assert_same_book(_at(states, i), ref, f"seed {seed} event {i}")
        b, a = ref.best(0), ref.best(1)
        assert b is None or a is None or b < a, "the book is never crossed"
        seen["shift"] += shift != 0
        seen["full"] += out["status"] == lob.REJECT_FULL
        seen["market"] += kind == lob.MARKET and out["filled"] > 0
        seen["cancel"] += kind == lob.CANCEL
        seen["our_fill"] += sum(out["our_filled"]) > 0
    assert seen["market"] and seen["cancel"], seen
    if seed == 0:  # the rare paths happen in this run: window shifts, full ticks, fills of our order
        assert seen["shift"] and seen["full"] and seen["our_fill"], seen


def _random_messages(rng, state, n):
    """Host-drawn messages of every kind: limits across the whole window and beyond it (some cross, some
    are out of the window), markets of 1-8 lots, cancels of ids that may have filled or never existed,
    a few invalid quantities; owners 0 and 1."""
    base = int(state.base)
    rows = []
    for _ in range(n):
        kind = rng.choice(3, p=[0.55, 0.2, 0.25])
        side = int(rng.integers(0, 2))
        mid = base + T // 2
        price = int(rng.integers(base - 2, base + T + 2)) if rng.random() < 0.1 else int(mid + rng.integers(-5, 6))
        qty = int(rng.integers(1, 9)) if rng.random() > 0.03 else int(rng.integers(-1, 1))
        rows.append((kind, side, price, qty, int(rng.integers(0, 2)), int(rng.integers(0, int(state.next_id) + n))))
    return tuple(jnp.asarray(np.array(col, np.int32)) for col in zip(*rows))


@pytest.mark.parametrize("seed", (10, 11))
def test_explicit_messages_match_the_reference_fill_by_fill(seed):
    rng = np.random.default_rng(seed)
    state = lob.init_book(jax.random.key(seed), PARAMS, n_ticks=T, max_orders=K, burn_in=0)
    msgs = _random_messages(rng, state, 400)
    outs, states = jax.device_get(_scan_messages_jit(state, msgs))
    ref = LOBReference.from_state(state)
    statuses = set()
    for i in range(400):
        m = [int(np.asarray(c)[i]) for c in msgs]
        expected = ref.apply(*m)
        got = _outcome_dict(_at(outs, i))
        assert got == expected, f"message {i}: {m}"
        _assert_same_book(_at(states, i), ref, f"message {i}: {m}")
        # the aggressor's fills are exactly what left the opposite side; nothing trades on its own side
        if m[0] != lob.CANCEL and 0 <= m[1] <= 1:
            assert got["traded"][1 - m[1]] == got["filled"] and got["traded"][m[1]] == 0
        b, a = ref.best(0), ref.best(1)
        assert b is None or a is None or b < a, "the book is never crossed"
        statuses.add(got["status"])
    assert statuses == {lob.OK, lob.REJECT_FULL, lob.REJECT_WINDOW, lob.REJECT_UNKNOWN, lob.REJECT_INVALID}


def test_a_market_order_walks_the_book_best_price_first_then_earliest_order_first():
    s = lob.empty_book(16, 4, base=96)
    s, a1 = lob.submit_limit(s, lob.SELL, 102, 2, owner=0)
    s, a2 = lob.submit_limit(s, lob.SELL, 101, 3, owner=0)   # better price, later
    s, a3 = lob.submit_limit(s, lob.SELL, 101, 1, owner=1)   # same price, later still (ours)
    s, a4 = lob.submit_limit(s, lob.SELL, 104, 5, owner=0)
    s, b1 = lob.submit_limit(s, lob.BUY, 99, 4, owner=0)
    assert (int(lob.best_bid(s)), int(lob.best_ask(s)), float(lob.mid(s))) == (99, 101, 100.0)
    assert lob.depth(s, lob.ASK, 4).tolist() == [4, 2, 0, 5]
    assert int(lob.queue_ahead(s, a3)) == 3 and int(lob.queue_ahead(s, a1)) == 0
    state, out = lob.apply_message(s, lob.Message(lob.MARKET, lob.BUY, 0, 7, 0, -1))
    # 3 lots of a2 and 1 of a3 at 101, both of a1 at 102, then 1 of a4 at 104: 3*101 + 101 + 2*102 + 104
    assert int(out.filled) == 7 and int(out.cost) == 3 * 101 + 101 + 2 * 102 + 104
    assert out.traded.tolist() == [0, 7] and out.our_filled.tolist() == [0, 1] and out.our_cost.tolist() == [0, 101]
    assert lob.depth(state, lob.ASK, 1).tolist() == [4] and int(lob.best_ask(state)) == 104
    assert int(lob.queue_ahead(state, a4)) == 0 and int(lob.queue_ahead(state, a2)) == -1
    # a sell market order larger than the whole bid side fills what there is
    state, filled, cost = lob.submit_market(state, lob.SELL, 10, owner=1)
    assert (int(filled), int(cost)) == (4, 4 * 99) and int(lob.best_bid(state)) == s.base - 1
    # a marketable limit buy at 104 takes the ask at 104 and rests the rest at 104: the book stays uncrossed
    state, oid = lob.submit_limit(state, lob.BUY, 104, 6)
    assert int(lob.best_bid(state)) == 104 and int(lob.best_ask(state)) == s.base + 16
    assert lob.resting_qty(state).tolist() == [2, 0] and lob.resting_qty(state, owner=0).tolist() == [0, 0]


# ----------------------------------------------------------------------------------------------- conservation
def _resting(state) -> np.ndarray:
    return np.asarray(state.qty).sum(axis=(-3, -1))   # [..., 2]


@pytest.mark.parametrize("seed", SEEDS)
def test_volume_is_conserved_at_every_event_on_both_sides(seed):
    state0, _, _, events, states = _flow(seed)
    before = np.concatenate([_resting(state0)[None], _resting(states)[:-1]])
    o = events.outcome
    change = np.asarray(o.added) - np.asarray(o.traded) - np.asarray(o.cancelled) - np.asarray(events.dropped)
    np.testing.assert_array_equal(_resting(states) - before, change)
    # every trade has two sides: what market orders filled is what left the book, per side
    market = np.asarray(events.message.kind) == lob.MARKET
    side = np.asarray(events.message.side)
    traded = np.asarray(o.traded)
    np.testing.assert_array_equal(traded[np.arange(N_EVENTS), 1 - side][market], np.asarray(o.filled)[market])
    assert traded[np.arange(N_EVENTS), side].sum() == 0 and traded[~market].sum() == 0
    assert traded.sum() > 0 and np.asarray(o.cancelled).sum() > 0


def test_run_events_totals_balance_the_book():
    state = lob.init_book(jax.random.key(5), PARAMS, n_ticks=T, max_orders=K, burn_in=0)
    run = jax.jit(lob.run_events, static_argnums=3)
    after, stats = run(state, jax.random.key(6), PARAMS, 400)
    np.testing.assert_array_equal(_resting(after) - _resting(state),
                                  stats.added - stats.traded - stats.cancelled - stats.dropped)
    assert int(stats.events.sum()) == 400 and int(stats.rejected.sum()) == int((after.rejected - state.rejected).sum())
    assert int(stats.events[lob.MARKET].sum()) > 0 and int(stats.traded.sum()) > 0
    assert float(stats.elapsed) == pytest.approx(float(after.time - state.time), rel=1e-6)
    again, stats2 = run(state, jax.random.key(6), PARAMS, 400)   # same key, same events, bit for bit
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves((after, stats)), jax.tree.leaves((again, stats2))))


def _assert_run_ends_at_last_step(after, states, events):
    """`run_events`' book equals the last of the event-by-event states; returns the events' outcomes."""
    last = _at(states, N_EVENTS - 1)
    for name in ("qty", "oid", "owner", "base", "next_id", "rejected", "dropped"):
        np.testing.assert_array_equal(np.asarray(getattr(after, name)), np.asarray(getattr(last, name)), err_msg=name)
    return events.outcome


@pytest.mark.parametrize("seed", (0, 1))
def test_run_events_ends_where_the_reference_checked_event_steps_end(seed):
    # run_events keeps the book in its working layout for the whole scan (converted once in, once out);
    # event_step converts at every event and is what the reference test replays: same key, same book
    state0, _, _, events, states = _flow(seed)
    _, k_u = jax.random.split(jax.random.key(seed))
    after, stats = jax.jit(lob.run_events, static_argnums=3)(state0, k_u, PARAMS, N_EVENTS)
    o = _assert_run_ends_at_last_step(after, states, events)
    np.testing.assert_array_equal(stats.traded, np.asarray(o.traded).sum(0))
    np.testing.assert_array_equal(stats.our_filled, np.asarray(o.our_filled).sum(0))
    np.testing.assert_array_equal(stats.dropped, np.asarray(events.dropped).sum(0))
    assert int(np.asarray(stats.our_filled).sum()) > 0 or seed != 0


# ----------------------------------------------------------------------------------------------- sparing our orders
def _scan_spare_events(state, u):
    def body(s, u_i):
        s, ev = lob.event_step(s, u_i, PARAMS, cancel_ours=False)
        return s, (ev, s)

    return jax.lax.scan(body, state, u)[1]


_scan_spare_events_jit = jax.jit(_scan_spare_events)
_run = jax.jit(lob.run_events, static_argnums=3, static_argnames="cancel_ours")


@functools.lru_cache(maxsize=None)
def _spare_flow(seed: int):
    """A book with four orders of OURS behind background orders (bid ticks bb - 1, bb - 2, ask ticks ba + 1,
    ba + 3: where the background cancels often), then N_EVENTS events of the `cancel_ours=False` flow.
    Returns (initial state, uniforms, events, states after each event) on the host."""
    k_init, k_u = jax.random.split(jax.random.key(seed))
    state = lob.init_book(k_init, PARAMS, n_ticks=T, max_orders=K, burn_in=0)
    bb, ba = int(lob.best_bid(state)), int(lob.best_ask(state))
    for side, tick, qty in ((lob.BUY, bb - 1, 2), (lob.BUY, bb - 2, 1), (lob.SELL, ba + 1, 1), (lob.SELL, ba + 3, 2)):
        state, oid = lob.submit_limit(state, side, tick, qty)
        assert int(oid) >= 0
    u = jax.random.uniform(k_u, (N_EVENTS, 4), jnp.float32)
    events, states = jax.device_get(_scan_spare_events_jit(state, u))
    return state, np.asarray(u), events, states


def _owner_of(state, order_id: int) -> int:
    qty, oid, owner = np.asarray(state.qty), np.asarray(state.oid), np.asarray(state.owner)
    hit = (oid == order_id) & (qty > 0)
    assert hit.sum() == 1, order_id
    return int(owner[hit][0])


@pytest.mark.parametrize("seed", (0, 1))
def test_the_flow_that_spares_our_orders_matches_the_reference_after_every_event(seed):
    state0, u, events, states = _spare_flow(seed)
    ref = LOBReference.from_state(state0)
    args = (np.asarray(PARAMS.limit_rate), np.asarray(PARAMS.cancel_rate), float(PARAMS.market_rate))
    # the rates of the first event: the cancel clock of a tick counts its background orders only
    rates = ref.rates(*args, cancel_ours=False)
    np.testing.assert_allclose(np.asarray(lob.event_rates(state0, PARAMS, cancel_ours=False)), [r for _, r in rates],
                               rtol=1e-6)
    assert sum(r for _, r in rates) < sum(r for _, r in ref.rates(*args)), "ours no longer count"
    beside_ours = 0
    for i in range(N_EVENTS):
        ev = _at(events, i)
        kind, side, m, where = _check_drawn_event(ev, ref, ref.rates(*args, cancel_ours=False), float(u[i, 0]))
        if where is not None:
            # the cancelled order is the floor(u1 n0)-th background order of its tick, in time priority
            level = ref.cancellable(side, where[1], cancel_ours=False)
            j = int(np.floor(np.float32(u[i, 1]) * np.float32(len(level))))
            assert int(m.order_id) == level[j][0] and level[j][2] == 0
            beside_ours += any(o[2] == lob.OURS for o in ref.books[side][where[1]])
        ours_before = [ref.resting(s, owner=lob.OURS) for s in (0, 1)]
        out, _, our_dropped = _replay_event(ev, ref, kind, side, m, f"seed {seed} event {i}")
        _assert_same_book(_at(states, i), ref, f"seed {seed} event {i}")
        # our lots leave only by trading or off the window, never by a cancellation
        for s in (0, 1):
            assert ref.resting(s, owner=lob.OURS) == ours_before[s] - out["our_filled"][s] - our_dropped[s]
    assert beside_ours > 0, "some cancellations hit a tick where our orders rest"


def test_the_background_never_cancels_our_orders_where_cst_as_written_does():
    for seed in (0, 1):
        state0, u, events, states = _spare_flow(seed)
        cancels = np.flatnonzero(np.asarray(events.message.kind) == lob.CANCEL)
        assert cancels.size > 10
        for i in cancels:
            before = state0 if i == 0 else _at(states, i - 1)
            assert _owner_of(before, int(events.message.order_id[i])) == 0, f"seed {seed} event {i}"
        # the same book and uniforms under CST as written (every order cancels): some cancel takes ours
        old_events, old_states = jax.device_get(_scan_events_jit(state0, jnp.asarray(u)))
        old = np.flatnonzero(np.asarray(old_events.message.kind) == lob.CANCEL)
        owners = [_owner_of(state0 if i == 0 else _at(old_states, i - 1), int(old_events.message.order_id[i]))
                  for i in old]
        assert lob.OURS in owners, seed


@pytest.mark.parametrize("seed", (0, 1))
def test_run_events_sparing_ours_ends_where_its_event_steps_end(seed):
    state0, _, events, states = _spare_flow(seed)
    _, k_u = jax.random.split(jax.random.key(seed))
    after, stats = _run(state0, k_u, PARAMS, N_EVENTS, cancel_ours=False)
    o = _assert_run_ends_at_last_step(after, states, events)
    np.testing.assert_array_equal(stats.traded, np.asarray(o.traded).sum(0))
    np.testing.assert_array_equal(stats.cancelled, np.asarray(o.cancelled).sum(0))
    np.testing.assert_array_equal(stats.our_filled, np.asarray(o.our_filled).sum(0))
    np.testing.assert_array_equal(stats.our_dropped, np.asarray(events.our_dropped).sum(0))
    assert float(stats.elapsed) == pytest.approx(float(np.asarray(events.dt).sum()), rel=1e-5)


def test_with_no_orders_of_ours_both_flows_are_the_same_event_for_event():
    state = lob.init_book(jax.random.key(8), PARAMS, n_ticks=T, max_orders=K, burn_in=0)
    u = jax.random.uniform(jax.random.key(9), (N_EVENTS, 4), jnp.float32)
    cst, spare = jax.device_get((_scan_events_jit(state, u), _scan_spare_events_jit(state, u)))
    for x, y in zip(jax.tree.leaves(cst), jax.tree.leaves(spare)):
        np.testing.assert_array_equal(x, y)
    assert (np.asarray(cst[0].message.kind) == lob.CANCEL).sum() > 10
    a = _run(state, jax.random.key(10), PARAMS, N_EVENTS)
    b = _run(state, jax.random.key(10), PARAMS, N_EVENTS, cancel_ours=False)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert int(a[1].events[lob.CANCEL].sum()) > 10


# ----------------------------------------------------------------------------------------------- queue position
def test_queue_position_advances_only_through_trades_and_cancellations_ahead():
    counts = {"trade": 0, "cancel": 0, "behind": 0}
    for seed in SEEDS:
        state0, our_id, _, events, states = _flow(seed)
        ref = LOBReference.from_state(state0)
        for i in range(N_EVENTS):
            where = ref.find(our_id)
            if where is None:
                break
            s, p, _ = where
            ahead = ref.orders_ahead(our_id)
            better = sum(o[1] for tick, level in ref.books[s].items() for o in level
                         if (tick > p if s == lob.BID else tick < p))
            m = _at(events, i).message
            kind, side = int(m.kind), int(m.side)
            out = ref.apply(kind, side, int(m.price), int(m.qty), int(m.owner), int(m.order_id))
            ref.shift(int(_at(events, i).shift))
            q_after = int(lob.queue_ahead(_at(states, i), our_id))
            assert q_after == ref.queue_ahead(our_id)
            if q_after < 0:
                break                      # filled or dropped: no queue any more
            expected = 0                   # what the event may take from the orders ahead of ours
            if kind == lob.MARKET and side == 1 - s:
                expected = min(max(out["filled"] - better, 0), sum(ahead.values()))
                counts["trade"] += expected > 0
            elif kind == lob.CANCEL and int(m.order_id) in ahead:
                expected = ahead[int(m.order_id)]
                counts["cancel"] += 1
            elif kind in (lob.LIMIT, lob.CANCEL):
                counts["behind"] += 1      # arrivals anywhere, cancellations elsewhere: no change
            assert q_after == sum(ahead.values()) - expected, f"seed {seed} event {i}"
            assert set(ref.orders_ahead(our_id)) <= set(ahead), "nobody joins the queue ahead of us"
    assert counts["trade"] and counts["cancel"] and counts["behind"], counts


# ----------------------------------------------------------------------------------------------- vmap
def test_vmap_over_books_equals_a_loop_over_them():
    keys = jax.random.split(jax.random.key(3), 3)
    init = functools.partial(lob.init_book, params=PARAMS, n_ticks=T, max_orders=K, burn_in=0)
    states = jax.vmap(init)(keys)
    run = jax.jit(lob.run_events, static_argnums=3)
    run_batch = jax.jit(jax.vmap(lob.run_events, (0, 0, None, None)), static_argnums=3)
    run_keys = jax.random.split(jax.random.key(4), 3)
    batched = run_batch(states, run_keys, PARAMS, 150)
    for b in range(3):
        single = run(_at(states, b), run_keys[b], PARAMS, 150)
        for x, y in zip(jax.tree.leaves(single), jax.tree.leaves(_at(batched, b))):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(batched[0].qty[0], batched[0].qty[1])  # different keys, different books


# ----------------------------------------------------------------------------------------------- user errors
@pytest.mark.parametrize("call, match", [
    (lambda: lob.empty_book(n_ticks=1), "n_ticks=1"),
    (lambda: lob.empty_book(16, max_orders=0), "max_orders=0"),
    (lambda: lob.init_book(jax.random.key(0), PARAMS, n_ticks=8), "n_ticks=8 is too small"),
    (lambda: lob.cst_params(limit_size_mean=0.5), "limit_size_mean=0.5"),
    (lambda: lob.cst_params(cancel_rate=[1.0, -1.0, 1.0, 1.0, 1.0]), "cancel_rate="),
    (lambda: lob.cst_params(n_levels=3, limit_rate=[1.0, 2.0]), "limit_rate has shape"),
    (lambda: lob.submit_limit(lob.empty_book(16, 2, 100), lob.BUY, 105, -2), "qty=-2"),
    (lambda: lob.submit_limit(lob.empty_book(16, 2, 100), 2, 105, 1), "side=2"),
    (lambda: lob.submit_limit(lob.empty_book(16, 2, 100), lob.SELL, 130, 1), r"price_tick=130 is outside .*\[100, 116\)"),
    (lambda: lob.submit_market(lob.empty_book(16, 2, 100), lob.BUY, 0), "qty=0"),
    (lambda: lob.run_events(lob.empty_book(16, 2), jax.random.key(0), PARAMS, -1), "n_events=-1"),
    (lambda: lob.run_events(lob.empty_book(16, 2), jax.random.key(0), PARAMS, 3, cancel_ours="no"), "cancel_ours='no'"),
])
def test_a_user_mistake_is_a_one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_traced_mistakes_are_rejected_and_counted_not_lost():
    s = lob.empty_book(16, 2, base=100)
    s, _ = lob.submit_limit(s, lob.SELL, 105, 1)
    s, _ = lob.submit_limit(s, lob.SELL, 105, 1)
    limit = jax.jit(lob.submit_limit)
    s1, oid = limit(s, lob.SELL, 130, 1)                  # outside the window
    s2, oid2 = limit(s1, lob.SELL, 105, 3)                # the tick's 2 slots are full
    s3, filled, _ = jax.jit(lob.submit_market)(s2, lob.BUY, -4)
    s4 = jax.jit(lob.cancel)(s3, 12345)
    assert (int(oid), int(oid2), int(filled)) == (-1, -1, 0)
    assert s4.rejected.tolist() == [1, 1, 1, 1]           # FULL, WINDOW, UNKNOWN, INVALID
    assert lob.resting_qty(s4).tolist() == [0, 2] and np.array_equal(s4.qty, s.qty)
