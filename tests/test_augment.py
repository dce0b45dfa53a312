"""Augmentations change training as documented: FGSM adds the loss at x + eps sign(grad_x L), mixup mixes
with the lambda and partners drawn from its key, and switching either on changes the trained params."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.models.registry import register
from trading_jax.training import Dataset, TrainConfig, fgsm, make_train, mixup


class Linear(nn.Module):
    """prediction = flatten(x) @ w (no bias): a linear regressor whose MSE gradient is known by hand."""

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        return {"prediction": nn.Dense(1, use_bias=False)(x.reshape(x.shape[0], -1))}


@register("test_augment_linear", presets={"tiny": {}})
def _linear(**cfg):
    return Linear(**cfg)


N, T, F = 16, 2, 3
CONFIG = TrainConfig(model="test_augment_linear", task="regression", epochs=1, batch_size=N, learning_rate=1e-2,
                     weight_decay=0.0)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * N, T, F)).astype(np.float32)
    y = (x.reshape(2 * N, -1) @ rng.normal(size=T * F) + 0.1 * rng.normal(size=2 * N))[:, None].astype(np.float32)
    w = rng.normal(size=(T * F, 1)).astype(np.float32)  # initial weights, away from the solution
    data = Dataset(jnp.asarray(x[:N]), jnp.asarray(y[:N]), jnp.asarray(x[N:]), jnp.asarray(y[N:]))
    return data, {"Dense_0": {"kernel": jnp.asarray(w)}}


def mse_by_hand(x, y, w) -> float:
    return float(np.mean((x.reshape(len(x), -1).astype(np.float64) @ w - y) ** 2))


# ------------------------------------------------------------------------------------------- FGSM


def test_fgsm_training_loss_is_the_clean_loss_plus_the_loss_at_the_sign_gradient_step(problem):
    data, params = problem
    eps = 0.1
    x, y, w = (np.asarray(a, np.float64) for a in (data.x_train, data.y_train, params["Dense_0"]["kernel"]))
    # L(x) = mean_i (x_i . w - y_i)^2, so grad_{x_i} L = 2 (x_i . w - y_i) w / n: its sign is sign(r_i) sign(w)
    residual = x.reshape(N, -1) @ w - y
    x_adv = x + eps * (np.sign(residual) * np.sign(w.T)).reshape(N, T, F)
    clean, adversarial = mse_by_hand(x, y, w), mse_by_hand(x_adv, y, w)
    assert adversarial > clean + 0.05  # the adversarial term is not a copy of the clean one

    # the library's fgsm gives the same adversarial inputs
    loss = lambda v: jnp.mean((v.reshape(N, -1) @ params["Dense_0"]["kernel"] - data.y_train) ** 2)
    np.testing.assert_allclose(fgsm(loss, data.x_train, eps), x_adv, rtol=1e-6)

    # one epoch of one full batch: the recorded training loss is that of the first step, at the initial params
    result = make_train(CONFIG.replace(fgsm_epsilon=eps), data)(jax.random.key(0), params=params)
    np.testing.assert_allclose(float(result.history["train_loss"][0]), clean + adversarial, rtol=1e-5)
    plain = make_train(CONFIG, data)(jax.random.key(0), params=params)
    np.testing.assert_allclose(float(plain.history["train_loss"][0]), clean, rtol=1e-5)


# ------------------------------------------------------------------------------------------ mixup


def test_mixup_mixes_inputs_and_targets_with_the_lambda_and_partners_drawn_from_its_key():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, T, F)).astype(np.float32)
    y = rng.normal(size=(8, 2)).astype(np.float32)
    key, alpha = jax.random.key(3), 0.4
    k_lam, k_perm = jax.random.split(key)
    lam = float(jax.random.beta(k_lam, alpha, alpha))
    perm = np.asarray(jax.random.permutation(k_perm, 8))
    assert 0.05 < lam < 0.95 and (perm != np.arange(8)).any()  # a real mix, so the check below can fail

    xm, ym = mixup(key, jnp.asarray(x), jnp.asarray(y), alpha)
    np.testing.assert_allclose(xm, lam * x + (1 - lam) * x[perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ym, lam * y + (1 - lam) * y[perm], rtol=1e-5, atol=1e-6)
    xm_again, _ = mixup(key, jnp.asarray(x), jnp.asarray(y), alpha)
    np.testing.assert_array_equal(xm_again, xm)  # the same key, the same mix


def test_training_with_mixup_gives_other_params_than_without(problem):
    data, params = problem
    config = CONFIG.replace(epochs=3, batch_size=8)
    plain = make_train(config, data)(jax.random.key(0), params=params)
    train_mixed = make_train(config.replace(mixup_alpha=0.4), data)
    mixed, again = (train_mixed(jax.random.key(0), params=params) for _ in range(2))
    w_plain, w_mixed = (np.asarray(r.params["Dense_0"]["kernel"]) for r in (plain, mixed))
    np.testing.assert_array_equal(np.asarray(again.params["Dense_0"]["kernel"]), w_mixed)  # deterministic
    assert np.abs(w_plain - w_mixed).max() > 1e-3, np.abs(w_plain - w_mixed).max()
    # the first step sees the mixed batch: its loss differs from the clean batch's
    assert abs(float(mixed.history["train_loss"][0]) - float(plain.history["train_loss"][0])) > 1e-3
