"""Shared test fixtures: the real market data folder and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Tests that call `trading_jax.cli.main` in-process would otherwise turn on the user's persistent compilation
# cache (~/.cache/trading-jax/jax) for the rest of the session; the cache has tests of its own (test_cli.py).
os.environ.setdefault("TRADING_JAX_COMPILE_CACHE", "0")


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
