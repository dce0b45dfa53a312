"""Online fine-tuning and monitoring in supervised experiment files: the [online] and [monitor] tables are
checked like every table, a run scores the walked-forward model next to the static one and reports its
degradation alerts, and the runner's walk-forward keeps each asset's data to that asset's predictions."""

from __future__ import annotations

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.runs import ConfigError, load_experiment, run_experiment
from trading_jax.runs.supervised import MonitorSpec, OnlineSpec, monitor_test, walk_forward_test
from trading_jax.training.config import TrainConfig
from trading_jax.training.dataset import Samples
from trading_jax.training.online import walk_forward

TINY = """
name = "tiny_online"
seeds = [0]
[data]
synthetic_bars = 500
synthetic_assets = 2
window = 16
horizon = 3
[train]
model = "tcn"
preset = "tiny"
task = "regression"
epochs = 1
batch_size = 64
[online]
every = 24
window = 32
epochs = 1
[monitor]
window = 16
accuracy_threshold = 0.99
ic_threshold = 0.0
"""


def write(tmp_path, text, name="tiny.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_run_with_online_and_monitor_tables_scores_the_online_model_and_reports_its_alerts(tmp_path):
    handler = Collect()
    logger = logging.getLogger("trading_jax.runs.supervised")
    logger.addHandler(handler)
    try:
        summary, ok = run_experiment(load_experiment(write(tmp_path, TINY)), tmp_path / "out", show_progress=False)
    finally:
        logger.removeHandler(handler)
    assert ok and "online fine-tuning ic" in summary and "degradation alerts:" in summary
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    names = list(report["summary"])
    assert names[:2] == ["model", "model_online"], "the online row sits next to the static one"
    assert set(report["summary"]["model_online"]) == set(report["summary"]["model"])
    assert set(report["paired"]["model_online - model"]) == set(report["summary"]["model"])
    seed = report["seeds"][0]
    done = [r for r in seed["online"]["records"] if r["refit_done"]]
    assert done and all(r["last_label_bar"] < r["time"] for r in done), "a refit reads only labels known by then"
    assert {r["asset"] for r in seed["online"]["records"]} == {0, 1}
    # a 0.99 accuracy floor is crossed by both predictors; every alert is a warning and a record
    start, stop = report["info"]["split"]["test"]
    assert {a["model"] for a in seed["alerts"]} == {"model", "model_online"}
    for alert in seed["alerts"]:
        assert start <= alert["time"] < stop and alert["asset"] in ("SYN0", "SYN1") and alert["timestamp"]
        assert alert["metric"] in ("accuracy", "ic")
    assert len(handler.messages) == len(seed["alerts"])
    first = seed["alerts"][0]
    assert f"bar {first['time']} ({first['timestamp']})" in handler.messages[0]
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| model_online |" in table and "| model_online - model |" in table
    assert "## Monitoring" in table and f"| 0 | model | {sum(a['model'] == 'model' for a in seed['alerts'])} |" in table


@pytest.mark.parametrize("change, message", [
    (("every = 24", "evry = 24"), "[online] unknown key 'evry' (did you mean 'every'?)"),
    (("every = 24", ""), "[online] needs 'every'"),
    (("window = 32", "window = 0"), "[online] window = 0: expected an integer >= 2"),
    (("epochs = 1\n[monitor]", "epochs = 1\nlearning_rate = -0.1\n[monitor]"),
     "[online] learning_rate = -0.1: expected a finite number > 0"),
    (("epochs = 1\n[monitor]", "epochs = 1.5\n[monitor]"), "[online] epochs = 1.5: expected an integer"),
    (("window = 16\naccuracy", "windw = 16\naccuracy"), "[monitor] unknown key 'windw' (did you mean 'window'?)"),
    (("accuracy_threshold = 0.99", "accuracy_threshold = 1.5"),
     "[monitor] accuracy_threshold = 1.5: expected a number in [0, 1]"),
    (("ic_threshold = 0.0", 'ic_threshold = "low"'), "[monitor] ic_threshold = 'low': expected a number"),
    (("ic_threshold = 0.0", "ece_threshold = 0.1"),
     "[monitor] ece_threshold = 0.1: a regression model gives no class probabilities to calibrate"),
])
def test_nonsense_in_the_online_or_monitor_table_is_one_line_naming_file_table_and_key(tmp_path, change, message):
    assert change[0] in TINY
    path = write(tmp_path, TINY.replace(*change, 1))
    refused(path, message)


def test_online_and_monitor_must_be_tables(tmp_path):
    text = TINY.replace("[online]\nevery = 24\nwindow = 32\nepochs = 1\n", "")
    path = write(tmp_path, text.replace('seeds = [0]', 'seeds = [0]\nonline = 3'))
    refused(path, "online must be a table ([online])")


def refused(path, message):
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    text = str(error.value)
    assert text.startswith(f"{path}: {message}"), text
    assert "\n" not in text


# ------------------------------------------------------------------------ the runner's per-asset slicing

L, F, HORIZON = 8, 3, 2
CONFIG = TrainConfig(model="tcn", preset="tiny", task="regression", batch_size=8)
SPEC = OnlineSpec(every=10, window=16, epochs=1)


def pooled_samples(seed: int, n_history: int = 30, n_test: int = 50, test_start: int = 40):
    """Two assets' history (bars 0 .. n_history-1) and test samples (bars test_start ..), pooled asset by asset."""
    rng = np.random.default_rng(seed)

    def split(times):
        n = 2 * times.size
        return Samples(rng.normal(size=(n, L, F)).astype(np.float32), rng.normal(size=(n,)).astype(np.float32),
                       np.tile(times, 2), np.repeat(np.arange(2, dtype=np.int32), times.size))

    return split(np.arange(n_history)), split(np.arange(test_start, test_start + n_test))


def one_asset(samples: Samples, a: int) -> Samples:
    keep = samples.asset == a
    return Samples(samples.x[keep], samples.y[keep], samples.t[keep], samples.asset[keep])


def test_each_assets_online_predictions_read_only_that_assets_past():
    history, test = pooled_samples(0)
    params = CONFIG.build_model().init(jax.random.key(0), jnp.asarray(test.x[:1]), train=False)["params"]
    key = jax.random.key(3)

    def online(history, test):
        out, records = walk_forward_test(CONFIG, SPEC, params, history, test, horizon=HORIZON, start=40, key=key)
        return out["prediction"].reshape(len(test.t), -1)[:, 0], records

    pred, records = online(history, test)
    assert np.isfinite(pred).all(), "every test sample is predicted"
    assert {r["asset"] for r in records} == {0, 1} and all(r["refit_done"] for r in records)
    first = test.asset == 0
    # asset 0 alone, through walk_forward with the same key: the pooled runner gives the same predictions
    h0, t0 = one_asset(history, 0), one_asset(test, 0)
    alone = walk_forward(CONFIG, params, np.concatenate([h0.x, t0.x]), np.concatenate([h0.y, t0.y]),
                         np.concatenate([h0.t, t0.t]), horizon=HORIZON, every=SPEC.every, window=SPEC.window,
                         key=jax.random.fold_in(key, 0), start=40, epochs=SPEC.epochs)
    np.testing.assert_array_equal(pred[first], alone.predictions[h0.t.size:].reshape(-1))
    # asset 1's history and test data replaced: asset 0's predictions do not move, asset 1's do
    other_history, other_test = pooled_samples(1)
    swap = lambda a, b, mask: np.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), b, a)  # noqa: E731
    h_mask, t_mask = history.asset == 1, test.asset == 1
    history2 = history._replace(x=swap(history.x, other_history.x, h_mask), y=swap(history.y, other_history.y, h_mask))
    test2 = test._replace(x=swap(test.x, other_test.x, t_mask), y=swap(test.y, other_test.y, t_mask))
    pred2, _ = online(history2, test2)
    np.testing.assert_array_equal(pred2[first], pred[first])
    assert not np.allclose(pred2[~first], pred[~first])
    # every test sample at or after bar 63 replaced, for both assets: no prediction before bar 63 moves
    late = test.t >= 63
    test3 = test._replace(x=swap(test.x, other_test.x, late), y=swap(test.y, other_test.y, late))
    pred3, _ = online(history, test3)
    np.testing.assert_array_equal(pred3[~late], pred[~late])
    assert not np.allclose(pred3[late], pred[late])


