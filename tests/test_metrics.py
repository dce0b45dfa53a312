"""Evaluation metrics match scipy and hand-worked numbers, mask NaNs out, and log to TensorBoard."""

from __future__ import annotations

import math
import struct

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from trading_jax.evaluation import (
    average_ranks,
    confusion_matrix,
    direction_accuracy,
    information_coefficient,
    mae,
    precision_recall_f1,
    rank_information_coefficient,
    rmse,
)

RTOL = 2e-5  # float32 JAX against float64 scipy


def close(a, b, rtol=RTOL):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), b, rtol=rtol, atol=1e-6)


# ------------------------------------------------------------------------ errors and direction


def test_mae_and_rmse_match_hand_worked_numbers():
    pred = jnp.array([1.0, 2.0, 3.0, 4.0])
    target = jnp.array([1.5, 2.0, 1.0, 5.0])  # errors 0.5, 0, 2, 1
    close(mae(pred, target), 3.5 / 4)
    close(rmse(pred, target), np.sqrt((0.25 + 0 + 4 + 1) / 4))


def test_nan_entries_are_masked_out_exactly_like_a_false_mask_never_averaged_in():
    pred = jnp.array([1.0, jnp.nan, 3.0, 4.0, 0.0])
    target = jnp.array([1.5, 2.0, 1.0, jnp.nan, -1.0])
    mask = jnp.array([True, True, True, True, False])
    # Only entries 0 and 2 remain: errors 0.5 and 2.
    close(mae(pred, target, mask), 1.25)
    close(rmse(pred, target, mask), np.sqrt((0.25 + 4) / 2))
    close(direction_accuracy(pred, target, mask), 1.0)
    assert np.isnan(mae(pred, target, jnp.zeros(5, bool)))  # nothing valid -> NaN, not 0


def test_direction_accuracy_treats_zero_as_its_own_direction_or_ignores_zero_targets():
    pred = jnp.array([0.5, -0.2, 0.0, 0.3, 0.0, -1.0])
    target = jnp.array([0.1, 0.4, 0.0, 0.0, 0.2, -0.3])
    # sign agreement: yes, no, yes (0 == 0), no (+ vs 0), no (0 vs +), yes
    close(direction_accuracy(pred, target), 3 / 6)
    # Zero targets (entries 2 and 3) dropped: yes, no, no, yes
    close(direction_accuracy(pred, target, ignore_zero_target=True), 2 / 4)


def test_reducing_along_an_axis_equals_vmapping_the_pooled_metric_over_rows():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(5, 30)), rng.normal(size=(5, 30))
    mask = rng.random((5, 30)) > 0.3
    close(mae(pred, target, axis=-1), np.abs(pred - target).mean(axis=1))
    for fn in (mae, rmse, direction_accuracy, information_coefficient, rank_information_coefficient):
        per_row = fn(pred, target, mask, axis=-1)
        assert per_row.shape == (5,)
        close(per_row, jax.vmap(fn)(pred, target, mask))


# ------------------------------------------------------------------------------ classification

TRUE = jnp.array([0, 0, 1, 1, 2, 2, 2, 0])
PRED = jnp.array([0, 1, 1, 1, 2, 0, 2, 2])
# Hand-worked: rows true, columns predicted.
CM = np.array([[1, 1, 1], [0, 2, 0], [1, 0, 2]])
P_C = np.array([1 / 2, 2 / 3, 2 / 3])  # TP / column sum (2, 3, 3)
R_C = np.array([1 / 3, 1.0, 2 / 3])  # TP / row sum (3, 2, 3)
F1_C = np.array([0.4, 0.8, 2 / 3])  # 2PR / (P + R)


def test_confusion_matrix_matches_the_hand_worked_counts():
    np.testing.assert_array_equal(confusion_matrix(PRED, TRUE, 3), CM)


def test_per_class_precision_recall_f1_match_the_hand_worked_confusion_matrix():
    p, r, f = precision_recall_f1(PRED, TRUE, 3, average=None)
    close(p, P_C)
    close(r, R_C)
    close(f, F1_C)


@pytest.mark.parametrize(
    "average, expected",
    [
        ("macro", (P_C.mean(), R_C.mean(), F1_C.mean())),  # 0.6111, 0.6667, 0.6222
        ("weighted", tuple(float(v @ np.array([3, 2, 3]) / 8) for v in (P_C, R_C, F1_C))),  # 0.6042, 0.625, 0.6
        ("micro", (5 / 8, 5 / 8, 5 / 8)),  # = accuracy for single-label data
    ],
)
def test_averaged_scores_match_the_hand_worked_values(average, expected):
    for got, want in zip(precision_recall_f1(PRED, TRUE, 3, average=average), expected):
        close(got, want)


def test_a_class_that_never_occurs_scores_zero_and_still_counts_in_the_macro_average():
    p, r, f = precision_recall_f1(PRED, TRUE, 4, average=None)
    close(p, np.append(P_C, 0.0))
    close(r, np.append(R_C, 0.0))
    p, r, f = precision_recall_f1(PRED, TRUE, 4)
    close(p, P_C.sum() / 4)
    close(f, F1_C.sum() / 4)


