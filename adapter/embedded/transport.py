"""The embedded gateway behind the upstream client's ``Transport`` seam: no socket, same bytes."""

from __future__ import annotations

from collections.abc import Mapping

from adapter.core.errors import UpstreamConnectionLost
from adapter.embedded.gateway import AnswerLost, EmbeddedGateway
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
        """The gateway's answer; ``headers`` (trace context) have no request to go on: ignored.

        Raises ``UpstreamConnectionLost`` when the gateway carried the request out and lost its
        answer (``AnswerLost``): what a connection reset after sending is on a socket.
        """
        answer = self._gateway.handle(self._version, body)
        if isinstance(answer, AnswerLost):
            raise UpstreamConnectionLost("the embedded gateway lost its answer (TEST-ANSWER-LOST)")
        return answer

    async def aclose(self) -> None:
        return None
