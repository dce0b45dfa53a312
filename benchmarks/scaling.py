"""Multi-process scale-out on jax.distributed: PPO's throughput with 1, 2 and 4 processes on this machine (weak
scaling), and Ray Tune's overhead per trial against a bare vmapped sweep.

Weak scaling: every process steps the same number of envs (`--envs-per-process`), so P processes step P times as
many; the global PPO update is one data-parallel program over a P-device mesh (one CPU device per process, gloo
all-reduces), exactly what `trading-jax train --distributed` runs. Each process is limited to one compute thread
(XLA's Eigen pool off), so the 1-process baseline uses one core and P processes use P: the figure is what the
processes, the collectives and the coordinator cost, not how XLA's thread pool shares cores. Throughput is env
steps per second of the steady state (after compilation), the median of `--repeats` timed chunks of `--updates`
updates; weak-scaling efficiency(P) = throughput(P) / (P * throughput(1)). With fewer cores than processes the
processes share cores and the efficiency falls below 1 for that reason: `cpu_count` is recorded beside it.
PPO's running observation and reward normalisers update from the global env batch at every env step (an
all-reduce per step, so that P processes compute what one does); the sweep is repeated with them off
(`runs_without_normalizers`) to show what those per-step collectives cost.

Ray Tune (needs `pip install 'trading-jax[tune]'`; skipped with a note otherwise): the same trials trained as ONE
vmapped population (`trainer.population(...)` over a hyperparameter grid) and through `trading-jax tune` in an
embedded local Ray (`benchmarks/_tune_overhead.py`); the overhead per trial is (Tune - bare) / trials.

Writes benchmarks/results/scaling-DEVICE.json and ends with one summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import add_common_arguments, machine_info, output_path, write_results

HERE = Path(__file__).resolve().parent
GOAL_EFFICIENCY = 0.8  # at 2 processes, each on its own core
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def worker(args) -> None:
    """One process of a P-process PPO run; process 0 prints `RESULT {json}`."""
    import jax

    from trading_jax import distributed, parallel
    from trading_jax.rl.ppo import PPOConfig, make_trainer

    settings = distributed.resolve_settings(f"127.0.0.1:{args.port}", args.processes, args.rank)
    distributed.initialize(settings, timeout_s=120)
    envs = args.envs_per_process * args.processes
    config = PPOConfig(env="trading", num_envs=envs, num_steps=args.num_steps,
                       total_timesteps=envs * args.num_steps * args.updates * (args.repeats + 1), update_epochs=1,
                       minibatch_size=envs * args.num_steps // 4, network_preset="tiny",
                       normalize_observations=not args.no_normalizers, normalize_rewards=not args.no_normalizers)
    mesh = parallel.make_mesh() if args.processes > 1 else None
    with parallel.use_mesh(mesh):
        trainer = make_trainer(config)
        start = time.perf_counter()
        state = trainer.init(jax.random.key(0))
        state, _ = trainer.run(state, args.updates)  # compiles
        jax.block_until_ready(state.params)
        compile_s = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            state, _ = trainer.run(state, args.updates)
            jax.block_until_ready(state.params)
            times.append(time.perf_counter() - start)
    if distributed.is_primary():
        steps = envs * args.num_steps * args.updates
        print("RESULT " + json.dumps({"processes": args.processes, "envs": envs, "steps_per_chunk": steps,
                                      "seconds": times, "median_s": statistics.median(times),
                                      "steps_per_s": steps / statistics.median(times),
                                      "first_chunk_with_compile_s": compile_s}), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, args) -> dict:
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + ONE_THREAD).strip()}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--processes", str(processes), "--port", str(port),
           "--envs-per-process", str(args.envs_per_process), "--num-steps", str(args.num_steps),
           "--updates", str(args.updates), "--repeats", str(args.repeats)] + (["--no-normalizers"] if args.no_normalizers else [])
    procs = [subprocess.Popen(cmd + ["--rank", str(rank)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for rank in range(processes)]
    outputs = [p.communicate(timeout=1800)[0] for p in procs]
    for p, out in zip(procs, outputs):
        if p.returncode != 0:
            raise RuntimeError(f"{processes}-process run failed:\n{out[-2000:]}")
    line = next(x for x in outputs[0].splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--counts", default="1,2,4", help="process counts to run (default: %(default)s)")
    parser.add_argument("--envs-per-process", type=int, default=256)
    parser.add_argument("--num-steps", type=int, default=64)
    parser.add_argument("--updates", type=int, default=4, help="PPO updates per timed chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tune-trials", type=int, default=4)
    parser.add_argument("--no-tune", action="store_true", help="skip the Ray Tune overhead")
    parser.add_argument("--no-normalizers", action="store_true", help=argparse.SUPPRESS)
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.envs_per_process, args.num_steps, args.updates, args.repeats = 64, 32, 2, 3
        args.tune_trials = 2
    counts = [int(c) for c in args.counts.split(",")]

    def sweep(no_normalizers: bool) -> dict:
        args.no_normalizers = no_normalizers
        out = {}
        for p in counts:
            what = " (observation and reward normalisers off)" if no_normalizers else ""
            print(f"scaling: {p} process(es) x {args.envs_per_process} envs{what} ...", flush=True)
            out[p] = launch(p, args)
            print(f"  {out[p]['steps_per_s']:,.0f} env steps/s", flush=True)
        base = out[counts[0]]["steps_per_s"] / counts[0]
        for p, r in out.items():
            r["weak_scaling_efficiency"] = r["steps_per_s"] / (p * base)
        return out

    runs = sweep(False)
    # PPO's running normalisers update from the global env batch at every env step: one all-reduce per step.
    # The same sweep with them off shows what those per-step collectives cost.
    plain = sweep(True)

    tune = None
    skipped = {}
    import importlib.util

    if args.no_tune or importlib.util.find_spec("ray") is None:
        skipped["ray_tune"] = ("Ray Tune overhead skipped: --no-tune" if args.no_tune else
                               "Ray Tune overhead skipped: Ray is not installed (pip install 'trading-jax[tune]')")
    else:
        from _tune_overhead import tune_overhead

        print(f"scaling: Ray Tune overhead over {args.tune_trials} trials ...", flush=True)
        tune = tune_overhead(trials=args.tune_trials)

    import jax

    two = runs.get(2, {}).get("weak_scaling_efficiency")
    results = {"benchmark": "scaling", "quick": args.quick, "machine": machine_info("jax", "ray"),
               "cpu_count": os.cpu_count(), "devices_per_process": 1, "xla_flags_per_process": ONE_THREAD,
               "sizes": {"envs_per_process": args.envs_per_process, "num_steps": args.num_steps,
                         "updates_per_chunk": args.updates, "repeats": args.repeats, "env": "trading",
                         "network_preset": "tiny"},
               "runs": {str(p): r for p, r in runs.items()},
               "runs_without_normalizers": {str(p): r for p, r in plain.items()}, "ray_tune": tune, "skipped": skipped,
               "ours": {"what": "weak-scaling efficiency at 2 processes", "value": two},
               "peer": {"what": "1 process (the baseline of the efficiency)", "steps_per_s": runs[counts[0]]["steps_per_s"]},
               "goal": {"weak_scaling_efficiency_at_2": GOAL_EFFICIENCY}, "backend": jax.default_backend()}
    write_results(output_path("scaling", args), results)
    top = max(counts)
    tune_text = (f"; Ray Tune {tune['overhead_per_trial_s']:.2f} s overhead per trial over a bare vmapped sweep"
                 if tune else "; Ray Tune skipped (not installed)")
    print(f"scaling: ours {runs[top]['steps_per_s']:,.0f} env steps/s at {top} processes (weak-scaling efficiency "
          + ", ".join(f"{p}p {r['weak_scaling_efficiency']:.2f}" for p, r in runs.items())
          + "; normalisers off " + ", ".join(f"{p}p {r['weak_scaling_efficiency']:.2f}" for p, r in plain.items())
          + f"), 1 process {runs[counts[0]]['steps_per_s']:,.0f} env steps/s, ratio "
          f"{(two if two is not None else float('nan')):.2f} at 2 processes (goal {GOAL_EFFICIENCY}) on "
          f"{os.cpu_count()} cores{tune_text}")


if __name__ == "__main__":
    main()
