"""What the adapter tells its operators: log formats, Prometheus metrics, the access line per
call, and trace context (W3C propagation, with OpenTelemetry export when installed)."""

__all__: list[str] = []  # the modules are the public surface
