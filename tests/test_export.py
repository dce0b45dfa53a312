"""Exports run without our model code, agree with the model, survive old runs, and serve over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trading_jax.export import export_run, load_exported
from trading_jax.export.artifact import write_export
from trading_jax.export.engine import InferenceEngine, InputError
from trading_jax.export.pipeline import export_pipeline, reference_inputs
from trading_jax.export.rebuild import apply_from_model_json
from trading_jax.export.runtime import ExportError, load_onnx
from trading_jax.runs import load_experiment, run_experiment

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["tcn", "lstm", "lstm_attention", "cnn_lstm", "cnn_lstm_hybrid", "price_transformer",
            "direction_transformer", "multitask"]
T, F = 12, 6

SUPERVISED = """
name = "tiny_export"
seeds = [0, 1]
[data]
synthetic_bars = 700
synthetic_assets = 2
window = 12
horizon = 3
[train]
model = "tcn"
preset = "tiny"
task = "regression"
epochs = 1
batch_size = 64
"""

ENSEMBLE = """
algorithm = "ensemble"
name = "tiny_ensemble"
seeds = [0]
[data]
synthetic_bars = 700
synthetic_assets = 1
window = 12
horizon = 3
[train]
model = "tcn"
preset = "tiny"
task = "classification"
epochs = 1
batch_size = 64
[train.model_kwargs]
n_classes = 3
[ensemble]
members = 2
diversity = "seed"
"""

PPO = """
algorithm = "ppo"
name = "tiny_policy"
seeds = [0]
[env]
name = "execution"
[env.kwargs]
horizon = 10
[ppo]
num_envs = 4
num_steps = 10
total_timesteps = 120
update_epochs = 1
minibatch_size = 20
network_preset = "tiny"
[evaluation]
episodes = 4
metric = "shortfall_bps"
lower_is_better = true
every_updates = 3
"""


def _train(tmp, text, name):
    path = tmp / f"{name}.toml"
    path.write_text(text)
    out = tmp / name
    summary, ok = run_experiment(load_experiment(path), out, show_progress=False)
    assert ok, summary
    return out


@pytest.fixture(scope="module")  # the suite runs with --dist loadfile: this module's tests share one worker
def runs(tmp_path_factory):
    """Tiny trained runs (supervised through `trading-jax train`, ensemble, PPO) and their exports. (The RL
    ensemble's export is tested on the run of tests/test_runs_ppo_ensemble.py.)"""
    import contextlib
    import io

    from trading_jax.cli import main

    tmp = tmp_path_factory.mktemp("export")
    (tmp / "supervised.toml").write_text(SUPERVISED)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the main job's way: `trading-jax train` then its export
        assert main(["train", str(tmp / "supervised.toml"), "--out", str(tmp / "supervised"), "--quiet"]) == 0
    out = {"supervised": tmp / "supervised", "train_printed": printed.getvalue()}
    out.update({name: _train(tmp, text, name) for name, text in (("ensemble", ENSEMBLE), ("ppo", PPO))})
    for name in ("supervised", "ensemble", "ppo"):
        export_run(out[name], tmp / f"{name}_export", onnx=name != "ensemble")
        out[f"{name}_export"] = tmp / f"{name}_export"
    out["tmp"] = tmp
    return out


def _family_export(tmp, family):
    from trading_jax.models import create

    kwargs = {"n_classes": 3} if family == "direction_transformer" else {}
    task = "classification" if family == "direction_transformer" else "multitask" if family == "multitask" else \
        "regression"
    model_json = {"algorithm": "supervised", "factory": family, "preset": "tiny", "kwargs": kwargs, "task": task}
    x = np.asarray(jax.random.normal(jax.random.key(1), (37, T, F)), np.float32)
    params = create(family, preset="tiny", **kwargs).init(jax.random.key(0), jnp.asarray(x[:1]), train=False)["params"]
    apply = apply_from_model_json(model_json, {"target_scale": 0.01})
    write_export(tmp / family, name=family, kind="predictor", apply=apply, params=params,
                 inputs={"x": ((T, F), "float32")}, reference=[x], model_json=model_json, metadata={},
                 onnx=False, overwrite=True)  # ONNX of every family: tests/test_export_onnx.py
    return x, {k: np.asarray(v) for k, v in jax.jit(apply)(params, jnp.asarray(x)).items()}


LOADER = textwrap.dedent("""
    import sys, json, numpy as np
    import importlib.abc

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.startswith(("trading_jax.models", "trading_jax.training", "trading_jax.rl", "flax")):
                raise ImportError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Block())
    from trading_jax.export.runtime import load_exported
    jobs = json.loads(sys.argv[1])
    for folder, inputs, out in jobs:
        model = load_exported(folder)
        arrays = [np.load(p) for p in inputs]
        result = {}
        for rows in (1, 37):
            for k, v in model(*[a[:rows] for a in arrays]).items():
                result[f"{k}@{rows}"] = v
        np.savez(out, **result)
    assert not any(m.startswith(("trading_jax.models", "trading_jax.training", "flax")) for m in sys.modules)
    print("ok")
""")


def test_every_model_family_a_policy_and_an_ensemble_load_in_a_process_without_the_model_code(runs, tmp_path):
    jobs, expected = [], {}
    for family in FAMILIES:
        x, want = _family_export(tmp_path, family)
        np.save(tmp_path / f"{family}_x.npy", x)
        jobs.append([str(tmp_path / family), [str(tmp_path / f"{family}_x.npy")], str(tmp_path / f"{family}.npz")])
        expected[family] = ([x], want, None)
    for name in ("supervised", "ensemble", "ppo"):
        folder = runs[f"{name}_export"]
        model = load_exported(folder)
        shape = model.inputs[0]["shape"][1:]
        inputs = [np.asarray(jax.random.normal(jax.random.key(2), (37, *shape)), np.float32)]
        paths = []
        for i, array in enumerate(inputs):
            np.save(tmp_path / f"{name}_{i}.npy", array)
            paths.append(str(tmp_path / f"{name}_{i}.npy"))
        jobs.append([str(folder), paths, str(tmp_path / f"{name}.npz")])
        expected[name] = (inputs, None, folder)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", LOADER, json.dumps(jobs)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
    for name, (inputs, want, folder) in expected.items():
        got = np.load(tmp_path / f"{name}.npz")
        if want is None:  # a trained run: the reference is the model rebuilt from its model.json and weights
            from trading_jax.export.rebuild import load_params

            _, model_json, features, params = load_params(folder)
            apply = jax.jit(apply_from_model_json(model_json, features))
            want = {k: np.asarray(v) for k, v in apply(params, *[jnp.asarray(a) for a in inputs]).items()}
        export_dir = Path(folder) if folder is not None else tmp_path / name
        served = [o["name"] for o in json.loads((export_dir / "manifest.json").read_text())["outputs"]]
        assert set(want) - set(served) == ({"log_vars"} if name == "multitask" else set())  # not a prediction
        for rows in (1, 37):  # the model run at batch 37 (batch 1 compiles another program: rounding-level changes)
            for key, value in ((k, want[k]) for k in served):
                np.testing.assert_allclose(got[f"{key}@{rows}"], value[:rows], atol=1e-6, rtol=1e-6,
                                           err_msg=f"{name} {key} at batch {rows}")


def test_onnx_runtime_agrees_with_jax_for_a_trained_model_and_a_policy(runs):
    for name in ("supervised", "ppo"):
        model = load_exported(runs[f"{name}_export"])
        assert model.manifest["onnx"].get("file") == "model.onnx", model.manifest["onnx"]
        _, run = load_onnx(model.path)
        shape = model.inputs[0]["shape"][1:]
        x = np.asarray(jax.random.normal(jax.random.key(3), (37, *shape)), np.float32)
        got, want = run(x), model(x)
        for key, value in got.items():
            np.testing.assert_allclose(value, want[key], atol=1e-5, rtol=0, err_msg=f"{name} {key}")


def test_an_export_records_where_it_came_from_and_how_it_was_checked(runs):
    model = load_exported(runs["supervised_export"])
    meta = model.metadata
    assert meta["algorithm"] == "supervised" and meta["seed"] in (0, 1)
    assert meta["jax_version"] == jax.__version__ and "training_config" in meta
    assert meta["data"]["split"]["test"][1] > meta["data"]["split"]["test"][0]
    assert np.isfinite(meta["metrics"]["val.best_loss"]) and "test.model.ic" in meta["metrics"]
    assert model.features["window"] == 12 and len(model.features["normalizer"]["mean"]) == model.features["n_features"]
    assert model.manifest["stablehlo"]["platforms"] == ["cpu", "cuda"]
    assert model.manifest["checks"]["stablehlo_max_abs_error"] <= 1e-5
    assert "test split" in meta["reference_inputs"]


def test_a_run_from_before_features_json_still_exports_with_the_same_normaliser(runs, tmp_path):
    import shutil

    old = tmp_path / "old_run"
    shutil.copytree(runs["supervised"], old)
    saved = json.loads((old / "features.json").read_text())
    (old / "features.json").unlink()
    export_run(old, tmp_path / "old_export", onnx=False)
    rebuilt = load_exported(tmp_path / "old_export").features
    np.testing.assert_allclose(rebuilt["normalizer"]["mean"], saved["normalizer"]["mean"], rtol=1e-6)
    np.testing.assert_allclose(rebuilt["normalizer"]["var"], saved["normalizer"]["var"], rtol=1e-6)


def test_export_refuses_bad_folders_and_seeds_in_one_line(runs, tmp_path):
    with pytest.raises(ExportError, match="no such run folder"):
        export_run(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(ExportError, match="has no seed 7; its seeds are 0, 1"):
        export_run(runs["supervised"], tmp_path / "out", seed=7)
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_run(runs["supervised"], runs["supervised_export"])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an export; refusing"):
        export_run(runs["supervised"], tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"
    with pytest.raises(ExportError, match="not a trading-jax export|missing"):
        load_exported(tmp_path / "notes")


def test_quantised_exports_are_smaller_and_report_how_much_they_change_the_outputs(runs, tmp_path):
    full = load_exported(runs["ensemble_export"])
    for precision, limit in (("bfloat16", 0.6), ("int8", 0.35)):
        export_run(runs["ensemble"], tmp_path / precision, precision=precision, onnx=False)
        q = load_exported(tmp_path / precision)
        assert q.manifest["weights"]["bytes"] < limit * full.manifest["weights"]["bytes"]
        report = q.manifest["checks"]["precision"]["probs"]
        assert report["argmax_agreement"] >= 0.9 and report["max_abs_diff"] < 0.05
        scores = q.manifest["checks"]["precision_test_scores"]  # held-out accuracy of both, same samples
        assert scores["split"] == "test" and abs(scores[precision]["accuracy"] - scores["float32"]["accuracy"]) < 0.05
        x = np.asarray(jax.random.normal(jax.random.key(4), (8, 12, full.features["n_features"])), np.float32)
        assert np.abs(q(x)["probs"] - full(x)["probs"]).max() < 0.05


def test_the_pipeline_turns_raw_bars_into_an_execution_plan_with_clear_input_errors(runs, tmp_path):
    out = tmp_path / "pipeline"
    manifest = export_pipeline(runs["ensemble_export"], runs["ppo_export"], out, lookback=90)
    assert manifest["checks"]["feature_skew"]["max_abs_diff_normalised"] < 0.5
    engine = InferenceEngine(out, buckets=(4,))
    ins, _ = reference_inputs(engine.model.features, 90, rows=6)
    names = [s["name"] for s in engine.model.inputs]
    request = dict(zip(names, ins))
    result = engine.predict(request)
    assert result["probs"].shape == (len(ins[0]), 1, 3) and set(np.unique(result["side"])) <= {-1, 0, 1}
    assert np.all((result["side"] != 0) | (result["action"] == 0))  # no trade, no order
    np.testing.assert_allclose(result["probs"].sum(-1), 1.0, atol=1e-5)
    one = engine.predict({k: v[:1] for k, v in request.items()})
    np.testing.assert_allclose(one["probs"], result["probs"][:1], atol=1e-6)
    compiled = engine.model._call._cache_size()
    engine.predict({k: v[:3] for k, v in request.items()})  # padded to the warm bucket 4
    assert engine.model._call._cache_size() == compiled
    bad = dict(request, bars=request["bars"].copy())
    bad["bars"][0, 10, 0, 3] = np.nan
    with pytest.raises(InputError, match=r"'bars' has a NaN or infinite value at row 0"):
        engine.predict(bad)
    with pytest.raises(InputError, match="has 40 bars; the pipeline needs the last 90"):
        engine.predict({k: v[:, -40:] if k in ("bars", "calendar") else v for k, v in request.items()})
    if "calendar" in request:
        stamps = (1.7e9 + 3600 * np.arange(90))[None].repeat(len(ins[0]), 0)
        stamps[0, 50] = stamps[0, 49]
        with pytest.raises(InputError, match="row 0 is not increasing at bar 50"):
            engine.predict({k: v for k, v in request.items() if k != "calendar"} | {"timestamps": stamps})
        fresh = InferenceEngine(engine.model, buckets=(1,), warm=False, max_staleness=3600)
        with pytest.raises(InputError, match="the data feed is stale"):
            fresh.predict({k: v[:1] for k, v in request.items() if k != "calendar"} | {"timestamps": stamps[1:2]})
    with pytest.raises(InputError, match="unknown input 'price'"):
        engine.predict(dict(request, price=1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_http_server_answers_a_real_client_and_turns_bad_requests_into_4xx(runs):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    port = _free_port()
    folder = runs["supervised_export"]
    server = subprocess.Popen([sys.executable, "-m", "trading_jax.cli", "serve", str(folder), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        for _ in range(240):
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("the server did not start: " + server.stdout.read()[-2000:])
        model = load_exported(folder)
        x = np.asarray(jax.random.normal(jax.random.key(5), (3, 12, model.features["n_features"])), np.float32)
        reply = client.post("/predict", json={"inputs": {"x": x.tolist()}})
        assert reply.status_code == 200
        np.testing.assert_allclose(reply.json()["outputs"]["prediction"], model(x)["prediction"], atol=1e-6)
        assert client.get("/version").json()["name"] == "tiny_export"
        bad_json = client.post("/predict", content=b"{inputs: [")
        assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]
        wrong = client.post("/predict", json={"inputs": {"x": [[1.0, 2.0]]}})
        assert wrong.status_code == 422 and "expected [B, 12," in wrong.json()["error"]
        nan = client.post("/predict", content=json.dumps({"inputs": {"x": np.full((1, 12, x.shape[-1]), np.nan).tolist()}}))
        assert nan.status_code == 422 and "NaN or infinite" in nan.json()["error"]
        assert client.post("/act", json={"inputs": {"x": x.tolist()}}).status_code == 404
        for reply in (bad_json, wrong, nan):
            assert "Traceback" not in reply.text
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_an_export_round_trips_through_an_mlflow_file_store(runs, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from trading_jax.export.versioning import download_export, log_export

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    record = log_export(runs["ppo_export"], tracking_uri=uri)
    assert record["version"] == 1 and record["model_name"] == "tiny_policy"
    folder = download_export("tiny_policy", tracking_uri=uri, dst=tmp_path / "restored")
    obs = np.asarray(jax.random.normal(jax.random.key(6), (5, 18)), np.float32)
    np.testing.assert_array_equal(load_exported(folder)(obs)["action"], load_exported(runs["ppo_export"])(obs)["action"])


def test_train_ends_with_an_export_and_says_how_to_serve_it(runs, tmp_path, capsys):
    from trading_jax.cli import main

    assert f"trading-jax serve {runs['supervised'] / 'export'}" in runs["train_printed"]
    assert "load_exported(" in runs["train_printed"]
    assert load_exported(runs["supervised"] / "export").kind == "predictor"
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "x")]) == 1
    assert "no such run folder" in capsys.readouterr().err


def test_the_engine_batches_concurrent_requests_and_answers_each_with_its_own_rows(runs):
    engine = InferenceEngine(runs["supervised_export"], buckets=(1, 8))
    width = engine.model.features["n_features"]
    xs = [np.asarray(jax.random.normal(jax.random.key(10 + k), (k + 1, 12, width)), np.float32) for k in range(5)]
    futures = [engine.submit({"x": x}) for x in xs]
    bad = engine.submit({"x": np.full((1, 12, width), np.inf)})
    for x, future in zip(xs, futures):
        np.testing.assert_allclose(future.result(timeout=60)["prediction"], engine.model(x)["prediction"], atol=1e-6)
    with pytest.raises(InputError, match="NaN or infinite"):
        bad.result(timeout=60)
    assert engine.requests == 5
