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
from collections.abc import Callable
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


@cache
def _optional_dataclass(tp: Any) -> bool:
    args = typing.get_args(tp)
    return type(None) in args and any(dataclasses.is_dataclass(a) for a in args)


def _presence_matters(tp: Any, raw: Any) -> bool:
    """An optional nested object that is set but empty (``emptyDir: {}``)."""
    return dataclasses.is_dataclass(raw) and _optional_dataclass(tp)


def to_dict(obj: Any, *, keep_empty: bool = False) -> Any:
    """The wire form of ``obj``: empty values are omitted, as Kubernetes does."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for name, wire_name, tp in _fields(type(obj)):
            raw = getattr(obj, name)
            value = to_dict(raw, keep_empty=keep_empty)
            if keep_empty or not _is_empty(value):
                out[wire_name] = value
            elif value == {} and _presence_matters(tp, raw):
                out[wire_name] = value  # `emptyDir: {}`: being there is the meaning
        return out
    if isinstance(obj, list):
        return [to_dict(v, keep_empty=keep_empty) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, keep_empty=keep_empty) for k, v in obj.items()}
    return obj


def _convert(tp: Any, value: Any) -> Any:
    return _converter(tp)(value)


def _identity(value: Any) -> Any:
    return value


@cache
def _converter(tp: Any) -> Callable[[Any], Any]:
    """A function from a wire value to ``tp``, worked out once per type.

    ``from_dict`` runs for every object read from git or the store, so the
    type inspection happens here, not per value. ``None`` stays ``None``.
    """
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        nested = next(
            (a for a in args if isinstance(a, type) and dataclasses.is_dataclass(a)), None
        )
        plain = tuple(a for a in args if isinstance(a, type))
        single = _converter(args[0]) if len(args) == 1 else _identity

        def convert_union(value: Any) -> Any:
            if value is None:
                return None
            if nested is not None and isinstance(value, dict):
                return from_dict(nested, value)
            if plain and isinstance(value, plain):
                return value
            return single(value)

        return convert_union
    if origin is list:
        (item_type,) = get_args(tp)
        item = _converter(item_type)

        def convert_list(value: Any) -> Any:
            if value is None:
                return None
            return [item(v) for v in value] if isinstance(value, list) else []

        return convert_list
    if origin is dict:
        _, value_type = get_args(tp)
        item = _converter(value_type)

        def convert_dict(value: Any) -> Any:
            if value is None:
                return None
            return {k: item(v) for k, v in value.items()} if isinstance(value, dict) else {}

        return convert_dict
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        cls = tp

        def convert_object(value: Any) -> Any:
            if value is None:
                return None
            return from_dict(cls, value) if isinstance(value, dict) else cls()

        return convert_object
    if tp is float:
        return lambda value: float(value) if isinstance(value, int) else value
    return _identity


@cache
def _plan(cls: type) -> tuple[tuple[str, str, Callable[[Any], Any]], ...]:
    return tuple((name, wire_name, _converter(tp)) for name, wire_name, tp in _fields(cls))


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build ``cls`` from its wire form; missing keys take the field defaults."""
    data = data or {}
    kwargs = {}
    for name, wire_name, convert in _plan(cls):  # type: ignore[arg-type]
        value = data.get(wire_name)
        if value is not None:
            kwargs[name] = convert(value)
    return cls(**kwargs)
