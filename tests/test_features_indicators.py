"""Technical indicators: TA-Lib / `ta` / pandas parity, warm-up lengths, NaN semantics, float32 accuracy.

Parity tests run on two `[time, asset]` panels of the same shape (so each indicator compiles once
per dtype): five real daily stocks from the shared data folder (skipped when it is absent) and a
synthetic random walk (always runs). References are computed one column at a time.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from trading_jax.features import indicators as ind
from trading_jax.features import rolling as rl

talib = pytest.importorskip("talib")

TICKERS = ("AAPL", "MSFT", "JPM", "XOM", "SPLP")  # SPLP has zero-volume days
N_BARS = 1258  # rows in each of these files (2012-09-04 .. 2017-09-01)
FIELDS = ("open", "high", "low", "close", "volume")


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def _synthetic_panel(n_time: int = N_BARS, n_assets: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """Random-walk OHLCV with consistent bars, a flat stretch and zero-volume stretches."""
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.015, (n_time, n_assets)), axis=0))
    close[:25, 0] = close[0, 0]  # flat start: RSI's and STOCH's zero branches, zero Bollinger width
    open_ = np.concatenate([close[:1], close[:-1]]) * np.exp(rng.normal(0.0, 0.004, (n_time, n_assets)))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.006, (n_time, n_assets))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.006, (n_time, n_assets))))
    high[:25, 0] = low[:25, 0] = open_[:25, 0] = close[:25, 0]
    volume = rng.integers(1_000, 1_000_000, (n_time, n_assets)).astype(float)
    volume[100:130, 1] = 0.0  # a whole VWAP window without volume
    volume[rng.random((n_time, n_assets)) < 0.02] = 0.0
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


@pytest.fixture(scope="module")
def real_panel(shared_data) -> dict[str, np.ndarray]:
    frames = [pd.read_csv(shared_data / "stocks_daily" / f"{t}.csv") for t in TICKERS]
    dates = frames[0]["Date"]
    assert all(len(f) == N_BARS and f["Date"].equals(dates) for f in frames), "tickers must share dates"
    columns = {"open": "Open", "high": "High", "low": "Low", "close": "Close", "volume": "Volume"}
    return {k: np.stack([f[c].to_numpy(float) for f in frames], axis=1) for k, c in columns.items()}


@pytest.fixture(params=["real", "synthetic"])
def panel(request) -> dict[str, np.ndarray]:
    if request.param == "real":
        return request.getfixturevalue("real_panel")
    return _synthetic_panel()


def _per_column(fn, *arrays):
    """Apply a 1-D reference `fn` to every asset column; stack each output as `[time, asset]`."""
    outs = [fn(*(np.ascontiguousarray(a[:, j]) for a in arrays)) for j in range(arrays[0].shape[1])]
    if isinstance(outs[0], tuple):
        return tuple(np.stack([o[k] for o in outs], axis=1) for k in range(len(outs[0])))
    return np.stack(outs, axis=1)


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _assert_parity(ours, ref, rtol=1e-6, atol=0.0, what=""):
    ours, ref = np.asarray(ours, dtype=float), np.asarray(ref, dtype=float)
    assert ours.shape == ref.shape, what
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg=f"{what}: NaN positions differ")
    ok = ~np.isnan(ref)
    assert ok.any(), f"{what}: nothing to compare"
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=rtol, atol=atol, err_msg=what)


# ----------------------------------------------------------------------------------------------
# TA-Lib parity
# ----------------------------------------------------------------------------------------------

# name -> (ours(panel of jnp float64), talib reference per column, atol in units of the price level
# (None: an oscillator or percentage, atol 1e-9). The atol only matters for values that cross zero,
# where TA-Lib's running sums leave ~1e-14 residues (e.g. STOCH's %K of 6e-14 where it is 0).
TALIB_CASES = {
    "momentum": (lambda p: ind.momentum(p["close"], 10), lambda h, l, c, v: talib.MOM(c, 10), 1e-12),
    "roc": (lambda p: ind.roc(p["close"], 12), lambda h, l, c, v: talib.ROC(c, 12), 1e-12),
    "sma": (lambda p: ind.sma(p["close"], 30), lambda h, l, c, v: talib.SMA(c, 30), 0.0),
    "ema": (lambda p: ind.ema(p["close"], 30), lambda h, l, c, v: talib.EMA(c, 30), 0.0),
    "rsi": (lambda p: ind.rsi(p["close"], 14), lambda h, l, c, v: talib.RSI(c, 14), None),
    "macd": (lambda p: ind.macd(p["close"]), lambda h, l, c, v: talib.MACD(c, 12, 26, 9), 1e-11),
    "macd_swapped_periods": (
        lambda p: ind.macd(p["close"], 20, 8, 5),
        lambda h, l, c, v: talib.MACD(c, 20, 8, 5),
        1e-11,
    ),
    "bollinger": (lambda p: ind.bollinger(p["close"], 20, 2.0), lambda h, l, c, v: talib.BBANDS(c, 20, 2.0, 2.0), 1e-12),
    "stochastic": (lambda p: ind.stochastic(p["high"], p["low"], p["close"]), lambda h, l, c, v: talib.STOCH(h, l, c), None),
    "stochastic_14_3_5": (
        lambda p: ind.stochastic(p["high"], p["low"], p["close"], 14, 3, 5),
        lambda h, l, c, v: talib.STOCH(h, l, c, 14, 3, 0, 5, 0),
        None,
    ),
    "true_range": (lambda p: ind.true_range(p["high"], p["low"], p["close"]), lambda h, l, c, v: talib.TRANGE(h, l, c), 0.0),
    "atr": (lambda p: ind.atr(p["high"], p["low"], p["close"], 14), lambda h, l, c, v: talib.ATR(h, l, c, 14), 0.0),
    "obv": (lambda p: ind.obv(p["close"], p["volume"]), lambda h, l, c, v: talib.OBV(c, v), None),
    "volume_roc": (lambda p: ind.volume_roc(p["volume"], 5), lambda h, l, c, v: talib.ROC(v, 5), None),
    "rolling_sum_61": (lambda p: rl.rolling_sum(p["close"], 61), lambda h, l, c, v: talib.SUM(c, 61), 0.0),
    "rolling_mean_25": (lambda p: rl.rolling_mean(p["close"], 25), lambda h, l, c, v: talib.SMA(c, 25), 0.0),
    "rolling_std_20": (lambda p: rl.rolling_std(p["close"], 20), lambda h, l, c, v: talib.STDDEV(c, 20), 1e-12),
    "rolling_std_47": (lambda p: rl.rolling_std(p["close"], 47), lambda h, l, c, v: talib.STDDEV(c, 47), 1e-12),
    "rolling_max_9": (lambda p: rl.rolling_max(p["high"], 9), lambda h, l, c, v: talib.MAX(h, 9), 0.0),
    "rolling_max_60": (lambda p: rl.rolling_max(p["high"], 60), lambda h, l, c, v: talib.MAX(h, 60), 0.0),
    "rolling_min_29": (lambda p: rl.rolling_min(p["low"], 29), lambda h, l, c, v: talib.MIN(l, 29), 0.0),
}


@pytest.mark.parametrize("case", sorted(TALIB_CASES))
def test_indicator_matches_talib_after_warmup_with_identical_nan_positions(panel, case):
    ours_fn, ref_fn, atol_scale = TALIB_CASES[case]
    with jax.enable_x64(True):
        ours = _as_tuple(ours_fn({k: jnp.asarray(v) for k, v in panel.items()}))
        assert all(o.dtype == jnp.float64 for o in ours)
        ours = [np.asarray(o) for o in ours]
    refs = _as_tuple(_per_column(ref_fn, panel["high"], panel["low"], panel["close"], panel["volume"]))
    assert len(ours) == len(refs)
    volume_like = case in ("obv", "volume_roc")
    level = np.nanmax(np.abs(panel["volume"] if volume_like else panel["close"]))
    for k, (o, r) in enumerate(zip(ours, refs)):
        if case == "obv":
            atol = 1e-12 * np.nansum(panel["volume"])
        elif atol_scale is None:  # oscillators and percentages: values of order 1..100
            atol = 1e-9
        else:
            atol = atol_scale * level
        _assert_parity(o, r, rtol=1e-6, atol=atol, what=f"{case}[{k}]")


def test_macd_fast_ema_is_seeded_on_the_slow_ema_start_like_talib():
    # hand-checkable: with a linear series every EMA seeded by an SMA stays a constant lag behind,
    # so TA-Lib's alignment (both EMAs seeded at index slow-1) fixes the first MACD value.
    close = np.arange(60, dtype=float)
    with jax.enable_x64(True):
        m, s, h = (np.asarray(a) for a in ind.macd(jnp.asarray(close), 3, 6, 2))
    # at t = slow-1 = 5: fast EMA = mean(close[3..5]) = 4, slow = mean(close[0..5]) = 2.5
    # on a line an SMA-seeded EMA with k = 2/(p+1) lags by (p-1)/2, so macd = (6-1)/2 - (3-1)/2 = 1.5
    assert np.isnan(m[:6]).all() and np.isnan(s[:6]).all() and np.isnan(h[:6]).all()
    np.testing.assert_allclose(m[6:], 1.5, rtol=1e-12)
    np.testing.assert_allclose(s[6:], 1.5, rtol=1e-12)
    np.testing.assert_allclose(h[6:], 0.0, atol=1e-12)
    ref = talib.MACD(close, 3, 6, 2)
    for a, b in zip((m, s, h), ref):
        _assert_parity(a, b, atol=1e-12)


def test_rsi_of_a_flat_series_is_zero_and_stochastic_of_a_flat_range_is_zero_like_talib():
    flat = np.full((40, 1), 7.0)
    with jax.enable_x64(True):
        r = np.asarray(ind.rsi(jnp.asarray(flat), 14))[:, 0]
        k, d = (np.asarray(a)[:, 0] for a in ind.stochastic(*(jnp.asarray(flat),) * 3))
    assert np.isnan(r[:14]).all() and (r[14:] == 0.0).all()
    assert np.isnan(k[:8]).all() and (k[8:] == 0.0).all() and (d[8:] == 0.0).all()
    np.testing.assert_array_equal(r, talib.RSI(flat[:, 0], 14))


def test_roc_and_volume_roc_are_zero_where_the_reference_value_is_zero_like_talib():
    volume = np.array([0.0, 10.0, 0.0, 5.0, 5.0, 0.0])
    with jax.enable_x64(True):
        out = np.asarray(ind.volume_roc(jnp.asarray(volume), 1))
    # hand-worked: [nan, 10/0 -> 0 by convention, -100, 5/0 -> 0, 0, -100]
    np.testing.assert_array_equal(out, [np.nan, 0.0, -100.0, 0.0, 0.0, -100.0])
    np.testing.assert_array_equal(out, talib.ROC(volume, 1))


# ----------------------------------------------------------------------------------------------
# Warm-up table and NaN semantics
# ----------------------------------------------------------------------------------------------

# name -> (call(panel, **params), list of non-default params to check)
INDICATOR_CALLS = {
    "returns": (lambda p, **kw: ind.returns(p["close"], **kw), [{}, {"horizon": 5}]),
    "log_returns": (lambda p, **kw: ind.log_returns(p["close"], **kw), [{}]),
    "momentum": (lambda p, **kw: ind.momentum(p["close"], **kw), [{}]),
    "roc": (lambda p, **kw: ind.roc(p["close"], **kw), [{}]),
    "sma": (lambda p, **kw: ind.sma(p["close"], **kw), [{}, {"period": 50}]),
    "ema": (lambda p, **kw: ind.ema(p["close"], **kw), [{}, {"period": 7}]),
    "rsi": (lambda p, **kw: ind.rsi(p["close"], **kw), [{}, {"period": 5}]),
    "macd": (lambda p, **kw: ind.macd(p["close"], **kw), [{}, {"fast": 5, "slow": 35, "signal": 4}]),
    "bollinger": (lambda p, **kw: ind.bollinger(p["close"], **kw), [{}]),
    "stochastic": (lambda p, **kw: ind.stochastic(p["high"], p["low"], p["close"], **kw), [{}, {"fastk_period": 9}]),
    "true_range": (lambda p, **kw: ind.true_range(p["high"], p["low"], p["close"]), [{}]),
    "atr": (lambda p, **kw: ind.atr(p["high"], p["low"], p["close"], **kw), [{}, {"period": 1}]),
    "obv": (lambda p, **kw: ind.obv(p["close"], p["volume"]), [{}]),
    "typical_price": (lambda p, **kw: ind.typical_price(p["high"], p["low"], p["close"]), [{}]),
    "vwap": (lambda p, **kw: ind.vwap(p["high"], p["low"], p["close"], p["volume"], **kw), [{}, {"period": 30}]),
    "vwap_deviation": (lambda p, **kw: ind.vwap_deviation(p["high"], p["low"], p["close"], p["volume"], **kw), [{}]),
    "volume_roc": (lambda p, **kw: ind.volume_roc(p["volume"], **kw), [{}]),
    "rolling_volatility": (lambda p, **kw: ind.rolling_volatility(p["close"], **kw), [{}, {"period": 40}]),
    "realized_volatility": (lambda p, **kw: ind.realized_volatility(p["close"], **kw), [{}]),
    "garman_klass_volatility": (
        lambda p, **kw: ind.garman_klass_volatility(p["open"], p["high"], p["low"], p["close"], **kw),
        [{}],
    ),
}


def test_every_indicator_has_a_warmup_entry_and_a_call_in_this_file():
    public = set(ind.__all__) - {"WARMUP", "warmup"}
    assert public == set(ind.WARMUP) == set(INDICATOR_CALLS)


def test_warmup_nan_rows_are_exactly_the_documented_ones():
    panel = {k: jnp.asarray(v[:300], jnp.float32) for k, v in _synthetic_panel().items()}
    for name, (call, param_sets) in INDICATOR_CALLS.items():
        for params in param_sets:
            first = ind.warmup(name, **params)
            for out in _as_tuple(call(panel, **params)):
                nan_rows = np.isnan(np.asarray(out)).any(axis=1)
                assert nan_rows[:first].all() and np.isnan(np.asarray(out)[:first]).all(), (name, params)
                assert not nan_rows[first:].any(), (name, params, np.flatnonzero(nan_rows[first:])[:5] + first)


def test_warmup_values_are_hand_checked_and_unknown_names_raise():
    assert ind.warmup("macd") == 33 and ind.warmup("stochastic") == 8 and ind.warmup("rsi", period=7) == 7
    assert ind.warmup("sma", period=20) == 19 and ind.warmup("rolling_volatility") == 20
    with pytest.raises(KeyError):
        ind.warmup("no_such_indicator")


def test_invalid_periods_are_rejected_with_the_parameter_name():
    x = jnp.ones((10, 2))
    with pytest.raises(ValueError, match="period"):
        ind.sma(x, 0)
    with pytest.raises(ValueError, match="ddof"):
        rl.rolling_std(x, 1, ddof=1)
    with pytest.raises(ValueError, match="period"):
        ind.rolling_volatility(x, 1)


def test_a_nan_bar_poisons_windows_that_contain_it_and_recursions_from_it_on():
    panel = {k: v[:200].copy() for k, v in _synthetic_panel().items()}
    t0 = 120
    for key in FIELDS:
        panel[key][t0, 2] = np.nan
    jp = {k: jnp.asarray(v, jnp.float32) for k, v in panel.items()}
    rows = np.arange(200)

    def nan_rows(a):
        return np.isnan(np.asarray(a)[:, 2])

    # windowed: NaN exactly while the window [t - w + 1, t] holds t0 (after the warm-up)
    for out, window in [
        (ind.sma(jp["close"], 20), 20),
        (ind.bollinger(jp["close"], 20)[0], 20),
        (rl.rolling_max(jp["close"], 50), 50),
        (rl.rolling_std(jp["close"], 47), 47),
        (ind.vwap(jp["high"], jp["low"], jp["close"], jp["volume"], 10), 10),
        (ind.garman_klass_volatility(jp["open"], jp["high"], jp["low"], jp["close"], 15), 15),
    ]:
        expected = (rows < window - 1) | ((rows >= t0) & (rows < t0 + window))
        np.testing.assert_array_equal(nan_rows(out), expected)
    expected = (rows < 20) | ((rows >= t0) & (rows <= t0 + 20))  # returns need t-1 as well
    np.testing.assert_array_equal(nan_rows(ind.rolling_volatility(jp["close"], 20)), expected)
    # recursive: NaN from t0 on, never silently resumed
    for out, first in [
        (ind.ema(jp["close"], 10), 9),
        (ind.rsi(jp["close"], 14), 14),
        (ind.atr(jp["high"], jp["low"], jp["close"], 14), 14),
        (ind.obv(jp["close"], jp["volume"]), 0),
        (ind.macd(jp["close"])[2], 33),
    ]:
        np.testing.assert_array_equal(nan_rows(out), (rows < first) | (rows >= t0))
    # other assets are untouched
    assert not np.isnan(np.asarray(ind.ema(jp["close"], 10))[9:, [0, 1, 3, 4]]).any()


# ----------------------------------------------------------------------------------------------
# Batching, jit
# ----------------------------------------------------------------------------------------------


def test_panel_computation_equals_per_asset_computation():
    small = {k: v[:150, :3] for k, v in _synthetic_panel().items()}
    panel = {k: jnp.asarray(v, jnp.float32) for k, v in small.items()}
    columns = [{k: jnp.asarray(v[:, j], jnp.float32) for k, v in small.items()} for j in range(3)]
    for name, (call, _) in INDICATOR_CALLS.items():
        batched = [np.asarray(o) for o in _as_tuple(call(panel))]
        for j, col in enumerate(columns):
            for b, single in zip(batched, _as_tuple(call(col))):
                assert np.asarray(single).shape == (150,)
                np.testing.assert_allclose(b[:, j], np.asarray(single), rtol=2e-6, atol=1e-6, err_msg=name)


def test_jit_result_equals_eager_op_by_op_execution():
    small = {k: jnp.asarray(v[:70, :2], jnp.float32) for k, v in _synthetic_panel(seed=3).items()}
    calls = {name: call for name, (call, _) in INDICATOR_CALLS.items()}
    calls["rolling_std_30"] = lambda p: rl.rolling_std(p["close"], 30, ddof=1)  # two-level path
    calls["shift_-2"] = lambda p: rl.shift(p["close"], -2)
    jitted = {name: [np.asarray(o) for o in _as_tuple(call(small))] for name, call in calls.items()}
    with jax.disable_jit():
        for name, call in calls.items():
            for a, b in zip(jitted[name], _as_tuple(call(small))):
                np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-5, err_msg=name)


def test_indicators_compose_under_an_outer_jit_and_vmap():
    close = jnp.asarray(_synthetic_panel()["close"][:120, :4], jnp.float32)
    both = jax.jit(lambda c: (ind.rsi(c, 14), ind.ema(c, 10)))(close)
    np.testing.assert_allclose(np.asarray(both[0]), np.asarray(ind.rsi(close, 14)), rtol=1e-6)
    # vmap over a leading market axis: [market, time, asset] -> same as a python loop
    markets = jnp.stack([close, close * 1.5])
    out = jax.vmap(lambda c: ind.bollinger(c, 20)[0])(markets)
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(ind.bollinger(close * 1.5, 20)[0]), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# `ta` (pandas) library parity, and where its definitions differ
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ta():
    return pytest.importorskip("ta")


def test_ta_bollinger_rsi_stochastic_roc_vwap_returns_agree_where_definitions_match(panel, ta):
    with jax.enable_x64(True):
        jp = {k: jnp.asarray(v) for k, v in panel.items()}
        ours = {
            "bb": [np.asarray(a) for a in ind.bollinger(jp["close"], 20, 2.0)],
            "stoch": np.asarray(ind.stochastic(jp["high"], jp["low"], jp["close"], 5, 3, 1)[0]),
            "roc": np.asarray(ind.roc(jp["close"], 12)),
            "vwap": np.asarray(ind.vwap(jp["high"], jp["low"], jp["close"], jp["volume"], 14)),
            "dlr": np.asarray(ind.log_returns(jp["close"])),
            "dr": np.asarray(ind.returns(jp["close"])),
        }
    for j in range(panel["close"].shape[1]):
        h, l, c, v = (pd.Series(panel[k][:, j]) for k in ("high", "low", "close", "volume"))
        bb = ta.volatility.BollingerBands(c, window=20, window_dev=2)  # population std, like TA-Lib
        for o, r in zip(ours["bb"], (bb.bollinger_hband(), bb.bollinger_mavg(), bb.bollinger_lband())):
            _assert_parity(o[:, j], r.to_numpy(), atol=1e-12 * c.max())
        # ta's stoch_signal is the 3-bar SMA of raw %K = TA-Lib's slow %K; ta divides by a zero range
        so = ta.momentum.StochasticOscillator(h, l, c, window=5, smooth_window=3).stoch_signal().to_numpy()
        finite = np.isfinite(so)
        np.testing.assert_allclose(ours["stoch"][finite, j], so[finite], rtol=1e-9, atol=1e-9)
        _assert_parity(ours["roc"][:, j], ta.momentum.ROCIndicator(c, window=12).roc().to_numpy())
        # ta's VWAP is the same rolling definition; it yields NaN where the window's volume is 0
        tv = ta.volume.VolumeWeightedAveragePrice(h, l, c, v, window=14).volume_weighted_average_price()
        tv = tv.to_numpy()
        finite = np.isfinite(tv)
        np.testing.assert_allclose(ours["vwap"][finite, j], tv[finite], rtol=1e-9)
        _assert_parity(100 * ours["dlr"][:, j], ta.others.DailyLogReturnIndicator(c).daily_log_return().to_numpy())
        _assert_parity(100 * ours["dr"][:, j], ta.others.DailyReturnIndicator(c).daily_return().to_numpy())


def test_ta_recursive_indicators_differ_only_by_seeding_and_converge_after_burn_in(panel, ta):
    # ta seeds its EMAs with the first value (pandas ewm, adjust=False) and its ATR with an SMA
    # that includes bar 0's high-low; TA-Lib (and we) seed with SMAs. The difference decays
    # geometrically, so after 400 bars both agree to ~1e-9.
    burn, early_gap = 400, 0.0
    with jax.enable_x64(True):
        jp = {k: jnp.asarray(v) for k, v in panel.items()}
        ours = {
            "rsi": np.asarray(ind.rsi(jp["close"], 14)),
            "ema": np.asarray(ind.ema(jp["close"], 20)),
            "macd": [np.asarray(a) for a in ind.macd(jp["close"])],
            "atr": np.asarray(ind.atr(jp["high"], jp["low"], jp["close"], 14)),
        }
    for j in range(panel["close"].shape[1]):
        h, l, c = (pd.Series(panel[k][:, j]) for k in ("high", "low", "close"))
        level = c.abs().max()
        rsi_ta = ta.momentum.RSIIndicator(c, window=14).rsi().to_numpy()
        ema_ta = ta.trend.EMAIndicator(c, window=20).ema_indicator().to_numpy()
        macd_ta = ta.trend.MACD(c, window_slow=26, window_fast=12, window_sign=9)
        atr_ta = ta.volatility.AverageTrueRange(h, l, c, window=14).average_true_range().to_numpy()
        early_gap = max(early_gap, np.nanmax(np.abs(ours["ema"][40:60, j] - ema_ta[40:60])) / level)
        np.testing.assert_allclose(ours["rsi"][burn:, j], rsi_ta[burn:], atol=1e-6)
        np.testing.assert_allclose(ours["ema"][burn:, j], ema_ta[burn:], atol=1e-9 * level)
        for o, r in zip(ours["macd"], (macd_ta.macd(), macd_ta.macd_signal(), macd_ta.macd_diff())):
            np.testing.assert_allclose(o[burn:, j], r.to_numpy()[burn:], atol=1e-9 * level)
        np.testing.assert_allclose(ours["atr"][burn:, j], atr_ta[burn:], atol=1e-9 * level)
    assert early_gap > 1e-6  # the seeding difference is real: they disagree early on


def test_obv_differs_from_ta_exactly_by_the_volume_of_unchanged_closes(panel, ta):
    # ta adds the volume when the close is unchanged (and at bar 0); TA-Lib and we leave OBV as is.
    with jax.enable_x64(True):
        ours = np.asarray(ind.obv(jnp.asarray(panel["close"]), jnp.asarray(panel["volume"])))
    close, volume = panel["close"], panel["volume"]
    unchanged = np.zeros_like(close, dtype=bool)
    unchanged[1:] = close[1:] == close[:-1]
    assert unchanged.any()
    expected_gap = np.cumsum(np.where(unchanged, volume, 0.0), axis=0)
    for j in range(close.shape[1]):
        ta_obv = ta.volume.OnBalanceVolumeIndicator(pd.Series(close[:, j]), pd.Series(volume[:, j]))
        np.testing.assert_allclose(ta_obv.on_balance_volume().to_numpy() - ours[:, j], expected_gap[:, j], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# pandas references: VWAP with zero volume, volatilities
# ----------------------------------------------------------------------------------------------


def _pandas_vwap(h, l, c, v, period):
    tp = (h + l + c) / 3.0
    pv = (tp * v).rolling(period).sum()
    vol = v.rolling(period).sum()
    return (pv / vol).where(vol != 0, tp.rolling(period).mean())


def test_vwap_matches_pandas_and_falls_back_to_the_typical_price_mean_without_volume(panel):
    period = 20
    with jax.enable_x64(True):
        jp = {k: jnp.asarray(v) for k, v in panel.items()}
        ours = np.asarray(ind.vwap(jp["high"], jp["low"], jp["close"], jp["volume"], period))
        dev = np.asarray(ind.vwap_deviation(jp["high"], jp["low"], jp["close"], jp["volume"], period))
    fallback_used = False
    for j in range(panel["close"].shape[1]):
        h, l, c, v = (pd.Series(panel[k][:, j]) for k in ("high", "low", "close", "volume"))
        ref = _pandas_vwap(h, l, c, v, period).to_numpy()
        _assert_parity(ours[:, j], ref, rtol=1e-9)
        _assert_parity(dev[:, j], c.to_numpy() / ref - 1.0, rtol=1e-9, atol=1e-12)
        fallback_used |= bool((v.rolling(period).sum() == 0).any())
        low, high = l.rolling(period).min().to_numpy(), h.rolling(period).max().to_numpy()
        ok = ~np.isnan(ours[:, j])
        assert (ours[ok, j] >= low[ok] - 1e-9).all() and (ours[ok, j] <= high[ok] + 1e-9).all()
    if panel["volume"].shape == (N_BARS, 5) and (panel["volume"][100:130, 1] == 0).all():
        assert fallback_used  # the synthetic panel exercises the zero-volume branch


def test_volatilities_match_pandas_and_numpy_references(panel):
    period = 20
    with jax.enable_x64(True):
        jp = {k: jnp.asarray(v) for k, v in panel.items()}
        rv = np.asarray(ind.rolling_volatility(jp["close"], period))
        real = np.asarray(ind.realized_volatility(jp["close"], period))
        gk = np.asarray(ind.garman_klass_volatility(jp["open"], jp["high"], jp["low"], jp["close"], period))
    frame = lambda k: pd.DataFrame(panel[k])  # noqa: E731
    r = np.log(frame("close")).diff()
    _assert_parity(rv, r.rolling(period).std(ddof=1).to_numpy(), rtol=1e-7)
    _assert_parity(real, np.sqrt((r**2).rolling(period).sum()).to_numpy(), rtol=1e-7)
    term = 0.5 * np.log(frame("high") / frame("low")) ** 2 - (2 * math.log(2) - 1) * np.log(frame("close") / frame("open")) ** 2
    _assert_parity(gk, np.sqrt(term.rolling(period).mean()).to_numpy(), rtol=1e-7)


# ----------------------------------------------------------------------------------------------
# Hand-worked primitives
# ----------------------------------------------------------------------------------------------


def test_shift_fills_with_nan_in_both_directions():
    x = jnp.arange(1.0, 5.0)
    np.testing.assert_array_equal(np.asarray(rl.shift(x, 1)), [np.nan, 1, 2, 3])
    np.testing.assert_array_equal(np.asarray(rl.shift(x, -1)), [2, 3, 4, np.nan])
    assert np.isnan(np.asarray(rl.shift(x, 4))).all()
    np.testing.assert_array_equal(np.asarray(rl.shift(jnp.arange(4), 2)), [np.nan, np.nan, 0, 1])  # ints -> float


def test_rolling_primitives_on_hand_worked_numbers():
    x = jnp.array([1.0, 4.0, 2.0, 8.0, 5.0])
    np.testing.assert_array_equal(np.asarray(rl.rolling_sum(x, 3)), [np.nan, np.nan, 7, 14, 15])
    np.testing.assert_array_equal(np.asarray(rl.rolling_max(x, 2)), [np.nan, 4, 4, 8, 8])
    np.testing.assert_array_equal(np.asarray(rl.rolling_min(x, 2)), [np.nan, 1, 2, 2, 5])
    # window [2, 8, 5]: mean 5, squared deviations 9 + 9 + 0 = 18
    np.testing.assert_allclose(np.asarray(rl.rolling_std(x, 3, ddof=1))[4], 3.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(rl.rolling_std(x, 3))[4], math.sqrt(6.0), rtol=1e-6)
    # window longer than the series: all warm-up
    assert np.isnan(np.asarray(rl.rolling_sum(x, 6))).all()


def test_ewm_recurrence_on_hand_worked_numbers():
    x = jnp.array([9.0, 9.0, 4.0, 8.0, 0.0])
    y = np.asarray(rl.ewm_recurrence(x, 0.5, 2.0, start=1))
    # y1 = seed 2; y2 = 2 + .5 (4 - 2) = 3; y3 = 3 + .5 (8 - 3) = 5.5; y4 = 5.5 + .5 (0 - 5.5) = 2.75
    np.testing.assert_array_equal(y, [np.nan, 2.0, 3.0, 5.5, 2.75])


# ----------------------------------------------------------------------------------------------
# float32 accuracy on long series
# ----------------------------------------------------------------------------------------------


def _long_prices(n: int, seed: int = 0) -> np.ndarray:
    """Prices around 100 for `n` bars: slow cycles of +-30% plus 1% bar-to-bar noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 100.0 * np.exp(0.3 * np.sin(2 * np.pi * t / 97_000) + rng.normal(0.0, 0.01, n))


