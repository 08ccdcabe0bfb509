"""W3C trace context, parsed strictly: the tables of what is taken and what is ignored.

The rules are W3C Trace Context's, written out here rather than imported, so the parser is checked
against the specification and not against itself.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.core.errors import ConfigError
from adapter.observability.trace_context import (
    MAX_TRACESTATE_CHARS,
    AttemptTrace,
    TraceContext,
    incoming_context,
    parse_traceparent,
    parse_tracestate,
)
from adapter.observability.tracing import Tracing, attempt_trace, current_trace_id

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
GOOD = f"00-{TRACE_ID}-{PARENT_ID}-01"
SENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[0-3]")
"""Every traceparent the adapter sends: version 00, lower-case hex, only known flags."""
MEMBER = re.compile(
    r"([a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)


@pytest.mark.parametrize(
    ("value", "flags"),
    [
        (GOOD, 0x01),
        (f"00-{TRACE_ID}-{PARENT_ID}-00", 0x00),
        (f"00-{TRACE_ID}-{PARENT_ID}-03", 0x03),  # sampled and random: both known
        (f"00-{TRACE_ID}-{PARENT_ID}-ff", 0x03),  # reserved flags are sent on as zero
        (f"01-{TRACE_ID}-{PARENT_ID}-03", 0x01),  # a later version: only its sampled bit
        (f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-holds", 0x01),
        (f"01-{TRACE_ID}-{PARENT_ID}-00-", 0x00),
    ],
    ids=[
        "sampled",
        "not sampled",
        "random",
        "reserved flags",
        "later version",
        "later version, more fields",
        "later version, empty field",
    ],
)
def test_valid_traceparent(value: str, flags: int) -> None:
    """A well-formed traceparent gives its trace id and parent id, and the flags sent on."""
    assert parse_traceparent(value) == TraceContext(TRACE_ID, PARENT_ID, flags)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00",
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID.upper()}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-0A",
        f"0A-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{'0' * 32}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"ff-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-01-",
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",
        f" {GOOD}",
        f"{GOOD} ",
        GOOD[:-1],
        f"00-{TRACE_ID}-{PARENT_ID}-1",
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
        f"00_{TRACE_ID}_{PARENT_ID}_01",
        f"00-{TRACE_ID}{PARENT_ID}-01",
        f"01-{TRACE_ID}-{PARENT_ID}-01x",
        f"01-{TRACE_ID}-{PARENT_ID}",
        f"0g-{TRACE_ID}-{PARENT_ID}-01",
        f"{GOOD}\r\nX-Injected: 1",
        f"01-{TRACE_ID}-{PARENT_ID}-01-\r\nX-Injected: 1",
        f"00-{TRACE_ID}-{PARENT_ID}-0\u00e9",
        f"01-{TRACE_ID}-{PARENT_ID}-01-\u00e9",
        f"01-{TRACE_ID}-{PARENT_ID}-01-{'a' * 1000}",
        f"00-{TRACE_ID}-{PARENT_ID}-01\x00",
        f"00-{TRACE_ID}-{PARENT_ID}-\t1",
    ],
    ids=[
        "empty",
        "version only",
        "upper-case trace id",
        "upper-case parent id",
        "upper-case flags",
        "upper-case version",
        "zero trace id",
        "zero parent id",
        "version ff",
        "version 00 with a trailing dash",
        "version 00 with more fields",
        "leading space",
        "trailing space",
        "one character short",
        "one-digit flags",
        "short trace id",
        "underscores",
        "a dash missing",
        "later version, flags not followed by a dash",
        "later version, no flags",
        "non-hex version",
        "CRLF after a good value",
        "CRLF in a later version's fields",
        "non-ASCII flags",
        "non-ASCII in a later version's fields",
        "over-long later version",
        "NUL",
        "tab",
    ],
)
def test_malformed_traceparent_is_ignored(value: str) -> None:
    """Anything but a well-formed traceparent gives no trace context."""
    assert parse_traceparent(value) is None


@given(st.text(max_size=600))
def test_any_text_parses_to_nothing_or_to_a_clean_traceparent(value: str) -> None:
    """Whatever text comes in (control characters, CRLF, non-ASCII included), what would be sent
    is either nothing or a version 00 traceparent of lower-case hex that came in the value."""
    context = parse_traceparent(value)
    if context is not None:
        sent = context.headers("1" * 16)
        assert set(sent) == {"traceparent"}
        match = SENT.fullmatch(sent["traceparent"])
        assert match is not None
        assert f"-{context.trace_id}-{context.parent_id}-" in value


@given(
    st.from_regex(r"[0-9a-f]{32}", fullmatch=True).filter(lambda v: int(v, 16) != 0),
    st.from_regex(r"[0-9a-f]{16}", fullmatch=True).filter(lambda v: int(v, 16) != 0),
    st.integers(0, 255),
)
def test_every_valid_version_00_value_is_taken(trace_id: str, parent_id: str, flags: int) -> None:
    """Any version 00 traceparent with non-zero ids is taken, its known flags kept."""
    context = parse_traceparent(f"00-{trace_id}-{parent_id}-{flags:02x}")
    assert context == TraceContext(trace_id, parent_id, flags & 0x03)


@pytest.mark.parametrize(
    ("values", "sent"),
    [
        (["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"], "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ([" rojo=1 ,\t, congo=2 "], "rojo=1,congo=2"),
        (["rojo=1", "congo=2"], "rojo=1,congo=2"),
        (["tenant1@system=v"], "tenant1@system=v"),
        (["rojo= leading space kept"], "rojo= leading space kept"),
        ([",".join(f"k{i:02}=v" for i in range(32))], ",".join(f"k{i:02}=v" for i in range(32))),
        ([""], None),
        ([" , ,"], None),
    ],
    ids=[
        "two members",
        "optional white space",
        "two values",
        "multi-tenant key",
        "leading space in a value",
        "32 members",
        "empty",
        "only empty members",
    ],
)
def test_valid_tracestate(values: list[str], sent: str | None) -> None:
    """A well-formed tracestate is sent on member by member, without optional white space."""
    assert parse_tracestate(values) == sent


@pytest.mark.parametrize(
    "value",
    [
        "Rojo=1",
        "rojo=1,rojo=2",
        "rojo=a=b",
        "rojo=1,congo",
        "rojo=",
        "=1",
        "_rojo=1",
        "rojo=1\r\nX-Injected: 1",
        "rojo=caf\u00e9",
        "rojo=a\tb",
        ",".join(f"k{i:02}=v" for i in range(33)),
        f"{'k' * 257}=1",
        f"rojo={'v' * 257}",
        f"t@{'s' * 15}=1",
        ",".join(f"k{i:02}={'v' * 256}" for i in range(32)),  # each member good, 8351 in all
    ],
    ids=[
        "upper-case key",
        "key twice",
        "equals sign in a value",
        "member without a value",
        "empty value",
        "empty key",
        "key starting with an underscore",
        "CRLF",
        "non-ASCII",
        "tab in a value",
        "33 members",
        "key over 256 characters",
        "value over 256 characters",
        "system id over 14 characters",
        "over 8 KiB",
    ],
)
def test_malformed_tracestate_is_dropped(value: str) -> None:
    """A tracestate that breaks W3C's grammar or limits is not sent on at all."""
    assert parse_tracestate([value]) is None


