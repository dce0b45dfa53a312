"""Results files of a run: `results.json` (everything) and `results.md` (the table a person reads).

Statistics come from `trading_jax.evaluation.stats` (mean, ddof-1 std, 95% Student-t interval, paired
differences). A statistic over a NaN or inf value, or a run whose training failed, is printed as FAILED
with the reason, never as a normal-looking row.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ["cell", "write_results", "FAILED"]

FAILED = "FAILED"


def cell(s: Mapping[str, Any] | None, digits: int = 4, interval: bool = True) -> str:
    """`mean [low, high]` of a `summarize` dict; FAILED for non-finite values; '' for None."""
    if s is None:
        return ""
    if s.get("nonfinite", 0) or not math.isfinite(s.get("mean", float("nan"))):
        return f"{FAILED} ({s.get('nonfinite', '?')} non-finite of {s.get('n', '?')})"
    text = f"{s['mean']:.{digits}g}"
    if interval and math.isfinite(s.get("ci95_low", float("nan"))):
        text += f" [{s['ci95_low']:.{digits}g}, {s['ci95_high']:.{digits}g}]"
    return text


def write_results(out: str | Path, report: Mapping[str, Any], markdown: str) -> None:
    """Write `results.json` and `results.md` atomically (a crash never leaves half a table); in a multi-process
    run only process 0 writes."""
    from trading_jax.distributed import is_primary

    if not is_primary():
        return
    out = Path(out)
    for name, text in (("results.json", json.dumps(report, indent=2, default=str) + "\n"), ("results.md", markdown)):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
