"""Validation of OHLCV data: every problem with its file, column, rows and a fix.

A `ValidationReport` is a list of `Problem`s. Each problem names the file, the column and the rows
it concerns, says what is wrong in a sentence (`message`) and what to do about it (`fix`).

Row numbers (`Problem.rows`):
    * CSV files: **file line numbers**, the header being line 1 and the first data row line 2, so
      `lines 12,345-12,400` can be opened directly in an editor (this assumes one record per line,
      i.e. no quoted fields spanning several lines).
    * parquet/feather files and in-memory frames: **0-based row positions** ("row 0" is the first
      row), as stored in the file.
    `Problem.row_kind` says which ("line" or "row"); messages use the same word.

Severities and codes:
    * error: the data cannot be trusted as is (`load_ohlcv(strict=True)` raises on any error):
      `missing_columns`, `empty_file`, `unreadable_file`, `unsupported_format`, `file_not_found`,
      `bad_timestamp` (also a timestamp column of True/False values), `missing_symbol`, `non_numeric`, `non_finite` (NaN/inf), `non_positive_price`,
      `high_below_low`, `open_outside_range`, `close_outside_range`, `negative_volume`,
      `duplicate_timestamps`, `duplicate_symbol`, `unknown_symbol`.
    * warning: loaded, but look at it: `non_monotonic` (rows were sorted), `gap`, `zero_volume`,
      `volume_outlier`, `swapped_volume`, `empty_row` (a timestamp without any value: a missing
      bar), `mixed_frequency`, `naive_timestamps` (a timestamp column mixing times with a UTC offset
      and naive ones: the naive ones were taken as UTC).
    * info ("notes"): what the loader did or noticed: `descending_order` (newest-first file,
      sorted), `timestamp_column`, `unmapped_columns`, `blank_rows`, `late_start`, `early_end`,
      `missing_bars`, `invalid_bars` (strict=False), and the repairs `repaired_swap_volume`,
      `repaired_duplicates`, `repaired_gaps`, `repaired_empty_rows`. A problem that a requested
      repair resolved stays in the report (an error becomes a warning) and its fix says so.

Rules (also in the docstrings of the functions that apply them):
    * open/close may exceed [low, high] by `RANGE_TOLERANCE` (relative) to forgive float rounding.
    * Order: a file is newest-first (an info note) when at least `DESCENDING_SHARE` (90%) of its
      time steps go back in time; the rows that break the file's direction are reported as
      non-monotonic (a warning). Either way the rows are sorted.
    * The frequency is the most common spacing between consecutive (sorted, unique) timestamps.
      Intraday data (frequency < 1 day; crypto trades 24/7) reports any spacing above the frequency.
      Daily data reports only spacings above `DAILY_GAP_ALLOWANCE` (4 calendar days): weekends and
      holidays (Fri -> Tue is 4 days) are expected. Coarser data (weekly, monthly) reports spacings
      above 1.5 x the frequency.
    * Suspicious volume: any zero-volume bar, and positive volumes whose robust z-score of log volume
      (median / 1.4826 MAD) exceeds `VOLUME_Z_THRESHOLD` in absolute value.
    * Swapped volume columns (with a quote-volume column): a row is swapped when volume * close is
      not within a factor `SWAP_FACTOR` of the quote volume but quote_volume * close is within that
      factor of the volume (volume * close only approximates the quote volume: trades happen at
      prices other than the close).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = PRICE_COLUMNS + ("volume",)
REQUIRED_COLUMNS = ("timestamp",) + VALUE_COLUMNS
SEVERITIES = ("error", "warning", "info")

RANGE_TOLERANCE = 1e-6
"""Relative tolerance for open/close outside [low, high]: allowed up to `RANGE_TOLERANCE * high`."""
VOLUME_Z_THRESHOLD = 10.0
"""Robust z-score of log volume above which a volume is reported as an outlier."""
SWAP_FACTOR = 2.0
"""Volume * close and the quote volume "agree" when within this factor of each other."""
DAY_NS = 86_400 * 10**9
DAILY_GAP_ALLOWANCE = 4 * DAY_NS
"""For daily data, spacings up to 4 calendar days (weekends, holidays) are not gaps."""
DESCENDING_SHARE = 0.9
"""A file is newest-first when at least this share of its time steps go back in time."""
ROWS_SHOWN = 5
"""How many row ranges a message lists before saying 'and N more'."""

# Accepted column names, compared after lowercasing and dropping everything but letters and digits
# ("Adj. Close" -> "adjclose"). The order is the preference when several columns match one field.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": (
        "timestamp", "unix", "unixtime", "unixtimestamp", "epoch", "ts", "datetime", "date", "time",
        "timeutc", "datetimeutc", "timestamputc", "gmttime", "utctime", "opentime", "dt",
    ),
    "open": ("open", "o", "openprice", "opening"),
    "high": ("high", "h", "highprice", "max"),
    "low": ("low", "l", "lowprice", "min"),
    "close": ("close", "c", "closeprice", "price", "last", "lastprice", "closing"),
    "volume": ("volume", "vol", "v", "basevolume", "volumebase", "baseassetvolume"),
    "adj_close": ("adjclose", "adjustedclose", "adjcloseprice", "closeadj", "closeadjusted"),
    "volume_quote": ("volumequote", "quotevolume", "quoteassetvolume", "quoteav", "volumeccy"),
    "symbol": ("symbol", "ticker", "asset", "instrument", "pair", "sym", "coin"),
}


class DataValidationError(ValueError):
    """Raised when market data has errors; the message lists every error with its fix.

    Attributes:
        report: the full `ValidationReport` (errors, warnings and notes).
    """

    def __init__(self, report: "ValidationReport"):
        self.report = report
        super().__init__(ValidationReport(report.errors).format())


@dataclasses.dataclass(frozen=True)
class Problem:
    """One finding about a file.

    Attributes:
        severity: "error", "warning" or "info".
        code: a stable identifier, e.g. "non_finite" or "gap" (see the module docstring).
        file: the file as given (full path), "" for findings about several files.
        column: the column as named in the file, or None.
        rows: file line numbers (CSV: header = line 1) or 0-based row positions (parquet, feather,
            frames), see `row_kind`. Empty when the problem is not about particular rows.
        message: what is wrong, naming the file, the column and the rows.
        fix: what to do about it.
        row_kind: "line" or "row": what the numbers in `rows` are.
        symbol: the symbol concerned, when the file holds several (or for panel notes).
    """

    severity: str
    code: str
    file: str
    column: str | None
    rows: tuple[int, ...]
    message: str
    fix: str
    row_kind: str = "line"
    symbol: str | None = None

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def format(self) -> str:
        """Two lines: `severity [code] message` and the indented fix."""
        label = "note" if self.severity == "info" else self.severity
        return f"{label:<7} [{self.code}] {self.message}\n        fix: {self.fix}"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """Problems found while loading or validating market data.

    Attributes:
        problems: every problem, in the order found.
    """

    problems: tuple[Problem, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "problems", tuple(self.problems))

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")

    @property
    def infos(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "info")

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings and notes allowed)."""
        return not self.errors

    def by_code(self, code: str) -> tuple[Problem, ...]:
        """The problems with this code."""
        return tuple(p for p in self.problems if p.code == code)

    def merge(self, other: "ValidationReport") -> "ValidationReport":
        """A new report with this report's problems followed by `other`'s."""
        return ValidationReport(self.problems + tuple(other.problems))

    def summary(self) -> str:
        """E.g. '2 errors, 1 warning, 3 notes'."""
        counts = ((self.errors, "error"), (self.warnings, "warning"), (self.infos, "note"))
        return ", ".join(_plural(len(found), word) for found, word in counts)

    def format(self) -> str:
        """Human-readable text: problems grouped by file (errors first), then the summary line."""
        if not self.problems:
            return "no problems found\n" + self.summary()
        rank = {s: i for i, s in enumerate(SEVERITIES)}
        files = list(dict.fromkeys(p.file for p in self.problems))
        blocks = []
        for file in files:
            group = sorted((p for p in self.problems if p.file == file), key=lambda p: rank[p.severity])
            lines = [file or "(all files)"] + ["  " + p.format().replace("\n", "\n  ") for p in group]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks) + "\n\n" + self.summary()

    def raise_if_errors(self) -> None:
        """Raise `DataValidationError` (a ValueError) listing the errors, if there are any."""
        if self.errors:
            raise DataValidationError(self)


