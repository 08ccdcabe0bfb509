"""``nvp_adapter_client.status`` and ``retry`` against statuses the real adapter makes.

The adapter runs in-process (``adapter.app.build_server``) on loopback port 0, in front of its
embedded gateway or of the scripted MPGS-like gateway of the adapter's own tests
(``tests.payment_gateway``), which loses answers on cue. Every call goes through the client's own
stubs; each test decodes the failure with ``failure`` and asks ``advice`` what to do, for every
kind of row of the retry table.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from adapter.app import build_server
from adapter.config import Settings
from nvp_adapter_client import (
    PaymentServiceStub,
    Retry,
    SessionServiceStub,
    advice,
    failure,
    gateway_error_pb2,
    outcome,
    payment_service_pb2,
    session_service_pb2,
)
from nvp_adapter_client.status import Failure, FieldViolation
from tests.conftest import MERCHANT, make_settings
from tests.payment_gateway import BUSY, Fault, PaymentGateway, run_gateway

if TYPE_CHECKING:  # the async stub classes exist only in the generated type stubs
    from nvp_adapter_client.mpgs.gateway.v1.payment_service_pb2_grpc import (
        PaymentServiceAsyncStub,
    )

SESSION_ID = "SESSION0002378433591N3262498M20"
DEADLINE = 5.0


@dataclass(frozen=True)
class Adapter:
    """An adapter running in-process: its address, and a PaymentService stub of the client's."""

    address: str
    stub: PaymentServiceAsyncStub


