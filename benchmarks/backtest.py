"""Benchmark: our vectorised backtester against vectorbt and a plain pandas backtest, backtests/s, same rules, one run.

The work: a grid of moving-average crossover strategies on every asset, each (strategy, asset) pair its own
account (a "backtest"): at each close t, target 50% of the equity in the asset when SMA_fast > SMA_slow
(closes <= t; the warm-up is flat), else 0%. The target is filled at the next bar's open, rebalancing to
the target weight of the equity valued at that open (so a held position is topped up as prices drift);
fee 10 bp of the traded value at the execution price, half-spread 5 bp (the execution price is the open
moved against the trade), starting equity 1. 50% keeps every account away from vectorbt's cash limit
(vectorbt refuses to borrow, ours may), so the rules are identical.

Panels:
  (a) real: the daily stocks of ../shared/data/stocks_daily (88 x 1258 bars; late listings filled flat before
      their first bar with `fill_missing_bars`, as benchmarks/features.py), 64 strategies: fast in
      {5, 10, 15, 20, 25, 30, 35, 40} x slow in {50, 60, 70, 80, 90, 100, 110, 120} -> 5,632 backtests;
      a synthetic panel of the same size stands in when the folder is absent;
  (a') the same panel and grid in portfolio mode: one account per strategy holding every asset, each at 50% / N
      of the equity while its crossover is up (our natural layout: Bars [T, N], weights [S, T, N]; vectorbt: one
      cash-sharing group per strategy, `call_seq="auto"`; pandas: columns (strategy, asset) and a groupby per
      bar). Its rate counts strategy x asset pairs, like the others;
  (b) synthetic, larger: GBM daily bars, 2,520 bars x 256 assets x 32 strategies (fast {5..40} x slow
      {50, 80, 110, 140}) -> 8,192 backtests.

Sides (the same float64 inputs; signals and target weights are computed once, outside the timings):
  ours       `trading_jax.evaluation.backtest.backtest(Bars[N, T, 1], weights[S, N, T, 1], config)` (portfolio
             mode: Bars[T, N], weights[S, T, N]): the public
             function (its input checks included), jitted, float32; every result field (returns, costs,
             turnover, trades, held weights, equity) is computed; timed until all are ready.
  vectorbt   `vbt.Portfolio.from_orders(close, price=open, size=target shifted one bar, size_type="targetpercent",
             fees=1e-3, slippage=5e-4, init_cash=1e6)` on [T, S*N] columns, then `.value()` (the equity curve).
             vectorbt sizes a target percent from the value at the order price and fills at that price moved by
             `slippage`, paying `fees` on the filled value: the same rules. Numba-compiled, single-threaded.
             Its starting cash is 1e6 (its equity is divided by it), because vectorbt rejects orders under
             `min_size` = 1e-8 units, which the daily top-ups of a 1-unit account fall below.
  pandas     the same rules in plain pandas: DataFrames for the inputs, a loop over bars (the equity of a bar
             depends on the previous bar's costs, so the rules need one), each bar one row of Series
             arithmetic over all S*N accounts (vectorised across accounts).
  numpy rows (reference, not in the ratios) the pandas loop on NumPy rows: what the pandas loop costs without
             pandas' per-operation overhead.

Same work, checked before timing: the equity curves of vectorbt, pandas and numpy must match ours to a
relative 2e-5 (float32 vs float64; the largest difference is recorded), or the benchmark stops.

Timing: medians over `--repeats` calls after an untimed warm-up call (our compilation and vectorbt's Numba
compilation are reported separately as first-call times); the slow peers get `--peer-repeats` calls. XLA may
use every core; vectorbt, pandas and NumPy use one. backtests/s = strategy x asset pairs (S * N) / median seconds.

Goal: ours >= 2x vectorbt and >= 20x pandas on the real panel, on this CPU. Writes
benchmarks/results/backtest-DEVICE.json (backtest-DEVICE-quick.json with --quick); the last printed line is
`backtest: ours X backtests/s, vectorbt Y backtests/s, ratio Z, pandas P backtests/s, ratio Q (goal 2x vectorbt,
20x pandas)` for the real panel.

    python benchmarks/backtest.py            # every panel, a few minutes on 2 cores
    python benchmarks/backtest.py --quick    # 20 stocks x 16 strategies, a small synthetic panel
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trading_jax.data.types import Bars  # importing trading_jax sets its XLA_FLAGS before JAX starts a backend
from trading_jax.evaluation.backtest import BacktestConfig, backtest
import jax

from _common import add_common_arguments, machine_info, missing, output_path, skip_note, write_results
from _load import record_load

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRADING_JAX_SHARED_DATA", ROOT.parent / "shared" / "data"))

FEE, HALF_SPREAD, EXPOSURE = 1e-3, 5e-4, 0.5
GOAL_VBT, GOAL_PANDAS = 2.0, 20.0
PARITY_RTOL = 2e-5
VBT_CASH = 1e6  # vectorbt rejects orders under min_size = 1e-8 units: with 1 unit of cash, drift top-ups fall below it
FAST = (5, 10, 15, 20, 25, 30, 35, 40)
SLOW = (50, 60, 70, 80, 90, 100, 110, 120)
SLOW_SYNTHETIC = (50, 80, 110, 140)


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------


def stock_panel(max_assets: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(open, close) `[T, N]` float64 of the shared daily stocks, late listings filled flat; None when absent."""
    directory = SHARED / "stocks_daily"
    if not directory.is_dir():
        return None
    from trading_jax.data import load_ohlcv
    from trading_jax.data.panels import fill_missing_bars

    files = sorted(p for p in directory.iterdir() if p.suffix in (".csv", ".parquet", ".feather"))
    data = load_ohlcv(files[:max_assets] if max_assets else directory)
    filled, _ = fill_missing_bars(data.bars, data.valid)
    return np.asarray(filled.open, np.float64), np.asarray(filled.close, np.float64)


