"""Recurrent models: the scan LSTM against a plain loop, BiLSTM, attention pooling, and the registered
"lstm", "lstm_attention", "cnn_lstm" and "cnn_lstm_hybrid" models (tiny presets; each model compiles once
for init, once per train flag and once for its 150-step training loop)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trading_jax.models import available, create
from trading_jax.models.recurrent import (
    LSTM,
    AdditiveAttentionPooling,
    BiLSTM,
    StackedLSTM,
    lstm_cell_step,
    lstm_param_count,
    lstm_recurrence,
)

BATCH, TIME, FEATURES, N_INDICATORS = 16, 12, 4, 3
NAMES = ("lstm", "lstm_attention", "cnn_lstm", "cnn_lstm_hybrid")


def n_params(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def normal(seed: int, *shape: int) -> jax.Array:
    """Test data from NumPy (eager `jax.random` would compile a threefry kernel per shape)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def key(seed: int) -> jax.Array:
    """Model keys for the registered-model tests: the "rbg" implementation (XLA's RngBitGenerator) compiles
    several times faster than threefry on CPU; the models take any key implementation."""
    return jax.random.key(seed, impl="rbg")


def inputs(seed: int = 0):
    return normal(seed, BATCH, TIME, FEATURES), normal(seed + 100, BATCH, N_INDICATORS)


def call_args(name, x, ind):
    return (x, ind) if name == "cnn_lstm" else (x,)


def fast_jit(fn, *args):
    """`jax.jit(fn)` compiled for `args` with XLA's backend optimisation level 0 (per executable, no global
    flag): about half the CPU compile time of the default, same float32 results within test tolerances."""
    return jax.jit(fn).lower(*args).compile({"xla_backend_optimization_level": 0})


class Tiny:
    """One tiny model, its params, and one compiled apply per train flag (dropout key as an argument)."""

    def __init__(self, name: str):
        self.name = name
        self.model = create(name, preset="tiny")
        self.x, self.ind = inputs()
        self.args = call_args(name, self.x, self.ind)
        self.init = fast_jit(self.model.init, key(0), *self.args)  # one compilation, reused for every key
        self.params = self.init_params(0)
        self._apply = {}

    def init_params(self, seed: int):
        return self.init(key(seed), *self.args)["params"]

    def __call__(self, x=None, ind=None, *, params=None, train=False, seed=0):
        args = call_args(self.name, self.x if x is None else x, self.ind if ind is None else ind)
        params = self.params if params is None else params
        if train not in self._apply:
            apply = lambda p, args, k: self.model.apply({"params": p}, *args, train=train, rngs={"dropout": k})  # noqa: E731
            self._apply[train] = fast_jit(apply, params, args, key(seed))
        return self._apply[train](params, args, key(seed))


@pytest.fixture(scope="module")
def tiny():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = Tiny(name)
        return cache[name]

    return get


# ---------------------------------------------------------------------------------------------- LSTM layer


def lstm_reference(params, x):
    """Step-by-step NumPy (float64) LSTM: gates i, f, g, o; c = f*c + i*g; h = o*tanh(c)."""
    w_x, w_h, b = (np.asarray(params[k], np.float64) for k in ("input_kernel", "recurrent_kernel", "bias"))
    x = np.asarray(x, np.float64)
    hidden = w_h.shape[0]
    h = np.zeros((x.shape[0], hidden))
    c = np.zeros_like(h)
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    outs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ w_x + h @ w_h + b
        i, f, g, o = (z[:, k * hidden : (k + 1) * hidden] for k in range(4))
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outs.append(h)
    return np.stack(outs, axis=1), (h, c)


