"""`export_run(run_dir, out_dir)`: an export folder from a run folder of `trading-jax train`.

What is exported, by the run's algorithm (read from its `config.json`):

* supervised: the chosen seed's best params (lowest best validation loss unless `seed` is given) as a
  "predictor": input `x [B, window, F]` (normalised feature windows), outputs the model's (plus "probs"
  for class logits, and "forecast_return" = prediction x the training target scale for return forecasts);
* ensemble: every member of the chosen seed's ensemble (the lowest seed unless `seed` is given), as an
  "ensemble": input `x`, outputs "member_probs" `[B, M, 3]`, the equal-weight mean "probs" `[B, 3]` (the run's
  "ensemble_mean" rule), "direction" (-1, 0, +1), "agreement" (fraction of members voting for the mean's
  class) and "mutual_information" (the members' disagreement);
* ppo: the chosen seed's final params (best final validation metric unless `seed` is given) with its
  observation normaliser, as a "policy": input raw `obs [B, O]`, outputs "action" (greedy) and the network's;
* ppo_ensemble: all K agents (final params, each with its normaliser), as an "ensemble": inputs `obs` and
  `agent [B]` (which agent acts: the caller's per-episode Thompson draw, or the validation Sharpe pick
  named in the metadata), outputs that agent's action and every agent's (`trading_jax.export.rebuild`).

The feature pipeline's fitted state comes from the run's `features.json`; a run from before that file
existed gets it rebuilt from its data (after checking the data is what it trained on). The held-out test
split (or, for a policy, observations drawn around the normaliser's moments) is the reference the exported
artifacts are checked on.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from trading_jax.export.artifact import git_commit, write_export
from trading_jax.export.rebuild import apply_from_model_json, policy_model_json
from trading_jax.export.runtime import ExportError
from trading_jax.logging import get_logger

__all__ = ["export_run", "run_algorithm", "read_run"]

log = get_logger(__name__)
REFERENCE_ROWS = 256


def read_run(run_dir: str | Path) -> tuple[dict, dict]:
    """`(config record, data record)` of a run folder's `config.json` (one-line `ExportError` if unusable)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ExportError(f"{run}: no such run folder; pass the folder `trading-jax train` wrote (runs/NAME)")
    path = run / "config.json"
    if not path.exists():
        raise ExportError(f"{path}: missing; {run} is not a run folder of `trading-jax train`")
    try:
        raw = json.loads(path.read_text())
    except ValueError:
        raise ExportError(f"{path}: not valid JSON; the run folder is damaged, train it again") from None
    if "config" not in raw:  # the oldest folders kept only the config
        raw = {"config": raw, "data": {}}
    return raw["config"], raw.get("data", {})


def run_algorithm(record: dict) -> str:
    """The algorithm of a run from its config record (most records do not name it; rl_comparison's does)."""
    if isinstance(record.get("algorithm"), str):
        return record["algorithm"]
    if "env" in record and "ppo" in record:
        return "ppo_ensemble" if "ensemble" in record else "ppo"
    if "maml" in record or "tasks" in record:
        return "maml"
    if "ensemble" in record and "train" in record:
        return "ensemble"
    if "train" in record and "data" in record:
        return "supervised"
    if "env" in record:  # an off-policy RL run records its config under its algorithm's table
        for name in ("sac", "td3", "ddpg", "dqn"):
            if name in record:
                return name
    raise ExportError(f"cannot tell which algorithm wrote this run (config keys {sorted(record)})")


# --------------------------------------------------------------------------------------- configs


def _pairs(value) -> tuple:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in value) if isinstance(value, list) else \
        tuple(sorted(value.items())) if isinstance(value, dict) else tuple(value or ())


def _build(cls, record: dict, pairs=(), tuples=()):
    """A frozen config dataclass from its JSON record: unknown keys (another version's) are left out."""
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in record.items():
        if key not in fields:
            log.warning("%s: the run's config has %r, which this version does not know; ignored", cls.__name__, key)
            continue
        if key in pairs:
            value = _pairs(value)
        elif key in tuples and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _train_config(record: dict):
    from trading_jax.training.config import TrainConfig

    return _build(TrainConfig, record, pairs=("model_kwargs", "multitask_weights"))


