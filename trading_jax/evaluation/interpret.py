"""Model interpretability: integrated gradients and permutation feature importance (seed 002).

* `integrated_gradients` attributes a scalar-per-sample output (a predicted return, a class logit)
  to every input value; `feature_importance_ig` averages their magnitudes per feature.
* `permutation_importance` measures how much a metric drops when one feature is shuffled across
  samples, for any model or even a non-differentiable predictor.

Attention maps of the transformers are drawn by `trading_jax.evaluation.report.plot_attention`
(`attention_map` reduces a `[batch, L, h, T, T]` stack to one `[T, T]` map).

Both are jitted; the model function is a static argument, so calling again with the *same* function
object (and input shapes) reuses the compiled program. Pass the model's parameters through `args`
(`fn(x, *args)`) rather than closing over them: closed-over arrays are baked into the program as
constants, and a fresh lambda each call compiles again.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["integrated_gradients", "feature_importance_ig", "permutation_importance"]

_BATCH_BYTES = 1 << 28  # default memory for the permuted copies evaluated at once (256 MiB)


# ------------------------------------------------------------------------------------------ validation


def _input(fn: str, x, min_ndim: int = 1) -> Array:
    try:
        a = jnp.asarray(x)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: x must be a numeric array [batch, ...]; got {type(x).__name__}") from None
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    if a.ndim < min_ndim or a.shape[0] < 1:
        raise ValueError(f"{fn}: x must be [batch, ...] with at least {min_ndim} dimensions and a nonempty batch; "
                         f"got shape {a.shape}")
    if not bool(jnp.isfinite(a).all()):
        raise ValueError(f"{fn}: x has {int((~jnp.isfinite(a)).sum())} NaN/inf values; pass finite inputs")
    return a


def _count(fn: str, name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{fn}: {name} must be an integer >= {low}; got {value!r}")
    return int(value)


def _static(f: Callable) -> Callable:
    """`f` itself when hashable (a jit static argument: compiled once per function), else a hashable shell."""
    try:
        hash(f)
        return f
    except TypeError:
        return functools.partial(lambda g, *a: g(*a), f)


# ----------------------------------------------------------------------------- integrated gradients


@functools.partial(jax.jit, static_argnums=(0, 1))
def _integrated_gradients(fn, steps, x, baseline, args):
    delta = x - baseline

    def grad_at(alpha):
        return jax.grad(lambda z: jnp.sum(fn(z, *args)))(baseline + alpha * delta)

    def body(total, k):
        return total + grad_at((k + 0.5) / steps), None

    total, _ = jax.lax.scan(body, jnp.zeros_like(x), jnp.arange(steps, dtype=x.dtype))
    return delta * (total / steps)


def integrated_gradients(fn: Callable[..., Array], x, baseline=None, steps: int = 32, *, args: tuple = ()
                         ) -> Array:
    """Integrated gradients (Sundararajan et al. 2017) of a scalar-per-sample function.

    `IG_i(x) = (x_i - b_i) * int_0^1 d fn(b + a (x - b)) / d x_i da`, computed with the **midpoint
    rule** on `steps` intervals, `a_k = (k + 1/2) / steps`:

    `IG_i ~= (x_i - b_i) / steps * sum_{k=0}^{steps-1} d fn(b + a_k (x - b)) / d x_i`.

    Completeness: `sum_i IG_i(x) = fn(x) - fn(b)` exactly for the integral; the midpoint error is
    `O(1 / steps^2)` for a smooth `fn` (at most `|x - b|^3 max|fn'''| / (24 steps^2)` along the
    path), and zero for a linear one, where `IG = (x - b) * w`. The gradients of one path point are
    those of `sum_batch fn`, which are the per-sample gradients because samples are independent:
    `fn` must not mix samples (no batch statistics; the project's models use LayerNorm).
    One batch of gradients is held at a time (a `lax.scan` over the path points).

    Check the completeness gap `sum_i IG_i - (fn(x) - fn(b))` against `|fn(x) - fn(b)|` before trusting
    the attributions: models that normalise their input (a transformer's LayerNorm) are sharply curved
    near an all-zero baseline and need more steps (a tiny transformer's logit: 0.5% at 64 steps).

    Args:
        fn: `fn(x, *args) -> [batch]`, e.g. `lambda x, p: model.apply(p, x)["prediction"][:, 0]` or
            a class logit; pass the model parameters through `args`.
        x: inputs `[batch, ...]` (e.g. `[batch, T, F]` windows), finite.
        baseline: the reference input, broadcastable to `x`; zeros by default (for normalised
            features, "average market").
        steps: path intervals (>= 1); error falls as `1 / steps^2`.
        args: extra arguments of `fn`, traced (not baked into the compiled program).

    Returns:
        Attributions with the shape of `x`, `[batch, ...]`.

    Raises:
        ValueError: for non-finite inputs, a baseline that does not broadcast to `x`, `steps < 1`, or
            an `fn` whose output is not a float `[batch]`.
    """
    name = "integrated_gradients"
    x = _input(name, x)
    steps = _count(name, "steps", steps, 1)
    if baseline is None:
        b = jnp.zeros_like(x)
    else:
        b = jnp.asarray(baseline, dtype=x.dtype)
        try:
            b = jnp.broadcast_to(b, x.shape)
        except ValueError:
            raise ValueError(f"{name}: baseline {b.shape} must broadcast to x {x.shape}") from None
        if not bool(jnp.isfinite(b).all()):
            raise ValueError(f"{name}: baseline has NaN/inf values; pass a finite baseline")
    args = tuple(args)
    try:
        out = jax.eval_shape(lambda z, a: fn(z, *a), x, args)
    except Exception as err:  # the user's function failed to trace: say where, in one line
        raise ValueError(f"{name}: fn(x, *args) failed on x {x.shape}: {type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}") from None
    if not hasattr(out, "shape") or out.shape != (x.shape[0],) or not jnp.issubdtype(out.dtype, jnp.floating):
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"{name}: fn must return one float per sample, [batch] = [{x.shape[0]}]; got {got} "
                         "(select one output, e.g. out[:, 0] or a class logit)")
    return _integrated_gradients(_static(fn), steps, x, b, args)


def feature_importance_ig(fn: Callable[..., Array], x, baseline=None, steps: int = 32, *, args: tuple = (),
                          feature_axis: int = -1) -> Array:
    """Mean absolute integrated gradient per feature.

    `I_f = mean_{b, t} |IG(x)[b, t, f]|` over the batch and time (every axis but `feature_axis`) of
    `integrated_gradients(fn, x, baseline, steps, args=args)`; in the units of `fn`'s output.

    Args:
        fn, x, baseline, steps, args: as in `integrated_gradients`; `x` is e.g. `[batch, T, F]`.
        feature_axis: the feature axis of `x` (default the last); not the batch axis 0.

    Returns:
        `[F]` non-negative importances.
    """
    x = _input("feature_importance_ig", x, 2)
    axis = _feature_axis("feature_importance_ig", feature_axis, x.ndim)
    attributions = integrated_gradients(fn, x, baseline, steps, args=args)
    return jnp.mean(jnp.abs(attributions), axis=tuple(i for i in range(x.ndim) if i != axis))


def _feature_axis(fn: str, feature_axis, ndim: int) -> int:
    if isinstance(feature_axis, bool) or not isinstance(feature_axis, (int, np.integer)) \
            or not -ndim <= feature_axis < ndim or feature_axis % ndim == 0:
        raise ValueError(f"{fn}: feature_axis must index a non-batch axis of x (1..{ndim - 1} or negative); "
                         f"got {feature_axis!r}")
    return int(feature_axis) % ndim


# --------------------------------------------------------------------------- permutation importance


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _permutation_importance(metric_fn, n_repeats, axis, batch_size, x, y, key, args):
    n, n_features = x.shape[0], x.shape[axis]
    base = metric_fn(x, y, *args)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, n_repeats))  # [R, n]
    shape = [1] * x.ndim
    shape[axis] = n_features
    feature_ids = jnp.arange(n_features).reshape(shape)

    def score(pair):
        f, r = pair
        shuffled = jnp.take(x, perms[r], axis=0)
        return metric_fn(jnp.where(feature_ids == f, shuffled, x), y, *args)

    features = jnp.repeat(jnp.arange(n_features), n_repeats)
    repeats = jnp.tile(jnp.arange(n_repeats), n_features)
    scores = jax.lax.map(score, (features, repeats), batch_size=batch_size)
    drops = (base - scores).reshape(n_features, n_repeats)
    mean = jnp.mean(drops, axis=1)
    std = jnp.std(drops, axis=1, ddof=1) if n_repeats > 1 else jnp.full_like(mean, jnp.nan)
    return mean, std


def permutation_importance(metric_fn: Callable[..., Array], x, y, key, n_repeats: int = 5, feature_axis: int = -1,
                           *, args: tuple = (), batch_size: int | None = None) -> tuple[Array, Array]:
    """Permutation feature importance: the drop in a metric when one feature is shuffled across samples.

    For feature f and repeat r, a permutation `pi_r` of the batch replaces feature f of every sample
    i by that of sample `pi_r(i)`, the **whole window's column** `x[pi_r(i), :, f]` (for `[batch, T,
    F]` inputs): the feature keeps its own time structure within a window but loses its link to the
    label and to the other features of the sample. Then

    `drop_{f,r} = metric(x, y) - metric(x with feature f permuted by pi_r, y)`,
    `mean_f = mean_r drop_{f,r}`, `std_f = std_r(drop_{f,r}, ddof=1)` (NaN when `n_repeats == 1`).

    `metric` is higher-is-better (direction accuracy, `-MSE`, a Sharpe ratio), so an important feature
    has a large positive drop, one the model ignores exactly 0 and a harmful one a negative drop. The
    R permutations are drawn from `key` (split into R keys) and shared by all features (common random
    numbers, as scikit-learn's `permutation_importance`), so feature differences are not permutation
    noise. Same key, same result. The `F * R` permuted copies are evaluated `batch_size` at a time
    (vmapped inside a `lax.map`).

    Args:
        metric_fn: `metric_fn(x, y, *args) -> scalar`, jittable, e.g. the accuracy of a model's
            predictions; model parameters go in `args`.
        x: inputs `[batch, ...]` (e.g. `[batch, T, F]`), finite, batch >= 2.
        y: targets with leading dimension `batch` (passed through unchanged).
        key: a JAX PRNG key.
        n_repeats: permutations per feature (>= 1).
        feature_axis: the feature axis of `x` (default the last); not the batch axis 0.
        args: extra (traced) arguments of `metric_fn`.
        batch_size: permuted copies per vmapped call; default as many as fit in 256 MiB of copies of `x`.

    Returns:
        `(mean [F], std [F])` metric drops.

    Raises:
        ValueError: for bad shapes, non-finite `x`, a bad key, or a `metric_fn` that does not return a
            float scalar.
    """
    name = "permutation_importance"
    x = _input(name, x, 2)
    axis = _feature_axis(name, feature_axis, x.ndim)
    n_repeats = _count(name, "n_repeats", n_repeats, 1)
    if x.shape[0] < 2:
        raise ValueError(f"{name}: x needs a batch of at least 2 samples to permute; got shape {x.shape}")
    y = jnp.asarray(y)
    if y.ndim < 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{name}: y must have the batch size of x ({x.shape[0]}) as its first dimension; "
                         f"got shape {y.shape}")
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()) and \
            not (key.dtype == jnp.uint32 and key.shape == (2,)):
        raise ValueError(f"{name}: key must be one JAX PRNG key (jax.random.key(seed) or PRNGKey(seed)); "
                         f"got dtype {key.dtype} shape {key.shape}")
    args = tuple(args)
    try:
        out = jax.eval_shape(lambda a, b, c: metric_fn(a, b, *c), x, y, args)
    except Exception as err:
        raise ValueError(f"{name}: metric_fn(x, y, *args) failed on x {x.shape}, y {y.shape}: "
                         f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if not hasattr(out, "shape") or out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"{name}: metric_fn must return one float scalar; got {getattr(out, 'shape', out)!r}")
    total = x.shape[axis] * n_repeats
    if batch_size is None:
        batch_size = max(1, min(total, _BATCH_BYTES // max(1, x.size * x.dtype.itemsize)))
    else:
        batch_size = min(_count(name, "batch_size", batch_size, 1), total)
    return _permutation_importance(_static(metric_fn), n_repeats, axis, batch_size, x, y, key, args)

