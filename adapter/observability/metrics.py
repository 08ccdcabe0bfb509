"""Prometheus metrics (prometheus-client), served as text at ``/metrics`` on ``[metrics] listen``.

The gRPC names are those of the grpc-ecosystem interceptors (``grpc_server_started_total``,
``grpc_server_handled_total``, ``grpc_server_handling_seconds``), so dashboards made for them
work unchanged; the adapter's own are ``nvp_adapter_*``. A label only ever holds a name from the
proto or the code (a service, a method, a status code, an operation, an ErrorInfo reason), the
adapter's version or the gateway's host: never a secret, a merchant, a correlation id or a
session id, so no caller can add a series.

Each ``Metrics`` has its own registry (several servers in one process count apart), which also
holds the process collector (memory, CPU, file descriptors).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.aiohttp import make_aiohttp_handler

from adapter import version
from adapter.config import UpstreamSettings
from adapter.net.http_guard import start_guarded_app
from adapter.net.resource import AsyncResource

__all__ = ["Metrics", "MetricsListener", "upstream_label"]

log = logging.getLogger("adapter.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds; up to a minute, past the 30-second default upstream timeout."""


def upstream_label(settings: UpstreamSettings) -> str:
    """``embedded``, or the gateway's host name: never its URL, which may carry more."""
    return "embedded" if settings.is_embedded else urlsplit(settings.url).hostname or "unknown"


class Metrics:
    """Every metric the adapter exports, on a registry of its own."""

    def __init__(self, upstream: str) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[object, ...], Any] = {}
        ProcessCollector(registry=self.registry)
        rpc = ("grpc_service", "grpc_method")
        self._started = Counter(
            "grpc_server_started_total",
            "RPCs started on the server.",
            rpc,
            registry=self.registry,
        )
        self._handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, whatever their status code.",
            (*rpc, "grpc_code"),
            registry=self.registry,
        )
        self._handling = Histogram(
            "grpc_server_handling_seconds",
            "Time from an RPC's start to its status, in seconds.",
            rpc,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._attempts = Counter(
            "nvp_adapter_upstream_requests_total",
            "Upstream attempts: OK, or the attempt's ErrorInfo reason.",
            ("operation", "outcome"),
            registry=self.registry,
        )
        self._attempt_seconds = Histogram(
            "nvp_adapter_upstream_request_duration_seconds",
            "Time of one upstream attempt, from its start to the answer read, in seconds.",
            ("operation",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._reconciliations = Counter(
            "nvp_adapter_reconciliations_total",
            "Payments whose outcome was looked up after a lost answer or a refused repeat: "
            "FOUND, NOT_FOUND, UNKNOWN, REPLAYED, REUSED.",
            ("operation", "outcome"),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "nvp_adapter_upstream_in_flight",
            "Upstream attempts under way.",
            registry=self.registry,
        )
        self._circuit = Gauge(
            "nvp_adapter_circuit_open",
            "1 while the circuit breaker fails calls fast, else 0.",
            registry=self.registry,
        )
        Gauge(
            "nvp_adapter_build_info",
            "Always 1: the adapter's version and its upstream (embedded, or the gateway's host).",
            ("version", "upstream"),
            registry=self.registry,
        ).labels(version(), upstream).set(1)

    def rpc_started(self, method: str) -> None:
        self._series(self._started, *_service_method(method)).inc()

    def rpc_handled(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        service, name = _service_method(method)
        self._series(self._handled, service, name, code.name).inc()
        self._series(self._handling, service, name).observe(seconds)

    def attempt(self, operation: str, outcome: str, seconds: float) -> None:
        """One upstream attempt ended: ``outcome`` is ``OK`` or its ErrorInfo reason."""
        self._series(self._attempts, operation, outcome).inc()
        self._series(self._attempt_seconds, operation).observe(seconds)

    def reconciliation(self, operation: str, outcome: str) -> None:
        """A payment's transaction was looked up: ``outcome`` says what was found."""
        self._series(self._reconciliations, operation, outcome).inc()

    def _series(self, metric: Any, *labels: str) -> Any:
        """The child of ``metric`` for ``labels``, looked up once: ``labels()`` takes a lock and
        builds a key on every call, microseconds a call on the hot path. The keys are bounded:
        methods the server registered, status codes, and the code's operations and reasons."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def circuit(self, opened: bool) -> None:
        self._circuit.set(1 if opened else 0)


def _service_method(method: str) -> tuple[str, str]:
    """``/mpgs.gateway.v1.SessionService/CreateSession`` -> its service and method names."""
    service, _, name = method.lstrip("/").partition("/")
    return service, name


@dataclass(frozen=True)
class ScrapeLimits:
    """The ``/metrics`` listener's connection bounds: a scraper needs few connections and fast."""

    max_connections: int = 16
    request_timeout_seconds: float = 10.0
    keepalive_timeout_seconds: float = 30.0


class MetricsListener(AsyncResource):
    """``GET /metrics`` on ``host:port``, behind the same connection guard as every HTTP face."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        """Bind and serve; raises OSError when the address cannot be used."""
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(self._metrics.registry))
        self._runner, self.port = await start_guarded_app(
            app, self._host, self._port, ScrapeLimits(), logger=log
        )

    async def aclose(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
