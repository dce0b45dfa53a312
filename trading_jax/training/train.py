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
`trainer = make_trainer(config, data)` gives `trainer.init(key) -> state`,
`trainer.run(state, n_epochs) -> state` (the next `n_epochs`, static) and `trainer.result(state)`,
with `result(run(init(key), epochs)) == train(key)` bit for bit for any chunking of the epochs.
`fit(trainer, key, checkpointer, every_epochs, writer)` runs the chunks with Orbax checkpoints
(best k by validation loss, exact resume from the latest), TensorBoard scalars and a tqdm bar.

Randomness: `key` is split into init / dropout / per-epoch keys (epoch e: `split(k_epochs, epochs)[e]`); the same key gives the same params,
bit for bit on CPU. Data-parallel: with a mesh holding a "data" axis (or `data_parallel=True`), every
minibatch is sharded over that axis with `NamedSharding` and params/optimiser state are replicated;
the dataset itself is replicated on every device.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from trading_jax.training import augment, curriculum
from trading_jax.training.config import Dataset, TrainConfig
from trading_jax.training.losses import task_loss


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
    """

    params: Any
    opt_state: Any
    key: jax.Array
    epoch: jax.Array
    stopping: EarlyStopping
    best_params: Any
    history: dict


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


# ------------------------------------------------------------------------------------ optimiser


def make_schedule(config: TrainConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up 0 -> lr over `warmup_steps`, then cosine decay to `final_lr_fraction * lr` at `total_steps`.

        lr(t) = lr t / W                                                  for t < W,
        lr(t) = end + (lr - end) (1 + cos(pi (t - W) / (T - W))) / 2       for W <= t <= T.
    """
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=max(int(total_steps), config.warmup_steps + 1),
        end_value=config.learning_rate * config.final_lr_fraction,
    )


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """`clip_by_global_norm(max_grad_norm) -> adamw(make_schedule(...), weight_decay)`."""
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adamw(make_schedule(config, total_steps), weight_decay=config.weight_decay),
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


