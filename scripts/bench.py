"""The adapter side by side with a bare grpc.aio server built from the same proto: CPU per call,
calls per second, latency and RSS, each server a fresh process per run.

Usage: .venv/bin/python scripts/bench.py [--seconds 5] [--warmup 1] [--rounds 3]
           [--concurrency 1,32] [--servers bare,embedded,http,https] [--no-access-log]
       .venv/bin/python scripts/bench.py --observability [--servers embedded,http] ...
       .venv/bin/python scripts/bench.py --memory 100000 [--servers embedded,http]
       .venv/bin/python scripts/bench.py --workers 1,2 [--concurrency 32] ...

The servers, each started on loopback port 0 for one run and stopped with SIGTERM after it:

- **bare**: a grpc.aio server whose CreateSession returns a constant CreateSessionResponse, from
  the generated stubs of the client distribution (``nvp_adapter_client``) and nothing of the
  adapter;
- **embedded**: ``nvp-adapter serve`` on the in-process embedded gateway;
- **http**: ``nvp-adapter serve`` against ``nvp-adapter gateway`` over loopback HTTP;
- **https**: the same over HTTPS, with trustme certificates (``[gateway.tls]`` on the gateway,
  ``upstream.ca_file`` on the adapter).

The adapter runs in its default configuration: log level INFO, so every call writes its access
line (text, to a file; the run fails unless there is one per call), and no metrics.
``--no-access-log`` runs it with ``--log-level warning`` instead, so a success writes no access
line. The load comes from a second process (this script's ``_load`` mode): a grpc.aio client
with N calls in flight on one channel for ``--warmup`` seconds, then ``--seconds`` measured
seconds. Over the measured window it reads the server process's CPU time (user + system of all
its threads, from /proc/PID/stat); the gateway process of http and https is read separately and
not counted in the server's. Each round runs every server at every concurrency, in an order
rotated from round to round; each round's line gives every server's CPU per call as a ratio to
bare in that round, and the report gives the medians across rounds, each ratio to bare as the
median of the ratios within each round (neighbouring runs share the machine's load of the
moment), with the smallest and the largest of them: the spread across rounds.

``--observability`` runs each adapter of ``--servers`` (default embedded) four ways: with
``--log-level warning`` and no metrics (neither on), with ``[metrics] listen`` (scraped at the
end, so the counters were kept), with ``--log-level info --log-format json`` (an access line per
call, to a file), and with both; the ratios are to the same adapter with neither on.

``--workers 1,2`` runs ``nvp-adapter serve --workers N`` on ``nvp-adapter gateway`` over HTTP
(workers refuse the embedded upstream: each would have its own) for each N (1 to 8), in rounds
rotated as above, with the load spread over WORKER_CHANNELS channels of their own
connection each (``grpc.use_local_subchannel_pool``), the calls in flight spread over them: the
kernel spreads connections, not calls, over SO_REUSEPORT workers, so one channel would reach one
worker. Every N gets the same load, 1 included. CPU per call and RSS are summed over the
supervisor and its workers (its children, from /proc); each round's line gives the workers' shares
of that CPU, which show how the kernel spread the connections. The ratios are to the smallest N.

``--memory CALLS`` runs each of ``--servers`` (default embedded and http) for CALLS calls at 32 in
flight, RetrieveSession of one session (CreateSession would fill the embedded gateway's session
store by design: see ``counted_load``), and samples the adapter's RSS every CALLS/100 calls after
a warm-up of CALLS/10, while all calls are in flight. Growth is the lowest sample of the last
quarter against the lowest of the first quarter, as ``scripts/soak.py`` measures it: RSS rises
and falls back in batches without any leak, while a leak raises the floor.

Exit status: 0; 1 when a call failed, a process did not exit 0 on SIGTERM, or RSS grew past
``--max-rss-growth``; 2 for a usage mistake.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from children import (
    ADAPTER,
    START_TIMEOUT,
    Child,
    child_environment,
    children_of,
    cpu_seconds,
    kill_all,
    rss_bytes,
    start,
    stop_all,
)

from nvp_adapter_client import session_service_pb2 as pb
from nvp_adapter_client import session_service_pb2_grpc

SCRIPT = Path(__file__).resolve()
MERCHANT = "TESTMERCHANT"
SERVERS = ("bare", "embedded", "http", "https")
MEMORY_CONCURRENCY = 32
WORKER_CHANNELS = 8  # --workers: connections the calls in flight are spread over
MAX_BENCH_WORKERS = 8
CALL_TIMEOUT = 10.0
CLIENT_SLACK = 60.0  # the load process's own start and report, over the time it was given
MIB = 1024 * 1024


# --- measuring a process from /proc ----------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence; 0.0 when it is empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


# --- the bare server (``_bare``) ---------------------------------------------------------------

BARE_RESPONSE = pb.CreateSessionResponse(
    merchant=MERCHANT,
    result=pb.RESULT_SUCCESS,
    session=pb.Session(
        id="SESSION0002W4FJ1QAIF5YLP6C22J28",
        update_status=pb.SESSION_UPDATE_STATUS_NO_UPDATE,
        version="5a038a553d",
    ),
)  # the adapter's answer to the same request, with the embedded gateway's shape of values


class BareService(session_service_pb2_grpc.SessionServiceServicer):
    """CreateSession answers a constant response; the other methods are not part of the bench."""

    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateSessionResponse:
        return BARE_RESPONSE

    async def UpdateSession(
        self, request: pb.UpdateSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.UpdateSessionResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the bench")

    async def RetrieveSession(
        self, request: pb.RetrieveSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RetrieveSessionResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the bench")


async def serve_bare() -> None:
    """Serve BareService on loopback port 0 until SIGTERM or SIGINT; the first line names it."""
    server = grpc.aio.server()
    session_service_pb2_grpc.add_SessionServiceServicer_to_server(BareService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(f"bare server listening on 127.0.0.1:{port} (constant CreateSessionResponse)", flush=True)
    await stopping.wait()
    await server.stop(1.0)


# --- the load (``_load`` and ``_memory``) ------------------------------------------------------


async def _ready_stub(
    channel: grpc.aio.Channel,
) -> session_service_pb2_grpc.SessionServiceAsyncStub:
    await asyncio.wait_for(channel.channel_ready(), START_TIMEOUT)
    return session_service_pb2_grpc.SessionServiceStub(channel)


async def _call(
    stub: session_service_pb2_grpc.SessionServiceAsyncStub, request: pb.CreateSessionRequest
) -> str | None:
    """One CreateSession; None when it succeeded with a session, else what went wrong."""
    try:
        response = await stub.CreateSession(request, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return None if response.session.id else "WRONG_ANSWER"


async def timed_load(
    target: str,
    concurrency: int,
    warmup: float,
    seconds: float,
    pids: Sequence[int],
    *,
    channels: int = 1,
) -> dict[str, Any]:
    """``concurrency`` calls in flight for ``warmup`` then ``seconds`` seconds, spread over
    ``channels`` channels (more than one: each with a connection of its own); the report: the
    calls that ended in the measured window, their latencies, the CPU seconds ``pids`` spent in
    it, and every call made and failed, warm-up included."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    made = 0
    request = pb.CreateSessionRequest(merchant=MERCHANT)
    # A channel shares its connection with every channel of the same target and arguments unless
    # it has a subchannel pool of its own.
    options = [("grpc.use_local_subchannel_pool", 1)] if channels > 1 else None
    async with contextlib.AsyncExitStack() as stack:
        stubs = [
            await _ready_stub(
                await stack.enter_async_context(grpc.aio.insecure_channel(target, options))
            )
            for _ in range(channels)
        ]
        measure_from = time.perf_counter() + warmup
        stop_at = measure_from + seconds

        async def worker(stub: session_service_pb2_grpc.SessionServiceAsyncStub) -> None:
            nonlocal made
            while (began := time.perf_counter()) < stop_at:
                failure = await _call(stub, request)
                ended = time.perf_counter()
                made += 1
                if failure is not None:
                    errors[failure] += 1
                if ended >= measure_from:
                    latencies.append(ended - began)

        async def window_opens() -> tuple[float, list[float]]:
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            return time.perf_counter(), [cpu_seconds(pid) for pid in pids]

        opening = asyncio.create_task(window_opens())
        await asyncio.gather(*(worker(stubs[n % channels]) for n in range(concurrency)))
        opened, cpu_before = await opening
        elapsed = time.perf_counter() - opened
        cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before, strict=True)]
    latencies.sort()
    return {
        "calls": len(latencies),
        "made": made,
        "errors": dict(errors),
        "seconds": elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "cpu_seconds": cpu,
    }


