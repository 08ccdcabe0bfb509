"""NVP names derived from the proto, and the request/response mapping built on them."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from adapter._proto.mpgs.gateway.v1 import gateway_error_pb2 as gw
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.core import nvp
from adapter.core.errors import RequestInvalid
from adapter.core.schema import (
    EXTRA_FIELDS,
    GATEWAY_ERROR,
    OPERATIONS,
    MessageSchema,
    check_extra_key,
)

CREATE = OPERATIONS["CreateSession"]


def test_names_come_from_the_proto() -> None:
    """JSON names, dotted nesting and the upper-snake RPC name give the contract's NVP names."""
    assert CREATE.api_operation == "CREATE_SESSION"
    assert CREATE.request.names == {"merchant", "correlationId"}
    assert CREATE.response.names == {
        "correlationId",
        "merchant",
        "result",
        "session.authenticationLimit",
        "session.id",
        "session.updateStatus",
        "session.version",
    }
    update, retrieve = OPERATIONS["UpdateSession"], OPERATIONS["RetrieveSession"]
    assert (update.api_operation, retrieve.api_operation) == ("UPDATE_SESSION", "RETRIEVE_SESSION")
    order = {f"order.{n}" for n in ("amount", "currency", "id", "reference", "description")}
    assert update.request.names == {
        "merchant",
        "correlationId",
        "session.id",
        "session.version",
        *order,
    }
    assert retrieve.request.names == {"merchant", "correlationId", "session.id"}
    assert update.response.names == retrieve.response.names == CREATE.response.names | order
    assert update.repeatable
    assert retrieve.repeatable
    assert GATEWAY_ERROR.names == {
        "error.cause",
        "error.explanation",
        "error.field",
        "error.supportCode",
        "error.validationType",
    }


def test_wire_constants_match_the_proto() -> None:
    """The few wire names nvp.py spells out agree with the names derived from the proto."""
    assert {nvp.ERROR_CAUSE, nvp.ERROR_FIELD, nvp.ERROR_EXPLANATION} <= GATEWAY_ERROR.names
    assert {nvp.MERCHANT, nvp.RESULT} <= CREATE.response.names


def test_request_fields_in_order_without_empty_values() -> None:
    """apiOperation comes first, an empty correlation id is not sent, extras go verbatim."""
    request = pb.CreateSessionRequest(
        merchant="M1", extra_fields={"session.authenticationLimit": "5"}
    )
    assert CREATE.encode_request(request) == {
        "apiOperation": "CREATE_SESSION",
        "merchant": "M1",
        "session.authenticationLimit": "5",
    }


@pytest.mark.parametrize(
    "merchant", ["", "M" * 13, "bad merchant", "a&b", "é", "merchant.M1", "M1\x00"]
)
def test_merchant_is_checked_before_any_call(merchant: str) -> None:
    """A merchant outside 1-12 characters of 0-9 a-z A-Z - _ is the caller's INVALID_ARGUMENT."""
    with pytest.raises(RequestInvalid) as caught:
        CREATE.encode_request(pb.CreateSessionRequest(merchant=merchant))
    assert caught.value.field == "merchant"


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("session.authenticationLimit", True),
        ("order.item[0].name", True),
        ("a1.B2.c3", True),
        ("x" * 100, True),
        ("x" * 101, False),
        ("", False),
        ("a..b", False),
        (".a", False),
        ("a.", False),
        ("a[x]", False),
        ("a[0][1]", False),
        ("a b", False),
        ("a&b", False),
        ("a=b", False),
        ("é", False),
        ("apiOperation", False),
        ("apiUsername", False),
        ("apiPassword", False),
        ("merchant", False),
        ("correlationId", False),
    ],
)
def test_extra_field_keys(key: str, allowed: bool) -> None:
    """extra_fields keys must be NVP names and not ones the adapter or a modelled field owns."""
    if allowed:
        check_extra_key(key, CREATE.reserved)
    else:
        with pytest.raises(RequestInvalid) as caught:
            check_extra_key(key, CREATE.reserved)
        assert caught.value.field == f"extra_fields[{key}]"


def test_response_maps_every_field() -> None:
    """A success body fills the typed response; unmodelled keys land in extra_fields verbatim."""
    response = CREATE.decode_response(
        {
            "merchant": "TEST7006259",
            "result": "SUCCESS",
            "session.id": "SESSION0002378433591N3262498M20",
            "session.updateStatus": "NO_UPDATE",
            "session.version": "030f712301",
            "correlationId": "c-1",
            "session.authenticationLimit": "5",
            "session.aNewField": "x",
        }
    )
    assert response == pb.CreateSessionResponse(
        merchant="TEST7006259",
        result=pb.RESULT_SUCCESS,
        correlation_id="c-1",
        session=pb.Session(
            id="SESSION0002378433591N3262498M20",
            update_status=pb.SESSION_UPDATE_STATUS_NO_UPDATE,
            version="030f712301",
            authentication_limit="5",
        ),
        extra_fields={"session.aNewField": "x"},
    )


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(
            {"result": "MAYBE"},
            pb.CreateSessionResponse(extra_fields={"result": "MAYBE"}),
            id="unknown-result",
        ),
        pytest.param(
            {"result": "success"},
            pb.CreateSessionResponse(extra_fields={"result": "success"}),
            id="result-in-lower-case",
        ),
        pytest.param(
            {"result": "SUCCESS", "session.updateStatus": "no_update"},
            pb.CreateSessionResponse(
                result=pb.RESULT_SUCCESS, extra_fields={"session.updateStatus": "no_update"}
            ),
            id="update-status-in-lower-case",
        ),
    ],
)
def test_unknown_enum_text_is_kept(
    answer: dict[str, str], expected: pb.CreateSessionResponse
) -> None:
    """An enum text the proto lacks (case matters) leaves its field _UNSPECIFIED (unset) and is
    kept verbatim in extra_fields; the other fields map as usual."""
    assert CREATE.decode_response(answer) == expected


