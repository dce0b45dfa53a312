"""Synthetic market generators: closed-form moments, OHLCV invariants, vmap/jit behaviour.

Statistical tests use fixed keys, so they are deterministic; each tolerance is a number of
standard errors (`N_SE = 5`) of the estimate, computed from the sample itself (or from the closed
form where noted), so a correct formula passes with a wide margin and a wrong one (e.g. a missing
-sigma^2/2, an Euler instead of the exact OU step, a missing jump compensator) fails; where the
margin is not obvious a test also asserts that the plausible wrong formula lies outside it.

Compilation dominates the run time on CPU, so every batch of markets goes through the one
`BATCHED` generator (4000 markets x 256 bars, params batched): one compilation per model, shared
by the statistical samples and the domain-randomised ones.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.data.synthetic import (
    DEFAULT_RANGES,
    MODELS,
    BarParams,
    GBMParams,
    HestonParams,
    MertonParams,
    OUParams,
    RegimeSwitchingParams,
    SyntheticMarket,
    bars_from_log_returns,
    generate,
    generate_switch,
    markov_chain,
    panel,
    sample_params,
    stationary_distribution,
)

N_SE = 5.0
DT = 1.0 / 252.0
S0 = 100.0
N_PATHS, N_STEPS = 4000, 256
FLOAT = jnp.result_type(float)

BATCHED = jax.jit(jax.vmap(partial(generate, n_steps=N_STEPS, dt=DT, s0=S0)))


def f64(x) -> np.ndarray:
    """Statistics are computed in float64 on the host (float32 sums of 1e6 terms drift)."""
    return np.asarray(x, dtype=np.float64)


def assert_within(estimate, expected, se, extra=0.0, what=""):
    """|estimate - expected| <= N_SE * se + extra (extra: a known deterministic bias bound)."""
    tol = N_SE * se + extra
    assert abs(estimate - expected) <= tol, f"{what}: {estimate} vs {expected} (tol {tol}, se {se})"


def typed(params):
    """Params with float32 array leaves, as `sample_params` makes them (same compiled programs)."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=FLOAT), params)


def simulate(params, seed: int) -> SyntheticMarket:
    """N_PATHS independent markets with the same params, as host arrays."""
    batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (N_PATHS,) + x.shape), typed(params))
    return jax.device_get(BATCHED(jax.random.split(jax.random.key(seed), N_PATHS), batch))


def assert_terminal_price_mean_is_s0_exp_mu_t(market: SyntheticMarket, mu: float):
    """E[S_T] = S0 exp(mu T) across independent paths, SE = sample sd / sqrt(n_paths)."""
    s_t = f64(market.bars.close[:, -1])
    se = s_t.std(ddof=1) / math.sqrt(s_t.size)
    assert_within(s_t.mean(), S0 * math.exp(mu * N_STEPS * DT), se, what="E[S_T]")


