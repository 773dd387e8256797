"""Manifest parsing: our fields, the official fine-tuning names, clear errors."""

from __future__ import annotations

import json

import pytest

from cat_tts.data.manifest import ManifestError, read_manifest


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_reads_our_fields_and_resolves_relative_paths(tmp_path):
    m = _write(
        tmp_path / "m.jsonl",
        [
            {"audio": "a/1.wav", "text": "hello", "speaker": "s1", "ref_audio": "a/0.wav", "language": "en"},
            "",
            {"audio": "/abs/2.wav", "text": "bye", "id": "utt2"},
        ],
    )
    rows = read_manifest(m)
    assert [r.index for r in rows] == [0, 1]
    assert rows[0].audio == str(tmp_path / "a" / "1.wav") and rows[0].ref_audio == str(tmp_path / "a" / "0.wav")
    assert rows[0].speaker == "s1" and rows[0].language == "en" and rows[0].id == "1-0"
    assert rows[1].audio == "/abs/2.wav" and rows[1].id == "utt2" and rows[1].ref_audio is None


def test_accepts_official_finetuning_names(tmp_path):
    m = _write(
        tmp_path / "m.jsonl",
        [
            {"audio": "t.wav", "text": "x", "reference": [None, "r.wav"], "instruction": "calm", "tokens": 50},
            {"audio": "t.wav", "text": "y", "reference_audio": ["q.wav"], "quality": "high"},
        ],
    )
    rows = read_manifest(m)
    assert rows[0].ref_audio == str(tmp_path / "r.wav")
    assert rows[0].fields == {"instruction": "calm", "tokens": 50}
    assert rows[1].ref_audio == str(tmp_path / "q.wav") and rows[1].fields == {"quality": "high"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"m\.jsonl:1: not valid JSON"),
        ('{"text": "x"}', r"m\.jsonl:1: missing the required field 'audio'"),
        ('{"audio": "a.wav"}', r"m\.jsonl:1: 'text' must be a string"),
        ('{"audio": "a.wav", "text": "x", "reference": "r.wav"}', r"'reference' must be a list"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    m = _write(tmp_path / "m.jsonl", [line])
    with pytest.raises(ManifestError, match=message):
        read_manifest(m)


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="is a directory; give the JSON-lines file"):
        read_manifest(tmp_path)


def test_a_byte_order_mark_and_latin1_text(tmp_path):
    """A manifest saved by Notepad/Excel starts with a UTF-8 byte-order mark: it reads; Latin-1 text names its line."""
    m = tmp_path / "m.jsonl"
    m.write_bytes(
        b"\xef\xbb\xbf" + json.dumps({"audio": "a.wav", "text": "caf\u00e9"}, ensure_ascii=False).encode() + b"\n"
    )
    assert [r.text for r in read_manifest(m)] == ["caf\u00e9"]
    m.write_bytes(b'{"audio": "a.wav", "text": "ok"}\n{"audio": "b.wav", "text": "caf\xe9"}\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: not UTF-8 text"):
        read_manifest(m)
