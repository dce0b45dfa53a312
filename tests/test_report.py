"""Backtest reports (metrics table, PNG plots, report folder) and interpretability (integrated gradients,
permutation importance, attention maps) behave as documented."""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.evaluation import interpret, performance
from trading_jax.evaluation.report import (
    attention_map,
    drawdown_series,
    metrics_markdown,
    metrics_records,
    performance_summary,
    plot_attention,
    plot_importance,
    rolling_sharpe,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["momentum", "reversal", "buy_hold"]


@pytest.fixture(scope="module")
def book():
    """Three strategies over 60 daily bars, their weights over 4 assets and a correlated factor."""
    rng = np.random.default_rng(7)
    factor = rng.normal(4e-4, 0.01, 60).astype(np.float32)
    returns = (0.6 * factor + rng.normal(2e-4, 0.008, (3, 60))).astype(np.float32)
    weights = rng.dirichlet(np.ones(4), (3, 60)).astype(np.float32)
    return returns, weights, factor


def one_line_value_error(call):
    with pytest.raises(ValueError) as err:
        call()
    assert "\n" not in str(err.value), str(err.value)
    return str(err.value)


# ------------------------------------------------------------------------------------------ summary


def test_summary_matches_the_performance_functions_on_the_same_returns(book):
    returns, weights, factor = book
    summary = performance_summary(returns, "daily", weights=weights, factor_returns=factor)
    expected = {
        "total_return": performance.total_return(returns),
        "annual_return": performance.annual_return(returns, "daily"),
        "annual_volatility": performance.annual_volatility(returns, "daily"),
        "sharpe_ratio": performance.sharpe_ratio(returns, period="daily"),
        "sortino_ratio": performance.sortino_ratio(returns, period="daily"),
        "calmar_ratio": performance.calmar_ratio(returns, "daily"),
        "max_drawdown": performance.max_drawdown(returns),
        "value_at_risk": performance.value_at_risk(returns, 0.05),
        "expected_shortfall": performance.conditional_value_at_risk(returns, 0.05),
        "profit_factor": performance.profit_factor(returns),
        "win_rate": performance.win_rate(returns),
        "turnover": performance.turnover(weights),
        "beta": performance.beta(returns, factor),
        "alpha": performance.alpha(returns, factor, period="daily"),
    }
    assert list(summary) == [*expected, "n_periods"]
    for key, value in expected.items():
        assert summary[key].shape == (3,) and summary[key].dtype == np.float64, key
        np.testing.assert_allclose(summary[key], np.asarray(value, np.float64), rtol=1e-5, atol=1e-7, err_msg=key)
    np.testing.assert_array_equal(summary["n_periods"], [60, 60, 60])


def test_a_single_series_is_one_strategy_and_optional_metrics_need_their_inputs(book):
    returns, _, _ = book
    summary = performance_summary(returns[0], "daily")
    assert "turnover" not in summary and "beta" not in summary and "alpha" not in summary
    assert all(v.shape == (1,) for v in summary.values())
    np.testing.assert_allclose(summary["sharpe_ratio"], performance.sharpe_ratio(returns[0]), rtol=1e-5)


def test_undefined_metrics_are_nan_null_in_json_and_na_in_markdown_never_a_number():
    returns = np.array([[0.001] * 6,                                  # constant: zero volatility
                        [0.01, 0.02, 0.0, 0.01, 0.03, 0.02],          # never loses: no drawdown, no losses
                        [0.01, -0.02, 0.01, 0.0, -0.01, 0.02]])       # an ordinary series
    summary = performance_summary(returns, "daily")
    # performance gives inf here (a zero denominator); a report must not rank an inf Sharpe first.
    assert performance.sharpe_ratio(returns[0]) == np.inf and performance.profit_factor(returns[1]) == np.inf
    for key in ("sharpe_ratio", "sortino_ratio", "calmar_ratio", "profit_factor"):
        assert np.isnan(summary[key][0]) and np.isfinite(summary[key][2]), key
    for key in ("sortino_ratio", "calmar_ratio", "profit_factor"):  # no losing period, no drawdown
        assert np.isnan(summary[key][1]), key
    assert summary["annual_volatility"][0] == 0.0  # defined (zero), so reported as such

    table = metrics_markdown(summary, ["flat", "winner", "mixed"])
    header, _, flat, winner, mixed = table.strip().splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")]
    flat_cells = dict(zip(columns, [c.strip() for c in flat.strip("|").split("|")]))
    for column in ("Sharpe", "Sortino", "Calmar", "Profit factor"):
        assert flat_cells[column] == "n/a", column
    assert flat_cells["Annual vol"] == "0.00%"
    assert "n/a" not in mixed
    assert "nan" not in table.lower().replace("n/a", "") and "inf" not in table

    records = metrics_records(summary, ["flat", "winner", "mixed"])
    text = json.dumps(records, allow_nan=False)  # strict JSON: NaN became null
    assert json.loads(text)["flat"]["sharpe_ratio"] is None
    assert json.loads(text)["mixed"]["n_periods"] == 6


def test_markdown_has_one_row_per_strategy_with_hand_worked_cells():
    returns = np.array([[0.10, -0.05], [0.0, 0.02]])
    summary = performance_summary(returns, "daily")
    table = metrics_markdown(summary, ["a|b", "c"], title="Hand")
    lines = table.strip().splitlines()
    assert lines[0] == "## Hand"
    rows = [line for line in lines[2:] if line.startswith("| ") and not line.startswith("| Strategy")]
    assert len(rows) == 2
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[0] == "a&#124;b"
    assert cells[1] == "4.50%"   # total return: 1.10 * 0.95 - 1
    assert cells[7] == "-5.00%"  # max drawdown: from the peak 1.10 to 1.045
    assert cells[-1] == "2"      # periods


# ----------------------------------------------------------------------------------- plotted series


def test_rolling_sharpe_reads_no_future_bar_and_is_the_sharpe_of_each_window(book):
    returns, _, _ = book
    window, t = 10, 30
    sharpe = rolling_sharpe(returns, window, "daily")
    assert sharpe.shape == returns.shape
    assert np.isnan(sharpe[:, : window - 1]).all() and np.isfinite(sharpe[:, window - 1:]).all()
    np.testing.assert_allclose(sharpe[:, t], performance.sharpe_ratio(returns[:, t - window + 1: t + 1]), rtol=1e-5)
    future_changed = returns.copy()
    future_changed[:, t + 1:] = np.random.default_rng(1).normal(0, 0.5, future_changed[:, t + 1:].shape)
    again = rolling_sharpe(future_changed, window, "daily")
    np.testing.assert_array_equal(again[:, : t + 1], sharpe[:, : t + 1])
    assert not np.allclose(again[:, t + 1:], sharpe[:, t + 1:])


def test_drawdown_series_starts_from_a_peak_and_bottoms_at_max_drawdown(book):
    returns, _, _ = book
    np.testing.assert_allclose(drawdown_series(np.array([0.10, -0.20, 0.05])), [0.0, -0.2, 1.1 * 0.8 * 1.05 / 1.1 - 1],
                               rtol=1e-6)
    assert drawdown_series(np.array([-0.1, 0.05]))[0] == pytest.approx(-0.1)  # the start is a peak
    np.testing.assert_allclose(drawdown_series(returns).min(axis=1), performance.max_drawdown(returns), rtol=1e-5)


def test_attention_map_averages_batch_layers_and_heads_or_selects_one():
    logits = np.random.default_rng(3).normal(size=(2, 3, 4, 5, 5))  # [batch, L, h, T, T] as the transformers return
    attention = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1), np.float64)
    mean = attention_map(attention)
    np.testing.assert_allclose(mean, attention.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(attention_map(attention, layer=-1, head=2), attention[:, 2, 2].mean(axis=0))
    np.testing.assert_allclose(attention_map(attention, "max", head=0), attention[:, :, 0].max(axis=(0, 1)))
    np.testing.assert_array_equal(attention_map(attention[0, 0, 0]), attention[0, 0, 0])


# ------------------------------------------------------------------------------------------- files


def test_write_report_writes_valid_pngs_and_both_tables(tmp_path, book):
    returns, weights, factor = book
    returns = returns.copy()
    returns[2] = 0.001  # an undefined Sharpe must reach the files as null / n/a
    times = np.arange("2024-01-01", 60, dtype="datetime64[D]")
    attention = jax.nn.softmax(jnp.zeros((1, 1, 2, 6, 6)), axis=-1)
    result = write_report(tmp_path / "report", returns, NAMES, period="daily", times=times, weights=weights,
                          factor_returns=factor, attention=attention,
                          importance={"permutation": (["rsi", "volume"], [0.3, 0.1], [0.02, 0.01])},
                          title="Test", rolling_window=10)
    out = tmp_path / "report"
    expected = {"equity.png", "drawdown.png", "rolling_sharpe.png", "attention.png", "importance_permutation.png",
                "metrics.json", "metrics.md"}
    assert set(result["paths"]) == expected and {p.name for p in out.iterdir()} == expected  # no temporary files
    for name in expected - {"metrics.json", "metrics.md"}:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000, name

    record = json.loads((out / "metrics.json").read_text())
    assert record["strategies"] == NAMES and record["start"] == "2024-01-01" and record["end"] == "2024-02-29"
    assert record["metrics"]["buy_hold"]["sharpe_ratio"] is None
    assert record["metrics"]["momentum"]["sharpe_ratio"] == pytest.approx(result["summary"]["sharpe_ratio"][0])
    assert record["importance"]["permutation"]["rsi"] == {"value": 0.3, "error": 0.02}
    md = (out / "metrics.md").read_text()
    assert sum(line.startswith(f"| {n} |") for n in NAMES for line in md.splitlines()) == 3
    assert "![equity](equity.png)" in md


def test_plots_stand_alone(tmp_path):
    path = plot_importance(["a", "b", "c"], [0.1, -0.02, 0.5], [0.01, np.nan, 0.05], tmp_path / "imp.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    path = plot_attention(np.eye(4) * 0.5 + 0.125, tmp_path / "att.png", labels=["t0", "t1", "t2", "t3"])
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_a_failed_write_keeps_the_previous_metrics_json_whole(tmp_path, book, monkeypatch):
    returns, weights, factor = book
    kwargs = dict(period="daily", weights=weights, factor_returns=factor, rolling_window=10)  # compiled already
    write_report(tmp_path, returns, NAMES, **kwargs)
    before = (tmp_path / "metrics.json").read_text()
    real_replace = os.replace

    def crash_on_metrics(src, dst):
        if str(dst).endswith("metrics.json"):
            raise KeyboardInterrupt  # interrupted between writing the temporary file and renaming it
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_metrics)
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path, returns * 2, NAMES, **kwargs)
    assert (tmp_path / "metrics.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("call", [
    lambda r, w, f: performance_summary(r[:, :, None], "daily"),
    lambda r, w, f: performance_summary(np.where(np.arange(60) == 5, np.nan, r), "daily"),
    lambda r, w, f: performance_summary(r[:, :0], "daily"),
    lambda r, w, f: performance_summary(r, "fortnightly"),
    lambda r, w, f: performance_summary(r, "daily", weights=w[0]),
    lambda r, w, f: performance_summary(r, "daily", factor_returns=f[:-1]),
    lambda r, w, f: metrics_markdown({"sharpe_ratio": np.zeros(3), "n_periods": np.full(3, 60)}, NAMES[:2]),
    lambda r, w, f: write_report("unused", r, ["a", "a", "b"], period="daily"),
    lambda r, w, f: write_report("unused", r, NAMES, period="daily", times=np.arange(59)),
    lambda r, w, f: write_report("unused", r, NAMES, period="daily", importance={"../x": (["a"], [1.0])}),
    lambda r, w, f: rolling_sharpe(r, 61),
    lambda r, w, f: attention_map(np.ones(5)),
    lambda r, w, f: attention_map(np.ones((3, 5, 5)) / 5, layer=0),
    lambda r, w, f: plot_importance(["a"], [1.0, 2.0], path="unused.png"),
], ids=["3-D returns", "NaN return", "no periods", "unknown period", "2-D weights for 2-D returns",
        "factor of another length", "fewer names than rows", "duplicate names", "times of another length",
        "importance kind with a path", "window past the end", "1-D attention", "layer of 3-D attention",
        "names and values differ"])
