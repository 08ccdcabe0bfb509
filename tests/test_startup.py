"""Start-up and signals as an operator meets them: bounds, flags, URLs, secret files, SIGHUP."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import grpc
import pytest

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.config import DEMO_MERCHANT, load_settings
from adapter.core.errors import ConfigError
from tests.test_cli import Start, nvp_adapter, run

__all__ = ["nvp_adapter"]  # the fixture, shared with test_cli


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "adapter.toml"
    path.write_text(text)
    return str(path)


OUT_OF_RANGE = {
    "max_message_bytes": (
        "[server]\nmax_message_bytes = 2147483648\n",
        "server.max_message_bytes must be 1024 to 67108864, not 2147483648",
    ),
    "max_concurrent_rpcs": (
        "[server]\nmax_concurrent_rpcs = 2147483648\n",
        "server.max_concurrent_rpcs must be 1 to 100000, not 2147483648",
    ),
    "max_connections": (
        "[server]\nmax_connections = 0\n",
        "server.max_connections must be 1 to 100000, not 0",
    ),
    "api_version": (
        "[upstream]\napi_version = 1001\n",
        "upstream.api_version must be 1 to 1000, not 1001",
    ),
    "pool_size": (
        "[upstream]\npool_size = 99999999999\n",
        "upstream.pool_size must be 1 to 10000, not 99999999999",
    ),
    "retry_max_attempts": (
        "[upstream]\nretry_max_attempts = 1000\n",
        "upstream.retry_max_attempts must be 1 to 10, not 1000",
    ),
    "breaker_failure_threshold": (
        "[upstream]\nbreaker_failure_threshold = -1\n",
        "upstream.breaker_failure_threshold must be 0 to 10000, not -1",
    ),
    "max_response_bytes": (
        "[upstream]\nmax_response_bytes = 9223372036854775807\n",
        "upstream.max_response_bytes must be 1024 to 67108864, not 9223372036854775807",
    ),
    "keepalive_seconds": (
        "[server]\nkeepalive_seconds = 0\n",
        "server.keepalive_seconds must be 1 to 86400, not 0",
    ),
    "timeout_seconds": (
        "[upstream]\ntimeout_seconds = 0.0001\n",
        "upstream.timeout_seconds must be 0.001 to 3600, not 0.0001",
    ),
    "gateway max_connections": (
        "[gateway]\nmax_connections = 2147483648\n",
        "gateway.max_connections must be 1 to 10000, not 2147483648",
    ),
}


@pytest.mark.parametrize(("text", "message"), OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
async def test_every_integer_setting_is_bounded(tmp_path: Path, text: str, message: str) -> None:
    """Out of range: one line, exit 2, naming the range and the value as the operator wrote them."""
    code, out, err = await run("serve", "--config", config(tmp_path, text))
    assert (code, out, err.count("\n")) == (2, "", 1)
    assert err.rstrip("\n").endswith(f": {message}")


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--log-level", "TRACE"],
        ["gateway", "--log-level", "verbose"],
        ["serve", "--no-such-flag"],
        ["frobnicate"],
        [],
    ],
)
async def test_usage_mistakes_are_one_line(args: list[str]) -> None:
    """argparse's own mistakes read like every other: one `nvp-adapter: error:` line, exit 2."""
    code, _, err = await run(*args)
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("nvp-adapter: error: ")


async def test_log_levels_are_case_insensitive(nvp_adapter: Start) -> None:
    """`--log-level debug` is DEBUG."""
    server = await nvp_adapter("serve", "--listen", "127.0.0.1:0", "--log-level", "debug")
    code, _, err = await server.stop()
    assert code == 0
    assert " DEBUG " in err


UPSTREAM_FORMS = (
    "expected 'embedded', an https:// URL, or an http:// URL to a loopback host "
    "(localhost, 127.0.0.0/8, ::1)"
)


@pytest.mark.parametrize("source", ["flag", "variable", "file"])
@pytest.mark.parametrize("url", ["ftp://x", "gateway.example", "http://"])
async def test_a_bad_upstream_url_names_every_accepted_form(
    tmp_path: Path, source: str, url: str
) -> None:
    """A URL that is none of the accepted forms is one line naming all of them, whether it came
    from --upstream, NVP_ADAPTER_UPSTREAM_URL or the file."""
    args, env, where = ["serve"], {}, ""
    if source == "flag":
        args += ["--upstream", url]
    elif source == "variable":
        env["NVP_ADAPTER_UPSTREAM_URL"] = url
        where = "NVP_ADAPTER_UPSTREAM_URL: "
    else:
        path = config(tmp_path, f"[upstream]\nurl = '{url}'\n")
        args += ["--config", path]
        where = f"{path}: "
    assert await run(*args, env=env) == (
        2,
        "",
        f"nvp-adapter: error: {where}upstream.url {url!r}: {UPSTREAM_FORMS}\n",
    )


