"""Baseline policies for the execution, trading and portfolio environments (issue 5, item 4).

A policy is a pure function

    policy(obs, state, key, env_params) -> action

of ONE environment's observation and state (vmap it for a batch; `trading_jax.evaluation.rollout` does). Every
baseline here is deterministic (the key is unused), jittable and vmappable, and reads only what is known
at the decision: the observation (bars <= t, the book at t) and, where stated, static settings of the
environment or fields of `env_params` that do not change during an episode (e.g. the volume-profile
curvature, the horizon). None reads `state` (the argument is accepted for the common signature).

Build one by name: `make_baseline("execution", "twap", env, env_params)`; `BASELINES[env_name][name]` is
the factory `factory(env, env_params, **kw) -> policy`.

**Execution** (`trading_jax.envs.execution`, actions 0..9; `R` remaining, `n = H - t` steps left). Every
baseline ends by the env's forced completion at `t = H - 1` at the latest.

* ``"immediate"``: market 50% (action 3) every step. The action set has no "market order for all of R"
  (action 4, the aggressive IOC limit, fills only `min(R, d1)`), so this is the most front-loaded market
  schedule it can express: a geometric one, `R_k = Q / 2^k`, finished when a fill would leave less than
  `min_lot` (Q = 3000, min_lot = 1: after 12 steps).
* ``"twap"``: the TWAP slice (action 7, `R / n`) every step: `Q / H` per step, `executed_k = k Q / H`.
* ``"vwap"``: the VWAP slice (action 8, `R w(t) / sum_{s >= t} w(s)`) every step: `executed_k =
  Q sum_{s < k} w(s) / sum_s w(s)`, the expected volume profile `orderbook.volume_profile`.
* ``"almgren_chriss"`` (`lam`: risk aversion, or `kappa` directly): tracks the AC (2000) optimal
  holdings `x_k / X = sinh(kappa (H - k)) / sinh(kappa H)` (`(H - k) / H`, TWAP, as kappa -> 0). At step t
  the target trade is the shortfall to the schedule after this step, `R - Q x_{t+1} / X` (clipped at 0;
  from the observation's `R / Q` and `(H - t) / H`), and the policy takes the market action among
  {7 TWAP, 8 VWAP, 0 wait, 1, 2, 3 market 10/25/50%} whose size (a fraction of R, known at t) is closest
  to it (ties go to the earlier one in that list). The action sizes are coarse (e.g. 1/H, ~1.6/H, 0.1 R),
  so the executed path follows the schedule by error feedback: a lag accumulates until a larger slice is
  the closest, which then catches up. Kappa comes from `lam` through AC's discrete-time relation
  `2 (cosh kappa - 1) = lam sigma^2 / (eta_lin Q)`, with IS measured as a fraction of the arrival notional
  (`E[IS] + lam Var[IS]`) and the env's square-root temporary impact linearised at the TWAP slice
  `q0 = Q / H`: `eta_lin = eta sigma / sqrt(V q0)` (so `eta_lin q0^2 = eta sigma q0^1.5 / sqrt(V)`, the
  sqrt-law cost of one TWAP slice). The approximation ignores the depth at the best quote (no temporary
  impact below `d1`), the spread, the imbalance signal and the square-root permanent impact.
* ``"wait_then_force"``: wait (action 0) every step; the horizon forces the whole order at `t = H - 1`.
* ``"passive_only"``: the passive limit (action 5) every step; whatever has not filled is forced at
  `t = H - 1`. On the modelled book (`book="modelled"`) this is the strategy that adverse selection and
  queue position price (the no-free-lunch control).

**Trading** (`trading_jax.envs.trading`; works in the "discrete", "continuous" and "position_hold" modes,
for N assets; "long" is the env's `+max_position / N` per asset).

* ``"flat"``: no position (discrete 1, continuous 0, position_hold `[0, 0]`).
* ``"buy_and_hold"``: long from the first decision, kept (discrete 2, continuous `+1` per asset,
  position_hold `[1, 1]`). The env's action is a target WEIGHT, re-applied at each open, so after entry
  it trades only the drift `|cash + units (close_t - open_{t+1})| / open_{t+1}` (the entry cost's small
  leverage, and overnight gaps): with costs only at entry and no gaps, the equity after entry grows
  exactly as the price (a true "never trade again" order is not expressible without reading the fill
  price; see the report's proposal of a "hold" action).
* ``"ma_crossover"`` (`fast=5`, `slow=20`, `short=True`): long when the simple moving average of the last
  `fast` closes exceeds that of the last `slow` closes (bars `t - slow + 1 .. t`), else short (or flat
  with `short=False`). The closes come from the observation's log-return window: the cumulative sum of
  the last W returns gives `log(close_{t-k} / close_{t-W})` for `k = 0..W`, so `slow <= W + 1` is
  required (checked). Only bars `<= t`: no look-ahead by construction. Continuous: `+1 / -1 / 0` per
  asset; position_hold: `[+-1 or 0, 0]` (decide every step).

**Portfolio** (`trading_jax.envs.portfolio`; "softmax" actions are the log of the target weights, with
`-inf` for a zero weight, "simplex" actions the weights themselves).

* ``"equal_weight"`` (`cash=0.0`): target `cash` in cash (only with `include_cash`) and `(1 - cash) / N`
  in each risky asset, every step (rebalancing back to equal weights).
* ``"buy_and_hold"`` (`cash=0.0`): the equal-weight target at the first decision (read from the
  observation's time-remaining entry, 1 at the first decision), then the current weights of the
  observation (at close t) as the target: the trade at `open_{t+1}` is zero when the open equals the
  previous close (the synthetic markets), otherwise only the overnight-gap drift is rebalanced.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from trading_jax.envs import orderbook as ob

Array = jax.Array
Policy = Callable[[Array, Any, Array, Any], Array]

__all__ = [
    "BASELINES",
    "make_baseline",
    "available",
    "almgren_chriss_kappa",
    "almgren_chriss_holdings",
    "EXECUTION_AC_ACTIONS",
]

# ------------------------------------------------------------------------------------------------
# Execution
# ------------------------------------------------------------------------------------------------

# execution.py action indices
WAIT, MARKET_10, MARKET_25, MARKET_50, PASSIVE_LIMIT, TWAP, VWAP = 0, 1, 2, 3, 5, 7, 8
# market-order actions the AC policy chooses from (ties go to the earlier one)
EXECUTION_AC_ACTIONS = (TWAP, VWAP, WAIT, MARKET_10, MARKET_25, MARKET_50)
_OBS_IMBALANCE, _OBS_REMAINING, _OBS_TIME_LEFT = 1, 4, 5


def _constant_execution(action: int) -> Callable[..., Policy]:
    def factory(env, env_params, **kw) -> Policy:
        _no_kwargs(kw)

        def policy(obs, state, key, env_params):
            return jnp.asarray(action, jnp.int32)

        return policy

    return factory


def almgren_chriss_kappa(lam, env_params, horizon: int) -> Array:
    """Kappa (per step) of the AC trajectory for risk aversion `lam` on the execution env's params.

    `2 (cosh kappa - 1) = lam sigma^2 / (eta_lin Q)`, `eta_lin = eta sigma / sqrt(V Q / H)` (module docstring).
    """
    sigma = jnp.asarray(env_params.sigma, jnp.float32)
    q0 = env_params.quantity / horizon
    eta_lin = env_params.eta * sigma / jnp.sqrt(env_params.volume * q0)
    kt2 = lam * sigma**2 / jnp.maximum(eta_lin * env_params.quantity, 1e-30)
    return jnp.arccosh(1.0 + 0.5 * kt2)


def almgren_chriss_holdings(kappa, n, horizon) -> Array:
    """AC holdings `x / X = sinh(kappa n) / sinh(kappa H)` with `n` steps left (`n / H` at kappa = 0),
    computed without overflow: `exp(-kappa (H - n)) * expm1(-2 kappa n) / expm1(-2 kappa H)`."""
    kappa = jnp.asarray(kappa, jnp.float32)
    n = jnp.asarray(n, jnp.float32)
    k = jnp.maximum(kappa, 1e-12)
    ratio = jnp.exp(-k * (horizon - n)) * jnp.expm1(-2.0 * k * n) / jnp.expm1(-2.0 * k * horizon)
    return jnp.where(kappa < 1e-6, n / horizon, ratio)


def _almgren_chriss(env, env_params, lam: float = 10.0, kappa: float | None = None, **kw) -> Policy:
    _no_kwargs(kw)
    h = int(env.horizon)
    if kappa is None:
        if lam < 0:
            raise ValueError(f"almgren_chriss: lam must be >= 0; got {lam!r}")
        kappa_value = almgren_chriss_kappa(lam, env_params, h)
    else:
        if kappa < 0:
            raise ValueError(f"almgren_chriss: kappa must be >= 0; got {kappa!r}")
        kappa_value = jnp.asarray(kappa, jnp.float32)
    candidates = jnp.asarray(EXECUTION_AC_ACTIONS, jnp.int32)

    def policy(obs, state, key, env_params):
        n = jnp.clip(jnp.round(obs[_OBS_TIME_LEFT] * h), 1, h)  # steps left, this one included
        t = (h - n).astype(jnp.int32)
        rem = jnp.maximum(obs[_OBS_REMAINING], 1e-9)  # R / Q
        target = jnp.maximum(rem - almgren_chriss_holdings(kappa_value, n - 1.0, h), 0.0) / rem  # of R
        w = ob.profile_weights(env_params, h)
        later = jnp.sum(jnp.where(jnp.arange(h) >= t, w, 0.0))
        vwap = w[t] / jnp.maximum(later, 1e-9)
        sizes = jnp.minimum(jnp.stack([1.0 / n, vwap, 0.0, 0.1, 0.25, 0.5]), 1.0)
        return candidates[jnp.argmin(jnp.abs(sizes - target))]

    return policy


# ------------------------------------------------------------------------------------------------
# Trading
# ------------------------------------------------------------------------------------------------


def _trading_action(env, direction: Array) -> Array:
    """The action holding `direction` (`[N]` in {-1, 0, +1}) in the env's action mode."""
    n = env.n_assets
    direction = jnp.reshape(direction, (n,))
    if env.action_mode == "discrete":
        a = (direction + 1).astype(jnp.int32)
        return a[0] if n == 1 else a
    if env.action_mode == "continuous":
        return direction.astype(jnp.float32)
    # position_hold: [size, hold_time]; hold 1 = the longest hold (re-sent when it ends)
    return jnp.stack([direction[0], jnp.ones((), jnp.float32)]).astype(jnp.float32)


