"""Which failures are retried, for which operations, and how long the adapter waits."""

from __future__ import annotations

import random

import pytest

from adapter.core.errors import (
    GatewayRejected,
    UpstreamCertificateInvalid,
    UpstreamConnectionLost,
    UpstreamConnectTimeout,
    UpstreamDeadlineBeforeSend,
    UpstreamError,
    UpstreamFrontFailed,
    UpstreamProtocolError,
    UpstreamReadTimeout,
    UpstreamTurnedAway,
    UpstreamUnavailable,
)
from adapter.core.schema import OPERATIONS
from adapter.upstream.retry import RetryPolicy

POLICY = RetryPolicy(max_attempts=3, initial_backoff=0.1, max_backoff=2.0)


def busy() -> GatewayRejected:
    return GatewayRejected(503, {"error.cause": "SERVER_BUSY", "result": "ERROR"})


# (failure, retried for a repeatable operation, retried for any other)
TABLE: dict[str, tuple[UpstreamError, bool, bool]] = {
    "never sent": (UpstreamUnavailable("refused"), True, True),
    "connect timeout, never sent": (UpstreamConnectTimeout("5s"), True, True),
    "certificate refused, would be again": (UpstreamCertificateInvalid("expired"), False, False),
    "no time left to send": (UpstreamDeadlineBeforeSend("0s"), False, False),
    "SERVER_BUSY": (busy(), True, False),
    "HTTP 429": (UpstreamTurnedAway(429), True, False),
    "HTTP 503": (UpstreamTurnedAway(503), True, False),
    "HTTP 502 may have been processed": (UpstreamFrontFailed(502), False, False),
    "HTTP 504 may have been processed": (UpstreamFrontFailed(504), False, False),
    "connection lost after sending": (UpstreamConnectionLost("reset"), False, False),
    "timeout after sending": (UpstreamReadTimeout("gw", seconds=1.0), False, False),
    "protocol error": (UpstreamProtocolError("html"), False, False),
    "SERVER_FAILED": (
        GatewayRejected(500, {"error.cause": "SERVER_FAILED", "result": "ERROR"}),
        False,
        False,
    ),
    "INVALID_REQUEST": (
        GatewayRejected(400, {"error.cause": "INVALID_REQUEST", "result": "ERROR"}),
        False,
        False,
    ),
}


@pytest.mark.parametrize(("failure", "repeatable", "other"), TABLE.values(), ids=TABLE.keys())
def test_what_is_retried(failure: UpstreamError, repeatable: bool, other: bool) -> None:
    """Never-sent failures retry for every operation; 'not processed' only for repeatable ones;
    anything that may have been processed never."""
    assert (POLICY.delay(failure, 1, repeatable=True) is not None) == repeatable
    assert (POLICY.delay(failure, 1, repeatable=False) is not None) == other


def test_attempts_are_bounded() -> None:
    """No delay is given once max_attempts attempts have been made."""
    failure = UpstreamUnavailable("refused")
    assert POLICY.delay(failure, 2, repeatable=True) is not None
    assert POLICY.delay(failure, 3, repeatable=True) is None
    assert RetryPolicy(1, 0.1, 2.0).delay(failure, 1, repeatable=True) is None


@pytest.mark.parametrize("attempt", [1, 2])
def test_backoff_is_jittered_and_exponential(attempt: int) -> None:
    """Delays spread over [0, initial * 2**(n-1)], capped by max_backoff."""
    policy = RetryPolicy(10, 0.1, 0.15, rng=random.Random(7))  # noqa: S311 (jitter, no secret)
    delays = [policy.delay(UpstreamUnavailable("x"), attempt, True) for _ in range(500)]
    ceiling = min(0.15, 0.1 * 2 ** (attempt - 1))
    assert all(d is not None and 0 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 400, "jittered, not fixed"
    assert max(d for d in delays if d is not None) > ceiling * 0.9


def test_retry_after_is_a_floor() -> None:
    """The gateway's Retry-After is never undercut by the backoff."""
    failure = UpstreamTurnedAway(503, retry_after=1.5)
    assert POLICY.delay(failure, 1, repeatable=True) == 1.5


def test_create_session_is_declared_repeatable() -> None:
    """CreateSession's proto option declares it repeatable; the declaration reaches the schema."""
    assert OPERATIONS["CreateSession"].repeatable
