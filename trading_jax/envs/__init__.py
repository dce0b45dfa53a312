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

Markets (`trading_jax.envs.market`): replayed real bars or banks of synthetic paths, held in `EnvParams`;
`make_market` refuses NaN/inf bars and features.

Invalid actions, one rule for every environment: an action with a NaN or infinite entry (or a discrete
action outside its range: trading's {0, 1, 2} per asset, execution's 0..9) places **no order this step**.
Positions, cash, weights and the remaining inventory are kept, nothing is traded or paid, and time still
advances (the book or prices move, the portfolio is marked, the reward and episode end follow). In the
execution env this is the "wait" action 0 (its forced completion at the last step still applies); in the
portfolio env's "softmax" mode a `-inf` logit is a valid zero weight (invalid: a NaN or `+inf` entry, or
all `-inf`). Every env reports `info["invalid_action"]` (bool), True on such a step.
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
