"""The embedded gateway: an in-memory MPGS that answers CREATE_SESSION, with two faces.

- In-process: ``EmbeddedGateway.handle(version, body)`` takes the request bytes and gives back a
  ``GatewayReply`` (HTTP status and NVP body), with no socket; ``EmbeddedTransport`` puts it
  behind the upstream client's transport seam.
- Over HTTP: ``start_http_gateway`` (or ``create_app`` for your own runner) serves the same
  object on ``POST /api/nvp/version/{N}``, so any NVP client can be tried against it.

Both faces share one implementation, so they answer byte for byte alike.
"""

from __future__ import annotations

from adapter.embedded.gateway import EmbeddedGateway, GatewayReply, StoredSession
from adapter.embedded.http import create_app, start_http_gateway
from adapter.embedded.transport import EmbeddedTransport

__all__ = [
    "EmbeddedGateway",
    "EmbeddedTransport",
    "GatewayReply",
    "StoredSession",
    "create_app",
    "start_http_gateway",
]
