"""Secrets and certificates read again when their files change, without a restart.

``FileWatch`` polls the content of the files it is given (Kubernetes swaps a mounted secret by
renaming a symlink, so the inode and even the mtime of the path may not change; the bytes do) and
calls a file's loader when they differ from the last load, and every loader at once on
``reload()`` (SIGHUP). A loader that fails keeps the value in force: it raises ``ConfigError``
and the watch logs one error line for that content, then waits for the file to change again.

>>> watch = FileWatch(interval=2.0)
>>> watch.add("merchants.M1.password_file", ["/run/secrets/m1"], load_password)  # doctest: +SKIP
>>> task = asyncio.create_task(watch.run())  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from adapter.config.settings import MerchantCredentials, read_secret_file
from adapter.core.errors import ConfigError

__all__ = ["DEFAULT_INTERVAL_SECONDS", "FileWatch", "watch_password_files"]

log = logging.getLogger("adapter.rotation")

DEFAULT_INTERVAL_SECONDS = 2.0
"""How often files are looked at: a change is in force within this (the contract asks 10 s)."""
_MAX_READ_BYTES = 1024 * 1024


@dataclass
class _Watched:
    what: str
    paths: tuple[str, ...]
    load: Callable[[], None]
    seen: tuple[bytes | None, ...] = field(default=())


class FileWatch:
    """Reloads each watched group of files when their content changes, or on ``reload()``."""

    def __init__(self, interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        self._interval = interval
        self._watched: list[_Watched] = []

    def __repr__(self) -> str:
        return f"FileWatch({len(self._watched)} groups, every {self._interval:g}s)"

    def add(self, what: str, paths: Sequence[str], load: Callable[[], None]) -> None:
        """Watch ``paths``; ``load()`` reads them and puts the new value in force, or raises.

        ``what`` names the setting in log lines (never the file's content). The files were
        loaded once already, at start: their current content is the baseline.
        """
        self._watched.append(_Watched(what, tuple(paths), load, _fingerprint(paths)))

    def check(self) -> int:
        """Load every group whose files changed since they were last seen; how many loaded."""
        return sum(
            self._load(entry) for entry in self._watched if _fingerprint(entry.paths) != entry.seen
        )

    def reload(self) -> int:
        """Load every group now, changed or not (SIGHUP); how many loaded."""
        return sum(self._load(entry) for entry in self._watched)

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            self.check()

    def _load(self, entry: _Watched) -> bool:
        entry.seen = _fingerprint(entry.paths)
        try:
            entry.load()
        except ConfigError as exc:
            log.error("%s: not reloaded, the previous value stays in force: %s", entry.what, exc)  # noqa: TRY400 (one line, no traceback: the message says it all)
            return False
        log.info("%s: reloaded", entry.what)
        return True


def _fingerprint(paths: Sequence[str]) -> tuple[bytes | None, ...]:
    """A digest of each file's content (None where it cannot be read)."""
    digests: list[bytes | None] = []
    for path in paths:
        try:
            with open(path, "rb") as file:
                digests.append(hashlib.sha256(file.read(_MAX_READ_BYTES)).digest())
        except OSError:
            digests.append(None)
    return tuple(digests)


def watch_password_files(
    watch: FileWatch,
    merchants: Mapping[str, MerchantCredentials],
    on_password: Callable[[str, str], None],
    *,
    label: str = "",
) -> None:
    """Each merchant's ``password_file``, read again when it changes: ``on_password(merchant,
    password)``. ``label`` goes before the key in the watch's log lines (whose copy it is)."""
    for merchant, credentials in merchants.items():
        path = credentials.password_file
        if path is None:
            continue
        where = f"merchants.{merchant}.password_file"

        def load(merchant: str = merchant, path: str = path, where: str = where) -> None:
            on_password(merchant, read_secret_file(path, where))

        watch.add(f"{label}{where}", [path], load)
