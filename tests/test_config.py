"""Settings: defaults, the TOML file, flags over the file, and one clear line for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.config import (
    DEMO_MERCHANT,
    DEMO_PASSWORD,
    CallerSettings,
    GatewaySettings,
    ServerSettings,
    TlsFiles,
    UpstreamSettings,
    load_settings,
    parse_host_port,
)
from adapter.core.errors import ConfigError
from adapter.core.redaction import Secret

PASSWORD = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "adapter.toml"
    path.write_text(text)
    return path


def test_defaults_run_on_the_embedded_gateway() -> None:
    """With no file the adapter listens on 127.0.0.1:50051 with the demo merchant, embedded."""
    settings = load_settings(None)
    assert settings.server.listen == "127.0.0.1:50051"
    assert settings.upstream.is_embedded
    assert settings.upstream.api_version == 100
    assert settings.upstream.connect_timeout_seconds == 5
    assert settings.upstream.timeout_seconds == 30
    assert settings.upstream.max_response_bytes == 1024 * 1024
    assert settings.upstream.idle_timeout_seconds == 4.0
    assert list(settings.merchants) == [DEMO_MERCHANT]
    password = settings.merchants[DEMO_MERCHANT].password
    assert password is not None
    assert password.reveal() == DEMO_PASSWORD


def test_the_contract_example_loads(tmp_path: Path) -> None:
    """The configuration file shown in the contract loads as written."""
    path = write(
        tmp_path,
        f"""
[server]
listen = "127.0.0.1:50051"

[upstream]
url = "https://test-gateway.mastercard.com"
api_version = 100
connect_timeout_seconds = 2
timeout_seconds = 12.5

[merchants.TESTMERCHANT]
password = "{PASSWORD}"
""",
    )
    settings = load_settings(path)
    assert settings.upstream.endpoint() == (
        "https://test-gateway.mastercard.com/api/nvp/version/100"
    )
    assert settings.upstream.connect_timeout_seconds == 2.0
    assert isinstance(settings.upstream.connect_timeout_seconds, float)
    assert settings.upstream.timeout_seconds == 12.5
    credentials = settings.merchants["TESTMERCHANT"]
    assert credentials.password == Secret(PASSWORD)


def test_flags_override_the_file(tmp_path: Path) -> None:
    """--listen and --upstream win over [server] listen and [upstream] url."""
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:1"\n[upstream]\nurl = "embedded"\n')
    settings = load_settings(path, listen="[::1]:0", upstream="http://127.0.0.1:8080")
    assert settings.server.listen == "[::1]:0"
    assert settings.upstream.endpoint() == "http://127.0.0.1:8080/api/nvp/version/100"


def test_password_from_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """password_env reads a variable; password_file reads a file, trailing newline dropped."""
    monkeypatch.setenv("NVP_TEST_PASSWORD", PASSWORD)
    secret = tmp_path / "secret"
    secret.write_text(PASSWORD + "\n")
    path = write(
        tmp_path,
        f"""
[merchants.FROMENV]
password_env = "NVP_TEST_PASSWORD"
[merchants.FROMFILE]
password_file = "{secret}"
""",
    )
    merchants = load_settings(path).merchants
    assert merchants["FROMENV"].password == Secret(PASSWORD)
    assert merchants["FROMFILE"].password == Secret(PASSWORD)


def test_certificate_authentication_needs_no_password(tmp_path: Path) -> None:
    """With a client certificate configured, a merchant may have no password at all."""
    path = write(
        tmp_path,
        """