async def test_user_info_in_the_upstream_url_is_refused_and_not_echoed(tmp_path: Path) -> None:
    """`https://user:pw@host` is refused, and the error shows the URL without its user info."""
    code, _, err = await run(
        "serve", "--upstream", "https://mpgs-user:hunter2-secret@gateway.example"
    )
    assert code == 2
    assert "user info" in err
    assert "***@gateway.example" in err
    assert "hunter2-secret" not in err
    assert "mpgs-user" not in err


def test_a_password_file_keeps_all_but_its_trailing_newline(tmp_path: Path) -> None:
    """Leading and inner spaces are part of the password; one trailing newline (or CRLF) is not."""
    for name, text, expected in [
        ("lf", "  pass word \n", "  pass word "),
        ("crlf", "\tpw\r\n", "\tpw"),
        ("none", " pw", " pw"),
        ("two", "pw\n\n", "pw\n"),
    ]:
        secret = tmp_path / name
        secret.write_text(text, newline="")
        secret.chmod(0o600)
        path = config(tmp_path, f"[merchants.SHOP1]\npassword_file = '{secret}'\n")
        password = load_settings(path).merchants["SHOP1"].password
        assert password is not None
        assert password.reveal() == expected, name


def test_a_password_file_others_can_read_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A world-readable secret file is accepted with one WARNING naming it, however often read."""
    secret = tmp_path / "shared-password"
    secret.write_text("pw\n")
    secret.chmod(0o644)
    path = config(tmp_path, f"[merchants.SHOP1]\npassword_file = '{secret}'\n")
    caplog.set_level(logging.WARNING, logger="adapter.config")
    load_settings(path)
    load_settings(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(secret) in warnings[0]


def test_a_private_password_file_does_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Mode 0600 is what a secret file should be: no warning."""
    secret = tmp_path / "private-password"
    secret.write_text("pw\n")
    secret.chmod(0o600)
    caplog.set_level(logging.WARNING, logger="adapter.config")
    load_settings(config(tmp_path, f"[merchants.SHOP1]\npassword_file = '{secret}'\n"))
    assert caplog.records == []


