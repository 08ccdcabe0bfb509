"""Certificate authentication on the adapter's side: a merchant with no password key.

Such a merchant authenticates by ``upstream.client_cert_file`` and its requests carry no
``apiUsername`` or ``apiPassword``; the configurations where that cannot work are refused at start
with one line. The gateway is a real HTTPS server on loopback that requires a client certificate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.config import load_settings
from adapter.core.errors import ConfigError
from tests.certs import named_client
from tests.conftest import MERCHANT, PASSWORD, make_settings
from tests.tls_peers import adapter_channel, https_gateway, server_context

CERT_MERCHANT = "CERTM"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "adapter.toml"
    path.write_text(text)
    return path


def test_no_password_and_no_client_certificate_is_a_config_error(tmp_path: Path) -> None:
    """A merchant with no password key and no ``upstream.client_cert_file`` cannot authenticate
    at all: one line that names the merchant and both ways out."""
    path = write_config(
        tmp_path, '[upstream]\nurl = "https://gateway.example"\n[merchants.CERTM]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == (
        f"{path}: merchants.CERTM: no password (set password, password_env or password_file, "
        "or upstream.client_cert_file for certificate authentication)"
    )


@pytest.mark.parametrize("url", ["embedded", "http://127.0.0.1:8080"])
def test_certificate_authentication_needs_an_https_gateway(url: str, tmp_path: Path) -> None:
    """A merchant with no password key, against the embedded gateway (which checks passwords
    alone) or a plain-http one (no TLS, so no client certificate), is refused at start with one
    line saying that certificate authentication needs an https gateway."""
    path = write_config(
        tmp_path,
        f'[upstream]\nurl = "{url}"\nclient_cert_file = "/etc/nvp/client.pem"\n[merchants.CERTM]\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == (
        f"{path}: merchants.CERTM: no password, and certificate authentication needs an https "
        "gateway (upstream.url); set password, password_env or password_file"
    )


class Pki:
    """One CA for the gateway's certificate and the adapter's client certificate."""

    def __init__(self, tmp_path: Path) -> None:
        self.ca = trustme.CA()
        self.ca_file = str(tmp_path / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        client = named_client(self.ca, CERT_MERCHANT)
        self.bundle = str(tmp_path / "client.pem")  # the key and the chain in one file
        client.private_key_and_cert_chain_pem.write_to_path(self.bundle)
        self.cert_file = str(tmp_path / "client.crt")
        self.key_file = str(tmp_path / "client.key")
        with open(self.cert_file, "wb") as chain:
            for pem in client.cert_chain_pems:
                chain.write(pem.bytes())
        client.private_key_pem.write_to_path(self.key_file)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("key_apart", [False, True], ids=["key in the PEM", "client_key_file"])
async def test_a_certificate_merchant_sends_no_api_credentials(key_apart: bool, pki: Pki) -> None:
    """Against a gateway that requires a client certificate, the password-less merchant's call
    succeeds; its request holds neither ``apiUsername`` nor ``apiPassword``, and the gateway saw
    the adapter's certificate (subject CN = the merchant id)."""
    context = server_context(pki.ca.issue_cert("localhost"), client_ca=pki.ca)
    async with https_gateway(context) as gateway:
        settings = make_settings(
            gateway.url,
            merchants={CERT_MERCHANT: None},
            ca_file=pki.ca_file,
            client_cert_file=pki.cert_file if key_apart else pki.bundle,
            client_key_file=pki.key_file if key_apart else None,
        )
        async with adapter_channel(settings) as (stub, _):
            response = await stub.CreateSession(
                pb.CreateSessionRequest(merchant=CERT_MERCHANT), timeout=5
            )
    assert (response.result, gateway.requests, gateway.client_subjects) == (
        pb.RESULT_SUCCESS,
        [{"apiOperation": "CREATE_SESSION", "merchant": CERT_MERCHANT}],
        [CERT_MERCHANT],
    )


async def test_a_password_merchant_beside_it_still_sends_its_password(pki: Pki) -> None:
    """In the same adapter, over the same client-certificate connection, a merchant with a
    password keeps sending ``apiUsername`` and ``apiPassword``: only the password-less one
    leaves them out."""
    context = server_context(pki.ca.issue_cert("localhost"), client_ca=pki.ca)
    async with https_gateway(context) as gateway:
        settings = make_settings(
            gateway.url,
            merchants={CERT_MERCHANT: None, MERCHANT: PASSWORD},
            ca_file=pki.ca_file,
            client_cert_file=pki.bundle,
        )
        async with adapter_channel(settings) as (stub, _):
            for merchant in (CERT_MERCHANT, MERCHANT):
                await stub.CreateSession(pb.CreateSessionRequest(merchant=merchant), timeout=5)
    assert gateway.requests == [
        {"apiOperation": "CREATE_SESSION", "merchant": CERT_MERCHANT},
        {
            "apiOperation": "CREATE_SESSION",
            "merchant": MERCHANT,
            "apiUsername": f"merchant.{MERCHANT}",
            "apiPassword": PASSWORD,
        },
    ]
