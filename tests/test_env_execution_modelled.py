"""The execution environment's modelled book (`book="modelled"`, issue 15): adverse selection, queue
position, walking the book, resilience, icebergs, replayed flow and volume."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.data.types import Bars
from trading_jax.envs import flowbook as fb
from trading_jax.envs import orderbook as ob
from trading_jax.envs.execution import OBS_NAMES, make_execution
from trading_jax.envs.market import make_market

# a deterministic book: depth Dbar = 100, 200, 300; spread exactly 5 bps; volume exactly V = 1000 a step;
# a mid that moves by sigma = 1e-8 at most (the touch never moves by half a tick); no permanent impact
CALM = dict(
    depth0=100.0, depth_slope=1.0, depth_vol=0.0, spread_vol=0.0, volume_vol=0.0, volume_curvature=0.0,
    sigma=1e-8, gamma=0.0, alpha=0.0, quantity=1000.0,
)
HALF, TICK = 2.5e-4, 1e-4


def noise(n_levels=3, *, flow=0.0, mid=0.0, depth_best=0.0):
    z = jnp.zeros((), jnp.float32)
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return ob.BookNoise(f32(mid), z, z, f32(depth_best), jnp.zeros(n_levels), jnp.zeros(n_levels), z, f32(0.5),
                        f32(flow))


def flow_for_sells(sells, volume=1000.0):
    """The flow shock whose interval has `sells` seller-initiated shares (u = 1 - 2 sells / v)."""
    return math.atanh(1.0 - 2.0 * sells / volume) if sells > 0 else 10.0  # tanh(10) == 1 in float32


def calm_env(horizon=4, **kw):
    env, params = make_execution(horizon=horizon, n_levels=3, **{**CALM, **kw})
    _, state = env.reset(jax.random.PRNGKey(0), params)
    # the reset draw is random: pin the book at its means (z = 0, depth = Dbar, spread = 5 bps)
    state = state.replace(book=ob.init_book(noise(), params))
    return env, params, state


# --------------------------------------------------------------------------- walking the book


def test_walk_book_pays_the_depth_weighted_price_of_the_levels_it_walks_by_hand():
    depth = jnp.asarray([100.0, 200.0, 300.0])
    offset, taken = fb.walk_book(250.0, depth, HALF, TICK, 300.0)
    assert np.allclose(taken, [100, 150, 0])
    assert float(offset) == pytest.approx((100 * HALF + 150 * (HALF + TICK)) / 250, rel=1e-5)
    # 700 shares: the 600 displayed, then 100 from the first undisplayed level, one tick past level 3
    offset, taken = fb.walk_book(700.0, depth, HALF, TICK, 300.0)
    hand = (100 * HALF + 200 * (HALF + TICK) + 300 * (HALF + 2 * TICK) + 100 * (HALF + 3 * TICK)) / 700
    assert np.allclose(taken, [100, 200, 300]) and float(offset) == pytest.approx(hand, rel=1e-5)
    # 1,000 past 600: one full undisplayed level of 300 and 100 from the next
    offset, _ = fb.walk_book(1000.0, depth, HALF, TICK, 300.0)
    hand = (100 * HALF + 200 * (HALF + TICK) + 300 * (HALF + 2 * TICK) + 300 * (HALF + 3 * TICK)
            + 100 * (HALF + 4 * TICK)) / 1000
    assert float(offset) == pytest.approx(hand, rel=1e-5)
    assert float(fb.walk_book(0.0, depth, HALF, TICK, 300.0)[0]) == pytest.approx(HALF)


def test_a_market_order_larger_than_level_one_walks_and_the_depth_it_took_comes_back_at_the_resilience():
    env, params, state = calm_env(resilience=0.5)
    # market 25% of 1,000 = 250 shares against asks 100 / 200 / 300
    _, s1, _, _, info = env.transition(state, 2, params, noise())
    hand = (100 * HALF + 150 * (HALF + TICK)) / 250
    assert float(info["fill_qty"]) == 250.0
    assert float(info["fill_price"]) == pytest.approx(100.0 * (1 + hand), rel=1e-6)
    assert float(info["temporary_impact_bps"]) == pytest.approx((hand - HALF) * 1e4, rel=1e-4)
    assert np.allclose(s1.book.ask, [0.0, 50.0, 300.0]) and np.allclose(s1.gap, [100.0, 150.0, 0.0])
    # one step later half the gap is back: asks 50 / 125 / 300; the next 25% (187.5 shares) walks them
    _, s2, _, _, info = env.transition(s1, 2, params, noise())
    hand = (50 * HALF + 125 * (HALF + TICK) + 12.5 * (HALF + 2 * TICK)) / 187.5
    assert float(info["fill_price"]) == pytest.approx(100.0 * (1 + hand), rel=1e-6)
    # the same order on a fully recovered book pays less: the depth we took is a transient cost
    _, _, _, _, fresh = env.transition(s1.replace(gap=jnp.zeros(3)), 2, params, noise())
    assert float(fresh["fill_price"]) < float(info["fill_price"])


def test_the_aggressive_limit_takes_only_the_visible_best_level_and_the_gap_it_leaves():
    env, params, state = calm_env()
    _, s1, _, _, info = env.transition(state, 4, params, noise())  # IOC at the best ask for R = 1,000
    assert float(info["fill_qty"]) == 100.0 and float(info["temporary_impact_bps"]) == 0.0
    assert float(info["fill_price"]) == pytest.approx(100.0 * (1 + HALF), rel=1e-6)
    assert np.allclose(s1.gap, [100.0, 0.0, 0.0])


# --------------------------------------------------------------------------- queue position


def _passive_path(env, params, state, sells, *, depth_best=0.0, action=5):
    """Post passively at t = 0, then wait (the order keeps working) with `sells` seller-initiated shares
    per interval; returns the (fill, queue ahead, resting) of each step."""
    out = []
    for t, s in enumerate(sells):
        _, state, _, _, info = env.transition(state, action if t == 0 else 0, params,
                                              noise(flow=flow_for_sells(s), depth_best=depth_best))
        out.append((float(info["fill_qty"]), float(info["queue_ahead"]), float(info["resting_qty"])))
    return out


def test_queue_ahead_advances_by_the_trades_ahead_of_the_order_then_it_fills():
    env, params, state = calm_env(horizon=5, cancel_rate=0.0)
    # TWAP = 200 shares join the back of 100 displayed bids; sells of 0, 60, 70 then 150
    path = _passive_path(env, params, state, [0.0, 60.0, 70.0, 150.0])
    fills, ahead, resting = zip(*path)
    assert np.allclose(ahead, [100.0, 40.0, 0.0, 0.0], atol=1e-3)
    assert np.allclose(fills, [0.0, 0.0, 30.0, 150.0], atol=1e-3)  # 70 - 40 ahead; then 150 of the 170 left
    assert np.allclose(resting, [200.0, 200.0, 170.0, 20.0], atol=1e-3)


def test_queue_ahead_falls_by_the_cancellations_ahead_and_not_by_arrivals_behind():
    env, params, state = calm_env(horizon=5, cancel_rate=0.5)
    base = _passive_path(env, params, state, [0.0, 20.0, 0.0, 0.0])
    assert np.allclose([a for _, a, _ in base], [50.0, 15.0, 7.5, 3.75], atol=1e-3)  # (100-0)/2, (50-20)/2, ...
    # a much deeper own side later on (new orders joining behind us) changes nothing about our place
    _, s0, _, _, _ = env.transition(state, 5, params, noise(flow=10.0))
    deeper = []
    for s in [20.0, 0.0, 0.0]:
        _, s0, _, _, info = env.transition(s0, 0, params, noise(flow=flow_for_sells(s), depth_best=2.0))
        deeper.append(float(info["queue_ahead"]))
    assert np.allclose(deeper, [a for _, a, _ in base[1:]], atol=1e-3)


def test_the_queue_never_moves_back_and_fills_never_exceed_the_flow_past_it_on_random_flow():
    env, params, state = calm_env(horizon=30, cancel_rate=0.1)
    rng = np.random.default_rng(0)
    prev_ahead, resting = None, None
    _, state, _, _, info = env.transition(state, 5, params, noise(flow=10.0))
    prev_ahead, resting = float(info["queue_ahead"]), float(info["resting_qty"])
    for t in range(1, 25):
        sells = float(rng.uniform(0, 60))
        _, state, _, _, info = env.transition(state, 0, params, noise(flow=flow_for_sells(sells)))
        ahead, fill = float(info["queue_ahead"]), float(info["fill_qty"])
        assert ahead <= prev_ahead + 1e-4
        assert fill <= max(sells - prev_ahead, 0.0) + 1e-3 and fill <= resting + 1e-3
        prev_ahead, resting = ahead, float(info["resting_qty"])


def test_a_repriced_order_goes_to_the_back_of_the_new_queue():
    env, params, state = calm_env(horizon=6, cancel_rate=0.0)
    _, s1, _, _, _ = env.transition(state, 5, params, noise(flow=flow_for_sells(60.0)))
    assert float(s1.rest_ahead) == pytest.approx(40.0, abs=1e-3)
    moved = s1.replace(book=s1.book._replace(x=s1.book.x + 3 * TICK))  # the touch moved up three ticks
    _, s2, _, _, info = env.transition(moved, 0, params, noise(flow=10.0))
    assert float(info["queue_ahead"]) == pytest.approx(float(moved.book.bid[0]), rel=1e-5)


def test_the_iceberg_queue_never_advances_so_it_fills_only_past_the_whole_displayed_level():
    env, params, state = calm_env(horizon=5, cancel_rate=0.0)
    passive = _passive_path(env, params, state, [60.0, 60.0, 60.0], action=5)
    iceberg = _passive_path(env, params, state, [60.0, 60.0, 60.0], action=6)
    assert sum(f for f, _, _ in passive) == pytest.approx(80.0, abs=1e-2)  # 100 ahead, then 20 + 60
    assert sum(f for f, _, _ in iceberg) == 0.0  # 60 < the 100 displayed shares, every interval
    _, _, _, _, info = env.transition(state, 6, params, noise(flow=flow_for_sells(130.0)))
    assert float(info["fill_qty"]) == pytest.approx(30.0, abs=1e-2)


# --------------------------------------------------------------------------- no free lunch

N_EPISODES, H = 4096, 20


@pytest.fixture(scope="module")
def passive_episodes():
    """Passive-only and TWAP episodes on the same keys (alpha = 0, no permanent impact: every mid move is
    exogenous) on both books, with the one-step markout of each passive fill."""
    out = {}
    for book in ("modelled", "simple"):
        env, params = make_execution(horizon=H, book=book, alpha=0.0, gamma=0.0)

        def episode(key, action, env=env, params=params):
            _, state = env.reset(key, params)

            def body(state, k):
                _, new, _, _, info = env.step_env(k, state, action, params)
                return new, (info["fill_qty"], info["fill_price"], info["mid"], info["order_kind"],
                             info["shortfall_bps"], info["spread_bps"])

            return jax.lax.scan(body, state, jax.random.split(key, H))[1]

        run = jax.jit(jax.vmap(episode, (0, None)))
        keys = jax.random.split(jax.random.PRNGKey(7), N_EPISODES)
        q, px, mid, kind, shortfall, spread = map(np.asarray, run(keys, 5))
        twap = np.asarray(run(keys, 7)[4])[:, -1]
        fills = (q[:, :-1] > 0) & (kind[:, :-1] == 3)
        markout = ((mid[:, 1:] - px[:, :-1]) / px[:, :-1] * 1e4)[fills]  # buy: what the fill earns vs the next mid
        out[book] = dict(markout=markout, shortfall=shortfall[:, -1], twap=twap, half_spread=spread[:, 0].mean() / 2)
    return out


def _mean_se(x):
    return float(np.mean(x)), float(np.std(x, ddof=1) / np.sqrt(len(x)))


def test_no_free_lunch_passive_fills_give_the_half_spread_back_to_the_next_mid_move(passive_episodes):
    m, se = _mean_se(passive_episodes["modelled"]["markout"])
    half = passive_episodes["modelled"]["half_spread"]
    assert m <= 3 * se + 0.1 * half, (m, se, half)  # at most noise left of the half spread earned
    # the test can fail: on the simple book a passive fill keeps the whole half spread
    m_simple, se_simple = _mean_se(passive_episodes["simple"]["markout"])
    assert m_simple - 3 * se_simple > 0.8 * half, (m_simple, se_simple, half)


def test_adverse_selection_takes_back_part_of_the_passive_only_strategys_edge_over_twap(passive_episodes):
    """Paired with TWAP on the same keys, posting passively saves less on the modelled book than on the
    simple one. It still saves something (about 1.2 bps here, vs 2.3): the fills give the half spread
    back to the next mid (test above), but TWAP pays it on every share, so a patient passive buyer still
    beats crossing, as Harris and Hasbrouck (1996) found for limit orders at the quote. Hence the
    issue's strategy-level wording ("the passive-only shortfall beats the half spread by no more than
    noise") does not hold in this model: measured, not asserted (docs/design.md)."""
    edges = {}
    for book, v in passive_episodes.items():
        edges[book] = _mean_se(v["shortfall"] - v["twap"])
    (m, se), (m_simple, se_simple) = edges["modelled"], edges["simple"]
    assert m < -3 * se  # passive still beats TWAP ...
    assert m - m_simple > 3 * np.hypot(se, se_simple), edges  # ... by clearly less than without adverse selection


