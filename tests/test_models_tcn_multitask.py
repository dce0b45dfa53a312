"""TCN and multi-task networks: shapes, hand-counted parameters, receptive field, causality,
the uncertainty-weighted loss against hand-worked numbers, determinism and tiny overfitting runs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trading_jax.models import available, create
from trading_jax.models import multitask as mt
from trading_jax.models import tcn as tcn_mod
from trading_jax.models.multitask import (
    TASK_KINDS,
    TASKS,
    MultiTaskNet,
    multitask_task_losses,
    uncertainty_weighted_loss,
)
from trading_jax.models.tcn import TCN, receptive_field, tcn_dilations

BATCH, TIME, FEATURES = 4, 24, 4


def n_params(params) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def abstract_params(model, time=TIME, features=FEATURES):
    """Parameter shapes without running anything (jax.eval_shape)."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, time, features))))


def tiny(name: str, **overrides):
    if name == "tcn":
        return TCN(**{**tcn_mod.TINY_PRESET, **overrides})
    return MultiTaskNet(**{**mt.TINY_PRESET, **overrides})


@pytest.fixture(scope="module")
def inputs():
    return jax.random.normal(jax.random.key(1), (BATCH, TIME, FEATURES))


@pytest.fixture(scope="module", params=["tcn", "multitask"])
def tiny_model(request, inputs):
    """(name, model, params, jitted eval-mode apply) for each tiny model; compiled once per model."""
    model = tiny(request.param)
    params = model.init(jax.random.key(0), inputs)
    return request.param, model, params, jax.jit(lambda p, x: model.apply(p, x))


# ----------------------------------------------------------------------------- registry and presets


def test_registry_builds_the_tiny_and_seed_presets():
    assert {"seed", "tiny"} <= set(available()["tcn"])
    assert {"seed", "tiny"} <= set(available()["multitask"])
    assert create("tcn", preset="tiny") == TCN(**tcn_mod.TINY_PRESET)
    assert create("multitask", preset="seed") == MultiTaskNet()
    assert create("tcn", preset="seed") == TCN()  # factory defaults are the seed sizes
    assert create("tcn", preset="tiny", n_outputs=3).n_outputs == 3


# ----------------------------------------------------------------------------- parameter counts


def test_tiny_tcn_has_the_hand_counted_parameters():
    k, c, f = 2, 8, FEATURES  # tiny preset: kernel 2, 8 channels, 3 levels
    conv = lambda cin, cout: k * cin * cout + cout  # noqa: E731
    norm = 2 * c  # LayerNorm scale + bias over channels
    first = conv(f, c) + conv(c, c) + 2 * norm + (f * c + c)  # 1x1 conv on the residual: f -> c
    later = conv(c, c) + conv(c, c) + 2 * norm
    head = c * 1 + 1
    expected = first + 2 * later + head
    assert expected == 897
    assert n_params(abstract_params(tiny("tcn"))) == expected


def test_seed_tcn_has_190081_parameters_and_a_receptive_field_of_1021():
    k, c, f = 3, 64, 10  # seed 002: 10 inputs, [64] * 8, kernel 3
    conv = lambda cin, cout: k * cin * cout + cout  # noqa: E731
    first = conv(f, c) + conv(c, c) + 4 * c + (f * c + c)
    later = 2 * conv(c, c) + 4 * c
    expected = first + 7 * later + (c + 1)
    model = create("tcn", preset="seed")
    assert n_params(abstract_params(model, time=64, features=f)) == expected == 190_081
    assert model.dilations == (1, 2, 4, 8, 16, 32, 64, 128)
    assert model.receptive_field == 1021 >= 256


def test_tiny_multitask_has_the_hand_counted_parameters():
    k, c, f, hid = 3, 8, FEATURES, 8  # tiny preset: 2 blocks, heads Dense(8)
    dense = lambda cin, cout: cin * cout + cout  # noqa: E731
    block = 2 * (k * c * c + c) + 2 * 2 * c
    heads = sum(dense(c, hid) + dense(hid, out) for out in (1, 3, 1, 1))
    expected = dense(f, c) + 2 * block + heads + len(TASKS)  # + log_vars
    assert expected == 1250
    params = abstract_params(tiny("multitask"))
    assert n_params(params) == expected
    assert params["params"]["log_vars"].shape == (4,)


