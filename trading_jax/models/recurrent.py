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

from functools import partial
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
    "lstm_recurrence",
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


def _gate_constants(hidden: int) -> tuple[Array, Array]:
    """Per-column ``(scale, beta)`` ``[4H]`` float32 for computing all four gates with one tanh.

    ``sigmoid(z) = 0.5 + 0.5 tanh(z / 2)``, so ``act(z) = tanh(z * scale) * scale + beta`` with
    ``scale = 0.5, beta = 0.5`` on the i, f, o blocks (sigmoid) and ``scale = 1, beta = 0`` on g (tanh).
    Its derivative is ``scale^2 - (act(z) - beta)^2`` (``a(1-a)`` for a sigmoid, ``1 - g^2`` for tanh).
    """
    block = lambda value: jnp.full((hidden,), value, jnp.float32)  # noqa: E731
    scale = jnp.concatenate([block(0.5), block(0.5), block(1.0), block(0.5)])
    beta = jnp.concatenate([block(0.5), block(0.5), block(0.0), block(0.5)])
    return scale, beta


def _recurrence_scan(w_h: Array, projected: Array, h0: Array, c0: Array, reverse: bool, residuals: bool):
    """The forward scan of `lstm_recurrence`.

    With `residuals`, each step also emits what the backward pass needs (see `lstm_recurrence`):
    ``h_{t-1}``, ``k_t = [g, c_{t-1}, i, tanh(c_t)] * act'(z_t)`` ``[batch, 4H]``,
    ``q_t = o_t * (1 - tanh(c_t)^2)`` and ``f_t``, all float32 but ``h_{t-1}``.
    """
    hidden = h0.shape[-1]
    scale, beta = _gate_constants(hidden)

    def step(carry, projected_t):
        h, c = carry
        z = (projected_t + h @ w_h).astype(jnp.float32)
        a = jnp.tanh(z * scale) * scale + beta  # [i, f, g, o] activated, one tanh
        i, f, g, o = (a[:, k * hidden : (k + 1) * hidden] for k in range(4))
        c_new = f * c + i * g
        tanh_c = jnp.tanh(c_new)
        h_new = (o * tanh_c).astype(projected_t.dtype)
        if not residuals:
            return (h_new, c_new), h_new
        shifted = a - beta
        k = jnp.concatenate([g, c, i, tanh_c], axis=-1) * (scale * scale - shifted * shifted)
        return (h_new, c_new), (h_new, h, k, o * (1.0 - tanh_c * tanh_c), f)

    return jax.lax.scan(step, (h0, c0), projected, reverse=reverse)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def lstm_recurrence(w_h: Array, projected: Array, h0: Array, c0: Array, reverse: bool = False):
    """The LSTM recurrence over time-major projected inputs, a plain `jax.lax.scan` with a hand-written VJP.

    Args:
        w_h: ``W_h`` ``[H, 4H]`` in the compute dtype.
        projected: ``x_t @ W_x + b`` for every step, time-major ``[T, batch, 4H]`` (compute dtype).
        h0: ``[batch, H]`` (compute dtype); c0: ``[batch, H]`` float32.
        reverse: run t = T-1 .. 0.

    Returns:
        ``(hs [T, batch, H], (h_last, c_last))``; equal to scanning `lstm_cell_step`, with all gates
        computed by one tanh: ``sigmoid(z) = 0.5 + 0.5 tanh(z/2)``, i.e. ``a = tanh(z * s) * s + beta``
        with ``s = 0.5, beta = 0.5`` on i, f, o and ``s = 1, beta = 0`` on g (`_gate_constants`).

    Backward. Differentiating through the scan would accumulate ``dW_h`` inside the loop and keep every
    intermediate; here the loop only carries what is sequential. With ``a_t = [i, f, g, o]``,
    ``act'(z) = s^2 - (a - beta)^2`` (``a(1-a)`` for a sigmoid, ``1 - g^2`` for tanh), and the forward pass
    saving ``k_t = [g_t, c_{t-1}, i_t, tanh(c_t)] * act'(z_t)``, ``q_t = o_t (1 - tanh(c_t)^2)`` and
    ``f_t``, the loop runs t in the opposite order to the forward pass from the final-carry cotangents
    ``(dh, dc)``:

        dh_t = dys_t + dh                        (dh: from step t+1, or the final-carry cotangent)
        dc_t = dc + dh_t * q_t
        dz_t = [dc_t, dc_t, dc_t, dh_t] * k_t    (= dL/dz_t: the i, f, g, o blocks)
        dh   = dz_t @ W_h^T,   dc = dc_t * f_t   (carried to step t-1)

    and after the loop ``dW_h = sum_t h_{t-1}^T dz_t`` (one matmul), ``dprojected = dz``, and
    ``(dh_0, dc_0)`` the last carried ``(dh, dc)``.

    This primal body runs only when nothing differentiates (inference, `jax.export`, ONNX export); training
    runs `_lstm_recurrence_fwd`. Here a reversed recurrence is written as flip -> forward scan -> flip,
    which performs the same per-step arithmetic in the same order (outputs bit-identical to
    ``scan(reverse=True)``), because the ONNX converter (jax2onnx) cannot lower a reverse ``scan``.
    """
    if reverse:
        (h, c), hs = _recurrence_scan(w_h, jnp.flip(projected, 0), h0, c0, False, residuals=False)
        return jnp.flip(hs, 0), (h, c)
    (h, c), hs = _recurrence_scan(w_h, projected, h0, c0, False, residuals=False)
    return hs, (h, c)


