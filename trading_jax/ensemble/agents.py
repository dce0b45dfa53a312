"""An ensemble of RL agents: K PPO members trained in one vmapped call, combined by Thompson sampling
over their recent episode returns, or by FinRL's rule (the single member with the best validation Sharpe).

    members = rl.ppo.train_agents(config, key, n_agents=4)              # PPOResult, leaves [4, ...]
    policy_fn = rl.ppo.ppo_policy_fn(config, env, env_params)           # member params -> policy
    out = evaluate_ensemble(env, env_params, members, policy_fn, key, n_episodes=200, discount=0.95)
    out.returns, out.arms                                               # [200], [200]
    table = compare_agents(env, env_params, members, policy_fn, test_key, 200,
                           val_key=val_key, n_val_episodes=50, val_env_params=val_params)

**Members** are any pytree whose leaves have a leading member axis `[K, ...]` (a PPO population's
`PPOResult`, a `PolicyParams`, or stand-ins), and `policy_fn(member) -> policy` turns ONE member's
params (the leaves indexed `a[k]`, possibly traced) into a policy for one environment as
`trading_jax.evaluation.rollout` runs them: `policy(obs, state, key, env_params) -> action` or a
`RecurrentPolicy`. `policy_fn` must be hashable (a function is): it is a static argument of the
compiled programs, so keep one `policy_fn` per setting to reuse the compilation.

**Thompson ensemble** (`evaluate_ensemble`). Each episode is one decision, and the episodes run in
sequence as one jitted `lax.scan`: draw each member's mean return from its Normal-Inverse-Gamma
posterior (`trading_jax.ensemble.thompson`), pick the member with the largest draw, gather its params
(`jax.tree.map(lambda a: a[arm], members)`: one policy is compiled, not K), run it for one episode
(`trading_jax.evaluation.rollout.rollout`), and update that member's posterior with the episode's total
reward. With `discount < 1` old episodes are forgotten, so the choice follows a change of regime.
The first `initial_pulls` rounds play the members in turn (each member gets `initial_pulls` episodes
before any sampling), so the posterior of every member starts from its own returns rather than from a
prior on the wrong scale. The posteriors see `return / reward_scale`: the default prior suits returns of
order 1, so pass the returns' typical spread as `reward_scale` (`compare_agents` uses the std of the
validation returns).

**Paired episodes.** Episode i of a run with `key` uses the env key `episode_keys(key, n)[0][i]` (its
reset, market noise and policy noise), whoever acts: `member_returns` runs every member on those same
episodes, so the ensemble's return on episode i, the member it chose, and every other member's return
on episode i can be compared pair by pair (common random numbers; see `evaluation.rollout`).

**Agents of several algorithms** (`mix_agents`): members must share one parameter structure and one
`policy_fn`, so agents of different algorithms (PPO, SAC, TD3, DDPG, DQN: other params, other policy
code) are first mixed into one such population:

    members, policy_fn = mix_agents([(ppo_members, ppo_policy_fn), (sac_members, sac_policy_fn)],
                                    env, env_params, names=("ppo", "sac"))
    table = summarize_comparison(compare_agents(env, env_params, members, policy_fn, ...))  # rows ppo_0, ...

Member k of the mix acts exactly as its group's policy on its own params (a `lax.switch` on its group),
so every function here takes the mix unchanged.

**FinRL's rule** (`pick_by_sharpe`): run every member on validation episodes, keep the member with the
largest Sharpe ratio of its episode returns (mean / sample std, ddof 1, not annualised), and trade
with it alone on the test episodes.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.ensemble import thompson
from trading_jax.evaluation.stats import paired_difference, summarize
from trading_jax.evaluation.rollout import RecurrentPolicy, default_max_steps, rollout

Array = jax.Array

__all__ = [
    "EnsembleResult",
    "n_members",
    "member",
    "episode_keys",
    "member_returns",
    "evaluate_ensemble",
    "thompson_state_from_returns",
    "thompson_replay",
    "sharpe_ratios",
    "pick_by_sharpe",
    "compare_agents",
    "summarize_comparison",
    "MixedPolicyFn",
    "mix_agents",
]


class EnsembleResult(NamedTuple):
    """What `evaluate_ensemble` returns (leading axis: episodes, in the order played).

    Attributes:
        returns: `[n]` float32, total reward of each episode (of the member that played it).
        arms: `[n]` int32, the member chosen for each episode.
        lengths: `[n]` int32, steps of each episode.
        done: `[n]` bool, whether each episode ended within `max_steps`.
        state: the final `thompson.ThompsonState` (`[K]` posteriors).
    """

    returns: Array
    arms: Array
    lengths: Array
    done: Array
    state: thompson.ThompsonState


# ----------------------------------------------------------------------------------- members


def n_members(members) -> int:
    """K, the leading axis of every leaf of `members`."""
    leaves = jax.tree.leaves(members)
    if not leaves:
        raise ValueError("members has no array leaves")
    sizes = {int(jnp.shape(a)[0]) if jnp.ndim(a) else -1 for a in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(f"every leaf of members needs the same leading member axis; got sizes {sorted(sizes)}")
    return sizes.pop()


def member(members, index):
    """Member `index`'s params: every leaf indexed `a[index]` (`index` may be traced)."""
    return jax.tree.map(lambda a: a[index], members)


