"""Checked construction of frozen dataclasses from plain values: the validation leaf of splitlib.

``build(cls, mapping)`` rejects unknown and missing keys and wrong types, naming the key, the value and what is
allowed; ``check`` is the one-line rule used in ``__post_init__``. It imports nothing from splitlib: the notebook
schemas (``splitlib.notebook_params``) and the feature configs (policies, annotators) build on it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

import yaml


class ParamError(ValueError):
    """A bad parameter: the message names the key, the value and what is allowed."""


# ---------------------------------------------------------------------------------------------------------
# generic validation
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it (lists become tuples; mappings, dataclasses)."""
    origin = typing.get_origin(tp)
    bad = ParamError(f"parameter {key}={value!r}: expected {_type_name(tp)}")
    if tp is Any:
        return value
    if origin is Literal:  # same type too: 1.0 and True are not the Literal 1
        if not any(value == a and type(value) is type(a) for a in typing.get_args(tp)):
            raise bad
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(key, value, arg)
            except ParamError:
                continue
        raise bad
    if tp is type(None):
        if value is not None:
            raise bad
        return None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        (arg, *_) = typing.get_args(tp) or (Any,)
        return tuple(_coerce(f"{key}[{i}]", v, arg) for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise bad
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise bad
        return build(tp, value, prefix=f"{key}.")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is int and isinstance(value, bool):
        raise bad
    if not isinstance(value, tp):
        raise bad
    return value


def build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Instantiate the dataclass ``cls`` from ``values``: exact keys, checked types, then its own checks."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ParamError(f"unknown parameter(s) {', '.join(prefix + u for u in unknown)}; allowed: {', '.join(names)}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values and _required(f)]
    if missing:
        raise ParamError(f"missing parameter(s) {', '.join(prefix + m for m in missing)}")
    kwargs = {k: _coerce(prefix + k, v, hints[k]) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ParamError as err:  # a check() in __post_init__: give a nested key its dotted name ("small.lr")
        text = str(err)
        if prefix and text.startswith("parameter "):
            raise ParamError(f"parameter {prefix}{text.removeprefix('parameter ')}") from err
        raise
    except (ValueError, TypeError) as err:
        raise ParamError(f"{prefix.rstrip('.') + ': ' if prefix else cls.__name__ + ': '}{err}") from err


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def build_config(cls: type, params: Mapping[str, Any], what: str, error: type[Exception] = TypeError) -> Any:
    """``cls(**params)`` for a dataclass, with an ``error`` naming unknown keys and the allowed ones."""
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise error(f"{what}: unknown parameter(s) {unknown}; allowed: {allowed or 'none'}")
    return cls(**params)


def check(cond: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a ParamError naming ``key`` unless ``cond``."""
    if not cond:
        raise ParamError(f"parameter {key}={value!r}: expected {allowed}")


def as_dict(params: Any) -> dict:
    """Parameters as plain JSON-ready values (tuples become lists)."""
    return yaml.safe_load(yaml.safe_dump(_plain(dataclasses.asdict(params))))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
