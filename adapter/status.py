"""Adapter errors to one rich gRPC status: code, message and details, in one table.

``rich_status(exc, field_path)`` builds a ``google.rpc.Status`` whose details always hold an
``ErrorInfo`` (domain ``nvp-adapter``); a ``GatewayError`` when the gateway answered
``result=ERROR``; a ``BadRequest`` for an INVALID_ARGUMENT that names a field; a ``RetryInfo``
for an UNAVAILABLE worth retrying. The service turns it into a grpc status with grpcio-status.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from adapter import nvp
from adapter.errors import (
    AdapterOverloaded,
    CircuitOpen,
    GatewayRejected,
    MerchantNotAllowed,
    RequestInvalid,
    UpstreamConnectionLost,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from adapter.redaction import scrub_free_text
from adapter.schema import GATEWAY_ERROR

DOMAIN = "nvp-adapter"
DEFAULT_RETRY_DELAY_SECONDS = 1.0
MAX_RETRY_DELAY_SECONDS = 24 * 3600.0
"""Advice further out than a day is no advice a caller can act on; it also keeps any number a
gateway sends inside what a protobuf Duration can hold."""
_INTERNAL = "internal error in the adapter"
_REASON_FORMAT = re.compile(r"[A-Z][A-Z0-9_]+[A-Z0-9]")
_MAX_REASON_LENGTH = 63
_AUTH_STATUSES = frozenset({401, 403})

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


FieldPath = Callable[[str], str]


@dataclass(frozen=True)
class RichStatus:
    """A ``google.rpc.Status`` with its ErrorInfo reason at hand for the log line."""

    proto: status_pb2.Status
    reason: str

    def to_grpc(self) -> grpc.Status:
        """The status as grpc.aio's ``abort_with_status`` takes it."""
        return rpc_status.to_status(self.proto)  # type: ignore[no-any-return]


def rich_status(exc: BaseException, field_path: FieldPath = str) -> RichStatus:
    """The rich status for an error; anything not an ``AdapterError`` is INTERNAL.

    ``field_path`` maps a gateway NVP field name to where the caller set it in the request.
    """
    status = _classify(exc, field_path)
    if isinstance(exc, UpstreamError):
        status.metadata["attempts"] = str(exc.attempts)
        # A message about the gateway may quote its bytes (aiohttp's parse errors do): free text.
        status.message = scrub_free_text(status.message)
    info = error_details_pb2.ErrorInfo(
        reason=status.reason, domain=DOMAIN, metadata=status.metadata
    )
    details: list[Message] = [info, *status.details]
    if status.retry_after is not None:
        details.append(error_details_pb2.RetryInfo(retry_delay=_delay(status.retry_after)))
    proto = status_pb2.Status(code=status.code, message=status.message, details=_pack(details))
    return RichStatus(proto, status.reason)


def internal_status() -> RichStatus:
    """The least rich status: INTERNAL with its ErrorInfo, for when building one failed."""
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN)
    proto = status_pb2.Status(code=code_pb2.INTERNAL, message=_INTERNAL, details=_pack([info]))
    return RichStatus(proto, "INTERNAL")


def _delay(seconds: float) -> duration_pb2.Duration:
    if math.isnan(seconds):
        seconds = DEFAULT_RETRY_DELAY_SECONDS
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(round(min(max(seconds, 0.0), MAX_RETRY_DELAY_SECONDS) * 1e9))
    return delay


def _classify(exc: BaseException, field_path: FieldPath) -> _Status:  # noqa: PLR0911 (a table)
    match exc:
        case RequestInvalid():
            return _Status(
                code_pb2.INVALID_ARGUMENT,
                "INVALID_REQUEST",
                f"invalid request: {exc}",
                details=[_bad_request(exc.field, exc.description)] if exc.field else [],
            )
        case MerchantNotAllowed():
            return _Status(code_pb2.PERMISSION_DENIED, "MERCHANT_NOT_ALLOWED", str(exc))
        case GatewayRejected():
            return _gateway_status(exc, field_path)
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
        case UpstreamUnavailable():
            return _Status(
                code_pb2.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                str(exc),
                retry_after=DEFAULT_RETRY_DELAY_SECONDS,
            )
        case UpstreamOverloaded():
            return _Status(
                code_pb2.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                str(exc),
                {"httpStatus": str(exc.http_status)},
                retry_after=(
                    DEFAULT_RETRY_DELAY_SECONDS if exc.retry_after is None else exc.retry_after
                ),
            )
        case UpstreamConnectionLost():
            return _Status(
                code_pb2.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", str(exc), {"outcome": "UNKNOWN"}
            )
        case UpstreamTimeout():
            outcome = {"outcome": "UNKNOWN"} if exc.sent else {}
            return _Status(code_pb2.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", str(exc), outcome)
        case UpstreamProtocolError():
            return _Status(code_pb2.INTERNAL, "UPSTREAM_PROTOCOL_ERROR", str(exc))
        case _:
            return _Status(code_pb2.INTERNAL, "INTERNAL", _INTERNAL)


def _gateway_status(exc: GatewayRejected, field_path: FieldPath) -> _Status:
    # exc.fields are already scrubbed of an echoed password (upstream.interpret).
    gateway_error, _ = GATEWAY_ERROR.parse(exc.fields)
    metadata = {
        key: exc.fields[name] for name, key in _METADATA_NAMES.items() if name in exc.fields
    }
    details: list[Message] = [gateway_error]
    cause, culprit = exc.cause, exc.field
    message = f"gateway answered {cause or 'an error with no cause'}"
    if culprit:
        message += f" on field {culprit}"
    if exc.explanation:
        message += f": {exc.explanation}"

    if exc.http_status in _AUTH_STATUSES:
        code, reason = code_pb2.INTERNAL, "UPSTREAM_AUTHENTICATION_FAILED"
        message = "the gateway refused the adapter's credentials"
    elif cause == "INVALID_REQUEST" and culprit in nvp.ADAPTER_OWNED:
        code, reason = code_pb2.INTERNAL, "INVALID_REQUEST"
    elif cause == "INVALID_REQUEST":
        code, reason = code_pb2.INVALID_ARGUMENT, "INVALID_REQUEST"
        if culprit:
            details.append(_bad_request(field_path(culprit), exc.explanation or message))
    elif cause in _GATEWAY_CAUSES:
        code, reason = _GATEWAY_CAUSES[cause]
    else:
        code = code_pb2.UNKNOWN
        known = len(cause) <= _MAX_REASON_LENGTH and _REASON_FORMAT.fullmatch(cause)
        reason = cause if known else "UNKNOWN_CAUSE"
    retry_after = DEFAULT_RETRY_DELAY_SECONDS if code == code_pb2.UNAVAILABLE else None
    return _Status(code, reason, message, metadata, details, retry_after)


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
