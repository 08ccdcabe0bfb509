"""The fault matrix: every way the gateway's side of the wire can fail, against the real adapter.

The gateway is ``FaultServer``, a raw HTTP/1.1 peer on loopback port 0 whose answer to each
request is a ``Behaviour`` the test sets (a good answer, silence, a trickle, a reset, a bad
body...), and which can also refuse connections, stall them in a full accept queue, or present a
bad TLS certificate. Each row checks what the caller sees (gRPC code, ErrorInfo reason and
metadata, RetryInfo, within its deadline) and that nothing is left broken behind it: the next
good call succeeds on its first attempt, on a fresh connection where the old one broke, and no
asyncio task is left over.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import socket
import ssl
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import grpc
import pytest
import trustme
from google.rpc import error_details_pb2

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.core import nvp
from tests.conftest import MERCHANT, Failure, StartAdapter, fail, make_settings
from tests.tls_peers import ConnectProxy

if TYPE_CHECKING:  # the async stub class exists only in the generated type stubs
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

DEADLINE = 2.0
"""The caller's deadline for every faulty call; its answer must come within ``DEADLINE + SLACK``."""
SLACK = 0.2
GOOD_BODY = (
    b"merchant=TESTMERCHANT&result=SUCCESS&session.id=SESSION0002AAAAAAAAAAAAAAAAAAAA"
    b"&session.updateStatus=NO_UPDATE&session.version=0123456789"
)
HTML = b"<html><body><h1>Something went wrong</h1></body></html>"
MIB = 1024 * 1024

# --- the fake gateway ------------------------------------------------------------------------


@dataclass(eq=False)
class Conn:
    """One TCP connection the fake gateway accepted, as the server side sees it."""

    id: int
    reader: asyncio.StreamReader = field(default_factory=asyncio.StreamReader)
    writer: asyncio.StreamWriter | None = None
    tls_failed: bool = False
    idle: bool = False
    """Waiting for the next request: the state of a pooled keep-alive connection."""
    peer_gone: asyncio.Event = field(default_factory=asyncio.Event)
    """The client closed or reset the connection."""
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self, data: bytes) -> None:
        assert self.writer is not None
        if not self.writer.is_closing():
            self.writer.write(data)

    async def drain(self) -> None:
        assert self.writer is not None
        await self.writer.drain()

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), not a FIN."""
        assert self.writer is not None
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


def shut_down_now(conn: Conn) -> None:
    """Send the FIN at once, as a real gateway's close would: a transport's own close waits for
    the loop's next turn, a window an in-process client could write into."""
    assert conn.writer is not None
    fd = conn.writer.get_extra_info("socket").fileno()
    with socket.socket(fileno=os.dup(fd)) as sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


Behaviour = Callable[[Conn], Awaitable[bool]]
"""What the server does once it has read a request; True keeps the connection for the next one."""


@dataclass(frozen=True)
class Seen:
    """A request the fake gateway read in full: on which connection, when, and its fields."""

    conn: int
    at: float
    fields: Mapping[str, str]


