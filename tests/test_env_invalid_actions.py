"""One rule for invalid actions in every environment, under jit(vmap(step)).

A NaN or infinite action (or a discrete one out of range) places no order this step: the state is
exactly the one holding gives, `info["invalid_action"]` is True, time advances, and the next valid
action trades normally. Each batch lane below takes a different action from the same state.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from market_fixtures import random_walk_market
from trading_jax.envs import orderbook as ob
from trading_jax.envs.execution import make_execution
from trading_jax.envs.portfolio import make_portfolio
from trading_jax.envs.reference.execution import ExecutionReference, params_to_dict
from trading_jax.envs.reference.portfolio import PortfolioEnvNumpy
from trading_jax.envs.reference.trading import TradingEnvNumpy
from trading_jax.envs.trading import make_trading

NAN, INF = float("nan"), float("inf")


def vstep(env):
    """jit(vmap(env.step)) over keys, states and actions, with shared params."""
    return jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))


def lanes(state, n):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), state)


def run_sequence(step, keys, state, sequence, params):
    """Step the lanes through each batch of actions in turn: `(states, infos)` after each step."""
    states, infos = [], []
    for actions in sequence:
        _, state, _, _, _, info = step(keys, state, actions, params)
        states.append(state)
        infos.append(info)
    return states, infos


def lane(tree, i):
    return jax.tree.map(lambda x: np.asarray(x)[i], tree)


def assert_lanes_equal(tree, i, j, skip=()):
    """Every leaf of lane i equals lane j exactly (bit for bit), except the named fields."""
    a, b = lane(tree, i), lane(tree, j)
    if hasattr(a, "replace") and skip:
        a, b = a.replace(**{k: 0 for k in skip}), b.replace(**{k: 0 for k in skip})
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def f32(rows):
    return jnp.asarray(np.asarray(rows, np.float32))


# ------------------------------------------------------------------------------------------------
# trading
# ------------------------------------------------------------------------------------------------

TRADING_KW = dict(window=4, episode_length=6, fee_rate=1e-3, slippage=1e-4)


def test_trading_nan_or_inf_during_an_open_position_keeps_it_exactly_as_a_running_hold_does():
    env, params = make_trading(market=random_walk_market(1, seed=3), action_mode="position_hold", max_hold=4,
                               **TRADING_KW)
    step = vstep(env)
    keys = jax.random.split(jax.random.key(1), 3)
    _, state = env.reset(jax.random.key(0), params)
    state = lanes(state, 3)
    # lane 0 opens a 4-decision hold; lanes 1 and 2 open the same position without a hold
    _, state, *_ = step(keys, state, f32([[0.5, 1.0], [0.5, 0.0], [0.5, 0.0]]), params)
    assert list(np.asarray(state.hold)) == [3, 0, 0]
    # lane 0's action is ignored by its running hold; lanes 1 and 2 send NaN / inf
    obs, state2, reward, term, trunc, info = step(keys, state, f32([[-1.0, 0.0], [NAN, 0.3], [0.2, INF]]), params)
    for j in (1, 2):
        assert_lanes_equal(state2, 0, j, skip=("hold",))
        assert_lanes_equal((obs, reward, info["equity"], info["weights"], info["costs"]), 0, j)
    np.testing.assert_array_equal(state2.units, state.units)
    np.testing.assert_array_equal(state2.cash, state.cash)
    assert list(np.asarray(info["invalid_action"])) == [False, True, True]
    assert list(np.asarray(state2.hold)) == [2, 0, 0]  # an invalid action starts no hold
    assert list(np.asarray(state2.time)) == [2, 2, 2] and not np.asarray(term | trunc).any()
    np.testing.assert_array_equal(info["trade_notional"], 0.0)
    # the next finite action trades normally where no hold runs
    _, state3, *_, info3 = step(keys, state2, f32([[-0.5, 0.0]] * 3), params)
    assert not np.asarray(info3["invalid_action"]).any()
    assert float(state3.units[0, 0]) == float(state2.units[0, 0])  # lane 0: still holding
    assert (np.asarray(state3.units[1:, 0]) < 0).all() and (np.asarray(info3["trade_notional"][1:]) > 0).all()


def test_trading_invalid_discrete_actions_from_flat_equal_the_flat_action_and_the_next_one_trades():
    env, params = make_trading(market=random_walk_market(1, seed=4), action_mode="discrete", **TRADING_KW)
    step = vstep(env)
    actions = [1.0, NAN, INF, -INF, 3.0, -1.0]  # float actions: "flat", then five invalid ones
    n = len(actions)
    keys = jax.random.split(jax.random.key(1), n)
    _, state = env.reset(jax.random.key(0), params)
    obs, state, reward, _, _, info = step(keys, lanes(state, n), f32(actions), params)
    for j in range(1, n):
        assert_lanes_equal((obs, state, reward), 0, j)
    assert list(np.asarray(info["invalid_action"])) == [False] + [True] * (n - 1)
    _, state, _, _, _, info = step(keys, state, f32([2.0] * n), params)  # long
    for j in range(1, n):
        assert_lanes_equal(state, 0, j)
    assert (np.asarray(state.units) > 0).all() and not np.asarray(info["invalid_action"]).any()


def test_trading_nan_or_inf_keeps_units_and_cash_marks_the_position_and_matches_the_numpy_reference():
    env, params = make_trading(market=random_walk_market(2, seed=5), action_mode="continuous", **TRADING_KW)
    step = vstep(env)
    keys = jax.random.split(jax.random.key(1), 3)
    _, s0 = env.reset(jax.random.key(0), params)
    sequence = [f32([[0.3, -0.4]] * 3), f32([[NAN, 0.1], [0.2, INF], [-INF, -INF]]), f32([[0.5, 0.5]] * 3)]
    states, infos = run_sequence(step, keys, lanes(s0, 3), sequence, params)
    before, after, info = states[0], states[1], infos[1]
    np.testing.assert_array_equal(after.units, before.units)
    np.testing.assert_array_equal(after.cash, before.cash)
    close = np.asarray(params.market.close)[int(s0.path), int(s0.t) + 2]
    np.testing.assert_allclose(after.equity, np.asarray(after.cash) + np.asarray(after.units) @ close, rtol=1e-6)
    for name in ("trade_notional", "fee", "spread_cost", "slippage_cost", "costs"):
        np.testing.assert_array_equal(info[name], 0.0)
    assert np.asarray(info["invalid_action"]).all() and not np.asarray(infos[2]["invalid_action"]).any()
    assert (np.asarray(infos[2]["trade_notional"]) > 0).all()
    # the NumPy reference follows the same rule
    for b in range(3):
        ref = TradingEnvNumpy(params.market, window=env.window, episode_length=env.episode_length,
                              action_mode="continuous", reward=env.reward_kind, fee_rate=1e-3, slippage=1e-4)
        ref.reset(path=int(s0.path), t0=int(s0.t))
        for k, actions in enumerate(sequence):
            *_, r_info = ref.step(np.asarray(actions[b], np.float64))
            assert r_info["invalid_action"] == bool(infos[k]["invalid_action"][b])
            np.testing.assert_allclose(states[k].units[b], r_info["units"], rtol=1e-5)
            np.testing.assert_allclose(infos[k]["equity"][b], r_info["equity"], rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# portfolio
# ------------------------------------------------------------------------------------------------


def portfolio(action_mode):
    return make_portfolio(market=random_walk_market(3, seed=6), window=4, episode_length=6, action_mode=action_mode,
                          fee_rate=1e-3, slippage=1e-4)


def test_portfolio_nan_or_inf_from_all_cash_equals_the_all_cash_action_and_minus_inf_logits_are_zero_weights():
    env, params = portfolio("softmax")
    step = vstep(env)
    all_cash = [0.0, -INF, -INF, -INF]  # a valid action: softmax gives weight 1 to cash, 0 elsewhere
    actions = [all_cash, [NAN, 0.0, 0.0, 0.0], [0.0, INF, 0.0, 0.0], [-INF] * 4]
    keys = jax.random.split(jax.random.key(1), 4)
    _, state = env.reset(jax.random.key(0), params)
    obs, state2, reward, _, _, info = step(keys, lanes(state, 4), f32(actions), params)
    for j in (1, 2, 3):
        assert_lanes_equal((obs, state2, reward, info["weights"], info["target_weights"], info["cost"]), 0, j)
    assert list(np.asarray(info["invalid_action"])) == [False, True, True, True]
    np.testing.assert_array_equal(state2.cash, params.initial_cash)


def test_portfolio_nan_or_inf_keeps_cash_and_units_costs_nothing_and_matches_the_numpy_reference():
    for action_mode in ("softmax", "simplex"):
        env, params = portfolio(action_mode)
        step = vstep(env)
        keys = jax.random.split(jax.random.key(1), 3)
        _, s0 = env.reset(jax.random.key(0), params)
        target = np.array([0.2, 0.3, 0.3, 0.2], np.float32)
        valid = np.log(target) if action_mode == "softmax" else target
        sequence = [f32([valid] * 3), f32([[NAN, 0.1, 0.2, 0.3], [0.1, INF, 0.2, 0.3], [0.1, 0.2, -INF, INF]]),
                    f32([valid[::-1]] * 3)]
        states, infos = run_sequence(step, keys, lanes(s0, 3), sequence, params)
        before, after, info = states[0], states[1], infos[1]
        np.testing.assert_array_equal(after.units, before.units)
        np.testing.assert_array_equal(after.cash, before.cash)
        np.testing.assert_array_equal(info["cost"], 0.0)
        np.testing.assert_array_equal(info["turnover"], 0.0)
        assert np.asarray(info["invalid_action"]).all(), action_mode
        assert not np.asarray(infos[2]["invalid_action"]).any() and (np.asarray(infos[2]["cost"]) > 0).all()
        np.testing.assert_allclose(infos[2]["target_weights"], np.broadcast_to(target[::-1], (3, 4)), atol=1e-6)
        for b in range(3):
            ref = PortfolioEnvNumpy(params.market, window=env.window, episode_length=env.episode_length,
                                    action_mode=action_mode, fee_rate=1e-3, slippage=1e-4)
            ref.reset(int(s0.path), int(s0.t0))
            for k, actions in enumerate(sequence):
                _, r_reward, *_, r_info = ref.step(np.asarray(actions[b], np.float64))
                assert r_info["invalid_action"] == bool(infos[k]["invalid_action"][b])
                np.testing.assert_allclose(states[k].units[b], r_info["units"], rtol=1e-5)
                np.testing.assert_allclose(infos[k]["equity"][b], r_info["equity"], rtol=1e-5)
                np.testing.assert_allclose(infos[k]["target_weights"][b], r_info["target_weights"], atol=1e-6)
                np.testing.assert_allclose(infos[k]["cost"][b], r_info["cost"], rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------------------------------------
# execution
# ------------------------------------------------------------------------------------------------


def test_execution_nan_inf_and_out_of_range_actions_are_the_wait_action():
    env, params = make_execution(horizon=6, n_levels=3)
    step = vstep(env)
    actions = [0.0, NAN, INF, -INF, 10.0, -1.0]  # wait, then five invalid actions
    n = len(actions)
    keys = jnp.stack([jax.random.key(7)] * n)  # one key: every lane sees the same book noise
    _, state = env.reset(jax.random.key(0), params)
    obs, state, reward, _, _, info = step(keys, lanes(state, n), f32(actions), params)
    for j in range(1, n):
        assert_lanes_equal((obs, state, reward, {k: v for k, v in info.items() if k != "invalid_action"}), 0, j)
    assert list(np.asarray(info["invalid_action"])) == [False] + [True] * (n - 1)
    np.testing.assert_array_equal(info["fill_qty"], 0.0)
    assert list(np.asarray(state.time)) == [1] * n  # time advanced
    # the next valid action (market 10%) fills in every lane alike
    _, state, _, _, _, info = step(keys, state, f32([1.0] * n), params)
    for j in range(1, n):
        assert_lanes_equal(state, 0, j)
    assert (np.asarray(info["fill_qty"]) > 0).all() and not np.asarray(info["invalid_action"]).any()
    # integer actions out of range wait too
    int_actions = jnp.asarray(np.array([0, 10, -3], np.int32))
    _, s0 = env.reset(jax.random.key(0), params)
    _, s_int, *_, info_int = step(keys[:3], lanes(s0, 3), int_actions, params)
    assert list(np.asarray(info_int["invalid_action"])) == [False, True, True]
    assert_lanes_equal(s_int, 0, 1)
    assert_lanes_equal(s_int, 0, 2)


def test_execution_invalid_actions_still_complete_the_order_at_the_horizon_like_the_numpy_reference():
    h, levels = 4, 3
    env, params = make_execution(horizon=h, n_levels=levels, book="simple")  # the NumPy reference is the simple book

    @jax.jit
    def rollout(key, action):
        k0, k = jax.random.split(key)
        _, s = env.reset(k0, params)

        def body(s, k):
            _, s2, r, d, info = env.step_env(k, s, action, params)
            return s2, (r, d, info)

        return jax.lax.scan(body, s, jax.random.split(k, h))[1]

    key = jax.random.key(3)
    reward, done, info = rollout(key, jnp.float32(NAN))
    assert np.asarray(info["invalid_action"]).all()
    np.testing.assert_array_equal(info["fill_qty"][:-1], 0.0)  # waited ...
    assert bool(info["forced"][-1]) and bool(done[-1])  # ... until the forced completion at t = H - 1
    assert float(info["executed"][-1]) == params.quantity
    ref = ExecutionReference(h, levels, params_to_dict(params))
    k0, k = jax.random.split(key)
    _, s = ref.reset(ob.draw_noise(jax.random.split(k0)[0], levels))
    for t, kt in enumerate(jax.random.split(k, h)):
        _, s, r, d, r_info = ref.step(s, NAN, ob.draw_noise(kt, levels))
        assert r_info["invalid_action"] and d == bool(done[t])
        np.testing.assert_allclose(reward[t], r, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(info["executed"][t], r_info["executed"], rtol=1e-5)
