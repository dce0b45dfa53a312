"""NumPy reference of `trading_jax.envs.portfolio`: one environment, plain Python, float64.

Written independently of the JAX environment (same equations, see its module docstring): holdings as
cash and units, targets traded at the next bar's open with fee + half spread + slippage on the risky
turnover, marked at that bar's close; reward `log(E_{t+1} / E_t)` or its mean-variance penalised form.
The capped-simplex projection here is the exact sort-based breakpoint algorithm (no bisection).
An invalid action (a NaN or infinite entry; in "softmax" mode a NaN or +inf entry, or all entries -inf)
places no order: cash and units are kept, no cost, time advances.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["project_capped_simplex_np", "softmax_np", "PortfolioEnvNumpy"]


def softmax_np(x) -> np.ndarray:
    """Numerically stable softmax of a vector (float64)."""
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def project_capped_simplex_np(v, upper) -> np.ndarray:
    """Exact Euclidean projection onto `{w : sum w = 1, 0 <= w <= upper}` by sorting breakpoints.

    `s(theta) = sum_i clip(v_i - theta, 0, u_i)` is piecewise linear and nonincreasing, with kinks at
    `v_i` and `v_i - u_i`. Sort the kinks, find the consecutive pair `a < b` with `s(a) >= 1 >= s(b)`,
    and interpolate linearly between them (exact, since `s` is linear on `[a, b]`).

    Args:
        v: `[K]` scores.
        upper: scalar or `[K]` upper bounds with `sum(upper) >= 1`.

    Returns:
        `[K]` float64 weights.
    """
    v = np.asarray(v, np.float64)
    u = np.broadcast_to(np.asarray(upper, np.float64), v.shape)
    if u.sum() < 1.0 - 1e-12:
        raise ValueError(f"infeasible: sum(upper) = {u.sum()} < 1")

    def s(theta):
        return float(np.clip(v - theta, 0.0, u).sum())

    kinks = np.sort(np.concatenate([v, v - u]))
    values = [s(k) for k in kinks]  # nonincreasing in the kink
    for a, b, sa, sb in zip(kinks[:-1], kinks[1:], values[:-1], values[1:]):
        if sa >= 1.0 >= sb:
            theta = a if sa == sb else a + (sa - 1.0) * (b - a) / (sa - sb)
            return np.clip(v - theta, 0.0, u)
    # s(min kink) = sum(u) >= 1 and s(max kink) = 0, so the loop always returns.
    raise AssertionError("unreachable")


class PortfolioEnvNumpy:
    """Single portfolio environment in NumPy (float64).

    Args:
        market: object with `open`, `close`, `spread`, `log_return` `[P, T, N]` and `features`
            `[P, T, N, F]` arrays (e.g. a `MarketArrays`; converted to NumPy float64).
        window, episode_length, action_mode, reward, include_cash: as `PortfolioEnv`.
        initial_cash, fee_rate, slippage, cap, risk_aversion, ruin_fraction: as `EnvParams`.
    """

    def __init__(self, market, *, window, episode_length, action_mode="softmax", reward="log_growth",
                 include_cash=True, initial_cash=100_000.0, fee_rate=1e-3, slippage=0.0, cap=1.0,
                 risk_aversion=1.0, ruin_fraction=0.2):
        self.open = np.asarray(market.open, np.float64)
        self.close = np.asarray(market.close, np.float64)
        self.spread = np.asarray(market.spread, np.float64)
        self.log_return = np.asarray(market.log_return, np.float64)
        self.features = np.asarray(market.features, np.float64)
        self.n = self.close.shape[2]
        self.window = window
        self.episode_length = episode_length
        self.action_mode = action_mode
        self.reward_kind = reward
        self.include_cash = include_cash
        self.initial_cash = float(initial_cash)
        self.fee_rate = float(fee_rate)
        self.slippage = float(slippage)
        self.cap = float(cap)
        self.risk_aversion = float(risk_aversion)
        self.ruin_fraction = float(ruin_fraction)

    # --- state helpers -------------------------------------------------------------------------------
    def _value(self, prices) -> float:
        total = self.cash
        for i in range(self.n):
            total += self.units[i] * prices[i]
        return total

    def weights(self) -> np.ndarray:
        """`[N + 1]` weights at the current close, cash first."""
        prices = self.close[self.path, self.t]
        equity = self._value(prices)
        w = [self.cash / equity] + [self.units[i] * prices[i] / equity for i in range(self.n)]
        return np.array(w)

    def observation(self) -> np.ndarray:
        t = self.t
        returns = self.log_return[self.path, t - self.window + 1: t + 1].reshape(-1)
        w = self.weights()
        if not self.include_cash:
            w = w[1:]
        extra = [self.equity / self.initial_cash - 1.0, (self.episode_length - self.time) / self.episode_length]
        parts = [returns, w, np.array(extra)]
        if self.features.shape[3]:
            parts.append(self.features[self.path, t].reshape(-1))
        return np.concatenate(parts)

    # --- API -----------------------------------------------------------------------------------------
    def reset(self, path: int, t0: int) -> np.ndarray:
        """Start an episode on `path` at decision bar `t0`; returns the observation."""
        self.path, self.t0, self.time = int(path), int(t0), 0
        self.t = self.t0
        if self.include_cash:
            self.cash = self.initial_cash
            self.units = np.zeros(self.n)
        else:
            self.cash = 0.0
            self.units = np.array([self.initial_cash / self.n / self.close[self.path, self.t0, i]
                                   for i in range(self.n)])
        self.equity = self._value(self.close[self.path, self.t])
        self.log_growths: list[float] = []
        return self.observation()

    def target(self, action) -> np.ndarray:
        """Target weights `[N + 1]`, cash first."""
        a = np.asarray(action, np.float64)
        if self.action_mode == "softmax":
            w = softmax_np(a)
        else:
            upper = np.full(a.shape, self.cap)
            if self.include_cash:
                upper[0] = 1.0
            w = project_capped_simplex_np(a, upper)
        if not self.include_cash:
            w = np.concatenate([[0.0], w])
        return w

    def invalid(self, action) -> bool:
        """No order this step: a NaN or infinite entry ("softmax": a NaN or +inf entry, or every entry -inf)."""
        a = np.asarray(action, np.float64)
        if self.action_mode == "softmax":
            return bool(np.isnan(a).any() or (a == np.inf).any() or (a == -np.inf).all())
        return not bool(np.isfinite(a).all())

    def step(self, action):
        """One decision: returns `(obs, reward, terminated, truncated, info)`."""
        invalid = self.invalid(action)
        t1 = self.t + 1
        opens = self.open[self.path, t1]
        closes = self.close[self.path, t1]
        # drifted weights at the open
        value = self._value(opens)
        drift = np.array([self.units[i] * opens[i] / value for i in range(self.n)])
        turnover, cost = 0.0, 0.0
        if invalid:  # no order: keep cash and units; the weights held are the drifted ones
            w = np.concatenate([[self.cash / value], drift])
        else:
            w = self.target(action)
            # costs on the risky turnover
            for i in range(self.n):
                traded = abs(w[1 + i] - drift[i])
                turnover += traded
                cost += (self.fee_rate + 0.5 * self.spread[self.path, t1, i] + self.slippage) * traded * value
            net = value - cost
            self.cash = w[0] * net
            self.units = np.array([w[1 + i] * net / opens[i] for i in range(self.n)])
        self.t, self.time = t1, self.time + 1
        previous = self.equity
        self.equity = self._value(closes)
        log_growth = math.log(max(self.equity / previous, 1e-12))
        if self.reward_kind == "log_growth":
            reward = log_growth
        else:
            mean = float(np.mean(self.log_growths)) if self.log_growths else 0.0
            reward = log_growth - self.risk_aversion * (log_growth - mean) ** 2
        self.log_growths.append(log_growth)
        terminated = self.equity <= self.ruin_fraction * self.initial_cash
        truncated = self.time >= self.episode_length
        info = {"equity": self.equity, "weights": self.weights(), "target_weights": w, "turnover": turnover,
                "cost": cost, "log_growth": log_growth, "cash": self.cash, "units": self.units.copy(),
                "invalid_action": invalid}
        return self.observation(), reward, terminated, truncated, info
