"""Portfolio construction: constraint projections (classical optimisers to come).

Names are imported lazily, so `import trading_jax.portfolio` stays cheap.
"""

from trading_jax._lazy import lazy_exports

_EXPORTS = {
    "project_capped_simplex": "projections",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
