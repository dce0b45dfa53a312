"""Training a portfolio network on seed 000's multi-objective loss: `make_train(config, data) -> train(key)`.

**Timing** (DESIGN.md market-data rules). The weights `w_t` are decided at the close of date t from bars
`<= t` (features and covariance), filled at the open of t+1 and held to the open of t+2, so they earn the
open-to-open return `r_t = O_{t+2} / O_{t+1} - 1` (`holding_returns`). The previous decision `w_{t-1}`
has drifted with its own holding return when `w_t` is traded: `h_t = drift_weights(w_{t-1}, r_{t-1})`, and
the turnover of date t is `|w_t - h_t|_1`.

**Loss** (`multi_objective_loss`, the seed's four objectives with its weights 1.0, 0.5, 0.2, 0.8), per date:

    L_t = - c_ret  w_t . r_t                               maximise the return
          + c_risk w_t' S_t w_t                            minimise the risk
          + c_turn |w_t - h_t|_1                           minimise the turnover
          - c_shp  (w_t . mu_t) / sqrt(w_t' S_t w_t + eps)  maximise the Sharpe ratio

averaged over the dates of a minibatch. During training the return and Sharpe terms read the REALISED
holding returns (`mu_t = r_t`: the return the weights actually earned next, which is what the network must
learn to anticipate), and `S_t` is the sample covariance (ddof 1) of the daily close-to-close returns of the
`cov_window` days ending at t (`trailing_covariance`: past data only). The seed's coefficients are in the
units of the returns: on daily data the Sharpe term (about |r| / sigma ~ 1 per date) and the turnover term
dominate, the return (~0.01) and risk (~1e-4) terms barely count; rescale them in `LossCoefficients` if
you mean otherwise.

**Training** (`make_trainer` / `make_train`): AdamW (with global-norm clipping) on minibatches of
`batch_size` training dates, a fresh permutation of the training dates every epoch from the key, a fixed
number of epochs (no early stopping); each minibatch runs the network on its dates and on the dates before
them (for `h_t`; the gradient flows through both). After every epoch the loss on all validation dates is
recorded, and `best_params` are the params after the epoch with the lowest validation loss (chosen on
validation, never on test). An update whose loss or gradient is not finite is skipped and counted. One
jittable function, `lax.scan` over epochs and minibatches, vmappable over keys and `PortfolioHyperparams`
(learning rate, weight decay, loss coefficients); `make_trainer` exposes it as a
`trading_jax.loop.FunctionTrainer` for `fit` (checkpoints, exact resume, populations of seeds).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from trading_jax.loop import FunctionTrainer
from trading_jax.training.steps import select_tree
from trading_jax.training.train import check_finite

__all__ = [
    "LossCoefficients", "PortfolioHyperparams", "PortfolioTrainConfig", "PortfolioData", "PortfolioTrainResult",
    "PortfolioTrainState", "multi_objective_loss", "drift_weights", "holding_returns",
    "asset_features", "trailing_covariance", "make_trainer", "make_train", "build_model", "hyperparams",
]


# ------------------------------------------------------------------------------------------- the loss


@struct.dataclass
class LossCoefficients:
    """The weights of the four objectives (defaults: the seed's). Float scalars, or `[M]` arrays under `vmap`."""

    return_weight: Any = 1.0
    risk_weight: Any = 0.5
    turnover_weight: Any = 0.2
    sharpe_weight: Any = 0.8


def multi_objective_loss(weights, prev_weights, mu, cov, realized, coeffs: LossCoefficients, eps: float = 1e-12):
    """Seed 000's multi-objective portfolio loss, averaged over the dates (leading axes).

    Per date, with `w = weights`, `h = prev_weights`, `r = realized`, `S = cov`:

        R = w . r,   V = w' S w,   T = sum_i |w_i - h_i|,   Sh = (w . mu) / sqrt(V + eps)
        L = - c_ret R + c_risk V + c_turn T - c_shp Sh

    Args:
        weights: `[..., N]` the portfolio.
        prev_weights: `[..., N]` the portfolio held just before trading (e.g. `drift_weights` of the last one).
        mu: `[..., N]` the returns of the Sharpe numerator (training passes the realised returns, `mu = realized`).
        cov: `[..., N, N]` the covariance of the risk term and the Sharpe denominator (past data only).
        realized: `[..., N]` the returns the weights earn (the return term).
        coeffs: `LossCoefficients`.
        eps: keeps the Sharpe denominator positive.

    Returns:
        `(loss, terms)`: the scalar mean of L, and `{"return", "risk", "turnover", "sharpe"}`, the means of
        R, V, T and Sh.
    """
    w = jnp.asarray(weights, jnp.float32)
    ret = jnp.sum(w * realized, axis=-1)
    risk = jnp.einsum("...i,...ij,...j->...", w, cov, w)
    turnover = jnp.sum(jnp.abs(w - prev_weights), axis=-1)
    sharpe = jnp.sum(w * mu, axis=-1) / jnp.sqrt(jnp.maximum(risk, 0.0) + eps)
    loss = (-coeffs.return_weight * ret + coeffs.risk_weight * risk + coeffs.turnover_weight * turnover
            - coeffs.sharpe_weight * sharpe)
    terms = {"return": jnp.mean(ret), "risk": jnp.mean(risk), "turnover": jnp.mean(turnover),
             "sharpe": jnp.mean(sharpe)}
    return jnp.mean(loss), terms


def drift_weights(weights, returns):
    """The weights a portfolio drifts to over one holding period: `h_i = w_i (1 + r_i) / (1 + w . r)`.

    A zero portfolio (cash) stays zero. Args `[..., N]`; returns `[..., N]`.
    """
    grown = weights * (1.0 + returns)
    return grown / (1.0 + jnp.sum(weights * returns, axis=-1, keepdims=True))


# ----------------------------------------------------------------------------------- data preparation


def holding_returns(adj_open) -> np.ndarray:
    """`r_t = O_{t+2} / O_{t+1} - 1`: the open-to-open return of the weights decided at the close of t.

    Args:
        adj_open: `[T, N]` split- and dividend-adjusted opens (`open * adj_close / close`).

    Returns:
        float64 `[T, N]`; the last two rows are NaN (their holding period is not in the data).
    """
    o = np.asarray(adj_open, np.float64)
    out = np.full(o.shape, np.nan)
    out[:-2] = o[2:] / o[1:-1] - 1.0
    return out


def asset_features(close, lookbacks: Sequence[int] = (1, 5, 21, 63), vol_windows: Sequence[int] = (21, 63)):
    """Per-asset features at each date from bars `<= t` only.

    Feature k < len(lookbacks): the trailing log return `ln(C_t / C_{t-L_k})`; then the rolling volatility
    (std, ddof 1) of the daily log returns over each window in `vol_windows`
    (`trading_jax.features.indicators.log_returns` and `rolling_volatility`).

    Args:
        close: `[T, N]` adjusted closes.
        lookbacks, vol_windows: window lengths in bars.

    Returns:
        float32 `[T, N, F]`, `F = len(lookbacks) + len(vol_windows)`; NaN during each feature's warm-up.
    """
    from trading_jax.features.indicators import log_returns, rolling_volatility

    close = jnp.asarray(close, jnp.float32)
    columns = [log_returns(close, int(k)) for k in lookbacks] + [rolling_volatility(close, int(w)) for w in vol_windows]
    return np.asarray(jnp.stack(columns, axis=-1))


def trailing_covariance(daily_returns, window: int) -> np.ndarray:
    """`S_t`: the sample covariance (ddof 1) of the `window` daily returns ending at t (rows `t - window + 1 .. t`).

    Args:
        daily_returns: `[T, N]` returns known at each date (e.g. close-to-close, row t = C_t / C_{t-1} - 1).
        window: rows per estimate (>= 2).

    Returns:
        float64 `[T, N, N]`; NaN for `t < window - 1` and wherever the window holds a NaN.
    """
    if int(window) < 2:
        raise ValueError(f"trailing_covariance: window must be >= 2; got {window}")
    x = np.asarray(daily_returns, np.float64)
    t, n = x.shape
    out = np.full((t, n, n), np.nan)
    if t < window:
        return out
    views = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)  # [T - w + 1, N, w]
    centred = views - views.mean(axis=-1, keepdims=True)
    out[window - 1:] = np.matmul(centred, np.swapaxes(centred, -1, -2)) / (window - 1)
    return out


