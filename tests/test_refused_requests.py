"""Requests aiohttp refuses, on both HTTP faces (the embedded gateway's and ``/metrics``): a fixed
answer, and at most one log line each, rate-limited, never holding any part of the request.

Real servers on loopback port 0, raw sockets, a recognisable secret in every malformed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from adapter.app import build_server
from adapter.config import MetricsSettings
from adapter.embedded import EmbeddedGateway, start_http_gateway
from tests.conftest import make_settings
from tests.test_cli import COMMAND, START_TIMEOUT

HOST = "127.0.0.1"
SECRET = b"S3CRETpw0rd4711"
BODY = b"apiOperation=CREATE_SESSION&apiPassword=" + SECRET + b"&merchant=TESTMERCHANT"
MALFORMED = {
    "bare LF line endings": (
        b"POST /api/nvp/version/100 HTTP/1.1\nHost: x\nContent-Length: %d\n\n" % len(BODY) + BODY
    ),
    "a control character in a header": (
        b"POST /api/nvp/version/100 HTTP/1.1\r\nHost: x\r\nX-Note: " + SECRET + b"\x01\r\n\r\n"
    ),
    "a bad request line": b"POST /api/nvp/" + SECRET + b" HTTP/9.9\r\nHost: x\r\n\r\n",
    "a bad chunk size": (
        b"POST /api/nvp/version/100 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + BODY
        + b"\r\n\r\n"
    ),
}
"""Each quotes its bytes, the secret with them, in aiohttp's own error message."""
FIXED_ANSWERS = {b"400 Bad Request\n", b"500 Internal Server Error\n"}

Listen = Callable[[], Awaitable[tuple[int, str]]]


@pytest.fixture(params=["gateway", "metrics"])
async def listener(request: pytest.FixtureRequest) -> AsyncIterator[Listen]:
    """Starts the face the test is for on loopback port 0: its port and its logger's name."""
    async with contextlib.AsyncExitStack() as stack:

        async def start() -> tuple[int, str]:
            if request.param == "gateway":
                gateway = EmbeddedGateway({"TESTMERCHANT": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"})
                runner, port = await start_http_gateway(gateway, HOST, 0)
                stack.push_async_callback(runner.cleanup)
                return port, "adapter.embedded.http"
            settings = dataclasses.replace(
                make_settings(), metrics=MetricsSettings(listen=f"{HOST}:0")
            )
            server = await stack.enter_async_context(build_server(settings))
            return server.metrics_port, "adapter.metrics"

        yield start


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the server answers before closing it."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(data)
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


def body_of(answer: bytes) -> bytes:
    return answer.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_refused_request_shows_in_no_log_line_and_no_answer(
    listener: Listen, caplog: pytest.LogCaptureFixture, data: bytes
) -> None:
    """At every level, no log record holds any part of a malformed request, nor does the answer,
    a fixed short text; the refusal is at most one line."""
    caplog.set_level(logging.DEBUG)
    port, _ = await listener()
    answer = await exchange(port, data)
    await asyncio.sleep(0.05)

    assert SECRET not in answer
    assert answer.startswith(b"HTTP/1.")
    status = int(answer.split()[1])
    assert status >= 400
    if status in (400, 500):
        assert body_of(answer) in FIXED_ANSWERS
    logged = [r for r in caplog.records if r.name.startswith(("adapter", "aiohttp"))]
    assert SECRET.decode() not in caplog.text
    assert all(r.exc_info is None for r in logged)
    assert len([r for r in logged if "refused a request" in r.getMessage()]) <= 1


async def test_a_request_with_bare_line_feeds_is_one_line_naming_its_error(
    listener: Listen, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe's request (bare LFs, a password in the body): 400 with a fixed text, and one
    WARNING line that names the parser's error and the peer, nothing of the request."""
    caplog.set_level(logging.DEBUG)
    port, logger = await listener()
    answer = await exchange(port, MALFORMED["bare LF line endings"])
    await asyncio.sleep(0.05)
    assert answer.startswith(b"HTTP/1.0 400 ")
    assert body_of(answer) == b"400 Bad Request\n"
    lines = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if "request" in r.msg]
    assert lines == [
        (logger, logging.WARNING, "refused a request from 127.0.0.1: 400, BadStatusLine")
    ]


async def test_the_gateways_debug_line_names_only_fields_it_knows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A password after a mistyped ``=`` is part of a field name: the DEBUG line lists the names
    the gateway knows and only counts the others."""
    caplog.set_level(logging.DEBUG)
    gateway = EmbeddedGateway({"TESTMERCHANT": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"})
    runner, port = await start_http_gateway(gateway, HOST, 0)
    try:
        body = b"apiOperation=CREATE_SESSION&merchant=TESTMERCHANT&apiPassword:" + SECRET + b"="
        head = b"POST /api/nvp/version/100 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        answer = await exchange(port, head % len(body) + b"Connection: close\r\n\r\n" + body)
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.1 401 ")  # no apiPassword
    lines = [r.getMessage() for r in caplog.records if r.name == "adapter.embedded.http"]
    assert lines == [
        'POST /api/nvp/version/100: 401; fields ["apiOperation", "merchant"] and 1 other'
    ]
    assert SECRET.decode() not in caplog.text


async def test_a_flood_of_refused_requests_writes_ten_lines_a_second(
    listener: Listen, caplog: pytest.LogCaptureFixture
) -> None:
    """500 malformed requests as fast as they go: at most 10 lines a second and one count of
    the rest per second; the lines and the counts add up to the 500."""
    caplog.set_level(logging.DEBUG)
    port, logger = await listener()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(500):
        await exchange(port, MALFORMED["bare LF line endings"])
    seconds = loop.time() - started
    await asyncio.sleep(1.1)  # the last second's count

    lines = [r.getMessage() for r in caplog.records if r.name == logger]
    refused = [line for line in lines if line.startswith("refused a request")]
    counts = [
        re.fullmatch(r"\(([\d,]+) similar suppressed in the last second\)", line) for line in lines
    ]
    suppressed = sum(int(m[1].replace(",", "")) for m in counts if m is not None)
    windows = math.ceil(seconds) + 1
    assert len(refused) + suppressed == 500
    assert len(refused) <= 10 * windows
    assert len(lines) <= 11 * windows
    assert sum(len(line) for line in lines) < 100 * 11 * windows


async def test_the_gateway_process_logs_no_request_at_its_default_level() -> None:
    """``nvp-adapter gateway`` at its default log level: the probe's request leaves neither the
    secret nor a traceback on stderr, only the one line about it."""
    proc = await asyncio.create_subprocess_exec(
        *COMMAND,
        "gateway",
        "--listen",
        f"{HOST}:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)).decode()
        port = int(line.split("/api/")[0].rsplit(":", 1)[1])
        answer = await exchange(port, MALFORMED["bare LF line endings"])
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    err = stderr.decode()
    assert proc.returncode == 0
    assert SECRET not in answer
    assert SECRET.decode() not in err
    assert "Traceback" not in err
    assert err.count("refused a request") == 1
