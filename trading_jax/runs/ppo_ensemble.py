"""RL ensemble experiment files (`algorithm = "ppo_ensemble"`): K PPO agents trained in one vmapped call,
combined at decision time by Thompson sampling, against every member and FinRL's Sharpe-picked agent.

The file is a PPO experiment file (`trading_jax.runs.ppo`: [env], [env.kwargs], [env.data], [ppo],
[evaluation]) whose `seeds` are the K agents, plus an `[ensemble]` table:

    discount        forgetting factor of the Thompson posteriors, in (0, 1] (default 0.95)
    warm_start      start the posteriors from the validation returns instead of round-robin pulls (false)
    initial_pulls   round-robin test episodes per agent before sampling (default 1; 0 with warm_start)
    val_episodes    validation episodes per agent for FinRL's rule (default 200)
    [ensemble.hparams]  optional per-agent hyperparameters: lists with one value per seed of any vmappable
                    PPO hyperparameter (lr, gamma, gae_lambda, clip_eps, vf_coef, ent_coef, max_grad_norm),
                    e.g. `lr = [1e-4, 3e-4, 1e-3, 3e-3]`: agents then differ by seed AND setting

The run trains the K agents as ONE population through `trading_jax.loop.fit` (Orbax checkpoints, resume,
TensorBoard), then (`trading_jax.ensemble.compare_agents`): every agent plays `val_episodes` validation
episodes (the val split of real data, or other keys of a synthetic env) and FinRL's rule keeps the agent
with the best Sharpe ratio of its validation returns; on the SAME `episodes` test episodes (common random
numbers) every agent, the Thompson ensemble (one decision per episode: the agent with the largest
posterior draw plays it, and its posterior absorbs the episode's return) and the Sharpe-picked agent are
scored. The table gives each one's mean episode return (the env's total reward), its 95% t-interval over
episodes, the paired difference to the Thompson ensemble, and the share of episodes each agent played.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from trading_jax.logging import get_logger
from trading_jax.runs import schema as S
from trading_jax.runs.folder import RunFolder, file_fingerprints
from trading_jax.runs.results import FAILED, write_results

__all__ = ["PPOEnsembleExperiment", "load", "run"]

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class ThompsonSpec:
    """The `[ensemble]` table (module docstring)."""

    discount: float = 0.95
    warm_start: bool = False
    initial_pulls: int = 1
    val_episodes: int = 200
    hparams: tuple = ()


@dataclasses.dataclass(frozen=True)
class PPOEnsembleExperiment:
    """A PPO experiment (`runs.ppo.PPOExperiment`) and its Thompson ensemble settings."""

    ppo: object
    ensemble: ThompsonSpec
    file: str = "<experiment>"

    algorithm = "ppo_ensemble"

    @property
    def name(self) -> str:
        return self.ppo.name

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.ppo.seeds


def load(raw: dict, file) -> PPOEnsembleExperiment:
    """A `PPOEnsembleExperiment` from a parsed TOML file (every mistake a one-line `ConfigError`)."""
    from trading_jax.runs import ppo

    table = raw.get("ensemble", {})
    if not isinstance(table, dict):
        raise S.ConfigError(f"{file}: ensemble must be a table ([ensemble])")
    table = dict(table)
    grid = table.pop("hparams", {})
    spec = S.build(ThompsonSpec, table, file, "ensemble", {
        "discount": S.in_interval(0, 1, low_open=True), "initial_pulls": S.at_least(0), "val_episodes": S.at_least(2)})
    if spec.warm_start and "initial_pulls" not in table:
        spec = dataclasses.replace(spec, initial_pulls=0)
    experiment = ppo.load({k: v for k, v in raw.items() if k != "ensemble"} | {"algorithm": "ppo"}, file)
    if len(experiment.seeds) < 2:
        raise S.ConfigError(f"{file}: seeds = {list(experiment.seeds)}: an ensemble needs at least 2 agents (one per seed)")
    spec = dataclasses.replace(spec, hparams=_check_grid(grid, len(experiment.seeds), file))
    return PPOEnsembleExperiment(ppo=experiment, ensemble=spec, file=str(file))


def _check_grid(grid, agents: int, file) -> tuple:
    """[ensemble.hparams] as sorted `(name, values)` pairs: known PPO hyperparameters, one finite value per agent."""
    import math

    from trading_jax.rl.ppo import PPOHyperparams

    if not isinstance(grid, dict):
        raise S.ConfigError(f"{file}: [ensemble] hparams must be a table ([ensemble.hparams])")
    S.check_keys(grid, [f.name for f in dataclasses.fields(PPOHyperparams)], file, "ensemble.hparams")
    for name, values in grid.items():
        ok = isinstance(values, list) and len(values) == agents and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values)
        if not ok:
            raise S.ConfigError(f"{file}: [ensemble.hparams] {name} = {values!r}: expected a list of {agents} finite "
                                f"non-negative numbers, one per seed")
    return tuple(sorted((k, tuple(float(v) for v in vs)) for k, vs in grid.items()))


def run(experiment: PPOEnsembleExperiment, out_dir: str | Path, overwrite: bool = False,
        show_progress: bool = True) -> tuple[str, bool]:
    """Train the K agents in one population, compare members, Thompson ensemble and Sharpe pick (module docstring)."""
    from trading_jax.checkpoint import CheckpointConfig, Checkpointer
    from trading_jax.ensemble.agents import compare_agents, summarize_comparison
    from trading_jax.logging import TensorBoardWriter
    from trading_jax.loop import fit
    from trading_jax.rl.ppo import hyperparam_grid, make_trainer, ppo_policy_fn
    from trading_jax.runs.ppo import build_envs

    exp, spec = experiment.ppo, experiment.ensemble
    out = Path(out_dir)
    config = exp.ppo
    seeds = list(exp.seeds)
    with RunFolder(out, overwrite=overwrite) as folder:
        files = file_fingerprints([exp.data["path"]]) if exp.data else []
        env, train_params, val_params, eval_params, info = build_envs(exp)
        record = {k: v for k, v in dataclasses.asdict(exp).items() if k != "file"}
        record["ensemble"] = dataclasses.asdict(spec)
        if folder.claim(record, {"files": files, **{k: v for k, v in info.items() if k != "source"}}) == "resume":
            log.info("%s: resuming the run in %s", exp.name, out)
        try:
            grid = None
            if spec.hparams:
                grid = hyperparam_grid(config.hyperparams(), **{k: list(v) for k, v in spec.hparams})
            trainer = make_trainer(config, env, train_params).population(len(seeds), hparams=grid)
        except TypeError as error:
            raise S.ConfigError(f"{exp.file}: [ppo] {error}") from None
        start = time.perf_counter()
        ckpt_dir = (out / "checkpoints" / "agents").resolve()
        keys = jax.numpy.stack([jax.random.key(s) for s in seeds])
        with Checkpointer(CheckpointConfig(str(ckpt_dir), save_every_steps=1, keep_best=1, best_metric="episode_return",
                                           mode="max", keep_last=1)) as ckpt, \
                TensorBoardWriter(out / "tensorboard" / "agents") as writer:
            members = fit(trainer, keys, checkpointer=ckpt, every=exp.every_updates, writer=writer,
                          show_progress=show_progress, desc=f"{exp.name} agents {seeds}")
            jax.block_until_ready(members.params)
        seconds = time.perf_counter() - start
        finite = [bool(all(np.isfinite(np.asarray(leaf[i])).all() for leaf in jax.tree.leaves(members.params)))
                  for i in range(len(seeds))]
        failures = [f"agent {s}: the final params are not finite" for s, ok in zip(seeds, finite) if not ok]
        rows, comparison = [], None
        if not failures:
            policy_fn = ppo_policy_fn(config, env, eval_params)
            comparison = compare_agents(
                env, eval_params, members, policy_fn, jax.random.key(exp.eval_seed), exp.episodes,
                val_key=jax.random.key(exp.eval_seed + 1), n_val_episodes=spec.val_episodes,
                val_env_params=val_params, discount=spec.discount, warm_start=spec.warm_start,
                initial_pulls=spec.initial_pulls)
            rows = summarize_comparison(comparison, reference="thompson")
            names = {f"member_{k}": f"ppo_seed_{s}" for k, s in enumerate(seeds)}
            share = np.bincount(comparison["thompson_arms"], minlength=len(seeds)) / exp.episodes
            for row in rows:
                row["label"] = names.get(row["policy"], row["policy"])
        report = {"experiment": exp.name, "status": FAILED if failures else "ok", "failures": failures,
                  "env": exp.env, "env_kwargs": dict(exp.env_kwargs), "data": info, "ppo": dataclasses.asdict(config),
                  "ensemble": dataclasses.asdict(spec), "seeds": seeds, "train_seconds": seconds, "rows": rows,
                  "picked": None if comparison is None else seeds[comparison["picked"]],
                  "validation_sharpe": None if comparison is None else comparison["validation_sharpe"].tolist(),
                  "thompson_share": None if comparison is None else share.tolist(),
                  "thompson_arms": None if comparison is None else comparison["thompson_arms"].tolist()}
        write_results(out, report, results_table(experiment, info, report))
    if failures:
        return f"{exp.name}: {FAILED}: " + "; ".join(failures), False
    by = {r["label"]: r for r in rows}
    best_member = max((r for r in rows if r["label"].startswith("ppo_seed_")), key=lambda r: r["mean"])
    return (f"{exp.name}: mean episode reward on {exp.episodes} test episodes: Thompson ensemble "
            f"{by['thompson']['mean']:.4g}, Sharpe-picked agent (seed {report['picked']}) {by['sharpe_pick']['mean']:.4g}, "
            f"best agent in hindsight {best_member['label']} {best_member['mean']:.4g}; table in {out / 'results.md'}"), True


def results_table(experiment: PPOEnsembleExperiment, info: dict, report: dict) -> str:
    """Markdown: one row per agent, the Thompson ensemble and the Sharpe pick (mean, 95% CI, paired difference)."""
    exp, spec = experiment.ppo, experiment.ensemble
    lines = [f"# {exp.name}", "",
             f"Env `{exp.env}`; data: {info.get('source')}. {len(exp.seeds)} PPO agents (seeds {list(exp.seeds)}"
             + "".join(f"; {k} {list(v)}" for k, v in spec.hparams)
             + f") trained in one vmapped population ({report['train_seconds']:.0f} s).",
             f"Thompson ensemble: one decision per episode, Normal-Inverse-Gamma posteriors over episode returns, "
             f"discount {spec.discount}, {'warm-started from validation' if spec.warm_start else f'{spec.initial_pulls} round-robin episode(s) per agent first'}. "
             f"FinRL's rule: the agent with the best Sharpe ratio over {spec.val_episodes} validation episodes "
             f"(picked: seed {report['picked']}; validation Sharpe "
             + (", ".join(f"{v:.3g}" for v in report["validation_sharpe"]) if report["validation_sharpe"] else "-")
             + ").",
             f"Every row is scored on the SAME {exp.episodes} test episodes (total env reward per episode, higher is "
             "better); 95% Student-t intervals over episodes; paired difference to the Thompson ensemble.", ""]
    if report["failures"]:
        lines += [f"**{FAILED}**: " + "; ".join(report["failures"]), ""]
        return "\n".join(lines) + "\n"
    share = report["thompson_share"]
    lines += ["| policy | mean reward | std | 95% CI | minus Thompson [95% CI] | share of Thompson's episodes |",
              "| --- | --- | --- | --- | --- | --- |"]
    for i, row in enumerate(report["rows"]):
        label = row["label"]
        played = f"{share[i]:.2f}" if label.startswith("ppo_seed_") else ""
        lines.append(f"| {label} | {row['mean']:.4g} | {row['std']:.4g} | {row['ci95_low']:.4g} .. {row['ci95_high']:.4g} "
                     f"| {row['diff_mean']:+.4g} [{row['diff_ci95_low']:.4g} .. {row['diff_ci95_high']:.4g}] | {played} |")
    return "\n".join(lines) + "\n"
