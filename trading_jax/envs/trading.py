"""A vectorised single- or multi-asset trading environment with the gymnax API.

    env, params = make_trading(action_mode="discrete", reward="pnl")      # synthetic market, offline
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

**Market.** `params.market` is a `MarketArrays` (`[P, T, N]`: paths, time, assets): a bank of synthetic
paths (default: 64 regime-switching paths) or replayed real bars (`make_trading(data=..., split=...)`).
An episode is one path from a random first decision bar `t0` (uniform over paths and over
`[window - 1, T - 1 - episode_length]`), so every bar it reads lies inside the arrays.

**Timing (no look-ahead).** At decision bar t the agent has seen bars `<= t`. The order it decides
fills at bar t + 1's open (plus costs) and the position is marked at bar t + 1's close; the agent then
decides again at t + 1. Step t reads `open[t+1]`, `spread[t+1]`, `close[t+1]` and nothing later.

**Actions** (`action_mode`, a constructor argument), turned into target weights `w` `[N]`
(position value / equity, negative = short):

* ``"discrete"``: per asset 0 = short, 1 = flat, 2 = long; `w_i = (a_i - 1) * max_position / N`.
  N = 1: a scalar int (`Discrete(3)`); N > 1: an int array `[N]` (`MultiDiscrete`). An entry outside
  {0, 1, 2} makes the action invalid (below).
* ``"continuous"``: `a` in `[-1, 1]^N` (a `[N]` array), clipped to the box, then
  `w = a / max(1, sum_i |a_i|) * max_position` (gross exposure at most `max_position`).
* ``"position_hold"`` (seed 003, N = 1 only): `a = [position_size, hold_time]` in `[-1, 1] x [0, 1]`
  (clipped). When no hold is running, `w = position_size * max_position` is traded and held for
  `k = 1 + floor(hold_time * (max_hold - 1))` decisions: this one and the next k - 1, during which new
  actions are ignored and nothing is traded (the units are kept; `state.hold` counts down the
  remaining ignored decisions).

**Invalid actions** (the same rule in every environment of `trading_jax.envs`): an action with any NaN
or infinite entry (or, in "discrete" mode, an entry outside {0, 1, 2}; a float entry counts by its
integer part, e.g. 2.7 is 2) places **no order this step**: the units and cash are kept, nothing is
traded and nothing is paid, and time still advances (the position is marked at `close[t+1]`, the reward
and the episode end follow from that mark). In "position_hold" mode an invalid action starts no hold;
a running hold counts down as usual. `info["invalid_action"]` is True on such a step.

**Accounting** (state: `cash`, `units [N]`, `equity`; all float32). With `E_t = cash + units . close_t`:

    u* = w * E_t / open_{t+1}                         target units (short = negative units)
    d = u* - units                                    trade
    exec = open_{t+1} * (1 + sign(d) * (spread_{t+1} / 2 + slippage))     (`costs.fill_price`)
    fee = fee_rate * sum_i |d_i| * exec_i                                  (`costs.proportional_fee`)
    cash' = cash - d . exec - fee                     (a short sale adds cash)
    E_{t+1} = cash' + u* . close_{t+1}

`info` reports (all after the step): `equity` `E_{t+1}`, `weights` `[N]` (`u* close_{t+1} / E_{t+1}`),
`exec_price` `[N]`, `trade_notional` (`sum |d| open_{t+1}`), `fee`, `spread_cost`
(`sum |d| open_{t+1} spread_{t+1} / 2`), `slippage_cost` (`sum |d| open_{t+1} slippage`), `costs`
(their sum: the equity lost to trading versus filling at the open), `step_return` (`E_{t+1}/E_t - 1`) and
`invalid_action` (bool: the action was invalid and no order was placed), plus gymnax's `terminated`,
`truncated` and `final_observation`.

**Observation**, a flat float32 vector of `window * N + N + 2 + N * F` entries, in this order:

    [0 : W*N]              close-to-close log returns of bars t-W+1 .. t, time-major (entry w*N + i is
                           asset i at bar t-W+1+w; the last N entries are bar t)
    [W*N : W*N+N]          current position weights units_i * close_t,i / E_t
    [W*N+N]                equity / initial_equity - 1
    [W*N+N+1]              fraction of the episode remaining, (episode_length - decisions taken) / episode_length
    [W*N+N+2 : ]           market.features[path, t] flattened asset-major (entry i*F + f), only when F > 0

**Rewards** (`reward`, see `trading_jax.envs.rewards`): "pnl", "log_return", "differential_sharpe",
"seed003".

**Episode end.** Terminated (ruin) when `E_{t+1} <= ruin_fraction * initial_equity`; truncated after
`episode_length` decisions. `step` auto-resets either way (gymnax semantics, `info["final_observation"]`
is the observation the step reached); it is overridden only to skip gymnax's key split (the step itself
uses no randomness) and to draw the new episode start with one random call.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from trading_jax.envs import costs, rewards
from trading_jax.envs.market import MarketArrays, replay_market, synthetic_market

Array = jax.Array

__all__ = ["TradingEnv", "EnvState", "EnvParams", "MultiDiscrete", "make_trading", "ACTION_MODES", "REWARD_KINDS"]

ACTION_MODES: tuple[str, ...] = ("discrete", "continuous", "position_hold")
REWARD_KINDS: tuple[str, ...] = rewards.REWARD_KINDS


@struct.dataclass
class EnvState(environment.EnvState):
    """State of one trading episode (all scalars unless noted).

    Attributes:
        time: decisions taken in this episode (int32).
        path: market path of the episode (int32).
        t: current decision bar (int32).
        cash: cash (float32; negative when leveraged long).
        units: `[N]` units held (float32; negative = short).
        equity: `E_t = cash + units . close_t` (float32).
        hold: remaining decisions whose actions are ignored ("position_hold"; 0 otherwise), int32.
        reward: `rewards.RewardState` running statistics.
    """

    path: Array
    t: Array
    cash: Array
    units: Array
    equity: Array
    hold: Array
    reward: rewards.RewardState


@struct.dataclass
class EnvParams(environment.EnvParams):
    """Everything a user may vmap over (the market included).

    Attributes:
        market: `MarketArrays` `[P, T, N]`.
        initial_equity: starting cash `E_0`.
        fee_rate: proportional fee per traded notional (1e-3 = 10 bps).
        slippage: extra relative price concession on every fill (fraction of price).
        max_position: gross exposure limit as a multiple of equity (1 = no leverage).
        ruin_fraction: the episode terminates when equity <= ruin_fraction * initial_equity.
        max_hold: longest hold of "position_hold" actions, in decisions (>= 1).
        eta: EMA rate of the differential Sharpe ratio.
        drawdown_penalty: drawdown coefficient of the "seed003" reward.
        sharpe_eps: variance floor of the Sharpe-type rewards (per-step return variance; default 1e-8, a
            1 bp per-step standard deviation): below it they are 0. A smaller floor lets the differential
            Sharpe ratio reach +-1e6 when its EMA variance is barely positive (e.g. after a tiny first trade).
        max_steps_in_episode: informational copy of the environment's `episode_length` (truncation
            uses the constructor's value, which fixes the observation's time feature).
    """

    market: MarketArrays = None
    initial_equity: float = 100_000.0
    fee_rate: float = 1e-3
    slippage: float = 0.0
    max_position: float = 1.0
    ruin_fraction: float = 0.5
    max_hold: int = 10
    eta: float = 0.01
    drawdown_penalty: float = 0.1
    sharpe_eps: float = 1e-8
    max_steps_in_episode: int = 256


class MultiDiscrete(spaces.Space):
    """`shape` independent choices in `{0, ..., n - 1}` (gymnax has no multi-discrete space)."""

    def __init__(self, n: int, shape: tuple[int, ...], dtype=jnp.int32):
        self.n = n
        self.shape = shape
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"MultiDiscrete({self.n}, shape={self.shape})"

    def sample(self, key: Array) -> Array:
        return jax.random.randint(key, self.shape, 0, self.n, dtype=self.dtype)

    def contains(self, x: Array) -> Array:
        x = jnp.asarray(x)
        return jnp.all((x >= 0) & (x < self.n))


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}; got {value!r}")


class TradingEnv(environment.Environment[EnvState, EnvParams]):
    """Trading environment over `n_assets` assets (see the module docstring for the full maths).

    Args:
        n_assets: N, the market's number of assets.
        window: W, bars of log returns in the observation (>= 1).
        episode_length: L, decisions per episode before truncation (>= 1).
        action_mode: one of `ACTION_MODES`.
        reward: one of `REWARD_KINDS`.
        n_features: F, per-asset market features appended to the observation (the market's F).
        default_market: the market of `default_params` (optional; `make_trading` passes one).

    Raises:
        ValueError: bad `action_mode` / `reward` (naming the allowed values), non-positive sizes, or
            "position_hold" with N > 1.
    """

    def __init__(
        self,
        n_assets: int = 1,
        window: int = 32,
        episode_length: int = 256,
        action_mode: str = "discrete",
        reward: str = "pnl",
        n_features: int = 0,
        default_market: MarketArrays | None = None,
    ):
        super().__init__()
        _check_choice("action_mode", action_mode, ACTION_MODES)
        _check_choice("reward", reward, REWARD_KINDS)
        for name, value, low in (("n_assets", n_assets, 1), ("window", window, 1),
                                 ("episode_length", episode_length, 1), ("n_features", n_features, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        if action_mode == "position_hold" and n_assets != 1:
            raise ValueError(f"action_mode='position_hold' supports one asset only; got n_assets={n_assets}")
        self.n_assets = int(n_assets)
        self.window = int(window)
        self.episode_length = int(episode_length)
        self.action_mode = action_mode
        self.reward_kind = reward
        self.n_features = int(n_features)
        self._default_market = default_market

    # ------------------------------------------------------------------ gymnax boilerplate

    @property
    def name(self) -> str:
        return "Trading-v0"

    @property
    def default_params(self) -> EnvParams:
        if self._default_market is None:
            raise ValueError("TradingEnv has no default market; build it with make_trading() or pass params")
        return EnvParams(market=self._default_market, max_steps_in_episode=self.episode_length)

    @property
    def obs_size(self) -> int:
        """`W * N + N + 2 + N * F`."""
        n = self.n_assets
        return self.window * n + n + 2 + n * self.n_features

    @property
    def num_actions(self) -> int:
        """Choices per asset (discrete) or the action vector's length (continuous modes)."""
        if self.action_mode == "discrete":
            return 3
        return 2 if self.action_mode == "position_hold" else self.n_assets

    def action_space(self, params: EnvParams | None = None):
        n = self.n_assets
        if self.action_mode == "discrete":
            return spaces.Discrete(3) if n == 1 else MultiDiscrete(3, (n,))
        if self.action_mode == "continuous":
            return spaces.Box(-1.0, 1.0, (n,), jnp.float32)
        return spaces.Box(jnp.array([-1.0, 0.0]), jnp.array([1.0, 1.0]), (2,), jnp.float32)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (self.obs_size,), jnp.float32)

    def is_truncated(self, state: EnvState, params: EnvParams) -> Array:
        """True after `episode_length` decisions."""
        return state.time >= self.episode_length

    def is_terminated(self, state: EnvState, params: EnvParams) -> Array:
        """Ruin: `equity <= ruin_fraction * initial_equity`."""
        return state.equity <= params.ruin_fraction * params.initial_equity

    # ------------------------------------------------------------------ pieces

    def _check_market(self, market: MarketArrays) -> None:
        if market.n_assets != self.n_assets or market.n_features != self.n_features:
            raise ValueError(
                f"the market has {market.n_assets} assets and {market.n_features} features but the environment "
                f"was built for n_assets={self.n_assets}, n_features={self.n_features}"
            )
        if market.n_time - 1 - self.episode_length < self.window - 1:
            raise ValueError(
                f"market has {market.n_time} bars but an episode needs window ({self.window}) + episode_length "
                f"({self.episode_length}) = {self.window + self.episode_length}; use a longer split or shorter episodes"
            )
        if market.n_paths * (market.n_time - self.episode_length - self.window + 1) >= 2**31:
            raise ValueError("market too large: paths x episode starts must be < 2**31 (one int32 draw picks both)")

    def _draw_start(self, key: Array, market: MarketArrays) -> tuple[Array, Array]:
        """A uniform (path, t0) pair from ONE 32-bit random draw (modulo bias < P * T / 2^32)."""
        low = self.window - 1
        n_starts = market.n_time - self.episode_length - low
        bits = jax.random.bits(key, (), jnp.uint32)
        index = (bits % jnp.uint32(market.n_paths * n_starts)).astype(jnp.int32)
        return index // n_starts, low + index % n_starts

    def _observe(self, market: MarketArrays, path, t, weights, equity, time, initial_equity) -> Array:
        w, n = self.window, self.n_assets
        rets = jax.lax.dynamic_slice(market.log_return, (path, t - w + 1, 0), (1, w, n)).reshape(w * n)
        extra = jnp.stack([equity / initial_equity - 1.0, (self.episode_length - time) / self.episode_length])
        parts = [rets, weights, extra.astype(jnp.float32)]
        if self.n_features:
            parts.append(market.features[path, t].reshape(n * self.n_features))
        return jnp.concatenate(parts).astype(jnp.float32)

    def invalid_action(self, action) -> Array:
        """bool scalar: the action places no order (any NaN/inf entry; in "discrete" mode also an entry
        whose integer part is outside {0, 1, 2})."""
        a = jnp.asarray(action)
        if not jnp.issubdtype(a.dtype, jnp.inexact):
            return jnp.any((a < 0) | (a > 2)) if self.action_mode == "discrete" else jnp.zeros((), bool)
        bad = ~jnp.isfinite(a)
        if self.action_mode == "discrete":
            bad = bad | (a <= -1) | (a >= 3)
        return jnp.any(bad)

    def _target_weights(self, state: EnvState, action, params: EnvParams):
        """Target weights `[N]`, whether to trade (position_hold may ignore the action), the new hold.
        (Invalid actions are handled by the caller; their result here is not used.)"""
        n = self.n_assets
        if self.action_mode == "discrete":
            a = jnp.clip(jnp.reshape(jnp.asarray(action), (n,)).astype(jnp.int32), 0, 2)
            return (a - 1).astype(jnp.float32) * (params.max_position / n), None, state.hold
        a = jnp.nan_to_num(jnp.asarray(action, jnp.float32), nan=0.0, posinf=1.0, neginf=-1.0)
        if self.action_mode == "continuous":
            a = jnp.clip(jnp.reshape(a, (n,)), -1.0, 1.0)
            return a / jnp.maximum(1.0, jnp.sum(jnp.abs(a))) * params.max_position, None, state.hold
        a = jnp.reshape(a, (2,))
        size, hold_time = jnp.clip(a[0], -1.0, 1.0), jnp.clip(a[1], 0.0, 1.0)
        k = 1 + jnp.floor(hold_time * (params.max_hold - 1)).astype(jnp.int32)
        accept = state.hold <= 0
        hold = jnp.where(accept, k - 1, state.hold - 1)
        return jnp.reshape(size * params.max_position, (1,)), accept, hold

    # ------------------------------------------------------------------ gymnax API

    def reset_env(self, key: Array, params: EnvParams) -> tuple[Array, EnvState]:
        """A new episode on a random path and start bar: all cash, no position."""
        market = params.market
        self._check_market(market)
        path, t0 = self._draw_start(key, market)
        e0 = jnp.asarray(params.initial_equity, jnp.float32)
        units = jnp.zeros((self.n_assets,), jnp.float32)
        state = EnvState(
            time=jnp.int32(0), path=path, t=t0, cash=e0, units=units, equity=e0, hold=jnp.int32(0),
            reward=rewards.reward_init(e0),
        )
        return self._observe(market, path, t0, units, e0, state.time, e0), state

    def step_env(self, key: Array, state: EnvState, action, params: EnvParams):
        """One decision: trade to the target at `open[t+1]`, mark at `close[t+1]` (no randomness)."""
        del key
        market = params.market
        path, t1 = state.path, state.t + 1
        open1, close1 = market.open[path, t1], market.close[path, t1]
        half_spread = 0.5 * market.spread[path, t1]
        equity = state.equity

        invalid = self.invalid_action(action)
        weights, accept, hold = self._target_weights(state, action, params)
        target = weights * equity / open1
        if accept is not None:
            target = jnp.where(accept, target, state.units)
            hold = jnp.where(invalid, jnp.maximum(state.hold - 1, 0), hold)  # no new hold; a running one counts down
        target = jnp.where(invalid, state.units, target)  # no order: trade 0, no cost
        trade = target - state.units
        exec_price = costs.fill_price(open1, trade, half_spread, params.slippage)
        abs_notional = jnp.abs(trade) * open1
        fee = jnp.sum(costs.proportional_fee(trade * exec_price, params.fee_rate))
        cash = state.cash - jnp.dot(trade, exec_price) - fee
        next_equity = cash + jnp.dot(target, close1)

        reward, reward_state = rewards.reward_update(
            self.reward_kind, state.reward, equity, next_equity, params.initial_equity,
            eta=params.eta, drawdown_penalty=params.drawdown_penalty, eps=params.sharpe_eps,
        )
        time = state.time + 1
        new_state = EnvState(
            time=time, path=path, t=t1, cash=cash, units=target, equity=next_equity, hold=hold, reward=reward_state,
        )
        positive = next_equity > 0
        new_weights = jnp.where(positive, target * close1 / jnp.where(positive, next_equity, 1.0), 0.0)
        obs = self._observe(market, path, t1, new_weights, next_equity, time, params.initial_equity)
        terminated = self.is_terminated(new_state, params)
        spread_cost = jnp.sum(abs_notional * half_spread)
        slippage_cost = jnp.sum(abs_notional) * params.slippage
        info = {
            "equity": next_equity,
            "weights": new_weights,
            "exec_price": exec_price,
            "trade_notional": jnp.sum(abs_notional),
            "fee": fee,
            "spread_cost": spread_cost,
            "slippage_cost": slippage_cost,
            "costs": fee + spread_cost + slippage_cost,
            "step_return": rewards.step_return(equity, next_equity),
            "invalid_action": invalid,
        }
        return obs, new_state, reward.astype(jnp.float32), terminated, info

    @partial(jax.jit, static_argnames=("self",))
    def step(self, key: Array, state: EnvState, action, params: EnvParams | None = None):
        """gymnax `step` with auto-reset; `info["final_observation"]` is the observation reached.

        Same API and semantics as `gymnax.environments.environment.Environment.step`; the key is not
        split because `step_env` draws nothing (the whole key goes to the reset draw).
        """
        if params is None:
            params = self.default_params
        obs_st, state_st, reward, terminated, info = self.step_env(key, state, action, params)
        truncated = self.is_truncated(state_st, params)
        done = jnp.logical_or(terminated, truncated)
        obs_re, state_re = self.reset_env(key, params)
        state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), state_re, state_st)
        obs = jax.lax.select(done, obs_re, obs_st)
        info = {**info, "terminated": terminated, "truncated": truncated, "final_observation": obs_st}
        return obs, state, reward, terminated, truncated, info


