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
from adapter.core.errors import ConfigError
from adapter.net.addresses import format_address
from adapter.server.tls import ServerTls

__all__ = [
    "bind",
    "check_can_bind",
    "listen_error",
    "reserve_port",
    "server_options",
]


def check_can_bind(host: str, port: int, *, reuse_port: bool = False) -> None:
    """Raise the OSError a bind to ``host:port`` meets on every address the host resolves to.

    grpc reports a failed bind by writing its own log line to stderr and returning 0; probing
    first turns the common mistakes (port in use, unknown host) into one clear line instead.
    ``reuse_port``: probe as a worker binds, beside its siblings on the same port.
    """
    failure: OSError | None = None
    # Port 0 is probed too: the host must resolve to this machine's addresses whatever the port.
    for family, kind, proto, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                failure = exc
                continue
            return
    if failure is not None:
        raise failure


def reserve_port(address: ListenAddress, where: str) -> tuple[ListenAddress, socket.socket]:
    """Hold ``address``'s port for workers to share; the address with its real port, and the
    socket that holds it (close it when the workers are gone).

    The socket is bound with SO_REUSEPORT and never listens, so the kernel hands it no
    connection while the workers' listeners, SO_REUSEPORT too, bind beside it. Any other
    process's bind to the port fails, whether a plain one or another adapter's workers, which
    probe without SO_REUSEPORT first. Port 0 becomes one free port, the same for every worker.
    Raises ``ConfigError`` when the port is taken or the host is not this machine's.
    """
    try:
        check_can_bind(address.host, address.port)
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        holder = socket.socket(family, kind, proto)
        try:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            holder.bind(sockaddr)
        except OSError:
            holder.close()
            raise
    except OSError as exc:
        raise listen_error(where, address, exc) from None
    return ListenAddress(address.host, holder.getsockname()[1]), holder


def listen_error(where: str, address: ListenAddress, exc: BaseException) -> ConfigError:
    """The one line for a listener that cannot bind, whichever server failed (grpc, aiohttp):
    ``KEY: HOST:PORT is in use``, ``KEY: host name 'H' does not resolve``, else the system's
    reason. The address is shown as written, an IPv6 host in brackets."""
    if isinstance(exc, socket.gaierror):
        detail = "" if exc.errno == socket.EAI_NONAME else f" ({exc.strerror})"
        return ConfigError(f"{where}: host name {address.host!r} does not resolve{detail}", where)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return ConfigError(f"{where}: {address} is in use", where)
    why = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    return ConfigError(f"{where}: cannot listen on {address}: {why}", where)


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """grpc's own bounds on messages, connections and their lifetimes, from the settings."""
    ms = 1000
    limit = settings.max_message_bytes
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Off, so that a second server on a port in use fails, unless this is one of workers
        # that share the port by design.
        ("grpc.so_reuseport", int(settings.workers > 1)),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_seconds * ms)),
        ("grpc.keepalive_time_ms", int(settings.keepalive_seconds * ms)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * ms)),
        ("grpc.max_connection_idle_ms", int(settings.max_connection_idle_seconds * ms)),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * ms)),
        ("grpc.max_connection_age_grace_ms", int(settings.grace_seconds * ms)),
        # Calls grpc's core holds until the Python server takes them (one at a time): past the
        # soft limit it cancels some at random (a bare CANCELLED, before any adapter code could
        # give it a status or a line), past the hard one all. Room for a burst several times
        # max_concurrent_rpcs, which CallObserver then refuses with a status and a line each.
        ("grpc.server.max_pending_requests", _pending_calls(settings)),
        ("grpc.server.max_pending_requests_hard_limit", 2 * _pending_calls(settings)),
    ]


def _pending_calls(settings: ServerSettings) -> int:
    """grpc's soft bound on calls waiting for the server: 4x ``max_concurrent_rpcs``, at least
    grpc's own default (1000)."""
    return max(1000, 4 * settings.max_concurrent_rpcs)


def bind(
    server: grpc.aio.Server,
    address: ListenAddress,
    where: str,
    tls: ServerTls | None = None,
    *,
    reuse_port: bool = False,
) -> tuple[str, int]:
    """Add a listening port; the address as bound (``unix:PATH``, or host and real port).

    A Unix socket is created mode 0660: reachable by the owner and the group, by no one else.
    ``reuse_port``: the server shares the port with its sibling workers (``server_options``
    said so to grpc too).
    """
    target = str(address)
    try:
        if address.path is not None:
            _remove_stale_socket(address.path)
        else:
            check_can_bind(address.host, address.port, reuse_port=reuse_port)
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
        raise listen_error(where, address, exc) from None
    if not bound:
        raise ConfigError(f"{where}: cannot listen on {target}: address not available", where)
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
