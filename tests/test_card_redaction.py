"""Card data is a secret like a password (docs/security.md): rule 4 of adapter/core/redaction.py.

A card number in the gateway's error text is masked as the gateway masks it; a field named for a
card's number or security code never shows either whole; and nothing else is touched, so that an
identifier that happens to pass the Luhn check survives a successful answer byte for byte.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adapter.core import nvp
from adapter.core.redaction import (
    REDACTED,
    mask_card_number,
    scrub_error_answer,
    scrub_free_text,
    scrub_unmodelled,
)


def _luhn_digit(body: str) -> str:
    """The digit that makes ``body`` and it pass the Luhn check (written here: the oracle)."""
    total = 0
    for position, char in enumerate(reversed(body + "0")):
        value = int(char)
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


_CARDS = st.text("0123456789", min_size=11, max_size=18).map(lambda body: body + _luhn_digit(body))
_SEPARATORS = st.sampled_from(["", " ", "-"])
_AROUND = st.text(st.characters(exclude_categories=["Nd"]), max_size=20)


@given(_CARDS, _SEPARATORS, _AROUND, _AROUND)
def test_a_card_number_never_survives_free_text(
    card: str, separator: str, before: str, after: str
) -> None:
    """Any Luhn-valid 12 to 19 digit number, written with or without separators, anywhere in a
    text: the scrubbed text holds neither it nor its digits in a row, and shows the mask."""
    written = separator.join(card[i : i + 4] for i in range(0, len(card), 4))
    scrubbed = scrub_free_text(f"{before}{written}{after}")
    assert card not in scrubbed.replace(" ", "").replace("-", "")
    assert mask_card_number(card) in scrubbed


def test_the_mask_keeps_six_and_four() -> None:
    assert mask_card_number("5123450000000008") == "512345xxxxxx0008"
    assert mask_card_number("123456789") == "xxxxxxxxx"


def test_numbers_that_are_no_card_are_left_alone() -> None:
    """Too short, too long, or failing the Luhn check: not a card number, not changed."""
    for text in ("order 12345678901", "id 12345678901234567890", "5123450000000009", "2021-02-11"):
        assert scrub_free_text(text) == text


def test_an_error_about_a_card_field_keeps_no_explanation() -> None:
    """The gateway may quote the value it refused: for a card's number or security code the
    whole explanation goes, as for the password; the field and cause stay."""
    for field in ("sourceOfFunds.provided.card.number", "sourceOfFunds.provided.card.securityCode"):
        answer = {
            nvp.RESULT: "ERROR",
            nvp.ERROR_CAUSE: "INVALID_REQUEST",
            nvp.ERROR_FIELD: field,
            nvp.ERROR_EXPLANATION: "Value '737' is invalid.",
        }
        scrubbed = scrub_error_answer(answer)
        assert scrubbed[nvp.ERROR_EXPLANATION] == REDACTED
        assert scrubbed[nvp.ERROR_FIELD] == field


def test_a_successful_answer_masks_card_fields_by_name_only() -> None:
    """A full number or a security code under their names is masked; a Luhn-valid identifier
    under any other name is the gateway's data and stays as sent."""
    fields = {
        "sourceOfFunds.provided.card.number": "5123450000000008",
        "sourceOfFunds.provided.card.securityCode": "737",
        "authorizationResponse.posData": "5123450000000008",
    }
    assert scrub_unmodelled(fields) == {
        "sourceOfFunds.provided.card.number": "512345xxxxxx0008",
        "sourceOfFunds.provided.card.securityCode": "xxx",
        "authorizationResponse.posData": "5123450000000008",
    }
