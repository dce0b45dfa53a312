"""Ensembles: members trained in one vmapped call equal the same members trained one by one (seeds,
hyperparameter grids, bootstrap resamples, through fit with a resume), bootstrap resamples that are
deterministic and the only rows a member sees, heterogeneous groups, and the combination rules on
hand-worked numbers (static weights, seed 002's confidence weighting, threshold, agreement, causal
rolling weights, uncertainty) with clear errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.checkpoint import CheckpointConfig, Checkpointer
from trading_jax.ensemble import (
    EnsembleGroup, abstain, agreement_filter, bootstrap_indices, causal_weights, check_weights,
    classification_uncertainty, confidence_mask, confidence_weighted, make_ensemble_trainer, matmul_convolutions,
    member_directions, member_names, member_outcomes, performance_weights, predict_members, prediction_spread,
    rolling_mean, rolling_performance, weighted_average,
)
from trading_jax.loop import fit, hyperparam_grid
from trading_jax.training import Dataset, TrainConfig, make_trainer
from trading_jax.training.train import hyperparams

M = 3
CONFIG = TrainConfig(model="tcn", preset="tiny", epochs=2, batch_size=16, learning_rate=3e-3,
                     model_kwargs={"channels": 4, "levels": 1})


class Killed(Exception):
    pass


def tiny_data(n_train: int = 64, n_val: int = 32) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_train + n_val, 8, 3)).astype(np.float32)
    y = (x[:, -1, 0] + 0.1 * rng.normal(size=n_train + n_val)).astype(np.float32)
    return Dataset(jnp.asarray(x[:n_train]), jnp.asarray(y[:n_train]), jnp.asarray(x[n_train:]),
                   jnp.asarray(y[n_train:]))


@pytest.fixture(scope="module")
def single():
    """The one-member trainer the references are trained with (compiled once for the module): the plain
    supervised trainer with the model's own convolutions (the ensembles compute theirs as matmuls on CPU)."""
    return make_trainer(CONFIG, tiny_data())


def member(tree, j):
    return jax.tree.map(lambda a: a[j], tree)


