"""A caller's trace context crosses the adapter to the gateway: a real upstream on loopback
records the ``traceparent`` and ``tracestate`` headers of every attempt.

No OpenTelemetry here (no OTLP endpoint is set): this is what every adapter does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.observability import tracing
from adapter.upstream.transport import Reply
from tests.conftest import (
    MERCHANT,
    ScriptedUpstream,
    StartAdapter,
    make_settings,
)

if TYPE_CHECKING:  # the stub type grpc.aio channels give; it exists for type checkers only
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
SENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
SUCCESS = (
    "merchant=TESTMERCHANT&result=SUCCESS&session.id=SESSION0002AAAAAAAAAAAAAAAAAAAA"
    "&session.updateStatus=NO_UPDATE&session.version=0123456789"
)
REQUEST = pb.CreateSessionRequest(merchant=MERCHANT)
QUICK_RETRY: dict[str, Any] = {
    "retry_initial_backoff_seconds": 0.01,
    "retry_max_backoff_seconds": 0.01,
}


@pytest.fixture(autouse=True)
def _no_otlp_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's OTEL_* variables must not turn these tests into OpenTelemetry ones."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@dataclass
class Recorder:
    """The trace headers of every request the gateway received, in order; answers as told."""

    statuses: list[int] = field(default_factory=lambda: [200])
    """The status of each answer in turn; the last one repeats. 200 is a successful answer."""
    traceparents: list[list[str]] = field(default_factory=list)
    tracestates: list[list[str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.traceparents.append(request.headers.getall("traceparent", []))
        self.tracestates.append(request.headers.getall("tracestate", []))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return web.Response(status=status, body=SUCCESS if status == 200 else "busy")


@pytest.fixture
def recorder(scripted_upstream: ScriptedUpstream) -> Recorder:
    recorder = Recorder()
    scripted_upstream.handler = recorder.handle
    return recorder


def ids(traceparent: str) -> tuple[str, str, str]:
    """Trace id, span id and flags of a traceparent the adapter sent."""
    match = SENT.fullmatch(traceparent)
    assert match is not None, traceparent
    trace_id, span_id, flags = match.groups()
    return trace_id, span_id, flags


async def test_every_attempt_carries_the_trace_with_a_span_id_of_its_own(
    scripted_upstream: ScriptedUpstream, recorder: Recorder, start_adapter: StartAdapter
) -> None:
    """A call the gateway first answers 503 takes two attempts: both carry one traceparent with
    the caller's trace id and flags, each with a new span id (neither the caller's)."""
    recorder.statuses = [503, 200]
    stub = await start_adapter(make_settings(scripted_upstream.url, **QUICK_RETRY))
    await stub.CreateSession(REQUEST, timeout=5, metadata=(("traceparent", TRACEPARENT),))
    [first], [second] = recorder.traceparents
    assert ids(first)[::2] == (TRACE_ID, "01")
    assert ids(second)[::2] == (TRACE_ID, "01")
    assert len({PARENT_ID, ids(first)[1], ids(second)[1]}) == 3


async def test_tracestate_goes_with_every_attempt(
    scripted_upstream: ScriptedUpstream, recorder: Recorder, start_adapter: StartAdapter
) -> None:
    """The caller's tracestate goes on unchanged (but for optional white space) every time."""
    recorder.statuses = [503, 200]
    stub = await start_adapter(make_settings(scripted_upstream.url, **QUICK_RETRY))
    metadata = (("traceparent", TRACEPARENT), ("tracestate", "rojo=00f067aa0ba902b7, congo=t61"))
    await stub.CreateSession(REQUEST, timeout=5, metadata=metadata)
    assert recorder.tracestates == [["rojo=00f067aa0ba902b7,congo=t61"]] * 2


async def test_no_traceparent_in_no_trace_header_out(
    scripted_upstream: ScriptedUpstream, recorder: Recorder, start_adapter: StartAdapter
) -> None:
    """A call without traceparent sends neither traceparent nor tracestate: no trace is started
    (a tracestate alone is not a trace context)."""
    stub = await start_adapter(make_settings(scripted_upstream.url))
    await stub.CreateSession(REQUEST, timeout=5, metadata=(("tracestate", "rojo=1"),))
    assert (recorder.traceparents, recorder.tracestates) == ([[]], [[]])


async def test_a_later_version_goes_on_as_version_00(
    scripted_upstream: ScriptedUpstream, recorder: Recorder, start_adapter: StartAdapter
) -> None:
    """A traceparent of a later version is read by W3C's forward-compatibility rule and sent on
    as version 00, its unknown fields left behind."""
    stub = await start_adapter(make_settings(scripted_upstream.url))
    later = f"01-{TRACE_ID}-{PARENT_ID}-01-future-fields"
    await stub.CreateSession(REQUEST, timeout=5, metadata=(("traceparent", later),))
    [[sent]] = recorder.traceparents
    assert ids(sent)[::2] == (TRACE_ID, "01")


