"""What metrics and access logging cost per call: the adapter with both on, side by side with both
off, under the same load.

Usage: .venv/bin/python scripts/bench_observability.py [--calls 6000] [--concurrency 32]
       [--warmup 1000] [--rounds 4]

Each round starts ``nvp-adapter serve`` four times on loopback port 0 against the in-process
embedded gateway, one after the other (the order rotated from round to round):

- **off**: no ``[metrics]`` table, ``--log-level warning`` (the INFO access line of a success is
  not written);
- **metrics**: ``[metrics] listen`` set (scraped once at the end, so the counters were really
  kept), access lines off;
- **access**: ``--log-level info --log-format json`` (every call writes its access line, to a
  file), metrics off;
- **on**: both.

It drives ``--warmup`` calls, then ``--calls`` calls with ``--concurrency`` in flight, and reads
the server process's CPU time (user + system, from /proc) over the measured calls. It prints, for
each round and overall (the median of the rounds): the server's CPU microseconds per call and
calls per second, and their ratios to **off**. The client runs in this process, on the same
machine, so calls per second are bounded by both; CPU per call is the server's alone.
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
    metrics = mode in {"on", "metrics"}
    access = mode in {"on", "access"}
    config.write_text(f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n' if metrics else "")
    logging = (
        ["--log-level", "info", "--log-format", "json"] if access else ["--log-level", "warning"]
    )
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
        if metrics:  # the counters were kept: the scrape shows every call
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
    if access:
        lines = sum(1 for text in log_path.read_text().splitlines() if '"event": "rpc"' in text)
        if lines != args.warmup + args.calls:
            raise SystemExit(f"on: {lines} access lines for {args.warmup + args.calls} calls")
    return Run(mode, cpu / args.calls * 1e6, args.calls / elapsed)


MODES = ("off", "metrics", "access", "on")


async def bench(args: argparse.Namespace) -> None:
    rounds: list[dict[str, Run]] = []
    with tempfile.TemporaryDirectory(prefix="nvp-adapter-bench-") as tmp:
        workdir = Path(tmp)
        for number in range(args.rounds):
            order = MODES[number % len(MODES) :] + MODES[: number % len(MODES)]  # rotated
            done = {mode: await one_run(mode, args, workdir) for mode in order}
            rounds.append(done)
            print(
                f"round {number + 1}: "
                + " | ".join(
                    f"{mode} {done[mode].cpu_us_per_call:5.0f} us/call "
                    f"{done[mode].calls_per_second:5.0f}/s"
                    for mode in MODES
                ),
                flush=True,
            )
    print(
        f"median of {args.rounds} rounds ({args.calls} calls each, {args.concurrency} in flight):"
    )
    off_cpu = statistics.median(r["off"].cpu_us_per_call for r in rounds)
    off_rate = statistics.median(r["off"].calls_per_second for r in rounds)
    for mode in MODES:
        cpu = statistics.median(r[mode].cpu_us_per_call for r in rounds)
        rate = statistics.median(r[mode].calls_per_second for r in rounds)
        print(
            f"  {mode:8} server CPU {cpu:6.1f} us/call ({cpu - off_cpu:+6.1f} us, "
            f"{cpu / off_cpu:.3f}x off)   {rate:6.0f} calls/s ({rate / off_rate:.3f}x off)"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    for name in ("calls", "concurrency", "warmup", "rounds"):
        if not 1 <= getattr(args, name) <= 1_000_000:
            parser.error(f"--{name} must be 1 to 1000000")
    return args


def main() -> None:
    asyncio.run(bench(parse_args()))


if __name__ == "__main__":
    main()