def ratio_estimate(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """Ratio of means over independent paths and its delta-method standard error."""
    ratio = num.mean() / den.mean()
    resid = num - ratio * den
    return ratio, resid.std(ddof=1) / (math.sqrt(len(num)) * den.mean())


# ----------------------------------------------------------------------------------------------
# GBM
# ----------------------------------------------------------------------------------------------

GBM = GBMParams(mu=0.1, sigma=0.3)


@pytest.fixture(scope="module")
def gbm_sample():
    return simulate(GBM, seed=1)


def test_gbm_log_returns_have_mean_mu_minus_half_sigma_squared_dt_and_variance_sigma_squared_dt(gbm_sample):
    r = f64(gbm_sample.log_returns).ravel()
    n = r.size
    mean, var = (GBM.mu - GBM.sigma**2 / 2) * DT, GBM.sigma**2 * DT
    # i.i.d. normal returns: SE(mean) = sd / sqrt(n), SE(sample variance) = var sqrt(2 / n).
    assert_within(r.mean(), mean, math.sqrt(var / n), what="mean")
    assert_within(r.var(ddof=1), var, var * math.sqrt(2.0 / n), what="variance")
    # the test can tell the Ito correction apart: mu dt alone is many standard errors away
    assert abs(GBM.mu * DT - mean) > (N_SE + 3) * math.sqrt(var / n)


def test_gbm_expected_terminal_price_is_s0_exp_mu_t(gbm_sample):
    assert_terminal_price_mean_is_s0_exp_mu_t(gbm_sample, GBM.mu)
    # ...and not S0 exp((mu - sigma^2/2) T), the median, which is more than (N_SE + 3) SE away
    s_t, t = f64(gbm_sample.bars.close[:, -1]), N_STEPS * DT
    median_gap = S0 * (math.exp(GBM.mu * t) - math.exp((GBM.mu - GBM.sigma**2 / 2) * t))
    assert median_gap > (N_SE + 3) * s_t.std(ddof=1) / math.sqrt(s_t.size)


# ----------------------------------------------------------------------------------------------
# Ornstein-Uhlenbeck on log price
# ----------------------------------------------------------------------------------------------

# kappa dt ~ 0.2, so the exact AR(1) coefficient exp(-kappa dt) = 0.820 differs from the Euler
# 1 - kappa dt = 0.802 by far more than the tolerance, and so do the stationary variances.
OU = OUParams(kappa=50.0, log_mean=math.log(110.0), sigma=0.3)
OU_BURN_IN = 100  # exp(-2 kappa * 100 dt) ~ 1e-17: the start is forgotten


@pytest.fixture(scope="module")
def ou_log_price():
    market = simulate(OU, seed=2)
    return np.log(f64(market.bars.close))  # [path, time]; column t is X at time (t + 1) dt


def test_ou_log_price_mean_decays_exponentially_from_the_start_towards_log_mean(ou_log_price):
    x0, m, kappa = math.log(S0), OU.log_mean, OU.kappa
    for t in (1, 4, 9):
        x = ou_log_price[:, t]
        expected = m + (x0 - m) * math.exp(-kappa * (t + 1) * DT)
        assert_within(x.mean(), expected, x.std(ddof=1) / math.sqrt(x.size), what=f"E[X] at bar {t}")


def test_ou_stationary_log_price_has_mean_log_mean_and_variance_sigma_squared_over_two_kappa(ou_log_price):
    y = ou_log_price[:, OU_BURN_IN:] - OU.log_mean
    # paths are independent, bars within a path are not: per-path averages carry the SE.
    per_path_mean, per_path_sq = y.mean(axis=1), (y**2).mean(axis=1)
    n_paths = y.shape[0]
    assert_within(per_path_mean.mean(), 0.0, per_path_mean.std(ddof=1) / math.sqrt(n_paths), what="mean")
    var = OU.sigma**2 / (2 * OU.kappa)
    se_var = per_path_sq.std(ddof=1) / math.sqrt(n_paths)
    assert_within(per_path_sq.mean(), var, se_var, what="stationary variance")
    euler_var = OU.sigma**2 / (OU.kappa * (2 - OU.kappa * DT))
    assert abs(euler_var - var) > (N_SE + 3) * se_var


def test_ou_lag_one_autocorrelation_of_log_price_is_exp_minus_kappa_dt(ou_log_price):
    y = ou_log_price[:, OU_BURN_IN:] - OU.log_mean
    num, den = (y[:, 1:] * y[:, :-1]).sum(axis=1), (y[:, :-1] ** 2).sum(axis=1)
    rho, se = ratio_estimate(num, den)
    assert_within(rho, math.exp(-OU.kappa * DT), se, what="lag-1 autocorrelation")
    assert abs((1 - OU.kappa * DT) - math.exp(-OU.kappa * DT)) > (N_SE + 3) * se


# ----------------------------------------------------------------------------------------------
# Merton jump diffusion
# ----------------------------------------------------------------------------------------------

MERTON = MertonParams(mu=0.05, sigma=0.2, jump_intensity=20.0, jump_mean=-0.03, jump_std=0.05)


@pytest.fixture(scope="module")
def merton_sample():
    return simulate(MERTON, seed=3)


def merton_cumulants():
    p = MERTON
    lam_dt, m, s = p.jump_intensity * DT, p.jump_mean, p.jump_std
    compensator = p.jump_intensity * math.expm1(m + s**2 / 2)
    mean = (p.mu - p.sigma**2 / 2 - compensator) * DT + lam_dt * m
    var = p.sigma**2 * DT + lam_dt * (m**2 + s**2)
    k4 = lam_dt * (m**4 + 6 * m**2 * s**2 + 3 * s**4)
    return mean, var, k4 / var**2


def test_merton_log_returns_have_the_closed_form_mean_and_variance(merton_sample):
    r = f64(merton_sample.log_returns).ravel()
    n = r.size
    mean, var, _ = merton_cumulants()
    assert_within(r.mean(), mean, r.std(ddof=1) / math.sqrt(n), what="mean")
    # SE of the sample variance of i.i.d. data: sqrt((mu_4 - var^2) / n), mu_4 estimated.
    centred = r - r.mean()
    se_var = math.sqrt((np.mean(centred**4) - centred.var() ** 2) / n)
    assert_within(r.var(ddof=1), var, se_var, what="variance")


def test_merton_log_returns_are_fat_tailed_with_the_compound_poisson_excess_kurtosis(merton_sample):
    r = f64(merton_sample.log_returns).reshape(40, -1)  # 40 independent groups of 100 paths
    centred = r - r.mean(axis=1, keepdims=True)
    group_kurt = np.mean(centred**4, axis=1) / np.var(r, axis=1) ** 2 - 3.0
    kurt, se = group_kurt.mean(), group_kurt.std(ddof=1) / math.sqrt(len(group_kurt))
    _, _, expected = merton_cumulants()
    assert kurt - N_SE * se > 0.0
    assert_within(kurt, expected, se, what="excess kurtosis")


def test_merton_jumps_are_compensated_so_expected_price_grows_at_mu(merton_sample):
    assert_terminal_price_mean_is_s0_exp_mu_t(merton_sample, MERTON.mu)


# ----------------------------------------------------------------------------------------------
# Heston
# ----------------------------------------------------------------------------------------------

HESTON = HestonParams(mu=0.05, kappa=3.0, theta=0.04, xi=0.3, rho=-0.7, v0=0.09)  # Feller holds


@pytest.fixture(scope="module")
def heston_sample():
    return simulate(HESTON, seed=4)


def test_heston_mean_variance_reverts_as_theta_plus_v0_minus_theta_times_exp_minus_kappa_t(heston_sample):
    v = f64(heston_sample.variance)  # column t: variance in force during bar t, i.e. at time t dt
    p = HESTON
    for t in (21, 63, 126, N_STEPS - 1):
        expected = p.theta + (p.v0 - p.theta) * math.exp(-p.kappa * t * DT)
        # Euler's own mean is theta + (v0 - theta)(1 - kappa dt)^t: allow that known bias.
        bias = abs(p.v0 - p.theta) * abs((1 - p.kappa * DT) ** t - math.exp(-p.kappa * t * DT))
        se = v[:, t].std(ddof=1) / math.sqrt(v.shape[0])
        assert_within(v[:, t].mean(), expected, se, extra=bias, what=f"E[v] at bar {t}")


def test_heston_price_and_variance_shocks_are_standard_normal_with_correlation_rho(heston_sample):
    p = HESTON
    r, v = f64(heston_sample.log_returns), f64(heston_sample.variance)
    v_now, v_next, r_now = v[:, :-1], v[:, 1:], r[:, :-1]
    ok = (v_now > 0) & (v_next > 0)  # where truncation is inactive, the shocks can be recovered
    root = np.sqrt(np.where(ok, v_now, 1.0) * DT)
    z_s = ((r_now - (p.mu - v_now / 2) * DT) / root)[ok]
    z_v = ((v_next - v_now - p.kappa * (p.theta - v_now) * DT) / (p.xi * root))[ok]
    n = z_s.size
    assert n > 0.99 * v_now.size
    corr = np.corrcoef(z_s, z_v)[0, 1]
    assert_within(corr, p.rho, (1 - p.rho**2) / math.sqrt(n), what="corr(Z_S, Z_v)")
    for z in (z_s, z_v):
        assert_within(z.var(), 1.0, math.sqrt(2.0 / n), what="shock variance")


def test_heston_expected_terminal_price_is_s0_exp_mu_t(heston_sample):
    assert_terminal_price_mean_is_s0_exp_mu_t(heston_sample, HESTON.mu)


def test_heston_variance_stays_non_negative_when_feller_fails_and_truncation_bites():
    wild = HestonParams(mu=0.0, kappa=1.0, theta=0.04, xi=1.0, rho=-0.5, v0=0.04)  # 2 kappa theta << xi^2
    market = simulate(wild, seed=5)
    v = np.asarray(market.variance)
    assert (v == 0.0).any()  # the unconstrained Euler variance went negative somewhere...
    assert (v >= 0.0).all()  # ...yet the variance in force never is
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(market))


