"""Pure losses and metrics (mean-reduced, float32 results), each with its formula.

Classification targets may be integer labels `[batch]` or probability vectors `[batch, classes]`
(soft targets, e.g. after mixup); both go through `smooth_targets`.

Shapes are checked (with `chex`, at trace time, so at no cost in a compiled step): a prediction and
its target must have one shape (`[batch]` against `[batch, 1]` is accepted), and class targets must
match the logits; anything else is a one-line `ValueError` naming the loss and the shapes, where a
silent broadcast would otherwise average a `[batch, batch]` matrix of wrong pairs.
"""

from __future__ import annotations

from typing import Any, Mapping

import chex
import jax
import jax.numpy as jnp

MULTITASK_TASKS = ("price", "direction", "volatility", "volume")
"""Task order of a multitask model's `log_vars` (the same as `trading_jax.models.multitask.TASKS`)."""

_KIND = {"price": "regression", "direction": "classification", "volatility": "regression", "volume": "regression"}
_UNCERTAINTY_COEFFICIENT = {"regression": 0.5, "classification": 1.0}


def _match(prediction, target, fn: str):
    """Float32 `(prediction, target)` of one shape (`[batch]` vs `[batch, 1]` reshaped); else ValueError."""
    prediction = jnp.asarray(prediction, jnp.float32)
    target = jnp.asarray(target, jnp.float32)
    if target.shape != prediction.shape and target.size == prediction.size:
        target = target.reshape(prediction.shape)  # [batch] vs [batch, 1]
    try:
        chex.assert_equal_shape([prediction, target])
    except AssertionError:
        raise ValueError(f"{fn}: prediction {prediction.shape} and target {target.shape} must have the same shape "
                         "([batch] against [batch, 1] is accepted)") from None
    return prediction, target


def mse(prediction, target) -> jax.Array:
    """Mean squared error: mean_i (p_i - y_i)^2 over all elements (`[batch]` and `[batch, 1]` match)."""
    prediction, target = _match(prediction, target, "mse")
    return jnp.mean(jnp.square(prediction - target))


def huber(prediction, target, delta: float = 1.0) -> jax.Array:
    """Huber loss: mean_i h(p_i - y_i), h(r) = r^2 / 2 for |r| <= delta, delta (|r| - delta / 2) beyond."""
    prediction, target = _match(prediction, target, "huber")
    r = jnp.abs(prediction - target)
    return jnp.mean(jnp.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta)))


def smooth_targets(targets, n_classes: int, label_smoothing: float = 0.0) -> jax.Array:
    """Probability targets `[batch, n_classes]`: t' = (1 - eps) t + eps / K, with t one-hot for int labels."""
    targets = jnp.asarray(targets)
    if jnp.issubdtype(targets.dtype, jnp.integer):
        targets = jax.nn.one_hot(targets, n_classes, dtype=jnp.float32)
    targets = targets.astype(jnp.float32)
    return (1.0 - label_smoothing) * targets + label_smoothing / n_classes