# ----------------------------------------------------------------------------------------------
# Formatting helpers


def format_rows(rows: Sequence[int], kind: str = "line", limit: int = ROWS_SHOWN) -> str:
    """Rows as ranges: 'line 5', 'lines 2-4, 9', 'rows 0-3, 7, 9 and 12 more'.

    Consecutive numbers collapse into ranges; the first `limit` ranges are listed and the count of
    the remaining rows is given as 'and N more'. Numbers use thousands separators.
    """
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if rows.size == 0:
        return f"no {kind}s"
    starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1)
    ends = np.append(starts[1:], rows.size) - 1
    parts = [
        f"{rows[s]:,}" if s == e else f"{rows[s]:,}-{rows[e]:,}" for s, e in zip(starts[:limit], ends[:limit])
    ]
    shown = int((ends[:limit] - starts[:limit] + 1).sum())
    text = f"{kind if rows.size == 1 else kind + 's'} {', '.join(parts)}"
    if rows.size > shown:
        text += f" and {rows.size - shown:,} more"
    return text


def format_time(ns: int) -> str:
    """A UTC timestamp (int ns) as '2020-01-31', '2020-01-31 15:00' or '2020-01-31 15:00:05'."""
    ts = pd.Timestamp(int(ns))
    if ns % DAY_NS == 0:
        return ts.strftime("%Y-%m-%d")
    if ns % (60 * 10**9) == 0:
        return ts.strftime("%Y-%m-%d %H:%M")
    return str(ts)


