"""Portfolio optimisers (trading_jax.portfolio) against PyPortfolioOpt, scikit-learn and cvxpy.

Every case runs on 10 real stocks (../shared/data/stocks_daily, skipped when absent) and on a seeded synthetic
market, so the parity also runs without the data. Our float32 results are compared with the references fed
the same float32-rounded inputs as float64: weights to 1e-4, Ledoit-Wolf and Black-Litterman to 1e-6.
Compilations are shared: the five mean-variance problems run one compiled program (`_solve`), and the
batched (vmapped) functions are built once at module level.
"""

from __future__ import annotations

import functools
import warnings

import cvxpy as cp
import jax
import numpy as np
import pandas as pd
import pytest
from pypfopt import BlackLittermanModel, EfficientFrontier, black_litterman, expected_returns, risk_models
from pypfopt.base_optimizer import portfolio_performance as pypfopt_performance
from sklearn.covariance import ledoit_wolf as sklearn_ledoit_wolf

from trading_jax import portfolio as pf

TICKERS = ["AAPL", "MSFT", "XOM", "JNJ", "WMT", "PG", "BAC", "T", "PFE", "MRK"]
WEIGHT_TOL = 1e-4
EXACT_TOL = 1e-6
CAP = 0.15  # binds with 10 assets (checked below)
RF = 0.02


def _f32(x):
    """The float32 values JAX sees, as float64 for the reference libraries."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def _synthetic_prices() -> pd.DataFrame:
    """500 days of 10 log-normal prices with a market factor (betas 0.5-1.5) and drifts of -5% to 30% a year."""
    rng = np.random.default_rng(13)
    n, t = 10, 500
    market = rng.normal(0.0, 0.01, t)
    betas = rng.uniform(0.5, 1.5, n)
    drift = rng.uniform(-0.05, 0.30, n) / 252
    log_ret = drift + market[:, None] * betas + rng.normal(0.0, 0.012, (t, n))
    prices = 100 * np.exp(np.cumsum(log_ret, axis=0))
    return pd.DataFrame(prices, columns=[f"S{i}" for i in range(n)],
                        index=pd.bdate_range("2020-01-01", periods=t))


@pytest.fixture(scope="module", params=[pytest.param("real", marks=pytest.mark.shared_data), "synthetic"])
def market(request):
    """Prices `[T, N]`, returns, annualised mu and sample covariance (float32-rounded, as float64)."""
    if request.param == "real":
        folder = request.getfixturevalue("shared_data") / "stocks_daily"
        prices = pd.concat({t: pd.read_csv(folder / f"{t}.csv", index_col="Date", parse_dates=True)["Adj Close"]
                            for t in TICKERS}, axis=1).dropna().iloc[-500:]
    else:
        prices = _synthetic_prices()
    returns = _f32(expected_returns.returns_from_prices(prices))
    mu = _f32(expected_returns.mean_historical_return(prices))
    cov = _f32(risk_models.sample_cov(prices))
    return {"prices": prices, "returns": returns, "mu": mu, "cov": cov}


# ------------------------------------------------------------------------------------------ covariance


def test_sample_covariance_matches_pypfopt(market):
    ours = pf.sample_covariance(market["returns"].astype(np.float32), frequency=252)
    ref = risk_models.sample_cov(pd.DataFrame(market["returns"]), returns_data=True, frequency=252)
    np.testing.assert_allclose(np.asarray(ours), ref.values, atol=EXACT_TOL, rtol=0)


def test_ledoit_wolf_matches_sklearn_and_pypfopt_with_its_shrinkage(market):
    cov, delta = pf.ledoit_wolf(market["returns"].astype(np.float32), frequency=252)
    sk_cov, sk_delta = sklearn_ledoit_wolf(market["returns"])
    shrink = risk_models.CovarianceShrinkage(pd.DataFrame(market["returns"]), returns_data=True, frequency=252)
    ppo_cov = shrink.ledoit_wolf()
    assert 0 < float(delta) < 1
    np.testing.assert_allclose(float(delta), sk_delta, atol=EXACT_TOL, rtol=0)
    np.testing.assert_allclose(float(delta), shrink.delta, atol=EXACT_TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(cov), 252 * sk_cov, atol=EXACT_TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(cov), ppo_cov.values, atol=EXACT_TOL, rtol=0)


def test_the_covariance_estimators_give_the_same_numbers_eagerly_as_compiled():
    returns = np.random.default_rng(3).normal(2e-4, 0.01, (60, 4)).astype(np.float32)
    cov, delta = pf.ledoit_wolf(returns)
    with jax.disable_jit():
        eager_cov, eager_delta = pf.ledoit_wolf(returns)
    np.testing.assert_allclose(np.asarray(eager_cov), np.asarray(cov), rtol=1e-5)
    np.testing.assert_allclose(float(eager_delta), float(delta), rtol=1e-5)


# -------------------------------------------------------------------------------------- mean-variance


def _frontier_ends(mu, cov, cap):
    """PyPortfolioOpt's minimum-volatility portfolio and the maximum-return one (return and volatility)."""
    ef = EfficientFrontier(mu, cov, weight_bounds=(0, cap))
    w_min = ef.min_volatility()
    w_min = np.array(list(w_min.values()))
    w_max = np.asarray(pf.max_return(mu.astype(np.float32), cap), dtype=np.float64)
    return (mu @ w_min, np.sqrt(w_min @ cov @ w_min)), (mu @ w_max, np.sqrt(w_max @ cov @ w_max))


