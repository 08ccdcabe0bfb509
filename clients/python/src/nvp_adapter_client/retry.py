"""May a failed call be tried again, when, and with which ids: ``advice(failure, moves_money=...)``.

A payment's ids (``order.id``, ``transaction.id``) are its idempotency key: the gateway holds at
most one transaction per pair and never moves money again for a pair it holds, and the adapter
answers a repeat with the transaction the pair already names. So a retry always sends the request
unchanged, the same ids; a new transaction id is a new payment, and after an unknown outcome it may
be a second charge. The rows, first match wins (``moves_money``: ``Authorize``, ``Pay``,
``Capture``, ``Refund``, ``Void``)::

    the failure                                          retry        after          outcome known
    ---------------------------------------------------  -----------  -------------  -------------
    ALREADY_EXISTS TRANSACTION_ID_REUSED                 NO           -              yes (a bug:
      (the ids name another transaction)                                             two payments,
                                                                                     one id)
    outcome=NOT_FOUND (UNAVAILABLE UPSTREAM_UNAVAILABLE  SAME_IDS     RetryInfo      yes: nothing
      + RetryInfo): the answer was lost, the gateway                                 was done
      holds nothing
    outcome=UNKNOWN (DEADLINE_EXCEEDED UPSTREAM_TIMEOUT  SAME_IDS     RetryInfo or   no
      or UNAVAILABLE UPSTREAM_UNAVAILABLE): the answer                DEFAULT_DELAY
      was lost and the gateway could not be asked.
      A payment: later, never with new ids (the retry
      gets the original outcome); a session call: a
      retry is harmless
    UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED that     SAME_IDS     DEFAULT_DELAY  no
      the adapter did not make (no ErrorInfo of
      domain nvp-adapter: grpc's own deadline, a
      connection to the adapter that failed, a stop)
    UNAVAILABLE or RESOURCE_EXHAUSTED with RetryInfo     SAME_IDS     RetryInfo      yes: nothing
      (SERVER_BUSY, UPSTREAM_UNAVAILABLE never sent or                               was done
      turned away, ADAPTER_OVERLOADED, circuit OPEN)
    RESOURCE_EXHAUSTED SERVER_OVERLOADED, UNAVAILABLE    SAME_IDS     DEFAULT_DELAY  yes
      ADAPTER_OVERLOADED (no RetryInfo)
    DEADLINE_EXCEEDED UPSTREAM_TIMEOUT, no outcome: the  SAME_IDS     DEFAULT_DELAY  yes
      deadline ran out before the request was sent                                   (give the
                                                                                     retry longer)
    ABORTED (SESSION_VERSION_MISMATCH)                   CHECK_FIRST  -              yes: retrieve,
                                                                                     check, decide
    a payment's failure the adapter did not explain:     CHECK_FIRST  -              no: retrieve
      reason INTERNAL or UPSTREAM_PROTOCOL_ERROR, or                                 the
      no ErrorInfo of its own (INTERNAL, UNKNOWN, a                                  transaction
      RESOURCE_EXHAUSTED answer too large for the
      client, ...)
    anything else: INVALID_ARGUMENT, UNAUTHENTICATED,    NO           -              yes, but for
      PERMISSION_DENIED, NOT_FOUND, FAILED_PRECONDITION,                             INTERNAL and
      ALREADY_EXISTS, INTERNAL, UNKNOWN, UNIMPLEMENTED,                              UPSTREAM_PRO-
      UNAVAILABLE without RetryInfo or outcome                                       TOCOL_ERROR
      (tls=CERTIFICATE_INVALID), a bare                                              and no
      RESOURCE_EXHAUSTED                                                             ErrorInfo

Use::

    except grpc.aio.AioRpcError as error:
        told = advice(failure(error), moves_money=True)
        if told.retry is Retry.SAME_IDS:
            await asyncio.sleep(told.delay.total_seconds())  # then send the same request again
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

import grpc

from nvp_adapter_client.status import Failure

__all__ = ["DEFAULT_DELAY", "Retry", "RetryAdvice", "advice"]

DEFAULT_DELAY = timedelta(seconds=1)
"""The wait advised when a retry is worth it and the status names no delay (the adapter's own
default RetryInfo). Add backoff and jitter of your own when retrying more than once."""

_UNEXPLAINED = frozenset({None, "INTERNAL", "UPSTREAM_PROTOCOL_ERROR"})
_OUTSIDE_THE_ADAPTER = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


class Retry(enum.Enum):
    """What to do about a failed call."""

    SAME_IDS = "same_ids"
    """Send the same request again after ``RetryAdvice.delay``: the same ids, never new ones."""
    CHECK_FIRST = "check_first"
    """Read what the gateway holds first (``RetrieveSession``, ``RetrieveTransaction``), then
    decide."""
    NO = "no"
    """Do not retry: the request, the configuration or the caller's code needs a fix first."""


