"""The pure pieces of off-policy RL (`trading_jax.rl.targets`, `trading_jax.rl.distributional`) on batches
worked out by hand: each expected number is derived in the comments, never by calling the function under test."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.rl.distributional import (atoms, categorical_double_q_target, categorical_loss,
                                           categorical_projection, categorical_q_values)
from trading_jax.rl.targets import (ddpg_target, default_target_entropy, double_q_target, huber,
                                    importance_weights, linear_schedule, polyak_update, q_target,
                                    sac_actor_loss, sac_critic_loss, sac_target, smoothed_target_action,
                                    td3_target, td_error_priorities, temperature_loss)

close = np.testing.assert_allclose


# ---------------------------------------------------------------- target networks


def test_polyak_update_averages_every_leaf_and_tau_one_copies_while_tau_zero_keeps():
    target = {"dense": {"w": jnp.array([1.0, 2.0]), "b": jnp.array(0.0)}, "head": (jnp.array([[8.0]]),)}
    online = {"dense": {"w": jnp.array([3.0, 6.0]), "b": jnp.array(4.0)}, "head": (jnp.array([[0.0]]),)}
    got = polyak_update(target, online, 0.25)
    # 0.25 * online + 0.75 * target: w = [0.75 + 0.75, 1.5 + 1.5], b = 1 + 0, head = 0 + 6
    close(got["dense"]["w"], [1.5, 3.0])
    close(got["dense"]["b"], 1.0)
    close(got["head"][0], [[6.0]])
    assert jax.tree.structure(got) == jax.tree.structure(target)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(got))
    for tau, expected in ((1.0, online), (0.0, target)):
        for a, b in zip(jax.tree.leaves(polyak_update(target, online, tau)), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(a, b)
    traced = jax.jit(polyak_update)(target, online, jnp.float32(0.25))  # tau may be a traced hyperparameter
    close(traced["dense"]["w"], [1.5, 3.0])


# ---------------------------------------------------------------- SAC


def test_sac_target_is_reward_plus_discounted_soft_min_and_a_termination_keeps_only_the_reward():
    reward = jnp.array([1.0, 0.5, -1.0])
    bootstrap = jnp.array([0.99, 0.9, 0.0])  # the third transition terminated
    q1, q2 = jnp.array([2.0, 1.0, 5.0]), jnp.array([3.0, 0.5, 7.0])
    log_prob = jnp.array([-1.0, 0.5, 2.0])
    # min(Q1', Q2') = [2, 0.5, 5]; minus 0.2 log pi = [2.2, 0.4, 4.6]
    # y = [1 + 0.99 * 2.2, 0.5 + 0.9 * 0.4, -1 + 0 * 4.6] = [3.178, 0.86, -1]
    close(sac_target(reward, bootstrap, q1, q2, log_prob, 0.2), [3.178, 0.86, -1.0], rtol=1e-6)


def test_sac_critic_loss_is_half_the_summed_mses_and_leaves_the_target_alone():
    q1, q2, y = jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]), jnp.array([1.0, 3.0])
    # errors: Q1 - y = [0, -1] (mse 0.5), Q2 - y = [-1, 1] (mse 1); 0.5 * (0.5 + 1) = 0.75
    assert float(sac_critic_loss(q1, q2, y)) == pytest.approx(0.75)
    # weights [2, 0]: mean([0, 0]) = 0 and mean([2, 0]) = 1; 0.5 * 1 = 0.5
    assert float(sac_critic_loss(q1, q2, y, weights=jnp.array([2.0, 0.0]))) == pytest.approx(0.5)
    # dL/dQ1 = (Q1 - y) / B = [0, -0.5]; nothing reaches y
    g_q1, g_y = jax.grad(sac_critic_loss, argnums=(0, 2))(q1, q2, y)
    close(g_q1, [0.0, -0.5])
    np.testing.assert_array_equal(g_y, [0.0, 0.0])


def test_sac_actor_loss_trades_entropy_against_the_smaller_critic_with_alpha_held_constant():
    log_prob, q1, q2 = jnp.array([-1.0, 2.0]), jnp.array([3.0, 1.0]), jnp.array([2.0, 4.0])
    # 0.5 * [-1, 2] - min = [-0.5 - 2, 1 - 1] = [-2.5, 0]: mean -1.25
    assert float(sac_actor_loss(log_prob, q1, q2, 0.5)) == pytest.approx(-1.25)
    assert float(jax.grad(lambda a: sac_actor_loss(log_prob, q1, q2, a))(0.5)) == 0.0


def test_temperature_loss_value_and_gradient_go_to_log_alpha_only():
    log_alpha = jnp.float32(math.log(0.5))
    log_prob = jnp.array([-1.0, 0.5, 2.0])
    target_entropy = default_target_entropy(2)
    assert target_entropy == -2.0 and isinstance(target_entropy, float)
    # log pi + H = [-3, -1.5, 0], mean -1.5: L = -ln(0.5) * (-1.5) = 1.5 ln 0.5; dL/dlog_alpha = 1.5
    assert float(temperature_loss(log_alpha, log_prob, target_entropy)) == pytest.approx(1.5 * math.log(0.5), rel=1e-6)
    g_alpha, g_logp = jax.grad(temperature_loss, argnums=(0, 1))(log_alpha, log_prob, target_entropy)
    assert float(g_alpha) == pytest.approx(1.5)  # entropy -log pi above the target: descent lowers alpha
    np.testing.assert_array_equal(g_logp, [0.0, 0.0, 0.0])


# ---------------------------------------------------------------- TD3, DDPG


def test_smoothed_target_action_clips_the_noise_to_noise_clip_and_the_action_to_its_bounds():
    key = jax.random.key(3)
    # 128 actions at 0 and 128 at 0.9, noise sigma 10 so that nearly every draw hits the noise clip 0.5
    next_action = jnp.concatenate([jnp.zeros((128, 1)), jnp.full((128, 1), 0.9)])
    out = np.asarray(smoothed_target_action(next_action, key, 10.0, 0.5))
    assert out.shape == (256, 1) and out.dtype == np.float32
    at_zero, at_edge = out[:128, 0], out[128:, 0]
    assert np.all(np.abs(at_zero) <= 0.5) and np.any(at_zero == 0.5) and np.any(at_zero == -0.5)
    assert np.all(at_edge <= 1.0) and np.any(at_edge == 1.0)  # 0.9 + 0.5 clipped to the bound 1
    assert at_edge.min() == pytest.approx(0.4) and np.isclose(at_edge, 0.4).any()  # 0.9 - 0.5: the noise clip
    # custom bounds [-0.2, 0.3]: 0 + noise lies in them
    bounded = np.asarray(smoothed_target_action(next_action, key, 10.0, 0.5, low=-0.2, high=0.3))
    assert bounded.min() == pytest.approx(-0.2) and bounded.max() == pytest.approx(0.3)
    # the same key gives the same noise; sigma 0 only clips the action
    np.testing.assert_array_equal(smoothed_target_action(next_action, key, 10.0, 0.5), out)
    raw = jnp.array([[1.5, -0.3], [-2.0, 0.7]])
    np.testing.assert_array_equal(smoothed_target_action(raw, key, 0.0, 0.5), np.float32([[1.0, -0.3], [-1.0, 0.7]]))


def test_td3_target_takes_the_smaller_critic_and_ddpg_the_single_one():
    reward, bootstrap = jnp.array([1.0, 2.0]), jnp.array([0.5, 0.0])
    # min([4, 10], [6, -3]) = [4, -3]: [1 + 0.5 * 4, 2 + 0] = [3, 2]
    close(td3_target(reward, bootstrap, jnp.array([4.0, 10.0]), jnp.array([6.0, -3.0])), [3.0, 2.0])
    # [1 + 0.5 * 6, 2 + 0 * 10] = [4, 2]
    close(ddpg_target(reward, bootstrap, jnp.array([6.0, 10.0])), [4.0, 2.0])


# ---------------------------------------------------------------- DQN


def test_double_q_target_lets_the_online_net_choose_and_the_target_net_value_while_plain_dqn_takes_the_max():
    reward, bootstrap = jnp.array([1.0, -1.0]), jnp.array([0.9, 0.5])
    online = jnp.array([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])   # argmax: [1, 0]
    target = jnp.array([[10.0, 0.0, 4.0], [2.0, 8.0, 1.0]])  # argmax: [0, 1] (disagrees with the online net)
    # double: target values at the online choice [0, 2]: [1 + 0.9 * 0, -1 + 0.5 * 2] = [1, 0]
    close(double_q_target(reward, bootstrap, online, target), [1.0, 0.0])
    # plain: max of the target net [10, 8]: [1 + 9, -1 + 4] = [10, 3]
    close(q_target(reward, bootstrap, target), [10.0, 3.0])


def test_huber_priorities_and_linear_schedule_match_hand_worked_values():
    # delta 1: 0.5 * 0.5^2 = 0.125 (quadratic), 1 * (3 - 0.5) = 2.5 (linear)
    close(huber(jnp.array([0.5, -3.0])), [0.125, 2.5])
    close(huber(jnp.array([-3.0]), delta=2.0), [4.0])  # 2 * (3 - 1)
    close(td_error_priorities(jnp.array([-2.0, 0.0, 0.5])), [2.0 + 1e-6, 1e-6, 0.5 + 1e-6], rtol=1e-6)
    assert float(linear_schedule(1.0, 0.05, 0.5)) == pytest.approx(0.525)   # 1 - 0.95 / 2
    assert float(linear_schedule(1.0, 0.05, 2.0)) == pytest.approx(0.05)    # clipped at the end
    assert float(linear_schedule(0.4, 1.0, -1.0)) == pytest.approx(0.4)     # and at the start


def test_importance_weights_correct_for_sampling_frequency_and_the_largest_is_one():
    probabilities = jnp.array([0.1, 0.4, 0.2])  # N P = [1, 4, 2] with N = 10
    # beta 0.5: [1, 4, 2]^-0.5 = [1, 0.5, 1/sqrt 2], max 1
    close(importance_weights(probabilities, 10, 0.5), [1.0, 0.5, 1.0 / math.sqrt(2.0)], rtol=1e-6)
    # beta 1: [1, 1/4, 1/2]; beta 0: no correction
    close(importance_weights(probabilities, 10, 1.0), [1.0, 0.25, 0.5], rtol=1e-6)
    close(importance_weights(probabilities, 10, 0.0), [1.0, 1.0, 1.0])
    # a vanishing probability gets weight 1 and the others finite weights (no inf / nan)
    w = np.asarray(importance_weights(jnp.array([1e-30, 0.5]), 1000, 1.0))
    assert np.all(np.isfinite(w)) and w.max() == 1.0 and w[0] == 1.0


def test_targets_vmap_over_hyperparameters_like_separate_calls():
    reward, bootstrap = jnp.array([1.0, 0.5]), jnp.array([0.9, 0.0])
    q1, q2, log_prob = jnp.array([2.0, 1.0]), jnp.array([3.0, 0.0]), jnp.array([-1.0, 1.0])
    alphas = jnp.array([0.0, 0.2, 1.0])
    batched = jax.jit(jax.vmap(lambda a: sac_target(reward, bootstrap, q1, q2, log_prob, a)))(alphas)
    for row, alpha in zip(batched, [0.0, 0.2, 1.0]):
        close(row, sac_target(reward, bootstrap, q1, q2, log_prob, alpha), rtol=1e-6)


# ---------------------------------------------------------------- C51

SUPPORT = atoms(-1.0, 1.0, 5)  # [-1, -0.5, 0, 0.5, 1], dz = 0.5


def test_atoms_are_evenly_spaced_float32_from_v_min_to_v_max():
    np.testing.assert_array_equal(SUPPORT, [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert SUPPORT.dtype == jnp.float32


def test_projection_with_reward_zero_and_bootstrap_one_returns_the_same_distribution():
    probs = jnp.array([[0.1, 0.2, 0.3, 0.25, 0.15]])
    close(categorical_projection(probs, jnp.array([0.0]), jnp.array([1.0]), SUPPORT), probs, atol=1e-7)


def test_projection_splits_an_atom_between_its_two_neighbours_linearly():
    probs = jnp.array([[0.0, 0.0, 0.6, 0.4, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    # row 0, r = 0.1, bootstrap 1: atom 0 -> 0.1, a fifth of the way from 0 to 0.5: 0.8 * 0.6 = 0.48 to 0,
    #   0.2 * 0.6 = 0.12 to 0.5; atom 0.5 -> 0.6: 0.8 * 0.4 = 0.32 to 0.5, 0.2 * 0.4 = 0.08 to 1
    # row 1, r = 0, bootstrap 0.9: atom 1 -> 0.9, four fifths of the way from 0.5 to 1: 0.2 to 0.5, 0.8 to 1
    got = categorical_projection(probs, jnp.array([0.1, 0.0]), jnp.array([1.0, 0.9]), SUPPORT)
    close(got, [[0.0, 0.0, 0.48, 0.12 + 0.32, 0.08], [0.0, 0.0, 0.0, 0.2, 0.8]], atol=1e-6)


def test_an_atom_landing_exactly_on_a_support_point_keeps_all_its_mass():
    # r = -0.5: -0.5 -> -1 and 0 -> -0.5 exactly (floor == ceil: the classic implementation drops this mass)
    # r = 0, bootstrap 0.5: -1 -> -0.5 and 1 -> 0.5 exactly
    probs = jnp.array([[0.0, 0.3, 0.7, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0, 0.5]])
    got = categorical_projection(probs, jnp.array([-0.5, 0.0]), jnp.array([1.0, 0.5]), SUPPORT)
    close(got, [[0.3, 0.7, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.5, 0.0]], atol=1e-7)


def test_projection_clips_values_beyond_v_max_and_v_min_to_the_end_atoms():
    uniform = jnp.full((4, 5), 0.2)
    reward, bootstrap = jnp.array([5.0, -5.0, 0.75, 0.5]), jnp.array([0.9, 0.9, 1.0, 1.0])
    got = categorical_projection(uniform, reward, bootstrap, SUPPORT)
    close(got[0], [0.0, 0.0, 0.0, 0.0, 1.0], atol=1e-7)  # everything above 1
    close(got[1], [1.0, 0.0, 0.0, 0.0, 0.0], atol=1e-7)  # everything below -1
    # r = 0.75: atoms -> [-0.25, 0.25, 0.75, 1.25 -> 1, 1.75 -> 1]; the first three sit halfway between
    # neighbours (0.1 each side), the last two put 0.2 + 0.2 on 1
    close(got[2], [0.0, 0.1, 0.2, 0.2, 0.1 + 0.4], atol=1e-6)
    # r = 0.5: atoms -> [-0.5, 0, 0.5, 1, 1.5 -> 1]
    close(got[3], [0.0, 0.2, 0.2, 0.2, 0.4], atol=1e-6)


def test_projected_rows_sum_to_one_and_keep_the_mean_when_nothing_is_clipped():
    rng = np.random.default_rng(0)
    support = atoms(-10.0, 10.0, 51)
    probs = rng.dirichlet(np.ones(51), size=32).astype(np.float32)
    reward = rng.uniform(-1.0, 1.0, 32).astype(np.float32)
    bootstrap = rng.choice([0.0, 0.9, 0.99], 32).astype(np.float32)
    got = np.asarray(categorical_projection(probs, reward, bootstrap, support))
    assert got.shape == (32, 51) and got.dtype == np.float32 and got.min() >= 0.0
    close(got.sum(axis=1), np.ones(32), atol=1e-5)
    # inside the support the projection preserves the mean: sum m z = r + bootstrap * sum p z
    # (|r + bootstrap z| <= 1 + 0.99 * 10 < 10.9 may clip at the ends, so shrink Z' to [-9, 9] first)
    inner = probs * (np.abs(np.asarray(support)) <= 9.0)
    inner /= inner.sum(axis=1, keepdims=True)
    proj = np.asarray(categorical_projection(inner, reward, bootstrap, support))
    close(proj @ np.asarray(support), reward + bootstrap * (inner @ np.asarray(support)), atol=1e-4)


def test_bootstrap_zero_puts_all_the_mass_at_the_reward():
    probs = jnp.array([[0.2, 0.2, 0.2, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0, 1.0]])
    got = categorical_projection(probs, jnp.array([0.5, 0.25]), jnp.array([0.0, 0.0]), SUPPORT)
    # 0.5 is an atom; 0.25 lies halfway between 0 and 0.5
    close(got, [[0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.5, 0.5, 0.0]], atol=1e-7)


P_LOW = [0.6, 0.1, 0.1, 0.1, 0.1]   # mean -0.6 + 0.1 (-0.5 + 0 + 0.5 + 1) = -0.5
P_HIGH = [0.1, 0.1, 0.1, 0.1, 0.6]  # mean +0.5


def test_categorical_q_values_are_the_means_of_the_softmax():
    logits = jnp.log(jnp.array([[P_LOW, P_HIGH, [0.2] * 5]]))
    close(categorical_q_values(logits, SUPPORT), [[-0.5, 0.5, 0.0]], atol=1e-6)


def test_categorical_double_q_target_chooses_the_action_by_the_online_net():
    # row 0: online prefers action 0 (P_HIGH), the target net values action 1 higher; row 1: online prefers 1
    online = jnp.log(jnp.array([[P_HIGH, P_LOW], [P_LOW, P_HIGH]]))
    target = jnp.log(jnp.array([[P_LOW, P_HIGH], [P_LOW, P_HIGH]]))
    # reward 0, bootstrap 1 leave the chosen distribution as it is: row 0 -> target's action 0 = P_LOW,
    # row 1 -> target's action 1 = P_HIGH
    got = categorical_double_q_target(jnp.zeros(2), jnp.ones(2), online, target, SUPPORT)
    close(got, [P_LOW, P_HIGH], atol=1e-6)


def test_categorical_loss_is_the_cross_entropy_per_item_and_the_target_gets_no_gradient():
    logits = jnp.stack([jnp.zeros(3), jnp.log(jnp.array([0.5, 0.25, 0.25]))])
    target = jnp.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    # uniform prediction: -sum m ln(1/3) = ln 3; one-hot on a 0.5 class: -ln 0.5 = ln 2
    close(categorical_loss(logits, target), [math.log(3.0), math.log(2.0)], rtol=1e-6)
    g = jax.grad(lambda m: categorical_loss(logits, m).sum())(target)
    np.testing.assert_array_equal(g, np.zeros((2, 3)))
