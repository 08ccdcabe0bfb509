"""A bounded soak: many CreateSession calls through the real processes, watching the adapter's RSS.

Usage: .venv/bin/python scripts/soak.py [--calls 50000] [--concurrency 64] [--warmup 5000]
       [--sample-every 500] [--max-rss-growth 0.10]

Starts ``nvp-adapter gateway`` (the embedded gateway over HTTP) and ``nvp-adapter serve`` against
it, both on loopback port 0, drives ``--calls`` calls with exactly ``--concurrency`` in flight over
one channel, stops both processes with SIGTERM and prints a report. Exits 1 if a call failed, a
process did not exit 0, or the adapter's RSS grew by more than ``--max-rss-growth`` (a fraction:
0.10 is 10 %) after warm-up.

RSS is sampled every ``--sample-every`` calls from the end of the first ``--warmup`` calls while
all ``--concurrency`` calls are still in flight, so that every sample sees the same load. Growth
is measured from the lowest sample in the first quarter of the samples to the lowest in the last
quarter: without any leak, RSS rises and falls back by a megabyte or more every few thousand calls
(memory taken and handed back in batches), while a leak raises the floor. A quarter must therefore
span several thousand calls; with the defaults it spans 11,000.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from children import ADAPTER, START_TIMEOUT, Child, kill_all, rss_bytes, start, stop_all

from nvp_adapter_client import session_service_pb2 as pb
from nvp_adapter_client import session_service_pb2_grpc

MERCHANT = "TESTMERCHANT"
CALL_TIMEOUT = 10.0
MIB = 1024 * 1024
MIN_SAMPLES = 4  # one to a quarter


@dataclass
class Results:
    """What the load produced: per-call latencies, failures by code, RSS samples."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    rss_samples: list[int] = field(default_factory=list)
    elapsed: float = 0.0

    def rss_floors(self) -> tuple[int, int, int]:
        """The lowest RSS sample in the first and in the last quarter of the samples, and how
        many samples a quarter holds."""
        quarter = max(1, len(self.rss_samples) // 4)
        return min(self.rss_samples[:quarter]), min(self.rss_samples[-quarter:]), quarter


async def drive(
    address: str,
    pid: int,
    *,
    calls: int,
    concurrency: int,
    warmup: int,
    sample_every: int,
) -> Results:
    """Make ``calls`` calls with ``concurrency`` workers on one channel; sample ``pid``'s RSS.

    A sample is taken when the number of calls done reaches ``warmup`` and every ``sample_every``
    calls after it, up to the last point at which ``concurrency`` calls are still to be done.
    """
    results = Results()
    issued = 0
    done = 0

    async def worker(stub: session_service_pb2_grpc.SessionServiceAsyncStub) -> None:
        nonlocal issued, done
        while issued < calls:
            number = issued
            issued += 1
            correlation_id = f"soak-{number}"
            started = time.perf_counter()
            try:
                response = await stub.CreateSession(
                    pb.CreateSessionRequest(merchant=MERCHANT, correlation_id=correlation_id),
                    timeout=CALL_TIMEOUT,
                )
            except grpc.aio.AioRpcError as exc:
                results.errors[exc.code().name] += 1
            else:
                if response.correlation_id != correlation_id or not response.session.id:
                    results.errors["WRONG_ANSWER"] += 1
            results.latencies.append(time.perf_counter() - started)
            done += 1
            if (
                done >= warmup
                and (done - warmup) % sample_every == 0
                and calls - done >= concurrency
            ):
                results.rss_samples.append(rss_bytes(pid))

    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), START_TIMEOUT)
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        began = time.perf_counter()
        await asyncio.gather(*(worker(stub) for _ in range(concurrency)))
        results.elapsed = time.perf_counter() - began
    return results


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def report(args: argparse.Namespace, results: Results, exits: dict[str, int]) -> bool:
    """Print the report; True when everything held."""
    failed_calls = sum(results.errors.values())
    errors = ", ".join(f"{code}: {n}" for code, n in sorted(results.errors.items()))
    latencies = sorted(results.latencies)
    rss_warm, rss_end, quarter = results.rss_floors()
    growth = (rss_end - rss_warm) / rss_warm
    grew_too_much = growth > args.max_rss_growth
    bad_exits = {name: code for name, code in exits.items() if code != 0}
    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(f"calls: {len(latencies)} ({args.concurrency} in flight, warm-up {args.warmup})")
    print(f"errors: {failed_calls}" + (f" ({errors})" if errors else ""))
    print(
        f"RSS samples: {len(results.rss_samples)} (every {args.sample_every} calls),"
        f" {quarter} to a quarter"
    )
    print(f"adapter RSS after warm-up: {rss_warm / MIB:.1f} MiB (lowest in the first quarter)")
    print(f"adapter RSS at end: {rss_end / MIB:.1f} MiB (lowest in the last quarter)")
    print(
        f"RSS growth: {growth:+.1%}, {(rss_end - rss_warm) / MIB:+.1f} MiB"
        f" (limit {args.max_rss_growth:+.1%})" + (" EXCEEDED" if grew_too_much else "")
    )
    print(
        f"throughput: {len(latencies) / results.elapsed:.0f} calls/s over {results.elapsed:.1f} s"
    )
    print(
        f"latency: p50 {percentile(latencies, 0.50) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms"
    )
    print("exit codes: " + ", ".join(f"{name} {code}" for name, code in exits.items()))
    ok = failed_calls == 0 and not grew_too_much and not bad_exits
    print(f"result: {'PASS' if ok else 'FAIL'}")
    return ok


async def soak(args: argparse.Namespace) -> bool:
    children: list[Child] = []
    try:
        gateway = await start("gateway", [*ADAPTER, "gateway", "--listen", "127.0.0.1:0"], children)
        adapter = await start(
            "adapter",
            [
                *ADAPTER,
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                f"http://{gateway.address}",
            ],
            children,
        )
        results = await drive(
            adapter.address,
            adapter.proc.pid,
            calls=args.calls,
            concurrency=args.concurrency,
            warmup=args.warmup,
            sample_every=args.sample_every,
        )
        exits = await stop_all(children)  # the adapter first: no call of its cut off
        ok = report(args, results, exits)
        if not ok:
            for child in children:
                print(f"--- {child.name} stderr (last lines) ---\n{child.stderr_tail()}")
        return ok
    finally:
        await kill_all(children)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument(
        "--sample-every", type=int, default=500, help="calls between two samples of the RSS"
    )
    parser.add_argument(
        "--max-rss-growth",
        type=float,
        default=0.10,
        help="largest RSS growth allowed after warm-up, as a fraction (0.10 is 10%%)",
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if not 1 <= args.warmup < args.calls:
        parser.error("--warmup must be at least 1 and less than --calls")
    if args.sample_every < 1:
        parser.error("--sample-every must be at least 1")
    if (args.calls - args.concurrency - args.warmup) // args.sample_every + 1 < MIN_SAMPLES:
        parser.error(
            f"--calls must leave room for {MIN_SAMPLES} RSS samples after --warmup"
            " (every --sample-every calls, while --concurrency calls are still to be done)"
        )
    return args


def main() -> None:
    args = parse_args()
    sys.exit(0 if asyncio.run(soak(args)) else 1)


if __name__ == "__main__":
    main()
