"""Benchmark: inference latency (batch 1, p50 / p99) and throughput (batch 256) of our models, their exports
and the full pipeline, against the same models in PyTorch eager.

Models (registry name, seed preset, dropout 0; random-init weights: timing does not depend on training):

  tcn                seed 002: 8 causal dilated residual blocks of 64 channels, kernel 3; 10 features x 128 bars
  lstm_attention     seed 002: 3 bidirectional LSTM layers of 256, additive attention; 10 features x 60 bars
  price_transformer  seed 000: 128 features -> 512, 6 post-LN layers (8 heads, FF 2048), 4 horizon heads; 60 bars
  lstm               3 unidirectional LSTM layers of 256 (no PyTorch twin: JAX only); 10 features x 60 bars
  cnn_lstm           seed 001: Conv1d(64) + 2-layer LSTM(128) + attention (no PyTorch twin: JAX only); 10 x 60

The first three are the sizes of benchmarks/train_step.py's PyTorch twins. `--quick` times only the three
with a twin, smaller (SPECS' quick_kwargs: LSTM 2 x 64, transformer 2 x 128; 32 bars, the TCN 64) and with
fewer calls. Each model is exported with `trading_jax.export.artifact.write_export` (what `trading-jax export`
writes: StableHLO with a symbolic batch, and ONNX when jax2onnx converts it and ONNX Runtime agrees within
1e-5; the manifest says why not otherwise) and timed on the same NumPy inputs through:

  jax_jit               `jax.jit(apply)(params, x)` + `jax.block_until_ready` (apply: the export's own
                        computation, `trading_jax.export.rebuild.apply_from_model_json`, every output)
  exported_device       `load_exported(dir).call_device(x)` + `jax.block_until_ready` (no input checks)
  exported              `load_exported(dir)(x)`: the checked call, NumPy in, a dict of NumPy out
  onnxruntime           `load_onnx(dir)` -> `session.run(None, {"x": x})` (CPUExecutionProvider, default
                        session options: one intra-op thread per core)
  onnxruntime_1_thread  the same model in a session with one intra-op and one inter-op thread
  torch                 the PyTorch twin, `benchmarks/train_step.py`'s `torch_models()` at our sizes, our weights
                        copied in with its `copy_into_torch` (parameter counts asserted equal, outputs compared),
                        `model.eval()`, `torch.no_grad()`, `torch.set_num_threads(os.cpu_count())`; it returns
                        the prediction head only (our artifacts return every output: sequence, features, ...)
  torch_1_thread        the same with `torch.set_num_threads(1)` around the call

Why the one-thread variants: multi-threaded PyTorch (OpenMP) and ONNX Runtime spin and wait at barriers, and
collapse when another process takes a core (on a shared 2-core machine, a batch-1 call of 0.6 ms can take
hundreds of ms). The throughput goal is judged against the FASTER of the two PyTorch settings.

Latency: batch 1, each call timed alone with `time.perf_counter`, the backends interleaved in rounds (load
from elsewhere hits each alike), p50 and p99 over every timed call; each backend gets about a fixed time of
calls (at least a minimum count, fewer only for a call so slow the minimum would take over 4x that time).
Throughput: batch 256, samples/s = 256 / the median call time. Compilation (the first call at each shape)
is timed apart ("first_call_s").

Full pipeline: a tiny ensemble run (experiments/ensemble_btc.toml's tiny TCN classifiers, 64-bar window; 4
members with --quick, 8 without; the built-in synthetic market, one epoch) and a tiny PPO run on the execution
env (default network) are trained with `trading-jax train` (two processes at once), exported with
`export_run` and composed with `export_pipeline` into ONE function of raw bars [B, L, A, 5] (+ calendar
[B, L, 2]) and order books [B, A, 15] (features, ensemble, signal, execution plan). Timed: `jax.jit` of the
composed function, the export's `call_device` and checked call, `InferenceEngine(dir, buckets=(1, 256))
.predict(dict)`, ONNX Runtime if the export made one (tried in the full run; the manifest says why not), and
over HTTP: `trading-jax serve DIR` in a subprocess, `POST /predict` at batch 1 from an httpx client (keep-alive,
the JSON body encoded once before timing). There is no PyTorch twin of the pipeline.

Goals: the full pipeline's p99 at batch 1 under 5 ms on this CPU (InferenceEngine.predict, in process); at
batch 256, at least 2x PyTorch's throughput (ours = the exported artifact's checked call `model(x)`; peer =
the faster PyTorch setting; the summary line is the model with the worst ratio). Writes
benchmarks/results/inference-DEVICE.json (inference-DEVICE-quick.json with --quick); the last line is the
throughput summary, the line before it the pipeline's p99 (and over HTTP).

    python benchmarks/inference.py                       # seed sizes, about 15 min on 2 cores
    python benchmarks/inference.py --quick               # 3 small models + the pipeline, a few minutes
    python benchmarks/inference.py --models tcn lstm --no-pipeline
    python benchmarks/inference.py --quick --models      # the pipeline only
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from _common import add_common_arguments, machine_info, missing, output_path, skip_note, write_results
from _load import record_load

ROOT = Path(__file__).resolve().parents[1]
GOAL_P99_MS = 5.0
GOAL_RATIO = 2.0
BATCH_LATENCY, BATCH_THROUGHPUT = 1, 256
HEADLINE_BACKEND = "exported"


@dataclass(frozen=True)
class Spec:
    key: str
    factory: str
    features: int
    seq: int
    output: str                      # the output compared with the PyTorch twin
    twin: str | None                 # key of benchmarks/train_step.py's torch_models(), if any
    kwargs: dict = field(default_factory=dict)        # overrides of the seed preset (full mode)
    quick_kwargs: dict = field(default_factory=dict)  # overrides of the seed preset (--quick)
    quick_seq: int | None = None


SPECS = (
    Spec("tcn", "tcn", 10, 128, "prediction", "tcn", quick_seq=64),
    Spec("lstm_attention", "lstm_attention", 10, 60, "prediction", "lstm_attention",
         quick_kwargs=dict(hidden_size=64, num_layers=2), quick_seq=32),
    Spec("price_transformer", "price_transformer", 128, 60, "horizons", "transformer",
         quick_kwargs=dict(d_model=128, num_heads=4, num_layers=2, dim_feedforward=512), quick_seq=32),
    Spec("lstm", "lstm", 10, 60, "prediction", None, quick_kwargs=dict(hidden_size=64, num_layers=2), quick_seq=32),
    Spec("cnn_lstm", "cnn_lstm", 10, 60, "prediction", None, quick_seq=32),
)


def twin_kwargs(spec: Spec, model) -> dict:
    """The PyTorch twin's constructor arguments for our built Flax module (same sizes)."""
    if spec.twin == "tcn":
        return dict(channels=model.channels, levels=model.levels, kernel=model.kernel_size)
    if spec.twin == "lstm_attention":
        return dict(hidden=model.hidden_size, num_layers=model.num_layers)
    if spec.twin == "transformer":
        return dict(d_model=model.d_model, num_heads=model.num_heads, num_layers=model.num_layers,
                    dim_feedforward=model.dim_feedforward, horizons=len(model.horizons))
    raise KeyError(spec.twin)


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def latency(fns: dict, budget_s: float, lo: int, hi: int, rounds: int) -> dict:
    """p50 / p99 (ms) of single calls of each fn, the fns interleaved in `rounds` rounds. Each fn gets
    about `budget_s` seconds of calls, at least `lo` and at most `hi` (counted from the median of 5 probe
    calls, which also warm it up); a fn whose calls slow down after the probe stops at 4x `budget_s`
    (at least 5 calls a round)."""
    calls = {}
    for name, fn in fns.items():
        probe = float(np.median([timed(fn) for _ in range(5)]))
        calls[name] = calls_for(probe, budget_s, lo, hi)
    times = {name: [] for name in fns}
    cap = 4 * budget_s / rounds  # per backend and round: a backend that slows down later stops early
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()  # re-warm after the others ran
            start = time.perf_counter()
            for i in range(max(1, math.ceil(calls[name] / rounds))):
                times[name].append(timed(fn))
                if i >= 4 and time.perf_counter() - start > cap:
                    break
    return {name: summary_ms(t) for name, t in times.items()}


