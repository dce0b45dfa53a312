"""Chronological splits, walk-forward folds, sliding windows, future labels, and their causality."""

from __future__ import annotations

import datetime

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.data.labels import (
    DOWN,
    FLAT,
    UP,
    direction_label,
    future_return,
    future_volatility,
    future_volume,
)
from trading_jax.data.splits import (
    Fold,
    IndexRange,
    Split,
    chronological_split,
    split_by_dates,
    walk_forward_folds,
)
from trading_jax.data.windows import (
    make_supervised_dataset,
    sliding_windows,
    supervised_end_times,
    window_end_times,
    window_indices,
)

R = IndexRange

# A 6-bar series whose returns are exact in binary floating point: 5/4, 4/5, 3/4, 3/3, 6/3.
CLOSE6 = np.array([4.0, 5.0, 4.0, 3.0, 3.0, 6.0], np.float32)


# --------------------------------------------------------------------------------------- splits


def test_index_range_is_half_open_with_a_slice_and_a_length():
    r = R(2, 5)
    assert len(r) == 3
    assert np.arange(10)[r.slice].tolist() == [2, 3, 4]
    assert r.indices().tolist() == [2, 3, 4]
    with pytest.raises(ValueError, match="start <= stop"):
        R(5, 2)


def test_default_fractions_split_100_bars_70_15_15_in_time_order():
    assert chronological_split(100) == Split(R(0, 70), R(70, 85), R(85, 100))


def test_fractions_are_of_the_bars_left_after_the_embargo_gaps():
    # 100 - 2 gaps * 2 = 96 usable; boundaries round(0.7*96)=67, round(0.85*96)=82, 96.
    split = chronological_split(100, embargo=2)
    assert split == Split(R(0, 67), R(69, 84), R(86, 100))
    assert split.val.start - split.train.stop == 2
    assert split.test.start - split.val.stop == 2


def test_integer_counts_are_laid_out_from_bar_0_with_embargo_gaps_and_the_tail_unused():
    assert chronological_split(20, 10, 3, 4, embargo=1) == Split(R(0, 10), R(11, 14), R(15, 19))


def test_a_part_asked_for_as_zero_is_empty_and_gets_no_embargo_gap():
    # One gap only: 10 - 2 = 8 usable bars, 4 train, 4 test.
    assert chronological_split(10, 0.5, 0, 0.5, embargo=2) == Split(R(0, 4), R(4, 4), R(6, 10))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_time=100, train=0.7, val=0.3, test=0.1), "sum to 1.1; they must sum to at most 1"),
        (
            dict(n_time=1000, train=700, val=0.15, test=0.15),
            "all as fractions .* or all as integer bar counts",
        ),
        (
            dict(n_time=20, train=10, val=5, test=5, embargo=1),
            "need 22 bars, but n_time is 20; make the parts or the embargo smaller",
        ),
        (dict(n_time=10, embargo=5), "leave no bars of the 10 to split; reduce the embargo"),
        (
            dict(n_time=10, train=0.9, val=0.04, test=0.06),
            "val=0.04 of the 10 bars .* rounds to 0 bars; make val larger",
        ),
        (dict(n_time=10, train=0, val=5, test=5), "train must be > 0"),
        (dict(n_time=10, embargo=-1), "embargo must be a non-negative integer"),
    ],
)
def test_a_bad_chronological_split_says_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        chronological_split(**kwargs)


DAYS = np.arange("2024-01-01", "2024-01-11", dtype="datetime64[D]").astype("datetime64[ns]")


def test_split_by_dates_starts_parts_at_their_dates_and_takes_the_embargo_from_the_part_before():
    split = split_by_dates(DAYS, "2024-01-06", "2024-01-08", embargo=1)
    assert split == Split(R(0, 4), R(5, 6), R(7, 10))
    assert DAYS[split.val.start] == np.datetime64("2024-01-06")
    assert DAYS[split.test.start] == np.datetime64("2024-01-08")


def test_split_by_dates_starts_at_the_first_bar_on_or_after_a_cut_point_given_in_any_timezone():
    # Noon on the 5th at UTC-12 is midnight of the 6th in UTC: bar 5.
    utc_minus_12 = datetime.timezone(datetime.timedelta(hours=-12))
    noon_minus_12 = datetime.datetime(2024, 1, 5, 12, tzinfo=utc_minus_12)
    assert split_by_dates(DAYS, noon_minus_12, "2024-01-07T06").val == R(5, 7)
    assert split_by_dates(DAYS, None, "2024-01-08", embargo=2) == Split(R(0, 5), R(7, 7), R(7, 10))


