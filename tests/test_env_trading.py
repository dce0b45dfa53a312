"""The trading environment: costs and rewards by hand, parity with the NumPy reference, market-data rules.

Compilation dominates on CPU, so every rollout goes through `rollout_fn(env)`: one `jit` of a
`lax.scan` over `vmap(env.step)` per environment configuration, cached.
"""

from __future__ import annotations

import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.wrappers.purerl import FlattenObservationWrapper, LogWrapper

from trading_jax.data.types import Bars
from trading_jax.envs import costs, make, rewards
from trading_jax.envs.market import make_market
from trading_jax.envs.reference.trading import TradingEnvNumpy
from trading_jax.envs.trading import EnvParams, TradingEnv, make_trading
from market_fixtures import random_walk_market

WINDOW, LENGTH = 4, 6
PARAM_FIELDS = ("initial_equity", "fee_rate", "slippage", "max_position", "ruin_fraction", "max_hold", "eta",
                "drawdown_penalty", "sharpe_eps")


@lru_cache(maxsize=None)
def small_market(n_assets: int):
    """3 paths x 40 bars of a NumPy random walk (see `market_fixtures`)."""
    return random_walk_market(n_assets, seed=7 + n_assets)


@lru_cache(maxsize=None)
def rollout_fn(env: TradingEnv):
    """jit: (key, actions [S, B, ...], params) -> (initial obs/state, per-step outputs, per-step states)."""

    def run(key, actions, params):
        batch = actions.shape[1]
        k_reset, k_steps = jax.random.split(key)
        obs0, state0 = jax.vmap(env.reset, (0, None))(jax.random.split(k_reset, batch), params)

        def body(state, xs):
            k, a = xs
            out = jax.vmap(env.step, (0, 0, 0, None))(jax.random.split(k, batch), state, a, params)
            return out[1], (out[0], out[1], out[2], out[3], out[4], out[5])

        _, outs = jax.lax.scan(body, state0, (jax.random.split(k_steps, actions.shape[0]), actions))
        return obs0, state0, outs

    return jax.jit(run)


def random_actions(env: TradingEnv, rng: np.random.Generator, steps: int, batch: int):
    n = env.n_assets
    if env.action_mode == "discrete":
        shape = (steps, batch) if n == 1 else (steps, batch, n)
        return jnp.asarray(rng.integers(0, 3, shape), jnp.int32)
    if env.action_mode == "continuous":  # partly outside the box, to exercise the clipping
        return jnp.asarray(rng.uniform(-1.5, 1.5, (steps, batch, n)), jnp.float32)
    low, high = np.array([-1.2, -0.1]), np.array([1.2, 1.1])
    return jnp.asarray(rng.uniform(low, high, (steps, batch, 2)), jnp.float32)


def numpy_twin(env: TradingEnv, params: EnvParams) -> TradingEnvNumpy:
    return TradingEnvNumpy(
        params.market, window=env.window, episode_length=env.episode_length, action_mode=env.action_mode,
        reward=env.reward_kind, **{f: getattr(params, f) for f in PARAM_FIELDS},
    )


def at(tree, *index):
    return jax.tree.map(lambda x: np.asarray(x)[index], tree)


# ------------------------------------------------------------------------------------------------
# Costs and rewards, by hand
# ------------------------------------------------------------------------------------------------


def test_fill_price_moves_against_the_trader_and_leaves_no_trade_at_the_reference():
    prices = costs.fill_price(100.0, jnp.array([5.0, -5.0, 0.0]), 5e-4, 2e-4)
    np.testing.assert_allclose(prices, [100.07, 99.93, 100.0], rtol=1e-6)


def test_fee_impact_and_turnover_costs_match_hand_numbers():
    assert float(costs.proportional_fee(-2000.0, 1e-3)) == pytest.approx(2.0)
    # 0.5 * 2% * sqrt(100 / 10,000) = 0.001; no volume information -> no impact
    np.testing.assert_allclose(costs.sqrt_impact(jnp.array([-100.0, 100.0]), jnp.array([1e4, 0.0]), 0.02, 0.5),
                               [1e-3, 0.0], rtol=1e-6)
    assert float(costs.turnover_cost(jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0]), 1e-3)) == pytest.approx(1e-3)