def summary_ms(t: list[float]) -> dict:
    a = 1e3 * np.asarray(t)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean()), "min_ms": float(a.min()), "max_ms": float(a.max()), "calls": int(a.size)}


def throughput(fns: dict, batch: int, budget_s: float, lo: int, hi: int, rounds: int) -> dict:
    """samples/s = batch / median call time. Each fn gets about `budget_s` seconds of calls (at least `lo`,
    at most `hi`, counting a first timed probe call; the first calls at this shape were made before), the
    rest interleaved with the other fns' in `rounds` rounds."""
    times = {name: [timed(fn)] for name, fn in fns.items()}
    calls = {name: calls_for(t[0], budget_s, lo, hi) - 1 for name, t in times.items()}
    for r in range(rounds):
        for name, fn in fns.items():
            n = math.ceil(calls[name] / rounds) if r < calls[name] else 0
            if n and r:
                fn()  # re-warm after the others ran
            times[name] += [timed(fn) for _ in range(n)]
    out = {}
    for name, t in times.items():
        median = float(np.median(t))
        out[name] = {"samples_per_s": batch / median, "median_ms": 1e3 * median, "min_ms": 1e3 * min(t),
                     "calls": len(t)}
    return out


def calls_for(seconds_per_call: float, budget_s: float, lo: int, hi: int) -> int:
    """About `budget_s` of calls, at least `lo` and at most `hi`; but a call so slow that `lo` of them would
    take over 4 budgets gets 4 budgets' worth (at least 10 calls for latency, 2 for throughput)."""
    per_call = max(seconds_per_call, 1e-6)
    calls = int(min(hi, max(lo, budget_s / per_call)))
    if calls * per_call > 4 * budget_s:
        calls = max(min(lo, 10), int(4 * budget_s / per_call))
    return calls


