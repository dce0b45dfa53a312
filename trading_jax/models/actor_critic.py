"""Actor-critic networks for PPO: an MLP (separate or shared torso) and a one-step LSTM.

Registered models (see `registry.create`):

* ``"actor_critic"``: `ActorCritic`, input `[B, obs]`. Layers: an optional shared torso `torso`, then a
  policy MLP `actor_hidden` and a value MLP `critic_hidden` (each `Dense -> activation`), then the heads.
  Default: no shared torso, two separate hidden layers of 64, tanh (the CleanRL / PureJaxRL PPO network).
  Orthogonal init with gain sqrt(2) for hidden layers, 0.01 for the policy head, 1.0 for the value head,
  zero biases. Outputs a dict: ``{"logits": [B, action_dim], "value": [B]}`` when `discrete`, else
  ``{"mean": [B, action_dim], "log_std": [B, action_dim], "value": [B]}`` with a state-independent
  `log_std` parameter (initialised to `log_std_init`).
  Presets: ``"seed"``, seed 000's `ExecutionPolicyNetwork` (shared `Linear(256) ReLU Linear(256) ReLU`,
  then actor `Linear(128) ReLU Linear(action_dim)` and critic `Linear(128) ReLU Linear(1)`; the seed's
  `action_dim = 10` is the execution env's `Discrete(10)`, taken from the env by PPO); ``"tiny"`` (one
  separate hidden layer of 16) for tests.
* ``"actor_critic_lstm"``: `ActorCriticLSTM`, one recurrent step: `apply(params, carry, x, reset)` with
  `x [B, obs]`, `carry = (h, c)` each `[B, hidden]` float32 and `reset [B]` bool (zero the carry of the
  envs whose episode starts at this observation) returns `(new_carry, outputs)` with the same outputs as
  `ActorCritic`. Structure: `Dense(hidden) tanh -> LSTM cell (trading_jax.models.recurrent.lstm_cell_step,
  gates i, f, g, o, forget bias 1) -> actor / critic MLPs -> heads`. `ActorCriticLSTM.initial_carry(B,
  hidden)` gives zeros. PPO rolls it out one step at a time and replays whole env sequences in the update.
  Presets: ``"tiny"`` (hidden 16).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from trading_jax.models.recurrent import forget_bias_init, lstm_cell_step
from trading_jax.models.registry import register

Array = jax.Array

__all__ = ["ActorCritic", "ActorCriticLSTM", "actor_critic", "actor_critic_lstm"]

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {"tanh": jnp.tanh, "relu": nn.relu, "gelu": nn.gelu}


def _dense(features: int, gain: float, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.orthogonal(gain), bias_init=nn.initializers.zeros, name=name)


def _mlp(x, sizes: Sequence[int], act, prefix: str):
    for i, size in enumerate(sizes):
        x = act(_dense(size, math.sqrt(2.0), name=f"{prefix}_{i}")(x))
    return x


class _Heads(nn.Module):
    """Actor and critic MLPs and heads on a feature vector (shared by both networks)."""

    action_dim: int
    discrete: bool
    actor_hidden: tuple[int, ...]
    critic_hidden: tuple[int, ...]
    activation: str
    log_std_init: float

    @nn.compact
    def __call__(self, x) -> dict[str, Array]:
        act = _ACTIVATIONS[self.activation]
        a = _mlp(x, self.actor_hidden, act, "actor")
        v = _mlp(x, self.critic_hidden, act, "critic")
        value = _dense(1, 1.0, name="value_head")(v)[..., 0]
        if self.discrete:
            return {"logits": _dense(self.action_dim, 0.01, name="policy_head")(a), "value": value}
        mean = _dense(self.action_dim, 0.01, name="policy_head")(a)
        log_std = self.param("log_std", nn.initializers.constant(self.log_std_init), (self.action_dim,))
        return {"mean": mean, "log_std": jnp.broadcast_to(log_std, mean.shape), "value": value}


class ActorCritic(nn.Module):
    """MLP actor-critic (module docstring). Input `[B, obs]`."""

    action_dim: int
    discrete: bool = True
    torso: tuple[int, ...] = ()
    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0

    @nn.compact
    def __call__(self, x) -> dict[str, Array]:
        x = jnp.asarray(x, jnp.float32)
        x = _mlp(x, self.torso, _ACTIVATIONS[self.activation], "torso")
        return _Heads(self.action_dim, self.discrete, tuple(self.actor_hidden), tuple(self.critic_hidden),
                      self.activation, self.log_std_init, name="heads")(x)


class ActorCriticLSTM(nn.Module):
    """One-step LSTM actor-critic with an explicit carry (module docstring)."""

    action_dim: int
    discrete: bool = True
    hidden: int = 64
    actor_hidden: tuple[int, ...] = (64,)
    critic_hidden: tuple[int, ...] = (64,)
    activation: str = "tanh"
    log_std_init: float = 0.0

    @staticmethod
    def initial_carry(batch: int, hidden: int) -> tuple[Array, Array]:
        """Zero `(h, c)`, each `[batch, hidden]` float32."""
        zeros = jnp.zeros((batch, hidden), jnp.float32)
        return zeros, zeros

    @nn.compact
    def __call__(self, carry, x, reset=None):
        x = jnp.asarray(x, jnp.float32)
        h, c = carry
        if reset is not None:
            keep = 1.0 - jnp.asarray(reset, jnp.float32)[:, None]
            h, c = h * keep, c * keep
        x = jnp.tanh(_dense(self.hidden, math.sqrt(2.0), name="embed")(x))
        w_x = self.param("w_x", nn.initializers.lecun_normal(), (self.hidden, 4 * self.hidden))
        w_h = self.param("w_h", nn.initializers.orthogonal(), (self.hidden, 4 * self.hidden))
        b = self.param("b", forget_bias_init(1.0), (4 * self.hidden,))
        (h, c), y = lstm_cell_step(w_h, (h, c), x @ w_x + b)
        out = _Heads(self.action_dim, self.discrete, tuple(self.actor_hidden), tuple(self.critic_hidden),
                     self.activation, self.log_std_init, name="heads")(y)
        return (h, c), out


@register(
    "actor_critic",
    presets={
        "seed": dict(torso=(256, 256), actor_hidden=(128,), critic_hidden=(128,), activation="relu"),
        "tiny": dict(actor_hidden=(16,), critic_hidden=(16,)),
    },
)
def actor_critic(*, action_dim: int, discrete: bool = True, **cfg: Any) -> ActorCritic:
    """`ActorCritic(action_dim, discrete, **cfg)`; sequences in `cfg` become tuples (hashable)."""
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    return ActorCritic(action_dim=action_dim, discrete=discrete, **cfg)


@register("actor_critic_lstm", presets={"tiny": dict(hidden=16, actor_hidden=(16,), critic_hidden=(16,))})
def actor_critic_lstm(*, action_dim: int, discrete: bool = True, **cfg: Any) -> ActorCriticLSTM:
    """`ActorCriticLSTM(action_dim, discrete, **cfg)`."""
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    return ActorCriticLSTM(action_dim=action_dim, discrete=discrete, **cfg)
