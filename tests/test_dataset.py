"""Supervised datasets from OHLCV files: labels never read a filled bar, the normaliser and the target
scale are fitted on the training bars only, and the default embargo is the label horizon.

Every case loads a small two-symbol CSV panel (or the built-in synthetic market) of one shape, so the
feature pipeline compiles once for the module.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trading_jax.data.types import Bars
from trading_jax.features.pipeline import FeatureConfig, FeaturePipeline, run_feature_job
from trading_jax.training.dataset import DataSpec, build_datasets, label_reach, labels_observed

N_BARS = 300
MISSING = 150  # the bar symbol SYM1 lacks (inside the training split, past the warm-up)
SPLITS = dict(train=0.6, val=0.2, test=0.2)
FAST = FeatureConfig(hurst_window=None, fourier=None)  # DataSpec's fast_features: one compilation for all


def random_walk_panel(n_bars: int, n_assets: int, seed: int):
    """Hourly OHLCV bars of independent log-normal random walks (open = previous close), float64."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (n_bars, n_assets)), axis=0))
    open_ = np.vstack([np.full((1, n_assets), 100.0), close[:-1]])
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.003, close.shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.003, close.shape)))
    volume = rng.lognormal(10.0, 0.5, close.shape)
    timestamps = np.datetime64("2024-01-01T00:00", "ns") + np.arange(n_bars) * np.timedelta64(1, "h")
    return Bars(open_, high, low, close, volume), timestamps, tuple(f"SYM{i}" for i in range(n_assets))


@pytest.fixture(scope="module")
def market():
    return random_walk_panel(N_BARS, 2, seed=3)


def write_panel(folder: Path, bars: Bars, timestamps, symbols, drop: dict[int, int] | None = None) -> str:
    """One CSV per symbol; `drop` maps an asset to a bar index its file leaves out."""
    folder.mkdir(parents=True, exist_ok=True)
    for a, symbol in enumerate(symbols):
        frame = pd.DataFrame({"timestamp": timestamps, "open": bars.open[:, a], "high": bars.high[:, a],
                              "low": bars.low[:, a], "close": bars.close[:, a], "volume": bars.volume[:, a]})
        if drop and a in drop:
            frame = frame.drop(index=drop[a])
        frame.to_csv(folder / f"{symbol}.csv", index=False)
    return str(folder)


def per_asset_times(t: np.ndarray, n_assets: int = 2) -> list[np.ndarray]:
    """The pooled decision bars of `build_datasets` (asset 0's, then asset 1's, each increasing), per asset."""
    breaks = np.flatnonzero(np.diff(t) < 0) + 1
    assert len(breaks) == n_assets - 1, "expected one increasing run of decision bars per asset"
    return np.split(t, breaks)


# ------------------------------------------------------------------------- labels and filled bars


def test_labels_observed_needs_every_bar_from_t_to_t_plus_reach():
    observed = np.ones((10, 2), bool)
    observed[6, 1] = False
    ok = labels_observed(observed, 2)
    np.testing.assert_array_equal(ok[:, 0], [True] * 8 + [False] * 2)  # t + 2 past the end
    np.testing.assert_array_equal(ok[:, 1], [True] * 4 + [False] * 3 + [True] + [False] * 2)  # t = 4, 5, 6 read bar 6


def test_label_reach_is_the_horizon_except_the_volatility_label_reads_at_least_two_bars():
    assert label_reach("regression", 1) == label_reach("classification", 1) == 1
    assert label_reach("multitask", 1) == 2 and label_reach("multitask", 5) == 5