def episode_keys(key: Array, n_episodes: int) -> tuple[Array, Array]:
    """`(env_keys [n], choice_keys [n])`: episode i's env key (shared by every member: paired episodes)
    and the ensemble's key for its choice at episode i."""
    k_env, k_choice = jax.random.split(key)
    return jax.random.split(k_env, int(n_episodes)), jax.random.split(k_choice, int(n_episodes))


def _steps(env, env_params, max_steps):
    if env_params is None:
        env_params = env.default_params
    steps = default_max_steps(env, env_params) if max_steps is None else int(max_steps)
    if steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    return env_params, steps


def _one_episode(env, env_params, policy, env_key, max_steps):
    stats = rollout(env, env_params, policy, env_key, 1, max_steps)
    return stats.total_reward[0], stats.length[0], stats.done[0]


# ------------------------------------------------------------------------------ member returns


@partial(jax.jit, static_argnames=("env", "policy_fn", "n_episodes", "max_steps"))
def _member_returns(env, env_params, members, policy_fn, key, n_episodes: int, max_steps: int):
    env_keys, _ = episode_keys(key, n_episodes)

    def one_member(params):
        policy = policy_fn(params)
        return jax.vmap(lambda k: _one_episode(env, env_params, policy, k, max_steps))(env_keys)

    return jax.vmap(one_member)(members)


def member_returns(env, env_params, members, policy_fn: Callable, key: Array, n_episodes: int,
                   max_steps: int | None = None) -> Array:
    """Every member's total reward on the SAME `n_episodes` episodes as `evaluate_ensemble(..., key, ...)`.

    Args:
        env, env_params: a gymnax environment and its params (None: `env.default_params`).
        members: member params, leaves `[K, ...]`.
        policy_fn: `policy_fn(member) -> policy` for one env (module docstring).
        key: PRNG key of the episodes (`episode_keys`).
        n_episodes: episodes per member.
        max_steps: steps per episode (default the env's episode length).

    Returns:
        `[K, n_episodes]` float32 episode returns.
    """
    env_params, steps = _steps(env, env_params, max_steps)
    n_members(members)
    return _member_returns(env, env_params, members, policy_fn, key, int(n_episodes), steps)[0]


# ------------------------------------------------------------------------------- Thompson ensemble


def _ensemble_start(k: int, state, discount, prior, initial_pulls, reward_scale):
    """`(state, pulls, scale)` of a K-member ensemble run: fresh posteriors with `initial_pulls` round-robin
    episodes, or the given `state` (K arms) with none; ValueError for negative pulls or a bad `reward_scale`."""
    if state is None:
        state = thompson.init(k, discount=discount, **dict(prior or {}))
        pulls = int(initial_pulls)
    else:
        if state.count.shape[0] != k:
            raise ValueError(f"the Thompson state has {state.count.shape[0]} arms for {k} members")
        pulls = 0
    if pulls < 0:
        raise ValueError(f"initial_pulls must be >= 0, got {initial_pulls}")
    scale = float(reward_scale)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"reward_scale must be a positive number, got {reward_scale}")
    return state, jnp.int32(pulls), jnp.float32(scale)


