"""Label selectors (equality-based, as in v1 ReplicationController and Service)."""

from __future__ import annotations

import re
from collections.abc import Mapping

_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """True when every key=value of ``selector`` is in ``labels``.

    An empty selector matches nothing, as for v1 Services and RCs: an
    accidental empty selector must not grab every pod.
    """
    if not selector:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


def format_labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` to a dict; raises ValueError naming the bad item."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"label {item!r} is not of the form key=value")
        out[key.strip()] = value.strip()
    return out


def check_label_key(value: str) -> str | None:
    """A qualified name: optional DNS-subdomain prefix and '/', then a name of at most 63."""
    prefix, slash, name = value.rpartition("/")
    if slash:
        if not prefix:
            return f"label key {value!r} has an empty prefix before '/'"
        if len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix):
            return (
                f"label key {value!r}: prefix {prefix!r} must be a DNS-1123 subdomain "
                "(lowercase letters, digits, '-' and '.')"
            )
    if not name:
        return f"label key {value!r} has an empty name"
    if len(name) > 63:
        return f"label key {value!r}: the name part is longer than 63 characters"
    if not _QUALIFIED_NAME.match(name):
        return (
            f"label key {value!r}: the name part must be letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        )
    return None


def check_label_value(value: str) -> str | None:
    if value == "":
        return None
    if len(value) > 63:
        return f"label value {value!r} is longer than 63 characters"
    if not _QUALIFIED_NAME.match(value):
        return (
            f"label value {value!r} must be letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        )
    return None


def expressions_match(
    match_labels: Mapping[str, str],
    match_expressions: list[tuple[str, str, list[str]]],
    labels: Mapping[str, str],
) -> bool:
    """An apps/v1 ``LabelSelector`` (matchLabels ANDed with matchExpressions
    given as ``(key, operator, values)``) against ``labels``.

    Unlike v1 equality selectors, an empty apps/v1 selector matches
    everything; validation refuses empty selectors on Deployments and
    ReplicaSets, as Kubernetes does.
    """
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for key, operator, values in match_expressions:
        present = key in labels
        if operator == "In":
            if not present or labels[key] not in values:
                return False
        elif operator == "NotIn":
            if present and labels[key] in values:
                return False
        elif operator == "Exists":
            if not present:
                return False
        elif operator == "DoesNotExist":
            if present:
                return False
        else:
            raise ValueError(f"unknown selector operator {operator!r}")
    return True


class SelectorError(ValueError):
    """A label selector string that does not parse."""


_SELECTOR_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=(),]+)")


def parse_selector(text: str) -> list[tuple[str, str, list[str]]]:
    """Kubernetes' label selector grammar to ``(key, operator, values)``.

    ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a`` and
    ``!a``, comma-separated and ANDed. Operators come out as In, NotIn,
    Exists and DoesNotExist (``!=`` is NotIn, as Kubernetes evaluates it:
    true when the key is absent).
    """
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _SELECTOR_TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise SelectorError(f"cannot parse label selector {text!r} at {text[pos:]!r}")
        tokens.append(match.group(1))
        pos = match.end()
    out: list[tuple[str, str, list[str]]] = []
    i = 0

    def need(what: str) -> str:
        nonlocal i
        if i >= len(tokens):
            raise SelectorError(f"label selector {text!r}: expected {what} at the end")
        token = tokens[i]
        i += 1
        return token

    while i < len(tokens):
        token = need("a key")
        if token == "!":
            key = need("a key after '!'")
            out.append((key, "DoesNotExist", []))
        else:
            key = token
            if key in ("=", "==", "!=", "(", ")", ","):
                raise SelectorError(f"label selector {text!r}: expected a key, got {key!r}")
            nxt = tokens[i] if i < len(tokens) else ","
            if nxt == ",":
                out.append((key, "Exists", []))
            elif nxt in ("=", "==", "!="):
                i += 1
                value = tokens[i] if i < len(tokens) and tokens[i] != "," else ""
                if value:
                    i += 1
                out.append((key, "NotIn" if nxt == "!=" else "In", [value]))
            elif nxt in ("in", "notin"):
                i += 1
                if need("'('") != "(":
                    raise SelectorError(f"label selector {text!r}: expected '(' after {nxt}")
                values: list[str] = []
                while True:
                    item = need("a value or ')'")
                    if item == ")":
                        break
                    if item == ",":
                        continue
                    values.append(item)
                out.append((key, "In" if nxt == "in" else "NotIn", values))
            else:
                raise SelectorError(f"label selector {text!r}: unexpected {nxt!r} after {key!r}")
        if i < len(tokens):
            if tokens[i] != ",":
                raise SelectorError(f"label selector {text!r}: expected ',' before {tokens[i]!r}")
            i += 1
    for key, _, _ in out:
        problem = check_label_key(key)
        if problem:
            raise SelectorError(f"label selector {text!r}: {problem}")
    return out