def make_mesh(n_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh with a "data" axis over `n_devices` (default all) devices, with Auto axis types."""
    n = jax.device_count() if n_devices is None else n_devices
    return jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


# ----------------------------------------------------------------------------------- helpers


def _select(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _compute_dtype(config: TrainConfig):
    return jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32


def _apply_fn(model, config: TrainConfig):
    """`apply(params, x, train, key) -> outputs` computing in `config.compute_dtype`, outputs float32."""
    dtype = _compute_dtype(config)

    def apply(params, x, train: bool, key=None):
        rngs = {"dropout": key} if train else {}
        out = model.apply({"params": _cast(params, dtype)}, x.astype(dtype), train=train, rngs=rngs)
        return _cast(out, jnp.float32)

    return apply


def _prepare_batches(config: TrainConfig, n: int, what: str, data, mesh, data_parallel: bool):
    """Minibatches per epoch, the mesh (built when `data_parallel`), the batch and replicated
    shardings, and `data` replicated over the mesh. Raises if `n` samples do not fill one minibatch."""
    steps = n // config.batch_size
    if steps == 0:
        raise ValueError(f"{what}={n} is smaller than batch_size={config.batch_size}: no full minibatch")
    if data_parallel and mesh is None:
        mesh = make_mesh()
    batch_sharding, replicated = _sharding(mesh, config)
    if replicated is not None:
        data = jax.device_put(data, replicated)
    return steps, mesh, batch_sharding, replicated, data


def _sharding(mesh, config: TrainConfig):
    if mesh is None:
        return None, None
    if "data" not in mesh.axis_names:
        raise ValueError(f"the mesh needs a 'data' axis; it has {mesh.axis_names}")
    n = mesh.shape["data"]
    if config.batch_size % n:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {n} devices of the 'data' axis")
    return NamedSharding(mesh, P("data")), NamedSharding(mesh, P())


def _constrain(tree, sharding):
    return tree if sharding is None else jax.lax.with_sharding_constraint(tree, sharding)


def _epoch_indices(key, n: int, steps: int, batch: int, order=None, pool=None):
    """`[steps, batch]` minibatch indices of one epoch (remainder dropped); curriculum when `order` given."""
    if order is None:
        perm = jax.random.permutation(key, n)
    else:
        perm = curriculum.curriculum_permutation(key, order, pool)
    return perm[: steps * batch].reshape(steps, batch)


# -------------------------------------------------------------------------------- make_train


def make_train(config: TrainConfig, data: Dataset, mesh=None, data_parallel: bool = False):
    """Build `train(key, data=None, params=None) -> TrainResult` (jitted; see the module docstring).

    Args:
        config: the training configuration.
        data: a `Dataset`; it is checked for NaN/inf on the host here (ValueError naming the array
            and the index of the first bad value). `train(key, data=other)` retrains on another dataset
            of the same shapes without recompiling (pass data as an argument to avoid baking it in).
        mesh: a mesh with a "data" axis: minibatches are sharded over it, params replicated.
        data_parallel: build `make_mesh()` over all devices when no mesh is given.

    Raises:
        ValueError: non-finite data, too few samples for one batch, a batch not divisible by devices.
    """
    _check_data(data)
    n_train = int(jax.tree.leaves(data.x_train)[0].shape[0])
    steps, mesh, batch_sharding, replicated, data = _prepare_batches(config, n_train, "n_train", data, mesh, data_parallel)

    model = config.build_model()
    apply = _apply_fn(model, config)
    total_steps = config.epochs * steps
    tx = make_optimizer(config, total_steps)
    epochs, batch = config.epochs, config.batch_size

    def prepare_targets(y, n_classes):
        if config.task == "classification":
            return jax.nn.one_hot(y, n_classes, dtype=jnp.float32)
        if config.task == "multitask":
            return {k: (jax.nn.one_hot(v, n_classes, dtype=jnp.float32) if k == "direction"
                        else jnp.asarray(v, jnp.float32)) for k, v in y.items()}
        return jnp.asarray(y, jnp.float32)

    def batch_loss(params, x, y, key):
        k_drop, k_adv = jax.random.split(key)

        def loss_of(xx, p, k):
            return task_loss(config, apply(p, xx, True, k), y)

        loss = loss_of(x, params, k_drop)
        if config.fgsm_epsilon > 0:
            frozen = jax.lax.stop_gradient(params)
            x_adv = augment.fgsm(lambda xx: loss_of(xx, frozen, k_drop), x, config.fgsm_epsilon)
            loss = loss + loss_of(x_adv, params, k_adv)
        return loss

    def val_loss(params, data):
        def one(sample):
            x, y = sample
            out = apply(params, x[None], False)
            return task_loss(config, out, jax.tree.map(lambda a: a[None], y), label_smoothing=0.0)

        n_val = jax.tree.leaves(data.x_val)[0].shape[0]
        losses = jax.lax.map(one, (data.x_val, data.y_val), batch_size=min(config.eval_batch_size, n_val))
        return jnp.mean(losses)

    def _shapes(params, data):
        x0 = data.x_train[:1]
        out_shapes = jax.eval_shape(lambda p: apply(p, x0, False), params)
        logits = out_shapes.get("logits") if config.task == "classification" else out_shapes.get("direction_logits")
        return None if logits is None else logits.shape[-1]

    def _init(key, data, init_params) -> TrainState:
        k_init, k_drop, k_epochs = jax.random.split(key, 3)
        x0 = data.x_train[:1]
        if init_params is None:
            params = model.init({"params": k_init, "dropout": k_drop}, x0, train=False)["params"]
        else:
            params = init_params
        params = _constrain(params, replicated)
        history = {"train_loss": jnp.full((epochs,), jnp.nan, jnp.float32),
                   "val_loss": jnp.full((epochs,), jnp.nan, jnp.float32),
                   "skipped_steps": jnp.zeros((epochs,), jnp.int32),
                   "stopped": jnp.zeros((epochs,), bool),
                   "pool": jnp.zeros((epochs,), jnp.int32)}
        return TrainState(params, tx.init(params), k_epochs, jnp.zeros((), jnp.int32), EarlyStopping.init(),
                          params, history)

    def _run(state: TrainState, data, n_epochs: int) -> TrainState:
        n_classes = _shapes(state.params, data)
        if config.curriculum:
            difficulty = data.difficulty
            if difficulty is None:
                difficulty = curriculum.sample_volatility(data.x_train, config.curriculum_feature)
            order = jnp.argsort(difficulty, stable=True)
        else:
            order = None
        # the per-epoch keys of the whole run (`epochs` is static), so any chunking draws the same keys
        epoch_keys = jax.random.split(state.key, epochs)

        def step(carry, xs):
            params, opt_state = carry
            idx, key, active = xs
            x = _constrain(data.x_train[idx], batch_sharding)
            y = _constrain(jax.tree.map(lambda a: a[idx], data.y_train), batch_sharding)
            y = prepare_targets(y, n_classes)
            k_noise, k_mix, k_loss = jax.random.split(key, 3)
            if config.noise_std > 0:
                x = augment.gaussian_noise(k_noise, x, config.noise_std)
            if config.mixup_alpha > 0:
                x, y = augment.mixup(k_mix, x, y, config.mixup_alpha)
            loss, grads = jax.value_and_grad(batch_loss)(params, x, y, k_loss)
            updates, new_opt_state = tx.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
            do = active & finite
            params = _constrain(_select(do, new_params, params), replicated)
            opt_state = _select(do, new_opt_state, opt_state)
            return (params, opt_state), (loss, do, active & ~finite)

        def epoch(state: TrainState, _):
            e = state.epoch
            params, opt_state, stopping, best_params = state.params, state.opt_state, state.stopping, state.best_params
            in_range = e < epochs  # epochs past the end (n_epochs too large) leave the state unchanged
            key = epoch_keys[jnp.minimum(e, epochs - 1)]
            k_perm, k_steps = jax.random.split(key)
            if order is None:
                pool = jnp.asarray(n_train, jnp.int32)
                idx = _epoch_indices(k_perm, n_train, steps, batch)
            else:
                pool = curriculum.pool_size(e, n_train, epochs, config.curriculum_start, config.curriculum_ramp)
                idx = _epoch_indices(k_perm, n_train, steps, batch, order, pool)
            n_active = jnp.maximum(1, pool // batch)
            active = (jnp.arange(steps) < n_active) & ~stopping.stopped & in_range
            (params, opt_state), (losses, done, skipped) = jax.lax.scan(
                step, (params, opt_state), (idx, jax.random.split(k_steps, steps), active)
            )
            n_done = jnp.sum(done)
            train_loss = jnp.where(n_done > 0, jnp.sum(jnp.where(done, losses, 0.0)) / jnp.maximum(n_done, 1), jnp.nan)
            v = val_loss(params, data)
            was_stopped = stopping.stopped
            new_stopping, improved = early_stopping_update(stopping, e, v, config.patience)
            best_params = _select(improved & in_range, params, best_params)
            stopping = _select(in_range, new_stopping, stopping)
            record = {"train_loss": train_loss, "val_loss": v, "skipped_steps": jnp.sum(skipped).astype(jnp.int32),
                      "stopped": was_stopped, "pool": jnp.where(was_stopped, 0, jnp.minimum(pool, n_active * batch))}
            # out of range: the index `epochs` is dropped by the scatter, so the history is untouched
            slot = jnp.where(in_range, e, epochs)
            history = {k: buf.at[slot].set(record[k].astype(buf.dtype), mode="drop")
                       for k, buf in state.history.items()}
            new = TrainState(params, opt_state, state.key, jnp.where(in_range, e + 1, e).astype(jnp.int32),
                             stopping, best_params, history)
            return new, None

        state, _ = jax.lax.scan(epoch, state, None, length=n_epochs)
        return state

    def _result(state: TrainState) -> TrainResult:
        return TrainResult(state.params, state.best_params, state.history, state.stopping.best_epoch)

    def _train(key, data, init_params):
        return _result(_run(_init(key, data, init_params), data, epochs))

    jitted = jax.jit(_train)
    jit_init = jax.jit(_init)
    jit_run = jax.jit(_run, static_argnums=2)
    jit_result = jax.jit(_result)
    default_data = data

    def train(key, data=None, params=None) -> TrainResult:
        """Train from `key` (optionally on another same-shaped `data`, from given initial `params`)."""
        return jitted(key, default_data if data is None else data, params)

    def init(key, data=None, params=None) -> TrainState:
        """The state before epoch 0 (params from `key`, or the given initial `params`)."""
        return jit_init(key, default_data if data is None else data, params)

    def run(state: TrainState, n_epochs: int, data=None) -> TrainState:
        """Run the next `n_epochs` (static) epochs from `state.epoch`; epochs past `config.epochs` are no-ops."""
        return jit_run(state, default_data if data is None else data, int(n_epochs))

    train.jitted = jitted
    train.model = model
    train.config = config
    train.steps_per_epoch = steps
    train.mesh = mesh
    train.trainer = Trainer(init=init, run=run, result=jit_result, train=train, config=config, model=model,
                            steps_per_epoch=steps, mesh=mesh)
    return train


class Trainer(NamedTuple):
    """Training as explicit, checkpointable steps (see `make_trainer`).

    Attributes:
        init: `init(key, data=None, params=None) -> TrainState` (jitted).
        run: `run(state, n_epochs, data=None) -> TrainState`: a `lax.scan` over the next `n_epochs`
            (static: one compilation per distinct value) epochs, continuing from `state.epoch`.
        result: `result(state) -> TrainResult` (jitted).
        train: the one-shot `train(key, data=None, params=None) -> TrainResult` of `make_train`.
        config, model, steps_per_epoch, mesh: as on `train`.
    """

    init: Any
    run: Any
    result: Any
    train: Any
    config: TrainConfig
    model: Any
    steps_per_epoch: int
    mesh: Any


def make_trainer(config: TrainConfig, data: Dataset, mesh=None, data_parallel: bool = False) -> Trainer:
    """`make_train`, split into `init` / `run` / `result` over an explicit `TrainState`.

    `trainer.result(trainer.run(trainer.init(key), config.epochs))` equals `trainer.train(key)` bit for
    bit, and so does any chunking of the epochs (`run(run(s, 2), 3)`): epoch `e` draws its randomness
    from `jax.random.split(state.key, config.epochs)[e]`. Arguments and errors are those of `make_train`.
    """
    return make_train(config, data, mesh=mesh, data_parallel=data_parallel).trainer


# ------------------------------------------------------------------------------------------ fit


def fit(trainer: Trainer, key, checkpointer=None, every_epochs: int = 1, writer=None, show_progress: bool = True,
        *, max_epochs: int | None = None, callback=None, param_histograms: bool = False, desc: str = "train",
        data=None) -> TrainResult:
    """Train in chunks of `every_epochs` epochs with checkpoints, TensorBoard scalars and a progress bar.

    The final result equals `trainer.train(key)` bit for bit, however the run is chunked, interrupted
    and resumed.

    Args:
        trainer: from `make_trainer`.
        key: the training key (the same key must be passed when resuming).
        checkpointer: a `trading_jax.checkpoint.Checkpointer`, or None. If it holds a checkpoint,
            training resumes from its latest step (restored into `trainer.init(key)`'s structure).
            After each chunk the whole `TrainState` is saved at step = epochs completed, with metrics
            `{"val_loss": last epoch's val_loss, "train_loss": ...}` (its `best_metric` should be
            "val_loss" or "train_loss"). The checkpointer's `save_every_steps` applies (the last
            epoch is always saved).
        every_epochs: epochs per jitted chunk (and per checkpoint / log write).
        writer: a `trading_jax.logging.TensorBoardWriter`, or None: per-epoch "train_loss", "val_loss"
            and "skipped_steps" scalars at step = epoch index, and (with `param_histograms`) a
            histogram of every param leaf after each chunk.
        show_progress: a tqdm bar on stderr over epochs, with the last loss, val loss and throughput
            (training samples per second, compilation of the first chunk included).
        max_epochs: stop (without error) once this many epochs are done; resume later with another call.
        callback: `callback(state, records)` after each chunk (after the checkpoint is written);
            `records` holds the chunk's per-epoch history as NumPy arrays. It may raise to stop.
        param_histograms: also write param histograms after each chunk (needs `writer`).
        desc: the progress bar's label.
        data: train on another same-shaped dataset (as `train(key, data=...)`).

    Returns:
        `trainer.result(state)` of the final state (after `max_epochs` when given: a partial run).
    """
    import sys
    import time

    from trading_jax.logging import get_logger

    log = get_logger(__name__)
    if every_epochs < 1:
        raise ValueError(f"every_epochs must be >= 1, got {every_epochs}")
    epochs = trainer.config.epochs
    stop_at = epochs if max_epochs is None else max(0, min(epochs, int(max_epochs)))
    state = trainer.init(key, data)
    if checkpointer is not None and checkpointer.latest_step() is not None:
        step = checkpointer.latest_step()
        state = checkpointer.restore(step, target=state)
        log.info("resuming training from the checkpoint at epoch %d", int(state.epoch))
    done = int(state.epoch)

    bar = None
    if show_progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs, initial=done, desc=desc, unit="epoch", file=sys.stderr, dynamic_ncols=True)
        except ImportError:  # pragma: no cover - tqdm is a core dependency
            bar = None
    try:
        while done < stop_at:
            n = min(every_epochs, stop_at - done)
            start = time.perf_counter()
            state = trainer.run(state, n, data)
            history = jax.tree.map(lambda a: np.asarray(a)[done : done + n], jax.device_get(state.history))
            seconds = max(time.perf_counter() - start, 1e-9)
            new_done = int(state.epoch)
            last = {"val_loss": float(history["val_loss"][-1]), "train_loss": float(history["train_loss"][-1])}
            if checkpointer is not None:
                checkpointer.save(new_done, state, last, force=new_done == epochs)
            if writer is not None:
                for i in range(n):
                    writer.scalars(done + i, {"train_loss": history["train_loss"][i], "val_loss": history["val_loss"][i],
                                              "skipped_steps": history["skipped_steps"][i]})
                if param_histograms:
                    for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
                        name = "params/" + "/".join(str(getattr(k, "key", k)) for k in path)
                        writer.histogram(new_done, name, np.asarray(leaf))
                writer.flush()
            samples = int(np.sum(history["pool"]))
            if bar is not None:
                bar.set_postfix(loss=f"{last['train_loss']:.4g}", val_loss=f"{last['val_loss']:.4g}",
                                samples_per_s=f"{samples / seconds:.4g}", refresh=False)
                bar.update(new_done - done)
            log.debug("epochs %d-%d: loss %.4g, val_loss %.4g, %.4g samples/s", done, new_done - 1,
                      last["train_loss"], last["val_loss"], samples / seconds)
            done = new_done
            if callback is not None:
                callback(state, history)
    finally:
        if bar is not None:
            bar.close()
    return trainer.result(state)
