"""Policy-gradient losses: PPO's clipped objective and the explained variance of a value function.

**Clipped PPO loss** (Schulman et al. 2017). With the probability ratio `rho = exp(log_prob - old_log_prob)`
of the taken actions under the new and the rollout policy, advantages `A`, value targets `R`, new values
`V` and the rollout's `V_old`:

    L_pi  = -mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A))
    L_v   = 0.5 mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))     (clip_value)
          = 0.5 mean((V - R)^2)                                                        (otherwise)
    L     = L_pi + c1 L_v - c2 mean(entropy)

Diagnostics: `approx_kl = mean((rho - 1) - log rho)` (Schulman's k3 estimator of KL(old || new), >= 0)
and `clip_fraction = mean(|rho - 1| > eps)`.

**Explained variance** of value predictions `V` for targets `R`: `1 - Var(R - V) / Var(R)` (1: perfect,
0: no better than a constant; defined as 0 when `Var(R) = 0`).
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["ppo_loss", "explained_variance"]


def ppo_loss(log_prob, old_log_prob, advantages, values, old_values, returns, entropy, clip_eps, vf_coef, ent_coef,
             clip_value: bool = True):
    """The PPO objective (module docstring) and its diagnostics.

    Args:
        log_prob, old_log_prob: `[N]` log-probabilities of the taken actions under the new / rollout policy.
        advantages: `[N]` (already normalised if wanted).
        values, old_values: `[N]` new value predictions and those of the rollout.
        returns: `[N]` value targets.
        entropy: `[N]` policy entropy.
        clip_eps, vf_coef, ent_coef: scalars (may be traced).
        clip_value: clip the value update to `old_values +- clip_eps`.

    Returns:
        `(loss, aux)` with `aux = {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"}`;
        `approx_kl = mean((rho - 1) - log rho)` (Schulman's k3 estimator, >= 0).
    """
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    surrogate = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    policy_loss = -jnp.mean(jnp.minimum(surrogate, clipped))
    value_err = jnp.square(values - returns)
    if clip_value:
        v_clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        value_err = jnp.maximum(value_err, jnp.square(v_clipped - returns))
    value_loss = 0.5 * jnp.mean(value_err)
    ent = jnp.mean(entropy)
    loss = policy_loss + vf_coef * value_loss - ent_coef * ent
    aux = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": ent,
        "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
        "clip_fraction": jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32)),
    }
    return loss, aux


def explained_variance(values, returns):
    """`1 - Var(returns - values) / Var(returns)` over all entries (0 when `Var(returns) == 0`)."""
    var_r = jnp.var(returns)
    return jnp.where(var_r > 0, 1.0 - jnp.var(returns - values) / jnp.where(var_r > 0, var_r, 1.0), 0.0)
