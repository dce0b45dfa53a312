"""Backtest reports: a metrics table (markdown and JSON) and PNG plots of equity, drawdown, rolling Sharpe,
attention maps and feature importances.

Inputs are plain arrays, so any backtest can be reported: net strategy returns `[S, T]` (S strategies,
T periods, simple returns after costs), their names, and optionally bar times `[T]`, portfolio weights
`[S, T, N]` and factor (benchmark) returns `[T]` or `[S, T]`.

Every number comes from `trading_jax.evaluation.performance` (empyrical's definitions: Sharpe with
ddof=1 annualised by `sqrt(A)`, historical VaR, ...); this module only arranges and draws them. A metric
that is undefined for a series (a ratio with a zero denominator, e.g. the Sharpe ratio of constant
returns, the Sortino ratio or profit factor with no losing period, the Calmar ratio with no drawdown, any
deviation from fewer than 2 periods) is NaN in the summary, `null` in JSON and "n/a" in markdown: never
an `inf` that would sort first, nor a normal-looking 0.

Plots use matplotlib's Agg backend through its object-oriented API (a `Figure` with a
`FigureCanvasAgg`, no `pyplot`): matplotlib is imported inside the plotting functions only, no display
is needed, and the backend of a user's interactive session is left alone. Every file is written
atomically (a temporary file in the same folder, then `os.replace`), so an interrupted run leaves the
previous file or none, never half of one.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.evaluation import performance as perf

__all__ = [
    "CUTOFF",
    "performance_summary",
    "metrics_records",
    "metrics_markdown",
    "rolling_sharpe",
    "drawdown_series",
    "attention_map",
    "plot_equity",
    "plot_drawdown",
    "plot_rolling_sharpe",
    "plot_attention",
    "plot_importance",
    "write_report",
]

CUTOFF = 0.05  # tail probability of the historical VaR and expected shortfall in every report

# (summary key, markdown header, format): "pct" -> 12.34%, "ratio" -> 1.23, "int" -> 252.
_COLUMNS = (
    ("total_return", "Total return", "pct"),
    ("annual_return", "Annual return", "pct"),
    ("annual_volatility", "Annual vol", "pct"),
    ("sharpe_ratio", "Sharpe", "ratio"),
    ("sortino_ratio", "Sortino", "ratio"),
    ("calmar_ratio", "Calmar", "ratio"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("value_at_risk", "VaR 5%", "pct"),
    ("expected_shortfall", "ES 5%", "pct"),
    ("profit_factor", "Profit factor", "ratio"),
    ("win_rate", "Win rate", "pct"),
    ("turnover", "Turnover", "pct"),
    ("beta", "Beta", "ratio"),
    ("alpha", "Alpha", "pct"),
    ("n_periods", "Periods", "int"),
)
NA = "n/a"

_DEFINITIONS = (
    "Simple net returns; A periods per year ({period}: {factor:g}). Total return: prod(1 + r) - 1. Annual return: "
    "CAGR, prod(1 + r) ** (A / T) - 1. Annual vol: std(r, ddof=1) * sqrt(A). Sharpe: mean(r) / std(r, ddof=1) * "
    "sqrt(A) (risk-free 0). Sortino: mean(r) * A / downside deviation. Calmar: annual return / |max drawdown|. "
    "Max drawdown: worst fall of wealth from its running peak (the start is a peak). VaR 5%: historical 5% "
    "quantile of r; ES 5%: mean of the returns at or below it. Profit factor: gross gains / gross losses. Win "
    "rate: share of nonzero periods with r > 0. Turnover: mean two-way traded fraction of the book per period. "
    "Beta, alpha: CAPM regression on the factor returns (alpha annualised). Definitions follow empyrical "
    "(trading_jax.evaluation.performance); n/a: undefined for this series (e.g. a zero denominator)."
)


# ------------------------------------------------------------------------------------------ validation


def _returns_2d(fn: str, returns) -> np.ndarray:
    """`[S, T]` float64 returns (a `[T]` series becomes `[1, T]`), finite, with T >= 1."""
    try:
        r = np.asarray(returns, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: returns must be a numeric array [S, T] or [T]; got {type(returns).__name__}") from None
    if r.ndim == 1:
        r = r[None, :]
    if r.ndim != 2:
        raise ValueError(f"{fn}: returns must be [S, T] (strategies, periods) or [T]; got shape {np.shape(returns)}")
    if r.shape[0] < 1 or r.shape[1] < 1:
        raise ValueError(f"{fn}: returns needs at least one strategy and one period; got shape {r.shape}")
    bad = ~np.isfinite(r)
    if bad.any():
        s, t = np.argwhere(bad)[0]
        raise ValueError(f"{fn}: returns has {int(bad.sum())} NaN/inf values (first: strategy {s}, bar {t}); "
                         "a flat period has return 0: give every strategy a full finite series")
    return r


def _names(fn: str, names, n: int) -> list[str]:
    """`n` distinct strategy names (a single string is accepted when there is one strategy)."""
    if isinstance(names, str):
        names = [names]
    try:
        names = [str(x) for x in names]
    except TypeError:
        raise ValueError(f"{fn}: names must be a sequence of {n} strings; got {type(names).__name__}") from None
    if len(names) != n:
        raise ValueError(f"{fn}: names has {len(names)} entries but returns has {n} strategies (rows); "
                         "give one name per row")
    if len(set(names)) != n:
        raise ValueError(f"{fn}: names must be distinct; got {names}")
    return names


def _times(fn: str, times, n: int) -> np.ndarray | None:
    if times is None:
        return None
    t = np.asarray(times)
    if t.dtype == object:  # e.g. a list of pandas Timestamps or datetime objects
        try:
            t = t.astype("datetime64[ns]")
        except (TypeError, ValueError):
            raise ValueError(f"{fn}: times must be numbers or datetimes; got {t[:1]!r}...") from None
    if t.ndim != 1 or len(t) != n:
        raise ValueError(f"{fn}: times must be [T] with T = {n} (one per period); got shape {t.shape}")
    return t


def _finite_array(fn: str, name: str, x, ndim: int | tuple[int, ...]) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: {name} must be a numeric array; got {type(x).__name__}") from None
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in dims:
        raise ValueError(f"{fn}: {name} must have {' or '.join(map(str, dims))} dimensions; got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{fn}: {name} has {int((~np.isfinite(a)).sum())} NaN/inf values; pass finite values")
    return a


def _window(fn: str, window, n: int) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or not 2 <= window <= n:
        raise ValueError(f"{fn}: window must be an integer in [2, T] with T = {n}; got {window!r}")
    return int(window)


# ------------------------------------------------------------------------------------------- summary


@functools.partial(jax.jit, static_argnames=("period",))
def _summary(returns, weights, factor, period):
    """All metrics of `[S, T]` returns in one compiled program (the pure functions of `performance`)."""
    m = {
        "total_return": perf.total_return.__wrapped__(returns),
        "annual_return": perf.annual_return.__wrapped__(returns, period),
        "annual_volatility": perf.annual_volatility.__wrapped__(returns, period),
        "sharpe_ratio": perf.sharpe_ratio.__wrapped__(returns, 0.0, period),
        "sortino_ratio": perf.sortino_ratio.__wrapped__(returns, 0.0, period),
        "calmar_ratio": perf.calmar_ratio.__wrapped__(returns, period),
        "max_drawdown": perf.max_drawdown.__wrapped__(returns),
        "value_at_risk": perf.value_at_risk.__wrapped__(returns, CUTOFF),
        "expected_shortfall": perf.conditional_value_at_risk.__wrapped__(returns, CUTOFF),
        "profit_factor": perf.profit_factor.__wrapped__(returns),
        "win_rate": perf.win_rate.__wrapped__(returns),
    }
    if weights is not None:
        m["turnover"] = perf.turnover.__wrapped__(weights)
    if factor is not None:
        m["beta"] = perf.beta.__wrapped__(returns, factor)
        m["alpha"] = perf.alpha.__wrapped__(returns, factor, 0.0, period)
    return m


def performance_summary(returns, period: str | float = "daily", weights=None, factor_returns=None
                        ) -> dict[str, np.ndarray]:
    """The metrics table of a backtest, one value per strategy.

    Each metric is the `trading_jax.evaluation.performance` function of the same name (empyrical's
    definitions; `A = annualization_factor(period)`):

    * `total_return` `prod(1 + r) - 1`; `annual_return` (CAGR) `prod(1 + r) ** (A / T) - 1`;
    * `annual_volatility` `std(r, ddof=1) sqrt(A)`; `sharpe_ratio` `mean(r) / std(r, ddof=1) sqrt(A)`
      (risk-free 0); `sortino_ratio` `mean(r) A / downside_risk(r)`; `calmar_ratio` CAGR / |MDD|;
    * `max_drawdown` (MDD, `<= 0`); `value_at_risk` the historical 5% quantile of `r` and
      `expected_shortfall` the mean of the returns at or below it (both negative for a loss; `CUTOFF`);
    * `profit_factor` gross gains / gross losses; `win_rate` share of nonzero periods with `r > 0`;
    * `turnover` (only with `weights`): mean two-way `sum_i |w_{t,i} - w_{t-1,i}|` per period;
    * `beta` and annualised CAPM `alpha` (only with `factor_returns`);
    * `n_periods` `T`.

    Undefined values are NaN, never `inf`: `+-inf` from a zero denominator (the Sharpe ratio of constant
    returns, the Sortino ratio or profit factor with no losing period) is mapped to NaN, as are the
    NaNs `performance` already gives (deviations from fewer than 2 periods, no drawdown for Calmar).

    Args:
        returns: net simple returns `[S, T]` of S strategies (a `[T]` series is one strategy), finite.
        period: return frequency (`"daily"`, `"hourly"`, ... or periods per year), for annualisation.
        weights: optional portfolio weights `[S, T, N]` (`[T, N]` for a `[T]` series), for turnover.
        factor_returns: optional benchmark returns `[T]` (shared) or `[S, T]`, for beta and alpha.

    Returns:
        `{metric: float64 array [S]}` in the order above (`n_periods` is int64); the keys `turnover`,
        `beta` and `alpha` only when their input is given.

    Raises:
        ValueError: for a bad period, a shape that is not `[S, T]`/`[T]`, non-finite values, or
            weights / factor returns whose shapes do not match the returns.
    """
    fn = "performance_summary"
    perf.annualization_factor(period)
    r = _returns_2d(fn, returns)
    s, t = r.shape
    w = f = None
    if weights is not None:
        w = _finite_array(fn, "weights", weights, (2, 3))
        if w.ndim == 2:
            w = w[None]
        if w.shape[:2] != (s, t):
            raise ValueError(f"{fn}: weights must be [S, T, N] = [{s}, {t}, N] to match the returns; "
                             f"got shape {np.shape(weights)}")
    if factor_returns is not None:
        f = _finite_array(fn, "factor_returns", factor_returns, (1, 2))
        if f.shape[-1] != t or (f.ndim == 2 and f.shape[0] not in (1, s)):
            raise ValueError(f"{fn}: factor_returns must be [T] or [S, T] with T = {t}, S = {s}; "
                             f"got shape {f.shape}")
    values = _summary(jnp.asarray(r), None if w is None else jnp.asarray(w), None if f is None else jnp.asarray(f),
                      period)
    out = {}
    for key, _, _ in _COLUMNS:
        if key == "n_periods":
            out[key] = np.full(s, t, dtype=np.int64)
        elif key in values:
            v = np.asarray(values[key], dtype=np.float64).reshape(s)
            out[key] = np.where(np.isfinite(v), v, np.nan)
    return out


def metrics_records(summary: Mapping[str, Any], names: Sequence[str]) -> dict[str, dict[str, float | int | None]]:
    """The summary as JSON-ready records, `{strategy: {metric: value}}`, with `None` (JSON `null`) for NaN.

    Args:
        summary: the dict of `performance_summary` (`{metric: [S]}`).
        names: S strategy names.

    Returns:
        `{name: {metric: float | int | None}}` in the summary's metric order.
    """
    n = _summary_size("metrics_records", summary)
    names = _names("metrics_records", names, n)
    records = {}
    for i, name in enumerate(names):
        row = {}
        for key, value in summary.items():
            v = np.asarray(value).reshape(n)[i]
            if np.issubdtype(v.dtype, np.integer):
                row[key] = int(v)
            else:
                row[key] = float(v) if math.isfinite(float(v)) else None
        records[name] = row
    return records


def _summary_size(fn: str, summary) -> int:
    if not isinstance(summary, Mapping) or not summary:
        raise ValueError(f"{fn}: summary must be the non-empty dict of performance_summary")
    sizes = {np.size(v) for v in summary.values()}
    if len(sizes) != 1:
        raise ValueError(f"{fn}: summary values must all have one entry per strategy; got sizes {sorted(sizes)}")
    return sizes.pop()


def _cell(value, kind: str, digits: int) -> str:
    v = float(value)
    if not math.isfinite(v):
        return NA
    if kind == "int":
        return str(int(v))
    if kind == "pct":
        return f"{round(100 * v, digits) + 0.0:.{digits}f}%"  # + 0.0: no "-0.00"
    return f"{round(v, digits) + 0.0:.{digits}f}"


def metrics_markdown(summary: Mapping[str, Any], names: Sequence[str], *, digits: int = 2,
                     title: str | None = None) -> str:
    """A markdown table of a summary: one row per strategy, one column per metric.

    Returns, volatility, drawdown, VaR, ES, win rate, turnover and alpha are percentages (`12.34%`),
    ratios and beta plain numbers (`1.23`), both with `digits` decimals; NaN is "n/a". Columns follow
    `performance_summary`'s order; metrics it did not compute (no weights, no factor) are left out.

    Args:
        summary: the dict of `performance_summary`.
        names: S strategy names (`|` is escaped).
        digits: decimals of every number (default 2).
        title: optional `## title` line above the table.

    Returns:
        The table as a string ending in a newline.
    """
    fn = "metrics_markdown"
    n = _summary_size(fn, summary)
    names = _names(fn, names, n)
    columns = [(k, h, kind) for k, h, kind in _COLUMNS if k in summary]
    columns += [(k, k, "ratio") for k in summary if k not in {c[0] for c in _COLUMNS}]
    lines = [f"## {title}", ""] if title else []
    lines.append("| Strategy | " + " | ".join(h for _, h, _ in columns) + " |")
    lines.append("|---|" + "|".join("---:" for _ in columns) + "|")
    for i, name in enumerate(names):
        cells = [_cell(np.asarray(summary[k]).reshape(n)[i], kind, digits) for k, _, kind in columns]
        lines.append(f"| {name.replace('|', '&#124;')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ series to plot


@functools.partial(jax.jit, static_argnames=("window", "period"))
def _rolling_sharpe(returns, window, period):
    idx = jnp.arange(returns.shape[-1] - window + 1)[:, None] + jnp.arange(window)
    values = perf.sharpe_ratio.__wrapped__(returns[..., idx], 0.0, period)  # [S, T - window + 1]
    pad = jnp.full(returns.shape[:-1] + (window - 1,), jnp.nan, values.dtype)
    return jnp.concatenate([pad, values], axis=-1)


def rolling_sharpe(returns, window: int, period: str | float = "daily") -> np.ndarray:
    """Annualised Sharpe ratio over a trailing window: bars `t - window + 1 .. t`, never later ones.

    `SR_t = mean(r_{t-w+1..t}) / std(r_{t-w+1..t}, ddof=1) * sqrt(A)`, exactly
    `performance.sharpe_ratio` of each window (risk-free 0; `+-inf` or NaN for a constant window, as
    there). The value at bar t reads no return after t. Memory is `S * T * window` floats.

    Args:
        returns: simple returns `[S, T]` or `[T]`, finite.
        window: bars per window, an integer in `[2, T]`.
        period: return frequency, for `A = annualization_factor(period)`.

    Returns:
        `[S, T]` (or `[T]`) float64; NaN for the first `window - 1` bars.
    """
    fn = "rolling_sharpe"
    perf.annualization_factor(period)
    r = _returns_2d(fn, returns)
    window = _window(fn, window, r.shape[1])
    out = np.asarray(_rolling_sharpe(jnp.asarray(r), window, period), dtype=np.float64)
    return out if np.ndim(returns) == 2 else out[0]


@jax.jit
def _wealth_and_drawdown(returns):
    wealth = perf.cumulative_returns.__wrapped__(returns, 1.0)
    peak = jnp.maximum(jax.lax.cummax(wealth, axis=wealth.ndim - 1), 1.0)
    return wealth, wealth / peak - 1.0


def drawdown_series(returns) -> np.ndarray:
    """Drawdown at each bar: how far the compounded wealth is below its running peak.

    `W_t = prod_{s<=t} (1 + r_s)`, `DD_t = W_t / max(1, max_{s<=t} W_s) - 1` (the starting wealth 1 is a
    peak), so `min_t DD_t` is `performance.max_drawdown`.

    Args:
        returns: simple returns `[S, T]` or `[T]`, finite.

    Returns:
        `[S, T]` (or `[T]`) float64 in `[-1, 0]` (below -1 only if wealth goes negative).
    """
    r = _returns_2d("drawdown_series", returns)
    out = np.asarray(_wealth_and_drawdown(jnp.asarray(r))[1], dtype=np.float64)
    return out if np.ndim(returns) == 2 else out[0]


def attention_map(attention, reduce: str = "mean", *, layer: int | None = None, head: int | None = None
                  ) -> np.ndarray:
    """One `[queries, T]` attention map from a stack of them.

    The input's trailing axes are `[..., L, h, queries, T]` as in a transformer's `"attention"` output
    `[batch, L, h, T, T]` (layers, heads, query bar, attended bar); fewer leading axes are fine
    (`[h, T, T]`, `[T, T]`). `layer` picks one layer (axis -4) and `head` one head (axis -3) first; the
    remaining leading axes are then reduced:

    `A[q, k] = mean_{batch, l, h} a[batch, l, h, q, k]` (`reduce="mean"`; each row still sums to 1 when
    the inputs' rows do) or the maximum over them (`reduce="max"`).

    Args:
        attention: attention probabilities with at least 2 dimensions, finite and non-negative.
        reduce: `"mean"` or `"max"` over the leading axes.
        layer: optional layer index (needs at least 4 dimensions; negative counts from the last layer).
        head: optional head index (needs at least 3 dimensions).

    Returns:
        `[queries, T]` float64.
    """
    fn = "attention_map"
    a = _finite_array(fn, "attention", attention, tuple(range(2, 9)))
    if (a < 0).any():
        raise ValueError(f"{fn}: attention must be non-negative probabilities; got a minimum of {a.min():g}")
    if reduce not in ("mean", "max"):
        raise ValueError(f"{fn}: reduce must be 'mean' or 'max'; got {reduce!r}")
    for name, value, axis in (("layer", layer, -4), ("head", head, -3)):
        if value is None:
            continue
        if a.ndim < -axis:
            raise ValueError(f"{fn}: {name}= needs attention of at least {-axis} dimensions [..., L, h, q, T]; "
                             f"got shape {a.shape}")
        size = a.shape[axis]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not -size <= value < size:
            raise ValueError(f"{fn}: {name} must be an integer index in [{-size}, {size}); got {value!r}")
        a = np.take(a, int(value), axis=axis)  # taking the layer first leaves the head axis at -3
    lead = tuple(range(a.ndim - 2))
    if not lead:
        return a
    return a.mean(axis=lead) if reduce == "mean" else a.max(axis=lead)


# -------------------------------------------------------------------------------------------- files


def _atomic_write(path: Path, write) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # created by write: umask modes
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _write_text(path: Path, text: str) -> Path:
    return _atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _figure(width: float = 9.0, height: float = 4.5):
    """A matplotlib Figure on an Agg canvas (imported here: matplotlib is a lazy import)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    fig.tight_layout()
    return _atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))


