"""The contract's rules on what the adapter does to the gateway's text, written out from the docs.

Written here rather than imported from the adapter, so that tests check the adapter against the
contract and not against itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

REDACTED = "[REDACTED]"
MARKER = re.compile(r"apiPassword(=|%3D)", re.IGNORECASE)
# docs/errors.md, "Bounds": the gateway's documented lengths, and 100 for its enum-valued fields.
GATEWAY_TEXT_LIMITS = {
    "error.explanation": 1000,
    "error.field": 100,
    "error.supportCode": 100,
    "error.cause": 100,
    "error.validationType": 100,
}
ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"


def redact_text(text: str) -> str:
    """Rule 1: everything after the first apiPassword separator becomes [REDACTED]."""
    found = MARKER.search(text)
    return text if found is None else text[: found.end()] + REDACTED


def is_password_name(name: str) -> bool:
    return name.rsplit(".", maxsplit=1)[-1].lower() == "apipassword"


def redact_field(name: str, value: str) -> str:
    """Rules 1 and 2 for one field."""
    return REDACTED if is_password_name(name) else redact_text(value)


def redact_unmodelled(fields: Mapping[str, str]) -> dict[str, str]:
    """What a success answer's unmodelled fields become in extra_fields."""
    return {redact_text(name): redact_field(name, value) for name, value in fields.items()}


def redact_error(fields: Mapping[str, str]) -> dict[str, str]:
    """Rules 1 to 3 over an error answer's values."""
    redacted = {name: redact_field(name, value) for name, value in fields.items()}
    if "error.explanation" in redacted and is_password_name(fields.get("error.field", "")):
        redacted["error.explanation"] = REDACTED
    return redacted


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters; a clipped text ends in an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def gateway_text(fields: Mapping[str, str]) -> dict[str, str]:
    """The error fields of an error answer as a status carries them: redacted, then clipped."""
    redacted = redact_error(fields)
    return {
        name: clip(redacted[name], limit)
        for name, limit in GATEWAY_TEXT_LIMITS.items()
        if name in redacted
    }
