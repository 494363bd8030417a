"""Conversion between API dataclasses and Kubernetes-style JSON dicts.

Attributes are snake_case in Python and camelCase on the wire, as in
Kubernetes v1. A field whose wire name does not follow the rule
(``clusterIP``, ``podIP``, ``exec``) declares it with ``wire("name")``.

``from_dict`` ignores keys it does not know: validation rejects unknown
fields before objects are built, and fields Kubernetes defines but gitkube
ignores must not break loading.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Any, TypeVar, Union, get_args, get_origin

T = TypeVar("T")

_WIRE = "wire_name"


def wire(name: str, **kwargs: Any) -> Any:
    """A dataclass field whose JSON name is ``name``."""
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata[_WIRE] = name
    return dataclasses.field(metadata=metadata, **kwargs)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@cache
def _fields(cls: type) -> list[tuple[str, str, Any]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        out.append((f.name, f.metadata.get(_WIRE, camel(f.name)), hints[f.name]))
    return out


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def to_dict(obj: Any, *, keep_empty: bool = False) -> Any:
    """The wire form of ``obj``: empty values are omitted, as Kubernetes does."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for name, wire_name, _ in _fields(type(obj)):
            value = to_dict(getattr(obj, name), keep_empty=keep_empty)
            if keep_empty or not _is_empty(value):
                out[wire_name] = value
        return out
    if isinstance(obj, list):
        return [to_dict(v, keep_empty=keep_empty) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, keep_empty=keep_empty) for k, v in obj.items()}
    return obj


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        for arg in args:
            if isinstance(arg, type) and dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return from_dict(arg, value)
        for arg in args:
            if isinstance(arg, type) and isinstance(value, arg):
                return value
        return _convert(args[0], value) if len(args) == 1 else value
    if origin is list:
        (item,) = get_args(tp)
        return [_convert(item, v) for v in value] if isinstance(value, list) else []
    if origin is dict:
        _, item = get_args(tp)
        return {k: _convert(item, v) for k, v in value.items()} if isinstance(value, dict) else {}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value) if isinstance(value, dict) else tp()
    if tp is Any:
        return value
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build ``cls`` from its wire form; missing keys take the field defaults."""
    data = data or {}
    kwargs = {}
    for name, wire_name, tp in _fields(cls):  # type: ignore[arg-type]
        if wire_name in data and data[wire_name] is not None:
            kwargs[name] = _convert(tp, data[wire_name])
    return cls(**kwargs)