def random_params(module, *args, seed=0, scale=0.5):
    """Random normal params shaped like `module.init(key, *args)` (shapes from `eval_shape`: no init compile)."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)["params"]
    leaves, treedef = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [jnp.asarray(scale * rng.standard_normal(l.shape), jnp.float32) for l in leaves])


def test_lstm_layer_has_4_times_in_h_plus_h_h_plus_h_parameters_and_forget_bias_one():
    x = jnp.ones((2, 5, 3))
    params = jax.jit(LSTM(7).init)(jax.random.key(0), x)["params"]
    assert params["input_kernel"].shape == (3, 28)
    assert params["recurrent_kernel"].shape == (7, 28)
    assert params["bias"].shape == (28,)
    assert n_params(params) == 4 * (3 * 7 + 7 * 7 + 7) == lstm_param_count(3, 7) == 308
    np.testing.assert_array_equal(params["bias"][7:14], 1.0)
    np.testing.assert_array_equal(params["bias"][:7], 0.0)
    np.testing.assert_array_equal(params["bias"][14:], 0.0)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))


def test_scan_lstm_equals_a_step_by_step_python_loop_on_random_params():
    x = normal(1, 3, 9, 4)
    layer = LSTM(6)
    params = random_params(layer, x, seed=2)
    ys, (h, c) = jax.jit(lambda p, x: layer.apply({"params": p}, x, return_carry=True))(params, x)
    ref, (ref_h, ref_c) = lstm_reference(params, x)
    np.testing.assert_allclose(ys, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, ref_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, ref_c, rtol=1e-5, atol=1e-6)


def primitive_names(jaxpr):
    """Every primitive in a jaxpr, recursing into sub-jaxprs (pjit, custom_jvp, scan bodies)."""
    for eqn in jaxpr.eqns:
        yield eqn.primitive.name
        for value in eqn.params.values():
            for inner in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    yield from primitive_names(inner)


def test_lstm_recurrence_is_a_plain_lax_scan_in_the_jaxpr():
    x = jnp.ones((2, 5, 3))
    layer = LSTM(4)
    params = random_params(layer, x)
    jaxpr = jax.make_jaxpr(lambda p, x: layer.apply({"params": p}, x))(params, x)
    names = set(primitive_names(jaxpr.jaxpr))
    assert "scan" in names
    assert not any("while" == n for n in names)  # one scan over time, no other loop construct


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_recurrence_custom_vjp_matches_autodiff_of_the_reference_cell(reverse):
    """`lstm_recurrence`'s hand-written backward pass against `jax.grad` through a scan of `lstm_cell_step`,
    with an initial carry and a loss on the outputs and on both final-carry components."""
    time_, batch, hidden = 7, 3, 5
    w_h, projected = 0.5 * normal(20, hidden, 4 * hidden), normal(21, time_, batch, 4 * hidden)
    h0, c0, target = 0.5 * normal(22, batch, hidden), 0.5 * normal(23, batch, hidden), normal(24, time_, batch, hidden)

    def reference(w_h, projected, h0, c0):
        (h, c), hs = jax.lax.scan(lambda carry, p: lstm_cell_step(w_h, carry, p), (h0, c0), projected, reverse=reverse)
        return hs, (h, c)

    def loss(recurrence):
        def fn(*args):
            hs, (h, c) = recurrence(*args)
            return jnp.sum((hs - target) ** 2) + jnp.sum(h**3) + jnp.sum(0.7 * c * c)

        return jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 3)))

    args = (w_h, projected, h0, c0)
    ref_value, ref_grads = loss(reference)(*args)
    value, grads = loss(lambda *a: lstm_recurrence(*a, reverse))(*args)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_bilstm_backward_half_equals_the_forward_lstm_on_time_reversed_input_then_reversed():
    x = normal(3, 2, 7, 3)
    params = random_params(BiLSTM(5), x, seed=3)
    both = jax.jit(lambda p, x: BiLSTM(5).apply({"params": p}, x))(params, x)
    assert both.shape == (2, 7, 10)
    forward = jax.jit(lambda p, x: LSTM(5).apply({"params": p}, x))
    backward_via_forward = forward(params["backward"], x[:, ::-1])[:, ::-1]
    np.testing.assert_allclose(both[..., :5], forward(params["forward"], x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both[..., 5:], backward_via_forward, rtol=1e-5, atol=1e-6)


def test_stacked_lstm_residual_layers_and_dropout_between_layers_only_in_training():
    x = normal(4, 2, 6, 3)
    stack = StackedLSTM(4, num_layers=3, dropout=0.5, residual=True)
    params = random_params(stack, x)
    assert set(params) == {"layer_0", "layer_1", "layer_2"}
    apply = jax.jit(lambda p, k, train: stack.apply({"params": p}, x, train=train, rngs={"dropout": k}),
                    static_argnums=2)
    np.testing.assert_array_equal(apply(params, key(1), False), apply(params, key(2), False))
    assert not np.allclose(apply(params, key(1), True), apply(params, key(2), True))


def test_additive_attention_weights_sum_to_one_and_ignore_masked_steps():
    h = normal(5, 3, 8, 6)
    mask = jnp.arange(8)[None, :] < jnp.array([[8], [5], [1]])
    pool = AdditiveAttentionPooling(4)
    params = random_params(pool, h)
    context, weights = jax.jit(lambda p, h, m: pool.apply({"params": p}, h, m))(params, h, mask)
    assert context.shape == (3, 6) and weights.shape == (3, 8)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(weights)[~np.asarray(mask)], 0.0)
    np.testing.assert_allclose(context, jnp.einsum("bt,btd->bd", weights, h), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context[2], h[2, 0], rtol=1e-6)  # one visible step: its own state


def test_bf16_compute_keeps_float32_params_and_outputs():
    x = jnp.ones((2, 4, 3))
    model = create("lstm", preset="tiny", dtype=jnp.bfloat16)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    out = jax.eval_shape(model.apply, variables, x)
    assert out["sequence"].dtype == jnp.bfloat16
    assert out["prediction"].dtype == jnp.float32


# ------------------------------------------------------------------------------------- registered models


def test_every_model_is_registered_with_seed_and_tiny_presets():
    models = available()
    for name in NAMES:
        assert {"seed", "tiny"} <= set(models[name])


def lstm_stack_count(in_features, hidden, layers, directions):
    total, width = 0, in_features
    for _ in range(layers):
        total += directions * lstm_param_count(width, hidden)
        width = directions * hidden
    return total


def test_lstm_output_shapes_and_hand_counted_parameters(tiny):
    m = tiny("lstm")  # hidden 16, 2 layers
    out = m()
    assert out["prediction"].shape == (BATCH, 1)
    assert out["sequence"].shape == (BATCH, TIME, 16)
    assert n_params(m.params) == lstm_stack_count(FEATURES, 16, 2, 1) + 16 + 1
    assert n_params(m.params) == 4 * (4 * 16 + 256 + 16) + 4 * (16 * 16 + 256 + 16) + 17


def test_lstm_attention_output_shapes_and_hand_counted_parameters(tiny):
    m = tiny("lstm_attention")  # hidden 8, 2 bidirectional layers, attention size = 16
    out = m()
    assert out["prediction"].shape == (BATCH, 1)
    assert out["sequence"].shape == (BATCH, TIME, 16)
    assert out["attention"].shape == (BATCH, TIME)
    lstm = 2 * 4 * (4 * 8 + 64 + 8) + 2 * 4 * (16 * 8 + 64 + 8)
    attention = (16 * 16 + 16) + 16
    assert n_params(m.params["lstm"]) == lstm == lstm_stack_count(FEATURES, 8, 2, 2)
    assert n_params(m.params) == lstm + attention + 16 + 1


def test_cnn_lstm_output_shapes_and_lstm_parameters(tiny):
    m = tiny("cnn_lstm")  # conv 8, hidden 16, 1 layer, 2 heads, 3 indicators -> 8
    out = m()
    assert out["prediction"].shape == (BATCH, 1)
    assert out["sequence"].shape == (BATCH, TIME, 16)
    assert out["attention"].shape == (BATCH, TIME)
    assert out["features"].shape == (BATCH, 16 + 8)
    assert n_params(m.params["lstm"]) == 4 * (8 * 16 + 16 * 16 + 16)
    assert m.params["technical"]["kernel"].shape == (N_INDICATORS, 8)
    assert m.params["conv"]["kernel"].shape == (3, FEATURES, 8)


def test_cnn_lstm_hybrid_output_shapes_and_lstm_parameters(tiny):
    m = tiny("cnn_lstm_hybrid")  # 4 filters x kernels 3/5/7/11, BiLSTM 8 x 2 layers, 2 heads
    out = m()
    assert out["logits"].shape == (BATCH, 3)
    assert out["prediction"].shape == (BATCH, 1)
    assert out["sequence"].shape == (BATCH, TIME, 16)
    assert out["attention"].shape == (BATCH, TIME)
    assert out["attention_heads"].shape == (BATCH, 2, TIME)
    assert {f"conv_{k}" for k in (3, 5, 7, 11)} <= set(m.params)
    assert n_params(m.params["lstm"]) == lstm_stack_count(16, 8, 2, 2)


@pytest.mark.parametrize("name", ["lstm_attention", "cnn_lstm", "cnn_lstm_hybrid"])
def test_attention_weights_over_time_sum_to_one(tiny, name):
    weights = tiny(name)()["attention"]
    assert bool(jnp.all(weights >= 0))
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["lstm", "cnn_lstm"])
def test_causal_models_sequence_at_t_ignores_bars_after_t(tiny, name):
    m = tiny(name)
    t = 6
    x_future = m.x.at[:, t + 1 :].set(normal(7, BATCH, TIME - t - 1, FEATURES) * 5)
    base, changed = m()["sequence"], m(x_future)["sequence"]
    np.testing.assert_allclose(changed[:, : t + 1], base[:, : t + 1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(changed[:, t + 1 :], base[:, t + 1 :])


def test_bidirectional_model_sequence_does_see_later_bars(tiny):
    m = tiny("lstm_attention")
    x_future = m.x.at[:, -1].add(3.0)
    assert not np.allclose(m()["sequence"][:, 0], m(x_future)["sequence"][:, 0])


@pytest.mark.parametrize("name", NAMES)
def test_eval_is_deterministic_and_dropout_keys_matter_in_training(tiny, name):
    m = tiny(name)
    a, b = m(seed=1), m(seed=2)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    t1, t1_again, t2 = m(train=True, seed=1), m(train=True, seed=1), m(train=True, seed=2)
    np.testing.assert_array_equal(t1["prediction"], t1_again["prediction"])
    assert not np.allclose(t1["prediction"], t2["prediction"])


@pytest.mark.parametrize("name", NAMES)
def test_same_init_key_gives_identical_params(tiny, name):
    m = tiny(name)
    again, other = m.init_params(0), m.init_params(1)
    jax.tree.map(np.testing.assert_array_equal, m.params, again)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(m.params), jax.tree.leaves(other)))


def test_cnn_lstm_indicators_feed_the_prediction_and_are_checked(tiny):
    m = tiny("cnn_lstm")
    with_ind = m()["prediction"]
    zero_ind = m(ind=jnp.zeros_like(m.ind))["prediction"]
    assert not np.allclose(with_ind, zero_ind)
    # None: the first n_indicators feature columns at the decision bar (never zeros)
    missing = fast_jit(lambda p, x: m.model.apply({"params": p}, x), m.params, m.x)(m.params, m.x)
    first = m(ind=m.x[:, -1, :N_INDICATORS])["prediction"]
    np.testing.assert_allclose(missing["prediction"], first, rtol=1e-5, atol=1e-6)
    assert not np.allclose(missing["prediction"], zero_ind)
    with pytest.raises(ValueError, match="n_indicators"):
        jax.eval_shape(m.model.apply, {"params": m.params}, m.x, jnp.zeros((BATCH, N_INDICATORS + 1)))


@pytest.mark.parametrize("name", NAMES)
def test_tiny_model_overfits_sixteen_samples(tiny, name):
    m = tiny(name)
    y = normal(11, BATCH, 1)
    cls = jnp.asarray(np.random.default_rng(12).integers(0, 3, BATCH))
    args = call_args(name, m.x, m.ind)
    optimizer = optax.adam(2e-2)

    def loss_fn(params):
        out = m.model.apply({"params": params}, *args)
        loss = jnp.mean((out["prediction"] - y) ** 2)
        if "logits" in out:
            loss = loss + optax.softmax_cross_entropy_with_integer_labels(out["logits"], cls).mean()
        return loss

    def fit(params):
        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        _, losses = jax.lax.scan(step, (params, optimizer.init(params)), None, length=150)
        return losses

    losses = np.asarray(fast_jit(fit, m.params)(m.params))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


def test_lstm_attention_exports_with_a_symbolic_batch_and_matches_apply(tiny):
    m = tiny("lstm_attention")
    (batch,) = jax.export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((batch, TIME, FEATURES), jnp.float32)
    exported = jax.export.export(jax.jit(lambda p, x: m.model.apply({"params": p}, x)["prediction"]))(m.params, spec)
    assert "stablehlo.while" in exported.mlir_module()  # the lax.scan recurrence, no unrolled time loop
    np.testing.assert_allclose(exported.call(m.params, m.x[:5]), m()["prediction"][:5], rtol=1e-5, atol=1e-6)