def test_differential_sharpe_matches_moody_saffell_by_hand():
    # dA = 0.02, dB = 0.0007, var = 1e-4: D = (2e-4 * 0.02 - 0.5 * 0.01 * 7e-4) / 1e-6 = 0.5
    D, A, B = rewards.differential_sharpe(0.01, 0.0002, 0.03, 0.1)
    assert float(D) == pytest.approx(0.5, rel=1e-4)
    assert (float(A), float(B)) == pytest.approx((0.012, 0.00027), rel=1e-5)
    # zero variance (the first step) gives 0, never NaN
    assert float(rewards.differential_sharpe(0.0, 0.0, 0.05, 0.1)[0]) == 0.0


def test_seed003_reward_is_return_times_running_sharpe_minus_drawdown_penalty():
    state = rewards.reward_init(100.0)
    got = []
    for e0, e1 in [(100.0, 110.0), (110.0, 99.0), (99.0, 108.9)]:
        r, state = rewards.reward_update("seed003", state, e0, e1, 100.0)
        got.append(float(r))
    # returns 0.1, -0.1, 0.1. Step 1: one return -> sharpe 0, no drawdown. Step 2: mean 0 -> sharpe 0,
    # drawdown (110 - 99) / 110 = 0.1. Step 3: mean 1/30, std (ddof 1) sqrt(0.02/1.5), drawdown 0.01.
    sharpe3 = (1 / 30) / math.sqrt((2 * (0.2 / 3) ** 2 + (0.4 / 3) ** 2) / 2)
    np.testing.assert_allclose(got, [0.0, -0.01, 0.1 * sharpe3 - 0.1 * 0.01], rtol=1e-5, atol=1e-7)


def test_pnl_and_log_return_rewards_and_their_guards():
    state = rewards.reward_init(1000.0)
    assert float(rewards.reward_update("pnl", state, 1100.0, 1155.0, 1000.0)[0]) == pytest.approx(0.055)
    assert float(rewards.reward_update("log_return", state, 1100.0, 1155.0, 1000.0)[0]) == pytest.approx(math.log(1.05))
    assert np.isfinite(float(rewards.log_return(100.0, -5.0)))
    assert float(rewards.step_return(0.0, 5.0)) == 0.0
    with pytest.raises(ValueError, match="reward must be one of"):
        rewards.reward_update("sortino", state, 1.0, 1.0, 1.0)


def three_bar_env(action_mode="discrete", reward="pnl", **params):
    """One path of 3 bars: close 100, 100, then open 101 / close 102 with a 10 bp spread. W = 2, L = 1,
    so the only start is t0 = 1 and the single decision fills at bar 2."""
    c = np.array([[100.0], [100.0], [102.0]])
    o = np.array([[100.0], [100.0], [101.0]])
    bars = Bars(o, np.maximum(o, c) + 1, np.minimum(o, c) - 1, c, np.full_like(c, 1e3))
    market = make_market(bars, spread=np.array([[1e-3], [1e-3], [1e-3]]))
    return make_trading(market=market, window=2, episode_length=1, action_mode=action_mode, reward=reward, **params)


