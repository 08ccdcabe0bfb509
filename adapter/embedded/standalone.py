"""``nvp-adapter gateway``: the embedded gateway as a process of its own, from the settings.

>>> async with StandaloneGateway(settings, "127.0.0.1", 8080) as running:  # doctest: +SKIP
...     print(running.url)
...     running.reload()  # what SIGHUP does

It serves the ``[merchants]`` as accounts (a merchant with no password is accepted by its client
certificate alone), HTTPS with ``[gateway.tls]``, and the connection bounds of ``[gateway]``.
The TLS files and the merchants' password files are watched: a change of content is in
force within ``DEFAULT_INTERVAL_SECONDS``, and ``reload()`` reads them all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource

from aiohttp import web

from adapter.config import Settings
from adapter.config.rotation import DEFAULT_INTERVAL_SECONDS, FileWatch, watch_password_files
from adapter.embedded.gateway import EmbeddedGateway
from adapter.embedded.http import start_http_gateway
from adapter.embedded.tls import GatewayTls
from adapter.net.addresses import format_address
from adapter.net.resource import AsyncResource

__all__ = ["StandaloneGateway", "gateway_accounts"]

log = logging.getLogger("adapter.embedded")

# Descriptors the process needs beside its connections: the listener, the loop, logs, the files
# it watches, imports.
_SPARE_DESCRIPTORS = 64


def gateway_accounts(settings: Settings) -> dict[str, str | None]:
    """Every configured merchant with its password, or None where it has none (certificate only)."""
    return {
        merchant: None if creds.password is None else creds.password.reveal()
        for merchant, creds in settings.merchants.items()
    }


class StandaloneGateway(AsyncResource):
    """The embedded gateway served over HTTP(S) on ``host:port``, its secret files watched.

    ``start()`` (or entering it) raises ``ConfigError`` for TLS files that do not load and
    ``OSError`` for a failed bind; ``aclose()`` (or leaving) stops the watch and the server.
    """

    def __init__(
        self,
        settings: Settings,
        host: str,
        port: int,
        *,
        watch_interval: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self.settings = settings
        self.host = host
        self.accounts = gateway_accounts(settings)
        self.gateway = EmbeddedGateway(self.accounts)
        self._port = port
        self._watch = FileWatch(watch_interval)
        self._tls: GatewayTls | None = None
        self._runner: web.AppRunner | None = None
        self._watching: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"StandaloneGateway({self.url}, {self.gateway!r})"

    @property
    def scheme(self) -> str:
        return "http" if self.settings.gateway.tls is None else "https"

    @property
    def port(self) -> int:
        """The bound port, once started."""
        return self._port

    @property
    def url(self) -> str:
        """The operation URL for the configured API version."""
        return (
            f"{self.scheme}://{format_address(self.host, self._port)}/api/nvp/version/"
            f"{self.settings.upstream.api_version}"
        )

    @property
    def asks_for_client_cert(self) -> bool:
        return self._tls is not None and self._tls.asks_for_client_cert

    async def start(self) -> None:
        """Load the TLS files, bind, serve, and start watching the files.

        Raises ``ConfigError`` for TLS files that do not load, ``OSError`` for a failed bind.
        """
        settings = self.settings
        if settings.gateway.tls is not None:
            self._tls = GatewayTls(settings.gateway.tls)
            self._watch.add("gateway.tls", self._tls.paths, self._tls.load)
        watch_password_files(self._watch, self.settings.merchants, self.gateway.set_password)
        self._warn_about_the_setup()
        self._runner, self._port = await start_http_gateway(
            self.gateway,
            self.host,
            self._port,
            None if self._tls is None else self._tls.context,
            settings=settings.gateway,
        )
        self._watching = asyncio.create_task(self._watch.run())

    async def aclose(self) -> None:
        """Stop watching and serving; connections get aiohttp's graceful close. Idempotent."""
        watching, self._watching = self._watching, None
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def reload(self) -> int:
        """Read every watched file now (SIGHUP); how many groups loaded. Never raises."""
        return self._watch.reload()

    def _warn_about_the_setup(self) -> None:
        by_certificate = [m for m, password in self.accounts.items() if password is None]
        if by_certificate and not self.asks_for_client_cert:
            log.warning(
                "merchants %s have no password and [gateway.tls] has no client_ca_file: the "
                "gateway can authenticate them by no means",
                ", ".join(by_certificate),
            )
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        needed = self.settings.gateway.max_connections + _SPARE_DESCRIPTORS
        if soft != resource.RLIM_INFINITY and soft < needed:
            log.warning(
                "the open-file limit (%d) is below what gateway.max_connections = %d needs "
                "(about %d): connections will fail for want of descriptors before the cap "
                "refuses them; raise it (ulimit -n) or lower the cap",
                soft,
                self.settings.gateway.max_connections,
                needed,
            )