class FaultServer:
    """A raw HTTP/1.1 gateway on 127.0.0.1 whose every answer is ``behaviour``.

    Set ``behaviour`` between calls to switch from a fault to a good answer. ``refuse`` and
    ``stall_connects`` make the next connects fail or hang; ``ssl_context`` is read per connection.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.scheme = "https" if ssl_context else "http"
        self.behaviour: Behaviour = good
        self.idle_close: float | None = None
        """Set: a keep-alive connection idle this long is closed, as load balancers do."""
        self.connections: list[Conn] = []
        self.requests: list[Seen] = []
        self.tasks: set[asyncio.Task[None]] = set()
        """Every task the fake gateway started: not the adapter's, so not counted as leaks."""
        self.port = 0
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._fillers: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._listen()
        self._resume()

    async def aclose(self) -> None:
        self._pause()
        self._close_fillers()
        if self._listener is not None:
            self._listener.close()
        for conn in self.connections:
            if conn.writer is not None:
                conn.writer.transport.abort()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # Connection-level faults.

    async def refuse(self) -> None:
        """Stop listening: every connect is refused until ``listen_again``."""
        self._pause()
        assert self._listener is not None
        self._listener.close()
        self._listener = None
        await self.drop_idle()

    async def listen_again(self) -> None:
        self._listen()
        self._resume()

    async def stall_connects(self) -> None:
        """Stop accepting and fill the accept queue, so the next connect hangs (SYN dropped)."""
        self._pause()
        await self.drop_idle()
        assert self._listener is not None
        self._listener.listen(0)
        loop = asyncio.get_running_loop()
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            self._fillers.append(filler)
            try:
                await asyncio.wait_for(loop.sock_connect(filler, ("127.0.0.1", self.port)), 0.2)
            except TimeoutError:
                return  # this connect hangs: so will the adapter's
        pytest.fail("could not fill the accept queue: connects do not hang on this machine")

    async def accept_again(self) -> None:
        self._close_fillers()
        assert self._listener is not None
        self._listener.listen(16)
        self._resume()

    async def use_tls(self, context: ssl.SSLContext) -> None:
        """Present ``context``'s certificate on every new connection (the pooled ones dropped)."""
        self.ssl_context = context
        await self.drop_idle()

    async def drop_idle(self) -> None:
        """Close every idle keep-alive connection, so the next request needs a new connect."""
        idle = [c for c in self.connections if c.idle and c.writer is not None]
        for conn in idle:
            assert conn.writer is not None
            conn.writer.close()
        await eventually(lambda: all(c.ended.is_set() for c in idle), "idle connections closed")
        await asyncio.sleep(0.1)  # the client's pool sees the EOF on its next loop iterations

    # The machinery.

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        return task

    def _resume(self) -> None:
        self._accepting = self._spawn(self._accept_loop())

    def _pause(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            self._accepting = None

    def _close_fillers(self) -> None:
        for filler in self._fillers:
            filler.close()
        self._fillers.clear()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            sock, _ = await loop.sock_accept(self._listener)
            conn = Conn(len(self.connections))
            self.connections.append(conn)
            self._spawn(self._serve(conn, sock))

    async def _serve(self, conn: Conn, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            protocol = asyncio.StreamReaderProtocol(conn.reader)
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol, sock, ssl=self.ssl_context
                )
            except OSError:  # ssl.SSLError included: the client refused the certificate
                conn.tls_failed = True
                return
            conn.writer = asyncio.StreamWriter(transport, protocol, conn.reader, loop)
            while await self._one_request(conn):
                pass
        finally:
            if conn.writer is not None:
                conn.writer.close()
            conn.ended.set()

    async def _one_request(self, conn: Conn) -> bool:
        try:
            conn.idle = True
            try:
                async with asyncio.timeout(self.idle_close):
                    head = await conn.reader.readuntil(b"\r\n\r\n")
            except TimeoutError:  # idle too long: closed, whatever part of a request came
                shut_down_now(conn)
                return False
            finally:
                conn.idle = False
            length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            body = await conn.reader.readexactly(int(length[1]) if length else 0)
            self.requests.append(Seen(conn.id, asyncio.get_running_loop().time(), nvp.decode(body)))
            return await self.behaviour(conn)
        except (asyncio.IncompleteReadError, ConnectionError):
            conn.peer_gone.set()
            return False


@pytest.fixture
async def start_fault_server() -> AsyncIterator[Callable[..., Awaitable[FaultServer]]]:
    """Start fake gateways on loopback port 0; all closed afterwards."""
    servers: list[FaultServer] = []

    async def start(ssl_context: ssl.SSLContext | None = None) -> FaultServer:
        server = FaultServer(ssl_context)
        servers.append(server)
        await server.start()
        return server

    yield start
    for server in reversed(servers):
        await server.aclose()


WAYS = ("direct", "tls", "proxied")
"""How the adapter reaches the fake gateway: plain HTTP, HTTPS, HTTPS through a CONNECT proxy."""


@dataclass(frozen=True)
class Reach:
    """A fake gateway, and the adapter options that reach it one of the ``WAYS``."""

    server: FaultServer
    options: Mapping[str, Any]
    way: str = "direct"


@pytest.fixture(params=WAYS)
async def reach(
    request: pytest.FixtureRequest,
    pki: Pki,
    start_fault_server: Callable[..., Awaitable[FaultServer]],
) -> AsyncIterator[Reach]:
    """The fake gateway reached directly, over TLS, or over TLS through a real CONNECT proxy:
    the same client code must read all three the same way."""
    way = request.param
    if way == "direct":
        yield Reach(await start_fault_server(), {})
        return
    server = await start_fault_server(pki.good)
    if way == "tls":
        yield Reach(server, {"ca_file": pki.ca_file}, way)
        return
    proxy = ConnectProxy()
    await proxy.start()
    try:
        yield Reach(server, {"ca_file": pki.ca_file, "proxy": proxy.url}, way)
        assert proxy.tunnels > 0, "the calls went through the proxy"
    finally:
        await proxy.aclose()


async def adapter_for(start_adapter: StartAdapter, url: str, **options: Any) -> Stub:
    """An adapter in front of ``url``, its breaker off so that fault tests do not trip it."""
    return await start_adapter(make_settings(url, breaker_failure_threshold=0, **options))


# --- behaviours -------------------------------------------------------------------------------


def head(status: int, *headers: str, length: int | None = None, content_type: str = "") -> bytes:
    """A status line and headers; ``Content-Length`` when ``length`` is given."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    lines.append(f"Content-Type: {content_type or nvp.CONTENT_TYPE}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode("latin-1")


def answer(body: bytes, status: int = 201, *headers: str, content_type: str = "") -> Behaviour:
    """A complete answer with a Content-Length; the connection stays open for the next one."""
    data = head(status, *headers, length=len(body), content_type=content_type) + body

    async def behaviour(conn: Conn) -> bool:
        conn.write(data)
        await conn.drain()
        return True

    return behaviour


def answer_chunked(body: bytes, status: int = 201) -> Behaviour:
    """A complete answer in 512-byte chunks, with no Content-Length."""
    chunks = [body[i : i + 512] for i in range(0, len(body), 512)]
    data = head(status, "Transfer-Encoding: chunked") + b"".join(
        b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks
    )

    async def behaviour(conn: Conn) -> bool:
        conn.write(data + b"0\r\n\r\n")
        await conn.drain()
        return True

    return behaviour


good = answer(GOOD_BODY)


async def silent(conn: Conn) -> bool:
    """Read the request, answer nothing, and watch for the client to hang up."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while await conn.reader.read(1024):
                pass
            conn.peer_gone.set()
    return False


async def trickle(conn: Conn) -> bool:
    """Headers with a Content-Length of 100, then one byte of body every 100 ms."""
    conn.write(head(201, length=100))
    for _ in range(100):
        try:
            async with asyncio.timeout(0.1):
                if not await conn.reader.read(1024):
                    conn.peer_gone.set()
                    return False
        except TimeoutError:
            conn.write(b"x")
    return False


async def reset_before_response(conn: Conn) -> bool:
    """Read the request, then reset the connection without a byte of answer."""
    conn.reset()
    return False


async def reset_mid_body(conn: Conn) -> bool:
    """Headers and part of the body, a pause so the client reads them, then a reset."""
    conn.write(head(201, length=len(GOOD_BODY)) + GOOD_BODY[:20])
    await conn.drain()
    await asyncio.sleep(0.1)
    conn.reset()
    return False


def headers_only(length: int) -> Behaviour:
    """Headers declaring a body of ``length`` bytes, then nothing until the client hangs up."""

    async def behaviour(conn: Conn) -> bool:
        conn.write(head(201, length=length))
        await conn.drain()
        return await silent(conn)

    return behaviour


async def truncated(conn: Conn) -> bool:
    """A Content-Length larger than the body sent, then a clean close (FIN)."""
    conn.write(head(201, length=len(GOOD_BODY)) + GOOD_BODY[:20])
    await conn.drain()
    return False


# --- helpers ----------------------------------------------------------------------------------


async def eventually(check: Callable[[], bool], what: str, within: float = 2.0) -> None:
    """Wait, bounded, until ``check()`` holds."""
    try:
        async with asyncio.timeout(within):
            while not check():  # noqa: ASYNC110 (polls state no event stands for; bounded)
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"not within {within}s: {what}")


