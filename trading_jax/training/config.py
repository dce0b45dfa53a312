"""Training configuration (a frozen, hashable dataclass) and the `Dataset` pytree it trains on."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

TASKS = ("regression", "classification", "multitask")
DTYPES = ("float32", "bfloat16")


class Dataset(NamedTuple):
    """Train and validation arrays (a pytree; every leaf has the sample axis first).

    Attributes:
        x_train: `[n_train, time, features]` float inputs.
        y_train: targets for the task: regression `[n_train]` or `[n_train, n_outputs]` floats;
            classification `[n_train]` integer class labels; multitask a dict with "price",
            "volatility", "volume" `[n_train]`/`[n_train, 1]` floats and "direction" `[n_train]` ints
            (missing tasks are left out of the loss).
        x_val: `[n_val, time, features]`.
        y_val: targets shaped like `y_train` with `n_val` samples.
        difficulty: optional `[n_train]` curriculum difficulty (e.g. realised volatility); when None
            and `TrainConfig.curriculum` is on, `curriculum.sample_volatility(x_train)` is used.
    """

    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any
    difficulty: Any = None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Supervised training configuration (hashable, so usable as a static argument).

    Defaults follow seed document 000's "Training Strategy" where it gives a value (AdamW, weight decay
    1e-5, label smoothing 0.1 is opt-in here, noise 0.01 and mixup 0.2 are opt-in), scaled for tests.
    Randomness never lives here: `train(key)` takes the key.

    Attributes:
        model: registered model name (`trading_jax.models.create`).
        preset: model preset name, or None.
        model_kwargs: extra model arguments as a tuple of `(name, value)` pairs (hashable);
            `TrainConfig.with_model_kwargs(...)` / `model_config()` convert from/to a dict.
        task: "regression" (output "prediction"), "classification" (output "logits") or "multitask"
            (outputs "price", "direction_logits", "volatility", "volume", optionally "log_vars"; the price
            transformer gives "price", "volatility" and a "confidence" head in place of "direction_logits").
        epochs: number of passes (each a `lax.scan` over minibatches).
        batch_size: minibatch size; the last `n_train % batch_size` samples of each epoch's permutation
            are dropped (a different remainder every epoch, so every sample is still seen over epochs).
        learning_rate: peak learning rate of the warm-up + cosine schedule.
        warmup_steps: linear warm-up from 0 to `learning_rate` over this many optimiser steps.
        final_lr_fraction: the cosine decays to `final_lr_fraction * learning_rate` at the last step.
        weight_decay: AdamW decoupled weight decay.
        max_grad_norm: gradients are clipped to this global norm before AdamW.
        label_smoothing: epsilon of label smoothing for the classification losses (training only).
        regression_loss: "mse" or "huber" (with `huber_delta`).
        huber_delta: Huber transition point.
        multitask_weights: `(task, weight)` pairs for "price", "direction", "volatility", "volume";
            the defaults are seed 000's loss weights (volume is not weighted there: 0).
        confidence_weight: weight of `losses.confidence_loss` (a confidence head's cross-entropy against
            whether the classifier's call is right) in a classification objective; None: 1 for a model with a
            learned confidence head (`losses.LEARNED_CONFIDENCE_MODELS`), 0 otherwise.
        uncertainty_weighting: multiply the weighted multitask losses by the model's learned
            `log_vars` (Kendall et al. 2018; see `losses.multitask_loss`).
        noise_std: std of Gaussian input noise (0 disables).
        mixup_alpha: Beta(alpha, alpha) mixup of inputs and targets (0 disables).
        fgsm_epsilon: adversarial training: the loss is L(x) + L(x + eps sign(grad_x L)) (0 disables).
        curriculum: order training from calm to volatile samples: samples are ranked by difficulty
            (`Dataset.difficulty`, default the realised volatility of input feature
            `curriculum_feature`); epoch e trains only on the calmest `pool_size(e)` samples, a pool
            growing linearly from `curriculum_start * n_train` at epoch 0 to all samples at epoch
            `curriculum_ramp * epochs` (see `curriculum.pool_size`). Steps beyond the pool are masked.
        curriculum_start: initial pool fraction.
        curriculum_ramp: fraction of the epochs over which the pool grows to the full set.
        curriculum_feature: input feature whose realised volatility ranks samples.
        compute_dtype: "float32" or "bfloat16": the forward/backward pass casts params and inputs to
            this dtype; params, optimiser state and losses stay float32.
        patience: early stopping: stop updating after this many epochs without a validation
            improvement (None: never stop; the best params are still tracked).
        eval_batch_size: validation is computed in chunks of this many samples.
        pretrain_mask_ratio: fraction of time steps masked in self-supervised pre-training.
    """

    model: str
    preset: str | None = None
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    task: str = "regression"
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 0
    final_lr_fraction: float = 0.0
    weight_decay: float = 1e-5
    max_grad_norm: float = 1.0
    label_smoothing: float = 0.0
    regression_loss: str = "mse"
    huber_delta: float = 1.0
    multitask_weights: tuple[tuple[str, float], ...] = (
        ("price", 1.0), ("direction", 0.8), ("volatility", 0.5), ("volume", 0.0),
    )
    confidence_weight: float | None = None
    uncertainty_weighting: bool = False
    noise_std: float = 0.0
    mixup_alpha: float = 0.0
    fgsm_epsilon: float = 0.0
    curriculum: bool = False
    curriculum_start: float = 1.0 / 3.0
    curriculum_ramp: float = 0.5
    curriculum_feature: int = 0
    compute_dtype: str = "float32"
    patience: int | None = None
    eval_batch_size: int = 256
    pretrain_mask_ratio: float = 0.15

    def __post_init__(self):
        if isinstance(self.model_kwargs, dict):  # accept a dict, store hashable pairs
            object.__setattr__(self, "model_kwargs", tuple(sorted(self.model_kwargs.items())))
        if isinstance(self.multitask_weights, dict):
            object.__setattr__(self, "multitask_weights", tuple(self.multitask_weights.items()))
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.compute_dtype not in DTYPES:
            raise ValueError(f"compute_dtype must be one of {DTYPES}, got {self.compute_dtype!r}")
        if self.regression_loss not in ("mse", "huber"):
            raise ValueError(f"regression_loss must be 'mse' or 'huber', got {self.regression_loss!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 < self.curriculum_start <= 1.0:
            raise ValueError(f"curriculum_start must be in (0, 1], got {self.curriculum_start}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")

    def model_config(self) -> dict[str, Any]:
        """The model keyword arguments as a dict."""
        return dict(self.model_kwargs)

    def build_model(self):
        """The unbound Flax module: `create(model, preset, **model_kwargs)`."""
        from trading_jax.models import create

        return create(self.model, preset=self.preset, **self.model_config())

    def replace(self, **changes) -> "TrainConfig":
        """A copy with `changes` (configs are never edited in place)."""
        return dataclasses.replace(self, **changes)
