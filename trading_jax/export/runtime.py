"""Load and run an exported model without the model's Python code: `load_exported(dir)`.

This module imports only the standard library, NumPy, JAX and safetensors (no other part of
`trading_jax`), so a serving process needs none of the training code. An export folder holds

    manifest.json        what the artifact computes: kind, named inputs and outputs with shapes (the
                         batch axis is null: symbolic), the weight layout and precision, the checks run
                         at export time (max abs errors of the StableHLO and ONNX artifacts)
    weights.safetensors  the weights, flat ("block0/conv0/kernel"), float32, bfloat16 or int8 + scales:
                         the durable artifact (a StableHLO file only loads in JAX versions ~6 months back)
    model.stablehlo      `jax.export` artifact (serialised StableHLO, platforms cpu and cuda), called as
                         `f(*weights_in_manifest_order, *inputs) -> tuple of outputs`; the weight decoding
                         (bf16 -> f32, int8 * scale) is inside it
    model.onnx           the same computation for ONNX Runtime (float32 weights), when it could be made
    model.json           the factory arguments (model name, preset, kwargs) to rebuild it with our code
    features.json        the feature pipeline's fitted state (normaliser, window, feature names), if any
    metadata.json        package and JAX versions, training config, data range and fingerprint, metrics,
                         git commit

    model = load_exported("exports/tcn_btc")
    out = model(x)                       # x [B, window, F] float32 -> {"logits": [B, 3]} (NumPy)
    model.inputs, model.outputs          # names, shapes, dtypes
"""

from __future__ import annotations

import json
from pathlib import Path
import numpy as np

__all__ = ["FORMAT", "FORMAT_VERSION", "ExportedModel", "load_exported", "load_onnx", "read_manifest", "read_json",
           "ExportError"]

FORMAT = "trading-jax-export"
FORMAT_VERSION = 1
MANIFEST, WEIGHTS, STABLEHLO, ONNX = "manifest.json", "weights.safetensors", "model.stablehlo", "model.onnx"


class ExportError(ValueError):
    """An export folder that cannot be loaded, or inputs that do not fit it (one line, saying what to do)."""


def read_json(path: Path) -> dict:
    """A JSON object file of an export folder (one-line `ExportError` when missing, unreadable or not an object)."""
    if not path.is_file():
        raise ExportError(f"{path.parent} has no {path.name}: not a trading-jax export (export the model first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ExportError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}): re-export the model") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"cannot read {path} ({e}): check the file and re-export the model") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path} holds a JSON {type(data).__name__}, not an object: re-export the model")
    return data


def read_manifest(path: str | Path) -> dict:
    """The manifest of the export folder `path`, checked for format and version."""
    path = Path(path)
    if not path.is_dir():
        raise ExportError(f"{path}: no such folder; pass the folder written by `trading-jax export RUN_DIR OUT_DIR`")
    manifest = read_json(path / MANIFEST)
    if manifest.get("format") != FORMAT:
        raise ExportError(f"{path / MANIFEST} is a manifest of format {manifest.get('format')!r}, not {FORMAT!r}: "
                          "pass a trading-jax export folder")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ExportError(f"{path / MANIFEST}: format version {version!r} is newer than this package reads "
                          f"({FORMAT_VERSION}); upgrade trading-jax")
    return manifest


