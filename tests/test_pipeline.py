"""FeaturePipeline: exact warm-up, causality of every feature, train-only normalisation, missing bars.

All synthetic cases share one panel shape so the pipeline compiles once for them.
"""

import numpy as np
import pytest

from trading_jax.data.panels import builtin_market, fill_missing_bars
from trading_jax.data.splits import IndexRange
from trading_jax.data.types import Bars
from trading_jax.features.pipeline import FeatureConfig, FeaturePipeline, run_feature_job, temporal_features

N_BARS, N_ASSETS = 400, 3


@pytest.fixture(scope="module")
def pipeline():
    return FeaturePipeline()


@pytest.fixture(scope="module")
def market():
    return builtin_market(N_BARS, N_ASSETS, seed=1)


@pytest.fixture(scope="module")
def raw(pipeline, market):
    bars, timestamps, _ = market
    return np.asarray(pipeline.compute(bars, timestamps))


def test_tensor_has_one_named_column_per_feature(pipeline, raw):
    names = pipeline.names(N_ASSETS)
    assert raw.shape == (N_BARS, N_ASSETS, len(names))
    assert len(set(names)) == len(names)
    assert "rsi_14" in names and "mean_correlation_60" in names and "day_of_week_sin" in names


def test_features_are_nan_exactly_during_the_warm_up(pipeline, raw):
    nan_rows = np.isnan(raw).any(axis=(1, 2))
    assert nan_rows[: pipeline.warmup].all(), "every warm-up row lacks at least one feature"
    assert not nan_rows[pipeline.warmup :].any(), "no NaN after the warm-up on finite input"
    assert nan_rows[pipeline.warmup - 1], "the warm-up is not longer than it needs to be"


def test_warm_up_of_a_single_asset_leaves_out_the_cross_asset_correlation():
    config = FeatureConfig(hurst_window=None, fourier=None, volatility_periods=(20,), correlation_window=90)
    pipeline = FeaturePipeline(config)
    assert pipeline.warmup_for(1) == 60 and pipeline.warmup_for(3) == 90  # 60-bar log return vs 90-bar correlation
    bars, timestamps, _ = builtin_market(160, 1, seed=2)
    nan_rows = np.isnan(np.asarray(pipeline.compute(bars, timestamps))).any(axis=(1, 2))
    assert nan_rows[:60].all() and not nan_rows[60:].any()


@pytest.mark.parametrize("t", [150, 260, 398])
def test_changing_bars_after_t_leaves_every_feature_at_or_before_t_unchanged(pipeline, market, raw, t):
    bars, timestamps, _ = market
    rng = np.random.default_rng(t)
    scale = np.ones((N_BARS, N_ASSETS))
    scale[t + 1 :] = rng.uniform(0.5, 2.0, size=(N_BARS - t - 1, N_ASSETS))
    future_changed = Bars(*(f * scale for f in bars[:4]), bars.volume * scale**2)
    perturbed = np.asarray(pipeline.compute(future_changed, timestamps))
    np.testing.assert_array_equal(perturbed[: t + 1], raw[: t + 1])
    assert not np.array_equal(perturbed[t + 1 :], raw[t + 1 :], equal_nan=True)


def test_normaliser_is_fitted_on_the_training_rows_only(pipeline, market, raw):
    bars, timestamps, _ = market
    train = IndexRange(0, 300)
    state = pipeline.fit(raw, train)
    scale = np.ones((N_BARS, N_ASSETS))
    scale[300:] = 3.0  # a crash-and-rally after the training split
    changed = Bars(*(f * scale for f in bars[:4]), bars.volume * scale**2)
    state_after_change = pipeline.fit(np.asarray(pipeline.compute(changed, timestamps)), train)
    for a, b in zip(state, state_after_change):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    z = np.asarray(pipeline.transform(state, raw))[:300]  # each feature over its own finite train rows
    varying = np.nanstd(raw[:300], axis=(0, 1)) > 0
    np.testing.assert_allclose(np.nanmean(z, axis=(0, 1))[varying], 0.0, atol=0.1)
    assert np.nanmax(np.abs(z)) <= pipeline.config.clip