def _lines(fn, returns, names, times, path, title, ylabel, series, hline=None):
    r = _returns_2d(fn, returns)
    names = _names(fn, names, r.shape[0])
    t = _times(fn, times, r.shape[1])
    x = np.arange(r.shape[1]) if t is None else t
    y = series(r)
    fig = _figure()
    ax = fig.add_subplot()
    for i, name in enumerate(names):
        ax.plot(x, y[i], label=name, linewidth=1.2)
    if hline is not None:
        ax.axhline(hline, color="0.5", linewidth=0.8, linestyle="--")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("time" if t is not None else "bar")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if t is not None and np.issubdtype(t.dtype, np.datetime64):
        fig.autofmt_xdate()
    return _save(fig, path)


def plot_equity(returns, names, times=None, *, path, title: str = "Equity") -> Path:
    """Plot each strategy's compounded wealth `W_t = prod_{s<=t} (1 + r_s)` (starting at 1) as a PNG.

    Args:
        returns: simple returns `[S, T]` or `[T]`.
        names: S strategy names (the legend).
        times: optional bar times `[T]` (datetimes or numbers) for the x axis; bar index otherwise.
        path: the PNG file to write (atomically).
        title: figure title.

    Returns:
        The path written.
    """
    return _lines("plot_equity", returns, names, times, path, title, "wealth (start = 1)",
                  lambda r: np.asarray(_wealth_and_drawdown(jnp.asarray(r))[0]), hline=1.0)


