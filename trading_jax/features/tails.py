"""Windowed "tail" computations shared by the rolling features (cross-asset, microstructure, spectral).

A "tail" array of length L holds the last L rows of a series of T rows (rows T - L .. T - 1). Window
computations produce tails (only the rows whose window is complete) and `pad_warmup` puts the NaN warm-up
rows in front at the end. Lags are static slices, which XLA fuses into one loop (padding-based lags get
materialised one by one and are ~10x slower). Windows longer than `DIRECT_WINDOW` are split into blocks of
`b ~ sqrt(w)` bars (`split_window`), so the work per output element is O(sqrt(w)); long panels go through
`rolling_apply` in row chunks of ~4M elements (`chunk_rows`). `centred` / `comoment` give exact-offset
co-moments (see `trading_jax.features.cross_asset` for the numerics).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from trading_jax.features.rolling import materialise

__all__ = ["DIRECT_WINDOW", "lagged", "window_sum", "split_window", "rolling_sum_tail", "pad_warmup",
           "rolling_apply", "chunk_rows", "Centred", "centred_block", "centred", "comoment", "elementwise", "outer"]


#: Windows up to this many bars are reduced in a single fused pass over lagged copies.
DIRECT_WINDOW = 16


# ----------------------------------------------------------------------------------------------
# Windowed-sum primitives
#
# Convention: a "tail" array of length L holds the last L rows of a series of T rows (rows
# T - L .. T - 1). Window computations produce tails (only the rows whose window is complete) and
# `pad_warmup` puts the NaN warm-up rows in front at the end. Lags are static slices, which XLA
# fuses into one loop (padding-based lags get materialised one by one and are ~10x slower).
# ----------------------------------------------------------------------------------------------


def lagged(a, k: int, m: int):
    """The last `m` rows of `a[t - k]` (values `k` rows back), from the tail array `a`."""
    n = a.shape[0]
    if k < 0 or m + k > n:
        raise ValueError(f"lag {k} over {m} rows needs {m + k} rows, have {n}")
    return a[n - m - k : n - k]


def window_sum(a, n: int, m: int, stride: int = 1, offset: int = 0):
    """Last `m` rows of `sum_{i < n} a[t - offset - i * stride]`: one fused pass over `n` slices."""
    total = lagged(a, offset, m)
    for i in range(1, n):
        total = total + lagged(a, offset + i * stride, m)
    return total


def split_window(window: int) -> tuple[int, int, int]:
    """`window = q * b + r` with block size `b ~ sqrt(window)` (`b = window`, `q = 1` if small)."""
    if window <= DIRECT_WINDOW:
        return window, 1, 0
    b = max(2, math.isqrt(window))
    return b, window // b, window % b


def rolling_sum_tail(x, window: int):
    """`sum_{u = t - window + 1}^{t} x[u]` for rows `t >= window - 1`: a tail of `T - window + 1`.

    Windows up to `DIRECT_WINDOW` are one fused pass; larger ones are two-level: block sums over
    `b ~ sqrt(window)` bars (materialised), then a dilated sum of `q` blocks plus `r` single bars.
    The float32 error is that of summing `window` numbers directly; it does not grow with `T`.
    """
    m = x.shape[0] - window + 1
    b, q, r = split_window(window)
    if q == 1 and r == 0:
        return window_sum(x, b, m)
    blocks = materialise(window_sum(x, b, x.shape[0] - b + 1))
    total = window_sum(blocks, q, m, stride=b)
    if r:
        total = total + window_sum(x, r, m, offset=q * b)
    return total


def pad_warmup(tail, n_rows: int):
    """`[n_rows, ...]`: NaN rows in front of the tail array (the warm-up), then the tail."""
    pad = n_rows - tail.shape[0]
    if pad <= 0:
        return tail[tail.shape[0] - n_rows :]
    front = jnp.full((pad,) + tail.shape[1:], jnp.nan, tail.dtype)
    return jnp.concatenate([front, tail], axis=0)


def rolling_apply(fn, x, halo: int, chunk: int):
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


def chunk_rows(elements_per_row: int) -> int:
    """Rows per chunk so that one `[chunk, ...]` intermediate holds ~4M elements (16 MB f32)."""
    return max(1024, (1 << 22) // max(1, elements_per_row))


class Centred(NamedTuple):
    """Per-series terms whose pairwise products sum to the window co-moment (see `centred`).

    `block`: centred deviations inside blocks of `b` bars, tails of `T - b + 1` rows (empty when
    the window is reduced directly); `cross`: terms aligned on the output rows, tails of
    `T - window + 1` rows.
    """

    block: tuple
    cross: tuple


def centred_block(x, size: int, m: int):
    """Offset `o = mean(x[t - size + 1 .. t]) - x[t]` and the deviations `x[t - k] - mean`.

    Last `m` rows, `k < size`. Deviations are formed as `(x[t - k] - x[t]) - o`: differences of
    nearby values of one magnitude are exact, so no digits are lost to a large common offset.
    """
    x0 = lagged(x, 0, m)
    d = [lagged(x, k, m) - x0 for k in range(1, size)]
    offset = sum(d) / size if d else jnp.zeros_like(x0)
    return offset, [-offset] + [dk - offset for dk in d]


def centred(x, window: int) -> Centred:
    """Terms `e(x)` with `sum_{u in W_t} (x_u - mx_t)(y_u - my_t) = comoment(e(x), e(y))`.

    Directly (`window <= DIRECT_WINDOW`): the `window` deviations from the window mean.
    Otherwise the window is `q` blocks of `b` bars plus `r` older bars (`split_window`), merged
    with the parallel-axis theorem (Chan, Golub & LeVeque 1979):

        M = sum_{j<q} M_b[t - j b] + sum_j n_j (o_j - o)(o'_j - o') + M_r,

    where `M_b` is a block co-moment (from the block deviations), `o_j` the mean of block `j`
    relative to `x[t]` (`(x[t - j b] - x[t]) + offset_b[t - j b]`), `o` their weighted mean and
    `M_r` the co-moment of the `r` oldest bars. `cross` holds `sqrt(n_j) (o_j - o)` and the
    deviations of those `r` bars.
    """
    n_rows = x.shape[0]
    m = n_rows - window + 1
    b, q, r = split_window(window)
    if q == 1 and r == 0:
        return Centred((), tuple(centred_block(x, window, m)[1]))
    offset_b, dev_b = centred_block(x, b, n_rows - b + 1)
    x0 = lagged(x, 0, m)
    offsets = [lagged(x, j * b, m) - x0 + lagged(offset_b, j * b, m) for j in range(q)]
    counts = [b] * q
    dev_r = []
    if r:
        offset_r, dev_r = centred_block(x[: n_rows - q * b], r, m)
        offsets.append(lagged(x, q * b, m) - x0 + offset_r)
        counts.append(r)
    mean = sum(n * o for n, o in zip(counts, offsets)) / window
    spread = [math.sqrt(n) * (o - mean) for n, o in zip(counts, offsets)]
    return Centred(tuple(dev_b), tuple(spread) + tuple(dev_r))


def comoment(ex: Centred, ey: Centred, window: int, product):
    """`sum_{u in W_t} (x_u - mx_t)(y_u - my_t)` on the output rows, from `centred` terms.

    `product(u, v)` pairs the terms: `u * v` element by element, or an outer product over assets.
    """
    total = sum(product(u, v) for u, v in zip(ex.cross, ey.cross))
    if ex.block:
        b, q, _ = split_window(window)
        m = ex.cross[0].shape[0]
        block = materialise(sum(product(u, v) for u, v in zip(ex.block, ey.block)))
        total = total + window_sum(block, q, m, stride=b)
    return total


def elementwise(u, v):
    return u * v


def outer(u, v):
    return u[:, :, None] * v[:, None, :]
