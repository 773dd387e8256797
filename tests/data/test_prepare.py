"""`python -m cat_tts.data.prepare`: encode once, skip and report bad rows, resume, read back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cat_tts.data.dataset import PreparedDataset
from cat_tts.data.prepare import PrepareConfig, main, prepare
from cat_tts.errors import USER_ERROR_EXIT_CODE

SR = 24000


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    from cat_tts.codec.tiny import write_tiny_codec

    return write_tiny_codec(tmp_path_factory.mktemp("codec") / "codec", seed=0)


def _tone(path, seconds, freq):
    import soundfile as sf

    t = np.arange(int(seconds * SR)) / SR
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
    return path


def _manifest(tmp_path, rows, bom=False):
    m = tmp_path / "manifest.jsonl"
    m.write_bytes((b"\xef\xbb\xbf" if bom else b"") + "".join(json.dumps(r) + "\n" for r in rows).encode())
    return m


def test_prepare_skips_and_reports_bad_rows_and_resumes(tmp_path, codec_dir, capsys):
    _tone(tmp_path / "a.wav", 0.5, 220)
    _tone(tmp_path / "b.wav", 0.3, 330)
    _tone(tmp_path / "long.wav", 1.5, 440)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" * 10)
    np.zeros(SR // 2, dtype=np.float32).tofile(tmp_path / "raw.bin")
    import soundfile as sf

    sf.write(str(tmp_path / "silent.wav"), np.zeros(SR // 2, dtype=np.float32), SR)
    m = _manifest(
        tmp_path,
        [
            {"audio": "a.wav", "text": "hello world", "speaker": "s1", "id": "a"},
            {"audio": "missing.wav", "text": "gone", "id": "missing"},
            {"audio": "corrupt.wav", "text": "broken", "id": "corrupt"},
            {"audio": "b.wav", "text": "one two", "speaker": "s1", "ref_audio": "a.wav", "id": "b"},
            {"audio": "silent.wav", "text": "quiet", "id": "silent"},
            {"audio": "long.wav", "text": "too long", "id": "long"},
        ],
        bom=True,  # as Notepad or an Excel export saves it
    )
    out = tmp_path / "data"
    argv = [
        str(m),
        "--codec",
        str(codec_dir),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--shard-size",
        "4",
        "--max-seconds",
        "1.0",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    line = capsys.readouterr().out
    assert "kept 2 utterances" in line and "skipped 4" in line
    assert "missing 1" in line and "unreadable 1" in line and "silent 1" in line and "too_long 1" in line
    report = [json.loads(x) for x in (out / "prepare_report.jsonl").read_text().splitlines()]
    assert {(r["id"], r["reason"]) for r in report} == {
        ("missing", "missing"),
        ("corrupt", "unreadable"),
        ("silent", "silent"),
        ("long", "too_long"),
    }

    ds = PreparedDataset(out)
    assert len(ds) == 2 and ds.ids == ["a", "b"]
    a, b = ds[0], ds[1]
    assert a.codes.shape == (32, int(0.5 * SR) // 1920) and a.codes.dtype == torch.int64
    assert b.ref_codes is not None and torch.equal(b.ref_codes, a.codes)  # the reference is a.wav, encoded alike
    assert ds.num_frames.tolist() == [a.codes.shape[1], b.codes.shape[1]] and ds.ref_frames.tolist() == [0, 6]
    # the stored codes are the codec's codes of the loaded, loudness-normalised audio
    from cat_tts.audio import load_audio, loudness_normalize
    from cat_tts.codec import CatCodec

    codec = CatCodec.from_pretrained(codec_dir)
    wav = torch.from_numpy(loudness_normalize(load_audio(tmp_path / "a.wav")))[None]
    with torch.inference_mode():
        expect = codec.encode(wav).codes[0]
    assert torch.equal(a.codes, expect)

    # a rerun finds every shard complete and encodes nothing
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    again = prepare(
        PrepareConfig(
            manifest=str(m),
            codec="/nonexistent",
            out=str(out),
            shard_size=4,
            num_workers=0,
            max_seconds=1.0,
            device="cpu",
        ),
        progress=False,
    )
    assert again.kept == 2 and again.total_skipped == 4
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == stamp
    assert not [p.name for p in out.rglob(".*")]  # every output was renamed into place: no temporary is left


def test_prepare_exits_with_the_user_error_code_when_nothing_is_usable(tmp_path, codec_dir, capsys):
    m = _manifest(tmp_path, [{"audio": "nope.wav", "text": "x"}])
    argv = [str(m), "--codec", str(codec_dir), "--out", str(tmp_path / "d"), "--num-workers", "0", "--device", "cpu"]
    assert main(argv) == USER_ERROR_EXIT_CODE
    assert "no usable utterance" in capsys.readouterr().err


def test_unwritable_out_is_a_one_line_error_before_any_work(tmp_path, capsys):
    m = _manifest(tmp_path, [{"audio": "a.wav", "text": "x"}])
    (tmp_path / "file").write_text("not a directory")
    # the codec does not exist either: the output directory is checked first, before anything is loaded
    for out, reason in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "sub", "--out: cannot write to")):
        assert main([str(m), "--codec", str(tmp_path / "no-codec"), "--out", str(out)]) == USER_ERROR_EXIT_CODE
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and reason in err and str(out) in err and "Traceback" not in err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--batch-size", "0"], "batch_size (--batch-size) = 0"),
        (["--rank", "3", "--world-size", "2"], "rank (--rank) = 3"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, extra, message):
    m = _manifest(tmp_path, [{"audio": "a.wav", "text": "x"}])
    assert main([str(m), "--codec", "c", "--out", str(tmp_path / "d"), *extra]) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_prepare_rejects_a_bad_manifest_in_one_line(tmp_path, codec_dir, capsys):
    m = tmp_path / "m.jsonl"
    m.write_text('{"text": "no audio"}\n')
    assert main([str(m), "--codec", str(codec_dir), "--out", str(tmp_path / "d")]) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing the required field 'audio'" in err
