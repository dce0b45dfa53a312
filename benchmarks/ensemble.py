"""A bootstrap ensemble of 8 members trained in one vmapped call against the same 8 members trained one after another.

The work: M = 8 members of a small forecasting model from the registry, each on its own bootstrap resample
of N_TRAIN synthetic windows (32 steps x 45 features), EPOCHS epochs, batch 64, validation on N_VAL windows
after every epoch. Two models: the tiny TCN classifier (3 classes; the default experiment's model) and the
tiny LSTM regressor (2 layers of 16).

Ours: `make_ensemble_trainer(make_trainer(config, data), 8, diversity="bootstrap").train(key)`: every
member in one compiled program (vmap over params and optimiser state; on CPU its 1-D convolutions are
computed as matmuls of shifted inputs, `conv="auto"`). Peer: the plain supervised trainer
(`make_trainer(config, data).train(key_j, args=... train_index_j)`, the model's own convolutions) called
once per member in a Python loop; the same keys and resamples, so the same members to float tolerance
(tests/test_ensemble.py). Both are timed once with compilation ("first call") and then in the steady
state (median of REPEATS); the ratio is the loop's steady time over ours (higher is better).

Also recorded, to explain the ratio: the population with the model's own convolutions (`conv="xla"`,
grouped convolutions under vmap) and the loop with matmul convolutions (the fix applied to the peer too),
and a micro-benchmark of one vmapped convolution layer's forward + backward (grouped vs matmul).
Writes benchmarks/results/ensemble-DEVICE.json and ends with one summary line (the TCN's figures).
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

GOAL = {"cpu": 4.0, "gpu": 6.0}
WINDOW, FEATURES, BATCH = 32, 45, 64


def dataset(n_train: int, n_val: int, task: str):
    from trading_jax.training import Dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_train + n_val, WINDOW, FEATURES)).astype(np.float32)
    signal = x[:, -1, 0] + 0.5 * rng.normal(size=len(x))
    y = (np.digitize(signal, [-0.4, 0.4]).astype(np.int32) if task == "classification"
         else (0.1 * signal).astype(np.float32))
    return Dataset(jnp.asarray(x[:n_train]), jnp.asarray(y[:n_train]), jnp.asarray(x[n_train:]), jnp.asarray(y[n_train:]))


def timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(jax.tree.leaves(fn()))
    return time.perf_counter() - start


def steady(fn, repeats: int) -> list[float]:
    return [timed(fn) for _ in range(repeats)]


def conv_probe(members: int, repeats: int) -> dict:
    """One causal dilated conv layer (64 x 32 x 16 -> 16, kernel 2, dilation 2): forward + backward of M
    members, vmapped as XLA's grouped convolution, vmapped as one matmul, and a loop of the XLA one."""
    import flax.linen as nn

    from trading_jax.ensemble import matmul_convolutions

    layer = nn.Conv(16, kernel_size=(2,), kernel_dilation=(2,), padding=((2, 0),))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(members, BATCH, WINDOW, 16)).astype(np.float32))
    params = jax.vmap(lambda k: layer.init(k, x[0]))(jax.random.split(jax.random.key(0), members))

    def loss(p, xb):
        return jnp.sum(jnp.tanh(layer.apply(p, xb)) ** 2)

    grad = jax.grad(loss, argnums=(0, 1))
    grouped = jax.jit(jax.vmap(grad))
    with matmul_convolutions():
        matmul = jax.jit(jax.vmap(grad))
        matmul.lower(params, x)  # traced inside the context
    single = jax.jit(grad)
    members_params = [jax.tree.map(lambda a: a[j], params) for j in range(members)]

    def per_call(fn, n=50):
        jax.block_until_ready(fn())
        start = time.perf_counter()
        for _ in range(n):
            jax.block_until_ready(fn())
        return (time.perf_counter() - start) / n * 1e3

    out = {"layer": "causal conv 16->16, kernel 2, dilation 2, batch 64 x 32 steps", "members": members}
    out["vmap_grouped_conv_ms"] = float(np.median([per_call(lambda: grouped(params, x)) for _ in range(repeats)]))
    out["vmap_matmul_ms"] = float(np.median([per_call(lambda: matmul(params, x)) for _ in range(repeats)]))
    out["loop_conv_ms"] = float(np.median([per_call(lambda: [single(p, x[j]) for j, p in enumerate(members_params)])
                                           for _ in range(repeats)]))
    return out


