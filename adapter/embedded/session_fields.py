"""What a session may hold, and the form of each value: the embedded gateway's own rules.

>>> is_session_field("billing.address.city"), is_session_field("session.id")
(True, False)
>>> valid_value("order.amount", "10.500"), valid_value("order.amount", "1e3")
(True, False)

Written here from the contract and MPGS's field reference, not shared with the adapter's own
validation: the gateway is the oracle the adapter is tested against, so it must not borrow the
code it judges.

Names: a session holds request fields of the operations that take a session, grouped as MPGS
groups them (``order.*``, ``billing.*``, ``customer.*``, ``shipping.*``, ``sourceOfFunds.*``,
...); a name is the group and one or more camelCase parts, an array element as ``item[0]``.
Values: the order fields of the contract have their own forms, and so do the card's
(``cards.valid_card_value``: a number must pass Luhn); any other value is 1 or more characters
of any kind (MPGS's "String"), its size bounded by the store.
"""

from __future__ import annotations

import re

from adapter.embedded import cards

__all__ = [
    "ORDER_AMOUNT",
    "ORDER_CURRENCY",
    "SESSION_ID",
    "SESSION_VERSION",
    "is_session_field",
    "shown_value",
    "valid_value",
]

SESSION_ID = re.compile(r"[0-9A-Za-z]{31,35}")
"""``session.id`` as the gateway issues and accepts it."""
SESSION_VERSION = re.compile(r"[0-9a-z]{10}")
"""``session.version``: exactly 10 of 0-9 a-z (the gateway's own are hexadecimal)."""

ORDER_AMOUNT = "order.amount"
ORDER_CURRENCY = "order.currency"
# The parameter groups of MPGS's Update Session request that a Hosted Session backend and the
# payer's browser fill in. Others (interaction.*, merchant-only settings) are not session data.
_GROUPS = frozenset(
    {
        "agreement",
        "airline",
        "authentication",
        "billing",
        "browserPayment",
        "constraints",
        "customer",
        "device",
        "order",
        "risk",
        "shipping",
        "sourceOfFunds",
        "transaction",
    }
)
_PART = r"[a-z][A-Za-z0-9]{0,39}(?:\[[0-9]{1,3}\])?"
_NAME = re.compile(rf"([a-zA-Z]+)(?:\.{_PART}){{1,6}}")
_MAX_NAME_CHARS = 100

# The contract's forms. ASCII classes only: \d would take other scripts' digits.
# An amount is digits as written: at most 14 before the point and 1 to 3 after it, if it has
# one; no sign, no exponent, no bare point at either end.
_AMOUNT = re.compile(r"[0-9]{1,14}(?:\.[0-9]{1,3})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_LENGTHS = {"order.id": 40, "order.reference": 40, "order.description": 127}


def is_session_field(name: str) -> bool:
    """Whether a session may hold a field of this name (``session.*`` is the gateway's own)."""
    match = _NAME.fullmatch(name)
    return match is not None and len(name) <= _MAX_NAME_CHARS and match[1] in _GROUPS


def valid_value(name: str, value: str) -> bool:
    """Whether ``value`` has the form the session field ``name`` takes (size apart)."""
    if name == ORDER_AMOUNT:
        return _AMOUNT.fullmatch(value) is not None
    if name == ORDER_CURRENCY:
        return _CURRENCY.fullmatch(value) is not None
    if cards.is_card_field(name):
        return cards.valid_card_value(name, value)
    return 1 <= len(value) <= _LENGTHS.get(name, len(value))


def shown_value(name: str, value: str) -> str:
    """The value as Retrieve Session shows it: card data masked as MPGS does (the number's
    first 6 and last 4 digits, the security code as x's), the rest as stored. The session keeps
    the real values for the payment."""
    if name == cards.SECURITY_CODE:
        return "x" * len(value)
    if name == cards.NUMBER:
        return cards.masked(value)
    return value
