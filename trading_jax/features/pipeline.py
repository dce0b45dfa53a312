"""FeaturePipeline: the seed-000 style feature tensor `[time, asset, feature]` from OHLCV bars.

Every feature is scale-free (a return, a ratio to the close, an oscillator, a volatility per bar),
so one set of normalisation statistics can be shared by all assets. Three steps:

    pipeline = FeaturePipeline(FeatureConfig())
    raw = pipeline.compute(bars, timestamps)          # [time, asset, F], NaN during warm-up only
    state = pipeline.fit(raw, train=split.train)      # normaliser fitted on the training rows only
    z = pipeline.transform(state, raw)                # standardised and clipped; warm-up stays NaN

External per-bar features (sentiment, `trading_jax.features.sentiment.aggregate_sentiment`, or anything
else `[time, asset, K]`) are appended with `compute(bars, timestamps, external=..., external_names=...)`
(and `names(n_assets, external_names=...)`), so they are normalised by the same train-only `fit` and go
wherever the tensor goes. They must already be causal (row t uses data <= t), as `aggregate_sentiment`'s are.

Row `t` of `raw` uses bars `<= t` only (the tests perturb the future and check). Rows before
`pipeline.warmup` are NaN in at least one feature; from `warmup` on every feature is finite for
finite, positive input. A market needs at least `pipeline.min_bars(n_assets)` = warm-up + 1 bars
(one row with every feature; `compute` refuses fewer with "... needs at least N bars (warm-up W) ...");
to also fit the normaliser on a leading training split, `min_bars(n_assets, train_fraction)` bars
(the training part must reach past the warm-up; `run_feature_job` checks this). A panel with missing
bars (late listings, empty rows) goes through `fill_missing_bars` (`trading_jax.data.panels`,
re-exported here) first, which makes the filling explicit and keeps the mask of observed bars;
`feature_valid` then says which rows of the tensor rest on real bars only.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.data.panels import builtin_market, fill_missing_bars  # fill_missing_bars: re-exported
from trading_jax.data.splits import IndexRange
from trading_jax.data.types import Bars
from trading_jax.features import cross_asset, indicators, microstructure, spectral
from trading_jax.features.normalize import NormalizerState, normalizer_apply, normalizer_init, normalizer_update
from trading_jax.features.rolling import rolling_sum, shift
from trading_jax.logging import get_logger

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Which features to compute and their periods (in bars). `None` or `()` switches a group off.

    The defaults follow seeds 000 ("Input Features"), 001 ("Feature Engineering") and 003
    ("Feature Engineering Pipeline").
    """

    return_horizons: tuple[int, ...] = (1, 5, 15, 60)
    roc_periods: tuple[int, ...] = (10, 20)
    sma_periods: tuple[int, ...] = (5, 10, 20, 50)
    ema_periods: tuple[int, ...] = (12, 26)
    rsi_period: int | None = 14
    macd: tuple[int, int, int] | None = (12, 26, 9)
    bollinger: tuple[int, float] | None = (20, 2.0)
    stochastic: tuple[int, int, int] | None = (5, 3, 3)
    atr_period: int | None = 14
    obv_period: int | None = 20
    vwap_period: int | None = 20
    volume_roc_period: int | None = 10
    volatility_periods: tuple[int, ...] = (20, 60)
    hurst_window: int | None = 128
    fourier: tuple[int, int] | None = (64, 4)
    wavelet_levels: int | None = 3
    spread_window: int | None = 20
    correlation_window: int | None = 60
    temporal: bool = True
    clip: float | None = 5.0


class FeatureGroup(NamedTuple):
    """Columns computed together (one call of a multi-output indicator), with one warm-up.

    Attributes:
        names: the columns' names.
        warmup: first row at which every column of the group is defined.
        compute: `Bars` of `[time, asset]` -> `[time, asset, len(names)]`.
    """

    names: tuple[str, ...]
    warmup: int
    compute: Callable[[Bars], jnp.ndarray]


