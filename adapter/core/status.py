"""Adapter errors to one rich gRPC status: code, message and details, in one table.

``rich_status(exc, field_path)`` builds a ``google.rpc.Status`` whose details always hold an
``ErrorInfo`` (domain ``nvp-adapter``); a ``GatewayError`` when the gateway answered
``result=ERROR``; a ``BadRequest`` for an INVALID_ARGUMENT that names a field; a ``RetryInfo``
for an UNAVAILABLE worth retrying. The service turns it into a grpc status with grpcio-status.

Everything in a status is bounded, because grpc sends it as trailers and a client refuses
trailers over its metadata limit (8 KiB by default) with a bare RESOURCE_EXHAUSTED: the gateway's
text is clipped to the lengths the gateway documents (``MAX_GATEWAY_TEXT``), and a status that
would still be over ``TRAILER_BUDGET_BYTES`` (text far from ASCII, a caller's huge key) is clipped
further, the message and the repeats of the explanation first (``_fit``). RetryInfo advice is at
most ``MAX_RETRY_DELAY_SECONDS``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from adapter._proto.mpgs.gateway.v1.gateway_error_pb2 import GatewayError
from adapter.core import nvp
from adapter.core.errors import (
    AdapterOverloaded,
    CallerUnauthenticated,
    CircuitOpen,
    GatewayRejected,
    MerchantNotAllowed,
    RequestInvalid,
    ServerOverloaded,
    TransactionIdReused,
    TransactionNotRecorded,
    UpstreamCertificateInvalid,
    UpstreamDeadlineBeforeSend,
    UpstreamError,
    UpstreamHttpStatus,
    UpstreamNotSent,
    UpstreamProtocolError,
    UpstreamReadTimeout,
    UpstreamSentAndLost,
)
from adapter.core.redaction import scrub_free_text
from adapter.core.schema import GATEWAY_ERROR

__all__ = [
    "ELLIPSIS",
    "UNKNOWN_CAUSE",
    "RichStatus",
    "clip",
    "internal_status",
    "reason_of",
    "rich_status",
]

DOMAIN = "nvp-adapter"
DEFAULT_RETRY_DELAY_SECONDS = 1.0
MAX_RETRY_DELAY_SECONDS = 24 * 3600.0
"""Advice further out than a day is no advice a caller can act on; it also keeps any number a
gateway sends inside what a protobuf Duration can hold."""
MAX_GATEWAY_TEXT: Mapping[str, int] = MappingProxyType(
    {
        nvp.ERROR_EXPLANATION: 1000,  # the lengths the gateway documents for its error fields
        nvp.ERROR_FIELD: 100,
        nvp.ERROR_SUPPORT_CODE: 100,
        nvp.ERROR_CAUSE: 100,  # enums in the gateway's documentation: 100, as its short fields
        nvp.ERROR_VALIDATION_TYPE: 100,
    }
)
"""The most characters of each of the gateway's error fields that go into a status."""
TRAILER_BUDGET_BYTES = 6 * 1024
"""What a status may take on the wire: its message percent-encoded (grpc-message) plus the whole
serialized status (grpc-status-details-bin, the message in it again), under grpc's default 8 KiB
client limit with room for the other trailers."""
ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"
"""Ends a text that was clipped, in place of its last character, so the length stays in bound."""
_INTERNAL = "internal error in the adapter"
UNKNOWN_CAUSE = "UNKNOWN_CAUSE"
"""The reason of a gateway cause this version does not know, where its own word cannot stand."""
_REASON_FORMAT = re.compile(r"[A-Z][A-Z0-9_]+[A-Z0-9]")
_MAX_REASON_LENGTH = 63
_AUTH_STATUSES = frozenset({401, 403})
_RETRIEVES = frozenset({"RETRIEVE_TRANSACTION", "RETRIEVE_ORDER"})
_FIELD_ROWS: tuple[tuple[str, frozenset[str] | None, int, str], ...] = (
    ("session.id", None, code_pb2.NOT_FOUND, "SESSION_NOT_FOUND"),
    ("session.version", None, code_pb2.ABORTED, "SESSION_VERSION_MISMATCH"),
    (
        "order.id",
        frozenset({"CAPTURE", "REFUND", "VOID"}) | _RETRIEVES,
        code_pb2.NOT_FOUND,
        "ORDER_NOT_FOUND",
    ),
    (
        "transaction.targetTransactionId",
        frozenset({"VOID"}),
        code_pb2.NOT_FOUND,
        "TRANSACTION_NOT_FOUND",
    ),
    (
        "transaction.id",
        frozenset({"RETRIEVE_TRANSACTION"}),
        code_pb2.NOT_FOUND,
        "TRANSACTION_NOT_FOUND",
    ),
    (
        "transaction.amount",
        frozenset({"CAPTURE", "REFUND"}),
        code_pb2.FAILED_PRECONDITION,
        "AMOUNT_EXCEEDS_BALANCE",
    ),
    (
        "sourceOfFunds.",
        frozenset({"PAY", "AUTHORIZE"}),
        code_pb2.FAILED_PRECONDITION,
        "SESSION_INCOMPLETE",
    ),
)
"""An INVALID_REQUEST naming this field (a name ending in ``.``: any field under it), for these
operations (None: any), and what it means (CONTRACT §8, §9). The adapter checked each id's form
before sending it, so the refusal is about what the gateway holds: an unknown session, order or
transaction, a session changed since the caller read it or holding no card, more than is left to
capture or refund. Not retried: the caller decides."""

