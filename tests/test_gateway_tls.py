"""HTTPS on the embedded gateway: certificate authentication, reloads, and the adapter end to end.

Real TLS with trustme certificates; the reload tests run the real `nvp-adapter gateway` process,
replace its files on disk (``os.replace``, and a Kubernetes-style symlink swap) and send it real
SIGHUPs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
import trustme

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.config import GatewaySettings, TlsFiles
from adapter.core import nvp
from adapter.embedded import EmbeddedGateway, start_http_gateway
from adapter.embedded.tls import GatewayTls
from adapter.net.http_guard import MAX_EARLY_TLS_BYTES
from tests.certs import named_client
from tests.conftest import StartAdapter, fail, make_settings
from tests.test_cli import COMMAND, START_TIMEOUT, run

HOST = "127.0.0.1"
CERT_MERCHANT = "CERTM"  # accepted by its client certificate alone: no password
PASSWORD_MERCHANT = "PWM"
PASSWORD = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
NEW_PASSWORD = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
ACCOUNTS: Mapping[str, str | None] = {CERT_MERCHANT: None, PASSWORD_MERCHANT: PASSWORD}
WATCH_SECONDS = 1.0  # the gateway's polling interval


@dataclass
class Pki:
    """A CA, the gateway's server certificate files, and client certificates, all on disk."""

    ca: trustme.CA
    directory: Path
    ca_file: str
    cert_file: str
    key_file: str

    def client_cert(self, common_name: str, ca: trustme.CA | None = None) -> str:
        """A PEM file with a client certificate for ``common_name`` and its key."""
        path = self.directory / f"client-{common_name}-{id(ca)}.pem"
        leaf = named_client(ca or self.ca, common_name)
        leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
        return str(path)

    def server_cert_pem(self) -> bytes:
        """The server certificate now in ``cert_file``."""
        return Path(self.cert_file).read_bytes()

    def server_cert(self) -> tuple[bytes, bytes, bytes]:
        """A new server certificate for localhost: (cert PEM, key PEM, cert DER)."""
        leaf = self.ca.issue_cert("localhost", HOST)
        cert_pem = leaf.cert_chain_pems[0].bytes()
        return cert_pem, leaf.private_key_pem.bytes(), der(cert_pem)

    def client_context(self, cert: str | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if cert is not None:
            context.load_cert_chain(cert)
        return context


def der(cert_pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii"))


def replace_file(path: str | Path, data: bytes) -> None:
    """Write to a temporary name beside it, then rename over it: what careful tools do."""
    temporary = Path(f"{path}.new")
    temporary.write_bytes(data)
    os.replace(temporary, path)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert("localhost", HOST)
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    return Pki(ca, tmp_path, str(ca_file), str(cert_file), str(key_file))


def create_session(merchant: str, **credentials: str) -> bytes:
    return nvp.encode({"apiOperation": "CREATE_SESSION", "merchant": merchant, **credentials})


async def post(
    port: int,
    body: bytes,
    context: ssl.SSLContext,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str]]:
    """One HTTPS POST to the NVP path; the status and the decoded answer."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.post(
            f"https://{HOST}:{port}/api/nvp/version/100", data=body, headers=headers or {}
        ) as response,
    ):
        return response.status, nvp.decode(await response.read())


# --- certificate authentication, in-process -------------------------------------------------------

ServeTls = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve_tls(pki: Pki) -> AsyncIterator[ServeTls]:
    """The HTTP face over TLS from ``pki``'s files (with client CA unless told); the port."""
    runners = []

    async def start(*, client_ca: bool = True, settings: GatewaySettings | None = None) -> int:
        tls = GatewayTls(TlsFiles(pki.cert_file, pki.key_file, pki.ca_file if client_ca else None))
        runner, port = await start_http_gateway(
            EmbeddedGateway(ACCOUNTS), HOST, 0, tls.context, settings=settings
        )
        runners.append(runner)
        return port

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


async def test_password_clients_still_get_in_over_https(serve_tls: ServeTls, pki: Pki) -> None:
    """Asking for a client certificate is optional: a client without one uses its password."""
    port = await serve_tls()
    body = create_session(
        PASSWORD_MERCHANT, apiUsername=f"merchant.{PASSWORD_MERCHANT}", apiPassword=PASSWORD
    )
    status, _ = await post(port, body, pki.client_context())
    assert status == 201


async def test_a_verified_certificate_stands_in_for_the_password(
    serve_tls: ServeTls, pki: Pki
) -> None:
    """A client certificate whose CN is the merchant id: no apiUsername, no apiPassword, 201."""
    port = await serve_tls()
    context = pki.client_context(pki.client_cert(CERT_MERCHANT))
    status, fields = await post(port, create_session(CERT_MERCHANT), context)
    assert (status, fields["merchant"]) == (201, CERT_MERCHANT)


async def test_a_certificate_with_its_own_api_username_is_accepted(
    serve_tls: ServeTls, pki: Pki
) -> None:
    """apiUsername may come with the certificate, naming the same merchant."""
    port = await serve_tls()
    context = pki.client_context(pki.client_cert(CERT_MERCHANT))
    body = create_session(CERT_MERCHANT, apiUsername=f"merchant.{CERT_MERCHANT}")
    status, _ = await post(port, body, context)
    assert status == 201


async def test_an_api_username_naming_another_merchant_is_refused(
    serve_tls: ServeTls, pki: Pki
) -> None:
    """A certificate for one merchant with apiUsername naming another: 401."""
    port = await serve_tls()
    context = pki.client_context(pki.client_cert(CERT_MERCHANT))
    body = create_session(PASSWORD_MERCHANT, apiUsername=f"merchant.{PASSWORD_MERCHANT}")
    status, fields = await post(port, body, context)
    assert (status, fields["error.explanation"]) == (401, "Invalid credentials.")


async def test_a_certificate_for_another_merchant_is_refused(serve_tls: ServeTls, pki: Pki) -> None:
    """A request for one merchant carrying another merchant's certificate: 401."""
    port = await serve_tls()
    context = pki.client_context(pki.client_cert(PASSWORD_MERCHANT))
    status, fields = await post(port, create_session(CERT_MERCHANT), context)
    assert (status, fields["error.explanation"]) == (401, "Invalid credentials.")


async def test_a_certificate_from_another_ca_does_not_get_in(serve_tls: ServeTls, pki: Pki) -> None:
    """A client certificate the client CA did not sign fails the handshake."""
    port = await serve_tls()
    context = pki.client_context(pki.client_cert(CERT_MERCHANT, trustme.CA()))
    with pytest.raises(aiohttp.ClientError):
        await post(port, create_session(CERT_MERCHANT), context)


async def test_without_a_client_ca_a_certificate_counts_for_nothing(
    serve_tls: ServeTls, pki: Pki
) -> None:
    """With no client_ca_file no certificate is asked for or verified: a sent one is ignored."""
    port = await serve_tls(client_ca=False)
    context = pki.client_context(pki.client_cert(CERT_MERCHANT))
    status, _ = await post(port, create_session(CERT_MERCHANT), context)
    assert status == 401


async def test_a_certificate_name_in_a_header_counts_for_nothing(
    serve_tls: ServeTls, pki: Pki
) -> None:
    """Only the TLS layer says who the certificate names: headers a proxy might set do not."""
    port = await serve_tls()
    headers = {
        "X-SSL-Client-S-DN": f"CN={CERT_MERCHANT}",
        "X-Client-Cert-CN": CERT_MERCHANT,
        "Ssl-Client-Verify": "SUCCESS",
    }
    status, _ = await post(port, create_session(CERT_MERCHANT), pki.client_context(), headers)
    assert status == 401


async def test_a_stalled_tls_handshake_is_closed_by_the_request_timeout(
    serve_tls: ServeTls,
) -> None:
    """A client that connects to the HTTPS port and never says hello is closed in time."""
    port = await serve_tls(settings=GatewaySettings(request_timeout_seconds=0.5))
    reader, writer = await asyncio.open_connection(HOST, port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with contextlib.suppress(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    assert loop.time() - started < 1.5


async def test_bytes_that_are_not_tls_close_the_connection_and_nothing_else(
    serve_tls: ServeTls, pki: Pki
) -> None:
    """A client that floods the HTTPS port at once with bytes that are no TLS hello (three times
    MAX_EARLY_TLS_BYTES) has its connection closed before the request timeout, with no HTTP
    answer, and the next client is served. Whichever ends it, the failed handshake or the bound
    on bytes before TLS took over (only on uvloop, and only when they arrive before start_tls
    ran), this does not tell apart."""
    port = await serve_tls(settings=GatewaySettings(request_timeout_seconds=5.0))
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"\0" * (MAX_EARLY_TLS_BYTES * 3))
    with contextlib.suppress(ConnectionError):
        await writer.drain()
        closing = await asyncio.wait_for(reader.read(), 4.0)  # within the request timeout
        assert b"HTTP" not in closing
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    status, answer = await post(
        port,
        create_session(
            PASSWORD_MERCHANT, apiUsername=f"merchant.{PASSWORD_MERCHANT}", apiPassword=PASSWORD
        ),
        pki.client_context(),
    )
    assert (status, answer["result"]) == (201, "SUCCESS")


# --- the `nvp-adapter gateway` process: HTTPS, SIGHUP, files rotated on disk ----------------------


@dataclass
class GatewayProcess:
    """A running `nvp-adapter gateway`, its start line, and its stderr (a file, read any time)."""

    proc: asyncio.subprocess.Process
    first_line: str
    stderr_path: Path

    @property
    def port(self) -> int:
        match = re.search(r"listening on https?://[^/]*:(\d+)/", self.first_line)
        assert match, self.first_line
        return int(match[1])

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    async def wait_for_stderr(self, text: str, count: int = 1, within: float = 5.0) -> None:
        """Wait until ``text`` shows ``count`` times in stderr (fails after ``within`` s)."""
        for _ in range(int(within / 0.05)):
            if self.stderr().count(text) >= count:
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"{text!r} x{count} not in stderr: {self.stderr()}")

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 15)


