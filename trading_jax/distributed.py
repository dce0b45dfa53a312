"""Multi-host (multi-process) training on `jax.distributed`: settings, start-up, and host copies of results.

Every process runs the same program (JAX's multi-controller model). `initialize()` joins the processes into
one JAX runtime, after which `jax.devices()` lists every process's devices and `trading_jax.parallel.make_mesh()`
builds ONE global mesh over them; data-parallel algorithms shard their batch (or env) axis over it, and XLA
inserts the cross-process gradient all-reduces (gloo on CPU, NCCL on GPU).

Settings, first found wins (`resolve_settings`, a pure function of the arguments and the environment):

==========================  =====================================  ===================  =================
source                      coordinator ("host:port")              process count        process id
==========================  =====================================  ===================  =================
arguments / CLI flags       `coordinator`                          `num_processes`      `process_id`
trading-jax variables       TRADING_JAX_COORDINATOR                TRADING_JAX_NUM_PROCESSES  TRADING_JAX_PROCESS_ID
JAX's variables             JAX_COORDINATOR_ADDRESS                JAX_NUM_PROCESSES    JAX_PROCESS_ID
Kubernetes (Kubeflow,       MASTER_ADDR:MASTER_PORT                WORLD_SIZE           RANK, else
  JobSet, Indexed Jobs)                                                                 JOB_COMPLETION_INDEX
SLURM (`srun`)              JAX's SLURM detection (first node of   SLURM_NTASKS         SLURM_PROCID
                            SLURM_STEP_NODELIST, port from the job id)
==========================  =====================================  ===================  =================

A setting may come from different rows (e.g. the coordinator from a flag, the rank from SLURM). One process
(count 1 and nothing else set) is a plain single-process run. Process 0 hosts the coordinator service on the
coordinator's port; every other process connects to it within `timeout_s` or fails with one line naming the
address.

After training, `to_host(tree)` turns a result whose leaves are global arrays into NumPy on every process
(replicated leaves are read locally; sharded ones are gathered), so evaluation and reports run on each
process's own devices exactly as in a single-process run, and only process 0 writes files (`is_primary`).

    settings = initialize()                      # from the environment (SLURM, Kubernetes, JAX_*, ...)
    mesh = parallel.make_mesh()                  # every process's devices
    with parallel.use_mesh(mesh): ...            # data-parallel algorithms pick it up
"""

from __future__ import annotations

import dataclasses
import os
import socket
from typing import Any, Mapping

import jax
import numpy as np

from trading_jax.logging import get_logger

__all__ = ["DistributedError", "DistributedSettings", "resolve_settings", "initialize", "is_primary",
           "is_multiprocess", "to_host", "broadcast_from_primary", "barrier"]

log = get_logger(__name__)
DEFAULT_TIMEOUT_S = 120


class DistributedError(RuntimeError):
    """A multi-process start-up problem, said in one line (bad settings, unreachable coordinator)."""


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """Where this process stands in a multi-process run.

    Attributes:
        coordinator: "host:port" of process 0's coordinator service; None: JAX detects it (SLURM).
        num_processes: processes in the run (>= 1).
        process_id: this process's rank, 0 .. num_processes - 1.
        sources: where each setting came from, e.g. {"coordinator": "--coordinator", "num_processes": "SLURM_NTASKS"}.
    """

    coordinator: str | None
    num_processes: int
    process_id: int
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        where = ", ".join(f"{k} from {v}" for k, v in self.sources.items())
        return (f"process {self.process_id} of {self.num_processes}, coordinator "
                f"{self.coordinator or '(detected by JAX)'}" + (f" ({where})" if where else ""))


_ROWS = (  # (name of the source, coordinator variable(s), count variable, id variable(s))
    ("TRADING_JAX", ("TRADING_JAX_COORDINATOR",), "TRADING_JAX_NUM_PROCESSES", ("TRADING_JAX_PROCESS_ID",)),
    ("JAX", ("JAX_COORDINATOR_ADDRESS",), "JAX_NUM_PROCESSES", ("JAX_PROCESS_ID",)),
    ("Kubernetes", ("MASTER_ADDR", "MASTER_PORT"), "WORLD_SIZE", ("RANK", "JOB_COMPLETION_INDEX")),
    ("SLURM", (), "SLURM_NTASKS", ("SLURM_PROCID",)),
)


def _integer(value, name: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise DistributedError(f"{name}={value!r} is not an integer") from None
    return number


def check_address(address: str, what: str = "coordinator") -> tuple[str, int]:
    """`(host, port)` of a "host:port" address (IPv6 as "[::1]:port"); DistributedError naming it otherwise."""
    text = str(address).strip()
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"{what} address {address!r} is not host:port (e.g. 10.0.0.1:1234 or node001:1234)")
    return host, int(port)


