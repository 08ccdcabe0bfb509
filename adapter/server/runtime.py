"""Build, bind, serve and stop the gRPC server.

>>> async with AdapterServer(load_settings()) as server:  # doctest: +SKIP
...     print(server.address)
...     await server.stop()

The server carries ``SessionService``, ``grpc.health.v1.Health`` (SERVING once started, NOT_SERVING
from the moment it starts to stop) and server reflection. Stopping refuses new calls, lets calls in
flight finish within the grace period, then closes the upstream pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from adapter.config import (
    ListenAddress,
    Settings,
    read_secret_file,
    token_digest,
)
from adapter.config.rotation import DEFAULT_INTERVAL_SECONDS, FileWatch, watch_password_files
from adapter.core.errors import ConfigError
from adapter.core.redaction import Secret
from adapter.net.interceptors import InterceptedHandlers, Interceptor
from adapter.net.resource import AsyncResource
from adapter.observability.access import CallObserver
from adapter.observability.metrics import Metrics, MetricsListener, upstream_label
from adapter.observability.tracing import TraceInterceptor, Tracing
from adapter.server.callers import CallerAuthentication, Callers
from adapter.server.listeners import bind, listen_error, server_options
from adapter.server.service import API_SERVICE_NAMES, api_services
from adapter.server.signals import stop_and_reload_signals
from adapter.server.tls import ServerTls
from adapter.upstream.calls import UpstreamClient
from adapter.upstream.exactly_once import PaymentCalls
from adapter.upstream.transport import Transport, gateway_transport

__all__ = ["SERVING", "AdapterServer", "http_transport", "serve"]

log = logging.getLogger("adapter.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
SERVICE_NAMES = (*API_SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)


def http_transport(settings: Settings) -> Transport:
    """The HTTP client for the configured gateway URL.

    Raises ``ConfigError`` when a CA bundle or client certificate cannot be loaded.
    """
    try:
        return gateway_transport(settings.upstream)
    except (OSError, ssl.SSLError) as exc:  # the files are named in the settings, not in exc
        raise ConfigError(
            f"cannot load the upstream TLS files: {getattr(exc, 'strerror', None) or exc}"
        ) from None


class CircuitHealth:
    """Reports the gateway's outage on the service's health status, never on the overall one.

    A sidecar must not be restarted for its upstream's outage, so ``""`` stays SERVING while
    each API service (``mpgs.gateway.v1.SessionService``, ``...PaymentService``) is NOT_SERVING
    for as long as the circuit is open and calls fail fast; it reads SERVING again once the
    cool-down ends and a call may probe the gateway.
    """

    def __init__(self, servicer: health.aio.HealthServicer, cooldown: float) -> None:
        self._servicer = servicer
        self._cooldown = cooldown
        self._timer: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def __call__(self, opened: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._report(opened=opened)
        if opened:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._cooldown, self._report)

    def _report(self, *, opened: bool = False) -> None:
        status = health_pb2.HealthCheckResponse.NOT_SERVING if opened else SERVING
        for service in API_SERVICE_NAMES:
            task = asyncio.ensure_future(self._servicer.set(service, status))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        """Stop the cool-down timer and let the last reports land."""
        if self._timer is not None:
            self._timer.cancel()
        await asyncio.gather(*self._pending)


class AdapterServer(AsyncResource):
    """The adapter's gRPC server as one ``async with`` resource.

    The transport comes from ``transport_factory`` when the server starts (the HTTP client by
    default; ``adapter.app`` plugs in the embedded gateway), or is ``transport`` itself: the seam
    tests use to put a misbehaving peer behind the adapter.
    """

    def __init__(
        self,
        settings: Settings,
        transport: Transport | None = None,
        *,
        transport_factory: Callable[[Settings], Transport] = http_transport,
        watch_interval: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self.settings = settings
        self._transport = transport
        self._transport_factory = transport_factory
        self.health = health.aio.HealthServicer()
        self.watch = FileWatch(watch_interval)
        self._resources = contextlib.AsyncExitStack()
        """What ``start`` opened, closed by ``stop`` in reverse."""
        self._circuit_health: CircuitHealth | None = None
        self._stopping = False
        self.address = ""
        self.port = 0
        self.health_address = ""
        self._client: UpstreamClient | None = None
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self.metrics: Metrics | None = None
        """The counters, when ``[metrics] listen`` is set; served at ``metrics_port``."""
        self._metrics_listener: MetricsListener | None = None
        self.metrics_port = 0
        self._drain_cut = asyncio.Event()

    async def start(self) -> None:
        """Bind and start serving; raise ``ConfigError`` if an address or a file cannot be used.

        Each resource is entered on one exit stack as it is opened: a failure at any step closes
        what was opened before it, in reverse, and leaves nothing listening or running.
        """
        server_settings = self.settings.server
        tls = ServerTls(server_settings.tls) if server_settings.tls is not None else None
        callers = Callers(self.settings.callers)
        metrics_address = self.settings.metrics.address
        if metrics_address is not None:
            self.metrics = Metrics(upstream_label(self.settings.upstream))
        observer = CallObserver(self.metrics, max_calls=server_settings.max_concurrent_rpcs)
        tracing = Tracing.from_environment(self.settings.upstream)
        async with contextlib.AsyncExitStack() as stack:
            transport = self._transport or self._transport_factory(self.settings)
            self._client = UpstreamClient(
                transport,
                self.settings.upstream,
                self.settings.merchants,
                on_circuit_change=self._on_circuit_change,
                metrics=self.metrics,
            )
            _close_on(stack, "the upstream client", self._client.aclose)
            if self.metrics is not None and metrics_address is not None:
                self._metrics_listener = await _listen_for_scrapes(self.metrics, metrics_address)
                self.metrics_port = self._metrics_listener.port
                _close_on(stack, "the metrics listener", self._metrics_listener.aclose)
            self._circuit_health = CircuitHealth(
                self.health, self.settings.upstream.breaker_cooldown_seconds
            )
            _close_on(stack, "the circuit's health reports", self._circuit_health.aclose)
            # Each gRPC server starts as soon as it is bound: one bound but never started holds
            # its port until the process ends, whatever closes it.
            shared = server_settings.workers > 1
            # No maximum_concurrent_rpcs here: CallObserver holds it, so a refused call has a line.
            server = grpc.aio.server(options=server_options(server_settings))
            interceptors: list[Interceptor] = [
                observer,  # outermost: it starts each call's context
                TraceInterceptor(tracing, API_SERVICE_NAMES),
                CallerAuthentication(callers),
            ]
            server.add_generic_rpc_handlers((self._handlers(self._client, interceptors),))
            self.address, self.port = bind(
                server, server_settings.address, "server.listen", tls, reuse_port=shared
            )
            await server.start()
            _close_on(stack, "the gRPC server", server.stop, 0)  # stop() stops it with grace first
            if (address := server_settings.health_address) is not None:
                health_server = grpc.aio.server(options=server_options(server_settings))
                health_handlers = InterceptedHandlers([observer])
                health_pb2_grpc.add_HealthServicer_to_server(self.health, health_handlers)
                health_server.add_generic_rpc_handlers((health_handlers,))
                self.health_address, _ = bind(
                    health_server, address, "server.health_listen", reuse_port=shared
                )
                await health_server.start()
                _close_on(stack, "the health server", health_server.stop, 0)
            tracing.start()
            _close_on(stack, "tracing", tracing.aclose)  # the last spans, of the calls just ended
            self._watch_files(self._client, callers, tls)
            watching = asyncio.create_task(self.watch.run())
            _close_on(stack, "the file watch", _cancelled, watching)
            for service in ("", *API_SERVICE_NAMES):
                await self.health.set(service, SERVING)
            self._server = server
            self._resources = stack.pop_all()
        security = "mutual TLS" if tls is not None and tls.mutual else "TLS" if tls else "plaintext"
        callers_note = f"{len(self.settings.callers)} callers" if callers.enabled else "no callers"
        health_note = f", health only on {self.health_address}" if self.health_address else ""
        log.info(
            "listening on %s (%s, %s%s; %s)",
            self.address,
            security,
            callers_note,
            health_note,
            self.settings.describe(),
        )

    def _handlers(
        self, client: UpstreamClient, interceptors: list[Interceptor]
    ) -> InterceptedHandlers:
        """The API's services (sessions, payments, health, reflection), each method intercepted
        once."""
        handlers = InterceptedHandlers(interceptors)
        max_message_bytes = self.settings.server.max_message_bytes
        payments = PaymentCalls(
            client, self.settings.upstream.reconcile_reserve_seconds, self.metrics
        )
        handlers.add_generic_rpc_handlers(
            api_services(client, payments, max_message_bytes=max_message_bytes)
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, handlers)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(SERVICE_NAMES), handlers
        )
        return handlers

    def _watch_files(self, client: UpstreamClient, callers: Callers, tls: ServerTls | None) -> None:
        """Every secret or certificate that comes from a file is read again when it changes."""
        watch_password_files(
            self.watch,
            self.settings.merchants,
            lambda merchant, password: client.replace_password(merchant, Secret(password)),
        )
        for name, caller in self.settings.callers.items():
            if caller.token_file is not None:
                self.watch.add(
                    f"callers.{name}.token_file",
                    [caller.token_file],
                    partial(_reload_token, callers, name, caller.token_file),
                )
        if tls is not None:
            files = tls.files
            paths = [files.cert_file, files.key_file, *filter(None, [files.client_ca_file])]
            self.watch.add("server.tls", paths, tls.load)

    def _on_circuit_change(self, opened: bool) -> None:
        if self._circuit_health is not None:
            self._circuit_health(opened)
        if self.metrics is not None:
            self.metrics.circuit(opened)

    def reload(self) -> None:
        """Read every watched file again now (SIGHUP); a file that fails keeps its old value."""
        log.info("reloading secrets and certificates")
        self.watch.reload()

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, drain, refuse new calls, finish calls in flight, close the pool.

        ``grace`` defaults to the configured grace period; 0 cancels calls in flight at once.
        A graceful stop (``grace`` None) first drains: health reads NOT_SERVING at once while
        calls are still taken for ``server.drain_seconds``, so that load balancers and probes
        see the pod leave before its port closes. Safe to call twice; a second call with
        ``grace=0`` cuts a graceful stop (its drain included) short, and the first call
        finishes the stop.
        """
        server = self._server
        if server is None:
            return
        if self._stopping:  # a stop is under way: cut its grace short if asked, and leave it be
            if grace == 0:
                self._drain_cut.set()
                await server.stop(0)
            return
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        drain = self.settings.server.drain_seconds
        if grace is None and drain > 0:
            log.info("draining for %gs: health NOT_SERVING, calls still accepted", drain)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain_cut.wait(), drain)
        await server.stop(self.settings.server.grace_seconds if grace is None else grace)
        self._server = self._client = self._metrics_listener = None
        # The rest in reverse order of opening; one that fails to close is logged and the others
        # are still closed.
        await self._resources.aclose()
        self._stopping = False
        log.info("stopped")

    async def aclose(self) -> None:
        """A graceful ``stop``: what leaving ``async with`` does."""
        await self.stop()

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


