"""Data augmentation as pure functions of explicit keys: noise injection, mixup, FGSM adversarial inputs."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def gaussian_noise(key: jax.Array, x: jax.Array, std: float) -> jax.Array:
    """x + std * N(0, 1) noise of x's shape and dtype (seed 000: "noise_injection": 0.01)."""
    return x + (std * jax.random.normal(key, x.shape, jnp.float32)).astype(x.dtype)


def mixup_with(lam, permutation: jax.Array, x: jax.Array, y: Any) -> tuple[jax.Array, Any]:
    """Mixup for a given lambda and partner permutation:

        x' = lam x + (1 - lam) x[perm],   y' = lam y + (1 - lam) y[perm]   (every leaf of y).

    Classification targets must already be one-hot/probabilities (mixing integer labels is meaningless).
    """
    def mix(a):
        if jnp.issubdtype(a.dtype, jnp.integer):
            raise TypeError("mixup needs float targets: one-hot encode class labels first")
        return (lam * a + (1.0 - lam) * a[permutation]).astype(a.dtype)

    return mix(x), jax.tree.map(mix, y)


def mixup(key: jax.Array, x: jax.Array, y: Any, alpha: float) -> tuple[jax.Array, Any]:
    """Mixup (Zhang et al. 2018): one lam ~ Beta(alpha, alpha) per batch, partners a random permutation.

    Args:
        key: PRNG key.
        x: `[batch, ...]` inputs.
        y: targets pytree with the batch axis first (float; one-hot for classification).
        alpha: Beta parameter (seed 000: 0.2).
    """
    k_lam, k_perm = jax.random.split(key)
    lam = jax.random.beta(k_lam, alpha, alpha)
    return mixup_with(lam, jax.random.permutation(k_perm, x.shape[0]), x, y)


def fgsm(loss_of_x: Callable[[jax.Array], jax.Array], x: jax.Array, epsilon: float) -> jax.Array:
    """Fast gradient sign adversarial inputs: x_adv = x + eps * sign(grad_x L(x)), treated as a constant.

    Adversarial training (seed 002) then minimises L(x) + L(x_adv).
    """
    g = jax.grad(lambda v: loss_of_x(v).astype(jnp.float32))(x)
    return jax.lax.stop_gradient(x + (epsilon * jnp.sign(g)).astype(x.dtype))
