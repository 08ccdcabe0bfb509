"""No API password ever leaves: not in a log line, a status, a detail, a response or a repr.

The scripted gateway here is as hostile as the contract allows for: it echoes the whole request,
password included, in every form a gateway echoing a request would carry it (the form-encoded
body, the decoded pairs with the raw password, the body percent-encoded again with either case of
hex digits, a field named apiPassword), into every kind of answer the adapter handles. Text that
holds a password in any other form is beyond what the adapter may remove without becoming an
oracle: see tests/test_redaction.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from urllib.parse import parse_qsl, quote, quote_plus

import grpc
import pytest
from aiohttp import web
from grpc_status import rpc_status

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server, build_transport
from adapter.config import CallerSettings, load_settings, token_digest
from adapter.core import nvp
from adapter.embedded import EmbeddedGateway
from adapter.observability.logs import TextFormatter, json_formatter
from adapter.upstream.calls import UpstreamClient
from tests.conftest import MERCHANT, PASSWORD, ScriptedUpstream, StartAdapter, make_settings
from tests.test_cli import run

# A password with characters that form-encoding changes, so both spellings are checked.
ODD_PASSWORD = "p&ss=w+rd%/é 0f1e2d3c4b5a6978"


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record as the adapter writes it, in both formats: the access line's fields too."""
    text, as_json = TextFormatter(), json_formatter()
    return "\n".join(f"{text.format(r)}\n{as_json.format(r)}" for r in caplog.records)


def forms(password: str) -> tuple[str, ...]:
    """The spellings of a password a leak could take."""
    return (
        password,
        quote_plus(password),
        quote(password, safe=""),
        quote(quote_plus(password), safe=""),
    )


FORMS = forms(PASSWORD) + forms(ODD_PASSWORD)


def echo(kind: str, request_body: bytes, password: str) -> web.Response:
    """An answer of the given kind with the request (and so the password) inside it."""
    text = request_body.decode()
    decoded = "&".join(f"{name}={value}" for name, value in parse_qsl(text))  # the raw password
    encoded_again = quote(text, safe="")
    if kind == "success":
        fields = {
            "result": "SUCCESS",
            "merchant": MERCHANT,
            "echo": text,
            "echo.decoded": f"request: {decoded} (end)",
            "echo.encoded": encoded_again,
            "echo.lowerHex": encoded_again.replace("%3D", "%3d"),
            "apiPassword": password,
            "request.APIPASSWORD": password,
        }
        return web.Response(body=nvp.encode(fields), status=201)
    if kind == "error":
        fields = {
            "error.cause": "INVALID_REQUEST",
            "error.explanation": f"bad request {text} {decoded}",
            "error.field": "correlationId",
            "error.supportCode": encoded_again,
            "result": "ERROR",
        }
        return web.Response(body=nvp.encode(fields), status=400)
    if kind == "error on apiPassword":
        fields = {
            "error.cause": "INVALID_REQUEST",
            "error.explanation": f"Value '{password}' is invalid.",
            "error.field": "apiPassword",
            "result": "ERROR",
        }
        return web.Response(body=nvp.encode(fields), status=400)
    if kind == "unknown cause":
        return web.Response(body=nvp.encode({"error.cause": decoded, "result": "ERROR"}))
    if kind == "html":
        return web.Response(body=f"<html>{text}</html>", status=500, content_type="text/html")
    if kind == "overloaded":
        return web.Response(body=f"<html>{text}</html>", status=503, content_type="text/html")
    raise AssertionError(kind)


KINDS = ["success", "error", "error on apiPassword", "unknown cause", "html", "overloaded"]


