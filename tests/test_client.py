"""The adapter's one HTTP/1.1 client (``adapter.upstream.client``): its parser fuzzed, its pool on
loopback.

The fault matrix (``test_faults.py``), TLS and certificate tests run it end to end through the
adapter; these check what they cannot reach: any byte sequence a peer sends ends the exchange
with an answer or one of the adapter's errors, a well-formed answer however split is read
exactly, and the pool's bounds, idle close and cancellation.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.config import UpstreamSettings
from adapter.core.errors import UpstreamReadTimeout
from adapter.upstream.classify import PeerClosed, ProtocolViolation
from adapter.upstream.client import ConnectionPool, Reply, _Connection
from adapter.upstream.transport import HttpTransport, gateway_transport

CAP = 256


class FakePool:
    """What a connection asks of its pool: the cap, and to be forgotten when it closes."""

    max_bytes = CAP

    def _forget(self, connection: _Connection) -> None:
        pass


class FakeTransport:
    """Records what the connection writes and whether it hung up."""

    def __init__(self) -> None:
        self.written = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True


def exchange(pieces: list[bytes], *, lose: bool) -> tuple[asyncio.Future[Reply], _Connection]:
    """Feed ``pieces`` to a fresh connection after one request; then EOF and loss if ``lose``."""
    loop = asyncio.new_event_loop()
    try:
        connection = _Connection(typing.cast(ConnectionPool, FakePool()), tls=False)
        connection.connection_made(typing.cast(asyncio.Transport, FakeTransport()))
        waiter: asyncio.Future[Reply] = loop.create_future()
        connection.send(b"POST / HTTP/1.1\r\n\r\n", waiter, fresh=False)
        for piece in pieces:
            if connection.closed:
                break
            connection.data_received(piece)
        if lose:
            connection.eof_received()
            connection.connection_lost(None)
        return waiter, connection
    finally:
        loop.close()


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut into pieces at arbitrary points, as TCP may deliver it (never empty)."""
    cuts = st.lists(st.integers(0, len(data)), max_size=6).map(sorted)
    edges = cuts.map(lambda at: zip([0, *at], [*at, len(data)], strict=True))
    return edges.map(lambda pairs: [data[i:j] for i, j in pairs if j > i])


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
value = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 ,;=/", max_size=20)
extra_headers = st.lists(
    st.tuples(token, value).filter(
        lambda h: (
            h[0].lower()
            not in {"content-length", "transfer-encoding", "connection", "retry-after", "upgrade"}
        )
    ),
    max_size=4,
)


@st.composite
def good_answers(draw: st.DrawFn) -> tuple[bytes, int, bytes, str | None]:
    """A well-formed answer: its bytes, and the status, body and Retry-After it must read as."""
    status = draw(st.sampled_from([200, 201, 400, 401, 429, 500, 502, 503]))
    body = draw(st.binary(max_size=CAP))
    retry_after = draw(st.none() | st.sampled_from(["1", "30", "Wed, 21 Oct 2015 07:28:00 GMT"]))
    head = [f"HTTP/1.1 {status} Whatever"]
    head += [f"{name}: {text}".rstrip() for name, text in draw(extra_headers)]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    if draw(st.booleans()):
        head.append(f"Content-Length: {len(body)}")
        payload = body
    else:
        head.append("Transfer-Encoding: chunked")
        sizes = draw(st.lists(st.integers(1, 64), max_size=8))
        chunks, rest = [], body
        for size in sizes:
            if rest:
                chunks.append(rest[:size])
                rest = rest[size:]
        if rest:
            chunks.append(rest)
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload, status, body, retry_after


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_well_formed_answer_reads_exactly_however_it_is_split(data: st.DataObject) -> None:
    """Status, body and Retry-After come out as sent, whatever the framing and the TCP splits,
    and the connection is left at a message boundary, fit for the next request."""
    raw, status, body, retry_after = data.draw(good_answers())
    waiter, connection = exchange(data.draw(splits(raw)), lose=False)
    assert waiter.result() == Reply(status, body, retry_after)
    assert connection.reusable()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_truncated_answer_is_lost_never_a_short_body(data: st.DataObject) -> None:
    """An answer cut anywhere before its end, then the connection closed, fails as lost (the
    outcome is unknown) and is never read as a shorter body."""
    raw, *_ = data.draw(good_answers())
    cut = data.draw(st.integers(0, len(raw) - 1))
    waiter, connection = exchange(data.draw(splits(raw[:cut])), lose=True)
    with pytest.raises((PeerClosed, ProtocolViolation)):
        waiter.result()
    assert not connection.reusable()