Start = Callable[[Settings], Awaitable[Adapter]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start an adapter for given settings; all closed afterwards."""
    async with AsyncExitStack() as stack:

        async def run(settings: Settings) -> Adapter:
            server = await stack.enter_async_context(build_server(settings))
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
            return Adapter(server.address, PaymentServiceStub(channel))

        yield run


@pytest.fixture
async def gateway() -> AsyncIterator[PaymentGateway]:
    async with run_gateway() as gateway:
        yield gateway


def pay(transaction_id: str = "pay-1", amount: str = "10.00", order_id: str = "order-1") -> Any:
    return payment_service_pb2.PayRequest(
        merchant=MERCHANT,
        order=session_service_pb2.Order(id=order_id, amount=amount, currency="USD"),
        transaction=payment_service_pb2.NewTransaction(id=transaction_id),
        session=session_service_pb2.SessionRevision(id=SESSION_ID),
    )


async def refused(call: Any) -> Failure:
    """Await a call that must fail; its status, decoded by the client."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return failure(caught.value)


async def test_invalid_argument_names_the_field(start: Start) -> None:
    """The adapter's own validation: INVALID_ARGUMENT ``INVALID_REQUEST`` with a BadRequest naming
    the proto field, no RetryInfo; not to be retried as it is, and nothing was done."""
    stub = (await start(make_settings())).stub
    failed = await refused(stub.Pay(pay(amount="1.0001"), timeout=DEADLINE))
    assert failed.code is grpc.StatusCode.INVALID_ARGUMENT
    assert failed.reason == "INVALID_REQUEST"
    assert failed.error_info is not None
    assert failed.error_info.domain == "nvp-adapter"
    assert [v.field for v in failed.field_violations] == ["order.amount"]
    assert all(isinstance(v, FieldViolation) and v.description for v in failed.field_violations)
    assert failed.retry_delay is None
    told = advice(failed, moves_money=True)
    assert (told.retry, told.outcome_known) == (Retry.NO, True)


async def test_a_gateway_error_is_typed(start: Start) -> None:
    """A capture on an order the embedded gateway does not hold: NOT_FOUND ``ORDER_NOT_FOUND`` with
    the gateway's own error as a typed GatewayError; not to be retried."""
    stub = (await start(make_settings())).stub
    request = payment_service_pb2.CaptureRequest(
        merchant=MERCHANT,
        order=payment_service_pb2.OrderRef(id="no-such-order"),
        transaction=payment_service_pb2.AmountTransaction(
            id="capture-1", amount="1.00", currency="USD"
        ),
    )
    failed = await refused(stub.Capture(request, timeout=DEADLINE))
    assert (failed.code, failed.reason) == (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    assert failed.gateway_error is not None
    assert failed.gateway_error.cause == gateway_error_pb2.ERROR_CAUSE_INVALID_REQUEST
    assert failed.gateway_error.field == "order.id"
    assert failed.gateway_error in failed.details
    assert advice(failed, moves_money=True).retry is Retry.NO


async def test_a_reused_transaction_id_is_a_bug_not_a_retry(
    gateway: PaymentGateway, start: Start
) -> None:
    """The same ids for another amount: ALREADY_EXISTS ``TRANSACTION_ID_REUSED`` with what exists
    in ErrorInfo's metadata; never to be retried."""
    stub = (await start(make_settings(gateway.url))).stub
    await stub.Pay(pay(amount="10.00"), timeout=DEADLINE)
    failed = await refused(stub.Pay(pay(amount="20.00"), timeout=DEADLINE))
    assert (failed.code, failed.reason) == (grpc.StatusCode.ALREADY_EXISTS, "TRANSACTION_ID_REUSED")
    assert failed.error_info is not None
    assert failed.error_info.metadata["existingAmount"] == "10.00"
    told = advice(failed, moves_money=True)
    assert (told.retry, told.may_retry, told.outcome_known) == (Retry.NO, False, True)


async def test_a_retry_of_the_same_ids_is_told_replayed(
    gateway: PaymentGateway, start: Start
) -> None:
    """``outcome`` reads the answer's trailer: nothing for the first payment, ``replayed`` for a
    repeat of its ids, which charges nothing more."""
    stub = (await start(make_settings(gateway.url))).stub
    first = stub.Pay(pay(), timeout=DEADLINE)
    paid = await first
    assert outcome(await first.trailing_metadata()) is None
    again = stub.Pay(pay(), timeout=DEADLINE)
    repeated = await again
    assert outcome(await again.trailing_metadata()) == "replayed"
    assert repeated.transaction.id == paid.transaction.id


async def test_server_busy_retries_after_the_advised_delay(
    gateway: PaymentGateway, start: Start
) -> None:
    """The gateway answers SERVER_BUSY: UNAVAILABLE ``SERVER_BUSY`` with RetryInfo and the
    gateway's error; retry with the same ids after RetryInfo's delay, nothing having been done."""
    gateway.script("PAY", BUSY, times=None)
    stub = (await start(make_settings(gateway.url))).stub
    failed = await refused(stub.Pay(pay(), timeout=DEADLINE))
    assert (failed.code, failed.reason) == (grpc.StatusCode.UNAVAILABLE, "SERVER_BUSY")
    assert failed.gateway_error is not None
    assert failed.gateway_error.cause == gateway_error_pb2.ERROR_CAUSE_SERVER_BUSY
    assert failed.retry_delay is not None
    assert failed.retry_delay > timedelta(0)
    told = advice(failed, moves_money=True)
    assert (told.retry, told.delay, told.outcome_known) == (
        Retry.SAME_IDS,
        failed.retry_delay,
        True,
    )


async def test_not_found_retries_with_the_same_ids_and_pays(
    gateway: PaymentGateway, start: Start
) -> None:
    """The answer was lost before the gateway paid: UNAVAILABLE ``outcome=NOT_FOUND`` with
    RetryInfo; the advised retry, the same ids, pays once."""
    gateway.script("PAY", Fault.lose(commit=False))
    stub = (await start(make_settings(gateway.url))).stub
    failed = await refused(stub.Pay(pay(), timeout=DEADLINE))
    assert (failed.code, failed.reason, failed.outcome) == (
        grpc.StatusCode.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        "NOT_FOUND",
    )
    told = advice(failed, moves_money=True)
    assert (told.retry, told.outcome_known) == (Retry.SAME_IDS, True)
    assert told.delay == failed.retry_delay
    paid = await stub.Pay(pay(), timeout=DEADLINE)
    assert paid.transaction.id == "pay-1"
    assert gateway.count_held() == 1


async def test_unknown_retries_later_with_the_same_ids(
    gateway: PaymentGateway, start: Start
) -> None:
    """The answer was lost after the gateway paid and it cannot be asked: ``outcome=UNKNOWN``, no
    RetryInfo; a payment is retried later with the same ids (and gets the original outcome),
    a session call's retry is harmless; either way the outcome is unknown until then."""
    gateway.script("PAY", Fault.lose(commit=True))
    gateway.script("RETRIEVE_TRANSACTION", Fault.lose(commit=False), times=None)
    stub = (await start(make_settings(gateway.url))).stub
    failed = await refused(stub.Pay(pay(), timeout=DEADLINE))
    assert (failed.code, failed.outcome, failed.retry_delay) == (
        grpc.StatusCode.UNAVAILABLE,
        "UNKNOWN",
        None,
    )
    for moves_money in (True, False):
        told = advice(failed, moves_money=moves_money)
        assert (told.retry, told.outcome_known) == (Retry.SAME_IDS, False)
    assert "never new ones" in advice(failed, moves_money=True).why

    gateway.unscript("RETRIEVE_TRANSACTION")
    call = stub.Pay(pay(), timeout=DEADLINE)
    paid = await call
    assert outcome(await call.trailing_metadata()) == "replayed"
    assert (paid.transaction.id, gateway.count_held()) == ("pay-1", 1)


async def test_deadline_exceeded_upstream_timeout_is_unknown(
    gateway: PaymentGateway, start: Start
) -> None:
    """The gateway hangs after paying past the upstream timeout, and every retrieve loses its
    answer: DEADLINE_EXCEEDED ``UPSTREAM_TIMEOUT`` with ``outcome=UNKNOWN``: retry later, the same
    ids. (The upstream timeout, far inside the call's deadline, is what ends the wait.)"""
    gateway.script("PAY", Fault.hang(commit=True))
    gateway.script("RETRIEVE_TRANSACTION", Fault.lose(commit=False), times=None)
    stub = (await start(make_settings(gateway.url, timeout_seconds=0.5))).stub
    failed = await refused(stub.Pay(pay(), timeout=DEADLINE))
    assert (failed.code, failed.reason, failed.outcome) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "UPSTREAM_TIMEOUT",
        "UNKNOWN",
    )
    told = advice(failed, moves_money=True)
    assert (told.retry, told.outcome_known) == (Retry.SAME_IDS, False)


async def test_a_blocking_stub_s_error_decodes_too(start: Start) -> None:
    """``failure`` takes the ``grpc.RpcError`` a blocking stub raises (its trailers are grpc's
    namedtuples, not ``grpc.aio.Metadata``)."""
    adapter = await start(make_settings(merchants={"OTHER": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"}))

    def call() -> Failure:
        with grpc.insecure_channel(adapter.address) as channel:
            blocking = SessionServiceStub(channel)
            request = session_service_pb2.CreateSessionRequest(merchant=MERCHANT)
            with pytest.raises(grpc.RpcError) as caught:
                blocking.CreateSession(request, timeout=DEADLINE)
            return failure(caught.value)

    failed = await asyncio.to_thread(call)
    assert (failed.code, failed.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "MERCHANT_NOT_ALLOWED",
    )
    assert failed.error_info is not None
    assert failed.error_info.metadata == {}  # the caller is no known caller: nothing to name
    assert advice(failed, moves_money=False).retry is Retry.NO
