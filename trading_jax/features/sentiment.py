"""Sentiment features per bar and asset from scored texts, without look-ahead (seed 000, "Input Features" 6).

A sentiment model scores each text (news, a post); one scored text is an *event*
`(time s, asset a, score in [-1, 1], confidence in [0, 1])`, with `score = P(positive) - P(negative)` and
`confidence` the model's top class probability (`score_from_probs`). `aggregate_sentiment` turns the events
into a `[time, asset, 4]` tensor aligned with the bars, whose columns are `SENTIMENT_FEATURES`:

    events = events_from_frame(texts, timestamps, symbols)          # a DataFrame of scored texts -> arrays
    sentiment = aggregate_sentiment(timestamps, *events, n_assets=len(symbols),
                                    half_life=np.timedelta64(2, "h"), lag=np.timedelta64(30, "s"))
    raw = pipeline.compute(bars, timestamps, external=sentiment, external_names=SENTIMENT_FEATURES)
    # or straight into an environment: make_market(bars, spread, features=sentiment)

**Visibility (the no-look-ahead rule).** `bar_times[t]` is the time at which bar t's observation is formed
(its close). A text stamped `s` becomes visible at the first bar with `bar_times[t] > s + lag`, strictly:
a text stamped exactly at a bar's time (or within `lag` before it) is not seen by that bar, only by a
later one. `lag >= 0` is the processing latency (fetching, scoring). So row t depends on texts with
`s + lag < bar_times[t]` only, and changing or deleting any text stamped after a time `u` leaves every
row with `bar_times[t] <= u` unchanged, bit for bit. Texts stamped before the first bar are visible at
bar 0 (they count there); texts not visible by the last bar affect nothing.

**The features** of bar t and asset a, over the texts of asset a that first became visible at bar t,
i.e. `bar_times[t-1] < s + lag < bar_times[t]` (`-inf < s + lag` for t = 0):

* `sentiment_mean`: their mean score, 0 when there is none.
* `sentiment_weighted`: their confidence-weighted mean score `sum(c s) / sum(c)`, 0 when there is none
  or every confidence is 0.
* `sentiment_count`: how many there are (the raw count, not its log; a float).
* `sentiment_decayed`: the exponentially time-decayed, confidence-weighted score over *all* texts of the
  asset visible by bar t, `sum_i c_i s_i w_i / sum_i c_i w_i` with `w_i = 2^(-(bar_times[t] - s_i) /
  half_life)`, 0 before the first text with a positive confidence. It is a weighted mean, so it keeps the
  last value between texts (older texts only lose weight relative to newer ones).

`sentiment_decayed` is computed exactly by a recurrence over bars (a `lax.scan`, so irregular bar spacing is
handled): with `N_t = sum c s w`, `Z_t = sum c w` and `d_t = 2^(-(bar_times[t] - bar_times[t-1]) /
half_life)`, `N_t = d_t N_{t-1} + n_t` and `Z_t = d_t Z_{t-1} + z_t`, where `n_t`, `z_t` are the new texts'
terms. It is carried as `(log Z_t, N_t / Z_t)` so that neither underflows over long gaps or for very old
texts. Bucketing events to bars (`searchsorted`) happens on the host in int64 nanoseconds; the per-bar
reductions (`segment_sum`) and the recurrence run in JAX, in float32.

Times are `datetime64` (any unit; tz-aware pandas times are converted to UTC and made naive, as
`load_ohlcv` does) or plain numbers of seconds; bar times and text times must be of the same kind.
Durations (`half_life`, `lag`) are `timedelta64` (or `datetime.timedelta`, `pandas.Timedelta`) or seconds.
"""

from __future__ import annotations

import datetime
import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["SENTIMENT_FEATURES", "SentimentEvents", "aggregate_sentiment", "score_from_probs", "events_from_frame"]

SENTIMENT_FEATURES = (
    "sentiment_mean",  # mean score of the texts that first became visible at this bar (0 if none)
    "sentiment_weighted",  # their confidence-weighted mean score sum(c s) / sum(c) (0 if none or sum(c) = 0)
    "sentiment_count",  # how many texts first became visible at this bar (raw count)
    "sentiment_decayed",  # half-life-decayed, confidence-weighted mean score of every text visible so far
)