def _constant_trading(direction: float) -> Callable[..., Policy]:
    def factory(env, env_params, **kw) -> Policy:
        _no_kwargs(kw)
        d = jnp.full((env.n_assets,), direction, jnp.float32)
        if env.action_mode == "position_hold" and direction == 0.0:
            action = jnp.zeros((2,), jnp.float32)
        else:
            action = _trading_action(env, d)

        def policy(obs, state, key, env_params):
            return action

        return policy

    return factory


def moving_average_signal(log_returns: Array, fast: int, slow: int) -> Array:
    """`+1` where the mean of the last `fast` closes exceeds that of the last `slow`, else `-1`.

    Args:
        log_returns: `[W, N]` close-to-close log returns of bars `t - W + 1 .. t` (oldest first).
        fast, slow: window lengths in closes, `1 <= fast < slow <= W + 1`.

    Returns:
        `[N]` float32 in {-1, +1} (`-1` on a tie, e.g. a flat market).
    """
    w, n = log_returns.shape
    # log(close_{t-W+k} / close_{t-W}), k = 0..W
    log_close = jnp.concatenate([jnp.zeros((1, n), log_returns.dtype), jnp.cumsum(log_returns, axis=0)])
    last = log_close[-1]
    rel = jnp.exp(log_close - last)  # close / close_t: O(1), no overflow
    ma_fast = jnp.mean(rel[w + 1 - fast :], axis=0)
    ma_slow = jnp.mean(rel[w + 1 - slow :], axis=0)
    return jnp.where(ma_fast > ma_slow, 1.0, -1.0).astype(jnp.float32)


