"""Shared fixtures: real servers on loopback port 0, never mocks of the adapter's own code.

- ``scripted_upstream``: an aiohttp server whose every answer a test sets, recording requests.
- ``start_adapter``: the adapter's own gRPC server in-process, with a stub connected to it.
- ``fail``: make a call that must fail and unpack its rich status into a ``Failure``.
- ``access_lines``: what the access log writes, through the real JSON formatter.

``pytest --event-loop uvloop`` runs every in-process test on uvloop's event loop instead of
asyncio's (the processes the tests start run on their own default, uvloop where installed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from aiohttp import web
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from adapter._proto.mpgs.gateway.v1 import gateway_error_pb2 as gw
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.config import (
    MerchantCredentials,
    ServerSettings,
    Settings,
    UpstreamSettings,
)
from adapter.core import nvp
from adapter.core.redaction import Secret
from adapter.observability.logs import json_formatter

if TYPE_CHECKING:  # the stub type grpc.aio channels give; it exists for type checkers only
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

MERCHANT = "TESTMERCHANT"
PASSWORD = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # recognisable, so tests can look for leaks

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ScriptedUpstream:
    """A loopback HTTP server standing in for the gateway; tests set ``handler``."""

    url: str = ""
    handler: Handler | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    connections_closed: int = 0

    def reply(self, body: str | bytes, status: int = 200, **headers: str) -> None:
        """Answer every request with this body and status."""
        data = body.encode() if isinstance(body, str) else body
        content_type = headers.pop("content_type", nvp.CONTENT_TYPE)

        async def handler(_: web.Request) -> web.StreamResponse:
            return web.Response(
                body=data, status=status, headers={"Content-Type": content_type, **headers}
            )

        self.handler = handler

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(nvp.decode(await request.read()))
        assert self.handler is not None, "the test set no handler"
        return await self.handler(request)


@pytest.fixture
async def scripted_upstream() -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    app = web.Application()
    app.router.add_post("/api/nvp/version/{version}", upstream._dispatch)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    upstream.url = f"http://127.0.0.1:{port}"
    yield upstream
    await runner.cleanup()


def make_settings(
    upstream: str = "embedded",
    merchants: Mapping[str, str | None] | None = None,
    **upstream_options: Any,
) -> Settings:
    """Settings for a test: loopback port 0, the given upstream and merchants."""
    accounts = {MERCHANT: PASSWORD} if merchants is None else merchants
    return Settings(
        server=ServerSettings(listen="127.0.0.1:0", grace_seconds=2.0),
        upstream=dataclasses.replace(UpstreamSettings(url=upstream), **upstream_options),
        merchants=MappingProxyType(
            {
                m: MerchantCredentials(m, None if p is None else Secret(p))
                for m, p in accounts.items()
            }
        ),
    )


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    """What ``adapter.access`` writes, through the real JSON formatter, one object a line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    logger = logging.getLogger("adapter.access")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(previous)


StartAdapter = Callable[[Settings], Awaitable["Stub"]]


@pytest.fixture
async def start_adapter() -> AsyncIterator[StartAdapter]:
    """Start an adapter for given settings; returns a connected stub; all closed afterwards."""
    async with AsyncExitStack() as stack:

        async def start(settings: Settings) -> Stub:
            server = await stack.enter_async_context(build_server(settings))
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
            return session_service_pb2_grpc.SessionServiceStub(channel)

        yield start


DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    gw.GatewayError,
)


@dataclass
class Failure:
    """What a caller sees of a failed call: code, message and details by type."""

    code: grpc.StatusCode
    message: str
    details: dict[type[Message], Message] = field(default_factory=dict)

    @property
    def info(self) -> error_details_pb2.ErrorInfo:
        info = self.details[error_details_pb2.ErrorInfo]
        assert isinstance(info, error_details_pb2.ErrorInfo)
        return info


async def fail(
    stub: Stub,
    request: Message | None = None,
    deadline: float = 5.0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Failure:
    """Make a call that must fail and unpack its rich status: the RPC is the one the request's
    type is for (``CreateSession`` when no request is given)."""
    request = request or pb.CreateSessionRequest(merchant=MERCHANT)
    rpc = getattr(stub, request.DESCRIPTOR.name.removesuffix("Request"))
    call = rpc(request, timeout=deadline, metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    status = await rpc_status.aio.from_call(call)
    assert isinstance(status, status_pb2.Status), "every error carries a google.rpc.Status"
    failure = Failure(await call.code(), status.message)
    for packed in status.details:
        for kind in DETAIL_TYPES:
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                assert kind not in failure.details, f"two {kind.__name__} details"
                failure.details[kind] = detail
                break
        else:
            pytest.fail(f"unexpected detail {packed.type_url}")
    assert failure.info.domain == "nvp-adapter"
    assert PASSWORD not in str(status)
    return failure


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--event-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop of the in-process tests (default: asyncio)",
    )


class _UvloopTests:
    """pytest-asyncio's hook: every asyncio test on a loop from uvloop."""

    @staticmethod
    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
        import uvloop  # noqa: PLC0415 (only for --event-loop uvloop)

        return {"uvloop": uvloop.new_event_loop}


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("event_loop") == "uvloop":
        config.pluginmanager.register(_UvloopTests(), "uvloop-tests")


@pytest.fixture(autouse=True)
def _no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's HTTP(S)_PROXY must not send the tests' loopback calls to their proxy."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _no_adapter_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's NVP_ADAPTER_* variables must not configure the adapters the tests start."""
    for name in list(os.environ):
        if name.upper().startswith("NVP_ADAPTER_"):
            monkeypatch.delenv(name)
