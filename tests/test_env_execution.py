"""The optimal-execution environment (seed 000) on its simple book (`book="simple"`): book model, accounting,
timing, rewards, the NumPy reference. The modelled book is tested in test_env_execution_modelled.py."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.wrappers.purerl import FlattenObservationWrapper, LogWrapper

from trading_jax.data.types import Bars
from trading_jax.envs import make
from trading_jax.envs import orderbook as ob
from trading_jax.envs.execution import ACTION_NAMES, OBS_NAMES, make_execution
from trading_jax.envs.market import make_market
from trading_jax.envs.reference.execution import ExecutionReference, params_to_dict

H_SMALL, L_SMALL = 8, 3
draw_noise = jax.jit(ob.draw_noise, static_argnums=1)


def _leaf(x, shape):
    x = np.asarray(x)
    x = x.astype(np.float32) if np.issubdtype(x.dtype, np.floating) else x.astype(np.int32)
    return jnp.asarray(np.broadcast_to(x, shape))  # strong dtypes: one compilation per shape


def batched(params, n, **overrides):
    """`params` with every leaf broadcast to `[n, ...]`, then `overrides` (`[n]` or scalars) replaced."""
    out = jax.tree.map(lambda x: _leaf(x, (n,) + np.shape(x)), params)
    return out.replace(**{k: _leaf(v, (n,)) for k, v in overrides.items()})


def rollout_fn(env, n_steps):
    """jit(vmap) rollout WITHOUT auto-reset: `(key [B], params [B], actions [B, n]) -> (obs0, (obs, r, done, info))`."""

    def rollout(key, params, actions):
        k0, k = jax.random.split(key)
        obs0, s = env.reset(k0, params)

        def body(s, inp):
            obs, s2, r, d, info = env.step_env(inp[0], s, inp[1], params)
            return s2, (obs, r, d, info)

        _, out = jax.lax.scan(body, s, (jax.random.split(k, n_steps), actions))
        return obs0, out

    return jax.jit(jax.vmap(rollout))


def acts(a):
    """Actions as a strong int32 array (a weakly typed one would compile the rollout again)."""
    return jnp.asarray(np.asarray(a, np.int32))


def zero_noise(n_levels, fill=0.5):
    z = jnp.zeros((), jnp.float32)
    return ob.BookNoise(z, z, z, z, jnp.zeros(n_levels), jnp.zeros(n_levels), z, jnp.asarray(fill, jnp.float32))


@pytest.fixture(scope="module")
def small():
    env, params = make_execution(book="simple", horizon=H_SMALL, n_levels=L_SMALL)
    return env, params, jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))


N_LONG, H_LONG = 512, 20


@pytest.fixture(scope="module")
def long_rollout():
    """H = 20 env and a jit(vmap) rollout over the whole horizon for N_LONG envs (one compilation, shared)."""
    env, params = make_execution(book="simple", horizon=H_LONG, n_levels=5)
    return env, params, rollout_fn(env, H_LONG)


def _toy_market(n_bars=40, seed=0, close=None):
    """One asset of `n_bars` bars (a random walk around 50 unless `close` is given)."""
    if close is None:
        close = 50.0 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 2e-3, n_bars)))
    bars = Bars(close, close, close, close, np.full(len(close), 1e4))
    return make_market(Bars(*(b[:, None] for b in bars)), spread=1e-4)


@pytest.fixture(scope="module")
def replay():
    """A replay env on a toy market, its rollout for one env, and the episode start of key 11."""
    env, params = make_execution(book="simple", horizon=H_SMALL, n_levels=L_SMALL, mid_source="replay", market=_toy_market())
    key = jax.random.PRNGKey(11)
    t0 = int(jax.jit(env.reset)(jax.random.split(key)[0], params)[1].t0)
    return env, params, rollout_fn(env, H_SMALL), key, t0


# --------------------------------------------------------------------------- API


def test_registry_builds_the_env_with_seed_000_actions_and_observation():
    env, params = make("execution", horizon=10, side="sell")
    assert env.num_actions == 10 == len(ACTION_NAMES)
    assert env.observation_space(params).shape == (18,) == (len(OBS_NAMES),)
    assert float(params.side) == -1.0 and params.max_steps_in_episode == 10
    assert env.book == "modelled"  # the default; the simple book is kept for comparison


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(side="hold"), "side"),
        (dict(mid_source="book"), "mid_source"),
        (dict(mid_source="replay"), "market"),
        (dict(horizon=0), "horizon"),
        (dict(quantity=-1.0), "quantity"),
        (dict(volatility=0.1), "unknown keyword"),
        (dict(book="lobster"), "book"),
        (dict(flow="bvc"), "data="),
        (dict(volume_profile=[1.0, 2.0]), "volume_profile"),
    ],
)
def test_bad_settings_raise_value_errors_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_execution(**kwargs)


def test_gymnax_log_and_flatten_wrappers_run_and_log_completed_episodes(small):
    env, params, _, _ = small
    wrapped = LogWrapper(FlattenObservationWrapper(env))
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    obs, state = jax.vmap(wrapped.reset, in_axes=(0, None))(keys, params)
    step = jax.jit(jax.vmap(wrapped.step, in_axes=(0, 0, 0, None)))
    for t in range(H_SMALL):
        keys = jax.random.split(jax.random.PRNGKey(t + 1), 4)
        obs, state, reward, term, trunc, info = step(keys, state, jnp.full(4, 7), params)
    assert obs.shape == (4, len(OBS_NAMES)) and np.isfinite(np.asarray(obs)).all()
    assert bool(term.all()) and not bool(trunc.any())  # TWAP completes exactly at the horizon
    assert bool(info["returned_episode"].all())
    np.testing.assert_array_equal(info["returned_episode_lengths"], H_SMALL)


# --------------------------------------------------------------------------- reference equivalence


def test_jit_vmap_step_equals_the_numpy_reference_on_random_actions_including_auto_resets(small):
    env, params, reset, step = small
    n, n_steps = 6, 3 * H_SMALL
    sides = np.array([1, -1, 1, -1, 1, -1], np.float32)
    bparams = batched(params, n, side=sides, quantity=np.linspace(500, 4000, n), alpha=np.linspace(0, 0.6, n))
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    obs, state = reset(keys, bparams)
    refs = [
        ExecutionReference(H_SMALL, L_SMALL, params_to_dict(jax.tree.map(lambda x: x[b], bparams))) for b in range(n)
    ]
    ref_states = []
    for b in range(n):
        o, s = refs[b].reset(draw_noise(jax.random.split(keys[b])[0], L_SMALL))
        np.testing.assert_allclose(obs[b], o, rtol=1e-4, atol=1e-4)
        ref_states.append(s)
    actions = np.random.default_rng(0).integers(0, 10, size=(n_steps, n))
    n_done = 0
    for t in range(n_steps):
        keys = jax.random.split(jax.random.PRNGKey(100 + t), n)
        obs, state, reward, term, trunc, info = step(keys, state, jnp.asarray(actions[t]), bparams)
        for b in range(n):
            k_step, k_reset = jax.random.split(keys[b])
            o, s, r, done, inf = refs[b].step(ref_states[b], actions[t, b], draw_noise(k_step, L_SMALL))
            np.testing.assert_allclose(info["final_observation"][b], o, rtol=1e-3, atol=2e-3)
            np.testing.assert_allclose(reward[b], r, rtol=1e-4, atol=1e-4)
            assert bool(term[b]) == done
            for name in ("executed", "remaining", "fill_qty", "fill_price"):
                np.testing.assert_allclose(info[name][b], inf[name], rtol=1e-5, atol=1e-3, err_msg=name)
            for name in ("shortfall_bps", "vwap_slippage_bps"):  # float32 prices near 100: ~0.005 bps resolution
                np.testing.assert_allclose(info[name][b], inf[name], atol=2e-2, err_msg=name)
            assert int(info["order_kind"][b]) == inf["order_kind"]
            if done:
                n_done += 1
                o, s = refs[b].reset(draw_noise(jax.random.split(k_reset)[0], L_SMALL))
                np.testing.assert_allclose(obs[b], o, rtol=1e-4, atol=1e-4)
            ref_states[b] = s
    assert n_done >= n  # every env finished at least one episode, so auto-reset was compared too


def test_replay_mid_source_equals_the_numpy_reference(replay):
    env, params, rollout, key, t0 = replay
    actions = np.random.default_rng(1).integers(0, 10, size=(1, H_SMALL))
    obs0, (obs, rew, done, info) = rollout(key[None], batched(params, 1), acts(actions))
    market = params.market
    ref = ExecutionReference(
        H_SMALL, L_SMALL, params_to_dict(params), log_returns=np.asarray(market.log_return[0, :, 0]),
        close=np.asarray(market.close[0, :, 0]),
    )
    k0, k = jax.random.split(key)
    o, s = ref.reset(draw_noise(jax.random.split(k0)[0], L_SMALL), t0=t0)
    np.testing.assert_allclose(obs0[0], o, rtol=1e-4, atol=1e-4)
    for t, kt in enumerate(jax.random.split(k, H_SMALL)):
        o, s, r, d, inf = ref.step(s, actions[0, t], draw_noise(kt, L_SMALL))
        np.testing.assert_allclose(obs[0, t], o, rtol=1e-3, atol=2e-3)
        np.testing.assert_allclose(rew[0, t], r, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(info["fill_price"][0, t], inf["fill_price"], rtol=1e-6)
        np.testing.assert_allclose(info["shortfall_bps"][0, t], inf["shortfall_bps"], atol=1e-3)


# --------------------------------------------------------------------------- accounting, determinism, timing


@pytest.fixture(scope="module")
def random_episodes(long_rollout):
    """N_LONG episodes of uniformly random actions, half buys and half sells."""
    env, params, rollout = long_rollout
    actions = acts(np.random.default_rng(1).integers(0, 10, (N_LONG, H_LONG)))
    bparams = batched(params, N_LONG, side=np.where(np.arange(N_LONG) % 2, 1.0, -1.0))
    keys = jax.random.split(jax.random.PRNGKey(2), N_LONG)
    return params, rollout, (keys, bparams, actions), rollout(keys, bparams, actions)


def test_executed_plus_remaining_equals_the_parent_order_at_every_step(random_episodes):
    params, _, _, (_, (obs, rew, done, info)) = random_episodes
    executed, remaining = np.asarray(info["executed"]), np.asarray(info["remaining"])
    np.testing.assert_allclose(executed + remaining, float(params.quantity), rtol=1e-6)
    assert (remaining >= 0).all() and (np.diff(executed, axis=1) >= 0).all()
    before = np.concatenate([np.full((N_LONG, 1), float(params.quantity)), remaining[:, :-1]], axis=1)
    assert (np.asarray(info["fill_qty"]) <= before).all()
    assert np.isfinite(np.asarray(obs)).all() and np.isfinite(np.asarray(rew)).all()
    # the observation's executed / remaining fractions are the same accounting
    np.testing.assert_allclose(obs[..., 4] + obs[..., 6], 1.0, rtol=1e-6)


def test_same_key_gives_the_same_episode_and_another_key_another(random_episodes):
    _, rollout, (keys, bparams, actions), first = random_episodes
    again = rollout(keys, bparams, actions)
    for x, y in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
        np.testing.assert_array_equal(x, y)
    other = rollout(jax.random.split(jax.random.PRNGKey(3), N_LONG), bparams, actions)
    assert not np.array_equal(first[1][0], other[1][0])


def test_the_remainder_is_forced_at_the_horizon_for_every_constant_action(long_rollout):
    env, params, rollout = long_rollout
    action = np.arange(N_LONG) % 10  # env i repeats action i mod 10 (0 = all-wait)
    actions = acts(np.repeat(action[:, None], H_LONG, axis=1))
    _, (_, _, done, info) = rollout(jax.random.split(jax.random.PRNGKey(4), N_LONG), batched(params, N_LONG), actions)
    np.testing.assert_allclose(info["executed"][:, -1], float(params.quantity), rtol=1e-6)
    assert bool(done[:, -1].all())
    np.testing.assert_array_equal(np.asarray(info["forced"][:, -1]), np.asarray(info["remaining"][:, -2]) > 0)
    wait = action == 0  # all-wait: nothing before the horizon, everything at the forced step
    assert float(np.abs(info["executed"][wait, :-1]).max()) == 0.0 and bool(info["forced"][wait, -1].all())
    twap = action == 7  # a TWAP slice at the last step is the remainder anyway
    np.testing.assert_allclose(info["fill_qty"][twap], float(params.quantity) / H_LONG, rtol=1e-4)


def test_no_look_ahead_later_prices_change_neither_earlier_observations_nor_earlier_fills(replay):
    env, params, rollout, key, t0 = replay
    actions = acts(np.full((1, H_SMALL), 1))  # market 10% every step: a fill at every step

    def run(close):
        market = _toy_market(close=close)
        obs0, (obs, _, _, info) = rollout(key[None], batched(params.replace(market=market), 1), actions)
        return np.concatenate([obs0, obs[0]]), np.asarray(info["fill_price"][0])

    base = np.asarray(params.market.close[0, :, 0], np.float64)
    obs_a, fills_a = run(base)
    k = 3
    shocked = base.copy()
    shocked[t0 + k + 2 :] *= 1.05  # every bar after the fill bar of decision k
    obs_b, fills_b = run(shocked)
    np.testing.assert_array_equal(obs_a[: k + 2], obs_b[: k + 2])  # obs_0 .. obs_{k+1}
    np.testing.assert_array_equal(fills_a[: k + 1], fills_b[: k + 1])  # fills of decisions 0 .. k
    assert (fills_b[k + 1 :] > fills_a[k + 1 :] * 1.04).all()  # (the shock does reach the later fills)
    shocked = base.copy()
    shocked[t0 + k + 1 :] *= 1.05  # from the fill bar of decision k on
    obs_c, fills_c = run(shocked)
    np.testing.assert_array_equal(obs_a[: k + 1], obs_c[: k + 1])  # the decision at k saw nothing of it ...
    assert fills_c[k] > fills_a[k] * 1.04  # ... and its order fills at bar t0 + k + 1, after the decision


def test_replay_mid_follows_the_bar_closes_when_the_agent_only_waits(replay):
    env, params, rollout, key, t0 = replay
    _, (_, _, _, info) = rollout(key[None], batched(params, 1), acts(np.zeros((1, H_SMALL))))
    close = np.asarray(params.market.close[0, :, 0])
    np.testing.assert_allclose(info["mid"][0, :-1], close[t0 + 1 : t0 + H_SMALL], rtol=1e-6)
    assert float(params.sigma) == pytest.approx(np.std(np.asarray(params.market.log_return)[0, 1:, 0]), rel=1e-5)


# --------------------------------------------------------------------------- hand-worked rewards and costs

HAND = dict(
    mid0=100.0, sigma=1e-3, alpha=0.0, spread_mean=1e-3, spread_vol=0.0, depth0=100.0, depth_slope=0.0,
    depth_vol=0.0, volume=1000.0, volume_vol=0.0, volume_curvature=0.0, eta=1.0, gamma=0.5, p_fill=0.4,
)


def hand_state(env, params):
    """Reset, then a book with zero shocks: imbalance 0, spread 10 bps, depth 100 at every level."""
    _, state = env.reset_env(jax.random.PRNGKey(0), params)
    return state.replace(book=ob.init_book(zero_noise(env.n_levels), params))


def test_hand_worked_forced_market_order_walks_past_the_best_level_with_sqrt_impact():
    env, params = make_execution(book="simple", horizon=1, n_levels=2, side="buy", quantity=1100.0, **HAND)
    obs, state, reward, done, info = env.transition(hand_state(env, params), 0, params, zero_noise(2))
    # 100 shares at the ask (half spread 5 bps), 1000 beyond it: temp = (1000/1100) * 1 * 1e-3 * sqrt(1000/1000)
    temp = 1000 / 1100 * 1e-3
    perm = 0.5 * 1e-3 * math.sqrt(1100 / 1000)
    assert float(info["fill_price"]) == pytest.approx(100 * (1 + 5e-4 + temp), rel=1e-6)
    assert float(info["shortfall_bps"]) == pytest.approx((5e-4 + temp) * 1e4, rel=1e-4)
    assert float(info["mid"]) == pytest.approx(100 * math.exp(perm), rel=1e-6)
    expected = -100 * (5e-4 + temp) - 50 * (temp + perm) - 0.01 * 1 / 1 + 10
    assert float(reward) == pytest.approx(expected, rel=1e-5)
    assert bool(done) and bool(info["forced"]) and float(state.remaining) == 0.0


def test_hand_worked_sell_aggressive_limit_takes_only_the_best_bid():
    env, params = make_execution(book="simple", horizon=4, n_levels=2, side="sell", quantity=300.0, **HAND)
    obs, state, reward, done, info = env.transition(hand_state(env, params), 4, params, zero_noise(2))
    assert float(info["fill_qty"]) == pytest.approx(100.0)  # depth at the best bid
    assert float(info["fill_price"]) == pytest.approx(99.95, rel=1e-6)  # no temporary impact
    perm = 0.5 * 1e-3 * math.sqrt(100 / 1000)
    assert float(info["mid"]) == pytest.approx(100 * math.exp(-perm), rel=1e-6)  # a sale pushes the mid down
    expected = -100 * (5e-4 * 100 / 300) - 50 * perm - 0.01 * 1 / 4
    assert float(reward) == pytest.approx(expected, rel=1e-5)
    assert float(state.remaining) == pytest.approx(200.0) and not bool(done)
    assert float(obs[6]) == pytest.approx(1 / 3, rel=1e-6) and float(obs[4]) == pytest.approx(2 / 3, rel=1e-6)
    # predicted impact of selling the other 200 now: 100 beyond the best bid, plus the permanent step
    temp_rest = 100 / 200 * 1e-3 * math.sqrt(100 / 1000)
    perm_rest = 0.5e-3 * (math.sqrt(300 / 1000) - math.sqrt(100 / 1000))
    assert float(obs[13]) == pytest.approx((temp_rest + perm_rest) / 1e-3, rel=1e-5)


def test_hand_worked_passive_buy_earns_the_half_spread_when_filled_and_pays_only_time_when_not():
    env, params = make_execution(book="simple", horizon=4, n_levels=2, side="buy", quantity=400.0, abs_slippage=0.0, **HAND)
    state = hand_state(env, params)
    perm = 0.5 * 1e-3 * math.sqrt(100 / 1000)
    # p = 0.4 * (1 - 0.8 * 0) = 0.4: a uniform draw of 0.3 fills the TWAP slice of 100 at the bid
    _, s, reward, _, info = env.transition(state, 5, params, zero_noise(2, fill=0.3))
    assert float(info["fill_qty"]) == pytest.approx(100.0)
    assert float(info["fill_price"]) == pytest.approx(99.95, rel=1e-6)
    assert float(info["shortfall_bps"]) == pytest.approx(-5.0, rel=1e-4)
    assert float(reward) == pytest.approx(-100 * (-5e-4 * 0.25) - 50 * perm - 0.01 / 4, rel=1e-5)
    _, s, reward, _, info = env.transition(state, 5, params, zero_noise(2, fill=0.5))
    assert float(info["fill_qty"]) == 0.0 and float(reward) == pytest.approx(-0.01 / 4, rel=1e-6)
    # the iceberg (2 x TWAP) needs the draw below 0.4 * 0.5 = 0.2 and moves no mid
    _, s, reward, _, info = env.transition(state, 6, params, zero_noise(2, fill=0.15))
    assert float(info["fill_qty"]) == pytest.approx(200.0) and float(info["mid"]) == pytest.approx(100.0, rel=1e-7)
    _, s, _, _, info = env.transition(state, 6, params, zero_noise(2, fill=0.25))
    assert float(info["fill_qty"]) == 0.0


def test_hand_worked_order_sizes_of_the_ten_actions():
    env, params = make_execution(book="simple", horizon=4, n_levels=2, quantity=400.0, **{**HAND, "volume_curvature": 1.0})
    state = hand_state(env, params)
    state = state.replace(book=state.book._replace(z=jnp.arctanh(jnp.float32(0.5))))  # I_t = 0.5
    w = [1 + (u * u - 1 / 3) for u in (-0.75, -0.25, 0.25, 0.75)]  # U-shaped profile, c = 1
    expected = [0, 40, 100, 200, 400, 100, 200, 100, 400 * w[0] / sum(w), 100 * 1.5]
    sizes = [float(env.order(state, a, params)[1]) for a in range(10)]
    np.testing.assert_allclose(sizes, expected, rtol=1e-5)
    sell = params.replace(side=-1.0)
    assert float(env.order(state, 9, sell)[1]) == pytest.approx(50.0)  # a seller trades less into buying pressure
    last = state.replace(time=jnp.int32(3))
    assert [int(k) for k in env.order(last, 5, params)] == [1, 400]  # forced: market order for the remainder


# --------------------------------------------------------------------------- statistical properties


def test_one_market_order_for_the_whole_parent_costs_more_than_twap_when_impact_is_large(long_rollout):
    env, params, rollout = long_rollout
    p = batched(params, N_LONG, eta=2.0, alpha=0.0)
    keys = jax.random.split(jax.random.PRNGKey(21), N_LONG)  # the same market for both strategies
    _, (_, _, _, wait) = rollout(keys, p, acts(np.zeros((N_LONG, H_LONG))))  # one forced market order
    _, (_, _, _, twap) = rollout(keys, p, acts(np.full((N_LONG, H_LONG), 7)))
    diff = np.asarray(wait["shortfall_bps"][:, -1] - twap["shortfall_bps"][:, -1])
    se = diff.std(ddof=1) / math.sqrt(N_LONG)
    assert diff.mean() > 5 * se and diff.mean() > 10.0  # bps
    assert float(np.abs(twap["temporary_impact_bps"]).max()) < float(wait["temporary_impact_bps"][:, -1].min())


@pytest.mark.parametrize("alpha", [0.3, 0.0])
def test_imbalance_predicts_the_next_mid_return_only_when_alpha_is_positive(long_rollout, alpha):
    env, params, rollout = long_rollout
    keys = jax.random.split(jax.random.PRNGKey(31), N_LONG)
    obs0, (obs, _, _, info) = rollout(keys, batched(params, N_LONG, alpha=alpha), acts(np.zeros((N_LONG, H_LONG))))
    all_obs = np.concatenate([np.asarray(obs0)[:, None], np.asarray(obs)], axis=1)
    mids = np.concatenate([np.full((N_LONG, 1), 100.0), np.asarray(info["mid"], np.float64)], axis=1)
    n = H_LONG - 1  # the last step is the forced trade, with impact
    imb = all_obs[:, :n, 1].ravel()  # I_t
    ret = np.diff(np.log(mids), axis=1)[:, :n].ravel()  # r_{t+1} = log(mid_{t+1} / mid_t)
    corr = np.corrcoef(imb, ret)[0, 1]
    tol = 4 / math.sqrt(imb.size)
    if alpha > 0:
        sd_i = np.sqrt(np.mean(np.tanh(np.random.default_rng(0).normal(size=200_000)) ** 2))  # sd of tanh(N(0,1))
        theory = alpha * sd_i / math.sqrt(alpha**2 * sd_i**2 + 1)
        assert corr > 0.1 and abs(corr - theory) < tol
    else:
        assert abs(corr) < tol


@pytest.mark.parametrize("action, factor", [(5, 1.0), (6, 0.5)])
def test_passive_fill_rate_matches_the_fill_probability_model(long_rollout, action, factor):
    env, params, rollout = long_rollout
    side = np.where(np.arange(N_LONG) % 2, 1.0, -1.0)
    keys = jax.random.split(jax.random.PRNGKey(41), N_LONG)
    _, (obs, _, _, info) = rollout(keys, batched(params, N_LONG, side=side), acts(np.full((N_LONG, H_LONG), action)))
    n = H_LONG - 1  # every decision before the forced last one rests a passive order
    filled = (np.asarray(info["fill_qty"][:, :n]) > 0).ravel()
    imb_next = np.asarray(obs[:, :n, 1])  # I_{t+1}: the book the order rested in
    side_b = np.broadcast_to(side[:, None], imb_next.shape)
    prob = (factor * np.clip(0.4 * (1 - side_b * 0.8 * imb_next), 0, 1)).ravel()
    se = math.sqrt(np.sum(prob * (1 - prob))) / prob.size
    assert abs(filled.mean() - prob.mean()) < 4 * se
    adverse = (side_b * imb_next < 0).ravel()  # the other side dominates: our passive order is hit more often
    assert filled[adverse].mean() > filled[~adverse].mean() + 0.2 * factor
