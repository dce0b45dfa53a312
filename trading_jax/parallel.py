"""Meshes and shardings: the one place every algorithm gets its device layout from.

A training algorithm is data parallel over a 1-D mesh with a `"data"` axis: arrays with a batch (or env)
axis are sharded over it with `NamedSharding(mesh, P("data"))`, params and optimiser state are replicated
(`P()`), and XLA's SPMD partitioner inserts the gradient all-reduces. The mesh uses Auto axis types
(`jax.make_mesh` defaults to Explicit since JAX 0.9). Test multi-device code on CPU with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`.

    mesh = make_mesh()                      # all local devices
    check_divisible(mesh, batch=256, what="batch_size")
    x = constrain(x, mesh, P("data"))       # inside jit: a sharding constraint; no-op without a mesh

The mesh may span several processes (`trading_jax.distributed.initialize` first: `jax.devices()` then lists
every process's devices). `use_mesh(mesh)` makes a mesh the active one for the data-parallel algorithms
(supervised training, PPO and the off-policy loop shard their batch / env axis over it when they are given no
mesh), which is how
`trading-jax train --distributed` reaches them; `shard_rows` places a host array's rows over the mesh with each
process putting only its own rows on its devices.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

__all__ = ["make_mesh", "use_mesh", "active_mesh", "shard_rows", "replicate", "global_args", "spans_processes", "data_axis_size",
           "check_divisible", "constrain", "batch_sharding", "replicated_sharding", "P"]

DATA_AXIS = "data"
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("trading_jax_mesh", default=None)


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


@contextlib.contextmanager
def use_mesh(mesh):
    """Make `mesh` the active mesh inside the block (None: no mesh): data-parallel algorithms built there without
    a mesh of their own (`training.make_trainer`, `rl.ppo.make_trainer`, `rl.offpolicy.make_offpolicy_trainer`)
    shard over it."""
    token = _ACTIVE.set(mesh)
    try:
        yield mesh
    finally:
        _ACTIVE.reset(token)


def active_mesh():
    """The mesh of the innermost `use_mesh` block, or None."""
    return _ACTIVE.get()


def spans_processes(mesh) -> bool:
    """Whether the mesh holds devices of other processes (a multi-host mesh)."""
    return mesh is not None and any(d.process_index != jax.process_index() for d in mesh.devices.flat)


def shard_rows(x, mesh):
    """`x` (a host array or pytree of arrays sharing axis 0, `[n, ...]`) as global arrays sharded on axis 0 over
    the mesh's "data" axis, padded with zero rows to `[ceil(n / D) * D, ...]` for D devices. Each process builds
    only the shards of its own devices (`jax.make_array_from_callback`), so a process holds about n / P rows of
    the data on device. Callers index rows `0 .. n-1` only (the padding is never read)."""
    n_dev = data_axis_size(mesh)
    sharding = NamedSharding(mesh, P(DATA_AXIS))

    def one(a):
        a = np.asarray(a)
        rows = -(-a.shape[0] // n_dev) * n_dev
        shape = (rows,) + a.shape[1:]

        def piece(index):
            block = index[0]
            start, stop = block.start or 0, block.stop if block.stop is not None else rows
            out = np.zeros((stop - start,) + a.shape[1:], a.dtype)
            have = a[start:min(stop, a.shape[0])]
            out[: have.shape[0]] = have
            return out[(slice(None),) + tuple(index[1:])]

        return jax.make_array_from_callback(shape, sharding, piece)

    return jax.tree.map(one, x)


def replicate(tree, mesh):
    """Every leaf of `tree` replicated on every device of the mesh; each process gives its own host copy (which
    must be the same everywhere). Built with `jax.make_array_from_callback`: `jax.device_put` to a multi-process
    sharding compares the processes' copies first, and JAX 0.10 fails that check for 0-d arrays."""
    sharding = replicated_sharding(mesh)

    def one(leaf):
        a = np.asarray(leaf)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree.map(one, tree)


def global_args(tree, mesh):
    """A trainer's shared arguments (env params, ...) as global replicated arrays when the mesh spans processes
    (`replicate`), else unchanged: on one process jit places host arrays itself."""
    return replicate(tree, mesh) if spans_processes(mesh) else tree
