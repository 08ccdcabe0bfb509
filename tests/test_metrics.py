"""Metrics: a real HTTP scrape of ``/metrics``, parsed with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import aiohttp
import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from adapter import version
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.config import MetricsSettings, Settings
from adapter.core import nvp
from adapter.server import AdapterServer
from tests.conftest import MERCHANT, PASSWORD, ScriptedUpstream, fail, make_settings

if TYPE_CHECKING:  # the stub type grpc.aio channels give; it exists for type checkers only
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

SERVICE = "mpgs.gateway.v1.SessionService"
SUCCESS = {
    "merchant": MERCHANT,
    "result": "SUCCESS",
    "session.id": "SESSION0002111122223333444455556666",
    "session.updateStatus": "NO_UPDATE",
    "session.version": "abcdef0123",
}
BUSY = nvp.encode({"error.cause": "SERVER_BUSY", "error.explanation": "Busy", "result": "ERROR"})
CORRELATION_ID = "order-4711-correlation"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Running = tuple[AdapterServer, "Stub"]


def with_metrics(settings: Settings) -> Settings:
    return dataclasses.replace(settings, metrics=MetricsSettings(listen="127.0.0.1:0"))


@pytest.fixture
async def start() -> AsyncIterator[Callable[[Settings], Awaitable[Running]]]:
    async with AsyncExitStack() as stack:

        async def run(settings: Settings) -> Running:
            server = await stack.enter_async_context(build_server(settings))
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
            return server, session_service_pb2_grpc.SessionServiceStub(channel)

        yield run


async def scrape(server: AdapterServer) -> tuple[str, Samples]:
    """GET /metrics over HTTP: the text, and every sample by name and labels."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.metrics_port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return text, samples


def rpc(method: str, **labels: str) -> frozenset[tuple[str, str]]:
    return frozenset({"grpc_service": SERVICE, "grpc_method": method, **labels}.items())


def request() -> pb.CreateSessionRequest:
    return pb.CreateSessionRequest(merchant=MERCHANT, correlation_id=CORRELATION_ID)


async def test_rpc_and_upstream_counts(
    scripted_upstream: ScriptedUpstream, start: Callable[[Settings], Awaitable[Running]]
) -> None:
    """Three successes and one INVALID_ARGUMENT: the grpc-ecosystem counters and histogram,
    and one OK upstream attempt per success."""
    scripted_upstream.reply(nvp.encode(SUCCESS), 201)
    server, stub = await start(with_metrics(make_settings(scripted_upstream.url)))
    for _ in range(3):
        await stub.CreateSession(request(), timeout=5)
    invalid = await fail(stub, pb.CreateSessionRequest(merchant=""))
    assert invalid.code is grpc.StatusCode.INVALID_ARGUMENT

    _, samples = await scrape(server)
    assert samples["grpc_server_started_total", rpc("CreateSession")] == 4
    assert samples["grpc_server_handled_total", rpc("CreateSession", grpc_code="OK")] == 3
    assert (
        samples["grpc_server_handled_total", rpc("CreateSession", grpc_code="INVALID_ARGUMENT")]
        == 1
    )
    assert samples["grpc_server_handling_seconds_count", rpc("CreateSession")] == 4
    assert samples["grpc_server_handling_seconds_bucket", rpc("CreateSession", le="+Inf")] == 4
    operation = frozenset({"operation": "CREATE_SESSION", "outcome": "OK"}.items())
    assert samples["nvp_adapter_upstream_requests_total", operation] == 3
    assert (
        samples[
            "nvp_adapter_upstream_request_duration_seconds_count",
            frozenset({"operation": "CREATE_SESSION"}.items()),
        ]
        == 3
    )
    assert samples["nvp_adapter_upstream_in_flight", frozenset()] == 0
    assert samples["nvp_adapter_circuit_open", frozenset()] == 0


