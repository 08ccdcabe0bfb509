"""The contract's rules on what the adapter does to the gateway's text, written out from README.

Written here rather than imported from the adapter, so that tests check the adapter against the
contract and not against itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

REDACTED = "[REDACTED]"
MARKER = re.compile(r"apiPassword(=|%3D)", re.IGNORECASE)


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
