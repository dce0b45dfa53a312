"""Supervised datasets from market data: bars -> features -> labels -> windows of each chronological split.

`build_datasets(spec, task)` builds the panel (a file, folder or glob of OHLCV, or the built-in synthetic
market) and its `FeaturePipeline` tensor with the normaliser fitted on the training split only; labels
from t+1 onward; and the windows of each chronological split (embargo = horizon by default), dropping
samples whose inputs leave the split or whose label reads a bar past the split end or an unobserved
(filled) bar (every bar t .. t + `label_reach` must be observed). Regression targets (and the multitask return
and volatility targets) are divided by the training split's std of the returns; that scale and the normaliser's
statistics are returned in `info`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DataSpec", "GENERATED_SOURCES", "SEED_INDICATORS", "Samples", "load_panel", "make_labels", "label_reach", "labels_observed",
           "build_datasets", "feature_state", "resolve_indicator_columns"]

GENERATED_SOURCES = ("synthetic", "gbm")
"""`DataSpec.source` values that name a built-in generated market rather than files."""

SEED_INDICATORS = ("rsi_14", "macd_over_close", "macd_signal_over_close", "bollinger_percent_b", "bollinger_bandwidth")
"""Seed 001's technical indicators (RSI, MACD, MACD signal, Bollinger upper and lower) as `FeaturePipeline`
features: MACD scale-free (over the close) and the bands as %b and bandwidth."""


class Samples(NamedTuple):
    """The samples of one split, pooled over assets (asset 0's in time order, then asset 1's, ...).

    Attributes:
        x: `[n, window, F]` float32 normalised feature windows (the window ends at bar `t`).
        y: targets `[n]` (a dict of `[n]` for multitask).
        t: `[n]` int decision bar of each sample (its label reads bars t+1 .. t+reach).
        asset: `[n]` int32 index of the sample's asset in `info["symbols"]` (tasks of one asset each,
            per-asset evaluation).
    """

    x: np.ndarray
    y: Any
    t: np.ndarray
    asset: np.ndarray


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where the bars come from and how samples are cut from them.

    Attributes:
        source: "synthetic" (the built-in offline market), "gbm" (a driftless random walk: the placebo market of
            `trading_jax.data.panels.gbm_market`, where nothing is predictable) or OHLCV path(s) as `load_ohlcv`
            takes them.
        symbols: optional subset of symbols to keep.
        repair: repairs passed to `load_ohlcv` (reported in the load report).
        synthetic_bars, synthetic_assets, synthetic_seed: size and seed of the synthetic market.
        window: bars per input window.
        horizon: label horizon in bars (labels read bars t+1 .. t+horizon; the multitask volatility
            label reads t+1 .. t+max(horizon, 2), see `label_reach`).
        dead_band: direction labels within +-dead_band (log return) are "flat".
        train, val, test: chronological split fractions.
        embargo: bars left out between splits (default: `horizon`).
        stride: bars between consecutive training samples.
        fast_features: leave out the costliest features (Hurst, Fourier) for quick runs.
    """

    source: str = "synthetic"
    symbols: tuple[str, ...] | None = None
    repair: tuple[str, ...] = ()
    synthetic_bars: int = 3000
    synthetic_assets: int = 4
    synthetic_seed: int = 0
    window: int = 32
    horizon: int = 5
    dead_band: float = 0.0
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    embargo: int | None = None
    stride: int = 1
    fast_features: bool = True



def load_panel(spec: DataSpec):
    """Filled bars, timestamps, symbols and the observed mask of the experiment's market."""
    from trading_jax.data.panels import builtin_market, fill_missing_bars, gbm_market

    if spec.source == "synthetic":
        bars, timestamps, symbols = builtin_market(spec.synthetic_bars, spec.synthetic_assets, spec.synthetic_seed)
        return bars, timestamps, symbols, np.ones(bars.close.shape, bool), "synthetic market"
    if spec.source == "gbm":
        bars, timestamps, symbols = gbm_market(spec.synthetic_bars, spec.synthetic_assets, spec.synthetic_seed)
        return bars, timestamps, symbols, np.ones(bars.close.shape, bool), "GBM random walk (placebo)"
    from trading_jax.data.loading import load_ohlcv

    data = load_ohlcv(spec.source, symbols=spec.symbols, repair=spec.repair)
    bars, observed = fill_missing_bars(data.bars, data.valid)
    return bars, data.timestamps, data.symbols, observed, spec.source


