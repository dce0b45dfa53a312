"""Sliding windows over the time axis, as one gather, and supervised (window, label) datasets.

A window *ending at* bar t covers bars `t - window + 1 .. t`: it is the input a model sees when
deciding at t, and reads nothing after t. Window index arrays are built on the host with a
broadcast `arange` (no Python loop over windows) and applied with one `jnp.take`, so
`sliding_windows` is jittable with `window`, `stride`, `start` and `stop` static.

Market-data rule (see `make_supervised_dataset`): a sample whose inputs or label would need a bar
outside its split is dropped, never truncated or padded.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.data.splits import IndexRange


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (it is static); got {value!r}")
    return int(value)


def _bounds(n_time: int, window: int, stride: int, start: int, stop: int | None):
    n_time = _check_int("n_time", n_time, 0)
    window = _check_int("window", window, 1)
    stride = _check_int("stride", stride, 1)
    start = _check_int("start", start, 0)
    stop = n_time if stop is None else _check_int("stop", stop, 0)
    if not start <= stop <= n_time:
        raise ValueError(
            f"need 0 <= start <= stop <= n_time; got start={start}, stop={stop}, n_time={n_time}"
        )
    n_windows = 0 if stop - start < window else (stop - start - window) // stride + 1
    return window, stride, start, n_windows


def window_end_times(
    n_time: int, window: int, stride: int = 1, start: int = 0, stop: int | None = None
) -> np.ndarray:
    """The bar t each window ends at (its last, most recent bar).

    Windows lie entirely inside `[start, stop)`: window i covers
    `start + i*stride .. start + i*stride + window - 1`, so it ends at
    `t_i = start + i*stride + window - 1`. Windows that would run past `stop` are dropped.

    Args:
        n_time: length of the time axis.
        window: bars per window (>= 1).
        stride: bars between the starts of consecutive windows (>= 1).
        start: first bar a window may use.
        stop: one past the last bar a window may use (default `n_time`).

    Returns:
        int array `[n_windows]`, increasing.
    """
    window, stride, start, n_windows = _bounds(n_time, window, stride, start, stop)
    return (start + window - 1 + stride * np.arange(n_windows)).astype(np.int32)


def window_indices(
    n_time: int, window: int, stride: int = 1, start: int = 0, stop: int | None = None
) -> np.ndarray:
    """Bar indices of every window, `idx[i, j] = start + i*stride + j`.

    Args:
        n_time: length of the time axis.
        window: bars per window (>= 1).
        stride: bars between the starts of consecutive windows (>= 1).
        start: first bar a window may use.
        stop: one past the last bar a window may use (default `n_time`).

    Returns:
        int32 array `[n_windows, window]`; row i is the window ending at
        `window_end_times(...)[i]`, oldest bar first. `n_windows` is 0 when `stop - start < window`.
    """
    ends = window_end_times(n_time, window, stride, start, stop)
    return (ends[:, None] - (window - 1) + np.arange(window)[None, :]).astype(np.int32)


def sliding_windows(
    x, window: int, stride: int = 1, start: int = 0, stop: int | None = None
) -> jax.Array:
    """All windows of a time-first array, gathered in one `jnp.take`.

    Jittable with `window`, `stride`, `start` and `stop` static, e.g.
    `jax.jit(sliding_windows, static_argnames=("window", "stride"))`.

    Args:
        x: array `[time, ...]`.
        window: bars per window (>= 1).
        stride: bars between the starts of consecutive windows (>= 1).
        start: first bar a window may use.
        stop: one past the last bar a window may use (default: the end).

    Returns:
        `[n_windows, window, ...]`; `out[i]` is `x[t_i - window + 1 : t_i + 1]` with
        `t_i = window_end_times(time, window, stride, start, stop)[i]`.
    """
    x = jnp.asarray(x)
    idx = window_indices(x.shape[0], window, stride, start, stop)
    return jnp.take(x, idx, axis=0, indices_are_sorted=True)


def _per_time_bool(name: str, mask, n_time: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 0 or mask.shape[0] != n_time:
        raise ValueError(f"{name} must be [time, ...] with time={n_time}; got shape {mask.shape}")
    return np.all(mask.astype(bool).reshape(n_time, -1), axis=1)


def supervised_end_times(
    n_time: int,
    window: int,
    split: IndexRange,
    target_valid,
    stride: int = 1,
    lookback_before_split: bool = False,
    *,
    horizon: int | None = None,
    label_last_bar=None,
    input_valid=None,
) -> np.ndarray:
    """The decision bars t of the samples `make_supervised_dataset` keeps (see there for the rule).

    Args:
        n_time: length of the time axis.
        window: bars per input window (>= 1).
        split: the part of the time axis the samples belong to.
        target_valid: bool `[time]` (or `[time, ...]`, reduced with `all` over trailing axes).
        stride: bars between consecutive candidate decision bars (>= 1).
        lookback_before_split: let input windows start before `split.start` (at bar >= 0).
        horizon: the label of t reads bars up to `t + horizon` (>= 1), as for every function in
            `trading_jax.data.labels`. Exactly one of `horizon` and `label_last_bar` is required.
        label_last_bar: int `[time]`, the last bar the label of t reads (for labels whose horizon
            varies with t, e.g. barrier labels); must be > t wherever the target is valid.
        input_valid: optional bool `[time]` (or `[time, ...]`); samples whose window holds an
            invalid bar (e.g. an indicator's warm-up NaNs) are dropped.

    Returns:
        int array `[n_samples]` of decision bars, increasing.
    """
    window = _check_int("window", window, 1)
    stride = _check_int("stride", stride, 1)
    if not isinstance(split, IndexRange) or split.stop > n_time:
        raise ValueError(f"split must be an IndexRange inside [0, {n_time}); got {split!r}")
    if (horizon is None) == (label_last_bar is None):
        raise ValueError(
            "pass exactly one of horizon= (the label of t reads bars up to t + horizon) or "
            "label_last_bar= (per-bar last bar read), so samples whose label reads past the split "
            "end can be dropped"
        )
    target_ok = _per_time_bool("target_valid", target_valid, n_time)
    first = split.start + window - 1 if not lookback_before_split else max(split.start, window - 1)
    t = np.arange(first, split.stop, stride)
    if horizon is not None:
        last = t + _check_int("horizon", horizon, 1)
    else:
        label_last_bar = np.asarray(label_last_bar)
        if label_last_bar.shape != (n_time,):
            raise ValueError(
                f"label_last_bar must be [time] = ({n_time},); got {label_last_bar.shape}"
            )
        last = label_last_bar[t].astype(np.int64)
        bad = target_ok[t] & (last <= t)
        if np.any(bad):
            raise ValueError(
                f"label_last_bar[t] must be > t (labels are built from t+1 onward); it is not at "
                f"t={t[bad][:5].tolist()}"
            )
    keep = target_ok[t] & (last < split.stop)
    if input_valid is not None:
        inputs_ok = _per_time_bool("input_valid", input_valid, n_time)
        bad_bars = np.concatenate([[0], np.cumsum(~inputs_ok)])  # invalid bars before each bar
        keep &= bad_bars[t + 1] - bad_bars[t + 1 - window] == 0
    return t[keep]


def make_supervised_dataset(
    features,
    targets,
    target_valid,
    window: int,
    split: IndexRange,
    stride: int = 1,
    lookback_before_split: bool = False,
    *,
    horizon: int | None = None,
    label_last_bar=None,
    input_valid=None,
) -> tuple[Any, Any, np.ndarray]:
    """(input window, label) samples of one split, ready for supervised training.

    Sample i is decided at bar `t = t_out[i]`: its input is `features[t - window + 1 .. t]` and
    its label is `targets[t]`, which the functions of `trading_jax.data.labels` build from bars
    `t+1 .. t+horizon`. Candidate decision bars run from the first one whose window fits, every
    `stride` bars, to `split.stop - 1`; a candidate is kept only if

    1. its inputs lie inside the split: `t - window + 1 >= split.start` (or `>= 0` with
       `lookback_before_split=True`, which is causal too: earlier bars are the past; use it for
       val/test parts that follow train so their first samples are not lost);
    2. its target is valid: `target_valid[t]`;
    3. its label reads no bar at or past the split end: `t + horizon < split.stop` (or
       `label_last_bar[t] < split.stop`), so the last `horizon` bars of a split are never decision
       bars there and no training label peeks into validation or test data;
    4. (with `input_valid`) every bar of its window is valid.

    Samples are dropped, never padded. The index selection runs on the host (the number of
    samples depends on the masks); the gathers are `jnp.take`.

    Args:
        features: array `[time, ...]`, or a pytree of such arrays (causal: row t uses bars <= t).
        targets: array `[time, ...]` of labels, or a pytree of such arrays.
        target_valid: bool `[time]` (or `[time, ...]`, reduced with `all` over trailing axes).
        window: bars per input window (>= 1).
        split: the part of the time axis to draw samples from.
        stride: bars between consecutive candidate decision bars (>= 1).
        lookback_before_split: see rule 1.
        horizon: the label of t reads bars up to `t + horizon`; exactly one of `horizon` and
            `label_last_bar` is required.
        label_last_bar: int `[time]`, the last bar the label of t reads (> t where valid).
        input_valid: optional bool `[time]` (or `[time, ...]`) for rule 4.

    Returns:
        `(X, y, t)`: `X` `[n, window, ...]`, `y` `[n, ...]` (pytrees if the inputs were), and the
        decision bars `t` as a NumPy int array `[n]` (e.g. for `timestamps[t]`).
    """
    n_time = int(jax.tree.leaves(features)[0].shape[0])
    for name, tree in (("features", features), ("targets", targets)):
        for leaf in jax.tree.leaves(tree):
            if jnp.shape(leaf)[:1] != (n_time,):
                raise ValueError(
                    f"every {name} array must be [time, ...] with time={n_time}; "
                    f"got {jnp.shape(leaf)}"
                )
    t = supervised_end_times(
        n_time,
        window,
        split,
        target_valid,
        stride,
        lookback_before_split,
        horizon=horizon,
        label_last_bar=label_last_bar,
        input_valid=input_valid,
    )
    idx = (t[:, None] - (window - 1) + np.arange(window)[None, :]).astype(np.int32)
    X = jax.tree.map(
        lambda a: jnp.take(jnp.asarray(a), idx, axis=0, indices_are_sorted=True), features
    )
    y = jax.tree.map(lambda a: jnp.take(jnp.asarray(a), t.astype(np.int32), axis=0), targets)
    return X, y, t