def test_monitoring_alerts_name_the_asset_and_the_first_bar_with_a_full_window_of_known_outcomes():
    _, test = pooled_samples(0, n_test=40, test_start=100)
    outcome = test.y
    # asset 0 is forecast perfectly, asset 1 with the wrong sign
    pred = np.where(test.asset == 0, outcome, -outcome).astype(np.float32)
    alerts, rolling = monitor_test("regression", {"prediction": pred[:, None]}, test, horizon=HORIZON,
                                   spec=MonitorSpec(window=10), bars=(100, 140), symbols=["A", "B"])
    # the row at bar t reads outcomes of bars <= t - horizon: the first full window of 10 is at 100 + 2 + 9
    assert alerts == [{"time": 111, "asset": "B", "metric": "accuracy", "value": 0.0, "threshold": 0.55,
                       "direction": "below"}]
    assert rolling["A"]["accuracy"]["min"] == 1.0 and rolling["A"]["accuracy"]["rows"] == 140 - 111


def test_a_classifiers_monitoring_watches_accuracy_and_calibration_per_asset():
    _, test = pooled_samples(0, n_test=40, test_start=100)
    labels = np.random.default_rng(2).integers(0, 3, test.t.size)
    test = test._replace(y=labels)
    # confident everywhere: right on asset 0, wrong on asset 1 (accuracy 0, ECE ~1)
    called = np.where(test.asset == 0, labels, (labels + 1) % 3)
    logits = 20.0 * np.eye(3, dtype=np.float32)[called]
    alerts, rolling = monitor_test("classification", {"logits": logits}, test, horizon=HORIZON,
                                   spec=MonitorSpec(window=10, ece_threshold=0.1), bars=(100, 140), symbols=["A", "B"])
    assert [(a["time"], a["asset"], a["metric"], a["direction"]) for a in alerts] == [
        (111, "B", "accuracy", "below"), (111, "B", "ece", "above")]
    assert alerts[0]["value"] == 0.0 and alerts[1]["value"] == pytest.approx(1.0, abs=1e-6)
    assert rolling["A"]["accuracy"]["min"] == 1.0 and rolling["A"]["ece"]["mean"] == pytest.approx(0.0, abs=1e-6)