[upstream]
url = "https://gateway.example"
client_cert_file = "/etc/nvp/client.pem"
[merchants.CERTONLY]
""",
    )
    assert load_settings(path).merchants["CERTONLY"].password is None


GUESSES = {
    "server key": (
        "[server]\nlisen = 'x'\n",
        "unknown key 'server.lisen' (did you mean server.listen?)",
    ),
    "table": ("[sever]\nlisten = 'x'\n", "unknown key 'sever' (did you mean server?)"),
    "merchant key": (
        "[merchants.M1]\npasword = 'x'\n",
        "unknown key 'merchants.M1.pasword' (did you mean merchants.M1.password?)",
    ),
    "tls key": (
        "[server.tls]\ncert = 'a'\nkey_file = 'b'\n",
        "unknown key 'server.tls.cert' (did you mean server.tls.cert_file?)",
    ),
    "nothing close": ("[upstream]\nzzz = 1\n", "unknown key 'upstream.zzz'"),
}


@pytest.mark.parametrize(("text", "message"), GUESSES.values(), ids=GUESSES.keys())
def test_an_unknown_key_comes_with_a_guess(tmp_path: Path, text: str, message: str) -> None:
    """An unknown key in the file is named with the closest known key, as an unknown variable is;
    with none close, the message ends at the key."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == f"{path}: {message}"


MISTAKES = {
    "unknown top-level table": ("[sever]\nlisten = 'x'\n", "unknown key 'sever'"),
    "unknown server key": ("[server]\nport = 1\n", "unknown key 'server.port'"),
    "unknown upstream key": ("[upstream]\nretries = 3\n", "unknown key 'upstream.retries'"),
    "unknown merchant key": (
        "[merchants.M1]\npasword = 'x'\n",
        "unknown key 'merchants.M1.pasword'",
    ),
    "wrong type": (
        "[upstream]\napi_version = '100'\n",
        "upstream.api_version: expected an integer",
    ),
    "boolean is no number": ("[upstream]\ntimeout_seconds = true\n", "expected a number"),
    "missing password": ("[merchants.M1]\n", "merchants.M1: no password"),
    "two passwords": (
        "[merchants.M1]\npassword = 'a'\npassword_env = 'B'\n",
        "set only one of",
    ),
    "unset environment variable": (
        "[merchants.M1]\npassword_env = 'NVP_ADAPTER_SURELY_UNSET'\n",
        "NVP_ADAPTER_SURELY_UNSET is unset",
    ),
    "unreadable password file": (
        "[merchants.M1]\npassword_file = '/nonexistent/secret'\n",
        "cannot read /nonexistent/secret",
    ),
    "bad merchant id": ("[merchants.'bad id']\npassword = 'x'\n", "a merchant id is 1 to 12"),
    "plain http to a remote host": (
        "[upstream]\nurl = 'http://gateway.example'\n",
        "plain http is only for loopback hosts",
    ),
    "plain http to a private address": (
        "[upstream]\nurl = 'http://10.0.0.1'\n[merchants.M1]\npassword = 'x'\n",
        "plain http is only for loopback hosts",
    ),
    "not a URL": (
        "[upstream]\nurl = 'gateway'\n",
        "expected 'embedded', an https:// URL, or an http:// URL to a loopback",
    ),
    "URL with a query": (
        "[upstream]\nurl = 'https://gw.example/?x=1'\n[merchants.M1]\npassword = 'x'\n",
        "no query",
    ),
    "real gateway, no merchants": (
        "[upstream]\nurl = 'https://gw.example'\n",
        "a real gateway needs each merchant's credentials",
    ),
    "bad listen address": ("[server]\nlisten = 'localhost'\n", "expected HOST:PORT"),
    "negative timeout": ("[upstream]\ntimeout_seconds = -1\n", "upstream.timeout_seconds"),
    "idle timeout under half a second": (
        "[upstream]\nidle_timeout_seconds = 0.4\n",
        "upstream.idle_timeout_seconds must be 0.5 to 300, not 0.4",
    ),
    "idle timeout over 300 s": (
        "[upstream]\nidle_timeout_seconds = 301\n",
        "upstream.idle_timeout_seconds must be 0.5 to 300, not 301",
    ),
    "not TOML": ("[server\n", "not valid TOML"),
}


