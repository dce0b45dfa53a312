"""Off-policy experiment files (`algorithm = "sac"`, "dqn", ...; `trading_jax.runs.rl`): a tiny SAC and a tiny DQN
run end to end through the CLI score every seed and the baselines on the same held-out episodes, a rerun
resumes without retraining, mistakes are one-line errors, and an all-NaN run is FAILED and exits 1."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from run_files import write  # noqa: E402
from trading_jax.runs import ConfigError, load_experiment, run_experiment

# 320 env steps: a warm-up of 32 vectorised steps x 2 envs (learning_starts 64), then 8 iterations of 16 x 2.
SAC = """
algorithm = "sac"
name = "tiny_sac"
seeds = [0, 1]
[env]
name = "trading"
[env.kwargs]
window = 8
episode_length = 16
n_paths = 8
action_mode = "continuous"
[sac]
num_envs = 2
steps_per_iteration = 16
total_timesteps = 320
learning_starts = 64
batch_size = 32
buffer_size = 1000
network_preset = "tiny"
[evaluation]
episodes = 8
baselines = ["flat", "buy_and_hold"]
reference = "flat"
metric = "net_return"
every_updates = 4
"""

DQN = (SAC.replace('algorithm = "sac"', 'algorithm = "dqn"').replace('name = "tiny_sac"', 'name = "tiny_dqn"')
       .replace('action_mode = "continuous"', 'action_mode = "discrete"')
       .replace("[sac]", "[dqn]\ntarget_update_interval = 16"))


def _train(path, out) -> tuple[int, str]:
    from trading_jax.cli import main

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", str(path), "--out", str(out), "--quiet"])
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`{algorithm: (file, run folder, exit code, stdout)}` of the tiny SAC and DQN runs (trained once)."""
    tmp = tmp_path_factory.mktemp("offpolicy")
    out = {}
    for name, text in (("sac", SAC), ("dqn", DQN)):
        path = write(tmp, text, f"{name}.toml")
        out[name] = (path, tmp / name, *_train(path, tmp / name))
    return out


@pytest.mark.parametrize("algorithm, label", [("sac", "SAC"), ("dqn", "DQN")])
def test_a_tiny_run_scores_every_seed_and_the_baselines_on_the_same_held_out_episodes(runs, algorithm, label):
    path, out, code, stdout = runs[algorithm]
    assert code == 0, stdout
    assert f"tiny_{algorithm}: net_return on 8 held-out episodes: {label} " in stdout
    report = json.loads((out / "results.json").read_text())
    assert report["status"] == "ok" and report["algorithm"] == algorithm
    rows = report["evaluation"]
    assert [row["policy"] for row in rows] == [f"{algorithm}_seed_0", f"{algorithm}_seed_1", "flat", "buy_and_hold"]
    assert all(np.isfinite(row["net_return_mean"]) and row["n_episodes"] == 8 for row in rows)
    assert rows[2]["net_return_mean"] == 0.0 and rows[2]["net_return_diff_mean"] == 0.0  # flat, paired with itself
    assert report[f"{algorithm}_across_seeds"]["n"] == 2
    assert report[algorithm]["env"] == "trading" and report[algorithm]["total_timesteps"] == 320
    for seed in report["seeds"]:  # 8 iterations of 2 envs x 16 steps after the warm-up: 256 env steps
        assert seed["resumed_from"] == 0 and seed["unit"] == "iteration"
        assert seed["env_steps_per_s"] * seed["seconds"] == pytest.approx(256)
        assert sorted(map(int, seed["validation"])) == [4, 8]  # validation after each chunk of 4 iterations
        assert all(np.isfinite(v) for v in seed["validation"].values())
    assert "three different market banks" in report["data"]["source"]  # synthetic test paths held out too
    table = (out / "results.md").read_text()
    assert f"| {algorithm}_seed_1 |" in table and "paired diff vs flat" in table
    assert f"{label} across 2 training seeds" in table
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["seed_0", "seed_1"]
    if algorithm == "dqn":  # discrete actions: the share of steps per action (0 short, 1 flat, 2 long)
        assert rows[2]["action_share"] == [0.0, 1.0, 0.0] and rows[3]["action_share"] == [0.0, 0.0, 1.0]


