"""Benchmark: events (messages) per second of the message-level order book (`trading_jax.envs.lob`), one run.

Ours: for each batch size B in {1, 256, 4096} books: one `jax.jit(jax.vmap(lob.run_events))` over B books
(CST order flow with the default `cst_params()`, 64-tick window, 8 slots per tick and side, B copies of one
`init_book` with a 500-event burn-in, then different keys), S events per book per call. Throughput = B * S / median wall time of
`--repeats` calls after a compiling warm-up call (compile time reported separately).

Peer, on the same work: the plain-Python reference book (`trading_jax.envs.reference.lob.LOBReference`)
running the same CST flow one event at a time (`LOBReference.run_events`, NumPy's generator) for one book.

Also reported: env-steps per second if one step of an execution environment advanced the book by
`EVENTS_PER_ENV_STEP` background events (a derived figure: ours / EVENTS_PER_ENV_STEP; the agent's own
messages are not counted).

Writes benchmarks/results/lob_throughput-DEVICE.json (lob_throughput-DEVICE-quick.json with --quick) and
ends with one summary line.

    python benchmarks/lob_throughput.py
    python benchmarks/lob_throughput.py --quick    # B in {1, 4096}, 2 repeats, ~20k events a call, 500 NumPy events
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

from trading_jax.envs import lob
from trading_jax.envs.reference.lob import LOBReference

from _common import add_common_arguments, machine_info, output_path, write_results
from _load import record_load

BATCHES = (1, 256, 4096)
QUICK_BATCHES = (1, 4096)
N_TICKS, MAX_ORDERS, BURN_IN = 64, 8, 500
EVENTS_PER_ENV_STEP = 100
# the dense version before the working layout (commit 7bde729, every [K, 2, T] slot array rewritten several
# times per message), as this benchmark recorded it on this 2-core machine (load average 3.4 during the run)
PREVIOUS = {"commit": "7bde729", "events_per_s": {"1": 17631, "256": 28808, "4096": 24370}, "load_average": 3.4}


def events_for(batch: int, budget: int, min_events: int) -> int:
    """Events per book per call: about `budget` events a call, between `min_events` and 20,000."""
    return int(min(20_000, max(min_events, budget // batch)))


def time_ours(params, batch: int, n_events: int, repeats: int) -> dict:
    # one burned-in book copied B times (a vmapped burn-in would cost B * BURN_IN events); the run keys differ
    book = jax.block_until_ready(lob.init_book(jax.random.key(0), params, N_TICKS, MAX_ORDERS, BURN_IN))
    books = jax.tree.map(lambda x: jax.numpy.broadcast_to(x, (batch,) + x.shape), book)
    run = jax.jit(jax.vmap(lob.run_events, (0, 0, None, None)), static_argnums=3)
    t0 = time.perf_counter()
    jax.block_until_ready(run(books, jax.random.split(jax.random.key(1), batch), params, n_events))
    first = time.perf_counter() - t0
    times, traded, rejected = [], 0, 0
    for i in range(repeats):
        keys = jax.random.split(jax.random.key(i + 2), batch)
        t0 = time.perf_counter()
        _, stats = jax.block_until_ready(run(books, keys, params, n_events))
        times.append(time.perf_counter() - t0)
        traded, rejected = int(stats.traded.sum()), int(stats.rejected.sum())
    med = statistics.median(times)
    return {"batch": batch, "events_per_book": n_events, "median_s": med, "first_call_s": first,
            "compile_s_approx": max(first - med, 0.0), "events_per_s": batch * n_events / med,
            "env_steps_per_s": batch * n_events / med / EVENTS_PER_ENV_STEP,
            "last_call_traded_lots": traded, "last_call_rejected": rejected}


def time_reference(params, n_events: int, repeats: int) -> dict:
    book = lob.init_book(jax.random.key(0), params, N_TICKS, MAX_ORDERS, BURN_IN)
    args = (np.asarray(params.limit_rate), np.asarray(params.cancel_rate), float(params.market_rate),
            float(params.limit_size_mean), float(params.market_size_mean))
    times = []
    for i in range(repeats):
        ref = LOBReference.from_state(book)
        rng = np.random.default_rng(i)
        t0 = time.perf_counter()
        ref.run_events(rng, *args, n_events=n_events)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"events": n_events, "median_s": med, "events_per_s": n_events / med}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 5; quick 2)")
    parser.add_argument("--budget", type=int, default=None,
                        help="events per timed call of ours (default 100,000; quick 20,000)")
    parser.add_argument("--numpy-events", type=int, default=None, help="events of the NumPy peer (default 5,000; quick 500)")
    add_common_arguments(parser)
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    budget = args.budget or (20_000 if args.quick else 100_000)
    numpy_events = args.numpy_events or (500 if args.quick else 5_000)
    min_events = 5 if args.quick else 20
    batches = QUICK_BATCHES if args.quick else BATCHES
    params = lob.cst_params()

    load_before = os.getloadavg()
    results: dict = {
        "benchmark": "lob_throughput", "quick": args.quick, "machine": machine_info("numpy", "flax"),
        "settings": {"batches": list(batches), "repeats": repeats, "budget_events_per_call": budget,
                     "min_events_per_book": min_events, "numpy_events": numpy_events, "n_ticks": N_TICKS,
                     "max_orders": MAX_ORDERS, "burn_in": BURN_IN, "params": "cst_params() defaults",
                     "events_per_env_step": EVENTS_PER_ENV_STEP},
        "goal": {"note": "none set: issue 15 asks to report the message-level book's figure"},
        "notes": ("ours: jit(vmap(lob.run_events)) over B books, the [S, 4] uniforms of each book drawn inside; "
                  "XLA may use every core. Peer: the plain-Python reference book, one book, the same CST flow "
                  "with NumPy's generator, single-threaded. Medians over repeats after a compiling warm-up call. "
                  "env_steps_per_s = events_per_s / events_per_env_step (derived)."),
        "ours": {},
    }
    for batch in batches:
        row = time_ours(params, batch, events_for(batch, budget, min_events), repeats)
        results["ours"][str(batch)] = row
        print(f"lob B={batch:5d}: {row['events_per_s']:>14,.0f} events/s (first call {row['first_call_s']:.1f} s)",
              flush=True)
    ref = time_reference(params, numpy_events, max(3, repeats // 2))
    results["numpy_reference"] = ref
    print(f"numpy reference (1 book): {ref['events_per_s']:>10,.0f} events/s", flush=True)

    top = results["ours"][str(batches[-1])]["events_per_s"]
    one = results["ours"]["1"]["events_per_s"]
    results["ratios"] = {f"lob_{batches[-1]}_vs_numpy": top / ref["events_per_s"], "lob_1_vs_numpy": one / ref["events_per_s"]}
    results["previous_version"] = PREVIOUS
    results["ratios"]["vs_previous_version"] = {b: results["ours"][b]["events_per_s"] / PREVIOUS["events_per_s"][b]
                                                for b in results["ours"] if b in PREVIOUS["events_per_s"]}
    record_load(results["machine"], load_before)
    write_results(output_path("lob_throughput", args), results)
    print(f"lob_throughput: ours {top:,.0f} events/s ({batches[-1]} books; {top / EVENTS_PER_ENV_STEP:,.0f} env-steps/s "
          f"at {EVENTS_PER_ENV_STEP} events a step), NumPy reference {ref['events_per_s']:,.0f} events/s, ratio "
          f"{top / ref['events_per_s']:.1f} (goal: none set, report the figure)")


if __name__ == "__main__":
    main()
