"""The test-list reader resolves paths like the official scripts and reports every unusable line."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
from seedtts_helpers import tone, write_meta

from eval.seedtts.testset import MetaError, read_testset


def test_usable_lines_keep_order_and_resolve_paths_relative_to_the_list(tiny_testset: Path):
    ts = read_testset(tiny_testset)
    assert [it.utt for it in ts.items] == ["utt_a-1", "utt_b-1", "utt_a-2"]
    first = ts.items[0]
    assert first.prompt_wav == (tiny_testset.parent / "prompt-wavs" / "spk_a.wav").resolve()
    assert first.prompt_text == "We asked over twenty different people."
    assert first.target_text == "Get the trust fund to the bank early."
    assert first.ground_truth_wav == (tiny_testset.parent / "wavs" / "utt_a-1.wav").resolve()
    assert ts.name == "en/meta"


def test_missing_prompt_is_reported_by_utterance_id(tiny_testset: Path):
    ts = read_testset(tiny_testset)
    assert [(b.utt, b.line_no) for b in ts.bad_lines] == [("utt_c-1", 3)]
    assert "not found" in ts.bad_lines[0].reason
    assert "utt_c-1 (line 3)" in ts.bad_lines[0].describe()


def test_every_kind_of_bad_line_is_reported(tmp_path: Path):
    root = tmp_path / "zh"
    (root / "p").mkdir(parents=True)
    sf.write(root / "p" / "ok.wav", tone(0.2, 16000), 16000)
    (root / "p" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    sf.write(root / "p" / "empty.wav", tone(0.0, 16000), 16000)
    lines = [
        "u1|提示|p/ok.wav|你好，世界。",
        "u2|提示|p/ok.wav",  # 3 fields
        "u3|提示|p/broken.wav|坏文件",
        "u4|提示|p/empty.wav|空文件",
        "u1|提示|p/ok.wav|重复",  # duplicate id
        "u5|提示|p/ok.wav|",  # empty target
        "|提示|p/ok.wav|没有编号",
        "",
        "u6|a|b|c|d|e",  # 6 fields
        "u7|提示|p/ok.wav|好的|p/ok.wav",  # 5 fields: explicit ground truth
    ]
    ts = read_testset(write_meta(root, lines, "hardcase.lst"))
    assert [it.utt for it in ts.items] == ["u1", "u7"]
    assert ts.items[1].ground_truth_wav == (root / "p" / "ok.wav").resolve()
    reasons = {b.utt: b.reason for b in ts.bad_lines}
    assert set(reasons) == {"u2", "u3", "u4", "u1", "u5", "line 7", "u6"}
    assert "got 3" in reasons["u2"] and "got 6" in reasons["u6"]
    assert "unreadable" in reasons["u3"]
    assert "empty" in reasons["u4"]
    assert "duplicate" in reasons["u1"]
    assert "empty target" in reasons["u5"]
    assert [b.line_no for b in ts.bad_lines] == [2, 3, 4, 5, 6, 7, 9]


def test_ground_truth_mode_rejects_lines_without_a_recording(tiny_testset: Path):
    (tiny_testset.parent / "wavs" / "utt_b-1.wav").unlink()
    ts = read_testset(tiny_testset, require_ground_truth=True)
    assert [it.utt for it in ts.items] == ["utt_a-1", "utt_a-2"]
    assert {b.utt: b.reason for b in ts.bad_lines}["utt_b-1"] == "no ground-truth recording"


def test_missing_list_is_a_clear_error(tmp_path: Path):
    with pytest.raises(MetaError, match="test list not found"):
        read_testset(tmp_path / "nope.lst")
