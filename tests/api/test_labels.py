"""Label selectors and label syntax.

- equality selectors: every key=value must match; an empty selector matches nothing
- parsing and formatting k=v lists
- Kubernetes' rules for label keys (optional DNS-subdomain prefix, name of at most 63)
  and values (at most 63, alphanumeric at both ends)
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gitkube.api.labels import (
    check_label_key,
    check_label_value,
    format_labels,
    parse_labels,
    selector_matches,
)


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({"app": "web"}, {"app": "web"}, True),
        ({"app": "web"}, {"app": "web", "tier": "front"}, True),
        ({"app": "web", "tier": "front"}, {"app": "web"}, False),
        ({"app": "web"}, {"app": "api"}, False),
        ({"app": ""}, {"app": ""}, True),
        ({"app": ""}, {}, False),
        ({}, {"app": "web"}, False),
        ({}, {}, False),
    ],
)
def test_selector_matches(selector: dict[str, str], labels: dict[str, str], matches: bool) -> None:
    assert selector_matches(selector, labels) is matches


small = st.dictionaries(st.sampled_from("abcd"), st.sampled_from("xyz"), max_size=4)


@given(small, small)
def test_a_selector_matches_exactly_when_it_is_a_subset(
    selector: dict[str, str], labels: dict[str, str]
) -> None:
    assert selector_matches(selector, labels) == (
        bool(selector) and selector.items() <= labels.items()
    )


def test_parse_and_format() -> None:
    assert parse_labels("app=web, tier=front,") == {"app": "web", "tier": "front"}
    assert parse_labels("") == {}
    assert format_labels({"tier": "front", "app": "web"}) == "app=web,tier=front"
    assert format_labels({}) == "<none>"
    with pytest.raises(ValueError, match="'app' is not of the form key=value"):
        parse_labels("app")
    with pytest.raises(ValueError, match="not of the form"):
        parse_labels("=web")


@pytest.mark.parametrize(
    "key",
    ["app", "App_1.x-y", "example.com/app", "app.kubernetes.io/name", "a" * 63, "x." * 100 + "y/n"],
)
def test_valid_label_keys(key: str) -> None:
    assert check_label_key(key) is None


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty name"),
        ("-app", "the name part must be"),
        ("app-", "the name part must be"),
        ("a b", "the name part must be"),
        ("a" * 64, "longer than 63"),
        ("/app", "empty prefix"),
        ("example.com/", "empty name"),
        ("Example.com/app", "must be a DNS-1123 subdomain"),
        ("a/b/c", "must be a DNS-1123 subdomain"),
        ("x" * 254 + "/app", "must be a DNS-1123 subdomain"),
    ],
)
def test_invalid_label_keys(key: str, problem: str) -> None:
    message = check_label_key(key)
    assert message is not None and problem in message


@pytest.mark.parametrize("value", ["", "web", "v1.2_3-a", "A", "a" * 63])
def test_valid_label_values(value: str) -> None:
    assert check_label_value(value) is None


@pytest.mark.parametrize("value", ["-web", "web-", "a b", "a/b", "a" * 64, "é"])
def test_invalid_label_values(value: str) -> None:
    assert check_label_value(value) is not None
