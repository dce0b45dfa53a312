"""Model registry: `create(name, **cfg)` builds any registered Flax Linen module by name.

A model module registers a factory with presets (e.g. "seed" sizes from the design documents and
"tiny" sizes for tests):

    @register("tcn", presets={"tiny": dict(channels=8, levels=3)})
    def tcn(**cfg) -> nn.Module: ...

    model = create("tcn", preset="tiny", n_outputs=3)   # preset values, then overrides

Factories take keyword arguments only and return an unbound `flax.linen.Module`, so `create` is
cheap and the result is hashable (usable as a static argument under `jit`).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple

# Modules that register models when imported; `create` imports them on first use.
MODEL_MODULES = (
    "trading_jax.models.transformer",
    "trading_jax.models.recurrent",
    "trading_jax.models.cnn_lstm",
    "trading_jax.models.tcn",
    "trading_jax.models.multitask",
    "trading_jax.models.actor_critic",
    "trading_jax.models.q_networks",
    "trading_jax.models.bert",
    "trading_jax.models.portfolio",
)


class Entry(NamedTuple):
    factory: Callable[..., Any]
    presets: dict[str, dict[str, Any]]


_REGISTRY: dict[str, Entry] = {}


def register(name: str, presets: dict[str, dict[str, Any]] | None = None):
    """Decorator registering `factory(**cfg) -> nn.Module` under `name` with named presets."""

    def decorate(factory):
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"model {name!r} is already registered by {_REGISTRY[name].factory.__module__}")
        _REGISTRY[name] = Entry(factory, dict(presets or {}))
        return factory

    return decorate


def _load_all() -> None:
    for module in MODEL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:  # a model module that does not exist yet
            if error.name != module:
                raise


def available() -> dict[str, tuple[str, ...]]:
    """Registered model names and their preset names."""
    _load_all()
    return {name: tuple(entry.presets) for name, entry in sorted(_REGISTRY.items())}


def create(name: str, preset: str | None = None, **cfg):
    """Build the model `name`, from `preset` values (if given) updated with `cfg`.

    Raises:
        KeyError: unknown model or preset, naming the known ones.
    """
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {sorted(_REGISTRY)}")
    entry = _REGISTRY[name]
    kwargs: dict[str, Any] = {}
    if preset is not None:
        if preset not in entry.presets:
            raise KeyError(f"model {name!r} has no preset {preset!r}; presets: {sorted(entry.presets)}")
        kwargs.update(entry.presets[preset])
    kwargs.update(cfg)
    return entry.factory(**kwargs)
