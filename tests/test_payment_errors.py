"""CONTRACT §9's error rows and typed answers for the payment RPCs, through a real grpc.aio client
and a scripted gateway on loopback.

Each error row checks the gRPC code, ErrorInfo's reason and §4's metadata, the GatewayError, and
that the adapter asked the gateway once (NOT_FOUND, FAILED_PRECONDITION and ABORTED are the
caller's to act on, never retried or reconciled). The answers check that a decline, a pending and
an unknown result are OK with their typed outcome, that an enum value the proto lacks is
``_UNSPECIFIED`` with its raw text kept, that RetrieveOrder's ``transaction[n].*`` become its
repeated ``transactions``, and that the sample PAY answer loses nothing and changes no amount.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from adapter._proto.mpgs.gateway.v1 import gateway_error_pb2 as gw
from adapter._proto.mpgs.gateway.v1 import payment_service_pb2 as pay
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from tests.conftest import MERCHANT, ScriptedUpstream, make_settings
from tests.payment_gateway import (
    PaymentAdapter,
    authorize_request,
    capture_request,
    pay_request,
    refund_request,
    refused,
    start_payment_adapter,
    void_request,
    with_outcome,
)

SAMPLE = Path(__file__).parent / "data" / "pay-response.nvp"
"""A real PAY answer: a public MPGS sample's JSON flattened to NVP names (CONTRACT §9)."""
StartPayments = Callable[[ScriptedUpstream], Awaitable[PaymentAdapter]]


@pytest.fixture
async def start() -> AsyncIterator[StartPayments]:
    async with AsyncExitStack() as stack:

        async def run(upstream: ScriptedUpstream) -> PaymentAdapter:
            return await start_payment_adapter(stack, make_settings(upstream.url))

        yield run


def retrieve_transaction() -> pay.RetrieveTransactionRequest:
    return pay.RetrieveTransactionRequest(
        merchant=MERCHANT, order=pay.OrderRef(id="order-1"), transaction=pay.TransactionRef(id="t")
    )


def retrieve_order() -> pay.RetrieveOrderRequest:
    return pay.RetrieveOrderRequest(merchant=MERCHANT, order=pay.OrderRef(id="order-1"))


def invalid_request(field: str, validation_type: str = "INVALID") -> str:
    return urlencode(
        {
            "error.cause": "INVALID_REQUEST",
            "error.explanation": f"Value for {field} is invalid.",
            "error.field": field,
            "error.validationType": validation_type,
            "result": "ERROR",
        }
    )


@dataclass(frozen=True)
class Row:
    request: Message
    field: str
    code: grpc.StatusCode
    reason: str


ROWS = {
    "capture, no such order": Row(
        capture_request(), "order.id", grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND"
    ),
    "refund, no such order": Row(
        refund_request(), "order.id", grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND"
    ),
    "void, no such order": Row(
        void_request(), "order.id", grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND"
    ),
    "retrieve transaction, no such order": Row(
        retrieve_transaction(), "order.id", grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND"
    ),
    "retrieve order, no such order": Row(
        retrieve_order(), "order.id", grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND"
    ),
    "void, no such target": Row(
        void_request(),
        "transaction.targetTransactionId",
        grpc.StatusCode.NOT_FOUND,
        "TRANSACTION_NOT_FOUND",
    ),
    "retrieve transaction, no such transaction": Row(
        retrieve_transaction(),
        "transaction.id",
        grpc.StatusCode.NOT_FOUND,
        "TRANSACTION_NOT_FOUND",
    ),
    "capture more than is left": Row(
        capture_request(),
        "transaction.amount",
        grpc.StatusCode.FAILED_PRECONDITION,
        "AMOUNT_EXCEEDS_BALANCE",
    ),
    "refund more than is left": Row(
        refund_request(),
        "transaction.amount",
        grpc.StatusCode.FAILED_PRECONDITION,
        "AMOUNT_EXCEEDS_BALANCE",
    ),
    "pay, no card in the session": Row(
        pay_request(),
        "sourceOfFunds.provided.card.number",
        grpc.StatusCode.FAILED_PRECONDITION,
        "SESSION_INCOMPLETE",
    ),
    "authorize, no card in the session": Row(
        authorize_request(),
        "sourceOfFunds.type",
        grpc.StatusCode.FAILED_PRECONDITION,
        "SESSION_INCOMPLETE",
    ),
    "pay, the session changed": Row(
        pay_request(), "session.version", grpc.StatusCode.ABORTED, "SESSION_VERSION_MISMATCH"
    ),
    "authorize, the session changed": Row(
        authorize_request(),
        "session.version",
        grpc.StatusCode.ABORTED,
        "SESSION_VERSION_MISMATCH",
    ),
    "pay, no such session": Row(
        pay_request(), "session.id", grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    ),
    "authorize, no such session": Row(
        authorize_request(), "session.id", grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    ),
    "pay, the order id refused: the caller's field": Row(
        pay_request(), "order.id", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"
    ),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS)
