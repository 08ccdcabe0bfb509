"""The access line: exactly one per RPC, its fields and its level, as real JSON and text lines."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.config import CallerSettings, token_digest
from adapter.core import nvp
from adapter.observability.access import level_of
from adapter.observability.logs import TextFormatter
from tests.conftest import (
    MERCHANT,
    PASSWORD,
    ScriptedUpstream,
    StartAdapter,
    fail,
    make_settings,
)
from tests.test_cli import Start, nvp_adapter

if TYPE_CHECKING:  # the stub type grpc.aio channels give; it exists for type checkers only
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

__all__ = ["nvp_adapter"]  # the fixture, shared with test_cli

SUCCESS = {
    "merchant": MERCHANT,
    "result": "SUCCESS",
    "session.id": "SESSION0002111122223333444455556666",
    "session.updateStatus": "NO_UPDATE",
    "session.version": "abcdef0123",
}
BUSY = nvp.encode({"error.cause": "SERVER_BUSY", "error.explanation": "Busy", "result": "ERROR"})
TOKEN = "access-log-token-0a1b2c"


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def written(stream: io.StringIO, count: int = 1) -> list[dict[str, Any]]:
    """The lines, once ``count`` are written (at most 5 s). A failed call's status can reach its
    caller first: grpc sends an abort's status before the exception leaves the handler, where
    the observer writes the line."""
    async with asyncio.timeout(5):
        while len(stream.getvalue().splitlines()) < count:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.001)
    return parsed(stream)


def without_timing(line: dict[str, Any]) -> dict[str, Any]:
    """The line less what varies from run to run: its time stamp and duration."""
    assert isinstance(line.pop("ts"), str)
    duration = line.pop("duration_ms")
    assert isinstance(duration, float)
    assert duration > 0
    return line


async def test_a_success_is_one_info_line_with_every_field(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter, access_lines: io.StringIO
) -> None:
    """A success is one INFO line with the rpc, merchant, code, attempts, HTTP status and
    correlation id, and nothing else but its time stamp and duration."""
    scripted_upstream.reply(nvp.encode({**SUCCESS, "correlationId": "order-1"}), 201)
    stub = await start_adapter(make_settings(scripted_upstream.url))
    await stub.CreateSession(
        pb.CreateSessionRequest(merchant=MERCHANT, correlation_id="order-1"), timeout=5
    )
    [line] = await written(access_lines, 1)
    assert without_timing(line) == {
        "level": "INFO",
        "logger": "adapter.access",
        "event": "rpc",
        "rpc": "CreateSession",
        "merchant": MERCHANT,
        "code": "OK",
        "attempts": 1,
        "http_status": 201,
        "correlation_id": "order-1",
    }


async def test_a_callers_mistake_is_info_with_its_reason(
    start_adapter: StartAdapter, access_lines: io.StringIO
) -> None:
    """A request the adapter refuses is one INFO line with its reason and no attempts."""
    stub = await start_adapter(make_settings())
    await fail(stub, pb.CreateSessionRequest(merchant="no such merchant!"))
    [line] = await written(access_lines)
    assert (line["level"], line["code"], line["reason"]) == (
        "INFO",
        "INVALID_ARGUMENT",
        "INVALID_REQUEST",
    )
    assert "attempts" not in line  # no upstream call was made


async def test_an_upstream_failure_is_warning_with_attempts_and_status(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter, access_lines: io.StringIO
) -> None:
    """A gateway that stays busy is one WARNING line with the reason, every attempt and the last
    HTTP status."""
    scripted_upstream.reply(BUSY)
    stub = await start_adapter(
        make_settings(scripted_upstream.url, retry_initial_backoff_seconds=0.01)
    )
    await fail(stub)
    [line] = await written(access_lines)
    fields = ("level", "code", "reason", "attempts", "http_status")
    assert tuple(line[f] for f in fields) == ("WARNING", "UNAVAILABLE", "SERVER_BUSY", 3, 200)
    assert line["status_message"].startswith("gateway answered SERVER_BUSY")


async def test_an_adapter_fault_is_error(access_lines: io.StringIO) -> None:
    """A bug behind the transport seam: INTERNAL, reason INTERNAL, at ERROR."""

    class Broken:
        async def post(self, body: bytes, budget: float) -> object:
            raise RuntimeError("a bug")

        async def aclose(self) -> None:
            return None

    async with (
        build_server(make_settings(), transport=Broken()) as server,  # type: ignore[arg-type]
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        await fail(session_service_pb2_grpc.SessionServiceStub(channel))
    [line] = await written(access_lines)
    assert (line["level"], line["code"], line["reason"]) == ("ERROR", "INTERNAL", "INTERNAL")


@pytest.fixture
async def with_callers() -> AsyncIterator[Stub]:
    caller = CallerSettings("checkout", frozenset({MERCHANT}), token_sha256=token_digest(TOKEN))
    settings = dataclasses.replace(make_settings(), callers=MappingProxyType({"checkout": caller}))
    async with (
        build_server(settings) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        yield session_service_pb2_grpc.SessionServiceStub(channel)


async def test_the_authenticated_caller_is_named(
    with_callers: Stub, access_lines: io.StringIO
) -> None:
    """A call whose bearer token proved a caller names that caller on its line."""
    await with_callers.CreateSession(
        pb.CreateSessionRequest(merchant=MERCHANT),
        metadata=(("authorization", f"Bearer {TOKEN}"),),
        timeout=5,
    )
    [line] = await written(access_lines, 1)
    assert (line["caller"], line["code"]) == ("checkout", "OK")


async def test_an_unauthenticated_call_has_its_one_line(
    with_callers: Stub, access_lines: io.StringIO
) -> None:
    """Refused by the authentication interceptor, before any handler: still one line."""
    await fail(with_callers, metadata=(("authorization", "Bearer wrong"),))
    [line] = await written(access_lines)
    assert (line["level"], line["code"], line["reason"]) == (
        "INFO",
        "UNAUTHENTICATED",
        "CALLER_UNAUTHENTICATED",
    )
    assert "caller" not in line
    assert TOKEN not in access_lines.getvalue()


async def test_every_rpc_writes_exactly_one_line(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter, access_lines: io.StringIO
) -> None:
    """Ten calls of four outcomes, in turn: ten lines, in the order of the outcomes."""
    stub = await start_adapter(make_settings(scripted_upstream.url, retry_max_attempts=1))
    expected = []
    for n in range(10):
        kind = n % 4
        if kind == 0:
            scripted_upstream.reply(nvp.encode(SUCCESS), 201)
            await stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=5)
            expected.append("OK")
        elif kind == 1:
            await fail(stub, pb.CreateSessionRequest(merchant=""))
            expected.append("INVALID_ARGUMENT")
        elif kind == 2:
            scripted_upstream.reply(BUSY)
            await fail(stub)
            expected.append("UNAVAILABLE")
        else:
            await fail(stub, pb.CreateSessionRequest(merchant="OTHER"))
            expected.append("PERMISSION_DENIED")
    assert [line["code"] for line in await written(access_lines, len(expected))] == expected


async def test_an_unknown_method_has_its_one_line(access_lines: io.StringIO) -> None:
    """A call of a method the server does not have is UNIMPLEMENTED, as grpc answers it, and
    writes one INFO line naming the path the caller asked for."""
    async with (
        build_server(make_settings()) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        unknown: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/probe.v1.Scanner/Look"
        )
        call = unknown(b"", timeout=5)
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        assert (await call.code(), await call.details()) == (
            grpc.StatusCode.UNIMPLEMENTED,
            "Method not found!",
        )
    [line] = await written(access_lines, 1)
    assert without_timing(line) == {
        "level": "INFO",
        "logger": "adapter.access",
        "event": "rpc",
        "rpc": "/probe.v1.Scanner/Look",
        "code": "UNIMPLEMENTED",
    }


async def test_a_callers_text_cannot_forge_a_text_line(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A correlation id holding a newline and a fake field stays inside one quoted value."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("adapter.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    forged = 'x\n2026-01-01 00:00:00,000 INFO adapter.access rpc code=OK "'
    try:
        scripted_upstream.reply(nvp.encode({**SUCCESS, "correlationId": forged}), 201)
        stub = await start_adapter(make_settings(scripted_upstream.url))
        await stub.CreateSession(
            pb.CreateSessionRequest(merchant=MERCHANT, correlation_id=forged), timeout=5
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    [line] = stream.getvalue().splitlines()
    assert line.endswith(f" correlation_id={json.dumps(forged)}")


async def test_a_long_callers_value_is_clipped(
    start_adapter: StartAdapter, access_lines: io.StringIO
) -> None:
    """A 1 MB merchant id (refused) is logged as its first 128 characters and an ellipsis."""
    stub = await start_adapter(make_settings())
    await fail(stub, pb.CreateSessionRequest(merchant="M" * 1_000_000))
    [line] = await written(access_lines)
    assert line["merchant"] == "M" * 128 + "…"


async def test_serve_writes_json_lines_end_to_end(nvp_adapter: Start, tmp_path: Path) -> None:
    """``serve --log-format json``: every stderr line is a JSON object; the call has its line."""
    server = await nvp_adapter(
        "serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "info"
    )
    async with grpc.aio.insecure_channel(server.address) as channel:
        await session_service_pb2_grpc.SessionServiceStub(channel).CreateSession(
            pb.CreateSessionRequest(merchant=MERCHANT), timeout=5
        )
    code, _, err = await server.stop()
    assert code == 0
    lines = [json.loads(text) for text in err.splitlines()]
    assert all({"ts", "level", "logger", "event"} <= line.keys() for line in lines)
    calls = [line for line in lines if line["event"] == "rpc"]
    assert [(c["rpc"], c["code"], c["merchant"]) for c in calls] == [
        ("CreateSession", "OK", MERCHANT)
    ]
    assert PASSWORD not in err


@pytest.mark.parametrize(
    ("code", "reason", "level"),
    [
        (grpc.StatusCode.OK, None, logging.INFO),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", logging.INFO),
        (grpc.StatusCode.PERMISSION_DENIED, "MERCHANT_NOT_ALLOWED", logging.INFO),
        (grpc.StatusCode.UNAUTHENTICATED, "CALLER_UNAUTHENTICATED", logging.INFO),
        (grpc.StatusCode.CANCELLED, None, logging.INFO),
        (grpc.StatusCode.UNIMPLEMENTED, None, logging.INFO),
        (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", logging.WARNING),
        (grpc.StatusCode.UNAVAILABLE, "ADAPTER_OVERLOADED", logging.WARNING),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", logging.WARNING),
        (grpc.StatusCode.INTERNAL, "SERVER_FAILED", logging.WARNING),
        (grpc.StatusCode.INTERNAL, "UPSTREAM_PROTOCOL_ERROR", logging.WARNING),
        (grpc.StatusCode.INTERNAL, "UPSTREAM_AUTHENTICATION_FAILED", logging.WARNING),
        (grpc.StatusCode.UNKNOWN, "SOME_NEW_CAUSE", logging.WARNING),
        (grpc.StatusCode.INTERNAL, "INVALID_REQUEST", logging.ERROR),
        (grpc.StatusCode.INTERNAL, "INTERNAL", logging.ERROR),
        (grpc.StatusCode.UNKNOWN, None, logging.ERROR),
        (grpc.StatusCode.DEADLINE_EXCEEDED, None, logging.WARNING),
    ],
)
def test_levels(code: grpc.StatusCode, reason: str | None, level: int) -> None:
    """Whose outcome it is: a success or the caller's mistake INFO, the gateway's WARNING,
    the adapter's own ERROR."""
    assert level_of(code, reason) == level


async def test_the_callers_trace_id_is_on_the_line(
    start_adapter: StartAdapter, access_lines: io.StringIO
) -> None:
    """A call that came with a W3C ``traceparent`` names its trace id; one without, none."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    stub = await start_adapter(make_settings())
    request = pb.CreateSessionRequest(merchant=MERCHANT)
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    await stub.CreateSession(request, metadata=(("traceparent", traceparent),), timeout=5)
    await stub.CreateSession(request, timeout=5)
    traced, untraced = await written(access_lines, 2)
    assert traced["trace_id"] == trace_id
    assert "trace_id" not in untraced
