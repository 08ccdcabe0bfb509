"""Settings: frozen dataclasses, validated when built, loaded from TOML and command-line flags.

>>> settings = load_settings(None)          # no file: embedded gateway, demo merchant
>>> settings.server.listen, settings.upstream.url
('127.0.0.1:50051', 'embedded')

Each ``[table]`` of the file maps onto one dataclass below and its keys onto its fields, so the
dataclasses are the one list of what the file may hold. cattrs builds them from the tables; an
unknown key, a missing one or a value of the wrong type comes back as its structured error (a path
and a kind), which ``_config_error`` alone turns into the one-line message. Every other rule is a
dataclass's ``__post_init__`` (settings built in code are held to it too) or, across tables, a
``_check_*`` below. Every ``ConfigError`` carries its key as data: ``error.key``.

Values come in layers, each over the one before: the dataclasses' defaults, the file, the
``Overrides`` from outside it (the environment, read by ``adapter.config.environment``), the flags.
Every value is checked the same way whichever layer it came from, and an error about a key set by
an override names the override's source (its variable) rather than the file.

Why cattrs, by measurement (README, Configuration, has the table): CPU time of import and one
load of this file's shape in a fresh process, median of 20, prototypes: msgspec 40 ms, cattrs 66,
pydantic 138, pydantic-settings 202 (this module by hand: 73). msgspec names the key only inside
its message text, to be parsed out again; pydantic has the richest errors at twice cattrs' cost;
cattrs gives the path as data and builds the dataclasses the code already uses. In the adapter
(``scripts/config_startup.py``) it costs 12 ms of CPU on the whole start (309 to 321 ms).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import ipaddress
import logging
import math
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit

import cattrs
from cattrs.errors import AttributeValidationNote, ForbiddenExtraKeysError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, make_mapping_structure_fn

from adapter.core import nvp
from adapter.core.errors import ConfigError
from adapter.core.redaction import Secret
from adapter.net.addresses import format_address

__all__ = [
    "DEMO_MERCHANT",
    "DEMO_PASSWORD",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_TOKEN_CHARS",
    "MAX_WORKERS",
    "MIB",
    "CallerSettings",
    "GatewaySettings",
    "ListenAddress",
    "LogSettings",
    "MerchantCredentials",
    "MetricsSettings",
    "Overrides",
    "ServerSettings",
    "Settings",
    "TlsFiles",
    "UpstreamSettings",
    "did_you_mean",
    "load_server_settings",
    "load_settings",
    "parse_host_port",
    "parse_listen",
    "proxy_url",
    "read_secret_file",
    "redact_url",
    "token_digest",
    "type_name",
]

EMBEDDED = "embedded"
DEMO_MERCHANT = "TESTMERCHANT"
DEMO_PASSWORD = "5e55101d7e57c0ffee0ddba11ab1e000"  # noqa: S105 (a documented demo value)
"""The demo account's API password: documented in README, accepted only by the embedded gateway."""
MIB = 1024 * 1024
ALL_MERCHANTS = "*"
"""In a caller's ``merchants`` list: every configured merchant."""
UNIX_PREFIX = "unix:"
_T = TypeVar("_T")
_N = TypeVar("_N", int, float)
_LOOPBACK_NAME = "localhost"
"""The one host name taken for loopback: others (``localhost.``, ``ip6-localhost``) are whatever
the resolver or a search domain makes of them."""
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
EMPTY_TOKEN_SHA256 = hashlib.sha256(b"").hexdigest()
"""The digest of the empty token: never a caller's, or any unusable header would match it."""
MAX_TOKEN_CHARS = 4096
"""A bearer token's length at most, in the file and in the call's metadata (grpc refuses
metadata past 8 KiB); a Kubernetes service account token is 1 to 2 KiB."""
_CALLER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
log = logging.getLogger("adapter.config")
_RANGE = "range"


def _within(low: float, high: float, default: _N) -> _N:
    """A numeric field's default, and the range ``_check_ranges`` holds its value to."""
    return field(default=default, metadata={_RANGE: (low, high)})


@dataclass(frozen=True)
class MerchantCredentials:
    """How the adapter authenticates as one merchant: an API password, or (None) its certificate."""

    merchant: str
    password: Secret | None
    password_file: str | None = field(default=None, compare=False)
    """Where the password was read from: rotation reads it again when it changes."""

    def __post_init__(self) -> None:
        where = f"merchants.{self.merchant}"
        _require(
            bool(nvp.MERCHANT_ID.fullmatch(self.merchant)),
            where,
            ": a merchant id is 1 to 12 characters of 0-9 a-z A-Z - _",
        )
        _require(
            self.password is None or bool(self.password.reveal()), where, ": the password is empty"
        )


@dataclass(frozen=True)
class TlsFiles:
    """A ``[server.tls]`` or ``[gateway.tls]`` table: PEM files, read again when they change.

    Its errors' keys are its own (``cert_file``); read from a file, they are the table's
    (``server.tls.cert_file``).
    """

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    """Set: every client must present a certificate this CA signed (mutual TLS)."""

    def __post_init__(self) -> None:
        for key in ("cert_file", "key_file", "client_ca_file"):
            _require(getattr(self, key) != "", key, ": expected a path")


