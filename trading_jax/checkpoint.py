"""Checkpoints for exact resume and best-model selection, on top of Orbax's `CheckpointManager`.

A training state is any pytree of arrays: params, optimizer state, a step counter and the PRNG key.
`Checkpointer.save` writes one every `save_every_steps` steps and keeps

* the `keep_best` best checkpoints by `best_metric` (smallest for `mode="min"`, largest for `"max"`), and
* the `keep_last` most recent ones, so a run can always resume from where it stopped;

every other step directory is deleted from disk. The metrics of every saved step are also written,
human-readable, to a JSON sidecar `metrics.json` beside the step directories (steps whose
checkpoint was later deleted stay in it: it is the run's history).

Typed PRNG keys (`jax.random.key`) cannot be serialised as such: store `jax.random.key_data(key)`
in the state and rebuild the key with `jax.random.wrap_key_data` after restoring. As a convenience,
`save` converts any typed-key leaf to its key data, and `restore` wraps it back when the `target`
leaf at that position is a concrete typed key (its implementation is read from it).

Example:
    >>> ckpt = Checkpointer(CheckpointConfig(directory="/tmp/run", save_every_steps=100,
    ...                                      keep_best=3, best_metric="val_loss", mode="min"))
    >>> ckpt.save(step, state, {"val_loss": 0.12})          # no-op unless step % 100 == 0
    >>> state = ckpt.restore(target=state)                  # latest step, same pytree structure
    >>> ckpt.close()
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.logging import get_logger

_log = get_logger(__name__)
SIDECAR = "metrics.json"


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Where and how often to checkpoint, and which checkpoints to keep.

    Attributes:
        directory: root folder; one sub-folder per saved step (created if missing).
        save_every_steps: `save(step, ...)` writes only when `step % save_every_steps == 0`
            (or when called with `force=True`).
        keep_best: how many of the best checkpoints by `best_metric` to keep (k >= 0).
        best_metric: name of the metric in the `metrics` dict that ranks checkpoints.
        mode: "min" (lower is better, e.g. a loss) or "max" (higher is better, e.g. Sharpe).
        keep_last: how many of the most recent checkpoints to keep regardless of the metric (>= 1,
            so that training can always resume from the latest step).
    """

    directory: str | os.PathLike
    save_every_steps: int = 1000
    keep_best: int = 3
    best_metric: str = "loss"
    mode: str = "min"
    keep_last: int = 1

    def __post_init__(self):
        if self.save_every_steps < 1:
            raise ValueError(f"save_every_steps must be >= 1, got {self.save_every_steps}")
        if self.keep_best < 0:
            raise ValueError(f"keep_best must be >= 0, got {self.keep_best}")
        if self.keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 (the latest step is needed to resume), got {self.keep_last}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")


def _is_typed_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _to_serialisable(tree: Any) -> Any:
    """Replace typed PRNG-key leaves by their raw `key_data` (uint32)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_typed_key(x) else x, tree)


def _plain_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Metrics as JSON-safe Python floats (NaN/inf kept as floats; JSON writes them as NaN/Infinity)."""
    if not metrics:
        return {}
    return {str(k): float(np.asarray(v)) for k, v in metrics.items()}