def test_gateway_error_parses_with_leftovers() -> None:
    """The error.* fields fill GatewayError; an unknown cause stays raw among the leftovers."""
    error, leftovers = GATEWAY_ERROR.parse(
        {
            "error.cause": "INVALID_REQUEST",
            "error.field": "merchant",
            "error.validationType": "MISSING",
            "error.supportCode": "S-1",
            "result": "ERROR",
        }
    )
    assert error == gw.GatewayError(
        cause=gw.ERROR_CAUSE_INVALID_REQUEST,
        field="merchant",
        validation_type=gw.VALIDATION_TYPE_MISSING,
        support_code="S-1",
    )
    assert leftovers == {"result": "ERROR"}


def test_field_path_for_violations() -> None:
    """Gateway field names map back to proto paths, extras to extra_fields[...], else as sent."""
    request = pb.CreateSessionRequest(merchant="M", extra_fields={"order.id": "1"})
    assert CREATE.field_path("correlationId", request) == "correlation_id"
    assert CREATE.field_path("merchant", request) == "merchant"
    assert CREATE.field_path("order.id", request) == "extra_fields[order.id]"
    assert CREATE.field_path("order.amount", request) == "order.amount"


@given(
    merchant=st.from_regex(r"[0-9A-Za-z_-]{1,12}", fullmatch=True),
    correlation=st.text(st.characters(exclude_categories=["Cs"]), max_size=100),  # its bound
    extra=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z0-9]{1,8}){0,2}", fullmatch=True),
        st.text(st.characters(exclude_categories=["Cs"])),
        max_size=4,
    ).filter(lambda d: not set(d) & CREATE.reserved),
)
def test_no_request_field_can_smuggle(
    merchant: str, correlation: str, extra: dict[str, str]
) -> None:
    """Whatever the request holds, the wire carries exactly its fields and nothing else."""
    request = pb.CreateSessionRequest(
        merchant=merchant, correlation_id=correlation, extra_fields=extra
    )
    fields = CREATE.encode_request(request)
    expected = {"apiOperation": "CREATE_SESSION", "merchant": merchant, **extra}
    if correlation:
        expected["correlationId"] = correlation
    assert nvp.decode(nvp.encode(fields)) == expected


_ANSWER_NAMES = sorted(
    {name for op in OPERATIONS.values() for name in op.response.names}
    | {"session.aNewField", "error.cause", "order", "session"}
)
_ANSWER_VALUES = st.one_of(
    st.sampled_from(["SUCCESS", "FAILURE", "NO_UPDATE", "success", "", "5", "SESSION0002"]),
    st.text(max_size=12),
)


def _set_one_by_one(schema: MessageSchema, fields: dict[str, str]) -> Message:
    """The oracle: each modelled pair set on its own with setattr by its proto path, an enum by
    its value's name; the rest kept aside in extra_fields."""
    message = schema.message_class()
    leftovers = {}
    for name, value in fields.items():
        path = schema.proto_path(name)
        if path is None:
            leftovers[name] = value
            continue
        *parents, last = path.split(".")
        target = message
        for step in parents:
            target = getattr(target, step)
        enum = target.DESCRIPTOR.fields_by_name[last].enum_type
        if enum is None:
            setattr(target, last, value)
            continue
        prefix = enum.values[0].name.removesuffix("UNSPECIFIED")
        number = enum.values_by_name.get(prefix + value)
        if number is None or number.number == 0:
            leftovers[name] = value
        else:
            setattr(target, last, number.number)
    getattr(message, EXTRA_FIELDS).update(leftovers)
    return message


@given(
    st.sampled_from(sorted(OPERATIONS)),
    st.dictionaries(st.sampled_from(_ANSWER_NAMES), _ANSWER_VALUES, max_size=10),
)
def test_parse_builds_what_setting_each_field_builds(rpc: str, fields: dict[str, str]) -> None:
    """parse gives the message, presence of nested messages included, that setting each modelled
    field on its own by its proto path gives, with the same leftovers: any mix of modelled and
    unknown names, known and unknown enum texts, and empty values."""
    schema = OPERATIONS[rpc].response
    message, leftovers = schema.parse(fields)
    expected = _set_one_by_one(schema, fields)
    assert message == expected
    assert message.ListFields() == expected.ListFields()
    assert leftovers == dict(getattr(expected, EXTRA_FIELDS))
