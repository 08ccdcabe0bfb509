"""The embedded gateway's payments (contract §9) at the NVP level: each flow through
``EmbeddedGateway.handle`` and over real HTTP on loopback, the card's secrets in no answer."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.core import nvp
from adapter.core.errors import UpstreamConnectionLost
from adapter.embedded import AnswerLost, EmbeddedGateway, EmbeddedTransport, start_http_gateway
from adapter.embedded.cards import luhn_valid
from adapter.embedded.orders import minor_unit, parse_amount, render
from adapter.upstream.client import Reply
from tests.test_embedded import (
    ACCOUNTS,
    MERCHANT,
    OTHER,
    OTHER_PASSWORD,
    PASSWORD,
    VERSION,
    FakeClock,
    answered,
    field_error,
)

PAN = "5123450000000008"
VISA = "4508750015741019"
CVV = "947"  # in no other value the tests send or the gateway answers
MASKED = "512345xxxxxx0008"
NOW = datetime(2026, 12, 1, 12, 0, 0, 123000, tzinfo=UTC)
CREDENTIALS = {
    MERCHANT: {"apiUsername": f"merchant.{MERCHANT}", "apiPassword": PASSWORD},
    OTHER: {"apiUsername": f"merchant.{OTHER}", "apiPassword": OTHER_PASSWORD},
}
BUSY = {
    "error.cause": "SERVER_BUSY",
    "error.explanation": "The gateway is busy; try again later.",
    "result": "ERROR",
}
TRANSACTION_KEYS = {
    "merchant",
    "result",
    "response.gatewayCode",
    "response.gatewayRecommendation",
    "response.acquirerCode",
    "response.acquirerMessage",
    "order.id",
    "order.status",
    "order.amount",
    "order.currency",
    "order.totalAuthorizedAmount",
    "order.totalCapturedAmount",
    "order.totalRefundedAmount",
    "order.creationTime",
    "transaction.id",
    "transaction.type",
    "transaction.amount",
    "transaction.currency",
    "sourceOfFunds.type",
    "sourceOfFunds.provided.card.number",
    "sourceOfFunds.provided.card.brand",
    "sourceOfFunds.provided.card.expiry.month",
    "sourceOfFunds.provided.card.expiry.year",
    "timeOfRecord",
    "version",
    "gatewayEntryPoint",
}

Answer = tuple[int, dict[str, str]]


class Lost(Exception):
    """The face gave no answer: the gateway lost it on purpose."""


@dataclass
class Face:
    """One face of a gateway with the requests a merchant backend sends; every body it saw."""

    gateway: EmbeddedGateway
    send: Callable[[Mapping[str, str]], Awaitable[Answer]]
    bodies: list[bytes] = field(default_factory=list)

    async def call(self, operation: str, merchant: str = MERCHANT, **fields: str) -> Answer:
        """One request; dotted names come in as ``a__b``."""
        body = {"apiOperation": operation, **CREDENTIALS[merchant], "merchant": merchant}
        body.update({k.replace("__", "."): v for k, v in fields.items()})
        return await self.send(body)

    async def ok(self, operation: str, merchant: str = MERCHANT, **fields: str) -> dict[str, str]:
        """A call that must be answered 200 (a decline included)."""
        status, answer = await self.call(operation, merchant, **fields)
        assert status == 200, answer
        return answer

    async def card_session(
        self, number: str = PAN, month: str = "01", year: str = "39", merchant: str = MERCHANT
    ) -> str:
        """A new session holding a card, as the payer's browser leaves it; its id."""
        status, created = await self.call("CREATE_SESSION", merchant)
        assert status == 201, created
        session_id = created["session.id"]
        status, updated = await self.call(
            "UPDATE_SESSION",
            merchant,
            session__id=session_id,
            sourceOfFunds__provided__card__number=number,
            sourceOfFunds__provided__card__expiry__month=month,
            sourceOfFunds__provided__card__expiry__year=year,
            sourceOfFunds__provided__card__securityCode=CVV,
        )
        assert status == 201, updated
        return session_id

    async def pay(
        self,
        operation: str = "PAY",
        *,
        order: str = "order-1",
        transaction: str = "1",
        amount: str = "10.00",
        currency: str = "EUR",
        session: str | None = None,
        merchant: str = MERCHANT,
        **fields: str,
    ) -> Answer:
        session = session or await self.card_session(merchant=merchant)
        return await self.call(
            operation,
            merchant,
            order__id=order,
            transaction__id=transaction,
            order__amount=amount,
            order__currency=currency,
            session__id=session,
            **fields,
        )

    async def follow(
        self,
        operation: str,
        transaction: str,
        amount: str,
        *,
        currency: str = "EUR",
        order: str = "order-1",
        merchant: str = MERCHANT,
    ) -> Answer:
        """A CAPTURE or REFUND."""
        return await self.call(
            operation,
            merchant,
            order__id=order,
            transaction__id=transaction,
            transaction__amount=amount,
            transaction__currency=currency,
        )

    async def void(self, transaction: str, target: str, order: str = "order-1") -> Answer:
        return await self.call(
            "VOID",
            order__id=order,
            transaction__id=transaction,
            transaction__targetTransactionId=target,
        )

    async def order(self, order: str = "order-1", merchant: str = MERCHANT) -> dict[str, str]:
        return await self.ok("RETRIEVE_ORDER", merchant, order__id=order)


OpenFace = Callable[..., Awaitable[Face]]


