"""The embedded gateway's HTTP face under slow and greedy clients: real sockets on loopback.

The connection cap, the request timeout (slowloris), the idle keep-alive timeout, refusals logged
once per interval, and descriptors given back, each with small limits so that a test takes a
second or two.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from adapter.config import GatewaySettings
from adapter.core import nvp
from adapter.embedded import EmbeddedGateway, start_http_gateway
from tests.test_cli import COMMAND, START_TIMEOUT

MERCHANT = "TESTMERCHANT"
PASSWORD = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
BODY = nvp.encode(
    {
        "apiOperation": "CREATE_SESSION",
        "apiUsername": f"merchant.{MERCHANT}",
        "apiPassword": PASSWORD,
        "merchant": MERCHANT,
    }
)
HOST = "127.0.0.1"
LOGGER = "adapter.embedded.http"


def request(body: bytes = BODY, *, close: bool = False) -> bytes:
    """One whole HTTP/1.1 NVP request."""
    connection = b"Connection: close\r\n" if close else b""
    return (
        b"POST /api/nvp/version/100 HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        + connection
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def limits(
    max_connections: int = 64, request_timeout: float = 5.0, keepalive_timeout: float = 5.0
) -> GatewaySettings:
    return GatewaySettings(
        max_connections=max_connections,
        request_timeout_seconds=request_timeout,
        keepalive_timeout_seconds=keepalive_timeout,
    )


Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start the HTTP face with given limits on loopback port 0; returns the port."""
    runners = []

    async def start(settings: GatewaySettings, log_interval: float = 10.0) -> int:
        gateway = EmbeddedGateway({MERCHANT: PASSWORD})
        runner, port = await start_http_gateway(
            gateway, HOST, 0, settings=settings, log_interval=log_interval
        )
        runners.append(runner)
        return port

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one whole response off a kept-alive connection; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length:"))
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def post_once(port: int, within: float = 2.0) -> int | None:
    """One request on a new connection: the HTTP status, or None if it was closed unanswered."""
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                writer.write(request(close=True))
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    return int(status_line.split()[1]) if status_line else None


async def until_closed(
    reader: asyncio.StreamReader, limit: float, since: float | None = None
) -> float:
    """Seconds until the server closes this connection (EOF or reset), counted from ``since``
    (the loop's clock; now if None), ``limit`` at most."""
    loop = asyncio.get_running_loop()
    start = loop.time() if since is None else since
    try:
        async with asyncio.timeout(limit):
            while await reader.read(4096):
                pass
    except ConnectionResetError:
        pass
    return loop.time() - start


