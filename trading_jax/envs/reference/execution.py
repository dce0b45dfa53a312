"""Plain-Python NumPy reference of ONE execution environment (`trading_jax.envs.execution`).

Written from the equations of the docstrings of `trading_jax.envs.execution` and
`trading_jax.envs.orderbook`, with no code shared beyond them: loops over levels, `math` scalars,
float64 throughout. Randomness is injected: `reset` and `step` take the `BookNoise` that the JAX
environment draws from its key (`orderbook.draw_noise`), converted to NumPy by the caller, so both
implementations see the same shocks. Used by the equivalence tests and as the NumPy peer of the
environment throughput benchmark.

    ref = ExecutionReference(horizon=60, n_levels=5, params=params_dict)
    obs, state = ref.reset(noise)                       # noise: anything with the BookNoise fields
    obs, state, reward, done, info = ref.step(state, action, noise)
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = ["ExecutionReference", "params_to_dict"]

_KIND = ["none", "market", "market", "market", "aggressive", "passive", "iceberg", "market", "market", "market"]
_KIND_CODE = {"none": 0, "market": 1, "aggressive": 2, "passive": 3, "iceberg": 4}


def params_to_dict(params) -> dict[str, float]:
    """The float fields of an `EnvParams` (or a vmapped slice of one) as Python floats."""
    out = {}
    for name in params.__dataclass_fields__:
        if name in ("market", "max_steps_in_episode", "volume_profile", "flow"):
            continue
        out[name] = float(np.asarray(getattr(params, name)))
    return out


class ExecutionReference:
    """One execution environment stepped in plain Python.

    Args:
        horizon: H.  n_levels: L.
        params: mapping of the `EnvParams` float fields (`params_to_dict`).
        log_returns: replay only: the exogenous log returns `[T]` of the episode's path (bar index), and
            `mid_source="replay"` is implied; `close` `[T]` gives the initial mid.
    """

    def __init__(self, horizon: int, n_levels: int, params: Mapping[str, float], log_returns=None, close=None):
        self.h = int(horizon)
        self.n = int(n_levels)
        self.p = dict(params)
        self.log_returns = None if log_returns is None else np.asarray(log_returns, np.float64)
        self.close = None if close is None else np.asarray(close, np.float64)
        p = self.p
        self.dbar = [p["depth0"] * (1.0 + p["depth_slope"] * level) for level in range(self.n)]

    # ---------------------------------------------------------------- book pieces
    def _profile(self, t: int) -> float:
        u = 2.0 * (t + 0.5) / self.h - 1.0
        return max(0.05, 1.0 + self.p["volume_curvature"] * (u * u - 1.0 / 3.0))

    def _depths(self, z: float, noise) -> tuple[list, list]:
        sd = self.p["depth_vol"]
        imb = math.tanh(z)
        m = math.exp(sd * float(noise.depth_best) - 0.5 * sd * sd)
        bid, ask = [], []
        for level in range(self.n):
            if level == 0:
                bid.append(self.dbar[0] * m * (1.0 + imb))
                ask.append(self.dbar[0] * m * (1.0 - imb))
            else:
                bid.append(self.dbar[level] * math.exp(sd * float(noise.bid[level]) - 0.5 * sd * sd))
                ask.append(self.dbar[level] * math.exp(sd * float(noise.ask[level]) - 0.5 * sd * sd))
        return bid, ask

    def _sqrt_law(self, qty: float, coef: float) -> float:
        return coef * self.p["sigma"] * math.sqrt(max(qty, 0.0) / self.p["volume"])

    def _temp_impact(self, q: float, bid: list, ask: list) -> float:
        """(e / q) * eta * sigma * sqrt(e * Dbar / (D * V)) on the side a `side` order takes from."""
        book = ask if self.p["side"] > 0 else bid
        excess = max(q - book[0], 0.0)
        if q <= 0.0:
            return 0.0
        return excess / q * self._sqrt_law(excess * sum(self.dbar) / sum(book), self.p["eta"])

    # ---------------------------------------------------------------- env
    def reset(self, noise, t0: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
        p = self.p
        if self.close is not None:
            mid0 = float(self.close[t0])
        else:
            mid0 = p["mid0"]
        z = float(noise.imbalance)
        rho = p["spread_persistence"]
        spread = p["spread_mean"] * math.exp(p["spread_vol"] / math.sqrt(1.0 - rho * rho) * float(noise.spread))
        bid, ask = self._depths(z, noise)
        state = dict(
            t=0, t0=t0, mid=mid0, z=z, spread=spread, bid=bid, ask=ask, volume=p["volume"], mom=0.0,
            var=p["sigma"] ** 2, vema=p["volume"], executed=0.0, remaining=p["quantity"], cash=0.0,
            arrival=mid0, vwap_num=0.0, vwap_den=0.0, impact_qty=0.0,
        )
        return self.observe(state), state

    def observe(self, s: dict[str, Any]) -> np.ndarray:
        p, h = self.p, self.h
        side, sigma = p["side"], p["sigma"]
        sig_h = sigma * math.sqrt(h)
        imb = math.tanh(s["z"])
        best = s["ask"][0] if side > 0 else s["bid"][0]
        large = any(s["bid"][i] > p["large_order_k"] * self.dbar[i] or s["ask"][i] > p["large_order_k"] * self.dbar[i]
                    for i in range(self.n))
        has = s["executed"] > 0.0
        avg = s["cash"] / s["executed"] if has else s["arrival"]
        vwap = s["vwap_num"] / s["vwap_den"] if s["vwap_den"] > 0 else s["arrival"]
        lam = p["ewma_decay"]
        rem = s["remaining"]  # impact of finishing now with one market order
        predicted = self._temp_impact(rem, s["bid"], s["ask"]) + (
            self._sqrt_law(s["impact_qty"] + rem, p["gamma"]) - self._sqrt_law(s["impact_qty"], p["gamma"])
        )
        return np.array(
            [
                s["spread"] / p["spread_mean"],
                imb,
                best / p["depth0"],
                1.0 if large else 0.0,
                s["remaining"] / p["quantity"],
                (h - s["t"]) / h,
                s["executed"] / p["quantity"],
                math.log(avg / s["mid"]) / sig_h if has else 0.0,
                math.sqrt(s["var"]) / sigma,
                math.log(s["vema"] / p["volume"]),
                s["mom"] / sigma * math.sqrt((1 + lam) / (1 - lam)),
                side * (avg - s["arrival"]) / s["arrival"] / sig_h if has else 0.0,
                side * (avg - vwap) / vwap / sig_h if has else 0.0,
                predicted / sigma,
                side,
                0.0,  # resting, queue ahead, trade flow: the modelled book's entries (0 in the simple book)
                0.0,
                0.0,
            ]
        )

    def step(self, s: dict[str, Any], action: int, noise):
        p, h = self.p, self.h
        side, sigma, t = p["side"], p["sigma"], s["t"]
        rem = s["remaining"]
        imb_t = math.tanh(s["z"])

        # 1. the order, sized from what is known at t; an invalid action (NaN/inf, or an integer part
        # outside 0..9) is the wait action 0
        value = float(np.asarray(action, np.float64))
        invalid = not (math.isfinite(value) and -1 < value < 10)
        action = 0 if invalid else int(value)
        twap = rem / (h - t)
        weights = [self._profile(k) for k in range(h)]
        vwap_slice = rem * weights[t] / sum(weights[t:])
        adaptive = twap * min(max(1.0 + p["adaptive_k"] * side * imb_t, 0.5), 2.0)
        sizes = [0.0, 0.1 * rem, 0.25 * rem, 0.5 * rem, rem, twap, 2 * twap, twap, vwap_slice, adaptive]
        kind, size = _KIND[action], min(sizes[action], rem)
        if t == h - 1:
            kind, size = "market", rem

        # 2. the book moves to t + 1
        if self.log_returns is not None:
            r_exo = float(self.log_returns[s["t0"] + t + 1])
        else:
            r_exo = p["alpha"] * imb_t * sigma + sigma * float(noise.mid)
        mid = s["mid"] * math.exp(r_exo)
        phi = p["imb_persistence"]
        z = phi * s["z"] + math.sqrt(1 - phi * phi) * float(noise.imbalance)
        rho = p["spread_persistence"]
        spread = p["spread_mean"] * (s["spread"] / p["spread_mean"]) ** rho
        spread *= math.exp(p["spread_vol"] * float(noise.spread))
        bid, ask = self._depths(z, noise)
        sdv = p["volume_vol"]
        volume = p["volume"] * self._profile(t) * math.exp(sdv * float(noise.volume) - 0.5 * sdv * sdv)

        # 3. the fill at t + 1
        best = ask[0] if side > 0 else bid[0]
        prob = p["p_fill"] * (1 - side * p["fill_imbalance"] * math.tanh(z)) * math.exp(
            -p["fill_decay"] * p["passive_offset"] / sigma
        )
        prob = min(max(prob, 0.0), 1.0)
        u = float(noise.fill)
        if kind == "market":
            fill = size
        elif kind == "aggressive":
            fill = min(size, best)
        elif kind == "passive":
            fill = size if u < prob else 0.0
        elif kind == "iceberg":
            fill = size if u < prob * p["iceberg_fill_factor"] else 0.0
        else:
            fill = 0.0
        if fill > 0 and rem - fill < p["min_lot"]:
            fill = rem
        temp = 0.0
        if kind == "market":
            temp = self._temp_impact(fill, bid, ask)
            offset = spread / 2 + temp
        elif kind == "aggressive":
            offset = spread / 2
        elif kind in ("passive", "iceberg"):
            offset = -(spread / 2 + p["passive_offset"])
        else:
            offset = 0.0
        offset = min(max(offset, -0.5), 0.5)  # the env's MAX_OFFSET
        price = mid * (1 + side * offset)
        x_new = s["impact_qty"] + (fill if kind not in ("iceberg", "none") else 0.0)
        perm = self._sqrt_law(x_new, p["gamma"]) - self._sqrt_law(s["impact_qty"], p["gamma"])
        mid_after = mid * math.exp(side * perm)
        r_obs = math.log(mid_after / s["mid"])
        lam = p["ewma_decay"]

        new = dict(
            t=t + 1, t0=s["t0"], mid=mid_after, z=z, spread=spread, bid=bid, ask=ask, volume=volume,
            mom=lam * s["mom"] + (1 - lam) * r_obs, var=lam * s["var"] + (1 - lam) * r_obs**2,
            vema=lam * s["vema"] + (1 - lam) * volume, executed=s["executed"] + fill, remaining=rem - fill,
            cash=s["cash"] + fill * price, arrival=s["arrival"], vwap_num=s["vwap_num"] + volume * mid,
            vwap_den=s["vwap_den"] + volume, impact_qty=x_new,
        )

        # 4. reward
        frac = fill / p["quantity"]
        slip = side * (price - s["arrival"]) / s["arrival"] * frac
        slip_term = p["abs_slippage"] * abs(slip) + (1 - p["abs_slippage"]) * slip
        completed = new["remaining"] <= 0.0
        reward = (
            -p["w_slippage"] * slip_term
            - p["w_impact"] * (frac * temp + perm)
            - p["w_time"] * (t + 1) / h
            + (p["w_bonus"] if completed else 0.0)
        )
        done = completed or t + 1 >= h
        avg = new["cash"] / new["executed"] if new["executed"] > 0 else s["arrival"]
        vwap = new["vwap_num"] / new["vwap_den"]
        info = dict(
            shortfall_bps=side * (avg - s["arrival"]) / s["arrival"] * 1e4 if new["executed"] > 0 else 0.0,
            vwap_slippage_bps=side * (avg - vwap) / vwap * 1e4 if new["executed"] > 0 else 0.0,
            executed=new["executed"], remaining=new["remaining"], fill_qty=fill,
            fill_price=price if fill > 0 else mid, avg_price=avg, market_vwap=vwap, mid=mid_after,
            temporary_impact_bps=temp * 1e4, permanent_impact_bps=perm * 1e4, completed=completed,
            forced=(t == h - 1 and rem > 0), order_kind=_KIND_CODE[kind], invalid_action=invalid,
        )
        return self.observe(new), new, reward, done, info