def test_seed_multitask_parameter_count():
    k, c, f, hid = 3, 64, 10, 128
    dense = lambda cin, cout: cin * cout + cout  # noqa: E731
    block = 2 * (k * c * c + c) + 4 * c
    expected = dense(f, c) + 4 * block + sum(dense(c, hid) + dense(hid, out) for out in (1, 3, 1, 1)) + 4
    assert n_params(abstract_params(create("multitask", preset="seed"), time=60, features=f)) == expected == 134_602
    assert MultiTaskNet().receptive_field == 61  # covers the seed's 60-step window


# ----------------------------------------------------------------------------- shapes and dtypes


def test_outputs_have_the_documented_shapes(tiny_model, inputs):
    name, model, params, apply = tiny_model
    out = apply(params, inputs)
    apply(params, inputs + 1.0)
    assert apply._cache_size() == 1  # new values of the same shape reuse the compiled program
    assert out["prediction"].shape == (BATCH, 1)
    assert out["sequence"].shape == (BATCH, TIME, 8)
    if name == "multitask":
        assert out["price"].shape == out["volatility"].shape == out["volume"].shape == (BATCH, 1)
        assert out["direction_logits"].shape == (BATCH, 3)
        assert out["log_vars"].shape == (len(TASKS),)
        np.testing.assert_array_equal(out["prediction"], out["price"])
        np.testing.assert_array_equal(out["logits"], out["direction_logits"])
        np.testing.assert_array_equal(out["log_vars"], np.zeros(4))  # s_i = 0: unit weights at init
        assert bool(jnp.all(out["volatility"] > 0))


def test_tcn_classification_head_is_optional():
    model = tiny("tcn", n_classes=3)
    out = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), jnp.zeros((2, 8, 3))), jnp.zeros((2, 8, 3))))
    assert out["logits"].shape == (2, 3)
    assert "logits" not in jax.eval_shape(
        lambda: tiny("tcn").apply(tiny("tcn").init(jax.random.key(0), jnp.zeros((2, 8, 3))), jnp.zeros((2, 8, 3)))
    )


@pytest.mark.parametrize("name", ["tcn", "multitask"])
def test_bfloat16_compute_keeps_float32_params_and_head_outputs(name):
    model = tiny(name, dtype=jnp.bfloat16)
    x = jnp.zeros((2, 8, 3))
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    out = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x), x))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    assert out["sequence"].dtype == jnp.bfloat16
    assert out["prediction"].dtype == jnp.float32


def test_inputs_must_be_batch_time_features():
    with pytest.raises(ValueError, match="batch, time, features"):
        tiny("tcn").init(jax.random.key(0), jnp.zeros((8, 3)))


# ----------------------------------------------------------------------------- receptive field and causality


def test_receptive_field_formula():
    # 1 + convs_per_block * sum_i (k - 1) d_i
    assert receptive_field(3, tcn_dilations(8)) == 1 + 2 * 2 * 255 == 1021
    assert receptive_field(2, (1, 2, 4)) == 1 + 2 * 1 * 7 == 15
    assert receptive_field(2, tcn_dilations(8), convs_per_block=1) == 256  # the seed document's count
    assert receptive_field(1, (1, 2)) == 1
    assert tiny("tcn").receptive_field == 15
    assert tiny("multitask").receptive_field == 1 + 2 * 2 * (1 + 2) == 13


def perturbed(x, step):
    return x.at[:, step, :].add(1.0)


def test_output_at_t_sees_exactly_the_receptive_field(tiny_model, inputs):
    """Perturbing the input at t - RF leaves the output at t unchanged; at t - RF + 1 it changes it."""
    _, model, params, apply = tiny_model
    rf, t = model.receptive_field, TIME - 1
    assert t - rf >= 0
    base = apply(params, inputs)
    outside = apply(params, perturbed(inputs, t - rf))
    inside = apply(params, perturbed(inputs, t - rf + 1))
    np.testing.assert_array_equal(outside["sequence"][:, t], base["sequence"][:, t])
    np.testing.assert_array_equal(outside["prediction"], base["prediction"])
    assert np.all(np.abs(np.asarray(inside["sequence"][:, t] - base["sequence"][:, t])).max(axis=-1) > 1e-6)
    assert not np.allclose(inside["prediction"], base["prediction"])


