"""What the image runs, run without a container engine: the Dockerfile's own text, followed.

The project's wheel is built from the files the Dockerfile copies, and installed into a fresh
virtual environment as the image installs it (once per test session: pip fetches the
locked dependencies, through its cache). The Dockerfile's ENTRYPOINT and CMD then run from that
environment's ``bin`` with the Dockerfile's ENV and nothing else, in a working directory that is
also HOME and read-only, and its HEALTHCHECK command must pass against them.

Two things differ from the image, on purpose: every ``NVP_ADAPTER_*_LISTEN`` address keeps its
host but gets a free port (two test runs must not meet on 50051), and ``PATH`` leads to the test's
environment rather than the image's. The health command reads its address from those same
variables, as in the image.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapter.config import parse_host_port
from tests.dockerfile import ROOT, Image, read_image

IMAGE = read_image()
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
START_TIMEOUT = 30.0
PIP_TIMEOUT = 600.0  # a cold pip cache downloads grpcio and the rest once


@dataclass(frozen=True)
class Installed:
    """The project installed from its wheel into its own virtual environment."""

    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def _run(*command: str | Path) -> None:
    done = subprocess.run(  # noqa: S603 (this interpreter's pip and venv, on the test's own paths)
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(map(str, command))}:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel of what the Dockerfile copies, installed beside the lock's runtime set, as there.

    As the image: the wheel is built by the locked setuptools without an isolated build
    environment (this environment's setuptools is the one ``requirements/build.txt`` pins, since
    both come from one resolution), and the dependencies are ``requirements/runtime.txt`` alone,
    hash-checked, with nothing resolved.
    """
    work = tmp_path_factory.mktemp("image")
    context = work / "src"  # like the image's build stage: a copy, so the checkout stays clean
    context.mkdir()
    for source in IMAGE.context_sources:
        origin = ROOT / source
        (context / source).parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, context / source)
    wheels = work / "wheels"
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check")
    _run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", wheels, context)
    (wheel,) = wheels.glob("nvp_adapter-*.whl")
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", venv)
    venv_pip = (venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check", "install")
    _run(*venv_pip, "--require-hashes", "--only-binary", ":all:", "--no-deps", "-r", RUNTIME_LOCK)
    _run(*venv_pip, "--no-deps", wheel)
    _run(venv / "bin" / "python", "-m", "pip", "check")
    return Installed(venv)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _environment(image: Image, installed: Installed, home: Path) -> dict[str, str]:
    """The image's ENV with its listen ports made free and PATH leading to ``installed``."""
    env = dict(image.env)
    for name, value in env.items():
        if name.startswith("NVP_ADAPTER_") and name.endswith("_LISTEN"):
            host, _ = parse_host_port(value)
            env[name] = f"{value.rpartition(':')[0]}:{_free_port(host)}"
    env["PATH"] = f"{installed.bin}{os.pathsep}{os.environ['PATH']}"
    env["HOME"] = str(home)
    return env


Snapshot = dict[str, tuple[int, int]]


def _snapshot(*roots: Path) -> Snapshot:
    """Every path under ``roots`` (themselves included) with its mtime and size."""
    seen: Snapshot = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                info = os.lstat(name)
                seen[name] = (info.st_mtime_ns, info.st_size)
    return seen


@pytest.fixture
def read_only_home(tmp_path: Path) -> Iterator[Path]:
    """An empty folder mode 0555, for the working directory and HOME (root writes regardless)."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    yield home
    home.chmod(0o755)


def _executable(installed: Installed, command: list[str]) -> list[str]:
    """``command`` with its program taken from the installed environment's ``bin``."""
    program = installed.bin / command[0]
    assert program.exists(), f"{command[0]} is not installed by the wheel"
    return [str(program), *command[1:]]


def _seconds(duration: str) -> float:
    """A HEALTHCHECK duration as Docker writes it (``5s``, ``1m``)."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in sorted(units, key=len, reverse=True):
        if duration.endswith(unit):
            return float(duration.removesuffix(unit)) * units[unit]
    raise ValueError(duration)


async def test_the_image_command_serves_passes_its_healthcheck_and_stops_on_sigterm(
    installed: Installed, read_only_home: Path
) -> None:
    """ENTRYPOINT + CMD start with the image's ENV in a read-only directory; the HEALTHCHECK
    command exits 0 within its timeout; SIGTERM ends the server with 0; nothing was written to
    the working directory, HOME or the installed environment."""
    env = _environment(IMAGE, installed, read_only_home)
    before = _snapshot(read_only_home, installed.venv)
    server = await asyncio.create_subprocess_exec(
        *_executable(installed, IMAGE.command),
        cwd=read_only_home,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        first_line = await asyncio.wait_for(server.stdout.readline(), START_TIMEOUT)
        assert f"listening on {env['NVP_ADAPTER_SERVER_LISTEN']} " in first_line.decode()
        health = await asyncio.create_subprocess_exec(
            *_executable(installed, IMAGE.healthcheck),
            cwd=read_only_home,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        timeout = _seconds(IMAGE.healthcheck_options["timeout"])
        out, err = await asyncio.wait_for(health.communicate(), timeout)
        assert health.returncode == 0, (out + err).decode()
        server.send_signal(signal.SIGTERM)
        _, server_err = await asyncio.wait_for(server.communicate(), START_TIMEOUT)
    finally:
        if server.returncode is None:
            server.kill()
            await server.communicate()
    assert server.returncode == 0, server_err.decode()
    assert "Traceback" not in server_err.decode()
    assert _snapshot(read_only_home, installed.venv) == before


def test_the_image_runs_as_a_numeric_user_that_is_not_root() -> None:
    """USER is uid:gid in numbers, so Kubernetes' runAsNonRoot can verify it, and not 0."""
    uid, gid = IMAGE.user.split(":")
    assert uid.isdigit()
    assert gid.isdigit()
    assert int(uid) != 0


def test_the_image_path_leads_to_the_environment_it_copies() -> None:
    """ENTRYPOINT's bare ``nvp-adapter`` is found: PATH starts at the copied venv's ``bin``."""
    (venv,) = IMAGE.copied_from_stages
    assert IMAGE.env["PATH"] == f"{venv}/bin:$PATH"


def test_the_build_context_lets_through_what_the_dockerfile_copies() -> None:
    """Each COPY source is re-included in .dockerignore, which keeps everything else out."""
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"  # everything out first: what follows is an allowlist
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert set(IMAGE.context_sources) == allowed
