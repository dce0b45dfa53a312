"""Load OHLCV files (CSV, parquet, feather) into a validated `MarketData` panel.

`load_ohlcv` reads one file, a list of files, a directory or a glob, one symbol per file (named by
the file) or long-format files with a symbol column; normalises column names; parses timestamps to
UTC; sorts; validates (see `trading_jax.data.validation`); applies the repairs asked for; and aligns
the symbols on the union of their timestamps as float64 `[time, asset]` arrays.

Column names are matched ignoring case, spaces and punctuation against
`validation.COLUMN_ALIASES` ('Open', 'o', 'Close', 'price', 'last', 'Vol', 'Date', 'unix', ...).
'Adj Close' goes to `extra['adj_close']`; a quote-currency volume ('Volume USD', 'quote_volume')
to `extra['volume_quote']`; other numeric columns to `extra` under their snake_case names; any
other column is ignored (an info note lists them).

Timestamps:
    * Numbers are epochs whose unit is read from their magnitude (median of |value|): below 1e11
      seconds, below 1e14 milliseconds, below 1e17 microseconds, else nanoseconds. Integers that
      all look like YYYYMMDD (19000101..29991231) are dates.
    * Strings: ISO 8601 first, then the format pandas infers from the first value, then any
      format dateutil understands (pandas `format="mixed"`, month-first for ambiguous dates like
      01/02/2020), so one column may mix formats.
    * Strings with a UTC offset are converted to UTC; naive strings are taken as UTC. A column mixing
      both gets a `naive_timestamps` warning naming how many naive times there are and the first.
    * A column of True/False values is not a time column: a `bad_timestamp` error, no row loaded.
    * When a file has both an epoch column (e.g. `unix`) and a date-string column, the epoch is used
      (it is exact and unambiguous) and a note says so. Separate `Date` and `Time` string columns are
      combined.
    * Missing or unparseable timestamps are errors naming the rows; those rows are dropped.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import gzip
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from trading_jax.data.types import OHLCV_FIELDS, Bars, MarketData
from trading_jax.data.validation import (
    COLUMN_ALIASES,
    NAT,
    DataValidationError,
    Problem,
    ValidationReport,
    display_name,
    find_gaps,
    format_rows,
    format_time,
    format_timedelta,
    infer_frequency,
    missing_columns_problem,
    row_error_mask,
    swapped_volume_mask,
    to_float,
    duplicate_groups,
    validate_frame,
    dropped_rows_phrase,
    is_bool_column,
    bool_timestamp_message,
    BOOL_TIMESTAMP_FIX,
    NAIVE_TIMESTAMP_FIX,
)
from trading_jax.logging import get_logger

__all__ = [
    "REPAIRS", "ColumnMapping", "DataValidationError", "describe", "expand_paths", "load_ohlcv", "map_columns",
    "naive_time_mask", "parse_timestamps", "read_table", "validate_files", "validate_ohlcv",
]

logger = get_logger(__name__)

REPAIRS = ("drop_duplicates", "ffill_gaps", "swap_volume")
SUFFIXES = (".csv", ".csv.gz", ".parquet", ".feather")
QUOTE_CURRENCIES = ("usd", "usdt", "usdc", "busd", "tusd", "fdusd", "dai", "eur", "gbp", "jpy", "krw", "try", "quote")
_CANONICAL = ("open", "high", "low", "close", "volume", "adj_close", "volume_quote", "symbol")
_FRAME_FILE = "<DataFrame>"
_OPTION_NAMES = ("symbols", "symbol_column", "timestamp_column", "column_map", "repair")


# ----------------------------------------------------------------------------------------------
# Paths and reading


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".csv.gz" if name.endswith(".csv.gz") else path.suffix.lower()


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(_suffix(path))] if _suffix(path) else name


def expand_paths(path) -> list[Path]:
    """The files a path argument names: a file, a directory (its .csv/.csv.gz/.parquet/.feather
    files, sorted by name), a glob pattern, or a list of any of these.

    Raises:
        FileNotFoundError: a path that is no file or directory and a glob that matches nothing.
    """
    if isinstance(path, (list, tuple)):
        return [p for item in path for p in expand_paths(item)]
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.is_file() and _suffix(f) in SUFFIXES)
    if p.is_file():
        return [p]
    if globlib.has_magic(str(path)):
        matches = sorted(Path(m) for m in globlib.glob(str(path)) if Path(m).is_file() and _suffix(Path(m)) in SUFFIXES)
        if matches:
            return matches
    raise FileNotFoundError(f"{path}: no such file or directory, and no matching .csv/.parquet/.feather files")


def _sniff_delimiter(path: Path) -> str:
    opener = gzip.open if _suffix(path) == ".csv.gz" else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as handle:
        header = handle.readline()
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    return max(counts, key=counts.get) if max(counts.values()) > 0 else ","


def read_table(path: Path) -> tuple[pd.DataFrame, np.ndarray, str]:
    """Read a file as is.

    Returns:
        `(frame, rows, row_kind)`: the raw frame; for each row its file line number (CSV: header =
        line 1, first data row = line 2; blank lines are kept as all-NaN rows so numbers stay exact)
        or its 0-based row position (parquet, feather); and "line" or "row". A parquet/feather
        index other than a plain RangeIndex becomes a column.

    Raises:
        ValueError: an unsupported file type. Reader errors (pandas, pyarrow, OSError) propagate.
    """
    suffix = _suffix(path)
    if suffix in (".csv", ".csv.gz"):
        frame = pd.read_csv(path, sep=_sniff_delimiter(path), skip_blank_lines=False, encoding="utf-8-sig")
        return frame, np.arange(len(frame), dtype=np.int64) + 2, "line"
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif suffix == ".feather":
        frame = pd.read_feather(path)
    else:
        raise ValueError(f"unsupported file type '{suffix}'")
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0 or frame.index.step != 1:
        if frame.index.name is None and isinstance(frame.index, pd.DatetimeIndex):
            frame.index.name = "timestamp"
        frame = frame.reset_index()
    return frame.reset_index(drop=True), np.arange(len(frame), dtype=np.int64), "row"


# ----------------------------------------------------------------------------------------------
# Columns


def _key(name) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _snake(name) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_") or "column"


@dataclasses.dataclass(frozen=True)
class ColumnMapping:
    """How a file's columns map to the canonical fields.

    Attributes:
        fields: canonical name ('open', ..., 'adj_close', 'volume_quote', 'symbol') -> column in the file.
        timestamp: the column(s) holding the timestamps (two for separate Date and Time columns).
        extra: `MarketData.extra` name -> column, for other numeric columns.
        ignored: columns not used (timestamp-like columns passed over are in `note` instead).
        missing: required fields (timestamp, open, high, low, close, volume) no column provides.
        note: why some timestamp-like columns were not used (empty if nothing to say).
    """

    fields: dict[str, str]
    timestamp: tuple[str, ...]
    extra: dict[str, str]
    ignored: tuple[str, ...]
    missing: tuple[str, ...]
    note: str = ""

    def display(self) -> dict[str, str]:
        """Canonical name -> the name messages use (the file's own column names)."""
        shown = {k: str(v) for k, v in self.fields.items()}
        if self.timestamp:
            shown["timestamp"] = " + ".join(str(c) for c in self.timestamp)
        return shown


def map_columns(
    columns: Sequence,
    numeric: Sequence[bool],
    *,
    column_map: Mapping[str, str] | None = None,
    timestamp_column: str | None = None,
    symbol_column: str | None = None,
) -> ColumnMapping:
    """Map a file's column names to the canonical OHLCV fields.

    Args:
        columns: the file's column names.
        numeric: for each column, whether its values are numbers (an epoch timestamp column is numeric).
        column_map: explicit `{column in file: canonical name}` pairs, applied first (keys matched
            ignoring case and punctuation). A target outside the canonical names becomes an extra.
        timestamp_column: the timestamp column, overriding detection.
        symbol_column: the symbol column of a long-format file, overriding detection.

    Returns:
        A `ColumnMapping`. Preferences when several columns match: explicit arguments, then the
        alias order of `COLUMN_ALIASES`; for timestamps a numeric (epoch) column beats a string one.
    """
    columns = list(columns)
    is_numeric = dict(zip(columns, numeric))
    keys = {c: _key(c) for c in columns}
    by_key: dict[str, list] = {}
    for c in columns:
        by_key.setdefault(keys[c], []).append(c)
    fields: dict[str, str] = {}
    extra: dict[str, str] = {}
    used: set = set()

    def find(name):
        exact = [c for c in columns if c == name and c not in used]
        return exact[0] if exact else next((c for c in by_key.get(_key(name), []) if c not in used), None)

    timestamp: tuple = ()
    for source, target in (column_map or {}).items():
        col = find(source)
        if col is None:
            continue
        used.add(col)
        if target == "timestamp":
            timestamp = (col,)
        elif target in _CANONICAL:
            fields[target] = col
        else:
            extra[_snake(target)] = col
    for target, name in (("timestamp", timestamp_column), ("symbol", symbol_column)):
        col = find(name) if name is not None else None
        if col is not None:
            used.add(col)
            if target == "timestamp":
                timestamp = (col,)
            else:
                fields[target] = col
    for field in _CANONICAL:
        if field in fields:
            continue
        for alias in COLUMN_ALIASES[field]:
            col = next((c for c in by_key.get(alias, []) if c not in used), None)
            if col is not None and (field != "symbol" or not is_numeric[col]):
                fields[field] = col
                used.add(col)
                break
    # 'Volume USD' -> quote volume; 'Volume BTC' -> base volume when there is no plain volume column.
    for c in columns:
        k = keys[c]
        if c in used or not k.startswith("volume") or not is_numeric[c]:
            continue
        currency = k[len("volume"):]
        if currency in QUOTE_CURRENCIES and "volume_quote" not in fields:
            fields["volume_quote"] = c
            used.add(c)
        elif currency and currency not in QUOTE_CURRENCIES and "volume" not in fields:
            fields["volume"] = c
            used.add(c)
    note = ""
    if not timestamp:
        candidates = [c for c in columns if c not in used and keys[c] in COLUMN_ALIASES["timestamp"]]
        timestamp, note = _pick_timestamp(candidates, keys, is_numeric)
    used.update(timestamp)
    ignored = []
    passed_over = [c for c in columns if c not in used and keys[c] in COLUMN_ALIASES["timestamp"]] if note else []
    for c in columns:
        if c in used or c in passed_over:
            continue
        if is_numeric[c] and keys[c] not in COLUMN_ALIASES["timestamp"] and not keys[c].startswith("unnamed"):
            name = _snake(c)
            if name not in extra and name not in fields:
                extra[name] = c
                continue
        ignored.append(c)
    missing = (() if timestamp else ("timestamp",)) + tuple(f for f in OHLCV_FIELDS if f not in fields)
    return ColumnMapping(fields, tuple(timestamp), extra, tuple(ignored), missing, note)


def _pick_timestamp(candidates: list, keys: Mapping, is_numeric: Mapping) -> tuple[tuple, str]:
    """Choose the timestamp column(s) among candidates (see `map_columns`)."""
    if not candidates:
        return (), ""
    rank = {alias: i for i, alias in enumerate(COLUMN_ALIASES["timestamp"])}
    ordered = sorted(candidates, key=lambda c: rank[keys[c]])
    epochs = [c for c in ordered if is_numeric[c]]
    by = {keys[c]: c for c in ordered if not is_numeric[c]}
    if epochs:
        chosen = (epochs[0],)
    elif "date" in by and "time" in by:
        chosen = (by["date"], by["time"])
    else:
        chosen = (ordered[0],)
    others = [c for c in ordered if c not in chosen]
    note = ""
    if others and epochs:
        note = (f"timestamps read from the epoch column '{chosen[0]}' (exact); "
                f"column(s) {', '.join(repr(str(c)) for c in others)} ignored.")
    return chosen, note


# ----------------------------------------------------------------------------------------------
# Timestamps

_EPOCH_UNITS = ((1e11, 10**9, "s"), (1e14, 10**6, "ms"), (1e17, 10**3, "us"), (np.inf, 1, "ns"))


def _epoch_ns(numbers: np.ndarray) -> tuple[np.ndarray, str]:
    finite = np.isfinite(numbers)
    out = np.full(numbers.shape, NAT, dtype=np.int64)
    if not finite.any():
        return out, "s"
    x = numbers[finite]
    integral = np.all(x == np.round(x))
    if integral and x.min() >= 19000101 and x.max() <= 29991231:
        dates = pd.to_datetime(pd.Series(x.astype(np.int64)).astype(str), format="%Y%m%d", errors="coerce")
        if dates.notna().all():
            out[finite] = dates.astype("datetime64[ns]").to_numpy().view(np.int64)
            return out, "YYYYMMDD"
    magnitude = np.median(np.abs(x))
    scale, unit = next((s, u) for limit, s, u in _EPOCH_UNITS if magnitude < limit)
    with np.errstate(over="ignore", invalid="ignore"):
        ns = np.round(x * scale) if not integral or x.dtype.kind == "f" else x * scale
        ok = np.abs(ns) < 9.2e18
    out_finite = np.full(x.shape, NAT, dtype=np.int64)
    out_finite[ok] = ns[ok].astype(np.int64)
    out[finite] = out_finite
    return out, unit


def parse_timestamps(values) -> tuple[np.ndarray, np.ndarray, str]:
    """Parse a timestamp column to UTC nanoseconds (see the module docstring for the rules).

    Args:
        values: the column (numbers, strings or datetimes) `[rows]`.

    Returns:
        `(ns, unparseable, kind)`: int64 ns `[rows]` with `validation.NAT` where missing or
        unparseable; bool `[rows]` marking values present but unparseable; and what was detected
        ('s', 'ms', 'us', 'ns', 'YYYYMMDD', 'datetime', 'string', or 'bool': True/False values,
        all unparseable).
    """
    series = pd.Series(values).reset_index(drop=True)
    missing = series.isna().to_numpy()
    if is_bool_column(series):  # True/False are not epochs 1 and 0
        return np.full(len(series), NAT, np.int64), ~missing, "bool"
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        stamps = pd.to_datetime(series, utc=True).dt.tz_localize(None).astype("datetime64[ns]")
        return stamps.to_numpy().view(np.int64).copy(), np.zeros(len(series), bool), "datetime"
    present = ~missing
    if pd.api.types.is_numeric_dtype(series.dtype):
        numbers = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:  # numbers stored as text? (look at a sample first: to_numeric on dates is slow)
        sample = pd.to_numeric(series[present].iloc[:20], errors="coerce")
        numbers = np.full(len(series), np.nan)
        if sample.notna().any():
            numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.is_numeric_dtype(series.dtype) or (present.any() and np.isfinite(numbers[present]).mean() > 0.5):
        if pd.api.types.is_integer_dtype(series.dtype):
            ns, unit = _epoch_ns_int(series.to_numpy(np.int64))
        else:
            ns, unit = _epoch_ns(numbers)
        return ns, (ns == NAT) & present, unit
    text = series.astype("string").str.strip()
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    for attempt in ({}, {"format": "mixed"}):  # inferred from the first value, then element by element
        retry = parsed.isna().to_numpy() & present
        if not retry.any():
            break
        parsed[retry] = pd.to_datetime(text[retry], utc=True, errors="coerce", **attempt)
    ns = parsed.dt.tz_localize(None).astype("datetime64[ns]").to_numpy().view(np.int64).copy()
    return ns, (ns == NAT) & present, "string"


# a clock time followed by a UTC offset or zone name: '...15:00Z', '...15:00:00+01:00', '... 15:00 +0100', '...UTC'
_OFFSET = re.compile(r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[zZ]|UTC|GMT|utc|gmt|[+-]\d{2}(?::?\d{2})?)$")


def naive_time_mask(values) -> np.ndarray:
    """bool `[rows]`: string values without a UTC offset (naive times, taken as UTC by `parse_timestamps`).

    Missing values are False. Only meaningful for a string column (kind 'string').
    """
    text = pd.Series(values).reset_index(drop=True).astype("string").str.strip()
    aware = text.str.contains(_OFFSET, regex=True, na=False).to_numpy(bool)
    return text.notna().to_numpy(bool) & ~aware


def _epoch_ns_int(x: np.ndarray) -> tuple[np.ndarray, str]:
    """Integer epochs (exact arithmetic)."""
    if x.size and x.min() >= 19000101 and x.max() <= 29991231:
        return _epoch_ns(x.astype(np.float64))
    if x.size == 0:
        return x.astype(np.int64), "s"
    magnitude = np.median(np.abs(x.astype(np.float64)))
    scale, unit = next((s, u) for limit, s, u in _EPOCH_UNITS if magnitude < limit)
    return x.astype(np.int64) * scale, unit


# ----------------------------------------------------------------------------------------------
# One file -> per-symbol series


@dataclasses.dataclass
class _Series:
    """One symbol after validation and repairs: sorted, unique timestamps."""

    symbol: str
    file: str
    row_kind: str
    timestamps: np.ndarray  # int64 ns [time]
    values: dict  # canonical and extra name -> float64 [time]
    valid: np.ndarray  # bool [time]
    label: str


@dataclasses.dataclass(frozen=True)
class _Options:
    symbols: tuple | None
    symbol_column: str | None
    timestamp_column: str | None
    column_map: Mapping | None
    repair: frozenset


def _info(file, code, message, fix="No action needed.", rows=(), row_kind="line", column=None, symbol=None):
    return Problem("info", code, file, column, tuple(int(r) for r in rows), message, fix, row_kind, symbol)


def _load_source(raw: pd.DataFrame, rows: np.ndarray, row_kind: str, file: str, default_symbol: str,
                 options: _Options) -> tuple[list[_Series], list[Problem]]:
    """Validate, repair and split one file (or frame) into per-symbol series."""
    label = display_name(file)
    problems: list[Problem] = []
    blank = raw.isna().all(axis=1).to_numpy() if raw.shape[1] else np.zeros(len(raw), bool)
    if blank.any():
        verbs = "is blank and was" if blank.sum() == 1 else "are blank and were"
        problems.append(_info(file, "blank_rows", f"{label}: {format_rows(rows[blank], row_kind)} {verbs} skipped.",
                              rows=rows[blank], row_kind=row_kind))
        raw, rows = raw.loc[~blank].reset_index(drop=True), rows[~blank]
    numeric = [pd.api.types.is_numeric_dtype(raw[c].dtype) and not pd.api.types.is_bool_dtype(raw[c].dtype)
               for c in raw.columns]
    mapping = map_columns(raw.columns, numeric, column_map=options.column_map,
                          timestamp_column=options.timestamp_column, symbol_column=options.symbol_column)
    has_symbol_column = "symbol" in mapping.fields
    if options.symbols is not None and not has_symbol_column and default_symbol not in options.symbols:
        return [], []
    if mapping.missing:
        problems.append(missing_columns_problem(file, label, list(mapping.missing), [str(c) for c in raw.columns],
                                                row_kind))
        return [], problems
    if mapping.note:
        problems.append(_info(file, "timestamp_column", f"{label}: {mapping.note}", row_kind=row_kind,
                              column=str(mapping.timestamp[0])))
    if mapping.ignored:
        problems.append(_info(
            file, "unmapped_columns",
            f"{label}: column(s) {', '.join(repr(str(c)) for c in mapping.ignored)} are not OHLCV columns "
            "and were ignored.",
            "Pass column_map={'<column>': 'close'} (or another field name) if one of them is needed.",
            row_kind=row_kind,
        ))
    if len(raw) == 0:
        problems.append(Problem("error", "empty_file", file, None, (), f"{label}: the file has no data rows.",
                                "Check the file is complete and its header is on the first line.", row_kind))
        return [], problems
    shown = mapping.display()
    ts_source = raw[mapping.timestamp[0]] if len(mapping.timestamp) == 1 else (
        raw[mapping.timestamp[0]].astype("string") + " " + raw[mapping.timestamp[1]].astype("string"))
    t, unparseable, kind = parse_timestamps(ts_source)
    logger.debug("%s: timestamps parsed as %s", label, kind)
    bad_t = t == NAT
    if kind == "bool":
        first = int(np.flatnonzero(unparseable)[0])
        problems.append(Problem(
            "error", "bad_timestamp", file, shown["timestamp"], (),
            bool_timestamp_message(label, shown["timestamp"], format_rows(rows[first:first + 1], row_kind),
                                   ts_source.iloc[first]),
            BOOL_TIMESTAMP_FIX, row_kind,
        ))
        return [], problems
    if kind == "string":
        naive = naive_time_mask(ts_source) & ~bad_t
        if naive.any() and (~naive & ~bad_t).any():
            first = int(np.flatnonzero(naive)[0])
            n_naive = int(naive.sum())
            problems.append(Problem(
                "warning", "naive_timestamps", file, shown["timestamp"], tuple(int(r) for r in rows[naive]),
                f"{label}: column '{shown['timestamp']}' mixes times with a UTC offset and {n_naive:,} naive "
                f"time{_s(n_naive)} without one (first: '{ts_source.iloc[first]}' at "
                f"{format_rows(rows[first:first + 1], row_kind)}); the naive times were taken as UTC.",
                NAIVE_TIMESTAMP_FIX, row_kind,
            ))
    if bad_t.any():
        first = np.flatnonzero(bad_t)[0]
        example = f"'{ts_source.iloc[first]}'" if unparseable[first] else "empty"
        problems.append(Problem(
            "error", "bad_timestamp", file, shown["timestamp"], tuple(int(r) for r in rows[bad_t]),
            f"{label}: column '{shown['timestamp']}' has {int(bad_t.sum()):,} missing or unparseable "
            f"timestamp{'s' if bad_t.sum() != 1 else ''} at {format_rows(rows[bad_t], row_kind)} (first: {example}); "
            f"{dropped_rows_phrase(int(bad_t.sum()))}.",
            "Correct or remove those rows: timestamps must be epoch numbers (s, ms, us or ns) or dates such as "
            "'2020-01-31' or '2020-01-31T15:00:00Z'.",
            row_kind,
        ))
    frame = pd.DataFrame({"timestamp": t, **{field: raw[col].to_numpy() for field, col in mapping.fields.items()},
                          **{name: raw[col].to_numpy() for name, col in mapping.extra.items()}})
    keep = ~bad_t
    if has_symbol_column:
        symbol_values = raw[mapping.fields["symbol"]]
        no_symbol = symbol_values.isna().to_numpy() & keep
        if no_symbol.any():
            problems.append(Problem(
                "error", "missing_symbol", file, shown["symbol"], tuple(int(r) for r in rows[no_symbol]),
                f"{label}: column '{shown['symbol']}' is empty at {format_rows(rows[no_symbol], row_kind)}; "
                "those rows were dropped.",
                "Fill in the symbol of those rows or remove them.", row_kind,
            ))
        keep &= ~no_symbol
        frame["symbol"] = symbol_values.astype("string").str.strip().to_numpy()
    else:
        frame["symbol"] = default_symbol
    if not keep.all():
        frame, rows, keep = frame.loc[keep].reset_index(drop=True), rows[keep], keep[keep]
    if options.symbols is not None:
        keep &= np.isin(frame["symbol"].to_numpy(dtype=object), np.asarray(options.symbols, dtype=object))
    frame, rows = frame.loc[keep].reset_index(drop=True), rows[keep]
    if has_symbol_column:
        groups = frame.groupby("symbol", sort=True).indices
    else:
        groups = {default_symbol: np.arange(len(frame))}
    several = len(groups) > 1
    series = []
    for symbol, index in groups.items():
        sub = frame.iloc[index].drop(columns="symbol").reset_index(drop=True)
        result, found = _load_symbol(sub, rows[index], row_kind, file, str(symbol), several, shown, options)
        problems += found
        if result is not None:
            series.append(result)
    return series, problems


@dataclasses.dataclass(frozen=True)
class _Where:
    """Where one symbol's rows came from, for messages."""

    file: str
    label: str  # 'prices.csv' or 'prices.csv (symbol BTC)'
    row_kind: str
    symbol: str | None  # set for files holding several symbols
    shown: Mapping[str, str]  # canonical -> column name in the file

    def info(self, code: str, message: str, rows=(), column=None, fix="No action needed.") -> Problem:
        return _info(self.file, code, message, fix, rows, self.row_kind, column, self.symbol)


@dataclasses.dataclass(frozen=True)
class _Rows:
    """One symbol's rows: timestamps, file row numbers (-1 for inserted bars), values and invalid flags."""

    t: np.ndarray
    rows: np.ndarray
    values: dict
    invalid: np.ndarray

    def take(self, index) -> "_Rows":
        values = {c: v[index] for c, v in self.values.items()}
        return _Rows(self.t[index], self.rows[index], values, self.invalid[index])


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _load_symbol(frame: pd.DataFrame, rows: np.ndarray, row_kind: str, file: str, symbol: str, several: bool,
                 shown: Mapping[str, str], options: _Options) -> tuple[_Series | None, list[Problem]]:
    """Validate and repair one symbol's rows (file order) into a sorted `_Series`.

    Steps: validate (file order); swap_volume if asked; set empty rows aside; sort stably; resolve
    duplicate timestamps (keep the last in file order); note invalid bars; ffill_gaps if asked.
    """
    where = _Where(file, display_name(file) + (f" (symbol {symbol})" if several else ""), row_kind,
                   symbol if several else None, shown)
    report = validate_frame(frame, file=file, rows=rows, row_kind=row_kind, columns=shown, symbol=where.symbol,
                            label=where.label)
    problems = list(report.problems)
    values, text = {}, {}
    for c in (c for c in frame.columns if c != "timestamp"):
        values[c], text[c] = to_float(frame[c])
    empty = np.logical_and.reduce([np.isnan(values[c]) & ~text[c] for c in OHLCV_FIELDS])
    errors = row_error_mask({c: values[c] for c in OHLCV_FIELDS}, {c: text[c] for c in OHLCV_FIELDS}) & ~empty
    bars = _Rows(frame["timestamp"].to_numpy(np.int64), rows, values, errors)

    if "swap_volume" in options.repair and "volume_quote" in values:
        bars, found = _swap_volume(bars, where)
        problems += found
    empty_bars = bars.take(empty)
    bars = bars.take(~empty)
    bars = bars.take(np.argsort(bars.t, kind="stable"))  # equal timestamps stay in file order
    bars, found = _resolve_duplicates(bars, where, repaired="drop_duplicates" in options.repair)
    if found:
        problems = [_downgrade(p, "drop_duplicates") if p.code == "duplicate_timestamps" else p for p in problems]
        problems += found
    if bars.invalid.any():
        n_bad = int(bars.invalid.sum())
        problems.append(where.info(
            "invalid_bars",
            f"{where.label}: {n_bad:,} bar{_s(n_bad)} with errors {'is' if n_bad == 1 else 'are'} kept with "
            f"valid=False, at {format_rows(bars.rows[bars.invalid], row_kind)}.",
            bars.rows[bars.invalid],
            fix="Fix the errors above before training; load_ohlcv(strict=True) refuses this data."))
    if "ffill_gaps" in options.repair:
        bars, found = _fill_gaps(bars, empty_bars, where)
        problems = [_downgrade(p, "ffill_gaps") if p.code in ("gap", "empty_row") else p for p in problems]
        problems += found
    if bars.t.size == 0:
        return None, problems
    return _Series(symbol, file, row_kind, bars.t, bars.values, ~bars.invalid, where.label), problems


def _swap_volume(bars: _Rows, where: _Where) -> tuple[_Rows, list[Problem]]:
    """swap_volume: swap base and quote volume back on the rows where they look swapped."""
    volume, quote = bars.values["volume"], bars.values["volume_quote"]
    swapped = swapped_volume_mask(volume, quote, bars.values["close"])
    if not swapped.any():
        return bars, []
    values = dict(bars.values, volume=np.where(swapped, quote, volume), volume_quote=np.where(swapped, volume, quote))
    n = int(swapped.sum())
    note = where.info(
        "repaired_swap_volume",
        f"{where.label}: swapped columns '{where.shown['volume']}' and '{where.shown['volume_quote']}' back on "
        f"{n:,} row{_s(n)} at {format_rows(bars.rows[swapped], where.row_kind)}.",
        bars.rows[swapped], where.shown["volume"])
    return dataclasses.replace(bars, values=values), [note]


def _resolve_duplicates(bars: _Rows, where: _Where, repaired: bool) -> tuple[_Rows, list[Problem]]:
    """Keep the last row (in file order) of each timestamp of time-sorted rows.

    With the drop_duplicates repair the drop is reported; without it (the duplicates stay an error in
    the report) the kept row of conflicting copies is marked invalid.
    """
    compared = [c for c in OHLCV_FIELDS + ("volume_quote",) if c in bars.values]  # as validate_frame compares
    duplicated, conflicting = duplicate_groups(bars.t, np.column_stack([bars.values[c] for c in compared]))
    dropped = np.zeros(bars.t.size, bool)
    dropped[:-1] = bars.t[:-1] == bars.t[1:]
    if not dropped.any():
        return bars, []
    if not repaired:
        return dataclasses.replace(bars, invalid=bars.invalid | (conflicting & ~dropped)).take(~dropped), []
    n_dropped = int(dropped.sum())
    n_conflicting = int(np.unique(bars.t[conflicting]).size)
    n_exact = int(np.unique(bars.t[duplicated]).size) - n_conflicting
    note = where.info(
        "repaired_duplicates",
        f"{where.label}: dropped {n_dropped:,} duplicate row{_s(n_dropped)} at "
        f"{format_rows(bars.rows[dropped], where.row_kind)}: {n_exact:,} timestamp{_s(n_exact)} with exact copies, "
        f"{n_conflicting:,} with conflicting values (kept the last row in file order).",
        bars.rows[dropped], where.shown["timestamp"])
    return bars.take(~dropped), [note]


def _downgrade(problem: Problem, repair: str) -> Problem:
    """A problem that a requested repair resolved: errors become warnings, the fix says it was repaired."""
    severity = "warning" if problem.severity == "error" else problem.severity
    return dataclasses.replace(problem, severity=severity, fix=f"Repaired by repair='{repair}' (see the note below).")


def _fill_gaps(bars: _Rows, empty_bars: _Rows, where: _Where) -> tuple[_Rows, list[Problem]]:
    """ffill_gaps: insert missing bars (and fill empty rows) with OHLC = previous close, volume 0.

    Bars before a symbol's first bar cannot be filled (no previous close) and stay missing.
    """
    gaps = find_gaps(bars.t, infer_frequency(bars.t))
    new_t = np.unique(np.concatenate([gaps.missing_times, empty_bars.t[~np.isin(empty_bars.t, bars.t)]]))
    previous = np.searchsorted(bars.t, new_t) - 1
    new_t, previous = new_t[previous >= 0], previous[previous >= 0]
    if new_t.size == 0:
        return bars, []
    last_close = pd.Series(np.where(bars.invalid, np.nan, bars.values["close"])).ffill().to_numpy()[previous]
    fill = {}
    for c, v in bars.values.items():
        if c in ("open", "high", "low", "close"):
            fill[c] = last_close
        elif c.startswith("volume"):
            fill[c] = np.zeros(new_t.size)
        else:  # other columns (adj_close, ...) carry the previous bar's value
            fill[c] = v[previous]
    inserted = _Rows(new_t, np.full(new_t.size, -1), fill, ~np.isfinite(last_close))
    merged = _Rows(
        np.concatenate([bars.t, inserted.t]),
        np.concatenate([bars.rows, inserted.rows]),
        {c: np.concatenate([bars.values[c], inserted.values[c]]) for c in bars.values},
        np.concatenate([bars.invalid, inserted.invalid]),
    )
    merged = merged.take(np.argsort(merged.t, kind="stable"))
    notes = []
    if gaps.n_gaps:
        after = bars.rows[gaps.after]
        notes.append(where.info(
            "repaired_gaps",
            f"{where.label}: inserted {gaps.n_missing:,} missing bar{_s(gaps.n_missing)} in {gaps.n_gaps:,} "
            f"gap{_s(gaps.n_gaps)} at the frequency {format_timedelta(infer_frequency(bars.t))}, before the bars at "
            f"{format_rows(after, where.row_kind)}, with open/high/low/close = previous close and volume 0.",
            after, where.shown["timestamp"]))
    filled = np.isin(empty_bars.t, new_t)
    if filled.any():
        n = int(filled.sum())
        notes.append(where.info(
            "repaired_empty_rows",
            f"{where.label}: filled {n:,} empty row{_s(n)} at {format_rows(empty_bars.rows[filled], where.row_kind)} "
            "with open/high/low/close = previous close and volume 0.", empty_bars.rows[filled]))
    return merged, notes


# ----------------------------------------------------------------------------------------------
# Panel assembly


def _panel_notes(series: Sequence[_Series], all_t: np.ndarray) -> list[Problem]:
    """Info notes for symbols that start late, end early or miss bars other symbols have."""
    problems = []
    if len(series) < 2:
        return problems
    for s in series:
        first, last = np.searchsorted(all_t, s.timestamps[0]), np.searchsorted(all_t, s.timestamps[-1])
        fix = "No action needed; mask with MarketData.valid or select a common time window."
        if first > 0:
            problems.append(_info(
                s.file, "late_start",
                f"{s.label}: symbol '{s.symbol}' starts at {format_time(s.timestamps[0])}, {first:,} bar"
                f"{'s' if first != 1 else ''} after the panel start {format_time(all_t[0])}; its bars before that "
                "are missing (NaN, valid=False).", fix, row_kind=s.row_kind, symbol=s.symbol))
        after = all_t.size - 1 - last
        if after > 0:
            problems.append(_info(
                s.file, "early_end",
                f"{s.label}: symbol '{s.symbol}' ends at {format_time(s.timestamps[-1])}, {after:,} bar"
                f"{'s' if after != 1 else ''} before the panel end {format_time(all_t[-1])}; its bars after that "
                "are missing (NaN, valid=False).", fix, row_kind=s.row_kind, symbol=s.symbol))
        inside = all_t[first: last + 1]
        absent = inside[~np.isin(inside, s.timestamps)]
        if absent.size:
            problems.append(_info(
                s.file, "missing_bars",
                f"{s.label}: symbol '{s.symbol}' has no bar at {absent.size:,} timestamp"
                f"{'s' if absent.size != 1 else ''} where other symbols do (first: {format_time(absent[0])}); "
                "they are NaN with valid=False.", fix, row_kind=s.row_kind, symbol=s.symbol))
    return problems


def _assemble(series: Sequence[_Series], report: ValidationReport) -> MarketData:
    all_t = np.unique(np.concatenate([s.timestamps for s in series])) if series else np.zeros(0, np.int64)
    n_t, n_a = all_t.size, len(series)
    names = list(dict.fromkeys(c for s in series for c in s.values))
    arrays = {c: np.full((n_t, n_a), np.nan) for c in names}
    valid = np.zeros((n_t, n_a), bool)
    for j, s in enumerate(series):
        index = np.searchsorted(all_t, s.timestamps)
        for c, v in s.values.items():
            arrays[c][index, j] = v
        valid[index, j] = s.valid
    frequency = infer_frequency(all_t)
    empty = np.zeros((n_t, n_a))
    return MarketData(
        bars=Bars(*(arrays.get(f, empty) for f in OHLCV_FIELDS)),
        timestamps=all_t.view("datetime64[ns]"),
        symbols=tuple(s.symbol for s in series),
        valid=valid,
        frequency=None if frequency is None else np.timedelta64(frequency, "ns"),
        extra={c: arrays[c] for c in names if c not in OHLCV_FIELDS},
        report=report,
        sources=tuple(s.file for s in series),
    )


def _cross_file_problems(series: list[_Series], options: _Options) -> tuple[list[_Series], list[Problem]]:
    problems = []
    by_symbol: dict[str, list[_Series]] = {}
    for s in series:
        by_symbol.setdefault(s.symbol, []).append(s)
    for symbol, group in by_symbol.items():
        if len(group) > 1:
            problems.append(Problem(
                "error", "duplicate_symbol", "", None, (),
                f"symbol '{symbol}' comes from more than one file: {', '.join(s.file for s in group)}; "
                "only the first is kept.",
                "Load those files separately, or rename one of them (the symbol is the file name).",
            ))
    series = [group[0] for group in by_symbol.values()]
    if options.symbols is not None:
        absent = [s for s in options.symbols if s not in by_symbol]
        if absent:
            available = sorted(by_symbol) or ["none"]
            problems.append(Problem(
                "error", "unknown_symbol", "", None, (),
                f"symbol(s) {', '.join(repr(s) for s in absent)} not found; available: "
                f"{', '.join(available[:20])}{' ...' if len(available) > 20 else ''}.",
                "Check the spelling: a symbol is a file name without its extension, or a value of the symbol column.",
            ))
        rank = {s: i for i, s in enumerate(options.symbols)}
        series = sorted(series, key=lambda s: rank[s.symbol])
    frequencies: dict[str, list[str]] = {}
    for s in series:
        frequency = infer_frequency(s.timestamps)
        if frequency is not None:
            frequencies.setdefault(format_timedelta(frequency), []).append(s.symbol)
    if len(frequencies) > 1:
        listing = "; ".join(f"{f}: {', '.join(symbols[:5])}{' ...' if len(symbols) > 5 else ''}"
                            for f, symbols in frequencies.items())
        problems.append(Problem(
            "warning", "mixed_frequency", "", None, (),
            f"the symbols have different bar frequencies ({listing}).",
            "Load files of one frequency together, or resample them to a common frequency first.",
        ))
    return series, problems


# ----------------------------------------------------------------------------------------------
# Public API


def _options(symbols, symbol_column, timestamp_column, column_map, repair) -> _Options:
    repair = (repair,) if isinstance(repair, str) else tuple(repair or ())
    if "all" in repair:
        repair = REPAIRS
    unknown = [r for r in repair if r not in REPAIRS]
    if unknown:
        raise ValueError(f"unknown repair(s) {unknown}; choose from {REPAIRS + ('all',)}")
    if isinstance(symbols, str):
        symbols = (symbols,)
    return _Options(tuple(symbols) if symbols is not None else None, symbol_column, timestamp_column,
                    dict(column_map) if column_map else None, frozenset(repair))


def load_ohlcv(
    path,
    *,
    symbols: Sequence[str] | None = None,
    symbol_column: str | None = None,
    timestamp_column: str | None = None,
    column_map: Mapping[str, str] | None = None,
    repair: Iterable[str] | str = (),
    strict: bool = True,
) -> MarketData:
    """Load OHLCV data as a validated `[time, asset]` float64 panel.

    Symbols: a file without a symbol column holds one symbol named by the file (`AAPL.csv` ->
    'AAPL'); a file with one (symbol, ticker, asset, pair, ... or `symbol_column`) is long format
    and may hold many. Several symbols are aligned on the union of their timestamps; a symbol's
    missing bars are NaN with `valid=False` (a symbol that starts late gets an info note).

    Order: rows are always sorted by time (stably). Newest-first files get an info note,
    otherwise shuffled files a "non-monotonic timestamps" warning.

    Repairs happen only when asked, and each one is reported as an info entry with counts and rows
    (the problem it resolves stays in the report, errors downgraded to warnings):
        * 'drop_duplicates': rows repeating a timestamp are dropped; of exact copies one is kept,
          of conflicting rows the **last one in file order** is kept.
        * 'ffill_gaps': bars missing against the inferred frequency (see
          `validation.find_gaps`) and empty rows (a timestamp without values) are inserted with
          open = high = low = close = the previous close and volume (and quote volume) 0; other
          extra columns carry the previous value.
        * 'swap_volume': swaps the base and quote volume columns back on the rows where they look
          swapped (see `validation.swapped_volume_mask`).
        * 'all': all three.

    Without 'drop_duplicates', duplicate timestamps are still an error; with strict=False the last
    row (in file order) of each timestamp is kept and marked invalid if the copies conflict.

    Args:
        path: a file, a directory (every .csv, .csv.gz, .parquet, .feather inside), a glob, a list of
            these, or a pandas DataFrame (rows are then numbered from 0 and the symbol is 'data'
            unless the frame has a symbol column).
        symbols: load only these symbols, in this order.
        symbol_column: the symbol column of long-format files (default: detected by name).
        timestamp_column: the timestamp column (default: detected by name, see the module docstring).
        column_map: `{column in file: field}` for names the aliases do not cover, e.g.
            `{"Px Last": "close", "Time (UTC)": "timestamp"}`.
        repair: repairs to apply (see above).
        strict: with True (default) any error raises `DataValidationError` listing all of them, so
            NaN or inconsistent prices never reach training: every bar with `valid=True` is then
            finite, positive and consistent. With False the data is returned with its report for
            inspection: files that cannot be read are skipped, and bars with errors keep their raw
            values but are marked `valid=False` (an info note says so).

    Returns:
        `MarketData` (bars `[time, asset]` float64, UTC timestamps, `valid`, `extra`, `report`).

    Raises:
        FileNotFoundError: a path that names no file.
        DataValidationError: with strict=True, when the report has errors.
        ValueError: an unknown repair name.
    """
    options = _options(symbols, symbol_column, timestamp_column, column_map, repair)
    data = _load(path, options)
    _log(data.report, data.n_assets)
    if strict:
        data.report.raise_if_errors()
    return data


def _load(path, options: _Options) -> MarketData:
    """Read, validate, repair and assemble; never raises for data problems (they are in the report)."""
    series: list[_Series] = []
    problems: list[Problem] = []
    if isinstance(path, pd.DataFrame):
        sources = [(_FRAME_FILE, lambda: (path.reset_index(drop=True), np.arange(len(path), dtype=np.int64), "row"),
                    "data")]
    else:
        sources = [(str(p), (lambda p=p: read_table(p)), _stem(p)) for p in expand_paths(path)]
    for file, read, default_symbol in sources:
        try:
            raw, rows, row_kind = read()
        except Exception as error:  # any reader failure is reported as a problem of that file
            problems.append(_unreadable(file, error))
            continue
        found_series, found = _load_source(raw, rows, row_kind, file, default_symbol, options)
        series += found_series
        problems += found
    series, cross = _cross_file_problems(series, options)
    problems += cross
    all_t = np.unique(np.concatenate([s.timestamps for s in series])) if series else np.zeros(0, np.int64)
    problems += _panel_notes(series, all_t)
    return _assemble(series, ValidationReport(tuple(problems)))


def _unreadable(file: str, error: Exception) -> Problem:
    name = display_name(file)
    reason = (str(error).strip().splitlines() or [""])[0]
    if isinstance(error, ValueError) and str(error).startswith("unsupported file type"):
        return Problem("error", "unsupported_format", file, None, (), f"{name}: {error}.",
                       "Use .csv, .csv.gz, .parquet or .feather (save spreadsheets as CSV).", "line")
    return Problem(
        "error", "unreadable_file", file, None, (),
        f"{name}: cannot read the file ({type(error).__name__}: {reason}).",
        "Check the file is complete and really is CSV/parquet/feather (not mis-named or truncated); "
        "re-export it if needed.", "line",
    )


def _log(report: ValidationReport, n_symbols: int) -> None:
    logger.info("loaded %d symbol(s): %s", n_symbols, report.summary())
    if report.warnings:
        codes = ", ".join(dict.fromkeys(p.code for p in report.warnings))
        logger.warning("market data has %d warning(s) (%s); see MarketData.report.format()",
                       len(report.warnings), codes)


def validate_ohlcv(data, **load_kwargs) -> ValidationReport:
    """The validation report of a path (file, directory, glob, list) or DataFrame; never raises for
    data problems (a path that names no file becomes a 'file_not_found' error).

    Args:
        data: what `load_ohlcv` accepts.
        **load_kwargs: `load_ohlcv` keyword arguments (`strict` is forced to False).
    """
    load_kwargs.pop("strict", None)
    try:
        return _load(data, _options(**{k: load_kwargs.pop(k, None) for k in _OPTION_NAMES}, **load_kwargs)).report
    except FileNotFoundError as error:
        return ValidationReport((Problem(
            "error", "file_not_found", str(data), None, (), f"{error}.",
            "Check the path (directories are searched for .csv, .csv.gz, .parquet and .feather files).",
        ),))


def validate_files(paths, **load_kwargs) -> ValidationReport:
    """Validate each path (a file, directory or glob) on its own and merge the reports.

    Never raises for data problems: missing or unreadable files are errors in the report. This is
    what `trading-jax data validate FILE...` prints (exit status 1 when `report.ok` is False).

    Args:
        paths: one path or a list of paths.
        **load_kwargs: `load_ohlcv` keyword arguments (symbols, column_map, repair, ...).
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    report = ValidationReport()
    for path in paths:
        report = report.merge(validate_ohlcv(path, **load_kwargs))
    return report


def describe(market_data: MarketData) -> str:
    """A text summary: symbols, time range, frequency, bars, missing bars and price range per symbol,
    and the report summary (what `trading-jax data inspect` prints)."""
    md = market_data
    report = md.report if md.report is not None else ValidationReport()
    if md.n_time == 0 or md.n_assets == 0:
        return f"no data loaded\nreport: {report.summary()}"
    t = md.timestamps.astype("datetime64[ns]").view(np.int64)
    lines = [
        f"{md.n_assets} symbol{'s' if md.n_assets != 1 else ''}, {md.n_time:,} timestamps from {format_time(t[0])} "
        f"to {format_time(t[-1])} (UTC), frequency {format_timedelta(md.frequency)}",
    ]
    valid = md.valid
    any_valid = valid.any(axis=0)
    first = np.where(any_valid, valid.argmax(axis=0), 0)
    last = np.where(any_valid, md.n_time - 1 - valid[::-1].argmax(axis=0), 0)
    with np.errstate(invalid="ignore"):
        low = np.where(valid, md.bars.low, np.nan)
        high = np.where(valid, md.bars.high, np.nan)
    span_missing = (last - first + 1) - valid.sum(axis=0)
    table = pd.DataFrame({
        "symbol": md.symbols,
        "first": [format_time(t[i]) if ok else "-" for i, ok in zip(first, any_valid)],
        "last": [format_time(t[i]) if ok else "-" for i, ok in zip(last, any_valid)],
        "bars": [f"{n:,}" for n in valid.sum(axis=0)],
        "missing": [f"{n:,}" for n in np.where(any_valid, span_missing, 0)],
        "low": [f"{v:.6g}" if np.isfinite(v) else "-" for v in _nan_reduce(np.nanmin, low)],
        "high": [f"{v:.6g}" if np.isfinite(v) else "-" for v in _nan_reduce(np.nanmax, high)],
    })
    lines.append(table.to_string(index=False))
    lines.append("(missing: timestamps between a symbol's first and last bar where it has no valid bar)")
    lines.append(f"report: {report.summary()}")
    return "\n".join(lines)


def _nan_reduce(fn, a: np.ndarray) -> np.ndarray:
    out = np.full(a.shape[1], np.nan)
    has = np.isfinite(a).any(axis=0)
    if has.any():
        out[has] = fn(a[:, has], axis=0)
    return out