def plot_drawdown(returns, names, times=None, *, path, title: str = "Drawdown") -> Path:
    """Plot each strategy's drawdown `W_t / max(1, max_{s<=t} W_s) - 1` (see `drawdown_series`) as a PNG.

    Args:
        returns: simple returns `[S, T]` or `[T]`.
        names: S strategy names.
        times: optional bar times `[T]`.
        path: the PNG file to write.
        title: figure title.

    Returns:
        The path written.
    """
    return _lines("plot_drawdown", returns, names, times, path, title, "drawdown (fraction of peak)",
                  lambda r: np.asarray(_wealth_and_drawdown(jnp.asarray(r))[1]), hline=0.0)


def plot_rolling_sharpe(returns, names, window: int, period: str | float, path, *, times=None,
                        title: str | None = None) -> Path:
    """Plot the trailing-window annualised Sharpe ratio of each strategy (see `rolling_sharpe`) as a PNG.

    The value at bar t uses bars `t - window + 1 .. t` only (ddof=1, `sqrt(A)` annualisation, as
    `performance.sharpe_ratio`); the first `window - 1` bars and constant windows are not drawn.

    Args:
        returns: simple returns `[S, T]` or `[T]`.
        names: S strategy names.
        window: bars per window, in `[2, T]`.
        period: return frequency, for the annualisation.
        path: the PNG file to write.
        times: optional bar times `[T]`.
        title: figure title (default "Rolling Sharpe (window bars)").

    Returns:
        The path written.
    """
    fn = "plot_rolling_sharpe"
    perf.annualization_factor(period)
    n = _returns_2d(fn, returns).shape[1]
    window = _window(fn, window, n)

    def series(r):
        s = np.asarray(_rolling_sharpe(jnp.asarray(r), window, period), dtype=np.float64)
        return np.where(np.isfinite(s), s, np.nan)

    return _lines(fn, returns, names, times, path, title or f"Rolling Sharpe ({window} bars)",
                  "annualised Sharpe", series, hline=0.0)


