"""Performance and risk metrics match empyrical on real and random returns, by hand, under jit and vmap."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import empyrical  # the reference library (dev extra: empyrical-reloaded)

from trading_jax.evaluation import (  # noqa: E402
    alpha,
    annual_return,
    annual_volatility,
    annualization_factor,
    beta,
    calmar_ratio,
    conditional_value_at_risk,
    cumulative_returns,
    downside_risk,
    max_drawdown,
    parametric_value_at_risk,
    profit_factor,
    sharpe_ratio,
    sortino_ratio,
    tail_ratio,
    total_return,
    turnover,
    value_at_risk,
    win_rate,
)

# float32 JAX against float64 empyrical, fed the same float32-rounded returns. Measured worst case is
# about 5e-7 relative (AAPL/AMZN and the seeded series); 2e-5 leaves room across platforms.
RTOL = 2e-5
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "stocks_daily"


def close(a, b, rtol=RTOL, atol=0.0):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), b, rtol=rtol, atol=atol)


def _f32(x):
    """The float32 values JAX will see, as float64 for the reference library."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


# (ours, empyrical) over one return series; empyrical's NaN-free ones get NaN-free input.
UNARY = {
    "total_return": (total_return, empyrical.cum_returns_final),
    "annual_return": (annual_return, empyrical.annual_return),
    "annual_volatility": (annual_volatility, empyrical.annual_volatility),
    "sharpe_ratio": (lambda r: sharpe_ratio(r, risk_free=1e-4), lambda r: empyrical.sharpe_ratio(r, risk_free=1e-4)),
    "sortino_ratio": (sortino_ratio, empyrical.sortino_ratio),
    "downside_risk": (downside_risk, empyrical.downside_risk),
    "max_drawdown": (max_drawdown, empyrical.max_drawdown),
    "calmar_ratio": (calmar_ratio, empyrical.calmar_ratio),
    "value_at_risk": (value_at_risk, empyrical.value_at_risk),
    "conditional_value_at_risk": (conditional_value_at_risk, empyrical.conditional_value_at_risk),
    "tail_ratio": (tail_ratio, empyrical.tail_ratio),
}


@pytest.fixture(scope="module")
def random_pair():
    """Seeded daily-like returns (strategy with a few NaNs, and a correlated factor)."""
    rng = np.random.default_rng(13)
    factor = rng.normal(3e-4, 0.01, 500)
    returns = 0.8 * factor + rng.normal(2e-4, 0.008, 500)
    returns[[3, 50, 51, 400]] = np.nan
    factor[[10, 200]] = np.nan
    return _f32(returns), _f32(factor)


@pytest.fixture(scope="module")
def real_pair():
    """AAPL and AMZN daily simple returns from the shared data folder, aligned by date."""
    if not (DATA / "AAPL.csv").exists() or not (DATA / "AMZN.csv").exists():
        pytest.skip("shared stock data not present (optional resource: ../shared/data)")
    import pandas as pd
    prices = pd.concat({name: pd.read_csv(DATA / f"{name}.csv", index_col="Date")["Adj Close"]
                        for name in ("AAPL", "AMZN")}, axis=1).sort_index()
    rets = prices.pct_change().iloc[1:]
    return _f32(rets["AAPL"].to_numpy()), _f32(rets["AMZN"].to_numpy())


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_metrics_match_empyrical_on_random_returns_with_nans(random_pair, name):
    ours, ref = UNARY[name]
    returns, _ = random_pair
    if name == "value_at_risk":  # empyrical's plain np.percentile: any NaN gives NaN
        assert np.isnan(ours(returns)) and np.isnan(ref(returns))
        returns = returns[~np.isnan(returns)]
    close(ours(returns), ref(returns))


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_metrics_match_empyrical_on_real_aapl_returns(real_pair, name):
    ours, ref = UNARY[name]
    returns, _ = real_pair
    close(ours(returns), ref(returns))


@pytest.mark.parametrize("pair", ["random_pair", "real_pair"])
def test_alpha_beta_and_cumulative_returns_match_empyrical(request, pair):
    returns, factor = request.getfixturevalue(pair)
    ref_alpha, ref_beta = empyrical.alpha_beta(returns, factor, risk_free=1e-4)
    close(beta(returns, factor), ref_beta)
    close(alpha(returns, factor, risk_free=1e-4), ref_alpha)
    close(cumulative_returns(returns), empyrical.cum_returns(returns), atol=1e-6)


