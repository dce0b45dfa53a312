"""The library's only way to talk to the user: a logger and a progress bar.

Library code never calls `print`; it logs through `get_logger(__name__)` and wraps long loops in
`progress(...)`. Entry points (`cli.py`, `scripts/`) decide the verbosity with `configure`.
"""

from __future__ import annotations

import logging as _logging
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_ROOT = "trading_jax"


def get_logger(name: str = _ROOT) -> _logging.Logger:
    """A logger under the `trading_jax` hierarchy."""
    if not name.startswith(_ROOT):
        name = f"{_ROOT}.{name}"
    return _logging.getLogger(name)


def configure(verbosity: int = 0, stream=None) -> None:
    """Send library logs to `stream` (stderr by default): 0 = warnings, 1 = info, 2 = debug."""
    level = {0: _logging.WARNING, 1: _logging.INFO}.get(verbosity, _logging.DEBUG)
    root = _logging.getLogger(_ROOT)
    root.handlers.clear()
    handler = _logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False  # other libraries (absl via orbax) configure the root logger: print once


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", enabled: bool = True) -> Iterator[T]:
    """Iterate with a tqdm progress bar on stderr (a plain iterator when disabled or tqdm is absent)."""
    if not enabled:
        return iter(iterable)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a core dependency, but keep the library importable without it
        return iter(iterable)
    return iter(tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True))


class TensorBoardWriter:
    """Scalars and histograms to TensorBoard event files (tensorboardX, imported lazily).

    Args:
        logdir: folder for the `events.out.tfevents.*` files (created if missing).

    Values may be Python numbers, NumPy or JAX arrays; they are copied to the host here, so call
    this outside `jit` (e.g. once per logged chunk of a `lax.scan` training loop).

    Example:
        >>> tb = TensorBoardWriter("runs/ppo")
        >>> tb.scalars(step, {"loss": loss, "return": ret})
        >>> tb.histogram(step, "params/w", params["w"])
        >>> tb.close()
    """

    def __init__(self, logdir) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError as err:  # pragma: no cover - tensorboardX is a core dependency
            raise ImportError("TensorBoardWriter needs tensorboardX: pip install tensorboardX") from err
        self.logdir = str(logdir)
        import jax

        # in a multi-process run only process 0 writes (the others would add empty event files beside it)
        self._writer = SummaryWriter(logdir=self.logdir) if jax.process_index() == 0 else None

    def scalars(self, step: int, values: dict) -> None:
        """Write each `name -> scalar` of `values` at `step` (the name is the TensorBoard tag)."""
        import numpy as np

        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(str(name), float(np.asarray(value)), global_step=int(step))

    def histogram(self, step: int, name: str, array) -> None:
        """Write the distribution of all the entries of `array` (any shape) at `step`."""
        import numpy as np

        if self._writer is None:
            return
        self._writer.add_histogram(str(name), np.asarray(array, dtype=np.float64).ravel(), global_step=int(step))

    def flush(self) -> None:
        """Push pending events to disk."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> "TensorBoardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
