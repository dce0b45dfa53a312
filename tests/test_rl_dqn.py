"""The DQN family (`trading_jax.rl.dqn`): one gradient step on hand-built batches with a linear Q network whose
values are set by hand (double vs plain targets, importance weights, C51's cross-entropy), the epsilon schedule,
a CartPole learning test, vmap over seeds against separate runs, and the trading / execution envs.

Every expected number is worked out in the comments, never by calling the code under test."""

from __future__ import annotations

import math

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.envs.trading import MultiDiscrete
from trading_jax.rl import dqn
from trading_jax.rl.replay import Transition

close = np.testing.assert_allclose


def quick_jit(fn):
    """`jax.jit` without LLVM's optimisations: these runs are short, so compiling dominates (about 40% less CPU)."""
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0})


# ---------------------------------------------------------------- hand-worked updates


def linear_agent(**changes):
    """A DQN agent whose Q network is linear (no hidden layer, one head): `Q(s) = s @ kernel + bias`."""
    env, env_params = gymnax.make("CartPole-v1")  # only its Discrete(2) action space is used
    config = dqn.DQNConfig(dueling=False, network_kwargs={"hidden": []}, learning_starts=0, batch_size=2,
                           **changes)
    agent, hp = dqn.build_agent(config, env, env_params)
    return agent._replace(update=quick_jit(agent.update)), hp


def learner_with(agent, hp, online, target, obs_size=2):
    """The agent's initial learner for `[B, obs_size]` observations, with both networks' params set by hand."""
    learner = agent.init(jax.random.key(0), obs_size, hp)
    as_params = lambda p: {"advantage": {"kernel": jnp.asarray(p[0], jnp.float32),  # noqa: E731
                                         "bias": jnp.asarray(p[1], jnp.float32)}}
    online, target = as_params(online), as_params(target)
    return learner._replace(params=online, target=target)  # Adam's fresh state is zeros for any params


# Q(s) = s @ W (bias 0), s in R^2, two actions:
#   online W = [[1, 3], [2, 0]]   target W' = [[5, 2], [0, 1]]
ONLINE = ([[1.0, 3.0], [2.0, 0.0]], [0.0, 0.0])
TARGET = ([[5.0, 2.0], [0.0, 1.0]], [0.0, 0.0])
# item 1: s = [0, 1], a = 0 -> Q(s, 0) = W[1, 0] = 2; a 3-step return with gamma = 0.5 that did not end:
#         reward = 1 + 0.5 * 0 + 0.25 * 2 = 1.5, bootstrap = 0.5^3 = 0.125, s' = [1, 0]:
#         Q(s') = [1, 3] picks action 1, Q'(s') = [5, 2]: double value Q'(s', 1) = 2, plain max = 5
# item 2: s = [1, 0], a = 1 -> Q(s, 1) = W[0, 1] = 3; terminated: reward -1, bootstrap 0, so y = -1 either way
BATCH = Transition(obs=jnp.array([[0.0, 1.0], [1.0, 0.0]]), action=jnp.array([0, 1], jnp.int32),
                   reward=jnp.array([1.5, -1.0]), bootstrap=jnp.array([0.125, 0.0]),
                   next_obs=jnp.array([[1.0, 0.0], [0.0, 1.0]]))
ONES = jnp.ones((2,), jnp.float32)


def test_one_update_regresses_on_the_n_step_double_q_target_and_only_moves_the_taken_actions_q_values():
    agent, hp = linear_agent(double=True, gamma=0.5, n_step=3)
    learner = learner_with(agent, hp, ONLINE, TARGET)
    new, metrics, td_abs = agent.update(learner, BATCH, ONES, jax.random.key(1), hp, jnp.float32(0.05))
    # y = [1.5 + 0.125 * 2, -1] = [1.75, -1]; TD = Q - y = [2 - 1.75, 3 + 1] = [0.25, 4]
    close(td_abs, [0.25, 4.0], rtol=1e-6)
    # huber: 0.5 * 0.25^2 = 0.03125 (quadratic part), 4 - 0.5 = 3.5 (linear part); mean 1.765625
    assert float(metrics["q_loss"]) == pytest.approx(1.765625, rel=1e-6)
    assert float(metrics["q_mean"]) == pytest.approx(2.5)  # mean(2, 3)
    # epsilon at 5% of the run, falling 1 -> 0.05 over the first 10%: 1 - 0.95 * 0.5 = 0.525
    assert float(metrics["epsilon"]) == pytest.approx(0.525)
    # dL/dW[1,0] = 0.25 / 2 > 0, dL/dW[0,1] = clip(4) / 2 = 0.5 > 0: Adam's first step moves each by -lr;
    # W[0,0] and W[1,1] only value s' inside the (constant) target: no gradient, unchanged
    lr = float(hp.lr)
    close(new.params["advantage"]["kernel"], [[1.0, 3.0 - lr], [2.0 - lr, 0.0]], rtol=1e-6)
    # the target network waits for target_update_interval (1000) gradient steps
    close(new.target["advantage"]["kernel"], TARGET[0])
    assert int(new.steps) == 1