@pytest.mark.parametrize(("text", "message"), MISTAKES.values(), ids=MISTAKES.keys())
def test_mistakes_are_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    """Each configuration mistake is a ConfigError naming the file and what is wrong."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


KEYS = {
    "a secret file": (
        "[merchants.M1]\npassword_file = '/nonexistent/secret'\n",
        "merchants.M1.password_file",
    ),
    "a TLS path": ("[server.tls]\ncert_file = ''\nkey_file = 'k'\n", "server.tls.cert_file"),
    "a missing TLS path": ("[gateway.tls]\nkey_file = 'k'\n", "gateway.tls.cert_file"),
    "an unknown TLS key": ("[server.tls]\ncert = 'a'\nkey_file = 'b'\n", "server.tls.cert"),
    "an unknown table": ("[sever]\n", "sever"),
    "a type": ("[upstream]\napi_version = '100'\n", "upstream.api_version"),
    "a range": ("[server]\nmax_connections = 0\n", "server.max_connections"),
    "a caller's token": (
        "[callers.c]\nmerchants = ['*']\ntoken_sha256 = 'x'\n",
        "callers.c.token_sha256",
    ),
    "a merchant with no password": ("[merchants.M1]\n", "merchants.M1"),
    "a rule across tables": (
        "[server]\nworkers = 2\n[metrics]\nlisten = '127.0.0.1:9464'\n",
        "metrics.listen",
    ),
    "workers on the embedded gateway": ("[server]\nworkers = 2\n", "server.workers"),
}


def test_workers_take_a_gateway_over_http_and_the_gateway_ignores_them(tmp_path: Path) -> None:
    """Only the embedded upstream refuses server.workers > 1: with a gateway's URL the workers
    share it; ``nvp-adapter gateway`` reading the same file is not concerned."""
    path = write(tmp_path, "[server]\nworkers = 2\n[upstream]\nurl = 'http://127.0.0.1:9'\n")
    assert load_settings(path).server.workers == 2
    embedded = write(tmp_path, "[server]\nworkers = 2\n")
    assert load_settings(embedded, for_gateway=True).server.workers == 2


@pytest.mark.parametrize(("text", "key"), KEYS.values(), ids=KEYS.keys())
def test_an_error_carries_its_key_as_data(tmp_path: Path, text: str, key: str) -> None:
    """``ConfigError.key`` is the setting at fault as the file spells it, however deep, so that
    nobody reads the message to learn it (a secret's message names its table, as it always has:
    ``merchants.M1: cannot read ...``)."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert caught.value.key == key


def test_a_rule_of_settings_built_in_code_carries_its_key() -> None:
    """A nested object built in code names its own key; read from a file, the table's."""
    with pytest.raises(ConfigError) as caught:
        TlsFiles("", "key.pem")
    assert (caught.value.key, str(caught.value)) == ("cert_file", "cert_file: expected a path")


EMPTY_TOKEN_DIGEST = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
CALLER = "[callers.checkout]\nmerchants = ['*']\n"
TOKEN_MISTAKES = {
    "the empty token's digest": (
        f"token_sha256 = '{EMPTY_TOKEN_DIGEST}'\n",
        "callers.checkout.token_sha256 is the digest of the empty token",
    ),
    "an empty token variable": ("token_env = 'NVP_ADAPTER_TEST_EMPTY'\n", "is empty"),
    "an empty token file": ("token_file = '{empty}'\n", "is empty"),
    "a token over 4096 characters": (
        "token_file = '{long}'\n",
        "callers.checkout.token_file: the token is over 4096 characters",
    ),
}


@pytest.mark.parametrize(("line", "message"), TOKEN_MISTAKES.values(), ids=TOKEN_MISTAKES.keys())
def test_a_caller_token_is_never_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, message: str
) -> None:
    """No source of a caller's token may give the empty token (whose digest any header that
    carries no token would match), nor one longer than a call may present."""
    monkeypatch.setenv("NVP_ADAPTER_TEST_EMPTY", "")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "long").write_text("t" * 4097)
    text = CALLER + line.format(empty=tmp_path / "empty", long=tmp_path / "long")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_empty_tokens_digest_is_refused_however_settings_are_built() -> None:
    """Settings built in code are held to the same rule as the file."""
    with pytest.raises(ConfigError, match="digest of the empty token"):
        CallerSettings("checkout", frozenset("*"), token_sha256=Secret(EMPTY_TOKEN_DIGEST))