class Checkpointer:
    """Save and restore training-state pytrees with best-k and latest-k retention (Orbax).

    Args:
        config: a `CheckpointConfig`.

    A new `Checkpointer` on an existing directory sees the steps already there, so
    `latest_step()` / `restore()` resume a stopped run.
    """

    def __init__(self, config: CheckpointConfig):
        import orbax.checkpoint as ocp  # heavy: imported when checkpointing is actually used

        self.config = config
        self.directory = Path(config.directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ocp = ocp
        name, mode = config.best_metric, config.mode
        worst = math.inf if mode == "min" else -math.inf

        def score(metrics) -> float:
            # A NaN/inf or missing metric ranks as the worst possible value, never as the best.
            value = float(metrics.get(name, worst)) if metrics is not None else worst
            return value if math.isfinite(value) else worst

        policies = ocp.checkpoint_managers
        preservation = policies.AnyPreservationPolicy(
            [
                policies.BestN(get_metric_fn=score, reverse=(mode == "min"), n=config.keep_best,
                               keep_checkpoints_without_metrics=False),
                policies.LatestN(n=config.keep_last),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=policies.FixedIntervalPolicy(config.save_every_steps),
            preservation_policy=preservation,
            best_fn=score,  # used by `best_step()`
            best_mode=mode,
            create=True,
            enable_async_checkpointing=False,  # a returned save is on disk: simpler reasoning on resume
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._sidecar = self.directory / SIDECAR
        self._history: dict[str, dict[str, float]] = {}
        if self._sidecar.exists():
            try:
                self._history = json.loads(self._sidecar.read_text())
                if not isinstance(self._history, dict):
                    raise ValueError
            except (ValueError, UnicodeDecodeError):
                raise ValueError(f"{self._sidecar} is corrupt (not a JSON object of step -> metrics): restore it, delete "
                                 "it to keep the checkpoints without their metric history, or start fresh "
                                 "(trading-jax train --overwrite)") from None

    # ------------------------------------------------------------------ saving
    def save(self, step: int, state: Any, metrics: Mapping[str, Any] | None = None, force: bool = False) -> bool:
        """Save `state` at `step` if `step % save_every_steps == 0` (or `force`), then prune old steps.

        Args:
            step: the training step (a Python int; the state may also carry its own counter).
            state: pytree of arrays (params, optimizer state, key data, counters).
            metrics: scalars for this step; `metrics[best_metric]` ranks the checkpoint. A step saved
                without that metric (or with a NaN) ranks worst and survives only as one of the latest.
            force: save even off the interval (e.g. at the end of training or before an interruption).

        Returns:
            True if a checkpoint was written, False if skipped (off-interval, or the step exists).
        """
        step = int(step)
        if step in self._manager.all_steps():
            _log.info("checkpoint for step %d already exists; not overwritten", step)
            return False
        plain = _plain_metrics(metrics)
        saved = self._manager.save(
            step, args=self._ocp.args.StandardSave(_to_serialisable(state)), metrics=plain, force=force
        )
        if saved:
            self._manager.wait_until_finished()
            self._history[str(step)] = plain
            if jax.process_index() == 0:  # a multi-process save: every process saves its shards, one writes the sidecar
                tmp = self._sidecar.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(self._history, indent=1, sort_keys=True))
                os.replace(tmp, self._sidecar)
            _log.info("saved checkpoint at step %d (%s)", step, plain)
        return bool(saved)

    # --------------------------------------------------------------- querying
    def all_steps(self) -> list[int]:
        """Steps currently on disk, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The most recent saved step, or None if there is none (resume from here)."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The saved step with the best `best_metric` (per `mode`), or None if there is none."""
        return self._manager.best_step()

    def metrics(self) -> dict[int, dict[str, float]]:
        """Metrics of every step ever saved in this directory (from the JSON sidecar)."""
        return {int(k): v for k, v in self._history.items()}

    # -------------------------------------------------------------- restoring
    def restore(self, step: int | None = None, target: Any = None) -> Any:
        """Restore the state saved at `step` (default: the latest).

        Args:
            step: which step; None for `latest_step()`.
            target: a pytree with the structure, shapes and dtypes to restore into: the concrete
                initial state, or its abstract version (`jax.eval_shape` / `jax.ShapeDtypeStruct`).
                With a target the result has exactly its structure (NamedTuples of optax states
                included); typed-key leaves of a concrete target come back as typed keys; a leaf that is
                a `jax.Array` comes back with its sharding, so a checkpoint saved by P processes restores
                onto the mesh of another process or device count (the target's).
                Without one, the stored tree comes back on this process's first device (NamedTuples
                as dicts, keys as uint32 key data), whatever mesh saved it.

        Returns:
            The restored pytree.

        Raises:
            FileNotFoundError: no checkpoint in the directory (or not that step).
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint to restore in {self.directory}")
        elif int(step) not in self._manager.all_steps():
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory} (have {self.all_steps()})")
        step = int(step)
        if target is None:
            return self._manager.restore(step, args=self._ocp.args.StandardRestore(self._local_layout(step)))

        def abstract(x):
            if _is_typed_key(x):
                if isinstance(x, jax.ShapeDtypeStruct):
                    raise TypeError(
                        "an abstract typed PRNG key in `target` does not say its implementation: pass a "
                        "concrete key leaf (e.g. the freshly initialised state) or store jax.random.key_data"
                    )
                x = jax.random.key_data(x)
            sharding = getattr(x, "sharding", None) if isinstance(x, jax.Array) else None
            return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x), sharding=sharding)

        restored = self._manager.restore(
            step, args=self._ocp.args.StandardRestore(jax.tree.map(abstract, target))
        )
        return jax.tree.map(
            lambda t, r: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_typed_key(t) else r,
            target,
            restored,
        )

    def _local_layout(self, step: int):
        """The stored tree as abstract arrays on this process's first device, or None (Orbax's stored layout).

        A checkpoint saved by several processes records their global mesh; restoring it without a target in
        one process (an export, an analysis) must not ask for that mesh."""
        try:
            meta = self._ocp.StandardCheckpointer().metadata(self.directory / str(step) / "default")
            tree = getattr(meta, "item_metadata", meta)
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), tree)
        except Exception:  # noqa: BLE001 - another layout of the step folder: Orbax's own default
            return None

    def close(self) -> None:
        """Wait for pending writes and release Orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
