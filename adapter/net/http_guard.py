"""Bounds on an aiohttp server's connections: how many are open, how long a request may take to
arrive, how long a kept-alive connection may sit idle; refusals logged once per interval.

Both HTTP faces of the project use it: the embedded gateway (``nvp-adapter gateway``) and the
adapter's ``/metrics`` listener (``adapter.metrics``).

Why this is written here rather than configured: aiohttp's server has no limit on open
connections and no header-read timeout (a client that sends one header line every few seconds
holds its connection, and a file descriptor, for ever), and its idle keep-alive timeout is an
hour. uvicorn, for one, offers a keep-alive timeout and a concurrency limit (answering 503 once
it has read a request), but no limit on the time a request takes to arrive either, and moving
would mean a second web stack for one handler. So each accepted connection gets a small
protocol, ``_GuardedConnection``, that sits in front of aiohttp's own ``RequestHandler`` and
passes every byte through to it:

- past ``max_connections`` open connections, a new one is aborted in ``connection_made``, before
  a byte is read, and never reaches aiohttp;
- a request's headers and body must arrive within ``request_timeout_seconds`` of the connection
  opening (the TLS handshake included), or on a kept-alive connection of the first byte of the
  next request, else the connection is aborted;
- between a response and the next request's first byte a connection is idle, and it is closed
  after ``keepalive_timeout_seconds``.

TLS is started here too (``loop.start_tls``), not by the listening socket, so that a client that
never finishes its handshake is counted against the cap and the timeout like any other, and so
that each new connection takes the TLS context in force when it arrives (a reload never touches a
connection already open).

Refusals (the cap, a request timeout, an ``accept()`` that failed for want of file descriptors)
are counted and logged as one WARNING line per interval, never one line, let alone a traceback,
per connection.

A request aiohttp refuses (one it cannot parse, or whose handler failed) is answered with a fixed
text and logged as one line naming the error's type, through a ``RateLimitedLog`` (at most 10
lines a second, then a count of those suppressed): aiohttp's own ``handle_error`` logs a
traceback whose message quotes the raw request, body and ``apiPassword`` included, and echoes it
in the 400 answer. ``QuietRequestHandler`` overrides that hook.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import typing
from collections import Counter
from collections.abc import Awaitable, Callable
from enum import Enum
from http import HTTPStatus
from typing import Any

from aiohttp import web

from adapter.net.addresses import format_address

__all__ = [
    "ConnectionGuard",
    "ConnectionLimits",
    "GuardedSite",
    "QuietRequestHandler",
    "RateLimitedLog",
    "SslContextSource",
    "start_guarded_app",
]

log = logging.getLogger("adapter.http")


class ConnectionLimits(typing.Protocol):
    """What bounds a server's connections (``config.GatewaySettings`` is one)."""

    @property
    def max_connections(self) -> int: ...
    @property
    def request_timeout_seconds(self) -> float: ...
    @property
    def keepalive_timeout_seconds(self) -> float: ...


SslContextSource = Callable[[], ssl.SSLContext]
"""Gives the TLS context in force; called once for each new connection."""

REFUSAL_LOG_INTERVAL_SECONDS = 10.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# asyncio's own handshake and TLS shutdown timers are kept above the request timeout, so that the
# request timer, which the refusal log counts, is the one that fires.
_TLS_TIMER_MARGIN_SECONDS = 1.0
MAX_EARLY_TLS_BYTES = 64 * 1024
"""Bytes a client may send before TLS takes its connection over (its hello: a few KiB); past
this the connection is aborted."""
_STOP_WAIT_SECONDS = 2.0  # an aborted handshake ends in one turn of the loop; this is a backstop


class _Refusal(Enum):
    CAP = "cap"
    TIMEOUT = "timeout"
    NO_DESCRIPTORS = "no descriptors"