def _lstm_recurrence_fwd(w_h, projected, h0, c0, reverse):
    (h, c), (hs, h_prevs, k, q, f) = _recurrence_scan(w_h, projected, h0, c0, reverse, residuals=True)
    return (hs, (h, c)), (w_h, h_prevs, k, q, f, c0)


def _lstm_recurrence_bwd(reverse, res, cotangents):
    w_h, h_prevs, k, q, f, c0 = res
    dys, (dh_last, dc_last) = cotangents
    w_h_t = w_h.T
    compute = h_prevs.dtype

    def step(carry, xs):
        dh, dc = carry
        dy, k_t, q_t, f_t = xs
        dh = dh + dy.astype(jnp.float32)
        dc = dc + dh * q_t
        dz = (jnp.concatenate([dc, dc, dc, dh], axis=-1) * k_t).astype(compute)
        return ((dz @ w_h_t).astype(jnp.float32), dc * f_t), dz

    init = (dh_last.astype(jnp.float32), dc_last.astype(jnp.float32))
    (dh0, dc0), dz = jax.lax.scan(step, init, (dys, k, q, f), reverse=not reverse)
    dw_h = jnp.einsum("tbh,tbg->hg", h_prevs, dz, preferred_element_type=jnp.float32)
    return dw_h.astype(w_h.dtype), dz, dh0.astype(compute), dc0.astype(c0.dtype)


lstm_recurrence.defvjp(_lstm_recurrence_fwd, _lstm_recurrence_bwd)


def _lstm_params(module: nn.Module, in_features: int) -> tuple[Array, Array, Array]:
    """Create (or fetch) one direction's ``input_kernel``, ``recurrent_kernel``, ``bias`` on `module`."""
    hidden = module.hidden_size
    w_x = module.param("input_kernel", module.kernel_init, (in_features, 4 * hidden), module.param_dtype)
    w_h = module.param("recurrent_kernel", module.recurrent_init, (hidden, 4 * hidden), module.param_dtype)
    b = module.param("bias", forget_bias_init(module.forget_bias), (4 * hidden,), module.param_dtype)
    return w_x, w_h, b


def _initial_carry(initial_carry, batch: int, hidden: int, dtype) -> tuple[Array, Array]:
    if initial_carry is None:
        return jnp.zeros((batch, hidden), dtype), jnp.zeros((batch, hidden), jnp.float32)
    return initial_carry[0].astype(dtype), initial_carry[1].astype(jnp.float32)


