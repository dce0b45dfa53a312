"""Portfolio experiment files (`algorithm = "portfolio"`): seed 000's quantum-inspired portfolio network on a
panel of daily stocks, trained on the seed's multi-objective loss, against classical portfolios on held-out dates.

A file has `name`, `seeds`, `every_epochs` (epochs per checkpoint chunk), and:

    [data]        source (a folder or glob of daily OHLCV files, one symbol each), symbols (optional subset),
                  lookbacks and vol_windows (the features: trailing log returns and volatilities), cov_window
                  (days of the trailing covariance), train / val / test (fractions of the decision dates, in
                  time order), embargo (dates left out between the parts; >= 2, since a date's holding
                  return reads the next two opens), clip (features are clipped at +-clip after scaling)
    [train]       `trading_jax.training.portfolio.PortfolioTrainConfig` (model, preset, epochs, batch_size,
                  learning_rate, weight_decay, max_grad_norm, the four loss weights), with [train.model_kwargs]
                  (`num_assets` follows the data; `max_position` is the cap of every portfolio in the table)
    [evaluation]  cost (proportional, per unit of value traded: 0.001 = 10 bps), baselines (any of
                  "equal_weight", "inverse_volatility", "min_volatility"), period (annualisation: "daily")

The run

1. loads the panel (`load_ohlcv`, missing bars filled flat by `fill_missing_bars`), adjusts opens and closes for
   splits and dividends (`adj = price * adj_close / close`), builds the features of each asset at each date from
   bars <= t (`training.portfolio.asset_features`), the trailing covariance of daily close-to-close returns
   (`trailing_covariance`), and the open-to-open holding return of weights decided at the close of t (filled at
   the open of t+1, held to the open of t+2: `holding_returns`). An asset is listed on date t once it has
   `warm-up + 1` observed bars (warm-up = the longest lookback or window); the others get weight 0;
2. splits the decision dates chronologically into train / validation / test with the embargo, scales every feature
   by its mean and std over the training dates (listed assets only);
3. trains one network per seed (one vmapped population through `trading_jax.loop.fit`: checkpoints, resume,
   TensorBoard), keeping each seed's params of its lowest validation loss;
4. on the test dates, checks the cap (and that the weights sum to 1, zero on unlisted assets) on every date and
   backtests every portfolio with `trading_jax.evaluation.backtest` (the target decided at the close of t is
   filled at the open of t+1 on the adjusted prices, a fee of `cost` per unit of value traded, marked at each
   close): annualised return, volatility, Sharpe ratio and maximum drawdown of the daily net returns
   (`trading_jax.evaluation.performance`, empyrical's definitions, 252 days a year) and the mean daily two-way
   turnover traded (against the drifted weights; the first day's purchase from cash is left out of it, not out of
   the costs).

Baselines on the same dates and costs: equal weight over the listed assets (rebalanced daily), inverse volatility
(`w_i ~ 1 / sigma_i` from the trailing covariance, projected onto the capped simplex), rolling minimum volatility
(`trading_jax.portfolio.mean_variance.min_volatility` of each date's trailing covariance under the same cap), and the
untrained network (each seed's initial params: what training adds). The table gives
the mean over seeds with a 95% Student-t interval over seeds, and the paired difference network minus equal weight
over seeds. The seeds vary the network's initialisation and minibatch order only: the test period is ONE market
path, so the run also gives the mean daily net-return difference (network, averaged over seeds, minus equal
weight) with its t-interval over test days, which carries the market's noise.
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
from trading_jax.runs.folder import RunFolder, file_fingerprints
from trading_jax.runs.results import FAILED, cell, write_results

__all__ = ["PortfolioExperiment", "PortfolioDataSpec", "PortfolioEvaluationSpec", "load", "run", "build_data"]

log = get_logger(__name__)

BASELINES = ("equal_weight", "inverse_volatility", "min_volatility")
METRICS = ("annual_return", "annual_volatility", "sharpe_ratio", "max_drawdown", "turnover", "max_weight")


@dataclasses.dataclass(frozen=True)
class PortfolioDataSpec:
    """The `[data]` table (module docstring)."""

    source: str = "../shared/data/stocks_daily"
    symbols: tuple[str, ...] | None = None
    lookbacks: tuple[int, ...] = (1, 5, 21, 63)
    vol_windows: tuple[int, ...] = (21, 63)
    cov_window: int = 63
    train: float = 0.6
    val: float = 0.2
    test: float = 0.2
    embargo: int = 5
    clip: float = 5.0

    def warmup(self) -> int:
        """Bars an asset needs before its features and covariance are defined."""
        return max(max(self.lookbacks), max(self.vol_windows), self.cov_window)


@dataclasses.dataclass(frozen=True)
class PortfolioEvaluationSpec:
    """The `[evaluation]` table (module docstring)."""

    cost: float = 0.001
    baselines: tuple[str, ...] = ("equal_weight", "inverse_volatility", "min_volatility")
    period: str = "daily"


@dataclasses.dataclass(frozen=True)
class PortfolioExperiment:
    """A portfolio experiment (module docstring)."""

    name: str
    data: PortfolioDataSpec
    train: object
    evaluation: PortfolioEvaluationSpec
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    every_epochs: int = 5
    file: str = "<experiment>"

    algorithm = "portfolio"


@dataclasses.dataclass(frozen=True)
class _Top:
    name: str
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    every_epochs: int = 5


def _windows(what: str, minimum: int):
    def check(values):
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values):
            return f"expected a non-empty list of integers >= {minimum} ({what})"
        return None

    return check


def load(raw: dict, file) -> PortfolioExperiment:
    """A `PortfolioExperiment` from a parsed TOML file (every mistake a one-line `ConfigError`)."""
    from trading_jax.runs.supervised import check_model
    from trading_jax.training.portfolio import PortfolioTrainConfig

    S.check_keys(raw, {"algorithm", "name", "seeds", "every_epochs", "data", "train", "evaluation"}, file, "")
    for table in ("data", "train", "evaluation"):
        if table in raw and not isinstance(raw[table], dict):
            raise S.ConfigError(f"{file}: {table} must be a table ([{table}])")
    data = S.build(PortfolioDataSpec, dict(raw.get("data", {})), file, "data", {
        "lookbacks": _windows("bars of each trailing return", 1),
        "vol_windows": _windows("returns in each volatility window", 2),
        "cov_window": S.at_least(2), "train": S.in_interval(0, 1, low_open=True),
        "val": S.in_interval(0, 1, low_open=True), "test": S.in_interval(0, 1, low_open=True),
        "embargo": lambda x: None if isinstance(x, int) and x >= 2 else
        "expected an integer >= 2 (a date's holding return reads the next two opens)",
        "clip": S.positive})
    if data.train + data.val + data.test > 1 + 1e-9:
        raise S.ConfigError(f"{file}: [data] train + val + test = {data.train + data.val + data.test:g}: the fractions "
                            "must sum to at most 1")
    if not S.source_exists(data.source):
        raise S.ConfigError(f"{file}: [data] source = {data.source!r}: no such file or folder (paths are relative to "
                            "the working directory)")
    train_table = dict(raw.get("train", {}))
    train_table.setdefault("model", "quantum_portfolio")
    if train_table["model"] != "quantum_portfolio":
        raise S.ConfigError(f"{file}: [train] model = {train_table['model']!r}: portfolio runs train "
                            "\"quantum_portfolio\" (the only network that maps asset features to weights)")
    check_model(train_table, file, where="train")
    train_table.setdefault("model_kwargs", {})
    train = S.build(PortfolioTrainConfig, train_table, file, "train", {
        "epochs": S.at_least(1), "batch_size": S.at_least(1), "learning_rate": S.positive,
        "weight_decay": S.non_negative, "max_grad_norm": S.positive, "return_weight": S.non_negative,
        "risk_weight": S.non_negative, "turnover_weight": S.non_negative, "sharpe_weight": S.non_negative},
        convert={"model_kwargs": S.kwargs_pairs})
    if "num_assets" in dict(train.model_kwargs):
        raise S.ConfigError(f"{file}: [train.model_kwargs] num_assets: leave it out (it follows the data's assets)")
    evaluation = S.build(PortfolioEvaluationSpec, dict(raw.get("evaluation", {})), file, "evaluation", {
        "cost": S.in_interval(0, 0.1), "period": S.one_of("daily")})
    unknown = [b for b in evaluation.baselines if b not in BASELINES]
    if unknown:
        raise S.ConfigError(f"{file}: [evaluation] baselines: unknown {unknown}; expected any of {', '.join(BASELINES)}")
    top = {k: raw[k] for k in ("name", "seeds", "every_epochs") if k in raw}
    top.setdefault("name", Path(str(file)).stem)
    top = S.build(_Top, top, file, "", {"every_epochs": S.at_least(1)})
    S.check_seeds(top.seeds, file)
    return PortfolioExperiment(data=data, train=train, evaluation=evaluation, file=str(file), **dataclasses.asdict(top))


# ------------------------------------------------------------------------------------------------ data


def build_data(spec: PortfolioDataSpec, file="<experiment>"):
    """`(PortfolioData, test_index, extras, info)` from the `[data]` table (module docstring, steps 1-2).

    `extras` holds host arrays for the baselines and the backtest: "cov" float64 `[T, N, N]` (0 off the listed
    assets), "mask" `[T, N]`, "adj_open" and "adj_close" float64 `[T, N]`.
    """
    from trading_jax.data import chronological_split, load_ohlcv
    from trading_jax.data.panels import fill_missing_bars
    from trading_jax.training.portfolio import (PortfolioData, asset_features, holding_returns,
                                                trailing_covariance)

    raw = load_ohlcv(spec.source, symbols=list(spec.symbols) if spec.symbols else None)
    bars, observed = fill_missing_bars(raw.bars, raw.valid)
    close = np.asarray(bars.close, np.float64)
    if "adj_close" in raw.extra:
        adj = np.asarray(raw.extra["adj_close"], np.float64)
        factor = np.where(observed & np.isfinite(adj) & (close > 0), adj / close, np.nan)
        # a filled bar keeps the last known factor (its prices are the previous close)
        idx = np.where(np.isfinite(factor), np.arange(len(close))[:, None], 0)
        factor = factor[np.maximum.accumulate(idx, axis=0), np.arange(close.shape[1])[None, :]]
        factor = np.where(np.isfinite(factor), factor, 1.0)
        adjusted = "split- and dividend-adjusted (adj_close / close)"
    else:
        factor = np.ones_like(close)
        adjusted = "not adjusted (the files have no adjusted close)"
    adj_close = close * factor
    adj_open = np.asarray(bars.open, np.float64) * factor
    n_time, n_assets = close.shape
    warmup = spec.warmup()
    listed = np.cumsum(observed, axis=0) >= warmup + 1
    features = asset_features(adj_close, spec.lookbacks, spec.vol_windows)
    daily = np.full_like(adj_close, np.nan)
    daily[1:] = adj_close[1:] / adj_close[:-1] - 1.0
    cov = trailing_covariance(daily, spec.cov_window)
    holding = holding_returns(adj_open)
    listed &= np.isfinite(features).all(-1) & np.isfinite(np.diagonal(cov, axis1=1, axis2=2))
    decision = np.arange(warmup, n_time - 2)
    if len(decision) < 10:
        raise S.ConfigError(f"{file}: [data] {n_time} bars leave {len(decision)} decision dates after the warm-up of "
                            f"{warmup} bars; use shorter lookbacks / windows or more data")
    try:
        split = chronological_split(len(decision), train=spec.train, val=spec.val, test=spec.test, embargo=spec.embargo)
    except ValueError as error:
        raise S.ConfigError(f"{file}: [data] {error}") from None
    train_index, val_index, test_index = (decision[r.slice] for r in (split.train, split.val, split.test))
    if len(val_index) == 0 or len(test_index) == 0:
        raise S.ConfigError(f"{file}: [data] val and test must each hold at least one date")
    # scale each feature by its mean and std over the training dates' listed assets (fitted on train only)
    fit = features[train_index][listed[train_index]]
    mean, std = fit.mean(0), fit.std(0)
    std = np.where(std > 0, std, 1.0)
    scaled = np.clip((features - mean) / std, -spec.clip, spec.clip)
    scaled = np.where(listed[..., None], np.nan_to_num(scaled), 0.0).astype(np.float32)
    returns = np.where(listed & np.isfinite(holding), holding, 0.0)
    both = listed[:, :, None] & listed[:, None, :]
    cov = np.where(both, np.nan_to_num(cov), 0.0)
    data = PortfolioData(scaled, listed, returns.astype(np.float32), cov.astype(np.float32),
                         train_index.astype(np.int32), val_index.astype(np.int32))
    stamps = np.asarray(raw.timestamps).astype("datetime64[D]")
    span = lambda ix: [str(stamps[ix[0]]), str(stamps[ix[-1]])]  # noqa: E731
    info = {"source": str(spec.source), "symbols": list(raw.symbols), "assets": n_assets, "bars": n_time,
            "prices": adjusted, "warmup_bars": warmup, "features": int(features.shape[-1]),
            "train_dates": span(train_index), "val_dates": span(val_index), "test_dates": span(test_index),
            "n_train": int(len(train_index)), "n_val": int(len(val_index)), "n_test": int(len(test_index)),
            "min_listed_test": int(listed[test_index].sum(1).min()),
            "feature_mean": mean.tolist(), "feature_std": std.tolist()}
    extras = {"cov": cov, "mask": listed, "adj_open": adj_open, "adj_close": adj_close}
    return data, test_index.astype(np.int32), extras, info


# ------------------------------------------------------------------------------------------ baselines


def baseline_weights(name: str, cov, mask, cap: float):
    """Weights `[D, N]` of a classical portfolio on each date from the trailing covariance `cov [D, N, N]`.

    "equal_weight": `1 / n_listed` on the listed assets; "inverse_volatility": `1 / sqrt(cov_ii)` normalised, then
    projected onto the capped simplex; "min_volatility": `min_volatility(cov, cap)` on the listed assets. Where
    `cap * n_listed < 1` the cap becomes `1 / n_listed` (equal weight), as for the network.
    """
    from trading_jax.portfolio.projections import project_capped_simplex

    mask = np.asarray(mask, bool)
    n_listed = np.maximum(mask.sum(-1, keepdims=True), 1)
    upper = np.where(mask, np.maximum(cap, 1.0 / n_listed), 0.0).astype(np.float32)
    if name == "equal_weight":
        return np.where(mask, 1.0 / n_listed, 0.0)
    if name == "inverse_volatility":
        vol = np.sqrt(np.maximum(np.diagonal(cov, axis1=-2, axis2=-1), 1e-12))
        raw = np.where(mask, 1.0 / vol, 0.0)
        raw = raw / raw.sum(-1, keepdims=True)
        return np.asarray(jax.jit(project_capped_simplex)(jnp.asarray(raw, jnp.float32), jnp.asarray(upper)), np.float64)
    if name == "min_volatility":
        from trading_jax.portfolio.mean_variance import min_volatility

        # daily covariances are ~1e-4: scale to ~1 (the minimiser does not change)
        scaled = jnp.asarray(np.asarray(cov) * 252.0, jnp.float32)
        # an unlisted asset's row and column are 0: give it unit variance, its cap of 0 keeps it out
        scaled = jnp.where(jnp.asarray(mask)[:, :, None] | jnp.asarray(mask)[:, None, :], scaled,
                           jnp.eye(scaled.shape[-1], dtype=jnp.float32))
        result = jax.jit(jax.vmap(lambda c, u: min_volatility(c, u)))(scaled, jnp.asarray(upper))
        return np.asarray(result.weights, np.float64)
    raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")


def backtest_portfolios(weights, adj_open, adj_close, cost: float, period: str = "daily") -> tuple[list, np.ndarray]:
    """`(metrics per portfolio, net returns [S, D])` of portfolios rebalanced every date (module docstring, step 4).

    Args:
        weights: `[S, D, N]` the targets decided at the close of each of D consecutive dates.
        adj_open, adj_close: `[D + 1, N]` adjusted prices of those dates and the next one (its open fills the
            last target).
        cost: the fee per unit of value traded.
    """
    from trading_jax.data.types import Bars
    from trading_jax.evaluation import performance as P
    from trading_jax.evaluation.backtest import BacktestConfig, backtest

    weights = np.asarray(weights, np.float32)
    targets = np.concatenate([weights, weights[:, -1:]], axis=1)  # the last row is never filled
    prices = Bars(jnp.asarray(adj_open, jnp.float32), None, None, jnp.asarray(adj_close, jnp.float32), None)
    result = backtest(prices, jnp.asarray(targets), BacktestConfig(fee_rate=cost, allow_short=False))
    net = np.asarray(result.net_returns, np.float64)[:, 1:]  # bar 0 holds cash; bars 1..D earn the D targets
    traded = np.asarray(result.turnover, np.float64)[:, 2:]  # bar 1 is the first purchase from cash
    metrics = [{"annual_return": float(P.annual_return(r, period=period)),
                "annual_volatility": float(P.annual_volatility(r, period=period)),
                "sharpe_ratio": float(P.sharpe_ratio(r, period=period)),
                "max_drawdown": float(P.max_drawdown(r)),
                "turnover": float(np.mean(t)), "max_weight": float(np.max(w))}
               for r, t, w in zip(net, traded, weights)]
    return metrics, net


def check_weights(weights, mask, cap: float, what: str, tol: float = 1e-6) -> None:
    """Raise if a portfolio breaks the cap (`max(cap, 1 / n_listed)`), does not sum to 1, or holds an unlisted asset."""
    weights, mask = np.asarray(weights), np.asarray(mask, bool)
    n_listed = np.maximum(mask.sum(-1, keepdims=True), 1)
    limit = np.maximum(cap, 1.0 / n_listed)
    over = weights - limit
    if (over > tol).any():
        d, i = np.unravel_index(np.argmax(over), over.shape)
        raise AssertionError(f"{what}: weight {weights[d, i]:.6g} above the cap {float(limit[d, 0]):.6g} on test date {d}")
    if np.abs(weights.sum(-1) - 1.0).max() > 1e-4:
        raise AssertionError(f"{what}: weights sum to {weights.sum(-1).min():.6g} .. {weights.sum(-1).max():.6g}, not 1")
    if np.abs(np.where(mask, 0.0, weights)).max() > 0:
        raise AssertionError(f"{what}: a weight on an unlisted asset")


# ------------------------------------------------------------------------------------------------ run


def run(experiment: PortfolioExperiment, out_dir: str | Path, overwrite: bool = False,
        show_progress: bool = True) -> tuple[str, bool]:
    """Train every seed, score the network and the baselines on the test dates (module docstring)."""
    from trading_jax.checkpoint import CheckpointConfig, Checkpointer
    from trading_jax.evaluation.stats import paired_difference, summarize
    from trading_jax.logging import TensorBoardWriter
    from trading_jax.loop import fit
    from trading_jax.training.portfolio import make_trainer

    out = Path(out_dir)
    ev = experiment.evaluation
    with RunFolder(out, overwrite=overwrite) as folder:
        data, test_index, extras, info = build_data(experiment.data, experiment.file)
        record = dataclasses.asdict(experiment)
        record.pop("file")
        fingerprint = {"files": file_fingerprints([experiment.data.source]),
                       **{k: info[k] for k in ("assets", "bars", "train_dates", "val_dates", "test_dates", "n_test")}}
        if folder.claim(record, fingerprint) == "resume":
            log.info("%s: resuming the run in %s", experiment.name, out)
        try:
            trainer = make_trainer(experiment.train, data)
        except ValueError as error:
            raise S.ConfigError(f"{experiment.file}: [train] {error}") from None
        model = trainer.model
        cap = float(model.max_position)
        mask_test = np.asarray(data.mask)[test_index]
        if (np.maximum(cap, 1.0 / np.maximum(mask_test.sum(1), 1)) > cap).any():
            log.warning("%s: max_position %g is below 1 / (listed assets) on some test dates: equal weight there",
                        experiment.name, cap)
        seeds = list(experiment.seeds)
        keys = jnp.stack([jax.random.key(s) for s in seeds])
        ckpt = CheckpointConfig(directory=str((out / "checkpoints" / "population").resolve()), save_every_steps=1,
                                keep_best=0, best_metric="val_loss", keep_last=1)
        start = time.perf_counter()
        with Checkpointer(ckpt) as checkpointer, TensorBoardWriter(out / "tensorboard" / "population") as writer:
            result = fit(trainer.population(len(seeds)), keys, checkpointer=checkpointer, every=experiment.every_epochs,
                         writer=writer, show_progress=show_progress, desc=f"{experiment.name} seeds {seeds}")
            jax.block_until_ready(result.params)
        train_seconds = time.perf_counter() - start
        features = jnp.asarray(np.asarray(data.features)[test_index])
        mask = jnp.asarray(mask_test)
        apply = jax.jit(lambda p, x, m: model.apply(p, x, m))
        init = jax.jit(trainer.init_fn)
        # every portfolio's test weights [D, N], each checked against the cap, then ONE backtest of them all
        portfolios = {}
        for i, seed in enumerate(seeds):
            params = jax.tree.map(lambda a, i=i: a[i], result.best_params)
            initial = init(keys[i], trainer.hparams, trainer.args).params
            for name, p in (("network", params), ("network_untrained", initial)):
                portfolios[(name, seed)] = np.asarray(apply(p, features, mask), np.float64)
                check_weights(portfolios[(name, seed)], mask_test, cap, f"{name} seed {seed}")
        cov_test = np.asarray(extras["cov"])[test_index]
        for name in ev.baselines:
            portfolios[(name, None)] = baseline_weights(name, cov_test, mask_test, cap)
            check_weights(portfolios[(name, None)], mask_test, cap, name, tol=1e-5)
        span = slice(int(test_index[0]), int(test_index[-1]) + 2)  # the test dates and the next (the last fill)
        scored, net_returns = backtest_portfolios(np.stack(list(portfolios.values())), extras["adj_open"][span],
                                                  extras["adj_close"][span], ev.cost, ev.period)
        scores = dict(zip(portfolios, scored))
        nets = dict(zip(portfolios, net_returns))
        rows, per_seed, failures = {}, [], []
        for i, seed in enumerate(seeds):
            entry = {"seed": seed, "best_epoch": int(result.best_epoch[i]),
                     "history": {k: np.asarray(v[i]).tolist() for k, v in result.history.items()}}
            for name in ("network", "network_untrained"):
                entry[name] = scores[(name, seed)]
                rows.setdefault(name, []).append(scores[(name, seed)])
            if not all(np.isfinite(v) for v in entry["network"].values()):
                entry["failed"] = "a test metric is NaN or inf"
                failures.append(entry)
            per_seed.append(entry)
            log.info("%s seed %d: test Sharpe %.3g (untrained %.3g), best epoch %d", experiment.name, seed,
                     entry["network"]["sharpe_ratio"], entry["network_untrained"]["sharpe_ratio"], entry["best_epoch"])
        baselines = {name: scores[(name, None)] for name in ev.baselines}
        mean_weight = np.mean([portfolios[("network", seed)].mean(0) for seed in seeds], axis=0)
        info["network_largest_mean_weights"] = {info["symbols"][j]: round(float(mean_weight[j]), 4)
                                                for j in np.argsort(-mean_weight)[:5]}
        n = len(seeds)
        summary = {name: {m: summarize([r[m] for r in rows[name]], f"{name} {m}") for m in METRICS}
                   for name in ("network", "network_untrained")}
        summary.update({name: {m: summarize([v[m]] * n, f"{name} {m}") for m in METRICS} for name, v in baselines.items()})
        diffs = {}
        if "equal_weight" in baselines:
            ew = baselines["equal_weight"]
            for name in ("network", "network_untrained"):
                diffs[name] = {m: paired_difference([r[m] for r in rows[name]], [ew[m]] * n) for m in METRICS}
            daily = np.mean([nets[("network", seed)] for seed in seeds], axis=0) - nets[("equal_weight", None)]
            daily_stats = summarize(daily * 252.0, "daily net-return differences (annualised)")
        else:
            daily_stats = None
        report = {"experiment": experiment.name, "status": FAILED if failures else "ok", "info": info,
                  "train": dataclasses.asdict(experiment.train), "evaluation": dataclasses.asdict(ev), "cap": cap,
                  "train_seconds": train_seconds, "seeds": per_seed, "baselines": baselines, "summary": summary,
                  "paired_differences_vs_equal_weight": diffs, "daily_difference_vs_equal_weight": daily_stats}
        write_results(out, report, results_table(experiment, info, cap, summary, diffs, daily_stats, failures))
    if failures:
        return f"{experiment.name}: {FAILED}: " + "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failures), False
    text = (f"{experiment.name}: test Sharpe after costs: network {cell(summary['network']['sharpe_ratio'])}")
    for name in baselines:
        text += f", {name} {baselines[name]['sharpe_ratio']:.4g}"
    return text + f" ({n} seeds, mean [95% CI]); full table in {out / 'results.md'}", True


def results_table(experiment, info, cap, summary, diffs, daily_stats, failures) -> str:
    """Markdown: rows = portfolios, columns = the test metrics after costs (mean [95% CI over seeds])."""
    cfg, ev = experiment.train, experiment.evaluation
    kwargs = dict(cfg.model_kwargs)
    lines = [f"# {experiment.name}", "",
             f"`{cfg.model}` (preset {cfg.preset}, {kwargs or 'no overrides'}) on {info['assets']} daily stocks "
             f"({info['source']}; prices {info['prices']}), cap {cap:g} per asset, trained {cfg.epochs} epochs on seed "
             f"000's loss (return {cfg.return_weight:g}, risk {cfg.risk_weight:g}, turnover {cfg.turnover_weight:g}, "
             f"Sharpe {cfg.sharpe_weight:g}); seeds {list(experiment.seeds)}.",
             f"Dates: train {info['train_dates'][0]} .. {info['train_dates'][1]} ({info['n_train']}), validation "
             f"{info['val_dates'][0]} .. {info['val_dates'][1]} ({info['n_val']}), test {info['test_dates'][0]} .. "
             f"{info['test_dates'][1]} ({info['n_test']} dates, at least {info['min_listed_test']} assets listed), "
             f"embargo {experiment.data.embargo} dates.",
             f"Backtest (`trading_jax.evaluation.backtest`): weights decided at the close of t are filled at the open "
             f"of t+1 (adjusted prices), {ev.cost * 1e4:g} bps fee per unit traded, marked at each close. Annualised "
             "with 252 days (empyrical's definitions); turnover = mean daily two-way turnover traded (the first "
             "purchase from cash left out). Network rows: mean over seeds with a 95% Student-t interval over "
             "seeds (params of each seed's lowest validation loss); baselines are deterministic. The cap held on "
             "every test date of every portfolio (checked).", ""]
    if failures:
        lines += [f"**{FAILED}**: " + "; ".join(f"seed {s['seed']}: {s['failed']}" for s in failures), ""]
    header = "| portfolio | annual return | annual volatility | Sharpe | max drawdown | turnover / day | max weight |"
    lines += [header, "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, metrics in summary.items():
        interval = name.startswith("network")
        lines.append(f"| {name} | " + " | ".join(cell(metrics[m], interval=interval) for m in METRICS) + " |")
    if diffs:
        lines += ["", "Paired differences over seeds, portfolio minus equal weight (same test dates and costs):", "",
                  "| portfolio | annual return | annual volatility | Sharpe | max drawdown | turnover / day | max weight |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, metrics in diffs.items():
            lines.append(f"| {name} - equal_weight | " + " | ".join(cell(metrics[m]) for m in METRICS) + " |")
    if "network_largest_mean_weights" in info:
        largest = ", ".join(f"{k} {v:.3g}" for k, v in info["network_largest_mean_weights"].items())
        lines += ["", f"The network's largest mean weights over the test dates (mean over seeds): {largest}."]
    if daily_stats is not None:
        lines += ["", f"Mean daily net-return difference, network (mean of the seeds' portfolios) minus equal weight, "
                  f"annualised (x 252), with a 95% t-interval over the {daily_stats['n']} test days (the market's "
                  f"noise, which the seed interval leaves out): {cell(daily_stats)}."]
        lines += ["", verdict(diffs["network"]["sharpe_ratio"], daily_stats)]
    return "\n".join(lines) + "\n"


def verdict(sharpe_difference: dict, daily_difference: dict) -> str:
    """One plain sentence: does the network beat equal weight on the test dates (both intervals above 0)?"""
    if sharpe_difference["ci95_low"] > 0 and daily_difference["ci95_low"] > 0:
        return ("**Finding:** the network beats equal weight on these test dates: the Sharpe difference over seeds and "
                "the daily return difference over test days both have 95% intervals above 0.")
    if sharpe_difference["ci95_high"] < 0 and daily_difference["ci95_high"] < 0:
        return ("**Finding:** the network does worse than equal weight on these test dates: both 95% intervals are "
                "below 0.")
    return ("**Finding:** no evidence that the network beats equal weight: the Sharpe difference over seeds is "
            f"{cell(sharpe_difference)} and the annualised daily return difference over test days "
            f"{cell(daily_difference)}; an interval that includes 0 (or lies below it) is no edge.")