@dataclass(frozen=True)
class ListenAddress:
    """Where a listener binds: a TCP ``host`` and ``port``, or a Unix socket ``path``."""

    host: str = ""
    port: int = 0
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    @property
    def is_loopback(self) -> bool:
        return self.is_unix or _is_loopback(self.host)

    def __str__(self) -> str:
        if self.path is not None:
            return UNIX_PREFIX + self.path
        return format_address(self.host, self.port)


def parse_listen(text: str) -> ListenAddress:
    """``HOST:PORT``, ``unix:PATH`` or ``unix:///ABS/PATH``; ValueError if it is none of these."""
    if text.startswith(UNIX_PREFIX):
        path = text.removeprefix(UNIX_PREFIX)
        if path.startswith("//"):
            path = path.removeprefix("//")
            if not path.startswith("/"):
                raise ValueError(
                    "unix:// needs an absolute path: unix:///run/nvp-adapter/grpc.sock"
                )
        if not path or "\0" in path or len(path.encode()) > _MAX_UNIX_PATH_BYTES:
            raise ValueError(f"a Unix socket path is 1 to {_MAX_UNIX_PATH_BYTES} bytes")
        return ListenAddress(path=path)
    host, port = parse_host_port(text)
    return ListenAddress(host, port)


_MAX_UNIX_PATH_BYTES = 107  # sun_path holds 108 bytes with the terminating NUL
MAX_WORKERS = 64
"""``server.workers`` at most: past a few per core, more processes only add memory."""


@dataclass(frozen=True)
class ServerSettings:
    """The ``[server]`` table: where and how the gRPC server listens."""

    listen: str = "127.0.0.1:50051"
    health_listen: str | None = None
    """A second, plaintext listener that serves ``grpc.health.v1`` alone (for probes)."""
    insecure: bool = False
    """Allow plaintext on an address that is not loopback: say it, or set ``[server.tls]``."""
    tls: TlsFiles | None = None
    grace_seconds: float = _within(0, 3600, 10.0)
    """How long calls in flight may run on after SIGTERM before they are cancelled."""
    max_concurrent_rpcs: int = _within(1, 100_000, 1000)
    """Calls handled at once; grpc refuses calls past it with RESOURCE_EXHAUSTED."""
    max_message_bytes: int = _within(1024, 64 * MIB, 4 * MIB)
    keepalive_seconds: float = _within(1, 86_400, 60.0)
    """Idle time after which the server pings a client's connection to see that it is alive."""
    keepalive_timeout_seconds: float = _within(1, 3600, 20.0)
    """How long a keepalive ping may go unanswered before the connection is closed."""
    max_connection_idle_seconds: float = _within(1, 86_400, 300.0)
    """A connection with no call for this long is closed (the client reconnects when needed)."""
    max_connection_age_seconds: float = _within(1, 86_400, 3600.0)
    """Connections are closed gracefully after this long, so none is held for ever."""
    handshake_timeout_seconds: float = _within(1, 300, 10.0)
    """A new connection must finish its TLS and HTTP/2 handshake within this."""
    max_connections: int = _within(1, 100_000, 1000)
    """Client connections open at once at most; grpc refuses more."""
    drain_seconds: float = _within(0, 3600, 0.0)
    """After SIGTERM: health is NOT_SERVING at once, yet calls are still taken for this long
    (set it to the readiness probe's period), before the grace period begins."""
    workers: int = _within(1, MAX_WORKERS, 1)
    """Processes serving ``listen`` together (SO_REUSEPORT), each with its own upstream pool;
    the limits above are per process."""

    def __post_init__(self) -> None:
        _check_ranges(self, "server")
        address = _listen_address("server.listen", self.listen)
        health = (
            None
            if self.health_listen is None
            else _listen_address("server.health_listen", self.health_listen)
        )
        for key, where in (("listen", address), ("health_listen", health)):
            _require(
                self.workers == 1 or where is None or not where.is_unix,
                f"server.{key}",
                f" {str(where)!r}: a Unix socket is served by one process; with "
                f"server.workers = {self.workers} listen on HOST:PORT",
            )
        _require(
            address.is_loopback or self.tls is not None or self.insecure,
            "server.listen",
            f" {self.listen!r} is not a loopback address: set [server.tls], or "
            "server.insecure = true to serve plaintext on it anyway",
        )

    @property
    def address(self) -> ListenAddress:
        return parse_listen(self.listen)

    @property
    def health_address(self) -> ListenAddress | None:
        return None if self.health_listen is None else parse_listen(self.health_listen)


