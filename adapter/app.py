"""Where the adapter is put together: the one room that knows both the core and the sandbox.

The core (``server``, ``upstream``, ``transport``) never imports ``adapter.embedded``; this module
plugs the embedded gateway into the transport seam when the settings ask for it.

>>> server = build_server(load_settings(None))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from adapter.config import Settings
from adapter.embedded import EmbeddedGateway, EmbeddedTransport
from adapter.server import AdapterServer, http_transport
from adapter.transport import Transport

__all__ = ["build_server", "build_transport", "embedded_accounts"]


def build_transport(settings: Settings) -> Transport:
    """The embedded gateway in-process, or the HTTP client for a real gateway URL.

    Raises ``ConfigError`` when a CA bundle or client certificate cannot be loaded.
    """
    if settings.upstream.is_embedded:
        return EmbeddedTransport(
            EmbeddedGateway(embedded_accounts(settings)), settings.upstream.api_version
        )
    return http_transport(settings)


def embedded_accounts(settings: Settings) -> dict[str, str]:
    """The accounts the embedded gateway accepts: every configured merchant with a password."""
    return {
        merchant: creds.password.reveal()
        for merchant, creds in settings.merchants.items()
        if creds.password is not None
    }


def build_server(
    settings: Settings, transport: Transport | None = None, **options: Any
) -> AdapterServer:
    """The adapter's server for these settings; ``transport`` replaces the one they call for.

    ``options`` go to ``AdapterServer`` as they are.
    """
    return AdapterServer(settings, transport, transport_factory=build_transport, **options)
