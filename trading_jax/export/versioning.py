"""Model versioning of exports on MLflow: one run per export, registered as a model version.

An export is a plain folder (`manifest.json`, `metadata.json`, weights, graphs, ...). `log_export`
puts it on an MLflow tracking store as one run and registers that run's copy of the folder as a new
version of a registered model; `download_export` brings a version's folder back for the loader and
`list_versions` lists what is registered. MLflow is optional (the `[mlflow]` extra, imported lazily
here): without it an export stays a plain folder.

What a run holds:

* params: the flattened `training_config` (nested keys joined with "."; lists and other non-strings
  JSON-dumped; values cut to MLflow's 6000 characters; keys reduced to the characters MLflow accepts,
  a clash getting a `_2`, `_3`, ... suffix), plus `kind`, `package_version`, `jax_version`,
  `git_commit`, `data.source` and `data.fingerprint` (those that are not null);
* metrics: the finite numbers of `metadata["metrics"]`, at step 0. NaN, inf, null (and anything that
  is not a number) are never logged as a number: their names go to the tag `non_finite_metrics`;
* tags: `format`, `format_version`, `kind`, `created`, `data.range` / `data.start` / `data.end` and
  MLflow's own `mlflow.source.git.commit`;
* artifacts: the whole export folder, under the artifact path `export`.

The registered model version (`model_name`, by default `manifest["name"]`) points at that `export`
artifact folder (`MlflowClient.create_model_version(name, source=<run artifact URI>/export,
run_id=...)`): no MLmodel file or MLflow 3 LoggedModel is needed for a folder that our own loader
reads; its description and tags (`kind`, `git_commit`, `format_version`) say what it is.

The store. `tracking_uri=None` means `$MLFLOW_TRACKING_URI` when set, else the folder `./mlruns` in
the current working directory as a `file:` URI: an embedded store, no server, holding both the runs and
the model registry. MLflow 3's own default (`sqlite:///mlflow.db`) needs SQLAlchemy and Alembic, which
`mlflow-skinny` does not install, so the folder store is the one that works everywhere. MLflow 3.x
keeps that store in "maintenance mode" and refuses it unless `MLFLOW_ALLOW_FILE_STORE=true`; the
functions here set that variable for the duration of their own calls on a `file:` store (the same
folder opens in the UI with `MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri ./mlruns`).
A plain path is taken as a folder store; `sqlite:///...` (with full `mlflow` installed) and
`http(s)://` servers work as MLflow makes them work. The registry is always the tracking URI.

Quiet and bounded. During a call MLflow's artifact progress bars are off, MLflow's own warnings go to
this module's logger at debug level, and HTTP requests are bounded unless you set the variables
yourself (`MLFLOW_HTTP_REQUEST_MAX_RETRIES` 3, `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR` 1,
`MLFLOW_HTTP_REQUEST_TIMEOUT` 60 s). The first request of each call is a probe without retries and with
a 10 s timeout, so an unreachable URI fails at once with one line naming it, instead of after MLflow's
default 7 retries with exponential backoff (minutes).

Errors are one line: `ValueError` for a bad export folder, an unknown model or version, or a folder
store that does not exist; `RuntimeError` when MLflow is missing, the URI cannot be reached, or MLflow
refuses an operation.

Example:
    >>> info = log_export("exports/tcn_btc")            # ./mlruns, registered model "tcn_btc"
    >>> info["version"]
    1
    >>> folder = download_export("tcn_btc", version="latest", dst="/tmp/tcn_btc_latest")
    >>> [v["version"] for v in list_versions("tcn_btc")]
    [1]
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import numbers
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlparse
from urllib.request import url2pathname

from trading_jax.export.runtime import read_json, read_manifest
from trading_jax.logging import get_logger

_log = get_logger(__name__)

ARTIFACT_PATH = "export"
DEFAULT_EXPERIMENT = "trading-jax"
MISSING_MLFLOW = (
    "MLflow is not installed: pip install 'trading-jax[mlflow]' (an export without --mlflow is a plain folder)"
)

# MLflow's limits (mlflow.utils.validation), restated so that nothing here depends on a private module.
_MAX_KEY = 250
_MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 8000
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_BAD_KEY_CHARS = re.compile(r"[^\w.\- /]")  # MLflow also allows ":" except on Windows: keep keys portable

# Bounds for HTTP stores, used unless the user set the variable: (name, value).
_HTTP_BOUNDS = (
    ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"),
    ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
    ("MLFLOW_HTTP_REQUEST_TIMEOUT", "60"),
)
_PROBE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


# ----------------------------------------------------------------------------------------------------------
# Public API


def log_export(
    export_dir: str | os.PathLike,
    tracking_uri: str | None = None,
    model_name: str | None = None,
    run_name: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
) -> dict:
    """Log an export folder as one MLflow run and register it as a new model version.

    Args:
        export_dir: the export folder (with `manifest.json` and `metadata.json`).
        tracking_uri: MLflow tracking (and registry) URI; None = `$MLFLOW_TRACKING_URI`, else the
            folder store `./mlruns` in the current directory. A plain path is a folder store.
        model_name: registered model name; None = the manifest's `name`.
        run_name: the MLflow run's name; None = `"<model_name>-<kind>"`.
        experiment: MLflow experiment (created if missing).

    Returns:
        `{"run_id", "model_name", "version" (int), "tracking_uri", "artifact_uri"}`, where
        `artifact_uri` is the URI of the export's copy on the store (the version's source).

    Raises:
        ValueError: the folder is missing, is not a trading-jax export, or its JSON is invalid.
        RuntimeError: MLflow is not installed, the URI cannot be reached, or MLflow refused an
            operation.
    """
    folder, manifest, metadata = read_export(export_dir)
    _mlflow()  # a missing MLflow is reported before anything else is done
    name = model_name if model_name is not None else manifest.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{folder / 'manifest.json'} has no model name: pass model_name (--model-name)")
    _check_model_name(name)
    kind = str(manifest.get("kind", "unknown"))
    params = _params(manifest, metadata)
    metrics, non_finite = _metrics(metadata.get("metrics"))
    tags = _run_tags(manifest, metadata, non_finite)
    git_commit = metadata.get("git_commit")

    uri = resolve_tracking_uri(tracking_uri)
    with _session(uri):
        client = _connect(uri)
        from mlflow.entities import Metric, Param

        with _mlflow_errors(uri, f"log {folder} to experiment {experiment!r}"):
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                experiment_id = client.create_experiment(experiment)
            elif exp.lifecycle_stage != "active":
                raise ValueError(
                    f"experiment {experiment!r} is deleted on {uri}: restore it or pass another experiment"
                )
            else:
                experiment_id = exp.experiment_id
            run = client.create_run(experiment_id, run_name=run_name or f"{name}-{kind}", tags=tags)
        run_id = run.info.run_id
        try:
            with _mlflow_errors(uri, f"log {folder} as run {run_id}"):
                items = [Param(k, v) for k, v in params.items()]
                for i in range(0, len(items), _PARAMS_PER_BATCH):
                    client.log_batch(run_id, params=items[i : i + _PARAMS_PER_BATCH])
                now = int(time.time() * 1000)
                items = [Metric(k, v, now, 0) for k, v in metrics.items()]
                for i in range(0, len(items), _METRICS_PER_BATCH):
                    client.log_batch(run_id, metrics=items[i : i + _METRICS_PER_BATCH])
                client.log_artifacts(run_id, str(folder), ARTIFACT_PATH)
        except BaseException:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
            raise
        with _mlflow_errors(uri, f"finish run {run_id}"):
            client.set_terminated(run_id, "FINISHED")
            source = f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_PATH}"
        with _mlflow_errors(uri, f"register run {run_id} as a version of model {name!r}"):
            _ensure_registered_model(client, name)
            version = client.create_model_version(
                name,
                source=source,
                run_id=run_id,
                tags=_version_tags(manifest, metadata),
                description=(
                    f"trading-jax {kind} export {name!r} (format {manifest.get('format_version')}), "
                    f"package {metadata.get('package_version')}, git commit {git_commit or 'unknown'}"
                ),
            )
    result = {
        "run_id": run_id,
        "model_name": name,
        "version": int(version.version),
        "tracking_uri": uri,
        "artifact_uri": source,
    }
    _log.info("logged %s as run %s, model %r version %d on %s", folder, run_id, name, result["version"], uri)
    return result


def download_export(
    model_name: str,
    version: int | str = "latest",
    tracking_uri: str | None = None,
    dst: str | os.PathLike | None = None,
) -> Path:
    """Download a registered model version's export folder, ready for the loader.

    Args:
        model_name: the registered model.
        version: a version number (int or digits), "latest" (the highest number), or an alias
            registered on MLflow (e.g. "champion").
        tracking_uri: as in `log_export`.
        dst: the folder to create (it must not exist or be empty); None = a new temporary folder.

    Returns:
        The folder holding the export's files (`manifest.json`, `metadata.json`, ...).

    Raises:
        ValueError: unknown model or version (the message names the known ones), `dst` not empty,
            or a folder store that does not exist.
        RuntimeError: MLflow is not installed, the URI cannot be reached, or the download failed.
    """
    _mlflow()
    uri = resolve_tracking_uri(tracking_uri)
    _require_store(uri)
    target = None
    if dst is not None:
        target = Path(dst).expanduser().resolve()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ValueError(f"download destination {target} exists and is not an empty folder: pass a new path")
    with _session(uri):
        client = _connect(uri)
        mv = _find_version(client, uri, model_name, version)
        number = int(mv.version)
        with _mlflow_errors(uri, f"find the files of model {model_name!r} version {number}"):
            source = client.get_model_version_download_uri(model_name, str(number))
        from mlflow.artifacts import download_artifacts

        if target is None:
            staging = Path(tempfile.mkdtemp(prefix=f"{_safe_prefix(model_name)}-v{number}-"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            with _mlflow_errors(uri, f"download model {model_name!r} version {number} from {source}"):
                local = Path(download_artifacts(artifact_uri=source, dst_path=str(staging), tracking_uri=uri))
            if not (local / "manifest.json").is_file():
                raise ValueError(
                    f"model {model_name!r} version {number} on {uri} holds no manifest.json at {source}: "
                    "it was not registered by trading-jax log_export"
                )
            if target is not None:
                if target.exists():
                    target.rmdir()  # empty, checked above
                os.replace(local, target)
                shutil.rmtree(staging, ignore_errors=True)
                local = target
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _log.info("downloaded model %r version %d from %s to %s", model_name, number, uri, local)
    return local


def list_versions(model_name: str, tracking_uri: str | None = None) -> list[dict]:
    """The registered versions of a model, oldest first.

    Args:
        model_name: the registered model.
        tracking_uri: as in `log_export`.

    Returns:
        One dict per version: `version` (int), `run_id`, `created` (ISO 8601, UTC), `git_commit`,
        `kind` (the version's tags, None when absent), `status`, `description` and `source`.

    Raises:
        ValueError: unknown model (the message names the registered ones), or a folder store that
            does not exist.
        RuntimeError: MLflow is not installed or the URI cannot be reached.
    """
    _mlflow()
    uri = resolve_tracking_uri(tracking_uri)
    _require_store(uri)
    with _session(uri):
        client = _connect(uri)
        versions = _versions(client, uri, model_name)
    out = []
    for mv in sorted(versions, key=lambda v: int(v.version)):
        created = mv.creation_timestamp
        tags = dict(mv.tags or {})
        out.append(
            {
                "version": int(mv.version),
                "run_id": mv.run_id,
                "created": (
                    _dt.datetime.fromtimestamp(created / 1000, tz=_dt.timezone.utc).isoformat(timespec="seconds")
                    if created
                    else None
                ),
                "git_commit": tags.get("git_commit"),
                "kind": tags.get("kind"),
                "status": str(mv.status) if mv.status is not None else None,
                "description": mv.description,
                "source": mv.source,
            }
        )
    return out


def resolve_tracking_uri(tracking_uri: str | os.PathLike | None = None) -> str:
    """The tracking URI the functions here use.

    Args:
        tracking_uri: a URI, a plain folder path, or None (`$MLFLOW_TRACKING_URI`, else `./mlruns`).

    Returns:
        The URI; a folder store as an absolute `file:` URI.
    """
    if tracking_uri is None or str(tracking_uri) == "":
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
    uri = os.fspath(tracking_uri)
    scheme = urlparse(uri).scheme
    if len(scheme) <= 1:  # no scheme, or a Windows drive letter: a folder
        return Path(uri).expanduser().resolve().as_uri()
    if scheme == "file":
        return _file_path(uri).as_uri()
    return uri


def read_export(export_dir: str | os.PathLike) -> tuple[Path, dict, dict]:
    """Check an export folder and read its manifest and metadata.

    Args:
        export_dir: the folder.

    Returns:
        `(folder, manifest, metadata)`, the folder resolved to an absolute path.

    Raises:
        ValueError: one line naming the path and what to do.
    """
    folder = Path(export_dir).expanduser()
    if not folder.exists():
        raise ValueError(f"export folder {folder} does not exist: pass the folder written by the export")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: pass the export folder (the one holding manifest.json)")
    folder = folder.resolve()
    manifest = read_manifest(folder)
    metadata = read_json(folder / "metadata.json")
    return folder, manifest, metadata


# ----------------------------------------------------------------------------------------------------------
# The export's content as MLflow params, metrics and tags


def _flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, Mapping) and tree:
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif prefix:
        yield prefix, tree


def _sanitize_key(key: str) -> str:
    key = _BAD_KEY_CHARS.sub("_", key)
    key = re.sub(r"/+", "/", key).strip("/ ")
    # MLflow refuses names that a path normalisation would change ("a/./b", "../x", ".").
    if not key or any(part in ("", ".", "..") for part in key.split("/")) or key.startswith(".."):
        key = "_" + key.replace("/", "_")
    return key[:_MAX_KEY]


def _unique(key: str, taken: set[str]) -> str:
    candidate, n = key, 1
    while candidate in taken:
        n += 1
        suffix = f"_{n}"
        candidate = key[: _MAX_KEY - len(suffix)] + suffix
    taken.add(candidate)
    return candidate


def _as_text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:limit]


def _params(manifest: Mapping, metadata: Mapping) -> dict[str, str]:
    data = metadata.get("data") if isinstance(metadata.get("data"), Mapping) else {}
    own = {
        "kind": manifest.get("kind"),
        "package_version": metadata.get("package_version"),
        "jax_version": metadata.get("jax_version"),
        "git_commit": metadata.get("git_commit"),
        "data.source": data.get("source"),
        "data.fingerprint": data.get("fingerprint"),
    }
    params: dict[str, str] = {}
    taken: set[str] = set()
    for key, value in own.items():
        if value is not None:
            params[_unique(key, taken)] = _as_text(value, _MAX_PARAM_VALUE)
    config = metadata.get("training_config")
    for key, value in _flatten(config if isinstance(config, Mapping) else {}):
        name = _unique(_sanitize_key(key), taken)
        if name != key:
            _log.debug("training_config key %r logged as MLflow param %r", key, name)
        params[name] = _as_text(value, _MAX_PARAM_VALUE)
    return params


def _metrics(raw: Any) -> tuple[dict[str, float], list[str]]:
    metrics: dict[str, float] = {}
    non_finite: list[str] = []
    taken: set[str] = set()
    for key, value in _flatten(raw if isinstance(raw, Mapping) else {}):
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if number and math.isfinite(float(value)):
            metrics[_unique(_sanitize_key(key), taken)] = float(value)
        else:
            non_finite.append(key)
    return metrics, non_finite


def _run_tags(manifest: Mapping, metadata: Mapping, non_finite: list[str]) -> dict[str, str]:
    tags = {
        "format": str(manifest.get("format")),
        "format_version": str(manifest.get("format_version")),
        "kind": str(manifest.get("kind", "unknown")),
    }
    if metadata.get("created") is not None:
        tags["created"] = str(metadata["created"])
    if metadata.get("git_commit"):
        tags["mlflow.source.git.commit"] = str(metadata["git_commit"])
    data = metadata.get("data") if isinstance(metadata.get("data"), Mapping) else {}
    span = data.get("range")
    tags["data.range"] = _as_text(span, _MAX_TAG_VALUE)  # "null" when the export names no range
    if isinstance(span, (list, tuple)) and len(span) == 2:
        tags["data.start"], tags["data.end"] = str(span[0]), str(span[1])
    if non_finite:
        tags["non_finite_metrics"] = ",".join(non_finite)[:_MAX_TAG_VALUE]
    return tags


def _version_tags(manifest: Mapping, metadata: Mapping) -> dict[str, str]:
    return {
        "kind": str(manifest.get("kind", "unknown")),
        "git_commit": str(metadata.get("git_commit") or "unknown"),
        "format_version": str(manifest.get("format_version")),
        "package_version": str(metadata.get("package_version")),
    }


# ----------------------------------------------------------------------------------------------------------
# MLflow plumbing


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise RuntimeError(MISSING_MLFLOW) from None
    return mlflow


def _file_path(uri: str) -> Path:
    parsed = urlparse(uri)
    path = url2pathname(parsed.path) if parsed.netloc in ("", "localhost") else uri[len("file:") :]
    return Path(path).expanduser().resolve()


def _require_store(uri: str) -> None:
    """A folder store must exist before it is read (MLflow would create an empty one)."""
    if urlparse(uri).scheme == "file" and not _file_path(uri).is_dir():
        raise ValueError(
            f"no MLflow store at {_file_path(uri)}: log an export first (--mlflow) or pass its tracking URI"
        )


@contextlib.contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def _session(uri: str) -> Iterator[None]:
    """Environment and log levels for one call: folder store allowed, quiet, bounded HTTP."""
    values = {k: v for k, v in _HTTP_BOUNDS if k not in os.environ}
    if "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ:
        values["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    if urlparse(uri).scheme == "file":
        values["MLFLOW_ALLOW_FILE_STORE"] = "true"
    mlflow_logger = logging.getLogger("mlflow")
    level = mlflow_logger.level
    mlflow_logger.setLevel(logging.ERROR)
    try:
        with _env(values), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        mlflow_logger.setLevel(level)
    for message in dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught):
        _log.debug("MLflow: %s", message)


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _connect(uri: str):
    """An MlflowClient on `uri`, after one probe request without retries (fails fast when unreachable)."""
    from mlflow import MlflowClient

    try:
        with _env(_PROBE):
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments(max_results=1)
    except Exception as e:
        remote = urlparse(uri).scheme in ("http", "https")
        advice = "start the server or pass another tracking URI" if remote else "pass another tracking URI"
        raise RuntimeError(
            f"cannot use the MLflow tracking URI {uri} ({_reason(e)}): {advice} (the default is the folder ./mlruns)"
        ) from e
    return client


def _reason(error: BaseException) -> str:
    """A short reason for a failed first request (MLflow's message repeats the whole URL and urllib3's)."""
    text = str(error)
    for needle, reason in (
        ("unsupported URI 'sqlite", "a sqlite store needs the full mlflow package (SQLAlchemy, Alembic)"),
        ("No module named 'sqlalchemy'", "a sqlite store needs the full mlflow package (SQLAlchemy, Alembic)"),
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("timed out", "timed out"),
        ("Failed to establish", "no connection"),
        ("Max retries exceeded", "no connection"),
    ):
        if needle in text:
            return reason
    return _first_line(error, limit=200)


@contextlib.contextmanager
def _mlflow_errors(uri: str, what: str) -> Iterator[None]:
    """MLflow's exceptions (long, multi-line) as one-line RuntimeErrors naming the URI and the action."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        raise RuntimeError(f"MLflow on {uri} could not {what}: {_first_line(e)}") from e


def _error_code(error: BaseException) -> str:
    return str(getattr(error, "error_code", ""))


def _check_model_name(name: str) -> None:
    bad = [c for c in ("/", ":", "'", '"', "\\") if c in name]
    if bad or name.strip() in (".", "..") or name.startswith(".."):
        raise ValueError(
            f"model name {name!r} is not allowed on MLflow (no / : quotes or leading ..): pass another model_name"
        )


def _safe_prefix(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)[:50] or "model"


def _ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="trading-jax export (see the versions' tags)")
    except MlflowException as e:
        if "RESOURCE_ALREADY_EXISTS" not in _error_code(e):
            raise