def _ma_crossover(env, env_params, fast: int = 5, slow: int = 20, short: bool = True, **kw) -> Policy:
    _no_kwargs(kw)
    fast, slow = int(fast), int(slow)
    if not 1 <= fast < slow:
        raise ValueError(f"ma_crossover needs 1 <= fast < slow; got fast={fast}, slow={slow}")
    if slow > env.window + 1:
        raise ValueError(
            f"ma_crossover: slow={slow} closes need a log-return window of at least {slow - 1} bars; the "
            f"environment's window is {env.window} (build it with window >= {slow - 1})"
        )
    w, n = env.window, env.n_assets
    mode = env.action_mode

    def policy(obs, state, key, env_params):
        signal = moving_average_signal(obs[: w * n].reshape(w, n), fast, slow)
        direction = signal if short else jnp.maximum(signal, 0.0)
        if mode == "position_hold":  # decide every step: hold_time 0 -> a hold of one decision
            return jnp.stack([direction[0], jnp.zeros((), jnp.float32)])
        return _trading_action(env, direction)

    return policy


# ------------------------------------------------------------------------------------------------
# Portfolio
# ------------------------------------------------------------------------------------------------


def _portfolio_action(env, weights: Array) -> Array:
    """The action whose target weights are `weights` (`[K]`, cash first when the env has cash)."""
    weights = jnp.asarray(weights, jnp.float32)
    if env.action_mode == "softmax":
        return jnp.where(weights > 0, jnp.log(jnp.maximum(weights, 1e-30)), -jnp.inf)
    return weights


