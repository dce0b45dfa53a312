"""ONNX export of a pure JAX function through jax2onnx, and a check against ONNX Runtime.

    model = to_onnx_bytes(fn, {"x": ((32, 42), "float32")}, ["prediction", "sequence"])
    err = check_onnx(model, fn, {"x": x})        # max abs difference, ONNX Runtime (CPU) vs fn

`fn(*arrays)` takes the inputs in the order of the `inputs` mapping (each with a leading batch axis) and
returns a tuple of arrays in `output_names` order. The ONNX model has a symbolic batch axis ``"B"`` shared
by all inputs, inputs named as the mapping's keys and outputs named `output_names`.

Every model family of `trading_jax.models` exports (tcn, lstm, lstm_attention, cnn_lstm, cnn_lstm_hybrid,
the transformers, multitask, actor_critic; tests/test_export_onnx.py checks them against ONNX Runtime).
Two converter limitations are handled:

* jax2onnx (0.17) cannot lower a reverse ``lax.scan``. The LSTM recurrence's primal (inference) body is
  therefore written as flip -> forward scan -> flip (`trading_jax.models.recurrent.lstm_recurrence`).
  A function that still contains a reverse scan (or any other primitive jax2onnx cannot lower) raises a
  one-line `NotImplementedError` naming the model and the primitive.
* jax2onnx's ``remove_redundant_transpose_pairs`` pass folds ``Transpose(perm) -> Transpose(perm^-1)``
  even when the first Transpose's output is also a graph output, deleting the node that produced that
  output (ONNX Runtime then rejects the model: "Graph output (y_1) does not exist in the graph"). The
  stacked LSTM returns ``swapaxes(time_major_hs)`` as ``"sequence"`` and ``sequence[:, -1]`` is lowered as
  a transpose back then a gather, which hits exactly this. Every output is therefore passed through an
  identity (``lax.copy_p``, lowered to an ONNX ``Identity``): the transpose then has two consumers and is
  kept. After conversion, every graph output is checked to be produced by a node, an input or an
  initializer (a dangling output raises instead of writing a model ONNX Runtime cannot load).

Accuracy: ONNX Runtime agrees with `model.apply` to ~2e-6 (max abs) on every family's tiny preset at
T=16, F=8, and to < 1e-5 on the seed presets of the recurrent families at T=32, F=42. One exception is
float32 conditioning, not the export: the tiny ``cnn_lstm`` (8 conv channels) layer-normalises ReLU'd conv
outputs, and on wide random inputs some rows have 7 of 8 channels at 0 (variance ~1e-8, so LayerNorm
amplifies rounding by 1/sqrt(var + 1e-6) ~ 1000); there ONNX Runtime and XLA differ by up to ~1e-4, while
JAX float32 itself is ~5e-5 from a float64 evaluation. The seed preset (64 channels) agrees to ~3e-6.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np

__all__ = ["BATCH_AXIS", "OPSET", "INSTALL_HINT", "to_onnx_bytes", "check_onnx", "onnx_session"]

BATCH_AXIS = "B"
OPSET = 23  # jax2onnx's default
INSTALL_HINT = "ONNX export needs jax2onnx and onnxruntime: pip install 'trading-jax[export]'"


class _DropMessages(logging.Filter):
    """Drop log records whose message matches one of `patterns` (known-harmless converter noise)."""

    def __init__(self, *patterns: str):
        super().__init__()
        self._patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to drop
            return True
        return not any(p.search(message) for p in self._patterns)


# onnx_ir warns once per intermediate value whose type the converter left unset ("The value type for
# shape ... is not known ... Skipping serialization"): the shape annotation of an intermediate is skipped,
# the model is unaffected. Only these records are dropped; errors and other warnings still go through.
_NOISE = {"onnx_ir.serde": _DropMessages(r"value type for shape .* is not known")}


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    filters = [(logging.getLogger(name), f) for name, f in _NOISE.items()]
    for logger, f in filters:
        logger.addFilter(f)
    try:
        yield
    finally:
        for logger, f in filters:
            logger.removeFilter(f)


def _import_jax2onnx():
    try:
        from jax2onnx import to_onnx
    except ImportError as error:
        raise RuntimeError(INSTALL_HINT) from error
    return to_onnx


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise RuntimeError(INSTALL_HINT) from error
    return ort


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _specs(inputs: Mapping[str, tuple[Sequence[int], str]]) -> list[jax.ShapeDtypeStruct]:
    specs = []
    for name, spec in inputs.items():
        try:
            shape, dtype = spec
            shape = tuple(int(d) for d in shape)
            dtype = np.dtype(dtype)
        except (TypeError, ValueError) as error:
            raise ValueError(f"input {name!r}: expected (shape without batch axis, dtype), got {spec!r}") from error
        specs.append(jax.ShapeDtypeStruct((BATCH_AXIS,) + shape, dtype))
    return specs


def _identity(x):
    """`x` through an op jax2onnx lowers to ONNX Identity (`lax.copy_p`; `optimization_barrier` as fallback)."""
    copy_p = getattr(jax.lax, "copy_p", None)
    return copy_p.bind(x) if copy_p is not None else jax.lax.optimization_barrier(x)


def _with_identity_outputs(fn: Callable, n_outputs: int) -> Callable:
    """`fn` with every output passed through `lax.copy_p` (an ONNX Identity; see the module docstring)."""

    def wrapped(*arrays):
        outs = fn(*arrays)
        if not isinstance(outs, (tuple, list)):
            raise TypeError(f"fn must return a tuple of arrays (one per output name), got {type(outs).__name__}")
        if len(outs) != n_outputs:
            raise ValueError(f"fn returned {len(outs)} arrays for {n_outputs} output names")
        return tuple(_identity(jax.numpy.asarray(o)) for o in outs)

    return wrapped


def _dangling_outputs(model) -> list[str]:
    """Graph outputs that no node, graph input or initializer produces (ONNX Runtime refuses such a model)."""
    graph = model.graph
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    known |= {i.name for i in graph.sparse_initializer}
    for node in graph.node:
        known.update(node.output)
    return [o.name for o in graph.output if o.name not in known]


def to_onnx_bytes(fn: Callable, inputs: Mapping[str, tuple[Sequence[int], str]], output_names: Sequence[str], *,
                  model_name: str = "trading_jax", opset: int = OPSET) -> bytes:
    """Convert `fn` to a serialised ONNX model with a symbolic batch axis.

    Args:
        fn: `fn(*arrays) -> tuple of arrays` in `output_names` order; the arrays are `[B, *shape]` in the
            order of `inputs`. Pure JAX (parameters closed over become ONNX initializers/constants).
        inputs: `{input name: (shape without the batch axis, dtype string)}`, in call order.
        output_names: the ONNX output names, one per returned array.
        model_name: the ONNX graph's name, also named in error messages.
        opset: ONNX opset.

    Returns:
        The `ModelProto` serialised to bytes.

    Raises:
        RuntimeError: jax2onnx (or onnx) is not installed; or the converted graph is malformed.
        NotImplementedError: `fn` uses an operation jax2onnx cannot lower (one line naming the model and
            the operation), e.g. a reverse `lax.scan`.
    """
    to_onnx = _import_jax2onnx()
    output_names = [str(n) for n in output_names]
    if len(set(output_names)) != len(output_names):
        raise ValueError(f"output names must be unique: {output_names}")
    input_names = [str(n) for n in inputs]
    specs = _specs(inputs)
    wrapped = _with_identity_outputs(fn, len(output_names))
    try:
        with _quiet_converter():
            model = to_onnx(wrapped, specs, model_name=model_name, opset=opset, input_names=input_names,
                            output_names=output_names)
    except NotImplementedError as error:
        raise NotImplementedError(
            f"ONNX export of {model_name!r}: jax2onnx cannot lower an operation: {_one_line(error)}"
        ) from error
    dangling = _dangling_outputs(model)
    if dangling:
        raise RuntimeError(f"ONNX export of {model_name!r}: the converted graph does not produce output(s) "
                           f"{dangling} (a jax2onnx optimizer bug); refusing to write a broken model")
    names = [o.name for o in model.graph.output]
    if names != output_names:
        raise RuntimeError(f"ONNX export of {model_name!r}: graph outputs are {names}, expected {output_names}")
    return model.SerializeToString()


def onnx_session(model_bytes: bytes):
    """An onnxruntime `InferenceSession` on the CPU provider, its warnings silenced (errors still raise)."""
    ort = _import_ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors and fatal only: hides "Removing initializer ..." warnings
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _max_abs_diff(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise ValueError(f"ONNX output shape {got.shape} != JAX output shape {want.shape}")
    if got.size == 0:
        return 0.0
    if not (np.issubdtype(got.dtype, np.number) or got.dtype == bool):
        raise TypeError(f"cannot compare outputs of dtype {got.dtype}")
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    same_nan = np.isnan(got64) == np.isnan(want64)
    if not same_nan.all():
        return float("inf")
    compare = ~np.isnan(got64) & (got64 != want64)  # equal values (and equal infinities) agree
    if not compare.any():
        return 0.0
    return float(np.max(np.abs(got64[compare] - want64[compare])))


def check_onnx(model_bytes: bytes, fn: Callable, example_inputs: Mapping[str, Any]) -> float:
    """Run the ONNX model in ONNX Runtime (CPU) on `example_inputs` and compare with `fn`.

    Args:
        model_bytes: from `to_onnx_bytes`.
        fn: the function that was exported (`fn(*arrays) -> tuple`).
        example_inputs: `{input name: array}` in `fn`'s argument order (the names the model was exported
            with); any batch size.

    Returns:
        The max abs difference over all outputs (inf where one side is NaN and the other is not).
    """
    session = onnx_session(model_bytes)
    names = list(example_inputs)
    expected = {i.name for i in session.get_inputs()}
    if set(names) != expected:
        raise ValueError(f"example inputs {sorted(names)} != the model's inputs {sorted(expected)}")
    arrays = [np.asarray(example_inputs[n]) for n in names]
    got = session.run(None, dict(zip(names, arrays)))
    want = fn(*arrays)
    if not isinstance(want, (tuple, list)):
        raise TypeError(f"fn must return a tuple of arrays, got {type(want).__name__}")
    if len(want) != len(got):
        raise ValueError(f"fn returned {len(want)} arrays, the ONNX model {len(got)}")
    return max((_max_abs_diff(g, np.asarray(w)) for g, w in zip(got, want)), default=0.0)
