"""`trading-jax serve EXPORT_DIR`: an HTTP server (FastAPI + uvicorn, the `[serve]` extra) over an InferenceEngine.

Endpoints (JSON):

    GET  /health    {"status": "ok", "name", "kind", "requests"}
    GET  /version   the export's name, kind, creation time, precision, package / JAX versions, git commit,
                    inputs and outputs
    POST /predict   {"inputs": {name: nested lists}} -> {"outputs": {name: nested lists}, "rows": B}
    POST /act       the same request; answers only the execution action outputs ("action", "action_probs",
                    "side") of a policy or pipeline export

A request the model cannot take answers 4xx with `{"error": "one line"}`: 400 for a body that is not JSON
or not an object with "inputs", 422 for inputs the engine refuses (shape, NaN, too few bars, stale or
unordered timestamps), 413 for more rows than `max_rows`. An unexpected failure answers 500 with a one-line
message; its traceback goes to the server's log, never to the client. Requests are batched across
concurrent clients by the engine.
"""


import asyncio
import json
import math
from typing import Any

import numpy as np

from trading_jax.logging import get_logger

__all__ = ["make_app", "serve"]

log = get_logger(__name__)
ACTION_OUTPUTS = ("action", "action_probs", "side")


def _plain(value: np.ndarray) -> Any:
    """JSON-safe lists; NaN / inf become null (JSON has no NaN)."""
    a = np.asarray(value)
    if a.dtype.kind == "f":
        return [_plain(v) for v in a] if a.ndim else (float(a) if math.isfinite(float(a)) else None)
    return a.tolist()


def make_app(engine, max_rows: int = 4096):  # no `from __future__ import annotations`: FastAPI reads `Request`
    """The FastAPI app over `engine` (an `InferenceEngine`)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from trading_jax.export.engine import InputError

    app = FastAPI(title=f"trading-jax: {engine.model.name}", version=str(engine.info().get("package_version")))

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/health")
    def health():
        return {"status": "ok", "name": engine.model.name, "kind": engine.model.kind, "requests": engine.requests}

    @app.get("/version")
    def version():
        return engine.info()

    async def answer(request: Request, only=None):
        body = await request.body()
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return error(400, f"the request body is not valid JSON ({exc}); send {{\"inputs\": {{...}}}}")
        if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), dict):
            return error(400, "the request must be a JSON object with an \"inputs\" object of named arrays")
        try:
            arrays = engine.validate(payload["inputs"])
        except InputError as exc:
            return error(422, str(exc))
        rows = int(arrays[0].shape[0])
        if rows > max_rows:
            return error(413, f"{rows} rows in one request; at most {max_rows}: split it")
        try:
            out = await asyncio.wrap_future(engine.submit_arrays(arrays))
        except Exception as exc:  # noqa: BLE001 - one line to the client, the traceback to the log
            log.exception("request failed")
            return error(500, f"inference failed ({type(exc).__name__}); see the server log")
        if only is not None:
            out = {k: v for k, v in out.items() if k in only}
        return {"outputs": {k: _plain(v) for k, v in out.items()}, "rows": rows}

    @app.post("/predict")
    async def predict(request: Request):
        return await answer(request)

    @app.post("/act")
    async def act(request: Request):
        if engine.model.kind not in ("policy", "pipeline"):
            return error(404, f"/act serves policies and pipelines; this export is a {engine.model.kind}: use /predict")
        return await answer(request, only=ACTION_OUTPUTS)

    return app


def serve(export_dir, host: str = "127.0.0.1", port: int = 8000, max_wait_ms: float = 0.0,
          max_staleness=None, max_gap=None, max_rows: int = 4096) -> None:
    """Load, warm and serve the export until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise RuntimeError("serving needs FastAPI and uvicorn: pip install 'trading-jax[serve]'") from None
    from trading_jax.export.engine import InferenceEngine

    engine = InferenceEngine(export_dir, max_wait_ms=max_wait_ms, max_staleness=max_staleness, max_gap=max_gap)
    log.info("serving %s (%s) on http://%s:%d (buckets %s)", engine.model.name, engine.model.kind, host, port,
             engine.buckets)
    uvicorn.run(make_app(engine, max_rows=max_rows), host=host, port=port, log_level="warning")
