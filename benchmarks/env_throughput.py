"""Benchmark: environment steps per second of the JAX environments against NumPy and gym-anytrading, one run.

Ours: for each registered environment (`trading_jax.envs.make(name)` with its defaults; `trading` also in
a 3-asset continuous variant, `execution` also on its simple and its message-level book) and each batch
size B in {1, 256, 4096} (the message-level book: {1, 256, 1024}, 10 steps a call): one `jax.jit` of a `lax.scan` over
S steps of `vmap(env.step)` with auto-reset, the random actions drawn inside the scan (uniform on the
action space in one batched random call per step; `vmap(action_space.sample)` over B keys would cost
more than the step itself). Throughput = B * S / median wall time of `--repeats` calls after a
compiling warm-up call (compile time reported separately).

Peers, on the same work (random actions, auto-reset):
  (a) `TradingEnvNumpy`, the plain-Python NumPy single-environment reference of the trading env
      (same default market, same settings), stepped in a Python loop;
  (b) gym-anytrading's `ForexEnv` (Gymnasium API) on its bundled `FOREX_EURUSD_1H_ASK` data with the
      same window, stepped in a Python loop (the raw env class, without gym.make's checking wrappers).
      gym-anytrading is not a project dependency: `pip install gym-anytrading`; skipped when absent.

Environments that fail to build or run (e.g. not written yet) are skipped with a note. Writes
benchmarks/results/env_throughput-DEVICE.json (env_throughput-DEVICE-quick.json with --quick) and ends
with one summary line.

    python benchmarks/env_throughput.py
    python benchmarks/env_throughput.py --quick    # B in {1, 4096}, 2 repeats, ~100k env-steps a call, 2,000 NumPy steps
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import trading_jax.envs as envs
from trading_jax.envs.reference.trading import TradingEnvNumpy

from _common import add_common_arguments, output_path, skip_note, write_results
from _load import record_load

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 256, 4096)
QUICK_BATCHES = (1, 4096)  # the two the summary line reads
GOAL_STEPS_PER_S = 5e6
GOAL_RATIO_NUMPY = 100.0
GOAL_EXECUTION_STEPS_PER_S = 2e6  # issue 15: the modelled execution book at 4096 envs

# name in the results -> (registered name, factory kwargs)
ENVS = {
    "trading": ("trading", {}),
    "trading_continuous_3assets_dsr": ("trading", {"n_assets": 3, "action_mode": "continuous",
                                                   "reward": "differential_sharpe"}),
    "execution": ("execution", {}),  # the modelled book (issue 15), the default
    "execution_simple_book": ("execution", {"book": "simple"}),
    # the message-level book: 100 CST events per env step (execution_message's default), ~1,000x the work
    "execution_message_book": ("execution", {"book": "message"}),
    "portfolio": ("portfolio", {}),
}


# environments whose step is far heavier: (batch sizes, scan steps per call) instead of the budget
HEAVY = {"execution_message_book": ((1, 256, 1024), 10)}


def steps_for(batch: int, budget: int, min_steps: int = 200) -> int:
    """Scan length S: about `budget` env-steps per timed call, between `min_steps` and 2000 steps."""
    return int(min(2000, max(min_steps, budget // batch)))


def batched_sample(space, key, batch: int):
    """`batch` uniform random actions of `space` in ONE random call (vmapping `space.sample` over `batch`
    split keys costs more than the environment step itself); other spaces fall back to that vmap."""
    from gymnax.environments import spaces

    shape = (batch,) + tuple(space.shape)
    if isinstance(space, spaces.Discrete) or hasattr(space, "n") and not isinstance(space, spaces.Box):
        return jax.random.randint(key, shape, 0, space.n, dtype=getattr(space, "dtype", jnp.int32))
    if isinstance(space, spaces.Box):
        low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), space.shape)
        high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), space.shape)
        return jax.random.uniform(key, shape, jnp.float32, low, high).astype(space.dtype)
    return jax.vmap(space.sample)(jax.random.split(key, batch))


def make_rollout(env, params, batch: int, n_steps: int):
    """jit(key) -> sum of rewards over a scan of n_steps of vmap(step) on `batch` envs (random actions)."""
    space = env.action_space(params)

    def run(key):
        k_reset, k_scan = jax.random.split(key)
        _, state = jax.vmap(env.reset, (0, None))(jax.random.split(k_reset, batch), params)

        def body(state, k):
            k_act, k_step = jax.random.split(k)
            actions = batched_sample(space, k_act, batch)
            _, state, reward, *_ = jax.vmap(env.step, (0, 0, 0, None))(
                jax.random.split(k_step, batch), state, actions, params)
            return state, jnp.sum(reward)

        _, rewards = jax.lax.scan(body, state, jax.random.split(k_scan, n_steps))
        return jnp.sum(rewards)

    return jax.jit(run)


def time_ours(env, params, batch: int, n_steps: int, repeats: int) -> dict:
    fn = make_rollout(env, params, batch, n_steps)
    t0 = time.perf_counter()
    fn(jax.random.key(0)).block_until_ready()
    first = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(jax.random.key(i + 1)).block_until_ready()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"batch": batch, "scan_steps": n_steps, "median_s": med, "first_call_s": first,
            "steps_per_s": batch * n_steps / med}


def time_numpy_reference(env, params, n_steps: int, repeats: int) -> dict:
    """The NumPy single env of the trading env, stepped in a loop with random discrete actions."""
    fields = ("initial_equity", "fee_rate", "slippage", "max_position", "ruin_fraction", "max_hold", "eta",
              "drawdown_penalty", "sharpe_eps")
    ref = TradingEnvNumpy(jax.device_get(params.market), window=env.window, episode_length=env.episode_length,
                          action_mode=env.action_mode, reward=env.reward_kind,
                          **{f: getattr(params, f) for f in fields})
    times = []
    for i in range(repeats):
        rng = np.random.default_rng(i)
        actions = rng.integers(0, 3, n_steps)
        ref.reset(rng)
        t0 = time.perf_counter()
        for a in actions:
            _, _, terminated, truncated, _ = ref.step(a)
            if terminated or truncated:
                ref.reset(rng)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"steps": n_steps, "median_s": med, "steps_per_s": n_steps / med}


def time_anytrading(window: int, n_steps: int, repeats: int) -> dict:
    """gym-anytrading's ForexEnv on its bundled EURUSD hourly data, random actions, reset on episode end."""
    import importlib.metadata

    from gym_anytrading.datasets import FOREX_EURUSD_1H_ASK
    from gym_anytrading.envs import ForexEnv

    env = ForexEnv(df=FOREX_EURUSD_1H_ASK, window_size=window, frame_bound=(window, len(FOREX_EURUSD_1H_ASK)))
    times = []
    for i in range(repeats):
        actions = np.random.default_rng(i).integers(0, 2, n_steps)
        env.reset(seed=i)
        t0 = time.perf_counter()
        for a in actions:
            _, _, terminated, truncated, _ = env.step(int(a))
            if terminated or truncated:
                env.reset()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"version": importlib.metadata.version("gym-anytrading"), "env": "ForexEnv (forex-v0)",
            "data": "FOREX_EURUSD_1H_ASK", "window_size": window, "steps": n_steps, "median_s": med,
            "steps_per_s": n_steps / med}


