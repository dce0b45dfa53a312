"""The portfolio environment: hand-worked accounting, a NumPy reference, invariants, no look-ahead."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.wrappers.purerl import FlattenObservationWrapper, LogWrapper

from trading_jax.data.types import Bars
from trading_jax.envs import make
from trading_jax.envs.market import make_market
from trading_jax.envs.portfolio import make_portfolio, project_capped_simplex
from trading_jax.envs.reference.portfolio import PortfolioEnvNumpy, project_capped_simplex_np


def random_market(seed=0, n_paths=3, n_time=20, n_assets=3, n_features=2, spread=4e-4):
    """A small random-walk market `[P, T, N]` with consistent OHLC and causal-looking features."""
    rng = np.random.default_rng(seed)
    log_close = np.log(100.0) + np.cumsum(rng.normal(0.0, 0.02, (n_paths, n_time, n_assets)), axis=1)
    close = np.exp(log_close)
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1) * np.exp(rng.normal(0, 0.005, close.shape))
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    volume = rng.uniform(1e3, 2e3, close.shape)
    features = rng.normal(size=close.shape + (n_features,))
    spreads = rng.uniform(0.5, 1.5, close.shape) * spread
    return make_market(Bars(open_, high, low, close, volume), spreads, features)


def explicit_market(open_, close, spread=0.0):
    """One-path market from explicit `[T, N]` opens and closes."""
    open_, close = np.asarray(open_, np.float64), np.asarray(close, np.float64)
    bars = Bars(open_, np.maximum(open_, close), np.minimum(open_, close), close, np.ones_like(close))
    return make_market(bars, spread)


# --------------------------------------------------------------------------------------------------
# Hand-worked accounting: 2 assets + cash, 3 bars, 10 bps fee, no spread.
#   bar:       0    1    2
#   open  A:  10   10   12      close A: 10  11  12
#   open  B:  20   20   19      close B: 20  19  20
# --------------------------------------------------------------------------------------------------
HAND_OPEN = [[10.0, 20.0], [10.0, 20.0], [12.0, 19.0]]
HAND_CLOSE = [[10.0, 20.0], [11.0, 19.0], [12.0, 20.0]]
HAND_TARGETS = [np.array([0.2, 0.5, 0.3]), np.array([0.0, 0.5, 0.5])]  # cash, A, B


def hand_env(action_mode, reward="log_growth", risk_aversion=1.0, spread=0.0, slippage=0.0):
    return make_portfolio(
        market=explicit_market(HAND_OPEN, HAND_CLOSE, spread), window=1, episode_length=2,
        action_mode=action_mode, reward=reward, fee_rate=1e-3, slippage=slippage, initial_cash=100_000.0,
        risk_aversion=risk_aversion,
    )


def hand_action(action_mode, target):
    # softmax(log w) = w; the projection of a feasible point is itself
    return jnp.log(jnp.maximum(jnp.asarray(target), 1e-30)) if action_mode == "softmax" else jnp.asarray(target)


def run_hand(env, params, action_mode):
    obs, state = env.reset(jax.random.key(0), params)
    out = [(obs, state, None, None, None, None)]
    for k, target in enumerate(HAND_TARGETS):
        obs, state, reward, term, trunc, info = env.step(jax.random.key(k + 1), state, hand_action(action_mode, target),
                                                         params)
        out.append((obs, state, reward, term, trunc, info))
    return out


@pytest.mark.parametrize("action_mode", ["softmax", "simplex"])
def test_hand_worked_weights_turnover_cost_and_log_growth(action_mode):
    env, params = hand_env(action_mode)
    out = run_hand(env, params, action_mode)
    _, state0, *_ = out[0]
    assert int(state0.t0) == 0 and float(state0.equity) == 100_000.0
    np.testing.assert_allclose(state0.weights, [1.0, 0.0, 0.0])  # starts all in cash

    # Step 1: from all cash to [0.2, 0.5, 0.3] at open[1] = (10, 20); drifted risky weights (0, 0).
    _, s1, r1, term1, trunc1, info1 = out[1]
    turnover1 = 0.5 + 0.3
    cost1 = 0.001 * turnover1 * 100_000.0  # 80
    net1 = 100_000.0 - cost1  # 99,920
    cash1, units_a1, units_b1 = 0.2 * net1, 0.5 * net1 / 10.0, 0.3 * net1 / 20.0  # 19,984; 4,996; 1,498.8
    equity1 = cash1 + units_a1 * 11.0 + units_b1 * 19.0  # 103,417.2 at close[1] = (11, 19)
    assert equity1 == pytest.approx(103_417.2)
    np.testing.assert_allclose(float(info1["turnover"]), turnover1, rtol=1e-6)
    np.testing.assert_allclose(float(info1["cost"]), cost1, rtol=1e-5)
    np.testing.assert_allclose(float(s1.cash), cash1, rtol=1e-6)
    np.testing.assert_allclose(s1.units, [units_a1, units_b1], rtol=1e-6)
    np.testing.assert_allclose(float(s1.equity), equity1, rtol=1e-6)
    np.testing.assert_allclose(s1.weights, [cash1 / equity1, units_a1 * 11 / equity1, units_b1 * 19 / equity1],
                               rtol=1e-5)
    np.testing.assert_allclose(float(r1), math.log(equity1 / 100_000.0), rtol=1e-4)
    assert not bool(term1) and not bool(trunc1)

    # Step 2: to [0, 0.5, 0.5] at open[2] = (12, 19): the weights first drift with prices.
    _, s2, r2, term2, trunc2, info2 = out[2]
    value2 = cash1 + units_a1 * 12.0 + units_b1 * 19.0  # 108,413.2
    drift_a, drift_b = units_a1 * 12.0 / value2, units_b1 * 19.0 / value2  # 0.55299, 0.26267
    turnover2 = abs(0.5 - drift_a) + abs(0.5 - drift_b)
    cost2 = 0.001 * turnover2 * value2
    net2 = value2 - cost2
    equity2 = 0.5 * net2 / 12.0 * 12.0 + 0.5 * net2 / 19.0 * 20.0  # close[2] = (12, 20), no cash left
    np.testing.assert_allclose(float(info2["turnover"]), turnover2, rtol=1e-5)
    np.testing.assert_allclose(float(info2["cost"]), cost2, rtol=1e-4)
    # the episode is over (2 decisions): info describes the final bar, the state is already reset
    np.testing.assert_allclose(float(info2["equity"]), equity2, rtol=1e-6)
    np.testing.assert_allclose(info2["weights"], [0.0, 0.5 * net2 / equity2, 0.5 * net2 * 20 / 19 / equity2],
                               atol=1e-6)
    assert int(s2.time) == 0 and float(s2.equity) == 100_000.0
    np.testing.assert_allclose(float(r2), math.log(equity2 / equity1), rtol=1e-4)
    # log growth telescopes: the episode's rewards sum to log(final / initial)
    np.testing.assert_allclose(float(r1 + r2), math.log(equity2 / 100_000.0), rtol=1e-4)
    assert bool(trunc2) and not bool(term2)  # 2 decisions = episode_length


def test_risk_adjusted_reward_subtracts_squared_deviation_from_the_running_mean():
    env, params = hand_env("simplex", reward="risk_adjusted", risk_aversion=2.0)
    base_env, base_params = hand_env("simplex")
    out, base = run_hand(env, params, "simplex"), run_hand(base_env, base_params, "simplex")
    g1, g2 = float(base[1][5]["log_growth"]), float(base[2][5]["log_growth"])
    np.testing.assert_allclose(float(out[1][2]), g1 - 2.0 * (g1 - 0.0) ** 2, rtol=1e-5)  # mean of no steps: 0
    np.testing.assert_allclose(float(out[2][2]), g2 - 2.0 * (g2 - g1) ** 2, rtol=1e-5)  # mean of step 1: g1
    np.testing.assert_allclose(float(out[2][5]["equity"]), float(base[2][5]["equity"]), rtol=1e-7)


def test_spread_and_slippage_add_to_the_fee_per_unit_of_turnover():
    env, params = hand_env("simplex", spread=0.004, slippage=5e-4)
    out = run_hand(env, params, "simplex")
    # rate = fee 10 bps + half spread 20 bps + slippage 5 bps = 35 bps on the 0.8 of turnover
    np.testing.assert_allclose(float(out[1][5]["cost"]), 0.0035 * 0.8 * 100_000.0, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# jit(vmap(step)) against the NumPy reference, with auto-resets, and the accounting invariants.
# --------------------------------------------------------------------------------------------------
# both action modes, both rewards, with and without cash (each configuration costs two compilations)
CONFIGS = {
    "softmax/log_growth": dict(action_mode="softmax", reward="log_growth"),
    "simplex/risk_adjusted": dict(action_mode="simplex", reward="risk_adjusted", cap=0.45, risk_aversion=3.0),
    "simplex/log_growth/no_cash": dict(action_mode="simplex", reward="log_growth", cap=0.5, include_cash=False),
}
N_ENVS, N_STEPS, WINDOW, LENGTH = 5, 13, 3, 5


def random_actions(rng, action_mode, k):
    if action_mode == "softmax":
        return rng.normal(0.0, 2.0, (N_STEPS, N_ENVS, k)).astype(np.float32)
    scores = rng.uniform(0.0, 1.0, (N_STEPS, N_ENVS, k))
    return np.where(rng.uniform(size=scores.shape) < 0.2, 0.0, scores).astype(np.float32)


_JITTED: dict = {}


def batched(env):
    """jit(vmap(reset)) and jit(vmap(step)) of `env`, compiled once per environment setting."""
    if env not in _JITTED:
        _JITTED[env] = (jax.jit(jax.vmap(env.reset, in_axes=(0, None))),
                        jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None))))
    return _JITTED[env]


def rollout(env, params, key, actions):
    """Reset `N_ENVS` environments and step them through `actions` `[S, B, K]` with jit(vmap(step))."""
    reset, step = batched(env)
    keys = jax.random.split(key, N_STEPS + 1)
    obs, state = reset(jax.random.split(keys[0], N_ENVS), params)
    steps = [(obs, state)]
    for k in range(N_STEPS):
        obs, state, reward, term, trunc, info = step(jax.random.split(keys[k + 1], N_ENVS), state, actions[k], params)
        steps.append((obs, state, reward, term, trunc, info))
    return steps


@pytest.fixture(scope="module", params=list(CONFIGS))
def rolled(request):
    kw = CONFIGS[request.param]
    market = random_market(seed=len(request.param))
    env, params = make_portfolio(market=market, window=WINDOW, episode_length=LENGTH, **kw)
    actions = random_actions(np.random.default_rng(7), kw["action_mode"], env.num_actions)
    return kw, env, params, actions, rollout(env, params, jax.random.key(3), actions)


def test_jit_vmap_step_equals_the_numpy_reference_on_random_actions(rolled):
    kw, env, params, actions, steps = rolled
    refs = [PortfolioEnvNumpy(params.market, window=WINDOW, episode_length=LENGTH, **kw) for _ in range(N_ENVS)]
    obs0, state0 = steps[0]
    for b, ref in enumerate(refs):
        np.testing.assert_allclose(ref.reset(int(state0.path[b]), int(state0.t0[b])), obs0[b], rtol=1e-5, atol=1e-6)
    n_done = 0
    for k in range(N_STEPS):
        obs, state, reward, term, trunc, info = steps[k + 1]
        for b, ref in enumerate(refs):
            r_obs, r_reward, r_term, r_trunc, r_info = ref.step(actions[k, b])
            np.testing.assert_allclose(float(reward[b]), r_reward, rtol=1e-4, atol=2e-6)
            np.testing.assert_allclose(float(info["equity"][b]), r_info["equity"], rtol=1e-5)
            np.testing.assert_allclose(info["weights"][b], r_info["weights"], atol=2e-6)
            np.testing.assert_allclose(info["target_weights"][b], r_info["target_weights"], atol=2e-6)
            np.testing.assert_allclose(float(info["turnover"][b]), r_info["turnover"], rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(float(info["cost"][b]), r_info["cost"], rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(info["final_observation"][b], r_obs, rtol=1e-4, atol=2e-6)
            assert (bool(term[b]), bool(trunc[b])) == (r_term, r_trunc)
            if r_term or r_trunc:  # the JAX env auto-reset: follow it to its new path and start
                n_done += 1
                r_obs = ref.reset(int(state.path[b]), int(state.t0[b]))
            np.testing.assert_allclose(obs[b], r_obs, rtol=1e-4, atol=2e-6)
    assert n_done >= N_ENVS  # every environment went through at least one auto-reset


def test_accounting_invariants_hold_at_every_step(rolled):
    kw, env, params, actions, steps = rolled
    close = np.asarray(params.market.close, np.float64)
    for k, (obs, state, *rest) in enumerate(steps):
        t = np.asarray(state.t0 + state.time)
        price = close[np.asarray(state.path), t]  # [B, N]
        equity = np.asarray(state.cash, np.float64) + np.sum(np.asarray(state.units, np.float64) * price, axis=1)
        np.testing.assert_allclose(state.equity, equity, rtol=1e-6)  # equity = cash + units . price
        np.testing.assert_allclose(np.sum(state.weights, axis=1), 1.0, atol=1e-5)  # weights sum to 1
        assert np.all(np.asarray(state.weights) >= -1e-6) and np.all(np.asarray(state.units) >= 0)
        assert np.all(np.asarray(state.time) <= LENGTH)
        np.testing.assert_array_equal(obs.shape, (N_ENVS, env.obs_size))
        assert np.all(np.isfinite(obs))
        if rest:
            reward, term, trunc, info = rest
            target = np.asarray(info["target_weights"])
            np.testing.assert_allclose(target.sum(axis=1), 1.0, atol=1e-5)
            if kw["action_mode"] == "simplex":
                assert np.all(target >= 0) and np.all(target[:, 1:] <= kw["cap"] + 1e-6)
            if not kw.get("include_cash", True):
                np.testing.assert_allclose(target[:, 0], 0.0)
            assert np.all(np.isfinite(reward)) and np.all(np.asarray(info["cost"]) >= 0)


def test_same_key_gives_the_same_trajectory_bit_for_bit(rolled):
    kw, env, params, actions, steps = rolled
    again = rollout(env, params, jax.random.key(3), actions)
    for a, b in zip(steps, again):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(x, y)
    other = rollout(env, params, jax.random.key(4), actions)
    assert not np.array_equal(other[0][1].t0, steps[0][1].t0) or not np.array_equal(other[0][1].path,
                                                                                   steps[0][1].path)


# --------------------------------------------------------------------------------------------------
# Capped-simplex projection
# --------------------------------------------------------------------------------------------------
def test_capped_simplex_projection_is_feasible_matches_the_sort_based_reference_and_is_idempotent():
    rng = np.random.default_rng(0)
    project = jax.jit(project_capped_simplex)
    cases = [np.full(5, 0.3), np.full(5, 1.0), np.array([1.0, 0.3, 0.3, 0.3, 0.3]),  # uncapped cash first
             np.full(8, 0.2), np.full(8, 0.125)]  # 8 x 0.125 = 1: the only feasible point is all at the cap
    for upper in cases:
        upper = upper.astype(np.float32)
        k = upper.size
        v = (rng.normal(size=(200, k)) * rng.choice([0.1, 1.0, 10.0], size=(200, 1))).astype(np.float32)
        w = np.asarray(project(v, upper))
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)
        assert w.min() >= 0.0 and np.all(w <= upper + 1e-7)
        ref = np.stack([project_capped_simplex_np(x, upper) for x in v])
        np.testing.assert_allclose(w, ref, atol=2e-5)
        np.testing.assert_allclose(np.asarray(project(w, upper)), w, atol=2e-6)  # feasible points are fixed
        # the reference is optimal (KKT): free coordinates share one threshold theta, zeros lie below it,
        # capped ones above theta + cap
        for x, y in zip(v.astype(np.float64), ref):
            free, zero, top = (y > 1e-9) & (y < upper - 1e-9), y <= 1e-9, y >= upper - 1e-9
            if free.any():
                theta = (x - y)[free]
                np.testing.assert_allclose(theta, theta[0], atol=1e-6 * max(1.0, abs(theta[0])))
                assert np.all(x[zero] <= theta[0] + 1e-6) and np.all(x[top] - upper[top] >= theta[0] - 1e-6)
    # a worked case: projecting (0.6, 0.3, 0.1) with cap 0.5 caps the first and shares the rest equally
    np.testing.assert_allclose(np.asarray(project(jnp.array([0.6, 0.3, 0.1]), 0.5)), [0.5, 0.35, 0.15], atol=1e-6)


# --------------------------------------------------------------------------------------------------
# No look-ahead
# --------------------------------------------------------------------------------------------------
def perturbed(market, after: int, fields=("open", "high", "low", "close")):
    """The market with every listed field of bars > `after` multiplied by a random factor."""
    rng = np.random.default_rng(11)
    arrays = {f: np.asarray(getattr(market, f), np.float64).copy() for f in ("open", "high", "low", "close", "volume")}
    factor = np.exp(rng.normal(0, 0.2, arrays["close"][:, after + 1:].shape))
    for f in fields:
        arrays[f][:, after + 1:] *= factor
    return make_market(Bars(**arrays), market.spread, market.features)


def test_observations_and_fills_at_t_do_not_depend_on_later_bars():
    market = random_market(seed=5, n_paths=1, n_time=16)
    env, params = make_portfolio(market=market, window=3, episode_length=6, action_mode="simplex", cap=0.6)
    reset_at, step_env = jax.jit(env.reset_at), jax.jit(env.step_env)
    t = 6
    action = jnp.array([0.1, 0.5, 0.3, 0.1])
    obs, state = reset_at(0, t, params)
    _, after, reward, *_ , info = step_env(jax.random.key(0), state, action, params)

    # bars after t: the observation at t is unchanged
    later = params.replace(market=perturbed(market, t))
    obs_l, state_l = reset_at(0, t, later)
    np.testing.assert_array_equal(obs, obs_l)
    # bars after t + 1: the fill at open[t+1], its costs, the mark at close[t+1] and the reward are unchanged
    later2 = params.replace(market=perturbed(market, t + 1))
    _, after2, reward2, *_, info2 = step_env(jax.random.key(0), state, action, later2)
    for x, y in zip(jax.tree.leaves((after, reward, info)), jax.tree.leaves((after2, reward2, info2))):
        np.testing.assert_array_equal(x, y)
    # the close of t + 1 (seen only after the fill) changes the mark but not the fill
    close_only = params.replace(market=perturbed(market, t, fields=("close",)))
    _, after3, _, *_, info3 = step_env(jax.random.key(0), state, action, close_only)
    np.testing.assert_array_equal(after.units, after3.units)
    np.testing.assert_array_equal(info["cost"], info3["cost"])
    assert float(after.equity) != float(after3.equity)
    # whereas the open of t + 1 is the fill price
    open_only = params.replace(market=perturbed(market, t, fields=("open",)))
    _, after4, *_ = step_env(jax.random.key(0), state, action, open_only)
    assert not np.array_equal(after.units, after4.units)


# --------------------------------------------------------------------------------------------------
# Episodes, wrappers, settings
# --------------------------------------------------------------------------------------------------
def test_ruin_terminates_the_episode_and_auto_resets():
    # asset A loses 90% between open[1] and close[1]; an all-in portfolio is ruined
    # (same shapes and settings as the hand-worked simplex case, so the compiled step is reused)
    env, params = make_portfolio(market=explicit_market([[10, 10], [10, 10], [1, 10]], [[10, 10], [1, 10], [1, 10]]),
                                 window=1, episode_length=2, action_mode="simplex", ruin_fraction=0.2)
    _, state = env.reset(jax.random.key(0), params)
    assert int(state.t0) == 0
    obs, new, reward, term, trunc, info = env.step(jax.random.key(1), state, jnp.array([0.0, 1.0, 0.0]), params)
    assert bool(term) and not bool(trunc)
    assert float(info["equity"]) < 0.2 * 100_000 and np.isfinite(float(reward))
    assert int(new.time) == 0 and float(new.equity) == 100_000.0  # auto-reset to a fresh episode
    np.testing.assert_allclose(info["final_observation"][2:5], [0.0, 1.0, 0.0], atol=1e-6)  # weights, all in A


def test_gymnax_wrappers_log_episode_returns_under_jit_and_vmap():
    market = random_market(seed=1, n_paths=2, n_time=12)
    env, params = make("portfolio", market=market, window=2, episode_length=4)
    wrapped = LogWrapper(FlattenObservationWrapper(env))
    reset = jax.jit(jax.vmap(wrapped.reset, in_axes=(0, None)))
    step = jax.jit(jax.vmap(wrapped.step, in_axes=(0, 0, 0, None)))
    obs, state = reset(jax.random.split(jax.random.key(0), 3), params)
    assert obs.shape == (3, env.observation_space(params).shape[0])
    total = np.zeros(3)
    for k in range(4):
        action = jax.vmap(env.action_space(params).sample)(jax.random.split(jax.random.key(10 + k), 3))
        obs, state, reward, term, trunc, info = step(jax.random.split(jax.random.key(k), 3), state, action, params)
        total += np.asarray(reward)
    assert np.all(np.asarray(info["returned_episode"]))  # truncated after 4 decisions
    np.testing.assert_allclose(info["returned_episode_returns"], total, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(info["returned_episode_lengths"], 4)


def test_env_params_vmap_over_fee_rates_and_higher_fees_cost_more():
    market = random_market(seed=2, n_paths=1, n_time=12, spread=0.0)
    env, params = make_portfolio(market=market, window=2, episode_length=4)
    fees = jnp.array([0.0, 1e-3, 1e-2])
    batch = jax.tree.map(lambda x: x, params).replace(fee_rate=fees)
    axes = jax.tree.map(lambda _: None, params).replace(fee_rate=0)
    _, state = env.reset(jax.random.key(0), params)
    step = jax.jit(jax.vmap(env.step, in_axes=(None, None, None, axes)))
    _, _, reward, _, _, info = step(jax.random.key(1), state, jnp.array([0.0, 1.0, 2.0, 3.0]), batch)
    cost = np.asarray(info["cost"])
    assert cost[0] == 0.0 and cost[0] < cost[1] < cost[2]
    assert reward[0] > reward[1] > reward[2]


def test_default_portfolio_runs_on_a_synthetic_market_with_documented_spaces():
    env, params = make_portfolio(window=8, episode_length=16)
    assert params.market.close.shape == (64, 16 + 8 + 64, 4)
    obs, state = env.reset(jax.random.key(0), params)
    assert obs.shape == env.observation_space(params).shape == (8 * 4 + 5 + 2,) and obs.dtype == jnp.float32
    assert env.action_space(params).shape == (5,)
    np.testing.assert_allclose(obs[32:37], [1, 0, 0, 0, 0])  # starts in cash
    np.testing.assert_allclose(obs[37:], [0.0, 1.0])  # no gain yet, whole episode ahead
    obs, state, reward, *_ = env.step(jax.random.key(1), state, jnp.zeros(5), params)
    np.testing.assert_allclose(float(state.weights.sum()), 1.0, atol=1e-6)
    assert np.isfinite(float(reward))


def test_real_daily_stocks_replay_runs(shared_data):
    from trading_jax.data import chronological_split, load_ohlcv

    files = [shared_data / "stocks_daily" / f"{s}.csv" for s in ("AAPL", "MSFT", "XOM")]
    data = load_ohlcv(files)
    split = chronological_split(data.n_time).train
    env, params = make_portfolio(data=data, split=split, symbols=["AAPL", "MSFT", "XOM"], window=10,
                                 episode_length=20, action_mode="simplex", cap=0.5)
    assert params.market.close.shape == (1, len(split), 3)
    keys = jax.random.split(jax.random.key(0), 25)
    obs, state = env.reset(keys[0], params)
    step = jax.jit(env.step)
    for k in range(1, 25):
        obs, state, reward, term, trunc, info = step(keys[k], state, jnp.array([0.1, 0.3, 0.3, 0.3]), params)
        assert np.isfinite(float(reward)) and np.all(np.isfinite(obs))
        np.testing.assert_allclose(float(jnp.sum(state.weights)), 1.0, atol=1e-5)
        assert abs(float(reward)) < 0.2  # daily log growth of a diversified large-cap book


@pytest.mark.parametrize("kw, match", [
    (dict(action_mode="weights"), "action_mode must be one of"),
    (dict(reward="sharpe"), "reward must be one of"),
    (dict(window=0), "window must be an integer >= 1"),
    (dict(action_mode="simplex", include_cash=False, cap=0.3), r"cap \* n_assets must be >= 1"),
    (dict(cap=1.5), r"cap must be in \(0, 1\]"),
    (dict(fee_rate=-1e-3), "fee_rate must be a finite number >= 0"),
    (dict(ruin_fraction=1.0), r"ruin_fraction must be in \[0, 1\)"),
    (dict(episode_length=30), "market has 12 bars but an episode needs"),
    (dict(n_assets=5), "n_assets=5 but the market has 3 assets"),
])
def test_bad_settings_raise_clear_errors(kw, match):
    market = random_market(seed=0, n_paths=1, n_time=12)
    with pytest.raises(ValueError, match=match):
        make_portfolio(market=market, **{"window": 2, "episode_length": 4, **kw})


def test_a_single_asset_market_is_refused():
    market = random_market(seed=0, n_paths=1, n_time=12, n_assets=1)
    with pytest.raises(ValueError, match="n_assets >= 2"):
        make_portfolio(market=market, window=2, episode_length=4)
