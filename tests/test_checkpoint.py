"""Checkpoints: exact resume of a training loop, best-k retention on disk, and exact pytree round trips."""

from __future__ import annotations

import functools
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trading_jax.checkpoint import SIDECAR, CheckpointConfig, Checkpointer

# ---------------------------------------------------------------- a tiny training loop

N_DATA, N_FEAT, BATCH, CHUNK = 256, 4, 16, 50
OPT = optax.adam(1e-2)


class State(NamedTuple):
    params: dict
    opt_state: optax.OptState
    key: jax.Array  # typed PRNG key
    step: jax.Array  # int32 counter


def make_data():
    kx, kw, kn = jax.random.split(jax.random.key(123), 3)
    x = jax.random.normal(kx, (N_DATA, N_FEAT))
    w = jax.random.normal(kw, (N_FEAT,))
    y = x @ w + 0.5 + 0.1 * jax.random.normal(kn, (N_DATA,))
    return x, y


def init_state(seed: int = 0) -> State:
    params = {"w": jnp.zeros((N_FEAT,)), "b": jnp.zeros(())}
    return State(params, OPT.init(params), jax.random.key(seed), jnp.zeros((), jnp.int32))


@functools.partial(jax.jit, static_argnames="n_steps")
def train_chunk(state: State, x, y, n_steps: int = CHUNK) -> tuple[State, jax.Array]:
    """`n_steps` SGD steps with minibatches drawn from the state's key (a `lax.scan`)."""

    def one(state, _):
        key, sub = jax.random.split(state.key)
        idx = jax.random.randint(sub, (BATCH,), 0, N_DATA)

        def loss_fn(p):
            return jnp.mean((x[idx] @ p["w"] + p["b"] - y[idx]) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = OPT.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return State(params, opt_state, key, state.step + 1), loss

    state, losses = jax.lax.scan(one, state, None, length=n_steps)
    return state, losses[-1]


def assert_trees_bitwise_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------- tests


def test_resuming_from_a_checkpoint_in_a_new_checkpointer_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    x, y = make_data()
    total_chunks = 6  # 300 steps

    reference = init_state()
    for _ in range(total_chunks):
        reference, loss = train_chunk(reference, x, y)
    assert float(loss) < 0.1  # the loop actually learns

    cfg = CheckpointConfig(tmp_path / "run", save_every_steps=CHUNK, keep_best=2, best_metric="loss")
    first = init_state()
    ckpt = Checkpointer(cfg)
    for _ in range(total_chunks // 2):
        first, loss = train_chunk(first, x, y)
        assert ckpt.save(int(first.step), first, {"loss": loss})
    ckpt.close()
    del first  # "the process dies"

    ckpt = Checkpointer(cfg)  # a new process on the same directory
    assert ckpt.latest_step() == 150
    resumed = ckpt.restore(target=init_state(seed=99))  # a different key, overwritten by the restore
    assert jnp.issubdtype(resumed.key.dtype, jax.dtypes.prng_key)
    assert int(resumed.step) == 150
    for _ in range(total_chunks - total_chunks // 2):
        resumed, loss = train_chunk(resumed, x, y)
    ckpt.close()

    assert_trees_bitwise_equal(resumed, reference)


def test_keep_best_keeps_exactly_the_k_best_steps_and_the_latest_and_deletes_the_rest(tmp_path):
    losses = {1: 5.0, 2: 3.0, 3: 8.0, 4: 1.0, 5: 4.0, 6: 7.0, 7: 2.0, 8: 6.0}
    cfg = CheckpointConfig(tmp_path, save_every_steps=1, keep_best=2, best_metric="val_loss", mode="min", keep_last=1)
    with Checkpointer(cfg) as ckpt:
        for step, loss in losses.items():
            ckpt.save(step, {"w": jnp.full((3,), float(step))}, {"val_loss": loss, "other": -loss})
        assert ckpt.all_steps() == [4, 7, 8]  # best two (1.0 at 4, 2.0 at 7) and the latest
        assert ckpt.best_step() == 4
        assert ckpt.latest_step() == 8
    on_disk = sorted(int(p.name) for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    assert on_disk == [4, 7, 8]
    # The sidecar keeps every saved step's metrics, including the deleted ones.
    history = json.loads((tmp_path / SIDECAR).read_text())
    assert {int(k): v["val_loss"] for k, v in history.items()} == losses


def test_mode_max_keeps_the_largest_metric_and_a_nan_metric_ranks_worst(tmp_path):
    sharpe = {10: 0.5, 20: float("nan"), 30: 1.5, 40: 0.2, 50: 0.1}
    cfg = CheckpointConfig(tmp_path, save_every_steps=10, keep_best=2, best_metric="sharpe", mode="max")
    with Checkpointer(cfg) as ckpt:
        for step, s in sharpe.items():
            ckpt.save(step, {"w": jnp.ones(2)}, {"sharpe": s})
        assert ckpt.all_steps() == [10, 30, 50]
        assert ckpt.best_step() == 30
    # A fresh Checkpointer reads the ranking back from disk.
    with Checkpointer(cfg) as ckpt:
        assert ckpt.best_step() == 30
        assert ckpt.metrics()[20]["sharpe"] != ckpt.metrics()[20]["sharpe"]  # NaN is recorded as NaN


def test_save_writes_only_every_n_steps_unless_forced(tmp_path):
    with Checkpointer(CheckpointConfig(tmp_path, save_every_steps=5, keep_best=10, keep_last=10)) as ckpt:
        written = [step for step in range(1, 13) if ckpt.save(step, {"w": jnp.ones(1)}, {"loss": 1.0 / step})]
        assert written == [5, 10]
        assert ckpt.save(12, {"w": jnp.ones(1)}, {"loss": 0.0}, force=True)
        assert not ckpt.save(12, {"w": jnp.ones(1)}, {"loss": 0.0}, force=True)  # never overwritten
        assert ckpt.all_steps() == [5, 10, 12]


def test_restore_returns_the_exact_pytree_including_optimizer_state_and_key_data(tmp_path):
    x, y = make_data()
    state, _ = train_chunk(init_state(seed=7), x, y)
    # The explicit pattern: store key data, rebuild the typed key after restoring.
    stored = state._replace(key=jax.random.key_data(state.key))
    with Checkpointer(CheckpointConfig(tmp_path, save_every_steps=1)) as ckpt:
        ckpt.save(50, stored, {"loss": 1.0})
        abstract = jax.eval_shape(lambda: stored)  # abstract target: no arrays needed
        restored = ckpt.restore(50, target=abstract)
    assert isinstance(restored, State)
    assert isinstance(restored.opt_state[0], optax.ScaleByAdamState)
    assert_trees_bitwise_equal(restored, stored)
    key = jax.random.wrap_key_data(restored.key)
    np.testing.assert_array_equal(
        jax.random.key_data(jax.random.split(key)), jax.random.key_data(jax.random.split(state.key))
    )


def test_typed_keys_in_the_state_round_trip_when_the_target_holds_a_key(tmp_path):
    for impl in ("threefry2x32", "rbg"):
        key = jax.random.key(3, impl=impl)
        with Checkpointer(CheckpointConfig(tmp_path / impl, save_every_steps=1)) as ckpt:
            ckpt.save(1, {"key": key, "keys": jax.random.split(key, 4)})
            out = ckpt.restore(target={"key": jax.random.key(0, impl=impl), "keys": jax.random.split(key, 4)})
        assert jax.random.key_impl(out["key"]) == jax.random.key_impl(key)
        np.testing.assert_array_equal(jax.random.key_data(out["key"]), jax.random.key_data(key))
        assert out["keys"].shape == (4,)


def test_restore_without_a_checkpoint_raises_a_clear_error(tmp_path):
    with Checkpointer(CheckpointConfig(tmp_path)) as ckpt:
        assert ckpt.latest_step() is None and ckpt.best_step() is None
        with pytest.raises(FileNotFoundError, match="no checkpoint"):
            ckpt.restore()


def test_a_corrupt_metrics_file_is_an_error_naming_the_file(tmp_path):
    (tmp_path / SIDECAR).write_text('{"3": {"loss": 0.5}')  # cut off mid-write
    with pytest.raises(ValueError) as error:
        Checkpointer(CheckpointConfig(tmp_path))
    assert str(error.value).startswith(f"{tmp_path / SIDECAR} is corrupt (not a JSON object of step -> metrics)")


@pytest.mark.parametrize(
    "kwargs", [dict(mode="best"), dict(keep_last=0), dict(save_every_steps=0), dict(keep_best=-1)]
)
def test_invalid_configs_are_rejected(tmp_path, kwargs):
    with pytest.raises(ValueError):
        CheckpointConfig(tmp_path, **kwargs)


def test_config_is_frozen(tmp_path):
    cfg = CheckpointConfig(tmp_path)
    with pytest.raises(Exception):
        cfg.keep_best = 5  # type: ignore[misc]