StartGateway = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
async def gateway_process(tmp_path: Path) -> AsyncIterator[StartGateway]:
    """Start `nvp-adapter gateway --config FILE` from the given TOML text; killed afterwards."""
    started: list[asyncio.subprocess.Process] = []

    async def start(config: str, *args: str) -> GatewayProcess:
        config_path = tmp_path / f"gateway-{len(started)}.toml"
        config_path.write_text(config)
        stderr_path = tmp_path / f"gateway-{len(started)}.stderr"
        with stderr_path.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                *COMMAND,
                "gateway",
                "--config",
                str(config_path),
                "--listen",
                f"{HOST}:0",
                *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        started.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        if not line:
            pytest.fail(f"no start line; stderr: {stderr_path.read_text()}")
        return GatewayProcess(proc, line.decode(), stderr_path)

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def gateway_config(cert_file: str, key_file: str, ca_file: str, password_file: Path) -> str:
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    return (
        f"[gateway.tls]\ncert_file = {json.dumps(cert_file)}\nkey_file = {json.dumps(key_file)}\n"
        f"client_ca_file = {json.dumps(ca_file)}\n"
        f"[merchants.{CERT_MERCHANT}]\n"
        f"[merchants.{PASSWORD_MERCHANT}]\npassword_file = {json.dumps(str(password_file))}\n"
    )


