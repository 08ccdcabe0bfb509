"""``serve --workers N``: N processes serving one port, and the process that watches over them.

::

    nvp-adapter serve --workers 2           the supervisor: holds the port, starts, signals, reaps
    ├── python -m adapter serve ... --worker 1 --listen 127.0.0.1:PORT   an adapter, as ever
    └── python -m adapter serve ... --worker 2 --listen 127.0.0.1:PORT   another, same port

Each worker is the whole adapter (its own grpc server, upstream pool, breaker and, on the embedded
upstream, its own embedded gateway) started as a fresh process of the same command: fork and exec,
so no grpc state of the supervisor's ever crosses into a worker, and the supervisor itself never
makes a grpc object. A worker reads its settings from the same file, environment and flags, with
the address the supervisor resolved (port 0 is one free port, held by the supervisor, shared by
all) and a hidden ``--worker N``. Its listeners bind with SO_REUSEPORT, so the kernel spreads
connections over the workers.

- Start: worker 1 first, alone, so that a mistake only it can find (a TLS file that does not
  load, a port taken on an address the supervisor did not probe) is one line and its exit code;
  then the others together. Each says ``ready`` on its stdout once it serves.
- SIGTERM or SIGINT: passed on to every worker, whose drain and grace apply; a second one is
  passed on too, and stops them at once. Exit 0 when every worker exited 0, else 1.
- SIGHUP: passed on to every worker (each reloads its files).
- A worker that ends on its own is not restarted: the supervisor logs it, stops the others
  gracefully and exits 1, so that the orchestrator (Kubernetes, systemd) sees the failure and
  restarts the whole, rather than a crash loop hidden behind a live supervisor.
- Workers run in a process group of their own, so that a terminal's Ctrl-C reaches the
  supervisor alone and each worker gets exactly one signal from it. Each holds the read end of
  a pipe as its stdin; when the supervisor is gone, however it went (SIGKILL included), the pipe
  ends and the worker stops as on SIGTERM: no worker outlives it by more than its grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from adapter.config import Settings
from adapter.server.listeners import reserve_port
from adapter.server.signals import stop_and_reload_signals

__all__ = ["READY", "Supervisor", "watch_supervisor"]

READY = b"ready\n"
"""What a worker writes on its stdout once it serves."""
log = logging.getLogger("adapter.workers")


@dataclass
class _Worker:
    number: int
    proc: asyncio.subprocess.Process
    copying: asyncio.Task[None] | None = field(default=None)

    def send(self, signum: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it ended in between
                self.proc.send_signal(signum)


class Supervisor:
    """Starts ``settings.server.workers`` workers, passes signals on, and ends with them.

    ``arguments`` are ``serve``'s own (config file, upstream, log flags), given to every worker.
    """

    def __init__(self, settings: Settings, arguments: Sequence[str]) -> None:
        self.settings = settings
        self._arguments = list(arguments)
        self._workers: list[_Worker] = []
        self._signals = 0
        self._lifelines: list[int] = []
        self._holders: list[socket.socket] = []
        self.address = ""
        """Where the workers listen, port 0 resolved: known once ``reserve`` has run."""

    def reserve(self) -> None:
        """Hold the listeners' ports (port 0 resolved); ``ConfigError`` if one is taken."""
        server = self.settings.server
        listen, holder = reserve_port(server.address, "server.listen")
        self._holders.append(holder)
        self.address = str(listen)
        flags = ["--listen", self.address]
        if server.health_address is not None:
            health, holder = reserve_port(server.health_address, "server.health_listen")
            self._holders.append(holder)
            flags += ["--health-listen", str(health)]
        self._arguments += flags

    async def run(self, on_ready: Callable[[], None]) -> int:
        """Serve until the workers end; the exit status (0: all stopped cleanly on a signal).

        Call ``reserve`` first. ``on_ready`` runs once every worker serves.
        """
        try:
            with stop_and_reload_signals(self._on_stop_signal, self._pass_on_reload):
                return await self._serve(on_ready)
        finally:
            await self._close()

    async def _serve(self, on_ready: Callable[[], None]) -> int:
        """Start every worker, then wait for them all to end; the exit status."""
        first = await self._start(1)
        if first is not None:
            return first
        count = self.settings.server.workers
        if self._signals == 0:
            results = await asyncio.gather(*(self._start(n) for n in range(2, count + 1)))
            failed = next((code for code in results if code is not None), None)
            if failed is not None:
                self._stop_all()
                await self._reap()
                return failed
        if self._signals == 0:
            pids = ", ".join(str(w.proc.pid) for w in self._workers)
            log.info("%d workers serving on %s (pids %s)", count, self.address, pids)
            on_ready()
        return await self._reap()

    async def _start(self, number: int) -> int | None:
        """Start worker ``number`` and wait until it serves: None, or its exit status if it
        ended first (1 for a worker that ended with 0 without serving)."""
        lifeline, keep = os.pipe()  # both close-on-exec; the worker gets its end as stdin
        self._lifelines.append(keep)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "adapter",
                "serve",
                *self._arguments,
                "--worker",
                str(number),
                stdin=lifeline,
                stdout=asyncio.subprocess.PIPE,
                process_group=0,
            )
        finally:
            os.close(lifeline)
        worker = _Worker(number, proc)
        self._workers.append(worker)
        if self._signals:  # a stop signal came while it was being made
            worker.send(signal.SIGTERM)
        stdout = proc.stdout
        if stdout is None or await stdout.readline() != READY:
            code = await proc.wait()
            if self._signals:  # stopped while starting: not a failure
                return None
            log.error("worker %d (pid %d) did not start: %s", number, proc.pid, _ending(code))
            return code if code > 0 else 1
        worker.copying = asyncio.create_task(_copy_out(stdout))
        return None

    def _on_stop_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("signal received: stopping the workers gracefully (again: at once)")
        else:
            log.info("second signal: stopping the workers at once")
        self._pass_on(signal.SIGTERM)

    def _pass_on_reload(self) -> None:
        self._pass_on(signal.SIGHUP)

    def _pass_on(self, signum: int) -> None:
        for worker in self._workers:
            worker.send(signum)

    def _stop_all(self) -> None:
        """Stop every worker gracefully, as one SIGTERM would (once)."""
        if self._signals == 0:
            self._signals = 1
            self._pass_on(signal.SIGTERM)

    async def _reap(self) -> int:
        """Wait for every worker to end; 0 if each ended with 0 after a stop signal, else 1."""
        ending = {asyncio.ensure_future(w.proc.wait()): w for w in self._workers}
        failed = False
        pending = set(ending)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                worker, code = ending[task], task.result()
                if self._signals == 0:
                    log.error(
                        "worker %d (pid %d) %s unexpectedly: stopping the others",
                        worker.number,
                        worker.proc.pid,
                        _ending(code),
                    )
                    failed = True
                    self._stop_all()
                elif code != 0:
                    log.error(
                        "worker %d (pid %d) %s", worker.number, worker.proc.pid, _ending(code)
                    )
                    failed = True
        return 1 if failed else 0

    async def _close(self) -> None:
        """Kill any worker still running (only after an error of the supervisor's own), then
        close the pipes and the ports' holders."""
        for worker in self._workers:
            if worker.proc.returncode is None:
                worker.send(signal.SIGKILL)
                await worker.proc.wait()
            if worker.copying is not None:
                await worker.copying
        for fd in self._lifelines:
            os.close(fd)
        for holder in self._holders:
            holder.close()


def _ending(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with {code}"


async def _copy_out(stream: asyncio.StreamReader) -> None:
    """Whatever a worker prints after ``ready`` goes to the supervisor's stdout."""
    while line := await stream.readline():
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()


def watch_supervisor(fd: int = 0) -> None:
    """In a worker: stop as on SIGTERM once the supervisor's end of the pipe on ``fd`` closes.

    Call it in the coroutine that then awaits ``serve``: the reader cannot fire before ``serve``
    has taken the signals. The supervisor never writes, so the pipe only becomes readable when
    it ends.
    """
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            log.warning("the supervising process is gone: stopping")
            signal.raise_signal(signal.SIGTERM)

    loop.add_reader(fd, readable)
