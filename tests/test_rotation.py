"""Rotation without a restart: token files, password files and TLS files read again on change.

Files are replaced on disk as Kubernetes does it (a new file renamed over the old, or a symlink
swapped to a new folder), and every check goes through a real call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import MappingProxyType

import grpc
import pytest
import trustme
from aiohttp import web

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.config import (
    CallerSettings,
    MerchantCredentials,
    ServerSettings,
    Settings,
    TlsFiles,
    token_digest,
)
from adapter.core.redaction import Secret
from adapter.server import AdapterServer, serve
from tests.certs import server_pair
from tests.conftest import MERCHANT, PASSWORD, ScriptedUpstream, make_settings

SUCCESS = (
    "merchant=TESTMERCHANT&result=SUCCESS&session.id=SESSION0002378433591N3262498M20"
    "&session.updateStatus=NO_UPDATE&session.version=030f712301"
)
OLD_TOKEN, NEW_TOKEN = "token-before-rotation", "token-after-rotation"


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` beside ``path``, then rename it over: readers see old or new, never half."""
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def token_settings(upstream: str, token_file: Path) -> Settings:
    caller = CallerSettings(
        "checkout",
        frozenset({MERCHANT}),
        token_sha256=token_digest(token_file.read_text().removesuffix("\n")),
        token_file=str(token_file),
    )
    return dataclasses.replace(
        make_settings(upstream), callers=MappingProxyType({"checkout": caller})
    )


async def call(address: str, token: str) -> grpc.StatusCode:
    """The status code a CreateSession call with this token gets."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        try:
            await stub.CreateSession(
                pb.CreateSessionRequest(merchant=MERCHANT),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=5,
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> bool:
    """Whether ``check`` turns true within ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(OLD_TOKEN + "\n")
    return path


@pytest.fixture
async def token_adapter(
    scripted_upstream: ScriptedUpstream, token_file: Path
) -> AsyncIterator[AdapterServer]:
    """An adapter whose one caller's token comes from a file, watched every 0.1 s."""
    scripted_upstream.reply(SUCCESS)
    async with build_server(
        token_settings(scripted_upstream.url, token_file), watch_interval=0.1
    ) as server:
        yield server


async def test_a_replaced_token_file_is_noticed(
    token_adapter: AdapterServer, token_file: Path
) -> None:
    """A token file renamed over the old one is in force within seconds; the old token is not."""
    assert await call(token_adapter.address, OLD_TOKEN) == grpc.StatusCode.OK
    replace_file(token_file, NEW_TOKEN + "\n")

    async def new_token_works() -> bool:
        return await call(token_adapter.address, NEW_TOKEN) == grpc.StatusCode.OK

    assert await eventually(new_token_works)
    assert await call(token_adapter.address, OLD_TOKEN) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_swapped_symlink_is_noticed(
    scripted_upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """A mounted secret swapped by renaming a `..data` symlink (same path, new folder) is seen."""
    scripted_upstream.reply(SUCCESS)
    for version, token in (("v1", OLD_TOKEN), ("v2", NEW_TOKEN)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "token").write_text(token)
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "token").symlink_to("..data/token")
    settings = token_settings(scripted_upstream.url, tmp_path / "token")
    async with build_server(settings, watch_interval=0.1) as server:
        (tmp_path / "..data_tmp").symlink_to("v2")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

        async def new_token_works() -> bool:
            return await call(server.address, NEW_TOKEN) == grpc.StatusCode.OK

        assert await eventually(new_token_works)


