"""Combination rules for ensemble members' predictions: pure JAX functions (seed 002, "Ensemble Model").

Shapes: M members, n samples (or T time steps), C classes. Members' regression predictions are `[M, n]`
(or `[M, n, k]`), class probabilities `[M, n, C]` (`trading_jax.ensemble.predict_members`).

- `weighted_average`: static weights (or per-sample weights `[n, M]`), p = sum_i w_i p_i / sum_i w_i.
- `rolling_performance` / `causal_weights`: weights from each member's recent outcomes (a rolling window or
  an exponential decay; an `(init, update)` pair over `RollingState`), w = softmax(-loss / T) or w ~ score,
  causal: the weight at time t uses outcomes known before t only (label horizon `delay`).
- `confidence_weighted`: seed 002's pred = sum_i p_i c_i w_i / sum_i c_i w_i, conf = mean_i c_i w_i, with
  the classifier's confidence c_i = max_c p_ic (refused for regression members without a trained confidence).
- `confidence_mask`, `agreement_filter`, `abstain`: act only when the ensemble is confident enough and at
  least a fraction `agreement` (default 0.7) of the members agree on the direction; flat otherwise.
- `prediction_spread`, `classification_uncertainty`: ensemble uncertainty from the members' spread (std;
  predictive entropy = expected entropy + mutual information).

Weights are checked (non-negative, finite, not all zero, one per member) on the host whenever they are
concrete; under `jit` only their shapes can be checked.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_weights", "normalize_weights", "weighted_average",
    "RollingState", "Rolling", "rolling_performance", "rolling_mean", "performance_weights", "causal_weights",
    "member_outcomes",
    "member_confidence", "confidence_weighted",
    "member_directions", "Agreement", "agreement_filter", "confidence_mask", "abstain",
    "prediction_spread", "Uncertainty", "classification_uncertainty",
]


# ----------------------------------------------------------------------------------- static weights


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_weights(weights, members: int, name: str = "weights") -> jax.Array:
    """`weights` as float32 `[M]` (or `[n, M]`), checked: one per member, and when concrete non-negative,
    finite and with a positive sum (per row).

    Raises:
        ValueError: a wrong shape (e.g. 3 weights for 4 members), a negative / NaN / inf weight, or all zero.
    """
    w = jnp.asarray(weights, jnp.float32)
    if w.ndim not in (1, 2) or w.shape[-1] != int(members):
        raise ValueError(f"{name} must hold one weight per member ({members}), shape [M] or [n, M]; got shape "
                         f"{tuple(w.shape)}")
    if _concrete(weights) and _concrete(w):
        a = np.asarray(w)
        if not np.isfinite(a).all():
            raise ValueError(f"{name} must be finite, got {a}")
        if (a < 0).any():
            raise ValueError(f"{name} must be non-negative, got {a} (a member to ignore gets weight 0)")
        if (a.sum(-1) <= 0).any():
            raise ValueError(f"{name} must not all be zero, got {a}")
    return w


def normalize_weights(weights, members: int) -> jax.Array:
    """`w_i / sum_j w_j` (per row for `[n, M]`), after `check_weights`; None gives uniform `1 / M`."""
    if weights is None:
        return jnp.full((int(members),), 1.0 / int(members), jnp.float32)
    w = check_weights(weights, members)
    return w / jnp.sum(w, axis=-1, keepdims=True)


def _member_weights(weights, predictions) -> jax.Array:
    """Normalised weights broadcastable against `predictions [M, n, ...]`: `[M, 1, ...]` or `[M, n, 1, ...]`."""
    p = jnp.asarray(predictions)
    m = p.shape[0]
    w = normalize_weights(weights, m)
    if w.ndim == 1:
        return w.reshape((m,) + (1,) * (p.ndim - 1))
    if p.ndim < 2 or w.shape[0] != p.shape[1]:
        raise ValueError(f"per-sample weights [n, M] = {tuple(w.shape)} do not match predictions {tuple(p.shape)}")
    return w.T.reshape(w.T.shape + (1,) * (p.ndim - 2))


def weighted_average(predictions, weights=None) -> jax.Array:
    """The weighted mean of the members' predictions over the member axis.

        p(x) = sum_i w_i p_i(x) / sum_i w_i

    For class probabilities `[M, n, C]` the result is again a distribution (a convex combination).

    Args:
        predictions: `[M, n]`, `[M, n, k]` regression predictions or `[M, n, C]` probabilities.
        weights: None (uniform), static `[M]`, or per-sample `[n, M]` (e.g. `causal_weights`); non-negative.

    Returns:
        `predictions.shape[1:]`.
    """
    p = jnp.asarray(predictions, jnp.float32)
    return jnp.sum(_member_weights(weights, p) * p, axis=0)


# -------------------------------------------------------------------------- weights from performance


class RollingState(NamedTuple):
    """Each member's recent outcomes (losses or scores).

    Attributes:
        buffer: `[W, M]` the last W updates (NaN: none or missing) for a rolling window; `[0, M]` for decay.
        pos: int32, the buffer slot the next update writes.
        sums: `[M]` decayed sums sum_s lambda^(t-s) x_s of the finite outcomes (decay mode).
        counts: `[M]` decayed counts sum_s lambda^(t-s) of the finite outcomes (decay mode).
    """

    buffer: jax.Array
    pos: jax.Array
    sums: jax.Array
    counts: jax.Array


class Rolling(NamedTuple):
    """An `(init, update)` pair: `init() -> RollingState`, `update(state, outcomes [M]) -> RollingState`."""

    init: Callable[[], RollingState]
    update: Callable[[RollingState, jax.Array], RollingState]


def rolling_performance(members: int, *, window: int | None = None, decay: float | None = None) -> Rolling:
    """Each member's mean recent outcome, over a rolling window or with an exponential decay.

    Window W: the mean of the finite outcomes among the last W updates. Decay lambda in (0, 1):

        mean_t = sum_s lambda^(t-s) x_s / sum_s lambda^(t-s)      (over the finite outcomes x_s, s <= t)

    Non-finite outcomes (NaN: not known yet, member missing) are ignored, per member. Read the mean
    with `rolling_mean(state)` and turn it into weights with `performance_weights`.

    Raises:
        ValueError: neither or both of window / decay, W < 1, lambda outside (0, 1).
    """
    if (window is None) == (decay is None):
        raise ValueError("give exactly one of window (a rolling window of updates) or decay (exponential)")
    m = int(members)
    if window is not None and int(window) < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if decay is not None and not 0.0 < float(decay) < 1.0:
        raise ValueError(f"decay must be in (0, 1), got {decay}")
    w = 0 if window is None else int(window)

    def init() -> RollingState:
        return RollingState(jnp.full((w, m), jnp.nan, jnp.float32), jnp.zeros((), jnp.int32),
                            jnp.zeros((m,), jnp.float32), jnp.zeros((m,), jnp.float32))

    def update(state: RollingState, outcomes) -> RollingState:
        x = jnp.asarray(outcomes, jnp.float32).reshape(m)
        if w:
            return state._replace(buffer=state.buffer.at[state.pos].set(x), pos=(state.pos + 1) % w)
        finite = jnp.isfinite(x)
        lam = jnp.float32(decay)
        return state._replace(sums=lam * state.sums + jnp.where(finite, x, 0.0),
                              counts=lam * state.counts + finite.astype(jnp.float32))

    return Rolling(init, update)


def rolling_mean(state: RollingState) -> jax.Array:
    """`[M]` each member's mean recent outcome (NaN for a member with no finite outcome yet)."""
    if state.buffer.shape[0] > 0:
        finite = jnp.isfinite(state.buffer)
        count = finite.sum(0)
        total = jnp.where(finite, state.buffer, 0.0).sum(0)
    else:
        count, total = state.counts, state.sums
    return jnp.where(count > 0, total / jnp.where(count > 0, count, 1), jnp.nan)


