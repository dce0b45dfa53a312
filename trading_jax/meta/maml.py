"""MAML, first-order MAML and Meta-SGD: learn an initialisation that adapts to a new task in a few steps.

A task tau has a support set (x^s, y^s) of k samples and a query set (x^q, y^q); L_tau^s(theta) and
L_tau^q(theta) are the task loss (`task_loss`: MSE on "prediction" or cross-entropy on "logits") of the
model with params theta on each. Adaptation (`adapt`) runs K inner steps from theta_0 = theta:

    g_j         = grad L_tau^s(theta_j)                      (dropout key j of the task)
    d_j, s_j+1  = inner_optimizer(g_j, s_j)                  (SGD: d_j = g_j; Adam: optax.scale_by_adam)
    theta_j+1   = theta_j - alpha * d_j                      (alpha: the inner learning rate(s))

as a `lax.scan` over j = 0..K-1. The meta-objective over a batch of T tasks (`meta_loss`) is

    L_meta(theta) = 1/T sum_tau L_tau^q(theta_K(theta; tau)),

minimised by Adam (learning rate `meta_lr`, gradients clipped to `max_grad_norm`) over `meta_steps`
batches of tasks drawn by a task source (`trading_jax.meta.tasks`). The methods differ only in what
the meta-gradient sees:

* "maml" (second order, Finn et al. 2017): the exact gradient, differentiating through the scan,
      dL/dtheta = sum_tau (prod_j dtheta_j+1/dtheta_j)^T grad L_tau^q(theta_K),
      dtheta_j+1/dtheta_j = I - alpha H_j (SGD; H_j the support Hessian at theta_j).
* "fomaml" (first order): the same program with `stop_gradient` on every inner gradient g_j, so
  dtheta_j+1/dtheta_j = I and dL/dtheta = sum_tau grad L_tau^q(theta_K). This is literally the switch.
* "metasgd" (Li et al. 2017): the meta-parameters are (theta, log alpha) with one inner rate per
  parameter, alpha = exp(log alpha) (always positive), initialised to `inner_lr`; both are learned
  through the second-order gradient (theta_j+1 = theta_j - alpha (.) d_j, elementwise).

Adam in the inner loop uses `eps_root > 0`: its update m / (sqrt(v + eps_root) + eps) is not
differentiable at v = 0 with optax's default eps_root = 0 (the derivative of sqrt at 0).

`make_trainer(config, task_source, args)` is a `trading_jax.loop.FunctionTrainer` whose unit is one
meta-step; meta-step u draws its tasks and dropout keys from `jax.random.split(state.key, meta_steps)[u]`,
so any chunking of the run is bit-identical to the whole run. An update whose loss or gradient is not
finite is skipped (masked out) and counted.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from trading_jax.loop import FunctionTrainer
from trading_jax.meta.tasks import Tasks

__all__ = [
    "MAMLConfig",
    "MAMLHyperparams",
    "MAMLResult",
    "MAMLState",
    "MetaParams",
    "METHODS",
    "TASKS",
    "INNER_OPTIMIZERS",
    "hyperparams",
    "make_apply",
    "task_loss",
    "init_meta_params",
    "split_meta_params",
    "adapt",
    "meta_loss",
    "evaluate",
    "make_trainer",
    "make_train",
]

TASKS = ("regression", "classification")
METHODS = ("maml", "fomaml", "metasgd")
INNER_OPTIMIZERS = ("sgd", "adam")
HISTORY_KEYS = ("meta_loss", "pre_adapt_loss", "grad_norm", "skipped")


@dataclasses.dataclass(frozen=True)
class MAMLConfig:
    """Meta-learning configuration (frozen, hashable).

    Attributes:
        model: registered model name (`trading_jax.models.create`); the model takes
            `apply(..., x [batch, W, F], train=..., rngs={"dropout": key})`.
        preset: model preset name, or None.
        model_kwargs: extra model arguments as `(name, value)` pairs (a dict is accepted).
        task: "regression" (output "prediction", MSE against float targets) or "classification"
            (output "logits", cross-entropy against int labels, e.g. 0/1/2 down/flat/up).
        method: "maml" (second order), "fomaml" (first order) or "metasgd" (learned per-parameter
            inner rates); see the module docstring.
        inner_steps: K, adaptation steps per task.
        inner_lr: alpha, the inner learning rate (Meta-SGD: the initial value of every rate).
        inner_optimizer: "sgd" or "adam".
        adam_b1, adam_b2, adam_eps: the inner Adam's decay rates and epsilon.
        adam_eps_root: the inner Adam's eps_root (> 0, so the update is differentiable at v = 0).
        meta_lr: the outer Adam's learning rate.
        meta_batch: T, tasks per meta-step.
        support: k, support samples per task during meta-training.
        query: q, query samples per task.
        meta_steps: meta-updates of a whole run.
        max_grad_norm: meta-gradients are clipped to this global norm.
        remat: wrap each inner step in `jax.checkpoint` (recompute its activations in the backward
            pass: less memory for long inner loops, more compute).
    """

    model: str
    preset: str | None = None
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    task: str = "regression"
    method: str = "maml"
    inner_steps: int = 5
    inner_lr: float = 0.01
    inner_optimizer: str = "sgd"
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    adam_eps_root: float = 1e-8
    meta_lr: float = 1e-3
    meta_batch: int = 8
    support: int = 20
    query: int = 20
    meta_steps: int = 1000
    max_grad_norm: float = 1.0
    remat: bool = False

    def __post_init__(self):
        if isinstance(self.model_kwargs, dict):
            object.__setattr__(self, "model_kwargs", tuple(sorted(self.model_kwargs.items())))
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be one of {INNER_OPTIMIZERS}, got {self.inner_optimizer!r}")
        if self.inner_optimizer == "adam" and not self.adam_eps_root > 0:
            raise ValueError(f"adam_eps_root must be > 0 with the adam inner optimizer (optax adam is not "
                             f"differentiable at eps_root=0), got {self.adam_eps_root}")
        for name in ("inner_steps", "meta_batch", "support", "query", "meta_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("inner_lr", "meta_lr", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def model_config(self) -> dict[str, Any]:
        """The model keyword arguments as a dict."""
        return dict(self.model_kwargs)

    def build_model(self):
        """The unbound Flax module: `create(model, preset, **model_kwargs)`."""
        from trading_jax.models import create

        return create(self.model, preset=self.preset, **self.model_config())

    def replace(self, **changes) -> "MAMLConfig":
        """A copy with `changes` (configs are never edited in place)."""
        return dataclasses.replace(self, **changes)


@struct.dataclass
class MAMLHyperparams:
    """The vmappable hyperparameters (float32 scalars, or `[n]` for a grid): `meta_lr`, `inner_lr`
    (Meta-SGD: the initial rate), `max_grad_norm`, as in `MAMLConfig`."""

    meta_lr: Any
    inner_lr: Any
    max_grad_norm: Any


def hyperparams(config: MAMLConfig) -> MAMLHyperparams:
    """The config's hyperparameters as float32 scalars."""
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return MAMLHyperparams(f32(config.meta_lr), f32(config.inner_lr), f32(config.max_grad_norm))


