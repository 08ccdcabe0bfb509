"""UpdateSession and RetrieveSession in the adapter: validation before any upstream call, the NVP
fields sent, the typed answers, and the two error rows of CONTRACT §8, through a real grpc.aio
client and a scripted gateway on loopback."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from hypothesis import example, given
from hypothesis import strategies as st

from adapter._proto.mpgs.gateway.v1 import gateway_error_pb2 as gw
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.core import nvp
from adapter.core.errors import RequestInvalid
from adapter.core.schema import OPERATIONS, REQUIRED, TOGETHER, VALUE_RULES
from tests.conftest import MERCHANT, ScriptedUpstream, StartAdapter, fail, make_settings

SESSION_ID = "SESSION0002378433591N3262498M20"
VERSION = "030f712301"
UPDATE = OPERATIONS["UpdateSession"]
RETRIEVE = OPERATIONS["RetrieveSession"]
STORED = {
    "merchant": MERCHANT,
    "result": "SUCCESS",
    "correlationId": "c-7",
    "session.id": SESSION_ID,
    "session.updateStatus": "SUCCESS",
    "session.version": "a1b2c3d4e5",
    "session.authenticationLimit": "5",
    "order.amount": "10.50",
    "order.currency": "AUD",
    "order.id": "order-17",
    "billing.address.city": "Sydney",
}


def update(**fields: Any) -> pb.UpdateSessionRequest:
    session = pb.SessionRevision(id=fields.pop("session_id", SESSION_ID))
    if "version" in fields:
        session.version = fields.pop("version")
    order = pb.Order(**fields.pop("order", {"amount": "10.50", "currency": "AUD"}))
    return pb.UpdateSessionRequest(merchant=MERCHANT, session=session, order=order, **fields)


# --- validation, before any upstream call ------------------------------------------------------

INVALID_UPDATES = {
    "no session id": (update(session_id=""), "session.id"),
    "a 30-character id": (update(session_id="S" * 30), "session.id"),
    "a 36-character id": (update(session_id="S" * 36), "session.id"),
    "an id with a dash": (update(session_id="SESSION0002-78433591N3262498M20"), "session.id"),
    "an upper-case version": (update(version="030F712301"), "session.version"),
    "a 9-character version": (update(version="030f71230"), "session.version"),
    "a negative amount": (update(order={"amount": "-1", "currency": "AUD"}), "order.amount"),
    "an exponent": (update(order={"amount": "1e3", "currency": "AUD"}), "order.amount"),
    "4 decimals": (update(order={"amount": "1.2345", "currency": "AUD"}), "order.amount"),
    "15 digits": (update(order={"amount": "1" * 15, "currency": "AUD"}), "order.amount"),
    "a lower-case currency": (update(order={"amount": "1", "currency": "aud"}), "order.currency"),
    "an amount alone": (update(order={"amount": "1"}), "order.currency"),
    "a currency alone": (update(order={"currency": "AUD"}), "order.amount"),
    "a 41-character order id": (update(order={"id": "x" * 41}), "order.id"),
    "a 41-character reference": (update(order={"reference": "x" * 41}), "order.reference"),
    "a 128-character description": (update(order={"description": "x" * 128}), "order.description"),
    "no merchant": (pb.UpdateSessionRequest(session=pb.SessionRevision(id=SESSION_ID)), "merchant"),
}


@pytest.mark.parametrize(("request_", "field"), INVALID_UPDATES.values(), ids=INVALID_UPDATES)
async def test_invalid_updates_never_leave(
    request_: pb.UpdateSessionRequest,
    field: str,
    scripted_upstream: ScriptedUpstream,
    start_adapter: StartAdapter,
) -> None:
    """INVALID_ARGUMENT, a BadRequest naming the proto field, and no request to the gateway."""
    stub = await start_adapter(make_settings(scripted_upstream.url))
    failure = await fail(stub, request_)
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    bad_request = failure.details[error_details_pb2.BadRequest]
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == [field]
    assert scripted_upstream.requests == []


async def test_retrieve_needs_a_session_id(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    stub = await start_adapter(make_settings(scripted_upstream.url))
    failure = await fail(stub, pb.RetrieveSessionRequest(merchant=MERCHANT))
    bad_request = failure.details[error_details_pb2.BadRequest]
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("session.id", "required: 31 to 35 characters of 0-9 A-Z a-z")
    ]
    assert scripted_upstream.requests == []


# --- amounts: exactly the gateway's form -------------------------------------------------------


def gateway_takes(amount: str) -> bool:
    """The gateway's form of an amount, written apart from the adapter's rule: ASCII digits and
    at most one point, at most 14 digits before it and 1 to 3 after, nothing else."""
    if not amount or not amount.isascii() or amount.strip() != amount:
        return False
    whole, point, fraction = amount.partition(".")
    if not whole.isdigit() or len(whole) > 14:
        return False
    if point and (not fraction.isdigit() or len(fraction) > 3):
        return False
    try:
        Decimal(amount)
    except InvalidOperation:  # pragma: no cover (the checks above leave only decimals)
        return False
    return True


def adapter_sends(amount: str) -> bool:
    """Whether the adapter sends the amount; a refusal must name ``order.amount``."""
    try:
        UPDATE.encode_request(update(order={"amount": amount, "currency": "AUD"}))
    except RequestInvalid as exc:
        refused_field = exc.field
    else:
        return True
    assert refused_field == "order.amount"
    return False


@given(
    st.one_of(st.text(max_size=25), st.from_regex(r"[0-9]{0,16}(\.[0-9]{0,4})?", fullmatch=True))
)
@example("0")
@example("10.500")
@example("99999999999999.999")
@example("1.")
@example(".5")
@example("+1")
@example("1_000")
@example("١٢")  # Arabic-Indic digits: str.isdigit() says yes, the gateway says no
def test_an_amount_is_sent_exactly_when_the_gateway_takes_its_form(amount: str) -> None:
    assert adapter_sends(amount) == gateway_takes(amount)


# --- what goes upstream, what comes back -------------------------------------------------------


async def test_update_sends_the_contracts_fields_and_maps_the_answer(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """The amount goes as the caller's exact string; the answer is typed, the rest in extras."""
    scripted_upstream.reply(nvp.encode(STORED))
    stub = await start_adapter(make_settings(scripted_upstream.url))
    request = update(
        version=VERSION,
        correlation_id="c-7",
        order={"amount": "10.50", "currency": "AUD", "id": "order-17"},
        extra_fields={"billing.address.city": "Sydney"},
    )
    response = await stub.UpdateSession(request, timeout=5)

    [sent] = scripted_upstream.requests
    assert {k: v for k, v in sent.items() if k not in {"apiUsername", "apiPassword"}} == {
        "apiOperation": "UPDATE_SESSION",
        "merchant": MERCHANT,
        "correlationId": "c-7",
        "session.id": SESSION_ID,
        "session.version": VERSION,
        "order.amount": "10.50",
        "order.currency": "AUD",
        "order.id": "order-17",
        "billing.address.city": "Sydney",
    }
    assert response == pb.UpdateSessionResponse(
        correlation_id="c-7",
        merchant=MERCHANT,
        result=pb.RESULT_SUCCESS,
        session=pb.Session(
            id=SESSION_ID,
            update_status=pb.SESSION_UPDATE_STATUS_SUCCESS,
            version="a1b2c3d4e5",
            authentication_limit="5",
        ),
        order=pb.Order(amount="10.50", currency="AUD", id="order-17"),
        extra_fields={"billing.address.city": "Sydney"},
    )


