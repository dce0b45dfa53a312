"""The quantum-inspired portfolio network, its multi-objective training and the portfolio experiment schema.

Tiny sizes, and few compilations: one jitted apply (the cap is a traced argument) and one jitted training run are
shared by the tests of this file.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.models import available, create
from trading_jax.models.portfolio import QuantumInspiredLayer, _project_bwd, seed_constraints
from trading_jax.portfolio.projections import project_capped_simplex
from trading_jax.runs.schema import ConfigError
from trading_jax.training.portfolio import (
    LossCoefficients, PortfolioData, PortfolioTrainConfig, asset_features, holding_returns, make_train,
    multi_objective_loss, trailing_covariance,
)

N, F, B = 8, 3, 16  # the tiny preset's assets, features per asset, dates per call

MODEL = create("quantum_portfolio", preset="tiny")
APPLY = jax.jit(lambda params, x, mask, cap: MODEL.apply(params, x, mask, max_position=cap))
PROJECT = jax.jit(project_capped_simplex)  # the same compiled program as the run's inverse-volatility baseline


def limit(cap, mask):
    """The cap each row must respect: `max(cap, 1 / n_listed)`."""
    return np.maximum(cap, 1.0 / np.maximum(np.asarray(mask).sum(-1, keepdims=True), 1))


@pytest.fixture(scope="module")
def params():
    init = jax.jit(MODEL.init, static_argnames="method")
    return init(jax.random.key(0), jnp.zeros((1, N, F)), method="scores")  # the same params, without the projection


def random_masks(rng):
    mask = rng.random((B, N)) < 0.7
    mask[0] = True  # every asset
    mask[1] = False  # no asset: cash
    mask[2, :] = False
    mask[2, [1, 5]] = True  # two assets: any cap below 1/2 is infeasible -> equal weight
    mask[3, :] = False
    mask[3, 4] = True  # one asset: all in it
    return mask


# ------------------------------------------------------------------------------------------ the cap


def test_the_network_never_breaks_its_cap_on_random_and_adversarial_inputs_with_masks_under_jit(params):
    rng = np.random.default_rng(0)
    inputs = {"random": rng.normal(size=(B, N, F)), "huge": 1e4 * rng.normal(size=(B, N, F)),
              "one extreme asset": np.where(np.arange(N)[:, None] == 2, 1e6, 0.0) * np.ones((B, N, F)),
              "constant": np.ones((B, N, F))}
    masks = {"all listed": np.ones((B, N), bool), "random": random_masks(rng)}
    for cap in (0.13, 0.3, 0.5, 1.0):
        for (what, x) in inputs.items():
            for (masked, mask) in masks.items():
                w = np.asarray(APPLY(params, jnp.asarray(x, jnp.float32), jnp.asarray(mask), cap))
                assert np.isfinite(w).all(), (cap, what, masked)
                assert (w <= limit(cap, mask) + 1e-6).all(), (cap, what, masked, w.max())
                assert (w >= 0).all()
                assert (w[~mask] == 0).all(), "an unlisted asset got a weight"
                listed_rows = mask.any(-1)
                np.testing.assert_allclose(w[listed_rows].sum(-1), 1.0, atol=1e-5)
                assert (w[~listed_rows] == 0).all(), "a date with no listed asset is all cash"
                if what == "huge" and masked == "all listed" and cap < 0.5:
                    assert (np.abs(w - cap) < 1e-6).any(), "extreme scores: the cap binds (and holds)"
                if masked == "random" and cap < 0.5:  # two listed assets: equal weight; one: all in it
                    np.testing.assert_allclose(w[2, [1, 5]], [0.5, 0.5], atol=1e-6)
                    np.testing.assert_allclose(w[3, 4], 1.0, atol=1e-6)


def test_the_seeds_clamp_then_renormalise_breaks_the_cap_where_the_projection_holds_it():
    softmax_weights = jnp.array([[0.7, 0.1, 0.1, 0.1]] * 2)
    seed = np.asarray(seed_constraints(softmax_weights, 0.3))
    # clamp: (0.3, 0.1, 0.1, 0.1), sum 0.6 -> divided by 0.6: (0.5, 1/6, 1/6, 1/6), the first above the cap
    np.testing.assert_allclose(seed[0], [0.5, 1 / 6, 1 / 6, 1 / 6], rtol=1e-6)
    assert seed[0, 0] > 0.3
    # the network projects the softmax weights instead: the first is cut to 0.3 and the 0.4 it loses is shared
    # equally, 0.1 + 0.4 / 3 each
    ours = np.asarray(PROJECT(softmax_weights, jnp.full((2, 4), 0.3)))
    np.testing.assert_allclose(ours[0], [0.3, 0.1 + 0.4 / 3, 0.1 + 0.4 / 3, 0.1 + 0.4 / 3], rtol=1e-5)


def test_the_projections_hand_written_gradient_matches_finite_differences():
    v = jnp.array([[0.5, 0.2, 0.2, 0.1], [0.05, 0.35, 0.4, 0.2]])  # one capped entry, then two
    upper = jnp.full((2, 4), 0.3)
    g = jnp.array([[1.0, -2.0, 0.5, 3.0], [0.3, 0.7, -1.0, 2.0]])
    w = PROJECT(v, upper)
    dv, _ = _project_bwd((w, upper), g)
    h = 1e-3
    for j in range(4):  # the projection is linear near v (no entry at a kink): central differences are exact
        step = jnp.zeros((2, 4)).at[:, j].set(h)
        fd = jnp.sum(g * (PROJECT(v + step, upper) - PROJECT(v - step, upper)), axis=-1) / (2 * h)
        np.testing.assert_allclose(dv[:, j], fd, atol=2e-3)


def test_one_date_without_a_batch_axis_gives_one_weight_per_asset(params):
    x = jax.random.normal(jax.random.key(3), (B, N, F))
    assert jax.eval_shape(lambda p, x: MODEL.apply(p, x), params, x[0]).shape == (N,)
    scores = jax.jit(lambda p, x: MODEL.apply(p, x, method="scores"))
    np.testing.assert_allclose(scores(params, x[0]), scores(params, x)[0], atol=1e-6)


def test_bad_inputs_raise_one_line_value_errors(params):
    x = jnp.zeros((B, N, F))
    cases = [(jnp.zeros((B, N + 1, F)), {}, "build it with num_assets=9"), (jnp.zeros((N,)), {}, "[N, F] or [batch, N, F]"),
             (x, {"asset_mask": jnp.ones((B, N + 1), bool)}, "asset_mask must have shape"),
             (x.at[2, 3, 1].set(jnp.nan), {}, "NaN or inf"),
             (x, {"max_position": 0.1}, "max_position >= 1/8"), (x, {"max_position": 1.5}, "in (0, 1]")]
    for features, kwargs, message in cases:
        with pytest.raises(ValueError) as error:
            MODEL.apply(params, features, **kwargs)
        assert message in str(error.value) and "\n" not in str(error.value)


# ----------------------------------------------------------------------------------------- the model


def test_the_registry_builds_the_network_with_seed_and_tiny_presets_and_hand_counted_params():
    assert {"seed", "tiny"} <= set(available()["quantum_portfolio"])
    seed = create("quantum_portfolio", preset="seed")
    assert (seed.num_assets, seed.num_layers, seed.embedding_dim, seed.max_position) == (50, 4, 64, 0.2)
    shapes = jax.eval_shape(lambda k: seed.init(k, jnp.zeros((1, 50, 6))), jax.random.key(0))["params"]
    count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
    # embeddings + projection of (64 + 6) -> 64 + 4 layers (angles + entangling) + decoder 64 -> 128 -> 1
    assert count == 50 * 64 + (70 * 64 + 64) + 4 * (64 * 3 + 64 * 64) + (64 * 128 + 128) + (128 + 1)


def test_the_scaled_init_keeps_the_state_norm_through_the_seed_depth_where_randn_blows_it_up():
    x = jax.random.normal(jax.random.key(0), (32, 64))
    layer = QuantumInspiredLayer(64)
    init, apply = jax.jit(layer.init), jax.jit(layer.apply)
    h = x
    for i in range(4):
        h = apply(init(jax.random.key(i + 1), x), h)
    ratio = float(jnp.linalg.norm(h) / jnp.linalg.norm(x))
    assert 0.5 < ratio < 2.0
    h = x
    for i in range(4):  # the seed's torch.randn draws: angles [64, 3] and entangling weights [64, 64]
        seed_params = {"params": {"rotation_params": jax.random.normal(jax.random.key(10 + 2 * i), (64, 3)),
                                  "entangle_weights": jax.random.normal(jax.random.key(11 + 2 * i), (64, 64))}}
        h = apply(seed_params, h)
    # about sqrt(64) = 8 per layer from the matrix, about half of it taken back by the three cosines
    assert float(jnp.linalg.norm(h) / jnp.linalg.norm(x)) > 100.0


# ------------------------------------------------------------------------------------------ the loss


def test_the_multi_objective_loss_is_hand_worked_on_two_assets():
    w, prev = jnp.array([0.6, 0.4]), jnp.array([0.5, 0.5])
    r = jnp.array([0.02, -0.01])
    cov = jnp.array([[0.04, 0.01], [0.01, 0.09]])
    loss, terms = multi_objective_loss(w, prev, r, cov, r, LossCoefficients())
    # R = 0.012 - 0.004; V = 0.36*0.04 + 2*0.24*0.01 + 0.16*0.09; T = 0.1 + 0.1; Sh = R / sqrt(V)
    ret, risk, turnover = 0.008, 0.0336, 0.2
    sharpe = ret / math.sqrt(risk)
    np.testing.assert_allclose([terms["return"], terms["risk"], terms["turnover"], terms["sharpe"]],
                               [ret, risk, turnover, sharpe], rtol=1e-5)
    np.testing.assert_allclose(loss, -1.0 * ret + 0.5 * risk + 0.2 * turnover - 0.8 * sharpe, rtol=1e-5)
    assert abs(float(loss) - 0.0138851) < 1e-6


# ------------------------------------------------------------------------------------- the data


def test_features_covariance_and_holding_returns_read_the_bars_they_should():
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(0.01 * rng.normal(size=(40, 2)), axis=0))
    before = asset_features(close, lookbacks=(1, 5), vol_windows=(5,))
    changed = close.copy()
    changed[25:] *= 1.5  # a jump after date 24 must not reach the features of dates <= 24
    after = asset_features(changed, lookbacks=(1, 5), vol_windows=(5,))
    np.testing.assert_array_equal(before[:25], after[:25])
    assert not np.allclose(before[25], after[25])
    np.testing.assert_allclose(before[10, :, 1], np.log(close[10] / close[5]), rtol=1e-4)
    daily = close[1:] / close[:-1] - 1
    cov = trailing_covariance(daily, 6)
    np.testing.assert_allclose(cov[20], np.cov(daily[15:21].T), rtol=1e-10)
    assert np.isnan(cov[4]).all()
    opens = np.array([[1.0], [2.0], [3.0], [6.0]])
    np.testing.assert_allclose(holding_returns(opens)[:, 0], [0.5, 1.0, np.nan, np.nan])  # O[t+2] / O[t+1] - 1


# ------------------------------------------------------------------------------------------ training


def learning_data():
    """Asset 0 always earns 1% more the next period than the others; features are noise."""
    rng = np.random.default_rng(0)
    t = 48
    returns = (np.where(np.arange(N) == 0, 0.01, 0.0) + 0.002 * rng.normal(size=(t, N))).astype(np.float32)
    cov = np.broadcast_to(np.eye(N, dtype=np.float32) * 1e-4, (t, N, N)).copy()
    return PortfolioData(rng.normal(size=(t, N, F)).astype(np.float32), np.ones((t, N), bool), returns, cov,
                         np.arange(1, 32, dtype=np.int32), np.arange(32, 32 + B, dtype=np.int32))


CONFIG = PortfolioTrainConfig(preset="tiny", epochs=8, batch_size=8, learning_rate=0.02)


@pytest.fixture(scope="module")
def trained():
    data = learning_data()
    run = jax.jit(make_train(CONFIG, data))
    return data, run, run(jax.random.key(0))


def test_a_tiny_training_run_learns_to_overweight_the_asset_that_always_earns_more(trained):
    data, _, result = trained
    val = data.val_index
    x, mask = jnp.asarray(data.features[val]), jnp.asarray(data.mask[val])
    initial = jax.jit(MODEL.init, static_argnames="method")(jax.random.split(jax.random.key(0))[0], x[:1],
                                                            method="scores")  # train(key)'s initial params
    before = np.asarray(APPLY(initial, x, mask, 0.3))[:, 0].mean()
    after = np.asarray(APPLY(result.params, x, mask, 0.3))
    assert before < 0.2  # about 1/8 at the start
    assert after[:, 0].mean() > 0.29  # at (or all but at) the cap of 0.3 after training
    assert (after <= 0.3 + 1e-6).all()
    history = {k: np.asarray(v) for k, v in result.history.items()}
    assert history["train_loss"][-1] < history["train_loss"][0] - 0.1
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert (history["skipped_steps"] == 0).all()
    assert 0 <= int(result.best_epoch) < CONFIG.epochs


def test_the_same_key_gives_the_same_params_and_another_key_other_params(trained):
    _, run, result = trained
    again = run(jax.random.key(0))
    for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(a, b)
    other = run(jax.random.key(1))
    assert not np.array_equal(jax.tree.leaves(result.params)[0], jax.tree.leaves(other.params)[0])


def test_training_refuses_data_it_cannot_use():
    data = learning_data()
    with pytest.raises(ValueError, match="must index dates 1 .. 47"):
        make_train(CONFIG, data._replace(train_index=np.arange(0, 30, dtype=np.int32)))
    with pytest.raises(ValueError, match="PortfolioData.returns has NaN"):
        make_train(CONFIG, data._replace(returns=np.where(np.arange(N) == 3, np.nan, data.returns)))
    with pytest.raises(ValueError, match="fewer than batch_size=64"):
        make_train(PortfolioTrainConfig(preset="tiny", batch_size=64), data)


# ---------------------------------------------------------------------------------- the experiment


def test_the_experiment_schema_rejects_typos_with_a_one_line_config_error(tmp_path):
    from trading_jax.runs import portfolio

    raw = {"algorithm": "portfolio", "name": "x", "seeds": [0, 1], "data": {"source": str(tmp_path)},
           "train": {"preset": "tiny", "epochs": 2}}
    assert portfolio.load(raw, "x.toml").train.epochs == 2
    for table, key, value, message in [("train", "epoch", 2, "unknown key 'epoch' (did you mean 'epochs'?)"),
                                       ("data", "embargo", 1, "embargo = 1: expected an integer >= 2"),
                                       ("evaluation", "baselines", ["equal_wieght"], "unknown ['equal_wieght']"),
                                       ("train", "model", "tcn", "portfolio runs train \"quantum_portfolio\"")]:
        bad = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
        bad.setdefault(table, {})[key] = value
        with pytest.raises(ConfigError) as error:
            portfolio.load(bad, "x.toml")
        assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_the_runs_weight_check_catches_the_seeds_broken_cap_and_the_baselines_keep_it():
    from trading_jax.runs.portfolio import baseline_weights, check_weights

    mask = np.ones((2, 4), bool)
    broken = np.asarray(seed_constraints(jnp.array([[0.7, 0.1, 0.1, 0.1]] * 2), 0.3))
    with pytest.raises(AssertionError, match="above the cap 0.3"):
        check_weights(broken, mask, 0.3, "seed rule")
    cov = np.stack([np.diag([0.0001, 0.04, 0.04, 0.04])] * 2)  # one asset far calmer: inverse vol wants 87% in it
    for name in ("equal_weight", "inverse_volatility"):
        check_weights(baseline_weights(name, cov, mask, 0.3), mask, 0.3, name)
    np.testing.assert_allclose(baseline_weights("inverse_volatility", cov, mask, 0.3)[0], [0.3, 0.7 / 3, 0.7 / 3, 0.7 / 3],
                               rtol=1e-5)


def test_the_results_say_plainly_whether_the_network_beats_equal_weight():
    from trading_jax.runs.portfolio import verdict

    above, around, below = ({"mean": m, "ci95_low": m - 0.1, "ci95_high": m + 0.1, "n": 5, "nonfinite": 0}
                            for m in (0.5, 0.0, -0.5))
    assert "beats equal weight" in verdict(above, above) and "no evidence" not in verdict(above, above)
    assert "no evidence that the network beats equal weight" in verdict(above, around)  # the market's noise decides
    assert "no evidence" in verdict(around, above)
    assert "does worse" in verdict(below, below)
