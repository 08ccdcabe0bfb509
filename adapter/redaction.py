"""Secrets that never show themselves, and the one redactor that scrubs them from text.

>>> secret = Secret("p&ss")
>>> secret, f"{secret}"
(Secret('**********'), "Secret('**********')")
>>> Redactor([secret])("apiPassword=p%26ss")
'apiPassword=[REDACTED]'
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"


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

    A gateway that echoes a request back may hand the password out raw, form-encoded, or
    percent-encoded; all three are scrubbed, longest first so no fragment is left behind.
    """

    def __init__(self, secrets: Iterable[Secret]) -> None:
        forms = {
            form
            for secret in secrets
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
