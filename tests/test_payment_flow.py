"""Every payment path through a real gRPC client against the real embedded gateway, on both of
its faces: in-process (``upstream.url = "embedded"``) and over HTTP (a ``StandaloneGateway`` on
loopback, the adapter's ``upstream.url`` pointing at it).

``tests/test_embedded_payments.py`` checks the gateway at the NVP level and
``tests/test_exactly_once.py`` the adapter's rules against a scripted gateway; here the two meet,
and must agree with CONTRACT §9 and docs/payments.md: the typed answers of an approved payment and
of every MPGS test card, an order's life from authorization to void, currencies of 0 and 3
decimals, each §9 error row, exactly once (a lost answer reconciled, a retry replayed, a reused id
refused, concurrent retries making one transaction), and orders private to their merchant.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from adapter._proto.mpgs.gateway.v1 import gateway_error_pb2 as gw
from adapter._proto.mpgs.gateway.v1 import payment_service_pb2 as pay
from adapter._proto.mpgs.gateway.v1 import payment_service_pb2_grpc, session_service_pb2_grpc
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.app import build_server
from adapter.config import (
    DEMO_MERCHANT,
    MerchantCredentials,
    ServerSettings,
    Settings,
    UpstreamSettings,
)
from adapter.core.redaction import Secret
from adapter.embedded.standalone import StandaloneGateway
from tests.payment_gateway import refused, with_outcome

if TYPE_CHECKING:  # the async stub classes exist only in the generated type stubs
    from adapter._proto.mpgs.gateway.v1.payment_service_pb2_grpc import (
        PaymentServiceAsyncStub as PaymentStub,
    )
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as SessionStub,
    )

FACES = ("in-process", "http")
OTHER_MERCHANT = "OTHERSHOP"
OTHER_PASSWORD = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
PAN = "5123450000000008"  # the MPGS Mastercard test number
MASKED = "512345xxxxxx0008"
SECURITY_CODE = "100"
UNKNOWN_SESSION = "SESSION" + "0" * 25  # well-formed (32 of 0-9 A-Z a-z), never created
ANSWER_LOST = "TEST-ANSWER-LOST"
DEADLINE = 10.0


@dataclass(frozen=True)
class Face:
    """One adapter over one face of the embedded gateway: its two services' stubs."""

    name: str
    sessions: SessionStub
    payments: PaymentStub


def two_merchants() -> Settings:
    """``Settings()`` (its default account, ``DEMO_MERCHANT``) plus a second merchant, listening on
    loopback port 0."""
    defaults = Settings()
    merchants = {
        **defaults.merchants,
        OTHER_MERCHANT: MerchantCredentials(OTHER_MERCHANT, Secret(OTHER_PASSWORD)),
    }
    return dataclasses.replace(
        defaults,
        server=ServerSettings(listen="127.0.0.1:0", grace_seconds=2.0),
        merchants=MappingProxyType(merchants),
    )


async def open_face(stack: AsyncExitStack, name: str) -> Face:
    """An adapter on the embedded gateway, in-process or over HTTP; both know both merchants."""
    settings = two_merchants()
    if name == "http":
        gateway = await stack.enter_async_context(StandaloneGateway(settings, "127.0.0.1", 0))
        settings = dataclasses.replace(
            settings, upstream=UpstreamSettings(url=f"http://127.0.0.1:{gateway.port}")
        )
    assert settings.upstream.is_embedded is (name == "in-process")
    server = await stack.enter_async_context(build_server(settings))
    channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
    return Face(
        name,
        session_service_pb2_grpc.SessionServiceStub(channel),
        payment_service_pb2_grpc.PaymentServiceStub(channel),
    )


@pytest.fixture(params=FACES)
async def face(request: pytest.FixtureRequest) -> AsyncIterator[Face]:
    async with AsyncExitStack() as stack:
        yield await open_face(stack, request.param)


# --- helpers ------------------------------------------------------------------------------------


def card_fields(expiry: str = "01/39") -> dict[str, str]:
    month, year = expiry.split("/")
    return {
        "sourceOfFunds.provided.card.number": PAN,
        "sourceOfFunds.provided.card.expiry.month": month,
        "sourceOfFunds.provided.card.expiry.year": year,
        "sourceOfFunds.provided.card.securityCode": SECURITY_CODE,
    }


