"""A cheap on-device limit-order-book model for the execution environment (`trading_jax.envs.execution`).

The book is a handful of scalars plus `L` depth levels per side; one transition is a few hundred flops.
All randomness of a transition comes from one `BookNoise`, drawn by `draw_noise(key, n_levels)`, so a
reference implementation fed the same noise must reproduce the transition exactly
(`trading_jax.envs.reference.execution`).

**State** at decision step t (`BookState`): log mid relative to the arrival price `x_t = log(mid_t / arrival)`
(relative, so float32 resolves fractions of a basis point), imbalance latent `z_t`, log relative spread
`ls_t`, depth `bid_t[l]`, `ask_t[l]` (l = 1..L, shares), the market volume `v_t` traded during the last
interval, and EWMAs of observed log returns (`mom_t`), squared returns (`var_t`) and volume (`vema_t`).

**Transition** t -> t+1 with noise `e` (all `e.*` standard normal):

    I_t         = tanh(z_t)                                             imbalance in (-1, 1)
    r_{t+1}     = alpha * I_t * sigma + sigma * e.mid                   exogenous mid log-return (synthetic);
                  (replay: the data's close-to-close log return of the bar, see the env)
    x_{t+1}     = x_t + r_{t+1}                                         (+ our permanent impact, in the env)
    z_{t+1}     = phi * z_t + sqrt(1 - phi^2) * e.imbalance             AR(1), stationary N(0, 1)
    ls_{t+1}    = log s_bar + rho * (ls_t - log s_bar) + sd_s * e.spread   mean-reverting log spread
    m           = exp(sd_d * e.depth_best - sd_d^2 / 2)                 common level-1 depth shock, E[m] = 1
    bid_{t+1}[1] = Dbar_1 * m * (1 + I_{t+1}),  ask_{t+1}[1] = Dbar_1 * m * (1 - I_{t+1})
                  so (bid[1] - ask[1]) / (bid[1] + ask[1]) = I_{t+1} exactly
    bid_{t+1}[l] = Dbar_l * exp(sd_d * e.bid[l] - sd_d^2 / 2)   (l >= 2; ask likewise with e.ask[l])
    Dbar_l      = depth0 * (1 + depth_slope * (l - 1))                  mean depth, increasing with level
    v_{t+1}     = V * w(t) * exp(sd_v * e.volume - sd_v^2 / 2)          market volume of interval (t, t+1]
    w(t)        = max(0.05, 1 + c * ((2 (t + 1/2) / H - 1)^2 - 1/3))    U-shaped intraday profile, mean ~1

With `alpha > 0` the imbalance carries short-term information: `corr(I_t, r_{t+1}) > 0`, and since `z`
is persistent (`phi`), also over the next few steps; with `alpha = 0` it carries none. A "large order"
is present when some level on either side holds more than `k_large` times its mean depth
(`large_order_flag`).

Costs (relative to the mid at the fill step, used by the environment):

* `market_offset`: a market order of q shares for side `+1` (buy) / `-1` (sell) takes the opposite best
  level's `d1` shares at the half spread and the excess `e = max(q - d1, 0)` with a square-root
  temporary impact scaled by the thinness of the whole opposite book `D = sum_l depth[l]`:

      temp(q)   = (e / q) * eta * sigma * sqrt(e * Dbar / (D * V))       (`costs.sqrt_impact`), Dbar = sum_l Dbar_l
      offset(q) = s / 2 + temp(q),      price = mid * (1 + side * offset(q))

  With `sigma` the per-step volatility and `V` the expected per-step volume this is the square-root law
  `sigma_day * sqrt(q / ADV)` for any step length (both scale out).
* `permanent_impact(X)`: the mid's cumulative displacement after impact-bearing executions of X shares,
  `gamma * sigma * sqrt(X / V)` (square root in the metaorder's executed size, so slicing does not
  change the total displacement).
* `fill_probability`: a passive order at our best quote (plus `passive_offset` deeper) fills within the
  step with probability `p = clip(p_fill * (1 - side * beta * I_{t+1}) * exp(-kappa * passive_offset / sigma), 0, 1)`:
  a buy's passive bid fills more often when sellers dominate (`I < 0`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from trading_jax.envs.costs import sqrt_impact

Array = jax.Array

__all__ = [
    "BookNoise",
    "BookState",
    "draw_noise",
    "mean_depth",
    "volume_profile",
    "profile_weights",
    "init_book",
    "step_book",
    "imbalance",
    "large_order_flag",
    "market_offset",
    "permanent_impact",
    "fill_probability",
]


class BookNoise(NamedTuple):
    """All random draws of one book transition (or reset); float32.

    Attributes:
        mid: `[]` standard normal, mid-return shock.
        imbalance: `[]` standard normal, shock of the imbalance latent.
        spread: `[]` standard normal, log-spread shock.
        depth_best: `[]` standard normal, common level-1 depth shock.
        bid: `[L]` standard normal, depth shocks of bid levels (entry 0 unused: level 1 is `depth_best`).
        ask: `[L]` standard normal, same for the ask side.
        volume: `[]` standard normal, market-volume shock.
        fill: `[]` uniform on [0, 1), the passive-fill draw (fill iff `fill < p`).
        flow: `[]` standard normal, the trade-flow shock of the modelled book (`trading_jax.envs.flowbook`);
            drawn only with `draw_noise(..., flow=True)`, else 0.
    """

    mid: Array
    imbalance: Array
    spread: Array
    depth_best: Array
    bid: Array
    ask: Array
    volume: Array
    fill: Array
    flow: Array | float = 0.0


def draw_noise(key: Array, n_levels: int, flow: bool = False) -> BookNoise:
    """Every random number of one transition, a function of `key` only (same key -> same noise).
    `flow=True` draws one more normal (the modelled book's trade-flow shock); the others are unchanged."""
    k_norm, k_fill = jax.random.split(key)
    normals = jax.random.normal(k_norm, (5 + 2 * n_levels + int(flow),), jnp.float32)
    return BookNoise(
        mid=normals[0],
        imbalance=normals[1],
        spread=normals[2],
        depth_best=normals[3],
        volume=normals[4],
        bid=normals[5 : 5 + n_levels],
        ask=normals[5 + n_levels : 5 + 2 * n_levels],
        fill=jax.random.uniform(k_fill, (), jnp.float32),
        flow=normals[-1] if flow else jnp.zeros((), jnp.float32),
    )


class BookState(NamedTuple):
    """Book at one decision step (float32 scalars unless stated).

    Attributes:
        x: `log(mid_t / arrival)` (includes our permanent impact so far; 0 at reset).
        z: imbalance latent; the imbalance is `tanh(z)`.
        log_spread: `ls_t`, log of the relative spread (fraction of mid).
        bid: `[L]` bid depth per level (shares).
        ask: `[L]` ask depth per level (shares).
        volume: market volume of the last interval (shares; `V` at reset).
        mom: EWMA of observed mid log returns.
        var: EWMA of squared observed mid log returns (`sigma^2` at reset).
        vema: EWMA of market volume (`V` at reset).
    """

    x: Array
    z: Array
    log_spread: Array
    bid: Array
    ask: Array
    volume: Array
    mom: Array
    var: Array
    vema: Array


def mean_depth(depth0, depth_slope, n_levels: int) -> Array:
    """`Dbar_l = depth0 * (1 + depth_slope * (l - 1))`, `[L]`."""
    return depth0 * (1.0 + depth_slope * jnp.arange(n_levels, dtype=jnp.float32))


def volume_profile(curvature, horizon: int) -> Array:
    """`w(t) = max(0.05, 1 + c ((2 (t + 1/2) / H - 1)^2 - 1/3))` for t = 0..H-1, `[H]` (U-shaped, mean ~1)."""
    u = 2.0 * (jnp.arange(horizon, dtype=jnp.float32) + 0.5) / horizon - 1.0
    return jnp.maximum(0.05, 1.0 + curvature * (u * u - 1.0 / 3.0))


def profile_weights(params, horizon: int) -> Array:
    """The expected volume weight of each step, `[H]`: `params.volume_profile` when it is set (an array,
    e.g. calibrated on real bars by `trading_jax.envs.calibration`), else the U-shape `volume_profile`."""
    custom = getattr(params, "volume_profile", None)
    if custom is not None:
        return jnp.asarray(custom, jnp.float32)
    return volume_profile(params.volume_curvature, horizon)


def imbalance(book: BookState) -> Array:
    """`I_t = tanh(z_t)` = `(bid[1] - ask[1]) / (bid[1] + ask[1])`."""
    return jnp.tanh(book.z)


def _depths(z, noise: BookNoise, dbar: Array, depth_vol) -> tuple[Array, Array]:
    """Depth per level for imbalance latent `z` (the equations of the module docstring)."""
    imb = jnp.tanh(z)
    half_var = 0.5 * depth_vol * depth_vol
    m = jnp.exp(depth_vol * noise.depth_best - half_var)
    bid = dbar * jnp.exp(depth_vol * noise.bid - half_var)
    ask = dbar * jnp.exp(depth_vol * noise.ask - half_var)
    bid = bid.at[0].set(dbar[0] * m * (1.0 + imb))
    ask = ask.at[0].set(dbar[0] * m * (1.0 - imb))
    return bid, ask


def init_book(noise: BookNoise, params) -> BookState:
    """A book drawn from the stationary law of the latents (`x_0 = 0`): `z_0 = e.imbalance`,
    `ls_0 = log s_bar + sd_s / sqrt(1 - rho^2) * e.spread`, depths as in a transition; `volume = vema = V`,
    `mom = 0`, `var = sigma^2`."""
    n_levels = noise.bid.shape[-1]
    dbar = mean_depth(params.depth0, params.depth_slope, n_levels)
    rho = params.spread_persistence
    ls0 = jnp.log(params.spread_mean) + params.spread_vol / jnp.sqrt(jnp.maximum(1.0 - rho * rho, 1e-6)) * noise.spread
    bid, ask = _depths(noise.imbalance, noise, dbar, params.depth_vol)
    f32 = jnp.float32
    return BookState(
        x=jnp.zeros((), f32),
        z=jnp.asarray(noise.imbalance, f32),
        log_spread=jnp.asarray(ls0, f32),
        bid=bid.astype(f32),
        ask=ask.astype(f32),
        volume=jnp.asarray(params.volume, f32),
        mom=jnp.zeros((), f32),
        var=jnp.asarray(params.sigma * params.sigma, f32),
        vema=jnp.asarray(params.volume, f32),
    )


def step_book(
    book: BookState, noise: BookNoise, t, params, horizon: int, exo_return=None, exo_volume=None
) -> BookState:
    """One exogenous transition t -> t+1 (module docstring), before our own orders' impact.

    Args:
        book: state at t.
        noise: this transition's draws.
        t: int decision step (selects the volume-profile weight `w(t)`).
        params: the env's `EnvParams` (reads the book parameters).
        horizon: H (static).
        exo_return: optional exogenous mid log return (replay); default the synthetic
            `alpha * I_t * sigma + sigma * e.mid`.
        exo_volume: optional market volume of the interval (replayed bars); default the draw
            `V * w(t) * exp(sd_v * e.volume - sd_v^2 / 2)` with `w = profile_weights(params, H)`.

    Returns:
        The book at t+1; the EWMAs (`mom`, `var`) are NOT updated here (the env updates them with the
        observed return after its permanent impact), `vema` is.
    """
    sigma = params.sigma
    if exo_return is None:
        exo_return = params.alpha * jnp.tanh(book.z) * sigma + sigma * noise.mid
    phi = params.imb_persistence
    z = phi * book.z + jnp.sqrt(jnp.maximum(1.0 - phi * phi, 0.0)) * noise.imbalance
    log_s_bar = jnp.log(params.spread_mean)
    ls = log_s_bar + params.spread_persistence * (book.log_spread - log_s_bar) + params.spread_vol * noise.spread
    dbar = mean_depth(params.depth0, params.depth_slope, book.bid.shape[-1])
    bid, ask = _depths(z, noise, dbar, params.depth_vol)
    if exo_volume is None:
        w = profile_weights(params, horizon)[t]
        vol = params.volume * w * jnp.exp(params.volume_vol * noise.volume - 0.5 * params.volume_vol**2)
    else:
        vol = exo_volume
    lam = params.ewma_decay
    return BookState(
        x=book.x + exo_return,
        z=z,
        log_spread=ls,
        bid=bid,
        ask=ask,
        volume=vol,
        mom=book.mom,
        var=book.var,
        vema=lam * book.vema + (1.0 - lam) * vol,
    )


def large_order_flag(book: BookState, params) -> Array:
    """1.0 when some level on either side holds more than `k_large * Dbar_l` shares, else 0.0."""
    dbar = mean_depth(params.depth0, params.depth_slope, book.bid.shape[-1])
    big = jnp.any(book.bid > params.large_order_k * dbar) | jnp.any(book.ask > params.large_order_k * dbar)
    return big.astype(jnp.float32)


def opposite_depth(book: BookState, side) -> tuple[Array, Array]:
    """`(d1, D)`: depth at the best level and total depth of the side a `side` order takes from
    (the ask for a buy, `side = +1`; the bid for a sell)."""
    buy = side > 0
    d1 = jnp.where(buy, book.ask[0], book.bid[0])
    total = jnp.where(buy, jnp.sum(book.ask), jnp.sum(book.bid))
    return d1, total


def market_offset(q, book: BookState, side, params) -> tuple[Array, Array]:
    """Relative price concession of a market order of `q >= 0` shares against `book` (module docstring).

    Returns:
        `(offset, temp)`: `offset = s / 2 + temp` and the temporary-impact part
        `temp = (e / q) * eta * sigma * sqrt(e * Dbar / (D * V))`, `e = max(q - d1, 0)` (0 for `q = 0`).
    """
    d1, total = opposite_depth(book, side)
    dbar_total = jnp.sum(mean_depth(params.depth0, params.depth_slope, book.bid.shape[-1]))
    excess = jnp.maximum(q - d1, 0.0)
    scaled = excess * dbar_total / jnp.maximum(total, 1e-9)
    share = jnp.where(q > 0, excess / jnp.maximum(q, 1e-9), 0.0)
    temp = share * sqrt_impact(scaled, params.volume, params.sigma, params.eta)
    return 0.5 * jnp.exp(book.log_spread) + temp, temp


def permanent_impact(executed, params) -> Array:
    """Cumulative permanent log-mid displacement after `executed` impact-bearing shares:
    `gamma * sigma * sqrt(executed / V)`."""
    return sqrt_impact(executed, params.volume, params.sigma, params.gamma)


def fill_probability(book: BookState, side, params) -> Array:
    """`clip(p_fill * (1 - side * beta * I) * exp(-kappa * passive_offset / sigma), 0, 1)` for a passive
    order resting on our side during the interval ending at `book` (I = the imbalance of `book`)."""
    imb = jnp.tanh(book.z)
    distance = params.fill_decay * params.passive_offset / jnp.maximum(params.sigma, 1e-12)
    p = params.p_fill * (1.0 - side * params.fill_imbalance * imb) * jnp.exp(-distance)
    return jnp.clip(p, 0.0, 1.0)