def _reference(kind, mu, cov, cap):
    """(our call, PyPortfolioOpt's weights) for one problem; the targets sit mid-frontier."""
    (r_min, v_min), (r_max, v_max) = _frontier_ends(mu, cov, cap)
    ef = EfficientFrontier(mu, cov, weight_bounds=(0, cap))
    m32, c32 = mu.astype(np.float32), cov.astype(np.float32)
    if kind == "min_volatility":
        return pf.min_volatility(c32, cap), ef.min_volatility()
    if kind == "max_quadratic_utility":
        return pf.max_quadratic_utility(m32, c32, 3.0, cap), ef.max_quadratic_utility(3.0)
    if kind == "max_sharpe":
        return pf.max_sharpe(m32, c32, RF, cap), ef.max_sharpe(RF)
    if kind == "efficient_return":
        target = float(0.5 * (r_min + r_max))
        return pf.efficient_return(m32, c32, target, cap), ef.efficient_return(target)
    target = float(0.5 * (v_min + v_max))
    return pf.efficient_risk(m32, c32, target, cap), ef.efficient_risk(target)


KINDS = ["min_volatility", "max_quadratic_utility", "max_sharpe", "efficient_return", "efficient_risk"]


@pytest.mark.parametrize("cap", [1.0, CAP], ids=["long_only", "capped"])
@pytest.mark.parametrize("kind", KINDS)
def test_mean_variance_weights_match_pypfopt(market, kind, cap):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, ref = _reference(kind, market["mu"], market["cov"], cap)
    ref = np.array(list(ref.values()))
    w = np.asarray(ours.weights)
    assert int(ours.status) == pf.OPTIMAL
    assert np.all(w >= 0) and np.all(w <= cap) and abs(w.sum() - 1) < 1e-5
    np.testing.assert_allclose(w, ref, atol=WEIGHT_TOL, rtol=0)


