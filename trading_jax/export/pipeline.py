"""Seed 000's real-time inference pipeline as ONE exported function (`export_pipeline`).

    market data -> feature pipeline -> model ensemble -> signal aggregation -> execution plan

composed from two exports: a price predictor (an ensemble of direction classifiers, or a single predictor)
with its `features.json`, and a PPO policy trained on the execution environment. Inputs, per request row:

    bars      [B, L, A, 5]  raw OHLCV (open, high, low, close, volume) of the A assets the predictor was
                            trained on (features.json "symbols"), the last L = `lookback` bars, oldest first
    calendar  [B, L, 2]     day number since 1970-01-01 and second of the day of each bar (only when the
                            features include the time-of-day / day-of-week encodings; the inference engine
                            makes it from timestamps)
    book      [B, A, 18]    the execution environment's observation of each asset's order book and parent
                            order (trading_jax.envs.execution); its "side" entry (14) is set by the signal

and the function computes, all inside one jitted program:

1. the features of every bar (`FeaturePipeline` with the training config), normalised with the statistics
   fitted on the training split, and the model input: the last `window` rows;
2. the predictor's outputs for each asset;
3. the signal: for class probabilities, the direction (argmax: down / flat / up), the expected direction
   `p_up - p_down` and the confidence (max probability); the side is the direction where the confidence is
   at least `threshold` and (for an ensemble) at least `min_agreement` of the members agree, else 0 (no
   trade). For a return forecast, the side is its sign where `|forecast| > dead_band`;
4. the execution plan: the policy's greedy action for the book with that side (action 0, wait, where the
   side is 0) and its action probabilities.

**Lookback and skew.** Indicators with exponential memory (EMA, MACD, RSI) computed over the last L bars
differ slightly from the same indicators computed over the whole history in training. `lookback` defaults
to warm-up + window + `SETTLE` bars; the export measures the difference on a synthetic market (max abs
difference of the normalised model inputs) and records it in the manifest ("checks.feature_skew").
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.envs.execution import OBS_NAMES
from trading_jax.export.runtime import ExportError

__all__ = ["export_pipeline", "build_pipeline", "SETTLE", "BOOK_SIZE", "SIDE_INDEX"]

SETTLE = 256
BOOK_SIZE, SIDE_INDEX = len(OBS_NAMES), OBS_NAMES.index("side")  # the execution env's observation


def _feature_pipeline(features: dict):
    from trading_jax.features.pipeline import FeatureConfig, FeaturePipeline

    config = {k: tuple(v) if isinstance(v, list) else v for k, v in features["feature_config"].items()}
    return FeaturePipeline(FeatureConfig(**config))


def model_inputs(features: dict, lookback: int):
    """`inputs(bars [L, A, 5], calendar [L, 2] or None) -> [A, window, F]` normalised model inputs (traceable)."""
    from trading_jax.data.types import Bars
    from trading_jax.features.normalize import NormalizerState, normalizer_apply
    from trading_jax.features.pipeline import calendar_encoding

    fp = _feature_pipeline(features)
    state = NormalizerState(**{k: jnp.asarray(v, jnp.float32) for k, v in features["normalizer"].items()})
    window, clip, eps = int(features["window"]), features.get("clip"), float(features.get("eps", 1e-8))

    def inputs(bars, calendar):
        panel = Bars(*(bars[..., i] for i in range(5)))
        temporal = None if calendar is None else calendar_encoding(calendar, jnp).astype(bars.dtype)
        raw = fp.compute_traced(panel, temporal)  # [L, A, F]
        z = normalizer_apply(state, raw[-window:], clip=clip, eps=eps)
        return jnp.swapaxes(z, 0, 1)  # [A, window, F]

    return inputs


def build_pipeline(predictor_dir, policy_dir, *, lookback: int | None = None, threshold: float = 0.5,
                   min_agreement: float = 0.5, dead_band: float = 0.0):
    """`(apply, params, spec)`: the pipeline function `apply(params, bars, [calendar], book) -> dict` of
    `[B, A, ...]` outputs, its float32 params and a description (inputs, features, model JSON)."""
    from trading_jax.export.rebuild import apply_from_model_json, load_params

    _, predictor_json, features, predictor_params = load_params(predictor_dir)
    _, policy_json, _, policy_params = load_params(policy_dir)
    if not features:
        raise ExportError(f"{predictor_dir}: has no features.json; export a supervised or ensemble run (the "
                          "pipeline starts from raw bars)")
    if predictor_json.get("algorithm") not in ("supervised", "ensemble"):
        raise ExportError(f"{predictor_dir}: is a {predictor_json.get('algorithm')} export; the pipeline's first "
                          "model must be a predictor or an ensemble")
    if policy_json.get("algorithm") != "ppo" or policy_json.get("env") != "execution":
        raise ExportError(f"{policy_dir}: the pipeline's execution plan needs a PPO policy of the execution "
                          f"environment (this export is {policy_json.get('algorithm')} on {policy_json.get('env')})")
    need = int(features["warmup"]) + int(features["window"])
    lookback = need + SETTLE if lookback is None else int(lookback)
    if lookback < need:
        raise ExportError(f"lookback {lookback}: the predictor needs at least {need} bars (warm-up "
                          f"{features['warmup']} + window {features['window']})")
    predictor = apply_from_model_json(predictor_json, features)
    policy = apply_from_model_json(policy_json)
    inputs_of = model_inputs(features, lookback)
    n_assets, temporal = len(features["symbols"]), bool(features.get("temporal"))
    window, n_features = int(features["window"]), int(features["n_features"])

    def run(params, bars, calendar, book):
        batch = bars.shape[0]
        x = jax.vmap(inputs_of)(bars, calendar) if temporal else jax.vmap(lambda b: inputs_of(b, None))(bars)
        pred = predictor(params["predictor"], x.reshape((batch * n_assets, window, n_features)))
        out = {}
        if "probs" in pred:
            probs = pred["probs"]
            direction = jnp.argmax(probs, -1).astype(jnp.int32) - 1
            confidence = probs.max(-1)
            agreement = pred.get("agreement", jnp.ones_like(confidence))
            side = jnp.where((confidence >= threshold) & (agreement >= min_agreement), direction, 0)
            out.update(probs=probs, signal=probs[:, 2] - probs[:, 0], confidence=confidence, agreement=agreement)
        else:
            forecast = pred["forecast_return"].reshape(batch * n_assets, -1)[:, 0]
            side = jnp.where(jnp.abs(forecast) > dead_band, jnp.sign(forecast), 0).astype(jnp.int32)
            out.update(forecast_return=forecast, signal=forecast)
        obs = book.reshape((batch * n_assets, BOOK_SIZE))
        obs = obs.at[:, SIDE_INDEX].set(jnp.where(side != 0, side, 1).astype(obs.dtype))
        plan = policy(params["policy"], obs)
        out.update(side=side.astype(jnp.int32), action=jnp.where(side != 0, plan["action"], 0).astype(jnp.int32))
        if "action_probs" in plan:
            out["action_probs"] = plan["action_probs"]
        return {k: v.reshape((batch, n_assets) + v.shape[1:]) for k, v in out.items()}

    if temporal:
        def apply(params, bars, calendar, book):
            return run(params, bars, calendar, book)
    else:
        def apply(params, bars, book):
            return run(params, bars, None, book)

    shapes = {"bars": ((lookback, n_assets, 5), "float32")}
    if temporal:
        shapes["calendar"] = ((lookback, 2), "float32")
    shapes["book"] = ((n_assets, BOOK_SIZE), "float32")
    spec = {"inputs": shapes, "features": dict(features, lookback=lookback), "lookback": lookback,
            "model_json": {"algorithm": "pipeline", "predictor": predictor_json, "policy": policy_json,
                           "lookback": lookback, "threshold": threshold, "min_agreement": min_agreement,
                           "dead_band": dead_band}}
    return apply, {"predictor": predictor_params, "policy": policy_params}, spec


def reference_inputs(features: dict, lookback: int, rows: int = 64, seed: int = 0) -> tuple[list, dict]:
    """`(inputs in call order, skew check)`: `rows` windows of a synthetic market (and execution-env
    observations of random episodes) to check the exported pipeline on, and the max abs difference between
    the pipeline's model inputs and the same rows computed over the whole synthetic history."""
    from trading_jax.data.panels import builtin_market
    from trading_jax.envs import make
    from trading_jax.features.pipeline import calendar_parts

    n_assets, window = len(features["symbols"]), int(features["window"])
    total = lookback + rows
    bars, timestamps, _ = builtin_market(total, n_assets, seed)
    panel = np.stack([np.asarray(f, np.float32) for f in bars], axis=-1)  # [T, A, 5]
    parts = calendar_parts(timestamps).astype(np.float32)
    ends = np.arange(lookback, total + 1, max(1, rows // 16))[:rows]
    windows = np.stack([panel[e - lookback: e] for e in ends])
    calendars = np.stack([parts[e - lookback: e] for e in ends])
    env, env_params = make("execution")
    keys = jax.random.split(jax.random.key(seed), len(ends) * n_assets)
    obs = np.asarray(jax.vmap(lambda k: env.reset(k, env_params)[0])(keys)).reshape(len(ends), n_assets, BOOK_SIZE)
    inputs = [windows] + ([calendars] if features.get("temporal") else []) + [obs]
    # skew: the same model inputs computed over the whole history
    temporal = features.get("temporal")
    full = model_inputs(dict(features, window=total), total)
    whole = np.asarray(full(jnp.asarray(panel), jnp.asarray(parts) if temporal else None))  # [A, total, F]
    part = model_inputs(features, lookback)
    skew = 0.0
    for i, e in enumerate(ends):
        got = np.asarray(part(jnp.asarray(windows[i]), jnp.asarray(calendars[i]) if temporal else None))
        want = whole[:, e - window: e]
        ok = np.isfinite(want) & np.isfinite(got)
        skew = max(skew, float(np.max(np.abs(got - want)[ok])) if ok.any() else 0.0)
    return inputs, {"max_abs_diff_normalised": skew, "lookback": lookback,
                    "note": "model inputs over the last `lookback` bars vs over the whole history (synthetic market)"}


def export_pipeline(predictor_dir, policy_dir, out_dir, *, lookback: int | None = None, threshold: float = 0.5,
                    min_agreement: float = 0.5, dead_band: float = 0.0, precision: str = "float32",
                    onnx: bool = False, overwrite: bool = False, name: str | None = None) -> dict:
    """Export the seed-000 pipeline (module docstring) of a predictor export and a policy export; returns the
    manifest. ONNX is off by default (the feature code's scans are not all convertible)."""
    from trading_jax.export.artifact import write_export

    apply, params, spec = build_pipeline(predictor_dir, policy_dir, lookback=lookback, threshold=threshold,
                                         min_agreement=min_agreement, dead_band=dead_band)
    reference, skew = reference_inputs(spec["features"], spec["lookback"])
    meta = {}
    for role, path in (("predictor", predictor_dir), ("policy", policy_dir)):
        file = Path(path) / "metadata.json"
        meta[role] = json.loads(file.read_text()) if file.exists() else {}
    metadata = {"package_version": meta["predictor"].get("package_version"),
                "jax_version": jax.__version__, "git_commit": meta["predictor"].get("git_commit"),
                "training_config": {"predictor": meta["predictor"].get("training_config"),
                                    "policy": meta["policy"].get("training_config")},
                "metrics": {**{f"predictor.{k}": v for k, v in meta["predictor"].get("metrics", {}).items()},
                            **{f"policy.{k}": v for k, v in meta["policy"].get("metrics", {}).items()}},
                "data": meta["predictor"].get("data", {}), "components": {"predictor": str(predictor_dir),
                                                                          "policy": str(policy_dir)},
                "feature_skew": skew}
    docs = {"bars": "raw OHLCV [open, high, low, close, volume] of each asset, the last `lookback` bars",
            "calendar": "day number since 1970-01-01 and second of the day of each bar",
            "book": "execution-env observation per asset (trading_jax.envs.execution); entry 14 is set by the signal"}
    manifest = write_export(out_dir, name=name or f"{Path(predictor_dir).name}_pipeline", kind="pipeline", apply=apply,
                            params=params, inputs=spec["inputs"], reference=reference, model_json=spec["model_json"],
                            metadata=metadata, features=spec["features"], precision=precision, onnx=onnx,
                            overwrite=overwrite, input_docs={k: docs[k] for k in spec["inputs"]})
    manifest["checks"]["feature_skew"] = skew
    (Path(out_dir) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
