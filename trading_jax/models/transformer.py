"""Transformer encoders of the design documents: multi-horizon price prediction and direction classification.

Two registered models share one encoder written here (self-attention is hand-written so that the
attention weights of every layer can be returned):

* ``"price_transformer"`` -- seed 000's ``PricePredictionTransformer``: input projection, sinusoidal
  positional encoding, an encoder stack and one head per prediction horizon reading the last time
  step, each predicting ``[price change, volatility, confidence]``.
* ``"direction_transformer"`` -- seed 002's ``TransformerPredictor``: the same encoder on a 60-step
  window, a pooling of the hidden states (last step by default) and a classifier to 3 logits, whose
  classes follow `trading_jax.data.labels` (``DOWN, FLAT, UP = 0, 1, 2``); it returns the attention
  weights of every layer for interpretability.

Encoder layer (``EncoderLayer``). The seeds use PyTorch's ``nn.TransformerEncoderLayer`` defaults,
which are **post-LN** with a **ReLU** feed-forward, so that is the default here
(``norm_first=False, activation="relu"``)::

    post-LN:  h = LN1(x + Drop(MHSA(x)));   y = LN2(h + Drop(W2 Drop(act(W1 h + b1)) + b2))
    pre-LN:   h = x + Drop(MHSA(LN1(x)));   y = h + Drop(W2 Drop(act(W1 LN2(h) + b1)) + b2)

With ``norm_first=True`` (pre-LN, easier to train deep) a final LayerNorm follows the stack, as in
PyTorch's ``TransformerEncoder(norm=LayerNorm)`` usage. Dropout sites match PyTorch: after the
positional encoding, on the attention probabilities, after the attention block, after the FF
activation and after the FF block. Dropout is active only with ``train=True`` and draws from the
``"dropout"`` rng stream.

Attention (``MultiHeadSelfAttention``): for each head ``A = softmax(Q K^T / sqrt(d_head) + M)`` with
``M[i, j] = -inf`` for ``j > i`` when ``causal=True`` (a position attends to itself and the past
only). Logits and softmax are computed in float32 whatever the compute dtype.

Positional encoding: the fixed sinusoid of Vaswani et al. (PyTorch tutorial layout),
``PE[p, 2i] = sin(p / 10000^(2i/d))``, ``PE[p, 2i+1] = cos(p / 10000^(2i/d))``, added (unscaled) to
the projected input. It is computed for the actual sequence length ``T`` (no table is stored); a
sequence longer than ``max_seq_length`` is an error, as in the seed.

Conventions (all models of the project): input ``x`` is ``[batch, time, features]``; parameters are
float32; ``dtype`` (e.g. ``jnp.bfloat16``) is the compute dtype; outputs are a dict of arrays.
Head outputs (``"horizons"``, ``"prediction"``, ``"logits"``, ...) are returned in float32;
``"sequence"`` and ``"attention"`` are in the compute dtype.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.models.registry import register

__all__ = [
    "sinusoidal_positional_encoding",
    "causal_mask",
    "MultiHeadSelfAttention",
    "EncoderLayer",
    "TransformerEncoder",
    "PricePredictionTransformer",
    "DirectionTransformer",
    "price_transformer",
    "direction_transformer",
]

Dtype = Any

_ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu}


def sinusoidal_positional_encoding(length: int, d_model: int) -> jnp.ndarray:
    """Fixed sinusoidal position encodings.

    ``PE[p, 2i] = sin(p * w_i)``, ``PE[p, 2i+1] = cos(p * w_i)`` with ``w_i = 10000^(-2i/d_model)``
    (an odd ``d_model`` drops the last cosine column).

    Args:
        length: number of positions ``T``.
        d_model: encoding width ``d``.

    Returns:
        float32 array ``[T, d]``.
    """
    position = np.arange(length, dtype=np.float64)[:, None]
    freq = np.exp(np.arange(0, d_model, 2, dtype=np.float64) * (-math.log(10000.0) / d_model))
    angles = position * freq[None, :]  # [T, ceil(d/2)]
    pe = np.zeros((length, d_model), dtype=np.float64)
    pe[:, 0::2] = np.sin(angles)
    pe[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return jnp.asarray(pe, dtype=jnp.float32)


def causal_mask(length: int) -> jnp.ndarray:
    """Boolean ``[T, T]`` mask, True where query ``i`` may attend key ``j`` (``j <= i``)."""
    return jnp.tril(jnp.ones((length, length), dtype=bool))


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention that also returns its attention probabilities.

    Parameters: ``query``, ``key``, ``value`` and ``out`` Dense layers ``d -> d`` with bias
    (``4 (d^2 + d)`` parameters, as PyTorch's ``nn.MultiheadAttention``).

    Attributes:
        num_heads: number of heads ``h``; must divide ``d_model``.
        dropout: dropout rate on the attention probabilities (train only).
        causal: mask keys after the query position.
        dtype: compute dtype (None: that of the input / float32).
    """

    num_heads: int
    dropout: float = 0.0
    causal: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Attend over the time axis.

        Args:
            x: ``[batch, T, d]``.
            train: apply dropout to the attention probabilities.

        Returns:
            ``(out [batch, T, d], weights [batch, h, T, T])``; ``weights`` are the probabilities
            before dropout (each row sums to 1).
        """
        batch, length, d_model = x.shape
        if d_model % self.num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={self.num_heads}")
        head_dim = d_model // self.num_heads
        dense = lambda name: nn.Dense(d_model, dtype=self.dtype, param_dtype=jnp.float32, name=name)

        def heads(t: jnp.ndarray) -> jnp.ndarray:  # [b, T, d] -> [b, h, T, d_head]
            return t.reshape(batch, length, self.num_heads, head_dim).transpose(0, 2, 1, 3)

        q, k, v = (heads(dense(name)(x)) for name in ("query", "key", "value"))
        logits = jnp.einsum("bhqc,bhkc->bhqk", q, k, preferred_element_type=jnp.float32)
        logits = logits.astype(jnp.float32) / math.sqrt(head_dim)
        if self.causal:
            logits = jnp.where(causal_mask(length), logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1)
        if self.causal:  # exact zeros above the diagonal
            weights = jnp.where(causal_mask(length), weights, 0.0)
        compute_dtype = self.dtype or x.dtype
        weights = weights.astype(compute_dtype)
        dropped = nn.Dropout(self.dropout, deterministic=not train)(weights)
        context = jnp.einsum("bhqk,bhkc->bhqc", dropped, v.astype(compute_dtype))
        context = context.transpose(0, 2, 1, 3).reshape(batch, length, d_model)
        return dense("out")(context), weights


class EncoderLayer(nn.Module):
    """One transformer encoder layer (post-LN by default, as PyTorch's default; see module docstring).

    Parameters: attention ``4 (d^2 + d)``, two LayerNorms ``2 * 2d``, feed-forward
    ``d f + f + f d + d`` (``f = dim_feedforward``).

    Attributes:
        num_heads: attention heads.
        dim_feedforward: hidden width of the feed-forward block.
        dropout: dropout rate (attention probabilities, residual branches, FF hidden).
        activation: ``"relu"`` (seed / PyTorch default) or ``"gelu"``.
        norm_first: pre-LN when True, post-LN when False.
        causal: causal self-attention mask.
        dtype: compute dtype.
    """

    num_heads: int
    dim_feedforward: int
    dropout: float = 0.1
    activation: str = "relu"
    norm_first: bool = False
    causal: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Args: x ``[batch, T, d]``. Returns ``(y [batch, T, d], attention [batch, h, T, T])``."""
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        d_model = x.shape[-1]
        deterministic = not train
        attention = MultiHeadSelfAttention(
            self.num_heads, self.dropout, self.causal, self.dtype, name="attention"
        )
        norm1 = nn.LayerNorm(dtype=self.dtype, param_dtype=jnp.float32, name="norm1")
        norm2 = nn.LayerNorm(dtype=self.dtype, param_dtype=jnp.float32, name="norm2")
        ff_in = nn.Dense(self.dim_feedforward, dtype=self.dtype, param_dtype=jnp.float32, name="ff_in")
        ff_out = nn.Dense(d_model, dtype=self.dtype, param_dtype=jnp.float32, name="ff_out")
        act = _ACTIVATIONS[self.activation]

        def feed_forward(h):
            h = nn.Dropout(self.dropout, deterministic=deterministic)(act(ff_in(h)))
            return nn.Dropout(self.dropout, deterministic=deterministic)(ff_out(h))

        if self.norm_first:
            a, weights = attention(norm1(x), train=train)
            x = x + nn.Dropout(self.dropout, deterministic=deterministic)(a)
            x = x + feed_forward(norm2(x))
        else:
            a, weights = attention(x, train=train)
            x = norm1(x + nn.Dropout(self.dropout, deterministic=deterministic)(a))
            x = norm2(x + feed_forward(x))
        return x, weights


class TransformerEncoder(nn.Module):
    """Input projection, sinusoidal positions (+dropout) and a stack of `EncoderLayer`.

    Parameters: projection ``F d + d`` (``F`` input features), ``num_layers`` encoder layers, and a
    final LayerNorm ``2d`` when ``norm_first``.

    Attributes: as `EncoderLayer`, plus ``d_model``, ``num_layers`` and ``max_seq_length``.
    """

    d_model: int
    num_heads: int
    num_layers: int
    dim_feedforward: int
    dropout: float = 0.1
    max_seq_length: int = 1000
    activation: str = "relu"
    norm_first: bool = False
    causal: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Encode a window.

        Args:
            x: ``[batch, T, F]`` float, ``T <= max_seq_length``.
            train: enable dropout.

        Returns:
            ``(hidden [batch, T, d], attention [batch, num_layers, h, T, T])``.

        Raises:
            ValueError: bad rank, or ``T > max_seq_length``.
        """
        if x.ndim != 3:
            raise ValueError(f"expected x of shape [batch, time, features], got shape {x.shape}")
        length = x.shape[1]
        if length > self.max_seq_length:
            raise ValueError(f"sequence length {length} exceeds max_seq_length={self.max_seq_length}")
        h = nn.Dense(self.d_model, dtype=self.dtype, param_dtype=jnp.float32, name="input_projection")(x)
        h = h + sinusoidal_positional_encoding(length, self.d_model).astype(h.dtype)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        weights = []
        for i in range(self.num_layers):
            h, w = EncoderLayer(
                num_heads=self.num_heads,
                dim_feedforward=self.dim_feedforward,
                dropout=self.dropout,
                activation=self.activation,
                norm_first=self.norm_first,
                causal=self.causal,
                dtype=self.dtype,
                name=f"layer_{i}",
            )(h, train=train)
            weights.append(w)
        if self.norm_first:
            h = nn.LayerNorm(dtype=self.dtype, param_dtype=jnp.float32, name="final_norm")(h)
        return h, jnp.stack(weights, axis=1)


def _encoder(model) -> TransformerEncoder:
    """The encoder of a model with the transformer fields (called inside its compact `__call__`)."""
    return TransformerEncoder(
        d_model=model.d_model,
        num_heads=model.num_heads,
        num_layers=model.num_layers,
        dim_feedforward=model.dim_feedforward,
        dropout=model.dropout,
        max_seq_length=model.max_seq_length,
        activation=model.activation,
        norm_first=model.norm_first,
        causal=model.causal,
        dtype=model.dtype,
        name="encoder",
    )


class PricePredictionTransformer(nn.Module):
    """Seed 000's multi-horizon price transformer.

    ``x [batch, T, F]`` -> encoder -> last hidden state ``[batch, d]`` -> one head per horizon:
    ``Dense(d // 2) - ReLU - Dropout - Dense(3)`` giving ``[price change, volatility, confidence]``.
    The raw head outputs are ``"horizons"``; ``"volatility"`` is their softplus (positive) and
    ``"confidence"`` their sigmoid (a probability). Trained under ``task = "multitask"`` (one head, the
    label horizon), the three are in the loss (`trading_jax.training.losses.multitask_loss`): the price
    change by MSE against the realised return, the volatility by MSE against the realised volatility
    of the next bars, and the confidence by cross-entropy against whether the sign of the price
    forecast was right (seed 000's weights 1.0, 0.5 and 0.8).

    Parameter count (``F`` features, ``d`` d_model, ``f`` dim_feedforward, ``L`` layers, ``H`` horizons)::

        F d + d  +  L (4 (d^2 + d) + 4 d + 2 d f + f + d)  +  [2 d if norm_first]
                 +  H (d (d//2) + d//2 + 3 (d//2) + 3)

    Attributes:
        d_model: model width (seed 512).
        num_heads: attention heads (seed 8).
        num_layers: encoder layers (seed 6).
        dim_feedforward: FF width (seed 2048).
        dropout: dropout rate (seed 0.1).
        max_seq_length: longest accepted window (seed 1000).
        horizons: prediction horizons in bars (seed ``(1, 5, 15, 60)``); one head each.
        causal: causal attention mask (seed: no mask).
        norm_first: pre-LN if True; post-LN (seed / PyTorch default) if False.
        activation: ``"relu"`` (seed) or ``"gelu"``.
        return_attention: add ``"attention"`` to the outputs (memory ``B L h T^2``).
        dtype: compute dtype (params stay float32).
    """

    d_model: int = 512
    num_heads: int = 8
    num_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    max_seq_length: int = 1000
    horizons: tuple[int, ...] = (1, 5, 15, 60)
    causal: bool = False
    norm_first: bool = False
    activation: str = "relu"
    return_attention: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> dict[str, jnp.ndarray]:
        """Predict every horizon from the last time step.

        Args:
            x: ``[batch, T, F]`` features, ``T <= max_seq_length``.
            train: enable dropout (rng stream ``"dropout"``).

        Returns:
            dict with
            ``"horizons"`` ``[batch, H, 3]`` float32: ``[price change, volatility, confidence]`` per horizon;
            ``"prediction"`` and ``"price"`` ``[batch, H]`` float32: ``horizons[..., 0]``, the price change per horizon;
            ``"volatility"`` ``[batch, H]`` float32: ``softplus(horizons[..., 1])``, the forecast volatility;
            ``"confidence"`` ``[batch, H]`` float32: ``sigmoid(horizons[..., 2])``, P(the sign of the price
            forecast is right);
            ``"sequence"`` ``[batch, T, d]``: last-layer hidden states;
            ``"attention"`` ``[batch, L, h, T, T]`` only when ``return_attention``.
        """
        hidden, attention = _encoder(self)(x, train=train)
        last = hidden[:, -1, :]
        outs = []
        for i, _ in enumerate(self.horizons):
            h = nn.Dense(self.d_model // 2, dtype=self.dtype, param_dtype=jnp.float32, name=f"head_{i}_hidden")(last)
            h = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(h))
            outs.append(nn.Dense(3, dtype=self.dtype, param_dtype=jnp.float32, name=f"head_{i}_out")(h))
        horizons = jnp.stack(outs, axis=1).astype(jnp.float32)
        result = {"horizons": horizons, "prediction": horizons[..., 0], "price": horizons[..., 0],
                  "volatility": jax.nn.softplus(horizons[..., 1]), "confidence": jax.nn.sigmoid(horizons[..., 2]),
                  "sequence": hidden}
        if self.return_attention:
            result["attention"] = attention
        return result


class DirectionTransformer(nn.Module):
    """Seed 002's direction transformer: a window (60 bars in the seed) -> DOWN / FLAT / UP logits.

    ``x [batch, T, F]`` -> encoder -> pooling (``"last"`` time step by default, or ``"mean"`` over
    time) -> ``Dense(n_classes)``. Class indices follow `trading_jax.data.labels`:
    ``DOWN, FLAT, UP = 0, 1, 2``.

    Parameter count: ``F d + d + L (4 (d^2 + d) + 4 d + 2 d f + f + d) + [2 d if norm_first] + d C + C``.

    Attributes:
        d_model, num_heads, num_layers, dim_feedforward, dropout: seed 512, 8, 6, 2048, 0.1.
        max_seq_length: longest accepted window (default 512; the seed uses 60-bar windows).
        n_classes: number of classes (3).
        pooling: ``"last"`` or ``"mean"``.
        causal: causal attention mask (default False).
        norm_first: pre-LN if True; post-LN (PyTorch default, seed) if False.
        activation: ``"relu"`` or ``"gelu"``.
        dtype: compute dtype (params stay float32).
    """

    d_model: int = 512
    num_heads: int = 8
    num_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    max_seq_length: int = 512
    n_classes: int = 3
    pooling: str = "last"
    causal: bool = False
    norm_first: bool = False
    activation: str = "relu"
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> dict[str, jnp.ndarray]:
        """Classify the direction after the window.

        Args:
            x: ``[batch, T, F]`` features.
            train: enable dropout (rng stream ``"dropout"``).

        Returns:
            dict with
            ``"logits"`` ``[batch, C]`` float32;
            ``"probabilities"`` ``[batch, C]`` float32 (softmax of the logits);
            ``"confidence"`` ``[batch]`` float32 (largest class probability);
            ``"sequence"`` ``[batch, T, d]``: last-layer hidden states;
            ``"attention"`` ``[batch, L, h, T, T]``: attention probabilities of every layer
            (rows sum to 1; zero above the diagonal when ``causal``).
        """
        if self.pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {self.pooling!r}")
        hidden, attention = _encoder(self)(x, train=train)
        pooled = hidden[:, -1, :] if self.pooling == "last" else hidden.mean(axis=1)
        logits = nn.Dense(self.n_classes, dtype=self.dtype, param_dtype=jnp.float32, name="classifier")(pooled)
        logits = logits.astype(jnp.float32)
        probabilities = jax.nn.softmax(logits, axis=-1)
        return {
            "logits": logits,
            "probabilities": probabilities,
            "confidence": probabilities.max(axis=-1),
            "sequence": hidden,
            "attention": attention,
        }


def _common(cfg: dict[str, Any]) -> dict[str, Any]:
    """Drop ``input_dim`` (inferred by Flax) and turn a dtype name into a dtype (JSON-friendly configs)."""
    cfg = dict(cfg)
    cfg.pop("input_dim", None)
    if isinstance(cfg.get("dtype"), str):
        cfg["dtype"] = jnp.dtype(cfg["dtype"])
    return cfg


_SEED = dict(d_model=512, num_heads=8, num_layers=6, dim_feedforward=2048, dropout=0.1)
_TINY = dict(d_model=16, num_heads=2, num_layers=2, dim_feedforward=32, dropout=0.1)


@register(
    "price_transformer",
    presets={
        "seed": dict(_SEED, max_seq_length=1000, horizons=(1, 5, 15, 60)),
        "tiny": dict(_TINY, max_seq_length=64, horizons=(1, 5, 15, 60)),
    },
)
def price_transformer(*, horizons: Sequence[int] = (1, 5, 15, 60), **cfg) -> PricePredictionTransformer:
    """Factory for `PricePredictionTransformer` (keyword arguments are its fields; defaults: seed sizes).

    ``input_dim`` (seed 128) is accepted and ignored: Flax infers it from ``x``. ``horizons`` may be
    any sequence (a JSON list) and ``dtype`` a name such as ``"bfloat16"``.
    """
    return PricePredictionTransformer(horizons=tuple(int(h) for h in horizons), **_common(cfg))


@register(
    "direction_transformer",
    presets={
        "seed": dict(_SEED, max_seq_length=512),
        "tiny": dict(_TINY, max_seq_length=64),
    },
)
def direction_transformer(**cfg) -> DirectionTransformer:
    """Factory for `DirectionTransformer` (keyword arguments are its fields; defaults: seed sizes).

    ``input_dim`` is accepted and ignored: Flax infers it from ``x``; ``dtype`` may be a name such as
    ``"bfloat16"``.
    """
    return DirectionTransformer(**_common(cfg))
