"""Multi-task network (seed document 002, "MultiTaskModel") with homoscedastic-uncertainty task weighting.

A shared causal residual 1-D CNN encoder reads `[batch, time, features]`; the hidden state of the last
step feeds four task heads, each `Dense(head_hidden) -> act -> Dense(out)`:

    "price"            [batch, 1]  regression (next-bar price/return target)
    "direction_logits" [batch, 3]  classification logits (e.g. down / hold / up)
    "volatility"       [batch, 1]  regression, positive through softplus
    "volume"           [batch, 1]  regression

The module also owns `log_vars` `[n_tasks]` (float32, initialised at 0): s_i = log sigma_i^2, the learned
log-variances of Kendall, Gal & Cipolla (2018), "Multi-task learning using uncertainty to weigh losses".
`uncertainty_weighted_loss` turns per-task losses into the combined objective and
`multitask_task_losses` computes the per-task losses from the outputs and targets.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from trading_jax.models.registry import register
from trading_jax.models.tcn import TemporalBlock, activation_fn, receptive_field, tcn_dilations

TASKS: tuple[str, ...] = ("price", "direction", "volatility", "volume")
"""Task order of `log_vars`, `multitask_task_losses` and `TASK_KINDS`."""

TASK_KINDS: tuple[str, ...] = ("regression", "classification", "regression", "regression")
"""Kind of each task in `TASKS`, as `uncertainty_weighted_loss` expects."""

_KIND_COEFFICIENT = {"regression": 0.5, "classification": 1.0}


def uncertainty_weighted_loss(losses: jnp.ndarray, log_vars: jnp.ndarray, kinds: Sequence[str]) -> jnp.ndarray:
    """Combine per-task losses with learned homoscedastic uncertainty (Kendall, Gal & Cipolla 2018).

    With s_i = log sigma_i^2 (`log_vars[i]`):

        L = sum_i c_i exp(-s_i) L_i + s_i / 2,
        c_i = 1/2 for regression      (the 1 / (2 sigma^2) L_i + log sigma of a Gaussian likelihood),
        c_i = 1   for classification  (the 1 / sigma^2 L_i + log sigma of a scaled softmax),

    since log sigma_i = s_i / 2. For a fixed L_i > 0 the minimum over s_i is at exp(s_i) = 2 c_i L_i:
    s* = log L_i for regression and s* = log(2 L_i) for classification, where dL/ds_i =
    -c_i exp(-s_i) L_i + 1/2 vanishes. Parametrising by s (not sigma) keeps the weights positive and the
    optimisation stable. L can be negative (when L_i is small), so compare raw task losses, not L, across runs.

    Args:
        losses: per-task losses `[n_tasks]` (e.g. MSE for regression, mean cross-entropy for classification).
        log_vars: `[n_tasks]` learned log-variances s_i.
        kinds: `n_tasks` strings, each "regression" or "classification" (static).

    Returns:
        Scalar combined loss.
    """
    losses = jnp.asarray(losses)
    log_vars = jnp.asarray(log_vars)
    if losses.shape != log_vars.shape or losses.ndim != 1 or len(kinds) != losses.shape[0]:
        raise ValueError(
            f"losses {losses.shape}, log_vars {log_vars.shape} and kinds (len {len(kinds)}) must all be [n_tasks]"
        )
    unknown = sorted(set(kinds) - set(_KIND_COEFFICIENT))
    if unknown:
        raise ValueError(f"unknown task kinds {unknown}; known: {sorted(_KIND_COEFFICIENT)}")
    coefficients = jnp.asarray([_KIND_COEFFICIENT[k] for k in kinds], dtype=losses.dtype)
    return jnp.sum(coefficients * jnp.exp(-log_vars) * losses + 0.5 * log_vars)


def multitask_task_losses(outputs: Mapping[str, jnp.ndarray], targets: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
    """Per-task losses `[4]` in `TASKS` order.

    price, volatility, volume: mean squared error, mean_b (y_b - f_b)^2;
    direction: mean softmax cross-entropy, mean_b -log softmax(logits_b)[label_b].

    Args:
        outputs: the model's output dict ("price", "direction_logits", "volatility", "volume").
        targets: "price", "volatility", "volume" `[batch]` or `[batch, 1]` floats and "direction"
            `[batch]` integer class labels.

    Returns:
        `[4]` float32 losses.
    """

    def mse(name: str) -> jnp.ndarray:
        prediction = outputs[name].reshape(outputs[name].shape[0], -1)
        target = jnp.asarray(targets[name]).reshape(prediction.shape)
        return jnp.mean(jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32)))

    cross_entropy = jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(
            outputs["direction_logits"].astype(jnp.float32), jnp.asarray(targets["direction"]).astype(jnp.int32)
        )
    )
    return jnp.stack([mse("price"), cross_entropy, mse("volatility"), mse("volume")])


class TaskHead(nn.Module):
    """`Dense(hidden) -> act -> Dense(features)` on `[batch, d]`."""

    hidden: int
    features: int
    activation: str = "relu"
    dtype: Any = None

    @nn.compact
    def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
        h = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32, name="hidden")(h)
        h = activation_fn(self.activation)(h)
        return nn.Dense(self.features, dtype=self.dtype, param_dtype=jnp.float32, name="out")(h).astype(jnp.float32)


class MultiTaskNet(nn.Module):
    """Shared causal residual CNN encoder with price / direction / volatility / volume heads.

    Encoder: a per-step linear projection of the features to `channels`, then `blocks` residual blocks
    (`tcn.TemporalBlock`: two causal convolutions of kernel `kernel_size`, each with LayerNorm, activation
    and dropout, and an identity residual), block i with dilation `dilation_base**i`. Pooling: the last
    step's hidden state. With the seed sizes (4 blocks, k = 3, dilations 1, 2, 4, 8) the encoder sees
    61 steps (`self.receptive_field`), covering the seed's 60-step input window.

    Attributes:
        channels: encoder width (seed: 64).
        blocks: residual blocks (seed: 4).
        kernel_size: causal convolution kernel size (seed: 3).
        dilation_base: dilation growth per block (1 gives a plain ResNet-style CNN).
        head_hidden: hidden units of every task head (seed: 128, "Dense(128)").
        n_classes: direction classes (seed: 3, down / hold / up).
        dropout: dropout rate in the encoder blocks, active only when `train=True`.
        activation: name in `tcn.ACTIVATIONS`.
        dtype: compute dtype (e.g. `jnp.bfloat16`); parameters, heads' outputs and `log_vars` are float32.

    Returns:
        dict with
          "price" `[batch, 1]`, "prediction" (the same array, for uniformity with other regressors),
          "direction_logits" `[batch, n_classes]` and "logits" (the same array),
          "volatility" `[batch, 1]` (> 0, softplus), "volume" `[batch, 1]`,
          "log_vars" `[n_tasks]` the learned log-variances s_i (in `TASKS` order; not batched),
          "features" `[batch, channels]` the pooled representation,
          "sequence" `[batch, time, channels]` the encoder's hidden states (causal: step t reads steps <= t).
    """

    channels: int = 64
    blocks: int = 4
    kernel_size: int = 3
    dilation_base: int = 2
    head_hidden: int = 128
    n_classes: int = 3
    dropout: float = 0.1
    activation: str = "relu"
    dtype: Any = None

    @property
    def dilations(self) -> tuple[int, ...]:
        return tcn_dilations(self.blocks, self.dilation_base)

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.kernel_size, self.dilations)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> dict[str, jnp.ndarray]:
        if x.ndim != 3:
            raise ValueError(f"MultiTaskNet expects x of shape [batch, time, features], got {x.shape}")
        h = nn.Dense(self.channels, dtype=self.dtype, param_dtype=jnp.float32, name="input_proj")(x)
        for i, dilation in enumerate(self.dilations):
            h = TemporalBlock(
                self.channels, self.kernel_size, dilation, self.dropout, self.activation, self.dtype, name=f"block{i}"
            )(h, train=train)
        pooled = h[:, -1, :]

        def head(name: str, features: int) -> jnp.ndarray:
            return TaskHead(self.head_hidden, features, self.activation, self.dtype, name=f"{name}_head")(pooled)

        price = head("price", 1)
        logits = head("direction", self.n_classes)
        volatility = jax.nn.softplus(head("volatility", 1))
        volume = head("volume", 1)
        log_vars = self.param("log_vars", nn.initializers.zeros, (len(TASKS),), jnp.float32)
        return {
            "price": price,
            "prediction": price,
            "direction_logits": logits,
            "logits": logits,
            "volatility": volatility,
            "volume": volume,
            "log_vars": log_vars,
            "features": pooled,
            "sequence": h,
        }


SEED_PRESET = dict(channels=64, blocks=4, kernel_size=3, dilation_base=2, head_hidden=128, n_classes=3, dropout=0.1)
TINY_PRESET = dict(channels=8, blocks=2, kernel_size=3, dilation_base=2, head_hidden=8, n_classes=3, dropout=0.1)


@register("multitask", presets={"seed": SEED_PRESET, "tiny": TINY_PRESET})
def multitask(**cfg) -> MultiTaskNet:
    """Build a `MultiTaskNet`; defaults are the seed sizes (64 channels, 4 blocks, heads of 128)."""
    return MultiTaskNet(**cfg)
