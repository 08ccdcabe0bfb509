"""``serve --workers N`` as an operator meets it: real processes, real signals, loopback.

Which worker answered a call is read from the access lines, which every worker marks with its
``worker`` number; the workers themselves are found in the process list, as the supervisor's
children. Workers refuse the embedded upstream (each would have its own), so they serve from a
standalone gateway (``nvp-adapter gateway``'s ``StandaloneGateway``) on loopback HTTP, run in the
test's own event loop.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.config import DEMO_MERCHANT, LogSettings, Settings
from adapter.embedded.standalone import StandaloneGateway
from adapter.observability.logs import configure_logging
from tests.test_cli import Process, Start, nvp_adapter, run

__all__ = ["nvp_adapter"]  # the fixture, shared with test_cli

WAIT = 15.0  # the bound on every wait for something that takes well under a second
CALLS = 32
SERVING = health_pb2.HealthCheckResponse.SERVING


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it ended while we looked
                continue
            state, ppid = stat.rpartition(")")[2].split()[:2]
            if int(ppid) == pid and state != "Z":
                found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def all_gone(pids: list[int]) -> bool:
    """Wait up to ``WAIT`` seconds for every process of ``pids`` to end; whether they did."""
    for _ in range(int(WAIT / 0.05)):
        if not any(alive(pid) for pid in pids):
            return True
        await asyncio.sleep(0.05)
    return False


async def read_until(server: Process, pattern: str, count: int = 1) -> list[str]:
    """Read the server's stderr until ``count`` lines match ``pattern``; those lines."""
    assert server.proc.stderr is not None
    matching: list[str] = []
    while len(matching) < count:
        line = (await asyncio.wait_for(server.proc.stderr.readline(), WAIT)).decode()
        assert line, f"stderr ended before {count} lines matched {pattern!r}"
        if re.search(pattern, line):
            matching.append(line)
    return matching


@pytest.fixture
async def gateway_url() -> AsyncIterator[str]:
    """A standalone gateway with the demo merchant on loopback HTTP; its base URL."""
    async with StandaloneGateway(Settings(), "127.0.0.1", 0) as gateway:
        yield f"http://127.0.0.1:{gateway.port}"


async def start_workers(
    nvp_adapter: Start, gateway_url: str, *args: str
) -> tuple[Process, list[int]]:
    """``serve --workers 2`` on loopback port 0, its upstream the gateway at ``gateway_url``;
    the supervisor and its two workers' pids."""
    server = await nvp_adapter(
        "serve", "--listen", "127.0.0.1:0", "--workers", "2", "--upstream", gateway_url, *args
    )
    workers = children(server.proc.pid)
    assert len(workers) == 2, workers
    return server, workers


async def create_sessions(address: str, count: int) -> list[pb.CreateSessionResponse]:
    """``count`` calls, each on a connection of its own (the kernel picks a worker per
    connection)."""
    answers = []
    for _ in range(count):
        options = [("grpc.use_local_subchannel_pool", 1)]  # a new connection, not a shared one
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            stub = session_service_pb2_grpc.SessionServiceStub(channel)
            request = pb.CreateSessionRequest(merchant=DEMO_MERCHANT)
            answers.append(await stub.CreateSession(request, timeout=5))
    return answers


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "adapter.toml"
    path.write_text(text)
    return str(path)


