"""W3C trace context: read from a call's metadata, sent on with every upstream attempt.

A ``traceparent`` (and its ``tracestate``) in a call's gRPC metadata is parsed strictly, once, by
``TraceInterceptor``. Each upstream attempt then sends ``traceparent`` with the same trace id, a
new span id and the flags, and the ``tracestate`` as it came (``attempt_trace``). A value that
does not parse is ignored and the call goes on untraced: what goes on the wire is always rebuilt
from parsed parts, never the caller's text, so no caller can put a line break or a byte of its
choosing into a gateway request's headers.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set and the
``otel`` extra installed, ``adapter.otel`` adds a SERVER span per RPC and a CLIENT span per
attempt, exported by the OpenTelemetry SDK configured from its standard variables; the span id
sent upstream is then the CLIENT span's. Only then is OpenTelemetry imported.

>>> trace_id = current_trace_id()  # in an RPC: the id that came in (or OpenTelemetry's), or None
>>> with attempt_trace(1) as attempt:  # doctest: +SKIP
...     reply = await transport.post(body, budget, headers=attempt.headers)
...     attempt.answered(reply.status)
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

import grpc

from adapter.config import UpstreamSettings, redact_url
from adapter.errors import ConfigError
from adapter.interceptors import Behaviour, ended_with

__all__ = [
    "AttemptTrace",
    "RpcTrace",
    "TraceContext",
    "TraceInterceptor",
    "Tracing",
    "annotate",
    "attempt_trace",
    "current_trace_id",
    "parse_traceparent",
    "parse_tracestate",
    "trace_headers",
]

log = logging.getLogger("adapter.tracing")

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MAX_TRACEPARENT_CHARS = 512
"""A later version's ``traceparent`` may be longer than 55 characters, but not past this."""
MAX_TRACESTATE_CHARS = 512
"""The most of ``tracestate`` passed on: the 512 characters W3C asks every vendor to carry."""
MAX_TRACESTATE_INPUT_CHARS = 8192
"""A longer ``tracestate`` is not even read (grpc refuses metadata past 8 KiB anyway)."""
MAX_TRACESTATE_MEMBERS = 32
_LONG_MEMBER_CHARS = 128
"""When ``tracestate`` must be cut, W3C says members longer than this go first."""