def test_bad_input_is_a_one_line_value_error(book, call, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but never into the repository
    one_line_value_error(lambda: call(*book))
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------- interpretability

W = jnp.array([1.0, -2.0, 3.0])


def linear(x):
    """`f(x) = sum_t x[:, t] @ w`: [batch, T, 3] -> [batch]."""
    return jnp.sum(x @ W, axis=-1)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):  # [batch, T, F] -> [batch]
        h = jnp.tanh(nn.Dense(16)(x.reshape(x.shape[0], -1)))
        return nn.Dense(1)(h)[:, 0]


MLP_MODEL = MLP()


def mlp(x, params):
    return MLP_MODEL.apply(params, x)


@pytest.fixture(scope="module")
def windows():
    return jnp.asarray(np.random.default_rng(11).normal(size=(8, 5, 3)), jnp.float32)


def test_integrated_gradients_of_a_linear_model_is_input_minus_baseline_times_weight(windows):
    baseline = jnp.full((5, 3), 0.5)
    np.testing.assert_allclose(interpret.integrated_gradients(linear, windows, steps=4), windows * W, atol=1e-6)
    np.testing.assert_allclose(interpret.integrated_gradients(linear, windows, baseline, steps=4),
                               (windows - baseline) * W, atol=1e-6)
    importance = interpret.feature_importance_ig(linear, windows, steps=4)
    np.testing.assert_allclose(importance, jnp.abs(W) * jnp.abs(windows).mean(axis=(0, 1)), rtol=1e-6)


