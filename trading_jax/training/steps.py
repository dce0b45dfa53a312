"""What supervised training (`train.make_trainer`) and self-supervised pre-training (`pretrain.make_pretrain`)
share: minibatch indices of an epoch, the batch/replicated sharding setup, masked selection; the dtype casts
(`cast_floating`, `compute_dtype`) live in `trading_jax.models.precision` and are re-exported here."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from trading_jax import parallel
from trading_jax.models.precision import cast_floating, compute_dtype  # noqa: F401  (re-exported)
from trading_jax.training import curriculum
from trading_jax.training.config import TrainConfig

__all__ = ["select_tree", "cast_floating", "compute_dtype", "prepare_batches", "constrain", "epoch_indices"]


def select_tree(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def prepare_batches(config: TrainConfig, n: int, what: str, data, mesh, data_parallel: bool):
    """Minibatches per epoch, the mesh (built when `data_parallel`), the batch and replicated
    shardings, and `data` replicated over the mesh. Raises if `n` samples do not fill one minibatch."""
    steps = n // config.batch_size
    if steps == 0:
        raise ValueError(f"{what}={n} is smaller than batch_size={config.batch_size}: no full minibatch")
    if data_parallel and mesh is None:
        mesh = parallel.make_mesh()
    parallel.check_divisible(mesh, batch_size=config.batch_size)
    batch_sharding, replicated = parallel.batch_sharding(mesh), parallel.replicated_sharding(mesh)
    if replicated is not None:
        data = jax.device_put(data, replicated)
    return steps, mesh, batch_sharding, replicated, data


def constrain(tree, sharding):
    return tree if sharding is None else jax.lax.with_sharding_constraint(tree, sharding)


def epoch_indices(key, n: int, steps: int, batch: int, order=None, pool=None):
    """`[steps, batch]` minibatch indices of one epoch (remainder dropped); curriculum when `order` given."""
    if order is None:
        perm = jax.random.permutation(key, n)
    else:
        perm = curriculum.curriculum_permutation(key, order, pool)
    return perm[: steps * batch].reshape(steps, batch)
