"""Market sources shared by every environment: replayed real bars or banks of synthetic paths.

A market is a `MarketArrays` pytree of `[path, time, asset]` arrays that lives in the environment's
`EnvParams` (never on `self`: an array held by the environment object would be baked into every
compiled program as a constant; one in `EnvParams` is an argument, DESIGN.md principle 1).

* **Replay** (`replay_market`): real bars from `trading_jax.data.load_ohlcv`, restricted to one split
  (e.g. the training range of `chronological_split`), so an episode can never read bars outside it.
  One path (`P = 1`).
* **Synthetic** (`synthetic_market`): `P` paths drawn on device, each from its own randomly sampled
  model parameters (domain randomisation, `trading_jax.data.synthetic.sample_params`). The bank is a
  pure function of a key, so a training loop can draw a fresh bank inside `jit` whenever it likes
  (e.g. every update: `params.replace(market=synthetic_market(key, ...))`).

`make_market` builds a `MarketArrays` from any `Bars` and refuses NaN/inf bars, spreads and features
(naming the array, path, asset and row), as `replay_market` refuses missing bars: an environment
stepping on a NaN bar would carry NaN equity for the rest of the episode.

Timing convention (DESIGN.md market-data rules): an episode starts at a decision bar `t0` drawn by
`sample_episode`. At decision bar t the agent has seen bars `<= t` (the window `t - W + 1 .. t`); an
order decided at t fills at bar t + 1 (`open[t + 1]` plus costs), and is then marked at `close[t + 1]`.
So an episode of `L` decisions reads bars `t0 - W + 1 .. t0 + L`, and `sample_episode` keeps all of
them inside the arrays.
"""

from __future__ import annotations

from functools import partial
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from trading_jax.data import synthetic
from trading_jax.data.panels import sample_params_batch
from trading_jax.data.types import Bars

Array = jax.Array

__all__ = [
    "MarketArrays",
    "make_market",
    "replay_market",
    "synthetic_market",
    "sample_episode",
    "price_window",
    "log_return_window",
    "bar_at",
]


@struct.dataclass
class MarketArrays:
    """Bars of `P` market paths, every field `[P, T, N]` float32 (paths, time, assets).

    Attributes:
        open, high, low, close, volume: OHLCV bars.
        spread: relative bid-ask spread (fraction of price, > 0) of each bar; the half spread is paid
            on every fill.
        log_return: `log(close[t] / close[t - 1])`, 0 at t = 0 (precomputed once, so a step gathers
            instead of taking logs).
        features: optional extra per-bar features `[P, T, N, F]` (F may be 0), which must be causal
            (feature at t uses bars <= t; e.g. `FeaturePipeline` output).
    """

    open: Array
    high: Array
    low: Array
    close: Array
    volume: Array
    spread: Array
    log_return: Array
    features: Array

    @property
    def n_paths(self) -> int:
        return int(self.close.shape[0])

    @property
    def n_time(self) -> int:
        return int(self.close.shape[1])

    @property
    def n_assets(self) -> int:
        return int(self.close.shape[2])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[3])


def _log_returns(close: Array) -> Array:
    """`log(close[t] / close[t-1])` along axis 1, 0 at t = 0. `close` `[P, T, N]`."""
    log_close = jnp.log(close)
    return jnp.concatenate([jnp.zeros_like(log_close[:, :1]), jnp.diff(log_close, axis=1)], axis=1)


def make_market(bars: Bars, spread, features=None, dtype=jnp.float32) -> MarketArrays:
    """`MarketArrays` from `Bars` and a relative spread, each `[P, T, N]` (or `[T, N]`: one path).

    Args:
        bars: OHLCV `Bars`, every field `[P, T, N]` or `[T, N]`.
        spread: relative bid-ask spread, broadcastable to the close.
        features: optional causal per-bar features `[P, T, N, F]` (or `[T, N, F]`).
        dtype: float dtype of the arrays.

    Raises:
        ValueError: if a bar, spread or feature value is NaN or infinite (also after the cast to
            `dtype`, e.g. 1e39 in float32), naming the array, the path, asset and row of the first one
            and how many there are; or if `features` is not `[P, T, N, F]`. (Arrays traced under
            `jit` cannot be inspected and are not checked.)
    """
    fields = [jnp.asarray(f, dtype) for f in bars]
    spread = jnp.broadcast_to(jnp.asarray(spread, dtype), fields[3].shape)
    if fields[3].ndim == 2:
        fields = [f[None] for f in fields]
        spread = spread[None]
        features = None if features is None else jnp.asarray(features)[None]
    p, t, n = fields[3].shape
    feats = jnp.zeros((p, t, n, 0), dtype) if features is None else jnp.asarray(features, dtype)
    if feats.shape[:3] != (p, t, n):
        raise ValueError(f"features must be [P, T, N, F] = [{p}, {t}, {n}, F]; got {feats.shape}")
    for name, values in (*zip(Bars._fields, fields), ("spread", spread), ("features", feats)):
        _check_finite(name, values)
    return MarketArrays(*fields, spread=spread, log_return=_log_returns(fields[3]), features=feats)


def _check_finite(name: str, values: Array) -> None:
    """Refuse NaN/inf in a concrete `[P, T, N(, F)]` market array with a one-line message."""
    if isinstance(values, jax.core.Tracer) or values.size == 0 or bool(jnp.all(jnp.isfinite(values))):
        return
    host = np.asarray(values)
    bad = ~np.isfinite(host)
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    path, row, asset = index[:3]
    feature = f", feature {index[3]}" if len(index) == 4 else ""
    raise ValueError(
        f"make_market: {name} has {int(bad.sum())} NaN/inf value{'s' if bad.sum() != 1 else ''}, the first "
        f"{float(host[index])} at path {path}, asset {asset}, row {row}{feature}; an environment cannot trade on "
        "missing or infinite values: repair or fill those bars first (load_ohlcv(..., repair=...), "
        "fill_missing_bars) or cut those rows out (e.g. start the split after the feature warm-up)."
    )


