"""Synthetic markets in pure JAX: close paths from five price models, turned into OHLCV bars.

Every generator is a pure function of an explicit PRNG key and a parameter pytree, so a batch of
markets (one per environment, per MAML task, per ensemble member) is one `jax.vmap` over keys and
parameters, and the same key gives the same market bit for bit.

Models (all rates annualised; `dt` is the bar length in years, e.g. `1/252` for daily equity bars,
`1/(252*6.5)` for hourly equity bars, `1/(365*24)` for hourly crypto bars):

* ``gbm`` (`GBMParams`): dX = (mu - sigma^2/2) dt + sigma dW, sampled exactly.
* ``regime_switching`` (`RegimeSwitchingParams`): GBM whose (mu, sigma) follow a Markov chain
  over K regimes, one transition per bar.
* ``heston`` (`HestonParams`): dX = (mu - v/2) dt + sqrt(v) dW_1,
  dv = kappa (theta - v) dt + xi sqrt(v) dW_2, d<W_1, W_2> = rho dt; full-truncation Euler.
* ``merton`` (`MertonParams`): GBM plus compound-Poisson jumps of size N(jump_mean, jump_std^2)
  in log price, drift-compensated so E[S_t] = S_0 exp(mu t); exact per bar.
* ``ou`` (`OUParams`): dX = kappa (log_mean - X) dt + sigma dW, sampled exactly (AR(1)).

Here X = log S. The model of a call is the class of its params, so one `generate` serves all.

Conventions, shared by all models (arrays are time-first, `[n_steps]` for one market):

* `log_returns[t] = log(close[t] / close[t-1])` with `close[-1] = s0`, so
  `close = s0 * exp(cumsum(log_returns))`.
* `regime[t]` is the regime in force during bar t (int32; zeros for single-regime models).
* `variance[t]` is the annualised instantaneous variance of the diffusive part in force during
  bar t: sigma^2 (GBM, Merton, OU), sigma[regime[t]]^2 (regime switching), max(v_t, 0) (Heston).
  Every model fills it, so the bar volatility `sqrt(variance * dt)` drives the intrabar range and
  the spread the same way for every model.
* `SyntheticMarket` has the same pytree structure, shapes and dtypes for every model, so an
  environment can pick a model at run time with `lax.switch` (see `generate_switch`).

Typical use::

    key = jax.random.key(0)
    market = generate(key, GBMParams(mu=0.05, sigma=0.2), n_steps=252, dt=1 / 252)
    # a batch of 64 markets with fresh parameters each (domain randomisation):
    k_params, k_paths = jax.random.split(key)
    params = jax.vmap(partial(sample_params, model="heston"))(jax.random.split(k_params, 64))
    batch = jax.vmap(partial(generate, n_steps=252, dt=1 / 252))(jax.random.split(k_paths, 64), params)
    batch.bars.close.shape  # (64, 252)

A `[time, asset]` panel (optionally with correlated diffusive shocks) comes from `panel`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from trading_jax.data.types import Bars

Array = jax.Array
PRNGKey = jax.Array

__all__ = [
    "MODELS",
    "DEFAULT_RANGES",
    "GBMParams",
    "RegimeSwitchingParams",
    "HestonParams",
    "MertonParams",
    "OUParams",
    "BarParams",
    "SyntheticMarket",
    "model_name",
    "gbm_log_returns",
    "regime_switching_log_returns",
    "heston_log_returns",
    "merton_log_returns",
    "ou_log_returns",
    "markov_chain",
    "stationary_distribution",
    "bars_from_log_returns",
    "generate",
    "generate_switch",
    "panel",
    "sample_params",
]

MODELS = ("gbm", "regime_switching", "heston", "merton", "ou")
"""Model names, in the order `generate_switch` indexes them."""


# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------


@struct.dataclass
class GBMParams:
    """Geometric Brownian motion, dS/S = mu dt + sigma dW.

    Attributes:
        mu: annualised drift of the price (E[S_t] = S_0 exp(mu t)).
        sigma: annualised volatility (> 0).
    """

    mu: Any = 0.05
    sigma: Any = 0.2


@struct.dataclass
class RegimeSwitchingParams:
    """GBM whose drift and volatility follow a discrete-time Markov chain over K regimes.

    Use `RegimeSwitchingParams.create(...)` to start the chain from its stationary distribution.

    Attributes:
        transition: `[K, K]` row-stochastic matrix, `transition[i, j] = P(s_{t+1} = j | s_t = i)`
            per bar (so the expected stay in regime i is `1 / (1 - transition[i, i])` bars).
        mu: `[K]` annualised drift in each regime.
        sigma: `[K]` annualised volatility in each regime.
        initial: `[K]` distribution of the regime of the first bar.
    """

    transition: Any
    mu: Any
    sigma: Any
    initial: Any

    @classmethod
    def create(cls, transition, mu, sigma, initial=None) -> "RegimeSwitchingParams":
        """Parameters with `initial` defaulting to the chain's stationary distribution."""
        transition = jnp.asarray(transition, dtype=_float_dtype())
        if initial is None:
            initial = stationary_distribution(transition)
        return cls(
            transition=transition,
            mu=jnp.asarray(mu, dtype=_float_dtype()),
            sigma=jnp.asarray(sigma, dtype=_float_dtype()),
            initial=jnp.asarray(initial, dtype=_float_dtype()),
        )