def test_completeness_holds_on_a_small_mlp_with_error_falling_as_one_over_steps_squared(windows):
    rng = np.random.default_rng(0)  # weights drawn directly (no init to compile), large enough to curve tanh
    params = {"params": {"Dense_0": {"kernel": rng.normal(0, 0.5, (15, 16)), "bias": rng.normal(0, 0.5, 16)},
                         "Dense_1": {"kernel": rng.normal(0, 0.5, (16, 1)), "bias": np.zeros(1)}}}
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
    assert jax.tree.structure(params) == jax.tree.structure(jax.eval_shape(MLP_MODEL.init, jax.random.key(0), windows))
    model = jax.jit(mlp)
    delta = model(windows, params) - model(jnp.zeros_like(windows), params)
    gaps = {}
    for steps in (8, 32):
        attributions = interpret.integrated_gradients(mlp, windows, steps=steps, args=(params,))
        gaps[steps] = float(jnp.max(jnp.abs(attributions.sum(axis=(1, 2)) - delta)))
    scale = float(jnp.max(jnp.abs(delta)))
    for steps, gap in gaps.items():
        assert gap <= scale / steps**2, (steps, gap)  # the midpoint rule's error is O(1 / steps^2)
    assert gaps[32] < gaps[8] / 8                    # 16x in theory
    assert gaps[8] > 1e-4 * scale                    # the model is curved: the test above can fail


