"""Walk-forward backtest experiments (`algorithm = "backtest"`; `trading-jax backtest CONFIG`).

Forecasting models and simple rules are compared on the same bars, the same walk-forward folds and the same
costs. A file has `name`, `seeds`, and:

    [walk_forward]  folds (default 3), test (bars per test block, or a fraction of the bars, default 0.1),
                    train (bars of each fold's training window, validation included: a rolling window; default
                    every bar before the fold: expanding), val (fraction of each fold's training bars kept for early stopping and the ridge penalty,
                    default 0.15), embargo (bars between train, val and test; default the label horizon)
    [costs]         `trading_jax.evaluation.backtest.BacktestConfig` fields: fee_rate, half_spread, slippage,
                    fill ("next_open", the default, or "next_close")
    [strategy]      rule (how forecasts become weights: "sign", "rank", "long_only" or "proportional"; see
                    `signals_to_weights`), momentum_lookback (bars, default 20), ridge_alphas
    [[datasets]]    a `DataSpec` (source, symbols, repair, window, horizon, stride, synthetic_* ...) plus name,
                    period ("daily", "hourly", ... for annualisation), last_bars (keep only the last N bars),
                    placebo (true for a market where nothing is predictable, e.g. source = "gbm")
    [[models]]      a `TrainConfig` table (model, preset, task, epochs, ...) plus name
    ensemble        true: add the mean forecast of the models ("ensemble") per seed (default true)
    report          true: write `report/DATASET/` plots and tables of seed 0 (default true)
    [claims]        figures to test (e.g. the design documents' direction_accuracy = 0.68, sharpe = 2.4): the table
                    ends with each claim against the best model and the best baseline of every real dataset
    interpret       the model whose seed-0 network of the last fold the report explains (default the first):
                    feature importance by permutation (the drop in -MSE when a feature's window column is
                    shuffled across test samples) and by integrated gradients (mean |IG| per feature), and an
                    attention heatmap when the model has attention maps (`trading_jax.evaluation.interpret`)

For every dataset and fold, the features are fitted on that fold's training bars only, each model trains on
them (all seeds in one vmapped population), and every predictor forecasts the fold's test bars:

* the models and their ensemble (the forecast of the `[data] horizon`-bar log return; a multitask model's
  "price" head);
* `ridge`: ridge regression on the same inputs (the decision bar's features and the window means), its
  penalty chosen on the validation bars (gradient-free, deterministic);
* `momentum`: the log return of the last `momentum_lookback` bars (deterministic);
* `buy_and_hold`: equal weight in every asset, always long (no forecast: its IC is n/a).

Scores on the pooled test samples of all folds: direction accuracy (sign of the forecast against the sign of
the realised return; zero returns left out) and IC (Pearson). Each predictor's forecasts at bar t become
target weights by `[strategy] rule`, filled at bar t+1 with the costs of `[costs]`
(`trading_jax.evaluation.backtest`), one bar at a time through the test blocks (flat outside them): Sharpe
(annualised, ddof 1), annual return and max drawdown of the net returns. Models are reported as the mean over
seeds with a 95% Student-t interval; the deterministic rows are single numbers. A `placebo` dataset must come
out at chance: its rows say whether the accuracy and IC are inside the 95% band of a forecast unrelated to the
target (`chance_band`: the hit rate the marginals give, with Newey-West standard errors, because overlapping
windows and labels make runs of hits; Bonferroni-corrected so that all the rows' accuracy and IC checks together
hold at 95%), and the summary line says LEAK? (and the command fails) if one is not.
Each table also states the sampling half-width of a Sharpe ratio over its test bars, which seeds do not show.

Interrupted runs resume: each (dataset, fold, model) caches its test forecasts in `cache/` of the run folder.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.logging import get_logger
from trading_jax.runs import schema as S
from trading_jax.runs.folder import RunFolder, file_fingerprints
from trading_jax.runs.results import FAILED, cell, write_results
from trading_jax.training.config import TrainConfig
from trading_jax.training.dataset import DataSpec

__all__ = ["BacktestExperiment", "DatasetSpec", "WalkForwardSpec", "load", "run"]

log = get_logger(__name__)

BASELINES = ("ridge", "momentum", "buy_and_hold")
CLAIMED = ("direction_accuracy", "ic", "sharpe", "annual_return", "max_drawdown")
CACHE = "cache"
REPORT = "report"


@dataclasses.dataclass(frozen=True)
class WalkForwardSpec:
    """Walk-forward folds: `folds` test blocks at the end of the bars, each `test` bars (a fraction when < 1);
    each fold trains on every bar before its block (expanding) or on the `train` bars before it (rolling: every
    fold has the same shapes, so its training program compiles once), its last `val` fraction kept for
    validation."""

    folds: int = 3
    test: float = 0.1
    train: int | None = None
    val: float = 0.15
    embargo: int | None = None


@dataclasses.dataclass(frozen=True)
class StrategySpec:
    """How forecasts become weights, and the rule baselines' settings."""

    rule: str = "sign"
    momentum_lookback: int = 20
    ridge_alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)


