"""PPO experiments from TOML files: train over seeds, evaluate on held-out episodes against baselines.

An RL experiment file (see `experiments/ppo_*.toml`) has `algorithm = "ppo"`, a `name`, `seeds`, and:

    [env]          name = "execution" | "trading" | "portfolio"
    [env.kwargs]   keyword arguments of `trading_jax.envs.make` (static settings and EnvParams fields)
    [env.data]     optional real data: path (relative to ../shared/data or absolute), repair, symbols,
                   train / val / test fractions (default 0.6 / 0.1 / 0.3) and an embargo (bars). Training
                   episodes replay the train split, validation episodes the val split and the final table
                   the test split, so neither validation nor the table ever sees a training bar.
    [ppo]          `PPOConfig` fields (num_envs, num_steps, total_timesteps, ...)
    [evaluation]   episodes (held-out episodes per policy), baselines (names in
                   `trading_jax.rl.baselines.BASELINES[env]`, optionally with keyword tables in
                   [evaluation.baseline_kwargs.NAME]), metric ("shortfall_bps", "total_reward",
                   "net_return"), lower_is_better, reference (a baseline for paired differences),
                   every_updates (checkpoint/log chunk)

During training, after every `every_updates` updates, the current policy runs 256 fixed validation
episodes; their mean metric is logged to TensorBoard, stored with the checkpoint and ranks it (the best
checkpoint by validation is kept next to the latest). The final table evaluates the FINAL params of each
seed (no selection on the test episodes, and none on validation either, so nothing is tuned on them).

Synthetic environments are held out by key: training and evaluation draw different random episodes
(and, for the execution env, different order-book noise). Every policy, PPO of each seed and each
baseline, is evaluated on the SAME evaluation episodes (common random numbers), so paired differences
are tight. The table reports per-episode means with 95% t-intervals, and for PPO also the spread
across training seeds (a t-interval over the per-seed means).
"""

from __future__ import annotations

import dataclasses
import json
import time
import tomllib
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.logging import get_logger, progress

__all__ = ["RLExperiment", "load_rl_experiment", "is_rl_experiment", "run_rl_experiment"]

log = get_logger(__name__)

METRICS = ("shortfall_bps", "total_reward", "net_return")


@dataclasses.dataclass(frozen=True)
class RLExperiment:
    """A PPO experiment (see the module docstring for the file format)."""

    name: str
    env: str
    env_kwargs: Mapping[str, Any]
    ppo: Mapping[str, Any]
    seeds: tuple[int, ...] = (0, 1, 2)
    data: Mapping[str, Any] | None = None
    episodes: int = 1000
    baselines: tuple[str, ...] = ()
    baseline_kwargs: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    metric: str = "total_reward"
    lower_is_better: bool = False
    reference: str | None = None
    every_updates: int = 10
    eval_seed: int = 12345

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"[evaluation] metric must be one of {METRICS}, got {self.metric!r}")
        if self.episodes < 2:
            raise ValueError(f"[evaluation] episodes must be >= 2, got {self.episodes}")
        if self.reference is not None and self.reference not in self.baselines:
            raise ValueError(f"[evaluation] reference {self.reference!r} is not one of the baselines {self.baselines}")


def is_rl_experiment(path: str | Path) -> bool:
    """True if the TOML file is an RL experiment (`algorithm = "ppo"`)."""
    with open(path, "rb") as handle:
        return tomllib.load(handle).get("algorithm") is not None


