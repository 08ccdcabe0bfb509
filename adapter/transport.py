"""The HTTP transport: one encoded NVP request out, the gateway's raw answer back.

``Transport`` is the seam between the upstream client and whatever carries the bytes.
``HttpTransport`` is the real one on aiohttp (one ``ClientSession`` per process, a bounded
keep-alive pool, TLS verified) and the one place where aiohttp, OS and timeout errors become the
adapter's own (``_translate_errors``). The embedded gateway plugs into the same seam from
``adapter/embedded/``; nothing here knows about it.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Protocol

import aiohttp

from adapter import nvp
from adapter.config import UpstreamSettings
from adapter.errors import (
    UpstreamCertificateInvalid,
    UpstreamConnectionLost,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = ["HttpTransport", "RawReply", "Transport", "build_ssl_context"]

_REQUEST_HEADERS = {"Content-Type": nvp.CONTENT_TYPE, "Accept": "*/*"}


@dataclass(frozen=True, slots=True)
class RawReply:
    """An HTTP answer as received: status, the one header the adapter reads, and the body."""

    status: int
    body: bytes
    retry_after: str | None = None


class Transport(Protocol):
    """Moves one encoded NVP request to the gateway and brings back its raw answer."""

    async def post(self, body: bytes, budget: float) -> RawReply:
        """Send ``body``; raise only the adapter's own errors; give up after ``budget`` s."""
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


class HttpTransport:
    """POSTs to ``{url}/api/nvp/version/{N}`` over one pooled aiohttp ``ClientSession``.

    Create it inside the running event loop; close it with ``aclose``.
    """

    def __init__(self, settings: UpstreamSettings) -> None:
        self._endpoint = settings.endpoint()
        self._connect_timeout = settings.connect_timeout_seconds
        self._max_bytes = settings.max_response_bytes
        connector = aiohttp.TCPConnector(
            limit=settings.pool_size,
            ssl=build_ssl_context(settings),
            keepalive_timeout=30,
        )
        sending = aiohttp.TraceConfig()
        sending.on_request_headers_sent.append(_mark_sent)
        self._session = aiohttp.ClientSession(
            connector=connector,
            trace_configs=[sending],
            skip_auto_headers=("User-Agent",),
            headers={"User-Agent": "nvp-adapter"},
        )

    async def post(self, body: bytes, budget: float) -> RawReply:
        limits = aiohttp.ClientTimeout(total=budget, connect=min(self._connect_timeout, budget))
        progress = {_SENT: False}
        with _translate_errors(budget, progress):
            async with self._session.post(
                self._endpoint,
                data=body,
                headers=_REQUEST_HEADERS,
                timeout=limits,
                trace_request_ctx=progress,
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
    aiohttp.ClientConnectorError,  # refused, DNS, TLS handshake
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
    except _NOT_SENT as exc:
        raise UpstreamUnavailable(_describe(exc)) from exc
    except _LOST as exc:
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
