"""Protocol plumbing that knows nothing of payments: a guarded aiohttp listener (connection
bounds, quiet refusals) used by the metrics listener and the embedded gateway's HTTP face, and the
wrapping of grpc.aio method handlers that every server interceptor uses."""

__all__: list[str] = []  # the modules are the public surface
