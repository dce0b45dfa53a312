"""RL experiment files (`algorithm = "ppo" | "sac" | "td3" | "ddpg" | "dqn"`): one schema and one runner for
every RL algorithm: train over seeds, evaluate on held-out episodes against baselines; and comparisons of several
algorithms on one env (`algorithm = "rl_comparison"`, below).

An RL experiment file (see `experiments/ppo_*.toml`, `sac_portfolio.toml`, ...) has `algorithm`, a `name`,
`seeds`, and:

    [env]          name = "execution" | "trading" | "portfolio"
    [env.kwargs]   keyword arguments of `trading_jax.envs.make` (static settings and EnvParams fields)
    [env.data]     optional real data: path (relative to the working directory, or absolute), repair, symbols,
                   train / val / test fractions (default 0.6 / 0.1 / 0.3) and an embargo (bars). Training
                   episodes replay the train split, validation episodes the val split and the final table
                   the test split, so neither validation nor the table ever sees a training bar.
    [ppo] | [sac] | [td3] | [ddpg] | [dqn]
                   the algorithm's config fields, one table named after the algorithm (`PPOConfig`,
                   `SACConfig`, `TD3Config`, `DDPGConfig`, `DQNConfig`; see `AGENTS`), with an optional
                   `[<table>.network_kwargs]` of the network's fields
    [evaluation]   episodes (held-out episodes per policy), baselines (names in
                   `trading_jax.rl.baselines.BASELINES[env]`, optionally with keyword tables in
                   [evaluation.baseline_kwargs.NAME]), metric ("shortfall_bps", "total_reward",
                   "net_return"), lower_is_better, reference (a baseline for paired differences),
                   every_updates (checkpoint/log chunk, in the trainer's units: PPO updates, off-policy
                   iterations of `steps_per_iteration` env steps per env and their gradient steps)

Every seed trains through `trading_jax.loop.fit` (Orbax checkpoints, exact resume, TensorBoard). After every
`every_updates` units, the current policy runs 256 fixed validation episodes; their mean metric is logged,
stored with the checkpoint and ranks it (the best checkpoint by validation is kept next to the latest). The
final table evaluates the FINAL params of each seed, acting greedily (no selection on the test episodes, and
none on validation either, so nothing is tuned on them).

Every table is checked (`trading_jax.runs.schema`): unknown keys, types and ranges (gamma in (0, 1], a
finite positive learning rate, non-negative fees and costs in [env.kwargs], ...) with one-line errors, and
the config's own `validate()`. The run folder is locked and fingerprinted (`trading_jax.runs.folder`). A
seed whose training loss (`Agent.failure_metric`) is NaN in every unit, or whose final params are not
finite, makes the run FAILED (its table says so; the command exits non-zero).

Synthetic environments are held out too: the trading and portfolio envs replay a fixed bank of synthetic
paths, so validation and the table replay two other banks (other seeds); the execution env draws its
order-book noise afresh, so other keys suffice. Every policy, the agent of each seed
(`<algorithm>_seed_<k>`) and each baseline, is evaluated on the SAME evaluation episodes (common random
numbers), so paired differences are tight. The table reports per-episode means with 95% t-intervals, and
for the agent also the spread across training seeds (a t-interval over the per-seed means).

An algorithm that cannot act in the env's action space (`Agent.actions`: DQN on a continuous env, SAC, TD3 or
DDPG on a discrete one) is refused when the file is loaded.

A new RL algorithm adds one `Agent` to `AGENTS`, an experiment class with a field named after its table,
and one line in `trading_jax.runs.ALGORITHMS`.

**Comparisons** (`algorithm = "rl_comparison"`, `load_comparison` / `run_comparison`): the same [env],
[env.kwargs], [env.data], [evaluation] tables and `seeds`, and one table per compared algorithm (two or more of
[ppo], [sac], [td3], [ddpg], [dqn], each exactly as in that algorithm's own file), plus an optional

    [ensemble]     discount, warm_start, initial_pulls, val_episodes (as `ppo_ensemble`'s; `EnsembleSpec`)

Every seed of every algorithm trains as in its own file (checkpoints under `checkpoints/<algorithm>/seed_<k>`,
resume, validation, TensorBoard, FAILED on NaN). The table scores every agent (`<algorithm>_seed_<k>`) and every
baseline on the SAME held-out episodes, with 95% intervals over episodes and paired differences to the reference;
then each algorithm across its seeds (a t-interval over the seeds' means, and over the seeds' differences to the
reference), each pair of algorithms (Welch's interval over the seeds' means), and plain verdicts: better, worse, or
no clear difference, by whether the 95% interval of the difference excludes 0. With [ensemble], every trained
agent of every algorithm enters one Thompson-sampling ensemble (`trading_jax.ensemble.agents.mix_agents`; FinRL's
Sharpe pick over their validation episodes, and `ensemble.agents.thompson_replay` on the table's episodes, so the ensemble's row
is paired with every other row), with the share of episodes each algorithm's agents played.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, Mapping, NamedTuple

import jax
import numpy as np

from trading_jax.logging import get_logger, progress
from trading_jax.runs import schema as S
from trading_jax.runs.folder import RunFolder, file_fingerprints
from trading_jax.runs.results import FAILED, write_results

__all__ = ["AGENTS", "Agent", "RLExperiment", "PPOExperiment", "SACExperiment", "TD3Experiment", "DDPGExperiment",
           "DQNExperiment", "load", "run", "build_envs", "results_table", "check_env_kwargs", "check_network",
           "episode_metric", "failed_reason", "METRICS", "EVALUATION_CHECKS", "DATA_CHECKS", "VALIDATION_EPISODES",
           "action_kind", "check_actions", "ComparisonExperiment", "EnsembleSpec", "ENSEMBLE_CHECKS", "load_comparison",
           "run_comparison", "comparison_table"]

log = get_logger(__name__)

METRICS = ("shortfall_bps", "total_reward", "net_return")
VALIDATION_EPISODES = 256


# ------------------------------------------------------------------------------------ experiments


@dataclasses.dataclass(frozen=True, kw_only=True)
class RLExperiment:
    """The algorithm-independent part of an RL experiment (module docstring). Each algorithm's subclass adds
    one field named after its table, holding its config (`PPOExperiment.ppo`, `SACExperiment.sac`, ...)."""

    name: str
    env: str
    env_kwargs: Mapping[str, Any]
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

    algorithm: ClassVar[str] = ""

    @property
    def agent(self) -> "Agent":
        """The algorithm's entry of `AGENTS`."""
        return AGENTS[self.algorithm]

    @property
    def config(self):
        """The algorithm's config (the field named after its table)."""
        return getattr(self, self.agent.table)

    @property
    def eval_seed(self) -> int:
        return self.seed


@dataclasses.dataclass(frozen=True, kw_only=True)
class PPOExperiment(RLExperiment):
    """A PPO experiment (`algorithm = "ppo"`, a `[ppo]` table of `PPOConfig` fields)."""

    ppo: Any  # PPOConfig
    algorithm: ClassVar[str] = "ppo"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SACExperiment(RLExperiment):
    """A SAC experiment (`algorithm = "sac"`, a `[sac]` table of `SACConfig` fields)."""

    sac: Any  # SACConfig
    algorithm: ClassVar[str] = "sac"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TD3Experiment(RLExperiment):
    """A TD3 experiment (`algorithm = "td3"`, a `[td3]` table of `TD3Config` fields)."""

    td3: Any  # TD3Config
    algorithm: ClassVar[str] = "td3"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DDPGExperiment(RLExperiment):
    """A DDPG experiment (`algorithm = "ddpg"`, a `[ddpg]` table of `DDPGConfig` fields)."""

    ddpg: Any  # DDPGConfig
    algorithm: ClassVar[str] = "ddpg"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DQNExperiment(RLExperiment):
    """A DQN experiment (`algorithm = "dqn"`, a `[dqn]` table of `DQNConfig` fields)."""

    dqn: Any  # DQNConfig
    algorithm: ClassVar[str] = "dqn"


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


