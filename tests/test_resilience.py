"""Retries, the bound on calls in flight, and the circuit breaker, through real servers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import socket
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.core import nvp
from adapter.core.errors import GatewayRejected, UpstreamUnavailable
from adapter.observability.logs import json_formatter
from adapter.upstream.calls import UpstreamClient
from adapter.upstream.transport import HttpTransport
from tests.conftest import (
    MERCHANT,
    ScriptedUpstream,
    StartAdapter,
    fail,
    make_settings,
)

if TYPE_CHECKING:  # the stub type grpc.aio channels give; it exists for type checkers only
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

SERVICE = "mpgs.gateway.v1.SessionService"
SUCCESS = (
    "merchant=TESTMERCHANT&result=SUCCESS&session.id=SESSION0002AAAAAAAAAAAAAAAAAAAA"
    "&session.updateStatus=NO_UPDATE&session.version=0123456789"
)
BUSY = nvp.encode({"error.cause": "SERVER_BUSY", "error.explanation": "Busy", "result": "ERROR"})
REQUEST = pb.CreateSessionRequest(merchant=MERCHANT)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(upstream: ScriptedUpstream, *replies: tuple[int, bytes | str, dict[str, str]]) -> None:
    """Answer the given replies in turn, then keep answering the last one."""
    queue = list(replies)

    async def handler(_: web.Request) -> web.Response:
        status, body, headers = queue.pop(0) if len(queue) > 1 else queue[0]
        return web.Response(status=status, body=body, headers=headers)

    upstream.handler = handler


async def test_retry_honours_retry_after(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A 503 with Retry-After: 1 is retried no sooner than a second later, then succeeds."""
    answers(scripted_upstream, (503, "busy", {"Retry-After": "1"}), (201, SUCCESS, {}))
    stub = await start_adapter(make_settings(scripted_upstream.url))
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await stub.CreateSession(REQUEST, timeout=5)
    assert loop.time() - started >= 1.0
    assert response.result == pb.RESULT_SUCCESS
    assert len(scripted_upstream.requests) == 2