class MetaParams(NamedTuple):
    """Meta-SGD's meta-parameters: the initial params and the log of one inner rate per parameter
    (`log_lr` has the structure of `params`)."""

    params: Any
    log_lr: Any


# ------------------------------------------------------------------------------------- pure pieces


def make_apply(model) -> Callable:
    """`apply(params, x, train, key) -> outputs` of a Flax module taking `train=` (dropout key when training)."""

    def apply(params, x, train: bool = False, key=None):
        rngs = {"dropout": key} if (train and key is not None) else {}
        return model.apply({"params": params}, x, train=train, rngs=rngs)

    return apply


def _floating(a) -> jax.Array:
    """`a` in at least float32 (float64 stays float64)."""
    a = jnp.asarray(a)
    return a.astype(jnp.promote_types(a.dtype, jnp.float32))


def task_loss(config: MAMLConfig, outputs, y) -> jax.Array:
    """The task loss of one set (mean over samples).

    Computed in float32 (float64 for float64 outputs).
    Regression: MSE = mean_i (p_i - y_i)^2 with p = outputs["prediction"] (`[n]` or `[n, 1]`), y `[n]`.
    Classification: CE = -mean_i log softmax(z_i)[y_i] with z = outputs["logits"] `[n, C]`, y `[n]` ints.

    Raises:
        ValueError: a missing output or mismatched shapes (at trace time).
    """
    if config.task == "regression":
        if "prediction" not in outputs:
            raise ValueError(f"task 'regression' needs a model output 'prediction'; the model returns {sorted(outputs)}")
        p = _floating(outputs["prediction"])
        y = jnp.asarray(y, p.dtype)
        if p.shape != y.shape and p.size == y.size:
            p = p.reshape(y.shape)
        if p.shape != y.shape:
            raise ValueError(f"regression: prediction {p.shape} and targets {y.shape} differ (use n_outputs=1)")
        return jnp.mean(jnp.square(p - y))
    if "logits" not in outputs:
        raise ValueError(f"task 'classification' needs a model output 'logits' (e.g. model_kwargs n_classes=3); "
                         f"the model returns {sorted(outputs)}")
    z = _floating(outputs["logits"])
    if z.shape[:-1] != jnp.shape(y):
        raise ValueError(f"classification: logits {z.shape} need labels {z.shape[:-1]}, got {jnp.shape(y)}")
    logp = jax.nn.log_softmax(z, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, jnp.asarray(y, jnp.int32)[..., None], axis=-1))


