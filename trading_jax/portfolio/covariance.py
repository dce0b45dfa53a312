"""Covariance estimators from periodic returns: the sample covariance and Ledoit-Wolf shrinkage.

Inputs are simple (not log) periodic **returns** `[T, N]` (time first, one column per asset), not prices:
PyPortfolioOpt's `sample_cov` and `CovarianceShrinkage` take prices and call `returns_from_prices`
(`prices.pct_change().dropna(how="all")`) first; pass that result here. Every estimate is annualised by
multiplying with `frequency` (periods per year, 252 for daily data as in PyPortfolioOpt). Returns must be
finite: drop or fill missing bars first (PyPortfolioOpt's shrinkage silently turns NaN into 0; we refuse).

All functions are pure and jittable (`frequency` may be traced); they broadcast over nothing, so map a
batch of return windows `[D, T, N]` with `jax.vmap`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["ledoit_wolf", "sample_covariance"]


def _check_returns(fn: str, returns) -> None:
    """One-line ValueErrors for returns that are not a finite `[T, N]` array with T >= 2 (concrete input only)."""
    if isinstance(returns, jax.core.Tracer):
        return
    shape = np.shape(returns)
    if len(shape) != 2:
        raise ValueError(f"{fn}: returns must be a [T, N] array of periodic returns (time first); got shape {shape}")
    if shape[0] < 2 or shape[1] < 1:
        raise ValueError(f"{fn}: returns needs at least 2 periods and 1 asset; got shape {shape}")
    if not np.all(np.isfinite(np.asarray(returns))):
        raise ValueError(f"{fn}: returns contains NaN or inf; drop or fill the missing bars first")


def _float(x) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def sample_covariance(returns, frequency=252) -> Array:
    """Annualised sample covariance (ddof = 1), as PyPortfolioOpt's `sample_cov(..., returns_data=True)`.

        S = frequency / (T - 1) * sum_t (r_t - rbar)(r_t - rbar)'

    Args:
        returns: `[T, N]` simple periodic returns, finite, `T >= 2`.
        frequency: periods per year (252 for daily returns).

    Returns:
        `[N, N]` annualised covariance.

    Raises:
        ValueError: for a wrong shape or non-finite returns (concrete input only).
    """
    _check_returns("sample_covariance", returns)
    return _sample_covariance(_float(returns), frequency)


@jax.jit
def _sample_covariance(x, frequency):
    xc = x - jnp.mean(x, axis=0)
    return frequency * (xc.T @ xc) / (x.shape[0] - 1)


def ledoit_wolf(returns, frequency=252) -> tuple[Array, Array]:
    """Ledoit-Wolf shrinkage towards a constant-variance target (Ledoit & Wolf 2004).

    Matches `sklearn.covariance.ledoit_wolf(returns)` (times `frequency`) and PyPortfolioOpt's
    `CovarianceShrinkage(prices, frequency=frequency).ledoit_wolf()` (the default `constant_variance`
    target), including the shrinkage coefficient (`CovarianceShrinkage.delta`). With `X` the demeaned
    returns, `T` periods and `N` assets:

        S     = X'X / T                                   (biased empirical covariance, ddof = 0)
        m     = trace(S) / N                              (the target is m * I)
        d2    = ||S - m I||_F^2 / N
        b2    = min(d2, sum_t ||x_t x_t' - S||_F^2 / (N T^2))   (computed as (sum (X^2)'(X^2) / T - ||S||_F^2) / (N T))
        delta = b2 / d2                                   (0 when b2 = 0)
        shrunk = frequency * ((1 - delta) S + delta m I)

    Args:
        returns: `[T, N]` simple periodic returns, finite, `T >= 2`.
        frequency: periods per year (252 for daily returns).

    Returns:
        `(cov, delta)`: the `[N, N]` annualised shrunk covariance and the scalar shrinkage coefficient in [0, 1].

    Raises:
        ValueError: for a wrong shape or non-finite returns (concrete input only).
    """
    _check_returns("ledoit_wolf", returns)
    return _ledoit_wolf(_float(returns), frequency)


@jax.jit
def _ledoit_wolf(x, frequency):
    t, n = x.shape
    x = x - jnp.mean(x, axis=0)
    emp = (x.T @ x) / t
    mu = jnp.trace(emp) / n
    eye = jnp.eye(n, dtype=x.dtype)
    d2 = jnp.sum((emp - mu * eye) ** 2) / n
    x2 = x * x
    b2 = (jnp.sum(x2.T @ x2) / t - jnp.sum(emp * emp)) / (n * t)
    b2 = jnp.minimum(b2, d2)
    delta = jnp.where(b2 > 0, b2 / jnp.where(d2 > 0, d2, 1.0), 0.0)
    delta = jnp.where(n == 1, 0.0, delta)
    shrunk = (1.0 - delta) * emp + delta * mu * eye
    return frequency * shrunk, delta