@pytest.mark.parametrize("task, horizon", [("regression", 3), ("classification", 3), ("multitask", 1)])
def test_no_kept_label_reads_a_filled_bar_and_samples_clear_of_it_are_kept(tmp_path, market, task, horizon):
    bars, timestamps, symbols = market
    full = write_panel(tmp_path / "full", bars, timestamps, symbols)
    gappy = write_panel(tmp_path / "gappy", bars, timestamps, symbols, drop={1: MISSING})  # filled by fill_missing_bars
    window = 8
    spec = DataSpec(source=full, window=window, horizon=horizon, **SPLITS)
    reach = label_reach(task, horizon)

    full_splits, full_info = build_datasets(spec, task)
    gap_splits, gap_info = build_datasets(dataclasses.replace(spec, source=gappy), task)
    train_start, train_stop = gap_info["split"]["train"]
    assert gap_info["split"] == full_info["split"] and train_start + 100 < MISSING < train_stop - 20

    full_t = per_asset_times(full_splits["train"][2])
    gap_t = per_asset_times(gap_splits["train"][2])
    # the asset index names each sample's asset: asset a's samples are the a-th increasing run
    for splits, runs in ((full_splits, full_t), (gap_splits, gap_t)):
        asset = splits["train"].asset
        assert asset.dtype == np.int32 and (np.diff(asset) >= 0).all()
        for a in range(2):
            np.testing.assert_array_equal(splits["train"].t[asset == a], runs[a])
    # every kept training label, bars t .. t + reach, lies inside the training split
    assert all((t + reach < train_stop).all() and t.max() + reach == train_stop - 1 for t in full_t + gap_t)
    # the fully observed asset is untouched
    np.testing.assert_array_equal(gap_t[0], full_t[0])
    # without the gap these samples exist, and their labels read bar MISSING: the mask has work to do
    label_reads_missing = lambda t: (t <= MISSING) & (MISSING <= t + reach)
    assert label_reads_missing(full_t[1]).sum() == reach + 1
    # with the gap, no kept label's bars t .. t + reach touch the filled bar ...
    assert not label_reads_missing(gap_t[1]).any(), gap_t[1][label_reads_missing(gap_t[1])]
    # ... and every sample whose input window and label both stay clear of it is kept
    touches = lambda t: (t - window + 1 <= MISSING) & (MISSING <= t + reach)
    np.testing.assert_array_equal(gap_t[1], full_t[1][~touches(full_t[1])])


# ---------------------------------------------------------------- statistics fitted on train only


def perturb_after(bars: Bars, start: int, seed: int) -> Bars:
    """Every bar from `start` on scaled by a random factor per bar and asset (OHLC stay consistent)."""
    rng = np.random.default_rng(seed)
    scale = np.ones(bars.close.shape)
    scale[start:] = rng.uniform(0.5, 2.0, size=scale[start:].shape)
    volume_scale = np.ones(bars.close.shape)
    volume_scale[start:] = rng.uniform(0.2, 5.0, size=scale[start:].shape)
    return Bars(bars.open * scale, bars.high * scale, bars.low * scale, bars.close * scale, bars.volume * volume_scale)


def test_build_datasets_fits_the_normaliser_and_target_scale_on_the_training_bars_only(tmp_path, market):
    bars, timestamps, symbols = market
    spec = DataSpec(source=write_panel(tmp_path / "base", bars, timestamps, symbols), window=8, horizon=3, **SPLITS)
    splits, info = build_datasets(spec, "regression")
    train_stop = info["split"]["train"][1]
    changed = perturb_after(bars, train_stop, seed=0)
    spec_changed = dataclasses.replace(spec, source=write_panel(tmp_path / "changed", changed, timestamps, symbols))
    splits_changed, info_changed = build_datasets(spec_changed, "regression")

    mean, std = np.asarray(info["normalizer"]["mean"]), np.asarray(info["normalizer"]["std"])
    assert mean.shape == std.shape == (len(info["features"]),) and np.isfinite(std).all()
    np.testing.assert_array_equal(np.asarray(info_changed["normalizer"]["mean"]), mean)
    np.testing.assert_array_equal(np.asarray(info_changed["normalizer"]["std"]), std)
    assert info_changed["target_scale"] == info["target_scale"] != 1.0
    np.testing.assert_array_equal(splits_changed["train"][0], splits["train"][0])
    np.testing.assert_array_equal(splits_changed["train"][1], splits["train"][1])
    # the perturbation is real: validation labels after the training split changed
    assert not np.array_equal(splits_changed["val"][1], splits["val"][1])