def synthetic_panel(n_bars: int, n_assets: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """GBM daily closes (20-40% annual vol) and opens 0.5% off the previous close."""
    rng = np.random.default_rng(seed)
    vol = rng.uniform(0.2, 0.4, n_assets) / np.sqrt(252)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0002, vol, (n_bars, n_assets)), axis=0))
    previous = np.concatenate([close[:1], close[:-1]])
    return previous * np.exp(rng.normal(0, 0.005, (n_bars, n_assets))), close


def crossover_weights(close: np.ndarray, grid: list[tuple[int, int]]) -> np.ndarray:
    """`[S, T, N]` targets: EXPOSURE where SMA_fast > SMA_slow of closes <= t, else 0 (0 in the warm-up)."""
    frame = pd.DataFrame(close)
    means = {w: frame.rolling(w).mean().to_numpy() for w in sorted({w for pair in grid for w in pair})}
    return np.stack([np.where(means[f] > means[s], EXPOSURE, 0.0) for f, s in grid])  # NaN > x is False


# ------------------------------------------------------------------------------------------------
# the sides
# ------------------------------------------------------------------------------------------------


def ours(open_: np.ndarray, close: np.ndarray, weights: np.ndarray):
    """Inputs on device in our layout: Bars `[N, T, 1]` and weights `[S, N, T, 1]` (one account per pair)."""
    bars = Bars(jax.device_put(open_.T[:, :, None].astype(np.float32)), None, None,
                jax.device_put(close.T[:, :, None].astype(np.float32)), None)
    w = jax.device_put(np.moveaxis(weights, 2, 1)[..., None].astype(np.float32))
    config = BacktestConfig(fee_rate=FEE, half_spread=HALF_SPREAD)
    return lambda: jax.block_until_ready(backtest(bars, w, config))


def ours_portfolios(open_: np.ndarray, close: np.ndarray, weights: np.ndarray):
    """Portfolio mode, our natural layout: Bars `[T, N]` and weights `[S, T, N]` (one account per strategy)."""
    bars = Bars(jax.device_put(open_.astype(np.float32)), None, None, jax.device_put(close.astype(np.float32)), None)
    w = jax.device_put(weights.astype(np.float32))
    config = BacktestConfig(fee_rate=FEE, half_spread=HALF_SPREAD)
    return lambda: jax.block_until_ready(backtest(bars, w, config))


def ours_equity(result, n_bars: int) -> np.ndarray:
    """Our equity `[S, N, T]` as vectorbt's `[T, S * N]` columns (strategy-major)."""
    return np.asarray(result.equity, np.float64).reshape(-1, n_bars).T


