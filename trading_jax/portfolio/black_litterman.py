"""Black-Litterman: market-implied priors and the posterior of returns and covariance given views.

Matches PyPortfolioOpt's `market_implied_prior_returns`, `market_implied_risk_aversion` and
`BlackLittermanModel(...).bl_returns()` / `.bl_cov()` (He & Litterman 1999; Idzorek 2005; Walters 2014).
Shapes: `N` assets, `K` views; `cov` `[N, N]`, a prior `pi` `[N]`, a picking matrix `P` `[K, N]` and view
returns `Q` `[K]`, all in the same units (e.g. annual). Every function is pure, jittable and vmappable over
a leading batch (e.g. one `cov` and `pi` per date); the checks (finite values, shapes, tau in (0, 1]) run
on concrete input only and raise one-line `ValueError`s.

    Pi = delta * cov w_mkt + rf                                      (market-implied prior)
    A  = P (tau cov) P' + Omega                                      ([K, K])
    mu_BL  = Pi + (tau cov) P' A^{-1} (Q - P Pi)                     (posterior returns)
    cov_BL = cov + tau cov - (tau cov) P' A^{-1} P (tau cov)         (posterior covariance)

`Omega` (`[K, K]`, the uncertainty of the views) is given, or He & Litterman's default
`diag(tau P cov P')`, or Idzorek's from confidences c_k in [0, 1]: `Omega_kk = tau (1 - c_k)/c_k P_k cov P_k'`
(1e6 for c_k = 0, exactly as PyPortfolioOpt).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.portfolio import checks

Array = jax.Array

__all__ = [
    "BlackLittermanResult",
    "black_litterman_posterior",
    "default_omega",
    "idzorek_omega",
    "market_implied_prior_returns",
    "market_implied_risk_aversion",
]


class BlackLittermanResult(NamedTuple):
    """Posterior of the Black-Litterman model.

    Attributes:
        returns: `[N]` posterior expected returns `mu_BL`.
        cov: `[N, N]` posterior covariance `cov_BL`.
        omega: `[K, K]` the view uncertainty that was used.
    """

    returns: Array
    cov: Array
    omega: Array


def _float(x) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _check_views(fn: str, cov, P, Q=None) -> tuple[int, int]:
    n = checks.check_cov(fn, cov)
    shape = np.shape(P)
    if len(shape) != 2 or shape[1] != n or shape[0] < 1:
        raise ValueError(f"{fn}: P must be a [K, {n}] picking matrix (one row per view); got shape {shape}")
    if checks.concrete(P) and not np.all(np.isfinite(np.asarray(P, dtype=np.float64))):
        raise ValueError(f"{fn}: P contains NaN or inf")
    if Q is not None:
        checks.check_vector(fn, Q, shape[0], "Q")
    return n, shape[0]


def _check_tau(fn: str, tau) -> None:
    checks.check_scalar(fn, tau, "tau", positive=True)
    if checks.concrete(tau) and float(tau) > 1:
        raise ValueError(f"{fn}: tau must be in (0, 1]; got {float(tau)}")


def market_implied_prior_returns(market_caps, cov, risk_aversion=1.0, risk_free_rate=0.0) -> Array:
    """Returns implied by market-cap weights: `Pi = delta * cov w_mkt + rf`, `w_mkt = caps / sum(caps)`.

    (PyPortfolioOpt's `market_implied_prior_returns(market_caps, risk_aversion, cov_matrix, risk_free_rate)`,
    arguments reordered.)

    Args:
        market_caps: `[..., N]` positive market capitalisations.
        cov: `[..., N, N]` covariance (units of the returns, e.g. annual).
        risk_aversion: `delta`, the market price of risk (scalar or `[...]`).
        risk_free_rate: `rf`, in the units of the returns.

    Returns:
        `[..., N]` prior expected returns.
    """
    if checks.concrete(market_caps, cov):
        n = checks.check_cov("market_implied_prior_returns", cov) if np.ndim(cov) == 2 else np.shape(cov)[-1]
        if np.ndim(cov) == 2:
            checks.check_vector("market_implied_prior_returns", market_caps, n, "market_caps")
        if np.any(np.asarray(market_caps) < 0) or not np.all(np.sum(np.asarray(market_caps), axis=-1) > 0):
            raise ValueError("market_implied_prior_returns: market_caps must be nonnegative with a positive sum")
    return _prior(_float(market_caps), _float(cov), risk_aversion, risk_free_rate)


@jax.jit
def _prior(caps, cov, risk_aversion, risk_free_rate):
    w = caps / jnp.sum(caps, axis=-1, keepdims=True)
    return risk_aversion * jnp.einsum("...ij,...j->...i", cov, w) + risk_free_rate


def market_implied_risk_aversion(market_returns, frequency=252, risk_free_rate=0.0) -> Array:
    """The market price of risk: `delta = (mean(r) * f - rf) / (var(r) * f)` (sample variance, ddof = 1).

    Takes the market's simple periodic **returns** (PyPortfolioOpt's `market_implied_risk_aversion` takes
    prices and uses `prices.pct_change().dropna()`; pass that).

    Args:
        market_returns: `[..., T]` simple periodic returns of the market (time last), finite, `T >= 2`.
        frequency: periods per year `f` (252 for daily).
        risk_free_rate: annual `rf`.

    Returns:
        `[...]` risk aversion `delta`.
    """
    if checks.concrete(market_returns):
        r = np.asarray(market_returns, dtype=np.float64)
        if r.ndim < 1 or r.shape[-1] < 2:
            raise ValueError(f"market_implied_risk_aversion: market_returns needs at least 2 periods on its last "
                             f"axis; got shape {r.shape}")
        if not np.all(np.isfinite(r)):
            raise ValueError("market_implied_risk_aversion: market_returns contains NaN or inf; drop them first")
    return _risk_aversion(_float(market_returns), frequency, risk_free_rate)


@jax.jit
def _risk_aversion(r, frequency, risk_free_rate):
    mean = jnp.mean(r, axis=-1)
    var = jnp.var(r, axis=-1, ddof=1)
    return (mean * frequency - risk_free_rate) / (var * frequency)


@jax.jit
def default_omega(cov, P, tau=0.05) -> Array:
    """He & Litterman's view uncertainty: `Omega = diag(diag(tau P cov P'))`.

    Args:
        cov: `[..., N, N]`; P: `[..., K, N]`; tau: scalar.

    Returns:
        `[..., K, K]` diagonal Omega.
    """
    P = _float(P)
    variances = tau * jnp.einsum("...kn,...nm,...km->...k", P, _float(cov), P)
    return variances[..., :, None] * jnp.eye(P.shape[-2], dtype=variances.dtype)


def idzorek_omega(view_confidences, cov, P, tau=0.05) -> Array:
    """Idzorek's view uncertainty from confidences: `Omega_kk = tau (1 - c_k) / c_k * P_k cov P_k'`.

    A confidence of 0 gives `Omega_kk = 1e6` (PyPortfolioOpt's convention: effectively no view); 1 gives 0
    (the view holds exactly).

    Args:
        view_confidences: `[..., K]` confidences in [0, 1].
        cov: `[..., N, N]`; P: `[..., K, N]`; tau: scalar.

    Returns:
        `[..., K, K]` diagonal Omega.
    """
    if checks.concrete(view_confidences):
        c = np.asarray(view_confidences, dtype=np.float64)
        if not np.all(np.isfinite(c)) or np.any(c < 0) or np.any(c > 1):
            raise ValueError(f"idzorek_omega: view_confidences must be in [0, 1]; got {c.tolist()}")
    return _idzorek(_float(view_confidences), _float(cov), _float(P), tau)


@jax.jit
def _idzorek(c, cov, P, tau):
    variances = jnp.einsum("...kn,...nm,...km->...k", P, cov, P)
    safe = jnp.where(c > 0, c, 1.0)
    diag = jnp.where(c > 0, tau * (1.0 - c) / safe * variances, 1e6)
    return diag[..., :, None] * jnp.eye(P.shape[-2], dtype=diag.dtype)


@jax.jit
def _posterior(cov, pi, P, Q, omega, tau):
    tau_cov_pt = tau * cov @ P.T  # [N, K]
    a = P @ tau_cov_pt + omega  # [K, K]
    sol = jnp.linalg.solve(a, jnp.concatenate([(Q - P @ pi)[:, None], tau_cov_pt.T], axis=1))
    returns = pi + tau_cov_pt @ sol[:, 0]
    post_cov = cov + tau * cov - tau_cov_pt @ sol[:, 1:]
    return returns, post_cov


def black_litterman_posterior(cov, pi, P, Q, omega=None, tau=0.05, view_confidences=None) -> BlackLittermanResult:
    """Posterior returns and covariance given views `P w = Q` (PyPortfolioOpt `bl_returns()`, `bl_cov()`).

        A = P (tau cov) P' + Omega
        mu_BL  = pi + (tau cov) P' A^{-1} (Q - P pi)
        cov_BL = cov + tau cov - (tau cov) P' A^{-1} P (tau cov)

    Args:
        cov: `[N, N]` prior covariance.
        pi: `[N]` prior expected returns (e.g. `market_implied_prior_returns`).
        P: `[K, N]` picking matrix (row k: the portfolio the k-th view is about).
        Q: `[K]` view returns.
        omega: `[K, K]` view uncertainty; `None` for `idzorek_omega` when `view_confidences` is given, else
            `default_omega` (He & Litterman).
        tau: prior uncertainty scale in (0, 1].
        view_confidences: `[K]` Idzorek confidences in [0, 1] (only when `omega` is None).

    Returns:
        `BlackLittermanResult(returns [N], cov [N, N], omega [K, K])`.

    Raises:
        ValueError: for bad concrete input (shapes, non-finite values, tau outside (0, 1], a singular
            `P tau cov P' + Omega`).
    """
    fn = "black_litterman_posterior"
    n, k = _check_views(fn, cov, P, Q)
    checks.check_vector(fn, pi, n, "pi")
    _check_tau(fn, tau)
    if omega is not None and view_confidences is not None:
        raise ValueError(f"{fn}: pass omega or view_confidences, not both")
    if omega is None:
        omega = (default_omega(cov, P, tau) if view_confidences is None
                 else idzorek_omega(view_confidences, cov, P, tau))
    elif np.shape(omega) != (k, k):
        raise ValueError(f"{fn}: omega must be a [K, K] = [{k}, {k}] matrix; got shape {np.shape(omega)}")
    elif checks.concrete(omega) and not np.all(np.isfinite(np.asarray(omega, dtype=np.float64))):
        raise ValueError(f"{fn}: omega contains NaN or inf")
    cov, pi, P, Q, omega = (_float(x) for x in (cov, pi, P, Q, omega))
    returns, post_cov = _posterior(cov, pi, P, Q, omega, tau)
    if checks.concrete(returns) and not np.all(np.isfinite(np.asarray(returns))):
        raise ValueError(f"{fn}: P tau cov P' + Omega is singular (duplicate views with Omega = 0?); "
                         "give the views some uncertainty")
    return BlackLittermanResult(returns, post_cov, omega)