@dataclass(frozen=True)
class RetryAdvice:
    """The answer to "may I retry this, when, and with the same ids?"."""

    retry: Retry
    delay: timedelta
    """How long to wait before the retry (``Retry.SAME_IDS``); zero otherwise."""
    outcome_known: bool
    """``False``: the work may have been done (a payment may have been made): record it as
    unknown, never as failed, until a retry with the same ids or a retrieve tells."""
    why: str
    """One sentence saying why, for a log line."""

    @property
    def may_retry(self) -> bool:
        """Whether a retry of the same request is advised (``Retry.SAME_IDS``)."""
        return self.retry is Retry.SAME_IDS


def advice(failure: Failure, *, moves_money: bool) -> RetryAdvice:  # noqa: PLR0911 - a row a return
    """What to do about ``failure``, a call's decoded status (``status.failure``): the module's
    table, first row that matches. ``moves_money``: the call was ``Authorize``, ``Pay``,
    ``Capture``, ``Refund`` or ``Void``."""
    code, reason, outcome = failure.code, failure.reason, failure.outcome
    delay = failure.retry_delay
    if reason == "TRANSACTION_ID_REUSED":
        return _no("the ids name another transaction: two payments were given one id (a bug)")
    if outcome == "NOT_FOUND":
        return _same_ids(delay, known=True, why="the answer was lost and nothing was done")
    if outcome == "UNKNOWN":
        why = (
            "the answer was lost and the gateway could not be asked: retry later with the same "
            "ids, never new ones, to get the original outcome"
            if moves_money
            else "the answer was lost; a retry of a session call is harmless"
        )
        return _same_ids(delay, known=False, why=why)
    if reason is None and code in _OUTSIDE_THE_ADAPTER:
        return _same_ids(
            None, known=False, why=f"{code.name} from grpc or the network: the outcome is unknown"
        )
    if delay is not None and code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        return _same_ids(delay, known=True, why=f"{reason}: nothing was done; retry after it")
    if reason in ("SERVER_OVERLOADED", "ADAPTER_OVERLOADED"):
        return _same_ids(None, known=True, why=f"{reason}: the adapter is busy; retry later")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and reason == "UPSTREAM_TIMEOUT":
        return _same_ids(
            None, known=True, why="the deadline ran out before the request was sent; allow longer"
        )
    if code is grpc.StatusCode.ABORTED:
        return RetryAdvice(
            Retry.CHECK_FIRST,
            timedelta(0),
            outcome_known=True,
            why=f"{reason}: what the request relied on changed; retrieve it, check, then decide",
        )
    if moves_money and reason in _UNEXPLAINED:
        return RetryAdvice(
            Retry.CHECK_FIRST,
            timedelta(0),
            outcome_known=False,
            why=f"{code.name} {reason or ''}".rstrip()
            + ": the payment may have been made; RetrieveTransaction its ids, then decide",
        )
    return _no(
        f"{code.name} {reason or ''}".rstrip() + ": not worth retrying as it is",
        known=reason not in _UNEXPLAINED,
    )


def _same_ids(delay: timedelta | None, *, known: bool, why: str) -> RetryAdvice:
    return RetryAdvice(Retry.SAME_IDS, DEFAULT_DELAY if delay is None else delay, known, why)


def _no(why: str, *, known: bool = True) -> RetryAdvice:
    return RetryAdvice(Retry.NO, timedelta(0), known, why)
