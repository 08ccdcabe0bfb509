"""OpenTelemetry spans, exported by the real OTLP exporters to a real collector on loopback.

``Collector`` accepts OTLP/HTTP (``POST /v1/traces``) or OTLP/gRPC (``TraceService/Export``) and
keeps every span it is sent, parsed with opentelemetry-proto. The adapter is configured the way
an operator configures it: only through the standard ``OTEL_*`` variables. Its spans are flushed
when the server stops, so each test stops the server before it reads the collector.

Without an endpoint, or without the ``otel`` extra, nothing of OpenTelemetry is imported: that is
checked in a child process (``tests/untraced_process.py``), the only place where the modules other
tests imported are not already loaded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.config import Settings
from tests.conftest import MERCHANT, PASSWORD, ScriptedUpstream, make_settings

if TYPE_CHECKING:  # the stub type grpc.aio channels give; it exists for type checkers only
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

ROOT = Path(__file__).resolve().parent.parent
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
SESSION_ID = "SESSION0002AAAAAAAAAAAAAAAAAAAA"
SUCCESS = (
    f"merchant={MERCHANT}&result=SUCCESS&session.id={SESSION_ID}"
    "&session.updateStatus=NO_UPDATE&session.version=0123456789"
)
CORRELATION_ID = "order-7f3a9c"
RPC = "mpgs.gateway.v1.SessionService/CreateSession"
QUICK_RETRY: dict[str, Any] = {
    "retry_initial_backoff_seconds": 0.01,
    "retry_max_backoff_seconds": 0.01,
}


@dataclass
class Collector:
    """What an OTLP collector received: every export request, raw and parsed."""

    url: str = ""
    bodies: list[bytes] = field(default_factory=list)
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)

    def keep(self, body: bytes) -> None:
        self.bodies.append(body)
        self.requests.append(ExportTraceServiceRequest.FromString(body))

    @property
    def spans(self) -> list[Span]:
        return [
            span
            for request in self.requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def resources(self) -> list[dict[str, object]]:
        return [
            attributes(resource_spans.resource.attributes)
            for request in self.requests
            for resource_spans in request.resource_spans
        ]

    def one(self, kind: Span.SpanKind.ValueType) -> Span:
        [span] = [span for span in self.spans if span.kind == kind]
        return span

    def clients(self) -> list[Span]:
        """The CLIENT spans, in the order their attempts were made."""
        clients = [span for span in self.spans if span.kind == Span.SPAN_KIND_CLIENT]
        return sorted(clients, key=lambda span: span.start_time_unix_nano)


def attributes(values: Any) -> dict[str, object]:
    """OTLP key-values as a plain dict."""
    found: dict[str, object] = {}
    for item in values:
        assert isinstance(item, KeyValue)
        kind = item.value.WhichOneof("value")
        found[item.key] = getattr(item.value, kind) if kind else None
    return found


@pytest.fixture(autouse=True)
def _only_these_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own OTEL_* variables must not reach these tests."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def http_collector(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Collector]:
    """An OTLP/HTTP collector on loopback port 0, named by OTEL_EXPORTER_OTLP_ENDPOINT."""
    collector = Collector()

    async def export(request: web.Request) -> web.Response:
        collector.keep(await request.read())
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    collector.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    yield collector
    await runner.cleanup()


@pytest.fixture
async def grpc_collector(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Collector]:
    """An OTLP/gRPC collector on loopback port 0, named by the traces-only variables."""
    collector = Collector()

    async def export(
        request: ExportTraceServiceRequest, _: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportTraceServiceResponse:
        collector.keep(request.SerializeToString())
        return ExportTraceServiceResponse()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.trace.v1.TraceService",
                {
                    "Export": grpc.unary_unary_rpc_method_handler(
                        export,
                        request_deserializer=ExportTraceServiceRequest.FromString,
                        response_serializer=ExportTraceServiceResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    collector.url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    yield collector
    await server.stop(0)


def answering(upstream: ScriptedUpstream, *statuses: int) -> list[str]:
    """The gateway answers with these statuses in turn (200: success); returns the list its
    requests' traceparent headers are kept in."""
    queue, seen = list(statuses), []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent", ""))
        status = queue.pop(0) if len(queue) > 1 else queue[0]
        return web.Response(status=status, body=SUCCESS if status == 200 else "busy")

    upstream.handler = handler
    return seen


