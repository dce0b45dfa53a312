"""Experiment files of the meta-learning and ensemble algorithms (`algorithm = "maml"`, "ensemble",
"ppo_ensemble"): nonsense is refused in one line, and a tiny run of each writes a table whose rows are the
comparisons the issue asks for, resumes, and reads no held-out task while training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trading_jax.runs import ConfigError, load_experiment, run_experiment

MAML = """
algorithm = "maml"
name = "tiny_maml"
seeds = [0, 1]
every = 2
[maml]
model = "tcn"
preset = "tiny"
inner_steps = 2
inner_lr = 0.05
meta_batch = 2
support = 5
query = 5
meta_steps = 4
[tasks]
source = "synthetic"
[tasks.synthetic]
window = 8
support_bars = 40
query_bars = 24
[pretrain]
epochs = 1
tasks = 8
[evaluation]
shots = [5, 20]
query = 10
tasks = 3
"""

ENSEMBLE = """
algorithm = "ensemble"
name = "tiny_ensemble"
seeds = [0, 1]
[data]
synthetic_bars = 500
synthetic_assets = 2
window = 8
horizon = 2
dead_band = 0.002
[train]
model = "tcn"
preset = "tiny"
task = "classification"
epochs = 1
batch_size = 64
[train.model_kwargs]
n_classes = 3
[ensemble]
members = 3
diversity = "bootstrap"
window = 10
"""

PPO_ENSEMBLE = """
algorithm = "ppo_ensemble"
name = "tiny_ppo_ensemble"
seeds = [0, 1]
[env]
name = "execution"
[env.kwargs]
horizon = 10
[ppo]
num_envs = 4
num_steps = 10
total_timesteps = 80
update_epochs = 1
minibatch_size = 20
[evaluation]
episodes = 12
every_updates = 1
[ensemble]
val_episodes = 4
[ensemble.hparams]
lr = [0.0003, 0.001]
"""


def write(tmp_path, text, name="tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, change, message", [
    (MAML, ("inner_lr = 0.05", "inner_lr = -1.0"), "[maml] inner_lr = -1.0: expected a finite number > 0"),
    (MAML, ("inner_steps = 2", 'inner_steps = 2\nmethod = "reptile"'), "[maml] method must be one of"),
    (MAML, ("inner_steps = 2", 'inner_steps = 2\ninner_optimizer = "adam"\nadam_eps_root = 0.0'),
     "[maml] adam_eps_root = 0.0: expected a finite number > 0"),
    (MAML, ('source = "synthetic"', 'source = "synthetc"'), "[tasks] source = 'synthetc': expected one of"),
    (MAML, ("shots = [5, 20]", "shots = [0, 5]"), "[evaluation] shots = [0, 5]: expected a list of positive integers"),
    (MAML, ("[pretrain]", "[pretrain]\nepoch = 2"), "[pretrain] unknown key 'epoch' (did you mean 'epochs'?)"),
    (MAML, ("shots = [5, 20]", "shots = [5, 500]"), "[evaluation] shots / query = 500 / 10: SyntheticRegimeTasks"),
    (MAML, ("window = 8", 'window = 8\nmodel = "gbmm"'), "[tasks.synthetic] model must be one of"),
    (MAML, ('source = "synthetic"', 'source = "assets"'), "[tasks] source = \"assets\" needs [data] source"),
    (ENSEMBLE, ('diversity = "bootstrap"', 'diversity = "bagging"'), "[ensemble] diversity = 'bagging': expected one of"),
    (ENSEMBLE, ("members = 3", "members = 1"), "[ensemble] an ensemble needs at least 2 members"),
    (ENSEMBLE, ('task = "classification"', 'task = "regression"'), "[train] task = 'regression': ensembles here combine"),
    (ENSEMBLE, ("window = 10", "window = 10\n[[ensemble.groups]]\nmodel = \"tnc\""),
     "[ensemble.groups.0] unknown key 'tnc' (did you mean 'tcn'?)"),
    (PPO_ENSEMBLE, ("seeds = [0, 1]", "seeds = [0]"), "an ensemble needs at least 2 agents"),
    (PPO_ENSEMBLE, ("val_episodes = 4", "val_episodes = 4\ndiscount = 1.5"),
     "[ensemble] discount = 1.5: expected a number in (0, 1]"),
    (PPO_ENSEMBLE, ("lr = [0.0003, 0.001]", "lr = [0.0003]"), "[ensemble.hparams] lr = [0.0003]: expected a list of 2"),
    (PPO_ENSEMBLE, ("lr = [0.0003, 0.001]", "lrr = [0.0003, 0.001]"),
     "[ensemble.hparams] unknown key 'lrr' (did you mean 'lr'?)"),
])
def test_nonsense_in_a_meta_or_ensemble_file_is_one_line_naming_the_table(tmp_path, text, change, message):
    old, new = change
    assert old in text
    with pytest.raises(ConfigError) as error:
        load_experiment(write(tmp_path, text.replace(old, new)))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_tiny_maml_run_compares_maml_with_pretraining_scratch_and_zero_for_every_k(tmp_path):
    experiment = load_experiment(write(tmp_path, MAML))
    summary, ok = run_experiment(experiment, tmp_path / "run", show_progress=False)
    assert ok, summary
    report = json.loads((tmp_path / "run" / "results.json").read_text())
    rows = set(report["summary"])
    for k in (5, 20):
        assert {f"maml/{k}", f"pretrain/{k}", f"scratch/{k}"} <= rows
    assert {"maml/0", "pretrain/0", "zero_forecast/0"} <= rows
    for row, metrics in report["summary"].items():
        assert np.isfinite(metrics["mse"]["mean"]) and metrics["mse"]["n"] == 2, row
    assert "maml-pretrain" in (tmp_path / "run" / "results.md").read_text()
    # meta-training ran every step of both seeds (one vmapped population) and none was skipped
    for seed in report["seeds"]:
        assert len(seed["meta_history"]["meta_loss"]) == 4 and not any(seed["meta_history"]["skipped"])
    # a rerun resumes (the folder holds the same config) and gives the same table
    again, ok = run_experiment(experiment, tmp_path / "run", show_progress=False)
    assert ok and again == summary


def test_a_tiny_ensemble_run_scores_every_rule_against_its_best_and_mean_member(tmp_path):
    summary, ok = run_experiment(load_experiment(write(tmp_path, ENSEMBLE)), tmp_path / "run", show_progress=False)
    assert ok, summary
    report = json.loads((tmp_path / "run" / "results.json").read_text())
    rows = report["summary"]
    for name in ("best_member", "mean_member", "ensemble_mean", "ensemble_static_val", "ensemble_rolling",
                 "ensemble_confidence", "ensemble_threshold", "ensemble_agreement", "baseline_majority_class"):
        assert name in rows and rows[name]["accuracy"]["n"] == 2, name
    seed = report["seeds"][0]
    assert len(seed["members"]) == 3
    # the best member is picked on validation: its test row is that member's, whichever scores best on test
    assert seed["rows"]["best_member"] == seed["members"][seed["best_member_index"]]
    assert seed["best_member_index"] == int(np.argmin(seed["val_log_loss"]))
    mean_acc = np.mean([m["accuracy"] for m in seed["members"]])
    assert seed["rows"]["mean_member"]["accuracy"] == pytest.approx(mean_acc)
    # the filters act on a subset; the full rules on every sample
    assert seed["rows"]["ensemble_mean"]["coverage"] == 1.0
    assert 0.0 <= seed["rows"]["ensemble_agreement"]["coverage"] <= 1.0
    assert set(report["minus_best_member"]) == {"ensemble_mean", "ensemble_static_val", "ensemble_rolling",
                                                "ensemble_confidence"}


def test_a_tiny_ppo_ensemble_run_scores_every_agent_thompson_and_the_sharpe_pick_on_the_same_episodes(tmp_path):
    summary, ok = run_experiment(load_experiment(write(tmp_path, PPO_ENSEMBLE)), tmp_path / "run", show_progress=False)
    assert ok, summary
    report = json.loads((tmp_path / "run" / "results.json").read_text())
    labels = [r["label"] for r in report["rows"]]
    assert labels == ["ppo_seed_0", "ppo_seed_1", "thompson", "sharpe_pick"]
    picked = next(r for r in report["rows"] if r["label"] == f"ppo_seed_{report['picked']}")
    pick = next(r for r in report["rows"] if r["label"] == "sharpe_pick")
    assert pick["mean"] == picked["mean"]  # FinRL's rule trades the picked agent on the same test episodes
    assert len(report["thompson_arms"]) == 12 and sum(report["thompson_share"]) == pytest.approx(1.0)
    text = (tmp_path / "run" / "results.md").read_text()
    assert "Thompson" in text and "lr [0.0003, 0.001]" in text  # the agents differ by seed and learning rate
    # exported for serving: every agent, and the one the caller picks acts
    from trading_jax.export import ExportError, export_run, load_exported

    export_run(tmp_path / "run", tmp_path / "export", onnx=False)
    model = load_exported(tmp_path / "export")
    assert model.metadata["sharpe_picked_agent"] == [0, 1].index(report["picked"])
    obs = np.random.default_rng(7).normal(size=(6, 15)).astype(np.float32)
    agent = np.array([0, 1, 1, 0, 1, 0])
    out = model(obs, agent)
    np.testing.assert_array_equal(out["action"], out["member_actions"][np.arange(6), agent])
    with pytest.raises(ExportError, match=r"input 'agent' must lie in 0 .. 1"):
        model(obs, agent + 1)
    with pytest.raises(ExportError, match="must hold whole numbers"):
        model(obs, agent + 0.5)


HANG = """
import jax, trading_jax
from trading_jax.rl.ppo import PPOConfig, make_trainer
config = PPOConfig(env="execution", env_kwargs={"horizon": 10}, num_envs=4, num_steps=10, total_timesteps=80,
                   update_epochs=1, minibatch_size=20)
