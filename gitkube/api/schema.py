"""The JSON Schemas shipped in ``gitkube/api/schemas/`` and a compiler that
turns them into plain Python checks.

The schemas are standard JSON Schema (draft 2020-12; any tool can read them).
A general-purpose validator costs about a millisecond per object, too much
for a repository of ten thousand objects, so each schema is compiled once
into nested closures that check a document in one walk. The compiler knows
the subset of JSON Schema the files use and refuses any other keyword, so a
schema edit cannot silently check less than it says.

Three gitkube annotations, ignored by other tools:

- ``x-gitkube-ignored: "<reason>"`` — a field Kubernetes v1 defines and
  gitkube accepts but does not act on; it is reported, never an error.
- ``x-gitkube-unsupported: "<message>"`` — a v1 field gitkube rejects.
- ``format`` names a check from ``FORMATS`` (DNS names, label keys,
  quantities, ...). Other validators treat formats as annotations.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from gitkube.api.labels import check_label_key, check_label_value
from gitkube.api.quantity import QuantityError, parse_quantity

Path = tuple[str | int, ...]


class Sink:
    """Where checks put what they find: ``(path, message)`` pairs."""

    __slots__ = ("errors", "ignored")

    def __init__(self) -> None:
        self.errors: list[tuple[Path, str]] = []
        self.ignored: list[tuple[Path, str]] = []


Check = Callable[[Any, Path, Sink], None]


class SchemaCompileError(Exception):
    """A schema file uses something the compiler does not implement (a bug in gitkube)."""


# ---------------------------------------------------------------- formats

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IANA_SVC_NAME = re.compile(r"^[-a-z0-9]+$")
_C_IDENTIFIER = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def check_dns1123_label(value: str) -> str | None:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        return (
            f"{value!r} is not a valid DNS-1123 label: at most 63 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    return None


def check_dns1035_label(value: str) -> str | None:
    if len(value) > 63 or not _DNS1035_LABEL.match(value):
        return (
            f"{value!r} is not a valid DNS-1035 label: at most 63 lowercase letters, "
            "digits and '-', starting with a letter and ending with a letter or digit"
        )
    return None


def check_dns1123_subdomain(value: str) -> str | None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        return (
            f"{value!r} is not a valid DNS-1123 subdomain: at most 253 lowercase letters, "
            "digits, '-' and '.', starting and ending with a letter or digit"
        )
    return None


def check_iana_svc_name(value: str) -> str | None:
    problem = ""
    if len(value) > 15:
        problem = "at most 15 characters"
    elif not _IANA_SVC_NAME.match(value):
        problem = "only lowercase letters, digits and '-'"
    elif not re.search(r"[a-z]", value):
        problem = "at least one letter"
    elif "--" in value or value.startswith("-") or value.endswith("-"):
        problem = "no '--' and no '-' at either end"
    if problem:
        return f"{value!r} is not a valid port name: {problem}"
    return None


def _check_quantity(value: Any) -> str | None:
    try:
        parse_quantity(value)
    except QuantityError as exc:
        return str(exc)
    return None


def _check_port_or_name(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 65535:
            return f"port {value} is out of range 1-65535"
        return None
    problem = check_iana_svc_name(value)
    if problem:
        return f"must be a port number (1-65535) or a port name: {problem}"
    return None


def _check_node_port(value: int) -> str | None:
    if value != 0 and not 30000 <= value <= 32767:
        return f"{value} is out of range 30000-32767 (0 means: none)"
    return None


def _check_ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


def _check_ip_or_empty(value: str) -> str | None:
    return _check_ip(value) if value else None


def _check_cluster_ip(value: str) -> str | None:
    if value in ("", "None"):
        return None
    problem = _check_ip(value)
    return f"must be 'None' (headless), empty, or an IP address: {problem}" if problem else None


def _check_namespace(value: str) -> str | None:
    return check_dns1123_label(value) if value else None


def _check_env_name(value: str) -> str | None:
    if not _C_IDENTIFIER.match(value):
        return (
            f"{value!r} is not a valid environment variable name: letters, digits, "
            "'_', '-' and '.', not starting with a digit"
        )
    return None


_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_PERCENT = re.compile(r"^[0-9]+%$")


def check_config_key(value: str) -> str | None:
    """A key of a ConfigMap or Secret (it becomes a file name in a volume)."""
    if not value or len(value) > 253 or not _CONFIG_KEY.match(value):
        return f"{value!r} is not a valid key: at most 253 letters, digits, '-', '_' and '.'"
    if value in (".", "..") or value.startswith(".."):
        return f"{value!r} is not a valid key: it may not be '.' or start with '..'"
    return None


def _check_base64(value: str) -> str | None:
    stripped = value.replace("\n", "").replace("\r", "")
    if len(stripped) % 4 or not _BASE64.match(stripped):
        # never quoted: this is a Secret's value (gitkube.api.redact)
        return f"must be base64-encoded; this value ({len(value)} characters) is not valid base64"
    return None


def _check_int_or_percent(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value >= 0 else f"must not be negative, not {value}"
    if not _PERCENT.match(value):
        return f"must be a count or a percentage such as '25%', not {value!r}"
    return None


_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _int_range(bounds: tuple[int, int], name: str) -> Callable[[Any], str | None]:
    low, high = bounds

    def check(value: Any) -> str | None:
        if isinstance(value, int) and not low <= value <= high:
            return f"{value} does not fit in an {name}"
        return None

    return check


def _check_date_time(value: Any) -> str | None:
    if isinstance(value, str) and not _DATE_TIME.match(value):
        return f"{value!r} is not an RFC 3339 time such as '2024-01-31T12:00:00Z'"
    return None


#: format name -> check returning a message, or None when the value is fine
FORMATS: dict[str, Callable[[Any], str | None]] = {
    "dns1123-label": check_dns1123_label,
    "dns1123-subdomain": check_dns1123_subdomain,
    "dns1035-label": check_dns1035_label,
    "iana-svc-name": check_iana_svc_name,
    "label-key": check_label_key,
    "label-value": check_label_value,
    "resource-name": check_label_key,
    "quantity": _check_quantity,
    "port-or-name": _check_port_or_name,
    "node-port": _check_node_port,
    "ip": _check_ip,
    "ip-or-empty": _check_ip_or_empty,
    "cluster-ip": _check_cluster_ip,
    "env-name": _check_env_name,
    "namespace": _check_namespace,
    "config-key": check_config_key,
    "base64": _check_base64,
    "int-or-percent": _check_int_or_percent,
    # the formats of the official Kubernetes schema
    "int32": _int_range(_INT32, "int32"),
    "int64": _int_range(_INT64, "int64"),
    "byte": _check_base64,
    "date-time": _check_date_time,
    "double": lambda value: None,
}

# ---------------------------------------------------------------- types


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_int,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}

_ARTICLE = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def describe(value: Any) -> str:
    """What a value is, for messages: ``an integer (5)``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


