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

__all__ = ["cell", "write_results", "failed_reason_supervised", "FAILED"]

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
    """Write `results.json` and `results.md` atomically (a crash never leaves half a table)."""
    out = Path(out)
    for name, text in (("results.json", json.dumps(report, indent=2, default=str) + "\n"), ("results.md", markdown)):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)


def failed_reason_supervised(history: Mapping[str, Any], batch_size: int) -> str | None:
    """Why a supervised run failed, or None: validation loss NaN in every epoch run, or every step skipped.

    Args:
        history: `TrainResult.history` as NumPy/lists: "val_loss", "skipped_steps", "stopped", "pool"
            (samples an epoch trained on: its active steps are `pool // batch_size`).
        batch_size: the minibatch size.
    """
    import numpy as np

    val = np.asarray(history["val_loss"], np.float64)
    ran = ~np.asarray(history["stopped"], bool)
    if not ran.any():
        return "no epoch ran"
    if not np.isfinite(val[ran]).any():
        return "the validation loss was NaN or inf in every epoch"
    skipped = int(np.asarray(history["skipped_steps"])[ran].sum())
    steps = int((np.asarray(history["pool"])[ran] // int(batch_size)).sum())
    if steps > 0 and skipped >= steps:
        return f"every training step was skipped ({skipped} non-finite losses or gradients)"
    return None
