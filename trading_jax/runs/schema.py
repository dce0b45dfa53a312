"""Typed experiment files: read TOML into frozen dataclasses, refusing nonsense with one-line errors.

Every table is checked for unknown keys (with a did-you-mean), for the type of each value against the
dataclass field's annotation, and for ranges. An error is a `ConfigError` (a `ValueError`) whose message
names the file, the table, the key, the value and what is expected:

    experiments/x.toml: [train] learning_rate = nan: expected a finite number > 0
    experiments/x.toml: [train] unknown key 'epoch' (did you mean 'epochs'?); known keys: batch_size, ...

The CLI prints it as one line, never a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

__all__ = ["ConfigError", "read_toml", "check_keys", "build", "Check", "finite", "positive", "non_negative",
           "in_interval", "at_least", "one_of", "probability", "check_seeds"]


class ConfigError(ValueError):
    """A mistake in an experiment file or its values (the message is one line, for the user)."""


def read_toml(path: str | Path) -> dict:
    """The file's tables, or a `ConfigError` naming the file (missing, a folder, not TOML)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such experiment file (see experiments/*.toml for examples)")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give an experiment .toml file")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; give an experiment .toml file") from None


def _table(where: str) -> str:
    return f"[{where}]" if where else "top level"


def check_keys(table: Mapping[str, Any], known: Iterable[str], file, where: str) -> None:
    """Raise for the first key of `table` not in `known`, suggesting the closest known key."""
    known = sorted(known)
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{file}: {_table(where)} unknown key {key!r}{hint}; known keys: {', '.join(known)}")


# ------------------------------------------------------------------------------------ value checks

Check = Callable[[Any], "str | None"]  # None if fine, else what is expected


def finite(x) -> str | None:
    return None if isinstance(x, (int, float)) and math.isfinite(x) else "expected a finite number"


def positive(x) -> str | None:
    return None if isinstance(x, (int, float)) and math.isfinite(x) and x > 0 else "expected a finite number > 0"


def non_negative(x) -> str | None:
    return None if isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 else "expected a finite number >= 0"


def probability(x) -> str | None:
    return in_interval(0.0, 1.0, low_open=False, high_open=True)(x)


def in_interval(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Check:
    text = f"expected a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def check(x):
        if not isinstance(x, (int, float)) or not math.isfinite(x):
            return text
        ok = (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
        return None if ok else text

    return check


def at_least(n: int) -> Check:
    return lambda x: None if isinstance(x, int) and x >= n else f"expected an integer >= {n}"


def source_exists(source: str) -> bool:
    """A data source names an existing file or folder, or a glob (relative or absolute) that matches one."""
    import glob

    return Path(source).exists() or bool(glob.glob(str(source)))


def kwargs_pairs(table) -> tuple:
    """A keyword-argument table (`[train.model_kwargs]`, ...) as sorted hashable `(name, value)` pairs
    (lists become tuples); TypeError for a non-table (`build`'s `convert` turns it into a ConfigError)."""
    if not isinstance(table, dict):
        raise TypeError
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in table.items()))


def check_seeds(seeds, file) -> None:
    """Every experiment repeats over one or more distinct seeds."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{file}: seeds = {list(seeds)}: expected one or more distinct seeds")


def one_of(*choices) -> Check:
    return lambda x: None if x in choices else f"expected one of {', '.join(repr(c) for c in choices)}"


# --------------------------------------------------------------------------------------- types


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "nothing (leave the key out)"
    if origin is tuple:
        return "a list"
    if origin in (dict, Mapping) or annotation in (dict, Mapping) or origin is typing.Mapping:
        return "a table"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(annotation, "a value")


def _coerce(value, annotation):
    """`value` converted to `annotation` (list -> tuple, int -> float), or raise TypeError."""
    if annotation is Any or annotation is object:
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except TypeError:
                pass
        raise TypeError
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if annotation is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError
        args = typing.get_args(annotation)
        item = args[0] if args and (len(args) == 2 and args[1] is Ellipsis) else Any
        return tuple(_coerce(v, item) for v in value)
    if origin in (dict, typing.Mapping) or annotation in (dict, Mapping) or str(origin).endswith("Mapping"):
        if not isinstance(value, dict):
            raise TypeError
        return dict(value)
    return value


def build(cls, table: Mapping[str, Any], file, where: str, checks: Mapping[str, Check] | None = None,
          skip: Iterable[str] = (), convert: Mapping[str, Callable[[Any], Any]] | None = None):
    """`cls(**table)` after checking keys, types and `checks`; every mistake is a one-line `ConfigError`.

    Args:
        cls: a dataclass.
        table: the TOML table.
        file, where: named in errors ("experiments/x.toml", "train").
        checks: field -> `Check` for values present in the table (and for defaults of required fields).
        skip: fields the caller fills in (not settable from the file).
        convert: field -> function applied after the type check (e.g. a dict to sorted pairs).
    """
    checks, convert = dict(checks or {}), dict(convert or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in set(skip)}
    check_keys(table, fields, file, where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in table.items():
        annotation = hints.get(name, Any)
        if name in convert:
            try:
                kwargs[name] = convert[name](value)
            except (TypeError, ValueError):
                raise ConfigError(f"{file}: {_table(where)} {name} = {value!r}: expected {_type_name(annotation)}") from None
            continue
        try:
            value = _coerce(value, annotation)
        except TypeError:
            raise ConfigError(f"{file}: {_table(where)} {name} = {value!r}: expected {_type_name(annotation)}") from None
        if name in checks and value is not None:
            problem = checks[name](value)
            if problem:
                raise ConfigError(f"{file}: {_table(where)} {name} = {value!r}: {problem}")
        kwargs[name] = value
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{file}: {_table(where)} needs {', '.join(repr(m) for m in missing)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, KeyError) as error:
        message = str(error).strip("\"'")
        raise ConfigError(f"{file}: {_table(where)} {message}") from None