def plot_attention(attention, path, *, reduce: str = "mean", layer: int | None = None, head: int | None = None,
                   labels: Sequence[str] | None = None, title: str = "Attention") -> Path:
    """Heatmap of an attention map (rows: query bar, columns: attended bar) as a PNG.

    The map is `attention_map(attention, reduce, layer=, head=)`: e.g. a transformer's `"attention"`
    output `[batch, L, h, T, T]` averaged over batch, layers and heads.

    Args:
        attention: `[..., queries, T]` attention probabilities (see `attention_map`).
        path: the PNG file to write.
        reduce, layer, head: as in `attention_map`.
        labels: optional tick labels for the T attended bars (e.g. times); a few are shown.
        title: figure title.

    Returns:
        The path written.
    """
    a = attention_map(attention, reduce, layer=layer, head=head)
    q, t = a.shape
    if labels is not None and len(labels) != t:
        raise ValueError(f"plot_attention: labels must have one entry per attended bar ({t}); got {len(labels)}")
    fig = _figure(7.0, 6.0)
    ax = fig.add_subplot()
    image = ax.imshow(a, aspect="auto", cmap="viridis", interpolation="nearest", origin="upper")
    fig.colorbar(image, ax=ax, label="attention weight")
    ax.set_xlabel("attended bar (key)")
    ax.set_ylabel("query bar")
    ax.set_title(title)
    if labels is not None:
        ticks = np.unique(np.linspace(0, t - 1, min(t, 8)).round().astype(int))
        ax.set_xticks(ticks, [str(labels[i]) for i in ticks], rotation=45, ha="right", fontsize="small")
        if q == t:
            ax.set_yticks(ticks, [str(labels[i]) for i in ticks], fontsize="small")
    return _save(fig, path)


