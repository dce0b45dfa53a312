"""Seed 000 section 3's quantum-inspired portfolio network: asset features -> long-only capped weights.

For one date with N assets of F features each (a batch of dates is a leading axis):

    e_i  = Embed(i)                                    [N, E]   a learned identity per asset
    h^0  = Dense_E(concat(e_i, x_i))                   [N, E]   (fix 1 below)
    h^l  = R_l(h^{l-1}) U_l,   l = 1 .. L              [N, E]   `QuantumInspiredLayer`
    R(x)_d = ((x_d cos a_d0 + sin a_d0) cos a_d1 + sin a_d1) cos a_d2 + sin a_d2
    s_i  = Dense_1(relu(Dense_H(h^L_i)))               [N]      scores (the seed's weight decoder)
    p    = softmax(s / temperature) over the listed assets         (the seed's Softmax over assets)
    w    = P_C(p),  C = {w : sum_i w_i = 1, 0 <= w_i <= u_i}        (fix 2 below)

with `a` the rotation angles `[E, 3]` and `U` the entangling matrix `[E, E]` of each layer, `u_i = cap` for a
listed asset and `u_i = 0` for one that is not listed, and `P_C` the Euclidean projection onto C
(`trading_jax.portfolio.projections.project_capped_simplex`).

What differs from the seed's PyTorch code, and why:

1. **Width.** The seed concatenates the embedding (width E) with the features (width F) and feeds the
   result to layers built for width E, which fails for any F > 0. A Dense layer projects the concatenation
   to E first.
2. **The position cap.** The seed clamps the softmax weights at the cap and divides by their sum. The
   division pushes the clamped weights back above the cap whenever anything was clamped: softmax weights
   (0.7, 0.1, 0.1, 0.1) with cap 0.3 become (0.3, 0.1, 0.1, 0.1) / 0.6 = (0.5, 0.167, 0.167, 0.167)
   (`seed_constraints` keeps that rule, for the test that shows it). Here the softmax weights are
   projected onto the capped simplex instead, which never exceeds the cap. Since `p` already sums to 1,
   the projection's threshold is <= 0: every listed asset below the cap keeps a positive weight
   `p_i + |theta|` (the mass cut from capped assets is shared equally among the others), so it stays
   free and its score keeps a gradient (`dw/dp = I - 1 1^T / |F|` on the free set F). Only capped assets
   (at the cap) get no gradient; the scores stay finite, and `temperature` scales how sharply they
   concentrate the weights.
3. **Initialisation.** The seed draws every entangling matrix from `randn(E, E)`, which multiplies the
   norm of the state by about `sqrt(E)` per layer (8 at E = 64; the three cosines of `randn` angles take
   about half of it back: roughly 4x per layer, 200-450x after 4 layers in the test), and the angles from
   `randn`, which add offsets `sin a` of order 1 at every layer. Here `U` is initialised
   orthogonal (norm preserving, the real analogue of a unitary gate) and the angles from
   `N(0, rotation_init_scale^2)` (0.1), so each layer starts near a rotation of the state and the
   activations keep their scale through any depth.

An observation kept as specified: `R` is an affine map of each coordinate and `U` is linear, so a stack of
these layers is one affine map of `h^0` (whatever L is); the decoder's ReLU is the network's only
nonlinearity.

**Masks and infeasible caps.** `asset_mask [batch, N]` marks the assets listed on each date; the others get
weight exactly 0 and the cap applies among the listed ones. If `cap * n_listed < 1` on a date the set C is
empty: the cap is then raised to `1 / n_listed` on that date, which gives equal weights over the listed
assets (the least concentrated portfolio there is). A date with no listed asset gets all-zero weights
(cash). Without a mask, `max_position * N < 1` is refused with a `ValueError`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from trading_jax.models.registry import register
from trading_jax.portfolio.projections import project_capped_simplex

__all__ = ["QuantumInspiredLayer", "QuantumPortfolioNetwork", "quantum_portfolio", "seed_constraints",
           "masked_softmax", "capped_weights", "project"]


def seed_constraints(weights, cap):
    """The seed's `apply_constraints`, kept only to show that it breaks the cap: `min(w, cap) / sum(min(w, cap))`.

    Args:
        weights: `[..., N]` weights summing to 1.
        cap: the maximum position size.

    Returns:
        `[..., N]` weights that sum to 1 and may exceed `cap` (use `capped_weights` instead).
    """
    clamped = jnp.minimum(jnp.asarray(weights), cap)
    return clamped / jnp.sum(clamped, axis=-1, keepdims=True)


def masked_softmax(scores, mask=None):
    """Softmax over the last axis restricted to `mask`: `p_i = m_i exp(s_i) / sum_j m_j exp(s_j)`.

    Unlisted entries get exactly 0; a row with no listed entry is all 0 (never NaN).

    Args:
        scores: `[..., N]` real scores.
        mask: bool `[..., N]` (None: all listed).

    Returns:
        `[..., N]` nonnegative weights summing to 1 on each row with a listed entry.
    """
    scores = jnp.asarray(scores)
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    mask = jnp.asarray(mask, bool)
    top = jnp.max(jnp.where(mask, scores, -jnp.inf), axis=-1, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    e = jnp.where(mask, jnp.exp(jnp.where(mask, scores - top, 0.0)), 0.0)
    return e / jnp.maximum(jnp.sum(e, axis=-1, keepdims=True), jnp.finfo(e.dtype).tiny)


@jax.custom_vjp
def project(v, upper):
    """`project_capped_simplex(v, upper)` with its exact Jacobian as a hand-written VJP.

    The projection is `w = clip(v - theta, 0, upper)` with, on the free set F (`0 < w_i < upper_i`) and the
    capped set U (`w_i = upper_i`), `theta = (sum_F v - 1 + sum_U upper) / |F|`. So for a cotangent `g`, with
    `gbar = mean_F g`:

        dv_j = [j in F] (g_j - gbar),     dupper_k = [k in U] (g_k - gbar)   (gbar = 0 when F is empty).

    Autodiff through the projection's unrolled bisection gives the same numbers with a much larger program to
    compile; the tests check this VJP against finite differences.

    Args:
        v: `[..., K]` scores; upper: `[..., K]` bounds with `sum(upper) >= 1`.

    Returns:
        `[..., K]` weights.
    """
    return project_capped_simplex(v, upper, unroll=False)


def _project_fwd(v, upper):
    w = project_capped_simplex(v, upper, unroll=False)  # a rolled loop: the network compiles several times faster
    return w, (w, upper)


def _project_bwd(res, g):
    w, upper = res
    free = (w > 0) & (w < upper)
    capped = w >= upper  # an entry with upper 0 counts as capped (as autodiff of the clip has it)
    n_free = jnp.sum(free, axis=-1, keepdims=True)
    gbar = jnp.sum(jnp.where(free, g, 0.0), axis=-1, keepdims=True) / jnp.maximum(n_free, 1)
    return jnp.where(free, g - gbar, 0.0), jnp.where(capped, g - gbar, 0.0)


project.defvjp(_project_fwd, _project_bwd)


def capped_weights(scores, cap, mask=None, temperature: float = 1.0):
    """Scores to long-only weights under a position cap: `P_C(masked_softmax(scores / temperature))`.

    `C = {w : sum w = 1, 0 <= w_i <= u_i}` with `u_i = cap` for listed assets and 0 otherwise. On a date where
    `cap * n_listed <= 1` (C is one point, or empty) the weights are `1 / n_listed` on the listed assets (module
    docstring: an infeasible cap becomes equal weight).

    Args:
        scores: `[..., N]` scores.
        cap: the maximum weight of one asset (a scalar, or `[...]` broadcastable per row).
        mask: bool `[..., N]` listed assets (None: all).
        temperature: divides the scores before the softmax.

    Returns:
        `[..., N]` weights: `0 <= w <= cap` (or `1 / n_listed` where the cap is infeasible), summing to 1
        on rows with a listed asset, exactly 0 on unlisted assets.
    """
    scores = jnp.asarray(scores, jnp.float32)
    listed = jnp.ones(scores.shape, bool) if mask is None else jnp.broadcast_to(jnp.asarray(mask, bool), scores.shape)
    p = masked_softmax(scores / temperature, listed)
    n_listed = jnp.sum(listed, axis=-1, keepdims=True).astype(jnp.float32)
    cap = jnp.asarray(cap, jnp.float32)
    cap = cap[..., None] if cap.ndim else cap
    # where cap * n_listed <= 1 the capped simplex is the single point 1 / n_listed (or empty): return that point
    # directly, since the projection's bisection has no interior to work in there (before projections' fix of the
    # exact step, fused into a larger jitted program, it returned weights summing to 0.87 for 4 assets and cap 1/4)
    tight = cap * n_listed <= 1.0 + 1e-6
    equal = jnp.where(listed, 1.0 / jnp.maximum(n_listed, 1.0), 0.0)
    upper = jnp.where(listed, jnp.where(tight, 1.0, cap), 0.0)
    return jnp.where(tight, equal, project(p, upper))


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_inputs(asset_features, asset_mask, num_assets: int, max_position) -> None:
    """One-line `ValueError`s for inputs the network cannot use (shapes always; values when concrete).

    Raises:
        ValueError: naming the argument and what to do.
    """
    shape = np.shape(asset_features)
    if len(shape) not in (2, 3):
        raise ValueError(f"asset_features must be [N, F] or [batch, N, F] (N = {num_assets} assets); got shape {shape}")
    if shape[-2] != num_assets:
        raise ValueError(f"asset_features has {shape[-2]} assets (shape {shape}) but the network was built for "
                         f"num_assets={num_assets}; build it with num_assets={shape[-2]}")
    if asset_mask is not None and np.shape(asset_mask) != shape[:-1]:
        raise ValueError(f"asset_mask must have shape {shape[:-1]} (asset_features without its feature axis); "
                         f"got {np.shape(asset_mask)}")
    if isinstance(max_position, (int, float)):
        if isinstance(max_position, bool) or not (0 < max_position <= 1):
            raise ValueError(f"max_position must be in (0, 1]; got {max_position!r}")
        if asset_mask is None and max_position * num_assets < 1 - 1e-6:
            raise ValueError(f"max_position={max_position} with {num_assets} assets cannot sum to 1: use max_position "
                             f">= 1/{num_assets} = {1 / num_assets:.4g}")
    if _is_concrete(asset_features) and not bool(np.all(np.isfinite(np.asarray(asset_features)))):
        raise ValueError("asset_features has NaN or inf values: fill them (e.g. with 0) and mark those assets "
                         "unlisted in asset_mask")


class QuantumInspiredLayer(nn.Module):
    """One simulated variational-circuit layer over the last axis (width `dim`).

    `y = R(x) U` with `R(x)_d = ((x_d cos a_d0 + sin a_d0) cos a_d1 + sin a_d1) cos a_d2 + sin a_d2` (the
    seed's RX, RY, RZ "rotations") and `U` the entangling matrix. Params: `rotation_params [dim, 3]` (angles,
    `N(0, rotation_init_scale^2)`), `entangle_weights [dim, dim]` (orthogonal init; module docstring).

    Attributes:
        dim: the state width E.
        rotation_init_scale: the std of the initial angles.
    """

    dim: int
    rotation_init_scale: float = 0.1

    @nn.compact
    def __call__(self, x):
        """`[..., dim] -> [..., dim]`."""
        angles = self.param("rotation_params", nn.initializers.normal(self.rotation_init_scale), (self.dim, 3),
                            jnp.float32)
        entangle = self.param("entangle_weights", nn.initializers.orthogonal(), (self.dim, self.dim), jnp.float32)
        cos, sin = jnp.cos(angles), jnp.sin(angles)
        for k in range(3):
            x = x * cos[:, k] + sin[:, k]
        return x @ entangle


class QuantumPortfolioNetwork(nn.Module):
    """Seed 000's quantum-inspired portfolio optimiser (module docstring: the maths and the fixes).

    Call: `model.apply(params, asset_features, asset_mask=None, max_position=None) -> weights`, where
    `asset_features` is `[batch, N, F]` (batch = dates) or `[N, F]`, `asset_mask` bool `[batch, N]` (or `[N]`),
    and `max_position` overrides the module's cap for this call. The weights are `[batch, N]` (or `[N]`):
    `0 <= w <= cap`, summing to 1, exactly 0 on unlisted assets. `method="scores"` returns the decoder's
    scores `[batch, N]` before the softmax and the projection.

    Attributes:
        num_assets: N, the number of asset embeddings (the inputs' asset axis must be N).
        num_layers: L quantum-inspired layers.
        embedding_dim: E, the width of the embeddings and of the state.
        decoder_hidden: H, the hidden width of the weight decoder.
        max_position: the cap on any one weight.
        temperature: the scores are divided by it before the softmax.
        rotation_init_scale: std of the initial rotation angles.
    """

    num_assets: int = 50
    num_layers: int = 4
    embedding_dim: int = 64
    decoder_hidden: int = 128
    max_position: float = 0.2
    temperature: float = 1.0
    rotation_init_scale: float = 0.1

    def setup(self):
        for name in ("num_assets", "num_layers", "embedding_dim", "decoder_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"QuantumPortfolioNetwork: {name} must be an integer >= 1; got {value!r}")
        if not (0 < self.max_position <= 1):
            raise ValueError(f"QuantumPortfolioNetwork: max_position must be in (0, 1]; got {self.max_position!r}")
        if not self.temperature > 0:
            raise ValueError(f"QuantumPortfolioNetwork: temperature must be > 0; got {self.temperature!r}")
        self.asset_embeddings = nn.Embed(self.num_assets, self.embedding_dim, param_dtype=jnp.float32)
        self.input_projection = nn.Dense(self.embedding_dim, name="input_projection")
        self.quantum_layers = [QuantumInspiredLayer(self.embedding_dim, self.rotation_init_scale, name=f"quantum_{i}")
                               for i in range(self.num_layers)]
        self.decoder_hidden_layer = nn.Dense(self.decoder_hidden, name="decoder_hidden")
        self.decoder_out = nn.Dense(1, name="decoder_out")

    def scores(self, asset_features):
        """Decoder scores `s`: `[batch, N, F] -> [batch, N]` (or `[N, F] -> [N]`)."""
        x = jnp.asarray(asset_features, jnp.float32)
        embedded = jnp.broadcast_to(self.asset_embeddings(jnp.arange(self.num_assets)), x.shape[:-1] + (self.embedding_dim,))
        h = self.input_projection(jnp.concatenate([embedded, x], axis=-1))
        for layer in self.quantum_layers:
            h = layer(h)
        return self.decoder_out(nn.relu(self.decoder_hidden_layer(h)))[..., 0]

    def __call__(self, asset_features, asset_mask=None, max_position=None):
        """Weights `[batch, N]` (or `[N]`) for `asset_features [batch, N, F]` (or `[N, F]`); see the class docstring.

        Raises:
            ValueError: a wrong shape, non-finite features (when not traced), or a cap that cannot hold.
        """
        cap = self.max_position if max_position is None else max_position
        check_inputs(asset_features, asset_mask, self.num_assets, cap)
        return capped_weights(self.scores(asset_features), cap, asset_mask, self.temperature)


SEED_PRESET = dict(num_assets=50, num_layers=4, embedding_dim=64, decoder_hidden=128, max_position=0.2)
TINY_PRESET = dict(num_assets=8, num_layers=2, embedding_dim=8, decoder_hidden=8, max_position=0.3)


@register("quantum_portfolio", presets={"seed": SEED_PRESET, "tiny": TINY_PRESET})
def quantum_portfolio(**cfg: Any) -> QuantumPortfolioNetwork:
    """Build a `QuantumPortfolioNetwork`; defaults are the seed's sizes (50 assets, 4 layers, E = 64, cap 0.2)."""
    return QuantumPortfolioNetwork(**cfg)
