"""The vectorised backtester (fills at t+1, costs, NaN bars, batching) and the risk functions, by hand and by reference.

Sizes are tiny and most tests share two shapes ([12, 3] bars, and the 5-bar hand-worked market) so that
`backtest` compiles only a handful of times for the whole file.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from trading_jax.data import walk_forward_folds
from trading_jax.data.types import Bars
from trading_jax.evaluation import performance
from trading_jax.evaluation.backtest import BacktestConfig, backtest, signals_to_weights, walk_forward
from trading_jax.evaluation.risk import (apply_position_limits, check_limits, exposure,
                                         parametric_expected_shortfall, volatility_target)


def bars(open_, close) -> Bars:
    return Bars(np.asarray(open_, np.float32), None, None, np.asarray(close, np.float32), None)


def reference_equity(open_, close, weights, fee_rate=0.0, half_spread=0.0, slippage=0.0, fill="next_open",
                     equity=1.0):
    """Plain unit-and-cash accounting, one bar at a time in float64 (the trading env's rules, NaN-free)."""
    fill_price = open_ if fill == "next_open" else close
    cash, units, path = equity, np.zeros(close.shape[1]), [equity]
    for t in range(1, close.shape[0]):
        before = cash + units @ fill_price[t]
        target = weights[t - 1] * before / fill_price[t]
        trade = target - units
        execution = fill_price[t] * (1 + np.sign(trade) * (half_spread + slippage))
        cash = cash - trade @ execution - fee_rate * np.sum(np.abs(trade) * execution)
        units = target
        path.append(cash + units @ close[t])
    return np.array(path)


def random_market(seed: int, n_time: int = 12, n_assets: int = 3):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_time, n_assets)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.01, (n_time, n_assets)))
    return open_, close


COSTS = BacktestConfig(fee_rate=2e-3, half_spread=1e-3, slippage=5e-4)


# ------------------------------------------------------------------------------ hand-worked accounting


