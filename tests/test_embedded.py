"""The embedded gateway: CREATE_SESSION as MPGS answers it, in-process and over HTTP."""

from __future__ import annotations

import re
import socket
import string
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote_plus

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.core import nvp
from adapter.embedded import AnswerLost, EmbeddedGateway, StoredSession, start_http_gateway
from adapter.upstream.client import Reply

MERCHANT = "TESTMERCHANT"
OTHER = "OTHER_M-1"
# Characters that form-encoding changes, so a leak is looked for in both spellings.
PASSWORD = "p&ss=w+rd%/é 0f1e2d3c4b5a6978"
OTHER_PASSWORD = "0123456789abcdef0123456789abcdef"
ACCOUNTS = {MERCHANT: PASSWORD, OTHER: OTHER_PASSWORD}
VERSION = "100"
GOOD: dict[str, str] = {
    "apiOperation": "CREATE_SESSION",
    "apiUsername": f"merchant.{MERCHANT}",
    "apiPassword": PASSWORD,
    "merchant": MERCHANT,
}
SESSION_ID = re.compile(r"SESSION0002[0-9A-Z]{20}")
INVALID_CREDENTIALS = (
    b"error.cause=INVALID_REQUEST&error.explanation=Invalid+credentials.&result=ERROR"
)
NOT_NVP = {
    "error.cause": "INVALID_REQUEST",
    "error.explanation": "Request body is not a valid form-encoded NVP body.",
    "result": "ERROR",
}


@dataclass
class FakeClock:
    """A clock the test moves by hand."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def with_fields(drop: tuple[str, ...] = (), **changes: str) -> dict[str, str]:
    """GOOD with some fields dropped and others set; dotted names come in as ``a__b``."""
    fields = {k: v for k, v in GOOD.items() if k not in drop}
    fields.update({k.replace("__", "."): v for k, v in changes.items()})
    return fields


def answered(answer: Reply | AnswerLost) -> Reply:
    """The gateway's answer, which must not be a lost one."""
    assert isinstance(answer, Reply), answer
    return answer


def post(
    gateway: EmbeddedGateway, fields: Mapping[str, str], version: str = VERSION
) -> tuple[int, dict[str, str]]:
    """One request through the in-process face; the status and the decoded body."""
    reply = answered(gateway.handle(version, nvp.encode(fields)))
    return reply.status, nvp.decode(reply.body)


def field_error(field: str, validation_type: str, explanation: str) -> dict[str, str]:
    return {
        "error.cause": "INVALID_REQUEST",
        "error.explanation": explanation,
        "error.field": field,
        "error.validationType": validation_type,
        "result": "ERROR",
    }


def assert_no_password(text: str | bytes) -> None:
    """Neither account's password shows, raw or form-encoded."""
    data = text.encode() if isinstance(text, str) else text
    for password in (PASSWORD, OTHER_PASSWORD):
        for form in {password, quote_plus(password)}:
            assert form.encode() not in data


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gateway(clock: FakeClock) -> EmbeddedGateway:
    return EmbeddedGateway(ACCOUNTS, session_ttl_seconds=900.0, clock=clock)


# --- success -------------------------------------------------------------------------------------


def test_success_fields_and_formats(gateway: EmbeddedGateway, clock: FakeClock) -> None:
    """A good request is 201 with exactly the real gateway's fields, formats and values."""
    status, fields = post(gateway, GOOD)
    assert status == 201
    assert set(fields) == {
        "merchant",
        "result",
        "session.id",
        "session.updateStatus",
        "session.version",
    }
    assert fields["merchant"] == MERCHANT
    assert fields["result"] == "SUCCESS"
    assert SESSION_ID.fullmatch(fields["session.id"])
    assert len(fields["session.id"]) == 31
    assert fields["session.updateStatus"] == "NO_UPDATE"
    assert len(fields["session.version"]) == 10
    assert gateway.session(fields["session.id"]) == StoredSession(
        MERCHANT, 100, fields["session.version"], clock.now + 900.0
    )


def test_success_body_lists_fields_in_name_order(gateway: EmbeddedGateway) -> None:
    """The body reads like the real one: names in order, so the bytes match field for field."""
    reply = answered(gateway.handle(VERSION, nvp.encode(with_fields(correlationId="c"))))
    names = [pair.split(b"=")[0] for pair in reply.body.split(b"&")]
    assert names == sorted(names)
    assert reply.body.startswith(b"correlationId=c&merchant=TESTMERCHANT&result=SUCCESS&")


