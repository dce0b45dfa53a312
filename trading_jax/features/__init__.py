"""Pure-JAX features: technical indicators (TA-Lib definitions), spectral, microstructure and
cross-asset features, sentiment features from scored texts, the running normaliser and the `FeaturePipeline`.

Every indicator takes time-first arrays `[time, ...]` and is batched over the trailing axes.
Names are imported lazily.
"""

from trading_jax._lazy import lazy_exports

_INDICATORS = (
    "returns", "log_returns", "momentum", "roc", "sma", "ema", "rsi", "macd", "bollinger", "stochastic",
    "true_range", "atr", "obv", "typical_price", "vwap", "vwap_deviation", "volume_roc",
    "rolling_volatility", "realized_volatility", "garman_klass_volatility", "warmup",
)
_EXPORTS = {name: "indicators" for name in _INDICATORS}
_EXPORTS.update({name: "rolling" for name in ("shift", "rolling_sum", "rolling_mean", "rolling_std", "rolling_max", "rolling_min")})
_EXPORTS.update({name: "spectral" for name in ("rolling_hurst", "rolling_fourier_features", "haar_wavelet_features")})
_EXPORTS.update({
    name: "microstructure"
    for name in ("roll_spread", "corwin_schultz_spread", "abdi_ranaldo_spread", "amihud_illiquidity")
})
_EXPORTS.update({
    name: "cross_asset" for name in ("rolling_correlation", "rolling_correlation_matrix", "mean_pairwise_correlation")
})
_EXPORTS.update({name: "normalize" for name in ("NormalizerState", "normalizer_init", "normalizer_update", "normalizer_apply")})
_EXPORTS.update({
    name: "pipeline"
    for name in ("FeatureConfig", "FeaturePipeline", "fill_missing_bars", "temporal_features", "run_feature_job")
})

_EXPORTS.update({
    name: "sentiment"
    for name in ("SENTIMENT_FEATURES", "SentimentEvents", "aggregate_sentiment", "score_from_probs", "events_from_frame")
})

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
