"""CONTRACT §10's rules for the upstream HTTP client, against hostile gateways on loopback.

Every case runs the whole adapter against a real peer, each of the ways the gateway can be reached
(``test_faults.WAYS``: directly, over TLS, over TLS through a CONNECT proxy): one client, one set
of rules. The peers bound what they send (at most ``LIMIT`` bytes, or until the connection
closes), so a client that fails to bound its reads fails these tests instead of eating the
machine's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.config import UpstreamSettings
from adapter.upstream.transport import gateway_transport
from tests import test_faults
from tests.conftest import StartAdapter
from tests.test_faults import (
    GOOD_BODY,
    INTERNAL,
    UNAVAILABLE,
    Conn,
    Reach,
    adapter_for,
    create_session,
    good,
    head,
    retry_delay,
    silent,
    timed_fail,
)
from tests.tls_peers import ConnectProxy

# test_faults' fixtures, which pytest finds here by these names.
cas, pki, reach = test_faults.cas, test_faults.pki, test_faults.reach
start_fault_server = test_faults.start_fault_server

LIMIT = 2 * 1024 * 1024
"""The most a hostile peer sends: a client that keeps reading past its bounds meets this first."""
PIECE = 64 * 1024
FAST = 1.0
"""A refused answer is refused within this, far inside the caller's deadline."""
BLOCKED = 0.1
"""The longest the event loop may stall while one hostile answer is read (a few ms is the goal;
the rest is room for a shared test machine)."""
GOOD_ANSWER = head(201, length=len(GOOD_BODY)) + GOOD_BODY


# --- hostile answers: every read bounded ----------------------------------------------------


@dataclass
class Flood:
    """A peer's answer: ``prefix``, then ``filler`` until ``total`` bytes or the connection
    closes, then ``suffix``. ``sent`` counts what it wrote, per connection."""

    prefix: bytes
    filler: bytes
    total: int = LIMIT
    suffix: bytes = b""
    sent: dict[int, int] = field(default_factory=dict)

    async def __call__(self, conn: Conn) -> bool:
        assert conn.writer is not None
        sent = len(self.prefix)
        conn.write(self.prefix)
        try:
            while sent < self.total and not conn.writer.is_closing():
                conn.write(self.filler)
                sent += len(self.filler)
                await conn.drain()
                await asyncio.sleep(0)  # the client reads between pieces, as over a network
            conn.write(self.suffix)
            await conn.drain()
        except ConnectionError:
            conn.peer_gone.set()
        finally:
            self.sent[conn.id] = sent
        if not conn.peer_gone.is_set():
            await silent(conn)
        return False


HOSTILE = {
    "endless status line": lambda: Flood(b"HTTP/1.1 201 ", b"x" * PIECE),
    "endless header value": lambda: Flood(head(201, length=5)[:-2] + b"X-Long: ", b"a" * PIECE),
    "too many headers": lambda: Flood(
        b"HTTP/1.1 201 Created\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)),
        b"",
        total=0,
        suffix=b"Content-Length: %d\r\n\r\n%s" % (len(GOOD_BODY), GOOD_BODY),
    ),
    "50 MB header before a valid answer": lambda: Flood(
        b"HTTP/1.1 201 Created\r\nX-Big: ",
        b"b" * PIECE,
        total=50 * 1024 * 1024,
        suffix=b"\r\nContent-Length: %d\r\n\r\n%s" % (len(GOOD_BODY), GOOD_BODY),
    ),
    "endless trailer": lambda: Flood(
        head(201, "Transfer-Encoding: chunked")
        + b"%x\r\n%s\r\n0\r\nX-Trailer: " % (len(GOOD_BODY), GOOD_BODY),
        b"t" * PIECE,
    ),
    "endless chunk-size line": lambda: Flood(
        head(201, "Transfer-Encoding: chunked") + b"5;ext=", b"e" * PIECE
    ),
}


@contextlib.asynccontextmanager
async def loop_watch() -> AsyncIterator[list[float]]:
    """The longest gaps between the ticks of a 5 ms ticker while the block runs (descending)."""
    gaps: list[float] = [0.0]

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last - 0.005)
            last = now

    ticker = asyncio.ensure_future(tick())
    try:
        yield gaps
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        gaps.sort(reverse=True)