def test_a_rerun_resumes_from_the_checkpoints_without_retraining_and_gives_the_same_table(runs):
    path, out, _, _ = runs["dqn"]
    before = json.loads((out / "results.json").read_text())
    checkpoints = {p: p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("*") if p.is_file()}
    summary, ok = run_experiment(load_experiment(path), out, show_progress=False)
    assert ok, summary
    after = json.loads((out / "results.json").read_text())
    assert after["evaluation"] == before["evaluation"]
    assert {p: p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("*") if p.is_file()} == checkpoints
    assert [(s["resumed_from"], s["env_steps_per_s"]) for s in after["seeds"]] == [(8, None), (8, None)]
    assert ("Training: seed 0: restored from its last checkpoint (iteration 8), not retrained, seed 1: restored"
            in (out / "results.md").read_text())


def test_a_synthetic_bank_env_is_validated_and_scored_on_market_paths_it_never_trained_on(runs):
    from trading_jax.runs.rl import build_envs

    _, train, val, test, info = build_envs(load_experiment(runs["sac"][0]))
    closes = [np.asarray(params.market.close) for params in (train, val, test)]
    assert closes[0].shape == closes[1].shape == closes[2].shape == (8, 16 + 8 + 64, 1)  # n_paths, bars, assets
    assert not np.isin(closes[1], closes[0]).any() and not np.isin(closes[2], closes[0]).any()
    assert not np.isin(closes[2], closes[1]).any()
    assert info["source"].endswith("three different market banks (seed 0, 1 and 2)")


@pytest.mark.parametrize("text, change, message", [
    (SAC, ("batch_size = 32", "batch_size = 32\ngradient_step = 2"),
     "[sac] unknown key 'gradient_step' (did you mean 'gradient_steps'?)"),
    (SAC, ("batch_size = 32", "batch_size = 32\nlr = nan"), "[sac] lr = nan: expected a finite number > 0"),
    (SAC, ("batch_size = 32", "batch_size = 32\ngamma = 1.5"), "[sac] gamma = 1.5: expected a number in (0, 1]"),
    (SAC, ('network_preset = "tiny"', 'network_preset = "tiny"\n[sac.network_kwargs]\nhiden = [8]'),
     "[sac.network_kwargs] unknown key 'hiden' (did you mean 'hidden'?)"),
    (SAC, ('network_preset = "tiny"', 'network_preset = "tiny"\n[sac.network_kwargs]\nhidden = "abc"'),
     "[sac.network_kwargs] hidden = 'abc': expected layer sizes, integers >= 1 (e.g. [64, 64])"),
    (SAC, ('network_preset = "tiny"', 'network_preset = "tiny"\n[sac.network_kwargs]\nactivation = "sigmoid"'),
     "[sac.network_kwargs] activation must be one of ['elu', 'gelu', 'relu', 'tanh'], got 'sigmoid'"),
    (SAC, ('network_preset = "tiny"', 'network_preset = "tiny"\ncritic_network = "critc_ensemble"'),
     "[sac] unknown key 'critc_ensemble' (did you mean 'critic_ensemble'?)"),
    (SAC, ("total_timesteps = 320", "total_timesteps = 64"), "[sac] total_timesteps=64 leaves no iteration"),
    (SAC, ("[sac]", "[dqn]"), "[dqn] is the table of algorithm = 'dqn', but the file has algorithm = 'sac': name its settings [sac]"),
    (DQN, ("batch_size = 32", "batch_size = 32\nlr = nan"), "[dqn] lr = nan: expected a finite number > 0"),
    (DQN, ("batch_size = 32", "batch_size = 32\nexploration_fraction = 0.0"),
     "[dqn] exploration_fraction = 0.0: expected a number in (0, 1]"),
])
def test_a_mistake_in_an_off_policy_file_is_one_line_naming_the_table_and_key(tmp_path, text, change, message):
    path = write(tmp_path, text.replace(*change, 1))
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    assert str(error.value).startswith(f"{path}: {message}"), str(error.value)
    assert "\n" not in str(error.value)


