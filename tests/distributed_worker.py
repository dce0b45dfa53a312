"""One process of tests/test_distributed.py's multi-process runs (and, called in-process, the 1-process reference).

    python tests/distributed_worker.py OUT     # settings from TRADING_JAX_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID
                                               # (a 1-process run, without a mesh, when they are absent)

Trains a tiny supervised model, a tiny PPO policy and a tiny DQN agent (the off-policy loop SAC, TD3 and DDPG share)
through `trading_jax.loop.fit` on the global mesh, with an
Orbax checkpoint after every unit in OUT/checkpoints/{supervised,ppo} (all kept; a run resumes from the latest
one there), and process 0 writes every final param and metric to OUT/result.npz.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

EPOCHS, UPDATES = 4, 4


def _register_mlp() -> None:
    """A one-hidden-layer MLP (compiles in a fraction of the TCN's time; the test is about the processes)."""
    import flax.linen as nn

    from trading_jax.models.registry import available, register

    if "distributed_test_mlp" in available():
        return

    class TinyMLP(nn.Module):
        hidden: int = 8

        @nn.compact
        def __call__(self, x, *, train: bool = False):
            h = nn.tanh(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
            return {"prediction": nn.Dense(1)(h)}

    register("distributed_test_mlp", presets={"tiny": {}})(lambda **cfg: TinyMLP(**cfg))


def _supervised():
    from trading_jax.training.config import Dataset, TrainConfig
    from trading_jax.training.train import make_trainer

    _register_mlp()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8, 3)).astype(np.float32)  # 100 rows: 2 devices hold 50 each, 4 devices 25 (+ padding)
    y = (x[:, -1, 0] * 0.5 + 0.1 * rng.normal(size=100)).astype(np.float32)[:, None]
    data = Dataset(x[:84], y[:84], x[84:], y[84:])
    config = TrainConfig(model="distributed_test_mlp", preset="tiny", task="regression", epochs=EPOCHS, batch_size=16)
    return make_trainer(config, data)


def _ppo():
    from trading_jax.rl.ppo import PPOConfig, make_trainer

    config = PPOConfig(env="trading", num_envs=4, num_steps=8,
                       total_timesteps=4 * 8 * UPDATES, update_epochs=1, minibatch_size=16, network_preset="tiny")
    return make_trainer(config)


def _dqn():
    from trading_jax.rl import dqn

    config = dqn.DQNConfig(env="trading", n_step=2, num_envs=2, steps_per_iteration=4, learning_starts=16,
                           buffer_size=256, batch_size=16, target_update_interval=4, network_kwargs={"hidden": [16]})
    return dqn.make_trainer(config.replace(total_timesteps=config.warmup_steps * config.num_envs
                                           + UPDATES * config.env_steps_per_iteration))


def train_all(out: Path) -> dict[str, np.ndarray]:
    """Both runs on the active mesh; `{name: array}` of their final params and metrics (on every process)."""
    import jax

    from trading_jax.checkpoint import CheckpointConfig, Checkpointer
    from trading_jax.loop import fit

    flat = {}
    for name, build in (("supervised", _supervised), ("ppo", _ppo), ("dqn", _dqn)):
        trainer = build()
        config = CheckpointConfig(directory=str(out / "checkpoints" / name), save_every_steps=1, keep_last=EPOCHS)
        with Checkpointer(config) as ckpt:
            result = fit(trainer, jax.random.key(7), checkpointer=ckpt, every=1, show_progress=False)
        leaves = jax.tree_util.tree_flatten_with_path(result.params)[0]
        flat.update({f"{name}/{jax.tree_util.keystr(path)}": np.asarray(leaf) for path, leaf in leaves})
        metrics = result.history if name == "supervised" else result.metrics
        flat.update({f"{name}/metric/{k}": np.asarray(v) for k, v in metrics.items()})
    return flat


def main(out: str) -> None:
    import jax

    from trading_jax import distributed, parallel

    if os.environ.get("TRADING_JAX_TEST_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.environ["TRADING_JAX_TEST_CACHE_DIR"])
    distributed.initialize(timeout_s=60)
    with parallel.use_mesh(parallel.make_mesh() if distributed.is_multiprocess() else None):
        flat = train_all(Path(out))
    if distributed.is_primary():
        np.savez(Path(out) / "result.npz", **flat, devices=np.asarray(jax.device_count()))


if __name__ == "__main__":
    main(*sys.argv[1:])