def test_going_long_one_unit_on_a_three_bar_market_gives_the_hand_worked_numbers():
    # equity 101 at max_position 1 buys exactly 101 / open 101 = 1 unit at 101 * (1 + 0.0005) = 101.0505,
    # fee 10 bp of that = 0.1010505; cash 101 - 101.0505 - 0.1010505 = -0.1515505; equity -0.1515505 + 102.
    env, params = three_bar_env(initial_equity=101.0, fee_rate=1e-3)
    obs, state = env.reset(jax.random.key(0), params)
    assert int(state.t) == 1
    _, after, reward, terminated, truncated, info = env.step(jax.random.key(1), state, 2, params)
    equity = -0.1515505 + 102.0
    assert float(info["exec_price"][0]) == pytest.approx(101.0505, rel=1e-6)
    assert float(info["fee"]) == pytest.approx(0.1010505, rel=1e-5)
    assert float(info["spread_cost"]) == pytest.approx(0.0505, rel=1e-5)
    assert float(info["costs"]) == pytest.approx(0.1515505, rel=1e-5)
    assert float(info["trade_notional"]) == pytest.approx(101.0, rel=1e-6)
    assert float(info["equity"]) == pytest.approx(equity, rel=1e-6)
    assert float(reward) == pytest.approx((equity - 101.0) / 101.0, rel=1e-4)
    assert float(info["weights"][0]) == pytest.approx(102.0 / equity, rel=1e-6)
    final = np.asarray(info["final_observation"])  # [ret_1, ret_2, weight, equity - 1, time left]
    np.testing.assert_allclose(final, [0.0, math.log(1.02), 102.0 / equity, equity / 101.0 - 1.0, 0.0], rtol=1e-5,
                               atol=1e-7)
    assert bool(truncated) and not bool(terminated)


def test_going_short_with_slippage_credits_the_sale_and_reports_log_return():
    # short 1 unit at 101 * (1 - 0.0005 - 0.0002) = 100.9293, fee 0.1009293: cash 201.8283707, equity 99.8283707
    env, params = three_bar_env(reward="log_return", initial_equity=101.0, fee_rate=1e-3, slippage=2e-4)
    _, state = env.reset(jax.random.key(0), params)
    _, _, reward, _, _, info = env.step(jax.random.key(1), state, 0, params)
    assert float(info["exec_price"][0]) == pytest.approx(100.9293, rel=1e-6)
    assert float(info["equity"]) == pytest.approx(99.8283707, rel=1e-6)
    assert float(info["slippage_cost"]) == pytest.approx(101 * 2e-4, rel=1e-5)
    assert float(reward) == pytest.approx(math.log(99.8283707 / 101.0), rel=1e-4)


def test_continuous_actions_outside_the_box_are_clipped_and_discrete_ones_out_of_range_place_no_order():
    env, params = make_trading(market=small_market(1), window=WINDOW, episode_length=LENGTH, action_mode="continuous")
    _, state = env.reset(jax.random.key(0), params)
    big = env.step(jax.random.key(1), state, jnp.array([5.0]), params)[5]
    one = env.step(jax.random.key(1), state, jnp.array([1.0]), params)[5]
    np.testing.assert_array_equal(big["weights"], one["weights"])
    assert not bool(big["invalid_action"])
    env_d, params_d = make_trading(market=small_market(1), window=WINDOW, episode_length=LENGTH)
    _, state_d = env_d.reset(jax.random.key(0), params_d)
    for action in (7, -1, 3):
        info = env_d.step(jax.random.key(1), state_d, action, params_d)[5]
        assert bool(info["invalid_action"]) and float(info["trade_notional"]) == 0.0, action
    assert not bool(env_d.step(jax.random.key(1), state_d, 2, params_d)[5]["invalid_action"])


# ------------------------------------------------------------------------------------------------
# jit(vmap(step)) against the NumPy reference
# ------------------------------------------------------------------------------------------------

CASES = [
    ("discrete", "pnl", 1),
    ("discrete", "seed003", 3),
    ("continuous", "log_return", 3),
    ("continuous", "differential_sharpe", 1),
    ("position_hold", "seed003", 1),
    ("position_hold", "differential_sharpe", 1),
]


