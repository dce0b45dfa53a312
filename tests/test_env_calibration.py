"""Calibration of the execution env on bars, and bar imbalance for replay (trading_jax.envs.calibration)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from trading_jax.data.splits import IndexRange
from trading_jax.data.types import Bars, MarketData
from trading_jax.envs.calibration import (
    BTC_USD_HOURLY,
    ExecutionCalibration,
    bar_imbalance,
    calibrate_execution,
    profile_for_horizon,
)

HOUR = np.timedelta64(1, "h")
# a made-up U-ish hourly volume pattern (weights per UTC hour, not normalised)
PATTERN = np.array([3, 2, 1, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 4, 3, 3, 3, 3, 2, 2, 2], float)


def make_data(returns, volume, *, start="2024-01-01T05:00", step=HOUR, stamps=None, symbols=("SYN",), extra=None):
    """One-symbol MarketData from bar log returns `[T - 1]`: open at the previous close, high/low 5 bp outside."""
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    open_ = np.concatenate([[100.0], close[:-1]])
    high, low = np.maximum(open_, close) * 1.0005, np.minimum(open_, close) * 0.9995
    n = close.shape[0]
    if stamps is None:
        stamps = np.datetime64(start, "ns") + np.arange(n) * step
    col = lambda a: np.asarray(a, np.float64).reshape(n, 1)
    bars = Bars(col(open_), col(high), col(low), col(close), col(volume))
    return MarketData(bars=bars, timestamps=stamps, symbols=symbols, valid=np.ones((n, 1), bool), frequency=step,
                      extra={k: col(v) for k, v in (extra or {}).items()}, report=None, sources=("syn.csv",))


@pytest.fixture(scope="module")
def hourly():
    """10 days of hourly bars from 05:00 UTC (so the first and last UTC days are partial), sigma 0.006,
    volume = a day level (1..10, different each day) x PATTERN[hour]."""
    rng = np.random.default_rng(0)
    n = 240
    stamps = np.datetime64("2024-01-01T05:00", "ns") + np.arange(n) * HOUR
    hour = (stamps - stamps.astype("datetime64[D]")) // HOUR
    day = (stamps.astype("datetime64[D]") - stamps[0].astype("datetime64[D]")).astype(int)
    level = rng.permutation(np.arange(1.0, 12.0))[day]
    returns = rng.normal(0.0, 0.006, n - 1)
    return make_data(returns, level * PATTERN[hour]), returns


@pytest.fixture(scope="module")
def hourly_cal(hourly):
    return calibrate_execution(hourly[0])


# ---------------------------------------------------------------------------------------------- calibrate_execution

def test_sigma_is_the_sd_of_bar_log_returns_and_recovers_the_true_volatility(hourly, hourly_cal):
    _, returns = hourly
    assert hourly_cal.sigma == hourly_cal.sigma_std
    assert hourly_cal.sigma_std == pytest.approx(np.std(returns, ddof=1), rel=1e-12)
    assert hourly_cal.sigma_std == pytest.approx(0.006, rel=0.1)  # 239 returns: sd of the estimate ~4.6%
    assert hourly_cal.sigma_mad == pytest.approx(0.006, rel=0.15)
    assert hourly_cal.n_bars == 240 and hourly_cal.bar_minutes == 60.0
    assert hourly_cal.start == np.datetime64("2024-01-01T05:00") and hourly_cal.end == np.datetime64("2024-01-11T04:00")


def test_fat_tails_inflate_the_standard_deviation_but_not_the_mad_based_sigma(hourly):
    _, returns = hourly
    jumps = returns.copy()
    jumps[::40] = 0.08  # six 8% jumps
    cal = calibrate_execution(make_data(jumps, np.ones(240)), profile=False)
    assert cal.hourly_profile is None and cal.n_days == 0
    assert cal.sigma_std > 2.0 * 0.006
    assert cal.sigma_mad == pytest.approx(0.006, rel=0.15)


def test_returns_across_a_gap_in_the_timestamps_are_left_out_of_sigma(hourly):
    data, returns = hourly
    jumped = returns.copy()
    jumped[99] = 0.5  # bar 100 is 50% above bar 99 ...
    stamps = data.timestamps.copy()
    stamps[100:] += 5 * HOUR  # ... but five hours later
    cal = calibrate_execution(make_data(jumped, data.bars.volume[:, 0], stamps=stamps), profile=False)
    assert cal.sigma_std == pytest.approx(np.std(np.delete(returns, 99), ddof=1), rel=1e-12)


def test_the_hourly_volume_pattern_is_recovered_exactly_from_complete_days(hourly_cal):
    np.testing.assert_allclose(hourly_cal.hourly_profile, PATTERN / PATTERN.mean(), rtol=1e-12)
    np.testing.assert_allclose(hourly_cal.hourly_profile_se, 0.0, atol=1e-12)  # every day has the same shares
    assert hourly_cal.n_days == 9  # 10 days of bars from 05:00: the first and last UTC days are partial


def test_sub_hourly_bars_are_summed_per_hour_for_the_profile(hourly):
    _, returns = hourly
    half = np.timedelta64(30, "m")
    stamps = np.datetime64("2024-01-01T00:00", "ns") + np.arange(240) * half  # 5 complete days of 30-minute bars
    hour = (stamps - stamps.astype("datetime64[D]")) // HOUR
    first_half = (stamps - stamps.astype("datetime64[h]")) == np.timedelta64(0)
    volume = PATTERN[hour] * np.where(first_half, 0.25, 1.75)  # the hour's volume split unevenly between its bars
    cal = calibrate_execution(make_data(returns, volume, stamps=stamps, step=half))
    assert cal.bar_minutes == 30.0 and cal.n_days == 5
    np.testing.assert_allclose(cal.hourly_profile, PATTERN / PATTERN.mean(), rtol=1e-12)
    assert not cal.hourly_profile.flags.writeable


def test_volume_is_the_median_bar_volume_and_spread_mean_the_chosen_estimators_median(hourly, hourly_cal):
    data, _ = hourly
    assert hourly_cal.volume == np.median(data.bars.volume[:, 0])
    assert hourly_cal.spread_estimator == "abdi_ranaldo"
    assert hourly_cal.spread_mean == hourly_cal.spread_abdi_ranaldo
    medians = (hourly_cal.spread_abdi_ranaldo, hourly_cal.spread_corwin_schultz, hourly_cal.spread_roll)
    assert all(np.isfinite(m) and m >= 0 for m in medians)
    roll = calibrate_execution(data, spread_estimator="roll")
    assert roll.spread_mean == roll.spread_roll == hourly_cal.spread_roll


def test_a_split_calibrates_on_its_bars_only(hourly):
    data, returns = hourly
    cal = calibrate_execution(data, split=IndexRange(48, 144))
    assert cal.n_bars == 96 and cal.start == data.timestamps[48] and cal.end == data.timestamps[143]
    assert cal.sigma_std == pytest.approx(np.std(returns[48:143], ddof=1), rel=1e-12)
    assert cal.n_days == 3  # 05:00 on day 2 to 04:00 on day 6: days 3, 4 and 5 are complete


def test_daily_bars_have_no_profile_unless_one_is_required(hourly):
    _, returns = hourly
    daily = make_data(returns[:59], np.ones(60), start="2024-01-01", step=np.timedelta64(1, "D"))
    cal = calibrate_execution(daily)
    assert cal.hourly_profile is None and cal.hourly_profile_se is None and cal.bar_minutes == 1440.0
    with pytest.raises(ValueError, match=r"bars of 'SYN' are 1440 minutes long; the hourly volume profile needs bars "
                                         r"of 60 minutes or less: pass profile=False"):
        calibrate_execution(daily, profile=True)
    with pytest.raises(ValueError, match="has no hourly profile"):
        cal.profile(10)


# ---------------------------------------------------------------------------------------------- errors

def test_each_user_error_is_one_line_naming_the_value_and_the_fix(hourly):
    data, returns = hourly
    two = dataclasses.replace(data, symbols=("AAA", "BBB"))
    cases = [
        (lambda: calibrate_execution(data, symbol="ETH"), r"unknown symbol 'ETH'; the data holds \['SYN'\]"),
        (lambda: calibrate_execution(two), r"holds 2 symbols \['AAA', 'BBB'\]; pass symbol="),
        (lambda: calibrate_execution(data, split=IndexRange(0, 20)),
         r"20 bars of 'SYN' selected, too few: at least 30 are needed .*widen the split"),
        (lambda: calibrate_execution(data, split=IndexRange(0, 60)),
         r"'SYN' has 1 complete UTC day\(s\) .*\(at least 2 are needed\); widen the split or pass profile=False"),
        (lambda: calibrate_execution(data, spread_estimator="hl"), r"unknown spread_estimator 'hl'; choose from"),
        (lambda: bar_imbalance(data, method="tick"), r"unknown method 'tick'; choose from"),
        (lambda: bar_imbalance(data, method="column"),
         r"'SYN' has no imbalance, buy/sell or taker-buy volume column .*use method='bvc'"),
        (lambda: profile_for_horizon(np.ones(12), 4, 60), r"hourly_profile must be 24 finite non-negative weights"),
        (lambda: profile_for_horizon(np.ones(24), 4, 60, start_hour=24), r"start_hour must be a UTC hour in \[0, 24\)"),
        (lambda: profile_for_horizon(np.ones(24), 0, 60), r"horizon must be an int >= 1"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert "\n" not in str(error.value)


def test_a_missing_bar_in_the_selected_range_is_named_by_symbol_row_and_time(hourly):
    data, _ = hourly
    close = data.bars.close.copy()
    close[150, 0] = np.nan
    holed = dataclasses.replace(data, bars=data.bars._replace(close=close))
    with pytest.raises(ValueError, match=r"symbol 'SYN' has a missing or invalid bar at row 150 \(2024-01-07T11:00"
                                         r".*1 such bars in the selected range\. Choose a split without them"):
        calibrate_execution(holed)
    assert calibrate_execution(holed, split=IndexRange(0, 144)).n_bars == 144  # the hole is outside the split


# ---------------------------------------------------------------------------------------------- step rescaling

def test_env_kwargs_rescale_sigma_by_sqrt_time_and_volume_linearly():
    cal = dataclasses.replace(BTC_USD_HOURLY, sigma=0.006, volume=600.0, spread_mean=3e-4, hourly_profile=None,
                              hourly_profile_se=None)
    kw = cal.env_kwargs(60, step_minutes=1)
    assert kw == pytest.approx({"sigma": 0.006 / math.sqrt(60), "volume": 10.0, "spread_mean": 3e-4}, rel=1e-12)
    assert cal.env_kwargs(5) == pytest.approx({"sigma": 0.006, "volume": 600.0, "spread_mean": 3e-4}, rel=1e-12)
    assert cal.env_kwargs(5, step_minutes=240)["sigma"] == pytest.approx(0.012, rel=1e-12)  # 4 bars: x sqrt(4)

    from trading_jax.envs.execution import make_execution  # the keys are make_execution keywords

    _, params = make_execution(horizon=60, **kw)
    assert float(params.sigma) == pytest.approx(0.006 / math.sqrt(60))


def test_env_kwargs_volume_carries_the_profile_level_of_the_horizons_hours():
    profile = np.ones(24)
    profile[14] = 3.0
    cal = dataclasses.replace(BTC_USD_HOURLY, volume=600.0, hourly_profile=profile, hourly_profile_se=None)
    assert cal.env_kwargs(60, step_minutes=1, start_hour=14)["volume"] == pytest.approx(30.0)  # all in hour 14
    kw = cal.env_kwargs(120, step_minutes=1, start_hour=14)  # hours 14 and 15: level (3 + 1) / 2
    assert kw["volume"] == pytest.approx(20.0)
    per_step = kw["volume"] * cal.profile(120, step_minutes=1, start_hour=14)  # the expected volume of each step
    np.testing.assert_allclose(per_step, np.r_[np.full(60, 30.0), np.full(60, 10.0)], rtol=1e-6)


def test_profile_for_horizon_by_hand():
    p = np.arange(1.0, 25.0)  # hour h weighs h + 1
    # 6 steps of 30 minutes from 22:00: hours 22, 22, 23, 23, 0, 0 -> 23, 23, 24, 24, 1, 1 (mean 16)
    w = profile_for_horizon(p, 6, 30, start_hour=22)
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, np.array([23, 23, 24, 24, 1, 1]) / 16.0, rtol=1e-6)
    # 90-minute steps straddle hours: [0:00, 1:30) -> (2 * 1 + 2) / 3, [1:30, 3:00) -> (2 + 2 * 3) / 3
    np.testing.assert_allclose(profile_for_horizon(p, 2, 90), np.array([4 / 3, 8 / 3]) / 2.0, rtol=1e-6)
    # a fractional start hour: 15-minute steps from 9:30
    np.testing.assert_allclose(profile_for_horizon(p, 4, 15, start_hour=9.5), np.array([10, 10, 11, 11]) / 10.5,
                               rtol=1e-6)


# ---------------------------------------------------------------------------------------------- bar_imbalance

def test_imbalance_from_a_taker_buy_volume_column():
    volume = np.array([10.0, 10.0, 0.0, 4.0, 8.0])
    buy = np.array([5.0, 8.0, 0.0, 5.0, np.nan])  # balanced, 80% buys, no trade, buy > volume (bad row), missing
    data = make_data(np.zeros(4), volume, extra={"taker_buy_base_asset_volume": buy})
    imb, source = bar_imbalance(data)
    assert source == "column:taker_buy_base_asset_volume"
    assert imb.dtype == np.float32
    np.testing.assert_allclose(imb, [0.0, 0.6, 0.0, 1.0, 0.0], atol=1e-7)


def test_imbalance_from_buy_and_sell_columns_or_an_imbalance_column():
    both = make_data(np.zeros(2), np.ones(3), extra={"buy_volume": [3.0, 1.0, 0.0], "sell_volume": [1.0, 3.0, 0.0]})
    imb, source = bar_imbalance(both, method="column")
    assert source == "column:buy_volume,sell_volume"
    np.testing.assert_allclose(imb, [0.5, -0.5, 0.0])
    given = make_data(np.zeros(2), np.ones(3), extra={"Imbalance": [0.3, -2.0, np.nan]})
    imb, source = bar_imbalance(given)
    assert source == "column:imbalance"
    np.testing.assert_allclose(imb, [0.3, -1.0, 0.0], rtol=1e-6)


def test_bvc_imbalance_by_hand_follows_the_sign_of_the_bar_return_with_a_zero_warm_up():
    r = np.array([0.01, -0.02, 0.005, 0.03, -0.01, 0.0, -0.004])  # returns of bars 1..7
    volume = np.array([1.0, 1, 1, 1, 1, 1, 1, 0.0])  # bar 7 did not trade
    data = make_data(r, volume)
    imb, source = bar_imbalance(data, window=3)
    assert source == "bvc"  # no flow column: auto falls back to BVC
    expected = np.zeros(8)
    for t in (4, 5, 6):  # bars 0..3 are the warm-up (bar t needs the returns of bars t-3..t-1)
        sd = np.std(r[t - 4:t - 1], ddof=1)
        expected[t] = math.erf(r[t - 1] / sd / math.sqrt(2.0))  # 2 Phi(z) - 1
    np.testing.assert_allclose(imb, expected, rtol=1e-5, atol=1e-7)
    assert imb[4] > 0 > imb[5] and imb[6] == 0.0 and imb[7] == 0.0  # up, down, flat, no trade
    np.testing.assert_array_equal(imb[:4], 0.0)


def test_bvc_never_returns_nan_and_stays_in_range(hourly):
    data, _ = hourly
    close = data.bars.close.copy()
    close[100, 0] = np.nan
    valid = data.valid.copy()
    valid[100, 0] = False
    holed = dataclasses.replace(data, bars=data.bars._replace(close=close), valid=valid)
    imb, source = bar_imbalance(holed, window=20)
    assert source == "bvc" and np.all(np.isfinite(imb)) and np.all(np.abs(imb) <= 1.0)
    assert imb[100] == 0.0 and imb[101] == 0.0  # the missing bar, and the bar whose return needs it
    r = np.diff(np.log(data.bars.close[:, 0]))
    moved = np.abs(imb[21:]) > 0
    np.testing.assert_array_equal(np.sign(imb[21:])[moved], np.sign(r[20:])[moved])


# ---------------------------------------------------------------------------------------------- BTC/USD constants

def test_btc_usd_hourly_constants_match_the_file(shared_data):
    from trading_jax.data.loading import load_ohlcv

    data = load_ohlcv(shared_data / "crypto" / "BTC_USD-1h.csv", repair="swap_volume")
    cal = calibrate_execution(data)
    for field in dataclasses.fields(ExecutionCalibration):
        ours, theirs = getattr(BTC_USD_HOURLY, field.name), getattr(cal, field.name)
        if isinstance(ours, float) or field.name.startswith("hourly_profile"):
            np.testing.assert_allclose(ours, theirs, rtol=1e-3, err_msg=field.name)  # 3 significant digits or better
        else:
            assert ours == theirs, field.name
