"""PPO end to end under `jit`: `make_train(config) -> train(key, hparams=None) -> PPOResult`.

    config = PPOConfig(env="trading", env_kwargs={"episode_length": 64}, total_timesteps=2**20)
    result = make_train(config)(jax.random.key(0))
    results = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.key(0), 8))  # 8 seeds
    grid = hyperparam_grid(config.hyperparams(), lr=[1e-4, 3e-4, 1e-3])
    results = jax.vmap(make_train(config))(jax.random.split(key, 3), grid)                  # 3 learning rates

One **update** (`config.num_updates` of them, `total_timesteps // (num_envs * num_steps)`):

1. *Rollout*: a `lax.scan` of `num_steps` steps over `num_envs` vectorised envs (`vmap(env.step)`, with
   the envs' own auto-reset). At each step the observation normaliser is updated with the batch of raw
   observations, which are then normalised and clipped to +-10 for the network; an action is sampled;
   the raw reward goes to the episode statistics and, scaled by the reward normaliser, to the learner.
2. *Bootstrap through truncation*: the value of `info["final_observation"]` (normalised like the
   observations) is used where a step ended an episode, the value of the next observation otherwise;
   `gae.gae` bootstraps it unless the step *terminated* (see `trading_jax.rl.gae`). A time-limit
   truncation is therefore not treated as a terminal state (PureJaxRL #20).
3. *Learning*: `update_epochs` epochs, each a fresh permutation of the `num_envs * num_steps` transitions
   cut into minibatches of `minibatch_size` (the seed's `batch_size = 64`; it must divide the batch) and
   one Adam step (eps 1e-5) per minibatch on the clipped PPO loss (`losses.ppo_loss`), after clipping the
   gradient's global norm to `max_grad_norm`. Advantages are normalised per minibatch. With
   `anneal_lr` the learning rate of update u is `lr * (1 - u / num_updates)`.
   *Recurrent* (`recurrent=True`, an LSTM policy): minibatches are whole env sequences, `max(1,
   minibatch_size // num_steps)` envs each (it must divide `num_envs`), replayed from the carry the
   rollout started with, resetting the carry at episode starts.

**Policies** (`policy="auto"`: categorical for `Discrete`/`MultiDiscrete`, Gaussian for `Box`;
`trading_jax.rl.distributions.ActionDistribution`).
Categorical: logits `[B, K]` (`[B, N*K]` for N independent choices). Gaussian: the network gives a mean
and a state-independent log-std; `u ~ N(mean, std)` is stored, and the env receives
`low + (a + 1) / 2 * (high - low)` with `a = tanh(u)` (`squash="tanh"`: log-prob with the log-det
Jacobian, `distributions.tanh_gaussian_log_prob`) or `a = clip(u, -1, 1)` (`squash="clip"`: log-prob of the
unclipped `u`). The constant log-det of the affine map to the box cancels in the PPO ratio and is
omitted. The entropy bonus uses the base Gaussian's entropy (the tanh-squashed one has no closed form).

**Randomness** (DESIGN.md principle 6): `key -> (params, env resets, updates)`; update u draws from
`jax.random.fold_in(state.key, u)`, so `make_trainer`'s `run` can be chunked arbitrarily and
`result(run(init(k), num_updates)) == train(k)` bit for bit.

**Data parallel**: with `mesh` (a 1-D mesh with a "data" axis, `trading_jax.parallel.make_mesh`), every
array with an env axis (env states, observations, the rollout) and every minibatch is constrained to
`NamedSharding(mesh, P("data"))` on that axis, params and optimiser state are replicated, and XLA's
SPMD partitioner inserts the all-reduces of the gradient and of the normaliser statistics. The maths is
that of one device, so results agree up to float reassociation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import PartitionSpec as P

from trading_jax import parallel
from trading_jax.features.normalize import NormalizerState
from trading_jax.loop import FunctionTrainer, hyperparam_grid as _grid, train_population
from trading_jax.rl.distributions import ActionDistribution
from trading_jax.evaluation.rollout import RecurrentPolicy, default_max_steps, rollout
from trading_jax.rl.gae import bootstrap_values, gae
from trading_jax.rl.losses import explained_variance, ppo_loss
from trading_jax.rl.normalizers import (RewardNormState, obs_norm_apply, obs_norm_init, obs_norm_update,
                                        reward_norm_init, reward_norm_update)

Array = jax.Array

__all__ = [
    "train_agents",
    "ppo_policy_fn",
    "PPOConfig",
    "PPOHyperparams",
    "PPOState",
    "PPOResult",
    "PPOTrainer",
    "PolicyParams",
    "hyperparam_grid",
    "make_train",
    "make_trainer",
    "make_policy", "make_inference",
    "as_policy",
    "evaluate",
    "make_evaluator",
    "METRIC_NAMES",
]

METRIC_NAMES: tuple[str, ...] = (
    "episode_return", "episode_count", "episode_length", "policy_loss", "value_loss", "entropy", "approx_kl",
    "clip_fraction", "explained_variance", "learning_rate",
)
_HPARAM_FIELDS = ("lr", "gamma", "gae_lambda", "clip_eps", "vf_coef", "ent_coef", "max_grad_norm")


# ------------------------------------------------------------------------------------- config


@struct.dataclass
class PPOHyperparams:
    """The vmappable hyperparameters (float32 scalars, or `[n]` arrays for a grid under `vmap`)."""

    lr: Any
    gamma: Any
    gae_lambda: Any
    clip_eps: Any
    vf_coef: Any
    ent_coef: Any
    max_grad_norm: Any


def hyperparam_grid(base: PPOHyperparams, **values) -> PPOHyperparams:
    """A grid for `jax.vmap(train)(keys, grid)` or `trainer.population(n)`: `trading_jax.loop.hyperparam_grid`
    (the given fields take the listed values, the others are `base`'s repeated; float32 `[n]` leaves)."""
    return _grid(base, **values)


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO settings (seed 000's defaults). Derived sizes are properties; never edit a config in place.

    Attributes:
        env, env_kwargs: `trading_jax.envs.make(env, **env_kwargs)` builds the environment.
        num_envs: parallel environments.
        num_steps: steps per env per update (the rollout length).
        total_timesteps: env steps of the whole run; `num_updates = total_timesteps // (num_envs * num_steps)`.
        update_epochs: passes over each rollout.
        minibatch_size: transitions per gradient step (must divide `num_envs * num_steps`); recurrent:
            `max(1, minibatch_size // num_steps)` whole env sequences per step.
        gamma, gae_lambda, clip_eps, vf_coef (c1), ent_coef (c2), lr, max_grad_norm: `hyperparams()`.
        anneal_lr: linear decay of the learning rate to 0 over the updates.
        clip_value: clip the value update to `+-clip_eps` around the rollout's values.
        normalize_advantages, normalize_observations, normalize_rewards: see the module docstring.
        obs_clip, reward_clip: clip of the normalised observations / rewards.
        policy: "auto", "categorical" or "gaussian".
        squash: Gaussian actions: "tanh" or "clip".
        network, network_preset, network_kwargs: `trading_jax.models.create(network, preset, ...)`;
            `action_dim` and `discrete` come from the env's action space.
        recurrent: an LSTM policy; the default network becomes "actor_critic_lstm".
        adam_eps: Adam's epsilon.
    """

    env: str = "trading"
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    num_envs: int = 16
    num_steps: int = 2048
    total_timesteps: int = 1_000_000
    update_epochs: int = 10
    minibatch_size: int = 64
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    vf_coef: float = 1.0
    ent_coef: float = 0.01
    lr: float = 3e-4
    max_grad_norm: float = 0.5
    anneal_lr: bool = True
    clip_value: bool = True
    normalize_advantages: bool = True
    normalize_observations: bool = True
    normalize_rewards: bool = True
    obs_clip: float = 10.0
    reward_clip: float = 10.0
    policy: str = "auto"
    squash: str = "tanh"
    network: str = "actor_critic"
    network_preset: str | None = None
    network_kwargs: Mapping[str, Any] = field(default_factory=dict)
    recurrent: bool = False
    adam_eps: float = 1e-5

    def replace(self, **changes) -> "PPOConfig":
        return dataclasses.replace(self, **changes)

    @property
    def batch_size(self) -> int:
        """Transitions per update, `num_envs * num_steps`."""
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size

    @property
    def envs_per_minibatch(self) -> int:
        """Recurrent only: whole env sequences per minibatch."""
        return max(1, self.minibatch_size // self.num_steps)

    @property
    def num_minibatches(self) -> int:
        if self.recurrent:
            return self.num_envs // self.envs_per_minibatch
        return self.batch_size // self.minibatch_size

    @property
    def network_name(self) -> str:
        return "actor_critic_lstm" if self.recurrent and self.network == "actor_critic" else self.network

    def hyperparams(self) -> PPOHyperparams:
        """The config's vmappable hyperparameters as float32 scalars."""
        return PPOHyperparams(**{f: jnp.asarray(getattr(self, f), jnp.float32) for f in _HPARAM_FIELDS})

    def validate(self) -> None:
        """Raise ValueError for inconsistent sizes or unknown choices."""
        for name in ("num_envs", "num_steps", "update_epochs", "minibatch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_updates < 1:
            raise ValueError(f"total_timesteps={self.total_timesteps} is less than one update of num_envs * num_steps "
                             f"= {self.batch_size} transitions")
        if self.recurrent:
            if self.num_envs % self.envs_per_minibatch:
                raise ValueError(f"recurrent PPO: num_envs={self.num_envs} is not divisible by the "
                                 f"{self.envs_per_minibatch} env sequences per minibatch")
        elif self.batch_size % self.minibatch_size:
            raise ValueError(f"minibatch_size={self.minibatch_size} does not divide num_envs * num_steps = {self.batch_size}")
        if self.policy not in ("auto", "categorical", "gaussian"):
            raise ValueError(f"policy must be 'auto', 'categorical' or 'gaussian', got {self.policy!r}")
        if self.squash not in ("tanh", "clip"):
            raise ValueError(f"squash must be 'tanh' or 'clip', got {self.squash!r}")


# --------------------------------------------------------------------------------- state / result


class PolicyParams(NamedTuple):
    """What `act` needs: network params and the observation normaliser's running moments."""

    params: Any
    obs_norm: NormalizerState


class PPOResult(NamedTuple):
    """What `train(key)` returns.

    Attributes:
        params: final network params.
        obs_norm: the observation normaliser's `NormalizerState` (`trading_jax.rl.normalizers`; needed to act,
            unused when `normalize_observations=False`).
        metrics: dict of per-update `[num_updates]` float32 arrays, `METRIC_NAMES`: "episode_return"
            (mean raw return of the episodes completed during the update, 0 when none), "episode_count",
            "episode_length", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction" (means
            over the update's epochs and minibatches), "explained_variance" (of the rollout's values for
            the GAE returns), "learning_rate".
    """

    params: Any
    obs_norm: NormalizerState
    metrics: dict


class PPOState(NamedTuple):
    """The whole training state between updates (a pytree: checkpoint it to resume exactly).

    Attributes:
        params, opt_state: network params and Adam state.
        env_state: the `num_envs` env states (leading axis `num_envs`).
        obs: `[num_envs, obs]` raw current observations.
        episode_start: `[num_envs]` bool, the current observation starts an episode (LSTM carry reset).
        rnn: the LSTM carry `(h, c)` `[num_envs, hidden]` (recurrent), else `()`.
        obs_norm: `NormalizerState` of the observations (`normalizers.obs_norm_*`).
        reward_norm: `normalizers.RewardNormState`.
        episode_return, episode_length: `[num_envs]` running raw return / length of the current episodes.
        key: PRNG key of the updates; update u uses `fold_in(key, u)`.
        update: int32, updates completed.
        hparams: `PPOHyperparams` of this run.
        metrics: per-update `[num_updates]` buffers as in `PPOResult.metrics` (0 for updates not run).
    """

    params: Any
    opt_state: Any
    env_state: Any
    obs: Array
    episode_start: Array
    rnn: Any
    obs_norm: NormalizerState
    reward_norm: RewardNormState
    episode_return: Array
    episode_length: Array
    key: Array
    update: Array
    hparams: PPOHyperparams
    metrics: dict


PPOTrainer = FunctionTrainer
"""PPO as a `trading_jax.loop.FunctionTrainer` (see `make_trainer`): `init(key, hparams=None, env_params=None)`,
`run(state, n_updates, env_params=None) -> (state, metrics [n_updates])`, `result(state) -> PPOResult`,
`train(key, hparams=None, env_params=None)`, `population(M)`; `trainer.env` and `trainer.env_params` are the
environment it was built with."""


# ------------------------------------------------------------------------------------ building


def _env(config: PPOConfig, env, env_params):
    if env is None:
        from trading_jax.envs import make

        env, default_params = make(config.env, **dict(config.env_kwargs))
        env_params = default_params if env_params is None else env_params
    elif env_params is None:
        env_params = env.default_params
    return env, env_params


def _distribution(config: PPOConfig, space) -> ActionDistribution:
    return ActionDistribution(space, kind=config.policy, squash=config.squash)


def _model(config: PPOConfig, policy: ActionDistribution):
    from trading_jax.models import create

    return create(config.network_name, config.network_preset, action_dim=policy.action_dim,
                  discrete=policy.discrete, **dict(config.network_kwargs))


def _hidden_size(model) -> int:
    return int(model.hidden)


def _normalizer(config: PPOConfig):
    if config.normalize_observations:
        return lambda rms, x: obs_norm_apply(rms, x, clip=config.obs_clip)
    return lambda rms, x: jnp.asarray(x, jnp.float32)


def _check_mesh(config: PPOConfig, mesh):
    """The mesh (`mesh`, else the active one of `parallel.use_mesh`), after checking that the env batch (and a
    feed-forward minibatch) splits over its "data" axis."""
    mesh = parallel.active_mesh() if mesh is None else mesh
    if mesh is not None:
        parallel.check_divisible(mesh, num_envs=config.num_envs)
        if not config.recurrent:
            parallel.check_divisible(mesh, minibatch_size=config.minibatch_size)
    return mesh


def make_train(config: PPOConfig, env=None, env_params=None, mesh=None):
    """Build `train(key, hparams=None, env_params=None) -> PPOResult` (module docstring).

    `train` is jittable and vmappable: `jax.jit(jax.vmap(train))(keys)` trains one agent per key and
    `jax.vmap(train)(keys, hyperparam_grid(...))` one per hyperparameter setting, each in one compilation.

    Args:
        config: `PPOConfig`.
        env, env_params: a gymnax-style environment (our envs: `step` returns `(obs, state, reward,
            terminated, truncated, info)` with `info["final_observation"]`); default
            `trading_jax.envs.make(config.env, **config.env_kwargs)`.
        mesh: a mesh with a "data" axis: the env batch is sharded over it (module docstring).

    Raises:
        ValueError: inconsistent sizes (see `PPOConfig.validate`), a mismatched policy / action space,
            or `num_envs` (or `minibatch_size`) not divisible by the mesh's devices.
    """
    trainer = make_trainer(config, env, env_params, mesh)

    def train(key, hparams: PPOHyperparams | None = None, env_params=None) -> PPOResult:
        """Train from `key` (with `hparams`, default `config.hyperparams()`, on `env_params`)."""
        return trainer.train(key, hparams, env_params)

    train.trainer, train.config, train.model, train.mesh = trainer, config, trainer.model, trainer.mesh
    train.env, train.env_params = trainer.env, trainer.env_params
    return train


def make_trainer(config: PPOConfig, env=None, env_params=None, mesh=None) -> PPOTrainer:
    """`make_train` as `init` / `run` / `result` over an explicit `PPOState` (see `PPOTrainer`).

    `result(run(init(key), config.num_updates))` equals `train(key)` bit for bit, and so does any
    chunking `run(run(s, a), b)` of the updates.
    """
    config.validate()
    env, default_env_params = _env(config, env, env_params)
    mesh = _check_mesh(config, mesh)
    policy = _distribution(config, env.action_space(default_env_params))
    model = _model(config, policy)
    recurrent = config.recurrent
    normalize = _normalizer(config)
    E, T = config.num_envs, config.num_steps
    n_updates, n_mb, epochs = config.num_updates, config.num_minibatches, config.update_epochs
    mb_size, epm = config.minibatch_size, config.envs_per_minibatch
    obs_size = int(np.prod(env.observation_space(default_env_params).shape))

    def constrain(tree, spec):
        return parallel.constrain(tree, mesh, spec)

    env_axis = lambda tree: constrain(tree, P("data"))  # noqa: E731
    replicated = lambda tree: constrain(tree, P())  # noqa: E731

    # ---- network application
    def apply_ff(params, x):
        return model.apply({"params": params}, x)

    def apply_rnn(params, carry, x, reset):
        return model.apply({"params": params}, carry, x, reset)

    def initial_carry(batch):
        return model.initial_carry(batch, _hidden_size(model))

    # ---- optimiser (built from the traced hyperparameters of the run)
    def make_tx(hp: PPOHyperparams):
        if config.anneal_lr:
            def lr(count):
                return hp.lr * (1.0 - (count // (n_mb * epochs)).astype(jnp.float32) / n_updates)
        else:
            lr = hp.lr
        return optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), optax.adam(lr, eps=config.adam_eps))

    def lr_at(hp, u):
        return hp.lr * (1.0 - u.astype(jnp.float32) / n_updates) if config.anneal_lr else hp.lr * 1.0

    def vstep(keys, states, actions, params):
        return jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, states, actions, params)

    # ---- init
    def _init(key, hparams, env_params) -> PPOState:
        hp = config.hyperparams() if hparams is None else hparams
        hp = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), hp)
        k_params, k_env, k_updates = jax.random.split(key, 3)
        dummy = jnp.zeros((1, obs_size), jnp.float32)
        if recurrent:
            params = model.init(k_params, initial_carry(1), dummy, jnp.ones((1,), bool))["params"]
            rnn = env_axis(initial_carry(E))
        else:
            params = model.init(k_params, dummy)["params"]
            rnn = ()
        params = replicated(params)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_env, E), env_params)
        obs, env_state = env_axis((obs.reshape(E, obs_size).astype(jnp.float32), env_state))
        metrics = {name: jnp.zeros((n_updates,), jnp.float32) for name in METRIC_NAMES}
        return PPOState(
            params=params, opt_state=make_tx(hp).init(params), env_state=env_state, obs=obs,
            episode_start=jnp.ones((E,), bool), rnn=rnn, obs_norm=obs_norm_init((obs_size,)),
            reward_norm=reward_norm_init(E), episode_return=jnp.zeros((E,), jnp.float32),
            episode_length=jnp.zeros((E,), jnp.int32), key=k_updates, update=jnp.zeros((), jnp.int32),
            hparams=hp, metrics=metrics,
        )

    # ---- one update
    def _update(state: PPOState, env_params):
        hp = state.hparams
        tx = make_tx(hp)
        params = state.params
        key = jax.random.fold_in(state.key, state.update)
        k_roll, k_learn = jax.random.split(key)

        def env_step(carry, k):
            env_state, obs, start, rnn, obs_norm, rew_norm, ep_ret, ep_len, stats = carry
            k_act, k_env = jax.random.split(k)
            if config.normalize_observations:
                obs_norm = obs_norm_update(obs_norm, obs)
            nobs = normalize(obs_norm, obs)
            if recurrent:
                rnn, out = apply_rnn(params, rnn, nobs, start)
            else:
                out = apply_ff(params, nobs)
            raw, logp = policy.sample(out, k_act)
            next_obs, env_state, reward, term, trunc, info = vstep(
                jax.random.split(k_env, E), env_state, policy.to_env(raw), env_params)
            next_obs = next_obs.reshape(E, obs_size).astype(jnp.float32)
            next_obs, env_state = env_axis((next_obs, env_state))
            reward = jnp.asarray(reward, jnp.float32).reshape(E)
            term = jnp.asarray(term, bool).reshape(E)
            done = term | jnp.asarray(trunc, bool).reshape(E)
            if config.normalize_rewards:
                rew_norm, learn_reward = reward_norm_update(rew_norm, reward, done, hp.gamma, clip=config.reward_clip)
            else:
                learn_reward = reward
            nfinal = normalize(obs_norm, info["final_observation"].reshape(E, obs_size))
            ep_ret = ep_ret + reward
            ep_len = ep_len + 1
            donef = done.astype(jnp.float32)
            stats = (stats[0] + jnp.sum(donef * ep_ret), stats[1] + jnp.sum(donef),
                     stats[2] + jnp.sum(donef * ep_len.astype(jnp.float32)))
            ep_ret = jnp.where(done, 0.0, ep_ret)
            ep_len = jnp.where(done, 0, ep_len)
            tr = {"obs": nobs, "raw": raw, "log_prob": logp, "value": out["value"], "reward": learn_reward,
                  "terminated": term, "done": done, "start": start}
            if recurrent:
                tr["final_value"] = apply_rnn(params, rnn, nfinal, jnp.zeros((E,), bool))[1]["value"]
            else:
                tr["final_obs"] = nfinal
            new = (env_state, next_obs, done, rnn, obs_norm, rew_norm, ep_ret, ep_len, stats)
            return new, tr

        zero = jnp.zeros((), jnp.float32)
        carry0 = (state.env_state, state.obs, state.episode_start, state.rnn, state.obs_norm, state.reward_norm,
                  state.episode_return, state.episode_length, (zero, zero, zero))
        carry, traj = jax.lax.scan(env_step, carry0, jax.random.split(k_roll, T))
        env_state, obs, start, rnn, obs_norm, rew_norm, ep_ret, ep_len, stats = carry

        # ---- bootstrap values and GAE
        last_nobs = normalize(obs_norm, obs)
        if recurrent:
            last_value = apply_rnn(params, rnn, last_nobs, start)[1]["value"]
            final_value = traj.pop("final_value")
        else:
            last_value = apply_ff(params, last_nobs)["value"]
            final_obs = traj.pop("final_obs")
            final_value = apply_ff(params, final_obs.reshape(T * E, obs_size))["value"].reshape(T, E)
        next_values = bootstrap_values(traj["value"], last_value, final_value, traj["done"])
        adv, returns = gae(traj["reward"], traj["value"], next_values, traj["terminated"], traj["done"],
                           hp.gamma, hp.gae_lambda)
        traj["advantage"], traj["return"] = adv, returns
        explained = explained_variance(traj["value"], returns)

        # ---- learning
        def loss_fn(p, mb):
            if recurrent:
                def one(c, xs):
                    x, reset = xs
                    c, out = apply_rnn(p, c, x, reset)
                    return c, out

                _, out = jax.lax.scan(one, mb["carry"], (mb["obs"], mb["start"]))
            else:
                out = apply_ff(p, mb["obs"])
            a = mb["advantage"]
            if config.normalize_advantages:
                a = (a - jnp.mean(a)) / (jnp.std(a) + 1e-8)
            flat = lambda x: x.reshape(-1)  # noqa: E731
            return ppo_loss(flat(policy.log_prob(out, mb["raw"])), flat(mb["log_prob"]), flat(a),
                            flat(out["value"]), flat(mb["value"]), flat(mb["return"]),
                            flat(policy.entropy(out)), hp.clip_eps, hp.vf_coef, hp.ent_coef,
                            clip_value=config.clip_value)

        learn = {k: traj[k] for k in ("obs", "raw", "log_prob", "value", "advantage", "return", "start")}
        if not recurrent:
            learn.pop("start")
            learn = jax.tree.map(lambda x: x.reshape((T * E,) + x.shape[2:]), learn)

        def gradient_step(carry, mb):
            p, opt_state = carry
            (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, mb)
            updates, opt_state = tx.update(grads, opt_state, p)
            p = replicated(optax.apply_updates(p, updates))
            return (p, opt_state), aux

        def epoch(carry, k):
            if recurrent:
                idx = jax.random.permutation(k, E).reshape(n_mb, epm)
                mbs = jax.tree.map(lambda x: jnp.swapaxes(x[:, idx], 0, 1), learn)  # [n_mb, T, epm, ...]
                mbs["carry"] = jax.tree.map(lambda c: c[idx], state.rnn)
            else:
                idx = jax.random.permutation(k, T * E).reshape(n_mb, mb_size)
                mbs = jax.tree.map(lambda x: x[idx], learn)
                mbs = constrain(mbs, P(None, "data"))
            return jax.lax.scan(gradient_step, carry, mbs)

        (params, opt_state), aux = jax.lax.scan(epoch, (params, state.opt_state), jax.random.split(k_learn, epochs))
        record = {k: jnp.mean(v) for k, v in aux.items()}
        count = stats[1]
        record.update(
            episode_return=jnp.where(count > 0, stats[0] / jnp.maximum(count, 1.0), 0.0),
            episode_count=count,
            episode_length=jnp.where(count > 0, stats[2] / jnp.maximum(count, 1.0), 0.0),
            explained_variance=explained,
            learning_rate=lr_at(hp, state.update),
        )
        record = {k: jnp.asarray(record[k], jnp.float32) for k in METRIC_NAMES}
        metrics = {k: buf.at[state.update].set(record[k], mode="drop") for k, buf in state.metrics.items()}
        new = PPOState(params=params, opt_state=opt_state, env_state=env_state, obs=obs, episode_start=start, rnn=rnn,
                       obs_norm=obs_norm, reward_norm=rew_norm, episode_return=ep_ret, episode_length=ep_len,
                       key=state.key, update=state.update + 1, hparams=hp, metrics=metrics)
        return new, record

    def _run(state: PPOState, env_params, n):
        # `n` is a traced int32 behind an optimisation barrier: one compiled loop serves every chunk size,
        # and XLA never sees the trip count (a visible count, 1 say, lets it inline or unroll the loop and
        # fuse differently), so `run(run(s, a), b) == run(s, a + b) == train` bit for bit.
        n = jax.lax.optimization_barrier(jnp.asarray(n, jnp.int32))
        stop = jnp.minimum(state.update + n, n_updates)
        return jax.lax.while_loop(lambda s: s.update < stop, lambda s: _update(s, env_params)[0], state)

    def _run_chunk(state: PPOState, env_params, n):
        new = _run(state, env_params, n)
        return new, new.metrics  # [num_updates] buffers; the trainer cuts the chunk's records out

    def _result(state: PPOState) -> PPOResult:
        return PPOResult(state.params, state.obs_norm, state.metrics)

    return FunctionTrainer(
        init_fn=_init, run_fn=_run_chunk, result_fn=_result, counter_fn=lambda s: s.update,
        args=parallel.global_args(default_env_params, mesh),
        hparams=config.hyperparams(), total=n_updates, unit="update",
        samples_per_unit=config.batch_size, display=("episode_return",), config=config, model=model, mesh=mesh,
        extras={"env": env, "env_params": default_env_params}, dynamic_n=True,
    )


