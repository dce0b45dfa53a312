"""BERT in Flax Linen, numerically equal to Hugging Face's ``BertModel`` / ``BertForSequenceClassification``.

Three registered models share one encoder written here:

* ``"bert_encoder"`` (`BertEncoderModel`) -- HF ``BertModel``: ``{"last_hidden_state", "pooled"}``.
* ``"bert_classifier"`` (`BertClassifier`) -- HF ``BertForSequenceClassification``: pooler -> dropout ->
  ``Dense(num_labels)``. ProsusAI/finbert is this architecture with the label order
  ``0 positive, 1 negative, 2 neutral`` (preset ``"finbert"``).
* ``"sentiment_bert"`` (`SentimentBert`) -- seed 000's ``SentimentAnalysisNetwork``: the [CLS] (token 0)
  hidden state (not the pooler) -> ``Dense(512) - ReLU - Dropout`` = ``intermediate``, then three heads:
  sentiment logits, ``sigmoid`` confidence and ``tanh`` price impact.

Pretrained weights come from a Hugging Face checkpoint directory through
`trading_jax.models.bert_checkpoint.load_hf_bert`; the parameter names mirror HF's so that conversion is a
name map (``.`` -> nesting, ``layer.i`` -> ``layer_i``, ``weight`` -> ``kernel`` (transposed) /
``embedding`` / ``scale``)::

    params["bert"]["embeddings"]["word_embeddings"]["embedding"]        bert.embeddings.word_embeddings.weight
    params["bert"]["embeddings"]["position_embeddings"]["embedding"]    bert.embeddings.position_embeddings.weight
    params["bert"]["embeddings"]["token_type_embeddings"]["embedding"]  bert.embeddings.token_type_embeddings.weight
    params["bert"]["embeddings"]["LayerNorm"]["scale" | "bias"]         bert.embeddings.LayerNorm.weight | .bias
    params["bert"]["encoder"]["layer_{i}"]["attention"]["self"]["query" | "key" | "value"]["kernel" | "bias"]
    params["bert"]["encoder"]["layer_{i}"]["attention"]["output"]["dense" | "LayerNorm"]
    params["bert"]["encoder"]["layer_{i}"]["intermediate"]["dense"]
    params["bert"]["encoder"]["layer_{i}"]["output"]["dense" | "LayerNorm"]
    params["bert"]["pooler"]["dense"]                                   bert.pooler.dense (not in "sentiment_bert")
    params["classifier"]                                                classifier ("bert_classifier" only)
    params["head_hidden" | "sentiment_head" | "confidence_head" | "impact_head"]   ("sentiment_bert" only)

All three models keep the encoder under ``"bert"``, so HF encoder weights load into any of them.

Computation (HF BERT, post-LN)::

    e = LN(word[ids] + position[0..L-1] + token_type[tt])         then dropout
    per layer:  a = LN(h + Drop(W_o Attn(h)));   h' = LN(a + Drop(W_2 GELU(W_1 a)))
    Attn:       softmax(Q K^T / sqrt(d_head) + M) V,  M = 0 on real keys, finfo(compute dtype).min on padding
    pooled = tanh(W_p h[:, 0])

GELU is the exact (erf) one, as HF's ``hidden_act="gelu"``; other activations are refused. Dropout sites are
HF's: embeddings, attention probabilities, after each of the two residual branches (``hidden_dropout_prob``)
and before the classifier; dropout is active only with ``train=True`` and draws from the ``"dropout"`` rng.

Inputs (all models): ``x`` is a mapping with ``"input_ids"`` ``int [B, L]``, ``"attention_mask"`` ``int [B, L]``
(1 real token, 0 padding; all ones when absent) and optionally ``"token_type_ids"`` ``int [B, L]`` (zeros
when absent), with ``L <= max_position_embeddings`` (checked at trace time). Parameters are float32 when initialised; the compute dtype is
``dtype`` when set, else that of the parameters (the training engine casts every floating param to
bfloat16 for mixed precision, and that works here: attention logits and softmax are computed in float32
and cast back). Head outputs (``logits``, ``confidence``, ``price_impact``) are float32; hidden states
(``last_hidden_state``, ``pooled``) are in the compute dtype.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from trading_jax.models.registry import register

__all__ = [
    "BertFields",
    "BertEmbeddings",
    "BertSelfAttention",
    "BertResidualOutput",
    "BertLayer",
    "BertLayerStack",
    "BertModel",
    "BertEncoderModel",
    "BertClassifier",
    "SentimentBert",
    "SUPPORTED_HIDDEN_ACT",
    "bert_encoder",
    "bert_classifier",
    "sentiment_bert",
]

Dtype = Any

# HF's "gelu" is the exact erf GELU; "gelu_new" / "gelu_pytorch_tanh" (tanh approximation), "relu", ... differ.
SUPPORTED_HIDDEN_ACT = "gelu"


def _check_hidden_act(hidden_act: str) -> None:
    if hidden_act != SUPPORTED_HIDDEN_ACT:
        raise ValueError(f"hidden_act {hidden_act!r} is not supported: only 'gelu' (exact erf GELU, HF's default)")


class BertFields(nn.Module):
    """The BERT configuration as flat module fields (HF ``BertConfig`` names and defaults: BERT-base).

    A base class only: the registered models subclass it and add their head fields.

    Attributes:
        vocab_size: word-piece vocabulary size ``V``.
        hidden_size: model width ``H`` (divisible by ``num_attention_heads``).
        num_hidden_layers: encoder layers ``N``.
        num_attention_heads: attention heads per layer.
        intermediate_size: feed-forward width ``I``.
        hidden_dropout_prob: dropout on embeddings and residual branches.
        attention_probs_dropout_prob: dropout on attention probabilities.
        max_position_embeddings: longest accepted sequence ``P`` (rows of the position table).
        type_vocab_size: token type (segment) vocabulary size.
        layer_norm_eps: LayerNorm epsilon (HF 1e-12).
        pad_token_id: padding token id (informational: padding is given by ``attention_mask``).
        initializer_range: standard deviation of the normal initialiser of weights and embeddings (HF 0.02).
        hidden_act: must be ``"gelu"`` (exact GELU); kept as a field so an HF config maps one to one.
        dtype: compute dtype (None: that of the parameters).
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    hidden_act: str = "gelu"
    dtype: Dtype | None = None

    def bert_kwargs(self) -> dict[str, Any]:
        """The `BertFields` values of this module (to build its `BertModel`)."""
        return {name: getattr(self, name) for name in _BERT_FIELD_NAMES}


