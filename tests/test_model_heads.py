"""The heads the model comparison needs: the price transformer's volatility and confidence heads are in its
loss (and learn), the direction transformer's derived confidence is not, and the CNN-LSTM's indicator branch
reads the named indicators at the decision bar instead of zeros."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.models import create
from trading_jax.training.config import TrainConfig
from trading_jax.training.losses import (cross_entropy, direction_confidence_loss, multitask_loss,
                                         task_loss)


def test_direction_confidence_loss_is_the_bce_of_a_right_sign_with_flat_labels_left_out():
    price = jnp.array([0.3, -0.2, 0.1, -0.4])       # calls: up, down, up, down
    direction = jnp.array([2, 2, 1, 0])             # UP (right), UP (wrong), FLAT (left out), DOWN (right)
    confidence = jnp.array([0.9, 0.6, 0.5, 0.7])
    expected = -(math.log(0.9) + math.log(1 - 0.6) + math.log(0.7)) / 3
    assert float(direction_confidence_loss(confidence, price, direction)) == pytest.approx(expected, rel=1e-6)
    assert not np.asarray(jax.grad(lambda p: direction_confidence_loss(confidence, p, direction))(price)).any()
    soft = jax.nn.one_hot(direction, 3) * 0.9 + 0.1 / 3  # mixed-up targets: their argmax is the label
    assert float(direction_confidence_loss(confidence[:, None], price[:, None], soft)) == pytest.approx(expected,
                                                                                                        rel=1e-6)


def test_a_price_transformer_multitask_loss_puts_price_volatility_and_confidence_in_with_seed_weights():
    outputs = {"price": jnp.array([[0.5], [-1.0]]), "volatility": jnp.array([[1.0], [2.0]]),
               "confidence": jnp.array([[0.8], [0.4]])}
    targets = {"price": jnp.array([1.0, -1.0]), "volatility": jnp.array([1.0, 1.0]),
               "direction": jnp.array([2, 2]), "volume": jnp.array([5.0, 5.0])}
    price = 0.25 / 2                                 # (0.5 - 1)^2, 0
    vol = 1.0 / 2                                    # 0, (2 - 1)^2
    conf = -(math.log(0.8) + math.log(1 - 0.4)) / 2  # right (up, UP), wrong (down, UP)
    assert float(multitask_loss(outputs, targets)) == pytest.approx(price + 0.5 * vol + 0.8 * conf, rel=1e-6)


def test_only_a_learned_confidence_head_enters_a_classification_loss():
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = jnp.array([0, 2])
    outputs = {"logits": logits, "confidence": jnp.array([0.9, 0.2])}
    plain = float(cross_entropy(logits, labels))
    direction = TrainConfig(model="direction_transformer", task="classification")
    assert float(task_loss(direction, outputs, labels)) == pytest.approx(plain, rel=1e-6)  # max prob: not a head
    sentiment = TrainConfig(model="sentiment_bert", task="classification")
    assert float(task_loss(sentiment, outputs, labels)) > plain + 0.1
    assert float(task_loss(sentiment.replace(confidence_weight=0.0), outputs, labels)) == pytest.approx(plain)


def test_the_price_transformers_volatility_and_confidence_outputs_get_gradients_under_multitask_only():
    """Under "regression" only the price column of each head's output layer is trained (the old state of
    affairs); under "multitask" the volatility and confidence columns are too."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(16, 8, 3)), jnp.float32)
    r = jnp.asarray(rng.normal(size=16), jnp.float32)
    y = {"price": r, "direction": jnp.where(r > 0, 2, 0), "volatility": jnp.abs(r) + 0.5, "volume": jnp.zeros(16)}
    config = TrainConfig(model="price_transformer", preset="tiny", model_kwargs={"horizons": (5,)}, task="multitask")
    model = config.build_model()
    params = model.init(jax.random.key(0), x[:1], train=False)["params"]

    def column_grads(cfg, targets):
        grads = jax.jit(jax.grad(lambda p: task_loss(cfg, model.apply({"params": p}, x, train=False), targets)))(params)
        return np.abs(np.asarray(grads["head_0_out"]["kernel"])).sum(0)  # [3]: price, volatility, confidence

    multitask = column_grads(config, y)
    regression = column_grads(config.replace(task="regression"), r[:, None])
    assert (multitask > 1e-6).all(), multitask
    assert regression[0] > 1e-6 and (regression[1:] == 0).all(), regression


def test_the_cnn_lstm_indicator_branch_reads_the_decision_bar_columns_not_zeros():
    model = create("cnn_lstm", preset="tiny", n_indicators=2, indicator_columns=(3, 1))
    x = jax.random.normal(jax.random.key(0), (4, 6, 5))
    params = jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(1))["params"]
    given = jax.jit(lambda p, ind: model.apply({"params": p}, x, ind, train=False)["prediction"])
    implicit = jax.jit(lambda p: model.apply({"params": p}, x, train=False)["prediction"])(params)
    explicit, zeros = given(params, x[:, -1, jnp.array([3, 1])]), given(params, jnp.zeros((4, 2)))
    np.testing.assert_allclose(implicit, explicit, rtol=1e-6)
    assert not np.allclose(implicit, zeros)
    with pytest.raises(ValueError, match=r"indicator_columns \[3, 9\] must name n_indicators=2 feature columns"):
        jax.eval_shape(lambda: create("cnn_lstm", preset="tiny", n_indicators=2, indicator_columns=(3, 9)).init(
            jax.random.key(1), x, train=False))


def test_runs_point_the_indicator_branch_at_the_seed_indicators_by_name():
    from trading_jax.training.dataset import SEED_INDICATORS, resolve_indicator_columns

    names = ["log_return_1", *reversed(SEED_INDICATORS), "volatility_20"]
    config = TrainConfig(model="cnn_lstm", preset="tiny")
    resolved = resolve_indicator_columns(config, names).model_config()
    assert resolved["indicator_columns"] == (5, 4, 3, 2, 1) and resolved["n_indicators"] == 5
    three = resolve_indicator_columns(config.replace(model_kwargs={"n_indicators": 3}), names).model_config()
    assert three["indicator_columns"] == (5, 4, 3)
    named = config.replace(model_kwargs={"indicator_columns": ("volatility_20", "log_return_1")})
    assert resolve_indicator_columns(named, names).model_config()["indicator_columns"] == (6, 0)
    with pytest.raises(ValueError, match=r"'rsi_2' is not a feature of this data; features: log_return_1"):
        resolve_indicator_columns(config.replace(model_kwargs={"indicator_columns": ("rsi_2",)}), names)
    off = TrainConfig(model="cnn_lstm", preset="tiny", model_kwargs={"n_indicators": 0})
    assert resolve_indicator_columns(off, names) is off


def test_a_multitask_price_transformer_needs_one_head_at_the_label_horizon(tmp_path):
    from trading_jax.runs import ConfigError, load_experiment

    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[data]\nhorizon = 5\n[train]\nmodel = "price_transformer"\npreset = "tiny"\n'
                    'task = "multitask"\n[train.model_kwargs]\nhorizons = [1, 5]\n')
    with pytest.raises(ConfigError, match=r"horizons = \[1, 5\]: task = \"multitask\" trains one head against the "
                                          r"labels of \[data\] horizon = 5; set horizons = \[5\]"):
        load_experiment(path)
