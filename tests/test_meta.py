"""MAML, first-order MAML and Meta-SGD (trading_jax.meta): exact meta-gradients, the first-order switch,
positive learned rates, adaptation that helps, an exactly chunkable trainer and leak-free task sources."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from trading_jax.meta import (
    ArrayTasks, MAMLConfig, SyntheticRegimeTasks, Tasks, adapt, evaluate, init_meta_params, make_apply,
    make_train, make_trainer, meta_loss, split_meta_params, tasks_from_splits,
)


class TinyMLP(nn.Module):
    """An MLP over the flattened window: Dense(hidden) - tanh - Dense(1) (and logits)."""

    hidden: int = 3
    n_classes: int = 0

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = jnp.tanh(nn.Dense(self.hidden, param_dtype=x.dtype)(x.reshape(x.shape[0], -1)))
        out = {"prediction": nn.Dense(1, param_dtype=x.dtype)(h)}
        if self.n_classes:
            out["logits"] = nn.Dense(self.n_classes, param_dtype=x.dtype)(h)
        return out


@dataclasses.dataclass(frozen=True)
class LinearTasks:
    """Tasks y = a x_last + b with a ~ U[-2, 2], b ~ U[-0.5, 0.5] per task, x ~ N(0, 1) `[.., W=2, F=1]`."""

    def default_args(self):
        return {}

    def sample(self, key, args, n_tasks, k_support, n_query):
        k_a, k_b, k_x = jax.random.split(key, 3)
        a = jax.random.uniform(k_a, (n_tasks, 1), minval=-2.0, maxval=2.0)
        b = jax.random.uniform(k_b, (n_tasks, 1), minval=-0.5, maxval=0.5)
        x = jax.random.normal(k_x, (n_tasks, k_support + n_query, 2, 1))
        y = a * x[..., -1, 0] + b
        return Tasks(x[:, :k_support], y[:, :k_support], x[:, k_support:], y[:, k_support:])


def _config(**changes) -> MAMLConfig:
    base = dict(model="unused", inner_steps=2, inner_lr=0.1, meta_batch=3, support=5, query=4, meta_steps=4)
    return MAMLConfig(**{**base, **changes})


def _tiny_problem(dtype=jnp.float32, hidden=3):
    model = TinyMLP(hidden)
    tasks = LinearTasks().sample(jax.random.key(1), {}, 3, 5, 4)
    tasks = Tasks(*(a.astype(dtype) for a in tasks))
    params = model.init(jax.random.key(0), tasks.support_x[0])["params"]
    return make_apply(model), params, tasks


# --------------------------------------------------------------------------------- meta-gradients


@pytest.mark.parametrize("method, inner", [("maml", "sgd"), ("maml", "adam"), ("metasgd", "sgd")])
def test_second_order_meta_gradient_matches_central_finite_differences_in_float64(method, inner):
    with jax.enable_x64(True):
        config = _config(method=method, inner_optimizer=inner, adam_eps_root=1e-4,
                         inner_lr=0.1 if inner == "sgd" else 0.05)
        apply, params, tasks = _tiny_problem(jnp.float64)
        meta = init_meta_params(config, params)
        flat, unravel = ravel_pytree(meta)
        assert flat.dtype == jnp.float64
        key = jax.random.key(2)
        f = jax.jit(lambda v: meta_loss(config, apply, unravel(v), tasks, key))
        grad = jax.grad(lambda v: meta_loss(config, apply, unravel(v), tasks, key))(flat)
        h = 1e-6
        eye = np.eye(flat.size)
        fd = np.array([(f(flat + h * e) - f(flat - h * e)) / (2 * h) for e in eye])
        np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-5, atol=1e-8)
        assert np.abs(fd).max() > 1e-3  # a real gradient, not all zeros


def test_fomaml_gradient_is_maml_with_the_inner_gradients_stopped_and_differs_from_maml():
    apply, params, tasks = _tiny_problem()
    key = jax.random.key(3)
    lr, steps = 0.1, 2

    def reference(p0):  # written independently: SGD inner loop with stop_gradient on each inner gradient
        def one(sx, sy, qx, qy):
            p = p0
            for _ in range(steps):
                g = jax.grad(lambda q: jnp.mean((apply(q, sx)["prediction"][:, 0] - sy) ** 2))(p)
                p = jax.tree.map(lambda a, b: a - lr * jax.lax.stop_gradient(b), p, g)
            return jnp.mean((apply(p, qx)["prediction"][:, 0] - qy) ** 2)

        return jnp.mean(jax.vmap(one)(*tasks))

    g_ref = jax.jit(jax.grad(reference))(params)
    g_fo = jax.jit(jax.grad(lambda p: meta_loss(_config(method="fomaml"), apply, p, tasks, key)))(params)
    g_so = jax.jit(jax.grad(lambda p: meta_loss(_config(method="maml"), apply, p, tasks, key)))(params)
    np.testing.assert_allclose(ravel_pytree(g_fo)[0], ravel_pytree(g_ref)[0], rtol=1e-5, atol=1e-7)
    assert np.abs(ravel_pytree(g_so)[0] - ravel_pytree(g_fo)[0]).max() > 1e-3
    # the objective's value is the same: only the gradient differs
    value = jax.jit(lambda p: meta_loss(_config(method="fomaml"), apply, p, tasks, key))(params)
    np.testing.assert_allclose(value, jax.jit(reference)(params), rtol=1e-6)


def test_adam_inner_loop_is_optax_adam_and_remat_changes_nothing():
    apply, params, tasks = _tiny_problem()
    config = _config(inner_optimizer="adam", inner_lr=0.05, inner_steps=3)
    sx, sy = tasks.support_x[0], tasks.support_y[0]
    adapted = jax.jit(lambda p: adapt(config, apply, p, sx, sy, jax.random.key(0)))(params)

    @jax.jit
    def reference(p):
        opt = optax.adam(0.05, eps_root=config.adam_eps_root)
        s = opt.init(p)
        for _ in range(3):
            g = jax.grad(lambda q: jnp.mean((apply(q, sx)["prediction"][:, 0] - sy) ** 2))(p)
            u, s = opt.update(g, s, p)
            p = optax.apply_updates(p, u)
        return p

    np.testing.assert_allclose(ravel_pytree(adapted)[0], ravel_pytree(reference(params))[0], rtol=1e-5, atol=1e-6)

    def grad(c):
        return ravel_pytree(jax.jit(jax.grad(lambda q: meta_loss(c, apply, q, tasks, jax.random.key(0))))(params))[0]

    np.testing.assert_allclose(grad(config.replace(remat=True)), grad(config), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------- learning tests


def test_metasgd_rates_stay_positive_and_move_under_a_large_meta_learning_rate():
    config = _config(method="metasgd", meta_lr=0.5, meta_steps=20, inner_lr=0.05)
    result = make_trainer(config, LinearTasks(), model=TinyMLP(4)).train(jax.random.key(0))
    rates = ravel_pytree(result.inner_lrs)[0]
    assert jnp.all(jnp.isfinite(rates)) and jnp.all(rates > 0)
    assert jnp.abs(rates - 0.05).max() > 0.01
    assert not result.history["skipped"].any()


def test_meta_training_makes_few_shot_adaptation_lower_the_query_loss():
    config = _config(method="maml", inner_steps=3, inner_lr=0.2, meta_lr=1e-2, meta_batch=8, support=10, query=10,
                     meta_steps=300)
    model = TinyMLP(16)
    trainer = make_trainer(config, LinearTasks(), model=model)
    state = trainer.init(jax.random.key(0))
    apply = trainer.apply
    fresh = LinearTasks().sample(jax.random.key(99), {}, 64, 10, 20)
    before = evaluate(config, apply, state.meta_params, fresh, jax.random.key(5))
    result = trainer.result(trainer.run(state, config.meta_steps)[0])
    after = evaluate(config, apply, result.params, fresh, jax.random.key(5))
    pre, post = float(after["pre_adapt_loss"].mean()), float(after["post_adapt_loss"].mean())
    assert post < 0.35 * pre                                      # adaptation helps the meta-learned init
    assert post < 0.6 * float(before["post_adapt_loss"].mean())   # and far more than it helps the random init
    # k is a shape: adapting on 3 samples works too (and helps less than on 10)
    three = Tasks(fresh.support_x[:, :3], fresh.support_y[:, :3], fresh.query_x, fresh.query_y)
    post3 = float(evaluate(config, apply, result.params, three, jax.random.key(5))["post_adapt_loss"].mean())
    assert post < post3 < pre


# ------------------------------------------------------------------------------------ the trainer


def _array_args(n_assets=3, n=40, window=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_assets * n, window, 1)).astype(np.float32)
    y = (x[:, -1, 0] * np.repeat(rng.uniform(-2, 2, n_assets), n)).astype(np.float32)
    return tasks_from_splits(x, y, np.repeat(np.arange(n_assets), n))


def test_trainer_chunks_are_bit_identical_to_one_run_and_same_key_gives_same_result():
    config = _config(meta_steps=4)
    trainer = make_trainer(config, ArrayTasks(embargo=1), _array_args(), model=TinyMLP(4))
    s0 = trainer.init(jax.random.key(7))
    whole, m_whole = trainer.run(s0, 4)
    half, m1 = trainer.run(s0, 2)
    chunked, m2 = trainer.run(half, 2)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(chunked)):
        assert jnp.array_equal(a, b, equal_nan=True)
    for name in m_whole:
        assert jnp.array_equal(m_whole[name], jnp.concatenate([m1[name], m2[name]]))
    again = trainer.train(jax.random.key(7))
    other = trainer.train(jax.random.key(8))
    assert all(jnp.array_equal(a, b) for a, b in zip(jax.tree.leaves(trainer.result(whole)), jax.tree.leaves(again)))
    assert not jnp.array_equal(again.params["Dense_0"]["kernel"], other.params["Dense_0"]["kernel"])
    assert int(trainer.counter(whole)) == 4 and bool(m_whole["active"].all())
    assert jnp.all(jnp.isfinite(again.history["meta_loss"]))


def test_non_finite_meta_updates_are_skipped_and_counted():
    config = _config(meta_steps=4)
    args = _array_args()
    trainer = make_trainer(config, ArrayTasks(), args, model=TinyMLP(4))
    state = trainer.init(jax.random.key(0))
    bad = {"tasks": {**args, "x": args["x"].at[0].set(jnp.nan).at[1].set(jnp.nan).at[2].set(jnp.nan)}, "params": None}
    after_bad, metrics = trainer.run(state, 2, bad)
    assert bool(metrics["skipped"].all()) and int(after_bad.step) == 2
    assert all(jnp.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.meta_params),
                                                     jax.tree.leaves(after_bad.meta_params)))
    final, metrics = trainer.run(after_bad, 2)
    assert not metrics["skipped"].any()
    result = trainer.result(final)
    assert int(result.history["skipped"].sum()) == 2
    assert jnp.all(jnp.isfinite(ravel_pytree(result.params)[0]))
    assert not jnp.array_equal(ravel_pytree(result.params)[0], ravel_pytree(state.meta_params)[0])


def test_registered_tcn_meta_trains_on_synthetic_classification_tasks():
    source = SyntheticRegimeTasks(model="gbm", window=8, labels="classification", support_bars=24, query_bars=8)
    config = MAMLConfig(model="tcn", preset="tiny", task="classification", model_kwargs={"n_classes": 3, "levels": 1},
                        method="fomaml", inner_steps=1, meta_steps=2, meta_batch=2, support=4, query=4)
    train = make_train(config, source)
    result = train(jax.random.key(0))
    assert jnp.all(jnp.isfinite(result.history["meta_loss"])) and result.inner_lrs is None
    with pytest.raises(ValueError, match="needs float targets"):
        make_trainer(config.replace(task="regression"), source)


# ---------------------------------------------------------------------------------- task sources


def test_array_tasks_draw_the_query_after_the_support_and_never_padding():
    n_assets, n_max = 3, 50
    counts = np.array([30, 8, 50])  # asset 1 is too short for a task and must never be drawn
    ids = np.concatenate([np.full(c, a) for a, c in enumerate(counts)])
    time = np.concatenate([np.arange(c) for c in counts])
    order = np.random.default_rng(0).permutation(len(ids))  # pooled in any order, sorted back by time
    x = (time + 1000.0 * ids)[:, None, None].astype(np.float32)
    args = tasks_from_splits(x[order], (time + 1000 * ids)[order].astype(np.float32), ids[order], times=time[order])
    assert args["x"].shape == (n_assets, n_max, 1, 1) and list(args["count"]) == list(counts)
    np.testing.assert_array_equal(args["y"][0, :30], np.arange(30))
    tasks = jax.jit(lambda k, a: ArrayTasks(embargo=2).sample(k, a, 256, 5, 4))(jax.random.key(0), args)
    s, q = np.asarray(tasks.support_y), np.asarray(tasks.query_y)
    s, q = s.astype(int), q.astype(int)
    asset, s_time, q_time = s[:, 0] // 1000, s % 1000, q % 1000
    assert set(np.unique(asset)) == {0, 2}
    assert (s // 1000 == asset[:, None]).all() and (q // 1000 == asset[:, None]).all()  # one asset per task
    assert (q_time.min(1) - s_time.max(1) >= 3).all()                                   # future, after embargo
    assert (q_time < counts[asset][:, None]).all()                                       # no padding
    assert (np.diff(s_time, axis=1) > 0).all() and (np.diff(q_time, axis=1) > 0).all()  # distinct, in order
    np.testing.assert_array_equal(np.asarray(tasks.support_x)[..., 0, 0], s)
    with pytest.raises(ValueError, match="no asset has"):
        make_trainer(_config(support=40, query=20), ArrayTasks(), args, model=TinyMLP())


def test_synthetic_regime_tasks_are_deterministic_finite_and_shaped():
    source = SyntheticRegimeTasks(model="gbm", window=8, horizon=2, support_bars=48, query_bars=24)
    sample = jax.jit(lambda k: source.sample(k, {}, 3, 6, 5))
    a, b, c = sample(jax.random.key(0)), sample(jax.random.key(0)), sample(jax.random.key(1))
    assert [t.shape for t in a] == [(3, 6, 8, 3), (3, 6), (3, 5, 8, 3), (3, 5)] and source.n_features == 3
    assert all(jnp.array_equal(u, v) for u, v in zip(a, b))
    assert not jnp.array_equal(a.support_x, c.support_x)
    assert all(bool(jnp.all(jnp.isfinite(t))) for t in a)
    with pytest.raises(ValueError, match="support windows"):
        source.sample(jax.random.key(0), {}, 1, 40, 5)


def test_synthetic_labels_read_only_bars_after_the_window_and_support_only_the_support_period():
    source = SyntheticRegimeTasks(model="regime_switching", window=4, horizon=2, support_bars=20, query_bars=12)
    bars = source.market(jax.random.key(3)).bars
    s_ends, q_ends = jnp.array([4, 9, 17]), jnp.array([20, 24, 27, 29])
    t_star = 24                                                   # perturb every bar after t*
    later = jnp.arange(source.n_bars) > t_star
    moved = bars._replace(**{f: jnp.where(later, getattr(bars, f) * 1.1, getattr(bars, f))
                             for f in ("open", "high", "low", "close")},
                          volume=jnp.where(later, bars.volume * 2.0, bars.volume))
    a, b = source.task_from_bars(bars, s_ends, q_ends), source.task_from_bars(moved, s_ends, q_ends)
    assert jnp.array_equal(a.support_x, b.support_x) and jnp.array_equal(a.support_y, b.support_y)
    assert jnp.array_equal(a.query_x[:2], b.query_x[:2])          # windows ending at or before t*: same inputs
    assert jnp.array_equal(a.query_y[0], b.query_y[0])            # label of t = 20 reads bars 21, 22 only
    assert not jnp.array_equal(a.query_y[1], b.query_y[1])        # label of t* reads bars t*+1, t*+2
    assert not jnp.array_equal(a.query_x[2:], b.query_x[2:])
    labels = dataclasses.replace(source, labels="classification", dead_band=0.5)
    y = jnp.concatenate(labels.task_from_bars(bars, s_ends, q_ends)[1::2])
    z = jnp.concatenate(a[1::2])
    assert y.dtype == jnp.int32
    np.testing.assert_array_equal(y, np.where(z > 0.5, 2, np.where(z < -0.5, 0, 1)))


# ----------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("changes, match", [
    (dict(inner_optimizer="adam", adam_eps_root=0.0), "adam_eps_root must be > 0"),
    (dict(method="reptile"), "method must be one of"),
    (dict(task="multitask"), "task must be one of"),
    (dict(inner_optimizer="rmsprop"), "inner_optimizer must be one of"),
    (dict(inner_steps=0), "inner_steps must be >= 1"),
    (dict(meta_lr=0.0), "meta_lr must be > 0"),
])
def test_config_refuses_bad_values_in_one_line(changes, match):
    with pytest.raises(ValueError, match=match):
        _config(**changes)


def test_split_meta_params_gives_positive_rates_and_plain_params_otherwise():
    _, params, _ = _tiny_problem()
    meta = init_meta_params(_config(method="metasgd", inner_lr=0.03), params)
    p, rates = split_meta_params(_config(method="metasgd"), meta)
    np.testing.assert_allclose(ravel_pytree(rates)[0], 0.03, rtol=1e-6)
    assert split_meta_params(_config(), params) == (params, None)