def performance_weights(mean_outcomes, rule: str = "softmax", temperature: float = 1.0) -> jax.Array:
    """Normalised weights `[..., M]` from each member's mean recent outcome.

    - rule "softmax" (outcomes are losses, lower is better): w_i = exp(-L_i / T) / sum_j exp(-L_j / T);
    - rule "proportional" (outcomes are non-negative scores, e.g. accuracy): w_i = s_i / sum_j s_j
      (uniform when every score is 0).

    A member without an outcome yet (NaN) counts as the mean of those that have one; with none at all the
    weights are uniform 1 / M.
    """
    x = jnp.asarray(mean_outcomes, jnp.float32)
    known = jnp.isfinite(x)
    any_known = known.any(-1, keepdims=True)
    fill = jnp.where(known, x, 0.0).sum(-1, keepdims=True) / jnp.maximum(known.sum(-1, keepdims=True), 1)
    x = jnp.where(known, x, fill)
    if rule == "softmax":
        if float(temperature) <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        w = jax.nn.softmax(-x / jnp.float32(temperature), axis=-1)
    elif rule == "proportional":
        s = jnp.maximum(x, 0.0)
        total = s.sum(-1, keepdims=True)
        w = jnp.where(total > 0, s / jnp.where(total > 0, total, 1.0), 1.0 / x.shape[-1])
    else:
        raise ValueError(f"rule must be 'softmax' (losses) or 'proportional' (scores), got {rule!r}")
    return jnp.where(any_known, w, 1.0 / x.shape[-1])


