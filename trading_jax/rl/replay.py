"""Experience replay for the off-policy agents: flashbax buffers on device and n-step transitions.

**Transitions** (`Transition`) are what the learners see: `(obs, action, reward, bootstrap, next_obs)`, with
`reward` the n-step return and `bootstrap` the multiplier of the value of `next_obs` in the target:

    y = reward + bootstrap * V(next_obs)

**n-step returns** (`NStepWindow`, an `(init, push)` pair over the last `n` env steps of every env). After each
vectorised env step the window emits the transition that started `n - 1` steps earlier. With `alive_j` = 1
while no earlier step of the window ended the episode (`alive_0 = 1`, `alive_j = prod_{i<j} (1 - done_i)`),
and `m = sum_j alive_j` the steps kept (`1 <= m <= n`):

    reward    = sum_{j<m} gamma^j r_j
    bootstrap = gamma^m * (1 - terminated_{m-1})
    next_obs  = next_obs_{m-1}

where `next_obs_j` is `info["final_observation"]` when step j ended the episode: a time-limit truncation
bootstraps from the true last observation, a termination does not bootstrap at all (as in PPO; PureJaxRL
#20, SB3 #633). With `n = 1` this is the one-step transition `(s, a, r, gamma (1 - terminated), s')`. The
window starts empty; `OffPolicyTrainer`'s warm-up pushes `n - 1` steps before the first insert, so every
inserted transition is complete.

**Buffers** (`make_buffer`): flashbax's item buffer (uniform) or prioritised item buffer (Schaul et al. 2016:
`P(i) = p_i^alpha / sum_k p_k^alpha`, new items at the largest priority seen), holding `capacity` transitions
in a ring (the oldest are overwritten). Every call is a pure function of the buffer state, so the whole loop
of inserts, samples and priority updates runs inside one `jit` / `lax.scan` and `vmap`s over seeds.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["Transition", "NStepWindow", "n_step_init", "n_step_push", "n_step_transition", "Buffer", "make_buffer",
           "buffer_size"]


class Transition(NamedTuple):
    """One (n-step) transition; leaves `[..., obs]`, `[..., *action]`, `[...]`, `[...]`, `[..., obs]`."""

    obs: Array
    action: Array
    reward: Array
    bootstrap: Array
    next_obs: Array


class NStepWindow(NamedTuple):
    """The last `n` env steps of every env, oldest first: leaves `[n, E, ...]`.

    Attributes:
        obs, action, reward: the step's observation (raw), action and reward.
        terminated, done: bool, the step terminated / ended (terminated or truncated) the episode.
        next_obs: the observation after the step (`final_observation` where it ended the episode).
    """

    obs: Array
    action: Array
    reward: Array
    terminated: Array
    done: Array
    next_obs: Array


def n_step_init(n: int, num_envs: int, obs_size: int, action_shape: tuple[int, ...], action_dtype) -> NStepWindow:
    """An empty window of `n` steps for `num_envs` envs (zeros; `done` False)."""
    z = lambda shape, dtype=jnp.float32: jnp.zeros((n, num_envs) + tuple(shape), dtype)  # noqa: E731
    return NStepWindow(obs=z((obs_size,)), action=z(action_shape, action_dtype), reward=z(()),
                       terminated=z((), bool), done=z((), bool), next_obs=z((obs_size,)))


def n_step_push(window: NStepWindow, obs, action, reward, terminated, done, next_obs) -> NStepWindow:
    """Drop the oldest step and append this one (leaves `[E, ...]`)."""
    new = NStepWindow(obs, action, jnp.asarray(reward, jnp.float32), jnp.asarray(terminated, bool),
                      jnp.asarray(done, bool), next_obs)
    return jax.tree.map(lambda w, x: jnp.concatenate([w[1:], jnp.asarray(x, w.dtype)[None]], axis=0), window, new)


def n_step_transition(window: NStepWindow, gamma) -> Transition:
    """The transition that starts at the window's oldest step (module docstring); leaves `[E, ...]`.

    Args:
        window: a full window, leaves `[n, E, ...]`.
        gamma: discount (scalar, may be traced).
    """
    n = window.reward.shape[0]
    done = window.done.astype(jnp.float32)  # [n, E]
    alive = jnp.concatenate([jnp.ones_like(done[:1]), jnp.cumprod(1.0 - done[:-1], axis=0)], axis=0)
    powers = jnp.asarray(gamma, jnp.float32) ** jnp.arange(n, dtype=jnp.float32)  # [n]
    reward = jnp.sum(alive * powers[:, None] * window.reward, axis=0)
    m = jnp.sum(alive, axis=0)  # [E], steps kept
    last = (m - 1).astype(jnp.int32)
    take = lambda x: jnp.take_along_axis(x, last.reshape((1, -1) + (1,) * (x.ndim - 2)), axis=0)[0]  # noqa: E731
    terminated = take(window.terminated).astype(jnp.float32)
    bootstrap = jnp.asarray(gamma, jnp.float32) ** m * (1.0 - terminated)
    return Transition(obs=window.obs[0], action=window.action[0], reward=reward, bootstrap=bootstrap,
                      next_obs=take(window.next_obs))


class Buffer(NamedTuple):
    """A replay buffer's pure functions (flashbax underneath).

    Attributes:
        init(example) -> state: an empty buffer for items shaped like `example` (one `Transition`, no batch axis).
        add(state, batch) -> state: insert `[E, ...]` transitions.
        sample(state, key) -> (Transition [B, ...], indices [B], probabilities [B]): uniform sampling gives
            `probabilities = 1 / size`.
        set_priorities(state, indices, priorities) -> state: prioritised buffers only (identity otherwise).
        capacity, batch_size, prioritized.
    """

    init: Any
    add: Any
    sample: Any
    set_priorities: Any
    capacity: int
    batch_size: int
    prioritized: bool


def _sum_tree_device() -> str:
    backend = jax.default_backend()
    return backend if backend in ("gpu", "tpu") else "cpu"


def buffer_size(state) -> Array:
    """int32: transitions held by a buffer state (an item buffer's filled length)."""
    capacity = jax.tree.leaves(state.experience)[0].shape[1]
    return jnp.where(state.is_full, capacity, state.current_index).astype(jnp.int32)


def _add_in_place(state, batch):
    """flashbax's item-buffer insert of `[E, ...]` items as one `dynamic_update_slice` per leaf.

    flashbax writes with `experience.at[:, (current + arange(E)) % capacity].set(...)`, which XLA:CPU lowers to a
    select over the WHOLE ring inside the training loop: every env step then costs O(capacity) (4.5 ms at 400k
    transitions here). With `capacity` a multiple of E (`make_buffer` rounds it up) an insert never wraps, so a
    slice write at `current` is the same result, in place.
    """
    first = jax.tree.leaves(batch)[0]
    n = first.shape[0]
    capacity = jax.tree.leaves(state.experience)[0].shape[1]
    start = state.current_index
    experience = jax.tree.map(
        lambda ring, x: jax.lax.dynamic_update_slice_in_dim(ring, x[None].astype(ring.dtype), start, axis=1),
        state.experience, batch)
    index = start + n
    return state.replace(experience=experience, current_index=index % capacity,
                         is_full=state.is_full | (index >= capacity))


def make_buffer(capacity: int, batch_size: int, prioritized: bool = False, priority_exponent: float = 0.6,
                add_batch: int = 1) -> Buffer:
    """A flashbax item buffer of `capacity` transitions sampling `batch_size` at a time (module docstring).

    Args:
        capacity: transitions held (the oldest are overwritten).
        batch_size: transitions per sample (the buffer must hold at least this many before sampling).
        add_batch: transitions per insert (the number of envs); a uniform buffer's capacity is rounded up to a
            multiple of it (so that an insert never wraps around the ring).
        prioritized: prioritised sampling (`P(i) ~ p_i^priority_exponent`).
        priority_exponent: alpha of prioritised replay, in [0, 1].
    """
    import flashbax as fbx

    if int(batch_size) > int(capacity):
        raise ValueError(f"batch_size={batch_size} is larger than the buffer's capacity {capacity}")
    min_length = int(batch_size)
    if not prioritized:
        capacity = -(-int(capacity) // int(add_batch)) * int(add_batch)
    if prioritized:
        inner = fbx.make_prioritised_item_buffer(max_length=int(capacity), min_length=min_length,
                                                 sample_batch_size=int(batch_size), add_batches=True,
                                                 priority_exponent=float(priority_exponent), device=_sum_tree_device())

        def sample(state, key):
            out = inner.sample(state, key)
            return Transition(*out.experience), out.indices, out.probabilities

        set_priorities = inner.set_priorities
    else:
        inner = fbx.make_item_buffer(max_length=int(capacity), min_length=min_length,
                                     sample_batch_size=int(batch_size), add_batches=True)

        def sample(state, key):
            out = inner.sample(state, key)
            size = buffer_size(state).astype(jnp.float32)
            probabilities = jnp.full((int(batch_size),), 1.0, jnp.float32) / size
            return Transition(*out.experience), jnp.zeros((int(batch_size),), jnp.int32), probabilities

        def set_priorities(state, indices, priorities):
            del indices, priorities
            return state

    def init(example: Transition):
        return inner.init(tuple(example))

    def add(state, batch: Transition):
        if prioritized:
            return inner.add(state, tuple(batch))
        return _add_in_place(state, tuple(batch))

    return Buffer(init=init, add=add, sample=sample, set_priorities=set_priorities, capacity=int(capacity),
                  batch_size=int(batch_size), prioritized=bool(prioritized))