async def test_retrieve_sends_the_id_alone_and_maps_the_answer(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    scripted_upstream.reply(nvp.encode(STORED))
    stub = await start_adapter(make_settings(scripted_upstream.url))
    response = await stub.RetrieveSession(
        pb.RetrieveSessionRequest(merchant=MERCHANT, session=pb.SessionRef(id=SESSION_ID)),
        timeout=5,
    )
    [sent] = scripted_upstream.requests
    assert {k: v for k, v in sent.items() if k not in {"apiUsername", "apiPassword"}} == {
        "apiOperation": "RETRIEVE_SESSION",
        "merchant": MERCHANT,
        "session.id": SESSION_ID,
    }
    assert response.order == pb.Order(amount="10.50", currency="AUD", id="order-17")
    assert response.session.version == "a1b2c3d4e5"
    assert dict(response.extra_fields) == {"billing.address.city": "Sydney"}


# --- the two error rows of §8 ------------------------------------------------------------------

SESSION_ROWS = {
    "unknown session": (
        ("session.id", "Session not found or expired"),
        (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"),
    ),
    "stale version": (
        ("session.version", "Value does not match the current session version"),
        (grpc.StatusCode.ABORTED, "SESSION_VERSION_MISMATCH"),
    ),
}


@pytest.mark.parametrize(("answer", "expected"), SESSION_ROWS.values(), ids=SESSION_ROWS)
async def test_session_error_rows(
    answer: tuple[str, str],
    expected: tuple[grpc.StatusCode, str],
    scripted_upstream: ScriptedUpstream,
    start_adapter: StartAdapter,
) -> None:
    """The code and reason of §8, GatewayError and §4's metadata kept, and one attempt only."""
    field, explanation = answer
    scripted_upstream.reply(
        nvp.encode(
            {
                "result": "ERROR",
                "error.cause": "INVALID_REQUEST",
                "error.field": field,
                "error.explanation": explanation,
                "error.validationType": "INVALID",
            }
        )
    )
    stub = await start_adapter(make_settings(scripted_upstream.url))
    failure = await fail(stub, update(version=VERSION))
    assert (failure.code, failure.info.reason) == expected
    assert dict(failure.info.metadata) == {
        "cause": "INVALID_REQUEST",
        "field": field,
        "validationType": "INVALID",
        "attempts": "1",
    }
    gateway_error = failure.details[gw.GatewayError]
    assert isinstance(gateway_error, gw.GatewayError)
    assert (gateway_error.field, gateway_error.explanation) == (field, explanation)
    assert error_details_pb2.RetryInfo not in failure.details
    assert error_details_pb2.BadRequest not in failure.details
    assert len(scripted_upstream.requests) == 1, "not retried"


def test_the_rules_name_no_field_the_proto_lacks() -> None:
    """Every validated NVP name is one some request of the service models."""
    modelled = set().union(*(op.request.names for op in OPERATIONS.values()))
    named = {*VALUE_RULES, *REQUIRED, *(name for pair in TOGETHER for name in pair)}
    assert named <= modelled, named - modelled
    assert all(re.fullmatch(r"[a-z][A-Za-z.]*", name) for name in named)
