"""Generate the Python stubs under ``adapter/_proto/`` from ``proto/``.

Usage::

    python scripts/generate_protos.py           # regenerate in place
    python scripts/generate_protos.py --check   # fail if the committed stubs drift from proto/

protoc writes imports such as ``from mpgs.gateway.v1 import x_pb2``; the only step after it
prefixes them with ``adapter._proto.`` so the stubs live inside the package without a top-level
``mpgs`` package of their own.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "adapter" / "_proto"
PREFIX = "adapter._proto."


def generate(out: Path) -> None:
    """Run protoc (with the grpc and mypy plugins) over every file in proto/ into ``out``."""
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
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
        for proto_package in {s.split("/")[0] for s in sources}:
            text = text.replace(f"from {proto_package}.", f"from {PREFIX}{proto_package}.")
            text = text.replace(f"import {proto_package}.", f"import {PREFIX}{proto_package}.")
        path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_proto"
        fresh.mkdir()
        generate(fresh)
        if check:
            drift = _diff(filecmp.dircmp(fresh, OUT))
            if drift:
                sys.exit(
                    "generated stubs drift from proto/: "
                    + ", ".join(sorted(drift))
                    + "\nrun: python scripts/generate_protos.py"
                )
            print("generated stubs match proto/")
            return
        shutil.rmtree(OUT, ignore_errors=True)
        shutil.copytree(fresh, OUT)
        print(f"wrote {OUT.relative_to(ROOT)}")


def _diff(cmp: filecmp.dircmp[str]) -> list[str]:
    ignored = {"__pycache__"}
    drift = [n for n in cmp.left_only + cmp.right_only + cmp.diff_files if n not in ignored]
    for sub in cmp.subdirs.values():
        drift += _diff(sub)
    return drift


if __name__ == "__main__":
    main()
