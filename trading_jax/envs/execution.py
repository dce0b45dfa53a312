"""Optimal execution of a parent order against an on-device limit-order-book model (seed 000, section 4).

    env, params = make_execution(side="buy", quantity=3000.0)        # synthetic mid, offline
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)
    make_execution(calibration="btc_usd_hourly", step_minutes=1, start_hour=14)   # calibrated on BTC bars
    make_execution(book="simple")                                     # the first book model, for comparison

The agent must buy (`side = +1`) or sell (`side = -1`) `Q = params.quantity` shares within `H = horizon`
decision steps. The book's exogenous state (mid, spread, `L` depth levels per side, imbalance, market
volume) is documented equation by equation in `trading_jax.envs.orderbook`. How orders fill depends on
the **book** (a constructor argument):

* ``"modelled"`` (default; `trading_jax.envs.flowbook` has the equations): the interval's market volume
  is split into buyer- and seller-initiated market orders by a trade-flow imbalance `u`, and the mid's
  return loads on the same shock (correlation `flow_correlation`), so a resting order fills on the flow
  that moves the mid through it: **adverse selection**. A passive order joins the back of the queue at
  our touch and fills only with the flow past the displayed shares ahead of it; the **queue** ahead
  shrinks only through trades and cancellations (`cancel_rate`); it keeps its place while it rests
  (the wait action 0 leaves it working; passive action 5 again keeps it as it is) and goes to the back when
  the touch moves by more than half a `tick` (a pegged order re-priced); any other action cancels it. The
  fill is priced at the quote where it rests (known at t). An **iceberg** (hidden) yields to every
  displayed share, so its queue never advances. **Market orders walk** levels 1..L (`s/2 + (l-1) tick`
  from the mid) and undisplayed levels of depth `Dbar_L` beyond; the depth they take comes back at the
  `resilience` rate. Every executed share bears the square-root permanent impact. `eta`, `p_fill`,
  `fill_imbalance`, `passive_offset`, `fill_decay` and `iceberg_fill_factor` are the simple book's and
  unused here (the Almgren-Chriss baseline still reads `eta` for its trajectory).
* ``"simple"``: the first model. Passive and iceberg orders fill all-or-nothing with probability `p`
  (`orderbook.fill_probability`) at the t+1 bid, with no adverse selection; market orders pay the half
  spread plus square-root temporary impact beyond the best level (`orderbook.market_offset`); icebergs
  bear no permanent impact. A passive fill there earns the half spread against the next mid: free money
  that a policy learns to harvest (experiments/results/ppo_execution_no_signal.md, issue 15).
* ``"message"``: the message-level book (`trading_jax.envs.lob`, price-time priority over a window of
  ticks, Cont-Stoikov-Talreja order flow event by event): `make_execution(book="message", message={...})`
  builds `trading_jax.envs.execution_message.MessageExecutionEnv`, whose docstring has its units and rules.
  Queue position is simulated there, not modelled; synthetic only.

**Parameters and their sources** (defaults; `*` marks our own illustrative choice, not a measurement):

    sigma 1e-3 *            per-step mid volatility; 10 bps is a 1-minute step of a stock with a ~2% daily
                            volatility (2% / sqrt(390)); calibration: BTC/USD 0.816% per hour, 1.05e-3 per minute
    spread_mean 5e-4 *      median relative spread; calibration: BTC/USD 3.45 bps (Abdi-Ranaldo 2017
                            estimator on hourly bars; Corwin-Schultz and Roll give 22.7 / 23.1 bps: the bars
                            cannot pin it down better than that, `trading_jax.envs.calibration`)
    volume 1000 *           expected market volume per step V; calibration: the median bar volume
                            (BTC/USD 176.3 BTC per hour), per step and scaled to the hours of the episode
    volume_curvature 1.0 *  U-shaped intraday volume (the shape of Admati and Pfleiderer 1988 / Jain and Joh
                            1988 for stocks); calibration: the hourly profile of the bars (`volume_profile`;
                            BTC/USD: 0.68 at 03:00 UTC to 1.37 at 14:00 UTC)
    tick 1e-4               one cent on the 100 mid (SEC Regulation NMS, Rule 612: a $0.01 minimum
                            increment for quotes at or above $1.00)
    flow_correlation 0.806  sqrt(0.65): the average R^2 of mid changes on order-flow imbalance in Cont,
                            Kukanov and Stoikov (2014) (`flowbook`)
    gamma 0.3, eta 0.5      square-root impact coefficients of order one, as estimated for metaorders
                            (Almgren, Thum, Hauptmann and Li 2005; Toth et al. 2011, "Anomalous price impact
                            and the critical nature of liquidity in financial markets", PRX 1) *
    resilience 0.5 *        half the consumed depth returns per step: the exponential resilience of
                            Obizhaeva and Wang (2013), rate our choice
    cancel_rate 0.2 *       share of the queue ahead that cancels per step (Cont, Stoikov and Talreja 2010
                            model cancellations proportional to the queue; the rate is our choice)
    depth0 200, depth_slope 0.5, depth_vol 0.4, imbalance and spread persistence *: book shape
                            (bars carry no depth); with a calibration depth0 = 0.2 V
    alpha 0.3 *             the imbalance signal (0 in the no-signal controls)
    quantity 3000 *         5% of the horizon's volume (60 x 1000)

A fitted calibration replaces sigma, spread_mean, volume and the profile (`make_execution(calibration=...)`).

**Mid source** (`mid_source`, a constructor argument): ``"synthetic"`` (the mid's exogenous log return
is `alpha * I_t * sigma + sigma * eps`: the imbalance carries short-term information when `alpha > 0`)
or ``"replay"`` (the exogenous return is the close-to-close log return of real bars,
`params.market.log_return[path, t0 + t + 1, 0]`, from a `MarketArrays` of one asset; the episode's
`(path, t0)` comes from `market.sample_episode`; spread, depth and book imbalance stay simulated, and
the book imbalance then carries no information). With the modelled book, replay also carries the bars'
**volume** (the interval's market volume is bar `t0 + t + 1`'s, and `V` defaults to the median bar) and
their **trade-flow imbalance** where the bars have it (`make_execution(data=..., flow="column")`: an
`imbalance` or taker-buy-volume column; `flow="bvc"`: bulk volume classification from the bars; or an
array): the fill flow of interval t+1 is then bar t0+t+1's imbalance, and the observation's `trade_flow`
is the last bar's. Without it the flow shock is drawn given each bar's return
(`flowbook.flow_shock_from_return`). In both modes our permanent impact is added to the mid.

**Timing (no look-ahead).** The decision at step t sees the book at t (observation `obs_t`); the order's
SIZE is fixed from what is known at t (remaining, t, `I_t`). The book then moves to t+1 (fresh noise,
or the next bar in replay) and the order fills against the book at t+1: its mid, spread, depth and
imbalance (a resting order of the modelled book: at its own price, the touch of t, against the flow of
(t, t+1]). So the agent can never choose the noise it trades at. In replay, the fill step t+1 is bar
`t0 + t + 1` (its close: the mid of a step is the bar's close, later than the bar's open of DESIGN.md's
rule, hence no earlier information). Our permanent impact then shifts the mid, and `obs_{t+1}` is built.

**Actions** (`Discrete(10)`); `R` = remaining shares, `n = H - t` steps left (this one included),
`TWAP = R / n`. Every size is capped at `R`; a fill that would leave less than `min_lot` shares takes the
whole remainder instead (no float dust). Prices are for a buy; a sell mirrors them (`side = -1`).

    0 wait             nothing
    1-3 market 10/25/50%   market order of 0.10 / 0.25 / 0.50 * R
    4 aggressive limit  marketable (IOC) limit at the best opposite quote for R: fills min(R, d1_{t+1})
                        at mid * (1 + s/2), no temporary impact, the rest is cancelled
    5 passive limit     TWAP shares resting at our best quote. Modelled book: through the queue (above),
                        at the touch of t. Simple book: (+ `passive_offset` deeper), pegged, fills
                        all-or-nothing with probability p (orderbook.fill_probability) at
                        mid_{t+1} * (1 - s/2 - passive_offset)
    6 iceberg           hidden passive order of 2 * TWAP. Modelled: behind every displayed share.
                        Simple: fill probability p * `iceberg_fill_factor`, no permanent impact
    7 TWAP slice        market order of TWAP
    8 VWAP slice        market order of R * w(t) / sum_{s=t}^{H-1} w(s) (expected volume share, w the profile)
    9 adaptive slice    market order of TWAP * clip(1 + adaptive_k * side * I_t, 0.5, 2): more when the
                        imbalance predicts an adverse move (up for a buy), less when favourable

Market orders walk the book (modelled) or pay `orderbook.market_offset` (simple: half spread plus
square-root temporary impact on the part beyond the opposite best depth). Any fill's relative concession is clipped to `[-0.5, 0.5]` (`MAX_OFFSET`,
only reached under absurd settings; it keeps prices positive). Impact-bearing fills (all; the simple book exempts icebergs)
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

**Observation**, 18 float32 entries, O(1) scales (`sig_h = sigma * sqrt(H)`, the horizon volatility):

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
    15 resting          our resting passive order / Q (modelled book; 0 in the simple book)
    16 queue ahead      displayed shares ahead of it / depth0 (modelled; 0 in the simple book)
    17 trade flow       the last interval's trade-flow imbalance u in (-1, 1) (modelled; 0 in the simple book)

**Episode end.** `terminated` when the remainder reaches 0, which happens at the latest at step H
(forced completion): the horizon is the task's true end, not a time limit, so `truncated` is always
False and the value of the terminal state is 0. `step` auto-resets (gymnax).

**Info** (every step, after the step): `shortfall_bps` (IS of the executed part; at completion the
parent's IS), `vwap_slippage_bps`, `executed`, `remaining`, `fill_qty`, `fill_price` (mid if nothing
filled), `avg_price`, `arrival_price`, `market_vwap`, `mid` (after impact), `spread_bps`,
`temporary_impact_bps`, `permanent_impact_bps`, `forced`, `completed`, `order_kind` (0 none,
1 market, 2 aggressive limit, 3 passive, 4 iceberg), `invalid_action` (the action was invalid: waited),
`resting_qty`, `queue_ahead`, `trade_flow` (the modelled book's; 0 in the simple book).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from trading_jax.envs import flowbook as fb
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
    "resting",
    "queue_ahead",
    "trade_flow",
)
# order kinds: 0 none, 1 market, 2 aggressive (IOC) limit, 3 passive limit, 4 iceberg
NONE, MARKET, AGGRESSIVE, PASSIVE, ICEBERG = 0, 1, 2, 3, 4
ORDER_KINDS = ("none", "market", "aggressive_limit", "passive_limit", "iceberg")
_ACTION_KIND = (NONE, MARKET, MARKET, MARKET, AGGRESSIVE, PASSIVE, ICEBERG, MARKET, MARKET, MARKET)
_MID_SOURCES = ("synthetic", "replay")
BOOKS = ("modelled", "simple", "message")
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
        gap: `[L]` shares our market orders took from the opposite levels that have not come back
            (modelled book; resilience); zeros in the simple book.
        rest_qty, rest_ahead, rest_price: our resting passive order (modelled book): its size, the
            displayed shares ahead of it in the queue, and its price as `log(price / arrival)`.
        rest_kind: int32, `PASSIVE` or `ICEBERG` while an order rests, else `NONE`.
        flow: the trade-flow imbalance `u` of the last interval (modelled book; 0 in the simple book).
        lob: the message-level book's state (`trading_jax.envs.lob.LOBState`, book "message"), else None.
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
    gap: Array
    rest_qty: Array
    rest_ahead: Array
    rest_price: Array
    rest_kind: Array
    flow: Array
    lob: Any = None


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
        tick, resilience, flow_correlation, cancel_rate: the modelled book's price step between levels
            (fraction of the mid), the share of consumed depth that comes back per step, the correlation c
            of the trade-flow shock with the mid's return, and the share of the queue ahead of a resting
            order that cancels per step (`trading_jax.envs.flowbook`; sources in the module docstring).
        max_steps_in_episode: H (informational; the episode ends by `terminated`).
        market: `MarketArrays` of one asset for the replay source, else None.
        volume_profile: optional `[H]` expected volume weight of each step (e.g.
            `calibration.profile_for_horizon`), replacing the U-shape of `volume_curvature`.
        flow: optional `[P, T]` trade-flow imbalance of the replayed bars in [-1, 1]
            (`calibration.bar_imbalance`); the modelled book then fills against it.
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
    tick: float = 1e-4
    resilience: float = 0.5
    flow_correlation: float = 0.806
    cancel_rate: float = 0.2
    max_steps_in_episode: int = 60
    market: Any = None
    volume_profile: Any = None
    flow: Any = None


_ARRAY_FIELDS = ("max_steps_in_episode", "market", "volume_profile", "flow")
_PARAM_NAMES = tuple(f for f in EnvParams.__dataclass_fields__ if f not in _ARRAY_FIELDS)


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}; got {value!r}")


class ExecutionEnv(environment.Environment[EnvState, EnvParams]):
    """Execute a parent order within `horizon` steps against a simulated book (module docstring).

    Args:
        horizon: H, decision steps per episode (>= 1).
        n_levels: L, depth levels per side (>= 1).
        mid_source: "synthetic" or "replay" (then `EnvParams.market` must hold a one-asset `MarketArrays`).
        book: "modelled" (adverse selection, queue position, walking the book, resilience:
            `trading_jax.envs.flowbook`) or "simple" (the first model: all-or-nothing passive fills with
            a fill probability and no adverse selection, square-root temporary impact), kept for comparison.
    """

    def __init__(self, horizon: int = 60, n_levels: int = 5, mid_source: str = "synthetic", book: str = "modelled"):
        super().__init__()
        if not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be an int >= 1; got {horizon!r}")
        if not isinstance(n_levels, (int, np.integer)) or n_levels < 1:
            raise ValueError(f"n_levels must be an int >= 1; got {n_levels!r}")
        _check_choice("mid_source", mid_source, _MID_SOURCES)
        _check_choice("book", book, BOOKS)
        if book == "message" and type(self) is ExecutionEnv:
            raise ValueError("book='message' is the message-level env: build it with make_execution(book='message') "
                             "(trading_jax.envs.execution_message.MessageExecutionEnv)")
        self.horizon = int(horizon)
        self.n_levels = int(n_levels)
        self.mid_source = mid_source
        self.book = book

    def _key(self) -> tuple:
        return (self.horizon, self.n_levels, self.mid_source, self.book)

    def __hash__(self) -> int:
        return hash((type(self), *self._key()))

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self._key() == other._key()

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

    def _predicted_temp(self, rem, book: ob.BookState, side, params: EnvParams) -> Array:
        """Temporary impact (beyond the half spread) of a market order for `rem` on `book`, as a fraction."""
        if self.book == "simple":
            return ob.market_offset(rem, book, side, params)[1]
        half = 0.5 * jnp.exp(book.log_spread)
        offset, _ = fb.walk_book(rem, self._opposite(book, side), half, params.tick, self._beyond(params))
        return offset - half

    @staticmethod
    def _opposite(book: ob.BookState, side) -> Array:
        """`[L]` depth of the side a `side` order takes from (the ask for a buy)."""
        return jnp.where(side > 0, book.ask, book.bid)

    def _beyond(self, params: EnvParams) -> Array:
        """Depth of each undisplayed level past L: the mean depth of level L."""
        return ob.mean_depth(params.depth0, params.depth_slope, self.n_levels)[-1]

    def get_obs(self, state: EnvState, params: EnvParams, key=None) -> Array:
        """The 18 observation entries of the module docstring, `[18]` float32."""
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
        temp = self._predicted_temp(rem, book, side, params)
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
            state.rest_qty / q,
            state.rest_ahead / params.depth0,
            state.flow,
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
            gap=jnp.zeros((self.n_levels,), jnp.float32),
            rest_qty=f32(0.0),
            rest_ahead=f32(0.0),
            rest_price=f32(0.0),
            rest_kind=jnp.asarray(NONE, jnp.int32),
            flow=f32(self._replay_flow(params, path, t0) if self._has_flow(params) else 0.0),
        )
        return self.get_obs(state, params), state

    def _has_flow(self, params: EnvParams) -> bool:
        """Static: the modelled book replays the bars' own trade-flow imbalance."""
        return self.book == "modelled" and self.mid_source == "replay" and params.flow is not None

    @staticmethod
    def _replay_flow(params: EnvParams, path, bar) -> Array:
        return jnp.clip(jnp.asarray(params.flow, jnp.float32)[path, bar], -1.0, 1.0)

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
        w = ob.profile_weights(params, h)
        later = jnp.sum(jnp.where(jnp.arange(h) >= t, w, 0.0))
        vwap_q = rem * w[jnp.minimum(t, h - 1)] / jnp.maximum(later, 1e-9)
        adaptive = twap * jnp.clip(1.0 + params.adaptive_k * side * jnp.tanh(state.book.z), 0.5, 2.0)
        sizes = jnp.stack([0.0 * rem, 0.1 * rem, 0.25 * rem, 0.5 * rem, rem, twap, 2.0 * twap, twap, vwap_q, adaptive])
        a = jnp.asarray(action)
        a = jnp.where(self.invalid_action(a), 0, a).astype(jnp.int32)  # invalid -> 0 (wait)
        a = jnp.clip(a, 0, len(ACTION_NAMES) - 1)
        size = jnp.minimum(sizes[a], rem)
        kind = jnp.asarray(_ACTION_KIND, jnp.int32)[a]
        if self.book == "modelled":  # waiting leaves a resting passive order working
            resting = (a == 0) & (state.rest_qty > 0.0)
            kind = jnp.where(resting, state.rest_kind, kind)
            size = jnp.where(resting, jnp.minimum(state.rest_qty, rem), size)
        last = t >= h - 1
        return jnp.where(last, MARKET, kind), jnp.where(last, rem, size)

    def step_env(self, key: Array, state: EnvState, action, params: EnvParams):
        """One decision with the noise `orderbook.draw_noise(key, n_levels, flow=book == "modelled")`
        (see `transition`)."""
        return self.transition(state, action, params, ob.draw_noise(key, self.n_levels, self.book == "modelled"))

    def _exogenous(self, state: EnvState, params: EnvParams) -> tuple[Any, Any]:
        """`(log return, volume)` of the interval (t, t+1] from the replayed bar, or `(None, None)`."""
        if self.mid_source != "replay":
            return None, None
        market, bar = self._market(params), state.t0 + state.time + 1
        volume = market.volume[state.path, bar, 0] if self.book == "modelled" else None
        return market.log_return[state.path, bar, 0], volume

    def _fill_simple(self, state: EnvState, kind, size, params: EnvParams, noise: ob.BookNoise):
        """The simple book: move to t+1, then fill there (module docstring, `book="simple"`).

        Returns:
            `(book_{t+1}, fill, dev, temp, updates)`: shares filled, `price / arrival - 1`, the temporary
            impact (fraction) and the EnvState fields this book changes besides the common ones.
        """
        side, t = params.side, state.time
        exo, _ = self._exogenous(state, params)
        nb = ob.step_book(state.book, noise, jnp.minimum(t, self.horizon - 1), params, self.horizon, exo)
        d1, _ = ob.opposite_depth(nb, side)
        p = ob.fill_probability(nb, side, params)
        fill = jnp.select(
            [kind == MARKET, kind == AGGRESSIVE, kind == PASSIVE, kind == ICEBERG],
            [size, jnp.minimum(size, d1), jnp.where(noise.fill < p, size, 0.0),
             jnp.where(noise.fill < p * params.iceberg_fill_factor, size, 0.0)],
            0.0,
        )
        fill = jnp.where((fill > 0.0) & (state.remaining - fill < params.min_lot), state.remaining, fill)
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
        return nb, fill, dev, temp, {}

    def _fill_modelled(self, state: EnvState, kind, size, params: EnvParams, noise: ob.BookNoise):
        """The modelled book (`trading_jax.envs.flowbook`): the interval's trade flow and the mid move that
        loads on it, resting orders filled through their queue at their own price, market orders walking
        the opposite levels net of the depth we took earlier. Returns as `_fill_simple`."""
        side, t, book, h = params.side, state.time, state.book, self.horizon
        sigma, c = params.sigma, params.flow_correlation
        exo, exo_volume = self._exogenous(state, params)
        if exo is None:  # synthetic: the flow shock drives part of the mid's move
            e_flow = noise.flow
            exo = params.alpha * jnp.tanh(book.z) * sigma + sigma * (
                c * e_flow + jnp.sqrt(jnp.maximum(1.0 - c * c, 0.0)) * noise.mid
            )
            u = jnp.tanh(e_flow)
        elif self._has_flow(params):  # the bars' own imbalance
            u = self._replay_flow(params, state.path, state.t0 + t + 1)
        else:  # replayed return: the flow shock drawn given it
            u = jnp.tanh(fb.flow_shock_from_return(exo, sigma, c, noise.flow))
        nb = ob.step_book(book, noise, jnp.minimum(t, h - 1), params, h, exo, exo_volume)
        buys, sells = fb.trade_flow(nb.volume, u)
        flow_at_us = jnp.where(side > 0, sells, buys)  # market orders that trade against our resting order

        # the opposite side, net of the depth we took and that has not come back
        gap = fb.recover(state.gap, params.resilience)
        visible = jnp.maximum(self._opposite(nb, side) - gap, 0.0)
        half = 0.5 * jnp.exp(nb.log_spread)

        # our resting order: at our touch at t (known at t), price log(quote / arrival)
        half_t = 0.5 * jnp.exp(book.log_spread)
        quote = book.x + jnp.log1p(-side * jnp.minimum(half_t, MAX_OFFSET))
        own_depth = jnp.where(side > 0, book.bid[0], book.ask[0])
        resting = (kind == PASSIVE) | (kind == ICEBERG)
        kept = (
            resting & (state.rest_qty > 0.0) & (state.rest_kind == kind)
            & (jnp.abs(quote - state.rest_price) <= 0.5 * params.tick)
        )
        size = jnp.where(kept, jnp.minimum(state.rest_qty, state.remaining), size)
        price = jnp.where(kept, state.rest_price, quote)
        # hidden iceberg shares yield to every displayed share at their price: the queue never advances
        ahead = jnp.where((kind == PASSIVE) & kept, state.rest_ahead, own_depth)

        best = visible[0]
        fill = jnp.select(
            [kind == MARKET, kind == AGGRESSIVE, resting],
            [size, jnp.minimum(size, best), fb.passive_fill(size, ahead, flow_at_us)],
            0.0,
        )
        fill = jnp.where((fill > 0.0) & (state.remaining - fill < params.min_lot), state.remaining, fill)
        walk_offset, taken = fb.walk_book(fill, visible, half, params.tick, self._beyond(params))
        walk_offset = jnp.minimum(walk_offset, MAX_OFFSET)
        market_dev = jnp.expm1(nb.x) + jnp.exp(nb.x) * side * jnp.where(kind == MARKET, walk_offset, half)
        dev = jnp.where(resting, jnp.expm1(price), market_dev)
        temp = jnp.where(kind == MARKET, walk_offset - half, 0.0)
        taken = jnp.where(kind == MARKET, taken, jnp.zeros_like(taken).at[0].set(jnp.minimum(fill, best)))
        taken = jnp.where((kind == MARKET) | (kind == AGGRESSIVE), taken, 0.0)
        left = visible - taken
        nb = nb._replace(ask=jnp.where(side > 0, left, nb.ask), bid=jnp.where(side > 0, nb.bid, left))
        rest_qty = jnp.where(resting, jnp.maximum(size - fill, 0.0), 0.0)
        rest_qty = jnp.minimum(rest_qty, state.remaining - fill)
        still = rest_qty > 0.0
        updates = dict(
            gap=gap + taken,
            rest_qty=rest_qty,
            # an iceberg's queue is the whole displayed level at each interval (it never advances)
            rest_ahead=jnp.where(
                still,
                jnp.where(kind == ICEBERG, jnp.where(side > 0, nb.bid[0], nb.ask[0]),
                          fb.queue_advance(ahead, flow_at_us, params.cancel_rate)),
                0.0,
            ),
            rest_price=jnp.where(still, price, 0.0),
            rest_kind=jnp.where(still, kind, NONE).astype(jnp.int32),
            flow=jnp.asarray(u, jnp.float32),
        )
        return nb, fill, dev, temp, updates

    def transition(self, state: EnvState, action, params: EnvParams, noise: ob.BookNoise):
        """One decision given its noise: size the order at t, move the book to t+1, fill (the simple or
        the modelled book), apply permanent impact, then the reward (module docstring). No auto-reset.

        Returns:
            `(obs, state, reward, terminated, info)` as gymnax's `step_env`.
        """
        kind, size = self.order(state, action, params)
        if self.book == "simple":
            fills = self._fill_simple(state, kind, size, params, noise)
        else:
            fills = self._fill_modelled(state, kind, size, params, noise)
        return self.settle(state, action, params, kind, fills)

    def settle(self, state: EnvState, action, params: EnvParams, kind, fills, permanent_impact: bool = True):
        """The book-independent rest of a step: permanent impact, accounting, reward, info, observation.

        Args:
            state: the state at t.  action: the action taken (for `info["invalid_action"]`).
            kind: the order kind that was sent (`order`).
            fills: `(book_{t+1}, fill, dev, temp, updates)` of the book's fill function: the book at t+1
                before our permanent impact, shares filled, `price / arrival - 1` of the fill, the temporary
                impact (fraction) and the EnvState fields the book changes.
            permanent_impact: add the square-root permanent impact (a book whose prices already respond to
                our orders, like the message-level one, passes False).

        Returns:
            `(obs, state, reward, terminated, info)` as gymnax's `step_env`.
        """
        h, side, t = self.horizon, params.side, state.time
        rem = state.remaining
        nb, fill, dev, temp, updates = fills
        half = 0.5 * jnp.exp(nb.log_spread)
        # the square-root law is one of executed volume (hidden or not); the simple book exempted icebergs
        bearing = kind != NONE if self.book != "simple" else (kind != ICEBERG) & (kind != NONE)
        x_new = state.impact_qty + jnp.where(bearing, fill, 0.0)
        perm = ob.permanent_impact(x_new, params) - ob.permanent_impact(state.impact_qty, params)
        if not permanent_impact:
            perm = jnp.zeros_like(perm)
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
            **updates,
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
            "resting_qty": new.rest_qty,
            "queue_ahead": new.rest_ahead,
            "trade_flow": new.flow,
        }
        info = {k: (v.astype(jnp.float32) if v.dtype == jnp.float64 else v) for k, v in info.items()}
        obs = self.get_obs(new, params)
        return obs, new, reward, done, info