def assert_close_trees(a, b, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


# ------------------------------------------------------------------------------- vmapped members


def test_a_vmapped_ensemble_of_seeds_and_a_hyperparameter_grid_equals_its_members_trained_one_by_one(single):
    grid = hyperparam_grid(hyperparams(CONFIG), learning_rate=[1e-3, 3e-3, 1e-2], weight_decay=[0.0, 1e-4, 1e-3])
    ensemble = make_ensemble_trainer(make_trainer(CONFIG, tiny_data()), M, diversity="seed+hparams", hparams_grid=grid)
    key = jax.random.key(0)
    result = ensemble.train(key)  # the grid is the population's default hyperparameters
    keys = jax.random.split(key, M)
    for j in range(M):
        alone = single.train(keys[j], hparams=member(grid, j))
        assert_close_trees(member(result.params, j), alone.params)
        np.testing.assert_allclose(result.history["val_loss"][j], alone.history["val_loss"], atol=1e-5)
    val = np.asarray(result.history["val_loss"][:, -1])
    assert len({round(float(v), 6) for v in val}) == M  # the members differ


def test_a_bootstrap_ensemble_through_fit_resumes_and_equals_its_members_on_their_resamples(single, tmp_path):
    data = tiny_data()
    boot_key = jax.random.key(7)

    def build():  # as after a restart: the same bootstrap key gives the same resamples
        return make_ensemble_trainer(make_trainer(CONFIG, data), M, diversity="bootstrap", bootstrap_key=boot_key)

    ensemble = build()
    np.testing.assert_array_equal(ensemble.train_index, bootstrap_indices(boot_key, M, 64))

    def kill_after_1(state, metrics, done):
        if done == 1:
            raise Killed

    def ckpt():
        return Checkpointer(CheckpointConfig(str(tmp_path), save_every_steps=1, best_metric="val_loss"))

    with ckpt() as c, pytest.raises(Killed):
        fit(ensemble, jax.random.key(0), checkpointer=c, every=1, callbacks=[kill_after_1], show_progress=False)
    with ckpt() as c:
        assert c.latest_step() == 1
        result = fit(build(), jax.random.key(0), checkpointer=c, every=1, show_progress=False)
    keys = jax.random.split(jax.random.key(0), M)
    for j in range(M):
        args = {"data": data, "params": None, "train_index": ensemble.train_index[j]}
        alone = single.train(keys[j], args=args)
        assert_close_trees(member(result.params, j), alone.params)
        assert_close_trees(member(result.best_params, j), alone.best_params)


def test_a_member_trained_on_a_resample_of_one_row_sees_only_that_row(single):
    data = tiny_data()
    only_row_0 = data._replace(x_train=jnp.broadcast_to(data.x_train[:1], data.x_train.shape),
                               y_train=jnp.broadcast_to(data.y_train[:1], data.y_train.shape))
    key = jax.random.key(3)
    resampled = single.train(key, args={"data": data, "params": None, "train_index": jnp.zeros(64, jnp.int32)})
    copied = single.train(key, args={"data": only_row_0, "params": None})
    for a, b in zip(jax.tree.leaves(resampled), jax.tree.leaves(copied), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    everything = single.train(key)
    assert not np.allclose(np.asarray(everything.history["train_loss"]), np.asarray(copied.history["train_loss"]))


def test_bootstrap_resamples_are_deterministic_drawn_with_replacement_and_differ_between_members():
    key = jax.random.key(11)
    idx = np.asarray(bootstrap_indices(key, 4, 500))
    assert idx.shape == (4, 500) and idx.dtype == np.int32
    np.testing.assert_array_equal(idx, np.asarray(bootstrap_indices(key, 4, 500)))
    np.testing.assert_array_equal(idx[:2], np.asarray(bootstrap_indices(key, 2, 500)))  # member j: key and j only
    assert idx.min() >= 0 and idx.max() < 500
    distinct = [len(np.unique(row)) / 500 for row in idx]
    assert all(0.58 < d < 0.68 for d in distinct)  # with replacement: ~1 - 1/e = 63% distinct rows
    assert all(not np.array_equal(idx[i], idx[j]) for i in range(4) for j in range(i + 1, 4))
    assert not np.array_equal(idx, np.asarray(bootstrap_indices(jax.random.key(12), 4, 500)))


def test_ensemble_trainer_arguments_are_checked(single):
    data = tiny_data()
    with pytest.raises(ValueError, match="bootstrap_key"):
        make_ensemble_trainer(make_trainer(CONFIG, data), M, diversity="bootstrap")
    with pytest.raises(ValueError, match="hparams_grid"):
        make_ensemble_trainer(make_trainer(CONFIG, data), M, diversity="hparams")
    with pytest.raises(ValueError, match="diversity must be"):
        make_ensemble_trainer(make_trainer(CONFIG, data), M, diversity="bagging")
    with pytest.raises(ValueError, match="conv must be"):
        make_ensemble_trainer(make_trainer(CONFIG, data), M, conv="fft")
    grid = hyperparam_grid(hyperparams(CONFIG), learning_rate=[1e-3, 3e-3])
    with pytest.raises(ValueError, match="leading axis of 3"):
        make_ensemble_trainer(make_trainer(CONFIG, data), M, diversity="hparams", hparams_grid=grid)
    with pytest.raises(ValueError, match="train_index must be an integer array of shape"):
        single.train(jax.random.key(0), args={"data": data, "params": None, "train_index": jnp.zeros(10, jnp.int32)})


@pytest.mark.parametrize("layer", [
    dict(kernel_size=(2,), kernel_dilation=(4,), padding=((4, 0),)),   # the TCN's causal dilated convolution
    dict(kernel_size=(5,), padding="SAME"),
    dict(kernel_size=(3,), padding="CAUSAL", kernel_dilation=2, use_bias=False),
    dict(kernel_size=3, padding="VALID"),
])
def test_convolutions_computed_as_matmuls_equal_the_models_own(layer):
    import flax.linen as nn

    conv = nn.Conv(7, **layer)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16, 5)).astype(np.float32))
    params = conv.init(jax.random.key(0), x)
    with matmul_convolutions():
        jaxpr = str(jax.make_jaxpr(conv.apply)(params, x))
        out = conv.apply(params, x)
    assert "conv_general_dilated" not in jaxpr and "dot_general" in jaxpr
    np.testing.assert_allclose(out, conv.apply(params, x), atol=1e-6)
    strided = nn.Conv(7, kernel_size=(3,), strides=2)  # not covered: runs as the model's own convolution
    with matmul_convolutions():
        assert "conv_general_dilated" in str(jax.make_jaxpr(strided.apply)(strided.init(jax.random.key(0), x), x))