def totals(answer: Mapping[str, str], prefix: str = "order.") -> tuple[str, str, str, str]:
    """An order's status and its three totals, from a transaction answer (or, with prefix "",
    from RETRIEVE_ORDER)."""
    return (
        answer[prefix + "status"],
        answer[prefix + "totalAuthorizedAmount"],
        answer[prefix + "totalCapturedAmount"],
        answer[prefix + "totalRefundedAmount"],
    )


def assert_no_card_secret(data: str | bytes) -> None:
    """Neither test PAN nor the security code's field value shows, raw or in a field."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for number in (PAN, VISA):
        assert number not in text
    assert f"securityCode={CVV}" not in text
    assert f"'{CVV}'" not in text


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["in-process", "http"])
async def open_face(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[OpenFace]:
    """Opens a gateway with the given options behind one of its faces; afterwards, no body any
    face answered holds the card's number or security code."""
    cleanups: list[Callable[[], Awaitable[None]]] = []
    faces: list[Face] = []

    async def open_(**options: Any) -> Face:
        gateway = EmbeddedGateway(ACCOUNTS, clock=clock, wall_clock=NOW.timestamp, **options)
        if request.param == "in-process":

            async def in_process(fields: Mapping[str, str]) -> Answer:
                answer = gateway.handle(VERSION, nvp.encode(fields))
                if isinstance(answer, AnswerLost):
                    raise Lost
                made.bodies.append(answer.body)
                return answer.status, nvp.decode(answer.body)

            made = Face(gateway, in_process)
        else:
            runner, port = await start_http_gateway(gateway, "127.0.0.1", 0)
            client = aiohttp.ClientSession()
            cleanups.extend([runner.cleanup, client.close])

            async def over_http(fields: Mapping[str, str]) -> Answer:
                try:
                    async with client.post(
                        f"http://127.0.0.1:{port}/api/nvp/version/{VERSION}",
                        data=nvp.encode(fields),
                        headers={"Content-Type": nvp.CONTENT_TYPE},
                    ) as response:
                        body = await response.read()
                except aiohttp.ServerDisconnectedError:
                    raise Lost from None
                made.bodies.append(body)
                return response.status, nvp.decode(body)

            made = Face(gateway, over_http)
        faces.append(made)
        return made

    yield open_
    for cleanup in reversed(cleanups):
        await cleanup()
    for face in faces:
        for body in face.bodies:
            assert_no_card_secret(body)


@pytest.fixture
async def face(open_face: OpenFace) -> Face:
    return await open_face()


# --- authorize, capture, pay, refund -------------------------------------------------------------


async def test_authorize_then_capture_in_parts(face: Face) -> None:
    """AUTHORIZE approves and holds the amount; a partial CAPTURE is PARTIALLY_CAPTURED, the
    rest CAPTURED; every answer carries the order as the transaction left it."""
    status, authorized = await face.pay("AUTHORIZE", amount="10.5")
    assert status == 200
    assert authorized["result"] == "SUCCESS"
    assert authorized["transaction.type"] == "AUTHORIZATION"
    assert authorized["transaction.amount"] == "10.50"
    assert totals(authorized) == ("AUTHORIZED", "10.50", "0.00", "0.00")
    _, part = await face.follow("CAPTURE", "2", "4")
    assert (part["transaction.type"], part["transaction.amount"]) == ("CAPTURE", "4.00")
    assert totals(part) == ("PARTIALLY_CAPTURED", "10.50", "4.00", "0.00")
    _, rest = await face.follow("CAPTURE", "3", "6.50")
    assert totals(rest) == ("CAPTURED", "10.50", "10.50", "0.00")


async def test_a_capture_beyond_what_is_authorized_is_refused(face: Face) -> None:
    """More than is left to capture is INVALID_REQUEST naming transaction.amount; nothing moves."""
    await face.pay("AUTHORIZE", amount="10.00")
    await face.follow("CAPTURE", "2", "6")
    before = await face.order()
    assert await face.follow("CAPTURE", "3", "4.01") == (
        400,
        field_error(
            "transaction.amount",
            "INVALID",
            "Value '4.01' is invalid. It exceeds the 4.00 left to capture.",
        ),
    )
    assert await face.order() == before


async def test_pay_then_refund_in_parts_and_no_more(face: Face) -> None:
    """PAY is CAPTURED at once; refunds go PARTIALLY_REFUNDED then REFUNDED; one more cent is
    refused naming transaction.amount, and the order stays as it was."""
    _, paid = await face.pay(amount="25.00")
    assert (paid["transaction.type"], paid["response.gatewayCode"]) == ("PAYMENT", "APPROVED")
    assert totals(paid) == ("CAPTURED", "25.00", "25.00", "0.00")
    _, part = await face.follow("REFUND", "2", "5")
    assert part["transaction.type"] == "REFUND"
    assert totals(part) == ("PARTIALLY_REFUNDED", "25.00", "25.00", "5.00")
    _, rest = await face.follow("REFUND", "3", "20.00")
    assert totals(rest) == ("REFUNDED", "25.00", "25.00", "25.00")
    before = await face.order()
    status, refused = await face.follow("REFUND", "4", "0.01")
    assert (status, refused["error.field"]) == (400, "transaction.amount")
    assert await face.order() == before


