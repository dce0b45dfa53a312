"""Shared test fixtures: the real market data folder and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# The suite's programs are tiny and compile far longer than they run: XLA's backend optimisation level 1 (fewer
# LLVM passes than the default 2) takes about 20% less CPU to compile them, and the matmuls still call the same
# precompiled kernels. Level 0 saves 40% but changes float32 rounding enough to move the differential-Sharpe
# reward past its NumPy-parity tolerance and to flip TD3's Pendulum run; level 1 keeps every result. Set before
# JAX's backend starts, so the xdist workers (which inherit the environment) and the tests' subprocesses compile
# the same way. TRADING_JAX_TEST_XLA_OPTIMIZE=1 keeps XLA's default.
if os.environ.get("TRADING_JAX_TEST_XLA_OPTIMIZE", "0") in ("0", "false", "no", "off"):
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_backend_optimization_level=1").strip()

# Tests that call `trading_jax.cli.main` in-process would otherwise turn on the user's persistent compilation
# cache (~/.cache/trading-jax/jax) for the rest of the session; the cache has tests of its own (test_cli.py).
os.environ.setdefault("TRADING_JAX_COMPILE_CACHE", "0")

# One persistent compilation cache for the whole test session, in a fresh temporary folder: a test that compiles a
# program another test (or its own rerun) already compiled reads it from disk (about 20% off the run-layer tests'
# time). The first import (pytest's controller process, before it starts the xdist workers, which inherit the
# environment) creates the folder; `TRADING_JAX_TEST_COMPILE_CACHE=0` turns it off. No test result depends on it:
# a cache entry is keyed by the program, the JAX version, the backend and the flags.
if os.environ.get("TRADING_JAX_TEST_COMPILE_CACHE", "1") not in ("0", "false", "no", "off"):
    import tempfile

    import jax

    if not os.environ.get("TRADING_JAX_TEST_CACHE_DIR"):
        os.environ["TRADING_JAX_TEST_CACHE_DIR"] = tempfile.mkdtemp(prefix="trading-jax-test-jax-cache-")
    jax.config.update("jax_compilation_cache_dir", os.environ["TRADING_JAX_TEST_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    """The controller (not an xdist worker) removes the session's compilation cache folder."""
    import shutil

    folder = os.environ.get("TRADING_JAX_TEST_CACHE_DIR", "")
    if folder and not hasattr(config, "workerinput") and Path(folder).name.startswith("trading-jax-test-jax-cache-"):
        shutil.rmtree(folder, ignore_errors=True)


def shared_data_path() -> Path:
    """`../shared/data` beside the repository (or $TRADING_JAX_SHARED_DATA)."""
    return Path(os.environ.get("TRADING_JAX_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder; tests that use it skip when it is absent (a clone on its own)."""
    path = shared_data_path()
    if not path.is_dir():
        pytest.skip(f"real market data not found at {path} (optional resource)")
    return path


# The slowest test files (seconds of one CPU in a fresh clone, largest first). pytest-xdist's `--dist loadfile`
# hands whole files to the two workers in collection order (`--no-loadscope-reorder` in pyproject.toml), so these
# go first and the small files fill in behind them: the workers finish together instead of one waiting on a big
# file picked up last (longest-processing-time-first scheduling). A file missing here just runs in name order.
SLOWEST_FIRST = (
    "test_tune.py", "test_distributed.py", "test_export.py", "test_rl_ppo.py", "test_runs_ppo_ensemble.py", "test_runs_maml.py", "test_rl_offpolicy.py",
    "test_export_onnx.py", "test_runs_offpolicy.py", "test_runs_rl_comparison.py", "test_rl_dqn.py",
    "test_rl_loop.py", "test_training.py", "test_ensemble.py", "test_sentiment_run.py", "test_meta.py",
    "test_runs.py", "test_backtest_run.py", "test_runs_meta_ensemble.py", "test_runs_online.py", "test_loop.py",
    "test_training_resume.py", "test_ensemble_mixed.py", "test_env_execution_message.py", "test_env_lob.py",
    "test_env_execution_modelled.py", "test_models_transformer.py", "test_augment.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    order = {id(item): n for n, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(Path(str(item.fspath)).name, len(rank)), order[id(item)]))
