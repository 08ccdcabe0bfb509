"""Wrapped handlers are made once per method and handed out again while grpc's handler is the
same one, so that no interceptor builds a closure and a handler tuple on every call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from adapter.interceptors import WrappedHandlers

if TYPE_CHECKING:  # grpc's RpcMethodHandler is generic for type checkers only
    Handler = grpc.RpcMethodHandler[Any, Any]


async def answer(request: Any, context: Any) -> Any:
    return request


class Wrapper:
    """Wraps a handler in a new one, keeping what it wrapped for each new handler it made."""

    def __init__(self) -> None:
        self.made: list[tuple[Handler, str, Handler]] = []

    def __call__(self, handler: Handler, method: str) -> Handler:
        wrapped: Handler = grpc.unary_unary_rpc_method_handler(answer)
        self.made.append((handler, method, wrapped))
        return wrapped


def test_the_same_handler_is_wrapped_once() -> None:
    """Call after call with grpc's same handler, the same wrapped handler comes back, made once;
    each method has its own."""
    wrapper = Wrapper()
    handlers = WrappedHandlers(wrapper)
    handler: Handler = grpc.unary_unary_rpc_method_handler(answer)
    first = handlers.get(handler, "/s.S/A")
    assert handlers.get(handler, "/s.S/A") is first
    other = handlers.get(handler, "/s.S/B")
    assert wrapper.made == [(handler, "/s.S/A", first), (handler, "/s.S/B", other)]


def test_a_new_handler_is_wrapped_anew() -> None:
    """When grpc hands out another handler for a method, that one is wrapped, not the old one."""
    wrapper = Wrapper()
    handlers = WrappedHandlers(wrapper)
    old: Handler = grpc.unary_unary_rpc_method_handler(answer)
    new: Handler = grpc.unary_unary_rpc_method_handler(answer)
    handlers.get(old, "/s.S/A")
    wrapped = handlers.get(new, "/s.S/A")
    assert wrapper.made[-1] == (new, "/s.S/A", wrapped)
    assert handlers.get(new, "/s.S/A") is wrapped
