"""Market data: loading and validation, splits, windows, labels, panels and synthetic markets.

Names are imported lazily, so `import trading_jax.data` does not pull in pandas or JAX until used.
"""

from trading_jax._lazy import lazy_exports

_EXPORTS = {
    # types
    "Bars": "types", "MarketData": "types", "OHLCV_FIELDS": "types",
    # loading and validation
    "load_ohlcv": "loading", "validate_ohlcv": "loading", "validate_files": "loading", "describe": "loading",
    "ValidationReport": "validation", "Problem": "validation", "DataValidationError": "validation",
    "validate_frame": "validation",
    # splits, windows, labels
    "IndexRange": "splits", "Split": "splits", "Fold": "splits", "chronological_split": "splits",
    "split_by_dates": "splits", "walk_forward_folds": "splits",
    "window_indices": "windows", "window_end_times": "windows", "sliding_windows": "windows",
    "supervised_end_times": "windows", "make_supervised_dataset": "windows",
    "future_return": "labels", "direction_label": "labels", "future_volatility": "labels",
    "future_volume": "labels", "DOWN": "labels", "FLAT": "labels", "UP": "labels",
    # panels: filling missing bars; the built-in offline market (host NumPy, with timestamps)
    "fill_missing_bars": "panels", "builtin_market": "panels", "sample_params_batch": "panels",
    # labelled text (sentiment): label schemes, leak-free splits, tokenisers
    "LABEL_SCHEMES": "text", "remap_labels": "text", "load_text_csv": "text", "split_groups": "text",
    "load_tokenizer": "text", "train_wordpiece_vocab": "text", "encode_texts": "text",
    # synthetic markets
    "generate": "synthetic", "generate_switch": "synthetic", "panel": "synthetic", "sample_params": "synthetic",
    "bars_from_log_returns": "synthetic", "SyntheticMarket": "synthetic", "MODELS": "synthetic",
    "GBMParams": "synthetic", "RegimeSwitchingParams": "synthetic", "HestonParams": "synthetic",
    "MertonParams": "synthetic", "OUParams": "synthetic", "BarParams": "synthetic",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
