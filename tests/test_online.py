"""Online adaptation (trading_jax.training.online) and model monitoring (trading_jax.evaluation.monitoring)."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.evaluation import monitoring as mon
from trading_jax.training.config import TrainConfig
from trading_jax.training.online import known_samples, refit_times, walk_forward

# ------------------------------------------------------------------------------ walk-forward fine-tuning

L, HORIZON, EVERY, WINDOW = 8, 3, 24, 48
CONFIG = TrainConfig(model="tcn", preset="tiny", task="regression", batch_size=16)


def series(n_bars=200, seed=0):
    """An AR(1) return series, its `[N, L, 1]` windows ending at bars `L-1 .. n_bars-1-HORIZON` and the
    labels `sum of returns t+1 .. t+HORIZON`."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n_bars, np.float32)
    for t in range(1, n_bars):
        r[t] = 0.5 * r[t - 1] + rng.normal()
    times = np.arange(L - 1, n_bars - HORIZON)
    x = np.stack([r[t - L + 1:t + 1] for t in times])[..., None].astype(np.float32)
    y = np.stack([r[t + 1:t + 1 + HORIZON].sum() for t in times])[:, None].astype(np.float32)
    return x, y, times


@pytest.fixture(scope="module")
def setup():
    x, y, times = series()
    params = CONFIG.build_model().init(jax.random.key(0), jnp.asarray(x[:1]), train=False)["params"]
    return x, y, times, params


def run(x, y, times, params, **kw):
    return walk_forward(CONFIG, params, x, y, times, horizon=HORIZON, every=EVERY, window=WINDOW,
                        key=jax.random.key(1), epochs=2, **kw)


def test_known_samples_are_those_whose_label_ends_before_the_refit_bar():
    times = np.arange(10)
    # horizon 2: sample t's label reads t+1, t+2 -> known at the start of bar 7 iff t + 2 < 7, i.e. t <= 4
    np.testing.assert_array_equal(known_samples(times, 2, 7, 3), [2, 3, 4])
    assert known_samples(times, 2, 7, 6) is None  # only 5 known
    # first refit: one past the 3rd smallest label end (2 + 2 = 4) -> 5; then every 2 bars up to the last time
    np.testing.assert_array_equal(refit_times(times, 2, every=2, window=3), [5, 7, 9])


def test_online_finetuning_reads_no_data_after_its_own_time(setup):
    x, y, times, params = setup
    clean = run(x, y, times, params)
    cut = int(clean.records[2]["time"]) + 5  # a bar inside the third segment
    rng = np.random.default_rng(9)
    x2, y2 = x.copy(), y.copy()
    x2[times >= cut] = 1e3 * rng.normal(size=x2[times >= cut].shape)  # inputs reading bars >= cut
    y2[times + HORIZON >= cut] = 1e3 * rng.normal(size=y2[times + HORIZON >= cut].shape)  # labels reading them
    spoiled = run(x2, y2, times, params)

    before = times < cut
    assert before.sum() > 0 and (~before).sum() > 0
    np.testing.assert_array_equal(clean.predictions[before], spoiled.predictions[before])  # bit for bit
    n_checked = 0
    for a, b in zip(clean.records, spoiled.records):
        if a["time"] <= cut:
            n_checked += 1
            np.testing.assert_array_equal(a["samples"], b["samples"])
            for k in ("train_loss", "recent_loss", "param_change", "n_predicted"):
                assert a[k] == b[k], (a["time"], k)
    assert n_checked == 3
    # the garbage does reach the predictions after the cut (the check above is not vacuous)
    assert not np.array_equal(clean.predictions[~before], spoiled.predictions[~before])


def test_finetuning_uses_only_known_labels_and_moves_params_a_little(setup):
    x, y, times, params = setup
    out = run(x, y, times, params)
    schedule = refit_times(times, HORIZON, EVERY, WINDOW)
    assert [r["time"] for r in out.records] == list(schedule)
    assert len(out.records) >= 4
    for r in out.records:
        assert r["refit_done"]
        idx = r["samples"]
        assert idx.size == WINDOW
        assert np.all(times[idx] + HORIZON < r["time"]) and r["last_label_bar"] < r["time"]
        # the most recent known samples: the next sample's label is not yet complete
        assert idx[-1] + 1 == len(times) or times[idx[-1] + 1] + HORIZON >= r["time"]
        assert 0.0 < r["param_change"] < 0.02  # lr 1e-4, 2 epochs of 3 steps: a small move
        assert np.isfinite(r["train_loss"]) and np.isfinite(r["recent_loss"])
    # samples before the first refit bar are not predicted; every later one is, by the latest refit
    first = out.records[0]["time"]
    assert not out.predicted[times < first].any() and np.isnan(out.predictions[times < first]).all()
    assert out.predicted[times >= first].all() and np.isfinite(out.predictions[times >= first]).all()
    expected = np.searchsorted(schedule, times[times >= first], side="right") - 1
    np.testing.assert_array_equal(out.refit_index[times >= first], expected)
    assert sum(r["n_predicted"] for r in out.records) == int((times >= first).sum())