async def served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    """The DER certificate a new TLS connection to ``port`` is served."""
    _, writer = await asyncio.open_connection(HOST, port, ssl=context)
    ssl_object = writer.get_extra_info("ssl_object")
    certificate = ssl_object.getpeercert(binary_form=True)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    assert isinstance(certificate, bytes)
    return certificate


async def served_within(port: int, context: ssl.SSLContext, wanted: bytes, seconds: float) -> bytes:
    """The served certificate, looked at until it is ``wanted`` or ``seconds`` have passed."""
    served = await served_certificate(port, context)
    for _ in range(int(seconds / 0.1)):
        if served == wanted:
            break
        await asyncio.sleep(0.1)
        served = await served_certificate(port, context)
    return served


async def test_gateway_command_serves_https_and_says_so(
    gateway_process: StartGateway, pki: Pki
) -> None:
    """With [gateway.tls] the start line gives an https URL and says certificates are asked for."""
    config = gateway_config(pki.cert_file, pki.key_file, pki.ca_file, pki.directory / "pw")
    gateway = await gateway_process(config)
    assert re.fullmatch(
        r"embedded gateway listening on https://127\.0\.0\.1:\d+/api/nvp/version/100 "
        r"\(merchants: CERTM \(certificate\), PWM\); client certificates asked for\n",
        gateway.first_line,
    )


async def test_tls_files_that_do_not_load_at_start_are_one_line(pki: Pki) -> None:
    """A key that does not match the certificate: one line naming the files, exit 2."""
    replace_file(pki.key_file, pki.ca.issue_cert("other").private_key_pem.bytes())
    config_path = pki.directory / "broken.toml"
    replace_file(
        config_path,
        gateway_config(pki.cert_file, pki.key_file, pki.ca_file, pki.directory / "pw").encode(),
    )
    code, _, err = await run("gateway", "--config", str(config_path), "--listen", f"{HOST}:0")
    assert (code, err) == (
        2,
        f"nvp-adapter: error: gateway.tls: cannot load {pki.cert_file} and {pki.key_file} as a "
        "PEM certificate and its key: KEY_VALUES_MISMATCH\n",
    )


