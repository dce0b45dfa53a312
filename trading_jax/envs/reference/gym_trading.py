"""A Gymnasium port of the trading environment, for peers such as Stable-Baselines3.

`GymTradingEnv` is a `gymnasium.Env` around the NumPy reference `TradingEnvNumpy` (float64 maths,
observations handed out as float32 like `TradingEnv`): same observation, action space, reward and
`terminated` (ruin) / `truncated` (after `episode_length` decisions) as the JAX environment, without
auto-reset (Gymnasium semantics: call `reset` after either). `reset(seed=)` draws the episode start
(path, then first decision bar) with the env's seeded NumPy generator; `reset(options={"path": p,
"t0": t})` starts at a chosen one.

    env = GymTradingEnv.from_jax(*make_trading())          # same market and settings as ours
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(2)

Gymnasium is not a core dependency of trading_jax: it is imported by this module only
(`pip install gymnasium`, or the `bench` extra).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from trading_jax.envs.reference.trading import TradingEnvNumpy

__all__ = ["GymTradingEnv", "PARAM_FIELDS"]

#: `EnvParams` fields that `TradingEnvNumpy` takes as keyword arguments.
PARAM_FIELDS = ("initial_equity", "fee_rate", "slippage", "max_position", "ruin_fraction", "max_hold", "eta",
                "drawdown_penalty", "sharpe_eps")


class GymTradingEnv(gymnasium.Env):
    """`TradingEnvNumpy` behind the Gymnasium API.

    Args:
        market: a `MarketArrays` (or any object with `open`, `close`, `spread`, `features` arrays
            `[P, T, N(, F)]`, JAX or NumPy); copied to NumPy float64.
        **kwargs: `window`, `episode_length`, `action_mode`, `reward` and the `EnvParams` fields
            (`initial_equity`, `fee_rate`, ...), as `TradingEnvNumpy`.

    Spaces:
        observation: `Box(-inf, inf, (W*N + N + 2 + N*F,), float32)`.
        action: `Discrete(3)` (discrete, N = 1), `MultiDiscrete([3] * N)` (discrete, N > 1),
            `Box(-1, 1, (N,), float32)` (continuous) or `Box([-1, 0], [1, 1], float32)` (position_hold).
    """

    metadata = {"render_modes": []}

    def __init__(self, market, **kwargs: Any):
        super().__init__()
        self.core = TradingEnvNumpy(market, **kwargs)
        core = self.core
        n = core.N
        obs_size = core.window * n + n + 2 + n * core.features.shape[-1]
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_size,), np.float32)
        if core.mode == "discrete":
            self.action_space = spaces.Discrete(3) if n == 1 else spaces.MultiDiscrete([3] * n)
        elif core.mode == "continuous":
            self.action_space = spaces.Box(-1.0, 1.0, (n,), np.float32)
        else:
            self.action_space = spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 1.0], np.float32),
                                           dtype=np.float32)

    @classmethod
    def from_jax(cls, env, params) -> "GymTradingEnv":
        """The port of a JAX `TradingEnv` and its `EnvParams` (same market arrays and settings)."""
        import jax

        return cls(jax.device_get(params.market), window=env.window, episode_length=env.episode_length,
                   action_mode=env.action_mode, reward=env.reward_kind,
                   **{f: float(getattr(params, f)) if f != "max_hold" else int(getattr(params, f))
                      for f in PARAM_FIELDS})

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A new episode: at `options["path"], options["t0"]` when given, else a uniform random start."""
        super().reset(seed=seed)
        options = options or {}
        obs = self.core.reset(self.np_random, path=options.get("path"), t0=options.get("t0"))
        return obs.astype(np.float32), {"path": self.core.path, "t": self.core.t}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.core.step(action)
        return obs.astype(np.float32), reward, terminated, truncated, info