async def _retrieve(
    stub: session_service_pb2_grpc.SessionServiceAsyncStub, request: pb.RetrieveSessionRequest
) -> str | None:
    """One RetrieveSession; None when it answered the session asked for, else what went wrong."""
    try:
        response = await stub.RetrieveSession(request, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return None if response.session.id == request.session.id else "WRONG_ANSWER"


async def counted_load(
    target: str, *, calls: int, warmup: int, sample_every: int, rss_pid: int, time_limit: float
) -> dict[str, Any]:
    """One CreateSession, then ``calls`` RetrieveSession calls of that session with
    MEMORY_CONCURRENCY in flight; ``rss_pid``'s RSS sampled every ``sample_every`` calls from
    ``warmup`` on while every worker still has calls to make; no new call starts after
    ``time_limit`` seconds.

    Not CreateSession: the embedded gateway keeps every session it creates for 15 minutes (up to
    50,000 a merchant, then SERVER_BUSY), so that RSS would grow by design. A retrieve takes the
    same way through the adapter (NVP encoding, the upstream exchange, decoding, the response) and
    stores nothing.
    """
    errors: Counter[str] = Counter()
    samples: list[int] = []
    issued = done = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = await _ready_stub(channel)
        created = await stub.CreateSession(
            pb.CreateSessionRequest(merchant=MERCHANT), timeout=CALL_TIMEOUT
        )
        request = pb.RetrieveSessionRequest(
            merchant=MERCHANT, session=pb.SessionRef(id=created.session.id)
        )
        began = time.perf_counter()
        stop_at = began + time_limit

        async def worker() -> None:
            nonlocal issued, done
            while issued < calls and time.perf_counter() < stop_at:
                issued += 1
                failure = await _retrieve(stub, request)
                if failure is not None:
                    errors[failure] += 1
                done += 1
                if (
                    done >= warmup
                    and (done - warmup) % sample_every == 0
                    and calls - done >= MEMORY_CONCURRENCY
                ):
                    samples.append(rss_bytes(rss_pid))

        await asyncio.gather(*(worker() for _ in range(MEMORY_CONCURRENCY)))
        elapsed = time.perf_counter() - began
    return {"calls": done, "errors": dict(errors), "seconds": elapsed, "rss_samples": samples}


# --- the servers' processes --------------------------------------------------------------------


async def run_load(argv: Sequence[str], limit: float) -> dict[str, Any]:
    """This script's load mode run with ``argv``: its report. Killed after ``limit`` seconds."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_environment(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"the load exited {proc.returncode}:\n{err.decode(errors='replace')}")
    report: dict[str, Any] = json.loads(out)
    return report


# --- what runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """One server as it is run: its kind (one of SERVERS) and what observability it has on.

    ``access`` is an access line per call; ``observed`` marks the variants of
    ``--observability``, which are named by what they have on and write their lines as JSON.
    """

    kind: str
    metrics: bool = False
    access: bool = True  # the adapter's default: INFO, a line per call
    workers: int = 0  # serve --workers N; 0: the flag left out
    observed: bool = False

    @property
    def name(self) -> str:
        if self.workers:
            return f"workers-{self.workers}"
        if not self.observed:
            return self.kind
        extra = {(True, False): "+metrics", (False, True): "+access", (True, True): "+both"}
        return self.kind + extra.get((self.metrics, self.access), "")

    @property
    def logging(self) -> list[str]:
        """The adapter's logging flags: none for its default (INFO, text), ``--log-level
        warning`` for no access line on a success, JSON lines for ``--observability``."""
        if not self.access:
            return ["--log-level", "warning"]
        return ["--log-level", "info", "--log-format", "json"] if self.observed else []

    def access_lines(self, stderr: str) -> int:
        """How many access lines the adapter (and its workers) wrote in ``stderr``."""
        if self.observed:
            return stderr.count('"event": "rpc"')
        return len(re.findall(r" INFO adapter\.access rpc rpc=", stderr))

    @property
    def has_gateway(self) -> bool:
        return self.kind in {"http", "https"}


@dataclass
class Run:
    """What one run of one setup at one concurrency measured."""

    calls: int
    errors: dict[str, int]
    calls_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_call: float
    gateway_us_per_call: float | None
    rss_mib: float
    exits: dict[str, int]
    worker_shares: list[float] = field(default_factory=list)  # of the CPU, with --workers N > 1

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(code != 0 for code in self.exits.values())


@dataclass
class Workdir:
    """The files every run shares: the test CA and the gateway's certificate, written once."""

    path: Path
    ca_file: Path = field(init=False)
    gateway_config: Path = field(init=False)

    def __post_init__(self) -> None:
        import trustme  # noqa: PLC0415 (here, not at the top: the bare server never loads it)

        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = self.path / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert, key = self.path / "gateway.crt", self.path / "gateway.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        self.gateway_config = self.path / "gateway-tls.toml"
        self.gateway_config.write_text(
            f"[gateway.tls]\ncert_file = {json.dumps(str(cert))}\n"
            f"key_file = {json.dumps(str(key))}\n"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_setup(
    setup: Setup, workdir: Workdir, children: list[Child]
) -> tuple[Child, Child | None, int | None]:
    """Start the setup's gateway (if any) and server; the server, the gateway and the metrics
    port (if metrics are on)."""
    if setup.kind == "bare":
        return await start("bare", [sys.executable, str(SCRIPT), "_bare"], children), None, None
    gateway = None
    lines = []
    if setup.has_gateway:
        tls = ["--config", str(workdir.gateway_config)] if setup.kind == "https" else []
        gateway = await start(
            "gateway",
            [*ADAPTER, "gateway", "--listen", "127.0.0.1:0", "--log-level", "warning", *tls],
            children,
        )
        lines += [
            "[upstream]",
            f'url = "{setup.kind}://{gateway.address}"',
            *([f"ca_file = {json.dumps(str(workdir.ca_file))}"] if setup.kind == "https" else []),
        ]
    metrics_port = free_port() if setup.metrics else None
    if metrics_port is not None:
        lines += ["[metrics]", f'listen = "127.0.0.1:{metrics_port}"']
    config = workdir.path / f"{setup.name}.toml"
    config.write_text("".join(f"{line}\n" for line in lines))
    server = await start(
        "adapter",
        [
            *ADAPTER,
            "serve",
            *(["--workers", str(setup.workers)] if setup.workers else []),
            "--listen",
            "127.0.0.1:0",
            "--config",
            str(config),
            *setup.logging,
        ],
        children,
    )
    return server, gateway, metrics_port


async def counted_by_metrics(port: int) -> float:
    """The OK CreateSession calls the adapter's /metrics counted."""
    import aiohttp  # noqa: PLC0415 (here, not at the top: the bare server never loads it)

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    match = re.search(
        r'^grpc_server_handled_total\{grpc_code="OK",grpc_method="CreateSession",[^}]*\} (\S+)$',
        text,
        re.MULTILINE,
    )
    return float(match[1]) if match else 0.0


async def run_setup(
    setup: Setup, concurrency: int, args: argparse.Namespace, workdir: Workdir
) -> Run:
    """One fresh run of ``setup`` at ``concurrency`` in flight."""
    children: list[Child] = []
    try:
        server, gateway, metrics_port = await start_setup(setup, workdir, children)
        # serve --workers N > 1: the supervisor and its workers, all serving when it printed
        # its line; their CPU and RSS are the server's.
        workers = children_of(server.proc.pid) if setup.workers > 1 else []
        if len(workers) != (setup.workers if setup.workers > 1 else 0):
            raise RuntimeError(f"{setup.name}: {len(workers)} worker processes found")
        served = [server.proc.pid, *workers]
        pids = served + ([gateway.proc.pid] if gateway else [])
        report = await run_load(
            [
                "_load",
                "--target",
                server.address,
                "--concurrency",
                str(concurrency),
                "--warmup",
                str(args.warmup),
                "--seconds",
                str(args.seconds),
                "--pids",
                ",".join(map(str, pids)),
                "--channels",
                str(WORKER_CHANNELS if setup.workers else 1),
            ],
            args.warmup + args.seconds + CALL_TIMEOUT + CLIENT_SLACK,
        )
        rss = sum(rss_bytes(pid) for pid in served)
        made, errors = int(report["made"]), dict(report["errors"])
        if metrics_port is not None:  # the counters were kept: the scrape shows every call
            counted = await counted_by_metrics(metrics_port)
            if counted < made - sum(errors.values()):
                raise RuntimeError(f"{setup.name}: /metrics counts {counted:.0f} of {made} calls")
        exits = await stop_all(children)
        access_lines = setup.access_lines(server.stderr_text()) if setup.access else 0
    finally:
        await kill_all(children)
    if setup.access and access_lines != made:
        raise RuntimeError(f"{setup.name}: {access_lines} access lines for {made} calls")
    calls = max(1, int(report["calls"]))
    cpu = [float(seconds) for seconds in report["cpu_seconds"]]
    server_cpu = sum(cpu[: len(served)])
    worker_cpu = cpu[1 : len(served)]
    return Run(
        calls=int(report["calls"]),
        errors=errors,
        calls_per_second=report["calls"] / report["seconds"],
        p50_ms=float(report["p50_ms"]),
        p99_ms=float(report["p99_ms"]),
        cpu_us_per_call=server_cpu / calls * 1e6,
        gateway_us_per_call=cpu[len(served)] / calls * 1e6 if len(cpu) > len(served) else None,
        rss_mib=rss / MIB,
        exits=exits,
        worker_shares=[seconds / max(sum(worker_cpu), 1e-9) for seconds in worker_cpu],
    )


# --- rounds and the report ---------------------------------------------------------------------


def setups_for(args: argparse.Namespace) -> list[Setup]:
    if args.workers:
        return [
            Setup("http", access=not args.no_access_log, workers=count) for count in args.workers
        ]
    if not args.observability:
        # bare writes no access line of any kind: it is the baseline, not the adapter.
        return [
            Setup(kind, access=kind != "bare" and not args.no_access_log) for kind in args.servers
        ]
    return [
        Setup(kind, metrics=metrics, access=access, observed=True)
        for kind in args.servers
        for metrics, access in ((False, False), (True, False), (False, True), (True, True))
    ]


def configuration(args: argparse.Namespace) -> str:
    """The report's line on how the adapter was configured."""
    if args.observability:
        return (
            "adapter: four ways, compared with each other: --log-level warning and no metrics; "
            "[metrics] listen; --log-level info --log-format json (an access line per call, to a "
            "file); both"
        )
    if args.no_access_log:
        return (
            "adapter: --no-access-log: --log-level warning, so a success writes no access line; "
            "no metrics"
        )
    return (
        "adapter: the default configuration: log level INFO, an access line per call (text, to "
        "a file); no metrics"
    )


def baseline_of(setup: Setup, setups: Sequence[Setup], args: argparse.Namespace) -> Setup | None:
    """What ``setup`` is compared with: the fewest workers, the same adapter with both off, or
    bare; None if absent."""
    if args.workers:
        return setups[0]
    base = (
        Setup(setup.kind, access=False, observed=True)
        if args.observability
        else Setup("bare", access=False)
    )
    return base if base in setups else None


def describe_run(run: Run, base: Run | None = None) -> str:
    """One run in its round's line; with ``base``, the CPU per call as a ratio to it."""
    text = f"{run.calls_per_second:6.0f}/s {run.cpu_us_per_call:5.0f} us"
    if base is not None:
        text += f" {ratio(run.cpu_us_per_call, base.cpu_us_per_call):.2f}x"
    if run.worker_shares:
        text += " (CPU " + "/".join(f"{share:.0%}" for share in run.worker_shares) + ")"
    if run.errors:
        text += " ERRORS " + ",".join(f"{code}:{n}" for code, n in sorted(run.errors.items()))
    if any(code != 0 for code in run.exits.values()):
        text += " EXIT " + ",".join(f"{name}:{code}" for name, code in run.exits.items())
    return text


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return (
        f"{len(os.sched_getaffinity(0))} cores ({model}), Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}"
    )


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def ratio(value: float, base: float) -> float:
    return value / base if base > 0 else float("nan")


def print_table(
    concurrency: int,
    setups: Sequence[Setup],
    runs: dict[tuple[str, int], list[Run]],
    bases: dict[str, Setup | None],
) -> None:
    rounds = len(runs[(setups[0].name, concurrency)])
    print(f"\n{concurrency} in flight, medians of {rounds} round{'s' * (rounds > 1)}:")
    width = max(len(setup.name) for setup in setups) + 2
    print(
        f"{'server':{width}}{'calls/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU us/call':>13}"
        f"{'gateway us/call':>17}{'RSS MiB':>9}{'CPU/call ratio':>16}{'calls/s ratio':>15}"
    )
    for setup in setups:
        mine = runs[(setup.name, concurrency)]
        gateway = [run.gateway_us_per_call for run in mine if run.gateway_us_per_call is not None]
        base = bases[setup.name]
        cpu_ratio = rate_ratio = "-"
        if base is not None:
            theirs = runs[(base.name, concurrency)]
            cpu_ratio = f"{median_ratio(mine, theirs, lambda run: run.cpu_us_per_call):.2f}x"
            rate_ratio = f"{median_ratio(mine, theirs, lambda run: run.calls_per_second):.2f}x"
        print(
            f"{setup.name:{width}}"
            f"{statistics.median(run.calls_per_second for run in mine):8.0f}"
            f"{statistics.median(run.p50_ms for run in mine):8.2f}"
            f"{statistics.median(run.p99_ms for run in mine):8.2f}"
            f"{statistics.median(run.cpu_us_per_call for run in mine):13.1f}"
            + (f"{statistics.median(gateway):17.1f}" if gateway else f"{'-':>17}")
            + f"{statistics.median(run.rss_mib for run in mine):9.1f}"
            f"{cpu_ratio:>16}{rate_ratio:>15}"
        )


def round_ratios(
    mine: Sequence[Run], theirs: Sequence[Run], value: Callable[[Run], float]
) -> list[float]:
    """The ratio within each round, in the order of the rounds."""
    return [ratio(value(a), value(b)) for a, b in zip(mine, theirs, strict=True)]


def median_ratio(
    mine: Sequence[Run], theirs: Sequence[Run], value: Callable[[Run], float]
) -> float:
    """The median, across rounds, of the ratio within each round."""
    return statistics.median(round_ratios(mine, theirs, value))


def spread(ratios: Sequence[float]) -> str:
    """``median 1.21x, min 1.10x, max 1.30x over 3 rounds``: the ratios' median and range."""
    rounds = len(ratios)
    return (
        f"median {statistics.median(ratios):.2f}x, min {min(ratios):.2f}x, "
        f"max {max(ratios):.2f}x over {rounds} round{'s' * (rounds > 1)}"
    )


async def bench(args: argparse.Namespace) -> int:
    setups = setups_for(args)
    bases = {setup.name: baseline_of(setup, setups, args) for setup in setups}

    def base_run(setup: Setup, done: dict[str, Run]) -> Run | None:
        base = bases[setup.name]
        return None if base in (None, setup) else done[base.name]

    runs: dict[tuple[str, int], list[Run]] = {
        (setup.name, concurrency): [] for setup in setups for concurrency in args.concurrency
    }
    print(f"machine: {machine()}")
    print(f"command: {shlex.join(['python', 'scripts/bench.py', *sys.argv[1:]])}")
    print(
        f"{args.seconds:g} s measured per run after {args.warmup:g} s of warm-up; "
        f"{args.rounds} round{'s' * (args.rounds > 1)}, the order rotated every round; "
        "each server a fresh process per run"
    )
    print(configuration(args))
    if args.workers:
        print(
            f"serve --workers N on nvp-adapter gateway over HTTP; the calls in flight spread over "
            f"{WORKER_CHANNELS} connections for every N; CPU and RSS summed over the supervisor "
            "and its workers, (CPU a/b) the workers' shares"
        )
    print(f"load average at start: {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="nvp-adapter-bench-") as tmp:
        workdir = Workdir(Path(tmp))
        for number in range(args.rounds):
            shift = number % len(setups)
            order = setups[shift:] + setups[:shift]
            for concurrency in args.concurrency:
                done = {
                    setup.name: await run_setup(setup, concurrency, args, workdir)
                    for setup in order
                }
                for name, run in done.items():
                    runs[(name, concurrency)].append(run)
                print(
                    f"round {number + 1}, {concurrency} in flight: "
                    + " | ".join(
                        f"{setup.name} {describe_run(done[setup.name], base_run(setup, done))}"
                        for setup in setups
                    ),
                    flush=True,
                )
    for concurrency in args.concurrency:
        print_table(concurrency, setups, runs, bases)
    print(f"\nload average at end: {load_average()}")
    compared = [setup for setup in setups if bases[setup.name] not in (None, setup)]
    if compared:
        print("ratios (each round's ratio: their median, the smallest and the largest):")
    measures: list[tuple[str, Callable[[Run], float]]] = [
        ("CPU per call", lambda run: run.cpu_us_per_call),
        ("calls/s", lambda run: run.calls_per_second),
    ]
    for label, value in measures:
        for concurrency in args.concurrency:
            for setup in compared:
                base = bases[setup.name]
                assert base is not None  # noqa: S101 (compared holds only setups with a base)
                mine, theirs = runs[(setup.name, concurrency)], runs[(base.name, concurrency)]
                print(
                    f"{setup.name}/{base.name} {label} at {concurrency} in flight: "
                    + spread(round_ratios(mine, theirs, value))
                )
    failed = [
        f"{name} at {concurrency}"
        for (name, concurrency), mine in runs.items()
        if any(run.failed for run in mine)
    ]
    print("result: " + (f"FAIL (failed calls or exits: {', '.join(failed)})" if failed else "ok"))
    return 1 if failed else 0


# --- memory ------------------------------------------------------------------------------------


async def memory(args: argparse.Namespace) -> int:
    calls = args.memory
    warmup, sample_every = calls // 10, max(1, calls // 100)
    print(f"machine: {machine()}")
    print(f"command: {shlex.join(['python', 'scripts/bench.py', *sys.argv[1:]])}")
    print(configuration(args))
    print(
        f"{calls} RetrieveSession calls of one session per server at {MEMORY_CONCURRENCY} in "
        "flight (CreateSession would fill the embedded session store by design); RSS sampled "
        f"every {sample_every} calls after a warm-up of {warmup}; growth from the lowest sample "
        "of the first quarter to the lowest of the last"
    )
    print(f"load average at start: {load_average()}", flush=True)
    failed = False
    summary: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nvp-adapter-bench-") as tmp:
        workdir = Workdir(Path(tmp))
        for kind in args.servers:
            children: list[Child] = []
            try:
                setup = Setup(kind, access=not args.no_access_log)
                server, _, _ = await start_setup(setup, workdir, children)
                report = await run_load(
                    [
                        "_memory",
                        "--target",
                        server.address,
                        "--calls",
                        str(calls),
                        "--warmup",
                        str(warmup),
                        "--sample-every",
                        str(sample_every),
                        "--rss-pid",
                        str(server.proc.pid),
                        "--time-limit",
                        str(args.time_limit),
                    ],
                    args.time_limit + CALL_TIMEOUT + CLIENT_SLACK,
                )
                exits = await stop_all(children)
            finally:
                await kill_all(children)
            samples: list[int] = report["rss_samples"]
            errors: dict[str, int] = report["errors"]
            done = int(report["calls"])
            line = (
                f"{kind}: {done} calls in {report['seconds']:.1f} s "
                f"({done / report['seconds']:.0f}/s), errors {sum(errors.values())}"
            )
            bad = bool(errors) or any(code != 0 for code in exits.values()) or done < calls
            if done < calls:
                line += f", stopped by the time limit ({args.time_limit:g} s)"
            if len(samples) < 4:
                print(f"{line}; too few RSS samples ({len(samples)})")
                failed = True
                continue
            quarter = max(1, len(samples) // 4)
            first, last = min(samples[:quarter]), min(samples[-quarter:])
            growth = (last - first) / first
            over = growth > args.max_rss_growth
            print(
                f"{line}; RSS {first / MIB:.1f} MiB after warm-up, {last / MIB:.1f} MiB at end "
                f"({len(samples)} samples): {growth:+.1%}, {(last - first) / MIB:+.1f} MiB "
                f"(limit {args.max_rss_growth:+.0%})"
                + (" EXCEEDED" if over else "")
                + "; exits "
                + ", ".join(f"{name} {code}" for name, code in exits.items())
            )
            summary.append(f"{kind} RSS growth over {done} calls: {growth:+.1%}")
            failed = failed or bad or over
    print(f"load average at end: {load_average()}")
    print("\n".join(summary))
    print(f"result: {'FAIL' if failed else 'ok'}")
    return 1 if failed else 0


# --- the command line --------------------------------------------------------------------------


def _bounded(kind: Callable[[str], float], low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not between {low:g} and {high:g}")
        return value

    return parse


def _concurrencies(text: str) -> list[int]:
    parse = _bounded(int, 1, 1000)
    values = [parse(part) for part in text.split(",")]
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r} names a concurrency twice")
    return values


def _workers(text: str) -> list[int]:
    parse = _bounded(int, 1, MAX_BENCH_WORKERS)
    values = [parse(part) for part in text.split(",")]
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r} names a number of workers twice")
    return sorted(values)  # the fewest first: the base of the ratios


def _servers(text: str) -> list[str]:
    names = text.split(",")
    unknown = [name for name in names if name not in SERVERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown server {unknown[0]!r}: choose among {', '.join(SERVERS)}"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r} names a server twice")
    return [name for name in SERVERS if name in names]  # bare first, whatever the order given


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench.py", description=" ".join((__doc__ or "").split("\n\n")[0].split())
    )
    parser.add_argument(
        "--seconds", type=_bounded(float, 0.1, 600), default=5.0, help="measured per run"
    )
    parser.add_argument(
        "--warmup", type=_bounded(float, 0, 60), default=1.0, help="seconds before measuring"
    )
    parser.add_argument(
        "--rounds", type=_bounded(int, 1, 50), default=3, help="medians are taken across them"
    )
    parser.add_argument(
        "--concurrency",
        type=_concurrencies,
        default=None,
        help="calls in flight, e.g. 1,32 (the default; 32 with --workers)",
    )
    parser.add_argument(
        "--servers", type=_servers, default=None, help=f"a subset of {','.join(SERVERS)}"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--observability",
        action="store_true",
        help="each adapter with metrics, access lines, both, and neither",
    )
    mode.add_argument(
        "--memory",
        type=_bounded(int, 1000, 1_000_000),
        metavar="CALLS",
        help="RSS growth over CALLS calls at 32 in flight",
    )
    mode.add_argument(
        "--workers",
        type=_workers,
        metavar="N,N",
        help=f"serve --workers N on a gateway over HTTP, e.g. 1,2 (1 to {MAX_BENCH_WORKERS})",
    )
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="run the adapter with --log-level warning, so a success writes no access line "
        "(default: the adapter's default configuration, an access line per call)",
    )
    parser.add_argument(
        "--time-limit",
        type=_bounded(float, 10, 3600),
        default=900.0,
        help="--memory: no new call after this many seconds per server",
    )
    parser.add_argument(
        "--max-rss-growth",
        type=_bounded(float, 0, 10),
        default=0.10,
        help="--memory: the growth that fails the run, as a fraction (0.10 is 10%%)",
    )
    args = parser.parse_args(argv)
    if args.concurrency is None:
        args.concurrency = [32] if args.workers else [1, 32]
    if args.workers and args.servers not in (None, ["http"]):
        parser.error("--workers runs the adapter on a gateway over HTTP: --servers http")
    if args.servers is None:
        args.servers = (
            ["embedded"]
            if args.observability
            else ["http"]
            if args.workers
            else ["embedded", "http"]
            if args.memory
            else list(SERVERS)
        )
    if args.observability and args.no_access_log:
        parser.error("--observability runs the adapter with and without access lines itself")
    if (args.observability or args.memory) and "bare" in args.servers:
        parser.error("--observability and --memory measure the adapter: embedded, http, https")
    return args


def parse_load_args(argv: Sequence[str]) -> argparse.Namespace:
    """The load modes' arguments; only this script writes them, so they are checked lightly."""
    parser = argparse.ArgumentParser(prog="scripts/bench.py _load|_memory")
    parser.add_argument("--target", required=True)
    parser.add_argument("--concurrency", type=_bounded(int, 1, 1000), default=MEMORY_CONCURRENCY)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--seconds", type=_bounded(float, 0.1, 600), default=5.0)
    parser.add_argument("--pids", type=lambda text: [int(pid) for pid in text.split(",")])
    parser.add_argument("--channels", type=_bounded(int, 1, 64), default=1)
    parser.add_argument("--calls", type=_bounded(int, 1, 1_000_000), default=1000)
    parser.add_argument("--sample-every", type=_bounded(int, 1, 1_000_000), default=100)
    parser.add_argument("--rss-pid", type=int, default=0)
    parser.add_argument("--time-limit", type=_bounded(float, 1, 3600), default=900.0)
    return parser.parse_args(argv)


async def _cancel_on_sigterm(work: Coroutine[Any, Any, int]) -> int:
    """Run ``work``; SIGTERM cancels it, so that the finally clauses stop every process."""
    task = asyncio.ensure_future(work)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["_bare"]:
        asyncio.run(serve_bare())
        return
    if argv[:1] in (["_load"], ["_memory"]):
        load = parse_load_args(argv[1:])
        if argv[0] == "_load":
            report = asyncio.run(
                timed_load(
                    load.target,
                    load.concurrency,
                    load.warmup,
                    load.seconds,
                    load.pids,
                    channels=load.channels,
                )
            )
        else:
            report = asyncio.run(
                counted_load(
                    load.target,
                    calls=load.calls,
                    warmup=int(load.warmup),
                    sample_every=load.sample_every,
                    rss_pid=load.rss_pid,
                    time_limit=load.time_limit,
                )
            )
        print(json.dumps(report))
        return
    args = parse_args(argv)
    try:
        status = asyncio.run(_cancel_on_sigterm(memory(args) if args.memory else bench(args)))
    except (RuntimeError, TimeoutError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        status = 1
    except asyncio.CancelledError:
        print("bench: stopped", file=sys.stderr)
        status = 1
    sys.exit(status)


if __name__ == "__main__":
    main()
