"""Supervised training: hand-worked losses and augmentations, the schedule, determinism, no recompilation,
early stopping, NaN safety, tiny learning tasks, bf16, pre-training and 1-vs-4-device equivalence."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.models.registry import register
from trading_jax.training import (
    Dataset, EarlyStopping, TrainConfig, cross_entropy, curriculum_permutation, early_stopping_update, fgsm, huber,
    make_pretrain, make_schedule, make_train, mixup, mixup_with, mse, multitask_loss, pool_size, sample_volatility,
)

TRACES = {"n": 0}  # incremented each time the test model is traced


class TinyNet(nn.Module):
    """Flatten [batch, time, features] -> Dense -> tanh -> heads; "sequence" for pre-training."""

    n_outputs: int = 1
    n_classes: int = 3
    hidden: int = 16
    dropout: float = 0.0
    linear: bool = False  # a zero-initialised linear regressor (no hidden layer)
    multitask: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        TRACES["n"] += 1
        b, t, f = x.shape
        flat = x.reshape(b, t * f)
        if self.linear:
            return {"prediction": nn.Dense(self.n_outputs, use_bias=False, kernel_init=nn.initializers.zeros)(flat)}
        h = nn.tanh(nn.Dense(self.hidden)(flat))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        out = {
            "prediction": nn.Dense(self.n_outputs)(h),
            "logits": nn.Dense(self.n_classes)(h),
            "sequence": nn.Dense(t * self.hidden)(h).reshape(b, t, self.hidden),
        }
        if self.multitask:
            out["price"] = out["prediction"]
            out["direction_logits"] = out["logits"]
            out["volatility"] = nn.softplus(nn.Dense(1)(h))
            out["volume"] = nn.Dense(1)(h)
            out["log_vars"] = self.param("log_vars", nn.initializers.zeros, (4,), jnp.float32)
        return out


@register("test_training_mlp", presets={"tiny": dict(hidden=16)})
def _tiny_mlp(**cfg):
    return TinyNet(**cfg)


N, T, F = 128, 8, 6

REG_CONFIG = TrainConfig(model="test_training_mlp", preset="tiny", task="regression", epochs=20, batch_size=16,
                         learning_rate=1e-2, warmup_steps=5, weight_decay=0.0)


def regression_data(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * N, T, F)).astype(np.float32)
    y = (x[:, -1, 0] - 0.5 * x[:, -2, 1])[:, None].astype(np.float32)
    return Dataset(jnp.asarray(x[:N]), jnp.asarray(y[:N]), jnp.asarray(x[N:]), jnp.asarray(y[N:]))


def classification_data(seed: int = 1) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6 * N, T, F)).astype(np.float32)
    s = x[:, -1, 0] + x[:, -1, 1]
    y = np.where(s < -0.6, 0, np.where(s > 0.6, 2, 1)).astype(np.int32)
    n = 4 * N
    return Dataset(jnp.asarray(x[:n]), jnp.asarray(y[:n]), jnp.asarray(x[n:]), jnp.asarray(y[n:]))


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ------------------------------------------------------------------------------- pure pieces


def test_mse_and_huber_by_hand():
    assert float(mse(jnp.array([[1.0], [3.0]]), jnp.array([0.0, 3.0]))) == pytest.approx(0.5)
    # residuals 0.5 (quadratic: 0.125) and 3 (linear: 1 * (3 - 0.5) = 2.5)
    assert float(huber(jnp.array([0.0, 3.0]), jnp.array([0.5, 0.0]), delta=1.0)) == pytest.approx(1.3125)


def test_label_smoothed_cross_entropy_by_hand():
    # softmax([0, 0, ln 2]) = [1/4, 1/4, 1/2]; eps = 0.3, K = 3: targets [0.1, 0.1, 0.8]
    # CE = -(0.2 ln 1/4 + 0.8 ln 1/2) = 1.2 ln 2
    logits = jnp.array([[0.0, 0.0, math.log(2.0)]])
    assert float(cross_entropy(logits, jnp.array([2]), 0.3)) == pytest.approx(1.2 * math.log(2.0), rel=1e-6)
    assert float(cross_entropy(logits, jnp.array([[0.0, 0.0, 1.0]]), 0.3)) == pytest.approx(1.2 * math.log(2.0), rel=1e-6)
    assert float(cross_entropy(logits, jnp.array([2]))) == pytest.approx(math.log(2.0), rel=1e-6)


def test_multitask_loss_is_seed_000_weighted_sum():
    outputs = {"price": jnp.array([[1.0], [3.0]]), "volatility": jnp.array([[2.0], [2.0]]),
               "volume": jnp.array([[9.0], [9.0]]), "direction_logits": jnp.zeros((2, 3)),
               "log_vars": jnp.array([math.log(2.0), 0.0, 0.0, 0.0])}
    targets = {"price": jnp.array([0.0, 3.0]), "volatility": jnp.array([1.0, 2.0]), "volume": jnp.array([0.0, 0.0]),
               "direction": jnp.array([0, 1])}
    # 1.0 * MSE_price (0.5) + 0.8 * CE (ln 3) + 0.5 * MSE_vol (0.5); volume has weight 0
    assert float(multitask_loss(outputs, targets)) == pytest.approx(0.75 + 0.8 * math.log(3.0), rel=1e-6)
    # uncertainty: price 1.0 * (0.5 e^{-ln 2} 0.5 + ln2 / 2), direction 0.8 ln 3, volatility 0.5 * (0.5 * 0.5)
    expected = 0.125 + 0.5 * math.log(2.0) + 0.8 * math.log(3.0) + 0.125
    assert float(multitask_loss(outputs, targets, uncertainty_weighting=True)) == pytest.approx(expected, rel=1e-6)


def test_mixup_by_hand_for_a_fixed_lambda():
    x = jnp.array([[1.0], [3.0]])
    y = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    xm, ym = mixup_with(0.25, jnp.array([1, 0]), x, y)
    np.testing.assert_allclose(xm, [[2.5], [1.5]])
    np.testing.assert_allclose(ym, [[0.25, 0.75], [0.75, 0.25]])
    with pytest.raises(TypeError, match="one-hot"):
        mixup_with(0.5, jnp.array([1, 0]), x, jnp.array([0, 1]))
    xr, yr = mixup(jax.random.key(0), x, y, 0.2)  # a convex combination: x and y mixed with the same lambda
    lam = (xr[0, 0] - 3.0) / (1.0 - 3.0) if yr[0, 0] != 1.0 else 1.0
    np.testing.assert_allclose(yr[0, 0], lam if yr[0, 0] != 1.0 else 1.0, rtol=1e-5)


def test_fgsm_moves_along_the_sign_of_the_gradient_of_a_linear_model():
    w = jnp.array([1.0, -2.0, 0.5])
    x = jnp.array([0.3, 0.1, -0.2])  # w.x = 0, residual -1: grad_x = 2 (w.x - 1) w = -2 w
    loss = lambda v: (jnp.dot(w, v) - 1.0) ** 2
    x_adv = fgsm(loss, x, 0.1)
    np.testing.assert_allclose(x_adv, x + 0.1 * jnp.sign(jax.grad(loss)(x)))
    np.testing.assert_allclose(x_adv, x - 0.1 * jnp.sign(w))
    assert loss(x_adv) > loss(x)


def test_warmup_cosine_schedule_values():
    schedule = make_schedule(TrainConfig(model="m", learning_rate=1.0, warmup_steps=10, final_lr_fraction=0.1), 110)
    for step, value in [(0, 0.0), (5, 0.5), (10, 1.0), (60, 0.55), (110, 0.1)]:
        assert float(schedule(step)) == pytest.approx(value, abs=1e-6), step


def test_curriculum_pool_grows_from_calm_to_volatile():
    assert [int(pool_size(e, 9, 4)) for e in range(4)] == [3, 6, 9, 9]
    x = jnp.asarray(np.tile([1.0, -1.0, 1.0, -1.0, 1.0], (9, 1))[:, :, None] * np.arange(1, 10)[:, None, None])
    order = jnp.argsort(sample_volatility(x))
    np.testing.assert_array_equal(order, np.arange(9))  # scaled by 1..9: volatility increases with the index
    perm = curriculum_permutation(jax.random.key(0), order, 4)
    assert sorted(np.asarray(perm[:4]).tolist()) == [0, 1, 2, 3]
    np.testing.assert_array_equal(perm[4:], np.arange(4, 9))


def test_early_stopping_update_by_hand():
    state = EarlyStopping.init()
    improvements = []
    for epoch, loss in enumerate([3.0, 2.0, 2.5, 2.1, 1.0, 0.5]):  # patience 2: stops after epoch 3
        state, improved = early_stopping_update(state, epoch, jnp.float32(loss), patience=2)
        improvements.append(bool(improved))
    assert improvements == [True, True, False, False, False, False]
    assert int(state.best_epoch) == 1 and float(state.best_loss) == 2.0 and bool(state.stopped)


def test_non_finite_data_raises_naming_array_sample_time_and_feature():
    data = regression_data()
    x = np.asarray(data.x_train).copy()
    x[12, 3, 5] = np.nan
    expected = ("x_train has NaN at sample 12, time 3, feature 5 (1 non-finite value in total): clean or impute "
                "the data before training (e.g. forward-fill missing bars or drop the affected windows)")
    with pytest.raises(ValueError) as info:
        make_train(REG_CONFIG, data._replace(x_train=jnp.asarray(x)))
    assert str(info.value) == expected
    y = {"price": np.zeros(N, np.float32)}
    y["price"][[3, 7]] = np.inf
    with pytest.raises(ValueError, match=r"^y_val\['price'\] has inf at sample 3 \(2 non-finite values in total\)"):
        make_train(REG_CONFIG.replace(task="multitask"), data._replace(y_val=y))


# ------------------------------------------------------------------------------ training runs


@pytest.fixture(scope="module")
def regression_run():
    data = regression_data()
    train = make_train(REG_CONFIG, data)
    first = train(jax.random.key(0))
    traces = TRACES["n"]
    second = train(jax.random.key(0))
    other = train(jax.random.key(1))
    return train, data, first, second, other, traces


def test_regression_learns(regression_run):
    _, _, result, *_ = regression_run
    val = np.asarray(result.history["val_loss"])
    assert val.shape == (REG_CONFIG.epochs,)
    assert val.min() < 0.5 * val[0], val
    assert int(result.best_epoch) == int(np.argmin(val))
    assert not np.asarray(result.history["stopped"]).any()
    assert np.asarray(result.history["skipped_steps"]).sum() == 0


def test_same_key_gives_identical_params_bit_for_bit(regression_run):
    _, _, first, second, other, _ = regression_run
    assert leaves_equal(first.params, second.params)
    assert leaves_equal(first.history, second.history)
    assert not leaves_equal(first.params, other.params)


def test_second_call_does_not_recompile(regression_run):
    train, _, _, _, _, traces = regression_run
    assert TRACES["n"] == traces  # calls with the same and another key did not retrace the model
    trainer = train.trainer
    assert trainer._jit_init._cache_size() == 1 and trainer._jit_run._cache_size() == 1  # one compilation each


def test_non_finite_loss_skips_the_update_and_is_counted(regression_run):
    train, data, *_ = regression_run
    y = np.asarray(data.y_train).copy()
    y[5] = 1e30  # finite data whose squared error overflows: the batch holding sample 5 has an inf loss
    traces = TRACES["n"]
    result = train(jax.random.key(0), data=data._replace(y_train=jnp.asarray(y)))
    assert TRACES["n"] == traces  # new data of the same shapes: no retrace
    np.testing.assert_array_equal(result.history["skipped_steps"], np.ones(REG_CONFIG.epochs))
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(result.params))
    assert np.isfinite(np.asarray(result.history["train_loss"])).all()


def test_early_stopping_keeps_the_best_epoch():
    # A zero-initialised linear model learns y = 2 x on train; validation wants y = x, so the
    # validation loss falls while the weight passes 1 and rises afterwards.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2 * N, T, F)).astype(np.float32)
    data = Dataset(jnp.asarray(x[:N]), jnp.asarray(2.0 * x[:N, -1, :1]), jnp.asarray(x[N:]), jnp.asarray(x[N:, -1, :1]))
    config = REG_CONFIG.replace(model_kwargs=(("linear", True),), epochs=16, learning_rate=0.03, warmup_steps=0,
                                patience=3)
    train = make_train(config, data)
    result = train(jax.random.key(0))
    val = np.asarray(result.history["val_loss"])
    stopped = np.asarray(result.history["stopped"])
    best = int(result.best_epoch)
    assert 0 < best < config.epochs - 1 - config.patience, val
    first_stopped = int(np.argmax(stopped))
    assert stopped.any() and first_stopped == best + config.patience + 1 and stopped[first_stopped:].all()
    assert best == int(np.argmin(val[:first_stopped]))
    # no update after stopping: the validation loss stays put, and the final params are those of that epoch
    np.testing.assert_allclose(val[first_stopped:], val[first_stopped - 1], rtol=1e-6)
    w_best = np.asarray(result.best_params["Dense_0"]["kernel"])
    pred = np.asarray(data.x_val).reshape(N, -1) @ w_best
    np.testing.assert_allclose(np.mean((pred - np.asarray(data.y_val)) ** 2), val[best], rtol=1e-4)


def test_classification_with_label_smoothing_dropout_and_noise_learns():
    data = classification_data()
    config = TrainConfig(model="test_training_mlp", preset="tiny", model_kwargs={"dropout": 0.1},
                         task="classification", epochs=25, batch_size=32, learning_rate=1e-2, warmup_steps=5,
                         label_smoothing=0.1, noise_std=0.01)
    result = make_train(config, data)(jax.random.key(0))
    val = np.asarray(result.history["val_loss"])
    assert val.min() < 0.5 * val[0], val


def test_multitask_bf16_with_curriculum_mixup_and_fgsm_lowers_the_validation_loss_and_returns_float32_params():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(2 * N, T, F)) * rng.uniform(0.5, 2.0, size=(2 * N, 1, 1))).astype(np.float32)
    r = x[:, -1, 0]
    y = {"price": r[:, None], "direction": (np.sign(r) + 1).astype(np.int32), "volatility": x[:, :, 0].std(1),
         "volume": np.abs(x[:, -1, 1])}
    split = lambda tree, s: jax.tree.map(lambda a: jnp.asarray(a[s]), tree)
    data = Dataset(split(x, slice(0, N)), split(y, slice(0, N)), split(x, slice(N, None)), split(y, slice(N, None)))
    config = TrainConfig(model="test_training_mlp", preset="tiny", model_kwargs={"multitask": True}, task="multitask",
                         epochs=6, batch_size=16, learning_rate=5e-3, label_smoothing=0.1, fgsm_epsilon=0.01, mixup_alpha=0.2,
                         curriculum=True, uncertainty_weighting=True, compute_dtype="bfloat16")
    result = make_train(config, data)(jax.random.key(0))
    assert {leaf.dtype for leaf in jax.tree.leaves(result.params)} == {jnp.dtype(jnp.float32)}
    assert np.isfinite(np.asarray(result.history["train_loss"])).all()
    val = np.asarray(result.history["val_loss"])
    assert np.isfinite(val).all()
    assert val[-1] < 0.9 * val[0], val  # it learns (seeds 0-2: -23%, -34%, -26% over the 6 epochs)
    # the pool of calm samples grows over 3 epochs (ceil(128 * (1/3 + 2/3 * e / 3)) = 43, 72, 100, 128),
    # trained in whole batches of 16: 32, 64, 96, 128
    np.testing.assert_array_equal(result.history["pool"], [32, 64, 96, 128, 128, 128])


def test_masked_pretraining_reduces_the_masked_reconstruction_loss():
    rng = np.random.default_rng(4)
    t = np.arange(T)[None, :, None]
    x = np.sin(0.7 * t + rng.uniform(0, 2 * np.pi, size=(N, 1, F))).astype(np.float32)
    config = REG_CONFIG.replace(epochs=30, learning_rate=1e-2, pretrain_mask_ratio=0.25)
    pretrain = make_pretrain(config, jnp.asarray(x))
    result = pretrain(jax.random.key(0))
    loss = np.asarray(result.history["loss"])
    assert loss[-1] < 0.5 * loss[0], loss
    assert set(result.params) == {"backbone", "head"}
    assert jax.tree.structure(result.backbone_params) == jax.tree.structure(
        TinyNet(hidden=16).init(jax.random.key(0), jnp.asarray(x[:1]))["params"])


def test_pretraining_needs_a_sequence_output():
    with pytest.raises(ValueError, match="no 'sequence' output"):
        make_pretrain(REG_CONFIG.replace(model_kwargs={"linear": True}), regression_data().x_train)(jax.random.key(0))


_DATA_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import jax, numpy as np
    import test_training as t
    from trading_jax.parallel import make_mesh
    from trading_jax.training import make_train
    assert jax.device_count() == 4, jax.devices()
    config = t.REG_CONFIG.replace(epochs=3, model_kwargs={"dropout": 0.1}, noise_std=0.01)
    data = t.regression_data()
    single = make_train(config, data)(jax.random.key(0))
    multi = make_train(config, data, mesh=make_mesh(4))(jax.random.key(0))
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(multi.params)))
    devices = min(len(leaf.sharding.device_set) for leaf in jax.tree.leaves(multi.params))
    # fit on the 4-device mesh: stop after 2 epochs, resume with a fresh trainer and checkpointer
    import tempfile
    from trading_jax.checkpoint import CheckpointConfig, Checkpointer
    from trading_jax.loop import fit
    from trading_jax.training import make_trainer
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = lambda: Checkpointer(CheckpointConfig(tmp, save_every_steps=1, best_metric="val_loss"))
        first = ckpt()
        fit(make_trainer(config, data, mesh=make_mesh(4)), jax.random.key(0), checkpointer=first, max_units=2,
            show_progress=False)
        first.close()
        second = ckpt()
        resumed = fit(make_trainer(config, data, mesh=make_mesh(4)), jax.random.key(0), checkpointer=second,
                      show_progress=False)
        second.close()
    fit_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                   for a, b in zip(jax.tree.leaves(multi.params), jax.tree.leaves(resumed.params)))
    fit_devices = min(len(leaf.sharding.device_set) for leaf in jax.tree.leaves(resumed.params))
    print(json.dumps({"diff": diff, "devices": devices, "fit_diff": fit_diff, "fit_devices": fit_devices,
                      "val": np.asarray(multi.history["val_loss"]).tolist()}))
    """
)