_BERT_FIELD_NAMES = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
    "layer_norm_eps", "pad_token_id", "initializer_range", "hidden_act", "dtype",
)


def _dense(features: int, name: str, std: float, dtype: Dtype | None) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, kernel_init=nn.initializers.normal(std),
                    name=name)


def _layer_norm(eps: float, dtype: Dtype | None) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=jnp.float32, name="LayerNorm")


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (HF ``BertEmbeddings``).

    Parameters: ``(V + P + T) H`` embeddings and ``2H`` LayerNorm (``T`` = ``type_vocab_size``).
    """

    vocab_size: int
    hidden_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_dropout_prob: float
    initializer_range: float
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, input_ids: jnp.ndarray, token_type_ids: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Args: input_ids, token_type_ids ``int [B, L]``. Returns ``[B, L, H]``."""
        init = nn.initializers.normal(self.initializer_range)
        embed = lambda n, name: nn.Embed(n, self.hidden_size, dtype=self.dtype, param_dtype=jnp.float32,
                                         embedding_init=init, name=name)
        length = input_ids.shape[1]
        h = embed(self.vocab_size, "word_embeddings")(input_ids)
        h = h + embed(self.max_position_embeddings, "position_embeddings")(jnp.arange(length)[None, :])
        h = h + embed(self.type_vocab_size, "token_type_embeddings")(token_type_ids)
        h = _layer_norm(self.layer_norm_eps, self.dtype)(h)
        return nn.Dropout(self.hidden_dropout_prob, deterministic=not train)(h)


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention with a padding mask (HF ``BertSelfAttention``).

    Parameters: ``query``, ``key``, ``value`` Dense ``H -> H`` with bias (``3 (H^2 + H)``).
    """

    num_attention_heads: int
    attention_probs_dropout_prob: float
    initializer_range: float
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, h: jnp.ndarray, mask: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Attend over the tokens.

        Args:
            h: ``[B, L, H]`` hidden states.
            mask: bool ``[B, L]``, True on real tokens (padding keys get ``finfo(compute dtype).min`` added).
            train: apply dropout to the attention probabilities.

        Returns:
            ``[B, L, H]`` the context (heads concatenated), in the compute dtype.
        """
        batch, length, width = h.shape
        if width % self.num_attention_heads:
            raise ValueError(f"hidden_size={width} is not divisible by num_attention_heads={self.num_attention_heads}")
        head_dim = width // self.num_attention_heads

        def heads(name: str) -> jnp.ndarray:  # [B, L, H] -> [B, heads, L, d_head]
            t = _dense(width, name, self.initializer_range, self.dtype)(h)
            return t.reshape(batch, length, self.num_attention_heads, head_dim).transpose(0, 2, 1, 3)

        q, k, v = heads("query"), heads("key"), heads("value")
        compute_dtype = v.dtype
        scores = jnp.einsum("bhqc,bhkc->bhqk", q, k, preferred_element_type=jnp.float32).astype(jnp.float32)
        scores = scores / math.sqrt(head_dim)
        bias = jnp.where(mask, 0.0, jnp.finfo(compute_dtype).min).astype(jnp.float32)  # [B, L] over keys
        probs = jax.nn.softmax(scores + bias[:, None, None, :], axis=-1).astype(compute_dtype)
        probs = nn.Dropout(self.attention_probs_dropout_prob, deterministic=not train)(probs)
        context = jnp.einsum("bhqk,bhkc->bhqc", probs, v)
        return context.transpose(0, 2, 1, 3).reshape(batch, length, width)


