"""Settings: frozen dataclasses, validated when built, loaded from TOML and command-line flags.

>>> settings = load_settings(None)          # no file: embedded gateway, demo merchant
>>> settings.server.listen, settings.upstream.url
('127.0.0.1:50051', 'embedded')

Each ``[table]`` of the file maps onto one dataclass below and its keys onto the dataclass's
fields, so the dataclasses are the one list of what the file may hold; an unknown key, a value of
the wrong type or one out of range is a ``ConfigError`` whose message is one line for the operator.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from adapter import nvp
from adapter.errors import ConfigError
from adapter.redaction import Secret

EMBEDDED = "embedded"
DEMO_MERCHANT = "TESTMERCHANT"
DEMO_PASSWORD = "5e55101d7e57c0ffee0ddba11ab1e000"  # noqa: S105 (a documented demo value)
"""The demo account's API password: documented in README, accepted only by the embedded gateway."""
MIB = 1024 * 1024
_T = TypeVar("_T")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


@dataclass(frozen=True)
class MerchantCredentials:
    """How the adapter authenticates as one merchant: an API password, or (None) its certificate."""

    merchant: str
    password: Secret | None

    def __post_init__(self) -> None:
        if not nvp.MERCHANT_ID.fullmatch(self.merchant):
            raise ConfigError(
                f"merchants.{self.merchant}: a merchant id is 1 to 12 characters of 0-9 a-z A-Z - _"
            )
        if self.password is not None and not self.password.reveal():
            raise ConfigError(f"merchants.{self.merchant}: the password is empty")


@dataclass(frozen=True)
class ServerSettings:
    """The ``[server]`` table: where and how the gRPC server listens."""

    listen: str = "127.0.0.1:50051"
    grace_seconds: float = 10.0
    """How long calls in flight may run on after SIGTERM before they are cancelled."""
    max_concurrent_rpcs: int = 1000
    """Calls handled at once; grpc refuses calls past it with RESOURCE_EXHAUSTED."""
    max_message_bytes: int = 4 * MIB

    def __post_init__(self) -> None:
        try:
            parse_host_port(self.listen)
        except ValueError as exc:
            raise ConfigError(f"server.listen {self.listen!r}: {exc}") from None
        _require(self.grace_seconds >= 0, "server.grace_seconds must be 0 or more")
        _require(self.max_concurrent_rpcs >= 1, "server.max_concurrent_rpcs must be at least 1")
        _require(self.max_message_bytes >= 1024, "server.max_message_bytes must be at least 1024")


@dataclass(frozen=True)
class UpstreamSettings:
    """The ``[upstream]`` table: which gateway, which API version, and the HTTP client's limits."""

    url: str = EMBEDDED
    api_version: int = 100
    connect_timeout_seconds: float = 5.0
    timeout_seconds: float = 30.0
    """Per attempt; always capped by the caller's deadline."""
    max_response_bytes: int = MIB
    pool_size: int = 100
    """Connections kept to the gateway at most (keep-alive pool)."""
    max_concurrent_calls: int = 64
    """Upstream calls in flight at most; a call waits for a slot up to ``queue_timeout_seconds``."""
    queue_timeout_seconds: float = 0.5
    """How long a call may wait for a slot before it is refused UNAVAILABLE."""
    retry_max_attempts: int = 3
    """Attempts per call, the first included, where a retry is safe; 1 turns retries off."""
    retry_initial_backoff_seconds: float = 0.1
    retry_max_backoff_seconds: float = 2.0
    breaker_failure_threshold: int = 5
    """Consecutive transport failures that open the circuit; 0 turns the breaker off."""
    breaker_cooldown_seconds: float = 10.0
    """How long an open circuit fails calls fast before one probe call may try the gateway."""
    retry_after_max_seconds: float = 30.0
    """The longest ``Retry-After`` the adapter waits for; longer advice is answered at once."""
    ca_file: str | None = None
    """A CA bundle to verify the gateway with instead of the system's."""
    client_cert_file: str | None = None
    """A PEM client certificate, for certificate authentication."""
    client_key_file: str | None = None

    def __post_init__(self) -> None:
        _require(1 <= self.api_version <= 1000, "upstream.api_version must be 1 to 1000")
        for name in ("connect_timeout_seconds", "timeout_seconds"):
            value = getattr(self, name)
            _require(0 < value <= 3600 and math.isfinite(value), f"upstream.{name} must be > 0")
        _require(self.max_response_bytes >= 1024, "upstream.max_response_bytes must be >= 1024")
        _require(self.pool_size >= 1, "upstream.pool_size must be at least 1")
        _require(self.max_concurrent_calls >= 1, "upstream.max_concurrent_calls must be >= 1")
        _require(self.retry_max_attempts >= 1, "upstream.retry_max_attempts must be at least 1")
        _require(self.breaker_failure_threshold >= 0, "upstream.breaker_failure_threshold >= 0")
        for name in (
            "queue_timeout_seconds",
            "retry_initial_backoff_seconds",
            "retry_max_backoff_seconds",
            "breaker_cooldown_seconds",
            "retry_after_max_seconds",
        ):
            value = getattr(self, name)
            _require(0 <= value <= 3600, f"upstream.{name} must be 0 to 3600")
        _require(
            self.client_key_file is None or self.client_cert_file is not None,
            "upstream.client_key_file needs upstream.client_cert_file",
        )
        if not self.is_embedded:
            _check_url(self.url)

    @property
    def is_embedded(self) -> bool:
        return self.url == EMBEDDED

    @property
    def is_loopback(self) -> bool:
        return not self.is_embedded and _is_loopback(urlsplit(self.url).hostname or "")

    def endpoint(self) -> str:
        """The operation URL: ``{url}/api/nvp/version/{N}``."""
        return f"{self.url.rstrip('/')}/api/nvp/version/{self.api_version}"


