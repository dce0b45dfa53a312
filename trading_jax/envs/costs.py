"""Transaction-cost and price-impact models: pure, elementwise, jittable functions.

Every function broadcasts over its arguments (scalars or arrays of any shape) and works on JAX or NumPy
inputs, returning JAX arrays. Prices are in currency per unit, quantities in units (positive = buy,
negative = sell), rates and spreads as fractions (1 bp = 1e-4).

Cost model of the environments (`trading_jax.envs.trading` and friends): an order of `d` units filled
at reference price `p` (the next bar's open) executes at

    exec = fill_price(p, d, half_spread, slippage) = p * (1 + sign(d) * (half_spread + slippage))

and pays a fee `proportional_fee(d * exec, fee_rate) = fee_rate * |d| * exec` on top, so the cash
change is `-(d * exec) - fee`. The spread and slippage costs relative to trading at `p` are
`|d| * p * half_spread` and `|d| * p * slippage`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["fill_price", "proportional_fee", "sqrt_impact", "turnover_cost"]


def fill_price(reference_price, trade, half_spread, slippage=0.0) -> Array:
    """Execution price of a market order: the reference price moved against the trader.

        exec = p * (1 + sign(trade) * (half_spread + slippage))

    A buy (`trade > 0`) pays above `p`, a sell (`trade < 0`) receives below `p`, and no trade
    (`trade == 0`) is priced at `p` (it costs nothing anyway).

    Args:
        reference_price: `p`, e.g. the open of the fill bar, any shape.
        trade: signed quantity (units or notional; only its sign is used), broadcastable with `p`.
        half_spread: half the relative bid-ask spread (fraction of price, >= 0).
        slippage: extra relative price concession (fraction of price, >= 0).

    Returns:
        The execution price, the broadcast shape of the inputs.
    """
    return reference_price * (1.0 + jnp.sign(trade) * (half_spread + slippage))


def proportional_fee(notional, rate) -> Array:
    """Exchange/broker fee proportional to the traded value: `rate * |notional|`.

    Args:
        notional: traded value (quantity times execution price), signed, any shape.
        rate: fee rate (fraction of notional, e.g. 1e-3 = 10 bps), broadcastable.

    Returns:
        The fee (>= 0 for rate >= 0), the broadcast shape.
    """
    return rate * jnp.abs(notional)


def sqrt_impact(quantity, adv, sigma, coefficient) -> Array:
    """Square-root-law relative market impact: `coefficient * sigma * sqrt(|quantity| / adv)`.

    The price moves against the trader by this fraction of the price (Almgren et al. 2005; Tóth et al.
    2011). `adv` (average daily/bar volume, same units as `quantity`) is guarded: where `adv <= 0` the
    impact is 0 (no volume information means no impact model, never a NaN or an infinity).

    Args:
        quantity: traded quantity (signed; its magnitude is used), any shape.
        adv: average traded volume over the same horizon, broadcastable.
        sigma: volatility of returns over the same horizon (fraction), broadcastable.
        coefficient: dimensionless impact coefficient (typically 0.1 .. 1), broadcastable.

    Returns:
        The relative impact (>= 0), the broadcast shape.
    """
    adv = jnp.asarray(adv)
    positive = adv > 0
    ratio = jnp.abs(quantity) / jnp.where(positive, adv, 1.0)
    return jnp.where(positive, coefficient * sigma * jnp.sqrt(ratio), 0.0)


def turnover_cost(w_from, w_to, rate) -> Array:
    """Cost of rebalancing portfolio weights, as a fraction of equity: `rate * sum_i |w_to_i - w_from_i|`.

    Args:
        w_from: current weights `[..., N]`.
        w_to: target weights `[..., N]`.
        rate: cost per unit of turnover (fraction), broadcastable with `[...]`.

    Returns:
        `[...]`: the cost (fraction of equity), the leading batch shape.
    """
    return rate * jnp.sum(jnp.abs(jnp.asarray(w_to) - jnp.asarray(w_from)), axis=-1)
