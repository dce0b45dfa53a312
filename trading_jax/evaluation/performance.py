"""Return-based performance and risk metrics in pure JAX, matching empyrical.

Every function takes *simple* (not log) periodic returns with time on the last axis, `[..., T]`,
reduces along that axis and returns one value per leading position, so a `[S, T]` batch of
strategies gives `[S]` and `jax.vmap` over rows gives the same. All are `jax.jit`-compiled (the
`period` and the CVaR `cutoff` are static arguments); `fn.__wrapped__` is the pure, unjitted function.

Conventions, all taken from empyrical (empyrical-reloaded 0.7; the tests check parity):

* **Annualisation.** `period` is `"daily"` (252), `"weekly"` (52), `"monthly"` (12), `"quarterly"`
  (4), `"yearly"` (1), `"hourly"` (24 * 365 = 8760, a market that trades around the clock, e.g.
  crypto; not in empyrical) or an explicit positive number of periods per year.
* **Standard deviations** are sample deviations, `ddof = 1`, over the non-NaN returns.
* **NaN returns** are ignored by the nan-aware reductions empyrical uses (`nanmean`, `nanstd`,
  `nanprod`, `nanpercentile`): each function's docstring says exactly how. Two quirks are kept for
  parity: `annual_return` counts NaN periods in the number of years, and `value_at_risk` (a plain
  `np.percentile` in empyrical) is NaN when any return is NaN; drop NaNs first if you want otherwise.
* **Too little data.** The length checks are on `T` (NaNs included), as in empyrical: NaN when
  `T < 2` for the deviation-based ratios, volatility and alpha, when `T < 1` for the rest.
* **Degenerate denominators** follow numpy's `x / 0`: `+-inf` for a nonzero numerator, NaN for 0/0
  (e.g. the Sharpe ratio of a constant positive return is `inf`), except where empyrical maps them
  to NaN (`calmar_ratio`, `beta` when the factor variance is below 1e-30).

Computation is in the input's float dtype (float32 unless jax x64 is on). Compound quantities are
computed through `log1p`/`expm1` sums rather than products and powers, which keeps float32 results
within about 1e-5 relative of empyrical's float64 ones on daily data (the tests state tolerances).

Not in empyrical: `parametric_value_at_risk` (checked against a scipy formula) and the trade
statistics `win_rate`, `profit_factor` and `turnover`, whose definitions are stated below.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

ANNUALIZATION_FACTORS = {
    "daily": 252,
    "weekly": 52,
    "monthly": 12,
    "quarterly": 4,
    "yearly": 1,
    "hourly": 24 * 365,
}


def annualization_factor(period: str | float) -> float:
    """Periods per year for a named return frequency, or an explicit number passed through.

    Args:
        period: one of `"daily"` (252), `"weekly"` (52), `"monthly"` (12), `"quarterly"` (4),
            `"yearly"` (1), `"hourly"` (24 * 365 = 8760, round-the-clock markets such as crypto),
            or a positive number of periods per year.

    Returns:
        The factor as a Python float (matches empyrical.annualization_factor for the shared names).

    Raises:
        ValueError: for an unknown name or a number that is not positive and finite.
    """
    if isinstance(period, str):
        if period not in ANNUALIZATION_FACTORS:
            raise ValueError(f"annualization_factor: unknown period {period!r}; use one of "
                             f"{', '.join(ANNUALIZATION_FACTORS)} or a number of periods per year")
        return float(ANNUALIZATION_FACTORS[period])
    if isinstance(period, bool) or not isinstance(period, numbers.Real) or not (0 < period < math.inf):
        raise ValueError(f"annualization_factor: period must be a name or a positive number of periods per year; "
                         f"got {period!r}")
    return float(period)


# ----------------------------------------------------------------------------------------- helpers


def period_checked_jit(*static: str):
    """`jax.jit` with static arguments, with `period` validated on the host before tracing.

    A bad `period` is then a plain one-line `ValueError` rather than one raised inside a trace.
    """

    def decorate(fn):
        jitted = jax.jit(fn, static_argnames=static)
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            arguments = signature.bind(*args, **kwargs).arguments
            if "period" in arguments:
                annualization_factor(arguments["period"])
            return jitted(*args, **kwargs)

        return wrapper

    return decorate


def as_float(x) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def reduced_nan(x: Array) -> Array:
    """NaN with the shape of `x` reduced over its last axis."""
    return jnp.full(x.shape[:-1], jnp.nan, dtype=x.dtype)


def count_valid(x: Array) -> Array:
    return jnp.sum(~jnp.isnan(x), axis=-1)


def nanmean(x: Array) -> Array:
    """Mean over the non-NaN entries of the last axis; NaN when there are none (numpy.nanmean)."""
    n = count_valid(x)
    return jnp.where(n > 0, jnp.nansum(x, axis=-1) / jnp.maximum(n, 1), jnp.nan)


def nanstd(x: Array) -> Array:
    """Sample standard deviation (ddof=1) over the non-NaN entries; NaN for fewer than 2 (numpy.nanstd)."""
    n = count_valid(x)
    centred = x - nanmean(x)[..., None]
    ss = jnp.nansum(centred * centred, axis=-1)
    return jnp.where(n > 1, jnp.sqrt(ss / jnp.maximum(n - 1, 1)), jnp.nan)


def _log_growth(returns: Array) -> Array:
    """`sum_t log1p(r_t)` over the non-NaN returns: the log of `nanprod(1 + r)`."""
    return jnp.nansum(jnp.log1p(returns), axis=-1)


# ------------------------------------------------------------------------------------ return paths


@period_checked_jit("starting_value")
def cumulative_returns(returns: Array, starting_value: float = 0.0) -> Array:
    """Cumulative compounded returns at each period.

    `c_t = prod_{s<=t} (1 + r_s) - 1` (or `starting_value * prod(...)` when `starting_value != 0`),
    with NaN returns counted as 0. Matches empyrical.cum_returns.

    Args:
        returns: simple returns `[..., T]`.
        starting_value: 0 for returns, or a starting wealth to get a wealth path.

    Returns:
        `[..., T]` cumulative returns (or wealth).
    """
    returns = as_float(returns)
    growth = jnp.exp(jnp.cumsum(jnp.log1p(jnp.where(jnp.isnan(returns), 0.0, returns)), axis=-1))
    return growth - 1.0 if starting_value == 0 else growth * starting_value


@period_checked_jit()
def total_return(returns: Array) -> Array:
    """Total compounded return over the whole series.

    `R = nanprod(1 + r) - 1` (NaN returns skipped). Matches empyrical.cum_returns_final.

    Args:
        returns: simple returns `[..., T]`.

    Returns:
        `[...]`; NaN when `T == 0`.
    """
    returns = as_float(returns)
    if returns.shape[-1] < 1:
        return reduced_nan(returns)
    return jnp.expm1(_log_growth(returns))


@period_checked_jit("period")
def annual_return(returns: Array, period: str | float = "daily") -> Array:
    """Compound annual growth rate (CAGR).

    `CAGR = nanprod(1 + r) ** (A / T) - 1` with `A = annualization_factor(period)` and `T` the
    number of periods *including* NaN ones (as empyrical: a NaN period still takes up time).
    Matches empyrical.annual_return.

    Args:
        returns: simple returns `[..., T]`.
        period: return frequency name or periods per year.

    Returns:
        `[...]`; NaN when `T == 0`, and when the wealth goes negative (a return below -1).
    """
    returns = as_float(returns)
    n = returns.shape[-1]
    if n < 1:
        return reduced_nan(returns)
    years = n / annualization_factor(period)
    return jnp.expm1(_log_growth(returns) / years)


@period_checked_jit()
def max_drawdown(returns: Array) -> Array:
    """Largest peak-to-trough fall of the compounded wealth, as a non-positive fraction.

    `W_t = prod_{s<=t} (1 + r_s)` with `W_0 = 1` before the first return and NaN returns counted
    as 0; `MDD = min_t (W_t / max(1, max_{s<=t} W_s) - 1)`. The starting wealth counts as a peak,
    so a first-period loss is a drawdown; a series that never falls gives 0. Matches
    empyrical.max_drawdown.

    Args:
        returns: simple returns `[..., T]`.

    Returns:
        `[...]` in `[-1, 0]`; NaN when `T == 0`.
    """
    returns = as_float(returns)
    if returns.shape[-1] < 1:
        return reduced_nan(returns)
    log_wealth = jnp.cumsum(jnp.log1p(jnp.where(jnp.isnan(returns), 0.0, returns)), axis=-1)
    log_peak = jnp.maximum(jax.lax.cummax(log_wealth, axis=log_wealth.ndim - 1), 0.0)
    return jnp.min(jnp.expm1(log_wealth - log_peak), axis=-1)


# -------------------------------------------------------------------------------- risk and ratios


@period_checked_jit("period")
def annual_volatility(returns: Array, period: str | float = "daily") -> Array:
    """Annualised volatility.

    `vol = nanstd(r, ddof=1) * sqrt(A)`, `A = annualization_factor(period)`. Matches
    empyrical.annual_volatility.

    Args:
        returns: simple returns `[..., T]`.
        period: return frequency name or periods per year.

    Returns:
        `[...]`; NaN when `T < 2` or fewer than 2 returns are not NaN.
    """
    returns = as_float(returns)
    if returns.shape[-1] < 2:
        return reduced_nan(returns)
    return nanstd(returns) * math.sqrt(annualization_factor(period))


@period_checked_jit("period")
def sharpe_ratio(returns: Array, risk_free: float | Array = 0.0, period: str | float = "daily") -> Array:
    """Annualised Sharpe ratio.

    `SR = nanmean(r - rf) / nanstd(r - rf, ddof=1) * sqrt(A)` with `rf` the per-period risk-free
    return and `A = annualization_factor(period)`. When every non-NaN excess return is equal the
    deviation is taken as exactly 0, so the ratio is `+-inf` (or NaN if they are all 0) rather than
    a float-rounding artefact. Matches empyrical.sharpe_ratio.

    Args:
        returns: simple returns `[..., T]`.
        risk_free: per-period risk-free return, a scalar or broadcastable to `returns`.
        period: return frequency name or periods per year.

    Returns:
        `[...]`; NaN when `T < 2`.
    """
    returns = as_float(returns)
    if returns.shape[-1] < 2:
        return reduced_nan(returns)
    excess = returns - risk_free
    std = nanstd(excess)
    constant = (jnp.nanmax(excess, axis=-1) == jnp.nanmin(excess, axis=-1)) & jnp.isfinite(std)
    std = jnp.where(constant, 0.0, std)
    return nanmean(excess) / std * math.sqrt(annualization_factor(period))


@period_checked_jit("period")
def downside_risk(returns: Array, required_return: float | Array = 0.0, period: str | float = "daily") -> Array:
    """Annualised downside deviation below a required return.

    `DR = sqrt(nanmean(min(r - req, 0) ** 2)) * sqrt(A)`: the mean is over *all* non-NaN periods
    (gains count as 0), not just the losing ones. Matches empyrical.downside_risk.

    Args:
        returns: simple returns `[..., T]`.
        required_return: per-period threshold, scalar or broadcastable to `returns`.
        period: return frequency name or periods per year.

    Returns:
        `[...]`; NaN when `T == 0`.
    """
    returns = as_float(returns)
    if returns.shape[-1] < 1:
        return reduced_nan(returns)
    below = jnp.minimum(returns - required_return, 0.0)
    return jnp.sqrt(nanmean(below * below)) * math.sqrt(annualization_factor(period))


@period_checked_jit("period")
def sortino_ratio(returns: Array, required_return: float | Array = 0.0, period: str | float = "daily") -> Array:
    """Annualised Sortino ratio.

    `SoR = nanmean(r - req) * A / downside_risk(r, req, period)` with the downside deviation of
    `downside_risk` (ddof does not apply: it is a root mean square over all non-NaN periods).
    No losing period gives `inf` (or NaN if the mean excess return is 0 too). Matches
    empyrical.sortino_ratio.

    Args:
        returns: simple returns `[..., T]`.
        required_return: per-period minimum acceptable return (default 0).
        period: return frequency name or periods per year.

    Returns:
        `[...]`; NaN when `T < 2`.
    """
    returns = as_float(returns)
    if returns.shape[-1] < 2:
        return reduced_nan(returns)
    excess = returns - required_return
    return nanmean(excess) * annualization_factor(period) / downside_risk.__wrapped__(returns, required_return, period)


@period_checked_jit("period")
def calmar_ratio(returns: Array, period: str | float = "daily") -> Array:
    """Calmar ratio: CAGR over the size of the maximum drawdown.

    `Calmar = annual_return(r) / |max_drawdown(r)|`; NaN when there is no drawdown
    (`max_drawdown == 0`) or the ratio is infinite. Matches empyrical.calmar_ratio.

    Args:
        returns: simple returns `[..., T]`.
        period: return frequency name or periods per year.

    Returns:
        `[...]`; NaN when `T == 0`.
    """
    returns = as_float(returns)
    if returns.shape[-1] < 1:
        return reduced_nan(returns)
    mdd = max_drawdown.__wrapped__(returns)
    ratio = annual_return.__wrapped__(returns, period) / jnp.abs(mdd)
    return jnp.where((mdd < 0) & ~jnp.isinf(ratio), ratio, jnp.nan)


def _linear_percentile(sorted_values: Array, n: Array, q: float) -> Array:
    """numpy's default ('linear') percentile `q` in [0, 1] of the first `n` entries of sorted rows."""
    position = q * (n - 1).astype(sorted_values.dtype)
    lo = jnp.floor(position)
    frac = position - lo
    lo = lo.astype(jnp.int32)
    hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
    a = jnp.take_along_axis(sorted_values, lo[..., None], axis=-1)[..., 0]
    b = jnp.take_along_axis(sorted_values, hi[..., None], axis=-1)[..., 0]
    return jnp.where(n > 0, a + (b - a) * frac, jnp.nan)


