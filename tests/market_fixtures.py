"""Small hand-made markets shared by the environment tests (NumPy only: no compilation needed)."""

from __future__ import annotations

import numpy as np

from trading_jax.data.types import Bars
from trading_jax.envs.market import make_market


def random_walk_market(n_assets: int, seed: int, n_paths: int = 3, n_time: int = 40):
    """`n_paths` x `n_time` bars of a NumPy random walk with 1-2% bar volatility per path and asset, opens
    0.3% off the previous close, spreads of 1-10 bps."""
    rng = np.random.default_rng(seed)
    shape = (n_paths, n_time, n_assets)
    close = 100 * np.exp(np.cumsum(rng.normal(0, rng.uniform(0.01, 0.02, shape[::2])[:, None], shape), axis=1))
    open_ = close * np.exp(rng.normal(0, 0.003, shape))
    bars = Bars(open_, np.maximum(open_, close) * 1.002, np.minimum(open_, close) * 0.998, close,
                rng.uniform(1e3, 2e3, shape))
    return make_market(bars, spread=rng.uniform(1e-4, 1e-3, shape))