status_lines = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.0 201 Created", b"HTTP/1.1 99 Odd", b"HTTP/2 200", b"HTP/1.1 200",
     b"HTTP/1.1 2000 Big", b"HTTP/1.1 abc", b"", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"]
)  # fmt: skip
header_lines = st.sampled_from(
    [b"Content-Length: 5", b"Content-Length: -1", b"Content-Length: 99999999999999999999",
     b"Content-Length: 3\r\nContent-Length: 4", b"Transfer-Encoding: chunked",
     b"Transfer-Encoding: gzip, chunked", b"Connection: close", b"Connection: upgrade",
     b"Upgrade: websocket", b"Retry-After: \xff", b"No-Colon", b" folded: value", b"X: \x00"]
)  # fmt: skip
bodies = st.sampled_from(
    [b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\nbad\r\n", b"3\r\nab", b"x" * (CAP + 10),
     b"ffffffffffffffffff\r\n", b"1;ext=1\r\na\r\n0\r\nTrailer: t\r\n\r\n"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    status_lines,
    st.lists(header_lines, max_size=4),
    bodies,
    st.binary(max_size=40),
    st.data(),
)
def test_any_bytes_end_in_an_answer_or_the_adapters_own_error(
    status: bytes, headers: list[bytes], body: bytes, noise: bytes, data: st.DataObject
) -> None:
    """Whatever a peer sends (odd status lines, conflicting lengths, bad chunking, an upgrade,
    noise), once the connection closes the exchange has ended: with an answer whose body is
    within the cap, or with one of the client's two failures (the peer closed, or broke HTTP),
    which ``classify`` turns into the adapter's errors; nothing else escapes."""
    raw = b"\r\n".join([status, *headers]) + b"\r\n\r\n" + body + noise
    waiter, _ = exchange(data.draw(splits(raw)), lose=True)
    assert waiter.done()
    try:
        answer = waiter.result()
    except (PeerClosed, ProtocolViolation):
        return
    assert len(answer.body) <= CAP


def test_an_answer_over_the_cap_is_refused_mid_message_and_the_connection_closed() -> None:
    """A body that grows past the cap before its end fails at once and drops the connection."""
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw += b"%x\r\n%s\r\n" % (CAP + 1, b"x" * (CAP + 1))
    waiter, connection = exchange([raw], lose=False)
    with pytest.raises(ProtocolViolation, match="cap"):
        waiter.result()
    assert connection.closed


Answerer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
GOOD = b"HTTP/1.1 201 Created\r\nContent-Length: 14\r\n\r\nresult=SUCCESS"


@pytest.fixture
async def peer() -> AsyncIterator[Callable[[Answerer], Awaitable[tuple[int, list[int]]]]]:
    """A loopback server on port 0 running ``answer`` per connection; its port and a list that
    counts connections (one entry each, 1 when the client hung up)."""
    servers: list[asyncio.Server] = []

    async def start(answer: Answerer) -> tuple[int, list[int]]:
        seen: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            index = len(seen)
            seen.append(0)
            try:
                await answer(reader, writer)
                await reader.read()  # until the client hangs up
            except (asyncio.IncompleteReadError, ConnectionError):
                pass  # the client hung up mid-request: the same fact
            finally:
                seen[index] = 1
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1], seen

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.readuntil(b"result=X"):
        await asyncio.sleep(0.05)
        writer.write(GOOD)


def transport_for(port: int, **options: typing.Any) -> HttpTransport:
    transport = gateway_transport(UpstreamSettings(url=f"http://127.0.0.1:{port}", **options))
    assert isinstance(transport, HttpTransport)
    return transport


async def test_the_pool_bounds_connections_and_reuses_them(
    peer: Callable[[Answerer], Awaitable[tuple[int, list[int]]]],
) -> None:
    """Five calls at once over a pool of two use two connections, every call answered."""
    port, seen = await peer(keep_answering)
    transport = transport_for(port, pool_size=2)
    replies = await asyncio.gather(*(transport.post(b"result=X", 5.0) for _ in range(5)))
    assert {reply.status for reply in replies} == {201}
    assert len(seen) == 2
    await transport.aclose()


async def test_a_cancelled_exchange_closes_its_connection(
    peer: Callable[[Answerer], Awaitable[tuple[int, list[int]]]],
) -> None:
    """Cancelled while the peer is silent, the call hangs up its connection (the peer sees it);
    the next call opens a new one."""

    async def silent(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"result=X")

    port, seen = await peer(silent)
    transport = transport_for(port)
    call = asyncio.ensure_future(transport.post(b"result=X", 5.0))
    await asyncio.sleep(0.2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    for _ in range(50):
        if seen == [1]:
            break
        await asyncio.sleep(0.02)
    assert seen == [1]
    with pytest.raises(UpstreamReadTimeout):
        await transport.post(b"result=X", 0.2)
    assert len(seen) == 2
    await transport.aclose()


async def test_an_idle_connection_is_closed_after_the_idle_time(
    peer: Callable[[Answerer], Awaitable[tuple[int, list[int]]]],
) -> None:
    """A pooled connection left idle longer than the idle time is closed by the client."""
    port, seen = await peer(keep_answering)
    transport = transport_for(port, idle_timeout_seconds=0.5)
    assert (await transport.post(b"result=X", 5.0)).status == 201
    for _ in range(50):
        if seen == [1]:
            break
        await asyncio.sleep(0.05)
    assert seen == [1]
    await transport.aclose()


async def test_the_request_head_is_built_once_with_the_attempts_headers(
    peer: Callable[[Answerer], Awaitable[tuple[int, list[int]]]],
) -> None:
    """The request names the path and host, carries the attempt's headers and its length, and a
    header value holding a line break is refused before anything is sent."""
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"result=X"))
        writer.write(GOOD)

    port, _ = await peer(record)
    transport = transport_for(port)
    await transport.post(b"result=X", 5.0, {"traceparent": "00-ab-cd-01"})
    assert heads == [
        b"POST /api/nvp/version/100 HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{port}\r\n".encode()
        + b"User-Agent: nvp-adapter\r\nAccept: */*\r\n"
        + b"Content-Type: application/x-www-form-urlencoded; charset=UTF-8\r\n"
        + b"traceparent: 00-ab-cd-01\r\nContent-Length: 8\r\n\r\nresult=X"
    ]
    with pytest.raises(ValueError, match="line break"):
        await transport.post(b"result=X", 5.0, {"traceparent": "x\r\nEvil: 1"})
    await transport.aclose()