def init_meta_params(config: MAMLConfig, params, inner_lr=None):
    """The meta-parameters of `params`: the params themselves, or for Meta-SGD `MetaParams(params, log_lr)`
    with every rate `inner_lr` (default `config.inner_lr`)."""
    if config.method != "metasgd":
        return params
    lr = config.inner_lr if inner_lr is None else inner_lr
    log_lr = jnp.log(jnp.asarray(lr, jnp.float32))
    return MetaParams(params, jax.tree.map(lambda p: jnp.full(jnp.shape(p), log_lr, jnp.result_type(p)), params))


def split_meta_params(config: MAMLConfig, meta_params):
    """`(params, inner_lrs)`: Meta-SGD's params and per-parameter rates exp(log_lr); else `(meta_params, None)`."""
    if config.method != "metasgd":
        return meta_params, None
    return meta_params.params, jax.tree.map(jnp.exp, meta_params.log_lr)


def _inner_transform(config: MAMLConfig) -> optax.GradientTransformation:
    if config.inner_optimizer == "sgd":
        return optax.identity()
    return optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                               eps_root=config.adam_eps_root)


def _step_params(params, direction, lrs):
    if jax.tree.structure(lrs) == jax.tree.structure(params):
        return jax.tree.map(lambda p, d, a: p - a * d, params, direction, lrs)
    return jax.tree.map(lambda p, d: p - lrs * d, params, direction)


def _adapt(config: MAMLConfig, apply, params, support_x, support_y, key, inner_lrs, train: bool = True):
    """`(adapted params, support losses [K])` (see `adapt`)."""
    lrs = config.inner_lr if inner_lrs is None else inner_lrs
    opt = _inner_transform(config)

    def support_loss(p, k):
        return task_loss(config, apply(p, support_x, train, k), support_y)

    def step(carry, k):
        p, s = carry
        loss, g = jax.value_and_grad(support_loss)(p, k)
        if config.method == "fomaml":
            g = jax.lax.stop_gradient(g)  # first order: the whole difference from "maml"
        direction, s = opt.update(g, s, p)
        return (_step_params(p, direction, lrs), s), loss

    if config.remat:
        step = jax.checkpoint(step)
    keys = jax.random.split(key, config.inner_steps)
    (adapted, _), losses = jax.lax.scan(step, (params, opt.init(params)), keys)
    return adapted, losses