def cross_entropy(logits, targets, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy with label smoothing.

    L = -mean_b sum_k t'_bk log softmax(z_b)_k,  t' = (1 - eps) t + eps / K.

    Args:
        logits: `[batch, K]`.
        targets: `[batch]` integer labels or `[batch, K]` probabilities.
        label_smoothing: eps in [0, 1).

    Raises:
        ValueError: if the targets are neither `[batch]` labels nor `[batch, K]` probabilities for these logits.
    """
    logits = jnp.asarray(logits, jnp.float32)
    t = smooth_targets(targets, logits.shape[-1], label_smoothing)
    try:
        chex.assert_equal_shape([logits, t])
    except AssertionError:
        raise ValueError(f"cross_entropy: targets {jnp.shape(targets)} must be integer labels {logits.shape[:-1]} or "
                         f"probabilities {logits.shape} for logits {logits.shape}") from None
    return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def multitask_loss(
    outputs: Mapping[str, Any],
    targets: Mapping[str, Any],
    weights: Mapping[str, float] | None = None,
    label_smoothing: float = 0.0,
    uncertainty_weighting: bool = False,
) -> jax.Array:
    """Seed 000's multi-task loss.

    With L_price, L_vol, L_volume the MSEs of the "price", "volatility", "volume" outputs and L_dir the
    label-smoothed cross-entropy of "direction_logits" against "direction":

        L = w_price L_price + w_dir L_dir + w_vol L_vol + w_volume L_volume,
        seed 000 weights: w_price = 1.0, w_dir = 0.8, w_vol = 0.5 (volume is not weighted: 0).

    With `uncertainty_weighting` and the model's learned log-variances s = outputs["log_vars"] (in
    `MULTITASK_TASKS` order), each term becomes Kendall et al.'s (2018)
        w_k (c_k exp(-s_k) L_k + s_k / 2),   c_k = 1/2 for regression, 1 for classification.

    A model without "direction_logits" but with a "confidence" head (the price transformer's
    `[price change, volatility, confidence]` heads) gets, in place of L_dir, the cross-entropy of its
    confidence against whether the sign of its "price" forecast was right (`direction_confidence_loss`),
    weighted by w_dir: seed 000's "direction accuracy" term for a model whose direction call is the sign
    of its forecast.

    Tasks absent from `targets` (or with weight 0) are left out.
    """
    weights = dict(zip(MULTITASK_TASKS, (1.0, 0.8, 0.5, 0.0))) if weights is None else dict(weights)
    total = jnp.zeros((), jnp.float32)
    for i, task in enumerate(MULTITASK_TASKS):
        w = weights.get(task, 0.0)  # a Python number or a (possibly traced) array
        if task not in targets or (isinstance(w, (int, float)) and w == 0.0):
            continue
        if task == "direction" and "direction_logits" not in outputs:  # the price transformer's confidence head
            term = direction_confidence_loss(outputs["confidence"], outputs["price"], targets[task])
        elif task == "direction":
            term = cross_entropy(outputs["direction_logits"], targets[task], label_smoothing)
        else:
            term = mse(outputs[task], targets[task])
        if uncertainty_weighting:
            s = jnp.asarray(outputs["log_vars"], jnp.float32)
            s = s[task] if isinstance(s, Mapping) else s.reshape(-1)[i]
            term = _UNCERTAINTY_COEFFICIENT[_KIND[task]] * jnp.exp(-s) * term + 0.5 * s
        total = total + w * term
    return total


def task_loss(config, outputs: Mapping[str, Any], targets, label_smoothing: float | None = None,
              hparams=None) -> jax.Array:
    """The training objective of `config.task` on a model's `outputs`.

    Label smoothing, the Huber delta and the multitask weights come from `hparams` (a
    `train.TrainHyperparams`, possibly traced under `vmap`) when given, else from the config;
    an explicit `label_smoothing` overrides both (validation uses 0).
    """
    source = config if hparams is None else hparams
    eps = source.label_smoothing if label_smoothing is None else label_smoothing
    if config.task == "regression":
        if config.regression_loss == "huber":
            return huber(outputs["prediction"], targets, source.huber_delta)
        return mse(outputs["prediction"], targets)
    if config.task == "classification":
        loss = cross_entropy(outputs["logits"], targets, eps)
        weight = confidence_weight(config)
        if weight:  # a learned confidence head (the sentiment network's) learns P(the call is right)
            loss = loss + weight * confidence_loss(outputs["confidence"], outputs["logits"], targets)
        return loss
    weights = dict(config.multitask_weights)
    if hparams is not None:  # traced weights; tasks the config weighs 0 stay out of the program
        weights = {k: hparams.multitask_weights[k] for k, v in weights.items() if v != 0}
    return multitask_loss(outputs, targets, weights, eps, config.uncertainty_weighting)


LEARNED_CONFIDENCE_MODELS = ("sentiment_bert",)
"""Classifiers whose "confidence" output is a head of its own (trained by `confidence_loss` by default). Other
classifiers' "confidence" (e.g. the direction transformer's largest class probability) is a function of the
logits and stays out of the loss."""


def confidence_weight(config) -> float:
    """The weight of `confidence_loss` in a classification objective: `config.confidence_weight`, or when it is
    None, 1 for a model of `LEARNED_CONFIDENCE_MODELS` and 0 otherwise."""
    weight = getattr(config, "confidence_weight", None)
    if weight is None:
        return 1.0 if getattr(config, "model", None) in LEARNED_CONFIDENCE_MODELS else 0.0
    return float(weight)


def direction_confidence_loss(confidence, price, direction) -> jax.Array:
    """Cross-entropy of a confidence head against whether the sign of a return forecast was right.

        c*_b = 1[sign(p_b) = +1 and y_b = UP  or  sign(p_b) = -1 and y_b = DOWN]   (no gradient into p)
        L = -sum_b m_b [c*_b log q_b + (1 - c*_b) log(1 - q_b)] / max(sum_b m_b, 1),   m_b = 1[y_b != FLAT]

    FLAT labels (inside the dead band) have no right sign and are left out; q is clipped to [1e-6, 1 - 1e-6].
    Class indices follow `trading_jax.data.labels`: DOWN, FLAT, UP = 0, 1, 2.

    Args:
        confidence: `[batch]` or `[batch, 1]` probabilities (after the sigmoid).
        price: `[batch]` or `[batch, 1]` return forecasts.
        direction: `[batch]` integer labels, or `[batch, 3]` probabilities (after mixup; their argmax is used).
    """
    direction = jnp.asarray(direction)
    if not jnp.issubdtype(direction.dtype, jnp.integer):
        direction = jnp.argmax(direction, -1)
    price = jax.lax.stop_gradient(jnp.asarray(price, jnp.float32).reshape(direction.shape))
    q = jnp.clip(jnp.asarray(confidence, jnp.float32).reshape(direction.shape), 1e-6, 1.0 - 1e-6)
    right = ((price > 0) & (direction == 2)) | ((price < 0) & (direction == 0))
    mask = (direction != 1).astype(jnp.float32)
    nll = -(right * jnp.log(q) + (~right) * jnp.log1p(-q))
    return jnp.sum(mask * nll) / jnp.maximum(jnp.sum(mask), 1.0)


def confidence_loss(confidence, logits, targets) -> jax.Array:
    """Binary cross-entropy of a confidence head against whether the classifier's call is right.

        c*_b = 1[argmax_k z_bk = y_b]   (held fixed: no gradient flows into the logits through it)
        L = -mean_b [c*_b log q_b + (1 - c*_b) log(1 - q_b)],   q clipped to [1e-6, 1 - 1e-6]

    so a trained head estimates the probability that the predicted class is the true one.

    Args:
        confidence: `[batch]` or `[batch, 1]` probabilities (after the sigmoid).
        logits: `[batch, K]`.
        targets: `[batch]` integer labels or `[batch, K]` probabilities (their argmax is the label).
    """
    logits = jnp.asarray(logits, jnp.float32)
    targets = jnp.asarray(targets)
    labels = targets if jnp.issubdtype(targets.dtype, jnp.integer) else jnp.argmax(targets, -1)
    right = jax.lax.stop_gradient((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
    q = jnp.clip(jnp.asarray(confidence, jnp.float32).reshape(right.shape), 1e-6, 1.0 - 1e-6)
    return -jnp.mean(right * jnp.log(q) + (1.0 - right) * jnp.log1p(-q))


# ----------------------------------------------------------------------------------------- metrics


def mae(prediction, target) -> jax.Array:
    """Mean absolute error: mean_i |p_i - y_i|."""
    prediction, target = _match(prediction, target, "mae")
    return jnp.mean(jnp.abs(prediction - target))


def rmse(prediction, target) -> jax.Array:
    """Root mean squared error: sqrt(mean_i (p_i - y_i)^2)."""
    return jnp.sqrt(mse(prediction, target))


def accuracy(logits, labels) -> jax.Array:
    """Fraction of samples whose argmax logit equals the integer label (or argmax of soft labels)."""
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        labels = jnp.argmax(labels, axis=-1)
    predicted = jnp.argmax(logits, axis=-1)
    try:
        chex.assert_equal_shape([predicted, labels])
    except AssertionError:
        raise ValueError(f"accuracy: labels must be integer labels {predicted.shape} or probabilities "
                         f"{jnp.shape(logits)} for logits {jnp.shape(logits)}") from None
    return jnp.mean((predicted == labels).astype(jnp.float32))


def direction_accuracy(prediction, target) -> jax.Array:
    """Fraction of samples where sign(p) == sign(y) (seed 000's "Direction_Accuracy" for regressors)."""
    prediction, target = _match(prediction, target, "direction_accuracy")
    return jnp.mean((jnp.sign(prediction) == jnp.sign(target)).astype(jnp.float32))
