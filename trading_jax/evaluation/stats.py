"""Statistics of reported results: mean, sample std and the Student-t interval of the mean, paired differences.

The one copy used by every results table (supervised experiments over seeds, RL policies over episodes).
`summarize(values)` gives `{"mean", "std", "n", "ci95_low", "ci95_high"}`:

    mean +- t_{0.975, n-1} * std / sqrt(n),   std with ddof = 1,

NaN std and interval for fewer than two values. `paired_difference(a, b)` summarises `a - b` over the same
units (episodes, seeds), which is much tighter than comparing two independent means. Non-finite values are
never averaged into a normal-looking number: they make every statistic NaN and are counted in
`"nonfinite"`, which the results tables print as FAILED.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["summarize", "paired_difference", "t_interval"]


def t_interval(mean: float, std: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The two-sided Student-t confidence interval of a mean (NaN for n < 2)."""
    if n < 2 or not math.isfinite(std):
        return float("nan"), float("nan")
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))
    return mean - half, mean + half


def summarize(values, what: str = "values") -> dict:
    """Mean, sample std (ddof 1), count and the 95% t-interval of the mean of `values` (any shape).

    Returns:
        `{"mean", "std", "n", "ci95_low", "ci95_high", "nonfinite"}`; with any NaN/inf value every
        statistic is NaN and `nonfinite` counts them.

    Raises:
        ValueError: no values (naming `what`).
    """
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError(f"summarize: no {what}")
    bad = int((~np.isfinite(v)).sum())
    if bad:
        nan = float("nan")
        return {"mean": nan, "std": nan, "n": int(v.size), "ci95_low": nan, "ci95_high": nan, "nonfinite": bad}
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    low, high = t_interval(mean, std, v.size)
    return {"mean": mean, "std": std, "n": int(v.size), "ci95_low": low, "ci95_high": high, "nonfinite": 0}


def paired_difference(a, b, what: str = "paired differences") -> dict:
    """`summarize(a - b)` over the same units; `a` and `b` must have the same shape."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: shapes differ, {a.shape} vs {b.shape}")
    return summarize(a - b, what)
