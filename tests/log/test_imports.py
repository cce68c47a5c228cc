"""`lictor.log` is layered: its modules import each other without any cycle.

Imports are read from the source, including imports inside functions, which
hide a cycle from the interpreter but not from a reader. The package's
``__init__`` is left out: it only imports `lictor.log.cosignature` so that the
0x04 key type is registered with `lictor.log.note`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lictor.log

PACKAGE = Path(lictor.log.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _imports(module: str) -> set[str]:
    """The ``lictor.*`` modules that ``lictor/log/<module>.py`` imports anywhere."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "lictor.log":
                found.update(f"lictor.log.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("lictor.")}


def _graph() -> dict[str, set[str]]:
    prefix = "lictor.log."
    return {
        m: {i.removeprefix(prefix) for i in _imports(m) if i.startswith(prefix)} for m in MODULES
    }


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path of module names, or [] if there is none."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        for target in sorted(graph.get(module, ())):
            found = visit(target, [*path, module])
            if found:
                return found
        done.add(module)
        return []

    for module in MODULES:
        found = visit(module, [])
        if found:
            return found
    return []


def test_modules_found() -> None:
    assert {"checkpoint", "cosignature", "encoding", "merkle", "note", "proof"} <= set(MODULES)


def test_no_import_cycles() -> None:
    assert _cycle(_graph()) == []


def test_cycle_finder_finds_cycles() -> None:
    assert _cycle({"note": {"checkpoint"}, "checkpoint": {"note"}}) in (
        ["checkpoint", "note", "checkpoint"],
        ["note", "checkpoint", "note"],
    )


def test_note_knows_no_signature_type_built_on_it() -> None:
    assert _graph()["note"] <= {"encoding"}


def test_log_is_pure() -> None:
    # The log's modules use only the error tree from the rest of Lictor.
    for module in MODULES:
        outside = {i for i in _imports(module) if not i.startswith("lictor.log.")}
        assert outside <= {"lictor.errors"}, module
