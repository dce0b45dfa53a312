"""Forecast-quality metrics in pure JAX: errors, direction accuracy, classification scores and ICs.

Every function is `jax.jit`-compiled (its `axis`, `n_classes`, `average` and flags are static
arguments), composes with `vmap`, and takes an optional boolean `mask` (same shape as the inputs,
True = use the entry). Conventions shared by all of them:

* **NaN handling.** An entry where the prediction or the target is NaN is *masked out*, exactly as
  if `mask` were False there; it is never averaged in. Infinities are not masked: they propagate
  to the result, so a corrupted input shows up instead of passing silently.
* **Empty selections.** When no entry is left (or a correlation's inputs are constant), the result
  is NaN, never 0.
* **Shapes.** Predictions, targets and `mask` must have the same shape (class labels: integers);
  anything else is a one-line `ValueError` naming the function and the shapes (checked with `chex`
  before the jitted computation runs), never a silent broadcast. `fn.__wrapped__` is the pure,
  unjitted function.
* **Axes.** `axis=None` (default) pools all entries. An integer `axis` reduces along that axis only
  and returns one value per remaining position: e.g. predictions of shape `(T, N)` for `N` assets
  with `axis=-1` give the cross-sectional IC at each of the `T` dates.

Correlation and classification definitions follow scipy.stats (`pearsonr`, `spearmanr` with average
ranks for ties) and scikit-learn (`precision_recall_fscore_support` with `zero_division=0`);
the tests check them against scipy and hand-worked confusion matrices. Return-based performance
metrics (Sharpe, drawdown, VaR) follow empyrical and live with the backtest.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


# ----------------------------------------------------------------------------------------- helpers


def _as_array(value):
    return value if hasattr(value, "shape") and hasattr(value, "dtype") else np.asarray(value)


def _check_same_shape(fn: str, **arrays) -> None:
    """One-line ValueError unless the given arrays (None skipped) share one shape."""
    named = {k: _as_array(v) for k, v in arrays.items() if v is not None}
    try:
        chex.assert_equal_shape(list(named.values()))
    except AssertionError:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in named.items())
        names = list(named)
        raise ValueError(f"{fn}: {', '.join(names[:-1])} and {names[-1]} must have the same shape; got {shapes}") from None


def _check_labels(fn: str, **labels) -> None:
    """One-line ValueError unless every label array holds integers (class ids, not scores)."""
    for name, value in labels.items():
        value = _as_array(value)
        try:
            chex.assert_type(value, int)
        except AssertionError:
            raise ValueError(f"{fn}: {name} must be integer class ids (e.g. argmax of the logits); got dtype "
                             f"{value.dtype}") from None


def _checked(same_shape: tuple[str, ...], labels: tuple[str, ...] = (), one_dimensional: str | None = None):
    """Put a host-side argument check in front of a jitted metric.

    Raised inside a trace, an error gets JAX's multi-line note about its filtered traceback; checked
    here, before the jitted call, a user's shape mistake is a plain one-line `ValueError`. The
    returned function's `__wrapped__` is the pure, unjitted metric.
    """

    def decorate(jitted):
        raw = jitted.__wrapped__
        signature = inspect.signature(raw)
        name = raw.__name__

        @functools.wraps(raw)
        def checked(*args, **kwargs):
            arguments = signature.bind(*args, **kwargs).arguments
            if one_dimensional is not None:
                value = _as_array(arguments[one_dimensional])
                try:
                    chex.assert_rank(value, 1)
                except AssertionError:
                    raise ValueError(f"{name}: {one_dimensional} must be 1-D (n,); got shape {value.shape}") from None
            _check_same_shape(name, **{k: arguments.get(k) for k in same_shape})
            _check_labels(name, **{k: arguments[k] for k in labels})
            return jitted(*args, **kwargs)

        return checked

    return decorate


def _valid(pred: Array, target: Array, mask: Array | None) -> Array:
    """Boolean array: the entries that count (mask is True and neither input is NaN)."""
    pred, target = jnp.asarray(pred), jnp.asarray(target)
    valid = ~(jnp.isnan(pred) | jnp.isnan(target))
    if mask is not None:
        valid = valid & jnp.asarray(mask, dtype=bool)
    return jnp.broadcast_to(valid, jnp.broadcast_shapes(pred.shape, target.shape))


def _float(x: Array) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _masked_mean(values: Array, valid: Array, axis: int | None) -> Array:
    """sum(values over valid) / count(valid), NaN when the count is 0; invalid entries never enter."""
    total = jnp.sum(jnp.where(valid, values, 0.0), axis=axis)
    count = jnp.sum(valid, axis=axis)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def _along_axis(fn: Callable[[Array, Array, Array], Array], x: Array, y: Array, valid: Array, axis: int | None):
    """Apply a 1-D `fn(x, y, valid)` to all entries (axis=None) or along `axis`, vmapped over the rest."""
    x, y = jnp.broadcast_arrays(x, y)
    if axis is None:
        return fn(x.ravel(), y.ravel(), valid.ravel())
    x, y, valid = (jnp.moveaxis(a, axis, -1) for a in (x, y, valid))
    batch = x.shape[:-1]
    n = x.shape[-1]
    out = jax.vmap(fn)(x.reshape(-1, n), y.reshape(-1, n), valid.reshape(-1, n))
    return out.reshape(batch)


# ------------------------------------------------------------------------------- regression errors


@_checked(("pred", "target", "mask"))
@functools.partial(jax.jit, static_argnames=("axis",))
def mae(pred: Array, target: Array, mask: Array | None = None, axis: int | None = None) -> Array:
    """Mean absolute error.

    `MAE = (1/n) * sum_i |pred_i - target_i|` over the n valid entries (mask True, no NaN).

    Args:
        pred: predictions, any shape.
        target: realised values, the shape of `pred`.
        mask: optional bool array of that shape, True where the entry counts.
        axis: None to pool all entries, or the axis to reduce.

    Returns:
        Scalar (or array over the non-reduced axes); NaN where no entry is valid.

    Raises:
        ValueError: if `pred`, `target` and `mask` differ in shape.
    """
    pred, target = _float(pred), _float(target)
    return _masked_mean(jnp.abs(pred - target), _valid(pred, target, mask), axis)


@_checked(("pred", "target", "mask"))
@functools.partial(jax.jit, static_argnames=("axis",))
def rmse(pred: Array, target: Array, mask: Array | None = None, axis: int | None = None) -> Array:
    """Root mean squared error.

    `RMSE = sqrt((1/n) * sum_i (pred_i - target_i)^2)` over the n valid entries.

    Args, returns and errors as in `mae`.
    """
    pred, target = _float(pred), _float(target)
    return jnp.sqrt(_masked_mean((pred - target) ** 2, _valid(pred, target, mask), axis))


@_checked(("pred", "target", "mask"))
@functools.partial(jax.jit, static_argnames=("axis", "ignore_zero_target"))
def direction_accuracy(
    pred: Array,
    target: Array,
    mask: Array | None = None,
    axis: int | None = None,
    ignore_zero_target: bool = False,
) -> Array:
    """Fraction of entries whose predicted direction matches the realised one.

    `DA = (1/n) * sum_i [sign(pred_i) == sign(target_i)]` with the three-valued
    `sign(x) in {-1, 0, +1}` (`sign(0) = 0`). Zeros are therefore a direction of their own: a zero
    ("flat") prediction is correct only when the realised return is exactly zero, and a nonzero
    prediction is wrong on a zero return. With `ignore_zero_target=True`, entries whose target is
    exactly 0 (no realised direction, e.g. a halted bar) are masked out instead.

    Args:
        pred: predicted returns (or scores whose sign is the call), any shape.
        target: realised returns, same shape.
        mask: optional bool array, True where the entry counts.
        axis: None to pool all entries, or the axis to reduce.
        ignore_zero_target: mask out entries where `target == 0`.

    Returns:
        Accuracy in [0, 1]; NaN where no entry is valid.

    Raises:
        ValueError: if `pred`, `target` and `mask` differ in shape.
    """
    pred, target = _float(pred), _float(target)
    valid = _valid(pred, target, mask)
    if ignore_zero_target:
        valid = valid & (target != 0)
    hits = (jnp.sign(pred) == jnp.sign(target)).astype(pred.dtype)
    return _masked_mean(hits, valid, axis)


# ---------------------------------------------------------------------------------- classification


@_checked(("pred_labels", "true_labels", "mask"), labels=("pred_labels", "true_labels"))
@functools.partial(jax.jit, static_argnames=("n_classes",))
def confusion_matrix(pred_labels: Array, true_labels: Array, n_classes: int, mask: Array | None = None) -> Array:
    """Counts `C[i, j]` = number of valid entries with true class `i` predicted as class `j`.

    Labels are integers in `[0, n_classes)`; an entry with a label outside that range (e.g. -1 for
    "no label") matches no row or column and is not counted, like a masked entry. Prefer an explicit
    `mask` for missing labels.

    Args:
        pred_labels: int array, any shape.
        true_labels: int array, same shape.
        n_classes: number of classes K (static).
        mask: optional bool array, True where the entry counts.

    Returns:
        `(K, K)` int32 array; rows are true classes, columns predictions.

    Raises:
        ValueError: if the labels are not integers, or the labels and `mask` differ in shape.
    """
    pred_labels, true_labels = jnp.ravel(pred_labels), jnp.ravel(true_labels)
    weight = jnp.ones(pred_labels.shape, jnp.int32)
    if mask is not None:
        weight = weight * jnp.ravel(jnp.asarray(mask, dtype=bool)).astype(jnp.int32)
    true_1h = jax.nn.one_hot(true_labels, n_classes, dtype=jnp.int32)  # out of range -> all zeros
    pred_1h = jax.nn.one_hot(pred_labels, n_classes, dtype=jnp.int32)
    return jnp.einsum("ni,nj->ij", true_1h * weight[:, None], pred_1h)


def _safe_div(num: Array, den: Array) -> Array:
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), 0.0)


@_checked(("pred_labels", "true_labels", "mask"), labels=("pred_labels", "true_labels"))
@functools.partial(jax.jit, static_argnames=("n_classes", "average"))
def precision_recall_f1(
    pred_labels: Array,
    true_labels: Array,
    n_classes: int,
    average: str | None = "macro",
    mask: Array | None = None,
) -> tuple[Array, Array, Array]:
    """Precision, recall and F1 of a K-class classifier (e.g. DOWN/FLAT/UP labels).

    From the confusion matrix `C` (rows true, columns predicted), for each class c:
    `TP_c = C[c, c]`, `FP_c = sum_i C[i, c] - TP_c`, `FN_c = sum_j C[c, j] - TP_c`,

        precision_c = TP_c / (TP_c + FP_c)
        recall_c    = TP_c / (TP_c + FN_c)
        F1_c        = 2 * precision_c * recall_c / (precision_c + recall_c)

    A 0/0 ratio is 0 (scikit-learn's `zero_division=0`). Averages over all K classes (a class that
    never occurs still counts, with scores 0, as scikit-learn does with `labels=range(K)`):

    * `"macro"`: unweighted mean of the per-class scores (macro-F1 is the mean of the F1_c, not the
      F1 of the mean precision and recall);
    * `"weighted"`: mean weighted by the support `sum_j C[c, j]` of each true class;
    * `"micro"`: from the pooled counts `sum_c TP_c`, `sum_c FP_c`, `sum_c FN_c`; for single-label
      data all three equal the accuracy;
    * `None`: the per-class `(K,)` arrays.

    Args:
        pred_labels: int array of predicted classes, any shape.
        true_labels: int array of true classes, same shape.
        n_classes: K (static).
        average: "macro", "weighted", "micro" or None.
        mask: optional bool array, True where the entry counts (see `confusion_matrix` for labels
            out of range).

    Returns:
        `(precision, recall, f1)`: scalars, or `(K,)` arrays when `average is None`. With no valid
        entry, every score is 0 except micro averages, which are NaN (no accuracy without data).

    Raises:
        ValueError: an unknown `average`; labels that are not integers or differ in shape from each
            other or from `mask`.
    """
    if average not in ("macro", "weighted", "micro", None):
        raise ValueError(f"average must be 'macro', 'weighted', 'micro' or None, got {average!r}")
    cm = confusion_matrix(pred_labels, true_labels, n_classes, mask).astype(jnp.result_type(float))
    tp = jnp.diag(cm)
    predicted = cm.sum(axis=0)  # TP + FP
    support = cm.sum(axis=1)  # TP + FN
    if average == "micro":
        total = cm.sum()
        p = r = jnp.where(total > 0, tp.sum() / jnp.maximum(total, 1), jnp.nan)
        return p, r, p
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    if average is None:
        return precision, recall, f1
    if average == "macro":
        return precision.mean(), recall.mean(), f1.mean()
    weights = _safe_div(support, support.sum())
    return (precision * weights).sum(), (recall * weights).sum(), (f1 * weights).sum()


# -------------------------------------------------------------------------- information coefficients


def _pearson_1d(x: Array, y: Array, valid: Array) -> Array:
    n = jnp.sum(valid)
    x = jnp.where(valid, x, 0.0)
    y = jnp.where(valid, y, 0.0)
    safe_n = jnp.maximum(n, 1)
    dx = jnp.where(valid, x - jnp.sum(x) / safe_n, 0.0)
    dy = jnp.where(valid, y - jnp.sum(y) / safe_n, 0.0)
    sxy, sxx, syy = jnp.sum(dx * dy), jnp.sum(dx * dx), jnp.sum(dy * dy)
    den = jnp.sqrt(sxx) * jnp.sqrt(syy)
    r = sxy / jnp.where(den > 0, den, 1.0)
    return jnp.where((n >= 2) & (den > 0), jnp.clip(r, -1.0, 1.0), jnp.nan)


@_checked(("x", "valid"), one_dimensional="x")
@jax.jit
def average_ranks(x: Array, valid: Array | None = None) -> Array:
    """1-based ranks of the valid entries of a 1-D array, ties getting the mean of their ranks.

    Matches `scipy.stats.rankdata(x[valid], method="average")` at the valid positions; invalid
    positions get NaN. `O(n log n)` (one sort), jittable, fixed shapes.

    Args:
        x: `(n,)` values.
        valid: optional `(n,)` bool, True where the entry takes part (default: all non-NaN entries).

    Returns:
        `(n,)` float ranks.

    Raises:
        ValueError: if `x` is not 1-D or `valid` is not of its shape.
    """
    x = _float(x)
    n = x.shape[0]
    valid = ~jnp.isnan(x) if valid is None else jnp.asarray(valid, bool) & ~jnp.isnan(x)
    filled = jnp.where(valid, x, 0.0)
    position = jnp.arange(1, n + 1, dtype=x.dtype)
    # One sort: valid entries first, ascending by value; `order` maps sorted -> original positions.
    invalid_s, xs, order = jax.lax.sort((~valid, filled, jnp.arange(n)), num_keys=2)
    differs = (xs[1:] != xs[:-1]) | (invalid_s[1:] != invalid_s[:-1])
    starts = jnp.concatenate([jnp.array([True]), differs])  # first entry of a tie group
    ends = jnp.concatenate([differs, jnp.array([True])])  # last entry of a tie group
    first = jax.lax.cummax(jnp.where(starts, position, 0), axis=0)
    last = jax.lax.cummin(jnp.where(ends, position, n + 1), axis=0, reverse=True)
    ranks = jnp.zeros_like(position).at[order].set((first + last) / 2)
    return jnp.where(valid, ranks, jnp.nan)


def _spearman_1d(x: Array, y: Array, valid: Array) -> Array:
    return _pearson_1d(average_ranks(x, valid), average_ranks(y, valid), valid)


@_checked(("pred", "realised", "mask"))
@functools.partial(jax.jit, static_argnames=("axis",))
def information_coefficient(
    pred: Array, realised: Array, mask: Array | None = None, axis: int | None = None
) -> Array:
    """Information coefficient: Pearson correlation between predictions and realised returns.

    `IC = sum_i (p_i - mean p)(r_i - mean r) / sqrt(sum_i (p_i - mean p)^2 * sum_i (r_i - mean r)^2)`
    over the n valid entries (as `scipy.stats.pearsonr`). NaN when n < 2 or either side is constant.

    Args:
        pred: predicted returns or scores, any shape.
        realised: realised returns, the shape of `pred`.
        mask: optional bool array of that shape, True where the entry counts.
        axis: None to pool all entries; e.g. `axis=-1` on `(T, N)` arrays gives the `(T,)`
            cross-sectional ICs (average them yourself for the mean IC).

    Returns:
        Correlation in [-1, 1] (or NaN), scalar or over the non-reduced axes.

    Raises:
        ValueError: if `pred`, `realised` and `mask` differ in shape.
    """
    pred, realised = _float(pred), _float(realised)
    return _along_axis(_pearson_1d, pred, realised, _valid(pred, realised, mask), axis)


@_checked(("pred", "realised", "mask"))
@functools.partial(jax.jit, static_argnames=("axis",))
def rank_information_coefficient(
    pred: Array, realised: Array, mask: Array | None = None, axis: int | None = None
) -> Array:
    """Rank IC: Spearman correlation between predictions and realised returns.

    The Pearson correlation (`information_coefficient`) of the average ranks of the valid entries:
    tied values share the mean of the ranks they span (as `scipy.stats.spearmanr`). Only valid
    entries are ranked, so masked or NaN entries do not shift the others' ranks.

    Args, returns and errors as in `information_coefficient`.
    """
    pred, realised = _float(pred), _float(realised)
    return _along_axis(_spearman_1d, pred, realised, _valid(pred, realised, mask), axis)
