"""The operator's commands, through the ``nvp-adapter`` process: --version, config check, health."""

from __future__ import annotations

import asyncio
import importlib.metadata
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest
import trustme
from grpc_health.v1 import health_pb2

from adapter.app import build_server
from tests.certs import client_pair, server_pair
from tests.conftest import make_settings
from tests.test_cli import Start, nvp_adapter, run
from tests.test_listeners import short_tmp

__all__ = ["nvp_adapter", "short_tmp"]  # the fixtures, shared


def write(folder: Path, text: str) -> str:
    path = folder / "adapter.toml"
    path.write_text(text)
    return str(path)


async def test_version_prints_the_installed_version() -> None:
    """`--version` is `nvp-adapter <version>` on stdout, exit 0."""
    version = importlib.metadata.version("nvp-adapter")
    assert await run("--version") == (0, f"nvp-adapter {version}\n", "")


# config check

DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {
        "listen": "127.0.0.1:50051",
        "insecure": False,
        "grace_seconds": 10.0,
        "max_concurrent_rpcs": 1000,
        "max_message_bytes": 4194304,
        "keepalive_seconds": 60.0,
        "keepalive_timeout_seconds": 20.0,
        "max_connection_idle_seconds": 300.0,
        "max_connection_age_seconds": 3600.0,
        "handshake_timeout_seconds": 10.0,
        "max_connections": 1000,
        "drain_seconds": 0.0,
        "workers": 1,
    },
    "upstream": {
        "url": "embedded",
        "api_version": 100,
        "connect_timeout_seconds": 5.0,
        "timeout_seconds": 30.0,
        "max_response_bytes": 1048576,
        "pool_size": 100,
        "max_concurrent_calls": 64,
        "queue_timeout_seconds": 0.5,
        "retry_max_attempts": 3,
        "retry_initial_backoff_seconds": 0.1,
        "retry_max_backoff_seconds": 2.0,
        "breaker_failure_threshold": 5,
        "breaker_cooldown_seconds": 10.0,
        "retry_after_max_seconds": 30.0,
        "reconcile_reserve_seconds": 5.0,
        "idle_timeout_seconds": 4.0,
    },
    "merchants": {"TESTMERCHANT": {"password": "***"}},
    "callers": {},
    "gateway": {
        "listen": "127.0.0.1:8080",
        "insecure": False,
        "max_connections": 256,
        "request_timeout_seconds": 10.0,
        "keepalive_timeout_seconds": 15.0,
    },
    "metrics": {},
    "log": {"level": "INFO", "format": "text"},
}


async def test_config_check_with_no_file_prints_every_default() -> None:
    """With no configuration: every table, every default, the demo password as "***", exit 0."""
    code, out, err = await run("config", "check")
    assert (code, err) == (0, "")
    assert tomllib.loads(out) == DEFAULTS


async def test_config_check_prints_what_a_file_sets(tmp_path: Path) -> None:
    """The file's values over the defaults, its TLS files read, its secrets "***"; the tables
    keyed by merchant and caller."""
    ca = trustme.CA()
    cert, key = server_pair(ca).write(tmp_path, "tls")
    client_cert, client_key = client_pair(ca, common_name="SHOP2").write(tmp_path, "client")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    path = write(
        tmp_path,
        f"""
[server]
listen = "127.0.0.1:0"
health_listen = "127.0.0.1:0"
[server.tls]
cert_file = "{cert}"
key_file = "{key}"
client_ca_file = "{ca_file}"
[upstream]
url = "https://gateway.example"
ca_file = "{ca_file}"
client_cert_file = "{client_cert}"
client_key_file = "{client_key}"
[merchants.SHOP1]
password = "0123456789abcdef"
[merchants.SHOP2]
[callers.checkout]
token_sha256 = "{"0" * 64}"
merchants = ["SHOP1"]
[callers.billing]
certificate_subject = "spiffe://cluster.local/ns/billing/sa/billing"
merchants = ["*"]
[metrics]
listen = "127.0.0.1:9464"
""",
    )
    code, out, err = await run("config", "check", "--config", path)
    document = tomllib.loads(out)
    assert (code, err) == (0, "")
    assert document["server"] == {
        **DEFAULTS["server"],
        "listen": "127.0.0.1:0",
        "health_listen": "127.0.0.1:0",
        "tls": {"cert_file": str(cert), "key_file": str(key), "client_ca_file": str(ca_file)},
    }
    assert document["upstream"] == {
        **DEFAULTS["upstream"],
        "url": "https://gateway.example",
        "ca_file": str(ca_file),
        "client_cert_file": str(client_cert),
        "client_key_file": str(client_key),
    }
    assert document["merchants"] == {"SHOP1": {"password": "***"}, "SHOP2": {}}
    assert document["callers"] == {
        "checkout": {"merchants": ["SHOP1"], "token_sha256": "***"},
        "billing": {
            "merchants": ["*"],
            "certificate_subject": "spiffe://cluster.local/ns/billing/sa/billing",
        },
    }
    assert document["metrics"] == {"listen": "127.0.0.1:9464"}