# ------------------------------------------------------------------------------ acting / evaluation


def make_policy(config: PPOConfig, env=None, env_params=None):
    """Build `act(policy_params, obs, key, deterministic=False, carry=None, reset=None)`.

    `policy_params` is anything with `.params` and `.obs_norm` (a `PPOResult`, a `PolicyParams`, a
    `PPOState`); `obs` is `[obs]` or `[B, obs]` raw observations (normalised here with the frozen
    `obs_norm` when `config.normalize_observations`). Returns the env action (`[B, ...]` or unbatched as
    `obs`): a sample, or the mode (argmax / squashed mean) when `deterministic`.
    Recurrent policies take and return the LSTM carry: `act(..., carry, reset) -> (action, carry)`, with
    `carry=None` meaning zeros and `reset [B]` bool zeroing the carry at episode starts;
    `act.initial_carry(B)` gives zeros.
    """
    env, env_params = _env(config, env, env_params)
    policy = _distribution(config, env.action_space(env_params))
    model = _model(config, policy)
    normalize = _normalizer(config)

    def act(policy_params, obs, key, deterministic: bool = False, carry=None, reset=None):
        obs = jnp.asarray(obs, jnp.float32)
        single = obs.ndim == 1
        x = normalize(policy_params.obs_norm, obs[None] if single else obs)
        variables = {"params": policy_params.params}
        if config.recurrent:
            if carry is None:
                carry = model.initial_carry(x.shape[0], _hidden_size(model))
            carry, out = model.apply(variables, carry, x, reset)
        else:
            out = model.apply(variables, x)
        raw = policy.mode(out) if deterministic else policy.sample(out, key)[0]
        action = policy.to_env(raw)
        action = action[0] if single else action
        return (action, carry) if config.recurrent else action

    act.initial_carry = lambda batch: model.initial_carry(batch, _hidden_size(model)) if config.recurrent else ()
    act.model = model
    return act


