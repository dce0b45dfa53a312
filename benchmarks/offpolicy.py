"""Benchmark: off-policy training env-steps/s (SAC, DQN) vs Stable-Baselines3 and SBX at a matched update-to-data ratio.

The work: training on the trading env (`trading_jax.envs.make("trading", action_mode=...)`'s defaults: 64
synthetic regime-switching paths, window 32, episodes of 256 decisions, "pnl" reward): SAC with
`action_mode="continuous"` (one position in [-1, 1]) and DQN with `action_mode="discrete"` (short/flat/long).

  Ours:  `trading_jax.rl.sac.make_trainer(SACConfig(...), env, env_params)` (and `rl.dqn`): the whole
         training loop (env steps, replay inserts, sampling, gradient steps) in one compiled program.
         `init` (parameters, env resets and the warm-up of `learning_starts` random-action steps) and
         `run` (the training iterations) are compiled once each with `jax.jit(...).lower(...).compile()`
         (compile time reported separately); then, `--repeats` times with fresh keys, `init` is run and
         `run` is timed (block_until_ready; median). The figure is the training phase's env-steps/s, the
         same phase the peers are timed on; the whole run's rate (warm-up included) is reported alongside.
         `--seeds S` times a population of S seeds in one program (`trainer.population(S)`: `jax.vmap`
         of init and run, what `jax.vmap(train)(keys)` compiles) and reports the aggregate env-steps/s.
  Peers: Stable-Baselines3 `SAC` / `DQN` (PyTorch) and SBX `SAC` / `DQN` (SB3's algorithms in JAX: the
         gradient steps jitted, the loop in Python) on `DummyVecEnv` of `num_envs` copies of `GymTradingEnv`,
         the Gymnasium port of the same env (`trading_jax.envs.reference.gym_trading`, tested equal to ours
         step for step) built from the same market arrays, wrapped in `VecMonitor`. Each peer model first
         learns `learning_starts` steps of random actions plus 20 vectorised training steps untimed (SBX
         compiles its update there), then `model.learn(N, reset_num_timesteps=False)` is timed: N env steps
         of training (`--peer-repeats` seeds, median). The peers are slow, so N is smaller than ours.

Matched: the env and its market; num_envs; gradient steps per vectorised env step (SB3/SBX `train_freq=1,
gradient_steps=G` with `n_envs=E` is ours `num_envs=E, gradient_steps=G`: update-to-data ratio G/E); batch
256; replay buffer 100,000 transitions (uniform, 1-step); learning_starts 1,000 env steps of uniformly random
actions; gamma 0.99; networks MLP [256, 256] relu (SB3's SAC default; SBX's DQN default, SB3's DQN is given
net_arch [256, 256]); no observation or reward normalisation (ours `normalize_observations=False`,
`reward_scale=1`); truncation bootstrapped through the final observation (SB3's
`handle_timeout_termination`), termination not.
  SAC: Adam lr 3e-4 for actor, twin critics and temperature; tau 0.005 every gradient step; learned
  temperature from 1.0 with target entropy -dim(A); squashed Gaussian policy, log-std clipped to [-20, 2].
  DQN: plain DQN (ours `double=False, dueling=False, n_atoms=1, n_step=1`); Adam lr 1e-4; Huber loss;
  hard target copies every 1,000 gradient steps (SB3/SBX `target_update_interval` counts env steps and
  divides by n_envs: they get 1,000 * E / G); epsilon 1 -> 0.05 over the first 10% of the run.
Differences left: SBX's DQN does not clip gradients (SB3's and ours clip the global norm to 10); SBX's SAC
updates the temperature after the actor (SB3 and ours before the critics: the same work); DQN's epsilon
schedule runs over each side's own run length (the peers' runs are shorter), which changes how often the
Q network is evaluated for acting only at random-action steps (the network is evaluated every step on every
side); the peers' torch threads are chosen by a short calibration (1 or 2: on a loaded 2-core machine 2
OpenMP threads can be slower), ours and SBX's XLA use every core.

Configurations (`--configs`):
  matched:     1 env, 1 gradient step per env step (update-to-data 1: SB3's default `train_freq=1,
               gradient_steps=1`). The 10x-SB3 and 2x-SBX goals are judged on SAC in this configuration.
  vectorised:  16 envs, 4 gradient steps per vectorised step (update-to-data 0.25).
Final mean episode returns (raw pnl returns) are reported to show that the sides train the same problem:
not a timing claim, and a few thousand steps move them little.

Stable-Baselines3, SBX and torch are optional (`pip install torch==2.13.0` first, then the `bench` extra and
`sbx-rl`): a peer that is not installed is skipped with a note in the JSON and the summary line.

Writes benchmarks/results/offpolicy-DEVICE.json (offpolicy-DEVICE-quick.json with --quick) and ends with one
summary line.

    python benchmarks/offpolicy.py
    python benchmarks/offpolicy.py --quick              # SAC, matched config, fewer steps, 1 repeat
    python benchmarks/offpolicy.py --ours-only --seeds 64   # on a GPU: 64 seeds vmapped
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import trading_jax.envs as envs

from _common import add_common_arguments, machine_info, missing, output_path, skip_note, write_results
from _load import record_load

GOAL_VS_SB3 = 10.0
GOAL_VS_SBX = 2.0
GOAL_ON = ("sac", "matched")

ALGORITHMS = {"sac": "continuous", "dqn": "discrete"}  # algorithm -> the trading env's action mode
# num_envs E, gradient steps per vectorised step G, ours' iteration length (vectorised steps), training env
# steps after the warm-up: ours (a multiple of E * steps_per_iteration) and each peer run
CONFIGS = {
    "matched": dict(num_envs=1, gradient_steps=1, steps_per_iteration=500, ours_steps=2_000, peer_steps=2_000),
    "vectorised": dict(num_envs=16, gradient_steps=4, steps_per_iteration=125, ours_steps=8_000, peer_steps=4_000),
}
QUICK_STEPS = dict(ours_steps=1_000, peer_steps=500)
SHARED = dict(batch_size=256, buffer_size=100_000, learning_starts=1_000, gamma=0.99, hidden=[256, 256])
HPARAMS = {
    "sac": dict(lr=3e-4, tau=0.005, init_alpha=1.0, learn_alpha=True),
    "dqn": dict(lr=1e-4, tau=1.0, target_update_gradient_steps=1_000, exploration_initial_eps=1.0,
                exploration_final_eps=0.05, exploration_fraction=0.1, max_grad_norm=10.0),
}
PEER_WARM_VECTOR_STEPS = 20
PEERS = {"sb3": ("Stable-Baselines3", "stable_baselines3", "torch==2.13.0 && pip install -e '.[bench]'"),
         "sbx": ("SBX", "sbx", "sbx-rl")}


# ------------------------------------------------------------------------------------------------
# Ours
# ------------------------------------------------------------------------------------------------


def ours_config(algo: str, c: dict):
    """The SACConfig / DQNConfig of a configuration: `c["ours_steps"]` training env steps after the warm-up."""
    shared = dict(env="trading", env_kwargs={"action_mode": ALGORITHMS[algo]}, num_envs=c["num_envs"],
                  gradient_steps=c["gradient_steps"], steps_per_iteration=c["steps_per_iteration"],
                  learning_starts=SHARED["learning_starts"], buffer_size=SHARED["buffer_size"],
                  batch_size=SHARED["batch_size"], gamma=SHARED["gamma"], normalize_observations=False,
                  reward_scale=1.0, n_step=1, prioritized=False, network_kwargs={"hidden": list(SHARED["hidden"])})
    if algo == "sac":
        from trading_jax.rl.sac import SACConfig

        h = HPARAMS["sac"]
        config = SACConfig(**shared, lr=h["lr"], tau=h["tau"], init_alpha=h["init_alpha"],
                           learn_alpha=h["learn_alpha"], target_update_interval=1)
    else:
        from trading_jax.rl.dqn import DQNConfig

        h = HPARAMS["dqn"]
        config = DQNConfig(**shared, lr=h["lr"], tau=h["tau"], double=False, dueling=False, n_atoms=1, loss="huber",
                           target_update_interval=h["target_update_gradient_steps"],
                           exploration_initial_eps=h["exploration_initial_eps"],
                           exploration_final_eps=h["exploration_final_eps"],
                           exploration_fraction=h["exploration_fraction"], max_grad_norm=h["max_grad_norm"])
    per_iteration = config.env_steps_per_iteration
    if c["ours_steps"] % per_iteration:
        raise ValueError(f"ours_steps={c['ours_steps']} is not a multiple of num_envs * steps_per_iteration = "
                         f"{per_iteration}")
    return config.replace(total_timesteps=config.warmup_steps * config.num_envs + c["ours_steps"])


def time_ours(algo: str, env, params, c: dict, repeats: int, seeds: int) -> dict:
    module = importlib.import_module(f"trading_jax.rl.{algo}")
    config = ours_config(algo, c)
    trainer = module.make_trainer(config, env, params)
    if seeds > 1:
        trainer = trainer.population(seeds)

    def keys(i):
        return jax.random.split(jax.random.key(i), seeds) if seeds > 1 else jax.random.key(i)

    hp, args = trainer.default_hparams(), trainer.args
    n = jnp.asarray(config.num_iterations, jnp.int32)
    t0 = time.perf_counter()
    init = jax.jit(trainer.init_fn).lower(keys(0), hp, args).compile()
    init_compile_s = time.perf_counter() - t0
    state = jax.block_until_ready(init(keys(0), hp, args))
    t0 = time.perf_counter()
    run = jax.jit(trainer.run_fn).lower(state, args, n).compile()
    run_compile_s = time.perf_counter() - t0
    del state

    run_times, init_times, finals = [], [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        state = jax.block_until_ready(init(keys(i + 1), hp, args))
        init_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        state, _ = jax.block_until_ready(run(state, args, n))
        run_times.append(time.perf_counter() - t0)
        done = np.asarray(trainer.counter_fn(state))
        assert np.all(done == config.num_iterations), (done, config.num_iterations)
        finals.append(float(np.mean(np.asarray(state.metrics["episode_return"])[..., -1])))
        del state
    train_steps = config.num_iterations * config.env_steps_per_iteration * seeds
    grad_steps = config.num_iterations * config.steps_per_iteration * config.gradient_steps * seeds
    warm_steps = config.warmup_steps * config.num_envs * seeds
    run_s, init_s = statistics.median(run_times), statistics.median(init_times)
    compile_s = init_compile_s + run_compile_s
    return {"seeds": seeds, "training_env_steps": train_steps, "warmup_env_steps": warm_steps,
            "num_iterations": config.num_iterations, "gradient_steps": grad_steps, "compile_s": compile_s,
            "compile_s_init": init_compile_s, "compile_s_run": run_compile_s, "median_s": run_s, "times_s": run_times,
            "init_median_s": init_s, "steps_per_s": train_steps / run_s,
            "steps_per_s_per_seed": train_steps / run_s / seeds,
            "steps_per_s_whole_run": (train_steps + warm_steps) / (run_s + init_s),
            "steps_per_s_incl_compile": train_steps / (run_s + compile_s),
            "final_mean_episode_return": statistics.median(finals), "final_mean_episode_return_per_repeat": finals,
            "config": {"algorithm": algo, **{k: getattr(config, k) for k in (
                "num_envs", "gradient_steps", "steps_per_iteration", "total_timesteps", "learning_starts",
                "buffer_size", "batch_size", "gamma", "tau", "lr", "n_step", "prioritized", "normalize_observations",
                "reward_scale", "target_update_interval")}, "env_kwargs": dict(config.env_kwargs),
                "network_kwargs": dict(config.network_kwargs), "update_to_data": config.update_to_data,
                **({"double": config.double, "dueling": config.dueling, "max_grad_norm": config.max_grad_norm,
                    "loss": config.loss} if algo == "dqn" else {"learn_alpha": config.learn_alpha,
                                                                "init_alpha": config.init_alpha})}}


# ------------------------------------------------------------------------------------------------
# Peers: Stable-Baselines3 and SBX
# ------------------------------------------------------------------------------------------------


def gym_factory(env, params):
    """A zero-argument constructor of the Gymnasium port on the same (host-copied) market."""
    from trading_jax.envs.reference.gym_trading import GymTradingEnv

    return lambda: GymTradingEnv.from_jax(env, params)


def peer_model(peer: str, algo: str, make_env, c: dict, seed: int):
    """A fresh SB3 or SBX model of `algo` with this configuration's matched settings."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    module = importlib.import_module("stable_baselines3" if peer == "sb3" else "sbx")
    E, G = c["num_envs"], c["gradient_steps"]
    venv = VecMonitor(DummyVecEnv([make_env] * E))
    h = HPARAMS[algo]
    kwargs = dict(learning_rate=h["lr"], buffer_size=SHARED["buffer_size"], learning_starts=SHARED["learning_starts"],
                  batch_size=SHARED["batch_size"], gamma=SHARED["gamma"], tau=h["tau"], train_freq=1, gradient_steps=G,
                  policy_kwargs=dict(net_arch=list(SHARED["hidden"])), device="cpu", seed=seed, verbose=0)
    if algo == "sac":
        return module.SAC("MlpPolicy", venv, ent_coef="auto", target_entropy="auto", **kwargs)
    # SB3/SBX count target_update_interval in env steps and copy every interval // n_envs vectorised steps,
    # i.e. every (interval // E) * G gradient steps: 1,000 * E / G env steps give ours' 1,000 gradient steps
    extra = dict(max_grad_norm=h["max_grad_norm"]) if peer == "sb3" else {}
    return module.DQN("MlpPolicy", venv, target_update_interval=h["target_update_gradient_steps"] * E // G,
                      exploration_initial_eps=h["exploration_initial_eps"],
                      exploration_final_eps=h["exploration_final_eps"],
                      exploration_fraction=h["exploration_fraction"], **extra, **kwargs)


