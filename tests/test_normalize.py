"""The running normaliser: hand-worked moments, chunking invariance, NaN handling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.features.normalize import normalizer_apply, normalizer_init, normalizer_update


def test_moments_match_hand_worked_values():
    x = jnp.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [6.0, 10.0]])
    state = normalizer_update(normalizer_init(2), x)
    np.testing.assert_allclose(state.count, [4, 4])
    np.testing.assert_allclose(state.mean, [3.0, 10.0])
    # population variance of 1, 2, 3, 6 = (4 + 1 + 0 + 9) / 4 = 3.5
    np.testing.assert_allclose(state.std, [np.sqrt(3.5), 0.0], rtol=1e-6)


def test_streaming_in_chunks_equals_one_shot_fit():
    x = jax.random.normal(jax.random.key(0), (1000, 3)) * jnp.array([1.0, 5.0, 0.1]) + jnp.array([0.0, 100.0, -3.0])
    one_shot = normalizer_update(normalizer_init(3), x)
    chunked = normalizer_init(3)
    for chunk in jnp.array_split(x, 7):
        chunked = normalizer_update(chunked, chunk)
    np.testing.assert_allclose(chunked.mean, one_shot.mean, rtol=1e-5)
    np.testing.assert_allclose(chunked.std, one_shot.std, rtol=1e-4)
    np.testing.assert_allclose(one_shot.std, np.asarray(x).std(axis=0), rtol=1e-4)


def test_warm_up_nans_are_ignored_by_fit_and_stay_nan_after_apply():
    x = jnp.array([[jnp.nan, 1.0], [jnp.nan, 3.0], [2.0, 5.0], [4.0, 7.0]])
    state = normalizer_update(normalizer_init(2), x)
    np.testing.assert_allclose(state.count, [2, 4])
    np.testing.assert_allclose(state.mean, [3.0, 4.0])
    z = normalizer_apply(state, x, clip=None)
    assert np.isnan(np.asarray(z[:2, 0])).all()
    np.testing.assert_allclose(z[2:, 0], [-1.0, 1.0], rtol=1e-6)


def test_apply_clips_outliers_and_maps_constant_features_to_zero():
    state = normalizer_update(normalizer_init(2), jnp.array([[0.0, 1.0], [2.0, 1.0]]))
    z = normalizer_apply(state, jnp.array([[100.0, 1.0]]), clip=5.0)
    np.testing.assert_allclose(z, [[5.0, 0.0]])


def test_statistics_over_a_trailing_shape_with_one_shared_count():
    x = jax.random.normal(jax.random.key(1), (5, 4, 3, 2))  # 20 rows of [3, 2]
    state = normalizer_update(normalizer_init((3, 2), count=0.0, elementwise_count=False), x, ignore_nan=False)
    assert state.count.shape == () and float(state.count) == 20.0
    rows = np.asarray(x).reshape(-1, 3, 2)
    np.testing.assert_allclose(state.mean, rows.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.var, rows.var(0), rtol=1e-5)
    with pytest.raises(ValueError, match="count per element"):
        normalizer_update(state, x)  # NaN-ignoring needs a count per element


def test_a_prior_of_eps_pseudo_observations_at_mean_zero_and_variance_one():
    eps = 0.5  # large, to see it: the data [1, 3] (mean 2, M2 2) merged with 0.5 observations of N(0, 1)
    state = normalizer_update(normalizer_init(1, count=eps), jnp.array([[1.0], [3.0]]))
    n = 2.0 + eps
    np.testing.assert_allclose(state.count, [n])
    np.testing.assert_allclose(state.mean, [2.0 * 2.0 / n], rtol=1e-6)
    np.testing.assert_allclose(state.var, [(1.0 * eps + 2.0 + 2.0**2 * eps * 2.0 / n) / n], rtol=1e-6)


def test_eps_is_added_to_the_std_or_under_the_square_root():
    state = normalizer_update(normalizer_init(1), jnp.array([[0.0], [1.0]]))  # mean .5, var .25
    x = jnp.array([[1.5]])
    np.testing.assert_allclose(normalizer_apply(state, x, clip=None, eps=0.01), [[1.0 / 0.51]], rtol=1e-6)
    np.testing.assert_allclose(normalizer_apply(state, x, clip=None, eps=0.01, eps_in="var"),
                               [[1.0 / np.sqrt(0.26)]], rtol=1e-6)
