"""The adapter's one HTTP/1.1 client: a POST to the gateway, directly or through a proxy.

Why hand-written, and why the proxy is spoken here too: measured against aiohttp (README, "The
upstream HTTP client"), one ``asyncio.Protocol`` per keep-alive connection with httptools' parser
(llhttp) behind it, and no task, stream object or timer beyond the one deadline per exchange, is
the faster path; and the guarantees CONTRACT §9 and §10 build on need the socket itself: whether
a byte of the request was written, whether a pooled connection's peer had already closed or
spoken, where an answer ends. Through aiohttp (the proxy path until now) an answer sent before the
request was written reached the caller as OK, a head past its limit was refused but the connection
read on, and a pooled connection the gateway had closed was reported "outcome unknown". So the
proxy is spoken here: ``CONNECT`` then ``loop.start_tls`` for an https gateway, the absolute-form
request line for an http one; the same parser, bounds and classification serve every way.

Rules (CONTRACT §10):

- every read is bounded: the status line and each header line ``MAX_LINE_BYTES``, at most
  ``MAX_HEADERS`` header lines, the whole head ``MAX_HEAD_BYTES`` (counted on the bytes fed to the
  parser before the head completes, since llhttp holds a header value until it ends), the body
  the size cap, and chunk-size lines plus trailers ``MAX_FRAMING_BYTES`` (counted on the bytes fed
  after the head). Past one: ``ProtocolViolation``, the connection aborted, its buffers dropped;
- ``Retry-After`` comes from the head only, never from a trailer;
- a connection is reused only after a complete, well-framed answer with nothing after it, while
  idle less than ``idle_seconds``, and only if its socket holds nothing (no FIN, no stray byte)
  the moment before the request is written; a connection closed or spoken on before the write
  fails as not written (``PeerClosed`` with ``written`` False), so it is sent again or refused at
  once, never waited on.

Every failure goes through ``classify.upstream_error`` in ``ConnectionPool.post``, and nowhere
else. No redirects, cookies, decompression or HTTP/2.

>>> pool = ConnectionPool(Route("gateway.example", 443, tls=context), size=100,
...                       connect_timeout=5.0, max_bytes=2**20, idle_seconds=4.0)  # doctest: +SKIP
>>> reply = await pool.post(request, 30.0)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import socket
import ssl
import typing
from dataclasses import dataclass, field
from typing import Any

import httptools

from adapter.upstream.classify import (
    DeadlinePassed,
    PeerClosed,
    ProtocolViolation,
    TunnelRefused,
    upstream_error,
)

__all__ = [
    "MAX_FRAMING_BYTES",
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "MAX_LINE_BYTES",
    "ConnectionPool",
    "Reply",
    "Route",
]

MAX_LINE_BYTES = 8 * 1024
MAX_HEADERS = 100
MAX_HEAD_BYTES = 64 * 1024
MAX_FRAMING_BYTES = 64 * 1024
_FEED_BYTES = 64 * 1024
"""Bytes fed to the parser at once after the head: bounds how far a check can be overshot."""
_NO_BODY_STATUSES = frozenset({204, 304})
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
_TUNNEL_STATUS = re.compile(rb"HTTP/1\.[01] ([0-9]{3})[ \r]")
_SPOKE_FIRST = "the peer closed or answered the connection before the request was written"


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer as received: status, body, and the head's ``Retry-After`` (or None)."""

    status: int
    body: bytes
    retry_after: str | None = None


