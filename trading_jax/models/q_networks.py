"""Networks of the off-policy agents (SAC, TD3, DDPG, DQN): actors, critics and Q networks.

Registered models (see `registry.create`); inputs are normalised observations `[B, obs]` (and actions
`[B, action_dim]` in `[-1, 1]` for the critics):

* ``"gaussian_actor"``: `GaussianActor`, SAC's policy: an MLP then two heads, the mean `[B, A]` and a
  state-dependent log-std `[B, A]` clipped to `[log_std_min, log_std_max]` (default [-20, 2], as SB3).
  Actions are `tanh(u)`, `u ~ N(mean, std)` (`trading_jax.rl.distributions.tanh_gaussian_log_prob`).
* ``"deterministic_actor"``: `DeterministicActor`, TD3 / DDPG's policy: an MLP then `tanh` -> `[B, A]` in [-1, 1].
* ``"critic_ensemble"``: `CriticEnsemble`, `n_critics` independent Q(s, a) MLPs on `concat(obs, action)`,
  evaluated in one call: output `[n_critics, B]` (SAC / TD3: 2 twin critics; DDPG: 1).
* ``"q_network"``: `QNetwork`, DQN's Q(s, .) for `action_dim` discrete actions: an MLP torso, then
  either one head `[B, A]` or, with `dueling`, a value stream `V [B, 1]` and an advantage stream `A [B, A]`
  combined as `Q = V + A - mean_a A` (Wang et al. 2016). With `n_atoms > 1` (C51) every head gives logits
  over `n_atoms` return atoms: output `[B, A, n_atoms]` (the dueling combination is applied to the logits, as
  in Rainbow).

Hidden layers are `Dense -> activation` with the default (lecun normal) init; default sizes [256, 256] relu,
the SB3 / SBX defaults. Presets: ``"tiny"`` (one hidden layer of 16) for tests, ``"small"`` ([64, 64]).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from trading_jax.models.registry import register

Array = jax.Array

__all__ = ["GaussianActor", "DeterministicActor", "CriticEnsemble", "QNetwork"]

_ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu, "elu": nn.elu}


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]


class _MLP(nn.Module):
    hidden: Sequence[int]
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x):
        act = _activation(self.activation)
        for size in self.hidden:
            x = nn.Dense(size)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        return x


class GaussianActor(nn.Module):
    """SAC's squashed-Gaussian policy network (module docstring). `[B, obs] -> {"mean", "log_std"}` `[B, A]`."""

    action_dim: int
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs) -> dict[str, Array]:
        x = _MLP(tuple(self.hidden), self.activation)(jnp.asarray(obs, jnp.float32))
        mean = nn.Dense(self.action_dim, name="mean")(x)
        log_std = jnp.clip(nn.Dense(self.action_dim, name="log_std")(x), self.log_std_min, self.log_std_max)
        return {"mean": mean, "log_std": log_std}


class DeterministicActor(nn.Module):
    """TD3 / DDPG's policy network: `[B, obs] -> tanh(MLP) [B, A]` in [-1, 1]."""

    action_dim: int
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs) -> Array:
        x = _MLP(tuple(self.hidden), self.activation)(jnp.asarray(obs, jnp.float32))
        return jnp.tanh(nn.Dense(self.action_dim, name="action")(x))


class _Critic(nn.Module):
    hidden: tuple[int, ...]
    activation: str
    layer_norm: bool

    @nn.compact
    def __call__(self, obs, action):
        x = jnp.concatenate([jnp.asarray(obs, jnp.float32), jnp.asarray(action, jnp.float32)], axis=-1)
        return nn.Dense(1, name="q")(_MLP(self.hidden, self.activation, self.layer_norm)(x))[..., 0]


class CriticEnsemble(nn.Module):
    """`n_critics` independent Q(s, a) MLPs: `(obs [B, obs], action [B, A]) -> [n_critics, B]`.

    The critics are separate modules (`critic_0`, `critic_1`, ...) whose outputs are stacked: on CPU, XLA runs
    two plain matmuls faster than one batched matmul over a stacked critic axis (`nn.vmap`)."""

    n_critics: int = 2
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    layer_norm: bool = False
    action_dim: int | None = None  # unused (the action's width comes from the input); kept for `create`

    @nn.compact
    def __call__(self, obs, action) -> Array:
        return jnp.stack([_Critic(tuple(self.hidden), self.activation, self.layer_norm, name=f"critic_{i}")(obs, action)
                          for i in range(self.n_critics)])


class QNetwork(nn.Module):
    """DQN's Q network (module docstring): `[B, obs] -> [B, A]` (or `[B, A, n_atoms]` logits with C51)."""

    action_dim: int
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    dueling: bool = False
    n_atoms: int = 1

    @nn.compact
    def __call__(self, obs) -> Array:
        x = _MLP(tuple(self.hidden), self.activation)(jnp.asarray(obs, jnp.float32))
        shape = (self.action_dim, self.n_atoms) if self.n_atoms > 1 else (self.action_dim,)
        width = self.action_dim * max(self.n_atoms, 1)
        advantage = nn.Dense(width, name="advantage")(x).reshape(x.shape[:-1] + shape)
        if not self.dueling:
            return advantage
        value_shape = (1, self.n_atoms) if self.n_atoms > 1 else (1,)
        value = nn.Dense(max(self.n_atoms, 1), name="value")(x).reshape(x.shape[:-1] + value_shape)
        return value + advantage - jnp.mean(advantage, axis=-2 if self.n_atoms > 1 else -1, keepdims=True)


_PRESETS = {"tiny": dict(hidden=(16,)), "small": dict(hidden=(64, 64))}


def _tuples(cfg: dict[str, Any]) -> dict[str, Any]:
    """Lists become tuples (hashable modules); an unknown activation is refused when the network is built."""
    if "activation" in cfg:
        _activation(cfg["activation"])
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


@register("gaussian_actor", presets=_PRESETS)
def gaussian_actor(*, action_dim: int, discrete: bool = False, **cfg: Any) -> GaussianActor:
    """`GaussianActor(action_dim, **cfg)` (continuous actions only)."""
    if discrete:
        raise ValueError("gaussian_actor is for continuous (Box) actions; use q_network for discrete ones")
    return GaussianActor(action_dim=action_dim, **_tuples(cfg))


@register("deterministic_actor", presets=_PRESETS)
def deterministic_actor(*, action_dim: int, discrete: bool = False, **cfg: Any) -> DeterministicActor:
    """`DeterministicActor(action_dim, **cfg)` (continuous actions only)."""
    if discrete:
        raise ValueError("deterministic_actor is for continuous (Box) actions; use q_network for discrete ones")
    return DeterministicActor(action_dim=action_dim, **_tuples(cfg))


@register("critic_ensemble", presets=_PRESETS)
def critic_ensemble(*, action_dim: int | None = None, discrete: bool = False, **cfg: Any) -> CriticEnsemble:
    """`CriticEnsemble(**cfg)`: Q(s, a) critics for continuous actions."""
    del discrete
    return CriticEnsemble(action_dim=action_dim, **_tuples(cfg))


@register("q_network", presets=_PRESETS)
def q_network(*, action_dim: int, discrete: bool = True, **cfg: Any) -> QNetwork:
    """`QNetwork(action_dim, **cfg)` (discrete actions only)."""
    if not discrete:
        raise ValueError("q_network is for discrete actions; use gaussian_actor / deterministic_actor with "
                         "critic_ensemble for continuous ones")
    return QNetwork(action_dim=action_dim, **_tuples(cfg))