def resolve_settings(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
                     environ: Mapping[str, str] | None = None) -> DistributedSettings:
    """The run's settings from the arguments, then the environment (module docstring's table).

    Raises:
        DistributedError: a non-integer count or rank, a rank outside 0 .. count - 1, a malformed coordinator,
            or several processes and no coordinator (outside SLURM, where JAX finds it).
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    sources = {k: "arguments" for k, v in values.items() if v is not None}
    for name, coordinator_vars, count_var, id_vars in _ROWS:
        if values["coordinator"] is None and coordinator_vars and all(env.get(v) for v in coordinator_vars):
            values["coordinator"] = ":".join(env[v] for v in coordinator_vars)
            sources["coordinator"] = "+".join(coordinator_vars)
        if values["num_processes"] is None and env.get(count_var):
            values["num_processes"] = _integer(env[count_var], count_var)
            sources["num_processes"] = count_var
        for var in id_vars:
            if values["process_id"] is None and env.get(var):
                values["process_id"] = _integer(env[var], var)
                sources["process_id"] = var
    count = 1 if values["num_processes"] is None else _integer(values["num_processes"], "num_processes")
    rank = 0 if values["process_id"] is None else _integer(values["process_id"], "process_id")
    if count < 1:
        raise DistributedError(f"the process count is {count} ({sources.get('num_processes')}): it must be at least 1")
    if not 0 <= rank < count:
        raise DistributedError(f"process id {rank} ({sources.get('process_id', 'default')}) is outside 0 .. {count - 1} "
                               f"for {count} processes ({sources.get('num_processes', 'default')})")
    address = values["coordinator"]
    if address is not None:
        check_address(address)
    elif count > 1 and sources.get("num_processes") != "SLURM_NTASKS":
        raise DistributedError(f"{count} processes but no coordinator address: give --coordinator HOST:PORT (process 0's "
                               "host and a free port) or set TRADING_JAX_COORDINATOR")
    return DistributedSettings(address, count, rank, sources)


def _check_reachable(settings: DistributedSettings) -> None:
    """Fail fast, in one line, on a coordinator host that does not resolve (every process), or one that is not
    this machine for process 0 (which must host the coordinator service)."""
    if settings.coordinator is None:
        return
    host, port = check_address(settings.coordinator)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise DistributedError(f"coordinator {settings.coordinator}: the host {host!r} does not resolve ({error.strerror}); "
                               "give process 0's host name or IP address") from None
    if settings.process_id == 0:
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as probe:
                try:
                    probe.bind((address[0], 0))
                    return
                except OSError:
                    continue
        raise DistributedError(f"coordinator {settings.coordinator}: process 0 hosts the coordinator, but {host!r} is "
                               "not an address of this machine; start process 0 on that host, or give this host's "
                               "address")


def _rendezvous(settings: DistributedSettings, timeout_s: float) -> None:
    """Meet every process on the coordinator's port before JAX does, so that a missing or misconfigured process
    is a one-line `DistributedError` (JAX's own client aborts the whole process with a C++ fatal log instead).

    Process 0 listens on the port until the other `num_processes - 1` ranks have said hello (each with its rank
    and the count it was started with), then tells them to go and frees the port for JAX's coordinator service;
    the others retry connecting until process 0 is up. Either side gives up after `timeout_s`.
    """
    import time

    host, port = check_address(settings.coordinator)
    deadline = time.monotonic() + float(timeout_s)
    n, rank = settings.num_processes, settings.process_id
    hello = f"trading-jax {rank} {n}\n".encode()
    if rank == 0:
        joined: dict[int, socket.socket] = {}
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                server.bind(("", port))
            except OSError as error:
                raise DistributedError(f"coordinator {settings.coordinator}: process 0 cannot listen on port {port} "
                                       f"({error.strerror}); choose a free port") from None
            server.listen(n)
            try:
                while len(joined) < n - 1:
                    server.settimeout(max(0.01, deadline - time.monotonic()))
                    try:
                        conn, _ = server.accept()
                    except socket.timeout:
                        missing = sorted(set(range(1, n)) - set(joined))
                        raise DistributedError(
                            f"process 0 of {n} waited {timeout_s} s at coordinator {settings.coordinator} for process(es) "
                            f"{', '.join(map(str, missing))}, which never joined: start them with the same coordinator "
                            "and count (check the host, port and firewall)") from None
                    conn.settimeout(5)
                    try:
                        words = conn.recv(64).decode(errors="replace").split()
                    except OSError:
                        conn.close()
                        continue
                    if len(words) != 3 or words[0] != "trading-jax" or not all(w.isdigit() for w in words[1:]):
                        conn.close()  # not one of ours (a port scanner, a stray client)
                        continue
                    their_rank, their_n = int(words[1]), int(words[2])
                    if their_n != n or their_rank in joined or not 0 < their_rank < n:
                        conn.sendall(b"refused\n")
                        conn.close()
                        raise DistributedError(f"process 0 of {n}: a process started as rank {their_rank} of {their_n} "
                                               "joined the coordinator: give every process the same count and a "
                                               "distinct rank")
                    joined[their_rank] = conn
                for conn in joined.values():
                    conn.sendall(b"go\n")
            finally:
                for conn in joined.values():
                    conn.close()
        return
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.5, min(2.0, deadline - time.monotonic()))) as conn:
                conn.sendall(hello)
                conn.settimeout(max(0.5, deadline - time.monotonic()))
                reply = conn.recv(16).decode(errors="replace").strip()
                if reply == "go":
                    return
                if reply == "refused":
                    raise DistributedError(f"process {rank} of {n}: process 0 at {settings.coordinator} refused it (a "
                                           "different process count, or this rank twice): give every process the same "
                                           "count and a distinct rank")
        except socket.timeout:
            pass
        except OSError:
            time.sleep(0.2)
        if time.monotonic() > deadline:
            raise DistributedError(f"process {rank} of {n} could not join the run at coordinator {settings.coordinator} "
                                   f"within {timeout_s} s: start process 0 there with the same count (check the host, "
                                   "port and firewall)")


def initialize(settings: DistributedSettings | None = None, timeout_s: int = DEFAULT_TIMEOUT_S) -> DistributedSettings:
    """Join this process to the multi-process run (idempotent; a 1-process setting starts nothing).

    Must run before any JAX computation in the process. Sets gloo CPU collectives (so CPU processes can
    all-reduce), then `jax.distributed.initialize(coordinator, num_processes, process_id)`.

    Raises:
        DistributedError: bad settings, a coordinator host that does not resolve, JAX already started
            without it, or the processes not all connecting within `timeout_s` (one line naming the coordinator).
    """
    settings = resolve_settings() if settings is None else settings
    if settings.num_processes == 1:
        return settings
    if jax.distributed.is_initialized():
        if jax.process_count() != settings.num_processes:
            raise DistributedError(f"jax.distributed is already running with {jax.process_count()} processes, "
                                   f"not {settings.num_processes}")
        return settings
    _check_reachable(settings)
    if settings.coordinator is not None:
        log.info("jax.distributed: %s; waiting up to %d s for every process", settings.describe(), timeout_s)
        _rendezvous(settings, timeout_s)
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # noqa: BLE001 - a JAX without the option: its default collectives stand
        pass
    log.info("jax.distributed: %s", settings.describe())
    try:
        jax.distributed.initialize(settings.coordinator, settings.num_processes, settings.process_id,
                                   initialization_timeout=int(timeout_s))
    except Exception as error:  # noqa: BLE001 - XlaRuntimeError / RuntimeError: say it in one line
        text = " ".join(str(error).split())
        if "before any JAX" in text or "backend" in text.lower() and "already" in text.lower():
            raise DistributedError("jax.distributed must start before any JAX computation: call "
                                   "trading_jax.distributed.initialize() first in the process") from None
        raise DistributedError(
            f"process {settings.process_id} of {settings.num_processes} could not join the run at coordinator "
            f"{settings.coordinator or '(detected)'} within {timeout_s} s: start every process with the same "
            f"coordinator and count (process 0 hosts it; check the host, port and firewall) [{text[:160]}]") from None
    return settings


def is_multiprocess() -> bool:
    """Whether this process is one of several (after `initialize`)."""
    return jax.process_count() > 1


def is_primary() -> bool:
    """Whether this process writes files (process 0; always true in a single-process run)."""
    return jax.process_index() == 0


def to_host(tree):
    """Every array leaf of `tree` as NumPy on this process: fully replicated (or fully addressable) leaves
    are read locally; sharded global ones are all-gathered (a collective: every process must call it at the
    same point). Non-array leaves pass through unchanged."""
    from jax.experimental import multihost_utils

    def one(leaf):
        if not isinstance(leaf, jax.Array):
            return leaf
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(np.asarray(one(jax.random.key_data(leaf))), impl=jax.random.key_impl(leaf))
        if leaf.is_fully_addressable or leaf.is_fully_replicated:
            return np.asarray(leaf)
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(one, tree)


def broadcast_from_primary(value):
    """Process 0's `value` (a NumPy-able pytree of numbers) on every process; the value itself in one process."""
    if not is_multiprocess():
        return value
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(value))


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (nothing in a single-process run)."""
    if is_multiprocess():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