class SentimentEvents(NamedTuple):
    """Scored texts as arrays `[E]`, in the argument order of `aggregate_sentiment` (`*events`).

    Attributes:
        times: when each text was published: `datetime64[ns]` (UTC, naive) or float64 seconds.
        assets: int32 asset index of each text (column of the bars).
        scores: float64 `P(positive) - P(negative)`, in [-1, 1].
        confidences: float64 confidence of each score, in [0, 1].
    """

    times: np.ndarray
    assets: np.ndarray
    scores: np.ndarray
    confidences: np.ndarray


def aggregate_sentiment(bar_times, event_times, event_assets, scores, confidences, n_assets: int, half_life,
                        lag=0) -> jnp.ndarray:
    """Per-bar sentiment features of each asset from scored texts, causal (module docstring).

    Args:
        bar_times: strictly increasing `datetime64` (or seconds) `[T]`: when each bar's observation is formed.
        event_times: publication time of each text `[E]`, same kind as `bar_times`, any order.
        event_assets: integer asset index of each text `[E]`, in `0 .. n_assets - 1`.
        scores: score of each text `[E]`, in [-1, 1] (`score_from_probs`).
        confidences: confidence of each score `[E]`, in [0, 1].
        n_assets: A, the number of assets (columns of the bars).
        half_life: half-life of `sentiment_decayed`, a positive `timedelta64` or seconds.
        lag: processing latency, a `timedelta64` or seconds `>= 0`: a text stamped s reaches bars with
            `bar_times[t] > s + lag` only.

    Returns:
        `[T, A, 4]` float32, the features `SENTIMENT_FEATURES` in that order; finite everywhere (0 where there
        is nothing to average).

    Raises:
        ValueError: one line naming the argument, the first bad index and what to do: NaT, unsorted or
            repeated `bar_times`; event arrays of different lengths; a NaT/NaN event time; a NaN/inf score or
            confidence, a score outside [-1, 1] or a confidence outside [0, 1]; an asset index outside
            `0 .. n_assets - 1`; times of different kinds; `half_life <= 0`, `lag < 0` or `n_assets < 1`.
    """
    fn = "aggregate_sentiment"
    n_assets = _positive_int(n_assets, "n_assets", fn)
    bar_ns, bar_kind = _times_ns(bar_times, "bar_times", fn, lambda i: f"bar_times[{i}]")
    if bar_ns.ndim != 1 or bar_ns.size == 0:
        raise ValueError(f"{fn}: bar_times must be a non-empty 1-D array [T]; got shape {bar_ns.shape}")
    _check_increasing(bar_ns, bar_times, fn)
    lengths = {name: np.shape(v) for name, v in (("event_times", event_times), ("event_assets", event_assets),
                                                 ("scores", scores), ("confidences", confidences))}
    if len(set(lengths.values())) != 1 or len(next(iter(lengths.values()))) != 1:
        shown = ", ".join(f"{k} {v}" for k, v in lengths.items())
        raise ValueError(f"{fn}: event_times, event_assets, scores and confidences must be 1-D with one entry per "
                         f"text; got shapes {shown}")
    n_events = lengths["scores"][0]
    if n_events:
        event_ns, event_kind = _times_ns(event_times, "event_times", fn, lambda i: f"event_times[{i}]")
        if event_kind != bar_kind:
            raise ValueError(f"{fn}: bar_times are {bar_kind} but event_times are {event_kind}; pass both as "
                             "datetime64 or both as seconds")
    else:
        event_ns = np.zeros(0, np.int64)
    assets, scores, confidences = _check_events(event_assets, scores, confidences, n_assets, fn,
                                                names=("event_assets", "scores", "confidences"),
                                                where=lambda name, i: f"{name}[{i}]")
    half_life_s = _seconds(half_life, "half_life", fn)
    if not half_life_s > 0:
        raise ValueError(f"{fn}: half_life must be positive (a timedelta64 or seconds); got {half_life!r}")
    lag_s = _seconds(lag, "lag", fn)
    if lag_s < 0:
        raise ValueError(f"{fn}: lag must be >= 0 (a negative latency would let a bar see texts published after "
                         f"it); got {lag!r}")
    lag_ns = np.int64(round(lag_s * 1e9)) if not isinstance(lag, np.timedelta64) else \
        lag.astype("timedelta64[ns]").astype(np.int64)

    n_bars = int(bar_ns.size)
    # first bar that sees each text: bar_times[t] > s + lag, strictly (T: never visible, dropped)
    bar = np.searchsorted(bar_ns, event_ns + lag_ns, side="right")
    visible = bar < n_bars
    segment = np.where(visible, bar * n_assets + assets, n_bars * n_assets)
    age_s = (bar_ns[np.minimum(bar, n_bars - 1)] - event_ns).astype(np.float64) / 1e9
    age_half_lives = np.where(visible, age_s / half_life_s, 0.0)
    # sorted by segment (stable): a segment's texts are summed in the same order whatever the other texts are
    order = np.argsort(segment, kind="stable")
    size = max(8, 1 << max(n_events - 1, 0).bit_length())  # padded to a power of 2: few distinct compilations
    pad = size - n_events

    def padded(values, dtype, fill):
        return np.concatenate([np.asarray(values)[order].astype(dtype), np.full(pad, fill, dtype)])

    gaps = np.diff(bar_ns).astype(np.float64) / 1e9
    log_decay = np.concatenate([[0.0], -np.log(2.0) * gaps / half_life_s]).astype(np.float32)
    return _aggregate(padded(segment, np.int32, n_bars * n_assets), padded(scores, np.float32, 0.0),
                      padded(confidences, np.float32, 0.0), padded(age_half_lives, np.float32, 0.0),
                      log_decay, n_bars, n_assets)