@pytest.mark.parametrize("kind", ["max_sharpe", "efficient_return", "max_quadratic_utility"])
def test_the_cap_binds_in_the_capped_cases(market, kind):
    """The capped parity cases are not the long-only ones in disguise: some weight sits at the cap."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, ref = _reference(kind, market["mu"], market["cov"], CAP)
    assert np.isclose(max(ref.values()), CAP, atol=1e-6)
    assert np.isclose(float(np.max(ours.weights)), CAP, atol=1e-6)


def test_per_asset_caps_match_pypfopt_and_a_zero_cap_keeps_an_asset_out(market):
    mu, cov = market["mu"], market["cov"]
    caps = np.full(len(mu), 0.2)
    caps[int(np.argmax(mu))] = 0.0  # the best asset is excluded
    ours = pf.max_sharpe(mu.astype(np.float32), cov.astype(np.float32), RF, caps.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = EfficientFrontier(mu, cov, weight_bounds=[(0, c) for c in caps]).max_sharpe(RF)
    assert int(ours.status) == pf.OPTIMAL
    assert float(ours.weights[int(np.argmax(mu))]) == 0.0
    np.testing.assert_allclose(np.asarray(ours.weights), list(ref.values()), atol=WEIGHT_TOL, rtol=0)


def test_max_return_and_performance_match_pypfopt(market):
    mu, cov = market["mu"], market["cov"]
    ef = EfficientFrontier(mu, cov, weight_bounds=(0, CAP))
    ef._max_return()
    w = pf.max_return(mu.astype(np.float32), CAP)
    np.testing.assert_allclose(np.asarray(w), ef.weights, atol=WEIGHT_TOL, rtol=0)
    ours = pf.portfolio_performance(w, mu.astype(np.float32), cov.astype(np.float32), RF)
    ref = pypfopt_performance(np.asarray(w, np.float64), mu, cov, risk_free_rate=RF)
    np.testing.assert_allclose([float(x) for x in ours], ref, rtol=1e-5)


# One compiled batched program for the vmap/jit tests and the traced-infeasibility test.
_batched_max_sharpe = jax.jit(jax.vmap(lambda m, c, rf: pf.max_sharpe(m, c, rf, CAP), in_axes=(0, 0, None)))


@pytest.fixture(scope="module")
def three_dates(market):
    """Expected returns `[3, N]` and covariances `[3, N, N]` of three overlapping 300-day windows."""
    prices = market["prices"]
    mus, covs = [], []
    for start in (0, 100, 200):
        window = prices.iloc[start:start + 300]
        mus.append(expected_returns.mean_historical_return(window))
        covs.append(risk_models.sample_cov(window))
    return np.asarray(mus, np.float32), np.asarray(covs, np.float32)


def test_jitted_vmap_over_dates_equals_the_loop_of_single_calls_and_pypfopt(three_dates):
    mus, covs = three_dates
    batched = _batched_max_sharpe(mus, covs, RF)
    loop = [pf.max_sharpe(mus[d], covs[d], RF, CAP) for d in range(3)]
    np.testing.assert_allclose(np.asarray(batched.weights), np.stack([r.weights for r in loop]), atol=1e-6, rtol=0)
    assert np.all(np.asarray(batched.status) == pf.OPTIMAL)
    for d in range(3):
        ref = EfficientFrontier(_f32(mus[d]), _f32(covs[d]), weight_bounds=(0, CAP)).max_sharpe(RF)
        np.testing.assert_allclose(np.asarray(batched.weights[d]), list(ref.values()), atol=WEIGHT_TOL, rtol=0)


def test_traced_max_sharpe_without_an_asset_above_the_risk_free_rate_is_flagged_infeasible(three_dates):
    mus, covs = three_dates
    result = _batched_max_sharpe(mus, covs, float(mus.max()) + 1.0)
    assert np.all(np.asarray(result.status) == pf.INFEASIBLE)


def test_unreachable_targets_are_flagged_with_the_closest_attainable_weights(market):
    mu, cov = market["mu"].astype(np.float32), market["cov"].astype(np.float32)
    too_high = pf.efficient_return(mu, cov, float(mu.max()) + 0.1, CAP)
    assert int(too_high.status) == pf.INFEASIBLE
    np.testing.assert_allclose(np.asarray(too_high.weights), np.asarray(pf.max_return(mu, CAP)), atol=1e-7)
    w_min = pf.min_volatility(cov, CAP).weights
    too_low = pf.efficient_risk(mu, cov, 0.5 * float(np.sqrt(w_min @ cov @ w_min)), CAP)
    assert int(too_low.status) == pf.INFEASIBLE
    np.testing.assert_allclose(np.asarray(too_low.weights), np.asarray(w_min), atol=WEIGHT_TOL)
    # a target below the minimum-volatility return leaves the constraint slack: the minimum-volatility portfolio
    slack = pf.efficient_return(mu, cov, float(mu.min()) - 1.0, CAP)
    assert int(slack.status) == pf.OPTIMAL
    np.testing.assert_allclose(np.asarray(slack.weights), np.asarray(w_min), atol=WEIGHT_TOL)


# -------------------------------------------------------------------------------------- Black-Litterman


@pytest.fixture(scope="module")
def bl_case(market):
    """A market prior from made-up caps, two views (one absolute, one relative) on the market covariance."""
    cov = market["cov"]
    n = cov.shape[0]
    caps = _f32(np.linspace(1.0, 3.0, n) * 1e11)
    P = np.zeros((2, n))
    P[0, 0] = 1.0
    P[1, 1], P[1, 2] = 1.0, -1.0
    Q = np.array([0.10, 0.03])
    return cov, caps, P, Q


def test_market_implied_prior_and_risk_aversion_match_pypfopt(market, bl_case):
    cov, caps, _, _ = bl_case
    ours = pf.market_implied_prior_returns(caps.astype(np.float32), cov.astype(np.float32), 2.5, RF)
    ref = black_litterman.market_implied_prior_returns(pd.Series(caps), 2.5, pd.DataFrame(cov), RF)
    np.testing.assert_allclose(np.asarray(ours), ref.values, atol=EXACT_TOL, rtol=0)
    index = market["prices"].mean(axis=1)  # an equal-price index stands in for the market
    index_returns = index.pct_change().dropna()
    delta = pf.market_implied_risk_aversion(index_returns.values.astype(np.float32), 252, RF)
    ref_delta = black_litterman.market_implied_risk_aversion(index, 252, RF)
    np.testing.assert_allclose(float(delta), ref_delta, rtol=1e-5)


@pytest.mark.parametrize("omega", ["default", "given", "idzorek"])
def test_black_litterman_posterior_matches_pypfopt(bl_case, omega):
    cov, caps, P, Q = bl_case
    pi = _f32(black_litterman.market_implied_prior_returns(pd.Series(caps), 2.5, pd.DataFrame(cov)).values)
    kwargs, ours_kwargs = {}, {}
    if omega == "given":
        given = np.diag([0.002, 0.0005])
        kwargs["omega"] = ours_kwargs["omega"] = given
    elif omega == "idzorek":
        kwargs = {"omega": "idzorek", "view_confidences": [0.6, 0.3]}
        ours_kwargs = {"view_confidences": np.array([0.6, 0.3])}
    ref = BlackLittermanModel(cov, pi=pi, P=P, Q=Q, tau=0.05, **kwargs)
    ours = pf.black_litterman_posterior(cov.astype(np.float32), pi.astype(np.float32), P.astype(np.float32),
                                        Q.astype(np.float32), tau=0.05, **ours_kwargs)
    np.testing.assert_allclose(np.asarray(ours.omega), ref.omega, atol=EXACT_TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(ours.returns), ref.bl_returns().values, atol=EXACT_TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(ours.cov), ref.bl_cov().values, atol=EXACT_TOL, rtol=0)


# ---------------------------------------------------------------------------------------- risk parity


def _cvxpy_risk_budget(cov, budgets):
    """The same convex problem in cvxpy: argmin 1/2 y'Σy - b'log y, w = y / sum y."""
    y = cp.Variable(cov.shape[0])
    cp.Problem(cp.Minimize(0.5 * cp.quad_form(y, cov) - budgets @ cp.log(y))).solve()
    return y.value / y.value.sum()


@pytest.mark.parametrize("budgets", ["equal", "unequal"])
def test_risk_budgeting_matches_cvxpy_and_meets_the_budgets(market, budgets):
    cov = market["cov"]
    n = cov.shape[0]
    b = np.full(n, 1.0 / n) if budgets == "equal" else np.linspace(1.0, 2.0, n) / np.linspace(1.0, 2.0, n).sum()
    result = pf.risk_budgeting(cov.astype(np.float32), None if budgets == "equal" else b.astype(np.float32))
    assert bool(result.converged)
    np.testing.assert_allclose(np.asarray(result.weights), _cvxpy_risk_budget(cov, b), atol=WEIGHT_TOL, rtol=0)
    w = np.asarray(result.weights, np.float64)
    rc = w * (cov @ w) / (w @ cov @ w)  # the defining property, in float64
    np.testing.assert_allclose(rc, b, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(result.risk_contributions), b, atol=1e-5, rtol=0)


def test_risk_budgeting_vmapped_over_dates_equals_the_loop(three_dates):
    _, covs = three_dates
    batched = jax.jit(jax.vmap(lambda c: pf.risk_budgeting(c).weights))(covs)
    loop = np.stack([pf.risk_budgeting(c).weights for c in covs])
    np.testing.assert_allclose(np.asarray(batched), loop, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------- rebalancing

# Two assets, four periods, targets 50/50, 1% cost per unit of turnover, starting in cash.
HAND_RETURNS = np.array([[0.10, 0.00], [0.10, -0.10], [0.00, 0.20], [-0.10, 0.10]], np.float32)


def test_calendar_rebalancing_by_hand():
    """Every 2 periods (t = 0, 2):
    t=0: cash earns 0; buy 50/50: turnover 1, cost 0.01, net (1)(0.99) - 1 = -0.01.
    t=1: g = .5(.1) + .5(-.1) = 0; drift to (.55, .45); no trade: net 0.
    t=2: g = .55(0) + .45(.2) = .09; drift (.55, .54)/1.09 = .5 +- .005/1.09; trade back: turnover .01/1.09
         = .0091743, cost .01 * .0091743 = 9.1743e-5; net 1.09 (1 - 9.1743e-5) - 1 = .09 - .0001 = .0899.
    t=3: g = .5(-.1) + .5(.1) = 0; drift to (.45, .55); no trade: net 0.
    """
    res = pf.simulate_rebalancing([0.5, 0.5], HAND_RETURNS, pf.Calendar(every=2), cost_rate=0.01)
    np.testing.assert_allclose(np.asarray(res.weights), [[.5, .5], [.55, .45], [.5, .5], [.45, .55]], atol=1e-7)
    np.testing.assert_allclose(np.asarray(res.turnover), [1.0, 0.0, 0.01 / 1.09, 0.0], atol=1e-7)
    np.testing.assert_allclose(np.asarray(res.costs), [0.01, 0.0, 1e-4 / 1.09, 0.0], atol=1e-8)
    np.testing.assert_allclose(np.asarray(res.returns), [-0.01, 0.0, 0.0899, 0.0], atol=1e-7)
    assert np.asarray(res.rebalanced).tolist() == [True, False, True, False]


def test_threshold_rebalancing_by_hand():
    """Band 0.04 on the largest deviation:
    t=1: drift (.55, .45) deviates .05 > .04: trade, turnover .1, cost .001, net -.001.
    t=2: g = .5(0) + .5(.2) = .1; drift (.5, .6)/1.1 deviates .0455: trade, turnover .1/1.1, cost .001/1.1,
         net 1.1 (1 - .001/1.1) - 1 = .099.
    With an L1 band of 0.12 neither drift (L1 .1 and .0909) trades after t=0.
    """
    res = pf.simulate_rebalancing([0.5, 0.5], HAND_RETURNS, pf.Threshold(band=0.04), cost_rate=0.01)
    np.testing.assert_allclose(np.asarray(res.returns), [-0.01, -0.001, 0.099, -0.001], atol=1e-7)
    assert np.asarray(res.rebalanced).tolist() == [True, True, True, True]
    l1 = pf.simulate_rebalancing([0.5, 0.5], HAND_RETURNS, pf.Threshold(band=0.12, norm="l1"), cost_rate=0.01)
    assert np.asarray(l1.rebalanced).tolist() == [True, False, False, False]


def _volatility_target_reference(target, returns, rule, rate):
    """A plain NumPy loop of the volatility rule (the module docstring's equations)."""
    w = np.zeros(returns.shape[1])
    held, nets = [], []
    for t in range(len(returns)):
        g = w @ returns[t]
        drift = w * (1 + returns[t]) / (1 + g)
        scale = 0.0
        if t >= rule.window - 1:
            vol = np.std(returns[t - rule.window + 1:t + 1] @ target, ddof=1) * np.sqrt(rule.frequency)
            scale = min(rule.target_vol / vol, rule.max_gross / np.abs(target).sum())
        new = scale * target if t % rule.every == 0 else drift
        cost = rate * np.abs(new - drift).sum()
        held.append(new)
        nets.append((1 + g) * (1 - cost) - 1)
        w = new
    return np.array(held), np.array(nets)


def test_volatility_target_matches_a_numpy_loop_and_caps_the_gross_exposure(market):
    returns = market["returns"][:60, :4]
    target = np.array([0.4, 0.3, 0.2, 0.1])
    rule = pf.VolatilityTarget(target_vol=0.15, window=10, max_gross=1.0, every=2)
    res = pf.simulate_rebalancing(target.astype(np.float32), returns.astype(np.float32), rule, cost_rate=0.002)
    held, nets = _volatility_target_reference(target, returns, rule, 0.002)
    np.testing.assert_allclose(np.asarray(res.weights), held, atol=1e-5)
    np.testing.assert_allclose(np.asarray(res.returns), nets, atol=1e-6)
    assert np.all(np.asarray(res.weights)[:9] == 0)  # cash until 10 returns are known
    assert np.all(np.abs(np.asarray(res.weights)).sum(axis=1) <= 1.0 + 1e-6)


def test_rebalancing_jitted_vmap_over_paths_equals_the_loop_of_calls(market):
    rule = pf.Threshold(band=0.03, norm="l1")
    paths = np.stack([market["returns"][i * 8:(i + 1) * 8, :3] for i in range(3)]).astype(np.float32)
    target = np.array([0.5, 0.3, 0.2], np.float32)
    run = jax.jit(jax.vmap(lambda r: pf.simulate_rebalancing(target, r, rule, 1e-3).returns))
    loop = np.stack([pf.simulate_rebalancing(target, p, rule, 1e-3).returns for p in paths])
    np.testing.assert_allclose(np.asarray(run(paths)), loop, atol=1e-6)
    assert 0 < int(np.sum(np.asarray(pf.simulate_rebalancing(target, paths[0], rule, 1e-3).rebalanced))) < 8


# ---------------------------------------------------------------------------------------- projections


def test_the_capped_simplex_projection_never_exceeds_its_cap():
    rng = np.random.default_rng(0)
    scores = (rng.normal(size=(200, 10)) * rng.choice([1e-3, 1.0, 1e3], size=(200, 1))).astype(np.float32)
    caps = np.array([0.1, 0.15, 0.3, 1.0] * 50, np.float32)[:, None]
    project = jax.jit(functools.partial(pf.project_capped_simplex, unroll=False))  # same maths, quicker to compile
    w = np.asarray(project(scores, caps))
    assert np.all(w >= 0) and np.all(w <= caps)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------------------ bad input

GOOD_COV = np.array([[0.04, 0.01], [0.01, 0.09]], np.float32)
GOOD_MU = np.array([0.05, 0.10], np.float32)

BAD_INPUTS = {
    "non-square cov": (lambda: pf.min_volatility(np.ones((2, 3))), "square"),
    "NaN in cov": (lambda: pf.min_volatility(np.array([[np.nan, 0], [0, 1.0]])), "NaN"),
    "non-PSD cov": (lambda: pf.min_volatility(np.array([[1.0, 2.0], [2.0, 1.0]])), "positive semidefinite"),
    "asymmetric cov": (lambda: pf.min_volatility(np.array([[1.0, 0.5], [0.0, 1.0]])), "symmetric"),
    "cap * N < 1": (lambda: pf.min_volatility(GOOD_COV, cap=0.4), "cap \\* N"),
    "cap above 1": (lambda: pf.max_sharpe(GOOD_MU, GOOD_COV, cap=1.5), "cap must be in"),
    "mu of the wrong length": (lambda: pf.max_sharpe(np.ones(3), GOOD_COV), "expected_returns"),
    "no asset above rf": (lambda: pf.max_sharpe(GOOD_MU, GOOD_COV, risk_free_rate=0.2), "risk-free"),
    "negative volatility": (lambda: pf.efficient_risk(GOOD_MU, GOOD_COV, -0.1), "target_volatility"),
    "zero risk aversion": (lambda: pf.max_quadratic_utility(GOOD_MU, GOOD_COV, 0.0), "risk_aversion"),
    "NaN returns": (lambda: pf.ledoit_wolf(np.array([[0.01, np.nan], [0.02, 0.0]])), "NaN"),
    "1-D returns": (lambda: pf.sample_covariance(np.ones(5)), "\\[T, N\\]"),
    "negative budget": (lambda: pf.risk_budgeting(GOOD_COV, np.array([1.0, -1.0])), "budgets"),
    "tau above 1": (lambda: pf.black_litterman_posterior(GOOD_COV, GOOD_MU, np.eye(2), GOOD_MU, tau=2.0), "tau"),
    "P of the wrong width": (lambda: pf.black_litterman_posterior(GOOD_COV, GOOD_MU, np.ones((1, 3)), [0.1]), "P must"),
    "confidence above 1": (lambda: pf.idzorek_omega([1.5], GOOD_COV, np.ones((1, 2))), "view_confidences"),
    "targets of the wrong shape": (lambda: pf.simulate_rebalancing(np.ones(3), np.zeros((4, 2))), "target_weights"),
    "cost rate of 50%": (lambda: pf.simulate_rebalancing(GOOD_MU, np.zeros((4, 2)), cost_rate=0.5), "cost_rate"),
    "log returns below -1": (lambda: pf.simulate_rebalancing(GOOD_MU, np.full((4, 2), -2.0)), "below -1"),
    "unknown threshold norm": (lambda: pf.Threshold(norm="l2"), "norm"),
    "volatility window of 1": (lambda: pf.VolatilityTarget(window=1), "window"),
    "zero solver iterations": (lambda: pf.SolverConfig(qp_iters=0), "qp_iters"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_a_one_line_value_error(case):
    call, match = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
