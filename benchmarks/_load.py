"""Machine-load bookkeeping shared by the benchmarks (run as scripts, so `benchmarks/` is on sys.path)."""

from __future__ import annotations

import os


def record_load(machine: dict, load_before: tuple) -> None:
    """Store the 1/5/15-minute load averages before and after the run in `machine`, with a note when
    other processes shared the CPU (absolute figures are then lower bounds)."""
    load_after = os.getloadavg()
    machine["load_average_before"] = load_before
    machine["load_average_after"] = load_after
    if max(load_before[0], load_after[0]) > 0.5 * (os.cpu_count() or 1):
        machine["note"] = (
            f"other processes shared the CPU during the run (1-minute load average {load_before[0]:.1f} before, "
            f"{load_after[0]:.1f} after, on {os.cpu_count()} cores): absolute figures are lower bounds")
