"""Long-only mean-variance optimisation in pure JAX, matching PyPortfolioOpt's `EfficientFrontier`.

Every problem is over long-only weights that sum to 1 with an optional per-asset cap,

    W = {w in R^N : sum_i w_i = 1, 0 <= w_i <= cap_i}        (PyPortfolioOpt's `weight_bounds=(0, cap)`)

(a per-asset `cap_i = 0` keeps asset i out, e.g. an unlisted one)
given expected returns `mu` `[N]` and a covariance `cov` `[N, N]` in the same units (e.g. both annualised):

* `min_volatility(cov)`:                       min_w  w' cov w
* `max_quadratic_utility(mu, cov, delta)`:     max_w  mu'w - delta/2 w' cov w
* `efficient_return(mu, cov, r)`:              min_w  w' cov w   s.t. mu'w >= r
* `efficient_risk(mu, cov, sigma)`:            max_w  mu'w       s.t. w' cov w <= sigma^2
* `max_sharpe(mu, cov, rf)`:                   max_w  (mu'w - rf) / sqrt(w' cov w)

**Method.** All five solutions lie on the long-only efficient frontier, traced by the parametric QP

    w(t) = argmin_{w in W}  (1 - t) * 1/2 w' cov w - t * mu'w,      t in [0, 1]   (lambda = t / (1 - t))

(t = 0: minimum variance; t -> 1: maximum return). A QP at fixed t is solved by FISTA (accelerated
projected gradient with adaptive restart; the projection is `project_capped_simplex`) for a fixed number
of iterations. t is found by a fixed number of bisection steps, each a warm-started FISTA solve, on a
predicate that is monotone along the frontier: `t < 1/(1 + delta)` (utility, in scaled units), `mu'w < r`,
`w'cov w < sigma^2`, and for the Sharpe ratio (quasi-concave along the frontier) the tangency test
`lambda (mu'w - rf) < w'cov w`, true before the tangency point and false after it (min volatility: never
true, so t -> 0). Then a **polish** makes the answer exact to float precision: on the identified face (assets
at 0, at their cap, and free), the KKT equations are linear, `w(lambda) = a + lambda * b` with

    cov_FF w_F + nu 1 = lambda mu_F,   w_i = 0 or cap_i off F,   sum w = 1,

and lambda is set in closed form by the problem (0; 1/delta; mu'w = r; w'cov w = sigma^2; the tangency
lambda = (m1 v0 - m0 v1) / (m0 v2 - m1 v1) with m = mu'w - rf, v = w'cov w expanded in lambda). A few
primal-dual active-set updates (`w - g` against the bounds, g the reduced gradient) correct the face, and
the result is accepted only if it passes the KKT check (feasible to 1e-5, bound multipliers of the right
sign); otherwise the FISTA weights are returned with status `INACCURATE`. Internally the problem is scaled
(`cov / (trace(cov) / N)`, `mu / max|mu|`) so float32 sees numbers of order one. Fixed iteration counts
throughout: every function is jittable and vmappable (e.g. `jax.vmap(max_sharpe)` over `[D, N]` expected
returns and `[D, N, N]` covariances); `config` is static, and the five problems share one compiled program
per shape (the problem kind is a traced argument), so switching between them does not recompile.

**Accuracy.** Against PyPortfolioOpt (float64, Clarabel) on 8-40 real stocks, capped and not, the float32
weights agree to about 1e-6; `efficient_risk` near the maximum-return end of the frontier is ill-conditioned
(a float32 rounding of sigma^2 moves the weights by up to ~1e-4). Because the problem is scaled internally,
daily-unit inputs are solved as accurately as annual ones (cvxpy's absolute tolerances are not).

**Status** (`OptimizeResult.status`, int32): `OPTIMAL` (0), `INFEASIBLE` (1: the target cannot be met,
e.g. `r` above the largest achievable return, `sigma` below the smallest achievable volatility, or no asset
beats the risk-free rate; the weights are then the closest attainable portfolio, named in each docstring),
`INACCURATE` (2: the polish did not pass the KKT check, e.g. a singular covariance with duplicate assets,
whose optimum is not unique; the weights are FISTA's, feasible but approximate).
On concrete (non-traced) input, clearly bad arguments raise a one-line `ValueError` instead: a covariance
that is not square, symmetric, PSD or finite, a `mu` of the wrong shape, `cap` outside [0, 1] or
`cap * N < 1`, a non-positive risk aversion or target volatility, and (for `max_sharpe`) no expected return
above the risk-free rate.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.portfolio import checks
from trading_jax.portfolio.projections import project_capped_simplex

Array = jax.Array

__all__ = [
    "INACCURATE",
    "INFEASIBLE",
    "OPTIMAL",
    "OptimizeResult",
    "SolverConfig",
    "efficient_return",
    "efficient_risk",
    "max_quadratic_utility",
    "max_return",
    "max_sharpe",
    "min_volatility",
    "portfolio_performance",
]

OPTIMAL, INFEASIBLE, INACCURATE = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """Fixed iteration counts of the frontier solver (static under `jit`).

    Attributes:
        qp_iters: FISTA iterations per QP solve (each search step warm-starts from the previous one).
        search_iters: bisection / golden-section steps along the frontier parameter t in [0, 1].
        polish_iters: primal-dual active-set updates of the final exact solve.
        projection_iters: bisection steps inside `project_capped_simplex`.
        tol: feasibility tolerance of the final KKT check (weights; multipliers use `10 * tol`, scaled).
    """

    qp_iters: int = 200
    search_iters: int = 32
    polish_iters: int = 6
    projection_iters: int = 30
    tol: float = 1e-5

    def __post_init__(self):
        for name in ("qp_iters", "search_iters", "polish_iters", "projection_iters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SolverConfig: {name} must be a positive integer; got {value!r}")
        if not (0 < self.tol < 1):
            raise ValueError(f"SolverConfig: tol must be in (0, 1); got {self.tol!r}")


class OptimizeResult(NamedTuple):
    """Weights of an optimised portfolio and how they were obtained.

    Attributes:
        weights: `[..., N]` long-only weights summing to 1 (each <= its cap).
        status: `[...]` int32: `OPTIMAL` (0), `INFEASIBLE` (1) or `INACCURATE` (2); see the module docstring.
    """

    weights: Array
    status: Array


# ------------------------------------------------------------------------------------------- pieces


@jax.jit
def portfolio_performance(weights, expected_returns, cov, risk_free_rate=0.0) -> tuple[Array, Array, Array]:
    """Expected return, volatility and Sharpe ratio of weights (PyPortfolioOpt's `portfolio_performance`).

        ret = mu'w,   vol = sqrt(w' cov w),   sharpe = (ret - rf) / vol

    Args:
        weights: `[..., N]`.
        expected_returns: `[..., N]` (same units as `cov`, e.g. annual).
        cov: `[..., N, N]`.
        risk_free_rate: scalar, in the units of `expected_returns`.

    Returns:
        `(ret, vol, sharpe)`, each `[...]`.
    """
    w = jnp.asarray(weights)
    ret = jnp.sum(w * jnp.asarray(expected_returns), axis=-1)
    vol = jnp.sqrt(jnp.einsum("...i,...ij,...j->...", w, jnp.asarray(cov), w))
    return ret, vol, (ret - risk_free_rate) / vol


def _greedy_max_return(mu, cap) -> Array:
    """The maximum-return weights on W: fill the assets by decreasing mu up to their caps (an exact LP solve).

    Args:
        mu: `[N]`; cap: `[N]` with sum >= 1.

    Returns:
        `[N]` weights (ties in mu are broken by index).
    """
    order = jnp.argsort(-mu, stable=True)
    caps = cap[order]
    before = jnp.cumsum(caps) - caps
    return jnp.zeros_like(mu).at[order].set(jnp.clip(1.0 - before, 0.0, caps))


class _Problem(NamedTuple):
    """The scaled problem: cov / s and mu / m, with s = trace(cov) / N and m = max|mu| (1 when mu = 0)."""

    sig: Array  # [N, N]
    mu: Array  # [N]
    cap: Array  # [N]
    s: Array
    m: Array
    lmax: Array  # an upper bound on the largest eigenvalue of sig


def _scaled(mu, cov, cap) -> _Problem:
    cov = jnp.asarray(cov)
    n = cov.shape[-1]
    dtype = jnp.result_type(cov.dtype, jnp.float32)
    cov = cov.astype(dtype)
    mu = jnp.zeros(n, dtype) if mu is None else jnp.asarray(mu, dtype)
    s = jnp.trace(cov) / n
    s = jnp.where(s > 0, s, 1.0)
    m = jnp.max(jnp.abs(mu))
    m = jnp.where(m > 0, m, 1.0)
    sig = 0.5 * (cov + cov.T) / s
    lmax = jnp.sqrt(jnp.sum(sig * sig))  # Frobenius norm >= largest eigenvalue: a safe Lipschitz bound
    cap = jnp.broadcast_to(jnp.asarray(cap, dtype), (n,))
    return _Problem(sig, mu / m, cap, s, m, jnp.maximum(lmax, 1e-12))


def _fista(p: _Problem, t, w0, cfg: SolverConfig) -> Array:
    """`cfg.qp_iters` FISTA steps on `min_{w in W} (1 - t)/2 w'Σw - t mu'w` from `w0` (adaptive restart).

    The step is `1 / ((1 - t) lmax + t)`, at most `1 / L` for `L = (1 - t) lmax`, and bounded as t -> 1
    (where the problem becomes the LP `max mu'w`), so the projection never sees huge numbers.
    """
    step = 1.0 / ((1.0 - t) * p.lmax + t)

    def body(_, carry):
        w, z, k = carry
        g = (1.0 - t) * (p.sig @ z) - t * p.mu
        w1 = project_capped_simplex(z - step * g, p.cap, cfg.projection_iters, unroll=False)
        restart = jnp.vdot(z - w1, w1 - w) > 0
        z1 = jnp.where(restart, w1, w1 + ((k - 1.0) / (k + 2.0)) * (w1 - w))
        return w1, z1, jnp.where(restart, 1.0, k + 1.0)

    w, _, _ = jax.lax.fori_loop(0, cfg.qp_iters, body, (w0, w0, jnp.ones((), w0.dtype)))
    return w


def _face(p: _Problem, lo, hi):
    """KKT solve on the face (lo: w = 0, hi: w = cap, the rest free): `w = a + lam b`, `nu = nu_a + lam nu_b`.

    Rows of free assets read `sig_i. w + nu = lam mu_i`, fixed rows `w_i = 0` or `cap_i`, the last `sum w = 1`;
    both right-hand sides (lam = 0 and the lam-coefficient) are solved at once. With no free asset the
    multiplier row is made regular (nu is then set by `_reduced_gradient`); with at most one free asset the
    face is a single point and `b = 0`.
    """
    n = p.mu.shape[0]
    f = (~(lo | hi)).astype(p.sig.dtype)
    n_free = jnp.sum(f)
    top = jnp.concatenate([f[:, None] * p.sig + jnp.diag(1.0 - f), f[:, None]], axis=1)
    last = jnp.concatenate([jnp.ones((1, n), p.sig.dtype), jnp.where(n_free > 0, 0.0, 1.0)[None, None]], axis=1)
    kkt = jnp.concatenate([top, last], axis=0)
    rhs_a = jnp.concatenate([jnp.where(hi, p.cap, 0.0), jnp.ones((1,), p.sig.dtype)])
    rhs_b = jnp.concatenate([f * p.mu, jnp.zeros((1,), p.sig.dtype)])
    sol = jnp.linalg.solve(kkt, jnp.stack([rhs_a, rhs_b], axis=1))
    # with at most one free asset `sum w = 1` pins w: b is exactly 0 (not LU rounding times a large lambda)
    b = jnp.where(n_free > 1, sol[:n, 1], 0.0)
    return sol[:n, 0], sol[n, 0], b, sol[n, 1], n_free


def _reduced_gradient(p: _Problem, w, nu, lam, lo, hi, n_free):
    """`g = sig w - lam mu + nu`: 0 on free assets, >= 0 at 0 and <= 0 at the cap at a KKT point.

    With no free asset nu is any value in [max_lo h, min_hi h] (h = lam mu - sig w); the midpoint is used.
    """
    h = lam * p.mu - p.sig @ w
    big = jnp.asarray(jnp.finfo(w.dtype).max, w.dtype)
    lo_max = jnp.max(jnp.where(lo, h, -big))
    hi_min = jnp.min(jnp.where(hi, h, big))
    mid = jnp.where(jnp.any(lo) & jnp.any(hi), 0.5 * (lo_max + hi_min), jnp.where(jnp.any(lo), lo_max, hi_min))
    nu = jnp.where(n_free > 0, nu, mid)
    return nu - h


def _polish(p: _Problem, w_start, lam_rule, cfg: SolverConfig):
    """Primal-dual active-set iterations from `w_start`'s face; `lam_rule(a, b) -> lam` sets the multiplier.

    Each iteration solves the KKT system of the current face (`_face`), then moves to the face of
    `w - g` against the bounds (g the reduced gradient: a fixed asset with a multiplier of the wrong sign
    is freed, a free asset past a bound is fixed). The last iteration's face solution is checked.

    Returns:
        `(w, lam, ok)`: the face solution, its lambda, and whether it passes the KKT check.
    """
    eps = 1e-6

    def body(_, carry):
        lo, hi, _w, _g, _lam, _lo, _hi = carry
        a, nu_a, b, nu_b, n_free = _face(p, lo, hi)
        lam = lam_rule(a, b)
        w = a + lam * b
        g = _reduced_gradient(p, w, nu_a + lam * nu_b, lam, lo, hi, n_free)
        v = w - g
        lo1 = v <= eps
        return lo1, (v >= p.cap - eps) & ~lo1, w, g, lam, lo, hi

    lo0 = w_start <= eps
    hi0 = (w_start >= p.cap - eps) & ~lo0
    zero = jnp.zeros((), w_start.dtype)
    carry = (lo0, hi0, w_start, w_start, zero, lo0, hi0)
    _, _, w, g, lam, lo, hi = jax.lax.fori_loop(0, cfg.polish_iters + 1, body, carry)
    tol = cfg.tol
    gtol = 10 * tol * (1.0 + jnp.abs(lam))
    ok = (jnp.all(jnp.isfinite(w)) & jnp.all(jnp.isfinite(g)) & (lam >= 0)
          & jnp.all(w >= -tol) & jnp.all(w <= p.cap + tol) & (jnp.abs(jnp.sum(w) - 1.0) <= tol)
          & jnp.all(jnp.where(lo, g >= -gtol, True)) & jnp.all(jnp.where(hi, g <= gtol, True)))
    return w, lam, ok


def _lam_of_t(t):
    return jnp.minimum(t / jnp.maximum(1.0 - t, 1e-12), 1e6)


def _start(p: _Problem) -> Array:
    n = p.mu.shape[0]
    return project_capped_simplex(jnp.full((n,), 1.0 / n, p.sig.dtype), p.cap, 30, unroll=False)


def _bisect(p: _Problem, below, cfg: SolverConfig):
    """Bisection on t in [0, 1] for the frontier point where `below(w(t), t)` turns False (monotone in t).

    Returns:
        `(w, t)` of the last evaluated point (each FISTA solve warm-starts from the previous one).
    """

    def body(_, carry):
        lo, hi, w, _t = carry
        mid = 0.5 * (lo + hi)
        w = _fista(p, mid, w, cfg)
        go_up = below(w, mid)
        return jnp.where(go_up, mid, lo), jnp.where(go_up, hi, mid), w, mid

    zero, one = jnp.zeros((), p.sig.dtype), jnp.ones((), p.sig.dtype)
    _, _, w, t = jax.lax.fori_loop(0, cfg.search_iters, body, (zero, one, _start(p), 0.5 * one))
    return w, t


# The five problems share one compiled program (`_solve`): `kind` (traced) selects the search predicate,
# the closed-form lambda of the polish and the status rules.
_MIN_VOLATILITY, _UTILITY, _RETURN, _RISK, _SHARPE = range(5)


def _safe_div(num, den, good):
    return num / jnp.where(good, den, 1.0)


@functools.partial(jax.jit, static_argnames=("config",))
def _solve(kind, mu, cov, cap, param, config):
    """One frontier problem; `param` is delta (utility), r (return), sigma (risk) or rf (Sharpe)."""
    p = _scaled(mu, cov, cap)
    dt = p.sig.dtype
    param = jnp.asarray(param, dt)
    lam_utility = p.m / (jnp.where(kind == _UTILITY, param, 1.0) * p.s)  # 1/delta in the scaled units m/s
    t_utility = lam_utility / (1.0 + lam_utility)
    r = param / p.m  # target return (scaled)
    var_target = param * param / p.s  # target variance (scaled)
    rf = param / p.m  # risk-free rate (scaled)

    def var(w):
        return w @ p.sig @ w

    def sharpe(w):
        return (p.mu @ w - rf) / jnp.sqrt(jnp.maximum(var(w), 1e-30))

    def below(w, t):
        excess = p.mu @ w - rf
        return jnp.select(
            [kind == _MIN_VOLATILITY, kind == _UTILITY, kind == _RETURN, kind == _RISK],
            [False, t < t_utility, p.mu @ w < r, var(w) < var_target],
            (excess <= 0) | (t * excess < (1.0 - t) * var(w)),  # Sharpe: lambda (m - rf) < v before the tangency
        )

    w_search, t = _bisect(p, below, config)
    lam_search = _lam_of_t(t)

    def rule(a, b):
        m0, m1 = p.mu @ a, p.mu @ b
        v0, v1, v2 = var(a), a @ p.sig @ b, var(b)
        good_r = m1 > 1e-12
        lam_r = jnp.where(good_r, jnp.maximum(0.0, _safe_div(r - m0, m1, good_r)), lam_search)
        disc = v1 * v1 - v2 * (v0 - var_target)
        good_v = (v2 > 1e-12) & (disc >= 0)
        lam_v = jnp.where(good_v, jnp.maximum(0.0, _safe_div(-v1 + jnp.sqrt(jnp.maximum(disc, 0.0)), v2, good_v)),
                          jnp.where(disc < 0, 0.0, lam_search))
        e0 = m0 - rf
        den = e0 * v2 - m1 * v1
        good_s = (den > 1e-12) & (m1 > 1e-12)
        lam_s = jnp.where(good_s, jnp.maximum(0.0, _safe_div(m1 * v0 - e0 * v1, den, good_s)), lam_search)
        return jnp.select([kind == _MIN_VOLATILITY, kind == _UTILITY, kind == _RETURN, kind == _RISK],
                          [jnp.zeros((), dt), lam_utility, lam_r, lam_v], lam_s)

    w, lam, ok = _polish(p, w_search, rule, config)
    tol = config.tol
    ok = ok & ((kind != _SHARPE) | (sharpe(w) >= sharpe(w_search) - tol * (1.0 + jnp.abs(sharpe(w_search)))))
    w = jnp.where(ok, jnp.clip(w, 0.0, p.cap), w_search)
    status = jnp.where(ok, OPTIMAL, INACCURATE)

    # targets out of reach, and the ends of the frontier
    w_max = _greedy_max_return(p.mu, p.cap)
    r_max = p.mu @ w_max
    rtol = tol * (1.0 + jnp.abs(r_max))
    vtol = 2.0 * tol * (var(w) + var_target)
    at_max = ((kind == _RETURN) & (r >= r_max - rtol)) | ((kind == _RISK) & (var_target >= var(w_max)))
    infeasible = (((kind == _RETURN) & (r > r_max + rtol))
                  | ((kind == _RISK) & ok & (var(w) > var_target + vtol))  # sigma below the minimum volatility
                  | ((kind == _SHARPE) & (jnp.max(p.mu) <= rf)))
    w = jnp.where(at_max, w_max, w)
    status = jnp.where(infeasible, INFEASIBLE, jnp.where(at_max, OPTIMAL, status))
    return w, status.astype(jnp.int32)


# ------------------------------------------------------------------------------------- public API


def _check(fn, expected_returns, cov, cap):
    """Checks the inputs; returns `(n, cap as an [n] vector)` (one compiled program for scalar and vector caps)."""
    n = checks.check_cov(fn, cov)
    if expected_returns is not None:
        checks.check_vector(fn, expected_returns, n, "expected_returns")
    checks.check_cap(fn, cap, n)
    dtype = jnp.result_type(jnp.asarray(cov).dtype, jnp.float32)
    return n, jnp.broadcast_to(jnp.asarray(cap, dtype), (n,))


def min_volatility(cov, cap=1.0, *, config: SolverConfig = SolverConfig()) -> OptimizeResult:
    """Minimum-volatility long-only weights: `argmin_{w in W} w' cov w` (PyPortfolioOpt `min_volatility`).

    Args:
        cov: `[N, N]` covariance (PSD).
        cap: per-asset upper bound, a scalar or `[N]` (`weight_bounds=(0, cap)`), `sum(cap) >= 1`.
        config: solver iteration counts (static).

    Returns:
        `OptimizeResult` with `[N]` weights and status OPTIMAL (or INACCURATE).

    Raises:
        ValueError: for bad concrete input (see the module docstring).
    """
    n, cap = _check("min_volatility", None, cov, cap)
    mu = np.zeros((n,), jnp.result_type(jnp.asarray(cov).dtype, jnp.float32))
    return OptimizeResult(*_solve(_MIN_VOLATILITY, mu, cov, cap, 0.0, config))


def max_quadratic_utility(expected_returns, cov, risk_aversion=1.0, cap=1.0, *,
                          config: SolverConfig = SolverConfig()) -> OptimizeResult:
    """Maximum quadratic utility: `argmax_{w in W} mu'w - delta/2 w' cov w` (PyPortfolioOpt `max_quadratic_utility`).

    Args:
        expected_returns: `[N]` expected returns `mu`.
        cov: `[N, N]` covariance in the same units.
        risk_aversion: `delta > 0`, scalar.
        cap: per-asset upper bound, a scalar or `[N]`.
        config: solver iteration counts (static).

    Returns:
        `OptimizeResult` with `[N]` weights and status OPTIMAL (or INACCURATE).

    Raises:
        ValueError: for bad concrete input (see the module docstring).
    """
    _, cap = _check("max_quadratic_utility", expected_returns, cov, cap)
    checks.check_scalar("max_quadratic_utility", risk_aversion, "risk_aversion", positive=True)
    return OptimizeResult(*_solve(_UTILITY, expected_returns, cov, cap, risk_aversion, config))


def efficient_return(expected_returns, cov, target_return, cap=1.0, *,
                     config: SolverConfig = SolverConfig()) -> OptimizeResult:
    """The Markowitz portfolio: `argmin_{w in W} w' cov w  s.t.  mu'w >= r` (PyPortfolioOpt `efficient_return`).

    A target at or below the minimum-volatility portfolio's return gives that portfolio (the constraint is
    slack); a target equal to the largest achievable return gives `max_return`'s weights; a target above it
    gives status INFEASIBLE and `max_return`'s weights.

    Args:
        expected_returns: `[N]` expected returns `mu`.
        cov: `[N, N]` covariance in the same units.
        target_return: `r`, scalar, in the units of `mu`.
        cap: per-asset upper bound, a scalar or `[N]`.
        config: solver iteration counts (static).

    Returns:
        `OptimizeResult` with `[N]` weights and status.

    Raises:
        ValueError: for bad concrete input (see the module docstring).
    """
    _, cap = _check("efficient_return", expected_returns, cov, cap)
    checks.check_scalar("efficient_return", target_return, "target_return")
    return OptimizeResult(*_solve(_RETURN, expected_returns, cov, cap, target_return, config))


def efficient_risk(expected_returns, cov, target_volatility, cap=1.0, *,
                   config: SolverConfig = SolverConfig()) -> OptimizeResult:
    """Maximum return for a volatility budget: `argmax_{w in W} mu'w  s.t.  w' cov w <= sigma^2`
    (PyPortfolioOpt `efficient_risk`).

    A budget at or above the maximum-return portfolio's volatility gives `max_return`'s weights. A budget
    below the smallest achievable volatility (the capped long-only minimum-volatility portfolio's) gives
    status INFEASIBLE and the minimum-volatility weights.

    Args:
        expected_returns: `[N]` expected returns `mu`.
        cov: `[N, N]` covariance in the same units.
        target_volatility: `sigma > 0`, scalar (a standard deviation, not a variance).
        cap: per-asset upper bound, a scalar or `[N]`.
        config: solver iteration counts (static).

    Returns:
        `OptimizeResult` with `[N]` weights and status.

    Raises:
        ValueError: for bad concrete input (see the module docstring).
    """
    _, cap = _check("efficient_risk", expected_returns, cov, cap)
    checks.check_scalar("efficient_risk", target_volatility, "target_volatility", positive=True)
    return OptimizeResult(*_solve(_RISK, expected_returns, cov, cap, target_volatility, config))


def max_sharpe(expected_returns, cov, risk_free_rate=0.0, cap=1.0, *,
               config: SolverConfig = SolverConfig()) -> OptimizeResult:
    """The tangency portfolio: `argmax_{w in W} (mu'w - rf) / sqrt(w' cov w)` (PyPortfolioOpt `max_sharpe`).

    Solved along the frontier: bisection on t for the point where `lambda (mu'w - rf) = w' cov w` (the
    tangency condition; the ratio is quasi-concave along the frontier), then the exact tangency on the
    identified face. This is the portfolio of PyPortfolioOpt's homogenised QP. When no expected return
    exceeds `rf` (traced input; concrete input raises) the status is INFEASIBLE.

    Args:
        expected_returns: `[N]` expected returns `mu`.
        cov: `[N, N]` covariance in the same units.
        risk_free_rate: `rf`, scalar, in the units of `mu`.
        cap: per-asset upper bound, a scalar or `[N]`.
        config: solver iteration counts (static).

    Returns:
        `OptimizeResult` with `[N]` weights and status.

    Raises:
        ValueError: for bad concrete input (see the module docstring).
    """
    _, cap = _check("max_sharpe", expected_returns, cov, cap)
    checks.check_scalar("max_sharpe", risk_free_rate, "risk_free_rate")
    if checks.concrete(expected_returns, risk_free_rate):
        if float(np.max(np.asarray(expected_returns))) <= float(risk_free_rate):
            raise ValueError("max_sharpe: at least one expected return must exceed the risk-free rate "
                             f"({float(risk_free_rate)}); the tangency portfolio is undefined otherwise")
    return OptimizeResult(*_solve(_SHARPE, expected_returns, cov, cap, risk_free_rate, config))


@jax.jit
def _max_return(mu, cap):
    mu = jnp.asarray(mu)
    mu = mu.astype(jnp.result_type(mu.dtype, jnp.float32))
    return _greedy_max_return(mu, jnp.broadcast_to(jnp.asarray(cap, mu.dtype), mu.shape))


def max_return(expected_returns, cap=1.0) -> Array:
    """Maximum-return weights on W, an LP solved exactly: fill the assets by decreasing `mu` up to their caps.

    Ties in `mu` are broken by index (PyPortfolioOpt's `_max_return` may split them differently).

    Args:
        expected_returns: `[N]`.
        cap: per-asset upper bound, a scalar or `[N]`.

    Returns:
        `[N]` weights.

    Raises:
        ValueError: for bad concrete input.
    """
    shape = jnp.shape(expected_returns)
    if len(shape) != 1:
        raise ValueError(f"max_return: expected_returns must be an [N] vector; got shape {shape}")
    checks.check_vector("max_return", expected_returns, shape[0], "expected_returns")
    checks.check_cap("max_return", cap, shape[0])
    return _max_return(expected_returns, cap)