def causal_weights(outcomes, *, delay: int, window: int | None = None, decay: float | None = None,
                   rule: str = "softmax", temperature: float = 1.0) -> jax.Array:
    """Per-time weights `[T, M]` from the members' rolling performance, causally.

    `outcomes[t, i]` is member i's loss (rule "softmax") or score ("proportional") on the prediction made at
    t, known only once its label is: at t + delay (`delay` = the label horizon in steps, >= 1). The weight
    used at t is built from `outcomes[s]` for s <= t - delay only:

        w_t = performance_weights(rolling mean of outcomes[: t - delay + 1]),   uniform for t < delay,

    so changing `outcomes[t]` changes no weight before t + delay. One `lax.scan` of `rolling_performance`.

    Args:
        outcomes: `[T, M]` (NaN: unknown, ignored; see `member_outcomes`).
        delay: steps until an outcome is known (>= 1).
        window, decay: the rolling window or exponential decay (`rolling_performance`).
        rule, temperature: as in `performance_weights`.

    Returns:
        `[T, M]` non-negative weights, each row summing to 1 (use with `weighted_average`).
    """
    if int(delay) < 1:
        raise ValueError(f"delay must be >= 1 (the outcome of t is known at t + delay at the earliest), got {delay}")
    x = jnp.asarray(outcomes, jnp.float32)
    if x.ndim != 2:
        raise ValueError(f"outcomes must be [T, M], got shape {tuple(x.shape)}")
    t_len, m = x.shape
    d = int(delay)
    known = jnp.concatenate([jnp.full((min(d, t_len), m), jnp.nan, jnp.float32), x[: max(t_len - d, 0)]], axis=0)
    roll = rolling_performance(m, window=window, decay=decay)

    def step(state, row):  # row = outcomes[t - delay]: known at t
        state = roll.update(state, row)
        return state, performance_weights(rolling_mean(state), rule, temperature)

    _, weights = jax.lax.scan(step, roll.init(), known)
    return weights


def member_outcomes(predictions, targets, metric: str = "squared_error") -> jax.Array:
    """`[T, M]` each member's outcome per time step, for `causal_weights`.

    Metrics: "squared_error" (p - y)^2 and "abs_error" |p - y| for regression `[M, T]`; "hit"
    1[sign(p) == sign(y)] (direction) for regression, or 1[argmax p == y] for probabilities `[M, T, C]`
    with int labels `[T]`; "cross_entropy" -log p_y for probabilities. Non-finite targets give NaN.
    """
    p = jnp.asarray(predictions, jnp.float32)
    y = jnp.asarray(targets)
    if p.ndim == 3:
        labels = y.astype(jnp.int32)
        if metric == "hit":
            out = (jnp.argmax(p, -1) == labels[None]).astype(jnp.float32)
        elif metric == "cross_entropy":
            py = jnp.take_along_axis(p, labels[None, :, None], axis=-1)[..., 0]
            out = -jnp.log(jnp.clip(py, 1e-12, 1.0))
        else:
            raise ValueError(f"metric {metric!r} is not defined for probabilities; use 'hit' or 'cross_entropy'")
        return out.T
    y = y.astype(jnp.float32)
    if metric == "squared_error":
        out = (p - y[None]) ** 2
    elif metric == "abs_error":
        out = jnp.abs(p - y[None])
    elif metric == "hit":
        out = (jnp.sign(p) == jnp.sign(y)[None]).astype(jnp.float32)
    else:
        raise ValueError(f"metric {metric!r} is not defined for regression; use 'squared_error', 'abs_error' or 'hit'")
    out = jnp.where(jnp.isfinite(y)[None], out, jnp.nan)
    return out.reshape(out.shape[0], out.shape[1], -1).mean(-1).T


# ------------------------------------------------------------------------------ confidence weighting