def make_inference(config: PPOConfig, env=None, env_params=None):
    """`infer(params, obs_norm, obs) -> dict` for serving a feed-forward policy: the greedy env action and
    the network's outputs, from raw observations `[B, obs]` (normalised with the frozen `obs_norm`, a
    `NormalizerState` or a dict of its fields, when `config.normalize_observations`).

    Returns a dict of `[B, ...]` arrays: "action" (the mode, as the env takes it), the network outputs
    ("logits" and "action_probs" for a categorical policy; "mean" and "log_std" for a Gaussian one) and
    "value".

    Raises:
        ValueError: a recurrent policy (it needs the LSTM carry as an input; not served yet).
    """
    if config.recurrent:
        raise ValueError(f"network {config.network_name!r} is recurrent: serving it needs the LSTM carry as an input "
                         "and output, which the export does not support yet; train a feed-forward policy to export it")
    env, env_params = _env(config, env, env_params)
    policy = _distribution(config, env.action_space(env_params))
    model = _model(config, policy)
    normalize = _normalizer(config)

    def infer(params, obs_norm, obs):
        if isinstance(obs_norm, Mapping):
            obs_norm = NormalizerState(**obs_norm)
        out = dict(model.apply({"params": params}, normalize(obs_norm, jnp.asarray(obs, jnp.float32))))
        if "logits" in out:
            out["action_probs"] = jax.nn.softmax(policy.action_logits(out), axis=-1).reshape(out["logits"].shape)
        return {"action": policy.to_env(policy.mode(out)), **out}

    return infer