# ---------------------------------------------------------------- compiler

_ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "$defs", "x-gitkube-ignored"}
_KNOWN = _ANNOTATIONS | {
    "$ref",
    "type",
    "enum",
    "const",
    "properties",
    "additionalProperties",
    "propertyNames",
    "required",
    "items",
    "minItems",
    "minimum",
    "maximum",
    "minLength",
    "format",
    "oneOf",
    "x-gitkube-unsupported",
}


class SchemaCompiler:
    """Compiles schemas that refer to each other by file name (``defs.json#/$defs/X``)."""

    def __init__(self, documents: dict[str, dict[str, Any]]) -> None:
        self._documents = documents
        self._refs: dict[str, Check] = {}

    def compile(self, schema: dict[str, Any]) -> Check:
        unknown = set(schema) - _KNOWN
        if unknown:
            raise SchemaCompileError(f"unsupported schema keywords: {sorted(unknown)}")
        if "x-gitkube-unsupported" in schema:
            return _unsupported(schema["x-gitkube-unsupported"])
        if "$ref" in schema:
            return self._ref(schema["$ref"])
        types = schema.get("type")
        if "oneOf" in schema:
            # only the official schema's IntOrString and Quantity: one of some types
            branches = schema["oneOf"]
            if "type" in schema or any(set(b) != {"type"} for b in branches):
                raise SchemaCompileError("oneOf is supported only between plain types")
            types = [t for b in branches for t in _type_names(b["type"])]
        checks: list[Check] = []
        if "const" in schema:
            checks.append(_const(schema["const"]))
        if "enum" in schema:
            checks.append(_enum(schema["enum"]))
        if "minimum" in schema or "maximum" in schema:
            checks.append(_range(schema.get("minimum"), schema.get("maximum")))
        if "minLength" in schema:
            checks.append(_min_length(schema["minLength"]))
        if "format" in schema:
            try:
                checks.append(_format(FORMATS[schema["format"]]))
            except KeyError:
                raise SchemaCompileError(f"unknown format {schema['format']!r}") from None
        if "properties" in schema or "additionalProperties" in schema or "required" in schema:
            checks.append(self._object(schema))
        elif "propertyNames" in schema:
            raise SchemaCompileError("propertyNames needs additionalProperties")
        if "items" in schema or "minItems" in schema:
            checks.append(self._array(schema))
        return _typed(types, checks)

    def _ref(self, ref: str) -> Check:
        if ref in self._refs:
            return self._refs[ref]
        document, _, pointer = ref.partition("#")
        target: Any = self._documents[document]
        for part in filter(None, pointer.split("/")):
            target = target[part]
        # A cell first, so a schema that refers to itself compiles.
        cell: list[Check] = []
        self._refs[ref] = lambda value, path, sink: cell[0](value, path, sink)
        cell.append(self.compile(target))
        self._refs[ref] = cell[0]
        return cell[0]

    def _object(self, schema: dict[str, Any]) -> Check:
        props: dict[str, tuple[Check, str | None]] = {}
        # Fields that only need a type (most strings, integers, booleans) are
        # tested in place: one call less per field of every document.
        plain: dict[str, Callable[[Any], bool]] = {}
        for name, sub in schema.get("properties", {}).items():
            props[name] = (self.compile(sub), sub.get("x-gitkube-ignored"))
            if set(sub) <= {"type", "description"} and "type" in sub:
                plain[name] = _type_test(_type_names(sub["type"]))
        required = tuple(schema.get("required", ()))
        extra = schema.get("additionalProperties", True)
        names = sorted(props)
        extra_check: Check | None = None
        if isinstance(extra, dict):
            extra_check = self.compile(extra)
        closed = extra is False
        key_check = self.compile(schema["propertyNames"]) if "propertyNames" in schema else None

        def check(value: dict[str, Any], path: Path, sink: Sink) -> None:
            for key, item in value.items():
                test = plain.get(key)
                if test is not None and test(item):
                    continue
                entry = props.get(key)
                if entry is not None:
                    if item is None:  # null is "not set", as in Kubernetes
                        continue
                    sub, ignored = entry
                    if ignored is not None:
                        sink.ignored.append(((*path, key), ignored))
                    sub(item, (*path, key), sink)
                elif closed:
                    sink.errors.append(((*path, key), _unknown_field(key, names)))
                else:
                    if key_check is not None:
                        key_check(key, (*path, key), sink)
                    if extra_check is not None:
                        extra_check(item, (*path, key), sink)
            for key in required:
                if value.get(key) is None:
                    sink.errors.append(((*path, key), "required field is missing"))

        return check

    def _array(self, schema: dict[str, Any]) -> Check:
        item_check = self.compile(schema["items"]) if "items" in schema else None
        min_items = schema.get("minItems", 0)

        def check(value: list[Any], path: Path, sink: Sink) -> None:
            if len(value) < min_items:
                sink.errors.append(
                    (path, f"needs at least {min_items} item{'s' if min_items != 1 else ''}")
                )
            if item_check is not None:
                for index, item in enumerate(value):
                    item_check(item, (*path, index), sink)

        return check