class BertResidualOutput(nn.Module):
    """``LN(residual + Dropout(Dense(H)(x)))`` (HF ``BertSelfOutput`` and ``BertOutput``): ``dense``, ``LayerNorm``."""

    hidden_size: int
    hidden_dropout_prob: float
    layer_norm_eps: float
    initializer_range: float
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, residual: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Args: x ``[B, L, *]``, residual ``[B, L, H]``. Returns ``[B, L, H]``."""
        y = _dense(self.hidden_size, "dense", self.initializer_range, self.dtype)(x)
        y = nn.Dropout(self.hidden_dropout_prob, deterministic=not train)(y)
        return _layer_norm(self.layer_norm_eps, self.dtype)(y + residual)


class _Attention(nn.Module):
    """Container named ``attention`` holding ``self`` (Q/K/V) and ``output`` (dense + LayerNorm), as HF."""

    hidden_size: int
    num_attention_heads: int
    hidden_dropout_prob: float
    attention_probs_dropout_prob: float
    layer_norm_eps: float
    initializer_range: float
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, h: jnp.ndarray, mask: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        context = BertSelfAttention(self.num_attention_heads, self.attention_probs_dropout_prob,
                                    self.initializer_range, self.dtype, name="self")(h, mask, train=train)
        return BertResidualOutput(self.hidden_size, self.hidden_dropout_prob, self.layer_norm_eps,
                                  self.initializer_range, self.dtype, name="output")(context, h, train=train)


class _Intermediate(nn.Module):
    """Container named ``intermediate``: ``GELU(Dense(I)(x))`` with the exact GELU (HF ``BertIntermediate``)."""

    intermediate_size: int
    initializer_range: float
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        y = _dense(self.intermediate_size, "dense", self.initializer_range, self.dtype)(x)
        return jax.nn.gelu(y, approximate=False)


class BertLayer(nn.Module):
    """One post-LN encoder layer (HF ``BertLayer``): ``attention``, ``intermediate``, ``output``.

    Parameters: ``4 (H^2 + H) + 2 (2H) + 2 H I + I + H``.
    """

    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    hidden_dropout_prob: float
    attention_probs_dropout_prob: float
    layer_norm_eps: float
    initializer_range: float
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, h: jnp.ndarray, mask: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Args: h ``[B, L, H]``, mask bool ``[B, L]``. Returns ``[B, L, H]``."""
        a = _Attention(self.hidden_size, self.num_attention_heads, self.hidden_dropout_prob,
                       self.attention_probs_dropout_prob, self.layer_norm_eps, self.initializer_range,
                       self.dtype, name="attention")(h, mask, train=train)
        i = _Intermediate(self.intermediate_size, self.initializer_range, self.dtype, name="intermediate")(a)
        return BertResidualOutput(self.hidden_size, self.hidden_dropout_prob, self.layer_norm_eps,
                                  self.initializer_range, self.dtype, name="output")(i, a, train=train)


