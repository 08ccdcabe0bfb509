"""CONTRACT §9's validation of payment requests: refused before any upstream call, through gRPC.

Ids are 1 to 40 characters of ``0-9 a-z A-Z - _ .``; amounts are plain decimals above zero with
no more decimals than their currency's ISO 4217 minor unit (the oracle is the ``iso4217``
package itself, not the adapter's use of it); amount and currency come together; session id and
version as §8. A refused request is INVALID_ARGUMENT ``INVALID_REQUEST`` with one BadRequest
FieldViolation naming the proto field, no ``attempts``, and the scripted gateway received
nothing; an accepted one reaches the gateway once, its values exactly as the caller wrote them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from decimal import Decimal
from urllib.parse import urlencode

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from iso4217 import Currency

from adapter._proto.mpgs.gateway.v1 import payment_service_pb2 as pay
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from tests.conftest import MERCHANT, ScriptedUpstream, make_settings
from tests.payment_gateway import (
    PaymentAdapter,
    capture_request,
    pay_request,
    refund_request,
    refused,
    start_payment_adapter,
    void_request,
    with_outcome,
)

ANSWER = urlencode(
    {
        "merchant": MERCHANT,
        "result": "SUCCESS",
        "response.gatewayCode": "APPROVED",
        "order.id": "order-1",
        "transaction.id": "t-1",
        "transaction.type": "PAYMENT",
    }
)
PAYMENT_ID = re.compile(r"[0-9A-Za-z_.\-]{1,40}")
AMOUNT_FORM = re.compile(r"[0-9]{1,14}(\.[0-9]{1,3})?")  # §8: no sign, no exponent
SESSION_ID = re.compile(r"[0-9A-Za-z]{31,35}")
SESSION_VERSION = re.compile(r"[0-9a-z]{10}")
HYPOTHESIS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
"""One adapter serves every example of a test: it holds no state between calls, and each example
checks what reached the gateway during its own call only."""


@pytest.fixture
async def adapter(scripted_upstream: ScriptedUpstream) -> AsyncIterator[PaymentAdapter]:
    scripted_upstream.reply(ANSWER)
    async with AsyncExitStack() as stack:
        yield await start_payment_adapter(stack, make_settings(scripted_upstream.url))


def minor_unit(code: str) -> int | None:
    """ISO 4217's minor unit for ``code``, straight from the ``iso4217`` package."""
    try:
        exponent = Currency(code).exponent
    except ValueError:
        return None
    return exponent if isinstance(exponent, int) else None


def price_faults(amount: str, currency: str, amount_path: str, currency_path: str) -> set[str]:
    """The proto fields §9 refuses for this amount and currency (empty: the price is valid)."""
    faults: set[str] = set()
    unit = minor_unit(currency)
    if unit is None:
        faults.add(currency_path)
    if (
        not AMOUNT_FORM.fullmatch(amount)
        or Decimal(amount) == 0
        or (unit is not None and len(amount.partition(".")[2]) > unit)
    ):
        faults.add(amount_path)
    return faults


async def expect_refused(
    adapter: PaymentAdapter, upstream: ScriptedUpstream, request: Message, fields: set[str]
) -> None:
    """The request is refused naming one of ``fields``, and nothing reached the gateway."""
    before = len(upstream.requests)
    failure = await refused(adapter.stub, request)
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    assert "attempts" not in failure.info.metadata
    bad_request = failure.details[error_details_pb2.BadRequest]
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    [violation] = bad_request.field_violations
    assert violation.field in fields
    assert len(upstream.requests) == before


async def expect_sent(
    adapter: PaymentAdapter,
    upstream: ScriptedUpstream,
    request: Message,
    sent: Mapping[str, str | None],
) -> None:
    """The request is answered, and reached the gateway once with ``sent`` among its fields
    (None: absent)."""
    before = len(upstream.requests)
    await with_outcome(adapter.stub, request)
    assert len(upstream.requests) == before + 1
    fields = upstream.requests[-1]
    assert {name: fields.get(name) for name in sent} == sent


# --- amounts and currencies ---------------------------------------------------------------------

AMOUNTS = st.one_of(
    st.from_regex(r"[0-9]{1,15}(\.[0-9]{0,4})?", fullmatch=True),
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False).map(str),
    st.text(alphabet="0123456789.-+eE ,", max_size=8),
    st.text(max_size=6),
)
CURRENCIES = st.one_of(
    st.sampled_from([currency.code for currency in Currency]),
    st.from_regex(r"[A-Z]{3}", fullmatch=True),
    st.text(max_size=4),
)