def calibrate_torch_threads(make_env, algo: str, c: dict) -> dict:
    """Seconds per SB3 gradient step (batch 256) with 1 and 2 torch threads; set and return the faster."""
    import torch

    model = peer_model("sb3", algo, make_env, c, seed=0)
    model.learn(SHARED["learning_starts"] + 10 * c["num_envs"])
    timings = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for _ in range(2):  # the first pass warms up
            t0 = time.perf_counter()
            model.train(gradient_steps=10, batch_size=SHARED["batch_size"])
            timings[threads] = (time.perf_counter() - t0) / 10
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    model.get_env().close()
    return {"seconds_per_gradient_step": {str(k): v for k, v in timings.items()}, "chosen": best,
            "calibrated_on": f"SB3 {algo.upper()}, batch {SHARED['batch_size']}"}


def time_peer(peer: str, algo: str, make_env, c: dict, repeats: int) -> dict:
    times, finals, steps_done, warm_s = [], [], [], []
    E = c["num_envs"]
    warm = SHARED["learning_starts"] + PEER_WARM_VECTOR_STEPS * E
    for i in range(repeats):
        model = peer_model(peer, algo, make_env, c, seed=i)
        t0 = time.perf_counter()
        model.learn(warm)
        warm_s.append(time.perf_counter() - t0)
        before = model.num_timesteps
        t0 = time.perf_counter()
        model.learn(c["peer_steps"], reset_num_timesteps=False)
        times.append(time.perf_counter() - t0)
        steps_done.append(model.num_timesteps - before)
        returns = [float(ep["r"]) for ep in model.ep_info_buffer]
        finals.append(float(np.mean(returns[-10:])) if returns else float("nan"))
        model.get_env().close()
    steps = statistics.median(steps_done)
    med = statistics.median(times)
    return {"training_env_steps": steps, "warmup_env_steps": warm, "warmup_s": warm_s, "median_s": med,
            "times_s": times, "steps_per_s": steps / med,
            "gradient_steps": steps // E * c["gradient_steps"],
            "final_mean_episode_return": statistics.median(finals), "final_mean_episode_return_per_repeat": finals,
            "note": "mean raw return of the last (up to) 10 episodes completed, from VecMonitor"}