async def test_payment_error_rows(
    row: Row, scripted_upstream: ScriptedUpstream, start: StartPayments
) -> None:
    """Each §9 row: its code and reason, the GatewayError verbatim, §4's metadata (cause, field,
    validationType, attempts), and one request to the gateway."""
    scripted_upstream.reply(invalid_request(row.field), 400)
    adapter = await start(scripted_upstream)
    failure = await refused(adapter.stub, row.request)
    assert (failure.code, failure.info.reason) == (row.code, row.reason)
    assert dict(failure.info.metadata) == {
        "cause": "INVALID_REQUEST",
        "field": row.field,
        "validationType": "INVALID",
        "attempts": "1",
    }
    error = failure.details[gw.GatewayError]
    assert isinstance(error, gw.GatewayError)
    assert (error.cause, error.field, error.validation_type) == (
        gw.ERROR_CAUSE_INVALID_REQUEST,
        row.field,
        gw.VALIDATION_TYPE_INVALID,
    )
    if not row.field.startswith("sourceOfFunds."):  # see test_a_card_never_comes_back
        assert error.explanation == f"Value for {row.field} is invalid."
    assert (error_details_pb2.RetryInfo in failure.details) is False
    assert len(scripted_upstream.requests) == 1


async def test_a_support_code_reaches_the_metadata(
    scripted_upstream: ScriptedUpstream, start: StartPayments
) -> None:
    """§4's metadata carries the gateway's supportCode on a payment error row too."""
    body = dict(parse_qsl(invalid_request("transaction.amount")))
    scripted_upstream.reply(urlencode({**body, "error.supportCode": "SC-9"}), 400)
    adapter = await start(scripted_upstream)
    failure = await refused(adapter.stub, capture_request())
    assert failure.info.reason == "AMOUNT_EXCEEDS_BALANCE"
    assert failure.info.metadata["supportCode"] == "SC-9"
    error = failure.details[gw.GatewayError]
    assert isinstance(error, gw.GatewayError)
    assert error.support_code == "SC-9"


async def test_a_card_never_comes_back(
    scripted_upstream: ScriptedUpstream, start: StartPayments
) -> None:
    """A refusal about a card field whose explanation quotes the card number is still
    SESSION_INCOMPLETE, and the number is nowhere in the status (CONTRACT §9: the PAN is a secret
    like a password)."""
    pan = "5123450000000008"
    body = dict(parse_qsl(invalid_request("sourceOfFunds.provided.card.number")))
    body["error.explanation"] = f"Value '{pan}' is invalid."
    scripted_upstream.reply(urlencode(body), 400)
    adapter = await start(scripted_upstream)
    failure = await refused(adapter.stub, pay_request())
    assert failure.info.reason == "SESSION_INCOMPLETE"
    assert pan not in failure.message
    assert all(pan not in str(detail) for detail in failure.details.values())


# --- answers ------------------------------------------------------------------------------------


