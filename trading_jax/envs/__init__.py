"""Pure-JAX vectorised market environments with the gymnax API.

    env, env_params = trading_jax.envs.make("trading", **kw)
    obs, state = env.reset(key, env_params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, env_params)

Registered environments (see `available()`):
    "trading": one or many assets; discrete {short, flat, long}, continuous target position, or seed 003's
        [position_size, hold_time]; fees, spread and slippage; PnL / log-return / differential-Sharpe /
        seed-003 rewards (`trading_jax.envs.trading`).
    "execution": buy or sell a parent order within a horizon against an on-device limit-order-book model,
        with seed 000's 10 actions and reward (`trading_jax.envs.execution`).
    "portfolio": N assets, target weights, turnover costs, log growth (`trading_jax.envs.portfolio`).

Markets (`trading_jax.envs.market`): replayed real bars or banks of synthetic paths, held in `EnvParams`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from trading_jax._lazy import lazy_exports

# name -> "module:factory"; a factory takes keyword arguments and returns (env, env_params).
_ENVS: dict[str, str] = {
    "trading": "trading_jax.envs.trading:make_trading",
    "execution": "trading_jax.envs.execution:make_execution",
    "portfolio": "trading_jax.envs.portfolio:make_portfolio",
}


def available() -> tuple[str, ...]:
    """Names accepted by `make`."""
    return tuple(sorted(_ENVS))


def make(name: str, **kw: Any):
    """Build a registered environment: `(env, env_params)`.

    Args:
        name: one of `available()`.
        **kw: the environment factory's keyword arguments (static settings go to the environment,
            everything vmappable to its `EnvParams`; see each factory's docstring).

    Raises:
        KeyError: for an unknown name, listing the known ones.
    """
    return factory(name)(**kw)


def factory(name: str) -> Callable[..., Any]:
    """The factory behind `make(name, **kw)` (e.g. to read the keyword arguments it accepts).

    Raises:
        KeyError: for an unknown name, listing the known ones.
    """
    if name not in _ENVS:
        raise KeyError(f"unknown environment {name!r}; available: {list(available())}")
    module, attribute = _ENVS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "MarketArrays": "market",
        "make_market": "market",
        "replay_market": "market",
        "synthetic_market": "market",
        "sample_episode": "market",
    },
)
__all__ = ["make", "factory", "available", "MarketArrays", "make_market", "replay_market", "synthetic_market", "sample_episode"]