# ----------------------------------------------------------------------------------------------
# Regime switching
# ----------------------------------------------------------------------------------------------

REGIMES = RegimeSwitchingParams.create(
    transition=[[0.98, 0.02], [0.05, 0.95]], mu=[0.3, -0.5], sigma=[0.15, 0.5]
)


@pytest.fixture(scope="module")
def regime_sample():
    return simulate(REGIMES, seed=6)


def test_stationary_distribution_solves_pi_p_equals_pi():
    two_state = jnp.array([[0.9, 0.1], [0.2, 0.8]])  # pi_0 = 0.2 / (0.1 + 0.2) by balance
    np.testing.assert_allclose(stationary_distribution(two_state), [2 / 3, 1 / 3], rtol=1e-5)
    p = jnp.array([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.25, 0.25, 0.5]])
    pi = stationary_distribution(p)
    np.testing.assert_allclose(pi @ p, pi, atol=1e-6)
    np.testing.assert_allclose(pi.sum(), 1.0, rtol=1e-6)


def test_regime_occupancy_matches_the_stationary_distribution_of_the_chain(regime_sample):
    occupancy = (np.asarray(regime_sample.regime) == 0).mean(axis=1)  # per independent path
    se = occupancy.std(ddof=1) / math.sqrt(occupancy.size)
    assert_within(occupancy.mean(), 0.05 / 0.07, se, what="share of bars in regime 0")


