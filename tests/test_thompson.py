"""Thompson sampling (trading_jax.ensemble.thompson) and the Thompson ensemble of RL agents
(trading_jax.ensemble.agents)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.ensemble import thompson as ts

MEANS = jnp.asarray([0.0, 0.5, 1.0], jnp.float32)
ROUNDS = 600  # every bandit test runs this many rounds: one compilation serves them all


def run_bandit(key, means, discount, switch_at, n_rounds):
    """Thompson sampling on a Gaussian bandit with unit noise: `(arms [n], regrets [n])`. From round
    `switch_at` on, the arms' means are reversed (never when it is >= n_rounds)."""
    state = ts.init(means.shape[0], discount=discount)

    def body(state, xs):
        t, k = xs
        k_choose, k_noise = jax.random.split(k)
        current = jnp.where(t < switch_at, means, means[::-1])
        arm = ts.choose(k_choose, state)
        reward = current[arm] + jax.random.normal(k_noise)
        return ts.update(state, arm, reward), (arm, jnp.max(current) - current[arm])

    _, (arms, regrets) = jax.lax.scan(body, state, (jnp.arange(n_rounds), jax.random.split(key, n_rounds)))
    return arms, regrets


_bandits = jax.jit(jax.vmap(run_bandit, in_axes=(0, None, None, None, None)), static_argnums=4)


def bandits(seed, n_seeds, discount=1.0, switch_at=ROUNDS):
    """`run_bandit` over `n_seeds` keys: NumPy `(arms [S, ROUNDS], regrets [S, ROUNDS])`."""
    keys = jax.random.split(jax.random.key(seed), n_seeds)
    arms, regrets = _bandits(keys, MEANS, jnp.float32(discount), jnp.int32(switch_at), ROUNDS)
    return np.asarray(arms), np.asarray(regrets)