class ExportedModel:
    """A loaded export: call it with its inputs (positional in manifest order, or by name).

    Attributes:
        path: the export folder.
        manifest, metadata, features: its JSON files (`features` is {} when the export has none).
        name, kind: from the manifest ("predictor", "ensemble", "policy" or "pipeline").
        inputs, outputs: `[{"name", "shape" (None = batch), "dtype"}]` in call / return order.
    """

    def __init__(self, path: str | Path):
        import jax
        from jax import export as jax_export
        from safetensors.numpy import load_file

        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.metadata = read_json(self.path / "metadata.json") if (self.path / "metadata.json").exists() else {}
        self.features = read_json(self.path / "features.json") if (self.path / "features.json").exists() else {}
        self.name, self.kind = self.manifest["name"], self.manifest["kind"]
        self.inputs, self.outputs = self.manifest["inputs"], self.manifest["outputs"]
        weights = self.manifest["weights"]
        try:
            stored = load_file(str(self.path / weights["file"]))
        except FileNotFoundError:
            raise ExportError(f"{self.path / weights['file']}: missing; export the run again") from None
        except Exception as error:  # noqa: BLE001 - a truncated or foreign file
            raise ExportError(f"{self.path / weights['file']}: cannot be read ({error}); export the run again") from None
        missing = [k for k in weights["order"] if k not in stored]
        if missing:
            raise ExportError(f"{self.path / weights['file']}: lacks {len(missing)} weights the manifest names "
                              f"(first: {missing[0]!r}); export the run again")
        hlo = self.path / self.manifest["stablehlo"]["file"]
        try:
            self._exported = jax_export.deserialize(bytearray(hlo.read_bytes()))
        except FileNotFoundError:
            raise ExportError(f"{hlo}: missing; export the run again") from None
        except Exception as error:  # noqa: BLE001 - e.g. serialised by a JAX version this one cannot read
            raise ExportError(f"{hlo}: JAX {jax.__version__} cannot read it (exported with JAX "
                              f"{self.manifest['stablehlo'].get('jax_version')}: {str(error).splitlines()[0][:160]}); "
                              "re-export it from its weights with `trading-jax export` in this environment") from None
        platform = jax.default_backend()
        if platform not in self._exported.platforms:
            raise ExportError(f"{hlo}: exported for {', '.join(self._exported.platforms)}, not for this {platform} "
                              "backend; export again with --platforms including it")
        self._weights = [jax.device_put(stored[k]) for k in weights["order"]]
        self._call = jax.jit(self._exported.call)

    # ---------------------------------------------------------------------------------- calling
    def _arrays(self, args, kwargs) -> list[np.ndarray]:
        names = [spec["name"] for spec in self.inputs]
        if len(args) > len(names):
            raise ExportError(f"{self.name}: takes {len(names)} input(s) ({', '.join(names)}), got {len(args)}")
        given = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise ExportError(f"{self.name}: unknown input {key!r}; inputs are {', '.join(names)}")
            if key in given:
                raise ExportError(f"{self.name}: input {key!r} given twice")
            given[key] = value
        arrays, batch = [], None
        for spec in self.inputs:
            if spec["name"] not in given:
                raise ExportError(f"{self.name}: input {spec['name']!r} is missing (shape {_shape_text(spec['shape'])})")
            try:
                raw = np.asarray(given[spec["name"]])
                a = np.asarray(raw, dtype=spec["dtype"])
            except (TypeError, ValueError) as error:
                raise ExportError(f"{self.name}: input {spec['name']!r} is not an array of numbers ({error})") from None
            if a.dtype.kind == "i" and raw.dtype.kind == "f" and (raw != np.round(raw)).any():
                raise ExportError(f"{self.name}: input {spec['name']!r} must hold whole numbers")
            want = spec["shape"]
            if a.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, a.shape)):
                raise ExportError(f"{self.name}: input {spec['name']!r} has shape {list(a.shape)}; expected "
                                  f"{_shape_text(want)} (B = batch)")
            if a.shape[0] == 0:
                raise ExportError(f"{self.name}: input {spec['name']!r} has an empty batch")
            if "range" in spec and ((a < spec["range"][0]) | (a > spec["range"][1])).any():
                raise ExportError(f"{self.name}: input {spec['name']!r} must lie in {spec['range'][0]} .. "
                                  f"{spec['range'][1]} (got {a.min()} .. {a.max()})")
            if batch is not None and a.shape[0] != batch:
                raise ExportError(f"{self.name}: inputs disagree on the batch size ({batch} and {a.shape[0]})")
            batch = a.shape[0]
            arrays.append(a)
        return arrays

    def call_device(self, *arrays):
        """The outputs as a tuple of device arrays, without input checks (for callers that checked already)."""
        return self._call(*self._weights, *arrays)

    def __call__(self, *args, **kwargs) -> dict[str, np.ndarray]:
        """Run the model on inputs of any batch size B: `{output name: [B, ...] NumPy array}`."""
        out = self.call_device(*self._arrays(args, kwargs))
        return {spec["name"]: np.asarray(o) for spec, o in zip(self.outputs, out)}

    def __repr__(self) -> str:
        ins = ", ".join(f"{s['name']} {_shape_text(s['shape'])}" for s in self.inputs)
        outs = ", ".join(f"{s['name']} {_shape_text(s['shape'])}" for s in self.outputs)
        return f"ExportedModel({self.name!r}, {self.kind}: {ins} -> {outs})"


def _shape_text(shape) -> str:
    return "[" + ", ".join("B" if s is None else str(s) for s in shape) + "]"


def load_exported(path: str | Path) -> ExportedModel:
    """Load the export folder `path` (module docstring); raises `ExportError` with what to do when it cannot."""
    return ExportedModel(path)


def load_onnx(path: str | Path):
    """An onnxruntime `InferenceSession` of the export's ONNX model, and a call `f(*inputs) -> dict`.

    Raises:
        ExportError: the export has no ONNX model (the manifest says why) or onnxruntime is missing.
    """
    path = Path(path)
    manifest = read_manifest(path)
    onnx = manifest.get("onnx") or {}
    if "file" not in onnx:
        raise ExportError(f"{path}: has no ONNX model ({onnx.get('error', 'not exported')})")
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("onnxruntime is not installed: pip install 'trading-jax[export]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path / onnx["file"]), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    in_names = [i.name for i in session.get_inputs()]

    def run(*arrays) -> dict[str, np.ndarray]:
        feed = {n: np.asarray(a, np.float32) for n, a in zip(in_names, arrays)}
        return dict(zip(names, session.run(None, feed)))

    return session, run


def describe(model: ExportedModel, engine_hint: bool = True) -> str:
    """Lines telling how to load and serve the export (printed after `trading-jax export`)."""
    lines = [repr(model)]
    if engine_hint:
        lines += [f"  load:  from trading_jax.export import load_exported; model = load_exported({str(model.path)!r})",
                  f"  serve: trading-jax serve {model.path}   (HTTP; needs pip install 'trading-jax[serve]')"]
    return "\n".join(lines)
