"""The call to the gateway: credentials, encoding, attempts, and what the answer means.

``UpstreamClient`` sends one NVP operation through a ``transport.Transport`` (the bytes' carrier,
HTTP or the embedded gateway), under the retry policy, the circuit breaker and the bound on calls
in flight; ``interpret`` reads the gateway's ``Reply`` into fields or one of the adapter's errors.
A successful call is an ``Answer``: the fields decoded, with the attempts it took (the one other
result type, as it holds what the reply meant rather than what came on the wire).
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from adapter.config import MerchantCredentials, UpstreamSettings
from adapter.core import nvp
from adapter.core.errors import (
    AdapterOverloaded,
    GatewayRejected,
    MerchantNotAllowed,
    UpstreamConnectTimeout,
    UpstreamDeadlineBeforeSend,
    UpstreamError,
    UpstreamFrontFailed,
    UpstreamHttpStatus,
    UpstreamProtocolError,
    UpstreamSentAndLost,
    UpstreamTurnedAway,
    UpstreamUnavailable,
)
from adapter.core.redaction import Redactor, Secret, scrub_error_answer, scrub_free_text
from adapter.core.status import reason_of
from adapter.net.resource import AsyncResource
from adapter.observability import tracing
from adapter.observability.metrics import Metrics
from adapter.upstream.breaker import CircuitBreaker
from adapter.upstream.retry import RetryPolicy
from adapter.upstream.transport import Reply, Transport

__all__ = [
    "FRONT_FAILED_STATUSES",
    "TURNED_AWAY_STATUSES",
    "Answer",
    "UpstreamClient",
    "interpret",
    "parse_retry_after",
]

log = logging.getLogger("adapter.upstream")

TURNED_AWAY_STATUSES = frozenset({429, 503})
"""Front-door answers that say the request was turned away, not worked on."""
FRONT_FAILED_STATUSES = frozenset({502, 504})
"""Front-door answers that say the gateway behind failed or timed out: it may have done the work."""
# Nine ASCII digits (under 32 years) are more than any real advice, and few enough that no
# arithmetic on them overflows; str.isdigit() would also take "²" and other Unicode digits.
_DELAY_SECONDS = re.compile(r"[0-9]{1,9}")


def interpret(reply: Reply) -> dict[str, str]:
    """The gateway's fields for a successful answer; raise for every other kind of answer.

    An error answer is all free text: its values go through ``scrub_error_answer`` before they
    are held in an exception, so no status, log line or repr can carry an echoed password.
    A successful answer is returned as sent: what it does not model is scrubbed where the
    response is built (``schema.Operation.decode_response``).
    """
    try:
        fields: dict[str, str] | None = nvp.decode(reply.body)
        problem = "no result field"
    except nvp.NvpDecodeError as exc:
        fields, problem = None, f"not valid NVP ({exc})"
    if fields is None or nvp.RESULT not in fields:
        advice = parse_retry_after(reply.retry_after)
        if reply.status in TURNED_AWAY_STATUSES:
            raise UpstreamTurnedAway(reply.status, retry_after=advice)
        if reply.status in FRONT_FAILED_STATUSES:
            raise UpstreamFrontFailed(reply.status, retry_after=advice)
        raise UpstreamProtocolError(f"HTTP {reply.status}, {problem}", http_status=reply.status)
    if fields[nvp.RESULT] == nvp.RESULT_ERROR:
        raise GatewayRejected(reply.status, scrub_error_answer(fields))
    return fields


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header; None if it is not usable advice.

    Usable: 1 to 9 ASCII digits, or an HTTP date (a date with no zone is read as GMT, as HTTP
    dates are; one in the past is 0). Anything else, a date that does not parse or that
    overflows included, is no advice.
    """
    if not value:
        return None
    value = value.strip(" \t")
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer's fields, how many attempts it took, and its HTTP status."""

    fields: dict[str, str]
    attempts: int
    http_status: int


