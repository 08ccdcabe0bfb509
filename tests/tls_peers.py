"""Real peers for the certificate and proxy tests: an HTTPS gateway on loopback port 0 with
trustme certificates, an HTTP CONNECT proxy (``ConnectProxy``), and the adapter with a gRPC
channel that never goes through a proxy.

Not a test module: the test files import from it.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

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


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass(frozen=True)
class Seen:
    """A request the proxy read: its method, target and ``Proxy-Authorization`` (None: absent)."""

    method: str
    target: str
    authorization: str | None


class ConnectProxy:
    """An HTTP CONNECT proxy on 127.0.0.1; ``credentials`` set: it demands them (else 407).

    With ``hang_up`` it closes each connection as soon as it has read the CONNECT. A request that
    is not CONNECT (plain http through the proxy) is forwarded as it came to the host it names.
    """

    def __init__(self, credentials: tuple[str, str] | None = None, *, hang_up: bool = False):
        self.expected = None if credentials is None else basic(*credentials)
        self.hang_up = hang_up
        self.seen: list[Seen] = []
        self.tunnels = 0
        """CONNECTs answered 200: tunnels opened to the gateway."""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        """The proxy URL with user info, percent-encoded as a URL must carry it."""
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the adapter closed its side: nothing to record
        finally:
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }
        authorization = headers.get("proxy-authorization")
        self.seen.append(Seen(method, target, authorization))
        if self.hang_up:
            return
        if self.expected is not None and authorization != self.expected:
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
            )
            await writer.drain()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.tunnels += 1
        else:  # absolute-form: forward the request as it came
            authority = target.split("/")[2]
            host, _, port = authority.rpartition(":")
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            upstream_writer.write(head)
        self._writers.add(upstream_writer)
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()