class BertLayerStack(nn.Module):
    """``num_hidden_layers`` `BertLayer` named ``layer_0 ...`` (HF ``BertEncoder``, ``encoder.layer.i``)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_dropout_prob: float
    attention_probs_dropout_prob: float
    layer_norm_eps: float
    initializer_range: float
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, h: jnp.ndarray, mask: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Args: h ``[B, L, H]``, mask bool ``[B, L]``. Returns ``[B, L, H]``."""
        for i in range(self.num_hidden_layers):
            h = BertLayer(self.hidden_size, self.num_attention_heads, self.intermediate_size,
                          self.hidden_dropout_prob, self.attention_probs_dropout_prob, self.layer_norm_eps,
                          self.initializer_range, self.dtype, name=f"layer_{i}")(h, mask, train=train)
        return h


def _unpack_inputs(x: Mapping[str, jnp.ndarray], max_positions: int):
    """``(input_ids, bool mask, token_type_ids)`` from the input mapping, checked (shapes are static)."""
    if not isinstance(x, Mapping) or "input_ids" not in x:
        raise ValueError("BERT input must be a mapping with 'input_ids' [B, L] (and 'attention_mask', "
                         "optional 'token_type_ids')")
    input_ids = jnp.asarray(x["input_ids"])
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must have shape [batch, length], got shape {input_ids.shape}")
    if input_ids.shape[1] > max_positions:
        raise ValueError(f"input_ids length {input_ids.shape[1]} exceeds max_position_embeddings={max_positions}")
    mask = x.get("attention_mask")
    mask = jnp.ones(input_ids.shape, bool) if mask is None else jnp.asarray(mask) > 0
    token_type_ids = x.get("token_type_ids")
    token_type_ids = jnp.zeros(input_ids.shape, jnp.int32) if token_type_ids is None else jnp.asarray(token_type_ids)
    for name, value in (("attention_mask", mask), ("token_type_ids", token_type_ids)):
        if value.shape != input_ids.shape:
            raise ValueError(f"{name} has shape {value.shape}, input_ids {input_ids.shape}: they must match")
    return input_ids.astype(jnp.int32), mask, token_type_ids.astype(jnp.int32)


class BertModel(BertFields):
    """The BERT body (HF ``BertModel``): ``embeddings``, ``encoder`` and (optionally) ``pooler``.

    Parameters (``N`` layers): ``(V + P + T) H + 2H + N (4 (H^2 + H) + 4H + 2 H I + I + H)`` plus
    ``H^2 + H`` for the pooler (BERT-base: 109,482,240 with the pooler).

    Attributes: the `BertFields`, plus
        add_pooling_layer: build the pooler (``Dense(H) + tanh`` on token 0), as HF's flag.
    """

    add_pooling_layer: bool = True

    @nn.compact
    def __call__(self, x: Mapping[str, jnp.ndarray], *, train: bool = False) -> dict[str, jnp.ndarray]:
        """Encode a batch of token sequences.

        Args:
            x: ``{"input_ids": int [B, L], "attention_mask": int [B, L], "token_type_ids": int [B, L]}``
                (mask and token types optional), ``L <= max_position_embeddings``.
            train: enable dropout (rng stream ``"dropout"``).

        Returns:
            ``{"last_hidden_state": [B, L, H]}`` plus ``"pooled": [B, H]`` when ``add_pooling_layer``,
            in the compute dtype.

        Raises:
            ValueError: unsupported ``hidden_act``, a malformed input or ``L > max_position_embeddings``.
        """
        _check_hidden_act(self.hidden_act)
        input_ids, mask, token_type_ids = _unpack_inputs(x, self.max_position_embeddings)
        h = BertEmbeddings(self.vocab_size, self.hidden_size, self.max_position_embeddings, self.type_vocab_size,
                           self.layer_norm_eps, self.hidden_dropout_prob, self.initializer_range, self.dtype,
                           name="embeddings")(input_ids, token_type_ids, train=train)
        h = BertLayerStack(self.hidden_size, self.num_hidden_layers, self.num_attention_heads,
                           self.intermediate_size, self.hidden_dropout_prob, self.attention_probs_dropout_prob,
                           self.layer_norm_eps, self.initializer_range, self.dtype,
                           name="encoder")(h, mask, train=train)
        out = {"last_hidden_state": h}
        if self.add_pooling_layer:
            out["pooled"] = _Pooler(self.hidden_size, self.initializer_range, self.dtype, name="pooler")(h)
        return out


