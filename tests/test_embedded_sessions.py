"""The embedded gateway's session store: UPDATE_SESSION and RETRIEVE_SESSION as the contract's §8
has them, each behaviour through ``EmbeddedGateway.handle`` and over real HTTP on loopback."""

from __future__ import annotations

import re
import string
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from adapter.core import nvp
from adapter.embedded import EmbeddedGateway, start_http_gateway
from tests.test_embedded import (
    ACCOUNTS,
    MERCHANT,
    OTHER,
    OTHER_PASSWORD,
    PASSWORD,
    VERSION,
    FakeClock,
    answered,
    assert_no_password,
    field_error,
)

NEW_VERSION = re.compile(r"[0-9a-z]{10}")
CREDENTIALS = {
    MERCHANT: {"apiUsername": f"merchant.{MERCHANT}", "apiPassword": PASSWORD},
    OTHER: {"apiUsername": f"merchant.{OTHER}", "apiPassword": OTHER_PASSWORD},
}
ORDER = {
    "order.amount": "10.50",
    "order.currency": "EUR",
    "order.id": "order-1",
    "order.reference": "ref-1",
    "order.description": "Two tickets",
}
SESSION_KEYS = {
    "merchant",
    "result",
    "session.id",
    "session.updateStatus",
    "session.version",
    "session.authenticationLimit",
}
BUSY = {
    "error.cause": "SERVER_BUSY",
    "error.explanation": "The gateway is busy; try again later.",
    "result": "ERROR",
}

Reply = tuple[int, dict[str, str]]


def unknown_session(session_id: str) -> dict[str, str]:
    """The answer for a session id the caller may not see: never issued, expired, not theirs."""
    return field_error("session.id", "INVALID", f"Value '{session_id}' is invalid.")


def clipped(value: str) -> str:
    """A value as an error quotes it: 100 characters at most."""
    return value if len(value) <= 100 else value[:97] + "..."


@dataclass
class Face:
    """One face of a gateway (in-process or HTTP), with the requests a backend sends."""

    gateway: EmbeddedGateway
    send: Callable[[Mapping[str, str], str], Awaitable[Reply]]

    async def call(
        self, operation: str, merchant: str = MERCHANT, version: str = VERSION, **fields: str
    ) -> Reply:
        """One request; dotted names come in as ``a__b``."""
        body = {"apiOperation": operation, **CREDENTIALS[merchant], "merchant": merchant}
        body.update({k.replace("__", "."): v for k, v in fields.items()})
        return await self.send(body, version)

    async def create(self, merchant: str = MERCHANT, **fields: str) -> dict[str, str]:
        status, answer = await self.call("CREATE_SESSION", merchant, **fields)
        assert status == 201, answer
        return answer

    async def update(
        self, session_id: str, merchant: str = MERCHANT, version: str = VERSION, **fields: str
    ) -> Reply:
        return await self.call(
            "UPDATE_SESSION", merchant, version, session__id=session_id, **fields
        )

    async def update_with(self, session_id: str, fields: Mapping[str, str]) -> Reply:
        """An update with NVP names as they are (``order.amount``)."""
        body = {
            "apiOperation": "UPDATE_SESSION",
            **CREDENTIALS[MERCHANT],
            "merchant": MERCHANT,
            "session.id": session_id,
            **fields,
        }
        return await self.send(body, VERSION)

    async def retrieve(
        self, session_id: str, merchant: str = MERCHANT, version: str = VERSION, **fields: str
    ) -> Reply:
        return await self.call(
            "RETRIEVE_SESSION", merchant, version, session__id=session_id, **fields
        )

    async def held(self, session_id: str) -> dict[str, str]:
        """What a successful retrieve shows of the session."""
        status, answer = await self.retrieve(session_id)
        assert status == 201, answer
        return answer


