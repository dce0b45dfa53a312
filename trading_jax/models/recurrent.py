"""Recurrent networks: an LSTM whose recurrence is a plain `jax.lax.scan`, BiLSTM, stacks, attention pooling.

The recurrence is written by hand (no `nn.RNN`/`nn.scan` lifting): the layer creates its weights with
`self.param`, projects every time step's input in one batched matmul, and runs `jax.lax.scan` over time
with the weights captured by closure. The compiled program is therefore a single `scan` (a `while` loop in
HLO), which keeps `jax.export` and ONNX export working (DESIGN.md, principle 4).

LSTM equations (gate order i, f, g, o in the fused weight matrices; `[.]` a slice of width H):

    z_t = x_t @ W_x + h_{t-1} @ W_h + b                      W_x: [F, 4H], W_h: [H, 4H], b: [4H]
    i_t = sigmoid(z_t[i])                                   input gate
    f_t = sigmoid(z_t[f])                                   forget gate (bias initialised to 1.0)
    g_t = tanh(z_t[g])                                      candidate cell
    o_t = sigmoid(z_t[o])                                   output gate
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)

with h_0 = c_0 = 0 unless an initial carry is given. One layer has 4 * (F*H + H*H + H) parameters (a single
bias vector, where PyTorch keeps two). A `reverse=True` layer runs t = T-1 .. 0, so its output at t
summarises bars t..T-1 (PyTorch's backward direction).

Registered models (see `registry.create`):

* ``"lstm"``: stacked unidirectional LSTM, regression head on the last step. Causal: ``sequence[:, t]``
  depends on bars <= t only.
* ``"lstm_attention"``: seed 002's LSTM-attention model: 3 stacked bidirectional LSTM layers of 256 units,
  additive (Bahdanau) attention pooling over time, dropout 0.2, a linear regression head. The backward
  direction reads the whole window, so the model is not causal *inside* the window; that is fine for a
  decision at the window's last bar because the window itself ends at the decision bar (no future bars).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from trading_jax.models.registry import register

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]

__all__ = [
    "LSTM",
    "BiLSTM",
    "StackedLSTM",
    "AdditiveAttentionPooling",
    "LSTMRegressor",
    "LSTMAttentionModel",
    "lstm_cell_step",
    "lstm_param_count",
    "forget_bias_init",
]


def lstm_param_count(in_features: int, hidden_size: int) -> int:
    """Parameters of one LSTM layer (one direction): ``4 * (F*H + H*H + H)``."""
    return 4 * (in_features * hidden_size + hidden_size * hidden_size + hidden_size)


def forget_bias_init(forget_bias: float = 1.0) -> Initializer:
    """Bias initialiser for the fused ``[4H]`` gate bias: zeros, with the forget slice set to `forget_bias`."""

    def init(key, shape, dtype=jnp.float32):
        del key
        (size,) = shape
        hidden = size // 4
        return jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(forget_bias)

    return init


def lstm_cell_step(recurrent_kernel: Array, carry: tuple[Array, Array], projected_x: Array):
    """One LSTM step given the already-projected input ``x_t @ W_x + b``.

    Args:
        recurrent_kernel: ``W_h`` ``[H, 4H]`` in the compute dtype.
        carry: ``(h, c)``, each ``[batch, H]``; ``c`` is kept in float32.
        projected_x: ``x_t @ W_x + b`` ``[batch, 4H]``.

    Returns:
        ``((h_t, c_t), h_t)``, the scan convention.
    """
    h, c = carry
    z = projected_x + h @ recurrent_kernel
    i, f, g, o = jnp.split(z.astype(jnp.float32), 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = (jax.nn.sigmoid(o) * jnp.tanh(c)).astype(projected_x.dtype)
    return (h, c), h


class LSTM(nn.Module):
    """One LSTM layer over ``[batch, time, features]``, recurrence a plain `jax.lax.scan`.

    Params: ``input_kernel`` ``[F, 4H]``, ``recurrent_kernel`` ``[H, 4H]`` (orthogonal init), ``bias``
    ``[4H]`` (forget slice 1.0), all float32 (`param_dtype`); compute in `dtype` (e.g. bfloat16) with the
    cell state in float32.

    Attributes:
        hidden_size: H.
        reverse: run from the last bar to the first (output at t summarises bars t..T-1).
        dtype: compute dtype (None: float32 / the input's promoted type).
    """

    hidden_size: int
    reverse: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    recurrent_init: Initializer = nn.initializers.orthogonal()
    forget_bias: float = 1.0

    @nn.compact
    def __call__(self, x: Array, initial_carry: tuple[Array, Array] | None = None, *, return_carry: bool = False):
        """Run the layer.

        Args:
            x: ``[batch, time, F]``.
            initial_carry: optional ``(h_0, c_0)``, each ``[batch, H]``; zeros when None.
            return_carry: also return the final ``(h, c)`` (after bar T-1, or bar 0 when `reverse`).

        Returns:
            ``[batch, time, H]`` hidden states (and the final carry when `return_carry`).
        """
        hidden = self.hidden_size
        w_x = self.param("input_kernel", self.kernel_init, (x.shape[-1], 4 * hidden), self.param_dtype)
        w_h = self.param("recurrent_kernel", self.recurrent_init, (hidden, 4 * hidden), self.param_dtype)
        b = self.param("bias", forget_bias_init(self.forget_bias), (4 * hidden,), self.param_dtype)
        x, w_x, w_h, b = nn.dtypes.promote_dtype(x, w_x, w_h, b, dtype=self.dtype)

        # All input projections at once (one big matmul), time-major for the scan.
        projected = jnp.einsum("btf,fg->tbg", x, w_x) + b
        batch = x.shape[0]
        if initial_carry is None:
            carry = (jnp.zeros((batch, hidden), x.dtype), jnp.zeros((batch, hidden), jnp.float32))
        else:
            carry = (initial_carry[0].astype(x.dtype), initial_carry[1].astype(jnp.float32))

        def step(carry, projected_t):
            return lstm_cell_step(w_h, carry, projected_t)

        carry, ys = jax.lax.scan(step, carry, projected, reverse=self.reverse)
        ys = jnp.swapaxes(ys, 0, 1)
        return (ys, carry) if return_carry else ys


class BiLSTM(nn.Module):
    """Bidirectional LSTM: ``concat([forward(x), backward(x)], -1)`` -> ``[batch, time, 2H]``.

    The two directions have separate params (submodules ``forward`` and ``backward``); ``backward`` is an
    `LSTM` with ``reverse=True``, i.e. ``backward(x) == flip(LSTM_same_params(flip(x)))`` along time.
    Not causal: the output at t depends on every bar of the window.
    """

    hidden_size: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fwd = LSTM(self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name="forward")(x)
        bwd = LSTM(self.hidden_size, reverse=True, dtype=self.dtype, param_dtype=self.param_dtype, name="backward")(x)
        return jnp.concatenate([fwd, bwd], axis=-1)


class StackedLSTM(nn.Module):
    """`num_layers` LSTM (or BiLSTM) layers, dropout between layers (not after the last, as PyTorch).

    Attributes:
        hidden_size: H per direction.
        num_layers: depth.
        bidirectional: BiLSTM layers (output width 2H) instead of forward LSTMs (width H).
        dropout: rate applied to each layer's output except the last's, when ``train=True``.
        residual: add a skip connection ``y = layer(x) + x`` on layers whose input and output widths match
            (every layer but the first when the input width differs).
        dtype: compute dtype.

    Input ``[batch, time, F]`` -> output ``[batch, time, H or 2H]`` (the last layer's hidden states).
    """

    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    residual: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        for layer in range(self.num_layers):
            if self.bidirectional:
                y = BiLSTM(self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name=f"layer_{layer}")(x)
            else:
                y = LSTM(self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name=f"layer_{layer}")(x)
            if self.residual and y.shape[-1] == x.shape[-1]:
                y = y + x.astype(y.dtype)
            if layer < self.num_layers - 1 and self.dropout > 0:
                y = nn.Dropout(self.dropout)(y, deterministic=not train)
            x = y
        return x


class AdditiveAttentionPooling(nn.Module):
    """Additive (Bahdanau) attention pooling over time.

        e_t = v^T tanh(W h_t + b)          W: [D, A], v: [A]
        a   = softmax_t(e)                 (masked steps get weight 0)
        context = sum_t a_t h_t

    Attributes:
        attention_size: A (None: the input width D).

    Args (call):
        h: ``[batch, time, D]``.
        mask: optional ``[batch, time]`` bool, True where a step may be attended.

    Returns:
        ``(context [batch, D], weights [batch, time])``; the weights (float32) sum to 1 over time.
    """

    attention_size: int | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: Array, mask: Array | None = None) -> tuple[Array, Array]:
        size = self.attention_size or h.shape[-1]
        hidden = jnp.tanh(nn.Dense(size, dtype=self.dtype, param_dtype=self.param_dtype, name="query")(h))
        scores = nn.Dense(1, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, name="score")(hidden)
        scores = scores[..., 0].astype(jnp.float32)
        if mask is not None:
            scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1)
        context = jnp.einsum("bt,btd->bd", weights.astype(h.dtype), h)
        return context, weights


class LSTMRegressor(nn.Module):
    """Stacked unidirectional LSTM with a linear regression head on the last step (registered as ``"lstm"``).

    Causal: ``sequence[:, t]`` uses bars <= t only, and ``prediction`` uses the whole window (ending at the
    decision bar).

    Returns a dict:
        ``"prediction"`` ``[batch, n_outputs]`` (float32), ``"sequence"`` ``[batch, time, H]`` (last layer's
        hidden states), ``"features"`` ``[batch, H]`` (the last step's hidden state fed to the head).
    """

    hidden_size: int = 256
    num_layers: int = 3
    dropout: float = 0.2
    n_outputs: int = 1
    residual: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> dict[str, Array]:
        seq = StackedLSTM(
            self.hidden_size, self.num_layers, bidirectional=False, dropout=self.dropout,
            residual=self.residual, dtype=self.dtype, name="lstm",
        )(x, train=train)
        last = seq[:, -1]
        feats = nn.Dropout(self.dropout)(last, deterministic=not train)
        prediction = nn.Dense(self.n_outputs, dtype=self.dtype, name="head")(feats)
        return {"prediction": prediction.astype(jnp.float32), "sequence": seq, "features": last}


class LSTMAttentionModel(nn.Module):
    """Seed 002's LSTM with attention (registered as ``"lstm_attention"``).

    ``x [batch, time, F]`` -> stacked (Bi)LSTM ``[batch, time, D]`` (D = 2H when bidirectional) ->
    additive attention pooling over time -> dropout -> Dense(n_outputs).
    Residual connections between LSTM layers of equal width (seed 002 lists "residual connections").
    Bidirectional, hence not causal inside the window; the window ends at the decision bar, so nothing
    after the decision leaks in.

    Returns a dict:
        ``"prediction"`` ``[batch, n_outputs]`` float32; ``"sequence"`` ``[batch, time, D]``;
        ``"attention"`` ``[batch, time]`` pooling weights (sum to 1); ``"features"`` ``[batch, D]`` the
        pooled context.
    """

    hidden_size: int = 256
    num_layers: int = 3
    bidirectional: bool = True
    attention_size: int | None = None
    dropout: float = 0.2
    n_outputs: int = 1
    residual: bool = True
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> dict[str, Array]:
        seq = StackedLSTM(
            self.hidden_size, self.num_layers, bidirectional=self.bidirectional, dropout=self.dropout,
            residual=self.residual, dtype=self.dtype, name="lstm",
        )(x, train=train)
        context, weights = AdditiveAttentionPooling(self.attention_size, dtype=self.dtype, name="attention")(seq)
        feats = nn.Dropout(self.dropout)(context, deterministic=not train)
        prediction = nn.Dense(self.n_outputs, dtype=self.dtype, name="head")(feats)
        return {
            "prediction": prediction.astype(jnp.float32),
            "sequence": seq,
            "attention": weights,
            "features": context,
        }


@register(
    "lstm",
    presets={
        # No seed document specifies a plain LSTM; the seed preset reuses seed 002's sizes, one direction.
        "seed": dict(hidden_size=256, num_layers=3, dropout=0.2, n_outputs=1),
        "tiny": dict(hidden_size=16, num_layers=2, dropout=0.1, n_outputs=1),
    },
)
def lstm(**cfg) -> LSTMRegressor:
    """Stacked unidirectional LSTM regressor (causal). Keyword args: the `LSTMRegressor` fields."""
    return LSTMRegressor(**cfg)


@register(
    "lstm_attention",
    presets={
        # Seed 002: input_size=10 (inferred here), hidden_size=256, num_layers=3, bidirectional, dropout=0.2,
        # attention over time, Linear(2*256, 1).
        "seed": dict(hidden_size=256, num_layers=3, bidirectional=True, dropout=0.2, n_outputs=1),
        "tiny": dict(hidden_size=8, num_layers=2, bidirectional=True, dropout=0.1, n_outputs=1),
    },
)
def lstm_attention(**cfg) -> LSTMAttentionModel:
    """Seed 002's bidirectional LSTM with additive attention. Keyword args: the `LSTMAttentionModel` fields."""
    return LSTMAttentionModel(**cfg)