def test_sequence_is_causal(tiny_model, inputs):
    """Changing every input after step t leaves the hidden states at steps <= t unchanged."""
    _, _, params, apply = tiny_model
    t = 10
    future = inputs.at[:, t + 1 :, :].set(jax.random.normal(jax.random.key(7), (BATCH, TIME - t - 1, FEATURES)) * 5)
    base, changed = apply(params, inputs)["sequence"], apply(params, future)["sequence"]
    np.testing.assert_array_equal(changed[:, : t + 1], base[:, : t + 1])
    assert not np.allclose(changed[:, t + 1 :], base[:, t + 1 :])


# ----------------------------------------------------------------------------- uncertainty-weighted loss


def test_uncertainty_weighted_loss_matches_hand_worked_numbers():
    # regression:     1/2 e^{-0} * 2 + 0/2            = 1
    # classification: e^{-log 2} * 1 + (log 2)/2       = 0.5 + 0.34657...
    losses, log_vars = jnp.array([2.0, 1.0]), jnp.array([0.0, math.log(2.0)])
    loss = uncertainty_weighted_loss(losses, log_vars, ("regression", "classification"))
    np.testing.assert_allclose(loss, 1.0 + 0.5 + 0.5 * math.log(2.0), rtol=1e-6)
    # dL/ds_i = -c_i e^{-s_i} L_i + 1/2: -1/2 * 2 + 1/2 = -0.5, and -0.5 + 0.5 = 0
    grad = jax.grad(uncertainty_weighted_loss, argnums=1)(losses, log_vars, ("regression", "classification"))
    np.testing.assert_allclose(grad, [-0.5, 0.0], atol=1e-7)
    # with every s_i = 0 the loss is the plain weighted sum 1/2 L_reg + L_cls
    np.testing.assert_allclose(
        uncertainty_weighted_loss(jnp.array([3.0, 0.25]), jnp.zeros(2), ("regression", "classification")), 1.75
    )


def test_uncertainty_weighted_loss_is_minimised_at_the_analytic_log_variances():
    """The optimum is s* = log L for regression (weight 1/(2 sigma^2)) and s* = log(2 L) for
    classification (weight 1/sigma^2): the gradient vanishes there and any step away costs more."""
    losses, kinds = jnp.array([0.3, 1.7, 0.05, 2.5]), TASK_KINDS
    s_star = jnp.log(jnp.array([0.3, 2 * 1.7, 0.05, 2.5]))
    grad = jax.grad(uncertainty_weighted_loss, argnums=1)(losses, s_star, kinds)
    np.testing.assert_allclose(grad, np.zeros(4), atol=1e-6)
    at_optimum = uncertainty_weighted_loss(losses, s_star, kinds)
    for delta in (-0.1, 0.1):
        assert uncertainty_weighted_loss(losses, s_star + delta, kinds) > at_optimum
    # value at the optimum: regression terms 1/2 + log(L)/2, classification term 1/2 + log(2L)/2
    np.testing.assert_allclose(at_optimum, float(jnp.sum(0.5 + 0.5 * s_star)), rtol=1e-6)


def test_uncertainty_weighted_loss_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="n_tasks"):
        uncertainty_weighted_loss(jnp.ones(3), jnp.zeros(4), TASK_KINDS)
    with pytest.raises(ValueError, match="unknown task kinds"):
        uncertainty_weighted_loss(jnp.ones(2), jnp.zeros(2), ("regression", "ranking"))


def test_task_losses_match_hand_worked_numbers():
    outputs = {
        "price": jnp.array([[1.0], [2.0]]),
        "direction_logits": jnp.array([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]]),
        "volatility": jnp.array([[0.5], [0.5]]),
        "volume": jnp.array([[0.0], [0.0]]),
    }
    targets = {
        "price": jnp.array([0.0, 2.0]),  # MSE (1 + 0)/2
        "direction": jnp.array([1, 0]),  # CE (log 3 + log 2)/2: softmax [2, 1, 1]/4 -> p = 1/2
        "volatility": jnp.array([[1.0], [1.5]]),  # MSE (0.25 + 1)/2
        "volume": jnp.array([3.0, -1.0]),  # MSE (9 + 1)/2
    }
    np.testing.assert_allclose(
        multitask_task_losses(outputs, targets), [0.5, 0.5 * (math.log(3.0) + math.log(2.0)), 0.625, 5.0], rtol=1e-6
    )