def test_temporal_features_encode_time_of_day_and_weekday():
    # 1970-01-01 was a Thursday (weekday 3); 06:00 is a quarter of the day.
    ts = np.array(["1970-01-01T06:00", "1970-01-05T00:00"], dtype="datetime64[ns]")
    out = temporal_features(ts)
    np.testing.assert_allclose(out[0], [1.0, 0.0, np.sin(2 * np.pi * 3 / 7), np.cos(2 * np.pi * 3 / 7)], atol=1e-12)
    np.testing.assert_allclose(out[1], [0.0, 1.0, 0.0, 1.0], atol=1e-12)  # Monday midnight


def test_missing_bars_are_filled_flat_and_marked_not_valid(pipeline):
    nan = np.nan
    close = np.array([[nan, 10.0], [nan, 11.0], [5.0, nan], [6.0, 12.0]])
    open_ = np.array([[nan, 10.0], [nan, 10.5], [4.5, nan], [5.5, 11.5]])
    volume = np.array([[nan, 1.0], [nan, 2.0], [7.0, nan], [8.0, 3.0]])
    valid = np.isfinite(close)
    filled, observed = fill_missing_bars(Bars(open_, open_ + 1, open_ - 1, close, volume), valid)
    # before its first bar, asset 0 sits flat at its first open; asset 1's gap sits at the previous close
    np.testing.assert_array_equal(filled.close[:, 0], [4.5, 4.5, 5.0, 6.0])
    np.testing.assert_array_equal(filled.high[:2, 0], [4.5, 4.5])
    np.testing.assert_array_equal(filled.close[:, 1], [10.0, 11.0, 11.0, 12.0])
    np.testing.assert_array_equal(filled.volume, [[0, 1], [0, 2], [7, 0], [8, 3]])
    np.testing.assert_array_equal(observed, valid)
    settled = FeaturePipeline().settled(np.ones((200, 2), bool) & (np.arange(200)[:, None] >= [0, 50]))
    assert settled[:, 0].argmax() == pipeline.warmup and settled[:, 1].argmax() == 50 + pipeline.warmup


def test_an_asset_without_any_bar_is_an_error():
    close = np.array([[1.0, np.nan], [1.0, np.nan]])
    with pytest.raises(ValueError, match=r"asset column\(s\) \[1\] have no valid bar"):
        fill_missing_bars(Bars(close, close, close, close, close), np.isfinite(close))


def test_feature_job_saves_normalised_features_without_nan_on_valid_rows(tmp_path):
    out = tmp_path / "features.npz"
    summary = run_feature_job(out=str(out), synthetic_bars=N_BARS, synthetic_assets=N_ASSETS, seed=1, train_fraction=0.75)
    saved = np.load(out)
    assert saved["features"].shape == (N_BARS, N_ASSETS, len(saved["names"]))
    assert saved["valid"][FeaturePipeline().warmup :].all() and not saved["valid"][: FeaturePipeline().warmup].any()
    assert np.isfinite(saved["features"][saved["valid"]]).all()
    assert list(saved["train"]) == [0, 300]
    assert f"{N_BARS:,} bars x {N_ASSETS} assets" in summary


def test_builtin_market_is_the_documented_offline_panel():
    bars, timestamps, symbols = builtin_market(6, 2, seed=0)
    assert symbols == ("SYN0", "SYN1") and bars.close.shape == (6, 2) and bars.close.dtype == np.float64
    np.testing.assert_array_equal(timestamps, np.datetime64("2024-01-01T00:00", "ns") + np.arange(6) * np.timedelta64(1, "h"))
    again = builtin_market(6, 2, seed=0)[0]
    assert all(np.array_equal(a, b) for a, b in zip(bars, again))


def test_the_old_feature_import_of_fill_missing_bars_is_the_data_panel_function():
    import trading_jax.data as data
    import trading_jax.features as features

    assert features.fill_missing_bars is data.fill_missing_bars is fill_missing_bars
    assert data.builtin_market is builtin_market
    # the module is `panels`, so `trading_jax.data.panel` stays the synthetic panel generator
    from trading_jax.data import panel, synthetic

    assert panel is synthetic.panel