@period_checked_jit()
def value_at_risk(returns: Array, cutoff: float | Array = 0.05) -> Array:
    """Historical value at risk: the `cutoff` quantile of the returns (a negative number for a loss).

    `VaR = percentile(r, 100 * cutoff)` with numpy's linear interpolation between order
    statistics: position `cutoff * (T - 1)` in the sorted returns. As in empyrical (a plain
    `np.percentile`), a NaN return makes the result NaN. Matches empyrical.value_at_risk applied
    to each row.

    Args:
        returns: simple returns `[..., T]`.
        cutoff: tail probability in (0, 1), default 0.05.

    Returns:
        `[...]`; NaN when `T == 0` or any return is NaN.
    """
    returns = as_float(returns)
    n = returns.shape[-1]
    if n < 1:
        return reduced_nan(returns)
    q = _linear_percentile(jnp.sort(returns, axis=-1), jnp.full(returns.shape[:-1], n), cutoff)
    return jnp.where(jnp.any(jnp.isnan(returns), axis=-1), jnp.nan, q)


@period_checked_jit("cutoff")
def conditional_value_at_risk(returns: Array, cutoff: float = 0.05) -> Array:
    """Conditional value at risk (expected shortfall): the mean of the worst returns.

    With `n` non-NaN returns sorted ascending, `k = floor((n - 1) * cutoff)` and
    `CVaR = mean(r_(0), ..., r_(k))`: the `k + 1` lowest returns, the one at the cutoff index
    included. NaN returns are dropped before `k` is computed. Matches
    empyrical.conditional_value_at_risk applied to each row (`k` is tabulated in float64 on the
    host, so it agrees exactly; this is why `cutoff` is static).

    Args:
        returns: simple returns `[..., T]`.
        cutoff: tail probability in (0, 1), default 0.05 (a Python float).

    Returns:
        `[...]`; NaN when no return is non-NaN.
    """
    returns = as_float(returns)
    length = returns.shape[-1]
    n = count_valid(returns)
    table = np.floor(np.maximum(np.arange(length + 1) - 1, 0) * float(cutoff)).astype(np.int32)
    k = jnp.asarray(table)[n]
    ordered = jnp.sort(returns, axis=-1)  # NaNs sort last
    keep = jnp.arange(length) <= k[..., None]
    tail = jnp.sum(jnp.where(keep, ordered, 0.0), axis=-1) / (k + 1)
    return jnp.where(n > 0, tail, jnp.nan)


