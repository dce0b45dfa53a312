"""Run every benchmark in benchmarks/, each in its own process, and record how each one went.

Benchmarks are discovered by glob: every `benchmarks/*.py` whose name does not start with `_` (this
file excepted); features, train_step, env_throughput and ppo run first, in that order, any others after
them alphabetically. Each runs as `python benchmarks/NAME.py [--quick]` in a subprocess (its own process
group) with a per-benchmark timeout; a failure or a timeout is recorded and the next benchmark runs.
Each benchmark's last printed line is its summary (`NAME: ours X UNIT, PEER Y UNIT, ratio Z (goal G)`),
echoed here with the peers it skipped because they are not installed.

Writes benchmarks/results/run_all-DEVICE.json (run_all-DEVICE-quick.json with --quick, as the benchmarks'
own quick results never overwrite a full run's file) with each benchmark's status, seconds, summary
line, results file and skipped peers, and exits 1 when any benchmark failed or timed out.

    python benchmarks/run_all.py --quick                 # every benchmark, small sizes (< 8 min on a GPU)
    python benchmarks/run_all.py --quick --only ppo      # one (repeatable, or comma-separated)
    python benchmarks/run_all.py                         # full runs: the committed figures (an hour or more on CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import ROOT, results_path
from _load import record_load

HERE = Path(__file__).resolve().parent
FIRST = ("features", "train_step", "env_throughput", "ppo")
TIMEOUT_S = {True: 300.0, False: 4 * 3600.0}  # per benchmark, by --quick
TAIL_LINES = 40


def discover() -> list[str]:
    """Names of the benchmarks in benchmarks/: the FIRST ones in that order, then the others alphabetically."""
    names = [p.stem for p in HERE.glob("*.py") if not p.name.startswith("_") and p.stem != "run_all"]
    return sorted(names, key=lambda n: (FIRST.index(n) if n in FIRST else len(FIRST), n))


def probe_device(timeout: float = 120.0) -> dict:
    """The device the benchmarks will see, asked in a throw-away process (initialising a GPU backend here
    would hold accelerator memory that the benchmarks need)."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import jax; from _common import device_name; "
            "d = jax.devices()[0]; print(json.dumps({'device': device_name(d), 'device_kind': d.device_kind, "
            "'backend': jax.default_backend(), 'device_count': jax.device_count(), 'jax': jax.__version__}))")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(HERE)], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as error:
        return {"device": "unknown", "error": f"{type(error).__name__}: {error}"}


def _pump(stream, sink: list[str], echo: bool, prefix: str) -> None:
    for line in stream:
        sink.append(line.rstrip("\n"))
        if echo:
            print(f"{prefix}{line}", end="", flush=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the benchmark's process group, then SIGKILL whatever is left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_one(name: str, quick: bool, timeout: float, device: str, echo: bool) -> dict:
    """Run benchmarks/NAME.py in a subprocess; its status, seconds, summary line, results file, skipped peers."""
    cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if quick else [])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out_lines: list[str] = []
    err_lines: list[str] = []
    start_wall, start = time.time(), time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, out_lines, echo, f"  [{name}] "), daemon=True),
             threading.Thread(target=_pump, args=(proc.stderr, err_lines, echo, f"  [{name} stderr] "), daemon=True)]
    for pump in pumps:
        pump.start()
    try:
        returncode = proc.wait(timeout)
        status = "ok" if returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        returncode, status = proc.returncode, "timeout"
    except KeyboardInterrupt:
        _kill_group(proc)
        raise
    for pump in pumps:
        pump.join(5.0)
    seconds = time.monotonic() - start

    summary = next((line.strip() for line in reversed(out_lines) if line.strip()), "")
    record = {"status": status, "returncode": returncode, "seconds": round(seconds, 1), "summary": summary,
              "command": f"python benchmarks/{name}.py" + (" --quick" if quick else "")}
    if status == "timeout":
        record["note"] = f"killed after the {timeout:.0f} s timeout"
    out = results_path(name, quick, device)
    if out.exists() and out.stat().st_mtime >= start_wall - 1:
        record["results_file"] = str(out.relative_to(ROOT))
        try:
            skipped = json.loads(out.read_text()).get("skipped") or {}
            if skipped:
                record["skipped"] = skipped
        except (OSError, ValueError):
            pass
    if status != "ok":
        record["stdout_tail"] = out_lines[-TAIL_LINES:]
        record["stderr_tail"] = err_lines[-TAIL_LINES:]
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark (small sizes)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this benchmark (repeatable, or comma-separated)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per benchmark before it is killed (default: 300 with --quick, 4 h without)")
    parser.add_argument("--verbose", "-v", action="store_true", help="echo each benchmark's output as it runs")
    parser.add_argument("--out", default=None, help="default benchmarks/results/run_all-DEVICE[-quick].json")
    args = parser.parse_args(argv)

    available = discover()
    names = available
    if args.only:
        names = [n.strip().removesuffix(".py") for item in args.only for n in item.split(",") if n.strip()]
        unknown = [n for n in names if n not in available]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; available: {', '.join(available)}")
    timeout = args.timeout or TIMEOUT_S[args.quick]

    load_before = os.getloadavg()
    probe = probe_device()
    device = probe["device"]
    mode = "quick" if args.quick else "full"
    print(f"run_all: {len(names)} benchmark(s) ({', '.join(names)}), {mode} mode, device {device} "
          f"({probe.get('device_kind', '?')}), timeout {timeout:.0f} s each", flush=True)

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.monotonic()
    records: dict[str, dict] = {}
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", flush=True)
        record = run_one(name, args.quick, timeout, device, args.verbose)
        records[name] = record
        print(f"[{i}/{len(names)}] {name}: {record['status']} in {record['seconds']:.1f} s"
              + (f" (exit code {record['returncode']})" if record["status"] == "failed" else "")
              + (f" ({record['note']})" if "note" in record else ""), flush=True)
        print(f"    {record['summary'] or '(no output)'}", flush=True)
        for note in record.get("skipped", {}).values():
            print(f"    skipped: {note}", flush=True)
        if record["status"] != "ok":
            for line in record["stderr_tail"][-8:]:
                print(f"    | {line}", flush=True)
    total = time.monotonic() - t0

    failed = [n for n, r in records.items() if r["status"] != "ok"]
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "python": platform.python_version(), **probe}
    record_load(machine, load_before)
    results = {"benchmark": "run_all", "quick": args.quick, "started": started, "total_seconds": round(total, 1),
               "timeout_s_per_benchmark": timeout, "machine": machine, "ok": not failed, "failed": failed,
               "benchmarks": records}
    out = Path(args.out) if args.out else results_path("run_all", args.quick, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    print(f"run_all: {len(records) - len(failed)} of {len(records)} ok"
          + (f", failed: {', '.join(failed)}" if failed else "") + f", {total:.0f} s in all ({mode}, {device})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
