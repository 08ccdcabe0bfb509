"""Every error the adapter raises, in one tree. No grpc or aiohttp imports here.

::

    AdapterError
    ├── ConfigError                     bad configuration, found at start-up
    ├── RequestInvalid                  the caller's request fails the adapter's own validation
    ├── CallerUnauthenticated           caller authentication is on and the call proved no caller
    ├── MerchantNotAllowed              no credentials held for the merchant, or not this caller's
    ├── ServerOverloaded                a call past ``server.max_concurrent_rpcs``: refused at once
    └── UpstreamError                   anything about the call to the gateway
        ├── AdapterOverloaded           no free slot for an upstream call in time: never sent
        ├── CircuitOpen                 the gateway keeps failing; failing fast: never sent
        ├── GatewayRejected             the gateway answered ``result=ERROR``
        ├── TransactionIdReused         the pair names a transaction other than the one asked for
        ├── TransactionNotRecorded      a payment's answer was lost and the gateway holds no such
        │                               transaction: not done, to be sent again with the same pair
        ├── UpstreamProtocolError       not HTTP the client accepts (a bound passed), not valid
        │                               NVP, no ``result``, or over the size cap
        ├── UpstreamHttpStatus          HTTP 429/502/503/504 with no NVP error body
        │   ├── UpstreamTurnedAway      429, 503: the gateway's front turned it away unprocessed
        │   └── UpstreamFrontFailed     502, 504: the front got no answer behind it: may be done
        ├── UpstreamNotSent             no byte of the request was written: safe to send again
        │   ├── UpstreamUnavailable     refused, DNS, TLS handshake, the proxy, or a connection
        │   │                           closed or answered before the request was written
        │   ├── UpstreamConnectTimeout  no connection within ``connect_timeout_seconds``
        │   ├── UpstreamCertificateInvalid  the gateway's certificate failed verification: a
        │   │                           configuration fault, not an outage, not retried
        │   └── UpstreamDeadlineBeforeSend  the caller's deadline passed before the write
        └── UpstreamSentAndLost         the request was written and no answer came: outcome unknown
            ├── UpstreamConnectionLost  reset or closed before a complete answer
            └── UpstreamReadTimeout     no complete answer within the attempt's time

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
    "ServerOverloaded",
    "TransactionIdReused",
    "TransactionNotRecorded",
    "UpstreamCertificateInvalid",
    "UpstreamConnectTimeout",
    "UpstreamConnectionLost",
    "UpstreamDeadlineBeforeSend",
    "UpstreamError",
    "UpstreamFrontFailed",
    "UpstreamHttpStatus",
    "UpstreamNotSent",
    "UpstreamProtocolError",
    "UpstreamReadTimeout",
    "UpstreamSentAndLost",
    "UpstreamTurnedAway",
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
class ServerOverloaded(AdapterError):
    """``limit`` calls were already in progress: this one is refused before any work."""

    limit: int

    def __str__(self) -> str:
        return f"server overloaded: {self.limit} calls already in progress"


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
class TransactionIdReused(UpstreamError):
    """The pair (``order.id``, ``transaction.id``) already names a transaction of another type,
    amount or currency than the request's: the gateway's, verbatim (clipped in the status)."""

    existing_type: str
    existing_amount: str
    existing_currency: str

    def __str__(self) -> str:
        return (
            "the transaction id is already used on this order by another transaction "
            f"({self.existing_type or '?'} of {self.existing_amount or '?'} "
            f"{self.existing_currency or '?'}): use a new transaction id"
        )


@dataclass(eq=False)
class TransactionNotRecorded(UpstreamError):
    """A money-moving request's answer was lost, and the gateway then said it holds no
    transaction for the pair: nothing was done, and sending it again with the same pair is safe."""

    reason: str

    def __str__(self) -> str:
        return (
            f"no answer from the gateway ({self.reason}), and it holds no such transaction: "
            "retry with the same order and transaction ids"
        )


@dataclass(eq=False)
class UpstreamProtocolError(UpstreamError):
    """The gateway's answer is not usable: HTTP past one of the client's bounds or malformed, or a
    body that is not NVP, has no ``result``, or is over the size cap."""

    reason: str
    http_status: int = 0

    def __str__(self) -> str:
        return f"unusable answer from the gateway: {self.reason}"


@dataclass(eq=False)
class UpstreamHttpStatus(UpstreamError):
    """The gateway's front answered an HTTP error status with no NVP error body.

    ``retry_after`` holds the ``Retry-After`` header's advice in seconds where one was given.
    """

    http_status: int
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"gateway answered HTTP {self.http_status} without an NVP body"


@dataclass(eq=False)
class UpstreamTurnedAway(UpstreamHttpStatus):
    """HTTP 429 or 503: the front turned the request away before the gateway worked on it."""


@dataclass(eq=False)
class UpstreamFrontFailed(UpstreamHttpStatus):
    """HTTP 502 or 504: the front got a broken answer, or none in time, from the gateway behind
    it; the gateway may have done the work."""


@dataclass(eq=False)
class UpstreamNotSent(UpstreamError):
    """No byte of the request was written to the gateway (or its proxy): sending it again is safe
    for every operation."""

    reason: str

    def __str__(self) -> str:
        return f"gateway unreachable: {self.reason}"


@dataclass(eq=False)
class UpstreamUnavailable(UpstreamNotSent):
    """The gateway could not be reached: refused, DNS, a failed TLS handshake, a proxy that failed
    or refused the tunnel, or a connection closed or answered before the request was written."""


@dataclass(eq=False)
class UpstreamConnectTimeout(UpstreamNotSent):
    """No connection to the gateway (TCP, the proxy's tunnel, TLS) within the connect timeout."""


@dataclass(eq=False)
class UpstreamCertificateInvalid(UpstreamNotSent):
    """The gateway's TLS certificate failed verification (untrusted issuer, expired, another host
    name).

    Not an outage but a configuration fault (``upstream.url``, ``upstream.ca_file``, or the
    gateway's certificate itself): trying again cannot help, so it is neither retried nor counted
    by the circuit breaker.
    """

    def __str__(self) -> str:
        return f"the gateway's TLS certificate was refused: {self.reason}"


@dataclass(eq=False)
class UpstreamDeadlineBeforeSend(UpstreamNotSent):
    """The caller's deadline passed before the request could be written (waiting for a connection,
    or no time left at all)."""

    def __str__(self) -> str:
        return f"the caller's deadline left no time to call the gateway: {self.reason}"


@dataclass(eq=False)
class UpstreamSentAndLost(UpstreamError):
    """The request was written and no complete answer came: the gateway may have done the work,
    so the outcome is unknown."""

    reason: str

    def __str__(self) -> str:
        return f"no answer from the gateway after the request was sent: {self.reason}"


@dataclass(eq=False)
class UpstreamConnectionLost(UpstreamSentAndLost):
    """The connection was reset or closed after the request was written."""

    def __str__(self) -> str:
        return f"connection to the gateway lost after the request was sent: {self.reason}"


@dataclass(eq=False)
class UpstreamReadTimeout(UpstreamSentAndLost):
    """No complete answer within the attempt's time (the caller's deadline or the upstream
    timeout) after the request was written."""

    seconds: float = 0.0

    def __str__(self) -> str:
        return f"no answer from the gateway within {self.seconds:.3g}s"