def transaction_answer(**fields: str) -> str:
    return urlencode(
        {
            "merchant": MERCHANT,
            "result": "SUCCESS",
            "order.id": "order-1",
            "order.amount": "10.00",
            "order.currency": "USD",
            "order.status": "CAPTURED",
            "response.gatewayCode": "APPROVED",
            "transaction.id": "pay-1",
            "transaction.type": "PAYMENT",
            "transaction.amount": "10.00",
            "transaction.currency": "USD",
            **{name.replace("_", "."): value for name, value in fields.items()},
        }
    )


RESULTS = {
    "declined": ("FAILURE", "DECLINED", pb.RESULT_FAILURE, pay.GATEWAY_CODE_DECLINED),
    "expired card": ("FAILURE", "EXPIRED_CARD", pb.RESULT_FAILURE, pay.GATEWAY_CODE_EXPIRED_CARD),
    "pending": ("PENDING", "PENDING", pb.RESULT_PENDING, pay.GATEWAY_CODE_PENDING),
    "unknown": ("UNKNOWN", "UNKNOWN", pb.RESULT_UNKNOWN, pay.GATEWAY_CODE_UNKNOWN),
    "approved": ("SUCCESS", "APPROVED", pb.RESULT_SUCCESS, pay.GATEWAY_CODE_APPROVED),
}


@pytest.mark.parametrize("case", RESULTS.values(), ids=RESULTS)
async def test_a_transaction_answer_is_ok_whatever_its_outcome(
    case: tuple[str, str, int, int], scripted_upstream: ScriptedUpstream, start: StartPayments
) -> None:
    """A decline is an answer, not an error: OK with the result and the gateway code typed; so
    are PENDING and UNKNOWN."""
    result, code, typed_result, typed_code = case
    scripted_upstream.reply(transaction_answer(result=result, response_gatewayCode=code))
    adapter = await start(scripted_upstream)
    response, outcome = await with_outcome(adapter.stub, pay_request())
    assert (response.result, response.response.gateway_code) == (typed_result, typed_code)
    assert outcome is None
    assert "result" not in response.extra_fields
    assert "response.gatewayCode" not in response.extra_fields


async def test_unknown_enum_values_keep_their_text(
    scripted_upstream: ScriptedUpstream, start: StartPayments
) -> None:
    """Enum values the proto lacks: ``_UNSPECIFIED``, and the raw text in ``extra_fields``."""
    scripted_upstream.reply(
        transaction_answer(
            result="MAYBE",
            response_gatewayCode="APPROVED_BY_MOON",
            order_status="ON_HOLD",
            transaction_type="BARTER",
        )
    )
    adapter = await start(scripted_upstream)
    response, _ = await with_outcome(adapter.stub, pay_request())
    assert response.result == pb.RESULT_UNSPECIFIED
    assert response.response.gateway_code == pay.GATEWAY_CODE_UNSPECIFIED
    assert response.order.status == pay.ORDER_STATUS_UNSPECIFIED
    assert response.transaction.type == pay.TRANSACTION_TYPE_UNSPECIFIED
    assert dict(response.extra_fields) == {
        "result": "MAYBE",
        "response.gatewayCode": "APPROVED_BY_MOON",
        "order.status": "ON_HOLD",
        "transaction.type": "BARTER",
    }