def test_masked_entries_do_not_enter_the_confusion_matrix():
    mask = jnp.array([True] * 7 + [False])  # drop the last (true 0, predicted 2)
    cm = confusion_matrix(PRED, TRUE, 3, mask)
    np.testing.assert_array_equal(cm, CM - np.array([[0, 0, 1], [0, 0, 0], [0, 0, 0]]))
    p, _, _ = precision_recall_f1(PRED, TRUE, 3, average=None, mask=mask)
    close(p, [1 / 2, 2 / 3, 1.0])


def test_an_unknown_average_is_rejected():
    with pytest.raises(ValueError, match="average"):
        precision_recall_f1(PRED, TRUE, 3, average="binary")


# ----------------------------------------------------------------------- information coefficients


def test_information_coefficient_matches_scipy_pearsonr():
    rng = np.random.default_rng(1)
    pred = rng.normal(size=200)
    realised = 0.3 * pred + rng.normal(size=200)
    close(information_coefficient(pred, realised), stats.pearsonr(pred, realised).statistic)


def test_rank_ic_matches_scipy_spearmanr_with_ties():
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 6, size=150).astype(float)  # heavy ties on both sides
    realised = np.round(0.5 * pred + rng.normal(size=150))
    close(rank_information_coefficient(pred, realised), stats.spearmanr(pred, realised).statistic)
    np.testing.assert_allclose(average_ranks(jnp.asarray(pred)), stats.rankdata(pred, method="average"))


def test_correlations_ignore_nan_and_masked_entries_as_if_they_were_dropped():
    rng = np.random.default_rng(3)
    pred = rng.normal(size=100)
    realised = np.round(pred + rng.normal(size=100), 1)
    pred[[3, 17]] = np.nan
    realised[[40]] = np.nan
    mask = np.ones(100, bool)
    mask[60:70] = False
    keep = mask & ~np.isnan(pred) & ~np.isnan(realised)
    close(information_coefficient(pred, realised, mask), stats.pearsonr(pred[keep], realised[keep]).statistic)
    close(rank_information_coefficient(pred, realised, mask), stats.spearmanr(pred[keep], realised[keep]).statistic)
    ranks = average_ranks(jnp.asarray(pred), jnp.asarray(keep))
    np.testing.assert_allclose(ranks[keep], stats.rankdata(pred[keep]))
    assert np.isnan(ranks[~keep]).all()


def test_cross_sectional_ics_along_an_axis_match_scipy_row_by_row():
    rng = np.random.default_rng(4)
    pred = rng.normal(size=(6, 40))
    realised = np.round(pred + rng.normal(size=(6, 40)))
    mask = rng.random((6, 40)) > 0.2
    ic = information_coefficient(pred, realised, mask, axis=-1)
    ric = rank_information_coefficient(pred, realised, mask, axis=1)
    assert ic.shape == ric.shape == (6,)
    for t in range(6):
        m = mask[t]
        close(ic[t], stats.pearsonr(pred[t, m], realised[t, m]).statistic)
        close(ric[t], stats.spearmanr(pred[t, m], realised[t, m]).statistic)
    # The transposed layout with axis=0 gives the same numbers.
    close(information_coefficient(pred.T, realised.T, mask.T, axis=0), ic)


def test_correlations_are_nan_when_undefined():
    assert np.isnan(information_coefficient(jnp.ones(10), jnp.arange(10.0)))  # constant prediction
    assert np.isnan(rank_information_coefficient(jnp.arange(3.0), jnp.array([1.0, jnp.nan, jnp.nan])))  # n < 2


