"""Portfolio environment: N assets (plus cash), target weights, turnover costs, log growth.

    env, env_params = make_portfolio(n_assets=4, action_mode="softmax", reward="log_growth")
    obs, state = env.reset(key, env_params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, env_params)

**Weights.** The portfolio is held as `cash` and `units [N]` in the state, so the equity
`E = cash + units . price` is exact at every bar. Weights are reported over `N + 1` slots with cash first,
`w = [cash, units_1 p_1, ..., units_N p_N] / E` (they sum to 1). With `include_cash=False` the agent
chooses over the N risky assets only (cash stays 0 after the first rebalance; the episode starts
equally weighted, bought free of cost at the close of the first decision bar), and the observation
carries the N risky weights.

**Actions** (`action_mode`, the action has `K = N + 1` entries with cash, else `K = N`):

* ``"softmax"``: the action is a vector of logits, `w* = softmax(action)`.
* ``"simplex"``: the action is a vector of scores (nonnegative by convention; any real vector works),
  `w*` is its Euclidean projection onto the capped simplex
  `{w : sum w = 1, 0 <= w_i <= u_i}` with `u_i = cap` for every risky asset and `u_cash = 1` (cash is
  never capped). `cap` is in `EnvParams`; `cap = 1` is the plain simplex. See `project_capped_simplex`.

**Invalid actions** (the same rule in every environment of `trading_jax.envs`): an action with a NaN or
infinite entry places **no order this step**: cash and units are kept (the weights drift with the
prices), nothing is traded and no cost is paid, and time still advances (the portfolio is marked at
`close[t+1]`, the reward and the episode end follow from that mark). One exception, in "softmax" mode
only: a logit of `-inf` is a valid zero weight (`softmax` is defined while one logit is finite;
`trading_jax.rl.baselines` writes zero weights this way), so there an action is invalid when an entry is
NaN or `+inf`, or every entry is `-inf`. `info["invalid_action"]` is True on such a step, and
`info["target_weights"]` then holds the drifted weights at the open (the weights actually held).

**Timing** (DESIGN.md market-data rules). At decision bar t the agent sees bars `<= t`. Its target `w*`
is traded at `open[t+1]`:

1. drift: `V = cash + units . open[t+1]`, `w~ = [cash, units * open[t+1]] / V` (the weights the
   previous fill drifted to);
2. cost (fee, half spread and slippage on the risky turnover; cash absorbs it):

       c = V * sum_{i=1..N} (fee_rate + spread[t+1, i] / 2 + slippage) * |w*_i - w~_i|

   (with `fee_rate = 10 bps`, no spread and no slippage, `c = 0.001 * turnover * V` where
   `turnover = sum_i |w*_i - w~_i|`, the risky assets only);
3. rebalance: the net value `V' = V - c` is split by the target: `cash = w*_cash V'`,
   `units_i = w*_i V' / open[t+1, i]`, so the post-trade weights are exactly `w*` (the cost is charged
   on the turnover of the gross value `V`, the usual first-order approximation: the cost of trading
   the cost itself, `O(c^2)`, is ignored);
4. mark: `E_{t+1} = cash + units . close[t+1]`.

**Rewards** (`reward`), with the step's log growth net of costs `r = log(E_{t+1} / E_t)`
(`log(max(ratio, 1e-12))`: never infinite):

* ``"log_growth"``: `r` (sums to the episode's log growth).
* ``"risk_adjusted"``: mean-variance penalised log growth

      reward = r - risk_aversion * (r - m)^2,   m = mean of the episode's earlier step log growths

  (`m = 0` at the first step): log growth minus `risk_aversion` times the step's squared deviation from
  the episode's running mean, so over an episode of k steps the penalties add up to about
  `risk_aversion * k * Var(r)` (a mean-variance objective on log growth, computed online).

**Observation** (flat float32 `[W*N + K + 2 + N*F]`):

    [ log returns of bars t-W+1..t  (W x N, time-major: oldest bar first, assets within a bar)
    | current weights at close t   (K: cash first when include_cash)
    | E_t / initial_cash - 1, (episode_length - time) / episode_length
    | market features at bar t     (N x F, asset-major; absent when the market has none) ]

**Info** (after the step): `equity`, `weights` `[N + 1]` (at the close, cash first), `target_weights`
`[N + 1]`, `turnover`, `cost`, `log_growth`, `invalid_action`; gymnax's `step` adds `terminated`, `truncated`
and `final_observation`.

**Episodes.** `reset` draws a path and a first decision bar (`sample_episode`); the portfolio starts all
in cash (or equally weighted without cash). The episode terminates on ruin (`E <= ruin_fraction *
initial_cash`) and is truncated after `episode_length` decisions; gymnax's `step` auto-resets.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from trading_jax.envs.market import (
    MarketArrays,
    log_return_window,
    replay_market,
    sample_episode,
    synthetic_market,
)
from trading_jax.portfolio.projections import project_capped_simplex

Array = jax.Array

__all__ = [
    "ACTION_MODES",
    "REWARDS",
    "EnvState",
    "EnvParams",
    "PortfolioEnv",
    "make_portfolio",
    "project_capped_simplex",
    "rebalance_cost",
]

ACTION_MODES: tuple[str, ...] = ("softmax", "simplex")
REWARDS: tuple[str, ...] = ("log_growth", "risk_adjusted")

_TINY_RATIO = 1e-12


@struct.dataclass
class EnvState(environment.EnvState):
    """State of one portfolio episode.

    Attributes:
        time: decisions taken in this episode (int32); the current decision bar is `t0 + time`.
        path: market path of the episode (int32).
        t0: first decision bar (int32).
        cash: cash held (float32).
        units: units held of each asset `[N]` (float32).
        equity: `cash + units . close[t0 + time]` (float32).
        weights: `[N + 1]` weights at the close of the current bar, cash first (sum to 1).
        sum_log_growth: sum of this episode's step log growths (running mean of "risk_adjusted").
    """

    path: Array
    t0: Array
    cash: Array
    units: Array
    equity: Array
    weights: Array
    sum_log_growth: Array


@struct.dataclass
class EnvParams:
    """Everything a user may vmap over (the market arrays included).

    Attributes:
        market: `MarketArrays` `[P, T, N]`.
        initial_cash: equity at the start of an episode.
        fee_rate: fee per unit of traded value (1e-3 = 10 bps).
        slippage: extra relative price concession per unit of traded value.
        cap: upper bound of each risky weight in the "simplex" action mode (cash is never capped).
        risk_aversion: coefficient of the "risk_adjusted" reward.
        ruin_fraction: the episode terminates when equity <= ruin_fraction * initial_cash.
    """

    market: MarketArrays
    initial_cash: float = 100_000.0
    fee_rate: float = 1e-3
    slippage: float = 0.0
    cap: float = 1.0
    risk_aversion: float = 1.0
    ruin_fraction: float = 0.2


def rebalance_cost(w_target, w_drift, value, rate) -> tuple[Array, Array]:
    """Turnover and cost of moving the risky weights from `w_drift` to `w_target`.

        turnover = sum_i |w*_i - w~_i|,    cost = value * sum_i rate_i |w*_i - w~_i|

    Args:
        w_target, w_drift: risky weights `[N]` (cash excluded: it absorbs the trades).
        value: portfolio value at the fill prices (scalar).
        rate: cost per unit of traded value, `fee_rate + half_spread_i + slippage`, broadcastable to `[N]`.

    Returns:
        `(turnover, cost)` scalars.
    """
    traded = jnp.abs(w_target - w_drift)
    return jnp.sum(traded), value * jnp.sum(rate * traded)


class PortfolioEnv(environment.Environment[EnvState, EnvParams]):
    """Gymnax environment: allocate an equity across N assets (and cash) by target weights.

    See the module docstring for the timing, costs, rewards and observation layout.

    Args:
        n_assets: N >= 2 (must match the market of the params).
        window: W, bars of log returns in the observation (>= 1).
        episode_length: decisions per episode (>= 1).
        action_mode: one of `ACTION_MODES`.
        reward: one of `REWARDS`.
        include_cash: whether cash is a weight the agent chooses (first slot).
        n_features: F, features per asset and bar of the market (0 for none).
        n_iter: bisection steps of the "simplex" projection.
    """

    def __init__(
        self,
        n_assets: int = 4,
        window: int = 32,
        episode_length: int = 252,
        action_mode: str = "softmax",
        reward: str = "log_growth",
        include_cash: bool = True,
        n_features: int = 0,
        n_iter: int = 25,
    ):
        super().__init__()
        _check_static(n_assets, window, episode_length, action_mode, reward, n_features)
        self.n_assets = int(n_assets)
        self.window = int(window)
        self.episode_length = int(episode_length)
        self.action_mode = action_mode
        self.reward_kind = reward
        self.include_cash = bool(include_cash)
        self.n_features = int(n_features)
        self.n_iter = int(n_iter)

    # Hashable by settings: two equal environments share compiled programs.
    def _key(self):
        return (type(self), self.n_assets, self.window, self.episode_length, self.action_mode,
                self.reward_kind, self.include_cash, self.n_features, self.n_iter)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, PortfolioEnv) and self._key() == other._key()

    @property
    def n_weights(self) -> int:
        """K: entries of an action (N + 1 with cash, else N)."""
        return self.n_assets + int(self.include_cash)

    @property
    def obs_size(self) -> int:
        return self.window * self.n_assets + self.n_weights + 2 + self.n_assets * self.n_features

    @property
    def default_params(self) -> EnvParams:
        n_steps = self.episode_length + self.window + 64
        return EnvParams(market=synthetic_market(jax.random.key(0), 64, n_steps, n_assets=self.n_assets))

    @property
    def name(self) -> str:
        return "Portfolio"

    @property
    def num_actions(self) -> int:
        return self.n_weights

    def action_space(self, params: EnvParams | None = None) -> spaces.Box:
        """Box `[K]`: logits in [-10, 10] ("softmax"; any real is valid) or scores in [0, 1] ("simplex")."""
        if self.action_mode == "softmax":
            return spaces.Box(-10.0, 10.0, (self.n_weights,), jnp.float32)
        return spaces.Box(0.0, 1.0, (self.n_weights,), jnp.float32)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (self.obs_size,), jnp.float32)

    def invalid_action(self, action) -> Array:
        """bool scalar: the action places no order (module docstring: a NaN or infinite entry; in
        "softmax" mode a NaN or `+inf` entry, or every entry `-inf`)."""
        a = jnp.asarray(action, jnp.float32).reshape(self.n_weights)
        if self.action_mode == "softmax":
            return jnp.any(jnp.isnan(a) | (a == jnp.inf)) | jnp.all(a == -jnp.inf)
        return jnp.any(~jnp.isfinite(a))

    def target_weights(self, action, params: EnvParams) -> Array:
        """The action's target weights over `N + 1` slots, cash first (cash 0 without `include_cash`)."""
        action = jnp.asarray(action, jnp.float32).reshape(self.n_weights)
        if self.action_mode == "softmax":
            w = jax.nn.softmax(action)
        else:
            cap = jnp.asarray(params.cap, jnp.float32)
            upper = jnp.full((self.n_assets,), cap)
            if self.include_cash:
                upper = jnp.concatenate([jnp.ones((1,), jnp.float32), upper])
            w = project_capped_simplex(action, upper, self.n_iter)
        if not self.include_cash:
            w = jnp.concatenate([jnp.zeros((1,), w.dtype), w])
        return w

    def get_obs(self, state: EnvState, params: EnvParams, key=None) -> Array:
        """Flat float32 observation `[W*N + K + 2 + N*F]` (layout in the module docstring)."""
        t = state.t0 + state.time
        returns = log_return_window(params.market, state.path, t, self.window).reshape(-1)
        weights = state.weights if self.include_cash else state.weights[1:]
        progress = jnp.stack([
            state.equity / params.initial_cash - 1.0,
            (self.episode_length - state.time) / self.episode_length,
        ])
        parts = [returns, weights, progress]
        if self.n_features:
            parts.append(params.market.features[state.path, t].reshape(-1))
        return jnp.concatenate([p.astype(jnp.float32) for p in parts])

    def reset_env(self, key: Array, params: EnvParams) -> tuple[Array, EnvState]:
        path, t0 = sample_episode(key, params.market, self.window, self.episode_length)
        return self.reset_at(path, t0, params)

    def reset_at(self, path, t0, params: EnvParams) -> tuple[Array, EnvState]:
        """Start an episode on `path` at decision bar `t0` (deterministic part of `reset_env`)."""
        path = jnp.asarray(path, jnp.int32)
        t0 = jnp.asarray(t0, jnp.int32)
        initial = jnp.asarray(params.initial_cash, jnp.float32)
        close = params.market.close[path, t0]
        n = self.n_assets
        if self.include_cash:
            cash, units = initial, jnp.zeros((n,), jnp.float32)
        else:
            cash, units = jnp.zeros((), jnp.float32), initial / n / close
        state = _marked(EnvState(
            time=jnp.zeros((), jnp.int32), path=path, t0=t0, cash=cash, units=units,
            equity=initial, weights=jnp.zeros((n + 1,), jnp.float32),
            sum_log_growth=jnp.zeros((), jnp.float32),
        ), close)
        return self.get_obs(state, params), state

    def step_env(self, key: Array, state: EnvState, action, params: EnvParams):
        market = params.market
        t1 = state.t0 + state.time + 1  # fill and mark bar
        open1 = market.open[state.path, t1]
        close1 = market.close[state.path, t1]
        half_spread = 0.5 * market.spread[state.path, t1]

        invalid = self.invalid_action(action)
        w_target = self.target_weights(action, params)
        # 1. drift to the fill prices
        holdings = state.units * open1
        value = state.cash + jnp.sum(holdings)
        safe_value = jnp.where(value > 0, value, 1.0)
        w_drift = holdings / safe_value
        # 2. costs on the risky turnover
        rate = params.fee_rate + half_spread + params.slippage
        turnover, cost = rebalance_cost(w_target[1:], w_drift, value, rate)
        # 3. rebalance the net value to the target (an invalid action: no order, keep cash and units)
        net = value - cost
        cash = jnp.where(invalid, state.cash, w_target[0] * net)
        units = jnp.where(invalid, state.units, w_target[1:] * net / open1)
        turnover = jnp.where(invalid, 0.0, turnover)
        cost = jnp.where(invalid, 0.0, cost)
        w_target = jnp.where(invalid, jnp.concatenate([(state.cash / safe_value)[None], w_drift]), w_target)
        # 4. mark at the close
        new = _marked(state.replace(time=state.time + 1, cash=cash, units=units), close1)

        ratio = jnp.where(state.equity > 0, new.equity / jnp.where(state.equity > 0, state.equity, 1.0), 0.0)
        log_growth = jnp.log(jnp.maximum(ratio, _TINY_RATIO))
        if self.reward_kind == "log_growth":
            reward = log_growth
        else:
            mean = state.sum_log_growth / jnp.maximum(state.time, 1).astype(jnp.float32)
            reward = log_growth - params.risk_aversion * (log_growth - mean) ** 2
        new = new.replace(sum_log_growth=state.sum_log_growth + log_growth)

        terminated = new.equity <= params.ruin_fraction * params.initial_cash
        info = {
            "equity": new.equity,
            "weights": new.weights,
            "target_weights": w_target,
            "turnover": turnover,
            "cost": cost,
            "log_growth": log_growth,
            "invalid_action": invalid,
        }
        obs = self.get_obs(new, params)
        return obs, new, reward.astype(jnp.float32), terminated, info

    def is_truncated(self, state: EnvState, params: EnvParams) -> Array:
        """True once `episode_length` decisions have been taken."""
        return state.time >= self.episode_length

    def is_terminated(self, state: EnvState, params: EnvParams) -> Array:
        return state.equity <= params.ruin_fraction * params.initial_cash