TEMPORAL_NAMES = ("time_of_day_sin", "time_of_day_cos", "day_of_week_sin", "day_of_week_cos")


def _group(names, warmup, compute) -> FeatureGroup:
    """A group from a function returning one array or a sequence of `[time, asset]` arrays."""
    names = (names,) if isinstance(names, str) else tuple(names)

    def stacked(b: Bars):
        out = compute(b)
        return out[..., None] if len(names) == 1 else jnp.stack(out, axis=-1)

    return FeatureGroup(names, int(warmup), stacked)


def _macd_over_close(b: Bars, fast: int, slow: int, signal: int):
    return [part / b.close for part in indicators.macd(b.close, fast, slow, signal)]


def _bollinger(b: Bars, period: int, nbdev: float):
    """%B and bandwidth. %B is undefined for a flat window (width 0): the close then sits on the middle band, 0.5."""
    upper, middle, lower = indicators.bollinger(b.close, period, nbdev)
    width = upper - lower
    percent_b = jnp.where(width > 0, (b.close - lower) / jnp.where(width > 0, width, 1.0), 0.5)
    return percent_b, width / middle


def _stochastic(b: Bars, fk: int, sk: int, sd: int):
    return [x / 100.0 - 0.5 for x in indicators.stochastic(b.high, b.low, b.close, fk, sk, sd)]


def _obv_flow(b: Bars, n: int):
    """`(OBV_t - OBV_{t-n}) / sum(volume over the n bars)`: signed volume flow in [-1, 1], 0 if no volume."""
    total = indicators.obv(b.close, b.volume)
    traded = rolling_sum(b.volume, n)
    flow = total - shift(total, n)
    return jnp.where(traded > 0, flow / jnp.where(traded > 0, traded, 1.0), jnp.where(jnp.isnan(traded), jnp.nan, 0.0))


def _volatilities(b: Bars, p: int):
    return (indicators.rolling_volatility(b.close, p), indicators.realized_volatility(b.close, p),
            indicators.garman_klass_volatility(b.open, b.high, b.low, b.close, p))


def _fourier(b: Bars, window: int, n_freqs: int):
    amplitudes, dominant = spectral.rolling_fourier_features(b.close, window, n_freqs)
    return [amplitudes[..., i] for i in range(n_freqs)] + [dominant]


def _haar(b: Bars, levels: int):
    details, approximation = spectral.haar_wavelet_features(b.close, levels)
    # the approximation is a log price level; its gap to the current log price is scale-free
    return [details[..., j] for j in range(levels)] + [jnp.log(b.close) - approximation]


def _spreads(b: Bars, n: int):
    return (microstructure.roll_spread(b.close, n), microstructure.corwin_schultz_spread(b.high, b.low, n),
            microstructure.abdi_ranaldo_spread(b.high, b.low, b.close, n),
            jnp.log1p(microstructure.amihud_illiquidity(b.close, b.volume, n)))