def test_regime_returns_have_the_moments_of_their_regime(regime_sample):
    r, regime = f64(regime_sample.log_returns), np.asarray(regime_sample.regime)
    var_path = f64(regime_sample.variance)
    for k in (0, 1):
        rk = r[regime == k]
        mu, sigma = float(REGIMES.mu[k]), float(REGIMES.sigma[k])
        mean, var = (mu - sigma**2 / 2) * DT, sigma**2 * DT
        # given the regime path the returns are i.i.d. normal
        assert_within(rk.mean(), mean, math.sqrt(var / rk.size), what=f"mean in regime {k}")
        assert_within(rk.var(ddof=1), var, var * math.sqrt(2.0 / rk.size), what=f"variance in regime {k}")
        np.testing.assert_allclose(var_path[regime == k], sigma**2, rtol=1e-6)


def test_regime_chain_starts_from_the_given_initial_distribution():
    regime = jax.jit(jax.vmap(lambda k: markov_chain(k, REGIMES.transition, jnp.array([0.0, 1.0]), 10)))(
        jax.random.split(jax.random.key(7), 500)
    )
    assert (regime[:, 0] == 1).all()
    assert (regime[:, 1:] == 0).any()  # ...and moves on


# ----------------------------------------------------------------------------------------------
# OHLCV construction
# ----------------------------------------------------------------------------------------------


N_BARS = 100_000  # one length for the bar tests: one compilation of bars_from_log_returns


def test_intrabar_extremes_follow_the_brownian_bridge_maximum_law():
    sigma, n = 0.01, N_BARS
    bars, _ = bars_from_log_returns(jax.random.key(8), jnp.zeros(n), S0, sigma)
    up = np.log(f64(bars.high) / f64(bars.open))
    down = np.log(f64(bars.open) / f64(bars.low))
    # bridge from 0 to 0 with variance sigma^2: P(M >= m) = exp(-2 m^2 / sigma^2), so
    # E[M] = sigma sqrt(pi / 8) and Var[M] = sigma^2 (1/2 - pi/8); the minimum mirrors it.
    se = sigma * math.sqrt(0.5 - math.pi / 8) / math.sqrt(n)
    for m in (up, down):
        assert_within(m.mean(), sigma * math.sqrt(math.pi / 8), se, what="E[max of bridge]")


def test_open_is_previous_close_and_closes_reproduce_the_log_returns_without_a_gap():
    r = 0.01 * jax.random.normal(jax.random.key(9), (N_BARS,))
    bars, _ = bars_from_log_returns(jax.random.key(10), r, S0, 0.01)
    assert float(bars.open[0]) == S0
    np.testing.assert_array_equal(bars.open[1:], bars.close[:-1])
    np.testing.assert_allclose(bars.close, S0 * np.exp(np.cumsum(f64(r))), rtol=1e-5)


def test_a_gap_moves_the_open_away_from_the_previous_close_with_the_stated_volatility():
    sigma, gap_vol, n = 0.02, 0.5, N_BARS
    r = sigma * jax.random.normal(jax.random.key(11), (n,))
    bars, _ = bars_from_log_returns(jax.random.key(12), r, S0, sigma, BarParams(gap_vol=gap_vol))
    gap = np.log(f64(bars.open[1:]) / f64(bars.close[:-1]))
    expected = (gap_vol * sigma) ** 2
    assert_within(gap.var(), expected, expected * math.sqrt(2.0 / gap.size), what="gap variance")
    np.testing.assert_allclose(bars.close, S0 * np.exp(np.cumsum(f64(r))), rtol=1e-4)
    assert (f64(bars.high) >= np.maximum(f64(bars.open), f64(bars.close))).all()
    assert (f64(bars.low) <= np.minimum(f64(bars.open), f64(bars.close))).all()