@period_checked_jit()
def parametric_value_at_risk(returns: Array, cutoff: float | Array = 0.05) -> Array:
    """Gaussian (parametric) value at risk.

    `VaR = mu + z_cutoff * sigma = mu - z_(1 - cutoff) * sigma` with `mu = nanmean(r)`,
    `sigma = nanstd(r, ddof=1)` and `z_p` the standard normal quantile (`z_0.05 = -1.645`).
    Not in empyrical; equals `scipy.stats.norm.ppf(cutoff, mu, sigma)`.

    Args:
        returns: simple returns `[..., T]`.
        cutoff: tail probability in (0, 1), default 0.05.

    Returns:
        `[...]`; NaN when fewer than 2 returns are not NaN.
    """
    returns = as_float(returns)
    if returns.shape[-1] < 2:
        return reduced_nan(returns)
    z = jax.scipy.special.ndtri(jnp.asarray(cutoff, dtype=returns.dtype))
    return nanmean(returns) + z * nanstd(returns)


@period_checked_jit()
def tail_ratio(returns: Array) -> Array:
    """Ratio of the right tail to the left tail.

    `TR = |percentile(r, 95)| / |percentile(r, 5)|` over the non-NaN returns (numpy's linear
    interpolation). 0.25 means losses in the tail are four times the gains. Matches
    empyrical.tail_ratio.

    Args:
        returns: simple returns `[..., T]`.

    Returns:
        `[...]`; NaN when no return is non-NaN.
    """
    returns = as_float(returns)
    if returns.shape[-1] < 1:
        return reduced_nan(returns)
    ordered, n = jnp.sort(returns, axis=-1), count_valid(returns)
    return jnp.abs(_linear_percentile(ordered, n, 0.95)) / jnp.abs(_linear_percentile(ordered, n, 0.05))


