"""The adapter's real HTTP path, against the embedded gateway's HTTP face, in clear and over TLS."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import grpc
import pytest
import trustme
from aiohttp import web
from google.rpc import error_details_pb2

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.core import nvp
from adapter.core.errors import AdapterOverloaded
from adapter.core.redaction import Secret
from adapter.embedded import EmbeddedGateway, start_http_gateway
from adapter.upstream.calls import UpstreamClient, parse_retry_after
from adapter.upstream.transport import Reply
from tests.conftest import (
    MERCHANT,
    PASSWORD,
    ScriptedUpstream,
    StartAdapter,
    fail,
    make_settings,
)
from tests.test_cli import Start, nvp_adapter

SESSION_ID = re.compile(r"SESSION0002[0-9A-Z]{20}")

__all__ = ["nvp_adapter"]  # the fixture, shared with test_cli


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


StartGateway = Callable[..., Awaitable[str]]


@pytest.fixture
async def http_gateway() -> AsyncIterator[StartGateway]:
    """Start the embedded gateway's HTTP face on port 0; returns its base URL; stops afterwards."""
    runners: list[web.AppRunner] = []

    async def start(ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> str:
        gateway = EmbeddedGateway({MERCHANT: PASSWORD})
        runner, port = await start_http_gateway(gateway, host, 0, ssl_context)
        runners.append(runner)
        scheme = "https" if ssl_context else "http"
        return f"{scheme}://{host if ssl_context is None else 'localhost'}:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


def server_context(ca: trustme.CA, *hosts: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hosts).configure_cert(context)
    return context


async def test_create_session_over_http(
    http_gateway: StartGateway, start_adapter: StartAdapter
) -> None:
    """A CreateSession call crosses real HTTP to the gateway face and comes back typed."""
    url = await http_gateway()
    stub = await start_adapter(make_settings(url))
    response = await stub.CreateSession(
        pb.CreateSessionRequest(merchant=MERCHANT, correlation_id="a&b=c+d%e é"), timeout=5
    )
    assert response.result == pb.RESULT_SUCCESS
    assert response.merchant == MERCHANT
    assert response.correlation_id == "a&b=c+d%e é"
    assert SESSION_ID.fullmatch(response.session.id)
    assert len(response.session.version) == 10
    assert response.session.update_status == pb.SESSION_UPDATE_STATUS_NO_UPDATE
    assert dict(response.extra_fields) == {}


async def test_create_session_over_tls(
    http_gateway: StartGateway,
    start_adapter: StartAdapter,
    ca: trustme.CA,
    ca_file: str,
) -> None:
    """Over HTTPS the gateway's certificate is verified against the configured CA bundle."""
    url = await http_gateway(server_context(ca, "localhost"), "localhost")
    stub = await start_adapter(make_settings(url, ca_file=ca_file))
    response = await stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=5)
    assert response.result == pb.RESULT_SUCCESS
    assert SESSION_ID.fullmatch(response.session.id)


@pytest.mark.parametrize("trusted", [False, True], ids=["unknown CA", "wrong host name"])
async def test_certificate_problems_are_unavailable(
    trusted: bool,
    http_gateway: StartGateway,
    start_adapter: StartAdapter,
    ca: trustme.CA,
    ca_file: str,
) -> None:
    """An untrusted certificate or a host-name mismatch fails the handshake: never sent, and a
    configuration fault (``tls=CERTIFICATE_INVALID``), so no RetryInfo."""
    url = await http_gateway(server_context(ca, "gateway.example"), "localhost")
    stub = await start_adapter(
        make_settings(url, ca_file=ca_file if trusted else None),
    )
    failure = await fail(stub)
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.info.reason == "UPSTREAM_UNAVAILABLE"
    assert failure.info.metadata["tls"] == "CERTIFICATE_INVALID"
    assert error_details_pb2.RetryInfo not in failure.details
    assert "certificate" in failure.message.lower()