async def card_session(
    face: Face,
    order_id: str = "order-1",
    amount: str = "25.50",
    currency: str = "USD",
    *,
    expiry: str | None = "01/39",
    merchant: str = DEMO_MERCHANT,
) -> pb.SessionRevision:
    """A new session holding an order and (unless ``expiry`` is None) a card: its id and the
    version the update left."""
    created = await face.sessions.CreateSession(
        pb.CreateSessionRequest(merchant=merchant), timeout=DEADLINE
    )
    updated = await face.sessions.UpdateSession(
        pb.UpdateSessionRequest(
            merchant=merchant,
            session=pb.SessionRevision(id=created.session.id),
            order=pb.Order(id=order_id, amount=amount, currency=currency),
            extra_fields={} if expiry is None else card_fields(expiry),
        ),
        timeout=DEADLINE,
    )
    assert updated.session.update_status == pb.SESSION_UPDATE_STATUS_SUCCESS
    return pb.SessionRevision(id=created.session.id, version=updated.session.version)


def paying(
    session: pb.SessionRevision,
    order_id: str = "order-1",
    transaction_id: str = "pay-1",
    amount: str = "25.50",
    currency: str = "USD",
    *,
    reference: str = "",
    merchant: str = DEMO_MERCHANT,
) -> dict[str, Any]:
    """The fields of a PayRequest or an AuthorizeRequest."""
    return {
        "merchant": merchant,
        "order": pb.Order(id=order_id, amount=amount, currency=currency, reference=reference),
        "transaction": pay.NewTransaction(id=transaction_id),
        "session": session,
    }


def capture(
    transaction_id: str, amount: str, currency: str = "USD", order_id: str = "order-1"
) -> pay.CaptureRequest:
    return pay.CaptureRequest(
        merchant=DEMO_MERCHANT,
        order=pay.OrderRef(id=order_id),
        transaction=pay.AmountTransaction(id=transaction_id, amount=amount, currency=currency),
    )


def refund(
    transaction_id: str, amount: str, currency: str = "USD", order_id: str = "order-1"
) -> pay.RefundRequest:
    return pay.RefundRequest(
        merchant=DEMO_MERCHANT,
        order=pay.OrderRef(id=order_id),
        transaction=pay.AmountTransaction(id=transaction_id, amount=amount, currency=currency),
    )


def void(transaction_id: str, target: str, order_id: str = "order-1") -> pay.VoidRequest:
    return pay.VoidRequest(
        merchant=DEMO_MERCHANT,
        order=pay.OrderRef(id=order_id),
        transaction=pay.VoidTransaction(id=transaction_id, target_transaction_id=target),
    )


def retrieve_transaction(
    transaction_id: str, order_id: str = "order-1", merchant: str = DEMO_MERCHANT
) -> pay.RetrieveTransactionRequest:
    return pay.RetrieveTransactionRequest(
        merchant=merchant,
        order=pay.OrderRef(id=order_id),
        transaction=pay.TransactionRef(id=transaction_id),
    )


def retrieve_order(
    order_id: str = "order-1", merchant: str = DEMO_MERCHANT
) -> pay.RetrieveOrderRequest:
    return pay.RetrieveOrderRequest(merchant=merchant, order=pay.OrderRef(id=order_id))


async def call(face: Face, request: Message) -> Any:
    """A PaymentService call that must succeed, with no outcome trailer (a plain answer)."""
    response, outcome = await with_outcome(face.payments, request, DEADLINE)
    assert outcome is None, f"{request.DESCRIPTOR.name}: trailer {outcome!r}"
    return response


def totals(order: Any) -> tuple[Decimal, Decimal, Decimal]:
    """An order's authorized, captured and refunded totals, as decimals (the gateway may write
    ``1`` or ``1.00``); a total the answer lacks fails here rather than reading as zero."""
    texts = (
        order.total_authorized_amount,
        order.total_captured_amount,
        order.total_refunded_amount,
    )
    assert all(texts), f"a total is missing: {texts}"
    authorized, captured, refunded = texts
    return Decimal(authorized), Decimal(captured), Decimal(refunded)


def dec(*amounts: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(amount) for amount in amounts)


# --- an approved payment ------------------------------------------------------------------------


