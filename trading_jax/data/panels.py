"""Host-side `[time, asset]` panels: filling missing bars, and the built-in offline market.

    bars, observed = fill_missing_bars(data.bars, data.valid)       # a loaded panel, made computable
    bars, timestamps, symbols = builtin_market(3000, 4, seed=0)      # no file needed

`builtin_market` is the one offline market of the library's commands and experiments (the
`trading-jax features` command without a file, `DataSpec(source="synthetic")`): correlated
regime-switching hourly bars from `trading_jax.data.synthetic`, as float64 NumPy arrays with
timestamps and symbols, like a loaded file. Environments draw their own banks of randomised paths
on device with `trading_jax.envs.synthetic_market(key, n_paths, ...)`; both draw their model
parameters with `sample_params_batch` and their paths with `synthetic.panel`.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.data import synthetic
from trading_jax.data.types import Bars

__all__ = ["fill_missing_bars", "builtin_market", "gbm_market", "sample_params_batch", "BUILTIN_CORRELATION", "BUILTIN_START"]

BUILTIN_CORRELATION = 0.3
"""Correlation of the diffusive price shocks between any two assets of `builtin_market`."""
BUILTIN_START = np.datetime64("2024-01-01T00:00", "ns")
"""Timestamp of the first bar of `builtin_market` (bars are hourly, UTC)."""


def fill_missing_bars(bars: Bars, valid: np.ndarray) -> tuple[Bars, np.ndarray]:
    """Fill the bars of a panel that are missing (`valid` False) so indicators can run through them.

    A missing bar after an asset's first bar becomes flat at the previous close with zero volume
    (the market was closed); bars before the first one become flat at the first open with zero
    volume. Nothing is hidden: the returned `observed` mask (= `valid`) goes to
    `FeaturePipeline.feature_valid`, which marks every row that rests on a filled bar, or on
    fewer than `warmup` bars since the listing, as not valid.

    Args:
        bars: `Bars` of NumPy `[time, asset]` arrays (NaN where missing).
        valid: bool `[time, asset]`.

    Returns:
        `(filled_bars, observed)`.

    Raises:
        ValueError: if an asset has no valid bar at all.
    """
    valid = np.asarray(valid, bool)
    close = np.asarray(bars.close, np.float64)
    empty = ~valid.any(axis=0)
    if empty.any():
        raise ValueError(f"asset column(s) {np.flatnonzero(empty).tolist()} have no valid bar; drop them before computing features")
    n_time = close.shape[0]
    idx = np.where(valid, np.arange(n_time)[:, None], -1)
    last = np.maximum.accumulate(idx, axis=0)  # last valid row at or before t (-1 before the first)
    first = valid.argmax(axis=0)
    cols = np.arange(close.shape[1])[None, :]
    prev_close = np.where(last >= 0, close[np.maximum(last, 0), cols], np.asarray(bars.open)[first, cols[0]][None, :])
    fill = lambda field: np.where(valid, np.asarray(field, np.float64), prev_close)
    filled = Bars(fill(bars.open), fill(bars.high), fill(bars.low), fill(bars.close),
                  np.where(valid, np.asarray(bars.volume, np.float64), 0.0))
    return filled, valid


def sample_params_batch(key: jax.Array, n: int, model: str, ranges: Mapping[str, tuple[float, float]] | None = None):
    """`n` independent parameter draws of `model` (domain randomisation), leading axis `[n]`.

    `synthetic.sample_params` vmapped over `jax.random.split(key, n)`: one draw per path of an
    environment bank, or per asset of `builtin_market`.
    """
    return jax.vmap(lambda k: synthetic.sample_params(k, model, ranges))(jax.random.split(key, n))


def gbm_market(n_bars: int, n_assets: int, seed: int, sigma: float = 0.2) -> tuple[Bars, np.ndarray, tuple[str, ...]]:
    """A placebo market: independent driftless geometric Brownian motions, daily bars.

    `dS/S = sigma dW` with mu = 0 (each asset's log price is a random walk: no bar's return can be predicted
    from the past), `dt = 1 / 252`, independent across assets, with daily timestamps from `BUILTIN_START`.
    Any model that beats chance on it has a leak. The same arguments give the same market bit for bit.

    Returns:
        `(bars, timestamps, symbols)` like `builtin_market`, symbols `("GBM0", "GBM1", ...)`.
    """
    params = synthetic.GBMParams(mu=0.0, sigma=sigma)
    market = synthetic.panel(jax.random.key(seed), params, n_bars, 1.0 / 252, n_assets=n_assets)
    timestamps = BUILTIN_START + np.arange(n_bars) * np.timedelta64(1, "D")
    symbols = tuple(f"GBM{i}" for i in range(n_assets))
    return Bars(*(np.asarray(f, np.float64) for f in market.bars)), timestamps, symbols


def builtin_market(n_bars: int, n_assets: int, seed: int) -> tuple[Bars, np.ndarray, tuple[str, ...]]:
    """The built-in offline market: correlated regime-switching hourly bars, with timestamps.

    Each asset draws its own regime-switching parameters (`sample_params_batch`, default ranges);
    the diffusive shocks of any two assets have correlation `BUILTIN_CORRELATION`; bars are hourly
    (`dt = 1 / (365 * 24)` years, 24/7 like crypto) from `BUILTIN_START`. The same arguments give
    the same market bit for bit.

    Args:
        n_bars: bars per asset.
        n_assets: number of assets.
        seed: integer seed of the PRNG key.

    Returns:
        `(bars, timestamps, symbols)`: `Bars` of float64 NumPy `[n_bars, n_assets]` arrays,
        `datetime64[ns]` `[n_bars]`, and the names `("SYN0", "SYN1", ...)`.
    """
    k_params, k_path = jax.random.split(jax.random.key(seed))
    params = sample_params_batch(k_params, n_assets, "regime_switching")
    correlation = BUILTIN_CORRELATION * jnp.ones((n_assets, n_assets)) + (1.0 - BUILTIN_CORRELATION) * jnp.eye(n_assets)
    market = synthetic.panel(k_path, params, n_bars, 1.0 / (365 * 24), correlation=correlation)
    timestamps = BUILTIN_START + np.arange(n_bars) * np.timedelta64(1, "h")
    symbols = tuple(f"SYN{i}" for i in range(n_assets))
    return Bars(*(np.asarray(f, np.float64) for f in market.bars)), timestamps, symbols
