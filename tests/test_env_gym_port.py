"""The Gymnasium port of the trading env (the Stable-Baselines3 peer of benchmarks/ppo.py) is a faithful port:
it passes Gymnasium's env checker, and from a fixed start and action sequence its observations, rewards and
episode ends equal the NumPy reference's and the JAX environment's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gymnasium")

from gymnasium import spaces  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

from trading_jax.data.types import Bars  # noqa: E402
from trading_jax.envs.market import make_market  # noqa: E402
from trading_jax.envs.reference.gym_trading import PARAM_FIELDS, GymTradingEnv  # noqa: E402
from trading_jax.envs.reference.trading import TradingEnvNumpy  # noqa: E402
from trading_jax.envs.trading import make_trading  # noqa: E402
from market_fixtures import random_walk_market  # noqa: E402

WINDOW, LENGTH = 4, 6
SETTINGS = dict(fee_rate=1e-3, slippage=1e-4, max_position=1.5, max_hold=4, eta=0.1)
CASES = [  # action_mode, reward, n_assets, expected action space
    ("discrete", "pnl", 1, spaces.Discrete),
    ("discrete", "seed003", 3, spaces.MultiDiscrete),
    ("continuous", "differential_sharpe", 1, spaces.Box),
    ("continuous", "log_return", 3, spaces.Box),
    ("position_hold", "seed003", 1, spaces.Box),
]


def small_market(n_assets: int):
    """3 paths x 40 bars of a NumPy random walk (see `market_fixtures`)."""
    return random_walk_market(n_assets, seed=11 + n_assets)


def build(action_mode, reward, n_assets):
    env, params = make_trading(market=small_market(n_assets), window=WINDOW, episode_length=LENGTH,
                               action_mode=action_mode, reward=reward, **SETTINGS)
    return env, params, GymTradingEnv.from_jax(env, params)


def action_sequence(gym_env, steps: int, seed: int):
    """Actions drawn from the port's own space (partly outside a Box, to exercise the clipping)."""
    space = gym_env.action_space
    rng = np.random.default_rng(seed)
    if isinstance(space, spaces.Discrete):
        return [int(a) for a in rng.integers(0, 3, steps)]
    if isinstance(space, spaces.MultiDiscrete):
        return list(rng.integers(0, 3, (steps, len(space.nvec))))
    return list(rng.uniform(space.low - 0.2, space.high + 0.2, (steps,) + space.shape).astype(np.float32))


@pytest.mark.filterwarnings("ignore:.*A Box observation space m")  # unbounded, as the JAX env's observation space
@pytest.mark.parametrize("action_mode,reward,n_assets,space", CASES)
def test_the_port_passes_gymnasiums_env_checker_with_our_spaces(action_mode, reward, n_assets, space):
    env, params, gym_env = build(action_mode, reward, n_assets)
    check_env(gym_env, skip_render_check=True)
    assert isinstance(gym_env.action_space, space)
    assert gym_env.observation_space.shape == (env.obs_size,)
    assert gym_env.observation_space.dtype == np.float32


def test_reset_with_a_seed_draws_the_start_reproducibly_and_options_pick_it():
    _, _, gym_env = build("discrete", "pnl", 1)
    starts = {tuple(gym_env.reset(seed=s)[1].values()) for s in range(20)}
    assert len(starts) > 3
    assert all(0 <= p < 3 and WINDOW - 1 <= t < 40 - LENGTH for p, t in starts)
    np.testing.assert_array_equal(gym_env.reset(seed=5)[0], gym_env.reset(seed=5)[0])
    assert gym_env.reset(options={"path": 2, "t0": 7})[1] == {"path": 2, "t": 7}


@pytest.mark.parametrize("action_mode,reward,n_assets,space", CASES)
def test_from_a_fixed_start_the_port_equals_the_numpy_reference_and_the_jax_env(action_mode, reward, n_assets,
                                                                                 space):
    env, params, gym_env = build(action_mode, reward, n_assets)
    ref = TradingEnvNumpy(params.market, window=WINDOW, episode_length=LENGTH, action_mode=action_mode,
                          reward=reward, **{f: getattr(params, f) for f in PARAM_FIELDS})
    path, t0 = 1, 9
    actions = action_sequence(gym_env, LENGTH, seed=CASES.index((action_mode, reward, n_assets, space)))

    # the JAX env started at (path, t0): a fresh reset state moved to the chosen start
    _, state = env.reset(jax.random.key(0), params)
    state = state.replace(path=jnp.int32(path), t=jnp.int32(t0))
    obs_jax0 = env._observe(params.market, state.path, state.t, state.units, state.equity, state.time,
                            params.initial_equity)

    obs, info = gym_env.reset(options={"path": path, "t0": t0})
    assert obs.dtype == np.float32 and gym_env.observation_space.contains(obs)
    np.testing.assert_allclose(obs, ref.reset(path=path, t0=t0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(obs, obs_jax0, rtol=1e-4, atol=1e-5)

    for s, a in enumerate(actions):
        where = f"{action_mode}/{reward}/N={n_assets} step {s}"
        obs, reward_g, term, trunc, info = gym_env.step(a)
        r_obs, r_rew, r_term, r_trunc, _ = ref.step(a)
        # the port is the reference, cast to float32
        np.testing.assert_allclose(obs, r_obs, rtol=1e-6, atol=1e-7, err_msg=where)
        assert (reward_g, term, trunc) == (r_rew, r_term, r_trunc), where

        _, state, j_rew, j_term, j_trunc, j_info = env.step(jax.random.key(s + 1), state, jnp.asarray(a), params)
        np.testing.assert_allclose(j_info["final_observation"], obs, rtol=1e-4, atol=1e-5, err_msg=where)
        np.testing.assert_allclose(float(j_rew), reward_g, rtol=2e-3, atol=2e-5, err_msg=where)
        assert (bool(j_term), bool(j_trunc)) == (term, trunc), where
        np.testing.assert_allclose(float(j_info["equity"]), info["equity"], rtol=1e-5, atol=0.2, err_msg=where)
    assert trunc and s == LENGTH - 1  # the whole episode ran to truncation


def test_ruin_terminates_the_port_like_the_jax_env():
    # 3x leverage on a market that falls 30% in one bar: equity drops below half the initial equity
    c = np.array([[100.0], [100.0], [100.0], [70.0], [70.0]])
    bars = Bars(c, c + 1, c - 1, c, np.full_like(c, 1e3))
    market = make_market(bars, spread=np.full_like(c, 1e-4))
    env, params = make_trading(market=market, window=2, episode_length=3, max_position=3.0)
    gym_env = GymTradingEnv.from_jax(env, params)
    gym_env.reset(options={"path": 0, "t0": 1})
    gym_env.step(2)
    _, _, terminated, truncated, info = gym_env.step(2)
    assert terminated and not truncated and info["equity"] <= 0.5 * params.initial_equity
    _, state = env.reset(jax.random.key(0), params)
    state = state.replace(path=jnp.int32(0), t=jnp.int32(1))
    _, state, *_ = env.step(jax.random.key(1), state, 2, params)
    _, _, _, j_term, j_trunc, _ = env.step(jax.random.key(2), state, 2, params)
    assert bool(j_term) and not bool(j_trunc)
