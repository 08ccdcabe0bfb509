"""Where the adapter listens: TCP, Unix sockets, TLS and mutual TLS, and a health-only listener."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.config import ServerSettings, Settings, TlsFiles, load_settings
from adapter.core.errors import ConfigError
from tests.certs import client_pair, server_pair
from tests.conftest import MERCHANT, make_settings


def listening(**server: Any) -> Settings:
    """The test settings, listening as told."""
    return dataclasses.replace(make_settings(), server=ServerSettings(**server))


async def create_session(channel: grpc.aio.Channel) -> pb.CreateSessionResponse:
    stub = session_service_pb2_grpc.SessionServiceStub(channel)
    return await stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=5)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A folder with a short path: a Unix socket path is at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="nvp-") as folder:
        yield Path(folder)


async def test_a_unix_socket_serves_and_is_mode_0660(short_tmp: Path) -> None:
    """`unix:PATH` serves the API on a socket only its owner and group may open."""
    path = short_tmp / "grpc.sock"
    async with build_server(listening(listen=f"unix:{path}")) as server:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        async with grpc.aio.insecure_channel(server.address) as channel:
            response = await create_session(channel)
    assert response.result == pb.RESULT_SUCCESS


async def test_a_stale_unix_socket_is_replaced(short_tmp: Path) -> None:
    """A socket file left by a process that is gone does not stop the next start."""
    path = short_tmp / "grpc.sock"
    with socket.socket(socket.AF_UNIX) as old:
        old.bind(str(path))  # bound, never listening: what a killed process leaves
    async with (
        build_server(listening(listen=f"unix://{path}")) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        response = await create_session(channel)
    assert response.result == pb.RESULT_SUCCESS


async def test_a_unix_socket_in_use_is_a_config_error(short_tmp: Path) -> None:
    """A second adapter on a socket that is served refuses to start, in one line."""
    path = short_tmp / "grpc.sock"
    async with build_server(listening(listen=f"unix:{path}")):
        with pytest.raises(ConfigError, match=f"^server.listen: unix:{path} is in use$"):
            await build_server(listening(listen=f"unix:{path}")).start()


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051", "10.0.0.8:50051", "pod:50051"])
def test_a_non_loopback_address_needs_tls_or_insecure(listen: str) -> None:
    """Plaintext on an address other processes can reach is refused unless it is said twice."""
    with pytest.raises(ConfigError, match="is not a loopback address"):
        ServerSettings(listen=listen)
    assert ServerSettings(listen=listen, insecure=True).listen == listen


def test_a_non_loopback_address_with_tls_is_accepted(tmp_path: Path) -> None:
    """With [server.tls] any address may be used."""
    files = TlsFiles(str(tmp_path / "c"), str(tmp_path / "k"))
    assert ServerSettings(listen="0.0.0.0:50051", tls=files).tls == files


def test_the_contract_example_on_all_addresses_loads(tmp_path: Path) -> None:
    """`listen = "0.0.0.0:50051"` with `insecure = true` loads from a file (with the upstream
    named, as a non-loopback address needs)."""
    path = tmp_path / "a.toml"
    path.write_text(
        '[server]\nlisten = "0.0.0.0:50051"\ninsecure = true\n[upstream]\nurl = "embedded"\n'
    )
    assert load_settings(path).server.insecure is True


async def test_the_health_listener_serves_health_only() -> None:
    """`health_listen` answers grpc.health.v1; the API is not there (UNIMPLEMENTED)."""
    settings = listening(listen="127.0.0.1:0", health_listen="127.0.0.1:0")
    async with (
        build_server(settings) as server,
        grpc.aio.insecure_channel(server.health_address) as channel,
    ):
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="mpgs.gateway.v1.SessionService"),
            timeout=5,
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await create_session(channel)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_health_listener_turns_not_serving_on_stop() -> None:
    """Stopping turns health NOT_SERVING on the health listener as on the main one."""
    settings = listening(listen="127.0.0.1:0", health_listen="127.0.0.1:0")
    server = build_server(settings)
    await server.start()
    async with grpc.aio.insecure_channel(server.health_address) as channel:
        await server.health.enter_graceful_shutdown()
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    await server.stop()
    assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_tls_serves_a_client_that_trusts_the_ca(tmp_path: Path) -> None:
    """With [server.tls] the API is served over TLS to a client that trusts its CA."""
    ca = trustme.CA()
    cert, key = server_pair(ca).write(tmp_path, "server")
    settings = listening(listen="127.0.0.1:0", tls=TlsFiles(str(cert), str(key)))
    async with build_server(settings) as server:
        credentials = grpc.ssl_channel_credentials(ca.cert_pem.bytes())
        async with grpc.aio.secure_channel(f"localhost:{server.port}", credentials) as channel:
            response = await create_session(channel)
    assert response.result == pb.RESULT_SUCCESS


async def test_tls_refuses_a_plaintext_client(tmp_path: Path) -> None:
    """A plaintext client gets nothing from a TLS listener."""
    cert, key = server_pair(trustme.CA()).write(tmp_path, "server")
    settings = listening(listen="127.0.0.1:0", tls=TlsFiles(str(cert), str(key)))
    async with (
        build_server(settings) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await create_session(channel)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_a_client_without_a_certificate(tmp_path: Path) -> None:
    """With client_ca_file, a client that shows no certificate cannot call."""
    ca, client_ca = trustme.CA(), trustme.CA()
    cert, key = server_pair(ca).write(tmp_path, "server")
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
    tls = TlsFiles(str(cert), str(key), str(tmp_path / "client-ca.pem"))
    async with build_server(listening(listen="127.0.0.1:0", tls=tls)) as server:
        bare = grpc.ssl_channel_credentials(ca.cert_pem.bytes())
        async with grpc.aio.secure_channel(f"localhost:{server.port}", bare) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await create_session(channel)
        client = client_pair(client_ca, common_name="any")
        full = grpc.ssl_channel_credentials(ca.cert_pem.bytes(), client.key, client.cert)
        async with grpc.aio.secure_channel(f"localhost:{server.port}", full) as channel:
            response = await create_session(channel)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert response.result == pb.RESULT_SUCCESS


@pytest.mark.parametrize("broken", ["cert", "key", "mismatch"])
async def test_unusable_tls_files_are_a_config_error(tmp_path: Path, broken: str) -> None:
    """A missing or mismatched certificate or key stops the start with one line."""
    cert, key = server_pair(trustme.CA()).write(tmp_path, "server")
    if broken == "cert":
        cert = tmp_path / "missing.crt"
    elif broken == "key":
        key.write_text("not a key")
    else:
        _, key = server_pair(trustme.CA()).write(tmp_path, "other")
    settings = listening(listen="127.0.0.1:0", tls=TlsFiles(str(cert), str(key)))
    with pytest.raises(ConfigError, match=r"^server\.tls") as raised:
        await build_server(settings).start()
    assert "\n" not in str(raised.value)
    assert "PRIVATE KEY" not in str(raised.value)


async def closed_within(port: int, seconds: float) -> bool:
    """Whether a new connection that sends nothing is closed by the server within ``seconds``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await closed_within_reader(reader, seconds)
    finally:
        writer.close()


async def test_a_silent_connection_is_closed_after_the_handshake_timeout() -> None:
    """A client that connects and never speaks HTTP/2 is dropped after handshake_timeout."""
    settings = listening(listen="127.0.0.1:0", handshake_timeout_seconds=1)
    async with build_server(settings) as server:
        assert await closed_within(server.port, 4.0)


async def test_connections_past_the_limit_are_refused() -> None:
    """With max_connections open, one more is closed at once; the ones before stay open."""
    settings = listening(listen="127.0.0.1:0", max_connections=2, handshake_timeout_seconds=30)
    async with build_server(settings) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        try:
            assert await closed_within(server.port, 2.0)
            assert not await closed_within_reader(held[0][0], 0.5)
        finally:
            for _, writer in held:
                writer.close()


async def closed_within_reader(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes this connection within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):  # the server's SETTINGS frame, then the close
                pass
    except TimeoutError:
        return False
    return True
