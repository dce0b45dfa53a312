"""The Trainer protocol and the ONE `fit` that drives every algorithm, single runs and vmapped populations.

An algorithm writes `make_trainer(...) -> FunctionTrainer` from four pure functions

    init_fn(key, hparams, args)   -> state          the state before unit 0 (a pytree)
    run_fn(state, args, n)        -> (state, metrics)  the next `n` (static) units: epochs, PPO updates, ...
    result_fn(state)              -> result         what the user keeps (params, histories)
    counter_fn(state)             -> int32 scalar   units completed

where `args` holds the arrays every member shares (a dataset, env params: passed as arguments, never baked
into the compiled program) and `hparams` the vmappable hyperparameters (learning rate, ...). `metrics` is a
dict of `[n]` arrays, one record per unit; an optional bool entry `"active"` says which units did work
(False for epochs after early stopping): `fit` logs nothing for inactive units.

`FunctionTrainer` jits these once and adds `train(key)` (the whole run), and `population(n)`: the same
trainer `vmap`-ed over a leading member axis (keys `[M]`, hparams `[M]`, shared `args`), whose metrics are
`[M, n]` and counter `[M]` (`population(n, member_args=...)` adds per-member arguments, e.g. bootstrap
resamples, and `population(n, hparams=grid)` a default grid). `fit` drives either:

    trainer = make_trainer(config, data)                  # any algorithm
    result = fit(trainer, jax.random.key(0), checkpointer=ckpt, every=5, writer=tb)
    members = fit(trainer.population(4), jax.random.split(jax.random.key(0), 4), checkpointer=ckpt)

`fit` runs `every` units per jitted chunk; after each chunk (on the host) it evaluates (optional hook),
saves the whole state with Orbax (best k by a metric plus the latest; `trading_jax.checkpoint`), writes
TensorBoard scalars (a population writes the member mean and each member's value), moves a progress bar
and calls the callbacks. With a checkpointer that already holds a checkpoint it resumes from the latest
one; the result is bit-identical to an uninterrupted `trainer.train(key)` however the run is chunked,
killed and resumed (the algorithms draw unit u's randomness from the state's key and u only).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import sys
import time
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.logging import get_logger

__all__ = ["Trainer", "FunctionTrainer", "fit", "units_done", "hyperparam_grid", "train_population", "chunk_hooks"]

log = get_logger(__name__)


class Trainer(Protocol):
    """What `fit` needs of an algorithm (`FunctionTrainer` implements it).

    Attributes:
        total: units (epochs, updates) of a whole run.
        unit: the unit's name, for progress and logs ("epoch", "update").
        samples_per_unit: samples (or env steps) per unit and member, for throughput.
        display: metric names shown on the progress bar.
        members: population size, or None for a single run.
    """

    total: int
    unit: str
    samples_per_unit: int
    display: tuple[str, ...]
    members: int | None

    def init(self, key, hparams=None) -> Any: ...

    def run(self, state, n: int) -> tuple[Any, dict]: ...

    def result(self, state) -> Any: ...

    def counter(self, state) -> Any: ...


@dataclasses.dataclass(frozen=True, eq=False)
class FunctionTrainer:
    """A `Trainer` built from pure functions (module docstring), jitted once.

    Attributes:
        init_fn, run_fn, result_fn, counter_fn: the pure functions (module docstring).
        args: the shared arrays passed to `init_fn` / `run_fn` (dataset, env params).
        hparams: default vmappable hyperparameters (a pytree of float32 scalars).
        total, unit, samples_per_unit, display: see `Trainer`.
        members: None, or the population size of a `population(...)`.
        config, model, mesh: what the algorithm was built with (for callers; `fit` ignores them).
        extras: anything else the algorithm exposes (e.g. the env, steps per epoch).
        dynamic_n: `run_fn` takes the count as a traced int32 (ONE compilation serves every chunk size,
            e.g. a `while_loop` with the count behind an optimisation barrier) and returns its metrics as
            `[total]` buffers indexed by unit; `run` cuts the chunk's `[n]` records out of them (units past
            `total` are zero and inactive).
        member_hparams: a population's default hyperparameters, `[M]` per leaf (`population(M, hparams=grid)`);
            None: `hparams` broadcast to every member.
    """

    init_fn: Callable
    run_fn: Callable
    result_fn: Callable
    counter_fn: Callable
    args: Any
    hparams: Any
    total: int
    unit: str = "step"
    samples_per_unit: int = 0
    display: tuple[str, ...] = ()
    members: int | None = None
    config: Any = None
    model: Any = None
    mesh: Any = None
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dynamic_n: bool = False
    member_hparams: Any = None

    def __getattr__(self, name):  # the algorithm's extras read as attributes: trainer.env, trainer.env_params
        extras = self.__dict__.get("extras")
        if extras is not None and name in extras:
            return extras[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # -------------------------------------------------------------- jitted once per trainer
    @functools.cached_property
    def _jit_init(self):
        return jax.jit(self.init_fn)

    @functools.cached_property
    def _jit_run(self):
        return jax.jit(self.run_fn) if self.dynamic_n else jax.jit(self.run_fn, static_argnums=2)

    @functools.cached_property
    def _jit_records(self):
        total = self.total

        def records(buffers, first, n):  # buffers [..., total], first [...] -> [..., n]
            idx = jnp.asarray(first)[..., None] + jnp.arange(n)
            out = {k: jnp.where(idx < total, jnp.take_along_axis(v, jnp.clip(idx, 0, total - 1), axis=-1), 0)
                   for k, v in buffers.items()}
            out["active"] = idx < total
            return out

        return jax.jit(records, static_argnums=2)

    @functools.cached_property
    def _jit_result(self):
        return jax.jit(self.result_fn)

    @functools.cached_property
    def _jit_counter(self):
        return jax.jit(self.counter_fn)

    # -------------------------------------------------------------------------- protocol
    def default_hparams(self):
        """The hyperparameters a run uses when none are given (broadcast to `[M]` for a population)."""
        if self.members is None:
            return self.hparams
        if self.member_hparams is not None:
            return self.member_hparams
        return jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (self.members,) + jnp.shape(a)), self.hparams)

    def init(self, key, hparams=None, args=None):
        """The state before unit 0 (`key` is `[M]` keys for a population; a single key is split into M)."""
        if self.members is not None and jnp.ndim(key) == 0:
            key = jax.random.split(key, self.members)
        hparams = self.default_hparams() if hparams is None else hparams
        return self._jit_init(key, hparams, self.args if args is None else args)

    def run(self, state, n: int, args=None):
        """`(state, metrics)` after the next `n` units (one compilation per distinct n, or one for all n
        with `dynamic_n`)."""
        args = self.args if args is None else args
        if not self.dynamic_n:
            return self._jit_run(state, args, int(n))
        first = self.counter(state)
        new, buffers = self._jit_run(state, args, jnp.asarray(int(n), jnp.int32))
        return new, self._jit_records(buffers, first, int(n))

    def result(self, state):
        return self._jit_result(state)

    def counter(self, state):
        """Units completed: an int32 scalar, or `[M]` for a population."""
        return self._jit_counter(state)

    def train(self, key, hparams=None, args=None):
        """The whole run in one call: `result(run(init(key), total)[0])`."""
        state = self.init(key, hparams, args)
        return self.result(self.run(state, self.total, args)[0])

    def population(self, members: int, member_args: Mapping[str, Any] | None = None, hparams=None
                   ) -> "FunctionTrainer":
        """This trainer `vmap`-ed over `members` runs: keys `[M]`, hparams `[M]`, shared `args`.

        One compilation trains every member; a member's result equals its single run up to float
        reassociation of the batched matmuls (tested to 1e-5).

        Args:
            members: the population size M.
            member_args: optional per-member arguments `{name: pytree with leading [M]}` merged into the
                trainer's `args` (which must then be a mapping, e.g. the supervised `{"data", "params"}`):
                member j's `run_fn`/`init_fn` see `args[name]` at index j, every other entry is shared. E.g.
                `{"train_index": idx [M, n_train]}` trains each supervised member on its own bootstrap
                resample (`trading_jax.ensemble.bootstrap_indices`). Passing `args=` to `init`/`run` later
                must keep these names with their `[M]` leading axis.
            hparams: the population's default hyperparameters, `[M]` per leaf (e.g. `hyperparam_grid(...)`);
                None: `self.hparams` broadcast to every member. `fit(..., hparams=...)` still overrides it.

        Raises:
            ValueError: already a population, M < 1, `member_args` on non-mapping args or with a leading
                axis other than M, `hparams` leaves without a leading axis of M.
        """
        if self.members is not None:
            raise ValueError("this trainer is already a population")
        if int(members) < 1:
            raise ValueError(f"a population needs at least one member, got {members}")
        members = int(members)
        run_fn, init_one, args = self.run_fn, self.init_fn, self.args
        names: frozenset = frozenset()
        if member_args:
            if not isinstance(args, Mapping):
                raise ValueError(f"member_args need the trainer's args to be a mapping, got {type(args).__name__}")
            for name, value in member_args.items():
                for leaf in jax.tree.leaves(value):
                    if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != members:
                        raise ValueError(f"member_args[{name!r}] must have a leading axis of {members} members, "
                                         f"got shape {jnp.shape(leaf)}")
            names = frozenset(member_args)
            args = {**args, **member_args}
        if hparams is not None:
            for leaf in jax.tree.leaves(hparams):
                if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != members:
                    raise ValueError(f"population hparams must have a leading axis of {members} members, got a leaf "
                                     f"of shape {jnp.shape(leaf)}")

        def split(a):  # (per-member entries, vmapped on axis 0; shared entries, closed over)
            return {k: a[k] for k in names}, {k: v for k, v in a.items() if k not in names}

        def init_fn(keys, hparams, args):
            if not names:
                return jax.vmap(init_one, in_axes=(0, 0, None))(keys, hparams, args)
            own, shared = split(args)
            return jax.vmap(lambda k, h, o: init_one(k, h, {**shared, **o}))(keys, hparams, own)

        def vrun(state, args, n):
            if not names:
                return jax.vmap(lambda s: run_fn(s, args, n))(state)
            own, shared = split(args)
            return jax.vmap(lambda s, o: run_fn(s, {**shared, **o}, n))(state, own)

        return dataclasses.replace(
            self, init_fn=init_fn, run_fn=vrun, result_fn=jax.vmap(self.result_fn),
            counter_fn=jax.vmap(self.counter_fn), members=members, args=args, member_hparams=hparams,
        )


def hyperparam_grid(base, **values):
    """A grid for a population (`trainer.population(n)`, or `jax.vmap(train)(keys, grid)`).

    `base` is an algorithm's hyperparameters (a `flax.struct` dataclass of float32 scalars). The named
    fields take the listed values (lists of one common length n); every other leaf is `base`'s repeated
    n times. Every leaf comes back float32 `[n]`.

    Raises:
        ValueError: an unknown field, no field, or lists of different lengths.
    """
    fields = [f.name for f in dataclasses.fields(base)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown}; fields: {fields}")
    sizes = {len(v) for v in values.values()}
    if len(sizes) != 1:
        raise ValueError(f"give one or more hyperparameters with lists of one common length; got sizes {sorted(sizes)}")
    (n,) = sizes
    repeated = jax.tree.map(lambda a: jnp.full((n,) + jnp.shape(a), a, jnp.float32), base)
    return repeated.replace(**{k: jnp.asarray(v, jnp.float32) for k, v in values.items()})


def train_population(trainer: "FunctionTrainer", key, n_members: int | None = None, hparams=None):
    """Train K members of `trainer` in ONE vmapped compilation: `trainer.population(K).train(split(key, K), hparams)`.

    Args:
        trainer: a single-run `FunctionTrainer` (any algorithm's `make_trainer(...)`).
        key: PRNG key, split into the K members' keys.
        n_members: K (seeds of one setting); may be left out when `hparams` is given.
        hparams: optional hyperparameters with `[K]` leaves (`hyperparam_grid`): one setting per member.

    Returns:
        The algorithm's result with a leading `[K]` member axis on every leaf.

    Raises:
        ValueError: neither K nor a grid, or a K that differs from the grid's length.
    """
    if hparams is not None:
        k = int(jax.tree.leaves(hparams)[0].shape[0])
        if n_members is not None and int(n_members) != k:
            raise ValueError(f"n_agents={n_members} but hparams hold {k} settings")
    elif n_members is None:
        raise ValueError("give n_agents or a hyperparameter grid")
    else:
        k = int(n_members)
    return trainer.population(k).train(jax.random.split(key, k), hparams)


# ----------------------------------------------------------------------------------------- fit


_HOOKS: contextvars.ContextVar = contextvars.ContextVar("trading_jax_chunk_hooks", default=(None, None))


@contextlib.contextmanager
def chunk_hooks(on_chunk: Callable[[dict, int, Any], None] | None = None,
                on_restore: Callable[[Any, Any], Any] | None = None):
    """Hooks that every `fit` run inside this context (same thread or task) calls, for drivers that wrap whole
    runs, e.g. a Ray Tune trial (`trading_jax.runs.tune`).

    Args:
        on_chunk: `on_chunk(record, units_done, state)` after each chunk's checkpoint and logs, where `record`
            is the chunk's record as checkpointed (the last active value of every metric, the member mean for a
            population, and the evaluation's values; empty when no unit of the chunk was active). May raise to
            stop the run.
        on_restore: `on_restore(restored_state, fresh_state) -> state` right after `fit` restores a checkpoint,
            with `fresh_state = trainer.init(key, hparams)` of this run: e.g. put the run's own hyperparameters
            (`fresh_state.hparams`) into a state restored from another run's checkpoint (population-based
            training).

    Without this context `fit` behaves exactly as documented.
    """
    token = _HOOKS.set((on_chunk, on_restore))
    try:
        yield
    finally:
        _HOOKS.reset(token)


def units_done(counter) -> int:
    """Units completed from a trainer's counter: a scalar, or `[M]` for a population (members in step)."""
    values = np.asarray(jax.device_get(counter)).reshape(-1)
    low, high = int(values.min()), int(values.max())
    if low != high:
        raise ValueError(f"the population's members are at different units ({low} .. {high}); they must move in step")
    return low


