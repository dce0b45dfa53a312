"""Chronological train/val/test splits and walk-forward folds over a time axis.

Everything here works on bar indices (host-side Python ints): a split is a set of half-open
`IndexRange`s on the time axis, in time order, never shuffled. An *embargo* of `k` bars leaves `k`
bars out between consecutive parts, so that a label or a feature window at the end of one part
cannot overlap the next (a label built from `t+1 .. t+h` needs `embargo >= h` to be fully
separated from the following part; see `trading_jax.data.labels`).

Example:
    >>> split = chronological_split(1000, train=0.7, val=0.15, test=0.15, embargo=5)
    >>> x_train = x[split.train.slice]
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import numbers
from typing import Any

import numpy as np

_FRACTION_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class IndexRange:
    """A half-open range of bar indices `[start, stop)` on the time axis.

    Attributes:
        start: first bar in the range.
        stop: one past the last bar in the range (`stop >= start`; equal means empty).
    """

    start: int
    stop: int

    def __post_init__(self):
        if not (0 <= self.start <= self.stop):
            raise ValueError(
                f"IndexRange needs 0 <= start <= stop; got start={self.start}, stop={self.stop}"
            )

    @property
    def slice(self) -> slice:
        """`slice(start, stop)`, for indexing a time-first array: `x[r.slice]`."""
        return slice(self.start, self.stop)

    def __len__(self) -> int:
        return self.stop - self.start

    def indices(self) -> np.ndarray:
        """The bar indices of the range, `np.arange(start, stop)`."""
        return np.arange(self.start, self.stop)


@dataclasses.dataclass(frozen=True)
class Split:
    """A chronological train/val/test split: `train` ends before `val` starts, `val` before `test`.

    Attributes:
        train: the training bars.
        val: the validation bars (may be empty when no validation part was asked for).
        test: the test bars (may be empty when no test part was asked for).
    """

    train: IndexRange
    val: IndexRange
    test: IndexRange


@dataclasses.dataclass(frozen=True)
class Fold:
    """One walk-forward fold: fit on `train`, evaluate on `test` (which comes strictly later).

    Attributes:
        train: the training bars of the fold.
        test: the test bars of the fold.
    """

    train: IndexRange
    test: IndexRange


def _is_count(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_embargo(embargo: Any) -> int:
    if not _is_count(embargo) or embargo < 0:
        raise ValueError(f"embargo must be a non-negative integer number of bars; got {embargo!r}")
    return int(embargo)


def _part_sizes(n_time: int, sizes: dict[str, Any], embargo: int) -> dict[str, int]:
    """Bar counts for each named part (in order), checking the request."""
    if all(_is_count(v) for v in sizes.values()):
        counts = {name: int(v) for name, v in sizes.items()}
        for name, v in counts.items():
            if v < 0:
                raise ValueError(f"{name} must be >= 0 bars; got {v}")
        n_gaps = max(sum(v > 0 for v in counts.values()) - 1, 0)
        needed = sum(counts.values()) + n_gaps * embargo
        if needed > n_time:
            parts = " + ".join(f"{name}={v}" for name, v in counts.items())
            raise ValueError(
                f"{parts} bars plus {n_gaps} embargo gap(s) of {embargo} bars need {needed} bars, "
                f"but n_time is {n_time}; make the parts or the embargo smaller"
            )
        return counts

    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0.0 <= v <= 1.0):
            raise ValueError(
                f"{name}={v!r} is not a fraction in [0, 1]; pass train/val/test either all as "
                f"fractions of the bars or all as integer bar counts"
            )
    total = float(sum(sizes.values()))
    if total > 1.0 + _FRACTION_TOLERANCE:
        parts = " + ".join(f"{name}={v}" for name, v in sizes.items())
        raise ValueError(
            f"the fractions {parts} sum to {total:g}; they must sum to at most 1 "
            f"(e.g. train=0.7, val=0.15, test=0.15)"
        )
    n_gaps = max(sum(v > 0 for v in sizes.values()) - 1, 0)
    usable = n_time - n_gaps * embargo
    if usable <= 0:
        raise ValueError(
            f"{n_gaps} embargo gap(s) of {embargo} bars leave no bars of the {n_time} to split; "
            f"reduce the embargo (or drop a part)"
        )
    counts, previous, cumulative = {}, 0, 0.0
    for name, v in sizes.items():
        cumulative += float(v)
        boundary = min(int(math.floor(cumulative * usable + 0.5 + _FRACTION_TOLERANCE)), usable)
        counts[name] = boundary - previous
        previous = boundary
    for name, v in sizes.items():
        if v > 0 and counts[name] == 0:
            raise ValueError(
                f"{name}={v} of the {usable} bars left after the embargo gaps rounds to 0 bars; "
                f"make {name} larger, the embargo smaller or the series longer"
            )
    return counts


def _layout(sizes: dict[str, int], embargo: int) -> dict[str, IndexRange]:
    """Lay the parts out from bar 0 with `embargo` bars between consecutive non-empty parts."""
    ranges, cursor, seen_nonempty = {}, 0, False
    for name, size in sizes.items():
        if size > 0:
            if seen_nonempty:
                cursor += embargo
            seen_nonempty = True
        ranges[name] = IndexRange(cursor, cursor + size)
        cursor += size
    return ranges


def chronological_split(
    n_time: int,
    train: float | int = 0.7,
    val: float | int = 0.15,
    test: float | int = 0.15,
    embargo: int = 0,
) -> Split:
    """Split `n_time` bars into consecutive train, val and test parts, in that order.

    The sizes are either all integer bar counts or all fractions in `[0, 1]` summing to at most 1.
    Fractions are of the bars left after the embargo gaps, `usable = n_time - n_gaps * embargo`:
    part boundaries sit at `round(cumsum(fractions) * usable)` (halves round up), so the sizes add
    up exactly. Parts are laid out from bar 0: `train`, `embargo` bars left out, `val`, `embargo`
    bars left out, `test`; bars after `test` (when the sizes do not use them all) are unused.

    A part asked for as 0 is empty and placed where it would start, with no embargo gap for it
    (e.g. `val=0` gives a train/test split with a single gap). `train` must not be empty.

    Args:
        n_time: number of bars on the time axis.
        train: fraction or bar count of the training part (must be > 0).
        val: fraction or bar count of the validation part.
        test: fraction or bar count of the test part.
        embargo: bars left out between consecutive non-empty parts (>= 0).

    Returns:
        The `Split`.

    Raises:
        ValueError: when the sizes mix counts and fractions, fractions sum to more than 1, counts
            plus gaps exceed `n_time`, the embargo leaves no bars, or a requested part rounds to 0.

    Example:
        >>> chronological_split(100, embargo=2)   # 96 usable bars: 67 / 15 / 14
        Split(train=IndexRange(start=0, stop=67), val=IndexRange(start=69, stop=84),
              test=IndexRange(start=86, stop=100))
    """
    if not _is_count(n_time) or n_time <= 0:
        raise ValueError(f"n_time must be a positive integer; got {n_time!r}")
    embargo = _check_embargo(embargo)
    requested = {"train": train, "val": val, "test": test}
    sizes = _part_sizes(int(n_time), requested, embargo)
    if sizes["train"] == 0:
        raise ValueError(f"train must be > 0 (a fraction or a bar count); got {train!r}")
    ranges = _layout(sizes, embargo)
    return Split(train=ranges["train"], val=ranges["val"], test=ranges["test"])


def _to_datetime64(value: Any, dtype: np.dtype, name: str) -> np.datetime64:
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        # Timestamps in this library are naive UTC; bring aware cut points to naive UTC too.
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    try:
        return np.datetime64(value).astype(dtype)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name}={value!r} is not a date/time numpy can read") from err


def split_by_dates(
    timestamps: np.ndarray,
    val_start: Any,
    test_start: Any,
    embargo: int = 0,
) -> Split:
    """Split a time axis at calendar cut points.

    `val` starts at the first bar at or after `val_start`, `test` at the first bar at or after
    `test_start`; each part ends `embargo` bars before the next one starts (the embargo is taken
    from the end of the earlier part, so the later parts start exactly at their dates), and `test`
    runs to the last bar.

    Args:
        timestamps: `datetime64` array `[time]`, strictly increasing (naive UTC, as
            `MarketData.timestamps`).
        val_start: the first date/time of the validation part (anything `np.datetime64` accepts,
            a `datetime`, or a pandas `Timestamp`; aware values are converted to UTC), or None for
            no validation part (train runs up to `test_start`).
        test_start: the first date/time of the test part.
        embargo: bars left out before `val` and before `test` (>= 0).

    Returns:
        The `Split`.

    Raises:
        ValueError: for unsorted timestamps, `val_start` after `test_start`, or a part that would
            be empty (cut points outside the data, or an embargo larger than a part).
    """
    timestamps = np.asarray(timestamps)
    if not np.issubdtype(timestamps.dtype, np.datetime64) or timestamps.ndim != 1:
        raise ValueError(
            f"timestamps must be a 1-D datetime64 array; got dtype {timestamps.dtype}, "
            f"shape {timestamps.shape}"
        )
    if timestamps.size and np.any(np.diff(timestamps) <= np.timedelta64(0)):
        raise ValueError(
            "timestamps must be strictly increasing (sort and de-duplicate them first)"
        )
    embargo = _check_embargo(embargo)
    n_time = int(timestamps.shape[0])
    test_t = _to_datetime64(test_start, timestamps.dtype, "test_start")
    test_i = int(np.searchsorted(timestamps, test_t, side="left"))
    if val_start is None:
        val_i = test_i
    else:
        val_t = _to_datetime64(val_start, timestamps.dtype, "val_start")
        if val_t > test_t:
            raise ValueError(f"val_start ({val_t}) must not be after test_start ({test_t})")
        val_i = int(np.searchsorted(timestamps, val_t, side="left"))

    if test_i >= n_time:
        raise ValueError(
            f"test_start {test_t} is after the last timestamp "
            f"{timestamps[-1] if n_time else None}: the test part would be empty; choose an "
            f"earlier test_start"
        )
    has_val = val_i < test_i
    train_stop = val_i - embargo if has_val else test_i - embargo
    if train_stop <= 0:
        first = "val_start" if has_val else "test_start"
        raise ValueError(
            f"the train part would be empty: {first} is {val_i if has_val else test_i} bar(s) "
            f"after the first timestamp {timestamps[0]} and the embargo is {embargo}; choose a "
            f"later {first} or a smaller embargo"
        )
    if val_start is not None and not has_val:
        raise ValueError(
            f"the val part would be empty: no bar lies in [val_start, test_start) = "
            f"[{val_start}, {test_t}); move val_start earlier, or pass val_start=None for no "
            f"val part"
        )
    val_stop = test_i - embargo if has_val else val_i
    if has_val and val_stop <= val_i:
        raise ValueError(
            f"the val part would be empty: it has {test_i - val_i} bar(s) and the embargo before "
            f"test is {embargo}; move val_start earlier or make the embargo smaller"
        )
    return Split(
        train=IndexRange(0, train_stop),
        val=IndexRange(val_i, val_stop),
        test=IndexRange(test_i, n_time),
    )


def walk_forward_folds(
    n_time: int,
    n_folds: int,
    test_size: int,
    train_size: int | None = None,
    embargo: int = 0,
    step: int | None = None,
) -> tuple[Fold, ...]:
    """Walk-forward folds: train on the past, test on the next block, roll forward.

    The test blocks are anchored at the end of the series: the last one is
    `[n_time - test_size, n_time)` and each earlier one starts `step` bars before the next
    (`step` defaults to `test_size`, giving back-to-back blocks; `step > test_size` leaves bars
    between blocks untested). Each fold's train ends `embargo` bars before its test starts, and is

    * expanding (`train_size=None`): `[0, test_start - embargo)`, growing fold by fold, or
    * rolling (`train_size=k`): `[test_start - embargo - k, test_start - embargo)`.

    Args:
        n_time: number of bars on the time axis.
        n_folds: number of folds (>= 1).
        test_size: bars in each test block (>= 1).
        train_size: bars in each rolling train window, or None for an expanding window from bar 0.
        embargo: bars left out between each train and its test (>= 0).
        step: bars between the starts of consecutive test blocks (>= test_size, so test blocks
            never overlap); defaults to `test_size`.

    Returns:
        `n_folds` `Fold`s in time order.

    Raises:
        ValueError: when the folds do not fit in `n_time` (the message says how many bars they
            need) or an argument is out of range.

    Example:
        >>> walk_forward_folds(10, n_folds=2, test_size=2, embargo=1)
        (Fold(train=IndexRange(start=0, stop=5), test=IndexRange(start=6, stop=8)),
         Fold(train=IndexRange(start=0, stop=7), test=IndexRange(start=8, stop=10)))
    """
    for name, value in (("n_time", n_time), ("n_folds", n_folds), ("test_size", test_size)):
        if not _is_count(value) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if train_size is not None and (not _is_count(train_size) or train_size < 1):
        raise ValueError(
            f"train_size must be an integer >= 1 or None (expanding); got {train_size!r}"
        )
    embargo = _check_embargo(embargo)
    step = test_size if step is None else step
    if not _is_count(step) or step < test_size:
        raise ValueError(
            f"step must be an integer >= test_size ({test_size}) so test blocks do not overlap; "
            f"got {step!r}"
        )
    first_test_start = n_time - test_size - (n_folds - 1) * step
    min_train = 1 if train_size is None else train_size
    needed = min_train + embargo + test_size + (n_folds - 1) * step
    if first_test_start - embargo - min_train < 0:
        kind = "at least 1 training bar" if train_size is None else f"train_size={train_size}"
        raise ValueError(
            f"{n_folds} folds of test_size={test_size} (step {step}) with embargo={embargo} and "
            f"{kind} in the first fold need {needed} bars, but n_time is {n_time}; reduce "
            f"n_folds, test_size, step, train_size or embargo"
        )
    folds = []
    for k in range(n_folds):
        test_start = first_test_start + k * step
        train_stop = test_start - embargo
        train_start = 0 if train_size is None else train_stop - train_size
        train_range = IndexRange(train_start, train_stop)
        folds.append(Fold(train=train_range, test=IndexRange(test_start, test_start + test_size)))
    return tuple(folds)