def test_passive_fills_come_just_before_the_mid_moves_against_them_when_alpha_is_zero():
    env, params = make_execution(horizon=2, alpha=0.0, gamma=0.0)
    _, state = env.reset(jax.random.PRNGKey(0), params)

    def one(key):
        n = ob.draw_noise(key, env.n_levels, True)
        _, new, _, _, info = env.transition(state, 5, params, n)
        return info["fill_qty"] > 0, new.book.x - state.book.x

    filled, move = map(np.asarray, jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(1), 20000)))
    assert 0.1 < filled.mean() < 0.95
    sigma_bps = float(params.sigma) * 1e4
    # a resting bid fills on heavy selling, which moves the mid down; unfilled, the mid went up
    assert move[filled].mean() * 1e4 < -0.2 * sigma_bps and move[~filled].mean() * 1e4 > 0.2 * sigma_bps
    assert abs(move.mean() * 1e4) < 0.05 * sigma_bps  # unconditionally still a martingale


# --------------------------------------------------------------------------- replay, profile, accounting


def _market(n_bars=40, seed=0):
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0, 2e-3, n_bars)))
    volume = rng.uniform(500, 1500, n_bars)
    bars = Bars(close, close, close, close, volume)
    return make_market(Bars(*(b[:, None] for b in bars)), spread=1e-4), volume


