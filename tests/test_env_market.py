"""Market sources of the environments: replayed real bars and synthetic banks, episode sampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.data.splits import IndexRange
from trading_jax.data.types import Bars
from trading_jax.envs import available, make
from trading_jax.envs.market import (
    log_return_window,
    make_market,
    replay_market,
    sample_episode,
    synthetic_market,
)


def ramp_market(n_time=20, n_assets=2) -> "MarketArrays":  # noqa: F821
    close = np.arange(1, n_time + 1, dtype=np.float64)[:, None] * np.arange(1, n_assets + 1)[None, :]
    bars = Bars(close * 0.99, close * 1.01, close * 0.98, close, np.full_like(close, 1e3))
    return make_market(bars, spread=1e-3)


def test_make_market_adds_a_path_axis_and_exact_log_returns():
    market = ramp_market()
    assert market.close.shape == (1, 20, 2)
    assert market.features.shape == (1, 20, 2, 0)
    np.testing.assert_allclose(market.log_return[0, 0], 0.0)
    np.testing.assert_allclose(market.log_return[0, 5, 0], np.log(6 / 5), rtol=1e-6)


FIX = ("an environment cannot trade on missing or infinite values: repair or fill those bars first "
       "(load_ohlcv(..., repair=...), fill_missing_bars) or cut those rows out (e.g. start the split after the "
       "feature warm-up).")


@pytest.mark.parametrize("field", ["open", "high", "low", "close", "volume"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_make_market_refuses_a_nan_or_inf_bar_naming_the_array_path_asset_and_row(field, bad):
    close = np.full((2, 6, 3), 100.0)  # [path, time, asset]
    fields = {name: close.copy() for name in Bars._fields}
    fields[field][1, 4, 2] = bad
    fields[field][1, 5, 2] = bad
    with pytest.raises(ValueError) as error:
        make_market(Bars(**fields), spread=1e-3)
    assert str(error.value) == f"make_market: {field} has 2 NaN/inf values, the first {bad} at path 1, asset 2, row 4; " + FIX


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_make_market_refuses_nan_features_naming_the_feature_and_a_one_path_market_as_path_0():
    close = np.full((6, 2), 100.0)  # [time, asset]: one path
    features = np.zeros((6, 2, 3))
    features[:2, :, 1] = np.nan  # e.g. the warm-up rows of a feature
    with pytest.raises(ValueError) as error:
        make_market(Bars(close, close, close, close, close), 1e-3, features)
    assert str(error.value) == "make_market: features has 4 NaN/inf values, the first nan at path 0, asset 0, row 0, feature 1; " + FIX
    # float64 values too large for float32 become inf in the cast, and are refused too
    huge = close.copy()
    huge[3, 1] = 1e39
    with pytest.raises(ValueError, match=r"^make_market: close has 1 NaN/inf value, the first inf at path 0, asset 1, row 3;"):
        make_market(Bars(close, close, close, huge, close), 1e-3)


def test_log_return_window_ends_at_the_decision_bar():
    market = ramp_market()
    window = log_return_window(market, jnp.int32(0), jnp.int32(7), 3)
    np.testing.assert_allclose(window[:, 0], np.log([6 / 5, 7 / 6, 8 / 7]), rtol=1e-6)


def test_sample_episode_keeps_the_window_and_the_last_fill_inside_the_market():
    market = ramp_market(n_time=30)
    keys = jax.random.split(jax.random.key(0), 2000)
    paths, starts = jax.vmap(lambda k: sample_episode(k, market, 5, 10))(keys)
    assert int(paths.max()) == 0
    assert int(starts.min()) == 4  # window - 1: bars t0-4 .. t0 are the first observation
    assert int(starts.max()) == 30 - 1 - 10  # the last fill bar t0 + 10 is the market's last bar


def test_sample_episode_refuses_a_market_too_short_for_one_episode():
    with pytest.raises(ValueError, match="episode needs window"):
        sample_episode(jax.random.key(0), ramp_market(n_time=10), 5, 10)


def test_synthetic_bank_is_deterministic_and_each_path_has_its_own_parameters():
    a = synthetic_market(jax.random.key(3), 6, 200, n_assets=2, model="gbm")
    b = synthetic_market(jax.random.key(3), 6, 200, n_assets=2, model="gbm")
    assert a.close.shape == (6, 200, 2)
    np.testing.assert_array_equal(a.close, b.close)
    vol = np.asarray(a.log_return[:, 1:].std(axis=(1, 2)))
    assert vol.max() / vol.min() > 1.3  # sigma drawn per path from (0.1, 0.6)
    assert bool(jnp.all(a.spread > 0)) and bool(jnp.all(jnp.isfinite(a.close)))


def test_replay_market_cuts_the_split_and_names_a_missing_bar(shared_data):
    from trading_jax.data import load_ohlcv

    data = load_ohlcv(sorted((shared_data / "stocks_daily").glob("*.csv")))
    late = [s for s in data.symbols if not data.valid[0, data.symbols.index(s)]][0]
    market = replay_market(data, IndexRange(10, 110), symbols=["AAPL", "MSFT"])
    assert market.close.shape == (1, 100, 2)
    np.testing.assert_allclose(market.close[0, 0, 0], data.bars.close[10, data.symbols.index("AAPL")], rtol=1e-6)
    with pytest.raises(ValueError, match=rf"symbol '{late}' is missing .* at row 0 .*Start the split after"):
        replay_market(data, IndexRange(0, 50), symbols=["AAPL", late])


def test_make_names_the_known_environments_for_an_unknown_one():
    assert available() == ("execution", "portfolio", "trading")
    with pytest.raises(KeyError, match="unknown environment 'tradin'.*'trading'"):
        make("tradin")
