"""Load a Hugging Face BERT checkpoint directory (e.g. a local copy of ProsusAI/finbert) into `trading_jax.models.bert`.

The directory holds ``config.json`` and the weights, ``model.safetensors`` (read with ``safetensors.numpy``:
no torch needed; sharded ``model.safetensors.index.json`` too) or else ``pytorch_model.bin`` (needs torch,
imported only then, and read with ``weights_only=True``). Nothing is downloaded: fetch the checkpoint first,
e.g. ``huggingface-cli download ProsusAI/finbert --local-dir finbert``.

Name map (see `trading_jax.models.bert`): the checkpoint's keys, with or without the ``"bert."`` prefix
(``BertForSequenceClassification`` vs ``BertModel`` checkpoints), legacy LayerNorm names ``gamma`` /
``beta`` accepted for ``weight`` / ``bias``, map to the Flax tree by ``.`` -> nesting, ``layer.i`` ->
``layer_i``, ``weight`` -> ``kernel`` (Linear, transposed from PyTorch's ``[out, in]``) / ``embedding`` /
``scale`` (LayerNorm). Keys HF itself ignores (the ``position_ids`` / ``token_type_ids`` buffers, the
``cls.*`` pretraining heads) and keys the chosen head does not use are skipped and listed in
``info["ignored_keys"]``. Every expected parameter must be present with the shape of the module's init;
otherwise a one-line ``ValueError`` names the file, the key and the shapes.

    model_kwargs, params, info = load_hf_bert("finbert")              # head="classifier"
    model = create("bert_classifier", **model_kwargs)
    logits = model.apply({"params": params}, batch)["logits"]        # info["id2label"][i] names class i
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.models.registry import create

__all__ = ["load_hf_bert", "hf_config_to_kwargs", "HEADS"]

# head -> registered model name
HEADS = {"classifier": "bert_classifier", "encoder": "bert_encoder", "sentiment": "sentiment_bert"}

# config.json key -> module field (same names; HF's defaults where a key may be absent)
_CONFIG_FIELDS = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "initializer_range": 0.02,
    "hidden_act": "gelu",
}

# checkpoint keys (after the optional "bert." prefix) that HF ignores when loading a BERT
_IGNORED = re.compile(r"^(cls\.|embeddings\.position_ids$|embeddings\.token_type_ids$)")


def hf_config_to_kwargs(config: dict) -> dict[str, Any]:
    """Module keyword arguments from a Hugging Face BERT ``config.json`` dict.

    Returns the `trading_jax.models.bert.BertFields` values (HF defaults where a key is absent), plus
    ``num_labels`` (the length of ``id2label``, else ``num_labels``) and ``classifier_dropout`` when the
    config states them. Pass to ``create("bert_classifier" | "sentiment_bert", **kwargs)``; drop
    ``num_labels`` / ``classifier_dropout`` for ``"bert_encoder"``.

    Raises:
        ValueError: (one line) ``model_type`` is not ``"bert"``; ``hidden_act`` is not ``"gelu"``
            (exact GELU); ``position_embedding_type`` is not ``"absolute"``; a decoder (``is_decoder``).
    """
    if not isinstance(config, dict):
        raise ValueError(f"a BERT config must be a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if model_type != "bert":
        raise ValueError(f"model_type is {model_type!r}, expected 'bert'")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act {config['hidden_act']!r} is not supported: only 'gelu' (exact erf GELU)")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type {config['position_embedding_type']!r} is not supported: "
                         "only 'absolute'")
    if config.get("is_decoder", False):
        raise ValueError("is_decoder is true: only BERT encoders (bidirectional attention) are supported")
    kwargs = {name: config.get(name, default) for name, default in _CONFIG_FIELDS.items()}
    for name, value in kwargs.items():
        expected = type(_CONFIG_FIELDS[name])
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            kwargs[name] = value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ValueError(f"{name} = {value!r}: expected {expected.__name__}")
    if isinstance(config.get("id2label"), dict):
        kwargs["num_labels"] = len(config["id2label"])
    elif isinstance(config.get("num_labels"), int):
        kwargs["num_labels"] = config["num_labels"]
    if config.get("classifier_dropout") is not None:
        kwargs["classifier_dropout"] = float(config["classifier_dropout"])
    return kwargs


def _read_config(directory: Path) -> dict:
    if not directory.is_dir():
        raise ValueError(f"{directory}: no such checkpoint directory")
    path = directory / "config.json"
    if not path.is_file():
        raise ValueError(f"{path}: not found (a Hugging Face checkpoint directory holds config.json)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: invalid JSON ({str(error).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _to_float32(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) if jnp.issubdtype(array.dtype, jnp.floating) else array  # bfloat16 too


def _read_bfloat16_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file read by hand (8-byte header size, JSON header, raw little-endian data), for the
    bfloat16 tensors that ``safetensors.numpy`` cannot build (NumPy has no bfloat16; ml_dtypes, a JAX
    dependency, has)."""
    import ml_dtypes

    dtypes = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32, "F64": np.float64,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    out = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        dtype = np.dtype(dtypes[entry["dtype"]]).newbyteorder("<")
        out[key] = np.frombuffer(data[8 + size + start:8 + size + end], dtype=dtype).reshape(entry["shape"])
    return out


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        try:
            tensors = load_file(str(path))
        except TypeError as error:
            if "bfloat16" not in str(error):
                raise
            tensors = _read_bfloat16_safetensors(path)
        return {k: _to_float32(v) for k, v in tensors.items()}
    except Exception as error:  # noqa: BLE001 (safetensors raises its own error types)
        raise ValueError(f"{path}: cannot read safetensors ({_first_line(error)})") from None


