"""Settings from the environment: one variable per scalar key, over the file, under the flags.

In-process through ``read_environment`` and ``load_settings`` (what every command calls), and
through the ``nvp-adapter`` process for what only the process shows.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import aiohttp
import pytest

from adapter.config import load_settings
from adapter.config.environment import VARIABLES, config_file, read_environment
from adapter.core.errors import ConfigError
from tests.test_cli import Start, nvp_adapter, run
from tests.test_listeners import short_tmp

__all__ = ["nvp_adapter", "short_tmp"]  # the fixtures, shared

# Every variable there is, with a value other than the default and the setting it must become.
EVERY_VARIABLE: dict[str, tuple[str, object]] = {
    "NVP_ADAPTER_SERVER_LISTEN": ("[::1]:6000", "[::1]:6000"),
    "NVP_ADAPTER_SERVER_HEALTH_LISTEN": ("127.0.0.1:6001", "127.0.0.1:6001"),
    "NVP_ADAPTER_SERVER_INSECURE": ("true", True),
    "NVP_ADAPTER_SERVER_GRACE_SECONDS": ("2.5", 2.5),
    "NVP_ADAPTER_SERVER_MAX_CONCURRENT_RPCS": ("10", 10),
    "NVP_ADAPTER_SERVER_MAX_MESSAGE_BYTES": ("65536", 65536),
    "NVP_ADAPTER_SERVER_KEEPALIVE_SECONDS": ("30", 30.0),
    "NVP_ADAPTER_SERVER_KEEPALIVE_TIMEOUT_SECONDS": ("5", 5.0),
    "NVP_ADAPTER_SERVER_MAX_CONNECTION_IDLE_SECONDS": ("60", 60.0),
    "NVP_ADAPTER_SERVER_MAX_CONNECTION_AGE_SECONDS": ("600", 600.0),
    "NVP_ADAPTER_SERVER_HANDSHAKE_TIMEOUT_SECONDS": ("3", 3.0),
    "NVP_ADAPTER_SERVER_MAX_CONNECTIONS": ("20", 20),
    "NVP_ADAPTER_SERVER_DRAIN_SECONDS": ("5", 5.0),
    "NVP_ADAPTER_SERVER_WORKERS": ("2", 2),
    "NVP_ADAPTER_UPSTREAM_URL": ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    "NVP_ADAPTER_UPSTREAM_API_VERSION": ("99", 99),
    "NVP_ADAPTER_UPSTREAM_CONNECT_TIMEOUT_SECONDS": ("1e0", 1.0),
    "NVP_ADAPTER_UPSTREAM_TIMEOUT_SECONDS": ("12.5", 12.5),
    "NVP_ADAPTER_UPSTREAM_MAX_RESPONSE_BYTES": ("2048", 2048),
    "NVP_ADAPTER_UPSTREAM_POOL_SIZE": ("7", 7),
    "NVP_ADAPTER_UPSTREAM_MAX_CONCURRENT_CALLS": ("8", 8),
    "NVP_ADAPTER_UPSTREAM_QUEUE_TIMEOUT_SECONDS": ("0", 0.0),
    "NVP_ADAPTER_UPSTREAM_RETRY_MAX_ATTEMPTS": ("1", 1),
    "NVP_ADAPTER_UPSTREAM_RETRY_INITIAL_BACKOFF_SECONDS": ("0.2", 0.2),
    "NVP_ADAPTER_UPSTREAM_RETRY_MAX_BACKOFF_SECONDS": ("4", 4.0),
    "NVP_ADAPTER_UPSTREAM_BREAKER_FAILURE_THRESHOLD": ("0", 0),
    "NVP_ADAPTER_UPSTREAM_BREAKER_COOLDOWN_SECONDS": ("+20", 20.0),
    "NVP_ADAPTER_UPSTREAM_RETRY_AFTER_MAX_SECONDS": ("60", 60.0),
    "NVP_ADAPTER_UPSTREAM_RECONCILE_RESERVE_SECONDS": ("2.5", 2.5),
    "NVP_ADAPTER_UPSTREAM_IDLE_TIMEOUT_SECONDS": ("0.5", 0.5),
    "NVP_ADAPTER_UPSTREAM_CA_FILE": ("/run/ca.pem", "/run/ca.pem"),
    "NVP_ADAPTER_UPSTREAM_CLIENT_CERT_FILE": ("/run/client.pem", "/run/client.pem"),
    "NVP_ADAPTER_UPSTREAM_CLIENT_KEY_FILE": ("/run/client.key", "/run/client.key"),
    "NVP_ADAPTER_UPSTREAM_PROXY": ("http://proxy.internal:3128", "http://proxy.internal:3128"),
    "NVP_ADAPTER_METRICS_LISTEN": ("127.0.0.1:9464", "127.0.0.1:9464"),
    "NVP_ADAPTER_LOG_LEVEL": ("debug", "DEBUG"),
    "NVP_ADAPTER_LOG_FORMAT": ("json", "json"),
}
# A client key alone is refused, as in the file: its row comes with a certificate.
COMPANIONS = {
    "NVP_ADAPTER_UPSTREAM_CLIENT_KEY_FILE": {"NVP_ADAPTER_UPSTREAM_CLIENT_CERT_FILE": "c"},
    # Workers refuse the embedded upstream.
    "NVP_ADAPTER_SERVER_WORKERS": {"NVP_ADAPTER_UPSTREAM_URL": "http://127.0.0.1:9"},
}


def write(folder: Path, text: str, name: str = "adapter.toml") -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def test_the_variables_are_every_scalar_key_of_the_four_tables() -> None:
    """One variable per scalar key of [server], [upstream], [metrics] and [log]; no other."""
    assert sorted(VARIABLES) == sorted(EVERY_VARIABLE)


@pytest.mark.parametrize(("name", "row"), EVERY_VARIABLE.items(), ids=EVERY_VARIABLE.keys())
def test_each_variable_sets_its_key(name: str, row: tuple[str, object]) -> None:
    """The variable's text, read by the key's type, becomes the setting."""
    text, expected = row
    environ = {name: text, **COMPANIONS.get(name, {})}
    settings = load_settings(None, overrides=read_environment(environ))
    table, key = VARIABLES[name].table, VARIABLES[name].key
    assert getattr(getattr(settings, table), key) == expected


def test_the_environment_is_over_the_file(tmp_path: Path) -> None:
    """A key the file and a variable both set takes the variable's value."""
    path = write(tmp_path, "[server]\ngrace_seconds = 5\n")
    overrides = read_environment({"NVP_ADAPTER_SERVER_GRACE_SECONDS": "7"})
    assert load_settings(path, overrides=overrides).server.grace_seconds == 7.0