def test_the_cli_refuses_a_nan_learning_rate_in_one_line_before_claiming_the_folder(tmp_path, capsys):
    from trading_jax.cli import main

    path = write(tmp_path, SAC.replace("batch_size = 32", "batch_size = 32\nlr = nan"))
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == f"trading-jax: error: {path}: [sac] lr = nan: expected a finite number > 0"
    assert not (tmp_path / "out" / "config.json").exists()


def test_an_all_nan_sac_run_is_failed_in_its_table_and_exits_1(runs, tmp_path):
    # lr 1e30 is a finite number (accepted): the first Adam steps throw the networks to +-1e30, and every loss and
    # param after them is NaN; every iteration's critic loss (a plain mean over its steps) is then NaN too (the
    # compiled program is the tiny SAC run's: lr is an argument, so this is cheap)
    path = write(tmp_path, SAC.replace("batch_size = 32", "batch_size = 32\nlr = 1e30").replace("seeds = [0, 1]",
                                                                                                 "seeds = [0]"))
    code, stdout = _train(path, tmp_path / "out")
    assert code == 1
    reason = "seed 0: the critic loss was NaN or inf in every iteration"
    assert f"tiny_sac: FAILED: {reason}" in stdout
    table = (tmp_path / "out" / "results.md").read_text()
    assert f"**FAILED**: {reason}" in table and "| sac_seed_0 |" not in table
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["status"] == "FAILED" and report["failures"] == {"0": "the critic loss was NaN or inf in every iteration"}
    assert [row["policy"] for row in report["evaluation"]] == ["flat", "buy_and_hold"]  # the baselines still scored


def test_a_seed_fails_when_its_loss_is_nan_or_inf_in_every_iteration_or_its_params_are_not_finite():
    from types import SimpleNamespace

    from trading_jax.runs.rl import AGENTS, failed_reason

    assert {name: agent.failure_metric for name, agent in AGENTS.items()} == {
        "ppo": "policy_loss", "sac": "critic_loss", "td3": "critic_loss", "ddpg": "critic_loss", "dqn": "q_loss"}
    finite = {"w": np.ones(3, np.float32)}
    diverged = SimpleNamespace(params=finite, metrics={"q_loss": np.array([np.nan, np.inf, -np.inf])})
    assert failed_reason(diverged, "q_loss", "iteration") == "the q loss was NaN or inf in every iteration"
    recovered = SimpleNamespace(params=finite, metrics={"q_loss": np.array([np.nan, 0.5, np.nan])})
    assert failed_reason(recovered, "q_loss", "iteration") is None
    broken = SimpleNamespace(params={"w": np.array([1.0, np.nan])}, metrics={"q_loss": np.array([0.5])})
    assert failed_reason(broken, "q_loss", "iteration") == "the final params are not finite"


def test_an_off_policy_or_comparison_run_is_named_by_the_exporter_which_refuses_it_for_now():
    from trading_jax.export.from_run import BUILDERS, run_algorithm

    assert run_algorithm({"env": "trading", "sac": {}, "episodes": 8}) == "sac"
    assert run_algorithm({"env": "trading", "dqn": {}}) == "dqn"
    comparison = {"algorithm": "rl_comparison", "env": "portfolio", "ppo": {}, "sac": {}, "ensemble": {}}
    assert run_algorithm(comparison) == "rl_comparison"  # not mistaken for a PPO ensemble
    assert run_algorithm({"env": "execution", "ppo": {}, "ensemble": {}}) == "ppo_ensemble"
    assert not {"sac", "td3", "ddpg", "dqn", "rl_comparison"} & set(BUILDERS)