def make_labels(task: str, bars, spec: DataSpec):
    """`(targets pytree [time, asset], valid [time, asset])` built from bars t+1 .. t+`label_reach(task, horizon)`."""
    from trading_jax.data import labels

    close = jnp.asarray(bars.close)
    h = spec.horizon
    ret, ret_ok = labels.future_return(close, h, log=True)
    direction, dir_ok = labels.direction_label(close, h, spec.dead_band, log=True)
    if task == "regression":
        return np.asarray(ret), np.asarray(ret_ok)
    if task == "classification":
        return np.asarray(direction), np.asarray(dir_ok)
    vol, vol_ok = labels.future_volatility(close, max(h, 2))
    volume, volume_ok = labels.future_volume(jnp.asarray(bars.volume), h, offset=1.0)
    targets = {"price": np.asarray(ret), "direction": np.asarray(direction),
               "volatility": np.asarray(vol), "volume": np.asarray(volume)}
    return targets, np.asarray(ret_ok & dir_ok & vol_ok & volume_ok)


def label_reach(task: str, horizon: int) -> int:
    """How many bars past t the labels of `task` read: the label of t reads bars t .. t + reach.

    The return and direction labels read bar t + horizon (and the volume label t+1 .. t+horizon);
    the multitask volatility label reads t+1 .. t + max(horizon, 2) (`make_labels`).
    """
    return max(horizon, 2) if task == "multitask" else horizon


def labels_observed(observed, reach: int) -> np.ndarray:
    """bool `[time, asset]`: every bar t .. t + reach of the asset was observed (not filled).

    A label that reads a filled bar (`fill_missing_bars`: flat at the previous close, no volume) is
    not a real outcome; False also where t + reach is past the end.
    """
    observed = np.asarray(observed, bool)
    n = observed.shape[0]
    missing = np.concatenate([np.zeros((1,) + observed.shape[1:], np.int64), np.cumsum(~observed, axis=0)])
    t = np.arange(n)
    in_range = (t + reach < n).reshape((n,) + (1,) * (observed.ndim - 1))
    return (missing[np.minimum(t + reach + 1, n)] - missing[t] == 0) & in_range


def build_datasets(spec: DataSpec, task: str, *, split=None, panel=None):
    """Windows and labels of the train, val and test splits, pooled over assets.

    Returns:
        `(splits, info)`: `splits[name] = Samples(x [n, window, F], y, t [n], asset [n])` for train/val/test, and
        `info` with the feature names, split ranges, embargo, target scale (regression targets are
        divided by it), the normaliser's per-feature "mean" and "std" (fitted on the training rows
        only; lists of floats) and the sample counts.

    Args:
        spec: the data and sample spec.
        task: "regression", "classification" or "multitask" (which labels).
        split: a `trading_jax.data.splits.Split` to use instead of `spec`'s fractions (walk-forward folds).
        panel: the `load_panel(spec)` result, when the caller already loaded it (one load for many folds).
    """
    from trading_jax.data.splits import chronological_split
    from trading_jax.data.windows import make_supervised_dataset
    from trading_jax.features.pipeline import FeatureConfig, FeaturePipeline

    bars, timestamps, symbols, observed, source = load_panel(spec) if panel is None else panel
    config = FeatureConfig(hurst_window=None, fourier=None) if spec.fast_features else FeatureConfig()
    pipeline = FeaturePipeline(config)
    raw = pipeline.compute(bars, timestamps)
    embargo = spec.horizon if spec.embargo is None else spec.embargo
    if split is None:
        split = chronological_split(raw.shape[0], spec.train, spec.val, spec.test, embargo=embargo)
    valid = pipeline.feature_valid(raw, observed)
    state = pipeline.fit(jnp.where(jnp.asarray(valid)[..., None], raw, jnp.nan), split.train)
    features = np.asarray(pipeline.transform(state, raw), np.float32)
    targets, target_ok = make_labels(task, bars, spec)
    # a label that reads a filled (unobserved) bar, anywhere in t .. t + reach, is not a real outcome
    reach = label_reach(task, spec.horizon)
    target_ok = target_ok & labels_observed(observed, reach)

    splits = {}
    for name in ("train", "val", "test"):
        parts = []
        for a in range(features.shape[1]):
            y = jax.tree.map(lambda v: v[:, a], targets)
            parts.append(make_supervised_dataset(
                features[:, a], y, target_ok[:, a], spec.window, getattr(split, name), stride=spec.stride if name == "train" else 1,
                lookback_before_split=name != "train", horizon=reach, input_valid=valid[:, a]))
        x = np.concatenate([np.asarray(p[0]) for p in parts])
        y = jax.tree.map(lambda *vs: np.concatenate([np.asarray(v) for v in vs]), *[p[1] for p in parts])
        t = np.concatenate([p[2] for p in parts])
        asset = np.concatenate([np.full(len(p[2]), a, np.int32) for a, p in enumerate(parts)])
        if len(x) == 0:
            raise ValueError(f"the {name} split of {source} has no sample: use more bars, a shorter window or horizon")
        splits[name] = Samples(x, y, t, asset)

    scale = 1.0
    if task == "regression":  # returns are ~1e-3: scale by the training std (fitted on train only)
        scale = float(np.std(splits["train"][1])) or 1.0
        splits = {k: v._replace(y=v.y / scale) for k, v in splits.items()}
    elif task == "multitask":  # the return and volatility targets in units of the training return std, so their
        # MSEs weigh like the cross-entropy terms (unscaled, an MSE of ~1e-4 next to ~1 left them untrained)
        scale = float(np.std(splits["train"].y["price"])) or 1.0
        splits = {k: v._replace(y={**v.y, "price": v.y["price"] / scale, "volatility": v.y["volatility"] / scale})
                  for k, v in splits.items()}
    info = {"source": source, "symbols": list(symbols), "features": list(pipeline.names(len(symbols))),
            "split": {k: [getattr(split, k).start, getattr(split, k).stop] for k in ("train", "val", "test")},
            "embargo": embargo, "target_scale": scale,
            "normalizer": {"mean": np.asarray(state.mean).tolist(), "std": np.asarray(state.std).tolist()},
            "samples": {k: len(v[0]) for k, v in splits.items()},
            "pipeline": {"feature_config": dataclasses.asdict(config), "warmup": pipeline.warmup_for(len(symbols)),
                         "temporal": timestamps is not None and config.temporal,
                         "normalizer_state": {f: np.asarray(getattr(state, f)).tolist() for f in state._fields},
                         "range": _time_range(timestamps, split)}}
    return splits, info


