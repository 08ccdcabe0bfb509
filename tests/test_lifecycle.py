"""Start and stop as one exit stack: a start that fails at any step closes what it had opened,
and a stop closes everything even when one close fails, logging that failure once.

The upstream is a peer at the ``Transport`` seam that counts its closes and can fail them; the
listeners are real sockets on loopback.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Iterator, Mapping

import pytest

from adapter.config import MetricsSettings, Settings
from adapter.core.errors import ConfigError
from adapter.server import AdapterServer
from adapter.upstream.transport import Reply
from tests.conftest import make_settings

HOST = "127.0.0.1"


class CountedTransport:
    """An upstream that is never called here: it only counts its closes, and can fail them."""

    def __init__(self, *, fail_close: bool = False) -> None:
        self.closes = 0
        self._fail_close = fail_close

    async def post(
        self, body: bytes, budget: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        raise AssertionError("no call is made in these tests")

    async def aclose(self) -> None:
        self.closes += 1
        if self._fail_close:
            raise RuntimeError("the transport failed to close")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _can_bind(port: int) -> bool:
    """Whether a plain socket (no SO_REUSEPORT) can take ``port``: nobody else holds it."""
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def _refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) != 0


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port held by a listening socket for the test's length."""
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        yield holder.getsockname()[1]


def _settings(api: int, health: int, metrics: int) -> Settings:
    settings = make_settings()
    server = dataclasses.replace(
        settings.server, listen=f"{HOST}:{api}", health_listen=f"{HOST}:{health}"
    )
    return dataclasses.replace(
        settings, server=server, metrics=MetricsSettings(listen=f"{HOST}:{metrics}")
    )


@pytest.mark.parametrize("which", ["health", "metrics"])
async def test_a_start_that_fails_at_a_listener_closes_all_it_opened(
    taken: int, which: str
) -> None:
    """One listener's port is taken: every port bound before it is free again, the API server's
    included, and the upstream transport is closed, once."""
    ports = {"api": _free_port(), "health": _free_port(), "metrics": _free_port(), which: taken}
    transport = CountedTransport()
    server = AdapterServer(_settings(ports["api"], ports["health"], ports["metrics"]), transport)
    with pytest.raises(ConfigError, match="is in use"):
        await server.start()
    assert transport.closes == 1
    held = [name for name, port in ports.items() if name != which and not _can_bind(port)]
    assert held == [], f"still held after a failed start: {held}"


async def test_a_stop_closes_everything_though_one_close_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The transport's close raises: the stop still ends, every listener is closed, and the
    failure is one ERROR line."""
    api, health, metrics = _free_port(), _free_port(), _free_port()
    transport = CountedTransport(fail_close=True)
    server = AdapterServer(_settings(api, health, metrics), transport)
    await server.start()
    assert not _refuses(metrics)
    with caplog.at_level(logging.ERROR, logger="adapter.server"):
        await server.stop(grace=0)
    assert transport.closes == 1
    assert (_refuses(api), _refuses(health), _refuses(metrics)) == (True, True, True)
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in failures] == ["closing the upstream client failed"]
