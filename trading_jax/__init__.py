"""trading-jax: trading models, market environments and training in JAX/Flax.

Subpackages:
    data: loading, validation, splits, windows, labels and synthetic markets.
    features: pure-JAX technical indicators and the FeaturePipeline.
"""

__version__ = "0.1.0"
