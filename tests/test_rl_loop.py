"""PPO around the jitted loop: chunked fit with Orbax checkpoints and exact resume, TensorBoard, the
progress bar, and RL experiment files run end to end (train over seeds, evaluate against baselines)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from trading_jax.checkpoint import CheckpointConfig, Checkpointer
from trading_jax.logging import TensorBoardWriter
from trading_jax.runs import ConfigError, load_experiment
from trading_jax.loop import fit
from trading_jax.rl.ppo import PPOConfig, make_trainer

CONFIG = PPOConfig(env="execution", env_kwargs={"horizon": 8}, num_envs=8, num_steps=8, total_timesteps=8 * 8 * 5,
                   update_epochs=2, minibatch_size=32, network_preset="tiny")


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def trainer():
    return make_trainer(CONFIG)


def same(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def ckpt(path) -> Checkpointer:
    return Checkpointer(CheckpointConfig(str(path), save_every_steps=1, keep_best=1, best_metric="episode_return",
                                         mode="max"))


def test_a_killed_ppo_run_resumes_from_its_checkpoint_to_the_same_final_params(trainer, tmp_path, capsys):
    key = jax.random.key(3)
    expected = trainer.train(key)

    def kill_after_update_4(state, chunk, done):
        if int(state.update) == 4:
            raise Killed

    first = ckpt(tmp_path / "run")
    with pytest.raises(Killed):
        fit(trainer, key, checkpointer=first, every=2, callbacks=[kill_after_update_4])
    first.close()
    assert "episode_return=" in capsys.readouterr().err  # the progress bar shows the return

    second = ckpt(tmp_path / "run")
    assert second.latest_step() == 4
    with TensorBoardWriter(tmp_path / "tb") as writer:
        result = fit(trainer, key, checkpointer=second, every=2, writer=writer)  # chunks of 2 updates: 4 -> 5
    assert same(result.params, expected.params) and same(result.metrics, expected.metrics)
    assert second.latest_step() == 5 and set(second.metrics()) == {2, 4, 5}
    second.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_max_updates_stops_early_and_periodic_evaluation_reaches_the_checkpoint_metrics(trainer, tmp_path):
    seen = []

    def evaluate(policy_params, updates):
        seen.append(updates)
        return {"held_out": float(updates)}

    with ckpt(tmp_path / "run") as c:
        fit(trainer, jax.random.key(0), checkpointer=c, every=2, max_units=3, evaluate=evaluate, show_progress=False)
        assert seen == [2, 3] and c.latest_step() == 3
        assert c.metrics()[3]["held_out"] == 3.0


EXPERIMENT = """
algorithm = "ppo"
name = "tiny_execution"
seeds = [0, 1]

[env]
name = "execution"
[env.kwargs]
horizon = 8

[ppo]
num_envs = 8
num_steps = 8
total_timesteps = 256
update_epochs = 2
minibatch_size = 32
network_preset = "tiny"

[evaluation]
episodes = 64
metric = "shortfall_bps"
lower_is_better = true
baselines = ["immediate", "twap"]
reference = "twap"
every_updates = 2
"""


def test_trading_jax_train_runs_an_rl_experiment_file_over_every_seed_against_the_baselines_on_the_same_episodes(
        tmp_path, capsys):
    from trading_jax.cli import main

    path = tmp_path / "tiny.toml"
    path.write_text(EXPERIMENT)
    assert main(["train", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "tiny_execution: shortfall_bps on 64 held-out episodes" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["policy"] for row in report["evaluation"]] == ["ppo_seed_0", "ppo_seed_1", "immediate", "twap"]
    twap = report["evaluation"][3]
    assert twap["action_share"][7] == 1.0 and report["evaluation"][2]["action_share"][3] == 1.0  # TWAP, market 50%
    assert all(abs(sum(row["action_share"]) - 1) < 1e-9 for row in report["evaluation"])
    assert twap["shortfall_bps_diff_mean"] == 0.0  # paired with itself
    assert all(np.isfinite(row["shortfall_bps_mean"]) and row["completed"] == 1.0 for row in report["evaluation"])
    assert report["ppo_across_seeds"]["n"] == 2
    curve = report["seeds"][0]["validation"]  # validation episodes after each chunk of 2 updates
    assert sorted(map(int, curve)) == [2, 4] and all(np.isfinite(v) for v in curve.values())
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| ppo_seed_1 |" in table and "paired diff vs twap" in table
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["seed_0", "seed_1"]


def test_rl_experiment_files_name_unknown_keys_and_refuse_nonsense(tmp_path):
    path = tmp_path / "bad.toml"
    cases = {
        ("every_updates = 2", "every_update = 2"):
            "[evaluation] unknown key 'every_update' (did you mean 'every_updates'?)",
        ('reference = "twap"', 'reference = "vwap"'):
            "[evaluation] reference = 'vwap': expected one of the baselines ['immediate', 'twap']",
        ("horizon = 8", "horizon = 8\nfee_bps = -1.0"): "[env.kwargs] unknown key 'fee_bps'",
        ("horizon = 8", "horizon = 8\nspread_mean = -0.01"):
            "[env.kwargs] spread_mean = -0.01: expected a finite number >= 0 (a cost)",
        ("minibatch_size = 32", "minibatch_size = 32\ngamma = 1.5"):
            "[ppo] gamma = 1.5: expected a number in (0, 1]",
        ("minibatch_size = 32", "minibatch_size = 32\nlr = nan"): "[ppo] lr = nan: expected a finite number > 0",
        ("num_envs = 8", 'num_envs = "8"'): "[ppo] num_envs = '8': expected an integer",
        ('network_preset = "tiny"', 'network_preset = "tiny"\n[ppo.network_kwargs]\nhidden = 8'):
            "[ppo.network_kwargs] unknown key 'hidden' (did you mean 'actor_hidden'?)",
        ('reference = "twap"', 'reference = "twap"\n[evaluation.baseline_kwargs.vwap]\nx = 1'):
            "[evaluation.baseline_kwargs.vwap]: 'vwap' is not one of the baselines ['immediate', 'twap']",
        ('name = "execution"', 'name = "executon"'):
            "[env] name = 'executon': expected one of execution, portfolio, trading",
    }
    for (old, new), message in cases.items():
        path.write_text(EXPERIMENT.replace(old, new))
        with pytest.raises(ConfigError) as error:
            load_experiment(path)
        assert str(error.value).startswith(f"{path}: {message}"), str(error.value)