def test_feature_job_fits_and_saves_the_normaliser_of_the_training_bars_only(tmp_path, market):
    bars, timestamps, symbols = market
    out, out_changed = tmp_path / "features.npz", tmp_path / "features_changed.npz"
    run_feature_job([write_panel(tmp_path / "base", bars, timestamps, symbols)], out=str(out), train_fraction=0.7,
                    config=FAST)
    saved = np.load(out)
    start, stop = saved["train"]
    assert (start, stop) == (0, 210)
    changed = perturb_after(bars, int(stop), seed=1)
    run_feature_job([write_panel(tmp_path / "changed", changed, timestamps, symbols)], out=str(out_changed),
                    train_fraction=0.7, config=FAST)
    saved_changed = np.load(out_changed)

    n_features = len(saved["names"])
    assert saved["mean"].shape == saved["std"].shape == (n_features,) and np.isfinite(saved["std"]).all()
    np.testing.assert_array_equal(saved_changed["mean"], saved["mean"])
    np.testing.assert_array_equal(saved_changed["std"], saved["std"])
    np.testing.assert_array_equal(saved_changed["features"][:stop], saved["features"][:stop])
    assert not np.array_equal(saved_changed["features"][stop:], saved["features"][stop:])
    # the saved statistics are those of the valid training rows
    pipeline = FeaturePipeline(FAST)
    raw = np.asarray(pipeline.compute(bars, timestamps), np.float64)[:stop]
    rows = raw[saved["valid"][:stop]]
    np.testing.assert_allclose(saved["mean"], rows.mean(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(saved["std"], rows.std(axis=0), rtol=1e-3, atol=1e-6)


# ------------------------------------------------------------------------------- default embargo


def test_default_embargo_is_the_horizon_and_validation_labels_start_after_every_training_label(tmp_path, market):
    horizon, window = 4, 8
    spec = DataSpec(source=write_panel(tmp_path / "panel", *market), window=window, horizon=horizon, **SPLITS)
    assert spec.embargo is None
    splits, info = build_datasets(spec, "regression")
    (train_start, train_stop), (val_start, val_stop), (test_start, _) = (
        info["split"]["train"], info["split"]["val"], info["split"]["test"])
    assert info["embargo"] == horizon
    assert val_start - train_stop == horizon and test_start - val_stop == horizon

    train_t, val_t = splits["train"][2], splits["val"][2]
    train_label_bars = (train_t[:, None] + np.arange(1, horizon + 1)).ravel()
    val_label_bars = (val_t[:, None] + np.arange(1, horizon + 1)).ravel()
    # training labels read bars inside the training split only; even the last training bar's label
    # (were it kept) would end before the validation split starts: that is what the embargo buys
    assert train_label_bars.max() < train_stop and train_stop - 1 + horizon < val_start
    # validation samples are decided inside their split, after every bar a training label reads, and
    # their labels read validation bars only (their input windows look back into the training bars:
    # that is the causal past at the decision bar, not a leak)
    assert val_t.min() >= val_start > train_label_bars.max()
    assert val_label_bars.min() > train_label_bars.max() and val_label_bars.max() < val_stop
    assert not np.intersect1d(val_label_bars, train_label_bars).size
    assert (val_t - window + 1).min() < train_stop  # lookback: the first validation samples are kept

    _, explicit = build_datasets(dataclasses.replace(spec, embargo=0), "regression")
    assert explicit["embargo"] == 0 and explicit["split"]["val"][0] == explicit["split"]["train"][1]
