"""Optimal execution of a parent order against an on-device limit-order-book model (seed 000, section 4).

    env, params = make_execution(side="buy", quantity=3000.0)        # synthetic mid, offline
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

The agent must buy (`side = +1`) or sell (`side = -1`) `Q = params.quantity` shares within `H = horizon`
decision steps. The book model (mid, spread, `L` depth levels per side, imbalance, market volume,
square-root temporary and permanent impact, passive fill probabilities) is documented equation by
equation in `trading_jax.envs.orderbook`.

**Mid source** (`mid_source`, a constructor argument): ``"synthetic"`` (the mid's exogenous log return
is `alpha * I_t * sigma + sigma * eps`: the imbalance carries short-term information when `alpha > 0`)
or ``"replay"`` (the exogenous return is the close-to-close log return of real bars,
`params.market.log_return[path, t0 + t + 1, 0]`, from a `MarketArrays` of one asset; the episode's
`(path, t0)` comes from `market.sample_episode`; spread, depth, imbalance and volume stay simulated, and
the imbalance then carries no information). In both modes our permanent impact is added to the mid.

**Timing (no look-ahead).** The decision at step t sees the book at t (observation `obs_t`); the order's
SIZE is fixed from what is known at t (remaining, t, `I_t`). The book then moves to t+1 (fresh noise,
or the next bar in replay) and the order fills against the book at t+1: its mid, spread, depth and
imbalance. So the agent can never choose the noise it trades at. In replay, the fill step t+1 is bar
`t0 + t + 1` (its close: the mid of a step is the bar's close, later than the bar's open of DESIGN.md's
rule, hence no earlier information). Our permanent impact then shifts the mid, and `obs_{t+1}` is built.

**Actions** (`Discrete(10)`); `R` = remaining shares, `n = H - t` steps left (this one included),
`TWAP = R / n`. Every size is capped at `R`; a fill that would leave less than `min_lot` shares takes the
whole remainder instead (no float dust). Prices are for a buy; a sell mirrors them (`side = -1`).

    0 wait             nothing
    1-3 market 10/25/50%   market order of 0.10 / 0.25 / 0.50 * R
    4 aggressive limit  marketable (IOC) limit at the best opposite quote for R: fills min(R, d1_{t+1})
                        at mid * (1 + s/2), no temporary impact, the rest is cancelled
    5 passive limit     TWAP shares resting at our best quote (+ `passive_offset` deeper), pegged:
                        fills all-or-nothing with probability p (orderbook.fill_probability) at
                        mid * (1 - s/2 - passive_offset)
    6 iceberg           hidden passive order of 2 * TWAP, fill probability p * `iceberg_fill_factor`,
                        same price, and no permanent impact (nothing is displayed)
    7 TWAP slice        market order of TWAP
    8 VWAP slice        market order of R * w(t) / sum_{s=t}^{H-1} w(s) (expected volume share, w the profile)
    9 adaptive slice    market order of TWAP * clip(1 + adaptive_k * side * I_t, 0.5, 2): more when the
                        imbalance predicts an adverse move (up for a buy), less when favourable

Market orders pay `orderbook.market_offset` (half spread plus square-root temporary impact on the part
beyond the opposite best depth). Any fill's relative concession is clipped to `[-0.5, 0.5]` (`MAX_OFFSET`,
only reached under absurd settings; it keeps prices positive). Impact-bearing fills (all but iceberg)
add to `X`, the executed displayed quantity, and the log mid moves by `side * (P(X') - P(X))`,
`P(X) = gamma * sigma * sqrt(X / V)` (`orderbook.permanent_impact`).
**Forced completion:** at the last step (t = H - 1) the action is overridden by a market order for the
whole remainder, so every episode ends with `executed == Q`.

**Invalid actions** (the same rule in every environment of `trading_jax.envs`): an action that is NaN or
infinite, or whose integer part is outside 0..9 (e.g. -1, 10; a float counts by its integer part, 3.7 is
3), places **no order this step**: it is the "wait" action 0 (nothing is sent, the remainder is kept, no
cost), and time still advances (the book moves, the time penalty is paid). The forced completion still
applies at t = H - 1, whatever the action. `info["invalid_action"]` is True on such a step.

**Accounting** (state): `executed`, `remaining` (`executed + remaining == Q` always, `remaining >= 0`),
`cost = sum q * (price / arrival - 1)` (the cash spent is `arrival * (executed + cost)`; prices are kept
relative to `arrival`, the mid at reset, so float32 resolves fractions of a bp), market VWAP so far
`sum v * mid / sum v` over the market volume `v` and pre-impact mid of each fill step,
`avg = arrival * (1 + cost / executed)`.
Implementation shortfall (bps, side-signed, positive = cost): `IS = side * (avg - arrival) / arrival * 1e4`.

**Reward** (seed 000: `-100 |slippage| - 50 impact + time_penalty + completion_bonus`), per step with
`q` the shares filled, `px` their price, `f = q / Q`:

    slip    = side * (px - arrival) / arrival * f      (sums over the episode to IS / 1e4: the seed's
                                                        slippage_cost of the executed price, per share)
    slip'   = abs_slippage * |slip| + (1 - abs_slippage) * slip       (abs_slippage = 1: the seed's |.|)
    impact  = f * temp + (P(X') - P(X))                 (temporary + permanent impact of this step)
    time    = -w_time * (t + 1) / H                     (the seed's -0.01 * time_elapsed, in horizons)
    bonus   = w_bonus if the order is complete after this step (forced completion included) else 0
    reward  = -w_slippage * slip' - w_impact * impact + time + bonus

Defaults `w_slippage = 100, w_impact = 50, w_time = 0.01, w_bonus = 10` (the seed's). The bonus is paid
once per episode; with the forced completion it rewards finishing earlier only through discounting and
the time penalty.

**Observation**, 15 float32 entries, O(1) scales (`sig_h = sigma * sqrt(H)`, the horizon volatility):

    0  spread           s_t / spread_mean
    1  imbalance        I_t in (-1, 1)
    2  depth at best    opposite best depth (ask for a buy) / depth0
    3  large order      1.0 if a level holds > large_order_k x its mean depth, else 0.0
    4  remaining        R / Q
    5  time remaining   (H - t) / H
    6  executed         executed / Q
    7  average price    log(avg / mid_t) / sig_h (0 before any fill)
    8  volatility       sqrt(EWMA of r^2) / sigma (r: observed mid log returns, decay ewma_decay)
    9  volume trend     log(EWMA of market volume / V)
    10 momentum         EWMA of r / sigma * sqrt((1 + lam) / (1 - lam))  (unit variance under no drift)
    11 slippage/arrival side * (avg - arrival) / arrival / sig_h (0 before any fill)
    12 slippage/VWAP    side * (avg - vwap) / vwap / sig_h (0 before any fill) (the seed's "current slippage")
    13 predicted impact (temp + permanent) impact of finishing now: a market order for R on the book
                        at t, / sigma (orderbook.market_offset's temp + P(X + R) - P(X))
    14 side             +1 buy, -1 sell (side is in EnvParams, so a policy may face both)

**Episode end.** `terminated` when the remainder reaches 0, which happens at the latest at step H
(forced completion): the horizon is the task's true end, not a time limit, so `truncated` is always
False and the value of the terminal state is 0. `step` auto-resets (gymnax).

**Info** (every step, after the step): `shortfall_bps` (IS of the executed part; at completion the
parent's IS), `vwap_slippage_bps`, `executed`, `remaining`, `fill_qty`, `fill_price` (mid if nothing
filled), `avg_price`, `arrival_price`, `market_vwap`, `mid` (after impact), `spread_bps`,
`temporary_impact_bps`, `permanent_impact_bps`, `forced`, `completed`, `order_kind` (0 none,
1 market, 2 aggressive limit, 3 passive, 4 iceberg), `invalid_action` (the action was invalid: waited).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from trading_jax.envs import orderbook as ob
from trading_jax.envs.market import MarketArrays, replay_market, sample_episode

Array = jax.Array

__all__ = ["EnvState", "EnvParams", "ExecutionEnv", "make_execution", "ACTION_NAMES", "OBS_NAMES", "ORDER_KINDS"]

ACTION_NAMES = (
    "wait",
    "market_10",
    "market_25",
    "market_50",
    "limit_aggressive",
    "limit_passive",
    "iceberg",
    "twap_slice",
    "vwap_slice",
    "adaptive_slice",
)
OBS_NAMES = (
    "spread",
    "imbalance",
    "depth_at_best",
    "large_order",
    "remaining",
    "time_remaining",
    "executed",
    "average_price",
    "volatility",
    "volume_trend",
    "momentum",
    "slippage_arrival",
    "slippage_vwap",
    "predicted_impact",
    "side",
)
# order kinds: 0 none, 1 market, 2 aggressive (IOC) limit, 3 passive limit, 4 iceberg
NONE, MARKET, AGGRESSIVE, PASSIVE, ICEBERG = 0, 1, 2, 3, 4
ORDER_KINDS = ("none", "market", "aggressive_limit", "passive_limit", "iceberg")
_ACTION_KIND = (NONE, MARKET, MARKET, MARKET, AGGRESSIVE, PASSIVE, ICEBERG, MARKET, MARKET, MARKET)
_MID_SOURCES = ("synthetic", "replay")
MAX_OFFSET = 0.5  # cap on |price / mid - 1| of any fill (never reached with sane parameters)


@struct.dataclass
class EnvState(environment.EnvState):
    """Execution state (float32 scalars unless stated).

    Attributes:
        time: int32, decisions taken (the current decision step t).
        book: `orderbook.BookState` at t.
        path, t0: int32, replay path and first bar (0 for the synthetic source).
        executed, remaining: shares executed / still to execute (`executed + remaining == quantity`).
        cost: `sum q * (price / arrival - 1)` over fills (cash spent is `arrival * (executed + cost)`;
            kept relative to the arrival price so float32 resolves fractions of a basis point).
        arrival: mid at reset (the book's `x` is `log(mid / arrival)`).
        vwap_num, vwap_den: `sum v * (mid / arrival - 1)` and `sum v` of the market volume since reset.
        impact_qty: `X`, executed shares that bear permanent impact (all but iceberg fills).
    """

    book: ob.BookState
    path: Array
    t0: Array
    executed: Array
    remaining: Array
    cost: Array
    arrival: Array
    vwap_num: Array
    vwap_den: Array
    impact_qty: Array


@struct.dataclass
class EnvParams(environment.EnvParams):
    """Everything vmappable. Units: shares, fractions of price, per decision step.

    Attributes:
        side: +1 buy, -1 sell.  quantity: parent order Q (shares).  mid0: synthetic initial mid.
        sigma: per-step volatility of the mid's log return.  alpha: imbalance signal strength (0 = none).
        imb_persistence: phi of the imbalance latent AR(1).
        spread_mean, spread_persistence, spread_vol: median relative spread, AR(1) rho and shock sd of
            the log spread.
        depth0, depth_slope, depth_vol: mean depth at level 1 (shares), its growth per level, lognormal sd.
        large_order_k: a level above k x its mean depth flags a large order.
        volume: expected market volume per step V (the ADV of the square-root law), volume_vol its
            lognormal sd, volume_curvature the U-shape c of the intraday profile.
        eta, gamma: temporary and permanent square-root impact coefficients.
        p_fill, fill_imbalance, passive_offset, fill_decay: passive fill model (orderbook.fill_probability).
        iceberg_fill_factor: iceberg fill probability multiplier.  adaptive_k: adaptive-slice gain.
        min_lot: a fill leaving fewer shares takes the whole remainder.
        ewma_decay: lam of the observed volatility / momentum / volume EWMAs.
        w_slippage, w_impact, w_time, w_bonus, abs_slippage: reward coefficients (module docstring).
        max_steps_in_episode: H (informational; the episode ends by `terminated`).
        market: `MarketArrays` of one asset for the replay source, else None.
    """

    side: float = 1.0
    quantity: float = 3000.0
    mid0: float = 100.0
    sigma: float = 1e-3
    alpha: float = 0.3
    imb_persistence: float = 0.8
    spread_mean: float = 5e-4
    spread_persistence: float = 0.9
    spread_vol: float = 0.1
    depth0: float = 200.0
    depth_slope: float = 0.5
    depth_vol: float = 0.4
    large_order_k: float = 2.5
    volume: float = 1000.0
    volume_vol: float = 0.3
    volume_curvature: float = 1.0
    eta: float = 0.5
    gamma: float = 0.3
    p_fill: float = 0.4
    fill_imbalance: float = 0.8
    passive_offset: float = 0.0
    fill_decay: float = 1.0
    iceberg_fill_factor: float = 0.5
    adaptive_k: float = 1.0
    min_lot: float = 1.0
    ewma_decay: float = 0.9
    w_slippage: float = 100.0
    w_impact: float = 50.0
    w_time: float = 0.01
    w_bonus: float = 10.0
    abs_slippage: float = 1.0
    max_steps_in_episode: int = 60
    market: Any = None


_PARAM_NAMES = tuple(f for f in EnvParams.__dataclass_fields__ if f not in ("max_steps_in_episode", "market"))


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}; got {value!r}")


class ExecutionEnv(environment.Environment[EnvState, EnvParams]):
    """Execute a parent order within `horizon` steps against a simulated book (module docstring).

    Args:
        horizon: H, decision steps per episode (>= 1).
        n_levels: L, depth levels per side (>= 1).
        mid_source: "synthetic" or "replay" (then `EnvParams.market` must hold a one-asset `MarketArrays`).
    """

    def __init__(self, horizon: int = 60, n_levels: int = 5, mid_source: str = "synthetic"):
        super().__init__()
        if not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be an int >= 1; got {horizon!r}")
        if not isinstance(n_levels, (int, np.integer)) or n_levels < 1:
            raise ValueError(f"n_levels must be an int >= 1; got {n_levels!r}")
        _check_choice("mid_source", mid_source, _MID_SOURCES)
        self.horizon = int(horizon)
        self.n_levels = int(n_levels)
        self.mid_source = mid_source

    def __hash__(self) -> int:
        return hash((type(self), self.horizon, self.n_levels, self.mid_source))

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and (self.horizon, self.n_levels, self.mid_source) == (
            other.horizon,
            other.n_levels,
            other.mid_source,
        )

    @property
    def name(self) -> str:
        return "Execution-v0"

    @property
    def default_params(self) -> EnvParams:
        return EnvParams(max_steps_in_episode=self.horizon)

    @property
    def num_actions(self) -> int:
        return len(ACTION_NAMES)

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(len(ACTION_NAMES))

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (len(OBS_NAMES),), jnp.float32)

    def is_truncated(self, state: EnvState, params: EnvParams) -> Array:
        """Never: the horizon ends the task itself (forced completion, `terminated`)."""
        return jnp.zeros((), bool)

    def is_terminated(self, state: EnvState, params: EnvParams) -> Array:
        return (state.remaining <= 0.0) | (state.time >= self.horizon)

    # ------------------------------------------------------------------ helpers
    def _market(self, params: EnvParams) -> MarketArrays:
        if params.market is None:
            raise ValueError("mid_source='replay' needs EnvParams.market (make_execution(market=... or data=...))")
        return params.market

    def get_obs(self, state: EnvState, params: EnvParams, key=None) -> Array:
        """The 15 observation entries of the module docstring, `[15]` float32."""
        book, side, h = state.book, params.side, self.horizon
        sigma = jnp.maximum(params.sigma, 1e-12)
        sig_h = sigma * np.sqrt(h)
        q = params.quantity
        d1, _ = ob.opposite_depth(book, side)
        has = state.executed > 0.0
        avg_rel = jnp.where(has, state.cost / jnp.maximum(state.executed, 1e-9), 0.0)  # avg / arrival - 1
        vwap_rel = state.vwap_num / jnp.maximum(state.vwap_den, 1e-9)  # vwap / arrival - 1 (0 before any step)
        lam = params.ewma_decay
        rem = state.remaining
        _, temp = ob.market_offset(rem, book, side, params)
        perm = ob.permanent_impact(state.impact_qty + rem, params) - ob.permanent_impact(state.impact_qty, params)
        obs = [
            jnp.exp(book.log_spread) / params.spread_mean,
            jnp.tanh(book.z),
            d1 / params.depth0,
            ob.large_order_flag(book, params),
            state.remaining / q,
            (h - state.time) / h,
            state.executed / q,
            jnp.where(has, jnp.log1p(jnp.maximum(avg_rel, -0.999)) - book.x, 0.0) / sig_h,
            jnp.sqrt(jnp.maximum(book.var, 0.0)) / sigma,
            jnp.log(jnp.maximum(book.vema, 1e-9) / params.volume),
            book.mom / sigma * jnp.sqrt((1.0 + lam) / jnp.maximum(1.0 - lam, 1e-6)),
            jnp.where(has, side * avg_rel, 0.0) / sig_h,
            jnp.where(has, side * (avg_rel - vwap_rel) / (1.0 + vwap_rel), 0.0) / sig_h,
            (temp + perm) / sigma,
            side,
        ]
        return jnp.stack([jnp.asarray(o, jnp.float32) for o in obs])

    # ------------------------------------------------------------------ reset / step
    def reset_env(self, key: Array, params: EnvParams) -> tuple[Array, EnvState]:
        """Draw a stationary book (`orderbook.init_book`); arrival = the initial mid."""
        k_noise, k_episode = jax.random.split(key)
        noise = ob.draw_noise(k_noise, self.n_levels)
        if self.mid_source == "replay":
            market = self._market(params)
            path, t0 = sample_episode(k_episode, market, 1, self.horizon)
            mid0 = market.close[path, t0, 0]
        else:
            path = t0 = jnp.zeros((), jnp.int32)
            mid0 = params.mid0
        book = ob.init_book(noise, params)
        f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        state = EnvState(
            time=jnp.zeros((), jnp.int32),
            book=book,
            path=jnp.asarray(path, jnp.int32),
            t0=jnp.asarray(t0, jnp.int32),
            executed=f32(0.0),
            remaining=f32(params.quantity),
            cost=f32(0.0),
            arrival=f32(mid0),
            vwap_num=f32(0.0),
            vwap_den=f32(0.0),
            impact_qty=f32(0.0),
        )
        return self.get_obs(state, params), state

    def invalid_action(self, action) -> Array:
        """bool scalar: the action is NaN/inf or its integer part is outside 0..9 (it then waits)."""
        a = jnp.asarray(action)
        n = len(ACTION_NAMES)
        if jnp.issubdtype(a.dtype, jnp.inexact):
            return jnp.any(~jnp.isfinite(a) | (a <= -1) | (a >= n))
        return jnp.any((a < 0) | (a >= n))

    def order(self, state: EnvState, action, params: EnvParams) -> tuple[Array, Array]:
        """`(kind, size)` of the order decided at t from what is known at t (module docstring's table),
        with the forced completion at t = H - 1; sizes are capped at the remainder. An invalid action
        (`invalid_action`) is the wait action 0."""
        h, t, rem, side = self.horizon, state.time, state.remaining, params.side
        twap = rem / jnp.maximum(h - t, 1)
        w = ob.volume_profile(params.volume_curvature, h)
        later = jnp.sum(jnp.where(jnp.arange(h) >= t, w, 0.0))
        vwap_q = rem * w[jnp.minimum(t, h - 1)] / jnp.maximum(later, 1e-9)
        adaptive = twap * jnp.clip(1.0 + params.adaptive_k * side * jnp.tanh(state.book.z), 0.5, 2.0)
        sizes = jnp.stack([0.0 * rem, 0.1 * rem, 0.25 * rem, 0.5 * rem, rem, twap, 2.0 * twap, twap, vwap_q, adaptive])
        a = jnp.asarray(action)
        a = jnp.where(self.invalid_action(a), 0, a).astype(jnp.int32)  # invalid -> 0 (wait)
        a = jnp.clip(a, 0, len(ACTION_NAMES) - 1)
        size = jnp.minimum(sizes[a], rem)
        kind = jnp.asarray(_ACTION_KIND, jnp.int32)[a]
        last = t >= h - 1
        return jnp.where(last, MARKET, kind), jnp.where(last, rem, size)

    def step_env(self, key: Array, state: EnvState, action, params: EnvParams):
        """One decision with the noise `orderbook.draw_noise(key, n_levels)` (see `transition`)."""
        return self.transition(state, action, params, ob.draw_noise(key, self.n_levels))

    def transition(self, state: EnvState, action, params: EnvParams, noise: ob.BookNoise):
        """One decision given its noise: size the order at t, move the book to t+1, fill there, apply
        permanent impact, then the reward (module docstring). No auto-reset.

        Returns:
            `(obs, state, reward, terminated, info)` as gymnax's `step_env`.
        """
        h, side, t = self.horizon, params.side, state.time
        kind, size = self.order(state, action, params)
        rem = state.remaining
        exo = None
        if self.mid_source == "replay":
            exo = self._market(params).log_return[state.path, state.t0 + t + 1, 0]
        nb = ob.step_book(state.book, noise, jnp.minimum(t, h - 1), params, h, exo)
        d1, _ = ob.opposite_depth(nb, side)
        p = ob.fill_probability(nb, side, params)
        fill = jnp.select(
            [kind == MARKET, kind == AGGRESSIVE, kind == PASSIVE, kind == ICEBERG],
            [size, jnp.minimum(size, d1), jnp.where(noise.fill < p, size, 0.0),
             jnp.where(noise.fill < p * params.iceberg_fill_factor, size, 0.0)],
            0.0,
        )
        fill = jnp.where((fill > 0.0) & (rem - fill < params.min_lot), rem, fill)
        half = 0.5 * jnp.exp(nb.log_spread)
        mkt_offset, mkt_temp = ob.market_offset(fill, nb, side, params)
        offset = jnp.select(
            [kind == MARKET, kind == AGGRESSIVE, (kind == PASSIVE) | (kind == ICEBERG)],
            [mkt_offset, half, -(half + params.passive_offset)],
            0.0,
        )
        offset = jnp.clip(offset, -MAX_OFFSET, MAX_OFFSET)  # keeps prices positive under absurd settings
        temp = jnp.where(kind == MARKET, mkt_temp, 0.0)
        # price / arrival - 1 of the fill, from x = log(mid / arrival) without cancellation
        dev = jnp.expm1(nb.x) + jnp.exp(nb.x) * side * offset
        bearing = (kind != ICEBERG) & (kind != NONE)
        x_new = state.impact_qty + jnp.where(bearing, fill, 0.0)
        perm = ob.permanent_impact(x_new, params) - ob.permanent_impact(state.impact_qty, params)
        x_fill = nb.x  # pre-impact mid of the fill step
        x_after = nb.x + side * perm
        r_obs = x_after - state.book.x
        lam = params.ewma_decay
        nb = nb._replace(
            x=x_after,
            mom=lam * state.book.mom + (1.0 - lam) * r_obs,
            var=lam * state.book.var + (1.0 - lam) * r_obs * r_obs,
        )
        remaining = rem - fill
        executed = state.executed + fill
        cost = state.cost + fill * dev
        new = state.replace(
            time=t + 1,
            book=nb,
            executed=executed,
            remaining=remaining,
            cost=cost,
            vwap_num=state.vwap_num + nb.volume * jnp.expm1(x_fill),
            vwap_den=state.vwap_den + nb.volume,
            impact_qty=x_new,
        )
        done = (remaining <= 0.0) | (t + 1 >= h)

        # reward (module docstring)
        arrival = state.arrival
        frac = fill / params.quantity
        slip = side * dev * frac
        slip_term = params.abs_slippage * jnp.abs(slip) + (1.0 - params.abs_slippage) * slip
        impact = frac * temp + perm
        reward = (
            -params.w_slippage * slip_term
            - params.w_impact * impact
            - params.w_time * (t + 1) / h
            + jnp.where(remaining <= 0.0, params.w_bonus, 0.0)
        ).astype(jnp.float32)

        has = executed > 0.0
        avg_rel = jnp.where(has, cost / jnp.maximum(executed, 1e-9), 0.0)
        vwap_rel = new.vwap_num / jnp.maximum(new.vwap_den, 1e-9)
        info = {
            "shortfall_bps": side * avg_rel * 1e4,
            "vwap_slippage_bps": jnp.where(has, side * (avg_rel - vwap_rel) / (1.0 + vwap_rel) * 1e4, 0.0),
            "executed": executed,
            "remaining": remaining,
            "fill_qty": fill,
            "fill_price": arrival * (1.0 + jnp.where(fill > 0.0, dev, jnp.expm1(x_fill))),
            "avg_price": arrival * (1.0 + avg_rel),
            "arrival_price": arrival,
            "market_vwap": arrival * (1.0 + vwap_rel),
            "mid": arrival * jnp.exp(x_after),
            "spread_bps": 2e4 * half,
            "temporary_impact_bps": temp * 1e4,
            "permanent_impact_bps": perm * 1e4,
            "forced": (t >= h - 1) & (rem > 0.0),
            "completed": remaining <= 0.0,
            "order_kind": kind,
            "invalid_action": self.invalid_action(action),
        }
        info = {k: (v.astype(jnp.float32) if v.dtype == jnp.float64 else v) for k, v in info.items()}
        obs = self.get_obs(new, params)
        return obs, new, reward, done, info


def make_execution(
    *,
    horizon: int = 60,
    n_levels: int = 5,
    mid_source: str = "synthetic",
    side: str | float = "buy",
    market: MarketArrays | None = None,
    data=None,
    split=None,
    symbol: str | None = None,
    **params: float,
) -> tuple[ExecutionEnv, EnvParams]:
    """Build the execution environment and its default `EnvParams`.

    Args:
        horizon, n_levels, mid_source: static settings (`ExecutionEnv`).
        side: "buy" / "sell" (or +1 / -1); stored as `EnvParams.side`.
        market: one-asset `MarketArrays` for `mid_source="replay"`.
        data, split, symbol: alternatively real bars (`load_ohlcv`'s `MarketData`), an optional
            `IndexRange` and a symbol, turned into `market` by `replay_market`.
        **params: any float field of `EnvParams` (e.g. `quantity=5000.0, eta=1.0`). With replay and no
            `sigma`, sigma is the standard deviation of the market's bar log returns.

    Raises:
        ValueError: for an unknown keyword, a bad side, a non-positive quantity, or replay without a
            one-asset market.
    """
    unknown = sorted(set(params) - set(_PARAM_NAMES))
    if unknown:
        raise ValueError(
            f"make_execution: unknown keyword(s) {unknown}; allowed EnvParams fields: {list(_PARAM_NAMES)}"
        )
    sides = {"buy": 1.0, "sell": -1.0, 1: 1.0, -1: -1.0, 1.0: 1.0, -1.0: -1.0}
    if side not in sides:
        raise ValueError(f"side must be one of 'buy', 'sell', +1, -1; got {side!r}")
    if params.get("quantity", 1.0) <= 0:
        raise ValueError(f"quantity must be > 0; got {params['quantity']!r}")
    env = ExecutionEnv(horizon=horizon, n_levels=n_levels, mid_source=mid_source)
    if data is not None:
        if market is not None:
            raise ValueError("pass either market= or data= (with split=, symbol=), not both")
        market = replay_market(data, split, symbols=None if symbol is None else [symbol])
    if mid_source == "replay":
        if market is None:
            raise ValueError("mid_source='replay' needs market= (a MarketArrays) or data= (load_ohlcv output)")
        if market.n_assets != 1:
            raise ValueError(f"the execution env replays one asset; the market has {market.n_assets} (pass symbol=...)")
        if "sigma" not in params:
            params["sigma"] = float(np.std(np.asarray(market.log_return)[:, 1:, 0]))
    elif market is not None:
        raise ValueError("market= / data= are only used with mid_source='replay'")
    env_params = EnvParams(side=sides[side], max_steps_in_episode=horizon, market=market, **params)
    return env, env_params
