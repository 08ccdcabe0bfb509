"""The HTTP transport: one encoded NVP request out, the gateway's answer (a ``Reply``) back.

``Transport`` is the seam between the upstream calls (``adapter.upstream.calls``) and whatever
carries the bytes; ``gateway_transport`` builds the real one for the settings: ``HttpTransport``,
on the adapter's own HTTP/1.1 client (``adapter.upstream.client``), whichever way the gateway is
reached: directly, or through the proxy ``adapter.upstream.proxy`` finds (HTTP CONNECT and TLS
through it for an https gateway, the absolute-form request for an http one). The embedded gateway
plugs into the same seam from ``adapter/embedded/``; nothing here knows about it.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlsplit

from adapter.config import UpstreamSettings
from adapter.core import nvp
from adapter.net.addresses import bracketed, format_address
from adapter.upstream.client import ConnectionPool, Reply, Route
from adapter.upstream.proxy import ProxyRoute, proxy_route

__all__ = [
    "HttpTransport",
    "Reply",
    "Transport",
    "build_ssl_context",
    "gateway_transport",
]

_REQUEST_HEADERS = {"User-Agent": "nvp-adapter", "Accept": "*/*", "Content-Type": nvp.CONTENT_TYPE}
log = logging.getLogger("adapter.upstream.transport")


class Transport(Protocol):
    """Moves one encoded NVP request to the gateway and brings back its answer."""

    async def post(
        self, body: bytes, budget: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """Send ``body``; raise only the adapter's own errors; give up after ``budget`` s.

        ``headers`` are this attempt's own (``traceparent``): built by the adapter from parsed
        values only. A transport with no HTTP request to carry them ignores them.
        """
        ...

    async def aclose(self) -> None:
        """Release every connection; safe to call twice."""
        ...


def build_ssl_context(settings: UpstreamSettings) -> ssl.SSLContext:
    """Verification always on; an optional CA bundle and client certificate."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.client_cert_file:
        context.load_cert_chain(settings.client_cert_file, settings.client_key_file)
    return context


def gateway_transport(settings: UpstreamSettings) -> Transport:
    """The transport for the gateway at ``settings.url``. Create it inside the running loop.

    Raises ``ConfigError`` for a proxy URL it cannot use; ``OSError`` or ``ssl.SSLError`` for TLS
    files it cannot load.
    """
    return HttpTransport(settings)


class HttpTransport:
    """POSTs to ``{url}/api/nvp/version/{N}`` over one ``client.ConnectionPool``.

    The request's head is built once; each call adds its own headers, its length and its body.
    Raises ``ConfigError`` for a proxy URL (setting or environment) it cannot use.
    """

    def __init__(self, settings: UpstreamSettings, proxy: ProxyRoute | None = None) -> None:
        proxy = proxy_route(settings) if proxy is None else proxy
        parts = urlsplit(settings.endpoint())
        host = parts.hostname or ""
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        authority = bracketed(host) if parts.port is None else format_address(host, port)
        context = build_ssl_context(settings)  # for http too: a bad TLS file fails at start
        target = parts.path or "/"
        headers = dict(_REQUEST_HEADERS)
        if proxy.url is None:
            if proxy.source:
                log.info("gateway requests go direct: %s names the gateway's host", proxy.source)
            route = Route(host, port, context if secure else None, host, shown=f"{host}:{port}")
        else:
            log.info(
                "gateway requests go through the proxy %s (from %s)", proxy.shown, proxy.source
            )
            route = _proxied(proxy, host, port, context if secure else None)
            if not secure:  # no tunnel: the request itself goes to the proxy, and says where to
                target = f"http://{authority}{target}"
                headers.update(proxy.headers)
        head = [f"POST {target} HTTP/1.1", f"Host: {authority}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        self._head = ("\r\n".join(head) + "\r\n").encode("latin-1")
        self._pool = ConnectionPool(
            route,
            size=settings.pool_size,
            connect_timeout=settings.connect_timeout_seconds,
            max_bytes=settings.max_response_bytes,
            idle_seconds=settings.idle_timeout_seconds,
        )

    async def post(
        self, body: bytes, budget: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        request = self._head
        if headers:
            request += _header_lines(headers)
        request += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        return await self._pool.post(request, budget)

    async def aclose(self) -> None:
        await self._pool.aclose()


def _proxied(proxy: ProxyRoute, host: str, port: int, tls: ssl.SSLContext | None) -> Route:
    """The route through ``proxy``: a CONNECT tunnel to ``host``:``port`` when ``tls`` is set."""
    assert proxy.url is not None  # noqa: S101 (only called with a proxy)
    parts = urlsplit(proxy.url)
    proxy_host, proxy_port = parts.hostname or "", parts.port or 80
    shown = f"{host}:{port} through the proxy {proxy_host}:{proxy_port}"
    if tls is None:
        return Route(proxy_host, proxy_port, shown=shown)
    authority = format_address(host, port)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in proxy.headers.items()]
    tunnel = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return Route(proxy_host, proxy_port, tls, host, tunnel, shown)


def _header_lines(headers: Mapping[str, str]) -> bytes:
    """``name: value`` lines; refuses a line break, which would end the header early."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
        raise ValueError("a request header holds a line break")
    return lines.encode("latin-1")
