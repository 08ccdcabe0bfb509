"""Drain: on a real SIGTERM health turns NOT_SERVING at once while calls are still taken for
``server.drain_seconds``; then the grace period; exit 0."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.config import DEMO_MERCHANT
from tests.test_cli import Start, nvp_adapter

__all__ = ["nvp_adapter"]  # the fixture, shared with test_cli

DRAIN_SECONDS = 2.0
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


def config(tmp_path: Path, drain: float) -> str:
    path = tmp_path / "adapter.toml"
    path.write_text(f"[server]\ndrain_seconds = {drain}\ngrace_seconds = 5\n")
    return str(path)


async def health(channel: grpc.aio.Channel) -> int:
    answer = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=2
    )
    return int(answer.status)


async def not_serving(channel: grpc.aio.Channel) -> None:
    """Watch the overall health until it reads NOT_SERVING (a few seconds at most)."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=5)
    async for answer in watch:
        if answer.status == NOT_SERVING:
            watch.cancel()  # a Watch is a call in flight: it would hold the stop to the grace
            return
    pytest.fail("the Watch stream ended before health read NOT_SERVING")


async def test_sigterm_drains_before_the_port_closes(nvp_adapter: Start, tmp_path: Path) -> None:
    """Health reads NOT_SERVING at once after SIGTERM, a call made during the drain succeeds,
    and the process exits 0 no sooner than the drain."""
    server = await nvp_adapter(
        "serve", "--config", config(tmp_path, DRAIN_SECONDS), "--listen", "127.0.0.1:0"
    )
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        assert await health(channel) == SERVING
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        status = await health(channel)
        while status != NOT_SERVING and time.monotonic() - signalled < 1:
            await asyncio.sleep(0.02)
            status = await health(channel)
        assert status == NOT_SERVING
        assert time.monotonic() - signalled < DRAIN_SECONDS / 2, "NOT_SERVING came late"
        answer = await stub.CreateSession(
            pb.CreateSessionRequest(merchant=DEMO_MERCHANT), timeout=2
        )
        assert time.monotonic() - signalled < DRAIN_SECONDS, "the call was not made in the drain"
        assert answer.session.id.startswith("SESSION0002")
    code = await asyncio.wait_for(server.proc.wait(), DRAIN_SECONDS + 10)
    assert code == 0
    assert time.monotonic() - signalled >= DRAIN_SECONDS
    assert server.proc.stderr is not None
    err = (await server.proc.stderr.read()).decode()
    assert f"draining for {DRAIN_SECONDS:g}s" in err
    assert "Traceback" not in err


async def test_a_second_signal_cuts_the_drain_short(nvp_adapter: Start, tmp_path: Path) -> None:
    """A 60-second drain ends at once on a second SIGTERM: exit 0 within seconds."""
    server = await nvp_adapter("serve", "--config", config(tmp_path, 60), "--listen", "127.0.0.1:0")
    async with grpc.aio.insecure_channel(server.address) as channel:
        assert await health(channel) == SERVING
        server.proc.send_signal(signal.SIGTERM)
        await not_serving(channel)
    server.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.proc.wait(), 10) == 0


async def test_no_drain_by_default(nvp_adapter: Start) -> None:
    """``drain_seconds`` is 0 unless set: SIGTERM with nothing in flight exits within a second
    or two."""
    server = await nvp_adapter("serve", "--listen", "127.0.0.1:0")
    started = time.monotonic()
    code, _, err = await server.stop()
    assert code == 0
    assert "draining" not in err
    assert time.monotonic() - started < 5