TaskCount = Counter[str]


def adapter_tasks(server: FaultServer) -> TaskCount:
    """The running tasks that are neither this test's nor the fake gateway's, by coroutine.

    Counted by kind, not identity: grpc.aio's server always keeps one pending
    ``_request_registered_call`` waiting for the next RPC, a new task after every call.
    """
    current = asyncio.current_task()
    return Counter(
        getattr(t.get_coro(), "__qualname__", repr(t.get_coro()))
        for t in asyncio.all_tasks()
        if t is not current and t not in server.tasks
    )


async def settled_tasks(server: FaultServer) -> TaskCount:
    await asyncio.sleep(0.05)
    return adapter_tasks(server)


async def assert_no_task_left(baseline: TaskCount, server: FaultServer) -> None:
    """No task beyond ``baseline`` survives once the loop has settled (waits at most 2 s)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2.0):
            while adapter_tasks(server) - baseline:  # noqa: ASYNC110 (no event for "all ended")
                await asyncio.sleep(0.01)
    leftover = adapter_tasks(server) - baseline
    assert not leftover, f"tasks left behind: {dict(leftover)}"


async def create_session(stub: Stub) -> pb.CreateSessionResponse:
    return await stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=DEADLINE)


async def timed_fail(stub: Stub, deadline: float = DEADLINE) -> tuple[Failure, float]:
    """A failing call with an explicit deadline, and how long the caller waited for its answer."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    failure = await fail(stub, deadline=deadline)
    return failure, loop.time() - started


