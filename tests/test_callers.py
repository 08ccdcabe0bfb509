"""Who may call: bearer tokens and client certificates, and the merchants each caller may use.

Every test runs a real adapter on loopback and calls it through a real grpc.aio channel; the
gateway behind it is the scripted one, so a test can see that a refused call never reached it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.config import CallerSettings, ServerSettings, Settings, TlsFiles, token_digest
from adapter.server import AdapterServer
from adapter.server.callers import bearer_token
from tests.certs import KeyPair, client_pair, server_pair
from tests.conftest import MERCHANT, PASSWORD, Failure, ScriptedUpstream, fail, make_settings

OTHER = "OTHERSHOP"
TOKEN = "checkout-token-7d1b2c"  # recognisable, so a test can look for leaks
SPIFFE = "spiffe://cluster.local/ns/billing/sa/billing"
SUCCESS = (
    "merchant=TESTMERCHANT&result=SUCCESS&session.id=SESSION0002378433591N3262498M20"
    "&session.updateStatus=NO_UPDATE&session.version=030f712301"
)


def token_caller(name: str, token: str, *merchants: str) -> CallerSettings:
    return CallerSettings(name, frozenset(merchants), token_sha256=token_digest(token))


def with_callers(settings: Settings, *callers: CallerSettings) -> Settings:
    return dataclasses.replace(
        settings, callers=MappingProxyType({caller.name: caller for caller in callers})
    )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def adapter(scripted_upstream: ScriptedUpstream) -> AsyncIterator[AdapterServer]:
    """An adapter with two merchants and two token callers: one for MERCHANT only, one for all."""
    scripted_upstream.reply(SUCCESS)
    settings = with_callers(
        make_settings(scripted_upstream.url, {MERCHANT: PASSWORD, OTHER: PASSWORD}),
        token_caller("checkout", TOKEN, MERCHANT),
        token_caller("billing", "billing-token", "*"),
    )
    async with build_server(settings) as server:
        yield server


async def refused(
    server: AdapterServer, metadata: tuple[tuple[str, str], ...], merchant: str = MERCHANT
) -> Failure:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        return await fail(stub, pb.CreateSessionRequest(merchant=merchant), metadata=metadata)


async def answered(
    server: AdapterServer, metadata: tuple[tuple[str, str], ...], merchant: str = MERCHANT
) -> pb.CreateSessionResponse:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        request = pb.CreateSessionRequest(merchant=merchant)
        return await stub.CreateSession(request, metadata=metadata, timeout=5)


async def test_a_known_token_is_let_through(
    adapter: AdapterServer, scripted_upstream: ScriptedUpstream
) -> None:
    """A call with a configured caller's bearer token reaches the gateway and is answered."""
    response = await answered(adapter, bearer(TOKEN))
    assert response.session.id == "SESSION0002378433591N3262498M20"
    assert len(scripted_upstream.requests) == 1


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        bearer("not-a-token"),
        bearer(TOKEN + "x"),
        (("authorization", f"Basic {TOKEN}"),),
        (("authorization", TOKEN),),
        (("authorization", "Bearer " + "x" * 5000),),
        (("authorization", "garbage"),),
        (("authorization", "Basic Zm9v"),),
        (("authorization", "Bearer "),),
        (("authorization", "Bearer    "),),
    ],
    ids=[
        "none",
        "unknown",
        "longer",
        "basic scheme",
        "no scheme",
        "oversized",
        "garbage",
        "basic credentials",
        "empty bearer",
        "blank bearer",
    ],
)
async def test_no_known_token_is_unauthenticated(
    adapter: AdapterServer,
    scripted_upstream: ScriptedUpstream,
    metadata: tuple[tuple[str, str], ...],
) -> None:
    """Without a configured caller's token the call is UNAUTHENTICATED and never sent upstream."""
    failure = await refused(adapter, metadata)
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CALLER_UNAUTHENTICATED",
    )
    assert scripted_upstream.requests == []


BEARER_VALUES = {
    "Bearer abc": b"abc",
    "bearer abc": b"abc",
    "Bearer  abc ": b"abc",
    "Bearer " + "t" * 4096: b"t" * 4096,
    "Bearer " + "t" * 4097: None,
    "Bearer ": None,
    "Bearer   ": None,
    "Bearer": None,
    "garbage": None,
    "Basic Zm9v": None,
    "Bearerabc": None,
    "": None,
}