async def test_retrieve_order_lists_its_transactions(
    scripted_upstream: ScriptedUpstream, start: StartPayments
) -> None:
    """RETRIEVE_ORDER's own fields are typed unprefixed; ``transaction[n].*`` become the repeated
    ``transactions`` in index order (10 after 9, not after 1); names none of them models stay in
    ``extra_fields`` under their full NVP name."""
    fields = {
        "merchant": MERCHANT,
        "result": "SUCCESS",
        "id": "order-1",
        "amount": "11",
        "currency": "USD",
        "status": "CAPTURED",
        "totalCapturedAmount": "11.00",
        "risk.response.rule[1].name": "MERCHANT_BIN_RANGE",
    }
    for n in range(11):
        fields |= {
            f"transaction[{n}].result": "SUCCESS",
            f"transaction[{n}].response.gatewayCode": "APPROVED",
            f"transaction[{n}].transaction.id": f"t-{n}",
            f"transaction[{n}].transaction.type": "PAYMENT",
            f"transaction[{n}].transaction.amount": "1",
            f"transaction[{n}].order.id": "order-1",
        }
    fields["transaction[3].risk.response.rule[1].name"] = "MERCHANT_3D_SECURE"
    fields["transaction[4].transaction.type"] = "BARTER"
    scripted_upstream.reply(urlencode(fields))
    adapter = await start(scripted_upstream)
    response, _ = await with_outcome(adapter.stub, retrieve_order())
    assert (response.id, response.amount, response.status) == (
        "order-1",
        "11",
        pay.ORDER_STATUS_CAPTURED,
    )
    assert response.total_captured_amount == "11.00"
    assert [t.transaction.id for t in response.transactions] == [f"t-{n}" for n in range(11)]
    assert {t.result for t in response.transactions} == {pb.RESULT_SUCCESS}
    assert response.transactions[0].response.gateway_code == pay.GATEWAY_CODE_APPROVED
    assert response.transactions[0].transaction.amount == "1"
    assert response.transactions[4].transaction.type == pay.TRANSACTION_TYPE_UNSPECIFIED
    assert dict(response.extra_fields) == {
        "risk.response.rule[1].name": "MERCHANT_BIN_RANGE",
        "transaction[3].risk.response.rule[1].name": "MERCHANT_3D_SECURE",
        "transaction[4].transaction.type": "BARTER",
    }


def typed_text(message: Message, name: str) -> str | None:
    """The text of the modelled field behind an NVP name, walking the proto by JSON names; None
    when the proto does not model the name. An enum reads as its value's name minus the enum's
    prefix, and an ``_UNSPECIFIED`` one as not holding the text."""
    target: Any = message
    parts = name.split(".")
    for depth, part in enumerate(parts):
        field = target.DESCRIPTOR.fields_by_camelcase_name.get(part)
        if field is None or field.name == "extra_fields":
            return None
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth == len(parts) - 1:
                return None
            target = getattr(target, field.name)
        elif depth != len(parts) - 1:
            return None
        elif field.type == FieldDescriptor.TYPE_ENUM:
            number = getattr(target, field.name)
            value = field.enum_type.values_by_number[number].name
            prefix = field.enum_type.values_by_number[0].name.removesuffix("UNSPECIFIED")
            return None if number == 0 else value.removeprefix(prefix)
        else:
            text = getattr(target, field.name)
            assert isinstance(text, str)
            return text
    return None


async def test_the_sample_pay_answer_loses_nothing(
    scripted_upstream: ScriptedUpstream, start: StartPayments
) -> None:
    """The real PAY answer of CONTRACT §9's sample: every field comes back either typed with its
    exact text or in ``extra_fields`` verbatim, never both, never dropped; ``order.amount=1``
    stays ``"1"``, the card number as the gateway masked it."""
    body = SAMPLE.read_text().strip()
    sample: Mapping[str, str] = dict(parse_qsl(body, keep_blank_values=True))
    scripted_upstream.reply(body)
    adapter = await start(scripted_upstream)
    response, _ = await with_outcome(adapter.stub, pay_request())
    for name, value in sample.items():
        typed = typed_text(response, name)
        if typed is None:
            assert response.extra_fields.get(name) == value, name
        else:
            assert typed == value, name
            assert name not in response.extra_fields, name
    assert set(response.extra_fields) <= set(sample)
    assert (response.order.amount, response.transaction.amount) == ("1", "1")
    assert response.order.total_authorized_amount == "1"
    assert response.source_of_funds.provided.card.number == "512345xxxxxx0008"
    assert response.extra_fields["risk.response.rule[1].name"] == "MERCHANT_BIN_RANGE"
    assert response.response.gateway_code == pay.GATEWAY_CODE_APPROVED
    assert response.transaction.type == pay.TRANSACTION_TYPE_PAYMENT
    assert response.order.status == pay.ORDER_STATUS_CAPTURED
