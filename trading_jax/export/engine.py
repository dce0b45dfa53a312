"""`InferenceEngine`: an export kept warm for serving, with input validation, batch buckets and request batching.

    engine = InferenceEngine("exports/btc_pipeline")       # compiles every bucket once (warm)
    out = engine.predict({"bars": bars, "timestamps": stamps, "book": book})   # NumPy in, NumPy out
    future = engine.submit(inputs)                          # batched with concurrent requests

* **Validation** (`InputError`, one line naming the input, row and what to do): unknown or missing inputs,
  wrong shapes, values that are not numbers, NaN or infinite values, non-positive prices or a high below the
  low (bars); for a pipeline, too few bars for the warm-up (more are cut to the last `lookback`), and
  timestamps that do not increase, are further apart than `max_gap` or older than `max_staleness`
  (stale data) when those are set. Timestamps (`[B, L]` ISO strings, datetime64 or epoch seconds) are turned
  into the "calendar" input.
* **Buckets**: a batch of B rows runs padded to the smallest bucket >= B (rows beyond B are copies of row 0,
  dropped from the answer), so only `len(buckets)` programs are ever compiled; a batch above the largest
  bucket runs in chunks.
* **Batching**: `submit` queues a request; a worker thread runs whatever is queued (up to the largest
  bucket) as one batch: the requests that arrived while the previous batch ran, and those arriving within
  `max_wait_ms` (default 0) after the first.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from trading_jax.export.runtime import ExportedModel, ExportError, load_exported

__all__ = ["InferenceEngine", "InputError", "DEFAULT_BUCKETS"]

DEFAULT_BUCKETS = (1, 8, 32, 128, 256)


class InputError(ExportError):
    """A request the model cannot take (one line saying which input, which row and what to do)."""


def _calendar(stamps, name: str = "timestamps") -> tuple[np.ndarray, np.ndarray]:
    """`(calendar [.., 2] float32, epoch seconds float64)` of timestamps (ISO strings, datetime64 or seconds)."""
    a = np.asarray(stamps)
    try:
        if a.dtype.kind in "iuf":
            ns = (a.astype(np.float64) * 1e9).astype("datetime64[ns]")
        else:
            ns = a.astype("datetime64[ns]")
    except (TypeError, ValueError) as error:
        raise InputError(f"input {name!r}: not timestamps ({error}); send ISO strings or epoch seconds") from None
    if np.isnat(ns).any():
        row = int(np.argwhere(np.isnat(ns))[0][0])
        raise InputError(f"input {name!r}: row {row} has a missing timestamp")
    day = ns.astype("datetime64[D]")
    seconds = (ns - day).astype("timedelta64[s]").astype(np.float64)
    parts = np.stack([day.astype(np.int64).astype(np.float64), seconds], axis=-1).astype(np.float32)
    return parts, ns.astype(np.int64).astype(np.float64) / 1e9


class InferenceEngine:
    """A warm export behind checked inputs (module docstring).

    Args:
        export: an export folder or an `ExportedModel`.
        buckets: the batch sizes compiled (ascending).
        warm: compile every bucket now (else on first use).
        max_wait_ms: how long `submit`'s worker waits for more requests after the first of a batch (default 0:
            it batches what queued while the previous batch ran, and adds no wait).
        max_staleness: seconds; refuse a pipeline request whose last bar is older than this (None: no check).
        max_gap: seconds; refuse bars further apart than this (None: no check).
    """

    def __init__(self, export: str | Path | ExportedModel, buckets: Sequence[int] = DEFAULT_BUCKETS, warm: bool = True,
                 max_wait_ms: float = 0.0, max_staleness: float | None = None, max_gap: float | None = None):
        self.model = export if isinstance(export, ExportedModel) else load_exported(export)
        self.buckets = tuple(sorted(int(b) for b in buckets))
        if not self.buckets or self.buckets[0] < 1:
            raise ValueError(f"buckets {buckets!r}: expected positive batch sizes")
        self.max_wait = max_wait_ms / 1e3
        self.max_staleness, self.max_gap = max_staleness, max_gap
        self.specs = {s["name"]: s for s in self.model.inputs}
        self.lookback = self.model.features.get("lookback")
        self.requests = 0
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        if warm:
            self.warm()

    # ------------------------------------------------------------------------------------ info
    def info(self) -> dict:
        """Name, kind, version facts and the input / output specs (for a /version endpoint)."""
        meta = self.model.metadata
        inputs = [dict(s) for s in self.model.inputs]
        if "calendar" in self.specs:
            inputs.append({"name": "timestamps", "shape": [None, self.specs["calendar"]["shape"][1]],
                           "dtype": "ISO string or epoch seconds", "doc": "instead of calendar"})
        return {"name": self.model.name, "kind": self.model.kind, "created": self.model.manifest.get("created"),
                "precision": self.model.manifest["weights"]["precision"],
                "package_version": meta.get("package_version"), "git_commit": meta.get("git_commit"),
                "jax_version": meta.get("jax_version"), "inputs": inputs, "outputs": self.model.outputs,
                "buckets": list(self.buckets), "lookback": self.lookback, "requests": self.requests}

    def warm(self) -> None:
        """Compile every bucket (a zero-filled batch with positive prices)."""
        for b in self.buckets:
            arrays = []
            for spec in self.model.inputs:
                shape = (b,) + tuple(spec["shape"][1:])
                arrays.append(np.ones(shape, spec["dtype"]))
            self.model.call_device(*arrays)

    # ------------------------------------------------------------------------------ validation
    def validate(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        """The checked arrays in call order (raises `InputError`)."""
        if not isinstance(inputs, Mapping):
            raise InputError(f"inputs must be an object of named arrays ({', '.join(self.specs)})")
        inputs = dict(inputs)
        allowed = set(self.specs) | ({"timestamps"} if "calendar" in self.specs else set())
        unknown = sorted(set(inputs) - allowed)
        if unknown:
            raise InputError(f"unknown input {unknown[0]!r}; this {self.model.kind} takes {', '.join(sorted(allowed))}")
        if "timestamps" in inputs:
            if "calendar" in inputs:
                raise InputError("send either 'timestamps' or 'calendar', not both")
            inputs["calendar"], seconds = self._timestamps(inputs.pop("timestamps"))
        arrays, batch = [], None
        for name, spec in self.specs.items():
            if name not in inputs:
                hint = " (or 'timestamps')" if name == "calendar" else ""
                raise InputError(f"input {name!r}{hint} is missing; expected shape {_shape(spec['shape'])}")
            a = self._array(name, inputs[name], spec)
            if batch is not None and a.shape[0] != batch:
                raise InputError(f"input {name!r} has {a.shape[0]} rows but the others have {batch}")
            batch = a.shape[0]
            arrays.append(a)
        if "bars" in self.specs:
            self._check_bars(arrays[list(self.specs).index("bars")])
        return arrays

    def _timestamps(self, stamps):
        spec = self.specs["calendar"]
        a = np.asarray(stamps)
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2:
            raise InputError(f"input 'timestamps' has shape {list(a.shape)}; expected [B, L] (one per bar)")
        parts, seconds = _calendar(a)
        step = np.diff(seconds, axis=1)
        if (step <= 0).any():
            row, col = (int(i) for i in np.argwhere(step <= 0)[0])
            raise InputError(f"input 'timestamps': row {row} is not increasing at bar {col + 1} "
                             "(duplicate or out-of-order bars); send the bars oldest first, once each")
        if self.max_gap is not None and (step > self.max_gap).any():
            row, col = (int(i) for i in np.argwhere(step > self.max_gap)[0])
            raise InputError(f"input 'timestamps': row {row} has a gap of {step[row, col]:.0f} s before bar {col + 1} "
                             f"(more than max_gap {self.max_gap:g} s); fill or drop the missing bars")
        if self.max_staleness is not None:
            age = time.time() - seconds[:, -1]
            if (age > self.max_staleness).any():
                row = int(np.argmax(age > self.max_staleness))
                raise InputError(f"input 'timestamps': row {row}'s last bar is {age[row]:.0f} s old (more than "
                                 f"max_staleness {self.max_staleness:g} s); the data feed is stale")
        want = spec["shape"][1]
        if parts.shape[1] < want:
            raise InputError(f"input 'timestamps' has {parts.shape[1]} bars; the model needs {want}")
        return parts, seconds

    def _array(self, name: str, value, spec) -> np.ndarray:
        try:
            a = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"input {name!r} is not an array of numbers (ragged rows or text?)") from None
        want = list(spec["shape"])
        if a.ndim == len(want) - 1:
            a = a[None]  # one row without the batch axis
        if a.ndim != len(want):
            raise InputError(f"input {name!r} has shape {list(a.shape)}; expected {_shape(want)} (B = rows)")
        if a.shape[0] == 0:
            raise InputError(f"input {name!r} has no rows")
        if name in ("bars", "calendar") and self.lookback and a.shape[1] != want[1]:
            if a.shape[1] < want[1]:
                warm = self.model.features.get("warmup")
                raise InputError(f"input {name!r} has {a.shape[1]} bars; the pipeline needs the last {want[1]} (warm-up "
                                 f"{warm} + window {self.model.features.get('window')} + settling): send more history")
            a = a[:, -want[1]:]
        if any(w is not None and w != s for w, s in zip(want[1:], a.shape[1:])):
            raise InputError(f"input {name!r} has shape {list(a.shape)}; expected {_shape(want)} (B = rows)")
        bad = ~np.isfinite(a)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(f"input {name!r} has a NaN or infinite value at row {index[0]} (index {list(index)}); "
                             "send finite numbers (fill or drop missing data before the request)")
        if np.dtype(spec["dtype"]).kind == "i":
            if (a != np.round(a)).any():
                raise InputError(f"input {name!r} must hold whole numbers")
            if "range" in spec and ((a < spec["range"][0]) | (a > spec["range"][1])).any():
                raise InputError(f"input {name!r} must lie in {spec['range'][0]} .. {spec['range'][1]} "
                                 f"(got {a.min():g} .. {a.max():g})")
        return a.astype(spec["dtype"])

    def _check_bars(self, bars: np.ndarray) -> None:
        if (bars[..., :4] <= 0).any():
            index = [int(i) for i in np.argwhere(bars[..., :4] <= 0)[0]]
            raise InputError(f"input 'bars': price at row {index[0]}, bar {index[1]}, asset {index[2]} is <= 0; "
                             "prices must be positive (order: open, high, low, close, volume)")
        if (bars[..., 4] < 0).any():
            index = [int(i) for i in np.argwhere(bars[..., 4] < 0)[0]]
            raise InputError(f"input 'bars': negative volume at row {index[0]}, bar {index[1]}, asset {index[2]}")
        if (bars[..., 1] < bars[..., 2]).any():
            index = [int(i) for i in np.argwhere(bars[..., 1] < bars[..., 2])[0]]
            raise InputError(f"input 'bars': high < low at row {index[0]}, bar {index[1]}, asset {index[2]}; "
                             "check the column order (open, high, low, close, volume)")

    # ------------------------------------------------------------------------------------ running
    def _bucket(self, n: int) -> int:
        return next((b for b in self.buckets if b >= n), self.buckets[-1])

    def run_arrays(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Run checked arrays of any batch size through the bucketed programs."""
        n = arrays[0].shape[0]
        chunks = []
        for start in range(0, n, self.buckets[-1]):
            part = [a[start: start + self.buckets[-1]] for a in arrays]
            rows = part[0].shape[0]
            size = self._bucket(rows)
            if size > rows:
                part = [np.concatenate([a, np.repeat(a[:1], size - rows, axis=0)]) for a in part]
            out = self.model.call_device(*part)
            chunks.append([np.asarray(o)[:rows] for o in out])
        names = [s["name"] for s in self.model.outputs]
        return {name: np.concatenate([c[i] for c in chunks]) for i, name in enumerate(names)}

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Validate and run one request now (module docstring)."""
        arrays = self.validate(inputs)
        with self._lock:
            self.requests += 1
            return self.run_arrays(arrays)

    def submit(self, inputs: Mapping[str, Any]) -> Future:
        """Queue a request for the batching worker; the future gives `predict`'s answer (or its InputError)."""
        try:
            arrays = self.validate(inputs)
        except InputError as error:
            future: Future = Future()
            future.set_exception(error)
            return future
        return self.submit_arrays(arrays)

    def submit_arrays(self, arrays: list[np.ndarray]) -> Future:
        """Queue arrays that passed `validate` for the batching worker."""
        future: Future = Future()
        if self._worker is None:
            with self._lock:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._serve, daemon=True, name="inference-batcher")
                    self._worker.start()
        self._queue.put((arrays, future))
        return future

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            rows = batch[0][0][0].shape[0]
            deadline = time.perf_counter() + self.max_wait
            while rows < self.buckets[-1]:
                try:  # whatever queued while the last batch ran, and what comes within max_wait
                    left = deadline - time.perf_counter()
                    item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                rows += item[0][0].shape[0]
            try:
                joined = [np.concatenate([b[0][i] for b in batch]) for i in range(len(batch[0][0]))]
                with self._lock:
                    self.requests += len(batch)
                    out = self.run_arrays(joined)
                start = 0
                for arrays, future in batch:
                    n = arrays[0].shape[0]
                    future.set_result({k: v[start: start + n] for k, v in out.items()})
                    start += n
            except Exception as error:  # noqa: BLE001 - every waiting request gets the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)


def _shape(shape) -> str:
    return "[" + ", ".join("B" if s is None else str(s) for s in shape) + "]"