@dataclass(frozen=True)
class Settings:
    """Everything the adapter runs with."""

    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    merchants: Mapping[str, MerchantCredentials] = field(
        default_factory=lambda: types.MappingProxyType(
            {DEMO_MERCHANT: MerchantCredentials(DEMO_MERCHANT, Secret(DEMO_PASSWORD))}
        )
    )

    def __post_init__(self) -> None:
        _require(bool(self.merchants), "no merchants configured: add a [merchants.<ID>] table")
        if self.upstream.client_cert_file is None:
            for credentials in self.merchants.values():
                _require(
                    credentials.password is not None,
                    f"merchants.{credentials.merchant}: no password (set password, password_env or "
                    "password_file, or upstream.client_cert_file for certificate authentication)",
                )

    def describe(self) -> str:
        """One line about the running configuration, with no secret in it."""
        upstream = EMBEDDED if self.upstream.is_embedded else self.upstream.endpoint()
        return (
            f"upstream {upstream}, merchants {', '.join(sorted(self.merchants))}, "
            f"timeout {self.upstream.timeout_seconds:g}s"
        )


def parse_host_port(text: str) -> tuple[str, int]:
    """``"127.0.0.1:50051"`` or ``"[::1]:0"`` -> (host, port); ValueError if it is neither."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT with a port from 0 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 host goes in brackets: [::1]:50051")
    return host, int(port)


def load_settings(
    path: str | os.PathLike[str] | None,
    *,
    listen: str | None = None,
    upstream: str | None = None,
) -> Settings:
    """Settings from a TOML file (or defaults), with the command line's flags over it."""
    document = _read_toml(Path(path)) if path is not None else {}
    try:
        _refuse_unknown(document, {"server", "upstream", "merchants"}, "")
        server_table = dict(_table(document, "server"))
        upstream_table = dict(_table(document, "upstream"))
        if listen is not None:
            server_table["listen"] = listen
        if upstream is not None:
            upstream_table["url"] = upstream
        server = _build(ServerSettings, server_table, "server")
        upstream_settings = _build(UpstreamSettings, upstream_table, "upstream")
        if "merchants" in document:
            merchants = {
                merchant: _credentials(merchant, _table(document["merchants"], merchant))
                for merchant in _table(document, "merchants")
            }
            return Settings(server, upstream_settings, types.MappingProxyType(merchants))
        # The demo account exists only on the embedded gateway, in-process or on loopback.
        _require(
            upstream_settings.is_embedded or upstream_settings.is_loopback,
            "no [merchants] configured: a real gateway needs each merchant's credentials",
        )
        return Settings(server, upstream_settings)
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(f"{path}: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _table(document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = document.get(name, {})
    _require(isinstance(value, Mapping), f"{name} must be a table")
    return typing.cast(Mapping[str, Any], value)


def _refuse_unknown(table: Mapping[str, Any], known: set[str], prefix: str) -> None:
    for key in table:
        _require(key in known, f"unknown key '{prefix}{key}'")


_PASSWORD_SOURCES = ("password", "password_env", "password_file")


def _credentials(merchant: str, table: Mapping[str, Any]) -> MerchantCredentials:
    where = f"merchants.{merchant}"
    _refuse_unknown(table, set(_PASSWORD_SOURCES), f"{where}.")
    given = [key for key in _PASSWORD_SOURCES if key in table]
    _require(len(given) <= 1, f"{where}: set only one of {', '.join(_PASSWORD_SOURCES)}")
    for key in given:
        _require(isinstance(table[key], str), f"{where}.{key} must be a string")
    password: str | None = None
    if "password" in table:
        password = table["password"]
    elif "password_env" in table:
        password = os.environ.get(table["password_env"])
        _require(bool(password), f"{where}: environment variable {table['password_env']} is unset")
    elif "password_file" in table:
        try:
            password = Path(table["password_file"]).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise ConfigError(f"{where}: cannot read {table['password_file']}: {reason}") from None
    return MerchantCredentials(merchant, None if password is None else Secret(password))


def _build(cls: type[_T], table: Mapping[str, Any], where: str) -> _T:
    """A settings dataclass from a TOML table, each value checked against the field's type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    _refuse_unknown(table, fields, f"{where}.")
    for key, value in table.items():
        _require(_fits(value, hints[key]), f"{where}.{key}: expected {_type_name(hints[key])}")
    values = {k: float(v) if hints[k] is float else v for k, v in table.items()}
    return cls(**values)


def _fits(value: object, hint: Any) -> bool:
    if isinstance(value, bool):  # TOML booleans are not numbers here
        return hint is bool
    if hint is float:
        return isinstance(value, int | float) and math.isfinite(value)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_fits(value, arg) for arg in typing.get_args(hint) if arg is not type(None))
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        hint, str(hint)
    )


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        raise ConfigError(f"upstream.url {url!r}: {exc}") from None
    _require(
        parts.scheme in {"https", "http"} and bool(host),
        f"upstream.url {url!r}: expected 'embedded' or an https:// URL",
    )
    _require(
        not parts.query and not parts.fragment and not parts.username and not parts.password,
        f"upstream.url {url!r}: no query, fragment or user info; the path /api/nvp/... is added",
    )
    if parts.scheme == "http":
        _require(
            _is_loopback(host or ""),
            f"upstream.url {url!r}: plain http is only for loopback hosts; use https",
        )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
