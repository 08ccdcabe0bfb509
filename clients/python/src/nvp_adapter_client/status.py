"""A failed call's rich status, decoded: ``failure(error)`` and the answer trailer, ``outcome``.

Every failure the adapter answers is one gRPC status whose ``grpc-status-details-bin`` trailer is a
serialized ``google.rpc.Status``; its details hold a ``google.rpc.ErrorInfo`` (domain
``nvp-adapter``) always, a ``google.rpc.BadRequest`` when a request field is to blame, a
``google.rpc.RetryInfo`` when a retry after a delay is worth it, and an
``mpgs.gateway.v1.GatewayError`` when the gateway answered ``result=ERROR``::

    try:
        response = await stub.Pay(request, timeout=30)
    except grpc.aio.AioRpcError as error:
        failed = failure(error)
        failed.code, failed.reason, failed.field_violations, failed.retry_delay, failed.outcome

``failure`` never raises on what a peer sent: a trailer that is absent, garbled, or describes
another status, and a detail that does not parse, leave the fields empty (``None``, ``()``) and
keep the code and message grpc itself reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

from nvp_adapter_client.mpgs.gateway.v1 import gateway_error_pb2

__all__ = [
    "DETAILS_TRAILER",
    "DOMAIN",
    "OUTCOME_TRAILER",
    "ErrorInfo",
    "Failure",
    "FieldViolation",
    "failure",
    "outcome",
]

DOMAIN = "nvp-adapter"
"""``ErrorInfo.domain`` of every status the adapter itself makes."""
DETAILS_TRAILER = "grpc-status-details-bin"
"""The trailer that carries the serialized ``google.rpc.Status``."""
OUTCOME_TRAILER = "nvp-adapter-outcome"
"""The trailer of an answer that came from reconciliation (``reconciled``) or replay
(``replayed``)."""
MAX_RETRY_DELAY = timedelta(days=1)
"""The longest RetryInfo delay read as given (the adapter never advises longer); a longer or
negative one from a peer is clipped into ``[0, MAX_RETRY_DELAY]``."""

_KNOWN: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    gateway_error_pb2.GatewayError,
)
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_M = TypeVar("_M", bound=Message)


@dataclass(frozen=True)
class ErrorInfo:
    """``google.rpc.ErrorInfo``: why the call failed (``reason``, from the adapter's error table),
    who says so (``domain``) and the facts that go with it (``metadata``: ``cause``, ``field``,
    ``attempts``, ``outcome``, ``existingType``, ...)."""

    reason: str
    domain: str
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class FieldViolation:
    """One ``google.rpc.BadRequest.FieldViolation``: the request field to fix (its proto path,
    such as ``order.amount``) and what is wrong with it."""

    field: str
    description: str


@dataclass(frozen=True)
class Failure:
    """A failed call: grpc's code and message, and the rich details the adapter attached.

    ``details`` holds every detail in the order sent, each decoded into its message type
    (``ErrorInfo``, ``BadRequest``, ``RetryInfo``, ``GatewayError``), or left as the
    ``google.protobuf.Any`` it came in when its type is another or its bytes do not parse. The
    typed fields read the first detail of their type.
    """

    code: grpc.StatusCode
    message: str
    error_info: ErrorInfo | None = None
    field_violations: tuple[FieldViolation, ...] = ()
    retry_delay: timedelta | None = None
    """RetryInfo's delay: present when the adapter advises a retry after it."""
    gateway_error: gateway_error_pb2.GatewayError | None = None
    """The gateway's own error (``result=ERROR``), as sent. A copy: changing it changes nothing."""
    details: tuple[Message, ...] = ()

    @property
    def reason(self) -> str | None:
        """``ErrorInfo.reason`` when the adapter made the status (domain ``nvp-adapter``):
        ``INVALID_REQUEST``, ``UPSTREAM_UNAVAILABLE``, ``TRANSACTION_ID_REUSED``, ..."""
        info = self.error_info
        return info.reason if info is not None and info.domain == DOMAIN else None

    @property
    def outcome(self) -> str | None:
        """``ErrorInfo.metadata["outcome"]`` of an adapter's status: ``UNKNOWN`` (the gateway may
        have done the work) or ``NOT_FOUND`` (the answer was lost, and the gateway holds
        nothing); ``None`` otherwise."""
        info = self.error_info
        return info.metadata.get("outcome") if info is not None and info.domain == DOMAIN else None


def failure(error: grpc.RpcError) -> Failure:
    """Decode a failed call: a ``grpc.aio.AioRpcError`` or the ``grpc.RpcError`` a blocking stub
    raises (both are a finished call). Never raises on what the peer sent::

        try:
            await stub.CreateSession(request, timeout=10)
        except grpc.aio.AioRpcError as error:
            print(failure(error).reason)  # INVALID_REQUEST, say
    """
    code = error.code()
    message = error.details() or ""
    status = _status(error.trailing_metadata(), code)
    if status is None:
        return Failure(code, message)
    details = tuple(_unpack(packed) for packed in status.details)
    info = _first(details, error_details_pb2.ErrorInfo)
    bad_request = _first(details, error_details_pb2.BadRequest)
    retry = _first(details, error_details_pb2.RetryInfo)
    return Failure(
        code=code,
        message=message,
        error_info=None
        if info is None
        else ErrorInfo(info.reason, info.domain, MappingProxyType(dict(info.metadata))),
        field_violations=()
        if bad_request is None
        else tuple(FieldViolation(v.field, v.description) for v in bad_request.field_violations),
        retry_delay=None if retry is None else _delay(retry),
        gateway_error=_first(details, gateway_error_pb2.GatewayError),
        details=details,
    )


def outcome(trailing_metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """How an answer came, from its trailers: ``reconciled`` (the answer was lost and the adapter
    found the transaction), ``replayed`` (a retry answered with the transaction its ids already
    name), or ``None`` (the gateway's own answer to this call).

    ::

        call = stub.Pay(request, timeout=30)
        response = await call
        told = outcome(await call.trailing_metadata())  # "replayed", say

    A blocking stub's ``with_call`` gives the call whose ``trailing_metadata()`` this takes.
    """
    for key, value in trailing_metadata or ():
        if key == OUTCOME_TRAILER:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def _status(
    trailing_metadata: Iterable[Any] | None, code: grpc.StatusCode
) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` of the trailers, when it parses and describes this very status.

    This is what grpcio-status's ``rpc_status.from_call`` does, without its dependency and without
    its exceptions: a trailer whose code is not the call's describes another status (a proxy's,
    a stale one) and is not believed; the message is grpc's own either way.
    """
    for entry in trailing_metadata or ():  # pairs: grpc.aio.Metadata's, or grpc's namedtuples
        key, value = entry
        if key != DETAILS_TRAILER or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        return status if _CODES.get(status.code) is code else None
    return None


def _unpack(packed: any_pb2.Any) -> Message:
    name = packed.TypeName()  # what ``Any.Is`` compares: the type URL's last segment
    for kind in _KNOWN:
        if name == kind.DESCRIPTOR.full_name:
            detail = kind()
            try:
                detail.ParseFromString(packed.value)
            except DecodeError:
                return packed
            return detail
    return packed


def _first(details: tuple[Message, ...], kind: type[_M]) -> _M | None:
    return next((d for d in details if isinstance(d, kind)), None)


def _delay(retry: error_details_pb2.RetryInfo) -> timedelta:
    duration = retry.retry_delay
    seconds = duration.seconds + duration.nanos / 1e9  # a peer's int64: clip before timedelta
    return timedelta(seconds=min(max(seconds, 0.0), MAX_RETRY_DELAY.total_seconds()))
