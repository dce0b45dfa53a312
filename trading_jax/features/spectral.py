"""Spectral and scaling features of price series: Hurst exponent, Fourier spectrum, Haar wavelets.

All functions take time-first close prices `[time, ...]` (trailing axes are assets), are
jittable (window sizes are static Python ints) and causal: the value at row `t` uses bars `<= t`
only. Each output is NaN exactly during its warm-up (given by the `*_warmup` helpers) and finite
afterwards for finite, positive prices; a NaN bar makes NaN exactly the outputs whose window
contains it.

Returns are log returns `r_t = log(close_t / close_{t-1})` (the ratio is formed first, so
float32 keeps full relative precision whatever the price level); `r_0` does not exist, so a
window of `w` returns ending at row `t` needs `t >= w`.

Implementation. Windows are never gathered into `[time, window]` arrays (8 GB for 1e6 x 16
bars and a 128-bar window): every windowed quantity is a static-slice expression that XLA fuses
into one loop, with intermediate statistics materialised where they are read at several lags.
`rolling_hurst` and `rolling_fourier_features` run over row chunks of ~4M elements
(`trading_jax.features.tails.rolling_apply`), so their peak memory is the output plus
~0.3 GB whatever the length; `haar_wavelet_features` needs a few `[T, asset]` arrays.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from trading_jax.features.rolling import as_float, check_window, materialise
from trading_jax.features.tails import chunk_rows, lagged, pad_warmup, rolling_apply, window_sum

__all__ = [
    "hurst_sizes",
    "hurst_warmup",
    "anis_lloyd_expected_rs",
    "rolling_hurst",
    "FourierFeatures",
    "fourier_warmup",
    "rolling_fourier_features",
    "HaarFeatures",
    "haar_warmup",
    "wavelet_warmup",
    "haar_wavelet_features",
]


def _log_returns(close):
    """`[T - 1, M]` log returns `log(c_t / c_{t-1})` of `[T, M]` prices (rows 1..T-1, a tail)."""
    return jnp.log(close[1:] / close[:-1])


def _flatten(close):
    close = as_float(close)
    if close.ndim == 0:
        raise ValueError("close must be [time, ...]")
    return close.reshape(close.shape[0], -1), close.shape


# ----------------------------------------------------------------------------------------------
# Hurst exponent by rescaled range
# ----------------------------------------------------------------------------------------------


def hurst_sizes(window: int, min_size: int = 8) -> tuple[int, ...]:
    """Default sub-window sizes of `rolling_hurst`: powers of two from `min_size` to `window // 2`.

    Every size then has at least two blocks in the window. Needs `window >= 4 * min_size`.
    """
    window = check_window(window)
    sizes = []
    n = min_size
    while n <= window // 2:
        sizes.append(n)
        n *= 2
    if len(sizes) < 2:
        raise ValueError(
            f"window {window} is too short for sizes >= {min_size}: need >= {4 * min_size}"
        )
    return tuple(sizes)


def hurst_warmup(window: int) -> int:
    """First valid row of `rolling_hurst`: `window` (a window of `window` returns ends there)."""
    return check_window(window)


def anis_lloyd_expected_rs(n: int) -> float:
    """Expected R/S of `n` iid Gaussian observations (Anis & Lloyd 1976, Peters 1994 correction).

    `E[R/S]_n = (n - 1/2)/n * Gamma((n-1)/2) / (sqrt(pi) Gamma(n/2)) * sum_{i=1}^{n-1}
    sqrt((n - i)/i)`. The Gamma ratio is evaluated through `lgamma` for every `n`; the
    literature's replacement by `1/sqrt(n pi / 2)` for `n > 340` (Weron 2002, eq. 4) only avoids
    overflow of `Gamma` itself and differs by `O(1/n)`.
    """
    if n < 2:
        raise ValueError("n must be >= 2")
    ratio = math.exp(math.lgamma((n - 1) / 2) - math.lgamma(n / 2)) / math.sqrt(math.pi)
    return (n - 0.5) / n * ratio * sum(math.sqrt((n - i) / i) for i in range(1, n))


def _rescaled_range(r, n: int):
    """R/S of the `n` returns ending at each row, and whether it is defined (tails of `L - n + 1`).

    For the block `x_1..x_n` with mean `m`: `Y_k = sum_{i<=k} (x_i - m)`,
    `R = max_k Y_k - min_k Y_k` (`k = 1..n`), `S = sqrt(sum (x_i - m)^2 / n)` (population std).
    The block is degenerate (R/S undefined) when the returns are constant up to rounding,
    `S <= n * eps * |m|` (exactly `S = 0` for a run of zero returns, e.g. bars without trades).
    One fused two-pass loop over `n` lagged copies; no cumulative sums over the series.
    """
    m_rows = r.shape[0] - n + 1
    xs = [lagged(r, n - 1 - i, m_rows) for i in range(n)]  # oldest .. newest
    mean = sum(xs) / n
    y = xs[0] - mean
    y_max, y_min, ss = y, y, y * y
    for x in xs[1:]:
        d = x - mean
        y = y + d
        y_max, y_min, ss = jnp.maximum(y_max, y), jnp.minimum(y_min, y), ss + d * d
    s = jnp.sqrt(ss / n)
    valid = s > n * jnp.finfo(r.dtype).eps * jnp.abs(mean)
    valid = valid | jnp.isnan(s)  # NaN input propagates instead of being dropped
    rs = jnp.where(valid, (y_max - y_min) / jnp.where(valid, s, 1.0), 0.0)
    return rs, valid.astype(r.dtype)


@functools.partial(jax.jit, static_argnames=("window", "sizes", "anis_lloyd"))
def rolling_hurst(close, window: int = 128, sizes: tuple[int, ...] | None = None,
                  anis_lloyd: bool = True):
    """Hurst exponent of the log returns in the trailing window, by rescaled range (R/S).

    Definition (Hurst 1951; Mandelbrot & Wallis 1969; as in Weron 2002). At row `t` take the
    `w = window` log returns `r_{t-w+1..t}`. For each sub-window size `n` in `sizes`, split the
    most recent `k_n = w // n` blocks of `n` returns (aligned on the window's end; the oldest
    `w - k_n n` returns are unused at that size) and average the blocks' rescaled ranges:

        (R/S)_n = mean over blocks of R/S,   R/S = (max_k Y_k - min_k Y_k) / S,
        Y_k = sum_{i<=k} (x_i - m),  S = sqrt(mean (x_i - m)^2)   (see `_rescaled_range`).

    The raw exponent is the least-squares slope of `log (R/S)_n` on `log n`. With `anis_lloyd`
    (the default), the small-sample bias of R/S is removed as in Anis & Lloyd (1976) / Peters
    (1994): `H = 0.5 + slope of (log (R/S)_n - log E[R/S]_n)` with `E[R/S]_n` from
    `anis_lloyd_expected_rs`, so that iid returns give `H ~ 0.5`. `H > 0.5`: persistent
    (trending) returns; `H < 0.5`: anti-persistent. Finite-sample behaviour for iid Gaussian
    returns with the defaults (`window = 128`, `n = 8..64`; simulated, per-window std ~0.08):
    the raw slope averages ~0.59 (the slope of `log E[R/S]_n` is 0.617) and the corrected `H`
    ~0.47, both ~0.03 low because the log of a mean over few blocks (two at `n = 64`) is biased
    below the log of the expectation (Jensen). AR(1) returns with `phi = +-0.5` give ~0.60 and
    ~0.35.

    Degenerate blocks (constant returns, e.g. a run of zero-volume bars with an unchanged close)
    are left out of their size's mean; a size with no usable block is left out of the regression;
    with fewer than two sizes left the exponent is reported as 0.5 (no evidence either way), so
    the output is finite for every finite window.

    Args:
        close: `[time, ...]` positive prices.
        window: returns per window (static int).
        sizes: sub-window sizes (static tuple of ints, each `4 <= n <= window`, at least two);
            default `hurst_sizes(window)` = powers of two from 8 to `window // 2`.
        anis_lloyd: subtract the Anis-Lloyd-Peters expected R/S (default) or return the raw slope.

    Returns:
        `[time, ...]` Hurst exponents; NaN for `t < window` (`hurst_warmup(window)`).
    """
    window = check_window(window, minimum=8)
    sizes = hurst_sizes(window) if sizes is None else tuple(sorted(set(int(n) for n in sizes)))
    if len(sizes) < 2 or sizes[0] < 4 or sizes[-1] > window:
        raise ValueError(f"sizes must hold >= 2 distinct ints in [4, window], got {sizes}")
    x, shape = _flatten(close)
    if x.shape[0] <= window:
        return jnp.full(shape, jnp.nan, x.dtype)
    tail = functools.partial(_hurst_tail, window=window, sizes=sizes, anis_lloyd=anis_lloyd)
    hurst = rolling_apply(tail, x, halo=window, chunk=chunk_rows(x.shape[1]))
    return hurst.reshape(shape)


def _hurst_tail(x, window: int, sizes: tuple[int, ...], anis_lloyd: bool):
    """Hurst exponents of the last `T - window` rows of the `[T, M]` prices `x` (a tail)."""
    r = _log_returns(x)
    m_out = r.shape[0] - window + 1
    log_n = [math.log(n) for n in sizes]
    log_e = [math.log(anis_lloyd_expected_rs(n)) if anis_lloyd else 0.0 for n in sizes]
    ys, ws = [], []
    for n in sizes:
        rs, valid = materialise(*_rescaled_range(r, n))
        k = window // n
        count = window_sum(valid, k, m_out, stride=n)
        total = window_sum(rs, k, m_out, stride=n)
        has = count > 0
        mean_rs = jnp.where(has, total, 1.0) / jnp.maximum(count, 1.0)
        ys.append(jnp.where(has, jnp.log(mean_rs), 0.0))
        ws.append(has.astype(x.dtype))
    # Least squares with 0/1 weights: slope = sum w (u - u_bar) y / sum w (u - u_bar)^2.
    w_sum = sum(ws)
    u_bar = sum(w * u for w, u in zip(ws, log_n)) / jnp.maximum(w_sum, 1.0)
    sxx = sum(w * (u - u_bar) ** 2 for w, u in zip(ws, log_n))
    sxy = sum(w * (u - u_bar) * (y - e) for w, u, y, e in zip(ws, log_n, ys, log_e))
    enough = w_sum >= 2
    slope = sxy / jnp.where(enough, sxx, 1.0)
    hurst = (0.5 + slope) if anis_lloyd else slope
    return jnp.where(enough, hurst, 0.5)


# ----------------------------------------------------------------------------------------------
# Sliding Fourier spectrum
# ----------------------------------------------------------------------------------------------


class FourierFeatures(NamedTuple):
    """Output of `rolling_fourier_features`.

    Attributes:
        amplitudes: `[time, ..., n_freqs]` amplitude of bins `k = 1..n_freqs` (frequency `k/window`
            cycles per bar).
        dominant_frequency: `[time, ...]` frequency (cycles per bar, in `(0, 0.5]`) of the bin with
            the largest amplitude among `k = 1..window // 2`; 0 for a flat window.
    """

    amplitudes: jax.Array
    dominant_frequency: jax.Array


def fourier_warmup(window: int) -> int:
    """First valid row of `rolling_fourier_features`: `window`."""
    return check_window(window)


def _dft_split(window: int) -> tuple[int, int]:
    """`window = a * b` minimising the two-stage DFT cost `b^2 + 2 * window * a` (flops/bar)."""
    best = (1, window)
    for a in range(1, window + 1):
        if window % a == 0:
            b = window // a
            if b * b + 2 * window * a < best[1] ** 2 + 2 * window * best[0]:
                best = (a, b)
    return best


def _cos_sin(num: int, den: int) -> tuple[float, float]:
    """`cos` and `sin` of `2 pi num / den`, exact (0, +-1) on multiples of a quarter turn."""
    num %= den
    if (4 * num) % den == 0:
        return [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][4 * num // den]
    angle = 2 * math.pi * num / den
    return math.cos(angle), math.sin(angle)


def _sliding_dft(r, window: int, bins):
    """Real and imaginary parts of the DFT of every trailing window of `r`, for `bins`.

    `X_k(t) = sum_{j=0}^{w-1} r[t - w + 1 + j] exp(-2 pi i j k / w)`, rows `t >= w - 1` (a tail).
    Two-stage (decimation in time, `w = a b`): stride-`a` DFTs of length `b`,
    `G_c(s) = sum_{m<b} r[s - a (b - 1 - m)] exp(-2 pi i m c / b)`, are computed once per row
    and materialised; then `X_k(t) = sum_{p<a} exp(-2 pi i p k / w) G_{k mod b}(t - a + 1 + p)`.
    Work is `~b^2 + 2 w a` flops per bar instead of `2 w` per bin, with sums of at most `b`
    and `a` terms (float32 error ~1e-7 relative). Real input: `G_{b - c} = conj(G_c)`.
    """
    a, b = _dft_split(window)
    g_rows = r.shape[0] - a * (b - 1)
    taps = [lagged(r, a * (b - 1 - m), g_rows) for m in range(b)]
    g = {}
    for c in range(b // 2 + 1):
        re = sum(_cos_sin(m * c, b)[0] * x for m, x in enumerate(taps))
        im = sum(-_cos_sin(m * c, b)[1] * x for m, x in enumerate(taps) if (2 * m * c) % b)
        g[c] = (re, im if not isinstance(im, int) else jnp.zeros_like(re))
    flat = materialise(*[part for c in sorted(g) for part in g[c]])
    g = {c: (flat[2 * i], flat[2 * i + 1]) for i, c in enumerate(sorted(g))}
    m_out = r.shape[0] - window + 1
    out = []
    for k in bins:
        c = k % b
        gr, gi, sign = (*g[c], 1.0) if c <= b // 2 else (*g[b - c], -1.0)
        xr, xi = 0.0, 0.0
        for p in range(a):
            cr = lagged(gr, a - 1 - p, m_out)
            ci = sign * lagged(gi, a - 1 - p, m_out)
            cos, sin = _cos_sin(p * k, window)
            # (cr + i ci)(cos - i sin)
            xr = xr + cos * cr + sin * ci
            xi = xi + cos * ci - sin * cr
        out.append((xr, xi))
    return out


@functools.partial(jax.jit, static_argnames=("window", "n_freqs"))
def rolling_fourier_features(close, window: int = 64, n_freqs: int = 8):
    """Amplitude spectrum of the trailing window of log returns, and its dominant frequency.

    At row `t` take the `w = window` log returns `x_j = r_{t-w+1+j}`, `j = 0..w-1`, demeaned, and
    their DFT `X_k = sum_j (x_j - mean) exp(-2 pi i j k / w)` (numpy's `rfft` convention;
    demeaning only changes `X_0`, so the non-DC bins equal those of the raw returns). The
    amplitudes are normalised so that a sinusoid `A cos(2 pi k j / w + phi)` in the returns reads
    `A` at its bin: `amp_k = 2 |X_k| / w` for `0 < k < w/2` and `|X_k| / w` at the Nyquist bin
    `k = w/2`.

    Args:
        close: `[time, ...]` positive prices.
        window: returns per window (static int, >= 4).
        n_freqs: number of non-DC bins returned, `1 <= n_freqs <= window // 2`.

    Returns:
        `FourierFeatures(amplitudes [time, ..., n_freqs], dominant_frequency [time, ...])`.
        The dominant frequency is `k* / w` cycles per bar for the bin `k*` in `1..w // 2` with the
        largest amplitude (ties resolve to the lowest frequency), 0 when all amplitudes are zero
        (a flat window). Both are NaN for `t < window` (`fourier_warmup(window)`).
    """
    window = check_window(window, minimum=4)
    n_freqs = check_window(n_freqs, "n_freqs")
    if n_freqs > window // 2:
        raise ValueError(f"n_freqs must be <= window // 2 = {window // 2}, got {n_freqs}")
    x, shape = _flatten(close)
    if x.shape[0] <= window:
        nan = jnp.full(shape, jnp.nan, x.dtype)
        return FourierFeatures(jnp.full(shape + (n_freqs,), jnp.nan, x.dtype), nan)
    tail = functools.partial(_fourier_tail, window=window, n_freqs=n_freqs)
    amplitudes, dominant = rolling_apply(tail, x, halo=window, chunk=chunk_rows(x.shape[1]))
    return FourierFeatures(amplitudes.reshape(shape + (n_freqs,)), dominant.reshape(shape))


def _fourier_tail(x, window: int, n_freqs: int):
    """Amplitudes `[T - window, M, n_freqs]` and dominant frequency of the `[T, M]` prices `x`."""
    r = _log_returns(x)
    half = window // 2
    spectrum = _sliding_dft(r, window, range(1, half + 1))
    amps = []
    for k, (xr, xi) in zip(range(1, half + 1), spectrum):
        scale = (1.0 if 2 * k == window else 2.0) / window
        amps.append(scale * jnp.sqrt(xr * xr + xi * xi))
    best, arg = amps[0], jnp.ones_like(amps[0])
    for k in range(2, half + 1):
        better = amps[k - 1] > best
        best = jnp.where(better, amps[k - 1], best)
        arg = jnp.where(better, float(k), arg)
    dominant = jnp.where(best > 0, arg / window, 0.0)
    dominant = jnp.where(jnp.isnan(best), jnp.nan, dominant)
    return jnp.stack(amps[:n_freqs], axis=-1), dominant


# ----------------------------------------------------------------------------------------------
# Causal Haar wavelet decomposition
# ----------------------------------------------------------------------------------------------


class HaarFeatures(NamedTuple):
    """Output of `haar_wavelet_features`.

    Attributes:
        details: `[time, ..., levels]`; `details[..., j - 1]` is the level-`j` detail `d_j`.
        approximation: `[time, ...]` the level-`levels` approximation `a_L` (a mean log price).
    """

    details: jax.Array
    approximation: jax.Array


def haar_warmup(levels: int, level: int | None = None) -> int:
    """First valid row of `haar_wavelet_features`.

    `level=j` gives that detail's own warm-up `2^j - 1`; the default is the row from which every
    output (all details and the approximation) is valid, `2^levels - 1`.
    """
    levels = check_window(levels, "levels")
    if level is None:
        return 2**levels - 1
    if not 1 <= level <= levels:
        raise ValueError(f"level must be in 1..{levels}, got {level}")
    return 2**level - 1


def wavelet_warmup(levels: int) -> int:
    """Row from which every output of `haar_wavelet_features(close, levels)` is valid.

    `2^levels - 1`; the same as `haar_warmup(levels)`.
    """
    return haar_warmup(levels)


@functools.partial(jax.jit, static_argnames=("levels",))
def haar_wavelet_features(close, levels: int = 3):
    """Causal rolling Haar decomposition of log prices.

    With `p_t = log close_t` and `h = 2^(j-1)`, the level-`j` detail at row `t` compares the two
    halves of the trailing `2^j` bars,

        d_j(t) = mean(p_{t-h+1..t}) - mean(p_{t-2h+1..t-h}),

    an average `h`-bar log return (the orthonormal Haar coefficient is `2^(j/2 - 1) d_j`), and the
    approximation is the mean log price of the trailing `2^L` bars, `a_L(t) = mean(p_{t-2^L+1..t})`
    (`L = levels`). Reconstruction identity: writing `A_j(t)` for the mean of the trailing `2^j`
    log prices (`A_0 = p_t`), `A_{j-1} = A_j + d_j / 2`, hence

        log close_t = a_L(t) + (1/2) sum_{j=1}^{L} d_j(t)     for every t >= 2^L - 1.

    Computed from log returns (`d_j` is a triangular-weighted sum of the last `2^j - 1` returns,
    `a_L = p_t - sum_{l=0}^{2^L-2} (2^L - 1 - l) / 2^L r_{t-l}`), so the details keep full float32
    relative precision at any price level.

    Args:
        close: `[time, ...]` positive prices.
        levels: number of detail levels `L` (static int, >= 1).

    Returns:
        `HaarFeatures(details [time, ..., levels], approximation [time, ...])`. Detail `j` is NaN
        for `t < 2^j - 1` and the approximation for `t < 2^L - 1` (`haar_warmup(levels, level)`).
    """
    levels = check_window(levels, "levels")
    x, shape = _flatten(close)
    n_rows = x.shape[0]
    r = _log_returns(x)  # rows 1..T-1
    details = []
    for j in range(1, levels + 1):
        h = 2 ** (j - 1)
        span = 2 * h - 1  # returns r_{t-2h+2..t}
        m = r.shape[0] - span + 1
        if m <= 0:
            details.append(jnp.full(x.shape, jnp.nan, x.dtype))
            continue
        d = sum((min(l + 1, 2 * h - 1 - l) / h) * lagged(r, l, m) for l in range(span))
        details.append(pad_warmup(d, n_rows))
    n = 2**levels
    m = r.shape[0] - (n - 1) + 1
    if m <= 0:
        approx = jnp.full(x.shape, jnp.nan, x.dtype)
    else:
        p = jnp.log(x)
        approx = lagged(p, 0, m) - sum(((n - 1 - l) / n) * lagged(r, l, m) for l in range(n - 1))
        approx = pad_warmup(approx, n_rows)
    details = jnp.stack(details, axis=-1).reshape(shape + (levels,))
    return HaarFeatures(details, approx.reshape(shape))
