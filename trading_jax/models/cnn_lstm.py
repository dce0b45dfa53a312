"""CNN + LSTM + attention models of seeds 001 and 003.

* ``"cnn_lstm"`` (seed 001, `CNNLSTM`): Conv1d(64, kernel 3) + ReLU + LayerNorm (the seed's BatchNorm;
  the project uses LayerNorm) + dropout -> 2-layer LSTM(128) -> 4-head self-attention (causal mask) with a
  residual connection and LayerNorm -> the last step, concatenated with a technical-indicator branch
  Linear(n_indicators, 64) -> Dense(64) + ReLU + dropout -> Dense(n_outputs). The convolution uses
  'CAUSAL' padding (output at t sees bars t-2..t; the seed's unpadded Conv1d also never looks ahead), the
  LSTM is unidirectional and the attention is masked, so the whole model is causal: ``sequence[:, t]``
  depends on bars <= t only.

* ``"cnn_lstm_hybrid"`` (seed 003 section 3, `CNNLSTMHybrid`): parallel Conv1d branches with kernels
  3, 5, 7, 11 (+ ReLU) concatenated -> 8-head self-attention over time with a residual connection and
  LayerNorm -> 3-layer bidirectional LSTM (dropout 0.3, skip connections between layers of equal width)
  -> 8-head attention pooling (the query is the last step, as the seed's ``attention_lstm(...)[:, -1]``)
  -> classifier Dense(3) ("logits") and regressor Dense(1) ("prediction"). Convolutions default to 'SAME'
  padding (the seed's ``padding=k//2``), so with the bidirectional LSTM and unmasked attention the model is
  not causal inside the window. That is fine for a decision at the window's last bar: the window ends at
  the decision bar, so no bar after the decision is seen. ``conv_padding="CAUSAL"`` makes the convolutions
  causal (the rest stays bidirectional).

Seed 003 gives no sizes for ``cnn_filters``/``lstm_hidden``; the seed preset uses 64 and 128.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from trading_jax.models.recurrent import StackedLSTM
from trading_jax.models.registry import register

Array = jax.Array
Dtype = Any

__all__ = ["MultiHeadAttention", "CNNLSTM", "CNNLSTMHybrid"]


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention that also returns its weights.

        head_k(q, K, V) = softmax(q W_q^k (K W_k^k)^T / sqrt(d_head)) V W_v^k,   out = concat_k(head_k) W_o

    Attributes:
        num_heads: heads; the output width (`out_features`, default the query width) must divide by it.
        out_features: width of the output (None: the query's width).
        dropout: dropout on the attention weights when ``train=True``.

    Args (call):
        query: ``[batch, q_len, D]``; ``key_value``: ``[batch, kv_len, D]``.
        mask: optional bool broadcastable to ``[batch, heads, q_len, kv_len]``, True where attending is allowed.

    Returns:
        ``(out [batch, q_len, out_features], weights [batch, heads, q_len, kv_len] float32)``.
    """

    num_heads: int
    out_features: int | None = None
    dropout: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, query: Array, key_value: Array, mask: Array | None = None, *, train: bool = False):
        features = self.out_features or query.shape[-1]
        if features % self.num_heads:
            raise ValueError(f"attention width {features} is not divisible by num_heads={self.num_heads}")
        head_dim = features // self.num_heads
        dense = lambda name: nn.DenseGeneral(  # noqa: E731
            (self.num_heads, head_dim), dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        q = dense("query")(query)
        k = dense("key")(key_value)
        v = dense("value")(key_value)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(head_dim).astype(jnp.float32)
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1)
        attended = nn.Dropout(self.dropout)(weights, deterministic=not train)
        out = jnp.einsum("bhqk,bkhd->bqhd", attended.astype(v.dtype), v)
        out = nn.DenseGeneral(
            features, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype, name="out"
        )(out)
        return out, weights


