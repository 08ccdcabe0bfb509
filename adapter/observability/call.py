"""The one context of an RPC: what its interceptors learn, and its handler and the upstream
client read.

One context variable, owned by this module and set nowhere else. ``start_call`` opens a fresh
``CallContext`` for each RPC (``access.CallObserver``, the outermost interceptor, calls it);
tracing puts the call's trace in it (``tracing.TraceInterceptor``), caller authentication the
caller (``server.callers``), and the handler and the upstream client write what the access line
says (``CallRecord``). grpc.aio handles each RPC in an asyncio task of its own, and a task starts
with a copy of its creator's context, so what one call sets no other call sees.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from adapter.config import CallerSettings
from adapter.core.status import clip
from adapter.observability.trace_context import RpcTrace

__all__ = [
    "MAX_LOGGED_CHARS",
    "CallContext",
    "CallRecord",
    "current_call",
    "start_call",
    "this_call",
]

MAX_LOGGED_CHARS = 128
"""A caller's own text (a merchant id or correlation id that failed validation) is clipped to
this in the access line: a line stays a line, whatever a caller sends."""


@dataclass(slots=True)
class CallRecord:
    """What the access line says of one call; filled in by whoever knows each part."""

    rpc: str
    caller: str | None = None
    merchant: str | None = None
    correlation_id: str | None = None
    reason: str | None = None
    """The ErrorInfo reason of a failure."""
    status_message: str | None = None
    """A failure's status message, with every configured password scrubbed."""
    attempts: int | None = None
    http_status: int | None = None
    outcome: str | None = None
    """``reconciled`` or ``replayed``: a payment's answer found again after a lost answer, or
    a retry answered with the transaction its ids already name (CONTRACT §9)."""
    trace_id: str | None = None
    started: float = field(default_factory=time.perf_counter)

    def fields(self, code: grpc.StatusCode, duration_ms: float) -> dict[str, Any]:
        """The access line's fields, those with no value left out."""
        values: dict[str, Any] = {
            "rpc": _clipped(self.rpc),
            "merchant": _clipped(self.merchant),
            "caller": self.caller,
            "code": code.name,
            "reason": self.reason,
            "attempts": self.attempts,
            "http_status": self.http_status,
            "outcome": self.outcome,
            "duration_ms": round(duration_ms, 2),
            "correlation_id": _clipped(self.correlation_id),
            "trace_id": self.trace_id,
            "status_message": self.status_message,
        }
        return {name: value for name, value in values.items() if value is not None}


def _clipped(text: str | None) -> str | None:
    return None if text is None else clip(text, MAX_LOGGED_CHARS + 1)  # 128 and the ellipsis


@dataclass(slots=True)
class CallContext:
    """Everything one RPC carries from its interceptors to its handler and the upstream client."""

    record: CallRecord | None = None
    """What the access line will say; None when the call is not observed."""
    trace: RpcTrace | None = None
    """The call's trace; None when it is untraced."""
    caller: CallerSettings | None = None
    """The authenticated caller; None when caller authentication is off."""


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("call", default=None)


def start_call() -> CallContext:
    """A fresh context for the RPC whose task this is."""
    call = CallContext()
    _current.set(call)
    return call


def this_call() -> CallContext:
    """The RPC's context, started here if no interceptor before this one started it."""
    return _current.get() or start_call()


def current_call() -> CallContext | None:
    """The context of the RPC being handled; None outside an RPC."""
    return _current.get()
