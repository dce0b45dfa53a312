"""Write an export folder (see `trading_jax.export.runtime` for its layout) from a pure apply function.

`write_export(out, name=..., kind=..., apply=f, params=p, inputs=...)` where `f(params, *inputs)` returns
a dict of `[B, ...]` arrays:

1. the params are flattened ("a/b/kernel") and stored at the chosen precision (`PRECISIONS`):
   "float32"; "bfloat16" (matmul and convolution kernels stored as bf16); "int8" (the same kernels as int8
   with one float32 scale per output channel, the last axis: `w ~ q * scale`, `scale = max|w| / 127`, the
   max over every other axis, members of an ensemble included); biases and norms stay float32. Compute stays float32 (weight-only quantisation);
2. `served(*stored, *inputs)` decodes the stored weights and applies `f`; it is exported with
   `jax.export` for `platforms` with a symbolic batch axis, serialised to `model.stablehlo`;
3. an ONNX model (jax2onnx, float32 weights as constants) when `onnx=True`;
4. both artifacts are loaded back and compared with the jitted `f` on the `reference` inputs: the max abs
   errors go in the manifest's "checks"; an artifact that disagrees by more than `tolerance` is refused (the
   StableHLO raises, the ONNX model is left out with the reason): never a silently wrong export. (Other
   batch sizes are the tests' business: tests/test_export.py checks batch 1 and 37 in a fresh process.)
5. for a quantised precision, the change of every output against float32 on the reference inputs
   (max abs difference, and the argmax agreement of logits) goes in "checks.precision".
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.export.runtime import FORMAT, FORMAT_VERSION, MANIFEST, ONNX, STABLEHLO, WEIGHTS, ExportError
from trading_jax.logging import get_logger

__all__ = ["PRECISIONS", "write_export", "flatten_params", "encode_weights", "decode_weights", "git_commit"]

log = get_logger(__name__)
PRECISIONS = ("float32", "bfloat16", "int8")
SEP = "/"


def flatten_params(params) -> dict[str, np.ndarray]:
    """`{"a/b/kernel": array}` of a nested dict of arrays (the Flax params layout)."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, Mapping):
            for key in sorted(node):
                walk(node[key], f"{prefix}{SEP}{key}" if prefix else str(key))
        elif isinstance(node, (list, tuple)):
            for i, item in enumerate(node):
                walk(item, f"{prefix}{SEP}{i}" if prefix else str(i))
        else:
            out[prefix] = np.asarray(node)

    walk(params, "")
    return out


QUANTISED_NAMES = ("kernel", "embedding")


def _quantised(name: str, array: np.ndarray) -> bool:
    """Matmul and convolution weights (Flax's "kernel" and "embedding" leaves) are quantised; biases, norms,
    normaliser moments stay float32."""
    return name.rsplit(SEP, 1)[-1] in QUANTISED_NAMES and array.ndim >= 2 and np.issubdtype(array.dtype, np.floating)


def encode_weights(flat: Mapping[str, np.ndarray], precision: str) -> tuple[dict[str, np.ndarray], list]:
    """The stored arrays and the layout `[(param name, codec)]` (codec "f32", "bf16" or "int8")."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    stored, layout = {}, []
    for name, array in flat.items():
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32)
        if precision == "bfloat16" and _quantised(name, array):
            stored[name] = np.asarray(jnp.asarray(array, jnp.bfloat16))
            layout.append((name, "bf16"))
        elif precision == "int8" and _quantised(name, array):
            axes = tuple(range(array.ndim - 1))
            scale = np.max(np.abs(array), axis=axes, keepdims=True) / 127.0
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            stored[name] = np.clip(np.round(array / scale), -127, 127).astype(np.int8)
            stored[name + "::scale"] = scale
            layout.append((name, "int8"))
        else:
            stored[name] = array
            layout.append((name, "f32"))
    return stored, layout


def _order(layout) -> list[str]:
    return [k for name, codec in layout for k in ((name, name + "::scale") if codec == "int8" else (name,))]


def decode_weights(stored: Sequence, layout) -> dict:
    """The nested float32 params from the stored arrays in `_order(layout)` order (traceable)."""
    arrays, it = {}, iter(stored)
    for name, codec in layout:
        value = next(it)
        if codec == "int8":
            value = value.astype(jnp.float32) * next(it)
        elif codec == "bf16":
            value = value.astype(jnp.float32)
        arrays[name] = value
    nested: dict = {}
    for name, value in arrays.items():
        node = nested
        *parents, leaf = name.split(SEP)
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def git_commit() -> str | None:
    """The commit of the source checkout this package runs from (None outside a git checkout)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _spec(name, shape, dtype="float32") -> dict:
    return {"name": name, "shape": [None] + [int(s) for s in shape], "dtype": str(np.dtype(dtype))}