class UpstreamClient(AsyncResource):
    """Sends one NVP operation for a merchant, with the adapter's own credentials.

    Each call may take several attempts (``retry.RetryPolicy``), each one admitted by the
    circuit breaker and holding one of ``max_concurrent_calls`` slots while it runs.

    >>> async with UpstreamClient(transport, settings, merchants) as client:  # doctest: +SKIP
    ...     answer = await client.call({"apiOperation": "CREATE_SESSION", "merchant": "M1"})
    """

    def __init__(
        self,
        transport: Transport,
        settings: UpstreamSettings,
        merchants: Mapping[str, MerchantCredentials],
        *,
        on_circuit_change: Callable[[bool], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._transport = transport
        self._metrics = metrics
        self._timeout = settings.timeout_seconds
        self._credentials = dict(merchants)
        # Each merchant's credentials as the tail of a body, encoded once (again on rotation).
        self._encoded_credentials = {
            merchant: _encoded_credentials(merchant, credentials)
            for merchant, credentials in self._credentials.items()
        }
        self._retry = RetryPolicy(
            settings.retry_max_attempts,
            settings.retry_initial_backoff_seconds,
            settings.retry_max_backoff_seconds,
            max_retry_after=settings.retry_after_max_seconds,
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent_calls)
        self._slot_count = settings.max_concurrent_calls
        self._queue_timeout = settings.queue_timeout_seconds
        self.breaker = CircuitBreaker(
            settings.breaker_failure_threshold,
            settings.breaker_cooldown_seconds,
            on_change=on_circuit_change,
        )
        self.redact = Redactor(c.password for c in merchants.values() if c.password is not None)
        """Scrubs every configured password from log lines; never from what a caller sees."""

    def replace_password(self, merchant: str, password: Secret) -> None:
        """Rotation: the next calls for ``merchant`` send this password."""
        old = self._credentials[merchant].password
        self._credentials[merchant] = replace(self._credentials[merchant], password=password)
        self._encoded_credentials[merchant] = _encoded_credentials(
            merchant, self._credentials[merchant]
        )
        # A log line of a call still in flight may hold the old password: scrub both.
        self.redact = Redactor([*self.redact.secrets, *filter(None, [old]), password])

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def call(
        self,
        fields: Mapping[str, str],
        time_left: float | None = None,
        *,
        repeatable: bool = False,
    ) -> Answer:
        """POST ``fields`` plus credentials; the gateway's answer when ``result`` is not ERROR.

        ``time_left`` is the caller's remaining time: it caps every attempt and every wait.
        ``repeatable`` says the operation may be sent again after the gateway turned it away.
        Raises ``MerchantNotAllowed``, or the last attempt's ``UpstreamError``.
        """
        merchant = fields[nvp.MERCHANT]
        credentials = self._credentials.get(merchant)
        if credentials is None:
            raise MerchantNotAllowed(merchant)
        if nvp.API_USERNAME in fields or nvp.API_PASSWORD in fields:  # ours replace theirs
            body = nvp.encode({**fields, **_credential_fields(merchant, credentials)})
        else:
            body = nvp.encode(fields) + self._encoded_credentials[merchant]
        operation = fields.get(nvp.API_OPERATION, "")
        tracing.annotate(merchant=merchant, operation=operation)
        loop = asyncio.get_running_loop()
        deadline = None if time_left is None else loop.time() + time_left
        attempt = 1
        while True:
            try:
                answer, status = await self._measured_attempt(operation, body, deadline, attempt)
                return Answer(answer, attempt, status)
            except UpstreamError as failure:
                failure.attempts = attempt
                delay = self._retry.delay(failure, attempt, repeatable)
                if delay is None or (deadline is not None and loop.time() + delay >= deadline):
                    raise
                log.debug(
                    "attempt %d failed (%s); retrying in %.3fs",
                    attempt,
                    scrub_free_text(str(failure)),
                    delay,
                )
            await asyncio.sleep(delay)
            attempt += 1

    async def _measured_attempt(
        self, operation: str, body: bytes, deadline: float | None, number: int
    ) -> tuple[dict[str, str], int]:
        """``_attempt``, counted in the metrics by its outcome: OK, or its ErrorInfo reason."""
        metrics = self._metrics
        if metrics is None:
            return await self._attempt(body, deadline, number)
        started = time.perf_counter()
        try:
            answer = await self._attempt(body, deadline, number)
        except UpstreamError as failure:
            metrics.attempt(operation, reason_of(failure, operation), time.perf_counter() - started)
            raise
        metrics.attempt(operation, "OK", time.perf_counter() - started)
        return answer

    async def _attempt(
        self, body: bytes, deadline: float | None, number: int
    ) -> tuple[dict[str, str], int]:
        """Attempt ``number``: a breaker admission, a slot, one HTTP exchange and its meaning;
        the answer's fields and HTTP status."""
        loop = asyncio.get_running_loop()
        if deadline is not None and deadline <= loop.time():
            raise UpstreamDeadlineBeforeSend("no time left")
        probe = self.breaker.admit()
        outcome = self.breaker.abandoned
        try:
            await self._take_slot(deadline)
            try:
                budget = self._timeout
                if deadline is not None:
                    budget = min(budget, deadline - loop.time())
                with tracing.attempt_trace(number) as trace:
                    reply = await self._post(body, budget, trace.headers)
                    trace.answered(reply.status)
            finally:
                self._slots.release()
            fields = interpret(reply)
        except _TRANSPORT_FAILURES:
            outcome = self.breaker.failed
            raise
        except (GatewayRejected, UpstreamProtocolError):
            outcome = self.breaker.succeeded  # the gateway is up, whatever it said
            raise
        else:
            outcome = self.breaker.succeeded
        finally:
            outcome(probe)
        return fields, reply.status

    async def _post(self, body: bytes, budget: float, headers: Mapping[str, str] | None) -> Reply:
        if self._metrics is None:
            return await self._transport.post(body, budget, headers=headers)
        with self._metrics.in_flight.track_inprogress():
            return await self._transport.post(body, budget, headers=headers)

    async def _take_slot(self, deadline: float | None) -> None:
        if not self._slots.locked():  # a free slot is taken at once: no timer to set and cancel
            await self._slots.acquire()
            return
        wait = self._queue_timeout
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - asyncio.get_running_loop().time()))
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError:
            raise AdapterOverloaded(self._slot_count, wait) from None


_TRANSPORT_FAILURES = (
    UpstreamUnavailable,
    UpstreamConnectTimeout,
    UpstreamDeadlineBeforeSend,
    UpstreamSentAndLost,
    UpstreamHttpStatus,
)
"""Failures that say the gateway is unreachable or failing: the breaker counts these.

A certificate the adapter refuses (``UpstreamCertificateInvalid``) is left out on purpose: it is a
configuration fault that says nothing about the gateway's health, so the attempt is abandoned: it
neither opens the circuit nor closes it.
"""


def _encoded_credentials(merchant: str, credentials: MerchantCredentials) -> bytes:
    """What ``_credential_fields`` adds to the end of an encoded body: ``&`` and its pairs."""
    fields = _credential_fields(merchant, credentials)
    return b"&" + nvp.encode(fields) if fields else b""


def _credential_fields(merchant: str, credentials: MerchantCredentials) -> Mapping[str, str]:
    if credentials.password is None:  # certificate authentication: the TLS client cert speaks
        return {}
    return {
        nvp.API_USERNAME: nvp.USERNAME_PREFIX + merchant,
        nvp.API_PASSWORD: credentials.password.reveal(),
    }