@dataclass(frozen=True)
class UpstreamSettings:
    """The ``[upstream]`` table: which gateway, which API version, and the HTTP client's limits."""

    url: str = EMBEDDED
    api_version: int = _within(1, 1000, 100)
    connect_timeout_seconds: float = _within(0.001, 3600, 5.0)
    timeout_seconds: float = _within(0.001, 3600, 30.0)
    """Per attempt; always capped by the caller's deadline."""
    max_response_bytes: int = _within(1024, 64 * MIB, MIB)
    pool_size: int = _within(1, 10_000, 100)
    """Connections kept to the gateway at most (keep-alive pool)."""
    max_concurrent_calls: int = _within(1, 10_000, 64)
    """Upstream calls in flight at most; a call waits for a slot up to ``queue_timeout_seconds``."""
    queue_timeout_seconds: float = _within(0, 3600, 0.5)
    """How long a call may wait for a slot before it is refused UNAVAILABLE."""
    retry_max_attempts: int = _within(1, 10, 3)
    """Attempts per call, the first included, where a retry is safe; 1 turns retries off."""
    retry_initial_backoff_seconds: float = _within(0, 3600, 0.1)
    retry_max_backoff_seconds: float = _within(0, 3600, 2.0)
    breaker_failure_threshold: int = _within(0, 10_000, 5)
    """Consecutive transport failures that open the circuit; 0 turns the breaker off."""
    breaker_cooldown_seconds: float = _within(0, 3600, 10.0)
    """How long an open circuit fails calls fast before one probe call may try the gateway."""
    retry_after_max_seconds: float = _within(0, 3600, 30.0)
    """The longest ``Retry-After`` the adapter waits for; longer advice is answered at once."""
    reconcile_reserve_seconds: float = _within(0, 60, 5.0)
    """The part of a caller's deadline a payment keeps back to find out, after its answer was
    lost, what the gateway did (at most half the time left); 0 keeps nothing back."""
    idle_timeout_seconds: float = _within(0.5, 300, 4.0)
    """A pooled connection idle this long is not reused but closed: below the 5 s keep-alive
    of the usual load balancer, so the adapter never writes on one the gateway is closing."""
    ca_file: str | None = None
    """A CA bundle to verify the gateway with instead of the system's."""
    client_cert_file: str | None = None
    """A PEM client certificate, for certificate authentication."""
    client_key_file: str | None = None
    proxy: str | None = field(default=None, repr=False)
    """An HTTP CONNECT proxy URL; it may hold credentials, so it never shows in a repr."""

    def __post_init__(self) -> None:
        _check_ranges(self, "upstream")
        if self.proxy is not None:
            proxy_url(self.proxy)
        _require(
            self.client_key_file is None or self.client_cert_file is not None,
            "upstream.client_key_file",
            " needs upstream.client_cert_file",
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
class GatewaySettings:
    """The ``[gateway]`` table: ``nvp-adapter gateway``, the embedded gateway over HTTP(S)."""

    listen: str = "127.0.0.1:8080"
    insecure: bool = False
    """Allow plain HTTP on an address that is not loopback: say it, or set ``[gateway.tls]``."""
    tls: TlsFiles | None = None
    """Serve HTTPS; with ``client_ca_file``, a verified client certificate whose subject CN is
    the merchant id stands in for ``apiPassword`` (certificate authentication)."""
    max_connections: int = _within(1, 10_000, 256)
    """Open connections at most; past it a new connection is closed at once."""
    request_timeout_seconds: float = _within(0.1, 3600, 10.0)
    """A request's headers and body must arrive within this, or the connection is closed."""
    keepalive_timeout_seconds: float = _within(0.1, 3600, 15.0)
    """An idle keep-alive connection is closed after this."""

    def __post_init__(self) -> None:
        _check_ranges(self, "gateway")
        address = _listen_address("gateway.listen", self.listen)
        _require(not address.is_unix, "gateway.listen", ": expected HOST:PORT")
        _require(
            address.is_loopback or self.tls is not None or self.insecure,
            "gateway.listen",
            f" {self.listen!r} is not a loopback address: set [gateway.tls], or "
            "gateway.insecure = true to serve plain HTTP on it anyway",
        )


@dataclass(frozen=True)
class MetricsSettings:
    """The ``[metrics]`` table: Prometheus text at ``/metrics``; no listener when ``listen`` is
    absent."""

    listen: str | None = None

    def __post_init__(self) -> None:
        if self.listen is not None:
            address = _listen_address("metrics.listen", self.listen)
            _require(not address.is_unix, "metrics.listen", ": expected HOST:PORT")

    @property
    def address(self) -> ListenAddress | None:
        return None if self.listen is None else parse_listen(self.listen)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class LogSettings:
    """The ``[log]`` table: the level (any case) and the format of every log line."""

    level: str = "INFO"
    format: str = "text"

    def __post_init__(self) -> None:
        _require(
            self.level.upper() in LOG_LEVELS,
            "log.level",
            f" {self.level!r}: use one of {', '.join(LOG_LEVELS)} (any case)",
        )
        object.__setattr__(self, "level", self.level.upper())
        _require(
            self.format in LOG_FORMATS,
            "log.format",
            f" {self.format!r}: use one of {', '.join(LOG_FORMATS)}",
        )


@dataclass(frozen=True)
class CallerSettings:
    """A ``[callers.NAME]`` table: one caller, how it proves who it is, which merchants it may use.

    Exactly one of a bearer token (held only as its SHA-256 digest) or a certificate subject.
    """

    name: str
    merchants: frozenset[str]
    token_sha256: Secret | None = None
    """The hex SHA-256 digest of the caller's bearer token."""
    token_file: str | None = field(default=None, compare=False)
    """Where the token was read from: rotation reads it again when it changes."""
    certificate_subject: str | None = None
    """A URI SAN, DNS SAN or subject CN of the caller's verified client certificate."""

    def __post_init__(self) -> None:
        where = f"callers.{self.name}"
        _require(
            bool(_CALLER_NAME.fullmatch(self.name)),
            where,
            ": a caller name is 1 to 64 characters of A-Z a-z 0-9 _ . -",
        )
        _require(
            (self.token_sha256 is None) != (self.certificate_subject is None),
            where,
            ": set exactly one of token_env, token_file, token_sha256 or certificate_subject",
        )
        _require(bool(self.merchants), f"{where}.merchants", ': list at least one merchant, or "*"')
        _require(
            self.token_sha256 is None or self.token_sha256.reveal() != EMPTY_TOKEN_SHA256,
            f"{where}.token_sha256",
            " is the digest of the empty token; a token is never empty",
        )
        if self.certificate_subject is not None:
            _require(
                0 < len(self.certificate_subject) <= 1024,
                f"{where}.certificate_subject",
                ": 1 to 1024 characters",
            )

    def may_use(self, merchant: str) -> bool:
        """Whether this caller may spend ``merchant``'s credentials."""
        return ALL_MERCHANTS in self.merchants or merchant in self.merchants


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
    callers: Mapping[str, CallerSettings] = field(
        default_factory=lambda: types.MappingProxyType({})
    )
    """Empty: no caller authentication (the sidecar case)."""
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        if not self.merchants:
            raise ConfigError("no merchants configured: add a [merchants.<ID>] table", "merchants")
        for caller in self.callers.values():
            where = f"callers.{caller.name}"
            for merchant in caller.merchants - {ALL_MERCHANTS}:
                _require(
                    merchant in self.merchants,
                    f"{where}.merchants",
                    f": {merchant!r} is not a configured merchant",
                )
            _require(
                caller.certificate_subject is None
                or (self.server.tls is not None and self.server.tls.client_ca_file is not None),
                f"{where}.certificate_subject",
                " needs [server.tls] client_ca_file "
                "(mutual TLS), or no client certificate is ever asked for",
            )
        # Each worker would count only its own calls, and the scraper would see one at random.
        _require(
            self.metrics.listen is None or self.server.workers == 1,
            "metrics.listen",
            f": the counters are per process, so one listener cannot serve "
            f"server.workers = {self.server.workers}; run one worker, or leave metrics off",
        )

    def describe(self) -> str:
        """One line about the running configuration, with no secret in it."""
        upstream = EMBEDDED if self.upstream.is_embedded else self.upstream.endpoint()
        return (
            f"upstream {upstream}, merchants {', '.join(sorted(self.merchants))}, "
            f"timeout {self.upstream.timeout_seconds:g}s"
        )


@dataclass(frozen=True)
class Overrides:
    """Settings from outside the file, over its values and under the flags'.

    ``tables["server"]["listen"]`` is a value, already of its field's type; ``sources`` names
    where each came from (``{"server.listen": "NVP_ADAPTER_SERVER_LISTEN"}``), for the error it
    may cause.
    """

    tables: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)


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


