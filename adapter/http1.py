"""A small HTTP/1.1 client for the one request the adapter makes: a POST to the gateway.

Chosen by measurement over aiohttp (README, "The upstream HTTP client"): one
``asyncio.Protocol`` per keep-alive connection with httptools' parser (llhttp) behind it, and no
task, no stream object and no timer beyond the one deadline per exchange. It does only what the
adapter needs: one request at a time per connection, a bounded LIFO pool whose idle connections
close after ``idle_seconds``, TLS with an optional client certificate (the ``ssl.SSLContext`` is
the caller's), a cap on the body it keeps, and the first ``Retry-After``. No redirects, no
cookies, no decompression, no proxy (a proxied gateway is reached through aiohttp, see
``adapter.transport``), no HTTP/2.

Every failure is raised as the adapter's own error, here and nowhere else: before the request's
bytes were handed to the socket it was never sent (``UpstreamUnavailable``,
``UpstreamCertificateInvalid``, ``UpstreamTimeout(sent=False)``); after, the outcome is unknown
(``UpstreamConnectionLost``, ``UpstreamTimeout``). A request is "sent" from the moment its bytes
are written to a connected socket: the same point aiohttp's ``on_request_headers_sent`` marked.

>>> pool = ConnectionPool("gateway.example", 443, context=tls, size=100, connect_timeout=5.0,
...                       max_bytes=2**20, idle_seconds=10.0)  # doctest: +SKIP
>>> status, body, retry_after = await pool.post(request, 30.0)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import ssl
import typing
from typing import Any

import httptools

from adapter.core.errors import (
    UpstreamCertificateInvalid,
    UpstreamConnectionLost,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = ["ConnectionPool", "Reply"]

Reply = tuple[int, bytes, "str | None"]
"""An answer: HTTP status, body, and the first ``Retry-After`` header's value (or None)."""

_NO_BODY_STATUSES = frozenset({204, 304})


