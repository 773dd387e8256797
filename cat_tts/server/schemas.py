"""The JSON bodies the speech API accepts, validated strictly (unknown fields and wrong types are a 400 naming
the field)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cat_tts.server.errors import APIError, bad_request


class VoiceRef(BaseModel):
    """OpenAI's custom-voice form: `{"id": "name"}`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1, max_length=256)


class SpeechRequest(BaseModel):
    """POST /v1/audio/speech: OpenAI's fields, then the cat-tts extensions (sent with `extra_body` by OpenAI
    clients)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # OpenAI
    model: str | None = Field(None, max_length=256)  # the served model id, "cat-tts" or an OpenAI alias
    input: str  # text to speak
    voice: str | VoiceRef = "default"  # a stored voice's name, or {"id": name}
    instructions: str | None = None  # fills the released prompt's instruction field
    response_format: str = "mp3"  # mp3, opus, flac, wav, pcm (aac answers 400)
    speed: float = 1.0  # only 1.0: any other value is a 400
    stream_format: str = "audio"  # "audio" (the file's bytes, chunked) or "sse" (base64 audio events)
    # cat-tts
    depth: int | None = None  # K: RVQ layers, 1..N (0.125 kbps each); default N
    bitrate_kbps: float | None = None  # rounded to the nearest depth; not together with depth
    seed: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    reference_text: str | None = None  # transcript of the voice's clip (overrides the stored one)
    min_new_frames: int | None = None
    max_new_frames: int | None = None

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceRef) else self.voice


def parse_speech_request(body: Any) -> SpeechRequest:
    """Validates a decoded JSON body.

    Raises:
        APIError: 400 naming the first bad field.
    """
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    try:
        return SpeechRequest.model_validate(body)
    except ValidationError as err:
        raise _first_error(err) from None


def _first_error(err: ValidationError) -> APIError:
    first = err.errors()[0]
    loc = [str(p) for p in first.get("loc", ())]
    # unions report the branch tried ("voice.str", "voice.VoiceRef.id"): keep the field the client wrote
    param = loc[0] if loc else None
    if first.get("type") == "extra_forbidden":
        return bad_request(f"unknown field {param!r}", param, code="unknown_parameter")
    if first.get("type") == "missing":
        return bad_request(f"{param} is required", param, code="missing_parameter")
    got = first.get("input")
    shown = repr(got)[:80] if not isinstance(got, (dict, list)) else type(got).__name__
    return bad_request(f"{param}: {first.get('msg', 'invalid value').lower()}, got {shown}", param)