@struct.dataclass
class HestonParams:
    """Heston stochastic volatility (see `heston_log_returns` for the discretisation).

    Attributes:
        mu: annualised drift of the price.
        kappa: speed of mean reversion of the variance (per year).
        theta: long-run annualised variance (volatility^2).
        xi: volatility of variance.
        rho: correlation of price and variance shocks, in [-1, 1].
        v0: initial annualised variance.
    """

    mu: Any = 0.05
    kappa: Any = 2.0
    theta: Any = 0.04
    xi: Any = 0.3
    rho: Any = -0.7
    v0: Any = 0.04


@struct.dataclass
class MertonParams:
    """Merton jump diffusion: GBM plus compound-Poisson jumps in log price.

    Attributes:
        mu: annualised drift of the price (jumps are compensated so E[S_t] = S_0 exp(mu t)).
        sigma: annualised volatility of the diffusive part.
        jump_intensity: expected number of jumps per year (lambda).
        jump_mean: mean of one jump in log price (m).
        jump_std: standard deviation of one jump in log price (s).
    """

    mu: Any = 0.05
    sigma: Any = 0.2
    jump_intensity: Any = 5.0
    jump_mean: Any = -0.02
    jump_std: Any = 0.05


@struct.dataclass
class OUParams:
    """Ornstein-Uhlenbeck mean reversion of the log price.

    Attributes:
        kappa: speed of mean reversion (per year; half-life ln 2 / kappa years).
        log_mean: long-run mean of log price (absolute, e.g. log(100)).
        sigma: annualised volatility of the log price shocks.
    """

    kappa: Any = 5.0
    log_mean: Any = math.log(100.0)
    sigma: Any = 0.2


@struct.dataclass
class BarParams:
    """How a close path becomes OHLCV bars, a spread and volume (see `bars_from_log_returns`).

    Attributes:
        gap_vol: standard deviation of the overnight gap `log(open[t] / close[t-1])`, as a multiple
            of the bar volatility; 0 gives `open[t] == close[t-1]`.
        volume_scale: baseline (median) volume per bar.
        volume_beta: increase of log volume per unit of standardised absolute return.
        volume_trend: total change of log volume from the first to the last bar.
        volume_noise: standard deviation of the i.i.d. log-volume noise.
        spread_floor: minimum relative spread (fraction of price, > 0).
        spread_vol_mult: relative spread per unit of bar volatility.
    """

    gap_vol: Any = 0.0
    volume_scale: Any = 1.0e6
    volume_beta: Any = 0.5
    volume_trend: Any = 0.0
    volume_noise: Any = 0.3
    spread_floor: Any = 1.0e-4
    spread_vol_mult: Any = 0.05


_PARAMS_CLASS = {
    "gbm": GBMParams,
    "regime_switching": RegimeSwitchingParams,
    "heston": HestonParams,
    "merton": MertonParams,
    "ou": OUParams,
}
_MODEL_OF_CLASS = {cls: name for name, cls in _PARAMS_CLASS.items()}


class SyntheticMarket(NamedTuple):
    """One synthetic market (or a batch of them, with leading batch axes).

    All fields are time-first: `[n_steps]` for one market, `[n_steps, n_assets]` for a panel.

    Attributes:
        bars: OHLCV `Bars`.
        spread: relative bid-ask spread (fraction of price, > 0); absolute spread is
            `spread * close`.
        log_returns: close-to-close log returns, `log(close[t] / close[t-1])`, `close[-1] = s0`.
        regime: int32 regime in force during each bar (zeros for single-regime models).
        variance: annualised instantaneous diffusive variance in force during each bar.
    """

    bars: Bars
    spread: Array
    log_returns: Array
    regime: Array
    variance: Array


def model_name(params) -> str:
    """The model name (one of `MODELS`) that a parameter pytree belongs to.

    Raises:
        TypeError: if `params` is not one of the model parameter classes.
    """
    try:
        return _MODEL_OF_CLASS[type(params)]
    except KeyError:
        raise TypeError(
            f"expected one of {[c.__name__ for c in _PARAMS_CLASS.values()]}, got {type(params).__name__}"
        ) from None