def wide(open_: np.ndarray, close: np.ndarray, weights: np.ndarray):
    """`[T, S * N]` open, close and the target filled at each bar (decided at the bar before; NaN at bar 0)."""
    s = weights.shape[0]
    target = np.moveaxis(weights, 0, 1).reshape(weights.shape[1], -1)  # [T, S * N], strategy-major
    filled = np.vstack([np.full((1, target.shape[1]), np.nan), target[:-1]])
    return np.tile(open_, (1, s)), np.tile(close, (1, s)), filled


def vectorbt_side(open_w: np.ndarray, close_w: np.ndarray, filled: np.ndarray, n_assets: int | None = None):
    """One account per column, or with `n_assets` one cash-sharing group per strategy (sells before buys)."""
    import vectorbt as vbt

    grouping = {}
    if n_assets is not None:
        grouping = dict(group_by=np.repeat(np.arange(close_w.shape[1] // n_assets), n_assets), cash_sharing=True,
                        call_seq="auto")

    def run():
        portfolio = vbt.Portfolio.from_orders(close=close_w, price=open_w, size=filled, size_type="targetpercent",
                                              fees=FEE, slippage=HALF_SPREAD, init_cash=VBT_CASH, **grouping)
        return np.asarray(portfolio.value()) / VBT_CASH

    return run


def pandas_backtest(open_df: pd.DataFrame, close_df: pd.DataFrame, filled_df: pd.DataFrame) -> pd.DataFrame:
    """The rules in plain pandas: one row of Series arithmetic per bar over all accounts."""
    filled_df = filled_df.fillna(0.0)
    cash = pd.Series(1.0, index=close_df.columns)
    units = pd.Series(0.0, index=close_df.columns)
    equity = pd.DataFrame(np.nan, index=close_df.index, columns=close_df.columns)
    equity.iloc[0] = 1.0
    for t in range(1, len(close_df)):
        price = open_df.iloc[t]
        before = cash + units * price  # equity at the open, before trading
        target = filled_df.iloc[t] * before / price  # units to hold
        trade = target - units
        execution = price * (1 + np.sign(trade) * HALF_SPREAD)
        cash = cash - trade * execution - FEE * (trade.abs() * execution)
        units = target
        equity.iloc[t] = cash + units * close_df.iloc[t]
    return equity


def pandas_portfolios(open_df: pd.DataFrame, close_df: pd.DataFrame, filled_df: pd.DataFrame) -> pd.DataFrame:
    """Portfolio mode in plain pandas: columns (strategy, asset), one cash account per strategy."""
    filled_df = filled_df.fillna(0.0)
    strategies = close_df.columns.get_level_values(0).unique()
    cash = pd.Series(1.0, index=strategies)
    units = pd.Series(0.0, index=close_df.columns)
    equity = pd.DataFrame(np.nan, index=close_df.index, columns=strategies)
    equity.iloc[0] = 1.0
    for t in range(1, len(close_df)):
        price = open_df.iloc[t]
        before = cash + (units * price).groupby(level=0).sum()  # each strategy's equity at the open
        target = filled_df.iloc[t] * before.reindex(close_df.columns, level=0) / price
        trade = target - units
        execution = price * (1 + np.sign(trade) * HALF_SPREAD)
        cash = cash - (trade * execution + FEE * (trade.abs() * execution)).groupby(level=0).sum()
        units = target
        equity.iloc[t] = cash + (units * close_df.iloc[t]).groupby(level=0).sum()
    return equity


def pandas_side(open_w: np.ndarray, close_w: np.ndarray, filled: np.ndarray, n_assets: int | None = None):
    if n_assets is None:
        frames = [pd.DataFrame(a) for a in (open_w, close_w, filled)]
        return lambda: pandas_backtest(*frames).to_numpy()
    columns = pd.MultiIndex.from_product([range(close_w.shape[1] // n_assets), range(n_assets)])
    frames = [pd.DataFrame(a, columns=columns) for a in (open_w, close_w, filled)]
    return lambda: pandas_portfolios(*frames).to_numpy()


def numpy_rows(open_w: np.ndarray, close_w: np.ndarray, filled: np.ndarray, n_assets: int = 1) -> np.ndarray:
    """The pandas loop on NumPy rows (reference); `n_assets` > 1 groups consecutive columns into one account."""
    filled = np.nan_to_num(filled)
    accounts = close_w.shape[1] // n_assets
    cash, units = np.ones(accounts), np.zeros((accounts, n_assets))
    equity = np.empty((len(close_w), accounts))
    equity[0] = 1.0
    for t in range(1, len(close_w)):
        price, close = open_w[t].reshape(accounts, n_assets), close_w[t].reshape(accounts, n_assets)
        before = cash + np.sum(units * price, axis=1)
        target = filled[t].reshape(accounts, n_assets) * before[:, None] / price
        trade = target - units
        execution = price * (1 + np.sign(trade) * HALF_SPREAD)
        cash = cash - np.sum(trade * execution + FEE * np.abs(trade) * execution, axis=1)
        units = target
        equity[t] = cash + np.sum(units * close, axis=1)
    return equity


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------


def timed(fn, repeats: int) -> dict:
    """First call (compilation / warm-up) timed apart, with its output, then `repeats` timed calls; seconds."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    return {"first_call_s": first, "output": out, **(timed_more(fn, repeats) if repeats else {})}


def timed_more(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def bench_panel(name: str, open_: np.ndarray, close: np.ndarray, grid: list[tuple[int, int]], repeats: int,
                peer_repeats: int, run_vbt: bool, portfolios: bool = False) -> dict:
    """Time every side on one panel. `portfolios`: one account per strategy holding all assets (each at
    EXPOSURE / N when its crossover is up), instead of one account per (strategy, asset)."""
    n_bars, n_assets = close.shape
    weights = crossover_weights(close, grid)
    if portfolios:
        weights = weights / n_assets
    pairs = len(grid) * n_assets
    result = {"mode": "portfolios" if portfolios else "accounts", "bars": n_bars, "assets": n_assets,
              "strategies": len(grid), "accounts": len(grid) if portfolios else pairs, "strategy_asset_pairs": pairs,
              "grid": [list(pair) for pair in grid], "mean_exposure": float(np.mean(weights > 0))}
    if portfolios:
        ours_t = timed(ours_portfolios(open_, close, weights), repeats)
        reference = np.asarray(ours_t.pop("output").equity, np.float64).T  # [T, S]
    else:
        ours_t = timed(ours(open_, close, weights), repeats)
        reference = ours_equity(ours_t.pop("output"), n_bars)
    result["ours"] = ours_t
    open_w, close_w, filled = wide(open_, close, weights)
    group = n_assets if portfolios else None
    sides = {"pandas": (pandas_side(open_w, close_w, filled, group), peer_repeats),
             "numpy_rows": (lambda: numpy_rows(open_w, close_w, filled, group or 1), peer_repeats)}
    if run_vbt:
        sides["vectorbt"] = (vectorbt_side(open_w, close_w, filled, group), peer_repeats)
    result["parity_max_relative_difference"] = {}
    for side, (fn, reps) in sides.items():
        timing = timed(fn, 0)  # the first call: warm-up, and the equity to check
        difference = float(np.max(np.abs(np.asarray(timing.pop("output"), np.float64) / reference - 1)))
        result["parity_max_relative_difference"][side] = difference
        if not difference <= PARITY_RTOL:
            raise SystemExit(f"backtest: {side} and ours disagree on the {name} panel (largest relative equity "
                             f"difference {difference:.2e} > {PARITY_RTOL}): not the same work, not timed")
        result[side] = {"first_call_s": timing["first_call_s"], **timed_more(fn, reps)}
    for side in ("ours", *sides):
        result[side]["backtests_per_s"] = pairs / result[side]["median_s"]  # strategy x asset pairs per second
    for side in sides:
        result[f"ratio_vs_{side}"] = result["ours"]["backtests_per_s"] / result[side]["backtests_per_s"]
    what = f"{len(grid)} portfolios of {n_assets} assets" if portfolios else f"{len(grid)} strategies x {n_assets} assets"
    line = f"  {name}: {what} x {n_bars} bars: ours {result['ours']['median_s'] * 1e3:.0f} ms " \
           f"({result['ours']['backtests_per_s']:,.0f} backtests/s, first call {result['ours']['first_call_s']:.1f} s)"
    for side in sides:
        line += f"; {side} {result[side]['median_s'] * 1e3:.0f} ms (x{result[f'ratio_vs_{side}']:.1f})"
    print(line, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed calls of ours (default 9; quick 3)")
    parser.add_argument("--peer-repeats", type=int, default=None,
                        help="timed calls of vectorbt, pandas and NumPy (default 3; quick 1)")
    parser.add_argument("--skip-synthetic", action="store_true", help="no synthetic panel")
    parser.add_argument("--skip-portfolios", action="store_true", help="no portfolio mode")
    add_common_arguments(parser)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 9)
    peer_repeats = args.peer_repeats or (1 if args.quick else 3)

    load_before = os.getloadavg()
    results = {"benchmark": "backtest", "quick": args.quick,
               "machine": machine_info("vectorbt", "pandas", "numpy", "numba"),
               "settings": {"fee_rate": FEE, "half_spread": HALF_SPREAD, "exposure": EXPOSURE,
                            "fill": "next_open", "repeats": repeats, "peer_repeats": peer_repeats,
                            "parity_rtol": PARITY_RTOL},
               "goal": {"vs_vectorbt": GOAL_VBT, "vs_pandas": GOAL_PANDAS},
               "notes": ("one backtest = one (strategy, asset) account over every bar; ours: the public backtest() "
                         "under jit in float32, all result fields; vectorbt: from_orders + value(); pandas: a loop "
                         "over bars of Series arithmetic across accounts; numpy_rows: that loop on NumPy rows "
                         "(reference, not a goal). Medians after an untimed first call."),
               "panels": {}, "skipped": {}}
    run_vbt = missing("vectorbt") is None
    if not run_vbt:
        results["skipped"]["vectorbt"] = skip_note("vectorbt", "vectorbt")
        print(results["skipped"]["vectorbt"], flush=True)

    grid = [(f, s) for f in FAST for s in SLOW]
    if args.quick:
        grid = [(f, s) for f in FAST[:4] for s in SLOW[:4]]
    stocks = stock_panel(20 if args.quick else None)
    if stocks is None:
        results["skipped"]["stocks_daily"] = f"real panel: {SHARED / 'stocks_daily'} not found, a synthetic panel of " \
                                              f"the same size stands in"
        stocks = synthetic_panel(1258, 20 if args.quick else 88, seed=1)
        real_name = "synthetic_like_stocks_daily"
    else:
        real_name = f"stocks_daily_{stocks[1].shape[1]}"
    print(f"panel: {real_name} ({stocks[1].shape[0]} bars x {stocks[1].shape[1]} assets)", flush=True)
    real = bench_panel(real_name, *stocks, grid, repeats, peer_repeats, run_vbt)
    results["panels"][real_name] = real
    if not args.skip_portfolios:
        print(f"panel: {real_name} as {len(grid)} portfolios", flush=True)
        results["panels"][f"{real_name}_portfolios"] = bench_panel(f"{real_name}_portfolios", *stocks, grid, repeats,
                                                                   peer_repeats, run_vbt, portfolios=True)
    if not args.skip_synthetic:
        bars, assets = (500, 32) if args.quick else (2520, 256)
        grid_big = [(f, s) for f in FAST for s in SLOW_SYNTHETIC]
        if args.quick:
            grid_big = grid_big[:8]
        print(f"panel: synthetic ({bars} bars x {assets} assets)", flush=True)
        results["panels"]["synthetic"] = bench_panel("synthetic", *synthetic_panel(bars, assets), grid_big,
                                                     max(3, repeats // 2), peer_repeats, run_vbt)
    record_load(results["machine"], load_before)
    write_results(output_path("backtest", args), results)

    ours_rate = real["ours"]["backtests_per_s"]
    pandas_part = f"pandas {real['pandas']['backtests_per_s']:,.0f} backtests/s, ratio {real['ratio_vs_pandas']:.1f}"
    if run_vbt:
        print(f"backtest: ours {ours_rate:,.0f} backtests/s, vectorbt {real['vectorbt']['backtests_per_s']:,.0f} "
              f"backtests/s, ratio {real['ratio_vs_vectorbt']:.1f}, {pandas_part} (goal 2x vectorbt, 20x pandas)")
    else:
        print(f"backtest: ours {ours_rate:,.0f} backtests/s, vectorbt skipped (not installed: pip install vectorbt), "
              f"ratio n/a, {pandas_part} (goal 2x vectorbt, 20x pandas)")


if __name__ == "__main__":
    main()
