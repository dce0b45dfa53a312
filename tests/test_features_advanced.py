"""Tests of the spectral, microstructure and cross-asset features.

Reference implementations below are plain NumPy/pandas loops over windows that follow each
docstring's definition literally; the library computes the same quantities with fused rolling
formulations, so agreement to float64 rounding (x64 tests) checks the algebra, and float32 tests
check the numerics.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.signal import lfilter

from trading_jax.features import cross_asset, microstructure, spectral, tails

SQRT2 = math.sqrt(2.0)


def random_walk_prices(n_rows, n_assets, seed, vol=0.01, level=100.0):
    rng = np.random.default_rng(seed)
    return level * np.exp(np.cumsum(vol * rng.standard_normal((n_rows, n_assets)), axis=0))


def random_ohlc(n_rows, n_assets, seed):
    """Closes on a random walk with highs above and lows below them (and sometimes gaps)."""
    rng = np.random.default_rng(seed)
    close = random_walk_prices(n_rows, n_assets, seed)
    high = close * np.exp(np.abs(0.006 * rng.standard_normal(close.shape)))
    low = close * np.exp(-np.abs(0.006 * rng.standard_normal(close.shape)))
    return high, low, close


def log_returns(close):
    return np.diff(np.log(close), axis=0)


# ----------------------------------------------------------------------------------------------
# Hurst exponent
# ----------------------------------------------------------------------------------------------


def reference_hurst(close, window, sizes, anis_lloyd):
    """R/S Hurst exponent of one price series, window by window, as the docstring defines it."""
    r = log_returns(close)
    out = np.full(close.shape[0], np.nan)
    eps = np.finfo(np.float64).eps
    for t in range(window, close.shape[0]):
        x = r[t - window : t]  # the returns of rows t-window+1 .. t
        log_n, y = [], []
        for n in sizes:
            ratios = []
            for j in range(window // n):  # blocks aligned on the window's end
                block = x[x.size - (j + 1) * n : x.size - j * n]
                dev = block - block.mean()
                s = np.sqrt(np.mean(dev**2))
                if s > n * eps * abs(block.mean()):
                    cum = np.cumsum(dev)
                    ratios.append((cum.max() - cum.min()) / s)
            if ratios:
                log_n.append(math.log(n))
                correction = math.log(spectral.anis_lloyd_expected_rs(n)) if anis_lloyd else 0.0
                y.append(math.log(np.mean(ratios)) - correction)
        if len(log_n) < 2:
            out[t] = 0.5
            continue
        slope = np.polyfit(log_n, y, 1)[0]
        out[t] = 0.5 + slope if anis_lloyd else slope
    return out


def ar1_prices(phi, n_rows, n_assets, seed):
    shocks = 0.01 * np.random.default_rng(seed).standard_normal((n_rows, n_assets))
    returns = lfilter([1.0], [1.0, -phi], shocks, axis=0)
    return 100.0 * np.exp(np.cumsum(returns, axis=0))


def test_anis_lloyd_expected_rs_matches_its_closed_form_for_small_n():
    # n = 3: (2.5/3) * Gamma(1) / (sqrt(pi) Gamma(1.5)) * (sqrt(2) + sqrt(1/2)),
    # with Gamma(1) = 1 and sqrt(pi) Gamma(1.5) = pi / 2
    expected = (2.5 / 3) * (2 / math.pi) * (SQRT2 + math.sqrt(0.5))
    assert spectral.anis_lloyd_expected_rs(3) == pytest.approx(expected, rel=1e-12)
    # for large n the Gamma ratio tends to 1/sqrt(n pi / 2) (Weron 2002's form for n > 340)
    n = 2000
    asymptotic = (n - 0.5) / n / math.sqrt(n * math.pi / 2) * sum(
        math.sqrt((n - i) / i) for i in range(1, n)
    )
    assert spectral.anis_lloyd_expected_rs(n) == pytest.approx(asymptotic, rel=1e-3)


@pytest.mark.parametrize("anis_lloyd", [True, False])
def test_rolling_hurst_matches_a_numpy_reference_including_flat_runs(anis_lloyd):
    close = random_walk_prices(260, 2, seed=1)
    close[100:140, 0] = close[99, 0]  # 40 zero returns: degenerate blocks are skipped
    close[200:209, 1] = close[199, 1]
    window, sizes = 64, spectral.hurst_sizes(64)
    assert sizes == (8, 16, 32)
    with jax.enable_x64(True):
        got = np.asarray(spectral.rolling_hurst(jnp.asarray(close), window, anis_lloyd=anis_lloyd))
    for asset in range(2):
        want = reference_hurst(close[:, asset], window, sizes, anis_lloyd)
        np.testing.assert_allclose(got[:, asset], want, atol=1e-10, rtol=0)
    assert spectral.hurst_warmup(window) == 64
    assert np.isnan(got[:64]).all() and np.isfinite(got[64:]).all()


def test_rolling_hurst_of_a_flat_price_is_one_half_after_the_warmup():
    hurst = np.asarray(spectral.rolling_hurst(jnp.full((160, 1), 50.0)))
    assert np.isnan(hurst[:128]).all()
    np.testing.assert_array_equal(hurst[128:], 0.5)


def test_rolling_hurst_is_about_one_half_for_iid_returns_and_orders_ar1_memory():
    # 4 assets x 8192 bars, float32. Over the ~250 non-overlapping windows the per-window std of
    # H is ~0.08, so the standard error of the mean is ~0.005. The Anis-Lloyd correction removes
    # the small-sample bias of E[R/S] but not Jensen's gap between log of a mean of few blocks
    # (2 blocks at n = 64) and the mean of the log: simulations put the mean at 0.47 +- 0.005,
    # hence the 0.05 tolerance. The raw slope is likewise ~0.03 below the slope of
    # log E[R/S]_n (0.617 for n = 8..64).
    n_rows, n_assets = 8192, 4
    iid, persistent, anti = (
        jnp.asarray(ar1_prices(phi, n_rows, n_assets, seed=7), jnp.float32)
        for phi in (0.0, 0.5, -0.5)
    )
    h_iid = np.asarray(spectral.rolling_hurst(iid))[128:]
    raw_iid = np.asarray(spectral.rolling_hurst(iid, anis_lloyd=False))[128:]
    h_persistent = np.asarray(spectral.rolling_hurst(persistent))[128:]
    h_anti = np.asarray(spectral.rolling_hurst(anti))[128:]
    sizes = spectral.hurst_sizes(128)
    theory_raw = np.polyfit(
        np.log(sizes), [math.log(spectral.anis_lloyd_expected_rs(n)) for n in sizes], 1
    )[0]
    assert abs(h_iid.mean() - 0.5) < 0.05
    assert abs(raw_iid.mean() - theory_raw) < 0.05
    # Same shocks, positive vs negative autocorrelation: clearly above / below the iid value.
    assert h_persistent.mean() > h_iid.mean() + 0.08 and h_persistent.mean() > 0.55
    assert h_anti.mean() < h_iid.mean() - 0.08 and h_anti.mean() < 0.42


# ----------------------------------------------------------------------------------------------
# Fourier features
# ----------------------------------------------------------------------------------------------


def reference_fourier(close, window, n_freqs):
    """numpy.fft.rfft of each demeaned window of log returns, normalised as documented."""
    r = log_returns(close)
    n_rows = close.shape[0]
    amps = np.full((n_rows, close.shape[1], n_freqs), np.nan)
    dominant = np.full((n_rows, close.shape[1]), np.nan)
    scale = np.full(window // 2 + 1, 2.0 / window)
    if window % 2 == 0:
        scale[window // 2] = 1.0 / window
    for t in range(window, n_rows):
        x = r[t - window : t]
        spectrum = np.abs(np.fft.rfft(x - x.mean(axis=0), axis=0)) * scale[:, None]
        amps[t] = spectrum[1 : n_freqs + 1].T
        dominant[t] = (np.argmax(spectrum[1:], axis=0) + 1) / window
    return amps, dominant


@pytest.mark.parametrize("window,n_freqs", [(64, 8), (30, 15), (17, 3)])
def test_rolling_fourier_features_match_numpy_fft_on_every_window(window, n_freqs):
    # 64 = 4 x 16 and 30 = 3 x 10 use the two-stage DFT; 17 is prime (direct sums).
    close = random_walk_prices(200, 3, seed=2)
    with jax.enable_x64(True):
        got = spectral.rolling_fourier_features(jnp.asarray(close), window, n_freqs)
    amps, dominant = reference_fourier(close, window, n_freqs)
    np.testing.assert_allclose(np.asarray(got.amplitudes), amps, atol=1e-14, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(got.dominant_frequency), dominant, rtol=1e-15)
    assert spectral.fourier_warmup(window) == window
    assert np.isnan(np.asarray(got.amplitudes)[:window]).all()
    assert np.isfinite(np.asarray(got.amplitudes)[window:]).all()


def test_rolling_fourier_features_are_accurate_in_float32_at_high_price_levels():
    close = random_walk_prices(300, 2, seed=3, level=2e4)
    got = spectral.rolling_fourier_features(jnp.asarray(close, jnp.float32))
    amps, _ = reference_fourier(close.astype(np.float32).astype(np.float64), 64, 8)
    typical = np.nanmean(amps)
    assert np.nanmax(np.abs(np.asarray(got.amplitudes) - amps)) < 1e-4 * typical


def test_a_pure_sine_in_the_returns_peaks_at_its_frequency_with_its_amplitude():
    window, bin_k, amplitude = 64, 5, 0.004
    j = np.arange(400)
    returns = amplitude * np.cos(2 * np.pi * bin_k * j / window + 0.7)
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))[:, None]
    got = spectral.rolling_fourier_features(jnp.asarray(close, jnp.float32), window, n_freqs=8)
    amps = np.asarray(got.amplitudes)[window:, 0]
    np.testing.assert_array_equal(np.asarray(got.dominant_frequency)[window:, 0], bin_k / window)
    np.testing.assert_allclose(amps[:, bin_k - 1], amplitude, rtol=1e-3)
    others = np.delete(amps, bin_k - 1, axis=1)
    assert others.max() < 1e-3 * amplitude


def test_a_flat_window_has_zero_amplitudes_and_zero_dominant_frequency():
    close = np.full((100, 1), 7.0)
    got = spectral.rolling_fourier_features(jnp.asarray(close), 16, 4)
    np.testing.assert_array_equal(np.asarray(got.amplitudes)[16:], 0.0)
    np.testing.assert_array_equal(np.asarray(got.dominant_frequency)[16:], 0.0)


# ----------------------------------------------------------------------------------------------
# Haar wavelet features
# ----------------------------------------------------------------------------------------------


def test_haar_features_of_a_hand_worked_series():
    # log prices 0, 1, 3, 6, 10, 15, 21, 28 (triangular numbers); at t = 7:
    #   d1 = 28 - 21 = 7,  d2 = mean(21, 28) - mean(10, 15) = 12,
    #   d3 = mean(10, 15, 21, 28) - mean(0, 1, 3, 6) = 16,  a3 = mean of all eight = 10.5,
    #   and a3 + (d1 + d2 + d3) / 2 = 28 = log close_7.
    log_close = np.array([0.0, 1, 3, 6, 10, 15, 21, 28])
    with jax.enable_x64(True):
        got = spectral.haar_wavelet_features(jnp.asarray(np.exp(log_close)), levels=3)
    details, approx = np.asarray(got.details), np.asarray(got.approximation)
    np.testing.assert_allclose(details[7], [7.0, 12.0, 16.0], rtol=1e-12)
    assert approx[7] == pytest.approx(10.5, rel=1e-12)
    # d1 at t = 3 is 6 - 3; d2 at t = 3 is mean(3, 6) - mean(0, 1)
    np.testing.assert_allclose(details[3, :2], [3.0, 4.0], rtol=1e-12)
    # each coefficient is NaN exactly before its own 2^j - 1 warm-up
    assert [spectral.haar_warmup(3, level=j) for j in (1, 2, 3)] == [1, 3, 7]
    assert spectral.haar_warmup(3) == spectral.wavelet_warmup(3) == 7
    for j, warm in enumerate([1, 3, 7]):
        assert np.isnan(details[:warm, j]).all() and np.isfinite(details[warm:, j]).all()
    assert np.isnan(approx[:7]).all()


def test_haar_coefficients_reconstruct_the_log_price():
    close = random_walk_prices(200, 3, seed=4, level=3e3)
    with jax.enable_x64(True):
        got = spectral.haar_wavelet_features(jnp.asarray(close), levels=4)
    rebuilt = np.asarray(got.approximation) + 0.5 * np.asarray(got.details).sum(axis=-1)
    np.testing.assert_allclose(rebuilt[15:], np.log(close)[15:], rtol=0, atol=1e-12)
    # float32: details keep full relative precision (computed from returns, not log prices)
    got32 = spectral.haar_wavelet_features(jnp.asarray(close, jnp.float32), levels=4)
    np.testing.assert_allclose(
        np.asarray(got32.details)[15:], np.asarray(got.details)[15:], rtol=1e-4, atol=1e-7
    )


# ----------------------------------------------------------------------------------------------
# Spread and liquidity estimators
# ----------------------------------------------------------------------------------------------


def test_roll_spread_of_an_alternating_bounce_is_hand_computable():
    # close alternates 100, 101: returns +a, -a, ... with a = ln 1.01. Over 4 pairs
    # (r_t, r_{t-1}) = (x, -x) with x = +-a, so cov = -var(x) = -4 a^2 / 3 (ddof = 1) and
    # the spread is 2 a sqrt(4/3).
    close = np.tile([100.0, 101.0], 10)
    with jax.enable_x64(True):
        got = np.asarray(microstructure.roll_spread(jnp.asarray(close), window=4))
    a = math.log(1.01)
    assert microstructure.roll_spread_warmup(4) == 5
    assert microstructure.spread_warmup(4) == 5  # the latest of the four estimators
    assert np.isnan(got[:5]).all()
    np.testing.assert_allclose(got[5:], 2 * a * math.sqrt(4 / 3), rtol=1e-12)


def test_roll_spread_matches_pandas_rolling_covariance():
    close = random_walk_prices(150, 2, seed=5)
    with jax.enable_x64(True):
        got = np.asarray(microstructure.roll_spread(jnp.asarray(close), window=20))
    r = pd.DataFrame(np.log(close)).diff()
    cov = r.rolling(20).cov(r.shift(1)).to_numpy()
    np.testing.assert_allclose(got, 2 * np.sqrt(np.maximum(-cov, 0.0)), atol=1e-14)


def test_roll_spread_recovers_a_simulated_bid_ask_bounce():
    # log mid follows a random walk (sigma = 0.001 per bar); trades print at mid +- s/2 with
    # independent signs, so cov(r_t, r_{t-1}) = -s^2/4 and the estimator's target is s = 0.01.
    # Per 400-bar window the covariance has relative std ~ var(r) / sqrt(400) / (s^2 / 4) ~ 0.1,
    # i.e. ~5% on s; the mean over the ~50 independent windows in 20000 bars has ~0.7% std.
    rng = np.random.default_rng(6)
    n_rows, spread = 20000, 0.01
    mid = np.cumsum(0.001 * rng.standard_normal((n_rows, 2)), axis=0)
    sign = rng.choice([-1.0, 1.0], size=(n_rows, 2))
    close = 50.0 * np.exp(mid + sign * spread / 2)
    got = np.asarray(microstructure.roll_spread(jnp.asarray(close, jnp.float32), window=400))
    assert np.nanmean(got) == pytest.approx(spread, rel=0.03)


def reference_corwin_schultz(high, low, close, window):
    """Corwin & Schultz (2012) eqs. 14 and 18 with the section II.C overnight adjustment."""
    h1, l1, h2, l2 = high[:-1], low[:-1], high[1:].copy(), low[1:].copy()
    if close is not None:
        c1 = close[:-1]
        down = l2 > c1  # the low is above yesterday's close: shift day t down
        up = h2 < c1  # the high is below yesterday's close: shift day t up
        shift = np.where(down, c1 - l2, 0.0) + np.where(up, c1 - h2, 0.0)
        h2, l2 = h2 + shift, l2 + shift
    beta = np.log(h2 / l2) ** 2 + np.log(h1 / l1) ** 2
    gamma = np.log(np.maximum(h1, h2) / np.minimum(l1, l2)) ** 2
    k = 3 - 2 * SQRT2
    alpha = (np.sqrt(2 * beta) - np.sqrt(beta)) / k - np.sqrt(gamma / k)
    s = np.maximum(2 * (np.exp(alpha) - 1) / (1 + np.exp(alpha)), 0.0)
    two_bar = pd.DataFrame(np.concatenate([np.full((1,) + s.shape[1:], np.nan), s]))
    return two_bar.rolling(window).mean().to_numpy()


def test_corwin_schultz_of_constant_quotes_is_the_quoted_spread():
    # No volatility: every bar trades at bid 99.5 and ask 100.5. Then beta = 2 ln(A/B)^2,
    # gamma = ln(A/B)^2, alpha = ln(A/B) exactly, and S = 2 (A/B - 1)/(1 + A/B) = (A - B)/mid.
    high, low = np.full(30, 100.5), np.full(30, 99.5)
    with jax.enable_x64(True):
        got = microstructure.corwin_schultz_spread(jnp.asarray(high), jnp.asarray(low), 5)
        got = np.asarray(got)
    assert np.isnan(got[:5]).all()
    np.testing.assert_allclose(got[5:], 0.01, rtol=1e-12)


@pytest.mark.parametrize("with_close", [False, True])
def test_corwin_schultz_matches_the_paper_formulas(with_close):
    high, low, close = random_ohlc(150, 3, seed=8)
    high[40:45] *= 1.03  # gaps up: lows above the previous close, and negative estimates
    low[40:45] *= 1.03
    close_arg = close if with_close else None
    with jax.enable_x64(True):
        got = microstructure.corwin_schultz_spread(
            jnp.asarray(high),
            jnp.asarray(low),
            10,
            close=None if close_arg is None else jnp.asarray(close_arg),
        )
    want = reference_corwin_schultz(high, low, close_arg, 10)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-14, rtol=1e-10)
    assert microstructure.corwin_schultz_warmup(10) == 10
    assert (np.asarray(got)[10:] >= 0).all()


def reference_abdi_ranaldo(high, low, close, window, two_day):
    c, eta = np.log(close), (np.log(high) + np.log(low)) / 2
    s2 = 4 * (c[:-1] - eta[:-1]) * (c[:-1] - eta[1:])  # pairs (t-1, t)
    if two_day:
        s2 = np.sqrt(np.maximum(s2, 0.0))
    frame = pd.DataFrame(np.concatenate([np.full((1,) + s2.shape[1:], np.nan), s2]))
    mean = frame.rolling(window).mean().to_numpy()
    return mean if two_day else np.sqrt(np.maximum(mean, 0.0))


def test_abdi_ranaldo_of_closes_at_the_quotes_is_the_log_spread():
    # High = ask, low = bid every bar, closes alternate at ask and bid: c - eta = +-ln(A/B)/2 on
    # consecutive bars with the same sign, so 4 (c - eta)(c - eta') = ln(A/B)^2 for every pair.
    high, low = np.full(30, 100.5), np.full(30, 99.5)
    close = np.where(np.arange(30) % 2 == 0, 100.5, 99.5)
    with jax.enable_x64(True):
        got = microstructure.abdi_ranaldo_spread(
            jnp.asarray(high), jnp.asarray(low), jnp.asarray(close), 5
        )
        got = np.asarray(got)
    assert np.isnan(got[:5]).all()
    np.testing.assert_allclose(got[5:], math.log(100.5 / 99.5), rtol=1e-12)


@pytest.mark.parametrize("two_day", [False, True])
def test_abdi_ranaldo_matches_the_paper_formula(two_day):
    high, low, close = random_ohlc(150, 3, seed=9)
    with jax.enable_x64(True):
        got = microstructure.abdi_ranaldo_spread(
            jnp.asarray(high), jnp.asarray(low), jnp.asarray(close), 10, two_day=two_day
        )
    want = reference_abdi_ranaldo(high, low, close, 10, two_day)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-14, rtol=1e-10)
    assert microstructure.abdi_ranaldo_warmup(10) == 10


def test_amihud_illiquidity_skips_untraded_bars_and_is_nan_only_without_trades():
    close = np.array([100.0, 101.0, 101.0, 101.0, 100.0, 102.0, 102.0])
    volume = np.array([5.0, 10.0, 0.0, 0.0, 2.0, 4.0, 0.0])
    with jax.enable_x64(True):
        got = microstructure.amihud_illiquidity(jnp.asarray(close), jnp.asarray(volume), 2)
        got = np.asarray(got)
    r = np.log(close[1:] / close[:-1])
    ratio = 1e6 * np.abs(r) / (close[1:] * np.where(volume[1:] > 0, volume[1:], np.nan))
    assert microstructure.amihud_warmup(2) == 2
    assert np.isnan(got[:2]).all()
    assert got[2] == pytest.approx(ratio[0])  # rows 1, 2: only row 1 traded
    assert np.isnan(got[3])  # rows 2, 3: no trade at all
    assert got[4] == pytest.approx(ratio[3])  # rows 3, 4: only row 4 traded
    assert got[5] == pytest.approx((ratio[3] + ratio[4]) / 2)
    assert got[6] == pytest.approx(ratio[4])


def test_amihud_illiquidity_matches_a_pandas_reference_in_float32():
    rng = np.random.default_rng(10)
    close = random_walk_prices(400, 3, seed=10)
    volume = rng.integers(0, 3, size=close.shape) * 1e5  # a third of the bars without trades
    got = np.asarray(microstructure.amihud_illiquidity(jnp.asarray(close, jnp.float32),
                                                       jnp.asarray(volume, jnp.float32), 20))
    dollar_volume = close * np.where(volume > 0, volume, np.nan)
    ratio = 1e6 * np.abs(pd.DataFrame(np.log(close)).diff()) / dollar_volume
    want = ratio.rolling(20, min_periods=1).mean().to_numpy().copy()
    want[:20] = np.nan
    np.testing.assert_allclose(got, want, rtol=2e-5)


# ----------------------------------------------------------------------------------------------
# Cross-asset correlations
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [7, 37])
def test_rolling_correlation_matches_pandas(window):
    # 7 is summed directly; 37 = 6 blocks of 6 plus 1 bar exercises the block merge.
    rng = np.random.default_rng(11)
    x = rng.standard_normal((300, 3))
    y = 0.6 * x + rng.standard_normal((300, 3))
    with jax.enable_x64(True):
        got = np.asarray(cross_asset.rolling_correlation(jnp.asarray(x), jnp.asarray(y), window))
    want = pd.DataFrame(x).rolling(window).corr(pd.DataFrame(y)).to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert cross_asset.correlation_warmup(window) == window - 1
    assert np.isnan(got[: window - 1]).all() and np.isfinite(got[window - 1 :]).all()


@pytest.mark.parametrize("window", [7, 37])
def test_rolling_correlation_matrix_and_mean_pairwise_match_pandas(window):
    rng = np.random.default_rng(12)
    common = rng.standard_normal((300, 1))
    returns = 0.5 * common + rng.standard_normal((300, 4))
    with jax.enable_x64(True):
        matrix = np.asarray(cross_asset.rolling_correlation_matrix(jnp.asarray(returns), window))
        mean_pair = np.asarray(cross_asset.mean_pairwise_correlation(jnp.asarray(returns), window))
    want = pd.DataFrame(returns).rolling(window).corr().to_numpy().reshape(300, 4, 4)
    np.testing.assert_allclose(matrix, want, atol=1e-12)
    off = want.copy()
    off[:, np.arange(4), np.arange(4)] = 0.0
    np.testing.assert_allclose(mean_pair, off.sum(axis=2) / 3, atol=1e-12)
    assert np.isnan(mean_pair[: window - 1]).all() and np.isfinite(mean_pair[window - 1 :]).all()


def test_rolling_correlation_is_accurate_in_float32_on_prices_with_a_large_offset():
    # Prices 1e4 + a unit random walk: E[xy] and E[x]E[y] agree to ~8 digits, so the textbook
    # one-pass formula loses everything in float32 (shown below); the centred computation keeps
    # float32 accuracy relative to the float64 correlation of the same (float32-rounded) inputs.
    rng = np.random.default_rng(13)
    prices = 1e4 + np.cumsum(rng.standard_normal((400, 2)), axis=0)
    p32 = prices.astype(np.float32)
    window = 20
    got = cross_asset.rolling_correlation(jnp.asarray(p32[:, 0]), jnp.asarray(p32[:, 1]), window)
    got = np.asarray(got)
    p64 = p32.astype(np.float64)
    want = pd.Series(p64[:, 0]).rolling(window).corr(pd.Series(p64[:, 1])).to_numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)

    x, y = jnp.asarray(p32[:, 0]), jnp.asarray(p32[:, 1])
    idx = jnp.arange(window - 1, 400)[:, None] - jnp.arange(window)[None, :]
    mean = lambda a: a[idx].mean(axis=1)  # noqa: E731
    naive = (mean(x * y) - mean(x) * mean(y)) / jnp.sqrt(
        (mean(x * x) - mean(x) ** 2) * (mean(y * y) - mean(y) ** 2)
    )
    assert np.nanmax(np.abs(np.asarray(naive) - want[window - 1 :])) > 0.1


def test_a_constant_series_is_uncorrelated_with_the_others_and_the_matrix_stays_valid():
    rng = np.random.default_rng(14)
    returns = rng.standard_normal((120, 3))
    returns[30:90, 1] = 0.0  # a suspension: zero returns for 60 bars
    matrix = cross_asset.rolling_correlation_matrix(jnp.asarray(returns, jnp.float32), 20)
    matrix = np.asarray(matrix)
    assert np.isfinite(matrix[19:]).all()
    inside = matrix[49:90]  # windows lying entirely inside the flat run
    np.testing.assert_array_equal(inside[:, 1, [0, 2]], 0.0)
    np.testing.assert_array_equal(inside[:, [0, 2], 1], 0.0)
    np.testing.assert_array_equal(matrix[19:, np.arange(3), np.arange(3)], 1.0)
    assert np.linalg.eigvalsh(matrix[19:].astype(np.float64)).min() > -1e-5


def test_chunked_rolling_evaluation_equals_one_pass():
    # Long panels are processed in row chunks; small chunks here force several chunks plus a
    # last chunk shifted back to end on the last row.
    returns = np.random.default_rng(15).standard_normal((257, 3))
    window = 20

    def tail(slab):
        return cross_asset._matrix_tail(slab, window)

    with jax.enable_x64(True):
        x = jnp.asarray(returns)
        one_pass = np.asarray(tails.rolling_apply(tail, x, halo=window - 1, chunk=10**6))
        chunked = np.asarray(tails.rolling_apply(tail, x, halo=window - 1, chunk=50))
    np.testing.assert_allclose(chunked, one_pass, rtol=0, atol=1e-14)
    want = pd.DataFrame(returns).rolling(window).corr().to_numpy().reshape(257, 3, 3)
    np.testing.assert_allclose(chunked, want, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Causality and warm-up, for every feature
# ----------------------------------------------------------------------------------------------

N_ROWS = 200


def _ohlcv(seed):
    high, low, close = random_ohlc(N_ROWS, 2, seed)
    volume = np.random.default_rng(seed).integers(0, 4, size=close.shape) * 100.0
    return high, low, close, volume


FEATURES = {
    "hurst": (lambda h, l, c, v: spectral.rolling_hurst(c, 64), spectral.hurst_warmup(64)),
    "fourier": (
        lambda h, l, c, v: spectral.rolling_fourier_features(c, 32, 4).amplitudes,
        spectral.fourier_warmup(32),
    ),
    "haar": (
        lambda h, l, c, v: spectral.haar_wavelet_features(c, 3).approximation,
        spectral.haar_warmup(3),
    ),
    "roll": (
        lambda h, l, c, v: microstructure.roll_spread(c, 20),
        microstructure.roll_spread_warmup(20),
    ),
    "corwin_schultz": (
        lambda h, l, c, v: microstructure.corwin_schultz_spread(h, l, 20, close=c),
        microstructure.corwin_schultz_warmup(20),
    ),
    "abdi_ranaldo": (
        lambda h, l, c, v: microstructure.abdi_ranaldo_spread(h, l, c, 20),
        microstructure.abdi_ranaldo_warmup(20),
    ),
    "amihud": (
        lambda h, l, c, v: microstructure.amihud_illiquidity(c, v + 1.0, 20),
        microstructure.amihud_warmup(20),
    ),
    "correlation_matrix": (
        lambda h, l, c, v: cross_asset.rolling_correlation_matrix(jnp.log(c), 20),
        cross_asset.correlation_warmup(20),
    ),
}


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_features_use_past_bars_only_and_are_nan_exactly_during_the_warmup(name):
    fn, warmup = FEATURES[name]
    bars = [jnp.asarray(a, jnp.float32) for a in _ohlcv(seed=16)]
    cut = 120
    other = _ohlcv(seed=17)
    future = [a.at[cut + 1 :].set(jnp.asarray(b[cut + 1 :], jnp.float32))
              for a, b in zip(bars, other)]
    out = np.asarray(fn(*bars))
    out_changed_future = np.asarray(fn(*future))
    np.testing.assert_array_equal(out[: cut + 1], out_changed_future[: cut + 1])
    assert not np.array_equal(out[cut + 1 :], out_changed_future[cut + 1 :])
    assert np.isnan(out[:warmup]).all()
    assert np.isfinite(out[warmup:]).all()


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_a_missing_bar_spoils_only_the_windows_that_contain_it(name):
    fn, warmup = FEATURES[name]
    bars = [jnp.asarray(a, jnp.float32) for a in _ohlcv(seed=16)]
    holed = [a.at[100].set(jnp.nan) for a in bars]
    clean, out = np.asarray(fn(*bars)), np.asarray(fn(*holed))
    np.testing.assert_array_equal(out[:100], clean[:100])
    assert np.isnan(out[100]).all()
    assert np.isfinite(out[100 + 66 :]).all()  # every window here is at most 65 bars long