async def test_sighup_reloads_and_the_gateway_keeps_serving(
    gateway_process: StartGateway, pki: Pki
) -> None:
    """SIGHUP reads the TLS and password files again; the gateway serves on and exits 0 later."""
    config = gateway_config(pki.cert_file, pki.key_file, pki.ca_file, pki.directory / "pw")
    gateway = await gateway_process(config)
    gateway.proc.send_signal(signal.SIGHUP)
    await gateway.wait_for_stderr("gateway.tls: reloaded")
    await gateway.wait_for_stderr(f"merchants.{PASSWORD_MERCHANT}.password_file: reloaded")
    context = pki.client_context(pki.client_cert(CERT_MERCHANT))
    status, _ = await post(gateway.port, create_session(CERT_MERCHANT), context)
    assert (status, await gateway.stop()) == (201, 0)


async def test_a_replaced_certificate_is_served_after_sighup(
    gateway_process: StartGateway, pki: Pki
) -> None:
    """Certificate and key replaced by rename, then SIGHUP: the next handshake gets the new one."""
    config = gateway_config(pki.cert_file, pki.key_file, pki.ca_file, pki.directory / "pw")
    gateway = await gateway_process(config)
    cert_pem, key_pem, new = pki.server_cert()
    replace_file(pki.key_file, key_pem)
    replace_file(pki.cert_file, cert_pem)
    gateway.proc.send_signal(signal.SIGHUP)
    await gateway.wait_for_stderr("gateway.tls: reloaded")
    assert await served_certificate(gateway.port, pki.client_context()) == new


async def test_a_swapped_secret_symlink_is_noticed_without_a_signal(
    gateway_process: StartGateway, pki: Pki
) -> None:
    """Kubernetes' swap of the ``..data`` symlink is seen by content within 10 s, no SIGHUP."""
    secret = pki.directory / "secret"
    first = secret / "..2026_01"
    first.mkdir(parents=True)
    os.replace(pki.cert_file, first / "tls.crt")
    os.replace(pki.key_file, first / "tls.key")
    (secret / "..data").symlink_to("..2026_01")
    for name in ("tls.crt", "tls.key"):
        (secret / name).symlink_to(f"..data/{name}")
    config = gateway_config(
        str(secret / "tls.crt"), str(secret / "tls.key"), pki.ca_file, pki.directory / "pw"
    )
    gateway = await gateway_process(config)
    cert_pem, key_pem, new = pki.server_cert()
    second = secret / "..2026_02"
    second.mkdir()
    (second / "tls.crt").write_bytes(cert_pem)
    (second / "tls.key").write_bytes(key_pem)
    (secret / "..data_tmp").symlink_to("..2026_02")
    os.replace(secret / "..data_tmp", secret / "..data")
    assert await served_within(gateway.port, pki.client_context(), new, 10.0) == new