async def test_two_workers_share_the_port_and_both_answer(
    nvp_adapter: Start, gateway_url: str, tmp_path: Path
) -> None:
    """Port 0 becomes one port that both workers serve, health_listen's too: calls on 32
    connections are all answered, by both workers (each writes access lines), and SIGTERM
    stops the supervisor and both workers, exit 0. (32 connections all hashed to one of two
    workers would be a 1 in 2**31 chance.)"""
    path = config(tmp_path, '[server]\nhealth_listen = "127.0.0.1:0"\n')
    server, workers = await start_workers(nvp_adapter, gateway_url, "--config", path)
    assert "2 workers" in server.first_line
    listening = await read_until(server, r"adapter\.server listening on .* worker=", 2)
    health_addresses = {re.findall(r"health only on (\S+?);", line)[0] for line in listening}
    assert len(health_addresses) == 1, listening
    (health_address,) = health_addresses
    assert not health_address.endswith(":0")
    async with grpc.aio.insecure_channel(health_address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    answers = await create_sessions(server.address, CALLS)
    code, _, err = await server.stop()
    assert answer.status == SERVING
    assert [a.result for a in answers] == [pb.RESULT_SUCCESS] * CALLS
    access = [
        line for line in err.splitlines() if "adapter.access" in line and "CreateSession" in line
    ]
    assert len(access) == CALLS
    assert {re.findall(r" worker=(\d+)", line)[0] for line in access} == {"1", "2"}
    assert code == 0, err
    assert await all_gone(workers)
    assert "Traceback" not in err


async def test_a_session_made_through_one_worker_is_known_to_every_worker(
    nvp_adapter: Start, gateway_url: str
) -> None:
    """The workers share one gateway: a session created through one is retrieved through
    either, on 16 connections answered by both workers (all 16 on one worker: 1 in 2**15)."""
    server, _ = await start_workers(nvp_adapter, gateway_url)
    (created,) = await create_sessions(server.address, 1)
    results = []
    for _ in range(16):
        options = [("grpc.use_local_subchannel_pool", 1)]  # a new connection each time
        async with grpc.aio.insecure_channel(server.address, options=options) as channel:
            stub = session_service_pb2_grpc.SessionServiceStub(channel)
            request = pb.RetrieveSessionRequest(
                merchant=DEMO_MERCHANT, session=pb.SessionRef(id=created.session.id)
            )
            results.append((await stub.RetrieveSession(request, timeout=5)).result)
    code, _, err = await server.stop()
    assert results == [pb.RESULT_SUCCESS] * 16
    retrieves = [line for line in err.splitlines() if "RetrieveSession" in line]
    assert {re.findall(r" worker=(\d+)", line)[0] for line in retrieves} == {"1", "2"}
    assert code == 0, err


async def test_sighup_reaches_every_worker(nvp_adapter: Start, gateway_url: str) -> None:
    """SIGHUP to the supervisor makes each worker reload its files; they go on serving."""
    server, _ = await start_workers(nvp_adapter, gateway_url)
    server.proc.send_signal(signal.SIGHUP)
    reloaded = await read_until(server, "reloading secrets and certificates", 2)
    answers = await create_sessions(server.address, 2)
    code, _, _ = await server.stop()
    assert sorted(re.findall(r" worker=(\d+)", line)[0] for line in reloaded) == ["1", "2"]
    assert [a.result for a in answers] == [pb.RESULT_SUCCESS] * 2
    assert code == 0


async def test_a_second_signal_stops_every_worker_at_once(
    nvp_adapter: Start, gateway_url: str, tmp_path: Path
) -> None:
    """A 60-second drain in each worker is cut short by a second SIGINT to the supervisor,
    which then exits 0."""
    path = config(tmp_path, "[server]\ndrain_seconds = 60\n")
    server, workers = await start_workers(nvp_adapter, gateway_url, "--config", path)
    server.proc.send_signal(signal.SIGINT)
    await read_until(server, r"draining for 60s", 2)
    server.proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(server.proc.wait(), WAIT) == 0
    assert await all_gone(workers)


async def test_a_worker_that_dies_stops_the_others_and_fails(
    nvp_adapter: Start, gateway_url: str
) -> None:
    """A worker killed under the supervisor is not restarted: the supervisor says which one
    and how it ended, stops the other gracefully, and exits 1."""
    server, (first, second) = await start_workers(nvp_adapter, gateway_url)
    os.kill(second, signal.SIGKILL)
    _, err = await asyncio.wait_for(server.proc.communicate(), WAIT)
    assert server.proc.returncode == 1
    assert f"(pid {second}) was killed by SIGKILL unexpectedly: stopping the others" in (
        err.decode()
    )
    assert await all_gone([first])


async def test_no_worker_outlives_a_killed_supervisor(nvp_adapter: Start, gateway_url: str) -> None:
    """SIGKILL to the supervisor (no chance to pass anything on): both workers see their pipe
    end and stop by themselves."""
    server, workers = await start_workers(nvp_adapter, gateway_url)
    server.proc.kill()
    await server.proc.wait()
    assert await all_gone(workers)


REFUSED = {
    "a Unix socket": (
        ["--listen", "unix:{folder}/grpc.sock", "--workers", "2"],
        {},
        "server.listen 'unix:{folder}/grpc.sock': a Unix socket is served by one process",
    ),
    "metrics": (
        ["--config", "{folder}/adapter.toml", "--workers", "2"],
        {"NVP_ADAPTER_METRICS_LISTEN": "127.0.0.1:0"},
        "NVP_ADAPTER_METRICS_LISTEN: metrics.listen: the counters are per process",
    ),
    "the embedded gateway": (
        ["--workers", "2"],
        {},
        "server.workers = 2 with the embedded gateway: each worker would have its own, and what "
        "one worker made the others would not know; run `nvp-adapter gateway` and set "
        "upstream.url to its URL, or run one worker",
    ),
    "too many": (["--workers", "65"], {}, "server.workers must be 1 to 64, not 65"),
    "none": (
        [],
        {"NVP_ADAPTER_SERVER_WORKERS": "0"},
        "NVP_ADAPTER_SERVER_WORKERS: server.workers must be 1 to 64, not 0",
    ),
    "not a number": (["--workers", "two"], {}, "argument --workers: 'two' is not a whole number"),
}


@pytest.mark.parametrize(("args", "env", "message"), REFUSED.values(), ids=REFUSED.keys())
async def test_what_workers_cannot_share_is_refused_in_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    """A Unix socket, one metrics listener for many workers, the embedded gateway split among
    them, a count out of 1 to 64: exit 2, one line, before any process starts."""
    config(tmp_path, "[upstream]\napi_version = 100\n")
    code, out, err = await run("serve", *[arg.format(folder=tmp_path) for arg in args], env=env)
    assert (code, out, err.count("\n")) == (2, "", 1), err
    assert message.format(folder=tmp_path) in err


async def test_a_port_in_use_is_refused_even_to_other_workers(
    nvp_adapter: Start, gateway_url: str
) -> None:
    """SO_REUSEPORT never lets a second `serve --workers 2` join the first's port: exit 2,
    one line; a plain socket on the port is refused alike."""
    server, _ = await start_workers(nvp_adapter, gateway_url)
    code, _, err = await run(
        "serve", "--listen", server.address, "--workers", "2", "--upstream", gateway_url
    )
    assert (await server.stop())[0] == 0
    assert (code, err.count("\n")) == (2, 1)
    assert err == f"nvp-adapter: error: server.listen: {server.address} is in use\n"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, _, err = await run(
            "serve", "--listen", f"127.0.0.1:{port}", "--workers", "2", "--upstream", gateway_url
        )
    assert (code, err.count("\n")) == (2, 1)


@pytest.mark.parametrize("form", ["text", "json"])
def test_every_line_of_a_worker_says_which(form: str) -> None:
    """With a worker number, each log line carries it: `worker=2` in text, `"worker": 2` in
    JSON."""
    stream = io.StringIO()
    configure_logging(LogSettings(format=form), stream, worker=2)
    try:
        logging.getLogger("adapter.test").info("hello")
    finally:
        configure_logging(LogSettings())
    line = stream.getvalue().strip()
    if form == "json":
        assert json.loads(line)["worker"] == 2
    else:
        assert line.endswith("hello worker=2")
