"""Cards as the embedded gateway sees them: the form of each card field, masking, the brand, and
the outcome the MPGS test cards' expiry dates stand for.

>>> luhn_valid("5123450000000008"), masked("5123450000000008"), brand("5123450000000008")
(True, '512345xxxxxx0008', 'MASTERCARD')
>>> outcome("1", "39", today=(2026, 12)).gateway_code
'APPROVED'

The gateway's own rules, written from MPGS's test-card page and field reference: never borrowed
from the adapter, which the gateway is there to judge. Nothing here keeps a number: the masked
form is the only one that leaves this module in a ``Card``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "APPROVED",
    "CARD_FIELDS",
    "EXPIRY_MONTH",
    "EXPIRY_YEAR",
    "NUMBER",
    "SECURITY_CODE",
    "Card",
    "Outcome",
    "brand",
    "card_of",
    "is_card_field",
    "luhn_valid",
    "masked",
    "outcome",
    "valid_card_value",
]

CARD_FIELDS = "sourceOfFunds.provided.card."
"""The prefix of every card field a session holds; their values are never quoted in an error."""
NUMBER = CARD_FIELDS + "number"
SECURITY_CODE = CARD_FIELDS + "securityCode"
EXPIRY_MONTH = CARD_FIELDS + "expiry.month"
EXPIRY_YEAR = CARD_FIELDS + "expiry.year"

# ASCII classes only: \d would take other scripts' digits.
_FORMS = {
    NUMBER: re.compile(r"[0-9]{12,19}"),
    SECURITY_CODE: re.compile(r"[0-9]{3,4}"),
    EXPIRY_MONTH: re.compile(r"0?[1-9]|1[0-2]"),
    EXPIRY_YEAR: re.compile(r"[0-9]{2}"),
}
_UNMASKED_HEAD = 6
_UNMASKED_TAIL = 4
_BRANDS = {"4": "VISA", "5": "MASTERCARD"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the acquirer answered: the gateway code and what goes with it in a transaction."""

    gateway_code: str
    result: str
    recommendation: str
    acquirer_code: str
    acquirer_message: str

    @property
    def approved(self) -> bool:
        return self.result == "SUCCESS"


APPROVED = Outcome("APPROVED", "SUCCESS", "NO_ACTION", "00", "Approved")
_RESUBMIT = "RESUBMIT_WITH_ALTERNATIVE_PAYMENT_DETAILS"
_STOP = "DO_NOT_PROCEED"
EXPIRED = Outcome("EXPIRED_CARD", "FAILURE", _RESUBMIT, "54", "Expired card")
_TEST_CARDS: Mapping[tuple[int, int], Outcome] = {
    (1, 39): APPROVED,
    (5, 39): Outcome("DECLINED", "FAILURE", _RESUBMIT, "05", "Do not honour"),
    (4, 27): EXPIRED,
    (8, 28): Outcome("TIMED_OUT", "FAILURE", _STOP, "68", "Response received too late"),
    (1, 37): Outcome("ACQUIRER_SYSTEM_ERROR", "FAILURE", _STOP, "96", "System malfunction"),
    (2, 37): Outcome("UNSPECIFIED_FAILURE", "FAILURE", _STOP, "06", "Error"),
    (5, 37): Outcome("UNKNOWN", "UNKNOWN", _STOP, "91", "Issuer unavailable"),
}
"""Expiry (month, two-digit year) -> outcome, as MPGS's test acquirer answers."""


@dataclass(frozen=True, slots=True)
class Card:
    """A card as an order keeps and shows it: masked, with its brand and expiry as stored."""

    number: str
    brand: str
    expiry_month: str
    expiry_year: str

    def fields(self) -> dict[str, str]:
        """The card's fields in a transaction answer."""
        return {
            "sourceOfFunds.type": "CARD",
            NUMBER: self.number,
            CARD_FIELDS + "brand": self.brand,
            EXPIRY_MONTH: self.expiry_month,
            EXPIRY_YEAR: self.expiry_year,
        }


def is_card_field(name: str) -> bool:
    """Whether ``name`` is a card field, whose values no answer or error may quote."""
    return name.startswith(CARD_FIELDS)


def valid_card_value(name: str, value: str) -> bool:
    """Whether ``value`` has the form of the card field ``name``; a number must pass Luhn.

    Card fields without a form of their own (``nameOnCard``) take any non-empty value.
    """
    form = _FORMS.get(name)
    if form is None:
        return bool(value)
    return form.fullmatch(value) is not None and (name != NUMBER or luhn_valid(value))


def luhn_valid(number: str) -> bool:
    """Whether a string of ASCII digits passes the Luhn check (False for anything else)."""
    if not number.isascii() or not number.isdigit():
        return False
    total = 0
    for position, digit in enumerate(reversed(number)):
        value = int(digit) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def masked(number: str) -> str:
    """The number as MPGS shows it: the first 6 and the last 4 digits, x's between; all x's if
    too short to have digits between."""
    hidden = len(number) - _UNMASKED_HEAD - _UNMASKED_TAIL
    if hidden < 1:
        return "x" * len(number)
    return number[:_UNMASKED_HEAD] + "x" * hidden + number[-_UNMASKED_TAIL:]


def brand(number: str) -> str:
    """MASTERCARD for a number starting with 5, VISA for 4, UNKNOWN otherwise."""
    return _BRANDS.get(number[:1], "UNKNOWN")


def card_of(data: Mapping[str, str]) -> Card | None:
    """The card a session holds, masked; None when it holds no number."""
    number = data.get(NUMBER)
    if number is None:
        return None
    return Card(
        masked(number), brand(number), data.get(EXPIRY_MONTH, ""), data.get(EXPIRY_YEAR, "")
    )


def outcome(month: str, year: str, *, today: tuple[int, int]) -> Outcome:
    """What paying with a card of this expiry gives; ``today`` is (year, month) on the wall clock.

    The test cards' expiry dates first; then any expiry before this month is EXPIRED_CARD, any
    other APPROVED. A month or year that is not a number (a session without expiry) is expired.
    """
    if not (month.isascii() and month.isdigit() and year.isascii() and year.isdigit()):
        return EXPIRED
    expiry = (int(month), int(year))
    known = _TEST_CARDS.get(expiry)
    if known is not None:
        return known
    if (2000 + expiry[1], expiry[0]) < today:
        return EXPIRED
    return APPROVED