def test_long_tracestate_is_cut_by_whole_members() -> None:
    """Over 512 characters, members over 128 characters go first, then members from the end."""
    long = f"long={'x' * 130}"
    small = [f"k{i:02}={'v' * 60}" for i in range(8)]  # 64 characters each
    sent = parse_tracestate([",".join([small[0], long, *small[1:]])])
    assert sent == ",".join(small[:7])
    assert len(sent) <= MAX_TRACESTATE_CHARS


@given(st.lists(st.text(max_size=80), max_size=40))
def test_any_tracestate_is_dropped_or_sent_clean(values: list[str]) -> None:
    """Whatever comes in, what would be sent is nothing, or at most 512 characters of members
    that each follow W3C's grammar, printable ASCII with no line break."""
    sent = parse_tracestate(values)
    if sent is not None:
        assert len(sent) <= MAX_TRACESTATE_CHARS
        assert all(MEMBER.fullmatch(member) for member in sent.split(","))


def test_metadata_without_traceparent_is_untraced() -> None:
    """No traceparent, no trace context, whatever tracestate says."""
    assert incoming_context([("tracestate", "rojo=1"), ("x-other", "1")]) is None


def test_metadata_with_two_traceparents_is_untraced() -> None:
    """Two traceparents are ambiguous: neither is taken."""
    assert incoming_context([("traceparent", GOOD), ("traceparent", GOOD)]) is None


