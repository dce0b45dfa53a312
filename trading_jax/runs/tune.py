"""Hyperparameter search on Ray Tune: `trading-jax tune experiments/NAME.toml`.

Any experiment file whose algorithm trains through `trading_jax.loop.fit` (supervised, ppo, sac, td3, ddpg, dqn,
maml, portfolio, ...) may carry a `[tune]` table; `trading-jax train` ignores it. Example:

    [tune]
    metric = "val_loss"          # a key of fit's per-chunk record ("val_loss", "episode_return", ...)
    mode = "min"                 # or "max"
    scheduler = "asha"           # "asha" | "pbt" | "fifo"
    num_samples = 4              # repeats of the space (every grid point num_samples times)
    max_concurrent = 2           # trials at once (0: as many as the resources allow)
    time_budget_s = 3600         # optional: stop starting and running trials after this long
    address = ""                 # "" = embedded local Ray (no cluster); "auto" or "HOST:PORT" attaches
    cpus_per_trial = 1
    gpus_per_trial = 0           # 1: one trial per device (its seeds fill it where they train as one vmapped population)
    grace_period = 2             # ASHA: units (epochs, updates) before a trial may be stopped
    reduction_factor = 3         # ASHA
    max_t = 1000000              # ASHA: stop any trial at this many units (default: never before its own end)
    perturbation_interval = 4    # PBT: units between exploit/explore steps (and checkpoints)
    synch = false                # PBT: true waits for every trial at each perturbation (reproducible exploits)
    [tune.space]
    "train.learning_rate" = {loguniform = [1e-4, 1e-2]}
    "train.weight_decay" = {grid = [0.0, 1e-4]}

A space key is a dotted path into the file; its value one of `{grid = [...]}`, `{choice = [...]}`,
`{uniform = [a, b]}`, `{loguniform = [a, b]}`, `{randint = [a, b]}` (b excluded). Every value a path can take
is checked by loading the file with it through the algorithm's own `load`, so every mistake is a one-line
`ConfigError` before Ray starts.

A trial is the file with the sampled values, run by `trading_jax.runs.run_experiment` into
`RUN/trials/<trial>/` (its own run folder: checkpoints, TensorBoard, results.md). Where the algorithm's runner
trains its seeds as ONE vmapped population (supervised with `vmap_seeds`, MAML, portfolio, the PPO ensemble), one
trial fills a device; the RL runners (PPO, SAC, TD3, DDPG, DQN) train a trial's seeds one after another. It reports fit's record to Tune after every chunk (through
`trading_jax.loop.chunk_hooks`), with `units` = units trained (the schedulers' time axis). PBT: a trial reports
its Orbax checkpoint folder every `perturbation_interval` units; an exploited trial restarts in a fresh folder
(`RUN/trials/<trial>-r<k>/`) from a copy of the donor's checkpoint, with its own (mutated) hyperparameters put
into the restored state; its `restored.json` names the checkpoint and the hyperparameters it changed. (With
`synch = true` every trial pauses at a perturbation, so the top trials restart too, from their own checkpoints.)

The search writes into `RUN` (default `runs/<name>_tune`): `results.json`, `results.md` (every trial, best
first), `best.toml` (the file with the best trial's values and without `[tune]`: `trading-jax train` runs it),
Ray's own logs with TensorBoard event files under `RUN/tune/`, and each trial's run folder. best.toml is named
`<name>_tuned`, so training it does not collide with a run of the original file. The best trial is
the one whose LAST report has the best metric (never a test-split number). Searcher: Tune's own
(`BasicVariantGenerator`: exact grids and random samples); `searcher = "optuna"` uses Optuna's TPE when Optuna
is installed (no `grid` entries then).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any, Mapping

from trading_jax.logging import get_logger
from trading_jax.runs import schema as S
from trading_jax.runs.results import write_results

__all__ = ["TuneSpec", "Param", "RayMissingError", "ClusterError", "SearchInterrupted", "load_tune", "apply_overrides",
           "run_search", "to_toml", "RAY_MISSING"]

log = get_logger(__name__)

RAY_MISSING = "trading-jax tune needs Ray: pip install 'trading-jax[tune]'"
KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
SCHEDULERS = ("asha", "pbt", "fifo")
SEARCHERS = ("basic", "optuna")
TRIALS = "trials"
TUNE_DIR = "tune"


class RayMissingError(RuntimeError):
    """Ray is not installed (the message says how to install it)."""


class ClusterError(RuntimeError):
    """A Ray cluster address that cannot be reached (the message is one line: the address and what to do)."""


class SearchInterrupted(RuntimeError):
    """Ctrl-C: Ray was stopped; the message says how to resume."""


# --------------------------------------------------------------------------------------------- schema


@dataclasses.dataclass(frozen=True)
class Param:
    """One entry of `[tune.space]`: a dotted `path` into the file, its `kind` (`KINDS`) and `values`."""

    path: str
    kind: str
    values: tuple

    def points(self) -> tuple:
        """Values that bound what the entry can sample (every listed value; a range's ends), for validation."""
        if self.kind in ("grid", "choice"):
            return self.values
        if self.kind == "randint":
            return (self.values[0], self.values[1] - 1)
        return self.values


@dataclasses.dataclass(frozen=True)
class TuneSpec:
    """The `[tune]` table (module docstring)."""

    metric: str
    space: tuple[Param, ...] = ()
    mode: str = "min"
    scheduler: str = "asha"
    searcher: str = "basic"
    num_samples: int = 1
    time_budget_s: float | None = None
    max_concurrent: int = 0
    address: str = ""
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_t: int = 1_000_000
    perturbation_interval: int = 1
    synch: bool = False


TUNE_CHECKS = {"mode": S.one_of("min", "max"), "scheduler": S.one_of(*SCHEDULERS), "searcher": S.one_of(*SEARCHERS),
               "num_samples": S.at_least(1), "time_budget_s": S.positive, "max_concurrent": S.at_least(0),
               "cpus_per_trial": S.non_negative, "gpus_per_trial": S.non_negative, "grace_period": S.at_least(1),
               "reduction_factor": lambda x: None if isinstance(x, (int, float)) and math.isfinite(x) and x > 1
               else "expected a number > 1", "max_t": S.at_least(1), "perturbation_interval": S.at_least(1)}


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _param(path: str, entry, file) -> Param:
    """One `[tune.space]` entry, its shape and ranges checked (not yet its path: `check_space`)."""
    where = f"{file}: [tune.space] {path!r}"
    if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in KINDS:
        raise S.ConfigError(f"{where} = {entry!r}: expected one of " + ", ".join(f"{{{k} = [...]}}" for k in KINDS))
    (kind, values), = entry.items()
    if not isinstance(values, list) or not values:
        raise S.ConfigError(f"{where}: {kind} = {values!r}: expected a non-empty list")
    if kind in ("grid", "choice"):
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise S.ConfigError(f"{where}: {kind} = {values!r}: expected distinct values")
        return Param(path, kind, tuple(values))
    if len(values) != 2 or not all(_number(v) for v in values):
        raise S.ConfigError(f"{where}: {kind} = {values!r}: expected [low, high], two finite numbers")
    low, high = values
    if not low < high:
        raise S.ConfigError(f"{where}: {kind} = {values!r}: expected low < high")
    if kind == "loguniform" and low <= 0:
        raise S.ConfigError(f"{where}: {kind} = {values!r}: expected 0 < low < high")
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        raise S.ConfigError(f"{where}: {kind} = {values!r}: expected two integers [low, high) (high excluded)")
    return Param(path, kind, (low, high))


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any], file="<experiment>") -> dict:
    """A deep copy of `raw` (without `[tune]`) with each dotted path set to its value (missing tables are
    created; a path through a non-table is a `ConfigError`)."""
    out = {k: copy.deepcopy(v) for k, v in raw.items() if k != "tune"}
    for path, value in overrides.items():
        *tables, key = path.split(".")
        node = out
        for i, name in enumerate(tables):
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise S.ConfigError(f"{file}: [tune.space] {path!r}: {'.'.join(tables[:i + 1])} is not a table")
            node = child
        node[key] = value
    return out


