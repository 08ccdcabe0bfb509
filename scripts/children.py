"""The processes a script starts (``nvp-adapter serve``, ``gateway``, a bare server, a load
client): start one and read the address from its first line, stop it with SIGTERM, kill what a
failure leaves, and read its CPU time, RSS and children from /proc. Shared by ``bench.py`` and
``soak.py``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "ADAPTER",
    "START_TIMEOUT",
    "Child",
    "child_environment",
    "children_of",
    "cpu_seconds",
    "kill_all",
    "rss_bytes",
    "start",
    "stop",
    "stop_all",
]

_ADAPTER = Path(sys.executable).with_name("nvp-adapter")
ADAPTER = [str(_ADAPTER)] if _ADAPTER.exists() else [sys.executable, "-m", "adapter"]
"""The ``nvp-adapter`` command of the environment this script runs in."""
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_TICKS = os.sysconf("SC_CLK_TCK")
_ADDRESS = re.compile(r"listening on (?:https?://)?(\S+?)(?:/api\S*)? ")
# A proxy variable would send the adapter's loopback HTTP, or the load's gRPC, through a proxy;
# NVP_ADAPTER_* would change the configuration under test.
_SCRUBBED = re.compile(r"(?i)^(nvp_adapter_.*|https?_proxy|all_proxy|grpc_proxy|no_proxy)$")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children_of(pid: int) -> list[int]:
    """The live children of a process: from /proc/PID/task/*/children where the kernel has it,
    else by the parent pid of every process in /proc."""
    tasks = list(Path(f"/proc/{pid}/task").glob("*/children"))
    if tasks:
        found: set[int] = set()
        for path in tasks:
            with contextlib.suppress(OSError):
                found.update(int(child) for child in path.read_text().split())
        return sorted(found)
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return sorted(children)


def rss_bytes(pid: int) -> int:
    """The process's resident set size, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Child:
    """One process this script started: its address (from its first line) and stderr file."""

    name: str
    proc: asyncio.subprocess.Process
    stderr: IO[bytes]
    address: str = ""
    drain: asyncio.Task[None] | None = None

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def stderr_tail(self, lines: int = 20) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])


def child_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not _SCRUBBED.match(key)}


async def start(name: str, argv: Sequence[str], children: list[Child]) -> Child:
    """Start ``argv`` and wait for its first line, which names the bound address.

    The child joins ``children`` at once, so that the caller stops it even if this fails.
    """
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by kill_all, as the process ends)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=child_environment()
    )
    child = Child(name, proc, stderr)
    children.append(child)
    if proc.stdout is None:  # cannot happen with stdout=PIPE; narrows the type
        raise RuntimeError(f"{name}: no stdout pipe")
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)).decode()
    except TimeoutError:
        raise RuntimeError(f"{name}: no first line in {START_TIMEOUT:.0f} s") from None
    match = _ADDRESS.search(line)
    if match is None:
        raise RuntimeError(f"{name} printed no address: {line!r}\n{child.stderr_tail()}")
    child.address = match[1]
    child.drain = asyncio.create_task(_drain(proc.stdout))  # the pipe must never fill up
    return child


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def stop(child: Child) -> int:
    """SIGTERM, then wait; a process that outlives STOP_TIMEOUT is killed and reported as -9."""
    if child.proc.returncode is None:
        child.proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(child.proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        child.proc.kill()
        await child.proc.wait()
        return -signal.SIGKILL
    finally:
        if child.drain is not None:
            await child.drain


async def stop_all(children: Sequence[Child]) -> dict[str, int]:
    """Stop every child, the last started first (the adapter before its gateway, so that no call
    of its is cut off); their exit codes."""
    return {child.name: await stop(child) for child in reversed(children)}


async def kill_all(children: Sequence[Child]) -> None:
    """What is left after a failure: killed, waited for, its files closed."""
    for child in children:
        if child.proc.returncode is None:
            # Its own children first (serve --workers: the workers), while their parent is
            # alive, so that each pid is still the one it named.
            for pid in children_of(child.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            await child.proc.wait()
        if child.drain is not None and not child.drain.done():
            child.drain.cancel()
        child.stderr.close()
