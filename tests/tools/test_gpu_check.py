"""scripts/gpu_check.sh is right before device time is spent: its steps, their commands, its report.

The full dry run (every step on the CPU at tiny sizes, the same commands and report as on a GPU) is in the slow tier;
the default suite checks the step list, that every benchmark command of a real run parses, a reduced dry run, and the
report's rows from real benchmark output.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cat_tts.tools.bench.__main__ import build_parser
from cat_tts.tools.bench.__main__ import main as bench_main

ROOT = Path(__file__).resolve().parents[2]
STATUSES = {"ok", "failed", "timed out", "skipped"}
FRAME_ROW = {"bench", "batch", "depth", "mode", "ms_per_frame"}
ENGINE_ROW = {"bench", "concurrency", "depth", "frames_per_request", "aggregate_realtime", "stream_rtf_p50",
              "stream_rtf_p95", "ttfa_ms_p50", "ttfa_ms_p95"}  # fmt: skip


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gpu_check = _script("gpu_check")
gpu_report = _script("gpu_report")


def test_the_steps_cover_the_checks_and_fit_nine_minutes_of_device_time():
    keys = [s.key for s in gpu_check.STEPS]
    assert keys[:2] == ["wheels", "tests"]  # wheels before anything imports them; then the correctness tests
    assert set(keys) == {"wheels", "tests", "generate", "engine", "compiled", "profile", "codec", "ttfa", "train",
                         "compile_cache"}  # fmt: skip
    assert sum(s.limit_s for s in gpu_check.STEPS) <= gpu_check.DEFAULT_BUDGET_S <= 9 * 60
    listed = subprocess.run([sys.executable, "scripts/gpu_check.py", "--list"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()  # fmt: skip
    assert [line.split()[0] for line in listed] == keys


@pytest.mark.parametrize("sizes", ["REAL", "DRY"])
def test_every_benchmark_command_parses(sizes, tmp_path):
    parser, _ = build_parser()
    commands = [step.command(getattr(gpu_check, sizes), tmp_path) for step in gpu_check.STEPS]
    bench = [c for c in commands if c and c[1:3] == ["-m", "cat_tts.tools.bench"]]
    assert len(bench) == 8
    for command in bench:
        args = parser.parse_args(command[3:])  # an unknown option or a bad value exits here
        assert Path(args.json).parent == tmp_path
        if sizes == "REAL" and getattr(args, "device", "cuda") != "cuda":
            pytest.fail(f"a real run's step runs on {args.device}: {command}")


def _check_report(out: Path, dry_run: bool) -> dict:
    data = json.loads((out / "report.json").read_text())
    assert {"date", "device", "device_type", "dry_run", "steps", "rows"} <= set(data)
    assert data["dry_run"] is dry_run and data["device_type"] in ("cuda", "cpu")
    assert [s["key"] for s in data["steps"]] == [s.key for s in gpu_check.STEPS]
    for step in data["steps"]:
        assert {"name", "status", "seconds"} <= set(step) and step["status"] in STATUSES
    for row in data["rows"]:
        assert FRAME_ROW <= set(row) if row["bench"] == "frame" else True
        assert ENGINE_ROW <= set(row) if row["bench"] == "engine" else True
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# cat-tts GPU check") and "## Steps" in markdown
    return data


def test_a_reduced_dry_run_writes_the_report(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--only", "wheels", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = _check_report(out, dry_run=True)
    assert data["device_type"] == "cpu" and data["rows"] == []
    assert all(s["status"] == "skipped" for s in data["steps"] if s["key"] != "wheels")
    assert (out / "gpu_check.log").is_file()


def test_the_report_tabulates_real_benchmark_output(tmp_path):
    results = {}
    for key, argv in {
        "generate": ["generate", "--batches", "1", "--depths", "2", "--modes", "eager", "--frames", "4"],
        "engine": ["engine", "--concurrency", "1", "--depths", "2", "--frames", "2-3", "--reference-seconds", "0.5",
                   "--requests-per-client", "1"],
        "profile": ["profile", "--modes", "eager", "--depth", "2", "--frames", "4", "--top", "3"],
    }.items():  # fmt: skip
        path = tmp_path / f"{key}.json"
        assert bench_main(["--json", str(path), *argv, "--quick", "--device", "cpu"]) == 0
        results[key] = json.loads(path.read_text())
    results["engine"]["complete"] = False  # as a step stopped at its limit leaves it
    steps = [{"key": s.key, "name": s.name, "status": "ok", "seconds": 1.0} for s in gpu_check.STEPS]
    data = gpu_report.build(date="2026-01-01", machine={"device": "cpu", "device_type": "cpu"}, dry_run=True,
                            budget_s=540, total_s=1.0, steps=steps, results=results)  # fmt: skip
    gpu_report.write(data, tmp_path / "out")
    data = _check_report(tmp_path / "out", dry_run=True)
    kinds = [r["bench"] for r in data["rows"]]
    assert kinds.count("frame") == 1 and kinds.count("engine") == 1 and kinds.count("profile") == 1 + 3
    assert all(r.get("partial") for r in data["rows"] if r["bench"] == "engine")
    markdown = (tmp_path / "out" / "report.md").read_text()
    for section in ("## Frame step", "## Engine under", "## Profile", "Top operators", "(partial: the step was"):
        assert section in markdown
    assert "## Codec: encode / decode\n\n(not measured)" in markdown


@pytest.mark.slow  # ~10 minutes on 2 idle cores: every step of the real run, at tiny sizes on the CPU
def test_the_dry_run_runs_every_step(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=gpu_check.DRY_BUDGET_S + 300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    data = _check_report(out, dry_run=True)
    status = {s["key"]: s["status"] for s in data["steps"]}
    assert all(v == "ok" for k, v in status.items() if k != "wheels"), status  # wheels: ok, or none carried
    kinds = {r["bench"] for r in data["rows"]}
    assert kinds == {"frame", "engine", "profile", "codec", "ttfa", "train"}
    assert {r["mode"] for r in data["rows"] if r["bench"] == "frame"} == {"eager", "graphs", "default", "compiled"}
    assert {(r["step"], r["start"]) for r in data["rows"] if r["bench"] == "ttfa"} == {
        ("ttfa", "first"), ("ttfa", "warm"), ("compile_cache", "first"), ("compile_cache", "warm")}  # fmt: skip
