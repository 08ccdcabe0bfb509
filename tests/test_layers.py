"""The architecture as the tree shows it: which package of ``adapter/`` may import which, and no
import circle between modules.

Read from the code's own import statements (``ast``), every module of ``adapter/`` but the
generated stubs, function-level imports included: an import that breaks a rule fails here, with
the file and the line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ADAPTER = Path(__file__).resolve().parent.parent / "adapter"

# Each package's layer: a module may import its own package and the packages of lower layers,
# never one of a higher layer or of the same layer. ``app`` and ``cli`` are the wiring.
LAYERS: dict[str, int] = {
    "_proto": 0,
    "core": 1,
    "net": 2,
    "config": 3,
    "observability": 4,
    "upstream": 5,
    "embedded": 6,
    "server": 6,
    "probe": 7,
    "app": 8,
    "cli": 9,
    "__main__": 10,
}
TOP_LEVEL_MODULES_AT_MOST = 12


def _package(module: str) -> str:
    """``adapter.core.nvp`` -> ``core``; ``adapter`` itself (its ``version``) -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    relative = path.relative_to(ADAPTER.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every ``adapter...`` module ``path`` imports, with its line."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "adapter":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            assert node.level == 0, (
                f"{path}:{node.lineno}: a relative import; the project's are absolute"
            )
            base = node.module
            if base.split(".")[0] != "adapter":
                continue
            for alias in node.names:  # `from adapter.core import nvp` imports adapter.core.nvp
                candidate = f"{base}.{alias.name}"
                target = ADAPTER.parent / Path(*candidate.split("."))
                exists = target.with_suffix(".py").exists() or (target / "__init__.py").exists()
                yield node.lineno, candidate if exists else base


SOURCES = sorted(p for p in ADAPTER.rglob("*.py") if "_proto" not in p.parts)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ADAPTER)))
def test_no_module_imports_a_package_above_or_beside_its_own(path: Path) -> None:
    """A package imports only lower layers (or itself): the core never the server, the sandbox
    or the observability; only ``app`` knows both the server and ``embedded/``."""
    own = _package(_module_name(path))
    wrong = [
        f"{path.relative_to(ADAPTER)}:{line} imports {target}"
        for line, target in _imports(path)
        if (theirs := _package(target)) not in ("", own) and LAYERS[theirs] >= LAYERS[own]
    ]
    assert wrong == []


def test_every_package_has_a_layer() -> None:
    """A new package or top-level module must be placed in ``LAYERS``: the rule covers it."""
    names = {p.stem if p.is_file() else p.name for p in ADAPTER.iterdir()}
    names -= {"__init__", "__pycache__", "py"}
    names = {n for n in names if not n.endswith(".typed")}
    assert names <= set(LAYERS), sorted(names - set(LAYERS))


def test_at_most_a_dozen_modules_at_the_top() -> None:
    top = [p.name for p in ADAPTER.glob("*.py")]
    assert len(top) <= TOP_LEVEL_MODULES_AT_MOST, top


def test_no_import_circle_between_modules() -> None:
    """Module to module, function-level imports included: no circle, however long."""
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        module = _module_name(path)
        graph[module] = {target for _, target in _imports(path) if target != module}
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            circle = [*trail[trail.index(module) :], module]
            raise AssertionError(" -> ".join(circle))
        if module in done or module not in graph:
            return
        for target in sorted(graph[module]):
            visit(target, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ADAPTER)))
def test_the_server_never_imports_the_client_distribution(path: Path) -> None:
    """``nvp_adapter_client`` is for callers: the server keeps its own stubs (``adapter/_proto``)
    and its image holds no client."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        assert not any(n.split(".")[0] == "nvp_adapter_client" for n in names), (
            f"{path.relative_to(ADAPTER)}:{node.lineno}"
        )