def _float_dtype():
    """float32, or float64 when `jax_enable_x64` is on."""
    return jnp.result_type(float)


def _f(x) -> Array:
    return jnp.asarray(x, dtype=_float_dtype())


def _shocks(key: PRNGKey, n_steps: int, shocks) -> Array:
    """Standard normal price shocks `[n_steps]`: the given ones, or fresh draws from `key`."""
    if shocks is None:
        return jax.random.normal(key, (n_steps,), dtype=_float_dtype())
    shocks = _f(shocks)
    if shocks.shape != (n_steps,):
        raise ValueError(f"shocks must have shape ({n_steps},), got {shocks.shape}")
    return shocks


# --------------------------------------------------------------------------------------------------
# Close paths (per-bar log returns)
# --------------------------------------------------------------------------------------------------


def gbm_log_returns(key: PRNGKey, params: GBMParams, n_steps: int, dt, shocks=None) -> Array:
    """Log returns of geometric Brownian motion, sampled exactly.

        r_t = (mu - sigma^2 / 2) dt + sigma sqrt(dt) Z_t,   Z_t ~ N(0, 1) i.i.d.

    so E[r_t] = (mu - sigma^2/2) dt, Var[r_t] = sigma^2 dt and E[S_T] = S_0 exp(mu T).

    Args:
        key: PRNG key (unused when `shocks` is given).
        params: `GBMParams` of scalars.
        n_steps: number of bars (static).
        dt: bar length in years.
        shocks: optional standard normal shocks `[n_steps]` (e.g. correlated across assets).

    Returns:
        Log returns `[n_steps]`.
    """
    z = _shocks(key, n_steps, shocks)
    mu, sigma, dt = _f(params.mu), _f(params.sigma), _f(dt)
    return (mu - 0.5 * sigma**2) * dt + sigma * jnp.sqrt(dt) * z


def stationary_distribution(transition) -> Array:
    """Stationary distribution pi of an irreducible row-stochastic matrix P (pi P = pi, sum pi = 1).

    Solves the linear system pi (I - P + 1 1^T) = 1^T, which has the unique solution pi for an
    irreducible chain (pi (I - P) = 0 and pi 1 1^T = 1^T).

    Args:
        transition: `[K, K]` row-stochastic matrix.

    Returns:
        `[K]` stationary probabilities.
    """
    p = _f(transition)
    k = p.shape[-1]
    a = jnp.eye(k, dtype=p.dtype) - p + jnp.ones((k, k), dtype=p.dtype)
    return jnp.linalg.solve(a.T, jnp.ones((k,), dtype=p.dtype))


def _sample_by_inversion(u: Array, probs: Array) -> Array:
    """The category whose cumulative-probability interval holds the uniform `u` (int32)."""
    cum = jnp.cumsum(probs, axis=-1)
    cum = cum / cum[..., -1:]
    return jnp.sum(u >= cum[..., :-1], axis=-1).astype(jnp.int32)


def markov_chain(key: PRNGKey, transition, initial, n_steps: int) -> Array:
    """A path of a discrete-time Markov chain.

        s_0 ~ initial,   P(s_{t+1} = j | s_t = i) = transition[i, j].

    Args:
        key: PRNG key.
        transition: `[K, K]` row-stochastic matrix.
        initial: `[K]` distribution of s_0.
        n_steps: path length (static).

    Returns:
        int32 states `[n_steps]`.
    """
    transition, initial = _f(transition), _f(initial)
    u = jax.random.uniform(key, (n_steps,), dtype=_float_dtype())
    s0 = _sample_by_inversion(u[0], initial)

    def step(s, u_t):
        s_next = _sample_by_inversion(u_t, transition[s])
        return s_next, s_next

    _, rest = jax.lax.scan(step, s0, u[1:])
    return jnp.concatenate([s0[None], rest])


def regime_switching_log_returns(
    key: PRNGKey, params: RegimeSwitchingParams, n_steps: int, dt, shocks=None
) -> tuple[Array, Array]:
    """Log returns of a regime-switching GBM.

        s_t ~ Markov(transition, initial),
        r_t = (mu[s_t] - sigma[s_t]^2 / 2) dt + sigma[s_t] sqrt(dt) Z_t.

    Given the regime path, returns are independent normals, so within regime k
    E[r] = (mu_k - sigma_k^2/2) dt and Var[r] = sigma_k^2 dt; the long-run share of bars in
    regime k is the stationary probability pi_k (`stationary_distribution`).

    Args:
        key: PRNG key.
        params: `RegimeSwitchingParams` (`transition [K, K]`, `mu [K]`, `sigma [K]`, `initial [K]`).
        n_steps: number of bars (static).
        dt: bar length in years.
        shocks: optional standard normal shocks `[n_steps]`.

    Returns:
        `(log_returns [n_steps], regime [n_steps] int32)`.
    """
    k_chain, k_z = jax.random.split(key)
    regime = markov_chain(k_chain, params.transition, params.initial, n_steps)
    z = _shocks(k_z, n_steps, shocks)
    mu, sigma, dt = _f(params.mu)[regime], _f(params.sigma)[regime], _f(dt)
    return (mu - 0.5 * sigma**2) * dt + sigma * jnp.sqrt(dt) * z, regime