# ------------------------------------------------------------------------------------------------
# one model
# ------------------------------------------------------------------------------------------------


def build(spec: Spec, quick: bool, workdir: Path) -> dict:
    """Our model (random init), its export folder, the loaded artifacts and the PyTorch twin."""
    from trading_jax.export import load_exported
    from trading_jax.export.artifact import write_export
    from trading_jax.export.rebuild import apply_from_model_json
    from trading_jax.models import create

    kwargs = dict(dropout=0.0, **(spec.quick_kwargs if quick else spec.kwargs))
    seq = (spec.quick_seq or spec.seq) if quick else spec.seq
    model_json = {"algorithm": "supervised", "factory": spec.factory, "preset": "seed", "kwargs": kwargs,
                  "task": "regression"}
    model = create(spec.factory, preset="seed", **kwargs)
    rng = np.random.default_rng(0)
    x_ref = rng.standard_normal((8, seq, spec.features)).astype(np.float32)
    params = model.init(jax.random.key(0), x_ref[:1], train=False)["params"]
    apply = apply_from_model_json(model_json)
    out_dir = workdir / spec.key
    start = time.perf_counter()
    manifest = write_export(out_dir, name=spec.key, kind="predictor", apply=apply, params=params,
                            inputs={"x": ((seq, spec.features), "float32")}, reference=[x_ref], model_json=model_json,
                            metadata={"note": "benchmarks/inference.py: random-init weights"}, onnx=True,
                            overwrite=True)
    export_s = time.perf_counter() - start
    n_params = int(sum(np.size(a) for a in jax.tree.leaves(params)))
    return {"model": model, "model_json": model_json, "apply": apply, "jitted": jax.jit(apply),
            "params": jax.device_put(params), "seq": seq, "dir": out_dir, "manifest": manifest, "export_s": export_s,
            "n_params": n_params, "exported": load_exported(out_dir)}


def torch_twin(spec: Spec, built: dict):
    """The PyTorch twin at our sizes with our weights, in eval mode."""
    from train_step import copy_into_torch, torch_models

    twin = torch_models()[spec.twin](spec.features, **twin_kwargs(spec, built["model"]))
    copy_into_torch(spec.twin, twin, jax.tree.map(np.asarray, built["params"]))
    return twin.eval()


def check_twin(spec: Spec, built: dict, twin, x: np.ndarray) -> dict:
    """Parameter counts (asserted equal) and the max abs difference of the twin's output from ours."""
    import torch

    n_torch = int(sum(p.numel() for p in twin.parameters() if p.requires_grad))
    with torch.no_grad():
        got = twin(torch.from_numpy(x)).numpy()
    want = np.asarray(built["jitted"](built["params"], x)[spec.output]).reshape(got.shape)
    diff = float(np.max(np.abs(got - want)))
    scale = float(np.max(np.abs(want)))
    assert n_torch == built["n_params"], f"{spec.key}: PyTorch {n_torch} params, ours {built['n_params']}"
    assert diff <= 1e-3 * max(scale, 1.0), f"{spec.key}: PyTorch and ours differ by {diff}"
    return {"max_abs_diff": diff, "output_scale": scale, "params": n_torch}