@dataclasses.dataclass(frozen=True)
class CostSpec:
    fee_rate: float = 0.0005
    half_spread: float = 0.0005
    slippage: float = 0.0
    fill: str = "next_open"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    data: DataSpec
    period: str = "daily"
    last_bars: int | None = None
    placebo: bool = False


@dataclasses.dataclass(frozen=True)
class BacktestExperiment:
    name: str
    seeds: tuple[int, ...]
    datasets: tuple[DatasetSpec, ...]
    models: tuple[tuple[str, TrainConfig], ...]
    walk_forward: WalkForwardSpec
    costs: CostSpec
    strategy: StrategySpec
    ensemble: bool
    report: bool
    interpret: str | None
    claims: tuple[tuple[str, float], ...]
    file: str
    algorithm: str = "backtest"


PERIODS = ("daily", "hourly", "minute", "weekly", "monthly")


@dataclasses.dataclass(frozen=True)
class _Top:
    name: str
    seeds: tuple[int, ...] = (0, 1, 2)


def load(raw: dict, file) -> BacktestExperiment:
    """A `BacktestExperiment` from a parsed TOML file (every mistake a one-line `ConfigError`)."""
    from trading_jax.evaluation.backtest import SIGNAL_RULES
    from trading_jax.runs.supervised import DATA_CHECKS, TRAIN_CHECKS, check_task_outputs, check_model
    from trading_jax.training.dataset import GENERATED_SOURCES

    S.check_keys(raw, {"algorithm", "name", "seeds", "walk_forward", "costs", "strategy", "datasets", "models",
                       "ensemble", "report", "interpret", "claims"}, file, "")
    for table in ("walk_forward", "costs", "strategy"):
        if table in raw and not isinstance(raw[table], dict):
            raise S.ConfigError(f"{file}: {table} must be a table ([{table}])")
    top = S.build(_Top, {"name": Path(str(file)).stem, **{k: raw[k] for k in ("name", "seeds") if k in raw}},
                  file, "")
    name, seeds = top.name, list(top.seeds)
    S.check_seeds(seeds, file)
    walk = S.build(WalkForwardSpec, raw.get("walk_forward", {}), file, "walk_forward",
                   {"folds": S.at_least(1), "test": S.positive, "train": S.at_least(10), "val": S.in_interval(0, 1, low_open=True,
                                                                                    high_open=True),
                    "embargo": S.at_least(0)})
    costs = S.build(CostSpec, raw.get("costs", {}), file, "costs",
                    {"fee_rate": S.in_interval(0, 1, high_open=True), "half_spread": S.in_interval(0, 1, high_open=True),
                     "slippage": S.in_interval(0, 1, high_open=True), "fill": S.one_of("next_open", "next_close")})
    strategy = S.build(StrategySpec, raw.get("strategy", {}), file, "strategy",
                       {"rule": S.one_of(*SIGNAL_RULES), "momentum_lookback": S.at_least(1)})
    datasets = raw.get("datasets")
    if not isinstance(datasets, list) or not datasets or not all(isinstance(d, dict) for d in datasets):
        raise S.ConfigError(f"{file}: needs at least one [[datasets]] table (source, window, horizon, ...)")
    specs, names = [], set()
    for i, table in enumerate(datasets):
        where = f"datasets[{i}]"
        table = dict(table)
        extra = {k: table.pop(k) for k in ("name", "period", "last_bars", "placebo") if k in table}
        if "name" not in extra or not isinstance(extra["name"], str) or extra["name"] in names:
            raise S.ConfigError(f"{file}: [{where}] needs a unique name = \"...\"")
        names.add(extra["name"])
        data = S.build(DataSpec, table, file, where, DATA_CHECKS)
        if data.source not in GENERATED_SOURCES and not S.source_exists(data.source):
            raise S.ConfigError(f"{file}: [{where}] source = {data.source!r}: no such file or folder (paths are "
                                "relative to the working directory; \"synthetic\" and \"gbm\" are built in)")
        spec = S.build(DatasetSpec, {**extra, "data": data}, file, where,
                       {"period": S.one_of(*PERIODS), "last_bars": S.at_least(100)})
        specs.append(spec)
    models = raw.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, dict) for m in models):
        raise S.ConfigError(f"{file}: needs at least one [[models]] table (name, model, preset, task, ...)")
    built, model_names = [], set(BASELINES) | {"ensemble"}
    for i, table in enumerate(models):
        where = f"models[{i}]"
        table = dict(table)
        label = table.pop("name", None)
        if not isinstance(label, str) or label in model_names:
            raise S.ConfigError(f"{file}: [{where}] needs a unique name = \"...\" (not one of "
                                f"{', '.join(sorted(model_names))})")
        model_names.add(label)
        check_model(table, file, where)
        table.setdefault("model_kwargs", {})
        config = S.build(TrainConfig, table, file, where, TRAIN_CHECKS, convert={"model_kwargs": S.kwargs_pairs})
        if config.task == "classification":
            raise S.ConfigError(f"{file}: [{where}] task = \"classification\": a backtest compares return "
                                "forecasts; use \"regression\" or \"multitask\"")
        for spec in specs:
            check_task_outputs(config, spec.data, file)
        built.append((label, config))
    for flag in ("ensemble", "report"):
        if not isinstance(raw.get(flag, True), bool):
            raise S.ConfigError(f"{file}: {flag} = {raw[flag]!r}: expected true or false")
    interpret = raw.get("interpret", built[0][0])
    if interpret not in [label for label, _ in built]:
        raise S.ConfigError(f"{file}: interpret = {interpret!r}: expected one of the [[models]] names "
                            f"({', '.join(label for label, _ in built)})")
    claims = raw.get("claims", {})
    if not isinstance(claims, dict):
        raise S.ConfigError(f"{file}: claims must be a table ([claims])")
    S.check_keys(claims, CLAIMED, file, "claims")
    for key, value in claims.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise S.ConfigError(f"{file}: [claims] {key} = {value!r}: expected a finite number")
    return BacktestExperiment(name=name, seeds=tuple(seeds), datasets=tuple(specs), models=tuple(built),
                              walk_forward=walk, costs=costs, strategy=strategy, ensemble=raw.get("ensemble", True),
                              report=raw.get("report", True), interpret=interpret,
                              claims=tuple((k, float(v)) for k, v in claims.items()), file=str(file))


