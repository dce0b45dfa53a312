"""Sentiment features from scored texts: visibility strictly after a text's time (+ lag), no look-ahead,
hand-worked values on irregular bars, separate assets, one-line errors, the pipeline's external-feature hook
and the path into the environments.

The hand-worked cases share one shape (4 bars, 2 assets, at most 8 texts) so `aggregate_sentiment` compiles
once for them.
"""

import jax
import numpy as np
import pandas as pd
import pytest

from trading_jax.data.splits import IndexRange
from trading_jax.data.types import Bars, MarketData
from trading_jax.envs import make, make_market, replay_market
from trading_jax.features import (
    SENTIMENT_FEATURES, FeatureConfig, FeaturePipeline, aggregate_sentiment, events_from_frame, score_from_probs,
    temporal_features,
)

H = np.timedelta64(1, "h")
MINUTE = np.timedelta64(1, "m")
DAY = np.datetime64("2024-01-02T00:00", "ns")
# irregular bars: 10:00, 11:00, 13:00, 14:00
BARS = DAY + np.array([10, 11, 13, 14]) * H
MEAN, WEIGHTED, COUNT, DECAYED = range(4)


def features(times, assets, scores, confidences, bar_times=BARS, n_assets=2, half_life=2 * H, lag=0):
    return np.asarray(aggregate_sentiment(bar_times, np.asarray(times, "datetime64[ns]"), np.asarray(assets, int),
                                          np.asarray(scores, float), np.asarray(confidences, float),
                                          n_assets, half_life, lag))


def one_text(at, lag=0):
    """Features of a single text of asset 0 (score 1, confidence 1) stamped at `at`."""
    return features([at], [0], [1.0], [1.0], lag=lag)


def test_the_columns_are_named_in_output_order():
    assert SENTIMENT_FEATURES == ("sentiment_mean", "sentiment_weighted", "sentiment_count", "sentiment_decayed")
    assert one_text(DAY).shape == (4, 2, 4)


def test_a_text_at_exactly_a_bars_time_reaches_the_next_bar_not_that_one():
    f = one_text(BARS[1])  # 11:00, bar 1's own time
    np.testing.assert_array_equal(f[:, 0, COUNT], [0, 0, 1, 0])
    np.testing.assert_array_equal(f[:2, 0], 0.0)  # nothing at all before it is visible


def test_a_lag_moves_a_text_to_the_first_bar_after_its_time_plus_the_lag():
    at = DAY + 10 * H  # bar 0's time: first visible at bar 1 (11:00) without a lag
    assert one_text(at)[:, 0, COUNT].tolist() == [0, 1, 0, 0]
    assert one_text(at, lag=59 * MINUTE)[:, 0, COUNT].tolist() == [0, 1, 0, 0]  # 10:59 < 11:00
    assert one_text(at, lag=H)[:, 0, COUNT].tolist() == [0, 0, 1, 0]  # 11:00 is not after 11:00: bar 2
    assert one_text(at, lag=3600.0 * 3.5)[:, 0, COUNT].tolist() == [0, 0, 0, 1]  # lag in seconds: 13:30 -> 14:00


def test_a_text_before_the_first_bar_counts_at_bar_0_and_one_after_the_last_bar_affects_nothing():
    assert one_text(DAY)[:, 0, COUNT].tolist() == [1, 0, 0, 0]
    np.testing.assert_array_equal(one_text(BARS[-1]), 0.0)  # at the last bar's time: seen by no bar
    np.testing.assert_array_equal(one_text(BARS[-1] + H), 0.0)
    np.testing.assert_array_equal(features([], [], [], []), 0.0)  # no texts at all: zeros, no error