@pytest.mark.parametrize(
    "val_start, test_start, embargo, message",
    [
        ("2024-01-06", "2024-02-01", 0, "test part would be empty; choose an earlier test_start"),
        ("2024-01-08", "2024-01-06", 0, "val_start .* must not be after test_start"),
        ("2024-01-01", "2024-01-08", 0, "train part would be empty.*choose a later val_start"),
        ("2024-01-06", "2024-01-08", 2, "val part would be empty: it has 2 bar.* move val_start earlier"),
        ("2024-01-07T12", "2024-01-08", 0, "val part would be empty: no bar lies in"),
    ],
)
def test_a_bad_date_split_says_what_to_change(val_start, test_start, embargo, message):
    with pytest.raises(ValueError, match=message):
        split_by_dates(DAYS, val_start, test_start, embargo=embargo)


def test_walk_forward_expanding_trains_from_bar_0_and_stops_embargo_bars_before_each_test():
    folds = walk_forward_folds(20, n_folds=3, test_size=4, embargo=2)
    assert folds == (
        Fold(R(0, 6), R(8, 12)),
        Fold(R(0, 10), R(12, 16)),
        Fold(R(0, 14), R(16, 20)),
    )


def test_walk_forward_rolling_keeps_the_train_window_size_and_step_spaces_the_tests():
    assert walk_forward_folds(20, n_folds=3, test_size=4, train_size=5, embargo=2) == (
        Fold(R(1, 6), R(8, 12)),
        Fold(R(5, 10), R(12, 16)),
        Fold(R(9, 14), R(16, 20)),
    )
    spaced = walk_forward_folds(20, 3, 4, step=5)
    assert [f.test for f in spaced] == [R(6, 10), R(11, 15), R(16, 20)]


@pytest.mark.parametrize("train_size", [None, 3])
@pytest.mark.parametrize("embargo", [0, 1, 3])
@pytest.mark.parametrize("step", [None, 3])
def test_walk_forward_tests_never_overlap_and_trains_precede_tests_by_the_embargo(
    train_size, embargo, step
):
    folds = walk_forward_folds(
        30, n_folds=4, test_size=2, train_size=train_size, embargo=embargo, step=step
    )
    assert len(folds) == 4 and folds[-1].test.stop == 30
    for fold in folds:
        assert len(fold.test) == 2 and len(fold.train) >= 1
        assert fold.train.stop + embargo == fold.test.start
        if train_size is not None:
            assert len(fold.train) == train_size
    for before, after in zip(folds, folds[1:]):
        assert before.test.stop <= after.test.start


def test_walk_forward_that_does_not_fit_says_how_many_bars_it_needs():
    # 3 tests of 3 + embargo 1 + at least 1 train bar = 11 bars > 10.
    with pytest.raises(ValueError, match="need 11 bars, but n_time is 10; reduce n_folds"):
        walk_forward_folds(10, n_folds=3, test_size=3, embargo=1)
    with pytest.raises(ValueError, match="step must be an integer >= test_size"):
        walk_forward_folds(100, n_folds=3, test_size=3, step=2)


# -------------------------------------------------------------------------------------- windows


def _loop_windows(n_time, window, stride, start, stop):
    stop = n_time if stop is None else stop
    out, s = [], start
    while s + window <= stop:
        out.append(list(range(s, s + window)))
        s += stride
    return out


@pytest.mark.parametrize(
    "n_time, window, stride, start, stop",
    [
        (10, 3, 1, 0, None),
        (10, 3, 2, 1, 9),
        (10, 4, 3, 0, None),
        (7, 7, 1, 0, None),
        (5, 6, 1, 0, None),
        (10, 1, 4, 2, 8),
    ],
)
def test_window_indices_and_end_times_equal_a_plain_python_loop(
    n_time, window, stride, start, stop
):
    reference = _loop_windows(n_time, window, stride, start, stop)
    idx = window_indices(n_time, window, stride, start, stop)
    assert idx.shape == (len(reference), window)
    assert idx.tolist() == reference
    ends = window_end_times(n_time, window, stride, start, stop)
    assert ends.tolist() == [w[-1] for w in reference]


