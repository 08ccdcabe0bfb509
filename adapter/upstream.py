"""The call to the gateway: credentials, encoding, one HTTP exchange, and what the answer means.

``UpstreamClient`` is transport-agnostic; a ``Transport`` moves bytes. ``HttpTransport`` is the
real one on aiohttp (one ``ClientSession`` per process, a bounded keep-alive pool, TLS verified),
and the one place where aiohttp, OS and timeout errors become the adapter's own
(``_translate_errors``). ``EmbeddedTransport`` hands the bytes to the in-process gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import SimpleNamespace, TracebackType
from typing import Protocol

import aiohttp

from adapter import nvp
from adapter.breaker import CircuitBreaker
from adapter.config import MerchantCredentials, UpstreamSettings
from adapter.embedded import EmbeddedGateway
from adapter.errors import (
    AdapterOverloaded,
    GatewayRejected,
    MerchantNotAllowed,
    UpstreamConnectionLost,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from adapter.redaction import Redactor
from adapter.retry import RetryPolicy

log = logging.getLogger("adapter.upstream")

RETRYABLE_HTTP_STATUSES = frozenset({429, 502, 503, 504})
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


class EmbeddedTransport:
    """Hands the request to the in-process embedded gateway: no socket, same bytes."""

    def __init__(self, gateway: EmbeddedGateway, api_version: int) -> None:
        self._gateway = gateway
        self._version = str(api_version)

    async def post(self, body: bytes, budget: float) -> RawReply:
        reply = self._gateway.handle(self._version, body)
        return RawReply(reply.status, reply.body)

    async def aclose(self) -> None:
        return None


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
_NOT_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,  # refused, DNS, TLS handshake and certificate errors
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


def interpret(reply: RawReply, redact: Callable[[str], str] = str) -> dict[str, str]:
    """The gateway's fields for a successful answer; raise for every other kind of answer.

    Every name and value passes through ``redact`` first: a gateway that echoes the request
    must not hand the password to the caller or to a log line.
    """
    try:
        fields: dict[str, str] | None = {
            redact(name): redact(value) for name, value in nvp.decode(reply.body).items()
        }
        problem = "no result field"
    except nvp.NvpDecodeError as exc:
        fields, problem = None, f"not valid NVP ({exc})"
    if fields is None or nvp.RESULT not in fields:
        if reply.status in RETRYABLE_HTTP_STATUSES:
            raise UpstreamOverloaded(reply.status, retry_after=parse_retry_after(reply.retry_after))
        raise UpstreamProtocolError(f"HTTP {reply.status}, {problem}", http_status=reply.status)
    if fields[nvp.RESULT] == nvp.RESULT_ERROR:
        raise GatewayRejected(reply.status, fields)
    return fields


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class UpstreamClient:
    """Sends one NVP operation for a merchant, with the adapter's own credentials.

    Each call may take several attempts (``retry.RetryPolicy``), each one admitted by the
    circuit breaker and holding one of ``max_concurrent_calls`` slots while it runs.

    >>> async with UpstreamClient(transport, settings, merchants) as client:  # doctest: +SKIP
    ...     fields = await client.call({"apiOperation": "CREATE_SESSION", "merchant": "M1"})
    """

    def __init__(
        self,
        transport: Transport,
        settings: UpstreamSettings,
        merchants: Mapping[str, MerchantCredentials],
        *,
        on_circuit_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._transport = transport
        self._timeout = settings.timeout_seconds
        self._credentials = merchants
        self._retry = RetryPolicy(
            settings.retry_max_attempts,
            settings.retry_initial_backoff_seconds,
            settings.retry_max_backoff_seconds,
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent_calls)
        self._slot_count = settings.max_concurrent_calls
        self._queue_timeout = settings.queue_timeout_seconds
        self.breaker = CircuitBreaker(
            settings.breaker_failure_threshold,
            settings.breaker_cooldown_seconds,
            on_change=on_circuit_change,
        )
        self._redactors = {
            merchant: Redactor([c.password] if c.password is not None else [])
            for merchant, c in merchants.items()
        }
        """Per merchant: an echo in a reply can only hold the password this call sent."""
        self.redact = Redactor(c.password for c in merchants.values() if c.password is not None)
        """Scrubs every configured password from text that may hold any of them: tracebacks."""

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def call(
        self,
        fields: Mapping[str, str],
        time_left: float | None = None,
        *,
        repeatable: bool = False,
    ) -> dict[str, str]:
        """POST ``fields`` plus credentials; the gateway's fields when ``result`` is not ERROR.

        ``time_left`` is the caller's remaining time: it caps every attempt and every wait.
        ``repeatable`` says the operation may be sent again after the gateway turned it away.
        """
        merchant = fields[nvp.MERCHANT]
        credentials = self._credentials.get(merchant)
        if credentials is None:
            raise MerchantNotAllowed(merchant)
        body = nvp.encode({**fields, **_credential_fields(merchant, credentials)})
        redact = self._redactors[merchant]
        loop = asyncio.get_running_loop()
        deadline = None if time_left is None else loop.time() + time_left
        attempt = 1
        while True:
            try:
                return await self._attempt(body, deadline, redact)
            except UpstreamError as failure:
                failure.attempts = attempt
                delay = self._retry.delay(failure, attempt, repeatable)
                if delay is None or (deadline is not None and loop.time() + delay >= deadline):
                    raise
                log.debug("attempt %d failed (%s); retrying in %.3fs", attempt, failure, delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def _attempt(
        self, body: bytes, deadline: float | None, redact: Redactor
    ) -> dict[str, str]:
        """One attempt: a breaker admission, a slot, one HTTP exchange and its meaning."""
        loop = asyncio.get_running_loop()
        if deadline is not None and deadline <= loop.time():
            raise UpstreamTimeout(0.0, sent=False)
        probe = self.breaker.admit()
        outcome = self.breaker.abandoned
        try:
            await self._take_slot(deadline)
            try:
                budget = self._timeout
                if deadline is not None:
                    budget = min(budget, deadline - loop.time())
                reply = await self._transport.post(body, budget)
            finally:
                self._slots.release()
            fields = interpret(reply, redact)
        except _TRANSPORT_FAILURES:
            outcome = self.breaker.failed
            raise
        except (GatewayRejected, UpstreamProtocolError):
            outcome = self.breaker.succeeded  # the gateway is up, whatever it said
            raise
        else:
            outcome = self.breaker.succeeded
        finally:
            outcome(probe)
        return fields

    async def _take_slot(self, deadline: float | None) -> None:
        wait = self._queue_timeout
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - asyncio.get_running_loop().time()))
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError:
            raise AdapterOverloaded(self._slot_count, wait) from None


_TRANSPORT_FAILURES = (
    UpstreamUnavailable,
    UpstreamConnectionLost,
    UpstreamTimeout,
    UpstreamOverloaded,
)
"""Failures that say the gateway is unreachable or failing: the breaker counts these."""


def _credential_fields(merchant: str, credentials: MerchantCredentials) -> Mapping[str, str]:
    if credentials.password is None:  # certificate authentication: the TLS client cert speaks
        return {}
    return {
        nvp.API_USERNAME: nvp.USERNAME_PREFIX + merchant,
        nvp.API_PASSWORD: credentials.password.reveal(),
    }
