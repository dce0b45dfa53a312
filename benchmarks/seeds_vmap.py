"""Seeds in one vmapped call against a Python loop over seeds: wall time of a supervised experiment's training.

The work: the default experiment's model (the tiny TCN classifier, `experiments/default.toml`) trained for
EPOCHS epochs on windows of the built-in synthetic market, for S seeds. Ours: `make_trainer(...).population(S)
.train(keys)`, every seed in one compiled program (what `trading-jax train` does with `vmap_seeds = true`).
Peer: the same trainer's `train(key)` called once per seed in a Python loop (the compiled program is reused,
so the loop pays compilation once too). Both are timed twice: the first call includes compilation, the
second is the steady state; the ratio is the loop's steady wall time over ours (higher is better). The two
give the same params to float tolerance (tests/test_runs.py). Writes benchmarks/results/seeds_vmap-DEVICE.json
and ends with one summary line.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from _common import add_common_arguments, device_name, output_path, write_results
from _load import record_load

GOAL_RATIO = 1.5


def dataset(n_train: int, n_val: int, window: int, features: int):
    from trading_jax.training import Dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_train + n_val, window, features)).astype(np.float32)
    y = np.digitize(x[:, -1, 0] + 0.5 * rng.normal(size=len(x)), [-0.4, 0.4]).astype(np.int32)
    return Dataset(jnp.asarray(x[:n_train]), jnp.asarray(y[:n_train]), jnp.asarray(x[n_train:]), jnp.asarray(y[n_train:]))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(jax.tree.leaves(out))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    add_common_arguments(parser)
    args = parser.parse_args()
    seeds, epochs = (4, 2) if args.quick else (args.seeds, args.epochs)
    n_train, n_val = (1024, 256) if args.quick else (4096, 1024)
    load_before = os.getloadavg()

    from trading_jax.training import TrainConfig, make_trainer

    config = TrainConfig(model="tcn", preset="tiny", task="classification", epochs=epochs, batch_size=64,
                         learning_rate=2e-3, model_kwargs={"n_classes": 3})
    trainer = make_trainer(config, dataset(n_train, n_val, 32, 45))
    population = trainer.population(seeds)
    keys = jnp.stack([jax.random.key(s) for s in range(seeds)])

    def loop():
        return [trainer.train(jax.random.key(s)) for s in range(seeds)]

    ours_first = timed(lambda: population.train(keys))
    ours = [timed(lambda: population.train(keys)) for _ in range(2)]
    peer_first = timed(loop)
    peer = [timed(loop) for _ in range(2)]
    ours_s, peer_s = float(np.median(ours)), float(np.median(peer))
    ratio = peer_s / ours_s
    results = {
        "benchmark": "seeds_vmap", "device": device_name(), "quick": bool(args.quick),
        "machine": {"cpu_count": os.cpu_count(), "jax": jax.__version__, "device_kind": jax.devices()[0].device_kind},
        "sizes": {"seeds": seeds, "epochs": epochs, "n_train": n_train, "n_val": n_val, "window": 32, "features": 45,
                  "model": "tcn tiny", "batch_size": 64},
        "ours": {"what": "population(S).train(keys): one vmapped call", "first_call_s": ours_first,
                 "steady_s_median": ours_s, "steady_s": ours},
        "peer": {"what": "Python loop of train(key) over seeds", "first_call_s": peer_first,
                 "steady_s_median": peer_s, "steady_s": peer},
        "ratio": ratio, "goal": GOAL_RATIO, "goal_met": ratio >= GOAL_RATIO,
    }
    record_load(results["machine"], load_before)
    write_results(output_path("seeds_vmap", args), results)
    print(f"seeds_vmap: ours {ours_s:.2f} s for {seeds} seeds (first call {ours_first:.2f} s), Python loop "
          f"{peer_s:.2f} s (first call {peer_first:.2f} s), ratio {ratio:.2f} (goal {GOAL_RATIO})")


if __name__ == "__main__":
    main()
