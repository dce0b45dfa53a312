"""BERT (FinBERT-compatible): Hugging Face parity, checkpoint loading, padding, errors, sentiment heads, bf16.

The committed fixture tests/fixtures/tiny_bert/ (written by scripts/make_bert_fixture.py) is a random
`BertForSequenceClassification` with awkward sizes and its reference outputs, so parity is checked without
torch; the live parity test builds another checkpoint with transformers when it is installed.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from trading_jax.models import available, create
from trading_jax.models.bert_checkpoint import hf_config_to_kwargs, load_hf_bert
from trading_jax.models.precision import cast_floating

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tiny_bert"
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@functools.partial(jax.jit, static_argnums=0)
def apply(model, params, x):
    return model.apply({"params": params}, x)


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def copy_checkpoint(tmp_path: Path, *names: str) -> Path:
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    for name in names:
        shutil.copy(FIXTURE / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def reference():
    data = np.load(FIXTURE / "reference.npz")
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def inputs(reference):
    return {k: reference[k] for k in INPUT_KEYS}


@pytest.fixture(scope="module")
def classifier():
    kwargs, params, info = load_hf_bert(FIXTURE)
    return create("bert_classifier", **kwargs), params, info


def test_the_fixture_loads_without_torch_and_reproduces_the_reference_outputs(monkeypatch, reference, inputs):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails: safetensors only
    kwargs, params, info = load_hf_bert(FIXTURE)
    logits = apply(create("bert_classifier", **kwargs), params, inputs)["logits"]
    assert logits.dtype == jnp.float32
    assert max_diff(logits, reference["logits"]) < 1e-5
    assert info["weights_file"].name == "model.safetensors" and info["has_classifier"]
    assert info["id2label"] == {0: "positive", 1: "negative", 2: "neutral"}
    assert info["architecture"] == "BertForSequenceClassification" and info["config"]["layer_norm_eps"] == 1e-7

    kwargs, params, info = load_hf_bert(FIXTURE, head="encoder")
    out = apply(create("bert_encoder", **kwargs), params, inputs)
    assert max_diff(out["last_hidden_state"], reference["last_hidden_state"]) < 1e-5  # padded positions too
    assert max_diff(out["pooled"], reference["pooled"]) < 1e-5
    assert info["ignored_keys"] == ["classifier.bias", "classifier.weight"]


def test_the_param_tree_mirrors_hugging_face_names(classifier):
    _, params, _ = classifier
    assert sorted(params) == ["bert", "classifier"]
    assert sorted(params["bert"]) == ["embeddings", "encoder", "pooler"]
    assert params["bert"]["embeddings"]["word_embeddings"]["embedding"].shape == (120, 32)
    assert sorted(params["bert"]["encoder"]) == ["layer_0", "layer_1"]
    layer = params["bert"]["encoder"]["layer_1"]
    assert layer["attention"]["self"]["query"]["kernel"].shape == (32, 32)
    assert layer["intermediate"]["dense"]["kernel"].shape == (32, 37)  # HF [37, 32] transposed
    assert layer["output"]["LayerNorm"]["scale"].shape == (32,)
    assert params["classifier"]["kernel"].shape == (32, 3)
    hf = load_file(FIXTURE / "model.safetensors")
    np.testing.assert_array_equal(layer["intermediate"]["dense"]["kernel"],
                                  hf["bert.encoder.layer.1.intermediate.dense.weight"].T)


def test_bin_and_safetensors_loads_give_identical_params(tmp_path, classifier):
    pytest.importorskip("torch")
    _, from_safetensors, _ = classifier
    _, from_bin, info = load_hf_bert(copy_checkpoint(tmp_path, "config.json", "pytorch_model.bin"))
    assert info["weights_file"].name == "pytorch_model.bin"
    assert jax.tree.structure(from_bin) == jax.tree.structure(from_safetensors)
    for a, b in zip(jax.tree.leaves(from_bin), jax.tree.leaves(from_safetensors)):
        np.testing.assert_array_equal(a, b)


def test_a_bin_only_checkpoint_without_torch_says_to_install_torch_or_convert(tmp_path, monkeypatch):
    directory = copy_checkpoint(tmp_path, "config.json", "pytorch_model.bin")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ValueError) as excinfo:
        load_hf_bert(directory)
    message = one_line_error(excinfo)
    assert "pytorch_model.bin" in message and "install torch" in message and "safetensors" in message


def test_bare_encoder_keys_with_legacy_layernorm_names_load_the_same_encoder(tmp_path, classifier):
    tensors = {}
    for key, value in load_file(FIXTURE / "model.safetensors").items():
        if key.startswith("classifier."):
            continue  # a BertModel checkpoint: no prefix, no classifier
        key = key.removeprefix("bert.").replace("LayerNorm.weight", "LayerNorm.gamma")
        tensors[key.replace("LayerNorm.bias", "LayerNorm.beta")] = value
    tensors["embeddings.position_ids"] = np.arange(64, dtype=np.int64)[None]  # ignored, as HF does
    tensors["cls.predictions.bias"] = np.zeros(120, np.float32)  # a pretraining head: ignored
    directory = copy_checkpoint(tmp_path, "config.json")
    save_file(tensors, directory / "model.safetensors")

    _, params, info = load_hf_bert(directory, head="encoder")
    assert not info["has_classifier"]
    assert info["ignored_keys"] == ["cls.predictions.bias", "embeddings.position_ids"]
    for a, b in zip(jax.tree.leaves(params["bert"]), jax.tree.leaves(classifier[1]["bert"])):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError) as excinfo:
        load_hf_bert(directory, head="classifier")
    message = one_line_error(excinfo)
    assert "no classifier" in message and "head='encoder'" in message and "head='sentiment'" in message


def test_sharded_and_bfloat16_safetensors_load_too(tmp_path, classifier):
    tensors = load_file(FIXTURE / "model.safetensors")
    directory = copy_checkpoint(tmp_path, "config.json")
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for shard, shard_keys in shards.items():
        save_file({k: tensors[k] for k in shard_keys}, directory / shard)
    index = {"metadata": {}, "weight_map": {k: shard for shard, ks in shards.items() for k in ks}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    _, params, info = load_hf_bert(directory)
    assert info["weights_file"].name == "model.safetensors.index.json"
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(classifier[1])):
        np.testing.assert_array_equal(a, b)

    import ml_dtypes  # NumPy's bfloat16 (ships with JAX): safetensors stores these arrays as BF16

    save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    _, params, _ = load_hf_bert(tmp_path)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(classifier[1])):
        assert a.dtype == jnp.float32
        np.testing.assert_array_equal(a, b.astype(jnp.bfloat16).astype(jnp.float32))


def test_live_parity_with_a_fresh_transformers_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    import transformers  # a core dependency; torch is the optional part
    torch.manual_seed(1)
    config = transformers.BertConfig(
        vocab_size=53, hidden_size=24, num_hidden_layers=3, num_attention_heads=3, intermediate_size=29,
        max_position_embeddings=40, type_vocab_size=3, num_labels=4,
    )
    model = transformers.BertForSequenceClassification(config).eval()
    with torch.no_grad():  # unit-scale weights: HF's 0.02 init makes nearly constant logits
        for name, param in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                param.add_(0.2 * torch.randn_like(param))
            elif "embeddings" in name:
                param.normal_(0.0, 1.0)
            else:  # Linear [out, in]
                param.normal_(0.0, 1.0 / param.shape[1] ** 0.5)
    model.save_pretrained(str(tmp_path))
    rng = np.random.RandomState(2)
    x = {
        "input_ids": rng.randint(0, 53, size=(2, 13)).astype(np.int32),
        "attention_mask": (np.arange(13)[None] < np.array([[13], [6]])).astype(np.int32),
        "token_type_ids": rng.randint(0, 3, size=(2, 13)).astype(np.int32),
    }
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in x.items()}, output_hidden_states=True)

    kwargs, params, info = load_hf_bert(tmp_path)
    assert kwargs["num_labels"] == 4 and kwargs["num_hidden_layers"] == 3
    flax_model = create("bert_classifier", **kwargs)
    # one compilation for the logits and the last hidden state (the output of the "encoder" layer stack)
    result, state = jax.jit(lambda p: flax_model.apply({"params": p}, x, mutable="intermediates",
                                                       capture_intermediates=lambda m, _: m.name == "encoder"))(params)
    hidden = state["intermediates"]["bert"]["encoder"]["__call__"][0]
    assert max_diff(result["logits"], out.logits.numpy()) < 1e-5
    assert max_diff(hidden, out.hidden_states[-1].numpy()) < 1e-5  # the padded positions too


def test_appended_padding_does_not_change_the_logits(classifier, reference, inputs):
    model, params, _ = classifier
    extra = 5
    rng = np.random.RandomState(3)
    padded = {
        "input_ids": np.concatenate([inputs["input_ids"], rng.randint(5, 120, (3, extra))], axis=1),  # not [PAD]
        "attention_mask": np.pad(inputs["attention_mask"], ((0, 0), (0, extra))),
        "token_type_ids": np.pad(inputs["token_type_ids"], ((0, 0), (0, extra))),
    }
    assert max_diff(apply(model, params, padded)["logits"], reference["logits"]) < 1e-5


@pytest.mark.parametrize("hidden_act", ["gelu_new", "relu"])
def test_only_the_exact_gelu_is_accepted(tmp_path, hidden_act):
    directory = copy_checkpoint(tmp_path, "config.json")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(dict(config, hidden_act=hidden_act)))
    with pytest.raises(ValueError) as excinfo:
        load_hf_bert(directory)
    message = one_line_error(excinfo)
    assert "config.json" in message and repr(hidden_act) in message
    with pytest.raises(ValueError, match=hidden_act):
        create("bert_classifier", preset="tiny", hidden_act=hidden_act)


def test_loading_errors_are_one_line_and_name_the_file(tmp_path):
    cases = []
    cases.append((tmp_path / "absent", "absent: no such checkpoint directory"))
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((empty, "config.json: not found"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    cases.append((broken, "config.json: invalid JSON"))
    roberta = tmp_path / "roberta"
    roberta.mkdir()
    (roberta / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    cases.append((roberta, "model_type is 'roberta', expected 'bert'"))
    no_weights = copy_checkpoint(tmp_path, "config.json")
    cases.append((no_weights, "no weights (model.safetensors or pytorch_model.bin)"))
    for directory, expected in cases:
        with pytest.raises(ValueError) as excinfo:
            load_hf_bert(directory)
        assert expected in one_line_error(excinfo)
    with pytest.raises(ValueError, match="head must be one of"):
        load_hf_bert(FIXTURE, head="pooler")


def test_a_wrong_shaped_or_missing_tensor_is_named_with_its_shapes(tmp_path):
    tensors = load_file(FIXTURE / "model.safetensors")
    directory = copy_checkpoint(tmp_path, "config.json")
    key = "bert.encoder.layer.1.intermediate.dense.weight"
    save_file(dict(tensors, **{key: tensors[key][:36]}), directory / "model.safetensors")
    with pytest.raises(ValueError) as excinfo:
        load_hf_bert(directory)
    message = one_line_error(excinfo)
    assert "model.safetensors" in message and repr(key) in message and "(36, 32)" in message and "(37, 32)" in message

    missing = "bert.encoder.layer.0.attention.self.key.bias"
    save_file({k: v for k, v in tensors.items() if k != missing}, directory / "model.safetensors")
    with pytest.raises(ValueError) as excinfo:
        load_hf_bert(directory)
    assert f"missing tensor {missing!r}" in one_line_error(excinfo)


def test_sentiment_bert_reads_the_cls_state_and_its_heads_have_the_documented_ranges(reference, inputs):
    kwargs, loaded, _ = load_hf_bert(FIXTURE, head="sentiment")
    assert sorted(loaded) == ["bert"] and "pooler" not in loaded["bert"]  # partial: the encoder only
    assert "num_labels" not in kwargs  # fresh heads: the number of classes is the caller's (default 3)
    model = create("sentiment_bert", **kwargs)
    # the init's tree (eval_shape: no compilation of the initialisers), filled with random values
    shapes = jax.eval_shape(lambda key: model.init(key, inputs), jax.random.PRNGKey(0))["params"]
    assert jax.tree.structure(shapes["bert"]) == jax.tree.structure(loaded["bert"])
    rng = np.random.RandomState(4)
    fresh = jax.tree.map(lambda s: jnp.asarray(0.05 * rng.standard_normal(s.shape), s.dtype), shapes)
    params = {**fresh, **loaded}
    out = apply(model, params, inputs)
    assert out["logits"].shape == (3, 3) and out["confidence"].shape == (3,) and out["price_impact"].shape == (3,)
    assert np.all((out["confidence"] > 0) & (out["confidence"] < 1))
    assert np.all((out["price_impact"] > -1) & (out["price_impact"] < 1))

    # by hand from HF's [CLS] hidden state: Dense(512) - ReLU - (dropout off) - the three heads
    dense = lambda name, h: h @ np.asarray(params[name]["kernel"]) + np.asarray(params[name]["bias"])
    intermediate = np.maximum(dense("head_hidden", reference["last_hidden_state"][:, 0]), 0.0)
    assert intermediate.shape == (3, 512)
    assert max_diff(out["logits"], dense("sentiment_head", intermediate)) < 1e-5
    assert max_diff(out["confidence"], 1 / (1 + np.exp(-dense("confidence_head", intermediate)[:, 0]))) < 1e-5
    assert max_diff(out["price_impact"], np.tanh(dense("impact_head", intermediate)[:, 0])) < 1e-5


def test_params_cast_to_bfloat16_give_close_logits(classifier, reference, inputs):
    model, params, _ = classifier
    logits = apply(model, cast_floating(params, jnp.bfloat16), inputs)["logits"]
    assert logits.dtype == jnp.float32 and np.all(np.isfinite(logits))
    assert max_diff(logits, reference["logits"]) < 5e-2


def test_dropout_is_active_only_in_training(classifier, inputs):
    model, params, _ = classifier
    train = jax.jit(lambda key: model.apply({"params": params}, inputs, train=True, rngs={"dropout": key})["logits"])
    train_a, train_b = train(jax.random.PRNGKey(0)), train(jax.random.PRNGKey(1))
    assert max_diff(train_a, train_b) > 1e-3
    np.testing.assert_array_equal(train_a, train(jax.random.PRNGKey(0)))  # same key, same result
    assert max_diff(train_a, apply(model, params, inputs)["logits"]) > 1e-3  # train=False (HF's eval): no dropout


def test_inputs_longer_than_max_position_embeddings_are_refused():
    model = create("bert_encoder", preset="tiny")
    too_long = {"input_ids": jnp.zeros((1, 129), jnp.int32), "attention_mask": jnp.ones((1, 129), jnp.int32)}
    with pytest.raises(ValueError) as excinfo:
        jax.eval_shape(lambda k: model.init(k, too_long), jax.random.PRNGKey(0))
    assert "length 129 exceeds max_position_embeddings=128" in one_line_error(excinfo)


def test_the_registry_has_the_three_models_with_finbert_sizes():
    models = available()
    for name in ("bert_encoder", "bert_classifier", "sentiment_bert"):
        assert set(models[name]) == {"tiny", "mini", "base", "finbert"}
    finbert = create("bert_classifier", preset="finbert")
    x = {"input_ids": jnp.zeros((1, 8), jnp.int32), "attention_mask": jnp.ones((1, 8), jnp.int32)}
    shapes = jax.eval_shape(lambda k: finbert.init(k, x), jax.random.PRNGKey(0))["params"]
    n_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))
    assert n_params == 109_482_240 + 768 * 3 + 3  # bert-base-uncased's BertModel + a 3-way classifier
    assert shapes["classifier"]["kernel"].shape == (768, 3)


def test_hf_config_to_kwargs_maps_a_finbert_config():
    config = {"model_type": "bert", "hidden_size": 768, "id2label": {"0": "positive", "1": "negative", "2": "neutral"},
              "classifier_dropout": 0.2}
    kwargs = hf_config_to_kwargs(config)
    assert kwargs["num_labels"] == 3 and kwargs["classifier_dropout"] == 0.2 and kwargs["layer_norm_eps"] == 1e-12
    assert "num_labels" not in hf_config_to_kwargs({"model_type": "bert"})  # a BertModel config
    create("bert_classifier", **kwargs)  # every key is a field