def test_the_file_holds_where_no_variable_is_set(tmp_path: Path) -> None:
    """A variable for one key leaves the file's other keys as the file says."""
    path = write(tmp_path, "[server]\ngrace_seconds = 5\n")
    overrides = read_environment({"NVP_ADAPTER_SERVER_DRAIN_SECONDS": "3"})
    assert load_settings(path, overrides=overrides).server.grace_seconds == 5.0


def test_a_flag_is_over_the_environment() -> None:
    """`--listen` wins over NVP_ADAPTER_SERVER_LISTEN."""
    overrides = read_environment({"NVP_ADAPTER_SERVER_LISTEN": "127.0.0.1:7000"})
    settings = load_settings(None, listen="127.0.0.1:7001", overrides=overrides)
    assert settings.server.listen == "127.0.0.1:7001"


def test_a_flag_over_a_bad_variable_leaves_nothing_to_refuse() -> None:
    """A variable's value that a flag replaces is never used, so it is not checked either."""
    overrides = read_environment({"NVP_ADAPTER_SERVER_LISTEN": "10.0.0.8:50051"})
    settings = load_settings(None, listen="127.0.0.1:0", overrides=overrides)
    assert settings.server.listen == "127.0.0.1:0"


def test_an_out_of_range_value_names_its_variable(tmp_path: Path) -> None:
    """The range check is the file's; the message begins with the variable, not the file."""
    path = write(tmp_path, "[server]\ngrace_seconds = 5\n")
    overrides = read_environment({"NVP_ADAPTER_SERVER_MAX_MESSAGE_BYTES": "2147483648"})
    with pytest.raises(ConfigError) as caught:
        load_settings(path, overrides=overrides)
    assert str(caught.value) == (
        "NVP_ADAPTER_SERVER_MAX_MESSAGE_BYTES: server.max_message_bytes must be 1024 to "
        "67108864, not 2147483648"
    )


def test_a_rule_broken_by_a_variable_names_it() -> None:
    """A non-loopback listen address from the environment, refused by the file's rule."""
    overrides = read_environment({"NVP_ADAPTER_SERVER_LISTEN": "10.0.0.8:50051"})
    with pytest.raises(ConfigError, match=r"^NVP_ADAPTER_SERVER_LISTEN: server\.listen '10"):
        load_settings(None, overrides=overrides)


