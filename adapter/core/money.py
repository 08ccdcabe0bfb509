"""Amounts as exact decimal strings, held to their currency's minor unit. Pure, no I/O.

>>> amount_problem("10.50", "USD") is None, amount_problem("10.5", "JPY")
(True, 'at most 0 decimals for JPY')
>>> same_amount("1", "1.00")
True

A currency's minor unit comes from ISO 4217's own list (the ``iso4217`` package), not from a
table typed here; a code the list lacks, or one with no minor unit (gold, testing codes), is no
currency a payment can be made in. Amounts are never floats: they are compared as ``Decimal``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from iso4217 import Currency

__all__ = ["amount_problem", "minor_unit", "same_amount"]


def minor_unit(code: str) -> int | None:
    """How many decimals the ISO 4217 currency ``code`` has (``USD`` 2, ``JPY`` 0, ``BHD`` 3);
    None for a code the list lacks or that has no minor unit."""
    try:
        exponent = Currency(code).exponent
    except ValueError:
        return None
    return exponent if isinstance(exponent, int) else None


def amount_problem(amount: str, currency: str) -> str | None:
    """What is wrong with a payment of ``amount`` (already a plain decimal) in ``currency``, or
    None: the currency must be one ISO 4217 gives a minor unit, the amount above zero and with no
    more decimals than that unit."""
    decimals = minor_unit(currency)
    if decimals is None:
        return f"{currency!r} is not an ISO 4217 currency with a minor unit"
    if Decimal(amount) == 0:
        return "must be above zero"
    _, _, fraction = amount.partition(".")
    if len(fraction) > decimals:
        return f"at most {decimals} decimals for {currency}"
    return None


def same_amount(first: str, second: str) -> bool:
    """Whether two decimal strings are the same amount (``1`` and ``1.00`` are); False if either
    is not a number."""
    try:
        return Decimal(first) == Decimal(second)
    except InvalidOperation:
        return False