async def serve_one_call(
    settings: Settings,
    metadata: tuple[tuple[str, str], ...] = (("traceparent", TRACEPARENT),),
    request: pb.CreateSessionRequest | None = None,
) -> grpc.StatusCode:
    """Start the adapter, make one CreateSession call, stop it (which flushes the spans)."""
    async with (
        build_server(settings) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub: Stub = session_service_pb2_grpc.SessionServiceStub(channel)
        try:
            await stub.CreateSession(
                request or pb.CreateSessionRequest(merchant=MERCHANT), timeout=5, metadata=metadata
            )
        except grpc.aio.AioRpcError as failure:
            return failure.code()
    return grpc.StatusCode.OK


async def test_the_server_span_is_the_callers_child(
    http_collector: Collector, scripted_upstream: ScriptedUpstream
) -> None:
    """The RPC's SERVER span continues the caller's trace, as the child of the caller's span."""
    answering(scripted_upstream, 200)
    await serve_one_call(make_settings(scripted_upstream.url))
    server = http_collector.one(Span.SPAN_KIND_SERVER)
    assert (server.name, server.trace_id.hex(), server.parent_span_id.hex()) == (
        RPC,
        TRACE_ID,
        PARENT_ID,
    )


async def test_each_attempt_is_a_client_span_whose_id_went_upstream(
    http_collector: Collector, scripted_upstream: ScriptedUpstream
) -> None:
    """Each attempt of a retried call is a CLIENT span, child of the SERVER span, and the
    traceparent the gateway received for it names that span."""
    seen = answering(scripted_upstream, 503, 200)
    await serve_one_call(make_settings(scripted_upstream.url, **QUICK_RETRY))
    server = http_collector.one(Span.SPAN_KIND_SERVER)
    clients = http_collector.clients()
    assert [span.parent_span_id for span in clients] == [server.span_id] * 2
    assert seen == [f"00-{TRACE_ID}-{span.span_id.hex()}-01" for span in clients]


async def test_span_attributes(
    http_collector: Collector, scripted_upstream: ScriptedUpstream
) -> None:
    """The SERVER span names the RPC, its gRPC status and the merchant; each CLIENT span its
    attempt, the gateway's address and the HTTP status, a 503 marked as an error."""
    answering(scripted_upstream, 503, 200)
    await serve_one_call(make_settings(scripted_upstream.url, **QUICK_RETRY))
    server = http_collector.one(Span.SPAN_KIND_SERVER)
    port = int(scripted_upstream.url.rpartition(":")[2])
    assert attributes(server.attributes) == {
        "rpc.system": "grpc",
        "rpc.service": "mpgs.gateway.v1.SessionService",
        "rpc.method": "CreateSession",
        "rpc.grpc.status_code": 0,
        "nvp_adapter.merchant": MERCHANT,
        "nvp_adapter.operation": "CREATE_SESSION",
    }
    common = {
        "http.request.method": "POST",
        "server.address": "127.0.0.1",
        "server.port": port,
        "nvp_adapter.merchant": MERCHANT,
        "nvp_adapter.operation": "CREATE_SESSION",
    }
    first, second = http_collector.clients()
    assert attributes(first.attributes) == {
        **common,
        "nvp_adapter.attempt": 1,
        "http.response.status_code": 503,
        "error.type": "503",
    }
    assert attributes(second.attributes) == {
        **common,
        "nvp_adapter.attempt": 2,
        "http.request.resend_count": 1,
        "http.response.status_code": 200,
    }
    assert [first.status.code, second.status.code] == [
        Status.STATUS_CODE_ERROR,
        Status.STATUS_CODE_UNSET,
    ]


async def test_a_failed_rpc_span_carries_its_code(
    http_collector: Collector, scripted_upstream: ScriptedUpstream
) -> None:
    """An RPC that fails UNAVAILABLE ends its SERVER span with that code, as an error."""
    answering(scripted_upstream, 503)
    code = await serve_one_call(
        make_settings(scripted_upstream.url, retry_max_attempts=1, breaker_failure_threshold=0)
    )
    assert code == grpc.StatusCode.UNAVAILABLE
    server = http_collector.one(Span.SPAN_KIND_SERVER)
    assert attributes(server.attributes)["rpc.grpc.status_code"] == 14
    assert server.status.code == Status.STATUS_CODE_ERROR


async def test_an_attempt_that_gets_no_answer_is_an_error_span(
    http_collector: Collector,
) -> None:
    """An attempt that ends without an HTTP answer (nothing listens at the gateway's address) is
    a CLIENT span marked as an error with the adapter's name for what happened, no HTTP status."""
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await serve_one_call(make_settings(f"http://127.0.0.1:{port}", retry_max_attempts=1))
    [client] = http_collector.clients()
    assert attributes(client.attributes)["error.type"] == "UpstreamUnavailable"
    assert "http.response.status_code" not in attributes(client.attributes)
    assert client.status.code == Status.STATUS_CODE_ERROR


async def test_without_a_traceparent_opentelemetry_starts_the_trace(
    http_collector: Collector, scripted_upstream: ScriptedUpstream
) -> None:
    """A call without traceparent gets a SERVER span of a new trace, with no parent, and the
    gateway receives that trace as sampled (the default sampler records every new trace)."""
    seen = answering(scripted_upstream, 200)
    await serve_one_call(make_settings(scripted_upstream.url), metadata=())
    server = http_collector.one(Span.SPAN_KIND_SERVER)
    [client] = http_collector.clients()
    [sent] = seen
    assert server.parent_span_id == b""
    assert sent[:53] == f"00-{server.trace_id.hex()}-{client.span_id.hex()}-"
    assert int(sent[53:], 16) & 0x01 == 0x01


async def test_the_service_is_named_nvp_adapter(
    http_collector: Collector, scripted_upstream: ScriptedUpstream
) -> None:
    """With no OTEL_SERVICE_NAME the spans' resource names the service ``nvp-adapter``."""
    answering(scripted_upstream, 200)
    await serve_one_call(make_settings(scripted_upstream.url))
    assert {resource["service.name"] for resource in http_collector.resources()} == {"nvp-adapter"}


async def test_the_standard_variables_name_the_service(
    http_collector: Collector,
    scripted_upstream: ScriptedUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are the SDK's to read, and they win."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "payments-sidecar")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    answering(scripted_upstream, 200)
    await serve_one_call(make_settings(scripted_upstream.url))
    [resource] = http_collector.resources()
    assert (resource["service.name"], resource["deployment.environment"]) == (
        "payments-sidecar",
        "staging",
    )


async def test_the_standard_headers_variable_reaches_the_collector(
    scripted_upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_EXPORTER_OTLP_HEADERS is the exporter's to read: its headers go with each export."""
    got: list[str] = []

    async def export(request: web.Request) -> web.Response:
        got.append(request.headers.get("x-collector-key", ""))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString())

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{runner.addresses[0][1]}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=k3y")
    try:
        answering(scripted_upstream, 200)
        await serve_one_call(make_settings(scripted_upstream.url))
    finally:
        await runner.cleanup()
    assert got == ["k3y"]


async def test_no_span_holds_a_secret_or_an_identifier_of_the_payment(
    http_collector: Collector, scripted_upstream: ScriptedUpstream
) -> None:
    """Nothing exported holds the merchant's password, the correlation id or the session id."""
    answering(scripted_upstream, 503, 200)
    request = pb.CreateSessionRequest(merchant=MERCHANT, correlation_id=CORRELATION_ID)
    await serve_one_call(make_settings(scripted_upstream.url, **QUICK_RETRY), request=request)
    exported = b"".join(http_collector.bodies)
    assert len(http_collector.spans) == 3
    for secret in (PASSWORD, CORRELATION_ID, SESSION_ID):
        assert secret.encode() not in exported


async def test_health_checks_are_not_traced(
    http_collector: Collector, scripted_upstream: ScriptedUpstream
) -> None:
    """A probe's health check makes no span: only the session service's RPCs are traced."""
    async with (
        build_server(make_settings(scripted_upstream.url)) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert http_collector.spans == []


async def test_spans_go_over_otlp_grpc_when_the_protocol_says_so(
    grpc_collector: Collector, scripted_upstream: ScriptedUpstream
) -> None:
    """OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc sends the same spans to an OTLP/gRPC collector."""
    answering(scripted_upstream, 200)
    await serve_one_call(make_settings(scripted_upstream.url))
    assert sorted(span.kind for span in grpc_collector.spans) == [
        Span.SPAN_KIND_SERVER,
        Span.SPAN_KIND_CLIENT,
    ]


def run_untraced(environ: Mapping[str, str], *args: str) -> dict[str, Any]:
    """Run ``tests/untraced_process.py`` with only these OTEL_* variables; its report."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    done = subprocess.run(  # noqa: S603 (the project's own module, with this interpreter)
        [sys.executable, "-m", "tests.untraced_process", *args],
        env={**env, **environ},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_nothing_of_opentelemetry_is_imported_without_an_endpoint() -> None:
    """With the extra installed but no OTLP endpoint set, a traced call goes through, its
    traceparent passed on, and no ``opentelemetry`` module is ever imported."""
    report = run_untraced({})
    assert report["result"] == "RESULT_SUCCESS"
    assert [[header[:36] for header in headers] for headers in report["traceparents"]] == [
        [f"00-{TRACE_ID}-"]
    ]
    assert report["opentelemetry_modules"] == []


def test_without_the_extra_an_endpoint_only_warns() -> None:
    """Where OpenTelemetry cannot be imported, an OTLP endpoint gives one warning naming the
    extra; the call goes through with its traceparent passed on."""
    report = run_untraced({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, "--block")
    assert report["result"] == "RESULT_SUCCESS"
    assert len(report["traceparents"]) == 1
    assert report["traceparents"][0][0].startswith(f"00-{TRACE_ID}-")
    assert [line for line in report["warnings"] if "nvp-adapter[otel]" in line] == [
        "an OTLP endpoint is set but OpenTelemetry is not installed "
        "(pip install 'nvp-adapter[otel]'): traceparent is passed on, no span is exported"
    ]