# ------------------------------------------------------------------------------ factor regressions


def _check_factor(fn: str, returns, factor_returns) -> None:
    r, f = np.shape(returns), np.shape(factor_returns)
    try:
        np.broadcast_shapes(r, f)
        ok = len(r) >= 1 and len(f) >= 1 and r[-1] == f[-1]
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{fn}: returns and factor_returns must share the time axis and broadcast; got {r} and {f}")


def _beta(returns: Array, factor_returns: Array) -> Array:
    factor = jnp.where(jnp.isnan(returns), jnp.nan, factor_returns)
    residual = factor - nanmean(factor)[..., None]
    covariance = nanmean(residual * returns)
    variance = nanmean(residual * residual)
    return covariance / jnp.where(variance < 1e-30, jnp.nan, variance)


@period_checked_jit()
def _beta_jit(returns: Array, factor_returns: Array) -> Array:
    returns, factor_returns = jnp.broadcast_arrays(as_float(returns), as_float(factor_returns))
    if returns.shape[-1] < 2:
        return reduced_nan(returns)
    return _beta(returns, factor_returns)


def beta(returns: Array, factor_returns: Array) -> Array:
    """Beta of the returns to a factor (e.g. the market), by least squares.

    `beta = cov(r, f) / var(f)` over the periods where both are non-NaN (population moments;
    the normalisation cancels); NaN when `var(f) < 1e-30`. A constant risk-free rate would cancel,
    so none is taken. Matches empyrical.beta (and the beta of empyrical.alpha_beta).

    Args:
        returns: simple returns `[..., T]`.
        factor_returns: factor returns with the same `T`, broadcastable to `returns` (e.g. `[T]`
            for one benchmark against `[S, T]` strategies).

    Returns:
        `[...]`; NaN when `T < 2`.

    Raises:
        ValueError: if the time axes differ or the shapes do not broadcast.
    """
    _check_factor("beta", returns, factor_returns)
    return _beta_jit(returns, factor_returns)


