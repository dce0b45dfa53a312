"""Cross-algorithm RL comparisons (`algorithm = "rl_comparison"`; `trading_jax.runs.rl`): a tiny PPO + SAC comparison
through the CLI scores every agent of every algorithm, the baselines, the cross-algorithm Thompson ensemble and the
Sharpe pick on the same held-out episodes, with each algorithm's interval over its seeds; a rerun restores every seed
without retraining; the replayed ensemble is the live one; mistakes are one-line errors."""

from __future__ import annotations

import contextlib
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from run_files import write  # noqa: E402
from trading_jax.runs import ConfigError, load_experiment, run_experiment

# The env and [sac] table are tests/test_runs_offpolicy.py's tiny SAC run, so the session's compilation cache serves
# both files the same SAC programs.
COMPARISON = """
algorithm = "rl_comparison"
name = "tiny_comparison"
seeds = [0, 1]
[env]
name = "trading"
[env.kwargs]
window = 8
episode_length = 16
n_paths = 8
action_mode = "continuous"
[ppo]
num_envs = 4
num_steps = 16
total_timesteps = 256
update_epochs = 1
minibatch_size = 32
network_preset = "tiny"
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
[ensemble]
val_episodes = 4
"""
AGENTS = ["ppo_seed_0", "ppo_seed_1", "sac_seed_0", "sac_seed_1"]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """`(file, run folder, exit code, stdout)` of the tiny comparison, trained once through the CLI."""
    from trading_jax.cli import main

    tmp = tmp_path_factory.mktemp("comparison")
    path = write(tmp, COMPARISON, "comparison.toml")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", str(path), "--out", str(tmp / "run"), "--quiet"])
    return path, tmp / "run", code, stdout.getvalue()


def test_every_agent_baseline_the_thompson_ensemble_and_the_sharpe_pick_are_scored_on_the_same_episodes(comparison):
    _, out, code, stdout = comparison
    assert code == 0, stdout
    assert "tiny_comparison: net_return on 8 held-out episodes: PPO " in stdout and ", SAC " in stdout
    report = json.loads((out / "results.json").read_text())
    assert report["status"] == "ok" and report["algorithms"] == ["ppo", "sac"]
    rows = {row["policy"]: row for row in report["evaluation"]}
    assert list(rows) == AGENTS + ["flat", "buy_and_hold", "thompson", "sharpe_pick"]
    assert all(row["n_episodes"] == 8 and np.isfinite(row["net_return_mean"]) for row in rows.values())
    assert rows["flat"]["net_return_mean"] == 0.0 and rows["flat"]["net_return_diff_mean"] == 0.0
    values = {name: np.asarray(v) for name, v in report["episode_values"].items()}
    ensemble = report["ensemble"]
    arms = np.asarray(ensemble["arms"])
    assert arms[:4].tolist() == [0, 1, 2, 3]  # one round-robin episode per agent, then Thompson sampling
    agents = np.stack([values[name] for name in AGENTS])
    # the ensemble's episode i is agent arms[i]'s episode i: paired with every row, the reference included
    np.testing.assert_array_equal(ensemble["thompson"], agents[arms, np.arange(8)])
    assert rows["thompson"]["net_return_mean"] == pytest.approx(agents[arms, np.arange(8)].mean(), abs=1e-12)
    assert rows["thompson"]["net_return_diff_mean"] == pytest.approx(rows["thompson"]["net_return_mean"], abs=1e-12)
    picked = ensemble["picked"]
    assert picked in AGENTS and ensemble["validation_sharpe"][picked] == max(ensemble["validation_sharpe"].values())
    assert rows["sharpe_pick"]["net_return_mean"] == rows[picked]["net_return_mean"]
    assert ensemble["share"] == {name: float(np.mean(arms == k)) for k, name in enumerate(AGENTS)}
    assert ensemble["share_by_algorithm"]["ppo"] == pytest.approx(float(np.mean(arms < 2)))
    assert sorted(str(p.relative_to(out / "checkpoints")) for p in (out / "checkpoints").glob("*/*")) == [
        "ppo/seed_0", "ppo/seed_1", "sac/seed_0", "sac/seed_1"]
    table = (out / "results.md").read_text()
    for name in AGENTS + ["flat", "buy_and_hold", "thompson", "sharpe_pick"]:
        assert f"| {name} |" in table
    assert "share of Thompson's episodes" in table and "## What is better or worse" in table


