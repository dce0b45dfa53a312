"""PPO: hand-worked GAE and losses, normalisers, a tiny learning test, determinism, vmap and devices."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.envs import make, synthetic_market
from trading_jax.rl import distributions as D
from trading_jax.rl import normalizers as N
from trading_jax.rl.evaluation import rollout_episodes
from trading_jax.rl.gae import bootstrap_values, gae
from trading_jax.rl.losses import ppo_loss
from trading_jax.rl.ppo import (PPOConfig, as_policy, evaluate, hyperparam_grid, make_evaluator, make_policy,
                               make_trainer)

# ------------------------------------------------------------------------------------ pure pieces

GAMMA, LAM = 0.9, 0.8
REWARDS = [1.0, 2.0, 3.0, 4.0]
VALUES = [0.5, 1.0, 1.5, 2.0]
# step 1 is truncated (time limit) and reaches a state worth V(final_obs) = 10; the reset observation of
# step 2 is worth 1.5. Step 3 terminates (its final value 5 must be ignored); V(obs after the rollout) = 7.
TERMINATED = [False, False, False, True]
TRUNCATED = [False, True, False, False]
FINAL_VALUES = [0.0, 10.0, 0.0, 5.0]
LAST_VALUE = 7.0


def _col(x, dtype=jnp.float32):
    return jnp.asarray(x, dtype)[:, None]


def _gae(terminated, truncated):
    term, trunc = _col(terminated, bool), _col(truncated, bool)
    done = term | trunc
    next_values = bootstrap_values(_col(VALUES), jnp.asarray([LAST_VALUE]), _col(FINAL_VALUES), done)
    return next_values, gae(_col(REWARDS), _col(VALUES), next_values, term, done, GAMMA, LAM)


def test_gae_bootstraps_through_truncation_but_not_termination_by_hand():
    next_values, (adv, ret) = _gae(TERMINATED, TRUNCATED)
    # next values: V(obs_1) = 1.0, V(final_obs_1) = 10 (not the reset obs' 1.5), V(obs_3) = 2.0, V(final_obs_3) = 5
    np.testing.assert_allclose(next_values[:, 0], [1.0, 10.0, 2.0, 5.0])
    # deltas: 1 + .9*1 - .5 = 1.4; 2 + .9*10 - 1 = 10; 3 + .9*2 - 1.5 = 3.3; 4 - 2 = 2 (terminal: no bootstrap)
    # A_3 = 2; A_2 = 3.3 + .72*2 = 4.74; A_1 = 10 (episode ends: no continuation); A_0 = 1.4 + .72*10 = 8.6
    np.testing.assert_allclose(adv[:, 0], [8.6, 10.0, 4.74, 2.0], rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], [9.1, 11.0, 6.24, 4.0], rtol=1e-6)


def test_truncation_with_a_large_final_value_is_not_treated_as_termination():
    _, (adv, _) = _gae(TERMINATED, TRUNCATED)
    # the same step flagged as a termination: delta_1 = 2 - 1 = 1, A_0 = 1.4 + .72 * 1
    _, (adv_term, _) = _gae([False, True, False, True], [False, False, False, False])
    np.testing.assert_allclose(adv_term[:2, 0], [2.12, 1.0], rtol=1e-6)
    # the difference is exactly the discounted final value gamma * V(final_obs) = 9 at step 1 (and lambda-discounted before)
    np.testing.assert_allclose((adv - adv_term)[:, 0], [0.72 * 9.0, 9.0, 0.0, 0.0], rtol=1e-6)


def test_clipped_surrogate_and_clipped_value_loss_by_hand():
    ratio = np.array([1.1, 1.5, 0.5, 1.5], np.float32)
    advantages = jnp.asarray([2.0, 1.0, -1.0, -2.0])
    values = jnp.asarray([0.1, 0.5, -0.3, 1.0])
    returns = jnp.asarray([1.0, 1.0, 1.0, -1.0])
    zeros, ones = jnp.zeros(4), jnp.ones(4)
    loss, aux = ppo_loss(jnp.log(ratio), zeros, advantages, values, zeros, returns, ones,
                         clip_eps=0.2, vf_coef=1.0, ent_coef=0.01)
    # min(rho A, clip(rho) A): 2.2 (inside), 1.2 (clipped above, A > 0), -0.8 (clipped below, A < 0),
    # -3.0 (rho = 1.5 with A < 0: the unclipped, more pessimistic term wins)
    assert float(aux["policy_loss"]) == pytest.approx(-(2.2 + 1.2 - 0.8 - 3.0) / 4, abs=1e-6)
    # values clipped to old +- 0.2: [0.1, 0.2, -0.2, 0.2]; max of squared errors: .81, .64, 1.69, 4
    assert float(aux["value_loss"]) == pytest.approx(0.5 * (0.81 + 0.64 + 1.69 + 4.0) / 4, abs=1e-6)
    assert float(aux["clip_fraction"]) == pytest.approx(0.75)
    assert float(aux["approx_kl"]) == pytest.approx(float(np.mean(ratio - 1 - np.log(ratio))), rel=1e-5)
    assert float(loss) == pytest.approx(0.1 + 0.8925 - 0.01, abs=1e-6)
    _, unclipped = ppo_loss(jnp.log(ratio), zeros, advantages, values, zeros, returns, ones, 0.2, 1.0, 0.01,
                            clip_value=False)
    assert float(unclipped["value_loss"]) == pytest.approx(0.5 * (0.81 + 0.25 + 1.69 + 4.0) / 4, abs=1e-6)


def test_tanh_gaussian_log_prob_is_the_change_of_variables_density():
    mean, log_std = jnp.asarray([0.3, -0.5]), jnp.asarray([-0.2, 0.4])
    u = jnp.asarray([[0.7, -1.9], [-2.5, 0.1], [3.0, 1.0]])
    a = jnp.tanh(u)
    # reference: p(a) = N(arctanh(a)) |d arctanh / da|, per dimension, with autodiff for the Jacobian
    jac = jax.vmap(jax.vmap(jax.grad(jnp.arctanh)))(a)
    ref = D.gaussian_log_prob(mean, log_std, jnp.arctanh(a)) + jnp.sum(jnp.log(jac), axis=-1)
    np.testing.assert_allclose(D.tanh_gaussian_log_prob(mean, log_std, u), ref, rtol=2e-4)
    # the 1-D density integrates to 1 over (-1, 1)
    grid = jnp.linspace(-1 + 1e-6, 1 - 1e-6, 200_001)
    dens = jnp.exp(D.tanh_gaussian_log_prob(mean[:1], log_std[:1], jnp.arctanh(grid)[:, None]))
    assert float(jnp.trapezoid(dens, grid)) == pytest.approx(1.0, abs=1e-3)


def test_categorical_entropy_and_log_prob_by_hand():
    logits = jnp.log(jnp.asarray([[0.5, 0.25, 0.25]])) + 3.0  # shifting logits changes nothing
    assert float(D.categorical_entropy(logits)[0]) == pytest.approx(1.5 * math.log(2.0), rel=1e-6)
    assert float(D.categorical_log_prob(logits, jnp.asarray([1]))[0]) == pytest.approx(math.log(0.25), rel=1e-6)
    assert float(D.gaussian_entropy(jnp.zeros(2))) == pytest.approx(math.log(2 * math.pi * math.e), rel=1e-6)


def test_action_distribution_sums_independent_choices_and_rescales_squashed_gaussians():
    class MultiDiscrete:  # 2 independent choices of 3
        n, shape = 3, (2,)

    dist = D.ActionDistribution(MultiDiscrete())
    assert dist.discrete and dist.action_dim == 6
    logits = jnp.log(jnp.asarray([[0.5, 0.25, 0.25, 0.1, 0.2, 0.7]]))
    out = {"logits": logits}
    assert float(dist.log_prob(out, jnp.asarray([[0, 2]]))[0]) == pytest.approx(math.log(0.5 * 0.7), rel=1e-6)
    np.testing.assert_array_equal(dist.mode(out), [[0, 2]])

    class Box:
        shape, low, high = (2,), np.array([-1.0, 0.0]), np.array([1.0, 4.0])

    tanh, clip = D.ActionDistribution(Box()), D.ActionDistribution(Box(), squash="clip")
    u = jnp.asarray([[0.3, -9.0]])
    np.testing.assert_allclose(tanh.to_env(u), [[math.tanh(0.3), 0.0]], atol=1e-6)
    np.testing.assert_allclose(clip.to_env(u), [[0.3, 0.0]], atol=1e-6)
    gauss = {"mean": jnp.zeros((1, 2)), "log_std": jnp.zeros(2)}
    np.testing.assert_allclose(tanh.log_prob(gauss, u) - clip.log_prob(gauss, u), -D.tanh_log_det_jacobian(u),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="Discrete"):
        D.ActionDistribution(Box(), kind="categorical")
    with pytest.raises(ValueError, match="squash"):
        D.ActionDistribution(Box(), squash="sigmoid")


def test_observation_normaliser_merges_batches_like_the_full_data():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 5)).astype(np.float32) for n in (7, 1, 30)]
    state = N.obs_norm_init((5,), count=0.0)
    for b in batches:
        state = N.obs_norm_update(state, b)
    full = np.concatenate(batches).astype(np.float64)
    np.testing.assert_allclose(state.mean, full.mean(0), rtol=1e-5)
    np.testing.assert_allclose(state.var, full.var(0), rtol=1e-5)
    assert state.count.shape == () and float(state.count) == 38.0
    np.testing.assert_allclose(N.obs_norm_apply(state, full[:2], clip=None), (full[:2] - full.mean(0)) / full.std(0),
                               rtol=1e-4, atol=1e-5)


def test_observation_normaliser_starts_from_a_prior_of_eps_pseudo_observations():
    state = N.obs_norm_init((2,))  # mean 0, variance 1, count 1e-4 (SB3)
    np.testing.assert_allclose(N.obs_norm_apply(state, jnp.asarray([3.0, -20.0])), [3.0, -10.0], rtol=1e-6)  # clip 10
    batch = jnp.asarray([[1.0, 2.0], [3.0, 6.0]])
    state = N.obs_norm_update(state, batch)
    # n = 2 + 1e-4: the prior moves the batch mean [2, 4] by a factor 2 / (2 + 1e-4)
    np.testing.assert_allclose(state.mean, np.array([2.0, 4.0]) * 2 / (2 + 1e-4), rtol=1e-6)
    np.testing.assert_allclose(float(state.count), 2.0001, rtol=1e-7)


def test_reward_normaliser_scales_by_the_std_of_the_discounted_return_and_resets_at_episode_ends():
    state = N.reward_norm_init(2)
    state, r1 = N.reward_norm_update(state, jnp.asarray([1.0, 2.0]), jnp.asarray([False, True]), 0.5, clip=None)
    # G = [1, 2]; running var of G over {1, 2} (count eps=1e-4 at mean 0, var 1: nearly the batch var .25)
    expected = N.obs_norm_update(N.obs_norm_init(()), jnp.asarray([1.0, 2.0]))
    assert float(expected.var) == pytest.approx((0.25 * 2 + 1e-4 + 1.5**2 * 1e-4 * 2 / 2.0001) / 2.0001, rel=1e-6)
    np.testing.assert_allclose(r1, jnp.asarray([1.0, 2.0]) / jnp.sqrt(expected.var + 1e-8), rtol=1e-6)
    np.testing.assert_allclose(state.ret, [1.0, 0.0])  # env 1's episode ended: its return restarts
    state, _ = N.reward_norm_update(state, jnp.asarray([1.0, 1.0]), jnp.asarray([False, False]), 0.5, clip=None)
    np.testing.assert_allclose(state.ret, [1.5, 1.0])


# ------------------------------------------------------------------------------------ training

L, W = 16, 4


@pytest.fixture(scope="module")
def trend():
    """A market with a strong upward drift (mu = 300% a year, sigma = 20%), PPO on the discrete trading env."""
    market = synthetic_market(jax.random.key(7), 8, L + W + 16, model="gbm", ranges={"mu": (3.0, 3.0), "sigma": (0.2, 0.2)})
    env, params = make("trading", market=market, episode_length=L, window=W)
    config = PPOConfig(env="trading", num_envs=16, num_steps=32, total_timesteps=16 * 32 * 8, update_epochs=4,
                       minibatch_size=128, network_preset="tiny", lr=1e-2)
    trainer = make_trainer(config, env, params)
    result = trainer.train(jax.random.key(0))
    return config, env, params, trainer, result


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_ppo_learns_to_go_long_in_a_rising_market(trend):
    config, env, params, _, result = trend
    metrics = {k: np.asarray(v) for k, v in result.metrics.items()}
    assert metrics["episode_count"].min() > 0 and np.isfinite(metrics["value_loss"]).all()
    # a flat or random policy earns about 0 minus costs (the first update's random policy: about -0.01);
    # holding long for 16 bars of +1.2% drift earns about +0.2
    assert metrics["episode_return"][0] < 0.02
    assert metrics["episode_return"][-2:].mean() > 0.08, metrics["episode_return"]
    assert metrics["entropy"][-1] < metrics["entropy"][0]
    evaluation = evaluate(config, result, env, params, jax.random.key(1), n_episodes=64)
    assert bool(evaluation["done"].all()) and (np.asarray(evaluation["lengths"]) == L).all()
    assert float(evaluation["returns"].mean()) > 0.15
    np.testing.assert_allclose(evaluation["info"]["equity"] / 1e5 - 1, evaluation["returns"], atol=1e-4)
    act = make_policy(config, env, params)
    obs = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(3), 64), params)[0]
    assert float(jnp.mean(act(result, obs, jax.random.key(0), deterministic=True) == 2)) > 0.9  # 2 = long


def test_evaluate_runs_the_evaluation_modules_episodes(trend):
    config, env, params, _, result = trend
    key = jax.random.key(4)
    out = evaluate(config, result, env, params, key, n_episodes=16, deterministic=False)
    # the same episodes (and action keys) as the baselines' harness with the policy as a baseline-style callable
    stats = rollout_episodes(env, params, as_policy(config, result, env, params, deterministic=False), key, 16)
    np.testing.assert_allclose(out["returns"], stats.total_reward, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out["lengths"], stats.length)
    np.testing.assert_allclose(out["info"]["equity"], stats.info["equity"], rtol=1e-6)
    run = make_evaluator(config, env, params, n_episodes=16)
    run(result, params, key)
    run(jax.tree.map(lambda x: x * 1.0, result), params, jax.random.key(5))
    assert run._cache_size() == 1  # other params, another key: no recompilation


def test_training_is_deterministic_and_chunked_runs_equal_train_bit_for_bit(trend):
    config, _, _, trainer, result = trend
    assert _leaves_equal(trainer.train(jax.random.key(0)), result)
    state = trainer.init(jax.random.key(0))
    chunks = []
    for _ in range(config.num_updates + 1):  # one update per chunk; the last chunk is past the end: a no-op
        state, metrics = trainer.run(state, 1)
        chunks.append(metrics["episode_return"])
    assert int(state.update) == config.num_updates
    assert _leaves_equal(trainer.result(state), result)
    np.testing.assert_array_equal(np.concatenate(chunks), np.append(result.metrics["episode_return"], 0.0))


def test_vmap_over_seeds_and_a_learning_rate_grid_in_one_compilation(trend):
    config, _, _, trainer, result = trend
    keys = jnp.stack([jax.random.key(0), jax.random.key(1), jax.random.key(0)])
    vtrain = jax.jit(jax.vmap(trainer.train))
    grid = hyperparam_grid(config.hyperparams(), lr=[config.lr, config.lr, 3e-3])
    batched = vtrain(keys, grid)
    single_1 = trainer.train(jax.random.key(1))
    for lane, reference in ((0, result), (1, single_1)):
        for a, b in zip(jax.tree.leaves(jax.tree.map(lambda x: x[lane], batched)), jax.tree.leaves(reference)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # batched matmuls reassociate
    assert not np.allclose(batched.params["heads"]["policy_head"]["kernel"][0],
                           batched.params["heads"]["policy_head"]["kernel"][2])  # lr 1e-2 vs 3e-3
    np.testing.assert_allclose(batched.metrics["learning_rate"][:, 0], [1e-2, 1e-2, 3e-3], rtol=1e-6)
    vtrain(keys, hyperparam_grid(config.hyperparams(), lr=[1e-3, 2e-3, 3e-3]))
    assert vtrain._cache_size() == 1  # another grid: no recompilation


def _short(config: PPOConfig, **kw) -> PPOConfig:
    sizes = dict(num_envs=4, num_steps=8, total_timesteps=4 * 8 * 2, update_epochs=1, minibatch_size=16,
                 network_preset="tiny")
    return config.replace(**{**sizes, **kw})


def _finite(metrics) -> bool:
    return all(np.isfinite(np.asarray(v)).all() for v in metrics.values())


def test_lstm_gaussian_tanh_policy_updates_every_weight_on_the_continuous_trading_env_and_acts_with_a_carry(trend):
    market = trend[2].market
    env, params = make("trading", market=market, episode_length=L, window=W, action_mode="continuous")
    config = _short(PPOConfig(recurrent=True), minibatch_size=8)  # 1 env sequence of 8 steps per minibatch
    trainer = make_trainer(config, env, params)
    result = trainer.train(jax.random.key(0))
    # two updates are too few to show learning (test_ppo_learns_... does that); they must move every weight
    initial = trainer.result(trainer.init(jax.random.key(0))).params
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(result.params))]
    assert len(moved) > 4 and all(moved), moved
    assert {"w_h", "w_x", "b"} <= set(result.params) and result.params["heads"]["log_std"].shape == (1,)
    assert _finite(result.metrics) and float(result.metrics["episode_count"].sum()) > 0  # 16-step episodes ended
    act = make_policy(config, env, params)
    obs = jnp.zeros((3, env.obs_size)) + 3.0
    action, carry = act(result, obs, jax.random.key(1))
    assert action.shape == (3, 1) and bool(jnp.all(jnp.abs(action) <= 1.0)) and carry[0].shape == (3, 16)
    assert act(result, obs[0], jax.random.key(1), carry=jax.tree.map(lambda c: c[:1], carry))[0].shape == (1,)
    # evaluation threads the carry through each episode (a RecurrentPolicy in the evaluation rollout)
    out = evaluate(config, result, env, params, jax.random.key(2), n_episodes=4, deterministic=False)
    assert bool(out["done"].all()) and (np.asarray(out["lengths"]) == L).all() and np.isfinite(out["returns"]).all()
    stats = rollout_episodes(env, params, as_policy(config, result, env, params, deterministic=False),
                             jax.random.key(2), 4)
    np.testing.assert_allclose(out["returns"], stats.total_reward, rtol=1e-6, atol=1e-7)


def test_execution_env_with_ten_discrete_actions_runs_full_episodes_and_updates_the_policy():
    config = _short(PPOConfig(env="execution", env_kwargs={"horizon": 8}))
    trainer = make_trainer(config)
    result = trainer.train(jax.random.key(0))
    initial = trainer.result(trainer.init(jax.random.key(0))).params
    assert not _leaves_equal(initial["heads"], result.params["heads"])  # the policy and value heads moved
    assert result.params["heads"]["policy_head"]["kernel"].shape[-1] == 10
    assert _finite(result.metrics) and float(result.metrics["episode_count"].sum()) >= 4 * 2  # 8-step episodes
    np.testing.assert_allclose(result.metrics["episode_length"], 8.0)


def test_a_mesh_needs_num_envs_divisible_by_its_devices(trend):
    class FakeMesh:
        axis_names = ("data",)
        shape = {"data": 3}

    _, env, params, _, _ = trend
    with pytest.raises(ValueError, match="num_envs=4 is not divisible by the 3 devices"):
        make_trainer(_short(PPOConfig()), env, params, mesh=FakeMesh())


_DATA_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import json
    import jax, numpy as np
    from trading_jax.envs import make, synthetic_market
    from trading_jax.rl.ppo import PPOConfig, make_train
    from trading_jax.parallel import make_mesh
    assert jax.device_count() == 4, jax.devices()
    market = synthetic_market(jax.random.key(7), 4, 24, model="gbm")
    env, params = make("trading", market=market, episode_length=8, window=4)
    config = PPOConfig(num_envs=8, num_steps=8, total_timesteps=8 * 8 * 2, update_epochs=2, minibatch_size=16,
                       network_preset="tiny")
    single = make_train(config, env, params)(jax.random.key(0))
    multi = make_train(config, env, params, mesh=make_mesh(4))(jax.random.key(0))
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi)))
    devices = min(len(leaf.sharding.device_set) for leaf in jax.tree.leaves(multi.params))
    print(json.dumps({"diff": diff, "devices": devices}))
    """
)


def test_one_and_four_devices_agree():
    flags = "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", _DATA_PARALLEL_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300, cwd=str(root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4
    assert report["diff"] < 1e-5, report
