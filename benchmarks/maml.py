"""Benchmark: second-order MAML meta-steps/s, `trading_jax.meta` against the same MAML in PyTorch `torch.func`.

The work (identical on both sides, float32):

  model    an MLP over the flattened window: [W*F = 48] -> Dense(64) -> tanh -> Dense(64) -> tanh -> Dense(1),
           written once in Flax (below) and once as torch.nn; our initial params are copied into the torch
           model, so both start from the same weights.
  tasks    a pool of P tasks pre-generated once by `trading_jax.meta.SyntheticRegimeTasks` (W = 16 bars,
           F = 3 features, regression targets) and handed to both sides as the same arrays; each meta-step
           draws T = 8 tasks of the pool (on device inside the jit for ours, by index for the peer).
  meta-step  per task: K = 5 SGD inner steps (lr 0.01) on k = 20 support samples, MSE on q = 20 query
           samples; second order (the meta-gradient differentiates through the inner loop); the mean over
           the T tasks; the gradient clipped to global norm 1; Adam(lr 1e-3).

  ours     `trading_jax.meta.make_trainer(MAMLConfig(method="maml", ...))`: `trainer.run(state, n)` runs n
           meta-steps as one compiled `lax.scan` (how `loop.fit` drives it, `n` = its `every`); also
           reported: one `run(state, 1)` call per meta-step (dispatch included).
  peer     `torch.func`: `grad(meta_loss)` where `meta_loss` is `vmap` over tasks of an inner loop of
           `grad(loss)` with `functional_call` (second order because the outer `grad` differentiates the
           inner ones), then `clip_grad_norm_` and `torch.optim.Adam`. Eager PyTorch (no torch.compile).

Equivalence: before timing, both sides compute the meta-gradient of the same params on the same task batch;
the largest absolute difference is recorded. Timing: rounds alternate ours and the peer so that load from
elsewhere on the machine hits both alike; the median over the rounds is reported; compilation (ours) and
the first step (peer) are reported apart. Threads: the peer runs with torch.set_num_threads(n) for each n of
--torch-threads (default 1 and all cores: on a loaded 2-core machine one thread can be several times faster
than two) and its best median is the figure compared; XLA:CPU uses its default pool. torch is optional (`pip install torch==2.13.0`, the CPU wheel): without it the peer is skipped
with a note. Writes benchmarks/results/maml-DEVICE.json and ends with one summary line.

    python benchmarks/maml.py            # full sizes
    python benchmarks/maml.py --quick    # a smoke check (maml-DEVICE-quick.json)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from _common import add_common_arguments, device_name, missing, output_path, skip_note, version, write_results
from _load import record_load

GOAL_RATIO = 3.0
HIDDEN = (64, 64)


class WindowMLP(nn.Module):
    """Dense(64) - tanh - Dense(64) - tanh - Dense(1) over the flattened `[batch, W, F]` window."""

    hidden: tuple = HIDDEN

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            h = jnp.tanh(nn.Dense(width, name=f"dense{i}")(h))
        return {"prediction": nn.Dense(1, name="head")(h)}


@dataclasses.dataclass(frozen=True)
class PoolTasks:
    """T tasks drawn uniformly (with replacement) from a pre-generated pool `args` (a `Tasks` of `[P, ...]`)."""

    def default_args(self):
        raise ValueError("PoolTasks needs args: the pool")

    def sample(self, key, args, n_tasks, k_support, n_query):
        from trading_jax.meta import Tasks

        idx = jax.random.randint(key, (n_tasks,), 0, args.support_x.shape[0])
        return Tasks(*(a[idx] for a in args))


def make_pool(n_pool: int, k: int, q: int, window: int):
    from trading_jax.meta import SyntheticRegimeTasks

    source = SyntheticRegimeTasks(model="regime_switching", window=window, support_bars=128, query_bars=64)
    pool = jax.jit(lambda key: source.sample(key, {}, n_pool, k, q))(jax.random.key(0))
    return jax.tree.map(np.asarray, pool), source.n_features


# ------------------------------------------------------------------------------------------- peer


def torch_peer(params_np, config):
    """The torch.func MAML step (module docstring), starting from our initial params (`params_np`)."""
    import torch
    from torch.func import functional_call, grad, vmap

    sizes = [params_np[f"dense{i}"]["kernel"].shape for i in range(len(HIDDEN))] + [params_np["head"]["kernel"].shape]
    layers = []
    for i, (n_in, n_out) in enumerate(sizes):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(sizes) - 1:
            layers.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*layers)
    names = [f"dense{i}" for i in range(len(HIDDEN))] + ["head"]
    with torch.no_grad():
        for j, name in enumerate(names):
            linear = model[2 * j]
            linear.weight.copy_(torch.from_numpy(np.array(params_np[name]["kernel"].T)))
            linear.bias.copy_(torch.from_numpy(np.array(params_np[name]["bias"])))
    leaves = dict(model.named_parameters())
    optimizer = torch.optim.Adam(leaves.values(), lr=config.meta_lr)
    lr, steps = config.inner_lr, config.inner_steps

    def loss(p, x, y):
        out = functional_call(model, p, (x.flatten(1),)).squeeze(-1)
        return ((out - y) ** 2).mean()

    def task_loss(p, sx, sy, qx, qy):
        for _ in range(steps):
            g = grad(loss)(p, sx, sy)
            p = {n: p[n] - lr * g[n] for n in p}
        return loss(p, qx, qy)

    def meta_loss(p, sx, sy, qx, qy):
        return vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(p, sx, sy, qx, qy).mean()

    meta_grad = grad(meta_loss)

    def params():
        return {n: v.detach() for n, v in leaves.items()}

    def step(batch):
        g = meta_grad(params(), *batch)
        for n, v in leaves.items():
            v.grad = g[n]
        torch.nn.utils.clip_grad_norm_(leaves.values(), config.max_grad_norm)
        optimizer.step()

    def gradient(batch):  # for the equivalence check: {name: (kernel [in, out], bias)} like ours
        g = meta_grad(params(), *batch)
        out = {}
        for j, name in enumerate(names):
            out[name] = {"kernel": g[f"{2 * j}.weight"].numpy().T, "bias": g[f"{2 * j}.bias"].numpy()}
        return out

    return step, gradient, torch


# ------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=int, default=50, help="meta-steps per compiled call of ours (fit's `every`)")
    parser.add_argument("--peer-steps", type=int, default=10, help="peer meta-steps per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--torch-threads", type=int, nargs="+", default=None,
                        help="thread counts tried for the peer; its best median counts (default: 1 and all cores)")
    add_common_arguments(parser)
    args = parser.parse_args()
    chunk, peer_steps, rounds = (10, 3, 2) if args.quick else (args.chunk, args.peer_steps, args.rounds)
    load_before = os.getloadavg()
    threads = sorted(set(args.torch_threads or (1, os.cpu_count() or 1)))

    from trading_jax.meta import MAMLConfig, Tasks, make_trainer, meta_loss

    window, k, q, t, n_pool = 16, 20, 20, 8, 256
    singles = max(3, peer_steps)
    total = 1 + chunk + rounds * (chunk + singles)  # every timed meta-step is a real (active) update
    config = MAMLConfig(model="WindowMLP", method="maml", inner_steps=5, inner_lr=0.01, inner_optimizer="sgd",
                        meta_lr=1e-3, meta_batch=t, support=k, query=q, meta_steps=total, max_grad_norm=1.0)
    pool_np, n_features = make_pool(n_pool, k, q, window)
    pool = jax.tree.map(jnp.asarray, pool_np)
    trainer = make_trainer(config, PoolTasks(), pool, model=WindowMLP())
    state = trainer.init(jax.random.key(0))
    params0 = jax.tree.map(np.asarray, state.meta_params)
    n_params = int(sum(np.size(a) for a in jax.tree.leaves(params0)))

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        jax.block_until_ready(out)
        return time.perf_counter() - start, out

    # ours: compile (first call) and steady state
    first_chunk_s, (state, _) = timed(lambda: trainer.run(state, chunk))
    first_single_s, (state, _) = timed(lambda: trainer.run(state, 1))

    # the peer
    skipped = {}
    peer = None
    absent = missing("torch")
    if absent:
        skipped["torch.func"] = skip_note("torch.func MAML", "torch==2.13.0", absent)
    else:
        step, gradient, torch = torch_peer(params0, config)
        torch.set_num_threads(threads[-1])
        batch_np = jax.tree.map(lambda a: a[:t], pool_np)
        batch = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in batch_np)
        ours_grad = jax.jit(jax.grad(lambda p: meta_loss(config, trainer.apply, p, Tasks(*batch_np),
                                                         jax.random.key(0))))(jax.tree.map(jnp.asarray, params0))
        peer_grad = gradient(batch)
        diff = max(float(np.max(np.abs(np.asarray(a) - b)))
                   for a, b in zip(jax.tree.leaves(ours_grad), jax.tree.leaves(peer_grad)))
        scale = max(float(np.max(np.abs(np.asarray(a)))) for a in jax.tree.leaves(ours_grad))
        rng = np.random.default_rng(0)

        def peer_batch():
            idx = rng.integers(0, n_pool, t)
            return tuple(torch.from_numpy(np.ascontiguousarray(a[idx])) for a in pool_np)

        start = time.perf_counter()
        step(peer_batch())
        peer_first_s = time.perf_counter() - start
        peer = {"times": {n: [] for n in threads}, "first_step_s": peer_first_s, "gradient_max_abs_diff": diff,
                "gradient_max_abs": scale}

    ours_chunk, ours_single = [], []
    for _ in range(rounds):
        seconds, (state, _) = timed(lambda: trainer.run(state, chunk))
        ours_chunk.append(chunk / seconds)
        single_s = []
        for _ in range(singles):
            seconds, (state, _) = timed(lambda: trainer.run(state, 1))
            single_s.append(seconds)
        ours_single.append(1.0 / statistics.median(single_s))
        if peer is not None:
            for n in threads:
                torch.set_num_threads(n)
                batches = [peer_batch() for _ in range(peer_steps)]
                step(batches[0])  # settle the thread pool at the new size
                start = time.perf_counter()
                for b in batches:
                    step(b)
                peer["times"][n].append(peer_steps / (time.perf_counter() - start))

    assert int(trainer.counter(state)) == total and not bool(state.history["skipped"].any()), "a timed step was skipped"
    ours_rate, single_rate = statistics.median(ours_chunk), statistics.median(ours_single)
    results = {
        "benchmark": "maml", "device": device_name(), "quick": bool(args.quick),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
                    "torch": version("torch"), "device_kind": jax.devices()[0].device_kind},
        "sizes": {"window": window, "features": n_features, "support": k, "query": q, "meta_batch": t,
                  "inner_steps": config.inner_steps, "inner_optimizer": "sgd", "order": "second", "pool": n_pool,
                  "model": f"MLP {window * n_features}-{'-'.join(map(str, HIDDEN))}-1 tanh", "params": n_params,
                  "rounds": rounds, "chunk": chunk, "peer_steps_per_round": peer_steps, "meta_steps": total},
        "unit": "meta-steps/s",
        "ours": {"what": f"trainer.run(state, {chunk}): {chunk} meta-steps in one compiled lax.scan",
                 "meta_steps_per_s_median": ours_rate, "meta_steps_per_s": ours_chunk,
                 "first_call_s": first_chunk_s,
                 "single_call": {"what": "trainer.run(state, 1) per meta-step (dispatch included)",
                                 "meta_steps_per_s_median": single_rate, "meta_steps_per_s": ours_single,
                                 "first_call_s": first_single_s}},
        "goal": GOAL_RATIO,
    }
    if peer is not None:
        by_threads = {n: statistics.median(v) for n, v in peer["times"].items()}
        best = max(by_threads, key=by_threads.get)
        peer_rate = by_threads[best]
        ratio = ours_rate / peer_rate
        results["peer"] = {"name": "torch.func", "what": "grad(vmap(inner loop of grad(loss) with functional_call)) + "
                           "clip_grad_norm_ + torch.optim.Adam, eager", "meta_steps_per_s_median": peer_rate,
                           "meta_steps_per_s": peer["times"][best], "first_step_s": peer["first_step_s"],
                           "threads": best,
                           "meta_steps_per_s_median_by_threads": {str(n): v for n, v in by_threads.items()}}
        results["equivalence"] = {"meta_gradient_max_abs_diff": peer["gradient_max_abs_diff"],
                                  "meta_gradient_max_abs": peer["gradient_max_abs"]}
        results["ratio"] = ratio
        results["ratio_single_call"] = single_rate / peer_rate
        results["goal_met"] = ratio >= GOAL_RATIO
        summary = (f"maml: ours {ours_rate:.1f} meta-steps/s, torch.func {peer_rate:.1f} meta-steps/s, ratio "
                   f"{ratio:.2f} (goal {GOAL_RATIO:g}x{'' if ratio >= GOAL_RATIO else ', not met'})")
    else:
        results["skipped"] = skipped
        results["ratio"] = None
        results["goal_met"] = None
        summary = (f"maml: ours {ours_rate:.1f} meta-steps/s, torch.func skipped (not installed), ratio n/a "
                   f"(goal {GOAL_RATIO:g}x)")
    record_load(results["machine"], load_before)
    write_results(output_path("maml", args), results)
    print(summary)


if __name__ == "__main__":
    main()