def test_posterior_after_two_rewards_matches_hand_worked_numbers():
    # prior m0=0, kappa0=1, alpha0=1, beta0=1; rewards 1 and 3 on arm 0:
    # n=2, xbar=2, S=2 -> kappa=3, m=4/3, alpha=2, beta = 1 + 1 + 1*2*4/(2*3) = 10/3, Var[mu] = beta/((alpha-1)kappa) = 10/9
    state = ts.init(2, m0=0.0, kappa0=1.0, alpha0=1.0, beta0=1.0)
    state = ts.update(ts.update(state, 0, 1.0), 0, 3.0)
    post = ts.posterior(state)
    np.testing.assert_allclose(post.m, [4 / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(post.kappa, [3.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(post.alpha, [2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(post.beta, [10 / 3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(ts.posterior_variance(state)[0], 10 / 9, rtol=1e-6)
    assert np.isinf(ts.posterior_variance(state)[1])  # alpha = 1: no finite variance yet
    np.testing.assert_array_equal(state.pulls, [2, 0])


def test_discounted_statistics_match_hand_worked_numbers():
    # gamma = 0.5, rewards 1 then 3 on arm 0: weights 0.5 and 1 -> n = 1.5, xbar = (0.5 + 3)/1.5 = 7/3,
    # S = 0.5 (1 - 7/3)^2 + (3 - 7/3)^2 = 8/9 + 4/9 = 4/3; arm 1 is untouched, arm 0's prior is kept
    state = ts.init(2, discount=0.5)
    state = ts.update(ts.update(state, 0, 1.0), 0, 3.0)
    np.testing.assert_allclose(state.count, [1.5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(state.mean[0], 7 / 3, rtol=1e-6)
    np.testing.assert_allclose(state.m2[0], 4 / 3, rtol=1e-6)


def test_batched_updates_equal_one_by_one_updates():
    arms, rewards = jnp.asarray([0, 2, 2, 1, 0]), jnp.asarray([0.3, -1.0, 2.0, 0.5, 0.1])
    one_by_one = ts.init(3, discount=0.9)
    for a, r in zip(arms, rewards):
        one_by_one = ts.update(one_by_one, a, r)
    batched = ts.update_batch(ts.init(3, discount=0.9), arms, rewards)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), one_by_one, batched)


def test_update_all_equals_each_arm_updated_without_extra_discount():
    state = ts.update_all(ts.init(3), jnp.asarray([1.0, 2.0, jnp.nan]))
    np.testing.assert_allclose(state.mean, [1.0, 2.0, 0.0])
    np.testing.assert_array_equal(state.pulls, [1, 1, 0])  # the NaN reward is skipped


def test_thompson_concentrates_on_the_best_arm_of_a_gaussian_bandit():
    arms, _ = bandits(0, 3)
    for seed_arms in arms:  # every seed, after 500 rounds
        share = float(np.mean(seed_arms[500:] == 2))
        assert share > 0.9, share


def test_thompson_regret_grows_sublinearly_and_beats_uniform_choice():
    _, regrets = bandits(7, 3)
    regret = regrets.mean(0)
    uniform = float(np.mean(np.max(MEANS) - MEANS))  # expected regret per round of a uniform choice: 0.5
    assert regret.sum() < 0.25 * uniform * ROUNDS
    # sub-linear: the second half adds far less regret than the first
    assert regret[ROUNDS // 2:].sum() < 0.5 * regret[:ROUNDS // 2].sum()


def test_discount_forgets_so_the_choice_moves_after_the_best_arm_switches():
    def share_after_switch(discount):  # share of the new best arm (0) 50 .. 150 rounds after the switch
        arms, _ = bandits(3, 3, discount=discount, switch_at=300)
        return float(np.mean(arms[:, 350:450] == 0))

    forgetting, remembering = share_after_switch(0.99), share_after_switch(1.0)
    assert forgetting > 0.5
    # without forgetting, 300 rounds of evidence for the old best arm keep it pulled far longer
    assert forgetting > remembering + 0.3, (forgetting, remembering)


def test_choose_is_deterministic_by_key_and_jit_equals_no_jit():
    state = ts.update_batch(ts.init(3), jnp.asarray([0, 1, 2, 2]), jnp.asarray([0.1, 0.4, 1.0, 0.8]))
    key = jax.random.key(11)
    np.testing.assert_array_equal(ts.sample_means(key, state), ts.sample_means(key, state))
    # jit fuses the arithmetic: equal up to float rounding
    np.testing.assert_allclose(ts.sample_means(key, state), jax.jit(ts.sample_means)(key, state), rtol=1e-6)
    assert int(ts.choose(key, state)) == int(jnp.argmax(ts.sample_means(key, state)))
    updated = ts.update(state, 1, 0.7)
    jitted = jax.jit(ts.update)(state, 1, 0.7)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updated, jitted)
    np.testing.assert_array_equal(bandits(5, 3)[0], bandits(5, 3)[0])


def test_states_vmap_over_priors_and_discounts():
    states = jax.vmap(lambda d: ts.init(3, discount=d))(jnp.asarray([1.0, 0.9]))
    states = jax.vmap(ts.update, in_axes=(0, None, None))(states, 1, 2.0)
    assert states.count.shape == (2, 3)
    draws = jax.vmap(ts.sample_means)(jax.random.split(jax.random.key(0), 2), states)
    assert draws.shape == (2, 3) and bool(jnp.all(jnp.isfinite(draws)))


def test_best_arm_probabilities_sum_to_one_and_favour_the_better_arm():
    state = ts.update_all(ts.update_all(ts.init(2), jnp.asarray([0.0, 1.0])), jnp.asarray([0.2, 1.2]))
    p = ts.best_arm_probabilities(jax.random.key(0), state, 256)
    np.testing.assert_allclose(float(p.sum()), 1.0, rtol=1e-6)
    assert p[1] > p[0]


# ------------------------------------------------------------------------------ the RL ensemble

from trading_jax import envs  # noqa: E402
from trading_jax.data.types import Bars  # noqa: E402
from trading_jax.ensemble import agents  # noqa: E402
from trading_jax.envs.market import make_market  # noqa: E402


def trending_env(drift=0.002, vol=0.005, seed=0):
    """A trading env on 4 up-trending paths: "long" (action 2) is clearly the best constant action,
    "short" (0) the worst, "flat" (1) earns 0."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(drift + vol * rng.normal(size=(4, 64, 1)), axis=1))
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    bars = Bars(open_, np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999, close, np.ones_like(close))
    return envs.make("trading", market=make_market(bars, 1e-4), window=4, episode_length=16)


def constant_policy(member):
    """Stand-in member: always plays its `action`."""
    return lambda obs, state, key, env_params: member["action"]


CONSTANT_MEMBERS = {"action": jnp.asarray([0, 1, 2], jnp.int32)}  # short, flat, long
N_EPISODES = 24  # every ensemble test plays this many episodes: the compiled programs are reused


@pytest.fixture(scope="module")
def trending():
    return trending_env()


def test_thompson_ensemble_learns_to_follow_the_best_agent(trending):
    env, params = trending
    n = N_EPISODES
    out = agents.evaluate_ensemble(env, params, CONSTANT_MEMBERS, constant_policy, jax.random.key(0), n,
                                   reward_scale=0.05)
    members = agents.member_returns(env, params, CONSTANT_MEMBERS, constant_policy, jax.random.key(0), n)
    best = int(np.argmax(np.asarray(members).mean(1)))
    assert best == 2
    arms = np.asarray(out.arms)
    np.testing.assert_array_equal(arms[:3], [0, 1, 2])  # one round-robin pull each
    assert np.mean(arms[n // 2:] == best) > 0.8
    late = slice(n // 2, n)
    gap = float(np.mean(members[best, late]) - np.mean(out.returns[late]))
    spread = float(np.mean(members[best, late]) - np.mean(members[0, late]))
    assert gap < 0.2 * spread  # the ensemble's later episodes earn close to the best member's
    assert int(out.state.pulls.sum()) == n


def test_every_arm_faces_the_same_episodes(trending):
    env, params = trending
    key, n = jax.random.key(3), N_EPISODES
    out = agents.evaluate_ensemble(env, params, CONSTANT_MEMBERS, constant_policy, key, n, reward_scale=0.05)
    members = agents.member_returns(env, params, CONSTANT_MEMBERS, constant_policy, key, n)
    # the ensemble's episode i is member arm_i's episode i: same reset and market, same return
    np.testing.assert_allclose(out.returns, np.asarray(members)[np.asarray(out.arms), np.arange(n)], rtol=1e-6)
    # and another key gives other episodes
    other = agents.member_returns(env, params, CONSTANT_MEMBERS, constant_policy, jax.random.key(4), n)
    assert not np.allclose(members[2], other[2])


def test_ensemble_is_deterministic_by_key(trending):
    env, params = trending
    a = agents.evaluate_ensemble(env, params, CONSTANT_MEMBERS, constant_policy, jax.random.key(5), N_EPISODES)
    b = agents.evaluate_ensemble(env, params, CONSTANT_MEMBERS, constant_policy, jax.random.key(5), N_EPISODES)
    np.testing.assert_array_equal(a.arms, b.arms)
    np.testing.assert_array_equal(a.returns, b.returns)


def test_pick_by_sharpe_on_hand_worked_returns():
    returns = jnp.asarray([[1.0, 3.0, 2.0],     # mean 2, std 1    -> Sharpe 2
                           [4.0, 0.0, 8.0],     # mean 4, std 4    -> Sharpe 1
                           [-1.0, -1.0, -1.0]])  # mean -1, std 0  -> -inf
    np.testing.assert_allclose(agents.sharpe_ratios(returns), [2.0, 1.0, -np.inf])
    assert agents.pick_by_sharpe(returns) == 0  # not the highest mean: the highest Sharpe
    assert agents.pick_by_sharpe(jnp.asarray([[0.0, jnp.nan], [1.0, 2.0]])) == 1  # NaN never wins
    with pytest.raises(ValueError, match="n >= 2"):
        agents.sharpe_ratios(jnp.ones((3, 1)))


def test_compare_agents_reports_members_thompson_and_the_sharpe_pick_on_the_same_episodes(trending):
    env, params = trending
    n = N_EPISODES
    out = agents.compare_agents(env, params, CONSTANT_MEMBERS, constant_policy, jax.random.key(1), n,
                                val_key=jax.random.key(2), n_val_episodes=n)
    assert out["members"].shape == (3, n) and out["thompson"].shape == (n,)
    assert out["picked"] == 2
    np.testing.assert_array_equal(out["sharpe_pick"], out["members"][2])
    assert out["reward_scale"] > 0
    rows = agents.summarize_comparison(out)
    assert [r["policy"] for r in rows] == ["member_0", "member_1", "member_2", "thompson", "sharpe_pick"]
    assert rows[3]["diff_mean"] == 0.0
    warm = agents.compare_agents(env, params, CONSTANT_MEMBERS, constant_policy, jax.random.key(1), n,
                                 val_key=jax.random.key(2), n_val_episodes=n, warm_start=True)
    assert np.mean(warm["thompson_arms"] == 2) > 0.6  # warm-started from validation: no round-robin


def test_ppo_members_plug_into_the_ensemble(trending):
    from trading_jax.rl import PPOConfig, obs_norm_init, ppo

    env, params = trending
    config = PPOConfig(env="trading", network_preset="tiny")
    model = ppo.make_policy(config, env, params).model
    size = env.observation_space(params).shape[0]
    keys = jax.random.split(jax.random.key(0), 2)
    members = ppo.PolicyParams(jax.vmap(lambda k: model.init(k, jnp.zeros((1, size)))["params"])(keys),
                               jax.vmap(lambda _: obs_norm_init((size,)))(jnp.arange(2)))
    policy_fn = ppo.ppo_policy_fn(config, env, params)
    out = agents.evaluate_ensemble(env, params, members, policy_fn, jax.random.key(1), 6)
    assert out.returns.shape == (6,) and bool(jnp.all(jnp.isfinite(out.returns)))
    np.testing.assert_array_equal(out.arms[:2], [0, 1])
    assert bool(jnp.all(out.done))
    with pytest.raises(ValueError, match="n_agents"):
        ppo.train_agents(config, jax.random.key(0))