class RefusalLog:
    """Counts refusals and logs them as one WARNING line per interval.

    The first refusal after a quiet spell starts an interval; at its end one line gives the
    counts by reason, so lines are at least ``interval`` apart whatever the rate of refusals.
    """

    def __init__(
        self,
        settings: ConnectionLimits,
        interval: float = REFUSAL_LOG_INTERVAL_SECONDS,
        logger: logging.Logger = log,
    ) -> None:
        self._settings = settings
        self._log_to = logger
        self._interval = interval
        self._counts: Counter[_Refusal] = Counter()
        self._started = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def count(self, reason: _Refusal) -> None:
        self._counts[reason] += 1
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._started = loop.time()
            self._timer = loop.call_later(self._interval, self._interval_ended)

    def flush(self) -> None:
        """Log what was counted since the interval began, if anything (at stop); start afresh."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._log(asyncio.get_running_loop().time() - self._started)

    def _interval_ended(self) -> None:
        self._timer = None
        self._log(self._interval)

    def _log(self, seconds: float) -> None:
        if self._counts:
            self._log_to.warning("%s", self._describe(seconds))
            self._counts.clear()

    def _describe(self, elapsed: float) -> str:
        cap = self._counts[_Refusal.CAP]
        timeouts = self._counts[_Refusal.TIMEOUT]
        failed = self._counts[_Refusal.NO_DESCRIPTORS]
        parts = []
        if cap:
            parts.append(
                f"refused {_many(cap, 'connection')} at the "
                f"{self._settings.max_connections}-connection cap"
            )
        if timeouts:
            parts.append(
                f"closed {_many(timeouts, 'connection')} whose request had not arrived within "
                f"{self._settings.request_timeout_seconds:g} s"
            )
        if failed:
            parts.append(
                f"accept() failed {_many(failed, 'time')} for want of file descriptors (the "
                "process's open-file limit is below what the connection cap needs)"
            )
        return f"in the last {round(elapsed, 1):g} s: " + "; ".join(parts)


def _many(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


REFUSED_REQUEST_LINES_PER_SECOND = 10
"""Lines about refused requests a listener logs at most per second; the rest are counted."""


class RateLimitedLog:
    """At most ``per_second`` WARNING lines a second to ``logger``; those past it are counted,
    and their count is logged as one line when the second is over (or at ``flush``).

    A second begins with the first line after a quiet one, so a flood of any length writes at
    most ``per_second`` + 1 lines a second.
    """

    def __init__(
        self, logger: logging.Logger, per_second: int = REFUSED_REQUEST_LINES_PER_SECOND
    ) -> None:
        self._log_to = logger
        self._per_second = per_second
        self._written = 0
        self._suppressed = 0
        self._timer: asyncio.TimerHandle | None = None

    def warning(self, message: str, *args: object) -> None:
        """Log ``message % args``, unless this second's lines are used up: then count it."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(1.0, self.flush)
        if self._written < self._per_second:
            self._written += 1
            self._log_to.warning(message, *args)
        else:
            self._suppressed += 1

    def flush(self) -> None:
        """Log the count of lines suppressed so far, if any, and start a new second."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._suppressed:
            self._log_to.warning(
                "(%s similar suppressed in the last second)", f"{self._suppressed:,}"
            )
        self._written = self._suppressed = 0


class QuietRequestHandler(web.RequestHandler):
    """aiohttp's protocol for one connection, but a refused request is answered with a fixed
    text and logged as one rate-limited line naming the error's type, never its message.

    aiohttp's parser errors quote the bytes they choked on (the whole request when its line
    endings are bare LFs, a password in the body included); a handler's exception may quote
    what it was given. Neither reaches a log line or an answer from here.
    """

    def __init__(self, manager: web.Server, *, lines: RateLimitedLog, **kwargs: Any) -> None:
        super().__init__(manager, loop=asyncio.get_running_loop(), **kwargs)
        self._lines = lines

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp could not parse (400), whose handler failed (500)
        or timed out (504); ``message``, which quotes the request, is never used."""
        what = "timed out" if exc is None else type(exc).__name__
        self._lines.warning("refused a request from %s: %d, %s", request.remote, status, what)
        if request.writer.output_size > 0:  # as aiohttp's: a response is under way, cut it
            raise ConnectionError("a response was already being sent")
        phrase = HTTPStatus(status).phrase
        response = web.Response(status=status, text=f"{status} {phrase}\n")
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's other unexpected failures: one rate-limited line with the exception's type
        (its message and traceback may quote the request)."""
        exc = kw.get("exc_info")
        what = type(exc).__name__ if isinstance(exc, BaseException) else "no exception"
        self._lines.warning("unexpected failure serving a request: %s", what)


class _State(Enum):
    OPENING = "opening"  # accepted; the TLS handshake, if any, under way
    READING = "reading"  # a request is arriving: the request timer runs
    IDLE = "idle"  # answered, waiting for the next request: the idle timer runs
    CLOSED = "closed"


class _GuardedConnection(asyncio.Protocol):
    """One accepted connection, in front of the aiohttp ``RequestHandler`` it feeds."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._loop = asyncio.get_running_loop()
        self._state = _State.OPENING
        self._raw: asyncio.Transport | None = None
        self._transport: asyncio.Transport | None = None  # what aiohttp writes to (TLS or raw)
        self._inner: asyncio.Protocol | None = None
        self._early: list[bytes] = []  # decrypted bytes that came before aiohttp was attached
        self._hello: bytearray | None = None  # raw bytes that came before TLS took over
        self._timer: asyncio.TimerHandle | None = None
        self._admitted = False

    # --- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transports are asyncio.Transports; BaseTransport is the protocol's type.
        self._raw = transport = typing.cast(asyncio.Transport, transport)
        if not self._guard._admit(self):
            # Closed before any read: a refused client costs one accept and one close.
            self._state = _State.CLOSED
            transport.abort()
            self._guard.refusals.count(_Refusal.CAP)
            return
        self._admitted = True
        self._start_request_timer()
        context = self._guard.ssl_context()
        if context is None:
            self._attach(transport)
        else:
            self._hello = bytearray()
            self._guard._track(self._loop.create_task(self._start_tls(transport, context)))

    def data_received(self, data: bytes) -> None:
        if self._state is _State.CLOSED:
            return
        if self._hello is not None:  # raw bytes, before start_tls took the connection over
            self._hello += data
            if len(self._hello) > MAX_EARLY_TLS_BYTES:
                self._hello = None
                self.abort()
            return
        if self._inner is None:
            self._early.append(data)
            return
        if self._state is _State.IDLE:
            self._start_request_timer()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._inner is None else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # --- seen from the application (the guard's middleware) -------------------------------------

    def request_arrived(self) -> None:
        """aiohttp has the headers of a request; its body may still be arriving."""
        if self._state is _State.IDLE:  # one that came pipelined behind the previous one
            self._start_request_timer()

    def answered(self) -> None:
        """The handler read the request and produced its response: idle until the next one."""
        if self._state is _State.READING:
            self._state = _State.IDLE
            self._set_timer(self._guard.settings.keepalive_timeout_seconds, self._idle_too_long)

    # --- inside ----------------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        return self._inner is not None

    def abort(self) -> None:
        if self._raw is not None:
            self._raw.abort()

    async def _start_tls(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        """Hand the connection to TLS; attach aiohttp to the TLS transport once the handshake
        is done.

        The client's first bytes (its hello) are start_tls's to read. On asyncio's loop this task
        runs before the connection is first read; uvloop reads a new connection at once, so the
        hello may already have reached ``data_received``. Such bytes are handed to the TLS
        protocol by a callback queued before ``start_tls`` queues its own: it runs once start_tls
        has put its protocol on the transport and paused reading, and before that protocol's
        ``connection_made`` starts the handshake, which then reads them first. Both loops' TLS
        protocols keep what they are given before ``connection_made`` for the handshake.
        """
        timeout = self._guard.settings.request_timeout_seconds + _TLS_TIMER_MARGIN_SECONDS
        hello, self._hello = self._hello, None
        if hello:
            self._loop.call_soon(self._hand_over, transport, hello)
        try:
            tls = await self._loop.start_tls(
                transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=timeout,
                ssl_shutdown_timeout=timeout,
            )
        except OSError as exc:  # a failed handshake (ssl.SSLError), a reset, our own abort
            log.debug("TLS handshake failed: %s", exc)
            tls = None
        except BaseException:
            self._finish()
            raise
        if tls is None or self._state is _State.CLOSED:
            # asyncio tells the application nothing of a connection lost during the handshake,
            # so the slot is given back here.
            self._finish()
            if tls is not None:
                tls.abort()
            return
        self._attach(tls)

    def _hand_over(self, transport: asyncio.Transport, hello: bytearray) -> None:
        """Give the bytes that came before TLS to the TLS protocol start_tls put in place (a
        buffered protocol on both loops, uvloop's without the base class)."""
        protocol = transport.get_protocol()
        if protocol is self or transport.is_closing():  # start_tls failed before taking over
            return
        tls = typing.cast(asyncio.BufferedProtocol, protocol)
        data = memoryview(hello)
        while data:
            buffer = memoryview(tls.get_buffer(len(data)))
            size = min(len(buffer), len(data))
            buffer[:size] = data[:size]
            tls.buffer_updated(size)
            data = data[size:]

    def _attach(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._inner = self._guard._new_handler()
        self._guard._attached(transport, self)
        self._inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def _start_request_timer(self) -> None:
        self._state = _State.READING
        self._set_timer(self._guard.settings.request_timeout_seconds, self._request_too_slow)

    def _set_timer(self, delay: float, callback: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, callback)

    def _request_too_slow(self) -> None:
        self._timer = None
        if self._state is _State.READING:
            self._guard.refusals.count(_Refusal.TIMEOUT)
            self.abort()  # abort, not close: a client that does not read must not hold the fd

    def _idle_too_long(self) -> None:
        self._timer = None
        if self._state is not _State.IDLE:
            return
        transport = self._transport
        # A clean close (FIN, or TLS close_notify) when nothing is left to write; a client that
        # does not read its last response gets no time to do so.
        if transport is not None and transport.get_write_buffer_size() == 0:
            transport.close()
        else:
            self.abort()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._state = _State.CLOSED
        self._early.clear()
        if self._admitted:
            self._admitted = False
            self._guard._release(self, self._transport)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionGuard:
    """The protocol factory ``loop.create_server`` gets: one ``_GuardedConnection`` each.

    ``new_handler`` makes aiohttp's protocol for a connection (the runner's ``web.Server``);
    ``ssl_context`` gives the TLS context in force, or is None for plain HTTP. Add
    ``middleware`` to the application, so that the guard sees each request being answered.
    """

    def __init__(
        self,
        new_handler: Callable[[], asyncio.Protocol],
        settings: ConnectionLimits,
        ssl_context: SslContextSource | None = None,
        *,
        log_interval: float = REFUSAL_LOG_INTERVAL_SECONDS,
        logger: logging.Logger = log,
    ) -> None:
        self.settings = settings
        self.refusals = RefusalLog(settings, log_interval, logger)
        self.refused_requests = RateLimitedLog(logger)
        """Where ``QuietRequestHandler`` logs the requests aiohttp refused."""
        self._handler_factory = new_handler
        self._ssl_context = ssl_context
        self._open: set[_GuardedConnection] = set()
        self._by_transport: dict[asyncio.BaseTransport, _GuardedConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self) -> asyncio.Protocol:
        return _GuardedConnection(self)

    def __repr__(self) -> str:
        return (
            f"ConnectionGuard(open={len(self._open)}, cap={self.settings.max_connections}, "
            f"tls={self._ssl_context is not None})"
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        return None if self._ssl_context is None else self._ssl_context()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Tells the request's connection when its request is in and when it is answered."""
        connection = self._by_transport.get(request.transport) if request.transport else None
        if connection is not None:
            connection.request_arrived()
        try:
            return await handler(request)
        finally:
            if connection is not None:
                connection.answered()

    async def abort_unattached(self) -> None:
        """Abort connections aiohttp does not know of yet (in their TLS handshake), and wait
        for their handshakes to end: at stop, so that no task outlives the server."""
        for connection in list(self._open):
            if not connection.attached:
                connection.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=_STOP_WAIT_SECONDS)

    def _admit(self, connection: _GuardedConnection) -> bool:
        if len(self._open) >= self.settings.max_connections:
            return False
        self._open.add(connection)
        return True

    def _attached(self, transport: asyncio.BaseTransport, connection: _GuardedConnection) -> None:
        self._by_transport[transport] = connection

    def _release(
        self, connection: _GuardedConnection, transport: asyncio.BaseTransport | None
    ) -> None:
        self._open.discard(connection)
        if transport is not None:
            self._by_transport.pop(transport, None)

    def _new_handler(self) -> asyncio.Protocol:
        return self._handler_factory()

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def is_out_of_descriptors(self, context: dict[str, Any]) -> bool:
        """Whether a loop exception is an ``accept()`` that failed for want of descriptors."""
        exc = context.get("exception")
        return isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES


class GuardedSite(web.BaseSite):
    """A TCP site for an ``AppRunner`` whose connections go through a ``ConnectionGuard``.

    ``runner.cleanup()`` stops it like any site: the listener closes, connections still in their
    TLS handshake are aborted, the refusal count so far is logged, and aiohttp then closes the
    connections it serves.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        *,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._guard = guard
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_handler: Any = None
        self._handler = self._loop_exception

    @property
    def name(self) -> str:
        scheme = "http" if self._guard.ssl_context() is None else "https"
        return f"{scheme}://{format_address(self._host, self._port)}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
        # asyncio reports an accept() that failed with EMFILE to the loop's exception handler,
        # which logs a traceback each time (once a second while it lasts); these are counted.
        self._loop = loop
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._handler)

    async def stop(self) -> None:
        await super().stop()
        await self._guard.abort_unattached()
        self._guard.refusals.flush()
        self._guard.refused_requests.flush()
        loop = self._loop
        if loop is not None and loop.get_exception_handler() == self._handler:
            loop.set_exception_handler(self._previous_handler)
        self._loop = None

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self._guard.is_out_of_descriptors(context) and self._is_ours(context.get("socket")):
            self._guard.refusals.count(_Refusal.NO_DESCRIPTORS)
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def _is_ours(self, sock: object) -> bool:
        fileno = getattr(sock, "fileno", None)
        server = self._server
        if fileno is None or not isinstance(server, asyncio.Server):
            return False
        number = fileno()
        return number != -1 and number in {s.fileno() for s in server.sockets}


async def start_guarded_app(
    app: web.Application,
    host: str,
    port: int,
    limits: ConnectionLimits,
    ssl_context: SslContextSource | None = None,
    *,
    log_interval: float = REFUSAL_LOG_INTERVAL_SECONDS,
    logger: logging.Logger = log,
    shutdown_timeout: float = 1.0,
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: any free port) behind a ``ConnectionGuard``.

    Returns the runner (stop it with ``await runner.cleanup()``) and the bound port. A failed
    bind cleans up and re-raises the OSError.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)

    def new_handler() -> web.RequestHandler:
        server = runner.server
        if server is None:  # connections are accepted only after runner.setup()
            raise RuntimeError("the runner is not set up")
        # What server() makes, with the runner's one handler setting (no access log).
        return QuietRequestHandler(server, lines=guard.refused_requests, access_log=None)

    guard = ConnectionGuard(
        new_handler, limits, ssl_context, log_interval=log_interval, logger=logger
    )
    runner.app.middlewares.append(guard.middleware)
    await runner.setup()
    try:
        await GuardedSite(runner, host, port, guard).start()
    except BaseException:
        await runner.cleanup()
        raise
    # With port 0 and a name that resolves to several addresses, each may get its own port;
    # the first is the one reported.
    return runner, int(runner.addresses[0][1])
