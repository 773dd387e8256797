"""The speech API's JSON body -> one `SpeechRequest`, through a table of the server's labels for its fields.

`SPEECH_LABELS` maps every field of `SpeechRequest` (`SpeechRequest.field_names()`) to the JSON field a client
sends: OpenAI's names where OpenAI has the concept (`input` is the text, `voice` a stored voice), the request's own
names for the rest. Validation is the request's: a bad value raises `FieldError` naming the request's field, answered
as a 400 whose `param` is the JSON field. The server's own fields (`SERVER_FIELDS`: the model, the response format,
the speed, the stream format) are checked here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cat_tts.errors import FieldError, InputError
from cat_tts.generation import GenerationConfig
from cat_tts.inference.request import Limits, SpeechRequest
from cat_tts.server.config import ServerConfig
from cat_tts.server.errors import APIError, bad_request, field_error
from cat_tts.server.formats import FORMATS, SUPPORTED_FORMATS
from cat_tts.server.voices import DEFAULT_VOICE, Voice, VoiceNotFoundError, VoiceStore

# request field -> JSON field of POST /v1/audio/speech (cat-tts fields go in the OpenAI client's `extra_body`)
# (OpenAI's names where OpenAI has the concept: `input` is the text, `voice` a stored voice's name or {"id": NAME};
# `depth` and `bitrate_kbps` also take "auto")
SPEECH_LABELS: dict[str, str] = SpeechRequest.labels(text="input", reference_audio="voice")
SERVER_FIELDS = ("model", "response_format", "speed", "stream_format")  # OpenAI fields that are not the request's
STREAM_FORMATS = ("audio", "sse")


@dataclass(frozen=True)
class SpeechCall:
    """A parsed speech request: what to generate and how to send it."""

    request: SpeechRequest  # validated against the model's and the server's limits
    voice: str  # the stored voice's name
    response_format: str  # one of SUPPORTED_FORMATS
    sse: bool  # send server-sent events (base64 audio) instead of the file's bytes


def parse_speech(body: Any, voices: VoiceStore, limits: Limits, config: ServerConfig) -> SpeechCall:
    """Checks the server's fields, finds the voice and builds the `SpeechRequest` (JSON null = not given).

    Raises:
        APIError: 400 naming the JSON field at fault, 404 for an unknown voice.
    """
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    known = set(SPEECH_LABELS.values()) | set(SERVER_FIELDS)
    unknown = sorted(set(body) - known)
    if unknown:
        raise bad_request(f"unknown field {unknown[0][:80]!r}; known fields: {', '.join(sorted(known))}",
                          unknown[0][:80], code="unknown_parameter")  # fmt: skip
    fmt, sse = _check_server_fields(body, config)
    voice = _voice(body.get("voice"), voices)
    values = {field: body.get(label) for field, label in SPEECH_LABELS.items() if field != "reference_audio"}
    values["reference_audio"] = voice.codes
    if values["reference_text"] is None:
        values["reference_text"] = voice.text
    try:
        request = SpeechRequest.from_fields(values, limits, _base_settings(body, config))
    except FieldError as err:
        raise field_error(err, SPEECH_LABELS) from None
    return SpeechCall(request, voice.name, fmt, sse)


def _check_server_fields(body: dict, config: ServerConfig) -> tuple[str, bool]:
    model = body.get("model")
    if model is not None and model not in config.model_names:
        raise bad_request(f"unknown model {str(model)[:80]!r}; use one of {list(config.model_names)}", "model",
                          code="model_not_found")  # fmt: skip
    fmt = body.get("response_format")
    fmt = "mp3" if fmt is None else fmt
    if fmt not in SUPPORTED_FORMATS:
        supported = ", ".join(SUPPORTED_FORMATS)
        why = "is not supported by this server" if fmt in FORMATS else "is not a response format"
        raise bad_request(f"response_format {str(fmt)[:80]!r} {why}; use one of {supported}", "response_format",
                          code="unsupported_format")  # fmt: skip
    stream_format = body.get("stream_format")
    stream_format = "audio" if stream_format is None else stream_format
    if stream_format not in STREAM_FORMATS:
        raise bad_request(f"stream_format must be 'audio' or 'sse', got {str(stream_format)[:80]!r}", "stream_format")
    speed = body.get("speed")
    if speed is not None and (isinstance(speed, bool) or not isinstance(speed, (int, float)) or speed != 1):
        raise bad_request(f"speed must be 1.0 (other speeds are not supported), got {str(speed)[:80]}", "speed",
                          code="unsupported_value")  # fmt: skip
    return fmt, stream_format == "sse"


def _voice(given: Any, voices: VoiceStore) -> Voice:
    """The stored voice a request names: a name, `{"id": name}` (OpenAI's custom voice), or null (the default)."""
    if isinstance(given, dict):
        extra = sorted(set(given) - {"id"})
        if extra or "id" not in given:
            what = f"has an unknown key {str(extra[0])[:40]!r}" if extra else "has no 'id'"
            raise bad_request(f'the voice object {what}; give a voice name, or {{"id": NAME}}', "voice")
        given = given["id"]
    name = DEFAULT_VOICE if given is None else given
    if not isinstance(name, str):
        raise bad_request(f'voice must be a voice name or {{"id": NAME}}, got {type(name).__name__}', "voice")
    try:
        return voices.get(name)
    except InputError as err:
        raise bad_request(str(err), "voice", code="invalid_voice_name") from None
    except VoiceNotFoundError:
        names = voices.names()
        raise APIError(404, f"no voice named {name[:80]!r}; stored voices: {names[:20]} (add one with POST "
                       "/v1/audio/voices)", param="voice", code="voice_not_found") from None  # fmt: skip


def _base_settings(body: dict, config: ServerConfig) -> GenerationConfig:
    """The generation settings a request's own override: the released ones, with the server's `min_new_frames`
    (never above a `max_new_frames` the request gives)."""
    minimum = config.min_new_frames
    asked = body.get("max_new_frames")
    if isinstance(asked, int) and not isinstance(asked, bool) and asked >= 1:
        minimum = min(minimum, asked)
    return GenerationConfig(min_new_frames=minimum)