@dataclasses.dataclass(frozen=True)
class _Top:
    name: str | None = None
    seeds: tuple[int, ...] = (0, 1, 2)


# ------------------------------------------------------------------------------------ the registry


@dataclasses.dataclass(frozen=True)
class Agent:
    """How the run layer drives one RL algorithm.

    Attributes:
        name: the file's `algorithm` value; the agent's rows are `<name>_seed_<k>`.
        label: its name in summaries and tables ("PPO", "SAC", ...).
        table: the file's table of config fields ([ppo], [sac], ...); also the experiment's field holding
            the config and the key of the config in results.json and the run folder's record.
        config: `"module:Class"` of the frozen config dataclass (fields `env`, `env_kwargs`, `network`,
            `network_preset`, `network_kwargs`; `validate()` raises ValueError).
        module: the algorithm's module, with `make_trainer(config, env, env_params) -> FunctionTrainer`,
            `as_policy(config, result, env, env_params)` (greedy) and
            `make_evaluator(config, env, env_params, n_episodes) -> run(result, env_params, key) -> dict`.
        checks: value checks (`trading_jax.runs.schema`) of the table's fields.
        failure_metric: the training metric whose history, NaN or inf in every unit, means FAILED.
        experiment: the experiment class (a field named `table`).
        actions: the action spaces the algorithm acts in: "discrete" (a `Discrete` space), "continuous" (a
            bounded `Box`) or "any"; a file pairing it with an env of the other kind is refused at load time.
        policy_fn: the module's `policy_fn(config, env, env_params) -> (member -> policy)` for members with
            `.params` and `.obs_norm` (`trading_jax.ensemble.agents`; the cross-algorithm ensemble uses it).
    """

    name: str
    label: str
    table: str
    config: str
    module: str
    checks: Mapping[str, S.Check]
    failure_metric: str
    experiment: type
    actions: str = "any"
    policy_fn: str = "member_policy_fn"

    def config_class(self) -> type:
        module, name = self.config.split(":")
        return getattr(importlib.import_module(module), name)

    def algorithm_module(self):
        return importlib.import_module(self.module)


PPO_CHECKS = {
    "num_envs": S.at_least(1), "num_steps": S.at_least(1), "total_timesteps": S.at_least(1),
    "update_epochs": S.at_least(1), "minibatch_size": S.at_least(1),
    "gamma": S.in_interval(0, 1, low_open=True), "gae_lambda": S.in_interval(0, 1), "clip_eps": S.positive,
    "vf_coef": S.non_negative, "ent_coef": S.non_negative, "lr": S.positive, "max_grad_norm": S.positive,
    "obs_clip": S.positive, "reward_clip": S.positive, "policy": S.one_of("auto", "categorical", "gaussian"),
    "squash": S.one_of("tanh", "clip"), "adam_eps": S.positive,
}
# The fields `trading_jax.rl.offpolicy.OffPolicyConfig` shares with every off-policy algorithm.
OFFPOLICY_CHECKS = {
    "num_envs": S.at_least(1), "total_timesteps": S.at_least(1), "steps_per_iteration": S.at_least(1),
    "learning_starts": S.at_least(0), "buffer_size": S.at_least(1), "batch_size": S.at_least(1),
    "gradient_steps": S.at_least(1), "gamma": S.in_interval(0, 1, low_open=True), "tau": S.in_interval(0, 1),
    "n_step": S.at_least(1), "priority_exponent": S.in_interval(0, 1), "importance_exponent": S.in_interval(0, 1),
    "priority_eps": S.positive, "reward_scale": S.positive, "obs_clip": S.positive, "lr": S.positive,
}
SAC_CHECKS = {**OFFPOLICY_CHECKS, "init_alpha": S.positive, "target_entropy": S.finite,
              "target_update_interval": S.at_least(1)}
TD3_CHECKS = {**OFFPOLICY_CHECKS, "action_noise": S.non_negative, "target_policy_noise": S.non_negative,
              "target_noise_clip": S.non_negative, "policy_delay": S.at_least(1)}
DDPG_CHECKS = {**OFFPOLICY_CHECKS, "action_noise": S.non_negative}
DQN_CHECKS = {**OFFPOLICY_CHECKS, "n_atoms": S.at_least(1), "v_min": S.finite, "v_max": S.finite,
              "exploration_initial_eps": S.in_interval(0, 1), "exploration_final_eps": S.in_interval(0, 1),
              "exploration_fraction": S.in_interval(0, 1, low_open=True), "target_update_interval": S.at_least(1),
              "max_grad_norm": S.positive}

AGENTS: dict[str, Agent] = {
    "ppo": Agent("ppo", "PPO", "ppo", "trading_jax.rl.ppo:PPOConfig", "trading_jax.rl.ppo", PPO_CHECKS,
                 "policy_loss", PPOExperiment, policy_fn="ppo_policy_fn"),
    "sac": Agent("sac", "SAC", "sac", "trading_jax.rl.sac:SACConfig", "trading_jax.rl.sac", SAC_CHECKS,
                 "critic_loss", SACExperiment, actions="continuous"),
    "td3": Agent("td3", "TD3", "td3", "trading_jax.rl.td3:TD3Config", "trading_jax.rl.td3", TD3_CHECKS,
                 "critic_loss", TD3Experiment, actions="continuous"),
    "ddpg": Agent("ddpg", "DDPG", "ddpg", "trading_jax.rl.ddpg:DDPGConfig", "trading_jax.rl.ddpg", DDPG_CHECKS,
                  "critic_loss", DDPGExperiment, actions="continuous"),
    "dqn": Agent("dqn", "DQN", "dqn", "trading_jax.rl.dqn:DQNConfig", "trading_jax.rl.dqn", DQN_CHECKS,
                 "q_loss", DQNExperiment, actions="discrete"),
}

EVALUATION_CHECKS = {"episodes": S.at_least(2), "metric": S.one_of(*METRICS), "every_updates": S.at_least(1),
                     "seed": S.at_least(0)}
DATA_CHECKS = {"train": S.in_interval(0, 1, low_open=True, high_open=True), "val": S.in_interval(0, 1, low_open=True),
               "test": S.in_interval(0, 1, low_open=True, high_open=True), "embargo": S.at_least(0)}
_COST_WORDS = ("fee", "spread", "slippage", "cost", "commission", "impact")


# ------------------------------------------------------------------------------------ loading


def check_env_kwargs(env_name: str, kwargs: Mapping[str, Any], file) -> None:
    """[env.kwargs]: known keys of the env's factory (static settings and `EnvParams` fields), finite
    numbers, and non-negative costs (fees, spread, slippage, impact)."""
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


def action_kind(env_name: str, kwargs: Mapping[str, Any]) -> tuple[str, str] | None:
    """`(kind, space class name)` of the env's action space, kind "discrete" (`Discrete`, `MultiDiscrete`) or
    "continuous" (`Box`); None when the env cannot be built from these settings (the run will say why).

    The env's factory is traced abstractly (`jax.eval_shape`): no market is drawn and no data is loaded, so this
    is cheap at load time. A file with [env.data] is stood in for by the synthetic env of the same settings,
    whose action space is of the same kind (its shape may differ: the number of assets comes from the data)."""
    from trading_jax.envs import make

    found = {}

    def build():
        env, params = make(env_name, **dict(kwargs))
        found["space"] = env.action_space(params)
        return params

    try:
        jax.eval_shape(build)
    except Exception:  # noqa: BLE001 - any failure here is reported by the run, with its own message
        return None
    space = found["space"]
    return ("discrete" if hasattr(space, "n") else "continuous"), type(space).__name__