def test_hand_worked_mean_weighted_count_and_decayed_values_on_irregular_bars():
    # (time, asset, score, confidence); half-life 2 h, so a text of age a hours weighs 2^(-a/2)
    texts = [(DAY + 9 * H, 0, 0.5, 1.0),    # before bar 0: visible at bar 0 (10:00), age there 1 h
             (DAY + 10 * H, 0, -0.5, 0.5),  # at bar 0's time: bar 1 (11:00)
             (DAY + 12 * H, 0, 0.8, 0.25),  # bar 2 (13:00)
             (DAY + 11 * H, 1, 1.0, 1.0),   # asset 1, at bar 1's time: bar 2
             (DAY + 13 * H + 30 * MINUTE, 0, 0.2, 0.0),  # confidence 0: bar 3 (14:00), no weight anywhere
             (DAY + 15 * H, 0, -1.0, 1.0)]  # after the last bar: nothing
    f = features(*zip(*texts))

    def w(hours):
        return 2.0 ** (-hours / 2.0)

    # bar 0 (10:00): only the 09:00 text
    np.testing.assert_allclose(f[0, 0], [0.5, 0.5, 1, 0.5], rtol=1e-6)
    # bar 1 (11:00): the 10:00 text is new; decayed over the 09:00 (age 2 h) and 10:00 (age 1 h) texts
    decayed_1 = (1.0 * 0.5 * w(2) + 0.5 * -0.5 * w(1)) / (1.0 * w(2) + 0.5 * w(1))
    np.testing.assert_allclose(f[1, 0], [-0.5, -0.5, 1, decayed_1], rtol=1e-5)
    assert decayed_1 == pytest.approx(0.0857864, abs=1e-6)
    # bar 2 (13:00, two hours later): the 12:00 text is new; ages 4 h, 3 h, 1 h
    decayed_2 = ((1.0 * 0.5 * w(4) + 0.5 * -0.5 * w(3) + 0.25 * 0.8 * w(1))
                 / (1.0 * w(4) + 0.5 * w(3) + 0.25 * w(1)))
    np.testing.assert_allclose(f[2, 0], [0.8, 0.8, 1, decayed_2], rtol=1e-5)
    assert decayed_2 == pytest.approx(0.2949747, abs=1e-6)
    # bar 3 (14:00): a confidence-0 text: it counts and enters the plain mean, not the weighted ones, and the
    # decayed score (a weighted mean, all weights halved alike) keeps its value
    np.testing.assert_allclose(f[3, 0], [0.2, 0.0, 1, decayed_2], rtol=1e-5)
    # asset 1: its one text from bar 2 on; 0 before any text
    np.testing.assert_allclose(f[:, 1], [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1]], rtol=1e-6)


def test_several_texts_in_one_bar_are_counted_averaged_and_confidence_weighted():
    f = features([DAY + 10 * H + 10 * MINUTE, DAY + 10 * H + 20 * MINUTE, DAY + 10 * H + 30 * MINUTE],
                 [0, 0, 0], [1.0, -1.0, 0.5], [0.9, 0.3, 0.6])
    mean, weighted = (1.0 - 1.0 + 0.5) / 3, (0.9 * 1.0 - 0.3 * 1.0 + 0.6 * 0.5) / (0.9 + 0.3 + 0.6)
    np.testing.assert_allclose(f[1, 0, :3], [mean, weighted, 3], rtol=1e-6)


def test_each_assets_features_come_from_its_own_texts_only():
    rng = np.random.default_rng(0)
    times = DAY + rng.integers(8 * 60, 14 * 60, 8) * MINUTE
    assets, scores, confidences = rng.integers(0, 2, 8), rng.uniform(-1, 1, 8), rng.uniform(0, 1, 8)
    both = features(times, assets, scores, confidences)
    for a in (0, 1):
        mine = assets == a
        alone = features(times[mine], assets[mine], scores[mine], confidences[mine])
        np.testing.assert_array_equal(both[:, a], alone[:, a])
        np.testing.assert_array_equal(alone[:, 1 - a], 0.0)


@pytest.fixture(scope="module")
def random_texts():
    """30 irregular bars (1-180 min apart), 3 assets, 60 texts spread over (and around) them."""
    rng = np.random.default_rng(7)
    bar_times = DAY + np.cumsum(rng.integers(1, 180, 30)) * MINUTE
    span = (bar_times[-1] - bar_times[0]).astype("timedelta64[m]").astype(int)
    times = bar_times[0] - 60 * MINUTE + rng.integers(0, span + 120, 60) * MINUTE
    return bar_times, times, rng.integers(0, 3, 60), rng.uniform(-1, 1, 60), rng.uniform(0, 1, 60)