@HYPOTHESIS
@given(amount=AMOUNTS, currency=CURRENCIES)
@example(amount="10", currency="JPY")
@example(amount="10.5", currency="JPY")
@example(amount="10.50", currency="USD")
@example(amount="10.005", currency="USD")
@example(amount="1.234", currency="BHD")
@example(amount="1.2345", currency="BHD")
@example(amount="1.234", currency="CLF")  # ISO's 4 decimals, within §8's 3
@example(amount="0", currency="USD")
@example(amount="0.00", currency="USD")
@example(amount="1", currency="ABC")
@example(amount="1", currency="XAU")  # gold: no minor unit
@example(amount="1", currency="usd")
@example(amount="1e3", currency="USD")
@example(amount="-1", currency="USD")
@example(amount="١٢", currency="USD")
@example(amount="", currency="USD")
@example(amount="10.00", currency="")
@example(amount="", currency="")
async def test_a_payments_price(
    amount: str, currency: str, adapter: PaymentAdapter, scripted_upstream: ScriptedUpstream
) -> None:
    """Pay: a valid amount and currency go out exactly as written; anything else is refused
    naming ``order.amount`` or ``order.currency`` (whichever is wrong), before any upstream
    call."""
    request = pay_request(amount=amount, currency=currency)
    faults = price_faults(amount, currency, "order.amount", "order.currency")
    if faults:
        await expect_refused(adapter, scripted_upstream, request, faults)
    else:
        sent = {"order.amount": amount, "order.currency": currency}
        await expect_sent(adapter, scripted_upstream, request, sent)


@HYPOTHESIS
@given(
    amount=AMOUNTS,
    currency=CURRENCIES,
    rpc=st.sampled_from(["Capture", "Refund"]),
)
@example(amount="100", currency="JPY", rpc="Capture")
@example(amount="1.5", currency="JPY", rpc="Refund")
@example(amount="0", currency="BHD", rpc="Capture")
async def test_a_capture_or_refund_price(
    amount: str,
    currency: str,
    rpc: str,
    adapter: PaymentAdapter,
    scripted_upstream: ScriptedUpstream,
) -> None:
    """Capture and Refund: the same rules on ``transaction.amount`` / ``transaction.currency``."""
    request = capture_request() if rpc == "Capture" else refund_request()
    request.transaction.amount, request.transaction.currency = amount, currency
    faults = price_faults(amount, currency, "transaction.amount", "transaction.currency")
    if faults:
        await expect_refused(adapter, scripted_upstream, request, faults)
    else:
        sent = {"transaction.amount": amount, "transaction.currency": currency}
        await expect_sent(adapter, scripted_upstream, request, sent)


# --- ids ----------------------------------------------------------------------------------------

IDS = st.one_of(
    st.from_regex(r"[0-9A-Za-z_.\-]{1,44}", fullmatch=True),
    st.text(max_size=42),
    st.text(alphabet="aZ9-_.~/ +é", min_size=1, max_size=41),
)


def with_id(where: str, value: str) -> Message:
    if where == "order.id":
        return pay_request(order_id=value)
    if where == "transaction.id":
        return pay_request(transaction_id=value)
    if where == "void transaction.id":
        return void_request(transaction_id=value)
    if where == "transaction.target_transaction_id":
        return void_request(target=value)
    if where == "capture order.id":
        return capture_request(order_id=value)
    assert where == "retrieve transaction.id"
    return pay.RetrieveTransactionRequest(
        merchant=MERCHANT, order=pay.OrderRef(id="o"), transaction=pay.TransactionRef(id=value)
    )


NVP_NAMES = {
    "order.id": "order.id",
    "transaction.id": "transaction.id",
    "void transaction.id": "transaction.id",
    "transaction.target_transaction_id": "transaction.targetTransactionId",
    "capture order.id": "order.id",
    "retrieve transaction.id": "transaction.id",
}


@HYPOTHESIS
@given(value=IDS, where=st.sampled_from(sorted(NVP_NAMES)))
@example(value="a" * 40, where="order.id")
@example(value="a" * 41, where="order.id")
@example(value="", where="transaction.id")
@example(value="pay-1_A.b", where="transaction.target_transaction_id")
@example(value="pay 1", where="transaction.target_transaction_id")
@example(value="pay/1", where="void transaction.id")
@example(value="ordér", where="capture order.id")
async def test_an_id(
    value: str, where: str, adapter: PaymentAdapter, scripted_upstream: ScriptedUpstream
) -> None:
    """Every order and transaction id: 1 to 40 of ``0-9 a-z A-Z - _ .`` goes out as written;
    anything else is refused naming the proto field."""
    request = with_id(where, value)
    field = where.rsplit(" ", 1)[-1]
    if PAYMENT_ID.fullmatch(value):
        await expect_sent(adapter, scripted_upstream, request, {NVP_NAMES[where]: value})
    else:
        await expect_refused(adapter, scripted_upstream, request, {field})


# --- sessions -----------------------------------------------------------------------------------


