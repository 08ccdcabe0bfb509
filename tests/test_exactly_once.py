"""CONTRACT §9, "money moves at most once": never re-sent, reconciled, replayed, and told so.

Every test runs the real adapter in-process against ``PaymentGateway`` (``tests/payment_gateway``),
an MPGS-like gateway on loopback that keeps one transaction per (``order.id``,
``transaction.id``) pair and misbehaves as each test scripts. Each one checks what the caller
sees (the response or the rich status, the ``nvp-adapter-outcome`` trailer, the access line's
``outcome``, ``nvp_adapter_reconciliations_total``) and what the gateway received: at most one
money-moving request per pair ever reached a gateway that carried it out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from adapter._proto.mpgs.gateway.v1 import gateway_error_pb2 as gw
from adapter._proto.mpgs.gateway.v1 import payment_service_pb2 as pay
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.config import MetricsSettings
from tests.conftest import MERCHANT, PASSWORD, Failure, make_settings
from tests.payment_gateway import (
    BUSY,
    LOCK_FAILURE,
    Fault,
    PaymentAdapter,
    PaymentGateway,
    authorize_request,
    capture_request,
    pay_request,
    reconciliations,
    refund_request,
    refused,
    run_gateway,
    start_payment_adapter,
    void_request,
    with_outcome,
)

PAIR = ("order-1", "pay-1")
DEADLINE = 2.0
StartPayments = Callable[..., Awaitable[PaymentAdapter]]


@pytest.fixture
async def gateway() -> AsyncIterator[PaymentGateway]:
    async with run_gateway() as gateway:
        yield gateway


@pytest.fixture
async def start(gateway: PaymentGateway) -> AsyncIterator[StartPayments]:
    """Start an adapter against ``gateway`` with its metrics listener; ``upstream`` options as
    keywords. Closed before the gateway is."""
    async with AsyncExitStack() as stack:

        async def run(**upstream_options: Any) -> PaymentAdapter:
            settings = dataclasses.replace(
                make_settings(gateway.url, **upstream_options),
                metrics=MetricsSettings(listen="127.0.0.1:0"),
            )
            return await start_payment_adapter(stack, settings)

        yield run


async def access_line(stream: io.StringIO, count: int = 1) -> dict[str, Any]:
    """The ``count``-th access line, once written (a failed call's status can reach the caller
    before its line is written)."""
    async with asyncio.timeout(5):
        while len(stream.getvalue().splitlines()) < count:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.001)
    line = json.loads(stream.getvalue().splitlines()[count - 1])
    assert isinstance(line, dict)
    return line


def retry_info(failure: Failure) -> error_details_pb2.RetryInfo | None:
    info = failure.details.get(error_details_pb2.RetryInfo)
    assert info is None or isinstance(info, error_details_pb2.RetryInfo)
    return info


def assert_unknown(failure: Failure, code: grpc.StatusCode, reason: str) -> None:
    """§9 rule 2, still unknown: §4's status, ``outcome=UNKNOWN``, and no advice to retry."""
    assert (failure.code, failure.info.reason) == (code, reason)
    assert failure.info.metadata["outcome"] == "UNKNOWN"
    assert retry_info(failure) is None


def assert_not_found(failure: Failure) -> None:
    """§9 rule 2, the gateway holds nothing: UNAVAILABLE, ``outcome=NOT_FOUND``, RetryInfo."""
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.info.reason == "UPSTREAM_UNAVAILABLE"
    assert failure.info.metadata["outcome"] == "NOT_FOUND"
    assert retry_info(failure) is not None


# --- the fake gateway itself --------------------------------------------------------------------