async def test_a_refund_of_an_authorization_alone_is_refused(face: Face) -> None:
    """Nothing is captured after AUTHORIZE, so nothing can be refunded."""
    await face.pay("AUTHORIZE")
    status, refused = await face.follow("REFUND", "2", "1.00")
    assert (status, refused["error.field"]) == (400, "transaction.amount")


async def test_a_capture_in_another_currency_is_refused(face: Face) -> None:
    """CAPTURE and REFUND are in the order's currency, or INVALID naming transaction.currency."""
    await face.pay("AUTHORIZE", currency="EUR")
    assert await face.follow("CAPTURE", "2", "1.00", currency="USD") == (
        400,
        field_error(
            "transaction.currency",
            "INVALID",
            "Value 'USD' is invalid. The order's currency is EUR.",
        ),
    )


# --- voids ---------------------------------------------------------------------------------------

VOIDS = {
    # steps before the void, the transaction voided, the void's type, the order afterwards
    "an authorization": (
        [("AUTHORIZE", "10.00")],
        "1",
        "VOID_AUTHORIZATION",
        ("CANCELLED", "0.00", "0.00", "0.00"),
    ),
    "a capture": (
        [("AUTHORIZE", "10.00"), ("CAPTURE", "4.00")],
        "2",
        "VOID_CAPTURE",
        ("AUTHORIZED", "10.00", "0.00", "0.00"),
    ),
    "a payment": ([("PAY", "10.00")], "1", "VOID_PAYMENT", ("CANCELLED", "0.00", "0.00", "0.00")),
    "a refund": (
        [("PAY", "10.00"), ("REFUND", "3.00")],
        "2",
        "VOID_REFUND",
        ("CAPTURED", "10.00", "10.00", "0.00"),
    ),
}


async def run_steps(face: Face, steps: list[tuple[str, str]]) -> None:
    """Transactions "1", "2", ... on order-1: the first a PAY or AUTHORIZE, then the others."""
    for n, (operation, amount) in enumerate(steps, start=1):
        if operation in ("PAY", "AUTHORIZE"):
            status, answer = await face.pay(operation, transaction=str(n), amount=amount)
        else:
            status, answer = await face.follow(operation, str(n), amount)
        assert (status, answer["result"]) == (200, "SUCCESS"), answer


@pytest.mark.parametrize(
    ("steps", "target", "kind", "after"), VOIDS.values(), ids=list(VOIDS.keys())
)
async def test_a_void_undoes_the_last_transaction(
    face: Face, steps: list[tuple[str, str]], target: str, kind: str, after: tuple[str, ...]
) -> None:
    """VOID of the order's last successful transaction has its VOID_* type, names its target,
    and leaves the totals as before it, the status recomputed."""
    await run_steps(face, steps)
    answer = await face.ok(
        "VOID", order__id="order-1", transaction__id="v", transaction__targetTransactionId=target
    )
    assert answer["transaction.type"] == kind
    assert answer["transaction.targetTransactionId"] == target
    assert answer["result"] == "SUCCESS"
    assert totals(answer) == after
    assert totals(await face.order(), "") == after


async def test_only_the_last_live_transaction_may_be_voided(face: Face) -> None:
    """Voiding one that is not the last, one already voided, or a declined one is INVALID_REQUEST
    with no field; an unknown target names transaction.targetTransactionId. Voids go back one
    by one."""
    await run_steps(face, [("AUTHORIZE", "10.00"), ("CAPTURE", "4.00"), ("REFUND", "1.00")])
    status, refused = await face.void("v1", "2")
    assert status == 400
    assert refused["error.cause"] == "INVALID_REQUEST"
    assert "error.field" not in refused
    assert (await face.void("v2", "3"))[0] == 200
    status, again = await face.void("v3", "3")
    assert (status, "error.field" in again) == (400, False)
    assert (await face.void("v4", "2"))[0] == 200
    assert (await face.void("v5", "1"))[0] == 200
    assert totals(await face.order(), "") == ("CANCELLED", "0.00", "0.00", "0.00")
    assert await face.void("v6", "nope") == (
        400,
        field_error(
            "transaction.targetTransactionId",
            "INVALID",
            "Value 'nope' is invalid. No such transaction on this order.",
        ),
    )
    session = await face.card_session(month="05", year="39")
    await face.pay(order="declined", session=session)
    status, refused = await face.void("v", "1", order="declined")
    assert (status, "error.field" in refused) == (400, False)


# --- the test cards ------------------------------------------------------------------------------

CARDS = {
    # expiry month, year -> gateway code, result, order status, recommendation, acquirer code
    "01/39": ("01", "39", ("APPROVED", "SUCCESS", "CAPTURED", "NO_ACTION", "00")),
    "1/39": ("1", "39", ("APPROVED", "SUCCESS", "CAPTURED", "NO_ACTION", "00")),
    "05/39": ("05", "39", ("DECLINED", "FAILURE", "FAILED", "RESUBMIT", "05")),
    "04/27": ("04", "27", ("EXPIRED_CARD", "FAILURE", "FAILED", "RESUBMIT", "54")),
    "08/28": ("08", "28", ("TIMED_OUT", "FAILURE", "FAILED", "DO_NOT_PROCEED", "68")),
    "01/37": ("01", "37", ("ACQUIRER_SYSTEM_ERROR", "FAILURE", "FAILED", "DO_NOT_PROCEED", "96")),
    "02/37": ("02", "37", ("UNSPECIFIED_FAILURE", "FAILURE", "FAILED", "DO_NOT_PROCEED", "06")),
    "05/37": ("5", "37", ("UNKNOWN", "UNKNOWN", "FAILED", "DO_NOT_PROCEED", "91")),
    "another future expiry": ("12", "30", ("APPROVED", "SUCCESS", "CAPTURED", "NO_ACTION", "00")),
    "this month": ("12", "26", ("APPROVED", "SUCCESS", "CAPTURED", "NO_ACTION", "00")),
    "last month": ("11", "26", ("EXPIRED_CARD", "FAILURE", "FAILED", "RESUBMIT", "54")),
}