@HYPOTHESIS
@given(
    session_id=st.one_of(
        st.from_regex(r"[0-9A-Za-z]{29,37}", fullmatch=True), st.text(min_size=30, max_size=36)
    ),
    version=st.one_of(
        st.just(""), st.from_regex(r"[0-9a-zA-Z]{9,11}", fullmatch=True), st.text(max_size=11)
    ),
)
@example(session_id="SESSION0002378433591N3262498M20", version="030f712301")
@example(session_id="SESSION0002378433591N3262498M20", version="030F712301")
@example(session_id="S" * 30, version="")
@example(session_id="S" * 36, version="")
@example(session_id="SESSION0002-78433591N3262498M20", version="")
async def test_a_session(
    session_id: str, version: str, adapter: PaymentAdapter, scripted_upstream: ScriptedUpstream
) -> None:
    """Pay's session as §8: id 31 to 35 of ``0-9 A-Z a-z``, version empty or 10 of ``0-9 a-z``."""
    request = pay_request()
    request.session.CopyFrom(pb.SessionRevision(id=session_id, version=version))
    faults: set[str] = set()
    if not SESSION_ID.fullmatch(session_id):
        faults.add("session.id")
    if version and not SESSION_VERSION.fullmatch(version):
        faults.add("session.version")
    if faults:
        await expect_refused(adapter, scripted_upstream, request, faults)
    else:
        sent = {"session.id": session_id, "session.version": version or None}
        await expect_sent(adapter, scripted_upstream, request, sent)


# --- what must be there -------------------------------------------------------------------------


def without(request: Message, *paths: str) -> Message:
    """A copy of ``request`` with the fields at ``paths`` cleared."""
    copy = type(request)()
    copy.CopyFrom(request)
    for path in paths:
        *parents, name = path.split(".")
        target = copy
        for parent in parents:
            target = getattr(target, parent)
        target.ClearField(name)
    return copy


MISSING = {
    "pay, no order id": (without(pay_request(), "order.id"), {"order.id"}),
    "pay, no transaction id": (without(pay_request(), "transaction.id"), {"transaction.id"}),
    "pay, no session": (without(pay_request(), "session"), {"session.id"}),
    "pay, an amount alone": (without(pay_request(), "order.currency"), {"order.currency"}),
    "pay, a currency alone": (without(pay_request(), "order.amount"), {"order.amount"}),
    "pay, no price at all": (
        without(pay_request(), "order.amount", "order.currency"),
        {"order.amount", "order.currency"},
    ),
    "capture, no amount": (
        without(capture_request(), "transaction.amount"),
        {"transaction.amount"},
    ),
    "refund, no currency": (
        without(refund_request(), "transaction.currency"),
        {"transaction.currency"},
    ),
    "void, no target": (
        without(void_request(), "transaction.target_transaction_id"),
        {"transaction.target_transaction_id"},
    ),
    "void, no order": (without(void_request(), "order"), {"order.id"}),
    "retrieve transaction, no transaction id": (
        pay.RetrieveTransactionRequest(merchant=MERCHANT, order=pay.OrderRef(id="o")),
        {"transaction.id"},
    ),
    "retrieve order, no order id": (pay.RetrieveOrderRequest(merchant=MERCHANT), {"order.id"}),
    "pay, no merchant": (without(pay_request(), "merchant"), {"merchant"}),
}


@pytest.mark.parametrize(("request_", "fields"), MISSING.values(), ids=MISSING)
async def test_what_a_payment_request_must_hold(
    request_: Message,
    fields: set[str],
    adapter: PaymentAdapter,
    scripted_upstream: ScriptedUpstream,
) -> None:
    """Every id, the amount and the currency (both, or the request is refused), the session and
    the merchant are required; their absence is refused naming the proto field."""
    await expect_refused(adapter, scripted_upstream, request_, fields)


async def test_a_float_is_never_made_of_an_amount(
    adapter: PaymentAdapter, scripted_upstream: ScriptedUpstream
) -> None:
    """An amount a float would round (``0.1`` + ``0.2``) or respell (``1.10``) goes out as the
    caller's exact string."""
    for amount in ("0.30", "1.10", "12345678901234.99", "0.01"):
        await expect_sent(
            adapter, scripted_upstream, pay_request(amount=amount), {"order.amount": amount}
        )


@pytest.mark.parametrize(
    "key",
    [
        "sourceOfFunds.provided.card.number",
        "sourceOfFunds.provided.card.securityCode",
        "sourceOfFunds.provided.card.SECURITYCODE",
    ],
)
async def test_a_payment_carries_no_card_data(
    key: str, adapter: PaymentAdapter, scripted_upstream: ScriptedUpstream
) -> None:
    """The card comes from the session: a payment whose extra fields carry a card's number or
    security code is refused naming that key, and nothing reaches the gateway; another
    ``sourceOfFunds`` field (a token, the type) goes through as any extra field."""
    request = pay_request(extra_fields={key: "5123450000000008"})
    await expect_refused(adapter, scripted_upstream, request, {f"extra_fields[{key}]"})
    await expect_sent(
        adapter,
        scripted_upstream,
        pay_request(extra_fields={"sourceOfFunds.type": "CARD"}),
        {"sourceOfFunds.type": "CARD"},
    )
