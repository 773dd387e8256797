"""The report of a GPU check (scripts/gpu_check.py): report.json (every number) and report.md (the tables).

    python scripts/gpu_report.py DIR        # rewrite DIR/report.md from DIR/report.json

report.json:

    {"date": "YYYY-MM-DD", "device": "NVIDIA H200" | "<cpu> (N threads)", "device_type": "cuda" | "cpu",
     "dry_run": bool, "budget_s", "total_s", "machine": {versions, "missing": [packages]},
     "steps": [{"key", "name", "status": "ok" | "failed" | "timed out" | "skipped", "seconds", "limit_s",
                "detail"?}],
     "tests": {"tests", "passed", "failed", "errors", "skipped", "failures": [...]} | null,
     "rows": [...],                      # one flat list; "bench" says what a row is
     "results": {step key: the benchmark's own JSON (partial when the step was stopped: "complete": false)}}

Rows: `{"bench": "frame", "batch", "depth", "mode", "ms_per_frame", ...}` (generate, compiled);
`{"bench": "engine", "concurrency", "depth", "frames_per_request", "aggregate_realtime", "stream_rtf_p50",
"stream_rtf_p95", "ttfa_ms_p50", "ttfa_ms_p95", "stall_s_p50", "stall_s_p95", "mode", ...}`;
`{"bench": "profile", "mode", "batch", "depth", "kind": "summary" | "kernel" | "op", "name", "ms_per_frame", ...}`;
`{"bench": "codec", "batch", "encode_rtf", "decode_rtf", ...}`; `{"bench": "ttfa", "step", "compile", "start":
"first" | "warm", "first_audio_s", ...}`; `{"bench": "train", "p", "tokens_per_s", "peak_memory_gb", ...}`.
"""

from __future__ import annotations

import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

STATUSES = ("ok", "failed", "timed out", "skipped")
FRAME_KEYS = ("bench", "batch", "depth", "mode", "ms_per_frame")
ENGINE_KEYS = ("bench", "concurrency", "depth", "frames_per_request", "aggregate_realtime", "stream_rtf_p50",
               "stream_rtf_p95", "ttfa_ms_p50", "ttfa_ms_p95")  # fmt: skip


def build(date: str, machine: dict, dry_run: bool, budget_s: float, total_s: float, steps: list[dict],
          results: dict[str, dict], junit: Path | None = None) -> dict:  # fmt: skip
    """The report's data from the run's steps and the benchmarks' JSON results (keyed by step)."""
    rows: list[dict] = []
    for key, result in results.items():
        rows += _rows(key, result)
    return {
        "date": date,
        "device": machine.get("device", "unknown"),
        "device_type": machine.get("device_type", "cpu"),
        "dry_run": dry_run,
        "budget_s": budget_s,
        "total_s": total_s,
        "machine": machine,
        "steps": steps,
        "tests": _tests(junit) if junit is not None else None,
        "rows": rows,
        "results": results,
    }


def write(data: dict, out: Path) -> None:
    """Writes OUT/report.json and OUT/report.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(_finite(data), indent=1) + "\n")
    (out / "report.md").write_text(markdown(data))


# ------------------------------------------------------------------------------------------------------ rows
def _rows(key: str, result: dict) -> list[dict]:
    """Report rows of one step's result (see the module docstring)."""
    partial = result.get("complete") is False
    out: list[dict] = []
    if key in ("generate", "compiled", "engine", "codec"):
        out = [dict(r) for r in result.get("rows", [])]
    elif key == "profile":
        for p in result.get("modes", []):
            base = {"bench": "profile", "mode": p["mode"], "batch": result["batch"], "depth": result["depth"]}
            summary = {"name": "(frame step)", "frames": p["frames"], "ms_per_frame": p["wall_ms_per_frame"],
                       "profiled_ms_per_frame": p["profiled_wall_ms_per_frame"]}  # fmt: skip
            summary |= {k: p[k] for k in ("device_ms_per_frame", "kernels_per_frame", "cpu_ops_ms_per_frame")}
            out.append({**base, "kind": "summary", **summary})
            out += [{**base, "kind": "kernel", **r} for r in p["top_kernels"]]
            out += [{**base, "kind": "op", **r} for r in p["top_ops"]]
    elif key in ("ttfa", "compile_cache"):
        ttfa = result.get("ttfa") or {}
        for start, run in (ttfa.get("runs") or {}).items():
            row = {"bench": "ttfa", "step": key, "preset": result.get("preset"), "device": result.get("device"),
                   "compile": ttfa.get("compile"), "depth": ttfa.get("depth"), "slots": ttfa.get("slots"),
                   "start": {"cold": "first", "warm": "warm"}.get(start, start)}  # fmt: skip
            out.append(row | {k: run.get(k) for k in ("imports_s", "loaded_s", "first_audio_s", "process_s")})
    elif key == "train":
        for r in result.get("results", []):
            out.append(
                {"bench": "train", "preset": result.get("preset")} | {k: v for k, v in r.items() if k != "complete"}
            )
    if partial:
        for r in out:
            r["partial"] = True
    return out