def _equal_weights(env, cash: float) -> Array:
    n = env.n_assets
    if not 0.0 <= cash < 1.0:
        raise ValueError(f"cash weight must be in [0, 1); got {cash!r}")
    if env.include_cash:
        return jnp.concatenate([jnp.full((1,), cash), jnp.full((n,), (1.0 - cash) / n)]).astype(jnp.float32)
    if cash != 0.0:
        raise ValueError("a cash weight needs a portfolio env with include_cash=True")
    return jnp.full((n,), 1.0 / n, jnp.float32)


def _equal_weight(env, env_params, cash: float = 0.0, **kw) -> Policy:
    _no_kwargs(kw)
    action = _portfolio_action(env, _equal_weights(env, cash))

    def policy(obs, state, key, env_params):
        return action

    return policy


def _portfolio_buy_and_hold(env, env_params, cash: float = 0.0, **kw) -> Policy:
    _no_kwargs(kw)
    start = _equal_weights(env, cash)
    w, n, k = env.window, env.n_assets, env.n_weights
    weights_at, time_left_at = w * n, w * n + k + 1

    def policy(obs, state, key, env_params):
        current = obs[weights_at : weights_at + k]
        first = obs[time_left_at] >= 1.0  # (episode_length - time) / episode_length == 1 at time 0
        return _portfolio_action(env, jnp.where(first, start, current))

    return policy


# ------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------


def _no_kwargs(kw: dict) -> None:
    if kw:
        raise TypeError(f"unexpected baseline keyword(s): {sorted(kw)}")


BASELINES: dict[str, dict[str, Callable[..., Policy]]] = {
    "execution": {
        "immediate": _constant_execution(MARKET_50),
        "twap": _constant_execution(TWAP),
        "vwap": _constant_execution(VWAP),
        "almgren_chriss": _almgren_chriss,
        "wait_then_force": _constant_execution(WAIT),
        "passive_only": _constant_execution(PASSIVE_LIMIT),
    },
    "trading": {
        "flat": _constant_trading(0.0),
        "buy_and_hold": _constant_trading(1.0),
        "ma_crossover": _ma_crossover,
    },
    "portfolio": {
        "equal_weight": _equal_weight,
        "buy_and_hold": _portfolio_buy_and_hold,
    },
}


def available(env_name: str | None = None):
    """Baseline names per environment (or for one environment)."""
    if env_name is None:
        return {k: tuple(v) for k, v in BASELINES.items()}
    _check_env_name(env_name)
    return tuple(BASELINES[env_name])


def _check_env_name(env_name: str) -> None:
    if env_name not in BASELINES:
        raise KeyError(f"unknown environment {env_name!r} for baselines; known: {list(BASELINES)}")


def make_baseline(env_name: str, name: str, env, env_params=None, **kw) -> Policy:
    """The baseline `name` for `env` as a policy `policy(obs, state, key, env_params) -> action`.

    Args:
        env_name: "execution", "trading" or "portfolio".
        name: a key of `BASELINES[env_name]` (module docstring for each definition).
        env: the environment (its static settings: horizon, window, action mode, ...).
        env_params: its params (the AC policy reads sigma, eta, volume, quantity to derive kappa).
        **kw: the baseline's settings (`lam` / `kappa` for "almgren_chriss"; `fast`, `slow`, `short` for
            "ma_crossover"; `cash` for the portfolio baselines).

    Raises:
        KeyError: an unknown environment or baseline name (listing the known ones).
        ValueError / TypeError: bad or unknown settings.
    """
    _check_env_name(env_name)
    table = BASELINES[env_name]
    if name not in table:
        raise KeyError(f"unknown {env_name} baseline {name!r}; known: {list(table)}")
    if env_params is None:
        env_params = env.default_params
    return table[name](env, env_params, **kw)

