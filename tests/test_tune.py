"""`trading-jax tune`: a Ray Tune search in local mode finds the known best point of a learning-rate grid, PBT
exploits (a trial restarts from another's checkpoint with its own mutated learning rate), best.toml is a
file `trading-jax train` loads, and every mistake (a bad address, a missing Ray, a wrong [tune] table, a metric
the run never reports) is one line."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from trading_jax.runs import ConfigError, load_experiment
from trading_jax.runs.tune import (RAY_MISSING, ClusterError, RayMissingError, apply_overrides, load_tune, probe_address,
                                   run_search, to_toml)

BASE = """
name = "tiny"
seeds = [0, 1]
[data]
synthetic_bars = 500
synthetic_assets = 2
window = 16
horizon = 3
[train]
model = "tcn"
preset = "tiny"
task = "regression"
epochs = 4
batch_size = 64
"""

# 1e-7 cannot move the weights in 4 epochs and 50 diverges: 3e-3 is the best point by construction
GRID = BASE + """
[tune]
metric = "val_loss"
mode = "min"
scheduler = "asha"
grace_period = 2
reduction_factor = 2
max_concurrent = 2
[tune.space]
"train.learning_rate" = {grid = [1e-7, 3e-3, 50.0]}
"""

PBT = BASE.replace("epochs = 4", "epochs = 5") + """
[tune]
metric = "val_loss"
scheduler = "pbt"
perturbation_interval = 2
synch = true
num_samples = 2
max_concurrent = 2
[tune.space]
"train.learning_rate" = {loguniform = [1e-4, 1e-2]}
"""


def write(tmp_path, text, name="tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def ray_session():
    """One embedded Ray for the module (2 CPUs): run_search uses a Ray already started and leaves it running."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=False)
    yield ray
    ray.shutdown()


