"""Reward functions of the trading environments: pure functions and an `(init, update)` state pair.

Notation: `E_t` is the equity at decision bar t (before the step), `E_{t+1}` the equity after it,
`E_0` the initial equity, and the step return is `R_{t+1} = E_{t+1} / E_t - 1`.

Kinds (`REWARD_KINDS`), selected by name in `reward_update`:

* ``"pnl"``: `(E_{t+1} - E_t) / E_0` (equity change in units of initial equity; sums to the episode's
  total return).
* ``"log_return"``: `log(E_{t+1} / E_t)` (sums to the episode's log growth).
* ``"differential_sharpe"``: Moody & Saffell (1998) differential Sharpe ratio. Exponential moving
  averages of the first and second moments of `R` with rate `eta`:

      dA = R - A_{t-1},   dB = R^2 - B_{t-1}
      D_t = (B_{t-1} dA - 0.5 A_{t-1} dB) / (B_{t-1} - A_{t-1}^2)^{3/2}
      A_t = A_{t-1} + eta dA,   B_t = B_{t-1} + eta dB

  `D_t = 0` while the EMA variance `B_{t-1} - A_{t-1}^2 <= eps` (always true at the first step, since
  `A_0 = B_0 = 0`).
* ``"seed003"``: the seed document 003's risk-adjusted reward

      reward = R * sharpe - drawdown_penalty * drawdown,

  with `sharpe = mean(R_1..R_k) / std(R_1..R_k)` (ddof = 1, not annualised) the running Sharpe of the
  episode's step returns so far including this one (Welford's online mean/variance; 0 with fewer than 2
  returns or a standard deviation <= sqrt(eps)), `drawdown = (peak - E_{t+1}) / peak` with `peak` the
  highest equity of the episode so far including `E_{t+1}`, and `drawdown_penalty = 0.1` by default.

Guards: a non-positive `E_t` gives `R = 0`, and `log_return` uses `log(max(E_{t+1} / E_t, 1e-12))`, so
no reward is ever NaN or infinite (the environments end the episode on ruin well before equity reaches 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array

__all__ = [
    "REWARD_KINDS",
    "RewardState",
    "reward_init",
    "reward_update",
    "step_return",
    "pnl",
    "log_return",
    "differential_sharpe",
    "welford_update",
    "running_sharpe",
    "drawdown",
    "seed003",
]

REWARD_KINDS: tuple[str, ...] = ("pnl", "log_return", "differential_sharpe", "seed003")

_TINY_RATIO = 1e-12


@struct.dataclass
class RewardState:
    """Running statistics of one episode, all float32 scalars (or `[B]` when batched).

    Attributes:
        A, B: EMAs of the step return and its square (differential Sharpe).
        count, mean, m2: Welford count, mean and sum of squared deviations of the step returns (seed003).
        peak: highest equity of the episode so far (seed003 drawdown).
    """

    A: Array
    B: Array
    count: Array
    mean: Array
    m2: Array
    peak: Array


def reward_init(initial_equity) -> RewardState:
    """The state at the start of an episode: zero moments, `peak = initial_equity`."""
    peak = jnp.asarray(initial_equity, jnp.float32)
    zero = jnp.zeros_like(peak)
    return RewardState(A=zero, B=zero, count=zero, mean=zero, m2=zero, peak=peak)


def step_return(equity, next_equity) -> Array:
    """`R = E_{t+1} / E_t - 1`, 0 where `E_t <= 0`."""
    positive = equity > 0
    return jnp.where(positive, (next_equity - equity) / jnp.where(positive, equity, 1.0), 0.0)


def pnl(equity, next_equity, initial_equity) -> Array:
    """`(E_{t+1} - E_t) / E_0`."""
    return (next_equity - equity) / initial_equity


def log_return(equity, next_equity) -> Array:
    """`log(max(E_{t+1} / E_t, 1e-12))` (`E_t <= 0` counts as a ratio of 1e-12)."""
    positive = equity > 0
    ratio = jnp.where(positive, next_equity / jnp.where(positive, equity, 1.0), 0.0)
    return jnp.log(jnp.maximum(ratio, _TINY_RATIO))


def differential_sharpe(A, B, R, eta, eps=1e-8) -> tuple[Array, Array, Array]:
    """Moody & Saffell's differential Sharpe ratio and the updated moment EMAs.

        dA = R - A,  dB = R^2 - B,
        D = (B dA - 0.5 A dB) / (B - A^2)^{3/2}   (0 where B - A^2 <= eps),
        A' = A + eta dA,  B' = B + eta dB.

    Args:
        A, B: previous EMAs of `R` and `R^2`.
        R: this step's return.
        eta: EMA rate in (0, 1].
        eps: variance floor below which the ratio is 0.

    Returns:
        `(D, A', B')`.
    """
    dA = R - A
    dB = R * R - B
    var = B - A * A
    ok = var > eps
    safe_var = jnp.where(ok, var, 1.0)
    D = jnp.where(ok, (B * dA - 0.5 * A * dB) / (safe_var * jnp.sqrt(safe_var)), 0.0)
    return D, A + eta * dA, B + eta * dB


def welford_update(count, mean, m2, x) -> tuple[Array, Array, Array]:
    """One step of Welford's online mean/variance: `(count + 1, mean', m2')`."""
    count = count + 1.0
    delta = x - mean
    mean = mean + delta / count
    m2 = m2 + delta * (x - mean)
    return count, mean, m2


