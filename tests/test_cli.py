"""End to end through the ``nvp-adapter`` process: serve, gateway, signals and start-up mistakes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import uvloop

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.cli import loop_factory
from adapter.config import DEMO_MERCHANT, DEMO_PASSWORD
from adapter.core import nvp
from adapter.core.errors import ConfigError

START_TIMEOUT = 20.0
_SCRIPT = Path(sys.executable).with_name("nvp-adapter")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "adapter"]


@dataclass
class Process:
    """A running ``nvp-adapter`` with the first line it printed to stdout."""

    proc: asyncio.subprocess.Process
    first_line: str

    @property
    def address(self) -> str:
        match = re.search(r"listening on (?:http://)?(\S+?)(?:/api\S*)? ", self.first_line)
        assert match, self.first_line
        return match[1]

    async def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str, str]:
        """Send ``signum``; return the exit code and the rest of stdout and stderr."""
        self.proc.send_signal(signum)
        out, err = await asyncio.wait_for(self.proc.communicate(), 15)
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode(), err.decode()


Start = Callable[..., Awaitable[Process]]


@pytest.fixture
async def nvp_adapter() -> AsyncIterator[Start]:
    """Start ``nvp-adapter ARGS``, wait for its first line; every process is killed afterwards."""
    started: list[asyncio.subprocess.Process] = []

    async def start(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Process:
        proc = await asyncio.create_subprocess_exec(
            *COMMAND,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        started.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        if not line:
            assert proc.stderr is not None
            pytest.fail(f"no start line; stderr: {(await proc.stderr.read()).decode()}")
        return Process(proc, line.decode())

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``nvp-adapter ARGS`` to its end, with ``env`` added to the environment."""
    proc = await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), START_TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def create_session(address: str, *, correlation_id: str = "") -> pb.CreateSessionResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        request = pb.CreateSessionRequest(merchant=DEMO_MERCHANT, correlation_id=correlation_id)
        return await stub.CreateSession(request, timeout=5)


async def test_serve_on_the_embedded_gateway(nvp_adapter: Start) -> None:
    """`serve` prints how to call it, creates sessions, and exits 0 on SIGTERM, no traceback."""
    server = await nvp_adapter("serve", "--listen", "127.0.0.1:0", "--log-level", "DEBUG")
    assert "upstream: embedded gateway" in server.first_line
    response = await create_session(server.address, correlation_id="cli & co")
    assert response.result == pb.RESULT_SUCCESS
    assert response.correlation_id == "cli & co"
    assert re.fullmatch(r"SESSION0002[0-9A-Z]{20}", response.session.id)
    code, out, err = await server.stop()
    assert code == 0
    assert "grpcurl" in out
    assert "mpgs.gateway.v1.SessionService/CreateSession" in out
    assert "Traceback" not in err
    assert DEMO_PASSWORD not in out + err


