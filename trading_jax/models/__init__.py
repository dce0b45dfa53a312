"""Flax Linen networks of the design documents, built by name: `create(name, preset=None, **cfg)`."""

from trading_jax.models.registry import available, create, register

__all__ = ["available", "create", "register"]
