"""Rolling cross-asset dependence: pairwise and matrix correlations over trailing windows.

All functions take time-first arrays `[time, ...]`, are jittable (window sizes are static Python
ints) and are causal: the value at row `t` uses rows `t - window + 1 .. t` only. Rows
`t < window - 1` (the warm-up, `correlation_warmup(window)`) are NaN; for finite input every later
row is finite. A NaN input makes NaN exactly the windows that contain it.

Definition. For the window `W_t = {t - w + 1, ..., t}` of `w` bars,

    corr_t(x, y) = sum_{u in W_t} (x_u - mx_t)(y_u - my_t)
                   / sqrt(sum_{u in W_t} (x_u - mx_t)^2 * sum_{u in W_t} (y_u - my_t)^2),

with `mx_t`, `my_t` the window means: the sample (Pearson) correlation, as
`pandas.Series.rolling(w).corr`. A series that is constant over the window (e.g. zero returns
through a run of no-trade bars) has no defined correlation; it is reported as 0 with every other
series and 1 with itself, which keeps each `[asset, asset]` matrix a valid (positive
semi-definite) correlation matrix. Outputs are clipped to `[-1, 1]`.

Numerics. Co-moments are never formed as `E[xy] - E[x]E[y]`, which in float32 loses every digit
on prices with a large offset (1e4 + noise of std 1: both terms agree to ~8 digits). Deviations
are taken from a value of the same window (`x[t - k] - x[t]`, exact for nearby values by
Sterbenz' lemma), so the only rounding is that of the centred sums themselves. Windows longer
than `tails.DIRECT_WINDOW` are split into blocks of `b ~ sqrt(w)` bars whose centred co-moments are
merged with the parallel-axis formula of Chan, Golub & LeVeque (1979),

    M_xy = sum_j M_xy^(j) + sum_j n_j (mx^(j) - mx)(my^(j) - my),

so the work per output element is `O(b + w / b) = O(sqrt(w))`, with no `[T, window]` gathers and
no prefix sums (float32 partial sums over 1e6 bars are inaccurate, and XLA:CPU lowers `cumsum`
to a slow reduce-window tree). Long panels are processed in row chunks (`tails.rolling_apply`) of
~4M elements per intermediate array, so peak memory is the output plus a few hundred MB
whatever the length.

The windowed-sum helpers (`lagged`, `window_sum`, `rolling_sum_tail`, `centred`, `comoment`, `pad_warmup`,
`rolling_apply`) live in `trading_jax.features.tails`, shared with `trading_jax.features.microstructure` and
`trading_jax.features.spectral`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from trading_jax.features.rolling import as_float as _as_float
from trading_jax.features.rolling import check_window as _check_window
from trading_jax.features.rolling import materialise as _materialise
from trading_jax.features.tails import (
    Centred,
    centred,
    chunk_rows,
    comoment,
    elementwise,
    outer,
    rolling_apply,
)

__all__ = [
    "correlation_warmup",
    "rolling_correlation",
    "rolling_correlation_matrix",
    "mean_pairwise_correlation",
]

def _inverse_scale(comoment_xx):
    """`1 / sqrt(comoment_xx)`, and 0 for a series constant over the window.

    Deviations are exact, so a constant window has a co-moment of exactly 0 and a non-constant
    one a positive co-moment: no tolerance is involved. A zero scale makes that series'
    correlations 0; a NaN co-moment (NaN input in the window) stays NaN.
    """
    positive = comoment_xx > 0
    scale = jnp.where(positive, lax.rsqrt(jnp.where(positive, comoment_xx, 1.0)), 0.0)
    return jnp.where(jnp.isnan(comoment_xx), jnp.nan, scale)


def _correlation_tail(x, y, window: int):
    """Element-wise rolling correlation of two equal-shape arrays, as a tail."""
    ex, ey = centred(x, window), centred(y, window)
    sx = _inverse_scale(comoment(ex, ex, window, elementwise))
    sy = _inverse_scale(comoment(ey, ey, window, elementwise))
    cxy = comoment(ex, ey, window, elementwise)
    return jnp.clip(cxy * sx * sy, -1.0, 1.0)


def _matrix_tail(returns, window: int):
    """`[T - window + 1, A, A]` rolling correlation matrices of a `[T, A]` slab (diagonal 1)."""
    e = centred(returns, window)
    # Per-asset terms are reused by A^2 pairs: materialise them instead of recomputing per pair.
    e = Centred(*_materialise(e.block, e.cross))
    scale = _materialise(_inverse_scale(comoment(e, e, window, elementwise)))
    corr = comoment(e, e, window, outer) * scale[:, :, None] * scale[:, None, :]
    eye = jnp.eye(returns.shape[1], dtype=bool)
    diagonal = jnp.where(jnp.isnan(scale), jnp.nan, 1.0)[:, :, None]  # NaN windows stay NaN
    return jnp.where(eye, diagonal, jnp.clip(corr, -1.0, 1.0))


def _mean_pairwise_tail(returns, window: int):
    n_assets = returns.shape[1]
    corr = _matrix_tail(returns, window)
    off_diagonal = jnp.where(jnp.eye(n_assets, dtype=bool), 0.0, corr)
    return jnp.sum(off_diagonal, axis=2) / (n_assets - 1)


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def correlation_warmup(window: int) -> int:
    """First valid row of the rolling correlations: `window - 1` (rows before it are NaN)."""
    return _check_window(window, minimum=2) - 1


@functools.partial(jax.jit, static_argnames=("window",))
def rolling_correlation(x, y, window: int):
    """Pearson correlation of `x` and `y` over the trailing `window` bars, element by element.

    `corr_t = sum (x_u - mx_t)(y_u - my_t) / sqrt(sum (x_u - mx_t)^2 sum (y_u - my_t)^2)` over
    `u = t - window + 1 .. t` (the definition of `pandas.Series.rolling(window).corr`). The
    function correlates the series it is given: pass returns to correlate returns. Prices with a
    large offset are fine (centred computation, accurate in float32).

    Args:
        x: `[time, ...]` series.
        y: same shape as `x`.
        window: bars per window (static int, >= 2).

    Returns:
        `[time, ...]` correlations in `[-1, 1]`: NaN for `t < window - 1` (warm-up,
        `correlation_warmup(window)`), 0 where either series is constant over the window.
    """
    window = _check_window(window, minimum=2)
    x, y = _as_float(x), _as_float(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    dtype = jnp.result_type(x, y)
    n_rows = x.shape[0]
    if n_rows < window:
        return jnp.full(x.shape, jnp.nan, dtype)
    xy = jnp.stack([x.reshape(n_rows, -1), y.reshape(n_rows, -1)], axis=1).astype(dtype)
    corr = rolling_apply(
        lambda slab: _correlation_tail(slab[:, 0], slab[:, 1], window),
        xy,
        halo=window - 1,
        chunk=chunk_rows(xy.shape[2]),
    )
    return corr.reshape(x.shape)


def _check_panel(returns):
    returns = _as_float(returns)
    if returns.ndim != 2:
        raise ValueError(f"returns must be [time, asset], got shape {returns.shape}")
    return returns


@functools.partial(jax.jit, static_argnames=("window",))
def rolling_correlation_matrix(returns, window: int):
    """Rolling correlation matrix of a panel over the trailing `window` bars.

    Entry `[t, i, j]` is `rolling_correlation(returns[:, i], returns[:, j], window)[t]`; the
    diagonal is 1. The output alone is `T * A^2` floats (1 GB for 1e6 x 16 in float32); use
    `mean_pairwise_correlation` when a per-asset summary is enough.

    Args:
        returns: `[time, asset]` panel (returns, or any series).
        window: bars per window (static int, >= 2).

    Returns:
        `[time, asset, asset]` symmetric correlation matrices, NaN for `t < window - 1`
        (`correlation_warmup(window)`). A series constant over the window has correlation 0
        with the others (and 1 with itself).
    """
    window = _check_window(window, minimum=2)
    returns = _check_panel(returns)
    n_rows, n_assets = returns.shape
    if n_rows < window:
        return jnp.full((n_rows, n_assets, n_assets), jnp.nan, returns.dtype)
    return rolling_apply(
        lambda slab: _matrix_tail(slab, window),
        returns,
        halo=window - 1,
        chunk=chunk_rows(n_assets * n_assets),
    )


@functools.partial(jax.jit, static_argnames=("window",))
def mean_pairwise_correlation(returns, window: int):
    """Each asset's mean rolling correlation with the other assets.

    `mpc[t, i] = sum_{j != i} corr[t, i, j] / (A - 1)`, with `corr` as in
    `rolling_correlation_matrix` (computed chunk by chunk; the `[T, A, A]` matrices are never
    held in memory at once).

    Args:
        returns: `[time, asset]` panel with `A >= 2` assets.
        window: bars per window (static int, >= 2).

    Returns:
        `[time, asset]`, NaN for `t < window - 1` (`correlation_warmup(window)`).
    """
    window = _check_window(window, minimum=2)
    returns = _check_panel(returns)
    n_rows, n_assets = returns.shape
    if n_assets < 2:
        raise ValueError("mean_pairwise_correlation needs at least two assets")
    if n_rows < window:
        return jnp.full(returns.shape, jnp.nan, returns.dtype)
    return rolling_apply(
        lambda slab: _mean_pairwise_tail(slab, window),
        returns,
        halo=window - 1,
        chunk=chunk_rows(n_assets * n_assets),
    )