CORRELATION_IDS = {
    "plain": "order-1",
    "ampersand and equals": "a&b=c",
    "plus, percent, space": "x+y%20 z",
    "unicode": "é€😀 ü",
    "looks like a field": "&apiPassword=x&result=ERROR",
}


@pytest.mark.parametrize("value", CORRELATION_IDS.values(), ids=CORRELATION_IDS.keys())
def test_correlation_id_is_echoed_exactly(gateway: EmbeddedGateway, value: str) -> None:
    """correlationId comes back unchanged, whatever characters it holds."""
    status, fields = post(gateway, with_fields(correlationId=value))
    assert status == 201
    assert fields["correlationId"] == value
    assert fields["result"] == "SUCCESS"


@pytest.mark.parametrize("fields", [GOOD, with_fields(correlationId="")], ids=["absent", "empty"])
def test_no_correlation_id_when_none_given(
    gateway: EmbeddedGateway, fields: dict[str, str]
) -> None:
    """An absent or empty correlationId is not in the answer: empty is the same as absent."""
    status, answer = post(gateway, fields)
    assert status == 201
    assert "correlationId" not in answer


@pytest.mark.parametrize(("given", "echoed"), [("1", "1"), ("25", "25"), ("07", "7")])
def test_authentication_limit_is_echoed(gateway: EmbeddedGateway, given: str, echoed: str) -> None:
    """A valid session.authenticationLimit (1 to 25) is accepted and echoed as an integer."""
    status, fields = post(gateway, with_fields(session__authenticationLimit=given))
    assert status == 201
    assert fields["session.authenticationLimit"] == echoed


@pytest.mark.parametrize("version", ["1", "99", "100", "099"])
def test_supported_versions_are_stored(gateway: EmbeddedGateway, version: str) -> None:
    """Every supported API version creates a session that remembers it, as a number."""
    status, fields = post(gateway, GOOD, version)
    assert status == 201
    stored = gateway.session(fields["session.id"])
    assert stored is not None
    assert stored.api_version == int(version)


def test_second_merchant_authenticates_with_its_own_password(gateway: EmbeddedGateway) -> None:
    """Each account logs in with its own credentials and gets sessions of its own."""
    status, fields = post(
        gateway,
        with_fields(apiUsername=f"merchant.{OTHER}", apiPassword=OTHER_PASSWORD, merchant=OTHER),
    )
    assert status == 201
    assert fields["merchant"] == OTHER


def test_session_ids_are_unique_and_unpredictable(gateway: EmbeddedGateway) -> None:
    """1000 sessions get 1000 distinct ids and versions, drawing on the whole [0-9A-Z] alphabet."""
    answers = [post(gateway, GOOD)[1] for _ in range(1000)]
    ids = [a["session.id"] for a in answers]
    assert len(set(ids)) == 1000
    assert len({a["session.version"] for a in answers}) == 1000
    assert all(SESSION_ID.fullmatch(i) for i in ids)
    tails = [i.removeprefix("SESSION0002") for i in ids]
    # 20 000 random characters miss one of 36 with odds of about 36 * e**-555: never.
    assert set("".join(tails)) == set(string.digits + string.ascii_uppercase)
    for position in range(20):  # every position varies: no counter or timestamp inside
        assert len({t[position] for t in tails}) > 20
    assert gateway.session_count == 1000


# --- refusals ------------------------------------------------------------------------------------

BAD_CREDENTIALS = {
    "missing username": with_fields(drop=("apiUsername",)),
    "empty username": with_fields(apiUsername=""),
    "no prefix": with_fields(apiUsername=MERCHANT),
    "wrong prefix case": with_fields(apiUsername=f"Merchant.{MERCHANT}"),
    "wrong separator": with_fields(apiUsername=f"merchant:{MERCHANT}"),
    "unknown merchant": with_fields(apiUsername="merchant.NOSUCH"),
    "merchant id case differs": with_fields(apiUsername=f"merchant.{MERCHANT.lower()}"),
    "wrong password": with_fields(apiPassword="0" * 32),
    "another account's password": with_fields(apiPassword=OTHER_PASSWORD),
    "password prefix": with_fields(apiPassword=PASSWORD[:-1]),
    "missing password": with_fields(drop=("apiPassword",)),
    "empty password": with_fields(apiPassword=""),
    "no credentials at all": with_fields(drop=("apiUsername", "apiPassword")),
}


