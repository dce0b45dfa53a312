"""Risk parity (equal risk contribution) and risk budgeting, long-only, in pure JAX.

The risk contribution of asset i to a portfolio w is its share of the variance,

    RC_i(w) = w_i (cov w)_i / (w' cov w),          sum_i RC_i = 1,

and the risk-budgeting portfolio for budgets b (b_i > 0, normalised to sum 1; equal budgets give the equal
risk contribution, ERC, portfolio) is the long-only w with RC_i(w) = b_i. It is unique and is found from the
strictly convex problem (Spinu 2013; Roncalli 2013)

    y* = argmin_{y > 0}  1/2 y' cov y - sum_i b_i log y_i,         w = y* / sum(y*),

whose optimality condition `y_i (cov y)_i = b_i` is the budget equation up to scale. It is solved by damped
Newton steps on the self-concordant `f / min(b)`: step `1 / (1 + lambda)` with lambda the Newton decrement,
which keeps y > 0 and converges quadratically once lambda < 1/4, from `y_i = sqrt(b_i / cov_ii)` (the
solution when cov is diagonal), for a fixed number of iterations: jittable and vmappable over a leading
batch of covariances (`jax.vmap(risk_budgeting)(covs)`), `iters` static. The covariance is scaled by
`trace(cov) / N` first (w does not depend on the scale), so float32 sees numbers of order one.
PyPortfolioOpt has no ERC optimiser; the tests compare with cvxpy on the same convex problem.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.portfolio import checks

Array = jax.Array

__all__ = ["RiskParityResult", "risk_budgeting", "risk_contributions"]


class RiskParityResult(NamedTuple):
    """Risk-budgeting weights and a convergence check.

    Attributes:
        weights: `[N]` long-only weights summing to 1.
        risk_contributions: `[N]` RC_i(w), which sum to 1.
        converged: bool: `max_i |RC_i - b_i| <= tol` (the budgets are met).
    """

    weights: Array
    risk_contributions: Array
    converged: Array


@jax.jit
def risk_contributions(weights, cov) -> Array:
    """Fractional risk contributions `RC_i = w_i (cov w)_i / (w' cov w)`.

    Args:
        weights: `[..., N]`.
        cov: `[..., N, N]`.

    Returns:
        `[..., N]`, summing to 1 over the last axis.
    """
    w = jnp.asarray(weights)
    marginal = jnp.einsum("...ij,...j->...i", jnp.asarray(cov), w)
    contrib = w * marginal
    return contrib / jnp.sum(contrib, axis=-1, keepdims=True)


@functools.partial(jax.jit, static_argnames=("iters",))
def _risk_parity(cov, budgets, iters, tol):
    cov = jnp.asarray(cov)
    cov = cov.astype(jnp.result_type(cov.dtype, jnp.float32))
    n = cov.shape[-1]
    sig = 0.5 * (cov + cov.T) / (jnp.trace(cov) / n)
    b = jnp.broadcast_to(jnp.asarray(budgets, sig.dtype), (n,))
    b = b / jnp.sum(b)
    scale = 1.0 / jnp.min(b)  # f * scale is self-concordant (each log term has weight >= 1)

    def body(_, y):
        grad = sig @ y - b / y
        hess = sig + jnp.diag(b / (y * y))
        step = jnp.linalg.solve(hess, grad)
        decrement = jnp.sqrt(jnp.maximum(scale * jnp.vdot(grad, step), 0.0))
        y_new = y - step / (1.0 + decrement)
        return jnp.where(y_new > 0, y_new, 0.5 * y)  # never taken for a self-concordant step; a guard

    y = jax.lax.fori_loop(0, iters, body, jnp.sqrt(b / jnp.diag(sig)))
    w = y / jnp.sum(y)
    rc = risk_contributions(w, sig)
    converged = jnp.all(jnp.isfinite(w)) & (jnp.max(jnp.abs(rc - b)) <= tol)
    return w, rc, converged


def risk_budgeting(cov, budgets=None, *, iters: int = 40, tol: float = 1e-5) -> RiskParityResult:
    """Long-only risk-budgeting weights: `RC_i(w) = b_i` (equal risk contribution when `budgets` is None).

        y* = argmin_{y > 0} 1/2 y' cov y - sum_i b_i log y_i,   w = y* / sum(y*)

    Args:
        cov: `[N, N]` covariance, positive definite on the positive orthant (PSD with a positive diagonal).
        budgets: `[N]` positive risk budgets (normalised to sum 1), or a scalar; None: equal budgets 1/N.
        iters: damped Newton iterations (static).
        tol: tolerance of the `converged` flag on `max |RC - b|`.

    Returns:
        `RiskParityResult(weights [N], risk_contributions [N], converged [])`.

    Raises:
        ValueError: for bad concrete input (cov not square, symmetric, PSD or finite; a non-positive
            variance; budgets not positive or of the wrong shape).
    """
    fn = "risk_budgeting"
    n = checks.check_cov(fn, cov)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"{fn}: iters must be a positive integer; got {iters!r}")
    if checks.concrete(cov) and np.any(np.diag(np.asarray(cov)) <= 0):
        raise ValueError(f"{fn}: every asset needs a positive variance (the diagonal of cov)")
    if budgets is None:
        budgets = 1.0
    elif np.shape(budgets) not in ((), (n,)):
        raise ValueError(f"{fn}: budgets must be a scalar or a ({n},) vector; got shape {np.shape(budgets)}")
    elif checks.concrete(budgets):
        b = np.asarray(budgets, dtype=np.float64)
        if not np.all(np.isfinite(b)) or np.any(b <= 0):
            raise ValueError(f"{fn}: budgets must be positive and finite; got {b.tolist()}")
    return RiskParityResult(*_risk_parity(cov, budgets, iters, tol))