# ------------------------------------------------------------------------------- heterogeneous groups


def init_group(name: str, config: TrainConfig, members: int, x) -> EnsembleGroup:
    model = config.build_model()
    keys = jax.random.split(jax.random.key(len(name)), members)
    params = jax.jit(jax.vmap(lambda k: model.init(k, x[:1])["params"]))(keys)
    return EnsembleGroup(name, config, params)


def test_groups_of_two_architectures_combine_their_members():
    x = tiny_data().x_val
    classifier = CONFIG.replace(task="classification", model_kwargs={"channels": 4, "levels": 1, "n_classes": 3})
    tcn = init_group("tcn", classifier, 2, x)
    transformer = init_group("transformer", TrainConfig(model="direction_transformer", preset="tiny",
                                                        task="classification", model_kwargs={"num_layers": 1}), 3, x)
    probs = predict_members([tcn, transformer], x)  # classification groups: softmax of "logits", [M_total, n, C]
    assert probs.shape == (5, 32, 3)
    assert member_names([tcn, transformer]) == ["tcn/0", "tcn/1", "transformer/0", "transformer/1", "transformer/2"]
    for group, j, row in ((tcn, 1, 1), (transformer, 0, 2)):  # member j of a group, applied on its own
        logits = jax.jit(group.config.build_model().apply)({"params": member(group.params, j)}, x)["logits"]
        np.testing.assert_allclose(probs[row], jax.nn.softmax(logits, -1), atol=1e-6)
    pred, conf = confidence_weighted(probs)
    assert pred.shape == (32, 3) and conf.shape == (32,)
    np.testing.assert_allclose(pred.sum(-1), 1.0, atol=1e-5)
    # regression groups of two architectures concatenate to [M_total, n]
    lstm = init_group("lstm", TrainConfig(model="lstm", preset="tiny", model_kwargs={"hidden_size": 4,
                                                                                    "num_layers": 1}), 3, x)
    regression = [EnsembleGroup("tcn", classifier.replace(task="regression"), tcn.params), lstm]  # its "prediction"
    preds = predict_members(regression, x)
    assert preds.shape == (5, 32)
    with pytest.raises(ValueError, match="regression predictions"):
        confidence_weighted(preds)  # a regression model trains no confidence
    with pytest.raises(ValueError, match="differ in shape"):
        predict_members([tcn, lstm], x)
    with pytest.raises(ValueError, match="needs the model output 'logits'"):
        predict_members(lstm, x, output="probs")


# ------------------------------------------------------------------------------- combination rules


def test_static_weights_are_normalised_for_regression_and_probabilities():
    preds = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    # weights 1, 1, 2 -> 0.25, 0.25, 0.5: 0.25*1 + 0.25*3 + 0.5*5 = 3.5 and 0.5 + 1 + 3 = 4.5
    np.testing.assert_allclose(weighted_average(preds, [1.0, 1.0, 2.0]), [3.5, 4.5], rtol=1e-6)
    np.testing.assert_allclose(weighted_average(preds), [3.0, 4.0], rtol=1e-6)
    probs = jnp.array([[[0.8, 0.2]], [[0.4, 0.6]]])
    # weights 3, 1 -> 0.75*0.8 + 0.25*0.4 = 0.7
    np.testing.assert_allclose(weighted_average(probs, [3.0, 1.0]), [[0.7, 0.3]], rtol=1e-6)
    # per-sample weights [n, M]: sample 0 all on member 2, sample 1 uniform
    per_sample = jnp.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(weighted_average(preds, per_sample), [5.0, 4.0], rtol=1e-6)


def test_bad_weights_are_refused_with_a_clear_error():
    preds = jnp.ones((3, 4))
    with pytest.raises(ValueError, match="non-negative"):
        weighted_average(preds, [0.5, -0.1, 0.6])
    with pytest.raises(ValueError, match=r"one weight per member \(3\)"):
        weighted_average(preds, [0.5, 0.5])
    with pytest.raises(ValueError, match="all be zero"):
        check_weights([0.0, 0.0, 0.0], 3)
    with pytest.raises(ValueError, match="finite"):
        check_weights([1.0, float("nan"), 0.0], 3)


