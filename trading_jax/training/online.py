"""Online adaptation: walk-forward fine-tuning of a trained model on the most recent labelled samples.

    out = walk_forward(config, trained.params, x, y, times, horizon=4, every=24, window=256,
                       key=jax.random.key(0))
    out.predictions        # the model's outputs for every sample at or after the first refit, [N, ...]
    out.records            # one dict per refit time: which samples it trained on, losses, param change

Seed 002's "Online Learning": every `every` bars, fine-tune the live model on recent data (lr 1e-4, a
few epochs), then keep predicting with it.

**Samples and times.** Sample i is the input window `x[i]` ending at bar `times[i]` (it reads bars
`<= times[i]`) and its label `y[i]`, which reads bars `times[i] + 1 .. times[i] + horizon` (`horizon`
may be an `[N]` array of per-sample label lengths). Samples are ordered by time.

**Schedule.** Refit i happens at the start of bar `T_i = start + i * every` (`i = 0, 1, ...` while
`T_i <= times[-1]`), before bar `T_i` is seen. It fine-tunes the current params on the `window` most
recent samples whose labels are complete by then,

    known(T_i) = { j : times[j] + horizon_j < T_i }      (the label's last bar is before T_i),

and the new params predict the samples with `T_i <= times[j] < T_{i+1}`; the next refit starts from
them (the model rolls forward). With fewer than `window` known samples the refit is skipped (params
unchanged; recorded). Samples before `start` are not predicted (NaN, `predicted=False`). By default
`start` is the first bar at which `window` labels are known.

**No look-ahead.** Refit i reads `x[j], y[j]` of its known samples only, and the predictions for bar
`t` use params from refits at `T_i <= t`: replacing every input after bar T and every label ending at or
after T by NaN changes no prediction for a sample before T and no refit at or before T, bit for bit
(tested).

**One compilation.** The fine-tuning is `trading_jax.training.train.make_train(config', data)` with
`config' = config.replace(learning_rate=1e-4, epochs=..., batch_size=..., warmup_steps=0,
patience=None)`, built once on the first window, then `train(fold_in(key, i), data=recent,
params=current)` at every refit: every window has exactly `window` samples, so nothing recompiles.
The last epoch's params are kept (the validation set of each refit is the window's most recent
`val_size` samples, for the record only). Each window is checked for NaN/inf first (ValueError naming
the refit bar). Predictions are one jitted `apply` on fixed-size batches.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from trading_jax.logging import get_logger
from trading_jax.training.config import Dataset, TrainConfig
from trading_jax.training.steps import cast_floating, compute_dtype

__all__ = ["OnlineResult", "refit_times", "known_samples", "finetune_config", "task_outputs", "walk_forward"]

log = get_logger(__name__)


class OnlineResult(NamedTuple):
    """What `walk_forward` returns.

    Attributes:
        predictions: the model's task outputs (`task_outputs`) for every sample, leaves `[N, ...]`
            float32, NaN for samples that were not predicted.
        predicted: `[N]` bool, True for samples at or after the first refit time.
        refit_index: `[N]` int32, the refit whose params predicted each sample (-1: none).
        records: one dict per refit (see `walk_forward`).
        params: the params after the last refit.
    """

    predictions: Any
    predicted: np.ndarray
    refit_index: np.ndarray
    records: list
    params: Any


def _label_end(times: np.ndarray, horizon) -> np.ndarray:
    h = np.asarray(horizon)
    if h.ndim not in (0, 1) or (h.ndim == 1 and h.shape != times.shape):
        raise ValueError(f"horizon must be an int or an [N] array; got shape {h.shape} for {times.shape[0]} samples")
    if not np.issubdtype(h.dtype, np.integer) or np.any(h < 1):
        raise ValueError("horizon must be integers >= 1 (a label reads at least the next bar)")
    return times + h


def _times(times) -> np.ndarray:
    t = np.asarray(times)
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"times must be an [N] integer array of bar indices; got {t.dtype} {t.shape}")
    if t.size and np.any(np.diff(t) < 0):
        raise ValueError("times must be in non-decreasing order (samples ordered by time)")
    return t.astype(np.int64)


def known_samples(times, horizon, at: int, window: int) -> np.ndarray | None:
    """The indices (ascending) of the `window` most recent samples whose labels are known at the start of
    bar `at` (`times + horizon < at`), or None when fewer than `window` are."""
    times = _times(times)
    known = np.flatnonzero(_label_end(times, horizon) < int(at))
    if known.size < int(window):
        return None
    return known[-int(window):]


def refit_times(times, horizon, every: int, window: int, start: int | None = None) -> np.ndarray:
    """The refit bars `T_i = start + i * every` for `T_i <= times[-1]` (module docstring).

    `start` defaults to the first bar at which `window` labels are known: one past the `window`-th
    smallest label end `times[j] + horizon_j`.
    """
    times = _times(times)
    every, window = int(every), int(window)
    if every < 1 or window < 1:
        raise ValueError(f"every and window must be >= 1; got {every}, {window}")
    if times.size == 0:
        return np.zeros((0,), np.int64)
    if start is None:
        ends = np.sort(_label_end(times, horizon))
        if ends.size < window:
            raise ValueError(f"only {ends.size} samples: fewer than one window of {window}")
        start = int(ends[window - 1]) + 1
    if int(start) > int(times[-1]):
        return np.zeros((0,), np.int64)
    return np.arange(int(start), int(times[-1]) + 1, every, dtype=np.int64)


def finetune_config(config: TrainConfig, learning_rate: float = 1e-4, epochs: int = 5,
                    batch_size: int | None = None, window: int | None = None) -> TrainConfig:
    """The fine-tuning config: `config` with the given learning rate and epochs (seed 002: 1e-4, 5), no
    warm-up, no early stopping, and a batch that fits the window (`min(batch_size or config's, window)`)."""
    batch = int(batch_size or config.batch_size)
    if window is not None:
        batch = min(batch, int(window))
    return config.replace(learning_rate=float(learning_rate), epochs=int(epochs), batch_size=batch,
                          warmup_steps=0, patience=None)


def task_outputs(config: TrainConfig, outputs: dict) -> Any:
    """The outputs a prediction keeps: regression "prediction", classification "logits", multitask
    the dict of "price", "direction_logits", "volatility", "volume" (those the model gives)."""
    if config.task == "regression":
        return outputs["prediction"]
    if config.task == "classification":
        return outputs["logits"]
    return {k: outputs[k] for k in ("price", "direction_logits", "volatility", "volume") if k in outputs}


def _take(tree, idx):
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[idx]), tree)


def _relative_change(new, old) -> float:
    num = float(optax.tree.norm(jax.tree.map(lambda a, b: a - b, new, old)))
    den = float(optax.tree.norm(old))
    return num / den if den > 0 else num


def _check_window(data: Dataset, at: int) -> None:
    """Refuse a fine-tuning window with NaN/inf inputs or labels (host-side, naming the refit bar)."""
    from trading_jax.training.train import check_finite

    try:
        check_finite("x", data.x_train)
        for path, leaf in jax.tree_util.tree_leaves_with_path(data.y_train):
            check_finite("y" + jax.tree_util.keystr(path), leaf)
    except ValueError as err:
        raise ValueError(f"online refit at bar {at}: {err}") from None


@functools.lru_cache(maxsize=16)
def _predictor(config: TrainConfig):
    """`predict(params, x [B, L, F]) -> task outputs` jitted, one per config (reused across calls)."""
    model = config.build_model()
    dtype = compute_dtype(config)

    @jax.jit
    def predict(p, xb):
        out = model.apply({"params": cast_floating(p, dtype)}, xb.astype(dtype), train=False)
        return jax.tree.map(lambda a: a.astype(jnp.float32), task_outputs(config, out))

    return predict


_FINETUNERS: dict = {}


def _finetuner(config: TrainConfig, data: Dataset):
    """`make_train(config, data)`, reused by later calls with the same config and data shapes (so a
    second walk-forward over the same sizes does not recompile)."""
    from trading_jax.training.train import make_train

    signature = (config, jax.tree.structure(data),
                 tuple((np.shape(a), str(np.asarray(a).dtype)) for a in jax.tree.leaves(data)))
    if signature not in _FINETUNERS:
        if len(_FINETUNERS) >= 16:
            _FINETUNERS.pop(next(iter(_FINETUNERS)))
        _FINETUNERS[signature] = make_train(config, data)
    return _FINETUNERS[signature]


def walk_forward(config: TrainConfig, params, x, y, times, *, horizon, every: int, window: int, key,
                 start: int | None = None, learning_rate: float = 1e-4, epochs: int = 5,
                 batch_size: int | None = None, val_size: int | None = None,
                 predict_batch: int = 256) -> OnlineResult:
    """Walk-forward fine-tuning and prediction (module docstring).

    Args:
        config: the model's training config (model, task, loss, ...); the fine-tuning overrides the
            learning rate, epochs and batch size (`finetune_config`).
        params: the trained params to start from.
        x: `[N, L, F]` input windows (sample axis first), ordered by time.
        y: the labels, a pytree of `[N, ...]` arrays as in `Dataset.y_train`.
        times: `[N]` int bar index each sample's window ends at (non-decreasing).
        horizon: int or `[N]` int array: sample j's label reads bars `times[j] + 1 .. times[j] + horizon`.
        every: bars between refits.
        window: samples per fine-tuning (a fixed size: one compilation).
        key: PRNG key; refit i uses `jax.random.fold_in(key, i)`.
        start: first refit bar (default `refit_times`' default).
        learning_rate, epochs, batch_size: fine-tuning settings (seed 002: lr 1e-4, 5 epochs).
        val_size: the window's most recent samples used as its validation set (default `min(window, 64)`).
        predict_batch: samples per jitted prediction call.

    Returns:
        `OnlineResult`. Each record: "refit" (i), "time" (`T_i`), "refit_done" (bool), "n_known"
        (samples with a known label), "samples" (indices trained on, empty when skipped),
        "first_time" / "last_time" (their window end bars), "last_label_bar" (the latest bar any of
        their labels reads, `< time`), "n_predicted" (samples it predicted), "train_loss" (last
        epoch), "recent_loss" (on the window's most recent `val_size` samples after fine-tuning),
        "param_change" (relative L2 change `|new - old| / |old|`).
    """
    times = _times(times)
    n = times.shape[0]
    x = np.asarray(x)
    if x.shape[0] != n or any(np.shape(a)[0] != n for a in jax.tree.leaves(y)):
        raise ValueError(f"x, y and times need one sample axis; got {x.shape[0]}, "
                         f"{[np.shape(a)[0] for a in jax.tree.leaves(y)]}, {n}")
    label_end = _label_end(times, horizon)
    schedule = refit_times(times, horizon, every, window, start)
    window, every = int(window), int(every)
    val = min(window, 64) if val_size is None else int(val_size)
    if not 1 <= val <= window:
        raise ValueError(f"val_size must be in [1, window]; got {val_size}")
    ft_config = finetune_config(config, learning_rate, epochs, batch_size, window)
    predict = _predictor(config)
    batch = max(1, min(int(predict_batch), n))
    shapes = jax.eval_shape(predict, params, jax.ShapeDtypeStruct((batch,) + x.shape[1:], jnp.float32))
    predictions = jax.tree.map(lambda s: np.full((n,) + s.shape[1:], np.nan, np.float32), shapes)
    predicted = np.zeros((n,), bool)
    refit_index = np.full((n,), -1, np.int32)

    train = None
    current = params
    records = []
    for i, at in enumerate(schedule):
        at = int(at)
        idx = known_samples(times, horizon, at, window)
        n_known = int(np.sum(label_end < at))
        record: dict[str, Any] = {"refit": i, "time": at, "refit_done": idx is not None, "n_known": n_known,
                                  "samples": np.zeros((0,), np.int64) if idx is None else idx}
        if idx is not None:
            recent = Dataset(jnp.asarray(x[idx], jnp.float32), _take(y, idx),
                             jnp.asarray(x[idx[-val:]], jnp.float32), _take(y, idx[-val:]))
            _check_window(recent, at)
            if train is None:  # built once (or reused from an earlier call with the same sizes)
                train = _finetuner(ft_config, recent)
            result = train(jax.random.fold_in(key, i), data=recent, params=current)
            new = result.params
            history = jax.device_get(result.history)
            record.update(first_time=int(times[idx[0]]), last_time=int(times[idx[-1]]),
                          last_label_bar=int(label_end[idx].max()),
                          train_loss=float(history["train_loss"][-1]), recent_loss=float(history["val_loss"][-1]),
                          param_change=_relative_change(new, current))
            current = new
        else:
            log.info("online refit at bar %d skipped: %d known labels, the window needs %d", at, n_known, window)
        # predict the samples of [T_i, T_{i+1}) with the current params
        stop = schedule[i + 1] if i + 1 < len(schedule) else np.iinfo(np.int64).max
        segment = np.flatnonzero((times >= at) & (times < stop))
        for lo in range(0, segment.size, batch):
            rows = segment[lo:lo + batch]
            padded = np.concatenate([rows, np.full((batch - rows.size,), rows[0], rows.dtype)])
            out = jax.device_get(predict(current, jnp.asarray(x[padded], jnp.float32)))
            for buf, value in zip(jax.tree.leaves(predictions), jax.tree.leaves(out)):
                buf[rows] = np.asarray(value)[: rows.size]
        predicted[segment] = True
        refit_index[segment] = i
        record["n_predicted"] = int(segment.size)
        records.append(record)
    return OnlineResult(predictions, predicted, refit_index, records, current)
