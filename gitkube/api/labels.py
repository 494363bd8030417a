"""Label selectors (equality-based, as in v1 ReplicationController and Service)."""

from __future__ import annotations

from collections.abc import Mapping


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
