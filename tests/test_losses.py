"""Training losses: hand-worked values traced and eager alike (chex variants), and a one-line ValueError
for mismatched shapes instead of a silent broadcast."""

from __future__ import annotations

import math

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.training.losses import accuracy, cross_entropy, direction_accuracy, huber, mae, mse, multitask_loss


class LossesWithAndWithoutJit(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_regression_losses_match_hand_worked_values(self):
        pred, target = jnp.array([[1.0], [3.0], [-1.0]]), jnp.array([0.0, 3.0, 1.0])  # residuals 1, 0, -2
        self.assertAlmostEqual(float(self.variant(mse)(pred, target)), 5.0 / 3, places=6)
        self.assertAlmostEqual(float(self.variant(mae)(pred, target)), 1.0, places=6)
        # Huber, delta 1: 0.5 (quadratic), 0, 1 * (2 - 0.5) = 1.5 (linear)
        self.assertAlmostEqual(float(self.variant(huber)(pred, target)), 2.0 / 3, places=6)
        self.assertAlmostEqual(float(self.variant(direction_accuracy)(pred, target)), 1.0 / 3, places=6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_cross_entropy_and_accuracy_match_hand_worked_values(self):
        # softmax([0, 0, ln 2]) = [1/4, 1/4, 1/2]; eps = 0.3, K = 3: targets [0.1, 0.1, 0.8]: CE = 1.2 ln 2
        logits = jnp.array([[0.0, 0.0, math.log(2.0)], [5.0, 0.0, 0.0]])
        ce = self.variant(lambda z, y: cross_entropy(z, y, 0.3))(logits[:1], jnp.array([2]))
        self.assertAlmostEqual(float(ce), 1.2 * math.log(2.0), places=5)
        self.assertAlmostEqual(float(self.variant(accuracy)(logits, jnp.array([2, 1]))), 0.5, places=6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_multitask_loss_is_the_seed_weighted_sum(self):
        outputs = {"price": jnp.array([[1.0], [3.0]]), "volatility": jnp.array([[2.0], [2.0]]),
                   "volume": jnp.array([[9.0], [9.0]]), "direction_logits": jnp.zeros((2, 3))}
        targets = {"price": jnp.array([0.0, 3.0]), "volatility": jnp.array([1.0, 2.0]),
                   "volume": jnp.array([0.0, 0.0]), "direction": jnp.array([0, 1])}
        # 1.0 * 0.5 + 0.8 * ln 3 + 0.5 * 0.5 (volume weighs 0)
        got = self.variant(multitask_loss)(outputs, targets)
        self.assertAlmostEqual(float(got), 0.75 + 0.8 * math.log(3.0), places=5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_mismatched_shapes_raise_a_one_line_value_error(self):
        with self.assertRaisesRegex(ValueError, r"^mse: prediction \(4, 1\) and target \(4, 2\) must have the same shape"):
            self.variant(mse)(jnp.ones((4, 1)), jnp.ones((4, 2)))
        with self.assertRaisesRegex(ValueError, r"^cross_entropy: targets \(4, 1\) must be integer labels \(4,\)"):
            self.variant(cross_entropy)(jnp.zeros((4, 3)), jnp.zeros((4, 1), jnp.int32))


@pytest.mark.parametrize("loss", [mse, huber, mae, direction_accuracy])
def test_a_batch_against_a_batch_by_one_column_is_accepted_but_a_transposed_target_is_not(loss):
    pred = jnp.array([[1.0], [2.0], [3.0]])
    assert np.isfinite(float(loss(pred, jnp.array([1.0, 2.0, 4.0]))))  # [3, 1] against [3]
    with pytest.raises(ValueError, match=r"must have the same shape") as info:
        loss(pred, jnp.ones((3, 3)))  # would broadcast to a [3, 3] matrix of wrong pairs
    assert "\n" not in str(info.value)


def test_label_targets_of_shape_batch_by_one_are_rejected_instead_of_broadcasting_over_the_batch():
    logits = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match=r"^cross_entropy: targets \(4, 1\)"):
        cross_entropy(logits, jnp.zeros((4, 1), jnp.int32))
    with pytest.raises(ValueError, match=r"^accuracy: labels must be integer labels \(4,\)"):
        accuracy(logits, jnp.zeros((5,), jnp.int32))
    assert float(cross_entropy(logits, jnp.zeros((4,), jnp.int32))) == pytest.approx(math.log(3.0))


def test_confidence_loss_is_the_bce_of_whether_the_call_is_right_and_leaves_the_logits_alone():
    import jax

    from trading_jax.training.losses import confidence_loss

    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])  # calls: class 0, class 1
    labels = jnp.array([0, 2])                                # right, wrong
    confidence = jnp.array([0.8, 0.3])
    expected = -(math.log(0.8) + math.log(1 - 0.3)) / 2
    assert float(confidence_loss(confidence, logits, labels)) == pytest.approx(expected, rel=1e-6)
    soft = jnp.array([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8]])   # probability targets: their argmax is the label
    assert float(confidence_loss(confidence[:, None], logits, soft)) == pytest.approx(expected, rel=1e-6)
    assert not np.asarray(jax.grad(lambda z: confidence_loss(confidence, z, labels))(logits)).any()