def _choose(i, key, state, initial_pulls, k):
    """Episode i's arm: members in turn for the first `initial_pulls * k` episodes, then a Thompson draw."""
    return jnp.where(i < initial_pulls * k, i % k, thompson.choose(key, state)).astype(jnp.int32)


@partial(jax.jit, static_argnames=("env", "policy_fn", "n_episodes", "max_steps"))
def _evaluate_ensemble(env, env_params, members, policy_fn, key, state, reward_scale, initial_pulls,
                       n_episodes: int, max_steps: int):
    k = state.count.shape[0]
    env_keys, choice_keys = episode_keys(key, n_episodes)

    def episode(state, xs):
        i, env_key, choice_key = xs
        arm = _choose(i, choice_key, state, initial_pulls, k)
        ret, length, done = _one_episode(env, env_params, policy_fn(member(members, arm)), env_key, max_steps)
        return thompson.update(state, arm, ret / reward_scale), (ret, arm, length, done)

    xs = (jnp.arange(n_episodes), env_keys, choice_keys)
    state, (returns, arms, lengths, done) = jax.lax.scan(episode, state, xs)
    return EnsembleResult(returns, arms, lengths, done, state)


def evaluate_ensemble(env, env_params, members, policy_fn: Callable, key: Array, n_episodes: int,
                      max_steps: int | None = None, *, discount: float = 1.0, prior: Mapping[str, Any] | None = None,
                      state: thompson.ThompsonState | None = None, initial_pulls: int = 1,
                      reward_scale: float = 1.0) -> EnsembleResult:
    """Run the Thompson-sampling ensemble for `n_episodes` episodes in sequence (module docstring).

    Episode i: `arm_i = argmax_k mu_k` with `mu_k` drawn from member k's posterior (members in turn
    for the first `initial_pulls * K` episodes), the member plays the episode on env key
    `episode_keys(key, n)[0][i]`, and its posterior absorbs the episode's total reward. One jitted
    `lax.scan`; the same key gives the same choices and returns.

    Args:
        env, env_params, members, policy_fn, key, n_episodes, max_steps: as `member_returns`.
        discount: forgetting factor of the posteriors (`thompson.init`), in (0, 1].
        prior: keyword arguments of `thompson.init` (m0, kappa0, alpha0, beta0); ignored with `state`.
        state: start from this `ThompsonState` instead (e.g. `thompson_state_from_returns` of the
            members' validation returns); then there are no initial round-robin pulls.
        initial_pulls: round-robin episodes per member before sampling starts (0: sample from the start).
        reward_scale: the posteriors see `return / reward_scale`: the default prior (`beta0 / alpha0 = 1`,
            a prior variance of 1) suits returns of order 1, so pass the returns' typical spread (e.g.
            the std of validation returns; `compare_agents` does) for returns on another scale.

    Returns:
        `EnsembleResult` with `[n_episodes]` returns, arms, lengths and done flags and the final posteriors.
    """
    env_params, steps = _steps(env, env_params, max_steps)
    k = n_members(members)
    state, pulls, scale = _ensemble_start(k, state, discount, prior, initial_pulls, reward_scale)
    return _evaluate_ensemble(env, env_params, members, policy_fn, key, state, scale, pulls, int(n_episodes), steps)


def thompson_state_from_returns(returns, discount: float = 1.0, **prior) -> thompson.ThompsonState:
    """Posteriors after every member played the same episodes: `returns` `[K, n]` absorbed episode by
    episode with `thompson.update_all` (e.g. the validation returns, to warm-start the test ensemble)."""
    returns = jnp.asarray(returns, jnp.float32)
    state = thompson.init(returns.shape[0], discount=discount, **prior)
    return jax.lax.scan(lambda s, r: (thompson.update_all(s, r), None), state, returns.T)[0]