def format_timedelta(td) -> str:
    """A spacing as '1 day', '3 days', '1h', '15min', '30s' (or pandas' form otherwise)."""
    if td is None:
        return "unknown"
    ns = int(pd.Timedelta(td).value)
    for unit, suffix in ((DAY_NS, None), (3600 * 10**9, "h"), (60 * 10**9, "min"), (10**9, "s"), (10**6, "ms")):
        if ns % unit == 0 and ns >= unit:
            n = ns // unit
            return _plural(n, "day") if suffix is None else f"{n}{suffix}"
    return str(pd.Timedelta(ns))


def dropped_rows_phrase(n: int) -> str:
    return "that row cannot be placed in time and is dropped" if n == 1 else (
        "those rows cannot be placed in time and are dropped")


def _quoted(names: Iterable) -> str:
    return ", ".join(f"'{n}'" for n in names)


# ----------------------------------------------------------------------------------------------
# Pure detection functions (shared with the loader's repairs)


def to_float(values) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64 and a mask of entries that were text that is not a number.

    Missing markers that pandas already read as NaN (empty, 'null', 'NaN', 'N/A') count as missing,
    not as text.
    """
    series = pd.Series(values)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(series), bool)
    numbers = pd.to_numeric(series, errors="coerce")
    text = numbers.isna().to_numpy() & series.notna().to_numpy()
    if text.any():  # blank strings are missing values, not text
        text &= series.astype(str).str.strip().ne("").to_numpy()
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan), text


def timestamps_ns(values) -> np.ndarray:
    """Datetimes (naive = UTC, aware converted to UTC) as int64 nanoseconds; NaT and values that are
    not dates -> `NAT` (INT64 min)."""
    stamps = pd.to_datetime(pd.Series(values), utc=True, errors="coerce")
    return stamps.dt.tz_localize(None).astype("datetime64[ns]").to_numpy().view(np.int64)


NAT = np.iinfo(np.int64).min

BOOL_TIMESTAMP_FIX = ("Point the loader at the column that holds the times (timestamp_column='...'; epoch numbers "
                      "or dates such as '2020-01-31' or '2020-01-31T15:00:00Z'), or correct the file.")
NAIVE_TIMESTAMP_FIX = ("Give every time in the column its UTC offset (e.g. '2024-01-01T01:00:00Z'), or write them all "
                       "as naive UTC times, so that no time zone has to be assumed.")


def is_bool_column(values) -> bool:
    """True for a column of True/False values: bool dtype, or objects that are all bools apart from
    missing values (e.g. a CSV column of True/False with empty cells). Such a column is never a time."""
    series = pd.Series(values)
    if pd.api.types.is_bool_dtype(series.dtype):
        return True
    if series.dtype != object:
        return False
    present = series.dropna()
    return len(present) > 0 and all(isinstance(v, (bool, np.bool_)) for v in present)


def bool_timestamp_message(label: str, column: str, rows_text: str, value) -> str:
    """The one-line message of a timestamp column of True/False values."""
    return (f"{label}: column '{column}' holds True/False values, not times (first: '{value}' at {rows_text}); "
            "no row can be placed in time, so none were loaded.")


def infer_frequency(timestamps_ns_sorted: np.ndarray) -> int | None:
    """The most common spacing (int ns) between consecutive distinct timestamps; None if < 3 bars.

    Ties go to the smallest spacing.
    """
    t = np.unique(np.asarray(timestamps_ns_sorted, dtype=np.int64))
    if t.size < 3:
        return None
    spacing, counts = np.unique(np.diff(t), return_counts=True)
    return int(spacing[np.argmax(counts)])


def uses_business_days(timestamps_ns_sorted: np.ndarray, frequency: int | None) -> bool:
    """True for daily data with no bar on a Saturday or Sunday (a stock-exchange calendar)."""
    if frequency != DAY_NS or len(timestamps_ns_sorted) == 0:
        return False
    days = np.asarray(timestamps_ns_sorted, dtype=np.int64) // DAY_NS
    return bool(np.is_busday(days.astype("datetime64[D]")).all())


@dataclasses.dataclass(frozen=True)
class Gaps:
    """Gaps in a sorted series of distinct timestamps.

    Attributes:
        after: index (into the sorted unique timestamps) of the bar after each gap `[gaps]`.
        start: timestamp (ns) of the bar before each gap `[gaps]`.
        end: timestamp (ns) of the bar after each gap `[gaps]`.
        missing_times: the timestamps (ns) of the missing bars, all gaps concatenated `[missing]`.
        missing_counts: missing bars per gap `[gaps]`.
    """

    after: np.ndarray
    start: np.ndarray
    end: np.ndarray
    missing_times: np.ndarray
    missing_counts: np.ndarray

    @property
    def n_gaps(self) -> int:
        return int(self.after.size)

    @property
    def n_missing(self) -> int:
        return int(self.missing_times.size)


def find_gaps(timestamps_ns_sorted: np.ndarray, frequency: int | None) -> Gaps:
    """Gaps against the frequency, and the bars that would fill them.

    Rule: intraday data (frequency < 1 day) has a gap wherever the spacing exceeds the frequency;
    daily data where it exceeds `DAILY_GAP_ALLOWANCE` (4 calendar days, so weekends and holidays are
    not gaps); coarser data where it exceeds 1.5 x the frequency. Missing bars are placed at
    `previous + k * frequency`; for daily data on a business-day calendar (no weekend bars) only
    weekdays count as missing bars.

    Args:
        timestamps_ns_sorted: distinct timestamps, int64 ns, increasing `[time]`.
        frequency: the bar spacing in ns (from `infer_frequency`); None means no gaps.

    Returns:
        A `Gaps`.
    """
    t = np.asarray(timestamps_ns_sorted, dtype=np.int64)
    empty = np.zeros(0, np.int64)
    if frequency is None or t.size < 2:
        return Gaps(empty, empty, empty, empty, empty)
    spacing = np.diff(t)
    if frequency < DAY_NS:
        is_gap = spacing > frequency
    elif frequency == DAY_NS:
        is_gap = spacing > DAILY_GAP_ALLOWANCE
    else:
        is_gap = spacing > 1.5 * frequency
    after = np.flatnonzero(is_gap) + 1
    start, end = t[after - 1], t[after]
    # Candidate bars: start + k * frequency, k = 1 .. while at least half a bar before the end.
    if frequency < DAY_NS:  # every slot strictly before the next bar
        counts = np.ceil((end - start) / frequency).astype(np.int64) - 1
    else:  # whole periods between the two bars
        counts = np.maximum(np.rint((end - start) / frequency).astype(np.int64) - 1, 0)
    gap_of = np.repeat(np.arange(after.size), counts)
    k = np.arange(gap_of.size) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    times = start[gap_of] + k * frequency
    if uses_business_days(t, frequency):
        keep = np.is_busday((times // DAY_NS).astype("datetime64[D]"))
        times, gap_of = times[keep], gap_of[keep]
        counts = np.bincount(gap_of, minlength=after.size).astype(np.int64)
    return Gaps(after, start, end, times, counts)


def swapped_volume_mask(volume, volume_quote, close, factor: float = SWAP_FACTOR) -> np.ndarray:
    """Rows whose base and quote volume columns look swapped.

    A row is swapped when `volume * close` is not within `factor` of `volume_quote` while
    `volume_quote * close` is within `factor` of `volume`. Rows with zero or missing volumes are
    never flagged (nothing to tell).

    Args:
        volume, volume_quote, close: float arrays `[time]`.
        factor: how far apart two volumes may be and still agree.

    Returns:
        bool `[time]`.
    """
    volume, volume_quote, close = (np.asarray(a, dtype=np.float64) for a in (volume, volume_quote, close))
    with np.errstate(all="ignore"):
        as_is = np.abs(np.log(volume * close / volume_quote))
        swapped = np.abs(np.log(volume_quote * close / volume))
    tol = np.log(factor)
    return (as_is > tol) & (swapped <= tol)


def row_masks(values: Mapping[str, np.ndarray], text: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Per-row error masks of OHLCV values (float arrays `[rows]`).

    Returns a dict of bool `[rows]` masks: 'empty' (no OHLCV value at all), 'text:<col>',
    'non_finite:<col>', 'non_positive:<col>', 'high_below_low', 'open_outside', 'close_outside',
    'negative_volume'. Empty rows are excluded from every other mask; rows with high < low are
    excluded from the outside-range masks.
    """
    text = text or {}
    n = len(values["close"])
    no_text = {c: text.get(c, np.zeros(n, bool)) for c in VALUE_COLUMNS}
    empty = np.logical_and.reduce([np.isnan(values[c]) & ~no_text[c] for c in VALUE_COLUMNS])
    masks: dict[str, np.ndarray] = {"empty": empty}
    for c in VALUE_COLUMNS:
        masks[f"text:{c}"] = no_text[c]
        masks[f"non_finite:{c}"] = ~np.isfinite(values[c]) & ~no_text[c] & ~empty
    with np.errstate(invalid="ignore"):
        for c in PRICE_COLUMNS:
            masks[f"non_positive:{c}"] = values[c] <= 0
        high, low = values["high"], values["low"]
        masks["high_below_low"] = high < low
        tol = RANGE_TOLERANCE * np.abs(high)
        for c in ("open", "close"):
            outside = (values[c] < low - tol) | (values[c] > high + tol)
            masks[f"{c}_outside"] = outside & ~masks["high_below_low"]
        masks["negative_volume"] = values["volume"] < 0
    return masks


