"""The lock: one resolution in four hash-pinned files, the ranges it satisfies, and this very
environment holding exactly what it names.

The last test is the one that makes a green run mean something: a run in a ``.venv`` with a
package left over from an earlier install, or one missing, fails here, whatever else passed.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CLIENT_PYPROJECT = tomllib.loads((ROOT / "clients" / "python" / "pyproject.toml").read_text())

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)(?P<rest>.*)$")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    """One entry of a lock file: ``name==version ; marker`` and its hashes."""

    name: str
    version: Version
    marker: str
    hashes: frozenset[str]

    def applies(self) -> bool:
        """Whether pip installs this entry on this machine (its marker, if any, holds)."""
        return not self.marker or Requirement(f"x ; {self.marker}").marker.evaluate()  # type: ignore[union-attr]


def read_lock(name: str) -> dict[str, Pin]:
    """The entries of ``requirements/<name>``, by canonical name; checks the file's form."""
    pins: dict[str, Pin] = {}
    entries = re.split(r"\n(?=\S)", (LOCKS / name).read_text())
    for entry in entries:
        if entry.startswith("#") or not entry.strip():
            continue
        first = entry.splitlines()[0]
        match = _PIN.match(first)
        assert match, f"{name}: not a pinned requirement: {first!r}"
        marker = match["rest"].rstrip(" \\").removeprefix(" ;").strip()
        hashes = frozenset(_HASH.findall(entry))
        key = canonicalize_name(match["name"])
        assert key not in pins, f"{name}: {key} pinned twice"
        pins[key] = Pin(key, Version(match["version"]), marker, hashes)
    return pins


DEV = read_lock("dev.txt")
RUNTIME = read_lock("runtime.txt")
BUILD = read_lock("build.txt")
CLIENT = read_lock("client.txt")


def _declared() -> list[tuple[str, Requirement]]:
    """Every requirement the project declares, with where: runtime, extras, groups, build."""
    declared = [("dependencies", Requirement(r)) for r in PYPROJECT["project"]["dependencies"]]
    for extra, requirements in PYPROJECT["project"]["optional-dependencies"].items():
        declared += [(f"optional-dependencies.{extra}", Requirement(r)) for r in requirements]
    for group, requirements in PYPROJECT["dependency-groups"].items():
        declared += [(f"dependency-groups.{group}", Requirement(r)) for r in requirements]
    declared += [("build-system", Requirement(r)) for r in PYPROJECT["build-system"]["requires"]]
    return declared


@pytest.mark.parametrize(("where", "requirement"), _declared(), ids=str)
def test_every_declared_requirement_is_locked_within_its_range(
    where: str, requirement: Requirement
) -> None:
    """``pyproject.toml`` and the lock agree: no range the lock steps out of, nothing unlocked."""
    lock = BUILD if where == "build-system" else DEV
    pin = lock.get(canonicalize_name(requirement.name))
    relock = "run scripts/refresh_lock.sh --keep"
    assert pin is not None, f"{where}: {requirement} is not in the lock; {relock}"
    assert requirement.specifier.contains(pin.version, prereleases=True), (
        f"{where}: {requirement} but the lock pins {pin.version}; {relock}"
    )


@pytest.mark.parametrize("name", ["dev.txt", "runtime.txt", "build.txt", "client.txt"])
def test_every_locked_file_has_hashes_and_the_lock_names_no_index(name: str) -> None:
    """pip runs with ``--require-hashes``; an index or link line would name a host, so none."""
    pins = read_lock(name)
    assert pins
    assert all(pin.hashes for pin in pins.values()), [p.name for p in pins.values() if not p.hashes]
    text = (LOCKS / name).read_text()
    assert not re.search(r"^\s*-(-index-url|-extra-index-url|-find-links|i|f)\b", text, re.M)
    assert "://" not in text


@pytest.mark.parametrize(
    ("name", "lock"), [("runtime.txt", RUNTIME), ("build.txt", BUILD), ("client.txt", CLIENT)]
)
def test_the_image_and_build_locks_are_the_dev_lock_s_own_versions(
    name: str, lock: dict[str, Pin]
) -> None:
    """One resolution: what the image installs is what the tests ran on, file hashes included."""
    for key, pin in lock.items():
        assert key in DEV, f"{name}: {key} is not in dev.txt"
        assert (pin.version, pin.hashes) == (DEV[key].version, DEV[key].hashes), key


def test_the_runtime_lock_holds_what_the_package_needs_and_no_dev_tool() -> None:
    """``runtime.txt`` is the package's install set alone: no test or lint tool in the image."""
    for requirement in map(Requirement, PYPROJECT["project"]["dependencies"]):
        if requirement.marker is None or requirement.marker.evaluate():
            assert canonicalize_name(requirement.name) in RUNTIME, requirement.name
    for tool in ("pytest", "mypy", "ruff", "hypothesis", "trustme", "uv", "grpcio-tools"):
        assert tool not in RUNTIME, f"runtime.txt holds the dev tool {tool}"


@pytest.mark.parametrize(
    "requirement", [Requirement(r) for r in CLIENT_PYPROJECT["project"]["dependencies"]], ids=str
)
def test_the_client_lock_holds_the_client_s_dependencies_within_their_ranges(
    requirement: Requirement,
) -> None:
    """``requirements/client.txt`` pins each dependency of ``clients/python`` inside its range."""
    pin = CLIENT.get(canonicalize_name(requirement.name))
    assert pin is not None, (
        f"{requirement} is not in client.txt; run scripts/refresh_lock.sh --keep"
    )
    assert requirement.specifier.contains(pin.version, prereleases=True), requirement


def test_the_client_lock_holds_no_server_dependency() -> None:
    """A fresh environment with the client alone gets grpcio, protobuf, googleapis-common-protos
    and what they need: nothing of the server's own (aiohttp, grpcio-status, ...)."""
    for name in ("aiohttp", "grpcio-status", "grpcio-health-checking", "cattrs", "pytest"):
        assert name not in CLIENT, f"client.txt holds {name}"


# Not named by the lock, and rightly so: the installer the interpreter's venv module brings, and
# the project itself and its client distribution (both installed editable from the checkout).
_NOT_LOCKED = frozenset({"pip", "nvp-adapter", "nvp-adapter-client"})


def test_this_environment_holds_exactly_the_locked_distributions() -> None:
    """The suite runs on the lock alone: no leftover, nothing missing, no other version."""
    installed: dict[str, Version] = {
        canonicalize_name(dist.metadata["Name"]): Version(dist.version)
        for dist in importlib.metadata.distributions()
    }
    wanted: dict[str, Version] = {key: pin.version for key, pin in DEV.items() if pin.applies()}
    extra = sorted(set(installed) - set(wanted) - _NOT_LOCKED)
    missing = sorted(set(wanted) - set(installed))
    assert (extra, missing) == ([], []), "the environment is not the lock: run scripts/bootstrap.sh"
    differ = {k: (str(installed[k]), str(v)) for k, v in wanted.items() if installed[k] != v}
    assert differ == {}, "installed != locked"