async def slow_client(port: int, interval: float = 0.1, limit: float = 5.0) -> float:
    """Slowloris: a request line, then one header line every ``interval`` s, never the end.

    Returns the seconds from connecting until the server closed the connection.
    """
    connecting = asyncio.get_running_loop().time()  # before the server can start its clock
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"POST /api/nvp/version/100 HTTP/1.1\r\nHost: localhost\r\n")

    async def trickle() -> None:
        for n in range(int(limit / interval)):
            await asyncio.sleep(interval)
            if writer.is_closing():
                return
            writer.write(b"X-Slow-%d: 1\r\n" % n)

    trickling = asyncio.create_task(trickle())
    try:
        return await until_closed(reader, limit, connecting)
    finally:
        trickling.cancel()
        writer.close()


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` connections that send nothing; give the server a moment to count them."""
    writers = []
    for _ in range(count):
        writers.append((await asyncio.open_connection(HOST, port))[1])
    await asyncio.sleep(0.1)
    return writers


async def refused(port: int) -> bool:
    """Whether a new connection that sends nothing is closed by the server within 0.5 s."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        return await until_closed(reader, 0.5) < 0.5
    finally:
        writer.close()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING
    ]


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- the request timeout: slowloris ---------------------------------------------------------------


async def test_slow_clients_are_closed_by_the_request_timeout(serve: Serve) -> None:
    """Clients that trickle header lines and never finish are closed once the timeout is up."""
    port = await serve(limits(request_timeout=0.5))
    held = await asyncio.gather(*(slow_client(port) for _ in range(32)))
    assert max(held) < 1.5


async def test_slow_clients_are_not_closed_before_the_timeout(serve: Serve) -> None:
    """A connection is given the whole request timeout before it is closed."""
    port = await serve(limits(request_timeout=0.6))
    held = await asyncio.gather(*(slow_client(port) for _ in range(8)))
    assert min(held) >= 0.55


async def test_a_slow_request_that_arrives_in_time_is_answered(serve: Serve) -> None:
    """A request sent in pieces over 0.5 s, with a 2 s timeout, is answered as usual."""
    port = await serve(limits(request_timeout=2.0))
    reader, writer = await asyncio.open_connection(HOST, port)
    whole = request()
    for start in range(0, len(whole), len(whole) // 5 + 1):
        writer.write(whole[start : start + len(whole) // 5 + 1])
        await asyncio.sleep(0.1)
    status = await asyncio.wait_for(read_response(reader), 2.0)
    writer.close()
    assert status == 201


async def test_a_normal_client_is_answered_once_slow_clients_time_out(serve: Serve) -> None:
    """Slow clients that fill every slot hold a normal client off until the gateway times them
    out, not for as long as they would hold on (their own limit is 10 s)."""
    port = await serve(limits(max_connections=8, request_timeout=0.6))
    loop = asyncio.get_running_loop()
    started = loop.time()
    attack = [asyncio.create_task(slow_client(port, limit=10.0)) for _ in range(8)]
    await asyncio.sleep(0.2)
    answered_after = float("inf")
    for _ in range(50):  # 5 s at most
        if await post_once(port, within=0.5) == 201:
            answered_after = loop.time() - started
            break
        await asyncio.sleep(0.1)
    cut_after = await asyncio.gather(*attack)
    assert max(cut_after) < 10.0, "the gateway closed every slow connection itself"
    assert answered_after < max(cut_after) + 2.0, "answered soon after the slots were freed"


# --- the connection cap ---------------------------------------------------------------------------


async def test_a_connection_past_the_cap_is_closed_at_once(serve: Serve) -> None:
    """With the cap reached, a new connection is closed before it sends a byte."""
    port = await serve(limits(max_connections=4))
    holders = await open_idle(port, 4)
    try:
        assert await refused(port)
    finally:
        for writer in holders:
            writer.close()


async def test_the_cap_frees_a_slot_when_a_connection_closes(serve: Serve) -> None:
    """Once connections holding the cap close, a new client is served again."""
    port = await serve(limits(max_connections=4))
    holders = await open_idle(port, 4)
    assert await refused(port), "the cap is full"
    for writer in holders:
        writer.close()
    statuses = []
    for _ in range(20):  # 2 s at most for the server to see the closes
        statuses.append(await post_once(port))
        if statuses[-1] is not None:
            break
        await asyncio.sleep(0.1)
    assert statuses[-1] == 201


async def test_refused_connections_do_not_count_against_the_cap(serve: Serve) -> None:
    """Many refusals in a row leave the cap's count where it was: the slots still free serve."""
    port = await serve(limits(max_connections=3))
    holders = await open_idle(port, 2)
    extra = await open_idle(port, 1)
    for _ in range(30):
        await refused(port)
    extra[0].close()
    await asyncio.sleep(0.1)
    status = await post_once(port)
    for writer in holders:
        writer.close()
    assert status == 201


# --- keep-alive -----------------------------------------------------------------------------------


async def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(serve: Serve) -> None:
    """After its response, a kept-alive connection that sends nothing is closed after 0.5 s."""
    port = await serve(limits(keepalive_timeout=0.5))
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(request())
    assert await read_response(reader) == 201
    idle = await until_closed(reader, 5.0)
    writer.close()
    assert 0.4 <= idle < 1.5


async def test_a_kept_alive_connection_may_wait_past_the_request_timeout(serve: Serve) -> None:
    """Between requests the idle timeout applies, not the request timeout: a second request
    0.5 s later, with a 0.2 s request timeout and a 2 s idle one, is answered."""
    port = await serve(limits(request_timeout=0.2, keepalive_timeout=2.0))
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(request())
    await read_response(reader)
    await asyncio.sleep(0.5)
    writer.write(request())
    status = await asyncio.wait_for(read_response(reader), 2.0)
    writer.close()
    assert status == 201


async def test_the_next_request_on_a_kept_alive_connection_is_timed_too(serve: Serve) -> None:
    """A kept-alive connection that starts a second request and trickles it is closed too."""
    port = await serve(limits(request_timeout=0.5, keepalive_timeout=5.0))
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(request())
    await read_response(reader)
    writer.write(b"POST /api/nvp/version/100 HTTP/1.1\r\n")
    held = await until_closed(reader, 5.0)
    writer.close()
    assert held < 1.5


# --- refusals in the log --------------------------------------------------------------------------


async def test_a_burst_of_refusals_is_one_log_line(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """30 connections refused at the cap: one WARNING line with the count, after the interval."""
    caplog.set_level(logging.WARNING, LOGGER)
    port = await serve(limits(max_connections=2), log_interval=0.5)
    holders = await open_idle(port, 2)
    await asyncio.gather(*(refused(port) for _ in range(30)))
    await asyncio.sleep(0.7)
    for writer in holders:
        writer.close()
    assert warnings(caplog) == ["in the last 0.5 s: refused 30 connections at the 2-connection cap"]


async def test_steady_refusals_are_logged_at_most_once_per_interval(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """Refusals without pause for 0.8 s, with a 0.25 s interval, make at most 5 lines."""
    caplog.set_level(logging.WARNING, LOGGER)
    port = await serve(limits(max_connections=1), log_interval=0.25)
    holders = await open_idle(port, 1)
    loop = asyncio.get_running_loop()
    end = loop.time() + 0.8
    count = 0
    while loop.time() < end:
        count += await refused(port)
    await asyncio.sleep(0.3)
    holders[0].close()
    assert count > 20, "refusals happened"
    assert len(warnings(caplog)) <= 5


async def test_request_timeouts_are_counted_in_the_log(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """Connections closed by the request timeout are counted in the interval's one line."""
    caplog.set_level(logging.WARNING, LOGGER)
    port = await serve(limits(request_timeout=0.3), log_interval=0.5)
    await asyncio.gather(*(slow_client(port) for _ in range(5)))
    await asyncio.sleep(1.0)  # the interval began at the first timeout
    assert warnings(caplog) == [
        "in the last 0.5 s: closed 5 connections whose request had not arrived within 0.3 s"
    ]


# --- resources ------------------------------------------------------------------------------------


async def test_descriptors_return_to_their_baseline_after_an_attack(serve: Serve) -> None:
    """100 slow clients against a cap of 32: once they are gone, so are their descriptors."""
    port = await serve(limits(max_connections=32, request_timeout=0.5))
    baseline = open_descriptors()
    await asyncio.gather(*(slow_client(port) for _ in range(100)))
    now = open_descriptors()
    for _ in range(30):  # 3 s at most for the last closes to land
        if now <= baseline:  # fewer is fine: other tests' sockets may be collected meanwhile
            break
        await asyncio.sleep(0.1)
        now = open_descriptors()
    assert now <= baseline


async def test_running_out_of_descriptors_logs_a_count_not_tracebacks(tmp_path: Path) -> None:
    """`nvp-adapter gateway` with a 40-descriptor limit, sent 100 connections: accept()
    fails with EMFILE, and stderr counts it in one line with no traceback."""
    config = tmp_path / "gateway.toml"
    config.write_text("[gateway]\nmax_connections = 1000\nrequest_timeout_seconds = 1\n")
    stderr_path = tmp_path / "stderr"

    def limit_descriptors() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, hard))

    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *COMMAND,
            "gateway",
            "--config",
            str(config),
            "--listen",
            f"{HOST}:0",
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            preexec_fn=limit_descriptors,
        )
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)).decode()
            port = int(line.split("/api/")[0].rsplit(":", 1)[1])
            clients = []
            for _ in range(100):
                clients.append((await asyncio.open_connection(HOST, port))[1])
            await asyncio.sleep(0.5)
            for writer in clients:
                writer.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 15)
    err = stderr_path.read_text()
    assert "for want of file descriptors" in err, "accept() did fail"
    assert "Traceback" not in err, err[-2000:]