def raw_pay(port: int, transaction_id: str) -> tuple[bytes, bytes]:
    """POST a PAY over a plain socket: everything the gateway wrote back, until it closed."""
    body = (
        f"apiOperation=PAY&apiUsername=merchant.{MERCHANT}&apiPassword={PASSWORD}"
        f"&merchant={MERCHANT}&order.id=raw&transaction.id={transaction_id}"
        "&order.amount=1.00&order.currency=USD"
    ).encode()
    head = (
        "POST /api/nvp/version/100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode() + body)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    return received, body


@pytest.mark.parametrize("commit", [False, True], ids=["before commit", "after commit"])
async def test_the_gateway_really_closes_without_an_answer(
    gateway: PaymentGateway, commit: bool
) -> None:
    """The fake gateway's "answer lost" is a closed connection with not one byte of an answer,
    and it holds the transaction exactly when told to commit first."""
    gateway.script("PAY", Fault.lose(commit=commit))
    received, _ = await asyncio.to_thread(raw_pay, gateway.port, "t-1")
    assert received == b""
    assert (gateway.held(("raw", "t-1")) is not None) == commit


async def test_the_gateway_holds_one_transaction_per_pair(gateway: PaymentGateway) -> None:
    """A repeated pair is refused with INVALID_REQUEST on transaction.id, and nothing is added."""
    first, _ = await asyncio.to_thread(raw_pay, gateway.port, "t-2")
    second, _ = await asyncio.to_thread(raw_pay, gateway.port, "t-2")
    assert b"result=SUCCESS" in first
    assert b"error.field=transaction.id" in second
    assert gateway.count_held() == 1


# --- rule 1: never re-sent ----------------------------------------------------------------------


async def test_a_refused_connection_is_tried_again(start: StartPayments) -> None:
    """Connection refused: the request never left, so it may be tried again (3 attempts), and the
    caller may retry (RetryInfo)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = await start(url=f"http://127.0.0.1:{port}")
    failure = await refused(adapter.stub, pay_request())
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
    )
    assert failure.info.metadata["attempts"] == "3"
    assert retry_info(failure) is not None


async def test_a_pooled_connection_closed_before_the_write_is_not_a_lost_answer(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """The gateway closes an idle keep-alive connection; the next Pay goes out on a new one and
    succeeds: a request not written is no outcome unknown, and it reaches the gateway once."""
    adapter = await start()
    await with_outcome(adapter.stub, pay_request("order-0", "pay-0"))
    await gateway.drop_idle()
    response, outcome = await with_outcome(adapter.stub, pay_request())
    assert response.transaction.id == "pay-1"
    assert outcome is None
    assert gateway.money_moving(PAIR) == 1
    assert gateway.received("RETRIEVE_TRANSACTION") == 0


@pytest.mark.parametrize("status", [429, 503])
async def test_a_turned_away_request_is_not_sent_again(
    gateway: PaymentGateway, start: StartPayments, status: int
) -> None:
    """A money-moving request the gateway turned away (429, 503) is not retried within the call:
    UNAVAILABLE with RetryInfo, and one PAY reached the gateway (a 503 is then looked up: see
    rule 2)."""
    gateway.script("PAY", Fault.http(status, commit=False), times=None)
    adapter = await start()
    failure = await refused(adapter.stub, pay_request())
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert retry_info(failure) is not None
    assert gateway.received("PAY") == 1
    assert gateway.count_held() == 0


# --- rule 2: reconciled -------------------------------------------------------------------------

LOST_AFTER_COMMIT = {
    "closed": Fault.lose(commit=True),
    "502": Fault.http(502, commit=True),
    "503": Fault.http(503, commit=True),
    "504": Fault.http(504, commit=True),
    "500": Fault.http(500, commit=True),
    "200 not NVP": Fault.http(200, commit=True),
}


@pytest.mark.parametrize("fault", LOST_AFTER_COMMIT.values(), ids=LOST_AFTER_COMMIT)
async def test_a_lost_answer_is_found_again(
    gateway: PaymentGateway, start: StartPayments, access_lines: io.StringIO, fault: Fault
) -> None:
    """The gateway paid and the answer was lost (closed, or a bare 5xx): the adapter retrieves
    the pair and answers OK with the payment, told as ``reconciled`` in the trailer, the access
    line and the metric (FOUND); the PAY went out once."""
    gateway.script("PAY", fault)
    adapter = await start()
    response, outcome = await with_outcome(adapter.stub, pay_request(correlation_id="c-1"))
    assert outcome == "reconciled"
    assert response.result == pb.RESULT_SUCCESS
    assert response.response.gateway_code == pay.GATEWAY_CODE_APPROVED
    assert response.transaction.type == pay.TRANSACTION_TYPE_PAYMENT
    assert (response.order.id, response.transaction.id) == PAIR
    assert response.transaction.amount == "10.00"
    held = gateway.held(PAIR)
    assert held is not None
    assert response.transaction.receipt == held.receipt
    assert gateway.received("PAY") == 1
    assert gateway.received("RETRIEVE_TRANSACTION", PAIR) >= 1
    assert await reconciliations(adapter.server) == {("PAY", "FOUND"): 1}
    line = await access_line(access_lines)
    assert (line["code"], line["outcome"]) == ("OK", "reconciled")


LOST_BEFORE_COMMIT = {
    "closed": Fault.lose(commit=False),
    "502": Fault.http(502, commit=False),
    "503": Fault.http(503, commit=False),
    "504": Fault.http(504, commit=False),
    "500": Fault.http(500, commit=False),
    "200 not NVP": Fault.http(200, commit=False),
}


@pytest.mark.parametrize("status", [403, 429])
async def test_a_4xx_without_an_nvp_body_is_not_looked_up(
    gateway: PaymentGateway, start: StartPayments, status: int
) -> None:
    """A 4xx without an NVP body (a firewall's page, a rate limit) says the request was not
    worked on: no lookup, and the one PAY is all the gateway received."""
    gateway.script("PAY", Fault.http(status, commit=False), times=None)
    adapter = await start()
    await refused(adapter.stub, pay_request())
    assert gateway.received("PAY") == 1
    assert gateway.received("RETRIEVE_TRANSACTION") == 0
    assert await reconciliations(adapter.server) == {}


@pytest.mark.parametrize("fault", LOST_BEFORE_COMMIT.values(), ids=LOST_BEFORE_COMMIT)
async def test_a_payment_the_gateway_never_made_may_be_retried_with_the_same_pair(
    gateway: PaymentGateway, start: StartPayments, access_lines: io.StringIO, fault: Fault
) -> None:
    """The answer was lost and the gateway holds nothing: UNAVAILABLE with ``outcome=NOT_FOUND``
    and RetryInfo (metric NOT_FOUND, no outcome on the access line); the caller's retry with the
    same pair pays, and the gateway holds one transaction."""
    gateway.script("PAY", fault)
    adapter = await start()
    failure = await refused(adapter.stub, pay_request())
    assert_not_found(failure)
    assert gateway.received("PAY") == 1
    assert gateway.received("RETRIEVE_TRANSACTION", PAIR) >= 1
    assert await reconciliations(adapter.server) == {("PAY", "NOT_FOUND"): 1}
    assert "outcome" not in await access_line(access_lines)

    response, outcome = await with_outcome(adapter.stub, pay_request())
    assert outcome is None
    assert response.transaction.id == "pay-1"
    assert gateway.count_held() == 1
    assert gateway.received("PAY") == 2


async def test_the_retrieve_is_retried_as_a_read(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """The retrieve is REPEATABLE: refused twice with SERVER_BUSY, it is tried again and finds the
    payment."""
    gateway.script("PAY", Fault.lose(commit=True))
    gateway.script("RETRIEVE_TRANSACTION", BUSY, times=2)
    adapter = await start()
    response, outcome = await with_outcome(adapter.stub, pay_request())
    assert (outcome, response.transaction.id) == ("reconciled", "pay-1")
    assert gateway.received("RETRIEVE_TRANSACTION") == 3
    assert gateway.received("PAY") == 1


async def test_a_retrieve_that_keeps_failing_leaves_the_outcome_unknown(
    gateway: PaymentGateway, start: StartPayments, access_lines: io.StringIO
) -> None:
    """The answer was lost after the write and every retrieve is refused: §4's status for a
    connection closed after sending (UNAVAILABLE, ``outcome=UNKNOWN``, no RetryInfo), metric
    UNKNOWN, and the PAY was not sent again."""
    gateway.script("PAY", Fault.lose(commit=True))
    gateway.script("RETRIEVE_TRANSACTION", BUSY, times=None)
    adapter = await start()
    failure = await refused(adapter.stub, pay_request(), DEADLINE)
    assert_unknown(failure, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert gateway.received("PAY") == 1
    assert gateway.received("RETRIEVE_TRANSACTION") >= 1
    assert await reconciliations(adapter.server) == {("PAY", "UNKNOWN"): 1}
    assert "outcome" not in await access_line(access_lines)


async def test_reconciliation_within_the_callers_deadline(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """The gateway pays and then says nothing: with a 2 s deadline, the PAY attempt gives up
    early enough (the reserve, at most half the time left) to retrieve the pair, and the call
    ends OK ``reconciled`` before the deadline."""
    gateway.script("PAY", Fault.hang(commit=True))
    adapter = await start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    response, outcome = await with_outcome(adapter.stub, pay_request(), DEADLINE)
    assert loop.time() - started < DEADLINE
    assert (outcome, response.transaction.id) == ("reconciled", "pay-1")
    assert gateway.received("PAY") == 1


async def test_a_gateway_that_hangs_throughout_ends_the_call_before_the_deadline(
    gateway: PaymentGateway, start: StartPayments, access_lines: io.StringIO
) -> None:
    """PAY and every retrieve hang: the adapter answers DEADLINE_EXCEEDED ``UPSTREAM_TIMEOUT``,
    ``outcome=UNKNOWN``, itself and before the caller's deadline (a rich status, not grpc's
    bare one); metric UNKNOWN; one PAY."""
    gateway.script("PAY", Fault.hang(commit=True))
    gateway.script("RETRIEVE_TRANSACTION", Fault.hang(commit=True), times=None)
    adapter = await start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    failure = await refused(adapter.stub, pay_request(), DEADLINE)
    assert loop.time() - started < DEADLINE
    assert_unknown(failure, grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT")
    assert gateway.received("PAY") == 1
    assert gateway.received("RETRIEVE_TRANSACTION") >= 1
    assert await reconciliations(adapter.server) == {("PAY", "UNKNOWN"): 1}


async def test_a_hang_before_commit_is_found_to_be_nothing(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """PAY hangs and the gateway never paid: within the deadline, ``outcome=NOT_FOUND``."""
    gateway.script("PAY", Fault.hang(commit=False))
    adapter = await start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    failure = await refused(adapter.stub, pay_request(), DEADLINE)
    assert loop.time() - started < DEADLINE
    assert_not_found(failure)
    assert gateway.received("PAY") == 1


@pytest.mark.parametrize(
    ("reserve", "earliest", "latest"),
    [(5.0, 0.8, 1.2), (0.4, 1.4, 1.8)],
    ids=["default: half the time left", "configured: 0.4 s"],
)
async def test_the_reserve_for_reconciliation(
    gateway: PaymentGateway,
    start: StartPayments,
    reserve: float,
    earliest: float,
    latest: float,
) -> None:
    """``upstream.reconcile_reserve_seconds`` is kept back from the PAY attempt, at most half of
    the time left: with a 2 s deadline the retrieve starts after about 1 s by default (5 s,
    halved), after about 1.6 s with 0.4 s."""
    gateway.script("PAY", Fault.hang(commit=True))
    adapter = await start(reconcile_reserve_seconds=reserve)
    response, outcome = await with_outcome(adapter.stub, pay_request(), DEADLINE)
    assert outcome == "reconciled"
    [paid] = [r for r in gateway.requests if r.operation == "PAY"]
    retrieved = next(r for r in gateway.requests if r.operation == "RETRIEVE_TRANSACTION")
    assert earliest <= retrieved.at - paid.at <= latest
    assert response.transaction.id == "pay-1"


async def test_without_a_deadline_reconciliation_has_its_own_timeout(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """No caller deadline: the PAY attempt ends at ``upstream.timeout_seconds`` and the retrieve
    still gets a timeout of its own, and finds the payment."""
    gateway.script("PAY", Fault.hang(commit=True))
    adapter = await start(timeout_seconds=0.5)
    async with asyncio.timeout(10):
        response, outcome = await with_outcome(adapter.stub, pay_request(), None)
    assert (outcome, response.transaction.id) == ("reconciled", "pay-1")
    assert gateway.received("PAY") == 1


async def test_amounts_compare_as_decimals_when_reconciling(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """The gateway writes ``10`` for the ``10.00`` asked: the same amount, found, and the
    response carries the gateway's own spelling."""
    gateway.write_amount = lambda amount: amount.removesuffix(".00")
    gateway.script("PAY", Fault.lose(commit=True))
    adapter = await start()
    response, outcome = await with_outcome(adapter.stub, pay_request(amount="10.00"))
    assert outcome == "reconciled"
    assert response.transaction.amount == "10"


async def test_a_lost_answer_for_a_different_transaction_under_the_pair(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """The answer was lost, and the pair names a transaction of another amount (the caller
    reused an id): ALREADY_EXISTS ``TRANSACTION_ID_REUSED``, metric REUSED."""
    gateway.prepare(
        "PAY",
        order_id="order-1",
        transaction_id="pay-1",
        order_amount="99.00",
        order_currency="USD",
    )
    gateway.script("PAY", Fault.lose(commit=False))
    adapter = await start()
    failure = await refused(adapter.stub, pay_request(amount="10.00"))
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "TRANSACTION_ID_REUSED",
    )
    assert await reconciliations(adapter.server) == {("PAY", "REUSED"): 1}


# --- rule 3: replayed ---------------------------------------------------------------------------


async def test_a_retry_after_a_lost_answer_gets_the_original_outcome(
    gateway: PaymentGateway, start: StartPayments, access_lines: io.StringIO
) -> None:
    """The first call's answer is lost for good (outcome unknown); the caller retries with the
    same pair: the gateway refuses the repeated pair, and the adapter answers OK with the
    original payment, ``replayed`` (trailer, access line, metric REPLAYED). Paid once."""
    gateway.script("PAY", Fault.lose(commit=True))
    gateway.script("RETRIEVE_TRANSACTION", BUSY, times=None)
    adapter = await start()
    failure = await refused(adapter.stub, pay_request(), DEADLINE)
    assert failure.info.metadata["outcome"] == "UNKNOWN"
    gateway.unscript("RETRIEVE_TRANSACTION")

    response, outcome = await with_outcome(adapter.stub, pay_request())
    assert outcome == "replayed"
    held = gateway.held(PAIR)
    assert held is not None
    assert (response.transaction.id, response.transaction.receipt) == ("pay-1", held.receipt)
    assert response.result == pb.RESULT_SUCCESS
    assert gateway.count_held() == 1
    assert gateway.received("PAY") == 2
    assert await reconciliations(adapter.server) == {("PAY", "UNKNOWN"): 1, ("PAY", "REPLAYED"): 1}
    line = await access_line(access_lines, 2)
    assert (line["code"], line["outcome"]) == ("OK", "replayed")


async def test_a_plain_success_says_nothing_of_an_outcome(
    gateway: PaymentGateway, start: StartPayments, access_lines: io.StringIO
) -> None:
    """An answer that came straight from the gateway has no trailer, no access-line outcome and
    counts no reconciliation."""
    adapter = await start()
    response, outcome = await with_outcome(adapter.stub, pay_request())
    assert (outcome, response.transaction.id) == (None, "pay-1")
    assert "outcome" not in await access_line(access_lines)
    assert await reconciliations(adapter.server) == {}
    assert gateway.received("RETRIEVE_TRANSACTION") == 0


REUSES = {
    "another amount": (pay_request(amount="12.00"), "PAY"),
    "another currency": (pay_request(currency="EUR"), "PAY"),
    "another type": (authorize_request(transaction_id="pay-1"), "AUTHORIZE"),
}


@pytest.mark.parametrize(("request_", "operation"), REUSES.values(), ids=REUSES)
async def test_a_pair_reused_for_another_transaction(
    gateway: PaymentGateway,
    start: StartPayments,
    access_lines: io.StringIO,
    request_: Any,
    operation: str,
) -> None:
    """The pair already names a payment of 10.00 USD; a request with another amount, currency
    or type is ALREADY_EXISTS ``TRANSACTION_ID_REUSED`` with what exists in the metadata (metric
    REUSED), and nothing is added."""
    adapter = await start()
    await with_outcome(adapter.stub, pay_request())
    failure = await refused(adapter.stub, request_)
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "TRANSACTION_ID_REUSED",
    )
    metadata = failure.info.metadata
    existing = (metadata["existingType"], metadata["existingAmount"], metadata["existingCurrency"])
    assert existing == ("PAYMENT", "10.00", "USD")
    assert await reconciliations(adapter.server) == {(operation, "REUSED"): 1}
    assert gateway.count_held() == 1
    assert "outcome" not in await access_line(access_lines, 2)