async def test_the_plain_banner_keeps_its_first_line(nvp_adapter: Start) -> None:
    """In the default text format the first stdout line is exactly what scripts parse:
    `nvp-adapter listening on HOST:PORT (upstream: embedded gateway)`."""
    server = await nvp_adapter("serve", "--listen", "127.0.0.1:0")
    assert re.fullmatch(
        r"nvp-adapter listening on 127\.0\.0\.1:\d+ \(upstream: embedded gateway\)\n",
        server.first_line,
    )
    assert (await server.stop())[0] == 0


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object; fails on the first line that is not one."""
    objects = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(value, dict), line
        objects.append(value)
    return objects


async def test_json_format_makes_every_serve_line_json(nvp_adapter: Start, tmp_path: Path) -> None:
    """`serve --log-format json`: every line on stdout and stderr is a JSON object, the start
    banner included, which carries the plain banner's first line and the address as a field;
    so is a warning from reading the settings (a password file others may read)."""
    password = tmp_path / "password"
    password.write_text(DEMO_PASSWORD)
    password.chmod(0o644)
    config = _config(tmp_path, f"[merchants.{DEMO_MERCHANT}]\npassword_file = '{password}'\n")
    server = await nvp_adapter(
        "serve",
        *("--config", config, "--listen", "127.0.0.1:0"),
        *("--log-format", "json", "--log-level", "DEBUG"),
    )
    [banner] = json_lines(server.first_line)
    address = banner["address"]
    assert banner["event"] == f"nvp-adapter listening on {address} (upstream: embedded gateway)"
    assert banner["level"] == "INFO"
    assert "mpgs.gateway.v1.SessionService/CreateSession" in banner["grpcurl"]
    assert (await create_session(address)).result == pb.RESULT_SUCCESS
    code, out, err = await server.stop()
    assert code == 0
    assert json_lines(out) == []
    events = [line["event"] for line in json_lines(err)]
    assert any("is readable by every user" in event for event in events)
    assert "rpc" in events
    assert "stopped" in events


async def test_json_format_makes_every_gateway_line_json(nvp_adapter: Start) -> None:
    """`gateway --log-format json`: the start line and every log line are JSON objects; the
    start line carries its text and the address as fields."""
    gateway = await nvp_adapter(
        "gateway", "--listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "DEBUG"
    )
    [banner] = json_lines(gateway.first_line)
    address = banner["address"]
    url = f"http://{address}/api/nvp/version/100"
    assert banner["event"] == f"embedded gateway listening on {url} (merchants: {DEMO_MERCHANT})"
    assert banner["url"] == url
    async with aiohttp.ClientSession() as session, session.post(url, data=nvp_post(GOOD)) as r:
        assert r.status == 201
    code, out, err = await gateway.stop()
    assert code == 0
    assert json_lines(out) == []
    assert any(line["event"].startswith("POST /api/nvp/") for line in json_lines(err))


@pytest.mark.parametrize("command", ["serve", "gateway"])
async def test_json_format_makes_a_start_failure_json(command: str) -> None:
    """A start-up mistake under `--log-format json` (or NVP_ADAPTER_LOG_FORMAT=json) is one
    JSON line at ERROR with the plain line's text, exit 2."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        flagged = await run(command, "--listen", address, "--log-format", "json")
        from_env = await run(command, "--listen", address, env={"NVP_ADAPTER_LOG_FORMAT": "json"})
    key = "server.listen" if command == "serve" else "gateway.listen"
    for code, out, err in (flagged, from_env):
        assert (code, out) == (2, "")
        [line] = json_lines(err)
        assert (line["level"], line["event"]) == (
            "ERROR",
            f"nvp-adapter: error: {key}: {address} is in use",
        )


async def test_sigint_also_stops_cleanly(nvp_adapter: Start) -> None:
    """Ctrl-C (SIGINT) stops the server like SIGTERM: exit 0, no traceback."""
    server = await nvp_adapter("serve", "--listen", "127.0.0.1:0")
    code, _, err = await server.stop(signal.SIGINT)
    assert code == 0
    assert "Traceback" not in err


@pytest.mark.parametrize(("choice", "loop"), [("asyncio", "asyncio"), ("uvloop", "uvloop.Loop")])
async def test_serve_runs_on_the_loop_asked_for(nvp_adapter: Start, choice: str, loop: str) -> None:
    """`serve --loop` runs on that event loop; calls, SIGHUP and SIGTERM work alike on both."""
    server = await nvp_adapter(
        "serve", "--listen", "127.0.0.1:0", "--loop", choice, "--log-level", "DEBUG"
    )
    assert (await create_session(server.address)).result == pb.RESULT_SUCCESS
    server.proc.send_signal(signal.SIGHUP)  # reloads; the process must live on
    assert (await create_session(server.address)).result == pb.RESULT_SUCCESS
    code, _, err = await server.stop()
    assert code == 0
    assert f"event loop: {loop}" in err
    assert "reloading secrets and certificates" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("choice", "loop"), [("auto", "asyncio"), ("uvloop", "uvloop.Loop")])