def row_error_mask(values: Mapping[str, np.ndarray], text: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """True for rows with any error (text, NaN/inf, non-positive price, bad range, negative volume)."""
    masks = row_masks(values, text)
    return np.logical_or.reduce([m for k, m in masks.items() if k != "empty"])


def duplicate_groups(timestamps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows that share a timestamp, and whether each such row's group has conflicting values.

    Args:
        timestamps: int64 ns `[rows]`.
        values: float `[rows, fields]`; rows are exact copies when equal (NaN equal to NaN).

    Returns:
        `(duplicated, conflicting)`: bool `[rows]` each; `duplicated` marks every row of a timestamp
        that appears more than once, `conflicting` the rows of groups whose values differ.
    """
    ts = pd.Series(timestamps)
    duplicated = ts.duplicated(keep=False).to_numpy()
    conflicting = np.zeros(len(ts), bool)
    if duplicated.any():
        frame = pd.DataFrame(values[duplicated])
        frame["__ts"] = timestamps[duplicated]
        distinct = frame.drop_duplicates().groupby("__ts").size()
        bad = distinct.index[distinct.to_numpy() > 1].to_numpy()
        conflicting = duplicated & np.isin(timestamps, bad)
    return duplicated, conflicting


def robust_log_z(volume: np.ndarray) -> np.ndarray:
    """Robust z-score of log volume: (log v - median) / (1.4826 MAD) over positive volumes.

    NaN for non-positive or missing volumes, and everywhere when the MAD is 0.
    """
    volume = np.asarray(volume, dtype=np.float64)
    z = np.full(volume.shape, np.nan)
    positive = np.isfinite(volume) & (volume > 0)
    if positive.sum() < 3:
        return z
    logs = np.log(volume[positive])
    median = np.median(logs)
    mad = 1.4826 * np.median(np.abs(logs - median))
    if mad > 0:
        z[positive] = (logs - median) / mad
    return z


# ----------------------------------------------------------------------------------------------
# validate_frame


@dataclasses.dataclass(frozen=True)
class _Where:
    """Context shared by every problem of one frame."""

    file: str
    label: str  # how messages name the file, e.g. 'AAPL.csv' or 'prices.csv (symbol BTC)'
    rows: np.ndarray
    row_kind: str
    columns: Mapping[str, str]
    symbol: str | None

    def problem(self, severity, code, column, mask_or_rows, message, fix) -> Problem:
        rows = mask_or_rows
        if isinstance(rows, np.ndarray) and rows.dtype == bool:
            rows = self.rows[rows]
        col = self.columns.get(column, column) if column else None
        return Problem(
            severity, code, self.file, col, tuple(int(r) for r in np.asarray(rows, dtype=np.int64)),
            message, fix, self.row_kind, self.symbol,
        )

    def rows_text(self, mask_or_rows) -> str:
        rows = mask_or_rows
        if isinstance(rows, np.ndarray) and rows.dtype == bool:
            rows = self.rows[rows]
        return format_rows(rows, self.row_kind)

    def col(self, name: str) -> str:
        return self.columns.get(name, name)


def display_name(file: str) -> str:
    """How messages name a file: its base name ('<frame>' style names unchanged)."""
    if file.startswith("<"):
        return file
    return file.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def missing_columns_problem(file: str, label: str, missing: Sequence[str], found: Sequence[str], row_kind="line",
                            symbol=None) -> Problem:
    """The error for required fields that no column provides (with the accepted names)."""
    accepted = "; ".join(f"{c}: {', '.join(COLUMN_ALIASES[c])}" for c in missing)
    return Problem(
        "error", "missing_columns", file, None, (),
        f"{label}: missing required column(s) {_quoted(missing)}; found columns {_quoted(found)}.",
        f"Rename the column(s) in the file or pass column_map={{'<column in file>': '{missing[0]}'}} "
        f"(names are matched ignoring case, spaces and punctuation). Accepted names: {accepted}.",
        row_kind, symbol,
    )


def validate_frame(
    frame: pd.DataFrame,
    *,
    file: str = "<frame>",
    rows: Sequence[int] | None = None,
    row_kind: str = "row",
    columns: Mapping[str, str] | None = None,
    symbol: str | None = None,
    label: str | None = None,
) -> ValidationReport:
    """Check one symbol's OHLCV rows, in file order, and report every problem.

    The frame uses the canonical column names `timestamp` (datetime-like: naive = UTC, or int64 ns),
    `open`, `high`, `low`, `close`, `volume` and optionally `volume_quote` (as produced by the
    loader's column normalisation; use `trading_jax.data.loading.validate_ohlcv` for a frame with
    arbitrary column names). Nothing is modified. Checks, in order: missing columns, text in numeric
    columns, missing timestamps, empty rows, NaN/inf, non-positive prices, high < low, open/close
    outside [low, high] (relative tolerance `RANGE_TOLERANCE`), negative volume, swapped volume
    columns, zero volume, volume outliers, order (newest-first or non-monotonic), duplicate
    timestamps and gaps against the inferred frequency (see the module docstring for the rules).
    Volume checks use the volume as it would be after swapping back swapped rows.

    Args:
        frame: one symbol's rows in file order `[rows, columns]`.
        file: the file the rows came from (goes into `Problem.file`).
        rows: the row number of each row in the file (line numbers for CSV); default: 0-based positions.
        row_kind: "line" or "row", what `rows` are.
        columns: canonical name -> the column's name in the file, so messages use the user's names.
        symbol: the symbol, named in messages (use for files holding several symbols).
        label: how messages name the file (default: its base name, plus the symbol if given).

    Returns:
        A `ValidationReport`.
    """
    columns = dict(columns or {})
    n = len(frame)
    row_numbers = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if label is None:
        label = display_name(file) + (f" (symbol {symbol})" if symbol is not None else "")
    where = _Where(file, label, row_numbers, row_kind, columns, symbol)

    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        found = [columns.get(c, c) for c in frame.columns]
        return ValidationReport(
            (missing_columns_problem(file, label, [columns.get(c, c) for c in missing], found, row_kind, symbol),)
        )
    if n == 0:
        return ValidationReport((where.problem(
            "error", "empty_file", None, (), f"{label}: the file has no data rows.",
            "Check the file is complete and its header is on the first line.",
        ),))

    problems: list[Problem] = []
    values, text = {}, {}
    for c in VALUE_COLUMNS + (("volume_quote",) if "volume_quote" in frame.columns else ()):
        values[c], text[c] = to_float(frame[c])
    ts = frame["timestamp"]
    bool_ts = is_bool_column(ts)
    if bool_ts:
        t = np.full(n, NAT, np.int64)
    else:
        t = ts.to_numpy(np.int64) if pd.api.types.is_integer_dtype(ts.dtype) else timestamps_ns(ts)
    masks = row_masks(values, text)

    examples = {c: str(frame[c].iloc[int(np.argmax(text[c]))]) for c in VALUE_COLUMNS if text[c].any()}
    problems += _check_values(where, values, masks, examples)
    nat = t == NAT
    if bool_ts:
        first = int(np.flatnonzero(ts.notna().to_numpy())[0])
        problems.append(where.problem(
            "error", "bad_timestamp", "timestamp", (),
            bool_timestamp_message(label, where.col("timestamp"), where.rows_text(row_numbers[first:first + 1]),
                                   ts.iloc[first]),
            BOOL_TIMESTAMP_FIX,
        ))
    elif nat.any():
        problems.append(where.problem(
            "error", "bad_timestamp", "timestamp", nat,
            f"{label}: column '{where.col('timestamp')}' has {_plural(int(nat.sum()), 'missing timestamp')} "
            f"at {where.rows_text(nat)}; {dropped_rows_phrase(int(nat.sum()))}.",
            "Fill in or remove those rows.",
        ))
    effective_volume = values["volume"]
    if "volume_quote" in values:
        swapped = swapped_volume_mask(values["volume"], values["volume_quote"], values["close"])
        if swapped.any():
            problems.append(_swapped_problem(where, swapped))
            effective_volume = np.where(swapped, values["volume_quote"], values["volume"])
    problems += _check_volume(where, effective_volume, values, masks["empty"])
    usable = ~nat & ~masks["empty"]
    problems += _check_order(where, t, usable)
    problems += _check_duplicates(where, t, values, usable)
    problems += _check_gaps(where, t, usable)
    return ValidationReport(tuple(problems))


def _check_values(where: _Where, values, masks, examples) -> list[Problem]:
    label, problems = where.label, []
    for c in VALUE_COLUMNS:
        bad = masks[f"text:{c}"]
        if bad.any():
            problems.append(where.problem(
                "error", "non_numeric", c, bad,
                f"{label}: column '{where.col(c)}' has {_plural(int(bad.sum()), 'non-numeric value')} "
                f"at {where.rows_text(bad)} (first: '{examples[c]}').",
                "Correct those values: numbers need '.' as the decimal point and no thousands separators "
                "(leave the cell empty for a missing value).",
            ))
    empty = masks["empty"]
    if empty.any():
        names = "/".join(where.col(c) for c in VALUE_COLUMNS)
        problems.append(where.problem(
            "warning", "empty_row", None, empty,
            f"{label}: {_plural(int(empty.sum()), 'row')} at {where.rows_text(empty)} "
            f"{'has' if empty.sum() == 1 else 'have'} a timestamp but no {names} values; "
            f"{'it is treated as a missing bar' if empty.sum() == 1 else 'they are treated as missing bars'}.",
            "Remove those rows from the file, or pass repair=('ffill_gaps',) to fill them with the previous "
            "close and zero volume.",
        ))
    for c in VALUE_COLUMNS:
        bad = masks[f"non_finite:{c}"]
        if bad.any():
            problems.append(where.problem(
                "error", "non_finite", c, bad,
                f"{label}: column '{where.col(c)}' has {_plural(int(bad.sum()), 'missing or infinite value')} "
                f"at {where.rows_text(bad)}.",
                "Fill in or remove those rows in the file (or load with strict=False to keep them as invalid bars).",
            ))
    for c in PRICE_COLUMNS:
        bad = masks[f"non_positive:{c}"]
        if bad.any():
            problems.append(where.problem(
                "error", "non_positive_price", c, bad,
                f"{label}: column '{where.col(c)}' has {_plural(int(bad.sum()), 'non-positive price')} "
                f"at {where.rows_text(bad)} (smallest {np.nanmin(values[c][bad]):g}).",
                "Prices must be > 0: correct or remove those rows (a 0 often stands for a missing value).",
            ))
    bad = masks["high_below_low"]
    if bad.any():
        i = np.flatnonzero(bad)[0]
        h, l_ = where.col("high"), where.col("low")
        problems.append(where.problem(
            "error", "high_below_low", "high", bad,
            f"{label}: column '{h}' is below column '{l_}' at {where.rows_text(bad)} "
            f"(first: {values['high'][i]:g} < {values['low'][i]:g}).",
            f"Correct those rows; if '{h}' and '{l_}' are swapped throughout, fix the header or column_map.",
        ))
    for c in ("open", "close"):
        bad = masks[f"{c}_outside"]
        if bad.any():
            i = np.flatnonzero(bad)[0]
            problems.append(where.problem(
                "error", f"{c}_outside_range", c, bad,
                f"{label}: column '{where.col(c)}' is outside ['{where.col('low')}', '{where.col('high')}'] "
                f"at {where.rows_text(bad)} (first: {values[c][i]:g} not in "
                f"[{values['low'][i]:g}, {values['high'][i]:g}]).",
                f"Correct those rows: every bar needs low <= {c} <= high (a relative tolerance of "
                f"{RANGE_TOLERANCE:g} is allowed for rounding); check the columns are not mislabelled.",
            ))
    bad = masks["negative_volume"]
    if bad.any():
        v = where.col("volume")
        problems.append(where.problem(
            "error", "negative_volume", "volume", bad,
            f"{label}: column '{v}' has {_plural(int(bad.sum()), 'negative value')} at {where.rows_text(bad)} "
            f"(smallest {np.nanmin(values['volume'][bad]):g}).",
            "Volume must be >= 0: correct or remove those rows.",
        ))
    return problems


def _swapped_problem(where: _Where, swapped: np.ndarray) -> Problem:
    v, q = where.col("volume"), where.col("volume_quote")
    return where.problem(
        "warning", "swapped_volume", "volume", swapped,
        f"{where.label}: columns '{v}' and '{q}' look swapped on {_plural(int(swapped.sum()), 'row')} "
        f"at {where.rows_text(swapped)}: there '{v}' * close does not match '{q}', "
        f"but '{q}' * close matches '{v}'.",
        "Pass repair=('swap_volume',) to swap the two columns back on those rows.",
    )


def _check_volume(where: _Where, volume: np.ndarray, values, empty: np.ndarray) -> list[Problem]:
    label, problems, v = where.label, [], where.col("volume")
    zero = (volume == 0) & ~empty
    if zero.any():
        flat = zero & np.logical_and.reduce([values[c] == values["close"] for c in ("open", "high", "low")])
        n_flat = int(flat.sum())
        flat_text = f" ({n_flat:,} with a flat price, open = high = low = close)" if n_flat else ""
        problems.append(where.problem(
            "warning", "zero_volume", "volume", zero,
            f"{label}: column '{v}' is 0 on {_plural(int(zero.sum()), 'bar')} at {where.rows_text(zero)}"
            f"{flat_text}; zero volume usually means no trading (a stale quote).",
            "Check the symbol traded over this period; drop those bars (or the symbol) if your model uses volume.",
        ))
    z = robust_log_z(volume)
    with np.errstate(invalid="ignore"):
        outlier = np.abs(z) > VOLUME_Z_THRESHOLD
    if outlier.any():
        i = np.flatnonzero(outlier)[0]
        median = np.exp(np.nanmedian(np.log(volume[volume > 0])))
        problems.append(where.problem(
            "warning", "volume_outlier", "volume", outlier,
            f"{label}: column '{v}' has {_plural(int(outlier.sum()), 'extreme value')} at "
            f"{where.rows_text(outlier)} (robust z-score of log volume beyond {VOLUME_Z_THRESHOLD:g}; "
            f"first: {volume[i]:g}, median {median:g}).",
            "Check those bars against another source; extreme volumes are often unit errors or extra digits.",
        ))
    return problems


def _check_order(where: _Where, t: np.ndarray, usable: np.ndarray) -> list[Problem]:
    rows, tt = where.rows[usable], t[usable]
    if tt.size < 2:
        return []
    step = np.diff(tt)
    # newest-first: (nearly) every step goes back in time; a shuffled file is not "descending"
    descending = (step < 0).sum() >= DESCENDING_SHARE * max((step != 0).sum(), 1)
    problems = []
    col = where.col("timestamp")
    if descending:
        problems.append(where.problem(
            "info", "descending_order", "timestamp", (),
            f"{where.label}: rows are newest-first (timestamps in column '{col}' decrease); "
            "they were sorted oldest-first.",
            "No action needed.",
        ))
    breaks = rows[1:][step > 0] if descending else rows[1:][step < 0]
    if breaks.size:
        problems.append(where.problem(
            "warning", "non_monotonic", "timestamp", breaks,
            f"{where.label}: non-monotonic timestamps in column '{col}': "
            f"{_plural(int(breaks.size), 'row')} at {format_rows(breaks, where.row_kind)} "
            f"{'is' if breaks.size == 1 else 'are'} out of order; the rows were sorted by time.",
            "Sort the file by time (and check it was not concatenated from overlapping pieces).",
        ))
    return problems


def _check_duplicates(where: _Where, t: np.ndarray, values, usable: np.ndarray) -> list[Problem]:
    stacked = np.column_stack([values[c] for c in values])[usable]
    duplicated, conflicting = duplicate_groups(t[usable], stacked)
    if not duplicated.any():
        return []
    rows = where.rows[usable][duplicated]
    dup_times = np.unique(t[usable][duplicated])
    n_conflicting = np.unique(t[usable][conflicting]).size
    return [where.problem(
        "error", "duplicate_timestamps", "timestamp", rows,
        f"{where.label}: column '{where.col('timestamp')}' has "
        f"{_plural(dup_times.size, 'duplicated timestamp')} on {_plural(rows.size, 'row')} at "
        f"{format_rows(rows, where.row_kind)} (first: {format_time(dup_times[0])}): "
        f"{dup_times.size - n_conflicting:,} with exact copies, {n_conflicting:,} with conflicting values.",
        "Remove the duplicate rows, or pass repair=('drop_duplicates',) to drop exact copies and keep the "
        "last row (in file order) of conflicting ones.",
    )]


def _check_gaps(where: _Where, t: np.ndarray, usable: np.ndarray) -> list[Problem]:
    order = np.argsort(t[usable], kind="stable")
    tt, rows = t[usable][order], where.rows[usable][order]
    unique, first = np.unique(tt, return_index=True)
    frequency = infer_frequency(unique)
    gaps = find_gaps(unique, frequency)
    if gaps.n_gaps == 0:
        return []
    after_rows = rows[first[gaps.after]]
    daily = ""
    if frequency == DAY_NS:
        daily = " (for daily data, spacings up to 4 calendar days are expected and not counted)"
    one = gaps.n_gaps == 1
    return [where.problem(
        "warning", "gap", "timestamp", after_rows,
        f"{where.label}: {_plural(gaps.n_gaps, 'gap')} in column '{where.col('timestamp')}' against the inferred "
        f"frequency {format_timedelta(frequency)}{daily}, {_plural(gaps.n_missing, 'missing bar')} in all; "
        f"the bar after {'the gap' if one else 'each gap'} is at {format_rows(after_rows, where.row_kind)} "
        f"({'' if one else 'first gap: '}{format_time(gaps.start[0])} to {format_time(gaps.end[0])}).",
        "Pass repair=('ffill_gaps',) to insert the missing bars (open/high/low/close = previous close, "
        "volume 0), or leave them: missing bars are simply absent from the time axis.",
    )]
