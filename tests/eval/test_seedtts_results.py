"""The run files: written whole, read with the one JSON-lines reader (a cut-short timing record is skipped, a
byte-order mark is accepted, a bad results line names file:line); no import cycle in eval/."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from eval.seedtts.results import ReportError, read_generation_log, read_results, write_json

ROOT = Path(__file__).resolve().parents[2]


def test_a_timing_record_cut_short_by_a_killed_run_is_skipped(tmp_path, caplog):
    records = [{"utt": "a", "rtf": 0.5}, {"utt": "b", "rtf": 0.7}]
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"utt": "c", "rt'  # killed mid-write
    (tmp_path / "generation.jsonl").write_text(text)
    assert read_generation_log(tmp_path) == {"a": records[0], "b": records[1]}
    assert "generation.jsonl:3: not valid JSON" in caplog.text


def test_results_with_a_byte_order_mark_read_and_bad_lines_are_named(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"utt": "a", "status": "ok", "wer": 0.0}).encode() + b"\n")
    assert read_results(path) == [{"utt": "a", "status": "ok", "wer": 0.0}]
    path.write_bytes(b'{"utt": "a", "status": "ok", "wer": 0.0}\n{"utt": "caf\xe9"}\n')
    with pytest.raises(ReportError, match=r"results\.jsonl:2: not UTF-8 text"):
        read_results(path)
    path.write_text('{"utt": "a"}\n')
    with pytest.raises(ReportError, match=r"results\.jsonl:1: a result record needs at least 'status' and 'wer'"):
        read_results(path)


def test_json_outputs_replace_the_old_file_whole(tmp_path):
    write_json(tmp_path / "summary.json", {"wer": 1.0})
    write_json(tmp_path / "summary.json", {"wer": 0.5, "text": "café"})
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8")) == {"wer": 0.5, "text": "café"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def _imports(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same top-level package it imports, at module level or inside functions."""
    top = package.name
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[module] = {m for m in found if m.split(".")[0] == top}
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


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


def test_no_import_cycle_in_eval_counting_imports_inside_functions():
    graph = _imports(ROOT / "eval")
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}  # a package's own init
    assert graph["eval.seedtts.score"] and graph["eval.seedtts.report"]  # the graph sees these modules' imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
