"""The gateway through an HTTP CONNECT proxy: ``upstream.proxy``, or the proxy variables.

``ConnectProxy`` (``tests.tls_peers``) is a real proxy on loopback port 0, on asyncio streams:
it reads ``CONNECT host:port``, checks ``Proxy-Authorization`` when the test asks for
credentials, answers ``200 Connection established`` and splices bytes both ways, recording every
request it read. The gateway behind it is a real HTTPS server with a trustme certificate for
``localhost``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import pytest
import trustme
from google.rpc import error_details_pb2

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.config import Settings, load_settings
from adapter.core.errors import ConfigError
from adapter.upstream.transport import HttpTransport
from tests.conftest import MERCHANT, Failure, ScriptedUpstream, fail, make_settings
from tests.tls_peers import (
    ConnectProxy,
    HttpsGateway,
    Seen,
    adapter_channel,
    basic,
    https_gateway,
    server_context,
)

PROXY_USER = "proxy-user-5d81"
PROXY_PASSWORD = "pr0xy-p@ss:w/rd-77c2"
"""Distinctive, with characters the URL must percent-encode."""
PROXY_VARIABLES = (
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "no_proxy",
    "NO_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "REQUEST_METHOD",
)


@pytest.fixture(autouse=True)
def _no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment with no proxy variable, whatever the machine has."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def proxies() -> AsyncIterator[list[ConnectProxy]]:
    """Proxies the test starts with ``start_proxy``; all closed afterwards."""
    started: list[ConnectProxy] = []
    yield started
    for proxy in started:
        await proxy.aclose()


async def start_proxy(
    proxies: list[ConnectProxy], credentials: tuple[str, str] | None = None, **options: Any
) -> ConnectProxy:
    proxy = ConnectProxy(credentials, **options)
    await proxy.start()
    proxies.append(proxy)
    return proxy


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def gateway(ca: trustme.CA) -> AsyncIterator[HttpsGateway]:
    """The HTTPS gateway at ``https://localhost:PORT``, its certificate from ``ca``."""
    async with https_gateway(server_context(ca.issue_cert("localhost"))) as started:
        yield started


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


SettingsFor = Callable[[str | None], Settings]


@pytest.fixture
def settings_for(gateway: HttpsGateway, ca_file: str) -> SettingsFor:
    """Settings for the gateway with a given ``upstream.proxy`` (None: no key)."""

    def settings(proxy: str | None) -> Settings:
        return make_settings(gateway.url, ca_file=ca_file, proxy=proxy)

    return settings


async def create_session(settings: Settings) -> pb.CreateSessionResponse:
    async with adapter_channel(settings) as (stub, _):
        return await stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=5)


async def fail_with(settings: Settings) -> Failure:
    async with adapter_channel(settings) as (stub, _):
        return await fail(stub)


def authority(gateway: HttpsGateway) -> str:
    return gateway.url.removeprefix("https://")


# --- the proxy carries the call ----------------------------------------------------------------


async def test_the_configured_proxy_carries_the_call(
    proxies: list[ConnectProxy], gateway: HttpsGateway, settings_for: SettingsFor
) -> None:
    """With ``upstream.proxy`` set, the call succeeds through one CONNECT tunnel to the gateway's
    host and port, with no ``Proxy-Authorization`` when the URL holds no credentials."""
    proxy = await start_proxy(proxies)
    response = await create_session(settings_for(proxy.url))
    assert (response.result, proxy.seen) == (
        pb.RESULT_SUCCESS,
        [Seen("CONNECT", authority(gateway), None)],
    )


async def test_proxy_credentials_from_the_url_are_sent(
    proxies: list[ConnectProxy], gateway: HttpsGateway, settings_for: SettingsFor
) -> None:
    """The URL's user info, percent-decoded, reaches the proxy as ``Proxy-Authorization: Basic``
    on the CONNECT, and a proxy that demands it lets the call through."""
    proxy = await start_proxy(proxies, (PROXY_USER, PROXY_PASSWORD))
    url = proxy.url_with(PROXY_USER, PROXY_PASSWORD)
    response = await create_session(settings_for(url))
    assert (response.result, proxy.seen) == (
        pb.RESULT_SUCCESS,
        [Seen("CONNECT", authority(gateway), basic(PROXY_USER, PROXY_PASSWORD))],
    )


