"""The embedded gateway over HTTP: ``POST /api/nvp/version/{N}``, as any NVP client expects it.

>>> runner, port = await start_http_gateway(gateway, "127.0.0.1", 0)  # doctest: +SKIP
>>> await runner.cleanup()  # doctest: +SKIP
"""

from __future__ import annotations

import ssl

from aiohttp import web

from adapter import nvp
from adapter.embedded.gateway import EmbeddedGateway, GatewayReply, request_too_large

MAX_BODY_BYTES = 1024 * 1024
"""Request bodies over this are answered 413 without being read further."""
ROUTE = "/api/nvp/version/{version}"
# Handlers answer at once, so only a stuck client connection can make a stop wait this long.
_SHUTDOWN_SECONDS = 5.0


def create_app(gateway: EmbeddedGateway) -> web.Application:
    """An aiohttp application that hands every NVP POST to ``gateway``.

    Other paths and methods get aiohttp's plain 404 and 405, as a real gateway's web server
    answers them outside the NVP API.
    """

    async def post_nvp(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            reply: GatewayReply = request_too_large(MAX_BODY_BYTES)
        else:
            reply = gateway.handle(request.match_info["version"], body)
        return web.Response(
            status=reply.status, body=reply.body, headers={"Content-Type": nvp.CONTENT_TYPE}
        )

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(ROUTE, post_nvp)
    return app


async def start_http_gateway(
    gateway: EmbeddedGateway,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve ``gateway`` on ``host:port`` (0: any free port); the runner and the bound port.

    Stop it with ``await runner.cleanup()``. A failed bind cleans up and re-raises the OSError.
    """
    runner = web.AppRunner(create_app(gateway), access_log=None, shutdown_timeout=_SHUTDOWN_SECONDS)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    # With port 0 and a name that resolves to several addresses, each may get its own port;
    # the first is the one reported.
    return runner, int(runner.addresses[0][1])