def _data_spec(record: dict):
    from trading_jax.training.dataset import DataSpec

    return _build(DataSpec, record, tuples=("symbols", "repair"))


# ------------------------------------------------------------------------------------ checkpoints


def _restore(directory: Path, step: int | None = None) -> dict:
    """The raw state (nested dicts of NumPy arrays) of a checkpoint folder at `step` (default the latest)."""
    from trading_jax.checkpoint import CheckpointConfig, Checkpointer

    if not directory.is_dir():
        raise ExportError(f"{directory}: no checkpoints; the run did not save any (train it first)")
    with Checkpointer(CheckpointConfig(directory=str(directory.resolve()), keep_best=1)) as ckpt:
        steps = ckpt.all_steps()
        if not steps:
            raise ExportError(f"{directory}: no checkpoint step; the run did not save any (train it again)")
        state = ckpt.restore(steps[-1] if step is None else step)
        metrics = ckpt.metrics()
    return {"state": state, "step": steps[-1] if step is None else step, "metrics": metrics}


def _seed_dirs(root: Path) -> dict[int, Path]:
    out = {}
    for p in sorted(root.glob("seed_*")):
        try:
            out[int(p.name.split("_", 1)[1])] = p
        except ValueError:
            continue
    return out


def _pick(seeds: list[int], seed: int | None, run: Path) -> int:
    if seed is not None and seed not in seeds:
        raise ExportError(f"{run}: has no seed {seed}; its seeds are {', '.join(map(str, seeds)) or '(none)'}")
    return seed


# ----------------------------------------------------------------------------------------- data


def _features_and_reference(run: Path, spec, task: str, data_record: dict) -> tuple[dict, tuple | None, dict]:
    """`(features.json content, the test split's (windows [n, window, F], labels) or None, info)`.

    The run's `features.json` is used when present; an older run gets it rebuilt from the data after the
    data's fingerprint is checked against the one the run recorded."""
    from trading_jax.runs.folder import FEATURES, file_fingerprints
    from trading_jax.training.dataset import GENERATED_SOURCES, build_datasets, feature_state

    saved = None
    if (run / FEATURES).exists():
        try:
            saved = json.loads((run / FEATURES).read_text())
        except ValueError:
            raise ExportError(f"{run / FEATURES}: not valid JSON; delete it to rebuild it from the data") from None
    recorded = {f["path"]: f["sha256"] for f in data_record.get("files", [])}
    try:
        if spec.source not in GENERATED_SOURCES:
            now = {f["path"]: f["sha256"] for f in file_fingerprints([spec.source])}
            if recorded and now != recorded:
                raise ExportError(f"{run}: its data {spec.source} changed since training (file hashes differ)"
                                  + ("" if saved else "; the run predates features.json, so its normaliser cannot be "
                                     "rebuilt: restore the data or train again"))
        splits, info = build_datasets(spec, task)
    except ExportError:
        if saved is None:
            raise
        log.warning("%s: its data changed since training: the export is checked on random inputs", run)
        return saved, None, {}
    except (OSError, ValueError) as error:
        if saved is None:
            raise ExportError(f"{run}: predates features.json and its data cannot be read to rebuild it "
                              f"({str(error).splitlines()[0][:160]}); restore {spec.source} or train again") from None
        log.warning("%s: data unavailable (%s): the export is checked on random inputs", run, error)
        return saved, None, {}
    state = feature_state(spec, task, info)
    if saved is not None and not np.allclose(saved["normalizer"]["mean"], state["normalizer"]["mean"], equal_nan=True):
        raise ExportError(f"{run / FEATURES}: its normaliser differs from the one its data gives now; the data or "
                          "the feature code changed since training: train again")
    if saved is None:
        log.info("%s: rebuilt the feature state from %s (the run predates features.json)", run, spec.source)
    return saved or state, (np.asarray(splits["test"].x, np.float32), splits["test"].y), info


