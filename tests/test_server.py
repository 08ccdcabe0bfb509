"""The gRPC server: CreateSession on the embedded gateway, health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import re
import socket

import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.config import Settings
from adapter.core.errors import ConfigError
from tests.conftest import MERCHANT, ScriptedUpstream, StartAdapter, make_settings

SERVICE = "mpgs.gateway.v1.SessionService"
PAYMENTS = "mpgs.gateway.v1.PaymentService"
REQUEST = pb.CreateSessionRequest(merchant=MERCHANT)
SUCCESS = (
    "merchant=TESTMERCHANT&result=SUCCESS&session.id=SESSION0002AAAAAAAAAAAAAAAAAAAA"
    "&session.updateStatus=NO_UPDATE&session.version=0123456789"
)


async def test_create_session_on_the_embedded_gateway(start_adapter: StartAdapter) -> None:
    """With the embedded upstream a call creates a real session, no socket to a gateway needed."""
    stub = await start_adapter(make_settings())
    first = await stub.CreateSession(
        pb.CreateSessionRequest(merchant=MERCHANT, correlation_id="order-1"), timeout=5
    )
    second = await stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=5)
    assert first.result == pb.RESULT_SUCCESS
    assert first.correlation_id == "order-1"
    assert second.correlation_id == ""
    assert re.fullmatch(r"SESSION0002[0-9A-Z]{20}", first.session.id)
    assert first.session.id != second.session.id
    assert first.session.update_status == pb.SESSION_UPDATE_STATUS_NO_UPDATE


async def test_embedded_gateway_validates_extra_fields(start_adapter: StartAdapter) -> None:
    """An extra field the gateway does not support comes back as the gateway's field error."""
    stub = await start_adapter(make_settings())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateSession(
            pb.CreateSessionRequest(merchant=MERCHANT, extra_fields={"order.note": "x"}),
            timeout=5,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "order.note" in (caught.value.details() or "")


async def test_health_and_reflection() -> None:
    """Health answers SERVING for "" and each API service; reflection lists the four services."""
    async with (
        build_server(make_settings()) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE, PAYMENTS):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [answer] = [a async for a in reflection.ServerReflectionInfo(iter([request]))]
        names = {s.name for s in answer.list_services_response.service}
        assert names == {
            SERVICE,
            PAYMENTS,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }


async def test_graceful_stop(scripted_upstream: ScriptedUpstream) -> None:
    """Stopping turns health NOT_SERVING first, lets a call in flight finish, refuses new calls."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(body=SUCCESS, status=201)

    scripted_upstream.handler = slow
    server = build_server(make_settings(scripted_upstream.url))
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=10
        )
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        in_flight = asyncio.ensure_future(
            stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=10)
        )
        await arrived.wait()
        stopping = asyncio.ensure_future(server.stop(grace=5))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        release.set()
        response = await in_flight
        await stopping
    assert response.result == pb.RESULT_SUCCESS
    assert len(scripted_upstream.requests) == 1


async def test_stop_is_idempotent() -> None:
    """Stopping one never started is harmless; once stopped (twice) the server refuses calls."""
    server = build_server(make_settings())
    await server.stop()
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        assert (await stub.CreateSession(REQUEST, timeout=5)).result == pb.RESULT_SUCCESS
        await server.stop()
        await server.stop(grace=0)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateSession(REQUEST, timeout=2)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_port_in_use_is_a_config_error() -> None:
    """Binding a port another socket holds fails with a one-line ConfigError."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        settings = make_settings()
        busy = Settings(
            server=type(settings.server)(listen=f"127.0.0.1:{port}"),
            upstream=settings.upstream,
            merchants=settings.merchants,
        )
        with pytest.raises(ConfigError, match=f"^server.listen: 127.0.0.1:{port} is in use$"):
            await build_server(busy).start()


async def test_unreadable_ca_file_is_a_config_error() -> None:
    """A CA bundle that cannot be read fails the start with a ConfigError, not a traceback."""
    settings = make_settings("https://gateway.example", ca_file="/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match="cannot load the upstream TLS files"):
        await build_server(settings).start()