class _Pooler(nn.Module):
    """Container named ``pooler``: ``tanh(Dense(H)(h[:, 0]))`` (HF ``BertPooler``)."""

    hidden_size: int
    initializer_range: float
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
        return jnp.tanh(_dense(self.hidden_size, "dense", self.initializer_range, self.dtype)(h[:, 0]))


class BertEncoderModel(BertFields):
    """Registered ``"bert_encoder"``: HF ``BertModel`` with its params under ``"bert"``.

    Attributes: the `BertFields` (BERT-base defaults).
    """

    @nn.compact
    def __call__(self, x: Mapping[str, jnp.ndarray], *, train: bool = False) -> dict[str, jnp.ndarray]:
        """Encode a batch.

        Args:
            x: ``{"input_ids", "attention_mask", optional "token_type_ids"}``, each ``int [B, L]``.
            train: enable dropout (rng stream ``"dropout"``).

        Returns:
            ``{"last_hidden_state": [B, L, H], "pooled": [B, H]}`` in the compute dtype (``pooled`` is HF's
            ``pooler_output``).
        """
        out = BertModel(**self.bert_kwargs(), name="bert")(x, train=train)
        return {"last_hidden_state": out["last_hidden_state"], "pooled": out["pooled"]}


class BertClassifier(BertFields):
    """Registered ``"bert_classifier"``: HF ``BertForSequenceClassification``.

    ``pooled -> Dropout(classifier_dropout or hidden_dropout_prob) -> Dense(num_labels)`` named
    ``"classifier"``. With the ProsusAI/finbert weights the labels are ``0 positive, 1 negative, 2 neutral``.

    Attributes: the `BertFields`, plus
        num_labels: number of classes ``C`` (HF's default 2; finbert 3).
        classifier_dropout: dropout before the classifier; None means ``hidden_dropout_prob`` (as HF).
    """

    num_labels: int = 2
    classifier_dropout: float | None = None

    @nn.compact
    def __call__(self, x: Mapping[str, jnp.ndarray], *, train: bool = False) -> dict[str, jnp.ndarray]:
        """Classify a batch of sequences.

        Args:
            x: ``{"input_ids", "attention_mask", optional "token_type_ids"}``, each ``int [B, L]``.
            train: enable dropout (rng stream ``"dropout"``).

        Returns:
            ``{"logits": [B, num_labels]}`` float32.
        """
        pooled = BertModel(**self.bert_kwargs(), name="bert")(x, train=train)["pooled"]
        rate = self.hidden_dropout_prob if self.classifier_dropout is None else self.classifier_dropout
        pooled = nn.Dropout(rate, deterministic=not train)(pooled)
        logits = _dense(self.num_labels, "classifier", self.initializer_range, self.dtype)(pooled)
        return {"logits": logits.astype(jnp.float32)}


