"""A Thompson ensemble across algorithms (`trading_jax.ensemble.agents.mix_agents`): groups with other param
structures and other policy code (trained PPO agents, a linear stand-in and a recurrent one) mixed into one
population, on which member returns, the Thompson ensemble, the comparison and its table work unchanged,
member k acting exactly as its own group's policy on the same episodes; groups whose actions differ are
refused. One module fixture: every test reuses its compiled programs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax import envs
from trading_jax.data.types import Bars
from trading_jax.ensemble import agents
from trading_jax.ensemble.agents import mix_agents
from trading_jax.envs.market import make_market
from trading_jax.evaluation.rollout import RecurrentPolicy

N = 8  # episodes of every run here: the compiled programs are shared between tests


def linear_fn(member):
    """Stand-in algorithm 1: params {"w": [obs], "b": []}, position tanh(w . obs + b)."""
    return lambda obs, state, key, env_params: jnp.tanh(obs @ member["w"] + member["b"])[None]


def alternating_fn(member):
    """Stand-in algorithm 2, recurrent: params {"size": []}, position +size, -size, +size, ... (its step count
    is the carry, restarted each episode)."""

    def step(obs, state, key, env_params, count):
        return jnp.where(count % 2 == 0, member["size"], -member["size"])[None], count + 1

    return RecurrentPolicy(step, lambda: jnp.zeros((), jnp.int32))


def discrete_fn(member):
    """A discrete agent (DQN-like: an int32 choice): its action does not fit a continuous env."""
    return lambda obs, state, key, env_params: member["choice"]


def continuous_env():
    """A continuous-position trading env (action: float32[1]) on 4 short random-walk paths."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(0.01 * rng.normal(size=(4, 24, 1)), axis=1))
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    bars = Bars(open_, np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999, close, np.ones_like(close))
    return envs.make("trading", market=make_market(bars, 1e-4), action_mode="continuous", window=4, episode_length=8)


@pytest.fixture(scope="module")
def setting():
    from trading_jax.rl import PPOConfig, ppo

    env, params = continuous_env()
    config = PPOConfig(env="trading", num_envs=4, num_steps=8, total_timesteps=4 * 8 * 2, update_epochs=1,
                       minibatch_size=32, network_preset="tiny")
    trained = ppo.train_agents(config, jax.random.key(2), n_agents=2, env=env, env_params=params)  # [2] PPOResult
    w = jax.random.normal(jax.random.key(0), (3, env.observation_space(params).shape[0])) * 0.5
    groups = [(trained, ppo.ppo_policy_fn(config, env, params)),
              ({"w": w, "b": jnp.asarray([0.1, -0.2, 0.0])}, linear_fn),
              ({"size": jnp.asarray([1.0, 0.5])}, alternating_fn)]
    members, policy_fn = mix_agents(groups, env, params, names=("ppo", "linear", "alt"))
    key = jax.random.key(1)
    return {
        "env": env, "params": params, "groups": groups, "members": members, "policy_fn": policy_fn, "key": key,
        "mix": np.asarray(agents.member_returns(env, params, members, policy_fn, key, N)),
        "own": [np.asarray(agents.member_returns(env, params, m, fn, key, N)) for m, fn in groups],
        "ensemble": agents.evaluate_ensemble(env, params, members, policy_fn, key, N),
    }


LABELS = ["ppo_0", "ppo_1", "linear_0", "linear_1", "linear_2", "alt_0", "alt_1"]


