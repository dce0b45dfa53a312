"""Calibration of the execution environment on real bars, and the trade-flow imbalance of bars for replay.

Host-side NumPy (the spread estimators run through their JAX implementations in
`trading_jax.features.microstructure`); nothing here is traced. Two entry points:

    cal = calibrate_execution(load_ohlcv(path, repair="swap_volume"))
    env, params = make_execution(horizon=60, **cal.env_kwargs(60, step_minutes=1, start_hour=14))
    weights = profile_for_horizon(cal.hourly_profile, 60, step_minutes=1, start_hour=14)   # [60], mean 1

    imbalance, source = bar_imbalance(data)      # [T] in [-1, 1], "column:<name>" or "bvc"

**Calibrated quantities** (`calibrate_execution`, over the bars of one symbol in the selected range; `b` is the
bar length in minutes, from `MarketData.frequency`):

* `sigma`: per-bar volatility of the log return `r_t = ln(C_t / C_{t-1})`, over consecutive bars only (pairs
  whose timestamps differ by more than one bar are left out). Two estimates are reported:
  `sigma_std`, the sample standard deviation (`ddof = 1`), and `sigma_mad = 1.4826 * median|r - median r|`
  (the MAD scaled to equal the standard deviation of a Gaussian). **`sigma = sigma_std` is used**: the
  environment draws Gaussian shocks whose variance should match the variance of real returns, tails included
  (the same choice `make_execution` makes for replay); on fat-tailed crypto returns `sigma_mad` is smaller,
  and the ratio `sigma_mad / sigma_std` tells how much of the variance sits in the tails.
* `spread_mean`: the median over the selected bars of one trailing-window spread estimator (warm-up NaN
  ignored), the env's "median relative spread". The three estimators of `trading_jax.features.microstructure`
  are all computed and their medians reported (`spread_abdi_ranaldo`, `spread_corwin_schultz`, `spread_roll`),
  since they disagree on hourly crypto bars: they infer the spread from the bounce or the high-low range, and
  within an hour the range is dominated by volatility, not by the spread (Corwin & Schultz 2012 and Abdi &
  Ranaldo 2017 designed theirs for daily bars of stocks). The default is Abdi-Ranaldo, which its authors report
  tracks TAQ effective spreads more closely than Roll's and Corwin-Schultz's estimators (Abdi & Ranaldo 2017).
  On the BTC/USD hourly file the three medians are 3.5 bp (Abdi-Ranaldo), 22.7 bp (Corwin-Schultz) and 23.1 bp
  (Roll): a factor of about 7 apart, so the calibrated spread is uncertain to that extent; the files carry no
  quotes to check it against.
  Corwin-Schultz is run with its overnight-gap adjustment (`close=`), which is a no-op where a bar opens at the
  previous close.
* `volume`: the median bar volume in base units (e.g. BTC), the env's "expected market volume per step" `V`.
  The median, not the mean: bar volumes are right-skewed (news bursts) and `V` is the typical step's volume.
* `hourly_profile` `[24]` (bars of one hour or less only): the mean volume share of each UTC hour of the day,
  normalised to mean 1. Per complete UTC day `d` (a day whose 24 hours all hold a bar, with positive volume),
  `s_{d,h} = 24 v_{d,h} / sum_h v_{d,h}` (`v_{d,h}`: the volume of the bars stamped in hour `h` of day `d`);
  `profile_h = mean_d s_{d,h}` and `hourly_profile_se_h = sd_d(s_{d,h}) / sqrt(n_days)` (day-to-day standard
  error; days are treated as independent, which understates it if shares persist from day to day). Shares
  per day, rather than mean volume per hour, keep the years of high volume from dominating the shape. A bar is
  counted in the hour of its timestamp (files usually stamp the bar's open; if yours stamps the close, the
  profile is shifted by one bar).

**Rescaling to the env's step** (`ExecutionCalibration.env_kwargs`): with `k = step_minutes / b`,

    sigma_step  = sigma * sqrt(k)            (i.i.d. returns: variance adds over time)
    volume_step = volume * k * level,        level = mean_t w_raw(t)  (1 without a profile)
    spread_mean = spread_mean                (a relative spread does not scale with time)

where `w_raw(t)` is the hourly profile averaged over step `t`'s time span (`profile_for_horizon` before its
normalisation), so `volume_step * profile_for_horizon(...)[t]` is the expected volume of step `t` (an
execution over the quiet hours gets a smaller `V`). The square-root rescaling ignores the intraday pattern of
volatility (which, like volume, is U-shaped on most markets) and the bounce noise of very short steps; the
linear volume rescaling takes the median bar's volume as spread evenly over the bar.

**The profile for the env**: the execution env's `volume_profile(curvature, H)` is a parametric U-shape; the
calibrated profile is an array `[H]` that the env takes as its `volume_profile` field (an `EnvParams` array, so
it stays vmappable and is not baked into the compiled program), from `profile_for_horizon`.

**Bar imbalance** (`bar_imbalance`): the signed trade-flow imbalance `(buy - sell) / (buy + sell)` of each bar,
from a column of the file when it has one, or else estimated by bulk volume classification (BVC; Easley,
Lopez de Prado & O'Hara 2012, "Flow toxicity and liquidity in a high-frequency world", Review of Financial
Studies 25(5), 1457-1493): the buy share of bar `t` is `Phi(r_t / sigma_t)`, `Phi` the standard normal CDF,
`r_t` the bar's close-to-close log return and `sigma_t` a trailing standard deviation of earlier returns, so
`imbalance_t = 2 Phi(r_t / sigma_t) - 1`.

Constants: `BTC_USD_HOURLY` is `calibrate_execution` on the whole BTC/USD hourly file of `../shared/data`
(`crypto/BTC_USD-1h.csv`, 33,259 bars 2018-05-15 06:00 .. 2022-03-01 00:00 UTC, loaded with
`repair="swap_volume"`, default arguments); a test recomputes it from the file. Its volume is that of the one
exchange the file comes from, not the whole BTC market.

References:
    Abdi, F. & Ranaldo, A. (2017). A simple estimation of bid-ask spreads from daily close, high, and low
        prices. Review of Financial Studies 30(12), 4437-4480.
    Corwin, S. A. & Schultz, P. (2012). A simple way to estimate bid-ask spreads from daily high and low
        prices. Journal of Finance 67(2), 719-760.
    Roll, R. (1984). A simple implicit measure of the effective bid-ask spread in an efficient market.
        Journal of Finance 39(4), 1127-1139.
    Easley, D., Lopez de Prado, M. M. & O'Hara, M. (2012). Flow toxicity and liquidity in a high-frequency
        world. Review of Financial Studies 25(5), 1457-1493.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
from scipy.special import ndtr

__all__ = [
    "SPREAD_ESTIMATORS",
    "MIN_BARS",
    "ExecutionCalibration",
    "calibrate_execution",
    "profile_for_horizon",
    "bar_imbalance",
    "BTC_USD_HOURLY",
]

SPREAD_ESTIMATORS = ("abdi_ranaldo", "corwin_schultz", "roll")
MIN_BARS = 30  # fewest bars calibrate_execution accepts (our choice: enough for a median and a standard deviation)
_MAD_TO_SD = 1.4826  # 1 / Phi^{-1}(3/4): the MAD of a Gaussian times this is its standard deviation
_MINUTES_PER_DAY = 1440.0


def _array(values) -> np.ndarray:
    a = np.array(values, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class ExecutionCalibration:
    """Execution-env parameters measured on real bars (see the module docstring for each estimate).

    Attributes:
        symbol: the calibrated symbol.
        bar_minutes: bar length in minutes (from `MarketData.frequency`).
        n_bars: number of bars used.
        start, end: timestamps (`datetime64[ns]`, UTC) of the first and last bar used.
        sigma: per-bar volatility used by `env_kwargs` (= `sigma_std`).
        sigma_std: standard deviation (`ddof = 1`) of the consecutive bars' log returns.
        sigma_mad: `1.4826 * MAD` of the same returns.
        spread_mean: median of `spread_estimator` over the bars (warm-up NaN ignored).
        spread_estimator: one of `SPREAD_ESTIMATORS`.
        spread_abdi_ranaldo, spread_corwin_schultz, spread_roll: the median of each estimator.
        window: the estimators' trailing window (bars).
        volume: median bar volume (base units).
        hourly_profile: `[24]` float64, mean volume share per UTC hour, mean 1; None for bars over an hour.
        hourly_profile_se: `[24]` day-to-day standard error of `hourly_profile`; None with it.
        n_days: complete UTC days behind the profile (0 without one).
    """

    symbol: str
    bar_minutes: float
    n_bars: int
    start: np.datetime64
    end: np.datetime64
    sigma: float
    sigma_std: float
    sigma_mad: float
    spread_mean: float
    spread_estimator: str
    spread_abdi_ranaldo: float
    spread_corwin_schultz: float
    spread_roll: float
    window: int
    volume: float
    hourly_profile: np.ndarray | None = None
    hourly_profile_se: np.ndarray | None = None
    n_days: int = 0

    def __post_init__(self):
        for name in ("hourly_profile", "hourly_profile_se"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _array(value))

    def env_kwargs(self, horizon: int, *, step_minutes: float | None = None, start_hour: float = 0) -> dict:
        """`make_execution` keyword arguments for steps of `step_minutes` (the bar length by default).

        `sigma * sqrt(k)`, `volume * k * level` and `spread_mean`, with `k = step_minutes / bar_minutes` and
        `level` the mean of the hourly profile over the `horizon` steps from `start_hour` (1 without a
        profile); see the module docstring. The matching per-step volume weights are
        `self.profile(horizon, ...)`, returned separately (the env takes them as its `volume_profile` array).

        Args:
            horizon: number of env steps H (>= 1).
            step_minutes: minutes per env step (> 0); None: one bar.
            start_hour: UTC hour of day (float, 0 <= h < 24) at which step 0 starts.

        Returns:
            `{"sigma": float, "volume": float, "spread_mean": float}`.
        """
        step = self.bar_minutes if step_minutes is None else step_minutes
        _check_horizon(horizon, step, start_hour)
        k = float(step) / self.bar_minutes
        level = 1.0
        if self.hourly_profile is not None:
            level = float(np.mean(_step_weights(self.hourly_profile, horizon, step, start_hour)))
        return {
            "sigma": float(self.sigma * np.sqrt(k)),
            "volume": float(self.volume * k * level),
            "spread_mean": float(self.spread_mean),
        }

    def profile(self, horizon: int, *, step_minutes: float | None = None, start_hour: float = 0) -> np.ndarray:
        """`profile_for_horizon(self.hourly_profile, ...)`; step length defaults to one bar.

        Raises:
            ValueError: if this calibration has no hourly profile (bars longer than an hour).
        """
        if self.hourly_profile is None:
            raise ValueError(
                f"this calibration of {self.symbol!r} has no hourly profile ({self.bar_minutes:g}-minute bars); "
                "calibrate on bars of one hour or less, or keep the env's parametric volume_profile"
            )
        step = self.bar_minutes if step_minutes is None else step_minutes
        return profile_for_horizon(self.hourly_profile, horizon, step, start_hour)


# ----------------------------------------------------------------------------------------------------------------
# calibrate_execution
# ----------------------------------------------------------------------------------------------------------------


def _check_choice_and_window(caller: str, name: str, value, allowed: tuple, window) -> None:
    """One-line errors for an unknown `name` (not in `allowed`) or a `window` that is not an int >= 2."""
    if value not in allowed:
        raise ValueError(f"{caller}: unknown {name} {value!r}; choose from {allowed}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"{caller}: window must be an int >= 2 (bars); got {window!r}")


def _symbol_column(data, symbol: str | None, caller: str) -> int:
    if symbol is None:
        if len(data.symbols) != 1:
            raise ValueError(f"{caller}: the data holds {len(data.symbols)} symbols {list(data.symbols)}; pass symbol=...")
        return 0
    if symbol not in data.symbols:
        raise ValueError(f"{caller}: unknown symbol {symbol!r}; the data holds {list(data.symbols)}")
    return data.symbols.index(symbol)


def _bar_minutes(data, caller: str) -> float:
    if data.frequency is None:
        raise ValueError(f"{caller}: the data has no bar frequency (fewer than 3 bars); load at least {MIN_BARS} bars")
    return float(data.frequency / np.timedelta64(1, "m"))


def _check_bars(data, col: int, rows: slice, offset: int, caller: str) -> None:
    """A ValueError naming the first missing or invalid bar of the selected rows."""
    stamps = np.asarray(data.timestamps)[rows]
    bad_any = ~np.asarray(data.valid)[rows, col]
    for name, values in zip(data.bars._fields, data.bars):
        v = np.asarray(values, np.float64)[rows, col]
        bad = ~np.isfinite(v) | ((v <= 0) if name != "volume" else (v < 0))
        bad_any = bad_any | bad
    if bad_any.any():
        row = int(np.argmax(bad_any))
        raise ValueError(
            f"{caller}: symbol {data.symbols[col]!r} has a missing or invalid bar at row {row + offset} "
            f"({stamps[row]}); {int(bad_any.sum())} such bars in the selected range. Choose a split without them, "
            "or repair the file (load_ohlcv(..., repair=...))."
        )


def _spread_medians(high, low, close, window: int) -> dict[str, float]:
    import jax.numpy as jnp

    from trading_jax.features import microstructure as ms

    h, l, c = (jnp.asarray(a, jnp.float32) for a in (high, low, close))
    series = {
        "abdi_ranaldo": ms.abdi_ranaldo_spread(h, l, c, window=window),
        "corwin_schultz": ms.corwin_schultz_spread(h, l, window=window, close=c),
        "roll": ms.roll_spread(c, window=window),
    }
    return {name: float(np.nanmedian(np.asarray(s, np.float64))) for name, s in series.items()}


def _daily_hour_volume(stamps: np.ndarray, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Volume per (UTC day, hour) `[days, 24]` and whether each (day, hour) holds a bar, over the days seen."""
    minutes = (stamps - stamps[0].astype("datetime64[D]")) // np.timedelta64(1, "m")
    day = (minutes // 1440).astype(np.int64)
    hour = ((minutes % 1440) // 60).astype(np.int64)
    n_days = int(day[-1]) + 1
    table = np.zeros((n_days, 24))
    seen = np.zeros((n_days, 24), bool)
    np.add.at(table, (day, hour), volume)
    seen[day, hour] = True
    return table, seen


def _hourly_profile(stamps, volume) -> tuple[np.ndarray, np.ndarray, int]:
    table, seen = _daily_hour_volume(stamps, volume)
    total = table.sum(axis=1)
    complete = seen.all(axis=1) & (total > 0)
    shares = 24.0 * table[complete] / total[complete, None]
    n = shares.shape[0]
    if n < 2:
        return None, None, n
    profile = shares.mean(axis=0)
    se = shares.std(axis=0, ddof=1) / np.sqrt(n)
    scale = profile.mean()  # 1 up to rounding (each day's shares average 1)
    return profile / scale, se / scale, n


def calibrate_execution(
    data,
    *,
    symbol: str | None = None,
    split=None,
    spread_estimator: str = "abdi_ranaldo",
    window: int = 24,
    profile: bool | None = None,
) -> ExecutionCalibration:
    """Measure the execution env's `sigma`, `spread_mean`, `volume` and hourly volume profile on real bars.

    Args:
        data: `MarketData` (`load_ohlcv`; for the BTC/USD hourly file pass `repair="swap_volume"`).
        symbol: the symbol to calibrate (None: the only one).
        split: optional `IndexRange` of rows; only these bars are used (estimator warm-ups inside it).
        spread_estimator: which estimator's median becomes `spread_mean`: one of `SPREAD_ESTIMATORS`.
        window: the spread estimators' trailing window in bars (default 24: one day of hourly bars).
        profile: compute the hourly profile: None (default) when bars are one hour or shorter, True to
            require it (an error for longer bars), False never.

    Returns:
        `ExecutionCalibration`.

    Raises:
        ValueError: an unknown symbol or estimator; fewer than `max(MIN_BARS, window + 2)` bars (or fewer than
            2 complete UTC days for the profile); `profile=True` on bars longer than an hour; a missing or
            invalid bar in the selected range (naming the symbol, row and timestamp).
    """
    caller = "calibrate_execution"
    _check_choice_and_window(caller, "spread_estimator", spread_estimator, SPREAD_ESTIMATORS, window)
    col = _symbol_column(data, symbol, caller)
    name = data.symbols[col]
    rows = slice(None) if split is None else split.slice
    offset = 0 if split is None else int(split.start)
    stamps = np.asarray(data.timestamps)[rows]
    n = int(stamps.shape[0])
    needed = max(MIN_BARS, window + 2)
    if n < needed:
        raise ValueError(
            f"{caller}: {n} bars of {name!r} selected, too few: at least {needed} are needed "
            f"(max({MIN_BARS}, window + 2)); widen the split or lower window"
        )
    bar_minutes = _bar_minutes(data, caller)
    if profile and bar_minutes > 60:
        raise ValueError(
            f"{caller}: bars of {name!r} are {bar_minutes:g} minutes long; the hourly volume profile needs bars of "
            "60 minutes or less: pass profile=False (or None), or calibrate on intraday bars"
        )
    _check_bars(data, col, rows, offset, caller)
    o, h, l, c, v = (np.asarray(f, np.float64)[rows, col] for f in data.bars)

    r = np.diff(np.log(c))
    consecutive = np.diff(stamps) == data.frequency
    r = r[consecutive]
    sigma_std = float(np.std(r, ddof=1))
    sigma_mad = float(_MAD_TO_SD * np.median(np.abs(r - np.median(r))))

    spreads = _spread_medians(h, l, c, window)
    hourly = se = None
    n_days = 0
    if profile is not False and bar_minutes <= 60:
        hourly, se, n_days = _hourly_profile(stamps, v)
        if hourly is None:
            raise ValueError(
                f"{caller}: {name!r} has {n_days} complete UTC day(s) of bars in the selected range, too few for "
                "the hourly profile (at least 2 are needed); widen the split or pass profile=False"
            )
    return ExecutionCalibration(
        symbol=name,
        bar_minutes=bar_minutes,
        n_bars=n,
        start=stamps[0],
        end=stamps[-1],
        sigma=sigma_std,
        sigma_std=sigma_std,
        sigma_mad=sigma_mad,
        spread_mean=spreads[spread_estimator],
        spread_estimator=spread_estimator,
        spread_abdi_ranaldo=spreads["abdi_ranaldo"],
        spread_corwin_schultz=spreads["corwin_schultz"],
        spread_roll=spreads["roll"],
        window=window,
        volume=float(np.median(v)),
        hourly_profile=hourly,
        hourly_profile_se=se,
        n_days=n_days,
    )


# ----------------------------------------------------------------------------------------------------------------
# profile_for_horizon
# ----------------------------------------------------------------------------------------------------------------


def _check_horizon(horizon, step_minutes, start_hour) -> None:
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be an int >= 1 (env steps); got {horizon!r}")
    if not (np.isfinite(step_minutes) and step_minutes > 0):
        raise ValueError(f"step_minutes must be > 0; got {step_minutes!r}")
    if not (np.isfinite(start_hour) and 0 <= start_hour < 24):
        raise ValueError(f"start_hour must be a UTC hour in [0, 24); got {start_hour!r}")


def _step_weights(hourly_profile, horizon: int, step_minutes: float, start_hour: float) -> np.ndarray:
    """`[H]` float64: the mean of the (periodic, piecewise-constant) hourly profile over each step's span."""
    p = np.asarray(hourly_profile, np.float64)
    cum = np.concatenate([[0.0], np.cumsum(p)]) * 60.0  # integral of the profile from 00:00, per hour boundary

    def integral(m):  # of the profile over [0, m) minutes
        days, rest = np.divmod(m, _MINUTES_PER_DAY)
        hour = np.minimum((rest // 60).astype(np.int64), 23)
        return days * cum[24] + cum[hour] + (rest - 60.0 * hour) * p[hour]

    start = 60.0 * float(start_hour) + float(step_minutes) * np.arange(horizon + 1)
    return np.diff(integral(start)) / float(step_minutes)


def profile_for_horizon(hourly_profile, horizon: int, step_minutes: float, start_hour: float = 0) -> np.ndarray:
    """The expected volume weight of each of `horizon` steps of `step_minutes`, from step 0 at `start_hour` UTC.

    Step `t` spans `[start_hour * 60 + t * step_minutes, ... + step_minutes)` minutes after midnight UTC (days
    wrap around); its weight is the mean of `hourly_profile` over that span: the weight of the hour it falls in
    when steps divide the hour, a time-weighted mix for a step that straddles hours. The weights are then
    normalised to mean 1 over the horizon (the env's `volume` then carries the level: see
    `ExecutionCalibration.env_kwargs`). The env takes the result as its `volume_profile` array field.

    Args:
        hourly_profile: `[24]` non-negative weights per UTC hour (e.g. `ExecutionCalibration.hourly_profile`).
        horizon: number of steps H (>= 1).
        step_minutes: minutes per step (> 0).
        start_hour: UTC hour (float, in [0, 24)) at which step 0 starts.

    Returns:
        float32 `[H]` with mean 1.

    Raises:
        ValueError: a profile that is not 24 finite non-negative numbers with a positive sum, or a bad horizon,
            step or start hour.
    """
    p = np.asarray(hourly_profile, np.float64)
    if p.shape != (24,) or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(
            f"hourly_profile must be 24 finite non-negative weights (one per UTC hour) with a positive sum; got "
            f"shape {p.shape}"
        )
    _check_horizon(horizon, step_minutes, start_hour)
    w = _step_weights(p, horizon, step_minutes, start_hour)
    if w.mean() <= 0:
        raise ValueError(
            f"hourly_profile is zero over all {horizon} steps from hour {start_hour:g}; pick another start_hour"
        )
    return (w / w.mean()).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# bar_imbalance
# ----------------------------------------------------------------------------------------------------------------

_TAKER_BUY = ("taker_buy_base_asset_volume", "taker_buy_volume", "buy_volume")
_METHODS = ("auto", "column", "bvc")


def _extra_columns(data, col: int) -> dict[str, np.ndarray]:
    return {re.sub(r"[^a-z0-9]+", "_", k.lower()).strip("_"): np.asarray(v, np.float64)[:, col]
            for k, v in data.extra.items()}


def _imbalance_from_columns(data, col: int, volume: np.ndarray):
    """`(imbalance [T] float64, source)` from the file's columns, or None when it has none of them."""
    extra = _extra_columns(data, col)
    with np.errstate(all="ignore"):
        if "imbalance" in extra:
            x = extra["imbalance"]
            return np.where(np.isfinite(x), np.clip(x, -1.0, 1.0), 0.0), "column:imbalance"
        if "buy_volume" in extra and "sell_volume" in extra:
            b, s = extra["buy_volume"], extra["sell_volume"]
            ok = np.isfinite(b) & np.isfinite(s) & (b + s > 0)
            return np.where(ok, (b - s) / np.where(ok, b + s, 1.0), 0.0), "column:buy_volume,sell_volume"
        for name in _TAKER_BUY:
            if name in extra:
                b = extra[name]
                ok = np.isfinite(b) & np.isfinite(volume) & (volume > 0)
                return np.where(ok, 2.0 * b / np.where(ok, volume, 1.0) - 1.0, 0.0), f"column:{name}"
    return None


def _bvc(close: np.ndarray, volume: np.ndarray, window: int) -> np.ndarray:
    """BVC imbalance `2 Phi(r_t / sigma_t) - 1`, sigma_t the sd (ddof 1) of the finite returns among t-window..t-1."""
    n = close.shape[0]
    with np.errstate(all="ignore"):
        r = np.concatenate([[np.nan], np.log(close[1:] / close[:-1])])  # r_0 undefined
    ok = np.isfinite(r)
    x = np.where(ok, r, 0.0)
    # trailing sums over rows t-window .. t-1 (exclusive of t), from prefix sums (float64, host)
    c0, c1, c2 = (np.concatenate([[0.0], np.cumsum(a)]) for a in (ok.astype(np.float64), x, x * x))
    t = np.arange(n)
    lo = np.maximum(t - window, 0)
    cnt, s1, s2 = c0[t] - c0[lo], c1[t] - c1[lo], c2[t] - c2[lo]
    with np.errstate(all="ignore"):
        var = (s2 - s1 * s1 / cnt) / (cnt - 1.0)
        sd = np.sqrt(np.maximum(var, 0.0))
        z = np.where(sd > 0, x / sd, np.sign(x) * np.inf)
    imb = 2.0 * ndtr(z) - 1.0
    ready = (t >= window + 1) & (cnt >= 2) & ok & np.isfinite(volume) & (volume > 0)
    return np.where(ready, imb, 0.0)


def bar_imbalance(data, *, symbol: str | None = None, method: str = "auto", window: int = 50) -> tuple[np.ndarray, str]:
    """The signed trade-flow imbalance `(buy - sell) / (buy + sell)` of each bar, in [-1, 1], for replay.

    Sources (`method`):

    * ``"column"``: from `data.extra`, the first of: an `imbalance` column (clipped to [-1, 1]); `buy_volume`
      and `sell_volume` columns (`(b - s) / (b + s)`); a taker-buy volume column (`taker_buy_base_asset_volume`,
      `taker_buy_volume` or `buy_volume`: `2 * buy / volume - 1`, clipped). Column names are matched after
      lower-casing and turning non-alphanumerics into `_`.
    * ``"bvc"``: bulk volume classification (Easley, Lopez de Prado & O'Hara 2012): the buy share of bar `t`
      is `Phi(r_t / sigma_t)` with `r_t = ln(C_t / C_{t-1})` and `sigma_t` the standard deviation (ddof 1) of
      the returns of the `window` bars before `t` (`t - window .. t - 1`: causal, known before the bar), so
      `imbalance_t = 2 Phi(r_t / sigma_t) - 1`. Rows `t <= window` (the warm-up) are 0. A window of flat prices
      (`sigma_t = 0`) gives `sign(r_t)`. BVC makes the imbalance a monotone function of the bar's own
      return: in replay it is contemporaneous with that bar's move (it says which way the bar went, and how
      far in volatility units), not a forecast of the next bar; an agent must only see it after the bar.
    * ``"auto"`` (default): ``"column"`` when the data has such a column, else ``"bvc"``.

    Missing and empty bars never give NaN: a bar with a NaN value or zero volume (no trade, no flow) has
    imbalance 0, and NaN returns are left out of the trailing standard deviation (a return next to a missing
    bar is not computed). Compute on the whole series and cut to a split afterwards (`imbalance[split.slice]`):
    the BVC warm-up then uses bars before the split, which is causal.

    Args:
        data: `MarketData`.
        symbol: the symbol (None: the only one).
        method: "auto", "column" or "bvc".
        window: BVC's trailing window of returns (bars, >= 2; default 50: our choice, not the paper's).

    Returns:
        `(imbalance, source)`: float32 `[T]` in [-1, 1], and "column:<name(s)>" or "bvc".

    Raises:
        ValueError: an unknown symbol or method, a bad window, or method="column" on data without such a column.
    """
    caller = "bar_imbalance"
    _check_choice_and_window(caller, "method", method, _METHODS, window)
    col = _symbol_column(data, symbol, caller)
    close = np.asarray(data.bars.close, np.float64)[:, col]
    volume = np.asarray(data.bars.volume, np.float64)[:, col]
    valid = np.asarray(data.valid)[:, col]
    close = np.where(valid, close, np.nan)
    if method != "bvc":
        found = _imbalance_from_columns(data, col, volume)
        if found is not None:
            imb, source = found
            imb = np.where(valid, np.clip(imb, -1.0, 1.0), 0.0)
            return imb.astype(np.float32), source
        if method == "column":
            raise ValueError(
                f"{caller}: {data.symbols[col]!r} has no imbalance, buy/sell or taker-buy volume column (looked for "
                f"'imbalance', 'buy_volume'+'sell_volume', {list(_TAKER_BUY)}; extra columns: {sorted(data.extra)}); "
                "use method='bvc' to estimate it from returns"
            )
    return _bvc(close, volume, window).astype(np.float32), "bvc"


# ----------------------------------------------------------------------------------------------------------------
# BTC/USD hourly (../shared/data/crypto/BTC_USD-1h.csv, whole file, repair="swap_volume", default arguments)
# ----------------------------------------------------------------------------------------------------------------

BTC_USD_HOURLY = ExecutionCalibration(
    symbol="BTC/USD",
    bar_minutes=60.0,
    n_bars=33259,
    start=np.datetime64("2018-05-15T06:00", "ns"),
    end=np.datetime64("2022-03-01T00:00", "ns"),
    sigma=0.00815934,
    sigma_std=0.00815934,
    sigma_mad=0.00415874,
    spread_mean=0.000345261,
    spread_estimator="abdi_ranaldo",
    spread_abdi_ranaldo=0.000345261,
    spread_corwin_schultz=0.00227285,
    spread_roll=0.00231226,
    window=24,
    volume=176.3,
    hourly_profile=(
        0.987228, 0.801883, 0.715272, 0.680689, 0.717196, 0.725933, 0.815605, 0.926901,
        1.05162, 1.0392, 1.11522, 1.08475, 1.20509, 1.28658, 1.36919, 1.34074,
        1.32209, 1.06639, 1.0059, 1.01322, 1.07798, 0.874757, 0.884463, 0.892103,
    ),
    hourly_profile_se=(
        0.0220236, 0.0178297, 0.0153658, 0.0153958, 0.0183783, 0.0171535, 0.0172769, 0.0186785,
        0.0189923, 0.0201706, 0.02282, 0.0215855, 0.0208869, 0.0229668, 0.0252193, 0.025852,
        0.0247826, 0.0223515, 0.0228874, 0.022652, 0.0245967, 0.0196636, 0.0220121, 0.0234701,
    ),
    n_days=1385,
)
"""BTC/USD hourly bars of `../shared/data/crypto/BTC_USD-1h.csv` (whole file, `load_ohlcv(path, repair="swap_volume")`,
`calibrate_execution` with its defaults), to 6 significant digits: hourly sigma 0.816% (MAD-based 0.416%: fat
tails), Abdi-Ranaldo spread 3.45 bp (Corwin-Schultz 22.7 bp, Roll 23.1 bp: the estimators disagree by a factor of
about 7 on hourly bars), median volume 176.3 BTC per hour, and a volume profile from 0.68 at 03:00 UTC to 1.37 at
14:00 UTC over 1,385 complete days. Recomputed from the file by `tests/test_env_calibration.py`."""
