"""A gateway certificate the adapter refuses is a configuration fault, not an outage.

Real HTTPS gateways on loopback present certificates from a CA the adapter does not trust, an
expired one, and one for another host name. Each is UNAVAILABLE ``UPSTREAM_UNAVAILABLE`` with
``tls = CERTIFICATE_INVALID``, without RetryInfo, after one attempt, and leaves the circuit closed.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import trustme
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.core.schema import SESSION_SERVICE
from tests.conftest import MERCHANT, fail, make_settings
from tests.tls_peers import adapter_channel, https_gateway, server_context

NOW = datetime.datetime.now(datetime.UTC)


class Pki:
    """The CA the adapter trusts (written to ``ca_file``) and one it has never heard of."""

    def __init__(self, tmp_path: Path) -> None:
        self.trusted = trustme.CA()
        self.stranger = trustme.CA()
        self.ca_file = str(tmp_path / "ca.pem")
        self.trusted.cert_pem.write_to_path(self.ca_file)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


BadCertificate = Callable[[Pki], trustme.LeafCert]

BAD_CERTIFICATES: dict[str, tuple[BadCertificate, str]] = {
    "untrusted issuer": (
        lambda pki: pki.stranger.issue_cert("localhost"),
        "unable to get local issuer certificate",
    ),
    "expired": (
        lambda pki: pki.trusted.issue_cert(
            "localhost",
            not_before=NOW - datetime.timedelta(days=30),
            not_after=NOW - datetime.timedelta(days=1),
        ),
        "certificate has expired",
    ),
    "another host name": (
        lambda pki: pki.trusted.issue_cert("gateway.example"),
        "hostname mismatch",
    ),
}
"""What the gateway presents, and OpenSSL's words for why the adapter refuses it."""


@pytest.mark.parametrize(("certificate", "words"), BAD_CERTIFICATES.values(), ids=BAD_CERTIFICATES)
async def test_a_refused_certificate_is_a_configuration_fault(
    certificate: BadCertificate, words: str, pki: Pki
) -> None:
    """The caller sees UNAVAILABLE ``UPSTREAM_UNAVAILABLE`` with ``tls = CERTIFICATE_INVALID``
    after one attempt, no RetryInfo (trying again cannot help), OpenSSL's reason in the
    message, and the gateway never saw the request."""
    async with https_gateway(server_context(certificate(pki))) as gateway:
        settings = make_settings(gateway.url, ca_file=pki.ca_file)
        async with adapter_channel(settings) as (stub, _):
            failure = await fail(stub)
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.info.reason == "UPSTREAM_UNAVAILABLE"
    assert dict(failure.info.metadata) == {"tls": "CERTIFICATE_INVALID", "attempts": "1"}
    assert error_details_pb2.RetryInfo not in failure.details
    assert words in failure.message.lower()
    assert gateway.requests == []


async def test_a_trusted_certificate_is_accepted(pki: Pki) -> None:
    """The same gateway with a valid certificate from the trusted CA answers the call: the
    refusals above come from the certificates alone."""
    async with https_gateway(server_context(pki.trusted.issue_cert("localhost"))) as gateway:
        settings = make_settings(gateway.url, ca_file=pki.ca_file)
        async with adapter_channel(settings) as (stub, _):
            response = await stub.CreateSession(
                pb.CreateSessionRequest(merchant=MERCHANT), timeout=5
            )
    assert response.result == pb.RESULT_SUCCESS


async def test_refused_certificates_leave_the_circuit_closed(pki: Pki) -> None:
    """Twice the breaker's threshold of refused certificates in a row neither opens the circuit
    (no call fails fast with ``circuit = OPEN``) nor turns the service's health NOT_SERVING."""
    expired = BAD_CERTIFICATES["expired"][0](pki)
    async with https_gateway(server_context(expired)) as gateway:
        settings = make_settings(
            gateway.url,
            ca_file=pki.ca_file,
            breaker_failure_threshold=2,
            breaker_cooldown_seconds=60.0,
        )
        async with adapter_channel(settings) as (stub, channel):
            failures = [await fail(stub) for _ in range(4)]
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(
                health_pb2.HealthCheckRequest(service=SESSION_SERVICE.full_name), timeout=5
            )
    assert [dict(f.info.metadata) for f in failures] == [
        {"tls": "CERTIFICATE_INVALID", "attempts": "1"}
    ] * 4
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_other_tls_failures_are_still_retried(pki: Pki) -> None:
    """A handshake that fails for another reason than the certificate (here a gateway that
    speaks plain HTTP on the https port) stays an outage: retried, with RetryInfo, and no ``tls``
    metadata."""
    async with https_gateway(None, host="127.0.0.1") as gateway:
        url = gateway.url.replace("http://", "https://")
        async with adapter_channel(make_settings(url, ca_file=pki.ca_file)) as (stub, _):
            failure = await fail(stub)
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert dict(failure.info.metadata) == {"attempts": "3"}
    assert error_details_pb2.RetryInfo in failure.details