# --- the file's shape ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _MerchantTable:
    """A ``[merchants.ID]`` table as written: where the password is, not yet read."""

    password: str | None = field(default=None, repr=False)
    password_env: str | None = None
    password_file: str | None = None


@dataclass(frozen=True)
class _CallerTable:
    """A ``[callers.NAME]`` table as written: where the token is, not yet read."""

    merchants: frozenset[str]
    token_env: str | None = None
    token_file: str | None = None
    token_sha256: str | None = None
    certificate_subject: str | None = None


@dataclass(frozen=True)
class _Document:
    """A whole file, in the order its tables are checked; ``merchants`` None: no such table."""

    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    callers: dict[str, _CallerTable] = field(default_factory=dict)
    merchants: dict[str, _MerchantTable] | None = None


class _Mismatch(TypeError):
    """A value of the wrong type; the message says what its key holds (``an integer``)."""


_converter = cattrs.Converter(forbid_extra_keys=True)


def _scalar(kind: Any, fits: Callable[[Any], bool]) -> None:
    def structure(value: object, _: object) -> object:
        if not fits(value):
            raise _Mismatch(type_name(kind))
        return kind(value)

    if isinstance(kind, type):  # over cattrs' own hooks for the class
        _converter.register_structure_hook(kind, structure)
    else:
        _converter.register_structure_hook_func(lambda hint: hint == kind, structure)


