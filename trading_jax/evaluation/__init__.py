"""Evaluation: forecast-quality metrics, empyrical-style performance and risk metrics, the vectorised backtester, reports and plots, and model interpretability.

Names are imported lazily, so `import trading_jax.evaluation` stays cheap.
"""

from trading_jax._lazy import lazy_exports

_EXPORTS = {
    "mae": "metrics", "rmse": "metrics", "direction_accuracy": "metrics",
    "confusion_matrix": "metrics", "precision_recall_f1": "metrics",
    "information_coefficient": "metrics", "rank_information_coefficient": "metrics",
    "average_ranks": "metrics",
    "annualization_factor": "performance",
    "cumulative_returns": "performance",
    "total_return": "performance",
    "annual_return": "performance",
    "annual_volatility": "performance",
    "sharpe_ratio": "performance",
    "downside_risk": "performance",
    "sortino_ratio": "performance",
    "max_drawdown": "performance",
    "calmar_ratio": "performance",
    "value_at_risk": "performance",
    "conditional_value_at_risk": "performance",
    "parametric_value_at_risk": "performance",
    "tail_ratio": "performance",
    "beta": "performance",
    "alpha": "performance",
    "win_rate": "performance",
    "profit_factor": "performance",
    "turnover": "performance",
    "parametric_expected_shortfall": "risk", "Exposure": "risk", "exposure": "risk",
    "apply_position_limits": "risk", "LimitBreaches": "risk", "check_limits": "risk",
    "volatility_target": "risk",
    "BacktestConfig": "backtest", "BacktestResult": "backtest",  # the function: evaluation.backtest.backtest
    "signals_to_weights": "backtest", "walk_forward": "backtest",
    "performance_summary": "report", "metrics_records": "report", "metrics_markdown": "report",
    "rolling_sharpe": "report", "drawdown_series": "report", "attention_map": "report",
    "plot_equity": "report", "plot_drawdown": "report", "plot_rolling_sharpe": "report",
    "plot_attention": "report", "plot_importance": "report", "write_report": "report",
    "integrated_gradients": "interpret", "feature_importance_ig": "interpret",
    "permutation_importance": "interpret",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