def per_asset_features(config: FeatureConfig) -> tuple[FeatureGroup, ...]:
    """The configured per-asset feature groups, in output order (cross-asset and temporal ones follow)."""
    w = indicators.warmup
    c = config
    groups = [_group(f"log_return_{k}", w("log_returns", horizon=k), lambda b, k=k: indicators.log_returns(b.close, k))
              for k in c.return_horizons]
    groups += [_group(f"roc_{p}", w("roc", period=p), lambda b, p=p: indicators.roc(b.close, p) / 100.0)
               for p in c.roc_periods]
    groups += [_group(f"close_over_sma_{p}", w("sma", period=p), lambda b, p=p: b.close / indicators.sma(b.close, p) - 1.0)
               for p in c.sma_periods]
    groups += [_group(f"close_over_ema_{p}", w("ema", period=p), lambda b, p=p: b.close / indicators.ema(b.close, p) - 1.0)
               for p in c.ema_periods]
    if c.rsi_period:
        groups.append(_group(f"rsi_{c.rsi_period}", w("rsi", period=c.rsi_period),
                             lambda b: indicators.rsi(b.close, c.rsi_period) / 100.0 - 0.5))
    if c.macd:
        fast, slow, signal = c.macd
        groups.append(_group(("macd_over_close", "macd_signal_over_close", "macd_hist_over_close"),
                             w("macd", fast=fast, slow=slow, signal=signal), lambda b: _macd_over_close(b, *c.macd)))
    if c.bollinger:
        groups.append(_group(("bollinger_percent_b", "bollinger_bandwidth"), w("bollinger", period=c.bollinger[0]),
                             lambda b: _bollinger(b, *c.bollinger)))
    if c.stochastic:
        fk, sk, sd = c.stochastic
        groups.append(_group(("stochastic_k", "stochastic_d"), w("stochastic", fastk_period=fk, slowk_period=sk, slowd_period=sd),
                             lambda b: _stochastic(b, *c.stochastic)))
    if c.atr_period:
        groups.append(_group(f"atr_{c.atr_period}_over_close", w("atr", period=c.atr_period),
                             lambda b: indicators.atr(b.high, b.low, b.close, c.atr_period) / b.close))
    if c.obv_period:
        groups.append(_group(f"obv_flow_{c.obv_period}", c.obv_period, lambda b: _obv_flow(b, c.obv_period)))
    if c.vwap_period:
        groups.append(_group(f"vwap_deviation_{c.vwap_period}", w("vwap_deviation", period=c.vwap_period),
                             lambda b: indicators.vwap_deviation(b.high, b.low, b.close, b.volume, c.vwap_period)))
    if c.volume_roc_period:
        # arcsinh compresses the heavy right tail of volume changes (+1000% after a quiet bar)
        groups.append(_group(f"volume_roc_{c.volume_roc_period}", w("volume_roc", period=c.volume_roc_period),
                             lambda b: jnp.arcsinh(indicators.volume_roc(b.volume, c.volume_roc_period) / 100.0)))
    for p in c.volatility_periods:
        warm = max(w("rolling_volatility", period=p), w("realized_volatility", period=p), w("garman_klass_volatility", period=p))
        groups.append(_group((f"volatility_{p}", f"realized_volatility_{p}", f"garman_klass_{p}"), warm,
                             lambda b, p=p: _volatilities(b, p)))
    if c.hurst_window:
        groups.append(_group(f"hurst_{c.hurst_window}", spectral.hurst_warmup(c.hurst_window),
                             lambda b: spectral.rolling_hurst(b.close, c.hurst_window)))
    if c.fourier:
        window, n_freqs = c.fourier
        names = [f"fourier_{window}_magnitude_{i + 1}" for i in range(n_freqs)] + [f"fourier_{window}_dominant_frequency"]
        groups.append(_group(names, spectral.fourier_warmup(window), lambda b: _fourier(b, *c.fourier)))
    if c.wavelet_levels:
        names = [f"haar_detail_{j + 1}" for j in range(c.wavelet_levels)] + ["haar_approximation_gap"]
        groups.append(_group(names, spectral.wavelet_warmup(c.wavelet_levels), lambda b: _haar(b, c.wavelet_levels)))
    if c.spread_window:
        n = c.spread_window
        names = (f"roll_spread_{n}", f"corwin_schultz_spread_{n}", f"abdi_ranaldo_spread_{n}", f"log_amihud_{n}")
        groups.append(_group(names, microstructure.spread_warmup(n), lambda b: _spreads(b, n)))
    return tuple(groups)


