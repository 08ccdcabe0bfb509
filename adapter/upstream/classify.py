"""The one table from what went wrong on the wire to the adapter's own upstream errors.

The HTTP client (``adapter.upstream.client``) raises the low-level facts defined here, or lets the
OS, ``ssl`` and timeout errors of connecting through; ``ConnectionPool.post`` hands every one of
them to ``upstream_error`` with whether a byte of the request had been written, and raises what it
returns. Nothing else translates: a gateway reached directly or through a proxy, over HTTP or
HTTPS, fails into the same types.

>>> upstream_error(PeerClosed("closed"), written=False, budget=2.0, where="gw.example:443")
UpstreamUnavailable(attempts=1, reason='closed (gw.example:443)')
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from adapter.core.errors import (
    UpstreamCertificateInvalid,
    UpstreamConnectionLost,
    UpstreamConnectTimeout,
    UpstreamDeadlineBeforeSend,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamReadTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "DeadlinePassed",
    "PeerClosed",
    "ProtocolViolation",
    "TunnelRefused",
    "upstream_error",
]


class DeadlinePassed(Exception):
    """The exchange's time (the caller's deadline or the upstream timeout) ran out."""


class PeerClosed(Exception):
    """The peer (gateway or proxy) closed or reset the connection, or spoke before the request
    was written; the message says which."""


@dataclass(eq=False)
class ProtocolViolation(Exception):
    """The answer broke HTTP/1.1 or passed one of the client's bounds."""

    reason: str
    http_status: int = 0

    def __str__(self) -> str:
        return self.reason


@dataclass(eq=False)
class TunnelRefused(Exception):
    """The proxy answered CONNECT with a status other than 2xx."""

    status: int

    def __str__(self) -> str:
        # The status alone: the proxy's reason phrase and headers are the proxy's to choose.
        try:
            phrase = f" {HTTPStatus(self.status).phrase}"
        except ValueError:
            phrase = ""
        return f"the proxy refused the tunnel (HTTP {self.status}{phrase})"


Make = Callable[[BaseException, float, str], UpstreamError]
"""Builds the error from the failure, the exchange's time and where it was going (host:port)."""


@dataclass(frozen=True)
class _Row:
    failure: type[BaseException]
    written: bool | None
    """Whether the request had been written when it happened; None: either."""
    make: Make


# Most specific first; the first row whose type matches and whose ``written`` agrees wins.
# ssl.SSLCertVerificationError is an OSError (and a ValueError): its row comes before OSError's.
_TABLE: tuple[_Row, ...] = (
    _Row(ProtocolViolation, None, lambda e, _, __: _protocol_error(e)),
    _Row(DeadlinePassed, False, lambda e, t, w: UpstreamDeadlineBeforeSend(f"{t:.3g}s ({w})")),
    _Row(DeadlinePassed, True, lambda e, t, w: UpstreamReadTimeout(w, seconds=t)),
    _Row(ssl.SSLCertVerificationError, False, lambda e, _, w: _certificate_invalid(e, w)),
    _Row(TunnelRefused, False, lambda e, _, w: UpstreamUnavailable(f"{e} ({w})")),
    _Row(TimeoutError, False, lambda e, _, w: UpstreamConnectTimeout(f"{e} ({w})")),
    _Row(PeerClosed, False, lambda e, _, w: UpstreamUnavailable(f"{e} ({w})")),
    _Row(PeerClosed, True, lambda e, _, w: UpstreamConnectionLost(str(e))),
    _Row(OSError, False, lambda e, _, w: UpstreamUnavailable(f"cannot connect to {w}: {_why(e)}")),
    _Row(OSError, True, lambda e, _, w: UpstreamConnectionLost(_why(e))),
)


def upstream_error(
    failure: BaseException, *, written: bool, budget: float, where: str = ""
) -> UpstreamError:
    """The adapter's error for ``failure``, which happened before (``written`` False) or after a
    byte of the request was written; ``budget`` is the exchange's time, ``where`` the host:port
    the connection goes to (the gateway's, or the proxy's), for the message.

    Raises ``failure`` itself when no row matches: a fault in the adapter, not on the wire.
    """
    for row in _TABLE:
        if isinstance(failure, row.failure) and row.written in (None, written):
            return row.make(failure, budget, where)
    raise failure


def _protocol_error(failure: BaseException) -> UpstreamProtocolError:
    assert isinstance(failure, ProtocolViolation)  # noqa: S101 (the table's row says so)
    return UpstreamProtocolError(failure.reason, http_status=failure.http_status)


def _certificate_invalid(failure: BaseException, where: str) -> UpstreamCertificateInvalid:
    """OpenSSL's own words for what is wrong with the certificate, and whose it is."""
    why = getattr(failure, "verify_message", None) or str(failure)
    return UpstreamCertificateInvalid(f"{why.rstrip('.')} ({where})")


def _why(failure: BaseException) -> str:
    """An OSError in the same words on every event loop: the system's text for its errno
    (asyncio says "Connect call failed (...)", uvloop "[Errno 111] Connection refused")."""
    errno = getattr(failure, "errno", None)
    if isinstance(errno, int) and not isinstance(failure, ssl.SSLError):
        return os.strerror(errno).lower()
    return f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
