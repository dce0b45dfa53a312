"""Vectorised policy evaluation: one episode in each of many environments, statistics and comparisons.

    stats = rollout_episodes(env, env_params, policy, key, n_episodes=1000)
    summarize(stats.info["shortfall_bps"])   # {"mean", "std", "n", "ci95_low", "ci95_high", "nonfinite"}
    compare(env, env_params, {"twap": p1, "immediate": p2}, key, 1000, metrics="shortfall_bps", reference="twap")

`rollout_many` (and so `compare`) runs several policies in ONE compiled program (a vmap over the index
of a `lax.switch` of the policies): the env's step compiles once for the whole comparison, and calling
again with other `env_params` or another key reuses it. `rollout` is the same episodes as a plain
traceable function, for use inside a caller's own `jit` with a policy that closes over traced values
(the network params being trained: `trading_jax.rl.ppo.make_evaluator`).

**Policies** act for ONE environment (they are vmapped here): `policy(obs, state, key, env_params) ->
action`, or, for a policy with a memory (an LSTM), a `RecurrentPolicy(step, initial_carry)` with
`step(obs, state, key, env_params, carry) -> (action, carry)`; every episode starts from
`initial_carry()` and the carry is threaded through the episode's steps.

**Episodes.** `rollout_episodes` resets `n_episodes` environments (vmapped) and runs a `lax.scan` of
`max_steps` vmapped steps. Each environment runs exactly ONE episode: a done mask freezes its total
reward, length and final `info` at its first `terminated | truncated`; the steps after it (gymnax's
auto-reset has started a new episode there) are computed, because the batch moves in lock step, but
ignored. The final `info` is the `info` of the step that ended the episode (e.g. the execution env's
`shortfall_bps` at completion, the trading env's `equity` after the last decision).

**Common random numbers.** Episode `i`'s keys are functions of `(key, i)` and the step index only:
`reset_key_i, env_key_i, policy_key_i = split(split(key, n_episodes)[i], 3)`, step `s` uses
`fold_in(env_key_i, s)` for the env and `fold_in(policy_key_i, s)` for the policy. The execution env
draws all the noise of a step from its step key (`orderbook.draw_noise(key)` after gymnax's split;
nothing depends on the action), and the trading and portfolio envs draw only the episode start from
the reset key; so with the same `key`, every policy faces the same episode starts and the same market
noise, and `compare` can report paired differences (much tighter than the difference of two
independent means). The keys of episode `i` depend on `n_episodes` (through the split): compare
policies at equal `n_episodes`.

**Statistics** (`summarize`, and `paired_difference` for the differences to a reference policy) are
`trading_jax.evaluation.stats`: mean, sample std, the Student-t 95% interval of the mean, and NaN
statistics with a `nonfinite` count when any value is NaN or infinite.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.evaluation.stats import paired_difference, summarize

Array = jax.Array

__all__ = ["EpisodeStats", "RecurrentPolicy", "rollout", "rollout_episodes", "rollout_many", "summarize",
           "paired_difference", "compare", "default_max_steps"]


class EpisodeStats(NamedTuple):
    """Per-episode results of `rollout_episodes` (leading axis: episodes).

    Attributes:
        total_reward: `[n]` float32, sum of the rewards up to and including the ending step.
        length: `[n]` int32, steps taken in the episode (`max_steps` if it did not end).
        done: `[n]` bool, whether the episode ended within `max_steps`.
        info: dict of `[n, ...]`: each `info` entry of the step that ended the episode (for an episode
            that did not end: of its last step, `max_steps`), including gymnax's `terminated` and
            `truncated` (`final_observation` is left out).
        trajectory: dict of `[n, max_steps, ...]`, the per-step values named in `record` (empty by
            default). Steps `s >= length` belong to auto-reset episodes: mask them with
            `arange(max_steps) < length[:, None]`.
    """

    total_reward: Array
    length: Array
    done: Array
    info: dict[str, Array]
    trajectory: dict[str, Array] = {}


class RecurrentPolicy(NamedTuple):
    """A policy with a memory, for ONE environment (module docstring).

    Attributes:
        step: `step(obs, state, key, env_params, carry) -> (action, carry)`.
        initial_carry: `initial_carry() -> carry`, the carry (a pytree of arrays) at an episode's start.

    Both must be hashable (functions are) to pass to `rollout_many` / `rollout_episodes` / `compare`.
    """

    step: Callable
    initial_carry: Callable


def _recurrent(policy) -> RecurrentPolicy:
    """Any policy as a `RecurrentPolicy` (a plain one with an empty carry)."""
    if isinstance(policy, RecurrentPolicy):
        return policy

    def step(obs, state, key, env_params, carry):
        return policy(obs, state, key, env_params), carry

    return RecurrentPolicy(step, tuple)


def default_max_steps(env, env_params=None) -> int:
    """The longest episode of the env: its `horizon` (execution) or `episode_length` (trading, portfolio),
    else gymnax's `env_params.max_steps_in_episode` (when it is a concrete number)."""
    for name in ("horizon", "episode_length"):
        if getattr(env, name, None) is not None:
            return int(getattr(env, name))
    try:
        return int(getattr(env_params, "max_steps_in_episode"))
    except (AttributeError, TypeError, jax.errors.ConcretizationTypeError):  # none, or traced
        pass
    raise ValueError(f"pass max_steps: {type(env).__name__} has no horizon or episode_length")