def test_log_volume_rises_with_absolute_return_and_follows_the_trend():
    sigma, n, beta, trend = 0.01, N_BARS, 0.8, 2.0
    r = sigma * jax.random.normal(jax.random.key(13), (n,))
    bars, _ = bars_from_log_returns(
        jax.random.key(14), r, S0, sigma, BarParams(volume_beta=beta, volume_trend=trend, volume_noise=0.3)
    )
    log_v = np.log(f64(bars.volume))
    design = np.stack([np.ones(n), np.abs(f64(r)), np.arange(n) / (n - 1)], axis=1)
    coef, *_ = np.linalg.lstsq(design, log_v, rcond=None)
    resid = log_v - design @ coef
    cov = np.linalg.inv(design.T @ design) * resid.var(ddof=3)  # OLS standard errors
    se = np.sqrt(np.diag(cov))
    assert_within(coef[1], beta / sigma, se[1], what="slope on |r|")
    assert_within(coef[2], trend, se[2], what="trend")
    assert (f64(bars.volume) > 0).all()


def test_spread_is_the_floor_plus_a_multiple_of_bar_volatility():
    bar_vol = jnp.array([0.0, 0.01, 0.02, 0.05])
    _, spread = bars_from_log_returns(
        jax.random.key(15), jnp.zeros(4), S0, bar_vol, BarParams(spread_floor=2e-4, spread_vol_mult=0.1)
    )
    np.testing.assert_allclose(spread, [2e-4, 1.2e-3, 2.2e-3, 5.2e-3], rtol=1e-5)


@pytest.fixture(scope="module", params=MODELS)
def random_markets(request):
    """N_PATHS markets of one model with domain-randomised params: (model, keys, params, markets)."""
    model = request.param
    k_params, k_paths = jax.random.split(jax.random.key(16))
    params = jax.vmap(partial(sample_params, model=model))(jax.random.split(k_params, N_PATHS))
    keys = jax.random.split(k_paths, N_PATHS)
    return model, keys, params, BATCHED(keys, params)


def test_every_model_produces_valid_ohlcv_bars_for_random_parameters(random_markets):
    _, _, _, market = random_markets
    o, h, l, c, v = (f64(x) for x in market.bars)
    for x in jax.tree.leaves(market):
        assert x.shape == (N_PATHS, N_STEPS)
        assert np.isfinite(np.asarray(x)).all()
    assert (h >= np.maximum(o, c)).all()
    assert (l <= np.minimum(o, c)).all()
    assert (l > 0).all()
    assert (v >= 0).all()
    assert (f64(market.spread) > 0).all()
    assert (f64(market.variance) >= 0).all()
    np.testing.assert_allclose(c, S0 * np.exp(np.cumsum(f64(market.log_returns), axis=1)), rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# vmap, determinism, compilation, switch, panel, sampling
# ----------------------------------------------------------------------------------------------


def test_vmap_over_keys_and_params_equals_separate_calls(random_markets):
    _, keys, params, batched = random_markets
    for i in range(3):
        single = generate(keys[i], jax.tree.map(lambda x: x[i], params), N_STEPS, DT)
        for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
            # batched and unbatched programs may fuse the Heston variance recursion differently:
            # last-bit differences that accumulate over the scan, not a different market
            np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-6)


def test_same_key_gives_the_same_market_bit_for_bit_and_different_keys_differ(random_markets):
    params = jax.tree.map(lambda x: x[0], random_markets[2])
    a = generate(jax.random.key(20), params, N_STEPS, DT)
    b = generate(jax.random.key(20), params, N_STEPS, DT)
    c = generate(jax.random.key(21), params, N_STEPS, DT)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.log_returns, c.log_returns)
    assert not np.array_equal(a.bars.high, c.bars.high)