def load_rl_experiment(path: str | Path) -> RLExperiment:
    """Read an RL experiment file; errors name the file and the offending table or key."""
    path = Path(path)
    with open(path, "rb") as handle:
        raw = tomllib.load(handle)
    if raw.get("algorithm") != "ppo":
        raise ValueError(f"{path}: algorithm must be 'ppo', got {raw.get('algorithm')!r}")
    known = {"algorithm", "name", "seeds", "env", "ppo", "evaluation"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}; expected {sorted(known)}")
    env = dict(raw.get("env", {}))
    if "name" not in env:
        raise ValueError(f"{path}: [env] needs a name (execution, trading or portfolio)")
    evaluation = dict(raw.get("evaluation", {}))
    fields = dict(
        name=raw.get("name", path.stem),
        env=env.pop("name"),
        env_kwargs=dict(env.pop("kwargs", {})),
        data=env.pop("data", None),
        ppo=dict(raw.get("ppo", {})),
        seeds=tuple(int(s) for s in raw.get("seeds", (0, 1, 2))),
        episodes=int(evaluation.pop("episodes", 1000)),
        baselines=tuple(evaluation.pop("baselines", ())),
        baseline_kwargs=dict(evaluation.pop("baseline_kwargs", {})),
        metric=evaluation.pop("metric", "total_reward"),
        lower_is_better=bool(evaluation.pop("lower_is_better", False)),
        reference=evaluation.pop("reference", None),
        every_updates=int(evaluation.pop("every_updates", 10)),
        eval_seed=int(evaluation.pop("seed", 12345)),
    )
    leftovers = {f"[env].{k}" for k in env} | {f"[evaluation].{k}" for k in evaluation}
    if leftovers:
        raise ValueError(f"{path}: unknown keys {sorted(leftovers)}")
    try:
        return RLExperiment(**fields)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _ppo_config(experiment: RLExperiment):
    from trading_jax.rl.ppo import PPOConfig

    fields = {f.name for f in dataclasses.fields(PPOConfig)}
    unknown = set(experiment.ppo) - fields
    if unknown:
        raise ValueError(f"[ppo]: unknown PPOConfig fields {sorted(unknown)}")
    config = PPOConfig(env=experiment.env, env_kwargs=dict(experiment.env_kwargs), **experiment.ppo)
    config.validate()
    return config


