"""The `trading-jax` command: subcommands listed, exit codes, reports printed."""

import subprocess
import sys

import pytest

from trading_jax.cli import EXIT_DATA_ERRORS, EXIT_OK, main

HEADER = "timestamp,open,high,low,close,volume\n"


def write(path, rows):
    path.write_text(HEADER + "".join(rows))
    return path


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "data" in out and "features" in out


def test_console_script_entry_point_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "trading_jax.cli", "data", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "validate" in done.stdout and "inspect" in done.stdout


def test_validate_exits_zero_on_a_clean_file(tmp_path, capsys):
    clean = write(tmp_path / "clean.csv", [f"2024-01-01 0{h}:00,10,11,9,10.5,100\n" for h in range(5)])
    assert main(["data", "validate", str(clean)]) == EXIT_OK
    assert "0 errors" in capsys.readouterr().out


def test_validate_exits_non_zero_and_names_file_column_and_line_on_errors(tmp_path, capsys):
    rows = [f"2024-01-01 0{h}:00,10,11,9,10.5,100\n" for h in range(5)]
    rows[2] = "2024-01-01 02:00,10,9,11,10.5,100\n"  # high < low on line 4 (header is line 1)
    bad = write(tmp_path / "bad.csv", rows)
    assert main(["data", "validate", str(bad)]) == EXIT_DATA_ERRORS
    out = capsys.readouterr().out
    assert "bad.csv: column 'high' is below column 'low' at line 4" in out
    assert "1 error" in out


def test_inspect_summarises_symbols_and_range(tmp_path, capsys):
    clean = write(tmp_path / "AAA.csv", [f"2024-01-0{d} 00:00,10,11,9,10.5,100\n" for d in range(1, 6)])
    assert main(["data", "inspect", str(clean)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "AAA" in out and "2024-01-01" in out and "2024-01-05" in out


def test_a_missing_file_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    code = main(["data", "inspect", str(tmp_path / "nowhere.csv")])
    assert code == EXIT_DATA_ERRORS
    assert "nowhere.csv" in capsys.readouterr().err


def test_features_of_a_file_shorter_than_the_warm_up_exit_one_naming_the_file_and_the_bars_needed(tmp_path, capsys):
    short = write(tmp_path / "short.csv", [f"2024-01-01 {h:02d}:00,10,11,9,10.5,100\n" for h in range(10)])
    out = tmp_path / "features.npz"
    assert main(["features", str(short), "--out", str(out)]) == EXIT_DATA_ERRORS
    err = capsys.readouterr().err
    assert err == (
        f"trading-jax: error: {short} has 10 bars but the feature pipeline needs at least 184 bars (warm-up 128) "
        "so that its training split (the first 70% of the bars) holds rows past the warm-up to fit the normaliser "
        "on; the longest warm-up is the 'hurst_128' feature's: use at least 184 bars, or switch off or shorten the "
        "long-window features in FeatureConfig (e.g. hurst_window=None, fourier=None).\n"
    )
    assert not out.exists()