async def test_a_certificate_file_that_fails_to_load_keeps_the_old_one(
    gateway_process: StartGateway, pki: Pki
) -> None:
    """A broken certificate file: the old certificate is still served, and one error line says
    so (not one per look at the file)."""
    config = gateway_config(pki.cert_file, pki.key_file, pki.ca_file, pki.directory / "pw")
    gateway = await gateway_process(config)
    old = der(pki.server_cert_pem())
    replace_file(pki.cert_file, b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    await gateway.wait_for_stderr("gateway.tls: not reloaded", within=WATCH_SECONDS * 3)
    await asyncio.sleep(WATCH_SECONDS + 0.5)  # at least one more look at the file
    assert await served_certificate(gateway.port, pki.client_context()) == old
    assert gateway.stderr().count("not reloaded") == 1


async def test_a_connection_open_across_a_reload_is_not_dropped(
    gateway_process: StartGateway, pki: Pki
) -> None:
    """A kept-alive HTTPS connection made before a certificate reload carries the next request."""
    config = gateway_config(pki.cert_file, pki.key_file, pki.ca_file, pki.directory / "pw")
    gateway = await gateway_process(config)
    context = pki.client_context(pki.client_cert(CERT_MERCHANT))
    reader, writer = await asyncio.open_connection(HOST, gateway.port, ssl=context)
    body = create_session(CERT_MERCHANT)
    raw = (
        b"POST /api/nvp/version/100 HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )

    async def exchange() -> int:
        writer.write(raw)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        length = re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE)
        assert length, head
        await reader.readexactly(int(length[1]))
        return int(head.split()[1])

    await exchange()
    cert_pem, key_pem, _ = pki.server_cert()
    replace_file(pki.key_file, key_pem)
    replace_file(pki.cert_file, cert_pem)
    gateway.proc.send_signal(signal.SIGHUP)
    await gateway.wait_for_stderr("gateway.tls: reloaded")
    status = await exchange()
    writer.close()
    assert status == 201


async def test_a_rotated_password_file_is_in_force_after_sighup(
    gateway_process: StartGateway, pki: Pki
) -> None:
    """A password file replaced on disk, then SIGHUP: the new password is the one accepted."""
    password_file = pki.directory / "pw"
    gateway = await gateway_process(
        gateway_config(pki.cert_file, pki.key_file, pki.ca_file, password_file)
    )
    replace_file(password_file, NEW_PASSWORD.encode() + b"\n")
    gateway.proc.send_signal(signal.SIGHUP)
    await gateway.wait_for_stderr(f"merchants.{PASSWORD_MERCHANT}.password_file: reloaded")
    body = create_session(
        PASSWORD_MERCHANT, apiUsername=f"merchant.{PASSWORD_MERCHANT}", apiPassword=NEW_PASSWORD
    )
    status, _ = await post(gateway.port, body, pki.client_context())
    assert status == 201


# --- end to end: the adapter authenticates to the gateway with its client certificate -------------


async def start_cert_gateway(gateway_process: StartGateway, pki: Pki) -> GatewayProcess:
    config = gateway_config(pki.cert_file, pki.key_file, pki.ca_file, pki.directory / "pw")
    return await gateway_process(config, "--log-level", "DEBUG")


async def test_certificate_authentication_end_to_end(
    gateway_process: StartGateway, pki: Pki, start_adapter: StartAdapter
) -> None:
    """A merchant with no password, the adapter's client certificate naming it: CreateSession
    succeeds against `nvp-adapter gateway` over HTTPS."""
    gateway = await start_cert_gateway(gateway_process, pki)
    stub = await start_adapter(
        make_settings(
            f"https://localhost:{gateway.port}",
            {CERT_MERCHANT: None},
            ca_file=pki.ca_file,
            client_cert_file=pki.client_cert(CERT_MERCHANT),
        )
    )
    response = await stub.CreateSession(pb.CreateSessionRequest(merchant=CERT_MERCHANT), timeout=5)
    assert (response.result, response.merchant) == (pb.RESULT_SUCCESS, CERT_MERCHANT)


async def test_certificate_authentication_sends_no_api_password(
    gateway_process: StartGateway, pki: Pki, start_adapter: StartAdapter
) -> None:
    """The request the gateway received by certificate carried no apiPassword (nor apiUsername):
    the gateway's DEBUG line lists the fields it got."""
    gateway = await start_cert_gateway(gateway_process, pki)
    stub = await start_adapter(
        make_settings(
            f"https://localhost:{gateway.port}",
            {CERT_MERCHANT: None},
            ca_file=pki.ca_file,
            client_cert_file=pki.client_cert(CERT_MERCHANT),
        )
    )
    await stub.CreateSession(pb.CreateSessionRequest(merchant=CERT_MERCHANT), timeout=5)
    await gateway.wait_for_stderr("POST /api/nvp/version/100: 201")
    line = next(x for x in gateway.stderr().splitlines() if "POST /api/nvp/version/100" in x)
    assert line.endswith(
        f'201; fields ["apiOperation", "merchant"]; client certificate CN {CERT_MERCHANT!r}'
    )


async def test_another_merchants_certificate_is_an_authentication_failure(
    gateway_process: StartGateway, pki: Pki, start_adapter: StartAdapter
) -> None:
    """The adapter's certificate names another merchant: the gateway's 401 becomes INTERNAL
    UPSTREAM_AUTHENTICATION_FAILED."""
    gateway = await start_cert_gateway(gateway_process, pki)
    stub = await start_adapter(
        make_settings(
            f"https://localhost:{gateway.port}",
            {CERT_MERCHANT: None},
            ca_file=pki.ca_file,
            client_cert_file=pki.client_cert(PASSWORD_MERCHANT),
        )
    )
    failure = await fail(stub, pb.CreateSessionRequest(merchant=CERT_MERCHANT))
    assert (failure.code, failure.info.reason) == (
        grpc.StatusCode.INTERNAL,
        "UPSTREAM_AUTHENTICATION_FAILED",
    )
