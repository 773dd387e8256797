"""The voices API: upload a clip once (encoded by the codec, stored as codes), then use it by name.

GET    /v1/audio/voices          stored voices
POST   /v1/audio/voices          multipart `name`, `audio` (or `audio_sample`) file, optional `text`
GET    /v1/audio/voices/{name}   one voice
DELETE /v1/audio/voices/{name}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, Depends, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from cat_tts.errors import FieldError, InputError
from cat_tts.server.auth import require_key
from cat_tts.server.errors import APIError, bad_request, field_error
from cat_tts.server.voices import DEFAULT_VOICE, Voice, VoiceExistsError, VoiceNotFoundError, check_name, decode_clip

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.server.app import ServerState

MAX_FORM_FIELDS = 8
# `audio_sample`, `consent` and `type` are what the OpenAI client's `audio.voices.create` sends (consent is ignored)
FORM_FIELDS = {"name", "audio", "audio_sample", "text", "consent", "type"}
UPLOAD_LABELS = {"reference_audio": "audio", "reference_text": "text"}  # the pipeline's fields -> the form's

router = APIRouter(dependencies=[Depends(require_key)])


@router.get("/v1/audio/voices")
async def list_voices(request: Request) -> dict:
    state = _serving(request)
    voices = await anyio.to_thread.run_sync(state.voices.list)
    return {"object": "list", "data": [v.info() for v in voices]}


@router.get("/v1/audio/voices/{name}")
async def get_voice(name: str, request: Request) -> dict:
    state = _serving(request)
    return (await anyio.to_thread.run_sync(_get, state, name)).info()


@router.delete("/v1/audio/voices/{name}")
async def delete_voice(name: str, request: Request) -> dict:
    state = _serving(request)
    if name == DEFAULT_VOICE:
        raise bad_request(f"voice {DEFAULT_VOICE!r} is built in and cannot be deleted", "name", code="reserved_name")
    try:
        await anyio.to_thread.run_sync(state.voices.delete, name)
    except InputError as err:
        raise bad_request(str(err), "name", code="invalid_voice_name") from None
    except VoiceNotFoundError:
        raise APIError(404, f"no voice named {name[:80]!r}", param="name", code="voice_not_found") from None
    return {"id": name, "object": "audio.voice.deleted", "deleted": True}


@router.post("/v1/audio/voices")
async def add_voice(request: Request) -> dict:
    state = _serving(request)
    config = state.config
    form = await _read_form(request, state)
    unknown = sorted(set(form) - FORM_FIELDS)
    if unknown:
        raise bad_request(f"unknown form field {unknown[0][:80]!r}; send name, audio and optionally text",
                          unknown[0][:80], code="unknown_parameter")  # fmt: skip
    if form.get("type", "audio_sample") != "audio_sample":
        raise bad_request("only voices from an audio sample are supported (type 'audio_sample')", "type")
    name = form.get("name")
    if not isinstance(name, str):
        raise bad_request("name is required (a form field)", "name", code="missing_parameter")
    if name == DEFAULT_VOICE:
        raise bad_request(f"voice name {DEFAULT_VOICE!r} is reserved", "name", code="reserved_name")
    upload = form.get("audio") or form.get("audio_sample")
    if upload is None or isinstance(upload, str):
        raise bad_request("audio is required (a file field named 'audio')", "audio", code="missing_parameter")
    text = form.get("text")
    if text is not None and (not isinstance(text, str) or len(text) > config.max_input_chars):
        raise bad_request(f"text must be a transcript of at most {config.max_input_chars} characters", "text")
    try:
        check_name(name)
    except InputError as err:
        raise bad_request(str(err), "name", code="invalid_voice_name") from None
    if name in state.voices:
        raise APIError(409, f"a voice named {name!r} exists; delete it first", param="name", code="voice_exists")
    data = await upload.read()

    def encode_and_store() -> Voice:
        samples, rate = decode_clip(data, config.max_voice_seconds)
        codes = state.backend.encode_reference((samples, rate))
        return state.voices.add(name, codes, (text or "").strip() or None, samples.shape[-1] / rate)

    try:
        voice = await anyio.to_thread.run_sync(encode_and_store)
    except VoiceExistsError as err:
        raise APIError(409, str(err), param="name", code="voice_exists") from None
    except FieldError as err:
        raise field_error(err, UPLOAD_LABELS) from None
    except InputError as err:
        raise bad_request(str(err), "audio", code="invalid_audio") from None
    return voice.info()


def _serving(request: Request) -> ServerState:
    state: ServerState = request.app.state.cat
    state.check_ready()
    return state


def _get(state: ServerState, name: str) -> Voice:
    try:
        return state.voices.get(name)
    except InputError as err:
        raise bad_request(str(err), "name", code="invalid_voice_name") from None
    except VoiceNotFoundError:
        raise APIError(404, f"no voice named {name[:80]!r}; stored voices: {state.voices.names()[:20]} (add one "
                       "with POST /v1/audio/voices)", param="name", code="voice_not_found") from None  # fmt: skip


async def _read_form(request: Request, state: ServerState) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        message = "send the voice as multipart/form-data (fields: name, audio, text)"
        raise APIError(415, message, code="bad_content_type")
    limit = state.config.max_upload_bytes

    class InMemoryParser(MultiPartParser):
        spool_max_size = limit + 1  # the whole body is bounded by this: files never spill to disk

    parser = InMemoryParser(request.headers, request.stream(), max_files=1, max_fields=MAX_FORM_FIELDS,
                            max_part_size=state.config.max_input_chars * 4 + 1024)  # fmt: skip
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise bad_request(f"bad multipart form: {err.message}", None, code="invalid_form") from None
    out: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key in out:
            raise bad_request(f"form field {key[:80]!r} is given twice", key[:80])
        out[key] = value if isinstance(value, (str, UploadFile)) else str(value)
    return out
