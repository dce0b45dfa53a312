"""Supervised training: `make_train(config, data) -> train(key)`, one jittable function.

`train(key)`:

1. initialises the model's params from the key (or takes `params`, e.g. from `make_pretrain`);
2. builds `clip_by_global_norm(max_grad_norm) -> adamw(warm-up + cosine schedule, weight_decay)`;
3. runs the epochs as a `lax.scan`, each epoch a `lax.scan` over `n_train // batch_size` shuffled
   minibatches (a fresh permutation per epoch from the key; the remainder `n_train % batch_size` of
   each epoch's permutation is dropped, so shapes are static and every batch is full);
4. computes the validation loss after every epoch (no augmentation, no label smoothing, dropout off),
   keeps the params with the lowest validation loss, and with `patience` stops after that many epochs
   without improvement: later epochs run but every update is masked out, so shapes stay static;
5. skips (masks out) any update whose loss or gradient norm is not finite and counts it.

The same training is available as explicit steps over a checkpointable `TrainState`:
`trainer = make_trainer(config, data)` is a `trading_jax.loop.FunctionTrainer` with
`trainer.init(key) -> state`, `trainer.run(state, n_epochs) -> (state, records)` and `trainer.result(state)`,
with `result(run(init(key), epochs)) == train(key)` bit for bit for any chunking of the epochs;
`trading_jax.loop.fit(trainer, key, checkpointer=..., writer=...)` runs the chunks with Orbax checkpoints
(best k by validation loss, exact resume from the latest), TensorBoard scalars and a progress bar, and
`trainer.population(M)` trains M seeds or a hyperparameter grid (`TrainHyperparams`) in one compilation.

Randomness: `key` is split into init / dropout / per-epoch keys (epoch e: `split(k_epochs, epochs)[e]`); the same key gives the same params,
bit for bit on CPU. Data-parallel: with a mesh holding a "data" axis (or `data_parallel=True`), every
minibatch is sharded over that axis with `NamedSharding` and params/optimiser state are replicated;
the dataset itself is replicated on every device.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from trading_jax.loop import FunctionTrainer
from trading_jax.training import augment, curriculum
from trading_jax.training.config import Dataset, TrainConfig
from trading_jax.training.losses import task_loss
from trading_jax.training.steps import (
    cast_floating, compute_dtype, constrain, epoch_indices, has_integer_leaves, overlay_params, prepare_batches,
    select_tree, take,
)


class TrainResult(NamedTuple):
    """What `train(key)` returns.

    Attributes:
        params: params after the last (possibly early-stopped) update.
        best_params: params after the epoch with the lowest finite validation loss.
        history: per-epoch `[epochs]` arrays: "train_loss" (mean over applied updates; NaN if none),
            "val_loss", "skipped_steps" (updates skipped for a non-finite loss/gradient), "stopped"
            (True for epochs after early stopping, which apply no update), "pool" (samples trained on).
        best_epoch: index of the best epoch (-1 if no epoch had a finite validation loss; then
            `best_params` are the initial params).
    """

    params: Any
    best_params: Any
    history: dict
    best_epoch: jax.Array


class EarlyStopping(NamedTuple):
    """Early-stopping state: best validation loss and epoch, epochs without improvement, stopped flag."""

    best_loss: jax.Array
    best_epoch: jax.Array
    bad_epochs: jax.Array
    stopped: jax.Array

    @classmethod
    def init(cls) -> "EarlyStopping":
        return cls(jnp.asarray(jnp.inf, jnp.float32), jnp.asarray(-1, jnp.int32), jnp.asarray(0, jnp.int32),
                   jnp.asarray(False))


class TrainState(NamedTuple):
    """The whole training state between epochs (a pytree: checkpoint it to resume exactly).

    Attributes:
        params: current params.
        opt_state: optimiser state.
        key: typed PRNG key of the epochs; epoch `e` uses `jax.random.split(key, epochs)[e]`.
        epoch: int32 scalar, epochs completed (the next epoch to run).
        stopping: `EarlyStopping` state.
        best_params: params after the best epoch so far (the initial params before any).
        history: per-epoch `[epochs]` buffers as in `TrainResult.history`; entries of epochs not yet
            run are NaN (losses), 0 or False.
        hparams: the run's `TrainHyperparams`.
    """

    params: Any
    opt_state: Any
    key: jax.Array
    epoch: jax.Array
    stopping: EarlyStopping
    best_params: Any
    history: dict
    hparams: Any


def early_stopping_update(state: EarlyStopping, epoch, val_loss, patience: int | None):
    """One epoch of early stopping.

    An epoch improves if training has not stopped and its validation loss is finite and strictly below
    the best so far; otherwise the count of bad epochs grows, and training stops once it reaches
    `patience` (never for None).

    Returns:
        `(new_state, improved)`.
    """
    active = ~state.stopped
    improved = active & jnp.isfinite(val_loss) & (val_loss < state.best_loss)
    bad = jnp.where(improved, 0, jnp.where(active, state.bad_epochs + 1, state.bad_epochs))
    stopped = state.stopped if patience is None else state.stopped | (bad >= patience)
    return EarlyStopping(
        jnp.where(improved, val_loss, state.best_loss).astype(jnp.float32),
        jnp.where(improved, jnp.asarray(epoch, jnp.int32), state.best_epoch),
        bad.astype(jnp.int32),
        stopped,
    ), improved


# ------------------------------------------------------------------------------ hyperparameters


@struct.dataclass
class TrainHyperparams:
    """The vmappable supervised hyperparameters: float32 scalars, or `[n]` arrays for a grid under `vmap`.

    Everything here changes values, never shapes, so `jax.vmap(train)(keys, grid)` trains a whole grid in one
    compilation. Whether noise, mixup and FGSM are on at all is static (`TrainConfig.noise_std > 0`, ...);
    their strengths are here. Not vmappable: the dropout rate (Flax's `Dropout` branches on it in Python),
    the schedule's warm-up length, epochs and batch size (they change the program).

    Attributes:
        learning_rate, final_lr_fraction, weight_decay, max_grad_norm, label_smoothing, huber_delta,
        noise_std, mixup_alpha, fgsm_epsilon: as in `TrainConfig`.
        multitask_weights: `{task: weight}` of the multitask loss.
    """

    learning_rate: Any
    final_lr_fraction: Any
    weight_decay: Any
    max_grad_norm: Any
    label_smoothing: Any
    huber_delta: Any
    noise_std: Any
    mixup_alpha: Any
    fgsm_epsilon: Any
    multitask_weights: Any


def hyperparams(config: TrainConfig) -> TrainHyperparams:
    """The config's hyperparameters as float32 scalars."""
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    names = [f.name for f in dataclasses.fields(TrainHyperparams) if f.name != "multitask_weights"]
    return TrainHyperparams(**{n: f32(getattr(config, n)) for n in names},
                            multitask_weights={k: f32(v) for k, v in config.multitask_weights})


# ------------------------------------------------------------------------------------ optimiser


def make_schedule(config: TrainConfig, total_steps: int, hparams: TrainHyperparams | None = None) -> optax.Schedule:
    """Linear warm-up 0 -> lr over `warmup_steps`, then cosine decay to `final_lr_fraction * lr` at `total_steps`.

        lr(t) = lr t / W                                                  for t < W,
        lr(t) = end + (lr - end) (1 + cos(pi (t - W) / (T - W))) / 2       for W <= t <= T.

    `lr` and `final_lr_fraction` come from `hparams` when given (they may be traced), else the config.
    """
    lr = config.learning_rate if hparams is None else hparams.learning_rate
    fraction = config.final_lr_fraction if hparams is None else hparams.final_lr_fraction
    warmup = int(config.warmup_steps)
    decay_steps = max(int(total_steps), warmup + 1) - warmup

    def schedule(count):
        t = jnp.asarray(count, jnp.float32)
        peak = jnp.asarray(lr, jnp.float32)
        end = peak * fraction
        progress = jnp.clip((t - warmup) / decay_steps, 0.0, 1.0)
        cosine = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        if warmup == 0:
            return cosine
        return jnp.where(t < warmup, peak * t / warmup, cosine)

    return schedule


def make_optimizer(config: TrainConfig, total_steps: int, hparams: TrainHyperparams | None = None
                   ) -> optax.GradientTransformation:
    """`clip_by_global_norm(max_grad_norm) -> adamw(make_schedule(...), weight_decay)` (values from `hparams`
    when given)."""
    clip = config.max_grad_norm if hparams is None else hparams.max_grad_norm
    decay = config.weight_decay if hparams is None else hparams.weight_decay
    return optax.chain(
        optax.clip_by_global_norm(clip),
        optax.adamw(make_schedule(config, total_steps, hparams), weight_decay=decay),
    )


# --------------------------------------------------------------------------------- data checks


def _describe_index(shape: tuple[int, ...], index: tuple[int, ...]) -> str:
    if len(shape) == 3:
        names = ("sample", "time", "feature")
    elif len(shape) == 2:
        names = ("sample", "column")
    else:
        names = ("sample",) + tuple(f"axis {i}" for i in range(1, len(shape)))
    return ", ".join(f"{n} {i}" for n, i in zip(names, index))


def check_finite(name: str, array) -> None:
    """Raise a ValueError naming the first non-finite value of `array` (host-side check).

    Message: "x_train has NaN at sample 12, time 3, feature 5 (4 non-finite values in total): clean
    or impute the data before training (e.g. forward-fill missing bars or drop the affected windows)".
    """
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.floating) and a.dtype.name != "bfloat16":
        return
    a = a.astype(np.float32) if a.dtype.name == "bfloat16" else a
    bad = ~np.isfinite(a)
    if not bad.any():
        return
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    value = a[index]
    kind = "NaN" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    count = int(bad.sum())
    raise ValueError(
        f"{name} has {kind} at {_describe_index(a.shape, index)} ({count} non-finite value{'s' if count > 1 else ''}"
        " in total): "
        "clean or impute the data before training (e.g. forward-fill missing bars or drop the affected windows)"
    )


