"""Host-side input checks shared by the portfolio optimisers: one-line ValueErrors naming the argument.

Every check runs only on concrete values: under `jit` or `vmap` the inputs are tracers and the checks are
skipped (the traced functions then report problems through their `status`, never by raising).
"""

from __future__ import annotations

import numbers

import jax
import numpy as np


def concrete(*xs) -> bool:
    """True when no argument is a JAX tracer (so its values can be read on the host)."""
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def check_cov(fn: str, cov, name: str = "cov") -> int:
    """`cov` must be a finite, symmetric, positive semidefinite `[N, N]` matrix; returns N."""
    shape = np.shape(cov)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
        raise ValueError(f"{fn}: {name} must be a square [N, N] covariance matrix; got shape {shape}")
    if not concrete(cov):
        return shape[0]
    c = np.asarray(cov, dtype=np.float64)
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{fn}: {name} contains NaN or inf")
    scale = max(float(np.max(np.abs(c))), 1e-300)
    if np.max(np.abs(c - c.T)) > 1e-5 * scale:
        raise ValueError(f"{fn}: {name} is not symmetric; pass (cov + cov.T) / 2 if that is rounding")
    if np.min(np.linalg.eigvalsh(0.5 * (c + c.T))) < -1e-6 * scale:
        raise ValueError(f"{fn}: {name} is not positive semidefinite (a negative eigenvalue); estimate it with "
                         "sample_covariance or ledoit_wolf, or repair it spectrally")
    return shape[0]


def check_vector(fn: str, x, n: int, name: str) -> None:
    """`x` must be a finite `[n]` vector."""
    shape = np.shape(x)
    if shape != (n,):
        raise ValueError(f"{fn}: {name} must have shape ({n},) to match the covariance; got {shape}")
    if concrete(x) and not np.all(np.isfinite(np.asarray(x, dtype=np.float64))):
        raise ValueError(f"{fn}: {name} contains NaN or inf")


def check_cap(fn: str, cap, n: int) -> None:
    """`cap` (a scalar or `[n]` per-asset upper bound) must lie in [0, 1] and admit weights summing to 1.

    A per-asset cap of 0 keeps that asset out of the portfolio (e.g. an unlisted asset).
    """
    shape = np.shape(cap)
    if shape not in ((), (n,)):
        raise ValueError(f"{fn}: cap must be a scalar or a ({n},) vector of per-asset upper bounds; got shape {shape}")
    if not concrete(cap):
        return
    c = np.broadcast_to(np.asarray(cap, dtype=np.float64), (n,))
    if not np.all(np.isfinite(c)) or np.any(c < 0) or np.any(c > 1):
        raise ValueError(f"{fn}: cap must be in [0, 1]; got {cap!r}")
    if np.sum(c) < 1.0 - 1e-6:
        raise ValueError(f"{fn}: cap * N = {np.sum(c):.6g} < 1, so no long-only weights can sum to 1; raise the cap")


def check_scalar(fn: str, x, name: str, *, positive: bool = False, nonnegative: bool = False) -> None:
    """`x` must be a finite real scalar (and positive / nonnegative when asked)."""
    if not concrete(x):
        if np.shape(x) != ():
            raise ValueError(f"{fn}: {name} must be a scalar; got shape {np.shape(x)}")
        return
    if isinstance(x, bool) or np.shape(x) != () or not isinstance(np.asarray(x).item(), numbers.Real):
        raise ValueError(f"{fn}: {name} must be a real number; got {x!r}")
    v = float(np.asarray(x))
    if not np.isfinite(v):
        raise ValueError(f"{fn}: {name} must be finite; got {v}")
    if positive and v <= 0:
        raise ValueError(f"{fn}: {name} must be positive; got {v}")
    if nonnegative and v < 0:
        raise ValueError(f"{fn}: {name} must be nonnegative; got {v}")