# ------------------------------------------------------------------------------------------- folds


def fold_splits(n_time: int, walk: WalkForwardSpec, horizon: int):
    """The `Split`s of the walk-forward folds: train / val / test bar ranges (expanding, or rolling with
    `walk.train`)."""
    from trading_jax.data.splits import IndexRange, Split, walk_forward_folds

    embargo = horizon if walk.embargo is None else walk.embargo
    test = int(round(walk.test * n_time)) if walk.test < 1 else int(walk.test)
    folds = walk_forward_folds(n_time, walk.folds, test, train_size=walk.train, embargo=embargo)
    out = []
    for fold in folds:
        n_train = fold.train.stop - fold.train.start
        n_val = max(int(walk.val * n_train), 1)
        train = IndexRange(fold.train.start, fold.train.stop - n_val - embargo)
        if train.stop - train.start < 2:
            raise ValueError(f"a walk-forward fold has {train.stop - train.start} training bars: use fewer folds or "
                             "smaller test blocks")
        out.append(Split(train=train, val=IndexRange(fold.train.stop - n_val, fold.train.stop), test=fold.test))
    return out


def _panel(spec: DatasetSpec):
    from trading_jax.data.types import Bars
    from trading_jax.training.dataset import load_panel

    bars, timestamps, symbols, observed, source = load_panel(spec.data)
    if spec.last_bars is not None and bars.close.shape[0] > spec.last_bars:
        keep = slice(bars.close.shape[0] - spec.last_bars, None)
        bars = Bars(*(np.asarray(f)[keep] for f in bars))
        timestamps = None if timestamps is None else np.asarray(timestamps)[keep]
        observed = np.asarray(observed)[keep]
        source = f"{source} (last {spec.last_bars} bars)"
    return bars, timestamps, symbols, observed, source


# -------------------------------------------------------------------------------------- predictors


def _forecast(task: str, outputs) -> np.ndarray:
    head = outputs["prediction"] if task == "regression" else outputs["price"]
    return np.asarray(head, np.float32).reshape(len(head), -1)[:, 0]


def _train_model(config: TrainConfig, splits, seeds, show_progress: bool, desc: str, explain: bool = False) -> dict:
    """`{"forecast": [n_seeds, n_test]}` test forecasts of `config` trained on the fold (one vmapped population),
    with `explain` also the seed-0 network's explanation (`explain_model`)."""
    from trading_jax.loop import fit
    from trading_jax.training.config import Dataset
    from trading_jax.training.train import make_trainer

    tree = lambda y: jax.tree.map(jnp.asarray, y)  # noqa: E731
    data = Dataset(jnp.asarray(splits["train"].x), tree(splits["train"].y), jnp.asarray(splits["val"].x),
                   tree(splits["val"].y))
    trainer = make_trainer(config, data)
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    result = fit(trainer.population(len(seeds)), keys, show_progress=show_progress, desc=desc)
    model = config.build_model()
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
    x_test = splits["test"].x
    out = []
    for i in range(len(seeds)):
        params = jax.tree.map(lambda a, i=i: a[i], result.best_params)
        chunks = [apply(params, jnp.asarray(x_test[j:j + 1024])) for j in range(0, len(x_test), 1024)]
        outputs = jax.tree.map(lambda *c: np.concatenate([np.asarray(v) for v in c]), *chunks)
        out.append(_forecast(config.task, outputs))
    result_dict = {"forecast": np.stack(out)}
    if explain:
        first = jax.tree.map(lambda a: a[0], result.best_params)
        target = splits["test"].y if config.task == "regression" else splits["test"].y["price"]
        result_dict.update(explain_model(model, config.task, first, x_test, np.asarray(target, np.float32)))
    return result_dict