def _close_on(
    stack: contextlib.AsyncExitStack,
    what: str,
    close: Callable[..., Awaitable[object]],
    *args: object,
) -> None:
    """Put ``close(*args)`` on ``stack``; when it fails, log it once and let the rest close."""

    async def closing() -> None:
        try:
            await close(*args)
        except Exception:
            log.exception("closing %s failed", what)

    stack.push_async_callback(closing)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _listen_for_scrapes(metrics: Metrics, address: ListenAddress) -> MetricsListener:
    listener = MetricsListener(metrics, address.host, address.port)
    try:
        await listener.start()
    except OSError as exc:
        raise listen_error("metrics.listen", address, exc) from None
    return listener


def _reload_token(callers: Callers, name: str, path: str) -> None:
    where = f"callers.{name}.token_file"
    callers.replace_token(name, token_digest(read_secret_file(path, where), where))


async def serve(server: AdapterServer, on_ready: Callable[[AdapterServer], None]) -> None:
    """Run until SIGTERM or SIGINT: the first stops gracefully, a second stops at once.

    SIGHUP reads every secret and certificate file again, at once.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    hard_stop: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        if not stopping.is_set():
            log.info("signal received: stopping gracefully (send it again to stop at once)")
            stopping.set()
        elif not hard_stop:
            log.info("second signal: stopping at once")
            hard_stop.append(loop.create_task(server.stop(grace=0)))

    try:
        with stop_and_reload_signals(on_signal, server.reload):
            await server.start()
            on_ready(server)
            await stopping.wait()
            await server.stop()
    finally:
        with contextlib.suppress(Exception):
            await server.stop(grace=0)
        for task in hard_stop:
            await task
