"""The sweep report: summaries recomputed from results files, a Markdown row per depth with kbps, PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cat_tts.errors import USER_ERROR_EXIT_CODE
from eval.seedtts.__main__ import main
from eval.seedtts.report import build_report
from eval.seedtts.results import ReportError, summarize

BAD = [{"utt": "utt_c-1", "line_no": 3, "reason": "audio file not found: prompt-wavs/nope.wav"}]


def _rec(utt, depth, wer, sim, status="ok", rtf=None, duration=2.0):
    return {"utt": utt, "depth": depth, "status": status, "wer": wer, "sim": sim, "hypothesis": "h",
            "reference": "r", "duration": duration if status == "ok" else None, "rtf": rtf, "error": None}  # fmt: skip


def _write_run(d: Path, records: list[dict], run: dict | None) -> None:
    d.mkdir(parents=True)
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if run is not None:
        (d / "run.json").write_text(json.dumps(run))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    run = {"testset": "en/meta", "lang": "en", "bad_lines": BAD, "asr_model": "whisper", "sim_model": "sv"}
    _write_run(tmp_path / "depth_8", [_rec("a", 8, 0.5, 0.40, rtf=0.5), _rec("b", 8, None, None, "missing"),
                                      _rec("c", 8, 0.1, 0.60, rtf=1.0, duration=1.0)], {**run, "depth": 8})  # fmt: skip
    _write_run(tmp_path / "depth_16", [_rec("a", 16, 0.2, 0.6), _rec("b", 16, 0.0, 0.7), _rec("c", 16, 0.1, 0.65)],
               {**run, "depth": 16})  # fmt: skip
    _write_run(tmp_path / "depth_32", [_rec("a", 32, 0.0, 0.7), _rec("b", 32, 0.0, 0.75), _rec("c", 32, 0.03, 0.8)],
               None)  # no run.json: the depth comes from the directory name  # fmt: skip
    _write_run(tmp_path / "ground_truth", [_rec(u, None, 0.02, 0.73) for u in "abc"],
               {**run, "depth": None, "ground_truth": True})  # fmt: skip
    return tmp_path


def test_report_cli_writes_table_summary_and_plots(sweep: Path, capsys):
    assert main(["report", str(sweep)]) == 0
    printed = capsys.readouterr().out
    md = (sweep / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| run")]
    assert [r.split("|")[1].strip() for r in rows] == ["ground truth", "depth_8", "depth_16", "depth_32"]
    d8 = [c.strip() for c in rows[1].split("|")[1:-1]]
    # depth 8: the missing output counts as 100 %: (50 + 100 + 10) / 3; scored only: (50 + 10) / 2
    assert d8 == ["depth_8", "8", "1.000", "53.33", "30.00", "0.500", "2 / 3", "1", "0.667"]
    assert [c.strip() for c in rows[3].split("|")[1:-1]][:6] == ["depth_32", "32", "4.000", "1.00", "1.00", "0.750"]
    assert "ground truth" in rows[0] and "2.00" in rows[0]
    assert "`utt_c-1` (line 3)" in md
    assert rows[2] in printed

    summary = json.loads((sweep / "summary.json").read_text())["runs"]
    assert [s["depth"] for s in summary] == [None, 8, 16, 32]
    assert [s["kbps"] for s in summary] == [None, 1.0, 2.0, 4.0]
    per_depth = json.loads((sweep / "depth_8" / "summary.json").read_text())
    assert per_depth["status_counts"] == {"missing": 1, "ok": 2} and per_depth["n_bad_lines"] == 1
    for name in ("error_rate_vs_kbps.png", "sim_vs_kbps.png"):
        data = (sweep / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_report_is_rebuilt_from_the_results_files(sweep: Path):
    build_report(sweep)
    lines = (sweep / "depth_16" / "results.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec["wer"] = 0.5
    (sweep / "depth_16" / "results.jsonl").write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    out = build_report(sweep)
    d16 = next(s for s in out["summaries"] if s["depth"] == 16)
    assert d16["error_rate"] == pytest.approx(100 * (0.5 + 0.0 + 0.1) / 3, abs=1e-3)


def test_zh_runs_are_labelled_cer():
    s = summarize([_rec("a", 4, 0.1, 0.7)], {"lang": "zh", "depth": 4})
    assert s["metric"] == "CER" and s["kbps"] == 0.5 and s["rtf"] is None


def test_report_errors(tmp_path: Path, capsys):
    with pytest.raises(ReportError, match="no <run>/results.jsonl"):
        build_report(tmp_path)
    (tmp_path / "depth_8").mkdir()
    (tmp_path / "depth_8" / "results.jsonl").write_text('{"utt": "a"\n')
    assert main(["report", str(tmp_path)]) == USER_ERROR_EXIT_CODE
    assert "results.jsonl:1: not valid JSON" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {tmp_path / 'nope'} is not a directory")