def member_confidence(probs) -> jax.Array:
    """`[M, n]` each classifier member's confidence c_i = max_c p_ic (the max softmax probability, which
    the cross-entropy loss trains: a calibrated classifier's c is its probability of being right)."""
    p = jnp.asarray(probs, jnp.float32)
    if p.ndim != 3:
        raise ValueError(f"member_confidence needs class probabilities [M, n, C], got shape {tuple(p.shape)}")
    return jnp.max(p, axis=-1)


def _check_probabilities(p) -> None:
    if _concrete(p):
        a = np.asarray(p)
        if (a < -1e-6).any() or not np.allclose(a.sum(-1), 1.0, atol=1e-4):
            raise ValueError("confidence_weighted needs class probabilities [M, n, C] (non-negative, summing to 1 "
                             "over C: predict_members(..., output='probs')); got values that are not")


def confidence_weighted(predictions, weights=None, *, confidence=None) -> tuple[jax.Array, jax.Array]:
    """Seed 002's confidence-weighted ensemble.

        pred(x) = sum_i p_i(x) c_i(x) w_i / sum_i c_i(x) w_i,        conf(x) = (1/M) sum_i c_i(x) w_i

    with the weights normalised to mean 1 (sum_i w_i = M), so conf = sum_i c_i w_i / sum_i w_i is the
    weighted mean confidence in [0, 1] (with the seed's weights summing to 1 its figure is this / M; pred
    does not depend on the weights' scale).

    Only members whose confidence is trained qualify: for classifiers c_i = max_c p_ic (`member_confidence`);
    a regression member has none (its MSE/Huber loss trains no confidence or variance), so regression
    predictions `[M, n]` are refused unless a trained `confidence` is given (e.g. from a variance head).

    Args:
        predictions: class probabilities `[M, n, C]`, or regression `[M, n]` together with `confidence`.
        weights: None (uniform) or `[M]` non-negative member weights.
        confidence: `[M, n]` a trained confidence per member and sample (required for regression).

    Returns:
        `(pred, conf)`: pred `[n, C]` (a distribution) or `[n]`; conf `[n]`.

    Raises:
        ValueError: regression predictions without a trained confidence; probabilities that do not sum
            to 1; bad weights.
    """
    p = jnp.asarray(predictions, jnp.float32)
    m = p.shape[0]
    if confidence is None:
        if p.ndim != 3:
            raise ValueError(
                "confidence_weighted needs a trained confidence: these are regression predictions "
                f"{tuple(p.shape)} and a regression model's loss trains no confidence or variance output. "
                "Use weighted_average (or causal_weights) for regression members, classifiers' probabilities "
                "[M, n, C] (confidence = max softmax probability), or pass confidence= from a trained head")
        _check_probabilities(predictions)
        c = member_confidence(p)
    else:
        c = jnp.asarray(confidence, jnp.float32)
        if c.shape != p.shape[:2]:
            raise ValueError(f"confidence must be [M, n] = {tuple(p.shape[:2])}, got {tuple(c.shape)}")
    w = normalize_weights(weights, m) * m  # mean 1
    if w.ndim != 1:
        raise ValueError("confidence_weighted takes static member weights [M]")
    cw = c * w[:, None]  # [M, n]
    total = jnp.sum(cw, axis=0)
    cw_b = cw.reshape(cw.shape + (1,) * (p.ndim - 2))
    pred = jnp.sum(p * cw_b, axis=0) / jnp.maximum(total, 1e-12).reshape(total.shape + (1,) * (p.ndim - 2))
    return pred, total / m


# ------------------------------------------------------------------------------ filters


def member_directions(predictions, *, dead_zone: float = 0.0) -> jax.Array:
    """int32 `[M, n]` each member's direction: regression `[M, n]` sign(p) in {-1, 0, +1} (0 when
    |p| <= dead_zone); probabilities `[M, n, C]` the argmax class (the caller maps classes to directions)."""
    p = jnp.asarray(predictions, jnp.float32)
    if p.ndim == 3:
        return jnp.argmax(p, axis=-1).astype(jnp.int32)
    if p.ndim != 2:
        raise ValueError(f"member_directions needs [M, n] or [M, n, C], got shape {tuple(p.shape)}")
    return jnp.where(p > dead_zone, 1, jnp.where(p < -dead_zone, -1, 0)).astype(jnp.int32)


class Agreement(NamedTuple):
    """`agreement_filter`'s answer, each `[n]`: the (weighted) majority direction, the fraction of members
    (weight) voting for it, and whether that fraction reaches the required agreement."""

    direction: jax.Array
    fraction: jax.Array
    mask: jax.Array


