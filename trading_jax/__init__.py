"""trading-jax: trading models, market environments and training in JAX/Flax.

Subpackages:
    data: loading, validation, splits, windows, labels and synthetic markets.
    features: pure-JAX technical indicators and the FeaturePipeline.

Importing the package turns off XLA:CPU's concurrency-optimised scheduler (adds
`--xla_cpu_enable_concurrency_optimized_scheduler=false` to `XLA_FLAGS` unless `XLA_FLAGS` already names
it) before JAX starts its backend: with it on, jaxlib 0.10's CPU runtime deadlocked (0% CPU, forever) on
vmapped PPO populations, e.g. `make_trainer(PPOConfig(num_envs=4, ...)).population(2)`. The flag only
affects the CPU backend; set it yourself (or import trading_jax first) if JAX computed before the import.
"""

import os as _os

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if "xla_cpu_enable_concurrency_optimized_scheduler" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " " + CPU_SCHEDULER_FLAG).strip()

__version__ = "0.1.0"