def test_replay_fills_against_the_bars_own_flow_and_volume():
    market, volume = _market()
    for flow_value, expect_fill in ((1.0, False), (-1.0, True)):  # all buys: nothing sells into our bid
        env, params = make_execution(horizon=6, mid_source="replay", market=market,
                                     flow=np.full(40, flow_value), depth0=100.0, depth_vol=0.0)
        _, state = env.reset(jax.random.PRNGKey(3), params)
        _, s1, _, _, info = env.step_env(jax.random.PRNGKey(4), state, 5, params)
        assert float(info["trade_flow"]) == flow_value
        assert float(s1.book.volume) == pytest.approx(volume[int(state.t0) + 1], rel=1e-6)  # the next bar's
        assert (float(info["fill_qty"]) > 0) == expect_fill
    assert float(params.volume) == pytest.approx(np.median(volume), rel=1e-5)


def test_replay_flow_must_match_the_market_and_lie_in_minus_one_one():
    market, _ = _market()
    with pytest.raises(ValueError, match=r"flow must be \[paths, bars\]"):
        make_execution(mid_source="replay", market=market, horizon=6, flow=np.zeros(7))
    with pytest.raises(ValueError, match="path 0, bar 3"):
        make_execution(mid_source="replay", market=market, horizon=6, flow=np.r_[np.zeros(3), np.nan, np.zeros(36)])
    with pytest.raises(ValueError, match="book='modelled'"):
        make_execution(mid_source="replay", market=market, horizon=6, book="simple", flow=np.zeros(40))