trainer = make_trainer(config).population(2)
state, _ = trainer.run(trainer.init(jax.random.split(jax.random.key(0), 2)), 1)
print(trainer.counter(state).tolist())
"""


def test_a_vmapped_ppo_population_finishes_on_cpu(tmp_path):
    """XLA:CPU's concurrency-optimised scheduler deadlocked this program (0% CPU, forever) until importing
    trading_jax turned it off; run in a subprocess so a regression fails instead of hanging the suite."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", HANG], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[1, 1]"


def test_an_absolute_data_path_loads_and_a_missing_one_is_one_line(tmp_path):
    (tmp_path / "bars").mkdir()
    (tmp_path / "bars" / "AAA.csv").write_text("Date,Open,High,Low,Close,Volume\n2020-01-01,1,2,0.5,1.5,100\n")
    text = MAML.replace('source = "synthetic"', 'source = "assets"') + f'[data]\nsource = "{tmp_path / "bars"}"\n'
    assert load_experiment(write(tmp_path, text)).data.source == str(tmp_path / "bars")
    with pytest.raises(ConfigError) as error:
        load_experiment(write(tmp_path, text.replace(str(tmp_path / "bars"), str(tmp_path / "nope" / "*.csv"))))
    assert "[data] source" in str(error.value) and "no such file or folder" in str(error.value)