def test_sliding_windows_gather_equals_slicing_and_jits_once_with_static_window_and_stride():
    x = np.random.default_rng(0).normal(size=(11, 2)).astype(np.float32)
    expected = np.stack([x[s : s + 4] for s in range(0, 11 - 4 + 1, 2)])
    np.testing.assert_array_equal(sliding_windows(x, 4, 2), expected)
    jitted = jax.jit(sliding_windows, static_argnames=("window", "stride"))
    np.testing.assert_array_equal(jitted(x, window=4, stride=2), expected)
    jitted(x + 1, window=4, stride=2)
    assert jitted._cache_size() == 1


@pytest.mark.parametrize("window, stride", [(4, 1), (3, 2)])
def test_changing_any_bar_after_t_leaves_every_window_ending_at_or_before_t_unchanged(
    window, stride
):
    rng = np.random.default_rng(1)
    n = 12
    x = rng.normal(size=(n, 2)).astype(np.float32)
    # Variant k (last axis) replaces every bar after k with new numbers.
    variants = np.repeat(x[..., None], n, axis=-1)
    for k in range(n):
        variants[k + 1 :, :, k] = rng.normal(size=(n - k - 1, 2))
    base = np.asarray(sliding_windows(x, window, stride))
    moved = np.asarray(sliding_windows(variants, window, stride))
    ends = window_end_times(n, window, stride)
    for k in range(n):
        past = ends <= k
        np.testing.assert_array_equal(moved[past, ..., k], base[past])
        # ... and the perturbation is real: every window reaching past k sees it.
        assert np.all(np.any(moved[~past, ..., k] != base[~past], axis=(1, 2)))


# --------------------------------------------------------------------------------------- labels


def test_future_return_on_six_bars_by_hand():
    r, valid = future_return(CLOSE6, horizon=1)
    np.testing.assert_allclose(r, [0.25, -0.2, -0.25, 0.0, 1.0, 0.0], rtol=1e-6)
    assert valid.tolist() == [True] * 5 + [False]
    r2, valid2 = future_return(CLOSE6, horizon=2)
    np.testing.assert_allclose(r2, [0.0, -0.4, -0.25, 1.0, 0.0, 0.0], rtol=1e-6)
    assert valid2.tolist() == [True] * 4 + [False] * 2
    rl, _ = future_return(CLOSE6, horizon=1, log=True)
    np.testing.assert_allclose(rl[:5], np.log([5 / 4, 4 / 5, 3 / 4, 1.0, 2.0]), rtol=1e-6)


@pytest.mark.parametrize(
    "dead_band, expected",
    [
        (0.0, [UP, DOWN, DOWN, FLAT, UP]),  # an unchanged price is flat
        (0.25, [FLAT, FLAT, FLAT, FLAT, UP]),  # +0.25 and -0.25 sit on the band: flat
        (0.24, [UP, FLAT, DOWN, FLAT, UP]),
    ],
)
def test_direction_label_on_six_bars_with_the_dead_band_boundaries_flat(dead_band, expected):
    label, valid = direction_label(CLOSE6, horizon=1, dead_band=dead_band)
    assert (DOWN, FLAT, UP) == (0, 1, 2)
    assert label.dtype == jnp.int32
    assert label.tolist() == expected + [FLAT]
    assert valid.tolist() == [True] * 5 + [False]


def test_future_volatility_on_six_bars_by_hand():
    # Log returns r_1..r_5 = log 5/4, log 4/5, log 3/4, log 1, log 2; two values a, b have
    # population std |a - b| / 2 and sample std |a - b| / sqrt(2).
    r = np.log([5 / 4, 4 / 5, 3 / 4, 1.0, 2.0])
    pairs = np.abs(r[:-1] - r[1:])  # windows (r_{t+1}, r_{t+2}) for t = 0..3
    vol, valid = future_volatility(CLOSE6, horizon=2)
    np.testing.assert_allclose(vol, list(pairs / 2) + [0.0, 0.0], rtol=1e-5)
    assert valid.tolist() == [True] * 4 + [False] * 2
    vol1, _ = future_volatility(CLOSE6, horizon=2, ddof=1)
    np.testing.assert_allclose(vol1[:4], pairs / np.sqrt(2), rtol=1e-5)
    with pytest.raises(ValueError, match="horizon must be an integer >= 2"):
        future_volatility(CLOSE6, horizon=1)


