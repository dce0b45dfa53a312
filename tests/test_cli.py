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


# ------------------------------------------------------------------------------------------------
# Persistent compilation cache
# ------------------------------------------------------------------------------------------------

TINY_JIT = """
import jax, jax.numpy as jnp
from trading_jax.cli import configure_compile_cache
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if event.endswith("/cache_hits") else None)
print("cache:", configure_compile_cache())
print(jax.jit(lambda x: jnp.tanh(x) * 3.0 + 1.0)(jnp.ones(7)).sum())
print("hits:", len(hits))
"""


@pytest.fixture(autouse=True)
def no_compile_cache_for_in_process_main(monkeypatch):
    """`main()` turns the cache on for the whole process: keep this test process's JAX config as it was."""
    monkeypatch.setenv("TRADING_JAX_COMPILE_CACHE", "0")


def run_tiny_jit(cache_dir, switch="1", code=TINY_JIT):
    env = {**__import__("os").environ, "TRADING_JAX_CACHE_DIR": str(cache_dir), "TRADING_JAX_COMPILE_CACHE": switch}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def cache_entries(folder):
    return sorted(p.name for p in folder.glob("*-cache")) if folder.exists() else []


def test_the_compile_cache_is_written_by_a_first_run_and_read_by_the_second(tmp_path):
    cache = tmp_path / "jax-cache"
    first = run_tiny_jit(cache)
    assert f"cache: {cache}" in first.stdout
    entries = cache_entries(cache)
    assert any(name.startswith("jit__lambda") for name in entries), entries
    second = run_tiny_jit(cache)
    assert cache_entries(cache) == entries  # nothing new compiled
    assert "hits: 0" not in second.stdout and "hits:" in second.stdout


def test_the_compile_cache_off_switch_leaves_the_folder_empty(tmp_path):
    cache = tmp_path / "jax-cache"
    done = run_tiny_jit(cache, switch="0")
    assert "cache: None" in done.stdout
    assert cache_entries(cache) == []


def test_an_unwritable_cache_folder_warns_once_and_the_run_goes_on(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = ("from trading_jax.logging import configure; configure()\n"
            "from trading_jax.cli import configure_compile_cache\n"
            "print('first:', configure_compile_cache())\n" + TINY_JIT)
    done = run_tiny_jit(blocker / "jax", code=code)
    assert "first: None" in done.stdout and "cache: None" in done.stdout and "hits: 0" in done.stdout
    assert done.stderr.count("compilation cache off: cannot write to") == 1


def test_no_compile_cache_is_accepted_before_and_after_the_subcommand():
    from trading_jax.cli import build_parser, _add_to_every_command

    parser = build_parser()
    _add_to_every_command(parser, "--no-compile-cache", action="store_true", default=False)
    assert parser.parse_args(["--no-compile-cache", "data", "validate", "x.csv"]).no_compile_cache
    assert parser.parse_args(["data", "validate", "x.csv", "--no-compile-cache"]).no_compile_cache
    assert not parser.parse_args(["features"]).no_compile_cache
