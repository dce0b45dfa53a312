"""PPO experiment files (`algorithm = "ppo"`): schema and runner: train over seeds, evaluate on held-out
episodes against baselines.

An RL experiment file (see `experiments/ppo_*.toml`) has `algorithm = "ppo"`, a `name`, `seeds`, and:

    [env]          name = "execution" | "trading" | "portfolio"
    [env.kwargs]   keyword arguments of `trading_jax.envs.make` (static settings and EnvParams fields)
    [env.data]     optional real data: path (relative to the working directory, or absolute), repair, symbols,
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

Every table is checked (`trading_jax.runs.schema`): unknown keys, types and ranges (gamma in (0, 1], a
finite positive learning rate, non-negative fees and costs in [env.kwargs], ...) with one-line errors. The
run folder is locked and fingerprinted (`trading_jax.runs.folder`). A seed whose training losses are all NaN
or whose final params are not finite makes the run FAILED (its table says so; the command exits non-zero).

Synthetic environments are held out by key: training and evaluation draw different random episodes
(and, for the execution env, different order-book noise). Every policy, PPO of each seed and each
baseline, is evaluated on the SAME evaluation episodes (common random numbers), so paired differences
are tight. The table reports per-episode means with 95% t-intervals, and for PPO also the spread
across training seeds (a t-interval over the per-seed means).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from trading_jax.logging import get_logger, progress
from trading_jax.runs import schema as S
from trading_jax.runs.folder import RunFolder, file_fingerprints
from trading_jax.runs.results import FAILED, write_results

__all__ = ["PPOExperiment", "load", "run", "build_envs"]

log = get_logger(__name__)

METRICS = ("shortfall_bps", "total_reward", "net_return")


@dataclasses.dataclass(frozen=True)
class PPOExperiment:
    """A PPO experiment (see the module docstring for the file format)."""

    name: str
    env: str
    env_kwargs: Mapping[str, Any]
    ppo: Any  # PPOConfig
    seeds: tuple[int, ...] = (0, 1, 2)
    data: Mapping[str, Any] | None = None
    episodes: int = 1000
    baselines: tuple[str, ...] = ()
    baseline_kwargs: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    metric: str = "total_reward"
    lower_is_better: bool = False
    reference: str | None = None
    every_updates: int = 10
    seed: int = 12345
    file: str = "<experiment>"

    algorithm = "ppo"

    @property
    def eval_seed(self) -> int:
        return self.seed


@dataclasses.dataclass(frozen=True)
class _Evaluation:
    episodes: int = 1000
    baselines: tuple[str, ...] = ()
    baseline_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    metric: str = "total_reward"
    lower_is_better: bool = False
    reference: str | None = None
    every_updates: int = 10
    seed: int = 12345


@dataclasses.dataclass(frozen=True)
class _EnvData:
    path: str
    repair: tuple[str, ...] = ()
    symbols: tuple[str, ...] | None = None
    train: float = 0.6
    val: float = 0.1
    test: float = 0.3
    embargo: int = 0


PPO_CHECKS = {
    "num_envs": S.at_least(1), "num_steps": S.at_least(1), "total_timesteps": S.at_least(1),
    "update_epochs": S.at_least(1), "minibatch_size": S.at_least(1),
    "gamma": S.in_interval(0, 1, low_open=True), "gae_lambda": S.in_interval(0, 1), "clip_eps": S.positive,
    "vf_coef": S.non_negative, "ent_coef": S.non_negative, "lr": S.positive, "max_grad_norm": S.positive,
    "obs_clip": S.positive, "reward_clip": S.positive, "policy": S.one_of("auto", "categorical", "gaussian"),
    "squash": S.one_of("tanh", "clip"), "adam_eps": S.positive,
}
EVALUATION_CHECKS = {"episodes": S.at_least(2), "metric": S.one_of(*METRICS), "every_updates": S.at_least(1),
                     "seed": S.at_least(0)}
DATA_CHECKS = {"train": S.in_interval(0, 1, low_open=True, high_open=True), "val": S.in_interval(0, 1, low_open=True),
               "test": S.in_interval(0, 1, low_open=True, high_open=True), "embargo": S.at_least(0)}
_COST_WORDS = ("fee", "spread", "slippage", "cost", "commission", "impact")


def check_env_kwargs(env_name: str, kwargs: Mapping[str, Any], file) -> None:
    """[env.kwargs]: known keys of the env's factory (static settings and `EnvParams` fields), finite
    numbers, and non-negative costs (fees, spread, slippage, impact)."""
    import inspect
    import sys

    from trading_jax import envs

    if env_name not in envs.available():
        S.check_keys({env_name: None}, envs.available(), file, "env")
    factory = envs.factory(env_name)
    params = getattr(sys.modules[factory.__module__], "EnvParams", None)
    known = {n for n, p in inspect.signature(factory).parameters.items() if p.kind == p.KEYWORD_ONLY}
    known -= {"market", "data", "split"}
    if params is not None:
        known |= set(getattr(params, "__dataclass_fields__", {})) - {"market", "max_steps_in_episode"}
    S.check_keys(kwargs, known, file, "env.kwargs")
    for key, value in kwargs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            raise S.ConfigError(f"{file}: [env.kwargs] {key} = {value!r}: expected a finite number")
        if any(word in key for word in _COST_WORDS) and value < 0:
            raise S.ConfigError(f"{file}: [env.kwargs] {key} = {value!r}: expected a finite number >= 0 (a cost)")


def _check_network(ppo, file) -> None:
    """[ppo] network, network_preset and network_kwargs name a registered network and its fields."""
    from trading_jax.models import available, create

    models = available()
    if ppo.network_name not in models:
        S.check_keys({ppo.network: None}, models, file, "ppo")
    if ppo.network_preset is not None and ppo.network_preset not in models[ppo.network_name]:
        raise S.ConfigError(f"{file}: [ppo] network_preset = {ppo.network_preset!r}: network {ppo.network_name!r} has "
                            f"presets {', '.join(models[ppo.network_name]) or '(none)'}")
    module = create(ppo.network_name, ppo.network_preset, action_dim=1, discrete=True)
    fields = {f.name for f in dataclasses.fields(type(module))} - {"parent", "name", "action_dim", "discrete"}
    S.check_keys(dict(ppo.network_kwargs), fields, file, "ppo.network_kwargs")


def load(raw: dict, file) -> PPOExperiment:
    """A `PPOExperiment` from a parsed TOML file (every mistake a one-line `ConfigError`)."""
    from trading_jax.envs import available
    from trading_jax.rl import baselines as B
    from trading_jax.rl.ppo import PPOConfig

    S.check_keys(raw, {"algorithm", "name", "seeds", "env", "ppo", "evaluation"}, file, "")
    for table in ("env", "ppo", "evaluation"):
        if table in raw and not isinstance(raw[table], dict):
            raise S.ConfigError(f"{file}: {table} must be a table ([{table}])")
    env = dict(raw.get("env", {}))
    S.check_keys(env, {"name", "kwargs", "data"}, file, "env")
    name = env.get("name")
    if name not in available():
        raise S.ConfigError(f"{file}: [env] name = {name!r}: expected one of {', '.join(available())}")
    kwargs = env.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise S.ConfigError(f"{file}: [env] kwargs must be a table ([env.kwargs])")
    check_env_kwargs(name, kwargs, file)
    data = None
    if "data" in env:
        spec = S.build(_EnvData, dict(env["data"]), file, "env.data", DATA_CHECKS)
        if not Path(spec.path).exists():
            raise S.ConfigError(f"{file}: [env.data] path = {spec.path!r}: no such file (paths are relative to the "
                                "working directory, e.g. ../shared/data/crypto/BTC_USD-1h.csv)")
        if spec.train + spec.val + spec.test > 1.0 + 1e-9:
            raise S.ConfigError(f"{file}: [env.data] train + val + test = {spec.train + spec.val + spec.test:g}: "
                                "expected at most 1")
        data = dataclasses.asdict(spec)
    ppo = S.build(PPOConfig, dict(raw.get("ppo", {})), file, "ppo", PPO_CHECKS, skip=("env", "env_kwargs"))
    ppo = ppo.replace(env=name, env_kwargs=dict(kwargs))
    _check_network(ppo, file)
    try:
        ppo.validate()
    except ValueError as error:
        raise S.ConfigError(f"{file}: [ppo] {error}") from None
    evaluation = S.build(_Evaluation, dict(raw.get("evaluation", {})), file, "evaluation", EVALUATION_CHECKS)
    known = B.available(name)
    for baseline in evaluation.baselines:
        if baseline not in known:
            raise S.ConfigError(f"{file}: [evaluation] baselines: unknown baseline {baseline!r} for env {name!r}; "
                                f"expected some of {', '.join(known)}")
    for baseline in evaluation.baseline_kwargs:
        if baseline not in evaluation.baselines:
            raise S.ConfigError(f"{file}: [evaluation.baseline_kwargs.{baseline}]: {baseline!r} is not one of the "
                                f"baselines {list(evaluation.baselines)}")
    if evaluation.reference is not None and evaluation.reference not in evaluation.baselines:
        raise S.ConfigError(f"{file}: [evaluation] reference = {evaluation.reference!r}: expected one of the "
                            f"baselines {list(evaluation.baselines)}")
    top = S.build(_Top, {k: raw[k] for k in ("name", "seeds") if k in raw}, file, "")
    S.check_seeds(top.seeds, file)
    return PPOExperiment(name=top.name or Path(str(file)).stem, env=name, env_kwargs=dict(kwargs), ppo=ppo,
                         seeds=top.seeds, data=data, file=str(file), **dataclasses.asdict(evaluation))


@dataclasses.dataclass(frozen=True)
class _Top:
    name: str | None = None
    seeds: tuple[int, ...] = (0, 1, 2)


def build_envs(experiment: PPOExperiment):
    """`(env, train_params, val_params, test_params, info)`: replayed train/validation/test splits of real
    data, or one synthetic environment whose validation and test episodes differ from the training ones
    by key."""
    from trading_jax.envs import make

    if not experiment.data:
        env, params = make(experiment.env, **experiment.env_kwargs)
        return env, params, params, params, {"source": "synthetic (held out by key)"}
    from trading_jax.data import chronological_split, load_ohlcv

    spec = experiment.data
    path = Path(spec["path"])
    data = load_ohlcv(path, repair=tuple(spec["repair"]))
    if spec["symbols"] is not None:
        data = data.select(list(spec["symbols"]))
    split = chronological_split(data.n_time, train=spec["train"], val=spec["val"], test=spec["test"],
                                embargo=spec["embargo"])
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


def _metric(experiment: PPOExperiment, env_params):
    """The per-episode metric as a `compare` metric: a callable over `EpisodeStats` named after it."""
    values = _episode_metric(experiment.metric, env_params)

    def metric(stats):
        return values(stats.total_reward, stats.info)

    metric.__name__ = experiment.metric
    return metric


def _validation(experiment: PPOExperiment, config, env, val_params, n_episodes: int = 256):
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


def _failed_reason(result) -> str | None:
    """Why a PPO seed failed, or None: every update's losses NaN, or final params not finite."""
    losses = np.asarray(result.metrics["policy_loss"], np.float64)
    if losses.size and not np.isfinite(losses).any():
        return "the policy loss was NaN or inf in every update"
    if not all(bool(np.isfinite(np.asarray(leaf)).all()) for leaf in jax.tree.leaves(result.params)):
        return "the final params are not finite"
    return None