def test_an_empty_password_variable_is_called_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An environment variable that is set but empty is reported as empty, not as unset."""
    path = config(tmp_path, "[merchants.SHOP1]\npassword_env = 'SHOP1_PASSWORD'\n")
    monkeypatch.setenv("SHOP1_PASSWORD", "")
    with pytest.raises(ConfigError, match="SHOP1_PASSWORD is empty"):
        load_settings(path)
    monkeypatch.delenv("SHOP1_PASSWORD")
    with pytest.raises(ConfigError, match="SHOP1_PASSWORD is unset"):
        load_settings(path)


async def test_sighup_does_not_stop_serve(nvp_adapter: Start) -> None:
    """SIGHUP reloads; the adapter keeps answering, then stops with exit 0 on SIGTERM."""
    server = await nvp_adapter("serve", "--listen", "127.0.0.1:0")
    server.proc.send_signal(signal.SIGHUP)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        response = await stub.CreateSession(
            pb.CreateSessionRequest(merchant=DEMO_MERCHANT), timeout=5
        )
    code, _, err = await server.stop()
    assert response.result == pb.RESULT_SUCCESS
    assert code == 0
    assert "reloading secrets and certificates" in err


async def test_a_non_loopback_listen_without_tls_is_refused(tmp_path: Path) -> None:
    """`--listen 0.0.0.0:0` with no TLS and no `insecure = true` exits 2 in one line."""
    code, _, err = await run("serve", "--listen", "0.0.0.0:0")
    assert (code, err.count("\n")) == (2, 1)
    assert "not a loopback address" in err


def test_unix_listen_addresses_parse(tmp_path: Path) -> None:
    """`unix:PATH` and `unix:///ABS/PATH` are Unix sockets; `unix://relative` is refused."""
    path = config(tmp_path, "[server]\nlisten = 'unix:///run/nvp/grpc.sock'\n")
    assert load_settings(path).server.address.path == "/run/nvp/grpc.sock"
    path = config(tmp_path, "[server]\nlisten = 'unix:grpc.sock'\n")
    assert load_settings(path).server.address.path == "grpc.sock"
    path = config(tmp_path, "[server]\nlisten = 'unix://grpc.sock'\n")
    with pytest.raises(ConfigError, match="absolute path"):
        load_settings(path)


async def test_serving_the_embedded_gateway_warns_once(nvp_adapter: Start) -> None:
    """`serve` on the embedded gateway logs one WARNING line saying so."""
    server = await nvp_adapter("serve", "--listen", "127.0.0.1:0")
    code, _, err = await server.stop()
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    assert code == 0
    assert len(warnings) == 1
    assert "serving from the embedded gateway" in warnings[0]


async def test_serving_a_real_gateway_does_not_warn(nvp_adapter: Start) -> None:
    """With a gateway URL there is no embedded-gateway warning (nothing is called to start)."""
    server = await nvp_adapter(
        "serve", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1"
    )
    code, _, err = await server.stop()
    assert code == 0
    assert " WARNING " not in err


EMBEDDED_BY_DEFAULT = {
    "no file": [],
    "a file that leaves the url out": ["--config", "{folder}/adapter.toml"],
}


@pytest.mark.parametrize("args", EMBEDDED_BY_DEFAULT.values(), ids=EMBEDDED_BY_DEFAULT.keys())
async def test_the_default_embedded_gateway_is_refused_off_loopback(
    tmp_path: Path, args: list[str]
) -> None:
    """A non-loopback listen address (insecure said) with the upstream left to its default:
    exit 2, one line, before anything binds. (192.0.2.1 is a documentation address, on no host:
    were the rule gone, binding would fail with another message.)"""
    config(tmp_path, "[upstream]\napi_version = 100\n")
    code, out, err = await run(
        "serve",
        "--listen",
        "192.0.2.1:0",
        *[arg.format(folder=tmp_path) for arg in args],
        env={"NVP_ADAPTER_SERVER_INSECURE": "true"},
    )
    assert (code, out, err.count("\n")) == (2, "", 1)
    assert "the upstream is the embedded gateway only by default" in err


EMBEDDED_NAMED = {
    "in the file": ('[upstream]\nurl = "embedded"\n', {}),
    "in the environment": ("", {"NVP_ADAPTER_UPSTREAM_URL": "embedded"}),
}


@pytest.mark.parametrize(("text", "env"), EMBEDDED_NAMED.values(), ids=EMBEDDED_NAMED.keys())
async def test_the_named_embedded_gateway_is_allowed_off_loopback(
    tmp_path: Path, text: str, env: dict[str, str]
) -> None:
    """`url = "embedded"` said outright is accepted on a non-loopback address: `config check`
    validates as `serve` does, without binding."""
    path = config(tmp_path, '[server]\nlisten = "0.0.0.0:50051"\ninsecure = true\n' + text)
    code, _, err = await run("config", "check", "--config", path, env=env)
    assert (code, err) == (0, "")


def test_the_upstream_flag_names_the_embedded_gateway(tmp_path: Path) -> None:
    """`--upstream embedded` (given to `load_settings` as `serve` gives it) says it outright too."""
    path = config(tmp_path, '[server]\nlisten = "0.0.0.0:50051"\ninsecure = true\n')
    assert load_settings(path, upstream="embedded").upstream.is_embedded


ROOT = Path(__file__).resolve().parent.parent


async def test_the_python_hint_is_given_in_a_checkout(nvp_adapter: Start) -> None:
    """From the repository, the start text shows how to call with scripts/first_call.py."""
    server = await nvp_adapter("serve", "--listen", "127.0.0.1:0", cwd=ROOT)
    code, out, _ = await server.stop()
    assert code == 0
    assert "scripts/first_call.py --target" in out


async def test_no_python_hint_where_the_script_is_not(nvp_adapter: Start, tmp_path: Path) -> None:
    """Elsewhere (an image, an installed wheel) only the grpcurl hint, which needs no checkout."""
    server = await nvp_adapter("serve", "--listen", "127.0.0.1:0", cwd=tmp_path)
    code, out, _ = await server.stop()
    assert code == 0
    assert "first_call" not in out
    assert "grpcurl -plaintext" in server.first_line + out
