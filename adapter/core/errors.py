"""Every error the adapter raises, in one tree. No grpc or aiohttp imports here.

::

    AdapterError
    ├── ConfigError                     bad configuration, found at start-up
    ├── RequestInvalid                  the caller's request fails the adapter's own validation
    ├── CallerUnauthenticated           caller authentication is on and the call proved no caller
    ├── MerchantNotAllowed              no credentials held for the merchant, or not this caller's
    └── UpstreamError                   anything about the call to the gateway
        ├── AdapterOverloaded           no free slot for an upstream call in time: never sent
        ├── CircuitOpen                 the gateway keeps failing; failing fast: never sent
        ├── GatewayRejected             the gateway answered ``result=ERROR``
        ├── UpstreamUnavailable         the gateway could not be reached; the request was never sent
        ├── UpstreamCertificateInvalid  the gateway's TLS certificate failed verification: a
        │                               configuration fault, not an outage; never sent
        ├── UpstreamOverloaded          HTTP 429/502/503/504 with no NVP error body
        ├── UpstreamConnectionLost      the connection broke after the request was sent
        ├── UpstreamTimeout             no answer in time (``sent``: whether the request left)
        └── UpstreamProtocolError       not valid NVP, no ``result``, or over the size cap

``status.py`` turns each of them into one gRPC status; this module only says what happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from adapter.core import nvp

__all__ = [
    "AdapterError",
    "AdapterOverloaded",
    "CallerUnauthenticated",
    "CircuitOpen",
    "ConfigError",
    "GatewayRejected",
    "MerchantNotAllowed",
    "RequestInvalid",
    "UpstreamCertificateInvalid",
    "UpstreamConnectionLost",
    "UpstreamError",
    "UpstreamOverloaded",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class AdapterError(Exception):
    """The root of every error the adapter raises on purpose."""


class ConfigError(AdapterError):
    """The configuration cannot be used; the message is one line meant for the operator.

    ``key`` is the setting at fault as the file spells it (``server.tls.cert_file``), or the
    variable's name where a variable stands for no setting (``HTTPS_PROXY``); None where no one
    key is (an unreadable file).
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(eq=False)
class RequestInvalid(AdapterError):
    """The request fails the adapter's own validation; no upstream call was made.

    ``field`` is the proto field path the caller can fix, e.g. ``merchant`` or
    ``extra_fields[order.id]``; empty when no one field is to blame (bytes that do not parse).
    """

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}" if self.field else self.description


class CallerUnauthenticated(AdapterError):
    """Caller authentication is configured and the call carried no token or certificate it knows."""

    def __str__(self) -> str:
        return (
            "caller not authenticated: send 'authorization: Bearer <token>' or a client certificate"
        )


@dataclass(eq=False)
class MerchantNotAllowed(AdapterError):
    """The adapter holds no credentials for this merchant, or ``caller`` may not use them."""

    merchant: str
    caller: str | None = None

    def __str__(self) -> str:
        if self.caller is not None:
            return f"caller {self.caller!r} may not use merchant {self.merchant!r}"
        return f"no credentials are configured for merchant {self.merchant!r}"


@dataclass(eq=False)
class UpstreamError(AdapterError):
    """Something went wrong talking to the gateway.

    ``attempts`` counts the upstream attempts made for the call, the failing one included.
    """

    attempts: int = field(default=1, kw_only=True)


@dataclass(eq=False)
class AdapterOverloaded(UpstreamError):
    """Every upstream slot stayed busy for the whole wait: the request was never sent."""

    limit: int
    waited: float

    def __str__(self) -> str:
        return f"adapter overloaded: all {self.limit} upstream slots busy for {self.waited:.3g}s"


@dataclass(eq=False)
class CircuitOpen(UpstreamError):
    """The gateway failed too often in a row; calls fail fast until ``retry_after`` s pass."""

    failures: int
    retry_after: float

    def __str__(self) -> str:
        return (
            f"gateway unreachable: {self.failures} failures in a row, "
            f"failing fast for {self.retry_after:.3g}s more"
        )


@dataclass(eq=False)
class GatewayRejected(UpstreamError):
    """The gateway answered ``result=ERROR``; ``fields`` is its whole answer, verbatim."""

    http_status: int
    fields: Mapping[str, str]

    @property
    def cause(self) -> str:
        return self.fields.get(nvp.ERROR_CAUSE, "")

    @property
    def field(self) -> str:
        return self.fields.get(nvp.ERROR_FIELD, "")

    @property
    def explanation(self) -> str:
        return self.fields.get(nvp.ERROR_EXPLANATION, "")

    def __str__(self) -> str:
        where = f" on {self.field}" if self.field else ""
        return f"gateway error {self.cause or '(no cause)'}{where} (HTTP {self.http_status})"


@dataclass(eq=False)
class UpstreamUnavailable(UpstreamError):
    """The gateway could not be reached (refused, DNS, a failed TLS handshake, a connect timeout,
    a proxy that refused the tunnel): never sent."""

    reason: str

    def __str__(self) -> str:
        return f"gateway unreachable: {self.reason}"


@dataclass(eq=False)
class UpstreamCertificateInvalid(UpstreamError):
    """The gateway's TLS certificate failed verification (untrusted issuer, expired, another host
    name): the request was never sent.

    Not an outage but a configuration fault (``upstream.url``, ``upstream.ca_file``, or the
    gateway's certificate itself): trying again cannot help, so it is neither retried nor counted
    by the circuit breaker.
    """

    reason: str

    def __str__(self) -> str:
        return f"the gateway's TLS certificate was refused: {self.reason}"


@dataclass(eq=False)
class UpstreamOverloaded(UpstreamError):
    """The gateway's front answered 429/502/503/504 with no NVP error body.

    ``retry_after`` holds the ``Retry-After`` advice in seconds where one was given.
    """

    http_status: int
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"gateway answered HTTP {self.http_status} without an NVP body"


@dataclass(eq=False)
class UpstreamConnectionLost(UpstreamError):
    """The connection was reset or closed after the request was sent: the outcome is unknown."""

    reason: str

    def __str__(self) -> str:
        return f"connection to the gateway lost after the request was sent: {self.reason}"


@dataclass(eq=False)
class UpstreamTimeout(UpstreamError):
    """No complete answer came in time. If the request was ``sent``, the outcome is unknown;
    if not, the caller's deadline left no time to send it."""

    seconds: float
    sent: bool = True

    def __str__(self) -> str:
        if not self.sent:
            return "the caller's deadline left no time to call the gateway"
        return f"no answer from the gateway within {self.seconds:.3g}s"


@dataclass(eq=False)
class UpstreamProtocolError(UpstreamError):
    """The gateway's answer is not usable NVP (bad encoding, no ``result``, over the size cap)."""

    reason: str
    http_status: int = 0

    def __str__(self) -> str:
        return f"unusable answer from the gateway: {self.reason}"