class SentimentBert(BertFields):
    """Registered ``"sentiment_bert"``: seed 000's ``SentimentAnalysisNetwork`` (FinBERT encoder + 3 heads).

    ``cls = last_hidden_state[:, 0]`` (the [CLS] token, not the pooler, so the encoder has no pooler here) ->
    ``intermediate = Dropout(ReLU(Dense(head_hidden)(cls)))`` (``"head_hidden"``), then
    ``logits = Dense(num_labels)(intermediate)`` (``"sentiment_head"``),
    ``confidence = sigmoid(Dense(1)(intermediate))`` (``"confidence_head"``) and
    ``price_impact = tanh(Dense(1)(intermediate))`` (``"impact_head"``).

    The encoder params are under ``"bert"``, as in ``"bert_classifier"`` (less the pooler): overlay the
    ``head="sentiment"`` params of `trading_jax.models.bert_checkpoint.load_hf_bert` onto a fresh init.

    Attributes: the `BertFields`, plus
        num_labels: sentiment classes (seed 3: with finbert's order, positive / negative / neutral).
        head_hidden: width of the shared head layer (seed 512).
        head_dropout: dropout after its ReLU (seed 0.1).
    """

    num_labels: int = 3
    head_hidden: int = 512
    head_dropout: float = 0.1

    @nn.compact
    def __call__(self, x: Mapping[str, jnp.ndarray], *, train: bool = False) -> dict[str, jnp.ndarray]:
        """Score the sentiment of a batch of texts.

        Args:
            x: ``{"input_ids", "attention_mask", optional "token_type_ids"}``, each ``int [B, L]``.
            train: enable dropout (rng stream ``"dropout"``).

        Returns:
            dict of float32 arrays:
            ``"logits"`` ``[B, num_labels]`` (the seed's ``"sentiment"``);
            ``"confidence"`` ``[B]`` in (0, 1);
            ``"price_impact"`` ``[B]`` in (-1, 1).
        """
        hidden = BertModel(**self.bert_kwargs(), add_pooling_layer=False, name="bert")(x, train=train)
        cls = hidden["last_hidden_state"][:, 0]
        dense = lambda n, name: _dense(n, name, self.initializer_range, self.dtype)
        intermediate = nn.relu(dense(self.head_hidden, "head_hidden")(cls))
        intermediate = nn.Dropout(self.head_dropout, deterministic=not train)(intermediate)
        logits = dense(self.num_labels, "sentiment_head")(intermediate)
        confidence = jax.nn.sigmoid(dense(1, "confidence_head")(intermediate).astype(jnp.float32))[:, 0]
        impact = jnp.tanh(dense(1, "impact_head")(intermediate).astype(jnp.float32))[:, 0]
        return {"logits": logits.astype(jnp.float32), "confidence": confidence, "price_impact": impact}


def _common(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check ``hidden_act`` early and turn a dtype name into a dtype (JSON-friendly configs)."""
    cfg = dict(cfg)
    _check_hidden_act(cfg.get("hidden_act", SUPPORTED_HIDDEN_ACT))
    if isinstance(cfg.get("dtype"), str):
        cfg["dtype"] = jnp.dtype(cfg["dtype"])
    return cfg


_TINY = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             max_position_embeddings=128)
_MINI = dict(vocab_size=8000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
             max_position_embeddings=128)  # a small BERT to train from scratch on a CPU (vocab_size: the tokenizer's)
_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
             intermediate_size=3072, max_position_embeddings=512)


@register("bert_encoder", presets={"tiny": dict(_TINY), "mini": dict(_MINI), "base": dict(_BASE),
                                   "finbert": dict(_BASE)})
def bert_encoder(**cfg) -> BertEncoderModel:
    """Factory for `BertEncoderModel` (keyword arguments are its fields; defaults: BERT-base).

    ``dtype`` may be a name such as ``"bfloat16"``. Raises ValueError for ``hidden_act`` other than ``"gelu"``.
    """
    return BertEncoderModel(**_common(cfg))


@register("bert_classifier", presets={"tiny": dict(_TINY, num_labels=3), "mini": dict(_MINI, num_labels=3),
                                      "base": dict(_BASE),
                                      "finbert": dict(_BASE, num_labels=3)})
def bert_classifier(**cfg) -> BertClassifier:
    """Factory for `BertClassifier` (keyword arguments are its fields; defaults: BERT-base, 2 labels).

    Preset ``"finbert"`` is ProsusAI/finbert's shape (3 labels: positive, negative, neutral).
    """
    return BertClassifier(**_common(cfg))


@register("sentiment_bert", presets={"tiny": dict(_TINY), "mini": dict(_MINI), "base": dict(_BASE),
                                     "finbert": dict(_BASE, num_labels=3)})
def sentiment_bert(**cfg) -> SentimentBert:
    """Factory for `SentimentBert` (keyword arguments are its fields; defaults: the seed's, BERT-base sizes)."""
    return SentimentBert(**_common(cfg))