def test_a_variables_error_carries_its_setting_as_the_key() -> None:
    """The setting a variable stands for is the error's key, whether the variable's text or the
    setting's rule is at fault; an unknown variable, which stands for none, is its own key."""
    with pytest.raises(ConfigError) as text:
        read_environment({"NVP_ADAPTER_SERVER_GRACE_SECONDS": "ten"})
    overrides = read_environment({"NVP_ADAPTER_SERVER_LISTEN": "10.0.0.8:50051"})
    with pytest.raises(ConfigError) as rule:
        load_settings(None, overrides=overrides)
    with pytest.raises(ConfigError) as unknown:
        read_environment({"NVP_ADAPTER_SERVER_LISTN": "x"})
    keys = (text.value.key, rule.value.key, unknown.value.key)
    assert keys == ("server.grace_seconds", "server.listen", "NVP_ADAPTER_SERVER_LISTN")


def test_a_bad_value_in_the_file_still_names_the_file(tmp_path: Path) -> None:
    """With variables set for other keys, an error about a key of the file names the file."""
    path = write(tmp_path, "[server]\nmax_connections = 0\n")
    overrides = read_environment({"NVP_ADAPTER_SERVER_GRACE_SECONDS": "1"})
    with pytest.raises(ConfigError) as caught:
        load_settings(path, overrides=overrides)
    assert str(caught.value) == f"{path}: server.max_connections must be 1 to 100000, not 0"


BAD_TEXT = {
    "integer with a point": ("NVP_ADAPTER_SERVER_MAX_CONNECTIONS", "5.0", "an integer"),
    "integer in words": ("NVP_ADAPTER_UPSTREAM_POOL_SIZE", "ten", "an integer"),
    "number in words": ("NVP_ADAPTER_SERVER_GRACE_SECONDS", "ten", "a number"),
    "not a number": ("NVP_ADAPTER_SERVER_GRACE_SECONDS", "nan", "a number"),
    "infinity": ("NVP_ADAPTER_SERVER_DRAIN_SECONDS", "inf", "a number"),
    "spaces": ("NVP_ADAPTER_UPSTREAM_API_VERSION", " 100", "an integer"),
    "boolean as a number": ("NVP_ADAPTER_SERVER_INSECURE", "1", "true or false"),
    "boolean capitalised": ("NVP_ADAPTER_SERVER_INSECURE", "True", "true or false"),
}


@pytest.mark.parametrize(("name", "text", "expected"), BAD_TEXT.values(), ids=BAD_TEXT.keys())
def test_text_not_of_the_keys_type_is_refused(name: str, text: str, expected: str) -> None:
    """Read as TOML spells values: the variable, the key and the type it needs, in one line."""
    with pytest.raises(ConfigError) as caught:
        read_environment({name: text})
    assert str(caught.value) == f"{name}: {VARIABLES[name].setting}: expected {expected}"


def test_an_empty_variable_is_refused() -> None:
    """Set but empty is a mistake (a template's blank), said as such."""
    with pytest.raises(ConfigError, match=r"^NVP_ADAPTER_SERVER_LISTEN: set but empty"):
        read_environment({"NVP_ADAPTER_SERVER_LISTEN": ""})


def test_an_unknown_variable_is_refused_with_a_guess() -> None:
    """A misspelt name is refused, naming it and the nearest real one."""
    with pytest.raises(ConfigError) as caught:
        read_environment({"NVP_ADAPTER_SERVER_LISTN": "127.0.0.1:0"})
    message = str(caught.value)
    assert message.startswith("NVP_ADAPTER_SERVER_LISTN: unknown variable ")
    assert "(did you mean NVP_ADAPTER_SERVER_LISTEN?)" in message


def test_a_table_is_no_variable() -> None:
    """`[server.tls]` is a table: no variable sets it, and one named after it is refused."""
    with pytest.raises(ConfigError, match=r"^NVP_ADAPTER_SERVER_TLS_CERT_FILE: unknown variable"):
        read_environment({"NVP_ADAPTER_SERVER_TLS_CERT_FILE": "/run/tls/tls.crt"})


def test_a_lower_case_name_is_refused() -> None:
    """`nvp_adapter_server_listen` is not read (names are case-sensitive), so it is refused."""
    with pytest.raises(ConfigError, match=r"^nvp_adapter_server_listen: unknown variable"):
        read_environment({"nvp_adapter_server_listen": "127.0.0.1:0"})


def test_other_variables_are_not_the_adapters_business() -> None:
    """Variables without the prefix are left alone."""
    overrides = read_environment({"HOME": "/root", "NVP_ADAPTERS": "x", "PATH": "/bin"})
    assert (overrides.tables, overrides.sources) == ({}, {})


def test_the_config_variable_names_the_file() -> None:
    """NVP_ADAPTER_CONFIG when there is no --config."""
    assert config_file(None, {"NVP_ADAPTER_CONFIG": "/etc/nvp/a.toml"}) == "/etc/nvp/a.toml"


def test_the_config_flag_is_over_the_config_variable() -> None:
    """--config wins over NVP_ADAPTER_CONFIG."""
    assert config_file("b.toml", {"NVP_ADAPTER_CONFIG": "a.toml"}) == "b.toml"