def test_without_double_q_the_target_takes_the_target_networks_max_which_differs_here():
    agent, hp = linear_agent(double=False, gamma=0.5, n_step=3)
    _, metrics, td_abs = agent.update(learner_with(agent, hp, ONLINE, TARGET), BATCH, ONES, jax.random.key(1), hp,
                                      jnp.float32(0.0))
    # y = [1.5 + 0.125 * max(5, 2), -1] = [2.125, -1]; TD = [2 - 2.125, 4] = [-0.125, 4]
    close(td_abs, [0.125, 4.0], rtol=1e-6)
    # huber: 0.5 * 0.125^2 = 0.0078125 and 3.5; mean 1.75390625
    assert float(metrics["q_loss"]) == pytest.approx(1.75390625, rel=1e-6)
    assert float(metrics["epsilon"]) == pytest.approx(1.0)


def test_importance_weights_multiply_each_items_loss_and_mse_squares_the_td_error():
    agent, hp = linear_agent(double=True, target_update_interval=1)
    learner = learner_with(agent, hp, ONLINE, TARGET)
    # TD errors [0.25, 4] (first test); huber [0.03125, 3.5]
    _, half, _ = agent.update(learner, BATCH, jnp.array([0.5, 1.0]), jax.random.key(1), hp, 0.0)
    assert float(half["q_loss"]) == pytest.approx((0.5 * 0.03125 + 3.5) / 2, rel=1e-6)
    new, first_only, _ = agent.update(learner, BATCH, jnp.array([1.0, 0.0]), jax.random.key(1), hp, 0.0)
    assert float(first_only["q_loss"]) == pytest.approx(0.03125 / 2, rel=1e-6)
    # only item 1's action value W[1,0] has a gradient now; tau = 1 every gradient step copies the new params
    lr = float(hp.lr)
    close(new.params["advantage"]["kernel"], [[1.0, 3.0], [2.0 - lr, 0.0]], rtol=1e-6)
    close(new.target["advantage"]["kernel"], new.params["advantage"]["kernel"])

    agent, hp = linear_agent(double=True, loss="mse")
    _, mse, _ = agent.update(learner_with(agent, hp, ONLINE, TARGET), BATCH, ONES, jax.random.key(1), hp, 0.0)
    assert float(mse["q_loss"]) == pytest.approx((0.25 ** 2 + 4.0 ** 2) / 2, rel=1e-6)  # 8.03125


