"""Run folders that cannot silently lie: config + data fingerprint, a lock, refusal of a changed rerun.

A run folder (`runs/NAME/` by default) holds `config.json`: the experiment's config, a fingerprint of its
data (each file's path, size and SHA-256, the split boundaries, the number of samples) and the package
version. A rerun on the same folder resumes from its checkpoints, which is only right for the same
config and the same data, so

* a rerun whose config or data changed is refused with what changed and the flag to use
  (`--overwrite` starts fresh; `--out` chooses another folder);
* a rerun with the same config and data resumes (the default);
* a lock file (`.lock`, holding the pid and host) stops two runs sharing a folder; the lock of a
  process that no longer exists is cleared;
* a run that fails before its first checkpoint does not claim the folder: its `config.json` is removed,
  so a corrected rerun is not refused.

In a multi-process run (`trading-jax train --distributed`) the folder is on a file system every process
sees; process 0 takes the lock, checks and writes the claim, and tells the others the outcome (a refusal
stops every process with one line); `write_json` and the results files are process 0's alone.

    with RunFolder(out, overwrite=False) as folder:       # takes the lock (ConfigError if held)
        ...build data...
        folder.claim(config, fingerprint)                 # ConfigError if a different run is there
        ...train, checkpoint under folder.path / "checkpoints"...
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Iterable, Mapping

from trading_jax.distributed import broadcast_from_primary, is_multiprocess, is_primary
from trading_jax.logging import get_logger
from trading_jax.runs.schema import ConfigError

__all__ = ["RunFolder", "file_fingerprints", "package_version"]

log = get_logger(__name__)
LOCK = ".lock"
CONFIG = "config.json"
FEATURES = "features.json"
OWNED = ("checkpoints", "tensorboard", "results.json", "results.md", FEATURES, CONFIG, "tokenizer", "model", "cache",
         "report")


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("trading-jax")
    except Exception:  # noqa: BLE001 - a source checkout without metadata
        return "unknown"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprints(paths: Iterable[str | Path]) -> list[dict]:
    """`{"path", "bytes", "sha256"}` of every file under `paths` (files, folders or globs), sorted by path."""
    files: set[Path] = set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.update(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif p.exists():
            files.add(p)
        else:
            files.update(f for f in Path(".").glob(str(p)) if f.is_file())
    return [{"path": str(f.resolve()), "bytes": f.stat().st_size, "sha256": _sha256(f)} for f in sorted(files)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _differences(before: Any, now: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON values ("train.learning_rate: 0.001 -> 0.002")."""
    if isinstance(before, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(before) | set(now)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in before:
                out.append(f"{name} added")
            elif key not in now:
                out.append(f"{name} removed")
            else:
                out += _differences(before[key], now[key], name)
        return out
    if before != now:
        return [f"{prefix}: {json.dumps(before, default=str)[:60]} -> {json.dumps(now, default=str)[:60]}"]
    return []


def _data_differences(before: Mapping, now: Mapping) -> list[str]:
    old = {f["path"]: f for f in before.get("files", [])}
    new = {f["path"]: f for f in now.get("files", [])}
    out = [f"data file {p} {'added' if p in new else 'removed'}" for p in sorted(set(old) ^ set(new))]
    out += [f"data file {p} changed (size {old[p]['bytes']} -> {new[p]['bytes']} bytes, content hash differs)"
            for p in sorted(set(old) & set(new)) if old[p]["sha256"] != new[p]["sha256"]]
    rest_old = {k: v for k, v in before.items() if k != "files"}
    rest_new = {k: v for k, v in now.items() if k != "files"}
    return out + [f"data {d}" for d in _differences(rest_old, rest_new)]


class RunFolder:
    """The lock and the claim of one run folder (module docstring).

    Args:
        path: the folder (created if missing).
        overwrite: start fresh: delete what an earlier run left (checkpoints, logs, results, config).
    """

    def __init__(self, path: str | Path, overwrite: bool = False):
        self.path = Path(path)
        self.overwrite = overwrite
        self._locked = False
        self._claimed_here = False

    # ------------------------------------------------------------------------------ lock
    def __enter__(self) -> "RunFolder":
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}-{socket.gethostname()}"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise ConfigError(f"{self.path}: cannot write the run folder ({error.strerror}); choose another --out") from None
        _on_primary(self._acquire, f"{self.path}: process 0 could not take the run folder's lock")
        return self

    def _acquire(self) -> None:
        lock = self.path / LOCK
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    holder = json.loads(lock.read_text() or "{}")
                except (OSError, ValueError):
                    holder = {}
                pid, host = holder.get("pid"), holder.get("host")
                if isinstance(pid, int) and host == me["host"] and not _pid_alive(pid):
                    log.warning("%s: cleared the lock of process %d, which no longer runs", self.path, pid)
                    lock.unlink(missing_ok=True)
                    continue
                raise ConfigError(f"{self.path}: another run (pid {pid} on {host}) is using this folder; wait for it "
                                  f"to finish, choose another --out, or delete {lock} if that run is gone") from None
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self._locked = True
            return
        raise ConfigError(f"{self.path}: could not take the lock {lock}")

    def __exit__(self, kind, error, tb) -> None:
        try:
            if error is not None and self._claimed_here and not self.has_checkpoints():
                (self.path / CONFIG).unlink(missing_ok=True)  # failed before its first checkpoint: no claim
        finally:
            if self._locked:
                (self.path / LOCK).unlink(missing_ok=True)
                self._locked = False

    # ----------------------------------------------------------------------------- claim
    def has_checkpoints(self) -> bool:
        root = self.path / "checkpoints"
        return root.exists() and any(p.is_dir() and p.name.isdigit() for p in root.rglob("*"))

    def claim(self, config: Mapping[str, Any], data: Mapping[str, Any]) -> str:
        """Record the run, or check that the one already here is the same (process 0's decision, shared with
        every process of a multi-process run).

        Returns:
            "new" (nothing was here, or `overwrite`), or "resume" (same config and data).

        Raises:
            ConfigError: a run of a different config or different data is here (naming what changed).
        """
        return _on_primary(lambda: self._claim(config, data), f"{self.path}: process 0 refused the run folder",
                           outcomes=("new", "resume"))

    def _claim(self, config: Mapping[str, Any], data: Mapping[str, Any]) -> str:
        record = {"config": json.loads(json.dumps(config, default=str)),
                  "data": json.loads(json.dumps(data, default=str)), "package_version": package_version()}
        path = self.path / CONFIG
        if self.overwrite:
            for name in OWNED:
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
        elif path.exists():
            try:
                before = json.loads(path.read_text())
            except ValueError:
                raise ConfigError(f"{path}: is not valid JSON; rerun with --overwrite to start fresh") from None
            if "config" not in before:  # written by an older version: only the config was kept
                before = {"config": before, "data": record["data"]}
            changed = _differences(before.get("config"), record["config"])
            if changed:
                raise ConfigError(f"{self.path} holds a run of a different config ({'; '.join(changed[:4])}"
                                  f"{'; ...' if len(changed) > 4 else ''}): rerun with --overwrite to start fresh, "
                                  "or choose another --out")
            changed = _data_differences(before.get("data", {}), record["data"])
            if changed:
                raise ConfigError(f"{self.path} was trained on different data ({'; '.join(changed[:3])}"
                                  f"{'; ...' if len(changed) > 3 else ''}): rerun with --overwrite to start fresh, "
                                  "or choose another --out")
            return "resume"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        self._claimed_here = True
        return "new"

    def write_json(self, name: str, value: Any) -> Path:
        """Write `value` as `name` in the folder, atomically (e.g. `features.json`, the fitted feature state
        that `trading-jax export` serves with; process 0's alone in a multi-process run)."""
        path = self.path / name
        if not is_primary():
            return path
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(value, indent=1, default=str) + "\n")
        os.replace(tmp, path)
        return path


def _on_primary(action, refused: str, outcomes: tuple = (None,)):
    """`action()` on process 0, its outcome (an entry of `outcomes`, or a refusal) shared with every process.

    Single-process runs just call `action`. In a multi-process run the others wait for process 0's outcome and
    raise `ConfigError(refused ...)` when process 0 raised (process 0 raises its own error: a one-line
    ConfigError, or e.g. an OSError), so no process waits forever for a partner that stopped."""
    if not is_multiprocess():
        return action()
    import numpy as np

    result, error = None, None
    if is_primary():
        try:
            result = action()
        except Exception as caught:  # noqa: BLE001 - told to the others first, then raised here as it was
            error = caught
        code = -1 if error is not None else outcomes.index(result)
    else:
        code = 0
    code = int(broadcast_from_primary(np.int32(code)))
    if error is not None:
        raise error
    if code < 0:
        raise ConfigError(f"{refused}: see process 0's message")
    return outcomes[code]
