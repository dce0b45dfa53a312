"""ONNX export (jax2onnx -> ONNX Runtime) of every model family, and the converter workarounds of
`trading_jax.export.onnx` (identity outputs, one-line NotImplementedError, quiet logs).

Each family is exported once (tiny preset, T=16, F=8) with a symbolic batch axis and checked against
`model.apply` at batch 1 and 37 to 1e-5 (max abs error)."""

from __future__ import annotations

import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("jax2onnx")
pytest.importorskip("onnxruntime")

from trading_jax.export.onnx import INSTALL_HINT, check_onnx, onnx_session, to_onnx_bytes  # noqa: E402
from trading_jax.models import create  # noqa: E402
from trading_jax.models.recurrent import _lstm_recurrence_fwd, _recurrence_scan, lstm_recurrence  # noqa: E402

TIME, FEATURES = 16, 8
BATCHES = (1, 37)
ATOL = 1e-5
SEQUENCE_MODELS = ("tcn", "lstm", "lstm_attention", "cnn_lstm", "cnn_lstm_hybrid", "price_transformer",
                   "direction_transformer", "multitask")


def data(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def example_input(seed: int, shape: tuple, dtype: str) -> np.ndarray:
    """Standard normal floats (the scale of normalised features); small integers for integer inputs."""
    x = data(seed, *shape)
    return x.astype(dtype) if np.issubdtype(np.dtype(dtype), np.floating) else np.round(3 * x).astype(dtype)


def init(model, *example, **kwargs):
    """Params from a jitted init with an "rbg" key (much faster to compile on CPU than eager threefry)."""
    return jax.jit(lambda k, *a: model.init(k, *a, **kwargs))(jax.random.key(0, impl="rbg"), *example)["params"]


def rowwise_reference(fn, batch: int):
    """`fn` jitted once at `batch` rows: smaller batches are zero-padded to it and the outputs cut back.

    The models act on each row independently at inference, so row i of the output is `model.apply` of row
    i; one compilation instead of one per tested batch size keeps the file fast.
    """
    jitted = jax.jit(fn)

    def run(*arrays):
        n = arrays[0].shape[0]
        padded = [np.concatenate([a, np.zeros((batch - n, *a.shape[1:]), a.dtype)]) for a in arrays]
        shapes = jax.eval_shape(fn, *(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays))
        # Cut the batch axis back; outputs without one (e.g. multitask's "log_vars") are kept whole.
        return tuple(np.asarray(o)[: s.shape[0]] if o.shape != s.shape else np.asarray(o)
                     for o, s in zip(jitted(*padded), shapes))

    return run


def export_and_check(name: str, apply, inputs: dict, seed: int = 1):
    """Export `apply(*arrays) -> dict`, check the ONNX model at each batch size; return (model, errors)."""
    example = [jax.ShapeDtypeStruct((1, *shape), np.dtype(dtype)) for shape, dtype in inputs.values()]
    out_names = sorted(jax.eval_shape(apply, *example))
    fn = lambda *a: tuple(apply(*a)[k] for k in out_names)  # noqa: E731
    model = to_onnx_bytes(fn, inputs, out_names, model_name=name)
    session = onnx_session(model)
    assert [i.name for i in session.get_inputs()] == list(inputs)
    assert [o.name for o in session.get_outputs()] == out_names
    for i in session.get_inputs():
        assert i.shape[0] == "B", i.shape  # the symbolic batch axis
    reference = rowwise_reference(fn, max(BATCHES))
    errors = {}
    for batch in BATCHES:
        arrays = {n: example_input(seed + batch + k, (batch, *shape), dtype)
                  for k, (n, (shape, dtype)) in enumerate(inputs.items())}
        errors[batch] = check_onnx(model, reference, arrays)
        got = session.run(None, arrays)
        want = jax.eval_shape(fn, *(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays.values()))
        assert [g.shape for g in got] == [w.shape for w in want]
    return model, errors


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_every_sequence_model_family_matches_onnx_runtime_at_batch_1_and_37(name):
    model = create(name, preset="tiny")
    params = init(model, jnp.zeros((1, TIME, FEATURES)), train=False)
    apply = lambda x: model.apply({"params": params}, x, train=False)  # noqa: E731
    _, errors = export_and_check(name, apply, {"x": ((TIME, FEATURES), "float32")})
    assert max(errors.values()) <= ATOL, errors


def test_several_named_inputs_of_different_dtypes_share_the_batch_axis():
    def apply(x, steps):
        return {"scaled": x * steps[:, :, None].astype(x.dtype), "total": jnp.sum(steps, axis=1)}

    _, errors = export_and_check("two_inputs", apply, {"x": ((4, 3), "float32"), "steps": ((4,), "int32")})
    assert max(errors.values()) == 0.0, errors


@pytest.mark.parametrize("discrete", [True, False])
def test_actor_critic_policy_network_matches_onnx_runtime(discrete):
    obs = 11
    model = create("actor_critic", preset="tiny", action_dim=3, discrete=discrete)
    params = init(model, jnp.zeros((1, obs)))
    apply = lambda o: model.apply({"params": params}, o)  # noqa: E731
    _, errors = export_and_check("actor_critic", apply, {"obs": ((obs,), "float32")})
    assert max(errors.values()) <= ATOL, errors


def test_cnn_lstm_disagreement_at_larger_width_is_float32_conditioning_not_an_export_error():
    """At F=42 the tiny cnn_lstm can disagree by ~1e-4: its LayerNorm over 8 ReLU'd conv channels meets
    rows where 7 of 8 channels are 0 (variance ~1e-8, amplification 1/sqrt(var + 1e-6) ~ 1000), so any two
    float32 implementations differ there. JAX float32 is itself that far from float64: ONNX Runtime stays
    within a few times JAX's own float32 error against a float64 evaluation of the same model."""
    time, features = 32, 42
    model = create("cnn_lstm", preset="tiny")
    params = init(model, jnp.zeros((1, time, features)), train=False)
    apply = lambda p, x: model.apply({"params": p}, x, train=False)["sequence"]  # noqa: E731
    fn = jax.jit(lambda x: (apply(params, x),))
    onnx = to_onnx_bytes(fn, {"x": ((time, features), "float32")}, ["sequence"], model_name="cnn_lstm")
    x = data(4, 37, time, features)
    got = onnx_session(onnx).run(None, {"x": x})[0].astype(np.float64)
    want32 = np.asarray(fn(x)[0], np.float64)
    jax.config.update("jax_enable_x64", True)
    try:
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        exact = np.asarray(jax.jit(apply)(p64, jnp.asarray(x, jnp.float64)))
    finally:
        jax.config.update("jax_enable_x64", False)
    onnx_err, jax_err = np.abs(got - exact).max(), np.abs(want32 - exact).max()
    assert np.abs(got - want32).max() <= 1e-5 + 10 * jax_err
    assert onnx_err <= 1e-5 + 10 * jax_err, (onnx_err, jax_err)


def test_reverse_recurrence_primal_is_bit_identical_to_the_reverse_scan_and_the_training_forward():
    """`lstm_recurrence(reverse=True)` runs flip -> forward scan -> flip when not differentiated (exportable);
    its outputs equal the reverse `lax.scan` and the custom-VJP forward bit for bit."""
    rng = np.random.default_rng(0)
    t, b, h = 12, 5, 8
    w_h = jnp.asarray(rng.standard_normal((h, 4 * h)) / np.sqrt(h), jnp.float32)
    projected = jnp.asarray(rng.standard_normal((t, b, 4 * h)), jnp.float32)
    h0 = jnp.asarray(rng.standard_normal((b, h)), jnp.float32)
    c0 = jnp.asarray(rng.standard_normal((b, h)), jnp.float32)
    primal = jax.jit(lambda *a: lstm_recurrence(*a, True))(w_h, projected, h0, c0)
    (hc, hs) = jax.jit(lambda *a: _recurrence_scan(*a, True, residuals=False))(w_h, projected, h0, c0)
    train_fwd = jax.jit(lambda *a: _lstm_recurrence_fwd(*a, True)[0])(w_h, projected, h0, c0)
    for ref in ((hs, hc), train_fwd):
        for a, r in zip(jax.tree.leaves(primal), jax.tree.leaves(ref)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(r))


def test_a_transpose_output_that_feeds_its_inverse_transpose_survives_export():
    """jax2onnx 0.17 folds Transpose -> inverse Transpose and deletes the first one even when its output is a
    graph output (the "lstm" model's "sequence": "Graph output (y_1) does not exist"); the identity on every
    output keeps it."""

    def fn(x):
        y = jnp.swapaxes(x * 2.0, 0, 1)
        return y, jnp.swapaxes(y, 0, 1) + 1.0, x  # also: an input passed straight through

    model = to_onnx_bytes(fn, {"x": ((5, 3), "float32")}, ["time_major", "shifted", "same"])
    assert check_onnx(model, fn, {"x": data(0, 4, 5, 3)}) == 0.0


def test_a_reverse_scan_raises_one_line_not_implemented_error_naming_model_and_op():
    def fn(x):
        _, ys = jax.lax.scan(lambda c, v: (c + v, c + v), jnp.zeros_like(x[:, 0]), jnp.swapaxes(x, 0, 1),
                             reverse=True)
        return (ys,)

    with pytest.raises(NotImplementedError) as info:
        to_onnx_bytes(fn, {"x": ((4, 2), "float32")}, ["y"], model_name="my_bilstm")
    message = str(info.value)
    assert "\n" not in message and "my_bilstm" in message and "Reverse scan" in message


def test_missing_jax2onnx_raises_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # `import jax2onnx` now raises ImportError
    with pytest.raises(RuntimeError, match=r"pip install 'trading-jax\[export\]'") as info:
        to_onnx_bytes(lambda x: (x,), {"x": ((2,), "float32")}, ["y"])
    assert str(info.value) == INSTALL_HINT


def test_check_onnx_reports_nan_disagreement_as_inf_and_rejects_wrong_input_names():
    model = to_onnx_bytes(lambda x: (jnp.log(x),), {"x": ((3,), "float32")}, ["y"])
    x = np.array([[1.0, -1.0, 0.0]], np.float32)  # log: 0, nan, -inf on both sides
    assert check_onnx(model, lambda x: (jnp.log(x),), {"x": x}) == 0.0
    assert check_onnx(model, lambda x: (jnp.zeros_like(x),), {"x": x}) == float("inf")
    with pytest.raises(ValueError, match="inputs"):
        check_onnx(model, lambda x: (x,), {"obs": x})


def test_export_and_session_do_not_log_converter_noise(caplog, capfd):
    model_def = create("lstm", preset="tiny")
    params = init(model_def, jnp.zeros((1, TIME, FEATURES)), train=False)
    fn = lambda x: (model_def.apply({"params": params}, x, train=False)["sequence"],)  # noqa: E731
    with caplog.at_level(logging.WARNING):
        model = to_onnx_bytes(fn, {"x": ((TIME, FEATURES), "float32")}, ["sequence"])
        onnx_session(model)
    assert not [r for r in caplog.records if "is not known" in r.getMessage()]
    assert "Removing initializer" not in capfd.readouterr().err