def _episode_keys(key: Array, n_episodes: int) -> tuple[Array, Array, Array]:
    keys = jax.vmap(lambda k: jax.random.split(k, 3))(jax.random.split(key, n_episodes))
    return keys[:, 0], keys[:, 1], keys[:, 2]


def rollout(env, env_params, policy, key: Array, n_episodes: int, max_steps: int | None = None,
            record: Sequence[str] = ()) -> EpisodeStats:
    """`rollout_episodes` as a plain traceable function (no `jit`, no size checks): call it inside your
    own `jit`, where `policy` may close over traced values (e.g. the params being trained).

    Args:
        env, env_params, key, n_episodes, max_steps, record: as `rollout_episodes` (`n_episodes`,
            `max_steps` and `record` are Python values).
        policy: `policy(obs, state, key, env_params) -> action` or a `RecurrentPolicy`, for ONE env.

    Returns:
        `EpisodeStats` with `[n_episodes]` leading axes.
    """
    max_steps = default_max_steps(env, env_params) if max_steps is None else int(max_steps)
    record = tuple(record)
    policy = _recurrent(policy)
    reset_keys, env_keys, policy_keys = _episode_keys(key, n_episodes)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(reset_keys, env_params)
    carry = jax.tree.map(lambda c: jnp.broadcast_to(c, (n_episodes,) + jnp.shape(c)), policy.initial_carry())

    act = jax.vmap(policy.step, in_axes=(0, 0, 0, None, 0))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def one_step(obs, state, carry, s):
        k_env = jax.vmap(jax.random.fold_in, in_axes=(0, None))(env_keys, s)
        k_pol = jax.vmap(jax.random.fold_in, in_axes=(0, None))(policy_keys, s)
        action, carry = act(obs, state, k_pol, env_params, carry)
        obs2, state2, reward, terminated, truncated, info = step(k_env, state, action, env_params)
        info = {k: v for k, v in info.items() if k != "final_observation"}
        return obs2, state2, carry, reward, jnp.logical_or(terminated, truncated), info, action

    # info structure and dtypes, for the carry
    info_shape = jax.eval_shape(lambda o, st, c: one_step(o, st, c, 0)[5], obs, state, carry)
    info0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info_shape)

    def body(loop, s):
        obs, state, carry, done, total, length, final = loop
        obs, state, carry, reward, ended, info, action = one_step(obs, state, carry, s)
        active = ~done
        total = total + jnp.where(active, reward, 0.0)
        length = length + active.astype(jnp.int32)
        # keep the info of the ending step (or of the last step, for an episode still running)
        take = active & (ended | (s == max_steps - 1))
        final = jax.tree.map(
            lambda f, v: jnp.where(take.reshape(take.shape + (1,) * (v.ndim - 1)), v, f), final, info
        )
        extra = {"action": action, "reward": reward}
        recorded = {name: extra[name] if name in extra else info[name] for name in record}
        return (obs, state, carry, done | ended, total, length, final), recorded

    init = (
        obs,
        state,
        carry,
        jnp.zeros((n_episodes,), bool),
        jnp.zeros((n_episodes,), jnp.float32),
        jnp.zeros((n_episodes,), jnp.int32),
        info0,
    )
    (_, _, _, done, total, length, final), recorded = jax.lax.scan(body, init, jnp.arange(max_steps))
    trajectory = {name: jnp.swapaxes(v, 0, 1) for name, v in recorded.items()}
    return EpisodeStats(total_reward=total, length=length, done=done, info=final, trajectory=trajectory)


