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
than `_DIRECT_WINDOW` are split into blocks of `b ~ sqrt(w)` bars whose centred co-moments are
merged with the parallel-axis formula of Chan, Golub & LeVeque (1979),

    M_xy = sum_j M_xy^(j) + sum_j n_j (mx^(j) - mx)(my^(j) - my),

so the work per output element is `O(b + w / b) = O(sqrt(w))`, with no `[T, window]` gathers and
no prefix sums (float32 partial sums over 1e6 bars are inaccurate, and XLA:CPU lowers `cumsum`
to a slow reduce-window tree). Long panels are processed in row chunks (`_rolling_apply`) of
~4M elements per intermediate array, so peak memory is the output plus a few hundred MB
whatever the length.

The windowed-sum helpers here (`_lagged`, `_window_sum`, `_rolling_sum`, with `materialise` from
`trading_jax.features.rolling`,
`_centred`, `_comoment`, `_pad_warmup`, `_rolling_apply`) are private and shared with
`trading_jax.features.microstructure` and `trading_jax.features.spectral`.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from trading_jax.features.rolling import as_float as _as_float
from trading_jax.features.rolling import check_window as _check_window
from trading_jax.features.rolling import materialise as _materialise

__all__ = [
    "correlation_warmup",
    "rolling_correlation",
    "rolling_correlation_matrix",
    "mean_pairwise_correlation",
]

#: Windows up to this many bars are reduced in a single fused pass over lagged copies.
_DIRECT_WINDOW = 16


# ----------------------------------------------------------------------------------------------
# Windowed-sum primitives (private; also used by microstructure.py)
#
# Convention: a "tail" array of length L holds the last L rows of a series of T rows (rows
# T - L .. T - 1). Window computations produce tails (only the rows whose window is complete) and
# `_pad_warmup` puts the NaN warm-up rows in front at the end. Lags are static slices, which XLA
# fuses into one loop (padding-based lags get materialised one by one and are ~10x slower).
# ----------------------------------------------------------------------------------------------


def _lagged(a, k: int, m: int):
    """The last `m` rows of `a[t - k]` (values `k` rows back), from the tail array `a`."""
    n = a.shape[0]
    if k < 0 or m + k > n:
        raise ValueError(f"lag {k} over {m} rows needs {m + k} rows, have {n}")
    return a[n - m - k : n - k]


def _window_sum(a, n: int, m: int, stride: int = 1, offset: int = 0):
    """Last `m` rows of `sum_{i < n} a[t - offset - i * stride]`: one fused pass over `n` slices."""
    total = _lagged(a, offset, m)
    for i in range(1, n):
        total = total + _lagged(a, offset + i * stride, m)
    return total


def _split_window(window: int) -> tuple[int, int, int]:
    """`window = q * b + r` with block size `b ~ sqrt(window)` (`b = window`, `q = 1` if small)."""
    if window <= _DIRECT_WINDOW:
        return window, 1, 0
    b = max(2, math.isqrt(window))
    return b, window // b, window % b


def _rolling_sum(x, window: int):
    """`sum_{u = t - window + 1}^{t} x[u]` for rows `t >= window - 1`: a tail of `T - window + 1`.

    Windows up to `_DIRECT_WINDOW` are one fused pass; larger ones are two-level: block sums over
    `b ~ sqrt(window)` bars (materialised), then a dilated sum of `q` blocks plus `r` single bars.
    The float32 error is that of summing `window` numbers directly; it does not grow with `T`.
    """
    m = x.shape[0] - window + 1
    b, q, r = _split_window(window)
    if q == 1 and r == 0:
        return _window_sum(x, b, m)
    blocks = _materialise(_window_sum(x, b, x.shape[0] - b + 1))
    total = _window_sum(blocks, q, m, stride=b)
    if r:
        total = total + _window_sum(x, r, m, offset=q * b)
    return total


def _pad_warmup(tail, n_rows: int):
    """`[n_rows, ...]`: NaN rows in front of the tail array (the warm-up), then the tail."""
    pad = n_rows - tail.shape[0]
    if pad <= 0:
        return tail[tail.shape[0] - n_rows :]
    front = jnp.full((pad,) + tail.shape[1:], jnp.nan, tail.dtype)
    return jnp.concatenate([front, tail], axis=0)