class PortfolioData(NamedTuple):
    """The arrays a portfolio network trains on, on one time axis of T dates.

    Attributes:
        features: float32 `[T, N, F]` features at each date (bars <= t), finite (0 where not listed).
        mask: bool `[T, N]` the assets listed at each date.
        returns: float32 `[T, N]` the holding return of weights decided at t (0 where not listed or unknown).
        cov: float32 `[T, N, N]` the trailing covariance at t (finite; 0 in rows/columns of unlisted assets).
        train_index: int32 `[n_train]` the training dates (each >= 1: date t - 1 gives the previous weights).
        val_index: int32 `[n_val]` the validation dates (>= 1).
    """

    features: Any
    mask: Any
    returns: Any
    cov: Any
    train_index: Any
    val_index: Any


def check_data(data: PortfolioData) -> None:
    """One-line `ValueError`s for data the trainer cannot use (shapes, non-finite values, indices)."""
    f = np.shape(data.features)
    if len(f) != 3:
        raise ValueError(f"PortfolioData.features must be [T, N, F]; got shape {f}")
    t, n, _ = f
    for name, want in (("mask", (t, n)), ("returns", (t, n)), ("cov", (t, n, n))):
        if np.shape(getattr(data, name)) != want:
            raise ValueError(f"PortfolioData.{name} must have shape {want} (from features {f}); got "
                             f"{np.shape(getattr(data, name))}")
    for name in ("features", "returns", "cov"):
        value = getattr(data, name)
        if not isinstance(value, jax.core.Tracer):
            check_finite(f"PortfolioData.{name}", value)
    for name in ("train_index", "val_index"):
        index = np.asarray(getattr(data, name))
        if index.ndim != 1 or index.size == 0:
            raise ValueError(f"PortfolioData.{name} must be a non-empty 1-D array of dates; got shape {index.shape}")
        if index.min() < 1 or index.max() >= t:
            raise ValueError(f"PortfolioData.{name} must index dates 1 .. {t - 1} (date t - 1 gives the previous "
                             f"weights); got {int(index.min())} .. {int(index.max())}")


