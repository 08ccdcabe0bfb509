"""Where the gRPC server listens: TCP or a Unix socket, plaintext or TLS, within grpc's bounds.

``bind`` adds one listening port to a grpc.aio server and turns every way that can fail into one
``ConfigError`` line; ``server_options`` are grpc's own limits on messages and connections.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

import grpc

from adapter.config import ListenAddress, ServerSettings
from adapter.errors import ConfigError
from adapter.server_tls import ServerTls

__all__ = ["bind", "check_can_bind", "format_address", "server_options"]


def check_can_bind(host: str, port: int) -> None:
    """Raise the OSError a bind to ``host:port`` meets on every address the host resolves to.

    grpc reports a failed bind by writing its own log line to stderr and returning 0; probing
    first turns the common mistakes (port in use, unknown host) into one clear line instead.
    """
    if port == 0:
        return
    failure: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds
            try:
                probe.bind(address)
            except OSError as exc:
                failure = exc
                continue
            return
    if failure is not None:
        raise failure


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """grpc's own bounds on messages, connections and their lifetimes, from the settings."""
    ms = 1000
    limit = settings.max_message_bytes
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_seconds * ms)),
        ("grpc.keepalive_time_ms", int(settings.keepalive_seconds * ms)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * ms)),
        ("grpc.max_connection_idle_ms", int(settings.max_connection_idle_seconds * ms)),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * ms)),
        ("grpc.max_connection_age_grace_ms", int(settings.grace_seconds * ms)),
    ]


def bind(
    server: grpc.aio.Server, address: ListenAddress, where: str, tls: ServerTls | None = None
) -> tuple[str, int]:
    """Add a listening port; the address as bound (``unix:PATH``, or host and real port).

    A Unix socket is created mode 0660: reachable by the owner and the group, by no one else.
    """
    target = str(address)
    try:
        if address.path is not None:
            _remove_stale_socket(address.path)
        else:
            check_can_bind(address.host, address.port)
        old_umask = os.umask(0o117) if address.is_unix else None
        try:
            bound = (
                server.add_secure_port(target, tls.credentials())
                if tls is not None
                else server.add_insecure_port(target)
            )
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        if address.path is not None:
            os.chmod(address.path, 0o660)
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"{where}: cannot listen on {target}: {_why(exc)}") from None
    if not bound:
        raise ConfigError(f"{where}: cannot listen on {target}: address not available")
    if address.path is not None:
        return target, 0
    return format_address(address.host, bound), bound


def _remove_stale_socket(path: str) -> None:
    """Remove a Unix socket left by a process that is gone; refuse one that is still served."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "a file that is not a socket is in the way")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
            return
    raise OSError(errno.EADDRINUSE, "another process is serving on this socket")
