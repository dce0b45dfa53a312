"""Checkpointed training: chunked runs equal one-shot runs bit for bit, a killed run resumes exactly from
its checkpoints, the best k checkpoints are kept, and the progress bar and TensorBoard get the losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.checkpoint import CheckpointConfig, Checkpointer
from trading_jax.logging import TensorBoardWriter
from trading_jax.loop import fit
from trading_jax.training import Dataset, TrainConfig, TrainState, make_trainer

import test_training  # noqa: F401  (registers the "test_training_mlp" model)

EPOCHS = 5
CONFIG = TrainConfig(model="test_training_mlp", preset="tiny", model_kwargs={"dropout": 0.1}, task="regression",
                     epochs=EPOCHS, batch_size=16, learning_rate=1e-2, warmup_steps=2, noise_std=0.01)


def tiny_data(n: int = 64, t: int = 4, f: int = 3) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * n, t, f)).astype(np.float32)
    y = (x[:, -1, 0] - 0.5 * x[:, -2, 1])[:, None].astype(np.float32)
    return Dataset(jnp.asarray(x[:n]), jnp.asarray(y[:n]), jnp.asarray(x[n:]), jnp.asarray(y[n:]))


def assert_bitwise_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def reference():
    trainer = make_trainer(CONFIG, tiny_data())
    return trainer, trainer.train(jax.random.key(7))


def ckpt(directory, keep_best=2):
    return Checkpointer(CheckpointConfig(directory=str(directory), save_every_steps=1, keep_best=keep_best,
                                         best_metric="val_loss", mode="min", keep_last=1))


def test_chunked_runs_equal_the_one_shot_train_bit_for_bit(reference):
    trainer, expected = reference
    state = trainer.init(jax.random.key(7))
    assert isinstance(state, TrainState) and int(state.epoch) == 0
    for _ in range(EPOCHS + 1):  # one epoch at a time; the extra epoch past the end is a no-op
        state, records = trainer.run(state, 1)
    assert int(state.epoch) == EPOCHS
    assert_bitwise_equal(trainer.result(state), expected)
    assert_bitwise_equal(trainer.result(trainer.run(trainer.init(jax.random.key(7)), EPOCHS)[0]), expected)


class Killed(Exception):
    pass


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_final_params(reference, tmp_path, capsys):
    _, expected = reference
    key = jax.random.key(7)

    def kill_after_epoch_2(state, records, done):
        if int(state.epoch) == 2:
            raise Killed

    first = ckpt(tmp_path / "run")
    with pytest.raises(Killed):
        fit(make_trainer(CONFIG, tiny_data()), key, checkpointer=first, every=1, callbacks=[kill_after_epoch_2])
    first.close()
    assert "loss=" in capsys.readouterr().err  # the bar's postfix shows the loss (and samples/s)

    # a new process: a new trainer and a new Checkpointer on the same directory
    second = ckpt(tmp_path / "run")
    assert second.latest_step() == 2
    with TensorBoardWriter(tmp_path / "tb") as writer:
        result = fit(make_trainer(CONFIG, tiny_data()), key, checkpointer=second, every=1, writer=writer,
                     param_histograms=True)
    err = capsys.readouterr().err
    assert "loss=" in err and "samples_per_s=" in err
    assert_bitwise_equal(result, expected)
    assert int(second.restore(target=make_trainer(CONFIG, tiny_data()).init(key)).epoch) == EPOCHS

    # best-k retention through fit: the 2 lowest validation losses, plus the latest step
    val = np.asarray(expected.history["val_loss"])
    best_two = {int(e) + 1 for e in np.argsort(val)[:2]}
    assert second.all_steps() == sorted(best_two | {EPOCHS})
    assert second.best_step() == int(np.argmin(val)) + 1
    assert sorted(second.metrics()) == [1, 2, 3, 4, 5]
    second.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_max_epochs_stops_early_and_a_second_fit_finishes_the_run(reference, tmp_path):
    trainer, expected = reference
    key = jax.random.key(7)
    with ckpt(tmp_path / "run", keep_best=1) as c:
        partial = fit(trainer, key, checkpointer=c, every=2, max_units=2, show_progress=False)
        assert c.latest_step() == 2
    assert np.isnan(np.asarray(partial.history["val_loss"])[2:]).all()
    with ckpt(tmp_path / "run", keep_best=1) as c:
        result = fit(trainer, key, checkpointer=c, every=2, show_progress=False)  # chunks of 2 then 1
        assert c.latest_step() == EPOCHS
    assert_bitwise_equal(result, expected)
    # no checkpointer: plain chunked training
    assert_bitwise_equal(fit(trainer, key, every=2, show_progress=False), expected)
