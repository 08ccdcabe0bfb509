"""Secrets that never show themselves, and the two ways of keeping them out of text.

What reaches a caller goes through one rule that does not know any password, so that removing
a secret can never corrupt a value nor tell a caller whether a guess was right:

1. In a piece of the gateway's free text, the first ``apiPassword`` (in any case) followed by
   ``=`` or by its percent-encoding ``%3D`` (either case of the hex digits) is kept, and
   everything after that separator, to the end of the text, becomes ``[REDACTED]``. The end of the
   text, not the next ``&`` or space: a raw password may itself hold either.
2. A field named ``apiPassword`` (in any case), or whose last dotted segment is, has its whole
   value replaced by ``[REDACTED]``.
3. In an error answer whose ``error.field`` is so named, or names a card's number or security
   code, the whole ``error.explanation`` becomes ``[REDACTED]``: an explanation about the
   password or the card may quote it.
4. Card data is a secret like a password (PCI DSS). In an error answer and in every status
   message, a card number (12 to 19 digits, single spaces or dashes between them allowed, that
   pass the Luhn check) is masked as the gateway masks it, its first 6 and last 4 digits kept
   (``512345xxxxxx0008``). In any answer, a field whose last segment is ``securityCode`` shows
   ``xxx``, and one that ends in ``card.number`` is masked the same way whatever it holds. The
   other values of a successful answer are not searched for card numbers: an identifier of 13
   digits that happens to pass the Luhn check is data, not a card.

The gateway's free text is every value of an error answer (``result=ERROR``), and the name and
value of every field of a successful answer that the typed response does not model: what lands
in ``extra_fields``. A modelled field of a successful answer (``session.id``, ``result``, the
echoed ``correlationId``, ...) is never altered, nor is anything the caller sent.

>>> scrub_free_text("Value apiPassword=p&ss w rd is invalid")
'Value apiPassword=[REDACTED]'
>>> scrub_field("request.apiPassword", "p&ss")
'[REDACTED]'
>>> scrub_free_text("Value '5123 4500 0000 0008' is invalid.")
"Value '512345xxxxxx0008' is invalid."

``Redactor`` is the other way, for log lines only: it replaces every configured password, in each
of its spellings, wherever it occurs. It compares text with the passwords, so what it does must
never reach a caller.

>>> secret = Secret("p&ss")
>>> secret, f"{secret}"
(Secret('**********'), "Secret('**********')")
>>> Redactor([secret])("trace: apiPassword=p%26ss")
'trace: apiPassword=[REDACTED]'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

from adapter.core import nvp

__all__ = [
    "REDACTED",
    "Redactor",
    "Secret",
    "mask_card_number",
    "names_card_secret",
    "names_password",
    "scrub_error_answer",
    "scrub_field",
    "scrub_free_text",
    "scrub_unmodelled",
]

REDACTED = "[REDACTED]"
_PASSWORD_THEN_SEPARATOR = re.compile(re.escape(nvp.API_PASSWORD) + "(?:=|%3D)", re.IGNORECASE)


# Digits with at most one space or dash between two of them: a card number as people write it.
# Bounded: a run of digits longer than 19 is not a card number, and is left as it is.
_CARD_NUMBER_LIKE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){11,18}(?![0-9])")
_SHOWN_HEAD, _SHOWN_TAIL = 6, 4


def scrub_free_text(text: str) -> str:
    """Rules 1 and 4 for an error's text: everything after the first ``apiPassword=`` or
    ``apiPassword%3D`` is redacted, and every card number is masked."""
    return _CARD_NUMBER_LIKE.sub(_mask_if_card, _scrub_password(text))


def _scrub_password(text: str) -> str:
    found = _PASSWORD_THEN_SEPARATOR.search(text)
    return text if found is None else text[: found.end()] + REDACTED


def mask_card_number(digits: str) -> str:
    """A card number as the gateway shows it: its first 6 and last 4 digits, x's between; a
    text too short to keep those shows x's only."""
    hidden = len(digits) - _SHOWN_HEAD - _SHOWN_TAIL
    if hidden < 1:
        return "x" * len(digits)
    return digits[:_SHOWN_HEAD] + "x" * hidden + digits[-_SHOWN_TAIL:]


def _mask_if_card(found: re.Match[str]) -> str:
    digits = found[0].replace(" ", "").replace("-", "")
    return mask_card_number(digits) if _passes_luhn(digits) else found[0]


def _passes_luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def names_card_secret(name: str) -> bool:
    """Whether a field name is a card's number or security code (``...card.number``,
    ``...securityCode``), in any case."""
    lowered = name.lower()
    return lowered.endswith(("card.number", ".securitycode")) or lowered == "securitycode"


def names_password(name: str) -> bool:
    """Whether a field name is ``apiPassword``, in any case, alone or as its last segment."""
    return name.rpartition(".")[2].lower() == nvp.API_PASSWORD.lower()


def scrub_field(name: str, value: str) -> str:
    """Rules 1, 2 and 4 for one field of a successful answer."""
    return _scrub_named(name, value) or _scrub_password(value)


def _scrub_named(name: str, value: str) -> str | None:
    """The value a secret field shows by its name alone; None for a field that is no secret."""
    if names_password(name):
        return REDACTED
    lowered = name.lower()
    if lowered.endswith("securitycode"):
        return "xxx"
    if lowered.endswith("card.number"):
        return mask_card_number(value)
    return None


def scrub_unmodelled(fields: Mapping[str, str]) -> dict[str, str]:
    """The fields of a successful answer that the response does not model, names included."""
    return {_scrub_password(name): scrub_field(name, value) for name, value in fields.items()}


def scrub_error_answer(fields: Mapping[str, str]) -> dict[str, str]:
    """Every value of an error answer, under rules 1 to 4; the names stay as they are."""
    scrubbed = {
        name: _scrub_named(name, value) or scrub_free_text(value) for name, value in fields.items()
    }
    culprit = fields.get(nvp.ERROR_FIELD, "")
    if nvp.ERROR_EXPLANATION in scrubbed and (
        names_password(culprit) or names_card_secret(culprit)
    ):
        scrubbed[nvp.ERROR_EXPLANATION] = REDACTED
    return scrubbed


class Secret:
    """A string that never shows itself in a repr, a str() or a format: only ``reveal()`` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Redactor:
    """Replaces every secret, as written and in each form-encoded spelling, with ``[REDACTED]``.

    For log lines only (a traceback's frames may hold a password): it looks for the passwords
    themselves, so its output depends on them and must never be shown to a caller. Longest
    spelling first, so that no fragment is left behind.
    """

    def __init__(self, secrets: Iterable[Secret]) -> None:
        self.secrets = frozenset(secrets)
        forms = {
            form
            for secret in self.secrets
            for form in (secret.reveal(), quote_plus(secret.reveal()), quote(secret.reveal(), ""))
            if form
        }
        self._forms = tuple(sorted(forms, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._forms)} forms)"