def heston_log_returns(
    key: PRNGKey, params: HestonParams, n_steps: int, dt, shocks=None
) -> tuple[Array, Array]:
    """Log returns and variance of the Heston model, by full-truncation Euler.

    Full truncation (Lord, Koekkoek & van Dijk, 2010) keeps an unconstrained variance v_t and
    uses v_t^+ = max(v_t, 0) wherever the variance enters the drift or a square root:

        r_t     = (mu - v_t^+ / 2) dt + sqrt(v_t^+ dt) Z^S_t,
        v_{t+1} = v_t + kappa (theta - v_t^+) dt + xi sqrt(v_t^+ dt) Z^v_t,
        Z^v_t   = rho Z^S_t + sqrt(1 - rho^2) Z^perp_t,

    with v_0 = `v0`. The scheme converges strongly, never takes the square root of a negative
    number and has the smallest bias among the simple Euler fixes. When truncation is inactive
    (Feller condition 2 kappa theta >= xi^2 and small dt) E[v_t] follows
    theta + (v_0 - theta)(1 - kappa dt)^(t/dt) ~ theta + (v_0 - theta) exp(-kappa t). Since
    E[exp(r_t) | v_t] = exp(mu dt), E[S_T] = S_0 exp(mu T) holds exactly for the scheme.

    Args:
        key: PRNG key.
        params: `HestonParams` of scalars.
        n_steps: number of bars (static).
        dt: bar length in years.
        shocks: optional standard normal price shocks Z^S `[n_steps]`.

    Returns:
        `(log_returns [n_steps], variance [n_steps])` where `variance[t] = v_t^+ >= 0` is the
        annualised variance in force during bar t.
    """
    normals = jax.random.normal(key, (2, n_steps), dtype=_float_dtype())
    z_s = normals[0] if shocks is None else _shocks(key, n_steps, shocks)
    z_perp = normals[1]
    mu, kappa, theta = _f(params.mu), _f(params.kappa), _f(params.theta)
    xi, rho, dt = _f(params.xi), _f(params.rho), _f(dt)
    rho_perp = jnp.sqrt(jnp.maximum(1.0 - rho**2, 0.0))

    def step(v, z):
        zs, zp = z
        v_pos = jnp.maximum(v, 0.0)
        root = jnp.sqrt(v_pos * dt)
        r = (mu - 0.5 * v_pos) * dt + root * zs
        v_next = v + kappa * (theta - v_pos) * dt + xi * root * (rho * zs + rho_perp * zp)
        return v_next, (r, v_pos)

    _, (r, variance) = jax.lax.scan(step, _f(params.v0), (z_s, z_perp))
    return r, variance


def merton_log_returns(key: PRNGKey, params: MertonParams, n_steps: int, dt, shocks=None) -> Array:
    """Log returns of Merton's jump diffusion (exact per bar).

        r_t = (mu - sigma^2/2 - lambda k) dt + sigma sqrt(dt) Z_t + sum_{i=1}^{N_t} Y_i,
        N_t ~ Poisson(lambda dt),  Y_i ~ N(m, s^2),  k = E[e^Y - 1] = exp(m + s^2/2) - 1.

    The compensator lambda k makes E[S_T] = S_0 exp(mu T). Per bar:
    E[r] = (mu - sigma^2/2 - lambda k) dt + lambda dt m,
    Var[r] = sigma^2 dt + lambda dt (m^2 + s^2),
    fourth cumulant lambda dt (m^4 + 6 m^2 s^2 + 3 s^4) (excess kurtosis > 0).
    Given N_t = n the jump sum is N(n m, n s^2), which is how it is sampled.

    Args:
        key: PRNG key.
        params: `MertonParams` of scalars.
        n_steps: number of bars (static).
        dt: bar length in years.
        shocks: optional standard normal diffusive shocks `[n_steps]`.

    Returns:
        Log returns `[n_steps]`.
    """
    k_normal, k_n = jax.random.split(key)
    normals = jax.random.normal(k_normal, (2, n_steps), dtype=_float_dtype())
    z = normals[0] if shocks is None else _shocks(key, n_steps, shocks)
    mu, sigma, lam = _f(params.mu), _f(params.sigma), _f(params.jump_intensity)
    m, s, dt = _f(params.jump_mean), _f(params.jump_std), _f(dt)
    n_jumps = jax.random.poisson(k_n, lam * dt, (n_steps,)).astype(_float_dtype())
    jumps = m * n_jumps + s * jnp.sqrt(n_jumps) * normals[1]
    compensator = lam * jnp.expm1(m + 0.5 * s**2)
    return (mu - 0.5 * sigma**2 - compensator) * dt + sigma * jnp.sqrt(dt) * z + jumps


