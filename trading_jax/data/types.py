"""Shared data structures for market data.

`Bars` is the device-side pytree every part of the library consumes (features, environments,
synthetic generators); `MarketData` is what `load_ohlcv` returns on the host: bars plus the
timestamps, symbols and the validation report that produced them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np

OHLCV_FIELDS = ("open", "high", "low", "close", "volume")


class Bars(NamedTuple):
    """OHLCV bars as a pytree of float arrays.

    Every field has the same shape: `[time]` for one asset, `[time, asset]` for a panel, with any
    leading batch axes in front (e.g. `[market, time, asset]` from a vmapped generator). Time is
    always the axis just before the asset axis for panels; indicator functions take `axis=0`
    time-first arrays of shape `[time, ...]`.

    Attributes:
        open: open prices.
        high: high prices.
        low: low prices.
        close: close prices.
        volume: traded volume (base units).
    """

    open: Any
    high: Any
    low: Any
    close: Any
    volume: Any


@dataclasses.dataclass(frozen=True)
class MarketData:
    """A validated OHLCV panel on the host, as returned by `trading_jax.data.load_ohlcv`.

    Attributes:
        bars: `Bars` of float64 NumPy arrays, each `[time, asset]`. Missing bars of one symbol on a
            panel's shared time axis are NaN (see `valid`).
        timestamps: `datetime64[ns]` UTC NumPy array `[time]`, strictly increasing.
        symbols: one name per asset column.
        valid: bool `[time, asset]`, True where the symbol has a bar at that timestamp.
        frequency: the inferred bar spacing (`numpy.timedelta64`), or None with fewer than 3 bars.
        extra: other numeric columns that were present (e.g. `adj_close`), each `[time, asset]`.
        report: the `ValidationReport` of the load (problems found and repairs made).
        sources: the file each symbol came from.
    """

    bars: Bars
    timestamps: np.ndarray
    symbols: tuple[str, ...]
    valid: np.ndarray
    frequency: np.timedelta64 | None
    extra: dict[str, np.ndarray]
    report: Any
    sources: tuple[str, ...]

    @property
    def n_time(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def n_assets(self) -> int:
        return len(self.symbols)

    def to_jax(self, dtype=None) -> Bars:
        """The bars as JAX arrays (float32 unless x64 is enabled or `dtype` says otherwise)."""
        import jax.numpy as jnp

        return Bars(*(jnp.asarray(f, dtype=dtype) for f in self.bars))

    def select(self, symbols) -> "MarketData":
        """A panel restricted to the given symbols (in that order)."""
        index = [self.symbols.index(s) for s in symbols]
        pick = lambda a: a[:, index]
        return dataclasses.replace(
            self,
            bars=Bars(*(pick(f) for f in self.bars)),
            symbols=tuple(symbols),
            valid=pick(self.valid),
            extra={k: pick(v) for k, v in self.extra.items()},
            sources=tuple(self.sources[i] for i in index),
        )
