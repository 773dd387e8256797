"""Turns the outputs of scripts/gpu_check.sh into one Markdown report (and one JSON with every number).

    python scripts/gpu_report.py WORK_DIR OUT_DIR ELAPSED_S

Reads WORK_DIR/{machine.txt, steps.txt, pytest.xml, engine.json, generate.json, compiled.json, codec.json,
train.json, coldstart.json} (each optional: a step that did not run leaves a gap that the report names) and writes
OUT_DIR/gpu_report.md and OUT_DIR/results.json.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def _load(work: Path, name: str) -> dict | None:
    path = work / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _table(header: list[str], rows: list[list]) -> list[str]:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _tests(work: Path) -> list[str]:
    try:
        root = ET.parse(work / "pytest.xml").getroot()
    except (OSError, ET.ParseError):
        return ["(no test results)", ""]
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    lines = [
        f"{counts['tests']} tests: {counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']} "
        f"passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped",
        "",
    ]
    for case in suite.iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            message = (bad.get("message") or "").splitlines()[0][:200] if bad.get("message") else ""
            lines.append(f"- FAILED `{case.get('classname')}::{case.get('name')}`: {message}")
    return lines + [""]


def _generate(result: dict, title: str) -> list[str]:
    cols = result["columns"]
    header = ["batch", "K"] + [f"{c} ms/frame" for c in cols] + ["frames/s", "RTF (1 stream)", "speedup vs first"]
    rows = []
    for r in result["rows"]:
        rows.append(
            [r["batch"], r["depth"]]
            + [r.get(f"{c}_ms_per_frame", float("nan")) for c in cols]
            + [r["best_frames_per_s"], r["rtf_per_stream"], r["speedup"]]
        )
    warm = [f"{c} {r[f'{c}_warmup_s']:.1f}s" for r in result["rows"][:1] for c in cols if f"{c}_warmup_s" in r]
    note = [f"Warm-up (CUDA graph capture / compilation) of the first row: {', '.join(warm)}.", ""] if warm else []
    return [f"## {title}", "", result["model"], ""] + _table(header, rows) + note


def _engine(result: dict) -> list[str]:
    header = ["K", "N", "concurrent frames/s", "sequential frames/s", "ratio", "aggregate RTF", "TTFA p50 ms",
              "TTFA p95 ms", "sequential TTFA p50 ms", "sequential TTFA p95 ms"]  # fmt: skip
    rows = []
    for r in result["rows"]:
        c, s = r["concurrent"], r["sequential"] or {}
        rows.append([r["depth"], r["concurrency"], c["frames_per_s"], s.get("frames_per_s", float("nan")),
                     r["ratio"], c["rtf"], c["ttfa_p50_ms"], c["ttfa_p95_ms"], s.get("ttfa_p50_ms", float("nan")),
                     s.get("ttfa_p95_ms", float("nan"))])  # fmt: skip
    return [
        "## Engine: N concurrent requests vs one after another",
        "",
        f"{result['model']}; {result['frames_per_request']} frames per request; TTFA from the common submission.",
        "",
    ] + _table(header, rows)


def _flat(result: dict, title: str) -> list[str]:
    """A generic table of the scalar numbers of a benchmark result."""
    rows = [[k, v] for k, v in result.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    lines = [f"## {title}", ""] + _table(["quantity", "value"], rows)
    for key, value in result.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            header = sorted({k for item in value for k, v in item.items() if isinstance(v, (int, float, str))})
            lines += [f"{key}:", ""] + _table(header, [[item.get(h, "") for h in header] for item in value])
    return lines


def main(work: str, out: str, elapsed: str) -> None:
    work_dir, out_dir = Path(work), Path(out)
    lines = ["# cat-tts GPU check", ""]
    machine = (work_dir / "machine.txt").read_text().strip() if (work_dir / "machine.txt").is_file() else "unknown"
    lines += ["```", machine, "```", "", f"Total wall time: {elapsed} s.", "", "## Steps", ""]
    steps = (work_dir / "steps.txt").read_text().strip() if (work_dir / "steps.txt").is_file() else ""
    lines += [f"- {line}" for line in steps.splitlines()] + ["", "## GPU tests", ""] + _tests(work_dir)
    results = {}
    for name in ("engine", "generate", "compiled", "codec", "train", "coldstart"):
        result = _load(work_dir, name)
        results[name] = result
        if result is None:
            lines += [f"## {name}", "", "(not run or failed: see the steps above and gpu_check.log)", ""]
            continue
        try:
            if name == "engine":
                lines += _engine(result)
            elif name == "generate":
                lines += _generate(result, "Frame step: eager vs CUDA graphs")
            elif name == "compiled":
                lines += _generate(result, "Frame step: torch.compile + CUDA graphs")
            else:
                lines += _flat(result, name)
        except (KeyError, TypeError, ValueError) as err:
            lines += [f"## {name}", "", f"(could not tabulate: {err!r}; raw numbers in results.json)", ""]
    (out_dir / "gpu_report.md").write_text("\n".join(lines) + "\n")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