def make_execution(
    *,
    horizon: int = 60,
    n_levels: int = 5,
    mid_source: str = "synthetic",
    book: str = "modelled",
    side: str | float = "buy",
    market: MarketArrays | None = None,
    data=None,
    split=None,
    symbol: str | None = None,
    flow=None,
    volume_profile=None,
    calibration=None,
    step_minutes: float | None = None,
    start_hour: float = 0.0,
    message: dict | None = None,
    **params: float,
) -> tuple[ExecutionEnv, EnvParams]:
    """Build the execution environment and its default `EnvParams`.

    Args:
        horizon, n_levels, mid_source, book: static settings (`ExecutionEnv`).
        side: "buy" / "sell" (or +1 / -1); stored as `EnvParams.side`.
        market: one-asset `MarketArrays` for `mid_source="replay"`.
        data, split, symbol: alternatively real bars (`load_ohlcv`'s `MarketData`), an optional
            `IndexRange` and a symbol, turned into `market` by `replay_market`.
        flow: replay with the modelled book only: the bars' trade-flow imbalance, an array `[T]` / `[P, T]`
            in [-1, 1] aligned with `market`, or with `data=`: "column" (the file's own imbalance or
            taker-buy volume columns, an error if it has none), "bvc" (bulk volume classification from
            the bars) or "auto" (column if present, else none: the flow is then drawn given each bar's
            return, `flowbook.flow_shock_from_return`). None (default): drawn given the return.
        volume_profile: optional `[horizon]` expected volume weight per step (e.g.
            `calibration.profile_for_horizon`), replacing the U-shape of `volume_curvature`.
        calibration, step_minutes, start_hour: parameters calibrated on real bars: an
            `calibration.ExecutionCalibration` or the name of a stored one ("btc_usd_hourly":
            `calibration.BTC_USD_HOURLY`), rescaled to steps of `step_minutes` (default: one bar) starting at
            UTC hour `start_hour`. It sets `sigma`, `spread_mean`, `volume` and the hourly `volume_profile`; the
            quantities the bars cannot tell keep their default ratios to the volume: `depth0 = 0.2 V`,
            `quantity = 0.05 V H` (5% of the horizon's volume) and `min_lot = quantity / 3000`. Any keyword
            given explicitly wins.
        message: book "message" only: static settings of the message-level book
            (`trading_jax.envs.execution_message.MessageExecutionEnv`'s keyword arguments).
        **params: any float field of `EnvParams` (e.g. `quantity=5000.0, eta=1.0`). With replay and no
            `sigma`, sigma is the standard deviation of the market's bar log returns.

    Raises:
        ValueError: for an unknown keyword, a bad side, a non-positive quantity, or replay without a
            one-asset market.
    """
    if calibration is not None:
        params, volume_profile = _calibrated(calibration, horizon, step_minutes, start_hour, params, volume_profile)
    elif step_minutes is not None:
        raise ValueError("step_minutes= rescales a calibration: pass calibration= as well")
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
    for name, low, high, closed in _RANGES:
        value = params.get(name)
        if isinstance(value, (int, float)) and not (low < value <= high if not closed else low <= value <= high):
            interval = f"[{low}, {high}]" if closed else f"({low}, {high}]"
            raise ValueError(f"{name} must be in {interval}; got {value!r} ({_RANGE_MEANING[name]})")
    if book == "message":
        from trading_jax.envs.execution_message import MessageExecutionEnv

        if mid_source != "synthetic":
            raise ValueError("book='message' simulates its own prices from order flow: use mid_source='synthetic'")
        import inspect

        allowed = [n for n in inspect.signature(MessageExecutionEnv).parameters if n not in ("horizon", "n_levels")]
        if not isinstance(message, (dict, type(None))) or sorted(set(message or {}) - set(allowed)):
            raise ValueError(f"message= takes a table of the message-level book's settings {allowed}; got {message!r}")
        env = MessageExecutionEnv(horizon=horizon, n_levels=n_levels, **(message or {}))
    elif message is not None:
        raise ValueError("message= holds the settings of book='message'")
    else:
        env = ExecutionEnv(horizon=horizon, n_levels=n_levels, mid_source=mid_source, book=book)
    if data is not None:
        if market is not None:
            raise ValueError("pass either market= or data= (with split=, symbol=), not both")
        market = replay_market(data, split, symbols=None if symbol is None else [symbol])
        if isinstance(flow, str):
            flow = _bar_flow(data, split, symbol, flow)
    elif isinstance(flow, str):
        raise ValueError(f"flow={flow!r} reads the bars: pass data= (load_ohlcv output), or pass flow as an array")
    if mid_source == "replay":
        if market is None:
            raise ValueError("mid_source='replay' needs market= (a MarketArrays) or data= (load_ohlcv output)")
        if market.n_assets != 1:
            raise ValueError(f"the execution env replays one asset; the market has {market.n_assets} (pass symbol=...)")
        if "sigma" not in params:
            params["sigma"] = float(np.std(np.asarray(market.log_return)[:, 1:, 0]))
        if book == "modelled" and "volume" not in params:  # the modelled book replays the bars' volume
            params["volume"] = float(max(np.median(np.asarray(market.volume)[..., 0]), 1e-9))
    elif market is not None:
        raise ValueError("market= / data= are only used with mid_source='replay'")
    if flow is not None:
        flow = _check_flow(flow, market, book, mid_source)
    if volume_profile is not None:
        volume_profile = np.asarray(volume_profile, np.float32)
        if volume_profile.shape != (horizon,) or not np.all(np.isfinite(volume_profile)) or np.any(volume_profile < 0):
            raise ValueError(
                f"volume_profile must be {horizon} finite weights >= 0 (one per step); got shape "
                f"{volume_profile.shape}" + ("" if volume_profile.shape != (horizon,) else " with negative or NaN values")
            )
        volume_profile = jnp.asarray(volume_profile)
    env_params = EnvParams(
        side=sides[side], max_steps_in_episode=horizon, market=market, volume_profile=volume_profile, flow=flow,
        **params,
    )
    return env, env_params


