"""What supervised training (`train.make_trainer`) and self-supervised pre-training (`pretrain.make_pretrain`)
share: minibatch indices of an epoch, the batch/replicated sharding setup, masked selection; the dtype casts
(`cast_floating`, `compute_dtype`) live in `trading_jax.models.precision` and are re-exported here."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax import parallel
from trading_jax.models.precision import cast_floating, compute_dtype  # noqa: F401  (re-exported)
from trading_jax.training import curriculum
from trading_jax.training.config import Dataset, TrainConfig

__all__ = ["select_tree", "cast_floating", "compute_dtype", "prepare_batches", "constrain", "epoch_indices", "take",
           "overlay_params", "has_integer_leaves"]


def select_tree(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def prepare_batches(config: TrainConfig, n: int, what: str, data, mesh, data_parallel: bool):
    """Minibatches per epoch, the mesh, the batch and replicated shardings, and `data` placed on the mesh.

    The mesh: `mesh`, else the active one (`parallel.use_mesh`, e.g. `trading-jax train --distributed`), else
    one over all devices when `data_parallel`, else None. On a mesh within one process `data` is replicated
    on every device. On a mesh that spans processes a `Dataset`'s training rows (`x_train`, `y_train`) are
    sharded over the "data" axis (`parallel.shard_rows`: each process puts only its own rows on its devices,
    and the minibatch gathers read across processes), the rest is replicated; a bare array `data` (pretraining)
    is sharded the same way. Raises if `n` samples do not fill one minibatch."""
    steps = n // config.batch_size
    if steps == 0:
        raise ValueError(f"{what}={n} is smaller than batch_size={config.batch_size}: no full minibatch")
    if mesh is None:
        mesh = parallel.active_mesh()
    if data_parallel and mesh is None:
        mesh = parallel.make_mesh()
    parallel.check_divisible(mesh, batch_size=config.batch_size)
    batch_sharding, replicated = parallel.batch_sharding(mesh), parallel.replicated_sharding(mesh)
    if replicated is not None and parallel.spans_processes(mesh):
        if isinstance(data, Dataset):
            if config.curriculum and data.difficulty is None:  # ranked on the real rows, before any padding
                data = data._replace(difficulty=np.asarray(curriculum.sample_volatility(
                    jax.tree.map(np.asarray, data.x_train), config.curriculum_feature)))
            rows = parallel.shard_rows((data.x_train, data.y_train), mesh)
            rest = parallel.replicate(data._replace(x_train=None, y_train=None), mesh)
            data = rest._replace(x_train=rows[0], y_train=rows[1])
        else:
            data = parallel.shard_rows(data, mesh)
    elif replicated is not None:
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


def take(x, index):
    """Rows `index` (an index array or a slice) of every leaf of `x`: an array or a pytree of arrays sharing the
    sample axis, e.g. `{"input_ids": [N, L] int32, "attention_mask": [N, L]}` for a text model."""
    return jax.tree.map(lambda a: a[index], x)


def has_integer_leaves(x) -> bool:
    """Whether any leaf of `x` is integer or bool (token ids, masks): such inputs cannot take noise, mixup or FGSM."""
    return any(not jnp.issubdtype(jnp.asarray(a).dtype if not hasattr(a, "dtype") else a.dtype, jnp.floating)
               for a in jax.tree.leaves(x))


def overlay_params(params, given):
    """`params` with every leaf that `given` holds replaced by `given`'s (a full tree, or a partial one such as a
    pre-trained encoder's subtree: the rest keeps its fresh initialisation).

    Raises:
        ValueError: a path of `given` that `params` lacks, or a shape that differs (one line naming the path).
    """
    from flax import traverse_util

    flat = dict(traverse_util.flatten_dict(params, sep="/"))
    for path, value in traverse_util.flatten_dict(given, sep="/").items():
        if path not in flat:
            close = [p for p in flat if p.split("/")[-1] == path.split("/")[-1]][:3]
            raise ValueError(f"initial params: the model has no parameter {path!r}"
                             + (f" (similar: {', '.join(close)})" if close else ""))
        if tuple(jnp.shape(value)) != tuple(jnp.shape(flat[path])):
            raise ValueError(f"initial params: {path!r} has shape {tuple(jnp.shape(value))} but the model's is "
                             f"{tuple(jnp.shape(flat[path]))}")
        flat[path] = jnp.asarray(value, flat[path].dtype)
    return traverse_util.unflatten_dict(flat, sep="/")
