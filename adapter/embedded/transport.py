"""The embedded gateway behind the upstream client's ``Transport`` seam: no socket, same bytes."""

from __future__ import annotations

from collections.abc import Mapping

from adapter.embedded.gateway import EmbeddedGateway
from adapter.upstream.transport import Reply

__all__ = ["EmbeddedTransport"]


class EmbeddedTransport:
    """Hands the request to the in-process embedded gateway: no socket, same bytes."""

    def __init__(self, gateway: EmbeddedGateway, api_version: int) -> None:
        self._gateway = gateway
        self._version = str(api_version)

    async def post(
        self, body: bytes, budget: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """The gateway's answer; ``headers`` (trace context) have no request to go on: ignored."""
        return self._gateway.handle(self._version, body)

    async def aclose(self) -> None:
        return None