def test_permutation_importance_ranks_the_informative_feature_first_and_noise_near_zero():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(256, 4, 3)).astype(np.float32)
    y = 2.0 * x[:, -1, 0] + 0.1 * rng.normal(size=256).astype(np.float32)  # only feature 0 (last bar) matters
    coef = np.linalg.lstsq(x.reshape(256, -1), y, rcond=None)[0].astype(np.float32)  # fitted on all features

    def neg_mse(x, y, coef):
        return -jnp.mean((x.reshape(x.shape[0], -1) @ coef - y) ** 2)

    key = jax.random.key(42)
    mean, std = interpret.permutation_importance(neg_mse, x, y, key, n_repeats=4, args=(jnp.asarray(coef),))
    assert mean.shape == std.shape == (3,)
    assert int(jnp.argmax(mean)) == 0 and float(mean[0]) > 4.0  # ~ 2 * 2^2 * var(x): the signal is destroyed
    assert float(jnp.max(jnp.abs(mean[1:]))) < 0.01 * float(mean[0])

    again = interpret.permutation_importance(neg_mse, x, y, key, n_repeats=4, args=(jnp.asarray(coef),))
    np.testing.assert_array_equal(again[0], mean)  # same key, same result
    np.testing.assert_array_equal(again[1], std)
    other = interpret.permutation_importance(neg_mse, x, y, jax.random.key(43), n_repeats=4, args=(jnp.asarray(coef),))
    assert not np.allclose(other[0], mean)
    one_at_a_time = interpret.permutation_importance(neg_mse, x, y, key, n_repeats=4, args=(jnp.asarray(coef),),
                                                     batch_size=5)
    np.testing.assert_allclose(one_at_a_time[0], mean, rtol=1e-5)


@pytest.mark.parametrize("call", [
    lambda x: interpret.integrated_gradients(lambda z: z.sum(axis=-1), x),
    lambda x: interpret.integrated_gradients(linear, x, steps=0),
    lambda x: interpret.integrated_gradients(linear, x, baseline=jnp.zeros(4)),
    lambda x: interpret.integrated_gradients(linear, x.at[0, 0, 0].set(jnp.nan)),
    lambda x: interpret.feature_importance_ig(linear, x, feature_axis=0),
    lambda x: interpret.permutation_importance(lambda a, b: -jnp.mean(a), x, jnp.zeros(7), jax.random.key(0)),
    lambda x: interpret.permutation_importance(lambda a, b: -jnp.mean(a), x, jnp.zeros(8), 0),
    lambda x: interpret.permutation_importance(lambda a, b: a.mean(axis=0), x, jnp.zeros(8), jax.random.key(0)),
    lambda x: interpret.permutation_importance(lambda a, b: -jnp.mean(a), x[0, 0], jnp.zeros(3), jax.random.key(0)),
], ids=["fn output is not [batch]", "no steps", "baseline does not broadcast", "NaN input", "batch as feature axis",
        "y of another batch size", "an int for a key", "metric is not a scalar", "1-D sample for permutation"])
def test_bad_interpretability_input_is_a_one_line_value_error(windows, call):
    one_line_value_error(lambda: call(windows))
