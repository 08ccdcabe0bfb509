"""The gRPC server: build, serve and stop (``runtime``), the RPC handlers (``service``),
listeners and their TLS, caller authentication, and ``--workers`` processes.

The package re-exports ``runtime``'s public names: ``from adapter.server import AdapterServer``.
"""

from adapter.server.runtime import (
    SERVING,
    AdapterServer,
    http_transport,
    serve,
)

__all__ = [
    "SERVING",
    "AdapterServer",
    "http_transport",
    "serve",
]
