"""The adapter's core: the NVP codec, the schema that derives NVP names from the proto, the error
types, their translation into gRPC statuses, and the redaction of secrets.

It knows neither the server, the upstream client nor the embedded gateway: they import it.
"""

__all__: list[str] = []  # the modules are the public surface
