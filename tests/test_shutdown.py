"""Graceful shutdown of the real ``nvp-adapter serve`` process, end to end.

The upstream is a loopback aiohttp server in the test process that holds every request until the
test releases it, so calls are provably in flight when the signal arrives.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.core import nvp

SERVICE = "mpgs.gateway.v1.SessionService"
MERCHANT = "TESTMERCHANT"
GRACE_SECONDS = 10.0
IN_FLIGHT = 100
START_TIMEOUT = 20.0
WAIT = 10.0  # the bound on every wait that should take well under a second
_SCRIPT = Path(sys.executable).with_name("nvp-adapter")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "adapter"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class HeldUpstream:
    """A gateway stand-in that holds each request until ``release`` is set, then answers it.

    Each answer echoes the request's correlationId and carries a session id of its own, so a
    caller can tell that it got the answer to its own request.
    """

    expected: int
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    all_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[dict[str, str]] = field(default_factory=list)
    answered: dict[str, str] = field(default_factory=dict)  # correlationId -> session.id

    async def handle(self, request: web.Request) -> web.Response:
        fields = nvp.decode(await request.read())
        number = len(self.requests)
        self.requests.append(fields)
        if len(self.requests) >= self.expected:
            self.all_arrived.set()
        await self.release.wait()
        session_id = f"SESSION0002{number:020d}"
        correlation_id = fields.get("correlationId", "")
        self.answered[correlation_id] = session_id
        answer = {
            "merchant": fields["merchant"],
            "result": "SUCCESS",
            "session.id": session_id,
            "session.updateStatus": "NO_UPDATE",
            "session.version": "0123456789",
        }
        if correlation_id:
            answer["correlationId"] = correlation_id
        return web.Response(
            body=nvp.encode(answer), status=201, headers={"Content-Type": nvp.CONTENT_TYPE}
        )


@pytest.fixture
async def upstream() -> AsyncIterator[HeldUpstream]:
    held = HeldUpstream(expected=IN_FLIGHT)
    app = web.Application()
    app.router.add_post("/api/nvp/version/{version}", held.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    held.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield held
    held.release.set()  # let any handler still waiting finish before the runner goes
    await runner.cleanup()


@dataclass
class Adapter:
    """A running ``nvp-adapter serve`` process, its address and its stderr file."""

    proc: asyncio.subprocess.Process
    address: str
    stderr: Path

    async def exit_code(self, within: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), within)

    def stderr_text(self) -> str:
        return self.stderr.read_text(errors="replace")


def _config(tmp_path: Path) -> Path:
    """grace_seconds 10, and room for every call in flight in the upstream limits."""
    lines = [
        "[server]",
        f"grace_seconds = {GRACE_SECONDS}",
        "[upstream]",
        "pool_size = 200",
        "max_concurrent_calls = 200",
    ]
    path = tmp_path / "adapter.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def adapter(upstream: HeldUpstream, tmp_path: Path) -> AsyncIterator[Adapter]:
    """``nvp-adapter serve`` on loopback port 0 against the held upstream; killed afterwards."""
    stderr = tmp_path / "adapter.stderr"
    with stderr.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *COMMAND,
            "serve",
            "--config",
            str(_config(tmp_path)),
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream.url,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)).decode()
        match = re.search(r"listening on (\S+) ", line)
        assert match, f"no address in {line!r}; stderr: {stderr.read_text()}"
        yield Adapter(proc, match[1], stderr)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def _watch_until(watch: grpc.aio.UnaryStreamCall[Any, Any], status: int) -> None:
    """Read the Watch stream until it reports ``status``."""
    for _ in range(10):  # a status may repeat, but never more than a few times
        answer = await asyncio.wait_for(watch.read(), WAIT)
        assert isinstance(answer, health_pb2.HealthCheckResponse), "the Watch stream ended"
        if answer.status == status:
            return
    pytest.fail(f"the Watch stream never reported {status}")


def _ending(outcome: pb.CreateSessionResponse | BaseException) -> tuple[grpc.StatusCode, str]:
    """How a call ended: its status code and message (OK and "" for a response)."""
    if isinstance(outcome, grpc.aio.AioRpcError):
        return outcome.code(), outcome.details() or ""
    assert isinstance(outcome, pb.CreateSessionResponse), repr(outcome)
    return grpc.StatusCode.OK, ""


async def test_sigterm_drains_calls_in_flight(adapter: Adapter, upstream: HeldUpstream) -> None:
    """SIGTERM with 100 calls in flight: health turns NOT_SERVING, a new call is refused
    UNAVAILABLE, every call in flight completes OK with its own answer, and the process exits 0
    within the grace period with no traceback."""
    async with grpc.aio.insecure_channel(adapter.address) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=30
        )
        await _watch_until(watch, SERVING)
        ids = [f"in-flight-{n}" for n in range(IN_FLIGHT)]
        calls = [
            asyncio.ensure_future(
                stub.CreateSession(
                    pb.CreateSessionRequest(merchant=MERCHANT, correlation_id=cid), timeout=30
                )
            )
            for cid in ids
        ]
        try:
            await asyncio.wait_for(upstream.all_arrived.wait(), WAIT)
            adapter.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()

            await _watch_until(watch, NOT_SERVING)
            watch.cancel()  # a Watch is a call in flight too: it would hold the stop to the grace
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.CreateSession(
                    pb.CreateSessionRequest(merchant=MERCHANT, correlation_id="too-late"),
                    timeout=5,
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            upstream.release.set()
            responses = await asyncio.wait_for(asyncio.gather(*calls), WAIT)
        finally:
            for call in calls:
                call.cancel()
    code = await adapter.exit_code(GRACE_SECONDS)
    took = time.monotonic() - signalled
    assert code == 0, adapter.stderr_text()
    assert took < GRACE_SECONDS, f"exited {took:.1f}s after SIGTERM"
    assert [r.correlation_id for r in responses] == ids
    for cid, response in zip(ids, responses, strict=True):
        assert response.result == pb.RESULT_SUCCESS
        assert response.session.id == upstream.answered[cid]
    assert len({r.session.id for r in responses}) == IN_FLIGHT
    assert sorted(r["correlationId"] for r in upstream.requests) == sorted(ids), (
        "the refused call must never reach the upstream"
    )
    assert "Traceback" not in adapter.stderr_text()


async def test_second_sigterm_stops_at_once(adapter: Adapter, upstream: HeldUpstream) -> None:
    """A second SIGTERM during the graceful stop ends it at once: calls held by the upstream
    end with grpc's UNAVAILABLE "Cancelling all calls" (README's error table) instead of hanging,
    and the process exits 0 (as docs/errors.md says of the first signal; the second only cuts the
    grace short) well before the grace period, with no traceback."""
    held = 10
    upstream.expected = held
    async with grpc.aio.insecure_channel(adapter.address) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=30
        )
        await _watch_until(watch, SERVING)
        calls = [
            asyncio.ensure_future(
                stub.CreateSession(
                    pb.CreateSessionRequest(merchant=MERCHANT, correlation_id=f"held-{n}"),
                    timeout=30,
                )
            )
            for n in range(held)
        ]
        try:
            await asyncio.wait_for(upstream.all_arrived.wait(), WAIT)
            adapter.proc.send_signal(signal.SIGTERM)
            await _watch_until(watch, NOT_SERVING)  # the graceful stop has begun
            adapter.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), WAIT)
        finally:
            watch.cancel()
            for call in calls:
                call.cancel()
        code = await adapter.exit_code(WAIT)
        took = time.monotonic() - signalled
    assert code == 0, adapter.stderr_text()
    assert took < GRACE_SECONDS / 2, f"exited {took:.1f}s after the second SIGTERM"
    endings = [_ending(outcome) for outcome in outcomes]
    assert endings == [(grpc.StatusCode.UNAVAILABLE, "Cancelling all calls")] * held
    assert "Traceback" not in adapter.stderr_text()
