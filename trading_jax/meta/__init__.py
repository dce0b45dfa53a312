"""Meta-learning: MAML (second order), first-order MAML and Meta-SGD over tasks drawn on device.

    from trading_jax.meta import MAMLConfig, SyntheticRegimeTasks, make_trainer
    source = SyntheticRegimeTasks(window=16)                      # F = 3 features per bar
    config = MAMLConfig(model="tcn", preset="tiny", method="maml", meta_steps=500)
    result = make_trainer(config, source).train(jax.random.key(0))  # MAMLResult(params, inner_lrs, history)

Real data: `args = tasks_from_splits(x, y, asset_ids)` and `make_trainer(config, ArrayTasks(), args)`.
At test time `adapt(config, apply, result.params, support_x, support_y, key)` adapts to any k-shot task.
Names are imported lazily, so `import trading_jax.meta` does not pull in JAX until used.
"""

from trading_jax._lazy import lazy_exports

_EXPORTS = {
    # configuration, state and results
    "MAMLConfig": "maml", "MAMLHyperparams": "maml", "MAMLResult": "maml", "MAMLState": "maml",
    "MetaParams": "maml", "METHODS": "maml", "hyperparams": "maml",
    # pure pieces
    "make_apply": "maml", "task_loss": "maml", "init_meta_params": "maml", "split_meta_params": "maml",
    "adapt": "maml", "meta_loss": "maml", "evaluate": "maml",
    # training
    "make_trainer": "maml", "make_train": "maml",
    # task sources
    "Tasks": "tasks", "ArrayTasks": "tasks", "SyntheticRegimeTasks": "tasks", "tasks_from_splits": "tasks",
    "SYNTHETIC_FEATURES": "tasks", "bar_features": "tasks",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