async def test_a_malformed_tracestate_is_dropped_and_the_traceparent_kept(
    scripted_upstream: ScriptedUpstream, recorder: Recorder, start_adapter: StartAdapter
) -> None:
    """A tracestate that breaks the grammar is not sent; the trace goes on without it."""
    stub = await start_adapter(make_settings(scripted_upstream.url))
    metadata = (("traceparent", TRACEPARENT), ("tracestate", "Rojo=1"))
    await stub.CreateSession(REQUEST, timeout=5, metadata=metadata)
    assert ids(recorder.traceparents[0][0])[0] == TRACE_ID
    assert recorder.tracestates == [[]]


# What makes a version 00 traceparent malformed, one way per strategy; the oracle is W3C's text.
HEX_POSITIONS = [i for i in range(55) if i not in (2, 35, 52)]
NOT_LOWER_HEX = st.sampled_from("ABCDEFgx -") | st.characters(
    min_codepoint=0x20, max_codepoint=0x7E
).filter(lambda c: c not in "0123456789abcdef")
PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
malformed = st.one_of(
    st.builds(  # one hex digit (version, ids or flags) replaced by anything else
        lambda i, c: TRACEPARENT[:i] + c + TRACEPARENT[i + 1 :],
        st.sampled_from(HEX_POSITIONS),
        NOT_LOWER_HEX,
    ),
    st.builds(  # one dash replaced
        lambda i, c: TRACEPARENT[:i] + c + TRACEPARENT[i + 1 :],
        st.sampled_from([2, 35, 52]),
        st.characters(min_codepoint=0x20, max_codepoint=0x7E).filter(lambda c: c != "-"),
    ),
    st.builds(lambda n: TRACEPARENT[:n], st.integers(0, 54)),  # cut short
    st.builds(lambda tail: TRACEPARENT + tail, PRINTABLE.filter(bool)),  # 00 takes nothing more
    st.builds(lambda head: head + TRACEPARENT, PRINTABLE.filter(bool)),
    st.builds(lambda flags: f"00-{'0' * 32}-{PARENT_ID}-{flags}", st.sampled_from(["00", "01"])),
    st.builds(lambda flags: f"00-{TRACE_ID}-{'0' * 16}-{flags}", st.sampled_from(["00", "01"])),
    st.builds(lambda tail: f"ff-{TRACE_ID}-{PARENT_ID}-01{tail}", st.sampled_from(["", "-x"])),
    st.builds(lambda tail: f"01-{TRACE_ID}-{PARENT_ID}-01-{tail}", st.just("a" * 600)),
    PRINTABLE.filter(lambda text: not text.startswith(("0", "1"))),
)


@pytest.fixture
async def rig(
    scripted_upstream: ScriptedUpstream, recorder: Recorder, start_adapter: StartAdapter
) -> tuple[Stub, Recorder]:
    """One adapter and one recording gateway for all the examples of a test."""
    return await start_adapter(make_settings(scripted_upstream.url)), recorder


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=malformed)
@example(value=TRACEPARENT.upper())
@example(value=f"00-{TRACE_ID}-{PARENT_ID}-01 ")
@example(value=f"00-{'0' * 32}-{PARENT_ID}-01")
async def test_a_malformed_traceparent_never_reaches_the_wire(
    rig: tuple[Stub, Recorder], value: str
) -> None:
    """Any malformed traceparent a gRPC client can send is ignored: the call succeeds and the
    gateway sees no traceparent and no tracestate. (Line breaks, control characters and
    non-ASCII text cannot be sent as gRPC metadata at all; the parser's own tests hold them.)"""
    stub, recorder = rig
    recorder.traceparents.clear()
    recorder.tracestates.clear()
    metadata = (("traceparent", value), ("tracestate", "rojo=1"))
    response = await stub.CreateSession(REQUEST, timeout=5, metadata=metadata)
    assert response.result == pb.RESULT_SUCCESS
    assert (recorder.traceparents, recorder.tracestates) == ([[]], [[]])


class TraceIdTransport:
    """A gateway that notes the RPC's trace id as the upstream call sees it, and succeeds."""

    def __init__(self) -> None:
        self.trace_ids: list[str | None] = []

    async def post(
        self, body: bytes, budget: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        self.trace_ids.append(tracing.current_trace_id())
        return Reply(200, SUCCESS.encode())

    async def aclose(self) -> None:
        return None


async def test_the_trace_id_is_at_hand_during_the_rpc() -> None:
    """Inside the RPC (where its access line is written) ``current_trace_id`` gives the caller's
    trace id; for a call without traceparent, None."""
    transport = TraceIdTransport()
    async with (
        build_server(make_settings(), transport) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        await stub.CreateSession(REQUEST, timeout=5, metadata=(("traceparent", TRACEPARENT),))
        await stub.CreateSession(REQUEST, timeout=5)
    assert transport.trace_ids == [TRACE_ID, None]


async def test_the_embedded_gateway_takes_a_traced_call(start_adapter: StartAdapter) -> None:
    """The in-process embedded gateway has no HTTP request to put the headers on: a traced call
    to it succeeds all the same."""
    stub = await start_adapter(make_settings())
    response = await stub.CreateSession(
        REQUEST, timeout=5, metadata=(("traceparent", TRACEPARENT),)
    )
    assert response.result == pb.RESULT_SUCCESS