# Exact types: TOML's booleans are no numbers here, and its nan and inf are no settings.
_scalar(str, lambda value: type(value) is str)
_scalar(bool, lambda value: type(value) is bool)
_scalar(int, lambda value: type(value) is int)
_scalar(float, lambda value: type(value) in (int, float) and math.isfinite(value))
_scalar(frozenset[str], lambda value: type(value) is list and all(type(v) is str for v in value))


def _is_dict(hint: Any) -> bool:
    origin: object = typing.get_origin(hint)
    return origin is dict


def _a_table(build: Callable[[Mapping[str, Any], Any], _T]) -> Callable[[object, Any], _T]:
    """``build``, for a value that is a table; any other value is a ``_Mismatch``."""

    def structure(value: object, kind: Any) -> _T:
        if not isinstance(value, Mapping):
            raise _Mismatch("a table")
        return build(value, kind)

    return structure


_converter.register_structure_hook_factory(
    dataclasses.is_dataclass, lambda kind: _a_table(make_dict_structure_fn(kind, _converter))
)
_converter.register_structure_hook_factory(
    _is_dict, lambda kind: _a_table(make_mapping_structure_fn(kind, _converter))
)


def _structure(document: Mapping[str, Any], kind: type[_T]) -> _T:
    """``document`` as a ``kind``, or the first thing wrong with it as a ``ConfigError``."""
    try:
        return _converter.structure(document, kind)
    except cattrs.ClassValidationError as exc:
        raise _config_error(exc) from None


def _config_error(group: BaseExceptionGroup[Exception]) -> ConfigError:
    """The one place where cattrs' errors become the adapter's: the first leaf of the group
    (an unknown key before anything else, as a misspelt key leaves a required one missing), its
    key from the path of cattrs' notes. A leaf of another kind is a bug, raised as it is."""
    leaves = _leaves(group, ())
    path, exc = min(leaves, key=lambda leaf: not isinstance(leaf[1], ForbiddenExtraKeysError))
    where = ".".join(path)
    if isinstance(exc, ForbiddenExtraKeysError):
        name = min(exc.extra_fields)
        known = [f.name for f in dataclasses.fields(exc.cl)]
        prefix = f"{where}." if where else ""
        return ConfigError(
            f"unknown key '{prefix}{name}'{did_you_mean(name, known, prefix)}", prefix + name
        )
    if isinstance(exc, KeyError):
        return ConfigError(f"{where} is required", where)
    if isinstance(exc, _Mismatch):
        return ConfigError(f"{where}: expected {exc}", where)
    if isinstance(exc, ConfigError):
        # A nested object's rule names its own key (TlsFiles: ``cert_file``); here it is known
        # where that object stands in the file.
        if path and exc.key is not None and not exc.key.startswith(f"{path[0]}."):
            return ConfigError(f"{where}.{exc}", f"{where}.{exc.key}")
        return exc
    raise exc


def _leaves(
    exc: BaseException, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], BaseException]]:
    """Every error in cattrs' group, with the keys that lead to it."""
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, AttributeValidationNote):
            path = (*path, note.name)
        elif isinstance(note, IterableValidationNote):
            path = (*path, str(note.index))
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner, path)
    else:
        yield path, exc


def load_settings(
    path: str | os.PathLike[str] | None,
    *,
    listen: str | None = None,
    health_listen: str | None = None,
    workers: int | None = None,
    upstream: str | None = None,
    gateway_listen: str | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
    overrides: Overrides | None = None,
    for_gateway: bool = False,
) -> Settings:
    """Settings from a TOML file (or defaults), ``overrides`` over it, the command line's flags
    over both.

    ``for_gateway``: the file is read by ``nvp-adapter gateway``, for which ``[merchants]`` are
    the accounts it accepts; the adapter's rules on how it authenticates to its gateway (a
    merchant with no password needs ``upstream.client_cert_file``) and on where it may serve the
    embedded gateway do not apply.
    """
    flags: dict[str, dict[str, object]] = {
        "server": {"listen": listen, "health_listen": health_listen, "workers": workers},
        "upstream": {"url": upstream},
        "gateway": {"listen": gateway_listen},
        "log": {"level": log_level, "format": log_format},
    }
    layers = _Layers.read(path, overrides, flags)
    try:
        settings = _settings(_structure(layers.document, _Document))
        if not for_gateway:
            _check_adapter_credentials(settings)
            _check_embedded_exposure(settings, named="url" in layers.document.get("upstream", {}))
            _check_embedded_workers(settings)
            _check_listeners(settings)
    except ConfigError as exc:
        raise layers.located(exc) from None
    return settings


def load_server_settings(
    path: str | os.PathLike[str] | None, *, overrides: Overrides | None = None
) -> ServerSettings:
    """The ``[server]`` table alone, layered and checked as ``load_settings`` does it.

    What ``nvp-adapter health`` needs to find the server, without reading any secret.
    """
    layers = _Layers.read(path, overrides, {})
    others = set(_TABLES) - {"server"}
    document = {key: value for key, value in layers.document.items() if key not in others}
    try:
        return _structure(document, _Document).server
    except ConfigError as exc:
        raise layers.located(exc) from None