def _versions(client, uri: str, name: str) -> list:
    from mlflow.exceptions import MlflowException

    _check_model_name(name)
    with _mlflow_errors(uri, f"look up model {name!r}"):
        try:
            client.get_registered_model(name)
        except MlflowException as e:
            if "RESOURCE_DOES_NOT_EXIST" not in _error_code(e):
                raise
            known = sorted(m.name for m in client.search_registered_models(max_results=1000))
            raise ValueError(
                f"no registered model {name!r} on {uri}; registered: {', '.join(known) or 'none'}"
            ) from None
        return list(client.search_model_versions(f"name='{name}'"))


def _find_version(client, uri: str, name: str, version: int | str):
    from mlflow.exceptions import MlflowException

    versions = {int(v.version): v for v in _versions(client, uri, name)}
    known = ", ".join(str(v) for v in sorted(versions)) or "none"
    wanted = str(version).strip()
    if wanted.lower() == "latest":
        if not versions:
            raise ValueError(f"model {name!r} on {uri} has no versions: log an export first")
        return versions[max(versions)]
    if wanted.isdigit():
        if int(wanted) not in versions:
            raise ValueError(f"model {name!r} on {uri} has no version {wanted}; versions: {known} (or 'latest')")
        return versions[int(wanted)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return client.get_model_version_by_alias(name, wanted)
    except MlflowException:
        raise ValueError(
            f"model {name!r} on {uri} has no version or alias {wanted!r}; versions: {known} (or 'latest')"
        ) from None
