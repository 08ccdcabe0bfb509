"""Real TLS peers for the certificate and proxy tests: an HTTPS gateway on loopback port 0 with
trustme certificates, and the adapter with a gRPC channel that never goes through a proxy.

Not a test module: the test files import from it.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import trustme
from aiohttp import web

from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.config import Settings
from adapter.core import nvp

if TYPE_CHECKING:  # the stub type grpc.aio channels give; it exists for type checkers only
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

SESSION = "session.id=SESSION0002AAAAAAAAAAAAAAAAAAAA&session.updateStatus=NO_UPDATE"


def server_context(leaf: trustme.LeafCert, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    """A server context presenting ``leaf``; with ``client_ca``, a client certificate it signed
    is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    return context


@dataclass
class HttpsGateway:
    """An HTTPS gateway that answers every CreateSession with a success for the merchant asked.

    ``requests`` holds the decoded body of each request it read; ``client_subjects`` the subject
    common name of the verified client certificate each came with ("" for none).
    """

    url: str = ""
    requests: list[dict[str, str]] = field(default_factory=list)
    client_subjects: list[str] = field(default_factory=list)

    async def _answer(self, request: web.Request) -> web.Response:
        fields = nvp.decode(await request.read())
        self.requests.append(fields)
        assert request.transport is not None
        self.client_subjects.append(_common_name(request.transport.get_extra_info("peercert")))
        merchant = fields.get(nvp.MERCHANT, "")
        body = f"merchant={merchant}&result=SUCCESS&{SESSION}&session.version=0123456789"
        return web.Response(body=body, content_type="application/x-www-form-urlencoded")


def _common_name(peercert: Any) -> str:
    for rdn in (peercert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return ""


@asynccontextmanager
async def https_gateway(
    context: ssl.SSLContext | None, host: str = "localhost"
) -> AsyncIterator[HttpsGateway]:
    """The gateway on 127.0.0.1, port 0, its URL naming ``host`` (plain HTTP with no context)."""
    gateway = HttpsGateway()
    app = web.Application()
    app.router.add_post("/api/nvp/version/{version}", gateway._answer)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        scheme = "https" if context is not None else "http"
        gateway.url = f"{scheme}://{host}:{runner.addresses[0][1]}"
        yield gateway
    finally:
        await runner.cleanup()


@asynccontextmanager
async def adapter_channel(settings: Settings) -> AsyncIterator[tuple[Stub, grpc.aio.Channel]]:
    """The adapter for ``settings`` and a channel to it.

    The channel ignores the proxy variables (grpc reads them too), so that a test's proxy sees
    only the adapter's traffic to the gateway.
    """
    async with (
        build_server(settings) as server,
        grpc.aio.insecure_channel(
            server.address, options=[("grpc.enable_http_proxy", 0)]
        ) as channel,
    ):
        yield session_service_pb2_grpc.SessionServiceStub(channel), channel