def bench_model(name: str, config, n_train: int, n_val: int, members: int, repeats: int, extra: bool) -> dict:
    from trading_jax.ensemble import make_ensemble_trainer, with_matmul_convolutions
    from trading_jax.training import make_trainer

    data = dataset(n_train, n_val, config.task)
    boot_key, key = jax.random.key(1), jax.random.key(0)
    ensemble = make_ensemble_trainer(make_trainer(config, data), members, diversity="bootstrap", bootstrap_key=boot_key)
    keys = jax.random.split(key, members)
    index = ensemble.train_index
    single = make_trainer(config, data)

    def loop(trainer):
        return [trainer.train(keys[j], args={"data": data, "params": None, "train_index": index[j]})
                for j in range(members)]

    ours_first = timed(lambda: ensemble.train(key))
    ours = steady(lambda: ensemble.train(key), repeats)
    peer_first = timed(lambda: loop(single))
    peer = steady(lambda: loop(single), repeats)
    ours_s, peer_s = float(np.median(ours)), float(np.median(peer))
    out = {
        "model": name, "config": {"model": config.model, "preset": config.preset, "model_kwargs": dict(config.model_kwargs),
                                   "task": config.task},
        "params_per_member": int(sum(np.size(a) for a in jax.tree.leaves(
            single.init(key).params))),
        "ours": {"what": f"make_ensemble_trainer(..., diversity='bootstrap', conv='{ensemble.conv}').train(key): one "
                         "vmapped call", "first_call_s": ours_first, "steady_s_median": ours_s, "steady_s": ours},
        "peer": {"what": "make_trainer(...).train(key_j, train_index_j) for each member, one after another (the "
                         "model's own convolutions)", "first_call_s": peer_first, "steady_s_median": peer_s,
                 "steady_s": peer},
        "ratio": peer_s / ours_s,
    }
    if extra:
        grouped = make_ensemble_trainer(make_trainer(config, data), members, diversity="bootstrap", bootstrap_key=boot_key,
                                        conv="xla")
        timed(lambda: grouped.train(key))
        out["population_xla_conv"] = {"what": "the same population with the model's own (grouped under vmap) "
                                              "convolutions, conv='xla'",
                                      "steady_s_median": float(np.median(steady(lambda: grouped.train(key), repeats)))}
        fixed = with_matmul_convolutions(single)
        timed(lambda: loop(fixed))
        fixed_s = float(np.median(steady(lambda: loop(fixed), repeats)))
        out["loop_matmul_conv"] = {"what": "the loop of single runs with matmul convolutions too",
                                   "steady_s_median": fixed_s, "ratio_ours_vs_it": fixed_s / ours_s}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    add_common_arguments(parser)
    args = parser.parse_args()
    members = args.members
    epochs, n_train, n_val, repeats = (1, 1024, 256, 1) if args.quick else (args.epochs, 4096, 1024, 3)
    load_before = os.getloadavg()

    from trading_jax.training import TrainConfig

    device = device_name()
    goal = GOAL["cpu" if device == "cpu" else "gpu"]
    tcn = TrainConfig(model="tcn", preset="tiny", task="classification", epochs=epochs, batch_size=BATCH,
                      learning_rate=2e-3, model_kwargs={"n_classes": 3})
    lstm = TrainConfig(model="lstm", preset="tiny", task="regression", epochs=epochs, batch_size=BATCH,
                       learning_rate=2e-3)
    models = {
        "tcn": bench_model("tcn tiny (3 levels of 8 channels), classifier", tcn, n_train, n_val, members, repeats,
                           extra=True),
        "lstm": bench_model("lstm tiny (2 layers of 16), regressor", lstm, n_train, n_val, members, repeats,
                            extra=False),
    }
    results = {
        "benchmark": "ensemble", "device": device, "quick": bool(args.quick),
        "machine": {"cpu_count": os.cpu_count(), "jax": jax.__version__, "device_kind": jax.devices()[0].device_kind},
        "sizes": {"members": members, "epochs": epochs, "n_train": n_train, "n_val": n_val, "window": WINDOW,
                  "features": FEATURES, "batch_size": BATCH, "diversity": "bootstrap", "repeats": repeats},
        "models": models,
        "conv_probe": conv_probe(members, repeats),
        "headline": "tcn",
        "ratio": models["tcn"]["ratio"], "goal": goal, "goal_met": models["tcn"]["ratio"] >= goal,
    }
    record_load(results["machine"], load_before)
    write_results(output_path("ensemble", args), results)
    for key, m in models.items():
        line = (f"  {key}: ours {m['ours']['steady_s_median']:.2f} s (first call {m['ours']['first_call_s']:.2f} s), "
                f"one-after-another {m['peer']['steady_s_median']:.2f} s (first call {m['peer']['first_call_s']:.2f} s), "
                f"ratio {m['ratio']:.2f}")
        if "population_xla_conv" in m:
            line += (f"; population with grouped convs {m['population_xla_conv']['steady_s_median']:.2f} s, "
                     f"loop with matmul convs {m['loop_matmul_conv']['steady_s_median']:.2f} s")
        print(line, flush=True)
    probe = results["conv_probe"]
    print(f"  one conv layer x {members}: vmapped grouped {probe['vmap_grouped_conv_ms']:.2f} ms, vmapped matmul "
          f"{probe['vmap_matmul_ms']:.2f} ms, loop {probe['loop_conv_ms']:.2f} ms", flush=True)
    m = models["tcn"]
    print(f"ensemble: ours {m['ours']['steady_s_median']:.2f} s, one-after-another {m['peer']['steady_s_median']:.2f} s, "
          f"ratio {m['ratio']:.2f} (goal 4x CPU / 6x GPU)")


if __name__ == "__main__":
    main()
