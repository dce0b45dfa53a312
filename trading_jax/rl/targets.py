"""Bellman targets, losses and replay weights shared by the off-policy algorithms (SAC, TD3, DDPG, DQN).

Every function is a pure `jnp` function of arrays (jittable, vmappable over seeds and hyperparameters, no
Python control flow on values); batches are `[B]` float32 unless stated. A transition's `bootstrap` is the
discount multiplier of its bootstrap value: `gamma^m` for an m-step return that did not terminate (a
time-limit truncation still bootstraps, from `final_observation`), and `0` after a termination.

**Targets** (returned under `stop_gradient`: a target is a constant of the regression):

    SAC   (Haarnoja et al. 2018)   y = r + bootstrap (min(Q1', Q2') - alpha log pi(a'|s')),  a' ~ pi(.|s')
    TD3   (Fujimoto et al. 2018)   y = r + bootstrap min(Q1', Q2'),
                                   a' = clip(mu'(s') + clip(sigma N(0, 1), -c, c), lo, hi)   (target smoothing)
    DDPG  (Lillicrap et al. 2016)  y = r + bootstrap Q'(s', mu'(s'))
    DQN   (Mnih et al. 2015)       y = r + bootstrap max_a Q_target(s', a)
    double DQN (van Hasselt 2016)  y = r + bootstrap Q_target(s', argmax_a Q_online(s', a))

**SAC losses** (the Stable-Baselines3 / SBX forms), with `y` held constant and `alpha = exp(log_alpha)`:

    L_Q     = 0.5 (mean((Q1 - y)^2) + mean((Q2 - y)^2))
    L_pi    = mean(alpha log pi(a|s) - min(Q1(s, a), Q2(s, a))),        a ~ pi(.|s), alpha constant
    L_alpha = -mean(log_alpha sg(log pi(a|s) + H_target)),              H_target = -dim(A) by default

so `dL_alpha / dlog_alpha = -mean(log pi + H_target)`: alpha grows while the entropy `-log pi` is below the
target and shrinks while it is above.

**Target networks** follow Polyak averaging, `theta' <- tau theta + (1 - tau) theta'`.

**Prioritised replay** (Schaul et al. 2016): priorities `p_i = |delta_i| + eps`, sampling `P(i) = p_i^a /
sum_j p_j^a` (in the buffer), importance weights `w_i = (N P(i))^-beta / max_j w_j` over the sampled batch,
with `beta` annealed to 1 by `linear_schedule`.

The distributional (C51) targets are in `trading_jax.rl.distributional`. Hand-worked tests in
`tests/test_rl_targets.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "polyak_update",
    "sac_target",
    "sac_critic_loss",
    "sac_actor_loss",
    "temperature_loss",
    "default_target_entropy",
    "smoothed_target_action",
    "td3_target",
    "ddpg_target",
    "double_q_target",
    "q_target",
    "huber",
    "td_error_priorities",
    "importance_weights",
    "linear_schedule",
]


def _f32(x):
    return jnp.asarray(x, jnp.float32)


def polyak_update(target, online, tau):
    """Soft target-network update, leaf by leaf: `tau * online + (1 - tau) * target`.

    Args:
        target: any pytree of arrays (the target network's parameters theta').
        online: a pytree of the same structure and shapes (the online parameters theta).
        tau: scalar in [0, 1] (may be traced): 1 copies `online`, 0 keeps `target`.

    Returns:
        A pytree like `target`, each leaf in the target leaf's dtype.
    """
    return jax.tree.map(lambda t, o: (tau * o + (1.0 - tau) * t).astype(jnp.asarray(t).dtype), target, online)


def sac_target(reward, bootstrap, next_q1, next_q2, next_log_prob, alpha):
    """SAC's soft Bellman target `y = r + bootstrap * (min(Q1', Q2') - alpha * log pi(a'|s'))`.

    Args:
        reward: `[B]` (m-step discounted) rewards.
        bootstrap: `[B]` discount multiplier of the bootstrap value (`gamma^m`, or 0 after a termination).
        next_q1, next_q2: `[B]` target critics at `(s', a')`, `a' ~ pi(.|s')`.
        next_log_prob: `[B]` `log pi(a'|s')`.
        alpha: scalar entropy temperature (may be traced).

    Returns:
        `[B]` float32 targets (under `stop_gradient`).
    """
    soft_value = jnp.minimum(_f32(next_q1), _f32(next_q2)) - alpha * _f32(next_log_prob)
    return jax.lax.stop_gradient(_f32(reward) + _f32(bootstrap) * soft_value)


def sac_critic_loss(q1, q2, target, weights=None):
    """Twin-critic regression loss `0.5 * (mean((Q1 - y)^2) + mean((Q2 - y)^2))` (SB3's form), `y` constant.

    Args:
        q1, q2: `[B]` online critics at the replayed `(s, a)`.
        target: `[B]` Bellman targets `y` (gradient stopped here).
        weights: optional `[B]` importance weights (prioritised replay): each mean becomes
            `mean(w * (Q - y)^2)`.

    Returns:
        Scalar float32 loss.
    """
    y = jax.lax.stop_gradient(_f32(target))
    w = jnp.ones_like(y) if weights is None else _f32(weights)
    return 0.5 * (jnp.mean(w * jnp.square(_f32(q1) - y)) + jnp.mean(w * jnp.square(_f32(q2) - y)))


def sac_actor_loss(log_prob, q1, q2, alpha):
    """SAC's policy loss `mean(alpha * log pi(a|s) - min(Q1(s, a), Q2(s, a)))`, `a ~ pi(.|s)` reparameterised.

    Args:
        log_prob: `[B]` `log pi(a|s)` of the freshly sampled actions.
        q1, q2: `[B]` online critics at those actions.
        alpha: scalar temperature, held constant (`stop_gradient`): the temperature has its own loss.

    Returns:
        Scalar float32 loss.
    """
    alpha = jax.lax.stop_gradient(alpha)
    return jnp.mean(alpha * _f32(log_prob) - jnp.minimum(_f32(q1), _f32(q2)))


def temperature_loss(log_alpha, log_prob, target_entropy):
    """SAC's temperature loss `-mean(log_alpha * sg(log pi(a|s) + H_target))` (the SB3 / SBX form).

    Its gradient w.r.t. `log_alpha` is `-mean(log pi + H_target)`; no gradient reaches `log_prob`.

    Args:
        log_alpha: scalar log temperature (the parameter being learned).
        log_prob: `[B]` `log pi(a|s)` of sampled actions.
        target_entropy: scalar `H_target` (see `default_target_entropy`).

    Returns:
        Scalar float32 loss.
    """
    return -jnp.mean(log_alpha * jax.lax.stop_gradient(_f32(log_prob) + target_entropy))


def default_target_entropy(action_dim: int) -> float:
    """The usual SAC entropy target `-dim(A)` (Haarnoja et al. 2018b), a Python float."""
    return -float(action_dim)


def smoothed_target_action(next_action, key, noise_std, noise_clip, low=-1.0, high=1.0):
    """TD3's target policy smoothing `clip(a' + clip(sigma * N(0, 1), -c, c), low, high)`.

    Args:
        next_action: `[..., A]` target actor's actions `mu'(s')`.
        key: PRNG key for the noise.
        noise_std: scalar sigma (may be traced).
        noise_clip: scalar c >= 0 (may be traced).
        low, high: action bounds (scalars or broadcastable to `next_action`).

    Returns:
        Float32 array shaped like `next_action`.
    """
    next_action = _f32(next_action)
    noise = noise_std * jax.random.normal(key, next_action.shape, jnp.float32)
    noise = jnp.clip(noise, -noise_clip, noise_clip)
    return jnp.clip(next_action + noise, low, high).astype(jnp.float32)


def td3_target(reward, bootstrap, next_q1, next_q2):
    """TD3's clipped double-Q target `y = r + bootstrap * min(Q1', Q2')`, all `[B]`; `[B]` float32 (no gradient)."""
    return jax.lax.stop_gradient(_f32(reward) + _f32(bootstrap) * jnp.minimum(_f32(next_q1), _f32(next_q2)))


def ddpg_target(reward, bootstrap, next_q):
    """DDPG's target `y = r + bootstrap * Q'(s', mu'(s'))`, all `[B]`; `[B]` float32 (no gradient)."""
    return jax.lax.stop_gradient(_f32(reward) + _f32(bootstrap) * _f32(next_q))


def double_q_target(reward, bootstrap, next_q_online, next_q_target):
    """Double Q-learning target (van Hasselt et al. 2016).

    `a* = argmax_a Q_online(s', a)`, `y = r + bootstrap * Q_target(s', a*)`: the online network chooses the
    action, the target network values it.

    Args:
        reward, bootstrap: `[B]`.
        next_q_online: `[B, K]` online network at `s'`.
        next_q_target: `[B, K]` target network at `s'`.

    Returns:
        `[B]` float32 targets (no gradient).
    """
    best = jnp.argmax(next_q_online, axis=-1)
    value = jnp.take_along_axis(_f32(next_q_target), best[:, None], axis=-1)[:, 0]
    return jax.lax.stop_gradient(_f32(reward) + _f32(bootstrap) * value)


def q_target(reward, bootstrap, next_q_target):
    """DQN's target without double Q-learning `y = r + bootstrap * max_a Q_target(s', a)`.

    Args:
        reward, bootstrap: `[B]`.
        next_q_target: `[B, K]` target network at `s'`.

    Returns:
        `[B]` float32 targets (no gradient).
    """
    return jax.lax.stop_gradient(_f32(reward) + _f32(bootstrap) * jnp.max(_f32(next_q_target), axis=-1))


def huber(x, delta=1.0):
    """Elementwise Huber loss of a TD error: `0.5 x^2` for `|x| <= delta`, else `delta (|x| - 0.5 delta)`."""
    return optax.huber_loss(_f32(x), delta=delta)


def td_error_priorities(td_error, eps=1e-6):
    """Prioritised-replay priorities `|delta| + eps` (eps keeps every item sampleable); `[B]` float32."""
    return jnp.abs(_f32(td_error)) + eps


def importance_weights(probabilities, n_valid, beta):
    """Prioritised-replay importance weights (Schaul et al. 2016) `w_i = (N P(i))^-beta / max_j w_j`.

    The maximum is over the sampled batch (as in Dopamine and SB3-contrib), so the largest weight is 1 and
    `N` cancels: `w_i = (P(i) / min_j P(j))^-beta`. It is kept in the formula for readability.

    Args:
        probabilities: `[B]` sampling probabilities of the sampled items (positive).
        n_valid: number of items in the buffer (scalar, may be traced).
        beta: exponent in [0, 1] (0: no correction, all weights 1; 1: full correction).

    Returns:
        `[B]` float32 weights in (0, 1].
    """
    log_np = jnp.log(_f32(n_valid)) + jnp.log(jnp.maximum(_f32(probabilities), jnp.finfo(jnp.float32).tiny))
    # (N P_i)^-beta / max_j (N P_j)^-beta, in log space so that a tiny probability cannot overflow to inf
    return jnp.exp(-_f32(beta) * (log_np - jnp.min(log_np)))


def linear_schedule(start, end, fraction):
    """Linear interpolation `start + (end - start) * clip(fraction, 0, 1)` (epsilon, beta annealing); float32."""
    return _f32(start) + (_f32(end) - _f32(start)) * jnp.clip(_f32(fraction), 0.0, 1.0)
