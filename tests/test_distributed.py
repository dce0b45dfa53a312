"""Multi-host training on `jax.distributed`: 2 CPU processes on localhost (a localhost coordinator, gloo
collectives) train supervised, PPO and DQN (the off-policy loop) exactly as 1 process does, a checkpoint they save resumes in 1 process, the
settings come from flags, SLURM, Kubernetes or JAX's variables, and every bad setting is one line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from trading_jax.distributed import DistributedError, check_address, resolve_settings

WORKER = Path(__file__).with_name("distributed_worker.py")
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, processes: int) -> list[subprocess.Popen]:
    port = _free_port()
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank in range(processes):
        env = {**os.environ, "TRADING_JAX_COORDINATOR": f"127.0.0.1:{port}", "TRADING_JAX_NUM_PROCESSES": str(processes),
               "TRADING_JAX_PROCESS_ID": str(rank), "PYTHONPATH": str(REPO)}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _wait(procs: list[subprocess.Popen], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a distributed worker did not finish in time")
        assert p.returncode == 0, out[-3000:]


def _results(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "result.npz") as f:
        return {k: f[k] for k in f.files}


def _assert_same(got: dict, want: dict) -> None:
    names = [k for k in want if k != "devices"]
    assert names and set(names) <= set(got)
    for name in names:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-6, err_msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 1-process run (this test process, no mesh)."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        import distributed_worker
    finally:
        sys.path.remove(str(WORKER.parent))
    return distributed_worker.train_all(tmp_path_factory.mktemp("reference"))


def test_two_processes_train_supervised_ppo_and_dqn_as_one_process_does_and_resume_on_another_count(reference, tmp_path):
    two = tmp_path / "two"
    _wait(_launch(two, 2))  # one device each: a 2-device global mesh, training rows and envs split between them
    got = _results(two)
    assert int(got["devices"]) == 2
    _assert_same(got, reference)
    # the run as if stopped after 2 units: its checkpoints up to 2, restored by ONE process, which finishes the run
    one = tmp_path / "one"
    for name in ("supervised", "ppo", "dqn"):
        steps = sorted(int(p.name) for p in (two / "checkpoints" / name).iterdir() if p.name.isdigit())
        assert steps == [1, 2, 3, 4]  # saved once per unit by the 2 processes together
        shutil.copytree(two / "checkpoints" / name, one / "checkpoints" / name)
        for step in (3, 4):
            shutil.rmtree(one / "checkpoints" / name / str(step))
    # without a target (an export, an analysis) one process reads the 2-process checkpoint onto its own device
    from trading_jax.checkpoint import CheckpointConfig, Checkpointer

    with Checkpointer(CheckpointConfig(directory=str(two / "checkpoints" / "supervised"))) as ckpt:
        state = ckpt.restore(4)
    leaf = np.asarray(state["params"]["Dense_1"]["bias"])
    np.testing.assert_allclose(leaf, reference["supervised/['Dense_1']['bias']"], rtol=2e-5, atol=2e-6)
    _wait(_launch(one, 1))
    resumed = _results(one)
    assert int(resumed["devices"]) == 1
    _assert_same(resumed, reference)
    assert sorted(int(p.name) for p in (one / "checkpoints" / "ppo").iterdir() if p.name.isdigit()) == [1, 2, 3, 4]


def test_settings_come_from_flags_then_trading_jax_jax_kubernetes_and_slurm_variables():
    s = resolve_settings("10.0.0.1:1234", 4, 2, environ={})
    assert (s.coordinator, s.num_processes, s.process_id) == ("10.0.0.1:1234", 4, 2)
    s = resolve_settings(environ={"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "3", "JAX_PROCESS_ID": "1",
                                  "TRADING_JAX_PROCESS_ID": "2"})
    assert (s.coordinator, s.num_processes, s.process_id) == ("h:1", 3, 2)
    assert s.sources == {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
                         "process_id": "TRADING_JAX_PROCESS_ID"}
    kubeflow = {"MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "8", "RANK": "5"}
    s = resolve_settings(environ=kubeflow)
    assert (s.coordinator, s.num_processes, s.process_id) == ("job-master-0:23456", 8, 5)
    indexed = {"TRADING_JAX_COORDINATOR": "job-0.svc:1234", "WORLD_SIZE": "4", "JOB_COMPLETION_INDEX": "3"}
    assert resolve_settings(environ=indexed).process_id == 3
    slurm = {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "node[1-2]"}
    s = resolve_settings(environ=slurm)
    assert (s.coordinator, s.num_processes, s.process_id) == (None, 4, 3)  # JAX finds SLURM's coordinator
    s = resolve_settings(environ={})
    assert (s.num_processes, s.process_id) == (1, 0)
    s = resolve_settings(environ={"SLURM_PROCID": "0"})
    assert (s.coordinator, s.num_processes, s.process_id) == (None, 1, 0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(coordinator="h:1", num_processes=2, process_id=2), "process id 2 .* outside 0 .. 1"),
    (dict(coordinator="h:1", num_processes=0), "at least 1"),
    (dict(coordinator="nohostport", num_processes=2, process_id=0), "not host:port"),
    (dict(coordinator="h:99999", num_processes=2, process_id=0), "not host:port"),
    (dict(num_processes=2, process_id=1), "no coordinator address"),
    (dict(environ={"WORLD_SIZE": "two"}), "WORLD_SIZE='two' is not an integer"),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    environ = kwargs.pop("environ", {})
    with pytest.raises(DistributedError, match=message) as caught:
        resolve_settings(**kwargs, environ=environ)
    assert "\n" not in str(caught.value)


def test_ipv6_addresses_parse():
    assert check_address("[::1]:8476") == ("::1", 8476)


def _cli(*args, timeout=60, env=None):
    return subprocess.run([sys.executable, "-m", "trading_jax.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)


def test_a_coordinator_nobody_hosts_a_lone_process_0_or_an_unknown_host_fail_in_one_line(tmp_path):
    config = REPO / "experiments" / "default.toml"
    start = time.monotonic()
    late = _cli("train", str(config), "--out", str(tmp_path / "a"), "--distributed", "--coordinator",
                f"127.0.0.1:{_free_port()}", "--num-processes", "2", "--process-id", "1", "--distributed-timeout", "3")
    assert late.returncode == 2, late.stderr
    assert time.monotonic() - start < 45
    assert "process 1 of 2 could not join the run at coordinator 127.0.0.1:" in late.stderr
    assert "Traceback" not in late.stderr
    alone = _cli("train", str(config), "--out", str(tmp_path / "b"), "--distributed", "--coordinator",
                 f"127.0.0.1:{_free_port()}", "--num-processes", "2", "--process-id", "0", "--distributed-timeout", "2")
    assert alone.returncode == 2 and "waited 2 s at coordinator" in alone.stderr and "1, which never joined" in alone.stderr
    nowhere = _cli("train", str(config), "--distributed", "--coordinator", "no-such-host.invalid:1234",
                   "--num-processes", "2", "--process-id", "1")
    assert nowhere.returncode == 2 and "does not resolve" in nowhere.stderr and "Traceback" not in nowhere.stderr
    not_here = _cli("train", str(config), "--distributed", "--coordinator", "192.0.2.1:1234", "--num-processes", "2",
                    "--process-id", "0")
    assert not_here.returncode == 2 and "not an address of this machine" in not_here.stderr
    stray = _cli("train", str(config), "--coordinator", "127.0.0.1:1234")
    assert stray.returncode == 2 and "only apply with --distributed" in stray.stderr


def test_processes_started_with_different_counts_are_refused_in_one_line(tmp_path):
    port = _free_port()
    config = REPO / "experiments" / "default.toml"
    args = ["-m", "trading_jax.cli", "train", str(config), "--out", str(tmp_path), "--distributed", "--coordinator",
            f"127.0.0.1:{port}", "--distributed-timeout", "20"]
    zero = subprocess.Popen([sys.executable, *args, "--num-processes", "2", "--process-id", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    one = subprocess.run([sys.executable, *args, "--num-processes", "3", "--process-id", "1"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    _, zero_err = zero.communicate(timeout=60)
    assert one.returncode == 2 and "refused it" in one.stderr
    assert zero.returncode == 2 and "rank 1 of 3" in zero_err and "Traceback" not in zero_err


def test_algorithms_that_do_not_shard_over_processes_refuse_distributed_in_one_line(tmp_path):
    refused = _cli("train", str(REPO / "experiments" / "maml_synthetic.toml"), "--out", str(tmp_path), "--distributed")
    assert refused.returncode == 2, refused.stderr
    assert ("algorithm = 'maml' does not train across processes yet; --distributed runs supervised, ppo, sac, td3, "
            "ddpg, dqn") in refused.stderr


def test_process_0_decides_the_run_folder_and_the_others_follow_or_stop(monkeypatch, tmp_path):
    from trading_jax.runs import folder as F
    from trading_jax.runs.schema import ConfigError

    sent = []
    monkeypatch.setattr(F, "is_multiprocess", lambda: True)
    monkeypatch.setattr(F, "broadcast_from_primary", lambda code: sent.append(int(code)) or code)
    monkeypatch.setattr(F, "is_primary", lambda: True)
    with F.RunFolder(tmp_path / "run") as run:
        assert run.claim({"a": 1}, {}) == "new"
    with pytest.raises(ConfigError, match="different config"):
        with F.RunFolder(tmp_path / "run") as run:
            run.claim({"a": 2}, {})
    assert sent == [0, 0, 0, -1]  # lock ok, "new"; lock ok, refused
    monkeypatch.setattr(F, "is_primary", lambda: False)  # another process: follows process 0's word, writes nothing
    words = iter([0, 1])  # process 0 took the lock, then found the same run: "resume"
    monkeypatch.setattr(F, "broadcast_from_primary", lambda code: np.int32(next(words)))
    with F.RunFolder(tmp_path / "other") as run:
        assert run.claim({"a": 3}, {}) == "resume"
        run.write_json("x.json", {})
    assert not (tmp_path / "other" / "config.json").exists() and not (tmp_path / "other" / "x.json").exists()
    assert not (tmp_path / "other" / ".lock").exists()
    words = iter([0, -1])
    monkeypatch.setattr(F, "broadcast_from_primary", lambda code: np.int32(next(words)))
    with pytest.raises(ConfigError, match="process 0 refused the run folder: see process 0's message"):
        with F.RunFolder(tmp_path / "other") as run:
            run.claim({"a": 3}, {})


def test_the_library_shards_with_meshes_only_never_pmap():
    import re

    calls = [f"{path.relative_to(REPO)}:{n}" for path in (REPO / "trading_jax").rglob("*.py")
             for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"\bpmap\s*\(", line)]
    assert calls == []


def test_process_0_tells_the_others_before_any_error_of_its_own_propagates(monkeypatch):
    from trading_jax.runs import folder as F

    sent = []
    monkeypatch.setattr(F, "is_multiprocess", lambda: True)
    monkeypatch.setattr(F, "is_primary", lambda: True)
    monkeypatch.setattr(F, "broadcast_from_primary", lambda code: sent.append(int(code)) or code)

    def disk_full():
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        F._on_primary(disk_full, "refused")
    assert sent == [-1]  # the others were told to stop before process 0 raised