EXPLAINED_SAMPLES = 256


def explain_model(model, task: str, params, x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Why a trained network forecasts what it does, on (at most `EXPLAINED_SAMPLES` evenly spaced) test windows.

    Returns `{"ig": [F] mean |integrated gradients| per feature (zero baseline, 32 steps), "permutation_mean",
    "permutation_std": [F] the drop in -MSE of the (scaled) return forecast when a feature's window column is
    shuffled across the windows (5 repeats), and "attention": [T, T] the mean attention map (layers, heads and
    windows) when the model can return one}`.
    """
    from trading_jax.evaluation.interpret import feature_importance_ig, permutation_importance
    from trading_jax.evaluation.report import attention_map

    pick = np.unique(np.linspace(0, len(x) - 1, min(EXPLAINED_SAMPLES, len(x))).astype(int))
    xs, ys = jnp.asarray(x[pick]), jnp.asarray(y[pick])

    def forecast(xx, p):
        outputs = model.apply({"params": p}, xx, train=False)
        head = outputs["prediction"] if task == "regression" else outputs["price"]
        return head.reshape(xx.shape[0], -1)[:, 0]

    def negative_mse(xx, yy, p):
        return -jnp.mean((forecast(xx, p) - yy) ** 2)

    ig = feature_importance_ig(forecast, xs, steps=32, args=(params,))
    mean, std = permutation_importance(negative_mse, xs, ys, jax.random.key(seed), n_repeats=5, args=(params,))
    out = {"ig": np.asarray(ig), "permutation_mean": np.asarray(mean), "permutation_std": np.asarray(std)}
    if "return_attention" in {f.name for f in dataclasses.fields(type(model))}:
        attention = model.clone(return_attention=True).apply({"params": params}, xs[:64], train=False)["attention"]
        out["attention"] = np.asarray(attention_map(attention))
    return out


def _ridge_inputs(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x[:, -1, :], x.mean(axis=1)], axis=1)


def ridge_forecast(splits, task: str, alphas) -> tuple[np.ndarray, float]:
    """Test forecasts of ridge regression on the decision bar's features and the window means, its penalty the
    one of `alphas` with the lowest validation MSE; `(forecasts [n_test], alpha)`."""
    from scipy.linalg import LinAlgWarning
    from sklearn.linear_model import Ridge

    target = lambda s: np.asarray(s.y if task == "regression" else s.y["price"], np.float64)  # noqa: E731
    x_tr, x_va, x_te = (_ridge_inputs(splits[k].x) for k in ("train", "val", "test"))
    best = None
    for alpha in alphas:
        with warnings.catch_warnings():  # small penalties on collinear features (price ratios over nested windows)
            warnings.simplefilter("ignore", LinAlgWarning)  # are ill-conditioned: validation rejects them anyway
            model = Ridge(alpha=alpha).fit(x_tr, target(splits["train"]))
        mse = float(np.mean((model.predict(x_va) - target(splits["val"])) ** 2))
        if best is None or mse < best[0]:
            best = (mse, alpha, model)
    return best[2].predict(x_te).astype(np.float32), float(best[1])


def momentum_signal(close: np.ndarray, lookback: int) -> np.ndarray:
    """`[T, N]` log return of the last `lookback` bars, `log(c_t / c_{t-lookback})` (NaN before `lookback`)."""
    logc = np.log(np.where(close > 0, close, np.nan))
    out = np.full_like(logc, np.nan)
    out[lookback:] = logc[lookback:] - logc[:-lookback]
    return out


# ----------------------------------------------------------------------------------------- scores


def _long_run_variance(x: np.ndarray, lag: int) -> float:
    """Newey-West (Bartlett kernel) long-run variance of a series: `g_0 + 2 sum_{k=1}^{L} (1 - k/(L+1)) g_k`,
    `g_k` the lag-k autocovariance (`sum_t x_t x_{t+k} / n` of the centred series); at least `g_0 / n`-sized."""
    x = np.asarray(x, np.float64) - np.mean(x)
    n = x.size
    total = float(x @ x) / n
    for k in range(1, min(lag, n - 1) + 1):
        total += 2.0 * (1.0 - k / (lag + 1.0)) * float(x[:-k] @ x[k:]) / n
    return max(total, 0.0)


def chance_band(pred: np.ndarray, target: np.ndarray, t: np.ndarray, asset: np.ndarray, lag: int,
                z: float = 1.96) -> dict[str, float]:
    """What a forecast unrelated to the target scores, and the half-widths (`z` standard errors) around it.

    Samples of one asset are consecutive bars whose windows and labels overlap, so they are not independent:
    a persistent forecast (a 20-bar momentum) and a 2-bar label make runs of hits. The standard error of the
    pooled hit rate and IC is therefore the Newey-West (HAC) one, per asset in time order with `lag` bars
    (the overlap: window or lookback plus horizon), assets taken as independent (true of the GBM placebo):

        hit rate under independence  p0 = P(f > 0) P(y > 0) + P(f <= 0) P(y < 0)   (marginals of the samples)
        se(hit rate) = sqrt(sum_a n_a LRV_a(h - p0)) / n,   se(IC) = sqrt(sum_a n_a LRV_a(z_f z_y)) / n

    with `z` the pooled standardised forecast and target. A binomial band `sqrt(0.25 / n)` is several times too
    narrow here and flags noise as a leak.

    Returns:
        `{"accuracy_null", "accuracy_half_width", "ic_half_width"}` (`z` standard errors).
    """
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    ok = np.isfinite(pred) & np.isfinite(target) & (target != 0)
    pred, target, t, asset = pred[ok], target[ok], np.asarray(t)[ok], np.asarray(asset)[ok]
    n = max(pred.size, 1)
    up_f, up_y = float(np.mean(pred > 0)), float(np.mean(target > 0))
    p0 = up_f * up_y + (1 - up_f) * (1 - up_y)
    hits = (np.sign(pred) == np.sign(target)).astype(np.float64) - p0
    zf = (pred - pred.mean()) / (pred.std() or 1.0)
    zy = (target - target.mean()) / (target.std() or 1.0)
    var_hit = var_ic = 0.0
    for a in np.unique(asset):
        order = np.argsort(t[asset == a], kind="stable")
        h = hits[asset == a][order]
        u = (zf * zy)[asset == a][order]
        var_hit += h.size * _long_run_variance(h, lag)
        var_ic += u.size * _long_run_variance(u, lag)
    return {"accuracy_null": p0, "accuracy_half_width": z * math.sqrt(var_hit) / n,
            "ic_half_width": z * math.sqrt(var_ic) / n}


def _direction_ic(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    ok = np.isfinite(pred) & np.isfinite(target)
    pred, target = pred[ok], target[ok]
    moved = target != 0
    accuracy = float(np.mean(np.sign(pred[moved]) == np.sign(target[moved]))) if moved.any() else float("nan")
    ic = float(np.corrcoef(pred, target)[0, 1]) if pred.size > 2 and pred.std() > 0 and target.std() > 0 \
        else float("nan")
    return {"direction_accuracy": accuracy, "ic": ic, "n": int(moved.sum())}


def _strategy(signals: np.ndarray, in_test: np.ndarray, bars, experiment: BacktestExperiment, period: str):
    """Net returns `[T_test]` of trading `signals [T, N]` (NaN: no forecast) over the test bars, and its metrics."""
    from trading_jax.evaluation import performance as P
    from trading_jax.evaluation.backtest import BacktestConfig, backtest, signals_to_weights

    weights = np.asarray(signals_to_weights(jnp.asarray(np.where(np.isfinite(signals), signals, np.nan)),
                                            experiment.strategy.rule))
    weights = np.where(in_test[:, None], np.nan_to_num(weights), 0.0)
    c = experiment.costs
    config = BacktestConfig(fee_rate=c.fee_rate, half_spread=c.half_spread, slippage=c.slippage, fill=c.fill)
    result = backtest(bars, jnp.asarray(weights, jnp.float32), config)
    # the return of bar t comes from the target decided at t-1: score the bars after each decision bar
    held = np.concatenate([[False], in_test[:-1]])
    net = np.asarray(result.net_returns, np.float64)[held]
    return net, {"sharpe": float(P.sharpe_ratio(net, period=period)),
                 "annual_return": float(P.annual_return(net, period=period)),
                 "max_drawdown": float(P.max_drawdown(net)),
                 "turnover": float(np.mean(np.asarray(result.turnover)[held]))}


def _periods_per_year(period: str) -> float:
    from trading_jax.evaluation.performance import annualization_factor

    return float(annualization_factor(period))


def _grid(values: np.ndarray, t: np.ndarray, asset: np.ndarray, shape) -> np.ndarray:
    out = np.full(shape, np.nan, np.float64)
    out[t, asset] = values
    return out


# --------------------------------------------------------------------------------------------- run


def _cache(folder: Path, key: str, compute):
    path = folder / f"{key}.npz"
    if path.exists():
        with np.load(path) as saved:
            return {k: saved[k] for k in saved.files}
    value = compute()
    tmp = folder / f"{key}.tmp.npz"
    np.savez(tmp, **value)
    tmp.replace(path)
    return value


def _config_record(experiment: BacktestExperiment) -> dict:
    record = dataclasses.asdict(experiment)
    record.pop("file")
    return record


def run(experiment: BacktestExperiment, out_dir: str | Path, overwrite: bool = False,
        show_progress: bool = True) -> tuple[str, bool]:
    """Run every dataset's walk-forward comparison (module docstring); `(summary line, ok)`."""
    from trading_jax.training.dataset import GENERATED_SOURCES

    out = Path(out_dir)
    seeds = list(experiment.seeds)
    with RunFolder(out, overwrite=overwrite) as folder:
        files = file_fingerprints([d.data.source for d in experiment.datasets if d.data.source not in GENERATED_SOURCES])
        if folder.claim(_config_record(experiment), {"files": files}) == "resume":
            log.info("%s: resuming the run in %s (cached forecasts are reused)", experiment.name, out)
        cache = out / CACHE
        cache.mkdir(exist_ok=True)
        results = {}
        for spec in experiment.datasets:
            start = time.perf_counter()
            results[spec.name] = _run_dataset(experiment, spec, cache, seeds, show_progress, out)
            log.info("%s: %s done in %.0f s", experiment.name, spec.name, time.perf_counter() - start)
        report = {"experiment": experiment.name, "seeds": seeds, "costs": dataclasses.asdict(experiment.costs),
                  "walk_forward": dataclasses.asdict(experiment.walk_forward),
                  "strategy": dataclasses.asdict(experiment.strategy), "datasets": results}
        write_results(out, report, results_markdown(experiment, results))
    leaks = [f"{d}: {row}" for d, r in results.items() if r["placebo"] for row, ok in r["at_chance"].items() if not ok]
    failed = [f"{d}: {row}" for d, r in results.items() for row, scores in r["rows"].items()
              if any(isinstance(v, dict) and v.get("nonfinite") for v in scores.values())]
    head = []
    for d, r in results.items():
        finite = lambda row, r=r: r["rows"][row]["sharpe"]["mean"] if math.isfinite(  # noqa: E731
            r["rows"][row]["sharpe"]["mean"]) else -math.inf
        best = max((row for row in r["rows"] if row not in BASELINES and row != "ensemble"), key=finite, default=None)
        if best is not None:
            head.append(f"{d}: best model {best} Sharpe {cell(r['rows'][best]['sharpe'], 3)}, IC "
                        f"{cell(r['rows'][best]['ic'], 3)}")
    verdict = ("placebo at chance" if not leaks else f"LEAK? placebo rows off chance: {'; '.join(leaks)}") \
        if any(r["placebo"] for r in results.values()) else "no placebo dataset"
    if failed:
        verdict += f"; {FAILED} rows (non-finite forecasts or scores): {', '.join(failed)}"
    return (f"{experiment.name}: {'; '.join(head)}; {verdict}; full table in {out / 'results.md'}"), not (leaks or failed)


def _run_dataset(experiment, spec: DatasetSpec, cache: Path, seeds, show_progress, out: Path) -> dict:
    from trading_jax.evaluation.report import write_report
    from trading_jax.evaluation.stats import summarize
    from trading_jax.runs.supervised import indicator_columns
    from trading_jax.training.dataset import build_datasets

    panel = _panel(spec)
    bars, timestamps, symbols, observed, source = panel
    n_time, n_assets = np.asarray(bars.close).shape
    try:
        splits_of = fold_splits(n_time, experiment.walk_forward, spec.data.horizon)
    except ValueError as error:
        raise S.ConfigError(f"{experiment.file}: [walk_forward] does not fit dataset {spec.name!r} ({n_time} bars): "
                            f"{error}") from None
    tasks = {"regression"} | {cfg.task for _, cfg in experiment.models}
    momentum = momentum_signal(np.asarray(bars.close, np.float64), experiment.strategy.momentum_lookback)
    preds = {name: [] for name, _ in experiment.models}
    explanation = None
    base = {"ridge": [], "momentum": [], "buy_and_hold": []}
    targets, ts, assets, alphas = [], [], [], []
    for f, split in enumerate(splits_of):
        fold = {task: build_datasets(spec.data, task, split=split, panel=panel) for task in tasks}
        reg, info = fold["regression"]
        scale = info["target_scale"]
        test = reg["test"]
        targets.append(np.asarray(test.y) * scale)
        ts.append(test.t)
        assets.append(test.asset)
        ridge = _cache(cache, f"{spec.name}_fold{f}_ridge",
                       lambda: dict(zip(("forecast", "alpha"), map(np.asarray, ridge_forecast(
                           reg, "regression", experiment.strategy.ridge_alphas)))))
        base["ridge"].append(ridge["forecast"])
        alphas.append(float(ridge["alpha"]))
        base["momentum"].append(momentum[test.t, test.asset])
        base["buy_and_hold"].append(np.ones(len(test.t), np.float32))
        for name, cfg in experiment.models:
            splits, minfo = fold[cfg.task]
            if not np.array_equal(splits["test"].t, test.t) or not np.array_equal(splits["test"].asset, test.asset):
                raise ValueError(f"{spec.name} fold {f}: model {name}'s test samples differ from the regression "
                                 "samples (a multitask label reads further ahead): use a horizon >= 2")
            cfg = indicator_columns(experiment.file, cfg, minfo["features"])
            explain = experiment.report and name == experiment.interpret and f == len(splits_of) - 1
            key = f"{spec.name}_fold{f}_{name}_seeds{'_'.join(map(str, seeds))}" + ("_explained" if explain else "")
            trained = _cache(cache, key, lambda cfg=cfg, splits=splits, name=name, explain=explain: _train_model(
                cfg, splits, seeds, show_progress, f"{spec.name} fold {f} {name}", explain))
            preds[name].append(trained["forecast"])
            if explain:
                explanation = {"features": list(minfo["features"]), **trained}
        log.info("%s fold %d/%d: train bars %s, test bars %s, %d test samples", spec.name, f + 1, len(splits_of),
                 [split.train.start, split.train.stop], [split.test.start, split.test.stop], len(test.t))
    y, t, a = np.concatenate(targets), np.concatenate(ts), np.concatenate(assets)
    in_test = np.zeros(n_time, bool)
    for split in splits_of:
        in_test[split.test.start:split.test.stop] = True
    per_model = {name: np.concatenate(p, axis=1) for name, p in preds.items()}  # [seeds, n]
    if experiment.ensemble and len(per_model) > 1:
        per_model["ensemble"] = np.mean(np.stack(list(per_model.values())), axis=0)
    rows, returns, first = {}, {}, {}
    for name, forecast in per_model.items():
        first[name] = forecast[0]
        seed_rows = []
        for i, _ in enumerate(seeds):
            scores = _direction_ic(forecast[i], y)
            net, strat = _strategy(_grid(forecast[i], t, a, (n_time, n_assets)), in_test, bars, experiment,
                                   spec.period)
            if not np.isfinite(forecast[i]).all():  # a diverged seed: every score FAILED, never a partial one
                log.warning("%s: %s seed %d gave non-finite forecasts; its row is FAILED", spec.name, name, seeds[i])
                scores = {k: (float("nan") if k != "n" else v) for k, v in scores.items()}
                strat = {k: float("nan") for k in strat}
            seed_rows.append({**scores, **strat})
            if i == 0 and np.isfinite(forecast[i]).all():
                returns[name] = net
        rows[name] = {k: summarize([r[k] for r in seed_rows], f"{name} {k}") for k in seed_rows[0] if k != "n"}
        rows[name]["n"] = seed_rows[0]["n"]
    for name, p in base.items():
        forecast = np.concatenate(p)
        first[name] = forecast
        scores = _direction_ic(forecast, y)
        if name == "buy_and_hold":  # a constant forecast has no IC
            scores.pop("ic")
        net, strat = _strategy(_grid(forecast, t, a, (n_time, n_assets)), in_test, bars, experiment, spec.period)
        returns[name] = net
        rows[name] = {k: summarize([v], f"{name} {k}") for k, v in {**scores, **strat}.items() if k != "n"}
        rows[name]["n"] = scores["n"]
    at_chance, bands = {}, {}
    if spec.placebo:
        from scipy.stats import norm

        lag = max(spec.data.window, experiment.strategy.momentum_lookback) + spec.data.horizon
        checked = [name for name in rows if name != "buy_and_hold" and np.isfinite(first[name]).all()]  # FAILED: n/a
        z = float(norm.ppf(1 - 0.025 / (2 * len(checked))))  # Bonferroni: 95% for all accuracy and IC checks together
        for name in checked:
            row = rows[name]
            band = bands[name] = chance_band(first[name], y, t, a, lag, z)  # seed 0's samples (the seed mean varies less)
            acc, ic = row["direction_accuracy"]["mean"], row["ic"]["mean"]  # NaN (a failed model) is not at chance
            at_chance[name] = bool(abs(acc - band["accuracy_null"]) <= band["accuracy_half_width"]
                                   and abs(ic) <= band["ic_half_width"])
    sharpe_half_width = 1.96 * math.sqrt(_periods_per_year(spec.period) / max(int(in_test.sum()) - 1, 1))
    report_paths = None
    if experiment.report:
        times = None if timestamps is None else np.asarray(timestamps)[np.concatenate([[False], in_test[:-1]])]
        names = list(returns)
        importance, attention = None, None
        explained = explanation is not None and all(
            k in explanation and np.isfinite(explanation[k]).all() for k in ("ig", "permutation_mean"))
        if explanation is not None and not explained:
            log.warning("%s: %s's explanation is not finite (a diverged network?); the report leaves it out",
                        spec.name, experiment.interpret)
        if explained:
            features = explanation["features"]
            importance = {"permutation": (features, explanation["permutation_mean"], explanation["permutation_std"]),
                          "integrated_gradients": (features, explanation["ig"])}
            attention = explanation.get("attention")
            attention = attention if attention is not None and np.isfinite(attention).all() else None
        report = write_report(out / REPORT / spec.name, np.stack([returns[k] for k in names]), names,
                              period=spec.period, times=times, importance=importance, attention=attention,
                              title=f"{spec.name}, seed {seeds[0]} ({experiment.interpret}: last fold)")
        report_paths = {k: str(v) for k, v in report["paths"].items()}
    return {"source": source, "symbols": len(symbols), "period": spec.period, "placebo": spec.placebo,
            "bars": n_time, "folds": [{k: [getattr(s, k).start, getattr(s, k).stop] for k in ("train", "val", "test")}
                                      for s in splits_of],
            "test_samples": int(len(y)), "ridge_alphas": alphas, "rows": rows, "at_chance": at_chance,
            "chance_bands": bands, "sharpe_sampling_half_width": sharpe_half_width, "test_bars": int(in_test.sum()),
            "report": report_paths}


def results_markdown(experiment: BacktestExperiment, results: dict) -> str:
    """The results table of every dataset (rows: predictors; columns: the scores, mean [95% CI] over seeds)."""
    c = experiment.costs
    lines = [f"# {experiment.name}", "",
             f"Walk-forward: {experiment.walk_forward.folds} folds (expanding train, last "
             f"{experiment.walk_forward.val:g} of it for validation); seeds {list(experiment.seeds)}; costs: fee "
             f"{c.fee_rate * 1e4:g} bp + half spread {c.half_spread * 1e4:g} bp per trade, filled at the "
             f"{c.fill.replace('_', ' ')} after the decision; weights by rule \"{experiment.strategy.rule}\".",
             "Models: mean over seeds [95% Student-t interval]; ridge, momentum and buy-and-hold are deterministic "
             "(one number). Direction accuracy and IC on the pooled test samples; Sharpe (annualised), annual "
             "return and max drawdown of the strategy's net returns over the test blocks.", ""]
    metrics = ("direction_accuracy", "ic", "sharpe", "annual_return", "max_drawdown", "turnover")
    for name, r in results.items():
        lines += [f"## {name}{' (placebo)' if r['placebo'] else ''}", "",
                  f"{r['source']}: {r['symbols']} assets, {r['bars']:,} bars, {r['test_samples']:,} test samples; "
                  f"test blocks {[f['test'] for f in r['folds']]}; ridge penalty per fold {r['ridge_alphas']}. "
                  f"Over {r['test_bars']:,} test bars a Sharpe ratio has a sampling 95% half-width of about "
                  f"+-{r['sharpe_sampling_half_width']:.2f} (1.96 sqrt(periods per year / bars)), which the seed "
                  "intervals leave out.", "",
                  "| predictor | " + " | ".join(metrics) + (" | at chance |" if r["placebo"] else " |"),
                  "| --- |" + " --- |" * (len(metrics) + bool(r["placebo"]))]
        for row, scores in r["rows"].items():
            cells = [cell(scores[m], 3) if m in scores else "n/a" for m in metrics]
            if r["placebo"]:
                verdict, band = r["at_chance"].get(row), r["chance_bands"].get(row)
                cells.append("n/a" if verdict is None else
                             f"{'yes' if verdict else f'**NO ({FAILED}: a leak?)**'} (accuracy "
                             f"{band['accuracy_null']:.3f} +- {band['accuracy_half_width']:.3f}, IC 0 +- "
                             f"{band['ic_half_width']:.3f})")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines + claims_section(experiment, results)) + "\n"


