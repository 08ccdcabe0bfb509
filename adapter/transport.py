"""The HTTP transport: one encoded NVP request out, the gateway's raw answer back.

``Transport`` is the seam between the upstream client and whatever carries the bytes;
``gateway_transport`` builds the real one for the settings. A gateway reached directly gets
``Http1Transport``, on the adapter's own small HTTP/1.1 client (``adapter.http1``: a bounded
keep-alive pool, TLS verified, chosen by measurement, see README); a gateway reached through an
HTTP CONNECT proxy gets ``HttpTransport`` on aiohttp (one ``ClientSession`` per process), which
is the one place where aiohttp, OS and timeout errors become the adapter's own
(``_translate_errors``). The embedded gateway plugs into the same seam from
``adapter/embedded/``; nothing here knows about it.

The proxy is ``upstream.proxy`` when set; otherwise the standard ``https_proxy`` / ``http_proxy``
and ``no_proxy`` environment variables (either case) for the gateway's URL, read once when the
transport is built. aiohttp's ``trust_env`` is not used: it would also read ``~/.netrc``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import ssl
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import MappingProxyType, SimpleNamespace
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiohttp

from adapter import http1
from adapter.config import UpstreamSettings, proxy_url, redact_url
from adapter.core import nvp
from adapter.core.errors import (
    UpstreamCertificateInvalid,
    UpstreamConnectionLost,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "Http1Transport",
    "HttpTransport",
    "RawReply",
    "Transport",
    "build_ssl_context",
    "gateway_transport",
]

POOL_IDLE_SECONDS = 10.0
"""An idle pooled connection is dropped after this: sooner than servers close idle connections
(the embedded gateway after 15 s), so a request never goes out on a connection the server is
closing at that moment, which would leave its outcome unknown."""
_REQUEST_HEADERS = {"User-Agent": "nvp-adapter", "Accept": "*/*", "Content-Type": nvp.CONTENT_TYPE}
log = logging.getLogger("adapter.transport")


@dataclass(frozen=True, slots=True)
class RawReply:
    """An HTTP answer as received: status, the one header the adapter reads, and the body."""

    status: int
    body: bytes
    retry_after: str | None = None


class Transport(Protocol):
    """Moves one encoded NVP request to the gateway and brings back its raw answer."""

    async def post(
        self, body: bytes, budget: float, headers: Mapping[str, str] | None = None
    ) -> RawReply:
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


@dataclass(frozen=True)
class ProxyRoute:
    """How requests reach the gateway: through the proxy at ``url``, or directly (``url`` None).

    ``url`` never holds user info: the credentials it had travel as ``headers``
    (``Proxy-Authorization``), which no repr shows, so that no error aiohttp raises (whose
    connection key repr holds the proxy URL) can carry them.
    """

    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    source: str = ""
    """Where the proxy came from: ``upstream.proxy`` or the environment variable's name."""
    shown: str = ""
    """The proxy URL as configured, user info redacted: fit for a log line."""


def proxy_route(settings: UpstreamSettings) -> ProxyRoute:
    """The proxy for the gateway's URL: ``upstream.proxy``, else the environment's, else none.

    With no proxy, ``source`` names the ``no_proxy`` variable when that is why.
    Raises ``ConfigError`` (with the URL's user info redacted) for a proxy URL it cannot use.
    """
    if settings.proxy is not None:
        return _route(settings.proxy, "upstream.proxy")
    gateway = urlsplit(settings.url)
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(gateway.scheme)
    if not url:
        return ProxyRoute()
    if _bypass(gateway.netloc, proxies):
        return ProxyRoute(source=_variable("no"))
    return _route(url if "://" in url else f"http://{url}", _variable(gateway.scheme))


# In the stdlib since 3.0 but not in typeshed; ``proxy_bypass`` is typed, but on macOS and Windows
# it asks the system's settings rather than ``no_proxy``.
_bypass: Callable[[str, Mapping[str, str]], bool]
_bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
"""Whether ``no_proxy`` names the host."""


def _variable(scheme: str) -> str:
    """The name of the variable ``getproxies_environment`` read: the lower-case one wins."""
    name = f"{scheme}_proxy"
    return name if os.environ.get(name) else name.upper()