async def test_an_approved_payment_reads_back_the_same(face: Face) -> None:
    """01/39: SUCCESS, APPROVED, a PAYMENT, the order CAPTURED with exact totals, the card masked,
    an authorization code and a receipt; RetrieveTransaction answers the same transaction and
    RetrieveOrder lists it."""
    session = await card_session(face)
    paid = await call(face, pay.PayRequest(correlation_id="flow-1", **paying(session)))
    assert (paid.merchant, paid.correlation_id) == (DEMO_MERCHANT, "flow-1")
    assert paid.result == pb.RESULT_SUCCESS
    assert paid.response.gateway_code == pay.GATEWAY_CODE_APPROVED
    assert (paid.response.gateway_recommendation, paid.response.acquirer_code) == (
        "NO_ACTION",
        "00",
    )
    assert (paid.transaction.id, paid.transaction.type) == ("pay-1", pay.TRANSACTION_TYPE_PAYMENT)
    assert (Decimal(paid.transaction.amount), paid.transaction.currency) == (
        Decimal("25.50"),
        "USD",
    )
    assert re.fullmatch(r"\d{6}", paid.transaction.authorization_code)
    assert re.fullmatch(r"\d{12}", paid.transaction.receipt)
    assert (paid.order.id, paid.order.status) == ("order-1", pay.ORDER_STATUS_CAPTURED)
    assert (Decimal(paid.order.amount), paid.order.currency) == (Decimal("25.50"), "USD")
    assert totals(paid.order) == dec("25.50", "25.50", "0")
    card = paid.source_of_funds.provided.card
    assert (card.number, card.brand) == (MASKED, "MASTERCARD")
    assert (card.expiry.month.lstrip("0"), card.expiry.year) == ("1", "39")
    assert paid.time_of_record
    assert PAN not in str(paid)

    retrieved = await call(face, retrieve_transaction("pay-1"))
    for name in ("merchant", "result", "response", "order", "transaction", "source_of_funds"):
        assert getattr(retrieved, name) == getattr(paid, name), name
    assert retrieved.time_of_record == paid.time_of_record

    order = await call(face, retrieve_order())
    assert (order.id, order.status, order.currency) == ("order-1", pay.ORDER_STATUS_CAPTURED, "USD")
    assert totals(order) == dec("25.50", "25.50", "0")
    [listed] = order.transactions
    assert listed.transaction == paid.transaction
    assert (listed.result, listed.response) == (paid.result, paid.response)
    assert listed.source_of_funds.provided.card.number == MASKED


# --- every MPGS test card -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    code: pay.GatewayCode.ValueType
    result: pb.Result.ValueType


CARDS = {
    "01/39": Outcome(pay.GATEWAY_CODE_APPROVED, pb.RESULT_SUCCESS),
    "05/39": Outcome(pay.GATEWAY_CODE_DECLINED, pb.RESULT_FAILURE),
    "04/27": Outcome(pay.GATEWAY_CODE_EXPIRED_CARD, pb.RESULT_FAILURE),
    "08/28": Outcome(pay.GATEWAY_CODE_TIMED_OUT, pb.RESULT_FAILURE),
    "01/37": Outcome(pay.GATEWAY_CODE_ACQUIRER_SYSTEM_ERROR, pb.RESULT_FAILURE),
    "02/37": Outcome(pay.GATEWAY_CODE_UNSPECIFIED_FAILURE, pb.RESULT_FAILURE),
    "05/37": Outcome(pay.GATEWAY_CODE_UNKNOWN, pb.RESULT_UNKNOWN),
}


@pytest.mark.parametrize(("expiry", "outcome"), CARDS.items(), ids=list(CARDS))
async def test_each_test_card_is_an_answer(face: Face, expiry: str, outcome: Outcome) -> None:
    """The expiry chooses the outcome; every one is gRPC OK with its typed code and result (a
    decline is an answer: the transaction exists and reads back the same)."""
    session = await card_session(face, expiry=expiry)
    paid = await call(face, pay.PayRequest(**paying(session)))
    assert (paid.response.gateway_code, paid.result) == (outcome.code, outcome.result)
    assert (paid.transaction.id, paid.transaction.type) == ("pay-1", pay.TRANSACTION_TYPE_PAYMENT)
    assert paid.source_of_funds.provided.card.number == MASKED
    if outcome.result == pb.RESULT_SUCCESS:
        assert paid.order.status == pay.ORDER_STATUS_CAPTURED
        assert totals(paid.order) == dec("25.50", "25.50", "0")
    elif outcome.result == pb.RESULT_FAILURE:
        assert paid.order.status == pay.ORDER_STATUS_FAILED
        assert paid.transaction.authorization_code == ""
    retrieved = await call(face, retrieve_transaction("pay-1"))
    assert (retrieved.response, retrieved.result, retrieved.transaction) == (
        paid.response,
        paid.result,
        paid.transaction,
    )