def test_float32_rolling_sum_and_sma_stay_accurate_over_a_million_bars():
    n = 1_000_000
    prices = _long_prices(n)
    x32 = jnp.asarray(prices, jnp.float32)
    exact_input = np.asarray(x32, dtype=np.float64)  # the float32 values, summed in float64
    csum = np.concatenate([[0.0], np.cumsum(exact_input)])
    for window in (20, 252):
        ref = csum[window:] - csum[:-window]  # float64 prefix sums: ~1e-9 relative here
        ours = np.asarray(rl.rolling_sum(x32, window), dtype=np.float64)[window - 1 :]
        assert np.max(np.abs(ours / ref - 1.0)) < 2e-6, window
        sma = np.asarray(ind.sma(x32, window), dtype=np.float64)[window - 1 :]
        assert np.max(np.abs(sma / (ref / window) - 1.0)) < 2e-6, window
    # the naive float32 global cumsum difference would fail the same bound badly
    naive = np.cumsum(exact_input.astype(np.float32), dtype=np.float32)
    naive_sum = (naive[20:] - naive[:-20]).astype(np.float64)
    assert np.max(np.abs(naive_sum / (csum[21:] - csum[1:-20]) - 1.0)) > 1e-3


def test_float32_rolling_std_and_bollinger_are_accurate_on_price_levels():
    prices = _long_prices(200_000, seed=1) + 1_000.0  # a large offset: the textbook cancellation trap
    x32 = jnp.asarray(prices, jnp.float32)
    exact_input = np.asarray(x32, dtype=np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(exact_input, 20)
    ref = windows.std(axis=1)
    ours = np.asarray(rl.rolling_std(x32, 20), dtype=np.float64)[19:]
    assert np.max(np.abs(ours / ref - 1.0)) < 1e-4
    upper, middle, _ = (np.asarray(a, dtype=np.float64)[19:] for a in ind.bollinger(x32, 20, 2.0))
    assert np.max(np.abs((upper - middle) / (2 * ref) - 1.0)) < 1e-4
    # E[x^2] - E[x]^2 in float32 is off by orders of magnitude more on the same data
    w32 = np.lib.stride_tricks.sliding_window_view(np.asarray(x32), 20)
    naive_var = (w32 * w32).mean(axis=1, dtype=np.float32) - w32.mean(axis=1, dtype=np.float32) ** 2
    naive = np.sqrt(np.maximum(naive_var, 0)).astype(np.float64)
    assert np.max(np.abs(naive / ref - 1.0)) > 1e-2