def _route(url: str, source: str) -> ProxyRoute:
    parts = proxy_url(url, source)  # the setting's rule, for the variables too
    shown = redact_url(url)
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    if parts.username is None:
        return ProxyRoute(bare, source=source, shown=shown)
    user, password = unquote(parts.username), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    headers = MappingProxyType({"Proxy-Authorization": f"Basic {token}"})
    return ProxyRoute(bare, headers, source, shown)


def gateway_transport(settings: UpstreamSettings) -> Transport:
    """The transport for the gateway at ``settings.url``: aiohttp through a proxy, else the
    adapter's own HTTP/1.1 client. Create it inside the running event loop.

    Raises ``ConfigError`` for a proxy URL it cannot use; ``OSError`` or ``ssl.SSLError`` for TLS
    files it cannot load.
    """
    route = proxy_route(settings)
    if route.url is not None:
        return HttpTransport(settings, route)
    if route.source:
        log.info("gateway requests go direct: %s names the gateway's host", route.source)
    return Http1Transport(settings)


class Http1Transport:
    """POSTs to ``{url}/api/nvp/version/{N}`` over ``http1.ConnectionPool``, directly.

    The request's head is built once; each call adds its own headers, its length and its body.
    """

    def __init__(self, settings: UpstreamSettings) -> None:
        parts = urlsplit(settings.endpoint())
        host = parts.hostname or ""
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        authority = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            authority += f":{port}"
        head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {authority}"]
        head += [f"{name}: {value}" for name, value in _REQUEST_HEADERS.items()]
        self._head = ("\r\n".join(head) + "\r\n").encode("ascii")
        context = build_ssl_context(settings)  # for http too: a bad TLS file fails at start
        self._pool = http1.ConnectionPool(
            host,
            port,
            context=context if secure else None,
            size=settings.pool_size,
            connect_timeout=settings.connect_timeout_seconds,
            max_bytes=settings.max_response_bytes,
            idle_seconds=POOL_IDLE_SECONDS,
        )

    async def post(
        self, body: bytes, budget: float, headers: Mapping[str, str] | None = None
    ) -> RawReply:
        request = self._head
        if headers:
            request += _header_lines(headers)
        request += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        status, data, retry_after = await self._pool.post(request, budget)
        return RawReply(status, data, retry_after)

    async def aclose(self) -> None:
        await self._pool.aclose()


