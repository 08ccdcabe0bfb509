"""W3C trace context: a caller's ``traceparent`` and ``tracestate`` parsed strictly, and the
headers one upstream attempt sends, always rebuilt from parsed parts, never the caller's text.

The types both ``tracing`` (propagation, the interceptor) and ``otel`` (spans) stand on.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Protocol

import grpc

__all__ = [
    "MAX_TRACESTATE_CHARS",
    "TRACEPARENT",
    "TRACESTATE",
    "AttemptTrace",
    "RpcTrace",
    "TraceContext",
    "incoming_context",
    "new_span_id",
    "parse_traceparent",
    "parse_tracestate",
    "trace_headers",
]

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
