"""Temporal Convolutional Network (Bai, Kolter & Koltun 2018): causal dilated residual blocks.

Seed document 002 ("TemporalCNN"): 8 residual blocks with dilations 1, 2, 4, ..., 128, 64 channels,
kernel size 3, 10 input features, a linear regression head on the last time step.

Each residual block is

    h = Dropout(act(LayerNorm(CausalConv(x; k, d))))
    h = Dropout(act(LayerNorm(CausalConv(h; k, d))))
    y = act(h + r),   r = x if the channel count is unchanged, else a 1x1 convolution of x,

where `CausalConv(.; k, d)` is a 1-D convolution with kernel size k and dilation d, left-padded with
(k - 1) d zeros so that the output at step t only reads inputs at steps <= t. LayerNorm normalises
over the channels of each time step (never across time, so it keeps causality); no BatchNorm.

Receptive field (see `receptive_field`): a stack of blocks with dilations d_i and `c` convolutions
per block sees

    RF = 1 + c * sum_i (k - 1) d_i

steps. The seed sizes (k = 3, d = 1..128, c = 2) give RF = 1 + 2 * 2 * 255 = 1021 >= 256; the seed
document's "receptive field 256" is the one-convolution-per-block count with k = 2 (1 + 255).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from trading_jax.models.registry import register

ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "tanh": jnp.tanh,
}


def activation_fn(name: str) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """The activation function called `name` (one of `ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def tcn_dilations(levels: int, base: int = 2) -> tuple[int, ...]:
    """Dilations `base**i` for `i = 0 .. levels - 1` (1, 2, 4, ..., 128 for 8 levels)."""
    return tuple(int(base**i) for i in range(levels))


def receptive_field(kernel_size: int, dilations: Sequence[int], convs_per_block: int = 2) -> int:
    """Number of input steps that the output at one step depends on.

    RF = 1 + convs_per_block * sum_i (kernel_size - 1) * dilations[i]

    Args:
        kernel_size: convolution kernel size k >= 1.
        dilations: the dilation d_i of each block.
        convs_per_block: causal convolutions in each block (2 in `TemporalBlock`).

    Returns:
        The receptive field in time steps: the output at step t reads inputs t - RF + 1 .. t.
    """
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    return 1 + convs_per_block * sum((kernel_size - 1) * int(d) for d in dilations)


def causal_conv(
    features: int, kernel_size: int, dilation: int = 1, dtype: Any = None, name: str | None = None
) -> nn.Conv:
    """A causal dilated 1-D convolution over `[batch, time, channels]`: output t reads inputs <= t.

    An `nn.Conv` left-padded with (kernel_size - 1) * dilation steps and none on the right, so the output
    keeps the input's length. Parameters: a kernel `[kernel_size, in, features]` and a bias `[features]`
    (k * in * out + out in all), float32.
    """
    pad = (kernel_size - 1) * dilation
    return nn.Conv(
        features,
        kernel_size=(kernel_size,),
        kernel_dilation=(dilation,),
        padding=((pad, 0),),
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, epsilon: float = 1e-6) -> jnp.ndarray:
    """LayerNorm over the last axis, as `flax.linen.LayerNorm` computes it, with a hand-written VJP.

    Forward: ``m = mean(x)``, ``v = max(mean(x^2) - m^2, 0)``, ``r = rsqrt(v + eps)``, ``xhat = (x - m) r``,
    ``y = xhat * scale + bias``. Backward, with ``g = dy * scale``:

        dx = r (g - mean(g) - xhat mean(g xhat)),   dscale = sum(dy xhat),   dbias = sum(dy)

    (one fused pass over the saved ``xhat`` and ``r``; autodiff of the forward keeps more intermediates).
    """
    return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
    mean = x.mean(-1, keepdims=True)
    var = jnp.maximum((x * x).mean(-1, keepdims=True) - mean * mean, 0.0)
    rstd = jax.lax.rsqrt(var + epsilon)
    xhat = (x - mean) * rstd
    return xhat * scale + bias, (xhat, rstd, scale)


def _layer_norm_bwd(epsilon, res, dy):
    del epsilon
    xhat, rstd, scale = res
    g = dy * scale
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    axes = tuple(range(dy.ndim - 1))
    return dx, (dy * xhat).sum(axes), dy.sum(axes)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
    """`flax.linen.LayerNorm` over the last axis (same params ``scale``, ``bias``, epsilon 1e-6), computed by
    `layer_norm` (hand-written VJP). Output in `dtype` (None: the input's)."""

    epsilon: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x, scale)
        # Statistics and normalisation in float32 (as flax does for low-precision inputs).
        y = layer_norm(x.astype(jnp.float32), scale.astype(jnp.float32), bias.astype(jnp.float32), self.epsilon)
        return y.astype(dtype)


class TemporalBlock(nn.Module):
    """One residual block: two causal dilated convolutions, each followed by LayerNorm, activation
    and dropout; a 1x1 convolution on the residual path when the channel count changes.

    Input `[batch, time, in]`, output `[batch, time, features]`.
    """

    features: int
    kernel_size: int
    dilation: int
    dropout: float = 0.0
    activation: str = "relu"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        act = activation_fn(self.activation)
        h = x
        for i in range(2):
            h = causal_conv(self.features, self.kernel_size, self.dilation, self.dtype, name=f"conv{i}")(h)
            h = LayerNorm(dtype=self.dtype, param_dtype=jnp.float32, name=f"norm{i}")(h)
            h = act(h)
            if self.dropout > 0.0:
                h = nn.Dropout(self.dropout, deterministic=not train)(h)
        residual = x
        if x.shape[-1] != self.features:
            residual = nn.Dense(self.features, dtype=self.dtype, param_dtype=jnp.float32, name="downsample")(x)
        return act(h + residual)


class TCN(nn.Module):
    """Temporal Convolutional Network with a regression head on the last time step.

    Attributes:
        channels: hidden channels of every block (seed: 64).
        levels: number of residual blocks; block i has dilation `dilation_base**i` (seed: 8).
        kernel_size: causal convolution kernel size (seed: 3, receptive field 1021).
        dilation_base: growth factor of the dilations (2: 1, 2, 4, ...).
        dropout: dropout rate after each convolution, active only when `train=True`.
        n_outputs: regression outputs of the "prediction" head (seed: 1).
        n_classes: if > 0, also a classification head returning "logits".
        activation: name in `ACTIVATIONS`.
        dtype: compute dtype (e.g. `jnp.bfloat16`); parameters stay float32 and the heads' outputs are
            returned as float32.

    Call: `apply(params, x, train=False, rngs={"dropout": key})` with `x` `[batch, time, features]`.

    Returns:
        dict with
          "prediction": `[batch, n_outputs]` float32, a linear head on the last step's hidden state;
          "logits": `[batch, n_classes]` float32 (only if `n_classes > 0`);
          "sequence": `[batch, time, channels]` hidden state of the last block at every step (compute
              dtype); step t depends on inputs t - RF + 1 .. t only (RF = `self.receptive_field`).
    """

    channels: int = 64
    levels: int = 8
    kernel_size: int = 3
    dilation_base: int = 2
    dropout: float = 0.2
    n_outputs: int = 1
    n_classes: int = 0
    activation: str = "relu"
    dtype: Any = None

    @property
    def dilations(self) -> tuple[int, ...]:
        return tcn_dilations(self.levels, self.dilation_base)

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.kernel_size, self.dilations)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> dict[str, jnp.ndarray]:
        if x.ndim != 3:
            raise ValueError(f"TCN expects x of shape [batch, time, features], got {x.shape}")
        h = x
        for i, dilation in enumerate(self.dilations):
            h = TemporalBlock(
                self.channels, self.kernel_size, dilation, self.dropout, self.activation, self.dtype, name=f"block{i}"
            )(h, train=train)
        last = h[:, -1, :]
        out = {
            "prediction": nn.Dense(self.n_outputs, dtype=self.dtype, param_dtype=jnp.float32, name="head")(last)
            .astype(jnp.float32),
            "sequence": h,
        }
        if self.n_classes > 0:
            out["logits"] = nn.Dense(self.n_classes, dtype=self.dtype, param_dtype=jnp.float32, name="classifier")(
                last
            ).astype(jnp.float32)
        return out


SEED_PRESET = dict(channels=64, levels=8, kernel_size=3, dilation_base=2, dropout=0.2, n_outputs=1)
TINY_PRESET = dict(channels=8, levels=3, kernel_size=2, dilation_base=2, dropout=0.1, n_outputs=1)


@register("tcn", presets={"seed": SEED_PRESET, "tiny": TINY_PRESET})
def tcn(**cfg) -> TCN:
    """Build a `TCN`; defaults are the seed sizes (64 channels, 8 levels, kernel 3, RF 1021)."""
    return TCN(**cfg)