_TABLES = [f.name for f in dataclasses.fields(_Document)]


@dataclass(frozen=True)
class _Layers:
    """The file, the overrides over it and the flags over both, merged table by table."""

    path: str | os.PathLike[str] | None
    document: dict[str, Any]
    """The file with each table's keys from every layer, the upper layer's where two set one key
    (a file's table that is no table is left for the check to refuse)."""
    sources: Mapping[str, str]
    flags: Mapping[str, Mapping[str, object]]

    @classmethod
    def read(
        cls,
        path: str | os.PathLike[str] | None,
        overrides: Overrides | None,
        flags: Mapping[str, Mapping[str, object]],
    ) -> _Layers:
        document = _read_toml(Path(path)) if path is not None else {}
        overrides = overrides or Overrides()
        given = {t: {k: v for k, v in keys.items() if v is not None} for t, keys in flags.items()}
        for name in {*overrides.tables, *given}:
            table = document.get(name, {})
            upper = {**overrides.tables.get(name, {}), **given.get(name, {})}
            if upper and isinstance(table, Mapping):
                document[name] = {**table, **upper}
        return cls(path, document, overrides.sources, given)

    def located(self, exc: ConfigError) -> ConfigError:
        """The error, prefixed by where the value it is about came from: the override's source
        (a variable) when that value is the override's, else the file (if any)."""
        table, _, key = (exc.key or "").partition(".")
        source = self.sources.get(exc.key or "")
        if source is not None and key not in self.flags.get(table, {}):
            return ConfigError(f"{source}: {exc}", exc.key)
        if self.path is None:
            return exc
        return ConfigError(f"{self.path}: {exc}", exc.key)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    """`` (did you mean PREFIXKEY?)`` for the known name closest to a misspelt one, else ``""``.

    >>> did_you_mean("lisen", {"listen", "workers"}, "server.")
    ' (did you mean server.listen?)'
    """
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def type_name(hint: Any) -> str:
    """What a setting of this type holds, for a message: ``a number``, ``true or false``."""
    if hint == frozenset[str]:
        return 'a list of merchant ids, or ["*"]'
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        hint, str(hint)
    )


def _settings(document: _Document) -> Settings:
    """The settings the file's shape names, its secrets read."""
    callers = {name: _caller(name, table) for name, table in document.callers.items()}
    tables = {
        "server": document.server,
        "upstream": document.upstream,
        "callers": types.MappingProxyType(callers),
        "gateway": document.gateway,
        "metrics": document.metrics,
        "log": document.log,
    }
    if document.merchants is not None:
        merchants = {
            merchant: _credentials(merchant, table)
            for merchant, table in document.merchants.items()
        }
        return Settings(merchants=types.MappingProxyType(merchants), **tables)  # type: ignore[arg-type]
    # The demo account exists only on the embedded gateway, in-process or on loopback.
    if not (document.upstream.is_embedded or document.upstream.is_loopback):
        problem = "no [merchants] configured: a real gateway needs each merchant's credentials"
        raise ConfigError(problem, "merchants")
    return Settings(**tables)  # type: ignore[arg-type]


_PASSWORD_SOURCES = ("password", "password_env", "password_file")
_TOKEN_SOURCES = ("token_env", "token_file", "token_sha256")


def _one_source(table: object, sources: tuple[str, ...], where: str) -> str | None:
    given = [key for key in sources if getattr(table, key) is not None]
    _require(len(given) <= 1, where, f": set only one of {', '.join(sources)}")
    return given[0] if given else None


def _from_env(variable: str, where: str, key: str) -> str:
    value = os.environ.get(variable)
    _require(value is not None, key, f": environment variable {variable} is unset", where)
    _require(bool(value), key, f": environment variable {variable} is empty", where)
    return typing.cast(str, value)


def read_secret_file(path: str, where: str, key: str | None = None) -> str:
    """A secret file's text, less one trailing newline (``\\n`` or ``\\r\\n``) and nothing else.

    Raises ``ConfigError`` for a file that cannot be read, is not UTF-8, or holds nothing: its
    message begins with ``where``, its key is ``key`` (else ``where``). A file that others may
    read is accepted, with one warning per path.
    """
    key = key or where
    try:
        with open(path, "rb") as file:  # fstat on the same open file: no race with a swap
            mode = os.fstat(file.fileno()).st_mode
            data = file.read(_MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}", key) from None
    _require(len(data) <= _MAX_SECRET_FILE_BYTES, key, f": {path} is over 64 KiB", where)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {path} is not UTF-8 text", key) from None
    text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    _require(bool(text), key, f": {path} is empty", where)
    if mode & stat.S_IROTH and path not in _WARNED_READABLE:
        _WARNED_READABLE.add(path)
        log.warning("%s: %s is readable by every user of this machine; chmod o-r it", where, path)
    return text


