"""The health probe: one ``grpc.health.v1`` Check of a running adapter, as a script would make it.

>>> str(await probe(probe_target(ServerSettings()), within=2))  # doctest: +SKIP
'127.0.0.1:50051: SERVING'

What ``nvp-adapter health`` runs, and so Docker's ``HEALTHCHECK``. The check is for the server as a
whole (service ``""``), which stays SERVING through an outage of the gateway: a probe must not
have a sidecar restarted for its upstream's fault.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapter.config import ListenAddress, ServerSettings
from adapter.core.errors import ConfigError

__all__ = ["Probe", "dial_target", "probe", "probe_target"]

_SERVING = health_pb2.HealthCheckResponse.SERVING
_CHANNEL_OPTIONS = [
    # HTTPS_PROXY in the environment is the way to the gateway; the adapter is local.
    ("grpc.enable_http_proxy", 0),
]


@dataclass(frozen=True)
class Probe:
    """What a probe saw: whether the server is SERVING, and in words what it answered or why not."""

    target: str
    serving: bool
    seen: str

    def __str__(self) -> str:
        return f"{self.target}: {self.seen}"


def dial_target(address: ListenAddress) -> str:
    """The grpc target that reaches a server listening on ``address`` from the same host.

    A wildcard host (``0.0.0.0``, ``::``) listens on loopback too, so loopback is dialled.
    """
    if address.path is not None:
        return str(address)
    try:
        ip = ipaddress.ip_address(address.host)
    except ValueError:  # a host name
        return str(address)
    if ip.is_unspecified:
        loopback = "::1" if ip.version == 6 else "127.0.0.1"
        return str(ListenAddress(loopback, address.port))
    return str(address)


def probe_target(server: ServerSettings) -> str:
    """Where the server answers health checks in plaintext: ``health_listen``, else ``listen``.

    Raises ``ConfigError`` when neither can be probed: the main listener speaks TLS (and
    ``health_listen`` is unset), or the address has port 0 (chosen when the server starts).
    """
    if server.health_address is not None:
        address, where = server.health_address, "server.health_listen"
    elif server.tls is None:
        address, where = server.address, "server.listen"
    else:
        raise ConfigError(
            "server.listen serves TLS and the health check speaks plaintext: set "
            "server.health_listen, or give --address",
            "server.listen",
        )
    if not address.is_unix and address.port == 0:
        message = f"{where} {str(address)!r} has port 0, chosen at start: give --address"
        raise ConfigError(message, where)
    return dial_target(address)


async def probe(target: str, *, within: float) -> Probe:
    """Ask ``target`` for the overall health status, waiting ``within`` seconds at most."""
    async with grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=within
            )
        except grpc.aio.AioRpcError as exc:
            return Probe(target, serving=False, seen=_failure(exc, within))
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return Probe(target, serving=reply.status == _SERVING, seen=status)


def _failure(exc: grpc.aio.AioRpcError, within: float) -> str:
    details = " ".join((exc.details() or "").split())  # grpc's words, on one line
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within {within:g} s"
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"unreachable ({details})"
    return f"{code.name} ({details})"