def test_a_refit_window_with_nan_is_refused_naming_the_bar(setup):
    x, y, times, params = setup
    y2 = y.copy()
    y2[5] = np.nan
    with pytest.raises(ValueError, match="online refit at bar"):
        run(x, y2, times, params)


# ------------------------------------------------------------------------------------- monitoring


def test_rolling_accuracy_on_hand_worked_numbers():
    pred = jnp.asarray([1.0, -1.0, 1.0, 1.0, -1.0, 1.0])
    outcome = jnp.asarray([1.0, 1.0, 1.0, -1.0, -1.0, 1.0])
    # correct: [1, 0, 1, 0, 1, 1]; window 3: rows 2..5 -> 2/3, 1/3, 2/3, 2/3
    acc = mon.rolling_direction_accuracy(pred, outcome, window=3)
    np.testing.assert_allclose(acc, [np.nan, np.nan, 2 / 3, 1 / 3, 2 / 3, 2 / 3], rtol=1e-6)
    # horizon 1: row t uses samples t-3 .. t-1 (sample t's outcome is known only at t + 1)
    lagged = mon.rolling_direction_accuracy(pred, outcome, window=3, horizon=1)
    np.testing.assert_allclose(lagged, [np.nan, np.nan, np.nan, 2 / 3, 1 / 3, 2 / 3], rtol=1e-6)
    # NaN predictions are left out; min_periods=2 accepts a window with 2 valid samples
    partial = mon.rolling_direction_accuracy(pred.at[1].set(jnp.nan), outcome, window=3, min_periods=2)
    np.testing.assert_allclose(partial, [np.nan, np.nan, 1.0, 0.5, 2 / 3, 2 / 3], rtol=1e-6)


def test_rolling_metrics_are_causal():
    rng = np.random.default_rng(0)
    pred, outcome = rng.normal(size=30).astype(np.float32), rng.normal(size=30).astype(np.float32)
    base = np.asarray(mon.rolling_ic(pred, outcome, window=5, horizon=2))
    changed = outcome.copy()
    changed[20:] = 100.0  # outcomes of samples >= 20 are known from bar 22 on
    after = np.asarray(mon.rolling_ic(pred, changed, window=5, horizon=2))
    np.testing.assert_array_equal(base[:22], after[:22])
    assert not np.allclose(base[22:], after[22:])


