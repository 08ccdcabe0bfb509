"""Redaction never corrupts data and is never an oracle (docs/errors.md, "Secrets").

The adapter removes a password only where it stands as the value of ``apiPassword`` in the
gateway's free text, by a rule that does not know the password. So a password of one common
character leaves every successful answer byte for byte intact, and a caller cannot learn whether a
value it sends is a configured password: everything it sees is the same either way.

Each example starts its own adapters (a few milliseconds each), since the password is part of
the example; the scripted gateway is shared (hence the suppressed ``function_scoped_fixture``
health check) and its handler is set at the start of each example.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, quote_plus

import grpc
import pytest
from aiohttp import web
from google.protobuf.message import Message
from google.rpc import status_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.core import nvp
from adapter.core.redaction import scrub_error_answer, scrub_field, scrub_free_text
from tests.conftest import DETAIL_TYPES, MERCHANT, ScriptedUpstream, make_settings

if TYPE_CHECKING:  # the stub type grpc.aio channels give; it exists for type checkers only
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
CALL_TIMEOUT = 5.0
# One attempt and no breaker: each example's answer is mapped on its own, with no state carried.
ONE_ATTEMPT = {"retry_max_attempts": 1, "breaker_failure_threshold": 0}

TEXT_CHARS = st.characters(exclude_categories=["Cs"])  # protobuf strings cannot hold surrogates
# Short passwords of characters that ordinary text is full of are the ones a substring rule
# corrupts answers with; longer arbitrary ones are in too.
PASSWORDS = st.text(st.sampled_from("a5S0e&=+% .-_A"), min_size=1, max_size=3) | st.text(
    TEXT_CHARS, min_size=1, max_size=12
)
MODELLED = ("merchant", "correlationId", "result", "session.id", "session.updateStatus")
MODELLED_NAMES = (*MODELLED, "session.version")
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
nvp_names = st.from_regex(r"[A-Za-z0-9]{1,8}(\.[A-Za-z0-9]{1,8}){0,2}", fullmatch=True)
caller_keys = st.from_regex(r"[a-z]{1,8}(\.[a-z0-9]{1,8}){1,2}", fullmatch=True)


def texts_around(*forms: str) -> st.SearchStrategy[str]:
    """Text made of the given forms and arbitrary pieces, so that they occur often."""
    pieces = st.sampled_from(forms) | st.text(TEXT_CHARS, max_size=6)
    return st.lists(pieces, max_size=5).map("".join)


def spellings(secret: str) -> tuple[str, ...]:
    """A secret as written, form-encoded and percent-encoded."""
    return (secret, quote_plus(secret), quote(secret, safe=""))


async def start(stack: AsyncExitStack, url: str, password: str) -> Stub:
    """An adapter for MERCHANT with this password, in front of the gateway at ``url``."""
    server = await stack.enter_async_context(
        build_server(make_settings(url, {MERCHANT: password}, **ONE_ATTEMPT))
    )
    channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
    return session_service_pb2_grpc.SessionServiceStub(channel)


# --- successful answers pass through ------------------------------------------------------------


@dataclass(frozen=True)
class SuccessCase:
    password: str
    correlation_id: str
    modelled: dict[str, str]
    unknown: dict[str, str]


def _no_marker(text: str) -> bool:
    return "apipassword" not in text.lower()


@st.composite
def success_cases(draw: st.DrawFn) -> SuccessCase:
    """A password, a caller's correlation id, and a successful answer full of the password."""
    password = draw(PASSWORDS)
    # Modelled values may hold anything, "apiPassword=" included: they are never altered.
    anything = texts_around(*spellings(password), "apiPassword=", "apiPassword%3D")
    modelled = {
        "merchant": draw(anything),
        "result": draw(st.sampled_from(list(RESULTS))),
        "session.id": draw(anything),
        "session.updateStatus": draw(st.sampled_from(list(UPDATE_STATUSES))),
        "session.version": draw(anything),
    }
    names = (nvp_names | st.text(TEXT_CHARS, min_size=1, max_size=12)).filter(
        lambda name: name not in MODELLED_NAMES and _no_marker(name)
    )
    unknown = draw(
        st.dictionaries(names, texts_around(*spellings(password)).filter(_no_marker), max_size=4)
    )
    correlation_id = draw(anything.filter(lambda text: len(text) <= 100))
    return SuccessCase(password, correlation_id, modelled, unknown)