@pytest.mark.parametrize(("month", "year", "expected"), CARDS.values(), ids=list(CARDS.keys()))
async def test_the_test_cards_expiry_gives_the_outcome(
    face: Face, month: str, year: str, expected: tuple[str, str, str, str, str]
) -> None:
    """Each MPGS test expiry gives its gateway code with HTTP 200; a past one is expired, any
    other future one approved. Only an approved one has an authorization code and receipt."""
    code, result, status, recommendation, acquirer = expected
    session = await face.card_session(month=month, year=year)
    http, answer = await face.pay(session=session)
    assert http == 200
    assert (answer["response.gatewayCode"], answer["result"]) == (code, result)
    assert answer["order.status"] == status
    assert answer["response.gatewayRecommendation"].startswith(recommendation)
    assert answer["response.acquirerCode"] == acquirer
    assert answer["response.acquirerMessage"]
    approved = result == "SUCCESS"
    assert set(answer) == TRANSACTION_KEYS | (
        {"transaction.authorizationCode", "transaction.receipt"} if approved else set()
    )
    if approved:
        assert re.fullmatch(r"[0-9]{6}", answer["transaction.authorizationCode"])
        assert re.fullmatch(r"[0-9]{12}", answer["transaction.receipt"])
    else:
        assert totals(answer)[1:] == ("0.00", "0.00", "0.00")


async def test_a_decline_is_a_transaction_and_a_retry_may_follow(face: Face) -> None:
    """A declined PAY is recorded and retrievable, its pair used; the order is FAILED. A retry
    with a new transaction id (and another amount) pays, and the order takes the new amount;
    then no other PAY or AUTHORIZE is allowed on it."""
    declined = await face.card_session(month="05", year="39")
    _, first = await face.pay(session=declined, amount="12.00")
    assert first["response.gatewayCode"] == "DECLINED"
    retrieved = await face.ok("RETRIEVE_TRANSACTION", order__id="order-1", transaction__id="1")
    assert retrieved["response.gatewayCode"] == "DECLINED"
    assert retrieved["order.status"] == "FAILED"
    status, reused = await face.pay(session=declined)
    assert (status, reused["error.field"]) == (400, "transaction.id")
    _, second = await face.pay(transaction="2", amount="11.00")
    assert totals(second) == ("CAPTURED", "11.00", "11.00", "0.00")
    assert second["order.amount"] == "11.00"
    status, refused = await face.pay("AUTHORIZE", transaction="3")
    assert (status, refused["error.field"]) == (400, "order.id")


# --- the pair rule -------------------------------------------------------------------------------

REUSES = {
    "PAY": ("PAY", {}),
    "AUTHORIZE": ("AUTHORIZE", {}),
    "CAPTURE": ("CAPTURE", {"transaction__amount": "1.00", "transaction__currency": "EUR"}),
    "REFUND": ("REFUND", {"transaction__amount": "1.00", "transaction__currency": "EUR"}),
    "VOID": ("VOID", {"transaction__targetTransactionId": "2"}),
}


@pytest.mark.parametrize(("operation", "extra"), REUSES.values(), ids=list(REUSES.keys()))
async def test_a_pair_the_gateway_holds_is_refused_and_nothing_changes(
    face: Face, operation: str, extra: dict[str, str]
) -> None:
    """A money-moving request with an (order.id, transaction.id) pair already held is
    INVALID_REQUEST naming transaction.id, and the order is exactly as before."""
    await run_steps(face, [("AUTHORIZE", "10.00"), ("CAPTURE", "5.00")])
    before = await face.order()
    fields = dict(extra)
    if operation in ("PAY", "AUTHORIZE"):
        fields |= {
            "order__amount": "1.00",
            "order__currency": "EUR",
            "session__id": await face.card_session(),
        }
    status, refused = await face.call(operation, order__id="order-1", transaction__id="2", **fields)
    assert (status, refused) == (
        400,
        field_error(
            "transaction.id",
            "INVALID",
            "Value '2' is invalid. The order holds a transaction with this id.",
        ),
    )
    assert await face.order() == before