def as_policy(config: PPOConfig, policy_params, env=None, env_params=None, deterministic: bool = True):
    """The trained policy for ONE environment, as `trading_jax.evaluation.rollout` runs policies (`rollout`,
    `rollout_episodes`, `compare`): `policy(obs, state, key, env_params) -> action`, or for a recurrent
    config a `RecurrentPolicy` whose carry starts at zeros each episode.

    Args:
        config, env, env_params: as `make_policy`.
        policy_params: anything with `.params` and `.obs_norm` (may be traced).
        deterministic: act with the policy's mode (else sample with the rollout's per-step key).
    """
    return _env_policy(make_policy(config, env, env_params), policy_params, deterministic, config.recurrent)


def _env_policy(act, policy_params, deterministic: bool, recurrent: bool):
    if recurrent:
        def step(obs, state, key, env_params, carry):
            del state, env_params
            action, carry = act(policy_params, jnp.reshape(obs, (1, -1)), key, deterministic, carry)
            return action[0], carry

        return RecurrentPolicy(step, lambda: act.initial_carry(1))

    def policy(obs, state, key, env_params):
        del state, env_params
        return act(policy_params, jnp.reshape(obs, (1, -1)), key, deterministic)[0]

    return policy


def evaluate(config: PPOConfig, result, env=None, env_params=None, key=None, n_episodes: int = 16,
             deterministic: bool = True, max_steps: int | None = None) -> dict:
    """Run `n_episodes` envs for one episode each with the trained policy (vectorised, one `lax.scan`).

    The episodes are those of `trading_jax.evaluation.rollout.rollout` (common random numbers: with the same
    `key` and `n_episodes`, `compare` runs the baselines on the same episode starts and market noise).

    Args:
        config: the training config.
        result: a `PPOResult` (or anything with `.params` and `.obs_norm`).
        env, env_params: default `trading_jax.envs.make(config.env, **config.env_kwargs)`.
        key: PRNG key (episode starts, env noise and, when not `deterministic`, action samples).
        n_episodes: number of envs, one episode each.
        deterministic: act with the policy's mode.
        max_steps: scan length (default the env's episode length / horizon); episodes still running at
            the end are reported with `done = False`.

    Returns:
        dict: "returns" `[n]` (raw episode returns), "lengths" `[n]` int32, "done" `[n]` bool, and
        "info": the env's `info` dict (without "final_observation") of the step that ended each episode
        (of the last step for an episode still running), leaves `[n, ...]`.
    """
    env, env_params = _env(config, env, env_params)
    run = make_evaluator(config, env, env_params, n_episodes, deterministic, max_steps)
    key = jax.random.key(0) if key is None else key
    return run(PolicyParams(result.params, result.obs_norm), env_params, key)


