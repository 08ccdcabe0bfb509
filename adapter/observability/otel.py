"""OpenTelemetry spans: a SERVER span per RPC, a CLIENT span per upstream attempt.

Imported by ``tracing.Tracing.start`` only when spans are to be exported, so that nothing of
OpenTelemetry is loaded otherwise. The SDK reads its own standard variables: the exporter its
endpoint, headers, timeout, compression and certificates (``OTEL_EXPORTER_OTLP_*``), the provider
its sampler (``OTEL_TRACES_SAMPLER``) and span limits, the batch processor its ``OTEL_BSP_*``, the
resource ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``. The adapter only picks the
exporter for the OTLP protocol, and names the service ``nvp-adapter`` unless those say otherwise.

No span carries a password, a token, a correlation id or a session id: the attributes are the
RPC's names and status, the merchant and operation, and each attempt's number and HTTP status.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import AttributeValue

from adapter import version
from adapter.observability.trace_context import AttemptTrace, TraceContext, trace_headers

__all__ = ["SERVICE_NAME", "Spans"]

SERVICE_NAME = "nvp-adapter"
"""``service.name`` unless ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` names one."""
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""The codes that mark a gRPC SERVER span as an error (OpenTelemetry's RPC conventions): the
others are the caller's to handle."""


def _resource() -> Resource:
    """The SDK's resource, with the adapter's name and version where the variables give none."""
    given = OTELResourceDetector().detect().attributes
    ours = {"service.name": SERVICE_NAME, "service.version": version()}
    return Resource.create({key: value for key, value in ours.items() if key not in given})


def _exporter(protocol: str) -> SpanExporter:
    """The OTLP exporter for ``protocol``; it reads its endpoint and the rest itself."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as GrpcExporter,  # imported only for this protocol: it loads grpc's
        )

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


class Spans:
    """A tracer provider of its own (the global one is left alone), exporting in batches."""

    def __init__(self, protocol: str, peer: tuple[str, int] | None = None) -> None:
        self._provider = TracerProvider(resource=_resource(), shutdown_on_exit=False)
        self._provider.add_span_processor(BatchSpanProcessor(_exporter(protocol)))
        self._tracer = self._provider.get_tracer("nvp-adapter", version())
        self._peer: dict[str, AttributeValue] = (
            {} if peer is None else {"server.address": peer[0], "server.port": peer[1]}
        )

    def rpc(self, method: str, incoming: TraceContext | None) -> OtelRpc:
        """A SERVER span for ``method`` (``/package.Service/Method``), child of ``incoming``."""
        return OtelRpc(self._tracer, method, incoming, self._peer)

    def shutdown(self) -> None:
        """Export what is held and stop; blocks for as long as that takes."""
        self._provider.shutdown()


class OtelRpc:
    """One RPC's SERVER span, and the parent of its attempts' CLIENT spans."""

    def __init__(
        self,
        tracer: trace.Tracer,
        method: str,
        incoming: TraceContext | None,
        peer: Mapping[str, AttributeValue],
    ) -> None:
        service, _, name = method.lstrip("/").partition("/")
        parent = None
        self._tracestate = None
        if incoming is not None:
            self._tracestate = incoming.tracestate
            members = [m.partition("=")[::2] for m in (incoming.tracestate or "").split(",") if m]
            remote = SpanContext(
                int(incoming.trace_id, 16),
                int(incoming.parent_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(incoming.flags),
                trace_state=TraceState(members),
            )
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
        self._tracer = tracer
        self._peer = peer
        self._annotations: dict[str, AttributeValue] = {}
        self._span = tracer.start_span(
            f"{service}/{name}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        self._context = trace.set_span_in_context(self._span)

    @property
    def trace_id(self) -> str:
        return f"{self._span.get_span_context().trace_id:032x}"

    def annotate(self, attributes: Mapping[str, str]) -> None:
        named = {f"nvp_adapter.{key}": value for key, value in attributes.items() if value}
        self._annotations.update(named)
        self._span.set_attributes(named)

    @contextlib.contextmanager
    def attempt(self, number: int) -> Iterator[AttemptTrace]:
        attributes: dict[str, AttributeValue] = {
            "http.request.method": "POST",
            "nvp_adapter.attempt": number,
            **self._peer,
            **self._annotations,
        }
        if number > 1:
            attributes["http.request.resend_count"] = number - 1
        span = self._tracer.start_span(
            "POST", context=self._context, kind=SpanKind.CLIENT, attributes=attributes
        )
        try:
            yield _ClientAttempt(span, self._tracestate)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR))
            raise
        finally:
            span.end()

    def end(self, code: grpc.StatusCode) -> None:
        number: int = code.value[0]
        self._span.set_attribute("rpc.grpc.status_code", number)
        if code in SERVER_ERRORS:
            self._span.set_status(Status(StatusCode.ERROR))
        self._span.end()


class _ClientAttempt(AttemptTrace):
    """An attempt whose ``traceparent`` is its CLIENT span's own context."""

    __slots__ = ("_span",)

    def __init__(self, span: trace.Span, tracestate: str | None) -> None:
        context = span.get_span_context()
        headers = None
        if context.is_valid:  # always, but for a no-op tracer
            trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
            headers = trace_headers(trace_id, span_id, context.trace_flags, tracestate)
        super().__init__(headers)
        self._span = span

    def answered(self, status: int) -> None:
        self._span.set_attribute("http.response.status_code", status)
        if status >= 400:
            self._span.set_attribute("error.type", str(status))
            self._span.set_status(Status(StatusCode.ERROR))
