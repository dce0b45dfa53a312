"""The tiny experiment files of the meta-learning and ensemble run tests (`algorithm = "maml"`, "ensemble",
"ppo_ensemble"), shared by tests/test_runs_meta_ensemble.py, test_runs_maml.py and test_runs_ppo_ensemble.py."""

from __future__ import annotations

from pathlib import Path

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
