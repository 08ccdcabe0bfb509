"""``scripts/bootstrap.py``: set-ups at the same time, and a half-made ``.venv``, on a small copy.

Each test runs the real script in a folder of its own holding a one-package project and a lock
of one entry (setuptools, taken with its hashes from ``requirements/dev.txt``), so a set-up takes
seconds; pip reads setuptools through its cache, which the project's own set-up filled.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300.0  # a cold pip cache fetches setuptools once


def _setuptools_entry() -> str:
    """setuptools' entry in the project's lock, hashes included."""
    text = (ROOT / "requirements" / "dev.txt").read_text()
    match = re.search(r"^setuptools==\S+(?: \\\n\s+--hash=\S+)+", text, re.M)
    assert match, "setuptools is not in requirements/dev.txt"
    return match[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder laid out like the checkout: pyproject.toml, the client's (clients/python), the
    lock and the bootstrap script."""
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "bootstrap.py", tmp_path / "scripts")
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "dev.txt").write_text(_setuptools_entry() + "\n")
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "bootstrap-probe"\nversion = "0"\n'
        "[tool.setuptools]\npy-modules = []\n"
    )
    client = tmp_path / "clients" / "python"
    client.mkdir(parents=True)
    (client / "pyproject.toml").write_text(
        (tmp_path / "pyproject.toml").read_text().replace("bootstrap-probe", "bootstrap-client")
    )
    return tmp_path


def _start(project: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - this interpreter, the script under test
        [sys.executable, str(project / "scripts" / "bootstrap.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> str:
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, output
    return output


def _locked_version_installed(project: Path) -> bool:
    """The venv's python imports setuptools at the locked version."""
    locked = re.match(r"setuptools==(\S+)", _setuptools_entry())
    assert locked
    done = subprocess.run(  # noqa: S603 - the venv the script made
        [
            str(project / ".venv" / "bin" / "python"),
            "-c",
            "import setuptools; print(setuptools.__version__)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0 and done.stdout.strip() == locked[1]


def test_a_set_up_waits_while_another_holds_the_lock(project: Path) -> None:
    """The mutex is what serialises two set-ups: while it is held, the second touches nothing."""
    (project / ".venv.lock").touch()
    with (project / ".venv.lock").open("r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        process = _start(project)
        time.sleep(1.5)
        assert process.poll() is None, "the set-up did not wait for the lock"
        assert not (project / ".venv").exists(), "the set-up worked without the lock"
    _finish(process)
    assert _locked_version_installed(project)


def test_two_set_ups_at_once_both_succeed_and_build_once(project: Path) -> None:
    """As README's two commands started together: both exit 0, the second finds the work done."""
    first, second = _start(project), _start(project)
    outputs = [_finish(first), _finish(second)]
    assert _locked_version_installed(project)
    stamp = project / ".venv" / ".nvp-adapter-lock"
    assert stamp.exists()
    # Built once: the second set-up waited, then found the first's stamp and did nothing.
    assert sum("building .venv" in output for output in outputs) == 1, outputs


def test_a_half_made_environment_is_rebuilt_not_trusted(project: Path) -> None:
    """An interrupted set-up leaves no stamp; the next one starts from nothing and completes."""
    _finish(_start(project))
    venv = project / ".venv"
    (venv / ".nvp-adapter-lock").unlink()  # as if killed before the end of the install
    for package in venv.glob("lib/python*/site-packages/setuptools"):
        shutil.rmtree(package)
    assert not _locked_version_installed(project)
    output = _finish(_start(project))
    assert "rebuilding .venv" in output
    assert _locked_version_installed(project)


def test_a_changed_lock_rebuilds_and_leaves_nothing_it_does_not_name(project: Path) -> None:
    """A package in .venv that the lock does not name does not survive a change of the lock."""
    _finish(_start(project))
    (site,) = (project / ".venv").glob("lib/python*/site-packages")
    leftover = site / "leftover-1.0.dist-info"
    leftover.mkdir()
    (leftover / "METADATA").write_text("Metadata-Version: 2.1\nName: leftover\nVersion: 1.0\n")
    _finish(_start(project))
    assert leftover.exists(), "an unchanged lock rebuilt .venv"
    lock = project / "requirements" / "dev.txt"
    lock.write_text(lock.read_text() + "# refreshed\n")
    _finish(_start(project))
    assert not leftover.exists()
    assert _locked_version_installed(project)