@PROPERTY
@example(
    SuccessCase(
        password="a",
        correlation_id="x|a|y|apiPassword=a",
        modelled={
            "merchant": "TESTMERCHANT",
            "result": "SUCCESS",
            "session.id": "SESSION0002aaaaaaaaaaaaaaaaaaaa",
            "session.updateStatus": "NO_UPDATE",
            "session.version": "a0a0a0a0a0",
        },
        unknown={"session.aes256Key": "aaaa=", "a": "a"},
    )
)
@given(case=success_cases())
async def test_successful_answers_pass_through_byte_for_byte(
    scripted_upstream: ScriptedUpstream, case: SuccessCase
) -> None:
    """Whatever the password (one character and up), a successful answer reaches the caller
    exactly as the gateway sent it: every modelled field, the echoed correlation id and every
    unknown field whose text holds no apiPassword, byte for byte."""

    async def handler(request: web.Request) -> web.StreamResponse:
        sent = dict(parse_qsl((await request.read()).decode("ascii"), keep_blank_values=True))
        echoed = {"correlationId": sent["correlationId"]} if "correlationId" in sent else {}
        body = nvp.encode({**case.modelled, **echoed, **case.unknown})
        return web.Response(body=body, status=201)

    scripted_upstream.handler = handler
    async with AsyncExitStack() as stack:
        stub = await start(stack, scripted_upstream.url, case.password)
        response = await stub.CreateSession(
            pb.CreateSessionRequest(merchant=MERCHANT, correlation_id=case.correlation_id),
            timeout=CALL_TIMEOUT,
        )
    expected = pb.CreateSessionResponse(
        correlation_id=case.correlation_id,
        merchant=case.modelled["merchant"],
        result=RESULTS[case.modelled["result"]],
        session=pb.Session(
            id=case.modelled["session.id"],
            update_status=UPDATE_STATUSES[case.modelled["session.updateStatus"]],
            version=case.modelled["session.version"],
        ),
        extra_fields=case.unknown,
    )
    assert response == expected


# --- never an oracle --------------------------------------------------------------------------

# What a piece of the gateway's answer is made of, resolved against each request it answers:
# ("text", s) as it is; ("caller", "") the caller's correlation id; ("extra", key) the caller's
# extra field; ("body", "") the whole request body as sent (form-encoded, password included);
# ("pairs", "") the request's decoded pairs, "name=value&...", the password raw.
Token = tuple[str, str]
CARRIES_THE_PASSWORD = frozenset({"body", "pairs"})


@dataclass(frozen=True)
class OracleCase:
    guess: str
    other: str
    correlation_id: str
    extra: dict[str, str]
    http_status: int
    answer: dict[str, list[Token]]
    password_field: bool  # the answer also holds a field apiPassword with the password


@st.composite
def oracle_cases(draw: st.DrawFn) -> OracleCase:
    """A guess, another password, caller values full of the guess, and a gateway answer made of
    the caller's values and echoes of the request."""
    guess = draw(PASSWORDS)
    other = draw(PASSWORDS)
    if other == guess:  # rather than a filter, which short alphabets exhaust
        other += "x"
    caller_text = texts_around(*spellings(guess), "apiPassword=", "|")
    correlation_id = draw(caller_text.filter(lambda text: len(text) <= 100))
    extra = draw(st.dictionaries(caller_keys, caller_text, max_size=3))

    plain: list[st.SearchStrategy[Token]] = [
        st.tuples(st.just("text"), texts_around(*spellings(guess), "apiPassword=")),
        st.tuples(st.just("caller"), st.just("")),
    ]
    if extra:
        plain.append(st.tuples(st.just("extra"), st.sampled_from(sorted(extra))))
    echoes = st.tuples(st.sampled_from(sorted(CARRIES_THE_PASSWORD)), st.just(""))
    structured = st.lists(st.one_of(plain), min_size=1, max_size=3)
    free = st.lists(st.one_of(*plain, echoes), min_size=1, max_size=3)

    answer: dict[str, list[Token]] = {}
    if draw(st.booleans()):  # an error answer: everything the caller may see is free text
        answer["result"] = [("text", "ERROR")]
        # Mostly known causes and fields, so that every kind of status is reached.
        cause = draw(st.sampled_from(["INVALID_REQUEST", "SERVER_BUSY", "SERVER_FAILED", ""]))
        answer["error.cause"] = [("text", cause)] if cause else draw(free)
        culprit = draw(st.sampled_from(["apiPassword", "correlationId", "order.amount", ""]))
        answer["error.field"] = [("text", culprit)] if culprit else draw(free)
        for name in ("error.explanation", "error.supportCode"):
            answer[name] = draw(free)
    else:  # a success: modelled fields never altered, so only what the caller sent goes there
        answer["result"] = draw(st.sampled_from(["SUCCESS", "MAYBE"]).map(lambda r: [("text", r)]))
        for name in ("merchant", "correlationId", "session.id"):
            answer[name] = draw(structured)
    for name in draw(st.lists(nvp_names.filter(lambda n: n not in MODELLED_NAMES), max_size=3)):
        answer[name] = draw(free)
    return OracleCase(
        guess=guess,
        other=other,
        correlation_id=correlation_id,
        extra=extra,
        http_status=draw(st.sampled_from([200, 201, 400, 401, 500, 503])),
        answer=answer,
        password_field=draw(st.booleans()),
    )


def render(case: OracleCase, body: str) -> bytes:
    """The gateway's answer to one request, its tokens resolved against that request."""
    sent = dict(parse_qsl(body, keep_blank_values=True))

    def resolve(token: Token) -> str:
        match token:
            case ("caller", _):
                return sent.get("correlationId", "")
            case ("extra", key):
                return sent.get(key, "")
            case ("body", _):
                return body
            case ("pairs", _):
                return "&".join(f"{name}={value}" for name, value in sent.items())
            case (_, text):
                return text

    fields = {name: "".join(map(resolve, tokens)) for name, tokens in case.answer.items()}
    if case.password_field:
        fields["apiPassword"] = sent["apiPassword"]
    return nvp.encode(fields)