def _reference(test_x: np.ndarray | None, shape: tuple, seed: int = 0) -> tuple[np.ndarray, str]:
    if test_x is not None and len(test_x):
        rows = np.linspace(0, len(test_x) - 1, min(REFERENCE_ROWS, len(test_x))).astype(int)
        return test_x[rows], f"test split ({len(rows)} of {len(test_x)} windows, evenly spaced)"
    rng = np.random.default_rng(seed)
    return rng.normal(size=(64,) + tuple(shape)).astype(np.float32), "random normal inputs (data unavailable)"


def _results(run: Path) -> dict:
    try:
        return json.loads((run / "results.json").read_text())
    except (OSError, ValueError):
        return {}


def _metadata(run: Path, algorithm: str, record: dict, data_record: dict, metrics: dict, extra: dict) -> dict:
    import flax

    from trading_jax.runs.folder import package_version

    files = data_record.get("files", [])
    fingerprint = None
    if files:
        import hashlib

        fingerprint = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()
    return {"package_version": package_version(), "jax_version": jax.__version__, "flax_version": flax.__version__,
            "git_commit": git_commit(), "run_dir": str(run.resolve()), "algorithm": algorithm,
            "training_config": record, "metrics": metrics,
            "data": {"source": data_record.get("source") or (record.get("data") or {}).get("source") or (record.get("data") or {}).get("path"),
                     "files": files, "fingerprint": fingerprint, "split": data_record.get("split"),
                     "range": extra.pop("range", None)},
            **extra}


# ------------------------------------------------------------------------------------- builders


def _supervised(run: Path, record: dict, data_record: dict, seed: int | None):
    cfg = _train_config(record["train"])
    spec = _data_spec(record["data"])
    population = run / "checkpoints" / "population"
    if population.is_dir():
        seeds = list(record.get("seeds", []))
        restored = _restore(population)
        params_all, losses = restored["state"]["best_params"], np.asarray(restored["state"]["stopping"]["best_loss"])
        chosen = _pick(seeds, seed, run)
        index = seeds.index(chosen) if chosen is not None else int(np.nanargmin(np.where(np.isfinite(losses), losses,
                                                                                            np.inf)))
        chosen = seeds[index]
        params = jax.tree.map(lambda a: np.asarray(a)[index], params_all)
        best_loss = float(losses[index])
    else:
        dirs = _seed_dirs(run / "checkpoints")
        if not dirs:
            raise ExportError(f"{run / 'checkpoints'}: no checkpoints; train the run first")
        states = {s: _restore(d) for s, d in dirs.items()} if seed is None else {_pick(list(dirs), seed, run):
                                                                                 _restore(dirs[seed])}
        loss = {s: float(np.asarray(r["state"]["stopping"]["best_loss"])) for s, r in states.items()}
        chosen = min(loss, key=lambda s: loss[s] if np.isfinite(loss[s]) else np.inf)
        params, best_loss = states[chosen]["state"]["best_params"], loss[chosen]
    features, test, _ = _features_and_reference(run, spec, cfg.task, data_record)
    test_x = None if test is None else test[0]
    shape = (features["window"], features["n_features"])
    reference, described = _reference(test_x, shape)
    per_seed = {s["seed"]: s for s in _results(run).get("seeds", [])}
    metrics = {f"test.{row}.{k}": v for row, values in ((per_seed.get(chosen) or {}).get("test") or {}).items()
               for k, v in values.items()}
    metrics["val.best_loss"] = best_loss
    model_json = {"algorithm": "supervised", "factory": cfg.model, "preset": cfg.preset,
                  "kwargs": dict(cfg.model_config()), "task": cfg.task}
    selection = ("--seed" if seed is not None else "lowest best validation loss")
    return dict(name=record.get("name", run.name), kind="predictor",
                apply=apply_from_model_json(model_json, features),
                params=params, inputs={"x": (shape, "float32")}, reference=[reference], model_json=model_json,
                features=features, metrics=metrics,
                extra={"seed": chosen, "seed_selection": selection, "reference_inputs": described,
                       "range": features.get("range")}, test=test, task=cfg.task,
                input_docs={"x": "normalised feature windows ending at the decision bar (features.json)"})