@pytest.mark.parametrize("action_mode,reward,n_assets", CASES)
def test_jit_vmap_step_matches_the_numpy_reference_through_auto_resets(action_mode, reward, n_assets):
    env, params = make_trading(market=small_market(n_assets), window=WINDOW, episode_length=LENGTH,
                               action_mode=action_mode, reward=reward, fee_rate=1e-3, slippage=1e-4,
                               max_position=1.5, max_hold=4, eta=0.1)
    steps, batch = 3 * LENGTH + 2, 3
    actions = random_actions(env, np.random.default_rng(CASES.index((action_mode, reward, n_assets))), steps, batch)
    obs0, state0, (obs, states, rew, term, trunc, info) = rollout_fn(env)(jax.random.key(3), actions, params)
    resets = 0
    close = np.asarray(params.market.close)
    for b in range(batch):
        ref = numpy_twin(env, params)
        s0 = at(state0, b)
        np.testing.assert_allclose(ref.reset(path=s0.path, t0=s0.t), obs0[b], rtol=1e-4, atol=1e-5)
        for s in range(steps):
            r_obs, r_rew, r_term, r_trunc, r_info = ref.step(np.asarray(actions[s, b]))
            where = f"{action_mode}/{reward} env {b} step {s}"
            np.testing.assert_allclose(info["final_observation"][s, b], r_obs, rtol=1e-4, atol=1e-5, err_msg=where)
            np.testing.assert_allclose(rew[s, b], r_rew, rtol=2e-3, atol=2e-5, err_msg=where)
            assert (bool(term[s, b]), bool(trunc[s, b])) == (r_term, r_trunc), where
            # money amounts: float32 against float64 on positions worth ~1e5 (a trade is a difference of
            # two such numbers), so an absolute tolerance of 2e-6 of the initial equity
            for k in ("equity", "fee", "spread_cost", "slippage_cost", "trade_notional"):
                np.testing.assert_allclose(info[k][s, b], r_info[k], rtol=1e-5, atol=0.2, err_msg=f"{where} {k}")
            for k in ("exec_price", "weights"):
                np.testing.assert_allclose(info[k][s, b], r_info[k], rtol=1e-5, atol=1e-5, err_msg=f"{where} {k}")
            st = at(states, s, b)
            if r_term or r_trunc:  # auto-reset: the JAX env drew a new start; the reference follows it
                resets += 1
                assert int(st.time) == 0 and float(st.equity) == params.initial_equity
                r_obs = ref.reset(path=st.path, t0=st.t)
            np.testing.assert_allclose(obs[s, b], r_obs, rtol=1e-4, atol=1e-5, err_msg=where)
            # accounting invariant: equity = cash + units . close_t, every step
            mark = float(st.cash) + float(np.dot(st.units, close[st.path, st.t]))
            assert float(st.equity) == pytest.approx(mark, rel=1e-5, abs=1e-2), where
    assert resets >= 2 * batch


def test_position_hold_ignores_actions_while_a_hold_runs():
    env, params = make_trading(market=small_market(1), window=WINDOW, episode_length=LENGTH,
                               action_mode="position_hold", max_hold=4)
    _, state = env.reset(jax.random.key(0), params)
    # hold_time 1 -> k = 4 decisions: this one and 3 ignored ones
    _, state, *_ , info = env.step(jax.random.key(1), state, jnp.array([1.0, 1.0]), params)
    units = np.asarray(state.units)
    for _ in range(3):
        _, state, *_, info = env.step(jax.random.key(1), state, jnp.array([-1.0, 0.0]), params)
        np.testing.assert_array_equal(state.units, units)
        assert float(info["trade_notional"]) == 0.0
    _, state, *_, info = env.step(jax.random.key(1), state, jnp.array([-1.0, 0.0]), params)
    assert float(state.units[0]) < 0


# ------------------------------------------------------------------------------------------------
# Market-data rules, episode ends, determinism, wrappers
# ------------------------------------------------------------------------------------------------