def _max_abs(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    return float(np.max(diff)) if diff.size else 0.0


def write_export(out_dir: str | Path, *, name: str, kind: str, apply: Callable, params, inputs: Mapping[str, tuple],
                 reference: Sequence[np.ndarray], model_json: Mapping[str, Any], metadata: Mapping[str, Any],
                 features: Mapping[str, Any] | None = None, precision: str = "float32", onnx: bool = True,
                 platforms: Sequence[str] = ("cpu", "cuda"), tolerance: float = 1e-5, overwrite: bool = False,
                 input_docs: Mapping[str, str] | None = None, input_ranges: Mapping[str, Sequence] | None = None) -> dict:
    """Write the export folder `out_dir` (module docstring) and return its manifest.

    Args:
        out_dir: the folder to write (refused if it holds files and not `overwrite`).
        name, kind: the export's name and kind ("predictor", "ensemble", "policy", "pipeline").
        apply: `apply(params, *inputs) -> {output name: [B, ...] array}`, pure JAX.
        params: the float32 params pytree (nested dicts).
        inputs: `{input name: (shape without batch, dtype)}` in call order.
        reference: one `[N, ...]` array per input (N >= 1) the artifacts are checked on, ideally real
            held-out inputs (the test split).
        model_json, metadata, features: written as model.json, metadata.json and features.json.
        precision: one of `PRECISIONS`.
        onnx: also write model.onnx (needs jax2onnx and onnxruntime); a failure is recorded in the
            manifest and logged, the rest of the export stands.
        platforms: `jax.export` lowering platforms.
        tolerance: max abs error allowed between an artifact and `apply` on the reference inputs.
        overwrite: replace an existing non-empty `out_dir`.
        input_docs: optional one-line description of each input (in the manifest).
        input_ranges: optional `[low, high]` of integer inputs (the loader refuses values outside).
    """
    from jax import export as jax_export
    from safetensors.numpy import save_file

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out}: exists and is not empty; pass --overwrite to replace it, or choose another folder")
        if not (out / MANIFEST).exists():
            raise ExportError(f"{out}: holds files that are not an export; refusing to delete them, choose another folder")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = _write(tmp, name=name, kind=kind, apply=apply, params=params, inputs=inputs, reference=reference,
                          model_json=model_json, metadata=metadata, features=features, precision=precision,
                          onnx=onnx, platforms=platforms, tolerance=tolerance, input_docs=input_docs or {},
                          input_ranges=input_ranges or {},
                          save_file=save_file, jax_export=jax_export)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _write(tmp: Path, *, name, kind, apply, params, inputs, reference, model_json, metadata, features, precision, onnx,
           platforms, tolerance, input_docs, input_ranges, save_file, jax_export) -> dict:
    flat = flatten_params(params)
    stored, layout = encode_weights(flat, precision)
    order = _order(layout)
    save_file({k: np.array(stored[k], order="C") for k in order}, str(tmp / WEIGHTS),  # keeps 0-d arrays 0-d
              metadata={"precision": precision, "format": FORMAT})
    ref = [np.asarray(r, np.dtype(inputs[n][1])) for n, r in zip(inputs, reference)]
    batched = _batched_outputs(apply, params, inputs)
    dropped = [k for k, ok in batched.items() if not ok]  # e.g. multitask's learned loss weights: not a prediction
    if dropped:
        log.info("%s: outputs without a batch axis are not served: %s", name, ", ".join(dropped))
    full_apply = apply

    def apply(p, *arrays):  # noqa: F811 - the served outputs only
        return {k: v for k, v in full_apply(p, *arrays).items() if batched[k]}

    jitted = jax.jit(apply)
    ref_out = {k: np.asarray(v) for k, v in jitted(params, *ref).items()}  # float32 params
    out_names = list(ref_out)
    out_specs = [_spec(n, np.shape(ref_out[n])[1:], np.asarray(ref_out[n]).dtype) for n in out_names]
    in_specs = [dict(_spec(n, shape, dtype), **({"doc": input_docs[n]} if n in input_docs else {}),
                     **({"range": list(input_ranges[n])} if n in input_ranges else {}))
                for n, (shape, dtype) in inputs.items()]

    def served(*args):
        weights, arrays = args[: len(order)], args[len(order):]
        out = apply(decode_weights(weights, layout), *arrays)
        return tuple(out[n] for n in out_names)

    (b,) = jax_export.symbolic_shape("b")
    abstract = [jax.ShapeDtypeStruct(stored[k].shape, stored[k].dtype) for k in order]
    abstract += [jax.ShapeDtypeStruct((b,) + tuple(shape), np.dtype(dtype)) for shape, dtype in inputs.values()]
    try:
        exported = jax_export.export(jax.jit(served), platforms=tuple(platforms))(*abstract)
    except Exception as error:  # noqa: BLE001 - name the model in the message
        raise ExportError(f"{name}: jax.export failed for platforms {list(platforms)} "
                          f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from error
    (tmp / STABLEHLO).write_bytes(exported.serialize())

    # checks: the artifact (deserialised, as a loader sees it) against the float32 apply, batch 1 and N
    restored = jax_export.deserialize(bytearray((tmp / STABLEHLO).read_bytes()))
    call = jax.jit(restored.call)
    weights = [jnp.asarray(stored[k]) for k in order]
    decoded = decode_weights(weights, layout)
    checks: dict[str, Any] = {"reference_batch": int(ref[0].shape[0])}
    served_out = ref_out if precision == "float32" else {k: np.asarray(v) for k, v in jitted(decoded, *ref).items()}
    got = call(*weights, *ref)
    checks["stablehlo_max_abs_error"] = max(_max_abs(served_out[n], g) for n, g in zip(out_names, got))
    if not checks["stablehlo_max_abs_error"] <= tolerance:
        raise ExportError(f"{name}: the exported StableHLO disagrees with the model by "
                          f"{checks['stablehlo_max_abs_error']:.2e} (> {tolerance:g}); not written")
    if precision != "float32":
        checks["precision"] = _precision_report(ref_out, [served_out[n] for n in out_names], out_names)
    onnx_record: dict[str, Any] = {}
    if onnx:
        onnx_record = _write_onnx(tmp, name, apply, decoded, inputs, ref, out_names, tolerance, served_out)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": in_specs, "outputs": out_specs,
        "weights": {"file": WEIGHTS, "precision": precision, "order": order,
                    "bytes": int(sum(stored[k].nbytes for k in order)),
                    "float32_bytes": int(sum(np.asarray(v).size * 4 for v in flat.values()))},
        "stablehlo": {"file": STABLEHLO, "platforms": list(exported.platforms), "jax_version": jax.__version__,
                      "calling_convention_version": exported.calling_convention_version},
        "onnx": onnx_record, "checks": checks, "dropped_outputs": dropped,
    }
    for file, value in (("manifest.json", manifest), ("model.json", model_json), ("metadata.json", metadata)):
        (tmp / file).write_text(json.dumps(value, indent=2, default=_json_default) + "\n")
    if features:
        (tmp / "features.json").write_text(json.dumps(features, indent=2, default=_json_default) + "\n")
    return manifest