def check_actions(agent: "Agent", env_name: str, kwargs: Mapping[str, Any], file) -> None:
    """One-line `ConfigError` when the algorithm cannot act in the env's action space (`Agent.actions`): DQN on
    a continuous env, SAC / TD3 / DDPG on a discrete one."""
    if agent.actions == "any":
        return
    found = action_kind(env_name, kwargs)
    if found is None or found[0] == agent.actions:
        return
    kind, space = found
    mode = f" with action_mode = {kwargs['action_mode']!r}" if "action_mode" in kwargs else ""
    fits = ", ".join(a.label for a in AGENTS.values() if a.actions in (kind, "any"))
    raise S.ConfigError(f"{file}: [{agent.table}] {agent.label} needs {agent.actions} actions, but env {env_name!r}"
                        f"{mode} has {kind} ones (a {space} space): use {fits} on this env, or an env with "
                        f"{agent.actions} actions")


# Network fields the algorithms set themselves (from the env's action space, or fixed by the algorithm).
_SET_BY_ALGORITHM = {"parent", "name", "action_dim", "discrete", "n_critics"}


def check_network(config, table: str, file) -> None:
    """[table] network (and critic_network, any `*_network` field), network_preset and [table.network_kwargs]
    name registered networks, a preset of each, and fields every one of them takes (the algorithms pass
    `network_kwargs` to each of their networks): all the Flax modules' fields but those the algorithm sets
    (`action_dim`, `discrete`, `n_critics`)."""
    from trading_jax.models import available, create

    models = available()
    names = {"network": getattr(config, "network_name", config.network)}
    names.update({f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                  if f.name.endswith("_network") and isinstance(getattr(config, f.name), str)})
    fields = None
    for field, name in names.items():
        if name not in models:
            S.check_keys({getattr(config, field): None}, models, file, table)
        if config.network_preset is not None and config.network_preset not in models[name]:
            raise S.ConfigError(f"{file}: [{table}] network_preset = {config.network_preset!r}: network {name!r} has "
                                f"presets {', '.join(models[name]) or '(none)'}")
        module = create(name, config.network_preset, action_dim=1)
        own = {f.name for f in dataclasses.fields(type(module))} - _SET_BY_ALGORITHM
        fields = own if fields is None else fields & own
    kwargs = dict(config.network_kwargs)
    S.check_keys(kwargs, fields, file, f"{table}.network_kwargs")
    for key, value in kwargs.items():  # layer sizes: hidden = [64, 64] (or one int, e.g. an LSTM's hidden)
        sizes = value if isinstance(value, (list, tuple)) else [value] if key == "hidden" else []
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes):
            raise S.ConfigError(f"{file}: [{table}.network_kwargs] {key} = {value!r}: expected layer sizes, "
                                "integers >= 1 (e.g. [64, 64])")
    for name in names.values():
        try:
            create(name, config.network_preset, action_dim=1, **kwargs)
        except (TypeError, ValueError) as error:
            raise S.ConfigError(f"{file}: [{table}.network_kwargs] {error}") from None


def load(raw: dict, file, algorithm: str | None = None):
    """An RL experiment (`AGENTS[algorithm].experiment`, default the file's `algorithm`; a `ComparisonExperiment`
    for "rl_comparison") from a parsed TOML file; every mistake is a one-line `ConfigError`."""
    from trading_jax.envs import available
    from trading_jax.rl import baselines as B

    algorithm = algorithm or raw.get("algorithm")
    if algorithm == ComparisonExperiment.algorithm:
        return load_comparison(raw, file)
    if algorithm not in AGENTS:
        raise S.ConfigError(f"{file}: algorithm = {algorithm!r}: expected one of {', '.join(AGENTS)}")
    agent = AGENTS[algorithm]
    table = agent.table
    for other in AGENTS.values():
        if other.table != table and other.table in raw:
            raise S.ConfigError(f"{file}: [{other.table}] is the table of algorithm = {other.name!r}, but the file has "
                                f"algorithm = {algorithm!r}: name its settings [{table}]")
    S.check_keys(raw, {"algorithm", "name", "seeds", "env", table, "evaluation"}, file, "")
    for key in ("env", table, "evaluation"):
        if key in raw and not isinstance(raw[key], dict):
            raise S.ConfigError(f"{file}: {key} must be a table ([{key}])")
    env = dict(raw.get("env", {}))
    S.check_keys(env, {"name", "kwargs", "data"}, file, "env")
    name = env.get("name")
    if name not in available():
        raise S.ConfigError(f"{file}: [env] name = {name!r}: expected one of {', '.join(available())}")
    kwargs = env.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise S.ConfigError(f"{file}: [env] kwargs must be a table ([env.kwargs])")
    check_env_kwargs(name, kwargs, file)
    check_actions(agent, name, kwargs, file)
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
    config = S.build(agent.config_class(), dict(raw.get(table, {})), file, table, agent.checks,
                     skip=("env", "env_kwargs"))
    config = dataclasses.replace(config, env=name, env_kwargs=dict(kwargs))
    check_network(config, table, file)
    try:
        config.validate()
    except ValueError as error:
        raise S.ConfigError(f"{file}: [{table}] {error}") from None
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
    return agent.experiment(name=top.name or Path(str(file)).stem, env=name, env_kwargs=dict(kwargs),
                            seeds=top.seeds, data=data, file=str(file), **{table: config},
                            **dataclasses.asdict(evaluation))


# ------------------------------------------------------------------------------------ environments and metrics


def _held_out_banks(env_name: str, kwargs: Mapping[str, Any]) -> tuple[dict, dict, str] | None:
    """Factory arguments of a validation and a test market bank different from the training one, for a
    synthetic env that replays a fixed bank of paths (trading: `seed`, portfolio: `key`); None for an env
    that draws its market afresh in every episode (execution), where a different key already holds out."""
    from trading_jax import envs

    names = inspect.signature(envs.factory(env_name)).parameters
    if "seed" in names:
        seed = int(kwargs.get("seed", names["seed"].default))
        return {"seed": seed + 1}, {"seed": seed + 2}, f"seed {seed}, {seed + 1} and {seed + 2}"
    if "key" in names and "key" not in kwargs:
        return ({"key": jax.random.key(1)}, {"key": jax.random.key(2)},
                "jax.random.key(0), key(1) and key(2)")
    return None


def build_envs(experiment: RLExperiment):
    """`(env, train_params, val_params, test_params, info)`: replayed train/validation/test splits of real
    data; or a synthetic environment whose validation and test episodes are held out: drawn from other
    market banks (trading, portfolio: a bank of paths is replayed, so another key alone would replay the
    training paths), or with other keys (execution: every episode's market is new)."""
    from trading_jax.envs import make

    if not experiment.data:
        env, params = make(experiment.env, **experiment.env_kwargs)
        banks = _held_out_banks(experiment.env, experiment.env_kwargs)
        if banks is None:
            return env, params, params, params, {"source": "synthetic (held out by key)"}
        val_kwargs, test_kwargs, which = banks
        _, val_params = make(experiment.env, **{**experiment.env_kwargs, **val_kwargs})
        _, test_params = make(experiment.env, **{**experiment.env_kwargs, **test_kwargs})
        return env, params, val_params, test_params, {
            "source": f"synthetic; training, validation and test episodes replay three different market banks ({which})"}
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


def episode_metric(metric: str, env_params):
    """`values(total_reward [n], info) -> [n]` float64: the experiment's per-episode metric, computed the
    same way for validation (`make_evaluator` output) and for the final table (`EpisodeStats`):
    "total_reward" is the episode's summed reward, "net_return" is `equity_T / initial_equity - 1`, any
    other name an entry of the env's final `info`."""
    initial = float(np.asarray(getattr(env_params, "initial_equity", getattr(env_params, "initial_cash", 1.0))))

    def values(total_reward, info):
        if metric == "total_reward":
            return np.asarray(total_reward, np.float64)
        if metric == "net_return":
            return np.asarray(info["equity"], np.float64) / initial - 1.0
        return np.asarray(info[metric], np.float64)

    return values


def _compare_metric(experiment: RLExperiment, env_params):
    """The per-episode metric as a `compare` metric: a callable over `EpisodeStats` named after it."""
    values = episode_metric(experiment.metric, env_params)

    def metric(stats):
        return values(stats.total_reward, stats.info)

    metric.__name__ = experiment.metric
    return metric


