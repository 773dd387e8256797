"""Rooms of one concern: no import cycle in `cat_tts/` or `eval/` (imports inside functions count; imports only
for type checking do not), no file under `cat_tts/` over 450 lines, and the package's own modules imported at module
level in library code (function-level imports are for optional heavy dependencies, and for command-line entry points
that keep `--help` fast)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450
ENTRY_POINTS = re.compile(r"(^cat_tts/commands/|/cli\.py$|^cat_tts/tools/|__main__\.py$)")


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import of a module with whether it is inside a function; `if TYPE_CHECKING:` blocks are skipped."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            test = getattr(child, "test", None) if isinstance(child, ast.If) else None
            if test is not None and (getattr(test, "id", None) or getattr(test, "attr", None)) == "TYPE_CHECKING":
                for other in child.orelse:
                    visit(other, in_function)
                continue
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, inside))
            visit(child, inside)

    visit(tree, False)
    return found


def _graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same top-level package it imports (at module level or inside functions)."""
    top = package.name
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found: set[str] = set()
        for node, _ in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[module] = {m for m in found if m.split(".")[0] == top}
    # a module importing its own package's __init__ is how Python loads it, not a cycle
    return {m: {d for d in deps if d in graph and d != m and not m.startswith(d + ".")} for m, deps in graph.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


@pytest.mark.parametrize("package", ["cat_tts", "eval"])
def test_no_import_cycle_counting_imports_inside_functions(package):
    graph = _graph(ROOT / package)
    assert sum(map(len, graph.values())) > 20  # the graph sees the imports
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import x\n")
    (pkg / "b.py").write_text("def x():\n    from pkg.a import y\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import y\n")
    assert _cycle(_graph(pkg)) == ["pkg.a", "pkg.b", "pkg.a"]
    assert "pkg.a" not in _graph(pkg)["pkg.c"]  # imports for type checking only are not edges


def test_no_file_under_cat_tts_is_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "cat_tts").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}  # fmt: skip
    assert not long, long


def test_library_modules_import_the_package_at_module_level():
    late = []
    for path in (ROOT / "cat_tts").rglob("*.py"):
        name = str(path.relative_to(ROOT))
        if ENTRY_POINTS.search(name):
            continue
        for node, inside in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            if inside and module and module.split(".")[0] == "cat_tts":
                late.append(f"{name}:{node.lineno} {module}")
    assert not late, late