@functools.partial(jax.jit, static_argnames=("n_bars", "n_assets"))
def _aggregate(segment, score, confidence, age_half_lives, log_decay, n_bars: int, n_assets: int) -> jnp.ndarray:
    """The JAX part of `aggregate_sentiment`: per-segment (bar * A + asset) sums and the decay recurrence.

    `segment [E]` sorted, `n_bars * n_assets` for texts seen by no bar (and padding); `log_decay [T]` is
    `log d_t`; `age_half_lives [E]` is `(bar_times[t] - s) / half_life` at the text's first bar t.
    """
    n_segments = n_bars * n_assets + 1

    def per_bar(values):
        out = jax.ops.segment_sum(values, segment, n_segments, indices_are_sorted=True)
        return out[:-1].reshape(n_bars, n_assets)

    count = per_bar(jnp.ones_like(score))
    total, weight = per_bar(score), per_bar(confidence)
    mean = jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)
    weighted = jnp.where(weight > 0, per_bar(confidence * score) / jnp.where(weight > 0, weight, 1.0), 0.0)

    # the new texts' log-mass log(sum c w) and their (c w)-weighted mean, relative to the segment's largest term
    log_w = jnp.log(confidence) - jnp.log(2.0) * age_half_lives  # -inf where c = 0
    top = jax.ops.segment_max(log_w, segment, n_segments, indices_are_sorted=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    rel = jnp.exp(log_w - top[segment])
    mass = jax.ops.segment_sum(rel, segment, n_segments, indices_are_sorted=True)
    mass_score = jax.ops.segment_sum(rel * score, segment, n_segments, indices_are_sorted=True)
    has_new = mass > 0
    new_log_mass = jnp.where(has_new, top + jnp.log(jnp.where(has_new, mass, 1.0)), -jnp.inf)[:-1]
    new_mean = jnp.where(has_new, mass_score / jnp.where(has_new, mass, 1.0), 0.0)[:-1]

    def step(carry, x):
        log_z, decayed = carry  # log Z_{t-1}, N_{t-1} / Z_{t-1}
        log_d, log_m, m = x
        old = log_z + log_d
        top = jnp.maximum(old, log_m)
        top = jnp.where(jnp.isfinite(top), top, 0.0)
        w_old, w_new = jnp.exp(old - top), jnp.exp(log_m - top)
        z = w_old + w_new
        seen = z > 0
        safe_z = jnp.where(seen, z, 1.0)
        decayed = jnp.where(seen, (w_old * decayed + w_new * m) / safe_z, decayed)
        log_z = jnp.where(seen, top + jnp.log(safe_z), -jnp.inf)
        return (log_z, decayed), decayed

    init = (jnp.full((n_assets,), -jnp.inf, jnp.float32), jnp.zeros((n_assets,), jnp.float32))
    xs = (log_decay, new_log_mass.reshape(n_bars, n_assets), new_mean.reshape(n_bars, n_assets))
    _, decayed = jax.lax.scan(step, init, xs)
    return jnp.stack([mean, weighted, count, decayed], axis=-1).astype(jnp.float32)


def score_from_probs(probs, positive: int, negative: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Score and confidence of a sentiment classifier's class probabilities (traceable under `jit`).

    `score = probs[..., positive] - probs[..., negative]` (in [-1, 1]) and `confidence = max_k probs[..., k]`
    (the probability of the predicted class), e.g. for a (negative, neutral, positive) head
    `score_from_probs(jax.nn.softmax(logits), positive=2, negative=0)`.

    Args:
        probs: class probabilities `[N, C]` (or `[..., C]`), each row summing to 1.
        positive: index of the positive class.
        negative: index of the negative class.

    Returns:
        `(score [N], confidence [N])`.

    Raises:
        ValueError: `positive` or `negative` not a class index, or both the same.
    """
    probs = jnp.asarray(probs)
    n_classes = probs.shape[-1] if probs.ndim else 0
    for name, k in (("positive", positive), ("negative", negative)):
        if not 0 <= int(k) < n_classes:
            raise ValueError(f"score_from_probs: {name}={k} is not a class index of probs with {n_classes} classes "
                             f"(shape {probs.shape}); pass indices in 0 .. {n_classes - 1}")
    if int(positive) == int(negative):
        raise ValueError(f"score_from_probs: positive and negative are both class {positive}; pass two different "
                         "class indices")
    return probs[..., int(positive)] - probs[..., int(negative)], jnp.max(probs, axis=-1)


def events_from_frame(df, bar_times, symbols: Sequence[str], time_column: str = "timestamp",
                      asset_column: str = "asset", score_column: str = "score",
                      confidence_column: str = "confidence") -> SentimentEvents:
    """Scored texts of a pandas DataFrame (one row per text) as the arrays of `aggregate_sentiment`.

    Timestamps are parsed as `load_ohlcv` parses them (`trading_jax.data.loading.parse_timestamps`): datetimes
    and strings with a UTC offset are converted to UTC, naive ones are taken as UTC; numbers are epochs whose
    unit is read from their magnitude. The times come back in the kind of `bar_times`: `datetime64[ns]` (UTC,
    naive) when the bars have datetimes, else float64 seconds.

    Args:
        df: the texts, with the four columns below (other columns are ignored).
        bar_times: the bars' times `[T]` (only their kind, datetimes or seconds, is used here).
        symbols: the asset names, in column order of the bars; `asset_column` holds these names.
        time_column, asset_column, score_column, confidence_column: the column names.

    Returns:
        `SentimentEvents(times, assets, scores, confidences)`, each `[rows]`, in the frame's row order.

    Raises:
        ValueError: one line naming the row (position, and the index label when it differs): a missing
            column, a missing or unparseable timestamp, a symbol not in `symbols` (listing them), or a bad
            score or confidence (as `aggregate_sentiment`).
    """
    from trading_jax.data.loading import parse_timestamps

    fn = "events_from_frame"
    columns = {"time_column": time_column, "asset_column": asset_column, "score_column": score_column,
               "confidence_column": confidence_column}
    missing = [f"{arg}={col!r}" for arg, col in columns.items() if col not in df.columns]
    if missing:
        raise ValueError(f"{fn}: the frame has no column {', '.join(missing)}; its columns are {list(df.columns)} "
                         "(pass the right names as time_column=, asset_column=, ...)")

    def row(i: int) -> str:
        label = df.index[i]
        label = label.item() if isinstance(label, np.generic) else label
        return f"row {i}" + ("" if label == i else f" (index {label!r})")

    ns, _, _ = parse_timestamps(df[time_column])
    nat = ns == np.iinfo(np.int64).min
    if nat.any():
        i = int(np.argmax(nat))
        raise ValueError(f"{fn}: column {time_column!r} at {row(i)} is missing or unparseable "
                         f"({df[time_column].iloc[i]!r}); {int(nat.sum())} such rows: give every text a time or drop "
                         "those rows")
    symbols = [str(s) for s in symbols]
    index = {s: k for k, s in enumerate(symbols)}
    names = df[asset_column].astype(str).to_numpy()
    known = np.array([s in index for s in names], bool)
    if not known.all():
        i, n_bad = int(np.argmin(known)), int((~known).sum())
        raise ValueError(f"{fn}: column {asset_column!r} at {row(i)} is {names[i]!r}, not one of the known symbols "
                         f"{symbols} ({n_bad} such row{'s' if n_bad != 1 else ''}); drop those rows or add the "
                         "symbol's bars")
    assets = np.array([index[s] for s in names], np.int32)
    assets, scores, confidences = _check_events(
        assets, df[score_column].to_numpy(np.float64, na_value=np.nan),
        df[confidence_column].to_numpy(np.float64, na_value=np.nan), len(symbols), fn,
        names=(asset_column, score_column, confidence_column), where=lambda name, i: f"column {name!r} at {row(i)}")
    _, kind = _times_ns(bar_times, "bar_times", fn, lambda i: f"bar_times[{i}]")
    times = ns.view("datetime64[ns]") if kind == "datetime64" else ns.astype(np.float64) / 1e9
    return SentimentEvents(times, assets, scores, confidences)


def _check_events(assets, scores, confidences, n_assets: int, fn: str, names: tuple[str, str, str],
                  where: Callable[[str, int], str]):
    """Validated `(assets int32, scores float64, confidences float64)`; `where(name, i)` names an entry."""
    asset_name, score_name, confidence_name = names
    assets = np.asarray(assets)
    if assets.size and not np.issubdtype(assets.dtype, np.integer):
        raise ValueError(f"{fn}: {asset_name} must hold integer asset indices; got dtype {assets.dtype}")
    bad = (assets < 0) | (assets >= n_assets)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{fn}: {where(asset_name, i)} is {int(assets[i])} but there are {n_assets} assets "
                         f"(indices 0 .. {n_assets - 1}); {int(bad.sum())} such texts: fix n_assets or the indices")
    checked = []
    for name, values, low in ((score_name, scores, -1.0), (confidence_name, confidences, 0.0)):
        values = np.asarray(values, np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{fn}: {where(name, i)} is {values[i]} ({int(bad.sum())} NaN/inf values); every text "
                             "needs a finite score and confidence: rescore or drop those texts")
        bad = (values < low) | (values > 1.0)
        if bad.any():
            i = int(np.argmax(bad))
            what = ("scores are P(positive) - P(negative)" if low < 0 else "confidences are probabilities")
            raise ValueError(f"{fn}: {where(name, i)} is {values[i]}, outside [{low:g}, 1] ({int(bad.sum())} such "
                             f"values); {what} (score_from_probs): check the model's output")
        checked.append(values)
    return assets.astype(np.int32), checked[0], checked[1]


def _times_ns(values, what: str, fn: str, where: Callable[[int], str]) -> tuple[np.ndarray, str]:
    """int64 nanoseconds of `datetime64` (UTC naive; tz-aware pandas times converted) or seconds, and the kind."""
    tz = getattr(getattr(values, "dtype", None), "tz", None)
    if tz is not None:  # a tz-aware pandas Index/Series: to UTC, then naive (as load_ohlcv)
        values = values.tz_convert("UTC").tz_localize(None) if hasattr(values, "tz_convert") else \
            values.dt.tz_convert("UTC").dt.tz_localize(None)
    array = np.asarray(values)
    if array.dtype.kind == "M":
        bad = np.isnat(array)
        kind, ns = "datetime64", array.astype("datetime64[ns]").view(np.int64)
    elif array.dtype.kind in "iu":
        bad = np.zeros(array.shape, bool)
        kind, ns = "seconds", array.astype(np.int64) * 1_000_000_000
    elif array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        kind, ns = "seconds", np.round(np.where(bad, 0.0, array) * 1e9).astype(np.int64)
    else:
        raise ValueError(f"{fn}: {what} must be datetime64 or numbers of seconds; got dtype {array.dtype} "
                         "(convert with pandas.to_datetime(...).to_numpy())")
    if bad.any():
        i = int(np.argmax(bad.reshape(-1)))
        raise ValueError(f"{fn}: {where(i)} is {array.reshape(-1)[i]} ({int(bad.sum())} missing times); give every "
                         "bar and text a time, or drop those entries")
    return ns, kind


def _check_increasing(bar_ns: np.ndarray, bar_times, fn: str) -> None:
    steps = np.diff(bar_ns)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        shown = np.asarray(bar_times)
        raise ValueError(f"{fn}: bar_times must be strictly increasing, but bar_times[{i}] ({shown[i]}) <= "
                         f"bar_times[{i - 1}] ({shown[i - 1]}); sort the bars and drop repeated times")


def _seconds(value, what: str, fn: str) -> float:
    """A duration (`timedelta64`, `datetime.timedelta`, `pandas.Timedelta` or seconds) in float seconds."""
    if hasattr(value, "to_timedelta64"):
        value = value.to_timedelta64()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, np.timedelta64):
        if np.isnat(value):
            raise ValueError(f"{fn}: {what} is NaT; pass a duration (a timedelta64 or seconds)")
        return float(value.astype("timedelta64[ns]").astype(np.int64)) / 1e9
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: {what} must be a duration (a timedelta64 or seconds); got {value!r}") from None
    if not np.isfinite(seconds):
        raise ValueError(f"{fn}: {what} must be a finite duration; got {value!r}")
    return seconds


def _positive_int(value, what: str, fn: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{fn}: {what} must be a positive integer; got {value!r}")
    return int(value)
