"""The DQN family (Mnih et al. 2015), up to Rainbow without noisy nets, end to end under `jit` on the shared
off-policy loop.

    config = DQNConfig(env="trading", total_timesteps=50_000, n_step=3, prioritized=True,
                       network_kwargs={"hidden": [64, 64]})
    result = make_train(config)(jax.random.key(0))                       # OffPolicyResult
    results = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.key(0), 8))   # 8 seeds
    grid = hyperparam_grid(config.hyperparams(), lr=[1e-4, 3e-4, 1e-3])
    results = jax.vmap(make_train(config))(jax.random.split(key, 3), grid)                   # 3 learning rates

**Rainbow's parts** (Hessel et al. 2018), each a switch:

- double Q-learning (`double`, van Hasselt et al. 2016): the online network picks the next action, the target
  network values it;
- dueling heads (`dueling`, Wang et al. 2016): `Q = V + A - mean_a A` (`trading_jax.models.q_networks`);
- n-step returns (`n_step` of the shared config, `trading_jax.rl.replay`);
- prioritised replay (`prioritized`, Schaul et al. 2016) with importance weights;
- C51 distributional Q-learning (`n_atoms > 1`, Bellemare et al. 2017) on `n_atoms` atoms from `v_min` to
  `v_max` (`trading_jax.rl.distributional`).

Not there: noisy nets. Exploration is epsilon-greedy instead, SB3's schedule: epsilon falls linearly from
`exploration_initial_eps` to `exploration_final_eps` over the first `exploration_fraction` of the run (the
loop's `progress`, the fraction of the post-warm-up env steps done; the warm-up itself plays uniformly random
actions), then stays there.

The loop (warm-up, env steps, replay, n-step windows, prioritised sampling, truncation bootstrapped through
`final_observation`) is `trading_jax.rl.offpolicy`'s. One gradient step on a batch `(s, a, r, b, s')` with
importance weights `w` (`b` the bootstrap multiplier: `gamma^n`, or 0 after a termination):

1. **Target** (constant), with the online network `Q` and the target network `Q'` at `s'`:
   `y = r + b * Q'(s', argmax_a Q(s', a))` (double), or `y = r + b * max_a Q'(s', a)`.
   C51: the target distribution is the projection of `r + b Z'(s', a*)` onto the atoms, `a*` picked by the
   expected values (of `Q` when double, of `Q'` otherwise).
2. **Loss**: `L = mean_i(w_i l_i)` with `l_i = huber(Q(s_i, a_i) - y_i)` (SB3's smooth L1, delta 1) or
   `(Q(s_i, a_i) - y_i)^2` (`loss="mse"`); C51: `l_i = -sum_j m_ij log p_j(s_i, a_i)`, the cross-entropy to
   the projected target `m`. The new priorities' base is `|Q - y|`, or the cross-entropy `l_i` for C51 (as
   in Rainbow).
3. **Step**: gradient clipped to global norm `max_grad_norm`, then Adam (lr `hparams.lr`).
4. **Target network**: `Q' <- tau Q + (1 - tau) Q'` every `target_update_interval` gradient steps (with
   `tau = 1`, the default, a hard copy as in SB3's DQN).

Actions: discrete only (a gymnax `Discrete(n)` space); the trading env with several assets in discrete mode
(a `MultiDiscrete`) and continuous spaces are refused with a pointer to what fits. The greedy policy is
`argmax_a Q(s, a)`; the stochastic one is epsilon-greedy at `exploration_final_eps`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from trading_jax.loop import hyperparam_grid as _grid
from trading_jax.rl import offpolicy
from trading_jax.rl.distributional import atoms, categorical_double_q_target, categorical_loss, categorical_q_values
from trading_jax.rl.offpolicy import OffPolicyConfig, OffPolicyResult, PolicyParams
from trading_jax.rl.targets import double_q_target, huber, linear_schedule, polyak_update, q_target

__all__ = ["DQNConfig", "DQNHyperparams", "DQNLearner", "OffPolicyResult", "PolicyParams", "hyperparam_grid",
           "make_train", "make_trainer", "make_policy", "as_policy", "make_evaluator", "evaluate",
           "member_policy_fn", "train_agents", "build_agent", "discrete_actions", "epsilon", "METRIC_NAMES",
           "LOSSES"]

METRIC_NAMES: tuple[str, ...] = ("q_loss", "q_mean", "epsilon")
LOSSES: tuple[str, ...] = ("huber", "mse")


@struct.dataclass
class DQNHyperparams:
    """The vmappable hyperparameters (float32 scalars, or `[n]` arrays for a grid under `vmap`)."""

    lr: Any
    gamma: Any
    tau: Any


def hyperparam_grid(base: DQNHyperparams, **values) -> DQNHyperparams:
    """A grid for `jax.vmap(train)(keys, grid)` (`trading_jax.loop.hyperparam_grid`)."""
    return _grid(base, **values)


@dataclasses.dataclass(frozen=True)
class DQNConfig(OffPolicyConfig):
    """DQN settings: `OffPolicyConfig`'s (env, sizes, replay, gamma, n_step, prioritized, ...) and

    Attributes:
        lr: Adam learning rate (SB3's 1e-4).
        double: double Q-learning targets.
        dueling: dueling value / advantage heads.
        n_atoms: 1 for scalar Q-values; > 1 for C51 with `n_atoms` atoms evenly spaced on `[v_min, v_max]`
            (Rainbow's 51).
        v_min, v_max: the C51 support (in units of the scaled reward's returns).
        exploration_initial_eps, exploration_final_eps, exploration_fraction: epsilon falls linearly from the
            first to the second over this fraction of the run (SB3's 1.0, 0.05, 0.1).
        target_update_interval: gradient steps between target-network updates `Q' <- tau Q + (1 - tau) Q'`.
        max_grad_norm: the gradient's global norm is clipped to this (SB3's 10).
        loss: `"huber"` (SB3's smooth L1) or `"mse"`; C51 always uses the cross-entropy.
        network: the Q network (`"q_network"`, built with `dueling` and `n_atoms`; sizes in `network_kwargs`).

    Defaults follow SB3's DQN where the shared loop allows: lr 1e-4, gamma 0.99, tau 1 (hard copies),
    epsilon 1 -> 0.05 over 10% of the run, max_grad_norm 10, smooth L1, networks [256, 256] relu (here the
    `q_network` default). SB3 copies the target every 10,000 env steps with one gradient step per 4 env steps
    (2,500 gradient steps); here `target_update_interval` counts gradient steps and defaults to 1,000 (4,000 env
    steps at the shared default of 4 envs and 1 gradient step per vectorised step, update-to-data 1/4), so that
    a 100,000-step run (the shared default) refreshes its target about 25 times rather than 10. The replay
    sizes (buffer 1e5, batch 256, learning_starts 1,000) are the shared config's (SB3: 1e6, 32, 100).
    """

    tau: float = 1.0
    lr: float = 1e-4
    double: bool = True
    dueling: bool = True
    n_atoms: int = 1
    v_min: float = -10.0
    v_max: float = 10.0
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.05
    exploration_fraction: float = 0.1
    target_update_interval: int = 1000
    max_grad_norm: float = 10.0
    loss: str = "huber"
    network: str = "q_network"

    @property
    def distributional(self) -> bool:
        """C51 (categorical returns) rather than scalar Q-values."""
        return int(self.n_atoms) > 1

    def hyperparams(self) -> DQNHyperparams:
        return DQNHyperparams(lr=jnp.float32(self.lr), gamma=jnp.float32(self.gamma), tau=jnp.float32(self.tau))

    def validate(self) -> None:
        super().validate()
        for name in ("lr", "max_grad_norm"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        for name in ("exploration_initial_eps", "exploration_final_eps"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not (0.0 < float(self.exploration_fraction) <= 1.0):
            raise ValueError(f"exploration_fraction must be in (0, 1], got {self.exploration_fraction}")
        if int(self.target_update_interval) < 1:
            raise ValueError(f"target_update_interval must be >= 1, got {self.target_update_interval}")
        if int(self.n_atoms) < 1:
            raise ValueError(f"n_atoms must be >= 1 (1: scalar Q-values, > 1: C51), got {self.n_atoms}")
        if self.distributional and not (math.isfinite(self.v_min) and math.isfinite(self.v_max)
                                        and self.v_min < self.v_max):
            raise ValueError(f"C51 needs finite v_min < v_max, got v_min={self.v_min}, v_max={self.v_max}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        clash = sorted({"dueling", "n_atoms", "action_dim"} & set(self.network_kwargs))
        if clash:
            raise ValueError(f"network_kwargs must not set {clash}: they are DQNConfig fields (or the env's)")


class DQNLearner(NamedTuple):
    """DQN's learner state: the Q network, its target copy, the optimiser state, the gradient-step count."""

    params: Any
    target: Any
    opt: Any
    steps: jax.Array


def discrete_actions(space) -> int:
    """The number of actions of a gymnax `Discrete(n)` space (one-line ValueError for anything else)."""
    shape = tuple(getattr(space, "shape", ()) or ())
    if not hasattr(space, "n") or shape != ():
        raise ValueError(f"DQN needs one discrete action (a Discrete(n) space); the env's action space is {space}: "
                         "use SAC, TD3 or DDPG with the env's continuous action mode, or PPO for several "
                         "discrete actions (MultiDiscrete)")
    return int(space.n)


def epsilon(config: DQNConfig, progress):
    """SB3's linear epsilon schedule: `initial -> final` over the first `exploration_fraction` of the run.

    Args:
        config: the settings.
        progress: scalar in [0, 1], the fraction of the run done (may be traced).

    Returns:
        Scalar float32 epsilon.
    """
    return linear_schedule(config.exploration_initial_eps, config.exploration_final_eps,
                           jnp.asarray(progress, jnp.float32) / config.exploration_fraction)


def _network(config: DQNConfig, n_actions: int):
    from trading_jax.models import create

    return create(config.network, config.network_preset, action_dim=n_actions, discrete=True,
                  dueling=bool(config.dueling), n_atoms=int(config.n_atoms), **dict(config.network_kwargs))


def build_agent(config: DQNConfig, env, env_params):
    """`(Agent, default DQNHyperparams)` for `env` (which must have a `Discrete(n)` action space)."""
    n_actions = discrete_actions(env.action_space(env_params))
    net = _network(config, n_actions)
    c51 = config.distributional
    support = atoms(config.v_min, config.v_max, int(config.n_atoms)) if c51 else None

    def optimiser(hp):
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(hp.lr))

    def q_values(params, nobs):
        """`[B, A]` Q-values (C51: the expected values of the categorical returns)."""
        out = net.apply({"params": params}, nobs)
        return categorical_q_values(out, support) if c51 else out

    def greedy(params, nobs):
        return jnp.argmax(q_values(params, nobs), axis=-1).astype(jnp.int32)

    def epsilon_greedy(params, nobs, key, eps):
        k_coin, k_random = jax.random.split(key)
        best = greedy(params, nobs)
        coin = jax.random.uniform(k_coin, best.shape) < eps
        return jnp.where(coin, random_action(k_random, best.shape[0]), best)

    def init(key, obs_size, hp):
        params = net.init(key, jnp.zeros((1, obs_size), jnp.float32))["params"]
        return DQNLearner(params, params, optimiser(hp).init(params), jnp.zeros((), jnp.int32))

    def explore(learner, nobs, key, hp, progress):
        del hp
        return epsilon_greedy(learner.params, nobs, key, epsilon(config, progress))

    def scalar_loss(params, batch, weights, learner):
        """Per-item `[B]` losses, TD errors and the taken actions' Q-values for scalar Q-learning."""
        next_target = net.apply({"params": learner.target}, batch.next_obs)
        if config.double:
            y = double_q_target(batch.reward, batch.bootstrap, net.apply({"params": learner.params}, batch.next_obs),
                                next_target)
        else:
            y = q_target(batch.reward, batch.bootstrap, next_target)
        q = jnp.take_along_axis(net.apply({"params": params}, batch.obs), batch.action[:, None], axis=-1)[:, 0]
        td = q - y
        per_item = huber(td) if config.loss == "huber" else jnp.square(td)
        return jnp.mean(weights * per_item), (jnp.abs(td), q)

    def categorical_item_loss(params, batch, weights, learner):
        """Per-item cross-entropies to the projected target distribution, and the taken actions' Q-values."""
        next_target = net.apply({"params": learner.target}, batch.next_obs)
        chooser = net.apply({"params": learner.params}, batch.next_obs) if config.double else next_target
        m = categorical_double_q_target(batch.reward, batch.bootstrap, chooser, next_target, support)
        logits = jnp.take_along_axis(net.apply({"params": params}, batch.obs), batch.action[:, None, None],
                                     axis=1)[:, 0]                                           # [B, N]
        ce = categorical_loss(logits, m)
        q = jnp.sum(jax.nn.softmax(logits, axis=-1) * support, axis=-1)
        return jnp.mean(weights * ce), (jax.lax.stop_gradient(ce), q)

    loss_fn = categorical_item_loss if c51 else scalar_loss

    def update(learner: DQNLearner, batch, weights, key, hp, progress):
        del key
        batch = batch._replace(action=batch.action.reshape(-1).astype(jnp.int32))
        (loss, (td_abs, q)), grad = jax.value_and_grad(loss_fn, has_aux=True)(learner.params, batch, weights,
                                                                               learner)
        step, opt = optimiser(hp).update(grad, learner.opt, learner.params)
        params = optax.apply_updates(learner.params, step)
        steps = learner.steps + 1
        tau = jnp.where(steps % config.target_update_interval == 0, hp.tau, 0.0)
        target = polyak_update(learner.target, params, tau)
        metrics = {"q_loss": loss, "q_mean": jnp.mean(q), "epsilon": epsilon(config, progress)}
        return DQNLearner(params, target, opt, steps), metrics, td_abs

    def act(params, nobs, key, deterministic):
        if deterministic:
            return greedy(params, nobs)
        return epsilon_greedy(params, nobs, key, jnp.float32(config.exploration_final_eps))

    def random_action(key, n):
        return jax.random.randint(key, (n,), 0, n_actions, jnp.int32)

    agent = offpolicy.Agent(init=init, explore=explore, update=update, act=act, acting_params=lambda s: s.params,
                            to_env=lambda a: a, random_action=random_action, action_shape=(),
                            action_dtype=jnp.int32, metric_names=METRIC_NAMES, model=net)
    return agent, config.hyperparams()


(make_trainer, make_train, make_policy, as_policy, make_evaluator, evaluate, member_policy_fn,
 train_agents) = offpolicy.algorithm_functions(build_agent)
