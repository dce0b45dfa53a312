"""The execution env on the message-level book (`make_execution(book="message")`, issue 15 item 3).

Tiny books (32 ticks, 6 slots, 20 events a step) and short episodes; three compiled programs in all: a
jit(vmap(scan)) rollout over random or fixed actions, and `step_env` for 0 and 20 events a step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.envs import lob
from trading_jax.envs.execution import AGGRESSIVE, MARKET, OBS_NAMES, make_execution
from trading_jax.envs.execution_message import MessageState, market_walk, run_background, to_lots

H, LOT, EVENTS = 6, 25.0, 20
ROWS, STEPS = 48, 2 * H          # every rollout has this shape (one compilation): two episodes or more a row
MSG = dict(events_per_step=EVENTS, n_ticks=32, max_orders=6, burn_in=200)


@functools.lru_cache(maxsize=None)
def _env(events: int = EVENTS):
    return make_execution(book="message", horizon=H, n_levels=3, alpha=0.0, message={**MSG, "events_per_step": events})


@functools.lru_cache(maxsize=None)
def _rollout():
    env, _ = _env()

    def one(key, actions, params):
        _, state = env.reset(key, params)

        def body(st, xs):
            k, a = xs
            obs, st2, reward, term, trunc, info = env.step(k, st, a, params)
            return st2, (obs, reward, term, info, st2.executed, st2.remaining, st2.rest_qty, st.book.x, st.arrival)

        return jax.lax.scan(body, state, (jax.random.split(key, actions.shape[0]), actions))[1]

    return jax.jit(jax.vmap(one, (0, 0, None)))


@functools.lru_cache(maxsize=None)
def _step(events: int):
    env, _ = _env(events)
    return jax.jit(env.step_env)


# ------------------------------------------------------------------------------------------- accounting
def test_random_actions_keep_the_accounting_exact_and_every_episode_completes_at_the_horizon():
    env, params = _env()
    params = params.replace(quantity=610.0)        # 24.4 lots: the last lot carries the 10-share remainder
    b, n = ROWS, STEPS
    actions = jax.random.randint(jax.random.key(1), (b, n), -1, 11)   # -1 and 10 are invalid (wait)
    keys = jax.random.split(jax.random.key(2), b)
    out = _rollout()(keys, actions, params)
    obs, reward, term, info, executed, remaining, rest, _, _ = jax.device_get(out)
    assert obs.shape == (b, n, len(OBS_NAMES)) and np.isfinite(obs).all() and np.isfinite(reward).all()
    for name in ("fill_price", "avg_price", "shortfall_bps", "mid", "spread_bps", "temporary_impact_bps"):
        assert np.isfinite(info[name]).all(), name
    # the state after a terminal step is the auto-reset one; elsewhere the books balance exactly
    live = ~term
    np.testing.assert_array_equal((executed + remaining)[live], 610.0)
    assert (remaining >= 0).all() and (rest <= remaining + 1e-6).all() and (rest >= 0).all()
    np.testing.assert_array_equal(info["executed"] + info["remaining"], 610.0)
    # terminated exactly at t = H - 1 and 2H - 1 (forced completion) or earlier, with everything executed
    for row in range(b):
        ends = np.flatnonzero(term[row])
        assert ends[0] <= H - 1 and np.all(np.diff(ends) <= H)
        assert np.all(info["executed"][row, ends] == 610.0) and np.all(info["completed"][row, ends])
    # fills are whole lots except the last one of an episode
    fills = info["fill_qty"][info["fill_qty"] > 0]
    assert np.all((fills % LOT == 0) | (fills % LOT == 10.0))
    # same keys, same result (the compiled rollout is deterministic)
    again = jax.device_get(_rollout()(keys, actions, params))
    np.testing.assert_array_equal(again[0], obs)


def test_orders_round_to_whole_lots_and_never_exceed_the_remainders_lots():
    assert int(to_lots(jnp.float32(60.0), jnp.float32(600.0), LOT)) == 2      # 2.4 lots -> 2
    assert int(to_lots(jnp.float32(5.0), jnp.float32(600.0), LOT)) == 1       # any order is at least one lot
    assert int(to_lots(jnp.float32(610.0), jnp.float32(610.0), LOT)) == 25    # ceil(24.4): the partial last lot
    assert int(to_lots(jnp.float32(60.0), jnp.float32(60.0), LOT)) == 3      # all of 2.4 lots: 3, not round(2.4)
    assert int(to_lots(jnp.float32(0.0), jnp.float32(600.0), LOT)) == 0


def test_a_message_setting_out_of_range_is_a_one_line_error():
    with pytest.raises(ValueError, match="events_per_step"):
        make_execution(book="message", message=dict(events_per_step=-1))
    with pytest.raises(ValueError, match="lot"):
        make_execution(book="message", message=dict(lot=0.0))


# ------------------------------------------------------------------------------------------- walking the book
def _hand_book():
    """Asks: 3 lots at 2000, none at 2001, 2 + 3 lots at 2002; bids: 4 lots at 1999 (background orders)."""
    book = lob.empty_book(32, 6, base=1984)
    for side, tick, qty in ((lob.SELL, 2000, 3), (lob.SELL, 2002, 2), (lob.SELL, 2002, 3), (lob.BUY, 1999, 4)):
        book, _ = lob.submit_limit(book, side, tick, qty, owner=0)
    return book


def _hand_state(t: int, quantity: float):
    env, params = _env(0)
    params = params.replace(quantity=quantity)
    _, state = env.reset(jax.random.key(0), params)
    book = _hand_book()
    m0 = jnp.int32(1999 + 2000)
    arrival = jnp.float32(params.mid0 / env.price0 * 3999 / 2)
    state = state.replace(time=jnp.int32(t), remaining=jnp.float32(quantity), arrival=arrival,
                          lob=MessageState(book, jnp.int32(-1), jnp.int32(0), m0))
    return env, params, state


def test_a_market_order_larger_than_the_best_level_pays_the_depth_weighted_price_of_the_ticks_it_walks():
    env, params, state = _hand_state(0, 400.0)               # 16 lots; market 50% = 8 lots > 3 at the best
    _, new, _, _, info = _step(0)(jax.random.key(0), state, 3, params)
    avg = (3 * 2000 + 5 * 2002) / 8                          # walks 2000 (3 lots), skips 2001, 2002 (5 lots)
    tick_size = params.mid0 / env.price0
    assert float(info["fill_qty"]) == 8 * LOT and int(info["order_kind"]) == MARKET
    assert float(info["fill_price"]) == pytest.approx(tick_size * avg, rel=1e-6)
    assert float(info["temporary_impact_bps"]) == pytest.approx((avg / 1999.5 - 1 - 0.5 / 1999.5) * 1e4, rel=1e-4)
    assert float(new.cost) == pytest.approx(8 * LOT * (avg / 1999.5 - 1), rel=1e-5)
    assert np.asarray(lob.depth(new.lob.book, lob.ASK, 3)).tolist() == [0, 0, 0]   # the ask side is gone
    # the hand walk agrees with the book's own matching
    filled, cost, short, worst = market_walk(_hand_book(), lob.BUY, 6)
    assert (int(filled), int(cost), int(short), int(worst)) == (6, 3 * 2000 + 3 * 2002, 0, 2002)


def test_the_aggressive_limit_takes_only_the_best_tick_and_cancels_the_rest():
    env, params, state = _hand_state(0, 400.0)
    _, new, _, _, info = _step(0)(jax.random.key(0), state, 4, params)
    assert int(info["order_kind"]) == AGGRESSIVE and float(info["fill_qty"]) == 3 * LOT
    assert float(info["fill_price"]) == pytest.approx(params.mid0 / env.price0 * 2000, rel=1e-6)
    assert np.asarray(lob.depth(new.lob.book, lob.ASK, 1)).tolist() == [5]           # 2002 untouched
    assert np.asarray(lob.resting_qty(new.lob.book)).tolist() == [0, 0]              # nothing of ours rests


def test_past_the_window_side_a_market_order_stops_but_the_forced_completion_pays_the_overflow_price():
    # before the last step: market 50% of 20 lots = 10 lots against the 8 offered -> 8 fill, 2 stay to do
    env, params, state = _hand_state(0, 500.0)
    _, new, _, done, info = _step(0)(jax.random.key(0), state, 3, params)
    assert float(info["fill_qty"]) == 8 * LOT and float(new.remaining) == 500.0 - 8 * LOT and not bool(done)
    # the last step: all 12 lots; the window offers 8, the other 4 fill at the worst tick + 5 = 2007
    env, params, state = _hand_state(H - 1, 300.0)
    _, new, _, done, info = _step(0)(jax.random.key(0), state, 0, params)
    avg = (3 * 2000 + 5 * 2002 + 4 * (2002 + env.overflow_ticks)) / 12
    assert bool(done) and bool(info["forced"]) and float(new.remaining) == 0.0 and float(new.executed) == 300.0
    assert float(info["fill_price"]) == pytest.approx(params.mid0 / env.price0 * avg, rel=1e-6)


# ------------------------------------------------------------------------------------------- queue position
def _queue_ahead_np(book, order_id):
    qty, oid = np.asarray(book.qty), np.asarray(book.oid)
    k, s, p = np.argwhere((oid == order_id) & (qty > 0))[0]
    return int(qty[:k, s, p].sum()), int(p) + int(book.base), int(qty[k, s, p])


def test_our_queue_advances_only_through_trades_and_cancellations_ahead_and_our_fills_are_the_books():
    env, params = _env(EVENTS)
    step = _step(EVENTS)
    event = jax.jit(functools.partial(lob.event_step, cancel_ours=False))   # run_background's events
    seen = {"trade": 0, "cancel": 0, "arrival": 0, "filled": 0}
    for seed in range(12):
        _, state = env.reset(jax.random.key(seed), params)
        k1, k2 = jax.random.split(jax.random.key(100 + seed))
        _, s1, _, _, info1 = step(k1, state, 5, params)                  # post at the touch
        if float(s1.rest_qty) == 0.0:
            continue
        oid = int(s1.lob.order_id)
        ahead0, tick, _ = _queue_ahead_np(s1.lob.book, oid)
        assert float(s1.rest_ahead) == ahead0 * LOT
        _, s2, _, _, info2 = step(k2, s1, 0, params)                     # wait: it rests through 20 events
        # replay the same events one by one (the background's cancellations never take our order)
        book, filled, cost = s1.lob.book, 0, 0
        u = jax.random.uniform(k2, (EVENTS, 4), jnp.float32)
        for i in range(EVENTS):
            new, ev = event(book, u[i], env.lob_params)
            msg = jax.device_get(ev.message)
            assert not (int(msg.kind) == lob.CANCEL and int(msg.order_id) == oid), "the flow cancelled our order"
            if int(np.asarray(book.qty)[np.asarray(book.oid) == oid].sum()) == 0:  # filled earlier: nothing left
                book = new
                continue
            assert int(np.asarray(ev.our_dropped).sum()) == 0
            before, p, mine = _queue_ahead_np(book, oid)
            assert p == tick                                              # it never moves tick
            gone = int(np.asarray(new.qty)[np.asarray(new.oid) == oid].sum()) == 0
            after, _, mine2 = (0, p, 0) if gone else _queue_ahead_np(new, oid)
            seen["filled"] += gone
            qty = np.asarray(book.qty)
            if int(msg.kind) == lob.MARKET and int(msg.side) == lob.SELL:  # sells hit the bids, best first
                better = int(qty[:, lob.BID, p - int(book.base) + 1:].sum())
                reach = max(int(msg.qty) - better, 0)
                assert before - after == min(reach, before)
                assert int(ev.outcome.our_filled[lob.BID]) == mine - mine2 == min(max(reach - before, 0), mine)
                seen["trade"] += (before > after) or (mine2 < mine)
            elif int(msg.kind) == lob.CANCEL and before != after:
                pw = p - int(book.base)
                slot = list(np.asarray(book.oid)[:, lob.BID, pw]).index(int(msg.order_id))
                assert int(msg.side) == lob.BID and before - after == int(qty[slot, lob.BID, pw])
                assert slot < list(np.asarray(book.oid)[:, lob.BID, pw]).index(oid)   # it was ahead of ours
                seen["cancel"] += 1
            else:                                                         # arrivals and trades elsewhere
                assert after == before and mine2 == mine
                seen["arrival"] += int(msg.kind) == lob.LIMIT
            filled += int(ev.outcome.our_filled[lob.BID])
            cost += int(ev.outcome.our_cost[lob.BID])
            book = new
        np.testing.assert_array_equal(np.asarray(s2.lob.book.qty), np.asarray(book.qty))
        assert float(info2["fill_qty"]) == filled * LOT
        if filled:
            assert float(info2["fill_price"]) == pytest.approx(params.mid0 / env.price0 * cost / filled, rel=1e-6)
    assert seen["trade"] > 0 and seen["cancel"] > 0 and seen["arrival"] > 0, seen


def test_the_background_never_cancels_our_order():
    env, params = _env(EVENTS)
    book = env.template()
    book, oid = lob.submit_limit(book, lob.BUY, int(lob.best_bid(book)) - 2, 3)    # behind the touch: rarely hit
    after, totals = jax.jit(run_background, static_argnums=3)(book, jax.random.key(5), env.lob_params, 400)
    assert int(lob.resting_qty(after)[lob.BID]) + int(totals.our_filled[lob.BID]) == 3
    # the same 400 events with CST's cancellations of every order (ours included) do cancel it
    cst, stats = jax.jit(lob.run_events, static_argnums=3)(book, jax.random.key(5), env.lob_params, 400)
    assert int(lob.resting_qty(cst)[lob.BID]) + int(stats.our_filled[lob.BID]) + int(stats.our_dropped[lob.BID]) < 3


# ------------------------------------------------------------------------------------------- no free lunch
def test_no_free_lunch_a_passive_only_strategy_costs_at_least_the_half_spread_on_zero_intelligence_flow():
    """Passive only (action 5 every step, forced completion at the end), 96 episodes of 6 steps, 6 lots
    (a row's second episode starts from the auto-reset): its shortfall is no better than paying the half
    spread (the issue's no-free-lunch reading, which on this book holds by a wide margin).

    Measured at the default book (H = 20, 100 events a step, Q = 3,000 shares = 120 lots, 256 episodes,
    gamma = 0): passive-only 35.5 +- 1.8 bps against TWAP 23.0 +- 2.0 (half spread about 3.3 bps); the
    passive fills' markout against the mid at the end of their interval is +4.1 +- 0.1 bps: on CST's
    zero-intelligence flow a fill keeps the half spread (nothing informed trades against it), but the
    fills come when the price comes to us, the unfilled rest is forced at the end after the price ran away,
    and our resting bids absorb sells and lift the mid. In this tiny test book the markout is +0.5 +- 0.5
    bps, so it is not asserted."""
    _, params = _env()
    params = params.replace(quantity=150.0)
    actions = jnp.full((ROWS, STEPS), 5, jnp.int32)                  # action 5: passive limit
    out = _rollout()(jax.random.split(jax.random.key(7), ROWS), actions, params)
    obs, reward, term, info, executed, remaining, rest, x_t, arrival = jax.device_get(out)
    assert term[:, H - 1].all()
    shortfall = info["shortfall_bps"][term]                          # every completed episode (>= 96)
    assert shortfall.size >= 2 * ROWS
    half = info["spread_bps"].mean() / 2
    se = shortfall.std(ddof=1) / np.sqrt(shortfall.size)
    assert shortfall.mean() >= half - 3 * se, (shortfall.mean(), se, half)  # no cheaper than crossing