def _check_data(data: Dataset) -> None:
    for field in ("x_train", "y_train", "x_val", "y_val"):
        value = getattr(data, field)
        leaves = jax.tree_util.tree_leaves_with_path(value)
        for path, leaf in leaves:
            if isinstance(leaf, jax.core.Tracer):  # traced data (e.g. vmapped datasets): cannot check
                continue
            check_finite(field + jax.tree_util.keystr(path), leaf)


# ----------------------------------------------------------------------------------- helpers


def _apply_fn(model, config: TrainConfig):
    """`apply(params, x, train, key) -> outputs` computing in `config.compute_dtype`, outputs float32."""
    dtype = compute_dtype(config)

    def apply(params, x, train: bool, key=None):
        rngs = {"dropout": key} if train else {}
        out = model.apply({"params": cast_floating(params, dtype)}, cast_floating(x, dtype), train=train, rngs=rngs)
        return cast_floating(out, jnp.float32)

    return apply


# -------------------------------------------------------------------------------- make_trainer

HISTORY_KEYS = ("train_loss", "val_loss", "skipped_steps", "stopped", "pool")


def make_trainer(config: TrainConfig, data: Dataset, mesh=None, data_parallel: bool = False,
                 init_params=None) -> FunctionTrainer:
    """Supervised training as a `trading_jax.loop.FunctionTrainer` over a checkpointable `TrainState`.

    One unit is an epoch: `trainer.run(state, n)` runs the next `n` epochs (a `lax.scan`) and returns
    their records (`HISTORY_KEYS` plus "active": False for epochs after early stopping).
    `trainer.train(key)`, `result(run(init(key), epochs))` and any chunking `run(run(s, a), b)` are
    bit-identical: epoch `e` draws its randomness from `jax.random.split(state.key, config.epochs)[e]`.
    `trainer.population(M)` trains M seeds / hyperparameter settings in one compilation; drive either
    with `trading_jax.loop.fit`.

    Args:
        config: the training configuration.
        data: a `Dataset`; it is checked for NaN/inf on the host here (ValueError naming the array
            and the index of the first bad value). It is the trainer's `args["data"]`: pass another
            same-shaped dataset as `init(key, args=...)` / `run(state, n, args=...)` without recompiling.
            An optional `args["train_index"]` (int `[n_train]`, e.g. a bootstrap resample drawn with
            replacement) makes the run train on the rows `x_train[train_index]` without copying them: each
            epoch permutes the positions `0 .. n_train-1` of the resample and gathers the rows through it
            (`population(M, member_args={"train_index": idx [M, n_train]})`: one resample per member;
            `trading_jax.ensemble.make_ensemble_trainer`). Validation always uses the whole `x_val`.
        mesh: a mesh with a "data" axis: minibatches are sharded over it, params replicated.
        data_parallel: build `trading_jax.parallel.make_mesh()` over all devices when no mesh is given.
        init_params: optional initial params (the trainer's `args["params"]`): a full tree, or a partial one
            (e.g. a pre-trained BERT encoder's "bert" subtree) overlaid on each seed's fresh initialisation
            (`steps.overlay_params`), so new heads still differ per seed.

    Inputs may be a pytree: `x_train` = `{"input_ids": [n, L] int32, "attention_mask": [n, L] int32}` for a text
    model. Every leaf shares the sample axis; floating leaves are cast to the compute dtype, integer leaves are
    passed as they are. Input noise, mixup and FGSM perturb floats, so they are refused for integer inputs, and so
    is the curriculum without `Dataset.difficulty` (its default ranks samples by the volatility of a float feature).

    Raises:
        ValueError: non-finite data, too few samples for one batch, a batch not divisible by devices, an
            augmentation that cannot apply to integer inputs, initial params that do not fit the model.
    """
    _check_data(data)
    if has_integer_leaves(data.x_train):
        on = [name for name, value in (("noise_std", config.noise_std), ("mixup_alpha", config.mixup_alpha),
                                       ("fgsm_epsilon", config.fgsm_epsilon)) if value > 0]
        if on:
            raise ValueError(f"{', '.join(on)} > 0 perturbs float inputs, but this dataset's inputs hold integers "
                             "(token ids, masks): set them to 0 for a text model")
        if config.curriculum and data.difficulty is None:
            raise ValueError("curriculum = true ranks samples by the volatility of a float input feature, but this "
                             "dataset's inputs hold integers: give Dataset.difficulty or switch the curriculum off")
    n_train = int(jax.tree.leaves(data.x_train)[0].shape[0])
    steps, mesh, batch_sharding, replicated, data = prepare_batches(config, n_train, "n_train", data, mesh, data_parallel)

    model = config.build_model()
    apply = _apply_fn(model, config)
    total_steps = config.epochs * steps
    epochs, batch = config.epochs, config.batch_size

    def prepare_targets(y, n_classes):
        if config.task == "classification":
            return jax.nn.one_hot(y, n_classes, dtype=jnp.float32)
        if config.task == "multitask":
            return {k: (jax.nn.one_hot(v, n_classes, dtype=jnp.float32) if k == "direction"
                        else jnp.asarray(v, jnp.float32)) for k, v in y.items()}
        return jnp.asarray(y, jnp.float32)

    def batch_loss(params, x, y, key, hp):
        k_drop, k_adv = jax.random.split(key)

        def loss_of(xx, p, k):
            return task_loss(config, apply(p, xx, True, k), y, hparams=hp)

        loss = loss_of(x, params, k_drop)
        if config.fgsm_epsilon > 0:
            frozen = jax.lax.stop_gradient(params)
            x_adv = augment.fgsm(lambda xx: loss_of(xx, frozen, k_drop), x, hp.fgsm_epsilon)
            loss = loss + loss_of(x_adv, params, k_adv)
        return loss

    def val_loss(params, data, hp):
        def one(sample):
            x, y = sample
            out = apply(params, jax.tree.map(lambda a: a[None], x), False)
            return task_loss(config, out, jax.tree.map(lambda a: a[None], y), label_smoothing=0.0, hparams=hp)

        n_val = jax.tree.leaves(data.x_val)[0].shape[0]
        losses = jax.lax.map(one, (data.x_val, data.y_val), batch_size=min(config.eval_batch_size, n_val))
        return jnp.mean(losses)

    def _shapes(params, data):
        x0 = take(data.x_train, slice(0, 1))
        out_shapes = jax.eval_shape(lambda p: apply(p, x0, False), params)
        logits = out_shapes.get("logits") if config.task == "classification" else out_shapes.get("direction_logits")
        if logits is None:  # a multitask model without direction logits (the price transformer): 3 direction classes
            return 3 if config.task == "multitask" else None
        return logits.shape[-1]

    def init_fn(key, hp, args) -> TrainState:
        data, init_params = args["data"], args["params"]
        hp = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), hp)
        k_init, k_drop, k_epochs = jax.random.split(key, 3)
        x0 = take(data.x_train, slice(0, 1))
        params = model.init({"params": k_init, "dropout": k_drop}, x0, train=False)["params"]
        if init_params is not None:  # given params (pre-trained, or a partial tree such as a pre-trained encoder)
            params = overlay_params(params, init_params)
        params = constrain(params, replicated)
        history = {"train_loss": jnp.full((epochs,), jnp.nan, jnp.float32),
                   "val_loss": jnp.full((epochs,), jnp.nan, jnp.float32),
                   "skipped_steps": jnp.zeros((epochs,), jnp.int32),
                   "stopped": jnp.zeros((epochs,), bool),
                   "pool": jnp.zeros((epochs,), jnp.int32)}
        tx = make_optimizer(config, total_steps, hp)
        return TrainState(params, tx.init(params), k_epochs, jnp.zeros((), jnp.int32), EarlyStopping.init(),
                          params, history, hp)

    def _train_index(args):
        index = args.get("train_index") if isinstance(args, Mapping) else None
        if index is None:
            return None
        if jnp.shape(index) != (n_train,) or not jnp.issubdtype(jnp.asarray(index).dtype, jnp.integer):
            raise ValueError(f"train_index must be an integer array of shape ({n_train},) (one resample of the "
                             f"{n_train} training rows), got {jnp.asarray(index).dtype} {jnp.shape(index)}")
        return jnp.asarray(index, jnp.int32)

    def run_fn(state: TrainState, args, n_epochs: int):
        data = args["data"]
        hp = state.hparams
        tx = make_optimizer(config, total_steps, hp)
        first = state.epoch
        n_classes = _shapes(state.params, data)
        train_index = _train_index(args)
        if config.curriculum:
            difficulty = data.difficulty
            if difficulty is None:
                difficulty = curriculum.sample_volatility(data.x_train, config.curriculum_feature)
            if train_index is not None:  # rank the resample's rows
                difficulty = difficulty[train_index]
            order = jnp.argsort(difficulty, stable=True)
        else:
            order = None
        # the per-epoch keys of the whole run (`epochs` is static), so any chunking draws the same keys
        epoch_keys = jax.random.split(state.key, epochs)

        def step(carry, xs):
            params, opt_state = carry
            idx, key, active = xs
            x = constrain(take(data.x_train, idx), batch_sharding)
            y = constrain(jax.tree.map(lambda a: a[idx], data.y_train), batch_sharding)
            y = prepare_targets(y, n_classes)
            k_noise, k_mix, k_loss = jax.random.split(key, 3)
            if config.noise_std > 0:
                x = augment.gaussian_noise(k_noise, x, hp.noise_std)
            if config.mixup_alpha > 0:
                x, y = augment.mixup(k_mix, x, y, hp.mixup_alpha)
            loss, grads = jax.value_and_grad(batch_loss)(params, x, y, k_loss, hp)
            updates, new_opt_state = tx.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
            do = active & finite
            params = constrain(select_tree(do, new_params, params), replicated)
            opt_state = select_tree(do, new_opt_state, opt_state)
            return (params, opt_state), (loss, do, active & ~finite)

        def epoch(state: TrainState, _):
            e = state.epoch
            params, opt_state, stopping, best_params = state.params, state.opt_state, state.stopping, state.best_params
            in_range = e < epochs  # epochs past the end (n_epochs too large) leave the state unchanged
            key = epoch_keys[jnp.minimum(e, epochs - 1)]
            k_perm, k_steps = jax.random.split(key)
            if order is None:
                pool = jnp.asarray(n_train, jnp.int32)
                idx = epoch_indices(k_perm, n_train, steps, batch)
            else:
                pool = curriculum.pool_size(e, n_train, epochs, config.curriculum_start, config.curriculum_ramp)
                idx = epoch_indices(k_perm, n_train, steps, batch, order, pool)
            if train_index is not None:  # positions in the member's resample -> rows of the dataset
                idx = train_index[idx]
            n_active = jnp.maximum(1, pool // batch)
            active = (jnp.arange(steps) < n_active) & ~stopping.stopped & in_range
            (params, opt_state), (losses, done, skipped) = jax.lax.scan(
                step, (params, opt_state), (idx, jax.random.split(k_steps, steps), active)
            )
            n_done = jnp.sum(done)
            train_loss = jnp.where(n_done > 0, jnp.sum(jnp.where(done, losses, 0.0)) / jnp.maximum(n_done, 1), jnp.nan)
            v = val_loss(params, data, hp)
            was_stopped = stopping.stopped
            new_stopping, improved = early_stopping_update(stopping, e, v, config.patience)
            best_params = select_tree(improved & in_range, params, best_params)
            stopping = select_tree(in_range, new_stopping, stopping)
            record = {"train_loss": train_loss, "val_loss": v, "skipped_steps": jnp.sum(skipped).astype(jnp.int32),
                      "stopped": was_stopped, "pool": jnp.where(was_stopped, 0, jnp.minimum(pool, n_active * batch))}
            # out of range: the index `epochs` is dropped by the scatter, so the history is untouched
            slot = jnp.where(in_range, e, epochs)
            history = {k: buf.at[slot].set(record[k].astype(buf.dtype), mode="drop")
                       for k, buf in state.history.items()}
            new = TrainState(params, opt_state, state.key, jnp.where(in_range, e + 1, e).astype(jnp.int32),
                             stopping, best_params, history, hp)
            return new, None

        state, _ = jax.lax.scan(epoch, state, None, length=n_epochs)
        # the chunk's records, read back from the history (epochs past the end: inactive)
        idx = first + jnp.arange(n_epochs)
        in_range = idx < epochs
        safe = jnp.clip(idx, 0, epochs - 1)
        metrics = {k: state.history[k][safe] for k in HISTORY_KEYS}
        metrics["active"] = in_range & ~metrics["stopped"]
        return state, metrics

    def result_fn(state: TrainState) -> TrainResult:
        return TrainResult(state.params, state.best_params, state.history, state.stopping.best_epoch)

    return FunctionTrainer(
        init_fn=init_fn, run_fn=run_fn, result_fn=result_fn, counter_fn=lambda s: s.epoch,
        args={"data": data, "params": init_params}, hparams=hyperparams(config), total=epochs, unit="epoch",
        samples_per_unit=steps * batch, display=("train_loss", "val_loss"), config=config, model=model,
        mesh=mesh, extras={"steps_per_epoch": steps, "n_train": n_train},
    )


def make_train(config: TrainConfig, data: Dataset, mesh=None, data_parallel: bool = False):
    """`train(key, data=None, params=None, hparams=None) -> TrainResult`: the whole run in one call.

    `jax.jit(jax.vmap(train))(keys)` trains one model per key and `jax.vmap(train)(keys, hparams=grid)`
    (with `trading_jax.loop.hyperparam_grid(hyperparams(config), learning_rate=[...])`) one per setting,
    each in one compilation. `params` starts from given initial params (e.g. `make_pretrain`'s), `data`
    trains on another same-shaped dataset without recompiling. Arguments and errors: `make_trainer`.
    """
    trainer = make_trainer(config, data, mesh=mesh, data_parallel=data_parallel)
    default_data = trainer.args["data"]

    def train(key, data=None, params=None, hparams=None) -> TrainResult:
        """Train from `key` (optionally on another same-shaped `data`, from initial `params`, with `hparams`)."""
        args = {"data": default_data if data is None else data, "params": params}
        return trainer.train(key, hparams, args)

    train.trainer = trainer
    train.model = trainer.model
    train.config = config
    train.steps_per_epoch = trainer.extras["steps_per_epoch"]
    train.mesh = trainer.mesh
    return train