async def test_a_broken_new_file_keeps_the_old_token(
    token_adapter: AdapterServer, token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty replacement is refused with one error line; the old token stays in force."""
    caplog.set_level(logging.INFO, logger="adapter.rotation")
    replace_file(token_file, "")
    await asyncio.sleep(0.5)  # five polls: still one line
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "callers.checkout.token_file" in errors[0].getMessage()
    assert await call(token_adapter.address, OLD_TOKEN) == grpc.StatusCode.OK


async def test_reload_reads_files_at_once(
    scripted_upstream: ScriptedUpstream, token_file: Path
) -> None:
    """`reload()` (what SIGHUP calls) puts a changed file in force without waiting for a poll."""
    scripted_upstream.reply(SUCCESS)
    settings = token_settings(scripted_upstream.url, token_file)
    async with build_server(settings, watch_interval=3600) as server:
        replace_file(token_file, NEW_TOKEN)
        server.reload()
        assert await call(server.address, NEW_TOKEN) == grpc.StatusCode.OK


async def test_sighup_reloads_a_serving_adapter(
    scripted_upstream: ScriptedUpstream, token_file: Path
) -> None:
    """A real SIGHUP to a running `serve` reloads at once, and the adapter keeps serving."""
    scripted_upstream.reply(SUCCESS)
    settings = token_settings(scripted_upstream.url, token_file)
    server = build_server(settings, watch_interval=3600)
    ready = asyncio.Event()
    running = asyncio.create_task(serve(server, lambda _: ready.set()))
    await asyncio.wait_for(ready.wait(), 10)
    replace_file(token_file, NEW_TOKEN)
    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.sleep(0.1)  # the handler runs on the next loop turn
    code = await call(server.address, NEW_TOKEN)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(running, 10)
    assert code == grpc.StatusCode.OK


async def test_a_rotated_password_is_sent_to_the_gateway(
    scripted_upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """After a password file changes, the next call sends the new password."""
    scripted_upstream.reply(SUCCESS)
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    credentials = MerchantCredentials(MERCHANT, Secret(PASSWORD), str(password_file))
    settings = dataclasses.replace(
        make_settings(scripted_upstream.url),
        merchants=MappingProxyType({MERCHANT: credentials}),
    )
    async with build_server(settings, watch_interval=3600) as server:
        replace_file(password_file, "new password with spaces \n")
        server.reload()
        assert await call(server.address, "") == grpc.StatusCode.OK
    assert scripted_upstream.requests[-1]["apiPassword"] == "new password with spaces "


async def test_a_call_in_flight_survives_a_reload(
    scripted_upstream: ScriptedUpstream, token_file: Path
) -> None:
    """A reload while a call waits on the gateway does not drop it."""

    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.Response(body=SUCCESS, content_type="application/x-www-form-urlencoded")

    scripted_upstream.handler = slow
    settings = token_settings(scripted_upstream.url, token_file)
    async with build_server(settings, watch_interval=3600) as server:
        pending = asyncio.create_task(call(server.address, OLD_TOKEN))
        await asyncio.sleep(0.2)
        replace_file(token_file, NEW_TOKEN)
        server.reload()
        assert await pending == grpc.StatusCode.OK


async def test_a_rotated_server_certificate_serves_new_connections(tmp_path: Path) -> None:
    """After the listener's certificate files change, new connections get the new certificate
    and a connection made before keeps working."""
    old_ca, new_ca = trustme.CA(), trustme.CA()
    cert, key = server_pair(old_ca).write(tmp_path, "server")
    settings = dataclasses.replace(
        make_settings(),
        server=ServerSettings(listen="127.0.0.1:0", tls=TlsFiles(str(cert), str(key))),
    )

    async def create(channel: grpc.aio.Channel) -> pb.CreateSessionResponse:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        return await stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=5)

    def channel(ca: trustme.CA, port: int) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(ca.cert_pem.bytes())
        return grpc.aio.secure_channel(f"localhost:{port}", credentials)

    async with (
        build_server(settings, watch_interval=0.1) as server,
        channel(old_ca, server.port) as before,
    ):
        await create(before)
        new_pair = server_pair(new_ca)
        replace_file(key, new_pair.key.decode())
        replace_file(cert, new_pair.cert.decode())

        async def new_certificate_served() -> bool:
            async with channel(new_ca, server.port) as after:
                try:
                    await create(after)
                except grpc.aio.AioRpcError:
                    return False
                return True

        assert await eventually(new_certificate_served)
        assert (await create(before)).result == pb.RESULT_SUCCESS


async def test_the_embedded_gateway_follows_a_rotated_password(tmp_path: Path) -> None:
    """Serving from the embedded gateway, a rotated password file is in force on both sides, so
    calls go on succeeding after the rotation."""
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    credentials = MerchantCredentials(MERCHANT, Secret(PASSWORD), str(password_file))
    settings = dataclasses.replace(
        make_settings(), merchants=MappingProxyType({MERCHANT: credentials})
    )
    async with build_server(settings, watch_interval=3600) as server:
        replace_file(password_file, "a rotated password")
        server.reload()
        assert await call(server.address, "") == grpc.StatusCode.OK