def thompson_replay(returns, key, *, discount: float = 1.0, prior: Mapping[str, Any] | None = None, state=None,
                    initial_pulls: int = 1, reward_scale: float = 1.0):
    """The Thompson-sampling ensemble of `trading_jax.ensemble.agents.evaluate_ensemble`, replayed on episodes
    every agent has already played: `(arms [n] int32, final ThompsonState)`.

    Episode i: `arm_i = argmax_k mu_k` with `mu_k` drawn from agent k's Normal-Inverse-Gamma posterior (agents in
    turn for the first `initial_pulls * K` episodes), and the chosen agent's posterior absorbs
    `returns[arm_i, i] / reward_scale`. The choice keys are `evaluate_ensemble`'s (`episode_keys(key, n)[1]`), so
    when `returns` are `member_returns(..., key, n)` of the same agents the arms and returns are those of
    `evaluate_ensemble(..., key, n)`: an agent's return on an episode does not depend on which episodes it played
    before, so playing the chosen agent live and reading its return off `returns` are the same thing. This is how
    a comparison scores the ensemble on the table's episodes (common random numbers with every agent and baseline)
    without playing them again.

    Args:
        returns: `[K, n]` total reward of each agent on each episode (float32, as the rollouts give them).
        key: the episodes' key (its second half draws the choices).
        discount, prior, initial_pulls, reward_scale: as `evaluate_ensemble`.
        state: start from this `ThompsonState` (e.g. `thompson_state_from_returns` of validation returns); then
            there are no round-robin episodes.
    """
    returns = jnp.asarray(returns, jnp.float32)
    if returns.ndim != 2:
        raise ValueError(f"returns must be [K, n]; got shape {returns.shape}")
    k, n = returns.shape
    state, pulls, scale = _ensemble_start(k, state, discount, prior, initial_pulls, reward_scale)
    state, arms = _replay(returns, episode_keys(key, n)[1], state, scale, pulls)
    return np.asarray(arms), state


@jax.jit
def _replay(returns, choice_keys, state, reward_scale, initial_pulls):
    k, n = returns.shape

    def episode(state, xs):
        i, key, column = xs
        arm = _choose(i, key, state, initial_pulls, k)
        return thompson.update(state, arm, column[arm] / reward_scale), arm

    return jax.lax.scan(episode, state, (jnp.arange(n), choice_keys, returns.T))


# ------------------------------------------------------------------------------------ FinRL's rule


def sharpe_ratios(returns) -> Array:
    """Sharpe ratio of each member's episode returns, `mean / std` (sample std, ddof 1, not annualised).

    Args:
        returns: `[K, n]` episode returns (n >= 2).

    Returns:
        `[K]` float32: `+-inf` where the std is 0 and the mean is not (a sure gain / loss), 0 where both
        are 0, NaN where a return is NaN.
    """
    r = jnp.asarray(returns, jnp.float32)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"returns must be [K, n] with n >= 2 episodes; got shape {r.shape}")
    mean = jnp.mean(r, axis=1)
    std = jnp.std(r, axis=1, ddof=1)
    degenerate = jnp.where(mean > 0, jnp.inf, jnp.where(mean < 0, -jnp.inf, 0.0))  # std == 0
    sharpe = jnp.where(std > 0, mean / jnp.where(std > 0, std, 1.0), degenerate)
    return jnp.where(jnp.isnan(mean) | jnp.isnan(std), jnp.nan, sharpe).astype(jnp.float32)


def pick_by_sharpe(returns) -> int:
    """FinRL's rule: the index of the member with the largest `sharpe_ratios(returns)` (`[K, n]`);
    ties go to the lowest index, NaN ratios never win (all NaN: ValueError)."""
    sharpe = np.asarray(sharpe_ratios(returns), np.float64)
    if np.all(np.isnan(sharpe)):
        raise ValueError("every member's Sharpe ratio is NaN (non-finite returns)")
    return int(np.argmax(np.where(np.isnan(sharpe), -np.inf, sharpe)))


# -------------------------------------------------------------------------------------- comparison