# The gateway's error.cause -> (gRPC code, ErrorInfo.reason). INVALID_REQUEST is decided by field.
_GATEWAY_CAUSES: dict[str, tuple[int, str]] = {
    "REQUEST_REJECTED": (code_pb2.INTERNAL, "REQUEST_REJECTED"),
    "SERVER_BUSY": (code_pb2.UNAVAILABLE, "SERVER_BUSY"),
    "SERVER_FAILED": (code_pb2.INTERNAL, "SERVER_FAILED"),
}
# The gateway's error.* names in ErrorInfo metadata: the GatewayError JSON names, explanation aside.
_METADATA_NAMES = {
    name: name.removeprefix("error.") for name in GATEWAY_ERROR.names if name != "error.explanation"
}


@dataclass
class _Status:
    code: int
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    details: list[Message] = field(default_factory=list)
    retry_after: float | None = None
    from_peer: bool = False
    """The reason is the gateway's own word (a cause this version does not know)."""


FieldPath = Callable[[str], str]


@dataclass(frozen=True)
class RichStatus:
    """A ``google.rpc.Status`` with its ErrorInfo reason at hand for the log line."""

    proto: status_pb2.Status
    reason: str

    def to_grpc(self) -> grpc.Status:
        """The status as grpc.aio's ``abort_with_status`` takes it."""
        return rpc_status.to_status(self.proto)  # type: ignore[no-any-return]


def rich_status(exc: BaseException, field_path: FieldPath = str, operation: str = "") -> RichStatus:
    """The rich status for an error; anything not an ``AdapterError`` is INTERNAL.

    ``field_path`` maps a gateway NVP field name to where the caller set it in the request;
    ``operation`` is the ``apiOperation`` the call made, which some field errors depend on.
    """
    status = _classify(exc, field_path, operation)
    if isinstance(exc, UpstreamError):
        status.metadata["attempts"] = str(exc.attempts)
        # A message about the gateway may quote its bytes (the client's parse errors do): free text.
        status.message = scrub_free_text(status.message)
    if status.retry_after is not None:
        status.details.append(error_details_pb2.RetryInfo(retry_delay=_delay(status.retry_after)))
    return RichStatus(_fit(status), status.reason)


def reason_of(exc: BaseException, operation: str = "") -> str:
    """The ErrorInfo reason ``exc`` is answered with, as a metric label: no status is built, and
    a cause the gateway made up is ``UNKNOWN_CAUSE``, so that no peer can add a series."""
    status = _classify(exc, str, operation)
    return UNKNOWN_CAUSE if status.from_peer else status.reason


def internal_status() -> RichStatus:
    """The least rich status: INTERNAL with its ErrorInfo, for when building one failed."""
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN)
    proto = status_pb2.Status(code=code_pb2.INTERNAL, message=_INTERNAL, details=_pack([info]))
    return RichStatus(proto, "INTERNAL")