def _switch(index, policies: tuple) -> RecurrentPolicy:
    """One `RecurrentPolicy` acting as `policies[index]` (a `lax.switch`; the carry holds every policy's)."""
    recurrent = tuple(_recurrent(p) for p in policies)

    def branch(i):
        def step(obs, state, key, env_params, carries):
            action, carry = recurrent[i].step(obs, state, key, env_params, carries[i])
            return action, carries[:i] + (carry,) + carries[i + 1:]

        return step

    def step(obs, state, key, env_params, carries):
        return jax.lax.switch(index, [branch(i) for i in range(len(recurrent))], obs, state, key, env_params, carries)

    return RecurrentPolicy(step, lambda: tuple(p.initial_carry() for p in recurrent))


@partial(jax.jit, static_argnames=("env", "policies", "n_episodes", "max_steps", "record"))
def _rollout_many(env, env_params, policies: tuple, key, n_episodes: int, max_steps: int, record: tuple) -> EpisodeStats:
    """`rollout` of every policy on the same keys, stacked on a leading `[P]` axis, in ONE program
    (a vmap over the policy index of a `lax.switch`: one compilation for the whole comparison)."""
    if len(policies) == 1:
        stats = rollout(env, env_params, policies[0], key, n_episodes, max_steps, record)
        return jax.tree.map(lambda x: x[None], stats)

    def run(index):
        return rollout(env, env_params, _switch(index, policies), key, n_episodes, max_steps, record)

    return jax.vmap(run)(jnp.arange(len(policies)))


def rollout_many(
    env,
    env_params,
    policies: Sequence[Callable],
    key: Array,
    n_episodes: int,
    max_steps: int | None = None,
    record: Sequence[str] = (),
) -> EpisodeStats:
    """`rollout_episodes` of several policies on the same episodes, compiled once: `[P, n_episodes]` stats.

    The policies must return actions of the same shape and dtype (they do for one env). The compiled
    program is cached on (env, policies, n_episodes, max_steps, record): calling again with other
    `env_params` (e.g. another impact coefficient) or another key does not recompile.
    """
    max_steps, env_params = _check_sizes(env, env_params, n_episodes, max_steps)
    return _rollout_many(env, env_params, tuple(policies), key, int(n_episodes), int(max_steps), tuple(record))


def _check_sizes(env, env_params, n_episodes, max_steps):
    if env_params is None:
        env_params = env.default_params
    if max_steps is None:
        max_steps = default_max_steps(env, env_params)
    if int(n_episodes) < 1 or int(max_steps) < 1:
        raise ValueError(f"n_episodes and max_steps must be >= 1; got {n_episodes}, {max_steps}")
    return int(max_steps), env_params


def rollout_episodes(
    env,
    env_params,
    policy: Callable,
    key: Array,
    n_episodes: int,
    max_steps: int | None = None,
    record: Sequence[str] = (),
) -> EpisodeStats:
    """Run one episode in each of `n_episodes` environments in parallel (module docstring).

    Args:
        env: a gymnax environment (ours: execution, trading, portfolio).
        env_params: its params (shared by all episodes).
        policy: `policy(obs, state, key, env_params) -> action` for ONE environment (vmapped here), or a
            `RecurrentPolicy`; hashable (a function is), it is a static argument of the compiled rollout.
        key: PRNG key; the same key gives the same episodes to every policy (common random numbers).
        n_episodes: episodes (= parallel environments).
        max_steps: steps to run; default `default_max_steps(env)` (enough for every episode to end).
        record: per-step values to return in `EpisodeStats.trajectory` (`[n, max_steps, ...]`): `info`
            entries, "action" or "reward".

    Returns:
        `EpisodeStats` with `[n_episodes]` leading axes.
    """
    stats = rollout_many(env, env_params, (policy,), key, n_episodes, max_steps, record)
    return jax.tree.map(lambda x: x[0], stats)