@pytest.mark.parametrize("fields", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
def test_bad_credentials_are_401(gateway: EmbeddedGateway, fields: dict[str, str]) -> None:
    """Missing or wrong credentials get HTTP 401 and exactly the real gateway's body."""
    reply = gateway.handle(VERSION, nvp.encode(fields))
    assert reply == Reply(401, INVALID_CREDENTIALS)
    assert gateway.session_count == 0


VALIDATION_ERRORS = {
    "missing apiOperation": (
        with_fields(drop=("apiOperation",)),
        field_error("apiOperation", "MISSING", "Missing parameter 'apiOperation'."),
    ),
    "empty apiOperation": (
        with_fields(apiOperation=""),
        field_error("apiOperation", "MISSING", "Missing parameter 'apiOperation'."),
    ),
    "lower-case apiOperation": (
        with_fields(apiOperation="create_session"),
        field_error("apiOperation", "INVALID", "Value 'create_session' is invalid."),
    ),
    "unknown apiOperation": (
        with_fields(apiOperation="FROBNICATE"),
        field_error("apiOperation", "INVALID", "Value 'FROBNICATE' is invalid."),
    ),
    "real but refused apiOperation": (
        with_fields(apiOperation="VERIFY"),
        field_error(
            "apiOperation",
            "INVALID",
            "Value 'VERIFY' is invalid. Verify request not permitted for this merchant.",
        ),
    ),
    "missing merchant": (
        with_fields(drop=("merchant",)),
        field_error("merchant", "MISSING", "Missing parameter 'merchant'."),
    ),
    "empty merchant": (
        with_fields(merchant=""),
        field_error("merchant", "MISSING", "Missing parameter 'merchant'."),
    ),
    "merchant too long": (
        with_fields(merchant="M" * 13),
        field_error("merchant", "INVALID", f"Value '{'M' * 13}' is invalid."),
    ),
    "merchant with a space": (
        with_fields(merchant="TEST MERCH"),
        field_error("merchant", "INVALID", "Value 'TEST MERCH' is invalid."),
    ),
    "merchant of another account": (
        with_fields(merchant=OTHER),
        {
            "error.cause": "INVALID_REQUEST",
            "error.explanation": "Authenticated entity not authorised to perform operation for "
            "target entity",
            "result": "ERROR",
        },
    ),
    "unsupported field": (
        with_fields(order__amount="1.00"),
        field_error("order.amount", "UNSUPPORTED", "Unexpected parameter 'order.amount'"),
    ),
    "field names are case-sensitive": (
        with_fields(correlationid="c"),
        field_error("correlationid", "UNSUPPORTED", "Unexpected parameter 'correlationid'"),
    ),
    "very long field name is clipped": (
        {**GOOD, "x" * 300: "1"},
        field_error("x" * 97 + "...", "UNSUPPORTED", f"Unexpected parameter '{'x' * 97}...'"),
    ),
}
for _bad in ["0", "26", "-1", "1.5", "", " 3", "abc", "²", "99999999999999999999"]:
    VALIDATION_ERRORS[f"authenticationLimit {_bad!r}"] = (
        with_fields(session__authenticationLimit=_bad),
        field_error("session.authenticationLimit", "INVALID", f"Value '{_bad}' is invalid."),
    )


@pytest.mark.parametrize(
    ("fields", "expected"), VALIDATION_ERRORS.values(), ids=VALIDATION_ERRORS.keys()
)
def test_validation_errors(
    gateway: EmbeddedGateway, fields: dict[str, str], expected: dict[str, str]
) -> None:
    """Each invalid request gets 400 with the gateway's cause, field, type and explanation."""
    assert post(gateway, fields) == (400, expected)
    assert gateway.session_count == 0


@pytest.mark.parametrize(
    ("fields", "body"),
    [
        (
            # The real body refuses PAY; this gateway takes PAY, and refuses DISBURSEMENT so.
            with_fields(apiOperation="DISBURSEMENT"),
            b"error.cause=INVALID_REQUEST&error.explanation=Value+%27DISBURSEMENT%27+is+invalid."
            b"+Disbursement+request+not+permitted+for+this+merchant.&error.field=apiOperation"
            b"&error.validationType=INVALID&result=ERROR",
        ),
        (
            with_fields(merchant=OTHER),
            b"error.cause=INVALID_REQUEST&error.explanation=Authenticated+entity+not+authorised"
            b"+to+perform+operation+for+target+entity&result=ERROR",
        ),
    ],
    ids=["operation not permitted", "merchant mismatch"],
)
def test_real_error_bodies_byte_for_byte(
    gateway: EmbeddedGateway, fields: dict[str, str], body: bytes
) -> None:
    """Where a real gateway body is on record, the embedded gateway answers that very body."""
    assert gateway.handle(VERSION, nvp.encode(fields)) == Reply(400, body)


GARBAGE = {
    "empty": b"",
    "binary": b"\xff\xfe\x00\x01",
    "bad escape": b"apiOperation=CREATE%ZZSESSION",
    "truncated escape": b"merchant=TEST%4",
    "not UTF-8": b"merchant=%C3",
    "no equals sign": b"apiOperation",
    "empty name": b"=CREATE_SESSION",
    "trailing ampersand": nvp.encode(GOOD) + b"&",
    "html": b"<html><body>hello</body></html>",
}


@pytest.mark.parametrize("body", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_bodies(gateway: EmbeddedGateway, body: bytes) -> None:
    """A body that is not valid NVP is 400 INVALID_REQUEST, naming no field."""
    reply = answered(gateway.handle(VERSION, body))
    assert reply.status == 400
    assert nvp.decode(reply.body) == NOT_NVP


BAD_VERSIONS = {
    "zero": "0",
    "too new": "101",
    "letters": "abc",
    "empty": "",
    "decimal point": "1.0",
    "negative": "-1",
    "space": "100 ",
    "superscript digit": "²",
    "arabic-indic digits": "\u0661\u0660\u0660",
    "huge": "9" * 30,
    "lone surrogate": "\udc80",
}


@pytest.mark.parametrize("version", BAD_VERSIONS.values(), ids=BAD_VERSIONS.keys())
def test_bad_versions(gateway: EmbeddedGateway, version: str) -> None:
    """A version that is not a supported decimal number is 400 INVALID_REQUEST, quoting it."""
    status, fields = post(gateway, GOOD, version)
    assert status == 400
    assert fields["error.cause"] == "INVALID_REQUEST"
    assert fields["result"] == "ERROR"
    assert fields["error.explanation"].startswith("Unsupported API version '")
    assert "error.field" not in fields
    assert len(fields["error.explanation"]) <= 1000


PRECEDENCE = {
    "body before version": (b"\xff", "0", 400, "Request body is not"),
    "version before credentials": (
        nvp.encode(with_fields(apiPassword="wrong")),
        "0",
        400,
        "Unsupported API version",
    ),
    "credentials before apiOperation": (
        nvp.encode(with_fields(drop=("apiOperation",), apiPassword="wrong")),
        VERSION,
        401,
        "Invalid credentials.",
    ),
    "apiOperation before merchant": (
        nvp.encode(with_fields(drop=("apiOperation", "merchant"))),
        VERSION,
        400,
        "Missing parameter 'apiOperation'.",
    ),
    "merchant before other fields": (
        nvp.encode(with_fields(merchant="", order__id="1")),
        VERSION,
        400,
        "Missing parameter 'merchant'.",
    ),
    "first unexpected field in body order": (
        nvp.encode({"b.second": "1", **GOOD, "a.first": "1"}),
        VERSION,
        400,
        "Unexpected parameter 'b.second'",
    ),
}


@pytest.mark.parametrize(
    ("body", "version", "status", "explanation"), PRECEDENCE.values(), ids=PRECEDENCE.keys()
)
def test_check_order(
    gateway: EmbeddedGateway, body: bytes, version: str, status: int, explanation: str
) -> None:
    """With several faults, the one MPGS checks first is the one reported."""
    reply = answered(gateway.handle(version, body))
    assert reply.status == status
    assert nvp.decode(reply.body)["error.explanation"].startswith(explanation)


# --- certificate authentication ------------------------------------------------------------------

CERT_ONLY = "CERTONLY"
CERT_ACCOUNTS: dict[str, str | None] = {**ACCOUNTS, CERT_ONLY: None}


def for_merchant(merchant: str, drop: tuple[str, ...] = (), **changes: str) -> dict[str, str]:
    """A request for ``merchant`` with no credentials but those given."""
    fields = {"apiOperation": "CREATE_SESSION", "merchant": merchant}
    fields.update({k.replace("__", "."): v for k, v in changes.items()})
    return {k: v for k, v in fields.items() if k not in drop}


def post_with(
    gateway: EmbeddedGateway, fields: Mapping[str, str], certificate: str
) -> tuple[int, dict[str, str]]:
    """One request through the in-process face with a verified certificate's CN."""
    reply = answered(gateway.handle(VERSION, nvp.encode(fields), certificate=certificate))
    return reply.status, nvp.decode(reply.body)


# (certificate CN, request fields, status expected)
BY_CERTIFICATE = {
    "certificate alone": (CERT_ONLY, for_merchant(CERT_ONLY), 201),
    "certificate with its apiUsername": (
        CERT_ONLY,
        for_merchant(CERT_ONLY, apiUsername=f"merchant.{CERT_ONLY}"),
        201,
    ),
    "certificate of a password merchant": (MERCHANT, for_merchant(MERCHANT), 201),
    "certificate and the right password": (MERCHANT, GOOD, 201),
    "certificate and a wrong password": (MERCHANT, with_fields(apiPassword="0" * 32), 401),
    "certificate-only merchant sent a password": (
        CERT_ONLY,
        for_merchant(CERT_ONLY, apiUsername=f"merchant.{CERT_ONLY}", apiPassword="x"),
        401,
    ),
    "certificate-only merchant with no certificate": (None, for_merchant(CERT_ONLY), 401),
    "certificate of another merchant": (OTHER, for_merchant(CERT_ONLY), 401),
    "apiUsername names another merchant": (
        CERT_ONLY,
        for_merchant(OTHER, apiUsername=f"merchant.{OTHER}"),
        401,
    ),
    "apiUsername without its prefix": (
        CERT_ONLY,
        for_merchant(CERT_ONLY, apiUsername=CERT_ONLY),
        401,
    ),
    "certificate of an unknown merchant": ("NOSUCH", for_merchant("NOSUCH"), 401),
    "unknown CN, the password still works": ("localhost", GOOD, 201),
    "certificate, no merchant field": (CERT_ONLY, for_merchant(CERT_ONLY, drop=("merchant",)), 401),
}


@pytest.mark.parametrize(
    ("certificate", "fields", "status"), BY_CERTIFICATE.values(), ids=BY_CERTIFICATE.keys()
)
def test_certificate_authentication(
    certificate: str | None, fields: dict[str, str], status: int
) -> None:
    """A verified certificate's CN vouches for the merchant the request names; a password that
    is sent must still be right; anything else is the gateway's 401."""
    gateway = EmbeddedGateway(CERT_ACCOUNTS)
    answer = answered(gateway.handle(VERSION, nvp.encode(fields), certificate=certificate))
    assert answer.status == status


def test_a_certificate_for_one_merchant_cannot_ask_for_another() -> None:
    """Authenticated by certificate with apiUsername, a request for another merchant is the
    gateway's "not authorised" 400, as with a password."""
    gateway = EmbeddedGateway(CERT_ACCOUNTS)
    fields = for_merchant(OTHER, apiUsername=f"merchant.{CERT_ONLY}")
    status, answer = post_with(gateway, fields, CERT_ONLY)
    assert (status, answer["error.explanation"]) == (
        400,
        "Authenticated entity not authorised to perform operation for target entity",
    )


def test_set_password_puts_the_new_one_in_force(gateway: EmbeddedGateway) -> None:
    """After set_password the old password is refused and the new one accepted."""
    gateway.set_password(MERCHANT, "new-password")
    statuses = (
        post(gateway, GOOD)[0],
        post(gateway, with_fields(apiPassword="new-password"))[0],
    )
    assert statuses == (401, 201)


@pytest.mark.parametrize(
    ("merchant", "password", "message"),
    [("NOSUCH", "x", "unknown merchant"), (MERCHANT, "", "empty password")],
    ids=["unknown merchant", "empty password"],
)
def test_set_password_is_validated(
    gateway: EmbeddedGateway, merchant: str, password: str, message: str
) -> None:
    """A password for a merchant the gateway does not know, or an empty one, is refused."""
    with pytest.raises(ValueError, match=message):
        gateway.set_password(merchant, password)


# --- the session store ---------------------------------------------------------------------------


def test_sessions_expire(gateway: EmbeddedGateway, clock: FakeClock) -> None:
    """A session lives for the TTL on the gateway's clock, then reads as None and is dropped."""
    session_id = post(gateway, GOOD)[1]["session.id"]
    clock.now += 899.9
    assert gateway.session(session_id) is not None
    assert gateway.session_count == 1
    clock.now += 0.1
    assert gateway.session(session_id) is None
    assert gateway.session_count == 0


def test_unknown_session_reads_as_none(gateway: EmbeddedGateway) -> None:
    """An id the gateway never issued reads as None."""
    assert gateway.session("SESSION0002" + "A" * 20) is None


def test_store_is_bounded(clock: FakeClock) -> None:
    """When a merchant's share of the store is full of live sessions the answer is 503
    SERVER_BUSY; expiry makes room."""
    gateway = EmbeddedGateway(
        ACCOUNTS,
        session_ttl_seconds=10.0,
        max_sessions=6,
        max_sessions_per_merchant=3,
        clock=clock,
    )
    for _ in range(3):
        assert post(gateway, GOOD)[0] == 201
        clock.now += 1.0
    status, fields = post(gateway, GOOD)
    assert status == 503
    assert set(fields) == {"error.cause", "error.explanation", "result"}
    assert fields["error.cause"] == "SERVER_BUSY"
    assert fields["result"] == "ERROR"
    assert gateway.session_count == 3
    clock.now += 7.0  # the first session is now 10 s old
    assert post(gateway, GOOD)[0] == 201
    assert post(gateway, GOOD)[0] == 503
    assert gateway.session_count == 3


def test_store_keeps_nothing_for_a_refusal(gateway: EmbeddedGateway) -> None:
    """Only a successful CREATE_SESSION adds a session."""
    for fields in [*BAD_CREDENTIALS.values(), *(f for f, _ in VALIDATION_ERRORS.values())]:
        post(gateway, fields)
    for body in GARBAGE.values():
        gateway.handle(VERSION, body)
    assert gateway.session_count == 0


# --- secrets and construction --------------------------------------------------------------------


def test_password_never_in_a_reply_or_repr(gateway: EmbeddedGateway) -> None:
    """No answer of any kind, nor the gateway's repr or str, holds a password in any spelling."""
    requests = [
        GOOD,
        with_fields(correlationId="c"),
        *BAD_CREDENTIALS.values(),
        *(fields for fields, _ in VALIDATION_ERRORS.values()),
    ]
    replies = [answered(gateway.handle(VERSION, nvp.encode(r))) for r in requests]
    replies += [answered(gateway.handle("0", nvp.encode(GOOD)))]
    replies += [answered(gateway.handle(VERSION, body)) for body in GARBAGE.values()]
    for reply in replies:
        assert_no_password(reply.body)
    assert_no_password(repr(gateway))
    assert_no_password(str(gateway))


def test_repr(gateway: EmbeddedGateway) -> None:
    """The repr names merchants and counts sessions, and nothing more."""
    post(gateway, GOOD)
    assert repr(gateway) == f"EmbeddedGateway(merchants=['{MERCHANT}', '{OTHER}'], sessions=1)"


def test_accounts_are_copied() -> None:
    """Changing the mapping after construction changes nobody's credentials."""
    accounts = {MERCHANT: PASSWORD}
    gateway = EmbeddedGateway(accounts)
    accounts[MERCHANT] = "changed"
    assert post(gateway, GOOD)[0] == 201


@pytest.mark.parametrize(
    ("accounts", "options", "message"),
    [
        ({"bad merchant": "x"}, {}, "invalid merchant id"),
        ({"M" * 13: "x"}, {}, "invalid merchant id"),
        ({MERCHANT: ""}, {}, "empty password"),
        ({MERCHANT: "x"}, {"session_ttl_seconds": 0.0}, "session_ttl_seconds"),
        ({MERCHANT: "x"}, {"max_sessions": 0}, "max_sessions"),
    ],
    ids=["space in id", "id too long", "empty password", "zero TTL", "no room"],
)
def test_construction_is_validated(
    accounts: dict[str, str], options: dict[str, float], message: str
) -> None:
    """Accounts and limits the gateway could not honour are refused at construction."""
    with pytest.raises(ValueError, match=message):
        EmbeddedGateway(accounts, **options)  # type: ignore[arg-type]


@given(st.text(max_size=12), st.binary(max_size=256))
def test_any_input_gets_an_nvp_answer(version: str, body: bytes) -> None:
    """Whatever the version and body, handle answers valid NVP with a result; it never raises."""
    reply = answered(EmbeddedGateway(ACCOUNTS).handle(version, body))
    assert reply.status in {201, 400, 401}
    assert "result" in nvp.decode(reply.body)


# --- the HTTP face -------------------------------------------------------------------------------


@dataclass
class HttpGateway:
    """The HTTP face running on loopback, and the gateway behind it."""

    gateway: EmbeddedGateway
    base: str

    def url(self, version: str = VERSION) -> str:
        return f"{self.base}/api/nvp/version/{version}"


@pytest.fixture
async def http_gateway() -> AsyncIterator[HttpGateway]:
    gateway = EmbeddedGateway(ACCOUNTS)
    runner, port = await start_http_gateway(gateway, "127.0.0.1", 0)
    yield HttpGateway(gateway, f"http://127.0.0.1:{port}")
    await runner.cleanup()


HTTP_CASES = {
    "good request": (nvp.encode(with_fields(correlationId="a&b=c é")), 201),
    "bad credentials": (nvp.encode(with_fields(apiPassword="wrong")), 401),
    "garbage body": (b"\xff\xfe%zz", 400),
    "unknown operation": (nvp.encode(with_fields(apiOperation="PAY")), 400),
}


@pytest.mark.parametrize(("body", "status"), HTTP_CASES.values(), ids=HTTP_CASES.keys())
async def test_http_face_answers_like_the_in_process_one(
    http_gateway: HttpGateway, body: bytes, status: int
) -> None:
    """Over HTTP the status, Content-Type and NVP body are those of handle() for the same bytes."""
    async with (
        aiohttp.ClientSession() as client,
        client.post(http_gateway.url(), data=body, headers={"Content-Type": nvp.CONTENT_TYPE}) as r,
    ):
        assert r.status == status
        assert r.headers["Content-Type"] == nvp.CONTENT_TYPE
        fields = nvp.decode(await r.read())
    expected = nvp.decode(answered(EmbeddedGateway(ACCOUNTS).handle(VERSION, body)).body)
    if status == 201:  # fresh random values each time; the rest must match
        assert SESSION_ID.fullmatch(fields.pop("session.id"))
        assert len(fields.pop("session.version")) == 10
        expected = {k: v for k, v in expected.items() if k not in {"session.id", "session.version"}}
        assert http_gateway.gateway.session_count == 1
    assert fields == expected
    assert_no_password(str(fields))


async def test_http_face_passes_the_version_from_the_path(http_gateway: HttpGateway) -> None:
    """The {N} of the path is the API version: an unsupported one is the gateway's NVP error."""
    async with (
        aiohttp.ClientSession() as client,
        client.post(http_gateway.url("101"), data=nvp.encode(GOOD)) as r,
    ):
        assert r.status == 400
        fields = nvp.decode(await r.read())
    assert fields["error.explanation"] == "Unsupported API version '101'."


async def test_http_face_refuses_an_oversized_body_in_nvp(http_gateway: HttpGateway) -> None:
    """A body over 1 MiB gets 413 with an INVALID_REQUEST NVP body, not an HTML page."""
    body = nvp.encode(with_fields(correlationId="x" * (1024 * 1024)))
    async with (
        aiohttp.ClientSession() as client,
        client.post(http_gateway.url(), data=body) as r,
    ):
        assert r.status == 413
        assert r.headers["Content-Type"] == nvp.CONTENT_TYPE
        fields = nvp.decode(await r.read())
    assert fields["error.cause"] == "INVALID_REQUEST"
    assert fields["result"] == "ERROR"
    assert http_gateway.gateway.session_count == 0


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/api/nvp/version/100", 405), ("POST", "/api/rest/version/100", 404)],
    ids=["GET", "other path"],
)
async def test_http_face_serves_only_nvp_posts(
    http_gateway: HttpGateway, method: str, path: str, status: int
) -> None:
    """Anything but POST to the NVP path is refused by HTTP itself and creates nothing."""
    async with (
        aiohttp.ClientSession() as client,
        client.request(method, http_gateway.base + path) as r,
    ):
        assert r.status == status
    assert http_gateway.gateway.session_count == 0


async def test_port_in_use_raises_os_error() -> None:
    """Binding a port another socket listens on raises OSError for the CLI to report."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(OSError, match=str(port)):
            await start_http_gateway(EmbeddedGateway(ACCOUNTS), "127.0.0.1", port)