@pytest.mark.parametrize(("value", "token"), BEARER_VALUES.items(), ids=range(len(BEARER_VALUES)))
def test_only_bearer_and_a_non_empty_token_is_a_token(value: str, token: bytes | None) -> None:
    """An ``authorization`` value is a token only as ``Bearer <1 to 4096 characters>``; anything
    else is no token at all, never the empty token (whose digest it would then be matched by)."""
    assert bearer_token(value) == token


async def test_the_bearer_scheme_is_case_insensitive(adapter: AdapterServer) -> None:
    """`bearer` and `BEARER` are the same scheme as `Bearer` (RFC 6750 follows RFC 7235)."""
    response = await answered(adapter, (("authorization", f"bEaReR {TOKEN}"),))
    assert response.result == pb.RESULT_SUCCESS


async def test_a_merchant_outside_the_callers_list_is_denied(
    adapter: AdapterServer, scripted_upstream: ScriptedUpstream
) -> None:
    """A known caller asking for another merchant: PERMISSION_DENIED naming the caller."""
    failure = await refused(adapter, bearer(TOKEN), merchant=OTHER)
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "MERCHANT_NOT_ALLOWED",
    )
    assert failure.info.metadata["caller"] == "checkout"
    assert scripted_upstream.requests == []


async def test_a_wildcard_caller_may_use_every_merchant(adapter: AdapterServer) -> None:
    """`merchants = ["*"]` lets the caller use any configured merchant."""
    response = await answered(adapter, bearer("billing-token"), merchant=OTHER)
    assert response.result == pb.RESULT_SUCCESS


async def test_health_answers_without_a_token(adapter: AdapterServer) -> None:
    """grpc.health.v1 needs no authentication: probes must reach it."""
    async with grpc.aio.insecure_channel(adapter.address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def list_services(address: str, metadata: tuple[tuple[str, str], ...]) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
            metadata=metadata,
            timeout=5,
        )
        names = []
        async for response in call:
            names += [s.name for s in response.list_services_response.service]
        return names