def run(experiment: PPOExperiment, out_dir: str | Path, overwrite: bool = False,
        show_progress: bool = True) -> tuple[str, bool]:
    """Train PPO for every seed (checkpointed, resumable, logged), then evaluate PPO and the baselines on the
    same held-out episodes; writes results.json and results.md.

    Returns:
        `(summary line, ok)`: ok is False when a seed FAILED (the table says why).
    """
    from trading_jax.checkpoint import CheckpointConfig, Checkpointer
    from trading_jax.evaluation.stats import summarize
    from trading_jax.logging import TensorBoardWriter
    from trading_jax.loop import fit
    from trading_jax.rl import baselines as B
    from trading_jax.evaluation.rollout import compare
    from trading_jax.rl.ppo import as_policy, make_trainer

    out = Path(out_dir)
    config = experiment.ppo
    with RunFolder(out, overwrite=overwrite) as folder:
        files = file_fingerprints([experiment.data["path"]]) if experiment.data else []
        env, train_params, val_params, eval_params, info = build_envs(experiment)
        record = {k: v for k, v in dataclasses.asdict(experiment).items() if k not in ("seeds", "file")}
        if folder.claim(record, {"files": files, **{k: v for k, v in info.items() if k != "source"}}) == "resume":
            log.info("%s: resuming the run in %s", experiment.name, out)
        try:
            trainer = make_trainer(config, env, train_params)
        except TypeError as error:  # e.g. a [ppo] network_kwargs key the network does not take
            raise S.ConfigError(f"{experiment.file}: [ppo] {error}") from None
        validation = _validation(experiment, config, env, val_params)
        val_name = f"val_{experiment.metric}"
        metric = _metric(experiment, eval_params)
        metric_name = experiment.metric

        baselines = {}  # built before training, so a bad [evaluation.baseline_kwargs] fails now, not after it
        for name in experiment.baselines:
            kwargs = dict(experiment.baseline_kwargs.get(name, {}))
            try:
                baselines[name] = B.make_baseline(experiment.env, name, env, eval_params, **kwargs)
            except (TypeError, ValueError) as error:
                raise S.ConfigError(f"{experiment.file}: [evaluation.baseline_kwargs.{name}] {error}") from None
        per_seed, policies, failures = [], {}, []
        for seed in progress(experiment.seeds, total=len(experiment.seeds), desc=f"{experiment.name} seeds",
                             enabled=show_progress):
            start = time.perf_counter()
            ckpt_dir = (out / "checkpoints" / f"seed_{seed}").resolve()
            with Checkpointer(CheckpointConfig(str(ckpt_dir), save_every_steps=1, keep_best=1, best_metric=val_name,
                                               mode="min" if experiment.lower_is_better else "max",
                                               keep_last=1)) as ckpt, \
                    TensorBoardWriter(out / "tensorboard" / f"seed_{seed}") as writer:
                result = fit(trainer, jax.random.key(seed), checkpointer=ckpt, every=experiment.every_updates,
                             writer=writer, show_progress=show_progress, evaluate=validation,
                             desc=f"{experiment.name} seed {seed}")
                jax.block_until_ready(result.params)
                validation_curve = {step: m.get(val_name) for step, m in sorted(ckpt.metrics().items())}
            seconds = time.perf_counter() - start
            returns = np.asarray(result.metrics["episode_return"])
            counts = np.asarray(result.metrics["episode_count"])
            last = slice(max(0, len(returns) - max(1, len(returns) // 10)), None)
            failure = _failed_reason(result)
            per_seed.append({"seed": seed, "seconds": seconds, "validation": validation_curve, "failed": failure,
                             "env_steps_per_s": config.num_updates * config.batch_size / seconds,
                             "final_train_episode_return": float((returns[last] * counts[last]).sum()
                                                                 / max(counts[last].sum(), 1))})
            if failure:
                failures.append(per_seed[-1])
            else:
                policies[f"ppo_seed_{seed}"] = as_policy(config, result, env, eval_params)  # greedy

        policies.update(baselines)
        n_actions = getattr(env.action_space(eval_params), "n", None)
        rows = compare(env, eval_params, policies, jax.random.key(experiment.eval_seed), experiment.episodes,
                       metrics=(metric,), reference=experiment.reference,
                       n_actions=int(n_actions) if isinstance(n_actions, (int, np.integer)) else None) if policies else []
        label = metric_name
        seed_means = [row[f"{label}_mean"] for row in rows if row["policy"].startswith("ppo_seed_")]
        across = summarize(seed_means, "per-seed means") if len(seed_means) > 1 else None
        status = FAILED if failures else "ok"
        report = {"experiment": experiment.name, "status": status,
                  "failures": {s["seed"]: s["failed"] for s in failures}, "env": experiment.env,
                  "env_kwargs": dict(experiment.env_kwargs), "data": info, "ppo": dataclasses.asdict(config),
                  "seeds": per_seed, "evaluation": rows, "ppo_across_seeds": across, "metric": metric_name,
                  "lower_is_better": experiment.lower_is_better, "episodes": experiment.episodes}
        write_results(out, report, results_table(experiment, info, rows, across, per_seed, failures))
    if failures:
        reasons = "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failures)
        return (f"{experiment.name}: {FAILED}: {reasons}; the table in {out / 'results.md'} says {FAILED}"), False
    best = min if experiment.lower_is_better else max
    best_baseline = best((r for r in rows if not r["policy"].startswith("ppo_")), key=lambda r: r[f"{label}_mean"],
                         default=None)
    ppo_text = (f"PPO {across['mean']:.4g} (95% CI over seeds {across['ci95_low']:.4g} .. {across['ci95_high']:.4g})"
                if across else f"PPO {seed_means[0]:.4g}")
    base_text = (f"; best baseline {best_baseline['policy']} {best_baseline[f'{label}_mean']:.4g}"
                 if best_baseline else "")
    return (f"{experiment.name}: {metric_name} on {experiment.episodes} held-out episodes: {ppo_text}{base_text}; "
            f"table in {out / 'results.md'}"), True


def results_table(experiment: PPOExperiment, info: dict, rows: list, across: dict | None, per_seed: list,
                  failures: list = ()) -> str:
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
    if failures:
        lines += [f"**{FAILED}**: " + "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failures)
                  + ". Failed seeds are left out of the rows below; do not read them as results.", ""]
    if not rows:
        return "\n".join(lines) + "\n"
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
        if row.get(f"{label}_nonfinite", 0):
            line = f"| {row['policy']} | {FAILED} ({row[f'{label}_nonfinite']} non-finite episodes) | | |"
        else:
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