@pytest.mark.parametrize("make", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_read_past_a_bound_fails_fast_and_closes(
    make: Callable[[], Flood], reach: Reach, start_adapter: StartAdapter
) -> None:
    """Past a bound (line 8 KiB, 100 headers, 64 KiB of headers, framing and trailers): INTERNAL
    UPSTREAM_PROTOCOL_ERROR within a second of a 5 s deadline, the connection closed (the peer
    sees it and stops sending), and the event loop never stalled by the answer."""
    server = reach.server
    stub = await adapter_for(start_adapter, server.url, **reach.options, retry_max_attempts=1)
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS
    first = len(server.requests)
    flood = make()
    server.behaviour = flood

    async with loop_watch() as gaps:
        failure, elapsed = await timed_fail(stub, deadline=5.0)

    assert (failure.code, failure.info.reason) == (INTERNAL, "UPSTREAM_PROTOCOL_ERROR")
    assert elapsed < FAST
    [seen] = server.requests[first:]
    await asyncio.wait_for(server.connections[seen.conn].peer_gone.wait(), FAST)
    assert flood.sent[seen.conn] < LIMIT, "the client stopped reading"
    assert gaps[0] < BLOCKED, f"the event loop stalled {gaps[0]:.3f}s"
    server.behaviour = good
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS


async def test_retry_after_is_read_from_the_header_block_only(
    reach: Reach, start_adapter: StartAdapter
) -> None:
    """A 503 whose ``Retry-After`` comes in a chunked trailer carries no advice: the default
    delay, and retried at once (three attempts in a 2 s deadline), not held for 7 s."""
    server = reach.server
    stub = await adapter_for(start_adapter, server.url, **reach.options)
    html = b"<html>busy</html>"
    data = head(503, "Transfer-Encoding: chunked", content_type="text/html")
    data += b"%x\r\n%s\r\n0\r\nRetry-After: 7\r\n\r\n" % (len(html), html)

    async def busy(conn: Conn) -> bool:
        conn.write(data)
        await conn.drain()
        return True

    server.behaviour = busy
    failure, _ = await timed_fail(stub, deadline=2.0)

    assert (failure.code, dict(failure.info.metadata)) == (
        UNAVAILABLE,
        {"httpStatus": "503", "attempts": "3"},
    )
    assert retry_delay(failure) == 1.0


# --- reuse only after a clean, complete answer ------------------------------------------------


async def test_bytes_after_a_complete_answer_end_the_connection(
    reach: Reach, start_adapter: StartAdapter
) -> None:
    """An answer followed by the start of another in the same write is used, but its connection
    is not: the next call goes out on a new connection and gets its own good answer."""
    server = reach.server
    stub = await adapter_for(start_adapter, server.url, **reach.options)

    async def answer_and_more(conn: Conn) -> bool:
        conn.write(GOOD_ANSWER + b"HTTP/1.1 200 OK\r\nContent-Le")
        await conn.drain()
        return True

    server.behaviour = answer_and_more
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS
    server.behaviour = good
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS
    first, second = server.requests[-2:]
    assert first.conn != second.conn


async def test_an_answer_nobody_asked_for_is_never_taken_for_the_next(
    reach: Reach, start_adapter: StartAdapter
) -> None:
    """A whole answer the gateway sends on an idle pooled connection ends that connection: the
    next call is read by the gateway (on a new connection) before it is answered."""
    server = reach.server
    stub = await adapter_for(start_adapter, server.url, **reach.options)

    async def answer_then_more(conn: Conn) -> bool:
        conn.write(GOOD_ANSWER)
        await conn.drain()
        await asyncio.sleep(0.1)
        conn.write(GOOD_ANSWER)
        await conn.drain()
        return True

    server.behaviour = answer_then_more
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS
    await asyncio.sleep(0.3)
    server.behaviour = good
    before = len(server.requests)
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS
    assert len(server.requests) == before + 1, "the gateway read the call it answered"


async def test_a_connection_idle_past_the_idle_timeout_is_not_reused(
    reach: Reach, start_adapter: StartAdapter
) -> None:
    """With ``idle_timeout_seconds = 0.5``, a connection idle 0.8 s is closed by the adapter (the
    gateway sees it) and the next call opens a new one."""
    server = reach.server
    stub = await adapter_for(start_adapter, server.url, **reach.options, idle_timeout_seconds=0.5)
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS
    await asyncio.sleep(0.8)
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS
    first, second = server.requests[-2:]
    assert first.conn != second.conn
    assert server.connections[first.conn].ended.is_set()


async def test_no_unknown_outcome_for_a_request_an_idle_closing_gateway_never_read(
    reach: Reach, start_adapter: StartAdapter
) -> None:
    """A gateway that closes connections left idle a short time, called by 6 callers pausing
    about that long between calls: every call succeeds, and the gateway read exactly one request
    per call (a request on a connection it had closed was never sent, and went out on another).

    Directly and over TLS the gateway closes after 0.2 s, far below the adapter's idle timeout: the
    socket itself shows the close before the write. Through a proxy the close reaches the adapter
    only once the proxy relays it, so there the rule rests on ``idle_timeout_seconds`` below the
    gateway's keep-alive (0.5 s against 0.7 s), as CONTRACT §10 sets it."""
    server = reach.server
    proxied = reach.way == "proxied"
    options = {"idle_timeout_seconds": 0.5} if proxied else {}
    stub = await adapter_for(start_adapter, server.url, **reach.options, **options)
    server.idle_close = 0.7 if proxied else 0.2
    pause = (0.45, 0.75) if proxied else (0.15, 0.25)
    rng = random.Random(7)  # noqa: S311 (test timing, not security)
    codes: list[grpc.StatusCode] = []

    async def caller() -> None:
        for _ in range(8):
            await asyncio.sleep(rng.uniform(*pause))
            try:
                await create_session(stub)
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())

    first = len(server.requests)
    await asyncio.gather(*(caller() for _ in range(6)))
    assert codes == [grpc.StatusCode.OK] * 48
    assert len(server.requests) - first == 48


