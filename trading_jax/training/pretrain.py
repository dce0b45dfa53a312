"""Masked self-supervised pre-training (seed 002, "Self-Supervised Pre-training").

Each minibatch masks random time steps (each step of each window independently with probability
`config.pretrain_mask_ratio`), replacing all features of a masked step by 0 (no learned mask token:
inputs are expected to be normalised, so 0 is the mean). The model reads the masked windows; a
reconstruction head, `Dense(features)` on the model's "sequence" output `[batch, time, hidden]`,
predicts the original inputs, and the loss is the MSE on masked positions only:

    L = sum_{b,t} m_bt ||r_bt - x_bt||^2 / (F * max(1, sum_{b,t} m_bt)).

Models without a "sequence" output cannot be pre-trained this way (ValueError). The pre-trained
backbone params (`PretrainResult.backbone_params`) have the model's own structure, so they can seed
supervised training: `make_train(config, data)(key, params=result.backbone_params)`.
The optimiser, schedule, minibatching (remainder dropped), skipping of non-finite updates and
data-parallel sharding are those of `make_train`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from trading_jax.training.config import TrainConfig
from trading_jax.training.steps import (
    cast_floating, compute_dtype, constrain, epoch_indices, prepare_batches, select_tree,
)
from trading_jax.training.train import check_finite, make_optimizer


class PretrainResult(NamedTuple):
    """params: backbone + head ({"backbone": ..., "head": ...}); backbone_params: the model's own params;
    history: "loss" `[epochs]` mean masked MSE over applied updates, "skipped_steps" `[epochs]`."""

    params: Any
    backbone_params: Any
    history: dict


def random_time_mask(key: jax.Array, batch: int, time: int, ratio: float) -> jax.Array:
    """`[batch, time]` bool mask, each entry True with probability `ratio`."""
    return jax.random.bernoulli(key, ratio, (batch, time))


def masked_mse(reconstruction, x, mask) -> jax.Array:
    """MSE over masked steps only: sum m_bt ||r_bt - x_bt||^2 / (F max(1, sum m_bt))."""
    err = jnp.sum(jnp.square(reconstruction.astype(jnp.float32) - x.astype(jnp.float32)), axis=-1)
    m = mask.astype(jnp.float32)
    return jnp.sum(m * err) / (x.shape[-1] * jnp.maximum(1.0, jnp.sum(m)))


class Reconstructor(nn.Module):
    """A backbone model plus a `Dense(n_features)` reconstruction head on its "sequence" output."""

    backbone: nn.Module
    n_features: int

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        out = self.backbone(x, train=train)
        if not isinstance(out, dict) or "sequence" not in out:
            raise ValueError(
                f"model {type(self.backbone).__name__} returns no 'sequence' output [batch, time, hidden]; "
                "masked pre-training needs one"
            )
        seq = out["sequence"]
        if seq.shape[:2] != x.shape[:2]:
            raise ValueError(f"'sequence' output {seq.shape} does not match the input's [batch, time] {x.shape[:2]}")
        return nn.Dense(self.n_features, dtype=x.dtype, name="head")(seq)


def make_pretrain(config: TrainConfig, x, mesh=None, data_parallel: bool = False):
    """Build `pretrain(key, x=None) -> PretrainResult` for unlabeled windows `x` `[n, time, features]`.

    Uses `config.epochs`, `batch_size`, the optimiser settings, `compute_dtype` and
    `pretrain_mask_ratio`; task, augmentation, curriculum and early stopping do not apply.
    """
    check_finite("x", x)
    n, time, features = x.shape
    steps, mesh, batch_sharding, replicated, x = prepare_batches(config, n, "n", x, mesh, data_parallel)
    net = Reconstructor(config.build_model(), features)
    dtype = compute_dtype(config)
    tx = make_optimizer(config, config.epochs * steps)
    ratio, batch = config.pretrain_mask_ratio, config.batch_size

    def loss_fn(params, xb, mask, key):
        masked = jnp.where(mask[..., None], 0.0, xb)
        recon = net.apply({"params": cast_floating(params, dtype)}, masked.astype(dtype), train=True, rngs={"dropout": key})
        return masked_mse(recon, xb, mask)

    def _pretrain(key, x):
        k_init, k_drop, k_epochs = jax.random.split(key, 3)
        params = net.init({"params": k_init, "dropout": k_drop}, x[:1], train=False)["params"]
        params = constrain(params, replicated)
        opt_state = tx.init(params)

        def step(carry, xs):
            params, opt_state = carry
            idx, key = xs
            xb = constrain(x[idx], batch_sharding)
            k_mask, k_drop = jax.random.split(key)
            mask = constrain(random_time_mask(k_mask, batch, time, ratio), batch_sharding)
            loss, grads = jax.value_and_grad(loss_fn)(params, xb, mask, k_drop)
            updates, new_opt_state = tx.update(grads, opt_state, params)
            ok = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
            params = constrain(select_tree(ok, optax.apply_updates(params, updates), params), replicated)
            opt_state = select_tree(ok, new_opt_state, opt_state)
            return (params, opt_state), (loss, ok)

        def epoch(carry, key):
            k_perm, k_steps = jax.random.split(key)
            idx = epoch_indices(k_perm, n, steps, batch)
            carry, (losses, ok) = jax.lax.scan(step, carry, (idx, jax.random.split(k_steps, steps)))
            n_ok = jnp.sum(ok)
            mean = jnp.where(n_ok > 0, jnp.sum(jnp.where(ok, losses, 0.0)) / jnp.maximum(n_ok, 1), jnp.nan)
            return carry, {"loss": mean, "skipped_steps": (steps - n_ok).astype(jnp.int32)}

        (params, _), history = jax.lax.scan(epoch, (params, opt_state), jax.random.split(k_epochs, config.epochs))
        return PretrainResult(params, params["backbone"], history)

    jitted = jax.jit(_pretrain)
    default_x = x

    def pretrain(key, x=None) -> PretrainResult:
        """Pre-train from `key` (optionally on other windows of the same shape)."""
        return jitted(key, default_x if x is None else x)

    pretrain.jitted = jitted
    pretrain.model = net
    return pretrain
