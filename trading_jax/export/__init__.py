"""Export for serving: artifacts that run without our model code, the inference engine and the HTTP server.

    trading-jax export RUN_DIR OUT_DIR      # export_run: weights (safetensors), model.json, features.json,
                                            # metadata.json, model.stablehlo (jax.export), model.onnx
    model = load_exported(OUT_DIR)          # needs neither trading_jax.models nor the training code
    trading-jax serve OUT_DIR               # the HTTP server (FastAPI + uvicorn, the [serve] extra)

Modules: `runtime` (load_exported; standard library, NumPy, JAX and safetensors only), `artifact` (writing
and checking an export), `from_run` (run folder -> export), `pipeline` (the seed-000 inference pipeline as
one function), `engine` (InferenceEngine: validation, batch buckets, request batching), `server`
(the HTTP server), `onnx` (jax2onnx), `versioning` (MLflow registered model versions).
"""

from trading_jax._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "load_exported": "runtime", "ExportedModel": "runtime", "ExportError": "runtime", "load_onnx": "runtime",
    "write_export": "artifact", "PRECISIONS": "artifact",
    "export_run": "from_run",
    "export_pipeline": "pipeline",
    "InferenceEngine": "engine",
    "log_export": "versioning", "download_export": "versioning", "list_versions": "versioning",
})