async def test_each_attempt_is_counted_by_its_outcome(
    scripted_upstream: ScriptedUpstream, start: Callable[[Settings], Awaitable[Running]]
) -> None:
    """SERVER_BUSY twice, then a success: one call, three attempts, two of them SERVER_BUSY."""
    answers = iter([BUSY, BUSY, nvp.encode(SUCCESS)])

    async def busy_twice(_: web.Request) -> web.Response:
        return web.Response(body=next(answers), headers={"Content-Type": nvp.CONTENT_TYPE})

    scripted_upstream.handler = busy_twice
    settings = make_settings(scripted_upstream.url, retry_initial_backoff_seconds=0.01)
    server, stub = await start(with_metrics(settings))
    await stub.CreateSession(request(), timeout=5)

    _, samples = await scrape(server)
    outcome = "nvp_adapter_upstream_requests_total"
    busy = frozenset({"operation": "CREATE_SESSION", "outcome": "SERVER_BUSY"}.items())
    ok = frozenset({"operation": "CREATE_SESSION", "outcome": "OK"}.items())
    assert (samples[outcome, busy], samples[outcome, ok]) == (2, 1)
    assert samples["grpc_server_handled_total", rpc("CreateSession", grpc_code="OK")] == 1


async def test_in_flight_counts_attempts_under_way(
    scripted_upstream: ScriptedUpstream, start: Callable[[Settings], Awaitable[Running]]
) -> None:
    """Two calls held by the gateway read 2 in flight; 0 once they are answered."""
    arrived = asyncio.Semaphore(0)
    release = asyncio.Event()

    async def hold(_: web.Request) -> web.Response:
        arrived.release()
        await release.wait()
        return web.Response(body=nvp.encode(SUCCESS), headers={"Content-Type": nvp.CONTENT_TYPE})

    scripted_upstream.handler = hold
    server, stub = await start(with_metrics(make_settings(scripted_upstream.url)))
    calls = [asyncio.ensure_future(stub.CreateSession(request(), timeout=10)) for _ in range(2)]
    for _ in range(2):
        await asyncio.wait_for(arrived.acquire(), 5)
    _, held = await scrape(server)
    release.set()
    await asyncio.gather(*calls)
    _, done = await scrape(server)
    gauge: tuple[str, frozenset[tuple[str, str]]] = "nvp_adapter_upstream_in_flight", frozenset()
    assert (held[gauge], done[gauge]) == (2, 0)


async def test_circuit_gauge_follows_the_breaker(
    scripted_upstream: ScriptedUpstream, start: Callable[[Settings], Awaitable[Running]]
) -> None:
    """Two 503s open a threshold-2 circuit: the gauge reads 1, and a success after the
    cool-down closes it: 0."""
    scripted_upstream.reply("down", 503)
    settings = make_settings(
        scripted_upstream.url,
        breaker_failure_threshold=2,
        breaker_cooldown_seconds=0.3,
        retry_max_attempts=1,
    )
    server, stub = await start(with_metrics(settings))
    for _ in range(2):
        await fail(stub)
    _, opened = await scrape(server)
    scripted_upstream.reply(nvp.encode(SUCCESS), 201)
    await asyncio.sleep(0.4)
    await stub.CreateSession(request(), timeout=5)
    _, closed = await scrape(server)
    gauge: tuple[str, frozenset[tuple[str, str]]] = "nvp_adapter_circuit_open", frozenset()
    assert (opened[gauge], closed[gauge]) == (1, 0)


async def test_build_info_names_the_version_and_the_gateway_host(
    scripted_upstream: ScriptedUpstream, start: Callable[[Settings], Awaitable[Running]]
) -> None:
    """``nvp_adapter_build_info`` is 1, labelled with the version and the gateway's host only."""
    server, _ = await start(with_metrics(make_settings(scripted_upstream.url)))
    _, samples = await scrape(server)
    labels = frozenset({"version": version(), "upstream": "127.0.0.1"}.items())
    assert samples["nvp_adapter_build_info", labels] == 1


async def test_embedded_upstream_is_labelled_embedded(
    start: Callable[[Settings], Awaitable[Running]],
) -> None:
    """On the embedded gateway ``nvp_adapter_build_info`` has ``upstream="embedded"``."""
    server, _ = await start(with_metrics(make_settings()))
    _, samples = await scrape(server)
    labels = frozenset({"version": version(), "upstream": "embedded"}.items())
    assert samples["nvp_adapter_build_info", labels] == 1