async def test_gateway_runs_on_the_loop_asked_for(
    nvp_adapter: Start, choice: str, loop: str
) -> None:
    """`gateway` runs on asyncio's loop unless --loop uvloop is given; it answers and exits 0
    on SIGTERM on both."""
    gateway = await nvp_adapter(
        "gateway", "--listen", "127.0.0.1:0", "--loop", choice, "--log-level", "DEBUG"
    )
    url = f"http://{gateway.address}/api/nvp/version/100"
    async with aiohttp.ClientSession() as session, session.post(url, data=nvp_post(GOOD)) as r:
        assert r.status == 201
    code, _, err = await gateway.stop()
    assert code == 0
    assert f"event loop: {loop}" in err
    assert "Traceback" not in err


def test_auto_is_uvloop_where_installed() -> None:
    """--loop auto (the default) and --loop uvloop make uvloop's loop; asyncio makes asyncio's."""
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None


def test_without_uvloop_auto_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where uvloop is not installed, auto is asyncio's loop and --loop uvloop a config error."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what an absent package imports as
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        loop_factory("uvloop")


def nvp_post(fields: dict[str, str]) -> bytes:
    return nvp.encode(fields)


GOOD = {
    "apiOperation": "CREATE_SESSION",
    "apiUsername": f"merchant.{DEMO_MERCHANT}",
    "apiPassword": DEMO_PASSWORD,
    "merchant": DEMO_MERCHANT,
}
RAW_REQUESTS = {
    "good": (nvp_post(GOOD), 201, {"result": "SUCCESS", "session.updateStatus": "NO_UPDATE"}),
    "bad password": (
        nvp_post({**GOOD, "apiPassword": "0" * 32}),
        401,
        {"result": "ERROR", "error.cause": "INVALID_REQUEST"},
    ),
    "missing merchant": (
        nvp_post({k: v for k, v in GOOD.items() if k != "merchant"}),
        400,
        {"error.field": "merchant", "error.validationType": "MISSING"},
    ),
    "invalid merchant": (
        nvp_post({**GOOD, "merchant": "bad merchant!"}),
        400,
        {"error.field": "merchant", "error.validationType": "INVALID"},
    ),
    "unknown operation": (
        nvp_post({**GOOD, "apiOperation": "FROBNICATE"}),
        400,
        {"error.field": "apiOperation", "error.validationType": "INVALID"},
    ),
    "unsupported field": (
        nvp_post({**GOOD, "order.amount": "1"}),
        400,
        {"error.field": "order.amount", "error.validationType": "UNSUPPORTED"},
    ),
    "garbage body": (b"\xff\xfe%zz", 400, {"result": "ERROR", "error.cause": "INVALID_REQUEST"}),
}


async def test_gateway_answers_raw_nvp(nvp_adapter: Start) -> None:
    """`gateway` serves the embedded gateway over HTTP and answers raw NVP the way MPGS does."""
    gateway = await nvp_adapter("gateway", "--listen", "127.0.0.1:0")
    url = f"http://{gateway.address}/api/nvp/version/100"
    async with aiohttp.ClientSession() as session:
        for name, (body, status, expected) in RAW_REQUESTS.items():
            async with session.post(
                url, data=body, headers={"Content-Type": nvp.CONTENT_TYPE}
            ) as r:
                fields = nvp.decode(await r.read())
                assert r.status == status, name
                assert r.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
            assert expected.items() <= fields.items(), (name, fields)
            assert DEMO_PASSWORD not in str(fields)
    code, _, err = await gateway.stop()
    assert code == 0
    assert "Traceback" not in err


async def test_serve_against_the_gateway_process(nvp_adapter: Start) -> None:
    """Two processes: `serve --upstream http://...` reaches `gateway` over real HTTP."""
    gateway = await nvp_adapter("gateway", "--listen", "127.0.0.1:0")
    server = await nvp_adapter(
        "serve", "--listen", "127.0.0.1:0", "--upstream", f"http://{gateway.address}"
    )
    assert f"upstream: http://{gateway.address}" in server.first_line
    response = await create_session(server.address)
    assert response.result == pb.RESULT_SUCCESS
    assert (await server.stop())[0] == 0
    assert (await gateway.stop())[0] == 0


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "adapter.toml"
    path.write_text(text)
    return str(path)


