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