def lookahead_market(perturb=None):
    """One path of 30 bars, 2 assets; `perturb(fields)` edits the float64 OHLCV/spread arrays in place."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (30, 2)), axis=0))
    fields = {"open": close * np.exp(rng.normal(0, 0.002, close.shape)), "close": close,
              "volume": rng.uniform(1e3, 2e3, close.shape), "spread": rng.uniform(1e-4, 5e-4, close.shape)}
    fields["high"] = np.maximum(fields["open"], close) * 1.003
    fields["low"] = np.minimum(fields["open"], close) * 0.997
    if perturb is not None:
        perturb(fields)
    bars = Bars(fields["open"], fields["high"], fields["low"], fields["close"], fields["volume"])
    return make_market(bars, fields["spread"])


def test_no_look_ahead_bars_after_the_fill_bar_change_nothing_at_decision_t():
    t = 12  # decision bar: the agent has seen bars <= 12, fills at open[13], is marked at close[13]

    def decide_at_t(market):
        env, params = make_trading(market=market, window=5, episode_length=8, action_mode="continuous")
        _, state = env.reset(jax.random.key(0), params)
        state = state.replace(t=jnp.int32(t - 3))
        for a in ([0.5, -0.3], [1.0, 0.0], [-0.2, 0.6]):  # three decisions build a position, reaching t
            obs_t, state, *_ = env.step(jax.random.key(1), state, jnp.array(a), params)
        assert int(state.t) == t
        out = env.step(jax.random.key(1), state, jnp.array([-0.7, 0.3]), params)
        return np.asarray(obs_t), out

    obs, (_, _, reward, _, _, info) = decide_at_t(lookahead_market())

    def future(fields):  # everything after the fill bar, plus the parts of the fill bar a fill cannot see
        r = np.random.default_rng(1)
        for k in fields:
            fields[k][t + 2:] *= r.uniform(0.5, 1.5, fields[k][t + 2:].shape)
        for k in ("high", "low", "volume"):
            fields[k][t + 1] *= 1.01 if k != "low" else 0.99

    obs2, (_, _, reward2, _, _, info2) = decide_at_t(lookahead_market(future))
    np.testing.assert_array_equal(obs2, obs)
    for k in ("exec_price", "fee", "equity", "final_observation"):
        np.testing.assert_array_equal(info2[k], info[k], err_msg=k)
    assert float(reward2) == float(reward)

    # the check can fail: the mark bar's close moves the equity (not the fill), the fill bar's open the fill
    def bump(field):
        return lambda f: f[field].__setitem__(t + 1, f[field][t + 1] * 1.05)

    obs3, (_, _, _, _, _, info3) = decide_at_t(lookahead_market(bump("close")))
    np.testing.assert_array_equal(obs3, obs)
    np.testing.assert_array_equal(info3["exec_price"], info["exec_price"])
    assert not np.allclose(info3["equity"], info["equity"])
    _, (_, _, _, _, _, info4) = decide_at_t(lookahead_market(bump("open")))
    assert not np.allclose(info4["exec_price"], info["exec_price"])


def test_ruin_terminates_and_resets():
    # price halves at the fill bar's close: a 1x long loses ~half of its equity, below ruin_fraction 0.6
    c = np.array([[100.0], [100.0], [50.0], [50.0]])
    bars = Bars(c.copy(), c * 1.01, c * 0.99, c, np.full_like(c, 1e3))
    bars = bars._replace(open=np.array([[100.0], [100.0], [100.0], [50.0]]))
    env, params = make_trading(market=make_market(bars, 1e-4), window=2, episode_length=2, ruin_fraction=0.6)
    _, state = env.reset(jax.random.key(0), params)
    obs, new_state, reward, terminated, truncated, info = env.step(jax.random.key(1), state, 2, params)
    assert bool(terminated) and not bool(truncated)
    assert float(info["equity"]) < 0.6 * params.initial_equity and np.isfinite(float(reward))
    assert int(new_state.time) == 0 and float(new_state.equity) == params.initial_equity


def test_truncation_after_episode_length_with_the_final_observation():
    env, params = make_trading(market=small_market(1), window=WINDOW, episode_length=3)
    obs, state = env.reset(jax.random.key(0), params)
    for i in range(3):
        obs, state, reward, terminated, truncated, info = env.step(jax.random.key(i), state, 2, params)
        assert bool(truncated) == (i == 2) and not bool(terminated)
    final = np.asarray(info["final_observation"])
    assert final[-1] == 0.0  # no time left
    assert final[WINDOW] == pytest.approx(float(info["weights"][0]))
    assert final[WINDOW + 1] == pytest.approx(float(info["equity"]) / params.initial_equity - 1, abs=1e-6)
    # the returned observation starts the next episode: flat, initial equity, all the time left
    np.testing.assert_array_equal(np.asarray(obs)[WINDOW:], [0.0, 0.0, 1.0])
    assert int(state.time) == 0


def test_same_key_same_rollout_and_a_different_key_differs():
    env, params = make_trading(market=small_market(3), window=WINDOW, episode_length=LENGTH,
                               action_mode="continuous", reward="log_return")
    actions = random_actions(env, np.random.default_rng(0), 3 * LENGTH, 3)
    a = rollout_fn(env)(jax.random.key(5), actions, params)
    b = rollout_fn(env)(jax.random.key(5), actions, params)
    c = rollout_fn(env)(jax.random.key(6), actions, params)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(a[2][0], c[2][0])


def test_gymnax_log_and_flatten_wrappers_run_unchanged():
    env, params = make_trading(market=small_market(1), window=WINDOW, episode_length=3)
    wrapped = LogWrapper(FlattenObservationWrapper(env))
    obs, state = wrapped.reset(jax.random.key(0), params)
    assert obs.shape == env.observation_space(params).shape == (WINDOW + 3,)
    total = 0.0
    for i in range(3):
        obs, state, reward, terminated, truncated, info = wrapped.step(jax.random.key(i), state, 2, params)
        total += float(reward)
    assert bool(info["returned_episode"]) and int(info["returned_episode_lengths"]) == 3
    assert float(info["returned_episode_returns"]) == pytest.approx(total, rel=1e-5, abs=1e-7)
    assert env.action_space(params).contains(env.action_space(params).sample(jax.random.key(0)))


def test_registry_builds_the_default_offline_environment_with_features_in_the_observation():
    env, params = make("trading", n_assets=2, window=8, episode_length=16, action_mode="discrete")
    assert params.market.n_assets == 2 and env.obs_size == 8 * 2 + 2 + 2
    obs, state = env.reset(jax.random.key(0), params)
    assert obs.shape == (20,) and obs.dtype == jnp.float32
    market = small_market(1)
    market = market.replace(features=jnp.ones(market.close.shape + (3,)))
    env_f, params_f = make_trading(market=market, window=WINDOW, episode_length=LENGTH)
    obs_f, _ = env_f.reset(jax.random.key(0), params_f)
    assert obs_f.shape == (WINDOW + 3 + 3,) and np.all(np.asarray(obs_f)[-3:] == 1.0)


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match=r"action_mode must be one of \['discrete', 'continuous', 'position_hold'\]"):
        make_trading(market=small_market(1), action_mode="hold")
    with pytest.raises(ValueError, match="reward must be one of"):
        make_trading(market=small_market(1), reward="sharpe")
    with pytest.raises(ValueError, match="one asset only"):
        make_trading(market=small_market(3), window=WINDOW, episode_length=LENGTH, action_mode="position_hold")
    with pytest.raises(ValueError, match="unknown EnvParams field"):
        make_trading(market=small_market(1), window=WINDOW, episode_length=LENGTH, fees=0.1)
    with pytest.raises(ValueError, match="needs window"):
        make_trading(market=small_market(1), window=WINDOW, episode_length=100)


def test_real_btc_hourly_replay_runs(shared_data):
    from trading_jax.data import load_ohlcv
    from trading_jax.data.splits import IndexRange

    data = load_ohlcv(shared_data / "crypto" / "BTC_USD-1h.csv", repair=("swap_volume",))
    env, params = make_trading(data=data, split=IndexRange(20_000, 20_200), window=WINDOW, episode_length=LENGTH,
                               action_mode="discrete", reward="differential_sharpe", spread=2e-4)
    assert params.market.close.shape == (1, 200, 1)
    np.testing.assert_allclose(params.market.close[0, :, 0], data.bars.close[20_000:20_200, 0], rtol=1e-6)
    actions = random_actions(env, np.random.default_rng(0), 3 * LENGTH, 3)
    _, _, (obs, states, rew, term, trunc, info) = rollout_fn(env)(jax.random.key(0), actions, params)
    assert np.all(np.isfinite(obs)) and np.all(np.isfinite(rew)) and int(trunc.sum()) == 3 * 3
    assert np.all(np.asarray(info["fee"]) >= 0)