async def test_config_file_and_password_env(nvp_adapter: Start, tmp_path: Path) -> None:
    """A config file with password_env serves its own merchant on the embedded gateway."""
    config = _config(
        tmp_path,
        '[server]\nlisten = "127.0.0.1:0"\n[merchants.SHOP1]\npassword_env = "SHOP1_PASSWORD"\n',
    )
    server = await nvp_adapter("serve", "--config", config, env={"SHOP1_PASSWORD": "a" * 32})
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        response = await stub.CreateSession(pb.CreateSessionRequest(merchant="SHOP1"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateSession(pb.CreateSessionRequest(merchant=DEMO_MERCHANT), timeout=5)
    assert response.merchant == "SHOP1"
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await server.stop())[0] == 0


MISTAKES = {
    "unknown key": ("[server]\nlisten = '127.0.0.1:0'\nlisen = 'x'\n", "unknown key"),
    "missing password": ("[merchants.SHOP1]\n", "no password"),
    "plain http to a remote host": (
        "[upstream]\nurl = 'http://gateway.example'\n[merchants.SHOP1]\npassword = 'x'\n",
        "plain http is only for loopback hosts",
    ),
    "unreadable password file": (
        "[merchants.SHOP1]\npassword_file = '/nonexistent/pw'\n",
        "cannot read /nonexistent/pw",
    ),
}


@pytest.mark.parametrize(("text", "message"), MISTAKES.values(), ids=MISTAKES.keys())
async def test_config_mistakes_exit_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    """A bad config prints one clear line on stderr and exits non-zero, with no traceback."""
    code, out, err = await run("serve", "--config", _config(tmp_path, text))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("nvp-adapter: error: ")
    assert message in err


EMPTY_TOKEN_DIGEST = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("command", [["config", "check"], ["serve"]])
async def test_the_empty_tokens_digest_exits_with_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    """``token_sha256`` of the empty string would let any unusable header in: refused at start
    by ``config check`` and ``serve`` alike, one line naming the key, exit 2."""
    config = _config(
        tmp_path,
        "[server]\nlisten = '127.0.0.1:0'\n"
        f"[callers.checkout]\ntoken_sha256 = '{EMPTY_TOKEN_DIGEST}'\nmerchants = ['*']\n",
    )
    code, out, err = await run(*command, "--config", config)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "callers.checkout.token_sha256 is the digest of the empty token" in err


@pytest.mark.parametrize(
    ("args", "config"),
    [
        (["--listen", "0.0.0.0:0"], ""),
        ([], "[gateway]\nlisten = '0.0.0.0:0'\n"),
        (["--listen", "localhost.:0"], ""),
    ],
    ids=["flag", "file", "a name that is not localhost"],
)
async def test_gateway_refuses_plain_http_off_loopback(
    tmp_path: Path, args: list[str], config: str
) -> None:
    """``gateway`` follows ``serve``'s listening rule: plain HTTP on an address that is not
    loopback is refused, one line naming the key, exit 2, nothing served."""
    code, out, err = await run("gateway", "--config", _config(tmp_path, config), *args)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "is not a loopback address: set [gateway.tls], or gateway.insecure = true" in err


IN_USE = {
    "serve": (["serve", "--listen", "{address}"], {}, "server.listen"),
    "serve, workers": (  # never called: workers refuse the embedded gateway, not an http one
        ["serve", "--listen", "{address}", "--workers", "2", "--upstream", "http://127.0.0.1:9"],
        {},
        "server.listen",
    ),
    "serve, health": (
        ["serve", "--listen", "{loopback}:0"],
        {"NVP_ADAPTER_SERVER_HEALTH_LISTEN": "{address}"},
        "server.health_listen",
    ),
    "serve, metrics": (
        ["serve", "--listen", "{loopback}:0"],
        {"NVP_ADAPTER_METRICS_LISTEN": "{address}"},
        "metrics.listen",
    ),
    "gateway": (["gateway", "--listen", "{address}"], {}, "gateway.listen"),
}


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["IPv4", "IPv6"])
@pytest.mark.parametrize(("args", "env", "key"), IN_USE.values(), ids=IN_USE.keys())
async def test_port_in_use_exits_with_one_line(
    family: socket.AddressFamily, args: list[str], env: dict[str, str], key: str
) -> None:
    """A port that is taken is one line, `KEY: HOST:PORT is in use`, as the address is written
    (IPv6 in brackets), exit 2: for every listener of serve and for gateway."""
    loopback = "127.0.0.1" if family == socket.AF_INET else "[::1]"
    with socket.socket(family) as holder:
        holder.bind((loopback.strip("[]"), 0))
        holder.listen()
        address = f"{loopback}:{holder.getsockname()[1]}"
        filled = {"address": address, "loopback": loopback}
        code, out, err = await run(
            *[arg.format(**filled) for arg in args],
            env={name: value.format(**filled) for name, value in env.items()},
        )
    assert (code, out, err) == (2, "", f"nvp-adapter: error: {key}: {address} is in use\n")


