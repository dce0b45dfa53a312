"""Exports as registered model versions on an MLflow store (trading_jax.export.versioning)."""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from trading_jax.export import versioning  # noqa: E402
from trading_jax.export.versioning import download_export, list_versions, log_export  # noqa: E402

WEIGHTS = bytes(range(256)) * 8  # binary, every byte value


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test works in its own tmp_path: the default ./mlruns and temporary folders land there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def make_export(root: Path, name: str = "tcn_btc", commit: str = "abc1234") -> Path:
    folder = root / name
    (folder / "graphs").mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps({"format": "trading-jax-export", "format_version": 1, "name": name, "kind": "predictor"})
    )
    metadata = {
        "package_version": "0.1.0",
        "jax_version": "0.10.0",
        "git_commit": commit,
        "created": "2025-06-01T12:00:00+00:00",
        "training_config": {
            "model": {"name": "tcn", "channels": [16, 32], "dropout": 0.1},
            "optimizer": {"lr": 0.001, "schedule": {"kind": "cosine", "warmup": 100}},
            "seed": 0,
            "weird key!": "x" * 7000,
        },
        "metrics": {"val_loss": 0.25, "sharpe": 1.5, "sortino": float("nan"), "calmar": None},
        "data": {"source": "btc_1h.csv", "range": ["2020-01-01", "2024-01-01"], "fingerprint": "sha256:feed"},
    }
    (folder / "metadata.json").write_text(json.dumps(metadata))  # json writes NaN as the literal NaN
    (folder / "weights.safetensors").write_bytes(WEIGHTS)
    (folder / "graphs" / "model.stablehlo").write_bytes(b"\x00module @main\n\xff")
    return folder


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def store(tmp_path) -> str:
    return (tmp_path / "store").as_uri()


def test_logging_twice_registers_versions_1_and_2_that_download_byte_identical(tmp_path, store):
    export = make_export(tmp_path / "exports")

    first = log_export(export, tracking_uri=store)
    second = log_export(export, tracking_uri=store)

    assert (first["model_name"], first["version"], second["version"]) == ("tcn_btc", 1, 2)
    assert first["tracking_uri"] == store and first["run_id"] != second["run_id"]
    assert first["artifact_uri"].endswith("/export")
    v1 = download_export("tcn_btc", version=1, tracking_uri=store, dst=tmp_path / "v1")
    assert v1 == tmp_path / "v1"
    assert files(v1) == files(export)
    latest = download_export("tcn_btc", tracking_uri=store)  # a temporary folder (inside tmp_path here)
    assert tmp_path in latest.parents and files(latest) == files(export)
    assert [v["version"] for v in list_versions("tcn_btc", tracking_uri=store)] == [1, 2]


def test_latest_is_the_newest_version(tmp_path, store):
    log_export(make_export(tmp_path / "a", commit="1111111"), tracking_uri=store)
    log_export(make_export(tmp_path / "b", commit="2222222"), tracking_uri=store)

    latest = download_export("tcn_btc", "latest", tracking_uri=store, dst=tmp_path / "latest")

    assert json.loads((latest / "metadata.json").read_text())["git_commit"] == "2222222"


def test_params_metrics_and_tags_are_on_the_run_and_nan_is_only_named(tmp_path, store):
    from mlflow import MlflowClient

    info = log_export(make_export(tmp_path), tracking_uri=store, run_name="nightly")

    run = MlflowClient(tracking_uri=store).get_run(info["run_id"])
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["model.name"] == "tcn" and params["model.channels"] == "[16, 32]"
    assert params["optimizer.schedule.warmup"] == "100" and params["optimizer.lr"] == "0.001"
    assert params["kind"] == "predictor" and params["git_commit"] == "abc1234"
    assert params["data.source"] == "btc_1h.csv" and params["data.fingerprint"] == "sha256:feed"
    assert params["package_version"] == "0.1.0" and params["jax_version"] == "0.10.0"
    assert params["weird key_"] == "x" * 6000  # key sanitised, value cut to MLflow's limit
    assert metrics == {"val_loss": 0.25, "sharpe": 1.5}
    assert all(math.isfinite(v) for v in metrics.values())
    assert set(tags["non_finite_metrics"].split(",")) == {"sortino", "calmar"}
    assert tags["format_version"] == "1" and tags["data.range"] == '["2020-01-01", "2024-01-01"]'
    assert tags["mlflow.runName"] == "nightly" and tags["mlflow.source.git.commit"] == "abc1234"
    assert run.info.status == "FINISHED"