def _ensemble(run: Path, record: dict, data_record: dict, seed: int | None):
    cfg = _train_config(record["train"])
    spec = _data_spec(record["data"])
    table = record["ensemble"]
    groups = [(cfg.model, cfg)] if table.get("members", 0) > 0 else []
    for i, g in enumerate(table.get("groups", [])):
        groups.append((f"{g['model']}_{i}", cfg.replace(model=g["model"], preset=g.get("preset"),
                                                        model_kwargs=_pairs(g.get("model_kwargs", [])))))
    dirs = _seed_dirs(run / "checkpoints")
    if not dirs:
        raise ExportError(f"{run / 'checkpoints'}: no checkpoints; train the run first")
    chosen = _pick(sorted(dirs), seed, run)
    chosen = min(dirs) if chosen is None else chosen
    params, members = {}, []
    for name, _ in groups:
        params[name] = _restore(dirs[chosen] / name)["state"]["best_params"]
        members.append(int(np.asarray(jax.tree.leaves(params[name])[0]).shape[0]))
    features, test, _ = _features_and_reference(run, spec, "classification", data_record)
    test_x = None if test is None else test[0]
    shape = (features["window"], features["n_features"])
    reference, described = _reference(test_x, shape)
    per_seed = {s["seed"]: s for s in _results(run).get("seeds", [])}
    scores = (per_seed.get(chosen) or {}).get("rows") or {}  # the run's test-split scores of every rule
    metrics = {f"test.{row}.{k}": v for row, values in scores.items() if isinstance(values, dict)
               for k, v in values.items() if isinstance(v, (int, float)) or v is None}
    model_json = {"algorithm": "ensemble", "combine": "mean of member class probabilities (ensemble_mean)",
                  "groups": [{"name": n, "factory": c.model, "preset": c.preset, "kwargs": dict(c.model_config()),
                              "members": m} for (n, c), m in zip(groups, members)]}
    return dict(name=record.get("name", run.name), kind="ensemble", apply=apply_from_model_json(model_json),
                params=params,
                inputs={"x": (shape, "float32")}, reference=[reference], model_json=model_json, features=features,
                metrics=metrics, extra={"seed": chosen, "seed_selection": "--seed" if seed is not None else "lowest seed",
                                        "reference_inputs": described, "range": features.get("range")},
                test=test, task="classification",
                input_docs={"x": "normalised feature windows ending at the decision bar (features.json)"})


