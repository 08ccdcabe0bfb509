"""The interceptors wrap each method's handler once, on its first call, and the wrapped handler
is handed out again: no interceptor builds a closure and a handler tuple on every call, and no
method the server lacks is ever held."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from adapter.net.interceptors import InterceptedHandlers

if TYPE_CHECKING:  # grpc's RpcMethodHandler is generic for type checkers only
    Handler = grpc.RpcMethodHandler[Any, Any]


async def answer(request: Any, context: Any) -> Any:
    return request


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class Named:
    """An interceptor that wraps every handler, known or not, in a new one, and remembers what
    it wrapped, in order."""

    def __init__(self, name: str, made: list[tuple[str, Handler | None, str, Handler]]) -> None:
        self.name, self.made = name, made

    def wrap(self, handler: Handler | None, method: str) -> Handler:
        wrapped: Handler = grpc.unary_unary_rpc_method_handler(answer)
        self.made.append((self.name, handler, method, wrapped))
        return wrapped


def service_of(methods: dict[str, Handler]) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler("s.S", methods)


def test_a_known_method_is_wrapped_once_innermost_first() -> None:
    """The first call wraps grpc's handler by the last interceptor, then the first; every later
    call gets that same handler back, with no interceptor asked again."""
    made: list[tuple[str, Handler | None, str, Handler]] = []
    handlers = InterceptedHandlers([Named("outer", made), Named("inner", made)])
    method_a: Handler = grpc.unary_unary_rpc_method_handler(answer)
    handlers.add_generic_rpc_handlers((service_of({"A": method_a}),))
    first = handlers.service(Details("/s.S/A"))
    assert [(name, handler, method) for name, handler, method, _ in made] == [
        ("inner", method_a, "/s.S/A"),
        ("outer", made[0][3], "/s.S/A"),
    ]
    assert first is made[1][3]
    assert handlers.service(Details("/s.S/A")) is first
    assert len(made) == 2


def test_an_unknown_method_is_wrapped_on_every_call_and_never_held() -> None:
    """A method no service has reaches the interceptors as None, call after call; none is kept,
    so a caller's own names cannot grow the table."""
    made: list[tuple[str, Handler | None, str, Handler]] = []
    handlers = InterceptedHandlers([Named("only", made)])
    handlers.add_generic_rpc_handlers((service_of({}),))
    first = handlers.service(Details("/x.Y/Z"))
    second = handlers.service(Details("/x.Y/Z"))
    assert first is not second
    assert [(handler, method) for _, handler, method, _ in made] == [(None, "/x.Y/Z")] * 2
    assert handlers._by_method == {}


def test_services_added_later_are_found_and_registered_handlers_ignored() -> None:
    """A service added after a first call is served; what the generated code registers with
    ``add_registered_method_handlers`` is left to the generic handlers, which hold it too."""
    handlers = InterceptedHandlers([])
    assert handlers.service(Details("/s.S/A")) is None
    method_a: Handler = grpc.unary_unary_rpc_method_handler(answer)
    handlers.add_registered_method_handlers("s.S", {"A": method_a})
    assert handlers.service(Details("/s.S/A")) is None
    handlers.add_generic_rpc_handlers((service_of({"A": method_a}),))
    assert handlers.service(Details("/s.S/A")) is method_a