NO_SUCH_HOST = "nosuch.invalid"
UNRESOLVED = {
    "serve": (
        ["serve", "--listen", "{host}:{port}", "--upstream", "embedded"],
        {},
        "server.listen",
    ),
    "serve, workers": (
        [
            *("serve", "--listen", "{host}:{port}", "--workers", "2"),
            *("--upstream", "http://127.0.0.1:9"),
        ],
        {},
        "server.listen",
    ),
    "serve, health": (
        ["serve", "--listen", "127.0.0.1:0"],
        {"NVP_ADAPTER_SERVER_HEALTH_LISTEN": "{host}:{port}"},
        "server.health_listen",
    ),
    "serve, metrics": (
        ["serve", "--listen", "127.0.0.1:0"],
        {"NVP_ADAPTER_METRICS_LISTEN": "{host}:{port}"},
        "metrics.listen",
    ),
    # gateway.insecure: so that the listening rule lets a name that is not loopback through.
    "gateway": (
        ["gateway", "--listen", "{host}:{port}", "--config", "{config}"],
        {},
        "gateway.listen",
    ),
}


@pytest.mark.parametrize("port", ["0", "50999"])
@pytest.mark.parametrize(("args", "env", "key"), UNRESOLVED.values(), ids=UNRESOLVED.keys())
async def test_a_listen_host_that_does_not_resolve_is_one_line(
    tmp_path: Path, port: str, args: list[str], env: dict[str, str], key: str
) -> None:
    """A host name that does not resolve is said as such, in one line, exit 2: no traceback, no
    line of grpc's own, for every listener and for port 0 too."""
    config = _config(tmp_path, "[gateway]\ninsecure = true\n")
    filled = {"host": NO_SUCH_HOST, "port": port, "config": config}
    code, out, err = await run(
        *[arg.format(**filled) for arg in args],
        env={
            "NVP_ADAPTER_SERVER_INSECURE": "true",
            **{name: value.format(**filled) for name, value in env.items()},
        },
    )
    assert (code, out, err.count("\n")) == (2, "", 1), err
    assert err.startswith(
        f"nvp-adapter: error: {key}: host name {NO_SUCH_HOST!r} does not resolve"
    ), err


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--config", "/nonexistent/adapter.toml"],
        ["serve", "--listen", "nowhere"],
        ["gateway", "--listen", "nowhere"],
        ["serve", "--upstream", "ftp://gateway.example"],
        ["serve", "--loop", "trio"],
    ],
)
async def test_bad_arguments_exit_with_one_line(args: list[str]) -> None:
    """An unreadable file or a malformed flag is one line and a non-zero exit."""
    code, _, err = await run(*args)
    assert code == 2
    assert err.count("\n") == 1
    assert "Traceback" not in err


async def test_python_dash_m_is_the_same_command() -> None:
    """`python -m adapter` is the console script."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapter", "--help", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert b"serve" in out
    assert b"gateway" in out
