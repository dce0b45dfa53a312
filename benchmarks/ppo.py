"""Benchmark: end-to-end PPO training env-steps/s against Stable-Baselines3 PPO, same env semantics, one run.

The work: PPO on the trading env (`trading_jax.envs.make("trading")`'s defaults: 64 synthetic
regime-switching paths, window 32, episodes of 256 decisions, discrete short/flat/long, "pnl" reward).

  Ours:  `trading_jax.rl.ppo.make_train(PPOConfig(...), env, env_params)`, timed as
         `jax.jit(train).lower(key).compile()` once (compile time, reported separately) and then
         `--repeats` calls of the compiled program with fresh keys (median).
  Peer:  Stable-Baselines3 `PPO("MlpPolicy")` on `DummyVecEnv` of N copies of `GymTradingEnv`, the
         Gymnasium port of the same env (`trading_jax.envs.reference.gym_trading`, tested equal to ours
         step for step), built from the SAME market arrays, wrapped in `VecMonitor` (raw episode returns)
         and `VecNormalize` (ours normalises observations and rewards the same way: running mean/var,
         clip 10, reward scaled by the std of the discounted return). Timed as `model.learn(T)` of a
         freshly built model (median over `--sb3-repeats` seeds). DummyVecEnv steps the envs in the
         main process; SubprocVecEnv on a 2-core machine only adds pickling (`--sb3-vec subproc` to try).

Matched: num_envs, rollout length (n_steps), minibatch size, epochs, total timesteps (so the number of
updates), gamma 0.99, GAE lambda 0.95, clip 0.2, entropy 0.01, max grad norm 0.5, Adam lr 3e-4 (eps
1e-5) annealed linearly per update, advantages normalised per minibatch, value clipping (clip 0.2),
separate actor and critic MLPs [64, 64] tanh with orthogonal init (gains sqrt 2, 0.01, 1). Value-loss
weight: ours is `vf_coef * 0.5 * mean(...)` with vf_coef 1.0, SB3's is `vf_coef * mean(...)`, so SB3
gets vf_coef 0.5 (same loss). Differences left: SB3's clipped value loss uses the clipped prediction
only (ours the max of clipped and unclipped, as CleanRL); torch threads are chosen by a short
calibration (1 or 2: on a loaded 2-core machine 2 OpenMP threads can be several times slower).

Configurations (`--configs`):
  seed_like:   16 envs x 256 steps, minibatch 64, 10 epochs, 8 updates (the seed's 16 envs, epochs and
               minibatch; its 2048-step rollouts cut to 256 so that SB3 runs 8 updates in ~20-30 s).
  throughput:  256 envs x 128 steps, minibatch 4096, 4 epochs, 8 updates.
  wide:        1024 envs x 128 steps, minibatch 4096, 4 epochs, 2 updates.
  scale:       ours only, 4096 envs x 128 steps, minibatch 16384, 4 epochs, 2 updates (absolute
               throughput; on a GPU, the 10M env-steps/s goal).
The 30x goal is judged on the matched "throughput" configuration (excluding our compile time); the
other ratios and the ratios including compile time are reported alongside. Final mean episode
returns (raw pnl returns of the episodes completed in the last update) are reported to show that
both sides train the same problem: not a timing claim, and a few updates move them little.

Stable-Baselines3 and torch are optional (`pip install torch==2.13.0` first, then the `bench` extra):
when either is missing the peer is skipped with a note in the JSON and the summary line.

Writes benchmarks/results/ppo-DEVICE.json (ppo-DEVICE-quick.json with --quick) and ends with one
summary line.

    python benchmarks/ppo.py
    python benchmarks/ppo.py --quick        # throughput config cut to 2 updates, 2 repeats, 1 SB3 seed
    python benchmarks/ppo.py --ours-only --configs throughput,scale               # on a GPU
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np

import trading_jax.envs as envs
from trading_jax.rl.ppo import PPOConfig, make_train

from _common import add_common_arguments, missing, output_path, skip_note, write_results
from _load import record_load

ROOT = Path(__file__).resolve().parents[1]
GOAL_RATIO = 30.0
GOAL_GPU_STEPS_PER_S = 10e6

CONFIGS = {
    "seed_like": dict(num_envs=16, num_steps=256, minibatch_size=64, update_epochs=10, updates=8),
    "throughput": dict(num_envs=256, num_steps=128, minibatch_size=4096, update_epochs=4, updates=8),
    "wide": dict(num_envs=1024, num_steps=128, minibatch_size=4096, update_epochs=4, updates=2),
    "scale": dict(num_envs=4096, num_steps=128, minibatch_size=16384, update_epochs=4, updates=2, ours_only=True),
}
HPARAMS = dict(gamma=0.99, gae_lambda=0.95, clip_eps=0.2, vf_coef=1.0, ent_coef=0.01, lr=3e-4, max_grad_norm=0.5)


# ------------------------------------------------------------------------------------------------
# Ours
# ------------------------------------------------------------------------------------------------


def ppo_config(c: dict) -> PPOConfig:
    return PPOConfig(env="trading", num_envs=c["num_envs"], num_steps=c["num_steps"],
                     total_timesteps=c["num_envs"] * c["num_steps"] * c["updates"], update_epochs=c["update_epochs"],
                     minibatch_size=c["minibatch_size"], **HPARAMS)


def time_ours(env, params, c: dict, repeats: int) -> dict:
    config = ppo_config(c)
    train = make_train(config, env, params)
    t0 = time.perf_counter()
    compiled = jax.jit(train).lower(jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t0
    times, finals, firsts = [], [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        result = jax.block_until_ready(compiled(jax.random.key(i + 1)))
        times.append(time.perf_counter() - t0)
        ret = np.asarray(result.metrics["episode_return"])
        finals.append(float(ret[-1]))
        firsts.append(float(ret[0]))
    med = statistics.median(times)
    steps = config.num_updates * config.batch_size
    return {"total_timesteps": steps, "num_updates": config.num_updates, "compile_s": compile_s,
            "median_s": med, "times_s": times, "steps_per_s": steps / med,
            "steps_per_s_incl_compile": steps / (med + compile_s),
            "first_update_mean_episode_return": statistics.median(firsts),
            "final_mean_episode_return": statistics.median(finals), "final_mean_episode_return_per_repeat": finals,
            "config": {k: getattr(config, k) for k in (
                "num_envs", "num_steps", "total_timesteps", "update_epochs", "minibatch_size", "anneal_lr",
                "clip_value", "normalize_advantages", "normalize_observations", "normalize_rewards", "obs_clip",
                "reward_clip", "network", "adam_eps", *HPARAMS)}}


# ------------------------------------------------------------------------------------------------
# Stable-Baselines3
# ------------------------------------------------------------------------------------------------


def gym_factory(env, params):
    """A zero-argument constructor of the Gymnasium port on the same (host-copied) market."""
    from trading_jax.envs.reference.gym_trading import PARAM_FIELDS, GymTradingEnv

    market = jax.device_get(params.market)
    kwargs = dict(window=env.window, episode_length=env.episode_length, action_mode=env.action_mode,
                  reward=env.reward_kind, **{f: getattr(params, f) for f in PARAM_FIELDS})
    kwargs = {k: (v.item() if hasattr(v, "item") else v) for k, v in kwargs.items()}
    return lambda: GymTradingEnv(market, **kwargs)


def sb3_model(make_env, c: dict, seed: int, vec: str):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor, VecNormalize
    from torch import nn

    cls = DummyVecEnv if vec == "dummy" else SubprocVecEnv
    venv = VecNormalize(VecMonitor(cls([make_env] * c["num_envs"])), norm_obs=True, norm_reward=True,
                        clip_obs=10.0, clip_reward=10.0, gamma=HPARAMS["gamma"], epsilon=1e-8)
    updates, lr = c["updates"], HPARAMS["lr"]
    return PPO(
        "MlpPolicy", venv, n_steps=c["num_steps"], batch_size=c["minibatch_size"], n_epochs=c["update_epochs"],
        # SB3 calls the schedule after the rollout with 1 - (u + 1) / U; ours uses 1 - u / U for update u
        learning_rate=lambda progress: lr * min(1.0, progress + 1.0 / updates),
        gamma=HPARAMS["gamma"], gae_lambda=HPARAMS["gae_lambda"], clip_range=HPARAMS["clip_eps"],
        clip_range_vf=HPARAMS["clip_eps"], ent_coef=HPARAMS["ent_coef"], vf_coef=0.5 * HPARAMS["vf_coef"],
        max_grad_norm=HPARAMS["max_grad_norm"], normalize_advantage=True,
        policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=nn.Tanh, ortho_init=True),
        device="cpu", seed=seed, verbose=0)


def episode_returns_callback():
    """An SB3 callback collecting the raw returns (VecMonitor's) of the episodes completed in each rollout
    in its `per_rollout` list of lists (SB3 is imported lazily, so the class is built here)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeReturns(BaseCallback):
        def __init__(self):
            super().__init__()
            self.per_rollout: list[list[float]] = []

        def _on_rollout_start(self):
            self.per_rollout.append([])

        def _on_step(self):
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.per_rollout[-1].append(float(info["episode"]["r"]))
            return True

    return EpisodeReturns()


def calibrate_torch_threads(make_env, c: dict) -> dict:
    """Seconds per SB3 gradient step (minibatch of this config) with 1 and 2 torch threads; pick the faster."""
    import torch

    model = sb3_model(make_env, dict(c, num_envs=1, num_steps=c["minibatch_size"], updates=1), 0, "dummy")
    obs = torch.randn(c["minibatch_size"], model.observation_space.shape[0])
    actions = torch.randint(0, 3, (c["minibatch_size"],))
    timings = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for rep in range(2):  # the first pass warms up
            t0 = time.perf_counter()
            for _ in range(20):
                values, log_prob, entropy = model.policy.evaluate_actions(obs, actions)
                loss = -(log_prob.mean() + entropy.mean()) + values.pow(2).mean()
                model.policy.optimizer.zero_grad()
                loss.backward()
                model.policy.optimizer.step()
            timings[threads] = (time.perf_counter() - t0) / 20
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    return {"seconds_per_gradient_step": {str(k): v for k, v in timings.items()}, "chosen": best}


def time_sb3(make_env, c: dict, repeats: int, vec: str) -> dict:
    times, finals, firsts = [], [], []
    steps = c["num_envs"] * c["num_steps"] * c["updates"]
    for i in range(repeats):
        model = sb3_model(make_env, c, seed=i, vec=vec)
        callback = episode_returns_callback()
        t0 = time.perf_counter()
        model.learn(total_timesteps=steps, callback=callback)
        times.append(time.perf_counter() - t0)
        assert model.num_timesteps == steps, (model.num_timesteps, steps)
        rollouts = callback.per_rollout
        finals.append(float(np.mean(rollouts[-1])) if rollouts[-1] else float("nan"))
        firsts.append(float(np.mean(rollouts[0])) if rollouts[0] else float("nan"))
        model.get_env().close()
    med = statistics.median(times)
    return {"total_timesteps": steps, "num_updates": c["updates"], "median_s": med, "times_s": times,
            "steps_per_s": steps / med, "first_update_mean_episode_return": statistics.median(firsts),
            "final_mean_episode_return": statistics.median(finals), "final_mean_episode_return_per_repeat": finals}


# ------------------------------------------------------------------------------------------------


def machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
            "device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind, "numpy": np.__version__}
    for pkg in ("torch", "stable-baselines3", "gymnasium"):
        try:
            info[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=None,
                        help=f"comma-separated subset of {list(CONFIGS)} (default: all; quick: throughput)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of ours per configuration (default 5; quick 2)")
    parser.add_argument("--sb3-repeats", type=int, default=None,
                        help="timed runs (seeds) of SB3 per configuration (default 2; quick 1)")
    parser.add_argument("--sb3-vec", choices=("dummy", "subproc"), default="dummy")
    parser.add_argument("--torch-threads", default=None,
                        help="'auto' (calibrate 1 vs 2) or a number (default auto; quick 1)")
    parser.add_argument("--ours-only", action="store_true", help="skip SB3 (e.g. on a GPU machine)")
    parser.add_argument("--quick-updates", type=int, default=2, help="updates per configuration with --quick")
    add_common_arguments(parser)
    args = parser.parse_args()
    names = [n.strip() for n in (args.configs or ("throughput" if args.quick else ",".join(CONFIGS))).split(",")
             if n.strip()]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose from {list(CONFIGS)}")
    configs = {n: dict(CONFIGS[n], updates=args.quick_updates) if args.quick else CONFIGS[n] for n in names}
    repeats = args.repeats or (2 if args.quick else 5)
    sb3_repeats = args.sb3_repeats or (1 if args.quick else 2)
    torch_threads = args.torch_threads or ("1" if args.quick else "auto")
    backend = jax.default_backend()
    out = output_path("ppo", args)

    env, params = envs.make("trading")
    load_before = os.getloadavg()
    results: dict = {
        "benchmark": "ppo", "quick": args.quick, "machine": machine(),
        "env": {"name": "trading", "window": env.window, "episode_length": env.episode_length,
                "action_mode": env.action_mode, "reward": env.reward_kind, "market": list(params.market.close.shape),
                "peer_env": "trading_jax.envs.reference.gym_trading.GymTradingEnv on the same market arrays"},
        "configs": configs, "hyperparams_ours": HPARAMS,
        "settings": {"repeats_ours": repeats, "repeats_sb3": sb3_repeats},
        "goal": {"ratio_vs_sb3_throughput_config": GOAL_RATIO, "gpu_steps_per_s": GOAL_GPU_STEPS_PER_S},
        "notes": __doc__[__doc__.index("Matched:"):__doc__.index("Stable-Baselines3 and torch")].strip(),
        "ours": {}, "sb3": {}, "ratios": {}, "skipped": {},
    }

    absent = None if args.ours_only else missing("torch", "stable_baselines3", "gymnasium")
    if args.ours_only:
        results["skipped"]["sb3"] = "SB3 skipped: --ours-only"
    elif absent is not None:
        results["skipped"]["sb3"] = skip_note("Stable-Baselines3", "torch==2.13.0 && pip install -e '.[bench]'", absent)
        print(results["skipped"]["sb3"], flush=True)
    run_sb3 = not args.ours_only and absent is None

    make_env = None
    if run_sb3:
        import torch

        make_env = gym_factory(env, params)
        first = next((configs[n] for n in names if not configs[n].get("ours_only")), None)
        if torch_threads == "auto" and first is not None:
            threads = calibrate_torch_threads(make_env, first)
        else:
            torch.set_num_threads(int(torch_threads if torch_threads != "auto" else 1))
            threads = {"chosen": torch.get_num_threads()}
        results["sb3_settings"] = {
            "vec_env": "DummyVecEnv" if args.sb3_vec == "dummy" else "SubprocVecEnv",
            "wrappers": "VecMonitor, VecNormalize(norm_obs, norm_reward, clip 10, gamma 0.99, eps 1e-8)",
            "policy": "MlpPolicy net_arch pi=[64, 64] vf=[64, 64] Tanh, ortho_init", "n_epochs/batch_size/n_steps":
            "as each config", "learning_rate": "3e-4 * (1 - u / U) for update u (per-update linear anneal, as ours)",
            "clip_range": 0.2, "clip_range_vf": 0.2, "ent_coef": 0.01, "vf_coef": 0.5, "max_grad_norm": 0.5,
            "gamma": 0.99, "gae_lambda": 0.95, "adam_eps": 1e-5, "device": "cpu", "torch_threads": threads,
        }
        print(f"SB3 torch threads: {threads}", flush=True)

    for name in names:
        c = configs[name]
        ours = time_ours(env, params, c, repeats)
        results["ours"][name] = ours
        print(f"{name:10s} ours: {ours['steps_per_s']:>12,.0f} env-steps/s (compile {ours['compile_s']:.1f} s, "
              f"final return {ours['final_mean_episode_return']:+.3f})", flush=True)
        if not run_sb3 or c.get("ours_only"):
            continue
        peer = time_sb3(make_env, c, sb3_repeats, args.sb3_vec)
        results["sb3"][name] = peer
        results["ratios"][name] = {"excl_compile": ours["steps_per_s"] / peer["steps_per_s"],
                                   "incl_compile": ours["steps_per_s_incl_compile"] / peer["steps_per_s"]}
        print(f"{name:10s} SB3:  {peer['steps_per_s']:>12,.0f} env-steps/s (final return "
              f"{peer['final_mean_episode_return']:+.3f}); ratio {results['ratios'][name]['excl_compile']:.1f}x "
              f"({results['ratios'][name]['incl_compile']:.2f}x incl. compile)", flush=True)

    goal_met = {}
    if "throughput" in results["ratios"]:
        goal_met["ratio_vs_sb3_throughput_config"] = results["ratios"]["throughput"]["excl_compile"] >= GOAL_RATIO
    if backend != "cpu" and results["ours"]:
        best = max(r["steps_per_s"] for r in results["ours"].values())
        goal_met["gpu_steps_per_s"] = best >= GOAL_GPU_STEPS_PER_S
    results["goal_met"] = goal_met
    record_load(results["machine"], load_before)

    write_results(out, results)
    key = "throughput" if "throughput" in results["ratios"] else next(iter(results["ratios"]), None)
    if key is None:
        best = max(results["ours"], key=lambda n: results["ours"][n]["steps_per_s"])
        why = "--ours-only" if args.ours_only else ("not installed" if absent else "no matched config")
        print(f"ppo: ours {results['ours'][best]['steps_per_s']:,.0f} env-steps/s ({best}), SB3 skipped ({why}), "
              f"ratio n/a (goal {GOAL_RATIO:.0f}x vs SB3; {GOAL_GPU_STEPS_PER_S:,.0f} env-steps/s on a GPU)")
        return
    o, s = results["ours"][key]["steps_per_s"], results["sb3"][key]["steps_per_s"]
    print(f"ppo: ours {o:,.0f} env-steps/s, SB3 {s:,.0f} env-steps/s, ratio {o / s:.1f} ({key} config, "
          f"excl. compile; goal {GOAL_RATIO:.0f}x)")


if __name__ == "__main__":
    main()
