"""Model monitoring: rolling forecast quality of a live model and degradation alerts (seed 002).

    metrics = {"accuracy": rolling_direction_accuracy(pred, outcome, window=100, horizon=4),
               "ic": rolling_ic(pred, outcome, window=100, horizon=4)}
    alerts = degradation_alerts(metrics, {"accuracy": 0.55, "ic": 0.0}, times=bar_times)
    # or all at once: report = monitor(pred, outcome, window=100, horizon=4, times=bar_times)

**Timing (causal).** The inputs are aligned on samples, one per bar: `pred[t]` is the forecast made at
bar t and `outcome[t]` the realised value it forecasts, which reads bars `t+1 .. t+horizon` and so is
known once bar `t + horizon` has closed. The metric reported at bar t uses the last `window` samples
whose outcome is known after bar t closes,

    s in [t - horizon - window + 1, t - horizon],

so no value at row t depends on `outcome[s]` for `s + horizon > t` (nor on `pred[s]` for `s > t`).
Samples with a NaN prediction or outcome (not predicted yet, missing bar) are left out of their
windows; a row is NaN until its window holds `min_periods` valid samples (default: `window`, a full
window, so early noise raises no alarm). The same convention reads "known at the start of bar T"
as `s + horizon < T` (`trading_jax.training.online`).

**Metrics** (masked over a window's valid samples):

* direction accuracy `(1/n) sum_s [sign(pred_s) == sign(outcome_s)]` (the three-valued sign of
  `trading_jax.evaluation.metrics.direction_accuracy`: a flat call is right only on a zero outcome);
* IC, the Pearson correlation of predictions and outcomes (`metrics.information_coefficient`; NaN
  when a side is constant or fewer than 2 samples);
* for classifiers, the expected calibration error and the Brier score of the predicted class
  probabilities (`expected_calibration_error`, `brier_score`);
* for interval forecasts, the coverage of a predicted band `[lower, upper]` (`band_coverage`).

The rolling functions gather each row's window (`[T, window]` intermediates: memory `O(T window)`);
`monitor_init` / `monitor_update` / `monitor_metrics` keep the same window online as a ring buffer
of resolved (prediction, outcome) pairs (an `(init, update)` pair, DESIGN.md principle 3).

**Alerts.** `degradation_alerts` emits one warning (through `trading_jax.logging`) and one record
each time a metric *crosses* below its threshold: at the first row where it is below after a row where
it was at or above (or at its first valid row, when it starts below). It fires again only after the
metric has recovered (a ceiling, for ECE or Brier, works the other way round). Records are dicts
`{"time", "metric", "value", "threshold", "direction"}` for results tables.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.logging import get_logger

Array = jax.Array

__all__ = [
    "MonitorState",
    "monitor_init",
    "monitor_update",
    "monitor_metrics",
    "rolling_direction_accuracy",
    "rolling_ic",
    "rolling_calibration",
    "rolling_band_coverage",
    "expected_calibration_error",
    "brier_score",
    "band_coverage",
    "degradation_alerts",
    "monitor",
]

log = get_logger(__name__)


# ----------------------------------------------------------------------------- masked 1-D metrics


def _valid(*arrays) -> Array:
    ok = None
    for a in arrays:
        a = jnp.asarray(a)
        finite = jnp.isfinite(a) if a.ndim <= 1 else jnp.all(jnp.isfinite(a), axis=tuple(range(1, a.ndim)))
        ok = finite if ok is None else ok & finite
    return ok


def _accuracy(pred, outcome, valid, min_periods: int):
    """Direction accuracy over the valid entries of `[W]` arrays (NaN below `min_periods` valid ones)."""
    n = jnp.sum(valid)
    hits = jnp.sum(jnp.where(valid, jnp.sign(pred) == jnp.sign(outcome), False))
    return jnp.where(n >= min_periods, hits / jnp.maximum(n, 1), jnp.nan)


def _pearson(x, y, valid, min_periods: int):
    """Pearson correlation over the valid entries of `[W]` arrays, from centred deviations."""
    n = jnp.sum(valid)
    w = valid.astype(jnp.float32)
    safe_n = jnp.maximum(n, 1).astype(jnp.float32)
    x = jnp.where(valid, x, 0.0)
    y = jnp.where(valid, y, 0.0)
    dx = (x - jnp.sum(w * x) / safe_n) * w
    dy = (y - jnp.sum(w * y) / safe_n) * w
    sxx, syy, sxy = jnp.sum(dx * dx), jnp.sum(dy * dy), jnp.sum(dx * dy)
    ok = (n >= jnp.maximum(min_periods, 2)) & (sxx > 0) & (syy > 0)
    return jnp.where(ok, sxy / jnp.sqrt(jnp.where(ok, sxx * syy, 1.0)), jnp.nan)


def _ece(probs, labels, valid, n_bins: int, min_periods: int):
    n = jnp.sum(valid)
    confidence = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(jnp.float32)
    b = jnp.clip(jnp.floor(confidence * n_bins).astype(jnp.int32), 0, n_bins - 1)
    w = valid.astype(jnp.float32)
    one_hot = jax.nn.one_hot(b, n_bins, dtype=jnp.float32) * w[:, None]  # [W, bins]
    # per bin: |sum of correct - sum of confidence| = n_b |acc_b - conf_b|; ECE = sum_b n_b/n |acc_b - conf_b|
    gap = jnp.abs(one_hot.T @ jnp.where(valid, correct, 0.0) - one_hot.T @ jnp.where(valid, confidence, 0.0))
    return jnp.where(n >= min_periods, jnp.sum(gap) / jnp.maximum(n, 1), jnp.nan)


def _brier(probs, labels, valid, min_periods: int):
    n = jnp.sum(valid)
    target = jax.nn.one_hot(labels, probs.shape[-1], dtype=jnp.float32)
    per_sample = jnp.sum((jnp.where(valid[:, None], probs, 0.0) - jnp.where(valid[:, None], target, 0.0)) ** 2, -1)
    return jnp.where(n >= min_periods, jnp.sum(per_sample) / jnp.maximum(n, 1), jnp.nan)


def _coverage(lower, upper, outcome, valid, min_periods: int):
    n = jnp.sum(valid)
    inside = jnp.sum(jnp.where(valid, (outcome >= lower) & (outcome <= upper), False))
    return jnp.where(n >= min_periods, inside / jnp.maximum(n, 1), jnp.nan)


@functools.partial(jax.jit, static_argnames=("n_bins",))
def expected_calibration_error(probs, labels, mask=None, n_bins: int = 10) -> Array:
    """Expected calibration error of class probabilities (Guo et al. 2017), with equal-width bins.

    Sample i's confidence is `c_i = max_k p_ik` and it is correct when `argmax_k p_ik == y_i`; with
    `B_b` the samples whose confidence falls in bin b (`[b/M, (b+1)/M)`, the last bin closed),

        ECE = sum_b (|B_b| / n) |acc(B_b) - conf(B_b)|,

    `acc` and `conf` the mean correctness and confidence in the bin.

    Args:
        probs: `[n, K]` class probabilities (a binary classifier: `[n, 2]`).
        labels: `[n]` int true classes.
        mask: optional `[n]` bool, True where the sample counts (NaN probabilities never count).
        n_bins: M, the number of confidence bins.

    Returns:
        float32 scalar in [0, 1]; NaN without a valid sample.
    """
    probs = jnp.asarray(probs, jnp.float32)
    valid = _valid(probs) if mask is None else _valid(probs) & jnp.asarray(mask, bool)
    return _ece(probs, jnp.asarray(labels, jnp.int32), valid, n_bins, 1)


@jax.jit
def brier_score(probs, labels, mask=None) -> Array:
    """Multi-class Brier score `(1/n) sum_i sum_k (p_ik - [y_i == k])^2` (0 is perfect; a binary
    classifier's `[n, 2]` probabilities give twice the binary Brier score).

    Args, returns: as `expected_calibration_error`.
    """
    probs = jnp.asarray(probs, jnp.float32)
    valid = _valid(probs) if mask is None else _valid(probs) & jnp.asarray(mask, bool)
    return _brier(probs, jnp.asarray(labels, jnp.int32), valid, 1)


@jax.jit
def band_coverage(lower, upper, outcome, mask=None) -> Array:
    """Fraction of outcomes inside their predicted band, `(1/n) sum_i [lower_i <= outcome_i <= upper_i]`
    (`[n]` arrays; NaN entries and masked-out ones do not count). Compare with the band's nominal level."""
    lower, upper, outcome = (jnp.asarray(a, jnp.float32) for a in (lower, upper, outcome))
    valid = _valid(lower, upper, outcome)
    valid = valid if mask is None else valid & jnp.asarray(mask, bool)
    return _coverage(lower, upper, outcome, valid, 1)


# ------------------------------------------------------------------------------- rolling windows


def _window_index(n: int, window: int, horizon: int):
    """`[n, window]` sample indices of each row's window (module docstring) and their in-range mask."""
    rows = jnp.arange(n)[:, None]
    idx = rows - horizon - window + 1 + jnp.arange(window)[None, :]
    return jnp.clip(idx, 0, max(n - 1, 0)), idx >= 0


def _check(window, horizon, min_periods):
    if isinstance(window, bool) or int(window) != window or int(window) < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    if int(horizon) != horizon or int(horizon) < 0:
        raise ValueError(f"horizon must be an integer >= 0, got {horizon!r}")
    min_periods = int(window) if min_periods is None else int(min_periods)
    if not 1 <= min_periods <= int(window):
        raise ValueError(f"min_periods must be in [1, window]; got {min_periods}")
    return int(window), int(horizon), min_periods


@functools.partial(jax.jit, static_argnames=("window", "horizon", "min_periods", "kind"))
def _rolling_pair(pred, outcome, window: int, horizon: int, min_periods: int, kind: str):
    idx, inside = _window_index(pred.shape[0], window, horizon)
    p, o = pred[idx], outcome[idx]
    valid = inside & jnp.isfinite(p) & jnp.isfinite(o)
    fn = _accuracy if kind == "accuracy" else _pearson
    return jax.vmap(lambda a, b, v: fn(a, b, v, min_periods))(p, o, valid)


def _pair(pred, outcome, name):
    pred = jnp.asarray(pred, jnp.float32)
    outcome = jnp.asarray(outcome, jnp.float32)
    if pred.ndim != 1 or pred.shape != outcome.shape:
        raise ValueError(f"{name}: pred and outcome must be [T] arrays of one length; got {pred.shape}, {outcome.shape}")
    return pred, outcome


def rolling_direction_accuracy(pred, outcome, window: int, horizon: int = 0, min_periods: int | None = None) -> Array:
    """Rolling direction accuracy `[T]`: row t over the samples `[t - horizon - window + 1, t - horizon]`
    whose outcomes are known after bar t (module docstring).

    Args:
        pred: `[T]` predictions (returns or scores: their sign is the call); NaN = no prediction.
        outcome: `[T]` realised values (`outcome[s]` known after bar `s + horizon`).
        window: samples per window.
        horizon: bars until an outcome is known (0: known at the same bar).
        min_periods: valid samples a row needs (default `window`), else NaN.
    """
    window, horizon, min_periods = _check(window, horizon, min_periods)
    pred, outcome = _pair(pred, outcome, "rolling_direction_accuracy")
    return _rolling_pair(pred, outcome, window, horizon, min_periods, "accuracy")


def rolling_ic(pred, outcome, window: int, horizon: int = 0, min_periods: int | None = None) -> Array:
    """Rolling information coefficient (Pearson of predictions and outcomes) `[T]`; arguments as
    `rolling_direction_accuracy` (NaN rows also where either side is constant over the window)."""
    window, horizon, min_periods = _check(window, horizon, min_periods)
    pred, outcome = _pair(pred, outcome, "rolling_ic")
    return _rolling_pair(pred, outcome, window, horizon, min_periods, "ic")


@functools.partial(jax.jit, static_argnames=("window", "horizon", "min_periods", "n_bins"))
def _rolling_calibration(probs, labels, valid, window, horizon, min_periods, n_bins):
    idx, inside = _window_index(probs.shape[0], window, horizon)
    p, y, v = probs[idx], labels[idx], valid[idx] & inside

    def one(pp, yy, vv):
        return _ece(pp, yy, vv, n_bins, min_periods), _brier(pp, yy, vv, min_periods)

    ece, brier = jax.vmap(one)(p, y, v)
    return {"ece": ece, "brier": brier}


def rolling_calibration(probs, labels, window: int, horizon: int = 0, n_bins: int = 10,
                        min_periods: int | None = None, label_mask=None) -> dict[str, Array]:
    """Rolling calibration of a classifier: `{"ece": [T], "brier": [T]}` over the causal windows of
    `rolling_direction_accuracy`.

    Args:
        probs: `[T, K]` predicted class probabilities (e.g. `softmax(logits)`); NaN rows = no prediction.
        labels: `[T]` int realised classes (known after bar `t + horizon`).
        window, horizon, min_periods: as `rolling_direction_accuracy`.
        n_bins: confidence bins of the ECE.
        label_mask: optional `[T]` bool, False where the label is missing.
    """
    window, horizon, min_periods = _check(window, horizon, min_periods)
    probs = jnp.asarray(probs, jnp.float32)
    labels = jnp.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"rolling_calibration: probs must be [T, K] and labels [T]; got {probs.shape}, {labels.shape}")
    valid = _valid(probs)
    if label_mask is not None:
        valid = valid & jnp.asarray(label_mask, bool)
    return _rolling_calibration(probs, labels.astype(jnp.int32), valid, window, horizon, min_periods, int(n_bins))


