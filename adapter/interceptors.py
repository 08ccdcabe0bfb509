"""Wrapping a grpc.aio method handler's behaviour: the one piece every server interceptor needs.

grpc's method handlers are named tuples with one behaviour set (``unary_unary``,
``stream_unary``, ``unary_stream`` or ``stream_stream``); an interceptor that acts around a call
replaces that one behaviour by a wrapped one. ``callers.CallerAuthentication`` and
``access.CallObserver`` both do it through ``wrap_behaviour``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

__all__ = [
    "Behaviour",
    "Continuation",
    "WrappedHandlers",
    "ended_with",
    "responses",
    "wrap_behaviour",
]

Behaviour = Callable[..., Any]
"""A handler's behaviour: ``(request, context)`` to a response, or to an async iterator of them."""
Continuation = Callable[
    [grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]
]
"""What a server interceptor calls for the handler of a call."""


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


class WrappedHandlers:
    """Each method's wrapped handler, made once and handed out again while grpc hands out the
    same handler for that method (it does, call after call): no new closure and no new handler
    tuple per call.

    Held per method that has a handler (an unknown method has none to wrap), so there are as
    many entries as the server has methods; a method whose handler changes gets a new wrapping
    in place of the old.

    >>> handlers = WrappedHandlers(lambda handler, method: wrap(handler))  # doctest: +SKIP
    >>> handlers.get(handler, "/pkg.Service/Method")  # doctest: +SKIP
    """

    def __init__(
        self,
        wrap: Callable[[grpc.RpcMethodHandler[Any, Any], str], grpc.RpcMethodHandler[Any, Any]],
    ) -> None:
        self._wrap = wrap
        self._by_method: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    def get(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` of ``method`` wrapped; the same object as last time for the same one."""
        held = self._by_method.get(method)
        if held is not None and held[0] is handler:
            return held[1]
        wrapped = self._wrap(handler, method)
        self._by_method[method] = (handler, wrapped)
        return wrapped


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