async def test_the_start_log_names_the_proxy_without_its_credentials(
    proxies: list[ConnectProxy], settings_for: SettingsFor, caplog: pytest.LogCaptureFixture
) -> None:
    """One INFO line at start says which proxy is used and whence, its user info as ``***``."""
    caplog.set_level(logging.INFO, logger="adapter.upstream.transport")
    proxy = await start_proxy(proxies, (PROXY_USER, PROXY_PASSWORD))
    url = proxy.url_with(PROXY_USER, PROXY_PASSWORD)
    await create_session(settings_for(url))
    lines = [r.getMessage() for r in caplog.records if r.name == "adapter.upstream.transport"]
    assert lines == [
        f"gateway requests go through the proxy http://***@127.0.0.1:{proxy.port} "
        "(from upstream.proxy)"
    ]


# --- a proxy that lets nothing through: never sent, retried --------------------------------------


async def test_wrong_proxy_credentials_are_unavailable_and_never_sent(
    proxies: list[ConnectProxy], gateway: HttpsGateway, settings_for: SettingsFor
) -> None:
    """A proxy answering CONNECT with 407 means the request never reached the gateway: each
    attempt is refused, the call is retried like any never-sent failure, and the caller gets
    UNAVAILABLE ``UPSTREAM_UNAVAILABLE`` with RetryInfo and the proxy's status in the message."""
    proxy = await start_proxy(proxies, (PROXY_USER, PROXY_PASSWORD))
    failure = await fail_with(settings_for(proxy.url_with(PROXY_USER, "wrong")))
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.info.reason == "UPSTREAM_UNAVAILABLE"
    assert dict(failure.info.metadata) == {"attempts": "3"}
    assert error_details_pb2.RetryInfo in failure.details
    assert "HTTP 407 Proxy Authentication Required" in failure.message
    assert (len(proxy.seen), proxy.tunnels, gateway.requests) == (3, 0, [])


async def test_a_proxy_that_refuses_connections_is_unavailable(
    proxies: list[ConnectProxy], gateway: HttpsGateway, settings_for: SettingsFor
) -> None:
    """A proxy port that refuses connections is a connection failure before anything was sent:
    UNAVAILABLE with RetryInfo after the retries, and the gateway saw nothing."""
    proxy = await start_proxy(proxies)
    await proxy.aclose()  # the port is closed now: connections are refused
    failure = await fail_with(settings_for(proxy.url))
    assert (failure.code, dict(failure.info.metadata), gateway.requests) == (
        grpc.StatusCode.UNAVAILABLE,
        {"attempts": "3"},
        [],
    )


async def test_a_proxy_that_hangs_up_on_connect_never_sent_the_request(
    proxies: list[ConnectProxy], settings_for: SettingsFor
) -> None:
    """A proxy that closes the connection instead of answering CONNECT left the request unsent:
    retried, RetryInfo, and no ``outcome = UNKNOWN`` (kept for a request that may have left)."""
    proxy = await start_proxy(proxies, hang_up=True)
    failure = await fail_with(settings_for(proxy.url))
    assert (dict(failure.info.metadata), error_details_pb2.RetryInfo in failure.details) == (
        {"attempts": "3"},
        True,
    )


# --- the environment --------------------------------------------------------------------------