def adapt(config: MAMLConfig, apply, params, support_x, support_y, key, inner_lrs=None, *, train: bool = True):
    """Adapt `params` to one task: `config.inner_steps` steps of the inner optimizer on its support set.

    Any k works (k is a shape: each distinct k compiles once). Differentiable (second order) unless
    `config.method == "fomaml"`, whose inner gradients are `stop_gradient`-ed.

    Args:
        config: the configuration (task, method, inner_steps, inner_lr, inner_optimizer, remat).
        apply: `apply(params, x, train, key) -> outputs` (`make_apply(model)`).
        params: the initial params theta_0.
        support_x: `[k, W, F]` support inputs.
        support_y: `[k]` support targets.
        key: the task's key; inner step j uses `jax.random.split(key, inner_steps)[j]` (dropout).
        inner_lrs: the inner rate(s): None (`config.inner_lr`), a scalar, or a pytree shaped like `params`
            (Meta-SGD's per-parameter rates, `split_meta_params`).
        train: run the model in training mode (dropout on) during adaptation.

    Returns:
        The adapted params theta_K (same structure as `params`).
    """
    return _adapt(config, apply, params, support_x, support_y, key, inner_lrs, train)[0]


def _task_losses(config: MAMLConfig, apply, meta_params, tasks: Tasks, key, inner_lr=None, train: bool = True):
    """Per-task `(query loss after adaptation [T], query loss before adaptation [T])`.

    Task i uses `jax.random.split(key, T)[i]`, split into its inner key and its query (dropout) key;
    the pre-adaptation loss uses the same query key and mode and carries no gradient.
    """
    params, rates = split_meta_params(config, meta_params)
    lrs = rates if rates is not None else inner_lr
    n_tasks = jax.tree.leaves(tasks.support_x)[0].shape[0]

    def one(sx, sy, qx, qy, k):
        k_inner, k_query = jax.random.split(k)
        adapted = _adapt(config, apply, params, sx, sy, k_inner, lrs, train)[0]
        post = task_loss(config, apply(adapted, qx, train, k_query), qy)
        pre = task_loss(config, apply(jax.lax.stop_gradient(params), qx, train, k_query), qy)
        return post, jax.lax.stop_gradient(pre)

    return jax.vmap(one)(*tasks, jax.random.split(key, n_tasks))


def meta_loss(config: MAMLConfig, apply, meta_params, tasks: Tasks, key, inner_lr=None) -> jax.Array:
    """The meta-objective: the mean over tasks of the query loss after adapting on the support set.

        L_meta = 1/T sum_tau L_tau^q(adapt(theta, support_tau))

    Args:
        config: the configuration.
        apply: `apply(params, x, train, key) -> outputs`.
        meta_params: params (maml, fomaml) or `MetaParams(params, log_lr)` (metasgd; `init_meta_params`).
        tasks: `Tasks` of T tasks (support `[T, k, W, F]`, `[T, k]`; query `[T, q, W, F]`, `[T, q]`).
        key: task i uses `split(key, T)[i]` for its inner steps and query pass (dropout).
        inner_lr: the inner rate for maml/fomaml (default `config.inner_lr`; may be traced).

    Returns:
        The scalar loss; `jax.grad` of it is the method's meta-gradient.
    """
    post, _ = _task_losses(config, apply, meta_params, tasks, key, inner_lr)
    return jnp.mean(post)


def evaluate(config: MAMLConfig, apply, meta_params, tasks: Tasks, key, inner_lr=None, train: bool = False) -> dict:
    """k-shot evaluation on T tasks (any k and q): the query loss of each task before and after adaptation.

    Returns:
        `{"pre_adapt_loss": [T], "post_adapt_loss": [T]}` (dropout off unless `train`).
    """
    post, pre = _task_losses(config, apply, jax.lax.stop_gradient(meta_params), tasks, key, inner_lr, train)
    return {"pre_adapt_loss": pre, "post_adapt_loss": post}


# -------------------------------------------------------------------------------------- trainer