def test_the_version_says_its_kind_and_git_commit(tmp_path, store):
    log_export(make_export(tmp_path), tracking_uri=store, model_name="btc_model")

    (version,) = list_versions("btc_model", tracking_uri=store)

    assert version["version"] == 1 and version["git_commit"] == "abc1234" and version["kind"] == "predictor"
    assert version["run_id"] and version["created"].startswith("20")
    assert "predictor" in version["description"] and "abc1234" in version["description"]


def test_the_default_store_is_mlruns_in_the_working_directory(tmp_path):
    export = make_export(tmp_path / "exports")

    info = log_export(export)

    assert info["tracking_uri"] == (tmp_path / "mlruns").as_uri()
    assert (tmp_path / "mlruns").is_dir()
    assert files(download_export("tcn_btc", 1, dst=tmp_path / "back")) == files(export)


def test_without_mlflow_an_export_is_refused_with_the_install_hint(tmp_path, monkeypatch):
    export = make_export(tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow", None)

    with pytest.raises(RuntimeError, match=r"pip install 'trading-jax\[mlflow\]'"):
        log_export(export)


def test_a_missing_folder_is_a_one_line_error_naming_it(tmp_path, store):
    with pytest.raises(ValueError, match="does not exist") as err:
        log_export(tmp_path / "nope", tracking_uri=store)
    assert "nope" in str(err.value) and "\n" not in str(err.value)


def test_a_folder_without_manifest_or_metadata_is_not_an_export(tmp_path, store):
    export = make_export(tmp_path)
    (export / "metadata.json").unlink()
    with pytest.raises(ValueError, match="has no metadata.json"):
        log_export(export, tracking_uri=store)
    (export / "manifest.json").unlink()
    with pytest.raises(ValueError, match="has no manifest.json"):
        log_export(export, tracking_uri=store)
    assert not (tmp_path / "store").exists()  # nothing was logged


def test_invalid_json_and_a_foreign_manifest_are_refused(tmp_path, store):
    export = make_export(tmp_path)
    (export / "manifest.json").write_text('{"format": "onnx-bundle", "name": "x"}')
    with pytest.raises(ValueError, match="format 'onnx-bundle'"):
        log_export(export, tracking_uri=store)
    (export / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json is not valid JSON"):
        log_export(export, tracking_uri=store)


def test_an_unknown_model_names_the_registered_ones(tmp_path, store):
    log_export(make_export(tmp_path), tracking_uri=store)

    with pytest.raises(ValueError, match="no registered model 'eth_model'.*registered: tcn_btc"):
        download_export("eth_model", tracking_uri=store)
    with pytest.raises(ValueError, match="no registered model"):
        list_versions("eth_model", tracking_uri=store)


def test_an_unknown_version_names_the_known_versions(tmp_path, store):
    log_export(make_export(tmp_path), tracking_uri=store)

    with pytest.raises(ValueError, match=r"no version 7; versions: 1 \(or 'latest'\)"):
        download_export("tcn_btc", version=7, tracking_uri=store, dst=tmp_path / "v7")
    with pytest.raises(ValueError, match="no version or alias 'champion'"):
        download_export("tcn_btc", version="champion", tracking_uri=store)
    assert not (tmp_path / "v7").exists()


def test_reading_a_store_that_does_not_exist_does_not_create_it(tmp_path):
    with pytest.raises(ValueError, match="no MLflow store at"):
        list_versions("tcn_btc")
    assert not (tmp_path / "mlruns").exists()


def test_an_unreachable_server_fails_fast_with_one_line_naming_it(tmp_path):
    export = make_export(tmp_path)
    start = time.monotonic()

    with pytest.raises(RuntimeError, match=r"http://127\.0\.0\.1:9") as err:
        log_export(export, tracking_uri="http://127.0.0.1:9")

    assert time.monotonic() - start < 15
    assert "\n" not in str(err.value)


def test_a_call_leaves_the_environment_as_it_was(tmp_path, store, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)

    log_export(make_export(tmp_path), tracking_uri=store)

    assert "MLFLOW_ALLOW_FILE_STORE" not in versioning.os.environ
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in versioning.os.environ