def test_rolling_ic_on_hand_worked_numbers():
    pred = jnp.asarray([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    outcome = jnp.asarray([2.0, 4.0, 6.0, 3.0, 2.0, 1.0])
    ic = mon.rolling_ic(pred, outcome, window=3)
    # rows: [1,2,3]~[2,4,6] -> 1; [2,3,1]~[4,6,3]: dp=[0,1,-1], do=[-1/3,5/3,-4/3] -> 3/sqrt(2*14/3) = 0.98198;
    # [3,1,2]~[6,3,2]: dp=[1,-1,0], do=[7/3,-2/3,-5/3] -> 3/sqrt(2*26/3) = 0.72058; [1,2,3]~[3,2,1] -> -1
    np.testing.assert_allclose(ic, [np.nan, np.nan, 1.0, 3 / np.sqrt(28 / 3), 3 / np.sqrt(52 / 3), -1.0],
                               rtol=1e-5)
    # agrees with the pooled IC of trading_jax.evaluation.metrics on one window
    from trading_jax.evaluation.metrics import information_coefficient

    np.testing.assert_allclose(ic[4], information_coefficient(pred[2:5], outcome[2:5]), rtol=1e-5)


def test_online_monitor_state_matches_the_rolling_functions():
    rng = np.random.default_rng(1)
    pred, outcome = rng.normal(size=12).astype(np.float32), rng.normal(size=12).astype(np.float32)
    acc = np.asarray(mon.rolling_direction_accuracy(pred, outcome, window=4))
    ic = np.asarray(mon.rolling_ic(pred, outcome, window=4))
    state = mon.monitor_init(4)
    update = jax.jit(mon.monitor_update)
    for t in range(12):
        state = update(state, pred[t], outcome[t])
        m = mon.monitor_metrics(state)
        np.testing.assert_allclose(m["accuracy"], acc[t], rtol=1e-6)
        np.testing.assert_allclose(m["ic"], ic[t], rtol=1e-5)


def test_ece_and_brier_on_hand_worked_probabilities():
    probs = jnp.asarray([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    labels = jnp.asarray([0, 1, 1, 1])
    # confidences 0.9, 0.8, 0.7, 0.6 in bins 9, 8, 7, 6 (10 bins) with correctness 1, 0, 1, 1:
    # ECE = (|1-0.9| + |0-0.8| + |1-0.7| + |1-0.6|) / 4 = 1.6 / 4 = 0.4
    np.testing.assert_allclose(mon.expected_calibration_error(probs, labels), 0.4, rtol=1e-6)
    # 2 bins: [0, .5) empty, [.5, 1] holds all: |3/4 - 3.0/4| = 0
    np.testing.assert_allclose(mon.expected_calibration_error(probs, labels, n_bins=2), 0.0, atol=1e-6)
    # Brier: (0.01+0.01) + (0.64+0.64) + (0.09+0.09) + (0.16+0.16) = 1.8 -> / 4 = 0.45
    np.testing.assert_allclose(mon.brier_score(probs, labels), 0.45, rtol=1e-6)
    rolling = mon.rolling_calibration(probs, labels, window=2)
    np.testing.assert_allclose(rolling["ece"], [np.nan, (0.1 + 0.8) / 2, (0.8 + 0.3) / 2, (0.3 + 0.4) / 2], rtol=1e-6)
    np.testing.assert_allclose(rolling["brier"], [np.nan, 0.65, 0.73, 0.25], rtol=1e-6)


def test_band_coverage_counts_outcomes_inside_the_band():
    lower, upper = jnp.asarray([-1.0, -1.0, 0.0, 0.0]), jnp.asarray([1.0, 1.0, 2.0, 2.0])
    outcome = jnp.asarray([0.5, 1.5, 2.0, jnp.nan])
    np.testing.assert_allclose(mon.band_coverage(lower, upper, outcome), 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(mon.rolling_band_coverage(lower, upper, outcome, window=2, min_periods=1),
                               [1.0, 0.5, 0.5, 1.0], rtol=1e-6)


def test_alert_fires_exactly_when_accuracy_crosses_the_threshold(caplog):
    accuracy = np.asarray([np.nan, 0.60, 0.56, 0.54, 0.50, np.nan, 0.57, 0.52, 0.55])
    times = np.arange(100, 109)
    with caplog.at_level(logging.WARNING, logger="trading_jax"):
        alerts = mon.degradation_alerts({"accuracy": accuracy}, {"accuracy": 0.55}, times=times)
    # crosses below at 103 (0.54), stays below at 104, recovers at 106, crosses again at 107; 0.55 is not below
    assert [a["time"] for a in alerts] == [103, 107]
    assert alerts[0] == {"time": 103, "metric": "accuracy", "value": 0.54, "threshold": 0.55, "direction": "below"}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "103" in warnings[0].getMessage() and "accuracy" in warnings[0].getMessage()
    assert warnings[0].name == "trading_jax.evaluation.monitoring"
    # a metric that starts below its threshold alerts at its first valid row
    assert [a["time"] for a in mon.degradation_alerts({"ic": [np.nan, -0.1, -0.2]}, {"ic": 0.0})] == [1]


def test_monitor_reports_rolling_metrics_and_alerts_when_the_model_degrades(caplog):
    rng = np.random.default_rng(2)
    outcome = rng.normal(size=200).astype(np.float32)
    pred = outcome + 0.3 * rng.normal(size=200).astype(np.float32)  # a good model ...
    pred[120:] = rng.normal(size=80)  # ... that stops working at bar 120
    with caplog.at_level(logging.WARNING, logger="trading_jax"):
        report = mon.monitor(pred, outcome, window=30, horizon=2, accuracy_threshold=0.55, ic_threshold=0.2)
    assert report["accuracy"].shape == (200,) and np.isnan(report["accuracy"][:31]).all()
    assert report["accuracy"][100] > 0.8
    by_metric = {a["metric"]: a["time"] for a in report["alerts"]}
    assert set(by_metric) == {"accuracy", "ic"}
    assert all(122 <= t < 200 for t in by_metric.values())  # only after the break is known
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == len(report["alerts"])