async def test_a_retry_whose_amount_the_gateway_writes_otherwise_is_replayed(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """``1`` and ``1.00`` are one amount: the retry is replayed, not refused as a reuse."""
    gateway.write_amount = lambda amount: amount.removesuffix(".00")
    adapter = await start()
    await with_outcome(adapter.stub, pay_request(amount="1.00"))
    response, outcome = await with_outcome(adapter.stub, pay_request(amount="1.00"))
    assert outcome == "replayed"
    assert response.transaction.amount == "1"


async def test_the_explanation_decides_nothing(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """Two refusals of a repeated pair that differ only in their explanation are both replayed;
    a refusal whose explanation says "already exists" but names another field is not replayed:
    it is INVALID_ARGUMENT, and no retrieve is made for it."""
    adapter = await start()
    await with_outcome(adapter.stub, pay_request())
    gateway.duplicate_explanation = "Value 'pay-1' is invalid. Transaction already exists"
    assert (await with_outcome(adapter.stub, pay_request()))[1] == "replayed"
    gateway.duplicate_explanation = "Transaktion existiert schon"
    assert (await with_outcome(adapter.stub, pay_request()))[1] == "replayed"
    retrieves = gateway.received("RETRIEVE_TRANSACTION")

    gateway.script("PAY", Fault.refuse("order.reference", "Transaction already exists"))
    failure = await refused(adapter.stub, pay_request("order-2", "pay-2"))
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    assert gateway.received("RETRIEVE_TRANSACTION") == retrieves


async def test_a_refusal_of_a_pair_the_gateway_does_not_hold_stands(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """The gateway refuses ``transaction.id`` and the retrieve finds nothing under the pair: the
    refusal stands, INVALID_ARGUMENT ``INVALID_REQUEST`` with the GatewayError and a
    FieldViolation on ``transaction.id``."""
    gateway.script("PAY", Fault.refuse("transaction.id", "Value 'pay-1' is invalid."))
    adapter = await start()
    failure = await refused(adapter.stub, pay_request())
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    error = failure.details[gw.GatewayError]
    assert isinstance(error, gw.GatewayError)
    assert error.field == "transaction.id"
    bad_request = failure.details[error_details_pb2.BadRequest]
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["transaction.id"]
    assert gateway.received("RETRIEVE_TRANSACTION", PAIR) == 1
    assert gateway.count_held() == 0
    assert await reconciliations(adapter.server) == {("PAY", "NOT_FOUND"): 1}


async def test_a_lock_failure_is_replayed_when_the_pair_exists(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """LOCK_FAILURE while the pair is held (another request of it is done): OK with the held
    transaction, ``replayed``."""
    adapter = await start()
    await with_outcome(adapter.stub, pay_request())
    gateway.script("PAY", LOCK_FAILURE)
    response, outcome = await with_outcome(adapter.stub, pay_request())
    assert outcome == "replayed"
    assert response.response.gateway_code == pay.GATEWAY_CODE_APPROVED
    assert await reconciliations(adapter.server) == {("PAY", "REPLAYED"): 1}


async def test_a_lock_failure_with_nothing_held_is_the_answer(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """LOCK_FAILURE and the pair holds nothing: the LOCK_FAILURE answer itself, OK, after one
    retrieve."""
    gateway.script("PAY", LOCK_FAILURE)
    adapter = await start()
    response, outcome = await with_outcome(adapter.stub, pay_request())
    assert outcome is None
    assert response.response.gateway_code == pay.GATEWAY_CODE_LOCK_FAILURE
    assert response.result == pb.RESULT_FAILURE
    assert gateway.received("RETRIEVE_TRANSACTION", PAIR) == 1
    assert await reconciliations(adapter.server) == {("PAY", "NOT_FOUND"): 1}


async def test_a_replay_whose_retrieve_fails_is_unknown(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """The gateway refuses the repeated pair and every retrieve is refused: UNAVAILABLE
    ``UPSTREAM_UNAVAILABLE``, ``outcome=UNKNOWN``; nothing more was paid."""
    adapter = await start()
    await with_outcome(adapter.stub, pay_request())
    gateway.script("RETRIEVE_TRANSACTION", BUSY, times=None)
    failure = await refused(adapter.stub, pay_request(), DEADLINE)
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
    )
    assert failure.info.metadata["outcome"] == "UNKNOWN"
    assert gateway.count_held() == 1


async def test_twenty_concurrent_identical_payments(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """20 identical Pay calls at once, one pair: one transaction at the gateway; all 20 OK with
    that transaction, one straight from the gateway and 19 ``replayed``."""
    adapter = await start()
    results = await asyncio.gather(*(with_outcome(adapter.stub, pay_request()) for _ in range(20)))
    held = gateway.held(PAIR)
    assert held is not None
    assert gateway.count_held() == 1
    assert {r.transaction.receipt for r, _ in results} == {held.receipt}
    assert sorted(str(outcome) for _, outcome in results) == ["None"] + ["replayed"] * 19
    assert await reconciliations(adapter.server) == {("PAY", "REPLAYED"): 19}


# --- the other money-moving operations ----------------------------------------------------------


async def test_a_lost_authorization_is_found_again(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """Authorize whose answer is lost after the gateway authorized: OK ``reconciled`` with the
    AUTHORIZATION; one AUTHORIZE sent."""
    gateway.script("AUTHORIZE", Fault.lose(commit=True))
    adapter = await start()
    response, outcome = await with_outcome(adapter.stub, authorize_request())
    assert outcome == "reconciled"
    assert response.transaction.type == pay.TRANSACTION_TYPE_AUTHORIZATION
    assert gateway.received("AUTHORIZE") == 1
    assert await reconciliations(adapter.server) == {("AUTHORIZE", "FOUND"): 1}


async def test_a_capture_the_gateway_never_made(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """Capture lost before the gateway captured: ``outcome=NOT_FOUND``; the retry with the same
    pair captures once."""
    gateway.prepare(
        "AUTHORIZE",
        order_id="order-1",
        transaction_id="auth-1",
        order_amount="10.00",
        order_currency="USD",
    )
    gateway.script("CAPTURE", Fault.http(504, commit=False))
    adapter = await start()
    assert_not_found(await refused(adapter.stub, capture_request()))
    response, outcome = await with_outcome(adapter.stub, capture_request())
    assert (outcome, response.transaction.type) == (None, pay.TRANSACTION_TYPE_CAPTURE)
    assert gateway.received("CAPTURE") == 2
    assert gateway.count_held() == 2
    assert await reconciliations(adapter.server) == {("CAPTURE", "NOT_FOUND"): 1}


async def test_a_refund_retried_with_another_amount(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """A refund of 4.00, then a retry of its pair for 5.00: TRANSACTION_ID_REUSED naming the
    refund that exists; a retry for 4.00 is replayed. Refunded once."""
    gateway.prepare(
        "PAY",
        order_id="order-1",
        transaction_id="pay-1",
        order_amount="10.00",
        order_currency="USD",
    )
    adapter = await start()
    await with_outcome(adapter.stub, refund_request(amount="4.00"))
    failure = await refused(adapter.stub, refund_request(amount="5.00"))
    assert failure.info.reason == "TRANSACTION_ID_REUSED"
    assert dict(failure.info.metadata).items() >= {
        ("existingType", "REFUND"),
        ("existingAmount", "4.00"),
        ("existingCurrency", "USD"),
    }
    assert (await with_outcome(adapter.stub, refund_request(amount="4.00")))[1] == "replayed"
    assert gateway.orders["order-1"].refunded == 4


async def test_a_lost_void_is_found_again(gateway: PaymentGateway, start: StartPayments) -> None:
    """Void lost after the gateway voided: found as a VOID_PAYMENT of the same target,
    ``reconciled``; one VOID sent."""
    gateway.prepare(
        "PAY",
        order_id="order-1",
        transaction_id="pay-1",
        order_amount="10.00",
        order_currency="USD",
    )
    gateway.script("VOID", Fault.lose(commit=True))
    adapter = await start()
    response, outcome = await with_outcome(adapter.stub, void_request())
    assert outcome == "reconciled"
    assert response.transaction.type == pay.TRANSACTION_TYPE_VOID_PAYMENT
    assert response.transaction.target_transaction_id == "pay-1"
    assert gateway.received("VOID") == 1


async def test_a_void_pair_reused_for_another_target(
    gateway: PaymentGateway, start: StartPayments
) -> None:
    """A void's pair retried with another target is ALREADY_EXISTS ``TRANSACTION_ID_REUSED``;
    with the same target it is replayed."""
    for transaction_id in ("pay-1", "pay-2"):
        gateway.prepare(
            "PAY",
            order_id="order-1",
            transaction_id=transaction_id,
            order_amount="10.00",
            order_currency="USD",
        )
    adapter = await start()
    await with_outcome(adapter.stub, void_request(target="pay-2"))
    failure = await refused(adapter.stub, void_request(target="pay-1"))
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "TRANSACTION_ID_REUSED",
    )
    assert failure.info.metadata["existingType"] == "VOID_PAYMENT"
    assert (await with_outcome(adapter.stub, void_request(target="pay-2")))[1] == "replayed"
    assert gateway.received("VOID") == 3
    assert gateway.count_held() == 3


# --- the embedded gateway -----------------------------------------------------------------------

CARD = {
    "sourceOfFunds.provided.card.number": "5123450000000008",
    "sourceOfFunds.provided.card.expiry.month": "1",
    "sourceOfFunds.provided.card.expiry.year": "39",
    "sourceOfFunds.provided.card.securityCode": "100",
}


async def test_twenty_concurrent_identical_payments_on_the_embedded_gateway() -> None:
    """The embedded gateway enforces the pair rule atomically: 20 identical Pay calls at once
    make one transaction, and all 20 answer OK with it (19 ``replayed``)."""
    async with AsyncExitStack() as stack:
        adapter = await start_payment_adapter(stack, make_settings())
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(adapter.server.address))
        sessions = session_service_pb2_grpc.SessionServiceStub(channel)
        created = await sessions.CreateSession(
            pb.CreateSessionRequest(merchant=MERCHANT), timeout=5
        )
        await sessions.UpdateSession(
            pb.UpdateSessionRequest(
                merchant=MERCHANT,
                session=pb.SessionRevision(id=created.session.id),
                order=pb.Order(amount="10.00", currency="USD"),
                extra_fields=CARD,
            ),
            timeout=5,
        )
        request = pay_request()
        request.session.id = created.session.id
        results = await asyncio.gather(*(with_outcome(adapter.stub, request) for _ in range(20)))
        assert len({r.transaction.SerializeToString(deterministic=True) for r, _ in results}) == 1
        assert sorted(str(outcome) for _, outcome in results) == ["None"] + ["replayed"] * 19
        order = await adapter.stub.RetrieveOrder(
            pay.RetrieveOrderRequest(merchant=MERCHANT, order=pay.OrderRef(id="order-1")), timeout=5
        )
        assert [t.transaction.id for t in order.transactions] == ["pay-1"]
        assert Decimal(order.total_captured_amount) == Decimal("10.00")