async def test_client_certificate_authentication(
    start_adapter: StartAdapter, ca: trustme.CA, ca_file: str, tmp_path: Path
) -> None:
    """With certificate authentication the adapter presents its client certificate and sends no
    apiUsername or apiPassword."""
    seen: list[tuple[dict[str, str], object]] = []

    async def handler(request: web.Request) -> web.Response:
        assert request.transport is not None
        seen.append(
            (nvp.decode(await request.read()), request.transport.get_extra_info("peercert"))
        )
        body = "merchant=CERTM&result=SUCCESS&session.id=SESSION0002AAAAAAAAAAAAAAAAAAAA"
        return web.Response(
            body=body + "&session.updateStatus=NO_UPDATE&session.version=0123456789"
        )

    context = server_context(ca, "localhost")
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)
    client = ca.issue_cert("nvp-adapter-client")
    cert_file = tmp_path / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(cert_file))

    app = web.Application()
    app.router.add_post("/api/nvp/version/{version}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "localhost", 0, ssl_context=context)
    await site.start()
    try:
        port = runner.addresses[0][1]
        settings = make_settings(
            f"https://localhost:{port}",
            merchants={"CERTM": None},
            ca_file=ca_file,
            client_cert_file=str(cert_file),
        )
        stub = await start_adapter(settings)
        response = await stub.CreateSession(pb.CreateSessionRequest(merchant="CERTM"), timeout=5)
    finally:
        await runner.cleanup()
    assert response.result == pb.RESULT_SUCCESS
    [(fields, peercert)] = seen
    assert fields == {"apiOperation": "CREATE_SESSION", "merchant": "CERTM"}
    assert peercert, "the client certificate reached the gateway"


async def test_request_on_the_wire(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """The wire request is the form-encoded operation with the adapter's own credentials."""
    scripted_upstream.reply(
        "merchant=TESTMERCHANT&result=SUCCESS&session.id=SESSION0002AAAAAAAAAAAAAAAAAAAA"
        "&session.updateStatus=NO_UPDATE&session.version=0123456789&session.aes256Key=k%3D"
        "&result=SUCCESS",
        201,
    )
    stub = await start_adapter(make_settings(scripted_upstream.url))
    response = await stub.CreateSession(
        pb.CreateSessionRequest(
            merchant=MERCHANT,
            correlation_id="x&apiPassword=stolen",
            extra_fields={"session.authenticationLimit": "5"},
        ),
        timeout=5,
    )
    assert scripted_upstream.requests == [
        {
            "apiOperation": "CREATE_SESSION",
            "merchant": MERCHANT,
            "correlationId": "x&apiPassword=stolen",
            "session.authenticationLimit": "5",
            "apiUsername": f"merchant.{MERCHANT}",
            "apiPassword": PASSWORD,
        }
    ]
    assert dict(response.extra_fields) == {"session.aes256Key": "k="}


async def test_unknown_enum_values_are_kept(
    scripted_upstream: ScriptedUpstream, start_adapter: StartAdapter
) -> None:
    """A result the proto lacks maps to RESULT_UNSPECIFIED with the raw text in extra_fields."""
    scripted_upstream.reply("result=MAYBE&merchant=TESTMERCHANT&session.updateStatus=LATER", 201)
    stub = await start_adapter(make_settings(scripted_upstream.url))
    response = await stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=5)
    assert response.result == pb.RESULT_UNSPECIFIED
    assert response.session.update_status == pb.SESSION_UPDATE_STATUS_UNSPECIFIED
    assert dict(response.extra_fields) == {"result": "MAYBE", "session.updateStatus": "LATER"}


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 12 ", 12.0),
        ("soon", None),
        ("-3", None),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    """Retry-After is delta-seconds or an HTTP date; anything else is no advice."""
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(header, now=now) == seconds


class BodyRecorder:
    """A transport that keeps every body it is given and answers each with success."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def post(
        self, body: bytes, budget: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        self.bodies.append(body)
        return Reply(200, b"result=SUCCESS")

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(
    "fields",
    [
        {"apiOperation": "CREATE_SESSION", "merchant": MERCHANT},
        {"merchant": MERCHANT, "correlationId": "a&apiPassword=b c"},
        # Not from a servicer (extra_fields refuses these names), but the client's own win.
        {"merchant": MERCHANT, "apiPassword": "theirs", "apiUsername": "x", "z": "1"},
    ],
)
async def test_the_body_is_the_fields_then_the_current_credentials(
    fields: dict[str, str],
) -> None:
    """The credentials, encoded once per merchant, make the same body as encoding them with
    the fields each time would; after a rotation, the new password's."""
    settings = make_settings(merchants={MERCHANT: "p&ss w=rd%", "OTHER": None})
    recorder = BodyRecorder()
    client = UpstreamClient(recorder, settings.upstream, settings.merchants)
    await client.call(fields)
    client.replace_password(MERCHANT, Secret("new+pass"))
    await client.call(fields)
    await client.call({"merchant": "OTHER"})
    credentials = {"apiUsername": f"merchant.{MERCHANT}"}
    assert recorder.bodies == [
        nvp.encode({**fields, **credentials, "apiPassword": "p&ss w=rd%"}),
        nvp.encode({**fields, **credentials, "apiPassword": "new+pass"}),
        b"merchant=OTHER",  # certificate authentication: no credentials in the body
    ]


async def test_a_free_slot_is_taken_without_a_loop_turn() -> None:
    """While a slot is free, taking one completes at once: no timer, no suspension; once all
    are taken, the next waits for the queue timeout and is refused ADAPTER_OVERLOADED."""
    settings = make_settings(max_concurrent_calls=2, queue_timeout_seconds=0.01)
    client = UpstreamClient(BodyRecorder(), settings.upstream, settings.merchants)
    for _ in range(2):
        taking = client._take_slot(None)
        with pytest.raises(StopIteration):
            taking.send(None)
    with pytest.raises(AdapterOverloaded):
        await client._take_slot(None)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_serve_reaches_an_https_gateway_on_either_event_loop(
    loop: str,
    http_gateway: StartGateway,
    ca: trustme.CA,
    tmp_path: Path,
    nvp_adapter: Start,
) -> None:
    """The real ``serve`` process (uvloop by default) calls a gateway over HTTPS, its
    certificate verified against ``ca_file``, with the adapter's own HTTP/1.1 client."""
    url = await http_gateway(server_context(ca, "localhost"), "localhost")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    config = tmp_path / "adapter.toml"
    config.write_text(
        f'[upstream]\nurl = "{url}"\nca_file = "{ca_file}"\n'
        f'[merchants.{MERCHANT}]\npassword = "{PASSWORD}"\n'
    )
    server = await nvp_adapter(
        "serve", "--config", str(config), "--listen", "127.0.0.1:0", "--loop", loop
    )
    async with grpc.aio.insecure_channel(server.address) as channel:
        response = await session_service_pb2_grpc.SessionServiceStub(channel).CreateSession(
            pb.CreateSessionRequest(merchant=MERCHANT), timeout=10
        )
    assert response.result == pb.RESULT_SUCCESS
    code, _, err = await server.stop()
    assert code == 0
    assert "Traceback" not in err