def _resolve_data_path(path: str) -> Path:
    """`path` as given (absolute or relative to the working directory), else under ../shared/data."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    repo = Path(__file__).resolve().parents[2]
    shared = repo.parent / "shared" / "data" / path
    if shared.exists():
        return shared
    raise FileNotFoundError(f"[env.data] path {path!r} not found (looked in the working directory and {shared.parent})")


def build_envs(experiment: RLExperiment):
    """`(env, train_params, val_params, test_params, info)`: replayed train/validation/test splits of real
    data, or one synthetic environment whose validation and test episodes differ from the training ones
    by key."""
    from trading_jax.envs import make

    if not experiment.data:
        env, params = make(experiment.env, **experiment.env_kwargs)
        return env, params, params, params, {"source": "synthetic (held out by key)"}
    from trading_jax.data import chronological_split, load_ohlcv

    spec = dict(experiment.data)
    path = _resolve_data_path(spec.pop("path"))
    data = load_ohlcv(path, repair=tuple(spec.pop("repair", ())))
    symbols = spec.pop("symbols", None)
    if symbols is not None:
        data = data.select(symbols)
    split = chronological_split(data.n_time, train=float(spec.pop("train", 0.6)), val=float(spec.pop("val", 0.1)),
                                test=float(spec.pop("test", 0.3)), embargo=int(spec.pop("embargo", 0)))
    if spec:
        raise ValueError(f"[env.data]: unknown keys {sorted(spec)}; expected path, repair, symbols, train, val, "
                         "test, embargo")
    if len(split.val) == 0:
        raise ValueError("[env.data]: val must be > 0 (validation episodes monitor training; the test split is "
                         "used only for the final table)")
    env, train_params = make(experiment.env, data=data, split=split.train, **experiment.env_kwargs)
    _, val_params = make(experiment.env, data=data, split=split.val, **experiment.env_kwargs)
    _, eval_params = make(experiment.env, data=data, split=split.test, **experiment.env_kwargs)
    stamps = np.asarray(data.timestamps).astype("datetime64[m]")
    info = {"source": f"{path.name} ({', '.join(data.symbols)})",
            "train": [str(stamps[split.train.start]), str(stamps[split.train.stop - 1])],
            "val": [str(stamps[split.val.start]), str(stamps[split.val.stop - 1])],
            "test": [str(stamps[split.test.start]), str(stamps[split.test.stop - 1])],
            "train_bars": len(split.train), "test_bars": len(split.test),
            "episode_bars": getattr(env, "episode_length", None)}
    return env, train_params, val_params, eval_params, info


def _episode_metric(metric: str, env_params):
    """`values(total_reward [n], info) -> [n]` float64: the experiment's per-episode metric, computed the
    same way for validation (`ppo.make_evaluator` output) and for the final table (`EpisodeStats`)."""
    initial = float(np.asarray(getattr(env_params, "initial_equity", getattr(env_params, "initial_cash", 1.0))))

    def values(total_reward, info):
        if metric == "total_reward":
            return np.asarray(total_reward, np.float64)
        if metric == "net_return":
            return np.asarray(info["equity"], np.float64) / initial - 1.0
        return np.asarray(info[metric], np.float64)

    return values


def _metric(experiment: RLExperiment, env_params):
    """The per-episode metric as a `compare` metric: a callable over `EpisodeStats` named after it."""
    values = _episode_metric(experiment.metric, env_params)

    def metric(stats):
        return values(stats.total_reward, stats.info)

    metric.__name__ = experiment.metric
    return metric


def _validation(experiment: RLExperiment, config, env, val_params, n_episodes: int = 256):
    """`evaluate(policy_params, updates) -> {"val_METRIC": mean over n_episodes}` on fixed validation
    episodes (compiled once; a key different from the final test episodes')."""
    from trading_jax.rl.ppo import make_evaluator

    run = make_evaluator(config, env, val_params, n_episodes)
    key = jax.random.key(experiment.eval_seed + 1)
    values = _episode_metric(experiment.metric, val_params)

    def evaluate(policy_params, updates):
        del updates
        out = jax.device_get(run(policy_params, val_params, key))
        return {f"val_{experiment.metric}": float(np.mean(values(out["returns"], out["info"])))}

    return evaluate


def _ppo_policy(config, env, env_params, result):
    """The trained policy (greedy) as a baseline-style `policy(obs, state, key, env_params)`."""
    from trading_jax.rl.ppo import PolicyParams, make_policy

    act = make_policy(config, env, env_params)
    params = PolicyParams(result.params, result.obs_norm)

    def policy(obs, state, key, env_params):
        del state, env_params
        return act(params, obs[None], key, True)[0]

    return policy


def run_rl_experiment(experiment: RLExperiment, out_dir: str | Path, show_progress: bool = True) -> str:
    """Train PPO for every seed (checkpointed, resumable, logged), then evaluate PPO and the baselines on
    the same held-out episodes; writes results.json and results.md; returns a one-line summary."""
    from trading_jax.checkpoint import CheckpointConfig, Checkpointer
    from trading_jax.logging import TensorBoardWriter
    from trading_jax.rl import baselines as B
    from trading_jax.rl.evaluation import compare, summarize
    from trading_jax.rl.loop import fit
    from trading_jax.rl.ppo import make_trainer

    from trading_jax.training.experiment import claim_run_directory

    out = Path(out_dir)
    claim_run_directory(out, {k: v for k, v in dataclasses.asdict(experiment).items() if k != "seeds"})
    config = _ppo_config(experiment)
    env, train_params, val_params, eval_params, info = build_envs(experiment)
    trainer = make_trainer(config, env, train_params)
    validation = _validation(experiment, config, env, val_params)
    val_name = f"val_{experiment.metric}"
    metric = _metric(experiment, eval_params)
    metric_name = experiment.metric

    per_seed, policies = [], {}
    for seed in progress(experiment.seeds, total=len(experiment.seeds), desc=f"{experiment.name} seeds",
                         enabled=show_progress):
        start = time.perf_counter()
        ckpt_dir = (out / "checkpoints" / f"seed_{seed}").resolve()
        with Checkpointer(CheckpointConfig(str(ckpt_dir), save_every_steps=1, keep_best=1, best_metric=val_name,
                                           mode="min" if experiment.lower_is_better else "max",
                                           keep_last=1)) as ckpt, \
                TensorBoardWriter(out / "tensorboard" / f"seed_{seed}") as writer:
            result = fit(trainer, jax.random.key(seed), ckpt, every_updates=experiment.every_updates,
                         writer=writer, show_progress=show_progress, evaluate=validation,
                         desc=f"{experiment.name} seed {seed}")
            jax.block_until_ready(result.params)
            validation_curve = {step: m.get(val_name) for step, m in sorted(ckpt.metrics().items())}
        seconds = time.perf_counter() - start
        returns = np.asarray(result.metrics["episode_return"])
        counts = np.asarray(result.metrics["episode_count"])
        last = slice(max(0, len(returns) - max(1, len(returns) // 10)), None)
        per_seed.append({"seed": seed, "seconds": seconds, "validation": validation_curve,
                         "env_steps_per_s": config.num_updates * config.batch_size / seconds,
                         "final_train_episode_return": float((returns[last] * counts[last]).sum()
                                                             / max(counts[last].sum(), 1))})
        policies[f"ppo_seed_{seed}"] = _ppo_policy(config, env, eval_params, result)

    for name in experiment.baselines:
        kwargs = dict(experiment.baseline_kwargs.get(name, {}))
        policies[name] = B.make_baseline(experiment.env, name, env, eval_params, **kwargs)
    n_actions = getattr(env.action_space(eval_params), "n", None)
    rows = compare(env, eval_params, policies, jax.random.key(experiment.eval_seed), experiment.episodes,
                   metrics=(metric,), reference=experiment.reference,
                   n_actions=int(n_actions) if isinstance(n_actions, (int, np.integer)) else None)
    label = metric_name
    seed_means = [row[f"{label}_mean"] for row in rows if row["policy"].startswith("ppo_seed_")]
    across = summarize(seed_means) if len(seed_means) > 1 else None
    report = {"experiment": experiment.name, "env": experiment.env, "env_kwargs": dict(experiment.env_kwargs),
              "data": info, "ppo": dataclasses.asdict(config), "seeds": per_seed, "evaluation": rows,
              "ppo_across_seeds": across, "metric": metric_name, "lower_is_better": experiment.lower_is_better,
              "episodes": experiment.episodes}
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "results.md").write_text(results_table(experiment, info, rows, across, per_seed))
    best = min if experiment.lower_is_better else max
    best_baseline = best((r for r in rows if not r["policy"].startswith("ppo_")), key=lambda r: r[f"{label}_mean"],
                         default=None)
    ppo_text = (f"PPO {across['mean']:.4g} (95% CI over seeds {across['ci95_low']:.4g} .. {across['ci95_high']:.4g})"
                if across else f"PPO {seed_means[0]:.4g}")
    base_text = (f"; best baseline {best_baseline['policy']} {best_baseline[f'{label}_mean']:.4g}"
                 if best_baseline else "")
    return (f"{experiment.name}: {metric_name} on {experiment.episodes} held-out episodes: {ppo_text}{base_text}; "
            f"table in {out / 'results.md'}")


def results_table(experiment: RLExperiment, info: dict, rows: list, across: dict | None, per_seed: list) -> str:
    """Markdown: one row per policy (mean, std, 95% CI over episodes; paired difference vs the reference)."""
    label = experiment.metric
    direction = "lower is better" if experiment.lower_is_better else "higher is better"
    lines = [f"# {experiment.name}", "",
             f"Env `{experiment.env}`; data: {info.get('source')}"
             + (f"; train {info['train'][0]} .. {info['train'][1]}, test {info['test'][0]} .. {info['test'][1]}"
                if "train" in info else "") + ".",
             f"Metric `{label}` ({direction}) over the same {experiment.episodes} held-out episodes for every policy "
             "(common random numbers); 95% Student-t intervals over episodes.", ""]
    if info.get("test_bars") and info.get("episode_bars"):
        independent = info["test_bars"] // info["episode_bars"]
        lines += [f"Caveat: the {experiment.episodes} evaluation episodes start at random bars of a {info['test_bars']}-bar "
                  f"test period, so they overlap: only about {independent} episodes of {info['episode_bars']} bars "
                  "are disjoint. The intervals treat episodes as independent and are therefore too narrow; "
                  "read them as a lower bound on the uncertainty.", ""]
    head = "| policy | mean | std | 95% CI |"
    sep = "| --- | --- | --- | --- |"
    if experiment.reference:
        head += f" paired diff vs {experiment.reference} [95% CI] |"
        sep += " --- |"
    shares = "action_share" in rows[0]
    if shares:
        head += " share of steps per action 0..n-1 |"
        sep += " --- |"
    lines += [head, sep]
    for row in rows:
        line = (f"| {row['policy']} | {row[f'{label}_mean']:.4g} | {row[f'{label}_std']:.4g} | "
                f"{row[f'{label}_ci95_low']:.4g} .. {row[f'{label}_ci95_high']:.4g} |")
        if experiment.reference:
            line += (f" {row[f'{label}_diff_mean']:+.4g} [{row[f'{label}_diff_ci95_low']:.4g} .. "
                     f"{row[f'{label}_diff_ci95_high']:.4g}] |")
        if shares:
            line += " " + " ".join(f"{x:.2f}" for x in row["action_share"]) + " |"
        lines.append(line)
    if across:
        lines += ["", f"PPO across {across['n']} training seeds (per-seed means): {across['mean']:.4g}, "
                      f"95% CI {across['ci95_low']:.4g} .. {across['ci95_high']:.4g}."]
    lines += ["", "Training: " + ", ".join(f"seed {s['seed']}: {s['seconds']:.0f} s, "
                                           f"{s['env_steps_per_s']:.3g} env-steps/s" for s in per_seed) + "."]
    return "\n".join(lines) + "\n"
