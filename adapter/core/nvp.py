"""The NVP codec: form-encoded ``name=value`` pairs joined by ``&``. Pure, no I/O.

>>> encode({"merchant": "M1", "correlationId": "a&b=c"})
b'merchant=M1&correlationId=a%26b%3Dc'
>>> decode(b"result=SUCCESS&session.id=S1")
{'result': 'SUCCESS', 'session.id': 'S1'}

Encoding is ``application/x-www-form-urlencoded`` in UTF-8, so ``&``, ``=``, ``+``, ``%`` and any
Unicode in a name or value are data, never syntax. Decoding is strict: a bad percent-escape, bytes
that are not UTF-8, a pair with no ``=`` or no name, or an empty body raise ``NvpDecodeError``.
A name given twice keeps its last value, as the gateway's official clients do.

Both ways have a fast path for the common case, with the same output as the general one (a
property test holds them equal): text made only of the characters form-encoding leaves as they
are is written as it is, and a body with no ``%`` and no ``+`` is decoded without unescaping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote_plus

__all__ = [
    "ADAPTER_OWNED",
    "API_OPERATION",
    "API_PASSWORD",
    "API_USERNAME",
    "CONTENT_TYPE",
    "ERROR_CAUSE",
    "ERROR_EXPLANATION",
    "ERROR_FIELD",
    "ERROR_SUPPORT_CODE",
    "ERROR_VALIDATION_TYPE",
    "MERCHANT",
    "MERCHANT_ID",
    "RESULT",
    "RESULT_ERROR",
    "USERNAME_PREFIX",
    "NvpDecodeError",
    "decode",
    "encode",
]

CONTENT_TYPE = "application/x-www-form-urlencoded; charset=UTF-8"

# Wire names every NVP operation shares; the names of modelled fields come from the proto.
API_OPERATION = "apiOperation"
API_USERNAME = "apiUsername"
API_PASSWORD = "apiPassword"  # noqa: S105 (a field name, not a password)
MERCHANT = "merchant"
RESULT = "result"
RESULT_ERROR = "ERROR"
USERNAME_PREFIX = "merchant."
MERCHANT_ID = re.compile(r"[0-9A-Za-z_-]{1,12}")
"""What the gateway accepts as a merchant identifier."""
ERROR_CAUSE = "error.cause"
ERROR_EXPLANATION = "error.explanation"
ERROR_FIELD = "error.field"
ERROR_SUPPORT_CODE = "error.supportCode"
ERROR_VALIDATION_TYPE = "error.validationType"
ADAPTER_OWNED = frozenset({API_OPERATION, API_USERNAME, API_PASSWORD})
"""Names only the adapter fills: a gateway complaint about one of them is the adapter's fault."""

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
# What quote_plus(text, safe="") leaves as it is (urllib's always-safe set), ASCII only.
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")


class NvpDecodeError(ValueError):
    """The bytes are not a valid NVP body; the message says why, without echoing the body."""


def encode(fields: Mapping[str, str]) -> bytes:
    """Form-encode ``fields`` in UTF-8, in the mapping's order.

    Lone surrogates cannot be encoded in UTF-8 and raise ``UnicodeEncodeError``; protobuf strings
    never hold them.
    """
    if _PLAIN.fullmatch("".join(fields)) and _PLAIN.fullmatch("".join(fields.values())):
        return "&".join(map("=".join, fields.items())).encode("ascii")  # nothing to quote
    return "&".join(f"{_quoted(name)}={_quoted(value)}" for name, value in fields.items()).encode(
        "ascii"
    )


def _quoted(text: str) -> str:
    return text if _PLAIN.fullmatch(text) else quote_plus(text, safe="")


def decode(body: bytes) -> dict[str, str]:
    """Decode an NVP body strictly into a dict; the last value of a repeated name wins."""
    if not body:
        raise NvpDecodeError("empty body")
    if b"%" not in body and b"+" not in body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            pass  # the general path names the pair at fault
        else:
            return _decode_plain(text)
    fields: dict[str, str] = {}
    for index, pair in enumerate(body.split(b"&")):
        name, sep, value = pair.partition(b"=")
        if not sep:
            raise NvpDecodeError(f"pair {index} has no '='")
        if not name:
            raise NvpDecodeError(f"pair {index} has an empty name")
        fields[_unquote(name, index)] = _unquote(value, index)
    return fields


def _decode_plain(text: str) -> dict[str, str]:
    """``decode`` of a body with nothing to unescape, already valid UTF-8 as a whole.

    The same answer as the general path: UTF-8 never holds ``&`` or ``=`` inside a character,
    so splitting before or after decoding gives the same pairs, and the same first fault.
    """
    pairs = text.split("&")
    try:
        fields = dict(pair.split("=", 1) for pair in pairs)
    except ValueError:  # a pair with no "=": found below, with its index
        fields = {"": ""}
    if "" not in fields:
        return fields
    for index, pair in enumerate(pairs):  # the first fault, as the general path names it
        name, sep, _ = pair.partition("=")
        if not sep:
            raise NvpDecodeError(f"pair {index} has no '='")
        if not name:
            raise NvpDecodeError(f"pair {index} has an empty name")
    raise AssertionError("unreachable: a fault was found above")  # pragma: no cover


def _unquote(raw: bytes, index: int) -> str:
    if _BAD_ESCAPE.search(raw):
        raise NvpDecodeError(f"pair {index} has a malformed percent-escape")
    unescaped = _ESCAPE.sub(lambda m: bytes((int(m[1], 16),)), raw.replace(b"+", b" "))
    try:
        return unescaped.decode("utf-8")
    except UnicodeDecodeError:
        raise NvpDecodeError(f"pair {index} is not valid UTF-8") from None
