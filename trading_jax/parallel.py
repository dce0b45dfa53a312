"""Meshes and shardings: the one place every algorithm gets its device layout from.

A training algorithm is data parallel over a 1-D mesh with a `"data"` axis: arrays with a batch (or env)
axis are sharded over it with `NamedSharding(mesh, P("data"))`, params and optimiser state are replicated
(`P()`), and XLA's SPMD partitioner inserts the gradient all-reduces. The mesh uses Auto axis types
(`jax.make_mesh` defaults to Explicit since JAX 0.9). Test multi-device code on CPU with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`.

    mesh = make_mesh()                      # all local devices
    check_divisible(mesh, batch=256, what="batch_size")
    x = constrain(x, mesh, P("data"))       # inside jit: a sharding constraint; no-op without a mesh
"""

from __future__ import annotations

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

__all__ = ["make_mesh", "data_axis_size", "check_divisible", "constrain", "batch_sharding", "replicated_sharding", "P"]

DATA_AXIS = "data"


def make_mesh(n_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh with a "data" axis over `n_devices` (default all) devices, with Auto axis types."""
    n = jax.device_count() if n_devices is None else int(n_devices)
    if not 1 <= n <= jax.device_count():
        raise ValueError(f"make_mesh: asked for {n} devices, this process sees {jax.device_count()}")
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def data_axis_size(mesh) -> int:
    """Devices on the mesh's "data" axis (1 without a mesh). Raises if the mesh has no such axis."""
    if mesh is None:
        return 1
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"the mesh needs a '{DATA_AXIS}' axis; it has {mesh.axis_names}")
    return int(mesh.shape[DATA_AXIS])


def check_divisible(mesh, **sizes: int) -> None:
    """Raise ValueError naming the first size (e.g. `num_envs=10`) not divisible by the data axis."""
    n = data_axis_size(mesh)
    for name, size in sizes.items():
        if int(size) % n:
            raise ValueError(f"{name}={size} is not divisible by the {n} devices of the '{DATA_AXIS}' axis")


def batch_sharding(mesh) -> NamedSharding | None:
    """Leading axis over "data" (None without a mesh)."""
    return None if mesh is None else NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh) -> NamedSharding | None:
    """Every device holds the whole array (None without a mesh)."""
    return None if mesh is None else NamedSharding(mesh, P())


def constrain(tree, mesh, spec: P):
    """`with_sharding_constraint(tree, NamedSharding(mesh, spec))` inside jit; the tree unchanged without a mesh."""
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, spec))
