"""The Hosted Session backend flow end to end: a real grpc.aio client, the adapter, and the
embedded gateway both in-process and over HTTP (the same code behind either face)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.core import nvp
from adapter.core.errors import RequestInvalid
from adapter.core.schema import OPERATIONS
from adapter.embedded import EmbeddedGateway, start_http_gateway
from tests.conftest import MERCHANT, PASSWORD, fail, make_settings
from tests.test_embedded import answered

if TYPE_CHECKING:  # the stub type grpc.aio channels give; it exists for type checkers only
    from adapter._proto.mpgs.gateway.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as Stub,
    )

OTHER = "OTHER"
ACCOUNTS = {MERCHANT: PASSWORD, OTHER: PASSWORD}
UNKNOWN_ID = "SESSION0002" + "0" * 20
Start = Callable[[], Awaitable["Stub"]]


@pytest.fixture(params=["in-process", "over HTTP"])
async def adapter(request: pytest.FixtureRequest) -> AsyncIterator[Stub]:
    """The adapter with two merchants, on the embedded gateway in-process or over HTTP."""
    async with AsyncExitStack() as stack:
        upstream = "embedded"
        if request.param == "over HTTP":
            runner, port = await start_http_gateway(EmbeddedGateway(ACCOUNTS), "127.0.0.1", 0)
            stack.push_async_callback(runner.cleanup)
            upstream = f"http://127.0.0.1:{port}"
        server = await stack.enter_async_context(build_server(make_settings(upstream, ACCOUNTS)))
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
        yield session_service_pb2_grpc.SessionServiceStub(channel)


async def create(stub: Stub, merchant: str = MERCHANT) -> pb.CreateSessionResponse:
    return await stub.CreateSession(pb.CreateSessionRequest(merchant=merchant), timeout=5)


def order_update(session: pb.Session, version: str = "", **order: str) -> pb.UpdateSessionRequest:
    return pb.UpdateSessionRequest(
        merchant=MERCHANT,
        session=pb.SessionRevision(id=session.id, version=version),
        order=pb.Order(**order),
    )


def retrieve(session_id: str, merchant: str = MERCHANT) -> pb.RetrieveSessionRequest:
    return pb.RetrieveSessionRequest(merchant=merchant, session=pb.SessionRef(id=session_id))


async def test_create_update_retrieve(adapter: Stub) -> None:
    """The backend's flow: the session holds the order it set, with a new version."""
    created = (await create(adapter)).session
    assert created.update_status == pb.SESSION_UPDATE_STATUS_NO_UPDATE
    updated = await adapter.UpdateSession(
        order_update(created, created.version, amount="10.50", currency="AUD", id="order-17"),
        timeout=5,
    )
    assert updated.session.update_status == pb.SESSION_UPDATE_STATUS_SUCCESS
    assert updated.session.version != created.version
    held = await adapter.RetrieveSession(retrieve(created.id), timeout=5)
    assert held.result == pb.RESULT_SUCCESS
    assert held.order == pb.Order(amount="10.50", currency="AUD", id="order-17")
    assert (held.session.id, held.session.version) == (created.id, updated.session.version)
    assert held.session.update_status == pb.SESSION_UPDATE_STATUS_SUCCESS
    assert held.session.authentication_limit == "5"  # the gateway's default, as stored


async def test_an_update_overwrites_and_never_removes(adapter: Stub) -> None:
    created = (await create(adapter)).session
    await adapter.UpdateSession(
        order_update(created, amount="10.50", currency="AUD", id="order-17"), timeout=5
    )
    second = order_update(created, amount="12.00", currency="AUD")
    second.extra_fields["billing.address.city"] = "Sydney"
    await adapter.UpdateSession(second, timeout=5)
    held = await adapter.RetrieveSession(retrieve(created.id), timeout=5)
    assert held.order == pb.Order(amount="12.00", currency="AUD", id="order-17")
    assert held.extra_fields["billing.address.city"] == "Sydney"


async def test_a_stale_version_is_aborted_and_changes_nothing(adapter: Stub) -> None:
    """Someone updated the session since the caller read it: ABORTED, the session as it was."""
    created = (await create(adapter)).session
    first = await adapter.UpdateSession(
        order_update(created, created.version, amount="1.00", currency="AUD"), timeout=5
    )
    stale = await fail(
        adapter, order_update(created, created.version, amount="2.00", currency="AUD")
    )
    assert (stale.code, stale.info.reason) == (
        grpc.StatusCode.ABORTED,
        "SESSION_VERSION_MISMATCH",
    )
    held = await adapter.RetrieveSession(retrieve(created.id), timeout=5)
    assert held.order.amount == "1.00"
    assert held.session.version == first.session.version


async def test_another_merchants_session_is_not_found(adapter: Stub) -> None:
    created = (await create(adapter)).session
    failure = await fail(adapter, retrieve(created.id, merchant=OTHER))
    assert (failure.code, failure.info.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")


async def test_an_unknown_session_is_not_found(adapter: Stub) -> None:
    failure = await fail(adapter, retrieve(UNKNOWN_ID))
    assert (failure.code, failure.info.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    assert failure.info.metadata["attempts"] == "1"


# --- the adapter and the embedded gateway agree on every amount --------------------------------

GATEWAY = EmbeddedGateway(ACCOUNTS)
_CREATED = nvp.decode(
    answered(
        GATEWAY.handle(
            "100",
            nvp.encode(
                {
                    "apiOperation": "CREATE_SESSION",
                    "apiUsername": f"merchant.{MERCHANT}",
                    "apiPassword": PASSWORD,
                    "merchant": MERCHANT,
                }
            ),
        )
    ).body
)


def gateway_takes(amount: str) -> bool:
    body = nvp.encode(
        {
            "apiOperation": "UPDATE_SESSION",
            "apiUsername": f"merchant.{MERCHANT}",
            "apiPassword": PASSWORD,
            "merchant": MERCHANT,
            "session.id": _CREATED["session.id"],
            "order.amount": amount,
            "order.currency": "AUD",
        }
    )
    return nvp.decode(answered(GATEWAY.handle("100", body)).body)["result"] == "SUCCESS"


def adapter_sends(amount: str) -> bool:
    request = pb.UpdateSessionRequest(
        merchant=MERCHANT,
        session=pb.SessionRevision(id=_CREATED["session.id"]),
        order=pb.Order(amount=amount, currency="AUD"),
    )
    try:
        OPERATIONS["UpdateSession"].encode_request(request)
    except RequestInvalid:
        return False
    return True


@settings(max_examples=300)
@given(
    st.one_of(st.text(max_size=24), st.from_regex(r"[0-9]{0,16}(\.[0-9]{0,4})?", fullmatch=True))
)
def test_no_amount_the_gateway_refuses_is_sent_and_none_it_takes_is_refused(amount: str) -> None:
    """Over arbitrary text and near-amounts: the adapter sends an amount exactly when the
    embedded gateway, which checks it with code of its own, takes it."""
    assert adapter_sends(amount) == gateway_takes(amount)
