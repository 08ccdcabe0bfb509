"""Make ``.venv`` exactly what the lock says, then install the project into it, editable: the
server and its Python client distribution (``clients/python``), which the scripts call it with.

Run by ``scripts/bootstrap.sh`` with the interpreter the virtual environment is made from
(``python3`` or ``$PYTHON``), before any third-party package exists: the standard library alone.

- The dependency set comes from ``requirements/dev.txt`` alone (hash-pinned, compiled by
  ``scripts/refresh_lock.sh``), installed with ``pip --require-hashes``: nothing unpinned, nothing
  unhashed, nothing from a cache of yesterday's packages. ``pyproject.toml``'s ranges are for
  people who install the package as a library; they are never resolved here.
- A stamp in ``.venv`` records what it was built from (the lock's digest and the interpreter's
  version). It is written last, so a set-up that was interrupted leaves no stamp: the next run
  removes the half-made ``.venv`` and builds it again rather than trusting it. A different lock or
  interpreter rebuilds it too, so it never holds a package the lock does not name.
- An exclusive lock (``.venv.lock``, ``fcntl.flock``) is held throughout: set-ups started at the
  same time (``scripts/serve.sh`` and ``scripts/test.sh`` in two terminals) run one after the
  other, and the second finds the first's work done.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
LOCK = ROOT / "requirements" / "dev.txt"
STAMP = VENV / ".nvp-adapter-lock"
PROJECT_STAMP = VENV / ".nvp-adapter-project"
MUTEX = ROOT / ".venv.lock"
# Installed editable, in this order: the server, and the client distribution (its dependencies are
# the server's too, so the lock holds them).
PROJECTS = (ROOT, ROOT / "clients" / "python")


def _digest(*paths: Path) -> str:
    hashed = hashlib.sha256()
    for path in paths:
        hashed.update(path.read_bytes())
    return hashed.hexdigest()


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _pip(*args: str) -> None:
    python = VENV / "bin" / "python"
    command = [str(python), "-m", "pip", "--disable-pip-version-check", "--quiet", "install", *args]
    subprocess.run(command, check=True, cwd=ROOT)


def _build_environment(stamp: str) -> None:
    """A new ``.venv`` with exactly the locked distributions."""
    if VENV.exists():
        print("bootstrap: rebuilding .venv from requirements/dev.txt", file=sys.stderr)
        shutil.rmtree(VENV)
    else:
        print("bootstrap: building .venv from requirements/dev.txt", file=sys.stderr)
    venv.EnvBuilder(with_pip=True).create(VENV)
    # Binary distributions only: building one from source would run a build backend that no lock
    # pins. --no-deps on top of --require-hashes: the lock is the whole set, or the install fails.
    _pip("--require-hashes", "--only-binary", ":all:", "--no-deps", "-r", str(LOCK))
    subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "check"],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    STAMP.write_text(stamp)


def main() -> int:
    MUTEX.touch()
    with MUTEX.open("r+") as mutex:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        stamp = f"{_digest(LOCK)} {sys.version}\n"
        if _read(STAMP) != stamp or not (VENV / "bin" / "python").exists():
            _build_environment(stamp)
            PROJECT_STAMP.unlink(missing_ok=True)
        # The projects themselves, editable, built by the locked setuptools (no isolated build
        # environment, which would fetch an unpinned one). Again whenever a pyproject.toml changes.
        project = f"{_digest(*(p / 'pyproject.toml' for p in PROJECTS))}\n"
        if _read(PROJECT_STAMP) != project:
            editable = [arg for p in PROJECTS for arg in ("--editable", str(p))]
            _pip("--no-deps", "--no-build-isolation", *editable)
            PROJECT_STAMP.write_text(project)
    return 0


if __name__ == "__main__":
    if sys.version_info < (3, 11):  # noqa: UP036 - run by whatever python3 is, before any venv
        sys.exit(f"bootstrap: Python 3.11 or newer is needed; {sys.executable} is older")
    sys.exit(main())
