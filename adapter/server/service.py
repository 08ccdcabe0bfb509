"""The RPC handlers: parse, validate, call the gateway, map the answer; one error boundary.

Every RPC goes through ``RpcBoundary``: an ``AdapterError`` becomes its rich status
(``status.rich_status``), anything unexpected is logged once with its traceback and answered
INTERNAL with a generic message, and what the access line says of the call (merchant, reason,
attempts, HTTP status) goes into its ``access.CallRecord``. Everything that
builds the answer runs inside the boundary's ``try``; should building the rich status itself
fail, the caller still gets a minimal rich INTERNAL (``status.internal_status``), never a bare
status.
"""

from __future__ import annotations

import logging
import traceback
from functools import partial

import grpc
from google.protobuf.message import Message

from adapter.core import nvp
from adapter.core.errors import (
    AdapterError,
    MerchantNotAllowed,
    UpstreamError,
    UpstreamProtocolError,
)
from adapter.core.schema import OPERATIONS, SERVICES, Operation
from adapter.core.status import internal_status, rich_status
from adapter.observability.call import CallRecord, current_call
from adapter.server.callers import current_caller
from adapter.upstream.calls import Answer, UpstreamClient
from adapter.upstream.exactly_once import PaymentCalls

__all__ = ["API_SERVICE_NAMES", "OUTCOME_TRAILER", "RpcBoundary", "api_services"]

log = logging.getLogger("adapter.rpc")

OUTCOME_TRAILER = "nvp-adapter-outcome"
"""The trailer of a payment answered from a lookup: ``reconciled`` or ``replayed`` (CONTRACT §9)."""
DEADLINE_MARGIN_SECONDS = 0.05
"""Kept back from the caller's deadline so the adapter's own answer reaches the caller first."""
_LAST_RESORT = internal_status().to_grpc()
"""Built once, at import: the answer when building the rich status fails."""


class RpcBoundary:
    """Runs one operation for one call and turns every failure into one rich status.

    The request arrives as bytes and is parsed here, inside the boundary, so that even a request
    grpc could not parse (a string field that is not UTF-8) is answered with a rich
    INVALID_ARGUMENT rather than grpc's bare UNKNOWN. The response is measured here too: one that
    grpc could not send (over ``max_message_bytes``) is a rich INTERNAL, not grpc's bare
    RESOURCE_EXHAUSTED.
    """

    def __init__(
        self,
        operation: Operation,
        client: UpstreamClient,
        payments: PaymentCalls,
        max_message_bytes: int,
    ) -> None:
        self.operation = operation
        self._client = client
        self._payments = payments
        self._max_message_bytes = max_message_bytes

    async def handle(
        self, raw: bytes, context: grpc.aio.ServicerContext[bytes, Message]
    ) -> Message:
        call = current_call()
        record = None if call is None else call.record
        try:
            request: Message | None = None
            try:
                request = self.operation.parse_request(raw)
                if record is not None:
                    _describe_request(record, request)
                response, answer, outcome = await self._respond(request, context)
            except AdapterError as exc:
                failure: Exception = exc
            except Exception as exc:  # noqa: BLE001 (the boundary: nothing escapes as a bare UNKNOWN)
                self._log_unexpected("unexpected error", exc)
                failure = exc
            else:
                if record is not None:
                    record.attempts, record.http_status = answer.attempts, answer.http_status
                    record.outcome = outcome
                return response
            status = rich_status(
                failure,
                partial(self.operation.field_path, request=request),
                self.operation.api_operation,
            )
            answer_status = status.to_grpc()
            if record is not None:
                _describe_failure(record, failure, status.reason)
                record.status_message = self._client.redact(status.proto.message)
        except Exception as exc:  # noqa: BLE001 (building the answer failed: answer the least one)
            self._log_unexpected("cannot build the error answer", exc)
            answer_status = _LAST_RESORT
        await context.abort_with_status(answer_status)
        raise AssertionError("unreachable: abort_with_status raises")  # pragma: no cover

    async def _respond(
        self, request: Message, context: grpc.aio.ServicerContext[bytes, Message]
    ) -> tuple[Message, Answer, str | None]:
        """The response to a parsed request, the answer it came from, and how a payment's answer
        was come by (``OUTCOME_TRAILER``, also set here); raises the adapter's errors."""
        fields = self.operation.encode_request(request)
        _authorize(fields[nvp.MERCHANT])
        outcome = None
        if self.operation.moves_money:
            settled = await self._payments.call(fields, _time_left(context))
            answer, outcome = settled.answer, settled.outcome
        else:
            answer = await self._client.call(
                fields, _time_left(context), repeatable=self.operation.repeatable
            )
        response = self.operation.decode_response(answer.fields)
        size = response.ByteSize()
        if size > self._max_message_bytes:  # grpc would refuse to send it, with a bare status
            raise UpstreamProtocolError(
                f"the answer is {size} bytes as a gRPC message, over the server's "
                f"{self._max_message_bytes}-byte limit",
                attempts=answer.attempts,
            )
        if outcome is not None:
            context.set_trailing_metadata(((OUTCOME_TRAILER, outcome),))
        return response, answer, outcome

    def _log_unexpected(self, what: str, exc: BaseException) -> None:
        # Not log.exception: the traceback is redacted first, as a frame may hold a password.
        trace = self._client.redact("".join(traceback.format_exception(exc)))
        log.error("rpc=%s %s\n%s", self.operation.rpc_name, what, trace)


def _describe_request(record: CallRecord, request: Message) -> None:
    """The request's merchant and correlation id, for the access line."""
    record.merchant = getattr(request, "merchant", None) or None
    record.correlation_id = getattr(request, "correlation_id", None) or None


def _describe_failure(record: CallRecord, failure: Exception, reason: str) -> None:
    record.reason = reason
    if isinstance(failure, UpstreamError):
        record.attempts = failure.attempts
        record.http_status = getattr(failure, "http_status", None) or None


def _authorize(merchant: str) -> None:
    """Refuse a merchant outside the authenticated caller's list (callers configured only)."""
    caller = current_caller()
    if caller is not None and not caller.may_use(merchant):
        raise MerchantNotAllowed(merchant, caller.name)


def _time_left(context: grpc.aio.ServicerContext[bytes, Message]) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return max(0.0, remaining - DEADLINE_MARGIN_SECONDS)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


API_SERVICE_NAMES = tuple(service.full_name for service, _ in SERVICES)
"""The services of the API proper (sessions, payments), as health and reflection name them."""


def api_services(
    client: UpstreamClient, payments: PaymentCalls, *, max_message_bytes: int
) -> tuple[grpc.GenericRpcHandler, ...]:
    """One generic handler per service in the proto, each RPC a boundary.

    The handlers come from the service descriptors, so a new RPC needs no servicer method; an
    operation that moves money goes through ``payments``. ``max_message_bytes`` is the server's
    send limit: a response over it is answered INTERNAL.
    """
    return tuple(
        grpc.method_handlers_generic_handler(
            service.full_name,
            {
                method.name: grpc.unary_unary_rpc_method_handler(
                    RpcBoundary(
                        OPERATIONS[method.name], client, payments, max_message_bytes
                    ).handle,
                    response_serializer=_serialize,
                )
                for method in service.methods
            },
        )
        for service, _ in SERVICES
    )
