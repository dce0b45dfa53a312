"""The running normaliser: hand-worked moments, chunking invariance, NaN handling."""

import jax
import jax.numpy as jnp
import numpy as np

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