async def test_health_checks_are_counted_too(
    start: Callable[[Settings], Awaitable[Running]],
) -> None:
    """Every RPC the server handles is counted, grpc.health.v1 included."""
    server, _ = await start(with_metrics(make_settings()))
    async with grpc.aio.insecure_channel(server.address) as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    _, samples = await scrape(server)
    check = frozenset(
        {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check", "grpc_code": "OK"}.items()
    )
    assert samples["grpc_server_handled_total", check] == 1


async def test_no_label_holds_a_secret_or_a_callers_value(
    scripted_upstream: ScriptedUpstream, start: Callable[[Settings], Awaitable[Running]]
) -> None:
    """After successes and failures, no scrape holds the password, the merchant, the
    correlation id or the session id anywhere."""
    scripted_upstream.reply(nvp.encode(SUCCESS), 201)
    server, stub = await start(with_metrics(make_settings(scripted_upstream.url)))
    await stub.CreateSession(request(), timeout=5)
    scripted_upstream.reply(BUSY)
    await fail(stub, request())
    text, _ = await scrape(server)
    for value in (PASSWORD, MERCHANT, CORRELATION_ID, SUCCESS["session.id"]):
        assert value not in text


async def test_causes_the_adapter_does_not_know_share_one_label(
    scripted_upstream: ScriptedUpstream, start: Callable[[Settings], Awaitable[Running]]
) -> None:
    """A gateway answering 40 made-up causes adds one series, ``UNKNOWN_CAUSE``, holding all
    40 attempts; the caller still reads each cause as sent in its ErrorInfo (§4)."""
    causes = iter(f"PEER_MADE_CAUSE_{n}" for n in range(40))

    async def made_up(_: web.Request) -> web.Response:
        body = nvp.encode({"error.cause": next(causes), "result": "ERROR"})
        return web.Response(body=body, headers={"Content-Type": nvp.CONTENT_TYPE})

    scripted_upstream.handler = made_up
    server, stub = await start(with_metrics(make_settings(scripted_upstream.url)))
    reasons = {(await fail(stub, request())).info.reason for _ in range(40)}
    text, samples = await scrape(server)

    assert reasons == {f"PEER_MADE_CAUSE_{n}" for n in range(40)}
    outcomes = {
        dict(labels)["outcome"]: value
        for (name, labels), value in samples.items()
        if name == "nvp_adapter_upstream_requests_total"
    }
    assert outcomes == {"UNKNOWN_CAUSE": 40}
    assert "PEER_MADE_CAUSE" not in text


async def test_an_unknown_method_adds_no_series(
    start: Callable[[Settings], Awaitable[Running]],
) -> None:
    """A call of a method the server does not have is not counted: its name is the caller's
    text, and no caller may add a series; the scrape holds neither the path nor its parts."""
    server, _ = await start(with_metrics(make_settings()))
    async with grpc.aio.insecure_channel(server.address) as channel:
        unknown: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/probe.v1.Scanner/Look"
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await unknown(b"", timeout=5)
    text, _ = await scrape(server)
    assert "Scanner" not in text
    assert "Look" not in text


async def test_metrics_are_off_without_a_listen_address(
    start: Callable[[Settings], Awaitable[Running]],
) -> None:
    """Without ``[metrics] listen`` there are no metrics and no scrape listener."""
    server, _ = await start(make_settings())
    assert (server.metrics, server.metrics_port) == (None, 0)


async def test_the_scrape_listener_bounds_its_connections(
    start: Callable[[Settings], Awaitable[Running]],
) -> None:
    """16 idle connections fill the scrape listener: the 17th is closed before it is read."""
    server, _ = await start(with_metrics(make_settings()))
    idle = [await asyncio.open_connection("127.0.0.1", server.metrics_port) for _ in range(16)]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.metrics_port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        for _, held in idle:
            held.close()