def _batched_outputs(apply, params, inputs) -> dict[str, bool]:
    """Which outputs have the batch axis (their leading size follows the inputs' batch size)."""
    def shapes(batch):
        args = [jax.ShapeDtypeStruct((batch,) + tuple(shape), np.dtype(dtype)) for shape, dtype in inputs.values()]
        return jax.eval_shape(apply, params, *args)

    two, three = shapes(2), shapes(3)
    return {k: len(two[k].shape) > 0 and two[k].shape[0] == 2 and three[k].shape[0] == 3 for k in two}


def _precision_report(full: Mapping, quantised: Sequence, names) -> dict:
    """How much a quantised export changes each output on the reference inputs."""
    report = {}
    for name, q in zip(names, quantised):
        f = np.asarray(full[name], np.float64)
        q = np.asarray(q, np.float64)
        entry = {"max_abs_diff": _max_abs(f, q), "mean_abs_diff": float(np.mean(np.abs(f - q))),
                 "output_scale": float(np.std(f)) if f.size > 1 else float(np.abs(f).max())}
        if f.ndim >= 2 and f.shape[-1] > 1 and ("logits" in name or name in ("probs", "action_probs")):
            entry["argmax_agreement"] = float(np.mean(np.argmax(f, -1) == np.argmax(q, -1)))
        elif f.size > 2 and np.std(f) > 0 and np.std(q) > 0:
            entry["correlation"] = float(np.corrcoef(f.reshape(-1), q.reshape(-1))[0, 1])
        report[name] = entry
    return report


def _write_onnx(tmp: Path, name, apply, params, inputs, ref, out_names, tolerance, expected) -> dict:
    try:
        from trading_jax.export.onnx import check_onnx, to_onnx_bytes
    except ImportError as error:
        return {"error": f"ONNX export unavailable: {error}"}
    fn = (lambda *arrays: tuple(apply(params, *arrays)[n] for n in out_names))
    try:
        model = to_onnx_bytes(fn, dict(inputs), out_names)
    except Exception as error:  # noqa: BLE001 - recorded and logged: the StableHLO export stands
        message = f"{type(error).__name__}: {str(error).splitlines()[0][:240] if str(error) else ''}"
        log.warning("%s: no ONNX model (%s); the jax.export artifact is written", name, message)
        return {"error": message}
    (tmp / ONNX).write_bytes(model)
    error = check_onnx(model, lambda *_: tuple(expected[n] for n in out_names), dict(zip(inputs, ref)))
    if not error <= tolerance:
        (tmp / ONNX).unlink()
        log.warning("%s: the ONNX model disagrees with JAX by %.2e (> %g); not written", name, error, tolerance)
        return {"error": f"ONNX Runtime disagrees with JAX by {error:.2e} (> {tolerance:g})"}
    return {"file": ONNX, "max_abs_error": error, "opset": None}


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, _dt.datetime, _dt.date)):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