def machine() -> dict:
    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
        "device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind, "numpy": np.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 5; quick 2)")
    parser.add_argument("--budget", type=int, default=None,
                        help="env-steps per timed call of ours (default 2,000,000; quick 100,000)")
    parser.add_argument("--numpy-steps", type=int, default=None, help="steps of each peer (default 20,000; quick 2,000)")
    add_common_arguments(parser)
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    budget = args.budget or (100_000 if args.quick else 2_000_000)
    numpy_steps = args.numpy_steps or (2_000 if args.quick else 20_000)
    min_steps = 20 if args.quick else 200
    batches = QUICK_BATCHES if args.quick else BATCHES

    load_before = os.getloadavg()
    results: dict = {
        "benchmark": "env_throughput", "quick": args.quick, "machine": machine(),
        "settings": {"batches": list(batches), "repeats": repeats, "budget_steps_per_call": budget,
                     "min_scan_steps": min_steps, "numpy_steps": numpy_steps,
                     "env_kwargs": {k: v[1] for k, v in ENVS.items()}},
        "goal": {"trading_steps_per_s_at_4096": GOAL_STEPS_PER_S, "trading_vs_numpy_reference": GOAL_RATIO_NUMPY,
                 "execution_steps_per_s_at_4096": GOAL_EXECUTION_STEPS_PER_S},
        "notes": ("ours: jit of a lax.scan over vmap(env.step) with auto-reset, random actions drawn inside; "
                  "XLA may use every core. Peers: one env in a Python loop (single-threaded). Medians over "
                  "repeats after a warm-up (compiling) call."),
        "ours": {}, "skipped": {},
    }
    trading_env = trading_params = None
    for label, (name, kw) in ENVS.items():
        try:
            env, params = envs.make(name, **kw)
            rows = {}
            heavy = HEAVY.get(label)
            for batch in (heavy[0] if heavy else batches):
                steps = heavy[1] if heavy else steps_for(batch, budget, min_steps)
                rows[str(batch)] = time_ours(env, params, batch, steps, repeats if not heavy else min(repeats, 3))
                print(f"{label:32s} B={batch:5d}: {rows[str(batch)]['steps_per_s']:>14,.0f} steps/s", flush=True)
            results["ours"][label] = rows
            if label == "trading":
                trading_env, trading_params = env, params
                results["ours"][label]["settings"] = {
                    "window": env.window, "episode_length": env.episode_length, "action_mode": env.action_mode,
                    "reward": env.reward_kind, "n_assets": env.n_assets, "market": list(params.market.close.shape)}
        except Exception as error:  # an environment not written yet, or broken: note it and go on
            results["skipped"][label] = f"{type(error).__name__}: {error}"
            print(f"{label}: skipped ({type(error).__name__}: {error})", flush=True)
            traceback.print_exc()

    ref = time_numpy_reference(trading_env, trading_params, numpy_steps, max(3, repeats // 2))
    results["numpy_reference"] = ref
    print(f"{'numpy reference (trading)':32s}       : {ref['steps_per_s']:>14,.0f} steps/s", flush=True)
    try:
        peer = time_anytrading(trading_env.window, numpy_steps, max(3, repeats // 2))
        results["gym_anytrading"] = peer
        print(f"{'gym-anytrading ForexEnv':32s}       : {peer['steps_per_s']:>14,.0f} steps/s", flush=True)
    except ImportError as error:
        peer = None
        results["skipped"]["gym_anytrading"] = skip_note("gym-anytrading", "gym-anytrading", error.name)
        print(results["skipped"]["gym_anytrading"], flush=True)

    ours = results["ours"]["trading"]
    top, one = ours["4096"]["steps_per_s"], ours["1"]["steps_per_s"]
    ratios = {"trading_4096_vs_numpy": top / ref["steps_per_s"], "trading_1_vs_numpy": one / ref["steps_per_s"]}
    if peer is not None:
        ratios["trading_4096_vs_gym_anytrading"] = top / peer["steps_per_s"]
        ratios["trading_1_vs_gym_anytrading"] = one / peer["steps_per_s"]
    results["ratios"] = ratios
    execution = results["ours"].get("execution", {}).get("4096", {}).get("steps_per_s", float("nan"))
    results["goal_met"] = {"trading_steps_per_s_at_4096": top >= GOAL_STEPS_PER_S,
                           "trading_vs_numpy_reference": ratios["trading_4096_vs_numpy"] >= GOAL_RATIO_NUMPY,
                           "execution_steps_per_s_at_4096": execution >= GOAL_EXECUTION_STEPS_PER_S}
    record_load(results["machine"], load_before)

    write_results(output_path("env_throughput", args), results)
    anytrading = ("gym-anytrading skipped: not installed" if peer is None else
                  f"gym-anytrading {peer['steps_per_s']:,.0f} steps/s")
    print(f"env_throughput: ours {top:,.0f} steps/s (trading, 4096 envs), NumPy reference {ref['steps_per_s']:,.0f} "
          f"steps/s ({anytrading}), ratio {ratios['trading_4096_vs_numpy']:.0f} (goal {GOAL_STEPS_PER_S:,.0f} "
          f"steps/s and {GOAL_RATIO_NUMPY:.0f}x); execution (modelled book) {execution:,.0f} steps/s at 4096 envs "
          f"(goal {GOAL_EXECUTION_STEPS_PER_S:,.0f})")


if __name__ == "__main__":
    main()
