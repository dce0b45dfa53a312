"""Thompson sampling over arms (agents, models) with a Normal-Inverse-Gamma posterior of their recent returns.

An `(init, update)` pair over a `ThompsonState` (DESIGN.md principle 3): pure, jittable and vmappable
(every prior setting and the discount live in the state, so `jax.vmap(init)` builds a grid of them).

    state = init(3)                                  # 3 arms, weak prior
    arm = choose(key, state)                         # draw a mean per arm from its posterior, take the best
    state = update(state, arm, reward)               # the pulled arm's posterior absorbs the reward

**Model.** Each arm k has i.i.d. Gaussian rewards `x ~ N(mu_k, sigma_k^2)` with both parameters unknown,
and the conjugate Normal-Inverse-Gamma prior

    sigma^2 ~ InvGamma(alpha0, beta0),      mu | sigma^2 ~ N(m0, sigma^2 / kappa0).

**Sufficient statistics with forgetting.** The state holds, per arm, a (discounted) weight `n`, the
weighted mean `xbar` of the rewards and `S`, the weighted sum of squared deviations from `xbar`. Before
every update ALL arms' statistics are discounted by `gamma` (`discount` in (0, 1]; 1 = no forgetting), so
a reward observed `j` updates ago has weight `gamma^j` and an arm left alone slowly regains its prior
uncertainty (discounted Thompson sampling, Raj & Kalyani 2017). Then the pulled arm absorbs reward `x`
with weight 1 (a weighted Welford step, stable in float32 even for rewards far from 0):

    n' = gamma n + 1,    delta = x - xbar,    xbar' = xbar + delta / n',    S' = gamma S + gamma n delta^2 / n'.

**Posterior** (with the discounted `n` in place of the count):

    kappa_n = kappa0 + n,                  m_n     = (kappa0 m0 + n xbar) / kappa_n,
    alpha_n = alpha0 + n / 2,              beta_n  = beta0 + S / 2 + kappa0 n (xbar - m0)^2 / (2 kappa_n),

so `E[mu] = m_n`, `Var[mu] = beta_n / ((alpha_n - 1) kappa_n)` (alpha_n > 1) and `E[sigma^2] =
beta_n / (alpha_n - 1)`; marginally `mu ~ Student-t(2 alpha_n, m_n, beta_n / (alpha_n kappa_n))`.

**Thompson sampling.** `sample_means` draws `sigma^2 = beta_n / G` with `G ~ Gamma(alpha_n, 1)`, then
`mu ~ N(m_n, sigma^2 / kappa_n)`, for each arm independently; `choose` pulls the arm with the largest draw.
An arm is thus chosen with the posterior probability that it is the best (`best_arm_probabilities`
estimates these probabilities, e.g. as ensemble weights).

Randomness is explicit: the same key and state give the same draw, bit for bit.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = [
    "ThompsonState",
    "Posterior",
    "init",
    "update",
    "update_batch",
    "update_all",
    "posterior",
    "posterior_mean",
    "posterior_variance",
    "sample_means",
    "choose",
    "best_arm_probabilities",
]


class ThompsonState(NamedTuple):
    """Per-arm discounted sufficient statistics and the prior (module docstring for the maths).

    Attributes:
        count: `[K]` float32, discounted weight `n` of the rewards seen.
        mean: `[K]` float32, their weighted mean `xbar` (0 before any reward).
        m2: `[K]` float32, weighted sum of squared deviations `S` from `mean`.
        pulls: `[K]` int32, undiscounted number of rewards seen (for reports).
        m0, kappa0, alpha0, beta0: `[K]` float32 prior of each arm.
        discount: float32 scalar, the forgetting factor `gamma` in (0, 1].
    """

    count: Array
    mean: Array
    m2: Array
    pulls: Array
    m0: Array
    kappa0: Array
    alpha0: Array
    beta0: Array
    discount: Array


class Posterior(NamedTuple):
    """Normal-Inverse-Gamma posterior parameters, each `[K]`: `mu | sigma^2 ~ N(m, sigma^2 / kappa)`,
    `sigma^2 ~ InvGamma(alpha, beta)`."""

    m: Array
    kappa: Array
    alpha: Array
    beta: Array


def init(n_arms: int, m0: Any = 0.0, kappa0: Any = 1e-2, alpha0: Any = 1.0, beta0: Any = 1.0,
         discount: Any = 1.0) -> ThompsonState:
    """A `ThompsonState` with no reward seen.

    Args:
        n_arms: K, the number of arms (static).
        m0: prior mean of each arm's mean reward (scalar or `[K]`).
        kappa0: prior pseudo-count of the mean (> 0; small = weak prior on the mean).
        alpha0, beta0: Inverse-Gamma prior of the reward variance (> 0; `beta0 / alpha0` is a prior
            guess of the variance, so choose it on the scale of the rewards).
        discount: forgetting factor in (0, 1]; 1 keeps every reward, 0.95 gives a reward of 20 updates
            ago the weight 0.36.

    Returns:
        A `ThompsonState` with `[K]` fields (prior values broadcast).
    """
    k = int(n_arms)
    if k < 1:
        raise ValueError(f"need at least one arm, got {n_arms}")
    arm = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (k,))  # noqa: E731
    zeros = jnp.zeros((k,), jnp.float32)
    return ThompsonState(count=zeros, mean=zeros, m2=zeros, pulls=jnp.zeros((k,), jnp.int32),
                         m0=arm(m0), kappa0=arm(kappa0), alpha0=arm(alpha0), beta0=arm(beta0),
                         discount=jnp.asarray(discount, jnp.float32))


def _discounted(state: ThompsonState) -> ThompsonState:
    g = state.discount
    return state._replace(count=g * state.count, m2=g * state.m2)


def _absorb(count, mean, m2, x, weight):
    """Weighted Welford step: add `x` with `weight` (0 or 1) to `(count, mean, m2)` (all broadcastable)."""
    new_count = count + weight
    delta = x - mean
    safe = jnp.where(new_count > 0, new_count, 1.0)
    new_mean = jnp.where(weight > 0, mean + weight * delta / safe, mean)
    new_m2 = m2 + jnp.where(weight > 0, count * weight * delta ** 2 / safe, 0.0)
    return new_count, new_mean, new_m2


def update(state: ThompsonState, arm, reward) -> ThompsonState:
    """Discount every arm's statistics by `gamma`, then add `reward` to `arm` (module docstring).

    Args:
        state: the current `ThompsonState`.
        arm: int scalar in `[0, K)` (may be traced).
        reward: float scalar, the reward the arm earned.

    Returns:
        The new state. A non-finite reward is ignored (the state is only discounted).
    """
    state = _discounted(state)
    reward = jnp.asarray(reward, jnp.float32)
    hit = (jnp.arange(state.count.shape[0]) == arm) & jnp.isfinite(reward)
    weight = hit.astype(jnp.float32)
    x = jnp.where(jnp.isfinite(reward), reward, 0.0)
    count, mean, m2 = _absorb(state.count, state.mean, state.m2, x, weight)
    return state._replace(count=count, mean=mean, m2=m2, pulls=state.pulls + hit.astype(jnp.int32))


def update_batch(state: ThompsonState, arms, rewards) -> ThompsonState:
    """`update` for each `(arms[i], rewards[i])` in order (a `lax.scan`): `arms` `[B]` int, `rewards` `[B]`."""
    def body(s, xs):
        return update(s, *xs), None

    return jax.lax.scan(body, state, (jnp.asarray(arms, jnp.int32), jnp.asarray(rewards, jnp.float32)))[0]


def update_all(state: ThompsonState, rewards) -> ThompsonState:
    """One round in which EVERY arm earned a reward (full information, e.g. all agents run on the same
    validation episode): discount once, then each arm k absorbs `rewards[k]` (`[K]`; NaN entries are skipped).
    """
    state = _discounted(state)
    rewards = jnp.asarray(rewards, jnp.float32)
    finite = jnp.isfinite(rewards)
    weight = finite.astype(jnp.float32)
    count, mean, m2 = _absorb(state.count, state.mean, state.m2, jnp.where(finite, rewards, 0.0), weight)
    return state._replace(count=count, mean=mean, m2=m2, pulls=state.pulls + finite.astype(jnp.int32))


def posterior(state: ThompsonState) -> Posterior:
    """The Normal-Inverse-Gamma posterior of every arm, each field `[K]` (module docstring)."""
    n, xbar = state.count, state.mean
    kappa = state.kappa0 + n
    m = (state.kappa0 * state.m0 + n * xbar) / kappa
    alpha = state.alpha0 + 0.5 * n
    beta = state.beta0 + 0.5 * state.m2 + state.kappa0 * n * (xbar - state.m0) ** 2 / (2.0 * kappa)
    return Posterior(m, kappa, alpha, beta)


def posterior_mean(state: ThompsonState) -> Array:
    """`E[mu_k]` `[K]`: the posterior mean of each arm's mean reward."""
    return posterior(state).m


