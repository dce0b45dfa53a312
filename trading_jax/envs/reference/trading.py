"""Plain-Python NumPy reference of `trading_jax.envs.trading.TradingEnv`: one environment, float64.

Written independently of the JAX code (only the equations are shared; see the JAX module's docstring
for them, and for invalid actions: a NaN/inf entry, or a discrete entry outside {0, 1, 2}, places no
order). No auto-reset: after `terminated` or `truncated` call `reset` again, as with Gymnasium.

    env = TradingEnvNumpy(market_arrays, window=32, episode_length=256, action_mode="discrete", reward="pnl")
    obs = env.reset(path=0, t0=40)          # or env.reset(np.random.default_rng(0))
    obs, reward, terminated, truncated, info = env.step(2)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TradingEnvNumpy"]

_MODES = ("discrete", "continuous", "position_hold")
_REWARDS = ("pnl", "log_return", "differential_sharpe", "seed003")


class TradingEnvNumpy:
    """Single trading environment in NumPy float64.

    Args:
        market: a `MarketArrays` (or any object with `open`, `close`, `spread`, `log_return`, `features`
            arrays `[P, T, N(, F)]`); copied to NumPy float64.
        window, episode_length, action_mode, reward: as `TradingEnv`.
        initial_equity, fee_rate, slippage, max_position, ruin_fraction, max_hold, eta, drawdown_penalty,
            sharpe_eps: as `EnvParams`.
    """

    def __init__(self, market, *, window=32, episode_length=256, action_mode="discrete", reward="pnl",
                 initial_equity=100_000.0, fee_rate=1e-3, slippage=0.0, max_position=1.0, ruin_fraction=0.5,
                 max_hold=10, eta=0.01, drawdown_penalty=0.1, sharpe_eps=1e-8):
        if action_mode not in _MODES:
            raise ValueError(f"action_mode must be one of {list(_MODES)}; got {action_mode!r}")
        if reward not in _REWARDS:
            raise ValueError(f"reward must be one of {list(_REWARDS)}; got {reward!r}")
        self.open = np.asarray(market.open, np.float64)
        self.close = np.asarray(market.close, np.float64)
        self.spread = np.asarray(market.spread, np.float64)
        # log returns recomputed here from the closes (float64), 0 at t = 0
        lc = np.log(self.close)
        self.log_ret = np.concatenate([np.zeros_like(lc[:, :1]), np.diff(lc, axis=1)], axis=1)
        self.features = np.asarray(market.features, np.float64)
        self.P, self.T, self.N = self.close.shape
        self.window, self.L = int(window), int(episode_length)
        self.mode, self.reward_kind = action_mode, reward
        self.E0, self.fee_rate, self.slippage = float(initial_equity), float(fee_rate), float(slippage)
        self.max_position, self.ruin_fraction, self.max_hold = float(max_position), float(ruin_fraction), int(max_hold)
        self.eta, self.dd_penalty, self.eps = float(eta), float(drawdown_penalty), float(sharpe_eps)

    # --------------------------------------------------------------------------------------- episode

    def reset(self, rng=None, *, path=None, t0=None):
        """Start an episode at `(path, t0)`, or at a uniform random one drawn with `rng` (a NumPy Generator)."""
        if path is None or t0 is None:
            rng = rng if rng is not None else np.random.default_rng()
            path = int(rng.integers(0, self.P))
            t0 = int(rng.integers(self.window - 1, self.T - self.L))
        self.path, self.t = int(path), int(t0)
        self.cash = self.E0
        self.units = np.zeros(self.N)
        self.equity = self.E0
        self.time = 0
        self.hold = 0
        self.A = self.B = 0.0
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.peak = self.E0
        return self._obs(np.zeros(self.N))

    def _obs(self, weights):
        p, t, W = self.path, self.t, self.window
        parts = [self.log_ret[p, t - W + 1:t + 1].ravel(), weights,
                 [self.equity / self.E0 - 1.0, (self.L - self.time) / self.L]]
        if self.features.shape[-1]:
            parts.append(self.features[p, t].ravel())
        return np.concatenate([np.asarray(x, np.float64) for x in parts])

    # --------------------------------------------------------------------------------------- step

    def invalid(self, action) -> bool:
        """No order this step: a NaN/inf entry, or (discrete) an entry whose integer part is not 0, 1 or 2."""
        a = np.asarray(action, np.float64)
        if not np.isfinite(a).all():
            return True
        return self.mode == "discrete" and bool(np.any((a <= -1) | (a >= 3)))

    def _target_units(self, action, E, open1):
        N = self.N
        if self.invalid(action):  # no order: keep the units (a running hold still counts down)
            if self.mode == "position_hold" and self.hold > 0:
                self.hold -= 1
            return self.units.copy()
        if self.mode == "discrete":
            a = np.asarray(action, np.float64).astype(np.int64).reshape(N)
            return (a - 1) * (self.max_position / N) * E / open1
        a = np.asarray(action, np.float64)
        if self.mode == "continuous":
            a = np.clip(a.reshape(N), -1.0, 1.0)
            gross = max(1.0, float(np.abs(a).sum()))
            return a / gross * self.max_position * E / open1
        size = min(max(float(a[0]), -1.0), 1.0)
        hold_time = min(max(float(a[1]), 0.0), 1.0)
        if self.hold > 0:  # a hold is running: ignore the action, keep the position
            self.hold -= 1
            return self.units.copy()
        # the hold length is computed in float32 like the JAX env, so floor() agrees at the boundaries
        self.hold = int(math.floor(np.float32(hold_time) * np.float32(self.max_hold - 1)))
        return np.array([size * self.max_position * E / open1[0]])

    def step(self, action):
        p, t1 = self.path, self.t + 1
        open1, close1, half = self.open[p, t1], self.close[p, t1], self.spread[p, t1] / 2.0
        E = self.equity
        invalid = self.invalid(action)
        target = self._target_units(action, E, open1)
        d = target - self.units
        exec_price = open1 * (1.0 + np.sign(d) * (half + self.slippage))
        fee = self.fee_rate * float(np.sum(np.abs(d) * exec_price))
        self.cash = self.cash - float(np.sum(d * exec_price)) - fee
        self.units = target
        E1 = self.cash + float(np.sum(target * close1))
        self.equity, self.t, self.time = E1, t1, self.time + 1

        R = E1 / E - 1.0 if E > 0 else 0.0
        if self.reward_kind == "pnl":
            reward = (E1 - E) / self.E0
        elif self.reward_kind == "log_return":
            ratio = E1 / E if E > 0 else 0.0
            reward = math.log(max(ratio, 1e-12))
        elif self.reward_kind == "differential_sharpe":
            A, B = self.A, self.B
            var = B - A * A
            reward = (B * (R - A) - 0.5 * A * (R * R - B)) / var ** 1.5 if var > self.eps else 0.0
            self.A, self.B = A + self.eta * (R - A), B + self.eta * (R * R - B)
        else:  # seed003
            self.count += 1
            delta = R - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (R - self.mean)
            var = self.m2 / (self.count - 1) if self.count > 1 else 0.0
            sharpe = self.mean / math.sqrt(var) if (self.count >= 2 and var > self.eps) else 0.0
            self.peak = max(self.peak, E1)
            dd = (self.peak - E1) / self.peak if self.peak > 0 else 0.0
            reward = R * sharpe - self.dd_penalty * dd

        weights = target * close1 / E1 if E1 > 0 else np.zeros(self.N)
        notional = np.abs(d) * open1
        spread_cost = float(np.sum(notional * half))
        slippage_cost = float(np.sum(notional)) * self.slippage
        info = {
            "equity": E1, "weights": weights, "exec_price": exec_price, "trade_notional": float(notional.sum()),
            "fee": fee, "spread_cost": spread_cost, "slippage_cost": slippage_cost,
            "costs": fee + spread_cost + slippage_cost, "step_return": R, "cash": self.cash,
            "units": target.copy(), "path": p, "t": t1, "invalid_action": invalid,
        }
        terminated = E1 <= self.ruin_fraction * self.E0
        truncated = self.time >= self.L
        return self._obs(weights), float(reward), bool(terminated), bool(truncated), info