async def test_server_busy_then_success(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """SERVER_BUSY twice, then success: the caller sees only the success."""
    answers(scripted_upstream, (503, BUSY, {}), (503, BUSY, {}), (201, SUCCESS, {}))
    stub = await start_adapter(make_settings(scripted_upstream.url))
    response = await stub.CreateSession(REQUEST, timeout=5)
    assert response.result == pb.RESULT_SUCCESS
    assert len(scripted_upstream.requests) == 3


async def test_no_retry_past_the_deadline(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A Retry-After longer than the caller's time left ends the call at once, with the advice."""
    answers(scripted_upstream, (503, "busy", {"Retry-After": "3"}))
    stub = await start_adapter(make_settings(scripted_upstream.url))
    loop = asyncio.get_running_loop()
    started = loop.time()
    failure = await fail(stub, deadline=1.0)
    assert loop.time() - started < 0.5
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.info.metadata["attempts"] == "1"
    retry = failure.details[error_details_pb2.RetryInfo]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 3


async def test_retries_can_be_turned_off(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """retry_max_attempts = 1 makes exactly one attempt."""
    answers(scripted_upstream, (503, BUSY, {}))
    stub = await start_adapter(make_settings(scripted_upstream.url, retry_max_attempts=1))
    failure = await fail(stub)
    assert failure.info.metadata["attempts"] == "1"
    assert len(scripted_upstream.requests) == 1


async def test_an_operation_not_declared_repeatable(scripted_upstream: ScriptedUpstream) -> None:
    """An operation that does not declare itself repeatable (one that moves money) is retried
    only when its request never left: SERVER_BUSY is final after one attempt."""
    answers(scripted_upstream, (503, BUSY, {}))
    settings = make_settings(scripted_upstream.url)
    fields = {"apiOperation": "PAY", "merchant": MERCHANT}
    async with UpstreamClient(
        HttpTransport(settings.upstream), settings.upstream, settings.merchants
    ) as client:
        with pytest.raises(GatewayRejected) as busy:
            await client.call(fields, 5.0, repeatable=False)
    assert busy.value.attempts == 1
    assert len(scripted_upstream.requests) == 1

    refused = make_settings(f"http://127.0.0.1:{closed_port()}")
    async with UpstreamClient(
        HttpTransport(refused.upstream), refused.upstream, refused.merchants
    ) as client:
        with pytest.raises(UpstreamUnavailable) as unsent:
            await client.call(fields, 5.0, repeatable=False)
    assert unsent.value.attempts == 3


@pytest.fixture
async def held_upstream(scripted_upstream: ScriptedUpstream) -> AsyncIterator[HeldUpstream]:
    held = HeldUpstream()
    scripted_upstream.handler = held.handle
    yield held
    held.release.set()


class HeldUpstream:
    """Holds every request until released, counting how many are held at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.now = 0
        self.most = 0

    async def handle(self, _: web.Request) -> web.Response:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await self.release.wait()
        finally:
            self.now -= 1
        return web.Response(status=201, body=SUCCESS)


async def burst(
    stub: Stub, calls: int
) -> list[grpc.aio.UnaryUnaryCall[pb.CreateSessionRequest, pb.CreateSessionResponse]]:
    return [stub.CreateSession(REQUEST, timeout=10) for _ in range(calls)]


async def outcome(
    call: grpc.aio.UnaryUnaryCall[pb.CreateSessionRequest, pb.CreateSessionResponse],
) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_overload_is_refused_quickly(
    scripted_upstream: ScriptedUpstream, held_upstream: HeldUpstream, start_adapter: StartAdapter
) -> None:
    """Ten times the bound of calls at once: the bound goes upstream, the rest are refused
    UNAVAILABLE (ADAPTER_OVERLOADED, with RetryInfo) after the slot wait, not queued without end."""
    settings = make_settings(
        scripted_upstream.url, max_concurrent_calls=4, queue_timeout_seconds=0.2
    )
    stub = await start_adapter(settings)
    loop = asyncio.get_running_loop()
    started = loop.time()
    pending = [asyncio.ensure_future(outcome(c)) for c in await burst(stub, 40)]
    refused = []
    for next_done in asyncio.as_completed(pending, timeout=5):
        refused.append(await next_done)
        if len(refused) == 36:
            break
    assert loop.time() - started < 3.0, "refused after the slot wait, not the 10 s deadline"
    assert refused == [grpc.StatusCode.UNAVAILABLE] * 36
    assert held_upstream.now == held_upstream.most == 4
    failure = await asyncio.wait_for(fail(stub, deadline=5.0), 2.0)
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.info.reason == "ADAPTER_OVERLOADED"
    assert error_details_pb2.RetryInfo in failure.details
    held_upstream.release.set()
    codes = await asyncio.wait_for(asyncio.gather(*pending), 5.0)
    assert codes.count(grpc.StatusCode.OK) == 4
    assert held_upstream.most == 4


async def test_calls_past_max_concurrent_rpcs_are_refused_with_a_status_and_a_line(
    scripted_upstream: ScriptedUpstream,
    held_upstream: HeldUpstream,
    start_adapter: StartAdapter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With ``max_concurrent_rpcs = 2``, 20 slow calls at once: 2 go upstream, the other 18 are
    refused at once, each RESOURCE_EXHAUSTED ``SERVER_OVERLOADED`` with an access line (never a
    bare CANCELLED or grpc's own detail-less refusal)."""
    caplog.set_level(logging.INFO, logger="adapter.access")
    settings = make_settings(scripted_upstream.url)
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, max_concurrent_rpcs=2)
    )
    stub = await start_adapter(settings)

    async def ending() -> tuple[grpc.StatusCode, str]:
        call = stub.CreateSession(REQUEST, timeout=10)
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call
        status = await rpc_status.aio.from_call(call)
        info = error_details_pb2.ErrorInfo()
        if status is not None:
            status.details[0].Unpack(info)
        return await call.code(), info.reason

    calls = [asyncio.ensure_future(ending()) for _ in range(20)]
    for ended, next_done in enumerate(asyncio.as_completed(calls, timeout=3), start=1):
        await next_done
        if ended == 18:
            break
    held_upstream.release.set()
    endings = Counter(await asyncio.wait_for(asyncio.gather(*calls), 5.0))
    assert endings == {
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_OVERLOADED"): 18,
        (grpc.StatusCode.OK, ""): 2,
    }
    lines = Counter(
        (r.code, getattr(r, "reason", None))  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "adapter.access"
    )
    assert lines == {("RESOURCE_EXHAUSTED", "SERVER_OVERLOADED"): 18, ("OK", None): 2}


async def overload_once(
    stub: Stub, held: HeldUpstream, calls: int, bound: int
) -> Counter[grpc.StatusCode]:
    """``calls`` calls at once against an upstream that holds every request: the ones past
    ``bound`` are refused after the slot wait while ``bound`` are held, and only then are the
    held ones released. How the calls ended, counted by code."""
    held.release.clear()
    pending = [asyncio.ensure_future(outcome(c)) for c in await burst(stub, calls)]
    for ended, next_done in enumerate(asyncio.as_completed(pending, timeout=5), start=1):
        await next_done
        if ended == calls - bound:
            break
    held.release.set()
    return Counter(await asyncio.wait_for(asyncio.gather(*pending), 5.0))


@contextlib.contextmanager
def access_lines_written_not_kept() -> Iterator[None]:
    """The access lines are formatted and written, as in production, but to /dev/null alone: the
    test runner's log capture keeps every record (its handlers join when the test's call
    begins, so this runs inside the test), and that growth would be counted as the adapter's."""
    logger = logging.getLogger("adapter.access")
    saved = logger.handlers[:], logger.propagate
    with open(os.devnull, "w") as devnull:
        handler = logging.StreamHandler(devnull)
        handler.setFormatter(json_formatter())
        logger.handlers[:] = [handler]
        logger.propagate = False
        try:
            yield
        finally:
            logger.handlers[:], logger.propagate = saved


async def test_memory_stays_bounded_under_repeated_overload(
    scripted_upstream: ScriptedUpstream, held_upstream: HeldUpstream, start_adapter: StartAdapter
) -> None:
    """Bursts of ten times the bound (each refusing 72 calls and answering 8) leave nothing
    behind: Python memory after the fifth burst is within 512 KiB of memory after the first."""
    settings = make_settings(
        scripted_upstream.url, max_concurrent_calls=8, queue_timeout_seconds=0.05
    )
    stub = await start_adapter(settings)
    sizes = []
    with access_lines_written_not_kept():
        tracemalloc.start()
        try:
            for _ in range(5):
                codes = await overload_once(stub, held_upstream, calls=80, bound=8)
                assert codes == Counter({grpc.StatusCode.UNAVAILABLE: 72, grpc.StatusCode.OK: 8})
                scripted_upstream.requests.clear()
                gc.collect()
                sizes.append(tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()
    assert sizes[-1] - sizes[0] < 512 * 1024, sizes


async def test_breaker_fails_fast_and_reports_health(scripted_upstream: ScriptedUpstream) -> None:
    """After three transport failures in a row calls fail fast with circuit=OPEN and the
    service's health turns NOT_SERVING while the overall health stays SERVING; after the
    cool-down one probe goes through, succeeds, and the circuit closes."""
    answers(scripted_upstream, (502, "<html>bad gateway</html>", {"Content-Type": "text/html"}))
    settings = make_settings(
        scripted_upstream.url, breaker_failure_threshold=3, breaker_cooldown_seconds=0.5
    )
    async with (
        build_server(settings) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        for _ in range(3):
            assert (await fail(stub)).info.metadata.get("circuit") is None
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert overall.status == health_pb2.HealthCheckResponse.SERVING

        loop = asyncio.get_running_loop()
        started = loop.time()
        fast = await fail(stub)
        assert loop.time() - started < 0.2
        assert fast.code == grpc.StatusCode.UNAVAILABLE
        assert fast.info.reason == "UPSTREAM_UNAVAILABLE"
        assert fast.info.metadata["circuit"] == "OPEN"
        assert error_details_pb2.RetryInfo in fast.details
        assert len(scripted_upstream.requests) == 3, "the open circuit sent nothing"

        answers(scripted_upstream, (201, SUCCESS, {}))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        response = await stub.CreateSession(REQUEST, timeout=5)
        assert response.result == pb.RESULT_SUCCESS
        assert (await stub.CreateSession(REQUEST, timeout=5)).result == pb.RESULT_SUCCESS
        watch.cancel()


async def test_gateway_errors_do_not_open_the_circuit(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A gateway that answers, even with errors, is up: its errors never open the circuit."""
    error = nvp.encode({"error.cause": "SERVER_FAILED", "result": "ERROR"})
    answers(scripted_upstream, (500, error, {}))
    stub = await start_adapter(make_settings(scripted_upstream.url, breaker_failure_threshold=2))
    for _ in range(5):
        failure = await fail(stub)
        assert failure.info.reason == "SERVER_FAILED"
    assert len(scripted_upstream.requests) == 5