def _tests(junit: Path) -> dict | None:
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failures = []
    for case in suite.iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            message = (bad.get("message") or "").splitlines()[0][:300] if bad.get("message") else ""
            failures.append(f"{case.get('classname')}::{case.get('name')}: {message}")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"tests": counts["tests"], "passed": passed, "failed": counts["failures"], "errors": counts["errors"],
            "skipped": counts["skipped"], "failures": failures}  # fmt: skip


def _finite(value):
    """NaN and infinities become null (strict JSON). As `cat_tts.tools.bench.write_json` does: this script runs
    before cat_tts is installed, so it imports nothing of the package."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# -------------------------------------------------------------------------------------------------- markdown
def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v).replace("|", "\\|")


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows] + [""]


def _model_line(data: dict, *keys: str) -> list[str]:
    for key in keys:
        model = (data["results"].get(key) or {}).get("model")
        if model:
            return [f"Model: {model}.", ""]
    return []


def markdown(data: dict) -> str:
    """The report as Markdown (tables of the rows; the raw numbers stay in report.json)."""
    m = data.get("machine") or {}
    title = "cat-tts GPU check" + (" (dry run: CPU, tiny sizes; the numbers are not measurements)" if data["dry_run"]
                                   else "")  # fmt: skip
    lines = [f"# {title}", "", f"{data['date']}, {data['device']} ({data['device_type']}); python {m.get('python')}, "
             f"torch {m.get('torch')}, CUDA {m.get('cuda')}, transformers {m.get('transformers')}; "
             f"{data['total_s']:.0f} s of a {data['budget_s']:.0f} s budget.", ""]  # fmt: skip
    if m.get("missing"):
        lines += [f"Missing packages: {', '.join(m['missing'])} (carry them as wheels: scripts/gpu_wheels.sh).", ""]
    if m.get("error"):
        lines += [f"Machine probe error: {m['error']}", ""]
    steps = [[s["name"], s["status"], s.get("seconds"), s.get("limit_s"), s.get("detail", "")] for s in data["steps"]]
    lines += ["## Steps", ""] + _table(["step", "status", "seconds", "limit s", "detail"], steps)
    tests = data.get("tests")
    lines += ["## GPU tests", ""]
    if tests:
        lines += [f"{tests['tests']} tests: {tests['passed']} passed, {tests['failed']} failed, {tests['errors']} "
                  f"errors, {tests['skipped']} skipped.", ""]  # fmt: skip
        lines += [f"- FAILED {f}" for f in tests["failures"]]
        lines += [""] if tests["failures"] else []
    else:
        lines += ["(no results)", ""]
    rows = data["rows"]
    lines += _frame_section(data, [r for r in rows if r.get("bench") == "frame"])
    lines += _engine_section(data, [r for r in rows if r.get("bench") == "engine"])
    lines += _profile_section(data, [r for r in rows if r.get("bench") == "profile"])
    lines += _codec_section(data, [r for r in rows if r.get("bench") == "codec"])
    lines += _ttfa_section([r for r in rows if r.get("bench") == "ttfa"])
    lines += _train_section([r for r in rows if r.get("bench") == "train"])
    return "\n".join(lines).rstrip() + "\n"


def _partial_note(rows: list[dict]) -> list[str]:
    return ["(partial: the step was stopped at its time limit; these rows finished before)", ""] if any(
        r.get("partial") for r in rows) else []  # fmt: skip


def _frame_section(data: dict, rows: list[dict]) -> list[str]:
    lines = ["## Frame step (ms per frame)", ""]
    if not rows:
        return lines + ["(not measured)", ""]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    table: dict[tuple[int, int], dict[str, dict]] = {}
    for r in rows:
        table.setdefault((r["batch"], r["depth"]), {})[r["mode"]] = r
    body = []
    for (batch, depth), by_mode in sorted(table.items()):
        measured = [r for r in by_mode.values() if r.get("ms_per_frame")]
        best = min(measured, key=lambda r: r["ms_per_frame"]) if measured else None
        eager = (by_mode.get("eager") or {}).get("ms_per_frame")
        body.append([batch, depth] + [(by_mode.get(mode) or {}).get("ms_per_frame") for mode in modes] + (
            [best["frames_per_s"], best["rtf"], eager / best["ms_per_frame"] if eager else None] if best
            else [None, None, None]))  # fmt: skip
    header = ["batch", "K"] + [f"{mode} ms" for mode in modes] + ["best frames/s", "RTF (1 stream)", "eager / best"]
    return lines + _model_line(data, "generate", "compiled") + _table(header, body) + _partial_note(rows)


def _engine_section(data: dict, rows: list[dict]) -> list[str]:
    lines = ["## Engine under Seed-TTS-Eval-shaped load", ""]
    if not rows:
        return lines + ["(not measured)", ""]
    result = data["results"].get("engine") or {}
    lines += _model_line(data, "engine")
    lines += [f"Requests: {result.get('reference_seconds')} s reference clips, {result.get('frames')} frames of "
              f"output, {result.get('requests_per_client')} per client; x realtime = audio seconds / wall seconds; "
              "stream RTF = (last audio - submit) / audio seconds; stall = a player's total wait after the first "
              "audio.", ""]  # fmt: skip
    header = ["mode", "K", "N", "frames/request", "x realtime", "vs first N", "stream RTF p50", "p95",
              "streams >= 1", "TTFA p50 ms", "p95", "stall p50 s", "p95"]  # fmt: skip
    body = [[r.get("mode"), r["depth"], r["concurrency"], r["frames_per_request"], r["aggregate_realtime"],
             r.get("speedup"), r["stream_rtf_p50"], r["stream_rtf_p95"], r.get("streams_slower_than_realtime"),
             r["ttfa_ms_p50"], r["ttfa_ms_p95"], r.get("stall_s_p50"), r.get("stall_s_p95")] for r in rows]  # fmt: skip
    return lines + _table(header, body) + _partial_note(rows)


def _profile_section(data: dict, rows: list[dict]) -> list[str]:
    lines = ["## Profile: where a frame's time goes", ""]
    if not rows:
        return lines + ["(not measured)", ""]
    lines += _model_line(data, "profile")
    summary = [r for r in rows if r["kind"] == "summary"]
    lines += _table(["mode", "batch", "K", "frames", "wall ms/frame", "under profiler", "device ms/frame",
                     "kernels/frame", "operators' CPU ms/frame"],
                    [[r["mode"], r["batch"], r["depth"], r["frames"], r["ms_per_frame"], r["profiled_ms_per_frame"],
                      r["device_ms_per_frame"], r["kernels_per_frame"], r["cpu_ops_ms_per_frame"]]
                     for r in summary])  # fmt: skip
    for r in summary:
        for kind, title in (("kernel", "kernels, by device time"), ("op", "operators, by own CPU time")):
            top = [x for x in rows if x["mode"] == r["mode"] and x["kind"] == kind]
            if top:
                lines += [f"Top {title} ({r['mode']}):", ""]
                lines += _table(["ms/frame", "calls/frame", "share", "name"],
                                [[x["ms_per_frame"], x["calls_per_frame"], f"{100 * x['share']:.1f}%",
                                  f"`{x['name'][:90]}`"] for x in top])  # fmt: skip
    return lines + _partial_note(rows)


def _codec_section(data: dict, rows: list[dict]) -> list[str]:
    lines = ["## Codec: encode / decode", ""]
    if not rows:
        return lines + ["(not measured)", ""]
    result = data["results"].get("codec") or {}
    lines += [f"{result.get('preset')} codec ({(result.get('parameters') or 0) / 1e6:.1f} M parameters, random "
              f"weights), {result.get('device')}, {result.get('dtype')}; clips of {result.get('audio_seconds', 0):.2f} "
              f"s; streaming chunks of {result.get('chunk_ms', 0):.0f} ms. RTF = time / one clip's duration (all "
              "clips of the batch at once).", ""]  # fmt: skip
    header = ["batch", "encode RTF", "decode RTF", "encode x realtime", "decode x realtime", "stream decode 1st ms",
              "stream decode RTF", "stream encode 1st ms", "stream encode RTF"]  # fmt: skip
    body = [[r["batch"], r["encode_rtf"], r["decode_rtf"], r.get("encode_x_realtime"), r.get("decode_x_realtime"),
             r["stream_decode_first_chunk_ms"], r["stream_decode_rtf"], r["stream_encode_first_chunk_ms"],
             r["stream_encode_rtf"]] for r in rows]  # fmt: skip
    return lines + _table(header, body) + _partial_note(rows)


def _ttfa_section(rows: list[dict]) -> list[str]:
    lines = ["## Time to first audio: first start vs warm start", ""]
    if not rows:
        return lines + ["(not measured)", ""]
    lines += ["Process start -> first audio chunk of `CatTTS.stream`, in fresh processes sharing one compile cache "
              "directory: empty for the first start, filled by it for the warm start.", ""]  # fmt: skip
    body = [[r["step"], r.get("preset"), r.get("compile"), r.get("slots"), r.get("depth"), r["start"],
             r.get("imports_s"), r.get("loaded_s"), r.get("first_audio_s")] for r in rows]  # fmt: skip
    header = ["step", "preset", "compile", "slots", "K", "start", "imports s", "loaded s", "first audio s"]
    return lines + _table(header, body) + _partial_note(rows)


def _train_section(rows: list[dict]) -> list[str]:
    lines = ["## DeepSpeed training step, PSD p = 0 vs p = 1", ""]
    if not rows:
        return lines + ["(not measured)", ""]
    body = [[r.get("preset"), r.get("p"), r.get("mean_depth"), r.get("rows_per_batch"), r.get("tokens_per_s"),
             r.get("step_s"), r.get("peak_memory_gb"), r.get("speedup_vs_baseline")] for r in rows]  # fmt: skip
    header = ["preset", "p", "mean K", "rows/batch", "tokens/s", "step s", "peak GB", "speed vs first"]
    return lines + _table(header, body) + _partial_note(rows)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    out = Path(argv[0])
    data = json.loads((out / "report.json").read_text())
    (out / "report.md").write_text(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