def _host(metrics: Mapping[str, Any], n: int, members: int | None) -> dict[str, np.ndarray]:
    """Chunk metrics as float64 NumPy `[M, n]` (a single run gets M = 1)."""
    out = {}
    for name, value in jax.device_get(dict(metrics)).items():
        a = np.asarray(value)
        a = a.reshape(1, -1) if members is None else a.reshape(members, -1)
        out[name] = a[:, :n]
    return out


def _mean_over_members(values: np.ndarray, active: np.ndarray) -> np.ndarray:
    """`[M, n]` -> `[n]`: the mean over the members active at each unit (NaN where none is)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.where(active, values, 0.0).sum(0)
        count = active.sum(0)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _scalar(value) -> float | np.ndarray:
    a = np.asarray(value, np.float64)
    return float(a) if a.ndim == 0 else a


def fit(
    trainer: Trainer,
    key,
    *,
    checkpointer=None,
    every: int = 1,
    writer=None,
    show_progress: bool = True,
    max_units: int | None = None,
    evaluate: Callable[[Any, int], Mapping[str, Any]] | None = None,
    callbacks: Sequence[Callable[[Any, dict, int], None]] = (),
    hparams=None,
    param_histograms: bool = False,
    desc: str = "train",
):
    """Run `trainer` in chunks of `every` units with checkpoints, validation, logs and a progress bar.

    Args:
        trainer: a `Trainer` (e.g. `make_trainer(...)` of any algorithm, or its `population(M)`).
        key: the run's key (`[M]` keys for a population); pass the same key when resuming.
        checkpointer: a `trading_jax.checkpoint.Checkpointer` or None. If it holds a checkpoint, the run
            resumes from its latest step (restored into `trainer.init(key)`'s structure). After each chunk
            the whole state is saved at step = units completed with the chunk's last active record of every
            metric (the member mean for a population) and the evaluation's values, so its `best_metric`
            can be any of them. The last unit is always saved.
        every: units per jitted chunk (and per checkpoint, evaluation and log write).
        writer: a `trading_jax.logging.TensorBoardWriter` or None: every metric of every active unit at
            step = unit index (a population: the member mean as `NAME` and `member_j/NAME`), the
            evaluation's values at the chunk's end as `eval/NAME`.
        show_progress: a tqdm bar (stderr) with the `trainer.display` metrics and samples/s; after early
            stopping (every member inactive) it says "stopped early after k epochs" instead of a NaN loss.
        max_units: stop (without error) after this many units in total; resume later with another call.
        evaluate: `evaluate(result, units_done) -> {name: float or [M] array}` on `trainer.result(state)`
            after each chunk (e.g. validation episodes).
        callbacks: each `callback(state, chunk_metrics, units_done)` after the checkpoint; may raise to stop.
        hparams: the run's hyperparameters (default `trainer.hparams`, broadcast for a population).
        param_histograms: also write a histogram of every param leaf after each chunk (needs `writer`
            and a state with a `params` attribute).
        desc: the progress bar's label.

    Returns:
        `trainer.result(state)` of the final state (a partial run after `max_units`). In a multi-process run
        (`trading_jax.distributed`) it is a NumPy copy on every process (`distributed.to_host`), as is the
        result `evaluate` sees, so what follows training runs on each process's own devices; the progress bar
        and the TensorBoard writer are process 0's only, and every process must call `fit` (the checkpoints
        are collective Orbax saves).
    """
    if int(every) < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    total = int(trainer.total)
    members = trainer.members
    stop_at = total if max_units is None else max(0, min(total, int(max_units)))
    on_chunk, on_restore = _HOOKS.get()
    state = trainer.init(key, hparams)
    if checkpointer is not None and checkpointer.latest_step() is not None:
        fresh = state
        state = checkpointer.restore(checkpointer.latest_step(), target=state)
        if on_restore is not None:
            state = on_restore(state, fresh)
        log.info("%s: resuming from the checkpoint after %s %d", desc, trainer.unit, units_done(trainer.counter(state)))
    done = units_done(trainer.counter(state))

    multiprocess = jax.process_count() > 1
    if multiprocess:  # evaluation and the returned result see host copies; only process 0 shows and logs
        from trading_jax.distributed import to_host

        result_of = lambda s: to_host(trainer.result(s))  # noqa: E731
        show_progress = show_progress and jax.process_index() == 0
        writer = writer if jax.process_index() == 0 else None
    else:
        result_of = trainer.result
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=done, desc=desc, unit=trainer.unit, file=sys.stderr, dynamic_ncols=True)
    stopped_at = None
    try:
        while done < stop_at:
            n = min(int(every), stop_at - done)
            start = time.perf_counter()
            state, metrics = trainer.run(state, n)
            new_done = units_done(trainer.counter(state))
            chunk = _host(metrics, new_done - done, members)
            seconds = max(time.perf_counter() - start, 1e-9)
            m = next(iter(chunk.values())).shape[0] if chunk else 1
            active = chunk.pop("active", np.ones((m, new_done - done), bool)).astype(bool)
            means = {k: _mean_over_members(v.astype(np.float64), active) for k, v in chunk.items()}
            any_active = active.any(0)
            last = int(np.nonzero(any_active)[0][-1]) if any_active.any() else None
            record = {k: float(v[last]) for k, v in means.items()} if last is not None else {}
            evaluation = {}
            if evaluate is not None:
                evaluation = {k: _scalar(v) for k, v in evaluate(result_of(state), new_done).items()}
                record.update({k: float(np.nanmean(v)) if np.ndim(v) else v for k, v in evaluation.items()})
            if checkpointer is not None:
                checkpointer.save(new_done, state, record, force=new_done == total)
            if writer is not None:
                _write(writer, chunk, means, active, done, evaluation, new_done, members)
                if param_histograms and hasattr(state, "params"):
                    for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
                        writer.histogram(new_done, "params/" + "/".join(str(getattr(k, "key", k)) for k in path),
                                         np.asarray(leaf))
                writer.flush()
            if stopped_at is None and not active[:, -1].any():
                stopped_at = done + (last + 1 if last is not None else 0)
                log.info("%s: training stopped early after %d %ss", desc, stopped_at, trainer.unit)
            if bar is not None:
                if stopped_at is not None:
                    bar.set_postfix_str(f"stopped early after {stopped_at} {trainer.unit}s", refresh=False)
                else:
                    shown = {k: f"{record[k]:.4g}" for k in trainer.display if k in record}
                    rate = int(active.sum()) * max(1, int(trainer.samples_per_unit)) / seconds
                    bar.set_postfix(**shown, samples_per_s=f"{rate:.4g}", refresh=False)
                bar.update(new_done - done)
            log.debug("%s: %s %d-%d %s (%.3g s)", desc, trainer.unit, done, new_done - 1, record, seconds)
            done = new_done
            if on_chunk is not None:
                on_chunk(record, done, state)
            for callback in callbacks:
                callback(state, chunk, done)
    finally:
        if bar is not None:
            bar.close()
    return result_of(state)


def _write(writer, chunk, means, active, first, evaluation, new_done, members) -> None:
    """TensorBoard scalars of one chunk: active units only; a population adds `member_j/NAME`."""
    n = active.shape[1]
    for i in range(n):
        if not active[:, i].any():
            continue
        values = {k: v[i] for k, v in means.items() if math.isfinite(v[i])}
        if members is not None:
            for j in range(active.shape[0]):
                if active[j, i]:
                    values.update({f"member_{j}/{k}": float(v[j, i]) for k, v in chunk.items()
                                   if math.isfinite(float(v[j, i]))})
        writer.scalars(first + i, values)
    scalars = {}
    for k, v in evaluation.items():
        if np.ndim(v):
            scalars.update({f"eval/member_{j}/{k}": float(x) for j, x in enumerate(np.ravel(v)) if math.isfinite(x)})
            v = float(np.nanmean(v))
        if math.isfinite(v):
            scalars[f"eval/{k}"] = v
    if scalars:
        writer.scalars(new_done, scalars)