def running_sharpe(count, mean, m2, eps=1e-8) -> Array:
    """`mean / std` with `std = sqrt(m2 / (count - 1))` (ddof = 1); 0 if `count < 2` or `var <= eps`."""
    var = m2 / jnp.maximum(count - 1.0, 1.0)
    ok = (count >= 2.0) & (var > eps)
    return jnp.where(ok, mean / jnp.sqrt(jnp.where(ok, var, 1.0)), 0.0)


def drawdown(peak, equity) -> Array:
    """`(peak - equity) / peak`, 0 where `peak <= 0`."""
    positive = peak > 0
    return jnp.where(positive, (peak - equity) / jnp.where(positive, peak, 1.0), 0.0)


def seed003(R, sharpe, dd, drawdown_penalty=0.1) -> Array:
    """Seed 003's reward: `R * sharpe - drawdown_penalty * drawdown`."""
    return R * sharpe - drawdown_penalty * dd


def reward_update(
    kind: str,
    state: RewardState,
    equity,
    next_equity,
    initial_equity,
    *,
    eta=0.01,
    drawdown_penalty=0.1,
    eps=1e-8,
) -> tuple[Array, RewardState]:
    """The reward of one step and the updated running statistics.

    Only the statistics the chosen kind needs are updated (the others keep their initial values).

    Args:
        kind: one of `REWARD_KINDS` (static: a Python string).
        state: `RewardState` before the step.
        equity: `E_t`; next_equity: `E_{t+1}`; initial_equity: `E_0`.
        eta: differential-Sharpe EMA rate.
        drawdown_penalty: seed003 drawdown coefficient.
        eps: variance floor of the Sharpe ratios.

    Returns:
        `(reward, state')`.

    Raises:
        ValueError: for an unknown `kind`.
    """
    if kind == "pnl":
        return pnl(equity, next_equity, initial_equity), state
    if kind == "log_return":
        return log_return(equity, next_equity), state
    if kind == "differential_sharpe":
        D, A, B = differential_sharpe(state.A, state.B, step_return(equity, next_equity), eta, eps)
        return D, state.replace(A=A, B=B)
    if kind == "seed003":
        R = step_return(equity, next_equity)
        count, mean, m2 = welford_update(state.count, state.mean, state.m2, R)
        peak = jnp.maximum(state.peak, next_equity)
        reward = seed003(R, running_sharpe(count, mean, m2, eps), drawdown(peak, next_equity), drawdown_penalty)
        return reward, state.replace(count=count, mean=mean, m2=m2, peak=peak)
    raise ValueError(f"reward must be one of {list(REWARD_KINDS)}; got {kind!r}")