# the modelled book's parameters that have a range: (name, low, high, closed at low)
_RANGES = (("tick", 0.0, 1.0, False), ("resilience", 0.0, 1.0, True), ("flow_correlation", -1.0, 1.0, True),
           ("cancel_rate", 0.0, 1.0, True))
_RANGE_MEANING = {
    "tick": "the price step between levels, a fraction of the mid, e.g. 1e-4",
    "resilience": "the share of the depth we took that comes back each step",
    "flow_correlation": "the correlation of the trade-flow shock with the mid's return",
    "cancel_rate": "the share of the queue ahead that cancels each step",
}
CALIBRATIONS = ("btc_usd_hourly",)
# the EnvParams defaults' ratios: depth0 / volume, quantity / (volume * H), quantity / min_lot
DEPTH_PER_VOLUME, PARTICIPATION, MIN_LOT_SHARE = 0.2, 0.05, 3000.0


def _calibrated(calibration, horizon: int, step_minutes, start_hour, params: dict, volume_profile):
    """`(params, volume_profile)` with the calibrated values filled in where the caller gave none."""
    from trading_jax.envs import calibration as cal_module

    if isinstance(calibration, str):
        _check_choice("calibration", calibration, CALIBRATIONS)
        calibration = cal_module.BTC_USD_HOURLY
    if not isinstance(calibration, cal_module.ExecutionCalibration):
        raise ValueError(f"calibration must be one of {list(CALIBRATIONS)} or an ExecutionCalibration; got {calibration!r}")
    fitted = calibration.env_kwargs(horizon, step_minutes=step_minutes, start_hour=start_hour)
    volume = params.get("volume", fitted["volume"])
    quantity = params.get("quantity", PARTICIPATION * volume * horizon)
    fitted.update(depth0=DEPTH_PER_VOLUME * volume, quantity=quantity, min_lot=quantity / MIN_LOT_SHARE)
    if volume_profile is None and calibration.hourly_profile is not None:
        volume_profile = calibration.profile(horizon, step_minutes=step_minutes, start_hour=start_hour)
    return {**fitted, **params}, volume_profile