def test_parametric_var_is_the_normal_quantile_with_sample_std(random_pair):
    returns, _ = random_pair
    clean = returns[~np.isnan(returns)]
    expected = stats.norm.ppf(0.01, loc=clean.mean(), scale=clean.std(ddof=1))
    close(parametric_value_at_risk(returns, 0.01), expected)


def test_max_drawdown_and_profit_factor_by_hand():
    r = jnp.array([0.10, -0.20, 0.05, -0.50, 1.00])
    # wealth 1.1, 0.88, 0.924, 0.462, 0.924; peak 1.1 -> worst 0.462 / 1.1 - 1 = -0.58
    close(max_drawdown(r), -0.58)
    close(profit_factor(r), (0.10 + 0.05 + 1.00) / (0.20 + 0.50))
    close(win_rate(jnp.array([0.1, 0.0, -0.2, np.nan, 0.3])), 2 / 3)  # zeros and NaNs do not count
    assert max_drawdown(jnp.array([0.1, 0.2])) == 0.0
    close(max_drawdown(jnp.array([-0.1, 0.05])), -0.1)  # the start is a peak
    assert profit_factor(jnp.array([0.1, 0.0])) == np.inf
    assert np.isnan(profit_factor(jnp.array([0.0, np.nan])))


def test_turnover_by_hand():
    w = jnp.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])  # trades 1.0, then 2.0
    close(turnover(w), 1.5)
    close(turnover(jnp.stack([w, w[::-1]])), [1.5, 1.5])
    assert np.isnan(turnover(w[:1]))
    with pytest.raises(ValueError, match="turnover"):
        turnover(jnp.ones(3))


def test_edge_cases_follow_empyrical():
    one = np.array([0.01])
    for ours, ref in [(sharpe_ratio, empyrical.sharpe_ratio), (annual_volatility, empyrical.annual_volatility),
                      (sortino_ratio, empyrical.sortino_ratio)]:
        assert np.isnan(ours(one)) and np.isnan(ref(one))
    flat = np.full(10, 0.001)
    assert sharpe_ratio(flat) == empyrical.sharpe_ratio(flat) == np.inf
    assert sortino_ratio(flat) == empyrical.sortino_ratio(flat) == np.inf
    assert np.isnan(calmar_ratio(flat)) and np.isnan(empyrical.calmar_ratio(flat))
    zero = np.zeros(10)
    assert np.isnan(beta(np.full(10, 0.01), zero)) and np.isnan(empyrical.beta(np.full(10, 0.01), zero))
    assert np.isnan(conditional_value_at_risk(np.full(4, np.nan)))


def test_annualization_factor_names_numbers_and_errors():
    assert [annualization_factor(p) for p in ("daily", "weekly", "monthly", "hourly")] == [252, 52, 12, 8760]
    assert annualization_factor(365) == 365.0
    with pytest.raises(ValueError, match="unknown period 'minutely'"):
        annualization_factor("minutely")
    with pytest.raises(ValueError, match="annualization_factor"):
        sharpe_ratio(np.zeros(3), period="fortnightly")
    close(annual_volatility(np.array([0.01, -0.01, 0.02]), period=12),
          empyrical.annual_volatility(np.array([0.01, -0.01, 0.02]), period="monthly"))


def test_batched_rows_vmap_and_jit_equal_per_row_calls(random_pair):
    returns, factor = random_pair
    batch = jnp.asarray(np.stack([returns, returns[::-1], 0.5 * returns]))
    for fn in (sharpe_ratio, max_drawdown, conditional_value_at_risk, tail_ratio):
        rows = np.array([fn(row) for row in batch])
        close(fn(batch), rows, rtol=1e-6)
        close(jax.jit(jax.vmap(fn))(batch), rows, rtol=1e-6)
    rows = np.array([alpha(row, factor) for row in batch])
    close(alpha(batch, factor), rows, rtol=1e-6)
    close(jax.vmap(alpha, in_axes=(0, None))(batch, jnp.asarray(factor)), rows, rtol=1e-6)
    with pytest.raises(ValueError, match="beta: returns and factor_returns"):
        beta(batch, factor[:-1])
