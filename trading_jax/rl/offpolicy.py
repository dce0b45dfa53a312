"""The loop every off-policy agent shares (SAC, TD3, DDPG, DQN): env steps, replay inserts, sampling and
updates, all inside one `jit` as `lax.scan`s, vmappable over seeds and hyperparameters.

An algorithm module (`trading_jax.rl.sac`, `td3`, `ddpg`, `dqn`) describes its learner as an `Agent` (pure
functions: init, explore, update, act) and calls `make_offpolicy_trainer(config, agent, ...)`; it gets a
`trading_jax.loop.FunctionTrainer` (so `fit`, Orbax checkpoints with exact resume, TensorBoard, the progress
bar, populations and experiment files come for free), policies, and evaluation.

**Warm-up** (in `init`): `warmup_steps` vectorised steps of uniformly random actions (SB3's `learning_starts`:
`ceil(learning_starts / num_envs)` per env, at least enough to fill one batch and the n-step window). No
gradient step is taken.

**One iteration** (`config.num_iterations` of them, fit's unit) is a `lax.scan` of `steps_per_iteration`
vectorised env steps over `num_envs` envs, each followed by `gradient_steps` gradient steps (so the
update-to-data ratio is `gradient_steps / num_envs`, as SB3's `train_freq=1, gradient_steps=G` with
`n_envs` envs). At each env step:

1. the observation normaliser absorbs the raw observations (`normalize_observations`), the agent's
   `explore` picks actions from the normalised ones (Gaussian sampling, action noise, epsilon-greedy);
2. the envs step (`vmap(env.step)`, auto-reset inside); the reward is multiplied by `reward_scale`;
3. the n-step window (`trading_jax.rl.replay`) absorbs the step with `info["final_observation"]` as the
   next observation where the episode ended, and the transition it completes goes into the buffer:
   truncation bootstraps through the final observation, termination does not;
4. each gradient step samples `batch_size` transitions (uniformly, or by priority with importance weights
   `(N P(i))^-beta / max w`, beta annealed linearly from `importance_exponent` to 1 over the run), normalises
   their observations with the CURRENT moments (raw observations are stored), and calls the agent's
   `update`, whose absolute TD errors become the new priorities (`+ priority_eps`).

**Randomness** (DESIGN.md principle 6): `key -> (params, warm-up, iterations)`; iteration i draws from
`fold_in(state.key, i)`, so `run` can be chunked arbitrarily and `result(run(init(k), n)) == train(k)` bit
for bit.

**Data parallel** (a mesh with a "data" axis: the active one of `trading_jax.parallel.use_mesh`, e.g. under
`trading-jax train --distributed`): the env batch (env states, observations, the n-step window, episode
counters: every `[E, ...]` array) is sharded over the axis, the replay buffer and the learner are replicated,
and each gradient step's sampled batch is sharded on its batch axis, so XLA all-gathers the E new transitions
into the buffer and all-reduces the gradients. The maths is that of one device, so results agree up to float
reassociation (tested across 2 processes). `num_envs` and `batch_size` must divide over the devices.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax import parallel
from trading_jax.evaluation.rollout import default_max_steps, rollout
from trading_jax.features.normalize import NormalizerState
from trading_jax.loop import FunctionTrainer, train_population
from trading_jax.rl import replay
from trading_jax.rl.normalizers import obs_norm_apply, obs_norm_init, obs_norm_update
from trading_jax.rl.targets import importance_weights, linear_schedule

Array = jax.Array

__all__ = ["OffPolicyConfig", "Agent", "OffPolicyState", "OffPolicyResult", "PolicyParams", "make_env",
           "make_offpolicy_trainer", "make_policy", "as_policy", "make_evaluator", "evaluate", "policy_fn",
           "BASE_METRICS", "box_bounds", "AlgorithmFunctions", "algorithm_functions"]

BASE_METRICS: tuple[str, ...] = ("episode_return", "episode_count", "episode_length", "buffer_size")


@dataclasses.dataclass(frozen=True)
class OffPolicyConfig:
    """Settings every off-policy agent shares. Derived sizes are properties; never edit a config in place.

    Attributes:
        env, env_kwargs: `trading_jax.envs.make(env, **env_kwargs)` builds the environment.
        num_envs: parallel environments.
        total_timesteps: env steps of the whole run, warm-up included (SB3's `total_timesteps`).
        steps_per_iteration: vectorised env steps per iteration (the unit of `fit`: logs, checkpoints).
        learning_starts: env steps of random actions before learning (over all envs).
        buffer_size: transitions the replay buffer holds.
        batch_size: transitions per gradient step.
        gradient_steps: gradient steps after every vectorised env step (update-to-data ratio
            `gradient_steps / num_envs`).
        gamma: discount. tau: Polyak rate of the target networks.
        n_step: n-step returns (`trading_jax.rl.replay`).
        prioritized: prioritised replay; priority_exponent (alpha), importance_exponent (beta at the start,
            annealed to 1), priority_eps (added to |TD error|).
        reward_scale: rewards are multiplied by this before learning (episode statistics stay raw).
        normalize_observations, obs_clip: running observation normalisation (as PPO's), clip of the result.
        network_preset, network_kwargs: preset and keyword arguments of every network of the agent
            (`trading_jax.models.create`), e.g. `{"hidden": [64, 64]}`.
    """

    env: str = "trading"
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    num_envs: int = 4
    total_timesteps: int = 100_000
    steps_per_iteration: int = 64
    learning_starts: int = 1_000
    buffer_size: int = 100_000
    batch_size: int = 256
    gradient_steps: int = 1
    gamma: float = 0.99
    tau: float = 0.005
    n_step: int = 1
    prioritized: bool = False
    priority_exponent: float = 0.6
    importance_exponent: float = 0.4
    priority_eps: float = 1e-6
    reward_scale: float = 1.0
    normalize_observations: bool = True
    obs_clip: float = 10.0
    network_preset: str | None = None
    network_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @property
    def warmup_steps(self) -> int:
        """Vectorised random-action steps in `init`: enough for `learning_starts`, one batch and the window."""
        need = max(int(self.learning_starts), int(self.batch_size))
        return (self.n_step - 1) + max(1, math.ceil(need / self.num_envs))

    @property
    def env_steps_per_iteration(self) -> int:
        return self.num_envs * self.steps_per_iteration

    @property
    def num_iterations(self) -> int:
        left = int(self.total_timesteps) - self.warmup_steps * self.num_envs
        return max(0, left // self.env_steps_per_iteration)

    @property
    def update_to_data(self) -> float:
        """Gradient steps per env step."""
        return self.gradient_steps / self.num_envs

    def validate(self) -> None:
        """Raise ValueError for inconsistent sizes."""
        for name in ("num_envs", "total_timesteps", "steps_per_iteration", "buffer_size", "batch_size",
                     "gradient_steps", "n_step"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.learning_starts) < 0:
            raise ValueError(f"learning_starts must be >= 0, got {self.learning_starts}")
        if self.batch_size > self.buffer_size:
            raise ValueError(f"batch_size={self.batch_size} is larger than buffer_size={self.buffer_size}")
        if self.num_iterations < 1:
            raise ValueError(
                f"total_timesteps={self.total_timesteps} leaves no iteration after the warm-up of "
                f"{self.warmup_steps * self.num_envs} env steps (learning_starts / batch_size) plus one iteration of "
                f"num_envs * steps_per_iteration = {self.env_steps_per_iteration}")
        for name in ("gamma", "tau", "priority_exponent", "importance_exponent"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("reward_scale", "obs_clip"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")


class Agent(NamedTuple):
    """An off-policy learner as pure functions (what an algorithm module gives `make_offpolicy_trainer`).

    Attributes:
        init(key, obs_size, hparams) -> learner: params, target params, optimiser states, ... (a pytree).
        explore(learner, nobs [E, obs], key, hparams, progress) -> action [E, *action_shape]: the actions
            played during training (stored in the buffer); `progress` in [0, 1] is the run's fraction done.
        update(learner, batch, weights [B], key, hparams, progress) -> (learner, metrics, td_abs [B]): one
            gradient step on a `replay.Transition` batch with normalised observations; `weights` are the
            importance weights (ones without prioritised replay); `td_abs` the new priorities' base.
        act(params, nobs [B, obs], key, deterministic) -> action [B, ...]: the trained policy.
        acting_params(learner) -> params: what `act` needs (the actor, or the Q network).
        to_env(action) -> env action (e.g. rescale [-1, 1] to the env's box).
        random_action(key, n) -> [n, *action_shape]: the warm-up's uniform actions.
        action_shape, action_dtype: of the stored actions.
        metric_names: names of `update`'s metrics (means over an iteration's gradient steps are logged).
        model: the main network (for callers).
        sparse_metrics: metrics that are NaN on the gradient steps that do not compute them (TD3's delayed
            actor loss): averaged over the steps that do. Every other metric is a plain mean, so a loss that
            turns NaN in one step makes its iteration's record NaN.
    """

    init: Callable
    explore: Callable
    update: Callable
    act: Callable
    acting_params: Callable
    to_env: Callable
    random_action: Callable
    action_shape: tuple
    action_dtype: Any
    metric_names: tuple
    model: Any = None
    sparse_metrics: tuple = ()


class PolicyParams(NamedTuple):
    """What a policy needs: the acting network's params and the observation normaliser's moments."""

    params: Any
    obs_norm: NormalizerState


class OffPolicyResult(NamedTuple):
    """What `train(key)` returns.

    Attributes:
        params: the acting network's params (actor, or Q network).
        obs_norm: the observation normaliser's `NormalizerState` (unused when `normalize_observations=False`).
        metrics: dict of per-iteration `[num_iterations]` float32 arrays: `BASE_METRICS` ("episode_return":
            mean raw return of the episodes completed during the iteration, 0 when none; "episode_count";
            "episode_length"; "buffer_size") and the agent's update metrics (means over the iteration's gradient
            steps; TD3's delayed actor loss over its actor steps only).
        learner: the whole learner state (critics, target networks, optimiser states, temperature).
    """

    params: Any
    obs_norm: NormalizerState
    metrics: dict
    learner: Any


class OffPolicyState(NamedTuple):
    """The whole training state between iterations (a pytree: checkpoint it to resume exactly)."""

    learner: Any
    buffer: Any
    window: replay.NStepWindow
    env_state: Any
    obs: Array
    obs_norm: NormalizerState
    episode_return: Array
    episode_length: Array
    key: Array
    iteration: Array
    hparams: Any
    metrics: dict


def make_env(config: OffPolicyConfig, env=None, env_params=None):
    """`(env, env_params)`: the given env, or `trading_jax.envs.make(config.env, **config.env_kwargs)`."""
    if env is None:
        from trading_jax.envs import make

        env, default_params = make(config.env, **dict(config.env_kwargs))
        return env, default_params if env_params is None else env_params
    return env, env.default_params if env_params is None else env_params


def box_bounds(space) -> tuple[Array, Array, tuple[int, ...]]:
    """`(low, high, shape)` of a Box action space as float32 arrays (ValueError for a discrete space or an
    unbounded box)."""
    if hasattr(space, "n") or not hasattr(space, "low"):
        raise ValueError(f"this agent needs continuous (Box) actions; the env's action space is {space}: use DQN "
                         "for discrete actions, or the env's continuous action mode")
    shape = tuple(int(s) for s in space.shape)
    low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), shape)
    high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), shape)
    if not (bool(jnp.all(jnp.isfinite(low))) and bool(jnp.all(jnp.isfinite(high)))):
        raise ValueError(f"the env's action box must be bounded; got low={space.low}, high={space.high}")
    return low, high, shape


def _normalizer(config: OffPolicyConfig):
    if config.normalize_observations:
        return lambda rms, x: obs_norm_apply(rms, x, clip=config.obs_clip)
    return lambda rms, x: jnp.asarray(x, jnp.float32)


def make_offpolicy_trainer(config: OffPolicyConfig, agent: Agent, env, env_params, hparams,
                           extra_metrics: tuple[str, ...] = ()) -> FunctionTrainer:
    """The off-policy loop (module docstring) as a `FunctionTrainer`.

    Args:
        config: the algorithm's config (an `OffPolicyConfig`).
        agent: the algorithm's `Agent`.
        env, env_params: the environment and its default params (`run`/`init` take others as `args`).
        hparams: the default vmappable hyperparameters (a `flax.struct` dataclass with at least `gamma`).
        extra_metrics: unused; reserved.
    """
    del extra_metrics
    config.validate()
    E, T, G = config.num_envs, config.steps_per_iteration, config.gradient_steps
    mesh = parallel.active_mesh()
    parallel.check_divisible(mesh, num_envs=E, batch_size=config.batch_size)
    P = parallel.P

    def env_axis(tree, axis: int = 0):  # leaves with the env batch on `axis` sharded over "data" (no-op without a mesh)
        return parallel.constrain(tree, mesh, P(*([None] * axis), "data"))

    def replicated(tree):
        return parallel.constrain(tree, mesh, P())
    n_iter, warm, n = config.num_iterations, config.warmup_steps, config.n_step
    normalize = _normalizer(config)
    obs_size = int(np.prod(env.observation_space(env_params).shape))
    buffer = replay.make_buffer(config.buffer_size, config.batch_size, config.prioritized, config.priority_exponent, E)
    metric_names = BASE_METRICS + tuple(agent.metric_names)
    total_steps = float(n_iter * T)

    def vstep(keys, states, actions, params):
        return jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, states, actions, params)

    def env_transition(env_state, obs, action, key, env_params):
        """One vectorised env step: (next_obs, env_state, reward [E] raw, terminated, done, next_for_target)."""
        next_obs, env_state, reward, term, trunc, info = vstep(jax.random.split(key, E), env_state,
                                                               agent.to_env(action), env_params)
        next_obs = next_obs.reshape(E, obs_size).astype(jnp.float32)
        reward = jnp.asarray(reward, jnp.float32).reshape(E)
        term = jnp.asarray(term, bool).reshape(E)
        done = term | jnp.asarray(trunc, bool).reshape(E)
        final = info["final_observation"].reshape(E, obs_size).astype(jnp.float32)
        return next_obs, env_state, reward, term, done, final

    def push(window, obs, action, reward, term, done, final):
        return replay.n_step_push(window, obs, action, reward * config.reward_scale, term, done, final)

    # ---- init: params, env resets, warm-up of random actions
    def _init(key, hparams, env_params) -> OffPolicyState:
        hp = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), hparams)
        k_params, k_env, k_warm, k_iter = jax.random.split(key, 4)
        learner = agent.init(k_params, obs_size, hp)
        learner = replicated(learner)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_env, E), env_params)
        obs, env_state = env_axis((obs.reshape(E, obs_size).astype(jnp.float32), env_state))
        window = env_axis(replay.n_step_init(n, E, obs_size, agent.action_shape, agent.action_dtype), axis=1)
        example = jax.tree.map(lambda x: x[0], replay.n_step_transition(window, hp.gamma))
        buf = buffer.init(example)

        def warm_step(carry, xs):
            t, k = xs
            env_state, obs, obs_norm, window, buf = carry
            k_act, k_env = jax.random.split(k)
            if config.normalize_observations:
                obs_norm = obs_norm_update(obs_norm, obs)
            action = agent.random_action(k_act, E)
            next_obs, env_state, reward, term, done, final = env_transition(env_state, obs, action, k_env, env_params)
            window = env_axis(push(window, obs, action, reward, term, done, final), axis=1)
            buf = jax.lax.cond(t >= n - 1, lambda b: buffer.add(b, replay.n_step_transition(window, hp.gamma)),
                               lambda b: b, buf)
            next_obs, env_state = env_axis((next_obs, env_state))
            return (env_state, next_obs, obs_norm, window, replicated(buf)), None

        carry = (env_state, obs, obs_norm_init((obs_size,)), window, buf)
        (env_state, obs, obs_norm, window, buf), _ = jax.lax.scan(
            warm_step, carry, (jnp.arange(warm), jax.random.split(k_warm, warm)))
        return OffPolicyState(
            learner=learner, buffer=buf, window=window, env_state=env_state, obs=obs, obs_norm=obs_norm,
            episode_return=jnp.zeros((E,), jnp.float32), episode_length=jnp.zeros((E,), jnp.int32), key=k_iter,
            iteration=jnp.zeros((), jnp.int32), hparams=hp,
            metrics={name: jnp.zeros((n_iter,), jnp.float32) for name in metric_names})

    # ---- gradient steps
    def prepare(batch, probabilities, buf, obs_norm, progress):
        """Normalise a sampled batch's observations with the CURRENT moments; its importance weights."""
        batch = batch._replace(obs=normalize(obs_norm, batch.obs), next_obs=normalize(obs_norm, batch.next_obs))
        if config.prioritized:
            beta = linear_schedule(config.importance_exponent, 1.0, progress)
            return batch, importance_weights(probabilities, replay.buffer_size(buf), beta)
        return batch, jnp.ones((config.batch_size,), jnp.float32)

    def gradient_steps(learner, buf, key, obs_norm, hp, progress):
        """`G` gradient steps: `(learner, buf, metrics [G])`. Uniform replay draws the G batches first, outside
        the loop of updates (a buffer read inside a loop that follows its insert gets copied whole on every env
        step); prioritised replay samples each batch after the previous step's priority update."""
        keys = jax.random.split(key, G)
        if not config.prioritized:
            batches, _, probabilities = jax.vmap(lambda k: buffer.sample(buf, jax.random.split(k)[0]))(keys)
            batches = env_axis(batches, axis=1)  # [G, B, ...]: each device takes its share of every batch

            def body(learner, xs):
                batch, probs, k = xs
                batch, weights = prepare(batch, probs, buf, obs_norm, progress)
                learner, metrics, _ = agent.update(learner, batch, weights, jax.random.split(k)[1], hp, progress)
                return learner, metrics

            learner, metrics = jax.lax.scan(body, learner, (batches, probabilities, keys))
            return learner, buf, metrics

        def body_prioritised(carry, k):
            learner, buf = carry
            k_sample, k_update = jax.random.split(k)
            batch, indices, probabilities = buffer.sample(buf, k_sample)
            batch = env_axis(batch)
            batch, weights = prepare(batch, probabilities, buf, obs_norm, progress)
            learner, metrics, td_abs = agent.update(learner, batch, weights, k_update, hp, progress)
            buf = buffer.set_priorities(buf, indices, jnp.abs(td_abs) + config.priority_eps)
            return (learner, buf), metrics

        (learner, buf), metrics = jax.lax.scan(body_prioritised, (learner, buf), keys)
        return learner, buf, metrics

    def mean_of(name, values):
        return jnp.nanmean(values) if name in agent.sparse_metrics else jnp.mean(values)

    # ---- one iteration
    def _iteration(state: OffPolicyState, env_params) -> OffPolicyState:
        hp = state.hparams
        key = jax.random.fold_in(state.key, state.iteration)

        def env_step(carry, xs):
            t, k = xs
            learner, buf, window, env_state, obs, obs_norm, ep_ret, ep_len, stats = carry
            k_act, k_env, k_learn = jax.random.split(k, 3)
            progress = (state.iteration.astype(jnp.float32) * T + t) / total_steps
            if config.normalize_observations:
                obs_norm = obs_norm_update(obs_norm, obs)
            action = agent.explore(learner, normalize(obs_norm, obs), k_act, hp, progress)
            next_obs, env_state, reward, term, done, final = env_transition(env_state, obs, action, k_env, env_params)
            window = push(window, obs, action, reward, term, done, final)
            # the barrier keeps XLA from fusing the insert into the sampling gathers, which would keep the old
            # ring alive beside the new one: a copy of the whole buffer on every env step
            buf = jax.lax.optimization_barrier(buffer.add(buf, replay.n_step_transition(window, hp.gamma)))
            learner, buf, metrics = gradient_steps(learner, replicated(buf), k_learn, obs_norm, hp, progress)
            learner = replicated(learner)
            window, next_obs, env_state = env_axis(window, axis=1), *env_axis((next_obs, env_state))
            ep_ret = ep_ret + reward
            ep_len = ep_len + 1
            donef = done.astype(jnp.float32)
            stats = (stats[0] + jnp.sum(donef * ep_ret), stats[1] + jnp.sum(donef),
                     stats[2] + jnp.sum(donef * ep_len.astype(jnp.float32)))
            ep_ret = jnp.where(done, 0.0, ep_ret)
            ep_len = jnp.where(done, 0, ep_len)
            metrics = {k: mean_of(k, v) for k, v in metrics.items()}
            return (learner, buf, window, env_state, next_obs, obs_norm, ep_ret, ep_len, stats), metrics

        zero = jnp.zeros((), jnp.float32)
        carry = (state.learner, state.buffer, state.window, state.env_state, state.obs, state.obs_norm,
                 state.episode_return, state.episode_length, (zero, zero, zero))
        carry, metrics = jax.lax.scan(env_step, carry, (jnp.arange(T, dtype=jnp.float32), jax.random.split(key, T)))
        learner, buf, window, env_state, obs, obs_norm, ep_ret, ep_len, stats = carry
        count = stats[1]
        record = {k: mean_of(k, v) for k, v in metrics.items()}
        record.update(episode_return=jnp.where(count > 0, stats[0] / jnp.maximum(count, 1.0), 0.0),
                      episode_count=count,
                      episode_length=jnp.where(count > 0, stats[2] / jnp.maximum(count, 1.0), 0.0),
                      buffer_size=replay.buffer_size(buf).astype(jnp.float32))
        history = {k: b.at[state.iteration].set(jnp.asarray(record[k], jnp.float32), mode="drop")
                   for k, b in state.metrics.items()}
        return OffPolicyState(learner=learner, buffer=buf, window=window, env_state=env_state, obs=obs,
                              obs_norm=obs_norm, episode_return=ep_ret, episode_length=ep_len, key=state.key,
                              iteration=state.iteration + 1, hparams=hp, metrics=history)

    def _run_chunk(state: OffPolicyState, env_params, count):
        # a traced count behind an optimisation barrier: one compiled loop for every chunk size (see rl.ppo)
        count = jax.lax.optimization_barrier(jnp.asarray(count, jnp.int32))
        stop = jnp.minimum(state.iteration + count, n_iter)
        new = jax.lax.while_loop(lambda s: s.iteration < stop, lambda s: _iteration(s, env_params), state)
        return new, new.metrics

    def _result(state: OffPolicyState) -> OffPolicyResult:
        return OffPolicyResult(agent.acting_params(state.learner), state.obs_norm, state.metrics, state.learner)

    return FunctionTrainer(
        init_fn=_init, run_fn=_run_chunk, result_fn=_result, counter_fn=lambda s: s.iteration,
        args=parallel.global_args(env_params, mesh),
        hparams=hparams, total=n_iter, unit="iteration", samples_per_unit=config.env_steps_per_iteration,
        display=("episode_return",), config=config, model=agent.model, mesh=mesh,
        extras={"env": env, "env_params": env_params, "agent": agent, "warmup_env_steps": warm * E},
        dynamic_n=True)


# ------------------------------------------------------------------------------ acting / evaluation


def make_policy(config: OffPolicyConfig, agent: Agent):
    """`act(policy_params, obs, key, deterministic=True) -> env action` for raw observations `[obs]` or
    `[B, obs]` (normalised with the frozen `policy_params.obs_norm` when `config.normalize_observations`).
    `policy_params` is anything with `.params` and `.obs_norm` (an `OffPolicyResult`, a `PolicyParams`)."""
    normalize = _normalizer(config)

    def act(policy_params, obs, key, deterministic: bool = True):
        obs = jnp.asarray(obs, jnp.float32)
        single = obs.ndim == 1
        x = normalize(policy_params.obs_norm, obs[None] if single else obs)
        action = agent.to_env(agent.act(policy_params.params, x, key, deterministic))
        return action[0] if single else action

    act.model = agent.model
    return act


def _env_policy(act, policy_params, deterministic: bool):
    def policy(obs, state, key, env_params):
        del state, env_params
        return act(policy_params, jnp.reshape(obs, (1, -1)), key, deterministic)[0]

    return policy


def as_policy(config: OffPolicyConfig, agent: Agent, policy_params, deterministic: bool = True):
    """The trained policy for ONE environment as `trading_jax.evaluation.rollout` runs policies:
    `policy(obs, state, key, env_params) -> action` (`policy_params`: `.params` and `.obs_norm`, may be traced)."""
    return _env_policy(make_policy(config, agent), PolicyParams(policy_params.params, policy_params.obs_norm),
                       deterministic)


def policy_fn(config: OffPolicyConfig, agent: Agent, deterministic: bool = True) -> Callable:
    """`policy_fn(member) -> policy` for members with `.params` and `.obs_norm` (`trading_jax.ensemble.agents`);
    build it once per setting (it keys the compilation)."""
    act = make_policy(config, agent)

    def member_policy(one):
        return _env_policy(act, PolicyParams(one.params, one.obs_norm), deterministic)

    return member_policy


def make_evaluator(config: OffPolicyConfig, agent: Agent, env, env_params, n_episodes: int = 16,
                   deterministic: bool = True, max_steps: int | None = None):
    """`run(policy_params, env_params, key) -> {"returns", "lengths", "done", "info"}` compiled once: the
    policy for `n_episodes` episodes (`trading_jax.evaluation.rollout.rollout`, common random numbers)."""
    act = make_policy(config, agent)
    steps = default_max_steps(env, env_params) if max_steps is None else int(max_steps)

    @jax.jit
    def run(policy_params, env_params, key):
        policy = _env_policy(act, PolicyParams(policy_params.params, policy_params.obs_norm), deterministic)
        stats = rollout(env, env_params, policy, key, n_episodes, steps)
        return {"returns": stats.total_reward, "lengths": stats.length, "done": stats.done, "info": stats.info}

    return run


def evaluate(config: OffPolicyConfig, agent: Agent, result, env, env_params, key=None, n_episodes: int = 16,
             deterministic: bool = True, max_steps: int | None = None) -> dict:
    """`make_evaluator(...)` run once on `result` (`.params`, `.obs_norm`): returns, lengths, done, info `[n]`."""
    run = make_evaluator(config, agent, env, env_params, n_episodes, deterministic, max_steps)
    return run(PolicyParams(result.params, result.obs_norm), env_params,
               jax.random.key(0) if key is None else key)


# ------------------------------------------------------------------------ an algorithm's public functions


class AlgorithmFunctions(NamedTuple):
    """The public functions of an off-policy algorithm module, built from its `build(config, env, env_params)
    -> (agent, default hparams)` by `algorithm_functions` (each module re-exports them under these names)."""

    make_trainer: Callable
    make_train: Callable
    make_policy: Callable
    as_policy: Callable
    make_evaluator: Callable
    evaluate: Callable
    member_policy_fn: Callable
    train_agents: Callable


def algorithm_functions(build: Callable) -> AlgorithmFunctions:
    """`make_trainer`, `make_train`, `make_policy`, `as_policy`, `make_evaluator`, `evaluate`, `member_policy_fn`
    and `train_agents` of an algorithm whose `build(config, env, env_params)` gives its `Agent` and default
    hyperparameters (see `trading_jax.rl.sac` for the documented signatures)."""

    def make_trainer(config, env=None, env_params=None) -> FunctionTrainer:
        """The algorithm as a `trading_jax.loop.FunctionTrainer` (`init` / `run` / `result` / `train` /
        `population`), unit "iteration"; `fit(trainer, key, ...)` runs it with checkpoints and logs."""
        config.validate()
        env, env_params = make_env(config, env, env_params)
        agent, hparams = build(config, env, env_params)
        return make_offpolicy_trainer(config, agent, env, env_params, hparams)

    def make_train(config, env=None, env_params=None):
        """`train(key, hparams=None, env_params=None) -> OffPolicyResult`, jittable and vmappable
        (`jax.vmap(train)(keys)` trains one agent per key, `jax.vmap(train)(keys, grid)` one per setting)."""
        trainer = make_trainer(config, env, env_params)

        def train(key, hparams=None, env_params=None):
            return trainer.train(key, hparams, env_params)

        train.trainer, train.config, train.env, train.env_params = trainer, config, trainer.env, trainer.env_params
        return train

    def _agent(config, env, env_params):
        env, env_params = make_env(config, env, env_params)
        return build(config, env, env_params)[0], env, env_params

    def make_policy_(config, env=None, env_params=None):
        """`act(policy_params, obs, key, deterministic=True) -> env action` (`offpolicy.make_policy`)."""
        return make_policy(config, _agent(config, env, env_params)[0])

    def as_policy_(config, result, env=None, env_params=None, deterministic: bool = True):
        """The trained policy for ONE env, as `trading_jax.evaluation.rollout` runs policies."""
        return as_policy(config, _agent(config, env, env_params)[0], result, deterministic)

    def make_evaluator_(config, env=None, env_params=None, n_episodes: int = 16, deterministic: bool = True,
                        max_steps: int | None = None):
        """`run(policy_params, env_params, key) -> dict` compiled once (`offpolicy.make_evaluator`)."""
        agent, env, env_params = _agent(config, env, env_params)
        return make_evaluator(config, agent, env, env_params, n_episodes, deterministic, max_steps)

    def evaluate_(config, result, env=None, env_params=None, key=None, n_episodes: int = 16,
                  deterministic: bool = True, max_steps: int | None = None) -> dict:
        """Held-out episodes of the trained policy: `{"returns", "lengths", "done", "info"}` `[n]`."""
        agent, env, env_params = _agent(config, env, env_params)
        return evaluate(config, agent, result, env, env_params, key, n_episodes, deterministic, max_steps)

    def member_policy_fn(config, env=None, env_params=None, deterministic: bool = True):
        """`policy_fn(member) -> policy` for members of a population (`trading_jax.ensemble.agents`)."""
        return policy_fn(config, _agent(config, env, env_params)[0], deterministic)

    def train_agents(config, key, n_agents: int | None = None, hparams=None, env=None, env_params=None):
        """K agents in ONE vmapped compilation (`make_trainer(config).population(K).train(keys, hparams)`):
        an `OffPolicyResult` whose leaves have a leading `[K]` axis."""
        return train_population(make_trainer(config, env, env_params), key, n_agents, hparams)

    return AlgorithmFunctions(make_trainer, make_train, make_policy_, as_policy_, make_evaluator_, evaluate_,
                              member_policy_fn, train_agents)