_MAX_SECRET_FILE_BYTES = 64 * 1024
_WARNED_READABLE: set[str] = set()


def _credentials(merchant: str, table: _MerchantTable) -> MerchantCredentials:
    where = f"merchants.{merchant}"
    _one_source(table, _PASSWORD_SOURCES, where)
    password = table.password
    if table.password_env is not None:
        password = _from_env(table.password_env, where, f"{where}.password_env")
    elif table.password_file is not None:
        password = read_secret_file(table.password_file, where, f"{where}.password_file")
    return MerchantCredentials(
        merchant, None if password is None else Secret(password), table.password_file
    )


def token_digest(token: str, where: str = "callers") -> Secret:
    """The hex SHA-256 digest of a bearer token: the only form in which the adapter keeps it.

    Raises ``ConfigError`` (its message begins with ``where``, its key) for an empty token, or
    one over ``MAX_TOKEN_CHARS``: no call could present it.
    """
    _require(bool(token), where, ": the token is empty")
    _require(
        len(token) <= MAX_TOKEN_CHARS, where, f": the token is over {MAX_TOKEN_CHARS} characters"
    )
    return Secret(hashlib.sha256(token.encode()).hexdigest())


def _caller(name: str, table: _CallerTable) -> CallerSettings:
    where = f"callers.{name}"
    source = _one_source(table, _TOKEN_SOURCES, where)
    key = f"{where}.{source}"
    digest: Secret | None = None
    if table.token_sha256 is not None:
        hexdigest = table.token_sha256
        _require(bool(_SHA256_HEX.fullmatch(hexdigest)), key, ": expected 64 lower-case hex digits")
        digest = Secret(hexdigest)
    elif table.token_env is not None:
        digest = token_digest(_from_env(table.token_env, where, key), key)
    elif table.token_file is not None:
        digest = token_digest(read_secret_file(table.token_file, where, key), key)
    return CallerSettings(
        name, table.merchants, digest, table.token_file, table.certificate_subject
    )


# --- rules across tables ------------------------------------------------------------------------


def _check_adapter_credentials(settings: Settings) -> None:
    """The adapter authenticates as each merchant by its password or by its client certificate."""
    for credentials in settings.merchants.values():
        if credentials.password is not None:
            continue
        where = f"merchants.{credentials.merchant}"
        # No password: the merchant authenticates by the TLS client certificate, which only
        # an https gateway ever asks for (the embedded one checks passwords alone).
        _require(
            urlsplit(settings.upstream.url).scheme == "https",
            where,
            ": no password, and certificate authentication needs an https gateway "
            "(upstream.url); set password, password_env or password_file",
        )
        _require(
            settings.upstream.client_cert_file is not None,
            where,
            ": no password (set password, password_env or password_file, or "
            "upstream.client_cert_file for certificate authentication)",
        )


def _check_embedded_exposure(settings: Settings, *, named: bool) -> None:
    """The embedded gateway answers other hosts only when the configuration names it.

    Its demo accounts and made-up sessions must never stand in for a real gateway unnoticed,
    as a default that nobody chose, on an address other hosts can reach.
    """
    server = settings.server
    _require(
        named or not settings.upstream.is_embedded or server.address.is_loopback,
        "server.listen",
        f" {server.listen!r} is not a loopback address, and the upstream is the "
        "embedded gateway only by default: set upstream.url to the gateway's URL, or "
        'url = "embedded" to serve the embedded gateway there on purpose',
    )


def _check_embedded_workers(settings: Settings) -> None:
    """``serve --workers N`` never splits the embedded gateway into N that do not know each other.

    Each worker is a process of its own, with its own in-process gateway: a session or an order
    made through one would be unknown through the others, at random, by connection.
    """
    workers = settings.server.workers
    _require(
        workers == 1 or not settings.upstream.is_embedded,
        "server.workers",
        f" = {workers} with the embedded gateway: each worker would have its own, and what one "
        "worker made the others would not know; run `nvp-adapter gateway` and set upstream.url "
        "to its URL, or run one worker",
    )


def _check_listeners(settings: Settings) -> None:
    """No two of ``serve``'s listeners on one address, where the second bind would fail at start.

    ``gateway.listen`` is another process's (``nvp-adapter gateway``) and is left out.
    """
    listeners = (
        ("server.listen", settings.server.listen),
        ("server.health_listen", settings.server.health_listen),
        ("metrics.listen", settings.metrics.listen),
    )
    seen: list[tuple[str, ListenAddress]] = []
    for key, text in listeners:
        if text is None:
            continue
        address = parse_listen(text)
        for other_key, other in seen:
            _require(
                not _one_address(address, other),
                key,
                f" {text!r}: the same address as {other_key}; give each listener its own",
            )
        seen.append((key, address))


_WILDCARDS = {"0.0.0.0": 4, "::": 6}  # noqa: S104 (compared with, never bound)


