"""Where the adapter is put together: the one room that knows both the core and the sandbox.

The core (``server``, ``upstream``, ``transport``) never imports ``adapter.embedded``; this module
plugs the embedded gateway into the transport seam when the settings ask for it.

>>> server = build_server(load_settings(None))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from adapter.config import Settings
from adapter.config.rotation import FileWatch, watch_password_files
from adapter.embedded import EmbeddedGateway, EmbeddedTransport
from adapter.embedded.standalone import gateway_accounts
from adapter.observability.tracing import Tracing
from adapter.server import AdapterServer, http_transport
from adapter.server.callers import Callers
from adapter.server.tls import ServerTls
from adapter.upstream.transport import Transport

__all__ = ["build_server", "build_transport", "check"]


def build_transport(settings: Settings, watch: FileWatch | None = None) -> Transport:
    """The embedded gateway in-process, or the HTTP client for a real gateway URL.

    With ``watch``, the in-process gateway's accounts follow the merchants' password files, so
    that a rotation tried against it works as it would against a gateway whose password the
    merchant changed. Raises ``ConfigError`` when a CA bundle or client certificate cannot be
    loaded.
    """
    if not settings.upstream.is_embedded:
        return http_transport(settings)
    gateway = EmbeddedGateway(gateway_accounts(settings))
    if watch is not None:
        label = "embedded gateway: "
        watch_password_files(watch, settings.merchants, gateway.set_password, label=label)
    return EmbeddedTransport(gateway, settings.upstream.api_version)


def build_server(
    settings: Settings, transport: Transport | None = None, **options: Any
) -> AdapterServer:
    """The adapter's server for these settings; ``transport`` replaces the one they call for.

    ``options`` go to ``AdapterServer`` as they are.
    """
    server = AdapterServer(
        settings,
        transport,
        transport_factory=lambda settings: build_transport(settings, server.watch),
        **options,
    )
    return server


async def check(settings: Settings) -> None:
    """Build what the server builds from ``settings`` before it binds, then close it again.

    The listener's TLS files are read and parsed, the callers set up, the OpenTelemetry variables
    read as the server reads them (nothing of OpenTelemetry imported), and the gateway's transport
    made (its CA bundle, client certificate and proxy): what ``nvp-adapter config check`` proves
    beyond the settings themselves. Raises ``ConfigError`` for the first that does not load.
    """
    if settings.server.tls is not None:
        ServerTls(settings.server.tls)
    Callers(settings.callers)
    Tracing.from_environment(settings.upstream)
    transport = build_transport(settings)
    await transport.aclose()