def test_confidence_weighting_follows_seed_002_by_hand():
    probs = jnp.array([[[0.9, 0.1]], [[0.4, 0.6]]])  # confidences 0.9 and 0.6
    pred, conf = confidence_weighted(probs)
    # (0.9 [0.9, 0.1] + 0.6 [0.4, 0.6]) / 1.5 = [1.05, 0.45] / 1.5; conf = (0.9 + 0.6) / 2
    np.testing.assert_allclose(pred, [[0.7, 0.3]], rtol=1e-6)
    np.testing.assert_allclose(conf, [0.75], rtol=1e-6)
    # weights 3:1 -> mean-1 weights 1.5, 0.5: c w = 1.35, 0.3;
    # pred = (1.35 [0.9, 0.1] + 0.3 [0.4, 0.6]) / 1.65 = [1.335, 0.315] / 1.65; conf = 1.65 / 2
    pred, conf = confidence_weighted(probs, [3.0, 1.0])
    np.testing.assert_allclose(pred, [[1.335 / 1.65, 0.315 / 1.65]], rtol=1e-6)
    np.testing.assert_allclose(conf, [0.825], rtol=1e-6)
    pred_seed, conf_seed = confidence_weighted(probs, [0.75, 0.25])  # the seed's weights sum to 1: same pred
    np.testing.assert_allclose(pred_seed, pred, rtol=1e-6)
    np.testing.assert_allclose(conf_seed, conf, rtol=1e-6)
    # regression members qualify only with a trained confidence
    with pytest.raises(ValueError, match="trained confidence"):
        confidence_weighted(jnp.array([[0.1, -0.2], [0.3, 0.1]]))
    pred, conf = confidence_weighted(jnp.array([[1.0], [3.0]]), confidence=jnp.array([[0.5], [1.5]]))
    np.testing.assert_allclose(pred, [(0.5 * 1 + 1.5 * 3) / 2.0], rtol=1e-6)
    with pytest.raises(ValueError, match="class probabilities"):
        confidence_weighted(jnp.array([[[2.0, 1.0]], [[0.5, 0.5]]]))


def test_a_confidence_threshold_abstains_below_it():
    mask = confidence_mask(jnp.array([0.5, 0.6, 0.7]), 0.6)
    np.testing.assert_array_equal(mask, [False, True, True])
    np.testing.assert_array_equal(abstain(jnp.array([1, -1, 1]), mask), [0, -1, 1])
    np.testing.assert_allclose(abstain(jnp.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]]), mask, flat=-1.0),
                               [[-1.0, -1.0], [0.6, 0.4], [0.5, 0.5]])


def test_the_agreement_filter_acts_only_when_seventy_percent_of_members_agree():
    up, down = 1, -1
    directions = jnp.array([
        [up] * 7 + [down] * 3,   # sample 0: 7 of 10 agree -> act, up
        [up] * 6 + [down] * 4,   # sample 1: 6 of 10 -> abstain
        [0] * 10,                # sample 2: all flat -> they agree on flat
    ]).T
    result = agreement_filter(directions)
    np.testing.assert_array_equal(result.mask, [True, False, True])
    np.testing.assert_array_equal(result.direction, [1, 1, 0])
    np.testing.assert_allclose(result.fraction, [0.7, 0.6, 1.0], rtol=1e-6)
    # weighted votes: member 0 weighs 3 of 5 -> 60% up
    weighted = agreement_filter(jnp.array([[1], [-1], [-1]]), agreement=0.6, weights=[3.0, 1.0, 1.0])
    np.testing.assert_array_equal(weighted.direction, [1])
    np.testing.assert_allclose(weighted.fraction, [0.6], rtol=1e-6)
    assert bool(weighted.mask[0]) and not bool(agreement_filter(jnp.array([[1], [-1], [-1]]), 0.7, [3, 1, 1]).mask[0])
    # directions from predictions: regression signs (with a dead zone) and argmax classes
    np.testing.assert_array_equal(member_directions(jnp.array([[0.3, -0.2, 0.05]]), dead_zone=0.1), [[1, -1, 0]])
    np.testing.assert_array_equal(member_directions(jnp.array([[[0.1, 0.7, 0.2]]])), [[1]])


