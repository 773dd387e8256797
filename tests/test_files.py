"""cat_tts.files: outputs appear whole or not at all; one JSON-lines reader (byte-order mark accepted, file:line
named on bad lines); YAML errors as one line with file and line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cat_tts.errors import InputError
from cat_tts.files import JsonlError, atomic_write, read_jsonl, read_yaml

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------------ atomic_write
def test_atomic_write_replaces_the_file_only_when_the_block_ends(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with atomic_write(path) as tmp:
        tmp.write_text("new")
        assert path.read_text() == "old"  # not visible before the end of the block
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".tmp")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.wav"
    path.write_bytes(b"finished")
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"finished"
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "new.wav") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert not (tmp_path / "new.wav").exists()


def test_a_directory_can_be_written_atomically(tmp_path):
    with atomic_write(tmp_path / "shard") as tmp:
        tmp.mkdir()
        (tmp / "data").write_text("x")
    assert (tmp_path / "shard" / "data").read_text() == "x"
    with pytest.raises(ValueError), atomic_write(tmp_path / "other") as tmp:
        tmp.mkdir()
        (tmp / "data").write_text("x")
        raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard"]
    with atomic_write(tmp_path / "shard") as tmp:  # an existing directory is replaced whole
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in (tmp_path / "shard").iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard"]


def test_a_process_killed_while_writing_leaves_nothing_under_the_final_name(tmp_path):
    """SIGKILL in the middle of a save_audio: the next run must not find a finished-looking wav."""
    code = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        import soundfile
        from cat_tts import audio
        real_write = soundfile.write
        def write_then_die(path, *args, **kwargs):
            with open(path, "wb") as f:
                f.write(b"RIFF")  # a partial header, as a killed writer leaves it
            os.kill(os.getpid(), signal.SIGKILL)
        soundfile.write = write_then_die
        audio.save_audio({str(tmp_path / "utt.wav")!r}, np.zeros(2400, dtype=np.float32))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (tmp_path / "utt.wav").exists()
    assert not any(p.suffix == ".wav" for p in tmp_path.iterdir())  # the leftover is hidden and ends in .tmp


# --------------------------------------------------------------------------------------------------------- read_jsonl
def test_jsonl_with_a_byte_order_mark_and_blank_lines(tmp_path):
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"text": "caf\xc3\xa9"}\n\n  \n[1, 2]\r\n"last"')
    assert list(read_jsonl(path)) == [(1, {"text": "café"}), (4, [1, 2]), (5, "last")]


def test_a_bad_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(JsonlError, match=rf"^{path}:2: not valid JSON \(Expecting value at column 7\)$") as err:
        list(read_jsonl(path))
    assert err.value.line == 2 and isinstance(err.value, InputError)


def test_text_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"a": 1}\n{"text": "caf\xe9"}\n')  # Latin-1
    with pytest.raises(JsonlError, match=rf"^{path}:2: not UTF-8 text \(byte 0xe9 at column 14\); save the file"):
        list(read_jsonl(path))


def test_bad_lines_can_fail_alone(tmp_path):
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b'{"id": 1}\nnot json\n\xff\n{"id": 4}\n')
    got = list(read_jsonl(path, errors="return"))
    assert [n for n, _ in got] == [1, 2, 3, 4]
    assert got[0][1] == {"id": 1} and got[3][1] == {"id": 4}
    assert isinstance(got[1][1], JsonlError) and "jobs.jsonl:2: not valid JSON" in str(got[1][1])
    assert isinstance(got[2][1], JsonlError) and "jobs.jsonl:3: not UTF-8" in str(got[2][1])


def test_a_missing_file_or_a_directory_is_named(tmp_path):
    with pytest.raises(JsonlError, match=f"^manifest not found: {tmp_path / 'nope.jsonl'}$"):
        list(read_jsonl(tmp_path / "nope.jsonl", what="manifest"))
    with pytest.raises(JsonlError, match="is a directory; give the JSON-lines file"):
        list(read_jsonl(tmp_path))


def test_the_reader_streams_and_closes_the_file(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(1000)))
    lines = read_jsonl(path)
    assert next(lines) == (1, {"i": 0})
    lines.close()  # a caller that stops early does not leak the handle
    assert not any(Path(f"/proc/self/fd/{fd}").resolve() == path for fd in os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------------------------------------------------- read_yaml
def test_yaml_syntax_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 1e-4\n  beta1: [0.9\nrun:\n  out: x\n")
    with pytest.raises(InputError) as err:
        read_yaml(path, what="config")
    message = str(err.value)
    assert message.startswith(f"{path}:4:") and "not valid YAML" in message and "\n" not in message


def test_yaml_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"run:\n  out: caf\xe9\n")
    with pytest.raises(InputError, match=rf"^{path}:2: not UTF-8 text \(byte 0xe9\); save the config as UTF-8$"):
        read_yaml(path, what="config")


def test_yaml_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"\xef\xbb\xbfrun:\n  out: x\n")
    assert read_yaml(path) == {"run": {"out": "x"}}