# ------------------------------------------------------------------------------------------ training


@dataclasses.dataclass(frozen=True)
class PortfolioTrainConfig:
    """How to train a portfolio network (module docstring).

    Attributes:
        model: a registered model taking `(features [B, N, F], mask [B, N])` to weights `[B, N]`.
        preset: the model's preset (None: its defaults).
        model_kwargs: `(name, value)` pairs over the preset (`num_assets` defaults to the data's N).
        epochs: passes over the training dates.
        batch_size: dates per minibatch (the remainder of each epoch's permutation is dropped).
        learning_rate, weight_decay: AdamW's.
        max_grad_norm: global-norm clipping before AdamW.
        return_weight, risk_weight, turnover_weight, sharpe_weight: `LossCoefficients` (the seed's by default).
    """

    model: str = "quantum_portfolio"
    preset: str | None = None
    model_kwargs: tuple = ()
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    return_weight: float = 1.0
    risk_weight: float = 0.5
    turnover_weight: float = 0.2
    sharpe_weight: float = 0.8

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        for name in ("learning_rate", "max_grad_norm"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite number > 0; got {getattr(self, name)!r}")
        for name in ("weight_decay", "return_weight", "risk_weight", "turnover_weight", "sharpe_weight"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {getattr(self, name)!r}")


@struct.dataclass
class PortfolioHyperparams:
    """The vmappable hyperparameters: float32 scalars (or `[M]` arrays for a population)."""

    learning_rate: Any
    weight_decay: Any
    loss: LossCoefficients


def hyperparams(config: PortfolioTrainConfig) -> PortfolioHyperparams:
    """The config's hyperparameters as float32 scalars."""
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return PortfolioHyperparams(f32(config.learning_rate), f32(config.weight_decay), LossCoefficients(
        f32(config.return_weight), f32(config.risk_weight), f32(config.turnover_weight), f32(config.sharpe_weight)))


class PortfolioTrainResult(NamedTuple):
    """What `train(key)` returns.

    Attributes:
        params: the params after the last epoch.
        best_params: the params after the epoch with the lowest finite validation loss (initial params if none).
        history: `[epochs]` arrays: "train_loss" (mean over the applied updates), "val_loss", "val_return",
            "val_risk", "val_turnover", "val_sharpe" (the validation terms), "skipped_steps".
        best_epoch: int32, the epoch of `best_params` (-1 if no validation loss was finite).
    """

    params: Any
    best_params: Any
    history: dict
    best_epoch: Any


class PortfolioTrainState(NamedTuple):
    """The whole training state between epochs (checkpoint it to resume exactly)."""

    params: Any
    opt_state: Any
    key: Any
    epoch: Any
    best_params: Any
    best_val: Any
    best_epoch: Any
    history: dict
    hparams: Any


HISTORY = ("train_loss", "val_loss", "val_return", "val_risk", "val_turnover", "val_sharpe", "skipped_steps")


def build_model(config: PortfolioTrainConfig, num_assets: int):
    """The config's model with `num_assets` assets (ValueError if `model_kwargs` names another count)."""
    from trading_jax.models import create

    kwargs = dict(config.model_kwargs)
    if kwargs.setdefault("num_assets", num_assets) != num_assets:
        raise ValueError(f"model_kwargs num_assets={kwargs['num_assets']} but the data has {num_assets} assets; "
                         "leave num_assets out (it follows the data)")
    return create(config.model, preset=config.preset, **kwargs)


def _optimizer(max_grad_norm: float, learning_rate, weight_decay):
    """`clip_by_global_norm -> adamw`, with the rate and decay held in the optimiser state (so they may be traced,
    e.g. a vmapped grid): `update` reads them from the state that `init` made."""
    return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                       optax.inject_hyperparams(optax.adamw)(learning_rate=learning_rate, weight_decay=weight_decay))


def make_trainer(config: PortfolioTrainConfig, data: PortfolioData) -> FunctionTrainer:
    """A `trading_jax.loop.FunctionTrainer` of the portfolio training (module docstring): `init(key)`,
    `run(state, n_epochs)`, `result(state)`, `train(key)`, `population(M)`; `fit` drives it.

    Raises:
        ValueError: bad data (`check_data`), or fewer training dates than `batch_size`.
    """
    check_data(data)
    t, n, _ = np.shape(data.features)
    n_train = int(np.shape(data.train_index)[0])
    steps = n_train // config.batch_size
    if steps == 0:
        raise ValueError(f"{n_train} training dates is fewer than batch_size={config.batch_size}: lower batch_size")
    model = build_model(config, n)
    optimizer = _optimizer(config.max_grad_norm, config.learning_rate, config.weight_decay)
    batch = config.batch_size
    args = PortfolioData(*(jnp.asarray(a) for a in data))

    def weights_and_prev(params, d: PortfolioData, idx):
        both = jnp.concatenate([idx - 1, idx])
        w = model.apply(params, d.features[both], d.mask[both])
        w_prev, w_now = w[: idx.shape[0]], w[idx.shape[0]:]
        return w_now, drift_weights(w_prev, d.returns[idx - 1])

    def loss_fn(params, d: PortfolioData, idx, coeffs):
        w, prev = weights_and_prev(params, d, idx)
        r = d.returns[idx]
        return multi_objective_loss(w, prev, r, d.cov[idx], r, coeffs)

    def init_fn(key, hp: PortfolioHyperparams, d: PortfolioData):
        k_init, k_epochs = jax.random.split(key)
        params = model.init(k_init, d.features[:1], d.mask[:1])
        opt_state = _optimizer(config.max_grad_norm, jnp.asarray(hp.learning_rate, jnp.float32),
                               jnp.asarray(hp.weight_decay, jnp.float32)).init(params)
        history = {name: jnp.full((config.epochs,), jnp.nan, jnp.float32) for name in HISTORY}
        return PortfolioTrainState(params, opt_state, k_epochs, jnp.asarray(0, jnp.int32), params,
                                   jnp.asarray(jnp.inf, jnp.float32), jnp.asarray(-1, jnp.int32), history, hp)

    def epoch_fn(state: PortfolioTrainState, d: PortfolioData):
        key = jax.random.fold_in(state.key, state.epoch)
        order = jax.random.permutation(key, d.train_index)[: steps * batch].reshape(steps, batch)
        coeffs = state.hparams.loss

        def step(carry, idx):
            params, opt_state = carry
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, d, idx, coeffs)
            ok = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
            grads = jax.tree.map(lambda g: jnp.where(ok, g, 0.0), grads)
            updates, new_opt = optimizer.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            return (select_tree(ok, new_params, params), select_tree(ok, new_opt, opt_state)), (loss, ok)

        (params, opt_state), (losses, ok) = jax.lax.scan(step, (state.params, state.opt_state), order)
        applied = jnp.sum(ok)
        train_loss = jnp.where(applied > 0, jnp.sum(jnp.where(ok, losses, 0.0)) / jnp.maximum(applied, 1), jnp.nan)
        val_loss, terms = loss_fn(params, d, d.val_index, coeffs)
        improved = jnp.isfinite(val_loss) & (val_loss < state.best_val)
        record = {"train_loss": train_loss, "val_loss": val_loss, "val_return": terms["return"],
                  "val_risk": terms["risk"], "val_turnover": terms["turnover"], "val_sharpe": terms["sharpe"],
                  "skipped_steps": (steps - applied).astype(jnp.float32)}
        history = {k: v.at[state.epoch].set(record[k].astype(jnp.float32)) for k, v in state.history.items()}
        new = PortfolioTrainState(
            params, opt_state, state.key, state.epoch + 1, select_tree(improved, params, state.best_params),
            jnp.where(improved, val_loss, state.best_val).astype(jnp.float32),
            jnp.where(improved, state.epoch, state.best_epoch), history, state.hparams)
        return new, record

    def run_fn(state, d, n: int):
        return jax.lax.scan(lambda s, _: epoch_fn(s, d), state, None, length=n)

    def result_fn(state: PortfolioTrainState) -> PortfolioTrainResult:
        return PortfolioTrainResult(state.params, state.best_params, state.history, state.best_epoch)

    return FunctionTrainer(init_fn=init_fn, run_fn=run_fn, result_fn=result_fn, counter_fn=lambda s: s.epoch,
                           args=args, hparams=hyperparams(config), total=config.epochs, unit="epoch",
                           samples_per_unit=steps * batch, display=("train_loss", "val_loss"), config=config,
                           model=model, extras={"steps_per_epoch": steps})


def make_train(config: PortfolioTrainConfig, data: PortfolioData):
    """`train(key, hparams=None) -> PortfolioTrainResult`: the whole run as one pure function.

    Jittable and vmappable over keys (and `PortfolioHyperparams`): `jax.jit(jax.vmap(train))(keys)` trains
    one network per key in one program. The same key gives the same params, bit for bit on CPU.
    """
    trainer = make_trainer(config, data)
    default = trainer.hparams

    def train(key, hparams=None):
        hp = default if hparams is None else hparams
        state = trainer.init_fn(key, hp, trainer.args)
        state, _ = trainer.run_fn(state, trainer.args, config.epochs)
        return trainer.result_fn(state)

    train.model = trainer.model
    return train