def test_rolling_weights_by_hand_window_and_decay():
    losses = jnp.array([[1.0, 3.0], [3.0, 1.0], [1.0, 5.0], [0.0, 0.0]])
    w = causal_weights(losses, delay=1, window=2)
    # t=0: nothing known -> uniform; t=1: means (1, 3) -> softmax(-1, -3); t=2: means (2, 2) -> uniform;
    # t=3: the window holds outcomes 1, 2 -> means (2, 3) -> softmax(-2, -3)
    s = 1.0 / (1.0 + math.exp(-2.0))
    t = 1.0 / (1.0 + math.exp(-1.0))
    np.testing.assert_allclose(w, [[0.5, 0.5], [s, 1 - s], [0.5, 0.5], [t, 1 - t]], rtol=1e-5)
    # decay 0.5 at t=2: sums 0.5 (1, 3) + (3, 1) = (3.5, 2.5) over counts 1.5 -> means (7/3, 5/3)
    w = causal_weights(losses, delay=1, decay=0.5)
    u = 1.0 / (1.0 + math.exp(7 / 3 - 5 / 3))
    np.testing.assert_allclose(w[2], [u, 1 - u], rtol=1e-5)
    # accuracy, proportional: t=1 scores (1, 0) -> (1, 0); t=2 means (1, 0.5) -> (2/3, 1/3)
    hits = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    w = causal_weights(hits, delay=1, window=2, rule="proportional")
    np.testing.assert_allclose(w, [[0.5, 0.5], [1.0, 0.0], [2 / 3, 1 / 3]], rtol=1e-6)
    # temperature: softmax(-(1, 3) / 2)
    np.testing.assert_allclose(performance_weights(jnp.array([1.0, 3.0]), temperature=2.0), [t, 1 - t], rtol=1e-6)
    # the (init, update) pair directly: a NaN outcome is ignored for that member only
    roll = rolling_performance(2, window=3)
    state = roll.init()
    for row in ([1.0, jnp.nan], [3.0, 4.0]):
        state = roll.update(state, jnp.array(row))
    np.testing.assert_allclose(rolling_mean(state), [2.0, 4.0])


def test_rolling_weights_are_causal_an_outcome_at_t_moves_no_weight_before_t_plus_delay():
    rng = np.random.default_rng(0)
    losses = jnp.asarray(rng.uniform(size=(20, 4)).astype(np.float32))
    t, delay = 9, 3
    for kw in (dict(window=5), dict(decay=0.8)):
        base = causal_weights(losses, delay=delay, **kw)
        moved = causal_weights(losses.at[t].set(10.0), delay=delay, **kw)
        np.testing.assert_array_equal(base[: t + delay], moved[: t + delay])
        assert not np.allclose(base[t + delay], moved[t + delay])
        np.testing.assert_allclose(base.sum(-1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="delay must be >= 1"):
        causal_weights(losses, delay=0, window=5)


def test_member_outcomes_by_hand():
    preds = jnp.array([[0.5, -1.0], [-0.5, 2.0]])  # [M, T]
    y = jnp.array([1.0, 1.0])
    np.testing.assert_allclose(member_outcomes(preds, y), [[0.25, 2.25], [4.0, 1.0]])
    np.testing.assert_allclose(member_outcomes(preds, y, "hit"), [[1.0, 0.0], [0.0, 1.0]])
    probs = jnp.array([[[0.2, 0.8], [0.6, 0.4]]])  # [M=1, T=2, C=2]
    np.testing.assert_allclose(member_outcomes(probs, jnp.array([1, 1]), "hit"), [[1.0], [0.0]])
    np.testing.assert_allclose(member_outcomes(probs, jnp.array([1, 1]), "cross_entropy"),
                               [[-math.log(0.8)], [-math.log(0.4)]], rtol=1e-6)


def test_uncertainty_from_the_members_spread_by_hand():
    preds = jnp.array([[1.0], [3.0]])
    np.testing.assert_allclose(prediction_spread(preds), [1.0], rtol=1e-6)
    # weights 3:1: mean 1.5, variance 0.75 * 0.25 + 0.25 * 2.25 = 0.75
    np.testing.assert_allclose(prediction_spread(preds, [3.0, 1.0]), [math.sqrt(0.75)], rtol=1e-6)
    disagree = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two confident members, opposite classes
    u = classification_uncertainty(disagree)
    np.testing.assert_allclose([u.total[0], u.expected[0], u.mutual_information[0]], [math.log(2), 0.0, math.log(2)],
                               atol=1e-6)
    unsure = jnp.full((2, 1, 2), 0.5)  # two members that agree they do not know
    u = classification_uncertainty(unsure)
    np.testing.assert_allclose([u.total[0], u.expected[0], u.mutual_information[0]], [math.log(2), math.log(2), 0.0],
                               atol=1e-6)