def test_one_and_four_devices_agree_and_fit_resumes_on_four_devices():
    # 4 forced CPU devices; both runs are in the subprocess, so a faster (less optimised) XLA backend is fair
    flags = "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    tests_dir = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", _DATA_PARALLEL_SCRIPT, tests_dir], env=env, capture_output=True,
                          text=True, timeout=300, cwd=str(Path(tests_dir).parent))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4
    assert report["diff"] < 1e-5, report
    assert report["fit_devices"] == 4  # the resumed state came back sharded over the mesh
    assert report["fit_diff"] == 0.0, report  # stop + resume on 4 devices == uninterrupted train on 4


def test_initial_params_overlay_only_the_leaves_they_hold_and_refuse_what_does_not_fit():
    from trading_jax.training.steps import overlay_params

    fresh = {"bert": {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}, "head": {"kernel": jnp.ones((3, 1))}}
    loaded = {"bert": {"w": jnp.full((2, 3), 7.0)}}
    out = overlay_params(fresh, loaded)
    assert (out["bert"]["w"] == 7).all() and (out["bert"]["b"] == 0).all() and (out["head"]["kernel"] == 1).all()
    with pytest.raises(ValueError, match=r"initial params: 'bert/w' has shape \(3, 2\) but the model's is \(2, 3\)"):
        overlay_params(fresh, {"bert": {"w": jnp.zeros((3, 2))}})
    with pytest.raises(ValueError, match="the model has no parameter 'bert/kernel'"):
        overlay_params(fresh, {"bert": {"kernel": jnp.zeros(3)}})
