"""Experiment files of the meta-learning and ensemble algorithms (`algorithm = "maml"`, "ensemble",
"ppo_ensemble"): nonsense is refused in one line, and a tiny ensemble run writes a table whose rows are the
comparisons the issue asks for (the tiny MAML and PPO-ensemble runs: test_runs_maml.py, test_runs_ppo_ensemble.py,
split off so that the two test workers balance)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from run_files import ENSEMBLE, MAML, PPO_ENSEMBLE, write  # noqa: E402
from trading_jax.runs import ConfigError, load_experiment, run_experiment


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


def test_an_absolute_data_path_loads_and_a_missing_one_is_one_line(tmp_path):
    (tmp_path / "bars").mkdir()
    (tmp_path / "bars" / "AAA.csv").write_text("Date,Open,High,Low,Close,Volume\n2020-01-01,1,2,0.5,1.5,100\n")
    text = MAML.replace('source = "synthetic"', 'source = "assets"') + f'[data]\nsource = "{tmp_path / "bars"}"\n'
    assert load_experiment(write(tmp_path, text)).data.source == str(tmp_path / "bars")
    with pytest.raises(ConfigError) as error:
        load_experiment(write(tmp_path, text.replace(str(tmp_path / "bars"), str(tmp_path / "nope" / "*.csv"))))
    assert "[data] source" in str(error.value) and "no such file or folder" in str(error.value)