class MAMLResult(NamedTuple):
    """What a meta-training run returns.

    Attributes:
        params: the meta-learned initial params theta.
        inner_lrs: Meta-SGD's per-parameter inner rates exp(log_lr) (structure of `params`), else None.
        history: `[meta_steps]` arrays "meta_loss" (query loss after adaptation, mean over the tasks),
            "pre_adapt_loss" (the same query sets before adaptation), "grad_norm" (meta-gradient norm
            before clipping), "skipped" (True where a non-finite update was masked out).
    """

    params: Any
    inner_lrs: Any
    history: dict


class MAMLState(NamedTuple):
    """The whole meta-training state between meta-steps (a pytree: checkpoint it to resume exactly).

    Attributes:
        meta_params: params, or `MetaParams(params, log_lr)` for Meta-SGD.
        opt_state: the outer Adam's state (after gradient clipping).
        key: meta-step u draws from `jax.random.split(key, meta_steps)[u]`.
        step: int32 scalar, meta-steps completed.
        history: `[meta_steps]` buffers as in `MAMLResult.history` (NaN / False for steps not yet run).
        hparams: the run's `MAMLHyperparams`.
    """

    meta_params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array
    history: dict
    hparams: Any


def _select(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _meta_optimizer(hp: MAMLHyperparams) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), optax.adam(hp.meta_lr))