async def test_reflection_needs_a_token(adapter: AdapterServer) -> None:
    """Server reflection is refused UNAUTHENTICATED without a token."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await list_services(adapter.address, ())
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_reflection_answers_a_known_caller(adapter: AdapterServer) -> None:
    """With a known token, server reflection lists the API."""
    assert "mpgs.gateway.v1.SessionService" in await list_services(adapter.address, bearer(TOKEN))


async def test_no_callers_table_means_no_authentication(
    scripted_upstream: ScriptedUpstream,
) -> None:
    """Without [callers] (the sidecar case) a call with no token is served."""
    scripted_upstream.reply(SUCCESS)
    async with build_server(make_settings(scripted_upstream.url)) as server:
        response = await answered(server, ())
    assert response.result == pb.RESULT_SUCCESS


async def test_a_token_never_shows_in_a_log_line_or_an_answer(
    adapter: AdapterServer, caplog: pytest.LogCaptureFixture
) -> None:
    """No log record, status message or detail holds a token, known or not, nor its digest."""
    caplog.set_level(logging.DEBUG)
    wrong = await refused(adapter, bearer("wrong-token-55aa"))
    denied = await refused(adapter, bearer(TOKEN), merchant=OTHER)
    await answered(adapter, bearer(TOKEN))
    seen = caplog.text + repr(wrong) + repr(denied) + repr(adapter.settings)
    for secret in (TOKEN, "wrong-token-55aa", token_digest(TOKEN).reveal(), "billing-token"):
        assert secret not in seen


# Mutual TLS: the caller is known by its client certificate.


@dataclasses.dataclass
class Pki:
    server_ca: trustme.CA
    client_ca: trustme.CA
    folder: Path

    def tls(self) -> TlsFiles:
        cert, key = server_pair(self.server_ca).write(self.folder, "server")
        ca = self.folder / "client-ca.pem"
        self.client_ca.cert_pem.write_to_path(str(ca))
        return TlsFiles(str(cert), str(key), str(ca))

    def channel(self, address: str, client: KeyPair | None) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            self.server_ca.cert_pem.bytes(),
            None if client is None else client.key,
            None if client is None else client.cert,
        )
        return grpc.aio.secure_channel(address, credentials)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(trustme.CA(), trustme.CA(), tmp_path)


@pytest.fixture
async def mtls_adapter(
    pki: Pki, scripted_upstream: ScriptedUpstream
) -> AsyncIterator[AdapterServer]:
    """An adapter on mutual TLS whose one caller is known by a SPIFFE URI, for MERCHANT only."""
    scripted_upstream.reply(SUCCESS)
    settings = make_settings(scripted_upstream.url, {MERCHANT: PASSWORD, OTHER: PASSWORD})
    settings = dataclasses.replace(
        settings, server=ServerSettings(listen="127.0.0.1:0", tls=pki.tls())
    )
    settings = with_callers(
        settings,
        CallerSettings("billing", frozenset({MERCHANT}), certificate_subject=SPIFFE),
        CallerSettings("reports", frozenset({"*"}), certificate_subject="reports.internal"),
        CallerSettings("batch", frozenset({"*"}), certificate_subject="batch-runner"),
    )
    async with build_server(settings) as server:
        yield server


async def certificate_call(
    pki: Pki, server: AdapterServer, client: KeyPair, merchant: str = MERCHANT
) -> pb.CreateSessionResponse:
    async with pki.channel(f"localhost:{server.port}", client) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        return await stub.CreateSession(pb.CreateSessionRequest(merchant=merchant), timeout=5)


@pytest.mark.parametrize(
    "names",
    [
        {"uris": (SPIFFE,), "common_name": "someone"},
        {"dns": ("reports.internal",)},
        {"common_name": "batch-runner"},
    ],
    ids=["URI SAN", "DNS SAN", "subject CN"],
)
async def test_a_client_certificate_names_its_caller(
    pki: Pki, mtls_adapter: AdapterServer, names: dict[str, object]
) -> None:
    """A verified client certificate whose URI SAN, DNS SAN or CN names a caller is let in."""
    client = client_pair(pki.client_ca, **names)  # type: ignore[arg-type]
    response = await certificate_call(pki, mtls_adapter, client)
    assert response.result == pb.RESULT_SUCCESS


async def test_an_unknown_certificate_subject_is_unauthenticated(
    pki: Pki, mtls_adapter: AdapterServer, scripted_upstream: ScriptedUpstream
) -> None:
    """A certificate the CA signed, for a subject no caller has: UNAUTHENTICATED, nothing sent."""
    client = client_pair(pki.client_ca, common_name="stranger", uris=("spiffe://x/y",))
    async with pki.channel(f"localhost:{mtls_adapter.port}", client) as channel:
        failure = await fail(session_service_pb2_grpc.SessionServiceStub(channel))
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CALLER_UNAUTHENTICATED",
    )
    assert scripted_upstream.requests == []


async def test_a_certificate_caller_is_held_to_its_merchants(
    pki: Pki, mtls_adapter: AdapterServer
) -> None:
    """The certificate's caller asking for a merchant outside its list is denied, named."""
    client = client_pair(pki.client_ca, uris=(SPIFFE,))
    async with pki.channel(f"localhost:{mtls_adapter.port}", client) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        failure = await fail(stub, pb.CreateSessionRequest(merchant=OTHER))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert failure.info.metadata["caller"] == "billing"


async def test_a_certificate_from_another_ca_is_refused_at_the_handshake(
    pki: Pki, mtls_adapter: AdapterServer
) -> None:
    """A client certificate the client CA did not sign never gets a call through."""
    stranger = client_pair(trustme.CA(), uris=(SPIFFE,))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await certificate_call(pki, mtls_adapter, stranger)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_subject_in_metadata_proves_nothing(pki: Pki, mtls_adapter: AdapterServer) -> None:
    """Only the verified certificate counts: a caller-written header naming a subject does not."""
    client = client_pair(pki.client_ca, common_name="stranger")
    async with pki.channel(f"localhost:{mtls_adapter.port}", client) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        spoofed = (("x509_common_name", "batch-runner"), ("peer_uri", SPIFFE))
        failure = await fail(stub, metadata=spoofed)
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED
