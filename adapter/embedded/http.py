"""The embedded gateway over HTTP(S): ``POST /api/nvp/version/{N}``, as any NVP client expects it.

>>> runner, port = await start_http_gateway(gateway, "127.0.0.1", 0)  # doctest: +SKIP
>>> await runner.cleanup()  # doctest: +SKIP

Every connection goes through a ``ConnectionGuard`` (``adapter/net/http_guard.py``): a cap on open
connections, a time limit for each request to arrive, and one for idle keep-alive connections,
all from ``GatewaySettings``. Over TLS, a verified client certificate's subject CN is handed to
the gateway as the merchant it speaks for (certificate authentication).
"""

from __future__ import annotations

import json
import logging
import ssl
from http import HTTPStatus

from aiohttp import web

from adapter.config import GatewaySettings
from adapter.core import nvp
from adapter.embedded.gateway import (
    AnswerLost,
    EmbeddedGateway,
    known_field,
    request_too_large,
)
from adapter.net.http_guard import (
    REFUSAL_LOG_INTERVAL_SECONDS,
    SslContextSource,
    start_guarded_app,
)
from adapter.upstream.client import Reply

__all__ = ["MAX_BODY_BYTES", "ROUTE", "create_app", "start_http_gateway"]

log = logging.getLogger("adapter.embedded.http")

MAX_BODY_BYTES = 1024 * 1024
"""Request bodies over this are answered 413 without being read further."""
ROUTE = "/api/nvp/version/{version}"
# Handlers answer at once, so only a stuck client connection can make a stop wait this long.
_SHUTDOWN_SECONDS = 5.0
_LOGGED_NAMES = 20  # field names in a DEBUG line at most


def create_app(gateway: EmbeddedGateway) -> web.Application:
    """An aiohttp application that hands every NVP POST to ``gateway``.

    Other paths and methods get aiohttp's plain 404 and 405, as a real gateway's web server
    answers them outside the NVP API.
    """

    async def post_nvp(request: web.Request) -> web.Response:
        certificate = certificate_subject(request)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            answer: Reply | AnswerLost = request_too_large(MAX_BODY_BYTES)
        else:
            answer = gateway.handle(request.match_info["version"], body, certificate=certificate)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "POST %s: %s; fields %s%s",
                    request.path,
                    "answer lost" if isinstance(answer, AnswerLost) else answer.status,
                    _field_names(body),
                    "" if certificate is None else f"; client certificate CN {certificate!r}",
                )
        if isinstance(answer, AnswerLost):
            return _lose(request)
        return web.Response(
            status=answer.status, body=answer.body, headers={"Content-Type": nvp.CONTENT_TYPE}
        )

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(ROUTE, post_nvp)
    return app


def _lose(request: web.Request) -> web.Response:
    """Close the connection with no answer (``AnswerLost``): the client sees it end after its
    request was sent. The response returned is never written: aiohttp finds the transport
    closing, counts a client that went away, and drops the connection."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=HTTPStatus.NO_CONTENT)


def certificate_subject(request: web.BaseRequest) -> str | None:
    """The subject CN of the client's verified TLS certificate; None without one.

    Read from the TLS layer of the request's own connection, never from anything the client
    wrote. ``peercert`` is empty unless the server asked for the certificate and verified it (a
    certificate that fails verification fails the handshake); a subject with several CNs names no
    one merchant and counts as none.
    """
    transport = request.transport
    peercert = transport.get_extra_info("peercert") if transport is not None else None
    if not peercert:
        return None
    names = [
        value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"
    ]
    return names[0] if len(names) == 1 else None


def _field_names(body: bytes) -> str:
    """The request's field names for a DEBUG line (sandbox users debugging a client); no values.

    Only names the gateway knows are shown, the others counted: a name is the client's text
    too (a password sent without its ``=`` would be one).
    """
    try:
        names = list(nvp.decode(body))
    except nvp.NvpDecodeError:
        return "(not NVP)"
    known = [name for name in names if known_field(name)]
    shown = json.dumps(known[:_LOGGED_NAMES]) + ("..." if len(known) > _LOGGED_NAMES else "")
    others = len(names) - len(known)
    return shown + (f" and {others} other{'s' if others > 1 else ''}" if others else "")


async def start_http_gateway(
    gateway: EmbeddedGateway,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | SslContextSource | None = None,
    *,
    settings: GatewaySettings | None = None,
    log_interval: float = REFUSAL_LOG_INTERVAL_SECONDS,
) -> tuple[web.AppRunner, int]:
    """Serve ``gateway`` on ``host:port`` (0: any free port); the runner and the bound port.

    ``ssl_context`` is a context, or a function giving the context in force (called for each
    new connection, so that a reloaded certificate serves the next handshakes). ``settings``
    bounds the connections (``GatewaySettings()`` when None; its ``listen`` and ``tls`` are not
    read here). Refusals are logged once per ``log_interval`` seconds at most.

    Stop it with ``await runner.cleanup()``. A failed bind cleans up and re-raises the OSError.
    """
    source: SslContextSource | None
    if isinstance(ssl_context, ssl.SSLContext):
        fixed = ssl_context
        source = lambda: fixed  # noqa: E731 (a one-line closure is the clearest form here)
    else:
        source = ssl_context
    return await start_guarded_app(
        create_app(gateway),
        host,
        port,
        settings or GatewaySettings(),
        source,
        log_interval=log_interval,
        logger=log,
        shutdown_timeout=_SHUTDOWN_SECONDS,
    )
