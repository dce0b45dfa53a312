"""load_ohlcv reads CSV/parquet/feather, one or many symbols, into a typed [time, asset] panel.

Files are built in tmp_path; the real files in ../shared/data (the `shared_data` fixture) are used
when present.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trading_jax.data.loading import describe, load_ohlcv, parse_timestamps
from trading_jax.data.types import Bars, MarketData

HEADER = "timestamp,open,high,low,close,volume"


def write(tmp_path, lines, name="prices.csv", header=HEADER):
    path = tmp_path / name
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def ohlcv_frame(n=5, start="2024-01-01", freq="h", seed=0) -> pd.DataFrame:
    """A small consistent OHLCV frame with a `timestamp` column."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    return pd.DataFrame({
        "timestamp": pd.date_range(start, periods=n, freq=freq),
        "open": open_, "high": np.maximum(open_, close) * 1.01, "low": np.minimum(open_, close) * 0.99,
        "close": close, "volume": rng.uniform(100, 200, n),
    })


def stamps(*texts) -> np.ndarray:
    return np.array(texts, dtype="datetime64[ns]")


def only(report, code):
    found = report.by_code(code)
    assert len(found) == 1, report.format()
    return found[0]


# ---------------------------------------------------------------------------------------------
# Formats and the returned structure


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet", ".feather"])
def test_a_file_round_trips_into_float64_time_by_asset_arrays(tmp_path, suffix):
    frame = ohlcv_frame()
    path = tmp_path / f"AAA{suffix}"
    if suffix.startswith(".csv"):
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_feather(path)
    data = load_ohlcv(path)
    assert isinstance(data, MarketData) and isinstance(data.bars, Bars)
    assert data.symbols == ("AAA",) and data.sources == (str(path),)
    for field in Bars._fields:
        array = getattr(data.bars, field)
        assert array.dtype == np.float64 and array.shape == (5, 1)
        np.testing.assert_allclose(array[:, 0], frame[field].to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(data.timestamps, frame["timestamp"].to_numpy().astype("datetime64[ns]"))
    assert data.valid.all() and data.frequency == np.timedelta64(1, "h")
    assert data.report.ok and not data.report.problems


def test_a_parquet_file_with_a_datetime_index_uses_it_as_the_timestamps(tmp_path):
    frame = ohlcv_frame().set_index("timestamp")
    frame.index.name = None
    frame.to_parquet(tmp_path / "AAA.parquet")
    data = load_ohlcv(tmp_path / "AAA.parquet")
    np.testing.assert_array_equal(data.timestamps, frame.index.to_numpy().astype("datetime64[ns]"))


def test_a_dataframe_can_be_loaded_directly(tmp_path):
    data = load_ohlcv(ohlcv_frame())
    assert data.symbols == ("data",) and data.bars.close.shape == (5, 1)


def test_semicolon_separated_files_are_read(tmp_path):
    path = write(tmp_path, ["2024-01-01;10;11;9;10.5;100", "2024-01-02;10;11;9;10.6;100"],
                 header="Date;Open;High;Low;Close;Volume")
    assert load_ohlcv(path).bars.close[:, 0].tolist() == [10.5, 10.6]


# ---------------------------------------------------------------------------------------------
# Timestamps


@pytest.mark.parametrize("scale, unit", [(1, "s"), (10**3, "ms"), (10**6, "us"), (10**9, "ns")])
def test_epoch_timestamps_are_read_in_the_unit_their_magnitude_implies(tmp_path, scale, unit):
    lines = [f"{(1704067200 + 3600 * i) * scale},10,11,9,10.5,100" for i in range(3)]
    ns, _, kind = parse_timestamps(pd.Series([(1704067200 + 3600 * i) * scale for i in range(3)]))
    assert kind == unit
    data = load_ohlcv(write(tmp_path, lines))
    np.testing.assert_array_equal(data.timestamps, stamps("2024-01-01T00", "2024-01-01T01", "2024-01-01T02"))


def test_iso_timestamps_with_offsets_are_converted_to_utc_and_naive_ones_taken_as_utc(tmp_path):
    lines = ["2024-01-01T00:00:00Z,10,11,9,10.5,100", "2024-01-01 03:00:00+02:00,10,11,9,10.5,100",
             "2024-01-01 02:00,10,11,9,10.5,100"]
    data = load_ohlcv(write(tmp_path, lines))
    np.testing.assert_array_equal(data.timestamps, stamps("2024-01-01T00", "2024-01-01T01", "2024-01-01T02"))


def test_true_false_values_are_not_parsed_as_epochs():
    ns, unparseable, kind = parse_timestamps(pd.Series([True, False, None], dtype=object))
    assert kind == "bool"
    assert list(unparseable) == [True, True, False] and (ns == np.iinfo(np.int64).min).all()


def test_naive_time_mask_marks_strings_without_a_utc_offset():
    from trading_jax.data.loading import naive_time_mask

    values = pd.Series(["2024-01-01T00:00:00Z", "2024-01-01 01:00", "2024-01-01 01:00+02:00", "2024-01-01 01:00 +0200",
                        "2024-01-01", None, "2024-01-01T01:00:00.5-05", "2024-01-01 01:00 UTC"])
    assert list(naive_time_mask(values)) == [False, True, False, False, True, False, False, False]


def test_mixed_date_formats_in_one_column_are_all_parsed(tmp_path):
    lines = ["2024-01-01,10,11,9,10.5,100", "01/02/2024,10,11,9,10.5,100", "Jan 3 2024,10,11,9,10.5,100",
             "2024-01-04T00:00:00,10,11,9,10.5,100"]
    data = load_ohlcv(write(tmp_path, lines))
    np.testing.assert_array_equal(data.timestamps, stamps("2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"))


def test_yyyymmdd_integers_and_separate_date_and_time_columns_are_dates(tmp_path):
    ints = load_ohlcv(write(tmp_path, ["20240102,10,11,9,10.5,100", "20240103,10,11,9,10.5,100"], name="i.csv"))
    np.testing.assert_array_equal(ints.timestamps, stamps("2024-01-02", "2024-01-03"))
    split = load_ohlcv(write(tmp_path, ["2024.01.02,09:30,10,11,9,10.5,100", "2024.01.02,09:31,10,11,9,10.5,100"],
                             name="s.csv", header="Date,Time,Open,High,Low,Close,Volume"))
    np.testing.assert_array_equal(split.timestamps, stamps("2024-01-02T09:30", "2024-01-02T09:31"))


def test_an_epoch_column_is_preferred_over_a_date_string_and_a_note_says_so(tmp_path):
    # the date strings are deliberately off by one hour: the epoch must win
    lines = [f"{1704067200 + 3600 * i},2024-01-01 0{i + 1}:00,10,11,9,10.5,100" for i in range(3)]
    data = load_ohlcv(write(tmp_path, lines, header="unix,date,open,high,low,close,volume"))
    assert data.timestamps[0] == np.datetime64("2024-01-01T00:00", "ns")
    assert only(data.report, "timestamp_column").message == (
        "prices.csv: timestamps read from the epoch column 'unix' (exact); column(s) 'date' ignored.")


# ---------------------------------------------------------------------------------------------
# Columns


def test_column_names_are_matched_ignoring_case_spaces_and_punctuation(tmp_path):
    header = " Date , O , H , L , C , Vol ,Adj. Close,Volume USD,Trade Count,Comment"
    lines = ["2024-01-01,10,11,9,10.5,100,10.4,1050,7,x", "2024-01-02,10,11,9,10.6,100,10.5,1060,8,y"]
    data = load_ohlcv(write(tmp_path, lines, header=header))
    assert data.bars.close[:, 0].tolist() == [10.5, 10.6] and data.bars.volume[:, 0].tolist() == [100, 100]
    assert sorted(data.extra) == ["adj_close", "trade_count", "volume_quote"]
    assert data.extra["adj_close"][:, 0].tolist() == [10.4, 10.5]
    assert data.extra["volume_quote"][:, 0].tolist() == [1050, 1060]
    assert only(data.report, "unmapped_columns").message == (
        "prices.csv: column(s) 'Comment' are not OHLCV columns and were ignored.")


def test_column_map_and_timestamp_column_override_detection(tmp_path):
    header = "when,created,Px Open,Px High,Px Low,Px Last,Shares"
    lines = ["2024-01-01,2000-01-01,10,11,9,10.5,100", "2024-01-02,2000-01-01,10,11,9,10.6,100"]
    data = load_ohlcv(write(tmp_path, lines, header=header), timestamp_column="when", column_map={
        "Px Open": "open", "px high": "high", "PX_LOW": "low", "Px Last": "close", "Shares": "volume"})
    np.testing.assert_array_equal(data.timestamps, stamps("2024-01-01", "2024-01-02"))
    assert data.bars.close[:, 0].tolist() == [10.5, 10.6]


# ---------------------------------------------------------------------------------------------
# Several symbols


LONG_HEADER = "timestamp,ticker,open,high,low,close,volume"


def test_a_long_file_is_pivoted_to_a_panel_aligned_on_the_union_of_timestamps(tmp_path):
    lines = ["2024-01-01 00:00,BBB,20,21,19,20.5,5", "2024-01-01 00:00,AAA,10,11,9,10.5,1",
             "2024-01-01 01:00,AAA,10,11,9,10.6,1", "2024-01-01 02:00,AAA,10,11,9,10.7,1",
             "2024-01-01 02:00,BBB,20,21,19,20.7,5"]
    data = load_ohlcv(write(tmp_path, lines, header=LONG_HEADER))
    assert data.symbols == ("AAA", "BBB")
    np.testing.assert_array_equal(data.bars.close, [[10.5, 20.5], [10.6, np.nan], [10.7, 20.7]])
    assert data.valid.tolist() == [[True, True], [True, False], [True, True]]
    assert only(data.report, "missing_bars").symbol == "BBB"


def test_symbols_select_and_order_the_assets_and_symbol_column_names_the_column(tmp_path):
    lines = [f"2024-01-0{d},{s},10,11,9,{p},1" for d in (1, 2, 3) for s, p in (("X", 10.1), ("Y", 10.2), ("Z", 10.3))]
    path = write(tmp_path, lines, header="date,name,open,high,low,close,volume")
    data = load_ohlcv(path, symbol_column="name", symbols=["Z", "X"])
    assert data.symbols == ("Z", "X") and data.bars.close[0].tolist() == [10.3, 10.1]


def test_a_directory_loads_one_symbol_per_file_and_marks_late_starters_invalid(tmp_path):
    ohlcv_frame(6, seed=1).to_csv(tmp_path / "AAA.csv", index=False)
    ohlcv_frame(4, start="2024-01-01 02:00", seed=2).to_parquet(tmp_path / "BBB.parquet")
    (tmp_path / "README.md").write_text("not data")
    data = load_ohlcv(tmp_path)
    assert data.symbols == ("AAA", "BBB") and data.bars.close.shape == (6, 2)
    assert data.valid[:, 1].tolist() == [False, False, True, True, True, True]
    assert np.isnan(data.bars.close[:2, 1]).all() and np.isfinite(data.bars.close[2:, 1]).all()
    assert only(data.report, "late_start").symbol == "BBB"
    assert data.report.ok  # a late start is a note, not an error


def test_a_glob_and_a_list_of_files_load_the_same_panel_as_the_directory(tmp_path):
    for i, name in enumerate(("AAA", "BBB")):
        ohlcv_frame(seed=i).to_csv(tmp_path / f"{name}.csv", index=False)
    by_dir = load_ohlcv(tmp_path)
    by_glob = load_ohlcv(str(tmp_path / "*.csv"))
    by_list = load_ohlcv([tmp_path / "AAA.csv", tmp_path / "BBB.csv"])
    for other in (by_glob, by_list):
        assert other.symbols == by_dir.symbols
        np.testing.assert_array_equal(other.bars.close, by_dir.bars.close)


# ---------------------------------------------------------------------------------------------
# Repairs: only when asked, always reported


def test_drop_duplicates_keeps_exact_copies_once_and_the_last_of_conflicting_rows(tmp_path):
    lines = ["2024-01-01 00:00,10,11,9,10.5,100", "2024-01-01 01:00,10,11,9,10.5,100",
             "2024-01-01 01:00,10,11,9,10.5,100", "2024-01-01 02:00,10,11,9,10.5,100",
             "2024-01-01 02:00,10,11,9,10.6,100", "2024-01-01 03:00,10,11,9,10.5,100"]
    path = write(tmp_path, lines)
    data = load_ohlcv(path, repair=("drop_duplicates",))
    assert data.bars.close[:, 0].tolist() == [10.5, 10.5, 10.6, 10.5]
    note = only(data.report, "repaired_duplicates")
    assert note.message == ("prices.csv: dropped 2 duplicate rows at lines 3, 5: 1 timestamp with exact copies, "
                            "1 with conflicting values (kept the last row in file order).")
    assert (note.severity, note.rows) == ("info", (3, 5))
    duplicate = only(data.report, "duplicate_timestamps")
    assert duplicate.severity == "warning" and duplicate.fix.startswith("Repaired by repair='drop_duplicates'")


def test_without_the_repair_duplicates_stay_an_error_and_conflicting_bars_are_invalid(tmp_path):
    lines = ["2024-01-01 00:00,10,11,9,10.5,100", "2024-01-01 01:00,10,11,9,10.5,100",
             "2024-01-01 01:00,10,11,9,10.6,100"]
    data = load_ohlcv(write(tmp_path, lines), strict=False)
    assert only(data.report, "duplicate_timestamps").severity == "error"
    assert data.valid[:, 0].tolist() == [True, False]


def test_ffill_gaps_inserts_the_missing_bars_at_the_previous_close_with_zero_volume(tmp_path):
    lines = [f"2024-01-01 0{h}:00,10,11,9,{c},100" for h, c in ((0, 10.1), (1, 10.2), (2, 10.3), (5, 10.4), (6, 10.5))]
    data = load_ohlcv(write(tmp_path, lines), repair="ffill_gaps")
    np.testing.assert_array_equal(data.timestamps, np.arange("2024-01-01T00", "2024-01-01T07", dtype="datetime64[h]"))
    for field in ("open", "high", "low", "close"):
        assert getattr(data.bars, field)[3:5, 0].tolist() == [10.3, 10.3]
    assert data.bars.volume[3:5, 0].tolist() == [0, 0] and data.valid.all()
    note = only(data.report, "repaired_gaps")
    assert note.message == ("prices.csv: inserted 2 missing bars in 1 gap at the frequency 1h, before the bars at "
                            "line 5, with open/high/low/close = previous close and volume 0.")
    assert note.rows == (5,) and only(data.report, "gap").fix.startswith("Repaired by repair='ffill_gaps'")


def test_ffill_gaps_also_fills_empty_rows(tmp_path):
    lines = ["2024-01-01 00:00,10,11,9,10.1,100", "2024-01-01 01:00,,,,,", "2024-01-01 02:00,10,11,9,10.3,100",
             "2024-01-01 03:00,10,11,9,10.4,100"]
    data = load_ohlcv(write(tmp_path, lines), repair=["ffill_gaps"])
    assert data.bars.close[:, 0].tolist() == [10.1, 10.1, 10.3, 10.4]
    assert only(data.report, "repaired_empty_rows").message == (
        "prices.csv: filled 1 empty row at line 3 with open/high/low/close = previous close and volume 0.")


def test_swap_volume_swaps_the_columns_back_on_the_detected_rows(tmp_path):
    header = "timestamp,open,high,low,close,volume,Volume USD"
    lines = ["2024-01-01 00:00,100,101,99,100,2,200", "2024-01-01 01:00,100,101,99,100,300,3",
             "2024-01-01 02:00,100,101,99,100,4,400"]
    path = write(tmp_path, lines, header=header)
    assert load_ohlcv(path).bars.volume[:, 0].tolist() == [2, 300, 4]  # nothing repaired unless asked
    data = load_ohlcv(path, repair=("swap_volume",))
    assert data.bars.volume[:, 0].tolist() == [2, 3, 4]
    assert data.extra["volume_quote"][:, 0].tolist() == [200, 300, 400]
    assert only(data.report, "repaired_swap_volume").message == (
        "prices.csv: swapped columns 'volume' and 'Volume USD' back on 1 row at line 3.")


def test_repair_all_applies_every_repair_and_unknown_repairs_are_refused(tmp_path):
    lines = ["2024-01-01 00:00,10,11,9,10.5,100", "2024-01-01 00:00,10,11,9,10.5,100",
             "2024-01-01 01:00,10,11,9,10.5,100", "2024-01-01 03:00,10,11,9,10.5,100",
             "2024-01-01 04:00,10,11,9,10.5,100"]
    data = load_ohlcv(write(tmp_path, lines), repair="all")
    assert data.n_time == 5 and data.report.by_code("repaired_duplicates") and data.report.by_code("repaired_gaps")
    with pytest.raises(ValueError, match="unknown repair"):
        load_ohlcv(write(tmp_path, lines), repair=("sort",))


# ---------------------------------------------------------------------------------------------
# describe


def test_describe_summarises_symbols_range_frequency_missing_bars_and_the_report(tmp_path):
    ohlcv_frame(6, seed=1).to_csv(tmp_path / "AAA.csv", index=False)
    ohlcv_frame(4, start="2024-01-01 02:00", seed=2).to_csv(tmp_path / "BBB.csv", index=False)
    data = load_ohlcv(tmp_path)
    lines = describe(data).splitlines()
    assert lines[0] == "2 symbols, 6 timestamps from 2024-01-01 to 2024-01-01 05:00 (UTC), frequency 1h"
    assert lines[2].split()[:6] == ["AAA", "2024-01-01", "2024-01-01", "05:00", "6", "0"]
    assert lines[3].split()[:7] == ["BBB", "2024-01-01", "02:00", "2024-01-01", "05:00", "4", "0"]
    assert lines[-1] == "report: 0 errors, 0 warnings, 1 note"


# ---------------------------------------------------------------------------------------------
# The real files in ../shared/data


@pytest.fixture(scope="module")
def btc(shared_data):
    return load_ohlcv(shared_data / "crypto" / "BTC_USD-1h.csv")


@pytest.fixture(scope="module")
def stocks(shared_data):
    return load_ohlcv(shared_data / "stocks_daily")


def test_the_newest_first_btc_file_loads_sorted_ascending_with_a_note(btc):
    assert btc.symbols == ("BTC/USD",) and btc.n_time == 33_259
    assert np.all(np.diff(btc.timestamps) == np.timedelta64(1, "h"))
    assert btc.timestamps[0] == np.datetime64("2018-05-15T06:00", "ns")
    assert only(btc.report, "descending_order").message == (
        "BTC_USD-1h.csv: rows are newest-first (timestamps in column 'unix' decrease); they were sorted oldest-first.")


def test_the_btc_files_swapped_volume_columns_are_a_warning_naming_the_row_ranges(btc):
    problem = only(btc.report, "swapped_volume")
    assert problem.message == (
        "BTC_USD-1h.csv: columns 'volume' and 'Volume USD' look swapped on 20,143 rows at lines 12,114-16,178, "
        "16,183-25,257, 26,258-33,260: there 'volume' * close does not match 'Volume USD', but 'Volume USD' * close "
        "matches 'volume'.")
    assert problem.severity == "warning" and len(problem.rows) == 20_143


def test_repairing_the_btc_volumes_makes_volume_times_close_match_the_quote_volume_on_every_row(shared_data, btc):
    volume, close, quote = btc.bars.volume[:, 0], btc.bars.close[:, 0], btc.extra["volume_quote"][:, 0]
    assert np.isclose(volume * close, quote, rtol=0.1).mean() < 0.5  # as loaded: mostly mismatched
    repaired = load_ohlcv(shared_data / "crypto" / "BTC_USD-1h.csv", repair=("swap_volume",))
    volume, close, quote = repaired.bars.volume[:, 0], repaired.bars.close[:, 0], repaired.extra["volume_quote"][:, 0]
    # volume * close is the quote volume at the close, not the traded prices: within 10% on every row
    np.testing.assert_allclose(volume * close, quote, rtol=0.1)
    assert only(repaired.report, "repaired_swap_volume").rows == only(btc.report, "swapped_volume").rows


def test_the_stock_directory_loads_as_an_88_asset_panel_with_late_starters_invalid(stocks):
    assert stocks.bars.close.shape == (1258, 88) and stocks.n_assets == 88
    start = np.datetime64("2016-06-30", "ns")
    gmre = stocks.symbols.index("GMRE")
    before = stocks.timestamps < start
    assert not stocks.valid[before, gmre].any() and stocks.valid[~before, gmre].all()
    assert np.isnan(stocks.bars.close[before, gmre]).all()
    late = {p.symbol for p in stocks.report.by_code("late_start")}
    assert late == {"ABBV", "AGFS", "BABA", "GMRE"}
    assert stocks.extra["adj_close"].shape == (1258, 88)


def test_the_stock_zero_volume_runs_are_suspicious_volume_warnings(stocks):
    warnings = {p.symbol or p.file.rsplit("/", 1)[-1]: p for p in stocks.report.by_code("zero_volume")}
    assert set(warnings) == {"AGFS.csv", "PTR.csv", "SPLP.csv"}
    assert warnings["AGFS.csv"].message == (
        "AGFS.csv: column 'Volume' is 0 on 49 bars at lines 2-4, 6-7, 9-10, 12, 23-26 and 37 more "
        "(49 with a flat price, open = high = low = close); zero volume usually means no trading (a stale quote).")


def test_the_stock_files_null_rows_are_missing_bars_not_nan_prices(stocks):
    empty = stocks.report.by_code("empty_row")
    assert sorted(p.file.rsplit("/", 1)[-1] for p in empty) == ["PTR.csv", "REX.csv", "SNP.csv"]
    assert all(p.rows == (962,) for p in empty)
    day = int(np.flatnonzero(stocks.timestamps == np.datetime64("2016-06-29", "ns"))[0])
    missing_that_day = [s for s, ok in zip(stocks.symbols, stocks.valid[day]) if not ok]
    assert missing_that_day == ["GMRE", "PTR", "REX", "SNP"]  # GMRE starts the next day
    finite = np.isfinite(np.stack(stocks.bars))
    assert (finite == stocks.valid[None]).all()  # strict=True: every valid bar is finite, every invalid one NaN
