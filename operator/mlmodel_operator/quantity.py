"""Kubernetes resource quantities in the canonical form the API server stores (pure).

The API server rewrites every quantity it accepts (``1024Mi`` becomes ``1Gi``, ``0.5`` becomes
``500m``); a child built with the user's spelling would then differ from the live object on
every resync. Building with the canonical spelling keeps "no write when nothing changed" true.
"""

from __future__ import annotations

import re
from decimal import MAX_EMAX, MIN_EMIN, ROUND_UP, Decimal, localcontext
from typing import Any

_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<binary>[KMGTPE]i)|(?P<decimal>[numkMGTPE])|[eE](?P<exponent>[+-]?[0-9]+))?$"
)
_BINARY_POWERS = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_BINARY_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL_EXPONENTS = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_DECIMAL_SUFFIXES = {exponent: suffix for suffix, exponent in _DECIMAL_EXPONENTS.items()}
_NANO = Decimal("1e-9")


def canonical_quantity(value: str | int) -> str:
    """The API server's spelling of `value` (apimachinery's Quantity.String); unparsable text
    is returned unchanged, for the API server to refuse with its own message."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if match is None:
        return str(value)
    try:
        # Exact arithmetic: 10Ei counted in nano-units needs more than the default 28 digits.
        with localcontext(prec=80, Emax=MAX_EMAX, Emin=MIN_EMIN):
            return _canonical(match)
    except (ArithmeticError, ValueError):  # an exponent beyond reason: the API server decides
        return str(value)


def _canonical(match: re.Match[str]) -> str:
    number = Decimal(match["number"])
    if match["binary"]:
        style, amount = "binary", number * 1024 ** _BINARY_POWERS[match["binary"]]
    elif match["exponent"] is not None:
        style, amount = "exponent", number.scaleb(int(match["exponent"]))
    else:
        style, amount = "decimal", number.scaleb(_DECIMAL_EXPONENTS[match["decimal"] or ""])
    # Precision below one nano-unit is rounded up (away from zero), as the API server does.
    if amount != amount.quantize(_NANO, rounding=ROUND_UP):
        amount = amount.quantize(_NANO, rounding=ROUND_UP)
    if amount == 0:
        return "0"
    if style == "binary":
        # Small or fractional byte counts read better (and exactly) in decimal notation.
        if abs(amount) < 1024 or amount != amount.to_integral_value():
            style = "decimal"
        else:
            return _binary(int(amount))
    return _decimal(amount, style)


def _binary(amount: int) -> str:
    power = 0
    while amount % 1024 == 0 and power < len(_BINARY_SUFFIXES) - 1:
        amount //= 1024
        power += 1
    return f"{amount}{_BINARY_SUFFIXES[power]}"


def _decimal(amount: Decimal, style: str) -> str:
    sign, digits, exponent = amount.normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = int("".join(map(str, digits)))
    # The smallest mantissa whose exponent is a multiple of three (1500m, not 1.5).
    extra = exponent % 3
    mantissa, exponent = mantissa * 10**extra, exponent - extra
    text = f"{'-' if sign else ''}{mantissa}"
    if style == "decimal" and exponent in _DECIMAL_SUFFIXES:
        return text + _DECIMAL_SUFFIXES[exponent]
    return text if exponent == 0 else f"{text}e{exponent}"


def canonical_resources(resources: dict[str, Any]) -> dict[str, Any]:
    """A container's `resources` (requests, limits, claims left as they are) in canonical form."""
    return {
        key: (
            {name: canonical_quantity(amount) for name, amount in value.items()}
            if key in ("requests", "limits") and isinstance(value, dict)
            else value
        )
        for key, value in resources.items()
    }
