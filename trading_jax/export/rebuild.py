"""The apply function of an export from its `model.json` (the factory arguments), with our model code.

`model.json` is what makes the weights durable: with it and `weights.safetensors`, `apply_from_model_json`
rebuilds the computation in any JAX version that runs our models, e.g. to export again for a newer JAX
or to compose exports into the inference pipeline. Kinds:

* "supervised" (a predictor): `create(factory, preset, **kwargs)`, outputs the model's plus "probs" for
  class logits (and "direction_probs" for the multitask head) and "forecast_return" = the return head x the
  training target scale;
* "ensemble": groups of `members` copies of a model; outputs "member_probs" `[B, M, 3]`, their mean "probs",
  "direction" (-1, 0, +1), "agreement" (members voting for the mean's class) and "mutual_information";
* "ppo" (a policy): `trading_jax.rl.ppo.make_inference`, outputs "action" and the network's;
* "ppo_ensemble" (K policies): inputs `obs [B, O]` and `agent [B]` (which member acts: the caller's Thompson
  draw, or the validation Sharpe pick in the metadata), outputs that member's "action" (and
  "action_probs") and every member's: "member_actions" `[B, K]`, "member_values", "member_action_probs".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

__all__ = ["apply_from_model_json", "load_params", "ppo_config", "policy_model_json"]


def _kwargs(kwargs: Mapping) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(kwargs).items()}


def _predictor(model_json: Mapping, features: Mapping | None) -> Callable:
    from trading_jax.models import create

    model = create(model_json["factory"], preset=model_json.get("preset"), **_kwargs(model_json.get("kwargs", {})))
    scale = float((features or {}).get("target_scale", 1.0))
    task = model_json.get("task")

    def apply(params, x):
        out = dict(model.apply({"params": params}, x, train=False))
        for name, probs in (("logits", "probs"), ("direction_logits", "direction_probs")):
            if name in out:
                out[probs] = jax.nn.softmax(out[name], -1)
        head = "prediction" if "prediction" in out else "price" if "price" in out else None
        if head is not None and task in ("regression", "multitask"):
            out["forecast_return"] = out[head] * scale
        if "volatility" in out and task == "multitask":  # trained in the same units as the return
            out["forecast_volatility"] = out["volatility"] * scale
        return out

    return apply


def _ensemble(model_json: Mapping, features: Mapping | None) -> Callable:
    from trading_jax.ensemble.combine import classification_uncertainty
    from trading_jax.models import create

    groups = [(g["name"], create(g["factory"], preset=g.get("preset"), **_kwargs(g.get("kwargs", {}))), int(g["members"]))
              for g in model_json["groups"]]

    def apply(params, x):
        probs = []
        for name, model, members in groups:  # a loop, not vmap: jax2onnx cannot batch Flax convolutions
            for i in range(members):
                member = jax.tree.map(lambda a: a[i], params[name])
                probs.append(jax.nn.softmax(model.apply({"params": member}, x, train=False)["logits"], -1))
        member_probs = jnp.stack(probs)  # [M, B, 3]
        mean = member_probs.mean(0)
        vote = jnp.argmax(member_probs, -1) == jnp.argmax(mean, -1)[None]
        return {"member_probs": jnp.swapaxes(member_probs, 0, 1), "probs": mean,
                "direction": jnp.argmax(mean, -1).astype(jnp.int32) - 1, "agreement": vote.mean(0),
                "mutual_information": classification_uncertainty(member_probs).mutual_information}

    return apply


def policy_model_json(config, algorithm: str = "ppo", **extra) -> dict:
    """The `model.json` of a policy export from its `PPOConfig` (the inverse of `ppo_config`)."""
    return {"algorithm": algorithm, "factory": config.network_name, "preset": config.network_preset,
            "kwargs": dict(config.network_kwargs), "env": config.env, "env_kwargs": dict(config.env_kwargs),
            "policy": config.policy, "normalize_observations": config.normalize_observations,
            "obs_clip": config.obs_clip, **extra}


def ppo_config(model_json: Mapping):
    """The `PPOConfig` a policy export was trained with (the fields `make_inference` reads)."""
    from trading_jax.rl.ppo import PPOConfig

    return PPOConfig(env=model_json["env"], env_kwargs=dict(model_json.get("env_kwargs", {})),
                     network=model_json["factory"], network_preset=model_json.get("preset"),
                     network_kwargs=_kwargs(model_json.get("kwargs", {})), policy=model_json.get("policy", "auto"),
                     normalize_observations=bool(model_json.get("normalize_observations", True)),
                     obs_clip=float(model_json.get("obs_clip", 10.0)))


def _policy(model_json: Mapping, features: Mapping | None) -> Callable:
    from trading_jax.envs import make
    from trading_jax.rl.ppo import make_inference

    config = ppo_config(model_json)
    env, env_params = make(config.env, **dict(config.env_kwargs))
    infer = make_inference(config, env, env_params)

    def apply(params, obs):
        return infer(params["network"], params["obs_norm"], obs)

    return apply


def _policy_ensemble(model_json: Mapping, features: Mapping | None) -> Callable:
    single = _policy(model_json, features)
    members = int(model_json["members"])

    def apply(params, obs, agent):
        outs = []
        for k in range(members):  # a loop, not vmap (jax2onnx)
            outs.append(single(jax.tree.map(lambda a: a[k], params), obs))
        stacked = {key: jnp.stack([o[key] for o in outs], axis=1) for key in outs[0]}  # [B, K, ...]
        chosen = jnp.clip(agent.astype(jnp.int32), 0, members - 1)
        pick = lambda v: jnp.take_along_axis(v, chosen.reshape((-1,) + (1,) * (v.ndim - 1)), axis=1)[:, 0]
        out = {"action": pick(stacked["action"])}
        if "action_probs" in stacked:
            out["action_probs"] = pick(stacked["action_probs"])
        out.update({f"member_{key}s" if key in ("action", "value") else f"member_{key}": v
                    for key, v in stacked.items() if key in ("action", "value", "action_probs")})
        return out

    return apply


APPLY = {"supervised": _predictor, "ensemble": _ensemble, "ppo": _policy, "ppo_ensemble": _policy_ensemble}


def apply_from_model_json(model_json: Mapping[str, Any], features: Mapping | None = None) -> Callable:
    """`apply(params, *inputs) -> dict` of an export's computation (module docstring)."""
    algorithm = model_json.get("algorithm")
    if algorithm not in APPLY:
        raise ValueError(f"model.json: algorithm {algorithm!r} cannot be rebuilt (known: {', '.join(APPLY)})")
    return APPLY[algorithm](model_json, features)


def load_params(export_dir: str | Path):
    """`(manifest, model.json, features.json or None, float32 params)` of an export folder (quantised weights are
    decoded to float32)."""
    import json

    from safetensors.numpy import load_file

    from trading_jax.export.artifact import decode_weights
    from trading_jax.export.runtime import read_manifest

    path = Path(export_dir)
    manifest = read_manifest(path)
    model_json = json.loads((path / "model.json").read_text())
    features = json.loads((path / "features.json").read_text()) if (path / "features.json").exists() else None
    stored = load_file(str(path / manifest["weights"]["file"]))
    order = manifest["weights"]["order"]
    layout = [(k, "int8" if k + "::scale" in stored else "bf16" if str(stored[k].dtype) == "bfloat16" else "f32")
              for k in order if not k.endswith("::scale")]
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                          decode_weights([jnp.asarray(stored[k]) for k in order], layout))
    return manifest, model_json, features, params