def _metric_values(stats: EpisodeStats, metric) -> np.ndarray:
    if callable(metric):
        return np.asarray(metric(stats), np.float64)
    if metric == "total_reward":
        return np.asarray(stats.total_reward, np.float64)
    if metric == "length":
        return np.asarray(stats.length, np.float64)
    if metric not in stats.info:
        raise KeyError(f"unknown metric {metric!r}; info has {sorted(stats.info)}")
    return np.asarray(stats.info[metric], np.float64)


def compare(
    env,
    env_params,
    policies: Mapping[str, Callable],
    key: Array,
    n_episodes: int,
    max_steps: int | None = None,
    metrics: Sequence[Any] | str = ("total_reward",),
    reference: str | None = None,
    n_actions: int | None = None,
) -> list[dict[str, Any]]:
    """Evaluate several policies on the SAME episodes (same `key`: common random numbers).

    Args:
        env, env_params, key, n_episodes, max_steps: as `rollout_episodes`.
        policies: name -> policy.
        metrics: names of per-episode values ("total_reward", "length" or an `info` entry such as
            "shortfall_bps" or "equity"), or callables `EpisodeStats -> [n]` (named by `__name__`); a
            single string is one metric.
        reference: optional policy name; each row then adds, per metric, the paired difference
            `metric(policy) - metric(reference)` over the same episodes (`METRIC_diff_*` keys,
            `paired_difference`).
        n_actions: for a discrete action space, also report `action_share`: the fraction of the episodes'
            steps (steps 0 .. length - 1 of each episode, not those of the auto-reset episode after it)
            on which each action 0 .. n_actions - 1 was taken.

    Returns:
        One dict per policy, in the order given: `policy`, `n_episodes`, `completed` (fraction of
        episodes that ended), and for each metric `METRIC_mean`, `METRIC_std`, `METRIC_ci95_low`,
        `METRIC_ci95_high`, `METRIC_nonfinite` (`summarize`: NaN statistics when a value is not finite)
        and with a reference `METRIC_diff_mean`, `..._diff_std`, `..._diff_ci95_low`, `..._diff_ci95_high`.
    """
    if isinstance(metrics, str) or callable(metrics):
        metrics = (metrics,)
    if reference is not None and reference not in policies:
        raise KeyError(f"reference {reference!r} is not one of the policies {list(policies)}")
    values: dict[str, dict[str, np.ndarray]] = {}
    rows = []
    record = ("action",) if n_actions else ()
    batched = rollout_many(env, env_params, tuple(policies.values()), key, n_episodes, max_steps, record)
    for index, name in enumerate(policies):
        stats = jax.tree.map(lambda x: x[index], batched)
        row: dict[str, Any] = {"policy": name, "n_episodes": int(n_episodes),
                               "completed": float(np.mean(np.asarray(stats.done)))}
        if n_actions:
            actions = np.asarray(stats.trajectory["action"])
            active = np.arange(actions.shape[1])[None, :] < np.asarray(stats.length)[:, None]
            counts = np.bincount(actions[active].astype(np.int64).ravel(), minlength=n_actions)
            row["action_share"] = (counts / max(counts.sum(), 1)).tolist()
        values[name] = {}
        for metric in metrics:
            label = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
            v = _metric_values(stats, metric)
            values[name][label] = v
            s = summarize(v, label)
            row.update({f"{label}_mean": s["mean"], f"{label}_std": s["std"],
                        f"{label}_ci95_low": s["ci95_low"], f"{label}_ci95_high": s["ci95_high"],
                        f"{label}_nonfinite": s["nonfinite"]})
        rows.append(row)
    if reference is not None:
        for row in rows:
            for label, v in values[row["policy"]].items():
                s = paired_difference(v, values[reference][label], f"{label} differences")
                row.update({f"{label}_diff_mean": s["mean"], f"{label}_diff_std": s["std"],
                            f"{label}_diff_ci95_low": s["ci95_low"], f"{label}_diff_ci95_high": s["ci95_high"]})
    return rows