beta.__wrapped__ = _beta_jit.__wrapped__


@period_checked_jit("period")
def _alpha_jit(returns: Array, factor_returns: Array, risk_free: float | Array = 0.0,
               period: str | float = "daily") -> Array:
    returns, factor_returns = jnp.broadcast_arrays(as_float(returns), as_float(factor_returns))
    if returns.shape[-1] < 2:
        return reduced_nan(returns)
    b = _beta(returns, factor_returns)
    residual = (returns - risk_free) - b[..., None] * (factor_returns - risk_free)
    return jnp.expm1(annualization_factor(period) * jnp.log1p(nanmean(residual)))


def alpha(returns: Array, factor_returns: Array, risk_free: float | Array = 0.0,
          period: str | float = "daily") -> Array:
    """Annualised Jensen's alpha.

    `alpha = (1 + nanmean((r - rf) - beta * (f - rf))) ** A - 1`, `A = annualization_factor(period)`,
    `beta` as in `beta`, the mean over periods where both series are non-NaN. Matches the alpha of
    empyrical.alpha_beta (and empyrical.alpha).

    Args:
        returns: simple returns `[..., T]`.
        factor_returns: factor returns with the same `T`, broadcastable to `returns`.
        risk_free: per-period risk-free return.
        period: return frequency name or periods per year.

    Returns:
        `[...]`; NaN when `T < 2` or beta is undefined.

    Raises:
        ValueError: if the time axes differ or the shapes do not broadcast.
    """
    _check_factor("alpha", returns, factor_returns)
    return _alpha_jit(returns, factor_returns, risk_free, period)