# --- an order's life ----------------------------------------------------------------------------


async def test_authorize_capture_refund_and_void_a_refund(face: Face) -> None:
    """AUTHORIZED → PARTIALLY_CAPTURED → CAPTURED → PARTIALLY_REFUNDED → REFUNDED, each total
    exact; the void of the last refund is a VOID_REFUND that undoes it."""
    session = await card_session(face, amount="100.00")
    authorized = await call(face, pay.AuthorizeRequest(**paying(session, amount="100.00")))
    assert authorized.result == pb.RESULT_SUCCESS
    assert authorized.transaction.type == pay.TRANSACTION_TYPE_AUTHORIZATION
    assert authorized.order.status == pay.ORDER_STATUS_AUTHORIZED
    assert totals(authorized.order) == dec("100", "0", "0")

    steps: list[
        tuple[
            pay.CaptureRequest | pay.RefundRequest | pay.VoidRequest,
            pay.TransactionType.ValueType,
            pay.OrderStatus.ValueType,
            tuple[str, str, str],
        ]
    ] = [
        (
            capture("cap-1", "30.00"),
            pay.TRANSACTION_TYPE_CAPTURE,
            pay.ORDER_STATUS_PARTIALLY_CAPTURED,
            ("100", "30", "0"),
        ),
        (
            capture("cap-2", "70.00"),
            pay.TRANSACTION_TYPE_CAPTURE,
            pay.ORDER_STATUS_CAPTURED,
            ("100", "100", "0"),
        ),
        (
            refund("ref-1", "40.00"),
            pay.TRANSACTION_TYPE_REFUND,
            pay.ORDER_STATUS_PARTIALLY_REFUNDED,
            ("100", "100", "40"),
        ),
        (
            refund("ref-2", "60.00"),
            pay.TRANSACTION_TYPE_REFUND,
            pay.ORDER_STATUS_REFUNDED,
            ("100", "100", "100"),
        ),
        (
            void("void-1", "ref-2"),
            pay.TRANSACTION_TYPE_VOID_REFUND,
            pay.ORDER_STATUS_PARTIALLY_REFUNDED,
            ("100", "100", "40"),
        ),
    ]
    for request, kind, status, expected in steps:
        answer = await call(face, request)
        name = request.transaction.id
        assert (answer.result, answer.response.gateway_code) == (
            pb.RESULT_SUCCESS,
            pay.GATEWAY_CODE_APPROVED,
        ), name
        assert (answer.transaction.id, answer.transaction.type) == (name, kind), name
        assert answer.order.status == status, name
        assert totals(answer.order) == dec(*expected), name
        if isinstance(request, pay.VoidRequest):
            assert answer.transaction.target_transaction_id == "ref-2"
        else:
            assert Decimal(answer.transaction.amount) == Decimal(request.transaction.amount)
            assert answer.transaction.currency == "USD"

    order = await call(face, retrieve_order())
    assert [t.transaction.id for t in order.transactions] == [
        "pay-1",
        "cap-1",
        "cap-2",
        "ref-1",
        "ref-2",
        "void-1",
    ]
    assert [t.transaction.type for t in order.transactions] == [
        pay.TRANSACTION_TYPE_AUTHORIZATION,
        pay.TRANSACTION_TYPE_CAPTURE,
        pay.TRANSACTION_TYPE_CAPTURE,
        pay.TRANSACTION_TYPE_REFUND,
        pay.TRANSACTION_TYPE_REFUND,
        pay.TRANSACTION_TYPE_VOID_REFUND,
    ]
    assert order.status == pay.ORDER_STATUS_PARTIALLY_REFUNDED
    assert totals(order) == dec("100", "100", "40")


async def test_voiding_an_authorization_cancels_the_order(face: Face) -> None:
    """A VOID_AUTHORIZATION: the order CANCELLED, nothing left authorized."""
    session = await card_session(face)
    await call(face, pay.AuthorizeRequest(**paying(session, transaction_id="auth-1")))
    voided = await call(face, void("void-1", "auth-1"))
    assert (voided.result, voided.transaction.type) == (
        pb.RESULT_SUCCESS,
        pay.TRANSACTION_TYPE_VOID_AUTHORIZATION,
    )
    assert voided.transaction.target_transaction_id == "auth-1"
    assert voided.order.status == pay.ORDER_STATUS_CANCELLED
    assert totals(voided.order) == dec("0", "0", "0")
    order = await call(face, retrieve_order())
    assert order.status == pay.ORDER_STATUS_CANCELLED
    assert totals(order) == dec("0", "0", "0")