def test_malformed_tracestate_leaves_the_traceparent() -> None:
    """A bad tracestate is dropped; the traceparent beside it still counts."""
    context = incoming_context([("traceparent", GOOD), ("tracestate", "Rojo=1")])
    assert context == TraceContext(TRACE_ID, PARENT_ID, 0x01, None)


def test_tracestate_values_are_joined() -> None:
    """Several tracestate entries are one list, in order."""
    metadata = [("tracestate", "rojo=1"), ("traceparent", GOOD), ("tracestate", "congo=2")]
    assert incoming_context(metadata) == TraceContext(TRACE_ID, PARENT_ID, 0x01, "rojo=1,congo=2")


def test_headers_of_an_attempt() -> None:
    """An attempt's headers: the trace id, the attempt's span id, the flags, the tracestate."""
    context = TraceContext(TRACE_ID, PARENT_ID, 0x01, "rojo=1")
    assert context.headers("b7ad6b7169203331") == {
        "traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01",
        "tracestate": "rojo=1",
    }


def test_outside_an_rpc_nothing_is_traced() -> None:
    """Outside a traced RPC there is no trace id, and an attempt sends no trace headers."""
    assert current_trace_id() is None
    with attempt_trace(1) as attempt:
        assert isinstance(attempt, AttemptTrace)
        assert attempt.headers is None


async def test_without_opentelemetry_an_rpc_trace_is_propagation_only() -> None:
    """Without an OTLP endpoint an RPC with a traceparent keeps the caller's trace id, and each
    attempt gets a span id of its own; an RPC without one is untraced."""
    tracing = Tracing.from_environment(environ={})
    rpc = tracing.begin("/mpgs.gateway.v1.SessionService/CreateSession", [("traceparent", GOOD)])
    assert rpc is not None
    assert rpc.trace_id == TRACE_ID
    with rpc.attempt(1) as first, rpc.attempt(2) as second:
        sent = [_ids(first), _ids(second)]
    assert [trace_id for trace_id, _ in sent] == [TRACE_ID, TRACE_ID]
    assert len({PARENT_ID, *(span_id for _, span_id in sent)}) == 3
    assert tracing.begin("/mpgs.gateway.v1.SessionService/CreateSession", []) is None


def _ids(attempt: AttemptTrace) -> tuple[str, str]:
    """The trace id and span id an attempt sends."""
    match = SENT.fullmatch((attempt.headers or {}).get("traceparent", ""))
    assert match is not None, attempt.headers
    return match.group(1), match.group(2)


@pytest.mark.parametrize(
    ("environ", "protocol"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "http/protobuf"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "grpc",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            "grpc",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, None),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"},
            "http/protobuf",
        ),
    ],
    ids=[
        "no endpoint",
        "empty endpoint",
        "endpoint",
        "traces endpoint",
        "grpc",
        "traces protocol first",
        "SDK disabled",
        "SDK not disabled",
    ],
)
def test_export_from_the_environment(environ: dict[str, str], protocol: str | None) -> None:
    """Spans are exported when an OTLP endpoint variable is set, over the protocol the
    variables name (http/protobuf by default), unless the SDK is disabled."""
    export = Tracing.from_environment(environ=environ).export
    assert (export and export.protocol) == protocol


def test_an_unknown_protocol_is_a_configuration_error() -> None:
    """A protocol no Python exporter speaks stops the start, naming the variable and value."""
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
    }
    with pytest.raises(ConfigError) as error:
        Tracing.from_environment(environ=environ)
    assert str(error.value).startswith("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL 'http/json': expected")