def test_a_jitted_batched_generator_does_not_recompile_for_new_keys_and_params():
    traces = []

    def one(key, params):
        traces.append(1)  # runs only while tracing
        return generate(key, params, n_steps=64, dt=DT)

    batched = jax.jit(jax.vmap(one))
    sample = jax.vmap(partial(sample_params, model="gbm"))
    first = batched(jax.random.split(jax.random.key(22), 8), sample(jax.random.split(jax.random.key(23), 8)))
    second = batched(jax.random.split(jax.random.key(24), 8), sample(jax.random.split(jax.random.key(25), 8)))
    assert len(traces) == 1
    assert batched._cache_size() == 1
    assert not np.array_equal(first.log_returns, second.log_returns)


def test_generate_switch_picks_the_indexed_model_and_matches_generate():
    params = typed((GBMParams(), REGIMES, HESTON, MERTON, OU))  # in MODELS order
    key = jax.random.key(31)
    switched = jax.jit(partial(generate_switch, n_steps=N_STEPS, dt=DT))
    for i in range(len(MODELS)):
        got = switched(key, jnp.int32(i), params)
        want = generate(key, params[i], N_STEPS, DT)
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    assert switched._cache_size() == 1


def test_panel_is_time_by_asset_and_gbm_returns_have_the_requested_correlation():
    corr = jnp.array([[1.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 1.0]])
    run = jax.vmap(partial(panel, n_steps=5000, dt=DT, n_assets=3, correlation=corr), in_axes=(0, None))
    markets = run(jax.random.split(jax.random.key(32), 8), GBMParams(mu=0.05, sigma=0.2))
    assert markets.bars.close.shape == (8, 5000, 3)
    assert markets.spread.shape == (8, 5000, 3)
    r = f64(markets.log_returns).reshape(-1, 3)
    sample = np.corrcoef(r, rowvar=False)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        rho = float(corr[i, j])
        # SE of a sample correlation of normal data: (1 - rho^2) / sqrt(n)
        assert_within(sample[i, j], rho, (1 - rho**2) / math.sqrt(r.shape[0]), what=f"corr[{i},{j}]")


def test_panel_with_per_asset_params_gives_each_asset_its_own_volatility():
    sigma = jnp.array([0.1, 0.4])
    params = GBMParams(mu=jnp.zeros(2), sigma=sigma)  # a leading asset axis on every leaf
    market = panel(jax.random.key(33), params, 20_000, DT, s0=jnp.array([50.0, 200.0]))
    assert market.bars.close.shape == (20_000, 2)
    np.testing.assert_allclose(market.bars.open[0], [50.0, 200.0])
    r = f64(market.log_returns)
    for a in range(2):
        var = float(sigma[a]) ** 2 * DT
        assert_within(r[:, a].var(ddof=1), var, var * math.sqrt(2.0 / r.shape[0]), what=f"asset {a} variance")


def test_sampled_params_lie_inside_the_documented_ranges(random_markets):
    model, _, params, _ = random_markets
    ranges = DEFAULT_RANGES[model]
    if model == "regime_switching":
        p = np.asarray(params.transition)
        np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-5)
        stay = np.diagonal(p, axis1=1, axis2=2)
        low, high = ranges["duration"]
        assert (stay >= 1 - 1 / low - 1e-6).all() and (stay <= 1 - 1 / high + 1e-6).all()
        np.testing.assert_allclose(np.einsum("bi,bij->bj", params.initial, p), params.initial, atol=1e-5)
        fields = {"mu": params.mu, "sigma": params.sigma}
    else:
        fields = {name: getattr(params, name) for name in ranges}
    for name, values in fields.items():
        low, high = ranges[name]
        values = np.asarray(values)
        assert (values >= low).all() and (values <= high).all(), name
        assert values.std() > 0.2 * (high - low) / math.sqrt(12), name  # spread over the range


def test_sample_params_honours_overridden_ranges_and_rejects_unknown_fields():
    params = jax.vmap(partial(sample_params, model="gbm", ranges={"sigma": (0.5, 0.6)}))(
        jax.random.split(jax.random.key(35), 64)
    )
    assert (np.asarray(params.sigma) >= 0.5).all() and (np.asarray(params.sigma) <= 0.6).all()
    with pytest.raises(ValueError, match="unknown fields"):
        sample_params(jax.random.key(0), "gbm", {"kappa": (1.0, 2.0)})
    with pytest.raises(ValueError, match="unknown model"):
        sample_params(jax.random.key(0), "garch")


def test_generate_rejects_a_model_name_that_disagrees_with_the_params():
    with pytest.raises(ValueError, match="gbm"):
        generate(jax.random.key(0), OUParams(), 8, DT, model="gbm")
    with pytest.raises(TypeError):
        generate(jax.random.key(0), {"mu": 0.1}, 8, DT)