def _marked(state: EnvState, price: Array) -> EnvState:
    """`state` with equity and weights marked at `price [N]` (weights cash first, guarded division)."""
    holdings = state.units * price
    equity = state.cash + jnp.sum(holdings)
    safe = jnp.where(equity > 0, equity, 1.0)
    weights = jnp.concatenate([state.cash[None], holdings]) / safe
    return state.replace(equity=equity, weights=weights)


def _check_static(n_assets, window, episode_length, action_mode, reward, n_features) -> None:
    if action_mode not in ACTION_MODES:
        raise ValueError(f"action_mode must be one of {list(ACTION_MODES)}; got {action_mode!r}")
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {list(REWARDS)}; got {reward!r}")
    for name, value, low in (("n_assets", n_assets, 2), ("window", window, 1),
                             ("episode_length", episode_length, 1), ("n_features", n_features, 0)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")


def make_portfolio(
    *,
    n_assets: int | None = None,
    window: int = 32,
    episode_length: int = 252,
    action_mode: str = "softmax",
    reward: str = "log_growth",
    include_cash: bool = True,
    market: MarketArrays | None = None,
    data: Any = None,
    split: Any = None,
    symbols=None,
    spread: float = 2e-4,
    initial_cash: float = 100_000.0,
    fee_rate: float = 1e-3,
    slippage: float = 0.0,
    cap: float = 1.0,
    risk_aversion: float = 1.0,
    ruin_fraction: float = 0.2,
    n_iter: int = 25,
    key: Array | None = None,
) -> tuple[PortfolioEnv, EnvParams]:
    """Build the portfolio environment and its params.

    The market is, in order of precedence: `market` (a `MarketArrays`), `data` (a `MarketData` from
    `trading_jax.data.load_ohlcv`, replayed through `replay_market(data, split, symbols=symbols,
    spread=spread)`), or a bank of 64 synthetic paths of `episode_length + window + 64` bars with
    `n_assets` assets (default 4) drawn from `key` (default `jax.random.key(0)`).

    Args:
        n_assets: N; inferred from `market`/`data` when given (and then checked if also given).
        window, episode_length, action_mode, reward, include_cash, n_iter: see `PortfolioEnv`.
        market, data, split, symbols, spread: the market source (above).
        initial_cash, fee_rate, slippage, cap, risk_aversion, ruin_fraction: see `EnvParams`.
        key: the synthetic market's key.

    Returns:
        `(env, env_params)`.

    Raises:
        ValueError: for an unknown action mode or reward, non-positive sizes, fewer than 2 assets, a market
            too short for one episode, negative costs, `fee_rate + slippage >= 0.5` (a full rebalance could
            cost the whole equity), `cap` outside (0, 1], `cap * N < 1` without cash (no feasible weights),
            `ruin_fraction` outside [0, 1), or a non-positive `initial_cash`.
    """
    _check_static(n_assets if n_assets is not None else 2, window, episode_length, action_mode, reward, 0)
    if market is None and data is not None:
        market = replay_market(data, split, symbols=symbols, spread=spread)
    if market is None:
        n = 4 if n_assets is None else n_assets
        k = jax.random.key(0) if key is None else key
        market = synthetic_market(k, 64, episode_length + window + 64, n_assets=n)
    if n_assets is not None and n_assets != market.n_assets:
        raise ValueError(f"n_assets={n_assets} but the market has {market.n_assets} assets")
    n = market.n_assets
    if n < 2:
        raise ValueError(f"the portfolio environment needs n_assets >= 2; the market has {n}")
    if market.n_time - 1 - episode_length < window - 1:
        raise ValueError(
            f"market has {market.n_time} bars but an episode needs window ({window}) + episode_length "
            f"({episode_length}) = {window + episode_length}; use a longer split or shorter episodes"
        )
    for name, value in (("fee_rate", fee_rate), ("slippage", slippage), ("risk_aversion", risk_aversion)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    if fee_rate + slippage >= 0.5:
        raise ValueError(f"fee_rate + slippage must be < 0.5 (got {fee_rate + slippage}): a full rebalance "
                         "(turnover 2) would cost the whole equity")
    if not 0.0 < cap <= 1.0:
        raise ValueError(f"cap must be in (0, 1]; got {cap!r}")
    if action_mode == "simplex" and not include_cash and cap * n < 1.0:
        raise ValueError(f"cap * n_assets must be >= 1 without cash (cap={cap}, n_assets={n}): no weights "
                         "satisfy sum w = 1 and w <= cap; raise cap or use include_cash=True")
    if not 0.0 <= ruin_fraction < 1.0:
        raise ValueError(f"ruin_fraction must be in [0, 1); got {ruin_fraction!r}")
    if not initial_cash > 0:
        raise ValueError(f"initial_cash must be > 0; got {initial_cash!r}")
    env = PortfolioEnv(n, window, episode_length, action_mode, reward, include_cash, market.n_features, n_iter)
    params = EnvParams(
        market=market, initial_cash=float(initial_cash), fee_rate=float(fee_rate), slippage=float(slippage),
        cap=float(cap), risk_aversion=float(risk_aversion), ruin_fraction=float(ruin_fraction),
    )
    return env, params
