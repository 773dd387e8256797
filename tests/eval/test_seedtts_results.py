"""The run files: written whole, read with the one JSON-lines reader (a cut-short timing record is skipped, a
byte-order mark is accepted, a bad results line names file:line); no import cycle in eval/."""

from __future__ import annotations

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
