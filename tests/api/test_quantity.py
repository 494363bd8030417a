"""Kubernetes resource quantities.

- cpu to millicores ("100m", "0.5", "2", numbers), rounded up
- memory to bytes: binary (Ki, Mi, Gi) and decimal (k, M, G) suffixes, exponents
- bad quantities raise QuantityError with the value in the message
- formatting back
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from gitkube.api.quantity import (
    QuantityError,
    format_cpu,
    format_memory,
    parse_cpu,
    parse_memory,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "millicores"),
    [
        ("100m", 100),
        ("0.5", 500),
        ("500m", 500),
        ("2", 2000),
        (2, 2000),
        (0.25, 250),
        ("1e3", 1_000_000),
        ("0.0001", 1),
        ("1500u", 2),
        ("+1", 1000),
        (".5", 500),
    ],
)
def test_cpu_in_millicores(text: str | int | float, millicores: int) -> None:
    assert parse_cpu(text) == millicores


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64Mi", 64 * 2**20),
        ("1G", 10**9),
        ("1Gi", 2**30),
        ("1k", 1000),
        ("1Ki", 1024),
        ("1e3", 1000),
        ("1E3", 1000),
        ("1.5Gi", 3 * 2**29),
        ("128974848", 128974848),
        ("0.5", 1),
        (1024, 1024),
        ("7Ei", 7 * 2**60),
        ("1e-3", 1),
    ],
)
def test_memory_in_bytes(text: str | int, size: int) -> None:
    assert parse_memory(text) == size


def test_quantities_are_exact() -> None:
    assert parse_quantity("0.1") + parse_quantity("0.2") == Decimal("0.3")
    assert parse_quantity("100m") == Decimal("0.1")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "expected a number with an optional suffix"),
        ("abc", "expected a number"),
        ("1.2.3", "expected a number"),
        ("1Gb", "expected a number"),
        ("1 Gi", "expected a number"),
        ("m", "expected a number"),
        ("1e", "expected a number"),
        ("-1", "must not be negative"),
        ("-100m", "must not be negative"),
        ("1e999999999", "exponent out of range"),
        ("9Ei", "too large"),
        (float("nan"), "must be a finite number"),
        (float("inf"), "must be a finite number"),
        (True, "must be a string or number"),
        (None, "must be a string or number"),
    ],
)
def test_bad_quantities(value: object, message: str) -> None:
    with pytest.raises(QuantityError, match=message):
        parse_quantity(value)  # type: ignore[arg-type]


def test_quantity_error_is_a_value_error_naming_the_value() -> None:
    with pytest.raises(ValueError, match="'12x'"):
        parse_memory("12x")


def test_format() -> None:
    assert [format_cpu(m) for m in (2000, 250, 1500)] == ["2", "250m", "1500m"]
    assert [format_memory(b) for b in (2**30, 64 * 2**20, 3 * 2**10, 1000)] == [
        "1Gi",
        "64Mi",
        "3Ki",
        "1000",
    ]