@dataclass(frozen=True)
class Route:
    """Where connections go: ``host``:``port`` (the gateway, or the proxy when ``tunnel`` is set
    or the requests are absolute-form), ``tunnel`` the CONNECT request to send first, ``tls`` the
    context for the gateway (``server_hostname`` its name) or None for plain HTTP."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None
    tunnel: bytes | None = field(default=None, repr=False)  # may carry Proxy-Authorization
    shown: str = ""
    """How errors name the destination: ``host:port``, and the proxy's when there is one."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its answer, then waits for the next.

    The parser calls back into this object (``on_header``, ``on_body``, ...); the answer is handed
    over through ``_waiter``, a future the exchange awaits. Before that, a tunnelled connection
    reads the proxy's answer to CONNECT through ``_tunnel``.
    """

    def __init__(self, pool: ConnectionPool, *, tls: bool) -> None:
        self._pool = pool
        self._tls = tls
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Reply] | None = None
        self._tunnel: asyncio.Future[None] | None = None
        self._tunnel_head = bytearray()
        self._body = bytearray()
        self._problem: str | None = None
        self._over_cap = False
        self._retry_after: str | None = None
        self._framed = False  # Content-Length or chunked: the body's end is in the stream
        self._headers_done = False
        self._complete = False
        self._after = False  # bytes came after the complete answer
        self._keep_alive = False  # read when the message completes: the parser forgets it after
        self._head_left = MAX_HEAD_BYTES
        self._fed_after_head = 0
        self._body_bytes = 0
        self._status_bytes = 0
        self._header_lines = 0
        self.spoken = False  # the peer sent bytes nobody asked for
        self.closed = False
        self.idle_since = 0.0

    # The pool's side.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection's transport is an asyncio.Transport; BaseTransport is the type.
        self._transport = typing.cast(asyncio.Transport, transport)

    async def open_tunnel(self, request: bytes) -> None:
        """Send CONNECT and wait for the proxy's 2xx; raises ``TunnelRefused`` or ``PeerClosed``."""
        if self.closed or self.spoken or self._transport is None:
            raise PeerClosed("the proxy closed or spoke on the connection before CONNECT")
        self._tunnel = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        try:
            await self._tunnel
        finally:
            self._tunnel = None
            self._tunnel_head = bytearray()

    def upgraded(self, transport: asyncio.Transport) -> None:
        """The tunnel now carries TLS: requests go through ``transport``."""
        self._transport = transport

    def quiet(self) -> bool:
        """Open, and nothing from the peer waiting on its socket: no FIN, no byte (on an idle
        TLS connection, most likely the gateway's close_notify)."""
        if self.closed or self.spoken or self._transport is None:
            return False
        return _peek(self._transport) is None

    def send(self, request: bytes, waiter: asyncio.Future[Reply], *, fresh: bool) -> None:
        """Write ``request``; its answer (or failure) will be set on ``waiter``.

        A pooled connection was found ``quiet`` as it was taken; a ``fresh`` one is checked here
        for a FIN, or a byte of plain HTTP (over TLS one may be a session ticket, harmless).
        Raises ``PeerClosed`` (nothing written) when the peer closed the connection or spoke on it
        before the write.
        """
        transport = self._transport
        if self.closed or self.spoken or transport is None:
            raise PeerClosed(_SPOKE_FIRST)
        if fresh:
            waiting = _peek(transport)
            if waiting == b"" or (waiting is not None and not self._tls):
                self.close()
                raise PeerClosed(_SPOKE_FIRST)
        self._reset(waiter)
        try:
            transport.write(request)
        except RuntimeError:  # uvloop: the handle closed between the check and the write
            self._waiter = None
            self.close()
            raise PeerClosed("the connection closed before the request was written") from None

    def reusable(self) -> bool:
        """Whether the last answer ended at a message boundary, with nothing after it, on a
        connection that stays open."""
        return self._complete and self._keep_alive and not self._after and not self.closed

    def close(self) -> None:
        """Close at once (idempotent); an exchange still waiting fails as lost."""
        if not self.closed and self._transport is not None:
            self._transport.abort()
        self.closed = True
        self._body = bytearray()

    def _reset(self, waiter: asyncio.Future[Reply]) -> None:
        self._waiter = waiter
        self._body = bytearray()
        self._problem = None
        self._over_cap = self._headers_done = self._complete = self._framed = False
        self._after = False
        self._retry_after = None
        self._head_left = MAX_HEAD_BYTES
        self._fed_after_head = self._body_bytes = self._status_bytes = self._header_lines = 0

    # asyncio's side.

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel_data(data)
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.spoken = True  # bytes nobody asked for: the connection is out of step
            self.close()
            return
        try:
            self._feed(memoryview(data))
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolViolation("malformed HTTP response: unexpected upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolViolation(f"malformed HTTP response: {exc}{_quote(data)}"))
        except ProtocolViolation as exc:
            self._fail(exc)

    def _feed(self, data: memoryview) -> None:
        """Feed ``data`` to the parser in bounded pieces, checking the bounds after each."""
        while data and not self._complete:
            if self._headers_done:
                piece = data[:_FEED_BYTES]
                self._fed_after_head += len(piece)
            else:
                piece = data[: self._head_left]
                self._head_left -= len(piece)
            data = data[len(piece) :]
            self._parser.feed_data(piece)
            self._check()
        if data:
            self._after = True  # an answer's end, then more: never reused

    def _check(self) -> None:
        if self._problem is not None:
            raise ProtocolViolation(self._problem, self._parser.get_status_code())
        if not self._headers_done and self._head_left == 0:
            raise ProtocolViolation(f"response head over {MAX_HEAD_BYTES} bytes")
        if self._fed_after_head - self._body_bytes > MAX_FRAMING_BYTES:
            raise ProtocolViolation(f"chunk framing and trailers over {MAX_FRAMING_BYTES} bytes")
        if self._over_cap and not self._complete:  # mid-message: the rest is not read
            raise self._too_big()

    def eof_received(self) -> bool:
        if self._headers_done and not self._framed and not self._complete:
            self.on_message_complete()  # a body delimited by the connection's close
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._body = bytearray()
        self._pool._forget(self)
        why = f"{type(exc).__name__}: {exc}" if exc else "the peer closed the connection"
        if self._tunnel is not None and not self._tunnel.done():
            self._tunnel.set_exception(PeerClosed(f"the proxy closed the connection ({why})"))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(PeerClosed(why))

    def _tunnel_data(self, data: bytes) -> None:
        """The proxy's answer to CONNECT: a bounded head, a 2xx status, and nothing after it."""
        tunnel = self._tunnel
        assert tunnel is not None  # noqa: S101 (only called while tunnelling)
        self._tunnel_head += data
        end = self._tunnel_head.find(b"\r\n\r\n")
        if tunnel.done() or (end < 0 and len(self._tunnel_head) <= MAX_HEAD_BYTES):
            return
        failure = _tunnel_failure(self._tunnel_head, end)
        if failure is None:
            tunnel.set_result(None)
        else:
            tunnel.set_exception(failure)
            self.close()

    # The parser's side (httptools calls these by name).

    def on_message_begin(self) -> None:
        if self._complete:  # a second message after the answer
            self._after = True
            return
        self._framed = self._over_cap = False
        self._retry_after = None

    def on_status(self, status: bytes) -> None:
        self._status_bytes += len(status)
        if self._status_bytes > MAX_LINE_BYTES:
            self._problem = f"status line over {MAX_LINE_BYTES} bytes"

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines += 1
        if self._header_lines > MAX_HEADERS:
            self._problem = f"more than {MAX_HEADERS} header lines"
        elif len(name) + len(value) > MAX_LINE_BYTES:
            self._problem = f"a header line over {MAX_LINE_BYTES} bytes"
        if self._headers_done:
            return  # a trailer: bounded, never read (Retry-After comes from the head only)
        lower = name.lower()
        if lower == b"retry-after" and self._retry_after is None:
            self._retry_after = value.decode("latin-1")
        elif lower == b"content-length":
            self._framed = True
            # Declared over the cap: refused now, rather than after reading up to the cap.
            if value.strip().isdigit() and int(value) > self._pool.max_bytes:
                self._over_cap = True
        elif lower == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._headers_done = status >= 200  # an interim 1xx answer is skipped
        if status in _NO_BODY_STATUSES:
            self._framed = True

    def on_body(self, chunk: bytes) -> None:
        self._body_bytes += len(chunk)
        if self._over_cap:
            return
        self._body += chunk
        if len(self._body) > self._pool.max_bytes:
            self._over_cap = True
            self._body = bytearray()

    def on_message_complete(self) -> None:
        if not self._headers_done or self._complete:
            return  # the end of a 1xx (the real answer follows), or of a message after the answer
        self._complete = True
        self._keep_alive = self._framed and self._parser.should_keep_alive()
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._problem is not None:
            waiter.set_exception(ProtocolViolation(self._problem, self._parser.get_status_code()))
        elif self._over_cap:
            waiter.set_exception(self._too_big())
        else:
            status = self._parser.get_status_code()
            waiter.set_result(Reply(status, bytes(self._body), self._retry_after))
        self._body = bytearray()

    def _too_big(self) -> ProtocolViolation:
        return ProtocolViolation(
            f"response body over the {self._pool.max_bytes}-byte cap",
            http_status=self._parser.get_status_code(),
        )

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.close()


class ConnectionPool:
    """Keep-alive connections along one route: at most ``size`` at once, idle ones reused newest
    first and closed once idle ``idle_seconds``. Create it inside the running event loop."""

    def __init__(
        self,
        route: Route,
        *,
        size: int,
        connect_timeout: float,
        max_bytes: int,
        idle_seconds: float,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._route = route
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

        Raises the adapter's ``UpstreamError``s only, typed by whether the request was written
        (``classify``); ``UpstreamReadTimeout`` or ``UpstreamDeadlineBeforeSend`` once ``budget``
        passes.
        """
        loop = self._loop
        waiter: asyncio.Future[Reply] = loop.create_future()
        timer = loop.call_later(budget, _expire, waiter)
        connection: _Connection | None = None
        written = False
        try:
            connection, fresh = await self._acquire(waiter)
            if waiter.done():  # the deadline passed as the connection came: nothing goes out
                waiter.result()
            connection.send(request, waiter, fresh=fresh)
            written = True
            return await waiter
        except (DeadlinePassed, PeerClosed, ProtocolViolation, TunnelRefused, OSError) as exc:
            where = self._route.shown
            raise upstream_error(exc, written=written, budget=budget, where=where) from None
        finally:
            timer.cancel()
            if connection is not None:
                self._release(connection)

    async def _acquire(self, waiter: asyncio.Future[Reply]) -> tuple[_Connection, bool]:
        """A connected connection, and whether it is new: a quiet pooled one, else a new one once
        there is room."""
        while True:
            while self._idle:
                connection = self._idle.pop()
                young = self._loop.time() - connection.idle_since < self._idle_seconds
                if young and connection.quiet():
                    self._busy.add(connection)
                    return connection, False
                connection.close()  # closed, spoken on, or too old: never written to
            if len(self._busy) + self._connecting < self._size:
                return await self._connect(waiter), True
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
        """A new connection: TCP, then the proxy's tunnel and TLS through it, or TLS directly."""
        route = self._route
        connection = _Connection(self, tls=route.tls is not None)
        try:
            async with asyncio.timeout(self._connect_timeout):
                if route.tunnel is None:
                    await self._loop.create_connection(
                        lambda: connection,
                        route.host,
                        route.port,
                        ssl=route.tls,
                        server_hostname=route.server_hostname if route.tls else None,
                    )
                else:
                    await self._tunnel(connection, route.tunnel)
        except TimeoutError:
            connection.close()
            raise TimeoutError(
                f"connect timeout: no connection in {self._connect_timeout:g}s"
            ) from None
        except BaseException:
            connection.close()
            raise
        return connection

    async def _tunnel(self, connection: _Connection, request: bytes) -> None:
        route = self._route
        transport, _ = await self._loop.create_connection(
            lambda: connection, route.host, route.port
        )
        await connection.open_tunnel(request)
        if route.tls is not None:
            secure = await self._loop.start_tls(
                transport, connection, route.tls, server_hostname=route.server_hostname
            )
            if secure is None:  # the proxy closed the connection during the handshake
                raise PeerClosed("the proxy closed the connection during the TLS handshake")
            connection.upgraded(secure)

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
        """A connection closed: leave the pool's books."""
        with contextlib.suppress(ValueError):
            self._idle.remove(connection)

    def _sweep(self) -> None:
        """Close the connections idle ``idle_seconds`` or more; come back while any is idle."""
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


def _tunnel_failure(head: bytearray, end: int) -> Exception | None:
    """What is wrong with the proxy's answer to CONNECT (``end``: where its head ends, or -1),
    or None for a 2xx head with nothing after it (TLS has not begun: no byte may follow)."""
    status = _TUNNEL_STATUS.match(head)
    if end < 0 or status is None:
        return PeerClosed("the proxy's answer to CONNECT is not HTTP")
    if not 200 <= int(status[1]) < 300:  # anything but 2xx: no tunnel
        return TunnelRefused(int(status[1]))
    if end + 4 != len(head):
        return PeerClosed("the proxy sent bytes after its answer to CONNECT")
    return None


def _peek(transport: asyncio.BaseTransport) -> bytes | None:
    """What waits unread on the transport's socket: None (nothing), b"" (the peer's FIN), or a
    first byte. A socket that cannot be asked reads as closed."""
    raw = transport.get_extra_info("socket")
    if raw is None:
        return b""
    # A socket object over the transport's descriptor, detached after: never closes it.
    sock = socket.socket(raw.family, raw.type, raw.proto, raw.fileno())
    try:
        return sock.recv(1, _PEEK)
    except BlockingIOError:
        return None
    except OSError:
        return b""
    finally:
        sock.detach()


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
        waiter.set_exception(DeadlinePassed())


async def _either(first: asyncio.Future[Any], waiter: asyncio.Future[Reply]) -> Any:
    """``first``'s result, unless ``waiter`` (the exchange's deadline) fails before it."""
    if not waiter.done():
        await asyncio.wait((first, waiter), return_when=asyncio.FIRST_COMPLETED)
    if first.done():
        return first.result()
    waiter.result()  # raises DeadlinePassed
    raise AssertionError("unreachable")