def _algorithm_load(raw: Mapping[str, Any], file):
    """The experiment the algorithm's own `load` makes of `raw` (no `[tune]`)."""
    import importlib

    from trading_jax.runs import ALGORITHMS

    algorithm = raw.get("algorithm", "supervised")
    if algorithm not in ALGORITHMS:
        raise S.ConfigError(f"{file}: algorithm = {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    return importlib.import_module(ALGORITHMS[algorithm]).load(dict(raw), str(file))


def check_space(raw: Mapping[str, Any], space: tuple[Param, ...], file) -> None:
    """Load the file once per value each path can take (range ends for ranges) with the algorithm's `load`:
    an unknown path or an out-of-range value is a one-line `ConfigError` naming `[tune.space]` and the path."""
    prefix = f"{file}: "
    for param in space:
        if not param.path or any(not part for part in param.path.split(".")):
            raise S.ConfigError(f"{file}: [tune.space] {param.path!r}: expected a dotted path such as "
                                "\"train.learning_rate\"")
        for value in param.points():
            try:
                _algorithm_load(apply_overrides(raw, {param.path: value}, file), file)
            except S.ConfigError as error:
                message = str(error)
                message = message[len(prefix):] if message.startswith(prefix) else message
                raise S.ConfigError(f"{file}: [tune.space] {param.path!r} = {value!r} does not load: {message}") \
                    from None


def load_tune(raw: Mapping[str, Any], file) -> TuneSpec:
    """The `[tune]` table of a parsed experiment file, every key, range and space path checked."""
    if "tune" not in raw:
        raise S.ConfigError(f"{file}: no [tune] table: add one with metric and [tune.space] (see "
                            "experiments/tune_default.toml)")
    table = raw["tune"]
    if not isinstance(table, dict):
        raise S.ConfigError(f"{file}: tune must be a table ([tune])")
    table = dict(table)
    space_table = table.pop("space", None)
    if not isinstance(space_table, dict) or not space_table:
        raise S.ConfigError(f"{file}: [tune.space] needs one or more entries such as "
                            "\"train.learning_rate\" = {loguniform = [1e-4, 1e-2]}")
    spec = S.build(TuneSpec, table, file, "tune", TUNE_CHECKS, skip=("space",))
    space = tuple(_param(path, entry, file) for path, entry in space_table.items())
    if spec.searcher == "optuna" and any(p.kind == "grid" for p in space):
        raise S.ConfigError(f"{file}: [tune] searcher = \"optuna\" samples; it cannot run grid entries "
                            f"({', '.join(p.path for p in space if p.kind == 'grid')}): use choice, or searcher = "
                            "\"basic\"")
    if spec.scheduler == "pbt" and spec.searcher == "optuna":
        raise S.ConfigError(f"{file}: [tune] scheduler = \"pbt\" mutates the hyperparameters itself: use searcher = "
                            "\"basic\" with it")
    check_space(raw, space, file)
    return dataclasses.replace(spec, space=space)


# ----------------------------------------------------------------------------------------- TOML out


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def _is_table_array(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """`data` (what `tomllib` reads) written back as TOML: scalars first, then `[tables]` and `[[arrays]]`."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items()
             if not isinstance(v, dict) and not _is_table_array(v)]
    for key, value in data.items():
        name = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
        if isinstance(value, dict):
            body = to_toml(value, name)
            lines += ["", f"[{name}]", body] if body else ["", f"[{name}]"]
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{name}]]", to_toml(item, name)]
    return "\n".join(line for line in lines).strip("\n") + ("\n" if not prefix else "")


# ------------------------------------------------------------------------------------------------ Ray


def import_ray():
    """`ray` (with `ray.tune`), or `RayMissingError` with the install line."""
    try:
        import ray
        import ray.tune
    except ImportError:
        raise RayMissingError(RAY_MISSING) from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """`(host, port)` of "HOST:PORT" or "ray://HOST:PORT"; None for "auto"/"local"."""
    if address in ("auto", "local"):
        return None
    from trading_jax.distributed import DistributedError, check_address

    try:
        return check_address(address.split("://", 1)[1] if "://" in address else address, "Ray")
    except DistributedError:
        raise ClusterError(f"Ray address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:10001 or "
                           "\"auto\"; leave it out for the embedded local mode") from None


def probe_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast, in one line, if nothing listens at a cluster address (before `ray.init` waits for it)."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ClusterError(f"no Ray cluster at {address} ({reason}): start one there with `ray start --head`, "
                           "check the address, or leave the address out to run Ray locally (embedded)") from None


def start_ray(address: str = "", num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Connect to `address`, or start an embedded local Ray; returns True when this call started Ray
    (the caller shuts it down). A Ray already initialised in this process is used as it is."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address:
        probe_address(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ClusterError(f"cannot attach to the Ray cluster at {address} ({first}): check it runs "
                               "(`ray status` there), or leave the address out to run Ray locally") from None
        return True
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", configure_logging=False)
    return True


def _domain(tune, param: Param):
    kind, values = param.kind, param.values
    if kind == "grid":
        return tune.grid_search(list(values))
    if kind == "choice":
        return tune.choice(list(values))
    return getattr(tune, kind)(*values)


def _mutation(tune, param: Param):
    """What PBT resamples a path from (a list or a Tune domain)."""
    return list(param.values) if param.kind in ("grid", "choice") else _domain(tune, param)


def _with_hparams(state, fresh):
    """`state` with `fresh`'s `hparams` (NamedTuple, flax struct or dataclass states); unchanged without one."""
    if not hasattr(fresh, "hparams") or not hasattr(state, "hparams"):
        return state
    if hasattr(state, "_replace"):
        return state._replace(hparams=fresh.hparams)
    if hasattr(state, "replace"):
        return state.replace(hparams=fresh.hparams)
    return dataclasses.replace(state, hparams=fresh.hparams)


def _hparam_values(state) -> dict:
    """`{path: list}` of a state's hyperparameters (for restored.json)."""
    import jax
    import numpy as np

    leaves = jax.tree_util.tree_flatten_with_path(getattr(state, "hparams", None))[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf, np.float64).tolist() for path, leaf in leaves}


def _metric_error(file, metric: str, keys) -> str:
    return (f"{file}: [tune] metric = {metric!r}: the run never reports it; its record has "
            f"{', '.join(sorted(keys)) or 'nothing'}")


def trial(config: Mapping[str, Any], *, raw: Mapping[str, Any], file: str, root: str, metric: str,
          checkpoint_every: int | None = None, cwd: str | None = None, cache_dir: str | None = None) -> None:
    """One Ray Tune trial (a function trainable): the file with `config`'s values, trained by `run_experiment`
    into `root/trials/<trial>/`, reporting fit's record (plus `units`) to Tune after every chunk.

    Args:
        config: `{dotted path: value}` sampled by Tune.
        raw: the parsed experiment file; file: its name (for errors).
        root: the search's run folder (absolute).
        metric: the metric the search optimises (a missing one is a one-line `ConfigError` at the first report).
        checkpoint_every: report the trial's checkpoint folder every this many units (PBT), else never.
        cwd: the working directory data paths are relative to (the driver's).
        cache_dir: the driver's JAX persistent compilation cache folder, if any.
    """
    from ray import tune

    from trading_jax.loop import chunk_hooks
    from trading_jax.runs import run_experiment

    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    if cache_dir:
        import jax

        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    name = tune.get_context().get_trial_name()
    experiment = _algorithm_load(apply_overrides(raw, dict(config), file), file)
    folders = Path(root) / TRIALS
    folder = folders / name
    restored = tune.get_checkpoint()
    if restored is not None:  # PBT exploit (or a restarted trial): continue from the reported checkpoint
        k = 1
        while (folders / f"{name}-r{k}").exists():
            k += 1
        folder = folders / f"{name}-r{k}"
        folder.mkdir(parents=True)
        with restored.as_directory() as source:
            shutil.copytree(source, folder / "checkpoints")


    def on_restore(state, fresh):  # put this trial's hyperparameters in; after a Tune checkpoint, say so
        new = _with_hparams(state, fresh)
        if restored is not None:
            before, now = _hparam_values(state), _hparam_values(new)
            (folder / "restored.json").write_text(json.dumps(
                {"checkpoint": restored.path, "changed": {k: [before[k], v] for k, v in now.items() if before.get(k) != v},
                 "hparams": now}) + "\n")
        return new
    seen = {"first": True, "offset": 0, "previous": 0, "saved": None}

    def on_chunk(record, units, state):
        if not record:
            return
        if seen["first"] and metric not in record:
            raise S.ConfigError(_metric_error(file, metric, record))
        seen["first"] = False
        if units < seen["previous"]:  # a runner with several fits (e.g. seeds one after another): keep time moving
            seen["offset"] += seen["previous"]
        seen["previous"] = units
        done = seen["offset"] + units
        values = {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}
        values.update(units=done, folder=folder.name)
        if seen["saved"] is None:
            seen["saved"] = done - done % checkpoint_every if checkpoint_every else 0
        if checkpoint_every and done - seen["saved"] >= checkpoint_every and (folder / "checkpoints").exists():
            seen["saved"] = done
            tune.report(values, checkpoint=tune.Checkpoint.from_directory(str(folder / "checkpoints")))
        else:
            tune.report(values)

    with chunk_hooks(on_chunk=on_chunk, on_restore=on_restore):
        run_experiment(experiment, folder, show_progress=False)


# ------------------------------------------------------------------------------------------- search


def _record(raw: Mapping[str, Any], spec: TuneSpec) -> dict:
    """What the run folder's config.json keeps (a changed file is refused on rerun): the file without the
    cluster address (attaching elsewhere is the same search)."""
    kept = copy.deepcopy(dict(raw))
    kept["tune"] = {k: v for k, v in kept["tune"].items() if k != "address"}
    return kept


def _one_line(error) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b", line):
            return line[:300]
    return (lines[-1] if lines else type(error).__name__)[:300]


def _status(result, folder: Path | None, scheduler: str) -> tuple[str, str]:
    """`(status, reason)` of one trial: finished, failed (the run says FAILED), stopped early, errored."""
    if result.error is not None:
        return "errored", _one_line(result.error)
    report = folder / "results.json" if folder is not None else None
    if report is not None and report.exists():
        try:
            status = json.loads(report.read_text()).get("status", "ok")
        except ValueError:
            status = "ok"
        if status != "ok":
            return "finished", f"the run says {status}"
        return "finished", ""
    if scheduler == "fifo":
        return "stopped", "time budget"
    return "stopped early", f"by {scheduler.upper()}"


def _trials(grid, spec: TuneSpec, root: Path) -> list[dict]:
    """One record per trial: overrides, the metric's last and best value, units, status, seconds, folder."""
    rows = []
    sign = 1.0 if spec.mode == "min" else -1.0
    for result in grid:
        name = Path(result.path).name
        history = result.metrics_dataframe
        values = []
        if history is not None and spec.metric in history:
            values = [float(v) for v in history[spec.metric].tolist()]
        finite = [v for v in values if math.isfinite(v)]
        metrics = result.metrics or {}
        folder_name = metrics.get("folder") or name
        folder = root / TRIALS / folder_name
        status, reason = _status(result, folder if folder.exists() else None, spec.scheduler)
        rows.append({
            "trial": name, "overrides": {p.path: result.config.get(p.path) for p in spec.space},
            "last": values[-1] if values else None, "best": (min(finite, key=lambda v: sign * v) if finite else None),
            "units": metrics.get("units"), "reports": len(values), "status": status, "reason": reason,
            "seconds": metrics.get("time_total_s"), "folder": str(folder.relative_to(root)) if folder.exists() else None,
        })
    return sorted(rows, key=lambda r: _rank(r, sign))


def _rank(row: dict, sign: float):
    last = row["last"]
    ok = last is not None and math.isfinite(last) and row["status"] != "errored"
    return (0, sign * last) if ok else (1, 0.0)


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def results_markdown(name: str, spec: TuneSpec, rows: list[dict], best: dict | None, address: str) -> str:
    """The search's results.md: settings, then one row per trial, best first."""
    paths = [p.path for p in spec.space]
    lines = [f"# {name}: hyperparameter search", "",
             f"Ray Tune, scheduler {spec.scheduler.upper()}, searcher {spec.searcher}, {len(rows)} trials on "
             f"{address or 'an embedded local Ray'}; metric {spec.metric} ({spec.mode}). Trials are ranked by the "
             "metric of their LAST report (the value the trial ends with, validation data only); \"best\" is the "
             "best value any report of the trial had. Units: the algorithm's training units (epochs, updates).", ""]
    if best is not None:
        lines += [f"Best: {best['trial']} with " + ", ".join(f"{k} = {_fmt(v)}" for k, v in best["overrides"].items())
                  + f": {spec.metric} {_fmt(best['last'])}; its file: best.toml (`trading-jax train best.toml`).", ""]
    else:
        lines += ["No trial reported a finite metric: there is no best config.", ""]
    lines += ["| trial | " + " | ".join(paths) + f" | {spec.metric} last | {spec.metric} best | units | status | "
              "seconds | folder |", "| --- |" + " --- |" * (len(paths) + 6)]
    for r in rows:
        status = r["status"] + (f" ({r['reason']})" if r["reason"] else "")
        lines.append(f"| {r['trial']} | " + " | ".join(_fmt(r["overrides"].get(p)) for p in paths)
                     + f" | {_fmt(r['last'])} | {_fmt(r['best'])} | {_fmt(r['units'])} | {status.replace('|', '/')} | "
                     f"{_fmt(r['seconds'])} | {r['folder'] or ''} |")
    return "\n".join(lines) + "\n"


def _clear_stale_locks(root: Path) -> None:
    """Trials Ray stopped mid-run may leave their folder's lock behind (their process may live on for reuse)."""
    for lock in (root / TRIALS).glob("*/.lock"):
        lock.unlink(missing_ok=True)


def _cache_dir() -> str | None:
    import jax

    return jax.config.jax_compilation_cache_dir or None


def run_search(experiment: str | Path | Mapping[str, Any], out: str | Path | None = None, *,
               address: str | None = None, overwrite: bool = False, num_cpus: int | None = None,
               num_gpus: int | None = None, verbose: int = 1, file: str | None = None) -> tuple[str, dict | None]:
    """Run the `[tune]` search of an experiment file (module docstring).

    Args:
        experiment: the file's path, or its parsed tables (`file` names it in errors).
        out: the search's run folder (default `runs/<name>_tune`). A rerun of the same file resumes there
            (finished trials are kept); a changed file is refused unless `overwrite`.
        address: a Ray cluster address ("auto", "HOST:PORT", "ray://HOST:PORT"); default the file's
            `[tune] address`; "" = an embedded local Ray.
        overwrite: start fresh in `out`.
        num_cpus, num_gpus: the embedded Ray's resources (default: the machine's).
        verbose: Ray Tune's console output (0 silent, 1 a status table, 2 more).
        file: the name used in errors when `experiment` is a mapping.

    Returns:
        `(summary line, best)`: best is `{"trial", "overrides", "last", "best", "units", ..., "toml"}` (the path of
        best.toml), or None when no trial reported a finite metric.

    Raises:
        ConfigError: a mistake in the file (one line), a metric the run never reports, a changed rerun.
        RayMissingError: Ray is not installed. ClusterError: the address cannot be reached.
        SearchInterrupted: Ctrl-C (Ray is stopped; rerun the same command to resume).
    """
    if isinstance(experiment, Mapping):
        raw, file = dict(experiment), file or "<experiment>"
    else:
        file = str(experiment)
        raw = S.read_toml(experiment)
    spec = load_tune(raw, file)
    base = _algorithm_load(apply_overrides(raw, {}, file), file)
    root = Path(out if out is not None else Path("runs") / f"{base.name}_tune").resolve()
    address = spec.address if address is None else address
    ray = import_ray()
    from ray import tune

    if address:
        probe_address(address)  # even with a Ray already running here: a bad address is a mistake to report
    started = start_ray(address, num_cpus=num_cpus, num_gpus=num_gpus)  # first: a bad address claims no folder
    try:
        return _search(tune, raw, file, spec, base, root, address, overwrite, verbose)
    finally:
        if started:
            ray.shutdown()


def _search(tune, raw, file, spec: TuneSpec, base, root: Path, address: str, overwrite: bool, verbose: int):
    """`run_search` once Ray runs: claim the folder, fit (or resume) the Tuner, write the results."""
    from trading_jax.runs.folder import RunFolder

    with RunFolder(root, overwrite=overwrite) as folder:
        state = folder.claim({"search": _record(raw, spec)}, {})
        if state == "new":  # --overwrite, or what a search that failed before it was claimed left: start clean
            for name in (TRIALS, TUNE_DIR, "best.toml"):
                target = root / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        # Ray Tune's own SIGINT handler ends the search quietly and returns as if it had finished: turn it off, so
        # Ctrl-C raises here, Ray is stopped and the user is told how to resume
        previous = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        grid = None
        try:
            grid = _fit(tune, raw, file, spec, root, resume=state == "resume", verbose=verbose)
        except KeyboardInterrupt:
            pass  # leave the folder's claim in place (no error through RunFolder): the rerun resumes
        finally:
            if previous is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous
            _clear_stale_locks(root)
        if grid is None:
            interrupted = True
        else:
            interrupted = False
            rows = _trials(grid, spec, root)
            for row in rows:
                if row["status"] == "errored" and "[tune] metric =" in row["reason"]:
                    raise S.ConfigError(row["reason"][row["reason"].index(file):] if file in row["reason"]
                                        else row["reason"])
            sign = 1.0 if spec.mode == "min" else -1.0
            best = rows[0] if rows and _rank(rows[0], sign)[0] == 0 else None
            if best is not None:
                best = dict(best, toml=str(root / "best.toml"))
                best_raw = apply_overrides(raw, best["overrides"], file)
                best_raw["name"] = f"{base.name}_tuned"  # `trading-jax train best.toml` gets a run folder of its own
                (root / "best.toml").write_text(
                    f"# {base.name}: the best config of `trading-jax tune {file}` ({best['trial']}, {spec.metric} "
                    f"{_fmt(best['last'])} at its last report)\n" + to_toml(best_raw))
            report = {"experiment": base.name, "file": file, "metric": spec.metric, "mode": spec.mode,
                      "scheduler": spec.scheduler, "searcher": spec.searcher, "address": address or "local",
                      "ranked_by": "the metric of each trial's last report", "best": best, "trials": rows}
            write_results(root, report, results_markdown(base.name, spec, rows, best, address))
    if interrupted:
        raise SearchInterrupted(f"interrupted: Ray is stopped; rerun the same command to resume the search in {root} "
                                "(finished trials are kept), or add --overwrite to start over")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "stopped early", "stopped", "errored")}
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if best is None:
        return (f"{base.name}: no trial of {len(rows)} reported a finite {spec.metric} ({tally}); see "
                f"{root / 'results.md'}"), None
    chosen = ", ".join(f"{k} = {_fmt(v)}" for k, v in best["overrides"].items())
    return (f"{base.name}: best of {len(rows)} trials ({tally}): {chosen} with {spec.metric} {_fmt(best['last'])} "
            f"(last report, {spec.mode}); config {root / 'best.toml'}, table {root / 'results.md'}, "
            f"TensorBoard: tensorboard --logdir {root}"), best


