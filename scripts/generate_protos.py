"""Generate the Python stubs from ``proto/``: the server's under ``adapter/_proto/``, and the
client distribution's under ``clients/python/src/nvp_adapter_client/``.

Usage::

    python scripts/generate_protos.py           # regenerate both in place
    python scripts/generate_protos.py --check   # fail if either committed copy drifts from proto/

protoc writes imports such as ``from mpgs.gateway.v1 import x_pb2``; the only step after it
prefixes them with the target's package (``adapter._proto.``, ``nvp_adapter_client.``), so the
stubs live inside that package without a top-level ``mpgs`` package of their own. The two copies
are the same protoc output under two prefixes: the server never imports the client distribution,
and the client never needs the server.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
CLIENT = ROOT / "clients" / "python"


@dataclass(frozen=True)
class Target:
    """Where one copy of the stubs lives, and the import prefix that places it there."""

    out: Path
    """The folder protoc writes into (its ``mpgs/`` tree is the generated part)."""
    prefix: str
    """What ``from mpgs.`` becomes: the dotted name of ``out``, with a trailing dot."""
    owned: bool
    """The whole folder is generated (``adapter/_proto``); otherwise only its proto packages are,
    beside hand-written modules (the client's ``__init__``, ``status``, ``retry``)."""


TARGETS = (
    Target(ROOT / "adapter" / "_proto", "adapter._proto.", owned=True),
    Target(CLIENT / "src" / "nvp_adapter_client", "nvp_adapter_client.", owned=False),
)


def _sources() -> list[str]:
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


def _proto_packages() -> list[str]:
    """The top-level folders of proto/ (``mpgs``): what each target holds generated."""
    return sorted({s.split("/")[0] for s in _sources()})


def generate(out: Path, prefix: str) -> None:
    """Run protoc (with the grpc and mypy plugins) over every file in proto/ into ``out``,
    imports prefixed with ``prefix``."""
    sources = _sources()
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    bindir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    packages = {p.parent for p in out.rglob("*.py")} | {out}
    for package in packages:
        for parent in [package, *package.parents]:
            if parent == out.parent:
                break
            (parent / "__init__.py").touch()
    for path in out.rglob("*.py*"):
        text = path.read_text()
        for proto_package in _proto_packages():
            text = text.replace(f"from {proto_package}.", f"from {prefix}{proto_package}.")
            text = text.replace(f"import {proto_package}.", f"import {prefix}{proto_package}.")
        path.write_text(text)


def _generated(target: Target, root: Path) -> list[tuple[Path, Path]]:
    """Pairs (fresh, committed) of what ``target`` holds generated, ``root`` being the fresh
    output: the whole folder, or each proto package and the empty ``__init__`` protoc's tree
    needs (an owned folder's; a client's ``__init__`` is its own)."""
    if target.owned:
        return [(root, target.out)]
    return [(root / name, target.out / name) for name in _proto_packages()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    check = parser.parse_args().check
    drift: list[str] = []
    for target in TARGETS:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / target.out.name
            fresh.mkdir()
            generate(fresh, target.prefix)
            for new, committed in _generated(target, fresh):
                if check:
                    if not committed.is_dir():
                        drift.append(str(committed.relative_to(ROOT)))
                        continue
                    drift += [
                        str((committed / name).relative_to(ROOT))
                        for name in _diff(filecmp.dircmp(new, committed))
                    ]
                    continue
                shutil.rmtree(committed, ignore_errors=True)
                shutil.copytree(new, committed)
                print(f"wrote {committed.relative_to(ROOT)}")
    if check:
        if drift:
            sys.exit(
                "generated stubs drift from proto/: "
                + ", ".join(sorted(drift))
                + "\nrun: python scripts/generate_protos.py"
            )
        print("generated stubs match proto/ (" + ", ".join(_shown(t) for t in TARGETS) + ")")


def _shown(target: Target) -> str:
    return str(target.out.relative_to(ROOT))


def _diff(cmp: filecmp.dircmp[str], under: Path = Path()) -> list[str]:
    ignored = {"__pycache__"}
    drift = [
        str(under / n) for n in cmp.left_only + cmp.right_only + cmp.diff_files if n not in ignored
    ]
    for name, sub in cmp.subdirs.items():
        if name not in ignored:
            drift += _diff(sub, under / name)
    return drift


if __name__ == "__main__":
    main()