def _ou_innovation_std(kappa: Array, sigma: Array, dt: Array) -> Array:
    """sigma sqrt((1 - exp(-2 kappa dt)) / (2 kappa)), tending to sigma sqrt(dt) as kappa -> 0."""
    small = kappa * dt < 1e-6
    safe_kappa = jnp.where(small, 1.0, kappa)
    factor = jnp.where(small, dt, -jnp.expm1(-2.0 * safe_kappa * dt) / (2.0 * safe_kappa))
    return sigma * jnp.sqrt(factor)


def ou_log_returns(key: PRNGKey, params: OUParams, n_steps: int, dt, s0=100.0, shocks=None) -> Array:
    """Log returns of an Ornstein-Uhlenbeck log price, sampled exactly (the AR(1) it induces).

    With X = log S, Y = X - log_mean and Y_0 = log(s0) - log_mean:

        Y_{t+1} = e^{-kappa dt} Y_t + sigma sqrt((1 - e^{-2 kappa dt}) / (2 kappa)) Z_t,
        r_t = Y_{t+1} - Y_t,

    so E[X_t] = log_mean + (X_0 - log_mean) e^{-kappa t},
    Var[X_t] = sigma^2 (1 - e^{-2 kappa t}) / (2 kappa) -> sigma^2 / (2 kappa), and the lag-1
    autocorrelation of the stationary log price is exactly e^{-kappa dt} (not 1 - kappa dt).

    Args:
        key: PRNG key.
        params: `OUParams` of scalars.
        n_steps: number of bars (static).
        dt: bar length in years.
        s0: initial price.
        shocks: optional standard normal shocks `[n_steps]`.

    Returns:
        Log returns `[n_steps]`.
    """
    z = _shocks(key, n_steps, shocks)
    kappa, sigma, dt = _f(params.kappa), _f(params.sigma), _f(dt)
    decay = jnp.exp(-kappa * dt)
    innovation = _ou_innovation_std(kappa, sigma, dt) * z

    def step(y, eps):
        y_next = decay * y + eps
        return y_next, y_next - y

    y0 = jnp.log(_f(s0)) - _f(params.log_mean)
    _, r = jax.lax.scan(step, y0, innovation)
    return r


# --------------------------------------------------------------------------------------------------
# OHLCV from a close path
# --------------------------------------------------------------------------------------------------


