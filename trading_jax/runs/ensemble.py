"""Ensemble experiment files (`algorithm = "ensemble"`): N members in one vmapped call per architecture,
combined by seed 002's rules, against the best and the mean member.

A file has `name`, `seeds` (each seed trains one whole ensemble), a `[data]` table (`DataSpec`), a
`[train]` table (`TrainConfig`, the members' architecture and training; task "classification": direction
classes down / flat / up), and an `[ensemble]` table:

    members      members per architecture (default 8), trained in ONE vmapped call
    diversity    "seed" (members differ by init and minibatch order) or "bootstrap" (each member also
                 trains on its own bootstrap resample of the training set)
    window       samples per asset in the rolling-performance window of the "rolling" rule (default 50)
    temperature  of the rolling weights, softmax(-loss / temperature) (default 0.05)
    threshold    confidence threshold: the ensemble acts only where its confidence is at least this
    agreement    agreement filter: act only where at least this fraction of members agree (default 0.7)
    [[ensemble.groups]]  optional further architectures (model, preset, members, [model_kwargs]): a
                 heterogeneous ensemble, one vmapped group per architecture, combined after

The run trains every member with `trading_jax.loop.fit` (Orbax checkpoints best-by-validation + latest,
resume, TensorBoard), predicts the validation and test splits with every member's best params and scores on
the test split:

- every member; "best member" = the member with the lowest validation loss (picked on validation, never on
  test), and "mean member" = the average of the members' scores;
- "mean": equal static weights; "static_val": static weights proportional to validation accuracy;
  "rolling": weights from each member's rolling log loss on the recent test samples of the same asset
  whose labels are already known (outcome of t used from t + horizon on); "confidence": seed 002's
  confidence-weighted average (confidence = max class probability, trained by the cross-entropy);
- "threshold" and "agreement": the mean ensemble scored only where it acts (accuracy on the acted samples,
  with the coverage: the fraction acted on);
- uncertainty: accuracy on the most and least certain halves by the members' disagreement (mutual
  information), which says whether the spread of the members means anything.

Each score is the mean over seeds (one ensemble per seed) with a 95% t-interval over seeds, and the
paired difference ensemble minus best member over seeds.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.logging import get_logger
from trading_jax.runs import schema as S
from trading_jax.runs.folder import FEATURES, RunFolder, file_fingerprints
from trading_jax.runs.results import FAILED, cell, write_results

__all__ = ["EnsembleExperiment", "load", "run"]

log = get_logger(__name__)

# rules that predict every test sample (the filters act on a subset: their rows are not paired with the best member)
FULL_COVERAGE_RULES = ("ensemble_mean", "ensemble_static_val", "ensemble_rolling", "ensemble_confidence")


@dataclasses.dataclass(frozen=True)
class Group:
    """One architecture of the ensemble: `members` copies of a model trained in one vmapped call."""

    model: str
    preset: str | None = None
    members: int = 8
    model_kwargs: tuple = ()


@dataclasses.dataclass(frozen=True)
class EnsembleSpec:
    """The `[ensemble]` table (module docstring)."""

    members: int = 8
    diversity: str = "bootstrap"
    window: int = 50
    temperature: float = 0.05
    threshold: float = 0.5
    agreement: float = 0.7
    groups: tuple = ()


@dataclasses.dataclass(frozen=True)
class EnsembleExperiment:
    """An ensemble experiment (module docstring)."""

    name: str
    data: object
    train: object
    ensemble: EnsembleSpec
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    every_epochs: int = 1
    file: str = "<experiment>"

    algorithm = "ensemble"


@dataclasses.dataclass(frozen=True)
class _Top:
    name: str
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    every_epochs: int = 1


def load(raw: dict, file) -> EnsembleExperiment:
    """An `EnsembleExperiment` from a parsed TOML file (every mistake a one-line `ConfigError`)."""
    from trading_jax.runs import supervised

    S.check_keys(raw, {"algorithm", "name", "seeds", "every_epochs", "data", "train", "ensemble"}, file, "")
    table = raw.get("ensemble", {})
    if not isinstance(table, dict):
        raise S.ConfigError(f"{file}: ensemble must be a table ([ensemble])")
    table = dict(table)
    groups_raw = table.pop("groups", [])
    if not isinstance(groups_raw, list) or not all(isinstance(g, dict) for g in groups_raw):
        raise S.ConfigError(f"{file}: [ensemble] groups must be tables ([[ensemble.groups]])")
    base = supervised.load({k: v for k, v in raw.items() if k in ("algorithm", "name", "seeds", "data", "train")}
                           | {"algorithm": "supervised"}, file)
    if base.train.task != "classification":
        raise S.ConfigError(f"{file}: [train] task = {base.train.task!r}: ensembles here combine direction classifiers "
                            "(their confidence is trained by the cross-entropy); use task = \"classification\"")
    groups = []
    for i, g in enumerate(groups_raw):
        g = dict(g)
        supervised.check_model(g | {"model_kwargs": g.get("model_kwargs", {})}, file, where=f"ensemble.groups.{i}")
        g.setdefault("model_kwargs", {})
        groups.append(S.build(Group, g, file, f"ensemble.groups.{i}", {"members": S.at_least(1)},
                              convert={"model_kwargs": S.kwargs_pairs}))
    spec = S.build(EnsembleSpec, table, file, "ensemble", {
        "members": S.at_least(1), "diversity": S.one_of("seed", "bootstrap"), "window": S.at_least(1),
        "temperature": S.positive, "threshold": S.in_interval(0, 1), "agreement": S.in_interval(0, 1)})
    spec = dataclasses.replace(spec, groups=tuple(groups))
    if spec.members + sum(g.members for g in groups) < 2:
        raise S.ConfigError(f"{file}: [ensemble] an ensemble needs at least 2 members in all")
    top = {k: raw[k] for k in ("name", "seeds", "every_epochs") if k in raw}
    top.setdefault("name", Path(str(file)).stem)
    top = S.build(_Top, top, file, "", {"every_epochs": S.at_least(1)})
    S.check_seeds(top.seeds, file)
    return EnsembleExperiment(data=base.data, train=base.train, ensemble=spec, file=str(file),
                              **dataclasses.asdict(top))


# ------------------------------------------------------------------------------------------ training


def _group_configs(experiment: EnsembleExperiment):
    """`[(name, TrainConfig, members)]`: the [train] architecture, then each [[ensemble.groups]] one."""
    cfg = experiment.train
    out = [(cfg.model, cfg, experiment.ensemble.members)] if experiment.ensemble.members > 0 else []
    for i, g in enumerate(experiment.ensemble.groups):
        out.append((f"{g.model}_{i}", cfg.replace(model=g.model, preset=g.preset, model_kwargs=g.model_kwargs),
                    g.members))
    return out


def _train_group(experiment, name, cfg, members, data, seed, out: Path, show_progress: bool):
    """Best params `[M, ...]`, validation-loss histories `[M, epochs]` and seconds of one vmapped group."""
    from trading_jax.checkpoint import CheckpointConfig, Checkpointer
    from trading_jax.ensemble import make_ensemble_trainer
    from trading_jax.logging import TensorBoardWriter
    from trading_jax.loop import fit
    from trading_jax.training.train import make_trainer

    trainer = make_ensemble_trainer(make_trainer(cfg, data), members, diversity=experiment.ensemble.diversity,
                                    bootstrap_key=jax.random.fold_in(jax.random.key(seed), 1))
    where = out / "checkpoints" / f"seed_{seed}" / name
    start = time.perf_counter()
    with Checkpointer(CheckpointConfig(directory=str(where.resolve()), save_every_steps=1, keep_best=1,
                                       best_metric="val_loss", keep_last=1)) as ckpt, \
            TensorBoardWriter(out / "tensorboard" / f"seed_{seed}" / name) as writer:
        result = fit(trainer, jax.random.key(seed), checkpointer=ckpt, every=experiment.every_epochs, writer=writer,
                     show_progress=show_progress, desc=f"{experiment.name} seed {seed} {name} x{members}")
        jax.block_until_ready(result.best_params)
    return result, time.perf_counter() - start


# ---------------------------------------------------------------------------------------- evaluation


def _scores(probs, labels, acted=None, majority: int | None = None) -> dict:
    """accuracy, log loss (mean NLL) and coverage of class probabilities `[n, C]` (on `acted` samples), and
    with `majority` (the training split's majority class) that constant's accuracy on the same samples: a
    filter that acts where the majority class is common would otherwise look skilful."""
    labels = np.asarray(labels)
    acted = np.ones(len(labels), bool) if acted is None else np.asarray(acted, bool)
    n = max(int(acted.sum()), 1)
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    correct = np.argmax(probs, -1) == labels
    out = {"accuracy": float(correct[acted].sum() / n) if acted.any() else float("nan"),
           "log_loss": float(-np.log(p)[acted].sum() / n) if acted.any() else float("nan"),
           "coverage": float(acted.mean())}
    if majority is not None:
        out["majority_accuracy"] = float((labels == majority)[acted].sum() / n) if acted.any() else float("nan")
    return out


def _rolling_probs(member_probs, labels, asset, t, horizon: int, window: int, temperature: float):
    """The "rolling" rule per asset in time order: weights from each member's recent log loss, causal."""
    from trading_jax.ensemble import causal_weights

    out = np.zeros(member_probs.shape[1:], np.float64)
    for a in np.unique(asset):
        idx = np.flatnonzero(asset == a)
        idx = idx[np.argsort(t[idx], kind="stable")]
        p = member_probs[:, idx]
        losses = -np.log(np.clip(p[:, np.arange(len(idx)), labels[idx]], 1e-7, 1.0))  # [M, n]
        w = np.asarray(causal_weights(jnp.asarray(losses.T), delay=horizon, window=window,
                                      temperature=temperature))  # [n, M]: outcome of t used from t + horizon
        out[idx] = np.einsum("nm,mnc->nc", w, p)
    return out


def evaluate_seed(experiment: EnsembleExperiment, member_probs_val, member_probs_test, y_val, test, y_train) -> dict:
    """Scores of every member, the best and mean member, and every combination rule on the test split."""
    from trading_jax.ensemble import (
        agreement_filter, classification_uncertainty, confidence_weighted, member_directions, weighted_average,
    )

    spec = experiment.ensemble
    y = np.asarray(test.y)
    m = member_probs_test.shape[0]
    members = [_scores(member_probs_test[i], y) for i in range(m)]
    val_loss = [_scores(member_probs_val[i], y_val)["log_loss"] for i in range(m)]
    val_acc = np.array([_scores(member_probs_val[i], y_val)["accuracy"] for i in range(m)])
    best = int(np.nanargmin(val_loss))
    rows = {"best_member": members[best],
            "mean_member": {k: float(np.mean([s[k] for s in members])) for k in members[0]}}
    probs = jnp.asarray(member_probs_test)
    equal = np.asarray(weighted_average(probs))
    rows["ensemble_mean"] = _scores(equal, y)
    rows["ensemble_static_val"] = _scores(np.asarray(weighted_average(probs, jnp.asarray(val_acc))), y)
    rows["ensemble_rolling"] = _scores(_rolling_probs(member_probs_test, y, test.asset, test.t, experiment.data.horizon,
                                                      spec.window, spec.temperature), y)
    conf_pred, _ = confidence_weighted(probs)
    rows["ensemble_confidence"] = _scores(np.asarray(conf_pred), y)
    ensemble_conf = np.max(equal, -1)
    majority = int(np.bincount(np.asarray(y_train), minlength=equal.shape[-1]).argmax())
    rows["ensemble_threshold"] = _scores(equal, y, ensemble_conf >= spec.threshold, majority)
    rows["ensemble_agreement"] = _scores(equal, y, np.asarray(agreement_filter(member_directions(probs),
                                                                                  spec.agreement).mask), majority)
    spread = np.asarray(classification_uncertainty(probs).mutual_information)
    calm = spread <= np.median(spread)
    rows["ensemble_mean_certain_half"] = _scores(equal, y, calm, majority)
    rows["ensemble_mean_uncertain_half"] = _scores(equal, y, ~calm, majority)
    rows["baseline_majority_class"] = _scores(np.eye(equal.shape[-1])[np.full(len(y), majority)], y, None, majority)
    return {"rows": rows, "members": members, "best_member_index": best, "val_log_loss": val_loss}


def run(experiment: EnsembleExperiment, out_dir: str | Path, overwrite: bool = False,
        show_progress: bool = True) -> tuple[str, bool]:
    """Train every seed's ensemble, evaluate the rules against the best and mean member (module docstring)."""
    from trading_jax.ensemble import EnsembleGroup, predict_members
    from trading_jax.evaluation.stats import paired_difference, summarize
    from trading_jax.runs.supervised import check_classes
    from trading_jax.training.config import Dataset
    from trading_jax.training.dataset import GENERATED_SOURCES, build_datasets, feature_state

    out = Path(out_dir)
    spec = experiment.data
    with RunFolder(out, overwrite=overwrite) as folder:
        files = [] if spec.source in GENERATED_SOURCES else file_fingerprints([spec.source])
        splits, info = build_datasets(spec, "classification")
        train, val, test = splits["train"], splits["val"], splits["test"]
        groups = _group_configs(experiment)
        for _, cfg, _ in groups:
            check_classes(experiment.file, cfg, cfg.build_model(), train.x)
        record = dataclasses.asdict(experiment)
        record.pop("file")
        record.pop("seeds")  # every seed has its own checkpoints: adding seeds later is fine
        if folder.claim(record, {"files": files, "source": info["source"], "symbols": info["symbols"],
                                 "split": info["split"], "samples": info["samples"]}) == "resume":
            log.info("%s: resuming the run in %s", experiment.name, out)
        folder.write_json(FEATURES, feature_state(spec, "classification", info))
        data = Dataset(jnp.asarray(train.x), jnp.asarray(train.y), jnp.asarray(val.x), jnp.asarray(val.y))
        per_seed = []
        for seed in experiment.seeds:
            probs_val, probs_test, seconds, failed = [], [], {}, None
            for name, cfg, members in groups:
                result, secs = _train_group(experiment, name, cfg, members, data, seed, out, show_progress)
                seconds[name] = secs
                group = EnsembleGroup.from_result(name, cfg, result)  # best params by validation loss
                probs_val.append(np.asarray(predict_members(group, jnp.asarray(val.x))))
                probs_test.append(np.asarray(predict_members(group, jnp.asarray(test.x))))
                if not np.isfinite(probs_test[-1]).all():
                    failed = f"a {name} member predicts NaN or inf"
            scores = None if failed else evaluate_seed(experiment, np.concatenate(probs_val), np.concatenate(probs_test),
                                                       val.y, test, train.y)
            per_seed.append({"seed": seed, "seconds": seconds, "failed": failed, **(scores or {})})
        failures = [s for s in per_seed if s["failed"]]
        ok = [s for s in per_seed if not s["failed"]]
        summary, diffs = {}, {}
        if ok:
            for row in ok[0]["rows"]:
                summary[row] = {k: summarize([s["rows"][row][k] for s in ok], f"{row} {k}") for k in ok[0]["rows"][row]}
            for row in ok[0]["rows"]:
                if row in FULL_COVERAGE_RULES and len(ok) > 1:
                    diffs[row] = {k: paired_difference([s["rows"][row][k] for s in ok],
                                                       [s["rows"]["best_member"][k] for s in ok])
                                  for k in ("accuracy", "log_loss")}
        report = {"experiment": experiment.name, "status": FAILED if failures else "ok",
                  "failures": {s["seed"]: s["failed"] for s in failures}, "data": dataclasses.asdict(spec),
                  "train": dataclasses.asdict(experiment.train), "ensemble": dataclasses.asdict(experiment.ensemble),
                  "info": info, "seeds": per_seed, "summary": summary, "minus_best_member": diffs}
        write_results(out, report, results_table(experiment, info, summary, diffs, failures))
    if failures:
        return (f"{experiment.name}: {FAILED}: " + "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failures)), False
    return (f"{experiment.name}: test accuracy: ensemble {cell(summary['ensemble_mean']['accuracy'])}, best member "
            f"{cell(summary['best_member']['accuracy'])}, mean member {cell(summary['mean_member']['accuracy'])} "
            f"({len(ok)} seeds, mean [95% CI]); full table in {out / 'results.md'}"), True


def results_table(experiment: EnsembleExperiment, info: dict, summary: dict, diffs: dict, failures: list) -> str:
    """Markdown: one row per predictor (accuracy, log loss, coverage), then the differences to the best member."""
    e = experiment.ensemble
    archs = ", ".join(f"{members} x {name}" for name, _, members in _group_configs(experiment))
    lines = [f"# {experiment.name}", "",
             f"Source: {info['source']}; test split bars {info['split']['test']}; {info['samples']['test']:,} test "
             f"samples; members {archs} ({e.diversity}); seeds {list(experiment.seeds)} (one ensemble per seed).",
             "Mean over seeds with a 95% Student-t interval over seeds. Best member: lowest validation loss. "
             f"threshold: acts where the mean ensemble's confidence >= {e.threshold}; agreement: where >= "
             f"{e.agreement:.0%} of members agree; certain/uncertain half: split by the members' disagreement "
             "(mutual information). Accuracy there is on the acted samples only; coverage is the share acted on; the last column "
             "is the accuracy of the training split's majority class on those same samples (what a filter must beat).", ""]
    if failures:
        lines += [f"**{FAILED}**: " + "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failures)
                  + ". Failed seeds are left out of every row.", ""]
    if not summary:
        return "\n".join(lines) + "\n"
    lines += ["| predictor | accuracy | log loss | coverage | majority class on the same samples |",
              "| --- | --- | --- | --- | --- |"]
    for row, m in summary.items():
        lines.append(f"| {row} | {cell(m['accuracy'])} | {cell(m['log_loss'])} | {cell(m['coverage'], interval=False)} "
                     f"| {cell(m.get('majority_accuracy'))} |")
    if diffs:
        lines += ["", "Paired differences over seeds, rule minus best member on every test sample (accuracy: higher is "
                  "better; log loss: lower is better):", "", "| rule | accuracy difference | log loss difference |", "| --- | --- | --- |"]
        for row, m in diffs.items():
            lines.append(f"| {row} | {cell(m['accuracy'])} | {cell(m['log_loss'])} |")
    return "\n".join(lines) + "\n"