def replay_market(data, split=None, *, symbols=None, spread: float = 2e-4, features=None) -> MarketArrays:
    """Real bars of a `MarketData` (from `load_ohlcv`) as a one-path `MarketArrays`.

    Args:
        data: `trading_jax.data.MarketData`.
        split: optional `IndexRange` (e.g. `chronological_split(...).train`); only these bars are kept,
            so episodes cannot read outside the split.
        symbols: optional subset of symbols (in this order).
        spread: relative bid-ask spread charged on fills (the files carry no quotes), e.g. 2e-4 = 2 bps.
        features: optional causal features `[T, N, F]` aligned with `data`'s time axis (cut to `split`).

    Raises:
        ValueError: if a selected bar is missing or non-positive, naming the symbol, the row and the time,
            and what to do (choose a later split start, drop the symbol, or repair the file); or if a
            selected feature is NaN/inf (`make_market`'s message: e.g. the feature warm-up rows).
    """
    if symbols is not None:
        data = data.select(symbols)
    rows = slice(None) if split is None else split.slice
    bars = Bars(*(np.asarray(f, np.float64)[rows] for f in data.bars))
    stamps = np.asarray(data.timestamps)[rows]
    for name, values in zip(Bars._fields, bars):
        bad = ~np.isfinite(values) | ((values <= 0) if name != "volume" else (values < 0))
        if bad.any():
            row, col = map(int, np.argwhere(bad)[0])
            offset = 0 if split is None else split.start
            raise ValueError(
                f"replay_market: {name} of symbol {data.symbols[col]!r} is missing or invalid "
                f"({values[row, col]!r}) at row {row + offset} ({stamps[row]}); {int(bad.sum())} such bars in the "
                "selected range. Start the split after the symbol's first bar, drop the symbol "
                "(symbols=...), or repair the file (load_ohlcv(..., repair=...))."
            )
    if features is not None:
        features = np.asarray(features)[rows]
    return make_market(bars, spread, features)


@partial(jax.jit, static_argnames=("n_paths", "n_steps", "n_assets", "model"))
def synthetic_market(
    key: Array,
    n_paths: int,
    n_steps: int,
    *,
    n_assets: int = 1,
    model: str = "regime_switching",
    ranges: Mapping[str, tuple[float, float]] | None = None,
    dt: float = 1.0 / 252.0,
    s0: float = 100.0,
    bar_params: synthetic.BarParams | None = None,
) -> MarketArrays:
    """A bank of `n_paths` synthetic markets, each with its own random model parameters.

    Path p draws `sample_params(key_p, model, ranges)` (shared by the path's assets, shocks
    independent across assets; `trading_jax.data.panels.sample_params_batch`) and `synthetic.panel(...)`
    of `n_steps` bars. (The host-side offline panel of the commands and experiments, with timestamps,
    is `trading_jax.data.panels.builtin_market`.)

    Returns:
        `MarketArrays` with fields `[n_paths, n_steps, n_assets]`.
    """
    k_params, k_paths = jax.random.split(key)
    params = sample_params_batch(k_params, n_paths, model, ranges)

    def one(k, p):
        return synthetic.panel(k, p, n_steps, dt, s0, n_assets=n_assets, model=model, bar_params=bar_params)

    markets = jax.vmap(one)(jax.random.split(k_paths, n_paths), params)
    return make_market(markets.bars, markets.spread)


def sample_episode(key: Array, market: MarketArrays, window: int, episode_length: int) -> tuple[Array, Array]:
    """A random path and first decision bar `t0` for an episode of `episode_length` decisions.

    `t0` is uniform on `[window - 1, T - 1 - episode_length]`, so the first observation's window
    `t0 - window + 1 .. t0` and the last fill bar `t0 + episode_length` are inside the arrays.

    Returns:
        `(path, t0)`, int32 scalars.

    Raises:
        ValueError: (at trace time) if the market is too short for one episode.
    """
    last_start = market.n_time - 1 - episode_length
    if last_start < window - 1:
        raise ValueError(
            f"market has {market.n_time} bars but an episode needs window ({window}) + episode_length "
            f"({episode_length}) = {window + episode_length}; use a longer split or shorter episodes"
        )
    k_path, k_start = jax.random.split(key)
    path = jax.random.randint(k_path, (), 0, market.n_paths)
    t0 = jax.random.randint(k_start, (), window - 1, last_start + 1)
    return path, t0


def price_window(values: Array, path: Array, t: Array, window: int) -> Array:
    """`values[path, t - window + 1 : t + 1]` -> `[window, ...]` (bars up to and including t)."""
    start = (path, t - window + 1) + (0,) * (values.ndim - 2)
    sizes = (1, window) + values.shape[2:]
    return jax.lax.dynamic_slice(values, start, sizes)[0]


def log_return_window(market: MarketArrays, path: Array, t: Array, window: int) -> Array:
    """The last `window` close-to-close log returns up to bar t: `[window, N]`."""
    return price_window(market.log_return, path, t, window)


def bar_at(market: MarketArrays, path: Array, t: Array) -> Bars:
    """OHLCV of bar t on `path`: `Bars` of `[N]` arrays."""
    return Bars(*(f[path, t] for f in (market.open, market.high, market.low, market.close, market.volume)))

