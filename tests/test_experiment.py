"""Experiment files: loading with clear errors, and one tiny end-to-end run with its artefacts."""

import json
from pathlib import Path

import numpy as np
import pytest

from trading_jax.models import available
from trading_jax.training.experiment import load_experiment, mean_ci, run_experiment

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_file_loads_and_names_a_registered_model(path):
    from trading_jax.rl.experiment import _ppo_config, is_rl_experiment, load_rl_experiment
    from trading_jax.rl.baselines import available as baselines

    if is_rl_experiment(path):
        experiment = load_rl_experiment(path)
        _ppo_config(experiment)  # every [ppo] key is a PPOConfig field and the sizes are consistent
        assert set(experiment.baselines) <= set(baselines(experiment.env))
        assert experiment.episodes >= 1000
    else:
        experiment = load_experiment(path)
        assert experiment.train.model in available()
    assert len(experiment.seeds) >= 3, "results are reported over several seeds"


def test_unknown_keys_are_errors_naming_the_file_and_table(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[data]\nwindoww = 3\n[train]\nmodel = "tcn"\n')
    with pytest.raises(ValueError, match=r"bad.toml: unknown key\(s\) \['windoww'\] in \[data\]"):
        load_experiment(path)


def test_mean_ci_matches_a_hand_worked_student_t_interval():
    out = mean_ci([1.0, 2.0, 3.0])
    # mean 2, s = 1, t_{0.975, 2} = 4.302653, half-width = 4.302653 / sqrt(3)
    assert out["mean"] == 2.0 and out["std"] == 1.0
    np.testing.assert_allclose(out["ci95"], [2 - 2.484138, 2 + 2.484138], rtol=1e-6)


def test_a_tiny_experiment_trains_checkpoints_logs_and_reports_held_out_metrics(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text("""
name = "tiny"
seeds = [0, 1]
[data]
synthetic_bars = 700
synthetic_assets = 2
window = 16
horizon = 3
[train]
model = "tcn"
preset = "tiny"
task = "regression"
epochs = 2
batch_size = 32
""")
    summary = run_experiment(load_experiment(config), tmp_path / "out")
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(report["summary"]) == {"model", "baseline_zero_return", "baseline_last_return"}
    assert report["summary"]["model"]["rmse"]["n"] == 2
    train_stop, test_start = report["info"]["split"]["train"][1], report["info"]["split"]["test"][0]
    assert test_start > train_stop, "the test split comes after training data"
    assert all(np.isfinite(s["history"]["val_loss"]).all() for s in report["seeds"])
    assert (tmp_path / "out" / "results.md").read_text().startswith("# tiny")
    assert any((tmp_path / "out" / "checkpoints" / "seed_0").iterdir())
    assert list((tmp_path / "out" / "tensorboard" / "seed_1").glob("events.out.tfevents.*"))
    assert "tiny: tcn on synthetic market" in summary