def test_a_token_of_4096_characters_is_accepted(tmp_path: Path) -> None:
    """The bound is inclusive: 4096 characters is a token."""
    (tmp_path / "token").write_text("t" * 4096)
    settings = load_settings(write(tmp_path, CALLER + f"token_file = '{tmp_path / 'token'}'\n"))
    assert settings.callers["checkout"].token_sha256 is not None


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable file is a ConfigError, not an OSError with a traceback."""
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.toml")


def test_a_password_never_shows_in_an_error(tmp_path: Path) -> None:
    """No configuration error message repeats a password it was given."""
    path = write(tmp_path, f"[merchants.M1]\npassword = '{PASSWORD}'\npassword_env = 'X'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert PASSWORD not in str(caught.value)


def test_secrets_hide_in_reprs(tmp_path: Path) -> None:
    """Secret, the credentials and the whole Settings never show a password in repr or str."""
    path = write(tmp_path, f"[merchants.M1]\npassword = '{PASSWORD}'\n")
    settings = load_settings(path)
    for text in (repr(settings), str(settings), settings.describe(), f"{Secret(PASSWORD)}"):
        assert PASSWORD not in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:8080", ("::1", 8080)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),  # noqa: S104 (a parse test, nothing binds)
    ],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    """HOST:PORT parses, with IPv6 hosts in brackets."""
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["", "50051", ":50051", "host:", "host:x", "h:65536", "::1:80"])
def test_parse_host_port_refuses(text: str) -> None:
    """Anything else is a ValueError that says what is expected."""
    with pytest.raises(ValueError, match=r"HOST:PORT|brackets"):
        parse_host_port(text)


@pytest.mark.parametrize(
    "url", ["http://localhost:8080", "http://127.0.0.2", "http://[::1]:80", "https://gw.example"]
)
def test_allowed_upstream_urls(url: str) -> None:
    """Plain http is accepted for loopback hosts; https for any host."""
    assert UpstreamSettings(url=url).url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://LOCALHOST:8080",
        "http://127.255.255.254:8080",
        "http://[0:0:0:0:0:0:0:1]:8080",
    ],
)
def test_loopback_is_an_ip_literal_or_exactly_localhost(url: str) -> None:
    """Any address in 127.0.0.0/8, ``::1`` in any spelling, and the name ``localhost`` are
    loopback for plain http."""
    assert UpstreamSettings(url=url).is_loopback


NOT_LOOPBACK = ["localhost.", "ip6-localhost", "ip6-loopback", "localhost.localdomain", "127.1"]


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_no_other_name_passes_as_loopback_for_plain_http(host: str) -> None:
    """A host name other than ``localhost`` is whatever a resolver or search domain makes of
    it: plain http to it is refused like http to any remote host."""
    with pytest.raises(ConfigError, match="plain http is only for loopback hosts"):
        UpstreamSettings(url=f"http://{host}:8080")


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_no_other_name_passes_as_a_loopback_listen_address(host: str) -> None:
    """The listening rule reads loopback the same way: plaintext on such a name needs
    ``server.insecure``."""
    with pytest.raises(ConfigError, match="is not a loopback address"):
        ServerSettings(listen=f"{host}:50051")
    assert ServerSettings(listen=f"{host}:50051", insecure=True).insecure


@pytest.mark.parametrize(
    "listen",
    ["0.0.0.0:8080", "[::]:8080", "10.0.0.7:8080", "localhost.:8080"],
)
def test_the_gateway_listens_off_loopback_only_when_told(listen: str) -> None:
    """``[gateway]`` follows ``[server]``'s listening rule: plain HTTP off loopback needs
    ``gateway.insecure = true``, or ``[gateway.tls]`` makes it HTTPS (nothing binds here)."""
    with pytest.raises(ConfigError, match=r"is not a loopback address: set \[gateway\.tls\]"):
        GatewaySettings(listen=listen)
    assert GatewaySettings(listen=listen, insecure=True).insecure
    assert GatewaySettings(listen=listen, tls=TlsFiles("cert.pem", "key.pem")).tls is not None


def test_settings_are_frozen() -> None:
    """Settings cannot change once built."""
    settings = ServerSettings()
    with pytest.raises(AttributeError):
        settings.listen = "x"  # type: ignore[misc]
