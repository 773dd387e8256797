"""`infer.py --jsonl` jobs: one speech request per line of a JSON-lines file.

Each line is an object with the request's fields under the keys of `JSONL_LABELS` (`text`, `prompt_audio`,
`prompt_text`, `language`, `duration`, `depth`, `top_k`, ...) and an optional `id` (the output's name; default the
line number). A key a line gives overrides the command line's option for that job; a line without `prompt_audio` uses
the command line's `--prompt-audio`, else the bundled voice. Relative audio paths are resolved against the jsonl
file's folder. The file is read with `cat_tts.files.read_jsonl` (a UTF-8 byte-order mark is accepted). A line that
cannot be used fails alone: its `Job` carries the error, shown under the line's own key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cat_tts.errors import FieldError, InputError
from cat_tts.files import JsonlError, read_jsonl
from cat_tts.inference import Limits, SpeechRequest
from cat_tts.inference.planning import derive_seed

# Request field -> its key in a jsonl line (the label a line's error is shown under).
JSONL_LABELS = SpeechRequest.labels(reference_audio="prompt_audio", reference_text="prompt_text")
ID_KEY = "id"  # the output's file name (without .wav); not a request field
FIELD_OF_KEY = {key: name for name, key in JSONL_LABELS.items()}


@dataclass
class Job:
    """One line of the jobs file: its request, or why it cannot be generated."""

    line: int  # 1-based line number
    id: str  # output name: OUT_DIR/<id>.wav
    request: SpeechRequest | None = None  # None when the line is unusable
    error: str | None = None  # the line's problem, one line, under its own key's name


def read_jobs(path: str | Path, common: dict[str, Any], limits: Limits | None = None) -> list[Job]:
    """Every non-blank line of a jobs file as a `Job` (unusable lines carry their error).

    Args:
        path: the jsonl file.
        common: request fields every job takes unless its line gives its own (from the command line). Without a
            `reference_audio` there, a line without `prompt_audio` gets the bundled voice and its transcript.
        limits: the model's limits to check each request against.

    Raises:
        InputError: the file cannot be read at all, or has no line.
    """
    path = Path(path)
    base = path.resolve().parent
    jobs: list[Job] = []
    seen: set[str] = set()
    for number, value in read_jsonl(path, errors="return", what="--jsonl file"):
        name = _job_id(value, number)
        job = Job(number, name)
        try:
            if isinstance(value, JsonlError):
                raise InputError(str(value).removeprefix(f"{value.path}:{value.line}: "))  # the caller names the line
            if not isinstance(value, dict):
                raise InputError(f"expected a JSON object, got {type(value).__name__}")
            if not name or "/" in name or "\\" in name or name.startswith("."):
                raise InputError(f"{ID_KEY!r} must be a plain file name, got {name!r}")
            if name in seen:
                raise InputError(f"duplicate {ID_KEY} {name!r}")
            seen.add(name)
            job.request = _request(value, number, base, common, limits)
        except FieldError as err:
            job.error = err.labelled(JSONL_LABELS)
        except InputError as err:
            job.error = " ".join(str(err).split())
        jobs.append(job)
    if not jobs:
        raise InputError(f"--jsonl {path}: no jobs (the file has no line)")
    return jobs


def _job_id(value: Any, number: int) -> str:
    if isinstance(value, dict) and value.get(ID_KEY) is not None:
        return str(value[ID_KEY])
    return str(number)


def _request(obj: dict, number: int, base: Path, common: dict[str, Any], limits: Limits | None) -> SpeechRequest:
    unknown = sorted(set(obj) - set(FIELD_OF_KEY) - {ID_KEY})
    if unknown:
        raise InputError(f"unknown key {unknown[0]!r}; a line takes {ID_KEY}, {', '.join(JSONL_LABELS.values())}")
    values = dict(common)
    values.update({FIELD_OF_KEY[key]: value for key, value in obj.items() if key != ID_KEY and value is not None})
    audio = values.get("reference_audio")
    if isinstance(audio, str) and audio.strip():
        audio_path = Path(audio).expanduser()
        if JSONL_LABELS["reference_audio"] in obj and not audio_path.is_absolute():
            audio_path = base / audio_path
        if not audio_path.is_file():
            raise FieldError("reference_audio", f"reference_audio file not found: {audio_path}")
        values["reference_audio"] = str(audio_path)
    elif audio is None:
        if values.get("reference_text") is not None:
            raise FieldError("reference_text", "reference_text is the transcript of prompt_audio: give prompt_audio")
        values.update(default_voice_fields(values.get("mode")))
    if "seed" not in obj and common.get("seed") is not None:
        values["seed"] = derive_seed(common["seed"], item=number - 1)  # by line: a resumed run draws the same noise
    return SpeechRequest.from_fields(values, limits)


def default_voice_fields(mode: str | None) -> dict[str, Any]:
    """The request fields of the bundled voice: its clip, and its transcript unless the mode is "clone"."""
    from cat_tts.assets import default_voice

    voice = default_voice()
    return {"reference_audio": str(voice.audio), "reference_text": None if mode == "clone" else voice.text}