class _TimedOut(Exception):
    """The exchange's deadline passed: set on the waiting future by its timer."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its answer, then waits for the next.

    The parser calls back into this object (``on_header``, ``on_body``, ...); the answer is
    handed over through ``_waiter``, a future the exchange awaits.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Reply] | None = None
        self._body = bytearray()
        self._over_cap = False
        self._header = b""
        self._retry_after: str | None = None
        self._framed = False  # Content-Length or chunked: the body's end is in the stream
        self._headers_done = False
        self._complete = False
        self._keep_alive = False  # read when the message completes: the parser forgets it after
        self.closed = False
        self.idle_since = 0.0

    # The pool's side.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection's transport is an asyncio.Transport; BaseTransport is the type.
        self._transport = typing.cast(asyncio.Transport, transport)

    def send(self, request: bytes, waiter: asyncio.Future[Reply]) -> None:
        """Write ``request``; its answer (or failure) will be set on ``waiter``."""
        self._waiter = waiter
        self._body = bytearray()
        self._over_cap = self._headers_done = self._complete = self._framed = False
        self._retry_after = None
        assert self._transport is not None  # noqa: S101 (connected before it is pooled)
        self._transport.write(request)

    def reusable(self) -> bool:
        """Whether the last answer ended at a message boundary on a connection that stays open."""
        return self._complete and self._keep_alive and not self.closed

    def close(self) -> None:
        """Close at once (idempotent); an exchange still waiting fails as lost."""
        if not self.closed and self._transport is not None:
            self._transport.abort()
        self.closed = True

    # asyncio's side.

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("malformed HTTP response: unexpected upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"malformed HTTP response: {exc}{_quote(data)}"))
        else:
            if self._over_cap and not self._complete:  # mid-message: the rest is not read
                self._fail(self._too_big())

    def eof_received(self) -> bool:
        if self._headers_done and not self._framed and not self._complete:
            self.on_message_complete()  # a body delimited by the connection's close
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool._forget(self)
        if self._waiter is not None and not self._waiter.done():
            why = f"{type(exc).__name__}: {exc}" if exc else "the gateway closed the connection"
            self._waiter.set_exception(UpstreamConnectionLost(why))

    # The parser's side (httptools calls these by name).

    def on_message_begin(self) -> None:
        self._framed = self._over_cap = False
        self._retry_after = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header = name.lower()
        if self._header == b"retry-after" and self._retry_after is None:
            self._retry_after = value.decode("latin-1")
        elif self._header == b"content-length":
            self._framed = True
            # Declared over the cap: refused now, rather than after reading up to the cap.
            if value.strip().isdigit() and int(value) > self._pool.max_bytes:
                self._over_cap = True
        elif self._header == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._headers_done = status >= 200  # an interim 1xx answer is skipped
        if status in _NO_BODY_STATUSES:
            self._framed = True

    def on_body(self, chunk: bytes) -> None:
        if self._over_cap:
            return
        self._body += chunk
        if len(self._body) > self._pool.max_bytes:
            self._over_cap = True
            self._body = bytearray()

    def on_message_complete(self) -> None:
        if not self._headers_done:
            return  # the end of a 1xx: the real answer follows
        self._complete = True
        self._keep_alive = self._framed and self._parser.should_keep_alive()
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        status = self._parser.get_status_code()
        if self._over_cap:
            waiter.set_exception(self._too_big())
        else:
            waiter.set_result((status, bytes(self._body), self._retry_after))

    def _too_big(self) -> UpstreamProtocolError:
        return UpstreamProtocolError(
            f"response body over the {self._pool.max_bytes}-byte cap",
            http_status=self._parser.get_status_code(),
        )

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.close()


class ConnectionPool:
    """Keep-alive connections to one origin: at most ``size`` at once, idle ones reused newest
    first and closed after ``idle_seconds``. Create it inside the running event loop."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        context: ssl.SSLContext | None,
        size: int,
        connect_timeout: float,
        max_bytes: int,
        idle_seconds: float,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._host, self._port = host, port
        self._ssl = context
        self._size = size
        self._connect_timeout = connect_timeout
        self.max_bytes = max_bytes
        self._idle_seconds = idle_seconds
        self._idle: collections.deque[_Connection] = collections.deque()
        self._busy: set[_Connection] = set()
        self._connecting = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def post(self, request: bytes, budget: float) -> Reply:
        """Send ``request`` (a whole HTTP/1.1 message) and bring back its answer.

        Raises the adapter's ``UpstreamError``s only (``UpstreamTimeout`` once ``budget`` passes).
        """
        loop = self._loop
        waiter: asyncio.Future[Reply] = loop.create_future()
        timer = loop.call_later(budget, _expire, waiter)
        connection: _Connection | None = None
        sent = False
        try:
            connection = await self._acquire(waiter, budget)
            if waiter.done():  # the deadline passed as the connection came: nothing goes out
                waiter.result()
            connection.send(request, waiter)
            sent = True
            return await waiter
        except _TimedOut:
            raise UpstreamTimeout(budget, sent=sent) from None
        finally:
            timer.cancel()
            if connection is not None:
                self._release(connection)

    async def _acquire(self, waiter: asyncio.Future[Reply], budget: float) -> _Connection:
        """A connected, idle connection: a pooled one, else a new one once there is room."""
        while True:
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed:
                    self._busy.add(connection)
                    return connection
            if len(self._busy) + self._connecting < self._size:
                return await self._connect(waiter)
            turn: asyncio.Future[None] = self._loop.create_future()
            self._queue.append(turn)
            try:
                await _either(turn, waiter)
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._wake_next()  # the turn given to this one goes to the next in line
                turn.cancel()
                raise

    async def _connect(self, waiter: asyncio.Future[Reply]) -> _Connection:
        self._connecting += 1
        opening = self._loop.create_task(self._open())
        try:
            connection: _Connection = await _either(opening, waiter)
        except BaseException:
            finished = not opening.cancel() and not opening.cancelled()
            if finished and opening.exception() is None:  # connected just as this one gave up
                opening.result().close()
            self._wake_next()  # the room this one would have taken is free again
            raise
        finally:
            self._connecting -= 1
        self._busy.add(connection)
        return connection

    async def _open(self) -> _Connection:
        where = f"{self._host}:{self._port}"
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await self._loop.create_connection(
                    lambda: _Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except ssl.SSLCertVerificationError as exc:
            why = (exc.verify_message or str(exc)).rstrip(".")
            raise UpstreamCertificateInvalid(f"{why} ({where})") from exc
        except TimeoutError as exc:
            raise UpstreamUnavailable(
                f"connect timeout: no connection to {where} in {self._connect_timeout:g}s"
            ) from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake (ssl.SSLError)
            raise UpstreamUnavailable(f"cannot connect to {where}: {_why(exc)}") from exc
        return connection

    def _release(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        if self._closed or not connection.reusable():
            connection.close()
        else:
            connection.idle_since = self._loop.time()
            self._idle.append(connection)
            if self._sweeper is None:
                self._sweeper = self._loop.call_later(self._idle_seconds / 2, self._sweep)
        self._wake_next()

    def _wake_next(self) -> None:
        while self._queue:
            turn = self._queue.popleft()
            if not turn.done():
                turn.set_result(None)
                return

    def _forget(self, connection: _Connection) -> None:
        """A connection closed: leave the pool's books, and give its room to a waiter."""
        with contextlib.suppress(ValueError):
            self._idle.remove(connection)

    def _sweep(self) -> None:
        """Close the connections idle longer than ``idle_seconds``; come back while any is idle."""
        self._sweeper = None
        cutoff = self._loop.time() - self._idle_seconds
        while self._idle and self._idle[0].idle_since <= cutoff:
            self._idle.popleft().close()
        if self._idle and not self._closed:
            self._sweeper = self._loop.call_later(self._idle_seconds / 2, self._sweep)

    async def aclose(self) -> None:
        """Close every connection, idle or busy; safe to call twice."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in [*self._idle, *self._busy]:
            connection.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run


def _quote(data: bytes) -> str:
    """The first header line in ``data`` that is not ``name: value``, quoted and cut short, for
    the error's message (the upstream client redacts messages before they leave)."""
    for line in data.split(b"\r\n")[1:]:
        name, colon, _ = line.partition(b":")
        if line and (not colon or not name or name != name.strip() or b" " in name):
            return f": {line[:100].decode('latin-1')!r}"
    return ""


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(_TimedOut())


async def _either(first: asyncio.Future[Any], waiter: asyncio.Future[Reply]) -> Any:
    """``first``'s result, unless ``waiter`` (the exchange's deadline) fails before it."""
    if not waiter.done():
        await asyncio.wait((first, waiter), return_when=asyncio.FIRST_COMPLETED)
    if first.done():
        return first.result()
    waiter.result()  # raises _TimedOut
    raise AssertionError("unreachable")


def _why(exc: OSError) -> str:
    """An OSError in the same words on every event loop: the system's text for its errno
    (asyncio says "Connect call failed (...)", uvloop "[Errno 111] Connection refused")."""
    if exc.errno is not None and not isinstance(exc, ssl.SSLError):
        return os.strerror(exc.errno).lower()
    return str(exc)