# --- currencies of 0 and 3 decimals -------------------------------------------------------------


CURRENCIES = {
    # currency: (amount, a first capture, the rest), as the gateway writes them
    "JPY": ("1000", "250", "750"),
    "BHD": ("12.345", "2.345", "10.000"),
}


@pytest.mark.parametrize(("currency", "amounts"), CURRENCIES.items(), ids=list(CURRENCIES))
async def test_minor_units_end_to_end(
    face: Face, currency: str, amounts: tuple[str, str, str]
) -> None:
    """An amount in JPY (no decimals) or BHD (three) goes through authorize, two captures and a
    refund, each amount and total written with the currency's own decimals."""
    whole, first, rest = amounts
    session = await card_session(face, amount=whole, currency=currency)
    authorized = await call(
        face, pay.AuthorizeRequest(**paying(session, amount=whole, currency=currency))
    )
    assert authorized.result == pb.RESULT_SUCCESS
    assert (authorized.order.amount, authorized.order.currency) == (whole, currency)
    assert (authorized.transaction.amount, authorized.transaction.currency) == (whole, currency)
    assert authorized.order.total_authorized_amount == whole

    partly = await call(face, capture("cap-1", first, currency))
    assert partly.order.status == pay.ORDER_STATUS_PARTIALLY_CAPTURED
    assert (partly.transaction.amount, partly.order.total_captured_amount) == (first, first)
    full = await call(face, capture("cap-2", rest, currency))
    assert full.order.status == pay.ORDER_STATUS_CAPTURED
    assert (full.transaction.amount, full.order.total_captured_amount) == (rest, whole)
    refunded = await call(face, refund("ref-1", first, currency))
    assert refunded.order.status == pay.ORDER_STATUS_PARTIALLY_REFUNDED
    assert (refunded.transaction.amount, refunded.order.total_refunded_amount) == (first, first)

    order = await call(face, retrieve_order())
    assert (order.amount, order.currency) == (whole, currency)
    assert (order.total_captured_amount, order.total_refunded_amount) == (whole, first)
    assert [t.transaction.amount for t in order.transactions] == [whole, first, rest, first]


# --- §9's error rows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A refused call: the gRPC code and reason, and the gateway's field and validation type."""

    code: grpc.StatusCode
    reason: str
    field: str
    validation: str = "INVALID"


async def _capture_unknown_order(face: Face) -> Message:
    return capture("cap-1", "1.00", order_id="no-such-order")


async def _retrieve_unknown_transaction(face: Face) -> Message:
    await call(face, pay.PayRequest(**paying(await card_session(face))))
    return retrieve_transaction("no-such-transaction")


async def _void_unknown_target(face: Face) -> Message:
    await call(face, pay.PayRequest(**paying(await card_session(face))))
    return void("void-1", "no-such-transaction")


async def _refund_too_much(face: Face) -> Message:
    await call(face, pay.PayRequest(**paying(await card_session(face))))
    return refund("ref-1", "25.51")


async def _pay_without_a_card(face: Face) -> Message:
    return pay.PayRequest(**paying(await card_session(face, expiry=None)))


async def _pay_a_stale_session(face: Face) -> Message:
    session = await card_session(face)
    changed = await face.sessions.UpdateSession(
        pb.UpdateSessionRequest(
            merchant=DEMO_MERCHANT,
            session=pb.SessionRevision(id=session.id),
            order=pb.Order(id="order-1", amount="30.00", currency="USD"),
        ),
        timeout=DEADLINE,
    )
    assert changed.session.version != session.version
    return pay.PayRequest(**paying(session))


async def _pay_an_unknown_session(face: Face) -> Message:
    return pay.PayRequest(**paying(pb.SessionRevision(id=UNKNOWN_SESSION)))


async def _capture_another_currency(face: Face) -> Message:
    await call(face, pay.AuthorizeRequest(**paying(await card_session(face))))
    return capture("cap-1", "5.00", "EUR")


