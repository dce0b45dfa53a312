"""Baseline policies (execution, trading, portfolio) and the vectorised evaluation harness."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

from trading_jax.data.types import Bars
from trading_jax.envs import orderbook as ob
from trading_jax.envs.execution import make_execution
from trading_jax.envs.market import make_market
from trading_jax.envs.portfolio import make_portfolio
from trading_jax.envs.trading import make_trading
from trading_jax.rl.baselines import (
    BASELINES,
    almgren_chriss_holdings,
    almgren_chriss_kappa,
    make_baseline,
    moving_average_signal,
)
from trading_jax.rl.evaluation import compare, rollout_episodes, rollout_many, summarize

H = 20
N_EXEC = 500
EXEC_NAMES = ("immediate", "twap", "vwap", "ac_small", "ac_large", "wait_then_force")


# --------------------------------------------------------------------------------------------------
# Execution: all baselines in one compiled program, on the default book and on a large-impact one
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def execution():
    env, params = make_execution(horizon=H)
    policies = {
        "immediate": make_baseline("execution", "immediate", env, params),
        "twap": make_baseline("execution", "twap", env, params),
        "vwap": make_baseline("execution", "vwap", env, params),
        "ac_small": make_baseline("execution", "almgren_chriss", env, params, lam=1e-6),
        "ac_large": make_baseline("execution", "almgren_chriss", env, params, lam=100.0),
        "wait_then_force": make_baseline("execution", "wait_then_force", env, params),
    }
    assert tuple(policies) == EXEC_NAMES

    def run(p):
        return rollout_many(env, p, tuple(policies.values()), jax.random.key(7), N_EXEC,
                            record=("executed", "reward", "remaining"))

    return env, params, policies, run(params), run


def executed_fraction(stats, name, quantity):
    """`[n, H]` executed / Q after steps 1..H of policy `name` (1 after the episode's end)."""
    i = EXEC_NAMES.index(name)
    frac = np.asarray(stats.trajectory["executed"][i]) / quantity
    ended = np.arange(1, H + 1)[None, :] > np.asarray(stats.length[i])[:, None]
    return np.where(ended, 1.0, frac)


def test_twap_executes_equal_slices_and_finishes_by_the_horizon(execution):
    env, params, _, stats, _ = execution
    frac = executed_fraction(stats, "twap", params.quantity)
    expected = np.arange(1, H + 1) / H
    np.testing.assert_allclose(frac, np.broadcast_to(expected, frac.shape), atol=1e-5)
    i = EXEC_NAMES.index("twap")
    assert np.all(np.asarray(stats.length[i]) == H) and np.all(np.asarray(stats.done[i]))
    np.testing.assert_allclose(np.asarray(stats.info["executed"][i]), params.quantity, rtol=1e-6)


def test_immediate_halves_the_remainder_each_step_and_finishes_first(execution):
    env, params, _, stats, _ = execution
    i = EXEC_NAMES.index("immediate")
    frac = executed_fraction(stats, "immediate", params.quantity)
    k = np.arange(1, 12)
    np.testing.assert_allclose(frac[:, :11], np.broadcast_to(1.0 - 0.5**k, (N_EXEC, 11)), atol=1e-5)
    # Q = 3000, min_lot = 1: after 11 halvings 1.46 shares are left, and half of them would leave < 1 lot
    assert np.all(np.asarray(stats.length[i]) == 12)
    lengths = np.asarray(stats.length).mean(axis=1)
    assert all(lengths[i] < lengths[j] for j in range(len(EXEC_NAMES)) if j != i)


def test_vwap_follows_the_expected_volume_profile(execution):
    env, params, _, stats, _ = execution
    w = np.asarray(ob.volume_profile(params.volume_curvature, H))
    expected = np.cumsum(w) / w.sum()
    frac = executed_fraction(stats, "vwap", params.quantity)
    np.testing.assert_allclose(frac, np.broadcast_to(expected, frac.shape), atol=1e-5)
    assert not np.allclose(expected, np.arange(1, H + 1) / H, atol=1e-2)  # the U-shape differs from TWAP


def test_almgren_chriss_is_twap_as_risk_aversion_vanishes_and_front_loads_when_large(execution):
    env, params, _, stats, _ = execution
    twap = executed_fraction(stats, "twap", params.quantity)
    small = executed_fraction(stats, "ac_small", params.quantity)
    large = executed_fraction(stats, "ac_large", params.quantity)
    np.testing.assert_allclose(small, twap, atol=1e-5)
    # identical actions on the same keys give identical shortfalls (common random numbers)
    sf = np.asarray(stats.info["shortfall_bps"])
    np.testing.assert_allclose(sf[EXEC_NAMES.index("ac_small")], sf[EXEC_NAMES.index("twap")], atol=1e-4)
    # large lam: the executed path tracks the AC schedule 1 - sinh(kappa (H - k)) / sinh(kappa H) through
    # the coarse action sizes, well ahead of TWAP's k / H
    kappa = float(almgren_chriss_kappa(100.0, params, H))
    schedule = 1.0 - np.asarray(almgren_chriss_holdings(kappa, H - np.arange(1, H + 1), H))
    assert kappa * H > 2.0
    assert np.max(np.abs(large - schedule)) < 0.1
    assert np.all(large[:, H // 4 - 1] > 0.5)  # TWAP: 0.25


def test_almgren_chriss_holdings_match_the_sinh_formula_and_tend_to_linear():
    n = np.arange(0, 61)
    for kappa in (0.01, 0.1, 1.0):
        expected = np.sinh(kappa * n) / np.sinh(kappa * 60)
        np.testing.assert_allclose(np.asarray(almgren_chriss_holdings(kappa, n, 60)), expected, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(almgren_chriss_holdings(1e-4, n, 60)), n / 60, atol=1e-4)
    assert np.isfinite(np.asarray(almgren_chriss_holdings(50.0, n, 60))).all()  # no sinh overflow


def test_twap_beats_immediate_under_large_impact_on_paired_episodes(execution):
    env, params, _, _, run = execution
    stats = run(params.replace(depth0=10.0))  # a thin book (the modelled book walks it); same compiled program
    sf = np.asarray(stats.info["shortfall_bps"])
    twap, immediate = sf[EXEC_NAMES.index("twap")], sf[EXEC_NAMES.index("immediate")]
    diff = summarize(twap - immediate)
    se = diff["std"] / np.sqrt(diff["n"])
    assert diff["mean"] < -5.0 * se and diff["ci95_high"] < 0.0


def test_rollout_keeps_the_ending_steps_info_and_ignores_the_auto_reset_episode(execution):
    env, params, _, stats, _ = execution
    i = EXEC_NAMES.index("immediate")
    length = np.asarray(stats.length[i])
    assert np.all(length == 12)
    # the episode's own final info: everything executed, completed
    np.testing.assert_allclose(np.asarray(stats.info["executed"][i]), params.quantity, rtol=1e-6)
    assert np.all(np.asarray(stats.info["completed"][i])) and np.all(np.asarray(stats.info["terminated"][i]))
    # ... while the auto-reset episode that followed is still running at the last step
    assert np.all(np.asarray(stats.trajectory["executed"][i][:, -1]) < params.quantity)
    assert np.all(np.asarray(stats.trajectory["remaining"][i][:, -1]) > 0)
    rewards = np.asarray(stats.trajectory["reward"][i])
    np.testing.assert_allclose(np.asarray(stats.total_reward[i]), rewards[:, :12].sum(axis=1), rtol=1e-5)
    assert not np.allclose(rewards[:, :12].sum(axis=1), rewards.sum(axis=1))


# --------------------------------------------------------------------------------------------------
# Trading: hand-made markets
# --------------------------------------------------------------------------------------------------


def random_market(n_assets, n_time=30, n_paths=2, seed=0):
    """Random-walk bars `[P, T, N]` without gaps (open = previous close), 4 bps spread."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (n_paths, n_time, n_assets)), axis=1))
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    bars = Bars(open_, np.maximum(open_, close), np.minimum(open_, close), close, np.ones_like(close))
    return make_market(bars, 4e-4)


def one_path_market(close, open_=None, spread=0.0):
    close = np.asarray(close, np.float64)[:, None]
    if open_ is None:
        open_ = np.concatenate([close[:1], close[:-1]])  # open[t] = close[t-1]: no gaps
    open_ = np.asarray(open_, np.float64).reshape(close.shape)
    bars = Bars(open_, np.maximum(open_, close), np.minimum(open_, close), close, np.ones_like(close))
    return make_market(bars, np.broadcast_to(np.asarray(spread, np.float64).reshape(-1, 1), close.shape))


HAND_CLOSE = [100.0, 100.0, 104.0, 108.0, 112.0]  # window 1 + 4 decisions: one possible start (bar 0)


@pytest.mark.parametrize("action_mode", ["discrete", "continuous"])
def test_buy_and_hold_returns_the_price_ratio_less_entry_costs_and_flat_earns_zero(action_mode):
    e0 = 100_000.0
    spread = [0.0, 2e-3, 0.0, 0.0, 0.0]  # only the entry fill (bar 1) pays a half spread of 10 bps
    env, params = make_trading(market=one_path_market(HAND_CLOSE, spread=spread), window=1, episode_length=4,
                               action_mode=action_mode, fee_rate=0.0, initial_equity=e0)
    policies = (make_baseline("trading", "buy_and_hold", env, params), make_baseline("trading", "flat", env, params))
    stats = rollout_many(env, params, policies, jax.random.key(0), 2)
    # entry: units = E0 / 100 at 100 * (1 + 1e-3): cash = -1e-3 E0; E_1 = E0 (1 - 1e-3); then re-targeting
    # weight 1 at each open (= previous close) is free, so equity grows as the price: E_4 = E_1 * 112 / 100
    expected = e0 * (1.0 - 1e-3) * 112.0 / 100.0
    np.testing.assert_allclose(np.asarray(stats.info["equity"][0]), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(stats.total_reward[0]), expected / e0 - 1.0, atol=1e-6)
    assert np.all(np.asarray(stats.length) == 4)
    # flat: no trade, exactly zero
    assert np.all(np.asarray(stats.info["equity"][1]) == e0) and np.all(np.asarray(stats.total_reward[1]) == 0.0)

    # with a 10 bps fee and no spread: the entry fee, plus second-order fees (f * previous cash) after
    fee_params = params.replace(fee_rate=1e-3, market=one_path_market(HAND_CLOSE, spread=0.0))
    stats = rollout_many(env, fee_params, policies, jax.random.key(0), 2)
    np.testing.assert_allclose(np.asarray(stats.info["equity"][0]), expected, atol=0.25)  # f^2 E0 = 0.1 per step
    assert np.all(np.asarray(stats.info["equity"][0]) < expected)


def rise_then_fall(n_bars=28, turn=16, step=0.01):
    """Closes rising 1% per bar up to bar `turn`, then falling 1% per bar."""
    log_close = np.log(100.0) + np.concatenate([np.arange(turn + 1) * step, turn * step - np.arange(1, n_bars - turn) * step])
    return np.exp(log_close)


def test_moving_average_signal_matches_numpy_means_of_closes():
    rng = np.random.default_rng(0)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.02, (13, 2)), axis=0))
    log_returns = np.diff(np.log(close), axis=0)  # [12, 2]: bars t-11..t
    for fast, slow in ((2, 5), (3, 13), (1, 2)):
        expected = np.where(close[-fast:].mean(0) > close[-slow:].mean(0), 1.0, -1.0)
        np.testing.assert_array_equal(np.asarray(moving_average_signal(jnp.asarray(log_returns), fast, slow)), expected)


def test_ma_crossover_is_long_after_a_rise_short_after_a_fall_and_never_looks_ahead():
    window, length = 12, 16  # 28 bars: the only start is bar 11, decisions at bars 11..26
    env, params = make_trading(market=one_path_market(rise_then_fall()), window=window, episode_length=length)
    policies = (make_baseline("trading", "ma_crossover", env, params, fast=3, slow=8),
                make_baseline("trading", "ma_crossover", env, params, fast=3, slow=8, short=False))
    stats = rollout_many(env, params, policies, jax.random.key(0), 1, record=("action",))
    actions = np.asarray(stats.trajectory["action"])[:, 0]  # [policy, step]
    assert actions[0, 0] == 2 and actions[1, 0] == 2  # bar 11, after a rise: long
    assert actions[0, -1] == 0 and actions[1, -1] == 1  # bar 26, after 10 falls: short / flat
    # bars after bar 18 replaced by a renewed rise: the decisions at bars <= 18 are unchanged
    changed = rise_then_fall()
    changed[19:] = changed[18] * np.exp(0.03 * np.arange(1, 10))
    stats2 = rollout_many(env, params.replace(market=one_path_market(changed)), policies, jax.random.key(0), 1,
                          record=("action",))
    actions2 = np.asarray(stats2.trajectory["action"])[:, 0]
    upto = 18 - 11  # decision index of bar 18
    np.testing.assert_array_equal(actions2[:, : upto + 1], actions[:, : upto + 1])
    assert not np.array_equal(actions2, actions)  # the later decisions do see the new bars


def test_ma_crossover_refuses_a_slow_window_longer_than_the_observation():
    env, params = make_trading(market=one_path_market(rise_then_fall()), window=12, episode_length=16)
    with pytest.raises(ValueError, match="window"):
        make_baseline("trading", "ma_crossover", env, params, fast=3, slow=14)


@pytest.mark.parametrize("action_mode", ["discrete", "continuous", "position_hold"])
def test_trading_baselines_give_valid_actions_in_every_mode(action_mode):
    n_assets = 1 if action_mode == "position_hold" else 2
    env, params = make_trading(market=random_market(n_assets), window=8, episode_length=8, action_mode=action_mode)
    obs, state = env.reset(jax.random.key(0), params)
    space = env.action_space(params)
    for name in BASELINES["trading"]:
        kw = {"fast": 2, "slow": 6} if name == "ma_crossover" else {}
        policy = make_baseline("trading", name, env, params, **kw)
        action = policy(obs, state, jax.random.key(1), params)
        assert bool(space.contains(action)), (name, action)
    flat = make_baseline("trading", "flat", env, params)(obs, state, None, params)
    weights, _, _ = env._target_weights(state, flat, params)
    assert np.all(np.asarray(weights) == 0.0)


# --------------------------------------------------------------------------------------------------
# Portfolio
# --------------------------------------------------------------------------------------------------


def test_equal_weight_targets_one_over_n_and_buy_and_hold_trades_only_at_the_start():
    env, params = make_portfolio(market=random_market(3), window=4, episode_length=12)
    policies = (make_baseline("portfolio", "equal_weight", env, params),
                make_baseline("portfolio", "buy_and_hold", env, params))
    stats = rollout_many(env, params, policies, jax.random.key(3), 8, record=("target_weights", "turnover", "cost"))
    target = np.asarray(stats.trajectory["target_weights"])  # [2, 8, 12, 4]
    np.testing.assert_allclose(target[0], np.broadcast_to([0.0, 1 / 3, 1 / 3, 1 / 3], target[0].shape), atol=1e-6)
    np.testing.assert_allclose(target[1][:, 0], np.broadcast_to([0.0, 1 / 3, 1 / 3, 1 / 3], (8, 4)), atol=1e-6)
    turnover, cost = np.asarray(stats.trajectory["turnover"]), np.asarray(stats.trajectory["cost"])
    np.testing.assert_allclose(turnover[1][:, 0], 1.0, atol=1e-5)  # all cash -> fully invested
    assert np.all(cost[1][:, 0] > 0.0)
    assert np.max(turnover[1][:, 1:]) < 1e-5 and np.max(cost[1][:, 1:]) < 1e-3  # then no trading
    assert np.mean(turnover[0][:, 1:]) > 1e-3  # equal weight rebalances the drift


@pytest.mark.parametrize("action_mode, include_cash", [("softmax", False), ("simplex", True)])
def test_portfolio_baselines_express_their_weights_in_every_action_mode(action_mode, include_cash):
    env, params = make_portfolio(market=random_market(4), window=4, episode_length=8, action_mode=action_mode,
                                 include_cash=include_cash)
    obs, state = env.reset(jax.random.key(0), params)
    kw = {"cash": 0.2} if include_cash else {}
    action = make_baseline("portfolio", "equal_weight", env, params, **kw)(obs, state, None, params)
    expected = [0.2, 0.2, 0.2, 0.2, 0.2] if include_cash else [0.0, 0.25, 0.25, 0.25, 0.25]
    np.testing.assert_allclose(np.asarray(env.target_weights(action, params)), expected, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------------


def test_summarize_matches_scipys_t_interval():
    values = np.random.default_rng(1).normal(3.0, 2.0, 37)
    s = summarize(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=scipy_stats.sem(values))
    assert s["n"] == 37
    np.testing.assert_allclose([s["mean"], s["std"], s["ci95_low"], s["ci95_high"]],
                               [values.mean(), values.std(ddof=1), low, high], rtol=1e-10)


def test_summarize_of_values_with_a_nan_gives_nan_statistics_and_counts_them():
    s = summarize([1.0, np.nan, 3.0, np.inf, 2.0])
    assert s["n"] == 5 and s["nonfinite"] == 2
    assert all(np.isnan(s[k]) for k in ("mean", "std", "ci95_low", "ci95_high"))
    assert summarize([1.0, 2.0, 3.0])["nonfinite"] == 0


def test_action_shares_count_exactly_the_steps_of_each_episode():
    length, extra = 6, 4  # the rollout runs 4 steps past each episode's end (an auto-reset episode)
    env, params = make_trading(market=random_market(1, n_time=40, n_paths=2), window=4, episode_length=length)

    def by_step(obs, state, key, env_params):
        # decisions 0, 1 -> action 0; decisions 2, 3, 4 -> action 1; decision 5 -> action 2
        return jnp.where(state.time < 2, 0, jnp.where(state.time < 5, 1, 2)).astype(jnp.int32)

    def always_short(obs, state, key, env_params):
        return jnp.int32(0)

    rows = compare(env, params, {"by_step": by_step, "always_short": always_short}, jax.random.key(0), 8,
                   max_steps=length + extra, n_actions=3)
    assert rows[0]["completed"] == 1.0
    # counting the auto-reset episode's steps 0..3 too would give (2 + 2, 3 + 2, 1) / 10
    assert rows[0]["action_share"] == [2 / 6, 3 / 6, 1 / 6]
    assert rows[1]["action_share"] == [1.0, 0.0, 0.0]


def test_compare_rows_match_rollout_episodes_and_report_paired_differences():
    env, params = make_trading(market=random_market(1, n_time=40, n_paths=4), window=4, episode_length=12)
    chosen = {"flat": make_baseline("trading", "flat", env, params),
              "buy_and_hold": make_baseline("trading", "buy_and_hold", env, params)}
    rows = compare(env, params, chosen, jax.random.key(5), 32, metrics=("equity", "total_reward"), reference="flat")
    single = rollout_episodes(env, params, chosen["buy_and_hold"], jax.random.key(5), 32)
    equity = np.asarray(single.info["equity"], np.float64)
    assert [r["policy"] for r in rows] == ["flat", "buy_and_hold"]
    np.testing.assert_allclose(rows[1]["equity_mean"], equity.mean(), rtol=1e-6)
    assert rows[0]["equity_mean"] == params.initial_equity and rows[0]["equity_std"] == 0.0
    assert rows[0]["equity_diff_mean"] == 0.0 and rows[1]["completed"] == 1.0
    # paired differences over the same episodes: buy-and-hold minus flat
    np.testing.assert_allclose(rows[1]["equity_diff_mean"], equity.mean() - params.initial_equity, rtol=1e-6)
    low, high = rows[1]["total_reward_diff_ci95_low"], rows[1]["total_reward_diff_ci95_high"]
    assert low <= rows[1]["total_reward_diff_mean"] <= high
    # the same key gives the same episodes whatever else is evaluated (common random numbers)
    again = rollout_episodes(env, params, chosen["buy_and_hold"], jax.random.key(5), 32)
    np.testing.assert_array_equal(np.asarray(again.info["equity"]), np.asarray(single.info["equity"]))


def test_make_baseline_rejects_unknown_names_and_settings():
    env, params = make_execution(horizon=H)
    with pytest.raises(KeyError, match="twap"):
        make_baseline("execution", "nope", env, params)
    with pytest.raises(KeyError, match="execution"):
        make_baseline("futures", "twap", env, params)
    with pytest.raises(TypeError, match="lam"):
        make_baseline("execution", "twap", env, params, lam=1.0)
    with pytest.raises(ValueError):
        make_baseline("execution", "almgren_chriss", env, params, lam=-1.0)
