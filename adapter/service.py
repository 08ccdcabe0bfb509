"""Thin servicers: validate, call the gateway, map the answer; one error boundary for all RPCs.

Every RPC goes through ``RpcBoundary``: an ``AdapterError`` becomes its rich status
(``status.rich_status``), anything unexpected is logged once with its traceback and answered
INTERNAL with a generic message, and each failure is logged as exactly one line.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import cast

import grpc
from google.protobuf.message import Message
from google.rpc import code_pb2

from adapter._proto.mpgs.gateway.v1 import session_service_pb2, session_service_pb2_grpc
from adapter.errors import AdapterError, UpstreamError
from adapter.schema import OPERATIONS, Operation
from adapter.status import rich_status
from adapter.upstream import UpstreamClient

log = logging.getLogger("adapter.rpc")

DEADLINE_MARGIN_SECONDS = 0.05
"""Kept back from the caller's deadline so the adapter's own answer reaches the caller first."""


class RpcBoundary:
    """Runs one operation for one call and turns every failure into one rich status."""

    def __init__(self, operation: Operation, client: UpstreamClient) -> None:
        self.operation = operation
        self._client = client

    async def __call__(
        self, request: Message, context: grpc.aio.ServicerContext[Message, Message]
    ) -> Message:
        started = time.perf_counter()
        try:
            fields = self.operation.encode_request(request)
            answer = await self._client.call(
                fields, _time_left(context), repeatable=self.operation.repeatable
            )
            return self.operation.decode_response(answer)
        except AdapterError as exc:
            failure: Exception = exc
        except Exception as exc:  # noqa: BLE001 (the boundary: nothing escapes as a bare UNKNOWN)
            # Not log.exception: the traceback is redacted first, as a frame may hold a password.
            trace = self._client.redact("".join(traceback.format_exception(exc)))
            log.error("rpc=%s unexpected error\n%s", self.operation.rpc_name, trace)  # noqa: TRY400
            failure = exc
        status = rich_status(failure, lambda name: self.operation.field_path(name, request))
        log.warning(
            "rpc=%s code=%s reason=%s attempts=%s ms=%.1f message=%r",
            self.operation.rpc_name,
            code_pb2.Code.Name(status.proto.code),
            status.reason,
            failure.attempts if isinstance(failure, UpstreamError) else 0,
            (time.perf_counter() - started) * 1000,
            status.proto.message,
        )
        await context.abort_with_status(status.to_grpc())
        raise AssertionError("unreachable: abort_with_status raises")  # pragma: no cover


def _time_left(context: grpc.aio.ServicerContext[Message, Message]) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return max(0.0, remaining - DEADLINE_MARGIN_SECONDS)


class SessionService(session_service_pb2_grpc.SessionServiceServicer):
    """``mpgs.gateway.v1.SessionService`` on top of the gateway's NVP API."""

    def __init__(self, client: UpstreamClient) -> None:
        self._create_session = RpcBoundary(OPERATIONS["CreateSession"], client)

    async def CreateSession(
        self,
        request: session_service_pb2.CreateSessionRequest,
        context: grpc.aio.ServicerContext[
            session_service_pb2.CreateSessionRequest, session_service_pb2.CreateSessionResponse
        ],
    ) -> session_service_pb2.CreateSessionResponse:
        response = await self._create_session(request, context)  # type: ignore[arg-type]
        return cast(session_service_pb2.CreateSessionResponse, response)
