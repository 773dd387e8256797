"""CatTTS pipeline on tiny random weights: modes, chunking, streaming == one-shot, batch, clean input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cat_tts.errors import InputError, ModelLoadError
from cat_tts.inference import CatTTS, SynthesisConfig
from cat_tts.inference.planning import derive_seed

SR = 24000
FRAME = 1920
# Tiny random weights stop at random frames: pin the frame count so outputs have a known length.
FIXED = dict(min_new_frames=5, max_new_frames=5)


def _tone(seconds: float, rate: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def ref_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ref") / "ref.wav"
    sf.write(path, _tone(1.2, 16000), 16000)  # another rate: the pipeline resamples
    return path


def test_synthesize_clone_returns_24khz_float_audio_of_the_generated_frames(tiny_tts, ref_wav):
    audio, sr = tiny_tts.synthesize("Hello there.", ref_wav, depth=4, seed=0, **FIXED)
    assert sr == SR and audio.dtype == np.float32 and audio.ndim == 1
    assert audio.size == 5 * FRAME and np.isfinite(audio).all()


def test_in_memory_reference_equals_file_reference(tiny_tts, ref_wav):
    wav, rate = sf.read(ref_wav, dtype="float32")
    a, _ = tiny_tts.synthesize("Hi.", ref_wav, depth=3, seed=1, **FIXED)
    b, _ = tiny_tts.synthesize("Hi.", (wav, rate), depth=3, seed=1, **FIXED)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_mode_is_continuation_when_a_transcript_is_given(tiny_tts, ref_wav, monkeypatch):
    used = []
    for name in ("voice_clone", "continuation"):
        original = getattr(tiny_tts.prompts, name)

        def spy(*a, _n=name, _o=original, **k):
            used.append(_n)
            return _o(*a, **k)

        monkeypatch.setattr(tiny_tts.prompts, name, spy)
    tiny_tts.synthesize("Hi.", ref_wav, reference_text="A tone.", depth=2, **FIXED)
    tiny_tts.synthesize("Hi.", ref_wav, depth=2, **FIXED)
    tiny_tts.synthesize("Hi.", ref_wav, reference_text="A tone.", mode="clone", depth=2, **FIXED)
    assert used == ["continuation", "voice_clone", "voice_clone"]


def test_continuation_audio_excludes_the_prefix(tiny_tts, ref_wav):
    audio, _ = tiny_tts.synthesize("Hi.", ref_wav, reference_text="A tone.", depth=5, seed=0, **FIXED)
    assert audio.size == 5 * FRAME


def test_long_text_is_split_generated_per_chunk_and_joined(tiny_tts, ref_wav, monkeypatch):
    cfg = SynthesisConfig(max_segment_chars=40, crossfade_ms=10)
    tts = CatTTS(tiny_tts.model, tiny_tts.codec, tiny_tts.prompts.tokenizer, cfg, engine=tiny_tts.engine)
    prompts = []
    original = tts.engine.submit
    monkeypatch.setattr(tts.engine, "submit", lambda grid, *a, **k: prompts.append(grid) or original(grid, *a, **k))
    text = "First sentence is here. Second one follows it.\n\nA new paragraph starts. It ends now."
    audio, _ = tts.synthesize(text, ref_wav, depth=2, seed=0, **FIXED)
    # "First ... Second ..." is over 40 characters: two chunks; the second paragraph fits in one
    assert len(prompts) == 3
    assert tts.engine.stats().frame_steps > 0
    overlap = int(0.010 * SR)
    assert audio.size == 3 * 5 * FRAME - 2 * overlap
    # every chunk is its own engine request with the same voice prompt: it gives the same audio alone
    alone, _ = tts.synthesize("Second one follows it.", ref_wav, depth=2, seed=derive_seed(0, segment=1), **FIXED)
    no_fade = SynthesisConfig(max_segment_chars=40, crossfade_ms=0)
    chunk = CatTTS(tts.model, tts.codec, tts.prompts.tokenizer, no_fade, engine=tts.engine)
    joined, _ = chunk.synthesize(text, ref_wav, depth=2, seed=0, **FIXED)
    np.testing.assert_array_equal(joined[5 * FRAME : 10 * FRAME], alone)


@pytest.mark.parametrize("reference_text", [None, "A tone."])
@pytest.mark.parametrize("first, every", [(1, 1), (1, 3), (2, 4)])
def test_streaming_audio_equals_one_shot_audio(tiny_tts, ref_wav, reference_text, first, every):
    cfg = SynthesisConfig(max_segment_chars=20, crossfade_ms=30)
    tts = CatTTS(tiny_tts.model, tiny_tts.codec, tiny_tts.prompts.tokenizer, cfg, engine=tiny_tts.engine)
    kw = dict(reference_text=reference_text, depth=6, seed=7, min_new_frames=4, max_new_frames=7)
    text = "One sentence here. And another one."
    one_shot, _ = tts.synthesize(text, ref_wav, **kw)
    pieces = list(tts.stream(text, ref_wav, piece_frames=every, first_piece_frames=first, **kw))
    assert len(pieces) > 2  # audio really arrives in pieces
    streamed = np.concatenate(pieces)
    assert streamed.shape == one_shot.shape
    np.testing.assert_allclose(streamed, one_shot, atol=1e-5)


def test_first_stream_piece_arrives_after_the_first_frame(tiny_tts, ref_wav):
    frames = []
    stream = tiny_tts.stream("Hello.", ref_wav, depth=2, seed=0, on_frame=frames.append, **FIXED)
    first = next(stream)
    held_back = int(0.050 * SR)  # the cross-fade tail waits for the next chunk or the end
    assert frames == [1] and first.size == FRAME - held_back
    stream.close()
    stats = tiny_tts.engine.stats()
    assert stats.active_requests == 0 and stats.queued_requests == 0  # closing the stream freed its slot


def test_batch_equals_one_by_one_when_greedy(tiny_tts, ref_wav):
    items = [
        {"text": "Hello there.", "reference_audio": ref_wav},
        {"text": "Hi.", "reference_audio": ref_wav, "reference_text": "A tone."},
        {"text": "A slightly longer sentence than the others.", "reference_audio": ref_wav},
    ]
    kw = dict(depth=3, do_sample=False, **FIXED)
    batch = tiny_tts.synthesize_batch(items, **kw)
    assert len(batch) == 3
    for item, (audio, sr) in zip(items, batch, strict=True):
        single, _ = tiny_tts.synthesize(item["text"], item["reference_audio"], item.get("reference_text"), **kw)
        assert sr == SR
        np.testing.assert_allclose(audio, single, atol=1e-4)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    sf.write(d / "silent.wav", np.zeros(SR, dtype=np.float32), SR)
    sf.write(d / "long.wav", _tone(31.0, 8000, 0.1), 8000)
    sf.write(d / "short.wav", _tone(0.2), SR)
    return d


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(text="  \n\t "), "text is empty"),
        (dict(text=None), "text is required"),
        (dict(text=5), "text must be a string"),
        (dict(ref="missing.wav"), "not found"),
        (dict(ref="corrupt.wav"), "cannot read"),
        (dict(ref="silent.wav"), "silent"),
        (dict(ref="long.wav"), "limit"),
        (dict(ref="short.wav"), "too short"),
        (dict(depth=0), "depth must be >= 1"),
        (dict(depth=33), "depth must be in 1..32"),
        (dict(depth="8"), "depth must be an integer"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=-0.5), "temperature"),
        (dict(repetition_penalty=-1.0), "repetition_penalty"),
        (dict(min_new_frames=9, max_new_frames=3), "min_new_frames"),
        (dict(beam_size=4), "unknown field 'beam_size'"),
        (dict(mode="continuation"), "needs the reference transcript"),
        (dict(mode="sing"), "mode must be"),
    ],
)
def test_bad_input_raises_a_clean_input_error(tiny_tts, ref_wav, bad_files, kwargs, match):
    kwargs = dict(kwargs)
    text = kwargs.pop("text", "Hello.")
    ref = bad_files / kwargs.pop("ref") if "ref" in kwargs else ref_wav
    with pytest.raises(InputError, match=match):
        tiny_tts.synthesize(text, ref, **kwargs)


def test_bad_in_memory_reference_raises_input_error(tiny_tts):
    wav = _tone(1.0)
    wav[10] = np.nan
    with pytest.raises(InputError, match="NaN"):
        tiny_tts.synthesize("Hello.", (wav, SR))
    with pytest.raises(InputError, match="file path, a"):
        tiny_tts.synthesize("Hello.", 42)


def test_unreachable_hub_error_says_how_to_pass_local_directories(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"--model DIR --codec DIR.*make_tiny"):
        CatTTS.from_pretrained(model="nobody-here/no-such-model", codec="nobody-here/no-such-codec")
    with pytest.raises(ModelLoadError, match="does not exist"):
        CatTTS.from_pretrained(model=tmp_path / "nope", codec=tmp_path / "nope2")


def test_a_voice_encoded_once_can_be_reused(tiny_tts, ref_wav):
    import torch

    voice = tiny_tts.encode_reference(ref_wav)
    assert voice.shape[0] == 32 and voice.dtype == torch.long
    a, _ = tiny_tts.synthesize("Hi.", ref_wav, depth=3, seed=2, **FIXED)
    b, _ = tiny_tts.synthesize("Hi.", voice, depth=3, seed=2, **FIXED)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="must have 32 layers"):
        tiny_tts.synthesize("Hi.", voice[:8])
    with pytest.raises(InputError, match="integer tensor"):
        tiny_tts.synthesize("Hi.", voice.float())
    with pytest.raises(InputError, match="codes must be in"):
        tiny_tts.synthesize("Hi.", voice + 5000)


def test_a_stream_cancelled_from_another_thread_frees_its_queued_and_running_slots(tiny_tts, ref_wav):
    import threading
    import time

    from cat_tts.generation import EngineConfig

    tts = CatTTS(tiny_tts.model, tiny_tts.codec, tiny_tts.prompts.tokenizer,
                 engine=EngineConfig(max_slots=1, max_queue=4))  # fmt: skip
    tts.start()
    try:
        running = tts.stream("Hello there.", ref_wav, depth=2, min_new_frames=500, max_new_frames=500)
        first = next(running)  # holds the only slot
        queued = tts.stream("Waiting.", ref_wav, depth=2, min_new_frames=5, max_new_frames=5)
        started = threading.Event()

        def consume():
            started.set()
            list(queued)  # blocks in the queue until cancelled

        thread = threading.Thread(target=consume)
        thread.start()
        started.wait()
        deadline = time.monotonic() + 10
        while tts.engine.stats().queued_requests == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tts.engine.stats().queued_requests == 1
        queued.cancel()  # another thread: the queued request leaves the queue at once
        thread.join(timeout=10)
        assert not thread.is_alive() and tts.engine.stats().queued_requests == 0
        running.cancel()  # a running request frees its slot at the next frame boundary
        assert first.size > 0 and list(running) == []
        deadline = time.monotonic() + 5
        while tts.engine.stats().active_requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tts.engine.stats().active_requests == 0
    finally:
        tts.close()


def test_a_frame_cap_bounds_the_budget_of_segments_that_ask_for_none(tiny_tts):
    capped = CatTTS(tiny_tts.model, tiny_tts.codec, tiny_tts.prompts.tokenizer, SynthesisConfig(max_segment_frames=3),
                    engine=tiny_tts.engine)  # fmt: skip
    (segment,) = capped.plan(capped.request("A fairly long sentence that would need many frames to speak."))
    assert segment.estimate == 3
    capped.submit([segment])
    assert segment.request.budget == 3
    segment.request.cancel()
    (free,) = tiny_tts.plan(tiny_tts.request("A fairly long sentence that would need many frames to speak."))
    assert free.estimate > 3


@pytest.mark.parametrize("duration", [1e308, 10**400, float("inf"), -1.0, 0])
def test_a_duration_that_no_request_can_meet_is_refused_naming_it(tiny_tts, duration):
    from cat_tts.errors import FieldError

    with pytest.raises(FieldError) as err:
        tiny_tts.request("Hello.", duration=duration)
    assert err.value.field == "duration"


def test_streams_decoded_together_give_their_one_shot_audio(tiny_tts, ref_wav):
    """Without batch invariance the service decodes the pieces of concurrent streams in shared codec calls."""
    import threading

    from cat_tts.generation import EngineConfig

    tts = CatTTS(tiny_tts.model, tiny_tts.codec, tiny_tts.prompts.tokenizer, engine=EngineConfig(max_slots=4))
    assert tts.decoder is not None and tiny_tts.decoder is None  # batch-invariant engines decode per request
    tts.start()
    texts = ["One sentence here.", "Another one there.", "A third."]
    kw = dict(depth=5, min_new_frames=8, max_new_frames=8, do_sample=False)
    expected = [tts.synthesize(t, ref_wav, **kw)[0] for t in texts]
    streamed = [None] * len(texts)

    def play(i):
        streamed[i] = np.concatenate(list(tts.stream(texts[i], ref_wav, piece_frames=4, **kw)))

    threads = [threading.Thread(target=play, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    tts.close()
    for got, want in zip(streamed, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert tts.decoder.calls < 3 * 3  # 3 streams x (1 + 2) pieces, fewer codec calls than pieces
