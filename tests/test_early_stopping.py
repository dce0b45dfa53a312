"""Early stopping by hand: the bad-epoch count, its reset on improvement, the best epoch and the stop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.training import EarlyStopping, early_stopping_update


def run(losses, patience):
    """`(improved, bad_epochs, best_epoch, stopped)` after each epoch, and the final state."""
    state, trace = EarlyStopping.init(), []
    for epoch, loss in enumerate(losses):
        state, improved = early_stopping_update(state, epoch, jnp.float32(loss), patience)
        trace.append((bool(improved), int(state.bad_epochs), int(state.best_epoch), bool(state.stopped)))
    return trace, state


def test_an_improvement_after_a_bad_epoch_resets_the_count_and_two_bad_epochs_in_a_row_stop_at_patience_2():
    trace, state = run([1.0, 1.2, 0.9, 1.0, 1.1, 0.5], patience=2)
    assert trace == [
        (True, 0, 0, False),  # 1.0: the first finite loss improves on +inf
        (False, 1, 0, False),  # 1.2 > 1.0: one bad epoch
        (True, 0, 2, False),  # 0.9 < 1.0: an improvement resets the count to 0
        (False, 1, 2, False),  # 1.0 > 0.9
        (False, 2, 2, True),  # 1.1 > 0.9: two bad epochs in a row reach patience 2: stop after epoch 4
        (False, 2, 2, True),  # 0.5 comes after the stop: ignored, nothing changes
    ]
    assert float(state.best_loss) == pytest.approx(0.9) and int(state.best_epoch) == 2


def test_equal_and_non_finite_losses_are_bad_epochs_and_patience_none_never_stops():
    trace, state = run([2.0, 2.0, float("nan"), 3.0, 1.5, float("inf")], patience=None)
    assert [t[1] for t in trace] == [0, 1, 2, 3, 0, 1]  # only a strictly lower finite loss improves
    assert not any(t[3] for t in trace)
    assert int(state.best_epoch) == 4 and float(state.best_loss) == 1.5


def test_jitted_update_gives_the_same_sequence():
    update = jax.jit(early_stopping_update, static_argnames="patience")
    state = EarlyStopping.init()
    bad = []
    for epoch, loss in enumerate([1.0, 1.2, 0.9, 1.0, 1.1, 0.5]):
        state, _ = update(state, epoch, jnp.float32(loss), patience=2)
        bad.append(int(state.bad_epochs))
    np.testing.assert_array_equal(bad, [0, 1, 0, 1, 2, 2])
    assert bool(state.stopped) and int(state.best_epoch) == 2
