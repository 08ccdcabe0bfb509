"""When a failed upstream attempt may be tried again, and after how long.

Two things decide it. The failure: a request that never left the adapter (``UpstreamNotSent``:
refused, DNS, TLS, a connect timeout, a connection closed before the write) is safe to send again
for every operation; a gateway that says it did not process the request (``SERVER_BUSY``,
``UpstreamTurnedAway``: HTTP 429 or 503 with no NVP body) is safe only for an operation declared
``RETRY_SAFETY_REPEATABLE`` in the proto; anything that may have reached the gateway and done its
work (``UpstreamSentAndLost``, ``UpstreamFrontFailed``: HTTP 502 or 504) is never retried. A
gateway certificate the adapter refuses (``UpstreamCertificateInvalid``) never left either, but it
is a configuration fault: the next attempt would meet the same certificate, so it is not retried;
nor is a request the caller's deadline left no time to send (``UpstreamDeadlineBeforeSend``). And
the budget: attempts are bounded, and no wait runs past the caller's deadline.

Delays grow exponentially with full jitter, and are never shorter than the gateway's
``Retry-After``; advice longer than ``max_retry_after`` is not waited for: the failure is final
(the caller gets the advice in its RetryInfo and decides), so a gateway cannot hold a call for as
long as it likes. No wait runs past the caller's deadline either (``calls.UpstreamClient``).

>>> from adapter.core.errors import UpstreamTurnedAway, UpstreamUnavailable
>>> policy = RetryPolicy(max_attempts=3, initial_backoff=0.1, max_backoff=2.0)
>>> policy.delay(UpstreamUnavailable("refused"), attempt=1, repeatable=False) <= 0.1
True
>>> policy.delay(UpstreamUnavailable("refused"), attempt=3, repeatable=False) is None
True
>>> policy.delay(UpstreamTurnedAway(503, retry_after=3600.0), attempt=1, repeatable=True) is None
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from adapter.core.errors import (
    GatewayRejected,
    UpstreamCertificateInvalid,
    UpstreamDeadlineBeforeSend,
    UpstreamError,
    UpstreamNotSent,
    UpstreamTurnedAway,
)

__all__ = ["SERVER_BUSY", "RetryPolicy"]

SERVER_BUSY = "SERVER_BUSY"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds and backoff for one call's attempts; ``max_attempts`` 1 means no retries.

    ``max_retry_after`` is the longest ``Retry-After`` advice that is waited for (the setting
    ``upstream.retry_after_max_seconds``).
    """

    max_attempts: int
    initial_backoff: float
    max_backoff: float
    max_retry_after: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, failure: UpstreamError, attempt: int, repeatable: bool) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None if it must not be made."""
        if attempt >= self.max_attempts:
            return None
        advice = _retry_advice(failure, repeatable)
        if advice is None or advice > self.max_retry_after:
            return None
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return max(self.rng.uniform(0, ceiling), advice)


def _retry_advice(failure: UpstreamError, repeatable: bool) -> float | None:
    """The least wait the failure itself asks for, or None if it is not safe to retry."""
    if isinstance(failure, UpstreamCertificateInvalid | UpstreamDeadlineBeforeSend):
        return None  # safe, but it would fail the same way, or there is no time
    if isinstance(failure, UpstreamNotSent):
        return 0.0
    if not repeatable:
        return None
    if isinstance(failure, GatewayRejected) and failure.cause == SERVER_BUSY:
        return 0.0
    if isinstance(failure, UpstreamTurnedAway):
        return 0.0 if failure.retry_after is None else failure.retry_after
    return None