def test_a_local_grid_search_finds_the_known_best_learning_rate_and_writes_a_trainable_best_toml(
        ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary, best = run_search(write(tmp_path, GRID), tmp_path / "run", verbose=0)
    assert best["overrides"] == {"train.learning_rate": 3e-3}
    assert "train.learning_rate = 0.003" in summary and str(tmp_path / "run" / "best.toml") in summary

    best_toml = tmp_path / "run" / "best.toml"
    raw = tomllib.loads(best_toml.read_text())
    assert "tune" not in raw and raw["train"]["learning_rate"] == 3e-3 and raw["name"] == "tiny_tuned"
    assert load_experiment(best_toml).train.learning_rate == 3e-3  # what `trading-jax train RUN/best.toml` loads

    report = json.loads((tmp_path / "run" / "results.json").read_text())
    rows = report["trials"]
    assert sorted(r["overrides"]["train.learning_rate"] for r in rows) == [1e-7, 3e-3, 50.0]
    assert rows[0]["overrides"]["train.learning_rate"] == 3e-3  # best first
    assert all(r["status"] in ("finished", "stopped early") for r in rows)
    by_lr = {r["overrides"]["train.learning_rate"]: r for r in rows}
    assert by_lr[3e-3]["last"] < by_lr[1e-7]["last"] and by_lr[3e-3]["units"] == 4
    diverged = by_lr[50.0]["last"]
    assert not diverged == diverged or diverged > by_lr[1e-7]["last"]  # NaN or worse than not moving
    table = (tmp_path / "run" / "results.md").read_text()
    assert sum(line.startswith("| trial_") for line in table.splitlines()) == 3
    # every trial is a run folder of its own (checkpoints, TensorBoard), and Ray wrote its TensorBoard files
    for row in rows:
        assert (tmp_path / "run" / row["folder"] / "tensorboard").is_dir()
    assert list((tmp_path / "run" / "tune").glob("trial_*/events.out.tfevents.*"))


def test_pbt_restarts_a_trial_from_another_trials_checkpoint_with_its_own_learning_rate(
        ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary, best = run_search(write(tmp_path, PBT), tmp_path / "run", verbose=0)
    trials = tmp_path / "run" / "trials"
    restarted = sorted(p for p in trials.iterdir() if "-r" in p.name)
    assert restarted, f"no exploit happened: {sorted(p.name for p in trials.iterdir())}"
    from trading_jax.checkpoint import CheckpointConfig, Checkpointer

    def latest_learning_rates(folder):
        with Checkpointer(CheckpointConfig(directory=str(folder / "checkpoints" / "population"))) as ckpt:
            assert ckpt.latest_step() >= 3  # trained past the restore at unit 2
            state = ckpt.restore(ckpt.latest_step())
        return [float(v) for v in state["hparams"]["learning_rate"]]

    def config_lr(folder):
        return json.loads((folder / "config.json").read_text())["config"]["train"]["learning_rate"]

    exploited = []
    for folder in restarted:
        # every restart continued from a reported checkpoint (a donor's, or its own after a synch pause) ...
        swap = json.loads((folder / "restored.json").read_text())
        assert Path(swap["checkpoint"]).parent.parent == tmp_path / "run" / "tune"
        # ... with its own learning rate in the state, which it trained with and saved
        assert swap["hparams"][".learning_rate"] == pytest.approx([config_lr(folder)] * 2, rel=1e-6)
        assert latest_learning_rates(folder) == pytest.approx([config_lr(folder)] * 2, rel=1e-6)
        assert set(swap["changed"]) <= {".learning_rate"}
        if swap["changed"]:
            before, now = swap["changed"][".learning_rate"]
            assert before != pytest.approx(now, rel=1e-4)
            exploited.append(folder)
    # at least one trial took another's state and a mutated learning rate (PBT multiplies by 0.8 or 1.2 or resamples)
    assert exploited
    # every trial ended in its last restart's folder, trained to the end there
    rows = json.loads((tmp_path / "run" / "results.json").read_text())["trials"]
    assert len(rows) == 2 and all(r["status"] == "finished" and r["units"] == 5 and "-r" in r["folder"] for r in rows)
    assert all((tmp_path / "run" / r["folder"] / "results.json").exists() for r in rows)
    assert best is not None and (tmp_path / "run" / "best.toml").exists()


def test_a_metric_the_run_never_reports_is_one_line(ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = GRID.replace('metric = "val_loss"', 'metric = "val_los"').replace("[1e-7, 3e-3, 50.0]", "[3e-3]")
    text = text.replace("epochs = 4", "epochs = 1")
    with pytest.raises(ConfigError, match=r"\[tune\] metric = 'val_los': the run never reports it; its record has "
                                          r".*val_loss") as error:
        run_search(write(tmp_path, text), tmp_path / "run", verbose=0)
    assert "\n" not in str(error.value)


def test_a_bad_cluster_address_fails_fast_in_one_line(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ClusterError, match=r"no Ray cluster at 127\.0\.0\.1:1 .*ray start --head.*leave the address "
                                           "out") as error:
        run_search(write(tmp_path, GRID), tmp_path / "run", address="127.0.0.1:1", verbose=0)
    assert time.perf_counter() - start < 10 and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()  # nothing claimed
    with pytest.raises(ClusterError, match="expected HOST:PORT"):
        probe_address("nonsense")


def test_the_cli_says_a_bad_address_and_a_missing_ray_in_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys):
    from trading_jax.cli import EXIT_USAGE, main

    path = write(tmp_path, GRID)
    assert main(["tune", str(path), "--out", str(tmp_path / "run"), "--address", "127.0.0.1:1"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("trading-jax: error: no Ray cluster at 127.0.0.1:1") and "\n" not in err

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(RayMissingError, match="needs Ray"):
        run_search(path, tmp_path / "run2")
    assert main(["tune", str(path), "--out", str(tmp_path / "run2")]) == EXIT_USAGE
    assert capsys.readouterr().err.strip() == f"trading-jax: error: {RAY_MISSING}"


@pytest.mark.parametrize("change, message", [
    (('mode = "min"', 'mode = "min"\nsheduler = "asha"'), "[tune] unknown key 'sheduler' (did you mean 'scheduler'?)"),
    (('scheduler = "asha"', 'scheduler = "hyperband"'), "[tune] scheduler = 'hyperband': expected one of"),
    (('"train.learning_rate" = {grid = [1e-7, 3e-3, 50.0]}', '"train.learnig_rate" = {grid = [1e-3]}'),
     "[tune.space] 'train.learnig_rate' = 0.001 does not load: [train] unknown key 'learnig_rate' "
     "(did you mean 'learning_rate'?)"),
    (('"train.learning_rate" = {grid = [1e-7, 3e-3, 50.0]}', '"train.learning_rate" = {loguniform = [0.1, 0.01]}'),
     "[tune.space] 'train.learning_rate': loguniform = [0.1, 0.01]: expected low < high"),
    (('"train.learning_rate" = {grid = [1e-7, 3e-3, 50.0]}', '"train.learning_rate" = {loguniform = [0.0, 0.01]}'),
     "[tune.space] 'train.learning_rate': loguniform = [0.0, 0.01]: expected 0 < low < high"),
    (('"train.learning_rate" = {grid = [1e-7, 3e-3, 50.0]}', '"train.learning_rate" = {uniform = [-0.1, 0.01]}'),
     "[tune.space] 'train.learning_rate' = -0.1 does not load: [train] learning_rate = -0.1: expected a finite "
     "number > 0"),
    (('"train.learning_rate" = {grid = [1e-7, 3e-3, 50.0]}', '"train.epochs" = {randint = [1, 1]}'),
     "[tune.space] 'train.epochs': randint = [1, 1]: expected low < high"),
    (('"train.learning_rate" = {grid = [1e-7, 3e-3, 50.0]}', '"train.learning_rate" = {sample = [1, 2]}'),
     "[tune.space] 'train.learning_rate' = {'sample': [1, 2]}: expected one of {grid = [...]}"),
    (('"train.learning_rate" = {grid = [1e-7, 3e-3, 50.0]}', '"data.window.size" = {grid = [3]}'),
     "[tune.space] 'data.window.size': data.window is not a table"),
    (('grace_period = 2', 'grace_period = 0'), "[tune] grace_period = 0: expected an integer >= 1"),
])
def test_tune_table_mistakes_are_one_line_config_errors(tmp_path, change, message):
    path = write(tmp_path, GRID.replace(*change))
    with pytest.raises(ConfigError) as error:
        load_tune(tomllib.loads(path.read_text()), path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value) and "\n" not in str(error.value)


def test_train_ignores_the_tune_table_and_best_toml_round_trips_every_experiment_file(tmp_path):
    assert load_experiment(write(tmp_path, GRID)).train.learning_rate == pytest.approx(1e-3)  # the file's default
    for path in sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.toml")):
        raw = tomllib.loads(path.read_text())
        assert tomllib.loads(to_toml(raw)) == raw, path.name
    raw = tomllib.loads(GRID)
    assert apply_overrides(raw, {"train.model_kwargs.dropout": 0.1})["train"]["model_kwargs"] == {"dropout": 0.1}
    assert "tune" not in apply_overrides(raw, {})


def test_importing_the_package_and_training_do_not_import_ray():
    code = ("import sys, trading_jax, trading_jax.runs, trading_jax.cli, trading_jax.loop; "
            "from trading_jax.runs import tune; print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
