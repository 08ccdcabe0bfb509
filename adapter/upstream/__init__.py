"""Everything about calling the gateway over HTTP, in one package.

- ``calls``: ``UpstreamClient``, one NVP operation with credentials, attempts, the retry policy,
  the circuit breaker and the bound on calls in flight; ``interpret`` reads a ``Reply``.
- ``retry``, ``breaker``: when an attempt is tried again; when calls fail fast.
- ``transport``: the ``Transport`` seam and ``HttpTransport``, the request's head and the route.
- ``proxy``: which proxy, from ``upstream.proxy`` or the environment.
- ``client``: the one HTTP/1.1 client and its pool, direct or through the proxy, every read
  bounded (CONTRACT §10).
- ``classify``: the one table from wire failures to the adapter's errors (``adapter.errors``).
"""

from __future__ import annotations

__all__: list[str] = []
