"""Supervised training: `make_train(config, data) -> train(key)`, `make_trainer` / `fit` (checkpointed, resumable), losses, augmentation, curriculum, pre-training; the portfolio network's training (`training.portfolio`).

Names are imported lazily, so `import trading_jax.training` does not pull in JAX, Flax or optax until used.
"""

from trading_jax._lazy import lazy_exports

_EXPORTS = {
    # configuration and data
    "TrainConfig": "config", "Dataset": "config",
    # losses and metrics
    "mse": "losses", "huber": "losses", "cross_entropy": "losses", "smooth_targets": "losses",
    "multitask_loss": "losses", "task_loss": "losses", "mae": "losses", "rmse": "losses",
    "accuracy": "losses", "direction_accuracy": "losses", "MULTITASK_TASKS": "losses",
    # augmentation
    "gaussian_noise": "augment", "mixup": "augment", "mixup_with": "augment", "fgsm": "augment",
    # curriculum
    "sample_volatility": "curriculum", "pool_size": "curriculum", "curriculum_permutation": "curriculum",
    # supervised training
    "make_train": "train", "TrainResult": "train", "make_schedule": "train", "make_optimizer": "train",
    "check_finite": "train", "early_stopping_update": "train", "EarlyStopping": "train", "make_mesh": "train",
    "make_trainer": "train", "Trainer": "train", "TrainState": "train", "fit": "train",
    # self-supervised pre-training
    "make_pretrain": "pretrain", "PretrainResult": "pretrain", "random_time_mask": "pretrain",
    "masked_mse": "pretrain",
    # the portfolio network's multi-objective training (its make_train / make_trainer: trading_jax.training.portfolio)
    "multi_objective_loss": "portfolio", "PortfolioTrainConfig": "portfolio", "PortfolioData": "portfolio",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