def _unknown_field(key: str, names: list[str]) -> str:
    message = f"unknown field {key!r}"
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message


def _type_names(types: str | list[str]) -> list[str]:
    return [types] if isinstance(types, str) else list(types)


def _type_test(names: list[str]) -> Callable[[Any], bool]:
    tests = [_TYPES[name] for name in dict.fromkeys(names)]
    if len(tests) == 1:
        return tests[0]
    return lambda v: any(t(v) for t in tests)


def _typed(types: str | list[str] | None, checks: list[Check]) -> Check:
    if types is None:
        if not checks:
            return _accept
        if len(checks) == 1:
            return checks[0]
        return _all(checks)
    names = list(dict.fromkeys(_type_names(types)))
    test = _type_test(names)
    # "or null" says nothing a user needs: null is "not set" everywhere
    wanted = " or ".join(_ARTICLE[name] for name in names if name != "null" or len(names) == 1)
    rest = _all(checks) if checks else None

    def check(value: Any, path: Path, sink: Sink) -> None:
        if not test(value):
            sink.errors.append((path, f"must be {wanted}, not {describe(value)}"))
        elif rest is not None and value is not None:
            rest(value, path, sink)

    return check


def _all(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]

    def check(value: Any, path: Path, sink: Sink) -> None:
        for sub in checks:
            sub(value, path, sink)

    return check


def _accept(value: Any, path: Path, sink: Sink) -> None:
    return None


def _unsupported(message: str) -> Check:
    def check(value: Any, path: Path, sink: Sink) -> None:
        sink.errors.append((path, message))

    return check


def _const(expected: Any) -> Check:
    def check(value: Any, path: Path, sink: Sink) -> None:
        if value != expected or type(value) is not type(expected):
            sink.errors.append((path, f"must be {expected!r}, not {describe(value)}"))

    return check


def _enum(options: list[Any]) -> Check:
    allowed = frozenset(options)
    shown = ", ".join(str(o) for o in options)

    def check(value: Any, path: Path, sink: Sink) -> None:
        if isinstance(value, dict | list) or value not in allowed:
            sink.errors.append((path, f"must be one of {shown}; got {describe(value)}"))

    return check