def _validation(experiment: RLExperiment, config, env, val_params, n_episodes: int = VALIDATION_EPISODES):
    """`evaluate(result, units) -> {"val_METRIC": mean over n_episodes}` on fixed validation episodes
    (compiled once; a key different from the final test episodes')."""
    run = experiment.agent.algorithm_module().make_evaluator(config, env, val_params, n_episodes)
    key = jax.random.key(experiment.eval_seed + 1)
    values = episode_metric(experiment.metric, val_params)

    def evaluate(result, units):
        del units
        out = jax.device_get(run(result, val_params, key))
        return {f"val_{experiment.metric}": float(np.mean(values(out["returns"], out["info"])))}

    return evaluate


def failed_reason(result, metric: str, unit: str) -> str | None:
    """Why a seed failed, or None: its training `metric` (e.g. "critic_loss") NaN or inf in every `unit`,
    or final params that are not finite."""
    losses = np.asarray(result.metrics[metric], np.float64)
    if losses.size and not np.isfinite(losses).any():
        return f"the {metric.replace('_', ' ')} was NaN or inf in every {unit}"
    if not all(bool(np.isfinite(np.asarray(leaf)).all()) for leaf in jax.tree.leaves(result.params)):
        return "the final params are not finite"
    return None


# ------------------------------------------------------------------------------------ running


