"""Chunked PPO training with Orbax checkpoints, periodic evaluation, TensorBoard and a progress bar.

`fit(trainer, key, ...)` runs `trainer.run` (a jitted `lax.scan`/`while_loop` of updates) in chunks of
`every_updates` updates. After each chunk, on the host, it optionally evaluates the current policy,
saves the whole `PPOState` (best k by a metric plus the latest), writes TensorBoard scalars and moves
the progress bar. The chunking does not change the result: the final `PPOResult` equals
`trainer.train(key)` bit for bit, and a run that is killed and restarted on the same checkpoint
directory resumes from its latest checkpoint to the same final params.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import jax
import numpy as np

from trading_jax.logging import get_logger

__all__ = ["fit"]

log = get_logger(__name__)


def _chunk_scalars(metrics: dict, first_update: int, n: int) -> list[tuple[int, dict[str, float]]]:
    """Per-update TensorBoard scalars of a chunk's `[n]` metric records."""
    host = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
    return [(first_update + i, {k: float(v[i]) for k, v in host.items()}) for i in range(n)]


def _mean_episode_return(metrics: dict) -> float:
    """Mean return of the episodes completed in a chunk, weighted by their count (NaN when none)."""
    returns = np.asarray(metrics["episode_return"], np.float64)
    counts = np.asarray(metrics["episode_count"], np.float64)
    total = counts.sum()
    return float((returns * counts).sum() / total) if total > 0 else float("nan")


def fit(
    trainer,
    key,
    checkpointer=None,
    every_updates: int = 10,
    writer=None,
    show_progress: bool = True,
    *,
    hparams=None,
    env_params=None,
    max_updates: int | None = None,
    evaluate: Callable[[Any, int], dict] | None = None,
    callback: Callable[[Any, dict], None] | None = None,
    desc: str = "ppo",
):
    """Train `trainer` (from `trading_jax.rl.ppo.make_trainer`) in chunks, with checkpoints and logs.

    Args:
        trainer: a `PPOTrainer`.
        key: the training key (pass the same key when resuming).
        checkpointer: a `trading_jax.checkpoint.Checkpointer` or None. If it holds a checkpoint, training
            resumes from its latest step (restored into `trainer.init(key, hparams)`'s structure). After
            each chunk the `PPOState` is saved at step = updates completed, with metrics
            `{"episode_return": mean return of the chunk's completed training episodes}` plus whatever
            `evaluate` returned (rank checkpoints by any of them with `CheckpointConfig.best_metric`).
        every_updates: updates per jitted chunk (and per checkpoint, evaluation and log write).
        writer: a `trading_jax.logging.TensorBoardWriter` or None: every per-update metric of
            `PPOResult.metrics` at step = update index, and the evaluation's metrics at the chunk's end.
        show_progress: a tqdm bar over updates (stderr) with the mean episode return and env-steps/s.
        hparams: the run's `PPOHyperparams` (default: the config's).
        env_params: train on these `EnvParams` instead of the trainer's default.
        max_updates: stop (without error) after this many updates in total; resume later with another call.
        evaluate: optional `evaluate(policy_params, updates_done) -> {name: float}` run after each chunk
            on the current policy (`trainer.result(state)`: params + observation normaliser), e.g. on
            held-out episodes.
        callback: `callback(state, chunk_metrics)` after each chunk (after the checkpoint); may raise to stop.
        desc: the progress bar's label.

    Returns:
        `trainer.result(state)` of the final state.
    """
    if every_updates < 1:
        raise ValueError(f"every_updates must be >= 1, got {every_updates}")
    config = trainer.config
    total = config.num_updates
    stop_at = total if max_updates is None else max(0, min(total, int(max_updates)))
    state = trainer.init(key, hparams, env_params)
    if checkpointer is not None and checkpointer.latest_step() is not None:
        state = checkpointer.restore(checkpointer.latest_step(), target=state)
        log.info("resuming PPO from the checkpoint after update %d", int(state.update))
    done = int(state.update)
    steps_per_update = config.num_envs * config.num_steps

    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=done, desc=desc, unit="update", file=sys.stderr, dynamic_ncols=True)
    try:
        while done < stop_at:
            n = min(every_updates, stop_at - done)
            start = time.perf_counter()
            state, chunk = trainer.run(state, n, env_params)
            new_done = int(state.update)
            seconds = max(time.perf_counter() - start, 1e-9)
            chunk = {k: np.asarray(v)[: new_done - done] for k, v in jax.device_get(chunk).items()}
            metrics = {"episode_return": _mean_episode_return(chunk)}
            if evaluate is not None:
                metrics.update({k: float(v) for k, v in evaluate(trainer.result(state), new_done).items()})
            if checkpointer is not None:
                checkpointer.save(new_done, state, metrics, force=new_done == total)
            if writer is not None:
                for step, values in _chunk_scalars(chunk, done, new_done - done):
                    writer.scalars(step, {f"train/{k}": v for k, v in values.items()})
                if evaluate is not None:
                    writer.scalars(new_done, {f"eval/{k}": v for k, v in metrics.items() if k != "episode_return"})
                writer.flush()
            rate = (new_done - done) * steps_per_update / seconds
            if bar is not None:
                bar.set_postfix(episode_return=f"{metrics['episode_return']:.4g}", env_steps_per_s=f"{rate:.3g}",
                                refresh=False)
                bar.update(new_done - done)
            log.debug("updates %d-%d: episode return %.4g, %.3g env-steps/s", done, new_done - 1,
                      metrics["episode_return"], rate)
            done = new_done
            if callback is not None:
                callback(state, chunk)
    finally:
        if bar is not None:
            bar.close()
    return trainer.result(state)