@functools.partial(jax.jit, static_argnames=("window", "horizon", "min_periods"))
def _rolling_coverage(lower, upper, outcome, window, horizon, min_periods):
    idx, inside = _window_index(outcome.shape[0], window, horizon)
    lo, hi, o = lower[idx], upper[idx], outcome[idx]
    valid = inside & jnp.isfinite(lo) & jnp.isfinite(hi) & jnp.isfinite(o)
    return jax.vmap(lambda a, b, c, v: _coverage(a, b, c, v, min_periods))(lo, hi, o, valid)


def rolling_band_coverage(lower, upper, outcome, window: int, horizon: int = 0,
                          min_periods: int | None = None) -> Array:
    """Rolling fraction `[T]` of outcomes inside their predicted band `[lower, upper]` (`[T]` each);
    windows as `rolling_direction_accuracy`."""
    window, horizon, min_periods = _check(window, horizon, min_periods)
    lower, upper, outcome = (jnp.asarray(a, jnp.float32) for a in (lower, upper, outcome))
    return _rolling_coverage(lower, upper, outcome, window, horizon, min_periods)


# ----------------------------------------------------------------------------- online (init, update)


class MonitorState(NamedTuple):
    """A ring buffer of the last `window` resolved (prediction, outcome) pairs.

    Attributes:
        pred, outcome: `[window]` float32.
        valid: `[window]` bool, filled slots with finite values.
        position: int32 scalar, the slot the next pair goes to.
        seen: int32 scalar, pairs received.
    """

    pred: Array
    outcome: Array
    valid: Array
    position: Array
    seen: Array


