"""The one fit: a toy Trainer driven through it, populations that checkpoint and resume bit for bit, early
stopping that is reported (not logged as NaN), and no int() on a batched counter."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.checkpoint import CheckpointConfig, Checkpointer
from trading_jax.loop import FunctionTrainer, fit, hyperparam_grid, units_done
from trading_jax.training import Dataset, TrainConfig, make_trainer


class Killed(Exception):
    pass


def toy_trainer(total: int = 6, stop_after: int | None = None) -> FunctionTrainer:
    """A random walk: unit u adds `scale * normal(fold_in(key, u))`; metrics: the value after each unit."""

    def init_fn(key, hp, args):
        return {"key": key, "x": jnp.zeros(()), "u": jnp.zeros((), jnp.int32), "scale": hp["scale"]}

    def run_fn(state, args, n):
        def one(s, _):
            live = s["u"] < total
            x = s["x"] + s["scale"] * jax.random.normal(jax.random.fold_in(s["key"], s["u"])) + args
            s = {**s, "x": jnp.where(live, x, s["x"]), "u": jnp.where(live, s["u"] + 1, s["u"])}
            active = live if stop_after is None else live & (s["u"] <= stop_after)
            return s, {"value": s["x"], "active": active}

        return jax.lax.scan(one, state, None, length=n)

    return FunctionTrainer(init_fn=init_fn, run_fn=run_fn, result_fn=lambda s: s["x"], counter_fn=lambda s: s["u"],
                           args=jnp.asarray(0.5), hparams={"scale": jnp.asarray(1.0)}, total=total, unit="step",
                           samples_per_unit=1, display=("value",))


def test_a_toy_trainer_runs_through_fit_to_the_same_result_however_it_is_chunked(tmp_path):
    trainer = toy_trainer()
    key = jax.random.key(0)
    expected = float(trainer.train(key))
    by_hand = sum(float(jax.random.normal(jax.random.fold_in(key, u))) + 0.5
                  for u in range(6))
    assert expected == pytest.approx(by_hand, rel=1e-6)
    seen = []
    for every in (1, 4, 6):
        assert float(fit(trainer, key, every=every, show_progress=False,
                         callbacks=[lambda s, m, done: seen.append(done)])) == expected
    assert seen == [1, 2, 3, 4, 5, 6, 4, 6, 6]


def test_a_killed_toy_run_resumes_from_its_checkpoint(tmp_path):
    trainer = toy_trainer()
    key = jax.random.key(1)

    def kill_at_3(state, metrics, done):
        if done == 3:
            raise Killed

    with Checkpointer(CheckpointConfig(str(tmp_path), save_every_steps=1, best_metric="value")) as ckpt:
        with pytest.raises(Killed):
            fit(trainer, key, checkpointer=ckpt, callbacks=[kill_at_3], show_progress=False)
        assert ckpt.latest_step() == 3 and ckpt.metrics()[3]["value"] != 0.0
    with Checkpointer(CheckpointConfig(str(tmp_path), save_every_steps=1, best_metric="value")) as ckpt:
        assert float(fit(trainer, key, checkpointer=ckpt, show_progress=False)) == float(trainer.train(key))


def test_early_stopping_is_reported_and_stopped_units_are_not_logged(capsys):
    logged = []

    class Writer:
        def scalars(self, step, values):
            logged.append((step, dict(values)))

        def flush(self):
            pass

    fit(toy_trainer(stop_after=2), jax.random.key(0), every=2, writer=Writer())
    assert [step for step, _ in logged] == [0, 1]
    assert "stopped early after 2 steps" in capsys.readouterr().err
    assert all(np.isfinite(v) for _, values in logged for v in values.values())


def test_a_population_with_a_hyperparameter_grid_logs_each_member_and_the_mean():
    trainer = toy_trainer().population(3)
    grid = {"scale": jnp.asarray([0.0, 1.0, 2.0], jnp.float32)}  # one value per member
    logged = []

    class Writer:
        def scalars(self, step, values):
            logged.append(dict(values))

        def flush(self):
            pass

    keys = jax.random.split(jax.random.key(0), 3)
    out = fit(trainer, keys, hparams=grid, writer=Writer(), every=3, show_progress=False)
    assert out.shape == (3,) and float(out[0]) == pytest.approx(6 * 0.5)  # scale 0: only the drift
    single = toy_trainer()
    assert float(out[2]) == pytest.approx(float(single.train(keys[2], {"scale": jnp.asarray(2.0)})), rel=1e-6)
    assert set(logged[0]) == {"value", "member_0/value", "member_1/value", "member_2/value"}
    assert logged[0]["value"] == pytest.approx(np.mean([logged[0][f"member_{j}/value"] for j in range(3)]))
    assert units_done(trainer.counter(trainer.init(keys, grid))) == 0


def test_members_out_of_step_are_an_error_not_a_silent_int():
    with pytest.raises(ValueError, match=r"members are at different units \(1 .. 2\)"):
        units_done(jnp.asarray([1, 2]))
    assert units_done(jnp.asarray([4, 4, 4, 4])) == 4


def tiny_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 3)).astype(np.float32)
    y = (x[:, -1, 0] + 0.1 * rng.normal(size=96)).astype(np.float32)
    return Dataset(jnp.asarray(x[:64]), jnp.asarray(y[:64]), jnp.asarray(x[64:]), jnp.asarray(y[64:]))


def test_a_four_member_population_checkpoints_and_resumes_bit_for_bit(tmp_path):
    from trading_jax.training.train import hyperparams

    config = TrainConfig(model="tcn", preset="tiny", epochs=4, batch_size=32, learning_rate=3e-3,
                         model_kwargs={"channels": 8, "levels": 2})
    population = make_trainer(config, tiny_data()).population(4)
    keys = jnp.stack([jax.random.key(s) for s in range(4)])
    grid = hyperparam_grid(hyperparams(config), learning_rate=[1e-3, 3e-3, 1e-2, 3e-2])
    expected = fit(population, keys, hparams=grid, every=2, show_progress=False)  # (fit == train: tested above)

    def kill_at_2(state, metrics, done):
        if done == 2:
            raise Killed

    def ckpt():
        return Checkpointer(CheckpointConfig(str(tmp_path), save_every_steps=1, best_metric="val_loss"))

    with ckpt() as c, pytest.raises(Killed):
        fit(population, keys, checkpointer=c, hparams=grid, every=2, callbacks=[kill_at_2], show_progress=False)
    with ckpt() as c:  # a new checkpointer on the same folder, as after a restart
        assert c.latest_step() == 2
        resumed = fit(population, keys, checkpointer=c, hparams=grid, every=2, show_progress=False)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    val = np.asarray(expected.history["val_loss"])
    assert val.shape == (4, 4) and len({round(float(v), 6) for v in val[:, -1]}) == 4  # members differ