def test_an_empty_config_variable_is_refused() -> None:
    """NVP_ADAPTER_CONFIG set but empty is a mistake, not "no file"."""
    with pytest.raises(ConfigError, match=r"^NVP_ADAPTER_CONFIG: set but empty"):
        config_file(None, {"NVP_ADAPTER_CONFIG": ""})


# Through the process.


async def test_config_check_layers_file_and_environment(tmp_path: Path) -> None:
    """NVP_ADAPTER_CONFIG names the file; a variable is over the file's key; the file's other
    keys and the defaults stay."""
    path = write(tmp_path, "[server]\ngrace_seconds = 5\ndrain_seconds = 1\n")
    code, out, _ = await run(
        "config",
        "check",
        env={"NVP_ADAPTER_CONFIG": path, "NVP_ADAPTER_SERVER_DRAIN_SECONDS": "4"},
    )
    server = tomllib.loads(out)["server"]
    assert code == 0
    assert (server["grace_seconds"], server["drain_seconds"], server["max_connections"]) == (
        5.0,
        4.0,
        1000,
    )


async def test_the_config_flag_wins_over_the_config_variable(tmp_path: Path) -> None:
    """`config check --config B` with NVP_ADAPTER_CONFIG=A reads B."""
    first = write(tmp_path, "[server]\ngrace_seconds = 1\n", "a.toml")
    second = write(tmp_path, "[server]\ngrace_seconds = 2\n", "b.toml")
    code, out, _ = await run(
        "config", "check", "--config", second, env={"NVP_ADAPTER_CONFIG": first}
    )
    assert code == 0
    assert tomllib.loads(out)["server"]["grace_seconds"] == 2.0


async def test_serve_listens_where_the_environment_says(
    nvp_adapter: Start, short_tmp: Path
) -> None:
    """NVP_ADAPTER_SERVER_LISTEN places `serve`'s listener."""
    socket_path = short_tmp / "grpc.sock"
    server = await nvp_adapter("serve", env={"NVP_ADAPTER_SERVER_LISTEN": f"unix:{socket_path}"})
    assert server.first_line.startswith(f"nvp-adapter listening on unix:{socket_path} ")
    assert (await server.stop())[0] == 0


async def test_serve_takes_the_flag_over_the_environment(nvp_adapter: Start) -> None:
    """`--listen` wins over NVP_ADAPTER_SERVER_LISTEN (which names a socket nowhere to be made)."""
    server = await nvp_adapter(
        "serve",
        "--listen",
        "127.0.0.1:0",
        env={"NVP_ADAPTER_SERVER_LISTEN": "unix:/nonexistent/grpc.sock"},
    )
    assert server.address.startswith("127.0.0.1:")
    assert (await server.stop())[0] == 0


async def test_gateway_reads_the_environment_too(nvp_adapter: Start) -> None:
    """NVP_ADAPTER_LOG_LEVEL and NVP_ADAPTER_LOG_FORMAT make `gateway` log each request at
    DEBUG, as a JSON object."""
    gateway = await nvp_adapter(
        "gateway",
        "--listen",
        "127.0.0.1:0",
        env={"NVP_ADAPTER_LOG_LEVEL": "debug", "NVP_ADAPTER_LOG_FORMAT": "json"},
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://{gateway.address}/api/nvp/version/100", data=b"") as response,
    ):
        await response.read()
    code, _, err = await gateway.stop()
    events = [json.loads(line) for line in err.splitlines()]
    assert code == 0
    assert [e["level"] for e in events if e["event"].startswith("POST /api/nvp/")] == ["DEBUG"]


async def test_a_bad_variable_stops_serve_with_one_line() -> None:
    """Out of range from the environment: exit 2 and one line naming the variable."""
    code, out, err = await run("serve", env={"NVP_ADAPTER_SERVER_MAX_MESSAGE_BYTES": "2147483648"})
    assert (code, out) == (2, "")
    assert err == (
        "nvp-adapter: error: NVP_ADAPTER_SERVER_MAX_MESSAGE_BYTES: server.max_message_bytes "
        "must be 1024 to 67108864, not 2147483648\n"
    )


@pytest.mark.parametrize("command", [["serve"], ["gateway"], ["config", "check"]])
async def test_an_unknown_variable_stops_every_command(command: list[str]) -> None:
    """A misspelt NVP_ADAPTER_ variable is one line naming it, exit 2, for every command."""
    code, _, err = await run(*command, env={"NVP_ADAPTER_LOG_LEVLE": "DEBUG"})
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("nvp-adapter: error: NVP_ADAPTER_LOG_LEVLE: unknown variable")
