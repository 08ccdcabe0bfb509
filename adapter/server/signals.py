"""The process's signals, as every long-running command takes them: SIGTERM and SIGINT stop,
SIGHUP reloads (reads secret and certificate files again) instead of its default action of
ending the process, as daemons do."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

__all__ = ["STOP_SIGNALS", "stop_and_reload_signals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_and_reload_signals(
    on_stop: Callable[[], object], on_reload: Callable[[], object]
) -> Iterator[None]:
    """While inside: a stop signal calls ``on_stop``, SIGHUP ``on_reload``; the handlers are
    removed on the way out, whatever ends the block."""
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_stop)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    try:
        yield
    finally:
        for signum in (*STOP_SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(signum)
