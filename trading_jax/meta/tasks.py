"""Task sources for meta-learning: a task is a small supervised problem (support set + query set).

A task source is a small frozen, hashable object with

    sample(key, args, n_tasks, k_support, n_query) -> Tasks     # on device, inside the jitted meta-step
    default_args() -> pytree                                     # the trainer's args when none are given

where `args` holds the arrays the tasks are drawn from (passed to the compiled program as arguments,
never baked into it as constants) and `n_tasks`, `k_support`, `n_query` are static sizes. The same key
and args give the same tasks, bit for bit.

Two sources are provided:

* `ArrayTasks`: real data. One task is one asset (or any group: a period, a symbol-period pair) of
  pooled windows; the support set is drawn from the asset's earlier samples and the query set from
  the samples after them (a random cut point per task), so a task asks "adapt on the past, predict the
  future". `tasks_from_splits(x, y, group_ids)` turns pooled windows into its padded `args`.
* `SyntheticRegimeTasks`: one task is one synthetic market (`trading_jax.data.synthetic`) with freshly
  drawn parameters (a regime), generated on device; `SYNTHETIC_FEATURES` (F = 3) per bar, windows and
  future-return labels are built from its bars, the support period first and the query period after it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Tasks",
    "ArrayTasks",
    "SyntheticRegimeTasks",
    "tasks_from_splits",
    "SYNTHETIC_FEATURES",
    "bar_features",
]

SYNTHETIC_FEATURES = ("log_return", "log_range", "log_volume_change")
"""The per-bar features of `SyntheticRegimeTasks`, in order (F = 3)."""


class Tasks(NamedTuple):
    """A batch of T tasks (a pytree; `T` is the leading axis of every field).

    Attributes:
        support_x: `[T, k, W, F]` float inputs of the support (adaptation) set.
        support_y: `[T, k]` targets: float for regression, int32 class labels for classification.
        query_x: `[T, q, W, F]` float inputs of the query (evaluation) set.
        query_y: `[T, q]` targets.
    """

    support_x: Any
    support_y: Any
    query_x: Any
    query_y: Any


def _check_sizes(n_tasks: int, k_support: int, n_query: int) -> None:
    for name, value in (("n_tasks", n_tasks), ("k_support", k_support), ("n_query", n_query)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _random_subset(key, n: int, k: int, valid) -> jax.Array:
    """`k` distinct indices of `[0, n)` where `valid` (bool `[n]`, at least `k` True), uniformly, ascending."""
    score = jnp.where(valid, jax.random.uniform(key, (n,)), -1.0)
    _, idx = jax.lax.top_k(score, k)
    return jnp.sort(idx)


# ---------------------------------------------------------------------------------------- real data


@dataclasses.dataclass(frozen=True)
class ArrayTasks:
    """Tasks from pooled windows of several assets: one asset (or group) per task, future as query.

    `args` (from `tasks_from_splits`):
        "x": `[A, N, W, F]` float32 windows, the samples of asset a in chronological order, padded to N;
        "y": `[A, N]` targets (float32 regression, int32 classes);
        "count": `[A]` int32, the number of valid samples of each asset (rows `count[a]..N-1` are padding).

    One task (everything on device, per task):

        a ~ Uniform{assets with count[a] >= k + q + embargo}
        c ~ Uniform{k, ..., count[a] - q - embargo}                    (the cut point)
        support = k distinct indices drawn uniformly from [0, c)
        query   = q distinct indices drawn uniformly from [c + embargo, count[a])

    so every query sample comes strictly after every support sample in time (and at least `embargo`
    samples after the cut: with labels looking h bars ahead, `embargo = h` keeps the support labels
    from reading the query inputs' bars), and padding is never drawn. Indices come out ascending.

    Attributes:
        embargo: samples skipped between the support part and the query part (>= 0).
    """

    embargo: int = 0

    def __post_init__(self):
        if int(self.embargo) < 0:
            raise ValueError(f"embargo must be >= 0, got {self.embargo}")

    def default_args(self):
        raise ValueError("ArrayTasks reads its data from args: pass args=tasks_from_splits(x, y, group_ids)")

    def check(self, args, k_support: int, n_query: int) -> None:
        """Host-side check of `args` for tasks of `k_support` + `n_query` samples (ValueError if unusable)."""
        for name in ("x", "y", "count"):
            if name not in args:
                raise ValueError(f"ArrayTasks args need 'x', 'y' and 'count' (tasks_from_splits); missing {name!r}")
        x, y, count = args["x"], args["y"], args["count"]
        if jnp.ndim(x) != 4 or jnp.ndim(y) != 2 or jnp.ndim(count) != 1:
            raise ValueError(f"ArrayTasks args: x must be [A, N, W, F], y [A, N], count [A]; got "
                             f"{jnp.shape(x)}, {jnp.shape(y)}, {jnp.shape(count)}")
        if jnp.shape(x)[:2] != jnp.shape(y) or jnp.shape(count)[0] != jnp.shape(y)[0]:
            raise ValueError(f"ArrayTasks args: x {jnp.shape(x)}, y {jnp.shape(y)} and count {jnp.shape(count)} "
                             "disagree on assets A or samples N")
        if isinstance(count, jax.core.Tracer):
            return
        need = int(k_support) + int(n_query) + int(self.embargo)
        counts = np.asarray(count)
        if not (counts >= need).any():
            raise ValueError(f"no asset has the {need} samples a task needs (support {k_support} + query {n_query} "
                             f"+ embargo {self.embargo}); largest count is {int(counts.max(initial=0))}")

    def sample(self, key, args, n_tasks: int, k_support: int, n_query: int) -> Tasks:
        """`n_tasks` tasks of `k_support` support and `n_query` query samples (class docstring).

        Returns:
            `Tasks` with support `[T, k, W, F]`, `[T, k]` and query `[T, q, W, F]`, `[T, q]`.
        """
        _check_sizes(n_tasks, k_support, n_query)
        x, y, count = args["x"], args["y"], jnp.asarray(args["count"], jnp.int32)
        n = y.shape[1]
        if k_support + n_query + self.embargo > n:
            raise ValueError(f"a task needs {k_support + n_query + self.embargo} samples, the assets hold at most {n}")
        need = k_support + n_query + self.embargo
        eligible = count >= need
        positions = jnp.arange(n)

        def one(k):
            k_asset, k_cut, k_support_idx, k_query_idx = jax.random.split(k, 4)
            asset = jax.random.categorical(k_asset, jnp.where(eligible, 0.0, -jnp.inf))
            valid = count[asset]
            cut = jax.random.randint(k_cut, (), k_support, valid - n_query - self.embargo + 1)
            s_idx = _random_subset(k_support_idx, n, k_support, positions < cut)
            q_idx = _random_subset(k_query_idx, n, n_query, (positions >= cut + self.embargo) & (positions < valid))
            return x[asset, s_idx], y[asset, s_idx], x[asset, q_idx], y[asset, q_idx]

        return Tasks(*jax.vmap(one)(jax.random.split(key, n_tasks)))


def tasks_from_splits(x, y, group_ids, times=None) -> dict:
    """Pooled windows -> the padded per-group `args` of `ArrayTasks` (host-side, NumPy).

    Args:
        x: `[n, W, F]` windows of all groups (assets, or periods), pooled.
        y: `[n]` targets (float regression, int classes).
        group_ids: `[n]` ints, the group (asset) of each sample; a group's samples must be in
            chronological order unless `times` is given.
        times: optional `[n]` sortable times (e.g. window end timestamps); each group's samples are
            stably sorted by them.

    Returns:
        `{"x": [A, N, W, F] float32, "y": [A, N], "count": [A] int32}` with groups in ascending id order,
        N the largest group's size and zero padding after each group's `count` samples.
    """
    x, y, ids = np.asarray(x), np.asarray(y), np.asarray(group_ids)
    if x.ndim != 3 or y.ndim != 1 or ids.ndim != 1 or not (len(x) == len(y) == len(ids)):
        raise ValueError(f"tasks_from_splits needs x [n, W, F], y [n] and group_ids [n]; got "
                         f"{x.shape}, {y.shape}, {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"group_ids must be integers, got {ids.dtype}")
    groups = np.unique(ids)
    members = []
    for g in groups:
        idx = np.nonzero(ids == g)[0]
        if times is not None:
            idx = idx[np.argsort(np.asarray(times)[idx], kind="stable")]
        members.append(idx)
    counts = np.array([len(m) for m in members], np.int32)
    n_max = int(counts.max(initial=0))
    y_dtype = np.int32 if np.issubdtype(y.dtype, np.integer) else np.float32
    out_x = np.zeros((len(groups), n_max) + x.shape[1:], np.float32)
    out_y = np.zeros((len(groups), n_max), y_dtype)
    for a, idx in enumerate(members):
        out_x[a, : len(idx)] = x[idx]
        out_y[a, : len(idx)] = y[idx]
    return {"x": jnp.asarray(out_x), "y": jnp.asarray(out_y), "count": jnp.asarray(counts)}


# ------------------------------------------------------------------------------------ synthetic data


def bar_features(bars) -> jax.Array:
    """`SYNTHETIC_FEATURES` of every bar, `[L, 3]` (row t reads bars t-1 and t only).

        log_return_t        = log(close_t / close_{t-1})
        log_range_t         = log(high_t / low_t)
        log_volume_change_t = log(volume_t / volume_{t-1})

    Row 0 has no previous bar: its two change features are 0 (`SyntheticRegimeTasks` never puts bar 0
    in a window).
    """
    log_close, log_volume = jnp.log(bars.close), jnp.log(bars.volume)
    r = jnp.concatenate([jnp.zeros((1,), log_close.dtype), jnp.diff(log_close)])
    dv = jnp.concatenate([jnp.zeros((1,), log_volume.dtype), jnp.diff(log_volume)])
    return jnp.stack([r, jnp.log(bars.high / bars.low), dv], axis=-1)


@dataclasses.dataclass(frozen=True)
class SyntheticRegimeTasks:
    """One task = one synthetic market regime drawn and generated on device.

    Per task: parameters `sample_params(model, ranges)` (domain randomisation), a path of
    L = `support_bars + query_bars` bars from `generate(..., dt)`, then with S = `support_bars`,
    W = `window`, h = `horizon`:

    * features f_t = `bar_features` (F = 3: log return, log high/low range, log volume change),
      standardised with the mean and standard deviation of bars 1..S-1 (the support period only);
    * a window ending at bar t holds the standardised features of bars t-W+1..t;
    * its label reads bars t+1..t+h only: the future log return R_t = log(close_{t+h} / close_t),
      scaled by the support period's return volatility, z_t = R_t / (sd(r_1..r_{S-1}) sqrt(h));
      regression targets are z_t, classification labels are 0 (down, z_t < -dead_band),
      1 (flat) or 2 (up, z_t > dead_band);
    * support windows end at k distinct bars drawn from {W, ..., S-1-h} (their labels stay inside the
      support period) and query windows at q distinct bars from {S, ..., L-1-h} (the query targets
      lie wholly after the support period; query inputs may read support bars: they are the past).

    The tasks need no arrays: `default_args()` is `{}`. Same key, same tasks.

    Attributes:
        model: one of `trading_jax.data.synthetic.MODELS` ("gbm", "regime_switching", "heston",
            "merton", "ou").
        window: W, bars per window.
        horizon: h, bars ahead of the label.
        support_bars: S, bars of the support period (needs S - h - W >= k).
        query_bars: bars of the query period (needs query_bars - h >= q).
        labels: "regression" or "classification" (must match `MAMLConfig.task`).
        dead_band: half-width of the flat class, in units of the scaled return z.
        dt: bar length in years (1/252: daily bars).
        ranges: `(field, (low, high))` pairs overriding `DEFAULT_RANGES[model]` (a dict is accepted).
        n_regimes: regimes of "regime_switching".
    """

    model: str = "regime_switching"
    window: int = 16
    horizon: int = 1
    support_bars: int = 128
    query_bars: int = 64
    labels: str = "regression"
    dead_band: float = 0.25
    dt: float = 1.0 / 252.0
    ranges: tuple = ()
    n_regimes: int = 2

    def __post_init__(self):
        from trading_jax.data.synthetic import DEFAULT_RANGES, MODELS

        if isinstance(self.ranges, dict):
            object.__setattr__(self, "ranges", tuple(sorted((k, tuple(v)) for k, v in self.ranges.items())))
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        unknown = sorted(set(dict(self.ranges)) - set(DEFAULT_RANGES[self.model]))
        if unknown:
            raise ValueError(f"unknown ranges {unknown} for {self.model!r}; fields: {sorted(DEFAULT_RANGES[self.model])}")
        if self.labels not in ("regression", "classification"):
            raise ValueError(f"labels must be 'regression' or 'classification', got {self.labels!r}")
        if self.window < 1 or self.horizon < 1:
            raise ValueError(f"window and horizon must be >= 1, got {self.window}, {self.horizon}")
        if self.support_bars <= self.window + self.horizon or self.query_bars <= self.horizon:
            raise ValueError(f"support_bars must exceed window + horizon and query_bars horizon; got "
                             f"{self.support_bars}, {self.query_bars}")
        if self.dead_band < 0 or self.dt <= 0:
            raise ValueError(f"dead_band must be >= 0 and dt > 0, got {self.dead_band}, {self.dt}")

    @property
    def n_features(self) -> int:
        """F, features per bar (3)."""
        return len(SYNTHETIC_FEATURES)

    @property
    def n_bars(self) -> int:
        """L, bars per task."""
        return self.support_bars + self.query_bars

    def default_args(self) -> dict:
        return {}

    def check(self, args, k_support: int, n_query: int) -> None:
        """ValueError unless the periods hold `k_support` support and `n_query` query windows."""
        n_support = self.support_bars - self.horizon - self.window
        n_q = self.query_bars - self.horizon
        if k_support > n_support or n_query > n_q:
            raise ValueError(f"SyntheticRegimeTasks: support_bars={self.support_bars} gives {n_support} support windows and "
                             f"query_bars={self.query_bars} gives {n_q} query windows (window {self.window}, horizon "
                             f"{self.horizon}); {k_support} and {n_query} are asked for")

    def market(self, key):
        """The `SyntheticMarket` (`[L]` fields) of the task drawn from `key` (as `sample` draws it)."""
        from trading_jax.data.synthetic import generate, sample_params

        k_params, k_path = jax.random.split(key)
        params = sample_params(k_params, self.model, dict(self.ranges) or None, n_regimes=self.n_regimes)
        return generate(k_path, params, self.n_bars, self.dt)

    def task_from_bars(self, bars, support_ends, query_ends) -> Tasks:
        """One task's arrays from its bars (`[L]` fields) and window end bars (ascending ints).

        Returns:
            `Tasks` of one task: support `[k, W, F]`, `[k]`; query `[q, W, F]`, `[q]`.
        """
        s, w, h = self.support_bars, self.window, self.horizon
        f = bar_features(bars)
        fit = f[1:s]
        mean, std = jnp.mean(fit, axis=0), jnp.std(fit, axis=0)
        f = (f - mean) / jnp.where(std > 0, std, 1.0)
        offsets = jnp.arange(-w + 1, 1)
        r = jnp.concatenate([jnp.zeros((1,)), jnp.diff(jnp.log(bars.close))])
        scale = jnp.std(r[1:s]) * math.sqrt(h)
        cum = jnp.cumsum(r)

        def arrays(ends):
            x = f[ends[:, None] + offsets]
            z = (cum[ends + h] - cum[ends]) / jnp.where(scale > 0, scale, 1.0)
            if self.labels == "regression":
                y = z.astype(jnp.float32)
            else:
                y = jnp.where(z > self.dead_band, 2, jnp.where(z < -self.dead_band, 0, 1)).astype(jnp.int32)
            return x.astype(jnp.float32), y

        return Tasks(*arrays(jnp.asarray(support_ends)), *arrays(jnp.asarray(query_ends)))

    def sample(self, key, args, n_tasks: int, k_support: int, n_query: int) -> Tasks:
        """`n_tasks` synthetic tasks (class docstring); `args` is unused.

        Returns:
            `Tasks` with support `[T, k, W, 3]`, `[T, k]` and query `[T, q, W, 3]`, `[T, q]`.
        """
        del args
        _check_sizes(n_tasks, k_support, n_query)
        self.check(None, k_support, n_query)
        s, w, h = self.support_bars, self.window, self.horizon

        def one(k):
            k_market, k_s, k_q = jax.random.split(k, 3)
            bars = self.market(k_market).bars
            s_ends = w + jnp.sort(jax.random.permutation(k_s, s - h - w)[:k_support])
            q_ends = s + jnp.sort(jax.random.permutation(k_q, self.query_bars - h)[:n_query])
            return self.task_from_bars(bars, s_ends, q_ends)

        return jax.vmap(one)(jax.random.split(key, n_tasks))