def test_each_member_of_a_mix_of_ppo_and_other_agents_earns_exactly_what_it_earns_in_its_own_group(setting):
    mix, own = setting["mix"], setting["own"]
    assert mix.shape == (7, N)
    np.testing.assert_array_equal(mix, np.concatenate(own))  # row for row, bit for bit
    assert len({tuple(row) for row in mix}) == 7  # seven different agents (two PPO seeds): not one policy's rows
    members = setting["members"]
    np.testing.assert_array_equal(members["group"], [0, 0, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(members["index"], [0, 1, 0, 1, 2, 0, 1])
    # each slot holds the member's own params in its group, and its group's member 0 in the others
    np.testing.assert_array_equal(members["params"][1]["b"], np.float32([0.1, 0.1, 0.1, -0.2, 0.0, 0.1, 0.1]))
    np.testing.assert_array_equal(members["params"][2]["size"], np.float32([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]))
    ppo_slot = members["params"][0].params  # the PPOResult's leaves gathered to [7, ...]
    for k, j in enumerate([0, 1, 0, 0, 0, 0, 0]):
        for mixed, trained in zip(jax.tree.leaves(ppo_slot), jax.tree.leaves(setting["groups"][0][0].params)):
            np.testing.assert_array_equal(mixed[k], trained[j])


def test_the_thompson_ensemble_of_a_mix_plays_every_kind_of_agent_on_the_paired_episodes(setting):
    out, mix = setting["ensemble"], setting["mix"]
    arms = np.asarray(out.arms)
    np.testing.assert_array_equal(arms[:7], np.arange(7))  # round robin over all seven: every group played
    assert set(np.asarray(setting["members"]["group"])[arms]) == {0, 1, 2}
    # episode i of the ensemble is episode i of the member it chose (two compiled programs, the ensemble's scan of
    # one member's episode and the members' vmapped episodes: equal up to float reassociation, ~1e-5 relative)
    np.testing.assert_allclose(out.returns, mix[arms, np.arange(N)], rtol=1e-4, atol=1e-7)
    assert bool(jnp.all(out.done))


def test_a_mix_is_labelled_by_group_and_an_equal_mix_reuses_the_compiled_program(setting):
    env, params, policy_fn = setting["env"], setting["params"], setting["policy_fn"]
    assert list(policy_fn.labels) == LABELS
    _, again = mix_agents(setting["groups"], names=("ppo", "linear", "alt"))
    assert again == policy_fn and hash(again) == hash(policy_fn)
    compiled = agents._member_returns._cache_size()
    np.testing.assert_array_equal(agents.member_returns(env, params, setting["members"], again, setting["key"], N),
                                  setting["mix"])
    assert agents._member_returns._cache_size() == compiled
    _, unnamed = mix_agents(setting["groups"])
    assert unnamed.labels[1:3] == ("group0_1", "group1_0")
    # the comparison carries the labels into the table; its rows are the members' rows
    comparison = agents.compare_agents(env, params, setting["members"], policy_fn, setting["key"], N,
                                       val_key=setting["key"], n_val_episodes=N)
    assert comparison["labels"] == LABELS
    np.testing.assert_array_equal(comparison["members"], setting["mix"])
    rows = agents.summarize_comparison(comparison, reference="alt_0")
    assert [r["policy"] for r in rows] == LABELS + ["thompson", "sharpe_pick"]
    assert rows[5]["diff_mean"] == 0.0
    assert rows[2]["mean"] == pytest.approx(float(np.mean(setting["mix"][2])))
    relabelled = agents.summarize_comparison(comparison, labels=[f"agent{k}" for k in range(7)])
    assert relabelled[6]["policy"] == "agent6"
    with pytest.raises(ValueError, match="7 distinct names"):
        agents.summarize_comparison(comparison, labels=["a"] * 7)


def test_agents_whose_actions_differ_are_refused_with_a_one_line_error(setting):
    env, params = setting["env"], setting["params"]
    groups = [setting["groups"][1], ({"choice": jnp.asarray([0, 2], jnp.int32)}, discrete_fn)]
    message = r"group 'sac' returns float32\[1\] but group 'dqn' returns int32\[\]"
    with pytest.raises(ValueError, match=message) as error:
        mix_agents(groups, env, params, names=("sac", "dqn"))  # checked up front, on the env's observation
    assert "\n" not in str(error.value)
    members, policy_fn = mix_agents(groups, names=("sac", "dqn"))  # no env: checked when first traced
    with pytest.raises(ValueError, match=message):
        agents.member_returns(env, params, members, policy_fn, setting["key"], N)
    with pytest.raises(ValueError, match="2 distinct names"):
        mix_agents(groups, names=("a", "a"))
    with pytest.raises(ValueError, match="group 'bad': every leaf of members needs the same leading"):
        mix_agents([({"w": jnp.zeros((2, 7)), "b": jnp.zeros(3)}, linear_fn)], names=("bad",))
    with pytest.raises(ValueError, match="at least one"):
        mix_agents([])