def plot_importance(names, values, errors=None, path=None, title: str = "Feature importance") -> Path:
    """Horizontal bar chart of feature importances with error bars, the largest at the top, as a PNG.

    Args:
        names: F feature names.
        values: `[F]` importances (e.g. the mean of `interpret.permutation_importance` or
            `interpret.feature_importance_ig`), finite.
        errors: optional `[F]` non-negative error bar half-widths (e.g. the std over repeats); NaN
            entries (e.g. a std from one repeat) are drawn as 0.
        path: the PNG file to write (required).
        title: figure title.

    Returns:
        The path written.
    """
    fn = "plot_importance"
    if path is None:
        raise ValueError(f"{fn}: path is required (the PNG file to write)")
    v = _finite_array(fn, "values", values, 1)
    names = [str(x) for x in ([names] if isinstance(names, str) else names)]
    if len(names) != len(v) or not len(v):
        raise ValueError(f"{fn}: names ({len(names)}) and values ({len(v)}) must have the same nonzero length")
    e = None
    if errors is not None:
        e = np.asarray(errors, dtype=np.float64)
        if e.shape != v.shape:
            raise ValueError(f"{fn}: errors must have the shape of values {v.shape}; got {e.shape}")
        if (e[np.isfinite(e)] < 0).any():
            raise ValueError(f"{fn}: errors must be non-negative half-widths")
        e = np.where(np.isfinite(e), e, 0.0)
    order = np.argsort(v)  # barh draws the first entry at the bottom: largest on top
    fig = _figure(7.0, max(2.5, 0.35 * len(v) + 1.2))
    ax = fig.add_subplot()
    ax.barh(np.arange(len(v)), v[order], xerr=None if e is None else e[order], color="tab:blue", capsize=3)
    ax.set_yticks(np.arange(len(v)), [names[i] for i in order])
    ax.axvline(0.0, color="0.3", linewidth=0.8)
    ax.set_xlabel("importance")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


