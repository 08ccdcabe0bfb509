"""How the embedded gateway answers: NVP bodies in its order, its error answers, and the answer
it loses on purpose. Shared by the session operations (``gateway.py``) and the payment ones
(``payments.py``).

>>> refused = invalid("order.id", "a b")
>>> refused.reply.status, nvp.decode(refused.reply.body)["error.explanation"]
(400, "Value 'a b' is invalid.")
>>> card = invalid("sourceOfFunds.provided.card.number", "4111")
>>> nvp.decode(card.reply.body)["error.explanation"]
'Value is invalid.'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adapter.core import nvp
from adapter.embedded.cards import is_card_field
from adapter.upstream.client import Reply

__all__ = [
    "CORRELATION_ID",
    "FAILURE",
    "INVALID",
    "INVALID_REQUEST",
    "MISSING",
    "SERVER_BUSY",
    "SUCCESS",
    "UNSUPPORTED",
    "AnswerLost",
    "Refused",
    "Request",
    "busy",
    "echo_correlation_id",
    "error",
    "error_fields",
    "invalid",
    "missing",
    "reply",
    "shown",
]

CORRELATION_ID = "correlationId"
INVALID_REQUEST = "INVALID_REQUEST"
SERVER_BUSY = "SERVER_BUSY"
INVALID = "INVALID"
MISSING = "MISSING"
UNSUPPORTED = "UNSUPPORTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"

_SHOWN_CHARS = 100  # keeps error.field and error.explanation within the contract's lengths
_BUSY = "The gateway is busy; try again later."


@dataclass(frozen=True, slots=True)
class Request:
    """A request that passed the checks every operation shares; ``now`` is the monotonic clock
    (sessions' expiry), ``wall`` the wall clock in seconds since the epoch (what answers show)."""

    fields: Mapping[str, str]
    merchant: str
    api_version: int
    now: float
    wall: float


@dataclass(frozen=True, slots=True)
class AnswerLost:
    """The gateway carried the operation out and then lost its answer: the test hook
    ``order.reference=TEST-ANSWER-LOST``. A face delivers nothing: the in-process transport
    raises the error of a connection reset after sending, the HTTP face closes the connection.

    ``committed`` is the answer that was lost, for tests to look at; no face sends it.
    """

    committed: Reply

    def __repr__(self) -> str:
        return f"AnswerLost(status={self.committed.status})"


class Refused(Exception):
    """Carries the error answer from the check that failed back to ``handle``; never escapes it."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def reply(status: int, fields: Mapping[str, str]) -> Reply:
    """An answer: MPGS lists its fields in name order; clients must not care, but the bodies
    then read alike."""
    return Reply(status, nvp.encode(dict(sorted(fields.items()))))


def echo_correlation_id(fields: Mapping[str, str], answer: dict[str, str]) -> None:
    """Put the request's ``correlationId`` in the answer; empty is the same as absent."""
    if fields.get(CORRELATION_ID):
        answer[CORRELATION_ID] = fields[CORRELATION_ID]


def missing(field: str) -> Refused:
    return error(400, f"Missing parameter '{field}'.", field=field, validation_type=MISSING)


def invalid(field: str, value: str, why: str = "") -> Refused:
    """``field`` refused for its value: quoted, except a card field's, never shown anywhere."""
    said = "Value is invalid." if is_card_field(field) else f"Value '{shown(value)}' is invalid."
    return error(400, said + (f" {why}" if why else ""), field=field, validation_type=INVALID)


def busy() -> Refused:
    """A store is full: ``SERVER_BUSY``, as MPGS answers when it cannot take more."""
    return error(503, _BUSY, cause=SERVER_BUSY)


def error(
    status: int,
    explanation: str,
    *,
    cause: str = INVALID_REQUEST,
    field: str | None = None,
    validation_type: str | None = None,
) -> Refused:
    fields = error_fields(explanation, cause)
    if field is not None:
        fields[nvp.ERROR_FIELD] = field
    if validation_type is not None:
        fields[nvp.ERROR_VALIDATION_TYPE] = validation_type
    return Refused(reply(status, fields))


def error_fields(explanation: str, cause: str = INVALID_REQUEST) -> dict[str, str]:
    return {
        nvp.ERROR_CAUSE: cause,
        nvp.ERROR_EXPLANATION: explanation,
        nvp.RESULT: nvp.RESULT_ERROR,
    }


def shown(text: str) -> str:
    """Caller text fit to quote in an error: clipped, and lone surrogates (from a URL) replaced."""
    clipped = text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
    return clipped.encode("utf-8", "replace").decode("utf-8")