# ----------------------------------------------------------------------------- randomness


def test_same_key_gives_same_params_and_different_keys_differ(inputs):
    for name in ("tcn", "multitask"):
        model = tiny(name)
        a, b, c = (model.init(jax.random.key(k), inputs) for k in (3, 3, 4))
        assert jax.tree.all(jax.tree.map(lambda u, v: bool(jnp.array_equal(u, v)), a, b))
        assert not np.array_equal(a["params"]["block0"]["conv0"]["kernel"], c["params"]["block0"]["conv0"]["kernel"])


def test_eval_is_deterministic_and_dropout_depends_only_on_its_key(tiny_model, inputs):
    _, model, params, apply = tiny_model
    np.testing.assert_array_equal(apply(params, inputs)["sequence"], apply(params, inputs)["sequence"])
    train_apply = jax.jit(lambda p, x, key: model.apply(p, x, train=True, rngs={"dropout": key})["sequence"])
    first, again = train_apply(params, inputs, jax.random.key(5)), train_apply(params, inputs, jax.random.key(5))
    other = train_apply(params, inputs, jax.random.key(6))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert not np.allclose(first, apply(params, inputs)["sequence"])


# ----------------------------------------------------------------------------- learning


def _overfit(loss_fn, params, steps=150, learning_rate=1e-2):
    """Adam on a fixed batch inside one lax.scan; returns (params, per-step losses)."""
    optimizer = optax.adam(learning_rate)

    @jax.jit
    def run(params):
        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
        return params, losses

    return run(params)


def test_tiny_tcn_overfits_a_small_batch():
    x_key, y_key = jax.random.split(jax.random.key(11))
    x, y = jax.random.normal(x_key, (16, 16, FEATURES)), jax.random.normal(y_key, (16, 1))
    model = tiny("tcn", dropout=0.0)
    params = model.init(jax.random.key(0), x)
    _, losses = _overfit(lambda p: jnp.mean(jnp.square(model.apply(p, x)["prediction"] - y)), params)
    assert losses[-1] < 0.1 * losses[0], (float(losses[0]), float(losses[-1]))


def test_tiny_multitask_overfits_a_small_batch_with_learned_task_weights():
    keys = jax.random.split(jax.random.key(12), 5)
    x = jax.random.normal(keys[0], (16, 16, FEATURES))
    targets = {
        "price": jax.random.normal(keys[1], (16, 1)),
        "direction": jax.random.randint(keys[2], (16,), 0, 3),
        "volatility": jnp.abs(jax.random.normal(keys[3], (16, 1))) + 0.1,
        "volume": jax.random.normal(keys[4], (16, 1)),
    }
    model = tiny("multitask", dropout=0.0)
    params = model.init(jax.random.key(0), x)

    def task_losses(p):
        return multitask_task_losses(model.apply(p, x), targets)

    def loss_fn(p):
        return uncertainty_weighted_loss(task_losses(p), p["params"]["log_vars"], TASK_KINDS)

    trained, _ = _overfit(loss_fn, params)
    before, after = task_losses(params), task_losses(trained)
    assert float(after.sum()) < 0.1 * float(before.sum()), (before, after)
    # the learned log-variances fall as the task losses shrink (s* = log L or log 2L)
    assert bool(jnp.all(trained["params"]["log_vars"] < 0))


def test_tcn_layer_norm_matches_flax_layer_norm_in_value_and_gradient():
    """The TCN's LayerNorm (hand-written VJP) against `flax.linen.LayerNorm` with the same params."""
    import flax.linen as nn

    x = jax.random.normal(jax.random.key(0), (3, 7, 16)) * 2.0 + 0.5
    target = jax.random.normal(jax.random.key(1), (3, 7, 16))
    ours, theirs = tcn_mod.LayerNorm(), nn.LayerNorm(epsilon=1e-6)
    params = theirs.init(jax.random.key(2), x)
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(3), p.shape), params)  # not 1s and 0s

    def loss(model):
        return jax.jit(jax.value_and_grad(lambda p, x: jnp.sum((model.apply(p, x) - target) ** 3), argnums=(0, 1)))

    (value, (dp, dx)), (ref_value, (ref_dp, ref_dx)) = loss(ours)(params, x), loss(theirs)(params, x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-5)
    for got, want in zip(jax.tree.leaves(dp), jax.tree.leaves(ref_dp)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