@dataclasses.dataclass(frozen=True)
class FeaturePipeline:
    """Computes, fits and applies the feature tensor of a `[time, asset]` OHLCV panel."""

    config: FeatureConfig = FeatureConfig()

    @functools.cached_property
    def _per_asset(self) -> tuple[FeatureGroup, ...]:
        return per_asset_features(self.config)

    def names(self, n_assets: int, with_timestamps: bool = True, external_names: Sequence[str] = ()) -> tuple[str, ...]:
        """Feature names in tensor order, for a panel of `n_assets` assets; `external_names` (those passed to
        `compute(..., external_names=)`) come last.

        Raises:
            ValueError: an external name repeats one of the pipeline's names or another external name.
        """
        names = [name for group in self._per_asset for name in group.names]
        if self._uses_correlation(n_assets):
            names.append(f"mean_correlation_{self.config.correlation_window}")
        if self.config.temporal and with_timestamps:
            names.extend(TEMPORAL_NAMES)
        external_names = tuple(str(name) for name in external_names)
        taken = set(names)
        for name in external_names:
            if name in taken:
                raise ValueError(f"FeaturePipeline: the external feature name {name!r} is already a feature name of the "
                                 "tensor; give each external feature a distinct name (e.g. a prefix)")
            taken.add(name)
        return tuple(names) + external_names

    @property
    def warmup(self) -> int:
        """First row at which every feature of a multi-asset panel is defined (finite, positive input)."""
        return self.warmup_for(n_assets=2)

    def warmup_for(self, n_assets: int) -> int:
        """First row at which every feature is defined for a panel of `n_assets` assets (the
        cross-asset correlation, and its warm-up, only exist for two or more)."""
        return self._longest_warmup(n_assets)[0]

    def _longest_warmup(self, n_assets: int) -> tuple[int, str]:
        """`(warm-up, first column of the group that has it)` of the longest warm-up (0, "" if none)."""
        warm = [(group.warmup, group.names[0]) for group in self._per_asset]
        if self._uses_correlation(n_assets):
            window = self.config.correlation_window
            warm.append((cross_asset.correlation_warmup(window) + 1, f"mean_correlation_{window}"))
        return max(warm, key=lambda w: w[0], default=(0, ""))

    def min_bars(self, n_assets: int, train_fraction: float | None = None) -> int:
        """The fewest bars a market of `n_assets` assets must have; `compute` refuses shorter ones.

        Without `train_fraction`: `warmup_for(n_assets) + 1`, so that at least the last row has every
        feature defined (rows before the warm-up are NaN). With `train_fraction` (the training part
        of `chronological_split(n, train=train_fraction, val=0, test=1 - train_fraction)`, as
        `run_feature_job` fits the normaliser): the fewest bars whose training part also reaches
        past the warm-up, so `fit` has at least one defined row to fit on (and the split's test part
        is not empty). E.g. the default config on one asset: warm-up 128, so 129 bars to compute,
        184 to compute and fit with `train_fraction=0.7`.
        """
        from trading_jax.data.splits import chronological_split

        need = self.warmup_for(n_assets) + 1
        if train_fraction is None:
            return need
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1]; got {train_fraction!r}")
        n = max(need, int((need - 0.5) / train_fraction) - 2)
        while True:  # a few steps at most: the estimate above is within rounding of the answer
            try:
                if chronological_split(n, train=train_fraction, val=0.0, test=1.0 - train_fraction).train.stop >= need:
                    return n
            except ValueError:  # a part rounds to 0 bars
                pass
            n += 1

    def check_length(self, n_bars: int, n_assets: int, train_fraction: float | None = None, what: str = "bars") -> None:
        """Raise a one-line `ValueError` if `n_bars` is fewer than `min_bars(n_assets, train_fraction)`.

        The message says "... needs at least N bars (warm-up W) ...", names `what` (the array or
        file) and its length, the feature with the longest warm-up and what to do.
        """
        need = self.min_bars(n_assets, train_fraction)
        if n_bars >= need:
            return
        warmup, group = self._longest_warmup(n_assets)
        purpose = (f"so that its training split (the first {train_fraction:.0%} of the bars) holds rows past the "
                   "warm-up to fit the normaliser on" if train_fraction is not None else
                   f"so that at least one row has every feature: rows 0 .. {warmup - 1} are the warm-up")
        raise ValueError(
            f"{what} has {n_bars} bar{'s' if n_bars != 1 else ''} but the feature pipeline needs at least {need} bars "
            f"(warm-up {warmup}) {purpose}; the longest warm-up is the '{group}' feature's: use at least {need} bars, or "
            "switch off or shorten the long-window features in FeatureConfig (e.g. hurst_window=None, fourier=None)."
        )

    def _uses_correlation(self, n_assets: int) -> bool:
        return bool(self.config.correlation_window) and n_assets > 1

    def compute(self, bars: Bars, timestamps: np.ndarray | None = None, external=None,
                external_names: Sequence[str] | None = None) -> jnp.ndarray:
        """The raw (unnormalised) feature tensor.

        Args:
            bars: `Bars` of `[time, asset]` (or `[time]`) finite, positive arrays; fill missing
                bars first with `fill_missing_bars`.
            timestamps: optional `datetime64` `[time]`; adds the temporal features.
            external: optional external per-bar features `[time, asset, K]` on the same time axis (e.g.
                `aggregate_sentiment(timestamps, ...)`), appended after the computed ones. They must already
                be causal: row t uses data `<= t` only (nothing here can check that). No inf anywhere and no
                NaN from row `warmup_for(n_assets)` on (NaN in the warm-up rows is allowed: those rows are
                NaN anyway); a source without a value yet should give a neutral number (sentiment gives 0).
            external_names: optional names of the K external columns (used in error messages; `names(...,
                external_names=)` gives the full list).

        Returns:
            `[time, asset, F + K]` float array, F + K = `len(self.names(n_assets, timestamps is not None,
            external_names))`; without `external` exactly the `[time, asset, F]` tensor of the pipeline alone.

        Raises:
            ValueError: if the market has fewer than `min_bars(n_assets)` = warm-up + 1 bars (no row
                would have every feature), naming the length, the warm-up and its feature; if `external` is
                not `[time, asset, K]` with the market's time and asset sizes (naming both shapes), if
                `external_names` does not name its K columns, or if an external value is inf, or NaN after the
                warm-up (naming the column, asset and row).
        """
        bars = Bars(*(jnp.atleast_1d(jnp.asarray(f)) for f in bars))
        if bars.close.ndim == 1:
            bars = Bars(*(f[:, None] for f in bars))
        n_time, n_assets = (int(n) for n in bars.close.shape)
        self.check_length(n_time, n_assets, what="FeaturePipeline.compute: the market")
        if external is not None:
            external = self._check_external(external, external_names, n_time, n_assets)
        temporal = None
        if self.config.temporal and timestamps is not None:
            temporal = jnp.asarray(temporal_features(timestamps), bars.close.dtype)
        raw = _compute(self, bars, temporal)
        if external is None:
            return raw
        return jnp.concatenate([raw, jnp.asarray(external, raw.dtype)], axis=-1)

    def _check_external(self, external, external_names, n_time: int, n_assets: int) -> np.ndarray:
        """The external features as a host array after the checks of `compute` (one-line errors)."""
        fn = "FeaturePipeline.compute"
        values = np.asarray(external)
        if values.ndim != 3 or values.shape[:2] != (n_time, n_assets):
            raise ValueError(f"{fn}: external has shape {values.shape} but the market is [time, asset] = [{n_time}, "
                             f"{n_assets}]: external features must be [time, asset, K] on the bars' time axis (e.g. "
                             "aggregate_sentiment(timestamps, ...))")
        if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
            raise ValueError(f"{fn}: external must hold real numbers; got dtype {values.dtype}")
        k = values.shape[2]
        names = tuple(f"external[{j}]" for j in range(k)) if external_names is None else tuple(external_names)
        if len(names) != k:
            raise ValueError(f"{fn}: external has {k} columns but external_names has {len(names)} names "
                             f"({list(names)}); give one name per column")
        values = values.astype(np.float64)
        bad = np.isinf(values)
        bad[self.warmup_for(n_assets):] |= np.isnan(values[self.warmup_for(n_assets):])
        if bad.any():
            row, asset, col = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{fn}: external column {names[col]!r} is {values[row, asset, col]} at row {row}, asset {asset} "
                f"({int(bad.sum())} such values; NaN is allowed only in the warm-up rows 0 .. "
                f"{self.warmup_for(n_assets) - 1}, inf nowhere); give a neutral value where the source has none "
                "yet (aggregate_sentiment gives 0) or repair the source")
        return values

    def compute_traced(self, bars: Bars, temporal: jnp.ndarray | None = None, external=None) -> jnp.ndarray:
        """`compute` for code that is itself traced (an exported inference pipeline): `bars` of `[time, asset]`
        arrays, `temporal` the `[time, 4]` encodings (`calendar_encoding`) or None, `external` the causal
        `[time, asset, K]` external features or None (appended last); no length or value checks (the caller
        guarantees warm-up + window bars and finite external values)."""
        raw = _compute(self, bars, temporal)
        if external is None:
            return raw
        return jnp.concatenate([raw, jnp.asarray(external).astype(raw.dtype)], axis=-1)

    def fit(self, raw: jnp.ndarray, train: IndexRange) -> NormalizerState:
        """Normaliser statistics from the training rows `train` only (warm-up NaN ignored)."""
        state = normalizer_init(raw.shape[-1], raw.dtype)
        return normalizer_update(state, raw[train.start : train.stop])

    def transform(self, state: NormalizerState, raw: jnp.ndarray) -> jnp.ndarray:
        """Standardise `raw` with fitted statistics and clip to `+-config.clip`."""
        return normalizer_apply(state, raw, clip=self.config.clip)

    def settled(self, observed: np.ndarray) -> np.ndarray:
        """Rows whose bar was observed and that lie `warmup` bars or more after the asset's first
        observed bar, bool `[time, asset]` (a listing price back-filled before the first bar
        then never reaches a feature)."""
        observed = np.asarray(observed, bool)
        if observed.ndim == 1:
            observed = observed[:, None]
        first = np.where(observed.any(axis=0), observed.argmax(axis=0), observed.shape[0])
        t = np.arange(observed.shape[0])[:, None]
        return observed & (t >= first[None, :] + self.warmup_for(observed.shape[1]))

    def feature_valid(self, raw: jnp.ndarray, observed: np.ndarray) -> np.ndarray:
        """Rows of the tensor a model may use, bool `[time, asset]`: `settled` and every feature
        finite. Finiteness only bites after the warm-up where a quantity is undefined, e.g. Amihud
        illiquidity over a window without a traded bar; such rows are dropped, never filled."""
        return self.settled(observed) & np.isfinite(np.asarray(raw)).all(axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def _compute(pipeline: FeaturePipeline, bars: Bars, temporal) -> jnp.ndarray:
    blocks = [group.compute(bars) for group in pipeline._per_asset]
    n_time, n_assets = bars.close.shape
    if pipeline._uses_correlation(n_assets):
        returns = indicators.log_returns(bars.close, 1)
        blocks.append(cross_asset.mean_pairwise_correlation(returns, pipeline.config.correlation_window)[..., None])
    if temporal is not None:
        blocks.append(jnp.broadcast_to(temporal[:, None, :], (n_time, n_assets, temporal.shape[1])))
    return jnp.concatenate([block.astype(bars.close.dtype) for block in blocks], axis=-1)


def calendar_parts(timestamps: np.ndarray) -> np.ndarray:
    """`[time, 2]` float64: the day number since 1970-01-01 and the second of the day of each timestamp (what
    `calendar_encoding` takes; an exported inference pipeline takes these as its "calendar" input)."""
    ts = np.asarray(timestamps, dtype="datetime64[ns]")
    day = ts.astype("datetime64[D]")
    seconds = (ts - day).astype("timedelta64[s]").astype(np.float64)
    return np.stack([day.astype(np.int64).astype(np.float64), seconds], axis=-1)


def calendar_encoding(parts, xp=np):
    """Cyclical time-of-day and day-of-week encodings `[..., 4]` of `calendar_parts` `[..., 2]` (NumPy or,
    with `xp=jax.numpy`, traced inside a jitted function)."""
    day, seconds = parts[..., 0], parts[..., 1]
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday (3)
    tod, dow = 2 * np.pi * seconds / 86400.0, 2 * np.pi * weekday / 7.0
    return xp.stack([xp.sin(tod), xp.cos(tod), xp.sin(dow), xp.cos(dow)], axis=-1)


def temporal_features(timestamps: np.ndarray) -> np.ndarray:
    """Cyclical time-of-day and day-of-week encodings, `[time, 4]` float64 (seed 000 "Temporal").

    Known in advance at bar t, so they carry no look-ahead.
    """
    return calendar_encoding(calendar_parts(timestamps))


def run_feature_job(
    paths: Sequence[str] = (),
    out: str = "runs/features.npz",
    synthetic_bars: int = 5000,
    synthetic_assets: int = 4,
    seed: int = 0,
    train_fraction: float = 0.7,
    repair: tuple[str, ...] = (),
    config: FeatureConfig = FeatureConfig(),
) -> str:
    """Load (or generate) a panel, compute features, fit the normaliser on the train split, save.

    Writes an `.npz` with `features` `[time, asset, F]` (normalised, float32), `valid`
    `[time, asset]`, `names`, `symbols`, `timestamps`, the normaliser's `mean`/`std`, and the
    train range. Returns a short human summary.

    Raises:
        ValueError: if the market has fewer than `FeaturePipeline.min_bars(n_assets, train_fraction)`
            bars ("... needs at least N bars (warm-up W) ..."), naming the file; or a loading error.
    """
    from trading_jax.data.loading import load_ohlcv
    from trading_jax.data.splits import chronological_split

    if paths:
        data = load_ohlcv(list(paths) if len(paths) > 1 else paths[0], repair=repair)
        bars, observed = fill_missing_bars(data.bars, data.valid)
        timestamps, symbols, source = data.timestamps, data.symbols, ", ".join(paths)
    else:
        bars, timestamps, symbols = builtin_market(synthetic_bars, synthetic_assets, seed)
        observed, source = np.ones(bars.close.shape, bool), f"synthetic regime-switching market (seed {seed})"
    pipeline = FeaturePipeline(config)
    pipeline.check_length(int(bars.close.shape[0]), len(symbols), train_fraction, what=source)
    raw = pipeline.compute(bars, timestamps)
    split = chronological_split(raw.shape[0], train=train_fraction, val=0.0, test=1.0 - train_fraction)
    settled = pipeline.settled(observed)
    valid = pipeline.feature_valid(raw, observed)
    if undefined := int((settled & ~valid).sum()):
        log.warning("%d rows after the warm-up have an undefined feature (e.g. no traded bar in a window); "
                    "they are marked not valid", undefined)
    state = pipeline.fit(jnp.where(jnp.asarray(valid)[..., None], raw, jnp.nan), split.train)
    features = np.asarray(pipeline.transform(state, raw), np.float32)
    names = pipeline.names(len(symbols), with_timestamps=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out, features=features, valid=valid, names=np.array(names), symbols=np.array(symbols),
        timestamps=timestamps.astype("datetime64[ns]"), mean=np.asarray(state.mean), std=np.asarray(state.std),
        train=np.array([split.train.start, split.train.stop]),
    )
    return (
        f"{source}: {features.shape[0]:,} bars x {features.shape[1]} assets x {features.shape[2]} features "
        f"(warm-up {pipeline.warmup_for(len(symbols))} bars, {valid.mean():.1%} rows valid); normaliser fitted on bars "
        f"[{split.train.start}, {split.train.stop}) only; saved to {out}"
    )