def test_a_c51_update_minimises_the_cross_entropy_to_the_projected_target_distribution():
    agent, hp = linear_agent(n_atoms=3, v_min=-1.0, v_max=1.0)
    # logits = s @ 0 + bias, bias [A * N] = action 0: [0, ln 2, ln 2] (p = [1/5, 2/5, 2/5], E = 0.2),
    # action 1: [0, 0, 0] (uniform, E = 0); the target network is all zeros (uniform for both actions)
    bias = [0.0, math.log(2.0), math.log(2.0), 0.0, 0.0, 0.0]
    learner = learner_with(agent, hp, (np.zeros((2, 6)), bias), (np.zeros((2, 6)), np.zeros(6)))
    batch = Transition(obs=jnp.array([[0.0, 1.0], [1.0, 0.0]]), action=jnp.array([0, 0], jnp.int32),
                       reward=jnp.array([0.5, -0.5]), bootstrap=jnp.array([0.5, 0.0]),
                       next_obs=jnp.array([[1.0, 0.0], [0.0, 1.0]]))
    _, metrics, td_abs = agent.update(learner, batch, ONES, jax.random.key(1), hp, 0.0)
    # support [-1, 0, 1], uniform next distribution (double-Q picks action 0, E 0.2 > 0; the target is uniform
    # for either action). Item 1: Tz = 0.5 + 0.5 * [-1, 0, 1] = [0, 0.5, 1]: 1/3 to z=0; 0.5 splits 1/6 + 1/6
    # to z=0 and z=1; 1/3 to z=1 -> m = [0, 1/2, 1/2]; CE = -(0.5 ln 2/5 + 0.5 ln 2/5) = ln 2.5.
    # Item 2 (terminated): every atom at -0.5 -> m = [1/2, 1/2, 0]; CE = -(0.5 ln 1/5 + 0.5 ln 2/5)
    ce = np.array([math.log(2.5), 0.5 * math.log(5.0) + 0.5 * math.log(2.5)])
    close(td_abs, ce, rtol=1e-5)  # Rainbow's priorities: the per-item cross-entropy
    assert float(metrics["q_loss"]) == pytest.approx(ce.mean(), rel=1e-5)
    assert float(metrics["q_mean"]) == pytest.approx(0.2, rel=1e-5)  # the taken action's expected return


def test_greedy_acting_takes_the_argmax_and_the_epsilon_schedule_is_linear_then_flat():
    agent, hp = linear_agent()
    params = learner_with(agent, hp, ONLINE, TARGET).params
    # Q([0, 1]) = [2, 0] -> 0; Q([1, 0]) = [1, 3] -> 1; Q([1, 1]) = [3, 3] -> the first, 0
    obs = jnp.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(agent.act(params, obs, jax.random.key(0), True), [0, 1, 0])
    config = dqn.DQNConfig(exploration_initial_eps=1.0, exploration_final_eps=0.1, exploration_fraction=0.5)
    # 1 -> 0.1 over the first half: at 0.25 halfway (0.55), flat at 0.1 afterwards
    close([float(dqn.epsilon(config, p)) for p in (0.0, 0.25, 0.5, 0.9)], [1.0, 0.55, 0.1, 0.1], rtol=1e-6)
    # epsilon 1: every action uniformly random, whatever Q says (the 3rd state's greedy action is 0)
    agent1, _ = linear_agent(exploration_final_eps=1.0)
    many = agent1.act(params, jnp.ones((4000, 2)), jax.random.key(3), False)
    assert 0.45 < float(jnp.mean(many)) < 0.55


@pytest.mark.parametrize("space, name", [
    (gymnax.environments.spaces.Box(-1.0, 1.0, (1,)), "Box"),   # the trading env's continuous mode
    (MultiDiscrete(3, (2,)), "MultiDiscrete"),                     # the trading env with 2 assets, discrete mode
])
def test_continuous_and_multi_asset_discrete_actions_are_refused_with_a_pointer_to_what_fits(space, name):
    with pytest.raises(ValueError, match=f"DQN needs one discrete action.*{name}.*use SAC, TD3 or DDPG"):
        dqn.discrete_actions(space)
    assert dqn.discrete_actions(gymnax.environments.spaces.Discrete(3)) == 3


@pytest.mark.parametrize("change, message", [
    ({"exploration_final_eps": 1.5}, "exploration_final_eps must be in"),
    ({"exploration_fraction": 0.0}, "exploration_fraction must be in"),
    ({"target_update_interval": 0}, "target_update_interval must be >= 1"),
    ({"n_atoms": 5, "v_min": 1.0, "v_max": 1.0}, "v_min < v_max"),
    ({"loss": "l1"}, "loss must be one of"),
    ({"max_grad_norm": 0.0}, "max_grad_norm must be"),
    ({"network_kwargs": {"dueling": False}}, "network_kwargs must not set"),
])
def test_inconsistent_settings_are_one_line_errors(change, message):
    with pytest.raises(ValueError, match=message):
        dqn.DQNConfig(**change).validate()


# ---------------------------------------------------------------- learning and vectorisation