def _fit(tune, raw, file, spec: TuneSpec, root: Path, resume: bool, verbose: int):
    """Build (or restore) the Tuner and run it: the ResultGrid."""
    checkpoint_every = spec.perturbation_interval if spec.scheduler == "pbt" else None
    options = dict(raw=raw, file=file, root=str(root), metric=spec.metric, checkpoint_every=checkpoint_every,
                   cwd=os.getcwd(), cache_dir=_cache_dir())

    def trading_jax_trial(config):  # Ray wants a function of `config` alone
        return trial(config, **options)

    trainable = tune.with_resources(trading_jax_trial, {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})
    path = root / TUNE_DIR
    if resume and tune.Tuner.can_restore(str(path)):
        log.info("resuming the search in %s", path)
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
        return tuner.fit()
    scheduler = _scheduler(tune, spec)
    searcher = None
    if spec.searcher == "optuna":
        import importlib.util

        if importlib.util.find_spec("optuna") is None:
            raise S.ConfigError(f"{file}: [tune] searcher = \"optuna\" needs Optuna: pip install optuna") from None
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch()
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig

    run_config = RunConfig(name=TUNE_DIR, storage_path=str(root), verbose=verbose,
                           failure_config=FailureConfig(max_failures=0),
                           checkpoint_config=CheckpointConfig(num_to_keep=4 if checkpoint_every else None))
    tune_config = tune.TuneConfig(
        metric=spec.metric, mode=spec.mode, scheduler=scheduler, search_alg=searcher, num_samples=spec.num_samples,
        max_concurrent_trials=spec.max_concurrent or None, time_budget_s=spec.time_budget_s,
        reuse_actors=True,  # a trial after another in the same worker skips the process start and JAX's import
        trial_name_creator=lambda t: f"trial_{t.trial_id}", trial_dirname_creator=lambda t: f"trial_{t.trial_id}")
    space = {p.path: _domain(tune, p) for p in spec.space}
    tuner = tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)
    if verbose:
        return tuner.fit()
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # Tune prints its settings box even when silent
        return tuner.fit()


def _scheduler(tune, spec: TuneSpec):
    if spec.scheduler == "asha":
        return tune.schedulers.ASHAScheduler(time_attr="units", max_t=spec.max_t, grace_period=spec.grace_period,
                                             reduction_factor=spec.reduction_factor)
    if spec.scheduler == "pbt":
        return tune.schedulers.PopulationBasedTraining(
            time_attr="units", perturbation_interval=spec.perturbation_interval, synch=spec.synch,
            hyperparam_mutations={p.path: _mutation(tune, p) for p in spec.space})
    return tune.schedulers.FIFOScheduler()