def make_evaluator(config: PPOConfig, env, env_params, n_episodes: int = 16, deterministic: bool = True,
                   max_steps: int | None = None):
    """The jitted program behind `evaluate`, compiled once: `run(policy_params, env_params, key) -> dict`
    (same outputs as `evaluate`), for evaluating a policy again and again during training. It is
    `trading_jax.evaluation.rollout.rollout` of `as_policy(config, policy_params, ...)`."""
    act = make_policy(config, env, env_params)
    steps = default_max_steps(env, env_params) if max_steps is None else int(max_steps)

    @jax.jit
    def run(policy_params, env_params, key):
        policy = _env_policy(act, policy_params, deterministic, config.recurrent)
        stats = rollout(env, env_params, policy, key, n_episodes, steps)
        return {"returns": stats.total_reward, "lengths": stats.length, "done": stats.done, "info": stats.info}

    return run


# ------------------------------------------------------------------------------ populations of agents


def train_agents(config, key: Array, n_agents: int | None = None, hparams=None, env=None, env_params=None):
    """Train K PPO agents in ONE vmapped compilation: `make_trainer(config).population(K).train(keys)`.

    Args:
        config: a `trading_jax.rl.ppo.PPOConfig`.
        key: PRNG key, split into the K members' keys.
        n_agents: K (seeds of one setting); may be left out when `hparams` is given.
        hparams: optional `PPOHyperparams` with `[K]` leaves (`ppo.hyperparam_grid`): one setting per member.
        env, env_params: as `make_trainer`.

    Returns:
        A `PPOResult` whose leaves have a leading `[K]` member axis.
    """
    return train_population(make_trainer(config, env, env_params), key, n_agents, hparams)


def ppo_policy_fn(config, env=None, env_params=None, deterministic: bool = True) -> Callable:
    """`policy_fn(member) -> policy` for PPO members (anything with `.params` and `.obs_norm`):
    `as_policy` of the member, for `trading_jax.ensemble.agents`. Build it once and reuse it (it keys the
    compilation)."""

    def policy_fn(one):
        return as_policy(config, PolicyParams(one.params, one.obs_norm), env, env_params, deterministic)

    return policy_fn
