"""Transformer models: shapes, parameter counts, causality, attention, dropout, determinism, jit, learning."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trading_jax.models import available, create
from trading_jax.models.transformer import (
    DirectionTransformer,
    PricePredictionTransformer,
    sinusoidal_positional_encoding,
)

T, F = 8, 5
BATCH = T + 1  # the causality tests batch T + 1 copies of a window: one shape for every eager apply


def n_params(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def encoder_params(F, d, f, L, norm_first=False):
    """Projection + L x (attention 4(d^2+d), two LayerNorms 4d, FF 2df+f+d) [+ final LN 2d]."""
    return F * d + d + L * (4 * (d * d + d) + 4 * d + 2 * d * f + f + d) + (2 * d if norm_first else 0)


def price_params(F, d, f, L, H, norm_first=False):
    return encoder_params(F, d, f, L, norm_first) + H * (d * (d // 2) + d // 2 + 3 * (d // 2) + 3)


def direction_params(F, d, f, L, C=3, norm_first=False):
    return encoder_params(F, d, f, L, norm_first) + d * C + C


def param_count(model, features=F, length=T):
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, length, features))), jax.random.PRNGKey(0))
    return n_params(shapes["params"])


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.PRNGKey(1), (BATCH, T, F))


@pytest.fixture(scope="module")
def price(x):
    model = create("price_transformer", preset="tiny")
    return model, model.init(jax.random.PRNGKey(0), x)


@pytest.fixture(scope="module")
def direction(x):
    model = create("direction_transformer", preset="tiny", causal=True)
    return model, model.init(jax.random.PRNGKey(0), x)


# ----------------------------------------------------------------------------- registry and shapes


def test_both_models_are_registered_with_seed_and_tiny_presets():
    models = available()
    for name in ("price_transformer", "direction_transformer"):
        assert {"seed", "tiny"} <= set(models[name])
    assert isinstance(create("price_transformer"), PricePredictionTransformer)
    assert isinstance(create("direction_transformer", preset="seed", input_dim=128), DirectionTransformer)


def test_price_transformer_outputs_have_documented_shapes(price, x):
    model, params = price
    out = model.apply(params, x)
    assert out["horizons"].shape == (BATCH, 4, 3)
    assert out["prediction"].shape == (BATCH, 4)
    assert out["sequence"].shape == (BATCH, T, 16)
    np.testing.assert_array_equal(out["prediction"], out["horizons"][..., 0])
    assert "attention" not in out
    with_attention = create("price_transformer", preset="tiny", return_attention=True).apply(params, x)
    assert with_attention["attention"].shape == (BATCH, 2, 2, T, T)  # [batch, layers, heads, T, T]
    assert all(np.isfinite(np.asarray(v)).all() for v in out.values())


def test_direction_transformer_outputs_logits_probabilities_and_attention_of_every_layer(direction, x):
    model, params = direction
    out = model.apply(params, x)
    assert out["logits"].shape == (BATCH, 3)
    assert out["sequence"].shape == (BATCH, T, 16)
    assert out["attention"].shape == (BATCH, 2, 2, T, T)  # [batch, layers, heads, T, T]
    np.testing.assert_allclose(out["probabilities"], jax.nn.softmax(out["logits"]), rtol=1e-6)
    np.testing.assert_allclose(out["confidence"], out["probabilities"].max(-1), rtol=1e-6)


def test_sequences_longer_than_max_seq_length_and_unknown_pooling_are_rejected():
    with pytest.raises(ValueError, match="max_seq_length"):
        create("price_transformer", preset="tiny", max_seq_length=4).init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 2)))
    with pytest.raises(ValueError, match="pooling"):
        create("direction_transformer", preset="tiny", pooling="max").init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 2)))


def test_positional_encoding_is_the_vaswani_sinusoid():
    pe = np.asarray(sinusoidal_positional_encoding(50, 6))
    p, i = 7, 1
    np.testing.assert_allclose(pe[p, 2 * i], np.sin(p / 10000 ** (2 * i / 6)), rtol=1e-6)
    np.testing.assert_allclose(pe[p, 2 * i + 1], np.cos(p / 10000 ** (2 * i / 6)), rtol=1e-6)
    assert sinusoidal_positional_encoding(3, 5).shape == (3, 5)  # odd width


# ----------------------------------------------------------------------------- parameter counts


def test_tiny_price_transformer_has_the_hand_counted_number_of_parameters(price):
    # d=16, f=32, L=2, H=4, F=5: projection 5*16+16 = 96; per layer attention 4*(256+16) = 1088,
    # LayerNorms 64, FF 16*32+32+32*16+16 = 1072 -> 2224; heads 4*(16*8+8+8*3+3) = 652.
    assert param_count(price[0]) == 96 + 2 * 2224 + 652 == 5196
    assert price_params(F, 16, 32, 2, 4) == 5196
    pre_ln = create("price_transformer", preset="tiny", norm_first=True, horizons=(1, 5))
    assert param_count(pre_ln) == price_params(F, 16, 32, 2, 2, norm_first=True)


def test_tiny_direction_transformer_parameters_match_the_formula():
    for pooling in ("last", "mean"):
        model = create("direction_transformer", preset="tiny", pooling=pooling)
        assert param_count(model) == direction_params(F, 16, 32, 2) == 96 + 2 * 2224 + 16 * 3 + 3


def test_seed_presets_have_the_seed_parameter_counts():
    seed_price = create("price_transformer", preset="seed")
    assert param_count(seed_price, features=128) == price_params(128, 512, 2048, 6, 4) == 19_508_748
    seed_direction = create("direction_transformer", preset="seed")
    assert param_count(seed_direction, features=128) == direction_params(128, 512, 2048, 6) == 18_981_891


# ----------------------------------------------------------------------------- causality and attention


def _perturbed_after_each_step(x0):
    """Batch of T + 1 copies of x0 [T, F]: copy t < T has new inputs after step t; copy T is x0."""
    noise = jax.random.normal(jax.random.PRNGKey(7), (T + 1, T, F)) * 3.0
    after = jnp.arange(T)[None, :] > jnp.arange(T + 1)[:, None]  # [copy t, time s]: s > t
    return jnp.where(after[..., None], x0[None] + noise, x0[None])


@pytest.mark.parametrize("norm_first", [False, True])
def test_causal_sequence_at_t_ignores_inputs_after_t(x, norm_first):
    assert BATCH == T + 1
    model = create("price_transformer", preset="tiny", causal=True, norm_first=norm_first)
    params = model.init(jax.random.PRNGKey(0), x)
    seq = np.asarray(model.apply(params, _perturbed_after_each_step(x[0]))["sequence"])
    base = seq[T]
    for t in range(T):
        np.testing.assert_allclose(seq[t, : t + 1], base[: t + 1], atol=1e-5, err_msg=f"t={t}")
        if t < T - 1:
            assert not np.allclose(seq[t, t + 1 :], base[t + 1 :], atol=1e-3)
    # streaming: a prefix of the window gives the same hidden states as the full window
    prefix = jax.jit(model.apply)(params, x[:, :5])["sequence"]
    np.testing.assert_allclose(prefix, model.apply(params, x)["sequence"][:, :5], atol=1e-5)


def test_non_causal_sequence_at_early_steps_depends_on_later_inputs(price, x):
    model, params = price
    seq = np.asarray(model.apply(params, _perturbed_after_each_step(x[0]))["sequence"])
    assert not np.allclose(seq[0, 0], seq[T, 0], atol=1e-3)


def test_causal_attention_rows_sum_to_one_and_are_zero_above_the_diagonal(direction, x):
    model, params = direction
    att = np.asarray(model.apply(params, x)["attention"])
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    upper = np.triu(np.ones((T, T), bool), k=1)
    assert (att[..., upper] == 0.0).all()
    assert (att[..., ~upper] > 0.0).all()


def test_non_causal_attention_rows_sum_to_one_and_look_ahead(x):
    model = create("direction_transformer", preset="tiny", pooling="mean")
    params = model.init(jax.random.PRNGKey(0), x)
    att = np.asarray(model.apply(params, x)["attention"])
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    assert (att[..., np.triu(np.ones((T, T), bool), k=1)] > 0.0).all()


# ----------------------------------------------------------------------------- randomness and jit


def test_dropout_only_in_training_and_keyed_by_the_dropout_rng(x):
    # one layer and one head: fewer dropout sites to compile (threefry is slow to compile on CPU)
    model = create("price_transformer", preset="tiny", num_layers=1, horizons=(1,))
    params = model.init(jax.random.PRNGKey(0), x)
    eval1, eval2 = model.apply(params, x), model.apply(params, x)
    np.testing.assert_array_equal(eval1["horizons"], eval2["horizons"])
    train_apply = jax.jit(functools.partial(model.apply, train=True))
    train = lambda seed: train_apply(params, x, rngs={"dropout": jax.random.PRNGKey(seed)})
    a, b, a_again = train(1), train(2), train(1)
    assert not np.allclose(a["horizons"], b["horizons"])
    assert not np.allclose(a["horizons"], eval1["horizons"])
    np.testing.assert_array_equal(a["horizons"], a_again["horizons"])


def test_same_init_key_gives_identical_params_and_another_key_does_not(price, x):
    model, params = price
    again = model.init(jax.random.PRNGKey(0), x)
    jax.tree.map(np.testing.assert_array_equal, params, again)
    other = model.init(jax.random.PRNGKey(1), x)
    assert not np.allclose(other["params"]["encoder"]["input_projection"]["kernel"],
                           params["params"]["encoder"]["input_projection"]["kernel"])


def test_jitted_apply_is_traced_once_for_repeated_shapes(direction, x):
    model, params = direction
    traces = []

    @jax.jit
    def forward(params, x):
        traces.append(1)
        return model.apply(params, x)["logits"]

    first = forward(params, x)
    second = forward(params, x + 1.0)
    assert len(traces) == 1
    assert not np.allclose(first, second)
    np.testing.assert_allclose(first, model.apply(params, x)["logits"], atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_close_outputs(price, x):
    _, params32 = price
    model = create("price_transformer", preset="tiny", dtype="bfloat16")  # a name, as in a JSON config
    assert model.dtype == jnp.bfloat16
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    assert jax.tree.structure(shapes) == jax.tree.structure(params32)
    out = jax.jit(model.apply)(params32, x)
    assert out["sequence"].dtype == jnp.bfloat16
    assert out["prediction"].dtype == jnp.float32
    reference = price[0].apply(params32, x)["prediction"]
    np.testing.assert_allclose(out["prediction"], reference, atol=0.1)


# ----------------------------------------------------------------------------- learning


def _fit(model, x, loss_fn, steps=150, lr=3e-3):
    params = model.init(jax.random.PRNGKey(0), x[:BATCH])  # params do not depend on the batch size
    opt = optax.adam(lr)

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(lambda p: loss_fn(model.apply(p, x)))(params)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    _, losses = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None, length=steps))(params)
    return np.asarray(losses)


def test_tiny_price_transformer_overfits_a_small_batch():
    xs = jax.random.normal(jax.random.PRNGKey(3), (16, T, F))
    ys = jax.random.normal(jax.random.PRNGKey(4), (16, 4, 3))
    model = create("price_transformer", preset="tiny", dropout=0.0, num_layers=1)
    losses = _fit(model, xs, lambda out: jnp.mean((out["horizons"] - ys) ** 2), lr=1e-2)
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])


def test_tiny_direction_transformer_overfits_a_small_batch():
    xs = jax.random.normal(jax.random.PRNGKey(5), (16, T, F))
    labels = jax.random.randint(jax.random.PRNGKey(6), (16,), 0, 3)
    model = create("direction_transformer", preset="tiny", dropout=0.0, num_layers=1, causal=True)
    loss = lambda out: optax.softmax_cross_entropy_with_integer_labels(out["logits"], labels).mean()
    losses = _fit(model, xs, loss)
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])
