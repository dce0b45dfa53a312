"""What every benchmark shares: the device name, the results path, the `--quick` flag, peer checks.

The benchmarks run as scripts, so `benchmarks/` is on sys.path and they import this as `_common`.

Results files (docs/benchmarks.md):

    benchmarks/results/NAME-DEVICE.json         a full run: the record, committed
    benchmarks/results/NAME-DEVICE-quick.json   a `--quick` run (smaller sizes, fewer repeats), marked
                                                "quick": true; never overwrites the full run's file and
                                                is ignored by git (a smoke check, not a figure to quote)

DEVICE is `cpu`, or the accelerator's short name from `jax.devices()[0].device_kind` (`h100`, `h200`,
`a100`, `l4`, `tpu-v5-lite`, ...).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# device_kind substrings -> short name, checked in order (the first match wins)
_KNOWN_KINDS = ("h200", "h100", "gh200", "b200", "a100", "a10g", "l40s", "l4", "v100", "t4")


def device_name(device=None) -> str:
    """`cpu`, or a short lower-case name of the accelerator (`h100`, `h200`, ...) for results file names.

    Args:
        device: a `jax.Device` (default: `jax.devices()[0]`; this initialises the backend).
    """
    if device is None:
        import jax

        device = jax.devices()[0]
    if device.platform == "cpu":
        return "cpu"
    kind = str(getattr(device, "device_kind", device.platform)).lower()
    for name in _KNOWN_KINDS:
        if re.search(rf"(?<![a-z0-9]){name}(?![0-9])", kind):
            return name
    kind = re.sub(r"^(nvidia|amd|google)\s+", "", kind)
    return re.sub(r"[^a-z0-9]+", "-", kind).strip("-") or device.platform


def results_path(name: str, quick: bool = False, device: str | None = None) -> Path:
    """`benchmarks/results/NAME-DEVICE.json`, or `NAME-DEVICE-quick.json` for a `--quick` run."""
    return RESULTS / f"{name}-{device or device_name()}{'-quick' if quick else ''}.json"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """`--quick` and `--out` (default: `results_path(NAME, quick)`, resolved by `output_path`)."""
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats, to check that the benchmark runs (results go to "
                             "NAME-DEVICE-quick.json, never over the full run's file)")
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/NAME-DEVICE[-quick].json)")


def output_path(name: str, args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else results_path(name, args.quick)


def write_results(path: Path, results: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}", flush=True)


def missing(*modules: str) -> str | None:
    """None when every module imports, else the name of the first one that is not installed."""
    for module in modules:
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except (ImportError, ValueError):
            return module
    return None


def skip_note(peer: str, pip_name: str, module: str | None = None) -> str:
    """The note stored in a results file's "skipped" table when a peer is not installed."""
    what = f"{module} is not installed" if module else "not installed"
    return f"{peer} skipped: {what} (pip install {pip_name}; see docs/benchmarks.md)"


def version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(*packages: str) -> dict:
    """The machine record of a results file: platform, CPU count, Python, JAX backend and device, XLA flags, the
    versions of `packages` (distribution names) and PyTorch's version and thread settings (None if absent)."""
    import os
    import platform

    import jax

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
            "backend": jax.default_backend(), "device": str(jax.devices()[0]),
            "device_kind": jax.devices()[0].device_kind, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "xla_cpu_threads": f"default intra-op pool, one per core ({os.cpu_count()})",
            **{name: version(name) for name in packages}}
    try:
        import torch

        info.update(torch=torch.__version__, torch_num_threads=torch.get_num_threads(),
                    torch_num_interop_threads=torch.get_num_interop_threads(),
                    torch_cuda=bool(torch.cuda.is_available()))
    except ImportError:
        info["torch"] = None
    return info
