"""Validation reports every problem with its file, column, rows and a fix.

Each problem has a constructed file (written to tmp_path) and an exact expected message. Row
numbers of CSV files are file lines: the header is line 1, `lines[0]` below is line 2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trading_jax.data.loading import load_ohlcv, validate_files, validate_ohlcv
from trading_jax.data.validation import (
    DataValidationError,
    Problem,
    ValidationReport,
    find_gaps,
    format_rows,
    infer_frequency,
    swapped_volume_mask,
    validate_frame,
)

HEADER = "timestamp,open,high,low,close,volume"
GOOD = "10,11,9,10.5,100"


def hourly(hours, values=GOOD):
    """CSV lines of hourly bars on 2024-01-01 at the given hours."""
    return [f"2024-01-01 {h:02d}:00,{values}" for h in hours]


def write(tmp_path, lines, name="prices.csv", header=HEADER):
    path = tmp_path / name
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def only(report: ValidationReport, code: str) -> Problem:
    found = report.by_code(code)
    assert len(found) == 1, report.format()
    return found[0]


def check(problem: Problem, severity: str, column, rows, message: str) -> None:
    assert problem.message == message
    assert (problem.severity, problem.column, problem.rows) == (severity, column, tuple(rows))


# ---------------------------------------------------------------------------------------------
# Each problem, with a constructed file


def test_missing_required_columns_are_an_error_listing_found_columns_and_accepted_names(tmp_path):
    path = write(tmp_path, ["2024-01-01,10,10.5,100"], header="Date,Open,Close,Volume")
    problem = only(validate_files(path), "missing_columns")
    check(problem, "error", None, (),
          "prices.csv: missing required column(s) 'high', 'low'; found columns 'Date', 'Open', 'Close', 'Volume'.")
    assert problem.fix == (
        "Rename the column(s) in the file or pass column_map={'<column in file>': 'high'} (names are matched "
        "ignoring case, spaces and punctuation). Accepted names: high: high, h, highprice, max; "
        "low: low, l, lowprice, min."
    )
    with pytest.raises(DataValidationError, match="missing required column"):
        load_ohlcv(path)


def test_text_in_a_price_column_is_an_error_quoting_the_value(tmp_path):
    path = write(tmp_path, hourly([0, 1]) + ["2024-01-01 02:00,10,11,9,abc,100"])
    check(only(validate_files(path), "non_numeric"), "error", "close", [4],
          "prices.csv: column 'close' has 1 non-numeric value at line 4 (first: 'abc').")


def test_nan_and_inf_in_prices_or_volume_are_errors_per_column(tmp_path):
    path = write(tmp_path, hourly([0]) + ["2024-01-01 01:00,10,11,9,,100", "2024-01-01 02:00,10,11,9,10.5,inf"]
                 + hourly([3]))
    close, volume = validate_files(path).by_code("non_finite")
    check(close, "error", "close", [3], "prices.csv: column 'close' has 1 missing or infinite value at line 3.")
    check(volume, "error", "volume", [4], "prices.csv: column 'volume' has 1 missing or infinite value at line 4.")


def test_a_row_with_a_timestamp_and_no_values_is_a_missing_bar_warning(tmp_path):
    path = write(tmp_path, hourly([0, 1]) + ["2024-01-01 02:00,,,,,"] + hourly([3, 4]))
    report = validate_files(path)
    check(only(report, "empty_row"), "warning", None, [4],
          "prices.csv: 1 row at line 4 has a timestamp but no open/high/low/close/volume values; "
          "it is treated as a missing bar.")
    assert report.ok
    data = load_ohlcv(path)
    assert data.n_time == 4 and np.datetime64("2024-01-01T02:00") not in data.timestamps


def test_non_positive_prices_are_an_error_with_the_smallest_value(tmp_path):
    path = write(tmp_path, hourly([0]) + hourly([1], "10,11,0,10.5,100") + hourly([2], "10,11,-1,10.5,100"))
    check(only(validate_files(path), "non_positive_price"), "error", "low", [3, 4],
          "prices.csv: column 'low' has 2 non-positive prices at lines 3-4 (smallest -1).")


def test_high_below_low_is_an_error_and_not_also_an_open_close_range_error(tmp_path):
    path = write(tmp_path, hourly([0]) + hourly([1], "10,9,11,10,100") + hourly([2]))
    report = validate_files(path)
    check(only(report, "high_below_low"), "error", "high", [3],
          "prices.csv: column 'high' is below column 'low' at line 3 (first: 9 < 11).")
    assert not report.by_code("open_outside_range") and not report.by_code("close_outside_range")


def test_open_or_close_outside_low_high_is_an_error(tmp_path):
    path = write(tmp_path, hourly([0]) + hourly([1], "12,11,9,10.5,100") + hourly([2], "10,11,9,8.5,100"))
    report = validate_files(path)
    check(only(report, "open_outside_range"), "error", "open", [3],
          "prices.csv: column 'open' is outside ['low', 'high'] at line 3 (first: 12 not in [9, 11]).")
    check(only(report, "close_outside_range"), "error", "close", [4],
          "prices.csv: column 'close' is outside ['low', 'high'] at line 4 (first: 8.5 not in [9, 11]).")


def test_close_a_rounding_error_above_high_is_tolerated_but_a_real_excess_is_not(tmp_path):
    rounding = write(tmp_path, hourly([0, 1]) + hourly([2], "10,11,9,11.00001,100"), name="rounding.csv")
    excess = write(tmp_path, hourly([0, 1]) + hourly([2], "10,11,9,11.0001,100"), name="excess.csv")
    assert validate_files(rounding).ok
    assert only(validate_files(excess), "close_outside_range").rows == (4,)


def test_negative_volume_is_an_error(tmp_path):
    path = write(tmp_path, hourly([0]) + hourly([1], "10,11,9,10.5,-5") + hourly([2]))
    check(only(validate_files(path), "negative_volume"), "error", "volume", [3],
          "prices.csv: column 'volume' has 1 negative value at line 3 (smallest -5).")


def test_duplicate_timestamps_are_an_error_counting_exact_copies_and_conflicts(tmp_path):
    lines = hourly([0, 1, 1]) + hourly([2]) + hourly([2], "10,11,9,10.6,100") + hourly([3])
    path = write(tmp_path, lines)
    check(only(validate_files(path), "duplicate_timestamps"), "error", "timestamp", [3, 4, 5, 6],
          "prices.csv: column 'timestamp' has 2 duplicated timestamps on 4 rows at lines 3-6 "
          "(first: 2024-01-01 01:00): 1 with exact copies, 1 with conflicting values.")
    with pytest.raises(DataValidationError):
        load_ohlcv(path)


def test_shuffled_rows_are_a_non_monotonic_warning_and_get_sorted(tmp_path):
    path = write(tmp_path, hourly([0, 2, 1, 3]))
    report = validate_files(path)
    check(only(report, "non_monotonic"), "warning", "timestamp", [4],
          "prices.csv: non-monotonic timestamps in column 'timestamp': 1 row at line 4 is out of order; "
          "the rows were sorted by time.")
    assert np.all(np.diff(load_ohlcv(path).timestamps) > np.timedelta64(0))


def test_newest_first_rows_are_an_info_note_not_a_warning(tmp_path):
    path = write(tmp_path, hourly([3, 2, 1, 0]))
    report = validate_files(path)
    check(only(report, "descending_order"), "info", "timestamp", (),
          "prices.csv: rows are newest-first (timestamps in column 'timestamp' decrease); "
          "they were sorted oldest-first.")
    assert not report.warnings


def test_a_newest_first_file_with_one_row_out_of_place_gets_the_note_and_a_warning_for_that_row(tmp_path):
    path = write(tmp_path, hourly([11, 10, 9, 8, 7, 6, 4, 5, 3, 2, 1, 0]))
    report = validate_files(path)
    assert only(report, "descending_order").severity == "info"
    check(only(report, "non_monotonic"), "warning", "timestamp", [9],
          "prices.csv: non-monotonic timestamps in column 'timestamp': 1 row at line 9 is out of order; "
          "the rows were sorted by time.")


def test_a_shuffled_file_is_not_called_newest_first(tmp_path):
    hours = np.random.default_rng(0).permutation(24)
    report = validate_files(write(tmp_path, hourly(hours)))
    assert not report.by_code("descending_order") and report.by_code("non_monotonic")


def test_intraday_gaps_against_the_inferred_frequency_are_a_warning(tmp_path):
    path = write(tmp_path, hourly([0, 1, 2, 5, 6]))
    check(only(validate_files(path), "gap"), "warning", "timestamp", [5],
          "prices.csv: 1 gap in column 'timestamp' against the inferred frequency 1h, 2 missing bars in all; "
          "the bar after the gap is at line 5 (2024-01-01 02:00 to 2024-01-01 05:00).")


def test_daily_gaps_skip_weekends_and_holidays_but_report_longer_closures_in_business_days(tmp_path):
    # Mon 1 .. Thu 4 Jan (Fri 5 a holiday: Thu -> Mon is 4 days), 8-12 Jan, then nothing until Mon 22 Jan.
    days = list(pd.bdate_range("2024-01-01", "2024-01-12").drop(pd.Timestamp("2024-01-05")))
    days += list(pd.bdate_range("2024-01-22", "2024-01-26"))
    path = write(tmp_path, [f"{d:%Y-%m-%d},{GOOD}" for d in days], header="Date,Open,High,Low,Close,Volume")
    check(only(validate_files(path), "gap"), "warning", "Date", [11],
          "prices.csv: 1 gap in column 'Date' against the inferred frequency 1 day (for daily data, spacings up "
          "to 4 calendar days are expected and not counted), 5 missing bars in all; the bar after the gap is at "
          "line 11 (2024-01-12 to 2024-01-22).")


def test_zero_volume_bars_are_a_suspicious_volume_warning(tmp_path):
    path = write(tmp_path, hourly([0]) + hourly([1, 2], "10,10,10,10,0") + hourly([3]))
    check(only(validate_files(path), "zero_volume"), "warning", "volume", [3, 4],
          "prices.csv: column 'volume' is 0 on 2 bars at lines 3-4 (2 with a flat price, open = high = low = close); "
          "zero volume usually means no trading (a stale quote).")


def test_an_extreme_volume_is_an_outlier_warning_by_robust_z_score(tmp_path):
    volumes = [98, 99, 100, 101, 102] * 6
    volumes.insert(10, 1e9)  # line 12
    lines = [f"{t:%Y-%m-%d %H:%M},10,11,9,10.5,{v:g}" for t, v in
             zip(pd.date_range("2024-01-01", periods=len(volumes), freq="h"), volumes)]
    check(only(validate_files(write(tmp_path, lines)), "volume_outlier"), "warning", "volume", [12],
          "prices.csv: column 'volume' has 1 extreme value at line 12 (robust z-score of log volume beyond 10; "
          "first: 1e+09, median 100).")


def test_swapped_base_and_quote_volume_columns_are_a_warning_naming_the_rows(tmp_path):
    header = "timestamp,open,high,low,close,volume,Volume USD"
    consistent, swapped = "100,101,99,100,2,200", "100,101,99,100,200,2"
    lines = hourly([0, 1], consistent) + hourly([2, 3], swapped) + hourly([4], consistent)
    report = validate_files(write(tmp_path, lines, header=header))
    check(only(report, "swapped_volume"), "warning", "volume", [4, 5],
          "prices.csv: columns 'volume' and 'Volume USD' look swapped on 2 rows at lines 4-5: there 'volume' * close "
          "does not match 'Volume USD', but 'Volume USD' * close matches 'volume'.")


def test_unparseable_or_missing_timestamps_are_an_error_naming_rows_and_an_example(tmp_path):
    path = write(tmp_path, hourly([0]) + [f"not a date,{GOOD}"] + hourly([1]) + [f",{GOOD}"] + hourly([2]))
    check(only(validate_files(path), "bad_timestamp"), "error", "timestamp", [3, 5],
          "prices.csv: column 'timestamp' has 2 missing or unparseable timestamps at lines 3, 5 (first: 'not a date'); "
          "those rows cannot be placed in time and are dropped.")


BOOL_FIX = ("Point the loader at the column that holds the times (timestamp_column='...'; epoch numbers or dates "
            "such as '2020-01-31' or '2020-01-31T15:00:00Z'), or correct the file.")


def test_a_timestamp_column_of_true_false_values_is_a_non_time_column_not_duplicate_timestamps(tmp_path):
    path = write(tmp_path, [f"True,{GOOD}", f"False,{GOOD}", f",{GOOD}", f"True,{GOOD}"])
    report = validate_files(path)
    problem = only(report, "bad_timestamp")
    check(problem, "error", "timestamp", (),
          "prices.csv: column 'timestamp' holds True/False values, not times (first: 'True' at line 2); no row can be "
          "placed in time, so none were loaded.")
    assert problem.fix == BOOL_FIX
    assert not report.by_code("duplicate_timestamps") and len(report.errors) == 1
    with pytest.raises(DataValidationError, match="holds True/False values, not times"):
        load_ohlcv(path)


def test_an_in_memory_frame_with_a_bool_timestamp_column_gets_the_same_error():
    frame = pd.DataFrame({"timestamp": [False, True], "open": [1.0, 1], "high": [2.0, 2], "low": [0.5, 0.5],
                          "close": [1.0, 1], "volume": [1.0, 1]})
    check(only(validate_frame(frame), "bad_timestamp"), "error", "timestamp", (),
          "<frame>: column 'timestamp' holds True/False values, not times (first: 'False' at row 0); no row can be "
          "placed in time, so none were loaded.")


def test_naive_times_mixed_with_utc_offsets_are_taken_as_utc_with_a_warning_naming_count_and_first_line(tmp_path):
    lines = [f"2024-01-01T00:00:00Z,{GOOD}", f"2024-01-01 01:00,{GOOD}", f"2024-01-01 03:00:00+01:00,{GOOD}",
             f"2024-01-01 03:00,{GOOD}", f"2024-01-01T04:00:00.000+0000,{GOOD}"]
    path = write(tmp_path, lines)
    problem = only(validate_files(path), "naive_timestamps")
    check(problem, "warning", "timestamp", [3, 5],
          "prices.csv: column 'timestamp' mixes times with a UTC offset and 2 naive times without one (first: "
          "'2024-01-01 01:00' at line 3); the naive times were taken as UTC.")
    data = load_ohlcv(path)
    np.testing.assert_array_equal(data.timestamps, np.arange(5) * np.timedelta64(1, "h") + np.datetime64("2024-01-01T00", "ns"))


def test_an_all_naive_or_all_offset_column_gets_no_naive_timestamps_warning(tmp_path):
    naive = write(tmp_path, hourly([0, 1, 2]), name="naive.csv")
    aware = write(tmp_path, [f"2024-01-01T0{h}:00:00Z,{GOOD}" for h in range(3)], name="aware.csv")
    assert not validate_files(naive).by_code("naive_timestamps")
    assert not validate_files(aware).by_code("naive_timestamps")


def test_a_file_without_data_rows_is_an_error(tmp_path):
    check(only(validate_files(write(tmp_path, [])), "empty_file"), "error", None, (),
          "prices.csv: the file has no data rows.")


def test_an_unreadable_file_is_an_error_with_the_readers_reason(tmp_path):
    path = tmp_path / "prices.csv.gz"
    path.write_text("timestamp,open\n")
    problem = only(validate_files(path), "unreadable_file")
    check(problem, "error", None, (), "prices.csv.gz: cannot read the file (BadGzipFile: Not a gzipped file (b'ti')).")
    assert problem.file == str(path)


def test_an_unsupported_file_type_is_an_error(tmp_path):
    path = tmp_path / "prices.xlsx"
    path.write_bytes(b"PK")
    problem = only(validate_files(path), "unsupported_format")
    check(problem, "error", None, (), "prices.xlsx: unsupported file type '.xlsx'.")
    assert problem.fix == "Use .csv, .csv.gz, .parquet or .feather (save spreadsheets as CSV)."


def test_a_missing_path_is_an_error_in_validate_files_and_file_not_found_in_load(tmp_path):
    missing = tmp_path / "nowhere.csv"
    check(only(validate_files([missing]), "file_not_found"), "error", None, (),
          f"{missing}: no such file or directory, and no matching .csv/.parquet/.feather files.")
    with pytest.raises(FileNotFoundError):
        load_ohlcv(missing)


def test_columns_that_are_not_ohlcv_are_listed_in_a_note(tmp_path):
    path = write(tmp_path, [f"2024-01-01 0{h}:00,{GOOD},ok" for h in range(3)], header=HEADER + ",Comment")
    check(only(validate_files(path), "unmapped_columns"), "info", None, (),
          "prices.csv: column(s) 'Comment' are not OHLCV columns and were ignored.")


def test_blank_lines_are_noted_and_do_not_shift_line_numbers(tmp_path):
    path = write(tmp_path, hourly([0]) + [""] + hourly([1]) + hourly([2], "10,11,9,,100"))
    report = validate_files(path)
    check(only(report, "blank_rows"), "info", None, [3], "prices.csv: line 3 is blank and was skipped.")
    assert only(report, "non_finite").rows == (5,)


def test_parquet_problems_use_0_based_row_positions(tmp_path):
    frame = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=4, freq="h"), "open": 10.0,
                          "high": 11.0, "low": 9.0, "close": [10.5, 10.5, np.nan, 10.5], "volume": 100.0})
    frame.to_parquet(tmp_path / "prices.parquet")
    problem = only(validate_files(tmp_path / "prices.parquet"), "non_finite")
    check(problem, "error", "close", [2], "prices.parquet: column 'close' has 1 missing or infinite value at row 2.")
    assert problem.row_kind == "row"


def test_messages_of_a_long_file_name_the_symbol_and_use_file_lines(tmp_path):
    lines = [f"2024-01-01 0{h}:00,{s},{GOOD}" for h in range(3) for s in ("AAA", "BBB")]
    lines[3] = "2024-01-01 01:00,BBB,10,11,9,,100"  # line 5
    problem = only(validate_files(write(tmp_path, lines, header="timestamp,symbol,open,high,low,close,volume")),
                   "non_finite")
    check(problem, "error", "close", [5],
          "prices.csv (symbol BBB): column 'close' has 1 missing or infinite value at line 5.")
    assert problem.symbol == "BBB"


def test_a_symbol_asked_for_but_absent_is_an_error(tmp_path):
    write(tmp_path, hourly(range(3)), name="AAA.csv")
    check(only(validate_ohlcv(tmp_path, symbols=["AAA", "ZZZ"]), "unknown_symbol"), "error", None, (),
          "symbol(s) 'ZZZ' not found; available: AAA.")


def test_the_same_symbol_from_two_files_is_an_error(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, second = write(tmp_path / "a", hourly(range(3)), "X.csv"), write(tmp_path / "b", hourly(range(3)), "X.csv")
    check(only(validate_ohlcv([first, second]), "duplicate_symbol"), "error", None, (),
          f"symbol 'X' comes from more than one file: {first}, {second}; only the first is kept.")


def test_mixing_bar_frequencies_in_one_panel_is_a_warning(tmp_path):
    write(tmp_path, hourly(range(4)), name="H.csv")
    write(tmp_path, [f"2024-01-0{d},{GOOD}" for d in range(1, 5)], name="D.csv")
    check(only(validate_ohlcv(tmp_path), "mixed_frequency"), "warning", None, (),
          "the symbols have different bar frequencies (1 day: D; 1h: H).")


def test_panel_notes_name_symbols_that_start_late_end_early_or_miss_bars(tmp_path):
    write(tmp_path, hourly(range(6)), name="FULL.csv")
    write(tmp_path, hourly(range(2, 6)), name="LATE.csv")
    write(tmp_path, hourly([0, 1, 3]), name="HOLEY.csv")
    report = validate_ohlcv(tmp_path)
    check(only(report, "late_start"), "info", None, (),
          "LATE.csv: symbol 'LATE' starts at 2024-01-01 02:00, 2 bars after the panel start 2024-01-01; "
          "its bars before that are missing (NaN, valid=False).")
    check(only(report, "early_end"), "info", None, (),
          "HOLEY.csv: symbol 'HOLEY' ends at 2024-01-01 03:00, 2 bars before the panel end 2024-01-01 05:00; "
          "its bars after that are missing (NaN, valid=False).")
    check(only(report, "missing_bars"), "info", None, (),
          "HOLEY.csv: symbol 'HOLEY' has no bar at 1 timestamp where other symbols do (first: 2024-01-01 02:00); "
          "they are NaN with valid=False.")
    assert report.ok


# ---------------------------------------------------------------------------------------------
# strict and non-strict loading


def test_strict_loading_raises_one_error_listing_every_error(tmp_path):
    path = write(tmp_path, hourly([0]) + hourly([1], "10,11,9,,100") + hourly([2], "10,11,9,10.5,-5"))
    with pytest.raises(DataValidationError) as caught:
        load_ohlcv(path)
    error = caught.value
    assert isinstance(error, ValueError)
    assert [p.code for p in error.report.errors] == ["non_finite", "negative_volume"]
    assert str(error) == ValidationReport(error.report.errors).format()


def test_non_strict_loading_keeps_bad_bars_marked_invalid_and_says_so(tmp_path):
    path = write(tmp_path, hourly([0]) + hourly([1], "10,11,9,10.5,-5") + hourly([2]))
    data = load_ohlcv(path, strict=False)
    assert data.valid[:, 0].tolist() == [True, False, True]
    assert data.bars.volume[1, 0] == -5  # raw value kept for inspection
    check(only(data.report, "invalid_bars"), "info", None, [3],
          "prices.csv: 1 bar with errors is kept with valid=False, at line 3.")


# ---------------------------------------------------------------------------------------------
# The report


def _problem(severity, file, code="c", message="m"):
    return Problem(severity, code, file, None, (), message, "do this")


def test_a_report_groups_by_file_puts_errors_first_and_ends_with_a_summary():
    report = ValidationReport((
        _problem("info", "a.csv", "n1", "note a"), _problem("warning", "b.csv", "w1", "warn b"),
        _problem("error", "a.csv", "e1", "error a"), _problem("info", "b.csv", "n2", "note b"),
        _problem("error", "b.csv", "e2", "error b"), _problem("info", "a.csv", "n3", "note a2"),
    ))
    assert report.format() == "\n".join([
        "a.csv",
        "  error   [e1] error a", "          fix: do this",
        "  note    [n1] note a", "          fix: do this",
        "  note    [n3] note a2", "          fix: do this",
        "",
        "b.csv",
        "  error   [e2] error b", "          fix: do this",
        "  warning [w1] warn b", "          fix: do this",
        "  note    [n2] note b", "          fix: do this",
        "",
        "2 errors, 1 warning, 3 notes",
    ])


def test_report_severity_views_ok_merge_and_raise():
    errors = ValidationReport((_problem("error", "a.csv"),))
    notes = ValidationReport((_problem("info", "a.csv"), _problem("warning", "b.csv")))
    merged = notes.merge(errors)
    assert (len(merged.errors), len(merged.warnings), len(merged.infos)) == (1, 1, 1)
    assert merged.problems == notes.problems + errors.problems
    assert notes.ok and not merged.ok
    notes.raise_if_errors()  # no errors: no exception
    with pytest.raises(DataValidationError, match=r"\[c\] m"):
        merged.raise_if_errors()
    assert ValidationReport().format() == "no problems found\n0 errors, 0 warnings, 0 notes"


def test_a_problem_refuses_an_unknown_severity():
    with pytest.raises(ValueError, match="severity"):
        Problem("fatal", "c", "f", None, (), "m", "x")


@pytest.mark.parametrize("rows, kind, text", [
    ([5], "line", "line 5"),
    ([2, 3, 4, 9], "line", "lines 2-4, 9"),
    ([9, 2, 3, 3], "row", "rows 2-3, 9"),
    (list(range(12_345, 33_261)), "line", "lines 12,345-33,260"),
    ([1, 3, 5, 7, 9, 11, 12, 13], "line", "lines 1, 3, 5, 7, 9 and 3 more"),
])
def test_rows_are_shown_as_ranges_with_the_first_five_and_a_count_of_the_rest(rows, kind, text):
    assert format_rows(rows, kind) == text


def test_validate_frame_checks_an_in_memory_frame_with_row_positions():
    frame = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=3, freq="D"), "open": [1.0, 1, 1],
                          "high": [2.0, 2, 0.5], "low": [0.5, 0.5, 0.6], "close": [1.0, 1, 0.55],
                          "volume": [1.0, 1, 1]})
    problem = only(validate_frame(frame), "high_below_low")
    check(problem, "error", "high", [2], "<frame>: column 'high' is below column 'low' at row 2 (first: 0.5 < 0.6).")


# ---------------------------------------------------------------------------------------------
# The detection rules, by hand


def test_the_frequency_is_the_most_common_spacing():
    hour = 3600 * 10**9
    assert infer_frequency(np.array([0, 1, 2, 3, 5, 7]) * hour) == hour
    assert infer_frequency(np.array([0, hour])) is None


def test_intraday_gap_bars_are_placed_at_the_frequency():
    hour = 3600 * 10**9
    gaps = find_gaps(np.array([0, 1, 2, 5, 6]) * hour, hour)
    assert gaps.after.tolist() == [3]
    assert (gaps.missing_times // hour).tolist() == [3, 4]


def test_volume_columns_are_swapped_only_when_the_swapped_reading_fits():
    volume, quote, close = np.array([2.0, 200, 2, 0]), np.array([200.0, 2, 150, 0]), np.array([100.0, 100, 100, 100])
    # row 0 consistent; row 1 swapped; row 2 inconsistent both ways but within a factor 2 as is; row 3 no volume
    assert swapped_volume_mask(volume, quote, close).tolist() == [False, True, False, False]