def _header_lines(headers: Mapping[str, str]) -> bytes:
    """``name: value`` lines; refuses a line break, which would end the header early."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
        raise ValueError("a request header holds a line break")
    return lines.encode("latin-1")


class HttpTransport:
    """POSTs to ``{url}/api/nvp/version/{N}`` over one pooled aiohttp ``ClientSession``.

    Create it inside the running event loop; close it with ``aclose``. Raises ``ConfigError``
    for a proxy URL (setting or environment) it cannot use.
    """

    def __init__(self, settings: UpstreamSettings, route: ProxyRoute | None = None) -> None:
        self._proxy = proxy_route(settings) if route is None else route
        if self._proxy.url is not None:
            log.info(
                "gateway requests go through the proxy %s (from %s)",
                self._proxy.shown,
                self._proxy.source,
            )
        elif self._proxy.source:
            log.info("gateway requests go direct: %s names the gateway's host", self._proxy.source)
        self._headers = {k: v for k, v in _REQUEST_HEADERS.items() if k != "User-Agent"}
        if self._proxy.url is not None and urlsplit(settings.url).scheme == "http":
            # No tunnel for plain http: the request itself goes to the proxy, so it carries them.
            self._headers.update(self._proxy.headers)
        self._endpoint = settings.endpoint()
        self._connect_timeout = settings.connect_timeout_seconds
        self._max_bytes = settings.max_response_bytes
        connector = aiohttp.TCPConnector(
            limit=settings.pool_size,
            ssl=build_ssl_context(settings),
            keepalive_timeout=POOL_IDLE_SECONDS,
        )
        sending = aiohttp.TraceConfig()
        sending.on_request_headers_sent.append(_mark_sent)
        self._session = aiohttp.ClientSession(
            connector=connector,
            trace_configs=[sending],
            skip_auto_headers=("User-Agent",),
            headers={"User-Agent": "nvp-adapter"},
        )

    async def post(
        self, body: bytes, budget: float, headers: Mapping[str, str] | None = None
    ) -> RawReply:
        limits = aiohttp.ClientTimeout(total=budget, connect=min(self._connect_timeout, budget))
        progress = {_SENT: False}
        with _translate_errors(budget, progress):
            async with self._session.post(
                self._endpoint,
                data=body,
                headers={**self._headers, **headers} if headers else self._headers,
                timeout=limits,
                trace_request_ctx=progress,
                proxy=self._proxy.url,
                proxy_headers=self._proxy.headers or None,
            ) as response:
                data = await self._read_capped(response)
                return RawReply(response.status, data, response.headers.get("Retry-After"))

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        declared = response.content_length
        if declared is None or declared <= self._max_bytes:
            data = bytearray()
            while len(data) <= self._max_bytes:
                chunk = await response.content.read(self._max_bytes + 1 - len(data))
                if not chunk:
                    return bytes(data)
                data += chunk
        response.close()  # drops the connection, unless aiohttp already holds the whole body
        raise UpstreamProtocolError(
            f"response body over the {self._max_bytes}-byte cap", http_status=response.status
        )

    async def aclose(self) -> None:
        await self._session.close()


# Most specific first: ClientConnectorError is itself a ClientOSError, and the certificate and
# SSL errors are ClientConnectorErrors. ``sent`` says whether the request may have left.
_CERTIFICATE_REFUSED: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorCertificateError,  # untrusted issuer, expired, another host name
    ssl.SSLCertVerificationError,  # the same, should one ever arrive unwrapped
)
_NOT_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,  # refused, DNS, TLS handshake; the proxy's too
    aiohttp.ConnectionTimeoutError,  # the connect timeout, before anything was written
    aiohttp.ClientSSLError,
)
_LOST: tuple[type[BaseException], ...] = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientPayloadError,  # body cut short (Content-Length larger than sent, bad chunking)
    aiohttp.ClientOSError,  # reset by peer and friends, after the connection was made
)


@contextlib.contextmanager
def _translate_errors(timeout: float, progress: Mapping[str, bool]) -> Iterator[None]:
    """The one place where aiohttp, OS and timeout errors become the adapter's own.

    ``progress`` says whether the request's headers went out: a timeout before that (the caller's
    deadline during a slow connect or a wait for a pooled connection) never sent anything.
    """
    try:
        yield
    except _CERTIFICATE_REFUSED as exc:
        raise UpstreamCertificateInvalid(_describe_certificate(exc)) from exc
    except aiohttp.ClientHttpProxyError as exc:  # CONNECT answered with non-200: never sent
        raise UpstreamUnavailable(_describe_proxy_refusal(exc)) from exc
    except _NOT_SENT as exc:
        raise UpstreamUnavailable(_describe(exc)) from exc
    except _LOST as exc:
        if not progress[_SENT]:  # e.g. a proxy that hung up on CONNECT: nothing left
            raise UpstreamUnavailable(_describe(exc)) from exc
        raise UpstreamConnectionLost(_describe(exc)) from exc
    except TimeoutError as exc:  # aiohttp's read timeouts subclass it; so does the total timeout
        raise UpstreamTimeout(timeout, sent=progress[_SENT]) from exc
    except aiohttp.ClientResponseError as exc:  # a malformed status line or headers
        raise UpstreamProtocolError(f"malformed HTTP response: {exc.message}") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamConnectionLost(_describe(exc)) from exc


_SENT = "sent"


async def _mark_sent(
    _: aiohttp.ClientSession,
    context: SimpleNamespace,
    __: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    """Trace hook: the request's headers were written, so the gateway may see the request."""
    context.trace_request_ctx[_SENT] = True


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _describe_certificate(exc: BaseException) -> str:
    """OpenSSL's own words for what is wrong with the certificate, and whose it is."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
        why = getattr(cause, "verify_message", None) or str(cause)
        return f"{why.rstrip('.')} ({exc.host}:{exc.port})"
    return getattr(exc, "verify_message", None) or str(exc)


def _describe_proxy_refusal(exc: aiohttp.ClientHttpProxyError) -> str:
    """The proxy's status alone: its reason phrase and headers are the proxy's to choose."""
    try:
        phrase = f" {HTTPStatus(exc.status).phrase}"
    except ValueError:
        phrase = ""
    return f"the proxy refused the tunnel (HTTP {exc.status}{phrase})"