@jax.jit
def bars_from_log_returns(
    key: PRNGKey, log_returns, s0, bar_vol, params: BarParams | None = None
) -> tuple[Bars, Array]:
    """OHLCV bars, with a relative spread, around a path of close-to-close log returns.

    With c_{-1} = s0 and sigma_t = `bar_vol[t]` (the standard deviation of the bar's diffusive
    log-price move, `sqrt(variance * dt)`):

    * close:  c_t = s0 exp(r_0 + ... + r_t), so `log_returns` are reproduced exactly.
    * open:   o_t = c_{t-1} exp(g_t), g_t ~ N(0, (gap_vol sigma_t)^2); `gap_vol = 0` gives
      o_t = c_{t-1} exactly.
    * high, low: the log price inside the bar is taken as a Brownian bridge from a = log o_t to
      b = log c_t with variance sigma_t^2 over the bar. Its maximum M satisfies
      P(M >= x) = exp(-2 (x - a)(x - b) / sigma_t^2) for x >= max(a, b), which inverts to
      M = (a + b + sqrt((b - a)^2 + 2 sigma_t^2 E)) / 2 with E ~ Exp(1); the minimum is the mirror
      image with an independent E'. (Each marginal is exact; their dependence is ignored.)
      high = max(e^M, o, c) and low = min(e^m, o, c) so the invariants survive rounding.
    * volume: log V_t = log(volume_scale) + volume_beta (|r_t| / sigma_bar - sqrt(2/pi))
      + volume_trend t / (n - 1) + volume_noise eps_t, with sigma_bar = sqrt(mean(sigma_t^2)) the
      path's typical bar volatility (so high-volatility regimes and jumps trade more) and
      eps_t ~ N(0, 1); sqrt(2/pi) = E|Z| centres the activity term.
    * spread (relative, fraction of price): spread_t = spread_floor + spread_vol_mult sigma_t.

    Args:
        key: PRNG key.
        log_returns: `[n_steps]` close-to-close log returns.
        s0: price before the first bar (> 0), scalar.
        bar_vol: per-bar volatility of the log price (not annualised), scalar or `[n_steps]`.
        params: `BarParams`; defaults to `BarParams()`.

    Returns:
        `(bars, spread)`: `Bars` with fields `[n_steps]` and the relative spread `[n_steps]`.
    """
    params = BarParams() if params is None else params
    r = _f(log_returns)
    n_steps = r.shape[0]
    sigma = jnp.broadcast_to(_f(bar_vol), r.shape)
    # one draw of 6 normal rows (one PRNG call compiles faster than several); the two Exp(1)
    # variables are (Z_a^2 + Z_b^2) / 2, which is exactly Exp(1) (a chi-square with 2 dof, halved).
    eps = jax.random.normal(key, (6, n_steps), dtype=r.dtype)
    eps_gap, eps_volume = eps[0], eps[1]
    e_hi, e_lo = 0.5 * (eps[2] ** 2 + eps[3] ** 2), 0.5 * (eps[4] ** 2 + eps[5] ** 2)

    log_close = jnp.log(_f(s0)) + jnp.cumsum(r)
    close = jnp.exp(log_close)
    prev_close = jnp.concatenate([jnp.reshape(_f(s0), (1,)), close[:-1]])
    gap = _f(params.gap_vol) * sigma * eps_gap
    open_ = prev_close * jnp.exp(gap)

    a, b = jnp.log(open_), log_close
    mid, diff2, var = 0.5 * (a + b), (b - a) ** 2, sigma**2
    high_bridge = jnp.exp(mid + 0.5 * jnp.sqrt(diff2 + 2.0 * var * e_hi))
    low_bridge = jnp.exp(mid - 0.5 * jnp.sqrt(diff2 + 2.0 * var * e_lo))
    high = jnp.maximum(high_bridge, jnp.maximum(open_, close))
    low = jnp.minimum(low_bridge, jnp.minimum(open_, close))

    typical = jnp.sqrt(jnp.mean(var))
    activity = jnp.where(typical > 0, jnp.abs(r) / jnp.where(typical > 0, typical, 1.0), 0.0)
    trend = jnp.arange(n_steps, dtype=r.dtype) / max(n_steps - 1, 1)
    log_volume = (
        jnp.log(_f(params.volume_scale))
        + _f(params.volume_beta) * (activity - math.sqrt(2.0 / math.pi))
        + _f(params.volume_trend) * trend
        + _f(params.volume_noise) * eps_volume
    )
    volume = jnp.exp(log_volume)
    spread = _f(params.spread_floor) + _f(params.spread_vol_mult) * sigma
    return Bars(open=open_, high=high, low=low, close=close, volume=volume), spread


# --------------------------------------------------------------------------------------------------
# Markets
# --------------------------------------------------------------------------------------------------


def _path(key: PRNGKey, params, n_steps: int, dt, s0, shocks) -> tuple[Array, Array, Array]:
    """(log_returns, regime, variance) of any model, each `[n_steps]`."""
    model = model_name(params)
    zeros_int = jnp.zeros((n_steps,), dtype=jnp.int32)
    ones = jnp.ones((n_steps,), dtype=_float_dtype())
    if model == "gbm":
        r = gbm_log_returns(key, params, n_steps, dt, shocks)
        return r, zeros_int, _f(params.sigma) ** 2 * ones
    if model == "regime_switching":
        r, regime = regime_switching_log_returns(key, params, n_steps, dt, shocks)
        return r, regime, _f(params.sigma)[regime] ** 2
    if model == "heston":
        r, variance = heston_log_returns(key, params, n_steps, dt, shocks)
        return r, zeros_int, variance
    if model == "merton":
        r = merton_log_returns(key, params, n_steps, dt, shocks)
        return r, zeros_int, _f(params.sigma) ** 2 * ones
    r = ou_log_returns(key, params, n_steps, dt, s0, shocks)
    return r, zeros_int, _f(params.sigma) ** 2 * ones


