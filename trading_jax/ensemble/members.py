"""Ensemble members trained in ONE jitted call, and their predictions.

Members of one architecture are a `trading_jax.loop.FunctionTrainer` population: the supervised trainer
(`trading_jax.training.make_trainer`) `vmap`-ed over params and optimiser state, so M members train in one
compiled program. Their diversity comes from

- "seed": each member its own key (init, dropout, minibatch order): `fit(trainer, key)` splits `key` into
  `jax.random.split(key, M)`;
- "bootstrap": each member trains on its own bootstrap resample of the training rows (`bootstrap_indices`:
  `n_train` rows drawn with replacement), passed as a per-member `train_index [n_train]` through which each
  epoch's permutation gathers its minibatches: the dataset is never copied M times;
- "hparams": each member its own `TrainHyperparams` (a grid from `trading_jax.loop.hyperparam_grid`).

They combine ("seed" with either or both). The entry point is

    trainer = make_ensemble_trainer(make_trainer(config, data), members=8, diversity="bootstrap",
                                    bootstrap_key=jax.random.key(1))          # make_trainer: trading_jax.training
    result = fit(trainer, jax.random.key(0), checkpointer=ckpt)     # checkpoints and exact resume as any run
    group = EnsembleGroup.from_result("tcn", config, result)        # params [M]

and member j equals the single run `make_trainer(config, data).train(split(key, M)[j], hparams=grid[j],
args={"data": data, "params": None, "train_index": idx[j]})` up to float reassociation (tests: 1e-5).
The resamples are not part of the checkpointed state: resume with the same `bootstrap_key`.

On CPU the population computes its 1-D convolutions as matmuls (`conv="auto"`, `trading_jax.ensemble.conv`):
under `vmap` a convolution with per-member kernels is a grouped convolution, which XLA's CPU backend runs
several times slower than the same work as batched matmuls.

Heterogeneous ensembles hold one such vmapped group per architecture (`EnsembleGroup`: name, config,
params with a leading member axis); `predict_members(groups, x)` applies each group's model vmapped over
its members and concatenates them into `[M_total, n, ...]` for the rules of `trading_jax.ensemble.combine`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from trading_jax.ensemble.conv import default_conv, matmul_convolutions, with_matmul_convolutions
from trading_jax.loop import FunctionTrainer

__all__ = [
    "DIVERSITY", "bootstrap_indices", "make_ensemble_trainer", "EnsembleGroup", "predict_members",
    "member_names",
]

DIVERSITY = ("seed", "bootstrap", "hparams")


def bootstrap_indices(key, members: int, n: int) -> jax.Array:
    """`members` bootstrap resamples of `n` rows: int32 `[members, n]`, each row drawn uniformly with replacement.

    Member j's resample is `randint(fold_in(key, j), (n,), 0, n)`: it depends on the key and j only (not on
    the number of members), so the same key gives the same resamples, bit for bit. A resample holds on
    average a fraction 1 - (1 - 1/n)^n ~ 63.2% of the distinct rows; the rest are its out-of-bag rows.
    """
    if int(members) < 1 or int(n) < 1:
        raise ValueError(f"bootstrap_indices needs members >= 1 and n >= 1, got {members}, {n}")
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(int(members)))
    return jax.vmap(lambda k: jax.random.randint(k, (int(n),), 0, int(n), dtype=jnp.int32))(keys)


def _diversity(diversity) -> frozenset[str]:
    kinds = [diversity] if isinstance(diversity, str) else list(diversity)
    kinds = [k for part in kinds for k in str(part).split("+")]
    unknown = sorted(set(kinds) - set(DIVERSITY))
    if unknown or not kinds:
        raise ValueError(f"diversity must be one or more of {DIVERSITY} (e.g. 'bootstrap' or 'bootstrap+hparams'), "
                         f"got {diversity!r}")
    return frozenset(kinds)


def make_ensemble_trainer(
    trainer: FunctionTrainer,
    members: int,
    diversity: str | Sequence[str] = "seed",
    hparams_grid=None,
    bootstrap_key=None,
    conv: str = "auto",
) -> FunctionTrainer:
    """M members of one architecture as ONE vmapped `FunctionTrainer` (a population) of `trainer`.

    Drive it with `trading_jax.loop.fit(trainer, key)` (key: one key, split into the M member keys, or `[M]`
    keys), which gives checkpoints, validation records, TensorBoard and exact resume; or `trainer.train(key)`.
    Its result is the supervised `TrainResult` with a leading member axis on every leaf.

    Args:
        trainer: one member's trainer, e.g. `trading_jax.training.make_trainer(config, data)` (its dataset is
            shared by every member, never repeated). "bootstrap" needs a trainer that reads a per-run
            `args["train_index"]` and says how many rows it resamples in `trainer.n_train` (the supervised one).
        members: M >= 1.
        diversity: "seed", "bootstrap", "hparams", or several (a sequence or "bootstrap+hparams"). Members
            always get distinct keys from `fit`; "bootstrap" adds a resample per member, "hparams" a grid.
        hparams_grid: with "hparams": a `TrainHyperparams` with `[M]` leaves (`hyperparam_grid(hyperparams(config),
            learning_rate=[...])`); it becomes the population's default hyperparameters.
        bootstrap_key: with "bootstrap": the key of the resamples (`bootstrap_indices(bootstrap_key, M, n_train)`,
            exposed as `trainer.train_index`).
        conv: how 1-D convolutions compute: "matmul" (as one matmul of shifted inputs: under `vmap` these
            stay dense, where XLA's CPU backend runs the grouped convolutions of vmapped conv kernels several
            times slower; `trading_jax.ensemble.conv`), "xla" (the model's own convolutions), or "auto"
            ("matmul" on CPU, "xla" elsewhere). Same params and maths (float reassociation only).

    Raises:
        ValueError: an unknown diversity or conv, "hparams" without a grid of M members (or a grid without
            "hparams"), "bootstrap" without a key.
    """
    kinds = _diversity(diversity)
    members = int(members)
    if members < 1:
        raise ValueError(f"an ensemble needs at least one member, got {members}")
    if ("hparams" in kinds) != (hparams_grid is not None):
        raise ValueError("diversity 'hparams' needs hparams_grid (a TrainHyperparams with [M] leaves, e.g. "
                         "trading_jax.loop.hyperparam_grid), and hparams_grid needs diversity 'hparams'")
    if "bootstrap" in kinds and bootstrap_key is None:
        raise ValueError("diversity 'bootstrap' needs bootstrap_key (the resamples are drawn from it)")
    conv = _conv_mode(conv)
    base = trainer
    member_args, extras = None, dict(base.extras)
    if "bootstrap" in kinds:
        if "n_train" not in extras:
            raise ValueError("diversity 'bootstrap' needs a trainer that resamples its rows through args['train_index'] "
                             "and exposes n_train (trading_jax.training.make_trainer)")
        index = bootstrap_indices(bootstrap_key, members, int(extras["n_train"]))
        member_args = {"train_index": index}
        extras["train_index"] = index
    extras["diversity"] = tuple(k for k in DIVERSITY if k in kinds)
    extras["conv"] = conv
    trainer = base.population(members, member_args=member_args, hparams=hparams_grid)
    if conv == "matmul":
        trainer = with_matmul_convolutions(trainer)
    return dataclasses.replace(trainer, extras=extras)


def _conv_mode(conv: str) -> str:
    if conv == "auto":
        return default_conv()
    if conv not in ("matmul", "xla"):
        raise ValueError(f"conv must be 'auto', 'matmul' or 'xla', got {conv!r}")
    return conv


# ------------------------------------------------------------------------------------ groups


class EnsembleGroup(NamedTuple):
    """One vmapped group of members of a single architecture.

    Attributes:
        name: the group's name (e.g. "tcn").
        config: the config the members were trained with (e.g. a `TrainConfig`: `build_model()`, `task`, `compute_dtype`).
        params: the members' params, every leaf with a leading member axis `[M, ...]`.
    """

    name: str
    config: Any
    params: Any

    @classmethod
    def from_result(cls, name: str, config, result, best: bool = True) -> "EnsembleGroup":
        """A group from a population's `TrainResult`: its `best_params` (lowest validation loss) or last `params`."""
        return cls(name, config, result.best_params if best else result.params)

    @property
    def members(self) -> int:
        leaves = jax.tree.leaves(self.params)
        if not leaves:
            raise ValueError(f"group {self.name!r} has no params")
        return int(jnp.shape(leaves[0])[0])


def _default_output(config) -> str:
    if config.task == "classification":
        return "probs"
    if config.task == "regression":
        return "prediction"
    raise ValueError("a multitask group needs an explicit output: e.g. output='price' or 'direction_probs'")


@functools.lru_cache(maxsize=64)
def _group_apply(config, output: str, conv: str):
    """`jit(vmap(apply))`: params `[M, ...]`, x `[n, T, F]` -> the output of every member `[M, n, ...]`."""
    from trading_jax.models.precision import cast_floating, compute_dtype

    model = config.build_model()
    dtype = compute_dtype(config)
    probs = output.endswith("probs")
    key = output[: -len("probs")] + "logits" if probs else output

    def one(params, x):
        if conv == "matmul":
            with matmul_convolutions():
                return member(params, x)
        return member(params, x)

    def member(params, x):
        out = model.apply({"params": cast_floating(params, dtype)}, x.astype(dtype), train=False)
        if key not in out:
            raise ValueError(f"output {output!r} needs the model output {key!r}; {config.model} returns {sorted(out)}")
        y = jnp.asarray(out[key], jnp.float32)
        if probs:
            return jax.nn.softmax(y, axis=-1)
        if output == "prediction" and y.ndim == 2 and y.shape[-1] == 1:
            return y[:, 0]
        return y

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def predict_members(groups: Sequence[EnsembleGroup] | EnsembleGroup, x, output: str | None = None,
                    conv: str = "auto") -> jax.Array:
    """Every member's prediction on `x`, the groups' members concatenated: `[M_total, n, ...]`.

    Each group's model is applied once, `vmap`-ed over its members (dropout off, in the group's
    compute dtype, outputs float32).

    Args:
        groups: one `EnsembleGroup` or several (their members concatenated in order).
        x: inputs `[n, time, features]` every group accepts.
        output: which output: a model output name ("prediction", "logits", "price", ...) or "probs" /
            "direction_probs" (the softmax of "logits" / "direction_logits"). Default by task: regression
            "prediction" (`[M, n]` when the head has one output, else `[M, n, k]`), classification "probs"
            (`[M, n, C]`); a multitask group needs it named.
        conv: "auto", "matmul" or "xla", as in `make_ensemble_trainer`.

    Raises:
        ValueError: no groups, a missing output, or groups whose outputs differ in shape.
    """
    groups = [groups] if isinstance(groups, EnsembleGroup) else list(groups)
    if not groups:
        raise ValueError("predict_members needs at least one EnsembleGroup")
    conv = _conv_mode(conv)
    outs = []
    for group in groups:
        name = output or _default_output(group.config)
        outs.append(_group_apply(group.config, name, conv)(group.params, jnp.asarray(x)))
    shapes = {tuple(o.shape[1:]) for o in outs}
    if len(shapes) != 1:
        detail = ", ".join(f"{g.name}: {tuple(o.shape)}" for g, o in zip(groups, outs))
        raise ValueError(f"the groups' outputs differ in shape and cannot be combined ({detail})")
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=0)


def member_names(groups: Sequence[EnsembleGroup] | EnsembleGroup) -> list[str]:
    """`"name/j"` for every member, in the order of `predict_members`."""
    groups = [groups] if isinstance(groups, EnsembleGroup) else list(groups)
    return [f"{g.name}/{j}" for g in groups for j in range(g.members)]