async def test_https_proxy_from_the_environment(
    proxies: list[ConnectProxy], settings_for: SettingsFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no ``upstream.proxy``, ``HTTPS_PROXY`` (credentials included) carries the call."""
    proxy = await start_proxy(proxies, (PROXY_USER, PROXY_PASSWORD))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(PROXY_USER, PROXY_PASSWORD))
    response = await create_session(settings_for(None))
    assert (response.result, proxy.tunnels) == (pb.RESULT_SUCCESS, 1)


async def test_no_proxy_names_the_gateway(
    proxies: list[ConnectProxy], settings_for: SettingsFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway host listed in ``NO_PROXY`` is reached directly, past ``HTTPS_PROXY``."""
    proxy = await start_proxy(proxies)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "example.com, localhost")
    response = await create_session(settings_for(None))
    assert (response.result, proxy.seen) == (pb.RESULT_SUCCESS, [])


async def test_the_setting_wins_over_the_environment(
    proxies: list[ConnectProxy], settings_for: SettingsFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``upstream.proxy`` is used even when ``HTTPS_PROXY`` names another proxy and ``NO_PROXY``
    names every host: with the key set, the environment is not read."""
    configured, other = await start_proxy(proxies), await start_proxy(proxies)
    monkeypatch.setenv("HTTPS_PROXY", other.url)
    monkeypatch.setenv("NO_PROXY", "*")
    await create_session(settings_for(configured.url))
    assert (configured.tunnels, other.seen) == (1, [])


async def test_http_proxy_for_a_loopback_http_gateway(
    proxies: list[ConnectProxy],
    scripted_upstream: ScriptedUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain-http loopback gateway is reached through ``HTTP_PROXY``: the proxy is sent the
    request itself, with the gateway's absolute URL, and forwards it."""
    scripted_upstream.reply(
        "merchant=TESTMERCHANT&result=SUCCESS&session.id=SESSION0002AAAAAAAAAAAAAAAAAAAA"
        "&session.updateStatus=NO_UPDATE&session.version=0123456789"
    )
    proxy = await start_proxy(proxies)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    await create_session(make_settings(scripted_upstream.url))
    assert proxy.seen == [Seen("POST", f"{scripted_upstream.url}/api/nvp/version/100", None)]


UNUSABLE = {
    "https proxy": (
        f"https://{PROXY_USER}:{quote(PROXY_PASSWORD, safe='')}@proxy.internal:3128",
        "'https://***@proxy.internal:3128': expected an http:// proxy URL (HTTP CONNECT)",
    ),
    "socks proxy": (
        f"socks5://{PROXY_USER}:{quote(PROXY_PASSWORD, safe='')}@proxy.internal:1080",
        "'socks5://***@proxy.internal:1080': expected an http:// proxy URL (HTTP CONNECT)",
    ),
    "password not percent-encoded": (
        f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.internal:3128",
        "'http://***@proxy.internal:3128': not a valid URL",
    ),
}


@pytest.mark.parametrize(("value", "message"), UNUSABLE.values(), ids=UNUSABLE)
async def test_a_proxy_variable_the_adapter_cannot_use_is_a_config_error(
    value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy variable the adapter cannot use stops the start with one line that names the
    variable and shows the URL with all of its user info redacted, even where a password's
    unencoded '/' cuts the URL's authority short."""
    monkeypatch.setenv("HTTPS_PROXY", value)
    with pytest.raises(ConfigError) as caught:
        HttpTransport(make_settings("https://gateway.example").upstream)
    assert str(caught.value) == f"HTTPS_PROXY {message}"


# What no proxy URL may be, whether it is the setting or a variable: one rule, in adapter.config.
ONE_RULE = {
    "https proxy": "https://proxy.internal:3128",
    "password not percent-encoded": f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.internal:3128",
    "a path": "http://proxy.internal:3128/squid",
    "a query": "http://proxy.internal:3128?x=1",
    "a ':' in the user name": f"http://{quote('user:name', safe='')}:pw@proxy.internal:3128",
}


@pytest.mark.parametrize("url", ONE_RULE.values(), ids=ONE_RULE)
def test_the_proxy_setting_and_the_proxy_variable_meet_one_rule(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``upstream.proxy`` is refused at load with the very line the transport gives for the
    same URL in ``HTTPS_PROXY``, less the source's name: both are checked by one function."""
    path = tmp_path / "adapter.toml"
    path.write_text(f'[upstream]\nurl = "https://gateway.example"\nproxy = "{url}"\n')
    with pytest.raises(ConfigError) as from_file:
        load_settings(path, for_gateway=True)
    monkeypatch.setenv("HTTPS_PROXY", url)
    with pytest.raises(ConfigError) as from_variable:
        HttpTransport(make_settings("https://gateway.example").upstream)
    assert (from_file.value.key, from_variable.value.key) == ("upstream.proxy", "HTTPS_PROXY")
    setting = str(from_file.value).removeprefix(f"{path}: upstream.proxy ")
    assert setting == str(from_variable.value).removeprefix("HTTPS_PROXY ")


def test_the_transport_is_never_given_a_proxy_url_it_cannot_use() -> None:
    """A proxy URL the transport could not use cannot become settings at all, even in code:
    the rule that refuses it is the settings' own."""
    with pytest.raises(ConfigError, match="the proxy user name holds a ':'") as caught:
        make_settings("https://gateway.example", proxy=ONE_RULE["a ':' in the user name"])
    assert caught.value.key == "upstream.proxy"
    assert PROXY_PASSWORD not in str(caught.value)


# --- secrecy ----------------------------------------------------------------------------------


def secret_forms() -> Iterator[str]:
    """Every spelling in which the proxy credentials could leak."""
    for secret in (PROXY_USER, PROXY_PASSWORD):
        yield secret
        yield quote(secret, safe="")
    yield basic(PROXY_USER, PROXY_PASSWORD).removeprefix("Basic ")


async def failing_proxy(proxies: list[ConnectProxy], how: str) -> str:
    """A proxy URL holding the credentials, for a proxy that fails in the way ``how`` says."""
    if how == "answers 407":
        proxy = await start_proxy(proxies, (PROXY_USER, "another password"))
    elif how == "hangs up":
        proxy = await start_proxy(proxies, hang_up=True)
    else:
        proxy = await start_proxy(proxies)
        await proxy.aclose()
    return proxy.url_with(PROXY_USER, PROXY_PASSWORD)


FAILURES = {
    f"{how} ({source})": (how, source)
    for how in ("answers 407", "hangs up", "refuses connections")
    for source in ("upstream.proxy", "HTTPS_PROXY")
}


@pytest.mark.parametrize("case", FAILURES.values(), ids=FAILURES)
async def test_proxy_credentials_never_show_when_the_proxy_fails(
    case: tuple[str, str],
    proxies: list[ConnectProxy],
    settings_for: SettingsFor,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """However the proxy fails, and wherever its URL came from, the proxy's user name and
    password (raw, percent-encoded, or as the Basic token) appear in nothing the caller receives,
    in no log record at DEBUG, and not in the repr of the settings."""
    how, source = case
    caplog.set_level(logging.DEBUG)
    url = await failing_proxy(proxies, how)
    if source == "HTTPS_PROXY":
        monkeypatch.setenv("HTTPS_PROXY", url)
    settings = settings_for(url if source == "upstream.proxy" else None)
    failure = await fail_with(settings)
    seen = "\n".join(
        [failure.message, *map(str, failure.details.values()), caplog.text, repr(settings)]
    )
    assert [form for form in secret_forms() if form in seen] == []


async def test_proxy_credentials_never_show_when_the_proxy_works(
    proxies: list[ConnectProxy], settings_for: SettingsFor, caplog: pytest.LogCaptureFixture
) -> None:
    """A call through a proxy that accepts the credentials logs them nowhere, even at DEBUG."""
    caplog.set_level(logging.DEBUG)
    proxy = await start_proxy(proxies, (PROXY_USER, PROXY_PASSWORD))
    await create_session(settings_for(proxy.url_with(PROXY_USER, PROXY_PASSWORD)))
    assert [form for form in secret_forms() if form in caplog.text] == []