_VERSION_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# A later version: the same fields first, then "-" and fields this version cannot know.
_LATER_VERSION = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?")
_KNOWN_FLAGS = 0x03
"""``sampled`` (0x01) and ``random`` (0x02); W3C has every other flag set to zero when sent on."""
_SAMPLED = 0x01
"""All a later version's flags can be trusted to mean (W3C, "Versioning of traceparent")."""
_KEY_CHARS = r"[a-z0-9_\-*/]"
_MEMBER = re.compile(
    rf"([a-z]{_KEY_CHARS}{{0,255}}|[a-z0-9]{_KEY_CHARS}{{0,240}}@[a-z]{_KEY_CHARS}{{0,13}})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
"""A ``tracestate`` list member: W3C Trace Context's key and value grammar, as OpenTelemetry's."""

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
PROTOCOLS = ("http/protobuf", "grpc")
"""The OTLP protocols the Python exporters speak; the first is the default, as OTLP specifies."""


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A caller's trace context, parsed: the only form in which any of it is sent on."""

    trace_id: str
    """32 lower-case hex digits, not all zero."""
    parent_id: str
    """16 lower-case hex digits, not all zero: the caller's span."""
    flags: int
    """The trace flags the adapter sends on (known flags only)."""
    tracestate: str | None = None
    """The validated ``tracestate``, members joined by ``,``; None when absent or malformed."""

    def headers(self, span_id: str) -> dict[str, str]:
        """The headers of one upstream request made as the span ``span_id`` of this trace."""
        return trace_headers(self.trace_id, span_id, self.flags, self.tracestate)


def trace_headers(
    trace_id: str, span_id: str, flags: int, tracestate: str | None
) -> dict[str, str]:
    """``traceparent`` (version 00) and, when there is one, ``tracestate``, from parsed parts."""
    headers = {TRACEPARENT: f"00-{trace_id}-{span_id}-{flags:02x}"}
    if tracestate:
        headers[TRACESTATE] = tracestate
    return headers


def parse_traceparent(value: str) -> TraceContext | None:
    """The trace context in a ``traceparent`` value; None if it is malformed in any way.

    Version ``00`` is exactly ``00-<32 hex>-<16 hex>-<2 hex>``, lower case, neither id all
    zeros. A later version (not ``ff``) is read as W3C's forward-compatibility rule says: the
    same three fields, then nothing or ``-`` and fields this version does not read; only its
    sampled flag is kept.

    >>> parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").flags
    1
    >>> parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01") is None
    True
    """
    if len(value) > MAX_TRACEPARENT_CHARS or not (value.isascii() and value.isprintable()):
        return None
    if value.startswith("00-"):
        match, mask = _VERSION_00.fullmatch(value), _KNOWN_FLAGS
    elif value.startswith("ff-"):
        return None
    else:
        match, mask = _LATER_VERSION.fullmatch(value), _SAMPLED
    if match is None:
        return None
    trace_id, parent_id, flags = match.groups()
    if int(trace_id, 16) == 0 or int(parent_id, 16) == 0:
        return None
    return TraceContext(trace_id, parent_id, int(flags, 16) & mask)


def parse_tracestate(values: Sequence[str]) -> str | None:
    """The ``tracestate`` to send on, from one or more values; None if absent or malformed.

    Several values are one list joined by ``,`` (as HTTP joins repeated headers). Empty members
    are dropped; a member that breaks W3C's grammar, a key given twice or more than 32 members
    make the whole value malformed. Past ``MAX_TRACESTATE_CHARS``, whole members are dropped as
    W3C says: those over 128 characters first, then from the end.

    >>> parse_tracestate(["rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"])
    'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE'
    >>> parse_tracestate(["rojo=1\\r\\nx: y"]) is None
    True
    """
    combined = ",".join(values)
    if len(combined) > MAX_TRACESTATE_INPUT_CHARS:
        return None
    members: list[str] = []
    keys: set[str] = set()
    for raw in combined.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        match = _MEMBER.fullmatch(member)
        if match is None or match.group(1) in keys:
            return None
        keys.add(match.group(1))
        members.append(member)
    if len(members) > MAX_TRACESTATE_MEMBERS:
        return None
    if len(",".join(members)) > MAX_TRACESTATE_CHARS:
        members = [member for member in members if len(member) <= _LONG_MEMBER_CHARS]
        while len(",".join(members)) > MAX_TRACESTATE_CHARS:
            members.pop()
    return ",".join(members) or None


def incoming_context(metadata: Sequence[tuple[str, str | bytes]]) -> TraceContext | None:
    """The trace context a call's metadata carries; None without exactly one good traceparent."""
    parents = [value for key, value in metadata if key == TRACEPARENT]
    if len(parents) != 1 or not isinstance(parents[0], str):
        return None
    context = parse_traceparent(parents[0])
    if context is None:  # W3C: tracestate is not read when traceparent does not parse
        return None
    states = [value for key, value in metadata if key == TRACESTATE and isinstance(value, str)]
    if not states:
        return context
    return replace(context, tracestate=parse_tracestate(states))


def new_span_id() -> str:
    """16 random lower-case hex digits, never all zero."""
    while (span_id := secrets.token_hex(8)) == "0" * 16:  # pragma: no cover (1 in 2**64)
        pass
    return span_id


class AttemptTrace:
    """One upstream attempt, traced: the headers it sends, and the HTTP status it got."""

    __slots__ = ("headers",)

    def __init__(self, headers: Mapping[str, str] | None) -> None:
        self.headers = headers
        """``traceparent`` (and ``tracestate``) for this attempt; None when the RPC is untraced."""

    def answered(self, status: int) -> None:
        """The gateway answered this attempt with HTTP ``status``."""


class RpcTrace(Protocol):
    """One traced RPC, from its start to its status."""

    @property
    def trace_id(self) -> str:
        """The RPC's trace id: 32 lower-case hex digits."""
        ...

    def attempt(self, number: int) -> AbstractContextManager[AttemptTrace]:
        """Upstream attempt ``number`` (from 1), for as long as it lasts."""
        ...

    def annotate(self, attributes: Mapping[str, str]) -> None:
        """What the RPC came to be about (merchant, operation), once it is known."""
        ...

    def end(self, code: grpc.StatusCode) -> None:
        """The RPC ended with ``code``."""
        ...


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
    """What ``adapter.otel.Spans`` offers: the one seam between this module and OpenTelemetry."""

    def rpc(self, method: str, incoming: TraceContext | None) -> RpcTrace: ...

    def shutdown(self) -> None: ...


_current: contextvars.ContextVar[RpcTrace | None] = contextvars.ContextVar("trace", default=None)
_UNTRACED = contextlib.nullcontext(AttemptTrace(None))


def current_trace_id() -> str | None:
    """The trace id of the RPC being handled: from the caller's ``traceparent``, or the trace
    OpenTelemetry started for it; None when the RPC is untraced (or outside an RPC)."""
    rpc = _current.get()
    return None if rpc is None else rpc.trace_id


def attempt_trace(number: int) -> AbstractContextManager[AttemptTrace]:
    """Upstream attempt ``number`` of the current RPC; its ``headers`` are None if untraced."""
    rpc = _current.get()
    return _UNTRACED if rpc is None else rpc.attempt(number)


def annotate(**attributes: str) -> None:
    """Name what the current RPC is about on its spans (merchant, operation); never a secret."""
    rpc = _current.get()
    if rpc is not None:
        rpc.annotate(attributes)


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
            from adapter import otel  # noqa: PLC0415 (imported only when spans are exported)
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
            token = _current.set(rpc)
            try:
                response = await behaviour(request, context)
            except BaseException as exc:  # an abort is an exception too: its code is on the context
                rpc.end(ended_with(context, exc))
                raise
            finally:
                _current.reset(token)
            rpc.end(ended_with(context))
            return response

        return traced
