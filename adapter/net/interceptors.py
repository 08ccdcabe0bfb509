"""Wrapping a grpc.aio method handler's behaviour: the one piece every server interceptor needs.

grpc's method handlers are named tuples with one behaviour set (``unary_unary``,
``stream_unary``, ``unary_stream`` or ``stream_stream``); an interceptor that acts around a call
replaces that one behaviour by a wrapped one. ``callers.CallerAuthentication`` and
``access.CallObserver`` both do it through ``wrap_behaviour``, and ``InterceptedHandlers`` applies
them, once per method.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import grpc

__all__ = [
    "Behaviour",
    "InterceptedHandlers",
    "Interceptor",
    "ended_with",
    "responses",
    "wrap_behaviour",
]

Behaviour = Callable[..., Any]
"""A handler's behaviour: ``(request, context)`` to a response, or to an async iterator of them."""


def wrap_behaviour(
    handler: grpc.RpcMethodHandler[Any, Any],
    unary: Callable[[Behaviour], Behaviour],
    streaming: Callable[[Behaviour], Behaviour],
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its behaviour wrapped: by ``unary`` when it answers with one response,
    by ``streaming`` when it answers with a stream."""
    if handler.unary_unary is not None:
        wrapped = {"unary_unary": unary(handler.unary_unary)}
    elif handler.stream_unary is not None:
        wrapped = {"stream_unary": unary(handler.stream_unary)}
    elif handler.unary_stream is not None:
        wrapped = {"unary_stream": streaming(handler.unary_stream)}
    elif handler.stream_stream is not None:
        wrapped = {"stream_stream": streaming(handler.stream_stream)}
    else:
        return handler
    return handler._replace(**wrapped)  # type: ignore[attr-defined,no-any-return]


class Interceptor(Protocol):
    """Acts around the calls of some methods by wrapping their handlers: once per method."""

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any] | None, method: str
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """``method``'s handler as this interceptor serves it (None: the server has no such
        method); ``handler`` itself where it does not act."""
        ...


class InterceptedHandlers(grpc.GenericRpcHandler):
    """The server's services, each method's handler wrapped by every interceptor: what
    ``grpc.aio.server(interceptors=...)`` does, done once per method instead of once per call.

    grpc.aio runs its interceptors on every call as a chain of coroutines (the interceptor's
    ``intercept_service``, grpc's continuation, each awaited); here the wrapped handler of a known
    method is made on its first call and handed out again, which measured about 9 % of the
    adapter's CPU per call (docs/performance.md). ``interceptors`` are given outermost first, as
    grpc takes them. A method the server does not have is wrapped on every call and never held,
    so that no caller can grow the table with names of its own.

    The server's services are added here, not to the server (``add_generic_rpc_handlers``, as the
    generated ``add_*_to_server`` functions do), and this is the server's one generic handler.
    Their ``add_registered_method_handlers`` is ignored: grpc would serve registered handlers
    ahead of every generic one, unwrapped, and the generic handlers cover the same methods.

    >>> handlers = InterceptedHandlers([outer, inner])  # doctest: +SKIP
    >>> health_pb2_grpc.add_HealthServicer_to_server(servicer, handlers)  # doctest: +SKIP
    >>> server.add_generic_rpc_handlers((handlers,))  # doctest: +SKIP
    """

    def __init__(self, interceptors: Sequence[Interceptor]) -> None:
        self._innermost_first = tuple(reversed(interceptors))
        self._services: list[grpc.GenericRpcHandler] = []
        self._by_method: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._services.extend(handlers)
        self._by_method.clear()

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """Ignored: the same methods come through ``add_generic_rpc_handlers``."""

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        held = self._by_method.get(method)
        if held is not None:
            return held
        handler: grpc.RpcMethodHandler[Any, Any] | None = None
        for service in self._services:
            handler = service.service(handler_call_details)
            if handler is not None:
                break
        known = handler is not None
        for interceptor in self._innermost_first:
            handler = interceptor.wrap(handler, method)
        if known and handler is not None:
            self._by_method[method] = handler
        return handler


async def responses(result: Any) -> AsyncIterator[Any]:
    """The responses of a streaming behaviour's result, in both forms grpc.aio allows: an async
    iterator of responses, or a coroutine that writes them itself (``context.write``)."""
    if inspect.isawaitable(result):
        await result
        return
    async for response in result:
        yield response


def ended_with(
    context: grpc.aio.ServicerContext[Any, Any], raised: BaseException | None = None
) -> grpc.StatusCode:
    """The status code a call ends with, once its behaviour returned or ``raised``.

    A return is OK unless the handler set a code; an abort is an exception whose code is on the
    context; a cancellation is DEADLINE_EXCEEDED when the deadline has passed, else CANCELLED
    (the caller went away); anything else that escaped is what grpc then sends, UNKNOWN.
    """
    code: grpc.StatusCode | None = context.code()  # None until a handler sets or aborts
    if raised is None:
        return code or grpc.StatusCode.OK
    if isinstance(raised, asyncio.CancelledError):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    if code is None or code is grpc.StatusCode.OK:
        return grpc.StatusCode.UNKNOWN
    return code
