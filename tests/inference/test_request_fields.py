"""Every field of `SpeechRequest` reaches the request from every front end, under that front end's own label.

A new field is one edit to the request plus one label per front end: this test enumerates the request's fields, checks
that each front end's label table covers them, and sends each field through each front end's own parser (the Python
API, infer.py's options, its jsonl jobs, the server's JSON body, the demo's page, the evaluator's options).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cat_tts.inference import SpeechRequest

SR = 24000

# A given value of every field (none of them the default) and what the request must then hold.
SAMPLES: dict[str, tuple[dict, str, object]] = {
    # field: (the fields given, the request attribute to read, its expected value)
    "text": ({"text": "Hello there."}, "text", "Hello there."),
    "reference_audio": ({}, "reference_audio", None),  # the clip: checked per front end below
    "reference_text": ({"reference_text": "A tone."}, "reference_text", "A tone."),
    "mode": ({"mode": "clone"}, "mode", "clone"),
    "instructions": ({"instructions": "Speak calmly."}, "instructions", "Speak calmly."),
    "language": ({"language": "English"}, "language", "English"),
    "duration": ({"duration": 2.5}, "duration", 2.5),
    "depth": ({"depth": 7}, "generation.depth", 7),
    "bitrate_kbps": ({"bitrate_kbps": 1.0}, "generation.depth", 8),
    "min_depth": ({"depth": "auto", "min_depth": 3}, "generation.min_depth", 3),
    "max_depth": ({"depth": "auto", "max_depth": 20}, "generation.max_depth", 20),
    "max_new_frames": ({"max_new_frames": 40}, "generation.max_new_frames", 40),
    "min_new_frames": ({"min_new_frames": 5}, "generation.min_new_frames", 5),
    "do_sample": ({"do_sample": False}, "generation.do_sample", False),
    "temperature": ({"temperature": 0.7}, "generation.temperature", 0.7),
    "top_p": ({"top_p": 0.8}, "generation.top_p", 0.8),
    "top_k": ({"top_k": 20}, "generation.top_k", 20),
    "repetition_penalty": ({"repetition_penalty": 1.3}, "generation.repetition_penalty", 1.3),
    "control_temperature": ({"control_temperature": 1.2}, "generation.control_temperature", 1.2),
    "control_top_p": ({"control_top_p": 0.9}, "generation.control_top_p", 0.9),
    "control_top_k": ({"control_top_k": 10}, "generation.control_top_k", 10),
    "control_tokens": ({"control_tokens": "full"}, "generation.control_tokens", "full"),
    "seed": ({"seed": 1234}, "generation.seed", 1234),
}


def _get(request: SpeechRequest, path: str):
    value = request
    for part in path.split("."):
        value = getattr(value, part)
    return value


def test_the_samples_cover_every_field_of_the_request():
    assert set(SAMPLES) == set(SpeechRequest.field_names())


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "ref.wav"
    t = np.arange(int(1.2 * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)
    return path


def _label_tables():
    from cat_tts.commands.infer import INFER_LABELS
    from cat_tts.commands.jobs import JSONL_LABELS
    from cat_tts.demo.request import DEMO_LABELS
    from cat_tts.server.fields import SPEECH_LABELS
    from eval.seedtts.generate import EVAL_LABELS

    return {"infer": INFER_LABELS, "jsonl": JSONL_LABELS, "server": SPEECH_LABELS, "demo": DEMO_LABELS,
            "eval": EVAL_LABELS}  # fmt: skip


def test_every_front_end_has_a_label_for_every_field():
    for name, labels in _label_tables().items():
        assert set(labels) == set(SpeechRequest.field_names()), name


# ---------------------------------------------------------------------- each front end's own parser
def _python(tiny_tts, clip, given):
    values = dict(given)
    text = values.pop("text", "Hello.")
    return tiny_tts.request(text, values.pop("reference_audio", clip), **values)


def _infer(tiny_tts, clip, given):
    from cat_tts.cli import REQUEST_OPTIONS
    from cat_tts.commands.infer import build_parser, single_request

    argv = ["--text", "Hello."] if "text" not in given else []
    argv += ["--prompt-audio", str(clip)]
    for field, value in given.items():
        option = REQUEST_OPTIONS[field]
        if option.type is None:  # a flag: it stores its constant
            assert value == option.const, field
            argv.append(option.flag)
        else:
            argv += [option.flag, str(value)]
    return single_request(build_parser().parse_args(argv), tiny_tts.limits)


def _jsonl(tiny_tts, clip, given, tmp_path):
    from cat_tts.commands.jobs import JSONL_LABELS, read_jobs

    line = {"id": "a", JSONL_LABELS["text"]: "Hello.", JSONL_LABELS["reference_audio"]: str(clip)}
    line.update({JSONL_LABELS[field]: value for field, value in given.items()})
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    (job,) = read_jobs(path, {}, tiny_tts.limits)
    assert job.error is None, job.error
    return job.request


def _demo(tiny_tts, clip, given):
    from cat_tts.demo.request import AUTO_DEPTH, page_request

    values = {"text": "Hello.", "reference_audio": str(clip), **given}
    if values.get("depth") == "auto":  # the page asks for depth "auto" with its "Automatic bitrate" box
        values.pop("depth")
        values[AUTO_DEPTH] = True
    return page_request(values, tiny_tts.limits)


def _eval(tiny_tts, clip, given, tmp_path):
    """The evaluator: the test list gives the text, the voice and its transcript, the sweep the depth, --seed the
    seeds, --mode the mode; every other field is an infer.py option."""
    from cat_tts.cli import REQUEST_OPTIONS
    from eval.seedtts.__main__ import build_parser, request_fields
    from eval.seedtts.generate import utterance_request
    from eval.seedtts.testset import TestItem

    given = dict(given)
    depth = given.pop("depth", 32)
    argv = ["generate", "--meta", str(tmp_path / "meta.lst"), "--out", str(tmp_path / "out")]
    if "bitrate_kbps" in given:
        argv += ["--bitrates-kbps", str(given.pop("bitrate_kbps"))]
    else:
        argv += ["--depths", str(depth)]
    seed = given.pop("seed", 0)
    argv += ["--seed", str(seed)]
    mode = given.pop("mode", "continuation")
    argv += ["--mode", mode]
    if "language" in given:
        argv += ["--language", given.pop("language")]
    prompt_text = given.pop("reference_text", "A tone.")
    target = given.pop("text", "Hello.")
    for field, value in given.items():
        option = REQUEST_OPTIONS[field]
        argv += [option.flag] if option.type is None else [option.flag, str(value)]
    args = build_parser().parse_args(argv)
    depths = args.depths or [round(kbps / 0.125) for kbps in args.bitrates_kbps]
    item = TestItem("u1", prompt_text, clip, target, None, 1)
    request = utterance_request(item, depths[0], request_fields(args, "en"), args.mode, args.seed, tiny_tts.limits)
    assert isinstance(request, SpeechRequest), request
    return request


EVAL_SEEDED = {"seed"}  # the evaluator derives each utterance's seed from --seed (checked separately)
EVAL_SWEEP_ONLY = {"min_depth", "max_depth"}  # a sweep runs fixed depths (directories depth_<K>): no depth "auto"


@pytest.mark.parametrize("front_end", ["python", "infer", "jsonl", "demo", "eval"])
@pytest.mark.parametrize("field", sorted(SAMPLES))
def test_every_front_end_carries_every_field_into_the_request(tiny_tts, clip, tmp_path, front_end, field):
    given, path, expected = SAMPLES[field]
    if front_end == "eval" and field in EVAL_SWEEP_ONLY:
        pytest.skip("the evaluator sweeps fixed depths; depth 'auto' and its range do not apply to a sweep")
    build = {"python": _python, "infer": _infer, "demo": _demo}.get(front_end)
    if build is not None:
        request = build(tiny_tts, clip, given)
    else:
        request = {"jsonl": _jsonl, "eval": _eval}[front_end](tiny_tts, clip, given, tmp_path)
    if field == "reference_audio":
        assert Path(str(request.reference_audio)) == clip
        return
    if front_end == "eval" and field in EVAL_SEEDED:
        from eval.seedtts.generate import utterance_seed

        assert request.generation.seed == utterance_seed(1234, "u1")
        return
    if front_end == "eval" and field == "mode":
        assert request.mode in (None, "clone") and request.reference_text is None  # clone: no transcript given
        return
    assert _get(request, path) == expected, (front_end, field)


def test_the_server_carries_every_field_into_the_request(tiny_tts):
    """The server's JSON body: every field under its JSON name (the voice is a stored voice's name)."""
    from cat_tts.server.config import ServerConfig
    from cat_tts.server.fields import SPEECH_LABELS, parse_speech
    from cat_tts.server.voices import Voice

    codes = tiny_tts.encode_reference((np.sin(np.arange(SR) / 7).astype(np.float32) * 0.3, SR))

    class OneVoice:
        def get(self, name):
            return Voice(name=name, codes=codes, text="A tone.", seconds=1.0, created_at=0)

    for field, (given, path, expected) in SAMPLES.items():
        body = {"input": "Hello.", "voice": "default"}
        body.update({SPEECH_LABELS[f]: v for f, v in given.items() if f != "reference_audio"})
        call = parse_speech(body, OneVoice(), tiny_tts.limits, ServerConfig())
        if field == "reference_audio":
            assert call.request.reference_audio is codes
        else:
            assert _get(call.request, path) == expected, field


def test_python_rejects_an_unknown_field_naming_it(tiny_tts, clip):
    from cat_tts.errors import FieldError

    with pytest.raises(FieldError) as err:
        tiny_tts.request("Hello.", clip, speed=2.0)
    assert err.value.field == "speed"