# ------------------------------------------------------------------------------------------------


def summary_line(results: dict) -> str:
    algo, name = GOAL_ON
    if name not in results["ours"].get(algo, {}):
        algo, name = next(((a, n) for a in results["ours"] for n in results["ours"][a]), (None, None))
        if algo is None:
            return "offpolicy: nothing run"
    o = results["ours"][algo][name]
    seeds = f", {o['seeds']} seeds vmapped, aggregate" if o["seeds"] > 1 else ""
    where = f"({algo.upper()} {name} config{seeds}, excl. compile)"
    parts = [f"offpolicy: ours {o['steps_per_s']:,.0f} env-steps/s"]
    for peer, goal in (("sb3", GOAL_VS_SB3), ("sbx", GOAL_VS_SBX)):
        label = PEERS[peer][0] if peer == "sbx" else "SB3"
        p = results[peer].get(algo, {}).get(name)
        sep = ", " if peer == "sb3" else "; "
        if p is None:
            why = results["skipped"].get(peer, "not run")
            why = "--ours-only" if "--ours-only" in why else ("not installed" if "not installed" in why else why)
            parts.append(f"{sep}{label} skipped ({why}), ratio n/a (goal {goal:.0f}x)")
        else:
            parts.append(f"{sep}{label} {p['steps_per_s']:,.0f} env-steps/s, ratio "
                         f"{o['steps_per_s'] / p['steps_per_s']:.1f} (goal {goal:.0f}x)")
    if (algo, name) != GOAL_ON:
        where += f"; goal config {GOAL_ON[0].upper()} {GOAL_ON[1]} not run"
    return "".join(parts) + f" {where}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", default=None,
                        help=f"comma-separated subset of {list(ALGORITHMS)} (default: all; quick: sac)")
    parser.add_argument("--configs", default=None,
                        help=f"comma-separated subset of {list(CONFIGS)} (default: all; quick: matched)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs of ours per configuration (default 2; quick 1)")
    parser.add_argument("--peer-repeats", type=int, default=1,
                        help="timed runs (seeds) of each peer per configuration")
    parser.add_argument("--peers", default="sb3,sbx", help="comma-separated subset of sb3,sbx")
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds of ours vmapped in one program (aggregate env-steps/s; 64 on a GPU)")
    parser.add_argument("--torch-threads", default=None,
                        help="'auto' (calibrate 1 vs 2) or a number (default auto; quick 1)")
    parser.add_argument("--ours-steps", type=int, default=None, help="training env steps of ours per config "
                                                                     "(default: per config; quick 1,000)")
    parser.add_argument("--peer-steps", type=int, default=None, help="timed training env steps of each peer run "
                                                                     "(default: per config; quick 500)")
    parser.add_argument("--ours-only", action="store_true", help="skip the peers (e.g. on a GPU machine)")
    add_common_arguments(parser)
    args = parser.parse_args()

    def pick(text, default, choices, what):
        names = [n.strip() for n in (text or default).split(",") if n.strip()]
        unknown = set(names) - set(choices)
        if unknown:
            parser.error(f"unknown {what} {sorted(unknown)}; choose from {list(choices)}")
        return names

    algos = pick(args.algorithms, "sac" if args.quick else ",".join(ALGORITHMS), ALGORITHMS, "algorithms")
    names = pick(args.configs, "matched" if args.quick else ",".join(CONFIGS), CONFIGS, "configs")
    peers = [] if args.ours_only else pick(args.peers, "sb3,sbx", PEERS, "peers")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    configs = {}
    for name in names:
        c = dict(CONFIGS[name], **(QUICK_STEPS if args.quick else {}))
        if args.ours_steps:
            c["ours_steps"] = args.ours_steps
        if args.peer_steps:
            c["peer_steps"] = args.peer_steps
        per_iteration = c["num_envs"] * c["steps_per_iteration"]
        c["ours_steps"] = max(per_iteration, c["ours_steps"] // per_iteration * per_iteration)
        c["peer_steps"] = max(c["num_envs"], c["peer_steps"] // c["num_envs"] * c["num_envs"])
        configs[name] = c
    repeats = args.repeats or (1 if args.quick else 2)
    torch_threads = args.torch_threads or ("1" if args.quick else "auto")
    out = output_path("offpolicy", args)

    load_before = os.getloadavg()
    env_info = {}
    for algo in algos:
        env, params = envs.make("trading", action_mode=ALGORITHMS[algo])
        env_info[algo] = {"name": "trading", "action_mode": env.action_mode, "window": env.window,
                          "episode_length": env.episode_length, "reward": env.reward_kind,
                          "market": list(params.market.close.shape)}
    results: dict = {
        "benchmark": "offpolicy", "quick": args.quick,
        "machine": machine_info("stable-baselines3", "sbx-rl", "gymnasium", "flax", "optax", "flashbax"),
        "env": {**env_info, "peer_env": "trading_jax.envs.reference.gym_trading.GymTradingEnv.from_jax on the same "
                                        "market arrays, DummyVecEnv + VecMonitor"},
        "configs": configs, "shared": SHARED, "hyperparams": {a: HPARAMS[a] for a in algos},
        "settings": {"repeats_ours": repeats, "repeats_peers": args.peer_repeats, "seeds_ours": args.seeds,
                     "peer_warmup": f"learning_starts + {PEER_WARM_VECTOR_STEPS} vectorised steps, untimed"},
        "goal": {"ratio_vs_sb3": GOAL_VS_SB3, "ratio_vs_sbx": GOAL_VS_SBX,
                 "judged_on": f"{GOAL_ON[0]} {GOAL_ON[1]} (excl. compile, training phase)"},
        "notes": __doc__[__doc__.index("Matched:"):__doc__.index("Stable-Baselines3, SBX and torch")].strip(),
        "ours": {}, "sb3": {}, "sbx": {}, "ratios": {}, "skipped": {},
    }
    if args.ours_only:
        for peer in PEERS:
            results["skipped"][peer] = f"{PEERS[peer][0]} skipped: --ours-only"
    run_peers = []
    for peer in peers:
        absent = missing("torch", "stable_baselines3", "gymnasium", *(("sbx",) if peer == "sbx" else ()))
        if absent is not None:
            results["skipped"][peer] = skip_note(PEERS[peer][0], PEERS[peer][2], absent)
            print(results["skipped"][peer], flush=True)
        else:
            run_peers.append(peer)

    if run_peers:
        import torch

        env, params = envs.make("trading", action_mode=ALGORITHMS[algos[0]])
        if torch_threads == "auto" and "sb3" in run_peers:
            threads = calibrate_torch_threads(gym_factory(env, params), algos[0], configs[names[0]])
        else:
            torch.set_num_threads(int(torch_threads if torch_threads != "auto" else 1))
            threads = {"chosen": torch.get_num_threads()}
        results["peer_settings"] = {
            "vec_env": "DummyVecEnv (steps the envs in the main process) + VecMonitor", "train_freq": 1,
            "gradient_steps": "as each config", "policy": "MlpPolicy, net_arch [256, 256], relu", "device": "cpu",
            "sac": "ent_coef='auto' (init 1.0), target_entropy='auto', tau 0.005, lr 3e-4",
            "dqn": "lr 1e-4, tau 1, target_update_interval = 1,000 * num_envs / gradient_steps env steps, epsilon "
                   "1 -> 0.05 over 10%, SB3 max_grad_norm 10 (SBX has none)", "torch_threads": threads}
        print(f"SB3 torch threads: {threads}", flush=True)

    for algo in algos:
        env, params = envs.make("trading", action_mode=ALGORITHMS[algo])
        make_env = gym_factory(env, params)
        for name in names:
            c = configs[name]
            ours = time_ours(algo, env, params, c, repeats, args.seeds)
            results["ours"].setdefault(algo, {})[name] = ours
            print(f"{algo} {name:10s} ours: {ours['steps_per_s']:>10,.0f} env-steps/s (compile "
                  f"{ours['compile_s']:.1f} s, {ours['seeds']} seed(s), final return "
                  f"{ours['final_mean_episode_return']:+.3f})", flush=True)
            for peer in run_peers:
                p = time_peer(peer, algo, make_env, c, args.peer_repeats)
                results[peer].setdefault(algo, {})[name] = p
                ratio = ours["steps_per_s"] / p["steps_per_s"]
                ratios = results["ratios"].setdefault(algo, {}).setdefault(name, {})
                ratios[f"vs_{peer}"] = ratio
                ratios[f"vs_{peer}_incl_compile"] = ours["steps_per_s_incl_compile"] / p["steps_per_s"]
                print(f"{algo} {name:10s} {peer}:  {p['steps_per_s']:>10,.0f} env-steps/s (final return "
                      f"{p['final_mean_episode_return']:+.3f}); ratio {ratio:.1f}x", flush=True)

    goal_ratios = results["ratios"].get(GOAL_ON[0], {}).get(GOAL_ON[1], {})
    goals = (("sb3", GOAL_VS_SB3), ("sbx", GOAL_VS_SBX))
    results["goal_met"] = {f"ratio_vs_{peer}": goal_ratios[f"vs_{peer}"] >= goal
                           for peer, goal in goals if f"vs_{peer}" in goal_ratios}
    record_load(results["machine"], load_before)
    write_results(out, results)
    print(summary_line(results))


if __name__ == "__main__":
    main()