@pytest.mark.parametrize("u_bar", [0, 9, 20])
def test_changing_or_deleting_texts_after_u_leaves_every_bar_at_or_before_u_bit_identical(random_texts, u_bar):
    bar_times, times, assets, scores, confidences = random_texts
    rng = np.random.default_rng(u_bar)
    u = bar_times[u_bar] + 7 * MINUTE  # between bars: every bar with time <= u must be untouched
    kw = dict(bar_times=bar_times, n_assets=3, half_life=45 * MINUTE, lag=5 * MINUTE)
    base = features(times, assets, scores, confidences, **kw)
    later = times > u
    n = int(later.sum())
    changed = (np.where(later, u + rng.integers(1, 600, 60) * MINUTE, times), np.where(later, rng.integers(0, 3, 60), assets),
               np.where(later, rng.uniform(-1, 1, 60), scores), np.where(later, rng.uniform(0, 1, 60), confidences))
    keep = ~later | (rng.uniform(size=60) < 0.5)
    deleted = (times[keep], assets[keep], scores[keep], confidences[keep])
    settled = bar_times <= u
    for other in (changed, deleted):
        out = features(*other, **kw)
        np.testing.assert_array_equal(out[settled], base[settled])
    assert n > 0 and not np.array_equal(features(*changed, **kw)[~settled], base[~settled])


def test_times_in_seconds_and_tz_aware_bar_times_give_the_same_features():
    times, assets, scores, confidences = [DAY + 9 * H, DAY + 12 * H], [0, 1], [0.5, -0.3], [0.8, 0.6]
    expected = features(times, assets, scores, confidences)
    seconds = lambda t: np.asarray(t, "datetime64[s]").astype(np.int64)  # noqa: E731
    in_seconds = aggregate_sentiment(seconds(BARS), seconds(times).astype(float), np.array(assets), np.array(scores),
                                     np.array(confidences), 2, 7200.0)
    np.testing.assert_array_equal(np.asarray(in_seconds), expected)
    tz_bars = pd.DatetimeIndex(BARS).tz_localize("UTC").tz_convert("Europe/Berlin")
    in_berlin = aggregate_sentiment(tz_bars, np.asarray(times, "datetime64[ns]"), np.array(assets), np.array(scores),
                                    np.array(confidences), 2, pd.Timedelta(hours=2))
    np.testing.assert_array_equal(np.asarray(in_berlin), expected)


GOOD = dict(event_times=np.array([DAY]), event_assets=np.array([0]), scores=np.array([0.5]),
            confidences=np.array([0.5]), n_assets=2, half_life=H)


@pytest.mark.parametrize("change, message", [
    (dict(scores=np.array([np.nan])), r"scores\[0\] is nan .* finite score"),
    (dict(scores=np.array([1.5])), r"scores\[0\] is 1.5, outside \[-1, 1\]"),
    (dict(confidences=np.array([-0.1])), r"confidences\[0\] is -0.1, outside \[0, 1\]"),
    (dict(event_assets=np.array([2])), r"event_assets\[0\] is 2 but there are 2 assets"),
    (dict(event_times=np.array([np.datetime64("NaT", "ns")])), r"event_times\[0\] is NaT"),
    (dict(scores=np.array([0.5, 0.1])), r"one entry per text; got shapes .*scores \(2,\)"),
    (dict(half_life=0), r"half_life must be positive"),
    (dict(lag=-H), r"lag must be >= 0"),
    (dict(event_times=np.array([3600.0])), r"bar_times are datetime64 but event_times are seconds"),
    (dict(bar_times=BARS[[0, 2, 1, 3]]), r"bar_times must be strictly increasing, but bar_times\[2\] .* <= bar_times\[1\]"),
    (dict(bar_times=np.array([BARS[0], np.datetime64("NaT")])), r"bar_times\[1\] is NaT"),
])
def test_bad_input_is_refused_with_a_one_line_message_naming_the_entry(change, message):
    kw = {"bar_times": BARS, **GOOD, **change}
    with pytest.raises(ValueError, match=message) as error:
        aggregate_sentiment(**kw)
    assert "\n" not in str(error.value) and str(error.value).startswith("aggregate_sentiment: ")


