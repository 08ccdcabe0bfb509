"""What metrics and access logging cost per call: the adapter with both on, side by side with both
off, under the same load.

Usage: .venv/bin/python scripts/bench_observability.py [--calls 6000] [--concurrency 32]
       [--warmup 1000] [--rounds 3]

Each round starts ``nvp-adapter serve`` twice on loopback port 0 against the in-process embedded
gateway, one after the other (alternating which goes first):

- **off**: no ``[metrics]`` table, ``--log-level warning`` (the INFO access line of a success is
  not written);
- **on**: ``[metrics] listen`` set (scraped once at the end, so the counters were really kept),
  ``--log-level info --log-format json`` (every call writes its access line, to a file).

It drives ``--warmup`` calls, then ``--calls`` calls with ``--concurrency`` in flight, and reads
the server process's CPU time (user + system, from /proc) over the measured calls. It prints, for
each round and overall (the median of the rounds): the server's CPU microseconds per call,
calls per second, and the ratio on/off. The client runs in this process, on the same machine, so
calls per second are bounded by both; CPU per call is the server's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc

MERCHANT = "TESTMERCHANT"
_SCRIPT = Path(sys.executable).with_name("nvp-adapter")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "adapter"]
_ADDRESS = re.compile(r"listening on (\S+) ")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    mode: str
    cpu_us_per_call: float
    calls_per_second: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def drive(address: str, calls: int, concurrency: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        remaining = calls

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await stub.CreateSession(pb.CreateSessionRequest(merchant=MERCHANT), timeout=10)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def one_run(mode: str, args: argparse.Namespace, workdir: Path) -> Run:
    config = workdir / f"{mode}.toml"
    metrics_port = free_port()
    if mode == "on":
        config.write_text(f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
        logging = ["--log-level", "info", "--log-format", "json"]
    else:
        config.write_text("")
        logging = ["--log-level", "warning"]
    log_path = workdir / f"{mode}.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *COMMAND,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            str(config),
            *logging,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
    try:
        if proc.stdout is None:
            raise SystemExit("no stdout pipe")
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        match = _ADDRESS.search(line)
        if match is None:
            raise SystemExit(f"{mode}: no address in {line!r}; see {log_path}")
        address = match[1]
        await drive(address, args.warmup, args.concurrency)
        cpu_before, started = cpu_seconds(proc.pid), time.perf_counter()
        await drive(address, args.calls, args.concurrency)
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(proc.pid) - cpu_before
        if mode == "on":  # the counters were kept: the scrape shows every call
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
            ):
                text = await response.text()
            total = args.warmup + args.calls
            expected = (
                'grpc_server_handled_total{grpc_code="OK",grpc_method="CreateSession",'
                f'grpc_service="mpgs.gateway.v1.SessionService"}} {float(total)}'
            )
            if expected not in text:
                raise SystemExit(f"on: the scrape does not count {total} calls")
    finally:
        proc.terminate()
        await proc.communicate()
    if mode == "on":
        lines = sum(1 for text in log_path.read_text().splitlines() if '"event": "rpc"' in text)
        if lines != args.warmup + args.calls:
            raise SystemExit(f"on: {lines} access lines for {args.warmup + args.calls} calls")
    return Run(mode, cpu / args.calls * 1e6, args.calls / elapsed)


async def bench(args: argparse.Namespace) -> None:
    runs: list[tuple[Run, Run]] = []
    with tempfile.TemporaryDirectory(prefix="nvp-adapter-bench-") as tmp:
        workdir = Path(tmp)
        for round_number in range(args.rounds):
            order = ("off", "on") if round_number % 2 == 0 else ("on", "off")
            done = {mode: await one_run(mode, args, workdir) for mode in order}
            off, on = done["off"], done["on"]
            runs.append((off, on))
            print(
                f"round {round_number + 1}: off {off.cpu_us_per_call:7.1f} us/call "
                f"{off.calls_per_second:7.0f} calls/s | on {on.cpu_us_per_call:7.1f} us/call "
                f"{on.calls_per_second:7.0f} calls/s | CPU/call on/off "
                f"{on.cpu_us_per_call / off.cpu_us_per_call:.3f}",
                flush=True,
            )
    off_cpu = statistics.median(off.cpu_us_per_call for off, _ in runs)
    on_cpu = statistics.median(on.cpu_us_per_call for _, on in runs)
    off_rate = statistics.median(off.calls_per_second for off, _ in runs)
    on_rate = statistics.median(on.calls_per_second for _, on in runs)
    print(
        f"median of {args.rounds} rounds ({args.calls} calls each, {args.concurrency} in flight):\n"
        f"  server CPU per call: off {off_cpu:.1f} us, on {on_cpu:.1f} us, "
        f"cost {on_cpu - off_cpu:+.1f} us ({on_cpu / off_cpu:.3f}x)\n"
        f"  calls per second:    off {off_rate:.0f}, on {on_rate:.0f} ({on_rate / off_rate:.3f}x)"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    for name in ("calls", "concurrency", "warmup", "rounds"):
        if not 1 <= getattr(args, name) <= 1_000_000:
            parser.error(f"--{name} must be 1 to 1000000")
    return args


def main() -> None:
    asyncio.run(bench(parse_args()))


if __name__ == "__main__":
    main()