def test_dqn_learns_cartpole_from_a_fixed_seed():
    env, env_params = gymnax.make("CartPole-v1")
    # Rainbow-lite: double Q, dueling, 3-step returns, prioritised replay; 20k env steps, update-to-data 1/4
    config = dqn.DQNConfig(env="cartpole", num_envs=4, total_timesteps=20_000, steps_per_iteration=50,
                           learning_starts=1_000, buffer_size=20_000, batch_size=64, lr=1e-3, n_step=3,
                           prioritized=True, target_update_interval=500, exploration_fraction=0.2,
                           normalize_observations=False, network_kwargs={"hidden": [64, 64]})
    result = quick_jit(dqn.make_train(config, env, env_params))(jax.random.key(0))
    returns = dqn.evaluate(config, result, env, env_params, jax.random.key(1), n_episodes=16)["returns"]
    # a uniformly random policy balances ~22 steps; 150 needs a policy that keeps the pole up for most of the
    # episodes. Seeds 0-5 of this setting reach 278, 322, 332, 252, 328 and 250 (190-308 without prioritised
    # replay), so 150 leaves room for another machine's rounding without passing a policy that did not learn
    assert float(jnp.mean(returns)) >= 150.0
    assert np.all(np.isfinite(np.asarray(result.metrics["q_loss"])))
    assert float(result.metrics["epsilon"][-1]) == pytest.approx(0.05)


TINY = dict(num_envs=2, steps_per_iteration=4, learning_starts=16, buffer_size=256, batch_size=16,
            target_update_interval=4, network_kwargs={"hidden": [16]})


def two_iterations(config):
    """`config` with just enough env steps for the warm-up and 2 iterations."""
    return config.replace(total_timesteps=config.warmup_steps * config.num_envs + 2 * config.env_steps_per_iteration)


@pytest.fixture(scope="module")
def trading_runs():
    """The trading env (one asset, discrete mode) for two seeds: vmapped together, and one by one."""
    from trading_jax.data.types import Bars
    from trading_jax.envs import make
    from trading_jax.envs.market import make_market

    # two paths of 64 bars rising 0.2% a bar (built by hand: generating the default synthetic bank costs seconds)
    price = np.repeat(100.0 * np.exp(0.002 * np.arange(64.0, dtype=np.float32))[None, :, None], 2, axis=0)
    market = make_market(Bars(price, price * 1.001, price * 0.999, price, np.ones_like(price)), spread=2e-4)
    env, env_params = make("trading", market=market, window=8, episode_length=32)
    config = two_iterations(dqn.DQNConfig(env="trading", n_step=2, prioritized=True, **TINY))
    train = dqn.make_train(config, env, env_params)
    keys = jax.random.split(jax.random.key(7), 2)
    together = quick_jit(jax.vmap(train))(keys)
    alone = quick_jit(train)
    return together, [alone(k) for k in keys]


def test_vmap_over_seeds_equals_separate_runs(trading_runs):
    # a short run: over thousands of steps, float rounding (a batched matmul sums in another order) flips an
    # argmax sooner or later and the runs drift apart, as two runs of any chaotic process do (the 20k-step
    # CartPole runs of the learning test end with kernels 0.5 apart vmapped or not)
    together, separate = trading_runs
    for i, one in enumerate(separate):
        for a, b in zip(jax.tree.leaves((one.params, one.metrics)),
                        jax.tree.leaves(jax.tree.map(lambda x: x[i], (together.params, together.metrics)))):
            close(a, b, rtol=1e-5, atol=1e-6)
    # the two seeds are different runs
    assert not np.allclose(separate[0].params["value"]["kernel"], separate[1].params["value"]["kernel"])


def test_the_trading_env_in_discrete_mode_and_the_execution_env_train_a_few_iterations_without_nan(trading_runs):
    from trading_jax.envs import make

    _, (trading, _) = trading_runs
    env, env_params = make("execution")
    assert env.action_space(env_params).n == 10
    config = two_iterations(dqn.DQNConfig(env="execution", n_step=3, n_atoms=11, v_min=-5.0, v_max=5.0, **TINY))
    execution = quick_jit(dqn.make_train(config, env, env_params))(jax.random.key(3))
    for result in (trading, execution):
        assert result.metrics["q_loss"].shape == (2,)
        for leaf in jax.tree.leaves((result.params, result.metrics)):
            assert np.all(np.isfinite(np.asarray(leaf)))
        assert np.all(np.asarray(result.metrics["q_loss"]) > 0)