@dataclass
class Seen:
    """Everything a caller sees of a call: the response, or the code, message and details."""

    response: Message | None
    code: grpc.StatusCode
    message: str
    details: list[tuple[str, Message]]


async def seen(stub: Stub, request: pb.CreateSessionRequest) -> Seen:
    call = stub.CreateSession(request, timeout=CALL_TIMEOUT)
    try:
        return Seen(await call, grpc.StatusCode.OK, "", [])
    except grpc.aio.AioRpcError:
        pass
    status = await rpc_status.aio.from_call(call)
    assert isinstance(status, status_pb2.Status), "every failure carries a google.rpc.Status"
    details: list[tuple[str, Message]] = []
    for packed in status.details:
        [kind] = [kind for kind in DETAIL_TYPES if packed.Is(kind.DESCRIPTOR)]
        detail = kind()
        packed.Unpack(detail)
        details.append((packed.type_url, detail))
    return Seen(None, await call.code(), str(await call.details()), details)


@PROPERTY
@example(  # the probe: the right guess used to come back as [REDACTED]
    OracleCase(
        guess="5",
        other="6",
        correlation_id="x|5|y|6",
        extra={},
        http_status=400,
        answer={
            "result": [("text", "ERROR")],
            "error.cause": [("text", "INVALID_REQUEST")],
            "error.field": [("text", "correlationId")],
            "error.explanation": [("text", "Value '"), ("caller", ""), ("text", "' is invalid")],
        },
        password_field=False,
    )
)
@given(case=oracle_cases())
async def test_no_output_depends_on_whether_a_guess_is_the_password(
    scripted_upstream: ScriptedUpstream, case: OracleCase
) -> None:
    """The same call, with values full of a guess, through two adapters whose passwords differ,
    one of them equal to the guess, against a gateway that echoes the caller's values and the
    request itself: the caller sees exactly the same response, or the same code, message and
    details, from both."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = render(case, (await request.read()).decode("ascii"))
        return web.Response(body=body, status=case.http_status)

    scripted_upstream.handler = handler
    request = pb.CreateSessionRequest(
        merchant=MERCHANT, correlation_id=case.correlation_id, extra_fields=case.extra
    )
    async with AsyncExitStack() as stack:
        guessed = await seen(await start(stack, scripted_upstream.url, case.guess), request)
        not_guessed = await seen(await start(stack, scripted_upstream.url, case.other), request)
    event(guessed.code.name)  # for --hypothesis-show-statistics
    assert guessed == not_guessed


# --- the rule, as a table ----------------------------------------------------------------------

RULE_1 = [
    ("no marker: as it is", "Value 'p&ss' is invalid.", "Value 'p&ss' is invalid."),
    ("raw", "x&apiPassword=p&ss w'rd\"&y=1", "x&apiPassword=[REDACTED]"),
    ("form-encoded", "apiPassword=p%26ss+w%27rd&y=1", "apiPassword=[REDACTED]"),
    ("percent-encoded", "a%26apiPassword%3Dp%2526ss", "a%26apiPassword%3D[REDACTED]"),
    ("lower-case hex", "apiPassword%3dp%2526ss", "apiPassword%3d[REDACTED]"),
    ("any case of the name", "APIPASSWORD=x", "APIPASSWORD=[REDACTED]"),
    ("the first marker counts", "apiPassword=a apiPassword=b", "apiPassword=[REDACTED]"),
    ("a name alone is no marker", "apiPassword is wrong", "apiPassword is wrong"),
    ("nothing after the separator", "apiPassword=", "apiPassword=[REDACTED]"),
]


@pytest.mark.parametrize(("text", "redacted"), [r[1:] for r in RULE_1], ids=[r[0] for r in RULE_1])
def test_free_text_rule(text: str, redacted: str) -> None:
    """Everything after the first apiPassword= or apiPassword%3D, to the end, is redacted."""
    assert scrub_free_text(text) == redacted


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("apiPassword", "[REDACTED]"),
        ("APIPASSWORD", "[REDACTED]"),
        ("request.apiPassword", "[REDACTED]"),
        ("apiPasswordHint", "p&ss"),
        ("apiPassword.hint", "p&ss"),
        ("password", "p&ss"),
    ],
)
def test_a_field_named_api_password_is_redacted_whole(name: str, value: str) -> None:
    """A field named apiPassword (any case, or as its last segment) loses its whole value;
    any other name keeps it."""
    assert scrub_field(name, "p&ss") == value


def test_an_explanation_about_the_password_is_redacted_whole() -> None:
    """An error naming apiPassword in error.field may quote it: the explanation is redacted."""
    fields: Mapping[str, str] = {
        "error.cause": "INVALID_REQUEST",
        "error.explanation": "Value 'p&ss' is invalid.",
        "error.field": "apiPassword",
        "result": "ERROR",
    }
    assert scrub_error_answer(fields)["error.explanation"] == "[REDACTED]"