_KIND = re.compile(r"^[A-Za-z0-9_-]+$")


def write_report(out_dir, returns, names, *, period: str | float, times=None, weights=None, factor_returns=None,
                 attention=None, importance: Mapping[str, Sequence] | None = None,
                 title: str = "Backtest report", rolling_window: int | None = None) -> dict[str, Any]:
    """Write a backtest report folder: the metrics table and its plots.

    Files (each written atomically): `metrics.json` (title, period, strategy names, time range, the
    metrics per strategy with `null` for undefined ones, importances), `metrics.md` (the table of
    `metrics_markdown`, the metric definitions and the plots), `equity.png`, `drawdown.png`,
    `rolling_sharpe.png`, and when given `attention.png` and one `importance_{kind}.png` per entry of
    `importance`. The plot files are written before the two tables, so a complete `metrics.json`
    means a complete report.

    Args:
        out_dir: the folder (created if needed).
        returns: net simple returns `[S, T]` (or `[T]`), finite.
        names: S strategy names.
        period: return frequency (`"daily"`, `"hourly"`, ... or periods per year).
        times: optional bar times `[T]` for the x axes and the time range.
        weights: optional portfolio weights `[S, T, N]` (turnover).
        factor_returns: optional benchmark returns `[T]` or `[S, T]` (beta, alpha).
        attention: optional attention probabilities `[..., q, T]` (see `attention_map`; averaged).
        importance: optional `{kind: (feature_names, values[, errors])}`, e.g.
            `{"permutation": (names, mean, std), "integrated_gradients": (names, mean_abs_ig)}`; `kind`
            is letters, digits, `_` or `-`.
        title: report title.
        rolling_window: bars of the rolling Sharpe window (default `min(63, max(2, T // 4))`).

    Returns:
        `{"summary": performance_summary(...), "paths": {file name: Path}}`.
    """
    fn = "write_report"
    perf.annualization_factor(period)
    r = _returns_2d(fn, returns)
    names = _names(fn, names, r.shape[0])
    t = _times(fn, times, r.shape[1])
    if r.shape[1] < 2:
        raise ValueError(f"{fn}: returns needs at least 2 periods for a report; got {r.shape[1]}")
    window = _window(fn, min(63, max(2, r.shape[1] // 4)) if rolling_window is None else rolling_window, r.shape[1])
    importance = dict(importance or {})
    for kind, entry in importance.items():
        if not isinstance(kind, str) or not _KIND.match(kind):
            raise ValueError(f"{fn}: importance kinds name files: use letters, digits, _ or -; got {kind!r}")
        if not isinstance(entry, (tuple, list)) or len(entry) not in (2, 3):
            raise ValueError(f"{fn}: importance[{kind!r}] must be (names, values) or (names, values, errors)")
    summary = performance_summary(r, period, weights, factor_returns)
    a = None if attention is None else attention_map(attention)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["equity.png"] = plot_equity(r, names, t, path=out / "equity.png", title=f"{title}: equity")
    paths["drawdown.png"] = plot_drawdown(r, names, t, path=out / "drawdown.png", title=f"{title}: drawdown")
    paths["rolling_sharpe.png"] = plot_rolling_sharpe(r, names, window, period, out / "rolling_sharpe.png", times=t,
                                                      title=f"{title}: rolling Sharpe ({window} bars)")
    if a is not None:
        paths["attention.png"] = plot_attention(a, out / "attention.png", title=f"{title}: attention")
    importance_record = {}
    for kind, entry in importance.items():
        feature_names, values = entry[0], entry[1]
        errors = entry[2] if len(entry) == 3 else None
        name = f"importance_{kind}.png"
        paths[name] = plot_importance(feature_names, values, errors, out / name, title=f"{title}: {kind} importance")
        err = None if errors is None else np.asarray(errors, dtype=np.float64)
        importance_record[kind] = {
            str(f): {"value": float(np.asarray(values, dtype=np.float64)[i]),
                     "error": None if err is None or not math.isfinite(err[i]) else float(err[i])}
            for i, f in enumerate(feature_names)}

    record = {
        "title": title,
        "period": period if isinstance(period, str) else float(period),
        "periods_per_year": perf.annualization_factor(period),
        "strategies": names,
        "n_periods": int(r.shape[1]),
        "start": None if t is None else str(t[0]),
        "end": None if t is None else str(t[-1]),
        "rolling_sharpe_window": window,
        "metrics": metrics_records(summary, names),
    }
    if importance_record:
        record["importance"] = importance_record
    table = metrics_markdown(summary, names)
    span = f", {t[0]} to {t[-1]}" if t is not None else ""
    images = [f"![{p[:-4]}]({p})" for p in paths]
    unit = f"{period} periods" if isinstance(period, str) else f"periods ({perf.annualization_factor(period):g} a year)"
    md = "\n".join([f"# {title}", "", f"{len(names)} strategies, {r.shape[1]} {unit}{span}.", "", table,
                    _DEFINITIONS.format(period=period, factor=perf.annualization_factor(period)), "",
                    *images, ""])
    paths["metrics.md"] = _write_text(out / "metrics.md", md)
    paths["metrics.json"] = _write_text(out / "metrics.json", json.dumps(record, indent=2, allow_nan=False) + "\n")
    return {"summary": summary, "paths": paths}
