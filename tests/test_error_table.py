"""Every row of the error table (README, "Errors"), through a real grpc.aio client and real servers.

The adapter runs in-process on loopback port 0; the gateway is a scripted aiohttp server on port
0 (or, where the row is about the adapter itself, no server at all). Each row checks the gRPC code,
ErrorInfo's domain, reason and metadata, and which of GatewayError, BadRequest and RetryInfo are
attached.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2

from adapter._proto.mpgs.gateway.v1 import gateway_error_pb2 as gw
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.core import nvp
from adapter.upstream.transport import Reply
from tests.conftest import (
    MERCHANT,
    PASSWORD,
    ScriptedUpstream,
    StartAdapter,
    fail,
    make_settings,
)


def nvp_error(**fields: str) -> str:
    """An NVP error body in the gateway's own form."""
    return nvp.encode({**{f"error.{k}": v for k, v in fields.items()}, "result": "ERROR"}).decode()


@dataclass(frozen=True)
class GatewayRow:
    """One row driven by a scripted gateway answer."""

    body: str
    http_status: int
    code: grpc.StatusCode
    reason: str
    metadata: Mapping[str, str]
    violation: str | None = None
    retry: bool = False
    attempts: int = 1  # CreateSession is repeatable: SERVER_BUSY is tried up to 3 times


GATEWAY_ROWS = {
    "invalid request on a caller's field": GatewayRow(
        nvp_error(
            cause="INVALID_REQUEST",
            explanation="Value is invalid.",
            field="correlationId",
            validationType="INVALID",
        ),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        {"cause": "INVALID_REQUEST", "field": "correlationId", "validationType": "INVALID"},
        violation="correlation_id",
    ),
    "invalid request on a caller's extra field": GatewayRow(
        nvp_error(
            cause="INVALID_REQUEST",
            explanation="Unexpected parameter 'order.note'",
            field="order.note",
            validationType="UNSUPPORTED",
        ),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        {"cause": "INVALID_REQUEST", "field": "order.note", "validationType": "UNSUPPORTED"},
        violation="extra_fields[order.note]",
    ),
    "invalid request naming no field": GatewayRow(
        nvp_error(
            cause="INVALID_REQUEST",
            explanation=(
                "Authenticated entity not authorised to perform operation for target entity"
            ),
        ),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        {"cause": "INVALID_REQUEST"},
    ),
    "credentials refused, 401": GatewayRow(
        nvp_error(cause="INVALID_REQUEST", explanation="Invalid credentials."),
        401,
        grpc.StatusCode.INTERNAL,
        "UPSTREAM_AUTHENTICATION_FAILED",
        {"cause": "INVALID_REQUEST"},
    ),
    "credentials refused, 403": GatewayRow(
        nvp_error(cause="INVALID_REQUEST", explanation="Forbidden."),
        403,
        grpc.StatusCode.INTERNAL,
        "UPSTREAM_AUTHENTICATION_FAILED",
        {"cause": "INVALID_REQUEST"},
    ),
    "invalid request on a field the adapter fills": GatewayRow(
        nvp_error(
            cause="INVALID_REQUEST",
            explanation="Value 'CREATE_SESSION' is invalid.",
            field="apiOperation",
            validationType="INVALID",
        ),
        400,
        grpc.StatusCode.INTERNAL,
        "INVALID_REQUEST",
        {"cause": "INVALID_REQUEST", "field": "apiOperation", "validationType": "INVALID"},
    ),
    "request rejected": GatewayRow(
        nvp_error(cause="REQUEST_REJECTED", supportCode="RR-42"),
        400,
        grpc.StatusCode.INTERNAL,
        "REQUEST_REJECTED",
        {"cause": "REQUEST_REJECTED", "supportCode": "RR-42"},
    ),
    "server busy": GatewayRow(
        nvp_error(cause="SERVER_BUSY", explanation="Try again later."),
        500,
        grpc.StatusCode.UNAVAILABLE,
        "SERVER_BUSY",
        {"cause": "SERVER_BUSY"},
        retry=True,
        attempts=3,
    ),
    "server failed": GatewayRow(
        nvp_error(cause="SERVER_FAILED", supportCode="SF-7"),
        500,
        grpc.StatusCode.INTERNAL,
        "SERVER_FAILED",
        {"cause": "SERVER_FAILED", "supportCode": "SF-7"},
    ),
    "a cause this version does not know": GatewayRow(
        nvp_error(cause="ACQUIRER_ASLEEP"),
        500,
        grpc.StatusCode.UNKNOWN,
        "ACQUIRER_ASLEEP",
        {"cause": "ACQUIRER_ASLEEP"},
    ),
    "an unknown cause unfit for a reason": GatewayRow(
        nvp_error(cause="not a Reason!"),
        500,
        grpc.StatusCode.UNKNOWN,
        "UNKNOWN_CAUSE",
        {"cause": "not a Reason!"},
    ),
    "an error with no cause at all": GatewayRow(
        "result=ERROR", 500, grpc.StatusCode.UNKNOWN, "UNKNOWN_CAUSE", {}
    ),
}


