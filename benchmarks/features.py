"""Benchmark: the indicator set in pure JAX against TA-Lib and the pandas-based `ta`, same data, one run.

Panels:
  (a) the 88 daily stocks of ../shared/data/stocks_daily (skipped when absent), [1258, 88];
  (b) a synthetic GBM panel, 1,000,000 bars x 16 assets by default.

Work sets (identical indicators and parameters on both sides):
  talib set: SMA20, EMA20, RSI14, MACD(12,26,9), BBANDS(20,2), STOCH(5,3,3), ATR14, OBV, ROC10,
             MOM10, TRANGE, ROC(volume,10). TA-Lib is called once per series and indicator.
  ta set:    SMA20, EMA20, RSI14, MACD (line, signal, diff), Bollinger (upper, middle, lower),
             Stochastic (%K, %D), ATR14, OBV, VWAP20, ROC10. `ta` is called once per series.
  full set:  our FeaturePipeline (all 49 features incl. Hurst, Fourier, wavelets, spreads,
             cross-asset correlation): no peer computes it; reported as throughput.

Ours runs under one `jax.jit` per set on the whole [time, asset] panel, in float32 (the library's
default) and, for reference, in float64 (TA-Lib's only precision). XLA may use every core; TA-Lib
and `ta` are single-threaded. Timings are medians over `--repeats` runs after a warm-up call
(compile time is reported separately). TA-Lib and `ta` are optional peers (`pip install ta-lib ta`,
or the project's `bench` extra): one that is not installed is skipped with a note in the JSON and the
summary line. Writes benchmarks/results/features-DEVICE.json (features-DEVICE-quick.json with --quick)
and ends with one summary line.

    python benchmarks/features.py                 # full sizes
    python benchmarks/features.py --quick         # 20,000 bars x 4 assets, 2 repeats, 20 stocks
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.data.types import Bars
from trading_jax.features import indicators as ind
from trading_jax.data.panels import fill_missing_bars
from trading_jax.features.pipeline import FeaturePipeline

from _common import add_common_arguments, missing, output_path, skip_note, version, write_results
from _load import record_load

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRADING_JAX_SHARED_DATA", ROOT.parent / "shared" / "data"))


# ------------------------------------------------------------------------------------------------
# The work, on each side
# ------------------------------------------------------------------------------------------------


@jax.jit
def ours_talib_set(b: Bars):
    return (
        ind.sma(b.close, 20), ind.ema(b.close, 20), ind.rsi(b.close, 14), ind.macd(b.close, 12, 26, 9),
        ind.bollinger(b.close, 20, 2.0), ind.stochastic(b.high, b.low, b.close, 5, 3, 3),
        ind.atr(b.high, b.low, b.close, 14), ind.obv(b.close, b.volume), ind.roc(b.close, 10),
        ind.momentum(b.close, 10), ind.true_range(b.high, b.low, b.close), ind.volume_roc(b.volume, 10),
    )


def talib_set(series):
    import talib

    for o, h, l, c, v in series:
        talib.SMA(c, 20), talib.EMA(c, 20), talib.RSI(c, 14), talib.MACD(c, 12, 26, 9)
        talib.BBANDS(c, 20, 2.0, 2.0), talib.STOCH(h, l, c, 5, 3, 0, 3, 0), talib.ATR(h, l, c, 14)
        talib.OBV(c, v), talib.ROC(c, 10), talib.MOM(c, 10), talib.TRANGE(h, l, c), talib.ROC(v, 10)


@jax.jit
def ours_ta_set(b: Bars):
    return (
        ind.sma(b.close, 20), ind.ema(b.close, 20), ind.rsi(b.close, 14), ind.macd(b.close, 12, 26, 9),
        ind.bollinger(b.close, 20, 2.0), ind.stochastic(b.high, b.low, b.close, 14, 3, 3),
        ind.atr(b.high, b.low, b.close, 14), ind.obv(b.close, b.volume),
        ind.vwap(b.high, b.low, b.close, b.volume, 20), ind.roc(b.close, 10),
    )


def ta_set(frames):
    import ta

    for df in frames:
        h, l, c, v = df["high"], df["low"], df["close"], df["volume"]
        ta.trend.SMAIndicator(c, 20).sma_indicator()
        ta.trend.EMAIndicator(c, 20).ema_indicator()
        ta.momentum.RSIIndicator(c, 14).rsi()
        m = ta.trend.MACD(c, 26, 12, 9)
        m.macd(), m.macd_signal(), m.macd_diff()
        bb = ta.volatility.BollingerBands(c, 20, 2)
        bb.bollinger_hband(), bb.bollinger_mavg(), bb.bollinger_lband()
        st = ta.momentum.StochasticOscillator(h, l, c, 14, 3)
        st.stoch(), st.stoch_signal()
        ta.volatility.AverageTrueRange(h, l, c, 14).average_true_range()
        ta.volume.OnBalanceVolumeIndicator(c, v).on_balance_volume()
        ta.volume.VolumeWeightedAveragePrice(h, l, c, v, 20).volume_weighted_average_price()
        ta.momentum.ROCIndicator(c, 10).roc()


# ------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------


def block(tree):
    return jax.tree.map(lambda x: x.block_until_ready(), tree)


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_ours(fn, bars: Bars, repeats: int) -> dict:
    start = time.perf_counter()
    block(fn(bars))
    first = time.perf_counter() - start
    seconds = median_seconds(lambda: block(fn(bars)), repeats)
    return {"median_ms": 1e3 * seconds, "first_call_ms": 1e3 * first}


def output_write_floor(bars32: Bars, repeats: int) -> dict:
    """Time to only allocate and write as many outputs as each side's talib set returns.

    On this VM a fresh 64 MB buffer costs ~20 ms of page faults whatever is computed into it; this
    is the part of both sides' time that no indicator code can remove.
    """
    n_outputs = len(jax.tree.leaves(jax.eval_shape(ours_talib_set, bars32)))
    write = jax.jit(lambda x: tuple(x + i for i in range(n_outputs)))
    ours = time_ours(write, bars32.close, repeats)["median_ms"]
    n_time, n_assets = bars32.close.shape
    peer = 1e3 * median_seconds(lambda: [np.full(n_time, 1.0) for _ in range(n_outputs * n_assets)], repeats)
    return {"outputs": n_outputs, "ours_float32_ms": ours, "numpy_float64_per_series_ms": peer}


def bench_panel(name: str, bars64: Bars, repeats: int, ta_repeats: int, run_talib: bool, run_ta: bool) -> dict:
    import pandas as pd

    n_time, n_assets = bars64.close.shape
    series = [tuple(np.ascontiguousarray(f[:, a]) for f in bars64) for a in range(n_assets)]
    frames = [pd.DataFrame({k: s[i] for i, k in enumerate(("open", "high", "low", "close", "volume"))}) for s in series]
    bars32 = Bars(*(jnp.asarray(f, jnp.float32) for f in bars64))
    result = {"bars": n_time, "assets": n_assets}

    result["ours_talib_set_float32"] = time_ours(ours_talib_set, bars32, repeats)
    with jax.enable_x64(True):
        bars_x64 = Bars(*(jnp.asarray(f, jnp.float64) for f in bars64))
        result["ours_talib_set_float64"] = time_ours(ours_talib_set, bars_x64, repeats)
        del bars_x64
    if run_talib:
        talib_set(series[:1])  # warm the library
        result["talib_set_ms"] = 1e3 * median_seconds(lambda: talib_set(series), repeats)
        result["ratio_talib_float32"] = result["talib_set_ms"] / result["ours_talib_set_float32"]["median_ms"]
        result["ratio_talib_float64"] = result["talib_set_ms"] / result["ours_talib_set_float64"]["median_ms"]
    result["output_write_floor"] = output_write_floor(bars32, repeats)

    result["ours_ta_set_float32"] = time_ours(ours_ta_set, bars32, repeats)
    if run_ta:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result["ta_set_ms"] = 1e3 * median_seconds(lambda: ta_set(frames), ta_repeats)
        result["ratio_ta_float32"] = result["ta_set_ms"] / result["ours_ta_set_float32"]["median_ms"]

    pipeline = FeaturePipeline()
    full = time_ours(lambda b: pipeline.compute(b), bars32, repeats)
    full["features"] = len(pipeline.names(n_assets, with_timestamps=False))
    full["bar_assets_per_s"] = n_time * n_assets / (full["median_ms"] / 1e3)
    result["ours_full_pipeline_float32"] = full
    print(
        f"  {name}: talib set ours {result['ours_talib_set_float32']['median_ms']:.1f} ms (f64 "
        f"{result['ours_talib_set_float64']['median_ms']:.1f}) "
        + (f"vs TA-Lib {result['talib_set_ms']:.1f} ms -> x{result['ratio_talib_float32']:.2f} "
           f"(f64 x{result['ratio_talib_float64']:.2f}); " if run_talib else "(TA-Lib skipped); ")
        + (f"ta set ours {result['ours_ta_set_float32']['median_ms']:.1f} ms vs ta {result['ta_set_ms']:.0f} ms "
           f"-> x{result['ratio_ta_float32']:.1f}; " if run_ta else "")
        + f"full pipeline ({full['features']} features) {full['median_ms']:.0f} ms",
        flush=True,
    )
    return result


def stock_panel(max_assets: int | None = None) -> Bars | None:
    directory = SHARED / "stocks_daily"
    if not directory.is_dir():
        return None
    from trading_jax.data import load_ohlcv

    files = sorted(p for p in directory.iterdir() if p.suffix in (".csv", ".parquet", ".feather"))
    data = load_ohlcv(files[:max_assets] if max_assets else directory)
    filled, _ = fill_missing_bars(data.bars, data.valid)  # late listings: flat before the first bar
    return filled


def synthetic_panel(n_bars: int, n_assets: int, seed: int = 0) -> Bars:
    from trading_jax.data.synthetic import GBMParams, panel

    market = panel(jax.random.key(seed), GBMParams(mu=0.05, sigma=0.3), n_bars, 1.0 / (252 * 390), n_assets=n_assets)
    return Bars(*(np.asarray(f, np.float64) for f in market.bars))


def machine() -> dict:
    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
        "device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind,
        "talib": version("TA-Lib"), "ta": version("ta"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=None, help="synthetic panel bars (default 1,000,000; quick 20,000)")
    parser.add_argument("--assets", type=int, default=None, help="synthetic panel assets (default 16; quick 4)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per side (default 5; quick 2)")
    parser.add_argument("--ta-repeats", type=int, default=1, help="`ta` takes about a minute on the big panel")
    parser.add_argument("--skip-ta", action="store_true")
    add_common_arguments(parser)
    args = parser.parse_args()
    bars = args.bars or (20_000 if args.quick else 1_000_000)
    assets = args.assets or (4 if args.quick else 16)
    repeats = args.repeats or (2 if args.quick else 5)

    load_before = os.getloadavg()
    results = {"benchmark": "features", "quick": args.quick, "machine": machine(),
               "settings": {"bars": bars, "assets": assets, "repeats": repeats, "ta_repeats": args.ta_repeats},
               "goal": {"vs_talib": 2.0, "vs_ta": 10.0},
               "notes": ("ours: one jit over the [time, asset] panel, XLA may use all cores; TA-Lib and ta: one "
                         "call per series, single-threaded; TA-Lib computes in float64. Medians over repeats "
                         "after a warm-up call."), "panels": {}, "skipped": {}}
    run_talib = missing("talib") is None
    run_ta = not args.skip_ta and missing("ta") is None
    if not run_talib:
        results["skipped"]["talib"] = skip_note("TA-Lib", "ta-lib", "talib")
    if args.skip_ta:
        results["skipped"]["ta"] = "ta skipped: --skip-ta"
    elif not run_ta:
        results["skipped"]["ta"] = skip_note("ta", "ta", "ta")
    for note in results["skipped"].values():
        print(note, flush=True)

    stocks = stock_panel(20 if args.quick else None)
    if stocks is not None:
        n_stocks = stocks.close.shape[1]
        print(f"panel: {n_stocks} daily stocks", flush=True)
        results["panels"][f"stocks_daily_{n_stocks}"] = bench_panel(
            "stocks", stocks, repeats * 4, 1 if args.quick else 3, run_talib, run_ta)
    print(f"panel: synthetic {bars:,} bars x {assets} assets", flush=True)
    big = bench_panel("synthetic", synthetic_panel(bars, assets), repeats, args.ta_repeats, run_talib, run_ta)
    results["panels"]["synthetic"] = big
    record_load(results["machine"], load_before)
    write_results(output_path("features", args), results)

    if "ratio_ta_float32" in big:
        print(f"features (ta set, {bars:,}x{assets}): ours {big['ours_ta_set_float32']['median_ms']:.1f} ms, "
              f"ta {big['ta_set_ms']:.0f} ms, ratio {big['ratio_ta_float32']:.1f} (goal 10)")
    ours = big["ours_talib_set_float32"]["median_ms"]
    if run_talib:
        print(f"features: ours {ours:.1f} ms, TA-Lib {big['talib_set_ms']:.1f} ms, "
              f"ratio {big['ratio_talib_float32']:.2f} (goal 2.0)")
    else:
        print(f"features: ours {ours:.1f} ms, TA-Lib skipped (not installed: pip install ta-lib), ratio n/a (goal 2.0)")


if __name__ == "__main__":
    main()