def _rolling_apply(fn, x, halo: int, chunk: int):
    """Apply a rolling `fn` to every row of `x` chunk by chunk; rows `t < halo` become NaN.

    `fn` maps a slab of `n + halo` rows to the tail of its last `n` rows (a pytree of arrays):
    its window reaches `halo` rows back. `x` is padded in front with `halo` copies of row 0 (so
    every row has a full, finite slab), then processed in chunks of `chunk` output rows by a
    `fori_loop` that writes each chunk in place into the preallocated output (the last chunk is
    shifted back to end at the last row, recomputing a few rows identically). Intermediates are
    therefore `O(chunk)` and the only `O(T)` allocation is the output itself. The warm-up rows,
    computed from the padding, are then overwritten with NaN.
    """
    n_rows = x.shape[0]
    x = jnp.concatenate([jnp.broadcast_to(x[:1], (halo,) + x.shape[1:]), x], axis=0)
    if n_rows <= chunk:
        out = fn(x)
    else:
        sample = jax.eval_shape(fn, jax.ShapeDtypeStruct((chunk + halo,) + x.shape[1:], x.dtype))
        init = jax.tree.map(lambda s: jnp.full((n_rows,) + s.shape[1:], jnp.nan, s.dtype), sample)

        def body(i, out):
            start = jnp.minimum(i * chunk, n_rows - chunk)
            part = fn(lax.dynamic_slice_in_dim(x, start, chunk + halo, axis=0))
            return jax.tree.map(
                lambda o, p: lax.dynamic_update_slice_in_dim(o, p, start, axis=0), out, part
            )

        out = lax.fori_loop(0, -(-n_rows // chunk), body, init)
    return jax.tree.map(lambda o: o.at[:halo].set(jnp.nan), out)


def _chunk_rows(elements_per_row: int) -> int:
    """Rows per chunk so that one `[chunk, ...]` intermediate holds ~4M elements (16 MB f32)."""
    return max(1024, (1 << 22) // max(1, elements_per_row))


class _Centred(NamedTuple):
    """Per-series terms whose pairwise products sum to the window co-moment (see `_centred`).

    `block`: centred deviations inside blocks of `b` bars, tails of `T - b + 1` rows (empty when
    the window is reduced directly); `cross`: terms aligned on the output rows, tails of
    `T - window + 1` rows.
    """

    block: tuple
    cross: tuple


def _centred_block(x, size: int, m: int):
    """Offset `o = mean(x[t - size + 1 .. t]) - x[t]` and the deviations `x[t - k] - mean`.

    Last `m` rows, `k < size`. Deviations are formed as `(x[t - k] - x[t]) - o`: differences of
    nearby values of one magnitude are exact, so no digits are lost to a large common offset.
    """
    x0 = _lagged(x, 0, m)
    d = [_lagged(x, k, m) - x0 for k in range(1, size)]
    offset = sum(d) / size if d else jnp.zeros_like(x0)
    return offset, [-offset] + [dk - offset for dk in d]


def _centred(x, window: int) -> _Centred:
    """Terms `e(x)` with `sum_{u in W_t} (x_u - mx_t)(y_u - my_t) = _comoment(e(x), e(y))`.

    Directly (`window <= _DIRECT_WINDOW`): the `window` deviations from the window mean.
    Otherwise the window is `q` blocks of `b` bars plus `r` older bars (`_split_window`), merged
    with the parallel-axis theorem (Chan, Golub & LeVeque 1979):

        M = sum_{j<q} M_b[t - j b] + sum_j n_j (o_j - o)(o'_j - o') + M_r,

    where `M_b` is a block co-moment (from the block deviations), `o_j` the mean of block `j`
    relative to `x[t]` (`(x[t - j b] - x[t]) + offset_b[t - j b]`), `o` their weighted mean and
    `M_r` the co-moment of the `r` oldest bars. `cross` holds `sqrt(n_j) (o_j - o)` and the
    deviations of those `r` bars.
    """
    n_rows = x.shape[0]
    m = n_rows - window + 1
    b, q, r = _split_window(window)
    if q == 1 and r == 0:
        return _Centred((), tuple(_centred_block(x, window, m)[1]))
    offset_b, dev_b = _centred_block(x, b, n_rows - b + 1)
    x0 = _lagged(x, 0, m)
    offsets = [_lagged(x, j * b, m) - x0 + _lagged(offset_b, j * b, m) for j in range(q)]
    counts = [b] * q
    dev_r = []
    if r:
        offset_r, dev_r = _centred_block(x[: n_rows - q * b], r, m)
        offsets.append(_lagged(x, q * b, m) - x0 + offset_r)
        counts.append(r)
    mean = sum(n * o for n, o in zip(counts, offsets)) / window
    spread = [math.sqrt(n) * (o - mean) for n, o in zip(counts, offsets)]
    return _Centred(tuple(dev_b), tuple(spread) + tuple(dev_r))


def _comoment(ex: _Centred, ey: _Centred, window: int, product):
    """`sum_{u in W_t} (x_u - mx_t)(y_u - my_t)` on the output rows, from `_centred` terms.

    `product(u, v)` pairs the terms: `u * v` element by element, or an outer product over assets.
    """
    total = sum(product(u, v) for u, v in zip(ex.cross, ey.cross))
    if ex.block:
        b, q, _ = _split_window(window)
        m = ex.cross[0].shape[0]
        block = _materialise(sum(product(u, v) for u, v in zip(ex.block, ey.block)))
        total = total + _window_sum(block, q, m, stride=b)
    return total


def _elementwise(u, v):
    return u * v


def _outer(u, v):
    return u[:, :, None] * v[:, None, :]


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
    ex, ey = _centred(x, window), _centred(y, window)
    sx = _inverse_scale(_comoment(ex, ex, window, _elementwise))
    sy = _inverse_scale(_comoment(ey, ey, window, _elementwise))
    cxy = _comoment(ex, ey, window, _elementwise)
    return jnp.clip(cxy * sx * sy, -1.0, 1.0)


def _matrix_tail(returns, window: int):
    """`[T - window + 1, A, A]` rolling correlation matrices of a `[T, A]` slab (diagonal 1)."""
    e = _centred(returns, window)
    # Per-asset terms are reused by A^2 pairs: materialise them instead of recomputing per pair.
    e = _Centred(*_materialise(e.block, e.cross))
    scale = _materialise(_inverse_scale(_comoment(e, e, window, _elementwise)))
    corr = _comoment(e, e, window, _outer) * scale[:, :, None] * scale[:, None, :]
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
    corr = _rolling_apply(
        lambda slab: _correlation_tail(slab[:, 0], slab[:, 1], window),
        xy,
        halo=window - 1,
        chunk=_chunk_rows(xy.shape[2]),
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
    return _rolling_apply(
        lambda slab: _matrix_tail(slab, window),
        returns,
        halo=window - 1,
        chunk=_chunk_rows(n_assets * n_assets),
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
    return _rolling_apply(
        lambda slab: _mean_pairwise_tail(slab, window),
        returns,
        halo=window - 1,
        chunk=_chunk_rows(n_assets * n_assets),
    )