def _one_address(a: ListenAddress, b: ListenAddress) -> bool:
    """Whether binding both would clash: one socket path, or one TCP port (never port 0) on the
    same host or on a wildcard of the host's family."""
    if a.is_unix or b.is_unix:
        return a.path == b.path
    if a.port != b.port or a.port == 0:
        return False
    host_a, host_b = _host_key(a.host), _host_key(b.host)
    return host_a == host_b or _covers(host_a, host_b) or _covers(host_b, host_a)


def _host_key(host: str) -> str:
    """An IP literal in its one spelling (``0:0::1`` is ``::1``), a name in lower case."""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower()


def _covers(wildcard: str, host: str) -> bool:
    """Whether a listener on ``wildcard`` takes the port on ``host`` too (a name may be IPv4)."""
    family = _WILDCARDS.get(wildcard)
    if family is None:
        return False
    try:
        return ipaddress.ip_address(host).version == family
    except ValueError:
        return family == 4


# --- URLs and addresses -------------------------------------------------------------------------

_UPSTREAM_FORMS = (
    f"expected {EMBEDDED!r}, an https:// URL, or an http:// URL to a loopback host "
    "(localhost, 127.0.0.0/8, ::1)"
)
"""Every form ``upstream.url`` takes, for the message about one that is none of them."""


def _check_url(url: str) -> None:
    key = "upstream.url"
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 (raises ValueError for a malformed host)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        # The parser's words may quote part of the user info ("... integer value as 'pa'").
        why = "malformed user info, host or port" if "@" in url else str(exc)
        raise ConfigError(f"{key} {redact_url(url)!r}: {why}", key) from None
    shown = redact_url(parts.geturl())
    _require(
        parts.scheme in {"https", "http"} and bool(parts.hostname),
        key,
        f" {shown!r}: {_UPSTREAM_FORMS}",
    )
    _require(
        parts.username is None and parts.password is None,
        key,
        f" {shown!r}: no user info in the URL; merchants' credentials go in [merchants.<ID>]",
    )
    _require(
        not parts.query and not parts.fragment,
        key,
        f" {shown!r}: no query or fragment; the path /api/nvp/... is added",
    )
    _require(
        parts.scheme == "https" or _is_loopback(parts.hostname or ""),
        key,
        f" {shown!r}: plain http is only for loopback hosts; use https",
    )


def proxy_url(url: str, source: str = "upstream.proxy") -> SplitResult:
    """An HTTP CONNECT proxy URL, ``http://[user:password@]host:port``, split into its parts.

    The one rule for ``upstream.proxy`` and for the ``https_proxy`` family of variables alike.
    Raises ``ConfigError`` (key ``source``, the URL's user info redacted) for any other URL.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 (raises ValueError for a malformed host)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        raise ConfigError(f"{source} {shown!r}: not a valid URL", source) from None
    _require(
        parts.scheme == "http" and bool(parts.hostname),
        source,
        f" {shown!r}: expected an http:// proxy URL (HTTP CONNECT)",
    )
    _require(
        parts.path in {"", "/"} and not parts.query and not parts.fragment,
        source,
        f" {shown!r}: expected http://[user:password@]host:port",
    )
    # Basic credentials are "user:password": the user name cannot hold one.
    _require(
        ":" not in unquote(parts.username or ""),
        source,
        f" {shown!r}: the proxy user name holds a ':'",
    )
    return parts


def redact_url(url: str) -> str:
    """The URL with any user info replaced by ``***``, fit to print.

    Everything between ``//`` and the last ``@`` goes: a password may hold an unencoded ``/``,
    ``?`` or ``#`` that a URL parser would take for the end of the host part.
    """
    scheme, sep, rest = url.partition("//")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}//***@{rest.rpartition('@')[2]}"


def _is_loopback(host: str) -> bool:
    """An IP literal in 127.0.0.0/8 or ``::1``, or exactly ``localhost`` (any case)."""
    if host.lower() == _LOOPBACK_NAME:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen_address(where: str, text: str) -> ListenAddress:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise ConfigError(f"{where} {text!r}: {exc}", where) from None


def _check_ranges(settings: object, table: str) -> None:
    for item in dataclasses.fields(settings):  # type: ignore[arg-type]
        if _RANGE in item.metadata:
            low, high = item.metadata[_RANGE]
            value, key = getattr(settings, item.name), f"{table}.{item.name}"
            _require(
                math.isfinite(value) and low <= value <= high,
                key,
                f" must be {_number(low)} to {_number(high)}, not {_number(value)}",
            )


def _number(value: float) -> str:
    """A bound as an operator wrote it: 67108864, not 6.71089e+07; 0.001, not 1e-03."""
    return str(int(value)) if math.isfinite(value) and float(value).is_integer() else repr(value)


def _require(condition: bool, key: str, problem: str, where: str | None = None) -> None:
    """A rule: unless ``condition`` holds, a ``ConfigError`` about ``key``, whose message is the
    key (or ``where``, the table it is in) and then the ``problem`` (``": expected HOST:PORT"``)."""
    if not condition:
        raise ConfigError((where or key) + problem, key)
