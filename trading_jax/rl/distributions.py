"""Action distributions: categorical and (tanh-squashed) diagonal Gaussian densities, and the policy's
distribution built from an env's action space (`ActionDistribution`), shared by every RL algorithm.

**Categorical** over `K` actions with logits `l` (`[..., K]`):

    log p(k) = l_k - logsumexp(l),        H = -sum_k p_k log p_k.

**Diagonal Gaussian** with mean `mu` and log-std `s` (`[..., D]`), summed over the last axis:

    log N(x; mu, e^s) = sum_i [-(x_i - mu_i)^2 / (2 e^{2 s_i}) - s_i - log(2 pi) / 2],
    H = sum_i [s_i + (1 + log(2 pi)) / 2].

**Tanh-squashed Gaussian** `a = tanh(u)`, `u ~ N(mu, e^s)`: by the change of variables, evaluated at the
pre-squash sample `u` (no `arctanh` of a saturated action),

    log p(a) = log N(u; mu, e^s) - sum_i log(1 - tanh(u_i)^2),
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))        (stable for large |u|).

**`ActionDistribution(space, kind="auto", squash="tanh")`**: categorical for a `Discrete` space (one
choice) or a `MultiDiscrete`-like space with a `shape` (N independent choices of `n`: logits
`[B, N * n]`, log-probs and entropies summed over the choices); Gaussian for a 1-D `Box`. The network's
output `out` is a dict: `out["logits"]` (categorical) or `out["mean"]` and `out["log_std"]` (Gaussian).
The *raw* action is the int choice or the pre-squash sample `u`; the env receives
`low + (a + 1) / 2 (high - low)` with `a = tanh(u)` (`squash="tanh"`, log-prob with the log-det Jacobian)
or `a = clip(u, -1, 1)` (`squash="clip"`, log-prob of the unclipped `u`). The constant log-det of the
affine map to the box is omitted (it cancels in likelihood ratios). `entropy` is the base Gaussian's
(the squashed one has no closed form).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ActionDistribution",
    "categorical_log_prob",
    "categorical_entropy",
    "gaussian_log_prob",
    "gaussian_entropy",
    "tanh_log_det_jacobian",
    "tanh_gaussian_log_prob",
]


def categorical_log_prob(logits, action):
    """`log softmax(logits)[action]`; logits `[..., K]`, action `[...]` int."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, jnp.asarray(action, jnp.int32)[..., None], axis=-1)[..., 0]


def categorical_entropy(logits):
    """`-sum_k p_k log p_k` over the last axis."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(mean, log_std, x):
    """Diagonal Gaussian log-density summed over the last axis."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z * z - log_std - _HALF_LOG_2PI, axis=-1)


def gaussian_entropy(log_std):
    """Diagonal Gaussian entropy `sum(log_std + 0.5 log(2 pi e))` over the last axis."""
    return jnp.sum(log_std + _HALF_LOG_2PI + 0.5, axis=-1)


def tanh_log_det_jacobian(u):
    """`sum log(1 - tanh(u)^2) = sum 2 (log 2 - u - softplus(-2u))` over the last axis (stable form)."""
    return jnp.sum(2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)


def tanh_gaussian_log_prob(mean, log_std, u):
    """Log-density of `a = tanh(u)`, `u ~ N(mean, std)`, at the pre-squash sample `u` (change of variables):

        log p(a) = log N(u; mean, std) - sum_i log(1 - tanh(u_i)^2)
    """
    return gaussian_log_prob(mean, log_std, u) - tanh_log_det_jacobian(u)


class ActionDistribution:
    """The policy's action distribution for an env's action space (module docstring).

    Args:
        space: the env's action space (gymnax `Discrete`/`Box`, or anything with `n` and/or `shape`,
            `low`, `high`).
        kind: "auto" (categorical for a space with `n`, Gaussian otherwise), "categorical" or "gaussian".
        squash: Gaussian only: "tanh" or "clip".

    Attributes:
        kind, squash, shape (the space's shape), discrete, action_dim (the network's output size:
        `n * prod(shape)` logits, or the Box's dimension), n (categorical), low / high (Gaussian).

    Raises:
        ValueError: an unknown kind or squash, or a space the kind cannot describe.
    """

    def __init__(self, space, kind: str = "auto", squash: str = "tanh"):
        if kind not in ("auto", "categorical", "gaussian"):
            raise ValueError(f"kind must be 'auto', 'categorical' or 'gaussian', got {kind!r}")
        if squash not in ("tanh", "clip"):
            raise ValueError(f"squash must be 'tanh' or 'clip', got {squash!r}")
        has_n = hasattr(space, "n")
        if kind == "auto":
            kind = "categorical" if has_n else "gaussian"
        self.kind = kind
        self.squash = squash
        self.shape = tuple(getattr(space, "shape", ()) or ())
        if kind == "categorical":
            if not has_n:
                raise ValueError(f"a categorical policy needs a Discrete action space, got {space!r}")
            self.n = int(space.n)
            self.action_dim = self.n * int(np.prod(self.shape, dtype=int))
            self.discrete = True
        else:
            if has_n or len(self.shape) != 1:
                raise ValueError(f"a Gaussian policy needs a 1-D Box action space, got {space!r}")
            self.action_dim = self.shape[0]
            self.discrete = False
            self.low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), self.shape)
            self.high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), self.shape)

    def action_logits(self, out):
        """Categorical logits shaped `[..., *shape, n]` (one row of n per independent choice)."""
        return self._logits(out)

    def _logits(self, out):
        logits = out["logits"]
        return logits.reshape(logits.shape[:-1] + self.shape + (self.n,))

    def _sum_choices(self, x):
        return jnp.sum(x, axis=tuple(range(x.ndim - len(self.shape), x.ndim))) if self.shape else x

    def to_env(self, raw):
        """The env's action for a raw action `[B, ...]` (identity for categorical; squash and rescale to the box)."""
        if self.discrete:
            return raw
        a = jnp.tanh(raw) if self.squash == "tanh" else jnp.clip(raw, -1.0, 1.0)
        return self.low + (a + 1.0) * 0.5 * (self.high - self.low)

    def log_prob(self, out, raw):
        """`[B]` log-probability of the raw actions under the network output `out`."""
        if self.discrete:
            return self._sum_choices(categorical_log_prob(self._logits(out), raw))
        if self.squash == "tanh":
            return tanh_gaussian_log_prob(out["mean"], out["log_std"], raw)
        return gaussian_log_prob(out["mean"], out["log_std"], raw)

    def entropy(self, out):
        """`[B]` entropy (the base Gaussian's for continuous actions)."""
        if self.discrete:
            return self._sum_choices(categorical_entropy(self._logits(out)))
        return gaussian_entropy(out["log_std"])

    def sample(self, out, key):
        """`(raw, log_prob)`: raw is the int action or the pre-squash Gaussian sample."""
        if self.discrete:
            raw = jax.random.categorical(key, self._logits(out), axis=-1).astype(jnp.int32)
        else:
            raw = out["mean"] + jnp.exp(out["log_std"]) * jax.random.normal(key, out["mean"].shape)
        return raw, self.log_prob(out, raw)

    def mode(self, out):
        """The most likely raw action: the argmax choice, or the Gaussian mean."""
        if self.discrete:
            return jnp.argmax(self._logits(out), axis=-1).astype(jnp.int32)
        return out["mean"]