def test_future_volume_is_the_log_of_mean_coming_volume_over_volume_now_and_zero_volume_is_masked():
    volume = np.array([1.0, 2.0, 0.0, 4.0, 4.0, 8.0], np.float32)
    v, valid = future_volume(volume, horizon=2)
    # t=0: mean(2, 0)/1; t=1: mean(0, 4)/2; t=2: volume 0 at t; t=3: mean(4, 8)/4.
    np.testing.assert_allclose(v, [0.0, 0.0, 0.0, np.log(1.5), 0.0, 0.0], atol=1e-6)
    assert valid.tolist() == [True, True, False, True, False, False]
    v_off, valid_off = future_volume(volume, horizon=2, offset=1.0)
    # With one lot added to both sides, t=2 is (mean(4, 4) + 1) / (0 + 1) and t=0 (1 + 1) / (1 + 1).
    assert valid_off[2] and np.isclose(v_off[2], np.log(5.0))
    assert np.isclose(v_off[0], 0.0)


def test_non_finite_inputs_invalidate_exactly_the_labels_that_read_them_and_no_nan_leaks():
    close = CLOSE6.copy()
    close[2] = np.nan
    cases = [
        (future_return, {}),
        (direction_label, {}),
        (future_volatility, {"horizon": 2}),
        (future_volume, {}),
    ]
    for fn, kwargs in cases:
        values, valid = fn(close, **kwargs)
        assert np.all(np.isfinite(np.asarray(values, dtype=float))), fn.__name__
        assert not valid[2] and not valid[1], fn.__name__
        assert valid[3], fn.__name__


def _labels(close_or_volume, horizon):
    """All four labels at one horizon, for the causality checks ([time, variants] in, out)."""
    return {
        "future_return": future_return(close_or_volume, horizon),
        "direction_label": direction_label(close_or_volume, horizon, dead_band=0.01),
        "future_volatility": future_volatility(close_or_volume, horizon),
        "future_volume": future_volume(close_or_volume, horizon),
    }


def _reads(name, n, horizon):
    """reads[t, s]: the label of t is documented to read bar s."""
    t, s = np.arange(n)[:, None], np.arange(n)[None, :]
    if name in ("future_return", "direction_label"):
        return (s == t) | (s == t + horizon)
    return (s >= t) & (s <= t + horizon)


def test_label_at_t_changes_exactly_when_a_bar_it_reads_in_t_to_t_plus_h_changes():
    n, h = 12, 3
    series = np.exp(np.random.default_rng(2).normal(0, 0.1, n)).astype(np.float32) * 100
    # Column s of `bumped` is the series with bar s scaled by 1.5 (everything else untouched).
    bumped = np.repeat(series[:, None], n, axis=1)
    bumped[np.arange(n), np.arange(n)] *= 1.5
    base, moved = _labels(series, h), _labels(bumped, h)
    checked = np.arange(n) + h < n  # labels that exist
    for name in ("future_return", "future_volatility", "future_volume"):
        changed = np.abs(np.asarray(moved[name][0]) - np.asarray(base[name][0])[:, None]) > 1e-4
        np.testing.assert_array_equal(changed[checked], _reads(name, n, h)[checked], err_msg=name)
    # A direction can keep its class when the price moves, but never changes from an unread bar.
    moved_dir, base_dir = np.asarray(moved["direction_label"][0]), np.asarray(base["direction_label"][0])
    changed = moved_dir != base_dir[:, None]
    assert not np.any(changed[checked] & ~_reads("direction_label", n, h)[checked])


def test_a_missing_bar_invalidates_exactly_the_labels_that_read_it():
    n, h = 12, 3
    series = np.exp(np.random.default_rng(3).normal(0, 0.1, n)).astype(np.float32) * 100
    holed = np.repeat(series[:, None], n, axis=1)
    holed[np.arange(n), np.arange(n)] = np.nan  # column s misses bar s
    base, moved = _labels(series, h), _labels(holed, h)
    checked = np.arange(n) + h < n
    for name, (values, valid) in moved.items():
        assert np.all(base[name][1][checked]), name
        lost = ~np.asarray(valid)
        np.testing.assert_array_equal(lost[checked], _reads(name, n, h)[checked], err_msg=name)
        assert np.all(np.isfinite(np.asarray(values, dtype=float))), name


def test_labels_jit_with_a_static_horizon_and_match_eager_on_a_panel():
    close = np.exp(np.random.default_rng(4).normal(0, 0.1, (9, 3))).astype(np.float32) * 50
    eager = _labels(close, 2)
    jitted = jax.jit(_labels, static_argnums=1)(close, 2)
    for name in eager:
        np.testing.assert_allclose(jitted[name][0], eager[name][0], rtol=1e-6, err_msg=name)
        np.testing.assert_array_equal(jitted[name][1], eager[name][1], err_msg=name)
        assert eager[name][0].shape == (9, 3)


# ---------------------------------------------------------------------------- supervised samples