def test_a_hand_worked_two_asset_backtest_charges_fees_spread_and_impact_at_next_open():
    # Equity 100; fee 1%, half-spread 0.5%, impact 0.1 * sigma (2%) * sqrt(units / adv), adv 20 units for asset
    # A at bar 1 only (0 elsewhere = no impact). Targets decided at close t are filled at open t+1.
    #
    # bar 1: fill [0.5, 0] at open [10, 20]: E^o = 100 (cash), buy 0.5 * 100 / 10 = 5 A.
    #        impact = 0.1 * 0.02 * sqrt(5 / 20) = 0.001; exec = 10 * (1 + 0.005 + 0.001) = 10.06
    #        fee = 0.01 * 5 * 10.06 = 0.503, spread = 5 * 10 * 0.005 = 0.25, impact = 5 * 10 * 0.001 = 0.05
    #        cash = 100 - 50.3 - 0.503 = 49.197; E_1 = 49.197 + 5 * 11 = 104.197 (r = 4.197%, gross 5%)
    # bar 2: fill [0.5, -0.5] at open [12, 20]: E^o = 49.197 + 5 * 12 = 109.197
    #        units [0.5 * 109.197 / 12, -0.5 * 109.197 / 20] = [4.549875, -2.729925]: sell 0.450125 A, short 2.729925 B
    #        traded at the open: 0.450125 * 12 + 2.729925 * 20 = 60; received 60 * 0.995 = 59.7
    #        fee = 0.01 * 59.7 = 0.597, spread = 60 * 0.005 = 0.3; cash = 49.197 + 59.7 - 0.597 = 108.3
    #        E_2 = 108.3 + 4.549875 * 12 - 2.729925 * 22 = 102.84015
    # bar 3: fill [0, -0.5] at open [12, 22]: E^o = 108.3 + 4.549875 * 12 - 2.729925 * 22 = 102.84015
    #        sell 4.549875 A at 11.94; B to -0.5 * 102.84015 / 22 = -2.337276: buy back 0.392649 at 22.11
    #        traded 4.549875 * 12 + 0.392649 * 22 = 63.236775; fee 0.01 * (54.3255075 + 8.681460) = 0.630070,
    #        spread 0.316184; cash 153.313971; E_3 = 153.313971 - 2.337276 * 21 = 104.231173
    # bar 4: fill [0, 0] at open [11, 22]: E^o = 153.313971 - 2.337276 * 22 = 101.893896; buy back 2.337276 B
    #        at 22.11: fee 0.516772, spread 0.257100; E_4 = cash = 101.120024
    # (the last target [1, 1], decided at the last bar, is never filled)
    open_ = [[10, 20], [10, 20], [12, 20], [12, 22], [11, 22]]
    close = [[10, 20], [11, 21], [12, 22], [12, 21], [12, 22]]
    weights = [[0.5, 0], [0.5, -0.5], [0, -0.5], [0, 0], [1, 1]]
    adv = np.zeros((5, 2), np.float32)
    adv[1, 0] = 20.0
    config = BacktestConfig(fee_rate=0.01, half_spread=0.005, impact_coefficient=0.1, initial_equity=100.0)
    result = backtest(bars(open_, close), np.asarray(weights, np.float32), config, adv=adv, sigma=0.02)

    equity = [100.0, 104.197, 102.84015, 104.23117252, 101.12002426]
    np.testing.assert_allclose(result.equity, equity, rtol=1e-6)
    np.testing.assert_allclose(result.net_returns, [0.0] + [equity[t] / equity[t - 1] - 1 for t in range(1, 5)],
                               atol=1e-6)
    # costs as fractions of the previous close's equity
    np.testing.assert_allclose(result.fees, [0, 0.503 / 100, 0.597 / 104.197, 0.63006974 / 102.84015,
                                             0.51677175 / 104.23117252], atol=1e-6)
    np.testing.assert_allclose(result.spread, [0, 0.25 / 100, 0.3 / 104.197, 0.31618388 / 102.84015,
                                               0.25710038 / 104.23117252], atol=1e-6)
    np.testing.assert_allclose(result.impact, [0, 0.05 / 100, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(result.gross_returns[1], 0.05, atol=1e-6)  # half the book, A up 10% open to close
    np.testing.assert_allclose(result.gross_returns - result.net_returns,
                               result.fees + result.spread + result.slippage + result.impact, atol=1e-7)
    # bar 1 trades half the equity into A; bar 2 sells 0.450125 * 12 / 109.197 of A, shorts half in B
    np.testing.assert_allclose(result.trades[1], [0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(result.trades[2], [-0.450125 * 12 / 109.197, -0.5], atol=1e-6)
    np.testing.assert_allclose(result.turnover[4], 2.33727614 * 22 / 101.89389639, atol=1e-6)
    # held at the close of bar 1: 5 A at 11 over 104.197
    np.testing.assert_allclose(result.weights[1], [55 / 104.197, 0.0], atol=1e-6)


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
def test_equity_matches_a_unit_and_cash_reference_with_shorts_and_costs(fill):
    open_, close = random_market(0)
    weights = np.random.default_rng(1).uniform(-0.6, 0.6, close.shape)
    config = BacktestConfig(fee_rate=2e-3, half_spread=1e-3, slippage=5e-4, fill=fill)
    result = backtest(bars(open_, close), weights.astype(np.float32), config)
    expected = reference_equity(open_, close, weights, 2e-3, 1e-3, 5e-4, fill)
    np.testing.assert_allclose(result.equity, expected, rtol=2e-6)
    assert int(result.iterations) <= 8  # the cost recurrence converges in a few sweeps


def test_a_close_only_price_array_fills_at_the_next_close_and_is_refused_for_open_fills():
    open_, close = random_market(0)
    weights = np.random.default_rng(1).uniform(-0.6, 0.6, close.shape).astype(np.float32)
    config = BacktestConfig(fee_rate=2e-3, half_spread=1e-3, slippage=5e-4, fill="next_close")
    from_array = backtest(close.astype(np.float32), weights, config)
    from_bars = backtest(bars(open_, close), weights, config)
    np.testing.assert_array_equal(from_array.equity, from_bars.equity)
    with pytest.raises(ValueError, match="fill='next_close'"):
        backtest(close, weights, COSTS)


# ------------------------------------------------------------------------------------- no look-ahead


def test_a_signal_that_knows_the_close_of_bar_t_cannot_trade_on_it():
    # Intraday moves alternate +1% / -1% and each open equals the previous close. The "perfect" signal
    # sign(close_t - open_t) is known at the close of t; filled at the next open it holds bar t+1, which
    # always reverses, so it loses 1% a bar. Filling at the close of t (look-ahead) would have won 1% a bar.
    n = 12
    moves = np.where(np.arange(n) % 2 == 0, 1.01, 0.99)
    close = 100 * np.cumprod(moves)[:, None]
    open_ = np.concatenate([[100.0], close[:-1, 0]])[:, None]
    signal = np.sign(close - open_).astype(np.float32)
    result = backtest(bars(open_, close), signal, BacktestConfig())
    np.testing.assert_allclose(result.net_returns[2:], -0.01, atol=1e-6)
    lookahead = np.mean(signal[:, 0] * (close[:, 0] / open_[:, 0] - 1))
    assert lookahead == pytest.approx(0.01)

    # and on random bars it earns nothing on average, while the look-ahead earns the mean absolute move
    rng = np.random.default_rng(3)
    intraday = rng.normal(0, 0.01, (n, 1))
    close = 100 * np.cumprod(1 + intraday, axis=0)
    open_ = close / (1 + intraday)
    result = backtest(bars(open_, close), np.sign(intraday).astype(np.float32), BacktestConfig())
    np.testing.assert_allclose(result.net_returns[1:], np.sign(intraday[:-1, 0]) * intraday[1:, 0], atol=1e-6)


def test_changing_the_future_never_changes_the_past():
    open_, close = random_market(2)
    weights = np.random.default_rng(4).uniform(-0.5, 0.5, close.shape).astype(np.float32)
    base = backtest(bars(open_, close), weights, COSTS)
    open2, close2, weights2 = open_.copy(), close.copy(), weights.copy()
    open2[7:] *= 1.3
    close2[7:] *= 0.7
    weights2[7:] = -weights2[7:]
    changed = backtest(bars(open2, close2), weights2, COSTS)
    np.testing.assert_array_equal(changed.equity[:7], base.equity[:7])  # bars < 7 read nothing from bar 7 on
    assert not np.allclose(changed.equity[7:], base.equity[7:])


# ------------------------------------------------------------------------------------------ NaN bars


def test_an_asset_without_prices_holds_no_position_earns_nothing_and_leaves_no_nan():
    open_, close = random_market(5)
    open_[:4, 2] = close[:4, 2] = np.nan  # listed from bar 4
    open_[8, 1] = np.nan  # a missing bar mid-series: the position leaves at bar 7's close, at no cost
    weights = np.full(close.shape, 0.3, np.float32)
    result = backtest(bars(open_, close), weights, COSTS)
    for field in result:
        assert np.all(np.isfinite(field))
    assert np.all(result.weights[:4, 2] == 0) and np.all(result.trades[:4, 2] == 0)
    assert result.weights[4, 2] > 0  # the target standing at bar 3 fills at the asset's first priced bar
    assert result.weights[8, 1] == 0
    # the same strategy on the two listed assets alone, up to bar 3, is the same backtest
    two = backtest(bars(open_[:4, :2], close[:4, :2]), weights[:4, :2], COSTS)
    np.testing.assert_allclose(result.equity[:4], two.equity, rtol=1e-6)
    # the forced exit at bar 8 costs nothing: the spread paid is that of assets 0 and 2's trades only
    # (a fraction of E_7: x E^o_8 / E_7 = 1 + sum_i w_7i (open_8i / close_7i - 1) over the priced assets)
    d, held = np.asarray(result.trades[8]), np.asarray(result.weights[7])
    assert held[1] > 0.2 and d[1] == 0 and result.weights[8, 1] == 0  # it left the book, and that was no trade
    growth = 1 + held[0] * (open_[8, 0] / close[7, 0] - 1) + held[2] * (open_[8, 2] / close[7, 2] - 1)
    np.testing.assert_allclose(result.spread[8], 1e-3 * (abs(d[0]) + abs(d[2])) * growth, rtol=1e-5)
    # and its close at bar 8 is not marked: changing it changes nothing
    close2 = close.copy()
    close2[8, 1] *= 2
    np.testing.assert_array_equal(backtest(bars(open_, close2), weights, COSTS).equity, result.equity)


def test_equity_that_hits_zero_stays_at_zero_without_nan():
    n = 12
    close = np.linspace(100, 400, n)[:, None].repeat(3, axis=1)
    open_ = close.copy()
    weights = np.full(close.shape, -2.0, np.float32)  # 6x short into a quadrupling market
    result = backtest(bars(open_, close), weights, BacktestConfig())
    assert np.all(np.isfinite(result.equity)) and np.all(np.isfinite(result.net_returns))
    ruined = int(np.argmax(np.asarray(result.equity) <= 0))
    assert ruined > 0
    assert result.net_returns[ruined] == -1.0
    assert np.all(result.equity[ruined:] == 0) and np.all(result.net_returns[ruined + 1:] == 0)
    assert np.all(result.trades[ruined:] == 0)


# --------------------------------------------------------------------------------- batching and jit


def test_vmap_over_strategies_and_a_batched_call_over_universes_equal_a_loop_of_single_backtests():
    open_, close = random_market(6)
    prices = bars(open_, close)
    weights = np.random.default_rng(7).uniform(-0.5, 0.5, (4,) + close.shape).astype(np.float32)
    loop = [backtest(prices, w, COSTS) for w in weights]
    vmapped = jax.vmap(lambda w: backtest(prices, w, COSTS))(jnp.asarray(weights))
    # universes: [U, T, N] prices (the market, and the same market at 1.1x the prices) with [S, 1, T, N] weights
    universes = Bars(np.stack([prices.open, prices.open * 1.1]), None, None,
                     np.stack([prices.close, prices.close * 1.1]), None)
    grid = backtest(universes, weights[:, None], COSTS)
    assert grid.net_returns.shape == (4, 2, close.shape[0]) and grid.trades.shape == (4, 2) + close.shape
    for name in ("net_returns", "equity", "fees", "trades", "weights", "iterations"):
        stacked = np.stack([getattr(r, name) for r in loop])
        # equal to float32 rounding: XLA may order a batched reduction differently (1 ulp of 1.0 is 1.2e-7)
        np.testing.assert_allclose(getattr(vmapped, name), stacked, rtol=1e-6, atol=3e-7, err_msg=name)
        np.testing.assert_allclose(getattr(grid, name)[:, 0], stacked, rtol=1e-6, atol=3e-7, err_msg=name)
    np.testing.assert_allclose(grid.net_returns[:, 1], grid.net_returns[:, 0], atol=1e-6)  # scaled prices: same returns


def test_jit_equals_eager():
    open_, close = random_market(8)
    prices = bars(open_, close)
    weights = np.random.default_rng(9).uniform(-0.5, 0.5, close.shape).astype(np.float32)
    jitted = jax.jit(lambda w: backtest(prices, w, COSTS))(weights)
    with jax.disable_jit():
        eager = backtest(prices, weights, COSTS)
    for name in ("net_returns", "equity", "turnover", "weights"):
        np.testing.assert_allclose(getattr(jitted, name), getattr(eager, name), rtol=1e-5, atol=1e-7, err_msg=name)


def test_a_new_fee_rate_does_not_recompile_and_fee_rates_can_be_vmapped():
    open_, close = random_market(0)
    prices = bars(open_, close)
    weights = np.random.default_rng(1).uniform(-0.6, 0.6, close.shape).astype(np.float32)
    base = backtest(prices, weights, COSTS)
    from trading_jax.evaluation import backtest as module

    before = module._backtest._cache_size()
    configs = [BacktestConfig(fee_rate=fee, half_spread=1e-3, slippage=5e-4) for fee in (0.0, 1e-3, 5e-3)]
    singles = [backtest(prices, weights, config).equity for config in configs]
    assert module._backtest._cache_size() == before
    assert singles[0][-1] > singles[1][-1] > base.equity[-1] > singles[2][-1]  # COSTS' fee is 2e-3
    swept = jax.vmap(lambda fee: backtest(prices, weights, BacktestConfig(fee_rate=fee, half_spread=1e-3,
                                                                          slippage=5e-4)).equity)(
        jnp.array([0.0, 1e-3, 5e-3]))
    np.testing.assert_allclose(swept, np.stack(singles), rtol=1e-6)


# --------------------------------------------------------------------------------- limits and shorts


def test_config_limits_and_long_only_equal_limiting_the_weights_first():
    open_, close = random_market(0)
    weights = np.random.default_rng(10).uniform(-0.8, 0.8, close.shape).astype(np.float32)
    config = BacktestConfig(fee_rate=2e-3, half_spread=1e-3, slippage=5e-4, allow_short=False,
                            max_position=0.4, max_gross=0.6)
    limited = apply_position_limits(np.maximum(weights, 0), max_position=0.4, max_gross=0.6)
    assert int(check_limits(limited, max_position=0.4, max_gross=0.6).count) == 0
    np.testing.assert_allclose(backtest(bars(open_, close), weights, config).equity,
                               backtest(bars(open_, close), np.asarray(limited), COSTS).equity, rtol=1e-6)


# -------------------------------------------------------------------------------------- bad input


def one_line_value_error(fn, match):
    with pytest.raises(ValueError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def test_bad_inputs_are_one_line_value_errors():
    open_, close = random_market(0)
    prices = bars(open_, close)
    weights = np.zeros(close.shape, np.float32)
    one_line_value_error(lambda: backtest(prices, weights[:, :2], COSTS), "share the last two axes")
    one_line_value_error(lambda: backtest(prices, weights[None, :5], COSTS), "share the last two axes")
    universes = Bars(np.stack([open_] * 2), None, None, np.stack([close] * 2), None)
    one_line_value_error(lambda: backtest(universes, np.zeros((3,) + close.shape), COSTS), "do not broadcast")
    one_line_value_error(lambda: backtest(prices, weights[:, 0], COSTS), r"\[\.\.\., T, N\]")
    one_line_value_error(lambda: BacktestConfig(fee_rate=-1e-3), "fee_rate")
    one_line_value_error(lambda: BacktestConfig(half_spread=float("nan")), "half_spread")
    one_line_value_error(lambda: BacktestConfig(fill="close"), "fill")
    one_line_value_error(lambda: BacktestConfig(max_gross=0.0), "max_gross")
    nan_weights = weights.copy()
    nan_weights[3, 1] = np.nan
    one_line_value_error(lambda: backtest(prices, nan_weights, COSTS), "weights contain NaN")
    one_line_value_error(lambda: backtest(bars(-open_, close), weights, COSTS), "prices.open must be > 0")
    one_line_value_error(lambda: backtest(prices, weights, BacktestConfig(impact_coefficient=0.1)), "adv= and sigma=")
    one_line_value_error(lambda: signals_to_weights(weights, rule="top"), "rule")
    trading = np.random.default_rng(1).uniform(-0.6, 0.6, close.shape).astype(np.float32)
    one_line_value_error(lambda: backtest(prices, trading, BacktestConfig(fee_rate=1e-3, max_iterations=1)),
                         "did not converge")


# ----------------------------------------------------------------------------------- signals -> weights


def test_signals_become_equal_gross_weights_by_each_rule():
    signals = np.array([[[2.0, -1.0, 0.0, np.nan], [0.0, 0.0, 0.0, 0.0], [3.0, 1.0, 1.0, -2.0]]])
    np.testing.assert_allclose(signals_to_weights(signals, "sign")[0],
                               [[0.5, -0.5, 0, 0], [0, 0, 0, 0], [0.25, 0.25, 0.25, -0.25]])
    np.testing.assert_allclose(signals_to_weights(signals, "long_only", gross=0.6)[0],
                               [[0.6, 0, 0, 0], [0, 0, 0, 0], [0.2, 0.2, 0.2, 0]], atol=1e-7)
    # ranks of [3, 1, 1, -2] are [4, 2.5, 2.5, 1]; minus their mean 2.5: [1.5, 0, 0, -1.5] -> gross 1
    np.testing.assert_allclose(signals_to_weights(signals, "rank")[0, 2], [0.5, 0, 0, -0.5])
    # ranks of [2, -1, 0] (NaN left out) are [3, 1, 2]: [1, -1, 0] / 2
    np.testing.assert_allclose(signals_to_weights(signals, "rank")[0, 0], [0.5, -0.5, 0, 0])
    np.testing.assert_allclose(signals_to_weights(signals, "proportional")[0, 2], [3 / 7, 1 / 7, 1 / 7, -2 / 7],
                               rtol=1e-6)


# ------------------------------------------------------------------------------------ walk-forward


def test_walk_forward_predicts_each_test_bar_from_earlier_bars_only():
    n = 20
    x = np.arange(n, dtype=float)[:, None]  # each input row is its own bar index
    y = np.arange(n, dtype=float) * 10
    folds = walk_forward_folds(n, n_folds=3, test_size=4, embargo=1)
    seen = []

    def fit_predict(train, test_x):
        train_x, train_y = train
        seen.append((train_x[:, 0].copy(), test_x[:, 0].copy()))
        return np.full(len(test_x), train_x[-1, 0])  # "prediction": the last training bar it saw

    predictions = walk_forward(fit_predict, x, y, folds)
    tested = np.zeros(n, bool)
    for fold in folds:
        tested[fold.test.slice] = True
    assert np.all(np.isnan(predictions[~tested]))
    for (train_bars, test_bars), fold in zip(seen, folds):
        assert train_bars.max() < test_bars.min() - 1  # the embargo bar is left out too
        assert set(test_bars) == set(range(fold.test.start, fold.test.stop))
        assert np.all(predictions[fold.test.slice] == train_bars.max())
    one_line_value_error(lambda: walk_forward(lambda train, test: np.zeros(1), x, y, folds), "one prediction per test bar")


# ------------------------------------------------------------------------------------------- risk


def test_exposure_by_hand():
    w = np.array([[[0.5, -0.3, 0.4], [1.0, 1.0, -2.0]]])
    e = exposure(w)
    np.testing.assert_allclose(e.gross, [[1.2, 4.0]], rtol=1e-6)
    np.testing.assert_allclose(e.net, [[0.6, 0.0]], atol=1e-6)
    np.testing.assert_allclose(e.long, [[0.9, 2.0]], rtol=1e-6)
    np.testing.assert_allclose(e.short, [[0.3, 2.0]], rtol=1e-6)


def test_position_limits_clip_then_scale_down_never_up():
    w = np.array([[0.5, -0.3, 0.4], [1.0, 1.0, -2.0], [0.1, 0.1, 0.0]])
    limited = np.asarray(apply_position_limits(w, max_position=0.6, max_gross=1.0, max_net=0.2))
    # row 0: no clip, gross 1.2 -> x 1/1.2; net 0.6/1.2 = 0.5 -> x 0.2/0.5 = 0.4: [0.5, -0.3, 0.4] / 3
    # row 1: clip to [0.6, 0.6, -0.6], gross 1.8 -> x 1/1.8; net 0.6/1.8 -> x 0.6: [0.2, 0.2, -0.2]
    # row 2: inside every limit: unchanged (never levered up)
    np.testing.assert_allclose(limited, [[0.5 / 3, -0.1, 0.4 / 3], [0.2, 0.2, -0.2], [0.1, 0.1, 0.0]], rtol=1e-6)
    assert int(check_limits(w, max_position=0.6, max_gross=1.0).count) == 5  # 3 positions + 2 gross
    rng = np.random.default_rng(11)
    many = rng.normal(0, 1, (5, 30, 6))
    limited = apply_position_limits(many, max_position=0.3, max_gross=1.0, max_net=0.25)
    breaches = check_limits(limited, max_position=0.3, max_gross=1.0, max_net=0.25)
    assert int(jnp.sum(breaches.count)) == 0
    assert bool(check_limits(many, max_position=0.3).position.any())


def test_volatility_target_uses_only_past_returns_and_caps_leverage():
    r = np.array([0.01, -0.01, 0.01, -0.01, 0.02, -0.02, np.nan, 0.01])[:, None]
    scale = np.asarray(volatility_target(r, target_vol=0.1, lookback=4, max_leverage=2.0, period=100))[:, 0]
    # window of 4 returns ending at t; std(ddof=1) of [.01, -.01, .01, -.01] = 0.011547, x sqrt(100) = 0.11547
    np.testing.assert_allclose(scale[:3], 0.0)  # fewer than 4 returns known
    np.testing.assert_allclose(scale[3], 0.1 / (np.std([0.01, -0.01, 0.01, -0.01], ddof=1) * 10), rtol=1e-5)
    np.testing.assert_allclose(scale[5], 0.1 / (np.std([0.01, -0.01, 0.02, -0.02], ddof=1) * 10), rtol=1e-5)
    assert np.all(scale[6:] == 0)  # a NaN return in the window
    # the scale at t ignores returns after t
    future = r.copy()
    future[5:] = 0.5
    np.testing.assert_array_equal(volatility_target(future, 0.1, 4, 2.0, 100)[:5], scale[:5, None])
    assert float(volatility_target(np.full((6, 1), 0.01), 0.1, 3, 1.5)[-1, 0]) == 1.5  # zero vol: the cap


def test_parametric_expected_shortfall_matches_the_gaussian_closed_form():
    r = np.random.default_rng(12).normal(0.001, 0.02, (2, 250))
    for cutoff in (0.05, 0.01):
        mu, sd = r.mean(axis=1), r.std(axis=1, ddof=1)
        tail = stats.norm.ppf(cutoff, mu, sd)
        expected = np.array([stats.norm.expect(lambda v: v, loc=m, scale=s, ub=q) / cutoff
                             for m, s, q in zip(mu, sd, tail)])
        np.testing.assert_allclose(parametric_expected_shortfall(r, cutoff), expected, rtol=1e-5)
        assert np.all(parametric_expected_shortfall(r, cutoff) < performance.parametric_value_at_risk(r, cutoff))
    one_line_value_error(lambda: parametric_expected_shortfall(r, 1.5), "cutoff")
    assert math.isnan(float(parametric_expected_shortfall(np.array([0.01]))))
