"""W3C trace context: read from a call's metadata, sent on with every upstream attempt.

A ``traceparent`` (and its ``tracestate``) in a call's gRPC metadata is parsed strictly, once, by
``TraceInterceptor``. Each upstream attempt then sends ``traceparent`` with the same trace id, a
new span id and the flags, and the ``tracestate`` as it came (``attempt_trace``). A value that
does not parse is ignored and the call goes on untraced: what goes on the wire is always rebuilt
from parsed parts, never the caller's text, so no caller can put a line break or a byte of its
choosing into a gateway request's headers.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set and the
``otel`` extra installed, ``adapter.observability.otel`` adds a SERVER span per RPC and a CLIENT
span per attempt, exported by the OpenTelemetry SDK configured from its standard variables; the
span id sent upstream is then the CLIENT span's. Only then is OpenTelemetry imported.

>>> trace_id = current_trace_id()  # in an RPC: the id that came in (or OpenTelemetry's), or None
>>> with attempt_trace(1) as attempt:  # doctest: +SKIP
...     reply = await transport.post(body, budget, headers=attempt.headers)
...     attempt.answered(reply.status)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import grpc

from adapter.config import UpstreamSettings, redact_url
from adapter.core.errors import ConfigError
from adapter.net.interceptors import Behaviour, ended_with
from adapter.observability.call import current_call, this_call
from adapter.observability.trace_context import (
    AttemptTrace,
    RpcTrace,
    TraceContext,
    incoming_context,
    new_span_id,
)

__all__ = [
    "TraceInterceptor",
    "Tracing",
    "annotate",
    "attempt_trace",
    "current_trace_id",
]

log = logging.getLogger("adapter.tracing")

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
PROTOCOLS = ("http/protobuf", "grpc")
"""The OTLP protocols the Python exporters speak; the first is the default, as OTLP specifies."""


class Propagation:
    """A traced RPC without OpenTelemetry: each attempt goes on as a new span of the caller's."""

    def __init__(self, incoming: TraceContext) -> None:
        self._incoming = incoming

    @property
    def trace_id(self) -> str:
        return self._incoming.trace_id

    def attempt(self, number: int) -> AbstractContextManager[AttemptTrace]:
        return contextlib.nullcontext(AttemptTrace(self._incoming.headers(new_span_id())))

    def annotate(self, attributes: Mapping[str, str]) -> None:
        return None

    def end(self, code: grpc.StatusCode) -> None:
        return None


class SpanExport(Protocol):
    """What ``adapter.observability.otel.Spans`` offers: this module's one seam to OpenTelemetry."""

    def rpc(self, method: str, incoming: TraceContext | None) -> RpcTrace: ...

    def shutdown(self) -> None: ...


_UNTRACED = contextlib.nullcontext(AttemptTrace(None))


def current_trace_id() -> str | None:
    """The trace id of the RPC being handled: from the caller's ``traceparent``, or the trace
    OpenTelemetry started for it; None when the RPC is untraced (or outside an RPC)."""
    call = current_call()
    return None if call is None or call.trace is None else call.trace.trace_id


def attempt_trace(number: int) -> AbstractContextManager[AttemptTrace]:
    """Upstream attempt ``number`` of the current RPC; its ``headers`` are None if untraced."""
    call = current_call()
    return _UNTRACED if call is None or call.trace is None else call.trace.attempt(number)


def annotate(**attributes: str) -> None:
    """Name what the current RPC is about on its spans (merchant, operation); never a secret."""
    call = current_call()
    if call is not None and call.trace is not None:
        call.trace.annotate(attributes)


@dataclass(frozen=True, slots=True)
class OtlpExport:
    """Where and how spans are exported, as the standard variables say."""

    endpoint: str
    protocol: str