async def assert_next_call_is_clean(
    stub: Stub,
    server: FaultServer,
    baseline: TaskCount,
    caplog: pytest.LogCaptureFixture,
    *,
    avoid: Collection[int] = (),
    reuse: int | None = None,
) -> None:
    """The next good call succeeds on its first attempt, on a connection not in ``avoid`` (or
    on ``reuse``, the keep-alive one), and no task of the adapter's is left over."""
    server.behaviour = good
    before = len(server.requests)
    caplog.clear()
    response = await create_session(stub)
    assert response.result == pb.RESULT_SUCCESS
    assert len(server.requests) == before + 1, "one request for the good call"
    assert not [r for r in caplog.records if "retrying" in r.getMessage()], "no retry"
    conn = server.requests[-1].conn
    assert conn not in avoid, "a broken connection was reused"
    if reuse is not None:
        assert conn == reuse, "the healthy keep-alive connection was not reused"
    await assert_no_task_left(baseline, server)


def retry_delay(failure: Failure) -> float | None:
    retry = failure.details.get(error_details_pb2.RetryInfo)
    if retry is None:
        return None
    assert isinstance(retry, error_details_pb2.RetryInfo)
    return float(retry.retry_delay.ToTimedelta().total_seconds())


@pytest.fixture(autouse=True)
def _debug_upstream_log(caplog: pytest.LogCaptureFixture) -> None:
    """Retries are logged at DEBUG by ``adapter.upstream``: the tests read them."""
    caplog.set_level(logging.DEBUG, logger="adapter.upstream")


# --- the matrix: faults after the request was read --------------------------------------------

UNAVAILABLE, INTERNAL = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED


@dataclass(frozen=True)
class Row:
    """One fault the gateway commits once it has read a request, and what the caller must see."""

    fault: Behaviour
    code: grpc.StatusCode
    reason: str
    metadata: Mapping[str, str]
    """ErrorInfo.metadata exactly, ``attempts`` included."""
    retry_delay: float | None = None
    """RetryInfo's delay; None: no RetryInfo."""
    connection: Literal["reused", "replaced"] = "reused"
    """What the next good call rides on: ``reused`` (the same keep-alive connection) or
    ``replaced`` (a new one: the old one broke)."""
    client_closes: bool = False
    """The adapter itself must close the connection (server side sees the hang-up)."""
    min_gap: float = 0.0
    """The least time between two attempts (Retry-After)."""
    options: Mapping[str, Any] = field(default_factory=dict)


LOST = {"outcome": "UNKNOWN", "attempts": "1"}