@partial(jax.jit, static_argnames=("n_steps", "model"))
def generate(
    key: PRNGKey,
    params,
    n_steps: int,
    dt,
    s0=100.0,
    *,
    model: str | None = None,
    bar_params: BarParams | None = None,
    shocks=None,
) -> SyntheticMarket:
    """One synthetic market of `n_steps` bars; vmap it over keys and params for a batch.

    The model is given by the class of `params` (`GBMParams` -> "gbm", ...). Steps: the close
    path of the model (`*_log_returns`), then `bars_from_log_returns` with bar volatility
    `sqrt(variance * dt)`. A batch of markets, one per row of a batched params pytree::

        jax.vmap(partial(generate, n_steps=252, dt=1 / 252))(keys, batched_params)

    Args:
        key: PRNG key.
        params: one of `GBMParams`, `RegimeSwitchingParams`, `HestonParams`, `MertonParams`,
            `OUParams` (unbatched: scalars, or `[K]`/`[K, K]` arrays for regimes).
        n_steps: number of bars (static).
        dt: bar length in years (1/252 daily, 1/(365*24) hourly crypto).
        s0: price before the first bar (also the OU starting point).
        model: optional model name, checked against the class of `params` (static).
        bar_params: `BarParams` for the OHLCV, volume and spread construction.
        shocks: optional standard normal price shocks `[n_steps]` (see `panel`).

    Returns:
        `SyntheticMarket` with fields `[n_steps]`.

    Raises:
        TypeError: if `params` is not a model parameter class.
        ValueError: if `model` is not in `MODELS` or disagrees with `params`.
    """
    inferred = model_name(params)
    if model is not None and model != inferred:
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")
        raise ValueError(f"model {model!r} given with {type(params).__name__} (a {inferred!r} model)")
    k_path, k_bars = jax.random.split(key)
    r, regime, variance = _path(k_path, params, n_steps, dt, s0, shocks)
    bar_vol = jnp.sqrt(variance * _f(dt))
    bars, spread = bars_from_log_returns(k_bars, r, s0, bar_vol, bar_params)
    return SyntheticMarket(bars=bars, spread=spread, log_returns=r, regime=regime, variance=variance)


def generate_switch(
    key: PRNGKey,
    model_index,
    params_by_model: tuple,
    n_steps: int,
    dt,
    s0=100.0,
    *,
    bar_params: BarParams | None = None,
) -> SyntheticMarket:
    """A market from the model picked at run time by `model_index` (a traced int), via `lax.switch`.

    Every branch returns the same `SyntheticMarket` structure, so an environment can draw the
    model per episode. Only the chosen branch's result is returned (all branches are compiled).

    Args:
        key: PRNG key.
        model_index: int in `[0, len(MODELS))`, indexing `MODELS` (clamped by `lax.switch`).
        params_by_model: one parameter pytree per model, in `MODELS` order
            (gbm, regime_switching, heston, merton, ou).
        n_steps: number of bars (static).
        dt: bar length in years.
        s0: price before the first bar.
        bar_params: `BarParams` for the bar construction.

    Returns:
        `SyntheticMarket` with fields `[n_steps]`; equal to `generate(key, params_by_model[i], ...)`.
    """
    if len(params_by_model) != len(MODELS):
        raise ValueError(f"params_by_model needs one entry per model in {MODELS}")
    for name, p in zip(MODELS, params_by_model):
        if model_name(p) != name:
            raise TypeError(f"params_by_model must follow {MODELS}; got {type(p).__name__} for {name!r}")

    def branch(i):
        return lambda ops: generate(ops[0], ops[1][i], n_steps, dt, ops[2], bar_params=ops[3])

    branches = [branch(i) for i in range(len(MODELS))]
    return jax.lax.switch(model_index, branches, (key, tuple(params_by_model), s0, bar_params))


@partial(jax.jit, static_argnames=("n_steps", "n_assets", "model"))
def panel(
    key: PRNGKey,
    params,
    n_steps: int,
    dt,
    s0=100.0,
    *,
    n_assets: int | None = None,
    correlation=None,
    model: str | None = None,
    bar_params: BarParams | None = None,
) -> SyntheticMarket:
    """A `[time, asset]` panel of synthetic markets of one model, optionally with correlated shocks.

    The price shocks of all assets are drawn together as Z = E L^T, with E `[n_steps, n_assets]`
    i.i.d. N(0, 1) and L the Cholesky factor of `correlation` (identity when None), so
    Corr(Z_t^i, Z_t^j) = correlation[i, j]. For GBM this is the correlation of the log returns;
    for the other models it is the correlation of the diffusive price shocks (jumps, regime
    chains and Heston variance shocks beyond rho stay independent across assets). Everything else
    is `generate` vmapped over assets, then moved to time-first.

    Args:
        key: PRNG key.
        params: model parameters, either shared by all assets (pass `n_assets`) or with a leading
            asset axis on every leaf (leave `n_assets` None).
        n_steps: number of bars (static).
        dt: bar length in years.
        s0: initial price, scalar or `[n_assets]`.
        n_assets: number of assets when `params` are shared (static).
        correlation: optional `[n_assets, n_assets]` positive definite correlation matrix.
        model: optional model name, checked against `params` (static).
        bar_params: `BarParams`, shared by all assets.

    Returns:
        `SyntheticMarket` whose fields (and `bars` fields) are `[n_steps, n_assets]`.
    """
    if n_assets is None:
        n_assets = jax.tree.leaves(params)[0].shape[0]
    else:
        params = jax.tree.map(lambda x: jnp.broadcast_to(x, (n_assets,) + jnp.shape(x)), params)
    k_shocks, k_assets = jax.random.split(key)
    shocks = jax.random.normal(k_shocks, (n_steps, n_assets), dtype=_float_dtype())
    if correlation is not None:
        shocks = shocks @ jnp.linalg.cholesky(_f(correlation)).T
    s0 = jnp.broadcast_to(_f(s0), (n_assets,))
    one = partial(generate, n_steps=n_steps, dt=dt, model=model, bar_params=bar_params)
    per_asset = jax.vmap(lambda k, p, s, z: one(k, p, s0=s, shocks=z))(
        jax.random.split(k_assets, n_assets), params, s0, shocks.T
    )
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), per_asset)