def test_a_calibrated_volume_profile_sets_the_vwap_slice():
    profile = np.asarray([3.0, 1.0, 1.0, 1.0], np.float32)
    env, params, state = calm_env(horizon=4, volume_profile=profile)
    size, = [float(x) for x in env.order(state, 8, params)[1:]]
    assert size == pytest.approx(1000.0 * 3.0 / 6.0, rel=1e-6)


def test_random_actions_keep_the_accounting_exact_and_every_output_finite():
    env, params = make_execution(horizon=12)

    def episode(key):
        k0, k1, k2 = jax.random.split(key, 3)
        _, state = env.reset(k0, params)
        actions = jax.random.randint(k1, (12,), 0, 10)

        def body(state, inp):
            obs, new, r, d, info = env.step_env(inp[0], state, inp[1], params)
            return new, (obs, r, info["executed"] + info["remaining"], info["resting_qty"], info["remaining"], d)

        return jax.lax.scan(body, state, (jax.random.split(k2, 12), actions))[1]

    obs, r, total, resting, remaining, done = map(
        np.asarray, jax.jit(jax.vmap(episode))(jax.random.split(jax.random.PRNGKey(5), 256)))
    assert obs.shape[-1] == len(OBS_NAMES) and np.isfinite(obs).all() and np.isfinite(r).all()
    assert np.allclose(total, float(params.quantity), rtol=1e-5)
    assert (resting <= remaining + 1e-3).all() and (resting >= 0).all()
    assert done[:, -1].all() and np.allclose(remaining[:, -1], 0.0)