def test_score_from_probs_is_positive_minus_negative_with_the_top_probability_as_confidence():
    score, confidence = score_from_probs(np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]), positive=2, negative=0)
    np.testing.assert_allclose(np.asarray(score), [0.6, -0.5], atol=1e-7)
    np.testing.assert_allclose(np.asarray(confidence), [0.7, 0.6])
    with pytest.raises(ValueError, match="positive=3 is not a class index"):
        score_from_probs(np.ones((2, 3)) / 3, positive=3, negative=0)


def test_a_frame_of_scored_texts_becomes_utc_event_arrays_by_symbol():
    df = pd.DataFrame({"timestamp": ["2024-01-02T10:00:00+01:00", "2024-01-02 12:00"],  # 09:00 UTC; naive = UTC
                       "asset": ["BBB", "AAA"], "score": [0.5, -0.3], "confidence": [0.8, 0.6]})
    events = events_from_frame(df, BARS, ["AAA", "BBB"])
    np.testing.assert_array_equal(events.times, [DAY + 9 * H, DAY + 12 * H])
    np.testing.assert_array_equal(events.assets, [1, 0])
    f = np.asarray(aggregate_sentiment(BARS, *events, n_assets=2, half_life=2 * H))
    assert f[0, 1, COUNT] == 1 and f[2, 0, COUNT] == 1


def test_a_frame_with_an_unknown_symbol_or_a_missing_time_is_refused_naming_the_row():
    df = pd.DataFrame({"timestamp": ["2024-01-02 09:00"] * 3, "asset": ["AAA", "AAA", "XYZ"],
                       "score": [0.1, 0.2, 0.3], "confidence": [0.5, 0.5, 0.5]}, index=[10, 11, 12])
    with pytest.raises(ValueError, match=r"column 'asset' at row 2 \(index 12\) is 'XYZ', not one of the known "
                                         r"symbols \['AAA', 'BBB'\]"):
        events_from_frame(df, BARS, ["AAA", "BBB"])
    df.loc[11, "timestamp"] = None
    with pytest.raises(ValueError, match=r"column 'timestamp' at row 1 \(index 11\) is missing"):
        events_from_frame(df, BARS, ["AAA", "BBB", "XYZ"])
    df.loc[11, "timestamp"], df.loc[10, "score"] = "2024-01-02 09:00", 1.5
    with pytest.raises(ValueError, match=r"column 'score' at row 0 \(index 10\) is 1.5, outside \[-1, 1\]"):
        events_from_frame(df, BARS, ["AAA", "BBB", "XYZ"])


# ---------------------------------------------------------------------------------------------- the pipeline

N_BARS, N_ASSETS = 40, 2
SMALL = FeatureConfig(return_horizons=(1,), roc_periods=(), sma_periods=(5,), ema_periods=(), rsi_period=None,
                      macd=None, bollinger=None, stochastic=None, atr_period=None, obv_period=None, vwap_period=None,
                      volume_roc_period=None, volatility_periods=(), hurst_window=None, fourier=None,
                      wavelet_levels=None, spread_window=None, correlation_window=None)


def random_walk(n_time, n_assets, seed):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n_time, n_assets)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.002, close.shape))
    return Bars(open_, np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999, close,
                rng.uniform(1e3, 2e3, close.shape))


@pytest.fixture(scope="module")
def panel():
    """Hourly bars, their timestamps and the sentiment of 50 random texts over them."""
    bars, timestamps = random_walk(N_BARS, N_ASSETS, seed=3), DAY + np.arange(N_BARS) * H
    rng = np.random.default_rng(3)
    texts = (DAY + rng.integers(0, N_BARS * 60, 50) * MINUTE, rng.integers(0, N_ASSETS, 50),
             rng.uniform(-1, 1, 50), rng.uniform(0, 1, 50))
    return bars, timestamps, np.asarray(aggregate_sentiment(timestamps, *texts, N_ASSETS, 3 * H))