ERRORS = {
    "capture, unknown order": (
        _capture_unknown_order,
        Row(grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND", "order.id"),
    ),
    "retrieve, unknown transaction": (
        _retrieve_unknown_transaction,
        Row(grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND", "transaction.id"),
    ),
    "void, unknown target": (
        _void_unknown_target,
        Row(grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND", "transaction.targetTransactionId"),
    ),
    "refund, more than captured": (
        _refund_too_much,
        Row(grpc.StatusCode.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_BALANCE", "transaction.amount"),
    ),
    "pay, no card in the session": (
        _pay_without_a_card,
        Row(
            grpc.StatusCode.FAILED_PRECONDITION,
            "SESSION_INCOMPLETE",
            "sourceOfFunds.provided.card.number",
            "MISSING",
        ),
    ),
    "pay, stale session version": (
        _pay_a_stale_session,
        Row(grpc.StatusCode.ABORTED, "SESSION_VERSION_MISMATCH", "session.version"),
    ),
    "pay, unknown session": (
        _pay_an_unknown_session,
        Row(grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND", "session.id"),
    ),
    "capture, another currency": (
        _capture_another_currency,
        Row(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "transaction.currency"),
    ),
}


@pytest.mark.parametrize(("prepare", "row"), ERRORS.values(), ids=list(ERRORS))
async def test_error_rows_against_the_gateway(
    face: Face, prepare: Callable[[Face], Awaitable[Message]], row: Row
) -> None:
    """The gateway's own refusal, mapped by §9: the code and reason, §4's ErrorInfo metadata
    (cause, field, validation type, one attempt), the GatewayError, no RetryInfo."""
    request = await prepare(face)
    failure = await refused(face.payments, request, DEADLINE)
    assert (failure.code, failure.info.reason) == (row.code, row.reason)
    metadata = dict(failure.info.metadata)
    assert {k: metadata.get(k) for k in ("cause", "field", "validationType", "attempts")} == {
        "cause": "INVALID_REQUEST",
        "field": row.field,
        "validationType": row.validation,
        "attempts": "1",
    }
    error = failure.details[gw.GatewayError]
    assert isinstance(error, gw.GatewayError)
    assert (error.cause, error.field) == (gw.ERROR_CAUSE_INVALID_REQUEST, row.field)
    assert gw.ValidationType.Name(error.validation_type) == f"VALIDATION_TYPE_{row.validation}"
    assert error_details_pb2.RetryInfo not in failure.details
    if row.code == grpc.StatusCode.INVALID_ARGUMENT:
        bad = failure.details[error_details_pb2.BadRequest]
        assert isinstance(bad, error_details_pb2.BadRequest)
        assert [v.field for v in bad.field_violations] == [row.field]
    assert PAN not in str(failure)


async def test_a_refused_payment_moves_nothing(face: Face) -> None:
    """After each refusal the order is as it was: a stale session made no payment, and a refund
    of too much left the captured order untouched."""
    await refused(face.payments, await _pay_a_stale_session(face), DEADLINE)
    failure = await refused(face.payments, retrieve_order(), DEADLINE)
    assert (failure.code, failure.info.reason) == (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    await refused(face.payments, await _refund_too_much(face), DEADLINE)
    order = await call(face, retrieve_order())
    assert order.status == pay.ORDER_STATUS_CAPTURED
    assert [t.transaction.id for t in order.transactions] == ["pay-1"]
    assert totals(order) == dec("25.50", "25.50", "0")


# --- exactly once -------------------------------------------------------------------------------


async def test_a_lost_payment_is_reconciled_replayed_and_never_repeated(face: Face) -> None:
    """TEST-ANSWER-LOST: the gateway pays and loses the answer; the adapter finds the payment
    (``reconciled``); a retry with the same ids gets it again (``replayed``, the same receipt);
    the order holds one payment; the same ids with another amount are TRANSACTION_ID_REUSED."""
    session = await card_session(face)
    request = pay.PayRequest(**paying(session, reference=ANSWER_LOST))
    first, outcome = await with_outcome(face.payments, request, DEADLINE)
    assert outcome == "reconciled"
    assert (first.result, first.transaction.type) == (
        pb.RESULT_SUCCESS,
        pay.TRANSACTION_TYPE_PAYMENT,
    )
    assert first.order.status == pay.ORDER_STATUS_CAPTURED
    assert first.transaction.receipt

    again, outcome = await with_outcome(face.payments, request, DEADLINE)
    assert outcome == "replayed"
    assert again.transaction == first.transaction
    assert again.transaction.receipt == first.transaction.receipt

    order = await call(face, retrieve_order())
    assert [t.transaction.id for t in order.transactions] == ["pay-1"]
    assert totals(order) == dec("25.50", "25.50", "0")

    reused = pay.PayRequest(**paying(session, amount="30.00", reference=ANSWER_LOST))
    failure = await refused(face.payments, reused, DEADLINE)
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "TRANSACTION_ID_REUSED",
    )
    metadata = failure.info.metadata
    assert metadata["existingType"] == "PAYMENT"
    assert Decimal(metadata["existingAmount"]) == Decimal("25.50")
    assert metadata["existingCurrency"] == "USD"
    order = await call(face, retrieve_order())
    assert [t.transaction.id for t in order.transactions] == ["pay-1"]
    assert totals(order) == dec("25.50", "25.50", "0")


async def test_a_lost_capture_is_reconciled(face: Face) -> None:
    """On an order whose answers are lost, the authorization and then the capture are both found
    again (``reconciled``), and the order holds exactly the two."""
    session = await card_session(face)
    authorized, outcome = await with_outcome(
        face.payments,
        pay.AuthorizeRequest(**paying(session, transaction_id="auth-1", reference=ANSWER_LOST)),
        DEADLINE,
    )
    assert outcome == "reconciled"
    assert authorized.order.status == pay.ORDER_STATUS_AUTHORIZED
    captured, outcome = await with_outcome(face.payments, capture("cap-1", "25.50"), DEADLINE)
    assert outcome == "reconciled"
    assert (captured.result, captured.transaction.type) == (
        pb.RESULT_SUCCESS,
        pay.TRANSACTION_TYPE_CAPTURE,
    )
    assert captured.order.status == pay.ORDER_STATUS_CAPTURED
    assert totals(captured.order) == dec("25.50", "25.50", "0")
    order = await call(face, retrieve_order())
    assert [(t.transaction.id, t.transaction.type) for t in order.transactions] == [
        ("auth-1", pay.TRANSACTION_TYPE_AUTHORIZATION),
        ("cap-1", pay.TRANSACTION_TYPE_CAPTURE),
    ]


async def test_twenty_concurrent_identical_payments_make_one() -> None:
    """Over HTTP, 20 identical Pays at once: all OK with the one payment (the same receipt), one
    the plain answer and 19 ``replayed``; the order holds one transaction."""
    async with AsyncExitStack() as stack:
        face = await open_face(stack, "http")
        request = pay.PayRequest(**paying(await card_session(face)))
        answers = await asyncio.gather(
            *(with_outcome(face.payments, request, DEADLINE) for _ in range(20))
        )
        outcomes = sorted((outcome or "") for _, outcome in answers)
        assert outcomes == [""] + ["replayed"] * 19
        assert {answer.transaction.receipt for answer, _ in answers} == {
            answers[0][0].transaction.receipt
        }
        assert all(answer.result == pb.RESULT_SUCCESS for answer, _ in answers)
        order = await call(face, retrieve_order())
        assert [t.transaction.id for t in order.transactions] == ["pay-1"]
        assert totals(order) == dec("25.50", "25.50", "0")


# --- merchants ----------------------------------------------------------------------------------


async def test_another_merchant_cannot_see_the_order(face: Face) -> None:
    """The second merchant, configured in gateway and adapter alike, pays an order of its own,
    and the first merchant's order is unknown to it: NOT_FOUND ORDER_NOT_FOUND."""
    await call(face, pay.PayRequest(**paying(await card_session(face), order_id="shop-order")))
    theirs = await card_session(face, "own-order", merchant=OTHER_MERCHANT)
    own = await call(
        face, pay.PayRequest(**paying(theirs, order_id="own-order", merchant=OTHER_MERCHANT))
    )
    assert (own.merchant, own.result) == (OTHER_MERCHANT, pb.RESULT_SUCCESS)

    for request in (
        retrieve_order("shop-order", merchant=OTHER_MERCHANT),
        retrieve_transaction("pay-1", "shop-order", merchant=OTHER_MERCHANT),
    ):
        failure = await refused(face.payments, request, DEADLINE)
        assert (failure.code, failure.info.reason) == (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
        assert failure.info.metadata["field"] == "order.id"
    mine = await call(face, retrieve_order("shop-order"))
    assert [t.transaction.id for t in mine.transactions] == ["pay-1"]