def _ppo(run: Path, record: dict, data_record: dict, seed: int | None):
    from trading_jax.envs import make
    from trading_jax.rl.ppo import PPOConfig

    config = _build(PPOConfig, record["ppo"], pairs=("network_kwargs",))
    config = dataclasses.replace(config, env=record.get("env", config.env),
                                 env_kwargs=dict(record.get("env_kwargs", config.env_kwargs)))
    env, env_params = make(config.env, **dict(config.env_kwargs))
    if config.recurrent:
        raise ExportError(f"{run}: its policy is recurrent (network {config.network_name!r}): serving it needs the "
                          "LSTM carry as an input and output, which the export does not support yet")
    dirs = _seed_dirs(run / "checkpoints")
    if not dirs:
        raise ExportError(f"{run / 'checkpoints'}: no checkpoints; train the run first")
    chosen = _pick(sorted(dirs), seed, run)
    restored = {s: _restore(d) for s, d in dirs.items()} if chosen is None else {chosen: _restore(dirs[chosen])}
    metric = f"val_{record.get('metric', 'total_reward')}"
    sign = 1.0 if record.get("lower_is_better") else -1.0

    def score(r):
        value = r["metrics"].get(r["step"], {}).get(metric, float("nan"))
        return sign * value if np.isfinite(value) else np.inf

    chosen = min(restored, key=lambda s: score(restored[s])) if chosen is None else chosen
    state = restored[chosen]["state"]
    norm = {k: np.asarray(v, np.float32) for k, v in state["obs_norm"].items()}
    params = {"network": state["params"], "obs_norm": norm}
    obs_dim = int(np.prod(env.observation_space(env_params).shape))
    rng = np.random.default_rng(0)
    std = np.sqrt(np.maximum(norm["var"], 1e-12)) if config.normalize_observations else np.ones(obs_dim, np.float32)
    mean = norm["mean"] if config.normalize_observations else np.zeros(obs_dim, np.float32)
    reference = (mean + std * rng.normal(size=(REFERENCE_ROWS, obs_dim))).astype(np.float32)

    results = _results(run)
    metrics = {}
    for row in results.get("evaluation", []) if isinstance(results.get("evaluation"), list) else []:
        if isinstance(row, dict) and row.get("policy") == f"ppo_seed_{chosen}":
            metrics = {f"test.{k}": v for k, v in row.items() if isinstance(v, (int, float))}
    metrics[metric] = restored[chosen]["metrics"].get(restored[chosen]["step"], {}).get(metric)
    model_json = policy_model_json(config)
    return dict(name=record.get("name", run.name), kind="policy", apply=apply_from_model_json(model_json), params=params,
                inputs={"obs": ((obs_dim,), "float32")}, reference=[reference], model_json=model_json, features=None,
                metrics=metrics, extra={"seed": chosen, "step": restored[chosen]["step"],
                                        "seed_selection": "--seed" if seed is not None else f"best final {metric}",
                                        "reference_inputs": "observations drawn around the normaliser's moments"},
                input_docs={"obs": f"raw {config.env} env observations (normalised inside)"})


def _ppo_ensemble(run: Path, record: dict, data_record: dict, seed: int | None):
    from trading_jax.envs import make
    from trading_jax.rl.ppo import PPOConfig

    if seed is not None:
        raise ExportError(f"{run}: an RL ensemble exports all its agents; leave out --seed")
    config = _build(PPOConfig, record["ppo"], pairs=("network_kwargs",))
    if config.recurrent:
        raise ExportError(f"{run}: its policies are recurrent; serving them needs the LSTM carry (not supported yet)")
    env, env_params = make(config.env, **dict(config.env_kwargs))
    state = _restore(run / "checkpoints" / "agents")["state"]
    norm = {k: np.asarray(v, np.float32) for k, v in state["obs_norm"].items()}
    params = {"network": state["params"], "obs_norm": norm}
    members = int(norm["mean"].shape[0])
    obs_dim = int(np.prod(env.observation_space(env_params).shape))
    rng = np.random.default_rng(0)
    reference = (norm["mean"][0] + np.sqrt(np.maximum(norm["var"][0], 1e-12))
                 * rng.normal(size=(REFERENCE_ROWS, obs_dim))).astype(np.float32)
    agents = rng.integers(0, members, REFERENCE_ROWS).astype(np.int32)
    results = _results(run)
    seeds = results.get("seeds") or record.get("seeds")
    metrics = {f"test.{row['policy']}.mean_return": row.get("mean") for row in results.get("rows", [])
               if isinstance(row, dict)}
    model_json = policy_model_json(config, "ppo_ensemble", members=members)
    picked = results.get("picked")
    return dict(name=record.get("name", run.name), kind="ensemble", apply=apply_from_model_json(model_json),
                params=params, inputs={"obs": ((obs_dim,), "float32"), "agent": ((), "int32")},
                reference=[reference, agents], model_json=model_json, features=None, metrics=metrics,
                extra={"seeds": seeds, "sharpe_picked_agent": None if picked is None or seeds is None
                       else list(seeds).index(picked), "thompson_share": results.get("thompson_share"),
                       "thompson": record.get("ensemble"),
                       "reference_inputs": "observations drawn around agent 0's normaliser moments, random agents"},
                input_docs={"obs": f"raw {config.env} env observations (normalised inside, per agent)",
                            "agent": f"which of the {members} agents acts (0 .. {members - 1}): a Thompson draw "
                                     "per episode (trading_jax.ensemble.thompson), or metadata's sharpe_picked_agent"},
                input_ranges={"agent": [0, members - 1]})


