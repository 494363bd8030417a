"""Kubernetes resource quantities: cpu to millicores, memory to bytes.

"100m" is 100 millicores, "0.5" and "500m" are the same; "64Mi" is 64·2^20
bytes, "1G" is 10^9 bytes, "1e3" is 1000.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}

_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:(?P<exp>[eE][+-]?\d+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)


class QuantityError(ValueError):
    pass


#: Kubernetes keeps quantities in 64 bits; anything larger is a typo
MAX_QUANTITY = Decimal(2**63 - 1)


def parse_quantity(value: str | int | float) -> Decimal:
    """The value of a quantity in base units (cores, bytes).

    Raises QuantityError for anything else: text that is not a quantity,
    negative, NaN or infinite values, and values beyond 2^63.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise QuantityError(f"quantity must be a string or number, not {value!r}")
    if isinstance(value, int | float):
        number = Decimal(str(value))
        if not number.is_finite():
            raise QuantityError(f"invalid quantity {value!r}: must be a finite number")
    else:
        number = _parse_text(value)
    if number < 0:
        raise QuantityError(f"invalid quantity {value!r}: must not be negative")
    if number > MAX_QUANTITY:
        raise QuantityError(f"invalid quantity {value!r}: too large")
    return number


def _parse_text(value: str) -> Decimal:
    match = _QUANTITY.match(value.strip())
    if not match:
        raise QuantityError(
            f"invalid quantity {value!r}: expected a number with an optional suffix "
            "(m, k, M, G, Ki, Mi, Gi, ...) such as '100m', '0.5', '64Mi' or '1G'"
        )
    try:
        number = Decimal(match["num"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only numbers
        raise QuantityError(f"invalid quantity {value!r}") from exc
    if match["exp"]:
        exponent = int(match["exp"][1:])
        if abs(exponent) > 30:  # 1e999999999 would overflow Decimal
            raise QuantityError(f"invalid quantity {value!r}: exponent out of range")
        number = number.scaleb(exponent)
    return number * _SUFFIXES[match["suffix"] or ""]


def parse_cpu(value: str | int | float) -> int:
    """CPU in millicores, rounded up as Kubernetes does."""
    millis = parse_quantity(value) * 1000
    return int(millis.to_integral_value(rounding="ROUND_CEILING"))


def parse_memory(value: str | int | float) -> int:
    """Memory in bytes, rounded up."""
    return int(parse_quantity(value).to_integral_value(rounding="ROUND_CEILING"))


def format_cpu(millis: int) -> str:
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def format_memory(size: int) -> str:
    for suffix, scale in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{suffix}"
    return str(size)