async def test_config_check_shows_the_proxy_without_its_user_info(tmp_path: Path) -> None:
    """`upstream.proxy` is printed with its user info as "***"."""
    path = write(tmp_path, '[upstream]\nproxy = "http://user:pw@proxy.internal:3128"\n')
    code, out, _ = await run("config", "check", "--config", path)
    assert code == 0
    assert tomllib.loads(out)["upstream"]["proxy"] == "http://***@proxy.internal:3128"


async def test_config_check_parses_the_listeners_certificate(tmp_path: Path) -> None:
    """A key that is not the certificate's is refused as `serve` refuses it: one line, exit 2."""
    ca = trustme.CA()
    cert, _ = server_pair(ca).write(tmp_path, "one")
    _, other_key = server_pair(ca).write(tmp_path, "two")
    path = write(tmp_path, f'[server.tls]\ncert_file = "{cert}"\nkey_file = "{other_key}"\n')
    code, out, err = await run("config", "check", "--config", path)
    assert (code, out, err.count("\n")) == (2, "", 1)
    assert err.startswith("nvp-adapter: error: server.tls: ")
    assert f"cannot load {cert} and {other_key} as a PEM certificate and its key: " in err


async def test_config_check_loads_the_gateways_ca_bundle(tmp_path: Path) -> None:
    """An `upstream.ca_file` that holds no certificate is refused: one line, exit 2."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    path = write(
        tmp_path,
        f'[upstream]\nurl = "http://127.0.0.1:8080"\nca_file = "{bundle}"\n',
    )
    code, out, err = await run("config", "check", "--config", path)
    assert (code, out, err.count("\n")) == (2, "", 1)
    assert err.startswith("nvp-adapter: error: cannot load the upstream TLS files")


async def test_config_check_of_a_bad_file_is_one_line(tmp_path: Path) -> None:
    """An unknown key: nothing on stdout, one line on stderr with a guess, exit 2."""
    path = write(tmp_path, "[server]\nlisen = '127.0.0.1:0'\n")
    code, out, err = await run("config", "check", "--config", path)
    assert (code, out) == (2, "")
    assert err == (
        f"nvp-adapter: error: {path}: unknown key 'server.lisen' (did you mean server.listen?)\n"
    )


async def test_config_alone_names_its_subcommand() -> None:
    """`nvp-adapter config` with no subcommand is one usage line naming `check`, exit 2."""
    assert await run("config") == (2, "", "nvp-adapter config: choose a subcommand: check\n")


CLASHES = {
    "health on the API's address": (
        '[server]\nlisten = "127.0.0.1:50051"\nhealth_listen = "127.0.0.1:50051"\n',
        "server.health_listen '127.0.0.1:50051': the same address as server.listen",
    ),
    "metrics on the API's address": (
        '[server]\nlisten = "127.0.0.1:9464"\n[metrics]\nlisten = "127.0.0.1:9464"\n',
        "metrics.listen '127.0.0.1:9464': the same address as server.listen",
    ),
    "metrics on the health address": (
        '[server]\nhealth_listen = "[::1]:9000"\n[metrics]\nlisten = "[0:0::1]:9000"\n',
        "metrics.listen '[0:0::1]:9000': the same address as server.health_listen",
    ),
    "health on the wildcard of the API's port": (
        '[server]\nlisten = "127.0.0.1:7000"\nhealth_listen = "0.0.0.0:7000"\n',
        "server.health_listen '0.0.0.0:7000': the same address as server.listen",
    ),
    "one Unix socket twice": (
        '[server]\nlisten = "unix:/tmp/a.sock"\nhealth_listen = "unix:/tmp/a.sock"\n',
        "server.health_listen 'unix:/tmp/a.sock': the same address as server.listen",
    ),
}


@pytest.mark.parametrize(("text", "message"), CLASHES.values(), ids=CLASHES.keys())
async def test_config_check_refuses_two_listeners_on_one_address(
    tmp_path: Path, text: str, message: str
) -> None:
    """Two of serve's listeners on one address: one line naming both keys, exit 2, before
    anything binds; serve refuses it alike."""
    path = write(tmp_path, text)
    expected = (2, "", f"nvp-adapter: error: {path}: {message}; give each listener its own\n")
    assert await run("config", "check", "--config", path) == expected


async def test_a_listener_clash_from_the_environment_names_the_variable() -> None:
    """A clash made by a variable is told with the variable's name, as its other errors are."""
    env = {"NVP_ADAPTER_METRICS_LISTEN": "127.0.0.1:50051"}
    assert await run("config", "check", env=env) == (
        2,
        "",
        "nvp-adapter: error: NVP_ADAPTER_METRICS_LISTEN: metrics.listen '127.0.0.1:50051': the "
        "same address as server.listen; give each listener its own\n",
    )


