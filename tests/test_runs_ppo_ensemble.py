"""A tiny PPO-ensemble run (`algorithm = "ppo_ensemble"`): every agent, Thompson sampling and the Sharpe pick on the
same episodes, exported; and a vmapped PPO population that once deadlocked XLA:CPU finishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from run_files import PPO_ENSEMBLE, write  # noqa: E402
from trading_jax.runs import load_experiment, run_experiment


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
    obs = np.random.default_rng(7).normal(size=(6, 18)).astype(np.float32)
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
