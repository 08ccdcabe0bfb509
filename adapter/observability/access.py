"""One access line per RPC, and the RPC metrics: ``CallObserver``, an interceptor.

The observer is the outermost interceptor: it starts each call's context (``call.start_call``)
with a ``CallRecord`` in it, before tracing, caller authentication or the handler run; what only
they know (the trace id, the caller, the merchant, the ErrorInfo reason, the upstream attempts
and HTTP status) they write into that record. When the call ends, however it ends, the
observer writes the access line on the ``adapter.access`` logger and counts the call in
``metrics.Metrics``.

The line's level says whose the outcome is: a success or a caller's mistake at INFO, an upstream
failure at WARNING, a fault of the adapter at ERROR (``level_of``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from adapter.core.errors import ServerOverloaded
from adapter.core.status import rich_status
from adapter.net.interceptors import Behaviour, ended_with, responses, wrap_behaviour
from adapter.observability.call import CallRecord, start_call
from adapter.observability.metrics import Metrics

__all__ = ["CallObserver", "level_of"]

log = logging.getLogger("adapter.access")

_CALLERS_MISTAKES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNIMPLEMENTED,  # a method the server does not have
    }
)
# The adapter's own faults: an unexpected error (reason INTERNAL), a request the adapter built
# badly (INTERNAL INVALID_REQUEST), or an end the adapter did not decide (no reason: something
# escaped to grpc). Every other failure with a reason is the gateway's (SERVER_FAILED, a
# malformed answer, a timeout, an unknown cause...).


def level_of(code: grpc.StatusCode, reason: str | None) -> int:
    """INFO for a success or a caller's mistake, WARNING for the gateway's, ERROR for ours."""
    if code is grpc.StatusCode.OK or code in _CALLERS_MISTAKES:
        return logging.INFO
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:  # the adapter's own, or grpc's at the deadline
        return logging.WARNING
    if (
        reason is None
        or reason == "INTERNAL"
        or (code is grpc.StatusCode.INTERNAL and reason == "INVALID_REQUEST")
    ):
        return logging.ERROR
    return logging.WARNING


class CallObserver:
    """Opens each call's ``CallRecord``; at its end writes the access line and counts the call.

    An ``interceptors.Interceptor``: every method's handler is wrapped, and a method the server
    does not have gets a handler that answers UNIMPLEMENTED with its line.

    It also holds ``server.max_concurrent_rpcs`` (``max_calls``): a call past it is refused at
    once with RESOURCE_EXHAUSTED ``SERVER_OVERLOADED`` and has its access line. grpc.aio's own
    limit (``maximum_concurrent_rpcs``) refuses before any interceptor runs, so its refusals had
    no line, no details and no count.
    """

    def __init__(self, metrics: Metrics | None, max_calls: int | None = None) -> None:
        self._metrics = metrics
        self._max_calls = max_calls
        self._calls = 0

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any] | None, method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if handler is None:
            return self._unknown(method)
        return self._observed(handler, method)

    def _unknown(self, method: str) -> grpc.RpcMethodHandler[Any, Any]:
        """UNIMPLEMENTED, as grpc answers a method the server does not have, with its access line.

        The line names the whole path the caller asked for; the call is not counted, as the name
        is the caller's text and no caller may add a series. A streaming handler reads nothing,
        so it answers a call of any kind at once.
        """

        async def unimplemented(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            record = CallRecord(rpc=method)
            try:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            finally:
                self._close(record, None, grpc.StatusCode.UNIMPLEMENTED)

        return grpc.stream_stream_rpc_method_handler(unimplemented)

    def _observed(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        return wrap_behaviour(
            handler,
            lambda behaviour: self._unary(behaviour, method),
            lambda behaviour: self._streaming(behaviour, method),
        )

    def _unary(self, behaviour: Behaviour, method: str) -> Behaviour:
        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            record = self._open(method)
            self._calls += 1
            try:
                await self._refuse_past_the_limit(record, context)
                response = await behaviour(request, context)
            except BaseException as exc:
                self._close(record, method, ended_with(context, exc))
                raise
            finally:
                self._calls -= 1
            self._close(record, method, ended_with(context))
            return response

        return observed

    def _streaming(self, behaviour: Behaviour, method: str) -> Behaviour:
        async def observed(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            record = self._open(method)
            self._calls += 1
            try:
                await self._refuse_past_the_limit(record, context)
                async for response in responses(behaviour(request, context)):
                    yield response
            except BaseException as exc:
                self._close(record, method, ended_with(context, exc))
                raise
            finally:
                self._calls -= 1
            self._close(record, method, ended_with(context))

        return observed

    async def _refuse_past_the_limit(
        self, record: CallRecord, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """Abort the call (this one counted) if more than ``max_calls`` are in progress."""
        if self._max_calls is None or self._calls <= self._max_calls:
            return
        status = rich_status(ServerOverloaded(self._max_calls))
        record.reason = status.reason
        record.status_message = status.proto.message
        await context.abort_with_status(status.to_grpc())

    def _open(self, method: str) -> CallRecord:
        record = CallRecord(rpc=method.rpartition("/")[2])
        start_call().record = record
        if self._metrics is not None:
            self._metrics.rpc_started(method)
        return record

    def _close(self, record: CallRecord, method: str | None, code: grpc.StatusCode) -> None:
        seconds = time.perf_counter() - record.started
        try:
            if self._metrics is not None and method is not None:
                self._metrics.rpc_handled(method, code, seconds)
            level = level_of(code, record.reason)
            if log.isEnabledFor(level):
                log.log(level, "rpc", extra=record.fields(code, seconds * 1000))
        except Exception:  # the call's own answer must not be lost to its bookkeeping
            log.exception("cannot write the access line of %s", record.rpc)