@pytest.mark.parametrize(
    "text",
    [
        '[server]\nlisten = "127.0.0.1:0"\nhealth_listen = "127.0.0.1:0"\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n',
        '[server]\nlisten = "127.0.0.1:7000"\nhealth_listen = "[::1]:7000"\n',
        '[server]\nlisten = "127.0.0.1:7000"\nhealth_listen = "127.0.0.2:7000"\n',
        '[server]\nlisten = "127.0.0.1:7000"\n[metrics]\nlisten = "127.0.0.1:7001"\n',
    ],
    ids=["port 0 thrice", "IPv4 and IPv6 loopback", "two loopback addresses", "two ports"],
)
async def test_config_check_accepts_listeners_that_do_not_clash(tmp_path: Path, text: str) -> None:
    """Port 0 is a fresh port each time, and different hosts or ports are different addresses."""
    code, _, err = await run("config", "check", "--config", write(tmp_path, text))
    assert (code, err) == (0, "")


async def test_config_check_refuses_the_otlp_protocol_serve_refuses() -> None:
    """An OTLP endpoint with ``http/json``, which stops ``serve`` at its start with exit 2,
    stops the check the same way: nothing on stdout, the one line serve prints."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
    }
    assert await run("config", "check", env=env) == (
        2,
        "",
        "nvp-adapter: error: OTEL_EXPORTER_OTLP_PROTOCOL 'http/json': expected one of "
        "http/protobuf, grpc (the Python OTLP exporters do not speak http/json)\n",
    )


# health


async def test_health_of_a_serving_adapter_is_0(nvp_adapter: Start) -> None:
    """SERVING: exit 0 and one line on stdout saying so."""
    server = await nvp_adapter("serve", "--listen", "127.0.0.1:0")
    result = await run("health", "--address", server.address)
    assert result == (0, f"{server.address}: SERVING\n", "")


async def test_health_of_a_closed_port_is_1() -> None:
    """Nothing listening: exit 1 and one line on stderr saying it is unreachable."""
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{bound.getsockname()[1]}"
        code, out, err = await run("health", "--address", address)
    assert (code, out, err.count("\n")) == (1, "", 1)
    assert err.startswith(f"nvp-adapter: {address}: unreachable (")


async def test_health_of_a_not_serving_adapter_is_1() -> None:
    """An adapter whose health says NOT_SERVING: exit 1, one line naming the status."""
    async with build_server(make_settings()) as server:
        await server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        result = await run("health", "--address", server.address)
    assert result == (1, "", f"nvp-adapter: {server.address}: NOT_SERVING\n")


async def test_health_of_a_silent_server_times_out() -> None:
    """A port that takes the connection and never answers: exit 1 after --timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await run("health", "--address", address, "--timeout", "0.5")
        elapsed = loop.time() - started
    assert result == (1, "", f"nvp-adapter: {address}: no answer within 0.5 s\n")
    assert elapsed < 10


async def test_health_checks_the_health_listener_from_the_config(
    nvp_adapter: Start, short_tmp: Path
) -> None:
    """With no --address: `server.health_listen` of the same file `serve` reads."""
    api, probes = short_tmp / "api.sock", short_tmp / "health.sock"
    path = write(short_tmp, f'[server]\nlisten = "unix:{api}"\nhealth_listen = "unix:{probes}"\n')
    server = await nvp_adapter("serve", "--config", path)
    result = await run("health", "--config", path)
    assert result == (0, f"unix:{probes}: SERVING\n", "")
    assert (await server.stop())[0] == 0


async def test_health_checks_the_listener_from_the_environment(
    nvp_adapter: Start, short_tmp: Path
) -> None:
    """With no --address and no health listener: `server.listen`, here from the environment
    that `serve` has too."""
    env = {"NVP_ADAPTER_SERVER_LISTEN": f"unix:{short_tmp / 'api.sock'}"}
    server = await nvp_adapter("serve", env=env)
    result = await run("health", env=env)
    assert result == (0, f"unix:{short_tmp / 'api.sock'}: SERVING\n", "")
    assert (await server.stop())[0] == 0


async def test_health_with_a_bad_config_is_1_not_2(tmp_path: Path) -> None:
    """A configuration health cannot read is one line and exit 1: Docker reserves 2."""
    code, out, err = await run("health", "--config", str(tmp_path / "absent.toml"))
    assert (code, out) == (1, "")
    assert err.startswith("nvp-adapter: error: cannot read config file ")
    assert err.count("\n") == 1


async def test_health_of_a_tls_listener_asks_for_a_health_listener(tmp_path: Path) -> None:
    """The check speaks plaintext: a TLS listener with no health_listen is one line, exit 1."""
    path = write(tmp_path, '[server.tls]\ncert_file = "tls.crt"\nkey_file = "tls.key"\n')
    code, out, err = await run("health", "--config", path)
    assert (code, out, err.count("\n")) == (1, "", 1)
    assert "set server.health_listen" in err


@pytest.mark.parametrize("text", ["0.05", "61", "soon", "nan"])
async def test_the_health_timeout_is_bounded(text: str) -> None:
    """--timeout takes 0.1 to 60 seconds; anything else is a usage mistake, one line."""
    code, out, err = await run("health", "--address", "127.0.0.1:1", "--timeout", text)
    assert (code, out) == (2, "")
    assert err.startswith("nvp-adapter: error: argument --timeout: ")
    assert err.count("\n") == 1