alpha.__wrapped__ = _alpha_jit.__wrapped__


# ----------------------------------------------------------------------- trade statistics (ours)


@period_checked_jit()
def win_rate(returns: Array) -> Array:
    """Fraction of active periods that made money.

    `win_rate = #{t: r_t > 0} / #{t: r_t != 0 and not NaN}`: periods with a return of exactly 0
    (flat, no position) and NaN periods do not count either way. Not in empyrical.

    Args:
        returns: simple returns `[..., T]`.

    Returns:
        `[...]` in [0, 1]; NaN when no period has a nonzero return.
    """
    returns = as_float(returns)
    active = jnp.sum((returns != 0) & ~jnp.isnan(returns), axis=-1)
    wins = jnp.sum(returns > 0, axis=-1)
    return jnp.where(active > 0, wins / jnp.maximum(active, 1), jnp.nan).astype(returns.dtype)


@period_checked_jit()
def profit_factor(returns: Array) -> Array:
    """Gross gains over gross losses.

    `PF = sum_{r_t > 0} r_t / |sum_{r_t < 0} r_t|` over the non-NaN returns: `inf` when there are
    gains but no losses, NaN when there are neither, 0 when there are losses only. Not in empyrical.

    Args:
        returns: simple returns `[..., T]`.

    Returns:
        `[...]`, non-negative.
    """
    returns = as_float(returns)
    gains = jnp.sum(jnp.where(returns > 0, returns, 0.0), axis=-1)
    losses = jnp.abs(jnp.sum(jnp.where(returns < 0, returns, 0.0), axis=-1))  # abs: no -0.0
    return gains / losses


def turnover(weights: Array) -> Array:
    """Mean two-way portfolio turnover per period.

    `turnover = (1 / (T - 1)) * sum_{t=1}^{T-1} sum_i |w_{t,i} - w_{t-1,i}|`: the fraction of the
    book traded per period counting buys *and* sells (no division by 2; halve it for one-way
    turnover). The initial allocation from cash is not counted. NaN weights propagate. Not in
    empyrical.

    Args:
        weights: portfolio weights `[..., T, N]` (time, then assets).

    Returns:
        `[...]`; NaN when `T < 2`.

    Raises:
        ValueError: if `weights` has fewer than 2 dimensions.
    """
    if np.ndim(weights) < 2:
        raise ValueError(f"turnover: weights must be [..., T, N]; got shape {np.shape(weights)}")
    return _turnover_jit(weights)


@period_checked_jit()
def _turnover_jit(weights: Array) -> Array:
    weights = as_float(weights)
    if weights.shape[-2] < 2:
        return jnp.full(weights.shape[:-2], jnp.nan, dtype=weights.dtype)
    traded = jnp.sum(jnp.abs(jnp.diff(weights, axis=-2)), axis=-1)
    return jnp.mean(traded, axis=-1)


turnover.__wrapped__ = _turnover_jit.__wrapped__
