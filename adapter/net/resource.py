"""``async with`` for the adapter's long-lived pieces, written once: ``start()`` on the way in,
``aclose()`` on the way out, however the block ends."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncResource"]


class AsyncResource:
    """A base for what is started, then closed: a listener, a server, a client."""

    async def start(self) -> None:
        """Open what the resource holds (nothing, unless a subclass says otherwise)."""

    async def aclose(self) -> None:
        """Close what the resource holds; safe to call twice."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