def _read_weights(directory: Path) -> tuple[dict[str, np.ndarray], Path]:
    """The checkpoint's tensors as float32 numpy arrays, and the file they came from."""
    single = directory / "model.safetensors"
    if single.is_file():
        return _read_safetensors(single), single
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{index}: not a safetensors index (needs a 'weight_map' object)") from None
        tensors: dict[str, np.ndarray] = {}
        for shard in shards:
            tensors.update(_read_safetensors(directory / shard))
        return tensors, index
    binary = directory / "pytorch_model.bin"
    if binary.is_file():
        try:
            import torch
        except ImportError:
            raise ValueError(f"{binary}: reading pytorch_model.bin needs torch: install torch, or convert the "
                             "checkpoint to model.safetensors") from None
        try:
            state = torch.load(str(binary), map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 (pickle / zip errors of many kinds)
            raise ValueError(f"{binary}: cannot read ({_first_line(error)})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{binary}: expected a state dict, got {type(state).__name__}")
        out = {}
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu()
                out[key] = (value.float() if value.is_floating_point() else value).numpy()
        return out, binary
    raise ValueError(f"{directory}: no weights (model.safetensors or pytorch_model.bin)")


def _normalise_keys(tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """Keys without the "bert." prefix and with "weight"/"bias" for legacy "gamma"/"beta".

    Returns (tensors by normalised key, original key by normalised key, ignored original keys).
    """
    out, original, ignored = {}, {}, []
    for key, value in tensors.items():
        name = key[len("bert."):] if key.startswith("bert.") else key
        if _IGNORED.match(name):
            ignored.append(key)
            continue
        name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
        name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
        out[name], original[name] = value, key
    return out, original, ignored


def _hf_name(path: tuple[str, ...]) -> tuple[str, bool]:
    """HF key (without the "bert." prefix) of a Flax param path, and whether the tensor is transposed."""
    *scopes, leaf = path
    if scopes and scopes[0] == "bert":
        scopes = scopes[1:]
    scopes = [re.sub(r"^layer_(\d+)$", r"layer.\1", s) for s in scopes]
    name = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}[leaf]
    return ".".join([*scopes, name]), leaf == "kernel"


def load_hf_bert(directory, head: str = "classifier") -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """Read a Hugging Face BERT checkpoint directory into Flax params.

    Args:
        directory: a local folder with ``config.json`` and ``model.safetensors`` (preferred) or
            ``pytorch_model.bin``.
        head: ``"classifier"``: params for ``"bert_classifier"`` (HF ``BertForSequenceClassification``;
            needs the pooler and ``classifier`` weights); ``"encoder"``: params for ``"bert_encoder"``
            (HF ``BertModel``: embeddings, layers, pooler); ``"sentiment"``: a PARTIAL tree
            ``{"bert": encoder without pooler}`` for ``"sentiment_bert"`` -- initialise that model fresh
            and overlay these params (``{**fresh, **loaded}`` at the top level), since its heads are new
            (``model_kwargs`` then holds the encoder sizes only: ``num_labels`` is the caller's, default 3).

    Returns:
        ``(model_kwargs, params, info)``: ``create(HEADS[head], **model_kwargs)`` builds the model;
        ``params`` is a nested dict of float32 ``jnp`` arrays (the ``"params"`` collection); ``info`` has
        ``"id2label"`` (``{int: lowercase str}`` from config.json, or None), ``"architecture"``
        (``architectures[0]`` or None), ``"weights_file"`` (Path), ``"has_classifier"`` (bool),
        ``"config"`` (the raw config dict), ``"vocab_file"`` (``vocab.txt`` Path or None) and
        ``"ignored_keys"`` (checkpoint keys not loaded).

    Raises:
        ValueError: (one line, naming the file) missing directory; missing or invalid config.json;
            ``model_type`` not ``"bert"``; unsupported ``hidden_act``; no weights file; pytorch_model.bin
            without torch; a missing tensor or a shape mismatch (naming the key and both shapes);
            ``head="classifier"`` on a checkpoint without classifier weights; an unknown ``head``.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}")
    directory = Path(directory)
    config = _read_config(directory)
    try:
        kwargs = hf_config_to_kwargs(config)
    except ValueError as error:
        raise ValueError(f"{directory / 'config.json'}: {error}") from None
    if head != "classifier":  # the encoder has no classes; the sentiment heads are fresh (num_labels: the caller's)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("num_labels", "classifier_dropout")}
    tensors, weights_file = _read_weights(directory)
    tensors, original, ignored = _normalise_keys(tensors)
    has_classifier = "classifier.weight" in tensors and "classifier.bias" in tensors
    if head == "classifier" and not has_classifier:
        raise ValueError(f"{weights_file}: the checkpoint has no classifier weights ('classifier.weight'): "
                         "load it with head='encoder' or head='sentiment'")
    prefixed = any(key.startswith("bert.") for key in original.values())

    try:
        model = create(HEADS[head], **kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{directory / 'config.json'}: {error}") from None
    dummy = {"input_ids": jnp.zeros((1, 1), jnp.int32), "attention_mask": jnp.ones((1, 1), jnp.int32)}
    expected = jax.eval_shape(lambda key: model.init(key, dummy), jax.random.PRNGKey(0))["params"]
    if head == "sentiment":
        expected = {"bert": expected["bert"]}

    used = set()

    def convert(path, shape_struct):
        names = tuple(getattr(p, "key", str(p)) for p in path)
        name, transposed = _hf_name(names)
        hf_shape = tuple(reversed(shape_struct.shape)) if transposed else tuple(shape_struct.shape)
        shown = f"bert.{name}" if prefixed and names[0] == "bert" else name
        if name not in tensors:
            raise ValueError(f"{weights_file}: missing tensor {shown!r} (expected shape {hf_shape})")
        array = tensors[name]
        if tuple(array.shape) != hf_shape:
            raise ValueError(f"{weights_file}: tensor {original[name]!r} has shape {tuple(array.shape)}, the model "
                             f"built from config.json expects {hf_shape}")
        used.add(name)
        return jnp.asarray((array.T if transposed else array).astype(np.float32))

    params = jax.tree_util.tree_map_with_path(convert, expected)
    ignored = sorted(ignored + [original[name] for name in tensors if name not in used])
    id2label = config.get("id2label")
    vocab = directory / "vocab.txt"
    info = {
        "id2label": {int(k): str(v).lower() for k, v in id2label.items()} if isinstance(id2label, dict) else None,
        "architecture": (config.get("architectures") or [None])[0],
        "weights_file": weights_file,
        "has_classifier": has_classifier,
        "config": config,
        "vocab_file": vocab if vocab.is_file() else None,
        "ignored_keys": ignored,
    }
    return kwargs, params, info
