"""1-D convolutions computed as matrix products, so that a `vmap` over members stays dense on XLA's CPU backend.

Under `vmap` over params (an ensemble's members), a convolution whose input and kernel both carry the member
axis becomes a *grouped* convolution (`feature_group_count = M`), which XLA's CPU backend runs far below its
dense speed: the tiny TCN's vmapped population was 0.4-0.5x a loop over its members. Computing each
convolution as one matrix product of the shifted inputs (im2col) instead,

    y[b, t, o] = bias[o] + sum_{i < k} sum_c x_pad[b, t + i d, c] W[i, c, o]
               = bias + concat_i(x_pad[:, i d : i d + T_out, :]) @ reshape(W, [k C, O]),

gives batched matmuls under `vmap` (same maths, float reassociation only). `matmul_convolutions()` is a
context manager that makes every `flax.linen.Conv` traced inside it compute this way (a Flax method
interceptor; params and their names are unchanged, initialisation is untouched); `with_matmul_convolutions`
applies it to a `FunctionTrainer`'s init and run so that their tracing happens inside it. Convolutions it
does not cover (not 1-D, strided, input-dilated, grouped, masked, circular/reflect padding) run unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import jax.numpy as jnp

__all__ = ["matmul_convolutions", "with_matmul_convolutions", "default_conv"]


def default_conv() -> str:
    """"matmul" on the CPU backend (grouped convolutions are slow there), "xla" elsewhere."""
    return "matmul" if jax.default_backend() == "cpu" else "xla"


def _ones(value) -> bool:
    if value is None:
        return True
    if isinstance(value, int):
        return value == 1
    return all(int(v) == 1 for v in value)


def _pads(module, kernel_size: int, dilation: int):
    """`(lo, hi)` padding of the time axis, or None for a padding mode this does not cover."""
    padding = module.padding
    span = (kernel_size - 1) * dilation
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return 0, 0
        if mode == "CAUSAL":
            return span, 0
        if mode == "SAME":
            return span // 2, span - span // 2
        return None
    if isinstance(padding, int):
        return padding, padding
    pads = list(padding)
    if len(pads) != 1:
        return None
    pad = pads[0]
    if isinstance(pad, int):
        return pad, pad
    lo, hi = pad
    return int(lo), int(hi)


def _conv_as_matmul(module, x):
    """The `nn.Conv` `module` (bound) on `x [batch, time, in]` as one matmul; None if not covered."""
    import flax.linen as nn

    if type(module) is not nn.Conv or x.ndim != 3 or module.mask is not None or not module.shared_weights:
        return None
    kernel_size = module.kernel_size
    kernel_size = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
    if len(kernel_size) != 1 or module.feature_group_count != 1:
        return None
    if not (_ones(module.strides) and _ones(module.input_dilation)):
        return None
    dilation = module.kernel_dilation
    dilation = 1 if dilation is None else (dilation if isinstance(dilation, int) else int(tuple(dilation)[0]))
    k = int(kernel_size[0])
    pads = _pads(module, k, dilation)
    if pads is None:
        return None
    kernel = module.get_variable("params", "kernel")
    bias = module.get_variable("params", "bias") if module.use_bias else None
    if kernel is None or (module.use_bias and bias is None):
        return None
    x, kernel, bias = module.promote_dtype(x, kernel, bias, dtype=module.dtype)
    lo, hi = pads
    xp = jnp.pad(x, ((0, 0), (lo, hi), (0, 0)))
    t_out = xp.shape[1] - (k - 1) * dilation
    if t_out < 1:
        return None
    cols = xp[:, :t_out] if k == 1 else jnp.concatenate(
        [xp[:, i * dilation: i * dilation + t_out] for i in range(k)], axis=-1)
    y = jnp.einsum("btc,co->bto", cols, kernel.reshape(k * kernel.shape[1], kernel.shape[2]),
                   precision=module.precision)
    if bias is not None:
        y = y + bias
    return y


def _interceptor(next_fun, args, kwargs, context):
    import flax.linen as nn

    module = context.module
    if (type(module) is nn.Conv and context.method_name == "__call__" and len(args) == 1 and not kwargs
            and not module.is_initializing()):
        y = _conv_as_matmul(module, args[0])
        if y is not None:
            return y
    return next_fun(*args, **kwargs)


@contextlib.contextmanager
def matmul_convolutions():
    """Within this context, 1-D `flax.linen.Conv` layers *traced* here compute as one matmul (module docstring).

    It acts at trace time: a function jitted and traced before keeps its compiled convolutions.
    """
    import flax.linen as nn

    with nn.intercept_methods(_interceptor):
        yield


def with_matmul_convolutions(trainer):
    """`trainer` (a `trading_jax.loop.FunctionTrainer`, single or population) whose init and run trace their
    convolutions inside `matmul_convolutions()`. Same params, same maths (float reassociation only)."""
    init_fn, run_fn = trainer.init_fn, trainer.run_fn

    def init(*args):
        with matmul_convolutions():
            return init_fn(*args)

    def run(*args):
        with matmul_convolutions():
            return run_fn(*args)

    return dataclasses.replace(trainer, init_fn=init, run_fn=run)