async def test_a_pooled_connection_closed_before_the_write_is_not_sent() -> None:
    """The gateway closes a pooled connection, and a call takes it before the event loop has read
    the close: the request is not written there but on a new connection, and answered."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    port = listener.getsockname()[1]
    transport = gateway_transport(UpstreamSettings(url=f"http://127.0.0.1:{port}"))

    async def answer_one(sock: socket.socket) -> None:
        data = b""
        while not data.endswith(b"result=X"):
            data += await loop.sock_recv(sock, 4096)
        await loop.sock_sendall(sock, GOOD_ANSWER)

    try:
        call = asyncio.ensure_future(transport.post(b"result=X", 2.0))
        pooled, _ = await loop.sock_accept(listener)
        await answer_one(pooled)
        assert (await call).status == 201
        pooled.close()  # its FIN is on the adapter's socket, not yet read by the loop
        call = asyncio.ensure_future(transport.post(b"result=X", 2.0))
        fresh, _ = await asyncio.wait_for(loop.sock_accept(listener), FAST)
        await answer_one(fresh)
        assert (await call).status == 201
        fresh.close()
    finally:
        await transport.aclose()
        listener.close()


# --- closed or answered before the request was written --------------------------------------


class Greeter:
    """A gateway that acts on each connection the moment it is accepted, before the adapter can
    write a request: it closes (FIN), resets (RST), or sends a whole answer and keeps quiet.

    It accepts in the listener's own reader callback, so it is done before the client's connect
    has come back to the adapter. ``early`` counts connections where a request had already
    arrived at accept (none must: the test is about the other order).
    """

    def __init__(self, act: str) -> None:
        self.act = act
        self.accepted = 0
        self.early = 0
        self._kept: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        asyncio.get_running_loop().add_reader(self._listener, self._accept)

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            sock, _ = self._listener.accept()
            self.accepted += 1
            with contextlib.suppress(BlockingIOError):
                if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    self.early += 1
            if self.act == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            if self.act == "answer":
                sock.send(GOOD_ANSWER)
                self._kept.append(sock)
            else:
                sock.close()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._listener)
        self._listener.close()
        for sock in self._kept:
            sock.close()


GREETER_WAYS = ("direct", "tls", "proxied")


@pytest.fixture
async def greeters() -> AsyncIterator[list[Greeter]]:
    made: list[Greeter] = []
    yield made
    for greeter in made:
        greeter.close()


@pytest.mark.parametrize("way", GREETER_WAYS)
@pytest.mark.parametrize("act", ["close", "reset", "answer"])
async def test_closed_or_answered_before_the_write_is_unavailable_at_once(
    act: str,
    way: str,
    greeters: list[Greeter],
    start_adapter: StartAdapter,
    pki: Any,
) -> None:
    """A gateway that closes, resets or answers each new connection before the request is
    written: UNAVAILABLE UPSTREAM_UNAVAILABLE with RetryInfo and no outcome, after the three
    attempts this allows, at once (never INTERNAL, never a wait for the deadline)."""
    greeter = Greeter(act)
    greeters.append(greeter)
    scheme = "http" if way == "direct" else "https"
    options: dict[str, Any] = {} if way == "direct" else {"ca_file": pki.ca_file}
    proxy = ConnectProxy()
    if way == "proxied":
        await proxy.start()
        options["proxy"] = proxy.url
    try:
        stub = await adapter_for(start_adapter, f"{scheme}://127.0.0.1:{greeter.port}", **options)
        failure, elapsed = await timed_fail(stub, deadline=3.0)
    finally:
        await proxy.aclose()

    assert (failure.code, failure.info.reason, dict(failure.info.metadata)) == (
        UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        {"attempts": "3"},
    )
    assert retry_delay(failure) == 1.0
    assert elapsed < FAST
    assert (greeter.accepted, greeter.early) == (3, 0)
