"""Where the health probe dials: the address a server listens on, seen from the same host."""

from __future__ import annotations

import pytest

from adapter.config import ServerSettings, TlsFiles
from adapter.core.errors import ConfigError
from adapter.probe import probe_target

TARGETS = {
    "listen": (ServerSettings(listen="127.0.0.1:50051"), "127.0.0.1:50051"),
    "health listener first": (
        ServerSettings(listen="127.0.0.1:50051", health_listen="127.0.0.1:50052"),
        "127.0.0.1:50052",
    ),
    "IPv4 wildcard on loopback": (
        ServerSettings(listen="127.0.0.1:50051", health_listen="0.0.0.0:50052"),
        "127.0.0.1:50052",
    ),
    "IPv6 wildcard on loopback": (
        ServerSettings(listen="127.0.0.1:50051", health_listen="[::]:50052"),
        "[::1]:50052",
    ),
    "IPv6 loopback": (ServerSettings(listen="[::1]:50051"), "[::1]:50051"),
    "host name as it is": (ServerSettings(listen="localhost:50051"), "localhost:50051"),
    "unix socket": (ServerSettings(listen="unix:///run/nvp/grpc.sock"), "unix:/run/nvp/grpc.sock"),
    "TLS listener, plaintext health listener": (
        ServerSettings(
            listen="127.0.0.1:50051", health_listen="127.0.0.1:50052", tls=TlsFiles("c", "k")
        ),
        "127.0.0.1:50052",
    ),
}


@pytest.mark.parametrize(("server", "target"), TARGETS.values(), ids=TARGETS.keys())
def test_the_probe_dials_where_the_server_answers(server: ServerSettings, target: str) -> None:
    """`health_listen` when set, else `listen`; a wildcard host is dialled on loopback."""
    assert probe_target(server) == target


def test_a_tls_listener_alone_cannot_be_probed() -> None:
    """The probe speaks plaintext, so TLS with no health listener is a ConfigError."""
    server = ServerSettings(listen="127.0.0.1:50051", tls=TlsFiles("c", "k"))
    with pytest.raises(ConfigError, match=r"set server\.health_listen, or give --address"):
        probe_target(server)


def test_port_0_cannot_be_probed() -> None:
    """Port 0 is chosen when the server starts; the configuration cannot say which it is."""
    with pytest.raises(ConfigError, match=r"^server.listen '127.0.0.1:0' has port 0"):
        probe_target(ServerSettings(listen="127.0.0.1:0"))