def overloaded(status: int, attempts: int, retry_after: str | None = None) -> Row:
    headers = () if retry_after is None else (f"Retry-After: {retry_after}",)
    return Row(
        answer(HTML, status, *headers, content_type="text/html"),
        UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        {"httpStatus": str(status), "attempts": str(attempts)},
        retry_delay=float(retry_after or 1),
        min_gap=float(retry_after or 0) if attempts > 1 else 0.0,
    )


def protocol_error(body: bytes) -> Row:
    return Row(answer(body), INTERNAL, "UPSTREAM_PROTOCOL_ERROR", {"attempts": "1"})


ROWS = {
    "headers never come": Row(
        silent,
        DEADLINE_EXCEEDED,
        "UPSTREAM_TIMEOUT",
        LOST,
        connection="replaced",
        client_closes=True,
    ),
    "body trickles past the deadline": Row(
        trickle,
        DEADLINE_EXCEEDED,
        "UPSTREAM_TIMEOUT",
        LOST,
        connection="replaced",
        client_closes=True,
    ),
    "reset before the response": Row(
        reset_before_response, UNAVAILABLE, "UPSTREAM_UNAVAILABLE", LOST, connection="replaced"
    ),
    "reset mid-body": Row(
        reset_mid_body, UNAVAILABLE, "UPSTREAM_UNAVAILABLE", LOST, connection="replaced"
    ),
    "truncated body": Row(
        truncated, UNAVAILABLE, "UPSTREAM_UNAVAILABLE", LOST, connection="replaced"
    ),
    "HTML 500": Row(
        answer(HTML, 500, content_type="text/html"),
        INTERNAL,
        "UPSTREAM_PROTOCOL_ERROR",
        {"attempts": "1"},
    ),
    "HTML 502, not retried": overloaded(502, attempts=1),
    "HTML 504, not retried": overloaded(504, attempts=1),
    "429, retried": overloaded(429, attempts=3),
    "429 Retry-After 1, waits and stops before the deadline": overloaded(429, 2, "1"),
    "429 Retry-After 30, past the deadline": overloaded(429, 1, "30"),
    "503, retried": overloaded(503, attempts=3),
    "503 Retry-After 1, waits and stops before the deadline": overloaded(503, 2, "1"),
    "503 Retry-After 30, past the deadline": overloaded(503, 1, "30"),
    # A small over-cap body written with its headers arrives in the same read: the client has
    # parsed it whole, to a message boundary with nothing after it, so reusing it is safe.
    "body over the size cap, small, with the headers": Row(
        answer(GOOD_BODY + b"&pad=" + b"x" * 4096),
        INTERNAL,
        "UPSTREAM_PROTOCOL_ERROR",
        {"attempts": "1"},
        connection="reused",
        options={"max_response_bytes": 1024},
    ),
    # The same answer whose body has not come when the adapter reads the headers: the connection
    # is mid-message, so the adapter closes it.
    "body over the size cap, small, after the headers": Row(
        headers_only(length=len(GOOD_BODY) + 5 + 4096),
        INTERNAL,
        "UPSTREAM_PROTOCOL_ERROR",
        {"attempts": "1"},
        connection="replaced",
        client_closes=True,
        options={"max_response_bytes": 1024},
    ),
    "body over the size cap, 1 MiB, Content-Length": Row(
        answer(GOOD_BODY + b"&pad=" + b"x" * MIB),
        INTERNAL,
        "UPSTREAM_PROTOCOL_ERROR",
        {"attempts": "1"},
        connection="replaced",
        client_closes=True,
        options={"max_response_bytes": 1024},
    ),
    "body over the size cap, 1 MiB, chunked": Row(
        answer_chunked(GOOD_BODY + b"&pad=" + b"x" * MIB),
        INTERNAL,
        "UPSTREAM_PROTOCOL_ERROR",
        {"attempts": "1"},
        connection="replaced",
        client_closes=True,
        options={"max_response_bytes": 1024},
    ),
    "invalid UTF-8, raw": protocol_error(GOOD_BODY + b"&note=caf\xe9"),
    "invalid UTF-8, escaped": protocol_error(GOOD_BODY + b"&note=caf%E9"),
    "bad percent-escape": protocol_error(GOOD_BODY + b"&note=100%zz"),
    "truncated percent-escape": protocol_error(GOOD_BODY + b"&note=%4"),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
async def test_fault_after_the_request_was_read(
    row: Row,
    reach: Reach,
    start_adapter: StartAdapter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each fault is answered with the contract's code, reason, metadata and RetryInfo, within the
    caller's deadline, after the right number of attempts, whichever way the gateway is reached;
    then the next good call succeeds on its first attempt on a usable connection, and no task is
    left behind."""
    server = reach.server
    stub = await adapter_for(start_adapter, server.url, **reach.options, **row.options)
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS  # warm-up: one pooled conn
    baseline = await settled_tasks(server)
    first = len(server.requests)

    server.behaviour = row.fault
    failure, elapsed = await timed_fail(stub)

    assert failure.code == row.code
    assert failure.info.reason == row.reason
    assert dict(failure.info.metadata) == row.metadata
    assert retry_delay(failure) == row.retry_delay
    assert elapsed < DEADLINE + SLACK
    attempts = server.requests[first:]
    assert len(attempts) == int(row.metadata["attempts"]), "the gateway saw every attempt"
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert all(gap >= row.min_gap - 0.01 for gap in gaps), gaps
    used = {seen.conn for seen in attempts}
    if row.client_closes:
        for conn in used:
            await asyncio.wait_for(server.connections[conn].peer_gone.wait(), 1.0)
    await assert_next_call_is_clean(
        stub,
        server,
        baseline,
        caplog,
        avoid=used if row.connection == "replaced" else (),
        reuse=attempts[-1].conn if row.connection == "reused" else None,
    )


# --- odd but valid answers --------------------------------------------------------------------

ACCEPTED = {
    # Success is decided by the result field, so the content type is not checked.
    "text/html content type, valid NVP": answer(GOOD_BODY, 200, content_type="text/html"),
    "duplicate keys, last wins": answer(
        b"result=FAILURE&session.updateStatus=FAILURE&"
        + GOOD_BODY
        + b"&result=SUCCESS&session.updateStatus=NO_UPDATE"
    ),
}


@pytest.mark.parametrize("reply", ACCEPTED.values(), ids=ACCEPTED.keys())
async def test_odd_but_valid_answers_are_accepted(
    reply: Behaviour,
    reach: Reach,
    start_adapter: StartAdapter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A valid NVP success body is a success whatever its content type, and a repeated key keeps
    its last value; nothing is retried and the keep-alive connection stays in use."""
    server = reach.server
    stub = await adapter_for(start_adapter, server.url, **reach.options)
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS
    baseline = await settled_tasks(server)
    first = len(server.requests)

    server.behaviour = reply
    response = await create_session(stub)

    assert response.result == pb.RESULT_SUCCESS
    assert response.session.update_status == pb.SESSION_UPDATE_STATUS_NO_UPDATE
    assert dict(response.extra_fields) == {}
    assert len(server.requests) == first + 1
    await assert_next_call_is_clean(
        stub, server, baseline, caplog, reuse=server.requests[first].conn
    )


# --- the matrix: the request never left -------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A trusted CA (the adapter's ``ca_file``) and the server certificates the rows present."""

    ca_file: str
    good: ssl.SSLContext
    untrusted: ssl.SSLContext
    wrong_host: ssl.SSLContext


def _server_context(ca: trustme.CA, host: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(context)
    return context


@pytest.fixture(scope="module")
def cas() -> tuple[trustme.CA, trustme.CA]:
    return trustme.CA(), trustme.CA()


@pytest.fixture
def pki(cas: tuple[trustme.CA, trustme.CA], tmp_path: Path) -> Pki:
    trusted, stranger = cas
    ca_file = tmp_path / "ca.pem"
    trusted.cert_pem.write_to_path(str(ca_file))
    return Pki(
        str(ca_file),
        good=_server_context(trusted, "127.0.0.1"),
        untrusted=_server_context(stranger, "127.0.0.1"),
        wrong_host=_server_context(trusted, "gateway.example"),
    )


@dataclass(frozen=True)
class NeverSent:
    """A fault before any byte of the request left: how to start it and how to end it."""

    begin: Callable[[FaultServer, Pki], Awaitable[None]]
    end: Callable[[FaultServer, Pki], Awaitable[None]]
    tls: bool = False
    message: str = ""
    """Words the status message holds, proving the fault is the one meant."""
    min_elapsed: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)
    attempts: int = 3
    """Safe to send again, so retried; a certificate the adapter refuses is not (it would be
    refused again)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """ErrorInfo.metadata beyond ``attempts``."""
    retry_delay: float | None = 1.0
    """RetryInfo's delay; None: no RetryInfo (a configuration fault, not worth retrying)."""


CERTIFICATE_INVALID = {"tls": "CERTIFICATE_INVALID"}


NEVER_SENT = {
    "connection refused": NeverSent(
        lambda server, _: server.refuse(),
        lambda server, _: server.listen_again(),
        message="connection refused",
    ),
    "connect hangs": NeverSent(
        lambda server, _: server.stall_connects(),
        lambda server, _: server.accept_again(),
        message="timeout",
        min_elapsed=3 * 0.2,  # three connects, each held for the whole connect timeout
        options={"connect_timeout_seconds": 0.2},
    ),
    "untrusted certificate": NeverSent(
        lambda server, pki: server.use_tls(pki.untrusted),
        lambda server, pki: server.use_tls(pki.good),
        tls=True,
        message="unable to get local issuer certificate",
        attempts=1,
        metadata=CERTIFICATE_INVALID,
        retry_delay=None,
    ),
    "host-name mismatch": NeverSent(
        lambda server, pki: server.use_tls(pki.wrong_host),
        lambda server, pki: server.use_tls(pki.good),
        tls=True,
        message="mismatch",
        attempts=1,
        metadata=CERTIFICATE_INVALID,
        retry_delay=None,
    ),
}


@pytest.mark.parametrize("proxied", [False, True], ids=["direct", "proxied"])
@pytest.mark.parametrize("row", NEVER_SENT.values(), ids=NEVER_SENT.keys())
async def test_fault_before_the_request_left(
    row: NeverSent,
    *,
    proxied: bool,
    pki: Pki,
    start_fault_server: Callable[..., Awaitable[FaultServer]],
    start_adapter: StartAdapter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connect that is refused, hangs, or meets a bad certificate never sent the request: it is
    answered UNAVAILABLE/UPSTREAM_UNAVAILABLE with no outcome, within the deadline, retried (3
    attempts, RetryInfo) except for a refused certificate (1 attempt, ``tls=CERTIFICATE_INVALID``,
    no RetryInfo); the gateway saw no request, and the next call is clean. Through a CONNECT
    proxy (to an https gateway: an http one gets the request itself) the same, but for the words:
    the proxy, not the adapter, met the refusal."""
    tls = row.tls or proxied
    server = await start_fault_server(pki.good if tls else None)
    options = {"ca_file": pki.ca_file} if tls else {}
    proxy = ConnectProxy()
    if proxied:
        await proxy.start()
        options["proxy"] = proxy.url
    try:
        await _fault_before_the_request_left(
            row, server, pki, start_adapter=start_adapter, caplog=caplog, options=options
        )
    finally:
        await proxy.aclose()


async def _fault_before_the_request_left(
    row: NeverSent,
    server: FaultServer,
    pki: Pki,
    *,
    start_adapter: StartAdapter,
    caplog: pytest.LogCaptureFixture,
    options: Mapping[str, Any],
) -> None:
    stub = await adapter_for(start_adapter, server.url, **options, **row.options)
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS
    baseline = await settled_tasks(server)
    requests, connections = len(server.requests), len(server.connections)

    await row.begin(server, pki)
    failure, elapsed = await timed_fail(stub)
    opened = len(server.connections) - connections
    await row.end(server, pki)

    assert failure.code == UNAVAILABLE
    assert failure.info.reason == "UPSTREAM_UNAVAILABLE"
    assert dict(failure.info.metadata) == {**row.metadata, "attempts": str(row.attempts)}
    assert retry_delay(failure) == row.retry_delay
    if "proxy" not in options or row.tls:
        assert row.message in failure.message.lower()
    assert row.min_elapsed <= elapsed < DEADLINE + SLACK
    assert len(server.requests) == requests, "no request reached the gateway"
    assert opened == (row.attempts if row.tls else 0), "a TLS handshake per attempt, or none"
    tried = server.connections[connections : connections + opened]
    await eventually(lambda: all(c.tls_failed for c in tried), "every handshake to fail")
    await assert_next_call_is_clean(stub, server, baseline, caplog)


# --- deadlines and cancellation ---------------------------------------------------------------


async def test_caller_deadline_against_a_silent_gateway(
    start_fault_server: Callable[..., Awaitable[FaultServer]],
    start_adapter: StartAdapter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 300 ms deadline against a gateway that never answers: the adapter's own rich
    DEADLINE_EXCEEDED/UPSTREAM_TIMEOUT arrives within 300 ms + 150 ms, the upstream connection is
    closed (seen by the gateway), no task is left and the next call works."""
    server = await start_fault_server()
    stub = await adapter_for(start_adapter, server.url)
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS
    baseline = await settled_tasks(server)
    first = len(server.requests)

    server.behaviour = silent
    failure, elapsed = await timed_fail(stub, deadline=0.3)

    assert elapsed < 0.3 + 0.15
    assert failure.code == DEADLINE_EXCEEDED
    assert failure.info.reason == "UPSTREAM_TIMEOUT"
    assert dict(failure.info.metadata) == {"outcome": "UNKNOWN", "attempts": "1"}
    [seen] = server.requests[first:]
    await asyncio.wait_for(server.connections[seen.conn].peer_gone.wait(), 1.0)
    await assert_next_call_is_clean(stub, server, baseline, caplog, avoid={seen.conn})


async def test_caller_cancels_mid_call(
    start_fault_server: Callable[..., Awaitable[FaultServer]],
    start_adapter: StartAdapter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A caller that cancels while the gateway is silent frees everything: the upstream
    connection is closed (seen by the gateway), no task is left, and the next call works."""
    server = await start_fault_server()
    stub = await adapter_for(start_adapter, server.url)
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS
    baseline = await settled_tasks(server)
    first = len(server.requests)

    server.behaviour = silent
    call = stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=5)
    await eventually(lambda: len(server.requests) > first, "the request to reach the gateway")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(call, 1.0)

    [seen] = server.requests[first:]
    await asyncio.wait_for(server.connections[seen.conn].peer_gone.wait(), 1.0)
    await assert_next_call_is_clean(stub, server, baseline, caplog, avoid={seen.conn})


async def test_caller_deadline_during_a_hanging_connect_is_not_outcome_unknown(
    start_fault_server: Callable[..., Awaitable[FaultServer]],
    start_adapter: StartAdapter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A caller deadline that runs out while the connect still hangs (connect timeout longer than
    the deadline) left no byte of the request on the wire: the caller gets its answer in time,
    DEADLINE_EXCEEDED/UPSTREAM_TIMEOUT with no ``outcome=UNKNOWN`` (the error table keeps that for
    failures after the request was sent), the gateway saw nothing, and the next call is clean.

    The case is determined: the attempt's budget is the deadline, and the client waits for the
    connect only until the exchange's deadline timer fires, which is set before the connect
    begins and comes first. (A connect timeout shorter than the deadline is
    the "connect hangs" row of the fault matrix above: UNAVAILABLE/UPSTREAM_UNAVAILABLE.)"""
    server = await start_fault_server()
    stub = await adapter_for(start_adapter, server.url)  # connect timeout: the default 5 s
    assert (await create_session(stub)).result == pb.RESULT_SUCCESS
    baseline = await settled_tasks(server)
    requests = len(server.requests)

    await server.stall_connects()
    failure, elapsed = await timed_fail(stub, deadline=1.0)
    await server.accept_again()

    assert elapsed < 1.0 + SLACK
    assert len(server.requests) == requests, "no request reached the gateway"
    assert (failure.code, failure.info.reason, dict(failure.info.metadata)) == (
        DEADLINE_EXCEEDED,
        "UPSTREAM_TIMEOUT",
        {"attempts": "1"},
    )
    await assert_next_call_is_clean(stub, server, baseline, caplog)
