"""Files read again when their content changes, or at once on ``reload()`` (SIGHUP).

Kubernetes replaces a mounted secret by renaming a symlink, so neither the path's inode nor its
mtime need change: the watch compares the files' content (a digest of it). A loader that fails
raises ``ConfigError``; the value in force stays, one error line says why, and that content is
not tried again until it changes.

>>> watch = FileWatch(interval=2.0)
>>> watch.add("gateway.tls", tls.paths, tls.load)  # doctest: +SKIP
>>> task = asyncio.create_task(watch.run())  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from adapter.errors import ConfigError

__all__ = ["DEFAULT_INTERVAL_SECONDS", "FileWatch"]

log = logging.getLogger("adapter.embedded.rotation")

DEFAULT_INTERVAL_SECONDS = 1.0
"""How often the files are looked at (a few small files: cheap); the contract asks 10 s."""
_MAX_READ_BYTES = 1024 * 1024


@dataclass
class _Watched:
    what: str
    paths: tuple[str, ...]
    load: Callable[[], None]
    seen: tuple[bytes | None, ...] = field(default=())


class FileWatch:
    """Calls each group's loader when its files' content changes, or every loader on ``reload``."""

    def __init__(self, interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        self._interval = interval
        self._watched: list[_Watched] = []

    def __repr__(self) -> str:
        return f"FileWatch({len(self._watched)} groups, every {self._interval:g}s)"

    def add(self, what: str, paths: Sequence[str], load: Callable[[], None]) -> None:
        """Watch ``paths``; ``load()`` reads them and puts the new value in force, or raises.

        ``what`` names the setting in log lines (never the content). The files were loaded once
        already, at start: their content now is the baseline.
        """
        self._watched.append(_Watched(what, tuple(paths), load, _fingerprint(paths)))

    def check(self) -> int:
        """Load every group whose files changed since they were last seen; how many loaded."""
        changed = [e for e in self._watched if _fingerprint(e.paths) != e.seen]
        return sum(self._load(entry) for entry in changed)

    def reload(self) -> int:
        """Load every group now, changed or not; how many loaded."""
        return sum(self._load(entry) for entry in self._watched)

    async def run(self) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            self.check()

    def _load(self, entry: _Watched) -> bool:
        entry.seen = _fingerprint(entry.paths)
        try:
            entry.load()
        except ConfigError as exc:
            # One line, no traceback: the message names the file and what is wrong with it.
            log.error("%s: not reloaded, the previous value stays in force: %s", entry.what, exc)  # noqa: TRY400
            return False
        log.info("%s: reloaded", entry.what)
        return True


def _fingerprint(paths: Sequence[str]) -> tuple[bytes | None, ...]:
    """A digest of each file's content, None where it cannot be read."""
    digests: list[bytes | None] = []
    for path in paths:
        try:
            with open(path, "rb") as file:
                digests.append(hashlib.sha256(file.read(_MAX_READ_BYTES)).digest())
        except OSError:
            digests.append(None)
    return tuple(digests)