@pytest.mark.parametrize("row", GATEWAY_ROWS.values(), ids=GATEWAY_ROWS.keys())
async def test_gateway_error_rows(
    row: GatewayRow, scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """Each gateway error.cause maps to the contract's code, reason and details."""
    scripted_upstream.reply(row.body, row.http_status)
    stub = await start_adapter(make_settings(scripted_upstream.url))
    request = pb.CreateSessionRequest(
        merchant=MERCHANT, correlation_id="c-1", extra_fields={"order.note": "hi"}
    )
    failure = await fail(stub, request)

    assert failure.code == row.code
    assert failure.info.reason == row.reason
    assert dict(failure.info.metadata) == {**row.metadata, "attempts": str(row.attempts)}
    gateway_error = failure.details[gw.GatewayError]
    assert isinstance(gateway_error, gw.GatewayError)
    assert gateway_error.field == row.metadata.get("field", "")
    assert gateway_error.support_code == row.metadata.get("supportCode", "")
    bad_request = failure.details.get(error_details_pb2.BadRequest)
    if row.violation is None:
        assert bad_request is None
    else:
        assert isinstance(bad_request, error_details_pb2.BadRequest)
        assert [v.field for v in bad_request.field_violations] == [row.violation]
    assert (error_details_pb2.RetryInfo in failure.details) == row.retry
    assert len(scripted_upstream.requests) == row.attempts


async def test_gateway_error_carries_enums(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """GatewayError holds the gateway's error verbatim, enums mapped from their NVP text."""
    scripted_upstream.reply(
        nvp_error(
            cause="INVALID_REQUEST",
            explanation="Missing parameter 'order.id'",
            field="order.id",
            validationType="MISSING",
        ),
        400,
    )
    failure = await fail(await start_adapter(make_settings(scripted_upstream.url)))
    assert failure.details[gw.GatewayError] == gw.GatewayError(
        cause=gw.ERROR_CAUSE_INVALID_REQUEST,
        explanation="Missing parameter 'order.id'",
        field="order.id",
        validation_type=gw.VALIDATION_TYPE_MISSING,
    )
    bad_request = failure.details[error_details_pb2.BadRequest]
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert bad_request.field_violations[0].field == "order.id"
    assert bad_request.field_violations[0].description == "Missing parameter 'order.id'"


@pytest.mark.parametrize(
    ("request_", "violation"),
    [
        (pb.CreateSessionRequest(merchant=""), "merchant"),
        (pb.CreateSessionRequest(merchant="far-too-long-id"), "merchant"),
        (pb.CreateSessionRequest(merchant="M&x=1"), "merchant"),
        (
            pb.CreateSessionRequest(merchant=MERCHANT, extra_fields={"apiPassword": "x"}),
            "extra_fields[apiPassword]",
        ),
        (
            pb.CreateSessionRequest(merchant=MERCHANT, extra_fields={"correlationId": "x"}),
            "extra_fields[correlationId]",
        ),
        (
            pb.CreateSessionRequest(merchant=MERCHANT, extra_fields={"a&b=c": "x"}),
            "extra_fields[a&b=c]",
        ),
    ],
)
async def test_adapter_validation_makes_no_call(
    request_: pb.CreateSessionRequest,
    violation: str,
    scripted_upstream: ScriptedUpstream,
    start_adapter: StartAdapter,
) -> None:
    """The adapter's own validation answers INVALID_ARGUMENT with a FieldViolation, no upstream."""
    stub = await start_adapter(make_settings(scripted_upstream.url))
    failure = await fail(stub, request_)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.info.reason == "INVALID_REQUEST"
    assert "attempts" not in failure.info.metadata
    bad_request = failure.details[error_details_pb2.BadRequest]
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == [violation]
    assert gw.GatewayError not in failure.details
    assert scripted_upstream.requests == []


async def test_merchant_without_credentials(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A merchant the adapter holds no credentials for is PERMISSION_DENIED, with no call made."""
    stub = await start_adapter(make_settings(scripted_upstream.url))
    failure = await fail(stub, pb.CreateSessionRequest(merchant="OTHER"))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert failure.info.reason == "MERCHANT_NOT_ALLOWED"
    assert scripted_upstream.requests == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused(start_adapter: StartAdapter) -> None:
    """A refused connection is UNAVAILABLE/UPSTREAM_UNAVAILABLE with RetryInfo, after retries."""
    stub = await start_adapter(make_settings(f"http://127.0.0.1:{_closed_port()}"))
    failure = await fail(stub)
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.info.reason == "UPSTREAM_UNAVAILABLE"
    assert failure.info.metadata["attempts"] == "3"
    assert "outcome" not in failure.info.metadata
    assert error_details_pb2.RetryInfo in failure.details


@pytest.mark.parametrize(
    ("http_status", "headers", "delay"),
    [
        (429, {}, 1.0),
        (502, {}, 1.0),
        (503, {"Retry-After": "7"}, 7.0),
        (504, {}, 1.0),
    ],
)
async def test_overload_statuses_without_nvp_body(
    http_status: int,
    headers: dict[str, str],
    delay: float,
    scripted_upstream: ScriptedUpstream,
    start_adapter: StartAdapter,
) -> None:
    """429/502/503/504 with no NVP body are UNAVAILABLE with RetryInfo (Retry-After honoured)."""
    scripted_upstream.reply("<html>busy</html>", http_status, content_type="text/html", **headers)
    failure = await fail(await start_adapter(make_settings(scripted_upstream.url)))
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.info.reason == "UPSTREAM_UNAVAILABLE"
    retry = failure.details[error_details_pb2.RetryInfo]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToTimedelta().total_seconds() == delay


async def test_connection_reset_after_send(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A connection dropped after the request was sent: UNAVAILABLE, outcome UNKNOWN, no retry."""

    async def hang_up(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    scripted_upstream.handler = hang_up
    failure = await fail(await start_adapter(make_settings(scripted_upstream.url)))
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.info.reason == "UPSTREAM_UNAVAILABLE"
    assert failure.info.metadata["outcome"] == "UNKNOWN"
    assert error_details_pb2.RetryInfo not in failure.details


async def test_read_timeout(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """No answer within the upstream timeout: DEADLINE_EXCEEDED with UPSTREAM_TIMEOUT."""

    async def stall(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        return web.Response()

    scripted_upstream.handler = stall
    stub = await start_adapter(make_settings(scripted_upstream.url, timeout_seconds=0.3))
    failure = await fail(stub)
    assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert failure.info.reason == "UPSTREAM_TIMEOUT"
    assert failure.info.metadata["outcome"] == "UNKNOWN"


async def test_caller_deadline_caps_the_upstream_call(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """The caller's deadline bounds the upstream call; the adapter's own status arrives first."""

    async def stall(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        return web.Response()

    scripted_upstream.handler = stall
    stub = await start_adapter(make_settings(scripted_upstream.url))
    started = asyncio.get_running_loop().time()
    failure = await fail(stub, deadline=0.5)
    assert asyncio.get_running_loop().time() - started < 1.0
    assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert failure.info.reason == "UPSTREAM_TIMEOUT"


@pytest.mark.parametrize(
    ("body", "http_status"),
    [
        ("<html><body>Internal Server Error</body></html>", 500),
        ("merchant=TESTMERCHANT&session.id=S1", 201),
        ("result=SUCCESS&bad=%zz", 201),
        ("", 200),
    ],
    ids=["html page", "no result", "bad escape", "empty"],
)
async def test_unusable_bodies(
    body: str, http_status: int, scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A body that is not valid NVP or lacks result is INTERNAL/UPSTREAM_PROTOCOL_ERROR."""
    scripted_upstream.reply(body, http_status)
    failure = await fail(await start_adapter(make_settings(scripted_upstream.url)))
    assert failure.code == grpc.StatusCode.INTERNAL
    assert failure.info.reason == "UPSTREAM_PROTOCOL_ERROR"


async def test_body_over_the_size_cap(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A body over the cap is refused, not truncated: INTERNAL/UPSTREAM_PROTOCOL_ERROR."""
    scripted_upstream.reply("result=SUCCESS&pad=" + "x" * 2048, 201)
    stub = await start_adapter(make_settings(scripted_upstream.url, max_response_bytes=1024))
    failure = await fail(stub)
    assert failure.code == grpc.StatusCode.INTERNAL
    assert failure.info.reason == "UPSTREAM_PROTOCOL_ERROR"
    assert "cap" in failure.message


class ExplodingTransport:
    """A transport with a bug in it: raises an exception the adapter does not expect."""

    async def post(
        self, body: bytes, budget: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        raise RuntimeError(f"boom with a secret inside {body!r}")

    async def aclose(self) -> None:
        return None


async def test_anything_unexpected_is_a_generic_internal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected exception is INTERNAL/INTERNAL with a generic message, logged once."""
    async with (
        build_server(make_settings(), transport=ExplodingTransport()) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        failure = await fail(session_service_pb2_grpc.SessionServiceStub(channel))
    assert failure.code == grpc.StatusCode.INTERNAL
    assert failure.info.reason == "INTERNAL"
    assert failure.message == "internal error in the adapter"
    assert "boom" not in failure.message
    tracebacks = [r for r in caplog.records if "Traceback" in r.getMessage()]
    assert len(tracebacks) == 1
    assert "RuntimeError: boom" in tracebacks[0].getMessage()
    assert PASSWORD not in caplog.text