class LSTM(nn.Module):
    """One LSTM layer over ``[batch, time, features]``, recurrence a plain `jax.lax.scan`.

    Params: ``input_kernel`` ``[F, 4H]``, ``recurrent_kernel`` ``[H, 4H]`` (orthogonal init), ``bias``
    ``[4H]`` (forget slice 1.0), all float32 (`param_dtype`); compute in `dtype` (e.g. bfloat16) with the
    cell state in float32. The recurrence is `lstm_recurrence` (hand-written VJP).

    Attributes:
        hidden_size: H.
        reverse: run from the last bar to the first (output at t summarises bars t..T-1).
        dtype: compute dtype (None: float32 / the input's promoted type).
        time_major: input and output are ``[time, batch, .]`` (saves two transposes inside a stack).
    """

    hidden_size: int
    reverse: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    recurrent_init: Initializer = nn.initializers.orthogonal()
    forget_bias: float = 1.0
    time_major: bool = False

    @nn.compact
    def __call__(self, x: Array, initial_carry: tuple[Array, Array] | None = None, *, return_carry: bool = False):
        """Run the layer.

        Args:
            x: ``[batch, time, F]`` (``[time, batch, F]`` when `time_major`).
            initial_carry: optional ``(h_0, c_0)``, each ``[batch, H]``; zeros when None.
            return_carry: also return the final ``(h, c)`` (after bar T-1, or bar 0 when `reverse`).

        Returns:
            ``[batch, time, H]`` hidden states (``[time, batch, H]`` when `time_major`), and the final carry
            when `return_carry`.
        """
        w_x, w_h, b = _lstm_params(self, x.shape[-1])
        x, w_x, w_h, b = nn.dtypes.promote_dtype(x, w_x, w_h, b, dtype=self.dtype)
        # All input projections at once (one big matmul), time-major for the scan.
        if self.time_major:
            projected = jnp.einsum("tbf,fg->tbg", x, w_x) + b
        else:
            projected = jnp.einsum("btf,fg->btg", x, w_x).swapaxes(0, 1) + b
        h0, c0 = _initial_carry(initial_carry, projected.shape[1], self.hidden_size, x.dtype)
        ys, carry = lstm_recurrence(w_h, projected, h0, c0, self.reverse)
        if not self.time_major:
            ys = jnp.swapaxes(ys, 0, 1)
        return (ys, carry) if return_carry else ys


class _LSTMKernels(nn.Module):
    """Holds one direction's LSTM params (same names, shapes and initialisers as `LSTM`'s)."""

    hidden_size: int
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    recurrent_init: Initializer = nn.initializers.orthogonal()
    forget_bias: float = 1.0

    @nn.compact
    def __call__(self, in_features: int) -> tuple[Array, Array, Array]:
        return _lstm_params(self, in_features)


class BiLSTM(nn.Module):
    """Bidirectional LSTM: ``concat([forward(x), backward(x)], -1)`` -> ``[batch, time, 2H]``.

    The two directions have separate params (``forward/...`` and ``backward/...``, each laid out as an
    `LSTM`'s); ``backward`` runs reversed, i.e. ``backward(x) == flip(LSTM_same_params(flip(x)))`` along
    time. Both directions' input projections are one matmul. Not causal: the output at t depends on every
    bar of the window.

    Attributes:
        time_major: input and output are ``[time, batch, .]``.
    """

    hidden_size: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    time_major: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        hidden = self.hidden_size
        fwd = _LSTMKernels(hidden, self.param_dtype, name="forward")(x.shape[-1])
        bwd = _LSTMKernels(hidden, self.param_dtype, name="backward")(x.shape[-1])
        x, *params = nn.dtypes.promote_dtype(x, *fwd, *bwd, dtype=self.dtype)
        (w_x_f, w_h_f, b_f), (w_x_b, w_h_b, b_b) = params[:3], params[3:]
        w_x = jnp.concatenate([w_x_f, w_x_b], axis=-1)
        b = jnp.concatenate([b_f, b_b])
        if self.time_major:
            projected = jnp.einsum("tbf,fg->tbg", x, w_x) + b
        else:
            projected = jnp.einsum("btf,fg->btg", x, w_x).swapaxes(0, 1) + b
        h0, c0 = _initial_carry(None, projected.shape[1], hidden, x.dtype)
        ys_f, _ = lstm_recurrence(w_h_f, projected[..., : 4 * hidden], h0, c0, False)
        ys_b, _ = lstm_recurrence(w_h_b, projected[..., 4 * hidden :], h0, c0, True)
        ys = jnp.concatenate([ys_f, ys_b], axis=-1)
        return ys if self.time_major else jnp.swapaxes(ys, 0, 1)


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

    Input ``[batch, time, F]`` -> output ``[batch, time, H or 2H]`` (the last layer's hidden states). The
    layers run time-major (one transpose in, one out).
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
        x = jnp.swapaxes(x, 0, 1)  # [time, batch, F]
        for layer in range(self.num_layers):
            layer_cls = BiLSTM if self.bidirectional else LSTM
            y = layer_cls(
                self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, time_major=True,
                name=f"layer_{layer}",
            )(x)
            if self.residual and y.shape[-1] == x.shape[-1]:
                y = y + x.astype(y.dtype)
            if layer < self.num_layers - 1 and self.dropout > 0:
                y = nn.Dropout(self.dropout)(y, deterministic=not train)
            x = y
        return jnp.swapaxes(x, 0, 1)


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