def test_samples_whose_window_or_label_leaves_the_split_are_dropped_counted_by_hand():
    ok = np.ones(20, bool)
    train = R(0, 12)
    # window 3: decision bars 2..11; horizon 2 needs t + 2 < 12: t = 2..9, the last 2 dropped.
    assert supervised_end_times(20, 3, train, ok, horizon=2).tolist() == [2, 3, 4, 5, 6, 7, 8, 9]
    # stride 3 from the first bar that fits: 2, 5, 8, 11 -> 11 is dropped.
    assert supervised_end_times(20, 3, train, ok, stride=3, horizon=2).tolist() == [2, 5, 8]
    target_ok = ok.copy()
    target_ok[5] = False
    assert supervised_end_times(20, 3, train, target_ok, stride=3, horizon=2).tolist() == [2, 8]
    # A val part [12, 18): its own bars only -> t = 14, 15; looking back into train -> 12..15.
    val = R(12, 18)
    assert supervised_end_times(20, 3, val, ok, horizon=2).tolist() == [14, 15]
    looking_back = supervised_end_times(20, 3, val, ok, lookback_before_split=True, horizon=2)
    assert looking_back.tolist() == [12, 13, 14, 15]


def test_per_bar_label_ends_and_invalid_inputs_drop_their_samples():
    ok = np.ones(12, bool)
    t = np.arange(12)
    last = np.where(t % 2 == 0, t + 1, t + 3)  # even bars read 1 bar ahead, odd bars 3
    # split [0, 10), window 2: t = 1..9; keep last < 10: 1..6 and 8 (7 reads 10, 9 reads 12).
    kept = supervised_end_times(12, 2, R(0, 10), ok, label_last_bar=last)
    assert kept.tolist() == [1, 2, 3, 4, 5, 6, 8]
    inputs_ok = ok.copy()
    inputs_ok[4] = False  # windows ending at 4 and 5 hold bar 4
    kept = supervised_end_times(12, 2, R(0, 10), ok, label_last_bar=last, input_valid=inputs_ok)
    assert kept.tolist() == [1, 2, 3, 6, 8]
    with pytest.raises(ValueError, match="label_last_bar\\[t\\] must be > t"):
        supervised_end_times(12, 2, R(0, 10), ok, label_last_bar=t)
    with pytest.raises(ValueError, match="exactly one of horizon= .* or label_last_bar="):
        supervised_end_times(12, 2, R(0, 10), ok)


def test_make_supervised_dataset_pairs_each_window_ending_at_t_with_the_label_of_t():
    feats = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    targets = np.arange(10, dtype=np.float32) * 10
    X, y, t = make_supervised_dataset(feats, targets, np.ones(10, bool), 3, R(0, 8), horizon=1)
    assert t.tolist() == [2, 3, 4, 5, 6]
    assert X.shape == (5, 3, 2) and y.shape == (5,)
    for i, ti in enumerate(t):
        np.testing.assert_array_equal(X[i], feats[ti - 2 : ti + 1])
        assert y[i] == targets[ti]


def _features_and_labels(close, h):
    """Causal features (log return and log close at t) and the future return label."""
    logc = np.log(close)
    features = np.stack([np.concatenate([[0.0], np.diff(logc)]), logc], axis=-1).astype(np.float32)
    r, valid = future_return(close, h)
    return features, r, valid


def test_a_training_split_never_sees_a_bar_at_or_after_its_end():
    n, h, window = 40, 3, 4
    rng = np.random.default_rng(5)
    close = (100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))).astype(np.float32)
    train = chronological_split(n, 0.5, 0.25, 0.25, embargo=h).train  # 34 usable bars: [0, 17)
    assert train == R(0, 17)
    features, r, valid = _features_and_labels(close, h)
    X, y, t = make_supervised_dataset(features, r, valid, window, train, horizon=h)

    later = close.copy()
    later[train.stop :] *= np.exp(rng.normal(0, 0.1, n - train.stop)).astype(np.float32)
    features2, r2, valid2 = _features_and_labels(later, h)
    X2, y2, t2 = make_supervised_dataset(features2, r2, valid2, window, train, horizon=h)

    assert t.tolist() == list(range(window - 1, train.stop - h))  # t = 3..13
    np.testing.assert_array_equal(t2, t)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    # The perturbation is real: the labels of the dropped bars 14..16 read it.
    dropped = slice(train.stop - h, train.stop)
    assert np.all(np.asarray(r2)[dropped] != np.asarray(r)[dropped])
