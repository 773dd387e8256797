"""Voices: the store (names, atomic files, persistence, nothing outside its directory) and the API (upload, use,
list, delete, errors, persistence across a restart)."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from cat_tts.errors import InputError
from cat_tts.server.voices import (
    VoiceExistsError,
    VoiceNotFoundError,
    VoiceStore,
    check_name,
    decode_clip,
    install_default_voice,
)

from .conftest import fake_config, serve
from .fakes import Clip, FakeBackend

openai = pytest.importorskip("openai")  # the official client (tests only)


def _codes(frames: int = 20) -> torch.Tensor:
    return torch.randint(0, 1024, (32, frames))


# ---------------------------------------------------------------------------------------------------- store


def _store(root, codec="codec-a", n_vq=32, **kwargs) -> VoiceStore:
    return VoiceStore(root, codec, n_vq, **kwargs)


def test_store_round_trip_and_persistence(tmp_path):
    store = _store(tmp_path)
    codes = _codes()
    store.add("alice", codes, "her words", 1.6)
    assert sorted(p.name for p in (tmp_path / "codec-a").iterdir()) == ["alice.safetensors"]  # one file per voice
    again = _store(tmp_path).get("alice")  # a new process sees it
    assert torch.equal(again.codes, codes) and again.text == "her words" and again.seconds == pytest.approx(1.6)
    assert [v.name for v in store.list()] == ["alice"]
    with pytest.raises(VoiceExistsError):
        store.add("alice", codes, None, 1.0)
    store.add("alice", _codes(5), None, 0.4, replace=True)
    assert _store(tmp_path).get("alice").codes.shape == (32, 5)
    store.delete("alice")
    assert list((tmp_path / "codec-a").iterdir()) == []
    with pytest.raises(VoiceNotFoundError):
        store.get("alice")
    with pytest.raises(VoiceNotFoundError):
        store.delete("alice")


def test_store_sees_changes_made_by_another_process(tmp_path):
    a, b = _store(tmp_path), _store(tmp_path)
    a.add("v", _codes(), None, 1.0)
    assert "v" in b and b.names() == ["v"]
    b.delete("v")
    assert "v" not in a


@pytest.mark.parametrize(
    "name", ["", ".hidden", "..", "../x", "a/b", "a\\b", "x" * 65, "sp ace", "nul\0", "é", None, 7]
)
def test_invalid_names_are_refused(tmp_path, name):
    with pytest.raises(InputError):
        check_name(name)
    store = _store(tmp_path / "voices")
    with pytest.raises(InputError):
        store.add(name, _codes(), None, 1.0)
    assert list(store.directory.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["voices"]


@pytest.mark.parametrize("name", ["a", "A-b_c.d", "x" * 64, "123"])
def test_valid_names(name):
    assert check_name(name) == name


def test_each_codec_keeps_its_own_voices_and_damaged_files_are_not_used(tmp_path):
    _store(tmp_path, "codec-a").add("mine", _codes(), None, 1.0)
    assert _store(tmp_path, "codec-b").names() == []  # another codec: its own folder
    assert _store(tmp_path, "codec-a", n_vq=16).get("mine").codes.shape == (16, 20)  # fewer layers: a prefix
    assert _store(tmp_path, "codec-a", n_vq=16).get("mine").codes.equal(_store(tmp_path).get("mine").codes[:16])
    folder = tmp_path / "codec-a"
    (folder / "broken.safetensors").write_bytes(b"garbage")
    (folder / ".hidden.safetensors.123.tmp").write_bytes(b"half a write")  # another process writing
    assert _store(tmp_path).names() == ["mine"]
    assert _store(tmp_path, n_vq=33).names() == []  # too few layers for this model


def test_the_store_can_fill(tmp_path):
    store = _store(tmp_path, max_voices=2)
    store.add("a", _codes(), None, 1.0)
    store.add("b", _codes(), None, 1.0)
    with pytest.raises(InputError, match="full"):
        store.add("c", _codes(), None, 1.0)


@pytest.mark.parametrize("kind", ["file", "proc"])
def test_an_unwritable_directory_names_the_option(tmp_path, kind):
    root = tmp_path / "taken" if kind == "file" else Path("/proc/self/cat-tts-voices")
    if kind == "file":
        root.write_text("a file in the way")
    with pytest.raises(InputError, match="^--voices-dir: cannot write voices to"):
        _store(root)


def test_default_voice_is_written_once_per_clip(tmp_path):
    clip = tmp_path / "clip.wav"
    clip.write_bytes(Clip(seconds=1.0).data)
    store, encodes = _store(tmp_path / "voices"), []

    def encode(audio):
        encodes.append(audio)
        return _codes(12)

    install_default_voice(store, clip, "its words", encode, 30.0)
    path = store.directory / "default.safetensors"
    first = (path.read_bytes(), path.stat().st_mtime_ns)
    install_default_voice(_store(tmp_path / "voices"), clip, "its words", encode, 30.0)  # another server starts
    assert (path.read_bytes(), path.stat().st_mtime_ns) == first and len(encodes) == 1
    install_default_voice(store, clip, "other words", encode, 30.0)  # a new clip or transcript replaces it
    assert store.get("default").text == "other words" and len(encodes) == 2


def test_decode_clip_checks_the_audio():
    samples, rate = decode_clip(Clip(seconds=1.0, rate=16000).data, max_seconds=30)
    assert rate == 16000 and samples.shape == (16000,)
    with pytest.raises(InputError, match="could not read"):
        decode_clip(b"this is not audio at all", 30)
    with pytest.raises(InputError, match="empty"):
        decode_clip(b"", 30)
    with pytest.raises(InputError, match="limit"):
        decode_clip(Clip(seconds=3.0).data, max_seconds=2.0)


# ---------------------------------------------------------------------------------------------------- API


def _upload(server, name="alice", data=None, text=None, field="audio", **kwargs) -> httpx.Response:
    files = {field: ("clip.wav", data if data is not None else Clip().data, "audio/wav")}
    form = {"name": name, **({"text": text} if text is not None else {}), **kwargs}
    return httpx.post(f"{server.url}/v1/audio/voices", data=form, files=files, timeout=30)


def test_upload_use_list_delete(fake_server):
    response = _upload(fake_server, text="what the clip says")
    assert response.status_code == 200, response.text
    voice = response.json()
    assert voice["id"] == voice["name"] == "alice" and voice["object"] == "audio.voice"
    assert voice["text"] == "what the clip says" and voice["seconds"] == pytest.approx(1.5)
    listed = httpx.get(f"{fake_server.url}/v1/audio/voices").json()
    assert {"alice", "default"} <= {v["name"] for v in listed["data"]}
    speech = httpx.post(
        f"{fake_server.url}/v1/audio/speech",
        json={"input": "x", "voice": "alice", "response_format": "pcm", "max_new_frames": 2},
    )
    assert speech.status_code == 200 and speech.headers["x-cat-tts-voice"] == "alice"  # fmt: skip
    request = fake_server.backend.calls[-1].request
    assert request.reference_text == "what the clip says"
    assert torch.equal(request.reference_audio, fake_server.state.voices.get("alice").codes)
    deleted = httpx.delete(f"{fake_server.url}/v1/audio/voices/alice").json()
    assert deleted == {"id": "alice", "object": "audio.voice.deleted", "deleted": True}
    assert httpx.post(f"{fake_server.url}/v1/audio/speech", json={"input": "x", "voice": "alice"}).status_code == 404


def test_openai_client_creates_and_deletes_voices(fake_server):
    client = fake_server.openai()
    voice = client.audio.voices.create(name="bob", audio_sample=("bob.wav", Clip().data, "audio/wav"), consent="cons_1")
    assert voice.id == "bob" and voice.name == "bob" and voice.type == "audio_sample"
    audio = client.audio.speech.create(model="tts-1", input="hi", voice={"id": "bob"}, response_format="pcm",
                                       extra_body={"max_new_frames": 2})  # fmt: skip
    assert len(audio.content) == 2 * 1920 * 2
    assert client.audio.voices.delete("bob").deleted


def test_upload_errors(make_fake_server):
    server = make_fake_server(max_upload_mb=0.2)
    assert _upload(server, name="../evil").status_code == 400
    assert _upload(server, name="default").json()["error"]["code"] == "reserved_name"
    bad = _upload(server, data=b"RIFF not really a wav")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "audio"
    assert "object at 0x" not in bad.json()["error"]["message"], bad.json()
    short = _upload(server, data=Clip(seconds=0.2).data)
    assert short.status_code == 400 and "too short" in short.json()["error"]["message"]
    silent = io.BytesIO()
    import soundfile as sf

    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000, format="WAV")
    assert "silent" in _upload(server, data=silent.getvalue()).json()["error"]["message"]
    too_big = _upload(server, data=Clip(seconds=10.0).data)  # 320 kB > 0.2 MiB
    assert too_big.status_code == 413
    missing = httpx.post(f"{server.url}/v1/audio/voices", data={"name": "x"}, files={"other": ("a", b"b")})
    assert missing.status_code == 400
    assert httpx.post(f"{server.url}/v1/audio/voices", json={"name": "x"}).status_code == 415
    assert _upload(server, type="prompt").json()["error"]["param"] == "type"
    assert _upload(server).status_code == 200
    dup = _upload(server)
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "voice_exists"
    assert httpx.delete(f"{server.url}/v1/audio/voices/default").status_code == 400
    assert [p.name for p in server.config.voices_dir.parent.iterdir()] == ["voices"]  # nothing written elsewhere


def test_long_clip_is_refused(make_fake_server):
    server = make_fake_server(max_voice_seconds=2.0)
    response = _upload(server, data=Clip(seconds=3.0, rate=8000).data)
    assert response.status_code == 400 and "limit" in response.json()["error"]["message"]


def test_voices_persist_across_a_restart_and_the_default_is_not_rewritten(tmp_path):
    config = fake_config(tmp_path)
    with serve(FakeBackend(), config) as first:
        assert _upload(first, name="carol", text="hello").status_code == 200
        codes = first.state.voices.get("carol").codes
        default = first.state.voices.directory / "default.safetensors"
        written = (default.read_bytes(), default.stat().st_mtime_ns)
    backend = FakeBackend()
    with serve(backend, config) as second:
        voices = httpx.get(f"{second.url}/v1/audio/voices").json()["data"]
        assert {v["name"] for v in voices} == {"carol", "default"}
        assert torch.equal(second.state.voices.get("carol").codes, codes)
        response = httpx.post(f"{second.url}/v1/audio/speech", json={"input": "x", "voice": "carol",
                              "response_format": "pcm", "max_new_frames": 2})  # fmt: skip
        assert response.status_code == 200
        assert backend.calls[-1].request.reference_text == "hello"
        assert (default.read_bytes(), default.stat().st_mtime_ns) == written


def test_openai_errors_for_voices(fake_server):
    client = fake_server.openai()
    with pytest.raises(openai.NotFoundError):
        client.audio.voices.delete("nobody")