class CNNLSTM(nn.Module):
    """Seed 001's CNN + LSTM + attention model with a technical-indicator branch (causal).

    Attributes:
        conv_features: Conv1d output channels (seed 64).
        kernel_size: Conv1d kernel (seed 3), 'CAUSAL' padding.
        hidden_size: LSTM width (seed 128). num_layers: LSTM depth (seed 2).
        num_heads: attention heads (seed 4).
        n_indicators: width of the technical-indicator branch; 0 disables it (then `indicators` must be None).
        indicator_columns: where the branch reads its indicators when the call gives no `indicators`: these
            feature columns of `x` at the decision bar, ``x[:, -1, indicator_columns]`` (the window already holds
            the pipeline's indicators, computed from bars <= t). None: the first `n_indicators` columns.
            Experiment runs set it by feature name (seed 001's RSI, MACD, MACD signal and Bollinger bands:
            `trading_jax.training.dataset.SEED_INDICATORS`), so the branch never reads zeros.
        indicator_features: technical branch width (seed 64).
        head_hidden: fused head width (seed 64).
        dropout: seed 0.2 (after the conv, between LSTM layers, in the head).
        n_outputs: regression outputs (seed `output_dim`; default 1).

    Args (call):
        x: ``[batch, time, F]`` price/volume features.
        indicators: optional ``[batch, n_indicators]`` technical indicators at the decision bar (default:
            ``x[:, -1, indicator_columns]``).

    Returns a dict:
        ``"prediction"`` ``[batch, n_outputs]`` float32; ``"sequence"`` ``[batch, time, hidden]`` (post
        attention, causal); ``"attention"`` ``[batch, time]`` the last step's attention weights (mean over
        heads, sum to 1); ``"features"`` ``[batch, hidden + indicator_features]`` the fused head input.
    """

    conv_features: int = 64
    kernel_size: int = 3
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    n_indicators: int = 0
    indicator_columns: tuple[int, ...] | None = None
    indicator_features: int = 64
    head_hidden: int = 64
    dropout: float = 0.2
    n_outputs: int = 1
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array, indicators: Array | None = None, *, train: bool = False) -> dict[str, Array]:
        h = nn.Conv(self.conv_features, (self.kernel_size,), padding="CAUSAL", dtype=self.dtype, name="conv")(x)
        h = nn.LayerNorm(dtype=self.dtype, name="conv_norm")(nn.relu(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        seq = StackedLSTM(
            self.hidden_size, self.num_layers, dropout=self.dropout, dtype=self.dtype, name="lstm"
        )(h, train=train)
        time = seq.shape[1]
        causal = jnp.tril(jnp.ones((time, time), bool))
        attended, weights = MultiHeadAttention(self.num_heads, dtype=self.dtype, name="attention")(
            seq, seq, causal, train=train
        )
        seq = nn.LayerNorm(dtype=self.dtype, name="attention_norm")(seq + attended)
        feats = seq[:, -1]
        if self.n_indicators > 0:
            if indicators is None:
                columns = tuple(range(self.n_indicators)) if self.indicator_columns is None \
                    else tuple(self.indicator_columns)
                if len(columns) != self.n_indicators or not all(0 <= c < x.shape[-1] for c in columns):
                    raise ValueError(f"indicator_columns {list(columns)} must name n_indicators={self.n_indicators} "
                                     f"feature columns of x (it has {x.shape[-1]})")
                indicators = x[:, -1, jnp.asarray(columns)]
            if indicators.shape[-1] != self.n_indicators:
                raise ValueError(f"indicators has {indicators.shape[-1]} columns, expected n_indicators={self.n_indicators}")
            tech = nn.Dense(self.indicator_features, dtype=self.dtype, name="technical")(indicators)
            feats = jnp.concatenate([feats, tech.astype(feats.dtype)], axis=-1)
        elif indicators is not None:
            raise ValueError("indicators were given but the model has n_indicators=0")
        y = nn.relu(nn.Dense(self.head_hidden, dtype=self.dtype, name="head_hidden")(feats))
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        prediction = nn.Dense(self.n_outputs, dtype=self.dtype, name="head")(y)
        return {
            "prediction": prediction.astype(jnp.float32),
            "sequence": seq,
            "attention": weights[:, :, -1, :].mean(axis=1),
            "features": feats,
        }


class CNNLSTMHybrid(nn.Module):
    """Seed 003's CNN+LSTM hybrid: multi-scale convolutions, attention, BiLSTM, attention pooling, two heads.

    Attributes:
        cnn_filters: channels per conv branch (concatenated width ``len(kernel_sizes) * cnn_filters``).
        kernel_sizes: conv branches (seed 3, 5, 7, 11).
        conv_padding: 'SAME' (seed, looks up to k//2 bars ahead inside the window) or 'CAUSAL'.
        lstm_hidden: H per direction (output width 2H). num_layers: BiLSTM depth (seed 3).
        num_heads: heads of both attentions (seed 8).
        dropout: between LSTM layers, on the CNN attention output and before the heads (seed 0.3).
        num_classes: classifier outputs (seed 3: down/hold/up). n_outputs: regressor outputs (seed 1).

    Returns a dict:
        ``"logits"`` ``[batch, num_classes]`` and ``"prediction"`` ``[batch, n_outputs]`` (float32);
        ``"sequence"`` ``[batch, time, 2H]`` BiLSTM hidden states; ``"attention"`` ``[batch, time]`` the
        pooling weights (mean over heads, sum to 1); ``"attention_heads"`` ``[batch, heads, time]``;
        ``"features"`` ``[batch, 2H]`` the pooled representation.
    """

    cnn_filters: int = 64
    kernel_sizes: Sequence[int] = (3, 5, 7, 11)
    conv_padding: str = "SAME"
    lstm_hidden: int = 128
    num_layers: int = 3
    num_heads: int = 8
    dropout: float = 0.3
    num_classes: int = 3
    n_outputs: int = 1
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> dict[str, Array]:
        branches = [
            nn.relu(nn.Conv(self.cnn_filters, (k,), padding=self.conv_padding, dtype=self.dtype, name=f"conv_{k}")(x))
            for k in self.kernel_sizes
        ]
        c = jnp.concatenate(branches, axis=-1)
        attended, _ = MultiHeadAttention(self.num_heads, dtype=self.dtype, name="cnn_attention")(c, c, train=train)
        attended = nn.Dropout(self.dropout)(attended, deterministic=not train)
        c = nn.LayerNorm(dtype=self.dtype, name="cnn_norm")(c + attended)
        seq = StackedLSTM(
            self.lstm_hidden, self.num_layers, bidirectional=True, dropout=self.dropout, residual=True,
            dtype=self.dtype, name="lstm",
        )(c, train=train)
        pooled, weights = MultiHeadAttention(self.num_heads, dtype=self.dtype, name="lstm_attention")(
            seq[:, -1:], seq, train=train
        )
        pooled = pooled[:, 0]
        feats = nn.Dropout(self.dropout)(pooled, deterministic=not train)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(feats)
        prediction = nn.Dense(self.n_outputs, dtype=self.dtype, name="regressor")(feats)
        heads = weights[:, :, 0, :]
        return {
            "logits": logits.astype(jnp.float32),
            "prediction": prediction.astype(jnp.float32),
            "sequence": seq,
            "attention": heads.mean(axis=1),
            "attention_heads": heads,
            "features": pooled,
        }


@register(
    "cnn_lstm",
    presets={
        # Seed 001: Conv1d(in, 64, 3), LSTM(64 -> 128, 2 layers, dropout 0.2), MultiheadAttention(128, 4),
        # Linear(n_indicators, 64), Linear(192, 64) -> Linear(64, output_dim). n_indicators=5: the seed's
        # technical features (RSI, MACD, signal, Bollinger upper and lower).
        "seed": dict(conv_features=64, kernel_size=3, hidden_size=128, num_layers=2, num_heads=4,
                     n_indicators=5, indicator_features=64, head_hidden=64, dropout=0.2, n_outputs=1),
        "tiny": dict(conv_features=8, kernel_size=3, hidden_size=16, num_layers=1, num_heads=2,
                     n_indicators=3, indicator_features=8, head_hidden=16, dropout=0.1, n_outputs=1),
    },
)
def cnn_lstm(**cfg) -> CNNLSTM:
    """Seed 001's CNN + LSTM + attention model (causal). Keyword args: the `CNNLSTM` fields."""
    return CNNLSTM(**cfg)


@register(
    "cnn_lstm_hybrid",
    presets={
        # Seed 003 section 3: kernels 3/5/7/11, MultiHeadAttention(4*filters, 8), BiLSTM 3 layers dropout 0.3,
        # MultiHeadAttention(2*hidden, 8), classifier + regressor. Filter and hidden sizes are not given.
        "seed": dict(cnn_filters=64, kernel_sizes=(3, 5, 7, 11), lstm_hidden=128, num_layers=3, num_heads=8,
                     dropout=0.3, num_classes=3, n_outputs=1),
        "tiny": dict(cnn_filters=4, kernel_sizes=(3, 5, 7, 11), lstm_hidden=8, num_layers=2, num_heads=2,
                     dropout=0.1, num_classes=3, n_outputs=1),
    },
)
def cnn_lstm_hybrid(**cfg) -> CNNLSTMHybrid:
    """Seed 003's CNN+LSTM hybrid (not causal inside the window). Keyword args: the `CNNLSTMHybrid` fields."""
    if "kernel_sizes" in cfg:
        cfg["kernel_sizes"] = tuple(cfg["kernel_sizes"])  # hashable module (static jit argument)
    return CNNLSTMHybrid(**cfg)