def _bar_flow(data, split, symbol, method: str):
    """The trade-flow imbalance of the replayed bars, `[1, T]` cut to `split`, or None ("auto" without columns)."""
    from trading_jax.envs.calibration import bar_imbalance

    _check_choice("flow", method, ("auto", "column", "bvc"))
    values, source = bar_imbalance(data, symbol=symbol, method=method)
    if method == "auto" and source == "bvc":
        return None
    rows = slice(None) if split is None else split.slice
    return np.asarray(values, np.float32)[rows][None]


def _check_flow(flow, market, book: str, mid_source: str) -> Array:
    """A replay flow array as `[P, T]` float32 in [-1, 1], or a one-line ValueError."""
    if book != "modelled" or mid_source != "replay":
        raise ValueError("flow= is used only by book='modelled' with mid_source='replay'")
    values = np.asarray(flow, np.float32)
    if values.ndim == 1:
        values = values[None]
    want = (market.n_paths, market.n_time)
    if values.shape != want:
        raise ValueError(f"flow must be [paths, bars] = {list(want)} like the market; got shape {list(values.shape)}")
    bad = ~np.isfinite(values) | (np.abs(values) > 1.0)
    if bad.any():
        path, row = map(int, np.argwhere(bad)[0])
        raise ValueError(
            f"flow has {int(bad.sum())} values that are NaN or outside [-1, 1], the first {values[path, row]!r} at "
            f"path {path}, bar {row}; the trade-flow imbalance is (buys - sells) / volume: fix or clip it"
        )
    return jnp.asarray(values)