def agreement_filter(directions, agreement: float = 0.7, weights=None) -> Agreement:
    """Act only where at least a fraction `agreement` of the members agree on the direction.

        fraction(x) = max_d sum_i w_i 1[d_i(x) = d] / sum_i w_i,     mask = fraction >= agreement

    (a 1e-6 tolerance, so 7 of 10 members meet 0.7). The majority direction is the d reaching the max
    (ties: the direction of the lowest-indexed member among the tied). Seed 002: "ensemble only when
    models agree (>70%)".

    Args:
        directions: int `[M, n]` (`member_directions`).
        agreement: the required fraction in (0, 1].
        weights: None (each member one vote) or `[M]` non-negative vote weights.
    """
    if not 0.0 < float(agreement) <= 1.0:
        raise ValueError(f"agreement must be in (0, 1], got {agreement}")
    d = jnp.asarray(directions)
    if d.ndim != 2:
        raise ValueError(f"directions must be [M, n], got shape {tuple(d.shape)}")
    w = normalize_weights(weights, d.shape[0])
    if w.ndim != 1:
        raise ValueError("agreement_filter takes static member weights [M]")
    same = (d[:, None, :] == d[None, :, :]).astype(jnp.float32)  # [M, M, n]: member j agrees with member i
    votes = jnp.einsum("i,ijn->jn", w, same)  # weight agreeing with member j's direction
    best = jnp.argmax(votes, axis=0)
    fraction = jnp.max(votes, axis=0)
    direction = jnp.take_along_axis(d, best[None], axis=0)[0]
    return Agreement(direction, fraction, fraction >= jnp.float32(agreement) - 1e-6)


def confidence_mask(confidence, threshold: float) -> jax.Array:
    """bool `[n]`: act where the ensemble confidence reaches the threshold (conf >= threshold)."""
    return jnp.asarray(confidence, jnp.float32) >= jnp.float32(threshold)


def abstain(signal, mask, flat=0):
    """`signal` where `mask` holds, else `flat` (no position / abstain): `where(mask, signal, flat)`; a mask
    `[n]` broadcasts over trailing axes of `signal [n, ...]`."""
    s = jnp.asarray(signal)
    mk = jnp.asarray(mask, bool)
    return jnp.where(mk.reshape(mk.shape + (1,) * (s.ndim - mk.ndim)), s, jnp.asarray(flat, s.dtype))


# ------------------------------------------------------------------------------ uncertainty


def prediction_spread(predictions, weights=None) -> jax.Array:
    """The members' (weighted) standard deviation around the ensemble mean, for regression `[M, n, ...]`:

        std(x) = sqrt( sum_i w_i (p_i(x) - p(x))^2 ),   p = sum_i w_i p_i,  sum_i w_i = 1

    (the population std, ddof = 0, for uniform weights)."""
    p = jnp.asarray(predictions, jnp.float32)
    w = _member_weights(weights, p)
    mean = jnp.sum(w * p, axis=0)
    return jnp.sqrt(jnp.sum(w * (p - mean) ** 2, axis=0))


class Uncertainty(NamedTuple):
    """Ensemble uncertainty of a classifier, each `[n]`, in nats.

    Attributes:
        total: predictive entropy H[p_bar], p_bar = sum_i w_i p_i.
        expected: expected entropy sum_i w_i H[p_i] (aleatoric: what each member finds uncertain).
        mutual_information: total - expected >= 0, the members' disagreement (epistemic; 0 iff they agree).
    """

    total: jax.Array
    expected: jax.Array
    mutual_information: jax.Array


def _entropy(p):
    return -jnp.sum(jax.scipy.special.xlogy(p, p), axis=-1)


def classification_uncertainty(probs, weights=None) -> Uncertainty:
    """Predictive entropy, expected entropy and mutual information of class probabilities `[M, n, C]`:

        H[p] = -sum_c p_c log p_c,   total = H[sum_i w_i p_i],   expected = sum_i w_i H[p_i],
        mutual_information = total - expected   (clipped at 0 against rounding).
    """
    p = jnp.asarray(probs, jnp.float32)
    if p.ndim != 3:
        raise ValueError(f"classification_uncertainty needs probabilities [M, n, C], got shape {tuple(p.shape)}")
    w = _member_weights(weights, p)
    total = _entropy(jnp.sum(w * p, axis=0))
    expected = jnp.sum(w[..., 0] * _entropy(p), axis=0)
    return Uncertainty(total, expected, jnp.maximum(total - expected, 0.0))