def test_each_algorithm_has_an_interval_over_its_seeds_means_and_their_differences_to_the_reference(comparison):
    report = json.loads((comparison[1] / "results.json").read_text())
    rows = {row["policy"]: row for row in report["evaluation"]}
    for name in ("ppo", "sac"):
        entry = report["per_algorithm"][name]
        m0, m1 = rows[f"{name}_seed_0"]["net_return_mean"], rows[f"{name}_seed_1"]["net_return_mean"]
        across = entry["across_seeds"]
        assert entry["seeds"] == [0, 1] and across["n"] == 2 and across["mean"] == pytest.approx((m0 + m1) / 2)
        # two seeds: std = |m0 - m1| / sqrt 2, so the half-width is t(0.975, 1 df) |m0 - m1| / 2 = 12.706 |m0 - m1| / 2
        assert across["ci95_high"] - across["mean"] == pytest.approx(12.7062 * abs(m0 - m1) / 2, rel=1e-4)
        assert entry["minus_reference"]["mean"] == pytest.approx((m0 + m1) / 2)  # the reference (flat) earns 0
    assert [(p["a"], p["b"]) for p in report["pairwise"]] == [("ppo", "sac")]
    ppo, sac = (report["per_algorithm"][n]["across_seeds"]["mean"] for n in ("ppo", "sac"))
    pair = report["pairwise"][0]
    assert pair["mean"] == pytest.approx(ppo - sac) and pair["ci95_low"] < pair["mean"] < pair["ci95_high"]
    table = (comparison[1] / "results.md").read_text()
    assert "## Per algorithm, across training seeds" in table and "| PPO | 2 |" in table and "| SAC | 2 |" in table
    # the table calls a difference better or worse only when its 95% interval excludes 0
    said = ("PPO is **better** than SAC" if pair["ci95_low"] > 0
            else "PPO is **worse** than SAC" if pair["ci95_high"] < 0
            else "**No clear difference** between PPO and SAC (the interval includes 0)")
    assert f"- {said}: difference of the seed means {pair['mean']:+.4g}" in table


def test_a_rerun_restores_every_seed_of_every_algorithm_without_retraining_and_gives_the_same_table(comparison):
    path, out, _, _ = comparison
    before = json.loads((out / "results.json").read_text())
    checkpoints = {p: p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("*") if p.is_file()}
    summary, ok = run_experiment(load_experiment(path), out, show_progress=False)
    assert ok, summary
    after = json.loads((out / "results.json").read_text())
    assert after["evaluation"] == before["evaluation"] and after["ensemble"] == before["ensemble"]
    assert {p: p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("*") if p.is_file()} == checkpoints
    assert [s["env_steps_per_s"] for seeds in after["seeds"].values() for s in seeds] == [None] * 4
    table = (out / "results.md").read_text()
    assert "SAC: seed 0: restored from its last checkpoint (iteration 8), not retrained" in table


def _constant_position(one):
    def policy(obs, state, key, env_params):
        return one["position"]

    return policy


def test_the_ensemble_replayed_on_played_episodes_chooses_and_earns_exactly_as_the_live_ensemble():
    from trading_jax.ensemble.agents import evaluate_ensemble, member_returns
    from trading_jax.envs import make
    from trading_jax.ensemble.agents import thompson_replay

    env, params = make("trading", window=8, episode_length=16, n_paths=8, action_mode="continuous")
    members = {"position": jnp.array([[-1.0], [0.0], [0.5], [1.0]], jnp.float32)}
    key = jax.random.key(3)  # 4 agents and 8 episodes, as the comparison above: the replay's program is compiled once
    returns = np.asarray(member_returns(env, params, members, _constant_position, key, 8))
    live = evaluate_ensemble(env, params, members, _constant_position, key, 8, discount=0.9, reward_scale=0.3)
    arms, state = thompson_replay(returns, key, discount=0.9, reward_scale=0.3)
    np.testing.assert_array_equal(arms, np.asarray(live.arms))
    np.testing.assert_array_equal(returns[arms, np.arange(8)], np.asarray(live.returns))
    np.testing.assert_array_equal(np.asarray(state.count), np.asarray(live.state.count))
    assert arms[:4].tolist() == [0, 1, 2, 3] and len(set(arms[4:].tolist())) > 1  # sampling, not a fixed agent


@pytest.mark.parametrize("change, message", [
    (("[sac]", "[dqn]"), "[dqn] DQN needs discrete actions, but env 'trading' with action_mode = 'continuous' has "
                         "continuous ones (a Box space): use PPO, SAC, TD3, DDPG on this env"),
    (("buffer_size = 1000", "buffer_size = 1000\ngradient_step = 2"),
     "[sac] unknown key 'gradient_step' (did you mean 'gradient_steps'?)"),
    (("[sac]", "[sca]"), "top level unknown key 'sca' (did you mean 'sac'?)"),
    (("val_episodes = 4", "val_episode = 4"), "[ensemble] unknown key 'val_episode' (did you mean 'val_episodes'?)"),
    (("val_episodes = 4", "discount = 0.0"), "[ensemble] discount = 0.0: expected a number in (0, 1]"),
])
def test_a_mistake_in_a_comparison_file_is_one_line_naming_the_table_and_key(tmp_path, change, message):
    path = write(tmp_path, COMPARISON.replace(*change, 1))
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    assert str(error.value).startswith(f"{path}: {message}"), str(error.value)
    assert "\n" not in str(error.value)


def test_a_comparison_needs_two_algorithms(tmp_path):
    text = COMPARISON[:COMPARISON.index("[sac]")] + COMPARISON[COMPARISON.index("[evaluation]"):]
    with pytest.raises(ConfigError, match=r"compares two or more algorithms: expected two or more of \[ppo\], "
                                          r"\[sac\], \[td3\], \[ddpg\], \[dqn\]; the file has \[ppo\]$"):
        load_experiment(write(tmp_path, text))