def _range(low: int | None, high: int | None) -> Check:
    def check(value: Any, path: Path, sink: Sink) -> None:
        if not _is_number(value):
            return
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                sink.errors.append((path, f"{value} is out of range {low}-{high}"))
            elif low is not None:
                sink.errors.append((path, f"must be at least {low}, not {value}"))
            else:
                sink.errors.append((path, f"must be at most {high}, not {value}"))

    return check


def _min_length(minimum: int) -> Check:
    def check(value: Any, path: Path, sink: Sink) -> None:
        if isinstance(value, str) and len(value) < minimum:
            sink.errors.append((path, "must not be empty" if minimum == 1 else "is too short"))

    return check


def _format(test: Callable[[Any], str | None]) -> Check:
    def check(value: Any, path: Path, sink: Sink) -> None:
        problem = test(value)
        if problem:
            sink.errors.append((path, problem))

    return check


# ---------------------------------------------------------------- shipped schemas

SCHEMA_FILES = {
    "Pod": "pod.json",
    "ReplicationController": "replicationcontroller.json",
    "Service": "service.json",
    "Endpoints": "endpoints.json",
    "Node": "node.json",
    "Namespace": "namespace.json",
    "ConfigMap": "configmap.json",
    "Secret": "secret.json",
    "Deployment": "deployment.json",
    "ReplicaSet": "replicaset.json",
}


@cache
def schema_documents() -> dict[str, dict[str, Any]]:
    """Every shipped schema file by file name (``defs.json``, ``pod.json``, ...)."""
    folder = resources.files("gitkube.api").joinpath("schemas")
    return {
        name: json.loads(folder.joinpath(name).read_text(encoding="utf-8"))
        for name in ("defs.json", *SCHEMA_FILES.values())
    }


@cache
def kind_checks() -> dict[str, Check]:
    """A compiled check per supported kind; compiled once per process."""
    documents = schema_documents()
    compiler = SchemaCompiler(documents)
    return {kind: compiler.compile(documents[file]) for kind, file in SCHEMA_FILES.items()}


# ---------------------------------------------------------------- the official schema

#: the official Kubernetes schema shipped with gitkube (scripts/kubernetes_schema.py)
KUBERNETES_SCHEMA_FILE = "kubernetes.json"


@dataclass(frozen=True)
class OfficialKind:
    """A kind the official schema defines: its definition, resource name and scope."""

    api_version: str
    kind: str
    definition: str
    resource: str
    namespaced: bool


@cache
def kubernetes_schema() -> dict[str, Any]:
    """The official schema document (definitions, kinds, source and version)."""
    folder = resources.files("gitkube.api").joinpath("schemas")
    data: dict[str, Any] = json.loads(
        folder.joinpath(KUBERNETES_SCHEMA_FILE).read_text(encoding="utf-8")
    )
    return data


def kubernetes_version() -> str:
    """The Kubernetes release whose schema is the floor (``1.33.0``)."""
    return str(kubernetes_schema()["x-source"]["kubernetesVersion"])


@cache
def official_kinds() -> dict[tuple[str, str], OfficialKind]:
    """(apiVersion, kind) -> what the official schema says of it."""
    out: dict[tuple[str, str], OfficialKind] = {}
    for key, entry in kubernetes_schema()["kinds"].items():
        api_version, _, kind = key.rpartition("/")
        out[(api_version, kind)] = OfficialKind(
            api_version, kind, entry["definition"], entry["resource"], entry["namespaced"]
        )
    return out


@cache
def _official_compiler() -> SchemaCompiler:
    return SchemaCompiler({KUBERNETES_SCHEMA_FILE: kubernetes_schema()})


@cache
def official_check(api_version: str, kind: str) -> Check | None:
    """The compiled official check of a kind (strict: unknown fields are errors),
    or None when the official schema does not define it. Compiled on first use."""
    found = official_kinds().get((api_version, kind))
    if found is None:
        return None
    ref = f"{KUBERNETES_SCHEMA_FILE}#/$defs/{found.definition}"
    return _official_compiler().compile({"$ref": ref})


def plural_resource(kind: str) -> str:
    """Kubernetes' default resource name of a kind: ``Ingress`` -> ``ingresses``,
    ``NetworkPolicy`` -> ``networkpolicies``."""
    lower = kind.lower()
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


@cache
def metadata_check() -> Check:
    """gitkube's check of ``metadata`` alone (for kinds it stores but does not run)."""
    return SchemaCompiler(schema_documents()).compile({"$ref": "defs.json#/$defs/ObjectMeta"})