def claims_section(experiment: BacktestExperiment, results: dict) -> list[str]:
    """Markdown lines: each `[claims]` figure against the best model (by its mean over seeds) and the best
    baseline of every non-placebo dataset, and whether the model's seed interval reaches the claim."""
    if not experiment.claims:
        return []
    lines = ["## The claims", "",
             "The best model by its mean over seeds, against the claim and the best baseline. \"Inside\" means only "
             "that seed-to-seed variation does not rule the claim out; the test period's own sampling error (the "
             "Sharpe half-width above) is wider still.", "",
             "| claim | dataset | best model [95% CI over seeds] | best baseline | claim inside the model's interval | "
             "model mean minus best baseline |",
             "| --- | --- | --- | --- | --- | --- |"]
    for metric, claimed in experiment.claims:
        for name, r in results.items():
            if r["placebo"]:
                continue
            rows = r["rows"]
            models = [k for k in rows if k not in BASELINES and metric in rows[k]]
            baselines = [k for k in BASELINES if metric in rows.get(k, {})]
            if not models:
                continue
            best = max(models, key=lambda k: rows[k][metric]["mean"])
            base = max(baselines, key=lambda k: rows[k][metric]["mean"]) if baselines else None
            high = rows[best][metric].get("ci95_high", float("nan"))
            low = rows[best][metric].get("ci95_low", float("nan"))
            inside = "yes" if math.isfinite(high) and low <= claimed <= high else "no"
            gap = f"{rows[best][metric]['mean'] - rows[base][metric]['mean']:+.3g}" if base else "n/a"
            lines.append(f"| {metric} {claimed:g} | {name} | {best}: {cell(rows[best][metric], 3)} | "
                         + (f"{base}: {cell(rows[base][metric], 3)}" if base else "n/a") + f" | {inside} | {gap} |")
    return lines + [""]
