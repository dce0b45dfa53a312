"""Mixed precision for applying a model: the compute dtype of a config and the cast of a param/output tree.

Shared by supervised training, online fine-tuning and the ensembles' predictions (every caller that applies
a model in its configured compute dtype), so it lives with the models.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["cast_floating", "compute_dtype"]


def cast_floating(tree, dtype):
    """Every floating leaf of `tree` cast to `dtype` (integer and bool leaves unchanged)."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def compute_dtype(config):
    """`jnp.bfloat16` when `config.compute_dtype == "bfloat16"`, else `jnp.float32`."""
    return jnp.bfloat16 if getattr(config, "compute_dtype", "float32") == "bfloat16" else jnp.float32