def posterior_variance(state: ThompsonState) -> Array:
    """`Var[mu_k] = beta / ((alpha - 1) kappa)` `[K]` (inf where alpha <= 1)."""
    p = posterior(state)
    return jnp.where(p.alpha > 1.0, p.beta / (jnp.maximum(p.alpha - 1.0, 1e-30) * p.kappa), jnp.inf)


def sample_means(key: Array, state: ThompsonState) -> Array:
    """One posterior draw of every arm's mean reward `[K]`: `sigma^2 = beta / Gamma(alpha)`,
    `mu ~ N(m, sigma^2 / kappa)`."""
    p = posterior(state)
    k_gamma, k_normal = jax.random.split(key)
    g = jax.random.gamma(k_gamma, p.alpha, dtype=jnp.float32)
    var = p.beta / jnp.maximum(g, 1e-30)
    return p.m + jnp.sqrt(var / p.kappa) * jax.random.normal(k_normal, p.m.shape, jnp.float32)


def choose(key: Array, state: ThompsonState) -> Array:
    """The arm (int32 scalar) with the largest posterior draw: Thompson sampling's choice."""
    return jnp.argmax(sample_means(key, state)).astype(jnp.int32)


def best_arm_probabilities(key: Array, state: ThompsonState, n_samples: int = 1024) -> Array:
    """Monte Carlo estimate `[K]` of `P(arm k has the largest mean | rewards)` from `n_samples` draws
    (static): the probability with which `choose` picks each arm, usable as ensemble weights."""
    draws = jax.vmap(lambda k: sample_means(k, state))(jax.random.split(key, int(n_samples)))
    best = jnp.argmax(draws, axis=-1)
    return jnp.mean(jax.nn.one_hot(best, state.count.shape[0], dtype=jnp.float32), axis=0)