async def test_two_identical_concurrent_payments_make_one_transaction(
    open_face: OpenFace,
) -> None:
    """Two requests with one pair at once (over HTTP, on two connections): one is carried out,
    the other refused naming transaction.id; the order holds one transaction."""
    face = await open_face()
    session = await face.card_session()
    answers = await asyncio.gather(*(face.pay(session=session) for _ in range(2)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200, 400]
    refused = next(answer for status, answer in answers if status == 400)
    assert refused["error.field"] == "transaction.id"
    order = await face.order()
    assert "transaction[0].transaction.id" in order
    assert "transaction[1].transaction.id" not in order


# --- privacy and unknown ids ---------------------------------------------------------------------


async def test_another_merchants_order_is_unknown(face: Face) -> None:
    """An order is its merchant's: to another its id is unknown on every operation, and the
    other may use the same id for an order of its own."""
    await face.pay(amount="10.00")
    unknown = field_error("order.id", "INVALID", "Value 'order-1' is invalid. No such order.")
    assert await face.call("RETRIEVE_ORDER", OTHER, order__id="order-1") == (400, unknown)
    assert await face.call(
        "RETRIEVE_TRANSACTION", OTHER, order__id="order-1", transaction__id="1"
    ) == (400, unknown)
    assert await face.follow("REFUND", "2", "1.00", merchant=OTHER) == (400, unknown)
    status, own = await face.pay(amount="3.00", merchant=OTHER)
    assert (status, own["order.amount"]) == (200, "3.00")
    assert (await face.order())["amount"] == "10.00"


async def test_unknown_ids_name_their_field(face: Face) -> None:
    """No such order: order.id on CAPTURE, REFUND, VOID and the retrieves; an order without the
    transaction: transaction.id on RETRIEVE_TRANSACTION."""
    for operation, fields in (
        ("CAPTURE", {"transaction__amount": "1.00", "transaction__currency": "EUR"}),
        ("REFUND", {"transaction__amount": "1.00", "transaction__currency": "EUR"}),
        ("VOID", {"transaction__targetTransactionId": "1"}),
        ("RETRIEVE_TRANSACTION", {}),
    ):
        status, answer = await face.call(operation, order__id="none", transaction__id="1", **fields)
        assert (status, answer["error.field"]) == (400, "order.id"), operation
    await face.pay()
    assert await face.call("RETRIEVE_TRANSACTION", order__id="order-1", transaction__id="9") == (
        400,
        field_error(
            "transaction.id", "INVALID", "Value '9' is invalid. No such transaction on this order."
        ),
    )


async def test_a_payment_needs_a_session_with_a_card(face: Face) -> None:
    """PAY names session.id for an unknown session, session.version for a stale one, and the
    card's number (MISSING) for a session that holds no card."""
    status, unknown = await face.pay(session="SESSION0002" + "0" * 20)
    assert (status, unknown["error.field"]) == (400, "session.id")
    session = await face.card_session()
    status, stale = await face.pay(session=session, session__version="0123456789")
    assert (status, stale["error.field"], stale["error.validationType"]) == (
        400,
        "session.version",
        "INVALID",
    )
    _, created = await face.call("CREATE_SESSION")
    assert await face.pay(session=created["session.id"]) == (
        400,
        field_error(
            "sourceOfFunds.provided.card.number",
            "MISSING",
            "Missing parameter 'sourceOfFunds.provided.card.number'.",
        ),
    )
    assert face.gateway.order_count == 0


async def test_payments_take_session_fields_and_refuse_others(face: Face) -> None:
    """PAY takes any field a session may hold beside its own; CAPTURE takes only its own."""
    status, _ = await face.pay(customer__email="a@example.com", billing__address__city="Rome")
    assert status == 200
    status, refused = await face.call(
        "CAPTURE",
        order__id="order-1",
        transaction__id="2",
        transaction__amount="1.00",
        transaction__currency="EUR",
        customer__email="a@example.com",
    )
    assert (status, refused["error.field"], refused["error.validationType"]) == (
        400,
        "customer.email",
        "UNSUPPORTED",
    )


# --- bounds --------------------------------------------------------------------------------------


async def test_orders_are_bounded_with_fair_shares(open_face: OpenFace) -> None:
    """With room for 4 orders and 2 merchants, each may hold 2 (its own bound of 3 apart): a
    third is SERVER_BUSY (503) and is not made; the other merchant still has its 2."""
    face = await open_face(max_orders=4, max_orders_per_merchant=3)
    session = await face.card_session()
    for n in range(2):
        assert (await face.pay(order=f"o{n}", session=session))[0] == 200
    assert await face.pay(order="o2", session=session) == (503, BUSY)
    assert face.gateway.order_count_for(MERCHANT) == 2
    other = await face.card_session(merchant=OTHER)
    for n in range(2):
        assert (await face.pay(order=f"o{n}", session=other, merchant=OTHER))[0] == 200
    assert face.gateway.order_count == 4


async def test_transactions_per_order_are_bounded(open_face: OpenFace) -> None:
    """Past max_transactions_per_order a transaction is SERVER_BUSY, and nothing moves."""
    face = await open_face(max_transactions_per_order=2)
    await run_steps(face, [("AUTHORIZE", "10.00"), ("CAPTURE", "1.00")])
    assert await face.follow("CAPTURE", "3", "1.00") == (503, BUSY)
    assert (await face.order())["totalCapturedAmount"] == "1.00"


@pytest.mark.parametrize(
    "options",
    [
        {"max_orders": 0},
        {"max_orders": 4, "max_orders_per_merchant": 4},
        {"max_orders_per_merchant": 0},
        {"max_transactions_per_order": 0},
        {"max_orders": 1},  # two merchants, room for one order
    ],
)
def test_order_bounds_are_checked_at_construction(options: dict[str, Any]) -> None:
    """A bound that leaves no order, or lets one merchant fill the store, is a ValueError."""
    with pytest.raises(ValueError, match="max_"):
        EmbeddedGateway(ACCOUNTS, **options)


# --- cards in sessions ---------------------------------------------------------------------------

CARD_VALUES = {
    "number, Luhn": ("number", "5123450000000009"),
    "number, short": ("number", "51234500008"),
    "number, letters": ("number", "512345000000000a"),
    "security code": ("securityCode", "12"),
    "month": ("expiry.month", "13"),
    "year": ("expiry.year", "2039"),
}


@pytest.mark.parametrize(("name", "value"), CARD_VALUES.values(), ids=list(CARD_VALUES.keys()))
async def test_a_refused_card_value_is_never_quoted(face: Face, name: str, value: str) -> None:
    """A card value of the wrong form (a number failing Luhn) is INVALID_REQUEST on its field,
    and the explanation does not quote it; the session is marked FAILURE."""
    _, created = await face.call("CREATE_SESSION")
    field_name = f"sourceOfFunds.provided.card.{name}"
    status, answer = await face.call(
        "UPDATE_SESSION",
        session__id=created["session.id"],
        **{field_name.replace(".", "__"): value},
    )
    assert (status, answer) == (400, field_error(field_name, "INVALID", "Value is invalid."))
    assert all(value not in nvp.decode(body).values() for body in face.bodies)


async def test_the_card_is_masked_in_every_answer(face: Face) -> None:
    """Session, payment, capture, retrieves: the number shows masked (first 6, last 4), the
    security code as x's at most. (The fixture then searches every body for the number.)"""
    session = await face.card_session(number=VISA)
    _, shown = await face.call("RETRIEVE_SESSION", session__id=session)
    assert shown["sourceOfFunds.provided.card.number"] == "450875xxxxxx1019"
    assert shown["sourceOfFunds.provided.card.securityCode"] == "xxx"
    _, paid = await face.pay("AUTHORIZE", session=session)
    assert paid["sourceOfFunds.provided.card.number"] == "450875xxxxxx1019"
    assert paid["sourceOfFunds.provided.card.brand"] == "VISA"
    _, captured = await face.follow("CAPTURE", "2", "1.00")
    assert captured["sourceOfFunds.provided.card.number"] == "450875xxxxxx1019"
    order = await face.order()
    assert order["transaction[1].sourceOfFunds.provided.card.number"] == "450875xxxxxx1019"
    assert len(face.bodies) >= 6


async def test_no_repr_shows_the_card(face: Face) -> None:
    """The session holding the card, the gateway and a lost answer: no repr shows the number or
    the security code."""
    session = await face.card_session()
    stored = face.gateway.session(session)
    assert stored is not None
    assert stored.data["sourceOfFunds.provided.card.number"] == PAN  # kept for the payment
    for shown in (repr(stored), str(stored), repr(face.gateway)):
        assert_no_card_secret(shown)  # the code as a quoted value: a bare 947 may be in a version


def test_cards_rules() -> None:
    """Luhn on the test PANs, and brands by first digit."""
    assert luhn_valid(PAN)
    assert luhn_valid(VISA)
    assert not luhn_valid("5123450000000009")
    assert not luhn_valid("５１２３")  # noqa: RUF001 (full-width digits are not ASCII digits)


# --- answers -------------------------------------------------------------------------------------


async def test_retrieve_order_answers_the_order_and_each_transaction_indexed(face: Face) -> None:
    """RETRIEVE_ORDER: the order's fields unprefixed, and each transaction as transaction[n].*
    in creation order, each shaped as that transaction's own answer (its order as it is now)."""
    await run_steps(face, [("AUTHORIZE", "10.00"), ("CAPTURE", "4.00")])
    order = await face.order()
    assert {k: v for k, v in order.items() if not k.startswith("transaction[")} == {
        "merchant": MERCHANT,
        "result": "SUCCESS",
        "id": "order-1",
        "amount": "10.00",
        "currency": "EUR",
        "status": "PARTIALLY_CAPTURED",
        "totalAuthorizedAmount": "10.00",
        "totalCapturedAmount": "4.00",
        "totalRefundedAmount": "0.00",
        "creationTime": "2026-12-01T12:00:00.123Z",
    }
    for n, transaction_id in enumerate(["1", "2"]):
        prefix = f"transaction[{n}]."
        element = {k.removeprefix(prefix): v for k, v in order.items() if k.startswith(prefix)}
        retrieved = await face.ok(
            "RETRIEVE_TRANSACTION", order__id="order-1", transaction__id=transaction_id
        )
        assert element == retrieved
    assert not any(k.startswith("transaction[2].") for k in order)


async def test_a_transaction_answer_has_the_gateways_fields(face: Face) -> None:
    """The fields and formats MPGS gives: times in UTC with milliseconds, the API version, the
    entry point, references and the correlation id echoed."""
    _, answer = await face.pay(
        order__reference="ref-1", transaction__reference="tref", correlationId="c-1"
    )
    assert answer["timeOfRecord"] == "2026-12-01T12:00:00.123Z"
    assert answer["order.creationTime"] == "2026-12-01T12:00:00.123Z"
    assert answer["version"] == VERSION
    assert answer["gatewayEntryPoint"] == "WEB_SERVICES_API"
    assert answer["sourceOfFunds.type"] == "CARD"
    assert (answer["order.reference"], answer["transaction.reference"]) == ("ref-1", "tref")
    assert answer["correlationId"] == "c-1"
    assert answer["merchant"] == MERCHANT


AMOUNTS = {
    # currency, amount sent -> as answered, or None: refused naming the amount
    "JPY whole": ("JPY", "1000", "1000"),
    "JPY with decimals": ("JPY", "10.5", None),
    "BHD three decimals": ("BHD", "1.234", "1.234"),
    "BHD padded": ("BHD", "2", "2.000"),
    "USD three decimals": ("USD", "1.234", None),
    "USD padded": ("USD", "10", "10.00"),
    "zero": ("USD", "0.00", None),
    "a sign": ("USD", "-1", None),
    "an exponent": ("USD", "1e3", None),
}


@pytest.mark.parametrize(
    ("currency", "amount", "shown"), AMOUNTS.values(), ids=list(AMOUNTS.keys())
)
async def test_amounts_follow_the_currencys_minor_unit(
    face: Face, currency: str, amount: str, shown: str | None
) -> None:
    """An amount has no more decimals than ISO 4217 gives its currency, is above zero, and is
    answered with exactly those decimals."""
    status, answer = await face.pay(amount=amount, currency=currency)
    if shown is None:
        assert (status, answer["error.field"]) == (400, "order.amount")
    else:
        assert (status, answer["order.amount"], answer["transaction.amount"]) == (
            200,
            shown,
            shown,
        )


@pytest.mark.parametrize("currency", ["XAU", "XXX", "ZZZ", "eur"])
async def test_a_currency_with_no_minor_unit_is_invalid(face: Face, currency: str) -> None:
    """Gold, the test code, an unknown code or lower case: INVALID naming order.currency."""
    status, answer = await face.pay(currency=currency)
    assert (status, answer["error.field"]) == (400, "order.currency")


def test_minor_units_and_rendering() -> None:
    """The ISO 4217 table: JPY 0, USD 2, BHD 3, none for XAU; amounts rendered exactly."""
    assert [minor_unit(c) for c in ("JPY", "USD", "BHD", "XAU")] == [0, 2, 3, None]
    assert parse_amount("0.1", "JPY") is None
    assert render(Decimal("0.1") + Decimal("0.2"), "USD") == "0.30"


# --- the lost answer -----------------------------------------------------------------------------


async def test_a_lost_answer_is_a_committed_transaction(face: Face) -> None:
    """With order.reference TEST-ANSWER-LOST, PAY and the CAPTURE after it are carried out and
    their answers lost (in-process: no Reply; over HTTP: the connection closes with nothing);
    retrieving the pair finds each transaction."""
    with pytest.raises(Lost):
        await face.pay("AUTHORIZE", order__reference="TEST-ANSWER-LOST")
    retrieved = await face.ok("RETRIEVE_TRANSACTION", order__id="order-1", transaction__id="1")
    assert (retrieved["result"], retrieved["order.status"]) == ("SUCCESS", "AUTHORIZED")
    with pytest.raises(Lost):
        await face.follow("CAPTURE", "2", "10.00")
    assert (await face.order())["status"] == "CAPTURED"
    status, refused = await face.follow("CAPTURE", "2", "10.00")  # a refusal commits nothing
    assert (status, refused["error.field"]) == (400, "transaction.id")


async def test_the_transport_raises_connection_lost_for_a_lost_answer() -> None:
    """In-process, the upstream client's transport sees the error of a reset after sending, and
    the payment is committed."""
    gateway = EmbeddedGateway(ACCOUNTS, wall_clock=NOW.timestamp)
    transport = EmbeddedTransport(gateway, 100)
    face = Face(gateway, lambda fields: _via(transport, fields))
    session = await face.card_session()
    lost = {
        "apiOperation": "PAY",
        **CREDENTIALS[MERCHANT],
        "merchant": MERCHANT,
        "order.id": "o",
        "transaction.id": "t",
        "order.amount": "1.00",
        "order.currency": "EUR",
        "order.reference": "TEST-ANSWER-LOST",
        "session.id": session,
    }
    with pytest.raises(UpstreamConnectionLost):
        await transport.post(nvp.encode(lost), 5.0)
    retrieved = await face.ok("RETRIEVE_TRANSACTION", order__id="o", transaction__id="t")
    assert retrieved["transaction.type"] == "PAYMENT"


async def _via(transport: EmbeddedTransport, fields: Mapping[str, str]) -> Answer:
    reply = await transport.post(nvp.encode(fields), 5.0)
    return reply.status, nvp.decode(reply.body)


async def test_over_http_a_lost_answer_is_a_closed_connection_with_no_byte() -> None:
    """The HTTP face reads the whole request, commits, and closes: the client reads no byte."""
    gateway = EmbeddedGateway(ACCOUNTS, wall_clock=NOW.timestamp)
    runner, port = await start_http_gateway(gateway, "127.0.0.1", 0)
    try:
        face = Face(gateway, lambda fields: _in_process(gateway, fields))
        session = await face.card_session()
        body = nvp.encode(
            {
                "apiOperation": "PAY",
                **CREDENTIALS[MERCHANT],
                "merchant": MERCHANT,
                "order.id": "o",
                "transaction.id": "t",
                "order.amount": "1.00",
                "order.currency": "EUR",
                "order.reference": "TEST-ANSWER-LOST",
                "session.id": session,
            }
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /api/nvp/version/{VERSION} HTTP/1.1\r\nHost: gateway\r\n"
            f"Content-Type: {nvp.CONTENT_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
        writer.close()
        retrieved = await face.ok("RETRIEVE_TRANSACTION", order__id="o", transaction__id="t")
        assert retrieved["result"] == "SUCCESS"
    finally:
        await runner.cleanup()


async def _in_process(gateway: EmbeddedGateway, fields: Mapping[str, str]) -> Answer:
    reply = answered(gateway.handle(VERSION, nvp.encode(fields)))
    return reply.status, nvp.decode(reply.body)


def test_a_lost_answer_keeps_what_was_committed() -> None:
    """``handle`` gives ``AnswerLost`` holding the answer it did not deliver; its repr is short."""
    gateway = EmbeddedGateway(ACCOUNTS, wall_clock=NOW.timestamp)
    face = Face(gateway, lambda fields: _in_process(gateway, fields))
    session = asyncio.run(face.card_session())
    body = {
        "apiOperation": "AUTHORIZE",
        **CREDENTIALS[MERCHANT],
        "merchant": MERCHANT,
        "order.id": "o",
        "transaction.id": "t",
        "order.amount": "1.00",
        "order.currency": "EUR",
        "order.reference": "TEST-ANSWER-LOST",
        "session.id": session,
    }
    lost = gateway.handle(VERSION, nvp.encode(body))
    assert isinstance(lost, AnswerLost)
    assert isinstance(lost.committed, Reply)
    assert nvp.decode(lost.committed.body)["transaction.type"] == "AUTHORIZATION"
    assert repr(lost) == "AnswerLost(status=200)"


# --- logs ----------------------------------------------------------------------------------------


async def test_debug_logs_of_a_whole_flow_hold_no_card_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The HTTP face's DEBUG lines over session, card, payment, refund, a refusal and the
    retrieves: field names only, never the number or the security code."""
    caplog.set_level(logging.DEBUG)
    gateway = EmbeddedGateway(ACCOUNTS, wall_clock=NOW.timestamp)
    runner, port = await start_http_gateway(gateway, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as client:

            async def over_http(fields: Mapping[str, str]) -> Answer:
                async with client.post(
                    f"http://127.0.0.1:{port}/api/nvp/version/{VERSION}",
                    data=nvp.encode(fields),
                    headers={"Content-Type": nvp.CONTENT_TYPE},
                ) as response:
                    return response.status, nvp.decode(await response.read())

            face = Face(gateway, over_http)
            session = await face.card_session()
            await face.call(
                "UPDATE_SESSION",
                session__id=session,
                sourceOfFunds__provided__card__number=VISA[:-1],
            )
            await face.pay(session=session)
            await face.follow("REFUND", "2", "1.00")
            await face.order()
            await face.call("RETRIEVE_SESSION", session__id=session)
    finally:
        await runner.cleanup()
    debug = [record for record in caplog.records if record.name.startswith("adapter")]
    assert any(record.levelno == logging.DEBUG for record in debug)
    for record in caplog.records:
        assert_no_card_secret(record.getMessage())
        assert VISA[:-1] not in record.getMessage()
    assert_no_card_secret(caplog.text)


# --- the state machine, as a property ------------------------------------------------------------

STEP = st.one_of(
    st.tuples(st.sampled_from(["CAPTURE", "REFUND"]), st.integers(1, 1200)),
    st.tuples(st.just("VOID"), st.integers(0, 12)),
)


@settings(max_examples=60, deadline=None)
@given(authorize=st.booleans(), amount=st.integers(1, 2000), steps=st.lists(STEP, max_size=12))
def test_totals_stay_exact_and_ordered_whatever_the_sequence(
    authorize: bool, amount: int, steps: list[tuple[str, int]]
) -> None:
    """Any sequence of captures, refunds (in cents) and voids (of any earlier transaction):
    each is carried out exactly when a model of the order allows it, and afterwards the totals
    are exact sums, never negative, captured <= authorized, refunded <= captured."""
    gateway = EmbeddedGateway(ACCOUNTS, wall_clock=NOW.timestamp)
    face = Face(gateway, lambda fields: _in_process(gateway, fields))
    cents = Decimal("0.01")
    first = "AUTHORIZE" if authorize else "PAY"

    async def run() -> None:
        status, _ = await face.pay(first, transaction="t0", amount=str(amount * cents))
        assert status == 200
        live: list[tuple[str, str, int]] = [(first, "t0", amount)]  # (kind, id, cents) not voided
        made = ["t0"]
        authorized, captured, refunded = amount, 0 if authorize else amount, 0
        for n, (operation, value) in enumerate(steps, start=1):
            transaction = f"t{n}"
            if operation == "VOID":
                target = made[value % len(made)]
                allowed = bool(live) and live[-1][1] == target
                status, answer = await face.void(transaction, target)
                if allowed:
                    kind, _, cents_back = live.pop()
                    if kind in ("AUTHORIZE", "PAY"):
                        authorized -= cents_back
                    if kind in ("PAY", "CAPTURE"):
                        captured -= cents_back
                    if kind == "REFUND":
                        refunded -= cents_back
            else:
                left = authorized - captured if operation == "CAPTURE" else captured - refunded
                allowed = value <= left
                status, answer = await face.follow(operation, transaction, str(value * cents))
                if allowed:
                    live.append((operation, transaction, value))
                    if operation == "CAPTURE":
                        captured += value
                    else:
                        refunded += value
            assert status == (200 if allowed else 400), (operation, value, answer)
            made.append(transaction)
            order = await face.order()
            shown = [
                Decimal(order[name]) / cents
                for name in ("totalAuthorizedAmount", "totalCapturedAmount", "totalRefundedAmount")
            ]
            assert shown == [authorized, captured, refunded]
            assert 0 <= refunded <= captured <= authorized

    asyncio.run(run())