def _time_range(timestamps, split) -> dict | None:
    """The first and last timestamp of each split (ISO strings), or None without timestamps."""
    if timestamps is None:
        return None
    stamps = np.asarray(timestamps)
    if np.issubdtype(stamps.dtype, np.datetime64):
        stamps = np.datetime_as_string(stamps, unit="s")
    return {k: [str(stamps[getattr(split, k).start]), str(stamps[getattr(split, k).stop - 1])]
            for k in ("train", "val", "test")}


def feature_state(spec: DataSpec, task: str, info: dict) -> dict:
    """What serving needs to turn raw bars into a model input (the run folder's `features.json`): the feature
    config, the normaliser fitted on the training split (`NormalizerState` fields), the window, the feature
    names in tensor order, the warm-up and the bars one input needs (`warmup + window`), the regression
    target scale (a forecast in return units is `prediction * target_scale`), the symbols and time ranges."""
    pipeline = info["pipeline"]
    return {"window": spec.window, "horizon": spec.horizon, "task": task, "names": info["features"],
            "n_features": len(info["features"]), "symbols": info["symbols"], "source": info["source"],
            "feature_config": pipeline["feature_config"], "temporal": pipeline["temporal"],
            "warmup": pipeline["warmup"], "bars_needed": pipeline["warmup"] + spec.window,
            "normalizer": pipeline["normalizer_state"], "clip": pipeline["feature_config"]["clip"], "eps": 1e-8,
            "target_scale": info["target_scale"], "split": info["split"], "range": pipeline["range"]}


def resolve_indicator_columns(config, feature_names):
    """`config` with its model's technical-indicator branch pointed at named feature columns.

    For a model with an indicator branch (`n_indicators > 0` and an `indicator_columns` field: the CNN-LSTM),
    `model_kwargs["indicator_columns"]` may list feature names (or column indices); when it is absent, the
    branch reads `SEED_INDICATORS` (the first `n_indicators` of them when `n_indicators` is given in
    `model_kwargs`, all five otherwise). The result holds column indices and a matching `n_indicators`, so the
    branch reads the indicators at the decision bar (`x[:, -1, columns]`), never zeros. Other configs come
    back unchanged.

    Raises:
        ValueError: a name that is not a feature (naming the features), or more indicators than the seed has.
    """
    model = config.build_model()
    if not hasattr(model, "indicator_columns") or not getattr(model, "n_indicators", 0):
        return config
    kwargs = config.model_config()
    names = list(feature_names)
    given = kwargs.get("indicator_columns")
    if given is None:
        n = kwargs.get("n_indicators", len(SEED_INDICATORS))
        if n > len(SEED_INDICATORS):
            raise ValueError(f"n_indicators = {n}: the seed names {len(SEED_INDICATORS)} indicators "
                             f"({', '.join(SEED_INDICATORS)}); list the feature names in indicator_columns")
        given = SEED_INDICATORS[:n]
    columns = []
    for item in given:
        if isinstance(item, str):
            if item not in names:
                raise ValueError(f"indicator_columns: {item!r} is not a feature of this data; features: "
                                 f"{', '.join(names)}")
            columns.append(names.index(item))
        elif not 0 <= int(item) < len(names):
            raise ValueError(f"indicator_columns: column {item} is out of range (the data has {len(names)} features)")
        else:
            columns.append(int(item))
    return config.replace(model_kwargs={**kwargs, "indicator_columns": tuple(columns), "n_indicators": len(columns)})