def test_min_bars_is_warm_up_plus_one_and_reaches_past_the_warm_up_in_the_training_split():
    from trading_jax.data.splits import chronological_split

    pipeline = FeaturePipeline()
    assert (pipeline.warmup_for(1), pipeline.min_bars(1)) == (128, 129)
    assert pipeline.min_bars(1, train_fraction=0.7) == 184  # round(0.7 * 184) = 129 training bars
    assert chronological_split(184, 0.7, 0.0, 0.3).train.stop == 129
    assert chronological_split(183, 0.7, 0.0, 0.3).train.stop == 128  # one bar fewer: no settled training row
    fast = FeaturePipeline(FeatureConfig(hurst_window=None, fourier=None))
    assert (fast.warmup_for(3), fast.min_bars(3)) == (60, 61)  # 60-bar returns and volatilities


@pytest.mark.parametrize("n_bars", [1, 4, 5, 127, 128])
def test_a_market_shorter_than_the_warm_up_plus_one_is_refused_with_the_bars_it_needs(n_bars):
    bars, timestamps, _ = builtin_market(n_bars, 1, seed=0)
    expected = (
        f"FeaturePipeline.compute: the market has {n_bars} bar{'s' if n_bars != 1 else ''} but the feature pipeline "
        "needs at least 129 bars (warm-up 128) so that at least one row has every feature: rows 0 .. 127 are the "
        "warm-up; the longest warm-up is the 'hurst_128' feature's: use at least 129 bars, or switch off or shorten "
        "the long-window features in FeatureConfig (e.g. hurst_window=None, fourier=None)."
    )
    with pytest.raises(ValueError) as error:
        FeaturePipeline().compute(bars, timestamps)
    assert str(error.value) == expected


def test_the_shortest_accepted_market_has_exactly_one_row_with_every_feature():
    pipeline = FeaturePipeline(FeatureConfig(hurst_window=None, fourier=None, correlation_window=None))
    bars, timestamps, _ = builtin_market(pipeline.min_bars(1), 1, seed=0)
    nan_rows = np.isnan(np.asarray(pipeline.compute(bars, timestamps))).any(axis=(1, 2))
    assert nan_rows[:-1].all() and not nan_rows[-1]


def test_the_feature_job_refuses_a_market_whose_training_split_ends_inside_the_warm_up(tmp_path):
    with pytest.raises(ValueError, match=r"^synthetic regime-switching market \(seed 0\) has 150 bars but the feature "
                                         r"pipeline needs at least 184 bars \(warm-up 128\) so that its training split "
                                         r"\(the first 70% of the bars\) holds rows past the warm-up"):
        run_feature_job(out=str(tmp_path / "f.npz"), synthetic_bars=150, synthetic_assets=1, train_fraction=0.7)
    assert not (tmp_path / "f.npz").exists()


@pytest.mark.shared_data
def test_real_stock_panel_gives_finite_features_on_every_valid_row(shared_data, pipeline):
    from trading_jax.data import load_ohlcv

    data = load_ohlcv(shared_data / "stocks_daily", symbols=["AAPL", "ABBV", "AGFS", "PTR", "SPLP"])
    bars, observed = fill_missing_bars(data.bars, data.valid)
    raw = np.asarray(pipeline.compute(bars, data.timestamps))
    valid = pipeline.feature_valid(raw, observed)
    assert np.isfinite(raw[valid]).all()
    # ABBV lists on 2013-01-02: nothing before warm-up bars after that is usable
    abbv = data.symbols.index("ABBV")
    first = int(np.argmax(observed[:, abbv]))
    assert first > 0 and not valid[: first + pipeline.warmup, abbv].any()
    # PTR's empty row (line 962) is a filled bar and never a valid feature row
    ptr = data.symbols.index("PTR")
    assert (~observed[:, ptr]).sum() == 1 and not valid[~observed[:, ptr], ptr].any()
    assert valid[:, data.symbols.index("AAPL")].mean() > 0.85
