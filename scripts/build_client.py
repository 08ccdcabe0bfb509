"""Build the client distribution (``clients/python``) as a wheel, and check what the wheel holds.

Usage: .venv/bin/python scripts/build_client.py [--out DIR]

The wheel is built by the locked setuptools of this environment (``--no-build-isolation``, as the
server's wheel is in the image), from a copy of ``clients/python`` so that the checkout gets no
``build/`` of its own. It must hold every generated module of ``proto/`` with its ``.pyi``, the
hand-written modules, ``py.typed``; no module of the server; and name as dependencies grpcio,
protobuf and googleapis-common-protos alone, at the server's version. Prints the wheel's path;
exits 1 naming what is wrong.
"""

from __future__ import annotations

import argparse
import email.parser
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python"
PACKAGE = "nvp_adapter_client"
DEPENDENCIES = {"grpcio", "protobuf", "googleapis-common-protos"}
HAND_WRITTEN = ("__init__.py", "status.py", "retry.py", "py.typed")


def build(out: Path) -> Path:
    """The wheel of ``clients/python``, written into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "python"
        shutil.copytree(
            CLIENT, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
        )
        command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel"]
        command += ["--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out)]
        subprocess.run([*command, str(source)], check=True)
    (wheel,) = out.glob("nvp_adapter_client-*.whl")
    return wheel


def expected_files() -> set[str]:
    """What the wheel must hold of the package: every stub protoc makes from ``proto/``, typed,
    and the hand-written modules."""
    wanted = {f"{PACKAGE}/{name}" for name in HAND_WRITTEN}
    for proto in (ROOT / "proto").rglob("*.proto"):
        stem = proto.relative_to(ROOT / "proto").with_suffix("").as_posix()
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"):
            wanted.add(f"{PACKAGE}/{stem}{suffix}")
    return wanted


def problems(wheel: Path) -> list[str]:
    """What is wrong with ``wheel``; empty when nothing is."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    found = [f"missing {name}" for name in sorted(expected_files() - names)]
    found += [
        f"holds {n}" for n in sorted(names) if not n.startswith((f"{PACKAGE}/", f"{PACKAGE}-"))
    ]
    requires = {
        re.split(r"[ <>=!~;\[]", r, maxsplit=1)[0] for r in metadata.get_all("Requires-Dist") or []
    }
    if requires != DEPENDENCIES:
        found.append(f"depends on {sorted(requires)}, not {sorted(DEPENDENCIES)}")
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    if metadata["Version"] != server:
        found.append(f"version {metadata['Version']}, the server's is {server}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, help="where to write the wheel (default: a temporary folder)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build(args.out or Path(tmp))
        wrong = problems(wheel)
        if wrong:
            print(f"build_client: {wheel.name}: " + "; ".join(wrong), file=sys.stderr)
            return 1
        print(wheel if args.out else f"build_client: {wheel.name} holds what it must")
    return 0


if __name__ == "__main__":
    sys.exit(main())