class Tracing:
    """The process's tracing: W3C propagation always; spans too once ``start`` finds OpenTelemetry.

    >>> tracing = Tracing.from_environment(settings.upstream)  # doctest: +SKIP
    >>> tracing.start()  # doctest: +SKIP
    >>> await tracing.aclose()  # doctest: +SKIP
    """

    def __init__(
        self, export: OtlpExport | None = None, upstream: UpstreamSettings | None = None
    ) -> None:
        self.export = export
        self._upstream = upstream
        self._spans: SpanExport | None = None

    @classmethod
    def from_environment(
        cls, upstream: UpstreamSettings | None = None, environ: Mapping[str, str] = os.environ
    ) -> Tracing:
        """Spans are exported when an OTLP endpoint variable is set and the SDK is not disabled.

        Reads only what decides that; the SDK and the exporter read the rest of the variables
        themselves. Raises ``ConfigError`` for an OTLP protocol no Python exporter speaks.
        """
        endpoint = next((environ[name] for name in _ENDPOINT_VARIABLES if environ.get(name)), "")
        if not endpoint or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls(upstream=upstream)
        name, protocol = next(
            ((name, environ[name]) for name in _PROTOCOL_VARIABLES if environ.get(name)),
            ("", PROTOCOLS[0]),
        )
        if protocol.strip() not in PROTOCOLS:
            raise ConfigError(
                f"{name} {protocol!r}: expected one of {', '.join(PROTOCOLS)}"
                " (the Python OTLP exporters do not speak http/json)"
            )
        return cls(OtlpExport(endpoint, protocol.strip()), upstream)

    @property
    def exporting(self) -> bool:
        """Whether spans are being exported (after ``start``)."""
        return self._spans is not None

    def start(self) -> None:
        """Set up the span export, if configured; without the ``otel`` extra, warn and go on."""
        if self.export is None or self._spans is not None:
            return
        try:
            from adapter.observability import otel  # noqa: PLC0415 (imported only when spans are exported)
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("opentelemetry"):
                raise
            log.warning(
                "an OTLP endpoint is set but OpenTelemetry is not installed "
                "(pip install 'nvp-adapter[otel]'): traceparent is passed on, no span is exported"
            )
            return
        try:
            self._spans = otel.Spans(self.export.protocol, _peer(self._upstream))
        except (OSError, ValueError) as exc:  # e.g. a certificate file named by a variable
            raise ConfigError(f"cannot set up the OTLP span export: {exc}") from None
        log.info(
            "exporting spans over OTLP %s to %s",
            self.export.protocol,
            redact_url(self.export.endpoint),
        )

    def begin(self, method: str, metadata: Sequence[tuple[str, str | bytes]]) -> RpcTrace | None:
        """The trace of an RPC starting with this metadata; None when it is untraced."""
        incoming = incoming_context(metadata)
        if self._spans is not None:
            return self._spans.rpc(method, incoming)
        return None if incoming is None else Propagation(incoming)

    async def aclose(self) -> None:
        """Export the spans still held, then stop exporting; safe to call twice."""
        spans, self._spans = self._spans, None
        if spans is not None:
            await asyncio.to_thread(spans.shutdown)  # it blocks for as long as the export takes


def _peer(upstream: UpstreamSettings | None) -> tuple[str, int] | None:
    """The gateway's host and port, for the attempts' spans; None for the embedded gateway."""
    if upstream is None or upstream.is_embedded:
        return None
    parts = urlsplit(upstream.url)
    if parts.hostname is None:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


class TraceInterceptor:
    """Reads each call's trace context and holds it for the RPC: the outermost interceptor.

    An ``interceptors.Interceptor``. Only the unary methods of ``services`` are traced: health
    probes and reflection are not.
    """

    def __init__(self, tracing: Tracing, services: Sequence[str]) -> None:
        self._tracing = tracing
        self._prefixes = tuple(f"/{service}/" for service in services)

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any] | None, method: str
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if handler is None or not method.startswith(self._prefixes):
            return handler
        behaviour = handler.unary_unary
        if behaviour is None:
            return handler
        return handler._replace(unary_unary=self._traced(behaviour, method))  # type: ignore[attr-defined,no-any-return]

    def _traced(self, behaviour: Behaviour, method: str) -> Behaviour:
        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            rpc = self._tracing.begin(method, tuple(context.invocation_metadata() or ()))
            if rpc is None:
                return await behaviour(request, context)
            call = this_call()
            call.trace = rpc
            if call.record is not None:
                call.record.trace_id = rpc.trace_id
            try:
                response = await behaviour(request, context)
            except BaseException as exc:  # an abort is an exception too: its code is on the context
                rpc.end(ended_with(context, exc))
                raise
            rpc.end(ended_with(context))
            return response

        return traced