def backends(built: dict, twin, onnx_run) -> dict:
    """name -> fn(x) that returns when the outputs are ready (host NumPy in)."""
    fns = {}
    jitted, params = built["jitted"], built["params"]
    fns["jax_jit"] = lambda x: jax.block_until_ready(jitted(params, x))
    exported = built["exported"]
    fns["exported_device"] = lambda x: jax.block_until_ready(exported.call_device(x))
    fns["exported"] = lambda x: exported(x)
    if onnx_run is not None:
        session, name = onnx_run
        fns["onnxruntime"] = lambda x: session.run(None, {name: x})
        if (os.cpu_count() or 1) > 1:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            one = ort.InferenceSession(str(built["dir"] / built["manifest"]["onnx"]["file"]), options,
                                       providers=["CPUExecutionProvider"])
            fns["onnxruntime_1_thread"] = lambda x: one.run(None, {name: x})
    if twin is not None:
        import torch

        threads = torch.get_num_threads()

        def run_torch(x):
            with torch.no_grad():
                return twin(torch.from_numpy(x))

        def run_torch_1(x):
            torch.set_num_threads(1)
            try:
                with torch.no_grad():
                    return twin(torch.from_numpy(x))
            finally:
                torch.set_num_threads(threads)

        fns["torch"] = run_torch
        if threads > 1:
            fns["torch_1_thread"] = run_torch_1
    return fns


def first_calls(fns: dict, x: np.ndarray) -> dict:
    return {name: timed(lambda: fn(x)) for name, fn in fns.items()}


def agreement(fns: dict, x: np.ndarray, built: dict, spec: Spec) -> dict:
    """Max abs difference of the compared output of each backend from jax_jit's (torch: its only output)."""
    names = [o["name"] for o in built["manifest"]["outputs"]]
    index = names.index(spec.output)
    want = np.asarray(built["jitted"](built["params"], x)[spec.output])
    out = {}
    for name, fn in fns.items():
        got = fn(x)
        if name == "jax_jit":
            continue
        if name == "exported":
            got = got[spec.output]
        elif name.startswith("torch"):
            got = got.numpy()
        else:
            got = got[index]
        out[name] = float(np.max(np.abs(np.asarray(got).reshape(want.shape) - want)))
    return out