def make_trainer(config: MAMLConfig, task_source, args=None, *, model=None) -> FunctionTrainer:
    """Meta-training as a `trading_jax.loop.FunctionTrainer` over a checkpointable `MAMLState`.

    One unit is a meta-step: draw `meta_batch` tasks from `task_source` (on device), compute the
    meta-gradient of `meta_loss`, clip it to `max_grad_norm` and apply Adam(`meta_lr`); an update whose
    loss or gradient norm is not finite is skipped and recorded in "skipped". `trainer.run(state, n)`
    runs n meta-steps as a `lax.scan` and returns `[n]` records "meta_loss", "pre_adapt_loss",
    "grad_norm", "skipped", "active" (False past `meta_steps`). `trainer.train(key)` and any chunking
    of `run` are bit-identical; `trainer.population(M)` meta-trains M seeds / `MAMLHyperparams` at once;
    `trading_jax.loop.fit` adds checkpoints, logs and progress.

    Args:
        config: the configuration.
        task_source: e.g. `ArrayTasks()` or `SyntheticRegimeTasks(...)` (`trading_jax.meta.tasks`).
        args: the task source's arrays (default `task_source.default_args()`); the trainer's args are
            `{"tasks": args, "params": None}` (give initial "params" to start from pretrained weights).
        model: an unbound Flax module taking `train=` to use instead of `config.build_model()`.

    Raises:
        ValueError: args the task source cannot draw tasks from, or targets whose dtype does not fit
            `config.task` (float for regression, int for classification).
    """
    args = task_source.default_args() if args is None else args
    if hasattr(task_source, "check"):
        task_source.check(args, config.support, config.query)
    model = config.build_model() if model is None else model
    apply = make_apply(model)
    total, batch, k, q = config.meta_steps, config.meta_batch, config.support, config.query

    shapes = jax.eval_shape(lambda a: task_source.sample(jax.random.key(0), a, batch, k, q), args)
    want_int = config.task == "classification"
    for name in ("support_y", "query_y"):
        dtype = getattr(shapes, name).dtype
        if bool(jnp.issubdtype(dtype, jnp.integer)) != want_int:
            raise ValueError(f"task {config.task!r} needs {'int' if want_int else 'float'} targets; the task source "
                             f"gives {name} of dtype {dtype}")
    x_shape = shapes.support_x.shape[2:]

    def init_fn(key, hp, trainer_args) -> MAMLState:
        hp = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), hp)
        k_init, k_drop, k_steps = jax.random.split(key, 3)
        params = trainer_args.get("params")
        if params is None:
            params = model.init({"params": k_init, "dropout": k_drop}, jnp.zeros((1,) + x_shape, jnp.float32),
                                train=False)["params"]
        meta_params = init_meta_params(config, params, hp.inner_lr)
        history = {"meta_loss": jnp.full((total,), jnp.nan, jnp.float32),
                   "pre_adapt_loss": jnp.full((total,), jnp.nan, jnp.float32),
                   "grad_norm": jnp.full((total,), jnp.nan, jnp.float32),
                   "skipped": jnp.zeros((total,), bool)}
        return MAMLState(meta_params, _meta_optimizer(hp).init(meta_params), k_steps, jnp.zeros((), jnp.int32),
                         history, hp)

    def run_fn(state: MAMLState, trainer_args, n: int):
        source_args = trainer_args["tasks"]
        hp = state.hparams
        tx = _meta_optimizer(hp)
        step_keys = jax.random.split(state.key, total)  # the whole run's keys: any chunking draws the same

        def objective(meta_params, tasks, key):
            post, pre = _task_losses(config, apply, meta_params, tasks, key, hp.inner_lr)
            return jnp.mean(post), jnp.mean(pre)

        def meta_step(state: MAMLState, _):
            u = state.step
            in_range = u < total
            k_tasks, k_loss = jax.random.split(step_keys[jnp.minimum(u, total - 1)])
            tasks = task_source.sample(k_tasks, source_args, batch, k, q)
            (loss, pre), grads = jax.value_and_grad(objective, has_aux=True)(state.meta_params, tasks, k_loss)
            grad_norm = optax.tree.norm(grads)
            updates, new_opt = tx.update(grads, state.opt_state, state.meta_params)
            new_params = optax.apply_updates(state.meta_params, updates)
            finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            do = in_range & finite
            record = {"meta_loss": loss, "pre_adapt_loss": pre, "grad_norm": grad_norm, "skipped": ~finite}
            slot = jnp.where(in_range, u, total)  # past the end: the scatter drops it
            history = {name: buf.at[slot].set(record[name].astype(buf.dtype), mode="drop")
                       for name, buf in state.history.items()}
            new = MAMLState(_select(do, new_params, state.meta_params), _select(do, new_opt, state.opt_state),
                            state.key, jnp.where(in_range, u + 1, u).astype(jnp.int32), history, hp)
            out = {name: jnp.where(in_range, record[name], jnp.zeros_like(record[name])) for name in record}
            out["skipped"] = out["skipped"] & in_range
            out["active"] = in_range
            return new, out

        return jax.lax.scan(meta_step, state, None, length=n)

    def result_fn(state: MAMLState) -> MAMLResult:
        params, rates = split_meta_params(config, state.meta_params)
        return MAMLResult(params, rates, state.history)

    return FunctionTrainer(
        init_fn=init_fn, run_fn=run_fn, result_fn=result_fn, counter_fn=lambda s: s.step,
        args={"tasks": args, "params": None}, hparams=hyperparams(config), total=total, unit="meta-step",
        samples_per_unit=batch * (k + q), display=("meta_loss", "pre_adapt_loss"), config=config, model=model,
        extras={"task_source": task_source, "apply": apply},
    )


def make_train(config: MAMLConfig, task_source, args=None, *, model=None):
    """`train(key, args=None, params=None, hparams=None) -> MAMLResult`: the whole meta-training in one call.

    `jax.jit(jax.vmap(train))(keys)` meta-trains one model per key. `args` draws tasks from other
    same-shaped task arrays without recompiling, `params` starts from given params. Arguments and
    errors: `make_trainer`.
    """
    trainer = make_trainer(config, task_source, args, model=model)
    default_args = trainer.args["tasks"]

    def train(key, args=None, params=None, hparams=None) -> MAMLResult:
        """Meta-train from `key` (optionally on other task arrays `args`, from `params`, with `hparams`)."""
        trainer_args = {"tasks": default_args if args is None else args, "params": params}
        return trainer.train(key, hparams, trainer_args)

    train.trainer = trainer
    train.model = trainer.model
    train.config = config
    train.apply = trainer.extras["apply"]
    return train