OpenFace = Callable[..., Awaitable[Face]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["in-process", "http"])
async def open_face(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[OpenFace]:
    """Opens a gateway with the given options on the test's clock, behind one of its faces."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def open_(**options: Any) -> Face:
        gateway = EmbeddedGateway(ACCOUNTS, clock=clock, **options)
        if request.param == "in-process":

            async def in_process(fields: Mapping[str, str], version: str) -> Reply:
                reply = answered(gateway.handle(version, nvp.encode(fields)))
                return reply.status, nvp.decode(reply.body)

            return Face(gateway, in_process)
        runner, port = await start_http_gateway(gateway, "127.0.0.1", 0)
        client = aiohttp.ClientSession()
        cleanups.extend([runner.cleanup, client.close])

        async def over_http(fields: Mapping[str, str], version: str) -> Reply:
            async with client.post(
                f"http://127.0.0.1:{port}/api/nvp/version/{version}",
                data=nvp.encode(fields),
                headers={"Content-Type": nvp.CONTENT_TYPE},
            ) as response:
                return response.status, nvp.decode(await response.read())

        return Face(gateway, over_http)

    yield open_
    for cleanup in reversed(cleanups):
        await cleanup()


@pytest.fixture
async def face(open_face: OpenFace) -> Face:
    return await open_face()


# --- the round trip ------------------------------------------------------------------------------


async def test_create_update_retrieve_round_trip(face: Face) -> None:
    """What an update stores, a retrieve shows: the session's own fields and exactly the order."""
    session_id = (await face.create())["session.id"]
    status, updated = await face.update_with(session_id, ORDER)
    assert status == 201
    answer = await face.held(session_id)
    assert answer == {
        "merchant": MERCHANT,
        "result": "SUCCESS",
        "session.id": session_id,
        "session.updateStatus": "SUCCESS",
        "session.version": updated["session.version"],
        "session.authenticationLimit": "5",
        **ORDER,
    }


async def test_update_answers_as_retrieve_does(face: Face) -> None:
    """An update's answer is the session as a retrieve right after it shows it."""
    session_id = (await face.create())["session.id"]
    status, updated = await face.update_with(session_id, ORDER)
    assert status == 201
    assert updated == await face.held(session_id)


async def test_new_session_retrieves_as_no_update(face: Face) -> None:
    """A session nobody updated shows NO_UPDATE, the version it was created with, and no data."""
    created = await face.create()
    answer = await face.held(created["session.id"])
    assert set(answer) == SESSION_KEYS
    assert answer["session.updateStatus"] == "NO_UPDATE"
    assert answer["session.version"] == created["session.version"]


async def test_update_overwrites_what_it_names_and_removes_nothing(face: Face) -> None:
    """A second update replaces the fields it names and leaves the others as they were."""
    session_id = (await face.create())["session.id"]
    await face.update_with(session_id, ORDER)
    await face.update_with(session_id, {"order.id": "order-2", "billing.address.city": "Oslo"})
    answer = await face.held(session_id)
    assert {k: v for k, v in answer.items() if k not in SESSION_KEYS} == {
        **ORDER,
        "order.id": "order-2",
        "billing.address.city": "Oslo",
    }


async def test_every_update_gets_a_new_version(face: Face) -> None:
    """Each successful update gives the session a version it never had, of 10 of 0-9 a-z."""
    created = await face.create()
    versions = [created["session.version"]]
    for n in range(5):
        status, answer = await face.update(created["session.id"], order__id=f"order-{n}")
        assert status == 201
        versions.append(answer["session.version"])
    assert len(set(versions)) == 6
    assert all(NEW_VERSION.fullmatch(v) for v in versions)


async def test_update_with_the_current_version_succeeds(face: Face) -> None:
    """session.version naming the version the session has is accepted."""
    created = await face.create()
    status, answer = await face.update(
        created["session.id"], session__version=created["session.version"], order__id="o"
    )
    assert status == 201
    assert answer["order.id"] == "o"


async def test_correlation_id_is_echoed_not_stored(face: Face) -> None:
    """correlationId comes back with the update that sent it, and not with a later retrieve."""
    session_id = (await face.create())["session.id"]
    _, updated = await face.update(session_id, correlationId="c-1", order__id="o")
    assert updated["correlationId"] == "c-1"
    assert "correlationId" not in await face.held(session_id)


async def test_card_data_is_masked_when_shown(face: Face) -> None:
    """A retrieve shows the card number's first 6 and last 4 digits and no security code; the
    session keeps the real values."""
    session_id = (await face.create())["session.id"]
    await face.update(
        session_id,
        sourceOfFunds__provided__card__number="5123456789012346",
        sourceOfFunds__provided__card__securityCode="100",
    )
    answer = await face.held(session_id)
    assert answer["sourceOfFunds.provided.card.number"] == "512345xxxxxx2346"
    assert answer["sourceOfFunds.provided.card.securityCode"] == "xxx"
    stored = face.gateway.session(session_id)
    assert stored is not None
    assert stored.data["sourceOfFunds.provided.card.number"] == "5123456789012346"


# --- refused updates -----------------------------------------------------------------------------

INVALID_VALUES = {
    "negative amount": ("order.amount", "-1"),
    "exponent": ("order.amount", "1e3"),
    "trailing point": ("order.amount", "1."),
    "leading point": ("order.amount", ".5"),
    "four decimals": ("order.amount", "1.2345"),
    "15 integer digits": ("order.amount", "1" * 15),
    "comma": ("order.amount", "1,50"),
    "empty amount": ("order.amount", ""),
    "lower-case currency": ("order.currency", "eur"),
    "four-letter currency": ("order.currency", "EURO"),
    "order.id of 41": ("order.id", "x" * 41),
    "empty order.id": ("order.id", ""),
    "order.reference of 41": ("order.reference", "x" * 41),
    "order.description of 128": ("order.description", "x" * 128),
    "empty billing city": ("billing.address.city", ""),
}


@pytest.mark.parametrize(("name", "value"), INVALID_VALUES.values(), ids=INVALID_VALUES.keys())
async def test_invalid_value_is_refused_naming_its_field(face: Face, name: str, value: str) -> None:
    """An update with a value of the wrong form is INVALID_REQUEST naming that field."""
    session_id = (await face.create())["session.id"]
    partner = {"order.amount": "1", "order.currency": "EUR"}  # so only ``name`` is at fault
    assert await face.update_with(session_id, {**partner, name: value}) == (
        400,
        field_error(name, "INVALID", f"Value '{clipped(value)}' is invalid."),
    )


async def test_failed_update_records_failure_and_keeps_the_fields(face: Face) -> None:
    """A refused update stores none of its fields, keeps the version, and marks FAILURE."""
    session_id = (await face.create())["session.id"]
    _, before = await face.update_with(session_id, ORDER)
    status, _ = await face.update_with(
        session_id, {"order.id": "changed", "order.amount": "1.2345", "order.currency": "USD"}
    )
    assert status == 400
    assert await face.held(session_id) == {**before, "session.updateStatus": "FAILURE"}


async def test_an_update_after_a_failure_succeeds(face: Face) -> None:
    """FAILURE lasts until the next successful update, which is SUCCESS again."""
    session_id = (await face.create())["session.id"]
    await face.update(session_id, order__id="")
    status, answer = await face.update(session_id, order__id="o")
    assert (status, answer["session.updateStatus"]) == (201, "SUCCESS")


async def test_the_first_bad_field_in_the_body_is_named(face: Face) -> None:
    """With several bad values, the one that comes first in the body is reported."""
    session_id = (await face.create())["session.id"]
    status, answer = await face.update_with(
        session_id, {"order.reference": "", "order.id": "", "order.description": ""}
    )
    assert (status, answer["error.field"]) == (400, "order.reference")


@pytest.mark.parametrize(
    ("given", "missing"),
    [({"order.amount": "5"}, "order.currency"), ({"order.currency": "EUR"}, "order.amount")],
    ids=["amount alone", "currency alone"],
)
async def test_amount_and_currency_come_together(
    face: Face, given: dict[str, str], missing: str
) -> None:
    """A session may not be left with an amount and no currency, or the other way round."""
    session_id = (await face.create())["session.id"]
    assert await face.update_with(session_id, given) == (
        400,
        field_error(missing, "MISSING", f"Missing parameter '{missing}'."),
    )


async def test_a_new_currency_for_a_stored_amount_is_accepted(face: Face) -> None:
    """Once a session holds both, either may be changed alone: it still holds both."""
    session_id = (await face.create())["session.id"]
    await face.update_with(session_id, ORDER)
    status, answer = await face.update(session_id, order__currency="USD")
    assert (status, answer["order.currency"], answer["order.amount"]) == (201, "USD", "10.50")


UNSUPPORTED_IN_UPDATE = {
    "unknown group": "payer.name",
    "bare group": "order",
    "upper-case part": "order.Amount",
    "authentication limit": "session.authenticationLimit",
    "session field of the gateway": "session.updateStatus",
    "interaction": "interaction.returnUrl",
}


@pytest.mark.parametrize("name", UNSUPPORTED_IN_UPDATE.values(), ids=UNSUPPORTED_IN_UPDATE.keys())
async def test_unknown_field_in_update_is_unsupported(face: Face, name: str) -> None:
    """A name a session cannot hold is UNSUPPORTED, as for CREATE_SESSION, and the session is
    not marked: the request was refused before the session was looked at."""
    session_id = (await face.create())["session.id"]
    assert await face.update_with(session_id, {name: "1"}) == (
        400,
        field_error(name, "UNSUPPORTED", f"Unexpected parameter '{name}'"),
    )
    assert (await face.held(session_id))["session.updateStatus"] == "NO_UPDATE"


async def test_retrieve_takes_no_session_fields(face: Face) -> None:
    """RETRIEVE_SESSION takes merchant, correlationId and session.id only."""
    session_id = (await face.create())["session.id"]
    assert await face.retrieve(session_id, order__amount="1") == (
        400,
        field_error("order.amount", "UNSUPPORTED", "Unexpected parameter 'order.amount'"),
    )


# --- versions ------------------------------------------------------------------------------------


async def test_stale_version_is_refused_and_changes_nothing(face: Face) -> None:
    """An update naming a version the session no longer has is INVALID on session.version, and
    the session keeps its fields, version and update status."""
    created = await face.create()
    session_id = created["session.id"]
    _, before = await face.update_with(session_id, ORDER)
    stale = created["session.version"]
    assert await face.update(session_id, session__version=stale, order__id="late") == (
        400,
        field_error("session.version", "INVALID", f"Value '{stale}' is invalid."),
    )
    assert await face.held(session_id) == before


@pytest.mark.parametrize("version", ["", "ABCDEF1234", "abc", "0123456789a"])
async def test_malformed_version_is_refused_and_changes_nothing(face: Face, version: str) -> None:
    """A session.version that is not 10 of 0-9 a-z can be no session's: refused the same way."""
    session_id = (await face.create())["session.id"]
    assert await face.update(session_id, session__version=version, order__id="o") == (
        400,
        field_error("session.version", "INVALID", f"Value '{version}' is invalid."),
    )
    assert (await face.held(session_id))["session.updateStatus"] == "NO_UPDATE"


# --- who sees a session --------------------------------------------------------------------------


async def test_another_merchant_cannot_retrieve(face: Face) -> None:
    """To a merchant that did not create it, a session's id is unknown."""
    session_id = (await face.create())["session.id"]
    assert await face.retrieve(session_id, OTHER) == (400, unknown_session(session_id))


async def test_another_merchant_cannot_update(face: Face) -> None:
    """Another merchant's update is the unknown-id answer and leaves the session untouched."""
    session_id = (await face.create())["session.id"]
    _, before = await face.update_with(session_id, ORDER)
    assert await face.update(session_id, OTHER, order__id="theirs") == (
        400,
        unknown_session(session_id),
    )
    assert await face.held(session_id) == before


async def test_another_api_version_cannot_see_it(face: Face) -> None:
    """A session belongs to the API version that created it; under another it is unknown."""
    session_id = (await face.create())["session.id"]
    assert await face.retrieve(session_id, version="99") == (400, unknown_session(session_id))


@pytest.mark.parametrize(
    "session_id",
    ["SESSION0002" + "A" * 20, "S" * 35, "SESSION0002" + "A" * 19, "SESSION0002-" + "A" * 19],
    ids=["never issued", "35 characters", "30 characters", "a hyphen"],
)
async def test_an_id_that_names_no_session_is_unknown(face: Face, session_id: str) -> None:
    """Well-formed but never issued, or not an id at all: INVALID on session.id."""
    assert await face.retrieve(session_id) == (400, unknown_session(session_id))


@pytest.mark.parametrize("operation", ["RETRIEVE_SESSION", "UPDATE_SESSION"])
async def test_session_id_is_required(face: Face, operation: str) -> None:
    """Without session.id, retrieve and update are MISSING on it."""
    assert await face.call(operation) == (
        400,
        field_error("session.id", "MISSING", "Missing parameter 'session.id'."),
    )


async def test_sessions_expire_fifteen_minutes_after_creation(face: Face, clock: FakeClock) -> None:
    """A session is there until 900 s after its creation, updates or not, then unknown."""
    session_id = (await face.create())["session.id"]
    clock.now += 800.0
    assert (await face.update(session_id, order__id="o"))[0] == 201
    clock.now += 99.9
    assert (await face.retrieve(session_id))[0] == 201
    clock.now += 0.1
    assert await face.retrieve(session_id) == (400, unknown_session(session_id))


# --- bounds --------------------------------------------------------------------------------------


async def test_one_merchant_full_does_not_refuse_another(open_face: OpenFace) -> None:
    """A merchant that has used its share gets SERVER_BUSY; another merchant still creates."""
    face = await open_face(max_sessions=5, max_sessions_per_merchant=2)
    await face.create()
    await face.create()
    assert await face.call("CREATE_SESSION") == (503, BUSY)
    assert (await face.call("CREATE_SESSION", OTHER))[0] == 201


async def test_the_store_as_a_whole_is_bounded(open_face: OpenFace) -> None:
    """The store holds max_sessions live sessions once every merchant has its share; then
    every merchant gets SERVER_BUSY."""
    face = await open_face(max_sessions=4, max_sessions_per_merchant=3)
    for merchant in (MERCHANT, MERCHANT, OTHER, OTHER):
        assert (await face.create(merchant))["result"] == "SUCCESS"
    assert face.gateway.session_count == 4
    assert await face.call("CREATE_SESSION") == (503, BUSY)
    assert await face.call("CREATE_SESSION", OTHER) == (503, BUSY)


async def test_no_merchant_holds_more_than_its_fair_share(open_face: OpenFace) -> None:
    """With two merchants and room for 4 sessions, a merchant whose own bound is 3 may still
    hold only 2: the other's 2 stay free, however fast the first one creates."""
    face = await open_face(max_sessions=4, max_sessions_per_merchant=3)
    await face.create()
    await face.create()
    assert await face.call("CREATE_SESSION") == (503, BUSY)
    assert face.gateway.session_count_for(MERCHANT) == 2
    assert (await face.create(OTHER))["result"] == "SUCCESS"
    assert (await face.create(OTHER))["result"] == "SUCCESS"


async def test_expiry_gives_a_merchant_its_share_back(
    open_face: OpenFace, clock: FakeClock
) -> None:
    """Once a merchant's sessions expire, it may create again."""
    face = await open_face(max_sessions=5, max_sessions_per_merchant=1)
    await face.create()
    clock.now += 900.0
    assert (await face.call("CREATE_SESSION"))[0] == 201


async def test_fields_per_session_are_bounded(open_face: OpenFace) -> None:
    """An update that would leave a session with more than max_fields_per_session fields is
    INVALID naming the first new field, and marks FAILURE; the fields stay as they were."""
    face = await open_face(max_fields_per_session=3)
    session_id = (await face.create())["session.id"]
    _, before = await face.update(session_id, order__id="a", order__reference="b")
    assert await face.update(
        session_id, order__reference="c", customer__email="x", device__ani="y"
    ) == (
        400,
        field_error("customer.email", "INVALID", "A session holds at most 3 fields."),
    )
    assert await face.held(session_id) == {**before, "session.updateStatus": "FAILURE"}


async def test_a_full_session_may_still_overwrite(open_face: OpenFace) -> None:
    """At max_fields_per_session, an update of fields already held is accepted."""
    face = await open_face(max_fields_per_session=2)
    session_id = (await face.create())["session.id"]
    await face.update(session_id, order__id="a", order__reference="b")
    assert (await face.update(session_id, order__id="c"))[0] == 201


@pytest.mark.parametrize(
    ("value", "status"),
    [("12345678", 201), ("123456789", 400), ("éééé", 201), ("ééééé", 400)],
    ids=["8 ASCII", "9 ASCII", "4 two-byte = 8 bytes", "5 two-byte = 10 bytes"],
)
async def test_bytes_per_value_are_bounded(open_face: OpenFace, value: str, status: int) -> None:
    """A value of more than max_value_bytes UTF-8 bytes is refused, whatever its length in
    characters."""
    face = await open_face(max_value_bytes=8)
    session_id = (await face.create())["session.id"]
    assert (await face.update(session_id, order__id=value))[0] == status


async def test_oversized_value_names_its_field(open_face: OpenFace) -> None:
    """The refusal of an oversized value is INVALID on that field, with the limit in words."""
    face = await open_face(max_value_bytes=8)
    session_id = (await face.create())["session.id"]
    assert await face.update(session_id, order__reference="x" * 9) == (
        400,
        field_error("order.reference", "INVALID", "Value exceeds the 8-byte limit."),
    )


async def test_bytes_per_session_are_bounded(open_face: OpenFace) -> None:
    """Names and values together may not pass max_session_bytes; the field that grew is named."""
    face = await open_face(max_session_bytes=40)
    session_id = (await face.create())["session.id"]
    # "order.id" + 12 = 20 bytes, and "order.reference" + 5 = 20 bytes: exactly 40.
    assert (await face.update(session_id, order__id="x" * 12, order__reference="y" * 5))[0] == 201
    assert await face.update(session_id, order__reference="y" * 6) == (
        400,
        field_error("order.reference", "INVALID", "A session holds at most 40 bytes of fields."),
    )


@pytest.mark.parametrize(
    "options",
    [
        {"max_sessions": 10, "max_sessions_per_merchant": 10},
        {"max_sessions": 10, "max_sessions_per_merchant": 0},
        {"max_fields_per_session": 0},
        {"max_value_bytes": 0},
        {"max_session_bytes": 0},
    ],
    ids=["one merchant could fill it", "no share", "no fields", "no value bytes", "no bytes"],
)
def test_bounds_are_validated(options: dict[str, Any]) -> None:
    """Bounds the gateway could not keep, or under which one merchant could refuse the others,
    are refused at construction."""
    with pytest.raises(ValueError, match=next(iter(options.keys() - {"max_sessions"}))):
        EmbeddedGateway(ACCOUNTS, **options)


# --- session.authenticationLimit -----------------------------------------------------------------


async def test_authentication_limit_defaults_to_five(face: Face) -> None:
    """A session created without session.authenticationLimit has 5."""
    session_id = (await face.create())["session.id"]
    assert (await face.held(session_id))["session.authenticationLimit"] == "5"


async def test_authentication_limit_is_kept(face: Face) -> None:
    """The limit given at creation is the one a retrieve shows."""
    session_id = (await face.create(session__authenticationLimit="12"))["session.id"]
    assert (await face.held(session_id))["session.authenticationLimit"] == "12"


@pytest.mark.parametrize("limit", ["0", "26"])
async def test_authentication_limit_out_of_range_creates_nothing(face: Face, limit: str) -> None:
    """A limit outside 1 to 25 is INVALID and no session is created."""
    assert await face.call("CREATE_SESSION", session__authenticationLimit=limit) == (
        400,
        field_error("session.authenticationLimit", "INVALID", f"Value '{limit}' is invalid."),
    )
    assert face.gateway.session_count == 0


# --- secrets -------------------------------------------------------------------------------------


async def test_password_never_in_an_update_or_retrieve_answer(face: Face) -> None:
    """No answer of the new operations, success or error, holds a password in any spelling."""
    session_id = (await face.create())["session.id"]
    answers = [
        await face.update_with(session_id, ORDER),
        await face.update(session_id, order__amount="bad"),
        await face.update(session_id, OTHER),
        await face.retrieve(session_id),
        await face.retrieve(session_id, OTHER),
    ]
    for _, answer in answers:
        assert_no_password(nvp.encode(answer))


# --- the amount's form, against an oracle written here -------------------------------------------


def amount_oracle(text: str) -> bool:
    """The contract's amount, read by counting: ASCII digits, at most 14 before an optional point
    and 1 to 3 after it."""
    digits = set(string.digits)
    whole, point, fraction = text.partition(".")
    if not whole or len(whole) > 14 or not set(whole) <= digits:
        return False
    return not point or (1 <= len(fraction) <= 3 and set(fraction) <= digits)


AMOUNT_LIKE = st.from_regex(r"[-+]?[0-9]{0,16}(\.[0-9]{0,4})?([eE][0-9])?", fullmatch=True)


@given(st.one_of(st.text(max_size=24), AMOUNT_LIKE))
@example("0")
@example("10.500")
@example("99999999999999.999")
@example("100000000000000")
@example("1.")
@example(".5")
@example("\u0661\u0660")  # Arabic-Indic digits
def test_gateway_accepts_exactly_the_amounts_of_the_oracle(text: str) -> None:
    """For any text as order.amount, the gateway stores it if and only if the oracle accepts it."""
    gateway = EmbeddedGateway(ACCOUNTS)
    created = answered(
        gateway.handle(
            VERSION,
            nvp.encode(
                {"apiOperation": "CREATE_SESSION", **CREDENTIALS[MERCHANT], "merchant": MERCHANT}
            ),
        )
    )
    session_id = nvp.decode(created.body)["session.id"]
    update = {
        "apiOperation": "UPDATE_SESSION",
        **CREDENTIALS[MERCHANT],
        "merchant": MERCHANT,
        "session.id": session_id,
        "order.amount": text,
        "order.currency": "EUR",
    }
    reply = answered(gateway.handle(VERSION, nvp.encode(update)))
    assert (reply.status == 201) == amount_oracle(text)