@pytest.mark.parametrize("password", [PASSWORD, ODD_PASSWORD], ids=["hex", "odd characters"])
@pytest.mark.parametrize("kind", KINDS)
async def test_an_echoed_password_never_reaches_caller_or_log(
    kind: str,
    password: str,
    scripted_upstream: ScriptedUpstream,
    start_adapter: StartAdapter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever the gateway echoes, the caller's answer and every log line hold no password."""
    caplog.set_level(logging.DEBUG)

    async def handler(request: web.Request) -> web.StreamResponse:
        return echo(kind, await request.read(), password)

    scripted_upstream.handler = handler
    stub = await start_adapter(make_settings(scripted_upstream.url, {MERCHANT: password}))
    call = stub.CreateSession(
        pb.CreateSessionRequest(merchant=MERCHANT, correlation_id="c"), timeout=5
    )
    seen: list[str] = []
    try:
        seen.append(str(await call))
    except grpc.aio.AioRpcError as error:
        seen += [str(error), repr(error), str(await rpc_status.aio.from_call(call))]
    assert scripted_upstream.requests[0]["apiPassword"] == password, "the password was sent"
    for text in [*seen, logged(caplog)]:
        for form in forms(password):
            assert form not in text


async def test_a_malformed_header_quoting_the_request_leaks_nothing(
    start_adapter: StartAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway that writes the request's pairs into a malformed header line: the HTTP parser's
    error quotes that line, and neither the caller's status nor a log line holds the password."""
    caplog.set_level(logging.DEBUG)

    async def gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *([0-9]+)", head)[1])  # type: ignore[index]
        pairs = "&".join(
            f"{k}={v}" for k, v in parse_qsl((await reader.readexactly(length)).decode())
        )
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Echo {pairs}\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(gateway, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        stub = await start_adapter(make_settings(f"http://127.0.0.1:{port}", retry_max_attempts=1))
        call = stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        status = await rpc_status.aio.from_call(call)
    assert "X-Echo apiOperation=" in status.message, "the parser's error quotes the line"
    for text in [str(error.value), str(status), logged(caplog)]:
        for form in forms(PASSWORD):
            assert form not in text


async def test_unexpected_errors_are_logged_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """A traceback logged for a bug is redacted before it is written."""

    class Leaky:
        async def post(
            self, body: bytes, budget: float, headers: Mapping[str, str] | None = None
        ) -> object:
            raise RuntimeError(f"bug holding {body.decode()}")

        async def aclose(self) -> None:
            return None

    settings = make_settings(merchants={MERCHANT: ODD_PASSWORD})
    async with (
        build_server(settings, transport=Leaky()) as server,  # type: ignore[arg-type]
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=5)
    assert "RuntimeError: bug holding" in logged(caplog)
    for form in FORMS:
        assert form not in logged(caplog)


async def test_reprs_hold_no_password() -> None:
    """Settings, credentials, the embedded gateway, the transport and the client hide secrets."""
    settings = make_settings(merchants={MERCHANT: ODD_PASSWORD})
    transport = build_transport(settings)
    client = UpstreamClient(transport, settings.upstream, settings.merchants)
    objects = [
        settings,
        settings.merchants,
        settings.merchants[MERCHANT],
        EmbeddedGateway({MERCHANT: ODD_PASSWORD}),
        transport,
        client,
        load_settings(None),
    ]
    for thing in objects:
        for text in (repr(thing), str(thing)):
            for form in FORMS:
                assert form not in text
    await client.aclose()


TOKEN = "caller-token-9f8e7d6c"
PROXY_PASSWORD = "proxy-pw-3c2b1a"


async def test_caller_tokens_never_leave(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A caller's token, right, wrong or for another merchant, and its digest, reach no log
    record, status, detail or repr."""
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    caller = CallerSettings(
        "checkout",
        frozenset({MERCHANT}),
        token_sha256=token_digest(TOKEN),
        token_file=str(token_file),
    )
    settings = dataclasses.replace(
        make_settings(merchants={MERCHANT: PASSWORD, "OTHER": PASSWORD}),
        callers=MappingProxyType({"checkout": caller}),
    )
    seen: list[str] = []
    async with (
        build_server(settings, watch_interval=0.05) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        for token, merchant in ((TOKEN, MERCHANT), (TOKEN, "OTHER"), (TOKEN + "-wrong", MERCHANT)):
            call = stub.CreateSession(
                pb.CreateSessionRequest(merchant=merchant),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=5,
            )
            try:
                seen.append(str(await call))
            except grpc.aio.AioRpcError as exc:
                seen.append(f"{exc.details()} {await rpc_status.aio.from_call(call)}")
        token_file.write_text("")  # a broken rotation logs an error line: it must not quote
        await asyncio.sleep(0.3)
        seen += [repr(server.settings), repr(caller), repr(server.watch)]
    seen.append(logged(caplog))
    for secret in (TOKEN, token_digest(TOKEN).reveal()):
        assert not any(secret in text for text in seen)


async def test_proxy_credentials_never_leave(caplog: pytest.LogCaptureFixture) -> None:
    """Proxy credentials in `upstream.proxy` reach no log record, status or repr, even when the
    proxy cannot be reached."""
    caplog.set_level(logging.DEBUG)
    settings = make_settings(
        "https://localhost:1", proxy=f"http://proxy-user:{PROXY_PASSWORD}@127.0.0.1:1"
    )
    seen: list[str] = [repr(settings), repr(settings.upstream)]
    async with (
        build_server(settings) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        call = session_service_pb2_grpc.SessionServiceStub(channel).CreateSession(
            pb.CreateSessionRequest(merchant=MERCHANT), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        seen.append(f"{raised.value.details()} {await rpc_status.aio.from_call(call)}")
    seen.append(logged(caplog))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not any(PROXY_PASSWORD in text for text in seen)


async def test_config_check_prints_no_secret(tmp_path: Path) -> None:
    """`config check` shows every password, token digest and proxy credential as "***": none of
    them, in any spelling, is on its stdout or stderr, wherever it came from."""
    file_password, env_token, file_token, hashed_token = (
        "file-password-5a4b3c2d",
        TOKEN,
        "file-token-7e6d5c4b",
        "hashed-token-0a9b8c7d",
    )
    for name, secret in (("password", file_password), ("token", file_token)):
        (tmp_path / name).write_text(secret + "\n")
        (tmp_path / name).chmod(0o600)
    config = tmp_path / "adapter.toml"
    config.write_text(
        f"""
[upstream]
url = "https://gateway.example"
proxy = "http://proxy-user:{PROXY_PASSWORD}@127.0.0.1:3128"
[merchants.INLINE]
password = '{ODD_PASSWORD}'
[merchants.FROMENV]
password_env = "FROMENV_PASSWORD"
[merchants.FROMFILE]
password_file = "{tmp_path / "password"}"
[callers.byenv]
token_env = "CALLER_TOKEN"
merchants = ["*"]
[callers.byfile]
token_file = "{tmp_path / "token"}"
merchants = ["*"]
[callers.bydigest]
token_sha256 = "{token_digest(hashed_token).reveal()}"
merchants = ["*"]
"""
    )
    code, out, err = await run(
        "config",
        "check",
        "--config",
        str(config),
        env={"FROMENV_PASSWORD": PASSWORD, "CALLER_TOKEN": env_token},
    )
    assert code == 0
    assert out.count('"***"') == 6  # three passwords, three token digests
    assert "http://***@127.0.0.1:3128" in out
    secrets = [*FORMS, *forms(file_password), PROXY_PASSWORD, "proxy-user"]
    for token in (env_token, file_token, hashed_token):
        secrets += [token, token_digest(token).reveal()]
    for secret in secrets:
        assert secret not in out + err