BUILDERS = {"supervised": _supervised, "ensemble": _ensemble, "ppo": _ppo, "ppo_ensemble": _ppo_ensemble}


def export_run(run_dir: str | Path, out_dir: str | Path, *, seed: int | None = None, precision: str = "float32",
               onnx: bool = True, platforms=("cpu", "cuda"), overwrite: bool = False, name: str | None = None) -> dict:
    """Export a run folder (module docstring) to `out_dir`; returns the manifest.

    Raises:
        ExportError: one line naming the folder and what to do (not a run, no checkpoint, unknown seed,
            changed data for a run without features.json, an algorithm that does not export yet).
    """
    run = Path(run_dir)
    record, data_record = read_run(run)
    algorithm = run_algorithm(record)
    if algorithm not in BUILDERS:
        raise ExportError(f"{run}: exporting a {algorithm} run is not supported yet (supervised, ensemble, ppo and "
                          "ppo_ensemble runs are)")
    spec = BUILDERS[algorithm](run, record, data_record, seed)
    metadata = _metadata(run, algorithm, record, data_record, spec.pop("metrics"), spec.pop("extra"))
    params = jax.tree.map(lambda a: np.asarray(a, np.float32) if np.issubdtype(np.asarray(a).dtype, np.floating)
                          else np.asarray(a), spec.pop("params"))
    test, task = spec.pop("test", None), spec.pop("task", None)
    apply = spec["apply"]
    manifest = write_export(out_dir, name=name or spec.pop("name"), kind=spec.pop("kind"), apply=spec.pop("apply"),
                        params=params, inputs=spec.pop("inputs"), reference=spec.pop("reference"),
                        model_json=spec.pop("model_json"), metadata=metadata, features=spec.pop("features"),
                        precision=precision, onnx=onnx, platforms=platforms, overwrite=overwrite,
                        input_docs=spec.pop("input_docs"), input_ranges=spec.pop("input_ranges", None))
    if precision != "float32" and test is not None:
        manifest["checks"]["precision_test_scores"] = _precision_scores(out_dir, apply, params, test, task, precision)
        (Path(out_dir) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _precision_scores(out_dir, apply, params, test, task: str, precision: str, limit: int = 8192) -> dict:
    """The held-out score of the float32 model and of the quantised export on the same test samples: direction
    accuracy for classifiers, IC (correlation) and direction accuracy of return forecasts."""
    from trading_jax.export.runtime import load_exported

    x, y = test
    rows = np.linspace(0, len(x) - 1, min(limit, len(x))).astype(int)
    x = x[rows]
    y = jax.tree.map(lambda v: np.asarray(v)[rows], y)
    quantised = load_exported(out_dir)
    full = jax.jit(apply)
    scores = {"samples": int(len(rows)), "split": "test"}
    for name, run in (("float32", lambda b: full(params, b)), (precision, quantised)):
        out = [run(x[i: i + 512]) for i in range(0, len(x), 512)]
        out = {k: np.concatenate([np.asarray(o[k]) for o in out]) for k in out[0]}
        if "probs" in out and task == "classification":
            scores[name] = {"accuracy": float(np.mean(np.argmax(out["probs"], -1) == np.asarray(y)))}
        elif "forecast_return" in out:
            target = np.asarray(y["price"] if isinstance(y, dict) else y, np.float64).reshape(len(rows), -1)[:, 0]
            pred = out["forecast_return"].reshape(len(rows), -1)[:, 0].astype(np.float64)
            moved = target != 0
            scores[name] = {"ic": float(np.corrcoef(pred, target)[0, 1]),
                            "direction_accuracy": float(np.mean(np.sign(pred[moved]) == np.sign(target[moved])))}
    return scores