def _train_seed(experiment: RLExperiment, trainer, seed: int, out: Path, validation, show_progress: bool,
                group: str | None = None):
    """Train one seed through `fit` (checkpointed, resumable, logged): `(result, per-seed record)`. Checkpoints
    and TensorBoard logs go to `out/checkpoints/seed_<k>` and `out/tensorboard/seed_<k>`, or with a `group`
    (the algorithm, in a comparison) to `out/checkpoints/<group>/seed_<k>` and `out/tensorboard/<group>/seed_<k>`."""
    from trading_jax.checkpoint import CheckpointConfig, Checkpointer
    from trading_jax.logging import TensorBoardWriter
    from trading_jax.loop import fit

    val_name = f"val_{experiment.metric}"
    start = time.perf_counter()
    folder = Path(group, f"seed_{seed}") if group else Path(f"seed_{seed}")
    ckpt_dir = (out / "checkpoints" / folder).resolve()
    with Checkpointer(CheckpointConfig(str(ckpt_dir), save_every_steps=1, keep_best=1, best_metric=val_name,
                                       mode="min" if experiment.lower_is_better else "max", keep_last=1)) as ckpt, \
            TensorBoardWriter(out / "tensorboard" / folder) as writer:
        resumed = ckpt.latest_step() or 0
        desc = f"{experiment.name} {group + ' ' if group else ''}seed {seed}"
        result = fit(trainer, jax.random.key(seed), checkpointer=ckpt, every=experiment.every_updates, writer=writer,
                     show_progress=show_progress, evaluate=validation, desc=desc)
        jax.block_until_ready(result.params)
        validation_curve = {step: m.get(val_name) for step, m in sorted(ckpt.metrics().items())}
    seconds = time.perf_counter() - start
    returns = np.asarray(result.metrics["episode_return"])
    counts = np.asarray(result.metrics["episode_count"])
    last = slice(max(0, len(returns) - max(1, len(returns) // 10)), None)
    trained = trainer.total - min(resumed, trainer.total)  # units trained by this call (0: all restored)
    record = {"seed": seed, "seconds": seconds, "validation": validation_curve, "unit": trainer.unit,
              "resumed_from": resumed,
              "failed": failed_reason(result, experiment.agent.failure_metric, trainer.unit),
              "env_steps_per_s": trained * trainer.samples_per_unit / seconds if trained else None,
              "final_train_episode_return": float((returns[last] * counts[last]).sum() / max(counts[last].sum(), 1))}
    return result, record


def _make_trainer(experiment: RLExperiment, env, train_params):
    """The algorithm's `FunctionTrainer` on the training env (a TypeError, e.g. a network_kwargs key the
    network does not take, is a one-line `ConfigError` naming the table)."""
    try:
        return experiment.agent.algorithm_module().make_trainer(experiment.config, env, train_params)
    except TypeError as error:
        raise S.ConfigError(f"{experiment.file}: [{experiment.agent.table}] {error}") from None


def _make_baselines(experiment: RLExperiment, env, eval_params) -> dict:
    """`{name: policy}` of the [evaluation] baselines on the test env (one-line errors for bad keyword tables).
    Built before training, so a bad [evaluation.baseline_kwargs] fails now, not after it."""
    from trading_jax.rl import baselines as B

    baselines = {}
    for name in experiment.baselines:
        kwargs = dict(experiment.baseline_kwargs.get(name, {}))
        try:
            baselines[name] = B.make_baseline(experiment.env, name, env, eval_params, **kwargs)
        except (TypeError, ValueError) as error:
            raise S.ConfigError(f"{experiment.file}: [evaluation.baseline_kwargs.{name}] {error}") from None
    return baselines


def _train_seeds(experiment: RLExperiment, trainer, validation, out: Path, show_progress: bool,
                 group: str | None = None) -> list[tuple[int, Any, dict]]:
    """`[(seed, result, per-seed record)]`: every seed of the experiment trained through `_train_seed`
    (checkpoints and logs under `out/checkpoints[/group]/seed_<k>`)."""
    trained = []
    desc = f"{experiment.name} {group + ' ' if group else ''}seeds"
    for seed in progress(experiment.seeds, total=len(experiment.seeds), desc=desc, enabled=show_progress):
        result, seed_record = _train_seed(experiment, trainer, seed, out, validation, show_progress, group)
        trained.append((seed, result, seed_record))
    return trained


def _score(experiment: RLExperiment, env, eval_params, policies: Mapping[str, Any], metric=None) -> list:
    """`compare` rows of `policies` on the experiment's held-out episodes (key `eval_seed`: the same episodes for
    every policy), scored by `metric` (default `_compare_metric`), with paired differences to the reference and,
    for a discrete action space, the share of steps per action."""
    from trading_jax.evaluation.rollout import compare

    if not policies:
        return []
    n_actions = getattr(env.action_space(eval_params), "n", None)
    return compare(env, eval_params, dict(policies), jax.random.key(experiment.eval_seed), experiment.episodes,
                   metrics=(metric or _compare_metric(experiment, eval_params),), reference=experiment.reference,
                   n_actions=int(n_actions) if isinstance(n_actions, (int, np.integer)) else None)


def run(experiment, out_dir: str | Path, overwrite: bool = False,
        show_progress: bool = True) -> tuple[str, bool]:
    """Train the agent for every seed (checkpointed, resumable, logged), then evaluate it and the baselines
    on the same held-out episodes; writes results.json and results.md. A `ComparisonExperiment`
    (`algorithm = "rl_comparison"`) runs through `run_comparison`.

    Returns:
        `(summary line, ok)`: ok is False when a seed FAILED (the table says why).
    """
    from trading_jax.evaluation.stats import summarize

    if isinstance(experiment, ComparisonExperiment):
        return run_comparison(experiment, out_dir, overwrite=overwrite, show_progress=show_progress)
    agent = experiment.agent
    algorithm = agent.algorithm_module()
    out = Path(out_dir)
    config = experiment.config
    with RunFolder(out, overwrite=overwrite) as folder:
        files = file_fingerprints([experiment.data["path"]]) if experiment.data else []
        env, train_params, val_params, eval_params, info = build_envs(experiment)
        record = {k: v for k, v in dataclasses.asdict(experiment).items() if k not in ("seeds", "file")}
        if folder.claim(record, {"files": files, **{k: v for k, v in info.items() if k != "source"}}) == "resume":
            log.info("%s: resuming the run in %s", experiment.name, out)
        trainer = _make_trainer(experiment, env, train_params)
        validation = _validation(experiment, config, env, val_params)
        baselines = _make_baselines(experiment, env, eval_params)
        per_seed, policies, failures = [], {}, []
        for seed, result, seed_record in _train_seeds(experiment, trainer, validation, out, show_progress):
            per_seed.append(seed_record)
            if seed_record["failed"]:
                failures.append(seed_record)
            else:
                policies[f"{agent.name}_seed_{seed}"] = algorithm.as_policy(config, result, env, eval_params)  # greedy

        policies.update(baselines)
        rows = _score(experiment, env, eval_params, policies)
        label = experiment.metric
        seed_means = [row[f"{label}_mean"] for row in rows if _is_agent_row(row, agent)]
        across = summarize(seed_means, "per-seed means") if len(seed_means) > 1 else None
        report = {"experiment": experiment.name, "status": FAILED if failures else "ok", "algorithm": agent.name,
                  "failures": {s["seed"]: s["failed"] for s in failures}, "env": experiment.env,
                  "env_kwargs": dict(experiment.env_kwargs), "data": info, agent.table: dataclasses.asdict(config),
                  "seeds": per_seed, "evaluation": rows, f"{agent.name}_across_seeds": across, "metric": label,
                  "lower_is_better": experiment.lower_is_better, "episodes": experiment.episodes}
        write_results(out, report, results_table(experiment, info, rows, across, per_seed, failures))
    if failures:
        reasons = "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failures)
        return (f"{experiment.name}: {FAILED}: {reasons}; the table in {out / 'results.md'} says {FAILED}"), False
    best = min if experiment.lower_is_better else max
    best_baseline = best((r for r in rows if not _is_agent_row(r, agent)), key=lambda r: r[f"{label}_mean"],
                         default=None)
    agent_text = (f"{agent.label} {across['mean']:.4g} (95% CI over seeds {across['ci95_low']:.4g} .. "
                  f"{across['ci95_high']:.4g})" if across else f"{agent.label} {seed_means[0]:.4g}")
    base_text = (f"; best baseline {best_baseline['policy']} {best_baseline[f'{label}_mean']:.4g}"
                 if best_baseline else "")
    return (f"{experiment.name}: {label} on {experiment.episodes} held-out episodes: {agent_text}{base_text}; "
            f"table in {out / 'results.md'}"), True


def _is_agent_row(row: Mapping[str, Any], agent: Agent) -> bool:
    return row["policy"].startswith(f"{agent.name}_seed_")


def results_table(experiment: RLExperiment, info: dict, rows: list, across: dict | None, per_seed: list,
                  failures: list = ()) -> str:
    """Markdown: one row per policy (mean, std, 95% CI over episodes; paired difference vs the reference), the
    agent's spread across seeds and each seed's training time and env-steps/s."""
    lines = [f"# {experiment.name}", "", _data_line(experiment, info), _metric_line(experiment), ""]
    lines += _overlap_caveat(experiment, info)
    if failures:
        lines += [f"**{FAILED}**: " + "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failures)
                  + ". Failed seeds are left out of the rows below; do not read them as results.", ""]
    if not rows:
        return "\n".join(lines) + "\n"
    lines += _policy_table(rows, experiment.metric, experiment.reference)
    if across:
        lines += ["", f"{experiment.agent.label} across {across['n']} training seeds (per-seed means): "
                      f"{across['mean']:.4g}, 95% CI {across['ci95_low']:.4g} .. {across['ci95_high']:.4g}."]
    lines += ["", "Training: " + ", ".join(_training_text(s) for s in per_seed) + "."]
    return "\n".join(lines) + "\n"


def _data_line(experiment: RLExperiment, info: dict) -> str:
    return (f"Env `{experiment.env}`; data: {info.get('source')}"
            + (f"; train {info['train'][0]} .. {info['train'][1]}, test {info['test'][0]} .. {info['test'][1]}"
               if "train" in info else "") + ".")


def _metric_line(experiment: RLExperiment) -> str:
    direction = "lower is better" if experiment.lower_is_better else "higher is better"
    return (f"Metric `{experiment.metric}` ({direction}) over the same {experiment.episodes} held-out episodes for "
            "every policy (common random numbers); 95% Student-t intervals over episodes.")


def _overlap_caveat(experiment: RLExperiment, info: dict) -> list[str]:
    """Real data: the evaluation episodes overlap, so the intervals over episodes are too narrow."""
    if not (info.get("test_bars") and info.get("episode_bars")):
        return []
    independent = info["test_bars"] // info["episode_bars"]
    return [f"Caveat: the {experiment.episodes} evaluation episodes start at random bars of a {info['test_bars']}-bar "
            f"test period, so they overlap: only about {independent} episodes of {info['episode_bars']} bars "
            "are disjoint. The intervals treat episodes as independent and are therefore too narrow; "
            "read them as a lower bound on the uncertainty.", ""]


def _policy_table(rows: list, label: str, reference: str | None, extra: tuple[str, Mapping[str, str]] | None = None
                  ) -> list[str]:
    """Markdown table lines: one row per policy (mean, std, 95% CI; the paired difference vs `reference`; the share
    of steps per action when the rows have it; an `extra` column `(title, {policy: text})`)."""
    head = "| policy | mean | std | 95% CI |"
    sep = "| --- | --- | --- | --- |"
    if reference:
        head += f" paired diff vs {reference} [95% CI] |"
        sep += " --- |"
    shares = "action_share" in rows[0]
    if shares:
        head += " share of steps per action 0..n-1 |"
        sep += " --- |"
    if extra:
        head += f" {extra[0]} |"
        sep += " --- |"
    lines = [head, sep]
    for row in rows:
        if row.get(f"{label}_nonfinite", 0):
            line = f"| {row['policy']} | {FAILED} ({row[f'{label}_nonfinite']} non-finite episodes) | | |"
        else:
            line = (f"| {row['policy']} | {row[f'{label}_mean']:.4g} | {row[f'{label}_std']:.4g} | "
                    f"{row[f'{label}_ci95_low']:.4g} .. {row[f'{label}_ci95_high']:.4g} |")
        if reference:
            line += (f" {row[f'{label}_diff_mean']:+.4g} [{row[f'{label}_diff_ci95_low']:.4g} .. "
                     f"{row[f'{label}_diff_ci95_high']:.4g}] |")
        if shares:
            line += " " + " ".join(f"{x:.2f}" for x in row.get("action_share", ())) + " |"
        if extra:
            line += f" {extra[1].get(row['policy'], '')} |"
        lines.append(line)
    return lines


def _training_text(seed: Mapping[str, Any]) -> str:
    """"seed 0: 75 s, 1.35e+03 env-steps/s", with "(resumed at iteration 40)" after a restart (the rate counts the
    units trained since), or "seed 0: restored from its last checkpoint (iteration 80), not retrained"."""
    unit = seed.get("unit", "unit")
    if seed["env_steps_per_s"] is None:
        return f"seed {seed['seed']}: restored from its last checkpoint ({unit} {seed['resumed_from']}), not retrained"
    resumed = f" (resumed at {unit} {seed['resumed_from']})" if seed.get("resumed_from") else ""
    return f"seed {seed['seed']}: {seed['seconds']:.0f} s{resumed}, {seed['env_steps_per_s']:.3g} env-steps/s"


# ------------------------------------------------------------------------------------ cross-algorithm comparisons


@dataclasses.dataclass(frozen=True)
class EnsembleSpec:
    """The optional [ensemble] table of an `algorithm = "rl_comparison"` file (as `ppo_ensemble`'s).

    Attributes:
        discount: forgetting factor of the Thompson posteriors, in (0, 1].
        warm_start: start the posteriors from the agents' validation returns instead of round-robin episodes.
        initial_pulls: round-robin test episodes per agent before sampling (default 1; 0 with warm_start).
        val_episodes: validation episodes per agent for FinRL's Sharpe pick (and the warm start).
    """

    discount: float = 0.95
    warm_start: bool = False
    initial_pulls: int = 1
    val_episodes: int = 200


ENSEMBLE_CHECKS = {"discount": S.in_interval(0, 1, low_open=True), "initial_pulls": S.at_least(0),
                   "val_episodes": S.at_least(2)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ComparisonExperiment:
    """Several RL algorithms on one env (`algorithm = "rl_comparison"`; see `load_comparison`).

    Attributes:
        experiments: one `RLExperiment` per algorithm, in the file's order: the same name, env, data, seeds and
            [evaluation], each with its own algorithm's config.
        ensemble: the [ensemble] settings, or None for no ensemble.
        file: the experiment file.
    """

    experiments: tuple[RLExperiment, ...]
    ensemble: EnsembleSpec | None = None
    file: str = "<experiment>"

    algorithm: ClassVar[str] = "rl_comparison"

    @property
    def base(self) -> RLExperiment:
        """The first algorithm's experiment: the env, data, seeds and [evaluation] every algorithm shares."""
        return self.experiments[0]

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.base.seeds

    @property
    def episodes(self) -> int:
        return self.base.episodes

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(e.agent.name for e in self.experiments)


def load_comparison(raw: dict, file) -> ComparisonExperiment:
    """An `algorithm = "rl_comparison"` file: the [env] / [env.kwargs] / [env.data] / [evaluation] tables and
    `seeds` of every RL file, two or more algorithm tables ([ppo], [sac], [td3], [ddpg], [dqn]; each checked as in
    that algorithm's own file, by `load`), and an optional [ensemble] (`EnsembleSpec`). Every mistake, and an
    algorithm that cannot act in the env's action space, is a one-line `ConfigError`."""
    tables = {agent.table: agent for agent in AGENTS.values()}
    S.check_keys(raw, {"algorithm", "name", "seeds", "env", "evaluation", "ensemble", *tables}, file, "")
    present = [key for key in raw if key in tables]
    if len(present) < 2:
        raise S.ConfigError(f"{file}: algorithm = 'rl_comparison' compares two or more algorithms: expected two or "
                            f"more of {', '.join(f'[{t}]' for t in tables)}; the file has "
                            f"{', '.join(f'[{t}]' for t in present) or 'none'}")
    common = {key: raw[key] for key in ("name", "seeds", "env", "evaluation") if key in raw}
    experiments = tuple(load({**common, "algorithm": tables[t].name, t: raw[t]}, file, tables[t].name)
                        for t in present)
    spec = None
    if "ensemble" in raw:
        if not isinstance(raw["ensemble"], dict):
            raise S.ConfigError(f"{file}: ensemble must be a table ([ensemble])")
        spec = S.build(EnsembleSpec, dict(raw["ensemble"]), file, "ensemble", ENSEMBLE_CHECKS)
        if spec.warm_start and "initial_pulls" not in raw["ensemble"]:
            spec = dataclasses.replace(spec, initial_pulls=0)
    return ComparisonExperiment(experiments=experiments, ensemble=spec, file=str(file))


class _AgentParams(NamedTuple):
    """What an agent's policy needs (`.params`, `.obs_norm`), the same for every algorithm's result."""

    params: Any
    obs_norm: Any


def _recording_metric(experiment: RLExperiment, env_params):
    """`(metric, episodes)`: `_compare_metric` that also keeps what it scores, and `episodes(rows) -> {policy:
    (metric values [n], total rewards [n])}` that hands those back by policy (checked against `compare`'s rows, so
    a change in the order in which `compare` scores its policies is an error, never a mislabelled column)."""
    values = episode_metric(experiment.metric, env_params)
    label = experiment.metric
    seen = []

    def metric(stats):
        v = values(stats.total_reward, stats.info)
        seen.append((v, np.asarray(stats.total_reward, np.float64)))
        return v

    metric.__name__ = label

    def episodes(rows) -> dict:
        if len(seen) != len(rows):
            raise RuntimeError(f"compare scored {len(seen)} policies for {len(rows)} rows")
        out = {}
        for row, (v, reward) in zip(rows, seen):
            mean = row[f"{label}_mean"]
            if np.isfinite(v).all() and not np.isclose(np.mean(v), mean, rtol=1e-9, atol=0.0):
                raise RuntimeError(f"per-episode values do not match the row of {row['policy']!r}")
            out[row["policy"]] = (v, reward)
        return out

    return metric, episodes


def _summary_row(name: str, values, reference_values, label: str) -> dict:
    """A `compare`-style row (`{label}_mean`, `_std`, `_ci95_*`, `_nonfinite`, and `_diff_*` against the reference's
    values on the same episodes) for per-episode `values` scored outside `compare` (the ensemble's)."""
    from trading_jax.evaluation.stats import paired_difference, summarize

    s = summarize(values, f"{name} {label}")
    row = {"policy": name, "n_episodes": int(np.size(values)), f"{label}_mean": s["mean"], f"{label}_std": s["std"],
           f"{label}_ci95_low": s["ci95_low"], f"{label}_ci95_high": s["ci95_high"],
           f"{label}_nonfinite": s["nonfinite"]}
    if reference_values is not None:
        d = paired_difference(values, reference_values, f"{label} differences")
        row.update({f"{label}_diff_mean": d["mean"], f"{label}_diff_std": d["std"],
                    f"{label}_diff_ci95_low": d["ci95_low"], f"{label}_diff_ci95_high": d["ci95_high"]})
    return row


def _welch(a, b) -> dict | None:
    """`mean(a) - mean(b)` with Welch's 95% t-interval (unequal variances; seeds of two algorithms are not paired);
    None with fewer than 2 values on a side or a non-finite value."""
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return {"mean": diff, "ci95_low": diff, "ci95_high": diff}
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, df)) * se
    return {"mean": diff, "ci95_low": diff - half, "ci95_high": diff + half}


def _verdict(a: str, diff: Mapping[str, float] | None, b: str, lower_is_better: bool) -> str:
    """"A is **better** than B" / "**worse**" when the 95% interval of the difference `A - B` excludes 0, else
    "**no clear difference** between A and B"."""
    subject = a[:1].upper() + a[1:]
    if diff is None or not all(math.isfinite(diff[k]) for k in ("mean", "ci95_low", "ci95_high")):
        return f"{subject} vs {b}: **undetermined** (too few seeds or non-finite values)"
    if diff["ci95_low"] > 0 or diff["ci95_high"] < 0:
        word = "better" if (diff["ci95_low"] > 0) != lower_is_better else "worse"
        return f"{subject} is **{word}** than {b}"
    return f"**No clear difference** between {a} and {b} (the interval includes 0)"


def _interval(d: Mapping[str, float]) -> str:
    return f"{d['mean']:+.4g} [{d['ci95_low']:.4g} .. {d['ci95_high']:.4g}]"


def _cross_algorithm_ensemble(experiment: ComparisonExperiment, env, val_params, trained: Mapping[str, list],
                              episodes: Mapping[str, tuple]) -> dict:
    """The Thompson ensemble and FinRL's Sharpe pick over every trained agent of every algorithm.

    Validation: the agents, mixed into one population (`trading_jax.ensemble.agents.mix_agents`: each
    algorithm's seeds one group, acting through the algorithm's own policy code), play `val_episodes` validation
    episodes (`member_returns`, one compiled program); FinRL's rule picks the agent with the best Sharpe ratio of
    its validation returns. Test: the ensemble is `thompson_replay` of the agents' total rewards on the table's
    episodes (the posteriors absorb the total reward, scaled by the validation returns' std, as
    `compare_agents`), so its row is paired with every agent's and baseline's; the Sharpe pick's row is the
    picked agent's.
    """
    from trading_jax.ensemble.agents import member_returns, mix_agents, pick_by_sharpe, sharpe_ratios
    from trading_jax.ensemble.agents import thompson_state_from_returns

    spec, base = experiment.ensemble, experiment.base
    groups, names, labels = [], [], []
    for exp in experiment.experiments:
        results = trained[exp.agent.name]
        if not results:
            continue
        members = jax.tree.map(lambda *leaves: jax.numpy.stack(leaves),
                               *[_AgentParams(result.params, result.obs_norm) for _, result in results])
        policy_fn = getattr(exp.agent.algorithm_module(), exp.agent.policy_fn)(exp.config, env, val_params)
        groups.append((members, policy_fn))
        names.append(exp.agent.name)
        labels += [f"{exp.agent.name}_seed_{seed}" for seed, _ in results]
    members, policy_fn = mix_agents(groups, env, val_params, names=names)
    validation = np.asarray(member_returns(env, val_params, members, policy_fn, jax.random.key(base.eval_seed + 1),
                                           spec.val_episodes), np.float64)
    picked = pick_by_sharpe(validation)
    spread = float(np.std(validation, ddof=1))
    scale = spread if math.isfinite(spread) and spread > 0 else 1.0
    state = (thompson_state_from_returns(jax.numpy.asarray(validation / scale, jax.numpy.float32), spec.discount)
             if spec.warm_start else None)
    rewards = np.stack([episodes[label][1] for label in labels])
    from trading_jax.ensemble.agents import thompson_replay

    arms, _ = thompson_replay(rewards, jax.random.key(base.eval_seed), discount=spec.discount, state=state,
                              initial_pulls=spec.initial_pulls, reward_scale=scale)
    values = np.stack([episodes[label][0] for label in labels])
    n = values.shape[1]
    share = np.bincount(arms, minlength=len(labels)) / n
    by_algorithm = {name: float(sum(s for label, s in zip(labels, share) if label.startswith(f"{name}_seed_")))
                    for name in names}
    return {"agents": labels, "thompson": values[arms, np.arange(n)], "sharpe_pick": values[picked],
            "picked": labels[picked], "validation_sharpe": dict(zip(labels, np.asarray(sharpe_ratios(validation),
                                                                                      np.float64).tolist())),
            "reward_scale": scale, "arms": arms.tolist(), "share": dict(zip(labels, share.tolist())),
            "share_by_algorithm": by_algorithm}


def _comparison_record(experiment: ComparisonExperiment) -> dict:
    """What the run folder fingerprints: the shared settings, every algorithm's config and the ensemble."""
    base = experiment.base
    shared = {k: v for k, v in dataclasses.asdict(base).items() if k not in ("seeds", "file", base.agent.table)}
    return {**shared, "algorithm": "rl_comparison", "algorithms": list(experiment.algorithms),
            **{e.agent.table: dataclasses.asdict(e.config) for e in experiment.experiments},
            "ensemble": None if experiment.ensemble is None else dataclasses.asdict(experiment.ensemble)}


def run_comparison(experiment: ComparisonExperiment, out_dir: str | Path, overwrite: bool = False,
                   show_progress: bool = True) -> tuple[str, bool]:
    """Train every seed of every algorithm (each as in its own file: `fit`, checkpoints under
    `checkpoints/<algorithm>/seed_<k>`, resume, validation, TensorBoard, FAILED on NaN), then score every agent
    and baseline on the SAME held-out episodes, with per-algorithm intervals over seeds, and with [ensemble] the
    cross-algorithm Thompson ensemble and FinRL's Sharpe pick; writes results.json and results.md.

    Returns:
        `(summary line, ok)`: ok is False when a seed FAILED (the table says which and why).
    """
    from trading_jax.evaluation.stats import paired_difference, summarize

    base = experiment.base
    label, reference = base.metric, base.reference
    out = Path(out_dir)
    with RunFolder(out, overwrite=overwrite) as folder:
        files = file_fingerprints([base.data["path"]]) if base.data else []
        env, train_params, val_params, eval_params, info = build_envs(base)
        if folder.claim(_comparison_record(experiment),
                        {"files": files, **{k: v for k, v in info.items() if k != "source"}}) == "resume":
            log.info("%s: resuming the run in %s", base.name, out)
        setups = [(e, _make_trainer(e, env, train_params), _validation(e, e.config, env, val_params))
                  for e in experiment.experiments]
        baselines = _make_baselines(base, env, eval_params)
        trained, per_seed, failures, policies = {}, {}, [], {}
        for exp, trainer, validation in setups:
            name = exp.agent.name
            seeds = _train_seeds(exp, trainer, validation, out, show_progress, group=name)
            per_seed[name] = [record for _, _, record in seeds]
            failures += [{"algorithm": name, "seed": record["seed"], "failed": record["failed"]}
                         for _, _, record in seeds if record["failed"]]
            trained[name] = [(seed, result) for seed, result, record in seeds if not record["failed"]]
            module = exp.agent.algorithm_module()
            for seed, result in trained[name]:
                policies[f"{name}_seed_{seed}"] = module.as_policy(exp.config, result, env, eval_params)  # greedy
        agents = list(policies)
        policies.update(baselines)
        metric, by_policy = _recording_metric(base, eval_params)
        rows = _score(base, env, eval_params, policies, metric)
        episodes = by_policy(rows)
        reference_values = episodes[reference][0] if reference else None

        per_algorithm = {}
        for exp in experiment.experiments:
            own = [row for row in rows if _is_agent_row(row, exp.agent)]
            means = [row[f"{label}_mean"] for row in own]
            per_algorithm[exp.agent.name] = {
                "label": exp.agent.label, "seeds": [int(r["policy"].rsplit("_", 1)[1]) for r in own],
                "seed_means": means, "across_seeds": summarize(means, "per-seed means") if len(means) > 1 else None,
                "minus_reference": (summarize([row[f"{label}_diff_mean"] for row in own], "per-seed differences")
                                    if reference and len(own) > 1 else None)}
        names = list(per_algorithm)
        pairwise = [{"a": a, "b": b, **(_welch(per_algorithm[a]["seed_means"], per_algorithm[b]["seed_means"]) or {})}
                    for i, a in enumerate(names) for b in names[i + 1:]]

        ensemble = None
        if experiment.ensemble is not None and len(agents) >= 2:
            ensemble = _cross_algorithm_ensemble(experiment, env, val_params, trained, episodes)
            rows += [_summary_row("thompson", ensemble["thompson"], reference_values, label),
                     _summary_row("sharpe_pick", ensemble["sharpe_pick"], reference_values, label)]
            ensemble["thompson_minus_sharpe_pick"] = paired_difference(ensemble["thompson"], ensemble["sharpe_pick"])
            best = (min if base.lower_is_better else max)(agents, key=lambda a: float(np.mean(episodes[a][0])))
            ensemble["best_agent_in_hindsight"] = best
            ensemble["thompson_minus_best_agent"] = paired_difference(ensemble["thompson"], episodes[best][0])
            ensemble["thompson"] = ensemble["thompson"].tolist()
            ensemble["sharpe_pick"] = ensemble["sharpe_pick"].tolist()
        report = {"experiment": base.name, "status": FAILED if failures else "ok", "algorithm": "rl_comparison",
                  "algorithms": names, "failures": failures, "env": base.env, "env_kwargs": dict(base.env_kwargs),
                  "data": info, **{e.agent.table: dataclasses.asdict(e.config) for e in experiment.experiments},
                  "seeds": per_seed, "evaluation": rows, "per_algorithm": per_algorithm, "pairwise": pairwise,
                  "episode_values": {name: values.tolist() for name, (values, _) in episodes.items()},
                  "ensemble": ensemble, "ensemble_settings": (None if experiment.ensemble is None
                                                              else dataclasses.asdict(experiment.ensemble)),
                  "metric": label, "lower_is_better": base.lower_is_better, "reference": reference,
                  "episodes": base.episodes}
        write_results(out, report, comparison_table(experiment, info, report))
    if failures:
        reasons = "; ".join(f"{f['algorithm']} seed {f['seed']}: {f['failed']}" for f in failures)
        return f"{base.name}: {FAILED}: {reasons}; the table in {out / 'results.md'} says {FAILED}", False
    parts = []
    for name, entry in per_algorithm.items():
        across = entry["across_seeds"]
        parts.append(f"{entry['label']} {across['mean']:.4g} (95% CI over seeds {across['ci95_low']:.4g} .. "
                     f"{across['ci95_high']:.4g})" if across else f"{entry['label']} {entry['seed_means'][0]:.4g}")
    by_row = {row["policy"]: row for row in rows}
    chooser = min if base.lower_is_better else max
    best_baseline = chooser((by_row[b] for b in baselines), key=lambda r: r[f"{label}_mean"], default=None)
    text = f"{base.name}: {label} on {base.episodes} held-out episodes: " + ", ".join(parts)
    if best_baseline:
        text += f"; best baseline {best_baseline['policy']} {best_baseline[f'{label}_mean']:.4g}"
    if ensemble:
        text += (f"; Thompson ensemble {by_row['thompson'][f'{label}_mean']:.4g}, Sharpe pick ({ensemble['picked']}) "
                 f"{by_row['sharpe_pick'][f'{label}_mean']:.4g}")
    return text + f"; table in {out / 'results.md'}", True


def comparison_table(experiment: ComparisonExperiment, info: dict, report: Mapping[str, Any]) -> str:
    """Markdown of a comparison: every agent, baseline and ensemble row on the same episodes, the per-algorithm
    intervals over seeds, plain verdicts (better / worse / no clear difference, with the intervals) and training."""
    base = experiment.base
    label, reference = base.metric, base.reference
    per_algorithm, ensemble, spec = report["per_algorithm"], report["ensemble"], experiment.ensemble
    algorithms = ", ".join(f"{e.agent.label} ([{e.agent.table}])" for e in experiment.experiments)
    lines = [f"# {base.name}", "", _data_line(base, info),
             f"Algorithms: {algorithms}; seeds {list(base.seeds)} each, every seed trained through the same fit loop "
             "(checkpoints, validation, resume); the table scores each seed's final params acting greedily.",
             _metric_line(base)]
    if spec is not None:
        lines.append(
            "Ensemble over every trained agent of every algorithm: `thompson` decides once per episode which agent "
            "plays it (Normal-Inverse-Gamma posteriors of the agents' episode rewards, discount "
            f"{spec.discount}, " + ("warm-started from validation" if spec.warm_start else
                                    f"{spec.initial_pulls} round-robin episode(s) per agent first")
            + "), on the same episodes as every other row; `sharpe_pick` is FinRL's rule, the agent with the best "
            f"Sharpe ratio over {spec.val_episodes} validation episodes"
            + (f" (picked: {ensemble['picked']})." if ensemble else "."))
    lines.append("")
    lines += _overlap_caveat(base, info)
    if report["failures"]:
        lines += [f"**{FAILED}**: " + "; ".join(f"{f['algorithm']} seed {f['seed']}: {f['failed']}"
                                                 for f in report["failures"])
                  + ". Failed seeds are left out of the rows below; do not read them as results.", ""]
    rows = report["evaluation"]
    if rows:
        extra = None
        if ensemble:
            extra = ("share of Thompson's episodes", {a: f"{s:.2f}" for a, s in ensemble["share"].items()})
        lines += _policy_table(rows, label, reference, extra)
    lines += ["", "## Per algorithm, across training seeds", "",
              "Each seed's mean over the held-out episodes; the interval is Student-t over the seeds (it includes the "
              "training-seed spread, which the per-episode intervals above do not).", ""]
    head = "| algorithm | seeds | mean of seed means [95% CI over seeds] |"
    sep = "| --- | --- | --- |"
    if reference:
        head += f" minus {reference} [95% CI over seeds] |"
        sep += " --- |"
    if ensemble:
        head += " share of Thompson's episodes |"
        sep += " --- |"
    lines += [head, sep]
    for name, entry in per_algorithm.items():
        across = entry["across_seeds"]
        mean = (f"{across['mean']:.4g} [{across['ci95_low']:.4g} .. {across['ci95_high']:.4g}]" if across
                else (f"{entry['seed_means'][0]:.4g}" if entry["seed_means"] else FAILED))
        line = f"| {entry['label']} | {len(entry['seed_means'])} | {mean} |"
        if reference:
            line += f" {_interval(entry['minus_reference']) if entry['minus_reference'] else ''} |"
        if ensemble:
            line += f" {ensemble['share_by_algorithm'].get(name, 0.0):.2f} |"
        lines.append(line)
    lines += ["", "## What is better or worse", ""] + _findings(experiment, report)
    lines += ["", "Training: " + "; ".join(
        f"{per_algorithm[name]['label']}: " + ", ".join(_training_text(s) for s in seeds)
        for name, seeds in report["seeds"].items()) + "."]
    return "\n".join(lines) + "\n"


def _findings(experiment: ComparisonExperiment, report: Mapping[str, Any]) -> list[str]:
    """Plain sentences: each algorithm against the reference baseline (over seeds), each pair of algorithms (Welch
    over seeds), and the ensemble against the reference, the Sharpe pick and the best agent in hindsight (paired
    over episodes); each with its difference and 95% interval."""
    base = experiment.base
    label, reference, lower = base.metric, base.reference, base.lower_is_better
    per_algorithm, ensemble = report["per_algorithm"], report["ensemble"]
    by_row = {row["policy"]: row for row in report["evaluation"]}
    unit = f"{label}, {'lower' if lower else 'higher'} is better"
    lines = []
    if reference:
        ref_mean = by_row[reference][f"{label}_mean"] if reference in by_row else float("nan")
        for entry in per_algorithm.values():
            diff, name = entry["minus_reference"], entry["label"]
            if entry["across_seeds"] is None or diff is None:
                lines.append(f"- {name} vs {reference}: undetermined (fewer than 2 seeds trained).")
                continue
            lines.append(f"- {_verdict(name, diff, reference, lower)}: {name} {entry['across_seeds']['mean']:.4g} vs "
                         f"{ref_mean:.4g}, difference {_interval(diff)} over {diff['n']} seeds ({unit}).")
    for pair in report["pairwise"]:
        a, b = per_algorithm[pair["a"]]["label"], per_algorithm[pair["b"]]["label"]
        if "mean" not in pair:
            lines.append(f"- {a} vs {b}: undetermined (fewer than 2 seeds of one of them).")
            continue
        lines.append(f"- {_verdict(a, pair, b, lower)}: difference of the seed means {_interval(pair)} (Welch "
                     f"interval over seeds; {unit}).")
    if ensemble:
        row = by_row["thompson"]
        if reference:
            diff = {"mean": row[f"{label}_diff_mean"], "ci95_low": row[f"{label}_diff_ci95_low"],
                    "ci95_high": row[f"{label}_diff_ci95_high"]}
            lines.append(f"- {_verdict('the Thompson ensemble', diff, reference, lower)}: {row[f'{label}_mean']:.4g}, "
                         f"paired difference {_interval(diff)} per episode.")
        shares = ", ".join(f"{per_algorithm[n]['label']} {s:.0%}" for n, s in ensemble["share_by_algorithm"].items())
        pick = f"the Sharpe pick ({ensemble['picked']})"
        lines.append(f"- {_verdict('the Thompson ensemble', ensemble['thompson_minus_sharpe_pick'], pick, lower)}: "
                     f"paired difference {_interval(ensemble['thompson_minus_sharpe_pick'])} per episode. Episodes "
                     f"the ensemble gave each algorithm: {shares}.")
        best = f"the best single agent in hindsight ({ensemble['best_agent_in_hindsight']})"
        lines.append(f"- {_verdict('the Thompson ensemble', ensemble['thompson_minus_best_agent'], best, lower)}: "
                     f"paired difference {_interval(ensemble['thompson_minus_best_agent'])} per episode (that agent is "
                     "chosen on these test episodes, so it is not a fair opponent).")
    baselines = [b for b in base.baselines if b in by_row]
    if baselines:
        best = (min if lower else max)(baselines, key=lambda b: by_row[b][f"{label}_mean"])
        lines.append(f"- Best baseline: {best} ({by_row[best][f'{label}_mean']:.4g}).")
    return lines