def compare_agents(env, env_params, members, policy_fn: Callable, key: Array, n_episodes: int, *,
                   val_key: Array, n_val_episodes: int, val_env_params=None, max_steps: int | None = None,
                   discount: float = 1.0, prior: Mapping[str, Any] | None = None, warm_start: bool = False,
                   initial_pulls: int = 1, reward_scale: float | None = None) -> dict[str, Any]:
    """Every member, the Thompson ensemble and the Sharpe-picked member on the SAME test episodes.

    Validation: every member plays `n_val_episodes` episodes (`val_key`, on `val_env_params`, default
    `env_params`: e.g. the validation split's market) and `pick_by_sharpe` picks one. Test: every member,
    and the ensemble, play the `n_episodes` episodes of `key` (paired: episode i is the same episode for
    all), and the picked member's test returns are its row of the members' returns.

    Args:
        env, env_params, members, policy_fn, key, n_episodes, max_steps: as `evaluate_ensemble` (test).
        val_key, n_val_episodes, val_env_params: the validation episodes (use a key other than `key`).
        discount, prior, initial_pulls: the ensemble's settings (`evaluate_ensemble`).
        warm_start: start the ensemble's posteriors from the validation returns
            (`thompson_state_from_returns`) instead of round-robin pulls.
        reward_scale: as `evaluate_ensemble`; default the sample std of all validation returns (1 if
            it is 0 or not finite).

    Returns:
        dict: "members" `[K, n]`, "thompson" `[n]`, "thompson_arms" `[n]`, "sharpe_pick" `[n]` (float64
        NumPy), "picked" (int), "validation" `[K, n_val]`, "validation_sharpe" `[K]`, "reward_scale";
        and "labels" (K names, e.g. "ppo_0") when `policy_fn` has `labels` (a `mix_agents` mix).
    """
    val_params = env_params if val_env_params is None else val_env_params
    validation = member_returns(env, val_params, members, policy_fn, val_key, n_val_episodes, max_steps)
    picked = pick_by_sharpe(validation)
    if reward_scale is None:
        spread = float(np.std(np.asarray(validation, np.float64), ddof=1))
        reward_scale = spread if np.isfinite(spread) and spread > 0 else 1.0
    test = member_returns(env, env_params, members, policy_fn, key, n_episodes, max_steps)
    state = (thompson_state_from_returns(jnp.asarray(validation) / reward_scale, discount, **dict(prior or {}))
             if warm_start else None)
    ensemble = evaluate_ensemble(env, env_params, members, policy_fn, key, n_episodes, max_steps,
                                 discount=discount, prior=prior, state=state, initial_pulls=initial_pulls,
                                 reward_scale=reward_scale)
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    test = f64(test)
    out = {"members": test, "thompson": f64(ensemble.returns), "thompson_arms": np.asarray(ensemble.arms),
           "sharpe_pick": test[picked], "picked": picked, "validation": f64(validation),
           "validation_sharpe": f64(sharpe_ratios(validation)), "reward_scale": float(reward_scale)}
    labels = getattr(policy_fn, "labels", None)
    if labels is not None:
        out["labels"] = list(labels)
    return out


