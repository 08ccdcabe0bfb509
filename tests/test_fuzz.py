"""Hypothesis fuzzing through the real gRPC server, with a real HTTP upstream on loopback.

Requests: any text in every request field reaches the upstream unchanged, or is refused with the
contract's status. Responses: any bytes, and any NVP-shaped answer, with any of a few HTTP
statuses, end in a typed response or in one of the contract's rich statuses, never in a bare
grpc UNKNOWN or an "unexpected error" inside the adapter.

One adapter and one upstream serve all the examples of a test (hence the suppressed
``function_scoped_fixture`` health check): state that belongs to one example is reset at its start.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from adapter._proto.mpgs.gateway.v1 import gateway_error_pb2 as gw
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.app import build_server
from adapter.config import UpstreamSettings
from adapter.core import nvp
from tests import rules
from tests.conftest import (
    DETAIL_TYPES,
    MERCHANT,
    PASSWORD,
    Failure,
    ScriptedUpstream,
    StartAdapter,
    make_settings,
)

if TYPE_CHECKING:  # the stub type grpc.aio channels give; it exists for type checkers only
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

Code = grpc.StatusCode
CALL_TIMEOUT = 5.0
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Lone surrogates are left out on purpose: protobuf refuses them when the request is built, so no
# client can send one (test_lone_surrogates_never_leave_the_client). Everything else is in,
# control characters and NUL included.
TEXT_CHARS = st.characters(exclude_categories=["Cs"])
ANY_TEXT = st.text(TEXT_CHARS, max_size=300)

# The contract's rules, written out here rather than imported, so the test checks the adapter
# against the contract and not against itself.
MERCHANT_ID = re.compile(r"[0-9A-Za-z_-]{1,12}")
NVP_NAME = re.compile(r"[A-Za-z0-9]+(\[[0-9]+\])?(\.[A-Za-z0-9]+(\[[0-9]+\])?)*")
MAX_NAME_LENGTH = 100
MAX_CORRELATION_ID_LENGTH = 100
ADAPTER_FILLED = ("apiOperation", "apiUsername", "apiPassword")
RESERVED_KEYS = (*ADAPTER_FILLED, "merchant", "correlationId")
REASON_FORMAT = re.compile(r"[A-Z][A-Z0-9_]+[A-Z0-9]")
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
AUTH_HTTP = frozenset({401, 403})

nvp_names = st.from_regex(
    r"[A-Za-z0-9]{1,8}(\[[0-9]{1,3}\])?(\.[A-Za-z0-9]{1,8}(\[[0-9]{1,3}\])?){0,3}", fullmatch=True
)


def _is_caller_key(key: str) -> bool:
    return (
        len(key) <= MAX_NAME_LENGTH and bool(NVP_NAME.fullmatch(key)) and key not in RESERVED_KEYS
    )


# One attempt and no circuit breaker: each example's answer is mapped on its own, and a shared
# server carries no state (failure counts, an open circuit) from one example to the next.
# make_settings applies these with dataclasses.replace, so a setting renamed or removed is a
# TypeError in the rig, never a silently dropped option.
ONE_ATTEMPT: dict[str, Any] = {"retry_max_attempts": 1, "breaker_failure_threshold": 0}


def test_one_attempt_names_only_existing_settings() -> None:
    """Every option the fuzz rigs turn off is a field of UpstreamSettings under that name."""
    assert set(ONE_ATTEMPT) - {f.name for f in dataclasses.fields(UpstreamSettings)} == set()


async def outcome(
    stub: Stub, request: pb.CreateSessionRequest
) -> pb.CreateSessionResponse | Failure:
    """The response, or what the caller sees of the failure; every failure has a rich status."""
    call = stub.CreateSession(request, timeout=CALL_TIMEOUT)
    try:
        return await call
    except grpc.aio.AioRpcError:
        pass
    code = await call.code()
    status = await rpc_status.aio.from_call(call)
    assert isinstance(status, status_pb2.Status), (
        f"{code.name} with no google.rpc.Status: {await call.details()!r}"
    )
    failure = Failure(code, status.message)
    for packed in status.details:
        kinds = [kind for kind in DETAIL_TYPES if packed.Is(kind.DESCRIPTOR)]
        assert kinds, f"unexpected detail {packed.type_url}"
        assert kinds[0] not in failure.details, f"two {kinds[0].__name__} details"
        detail = kinds[0]()
        packed.Unpack(detail)
        failure.details[kinds[0]] = detail
    assert failure.info.domain == "nvp-adapter"
    assert failure.info.reason != "INTERNAL", f"an unexpected error in the adapter: {failure}"
    assert "Traceback" not in failure.message
    assert PASSWORD not in str(status)
    return failure


def _describe(result: pb.CreateSessionResponse | Failure) -> str:
    """The outcome's kind, for Hypothesis's statistics (--hypothesis-show-statistics)."""
    if isinstance(result, Failure):
        return f"{result.code.name} {result.info.reason}"
    return "OK"


def _violation(failure: Failure) -> str:
    bad_request = failure.details[error_details_pb2.BadRequest]
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    [violation] = bad_request.field_violations
    return str(violation.field)


def _no_unexpected_errors(caplog: pytest.LogCaptureFixture) -> None:
    unexpected = [r.getMessage() for r in caplog.records if "unexpected" in r.getMessage()]
    assert not unexpected, unexpected[0]


# --- requests -------------------------------------------------------------------------------


@dataclass
class Recorder:
    """What the upstream received, decoded with the standard library (not the adapter's codec)."""

    requests: list[list[tuple[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode("ascii")  # form encoding is ASCII on the wire
        pairs = parse_qsl(body, keep_blank_values=True, strict_parsing=True, errors="strict")
        self.requests.append(pairs)
        fields = dict(pairs)
        answer = {
            "merchant": fields.get("merchant", ""),
            "result": "SUCCESS",
            "session.id": "SESSION0002AAAAAAAAAAAAAAAAAAAA",
            "session.updateStatus": "NO_UPDATE",
            "session.version": "0123456789",
        }
        if fields.get("correlationId"):
            answer["correlationId"] = fields["correlationId"]
        return web.Response(body=nvp.encode(answer), status=201)


@pytest.fixture
async def request_rig(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> tuple[Stub, Recorder]:
    recorder = Recorder()
    scripted_upstream.handler = recorder.handle
    stub = await start_adapter(make_settings(scripted_upstream.url, **ONE_ATTEMPT))
    return stub, recorder


merchants = st.one_of(
    st.just(MERCHANT),  # a third of the examples reach the upstream, unless a key is refused
    st.from_regex(r"[0-9A-Za-z_-]{1,12}", fullmatch=True),  # well formed, mostly unknown
    st.text(TEXT_CHARS, max_size=300),
)
extra_keys = st.one_of(
    nvp_names,
    st.sampled_from(RESERVED_KEYS),
    st.from_regex(r"[a-z]{98,103}", fullmatch=True),  # either side of the length limit
    st.text(TEXT_CHARS, max_size=300),
)
# Half the maps hold only well-formed keys, so that calls reach the upstream often.
extra_fields = st.dictionaries(nvp_names, ANY_TEXT, max_size=5) | st.dictionaries(
    extra_keys, ANY_TEXT, max_size=5
)


@FUZZ
@given(merchant=merchants, correlation_id=ANY_TEXT, extra=extra_fields)
async def test_any_request_text_is_sent_verbatim_or_refused(
    request_rig: tuple[Stub, Recorder],
    caplog: pytest.LogCaptureFixture,
    merchant: str,
    correlation_id: str,
    extra: dict[str, str],
) -> None:
    """Any text in merchant, correlation_id and extra_fields: the call either succeeds and the
    upstream saw exactly apiOperation, merchant, correlationId (if non-empty), the extra fields
    and the credentials, each once and unchanged; or it is INVALID_ARGUMENT naming merchant,
    correlation_id (over 100 characters) or extra_fields[<key>], or PERMISSION_DENIED for an
    unknown merchant, without an upstream call."""
    stub, recorder = request_rig
    recorder.requests.clear()
    caplog.clear()
    request = pb.CreateSessionRequest(
        merchant=merchant, correlation_id=correlation_id, extra_fields=extra
    )
    result = await outcome(stub, request)
    event(_describe(result))

    bad_keys = {f"extra_fields[{key}]" for key in extra if not _is_caller_key(key)}
    if not MERCHANT_ID.fullmatch(merchant):
        assert isinstance(result, Failure)
        assert (result.code, result.info.reason) == (Code.INVALID_ARGUMENT, "INVALID_REQUEST")
        assert _violation(result) == "merchant"
        assert recorder.requests == []
    elif len(correlation_id) > MAX_CORRELATION_ID_LENGTH:
        assert isinstance(result, Failure)
        assert (result.code, result.info.reason) == (Code.INVALID_ARGUMENT, "INVALID_REQUEST")
        assert _violation(result) == "correlation_id"
        assert recorder.requests == []
    elif bad_keys:
        assert isinstance(result, Failure)
        assert (result.code, result.info.reason) == (Code.INVALID_ARGUMENT, "INVALID_REQUEST")
        assert _violation(result) in bad_keys
        assert recorder.requests == []
    elif merchant != MERCHANT:
        assert isinstance(result, Failure)
        assert (result.code, result.info.reason) == (
            Code.PERMISSION_DENIED,
            "MERCHANT_NOT_ALLOWED",
        )
        assert recorder.requests == []
    else:
        assert isinstance(result, pb.CreateSessionResponse), result
        assert result.merchant == merchant
        assert result.correlation_id == correlation_id
        [pairs] = recorder.requests
        names = [name for name, _ in pairs]
        assert len(names) == len(set(names)), f"a field sent twice: {names}"
        expected = {
            "apiOperation": "CREATE_SESSION",
            "merchant": merchant,
            **({"correlationId": correlation_id} if correlation_id else {}),
            **extra,
            "apiUsername": f"merchant.{merchant}",
            "apiPassword": PASSWORD,
        }
        assert dict(pairs) == expected
    _no_unexpected_errors(caplog)


@pytest.mark.parametrize(
    "build",
    [
        lambda: pb.CreateSessionRequest(merchant="TEST\ud800"),
        lambda: pb.CreateSessionRequest(correlation_id="order-\udfff"),
        lambda: pb.CreateSessionRequest(extra_fields={"order.note": "\udc80"}),
        lambda: pb.CreateSessionRequest(extra_fields={"\ud83d": "x"}),
    ],
    ids=["merchant", "correlation_id", "extra value", "extra key"],
)
def test_lone_surrogates_never_leave_the_client(build: Callable[[], object]) -> None:
    """Protobuf refuses a lone surrogate in any string field when the message is built, so a
    Python client cannot send one: the fuzz strategies leave surrogates out for that reason."""
    with pytest.raises(UnicodeEncodeError):
        build()


async def test_invalid_utf8_on_the_wire_gets_a_rich_status() -> None:
    """A client that puts invalid UTF-8 in a string field (a surrogate in WTF-8, as a non-Python
    client can) gets the contract's INVALID_ARGUMENT with an ErrorInfo, not grpc's bare UNKNOWN
    carrying a Python exception message."""
    # field 1 (merchant) = "TESTMERCHANT", field 2 (correlation_id) = b"\xed\xa0\x80" (U+D800)
    body = b"\x0a\x0cTESTMERCHANT\x12\x03\xed\xa0\x80"
    async with (
        build_server(make_settings()) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/mpgs.gateway.v1.SessionService/CreateSession",
            request_serializer=None,  # bytes as they are: no protobuf check on the client
            response_deserializer=None,
        )
        call = raw(body, timeout=CALL_TIMEOUT)
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        code, details = await call.code(), await call.details()
        status = await rpc_status.aio.from_call(call)
    assert code == Code.INVALID_ARGUMENT, f"{code.name}: {details}"
    assert isinstance(status, status_pb2.Status)
    assert "DecodeError" not in status.message
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.domain, info.reason) == ("nvp-adapter", "INVALID_REQUEST")


# --- responses ------------------------------------------------------------------------------

RESPONSE_REQUEST = pb.CreateSessionRequest(
    merchant=MERCHANT, correlation_id="fuzz-1", extra_fields={"order.reference": "r-1"}
)
# Where the caller set each NVP name of RESPONSE_REQUEST, for the gateway's error.field.
FIELD_PATHS = {
    "merchant": "merchant",
    "correlationId": "correlation_id",
    "order.reference": "extra_fields[order.reference]",
}
HTTP_STATUSES = st.sampled_from([200, 201, 400, 401, 500, 503])
RESULTS = {
    "SUCCESS": pb.RESULT_SUCCESS,
    "PENDING": pb.RESULT_PENDING,
    "FAILURE": pb.RESULT_FAILURE,
    "UNKNOWN": pb.RESULT_UNKNOWN,
}
UPDATE_STATUSES = {
    "NO_UPDATE": pb.SESSION_UPDATE_STATUS_NO_UPDATE,
    "SUCCESS": pb.SESSION_UPDATE_STATUS_SUCCESS,
    "FAILURE": pb.SESSION_UPDATE_STATUS_FAILURE,
}
CAUSES = {
    "INVALID_REQUEST": gw.ERROR_CAUSE_INVALID_REQUEST,
    "REQUEST_REJECTED": gw.ERROR_CAUSE_REQUEST_REJECTED,
    "SERVER_BUSY": gw.ERROR_CAUSE_SERVER_BUSY,
    "SERVER_FAILED": gw.ERROR_CAUSE_SERVER_FAILED,
}
VALIDATION_TYPES = {
    "INVALID": gw.VALIDATION_TYPE_INVALID,
    "MISSING": gw.VALIDATION_TYPE_MISSING,
    "UNSUPPORTED": gw.VALIDATION_TYPE_UNSUPPORTED,
}
# The gateway's error.* names and their key in ErrorInfo.metadata.
ERROR_METADATA = {
    "error.cause": "cause",
    "error.field": "field",
    "error.validationType": "validationType",
    "error.supportCode": "supportCode",
}
MODELLED = ("merchant", "result", "correlationId", "session.id", "session.updateStatus")
MODELLED_NAMES = (*MODELLED, "session.version")
ERROR_NAMES = (*ERROR_METADATA, "error.explanation")


@pytest.fixture
async def response_rig(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> tuple[Stub, ScriptedUpstream]:
    stub = await start_adapter(make_settings(scripted_upstream.url, **ONE_ATTEMPT))
    return stub, scripted_upstream


def _pick(draw: st.DrawFn, **choices: st.SearchStrategy[str] | None) -> str | None:
    """A value from one of ``choices``, the choice drawn first and uniformly (None: absent)."""
    chosen = choices[draw(st.sampled_from(sorted(choices)))]
    return None if chosen is None else draw(chosen)


@st.composite
def nvp_answers(draw: st.DrawFn) -> dict[str, str]:
    """NVP-shaped answers: modelled, error and unknown names, known and unknown values.

    Half of them are gateway errors (``result=ERROR``); the kind of each special value (known,
    odd, absent, ...) is drawn uniformly first, so that every row of the error table is hit.
    """
    names = st.one_of(
        st.sampled_from((*MODELLED_NAMES, *ERROR_NAMES)),
        nvp_names,
        st.text(TEXT_CHARS, min_size=1, max_size=40),
    )
    fields = draw(st.dictionaries(names, ANY_TEXT, max_size=8))
    chosen: dict[str, str | None] = {
        "session.updateStatus": _pick(
            draw, known=st.sampled_from(list(UPDATE_STATUSES)), odd=ANY_TEXT, absent=None
        ),
        "error.validationType": _pick(
            draw, known=st.sampled_from(list(VALIDATION_TYPES)), odd=ANY_TEXT, absent=None
        ),
    }
    if draw(st.booleans()):
        chosen["result"] = "ERROR"
        chosen["error.cause"] = _pick(
            draw,
            invalid_request=st.just("INVALID_REQUEST"),
            other_known=st.sampled_from(list(CAUSES)),
            reason_like=st.from_regex(r"[A-Z][A-Z0-9_]{0,70}", fullmatch=True),
            odd=ANY_TEXT,
            absent=None,
        )
        chosen["error.field"] = _pick(
            draw,
            adapter_filled=st.sampled_from(ADAPTER_FILLED),
            caller_set=st.sampled_from(list(FIELD_PATHS)),
            other=st.sampled_from(["order.amount", ""]) | ANY_TEXT,
            absent=None,
        )
    else:
        chosen["result"] = _pick(
            draw, known=st.sampled_from(list(RESULTS)), odd=ANY_TEXT, absent=None
        )
    for name, value in chosen.items():
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    return fields


def _expected_code(fields: dict[str, str], http_status: int) -> tuple[Code, str]:  # noqa: PLR0911 (a table)
    """The error table's (code, reason) for an answer that decodes to ``fields``."""
    if "result" not in fields:
        if http_status in RETRYABLE_HTTP:
            return Code.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"
        return Code.INTERNAL, "UPSTREAM_PROTOCOL_ERROR"
    if fields["result"] != "ERROR":
        return Code.OK, ""
    if http_status in AUTH_HTTP:
        return Code.INTERNAL, "UPSTREAM_AUTHENTICATION_FAILED"
    cause, culprit = fields.get("error.cause", ""), fields.get("error.field", "")
    if cause == "INVALID_REQUEST":
        if culprit in ADAPTER_FILLED:
            return Code.INTERNAL, "INVALID_REQUEST"
        return Code.INVALID_ARGUMENT, "INVALID_REQUEST"
    known = {
        "REQUEST_REJECTED": Code.INTERNAL,
        "SERVER_BUSY": Code.UNAVAILABLE,
        "SERVER_FAILED": Code.INTERNAL,
    }
    if cause in known:
        return known[cause], cause
    fits = len(cause) <= 63 and REASON_FORMAT.fullmatch(cause)
    return Code.UNKNOWN, cause if fits else "UNKNOWN_CAUSE"


def _check_response(response: pb.CreateSessionResponse, fields: dict[str, str]) -> None:
    """Modelled names land in their fields verbatim, everything else (and unknown enum text) in
    extra_fields, verbatim but for an echoed apiPassword (docs/errors.md, "Secrets")."""
    extra = {name: value for name, value in fields.items() if name not in MODELLED_NAMES}
    for name, table in (("result", RESULTS), ("session.updateStatus", UPDATE_STATUSES)):
        if name in fields and fields[name] not in table:
            extra[name] = fields[name]
    extra = rules.redact_unmodelled(extra)
    assert response.merchant == fields.get("merchant", "")
    assert response.correlation_id == fields.get("correlationId", "")
    assert response.result == RESULTS.get(fields.get("result", ""), pb.RESULT_UNSPECIFIED)
    assert response.session.id == fields.get("session.id", "")
    assert response.session.version == fields.get("session.version", "")
    assert response.session.update_status == UPDATE_STATUSES.get(
        fields.get("session.updateStatus", ""), pb.SESSION_UPDATE_STATUS_UNSPECIFIED
    )
    assert dict(response.extra_fields) == extra


def _check_failure(failure: Failure, fields: dict[str, str], code: Code, reason: str) -> None:
    """The code, reason and details the error table (README, "Errors") asks for; the gateway's
    text in them redacted and clipped as docs/errors.md says."""
    assert (failure.code, failure.info.reason) == (code, reason), failure.message
    metadata = dict(failure.info.metadata)
    assert metadata.get("attempts") == "1"
    gateway_answered_error = fields.get("result") == "ERROR"
    text = rules.gateway_text(fields)
    for name, key in ERROR_METADATA.items():
        expected = text.get(name) if gateway_answered_error else None
        assert metadata.get(key) == expected, key
    if gateway_answered_error:
        error = failure.details[gw.GatewayError]
        assert isinstance(error, gw.GatewayError)
        assert error.cause == CAUSES.get(fields.get("error.cause", ""), 0)
        assert error.validation_type == VALIDATION_TYPES.get(
            fields.get("error.validationType", ""), 0
        )
        assert error.explanation == text.get("error.explanation", "")
        assert error.field == text.get("error.field", "")
        assert error.support_code == text.get("error.supportCode", "")
    else:
        assert gw.GatewayError not in failure.details
    culprit = text.get("error.field", "")
    if code == Code.INVALID_ARGUMENT and culprit:
        assert _violation(failure) == FIELD_PATHS.get(culprit, culprit)
    else:
        assert error_details_pb2.BadRequest not in failure.details
    assert (error_details_pb2.RetryInfo in failure.details) == (code == Code.UNAVAILABLE)


SESSION = {
    "merchant": MERCHANT,
    "session.id": "SESSION0002AAAAAAAAAAAAAAAAAAAA",
    "session.updateStatus": "NO_UPDATE",
    "session.version": "0123456789",
}
# Every row of the error table, given explicitly: random generation finds some rows only rarely.
TABLE_ROWS: list[tuple[dict[str, str], int]] = [
    ({**SESSION, "result": "SUCCESS", "correlationId": "fuzz-1"}, 201),
    ({**SESSION, "result": "MAYBE", "session.updateStatus": "LATER", "x.y": "z"}, 200),
    (SESSION, 200),
    (SESSION, 503),
    ({}, 500),
    ({"result": "ERROR", "error.cause": "INVALID_REQUEST"}, 401),
    ({"result": "ERROR", "error.cause": "INVALID_REQUEST", "error.field": "apiPassword"}, 400),
    ({"result": "ERROR", "error.cause": "INVALID_REQUEST", "error.field": "correlationId"}, 400),
    ({"result": "ERROR", "error.cause": "INVALID_REQUEST", "error.field": "order.reference"}, 400),
    ({"result": "ERROR", "error.cause": "INVALID_REQUEST", "error.field": "order.amount"}, 400),
    ({"result": "ERROR", "error.cause": "INVALID_REQUEST"}, 400),
    ({"result": "ERROR", "error.cause": "REQUEST_REJECTED", "error.supportCode": "s-1"}, 400),
    ({"result": "ERROR", "error.cause": "SERVER_BUSY", "error.explanation": "later"}, 503),
    ({"result": "ERROR", "error.cause": "SERVER_FAILED"}, 500),
    ({"result": "ERROR", "error.cause": "NEW_CAUSE"}, 400),
    ({"result": "ERROR", "error.cause": "not a reason"}, 400),
    ({"result": "ERROR"}, 400),
]


def _with_table_rows(test: Callable[..., Any]) -> Callable[..., Any]:
    for fields, http_status in reversed(TABLE_ROWS):
        test = example(fields=fields, http_status=http_status)(test)
    return test


@FUZZ
@_with_table_rows
@given(fields=nvp_answers(), http_status=HTTP_STATUSES)
async def test_any_nvp_answer_maps_per_the_contract(
    response_rig: tuple[Stub, ScriptedUpstream],
    caplog: pytest.LogCaptureFixture,
    fields: dict[str, str],
    http_status: int,
) -> None:
    """Any NVP answer with any of a few HTTP statuses gives exactly the contract's outcome: a
    response holding every field verbatim when result is not ERROR; else the code, reason,
    ErrorInfo metadata, GatewayError, BadRequest and RetryInfo of the error table."""
    stub, upstream = response_rig
    caplog.clear()
    upstream.reply(nvp.encode(fields), status=http_status)
    result = await outcome(stub, RESPONSE_REQUEST)
    event(_describe(result))
    code, reason = _expected_code(fields, http_status)
    if code == Code.OK:
        assert isinstance(result, pb.CreateSessionResponse), result
        _check_response(result, fields)
    else:
        assert isinstance(result, Failure), result
        _check_failure(result, fields, code, reason)
    _no_unexpected_errors(caplog)


ANSWER_REASONS = frozenset(
    {
        "INVALID_REQUEST",
        "UPSTREAM_AUTHENTICATION_FAILED",
        "REQUEST_REJECTED",
        "SERVER_BUSY",
        "SERVER_FAILED",
        "UNKNOWN_CAUSE",
        "UPSTREAM_UNAVAILABLE",
        "UPSTREAM_PROTOCOL_ERROR",
    }
)
nearly_nvp = st.lists(
    st.tuples(
        st.sampled_from([b"result", b"error.cause", b"session.id", b"x"]) | st.binary(max_size=8),
        st.sampled_from([b"=", b"", b"=="]),
        st.sampled_from([b"SUCCESS", b"ERROR", b"%", b"%zz", b"%ff", b"%C3%28", b"+"])
        | st.binary(max_size=40),
    ).map(b"".join),
    max_size=6,
).map(b"&".join)


@FUZZ
@given(body=st.binary(max_size=2000) | nearly_nvp, http_status=HTTP_STATUSES)
async def test_any_bytes_end_in_a_contract_status(
    response_rig: tuple[Stub, ScriptedUpstream],
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    http_status: int,
) -> None:
    """Any bytes as the upstream's body: the call ends OK or with one of the contract's statuses
    for an upstream answer, always with an ErrorInfo in domain nvp-adapter, never a bare grpc
    UNKNOWN or an unexpected error inside the adapter."""
    stub, upstream = response_rig
    caplog.clear()
    upstream.reply(body, status=http_status)
    result = await outcome(stub, RESPONSE_REQUEST)
    event(_describe(result))
    if isinstance(result, Failure):
        assert result.code in {
            Code.INVALID_ARGUMENT,
            Code.INTERNAL,
            Code.UNAVAILABLE,
            Code.UNKNOWN,
        }, result
        reason = result.info.reason
        assert reason in ANSWER_REASONS or (
            result.code == Code.UNKNOWN and len(reason) <= 63 and REASON_FORMAT.fullmatch(reason)
        ), reason
    _no_unexpected_errors(caplog)