def test_pipeline_appends_external_features_after_its_own_with_matching_names(panel):
    bars, timestamps, sentiment = panel
    pipeline = FeaturePipeline(SMALL)
    alone = np.asarray(pipeline.compute(bars, timestamps))
    raw = np.asarray(pipeline.compute(bars, timestamps, external=sentiment, external_names=SENTIMENT_FEATURES))
    names = pipeline.names(N_ASSETS, True, external_names=SENTIMENT_FEATURES)
    assert raw.shape == (N_BARS, N_ASSETS, alone.shape[2] + 4) == (N_BARS, N_ASSETS, len(names))
    assert names == pipeline.names(N_ASSETS) + SENTIMENT_FEATURES
    np.testing.assert_array_equal(raw[..., : alone.shape[2]], alone)
    np.testing.assert_array_equal(raw[..., alone.shape[2]:], sentiment)
    # the path without external features is the one it always was
    traced = pipeline.compute_traced(Bars(*(np.asarray(f, np.float32) for f in bars)),
                                     np.asarray(temporal_features(timestamps), np.float32))
    np.testing.assert_array_equal(alone, np.asarray(traced))
    np.testing.assert_array_equal(np.asarray(pipeline.compute(bars, timestamps, external=None)), alone)


def test_pipeline_fits_the_external_columns_on_the_training_rows_only(panel):
    bars, timestamps, sentiment = panel
    pipeline, train = FeaturePipeline(SMALL), IndexRange(0, 30)
    raw = pipeline.compute(bars, timestamps, external=sentiment, external_names=SENTIMENT_FEATURES)
    state = pipeline.fit(raw, train)
    changed = sentiment.copy()
    changed[30:] = np.random.default_rng(0).uniform(-1, 1, changed[30:].shape)  # a news storm after the split
    state_changed = pipeline.fit(pipeline.compute(bars, timestamps, external=changed), train)
    for a, b in zip(state, state_changed):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(state.mean)[-4:], sentiment[:30].mean(axis=(0, 1)), rtol=1e-5, atol=1e-7)
    z = np.asarray(pipeline.transform(state, raw))
    assert np.isfinite(z[:, :, -4:]).all()


def test_pipeline_refuses_external_features_of_the_wrong_shape_or_with_nan_after_the_warm_up(panel):
    bars, timestamps, sentiment = panel
    pipeline = FeaturePipeline(SMALL)
    with pytest.raises(ValueError, match=r"external has shape \(39, 2, 4\) but the market is \[time, asset\] = \[40, 2\]"):
        pipeline.compute(bars, timestamps, external=sentiment[1:])
    with pytest.raises(ValueError, match="external has 4 columns but external_names has 3 names"):
        pipeline.compute(bars, timestamps, external=sentiment, external_names=SENTIMENT_FEATURES[:3])
    holed = sentiment.copy()
    holed[: pipeline.warmup_for(N_ASSETS)] = np.nan  # NaN in the warm-up rows is allowed
    assert np.asarray(pipeline.compute(bars, timestamps, external=holed)).shape == (N_BARS, N_ASSETS, 6 + 4)
    holed[25, 1, 3] = np.nan
    with pytest.raises(ValueError, match=r"external column 'sentiment_decayed' is nan at row 25, asset 1"):
        pipeline.compute(bars, timestamps, external=holed, external_names=SENTIMENT_FEATURES)
    with pytest.raises(ValueError, match="'log_return_1' is already a feature name"):
        pipeline.names(N_ASSETS, external_names=("log_return_1",))


# ---------------------------------------------------------------------------------------------- the envs

def test_sentiment_reaches_the_trading_observation_through_replay_market(panel):
    bars, timestamps, sentiment = panel
    data = MarketData(bars=bars, timestamps=timestamps, symbols=("AAA", "BBB"), valid=np.ones((N_BARS, N_ASSETS), bool),
                      frequency=H, extra={}, report=None, sources=("AAA.csv", "BBB.csv"))
    split = IndexRange(5, 35)
    market = replay_market(data, split, features=sentiment)
    assert market.features.shape == (1, 30, N_ASSETS, 4)
    np.testing.assert_array_equal(np.asarray(market.features[0]), sentiment[5:35])
    np.testing.assert_array_equal(np.asarray(make_market(bars, 2e-4, features=sentiment).features[0]), sentiment)

    env, params = make("trading", data=data, split=split, features=sentiment, window=4, episode_length=8)
    for seed in (0, 1):
        obs, state = env.reset(jax.random.key(seed), params)
        t = int(state.t)
        # the observation's last N * F entries: the features of decision bar t, asset-major
        np.testing.assert_array_equal(np.asarray(obs)[-N_ASSETS * 4:], sentiment[split.start + t].reshape(-1))
