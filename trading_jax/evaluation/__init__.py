"""Evaluation: forecast-quality metrics (backtests, walk-forward and reports to come).

Names are imported lazily, so `import trading_jax.evaluation` stays cheap.
"""

from trading_jax._lazy import lazy_exports

_EXPORTS = {
    "mae": "metrics", "rmse": "metrics", "direction_accuracy": "metrics",
    "confusion_matrix": "metrics", "precision_recall_f1": "metrics",
    "information_coefficient": "metrics", "rank_information_coefficient": "metrics",
    "average_ranks": "metrics",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
