"""Plain-Python NumPy single-environment references of the JAX environments.

Each module steps ONE environment in ordinary Python with NumPy, following the same equations as its JAX
counterpart, written independently (no shared code beyond constants). They are the references of the
`jit(vmap(step))` equivalence tests and the NumPy peers of `benchmarks/env_throughput.py`.
"""
