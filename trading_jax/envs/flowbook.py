"""The modelled order book of the execution environment (`book="modelled"`): fills with a price.

`trading_jax.envs.orderbook` draws the book's exogenous state (mid, imbalance, spread, depth, volume);
this module adds what an execution desk would ask of it, as pure functions the environment calls:

* **Trade flow and adverse selection.** During the interval (t, t+1] the market's traded volume
  `v_{t+1}` (orderbook's volume draw) is split into buyer- and seller-initiated market orders by the
  signed trade-flow imbalance `u_{t+1} = tanh(e_u)`, `e_u ~ N(0, 1)`:

      buys_{t+1} = v_{t+1} (1 + u) / 2,     sells_{t+1} = v_{t+1} (1 - u) / 2

  and the mid's exogenous log return loads on the same shock (synthetic source):

      r_{t+1} = alpha I_t sigma + sigma (c e_u + sqrt(1 - c^2) e_mid)

  so heavy selling, which is what fills a resting bid, comes with a falling mid. `c = flow_correlation`
  defaults to `sqrt(0.65)`: Cont, Kukanov and Stoikov (2014), "The price impact of order book events"
  (J. Financial Econometrics 12(1)), find that order-flow imbalance explains about 65% of the variance of
  short-interval mid changes (their average R^2 across 50 US stocks). We apply that share to the
  trade-flow shock; CKS find trade imbalance alone a noisier predictor than their full order-flow
  imbalance, so this errs towards more adverse selection, not less. With replayed bars the return is
  the data's, and the flow shock is drawn given it from the same joint law,
  `e_u = c r / sigma + sqrt(1 - c^2) e_flow` (or read from the bars' own imbalance when they carry one).

* **Queue position** (`passive_fill`). A passive order joins the back of the queue at our best quote:
  `ahead = ` the displayed depth there. Over the interval the opposite flow (sells for a resting bid)
  trades the queue from its front: our fill is `clip(flow - ahead, 0, size)`, after which a fraction
  `cancel_rate` of what is still ahead cancels:

      ahead_{t+1} = max(ahead_t - flow_{t+1}, 0) * (1 - cancel_rate)

  so the queue ahead of us shrinks only through trades and cancellations ahead of us (arrivals join
  behind). The order keeps its place while it rests unchanged at the same price; re-pricing (the touch
  moved by more than half a tick) or enlarging it sends it to the back, as on most exchanges
  (price-time priority; e.g. CME and Nasdaq rules: a size increase loses priority, a decrease keeps it).
  A fill is priced at the quote where the order rests (the touch at the decision, known then), not at
  the later mid: that is where adverse selection bites.

* **Icebergs pay for their hidden priority.** The hidden part of an iceberg yields to every displayed
  order at its price, including those that arrive later, so its queue never advances: its `ahead` is
  the whole displayed level at each interval, and it fills only with flow heavy enough to clear the
  level (the flow that moves the mid hardest). It bears no permanent impact (nothing is displayed).

* **Walking the book** (`walk_book`). A market order takes the opposite levels in price order: level
  `l = 1..L` (depth `d_l` after our own earlier consumption) at a concession of `s/2 + (l - 1) * tick`
  from the mid, and what is left beyond level L from undisplayed levels of depth `Dbar_L` (the mean depth
  of level L), one tick apart. Its average concession is the depth-weighted price of the levels walked.

* **Resilience** (`recover`). The depth we consume comes back geometrically: a gap `g_l` (shares we
  took from level l and that have not been replaced) decays as `g <- (1 - resilience) g` per step, and
  the displayed depth is `max(fresh_l - g_l, 0)` with `fresh_l` the exogenous depth draw. This is the
  exponential resilience of Obizhaeva and Wang (2013), "Optimal trading strategy and supply/demand
  dynamics", J. Financial Markets 16(1).

Defaults and their sources are listed in `trading_jax.envs.execution` (module docstring, "Parameters").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["trade_flow", "flow_shock_from_return", "walk_book", "recover", "passive_fill", "queue_advance"]


def trade_flow(volume, flow_imbalance) -> tuple[Array, Array]:
    """`(buys, sells)`: buyer- and seller-initiated market-order volume of an interval,
    `v (1 + u) / 2` and `v (1 - u) / 2` (shares)."""
    return 0.5 * volume * (1.0 + flow_imbalance), 0.5 * volume * (1.0 - flow_imbalance)


def flow_shock_from_return(excess_return, sigma, correlation, noise) -> Array:
    """The trade-flow shock `e_u` given a replayed mid return: `c r / sigma + sqrt(1 - c^2) e`, the
    conditional law of `e_u` given `r` when `(e_u, r / sigma)` are standard normals with correlation c."""
    c = jnp.clip(correlation, -1.0, 1.0)
    return c * excess_return / jnp.maximum(sigma, 1e-12) + jnp.sqrt(1.0 - c * c) * noise


def walk_book(q, depth: Array, half_spread, tick, beyond_depth) -> tuple[Array, Array]:
    """A market order of `q >= 0` shares against one side of the book.

    Args:
        q: shares.
        depth: `[L]` displayed depth of the levels the order takes from, best first.
        half_spread: `s / 2`, the best level's concession from the mid (fraction of the mid).
        tick: price step between levels (fraction of the mid).
        beyond_depth: depth of each undisplayed level past level L (shares, > 0).

    Returns:
        `(offset, taken)`: the average concession from the mid, `sum_l taken_l (s/2 + (l-1) tick) / q`
        plus the undisplayed part (module docstring; `s / 2` for q = 0), and `taken` `[L]`, the shares
        taken from each displayed level.
    """
    n = depth.shape[-1]
    cum_before = jnp.cumsum(depth) - depth
    taken = jnp.clip(q - cum_before, 0.0, depth)
    level_offset = jnp.arange(n, dtype=jnp.float32) * tick
    visible_cost = jnp.sum(taken * level_offset)
    excess = jnp.maximum(q - jnp.sum(depth), 0.0)
    unit = jnp.maximum(beyond_depth, 1e-6)
    k = jnp.floor(excess / unit)
    rest = excess - k * unit
    # level L-1+j (0-based) for j = 1..k full levels, then `rest` shares one level further
    beyond_cost = excess * (n - 1) * tick + tick * (unit * k * (k + 1.0) / 2.0 + rest * (k + 1.0))
    extra = jnp.where(q > 0, (visible_cost + beyond_cost) / jnp.maximum(q, 1e-9), 0.0)
    return half_spread + extra, taken


def recover(gap: Array, resilience) -> Array:
    """The consumed-depth gap one step later, `(1 - resilience) * gap` (`[L]`, shares)."""
    return (1.0 - jnp.clip(resilience, 0.0, 1.0)) * gap


def passive_fill(size, ahead, flow) -> Array:
    """Shares of a resting order of `size` filled by `flow` shares of opposite market orders when `ahead`
    shares have priority over it: `clip(flow - ahead, 0, size)`."""
    return jnp.clip(flow - ahead, 0.0, jnp.maximum(size, 0.0))


def queue_advance(ahead, flow, cancel_rate) -> Array:
    """Queue ahead of a resting order after an interval: `max(ahead - flow, 0) * (1 - cancel_rate)`
    (trades from the front, then cancellations of a share `cancel_rate` of those still ahead)."""
    return jnp.maximum(ahead - flow, 0.0) * (1.0 - jnp.clip(cancel_rate, 0.0, 1.0))