# --------------------------------------------------------------------------------------------------
# Domain randomisation
# --------------------------------------------------------------------------------------------------

DEFAULT_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "gbm": {"mu": (-0.3, 0.3), "sigma": (0.1, 0.6)},
    "regime_switching": {"mu": (-0.6, 0.6), "sigma": (0.1, 0.8), "duration": (20.0, 250.0)},
    "heston": {
        "mu": (-0.2, 0.3),
        "kappa": (0.5, 5.0),
        "theta": (0.01, 0.16),
        "xi": (0.1, 0.8),
        "rho": (-0.9, 0.0),
        "v0": (0.01, 0.16),
    },
    "merton": {
        "mu": (-0.2, 0.3),
        "sigma": (0.1, 0.4),
        "jump_intensity": (0.5, 10.0),
        "jump_mean": (-0.1, 0.05),
        "jump_std": (0.01, 0.1),
    },
    "ou": {"kappa": (0.5, 10.0), "log_mean": (math.log(80.0), math.log(125.0)), "sigma": (0.1, 0.5)},
}
"""Default uniform ranges `(low, high)` of `sample_params`, per model and field (annualised).

Regime switching draws `mu` and `sigma` per regime, and a mean stay `duration` (in bars) per
regime: `transition[k, k] = 1 - 1 / duration_k`, the rest of the row spread over the other
regimes with Dirichlet(1) weights, and the chain starts from its stationary distribution.
The OU `log_mean` range is around `log(100)`, the default `s0`; pass your own for other prices.
"""


@partial(jax.jit, static_argnames=("model", "n_regimes"))
def sample_params(
    key: PRNGKey, model: str, ranges: Mapping[str, tuple[float, float]] | None = None, *, n_regimes: int = 2
):
    """Random parameters of `model`, each field uniform on its range (domain randomisation).

    Vmap over keys for a batch: `jax.vmap(partial(sample_params, model="gbm"))(keys)`.

    Args:
        key: PRNG key.
        model: one of `MODELS` (static).
        ranges: optional `{field: (low, high)}` overriding entries of `DEFAULT_RANGES[model]`
            (for regime switching the fields are `mu`, `sigma` and `duration`, in bars, > 1).
        n_regimes: number of regimes K >= 2 for "regime_switching" (static).

    Returns:
        A parameter pytree of `model` (scalars; `[K]`/`[K, K]` arrays for regime switching).

    Raises:
        ValueError: on an unknown model, an unknown field in `ranges`, or `n_regimes < 2`.
    """
    if model not in DEFAULT_RANGES:
        raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")
    bounds = dict(DEFAULT_RANGES[model])
    unknown = set(ranges or {}) - set(bounds)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)} for {model!r}; expected {sorted(bounds)}")
    bounds.update(ranges or {})
    names = sorted(bounds)
    width = n_regimes if model == "regime_switching" else 1
    k_uniform, k_off = jax.random.split(key)
    draws = jax.random.uniform(k_uniform, (len(names), width), dtype=_float_dtype())

    def uniform(name):
        low, high = bounds[name]
        u = draws[names.index(name)]
        return _f(low) + (_f(high) - _f(low)) * (u if model == "regime_switching" else u[0])

    if model == "regime_switching":
        if n_regimes < 2:
            raise ValueError(f"n_regimes must be >= 2, got {n_regimes}")
        stay = 1.0 - 1.0 / uniform("duration")
        weights = jax.random.exponential(k_off, (n_regimes, n_regimes), dtype=_float_dtype())
        weights = weights * (1.0 - jnp.eye(n_regimes, dtype=weights.dtype))
        off = weights / jnp.sum(weights, axis=1, keepdims=True)
        transition = jnp.diag(stay) + (1.0 - stay)[:, None] * off
        return RegimeSwitchingParams.create(
            transition, uniform("mu"), uniform("sigma")
        )
    return _PARAMS_CLASS[model](**{name: uniform(name) for name in names})
