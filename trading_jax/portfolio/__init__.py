"""Portfolio construction in pure JAX: covariance estimators, mean-variance optimisation, Black-Litterman,
risk parity, rebalancing rules with costs, and constraint projections.

Everything is float32 by default, jittable, and vmappable over a leading batch of dates or universes; the
optimisers run fixed iteration counts and match PyPortfolioOpt (the tests check parity to 1e-4 on the
weights; Ledoit-Wolf and Black-Litterman to 1e-6). Bad concrete input raises a one-line `ValueError`; a
traced target that cannot be met is reported in `OptimizeResult.status` (`OPTIMAL`, `INFEASIBLE`,
`INACCURATE`), never as silent garbage.

    import jax
    import numpy as np
    from trading_jax import portfolio as pf

    returns = np.random.default_rng(0).normal(5e-4, 0.01, (750, 8)).astype(np.float32)  # [T, N] daily
    cov, shrinkage = pf.ledoit_wolf(returns, frequency=252)            # annualised [N, N], delta
    mu = returns.mean(axis=0) * 252                                    # annualised [N]
    w = pf.max_sharpe(mu, cov, risk_free_rate=0.0, cap=0.25).weights   # long-only, each <= 25%
    w_erc = pf.risk_budgeting(cov).weights                             # equal risk contributions
    # one optimisation per date: [D, N] expected returns and [D, N, N] covariances (three 250-day windows)
    windows = returns.reshape(3, 250, 8)
    mus, covs = windows.mean(axis=1) * 252, jax.vmap(pf.sample_covariance)(windows)
    batch = jax.vmap(lambda m, c: pf.max_quadratic_utility(m, c, 2.0, cap=0.25))(mus, covs)  # weights [3, 8]
    # Black-Litterman: a market prior and one relative view (asset 0 beats asset 1 by 2% a year)
    prior = pf.market_implied_prior_returns(np.arange(1.0, 9.0), cov, risk_aversion=2.5)
    view = np.array([[1.0, -1.0, 0, 0, 0, 0, 0, 0]])
    post = pf.black_litterman_posterior(cov, prior, view, np.array([0.02]))  # post.returns, post.cov
    # hold w, rebalancing every 21 days, 10 bps per unit of turnover
    path = pf.simulate_rebalancing(w, returns, pf.Calendar(every=21), cost_rate=1e-3)  # path.returns: [T]

Modules: `covariance` (`sample_covariance`, `ledoit_wolf`), `mean_variance` (`min_volatility`,
`max_quadratic_utility`, `efficient_return`, `efficient_risk`, `max_sharpe`, `max_return`,
`portfolio_performance`), `black_litterman` (`black_litterman_posterior`, market-implied priors, omegas),
`risk_parity` (`risk_budgeting`, `risk_contributions`), `rebalance` (`Calendar`, `Threshold`,
`VolatilityTarget`, `simulate_rebalancing`), `projections` (`project_capped_simplex`, which imports only jax).
Names are imported lazily, so `import trading_jax.portfolio` stays cheap.
"""

from trading_jax._lazy import lazy_exports

_EXPORTS = {
    "project_capped_simplex": "projections",
    # covariance
    "ledoit_wolf": "covariance",
    "sample_covariance": "covariance",
    # mean-variance
    "INACCURATE": "mean_variance",
    "INFEASIBLE": "mean_variance",
    "OPTIMAL": "mean_variance",
    "OptimizeResult": "mean_variance",
    "SolverConfig": "mean_variance",
    "efficient_return": "mean_variance",
    "efficient_risk": "mean_variance",
    "max_quadratic_utility": "mean_variance",
    "max_return": "mean_variance",
    "max_sharpe": "mean_variance",
    "min_volatility": "mean_variance",
    "portfolio_performance": "mean_variance",
    # Black-Litterman
    "BlackLittermanResult": "black_litterman",
    "black_litterman_posterior": "black_litterman",
    "default_omega": "black_litterman",
    "idzorek_omega": "black_litterman",
    "market_implied_prior_returns": "black_litterman",
    "market_implied_risk_aversion": "black_litterman",
    # risk parity
    "RiskParityResult": "risk_parity",
    "risk_contributions": "risk_parity",
    "risk_budgeting": "risk_parity",
    # rebalancing
    "Calendar": "rebalance",
    "RebalanceResult": "rebalance",
    "Threshold": "rebalance",
    "VolatilityTarget": "rebalance",
    "simulate_rebalancing": "rebalance",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