def test_a_stored_calibration_sets_volatility_spread_volume_and_profile_and_explicit_keywords_win():
    from trading_jax.envs.calibration import BTC_USD_HOURLY

    env, params = make_execution(horizon=60, calibration="btc_usd_hourly", step_minutes=1.0, start_hour=14.0)
    assert float(params.sigma) == pytest.approx(BTC_USD_HOURLY.sigma / math.sqrt(60.0), rel=1e-6)
    assert float(params.spread_mean) == pytest.approx(BTC_USD_HOURLY.spread_mean, rel=1e-6)
    # one minute of the 14:00 UTC hour's volume: the median hourly bar / 60 x that hour's profile weight
    volume = BTC_USD_HOURLY.volume / 60.0 * BTC_USD_HOURLY.hourly_profile[14]
    assert float(params.volume) == pytest.approx(volume, rel=1e-5)
    assert float(params.depth0) == pytest.approx(0.2 * volume, rel=1e-5)
    assert float(params.quantity) == pytest.approx(0.05 * volume * 60, rel=1e-5)
    assert params.volume_profile.shape == (60,) and np.allclose(params.volume_profile, 1.0)  # flat within the hour
    _, mine = make_execution(horizon=60, calibration="btc_usd_hourly", step_minutes=1.0, quantity=5.0, sigma=2e-3)
    assert float(mine.quantity) == 5.0 and float(mine.sigma) == 2e-3


@pytest.mark.parametrize("kwargs, match", [
    (dict(tick=0.0), "tick must be in"), (dict(resilience=1.5), "resilience"), (dict(flow_correlation=-2.0), "flow_"),
    (dict(cancel_rate=-0.1), "cancel_rate"), (dict(calibration="eth_usd"), "calibration must be one of"),
    (dict(step_minutes=5.0), "pass calibration="), (dict(message={"n_ticks": 8}), "book='message'"),
])
def test_bad_modelled_book_settings_raise_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_execution(**kwargs)


def test_a_misspelt_message_book_setting_is_a_one_line_error_naming_the_allowed_ones():
    with pytest.raises(ValueError, match="events_per_step"):
        make_execution(book="message", message={"events_per_stp": 10})