# ------------------------------------------------------------------------------ TensorBoard logging


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_tfrecords(path):
    """TFRecord framing: u64 length, u32 masked CRC32C(length), payload, u32 masked CRC32C(payload)."""
    raw = path.read_bytes()
    records, pos = [], 0
    while pos < len(raw):
        header = raw[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", raw[pos + 8 : pos + 12])[0] == _masked_crc(header)
        payload = raw[pos + 12 : pos + 12 + length]
        assert struct.unpack("<I", raw[pos + 12 + length : pos + 16 + length])[0] == _masked_crc(payload)
        records.append(payload)
        pos += 16 + length
    return records


def test_tensorboard_writer_writes_scalars_and_histograms_that_read_back(tmp_path):
    from tensorboardX.proto.event_pb2 import Event

    from trading_jax.logging import TensorBoardWriter

    tb = TensorBoardWriter(tmp_path)
    for step in range(3):
        tb.scalars(step, {"train/loss": jnp.float32(1.0 / (step + 1)), "val/ic": 0.1 * step})
    tb.histogram(2, "params/w", jnp.arange(12.0).reshape(3, 4))
    tb.flush()
    tb.close()

    files = list(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 1
    scalars, histos = {}, {}
    for payload in _read_tfrecords(files[0]):
        event = Event.FromString(payload)
        for value in event.summary.value:
            if value.HasField("histo"):
                histos[(value.tag, event.step)] = value.histo
            else:
                scalars[(value.tag, event.step)] = value.simple_value
    assert scalars[("train/loss", 0)] == 1.0
    assert scalars[("train/loss", 2)] == pytest.approx(1 / 3)
    assert scalars[("val/ic", 1)] == pytest.approx(0.1)
    assert len(scalars) == 6
    histo = histos[("params/w", 2)]
    assert (histo.num, histo.min, histo.max, histo.sum) == (12, 0.0, 11.0, 66.0)


# ---------------------------------------------------------------- traced and eager; shape checks


class MetricsWithAndWithoutJit(chex.TestCase):
    """The pure metric functions (under their `jax.jit` wrappers) give the same numbers traced and eager."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_errors_and_direction_accuracy_match_hand_worked_numbers(self):
        pred = jnp.array([1.0, 2.0, 3.0, 4.0])
        target = jnp.array([1.5, 2.0, 1.0, -5.0])  # errors 0.5, 0, 2, 9; signs agree on the first three
        self.assertAlmostEqual(float(self.variant(mae.__wrapped__)(pred, target)), 11.5 / 4, places=5)
        self.assertAlmostEqual(float(self.variant(rmse.__wrapped__)(pred, target)),
                               math.sqrt((0.25 + 4 + 81) / 4), places=5)
        self.assertAlmostEqual(float(self.variant(direction_accuracy.__wrapped__)(pred, target)), 0.75, places=6)
        per_row = self.variant(lambda p, t: mae.__wrapped__(p, t, axis=-1))(pred.reshape(2, 2), target.reshape(2, 2))
        np.testing.assert_allclose(per_row, [0.25, 5.5], rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_classification_scores_match_the_hand_worked_confusion_matrix(self):
        np.testing.assert_array_equal(self.variant(confusion_matrix.__wrapped__, static_argnums=2)(PRED, TRUE, 3), CM)
        p, r, f = self.variant(precision_recall_f1.__wrapped__, static_argnums=(2, 3))(PRED, TRUE, 3, None)
        close(p, P_C)
        close(r, R_C)
        close(f, F1_C)

    @chex.variants(with_jit=True, without_jit=True)
    def test_ics_match_scipy(self):
        rng = np.random.default_rng(5)
        pred = rng.integers(0, 6, size=80).astype(np.float32)
        realised = (0.5 * pred + rng.normal(size=80)).astype(np.float32)
        close(self.variant(information_coefficient.__wrapped__)(pred, realised), stats.pearsonr(pred, realised).statistic)
        close(self.variant(rank_information_coefficient.__wrapped__)(pred, realised),
              stats.spearmanr(pred, realised).statistic)
        np.testing.assert_allclose(self.variant(average_ranks.__wrapped__)(jnp.asarray(pred)), stats.rankdata(pred))

    @chex.variants(with_jit=True, without_jit=True)
    def test_mismatched_shapes_are_a_value_error_inside_a_user_jit_too(self):
        # the check runs in front of the metric, so it also fires when the caller traces the metric
        # (JAX then appends a note about its filtered traceback after the message's first line)
        with self.assertRaisesRegex(ValueError, r"^mae: pred and target must have the same shape; "
                                                r"got pred \(4, 1\), target \(4,\)"):
            self.variant(mae)(jnp.ones((4, 1)), jnp.ones(4))


SHAPE_CASES = [
    (mae, (np.ones((4, 1)), np.ones(4)), r"^mae: pred and target must have the same shape; got pred \(4, 1\), target \(4,\)$"),
    (rmse, (np.ones(3), np.ones(4)), r"^rmse: pred and target .* got pred \(3,\), target \(4,\)$"),
    (direction_accuracy, (np.ones(4), np.ones(4), np.ones(3, bool)),
     r"^direction_accuracy: pred, target and mask must have the same shape"),
    (information_coefficient, (np.ones((5, 2)), np.ones((2, 5))), r"^information_coefficient: pred and realised"),
    (rank_information_coefficient, (np.ones(5), np.ones((5, 1))), r"^rank_information_coefficient: pred and realised"),
    (confusion_matrix, (np.zeros(4, int), np.zeros(5, int), 3), r"^confusion_matrix: pred_labels and true_labels"),
    (precision_recall_f1, (np.zeros((4, 3)), np.zeros(4, int), 3), r"^precision_recall_f1: pred_labels and true_labels"),
    (precision_recall_f1, (np.zeros(4), np.zeros(4, int), 3), r"^precision_recall_f1: pred_labels must be integer class ids"),
    (average_ranks, (np.ones((3, 2)),), r"^average_ranks: x must be 1-D"),
]


@pytest.mark.parametrize("fn, args, message", SHAPE_CASES, ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(SHAPE_CASES)])
def test_a_shape_mistake_is_a_one_line_value_error_naming_the_function_and_shapes_not_a_broadcast(fn, args, message):
    with pytest.raises(ValueError, match=message) as info:
        fn(*args)
    assert "\n" not in str(info.value)
