"""``nvp_adapter_client.retry.advice``, row by row of its table (the module's docstring), for a
payment and for a session call.

The failures are built by hand here, each as the adapter's error table (README "Errors",
docs/payments.md) says it sends it; ``test_client_status`` makes the main ones with the real
adapter.
"""

from __future__ import annotations

from datetime import timedelta
from types import MappingProxyType

import grpc
import pytest

from nvp_adapter_client.retry import DEFAULT_DELAY, Retry, advice
from nvp_adapter_client.status import ErrorInfo, Failure

C = grpc.StatusCode
THREE = timedelta(seconds=3)
SAME, CHECK, NO = Retry.SAME_IDS, Retry.CHECK_FIRST, Retry.NO


def made(
    code: grpc.StatusCode,
    reason: str | None = None,
    delay: timedelta | None = None,
    domain: str = "nvp-adapter",
    **metadata: str,
) -> Failure:
    """A failure as the adapter (or, without a reason, grpc or a proxy) sends it."""
    info = None if reason is None else ErrorInfo(reason, domain, MappingProxyType(metadata))
    return Failure(code, "m", error_info=info, retry_delay=delay)


# (failure, (retry, delay, outcome known) for a payment, the same for a session call)
ROWS = {
    "TRANSACTION_ID_REUSED": (
        made(C.ALREADY_EXISTS, "TRANSACTION_ID_REUSED", existingAmount="1.00"),
        (NO, timedelta(0), True),
        (NO, timedelta(0), True),
    ),
    "outcome NOT_FOUND": (
        made(C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", THREE, outcome="NOT_FOUND"),
        (SAME, THREE, True),
        (SAME, THREE, True),
    ),
    "outcome UNKNOWN, reset after sending": (
        made(C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", outcome="UNKNOWN"),
        (SAME, DEFAULT_DELAY, False),
        (SAME, DEFAULT_DELAY, False),
    ),
    "outcome UNKNOWN, read timeout": (
        made(C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", outcome="UNKNOWN"),
        (SAME, DEFAULT_DELAY, False),
        (SAME, DEFAULT_DELAY, False),
    ),
    "grpc's own DEADLINE_EXCEEDED": (
        made(C.DEADLINE_EXCEEDED),
        (SAME, DEFAULT_DELAY, False),
        (SAME, DEFAULT_DELAY, False),
    ),
    "grpc's own UNAVAILABLE": (
        made(C.UNAVAILABLE),
        (SAME, DEFAULT_DELAY, False),
        (SAME, DEFAULT_DELAY, False),
    ),
    "grpc's own CANCELLED": (
        made(C.CANCELLED),
        (SAME, DEFAULT_DELAY, False),
        (SAME, DEFAULT_DELAY, False),
    ),
    "a proxy's UNAVAILABLE (another domain)": (
        made(C.UNAVAILABLE, "BACKEND_DOWN", domain="proxy.example"),
        (SAME, DEFAULT_DELAY, False),
        (SAME, DEFAULT_DELAY, False),
    ),
    "SERVER_BUSY": (
        made(C.UNAVAILABLE, "SERVER_BUSY", THREE),
        (SAME, THREE, True),
        (SAME, THREE, True),
    ),
    "never sent": (
        made(C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", THREE),
        (SAME, THREE, True),
        (SAME, THREE, True),
    ),
    "circuit OPEN": (
        made(C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", THREE, circuit="OPEN"),
        (SAME, THREE, True),
        (SAME, THREE, True),
    ),
    "ADAPTER_OVERLOADED": (
        made(C.UNAVAILABLE, "ADAPTER_OVERLOADED", THREE),
        (SAME, THREE, True),
        (SAME, THREE, True),
    ),
    "SERVER_OVERLOADED": (
        made(C.RESOURCE_EXHAUSTED, "SERVER_OVERLOADED"),
        (SAME, DEFAULT_DELAY, True),
        (SAME, DEFAULT_DELAY, True),
    ),
    "deadline before sending": (
        made(C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"),
        (SAME, DEFAULT_DELAY, True),
        (SAME, DEFAULT_DELAY, True),
    ),
    "SESSION_VERSION_MISMATCH": (
        made(C.ABORTED, "SESSION_VERSION_MISMATCH"),
        (CHECK, timedelta(0), True),
        (CHECK, timedelta(0), True),
    ),
    "INTERNAL": (
        made(C.INTERNAL, "INTERNAL"),
        (CHECK, timedelta(0), False),
        (NO, timedelta(0), False),
    ),
    "UPSTREAM_PROTOCOL_ERROR": (
        made(C.INTERNAL, "UPSTREAM_PROTOCOL_ERROR"),
        (CHECK, timedelta(0), False),
        (NO, timedelta(0), False),
    ),
    "grpc's own INTERNAL": (
        made(C.INTERNAL),
        (CHECK, timedelta(0), False),
        (NO, timedelta(0), False),
    ),
    "grpc's own RESOURCE_EXHAUSTED (a message too large)": (
        made(C.RESOURCE_EXHAUSTED),
        (CHECK, timedelta(0), False),
        (NO, timedelta(0), False),
    ),
    "INVALID_REQUEST": (
        made(C.INVALID_ARGUMENT, "INVALID_REQUEST"),
        (NO, timedelta(0), True),
        (NO, timedelta(0), True),
    ),
    "MERCHANT_NOT_ALLOWED": (
        made(C.PERMISSION_DENIED, "MERCHANT_NOT_ALLOWED"),
        (NO, timedelta(0), True),
        (NO, timedelta(0), True),
    ),
    "CALLER_UNAUTHENTICATED": (
        made(C.UNAUTHENTICATED, "CALLER_UNAUTHENTICATED"),
        (NO, timedelta(0), True),
        (NO, timedelta(0), True),
    ),
    "ORDER_NOT_FOUND": (
        made(C.NOT_FOUND, "ORDER_NOT_FOUND"),
        (NO, timedelta(0), True),
        (NO, timedelta(0), True),
    ),
    "SESSION_INCOMPLETE": (
        made(C.FAILED_PRECONDITION, "SESSION_INCOMPLETE"),
        (NO, timedelta(0), True),
        (NO, timedelta(0), True),
    ),
    "AMOUNT_EXCEEDS_BALANCE": (
        made(C.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_BALANCE"),
        (NO, timedelta(0), True),
        (NO, timedelta(0), True),
    ),
    "SERVER_FAILED": (
        made(C.INTERNAL, "SERVER_FAILED"),
        (NO, timedelta(0), True),
        (NO, timedelta(0), True),
    ),
    "an unknown gateway cause": (
        made(C.UNKNOWN, "SOMETHING_NEW"),
        (NO, timedelta(0), True),
        (NO, timedelta(0), True),
    ),
    "a certificate the adapter refused": (
        made(C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", tls="CERTIFICATE_INVALID"),
        (NO, timedelta(0), True),
        (NO, timedelta(0), True),
    ),
}


@pytest.mark.parametrize(("failed", "payment", "session"), ROWS.values(), ids=ROWS)
def test_advice_follows_the_table(
    failed: Failure,
    payment: tuple[Retry, timedelta, bool],
    session: tuple[Retry, timedelta, bool],
) -> None:
    """Each row: what to do, after how long, and whether the outcome is known, for a
    money-moving call and for a session call; every piece of advice says why."""
    for moves_money, expected in ((True, payment), (False, session)):
        told = advice(failed, moves_money=moves_money)
        assert (told.retry, told.delay, told.outcome_known) == expected, moves_money
        assert told.may_retry is (told.retry is Retry.SAME_IDS)
        assert told.why


def test_unknown_says_never_new_ids_for_a_payment() -> None:
    """The one thing a payment's caller must not do after an unknown outcome is named."""
    failed = made(C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", outcome="UNKNOWN")
    assert "never new ones" in advice(failed, moves_money=True).why
    assert "harmless" in advice(failed, moves_money=False).why