def make_trading(
    *,
    market: MarketArrays | None = None,
    data=None,
    split=None,
    symbols=None,
    spread: float = 2e-4,
    features=None,
    n_assets: int = 1,
    n_paths: int = 64,
    seed: int = 0,
    window: int = 32,
    episode_length: int = 256,
    action_mode: str = "discrete",
    reward: str = "pnl",
    **params: Any,
) -> tuple[TradingEnv, EnvParams]:
    """Build a `TradingEnv` and its `EnvParams`.

    Market, in order of precedence: `market` (a `MarketArrays`); `data` (a `MarketData` from
    `load_ohlcv`, replayed through `replay_market(data, split, symbols=, spread=, features=)`); otherwise
    a synthetic regime-switching bank `synthetic_market(jax.random.key(seed), n_paths,
    episode_length + window + 64, n_assets=n_assets)` (works offline).

    Args:
        market, data, split, symbols, spread, features: the market source (see above).
        n_assets, n_paths, seed: size and key of the default synthetic bank.
        window, episode_length, action_mode, reward: static settings of `TradingEnv`.
        **params: `EnvParams` fields (initial_equity, fee_rate, slippage, max_position, ruin_fraction,
            max_hold, eta, drawdown_penalty, sharpe_eps).

    Returns:
        `(env, env_params)`.

    Raises:
        ValueError: both `market` and `data` given, an unknown `EnvParams` field, a bad action mode or
            reward, or a market too short for one episode.
    """
    _check_choice("action_mode", action_mode, ACTION_MODES)
    _check_choice("reward", reward, REWARD_KINDS)
    if market is not None and data is not None:
        raise ValueError("pass either market= or data=, not both")
    if data is not None:
        market = replay_market(data, split, symbols=symbols, spread=spread, features=features)
    elif market is None:
        market = synthetic_market(jax.random.key(seed), n_paths, episode_length + window + 64, n_assets=n_assets)
    fields = set(EnvParams.__dataclass_fields__) - {"market", "max_steps_in_episode"}
    unknown = set(params) - fields
    if unknown:
        raise ValueError(f"unknown EnvParams field(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    env = TradingEnv(
        n_assets=market.n_assets, window=window, episode_length=episode_length, action_mode=action_mode,
        reward=reward, n_features=market.n_features, default_market=market,
    )
    env._check_market(market)
    env_params = EnvParams(market=market, max_steps_in_episode=episode_length, **params)
    return env, env_params