def clip(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters; else its start, ending in an ellipsis."""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + ELLIPSIS if limit > 0 else ""


def _delay(seconds: float) -> duration_pb2.Duration:
    if math.isnan(seconds):
        seconds = DEFAULT_RETRY_DELAY_SECONDS
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(round(min(max(seconds, 0.0), MAX_RETRY_DELAY_SECONDS) * 1e9))
    return delay


# (message and repeated explanation, every other text): the clip limits tried in turn until
# the status fits TRAILER_BUDGET_BYTES. None: no further clipping. The last step always fits:
# a dozen texts of 16 characters are under 1 KiB in any encoding.
_FIT_STEPS: tuple[tuple[int | None, int | None], ...] = (
    (None, None),
    (256, None),
    (64, None),
    (64, 256),
    (64, 64),
    (16, 16),
)


def _fit(status: _Status) -> status_pb2.Status:
    """The status as a ``google.rpc.Status`` that fits ``TRAILER_BUDGET_BYTES`` on the wire."""
    for echo, other in _FIT_STEPS:
        proto = _assemble(status, echo, other)
        if _wire_bytes(proto) <= TRAILER_BUDGET_BYTES:
            break
    return proto


def _assemble(status: _Status, echo: int | None, other: int | None) -> status_pb2.Status:
    """The status with its message and repeated explanations clipped to ``echo`` characters and
    every other text to ``other`` (None: as it is); the reason and the enums stay whole."""
    metadata = {key: _cut(value, other) for key, value in status.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=status.reason, domain=DOMAIN, metadata=metadata)
    details = [info, *(_clipped(detail, echo, other) for detail in status.details)]
    message = _cut(_cut(status.message, echo), other)
    return status_pb2.Status(code=status.code, message=message, details=_pack(details))


def _clipped(detail: Message, echo: int | None, other: int | None) -> Message:
    copy = type(detail)()
    copy.CopyFrom(detail)
    if isinstance(copy, error_details_pb2.BadRequest):
        for violation in copy.field_violations:
            violation.field = _cut(violation.field, other)
            violation.description = _cut(_cut(violation.description, echo), other)
    elif isinstance(copy, GatewayError):
        copy.explanation = _cut(copy.explanation, other)
        copy.field = _cut(copy.field, other)
        copy.support_code = _cut(copy.support_code, other)
    return copy


def _cut(text: str, limit: int | None) -> str:
    return text if limit is None else clip(text, limit)


def _wire_bytes(proto: status_pb2.Status) -> int:
    """The status's size in trailers: grpc percent-encodes the message outside printable ASCII
    (and ``%``) into grpc-message, and sends the whole status again in grpc-status-details-bin."""
    message = proto.message.encode("utf-8")
    escaped = sum(1 if 0x20 <= byte <= 0x7E and byte != 0x25 else 3 for byte in message)
    return escaped + int(proto.ByteSize())


def _classify(exc: BaseException, field_path: FieldPath, operation: str) -> _Status:  # noqa: PLR0911, PLR0912 (a table)
    match exc:
        case RequestInvalid():
            return _Status(
                code_pb2.INVALID_ARGUMENT,
                "INVALID_REQUEST",
                f"invalid request: {exc}",
                details=[_bad_request(exc.field, exc.description)] if exc.field else [],
            )
        case CallerUnauthenticated():
            return _Status(code_pb2.UNAUTHENTICATED, "CALLER_UNAUTHENTICATED", str(exc))
        case MerchantNotAllowed():
            caller = {} if exc.caller is None else {"caller": exc.caller}
            return _Status(code_pb2.PERMISSION_DENIED, "MERCHANT_NOT_ALLOWED", str(exc), caller)
        case GatewayRejected():
            return _gateway_status(exc, field_path, operation)
        case TransactionIdReused():
            existing = {
                "existingType": exc.existing_type,
                "existingAmount": exc.existing_amount,
                "existingCurrency": exc.existing_currency,
            }
            return _Status(code_pb2.ALREADY_EXISTS, "TRANSACTION_ID_REUSED", str(exc), existing)
        case TransactionNotRecorded():
            return _Status(
                code_pb2.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                str(exc),
                {"outcome": "NOT_FOUND"},
                retry_after=DEFAULT_RETRY_DELAY_SECONDS,
            )
        case ServerOverloaded():
            return _Status(code_pb2.RESOURCE_EXHAUSTED, "SERVER_OVERLOADED", str(exc))
        case AdapterOverloaded():
            return _Status(
                code_pb2.UNAVAILABLE,
                "ADAPTER_OVERLOADED",
                str(exc),
                retry_after=DEFAULT_RETRY_DELAY_SECONDS,
            )
        case CircuitOpen():
            return _Status(
                code_pb2.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                str(exc),
                {"circuit": "OPEN"},
                retry_after=exc.retry_after,
            )
        case UpstreamCertificateInvalid():  # a configuration fault: retrying cannot help
            return _Status(
                code_pb2.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                str(exc),
                {"tls": "CERTIFICATE_INVALID"},
            )
        case UpstreamDeadlineBeforeSend():  # nothing left: the outcome is known
            return _Status(code_pb2.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", str(exc))
        case UpstreamNotSent():
            return _Status(
                code_pb2.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                str(exc),
                retry_after=DEFAULT_RETRY_DELAY_SECONDS,
            )
        case UpstreamHttpStatus():
            return _Status(
                code_pb2.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                str(exc),
                {"httpStatus": str(exc.http_status)},
                retry_after=(
                    DEFAULT_RETRY_DELAY_SECONDS if exc.retry_after is None else exc.retry_after
                ),
            )
        case UpstreamReadTimeout():
            return _Status(
                code_pb2.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", str(exc), {"outcome": "UNKNOWN"}
            )
        case UpstreamSentAndLost():
            return _Status(
                code_pb2.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", str(exc), {"outcome": "UNKNOWN"}
            )
        case UpstreamProtocolError():
            return _Status(code_pb2.INTERNAL, "UPSTREAM_PROTOCOL_ERROR", str(exc))
        case _:
            return _Status(code_pb2.INTERNAL, "INTERNAL", _INTERNAL)


def _field_row(culprit: str, operation: str) -> tuple[int, str] | None:
    for name, operations, code, reason in _FIELD_ROWS:
        named = culprit.startswith(name) if name.endswith(".") else culprit == name
        if named and (operations is None or operation in operations):
            return code, reason
    return None


def _gateway_status(exc: GatewayRejected, field_path: FieldPath, operation: str) -> _Status:
    # exc.fields are already scrubbed of an echoed password (upstream.interpret); here they
    # are only bounded, each to the length the gateway documents for it.
    fields = {
        name: clip(exc.fields[name], n)
        for name, n in MAX_GATEWAY_TEXT.items()
        if name in exc.fields
    }
    gateway_error, _ = GATEWAY_ERROR.parse(fields)
    metadata = {key: fields[name] for name, key in _METADATA_NAMES.items() if name in fields}
    details: list[Message] = [gateway_error]
    cause = fields.get(nvp.ERROR_CAUSE, "")
    culprit = fields.get(nvp.ERROR_FIELD, "")
    explanation = fields.get(nvp.ERROR_EXPLANATION, "")
    message = f"gateway answered {cause or 'an error with no cause'}"
    if culprit:
        message += f" on field {culprit}"
    if explanation:
        message += f": {explanation}"

    if exc.http_status in _AUTH_STATUSES:
        code, reason = code_pb2.INTERNAL, "UPSTREAM_AUTHENTICATION_FAILED"
        message = "the gateway refused the adapter's credentials"
    elif cause == "INVALID_REQUEST" and culprit in nvp.ADAPTER_OWNED:
        code, reason = code_pb2.INTERNAL, "INVALID_REQUEST"
    elif cause == "INVALID_REQUEST" and (row := _field_row(culprit, operation)) is not None:
        code, reason = row
    elif cause == "INVALID_REQUEST":
        code, reason = code_pb2.INVALID_ARGUMENT, "INVALID_REQUEST"
        if culprit:
            details.append(_bad_request(field_path(culprit), explanation or message))
    elif cause in _GATEWAY_CAUSES:
        code, reason = _GATEWAY_CAUSES[cause]
    else:
        code = code_pb2.UNKNOWN
        known = len(cause) <= _MAX_REASON_LENGTH and _REASON_FORMAT.fullmatch(cause)
        reason = cause if known else UNKNOWN_CAUSE
    retry_after = DEFAULT_RETRY_DELAY_SECONDS if code == code_pb2.UNAVAILABLE else None
    from_peer = code == code_pb2.UNKNOWN
    return _Status(code, reason, message, metadata, details, retry_after, from_peer)


def _bad_request(field: str, description: str) -> error_details_pb2.BadRequest:
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
    return error_details_pb2.BadRequest(field_violations=[violation])


def _pack(details: Sequence[Message]) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        wrapped = any_pb2.Any()
        wrapped.Pack(detail)
        packed.append(wrapped)
    return packed