def bench_model(spec: Spec, args, workdir: Path, torch_ok: bool) -> dict:
    from trading_jax.export import ExportError
    from trading_jax.export.runtime import load_onnx

    t0 = time.perf_counter()
    print(f"{spec.key}: exporting ...", flush=True)
    built = build(spec, args.quick, workdir)
    seq = built["seq"]
    rng = np.random.default_rng(1)
    x1 = rng.standard_normal((BATCH_LATENCY, seq, spec.features)).astype(np.float32)
    xb = rng.standard_normal((BATCH_THROUGHPUT, seq, spec.features)).astype(np.float32)
    result = {"factory": spec.factory, "preset": "seed", "kwargs": built["model_json"]["kwargs"],
              "features": spec.features, "sequence": seq, "params": built["n_params"],
              "outputs": [o["name"] for o in built["manifest"]["outputs"]], "export_s": built["export_s"],
              "onnx": built["manifest"]["onnx"]}
    onnx_run = None
    try:
        session, _ = load_onnx(built["dir"])
        onnx_run = (session, session.get_inputs()[0].name)
    except ExportError as error:
        result["onnx_na"] = str(error)
    twin = None
    if spec.twin is None:
        result["torch"] = {"na": "no PyTorch twin in benchmarks/train_step.py"}
    elif not torch_ok:
        result["torch"] = {"na": "PyTorch not installed"}
    else:
        twin = torch_twin(spec, built)
    fns = backends(built, twin, onnx_run)
    result["first_call_s"] = {"batch_1": first_calls(fns, x1), f"batch_{BATCH_THROUGHPUT}": first_calls(fns, xb)}
    if twin is not None:
        result["torch"] = {"twin": f"benchmarks/train_step.py torch_models()[{spec.twin!r}]",
                           "weights": "ours, copied with train_step.copy_into_torch",
                           **check_twin(spec, built, twin, xb)}
    result["max_abs_diff_vs_jax_jit"] = agreement(fns, xb, built, spec)
    t1 = time.perf_counter()

    result["latency_batch_1"] = latency({k: (lambda f=f: f(x1)) for k, f in fns.items()}, args.latency_budget_s,
                                        args.min_calls, args.max_calls, args.rounds)
    result["throughput_batch_256"] = throughput({k: (lambda f=f: f(xb)) for k, f in fns.items()}, BATCH_THROUGHPUT,
                                                args.tp_budget_s, args.tp_min_calls, args.tp_max_calls,
                                                args.tp_rounds)
    result["seconds"] = {"setup": t1 - t0, "timing": time.perf_counter() - t1}
    tp = result["throughput_batch_256"]
    if "torch" in tp:
        torch_names = [k for k in tp if k.startswith("torch")]
        best = max(torch_names, key=lambda k: tp[k]["samples_per_s"])
        result["torch_best"] = best
        result["ratio_vs_torch"] = {k: v["samples_per_s"] / tp["torch"]["samples_per_s"] for k, v in tp.items()
                                    if k not in torch_names}
        result["ratio_vs_torch_best"] = {k: v["samples_per_s"] / tp[best]["samples_per_s"] for k, v in tp.items()
                                         if k not in torch_names}
    lat = result["latency_batch_1"]
    print(f"  {built['n_params']:,} params, sequence {seq}, export {built['export_s']:.1f} s, ONNX "
          f"{'yes' if onnx_run else 'n/a (' + result.get('onnx_na', '') + ')'}; seconds "
          + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()), flush=True)
    for name in fns:
        line = (f"  {name:20s} batch 1 p50 {lat[name]['p50_ms']:8.3f} ms  p99 {lat[name]['p99_ms']:8.3f} ms   "
                f"batch 256 {tp[name]['samples_per_s']:10,.0f} samples/s")
        if name in result.get("ratio_vs_torch", {}):
            line += (f"  ({result['ratio_vs_torch'][name]:.2f}x torch, {result['ratio_vs_torch_best'][name]:.2f}x "
                     f"{result['torch_best']})")
        print(line, flush=True)
    return result


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def machine() -> dict:
    return machine_info("onnxruntime", "jax2onnx", "flax")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, choices=[s.key for s in SPECS],
                        help="models to time (default: all five; with --quick the three with a PyTorch twin); "
                             "none: the pipeline only")
    parser.add_argument("--no-pipeline", action="store_true", help="time the models only")
    parser.add_argument("--keep", default=None, help="write the exports and runs here and keep them (default: a "
                                                     "temporary folder, deleted)")
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.models is None:
        args.models = [s.key for s in SPECS if s.twin or not args.quick]
    # per backend and model: about BUDGET seconds of calls, at least MIN and at most MAX, in ROUNDS rounds
    args.latency_budget_s, args.min_calls, args.max_calls, args.rounds = (0.6, 50, 1000, 2) if args.quick else \
        (6.0, 300, 5000, 4)
    args.tp_budget_s, args.tp_min_calls, args.tp_max_calls, args.tp_rounds = (1.5, 2, 5, 1) if args.quick else \
        (15.0, 2, 15, 3)
    args.http_calls = 300 if args.quick else 2000
    load_before = os.getloadavg()

    skipped = {}
    torch_ok = missing("torch") is None
    if torch_ok:
        import torch

        torch.set_num_threads(os.cpu_count())
    else:
        skipped["torch"] = skip_note("PyTorch", "torch==2.13.0", "torch")
    if missing("onnxruntime", "jax2onnx"):
        skipped["onnxruntime"] = skip_note("ONNX Runtime", "'trading-jax[export]'", missing("onnxruntime", "jax2onnx"))
    if jax.default_backend() != "cpu" and torch_ok:
        import torch

        if not torch.cuda.is_available():
            skipped["torch_note"] = "PyTorch runs on the CPU here (no CUDA build): the ratio is not like for like"

    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="inference-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = {
        "benchmark": "inference", "quick": args.quick, "machine": machine(), "skipped": skipped,
        "goal": {"pipeline_p99_ms_batch_1": GOAL_P99_MS, "throughput_ratio_vs_torch_batch_256": GOAL_RATIO},
        "settings": {"latency_batch": BATCH_LATENCY, "throughput_batch": BATCH_THROUGHPUT, "rounds": args.rounds,
                     "latency_calls_per_backend": f"{args.min_calls}..{args.max_calls} (about "
                                                  f"{args.latency_budget_s:g} s of calls), in {args.rounds} rounds",
                     "throughput_calls_per_backend": f"{args.tp_min_calls}..{args.tp_max_calls} (about "
                                                     f"{args.tp_budget_s:g} s of calls), in {args.tp_rounds} rounds",
                     "dtype": "float32", "weights": "random init (seed 0)",
                     "torch": f"eager, model.eval(), torch.no_grad(), torch.set_num_threads({os.cpu_count()})",
                     "onnxruntime": "CPUExecutionProvider, default session options (intra-op threads = cores)",
                     "headline_backend": HEADLINE_BACKEND},
        "models": {},
    }
    try:
        for spec in SPECS:
            if spec.key in args.models:
                results["models"][spec.key] = bench_model(spec, args, workdir, torch_ok)
        if not args.no_pipeline:
            results["pipeline"] = bench_pipeline(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    record_load(results["machine"], load_before)
    models = results["models"]
    ratios = {k: m["ratio_vs_torch_best"][HEADLINE_BACKEND] for k, m in models.items() if "ratio_vs_torch" in m}
    if ratios:
        worst = min(ratios, key=ratios.get)
        tp = models[worst]["throughput_batch_256"]
        results["worst_model"] = worst
        results["ours_samples_per_s"] = tp[HEADLINE_BACKEND]["samples_per_s"]
        results["peer"] = f"PyTorch eager, the faster of {os.cpu_count()} threads and 1 ({models[worst]['torch_best']})"
        results["peer_samples_per_s"] = tp[models[worst]["torch_best"]]["samples_per_s"]
        results["ratio"] = ratios[worst]
        results["ratio_vs_torch_all_cores"] = models[worst]["ratio_vs_torch"][HEADLINE_BACKEND]
        results["geomean_ratio"] = math.exp(sum(math.log(v) for v in ratios.values()) / len(ratios))
        results["throughput_goal_met"] = ratios[worst] >= GOAL_RATIO
        results["throughput_goal_met_by_model"] = {k: v >= GOAL_RATIO for k, v in ratios.items()}
    pipe = results.get("pipeline") or {}
    if "p99_ms" in pipe:
        results["pipeline_p99_ms"] = pipe["p99_ms"]
        results["pipeline_goal_met"] = pipe["p99_ms"] < GOAL_P99_MS
    write_results(output_path("inference", args), results)

    for key, ratio in ratios.items():
        m = models[key]
        tp = m["throughput_batch_256"]
        print(f"inference[{key}]: ours ({HEADLINE_BACKEND}) {tp[HEADLINE_BACKEND]['samples_per_s']:,.0f} samples/s, "
              f"torch {tp['torch']['samples_per_s']:,.0f} samples/s on {os.cpu_count()} threads"
              + (f", {tp['torch_1_thread']['samples_per_s']:,.0f} on 1" if "torch_1_thread" in tp else "")
              + f"; ratio to the faster {ratio:.2f} (goal {GOAL_RATIO:g}: {'met' if ratio >= GOAL_RATIO else 'NOT met'})")
    if "p99_ms" in pipe:
        print(f"inference pipeline p99 (batch 1, {pipe['p99_backend']}): ours {pipe['p99_ms']:.2f} ms "
              f"(goal < {GOAL_P99_MS:g} ms: {'met' if results['pipeline_goal_met'] else 'NOT met'}); over HTTP "
              + (f"{pipe['http']['p99_ms']:.2f} ms" if "p99_ms" in pipe.get("http", {}) else "n/a"))
    elif not args.no_pipeline:
        print(f"inference pipeline p99: n/a ({pipe.get('na', 'not run')}) (goal < {GOAL_P99_MS:g} ms)")
    if ratios:
        worst = results["worst_model"]
        tp = models[worst]["throughput_batch_256"]
        best = models[worst]["torch_best"]
        print(f"inference (batch 256, worst model {worst}): ours {tp[HEADLINE_BACKEND]['samples_per_s']:,.0f} samples/s, "
              f"torch {tp[best]['samples_per_s']:,.0f} samples/s, ratio {results['ratio']:.2f} (goal {GOAL_RATIO:g})")
    else:
        ours = ", ".join(f"{k} {m['throughput_batch_256'][HEADLINE_BACKEND]['samples_per_s']:,.0f}"
                         for k, m in models.items()) or "n/a (no model timed)"
        why = skipped.get("torch", "no model with a PyTorch twin was timed")
        print(f"inference: ours {ours} samples/s, torch n/a ({why}), ratio n/a (goal {GOAL_RATIO:g})")


# ------------------------------------------------------------------------------------------------
# the full pipeline
# ------------------------------------------------------------------------------------------------

ENSEMBLE_TOML = """
# benchmarks/inference.py: experiments/ensemble_btc.toml's model (tiny TCN classifiers of the 24-bar direction,
# 64-bar window, bootstrap members) on the built-in synthetic market, one seed, one epoch: weights for timing only
algorithm = "ensemble"
name = "bench_ensemble"
seeds = [0]
[data]
source = "synthetic"
synthetic_bars = 1500
synthetic_assets = 1
window = 64
horizon = 24
dead_band = 0.005
[train]
model = "tcn"
preset = "tiny"
task = "classification"
epochs = 1
batch_size = 128
[train.model_kwargs]
n_classes = 3
[ensemble]
members = {members}
diversity = "bootstrap"
"""

PPO_TOML = """
# benchmarks/inference.py: experiments/ppo_execution.toml's env and (default) network, a few hundred steps
algorithm = "ppo"
name = "bench_policy"
seeds = [0]
[env]
name = "execution"
[env.kwargs]
horizon = 60
[ppo]
num_envs = 8
num_steps = 16
total_timesteps = 256
update_epochs = 1
minibatch_size = 32
[evaluation]
episodes = 4
metric = "shortfall_bps"
lower_is_better = true
every_updates = 2
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "trading_jax.cli", *args]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                PYTHONUNBUFFERED="1")


def train_runs(workdir: Path, members: int) -> dict:
    """Train the tiny ensemble and PPO runs with `trading-jax train` (two processes at once); their folders."""
    runs, procs = {}, {}
    for name, text in (("ensemble", ENSEMBLE_TOML.replace("{members}", str(members))), ("policy", PPO_TOML)):
        config = workdir / f"{name}.toml"
        config.write_text(text)
        runs[name] = workdir / f"run_{name}"
        procs[name] = subprocess.Popen(_cli("train", str(config), "--out", str(runs[name]), "--overwrite", "--quiet",
                                            "--no-export", "--no-compile-cache"),
                                       cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"trading-jax train ({name}) failed with exit code {proc.returncode}: {out[-2000:]}")
    return runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(export_dir: Path):
    port = _free_port()
    proc = subprocess.Popen(_cli("serve", str(export_dir), "--port", str(port), "--no-compile-cache"), cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    return proc, port


def stop_server(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def http_latency(port: int, proc, names: list[str], arrays: list[np.ndarray], calls: int, rounds: int,
                 engine_result: dict) -> dict:
    """p50 / p99 of `POST /predict` at batch 1 from an httpx client in this process (a keep-alive connection;
    the request body is encoded to JSON once, before timing)."""
    import json

    import httpx

    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    start = time.perf_counter()
    while True:
        try:
            if client.get("/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            return {"na": f"the server exited with code {proc.returncode}: {proc.stdout.read()[-1500:]}"}
        if time.perf_counter() - start > 600:
            return {"na": "the server did not answer /health within 600 s"}
        time.sleep(0.25)
    ready_s = time.perf_counter() - start
    body = json.dumps({"inputs": {n: a.tolist() for n, a in zip(names, arrays)}}).encode()
    headers = {"content-type": "application/json"}

    def post():
        reply = client.post("/predict", content=body, headers=headers)
        if reply.status_code != 200:
            raise RuntimeError(f"POST /predict answered {reply.status_code}: {reply.text[:500]}")
        return reply

    answer = post().json()["outputs"]
    diff = max(float(np.max(np.abs(np.asarray(answer[k], np.float64) - np.asarray(v, np.float64))))
               for k, v in engine_result.items() if np.asarray(v).dtype.kind in "fiu")
    times = []
    for _ in range(rounds):
        post()
        times += [timed(post) for _ in range(max(1, calls // rounds))]
    client.close()
    return {**summary_ms(times), "server_ready_s_after_timing_start": ready_s, "request_bytes": len(body),
            "max_abs_diff_vs_engine": diff,
            "what": "httpx.Client POST /predict (keep-alive, body JSON-encoded once before timing) to `trading-jax "
                    "serve` in a subprocess (uvicorn, the engine's batching worker, default buckets)"}


def bench_pipeline(args, workdir: Path) -> dict:
    try:
        from trading_jax.export import InferenceEngine, export_pipeline, export_run, load_exported
        from trading_jax.export.pipeline import build_pipeline, reference_inputs
        from trading_jax.export.runtime import ExportError, load_onnx
    except (ImportError, AttributeError) as error:
        return {"na": f"the pipeline export is not available ({type(error).__name__}: {error})"}

    members = 4 if args.quick else 8
    print(f"pipeline: training a tiny {members}-member TCN ensemble and a PPO execution policy ...", flush=True)
    t0 = time.perf_counter()
    runs = train_runs(workdir, members)
    t1 = time.perf_counter()
    exports = {}
    for name, run in runs.items():
        exports[name] = workdir / f"export_{name}"
        export_run(run, exports[name], onnx=False, overwrite=True)
    t2 = time.perf_counter()
    pipe_dir = workdir / "export_pipeline"
    manifest = export_pipeline(exports["ensemble"], exports["policy"], pipe_dir, onnx=not args.quick, overwrite=True)
    if args.quick:
        manifest["onnx"] = {"error": "not attempted with --quick (the full run tries and records why it fails)"}
    t3 = time.perf_counter()
    server, port = start_server(pipe_dir)  # it compiles its buckets while this process compiles its own
    try:
        model = load_exported(pipe_dir)
        names = [s["name"] for s in model.inputs]
        lookback = int(model.features["lookback"])
        ref, _ = reference_inputs(model.features, lookback, rows=4)  # real bars; tiled to the batch
        x1 = [np.ascontiguousarray(r[:1]) for r in ref]
        xb = [np.ascontiguousarray(np.resize(r, (BATCH_THROUGHPUT,) + r.shape[1:])) for r in ref]
        apply, params, _ = build_pipeline(exports["ensemble"], exports["policy"], lookback=lookback)
        jitted, params = jax.jit(apply), jax.device_put(params)
        fns = {"jax_jit": lambda xs: jax.block_until_ready(jitted(params, *xs)),
               "exported_device": lambda xs: jax.block_until_ready(model.call_device(*xs)),
               "exported": lambda xs: model(*xs)}
        result = {"predictor": f"ensemble of {members} tiny TCN classifiers (experiments/ensemble_btc.toml's model, "
                               "synthetic data, one epoch)",
                  "policy": "PPO on the execution env, default actor_critic network (64, 64), a few updates",
                  "inputs": model.inputs, "outputs": [o["name"] for o in model.outputs], "lookback": lookback,
                  "params": int(manifest["weights"]["float32_bytes"] // 4), "onnx": manifest["onnx"],
                  "feature_skew": manifest["checks"].get("feature_skew"),
                  "torch": {"na": "no PyTorch twin of the pipeline (features + ensemble + policy)"}}
        try:
            session, _ = load_onnx(pipe_dir)
            in_names = [i.name for i in session.get_inputs()]
            fns["onnxruntime"] = lambda xs: session.run(None, dict(zip(in_names, xs)))
        except ExportError as error:
            result["onnx_na"] = str(error)
        result["first_call_s"] = {"batch_1": first_calls(fns, x1), f"batch_{BATCH_THROUGHPUT}": first_calls(fns, xb)}
        start = time.perf_counter()
        engine = InferenceEngine(model, buckets=(BATCH_LATENCY, BATCH_THROUGHPUT))  # warm: both buckets compiled
        result["engine"] = {"buckets": list(engine.buckets), "init_s": time.perf_counter() - start,
                            "what": "InferenceEngine(export, buckets=(1, 256)).predict({name: array}): input checks, "
                                    "bucket padding, NumPy out"}
        fns["engine"] = lambda xs: engine.predict(dict(zip(names, xs)))
        want = engine.predict(dict(zip(names, xb)))
        got = model(*xb)
        result["max_abs_diff_exported_vs_engine"] = max(
            float(np.max(np.abs(np.asarray(got[k], np.float64) - np.asarray(v, np.float64)))) for k, v in want.items())
        t4 = time.perf_counter()
        result["latency_batch_1"] = latency({k: (lambda f=f: f(x1)) for k, f in fns.items()}, args.latency_budget_s,
                                            args.min_calls, args.max_calls, args.rounds)
        result["throughput_batch_256"] = throughput({k: (lambda f=f: f(xb)) for k, f in fns.items()},
                                                    BATCH_THROUGHPUT, args.tp_budget_s, args.tp_min_calls,
                                                    args.tp_max_calls, args.tp_rounds)
        t5 = time.perf_counter()
        engine_one = engine.predict(dict(zip(names, x1)))
        result["http"] = http_latency(port, server, names, x1, args.http_calls, args.rounds, engine_one)
    finally:
        stop_server(server)
    result["seconds"] = {"train": t1 - t0, "export_runs": t2 - t1, "export_pipeline": t3 - t2,
                         "setup": t4 - t3, "timing": t5 - t4, "http": time.perf_counter() - t5}
    result["p99_backend"] = "engine"
    result["p99_ms"] = result["latency_batch_1"]["engine"]["p99_ms"]
    lat, tp = result["latency_batch_1"], result["throughput_batch_256"]
    print(f"  {result['params']:,} params, lookback {lookback} bars, inputs "
          + ", ".join(f"{s['name']} {s['shape'][1:]}" for s in model.inputs)
          + f"; ONNX {'yes' if 'onnxruntime' in fns else 'n/a (' + result['onnx'].get('error', '') + ')'}; seconds "
          + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()), flush=True)
    for name in fns:
        print(f"  {name:20s} batch 1 p50 {lat[name]['p50_ms']:8.3f} ms  p99 {lat[name]['p99_ms']:8.3f} ms   "
              f"batch 256 {tp[name]['samples_per_s']:10,.0f} samples/s", flush=True)
    http = result["http"]
    if "p99_ms" in http:
        print(f"  {'http':20s} batch 1 p50 {http['p50_ms']:8.3f} ms  p99 {http['p99_ms']:8.3f} ms", flush=True)
    else:
        print(f"  http: n/a ({http['na']})", flush=True)
    return result


if __name__ == "__main__":
    main()