def summarize_comparison(comparison: Mapping[str, Any], reference: str = "thompson",
                         labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows for a results table from `compare_agents`' output: one per member, "thompson" and
    "sharpe_pick", each with the mean episode return, its std and 95% t-interval, and the paired
    difference to `reference` over the same episodes (`diff_mean`, `diff_ci95_low`, `diff_ci95_high`).

    Members are named by `labels` (K distinct names, e.g. `mix_agents`' "ppo_0", "sac_1"), else by
    `comparison["labels"]` when present, else "member_k"; `reference` may be any row's name.
    """
    k = len(comparison["members"])
    if labels is None:
        labels = comparison.get("labels")
    if labels is None:
        labels = [f"member_{j}" for j in range(k)]
    labels = [str(name) for name in labels]
    if len(labels) != k or len(set(labels)) != k or {"thompson", "sharpe_pick"} & set(labels):
        raise ValueError(f"labels must be {k} distinct names other than 'thompson' and 'sharpe_pick'; got {labels}")
    series = dict(zip(labels, comparison["members"]))
    series["thompson"] = comparison["thompson"]
    series["sharpe_pick"] = comparison["sharpe_pick"]
    if reference not in series:
        raise KeyError(f"reference {reference!r} is not one of {list(series)}")
    rows = []
    for name, values in series.items():
        s = summarize(values, f"{name} returns")
        d = paired_difference(values, series[reference], f"{name} - {reference}")
        rows.append({"policy": name, "mean": s["mean"], "std": s["std"], "ci95_low": s["ci95_low"],
                     "ci95_high": s["ci95_high"], "diff_mean": d["mean"], "diff_ci95_low": d["ci95_low"],
                     "diff_ci95_high": d["ci95_high"]})
    return rows


# ------------------------------------------------------------------------- agents of several algorithms


@dataclasses.dataclass(frozen=True)
class MixedPolicyFn:
    """The `policy_fn` of a `mix_agents` mix: one member of the mix -> its group's policy on its own params.

    Hashable and compared by value (the groups' `policy_fn`s, names and sizes): it keys the compiled
    programs like any `policy_fn`, and an equal mix reuses them.

    Attributes:
        policy_fns: the G groups' `policy_fn(member) -> policy`.
        names: the G group names.
        sizes: `K_g`, the members of each group.
    """

    policy_fns: tuple[Callable, ...]
    names: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """K member names `NAME_j` (group name, index in the group), in the mix's order: "ppo_0", "ppo_1", "sac_0"."""
        return tuple(f"{name}_{j}" for name, size in zip(self.names, self.sizes) for j in range(size))

    def __call__(self, one):
        """The policy of ONE member of the mix (`member(members, k)`, possibly traced): every group's policy
        is built on that member's slot for the group, and each step runs `lax.switch(one["group"], ...)`.

        With a scalar group index (the Thompson scan's chosen arm) only the member's own branch runs;
        under `vmap` over members (`member_returns`) the switch becomes a select: every branch is computed
        and the member's own is kept, so member k's actions are exactly its group's. A `RecurrentPolicy`
        results when any group's policy is recurrent; its carry is the tuple of every group's carry (only
        the member's own advances).
        """
        policies = tuple(fn(params) for fn, params in zip(self.policy_fns, one["params"]))
        return _switch_policy(one["group"], policies, self.names)


def _branch(i: int, policy) -> Callable:
    """Group i's policy as `(obs, state, key, env_params, carries) -> (action, carries)`."""
    if isinstance(policy, RecurrentPolicy):
        def branch(obs, state, key, env_params, carries):
            action, carry = policy.step(obs, state, key, env_params, carries[i])
            return action, carries[:i] + (carry,) + carries[i + 1:]
    else:
        def branch(obs, state, key, env_params, carries):
            return policy(obs, state, key, env_params), carries
    return branch


def _describe(action) -> str:
    """`float32[1]`-style description of an abstract action (a pytree of them joined by ', ')."""
    return ", ".join(f"{leaf.dtype}{list(leaf.shape)}" for leaf in jax.tree.leaves(action))


def _check_actions(names, branches, args) -> None:
    """Raise a one-line ValueError unless every branch returns an action of one structure, shape and dtype."""
    actions = [jax.eval_shape(branch, *args)[0] for branch in branches]
    kinds = [(jax.tree.structure(a), tuple((leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(a))) for a in actions]
    for name, action, kind in zip(names[1:], actions[1:], kinds[1:]):
        if kind != kinds[0]:
            raise ValueError(f"mixed agents must return one action shape and dtype on this env: group {names[0]!r} "
                             f"returns {_describe(actions[0])} but group {name!r} returns {_describe(action)}")


def _switch_policy(group, policies: tuple, names: tuple):
    """One policy acting as `policies[group]` at every step (see `MixedPolicyFn.__call__`)."""
    branches = tuple(_branch(i, p) for i, p in enumerate(policies))

    def step(obs, state, key, env_params, carries):
        _check_actions(names, branches, (obs, state, key, env_params, carries))
        return jax.lax.switch(group, branches, obs, state, key, env_params, carries)

    if any(isinstance(p, RecurrentPolicy) for p in policies):
        inits = tuple(p.initial_carry if isinstance(p, RecurrentPolicy) else tuple for p in policies)
        return RecurrentPolicy(step, lambda: tuple(init() for init in inits))

    def policy(obs, state, key, env_params):
        return step(obs, state, key, env_params, ())[0]

    return policy


def mix_agents(groups: Sequence[tuple[Any, Callable]], env=None, env_params=None, *,
               names: Sequence[str] | None = None) -> tuple[dict[str, Any], MixedPolicyFn]:
    """Agents of several algorithms as ONE population for `member_returns`, `evaluate_ensemble`,
    `compare_agents` and `summarize_comparison` (seed 003's PPO + SAC + TD3 + Rainbow ensemble).

    Each group is one algorithm's agents: members `[K_g, ...]` with one param structure and their
    `policy_fn`. The mix has `K = sum_g K_g` members in group order (group 0's members first); member
    `k`, the `j`-th of group `g`, acts exactly as `policy_fn_g(member(members_g, j))`.

    Layout: every group's params are gathered to a `[K, ...]` slot, `params[g][k] = members_g[j]` for
    the members of group g and `members_g[0]` (a placeholder, never acted with) for the others, so the
    mix costs `K * sum_g |theta_g|` parameters: fine for the small networks of trading agents.

    Args:
        groups: G pairs `(members_g, policy_fn_g)`, e.g. `(rl.ppo.train_agents(...),
            rl.ppo.ppo_policy_fn(config, env, env_params))`; the policies act on the same env and
            return actions of one shape and dtype. `RecurrentPolicy` groups are supported.
        env, env_params: optional (env_params default `env.default_params`): every group's policy is
            traced on the env's observation (`jax.eval_shape`: nothing runs), so groups whose actions
            differ fail here; without `env` the same check runs when the policy is first traced.
        names: G distinct group names (default "group0", "group1", ...): the members' labels are
            `NAME_j` (`policy_fn.labels`), which `compare_agents` and `summarize_comparison` use.

    Returns:
        `(members, policy_fn)`: members a dict with "group" `[K]` int32 (g), "index" `[K]` int32 (j) and
        "params" (a G-tuple of the groups' params, leaves `[K, ...]`); policy_fn a `MixedPolicyFn`
        (hashable; build the mix once and reuse it, it keys the compilation).

    Raises:
        ValueError: no groups, a group that is not a `(members, policy_fn)` pair or whose leaves lack
            one leading member axis, names not G distinct strings, or groups returning different actions.
    """
    groups = list(groups)
    if not groups:
        raise ValueError("mix_agents needs at least one (members, policy_fn) group")
    names = tuple(f"group{g}" for g in range(len(groups))) if names is None else tuple(str(n) for n in names)
    if len(names) != len(groups) or len(set(names)) != len(names):
        raise ValueError(f"names must be {len(groups)} distinct names, one per group; got {list(names)}")
    sizes = []
    for name, group in zip(names, groups):
        if not (isinstance(group, (tuple, list)) and len(group) == 2 and callable(group[1])):
            raise ValueError(f"group {name!r} must be a (members, policy_fn) pair")
        try:
            sizes.append(n_members(group[0]))
        except ValueError as error:
            raise ValueError(f"group {name!r}: {error}") from None
    group_of = np.repeat(np.arange(len(groups), dtype=np.int32), sizes)
    index = np.concatenate([np.arange(size, dtype=np.int32) for size in sizes])
    params = tuple(
        jax.tree.map(lambda a, slot=np.where(group_of == g, index, 0): jnp.asarray(a)[slot], members_g)
        for g, (members_g, _) in enumerate(groups)
    )
    members = {"group": jnp.asarray(group_of), "index": jnp.asarray(index), "params": params}
    policy_fn = MixedPolicyFn(tuple(fn for _, fn in groups), names, tuple(sizes))
    if env is not None:
        env_params = env.default_params if env_params is None else env_params

        def first_action(members, env_params):
            obs, state = env.reset(jax.random.key(0), env_params)
            policy = policy_fn(member(members, 0))
            if isinstance(policy, RecurrentPolicy):
                return policy.step(obs, state, jax.random.key(1), env_params, policy.initial_carry())[0]
            return policy(obs, state, jax.random.key(1), env_params)

        jax.eval_shape(first_action, members, env_params)
    return members, policy_fn