def monitor_init(window: int) -> MonitorState:
    """An empty `MonitorState` of `window` slots."""
    window, _, _ = _check(window, 0, None)
    z = jnp.zeros((window,), jnp.float32)
    return MonitorState(z, z, jnp.zeros((window,), bool), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def monitor_update(state: MonitorState, pred, outcome) -> MonitorState:
    """Add one resolved pair (call it once the outcome is known; NaN values occupy a slot but never count)."""
    pred = jnp.asarray(pred, jnp.float32)
    outcome = jnp.asarray(outcome, jnp.float32)
    i = state.position
    return MonitorState(state.pred.at[i].set(pred), state.outcome.at[i].set(outcome),
                        state.valid.at[i].set(jnp.isfinite(pred) & jnp.isfinite(outcome)),
                        (i + 1) % state.pred.shape[0], state.seen + 1)


def monitor_metrics(state: MonitorState, min_periods: int | None = None) -> dict[str, Array]:
    """`{"accuracy", "ic"}` over the buffered pairs (NaN below `min_periods` valid pairs, default the
    window): equal to the rolling functions' row once that row's outcomes are the buffered ones."""
    window = state.pred.shape[0]
    _, _, min_periods = _check(window, 0, min_periods)
    return {"accuracy": _accuracy(state.pred, state.outcome, state.valid, min_periods),
            "ic": _pearson(state.pred, state.outcome, state.valid, min_periods)}


# ------------------------------------------------------------------------------------------ alerts


def degradation_alerts(metrics: Mapping[str, Any], thresholds: Mapping[str, float | None], times=None,
                       ceilings: Mapping[str, float | None] | None = None, logger=None) -> list[dict[str, Any]]:
    """Warn (and record) each time a rolling metric crosses below its threshold (module docstring).

    Args:
        metrics: name -> `[T]` rolling values (NaN rows: not enough data, skipped).
        thresholds: name -> floor (seed 002: accuracy 0.55): alert when the metric falls below it;
            names missing or None are not watched.
        times: optional `[T]` labels of the rows (bar indices, timestamps); default the row index.
        ceilings: name -> ceiling for metrics where higher is worse (ECE, Brier): alert when the metric
            rises above it.
        logger: where the warnings go (default `trading_jax.logging.get_logger(__name__)`).

    Returns:
        A list of `{"time", "metric", "value", "threshold", "direction"}` dicts ("below" a floor or
        "above" a ceiling), in time order (then in the order the thresholds are given).

    Raises:
        KeyError: a threshold for a metric that is not given.
        ValueError: `times` of another length than the metrics.
    """
    logger = log if logger is None else logger
    watched = [(k, float(v), "below") for k, v in thresholds.items() if v is not None]
    watched += [(k, float(v), "above") for k, v in (ceilings or {}).items() if v is not None]
    unknown = sorted({k for k, _, _ in watched} - set(metrics))
    if unknown:
        raise KeyError(f"thresholds for unknown metric(s) {unknown}; metrics: {sorted(metrics)}")
    events = []
    for order, (name, threshold, direction) in enumerate(watched):
        values = np.asarray(jax.device_get(metrics[name]), np.float64).reshape(-1)
        if times is not None and np.asarray(times).reshape(-1).shape[0] != values.shape[0]:
            raise ValueError(f"times has {np.asarray(times).size} rows, metric {name!r} has {values.shape[0]}")
        was_ok: bool | None = None  # unknown before the first valid row
        for t in np.flatnonzero(np.isfinite(values)):
            bad = values[t] < threshold if direction == "below" else values[t] > threshold
            if bad and was_ok in (None, True):
                events.append((int(t), order, name, float(values[t]), threshold, direction))
            was_ok = not bad
    events.sort()
    labels = None if times is None else np.asarray(times).reshape(-1)
    alerts = []
    for t, _, name, value, threshold, direction in events:
        time = t if labels is None else _plain(labels[t])
        verb = "fell below" if direction == "below" else "rose above"
        logger.warning("model degradation at time %s: rolling %s %.4f %s the threshold %.4f",
                       time, name, value, verb, threshold)
        alerts.append({"time": time, "metric": name, "value": value, "threshold": threshold, "direction": direction})
    return alerts


def _plain(value):
    """A NumPy scalar as a plain Python value (for tables and JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def monitor(pred, outcome, window: int, horizon: int = 0, *, times=None, accuracy_threshold: float | None = 0.55,
            ic_threshold: float | None = None, probs=None, labels=None, n_bins: int = 10,
            ece_threshold: float | None = None, min_periods: int | None = None) -> dict[str, Any]:
    """Rolling accuracy and IC (and calibration, given `probs` and `labels`) with degradation alerts.

    Args:
        pred, outcome, window, horizon, min_periods: as `rolling_direction_accuracy`.
        times: row labels for the alerts.
        accuracy_threshold: alert when the rolling accuracy falls below it (seed 002: 0.55; None: off).
        ic_threshold: alert when the rolling IC falls below it (None: off).
        probs, labels, n_bins: a classifier's `[T, K]` probabilities and `[T]` classes: adds "ece" and
            "brier" (`rolling_calibration`).
        ece_threshold: alert when the rolling ECE rises above it (None: off).

    Returns:
        dict: "accuracy", "ic" (and "ece", "brier") rolling `[T]` NumPy arrays, and "alerts": the
        records of `degradation_alerts`.
    """
    out: dict[str, Any] = {
        "accuracy": np.asarray(rolling_direction_accuracy(pred, outcome, window, horizon, min_periods)),
        "ic": np.asarray(rolling_ic(pred, outcome, window, horizon, min_periods)),
    }
    if probs is not None:
        if labels is None:
            raise ValueError("monitor: probs given without labels")
        cal = rolling_calibration(probs, labels, window, horizon, n_bins, min_periods)
        out.update({k: np.asarray(v) for k, v in cal.items()})
    ceilings = {"ece": ece_threshold} if "ece" in out else {}
    out["alerts"] = degradation_alerts(out, {"accuracy": accuracy_threshold, "ic": ic_threshold}, times, ceilings)
    return out
