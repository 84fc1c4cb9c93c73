"""Package layout rules read from the source: training knows no task, no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "heldout"


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules ``path`` imports (every ``import`` / ``from`` statement, or only those at
    module level, which are the ones that can form a cycle at import time)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_training_never_imports_the_organism() -> None:
    offenders = {_module(p): sorted(m for m in _imports(p, top_level_only=False)
                                    if m.startswith("heldout.organism"))
                 for p in (PACKAGE / "training").glob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
    # the planted check works: the organism itself does import the organism
    assert any(m.startswith("heldout.organism")
               for m in _imports(PACKAGE / "organism" / "experiment.py", top_level_only=False))


def test_no_import_cycles_inside_training() -> None:
    files = {_module(p): p for p in (PACKAGE / "training").glob("*.py")}
    graph = {name: {m for m in _imports(path, top_level_only=True) if m in files and m != name}
             for name, path in files.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle.extend(stack + [node, nxt])
                return True
            if nxt not in state and visit(nxt, stack + [node]):
                return True
        state[node] = 2
        return False

    assert not any(visit(n, []) for n in sorted(graph) if n not in state), cycle
    assert len(graph) >= 10  # the scan saw the package


def test_no_private_names_cross_modules() -> None:
    crossing = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("heldout"):
                crossing += [f"{_module(path)}: {node.module}.{a.name}" for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")]
    assert crossing == []
