"""Ensembles: members trained in one vmapped call (seeds, bootstrap resamples, hyperparameter grids),
heterogeneous groups of architectures, and the rules that combine their predictions (seed 002).

    trainer = make_ensemble_trainer(make_trainer(config, data), members=8, diversity="bootstrap", bootstrap_key=key_b)
    result = trading_jax.loop.fit(trainer, key)              # checkpoints, exact resume
    probs = predict_members([EnsembleGroup.from_result("tcn", config, result), lstm_group], x)   # [M, n, C]
    pred, conf = confidence_weighted(probs, weights)
    act = confidence_mask(conf, 0.6) & agreement_filter(member_directions(probs), 0.7).mask

RL agents (seed 003): a Thompson-sampling ensemble over agents, of one algorithm or several mixed:

    members, policy_fn = mix_agents([(ppo_agents, ppo_policy_fn), (sac_agents, sac_policy_fn)], env, env_params,
                                    names=("ppo", "sac"))
    table = summarize_comparison(compare_agents(env, env_params, members, policy_fn, key, 200,
                                                val_key=val_key, n_val_episodes=50))   # rows ppo_0, ..., sac_2

Names are imported lazily, so `import trading_jax.ensemble` does not pull in JAX or Flax until used.
"""

from trading_jax._lazy import lazy_exports

_EXPORTS = {
    # members: vmapped training and predictions
    "DIVERSITY": "members", "bootstrap_indices": "members", "make_ensemble_trainer": "members",
    "EnsembleGroup": "members", "predict_members": "members", "member_names": "members",
    # convolutions as matmuls (dense under vmap on CPU)
    "matmul_convolutions": "conv", "with_matmul_convolutions": "conv", "default_conv": "conv",
    # combination rules
    "check_weights": "combine", "normalize_weights": "combine", "weighted_average": "combine",
    "RollingState": "combine", "Rolling": "combine", "rolling_performance": "combine", "rolling_mean": "combine",
    "performance_weights": "combine", "causal_weights": "combine", "member_outcomes": "combine",
    "member_confidence": "combine", "confidence_weighted": "combine",
    "member_directions": "combine", "Agreement": "combine", "agreement_filter": "combine",
    "confidence_mask": "combine", "abstain": "combine",
    "prediction_spread": "combine", "Uncertainty": "combine", "classification_uncertainty": "combine",
    # RL agents: Thompson ensemble, FinRL's Sharpe pick, agents of several algorithms
    "EnsembleResult": "agents", "episode_keys": "agents", "member_returns": "agents",
    "evaluate_ensemble": "agents", "thompson_state_from_returns": "agents", "thompson_replay": "agents", "sharpe_ratios": "agents",
    "pick_by_sharpe": "agents", "compare_agents": "agents", "summarize_comparison": "agents",
    "MixedPolicyFn": "agents", "mix_agents": "agents",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
